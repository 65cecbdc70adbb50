/* SHA-256 of files, streamed through OpenSSL libcrypto (EVP). Kept apart from checkpoint.h so that
 * light users (the SPANK plugin's epilog, the coordinator) can hash a checkpoint without linking
 * HDF5 or MPI: they link the small `flas_sha256` library only. */
#ifndef FLAS_SHA256_H
#define FLAS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_SHA256_HEX 65 /* 64 lowercase hex digits + NUL */

/* Hashes the whole file at path in 1 MiB reads (constant memory). Writes the lowercase hex digest
 * into hex and, when bytes is not NULL, the number of bytes hashed. 0, or -1 with a one-line reason
 * naming the file in err. */
int flas_sha256_file(const char *path, char hex[FLAS_SHA256_HEX], uint64_t *bytes, char *err, size_t errlen);

/* Hashes a memory buffer (tests, manifests). */
void flas_sha256_buffer(const void *data, size_t len, char hex[FLAS_SHA256_HEX]);

/* 1 if s is exactly 64 lowercase hex digits, else 0. */
int flas_sha256_is_hex(const char *s);

#ifdef __cplusplus
}
#endif
#endif
