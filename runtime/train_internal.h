/* Internals of flas-train shared by runtime/train_*.c (not installed). */
#ifndef FLAS_TRAIN_INTERNAL_H
#define FLAS_TRAIN_INTERNAL_H

#include <stdio.h>

#include "flas/checkpoint.h"
#include "flas/llama.h"
#include "flas/loader.h"
#include "flas/optim.h"
#include "flas/train.h"

#define TRAIN_ERR_MAX 1024
#define TRAIN_LOSS_WINDOW 10 /* steps averaged into the checkpoint's train_loss */

/* rank 0's progress output: the console line and the JSON-lines metrics file. */
typedef struct train_log {
    int rank0;
    FILE *metrics;        /* NULL: no metrics file */
    double last_time;     /* at the last progress line */
    long last_step;
} train_log;

/* One rank's trainer: the model replica shard, its optimizer slice, data, and the round's progress. */
typedef struct trainer {
    const flas_train_opts *o;
    flas_train_comm *c;
    flas_config cfg;
    int B, T, accum;
    flas_model model;
    size_t opt_lo, opt_hi;        /* the part of the buffer AdamW updates here: ZeRO-1 dp slice, else all */
    size_t io_lo, io_hi;          /* the dp slice this rank writes into checkpoints */
    flas_param_table opt_table;   /* model.table restricted to [opt_lo, opt_hi) */
    flas_adamw opt;
    flas_lr_schedule sched;
    long sched_offset;            /* schedule step of this round's first step */
    flas_loader *train, *valid;
    int32_t *tokens, *targets;    /* [B*T] */
    uint64_t *shard_end;          /* cumulative tokens of the training shards (for /train_state) */
    int n_shards;
    /* The round so far (restored on resume). */
    long step, steps_target;
    int64_t tokens_trained, samples;
    double train_seconds;
    float lr;
    double losses[TRAIN_LOSS_WINDOW];
    long n_losses;
    flas_ckpt_meta meta;          /* role local, round, site, base_sha256 */
    uint64_t rng_state[4];
    flas_train_clock clock;
    train_log log;
    double peak_gflops;           /* per rank */
    double valid_loss;            /* NaN until measured */
    int64_t valid_tokens;
    const char *stop_reason;
    int resume_cursor_valid;      /* resumed (or kept inner state): restore the loader to resume_cursor */
    int cursor_from_inner;        /* the cursor came from the previous round's inner state */
    long inner_from;              /* --inner-state keep: the round whose state was read (-1: none) */
    float *anchor;                /* --prox: the round's global weights (model.table layout) */
    uint64_t resume_cursor[FLAS_CKPT_CURSOR_WORDS];
} trainer;

/* train_args.c: the --update values, shared with the FLAS_UPDATE* variables (train_env.c). source names
 * the flag or variable in messages. 0, or -1 with err. */
int flas_train_parse_update(const char *v, flas_update_enc *e, const char *source, char *err, size_t errlen);
int flas_train_parse_update_block(const char *v, int *block, const char *source, char *err, size_t errlen);
/* The values of --inner-state, --lr-schedule, --rounds and --prox, shared with FLAS_INNER_STATE,
 * FLAS_LR_SCHEDULE, FLAS_ROUNDS and FLAS_PROX (train_env.c). */
int flas_train_parse_inner_state(const char *v, int *keep, const char *source, char *err, size_t errlen);
int flas_train_parse_lr_schedule(const char *v, int *run, const char *source, char *err, size_t errlen);
int flas_train_parse_rounds(const char *v, long *rounds, const char *source, char *err, size_t errlen);
int flas_train_parse_prox(const char *v, float *mu, const char *source, char *err, size_t errlen);

/* train_ckpt.c: checkpoint glue. */
/* The communicator for checkpoint I/O: one rank uses HDF5's serial driver (measured faster than MPI-IO
 * alone, docs/performance.md), more ranks the collective parallel path. */
static inline MPI_Comm train_ckpt_comm(const flas_train_comm *c) { return c->size > 1 ? c->world : MPI_COMM_NULL; }
/* rank 0 hashes path and compares with want (if not ""); the hex digest goes to sha on every rank. */
int train_verify_global(const flas_train_opts *o, flas_train_comm *c, char sha[FLAS_SHA256_HEX], char *err,
                        size_t errlen);
