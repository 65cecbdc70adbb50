/* flas_aggregate: validate, then stream every tensor chunk by chunk through the merge kernel into an
 * atomically written global checkpoint. Memory: (inputs + 4) chunk buffers, whatever the model size. */
#include "agg_internal.h"
#include "flas/dp.h"
#include "flas/error.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* PASS_INPUT_REFUSED: some inputs got a reason mid-pass (non-finite values, an overflow they cause, an
 * update norm out of bounds); the output is discarded and the policy decides whether to go on. */
enum { PASS_OK = 0, PASS_INPUT_REFUSED = 1, PASS_FAILED = 2 };

typedef struct agg_ctx {
    const flas_agg_options *o;
    agg_previous prev;
    agg_input *in;
    int n;
    const char *output;
    flas_agg_report *rep;
    /* chunk buffers */
    float **buf, *x, *m, *v, *out;
    const float **used_in;
    double *p;
    int *used_idx;
    double *norm2;  /* per used input: sum of (x_k - x)^2 so far in this pass */
    float *dd, *dq; /* emitting an update: the new global's delta and its decoded value */
    void *codes;    /* ... its codes (int8 or bf16 bits) */
    float *scales;  /* ... and int8 scales */
    flas_ckpt_writer *wd; /* the update being emitted in this pass, or NULL */
    float *noise;   /* DP: this chunk's noise */
    unsigned char dp_seed[FLAS_DP_SEED_BYTES]; /* one seed per call: a restarted pass draws the same noise */
} agg_ctx;

static int dp_on(const flas_agg_options *o) { return o->dp_clip > 0; }

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int check_options(const flas_agg_options *o, int n, char *err, size_t errlen)
{
    if (o->strategy < 0 || o->strategy >= FLAS_AGG_N_STRATEGIES)
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "unknown strategy %d", (int)o->strategy);
    if (n < 1)
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "no local checkpoints to merge");
    if (o->min_sites < 1)
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--min-sites must be >= 1 (got %d)", o->min_sites);
    if (o->chunk_elems < 1024 || o->chunk_elems > ((size_t)1 << 30))
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "chunk of %zu elements is outside 1 Ki..1 Gi", o->chunk_elems);
    if (o->max_tokens < 1)
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--max-tokens must be >= 1");
    if (!(o->max_update_norm >= 0 && isfinite(o->max_update_norm)) ||
        !(o->max_update_ratio == 0 || (o->max_update_ratio >= 1 && isfinite(o->max_update_ratio))))
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--max-update-norm must be >= 0 and --max-update-ratio 0 or >= 1 "
                    "(got %g, %g)", o->max_update_norm, o->max_update_ratio);
    if (o->emit_update && o->emit_enc != FLAS_UPDATE_BF16 && o->emit_enc != FLAS_UPDATE_INT8)
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--emit-update needs the bf16 or int8 encoding");
    if (o->emit_update && o->emit_enc == FLAS_UPDATE_INT8 && o->emit_block &&
        flas_update_block_check(o->emit_block, err, errlen))
        return FLAS_AGG_USAGE;
    if (isnan(o->dp_clip) || o->dp_clip < 0 || !(o->dp_noise >= 0 && isfinite(o->dp_noise)) ||
        !(o->dp_delta == 0 || (o->dp_delta > 0 && o->dp_delta < 1)))
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--dp-clip must be > 0 or inf, --dp-noise >= 0 and "
                              "--dp-delta in (0, 1) (got %g, %g, %g)", o->dp_clip, o->dp_noise, o->dp_delta);
    if (!dp_on(o) && (o->dp_noise > 0 || o->dp_seed))
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--dp-noise and --dp-seed need --dp-clip (the noise is "
                              "calibrated to the clip)");
    if (dp_on(o) && isinf(o->dp_clip) && o->dp_noise > 0)
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--dp-noise %g with --dp-clip inf would add infinite noise: "
                              "set a finite clip", o->dp_noise);
    if (dp_on(o) && !o->uniform)
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "DP-FedAvg weights the sites equally (--uniform): a "
                              "site's claimed tokens must not set its influence on the noised mean");
    flas_agg_strategy s = o->strategy;
    if ((s == FLAS_AGG_FEDAVGM || s == FLAS_AGG_DILOCO || s == FLAS_AGG_FEDADAM || s == FLAS_AGG_FEDYOGI) &&
        !(o->lr > 0 && isfinite(o->lr)))
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--lr must be a positive number (got %g)", o->lr);
    if ((s == FLAS_AGG_FEDAVGM || s == FLAS_AGG_DILOCO) && !(o->momentum >= 0 && o->momentum < 1))
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--momentum must be in [0, 1) (got %g)", o->momentum);
    if ((s == FLAS_AGG_FEDADAM || s == FLAS_AGG_FEDYOGI) &&
        !(o->beta1 >= 0 && o->beta1 < 1 && o->beta2 >= 0 && o->beta2 < 1 && o->tau > 0 && isfinite(o->tau)))
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "--beta1/--beta2 must be in [0, 1) and --tau > 0 (got %g, %g, %g)",
                    o->beta1, o->beta2, o->tau);
    return 0;
}

