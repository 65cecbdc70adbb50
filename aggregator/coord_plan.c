/* `flas-coordinator plan`: the cost of a federated round at real scale, from stated inputs
 * (include/flas/plan.h has the model; docs/scaling.md uses it). Pure arithmetic over the model's own
 * rules: the parameter table (flas_param_table_init) counts parameters, per tensor-parallel rank too,
 * and flas_model_flops_per_token counts FLOPs, so a plan agrees with what flas-train lays out. */
#include "flas/plan.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "flas/checkpoint.h"
#include "flas/error.h"
#include "flas/llama.h"

const int flas_plan_tp_sizes[FLAS_PLAN_N_TP] = {4, 8};

/* ---- the model ---------------------------------------------------------------------------------- */

int flas_plan_model(const char *name, flas_config *out, char *err, size_t errlen)
{
    static const struct { const char *alias, *preset; } map[] = {
        {"7b", "llama2-7b"}, {"13b", "llama2-13b"}, {"70b", "llama2-70b"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(name, map[i].alias))
            return flas_config_preset(map[i].preset, out) ? flas_fail(err, errlen, "internal: no preset %s", map[i].preset) : 0;
    if (!strcmp(name, "tiny")) {
        /* tests/coordinator/coord-tests.sh setup: flas-train --init --dim 64 --layers 2 --heads 4
         * --kv-heads 2 --vocab 1024 --seq-len 64, untied, FFN width by flas-train's default rule
         * (flas_hidden_dim with multiple_of 32, runtime/train_args.c): 192. */
        *out = (flas_config){64, 2, 4, 2, flas_hidden_dim(64, 32, 0), 1024, 64, 1e-5f, 10000.0f, 0};
        return 0;
    }
    return flas_fail(err, errlen, "unknown model '%s' (7b, 13b, 70b or tiny; or --config FILE.h5, or --dim ...)", name);
}

/* ---- site descriptions -------------------------------------------------------------------------- */

/* A plain decimal: digits, at most one '.', digits on both sides of it when present. No sign, exponent,
 * inf, nan or hexadecimal, so a value means what it looks like. */
static int plain_decimal(const char *v, double *out)
{
    size_t n = strlen(v), digits = 0, dots = 0;
    if (n == 0 || n > 32)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] >= '0' && v[i] <= '9')
            digits++;
        else if (v[i] == '.' && i > 0 && i + 1 < n && !dots)
            dots++;
        else
            return -1;
    }
    if (!digits)
        return -1;
    *out = strtod(v, NULL);
    return isfinite(*out) ? 0 : -1;
}

/* A decimal in [lo, hi] (lo_open: lo itself is refused). */
static int num_in(const char *what, const char *v, double lo, int lo_open, double hi, double *out, char *err,
                  size_t errlen)
{
    double x;
    if (plain_decimal(v, &x))
        return flas_fail(err, errlen, "%s=%s: not a plain decimal number (digits and at most one '.')", what, v);
    if (x < lo || (lo_open && x == lo) || x > hi)
        return flas_fail(err, errlen, "%s=%s: outside %s%g, %g]", what, v, lo_open ? "(" : "[", lo, hi);
    *out = x;
    return 0;
}

static int int_in(const char *what, const char *v, long long lo, long long hi, long long *out, char *err,
                  size_t errlen)
{
    size_t n = strlen(v);
    if (n == 0 || n > 18 || strspn(v, "0123456789") != n)
        return flas_fail(err, errlen, "%s=%s: not a whole number", what, v);
    long long x = strtoll(v, NULL, 10);
    if (x < lo || x > hi)
        return flas_fail(err, errlen, "%s=%s: outside %lld..%lld", what, v, lo, hi);
    *out = x;
    return 0;
}

enum { K_GPUS, K_NODES, K_TOK, K_PEAK, K_MFU, K_GBPS, K_QUEUE, K_COUNT };
static const char *const site_keys[K_COUNT] = {"gpus", "nodes", "tok_s_gpu", "peak_tflops", "mfu", "gbps", "queue_s"};

static int site_value(flas_plan_site *s, int k, const char *key, const char *v, char *err, size_t errlen)
{
    long long i = 0;
    switch (k) {
    case K_GPUS:
        if (int_in(key, v, 1, 1024, &i, err, errlen))
            return -1;
        s->gpus = (int)i;
        return 0;
    case K_NODES:
        if (int_in(key, v, 1, 100000, &i, err, errlen))
            return -1;
        s->nodes = (int)i;
        return 0;
    case K_TOK: return num_in(key, v, 0, 1, 1e9, &s->tok_s_gpu, err, errlen);
    case K_PEAK: return num_in(key, v, 0, 1, 1e6, &s->peak_tflops, err, errlen);
    case K_MFU: return num_in(key, v, 0, 1, 1, &s->mfu, err, errlen);
    case K_GBPS: return num_in(key, v, 0, 1, 1e5, &s->gbps, err, errlen);
    default: return num_in(key, v, 0, 0, 1e8, &s->queue_s, err, errlen);
    }
}

