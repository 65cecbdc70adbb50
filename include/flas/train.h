/* flas-train: the job-side trainer of one federated round (docs/man/flas-train.1).
 *
 * One MPI job of world = tp x dp ranks. Rank r is tensor-parallel rank r % tp of data-parallel replica
 * r / tp, so the tp ranks of a replica are neighbours (one node with a block rank placement). Inside a
 * replica the core's allreduce hook runs MPI_Allreduce on the tp communicator (Megatron); replicas
 * average their gradients with a bucketed MPI_Allreduce on the dp communicator after backward. The
 * result equals one process running the same global batch (batch x accum x dp windows) by gradient
 * accumulation, up to the order of float sums.
 *
 * Modules (runtime/): train_args.c (flags), train_env.c (FLAS_* variables, sha256 check),
 * train_comm.c (communicators, allreduces, ZeRO-1 slices), train_clock.c (walltime, signals),
 * train_ckpt.c (checkpoint glue), train_update.c (--update: the published delta and
 * its error feedback), train_loop.c (the round), train_eval.c (validation, --eval),
 * train_log.c (progress line, JSON-lines metrics). tools/flas-train.c is the thin main. */
#ifndef FLAS_TRAIN_H
#define FLAS_TRAIN_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "flas/checkpoint.h"
#include "flas/llama.h"
#include "flas/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_TRAIN_PATH_MAX 1024

typedef enum flas_train_mode {
    FLAS_TRAIN_RUN = 0, /* train the round (default) */
    FLAS_TRAIN_INIT,    /* --init: write a round-0 global model */
    FLAS_TRAIN_EVAL,    /* --eval CKPT: validation loss of a checkpoint */
    FLAS_TRAIN_HELP,
    FLAS_TRAIN_VERSION
} flas_train_mode;

/* Model fields given by flags (bits of flas_train_opts.cfg_given). */
enum {
    FLAS_CFG_DIM = 1 << 0, FLAS_CFG_LAYERS = 1 << 1, FLAS_CFG_HEADS = 1 << 2, FLAS_CFG_KV_HEADS = 1 << 3,
    FLAS_CFG_HIDDEN = 1 << 4, FLAS_CFG_VOCAB = 1 << 5, FLAS_CFG_SEQ_LEN = 1 << 6, FLAS_CFG_NORM_EPS = 1 << 7,
    FLAS_CFG_ROPE_THETA = 1 << 8, FLAS_CFG_TIED = 1 << 9, FLAS_CFG_PRESET = 1 << 10
};

/* Everything flas-train is told: defaults (flas_train_opts_init), then the FLAS_* environment
 * (flas_train_opts_from_env), then flags (flas_train_parse_args), which win. */
/* --device: where the training step runs. */
typedef enum flas_train_device { FLAS_DEVICE_AUTO = 0, FLAS_DEVICE_CPU, FLAS_DEVICE_CUDA } flas_train_device;

