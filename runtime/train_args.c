/* flas-train's command line: defaults, flags (getopt_long), the model config they describe, and the
 * checks of a combination before any rank touches a file. */
#include "flas/error.h"
#include "flas/kv.h"
#include "flas/staging.h"
#include "flas/train.h"
#include "gemm_bf16.h"
#include "train_internal.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void flas_train_opts_init(flas_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = FLAS_TRAIN_RUN;
    o->round = -1;
    o->multiple_of = 32;
    o->seed = 1234;
    o->shuffle = 1;
    o->batch = 4;
    o->accum = 1;
    o->lr = 3e-4f;
    o->min_lr = -1.0f; /* lr / 10 */
    o->weight_decay = 0.1f;
    o->clip = 1.0f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->warmup = -1;
    o->tp = 1;
    o->bucket_mb = 25.0;
    o->margin = -1.0;
    o->log_every = 10;
    o->update = FLAS_UPDATE_FULL;
    o->update_block = FLAS_UPDATE_BLOCK_DEFAULT;
    o->data_epoch = -1;
}

static int copy(char *dst, size_t len, const char *v, const char *flag, char *err, size_t errlen)
{
    if (strlen(v) >= len)
        return flas_fail(err, errlen, "%s: value is longer than %zu characters", flag, len - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int parse_long(const char *v, long lo, long hi, long *out, const char *flag, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        return flas_fail(err, errlen, "%s: '%s' is not an integer in %ld..%ld", flag, v, lo, hi);
    *out = x;
    return 0;
}

static int parse_int(const char *v, long lo, long hi, int *out, const char *flag, char *err, size_t errlen)
{
    long x = 0;
    if (parse_long(v, lo, hi, &x, flag, err, errlen))
        return -1;
    *out = (int)x;
    return 0;
}

static int parse_double(const char *v, double lo, double hi, double *out, const char *flag, char *err,
                        size_t errlen)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < lo || x > hi)
        return flas_fail(err, errlen, "%s: '%s' is not a number in %g..%g", flag, v, lo, hi);
    *out = x;
    return 0;
}

static int parse_float(const char *v, double lo, double hi, float *out, const char *flag, char *err,
                       size_t errlen)
{
    double x = 0;
    if (parse_double(v, lo, hi, &x, flag, err, errlen))
        return -1;
    *out = (float)x;
    return 0;
}

/* A count with an optional decimal suffix: 5000, 20k, 1.5M, 2G. */
static int parse_count(const char *v, int64_t *out, const char *flag, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    double mult = 1;
    if (*end == 'k' || *end == 'K')
        mult = 1e3, end++;
    else if (*end == 'm' || *end == 'M')
        mult = 1e6, end++;
    else if (*end == 'g' || *end == 'G')
        mult = 1e9, end++;
    x *= mult;
    if (!*v || *end || errno || !(x >= 1) || x > 9e18 || x != floor(x))
        return flas_fail(err, errlen, "%s: '%s' is not a positive count (e.g. 5000, 20k, 1.5M, 2G)", flag, v);
    *out = (int64_t)x;
    return 0;
}

enum {
    O_INIT = 256, O_EVAL, O_VERSION, O_FEDERATION, O_SITE, O_ROUND, O_GLOBAL, O_GLOBAL_SHA, O_OUTPUT,
    O_OUTPUT_DIR, O_JOB_ID, O_RESUME, O_DATA, O_VALID, O_SEED, O_NO_SHUFFLE, O_MODEL, O_DIM, O_LAYERS,
    O_HEADS, O_KV_HEADS, O_HIDDEN, O_VOCAB, O_SEQ_LEN, O_NORM_EPS, O_ROPE_THETA, O_TIED, O_UNTIED,
    O_MULTIPLE_OF, O_STEPS, O_TOKENS, O_BATCH, O_SEQ, O_ACCUM, O_LR, O_MIN_LR, O_WARMUP, O_DECAY_STEPS,
    O_SCHEDULE_OFFSET, O_WEIGHT_DECAY, O_CLIP, O_BETA1, O_BETA2, O_ADAM_EPS, O_TP, O_ZERO, O_THREADS,
    O_BUCKET_MB, O_TIME_BUDGET, O_MARGIN, O_CHECKPOINT_EVERY, O_LOG_EVERY, O_METRICS, O_PEAK, O_VALID_BATCHES,
    O_JSON, O_INIT_FROM, O_UPDATE, O_UPDATE_BLOCK, O_RESIDUAL_DIR, O_STATE_DIR, O_INNER_STATE, O_LR_SCHEDULE, O_ROUNDS,
    O_ROUND_WARMUP, O_DATA_EPOCH, O_PROX, O_DEVICE, O_PRECISION
};

