/* flas-aggregate as a library (`flas_agg`): merge the local checkpoints of one round into the next
 * global checkpoint, tensor by tensor and chunk by chunk, so memory depends on the chunk size and the
 * number of inputs, never on the model size. docs/aggregation.md gives the maths of each strategy. */
#ifndef FLAS_AGGREGATE_H
#define FLAS_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

#include "flas/update.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum flas_agg_strategy {
    FLAS_AGG_FEDAVG = 0, /* x' = sum_k p_k x_k, p_k proportional to tokens trained (default) */
    FLAS_AGG_MEAN,       /* x' = (1/K) sum_k x_k (the seed experiment's unweighted mean) */
    FLAS_AGG_FEDAVGM,    /* server momentum on g = x - avg: m = mu m + g; x' = x - lr m */
    FLAS_AGG_FEDADAM,    /* Reddi et al.: adaptive server step with moments m, v */
    FLAS_AGG_FEDYOGI,    /* Reddi et al.: Yogi's additive second moment */
    FLAS_AGG_DILOCO,     /* DiLoCo outer Nesterov: m = mu m + g; x' = x - lr (g + mu m) */
    FLAS_AGG_N_STRATEGIES
} flas_agg_strategy;

typedef enum flas_agg_policy {
    FLAS_AGG_REFUSE_ROUND = 0, /* any bad input refuses the whole round (default) */
    FLAS_AGG_DROP_BAD = 1      /* drop bad inputs, go on if at least min_sites remain */
} flas_agg_policy;

typedef struct flas_agg_options {
    flas_agg_strategy strategy;
    double lr, momentum, beta1, beta2, tau; /* server hyper-parameters (flas_agg_defaults fills them) */
    int uniform;                /* 1: p_k = 1/K instead of tokens (implied by FLAS_AGG_MEAN) */
    flas_agg_policy policy;
    int min_sites;              /* fewer usable inputs than this refuses the round (default 1) */
    int64_t max_tokens;         /* plausibility bound on an input's tokens_trained (default 1e13) */
    int reset_server_state;     /* 1: start fresh buffers even if the previous global has another strategy's */
    size_t chunk_elems;         /* elements per streamed chunk per input (default 1 Mi = 4 MiB) */
    int threads;                /* OpenMP threads of the merge kernel (default 1: one core reaches ~0.9x of
                                   STREAM triad; more help on idle many-core nodes, and need
                                   OMP_WAIT_POLICY=passive on shared ones). Files are hashed in parallel
                                   regardless. 0: the OpenMP default */
    int progress;               /* progress lines on stderr */
    /* Robust merging (docs/aggregation.md): an input whose update norm ||x_k - x_prev||_2 over all
     * parameters exceeds max_update_norm (0: no bound), or exceeds max_update_ratio times the lower
     * median of the inputs' update norms (0: no bound), is refused like any bad input (the policy then
     * drops it or refuses the round). */
    double max_update_norm;
    double max_update_ratio;
    /* NULL, or n_inputs entries: the site each input was fetched from (NULL or "" entries: unknown). A
     * site's identity is where its file came from, never what the file says about itself: an input
     * whose `site` attribute differs is refused, and the duplicate check uses these names. */
    const char *const *input_sites;
    /* Compressed exchange (flas/update.h). Inputs may be update files (a site's delta against the
     * model it trained from): they are decoded chunk by chunk onto the previous global's weights,
     * for every strategy, in the same memory. */
    const char *base_sha256; /* NULL: sha256(previous). The model the sites trained from when it is a
                                copy of the previous global's weights (the coordinator's params-only
                                staged model, flas_update_apply_file), not that file itself */
    const char *emit_update; /* NULL, or where to ALSO write the new global as an update against
                                base_sha256 (the compressed downlink). The new global's weights are
                                then previous + decode(that update), bit for bit what
                                flas_update_apply_file makes of it at a site */
    flas_update_enc emit_enc;
    int emit_block;          /* int8 block (0: FLAS_UPDATE_BLOCK_DEFAULT) */
    /* DP-FedAvg (flas/dp.h, docs/aggregation.md). dp_clip > 0 turns it on: every merged site's update
     * x_k - x_prev is scaled to L2 norm at most dp_clip (+inf: never), the clipped models are averaged
     * with equal weights (it needs `uniform`: a site's claimed tokens must not set its influence), and
     * Gaussian noise of stddev dp_noise * dp_clip / n is added to the mean before the server step.
     * The norms take one extra read of every input before the merge. */
    double dp_clip;          /* C; 0: off */
    double dp_noise;         /* sigma, the noise multiplier (0: no noise, and no privacy) */
    double dp_delta;         /* delta of the epsilon reported (default 1e-6 when 0) */
    const unsigned char *dp_seed; /* FLAS_DP_SEED_BYTES, or NULL: a fresh seed from the kernel's CSPRNG
                                     (never stored). Tests only: a fixed seed makes the noise public */
} flas_agg_options;