typedef struct flas_train_opts {
    flas_train_mode mode;
    /* The federated round (FLAS_* variables of the SPANK plugin, or flags). */
    char federation[64];
    char site[FLAS_CKPT_SITE_MAX];
    long round;                           /* -1: not given */
    char global[FLAS_TRAIN_PATH_MAX];     /* global checkpoint the round starts from */
    char global_sha256[FLAS_SHA256_HEX];  /* expected sha256 of global; "" = not checked */
    char output[FLAS_TRAIN_PATH_MAX];     /* local checkpoint to write (--init: the global to write) */
    char output_dir[FLAS_TRAIN_PATH_MAX]; /* FLAS_OUTPUT_DIR: default home of the metrics file */
    char job_id[32];
    char flas_error[512];                 /* FLAS_ERROR: the plugin says this job must not train */
    char resume[FLAS_TRAIN_PATH_MAX];     /* local checkpoint to continue, or "auto" (the output, if any) */
    char eval[FLAS_TRAIN_PATH_MAX];       /* --eval CKPT */
    char init_from[FLAS_TRAIN_PATH_MAX];  /* --init-from: weights of the round-0 global from a published
                                             model (hf dir, GGUF, llama2.c or FLaS file; flas/interop.h) */
    char data[FLAS_TRAIN_PATH_MAX];       /* training shards: a *.flastok file or a directory of them */
    char valid[FLAS_TRAIN_PATH_MAX];      /* validation shards */
    char metrics[FLAS_TRAIN_PATH_MAX];    /* JSON-lines metrics file ("" = FLAS_OUTPUT_DIR/metrics.jsonl) */
    /* What the round publishes at `output` (flas/update.h): FLAS_UPDATE_FULL, the local checkpoint
     * itself; bf16/int8, the delta against `global` with error feedback, the checkpoint going to
     * `checkpoint` instead. */
    flas_update_enc update;
    int update_block;                     /* int8 block (FLAS_UPDATE_BLOCK_DEFAULT) */
    char state_dir[FLAS_TRAIN_PATH_MAX];  /* the site's private state between rounds: error feedback
                                             (bf16/int8) and the kept inner optimizer state */
    char state_dir_from[24];              /* how it was given, for messages: --state-dir, --residual-dir,
                                             FLAS_STATE_DIR or FLAS_RESIDUAL_DIR ("" default) */
    int state_dir_default;                /* 1: state_dir is the default ($XDG_STATE_HOME or
                                             ~/.local/state, then flas/<federation>/<site>), created
                                             0700 on first use */
    /* The site's optimizer across rounds (docs/tuning.md). */
    int inner_keep;                       /* --inner-state keep: AdamW moments, their step count and the
                                             data position continue from the site's previous round
                                             (state_dir/inner-round-R.h5, never published); 0: reset */
    int lr_run;                           /* --lr-schedule run: one warmup + cosine over all rounds */
    long rounds;                          /* --rounds: rounds of the whole run (lr_run) */
    long round_warmup;                    /* --round-warmup N: lr ramps up over each round's first N steps */
    long data_epoch;                      /* --data-epoch: the epoch of the data order a new round starts
                                             at (-1: the round number, a fresh order every round) */
    float prox;                           /* --prox MU: FedProx term mu/2 ||x - x_global||^2 (0: off) */
    char checkpoint[FLAS_TRAIN_PATH_MAX]; /* derived by flas_train_opts_check: where the full local
                                             checkpoint goes (output, or its "-full" sibling) */
    /* Model shape: required for --init; when training, checked against the checkpoint's. */
    char preset[32];
    flas_config cfg;
    unsigned cfg_given;                   /* FLAS_CFG_* */
    int multiple_of;                      /* FFN width rounding when --hidden is not given */
    uint64_t seed;                        /* weights (--init) and data order */
    int shuffle;                          /* 1: a seeded permutation of the windows every epoch */
    /* How much to train in this round: stop at the first of --steps / --tokens (0 = not given). */
    long steps;
    int64_t tokens;
    int batch, seq, accum;                /* per rank micro-batch B x T, micro-batches per step */
    float lr, min_lr, weight_decay, clip, beta1, beta2, eps;
    long warmup;                          /* -1: 5% of the round's steps */
    long decay_steps;                     /* cosine decay length; 0: the round's steps */
    long schedule_offset;                 /* schedule step of this round's first step */
    /* Parallelism. */
    int tp;                               /* tensor-parallel ranks per replica */
    int zero;                             /* 1: ZeRO-1, AdamW moments sharded over dp ranks */
    int threads;                          /* OpenMP threads per rank; 0: processors / ranks on the node */
    double bucket_mb;                     /* gradient allreduce bucket */
    /* Where and in which arithmetic the step runs. Checkpoints are fp32 master weights whatever these say. */
    flas_train_device device;             /* --device; AUTO: cuda where a GPU and the CUDA step exist, else cpu */
    flas_precision precision;             /* --precision (fp32) */
    /* Walltime and checkpoints. */
    double time_budget;                   /* seconds from start (tests, no Slurm); 0: none */
    double margin;                        /* seconds kept free before the job's end; < 0: automatic */
    long checkpoint_every;                /* steps between periodic checkpoints; 0: only at the end */
    /* Reporting. */
    long log_every;
    double peak_gflops;                   /* sgemm peak per rank for MFU; 0: measured at start */
    long valid_batches;                   /* cap on validation batches (0: the whole validation set) */
    int json;                             /* --eval: one JSON object on stdout */
    /* Which of the above came from flags (so the environment does not override them). */
    unsigned given;
} flas_train_opts;