int flas_plan_parse_site(const char *spec, flas_plan_site *out, char *err, size_t errlen)
{
    char e[256];
    memset(out, 0, sizeof *out);
    if (!spec || !*spec)
        return flas_fail(err, errlen, "empty site description (NAME:gpus=G,nodes=N,tok_s_gpu=T,gbps=B[,queue_s=Q])");
    const char *colon = strchr(spec, ':');
    if (!colon)
        return flas_fail(err, errlen, "site '%.64s': no ':' after the name (NAME:gpus=G,nodes=N,tok_s_gpu=T,gbps=B[,queue_s=Q])", spec);
    size_t nlen = (size_t)(colon - spec);
    if (nlen == 0 || nlen >= sizeof out->name)
        return flas_fail(err, errlen, "site '%.64s': the name must be 1..%d characters", spec, FLAS_NAME_MAX - 1);
    memcpy(out->name, spec, nlen);
    out->name[nlen] = 0;
    if (!flas_name_valid(out->name))
        return flas_fail(err, errlen, "site name '%s' is invalid (letters, digits, '_' and '-', not starting with '-')", out->name);
    const char *p = colon + 1;
    if (!*p)
        return flas_fail(err, errlen, "site %s: no values after ':'", out->name);
    int seen[K_COUNT] = {0};
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[128];
        if (len == 0)
            return flas_fail(err, errlen, "site %s: empty item (a doubled or trailing ',')", out->name);
        if (len >= sizeof item)
            return flas_fail(err, errlen, "site %s: item '%.40s...' is too long", out->name, p);
        memcpy(item, p, len);
        item[len] = 0;
        char *eq = strchr(item, '=');
        if (!eq)
            return flas_fail(err, errlen, "site %s: '%s' is not key=value", out->name, item);
        *eq = 0;
        const char *key = item, *val = eq + 1;
        int k = -1;
        for (int i = 0; i < K_COUNT; i++)
            if (!strcmp(key, site_keys[i]))
                k = i;
        if (k < 0)
            return flas_fail(err, errlen, "site %s: unknown key '%s' (gpus, nodes, tok_s_gpu, peak_tflops, mfu, gbps, queue_s)",
                             out->name, key);
        if (seen[k]++)
            return flas_fail(err, errlen, "site %s: %s given twice", out->name, key);
        if (!*val)
            return flas_fail(err, errlen, "site %s: %s has no value", out->name, key);
        if (site_value(out, k, key, val, e, sizeof e))
            return flas_fail(err, errlen, "site %s: %s", out->name, e);
        if (!end)
            break;
        p = end + 1;
    }
    for (int k = 0; k < K_COUNT; k++)
        if ((k == K_GPUS || k == K_NODES || k == K_GBPS) && !seen[k])
            return flas_fail(err, errlen, "site %s: %s= is missing", out->name, site_keys[k]);
    /* One way to give the throughput: measured (tok_s_gpu), or derived (peak x MFU / FLOPs per token). */
    if (seen[K_TOK] && (seen[K_PEAK] || seen[K_MFU]))
        return flas_fail(err, errlen, "site %s: give tok_s_gpu= or peak_tflops= with mfu=, not both", out->name);
    if (!seen[K_TOK] && !(seen[K_PEAK] && seen[K_MFU]))
        return flas_fail(err, errlen, "site %s: the throughput is missing: tok_s_gpu=, or peak_tflops= and mfu=", out->name);
    return 0;
}

/* ---- exchange format ---------------------------------------------------------------------------- */

int flas_plan_compression_parse(const char *s)
{
    if (!strcmp(s, "fp32"))
        return FLAS_PLAN_FP32;
    if (!strcmp(s, "bf16"))
        return FLAS_PLAN_BF16;
    if (!strcmp(s, "int8"))
        return FLAS_PLAN_INT8;
    return -1;
}

const char *flas_plan_compression_name(flas_plan_compression c)
{
    return c == FLAS_PLAN_BF16 ? "bf16" : c == FLAS_PLAN_INT8 ? "int8" : "fp32";
}

static flas_update_enc update_enc(flas_plan_compression c)
{
    return c == FLAS_PLAN_BF16 ? FLAS_UPDATE_BF16 : c == FLAS_PLAN_INT8 ? FLAS_UPDATE_INT8 : FLAS_UPDATE_FULL;
}

int flas_plan_exchange_bytes(const flas_config *c, flas_plan_compression comp, int block, double *bytes,
                             char *err, size_t errlen)
{
    if (comp == FLAS_PLAN_INT8 && flas_update_block_check(block, err, errlen))
        return -1;
    flas_param_table t;
    if (flas_param_table_init(&t, c, 0, 1, err, errlen))
        return -1;
    double sum = 0;
    for (int i = 0; i < t.n_tensors; i++)
        sum += flas_update_bytes(update_enc(comp), block, (double)t.tensors[i].numel);
    flas_param_table_free(&t);
    *bytes = sum;
    return 0;
}

/* ---- memory per GPU ----------------------------------------------------------------------------- */