/* Result codes of flas_aggregate (also flas-aggregate's exit status). */
enum {
    FLAS_AGG_OK = 0,
    FLAS_AGG_REFUSED = 1, /* bad inputs (policy) or too few sites: no output written */
    FLAS_AGG_USAGE = 2,   /* bad options or an unusable previous global / output path */
    FLAS_AGG_FAILED = 3   /* I/O or numerical failure while merging: no output written */
};

/* What happened to each input (filled for every input, merged or not). */
typedef struct flas_agg_input_report {
    char sha256[65];
    char site[64];
    int64_t round, tokens;
    double weight;        /* p_k used, 0 when dropped */
    int used;
    char reason[512];     /* why it was refused/dropped, "" when merged */
    double update_norm;   /* ||x_k - x_prev||_2 when it was measured (a norm bound or DP is set), else -1 */
    double clip_factor;   /* DP: what its update was scaled by (1: under the clip, untouched) */
} flas_agg_input_report;

typedef struct flas_agg_report {
    int n_inputs, n_used;
    flas_agg_input_report *inputs; /* n_inputs entries, allocated by flas_aggregate; free with flas_agg_report_free */
    char previous_sha256[65];
    int64_t new_round;
    double seconds_total;                /* the whole call */
    double seconds_hash;                 /* until every file was hashed (the inputs' hashing overlaps the merge) */
    double seconds_merge;                /* streaming merge passes + commit */
    uint64_t bytes_read, bytes_written; /* tensor bytes moved by the merge */
    int passes;                          /* merge passes (a drop-bad restart adds one) */
    /* DP-FedAvg (0 when off) */
    double seconds_dp_norms;             /* the extra pass that measures the updates' norms */
    double dp_noise_stddev;              /* sigma * C / n added to each coordinate of the mean */
    double dp_rho;                       /* the ledger after this round: sum of 1/(2 sigma^2) */
    int64_t dp_rounds;                   /* rounds merged with DP so far, this one included */
    double dp_epsilon;                   /* epsilon spent so far at dp_delta (+inf with sigma 0) */
    double dp_delta;
} flas_agg_report;

/* Defaults for a strategy: fedavgm lr 1 momentum 0.9; diloco lr 0.7 momentum 0.9; fedadam/fedyogi
 * lr 0.01 beta1 0.9 beta2 0.99 tau 1e-3; policy refuse-round, min_sites 1, chunk 1 Mi elements,
 * 1 thread. */
void flas_agg_defaults(flas_agg_options *o, flas_agg_strategy s);
int flas_agg_strategy_parse(const char *name, flas_agg_strategy *s); /* 0, or -1 for an unknown name */
const char *flas_agg_strategy_name(flas_agg_strategy s);
int flas_agg_strategy_has_m(flas_agg_strategy s); /* keeps a server first moment / momentum */
int flas_agg_strategy_has_v(flas_agg_strategy s); /* keeps a server second moment */

/* Reads `previous` (a global checkpoint) and the local checkpoints `inputs`, validates them, merges and
 * writes `output` atomically (never over `previous` or an input). Returns a FLAS_AGG_* code; on
 * failure err holds one line and nothing exists at `output` that was not there before. report may be
 * NULL. */
int flas_aggregate(const char *previous, const char *const *inputs, int n_inputs, const char *output,
                   const flas_agg_options *o, flas_agg_report *report, char *err, size_t errlen);
void flas_agg_report_free(flas_agg_report *r);

/* ---- the in-memory merge kernel (exposed for tests and the benchmark) ---------------------------- */

typedef struct flas_agg_kernel {
    flas_agg_strategy strategy;
    int k;                 /* inputs */
    const double *p;       /* k weights, summing to 1 */
    double lr, momentum, beta1, beta2, tau;
    const float *noise;    /* NULL, or n values added to the weighted mean before the server step (DP) */
} flas_agg_kernel;

/* Over n elements: inputs in[0..k-1], previous global x (unused by fedavg/mean, may be NULL), server
 * buffers m and v (updated in place; NULL when the strategy keeps none), result in out. Returns the
 * number of inputs with a non-finite value (NaN or Inf) and marks them in bad[k] (if not NULL); the
 * result is then meaningless. Sets *out_bad when the RESULT has a non-finite value. Multi-threaded
 * with OpenMP over blocks. */
int flas_agg_combine(const flas_agg_kernel *kp, size_t n, const float *const *in, const float *x, float *m,
                     float *v, float *out, unsigned char *bad, int *out_bad);

#ifdef __cplusplus
}
#endif
#endif