static const struct option long_opts[] = {
    {"help", no_argument, 0, 'h'}, {"init", no_argument, 0, O_INIT}, {"eval", required_argument, 0, O_EVAL},
    {"version", no_argument, 0, O_VERSION}, {"federation", required_argument, 0, O_FEDERATION},
    {"site", required_argument, 0, O_SITE}, {"round", required_argument, 0, O_ROUND},
    {"global", required_argument, 0, O_GLOBAL}, {"global-sha256", required_argument, 0, O_GLOBAL_SHA},
    {"output", required_argument, 0, O_OUTPUT}, {"output-dir", required_argument, 0, O_OUTPUT_DIR},
    {"job-id", required_argument, 0, O_JOB_ID}, {"resume", required_argument, 0, O_RESUME},
    {"data", required_argument, 0, O_DATA}, {"valid", required_argument, 0, O_VALID},
    {"seed", required_argument, 0, O_SEED}, {"no-shuffle", no_argument, 0, O_NO_SHUFFLE},
    {"model", required_argument, 0, O_MODEL}, {"dim", required_argument, 0, O_DIM},
    {"layers", required_argument, 0, O_LAYERS}, {"heads", required_argument, 0, O_HEADS},
    {"kv-heads", required_argument, 0, O_KV_HEADS}, {"hidden", required_argument, 0, O_HIDDEN},
    {"vocab", required_argument, 0, O_VOCAB}, {"seq-len", required_argument, 0, O_SEQ_LEN},
    {"norm-eps", required_argument, 0, O_NORM_EPS}, {"rope-theta", required_argument, 0, O_ROPE_THETA},
    {"tied", no_argument, 0, O_TIED}, {"untied", no_argument, 0, O_UNTIED},
    {"multiple-of", required_argument, 0, O_MULTIPLE_OF}, {"steps", required_argument, 0, O_STEPS},
    {"tokens", required_argument, 0, O_TOKENS}, {"batch", required_argument, 0, O_BATCH},
    {"seq", required_argument, 0, O_SEQ}, {"accum", required_argument, 0, O_ACCUM},
    {"lr", required_argument, 0, O_LR}, {"min-lr", required_argument, 0, O_MIN_LR},
    {"warmup", required_argument, 0, O_WARMUP}, {"decay-steps", required_argument, 0, O_DECAY_STEPS},
    {"schedule-offset", required_argument, 0, O_SCHEDULE_OFFSET},
    {"weight-decay", required_argument, 0, O_WEIGHT_DECAY}, {"clip", required_argument, 0, O_CLIP},
    {"beta1", required_argument, 0, O_BETA1}, {"beta2", required_argument, 0, O_BETA2},
    {"adam-eps", required_argument, 0, O_ADAM_EPS}, {"tp", required_argument, 0, O_TP},
    {"zero", no_argument, 0, O_ZERO}, {"threads", required_argument, 0, O_THREADS},
    {"bucket-mb", required_argument, 0, O_BUCKET_MB}, {"time-budget", required_argument, 0, O_TIME_BUDGET},
    {"margin", required_argument, 0, O_MARGIN}, {"checkpoint-every", required_argument, 0, O_CHECKPOINT_EVERY},
    {"log-every", required_argument, 0, O_LOG_EVERY}, {"metrics", required_argument, 0, O_METRICS},
    {"peak-gflops", required_argument, 0, O_PEAK}, {"valid-batches", required_argument, 0, O_VALID_BATCHES},
    {"json", no_argument, 0, O_JSON}, {"init-from", required_argument, 0, O_INIT_FROM},
    {"update", required_argument, 0, O_UPDATE}, {"update-block", required_argument, 0, O_UPDATE_BLOCK},
    {"residual-dir", required_argument, 0, O_RESIDUAL_DIR}, {"state-dir", required_argument, 0, O_STATE_DIR},
    {"inner-state", required_argument, 0, O_INNER_STATE}, {"lr-schedule", required_argument, 0, O_LR_SCHEDULE},
    {"rounds", required_argument, 0, O_ROUNDS}, {"round-warmup", required_argument, 0, O_ROUND_WARMUP},
    {"data-epoch", required_argument, 0, O_DATA_EPOCH}, {"prox", required_argument, 0, O_PROX},
    {"device", required_argument, 0, O_DEVICE}, {"precision", required_argument, 0, O_PRECISION}, {0, 0, 0, 0}};

int flas_train_parse_update(const char *v, flas_update_enc *e, const char *source, char *err, size_t errlen)
{
    if (flas_update_enc_parse(v, e))
        return flas_fail(err, errlen, "%s: '%.80s' is not an update encoding (full, bf16, int8)", source, v);
    return 0;
}