/* The output may replace an older file, but never the previous global or an input. */
static int check_output(const char *output, const char *previous, const char *const *inputs, int n, char *err,
                        size_t errlen)
{
    struct stat so, s;
    if (stat(output, &so) != 0)
        return 0;
    if (S_ISDIR(so.st_mode))
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "output %s is a directory", output);
    if (stat(previous, &s) == 0 && s.st_dev == so.st_dev && s.st_ino == so.st_ino)
        return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "output %s is the previous global: it is never overwritten", output);
    for (int i = 0; i < n; i++)
        if (stat(inputs[i], &s) == 0 && s.st_dev == so.st_dev && s.st_ino == so.st_ino)
            return flas_fail_code(FLAS_AGG_USAGE, err, errlen, "output %s is the input %s", output, inputs[i]);
    return 0;
}

static void site_count(flas_server_state *s, const char *site, int64_t tokens)
{
    for (int i = 0; i < s->n_sites; i++)
        if (strcmp(s->sites[i].name, site) == 0) {
            s->sites[i].rounds++;
            s->sites[i].tokens += tokens;
            return;
        }
    if (s->n_sites < FLAS_CKPT_MAX_SITES) {
        flas_server_site *x = &s->sites[s->n_sites++];
        snprintf(x->name, sizeof x->name, "%s", site);
        x->rounds = 1;
        x->tokens = tokens;
    }
}

static int write_states(agg_ctx *c, flas_ckpt_writer *w, char *err, size_t errlen)
{
    const flas_agg_options *o = c->o;
    flas_server_state *s = calloc(1, sizeof *s);
    if (!s)
        return flas_fail_code(FLAS_AGG_FAILED, err, errlen, "out of memory");
    if (c->prev.server)
        *s = *c->prev.server; /* per-site counters carry over even when the buffers restart */
    snprintf(s->strategy, sizeof s->strategy, "%s", flas_agg_strategy_name(o->strategy));
    s->round++;
    s->step++;
    for (int i = 0; i < c->n; i++)
        if (c->in[i].rep->used)
            site_count(s, c->in[i].rep->site, c->in[i].rep->tokens);
    if (dp_on(o)) { /* the privacy ledger: rounds compose by adding their RDP */
        s->dp_rho += flas_dp_round_rho(o->dp_noise);
        s->dp_rounds++;
        c->rep->dp_rho = s->dp_rho;
        c->rep->dp_rounds = s->dp_rounds;
        c->rep->dp_delta = o->dp_delta > 0 ? o->dp_delta : 1e-6;
        c->rep->dp_epsilon = flas_dp_epsilon(s->dp_rho, c->rep->dp_delta, NULL);
    }
    int rc = flas_ckpt_set_server_state(w, s, err, errlen);
    free(s);
    if (rc)
        return FLAS_AGG_FAILED;

    const char *hn[16];
    double hv[16];
    int nh = 0;
    switch (o->strategy) {
    case FLAS_AGG_FEDAVGM:
    case FLAS_AGG_DILOCO:
        hn[nh] = "lr", hv[nh++] = o->lr;
        hn[nh] = "momentum", hv[nh++] = o->momentum;
        break;
    case FLAS_AGG_FEDADAM:
    case FLAS_AGG_FEDYOGI:
        hn[nh] = "lr", hv[nh++] = o->lr;
        hn[nh] = "beta1", hv[nh++] = o->beta1;
        hn[nh] = "beta2", hv[nh++] = o->beta2;
        hn[nh] = "tau", hv[nh++] = o->tau;
        break;
    default:
        break;
    }
    hn[nh] = "uniform_weights", hv[nh++] = o->uniform ? 1.0 : 0.0;
    hn[nh] = "reset_server_state", hv[nh++] = o->reset_server_state ? 1.0 : 0.0;
    if (dp_on(o)) {
        hn[nh] = "dp_clip", hv[nh++] = o->dp_clip;
        hn[nh] = "dp_noise_multiplier", hv[nh++] = o->dp_noise;
        hn[nh] = "dp_noise_stddev", hv[nh++] = c->rep->dp_noise_stddev;
        hn[nh] = "dp_delta", hv[nh++] = c->rep->dp_delta;
        hn[nh] = "dp_epsilon", hv[nh++] = c->rep->dp_epsilon;
        hn[nh] = "dp_rho", hv[nh++] = c->rep->dp_rho;
        hn[nh] = "dp_rounds", hv[nh++] = (double)c->rep->dp_rounds;
    }
    flas_ckpt_input *pi = calloc((size_t)c->n, sizeof *pi);
    if (!pi)
        return flas_fail_code(FLAS_AGG_FAILED, err, errlen, "out of memory");
    for (int i = 0; i < c->n; i++) {
        const flas_agg_input_report *r = c->in[i].rep;
        pi[i] = (flas_ckpt_input){c->in[i].path, r->sha256, r->site, r->round, r->tokens, r->weight, r->used,
                                  r->reason};
    }
    flas_ckpt_provenance p = {"flas-aggregate " FLAS_VERSION, flas_agg_strategy_name(o->strategy),
                              o->policy == FLAS_AGG_DROP_BAD ? "drop-bad" : "refuse-round", c->prev.path,
                              c->prev.sha256, nh, hn, hv, c->n, pi};
    rc = flas_ckpt_set_provenance(w, &p, err, errlen);
    free(pi);
    return rc ? FLAS_AGG_FAILED : 0;
}

