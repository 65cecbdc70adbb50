/* Token shards: header encoding, the atomic writer, the memory-mapped reader, directory listing.
 * The format is declared in include/flas/shards.h and described in docs/data.md. */
#define _GNU_SOURCE
#include "flas/error.h"
#include "flas/sha256.h"
#include "flas/shards.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/atomic_file.h"

#define WRITE_BUFFER_TOKENS (1u << 16) /* 128-256 KiB per writer: bounded memory */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

uint32_t flas_shard_token_bytes(uint32_t vocab_size) { return vocab_size <= 65536u ? 2 : 4; }

void flas_shard_header_encode(const flas_shard_header *h, unsigned char out[FLAS_SHARD_HEADER_BYTES])
{
    memset(out, 0, FLAS_SHARD_HEADER_BYTES);
    memcpy(out, FLAS_SHARD_MAGIC, 8);
    put32(out + 8, h->version);
    put32(out + 12, FLAS_SHARD_HEADER_BYTES);
    put32(out + 16, h->vocab_size);
    put32(out + 20, h->token_bytes);
    put64(out + 24, h->n_tokens);
    put64(out + 32, h->n_documents);
    put32(out + 40, (uint32_t)h->bos_id);
    put32(out + 44, (uint32_t)h->eos_id);
    put32(out + 48, h->flags);
    memcpy(out + 56, h->tokenizer_sha256, FLAS_SHA256_BYTES);
    memcpy(out + 88, h->payload_sha256, FLAS_SHA256_BYTES);
}

int flas_shard_header_decode(const unsigned char in[FLAS_SHARD_HEADER_BYTES], flas_shard_header *h,
                             char *err, size_t errlen)
{
    if (memcmp(in, FLAS_SHARD_MAGIC, 8) != 0)
        return flas_fail(err, errlen, "not a FLaS token shard (bad magic)");
    memset(h, 0, sizeof *h);
    h->version = get32(in + 8);
    if (h->version != FLAS_SHARD_VERSION)
        return flas_fail(err, errlen, "shard format version %u, this FLaS reads version %d", h->version,
                    FLAS_SHARD_VERSION);
    if (get32(in + 12) != FLAS_SHARD_HEADER_BYTES)
        return flas_fail(err, errlen, "header of %u bytes, expected %d", get32(in + 12), FLAS_SHARD_HEADER_BYTES);
    h->vocab_size = get32(in + 16);
    h->token_bytes = get32(in + 20);
    h->n_tokens = get64(in + 24);
    h->n_documents = get64(in + 32);
    h->bos_id = (int32_t)get32(in + 40);
    h->eos_id = (int32_t)get32(in + 44);
    h->flags = get32(in + 48);
    memcpy(h->tokenizer_sha256, in + 56, FLAS_SHA256_BYTES);
    memcpy(h->payload_sha256, in + 88, FLAS_SHA256_BYTES);
    if (h->vocab_size == 0)
        return flas_fail(err, errlen, "vocab_size 0");
    if (h->token_bytes != flas_shard_token_bytes(h->vocab_size))
        return flas_fail(err, errlen, "%u-byte tokens for a vocabulary of %u (expected %u)", h->token_bytes,
                    h->vocab_size, flas_shard_token_bytes(h->vocab_size));
    if (h->n_tokens > (UINT64_MAX - FLAS_SHARD_HEADER_BYTES) / h->token_bytes)
        return flas_fail(err, errlen, "token count %llu overflows", (unsigned long long)h->n_tokens);
    return 0;
}

/* --- writer ------------------------------------------------------------------------------------ */

struct flas_shard_writer {
    char *path, *tmp;
    int fd;
    flas_shard_header h;
    flas_sha256_ctx *md; /* NULL once finished */
    unsigned char *buf; /* WRITE_BUFFER_TOKENS tokens, encoded */
    size_t buf_used;    /* bytes */
};

