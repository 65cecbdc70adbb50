/* The trainer's data loader: token shards in, (tokens, targets) micro-batches out.
 *
 * The shards, in the order given (a directory's *.flastok files by name), form one stream of
 * n_tokens tokens. It is cut into n_windows = (n_tokens - 1) / seq_len windows: window w is
 * tokens [w*T, w*T + T) and its targets are the same tokens moved by one, [w*T + 1, w*T + T + 1).
 * An epoch visits every window once, in stream order or (shuffle) in a permutation fixed by
 * (seed, epoch); each step hands the next batch * dp_size windows of that order out, rank r taking
 * the r-th run of batch windows, so ranks never share a window within an epoch. The windows left
 * over when fewer than batch * dp_size remain are skipped (every rank runs the same number of
 * steps). The permutation is computed, not stored (a keyed Feistel network), so memory does not
 * grow with the data and the cursor is a handful of integers.
 *
 * The validation iterator is the same loader with shuffle off and one pass: flas_loader_next
 * returns 0 after the last full batch and flas_loader_rewind starts the pass again. */
#ifndef FLAS_LOADER_H
#define FLAS_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "flas/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct flas_loader flas_loader;

typedef struct flas_loader_opts {
    int seq_len;          /* T: tokens per row */
    int batch;            /* B: rows per micro-batch on this rank */
    int dp_rank, dp_size; /* data-parallel coordinates (0, 1 without data parallelism) */
    uint64_t seed;        /* shuffling seed */
    int shuffle;          /* 1: a new seeded permutation of the windows every epoch */
    int single_pass;      /* 1: stop after one epoch (validation) instead of starting the next */
    int vocab_size;       /* the model's vocab_size: every shard must have exactly this one */
    /* Optional: the SHA-256 of the tokenizer the model uses (flas_tokenizer_sha256); NULL to
     * accept any, as long as all shards agree with each other. */
    const unsigned char *tokenizer_sha256;
} flas_loader_opts;

/* Where the loader is: a fixed record of integers the trainer saves with its checkpoint
 * (FLAS_LOADER_CURSOR_WORDS uint64 values, in field order) and restores; the next batch after a
 * restore is exactly the one that would have come next. */
typedef struct flas_loader_cursor {
    uint64_t version;     /* FLAS_LOADER_CURSOR_VERSION */
    uint64_t seed;
    uint64_t shuffle;
    uint64_t seq_len;
    uint64_t n_tokens;    /* of the stream: a cursor for other data is refused */
    uint64_t fingerprint; /* of the shards' contents (their payload hashes, in order) */
    uint64_t epoch;       /* epochs completed */
    uint64_t position;    /* windows of this epoch already handed out, all ranks together */
} flas_loader_cursor;
#define FLAS_LOADER_CURSOR_VERSION 1
#define FLAS_LOADER_CURSOR_WORDS 8

/* Opens the shards of paths (files or directories) for rank dp_rank. Checks every shard (header,
 * size, vocab_size equal to the model's, one tokenizer for all) and that the stream holds at least
 * one step (batch * dp_size windows). NULL with a one-line reason in err. */
flas_loader *flas_loader_open(const char *const *paths, int n_paths, const flas_loader_opts *o,
                              char *err, size_t errlen);
/* Same, shuffle off and single pass: the validation iterator. */
flas_loader *flas_loader_open_validation(const char *const *paths, int n_paths, int seq_len,
                                         int batch, int dp_rank, int dp_size, int vocab_size,
                                         const unsigned char *tokenizer_sha256, char *err,
                                         size_t errlen);
void flas_loader_close(flas_loader *l);

/* Fills tokens[batch * seq_len] and targets[batch * seq_len] (row-major [B, T]) with this rank's
 * next micro-batch. 1 when filled, 0 at the end of a single pass (nothing filled), -1 with err set
 * (a token outside the vocabulary: a damaged shard). */
int flas_loader_next(flas_loader *l, int32_t *tokens, int32_t *targets, char *err, size_t errlen);
/* Back to the start of the current epoch's order (for the validation iterator: the next pass). */
void flas_loader_rewind(flas_loader *l);

void flas_loader_get_cursor(const flas_loader *l, flas_loader_cursor *c);
/* Restores c. Refuses (-1, err) a cursor of another version, seed, shuffle setting, seq_len or
 * data. batch and dp_size may differ from the run that saved it: position counts windows. */
int flas_loader_set_cursor(flas_loader *l, const flas_loader_cursor *c, char *err, size_t errlen);
void flas_loader_cursor_to_words(const flas_loader_cursor *c, uint64_t w[FLAS_LOADER_CURSOR_WORDS]);
void flas_loader_cursor_from_words(const uint64_t w[FLAS_LOADER_CURSOR_WORDS], flas_loader_cursor *c);

uint64_t flas_loader_n_tokens(const flas_loader *l);
uint64_t flas_loader_n_windows(const flas_loader *l);
/* Steps per epoch: n_windows / (batch * dp_size). */
uint64_t flas_loader_steps_per_epoch(const flas_loader *l);
int flas_loader_n_shards(const flas_loader *l);
uint64_t flas_loader_n_documents(const flas_loader *l);

/* The position in the epoch's order -> window index map (a bijection of [0, n_windows) keyed by
 * seed and epoch), exposed for tests and tools. */
uint64_t flas_loader_permute(uint64_t index, uint64_t n_windows, uint64_t seed, uint64_t epoch);

#ifdef __cplusplus
}
#endif
#endif
