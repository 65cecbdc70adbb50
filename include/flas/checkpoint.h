/* The FLaS HDF5 checkpoint: schema and its one read/write implementation (trainer AND aggregator).
 * docs/checkpoint-format.md describes the file layout for users of h5py and other tools.
 *
 * A checkpoint stores every tensor with its FULL logical shape (float32, Meta names), so a file
 * written by any number of ranks can be read by any other number. Writers and readers move data as
 * hyperslabs of those full tensors: the caller decides the partition (tensor-parallel rows/columns,
 * one data-parallel replica, ZeRO-1 slices of the optimizer state, aggregator chunks).
 *
 * Two modes, chosen by the communicator passed to create/open:
 *   comm == MPI_COMM_NULL  serial (HDF5 sec2 driver); MPI need not be initialised. For tools.
 *   any other comm         parallel HDF5 over MPI-IO, COLLECTIVE over comm: every rank calls every
 *                          function below with the same section/tensor sequence; a rank that needs
 *                          nothing from a tensor passes an empty selection (count 0 / n 0).
 *                          Metadata operations are collective; raw data move independently (each
 *                          rank its own hyperslab) unless FLAS_CKPT_MPIO=collective is set in the
 *                          environment (two-phase collective buffering, for parallel file systems).
 *
 * Writes are atomic: data go to a hidden temporary file in the destination directory; commit sets the
 * completion marker, closes, fsyncs, renames over the destination and fsyncs the directory. A crash at
 * any moment leaves the previous file at the destination intact. Readers refuse files without the
 * marker, and validate everything (format, version, config, every tensor's presence, shape and dtype)
 * before a caller allocates anything.
 *
 * Errors are returned as -1 (or NULL) with a one-line message naming the file in err. In parallel
 * mode a failed put/get still takes part in the collective operation (with an empty selection) so
 * that other ranks never hang; the writer remembers the failure and commit refuses on every rank. */
#ifndef FLAS_CHECKPOINT_H
#define FLAS_CHECKPOINT_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "flas/model.h"
#include "flas/sha256.h"
#include "flas/update.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_CKPT_FORMAT "flas-checkpoint"
#define FLAS_CKPT_VERSION 1
#define FLAS_CKPT_ROPE "meta-interleaved" /* RoPE rotates pairs (2i, 2i+1); wq/wk rows in Meta order */
#define FLAS_CKPT_SITE_MAX 64
#define FLAS_CKPT_MAX_SITES 256           /* per-site counters kept in the server state */
#define FLAS_CKPT_MAX_LAYERS 1024         /* plausibility bound: a file cannot make readers size huge tables */

/* The tensor sections. Each holds one float32 dataset per model tensor, named by its Meta name. */
typedef enum flas_ckpt_section {
    FLAS_CKPT_PARAMS = 0, /* /params/<name>        model weights (always present) */
    FLAS_CKPT_ADAM_M,     /* /optimizer/m/<name>   AdamW first moment */
    FLAS_CKPT_ADAM_V,     /* /optimizer/v/<name>   AdamW second moment */
    FLAS_CKPT_SERVER_M,   /* /server/m/<name>      server momentum or first moment (FedAvgM, FedAdam, FedYogi, DiLoCo) */
    FLAS_CKPT_SERVER_V,   /* /server/v/<name>      server second moment (FedAdam, FedYogi) */
    FLAS_CKPT_N_SECTIONS
} flas_ckpt_section;

/* Bits of the `contents` mask given to flas_ckpt_create and returned by flas_ckpt_contents. */
#define FLAS_CKPT_HAS(section) (1u << (section))
#define FLAS_CKPT_OPTIMIZER (FLAS_CKPT_HAS(FLAS_CKPT_ADAM_M) | FLAS_CKPT_HAS(FLAS_CKPT_ADAM_V))
#define FLAS_CKPT_TRAIN_STATE (1u << 8)  /* /train_state: data cursor and RNG */
#define FLAS_CKPT_SERVER_STATE (1u << 9) /* /server attributes: strategy, round, per-site counts */
#define FLAS_CKPT_PROVENANCE (1u << 10)  /* /provenance: how an aggregated global was made */
#define FLAS_CKPT_METRICS (1u << 11)     /* /metrics: losses and timings of the run that wrote it */
/* An update file (flas/update.h): /update (+ /update_scale) instead of /params, encoded as
 * meta.update with meta.update_block; nothing but FLAS_CKPT_METRICS beside it. Serial mode only. */
#define FLAS_CKPT_UPDATE (1u << 12)
/* A write option, not a part: keep meta.created_unix/created_utc as given instead of the time of
 * writing, for files that must be byte-identical wherever they are written (flas_update_apply_file). */