static void progress(agg_ctx *c, double t0, double *last, uint64_t done, uint64_t total, const char *tensor)
{
    double t = now();
    if (!c->o->progress || (t - *last < 2.0 && done < total))
        return;
    *last = t;
    double rate = done / (t - t0 + 1e-9);
    fprintf(stderr, "flas-aggregate: %5.1f%% merged (%.2f of %.2f GB of tensors), %.0f MB/s, ETA %.0f s [%s]\n",
            100.0 * done / (double)total, done / 1e9, total / 1e9, rate / 1e6, rate > 0 ? (total - done) / rate : 0.0,
            tensor);
}

/* Elements per chunk of tensor t: whole rows, so that every chunk is one regular hyperslab (HDF5 reads
 * it with a single contiguous read; ranges cutting rows become unions of blocks on a slower path). */
static size_t gcd(size_t a, size_t b)
{
    while (b) {
        size_t t = a % b;
        a = b, b = t;
    }
    return a;
}

/* align > 0 (emitting an int8 update): every chunk but a tensor's last also covers whole blocks of
 * `align` elements, so the update is encoded block by block exactly as a site decodes it. */
static size_t chunk_step_aligned(const flas_tensor *t, size_t chunk, size_t align)
{
    if (t->ndim == 1) {
        if (!align)
            return chunk;
        size_t c = chunk - chunk % align;
        return c ? c : align;
    }
    size_t cols = t->full_shape[1], rows = chunk / cols;
    if (align) {
        size_t unit = align / gcd(cols, align); /* rows per whole number of blocks */
        rows -= rows % unit;
        if (!rows)
            rows = unit;
    }
    return (rows ? rows : 1) * cols;
}

static size_t emit_align(const flas_agg_options *o)
{
    if (!o->emit_update || o->emit_enc != FLAS_UPDATE_INT8)
        return 0;
    return (size_t)(o->emit_block ? o->emit_block : FLAS_UPDATE_BLOCK_DEFAULT);
}

/* Elements each chunk buffer must hold: the chunk, or one row of the widest tensor. */
static size_t buffer_elems(const flas_param_table *t, size_t chunk, size_t align)
{
    size_t need = chunk;
    for (int i = 0; i < t->n_tensors; i++) {
        size_t s = chunk_step_aligned(&t->tensors[i], chunk, align);
        need = s > need ? s : need;
    }
    return need;
}

static int bounds_on(const flas_agg_options *o) { return o->max_update_norm > 0 || o->max_update_ratio > 0; }

/* sum (a - x)^2 in double. Eight independent partial sums: the compiler may vectorise them (no
 * reassociation of one sum is needed), and the chunk is still in cache from the merge's read. */