/* Activation bytes of one layer for b sequences of s tokens at tensor parallel t (see plan.h). */
static double layer_act_bytes(const flas_config *c, double b, double t)
{
    double s = c->seq_len, h = c->dim, a = c->n_heads, F = c->hidden_dim;
    double hkv = (double)flas_config_head_dim(c) * c->n_kv_heads;
    double replicated = 8 * s * b * h;
    double split = 2 * s * b * (2 * h + 2 * hkv) + 6 * s * b * F + 2 * a * s * s * b;
    return replicated + split / t;
}

int flas_plan_memory(const flas_config *c, int tp, int dp, int micro_batch, flas_plan_mem *out, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->tp = tp;
    out->dp = dp;
    if (dp < 1 || micro_batch < 1)
        return flas_fail(err, errlen, "dp %d and micro-batch %d must be >= 1", dp, micro_batch);
    /* The rank's shard as flas-train lays it out (replicated embeddings, norms and head included). */
    flas_param_table t;
    if (flas_param_table_init(&t, c, 0, tp, err, errlen))
        return -1;
    double p = (double)t.n_params;
    flas_param_table_free(&t);
    double b = micro_batch, L = c->n_layers;
    double layer = layer_act_bytes(c, b, tp);
    double logits = 4.0 * c->seq_len * b * c->vocab_size;
    out->ok = 1;
    out->params_per_gpu = p;
    out->weights = 2 * p;
    out->grads = 2 * p;
    out->optimizer = 12 * p / dp;      /* float32 master, m, v: ZeRO-1 gives each dp rank 1/dp of them */
    out->act_off = L * layer + logits;
    out->act_on = L * 2 * c->seq_len * b * c->dim + layer + logits;
    double fixed = out->weights + out->grads + out->optimizer;
    out->total_off = fixed + out->act_off;
    out->total_on = fixed + out->act_on;
    return 0;
}

/* ---- the plan ----------------------------------------------------------------------------------- */

int flas_plan_compute(const flas_plan_opts *o, flas_plan_result *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    char e[256];
    if (flas_config_validate(&o->cfg, 1, e, sizeof e))
        return flas_fail(err, errlen, "model: %s", e);
    if (o->n_sites < 1 || o->n_sites > FLAS_PLAN_MAX_SITES)
        return flas_fail(err, errlen, "give 1..%d sites with --site (got %d)", FLAS_PLAN_MAX_SITES, o->n_sites);
    for (int i = 0; i < o->n_sites; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(o->sites[i].name, o->sites[j].name))
                return flas_fail(err, errlen, "site %s is described twice", o->sites[i].name);
    /* Sites built by a caller rather than flas_plan_parse_site get the same minimum checks. */
    for (int i = 0; i < o->n_sites; i++) {
        const flas_plan_site *s = &o->sites[i];
        if (s->gpus < 1 || s->nodes < 1 || !(s->gbps > 0) || !(s->queue_s >= 0) ||
            !(s->tok_s_gpu > 0 || (s->peak_tflops > 0 && s->mfu > 0 && s->mfu <= 1)))
            return flas_fail(err, errlen, "site %s: gpus, nodes, gbps and a throughput must be positive", s->name);
    }
    int by_steps = o->steps > 0 || o->batch_tokens > 0;
    if (by_steps && o->round_hours > 0)
        return flas_fail(err, errlen, "give --steps with --batch-tokens, or --round-hours, not both");
    if (by_steps && (o->steps <= 0 || o->batch_tokens <= 0))
        return flas_fail(err, errlen, "--steps and --batch-tokens go together");
    if (!by_steps && !(o->round_hours > 0))
        return flas_fail(err, errlen, "the round's training is missing: --steps N --batch-tokens T, or --round-hours H");
    if (o->rounds < 1)
        return flas_fail(err, errlen, "--rounds must be >= 1 (got %d)", o->rounds);
    if (!(o->agg_gbps > 0) || !(o->latency_s >= 0) || !(o->ssh_gbps >= 0) || o->micro_batch < 1)
        return flas_fail(err, errlen, "--agg-gbps must be > 0, --latency-s and --ssh-gbps >= 0, --micro-batch >= 1");

    flas_param_table t;
    if (flas_param_table_init(&t, &o->cfg, 0, 1, e, sizeof e))
        return flas_fail(err, errlen, "model: %s", e);
    r->n_params = (double)t.n_params_full;
    flas_param_table_free(&t);
    r->flops_per_token = flas_model_flops_per_token(&o->cfg, o->cfg.seq_len);
    if (flas_plan_exchange_bytes(&o->cfg, o->compression, o->block, &r->bytes_model, err, errlen) ||
        flas_plan_exchange_bytes(&o->cfg, FLAS_PLAN_FP32, FLAS_UPDATE_BLOCK_DEFAULT, &r->bytes_fp32, err, errlen))
        return -1;

    r->n_sites = o->n_sites;
    double longest = -1;
    for (int i = 0; i < o->n_sites; i++) {
        const flas_plan_site *s = &o->sites[i];
        flas_plan_site_result *x = &r->site[i];
        x->tok_s_gpu = s->tok_s_gpu > 0 ? s->tok_s_gpu : s->peak_tflops * 1e12 * s->mfu / r->flops_per_token;
        x->tok_s = x->tok_s_gpu * s->gpus * s->nodes;
        if (by_steps) {
            x->tokens = (double)o->steps * (double)o->batch_tokens;
            x->train_s = x->tokens / x->tok_s;
        } else {
            x->train_s = o->round_hours * 3600.0;
            x->tokens = x->tok_s * x->train_s;
        }
        x->bytes_down = x->bytes_up = r->bytes_model;
        /* One SSH stream per transfer: the link's rate, or the stream's cap when that is lower. */
        double gbps = (o->ssh_gbps > 0 && o->ssh_gbps < s->gbps) ? o->ssh_gbps : s->gbps;
        x->down_s = x->bytes_down * 8 / (gbps * 1e9) + o->latency_s;
        x->up_s = x->bytes_up * 8 / (gbps * 1e9) + o->latency_s;
        x->queue_s = s->queue_s;
        x->path_s = x->queue_s + x->down_s + x->train_s + o->overhead_s + x->up_s;
        if (x->path_s > longest) {
            longest = x->path_s;
            r->critical_site = i;
        }
        int gpus = s->gpus * s->nodes;
        for (int k = 0; k < FLAS_PLAN_N_TP; k++) {
            int tp = flas_plan_tp_sizes[k];
            flas_plan_mem *m = &x->mem[k];
            if (gpus % tp) {
                memset(m, 0, sizeof *m);
                m->tp = tp;
                snprintf(m->why, sizeof m->why, "%d GPUs are not a multiple of tp %d", gpus, tp);
                continue;
            }
            if (flas_plan_memory(&o->cfg, tp, gpus / tp, o->micro_batch, m, e, sizeof e)) {
                snprintf(m->why, sizeof m->why, "%s", e);
                m->ok = 0;
                continue;
            }
            if (tp > s->gpus)
                snprintf(m->why, sizeof m->why, "tp %d spans nodes of %d GPUs", tp, s->gpus);
        }
    }
    const flas_plan_site_result *c = &r->site[r->critical_site];
    r->agg_s = o->n_sites * r->bytes_model / (o->agg_gbps * 1e9);
    r->round_s = c->path_s + r->agg_s;
    struct { const char *what; double s; } terms[] = {
        {"queue", c->queue_s}, {"transfer", c->down_s + c->up_s}, {"training", c->train_s}, {"aggregation", r->agg_s},
        {"job overhead", o->overhead_s}};
    r->dominant = terms[0].what;
    double top = terms[0].s;
    for (size_t i = 1; i < sizeof terms / sizeof terms[0]; i++)
        if (terms[i].s > top) {
            top = terms[i].s;
            r->dominant = terms[i].what;
        }
    r->comm_fraction = (c->down_s + c->up_s + r->agg_s) / r->round_s;
    double bytes = 0, tokens = 0;
    for (int i = 0; i < o->n_sites; i++) {
        bytes += r->site[i].bytes_down + r->site[i].bytes_up;
        tokens += r->site[i].tokens;
    }
    r->total_s = o->rounds * r->round_s;
    r->total_bytes = o->rounds * bytes;
    r->total_tokens = o->rounds * tokens;
    return 0;
}