#define FLAS_CKPT_KEEP_CREATED (1u << 13)

typedef enum flas_ckpt_role {
    FLAS_CKPT_GLOBAL = 0, /* a global model: the start of a round (written by the aggregator or an import) */
    FLAS_CKPT_LOCAL = 1   /* a site's model after (part of) its local round (written by flas-train) */
} flas_ckpt_role;

/* The root attributes. The writer fills created_* itself; readers fill everything. */
typedef struct flas_ckpt_meta {
    flas_config cfg;                  /* every field stored as an attribute of the same name */
    flas_ckpt_role role;
    int64_t round;                    /* global: the round this model starts; local: the round trained */
    char site[FLAS_CKPT_SITE_MAX];    /* local: the site that trained it; global: "" */
    int64_t step;                     /* local optimizer steps since the base checkpoint */
    int64_t tokens_trained;           /* local: tokens trained since the base (the FedAvg weight);
                                         global: tokens merged into it by the aggregation that made it */
    char base_sha256[FLAS_SHA256_HEX];/* sha256 of the global checkpoint this one started from, or "" */
    int32_t tp_size, dp_size;         /* how it was written (informational: any world size may read it) */
    int64_t created_unix;             /* seconds since the epoch, set by the writer */
    char created_utc[32];             /* the same as ISO 8601, e.g. 2025-01-31T12:00:00Z */
    /* Update files only (FLAS_CKPT_UPDATE; root attributes update_encoding and update_block);
     * FLAS_UPDATE_FULL and 0 for every other checkpoint. */
    flas_update_enc update;
    int32_t update_block;
} flas_ckpt_meta;

/* AdamW bookkeeping stored as attributes of /optimizer (with FLAS_CKPT_OPTIMIZER). */
typedef struct flas_ckpt_optimizer {
    int64_t step;                     /* AdamW steps taken (bias correction uses it) */
    float lr, beta1, beta2, eps, weight_decay;
} flas_ckpt_optimizer;

/* The trainer's resumable state, a fixed struct of integers stored as attributes of /train_state. */
#define FLAS_CKPT_CURSOR_WORDS 8 /* = FLAS_LOADER_CURSOR_WORDS (flas/loader.h) */
typedef struct flas_train_state {
    int64_t epoch;          /* passes over the site's token shards completed */
    int64_t shard;          /* token shard being read */
    int64_t offset;         /* next token within that shard */
    int64_t samples;        /* sequences consumed since the base, all data-parallel ranks together */
    uint64_t rng_seed;      /* seed the run started from */
    uint64_t rng_state[4];  /* generator state at the checkpoint (e.g. xoshiro256**) */
    /* The data loader's exact cursor (flas_loader_cursor_to_words), attribute loader_cursor. Optional
     * in files: all zero when absent (written before it existed). */
    uint64_t loader_cursor[FLAS_CKPT_CURSOR_WORDS];
} flas_train_state;

/* How the run that wrote a checkpoint went (FLAS_CKPT_METRICS), attributes of /metrics, so that the
 * coordinator can print per-site losses without a side channel. NaN means "not measured". */
typedef struct flas_ckpt_metrics {
    double train_loss;        /* mean training loss over the last steps before the checkpoint */
    double train_loss_last;   /* loss of the last step */
    double valid_loss;        /* mean cross-entropy per token on the validation shards */
    double valid_perplexity;  /* exp(valid_loss) */
    int64_t valid_tokens;     /* tokens the validation loss was measured on (0: none) */
    double train_seconds;     /* wall time spent training since the base checkpoint */
    double tokens_per_second; /* tokens trained / train_seconds, all ranks together */
    char stop_reason[32];     /* "steps", "tokens", "walltime", "signal", "periodic" */
} flas_ckpt_metrics;

/* The aggregator's state, stored with the global model (attributes of /server) so a restart gives the
 * same result. Tensor buffers live in FLAS_CKPT_SERVER_M / FLAS_CKPT_SERVER_V. */
typedef struct flas_server_site {
    char name[FLAS_CKPT_SITE_MAX];
    int64_t rounds;         /* rounds this site's update was merged */
    int64_t tokens;         /* tokens this site contributed, all rounds */
} flas_server_site;