/* Sets up the trainer from the global model, or from the local checkpoint resume when not ""; collective. */
int train_load(trainer *t, const char *resume, const char *global_sha, char *err, size_t errlen);
/* --prox: t->anchor = the round's global weights (the loaded params, or o->global's when resumed). */
int train_load_anchor(trainer *t, int resumed, char *err, size_t errlen);
/* Writes the local checkpoint (atomic, collective); reason goes into /metrics. */
int train_write(trainer *t, const char *reason, char *err, size_t errlen);
int train_init_global(const flas_train_opts *o, flas_train_comm *c, char *err, size_t errlen);
void train_free(trainer *t);

/* train_statedir.c: the site's state directory and its per-round files. */
typedef struct train_state_kind {
    const char *what;                                 /* for messages */
    int (*name)(char *buf, size_t len, long round);   /* the file name of a round */
    long (*parse)(const char *name);                  /* its round, -1 for any other name */
} train_state_kind;
extern const train_state_kind train_state_residual, train_state_inner;
/* Before training: the state directory exists (the default one is created), is writable and is not the
 * job's own directory (rank 0 looks; all agree). 0 when neither --update bf16/int8 nor a kept inner
 * state needs it. */
int train_state_dir_ok(const flas_train_opts *o, flas_train_comm *c, char *err, size_t errlen);
/* The newest file of kind k of a round < round in dir: its round in *prev (-1: none); a file of such a
 * name that is not a regular file is refused. Rank 0. 0, or -1 with err. */
int train_state_find_previous(const char *dir, const train_state_kind *k, long round, long *prev, char *err,
                              size_t errlen);
/* Removes the regular files of kind k of rounds before keep_from (rank 0; never through a link). */
void train_state_prune(const char *dir, const train_state_kind *k, long keep_from, const flas_train_comm *c);

/* train_update.c: --update bf16|int8. */
/* DIR/residual-round-NNNNNN.h5 of round. 0, or -1 when it does not fit. */
int train_residual_path(const flas_train_opts *o, long round, char *buf, size_t len);
/* After a commit of o->checkpoint: rank 0 writes the update to o->output and this round's residual,
 * the others wait; collective, the same result on every rank. reason goes into the log. */
int train_publish_update(trainer *t, const char *reason, char *err, size_t errlen);

/* train_inner.c: --inner-state keep. */
/* After train_load of a new round: moments, step count and data cursor from the newest inner state of
 * an earlier round in o->state_dir, if any (collective). 0, or -1 with err (another site's or model's). */
int train_inner_load(trainer *t, char *err, size_t errlen);
/* Removes inner states of rounds before the last two (rank 0). */
void train_inner_prune(const trainer *t);
/* The published params-only local checkpoint at o->output (collective, atomic). */
int train_publish_params(trainer *t, const flas_ckpt_metrics *mt, char *err, size_t errlen);

/* train_main.c: removes what killed writers of path left on this host (rank 0 only). */
void train_remove_stale_temps(const char *path, const flas_train_comm *c);

/* train_eval.c */
int train_evaluate(flas_model *m, flas_loader *valid, flas_train_comm *c, long max_batches, int32_t *tokens,
                   int32_t *targets, double *loss, int64_t *n_tokens, char *err, size_t errlen);
int train_eval_main(const flas_train_opts *o, flas_train_comm *c, char *err, size_t errlen);
/* Opens the validation loader of o->valid for this rank (collective agreement on failure). */
flas_loader *train_open_valid(const flas_train_opts *o, flas_train_comm *c, const flas_config *cfg, int B, int T,
                              char *err, size_t errlen);

/* train_main.c: OpenMP threads per rank (--threads, or processors / ranks on the node). */
int train_threads(const flas_train_opts *o, const flas_train_comm *c);

/* train_loop.c */
int train_round(trainer *t, char *err, size_t errlen);

/* train_log.c */
int train_log_open(train_log *l, const flas_train_opts *o, int rank0, char *err, size_t errlen);
void train_log_close(train_log *l);
void train_log_json(train_log *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void train_log_step(trainer *t, double loss, float norm, int force);
/* Best GEMM GFLOP/s of this rank with its OpenMP threads in precision p (the MFU denominator). */
double train_measure_peak(flas_precision p);
/* printf on rank 0 only, flushed (progress must show in a batch job's output file at once). */
void train_say(const flas_train_comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