flas_shard_writer *flas_shard_writer_open(const char *path, const flas_shard_header *h, char *err,
                                          size_t errlen)
{
    if (h->vocab_size == 0) {
        flas_fail(err, errlen, "%s: vocab_size 0", path);
        return NULL;
    }
    flas_shard_writer *w = calloc(1, sizeof *w);
    if (!w) {
        flas_fail(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    w->fd = -1;
    w->h = *h;
    w->h.version = FLAS_SHARD_VERSION;
    w->h.token_bytes = flas_shard_token_bytes(h->vocab_size);
    w->h.n_tokens = w->h.n_documents = 0;
    w->path = strdup(path);
    w->buf = malloc((size_t)WRITE_BUFFER_TOKENS * 4);
    w->md = flas_sha256_begin();
    if (!w->path || !w->buf || !w->md) {
        flas_fail(err, errlen, "%s: out of memory", path);
        goto bad;
    }
    w->fd = flas_atomic_create(path, &w->tmp, err, errlen);
    if (w->fd < 0)
        goto bad;
    /* The header goes in last (it holds the counts and the hash); reserve its bytes now. */
    unsigned char zero[FLAS_SHARD_HEADER_BYTES] = {0};
    if (flas_atomic_write_all(w->fd, zero, sizeof zero) != 0) {
        flas_fail(err, errlen, "%s: write: %s", w->tmp, strerror(errno));
        goto bad;
    }
    return w;
bad:
    flas_shard_writer_abort(w);
    return NULL;
}

static int flush_buffer(flas_shard_writer *w, char *err, size_t errlen)
{
    if (w->buf_used == 0)
        return 0;
    if (flas_sha256_update(w->md, w->buf, w->buf_used) != 0)
        return flas_fail(err, errlen, "%s: SHA-256 failed", w->path);
    if (flas_atomic_write_all(w->fd, w->buf, w->buf_used) != 0)
        return flas_fail(err, errlen, "%s: write: %s", w->tmp, strerror(errno));
    w->buf_used = 0;
    return 0;
}

int flas_shard_writer_add(flas_shard_writer *w, const int32_t *ids, size_t n, char *err, size_t errlen)
{
    const size_t cap = (size_t)WRITE_BUFFER_TOKENS * w->h.token_bytes;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= w->h.vocab_size)
            return flas_fail(err, errlen, "%s: token id %d outside the vocabulary of %u", w->path, ids[i],
                        w->h.vocab_size);
        if (w->buf_used == cap && flush_buffer(w, err, errlen) != 0)
            return -1;
        unsigned char *p = w->buf + w->buf_used;
        if (w->h.token_bytes == 2) {
            p[0] = (unsigned char)ids[i];
            p[1] = (unsigned char)(ids[i] >> 8);
        } else {
            put32(p, (uint32_t)ids[i]);
        }
        w->buf_used += w->h.token_bytes;
    }
    w->h.n_tokens += n;
    w->h.n_documents++;
    return 0;
}

uint64_t flas_shard_writer_tokens(const flas_shard_writer *w) { return w->h.n_tokens; }

static void writer_free(flas_shard_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    if (w->md) {
        unsigned char unused[FLAS_SHA256_BYTES];
        flas_sha256_end_raw(w->md, unused); /* the only way to free a context */
    }
    free(w->buf);
    free(w->path);
    free(w->tmp);
    free(w);
}

void flas_shard_writer_abort(flas_shard_writer *w)
{
    if (!w)
        return;
    if (w->tmp)
        unlink(w->tmp);
    writer_free(w);
}

int flas_shard_writer_commit(flas_shard_writer *w, flas_shard_header *out, char *err, size_t errlen)
{
    unsigned char head[FLAS_SHARD_HEADER_BYTES];
    if (w->h.n_tokens == 0) {
        flas_fail(err, errlen, "%s: no tokens to write", w->path);
        goto bad;
    }
    if (flush_buffer(w, err, errlen) != 0)
        goto bad;
    int sha_failed = flas_sha256_end_raw(w->md, w->h.payload_sha256) != 0;
    w->md = NULL;
    if (sha_failed) {
        flas_fail(err, errlen, "%s: SHA-256 failed", w->path);
        goto bad;
    }
    flas_shard_header_encode(&w->h, head);
    if (pwrite(w->fd, head, sizeof head, 0) != (ssize_t)sizeof head) {
        flas_fail(err, errlen, "%s: write: %s", w->tmp, strerror(errno));
        goto bad;
    }
    const int fd = w->fd;
    w->fd = -1; /* the commit closes it, also when it fails */
    if (flas_atomic_commit(fd, w->tmp, w->path, err, errlen) != 0)
        goto bad;
    if (out)
        *out = w->h;
    writer_free(w);
    return 0;
bad:
    flas_shard_writer_abort(w);
    return -1;
}

/* --- reader ------------------------------------------------------------------------------------ */