/* ---- printing ----------------------------------------------------------------------------------- */

/* 35.2s, 4m05s, 2h03m, 3d04h: a duration a reader takes in at a glance. */
static const char *dur(double s, char *buf, size_t n)
{
    if (s < 59.95)
        snprintf(buf, n, "%.1fs", s);
    else if (s < 3600 - 0.5) {
        long v = lround(s);
        snprintf(buf, n, "%ldm%02lds", v / 60, v % 60);
    } else if (s < 86400 - 30) {
        long v = lround(s / 60);
        snprintf(buf, n, "%ldh%02ldm", v / 60, v % 60);
    } else {
        long v = lround(s / 3600);
        snprintf(buf, n, "%ldd%02ldh", v / 24, v % 24);
    }
    return buf;
}

/* Decimal units, as link rates are counted: 13.48 GB is 13.48e9 bytes. */
static const char *dec(double v, const char *unit, char *buf, size_t n)
{
    static const char *const pre[] = {"", "k", "M", "G", "T", "P"};
    int i = 0;
    while (fabs(v) >= 999.5 && i < 5) {
        v /= 1000;
        i++;
    }
    snprintf(buf, n, i ? "%.2f %s%s" : "%.0f %s%s", v, pre[i], unit);
    return buf;
}

static double gib(double b) { return b / 1073741824.0; }

