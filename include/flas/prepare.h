/* flas-prepare as a library: text files or JSON lines in, a directory of token shards out.
 *
 * Input formats (one per run):
 *   lines       one document per line ("\n" or "\r\n"); blank lines are skipped (flas-corpus output)
 *   paragraphs  documents separated by blank lines; a document's lines keep their "\n"
 *   jsonl       one JSON object per line with the document in a string field ("text", as mC4 ships)
 * Files may be gzip-compressed (read transparently). Text must be UTF-8: by default a file with an
 * invalid sequence is refused (file:line); with replace_invalid_utf8 every byte that does not
 * belong to a valid sequence becomes U+FFFD and is counted.
 *
 * Each document becomes BOS ids [EOS]. Input file i becomes shards part-<i>-<k>.flastok. The
 * output directory appears atomically: it is built under a hidden temporary name next to it and
 * renamed when every input succeeded; on any error (or a stop request) it is removed. */
#ifndef FLAS_PREPARE_H
#define FLAS_PREPARE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum flas_input_format {
    FLAS_INPUT_AUTO = 0, /* jsonl for *.jsonl, *.json, *.jsonl.gz, *.json.gz; else lines */
    FLAS_INPUT_LINES,
    FLAS_INPUT_PARAGRAPHS,
    FLAS_INPUT_JSONL
} flas_input_format;

typedef struct flas_prepare_opts {
    const char *tokenizer_path;   /* SentencePiece .model */
    const char *out_dir;          /* must not exist yet */
    const char *const *inputs;
    int n_inputs;
    flas_input_format format;
    const char *json_field;       /* NULL: "text" */
    int add_eos;                  /* 1: end every document with EOS as well */
    int replace_invalid_utf8;     /* 0: refuse invalid UTF-8; 1: replace with U+FFFD and count */
    int expect_vocab_size;        /* the model's vocab_size; 0: no check */
    uint64_t shard_tokens;        /* a new shard after this many tokens; 0: 1 << 27 */
    size_t max_document_bytes;    /* longer documents (lines) are refused; 0: 64 MiB */
    int threads;                  /* files tokenized at once; 0: OpenMP's default */
    int progress;                 /* 1: a progress line on stderr about every second */
    volatile sig_atomic_t *stop;  /* optional: set (by a signal handler) to abandon the run */
} flas_prepare_opts;

typedef struct flas_prepare_stats {
    uint64_t files, shards, documents, tokens;
    uint64_t bytes;               /* UTF-8 bytes of the documents' text */
    uint64_t replaced;            /* invalid UTF-8 bytes replaced by U+FFFD */
    uint64_t skipped_empty;       /* blank lines / empty "text" fields */
    double seconds;
} flas_prepare_stats;

/* Runs flas-prepare. 0, or -1 with a one-line reason (naming file:line where there is one) in err;
 * on -1 no output directory exists. */
int flas_prepare_run(const flas_prepare_opts *o, flas_prepare_stats *st, char *err, size_t errlen);

/* Checks shards (files or directories) against a tokenizer model (may be NULL) and/or a model
 * vocab_size (0: none): every header and size, payload hash, ids in range, same vocabulary and
 * tokenizer. st gets the totals (shards, documents, tokens). 0, or -1 with err set. */
int flas_prepare_verify(const char *tokenizer_path, int expect_vocab_size, const char *const *paths,
                        int n_paths, flas_prepare_stats *st, char *err, size_t errlen);

/* "lines", "paragraphs", "jsonl", "auto" -> format; -1 for anything else. */
int flas_input_format_parse(const char *name, flas_input_format *out);

#ifdef __cplusplus
}
#endif
#endif