typedef struct flas_server_state {
    char strategy[32];      /* e.g. "fedavg", "fedadam", "diloco" */
    int64_t round;          /* server updates applied so far */
    int64_t step;           /* server optimizer steps (bias correction of FedAdam) */
    int n_sites;
    flas_server_site sites[FLAS_CKPT_MAX_SITES];
    /* The privacy ledger (flas/dp.h), carried from global to global so that a restarted coordinator
     * or a hand-run flas-aggregate composes with what was spent before: rho = sum of 1/(2 sigma^2)
     * over the rounds merged with DP (+inf once a round ran with sigma 0), and how many those were. */
    double dp_rho;
    int64_t dp_rounds;
} flas_server_state;

/* Provenance of an aggregated global (FLAS_CKPT_PROVENANCE), stored as attributes of /provenance.
 * Pointers are borrowed for the duration of the call. */
typedef struct flas_ckpt_input {
    const char *path;
    const char *sha256;     /* hex digest of the input file */
    const char *site;
    int64_t round, tokens;
    double weight;          /* weight used in the merge, 0 for a dropped input */
    int used;               /* 1 merged, 0 dropped */
    const char *reason;     /* why dropped ("" when used) */
} flas_ckpt_input;

typedef struct flas_ckpt_provenance {
    const char *tool;               /* "flas-aggregate 0.1.0" */
    const char *strategy;
    const char *policy;             /* "refuse-round" or "drop-bad" */
    const char *previous_path;
    const char *previous_sha256;
    int n_hyper;
    const char *const *hyper_names; /* stored as attributes hyper.<name> (float64) */
    const double *hyper_values;
    int n_inputs;
    const flas_ckpt_input *inputs;
} flas_ckpt_provenance;

/* ---- writing ----------------------------------------------------------------------------------- */

typedef struct flas_ckpt_writer flas_ckpt_writer;

/* Starts writing the checkpoint that commit will place at path. contents: FLAS_CKPT_* bits for the
 * optional parts (params are always there). Creates every dataset of the chosen sections with its full
 * shape. Collective. NULL with err on failure (invalid config, unwritable directory, ...). */
flas_ckpt_writer *flas_ckpt_create(const char *path, const flas_ckpt_meta *meta, unsigned contents,
                                   MPI_Comm comm, char *err, size_t errlen);

/* The full-shape tensor table of the checkpoint being written (tp_size 1), for iteration. */
const flas_param_table *flas_ckpt_writer_tensors(const flas_ckpt_writer *w);

/* Writes the hyperslab start/count of the full tensor `name` in `section` from data (count[0] x
 * count[1] floats, row-major; 1-D tensors use start[0]/count[0] only). A zero count writes nothing
 * but still joins the collective call. */
int flas_ckpt_put(flas_ckpt_writer *w, flas_ckpt_section section, const char *name, const size_t start[2],
                  const size_t count[2], const float *data, char *err, size_t errlen);

/* Writes elements [lo, lo+n) of the full tensor in row-major order (n may be 0). For streaming. */
int flas_ckpt_put_elems(flas_ckpt_writer *w, flas_ckpt_section section, const char *name, size_t lo, size_t n,
                        const float *data, char *err, size_t errlen);

/* Writes elements [lo, hi) of a rank's flat parameter buffer laid out by t (any tp_rank/tp_size;
 * each tensor's shard lands at its shard_start), taking them from data (data[0] is element lo).
 * lo = 0, hi = t->n_params writes the whole shard set; lo == hi joins with nothing (a data-parallel
 * replica that another rank writes); a ZeRO-1 slice passes its own [lo, hi). */
int flas_ckpt_put_flat(flas_ckpt_writer *w, flas_ckpt_section section, const flas_param_table *t, size_t lo,
                       size_t hi, const float *data, char *err, size_t errlen);

/* Update files: encodes elements [lo, lo+n) of the delta of tensor `name` (float32, row-major) with
 * the file's encoding and writes them. lo must start an int8 block (a multiple of update_block) and n
 * end one or reach the tensor's end, so calls stream a tensor in order in any chunking. residual (may be
 * NULL) receives delta - decode(encoded). -1 with err for a non-finite delta value. */
int flas_ckpt_put_update(flas_ckpt_writer *w, const char *name, size_t lo, size_t n, const float *delta,
                         float *residual, char *err, size_t errlen);

int flas_ckpt_set_optimizer(flas_ckpt_writer *w, const flas_ckpt_optimizer *o, char *err, size_t errlen);
int flas_ckpt_set_train_state(flas_ckpt_writer *w, const flas_train_state *s, char *err, size_t errlen);
int flas_ckpt_set_server_state(flas_ckpt_writer *w, const flas_server_state *s, char *err, size_t errlen);
int flas_ckpt_set_provenance(flas_ckpt_writer *w, const flas_ckpt_provenance *p, char *err, size_t errlen);
int flas_ckpt_set_metrics(flas_ckpt_writer *w, const flas_ckpt_metrics *m, char *err, size_t errlen);