static void print_table(const flas_plan_opts *o, const flas_plan_result *r, FILE *f)
{
    const flas_config *c = &o->cfg;
    char a[32], b[32], d[32], g[32], h[32], k[32];
    fprintf(f, "model %s: dim %d, %d layers, %d heads (%d kv), ffn %d, vocab %d, seq %d%s\n", o->model, c->dim,
            c->n_layers, c->n_heads, c->n_kv_heads, c->hidden_dim, c->vocab_size, c->seq_len,
            c->tied_embeddings ? ", tied" : "");
    fprintf(f, "  %.4g parameters, %.4g GFLOP per token (6 x matrix parameters + attention)\n", r->n_params,
            r->flops_per_token / 1e9);
    if (o->compression == FLAS_PLAN_INT8)
        snprintf(k, sizeof k, ", block %d", o->block);
    else
        k[0] = 0;
    if (o->compression == FLAS_PLAN_FP32)
        snprintf(g, sizeof g, "whole checkpoints");
    else
        snprintf(g, sizeof g, "%.2fx smaller than fp32", r->bytes_fp32 / r->bytes_model);
    fprintf(f, "exchange %s%s: %s per site and direction (%s); %g s latency per transfer\n",
            flas_plan_compression_name(o->compression), k, dec(r->bytes_model, "B", a, sizeof a), g, o->latency_s);
    if (o->ssh_gbps > 0)
        fprintf(f, "  one SSH stream per transfer, capped at %g Gb/s\n", o->ssh_gbps);
    if (o->round_hours > 0)
        fprintf(f, "training per round: %g h at every site\n", o->round_hours);
    else
        fprintf(f, "training per round: %lld steps x %lld tokens per site\n", o->steps, o->batch_tokens);
    fprintf(f, "\nper round\n%-12s %6s %10s %10s %10s %8s %9s %9s %9s %9s %9s\n", "site", "GPUs", "tok/s/GPU",
            "tokens", "bytes/dir", "Gb/s", "queue", "down", "train", "up", "path");
    for (int i = 0; i < o->n_sites; i++) {
        const flas_plan_site *s = &o->sites[i];
        const flas_plan_site_result *x = &r->site[i];
        char q[32], dn[32], tr[32], up[32], pa[32], tk[32], by[32];
        dec(x->tokens, "", tk, sizeof tk);
        dec(x->bytes_down, "B", by, sizeof by);
        fprintf(f, "%-12s %6d %10.0f %10s %10s %8g %9s %9s %9s %9s %9s%s\n", s->name, s->gpus * s->nodes, x->tok_s_gpu,
                tk, by, s->gbps, dur(x->queue_s, q, sizeof q), dur(x->down_s, dn, sizeof dn),
                dur(x->train_s, tr, sizeof tr), dur(x->up_s, up, sizeof up), dur(x->path_s, pa, sizeof pa),
                i == r->critical_site ? "  <- critical" : "");
    }
    fprintf(f, "aggregation: %d x %s at %g GB/s of fp32 input -> %s\n", o->n_sites, dec(r->bytes_model, "B", a, sizeof a),
            o->agg_gbps, dur(r->agg_s, d, sizeof d));
    fprintf(f, "round: %s (%s) + aggregation %s = %s; dominated by %s; transfers + aggregation %.1f%% of it\n",
            dur(r->site[r->critical_site].path_s, g, sizeof g), o->sites[r->critical_site].name,
            dur(r->agg_s, d, sizeof d), dur(r->round_s, h, sizeof h), r->dominant, 100 * r->comm_fraction);
    fprintf(f, "all %d round%s: %s, %s moved, %s tokens trained\n", o->rounds, o->rounds == 1 ? "" : "s",
            dur(r->total_s, a, sizeof a), dec(r->total_bytes, "B", b, sizeof b), dec(r->total_tokens, "", g, sizeof g));
    fprintf(f, "\nmemory per GPU, GiB (bf16 weights + grads; fp32 master + AdamW m, v sharded by ZeRO-1 over dp;\n"
               "activations bf16, %d sequence%s of %d per micro-step, + fp32 logits; recompute off / on)\n",
            o->micro_batch, o->micro_batch == 1 ? "" : "s", c->seq_len);
    fprintf(f, "%-12s %3s %5s %11s %8s %8s %9s %8s %8s %9s %9s\n", "site", "tp", "dp", "params/GPU", "weights",
            "grads", "optimizer", "act off", "act on", "total off", "total on");
    for (int i = 0; i < o->n_sites; i++)
        for (int j = 0; j < FLAS_PLAN_N_TP; j++) {
            const flas_plan_mem *m = &r->site[i].mem[j];
            if (!m->ok) {
                fprintf(f, "%-12s %3d     -   (%s)\n", o->sites[i].name, m->tp, m->why);
                continue;
            }
            fprintf(f, "%-12s %3d %5d %11.4g %8.2f %8.2f %9.2f %8.2f %8.2f %9.2f %9.2f%s%s%s\n", o->sites[i].name, m->tp,
                    m->dp, m->params_per_gpu, gib(m->weights), gib(m->grads), gib(m->optimizer), gib(m->act_off),
                    gib(m->act_on), gib(m->total_off), gib(m->total_on), m->why[0] ? "  (" : "", m->why,
                    m->why[0] ? ")" : "");
        }
}

/* One record per line, its kind first; a '#' line names the columns before each kind. Bytes are whole
 * numbers, times seconds with 3 decimals. */