int flas_train_parse_update_block(const char *v, int *block, const char *source, char *err, size_t errlen)
{
    char why[256] = "";
    long x = 0;
    /* flas_update_block_check has the last word (flas/update.h), should its rule ever be more than
     * the range. */
    if (parse_long(v, FLAS_UPDATE_BLOCK_MIN, FLAS_UPDATE_BLOCK_MAX, &x, source, err, errlen))
        return -1;
    if (flas_update_block_check((int)x, why, sizeof why))
        return flas_fail(err, errlen, "%s: %s", source, why);
    *block = (int)x;
    return 0;
}

int flas_train_parse_inner_state(const char *v, int *keep, const char *source, char *err, size_t errlen)
{
    if (!strcmp(v, "reset") || !strcmp(v, "keep"))
        return *keep = v[0] == 'k', 0;
    return flas_fail(err, errlen, "%s: '%.80s' is not an inner state policy (reset, keep)", source, v);
}

int flas_train_parse_lr_schedule(const char *v, int *run, const char *source, char *err, size_t errlen)
{
    if (!strcmp(v, "round") || !strcmp(v, "run"))
        return *run = !strcmp(v, "run"), 0;
    return flas_fail(err, errlen, "%s: '%.80s' is not a learning-rate schedule span (round, run)", source, v);
}

int flas_train_parse_rounds(const char *v, long *rounds, const char *source, char *err, size_t errlen)
{
    return parse_long(v, 1, FLAS_ROUND_MAX + 1, rounds, source, err, errlen);
}

int flas_train_parse_prox(const char *v, float *mu, const char *source, char *err, size_t errlen)
{
    return parse_float(v, 0, 1e6, mu, source, err, errlen);
}