int flas_shard_open(flas_shard *s, const char *path, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return flas_fail(err, errlen, "%s: %s", path, strerror(errno));
    struct stat st;
    unsigned char head[FLAS_SHARD_HEADER_BYTES];
    char why[160];
    int rc = -1;
    if (fstat(fd, &st) != 0) {
        flas_fail(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (st.st_size < FLAS_SHARD_HEADER_BYTES || pread(fd, head, sizeof head, 0) != (ssize_t)sizeof head) {
        flas_fail(err, errlen, "%s: not a FLaS token shard (only %lld bytes)", path, (long long)st.st_size);
        goto out;
    }
    if (flas_shard_header_decode(head, &s->h, why, sizeof why) != 0) {
        flas_fail(err, errlen, "%s: %s", path, why);
        goto out;
    }
    const uint64_t expect = FLAS_SHARD_HEADER_BYTES + s->h.n_tokens * s->h.token_bytes;
    if ((uint64_t)st.st_size != expect) {
        flas_fail(err, errlen, "%s: %lld bytes but the header announces %llu tokens (%llu bytes): truncated "
             "or damaged", path, (long long)st.st_size, (unsigned long long)s->h.n_tokens,
             (unsigned long long)expect);
        goto out;
    }
    s->path = strdup(path);
    if (!s->path) {
        flas_fail(err, errlen, "%s: out of memory", path);
        goto out;
    }
    if (s->h.n_tokens > 0) {
        s->map_len = (size_t)st.st_size;
        s->map = mmap(NULL, s->map_len, PROT_READ, MAP_SHARED, fd, 0);
        if (s->map == MAP_FAILED) {
            s->map = NULL;
            flas_fail(err, errlen, "%s: mmap: %s", path, strerror(errno));
            free(s->path);
            s->path = NULL;
            goto out;
        }
        s->tokens = (const unsigned char *)s->map + FLAS_SHARD_HEADER_BYTES;
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

void flas_shard_close(flas_shard *s)
{
    if (s->map)
        munmap(s->map, s->map_len);
    free(s->path);
    memset(s, 0, sizeof *s);
}

int flas_shard_verify(const flas_shard *s, char *err, size_t errlen)
{
    unsigned char sha[FLAS_SHA256_BYTES];
    if (flas_sha256_raw(s->tokens ? s->tokens : (const unsigned char *)"", s->h.n_tokens * s->h.token_bytes, sha))
        return flas_fail(err, errlen, "%s: SHA-256 failed", s->path);
    if (memcmp(sha, s->h.payload_sha256, FLAS_SHA256_BYTES) != 0)
        return flas_fail(err, errlen, "%s: token bytes do not match the header's SHA-256: damaged", s->path);
    for (uint64_t i = 0; i < s->h.n_tokens; i++) {
        uint32_t t = flas_shard_token(s, i);
        if (t >= s->h.vocab_size)
            return flas_fail(err, errlen, "%s: token %llu is id %u, outside the vocabulary of %u", s->path,
                        (unsigned long long)i, t, s->h.vocab_size);
    }
    return 0;
}

/* --- listing ----------------------------------------------------------------------------------- */

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int push(char ***list, int *n, int *cap, char *item)
{
    if (!item)
        return -1;
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 16;
        char **p = realloc(*list, (size_t)c * sizeof *p);
        if (!p) {
            free(item);
            return -1;
        }
        *list = p;
        *cap = c;
    }
    (*list)[(*n)++] = item;
    return 0;
}

int flas_shard_list(const char *const *paths, int n_paths, char ***out, int *n_out, char *err,
                    size_t errlen)
{
    char **list = NULL;
    int n = 0, cap = 0;
    for (int i = 0; i < n_paths; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0) {
            flas_fail(err, errlen, "%s: %s", paths[i], strerror(errno));
            goto bad;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (!has_suffix(paths[i], FLAS_SHARD_SUFFIX)) {
                flas_fail(err, errlen, "%s: not a token shard (expected a *%s file or a directory of them)",
                     paths[i], FLAS_SHARD_SUFFIX);
                goto bad;
            }
            if (push(&list, &n, &cap, strdup(paths[i])) != 0)
                goto oom;
            continue;
        }
        DIR *d = opendir(paths[i]);
        if (!d) {
            flas_fail(err, errlen, "%s: %s", paths[i], strerror(errno));
            goto bad;
        }
        const int first = n;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            /* Hidden names are temporaries of writers in progress (or killed): never data. */
            if (e->d_name[0] == '.' || !has_suffix(e->d_name, FLAS_SHARD_SUFFIX))
                continue;
            char *p = NULL;
            if (asprintf(&p, "%s/%s", paths[i], e->d_name) < 0)
                p = NULL;
            if (push(&list, &n, &cap, p) != 0) {
                closedir(d);
                goto oom;
            }
        }
        closedir(d);
        if (n == first) {
            flas_fail(err, errlen, "%s: no *%s shards in this directory", paths[i], FLAS_SHARD_SUFFIX);
            goto bad;
        }
        qsort(list + first, (size_t)(n - first), sizeof *list, cmp_str);
    }
    if (n == 0) {
        flas_fail(err, errlen, "no shards given");
        goto bad;
    }
    *out = list;
    *n_out = n;
    return 0;
oom:
    flas_fail(err, errlen, "out of memory listing shards");
bad:
    flas_shard_list_free(list, n);
    return -1;
}

void flas_shard_list_free(char **list, int n)
{
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}