static double sq_diff(const float *a, const float *x, size_t n)
{
    double s[8] = {0};
    size_t e = 0;
    for (; e + 8 <= n; e += 8)
        for (int j = 0; j < 8; j++) {
            double d = (double)a[e + j] - (double)x[e + j];
            s[j] += d * d;
        }
    for (; e < n; e++) {
        double d = (double)a[e] - (double)x[e];
        s[0] += d * d;
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* After a full pass: inputs whose update norm breaks a bound get a reason. Returns how many. The
 * relative bound uses the LOWER median, so that with two sites the larger update is measured against
 * the smaller one, not against a median it dominates itself. */
static int apply_norm_bounds(agg_ctx *c, int k)
{
    const flas_agg_options *o = c->o;
    double sorted[k > 0 ? k : 1], median = 0;
    for (int j = 0; j < k; j++)
        sorted[j] = sqrt(c->norm2[j]);
    qsort(sorted, (size_t)k, sizeof *sorted, cmp_double);
    if (k > 0)
        median = sorted[(k - 1) / 2];
    int refused = 0;
    for (int j = 0; j < k; j++) {
        agg_input *x = &c->in[c->used_idx[j]];
        double norm = sqrt(c->norm2[j]);
        x->rep->update_norm = norm;
        if (o->max_update_norm > 0 && norm > o->max_update_norm) {
            snprintf(x->rep->reason, sizeof x->rep->reason, "%s: update norm %.4g exceeds --max-update-norm %g",
                     x->path, norm, o->max_update_norm);
            refused++;
        } else if (o->max_update_ratio > 0 && k > 1 && norm > o->max_update_ratio * median) {
            snprintf(x->rep->reason, sizeof x->rep->reason, "%s: update norm %.4g exceeds %g x the sites' median "
                     "%.4g (--max-update-ratio)", x->path, norm, o->max_update_ratio, median);
            refused++;
        }
    }
    return refused;
}

/* The result of a chunk overflowed. If one input's change dominates the first overflowing element, that
 * input caused it: it gets the reason (and the policy decides), not the whole round. Returns 1 if an
 * input was blamed, 0 if no input stands out (then the server step itself is to blame). */
static int blame_overflow(agg_ctx *c, int k, size_t nn, const float *x, const float *m, const float *v,
                          const char *tensor)
{
    size_t e = 0;
    while (e < nn && isfinite(c->out[e]) && (!m || isfinite(m[e])) && (!v || isfinite(v[e])))
        e++;
    if (e == nn || k < 1)
        return 0;
    int worst = 0;
    double total = 0, big = -1;
    for (int j = 0; j < k; j++) {
        double d = c->p[j] * fabs((double)c->used_in[j][e] - (x ? (double)x[e] : 0.0));
        total += d;
        if (d > big)
            big = d, worst = j;
    }
    if (!(big >= 0.5 * total) || big == 0)
        return 0;
    agg_input *in = &c->in[c->used_idx[worst]];
    snprintf(in->rep->reason, sizeof in->rep->reason, "%s: params/%s[%zu] = %g makes the %s server step overflow "
             "(an update far larger than the others)", in->path, tensor, e, (double)c->used_in[worst][e],
             flas_agg_strategy_name(c->o->strategy));
    return 1;
}

/* Reads chunk [lo, lo + nn) of tensor tn: the previous global's weights into c->x (when needs_x) and
 * the k used inputs' values into c->buf[j] (an update file decoded onto c->x). PASS_OK,
 * PASS_INPUT_REFUSED (a damaged or forged delta: that input has the reason) or PASS_FAILED (I/O). */
static int read_inputs(agg_ctx *c, int k, int needs_x, const flas_tensor *tn, size_t lo, size_t nn, char *err,
                       size_t errlen)
{
    char why[1024];
    if (needs_x && flas_ckpt_get_elems(c->prev.r, FLAS_CKPT_PARAMS, tn->name, lo, nn, c->x, why, sizeof why))
        return flas_fail_code(PASS_FAILED, err, errlen, "%s", why);
    for (int j = 0; j < k; j++) {
        agg_input *x = &c->in[c->used_idx[j]];
        if (!x->is_update) {
            if (flas_ckpt_get_elems(x->r, FLAS_CKPT_PARAMS, tn->name, lo, nn, c->buf[j], why, sizeof why))
                return flas_fail_code(PASS_FAILED, err, errlen, "%s", why);
        } else if (flas_ckpt_get_update(x->r, tn->name, lo, nn, c->buf[j], why, sizeof why)) {
            /* a damaged or forged delta (a NaN scale, a code out of range) is the input's fault */
            snprintf(x->rep->reason, sizeof x->rep->reason, "%.500s", why);
            return PASS_INPUT_REFUSED;
        } else {
            flas_update_add(c->x, c->buf[j], nn, c->buf[j]); /* the site's model: base + delta */
        }
    }
    return PASS_OK;
}

/* The used inputs, in c->used_idx; returns how many. */
static int collect_used(agg_ctx *c)
{
    int k = 0;
    for (int i = 0; i < c->n; i++)
        if (c->in[i].rep->used)
            c->used_idx[k++] = i;
    return k;
}

/* DP: ||x_k - x_prev||_2 of every used input, in one streaming read before the merge, because a site's
 * clip factor must be known before its first chunk is averaged. That read costs as much I/O as the
 * merge's own reads of the inputs and the previous global. An input whose norm is not finite is
 * refused like a NaN in the merge. */
static int dp_norm_pass(agg_ctx *c, char *err, size_t errlen)
{
    const int k = collect_used(c);
    for (int j = 0; j < k; j++)
        c->norm2[j] = 0;
    const flas_param_table *t = flas_ckpt_tensors(c->prev.r);
    for (int ti = 0; ti < t->n_tensors; ti++) {
        const flas_tensor *tn = &t->tensors[ti];
        size_t step = chunk_step_aligned(tn, c->o->chunk_elems, emit_align(c->o));
        for (size_t lo = 0; lo < tn->numel; lo += step) {
            size_t nn = tn->numel - lo < step ? tn->numel - lo : step;
            int rc = read_inputs(c, k, 1, tn, lo, nn, err, errlen);
            if (rc != PASS_OK)
                return rc;
            for (int j = 0; j < k; j++)
                c->norm2[j] += sq_diff(c->buf[j], c->x, nn);
        }
    }
    int refused = 0;
    for (int j = 0; j < k; j++) {
        flas_agg_input_report *r = c->in[c->used_idx[j]].rep;
        r->update_norm = sqrt(c->norm2[j]);
        if (!isfinite(r->update_norm)) {
            snprintf(r->reason, sizeof r->reason, "%s: non-finite values (NaN or Inf) in its update",
                     c->in[c->used_idx[j]].path);
            refused = 1;
        }
        r->clip_factor = flas_dp_clip_factor(r->update_norm, c->o->dp_clip);
    }
    return refused ? PASS_INPUT_REFUSED : PASS_OK;
}

/* a <- x + f (a - x): the site's update scaled to the clip. f == 1 leaves it untouched, bit for bit. */
static void dp_clip_chunk(float *a, const float *x, size_t n, double f)
{
    if (f == 1.0)
        return;
    for (size_t e = 0; e < n; e++)
        a[e] = (float)((double)x[e] + f * ((double)a[e] - (double)x[e]));
}

/* One streaming pass over every tensor into a new writer, left uncommitted in *wout on PASS_OK.
 * PASS_INPUT_REFUSED marks the offending inputs' reasons. */
static int merge_pass(agg_ctx *c, flas_ckpt_writer **wout, char *err, size_t errlen)
{
    const flas_agg_options *o = c->o;
    const flas_ckpt_meta *pm = c->prev.meta;
    const int k = collect_used(c);
    double total_tokens = 0;
    for (int j = 0; j < k; j++)
        total_tokens += (double)c->in[c->used_idx[j]].rep->tokens;
    for (int i = 0; i < c->n; i++)
        c->in[i].rep->weight = 0;
    for (int j = 0; j < k; j++) {
        agg_input *x = &c->in[c->used_idx[j]];
        c->p[j] = o->uniform ? 1.0 / k : (double)x->rep->tokens / total_tokens;
        x->rep->weight = c->p[j];
        c->used_in[j] = c->buf[j];
    }
    const int has_m = flas_agg_strategy_has_m(o->strategy), has_v = flas_agg_strategy_has_v(o->strategy);
    /* The update norms need the previous global's weights even where the strategy does not. */
    int any_update = 0;
    for (int j = 0; j < k; j++)
        any_update |= c->in[c->used_idx[j]].is_update;
    const int needs_x = (o->strategy != FLAS_AGG_FEDAVG && o->strategy != FLAS_AGG_MEAN) || bounds_on(o) ||
                        any_update || o->emit_update || dp_on(o);
    /* With DP the norm pass has measured every update already: the bounds use those norms */
    for (int j = 0; j < k; j++)
        c->norm2[j] = dp_on(o) ? c->in[c->used_idx[j]].rep->update_norm * c->in[c->used_idx[j]].rep->update_norm : 0;
    flas_agg_kernel kp = {o->strategy, k, c->p, o->lr, o->momentum, o->beta1, o->beta2, o->tau, NULL};
    /* DP: the mean of k clipped updates moves by at most C/k when one site is added or removed */
    flas_dp_rng *rng = NULL;
    if (dp_on(o) && o->dp_noise > 0) {
        c->rep->dp_noise_stddev = o->dp_noise * o->dp_clip / k;
        if (!(rng = flas_dp_rng_new(c->dp_seed)))
            return flas_fail_code(PASS_FAILED, err, errlen, "cannot start the noise generator (OpenSSL ChaCha20)");
        kp.noise = c->noise;
    }

    flas_ckpt_meta meta = {0};
    meta.cfg = pm->cfg;
    meta.role = FLAS_CKPT_GLOBAL;
    meta.round = pm->round + 1;
    for (int j = 0; j < k; j++)
        meta.tokens_trained += c->in[c->used_idx[j]].rep->tokens;
    snprintf(meta.base_sha256, sizeof meta.base_sha256, "%s", c->prev.sha256);
    meta.tp_size = meta.dp_size = 1;
    unsigned contents = FLAS_CKPT_SERVER_STATE | FLAS_CKPT_PROVENANCE | (has_m ? FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M) : 0) |
                        (has_v ? FLAS_CKPT_HAS(FLAS_CKPT_SERVER_V) : 0);
    char why[1024];
    flas_ckpt_writer *w = flas_ckpt_create(c->output, &meta, contents, MPI_COMM_NULL, why, sizeof why);
    if (!w) {
        flas_dp_rng_free(rng);
        return flas_fail_code(PASS_FAILED, err, errlen, "%s", why);
    }
    c->wd = NULL;
    if (o->emit_update) {
        flas_ckpt_meta um = meta;
        snprintf(um.base_sha256, sizeof um.base_sha256, "%s", c->prev.base_sha256);
        um.update = o->emit_enc;
        um.update_block = o->emit_enc == FLAS_UPDATE_INT8 ? (int32_t)emit_align(o) : 0;
        c->wd = flas_ckpt_create(o->emit_update, &um, FLAS_CKPT_UPDATE, MPI_COMM_NULL, why, sizeof why);
        if (!c->wd) {
            flas_ckpt_abort(w);
            flas_dp_rng_free(rng);
            return flas_fail_code(PASS_FAILED, err, errlen, "%s", why);
        }
    }
    const size_t align = emit_align(o);

    const flas_param_table *t = flas_ckpt_tensors(c->prev.r);
    uint64_t total = (uint64_t)t->n_params_full, done = 0;
    double t0 = now(), last = t0;
    int rc = PASS_OK;
    unsigned char *bad = calloc((size_t)(k ? k : 1), 1);
    for (int ti = 0; ti < t->n_tensors && rc == PASS_OK; ti++) {
        const flas_tensor *tn = &t->tensors[ti];
        size_t numel = tn->numel, step = chunk_step_aligned(tn, o->chunk_elems, align);
        for (size_t lo = 0; lo < numel && rc == PASS_OK; lo += step) {
            size_t nn = numel - lo < step ? numel - lo : step;
            if ((rc = read_inputs(c, k, needs_x, tn, lo, nn, err, errlen)) != PASS_OK)
                break;
            int io = 0;
            if (has_m && c->prev.m_from_file)
                io |= flas_ckpt_get_elems(c->prev.r, FLAS_CKPT_SERVER_M, tn->name, lo, nn, c->m, why, sizeof why);
            else if (has_m)
                memset(c->m, 0, nn * sizeof *c->m);
            if (has_v && c->prev.v_from_file)
                io |= flas_ckpt_get_elems(c->prev.r, FLAS_CKPT_SERVER_V, tn->name, lo, nn, c->v, why, sizeof why);
            else if (has_v)
                for (size_t e = 0; e < nn; e++)
                    c->v[e] = (float)(o->tau * o->tau); /* Reddi et al.: v starts at tau^2 */
            if (io) {
                rc = flas_fail_code(PASS_FAILED, err, errlen, "%s", why);
                break;
            }
            if (bounds_on(o) && !dp_on(o)) /* the bounds judge what a site sent, before any clipping */
                for (int j = 0; j < k; j++)
                    c->norm2[j] += sq_diff(c->used_in[j], c->x, nn);
            if (dp_on(o)) {
                for (int j = 0; j < k; j++)
                    dp_clip_chunk(c->buf[j], c->x, nn, c->in[c->used_idx[j]].rep->clip_factor);
                if (rng && flas_dp_rng_gaussian(rng, c->rep->dp_noise_stddev, c->noise, nn)) {
                    rc = flas_fail_code(PASS_FAILED, err, errlen, "the noise generator failed (OpenSSL)");
                    break;
                }
            }
            int out_bad = 0;
            int nbad = flas_agg_combine(&kp, nn, c->used_in, c->x, has_m ? c->m : NULL, has_v ? c->v : NULL, c->out,
                                        bad, &out_bad);
            if (nbad != 0) {
                for (int j = 0; j < k; j++)
                    if (bad[j]) {
                        agg_input *x = &c->in[c->used_idx[j]];
                        snprintf(x->rep->reason, sizeof x->rep->reason,
                                 "%s: non-finite values (NaN or Inf) in params/%s", x->path, tn->name);
                    }
                rc = nbad > 0 ? PASS_INPUT_REFUSED : flas_fail_code(PASS_FAILED, err, errlen, "out of memory");
                break;
            }
            if (out_bad && blame_overflow(c, k, nn, needs_x ? c->x : NULL, has_m ? c->m : NULL, has_v ? c->v : NULL,
                                          tn->name)) {
                rc = PASS_INPUT_REFUSED;
                break;
            }
            if (out_bad) {
                rc = flas_fail_code(PASS_FAILED, err, errlen, "%s produced non-finite values in %s (server hyper-parameters "
                          "too large, or a damaged previous global?)", flas_agg_strategy_name(o->strategy), tn->name);
                break;
            }
            if (c->wd) {
                /* The compressed downlink: the new global becomes previous + decode(encode(out - previous)),
                 * the very bits a site gets from flas_update_apply_file; what the encoding loses stays
                 * in the next round's delta (it is measured against these weights), which is the error
                 * feedback of the downlink. */
                for (size_t e = 0; e < nn; e++)
                    c->dd[e] = c->out[e] - c->x[e];
                if (flas_ckpt_put_update(c->wd, tn->name, lo, nn, c->dd, NULL, why, sizeof why)) {
                    rc = flas_fail_code(PASS_FAILED, err, errlen, "%s", why);
                    break;
                }
                /* the same deterministic encoding again, here, to decode exactly what was written */
                if (flas_update_encode(o->emit_enc, (int)align, c->dd, nn, c->codes, c->scales, NULL)) {
                    rc = flas_fail_code(PASS_FAILED, err, errlen, "the new global's delta in %s is not encodable",
                                        tn->name);
                    break;
                }
                flas_update_decode(o->emit_enc, (int)align, 0, c->codes, c->scales, nn, c->dq);
                flas_update_add(c->x, c->dq, nn, c->out);
            }
            io = flas_ckpt_put_elems(w, FLAS_CKPT_PARAMS, tn->name, lo, nn, c->out, why, sizeof why);
            if (has_m && !io)
                io = flas_ckpt_put_elems(w, FLAS_CKPT_SERVER_M, tn->name, lo, nn, c->m, why, sizeof why);
            if (has_v && !io)
                io = flas_ckpt_put_elems(w, FLAS_CKPT_SERVER_V, tn->name, lo, nn, c->v, why, sizeof why);
            if (io) {
                rc = flas_fail_code(PASS_FAILED, err, errlen, "%s", why);
                break;
            }
            double in_bytes = 0;
            for (int j = 0; j < k; j++) {
                const flas_ckpt_meta *im = flas_ckpt_meta_of(c->in[c->used_idx[j]].r);
                in_bytes += flas_update_bytes(im->update, im->update_block, (double)nn);
            }
            c->rep->bytes_read += (uint64_t)in_bytes + (uint64_t)nn * 4 *
                                  (uint64_t)(needs_x + (has_m && c->prev.m_from_file) + (has_v && c->prev.v_from_file));
            c->rep->bytes_written += (uint64_t)nn * 4 * (uint64_t)(1 + has_m + has_v);
            done += nn;
            progress(c, t0, &last, done, total, tn->name);
        }
    }
    free(bad);
    flas_dp_rng_free(rng);
    if (rc == PASS_OK && bounds_on(o) && apply_norm_bounds(c, k) > 0)
        rc = PASS_INPUT_REFUSED; /* like non-finite values: the offending inputs have reasons, the pass restarts */
    if (rc != PASS_OK) {
        flas_ckpt_abort(w);
        if (c->wd)
            flas_ckpt_abort(c->wd);
        c->wd = NULL;
        return rc;
    }
    *wout = w;
    return PASS_OK;
}

static int count_used(const agg_ctx *c)
{
    int u = 0;
    for (int i = 0; i < c->n; i++)
        u += c->in[i].rep->used;
    return u;
}

/* Applies the policy to the inputs refused so far: REFUSED (err set) or 0 to go on. */
static int apply_policy(agg_ctx *c, char *err, size_t errlen)
{
    int bad = 0, first = -1;
    for (int i = 0; i < c->n; i++)
        if (!c->in[i].rep->used) {
            bad++;
            if (first < 0)
                first = i;
        }
    if (bad && c->o->policy == FLAS_AGG_REFUSE_ROUND)
        return flas_fail_code(FLAS_AGG_REFUSED, err, errlen, "round refused (policy refuse-round): %s%s", c->in[first].rep->reason,
                    bad > 1 ? " (and more inputs refused)" : "");
    for (int i = 0; i < c->n && c->o->progress; i++)
        if (!c->in[i].rep->used && c->in[i].rep->reason[0])
            fprintf(stderr, "flas-aggregate: dropping input: %s\n", c->in[i].rep->reason);
    int used = count_used(c);
    if (used < c->o->min_sites)
        return flas_fail_code(FLAS_AGG_REFUSED, err, errlen, "round refused: %d usable input%s, --min-sites is %d%s%s", used,
                    used == 1 ? "" : "s", c->o->min_sites, first >= 0 ? "; first refused: " : "",
                    first >= 0 ? c->in[first].rep->reason : "");
    return 0;
}

static void release(agg_ctx *c)
{
    for (int i = 0; i < c->n && c->in; i++)
        if (c->in[i].r)
            flas_ckpt_close(c->in[i].r);
    if (c->prev.r)
        flas_ckpt_close(c->prev.r);
    free(c->prev.server);
    for (int i = 0; i < c->n && c->buf; i++)
        free(c->buf[i]);
    free(c->buf);
    free(c->x);
    free(c->m);
    free(c->v);
    free(c->out);
    free(c->used_in);
    free(c->p);
    free(c->used_idx);
    free(c->norm2);
    free(c->dd);
    free(c->dq);
    free(c->codes);
    free(c->scales);
    free(c->noise);
    free(c->in);
    explicit_bzero(c->dp_seed, sizeof c->dp_seed);
}

int flas_aggregate(const char *previous, const char *const *inputs, int n_inputs, const char *output,
                   const flas_agg_options *o, flas_agg_report *report, char *err, size_t errlen)
{
    flas_agg_report local_rep;
    flas_agg_report *rep = report ? report : &local_rep;
    memset(rep, 0, sizeof *rep);
    int rc = check_options(o, n_inputs, err, errlen);
    if (rc)
        return rc;
    if ((rc = check_output(output, previous, inputs, n_inputs, err, errlen)))
        return rc;
    if (o->threads > 0)
        omp_set_num_threads(o->threads); /* the merge kernel; hashing picks its own count */
    agg_ctx c = {.o = o, .n = n_inputs, .output = output, .rep = rep};
    agg_hasher *hasher = NULL;
    c.prev.path = previous;
    rep->n_inputs = n_inputs;
    rep->inputs = calloc((size_t)n_inputs, sizeof *rep->inputs);
    c.in = calloc((size_t)n_inputs, sizeof *c.in);
    if (!rep->inputs || !c.in) {
        release(&c);
        return flas_fail_code(FLAS_AGG_FAILED, err, errlen, "out of memory");
    }
    for (int i = 0; i < n_inputs; i++) {
        c.in[i].path = inputs[i];
        c.in[i].rep = &rep->inputs[i];
        rep->inputs[i].update_norm = -1;
        rep->inputs[i].clip_factor = 1;
    }
    if (dp_on(o) && o->dp_noise > 0) {
        if (o->dp_seed)
            memcpy(c.dp_seed, o->dp_seed, sizeof c.dp_seed);
        else if (flas_dp_seed_random(c.dp_seed)) {
            rc = flas_fail_code(FLAS_AGG_FAILED, err, errlen, "cannot seed the DP noise: getrandom: %s",
                                strerror(errno));
            goto out;
        }
    }

    /* The previous global's digest is needed up front (inputs must name it as their base); the
     * inputs' digests are computed in the background while they are validated and merged. */
    double t0 = now();
    char why[1024];
    if (flas_sha256_file(previous, c.prev.sha256, NULL, why, sizeof why)) {
        rc = flas_fail_code(FLAS_AGG_USAGE, err, errlen, "previous global: %s", why);
        goto out;
    }
    snprintf(rep->previous_sha256, sizeof rep->previous_sha256, "%s", c.prev.sha256);
    if (agg_open_previous(&c.prev, o, err, errlen)) {
        rc = FLAS_AGG_USAGE;
        goto out;
    }
    rep->new_round = c.prev.meta->round + 1;
    /* With three or more cores, one merges while the others hash; with fewer, hashing on every core
     * first and merging after measured faster than the two fighting over one core. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int overlap = cores >= 3;
    hasher = agg_hash_start(c.in, n_inputs, (int)(overlap ? cores - 1 : cores > 0 ? cores : 1));
    if (!hasher) {
        rc = flas_fail_code(FLAS_AGG_FAILED, err, errlen, "out of memory");
        goto out;
    }
    agg_validate_inputs(&c.prev, c.in, n_inputs, o);
    if ((rc = apply_policy(&c, err, errlen)))
        goto out;

    size_t ch = buffer_elems(flas_ckpt_tensors(c.prev.r), o->chunk_elems, emit_align(o));
    c.buf = calloc((size_t)n_inputs, sizeof *c.buf);
    c.used_in = calloc((size_t)n_inputs, sizeof *c.used_in);
    c.p = calloc((size_t)n_inputs, sizeof *c.p);
    c.used_idx = calloc((size_t)n_inputs, sizeof *c.used_idx);
    c.norm2 = calloc((size_t)n_inputs, sizeof *c.norm2);
    c.x = malloc(ch * sizeof(float));
    c.m = malloc(ch * sizeof(float));
    c.v = malloc(ch * sizeof(float));
    c.out = malloc(ch * sizeof(float));
    c.noise = dp_on(o) ? malloc(ch * sizeof(float)) : NULL;
    int oom = !c.buf || !c.used_in || !c.p || !c.used_idx || !c.norm2 || !c.x || !c.m || !c.v || !c.out ||
              (dp_on(o) && !c.noise);
    if (o->emit_update && !oom) {
        c.dd = malloc(ch * sizeof(float));
        c.dq = malloc(ch * sizeof(float));
        c.codes = malloc(ch * 2);
        c.scales = malloc((ch / FLAS_UPDATE_BLOCK_MIN + 1) * sizeof(float));
        oom = !c.dd || !c.dq || !c.codes || !c.scales;
    }
    for (int i = 0; i < n_inputs && !oom; i++)
        oom = !(c.buf[i] = malloc(ch * sizeof(float)));
    if (oom) {
        rc = flas_fail_code(FLAS_AGG_FAILED, err, errlen, "out of memory for %d chunk buffers of %zu MiB", n_inputs + 4,
                  ch * 4 >> 20);
        goto out;
    }

    if (!overlap) {
        agg_hash_join(hasher);
        hasher = NULL;
        rep->seconds_hash = now() - t0;
    }
    double t1 = now();
    while (dp_on(o)) {
        int pr = dp_norm_pass(&c, err, errlen);
        if (pr == PASS_FAILED) {
            rc = FLAS_AGG_FAILED;
            goto out;
        }
        if (pr == PASS_OK)
            break;
        for (int i = 0; i < n_inputs; i++)
            if (c.in[i].rep->used && c.in[i].rep->reason[0])
                c.in[i].rep->used = 0, c.in[i].rep->weight = 0;
        if ((rc = apply_policy(&c, err, errlen)))
            goto out;
    }
    rep->seconds_dp_norms = dp_on(o) ? now() - t1 : 0;
    for (;;) {
        flas_ckpt_writer *w = NULL;
        rep->passes++;
        int pr = merge_pass(&c, &w, err, errlen);
        if (pr == PASS_FAILED) {
            rc = FLAS_AGG_FAILED;
            goto out;
        }
        int refused = 0;
        if (pr == PASS_INPUT_REFUSED) {
            /* Inputs refused mid-stream: the unfinished output was discarded. */
            for (int i = 0; i < n_inputs; i++)
                if (c.in[i].rep->used && c.in[i].rep->reason[0])
                    c.in[i].rep->used = 0, c.in[i].rep->weight = 0, refused = 1;
            if (!refused) {
                rc = flas_fail_code(FLAS_AGG_FAILED, err, errlen, "internal error: a merge pass refused no input");
                goto out;
            }
        }
        if (hasher) {
            agg_hash_join(hasher);
            hasher = NULL;
            rep->seconds_hash = now() - t0;
        }
        int before = count_used(&c);
        agg_check_digests(c.in, n_inputs);
        refused |= count_used(&c) != before;
        if (!refused) {
            if (write_states(&c, w, why, sizeof why)) {
                flas_ckpt_abort(w); /* commit frees w in every case; this path must remove its temp file */
                if (c.wd)
                    flas_ckpt_abort(c.wd);
                c.wd = NULL;
                rc = flas_fail_code(FLAS_AGG_FAILED, err, errlen, "%s", why);
                goto out;
            }
            /* The emitted update first, then the global: a global whose update is missing would be
             * staged in full; an update whose global failed is removed (it belongs to nothing). */
            if (c.wd) {
                int uc = flas_ckpt_commit(c.wd, why, sizeof why);
                c.wd = NULL;
                if (uc) {
                    flas_ckpt_abort(w);
                    rc = flas_fail_code(FLAS_AGG_FAILED, err, errlen, "%s", why);
                    goto out;
                }
            }
            if (flas_ckpt_commit(w, why, sizeof why)) {
                if (o->emit_update)
                    unlink(o->emit_update);
                rc = flas_fail_code(FLAS_AGG_FAILED, err, errlen, "%s", why);
                goto out;
            }
            break;
        }
        if (w)
            flas_ckpt_abort(w);
        if (c.wd)
            flas_ckpt_abort(c.wd);
        c.wd = NULL;
        for (int i = 0; i < n_inputs; i++)
            if (!c.in[i].rep->used)
                c.in[i].rep->weight = 0;
        if ((rc = apply_policy(&c, err, errlen)))
            goto out;
    }
    rep->seconds_merge = now() - t1;
    rep->seconds_total = now() - t0;
    rep->n_used = count_used(&c);
out:
    agg_hash_cancel(hasher); /* the workers read c.in: stop them before it goes */
    release(&c);
    if (!report)
        flas_agg_report_free(&local_rep);
    return rc;
}

void flas_agg_report_free(flas_agg_report *r)
{
    if (!r)
        return;
    free(r->inputs);
    r->inputs = NULL;
}
