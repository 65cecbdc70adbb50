/* Streamed SHA-256 of a file with OpenSSL's EVP interface (uses SHA-NI/AVX2 code paths when present). */
#include "flas/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_BLOCK (1u << 20)

static void to_hex(const unsigned char *md, char hex[FLAS_SHA256_HEX])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
}

int flas_sha256_file(const char *path, char hex[FLAS_SHA256_HEX], uint64_t *bytes, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open for hashing: %s", path, strerror(errno));
        return -1;
    }
    /* Sequential hint: the kernel reads ahead further, which matters on network file systems. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    unsigned char *buf = malloc(READ_BLOCK);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = -1;
    uint64_t total = 0;
    if (!buf || !ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        snprintf(err, errlen, "%s: cannot set up SHA-256 (out of memory or libcrypto failure)", path);
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, READ_BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s: read failed after %llu bytes: %s", path, (unsigned long long)total,
                     strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1) {
            snprintf(err, errlen, "%s: SHA-256 update failed", path);
            goto out;
        }
        total += (uint64_t)n;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32) {
        snprintf(err, errlen, "%s: SHA-256 finalisation failed", path);
        goto out;
    }
    to_hex(md, hex);
    if (bytes)
        *bytes = total;
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return rc;
}

void flas_sha256_buffer(const void *data, size_t len, char hex[FLAS_SHA256_HEX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    to_hex(md, hex);
}

int flas_sha256_is_hex(const char *s)
{
    if (!s || strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}