static void print_tsv(const flas_plan_opts *o, const flas_plan_result *r, FILE *f)
{
    const flas_config *c = &o->cfg;
    fprintf(f, "#model\tname\tparams\tflops_per_token\tdim\tlayers\theads\tkv_heads\tffn_dim\tvocab\tseq_len\n");
    fprintf(f, "model\t%s\t%.0f\t%.6g\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", o->model, r->n_params, r->flops_per_token, c->dim,
            c->n_layers, c->n_heads, c->n_kv_heads, c->hidden_dim, c->vocab_size, c->seq_len);
    fprintf(f, "#exchange\tcompression\tblock\tbytes_per_site_direction\tbytes_fp32\tratio\tlatency_s\tssh_gbps\n");
    fprintf(f, "exchange\t%s\t%d\t%.0f\t%.0f\t%.4f\t%.3f\t%g\n", flas_plan_compression_name(o->compression),
            o->compression == FLAS_PLAN_INT8 ? o->block : 0, r->bytes_model, r->bytes_fp32, r->bytes_fp32 / r->bytes_model,
            o->latency_s, o->ssh_gbps);
    fprintf(f, "#site\tname\tgpus\ttok_s_gpu\ttokens\tbytes_down\tbytes_up\tgbps\tqueue_s\tdown_s\ttrain_s\tup_s\tpath_s\tcritical\n");
    for (int i = 0; i < o->n_sites; i++) {
        const flas_plan_site *s = &o->sites[i];
        const flas_plan_site_result *x = &r->site[i];
        fprintf(f, "site\t%s\t%d\t%.3f\t%.0f\t%.0f\t%.0f\t%g\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\n", s->name,
                s->gpus * s->nodes, x->tok_s_gpu, x->tokens, x->bytes_down, x->bytes_up, s->gbps, x->queue_s, x->down_s,
                x->train_s, x->up_s, x->path_s, i == r->critical_site);
    }
    fprintf(f, "#round\tcritical_site\tagg_gbps\tagg_s\tround_s\tdominant\tcomm_fraction\n");
    fprintf(f, "round\t%s\t%g\t%.3f\t%.3f\t%s\t%.4f\n", o->sites[r->critical_site].name, o->agg_gbps, r->agg_s,
            r->round_s, r->dominant, r->comm_fraction);
    fprintf(f, "#total\trounds\ttotal_s\ttotal_bytes\ttotal_tokens\n");
    fprintf(f, "total\t%d\t%.3f\t%.0f\t%.0f\n", o->rounds, r->total_s, r->total_bytes, r->total_tokens);
    fprintf(f, "#memory\tsite\ttp\tdp\tparams_per_gpu\tweights\tgrads\toptimizer\tact_off\tact_on\ttotal_off\ttotal_on\tnote\n");
    for (int i = 0; i < o->n_sites; i++)
        for (int j = 0; j < FLAS_PLAN_N_TP; j++) {
            const flas_plan_mem *m = &r->site[i].mem[j];
            if (!m->ok)
                fprintf(f, "memory\t%s\t%d\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t%s\n", o->sites[i].name, m->tp, m->why);
            else
                fprintf(f, "memory\t%s\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\n", o->sites[i].name,
                        m->tp, m->dp, m->params_per_gpu, m->weights, m->grads, m->optimizer, m->act_off, m->act_on,
                        m->total_off, m->total_on, m->why[0] ? m->why : "-");
        }
}

void flas_plan_print(const flas_plan_opts *o, const flas_plan_result *r, int tsv, FILE *f)
{
    if (tsv)
        print_tsv(o, r, f);
    else
        print_table(o, r, f);
}

/* ---- the command line --------------------------------------------------------------------------- */

static void plan_usage(FILE *f)
{
    fprintf(f,
            "usage: flas-coordinator plan MODEL --site SPEC [--site SPEC ...] TRAINING [options]\n"
            "\n"
            "Predicts what one federated round costs: bytes and transfer time per site and direction,\n"
            "training and queue time, aggregation, the critical path, totals over all rounds, and memory\n"
            "per GPU at tp=4 and tp=8 with ZeRO-1. Arithmetic over the inputs, nothing is contacted.\n"
            "\n"
            "MODEL      --model 7b|13b|70b|tiny, or --config FILE.h5 (a FLaS checkpoint), or\n"
            "           --dim N --layers N --heads N --vocab N --seq-len N [--kv-heads N] [--ffn-dim N]\n"
            "           (--seq-len N also overrides a model's context)\n"
            "SPEC       NAME:gpus=G,nodes=N,tok_s_gpu=T,gbps=B[,queue_s=Q]   G GPUs per node, T tokens/s per\n"
            "           GPU (or peak_tflops=P,mfu=M instead of tok_s_gpu), B Gb/s link, Q s queue wait\n"
            "TRAINING   --steps N --batch-tokens T (tokens per step per site), or --round-hours H\n"
            "  --rounds R               rounds (1)\n"
            "  --compression C          fp32 (default), bf16, int8 (blockwise, float32 scale per block)\n"
            "  --block N                int8 block, %d..%d (%d)\n"
            "  --agg-gbps X             aggregator merge rate, GB/s of fp32 input (%g, measured)\n"
            "  --latency-s X            fixed cost per transfer, s (%g)\n"
            "  --overhead-s X           fixed cost of each site's job beyond training: start-up,\n"
            "                           checkpoint writing, polling, s (0)\n"
            "  --ssh-gbps X             cap of one SSH stream, Gb/s (none)\n"
            "  --micro-batch N          sequences per GPU per micro-step, for activations (1)\n"
            "  --tsv                    tab-separated records for scripts\n"
            "\n"
            "Exit status: 0 printed, 2 bad arguments.\n",
            FLAS_UPDATE_BLOCK_MIN, FLAS_UPDATE_BLOCK_MAX, FLAS_UPDATE_BLOCK_DEFAULT, FLAS_PLAN_AGG_GBPS_DEFAULT,
            FLAS_PLAN_LATENCY_S_DEFAULT);
}

