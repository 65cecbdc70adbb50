/* Token shards: the on-disk form of a site's tokenized text (written by flas-prepare, read by the
 * loader). One shard is one file NAME.flastok:
 *
 *   offset size  field (all integers little-endian)
 *        0    8  magic "FLASTOK\0"
 *        8    4  version (1)
 *       12    4  header bytes (128): tokens start here
 *       16    4  vocab_size of the tokenizer the tokens come from
 *       20    4  token_bytes: 2 = uint16 tokens (vocab_size <= 65536), 4 = uint32
 *       24    8  n_tokens
 *       32    8  n_documents
 *       40    4  bos_id (int32, -1 none)
 *       44    4  eos_id (int32, -1 none)
 *       48    4  flags: bit 0 every document starts with BOS, bit 1 every document ends with EOS
 *       52    4  zero
 *       56   32  SHA-256 of the tokenizer .model file
 *       88   32  SHA-256 of the token bytes that follow the header
 *      120    8  zero
 *      128    n_tokens * token_bytes: the documents' ids one after the other
 *
 * The tokens of all documents form one contiguous stream (documents are told apart by BOS), so
 * the trainer cuts windows from it without looking at document boundaries. A shard is written
 * under a temporary name, fsync'ed and renamed, so a visible .flastok file is always complete. */
#ifndef FLAS_SHARDS_H
#define FLAS_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include "flas/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_SHARD_MAGIC "FLASTOK" /* 8 bytes with its NUL */
#define FLAS_SHARD_VERSION 1
#define FLAS_SHARD_HEADER_BYTES 128
#define FLAS_SHARD_SUFFIX ".flastok"

enum {
    FLAS_SHARD_DOC_BOS = 1u << 0,
    FLAS_SHARD_DOC_EOS = 1u << 1
};

typedef struct flas_shard_header {
    uint32_t version;
    uint32_t vocab_size;
    uint32_t token_bytes; /* 2 or 4 */
    uint32_t flags;       /* FLAS_SHARD_DOC_* */
    uint64_t n_tokens;
    uint64_t n_documents;
    int32_t bos_id, eos_id;
    unsigned char tokenizer_sha256[FLAS_SHA256_BYTES];
    unsigned char payload_sha256[FLAS_SHA256_BYTES];
} flas_shard_header;

/* 2 when every id of a vocabulary of this size fits uint16, else 4. */
uint32_t flas_shard_token_bytes(uint32_t vocab_size);
/* The 128 header bytes of h, and back; decode checks magic, version, sizes (0, or -1 with err). */
void flas_shard_header_encode(const flas_shard_header *h, unsigned char out[FLAS_SHARD_HEADER_BYTES]);
int flas_shard_header_decode(const unsigned char in[FLAS_SHARD_HEADER_BYTES], flas_shard_header *h,
                             char *err, size_t errlen);

/* --- writing ----------------------------------------------------------------------------------- */
typedef struct flas_shard_writer flas_shard_writer;

/* Starts the shard that will appear as path on commit. vocab_size, bos_id, eos_id, flags and
 * tokenizer_sha256 are taken from h; the rest is counted. NULL with err set on failure. */
flas_shard_writer *flas_shard_writer_open(const char *path, const flas_shard_header *h, char *err,
                                          size_t errlen);
/* Appends one document's ids (BOS/EOS already in place). Refuses ids outside [0, vocab_size). */
int flas_shard_writer_add(flas_shard_writer *w, const int32_t *ids, size_t n, char *err,
                          size_t errlen);
uint64_t flas_shard_writer_tokens(const flas_shard_writer *w);
/* Writes the header, fsyncs, renames onto path and fsyncs the directory; frees w either way.
 * A shard without tokens is refused (and removed). out (if not NULL) gets the final header. */
int flas_shard_writer_commit(flas_shard_writer *w, flas_shard_header *out, char *err, size_t errlen);
/* Removes the temporary file and frees w: nothing becomes visible. */
void flas_shard_writer_abort(flas_shard_writer *w);

/* --- reading ----------------------------------------------------------------------------------- */
typedef struct flas_shard {
    char *path;
    flas_shard_header h;
    const unsigned char *tokens; /* n_tokens * h.token_bytes bytes, memory-mapped read-only */
    void *map;
    size_t map_len;
} flas_shard;

/* Maps path and checks its header and that the file holds exactly n_tokens tokens. */
int flas_shard_open(flas_shard *s, const char *path, char *err, size_t errlen);
void flas_shard_close(flas_shard *s);
static inline uint32_t flas_shard_token(const flas_shard *s, uint64_t i)
{
    if (s->h.token_bytes == 2)
        return (uint32_t)s->tokens[2 * i] | (uint32_t)s->tokens[2 * i + 1] << 8;
    const unsigned char *p = s->tokens + 4 * i;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* Reads every token: the payload hash must match the header and every id be below vocab_size. */
int flas_shard_verify(const flas_shard *s, char *err, size_t errlen);

/* Expands paths (shard files, or directories whose *.flastok files are taken in name order) into
 * a malloc'ed array of malloc'ed paths. 0, or -1 with err set (missing path, directory without
 * shards, a file not named *.flastok). Free with flas_shard_list_free. */
int flas_shard_list(const char *const *paths, int n_paths, char ***out, int *n_out, char *err,
                    size_t errlen);
void flas_shard_list_free(char **list, int n);


#ifdef __cplusplus
}
#endif
#endif