/* Finishes: refuses (and aborts) if any rank failed or some tensor of a chosen section was not fully
 * written or a chosen state was not set; else sets the completion marker, closes, fsyncs, renames onto
 * path and fsyncs the directory. Frees w in every case. Collective.
 * "Fully written" compares the elements put for each tensor, summed over ranks, with its size: write
 * every element exactly once (overlapping puts would count twice and could hide a hole). */
int flas_ckpt_commit(flas_ckpt_writer *w, char *err, size_t errlen);

/* Gives up: closes and removes the temporary file; the destination is untouched. Frees w. Collective. */
void flas_ckpt_abort(flas_ckpt_writer *w);

/* The prefix of the temporary names used while writing path (hidden, same directory, per host and
 * process): "<dir>/.<name>.tmp-<host>-<pid>". The writer appends "." and 16 random hex digits and
 * creates the file exclusively (never through a planted symlink); the prefix lets a later run of the
 * same host find the temporaries of writers that died. */
int flas_ckpt_temp_path(const char *path, char *out, size_t outlen);

/* ---- reading ----------------------------------------------------------------------------------- */

typedef struct flas_ckpt_reader flas_ckpt_reader;

/* Opens and validates path: HDF5 signature, not truncated, format name and version, completion marker,
 * RoPE convention, a valid config, every tensor of every present section with the config's shape and
 * float32 dtype, and the optional state groups. Reads no tensor data. Collective. */
flas_ckpt_reader *flas_ckpt_open(const char *path, MPI_Comm comm, char *err, size_t errlen);
void flas_ckpt_close(flas_ckpt_reader *r);

const flas_ckpt_meta *flas_ckpt_meta_of(const flas_ckpt_reader *r);
unsigned flas_ckpt_contents(const flas_ckpt_reader *r);
/* The full-shape tensor table of the file's config (tp_size 1). */
const flas_param_table *flas_ckpt_tensors(const flas_ckpt_reader *r);

/* 0 if the checkpoint's config equals want (every field), else -1 naming the first difference. */
int flas_ckpt_expect_config(const flas_ckpt_reader *r, const flas_config *want, char *err, size_t errlen);

/* Reads like the puts above. get_flat fills a rank's flat buffer [lo, hi) laid out by t for ANY
 * tp_rank/tp_size, whatever layout the file was written with. */
int flas_ckpt_get(flas_ckpt_reader *r, flas_ckpt_section section, const char *name, const size_t start[2],
                  const size_t count[2], float *out, char *err, size_t errlen);
int flas_ckpt_get_elems(flas_ckpt_reader *r, flas_ckpt_section section, const char *name, size_t lo, size_t n,
                        float *out, char *err, size_t errlen);
int flas_ckpt_get_flat(flas_ckpt_reader *r, flas_ckpt_section section, const flas_param_table *t, size_t lo,
                       size_t hi, float *out, char *err, size_t errlen);

/* Update files: the decoded delta of elements [lo, lo+n) of tensor `name` (any range). -1 with err for
 * a scale that is not a finite number >= 0 (a damaged or hostile file), or a file that is no update. */
int flas_ckpt_get_update(flas_ckpt_reader *r, const char *name, size_t lo, size_t n, float *out, char *err,
                         size_t errlen);

/* The optional state; -1 with err when the file does not hold it. */
int flas_ckpt_get_optimizer(const flas_ckpt_reader *r, flas_ckpt_optimizer *o, char *err, size_t errlen);
int flas_ckpt_get_train_state(const flas_ckpt_reader *r, flas_train_state *s, char *err, size_t errlen);
int flas_ckpt_get_server_state(const flas_ckpt_reader *r, flas_server_state *s, char *err, size_t errlen);
int flas_ckpt_get_metrics(const flas_ckpt_reader *r, flas_ckpt_metrics *m, char *err, size_t errlen);

/* Turns HDF5's automatic error-stack printing off for the whole process. The library already reports
 * every failure as one line and silences HDF5 during its own calls; tools call this once at start-up
 * so that HDF5 1.10 does not print "infinite loop closing library" at exit after it met a damaged file
 * (a known HDF5 bug; the message is harmless). */
void flas_ckpt_hdf5_quiet(void);

/* Names for messages: "params", "optimizer/m", ... and "global"/"local". */
const char *flas_ckpt_section_name(flas_ckpt_section s);
const char *flas_ckpt_role_name(flas_ckpt_role r);

#ifdef __cplusplus
}
#endif
#endif