/* Bits of flas_train_opts.given for the fields the environment can also set. */
enum {
    FLAS_GIVEN_FEDERATION = 1 << 0, FLAS_GIVEN_SITE = 1 << 1, FLAS_GIVEN_ROUND = 1 << 2,
    FLAS_GIVEN_GLOBAL = 1 << 3, FLAS_GIVEN_GLOBAL_SHA = 1 << 4, FLAS_GIVEN_OUTPUT = 1 << 5,
    FLAS_GIVEN_OUTPUT_DIR = 1 << 6, FLAS_GIVEN_JOB_ID = 1 << 7, FLAS_GIVEN_UPDATE = 1 << 8,
    FLAS_GIVEN_UPDATE_BLOCK = 1 << 9, FLAS_GIVEN_STATE_DIR = 1 << 10, FLAS_GIVEN_STEPS = 1 << 11,
    FLAS_GIVEN_INNER_STATE = 1 << 12, FLAS_GIVEN_LR_SCHEDULE = 1 << 13, FLAS_GIVEN_ROUNDS = 1 << 14,
    FLAS_GIVEN_PROX = 1 << 15
};

void flas_train_opts_init(flas_train_opts *o);
/* Fills the round's context from FLAS_FEDERATION, FLAS_SITE, FLAS_ROUND, FLAS_GLOBAL_CHECKPOINT,
 * FLAS_GLOBAL_SHA256, FLAS_OUTPUT_CHECKPOINT, FLAS_OUTPUT_DIR, FLAS_JOB_ID and FLAS_ERROR, and the
 * site's FLAS_UPDATE, FLAS_UPDATE_BLOCK and FLAS_RESIDUAL_DIR, and the coordinator's FLAS_STEPS (speed-
 * aware rounds: the steps when no --steps is given), except the fields already given by
 * flags. 0, or -1 with a one-line reason (a malformed value) in err. */
int flas_train_opts_from_env(flas_train_opts *o, char *err, size_t errlen);
/* Parses argv (getopt_long). 0, or -1 with a one-line reason naming the flag in err. */
int flas_train_parse_args(flas_train_opts *o, int argc, char **argv, char *err, size_t errlen);
/* Checks that the options make sense for the mode and fills derived defaults (min_lr, checkpoint). Looks
 * at no file: every rank runs it before MPI starts and must reach the same verdict. 0 or -1 with err. */
int flas_train_opts_check(flas_train_opts *o, char *err, size_t errlen);
/* The model config the flags describe (preset, then single fields; LLaMA-2 defaults for the rest, the
 * FFN width from --dim unless --hidden). 0 or -1 with err. */
int flas_train_opts_config(const flas_train_opts *o, flas_config *c, char *err, size_t errlen);
/* base with the preset and fields the flags give laid over it (what a checkpoint must match). */
void flas_train_opts_overlay(const flas_train_opts *o, const flas_config *base, flas_config *out);
void flas_train_usage(FILE *f);

/* The whole program after option parsing, collective over world: the mode's work, messages on rank 0
 * (stdout: progress and results; stderr: "flas-train: error: ..."). job_end_unix: when the Slurm job
 * ends (0: unknown), from libslurm or SLURM_JOB_END_TIME (the tool finds it). Returns the exit code:
 * 0 done (also after a walltime or signal stop with its checkpoint written), 1 error or refusal.
 * (A usage error, found before this is called, is the tool's exit code 2.) */
int flas_train_main(const flas_train_opts *o, MPI_Comm world, double job_end_unix);