/* One flag; flag is its name for messages. */
static int apply(flas_train_opts *o, int c, const char *v, const char *flag, char *err, size_t errlen)
{
    flas_config *m = &o->cfg;
    long x = 0;
    switch (c) {
    case 'h': o->mode = FLAS_TRAIN_HELP; return 0;
    case O_VERSION: o->mode = FLAS_TRAIN_VERSION; return 0;
    case O_INIT: o->mode = FLAS_TRAIN_INIT; return 0;
    case O_INIT_FROM: o->mode = FLAS_TRAIN_INIT; return copy(o->init_from, sizeof o->init_from, v, flag, err, errlen);
    case O_EVAL: o->mode = FLAS_TRAIN_EVAL; return copy(o->eval, sizeof o->eval, v, flag, err, errlen);
    case O_FEDERATION: o->given |= FLAS_GIVEN_FEDERATION; return copy(o->federation, sizeof o->federation, v, flag, err, errlen);
    case O_SITE: o->given |= FLAS_GIVEN_SITE; return copy(o->site, sizeof o->site, v, flag, err, errlen);
    case O_ROUND: o->given |= FLAS_GIVEN_ROUND; return parse_long(v, 0, 999999, &o->round, flag, err, errlen);
    case O_GLOBAL: o->given |= FLAS_GIVEN_GLOBAL; return copy(o->global, sizeof o->global, v, flag, err, errlen);
    case O_GLOBAL_SHA:
        o->given |= FLAS_GIVEN_GLOBAL_SHA;
        if (!flas_sha256_is_hex(v))
            return flas_fail(err, errlen, "%s: '%s' is not 64 lowercase hex digits", flag, v);
        return copy(o->global_sha256, sizeof o->global_sha256, v, flag, err, errlen);
    case O_OUTPUT: o->given |= FLAS_GIVEN_OUTPUT; return copy(o->output, sizeof o->output, v, flag, err, errlen);
    case O_OUTPUT_DIR: o->given |= FLAS_GIVEN_OUTPUT_DIR; return copy(o->output_dir, sizeof o->output_dir, v, flag, err, errlen);
    case O_JOB_ID: o->given |= FLAS_GIVEN_JOB_ID; return copy(o->job_id, sizeof o->job_id, v, flag, err, errlen);
    case O_RESUME: return copy(o->resume, sizeof o->resume, v, flag, err, errlen);
    case O_DATA: return copy(o->data, sizeof o->data, v, flag, err, errlen);
    case O_VALID: return copy(o->valid, sizeof o->valid, v, flag, err, errlen);
    case O_METRICS: return copy(o->metrics, sizeof o->metrics, v, flag, err, errlen);
    case O_SEED:
        if (parse_long(v, 0, 0x7fffffffffffffffL, &x, flag, err, errlen))
            return -1;
        o->seed = (uint64_t)x;
        return 0;
    case O_NO_SHUFFLE: o->shuffle = 0; return 0;
    case O_MODEL:
        if (flas_config_preset(v, m)) {
            char names[256] = "";
            for (const char *const *p = flas_config_preset_names(); *p; p++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", names[0] ? ", " : "", *p);
            return flas_fail(err, errlen, "%s: unknown preset '%s' (known: %s)", flag, v, names);
        }
        o->cfg_given |= FLAS_CFG_PRESET;
        return copy(o->preset, sizeof o->preset, v, flag, err, errlen);
    case O_DIM: o->cfg_given |= FLAS_CFG_DIM; return parse_int(v, 1, 1 << 20, &m->dim, flag, err, errlen);
    case O_LAYERS: o->cfg_given |= FLAS_CFG_LAYERS; return parse_int(v, 1, 1024, &m->n_layers, flag, err, errlen);
    case O_HEADS: o->cfg_given |= FLAS_CFG_HEADS; return parse_int(v, 1, 1 << 16, &m->n_heads, flag, err, errlen);
    case O_KV_HEADS: o->cfg_given |= FLAS_CFG_KV_HEADS; return parse_int(v, 1, 1 << 16, &m->n_kv_heads, flag, err, errlen);
    case O_HIDDEN: o->cfg_given |= FLAS_CFG_HIDDEN; return parse_int(v, 1, 1 << 22, &m->hidden_dim, flag, err, errlen);
    case O_VOCAB: o->cfg_given |= FLAS_CFG_VOCAB; return parse_int(v, 2, 1 << 24, &m->vocab_size, flag, err, errlen);
    case O_SEQ_LEN: o->cfg_given |= FLAS_CFG_SEQ_LEN; return parse_int(v, 1, 1 << 20, &m->seq_len, flag, err, errlen);
    case O_NORM_EPS: o->cfg_given |= FLAS_CFG_NORM_EPS; return parse_float(v, 1e-12, 0.5, &m->norm_eps, flag, err, errlen);
    case O_ROPE_THETA: o->cfg_given |= FLAS_CFG_ROPE_THETA; return parse_float(v, 1, 1e9, &m->rope_theta, flag, err, errlen);
    case O_TIED: o->cfg_given |= FLAS_CFG_TIED; m->tied_embeddings = 1; return 0;
    case O_UNTIED: o->cfg_given |= FLAS_CFG_TIED; m->tied_embeddings = 0; return 0;
    case O_MULTIPLE_OF: return parse_int(v, 1, 1 << 16, &o->multiple_of, flag, err, errlen);
    case O_STEPS: o->given |= FLAS_GIVEN_STEPS; return parse_long(v, 1, 1L << 40, &o->steps, flag, err, errlen);
    case O_TOKENS: return parse_count(v, &o->tokens, flag, err, errlen);
    case O_BATCH: return parse_int(v, 1, 1 << 20, &o->batch, flag, err, errlen);
    case O_SEQ: return parse_int(v, 1, 1 << 20, &o->seq, flag, err, errlen);
    case O_ACCUM: return parse_int(v, 1, 1 << 20, &o->accum, flag, err, errlen);
    case O_LR: return parse_float(v, 0, 10, &o->lr, flag, err, errlen);
    case O_MIN_LR: return parse_float(v, 0, 10, &o->min_lr, flag, err, errlen);
    case O_WARMUP: return parse_long(v, 0, 1L << 40, &o->warmup, flag, err, errlen);
    case O_DECAY_STEPS: return parse_long(v, 1, 1L << 40, &o->decay_steps, flag, err, errlen);
    case O_SCHEDULE_OFFSET: return parse_long(v, 0, 1L << 40, &o->schedule_offset, flag, err, errlen);
    case O_WEIGHT_DECAY: return parse_float(v, 0, 10, &o->weight_decay, flag, err, errlen);
    case O_CLIP: return parse_float(v, 0, 1e9, &o->clip, flag, err, errlen);
    case O_BETA1: return parse_float(v, 0, 0.999999, &o->beta1, flag, err, errlen);
    case O_BETA2: return parse_float(v, 0, 0.999999999, &o->beta2, flag, err, errlen);
    case O_ADAM_EPS: return parse_float(v, 1e-30, 1, &o->eps, flag, err, errlen);
    case O_TP: return parse_int(v, 1, 4096, &o->tp, flag, err, errlen);
    case O_ZERO: o->zero = 1; return 0;
    case O_THREADS: return parse_int(v, 1, 4096, &o->threads, flag, err, errlen);
    case O_BUCKET_MB: return parse_double(v, 0.001, 65536, &o->bucket_mb, flag, err, errlen);
    case O_TIME_BUDGET: return parse_double(v, 0.001, 1e9, &o->time_budget, flag, err, errlen);
    case O_MARGIN: return parse_double(v, 0, 1e6, &o->margin, flag, err, errlen);
    case O_CHECKPOINT_EVERY: return parse_long(v, 1, 1L << 40, &o->checkpoint_every, flag, err, errlen);
    case O_LOG_EVERY: return parse_long(v, 1, 1L << 40, &o->log_every, flag, err, errlen);
    case O_PEAK: return parse_double(v, 0.001, 1e9, &o->peak_gflops, flag, err, errlen);
    case O_VALID_BATCHES: return parse_long(v, 1, 1L << 40, &o->valid_batches, flag, err, errlen);
    case O_JSON: o->json = 1; return 0;
    case O_UPDATE: o->given |= FLAS_GIVEN_UPDATE; return flas_train_parse_update(v, &o->update, flag, err, errlen);
    case O_UPDATE_BLOCK:
        o->given |= FLAS_GIVEN_UPDATE_BLOCK;
        return flas_train_parse_update_block(v, &o->update_block, flag, err, errlen);
    case O_RESIDUAL_DIR:
    case O_STATE_DIR:
        o->given |= FLAS_GIVEN_STATE_DIR;
        snprintf(o->state_dir_from, sizeof o->state_dir_from, "%s", flag);
        return copy(o->state_dir, sizeof o->state_dir, v, flag, err, errlen);
    case O_INNER_STATE: o->given |= FLAS_GIVEN_INNER_STATE; return flas_train_parse_inner_state(v, &o->inner_keep, flag, err, errlen);
    case O_LR_SCHEDULE: o->given |= FLAS_GIVEN_LR_SCHEDULE; return flas_train_parse_lr_schedule(v, &o->lr_run, flag, err, errlen);
    case O_ROUNDS: o->given |= FLAS_GIVEN_ROUNDS; return flas_train_parse_rounds(v, &o->rounds, flag, err, errlen);
    case O_ROUND_WARMUP: return parse_long(v, 0, 1L << 40, &o->round_warmup, flag, err, errlen);
    case O_DATA_EPOCH: return parse_long(v, 0, 1L << 40, &o->data_epoch, flag, err, errlen);
    case O_PROX: o->given |= FLAS_GIVEN_PROX; return flas_train_parse_prox(v, &o->prox, flag, err, errlen);
    case O_DEVICE:
        if (!strcmp(v, "auto") || !strcmp(v, "cpu") || !strcmp(v, "cuda")) {
            o->device = !strcmp(v, "cpu") ? FLAS_DEVICE_CPU : !strcmp(v, "cuda") ? FLAS_DEVICE_CUDA : FLAS_DEVICE_AUTO;
            return 0;
        }
        return flas_fail(err, errlen, "%s: '%s' is not cpu, cuda or auto", flag, v);
    case O_PRECISION:
        if (flas_precision_parse(v, &o->precision))
            return flas_fail(err, errlen, "%s: '%s' is not fp32 or bf16", flag, v);
        return 0;
    default: return flas_fail(err, errlen, "internal: unhandled option %d", c);
    }
}

int flas_train_parse_args(flas_train_opts *o, int argc, char **argv, char *err, size_t errlen)
{
    optind = 0; /* full reset: tests parse several argument vectors in one process */
    opterr = 0;
    for (;;) {
        int index = -1, prev = optind ? optind : 1;
        int c = getopt_long(argc, argv, "h", long_opts, &index);
        if (c == -1)
            break;
        if (c == '?' || c == ':')
            return flas_fail(err, errlen, "unknown option or missing value: '%s' (see --help)",
                        prev < argc ? argv[prev] : "?");
        char flag[48] = "-h";
        if (index >= 0)
            snprintf(flag, sizeof flag, "--%s", long_opts[index].name);
        if (apply(o, c, optarg, flag, err, errlen))
            return -1;
    }
    if (optind < argc)
        return flas_fail(err, errlen, "unexpected argument '%s' (all inputs are given by flags; see --help)", argv[optind]);
    return 0;
}

void flas_train_opts_overlay(const flas_train_opts *o, const flas_config *base, flas_config *out)
{
    flas_config c = *base;
    if (o->cfg_given & FLAS_CFG_PRESET)
        flas_config_preset(o->preset, &c);
    const flas_config *g = &o->cfg;
    unsigned k = o->cfg_given;
    if (k & FLAS_CFG_DIM) c.dim = g->dim;
    if (k & FLAS_CFG_LAYERS) c.n_layers = g->n_layers;
    if (k & FLAS_CFG_HEADS) c.n_heads = g->n_heads;
    if (k & FLAS_CFG_KV_HEADS) c.n_kv_heads = g->n_kv_heads;
    else if ((k & FLAS_CFG_HEADS) && !(k & FLAS_CFG_PRESET)) c.n_kv_heads = c.n_heads;
    if (k & FLAS_CFG_HIDDEN) c.hidden_dim = g->hidden_dim;
    else if (k & FLAS_CFG_DIM) c.hidden_dim = flas_hidden_dim(c.dim, o->multiple_of, 0);
    if (k & FLAS_CFG_VOCAB) c.vocab_size = g->vocab_size;
    if (k & FLAS_CFG_SEQ_LEN) c.seq_len = g->seq_len;
    if (k & FLAS_CFG_NORM_EPS) c.norm_eps = g->norm_eps;
    if (k & FLAS_CFG_ROPE_THETA) c.rope_theta = g->rope_theta;
    if (k & FLAS_CFG_TIED) c.tied_embeddings = g->tied_embeddings;
    *out = c;
}

int flas_train_opts_config(const flas_train_opts *o, flas_config *c, char *err, size_t errlen)
{
    /* Without a preset: LLaMA-2's defaults for what the flags leave out. */
    const flas_config llama = {0, 0, 0, 0, 0, 0, 0, 1e-5f, 10000.0f, 0};
    flas_config want;
    flas_train_opts_overlay(o, &llama, &want);
    char why[256];
    if (flas_config_validate(&want, o->tp, why, sizeof why))
        return flas_fail(err, errlen, "model: %s%s", why,
                    (o->cfg_given & FLAS_CFG_PRESET) ? "" : " (give --model PRESET or --dim, --layers, --heads, --vocab, --seq-len)");
    *c = want;
    return 0;
}

int flas_train_opts_check(flas_train_opts *o, char *err, size_t errlen)
{
    if (o->mode == FLAS_TRAIN_HELP || o->mode == FLAS_TRAIN_VERSION)
        return 0;
    /* The CUDA kernels (runtime/cuda) exist, but no training step runs on them yet: auto means cpu. */
    if (o->device == FLAS_DEVICE_CUDA)
        return flas_fail(err, errlen, "--device cuda: this flas-train has no CUDA training step yet (only its "
                         "kernels are built, checked by 'ctest -L gpu' on a GPU machine); use --device cpu");
    o->device = FLAS_DEVICE_CPU;
    char no_bf16[256];
    if (o->precision == FLAS_PRECISION_BF16 && !flas_bf16_supported(no_bf16, sizeof no_bf16))
        return flas_fail(err, errlen, "--precision bf16 on the CPU: %s; use --precision fp32", no_bf16);
    if (o->min_lr < 0)
        o->min_lr = o->lr * 0.1f;
    if (o->min_lr > o->lr)
        return flas_fail(err, errlen, "--min-lr %g is above --lr %g", (double)o->min_lr, (double)o->lr);
    char upd[64]; /* where the encoding came from, for messages */
    snprintf(upd, sizeof upd, (o->given & FLAS_GIVEN_UPDATE) ? "--update %s" : "FLAS_UPDATE=%s",
             flas_update_enc_name(o->update));
    if (o->mode == FLAS_TRAIN_INIT) {
        flas_config c;
        if (o->update != FLAS_UPDATE_FULL)
            return flas_fail(err, errlen, "%s: %s writes a global model, and an update needs a base model to be the "
                             "delta from; drop %s", upd, o->init_from[0] ? "--init-from" : "--init",
                             (o->given & FLAS_GIVEN_UPDATE) ? "--update" : "FLAS_UPDATE from the environment");
        if (!o->output[0])
            return flas_fail(err, errlen, "--init needs --output FILE (the global model to write)");
        if (o->init_from[0]) {
            /* The shape is the imported model's; only a context length may be added (llama2.c files
             * record one, GGUF and hf do too, but a user may train shorter or longer). */
            if (o->cfg_given & ~(unsigned)FLAS_CFG_SEQ_LEN)
                return flas_fail(err, errlen, "--init-from takes the model shape from %s: drop --model, --dim and the "
                                 "other shape flags (--seq-len may stay)", o->init_from);
            return 0;
        }
        if (!o->cfg_given)
            return flas_fail(err, errlen, "--init needs a model shape: --model PRESET or --dim, --layers, --heads, --vocab, --seq-len");
        return flas_train_opts_config(o, &c, err, errlen);
    }
    if (o->mode == FLAS_TRAIN_EVAL) {
        if (!o->valid[0])
            return flas_fail(err, errlen, "--eval needs --valid DIR (token shards to measure the loss on)");
        return 0;
    }
    if (!o->data[0])
        return flas_fail(err, errlen, "no training data: give --data DIR (the site's *.flastok token shards)");
    if (!o->output[0])
        return flas_fail(err, errlen, "no output checkpoint: set FLAS_OUTPUT_CHECKPOINT (a --federation job) or give --output FILE");
    if (!o->global[0] && !o->resume[0])
        return flas_fail(err, errlen, "no model to start from: set FLAS_GLOBAL_CHECKPOINT (a --federation job), or give --global FILE or --resume FILE");
    if (!o->steps && !o->tokens)
        return flas_fail(err, errlen, "say how much to train this round: --steps N and/or --tokens N");
    snprintf(o->checkpoint, sizeof o->checkpoint, "%s", o->output);
    const char *rounds_src = (o->given & FLAS_GIVEN_ROUNDS) ? "--rounds" : "FLAS_ROUNDS";
    if (o->lr_run && !o->rounds)
        return flas_fail(err, errlen, "--lr-schedule run spreads one schedule over the whole run: give --rounds N "
                         "(or FLAS_ROUNDS)");
    if (o->lr_run && o->round < 0)
        return flas_fail(err, errlen, "--lr-schedule run needs --round N (or FLAS_ROUND): where in the run this round is");
    if (o->rounds && o->round >= o->rounds)
        return flas_fail(err, errlen, "round %ld is not below %s %ld", o->round, rounds_src, o->rounds);
    if (o->prox > 0 && !o->global[0])
        return flas_fail(err, errlen, "--prox pulls toward the round's global model: give --global FILE or set "
                         "FLAS_GLOBAL_CHECKPOINT");
    if (o->update == FLAS_UPDATE_FULL && !o->inner_keep)
        return 0;
    /* The delta is taken against the model the round started from; a --resume alone does not say
     * which file that is (its base_sha256 names it but cannot find it). */
    if (o->update != FLAS_UPDATE_FULL && !o->global[0])
        return flas_fail(err, errlen, "%s publishes the delta against the round's global model: give --global FILE "
                         "or set FLAS_GLOBAL_CHECKPOINT (a --resume alone names no base)", upd);
    const char *why = o->inner_keep ? "--inner-state keep" : upd;
    const char *rsrc = o->state_dir_from[0] ? o->state_dir_from : "the default state directory";
    if (!o->state_dir[0])
        return flas_fail(err, errlen, "%s needs --state-dir DIR (or FLAS_STATE_DIR; older names --residual-dir, "
                         "FLAS_RESIDUAL_DIR): the site's own directory for the state carried from round to round", why);
    /* kv.c's path rule: one spelling per directory, so that two jobs naming it differently cannot keep
     * two histories, and nothing odd reaches a log or a command line. */
    if (!flas_kv_path_valid(o->state_dir))
        return flas_fail(err, errlen, "%s '%.400s': must be an absolute path without '.', '..', '//' or a trailing '/'",
                         rsrc, o->state_dir);
    if (o->inner_keep) {
        /* The full checkpoint, moments included, IS the kept state: it lives in the state directory and
         * never in the job's directory, which the epilog publishes from. */
        char name[64];
        if (o->round < 0)
            return flas_fail(err, errlen, "--inner-state keep needs --round N (or FLAS_ROUND): the kept state is "
                             "filed by round");
        if (flas_stage_inner_name(name, sizeof name, o->round) ||
            snprintf(o->checkpoint, sizeof o->checkpoint, "%s/%s", o->state_dir, name) >= (int)sizeof o->checkpoint)
            return flas_fail(err, errlen, "%s '%.400s': too long", rsrc, o->state_dir);
        return 0;
    }
    if (flas_stage_full_sibling(o->checkpoint, sizeof o->checkpoint, o->output))
        return flas_fail(err, errlen, "--output %.400s: too long to name the full checkpoint beside it", o->output);
    return 0;
}

#define STR_(x) #x
#define STR(x) STR_(x) /* the value of a numeric macro as a string literal */

void flas_train_usage(FILE *f)
{
    fputs("usage: flas-train [options]                         train one round (MPI: srun/mpirun)\n"
          "       flas-train --init --model PRESET|--dim .. --output FILE    write a round-0 global model\n"
          "       flas-train --init-from MODEL --output FILE   round-0 global from published weights (hf dir,\n"
          "                                                    GGUF, llama2.c .bin; see flas-convert)\n"
          "       flas-train --eval CKPT --valid DIR [--json]             validation loss of a checkpoint\n"
          "\n"
          "Round (default: the FLAS_* variables of a --federation=NAME Slurm job; flags win):\n"
          "  --global FILE          global checkpoint to start from (FLAS_GLOBAL_CHECKPOINT)\n"
          "  --global-sha256 HEX    refuse the global unless its sha256 is HEX (FLAS_GLOBAL_SHA256)\n"
          "  --output FILE          local checkpoint to write (FLAS_OUTPUT_CHECKPOINT)\n"
          "  --output-dir DIR       where metrics.jsonl goes by default (FLAS_OUTPUT_DIR)\n"
          "  --round N --site NAME --federation NAME --job-id ID   (FLAS_ROUND, FLAS_SITE, ...)\n"
          "  --resume FILE|auto     continue a local checkpoint of this round (auto: the output, if present;\n"
          "                         with --update bf16/int8 its -full sibling)\n"
          "Published update (the site's choice; FLAS_UPDATE, FLAS_UPDATE_BLOCK, FLAS_RESIDUAL_DIR):\n"
          "  --update full|bf16|int8  full (default): --output is the local checkpoint; bf16/int8: --output is\n"
          "                         the delta against --global, compressed, with error feedback; the full\n"
          "                         checkpoint goes to its -full sibling (local.h5 -> local-full.h5)\n"
          "  --update-block N (" STR(FLAS_UPDATE_BLOCK_DEFAULT) ")  int8: values per float32 scale, "
          STR(FLAS_UPDATE_BLOCK_MIN) ".." STR(FLAS_UPDATE_BLOCK_MAX) "\n"
          "  --state-dir DIR        the site's private state between rounds: error feedback (bf16/int8) and\n"
          "                         the kept inner state (absolute path; FLAS_STATE_DIR; default in a\n"
          "                         federation job: ~/.local/state/flas/FED/SITE; also --residual-dir)\n"
          "Across rounds (the coordinator's InnerState=, LrSchedule=, Prox=; docs/tuning.md):\n"
          "  --inner-state reset|keep  reset (default): AdamW starts fresh each round; keep: its moments, step\n"
          "                         count and the data position continue from the site's previous round\n"
          "                         (kept in --state-dir, never published) (FLAS_INNER_STATE)\n"
          "  --lr-schedule round|run  round (default): --warmup/cosine over this round's steps; run: one\n"
          "                         warmup + cosine over --rounds N rounds of this round's length\n"
          "                         (FLAS_LR_SCHEDULE, FLAS_ROUNDS)\n"
          "  --round-warmup N (0)   ramp the lr up over each round's first N steps\n"
          "  --prox MU (0)          FedProx: add MU (x - x_global) to the gradient (FLAS_PROX)\n"
          "  --data-epoch N         data order a new round starts at (default: the round number, a fresh\n"
          "                         permutation each round)\n"
          "Data:\n"
          "  --data DIR|FILE        training token shards (*.flastok)   --valid DIR|FILE   validation shards\n"
          "  --seed S (1234)        data order (and weights with --init)   --no-shuffle\n"
          "How much (the first reached stops the round):\n"
          "  --steps N              optimizer steps this round     --tokens N   tokens this round (k/M/G)\n"
          "Batch and optimizer:\n"
          "  --batch B (4) --seq T (model's) --accum K (1): each step = B x T x K x dp tokens\n"
          "  --lr (3e-4) --min-lr (lr/10) --warmup N (5% of steps) --decay-steps N (steps)\n"
          "  --schedule-offset N (0) --weight-decay (0.1) --clip (1.0) --beta1 (0.9) --beta2 (0.95) --adam-eps (1e-8)\n"
          "Parallelism:\n"
          "  --tp N (1)             tensor-parallel ranks per model replica (consecutive ranks, one node)\n"
          "  --zero                 ZeRO-1: AdamW moments sharded over the data-parallel ranks\n"
          "  --threads N            OpenMP threads per rank (processors / ranks on the node)\n"
          "  --bucket-mb X (25)     gradient allreduce bucket\n"
          "Device and arithmetic (checkpoints are fp32 master weights and AdamW moments either way):\n"
          "  --device auto|cpu|cuda (auto)  auto: cuda where a GPU and the CUDA step are available, else cpu\n"
          "  --precision fp32|bf16 (fp32)   bf16: mixed precision, bf16 matrix products accumulated in fp32\n"
          "                         (on the CPU through oneDNN: needs AVX512-BF16 or AMX)\n"
          "Walltime and checkpoints:\n"
          "  --time-budget S        stop after S seconds (also: Slurm's job end, SLURM_JOB_END_TIME)\n"
          "  --margin S             seconds kept free before the end (auto)\n"
          "  --checkpoint-every N   periodic checkpoints (atomic replace of --output)\n"
          "  SIGUSR1/SIGTERM: finish the step, write the checkpoint, exit 0\n"
          "Model (--init; when training, must match the checkpoint):\n"
          "  --model PRESET --dim --layers --heads --kv-heads --hidden --vocab --seq-len --norm-eps\n"
          "  --rope-theta --tied|--untied --multiple-of (32)\n"
          "Reporting:\n"
          "  --log-every N (10) --metrics FILE (FLAS_OUTPUT_DIR/metrics.jsonl) --peak-gflops X (measured)\n"
          "  --valid-batches N (all) --json --help --version\n",
          f);
}