static int bad(FILE *errf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(FILE *errf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("flas-coordinator plan: error: ", errf);
    vfprintf(errf, fmt, ap);
    fputc('\n', errf);
    va_end(ap);
    return 2;
}

enum { S_DIM, S_LAYERS, S_HEADS, S_KV, S_FFN, S_VOCAB, S_SEQ, S_COUNT };

int flas_plan_main(int argc, char **argv, FILE *out, FILE *errf)
{
    static const char *const shape_flags[S_COUNT] = {"--dim", "--layers", "--heads", "--kv-heads",
                                                     "--ffn-dim", "--vocab", "--seq-len"};
    static const long long shape_max[S_COUNT] = {1 << 20, 4096, 4096, 4096, 1 << 22, 1 << 24, 1 << 22};
    flas_plan_opts *o = calloc(1, sizeof *o);
    flas_plan_result *r = calloc(1, sizeof *r);
    if (!o || !r) {
        free(o);
        free(r);
        return bad(errf, "out of memory");
    }
    o->compression = FLAS_PLAN_FP32;
    o->block = FLAS_UPDATE_BLOCK_DEFAULT;
    o->rounds = 1;
    o->agg_gbps = FLAS_PLAN_AGG_GBPS_DEFAULT;
    o->latency_s = FLAS_PLAN_LATENCY_S_DEFAULT;
    o->micro_batch = 1;
    long long shape[S_COUNT] = {0};
    int given[S_COUNT] = {0}, tsv = 0, rc = 2, have_block = 0;
    const char *model = NULL, *config = NULL;
    char e[512];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            plan_usage(out);
            rc = 0;
            goto done;
        }
        if (!strncmp(a, "--tsv=", 6)) {
            rc = bad(errf, "--tsv takes no value");
            goto done;
        }
        if (!strcmp(a, "--tsv")) {
            tsv = 1;
            continue;
        }
        /* Every other option takes a value: "--opt VALUE" or "--opt=VALUE". */
        char flag[32];
        const char *v, *eq = strchr(a, '=');
        if (strncmp(a, "--", 2)) {
            rc = bad(errf, "unexpected argument '%s' (see flas-coordinator plan --help)", a);
            goto done;
        }
        if (eq) {
            size_t n = (size_t)(eq - a);
            if (n >= sizeof flag) {
                rc = bad(errf, "unknown option '%s'", a);
                goto done;
            }
            memcpy(flag, a, n);
            flag[n] = 0;
            v = eq + 1;
        } else {
            if (strlen(a) >= sizeof flag) {
                rc = bad(errf, "unknown option '%s'", a);
                goto done;
            }
            snprintf(flag, sizeof flag, "%s", a);
            if (i + 1 >= argc) {
                rc = bad(errf, "%s needs a value", flag);
                goto done;
            }
            v = argv[++i];
        }
        long long iv;
        double dv;
        int s = -1;
        for (int k = 0; k < S_COUNT; k++)
            if (!strcmp(flag, shape_flags[k]))
                s = k;
        if (s >= 0) {
            if (given[s]++) {
                rc = bad(errf, "%s given twice", flag);
                goto done;
            }
            if (int_in(flag, v, 1, shape_max[s], &shape[s], e, sizeof e)) {
                rc = bad(errf, "%s", e);
                goto done;
            }
        } else if (!strcmp(flag, "--model") || !strcmp(flag, "--config")) {
            if (model || config) {
                rc = bad(errf, "give one of --model and --config, once");
                goto done;
            }
            *(!strcmp(flag, "--model") ? &model : &config) = v;
        } else if (!strcmp(flag, "--site")) {
            if (o->n_sites == FLAS_PLAN_MAX_SITES) {
                rc = bad(errf, "more than %d sites", FLAS_PLAN_MAX_SITES);
                goto done;
            }
            if (flas_plan_parse_site(v, &o->sites[o->n_sites], e, sizeof e)) {
                rc = bad(errf, "--site: %s", e);
                goto done;
            }
            o->n_sites++;
        } else if (!strcmp(flag, "--compression")) {
            int c = flas_plan_compression_parse(v);
            if (c < 0) {
                rc = bad(errf, "--compression %s: fp32, bf16 or int8", v);
                goto done;
            }
            o->compression = (flas_plan_compression)c;
        } else if (!strcmp(flag, "--block")) {
            if (int_in(flag, v, FLAS_UPDATE_BLOCK_MIN, FLAS_UPDATE_BLOCK_MAX, &iv, e, sizeof e)) {
                rc = bad(errf, "%s", e);
                goto done;
            }
            o->block = (int)iv;
            have_block = 1;
        } else if (!strcmp(flag, "--steps") || !strcmp(flag, "--batch-tokens")) {
            if (int_in(flag, v, 1, 1000000000000LL, &iv, e, sizeof e)) {
                rc = bad(errf, "%s", e);
                goto done;
            }
            *(!strcmp(flag, "--steps") ? &o->steps : &o->batch_tokens) = iv;
        } else if (!strcmp(flag, "--rounds")) {
            if (int_in(flag, v, 1, 1000000, &iv, e, sizeof e)) {
                rc = bad(errf, "%s", e);
                goto done;
            }
            o->rounds = (int)iv;
        } else if (!strcmp(flag, "--micro-batch")) {
            if (int_in(flag, v, 1, 4096, &iv, e, sizeof e)) {
                rc = bad(errf, "%s", e);
                goto done;
            }
            o->micro_batch = (int)iv;
        } else if (!strcmp(flag, "--round-hours")) {
            if (num_in(flag, v, 0, 1, 10000, &o->round_hours, e, sizeof e)) {
                rc = bad(errf, "%s", e);
                goto done;
            }
        } else if (!strcmp(flag, "--agg-gbps") || !strcmp(flag, "--ssh-gbps")) {
            if (num_in(flag, v, 0, 1, 1e5, &dv, e, sizeof e)) {
                rc = bad(errf, "%s", e);
                goto done;
            }
            *(!strcmp(flag, "--agg-gbps") ? &o->agg_gbps : &o->ssh_gbps) = dv;
        } else if (!strcmp(flag, "--latency-s") || !strcmp(flag, "--overhead-s")) {
            if (num_in(flag, v, 0, 0, 1e7, !strcmp(flag, "--latency-s") ? &o->latency_s : &o->overhead_s, e, sizeof e)) {
                rc = bad(errf, "%s", e);
                goto done;
            }
        } else {
            rc = bad(errf, "unknown option '%s' (see flas-coordinator plan --help)", flag);
            goto done;
        }
    }
    if (have_block && o->compression != FLAS_PLAN_INT8) {
        rc = bad(errf, "--block applies to --compression int8 only");
        goto done;
    }

    /* The model: a name, a checkpoint, or the explicit shape (which --seq-len may also adjust). */
    int explicit_shape = given[S_DIM] || given[S_LAYERS] || given[S_HEADS] || given[S_KV] || given[S_FFN] || given[S_VOCAB];
    if ((model || config) && explicit_shape) {
        rc = bad(errf, "give --model, --config or the explicit shape (--dim ...), not both (only --seq-len may adjust a model)");
        goto done;
    }
    if (model) {
        if (flas_plan_model(model, &o->cfg, e, sizeof e)) {
            rc = bad(errf, "%s", e);
            goto done;
        }
        snprintf(o->model, sizeof o->model, "%s", model);
    } else if (config) {
        flas_ckpt_hdf5_quiet();
        flas_ckpt_reader *cr = flas_ckpt_open(config, MPI_COMM_NULL, e, sizeof e);
        if (!cr) {
            rc = bad(errf, "--config: %s", e);
            goto done;
        }
        o->cfg = flas_ckpt_meta_of(cr)->cfg;
        flas_ckpt_close(cr);
        const char *base = strrchr(config, '/');
        snprintf(o->model, sizeof o->model, "%s", base ? base + 1 : config);
    } else if (explicit_shape) {
        for (int k = 0; k < S_COUNT; k++)
            if (k != S_KV && k != S_FFN && !given[k]) {
                rc = bad(errf, "the explicit shape needs %s (or give --model or --config)", shape_flags[k]);
                goto done;
            }
        /* As flas-train: kv heads default to the heads, the FFN width to LLaMA's rule with multiple_of 32. */
        o->cfg = (flas_config){(int)shape[S_DIM], (int)shape[S_LAYERS], (int)shape[S_HEADS],
                               (int)(given[S_KV] ? shape[S_KV] : shape[S_HEADS]),
                               given[S_FFN] ? (int)shape[S_FFN] : flas_hidden_dim((int)shape[S_DIM], 32, 0),
                               (int)shape[S_VOCAB], (int)shape[S_SEQ], 1e-5f, 10000.0f, 0};
        snprintf(o->model, sizeof o->model, "explicit");
    } else {
        rc = bad(errf, "no model: give --model 7b|13b|70b|tiny, --config FILE.h5 or --dim --layers --heads --vocab --seq-len");
        goto done;
    }
    if (given[S_SEQ])
        o->cfg.seq_len = (int)shape[S_SEQ];
    if (flas_plan_compute(o, r, e, sizeof e)) {
        rc = bad(errf, "%s", e);
        goto done;
    }
    flas_plan_print(o, r, tsv, out);
    rc = fflush(out) == 0 ? 0 : bad(errf, "cannot write the plan");
done:
    free(o);
    free(r);
    return rc;
}
