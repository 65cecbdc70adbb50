/* SHA-256 of files and buffers (OpenSSL libcrypto), as lowercase hex. */
#ifndef FLAS_SHA256_H
#define FLAS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_SHA256_BYTES 32   /* a raw digest */
#define FLAS_SHA256_HEX_LEN 64
#define FLAS_SHA256_HEX 65 /* 64 lowercase hex digits + NUL */

/* Hashes everything readable from fd, from its current offset; hex gets 65 bytes. Returns the number of
 * bytes hashed, or -1 (errno set) on a read or library error. */
int64_t flas_sha256_fd(int fd, char hex[FLAS_SHA256_HEX_LEN + 1]);
/* Hashes exactly len bytes of fd starting at off (pread: the file offset is not moved). Returns len, or
 * -1 on a read error or a file shorter than off + len. */
int64_t flas_sha256_range(int fd, int64_t off, int64_t len, char hex[FLAS_SHA256_HEX_LEN + 1]);
/* Hashes the whole file at path (no final symlink followed) in 1 MiB reads. Writes the hex digest and,
 * when bytes is not NULL, the number of bytes hashed. 0, or -1 with a one-line reason naming the file
 * in err (err may be NULL). */
int flas_sha256_file(const char *path, char hex[FLAS_SHA256_HEX], uint64_t *bytes, char *err, size_t errlen);
/* Hashes a memory buffer. */
void flas_sha256_buffer(const void *data, size_t len, char hex[FLAS_SHA256_HEX]);
/* Incremental hashing, for data that is hashed while it streams past. */
typedef struct flas_sha256_ctx flas_sha256_ctx;
flas_sha256_ctx *flas_sha256_begin(void);
int flas_sha256_update(flas_sha256_ctx *c, const void *data, size_t len);
/* Writes the hex digest and frees c (also on error); 0 or -1. */
int flas_sha256_end(flas_sha256_ctx *c, char hex[FLAS_SHA256_HEX_LEN + 1]);
/* Feeds exactly len bytes of fd from offset off into c (pread). 0 or -1. */
int flas_sha256_update_fd(flas_sha256_ctx *c, int fd, int64_t off, int64_t len);

/* Raw digests, for formats that store the 32 bytes (token shards, the tokenizer's identity). */
int flas_sha256_raw(const void *data, size_t len, unsigned char md[FLAS_SHA256_BYTES]); /* 0 or -1 */
/* Like flas_sha256_end, giving the raw digest; frees c. 0 or -1. */
int flas_sha256_end_raw(flas_sha256_ctx *c, unsigned char md[FLAS_SHA256_BYTES]);
/* The one hex encoder: 64 lowercase digits and a NUL. */
void flas_sha256_hex(const unsigned char md[FLAS_SHA256_BYTES], char hex[FLAS_SHA256_HEX]);

/* 1 if s is 64 lowercase hex digits. */
int flas_sha256_is_hex(const char *s);

#ifdef __cplusplus
}
#endif
#endif