/* ---- walltime and signals (train_clock.c) ------------------------------------------------------- */

typedef struct flas_train_clock {
    double start;         /* unix seconds at start */
    double end;           /* unix seconds when the job ends; 0: no limit */
    double margin;        /* seconds kept free at the end */
    double step_seconds;  /* a recent optimizer step's duration (0 before the first) */
    double ckpt_seconds;  /* estimated time to write the checkpoint */
    double valid_seconds; /* estimated time of the final validation */
} flas_train_clock;

double flas_train_now(void);
/* The job's end from SLURM_JOB_END_TIME (unix seconds), or 0 when absent or malformed. */
double flas_train_job_end_from_env(void);
/* Earliest of the job's end and start + time_budget (each ignored when 0). */
double flas_train_deadline(double start, double job_end, double time_budget);
/* 1 when one more step, the validation and the checkpoint would not fit before end - margin. */
int flas_train_clock_must_stop(const flas_train_clock *c, double now);
/* Seconds needed after the last step: checkpoint (with slack), validation, margin. */
double flas_train_clock_reserve(const flas_train_clock *c);
/* SIGUSR1 and SIGTERM set a flag instead of killing: the loop finishes its step, checkpoints, exits 0. */
void flas_train_signals_install(void);
int flas_train_signal_pending(void); /* the signal number caught, or 0 */
void flas_train_signal_clear(void);

/* ---- communicators (train_comm.c) -------------------------------------------------------------- */

typedef struct flas_train_comm {
    MPI_Comm world, tp, dp;
    int rank, size;
    int tp_rank, tp_size, dp_rank, dp_size;
    int node_ranks;          /* ranks sharing this node (default thread count = processors / this) */
    int tp_spans_nodes;      /* 1 if a tp group is not on one node (works, but slow) */
    int n_nodes;             /* distinct nodes the ranks run on */
    char *hosts;             /* rank 0: the node of every world rank, FLAS_TRAIN_HOST_LEN bytes each */
    double reduce_seconds;   /* time in data-parallel gradient reductions so far */
} flas_train_comm;

#define FLAS_TRAIN_HOST_LEN 64

int flas_train_comm_init(flas_train_comm *c, MPI_Comm world, int tp, char *err, size_t errlen);
void flas_train_comm_free(flas_train_comm *c);
/* Rank 0: where the ranks run, "NODE: ranks A-B, ..." ("?" elsewhere); and as a JSON array of the node
 * of each world rank. Both truncate to len. */
void flas_train_comm_placement(const flas_train_comm *c, char *buf, size_t len);
void flas_train_comm_hosts_json(const flas_train_comm *c, char *buf, size_t len);
/* The core's tensor-parallel hook: MPI_Allreduce(SUM) on c->tp (ctx is the flas_train_comm). */
void flas_train_tp_allreduce(float *buf, size_t n, void *ctx);
/* Sums buf[0..n) over the dp ranks, in place, in buckets of bucket floats. */
void flas_train_dp_allreduce(flas_train_comm *c, float *buf, size_t n, size_t bucket);
/* The part-th of parts contiguous slices of [0, n), boundaries on 16-float (64-byte) multiples. */
void flas_train_slice(size_t n, int part, int parts, size_t *lo, size_t *hi);
/* Every dp rank's slice of buf (flas_train_slice over dp ranks) to every dp rank: ZeRO-1's gather. */
void flas_train_dp_gather_slices(flas_train_comm *c, float *buf, size_t n);
/* 0 on every rank of comm if ok on all; else -1 everywhere, with the lowest failing rank's err. */
int flas_train_agree(MPI_Comm comm, int ok, char *err, size_t errlen);

/* A table of the tensors of t that intersect [lo, hi), offsets relative to lo: AdamW and the norm run
 * over one ZeRO-1 slice exactly as over the whole buffer. 0, or -1 (out of memory). */
int flas_train_slice_table(const flas_param_table *t, size_t lo, size_t hi, flas_param_table *out);

#ifdef __cplusplus
}
#endif
#endif
