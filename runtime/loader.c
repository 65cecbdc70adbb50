/* The trainer's data loader (see include/flas/loader.h for the windowing and sharing rules). */
#include "flas/error.h"
#include "flas/loader.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/shards.h"

struct flas_loader {
    flas_loader_opts o;
    flas_shard *shards;
    int n_shards;
    uint64_t *starts;   /* [n_shards + 1]: stream offset of each shard's first token */
    uint64_t n_tokens, n_windows, n_documents, fingerprint;
    uint64_t epoch, position;
    int32_t *row;       /* [seq_len + 1]: one window and the token after it */
    unsigned char tokenizer_sha256[FLAS_SHA256_BYTES];
};

/* splitmix64's finaliser: a cheap, well-mixed 64-bit hash. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint64_t flas_loader_permute(uint64_t index, uint64_t n_windows, uint64_t seed, uint64_t epoch)
{
    if (n_windows <= 1)
        return index;
    /* A 4-round balanced Feistel network is a bijection of [0, 4^half) >= n_windows; walking the
     * cycle until the value falls below n_windows restricts it to a bijection of [0, n_windows)
     * (fewer than 4 steps on average, as 4^half < 4 * n_windows). */
    const int bits = 64 - __builtin_clzll(n_windows - 1);
    const int half = (bits + 1) / 2;
    const uint64_t mask = half == 64 ? ~0ull : (1ull << half) - 1;
    const uint64_t key = mix64(seed ^ mix64(epoch));
    uint64_t x = index;
    do {
        uint64_t left = x >> half, right = x & mask;
        for (uint64_t round = 0; round < 4; round++) {
            uint64_t f = mix64(right ^ mix64(key + round)) & mask;
            uint64_t next_right = left ^ f;
            left = right;
            right = next_right;
        }
        x = left << half | right;
    } while (x >= n_windows);
    return x;
}

void flas_loader_close(flas_loader *l)
{
    if (!l)
        return;
    for (int i = 0; i < l->n_shards; i++)
        flas_shard_close(&l->shards[i]);
    free(l->shards);
    free(l->starts);
    free(l->row);
    free(l);
}

/* A hash of what the shards hold, so a saved cursor is only applied to the same data. */
static int fingerprint(flas_loader *l, char *err, size_t errlen)
{
    flas_sha256_ctx *md = flas_sha256_begin();
    unsigned char sha[FLAS_SHA256_BYTES];
    int ok = md != NULL;
    for (int i = 0; ok && i < l->n_shards; i++) {
        unsigned char count[8];
        for (int b = 0; b < 8; b++)
            count[b] = (unsigned char)(l->shards[i].h.n_tokens >> (8 * b));
        ok = flas_sha256_update(md, l->shards[i].h.payload_sha256, FLAS_SHA256_BYTES) == 0 &&
             flas_sha256_update(md, count, sizeof count) == 0;
    }
    ok = md && flas_sha256_end_raw(md, sha) == 0 && ok; /* frees md in every case */
    if (!ok)
        return flas_fail(err, errlen, "SHA-256 failed");
    l->fingerprint = 0;
    for (int b = 0; b < 8; b++)
        l->fingerprint |= (uint64_t)sha[b] << (8 * b);
    return 0;
}

static int check_shard(flas_loader *l, const flas_shard *s, char *err, size_t errlen)
{
    char want[2 * FLAS_SHA256_BYTES + 1], got[2 * FLAS_SHA256_BYTES + 1];
    if (s->h.vocab_size != (uint32_t)l->o.vocab_size)
        return flas_fail(err, errlen, "%s: shard vocabulary has %u tokens but the model's vocab_size is %d: "
                    "tokenized with another tokenizer", s->path, s->h.vocab_size, l->o.vocab_size);
    if (memcmp(s->h.tokenizer_sha256, l->tokenizer_sha256, FLAS_SHA256_BYTES) != 0) {
        flas_sha256_hex(l->tokenizer_sha256, want);
        flas_sha256_hex(s->h.tokenizer_sha256, got);
        return flas_fail(err, errlen, "%s: tokenized with tokenizer sha256 %.16s..., expected %.16s... (%s)",
                    s->path, got, want, l->o.tokenizer_sha256 ? "the model's tokenizer" : "as the first shard");
    }
    return 0;
}

flas_loader *flas_loader_open(const char *const *paths, int n_paths, const flas_loader_opts *o,
                              char *err, size_t errlen)
{
    if (o->seq_len <= 0 || o->batch <= 0 || o->dp_size <= 0 || o->dp_rank < 0 ||
        o->dp_rank >= o->dp_size || o->vocab_size <= 0) {
        flas_fail(err, errlen, "loader: need seq_len, batch, dp_size, vocab_size > 0 and 0 <= dp_rank < "
             "dp_size (got %d, %d, %d, %d, %d)", o->seq_len, o->batch, o->dp_size, o->vocab_size, o->dp_rank);
        return NULL;
    }
    char **list = NULL;
    int n = 0;
    if (flas_shard_list(paths, n_paths, &list, &n, err, errlen) != 0)
        return NULL;
    flas_loader *l = calloc(1, sizeof *l);
    if (!l || !(l->shards = calloc((size_t)n, sizeof *l->shards)) ||
        !(l->starts = calloc((size_t)n + 1, sizeof *l->starts)) ||
        !(l->row = malloc(((size_t)o->seq_len + 1) * sizeof *l->row))) {
        flas_fail(err, errlen, "loader: out of memory");
        goto bad;
    }
    l->o = *o;
    for (int i = 0; i < n; i++) {
        if (flas_shard_open(&l->shards[i], list[i], err, errlen) != 0)
            goto bad;
        l->n_shards = i + 1;
        if (i == 0)
            memcpy(l->tokenizer_sha256, o->tokenizer_sha256 ? o->tokenizer_sha256 : l->shards[0].h.tokenizer_sha256,
                   FLAS_SHA256_BYTES);
        if (check_shard(l, &l->shards[i], err, errlen) != 0)
            goto bad;
        l->starts[i + 1] = l->starts[i] + l->shards[i].h.n_tokens;
        l->n_documents += l->shards[i].h.n_documents;
    }
    l->n_tokens = l->starts[n];
    l->n_windows = l->n_tokens > 0 ? (l->n_tokens - 1) / (uint64_t)o->seq_len : 0;
    const uint64_t per_step = (uint64_t)o->batch * (uint64_t)o->dp_size;
    if (l->n_windows < per_step) {
        flas_fail(err, errlen, "%s%s: %llu tokens make %llu windows of seq_len %d, fewer than one step needs "
             "(batch %d x %d ranks)", list[0], n > 1 ? " ..." : "", (unsigned long long)l->n_tokens,
             (unsigned long long)l->n_windows, o->seq_len, o->batch, o->dp_size);
        goto bad;
    }
    if (fingerprint(l, err, errlen) != 0)
        goto bad;
    l->o.tokenizer_sha256 = NULL; /* the caller's buffer: its bytes were copied above */
    flas_shard_list_free(list, n);
    return l;
bad:
    flas_shard_list_free(list, n);
    flas_loader_close(l);
    return NULL;
}

flas_loader *flas_loader_open_validation(const char *const *paths, int n_paths, int seq_len,
                                         int batch, int dp_rank, int dp_size, int vocab_size,
                                         const unsigned char *tokenizer_sha256, char *err,
                                         size_t errlen)
{
    flas_loader_opts o = {.seq_len = seq_len, .batch = batch, .dp_rank = dp_rank, .dp_size = dp_size,
                          .seed = 0, .shuffle = 0, .single_pass = 1, .vocab_size = vocab_size,
                          .tokenizer_sha256 = tokenizer_sha256};
    return flas_loader_open(paths, n_paths, &o, err, errlen);
}

/* Copies stream tokens [pos, pos + count) into dst, checking each against the vocabulary. */
static int read_stream(const flas_loader *l, uint64_t pos, size_t count, int32_t *dst, char *err,
                       size_t errlen)
{
    int lo = 0, hi = l->n_shards - 1; /* the last shard whose start is <= pos */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (l->starts[mid] <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    for (int i = lo; count > 0 && i < l->n_shards; i++) {
        const flas_shard *s = &l->shards[i];
        if (pos >= l->starts[i + 1])
            continue; /* an empty shard */
        uint64_t at = pos - l->starts[i];
        size_t take = (size_t)(s->h.n_tokens - at) < count ? (size_t)(s->h.n_tokens - at) : count;
        for (size_t k = 0; k < take; k++) {
            uint32_t t = flas_shard_token(s, at + k);
            if (t >= (uint32_t)l->o.vocab_size)
                return flas_fail(err, errlen, "%s: token %llu is id %u, outside the vocabulary of %d: damaged shard",
                            s->path, (unsigned long long)(at + k), t, l->o.vocab_size);
            dst[k] = (int32_t)t;
        }
        dst += take;
        pos += take;
        count -= take;
    }
    return count == 0 ? 0 : flas_fail(err, errlen, "loader: read past the end of the stream");
}

int flas_loader_next(flas_loader *l, int32_t *tokens, int32_t *targets, char *err, size_t errlen)
{
    const uint64_t B = (uint64_t)l->o.batch, T = (uint64_t)l->o.seq_len;
    const uint64_t per_step = B * (uint64_t)l->o.dp_size;
    if (l->position + per_step > l->n_windows) {
        if (l->o.single_pass)
            return 0;
        l->epoch++;
        l->position = 0;
    }
    for (uint64_t b = 0; b < B; b++) {
        uint64_t index = l->position + (uint64_t)l->o.dp_rank * B + b;
        uint64_t w = l->o.shuffle ? flas_loader_permute(index, l->n_windows, l->o.seed, l->epoch) : index;
        if (read_stream(l, w * T, (size_t)T + 1, l->row, err, errlen) != 0)
            return -1;
        memcpy(tokens + b * T, l->row, T * sizeof *tokens);
        memcpy(targets + b * T, l->row + 1, T * sizeof *targets);
    }
    l->position += per_step;
    return 1;
}

void flas_loader_rewind(flas_loader *l) { l->position = 0; }

void flas_loader_get_cursor(const flas_loader *l, flas_loader_cursor *c)
{
    *c = (flas_loader_cursor){
        .version = FLAS_LOADER_CURSOR_VERSION,
        .seed = l->o.seed,
        .shuffle = (uint64_t)(l->o.shuffle != 0),
        .seq_len = (uint64_t)l->o.seq_len,
        .n_tokens = l->n_tokens,
        .fingerprint = l->fingerprint,
        .epoch = l->epoch,
        .position = l->position,
    };
}

int flas_loader_set_cursor(flas_loader *l, const flas_loader_cursor *c, char *err, size_t errlen)
{
    flas_loader_cursor mine;
    flas_loader_get_cursor(l, &mine);
    if (c->version != FLAS_LOADER_CURSOR_VERSION)
        return flas_fail(err, errlen, "data cursor version %llu, this FLaS writes version %d",
                    (unsigned long long)c->version, FLAS_LOADER_CURSOR_VERSION);
    if (c->n_tokens != mine.n_tokens || c->fingerprint != mine.fingerprint)
        return flas_fail(err, errlen, "data cursor was saved for other data (%llu tokens, fingerprint %016llx; "
                    "these shards: %llu tokens, %016llx)", (unsigned long long)c->n_tokens,
                    (unsigned long long)c->fingerprint, (unsigned long long)mine.n_tokens,
                    (unsigned long long)mine.fingerprint);
    if (c->seq_len != mine.seq_len)
        return flas_fail(err, errlen, "data cursor was saved with seq_len %llu, the loader has %llu",
                    (unsigned long long)c->seq_len, (unsigned long long)mine.seq_len);
    if (c->seed != mine.seed || c->shuffle != mine.shuffle)
        return flas_fail(err, errlen, "data cursor was saved with seed %llu shuffle %llu, the loader has seed "
                    "%llu shuffle %llu", (unsigned long long)c->seed, (unsigned long long)c->shuffle,
                    (unsigned long long)mine.seed, (unsigned long long)mine.shuffle);
    if (c->position > l->n_windows)
        return flas_fail(err, errlen, "data cursor position %llu is beyond the %llu windows",
                    (unsigned long long)c->position, (unsigned long long)l->n_windows);
    l->epoch = c->epoch;
    l->position = c->position;
    return 0;
}

void flas_loader_cursor_to_words(const flas_loader_cursor *c, uint64_t w[FLAS_LOADER_CURSOR_WORDS])
{
    const uint64_t v[FLAS_LOADER_CURSOR_WORDS] = {c->version, c->seed, c->shuffle, c->seq_len,
                                                  c->n_tokens, c->fingerprint, c->epoch, c->position};
    memcpy(w, v, sizeof v);
}

void flas_loader_cursor_from_words(const uint64_t w[FLAS_LOADER_CURSOR_WORDS], flas_loader_cursor *c)
{
    *c = (flas_loader_cursor){w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]};
}

uint64_t flas_loader_n_tokens(const flas_loader *l) { return l->n_tokens; }
uint64_t flas_loader_n_windows(const flas_loader *l) { return l->n_windows; }
uint64_t flas_loader_steps_per_epoch(const flas_loader *l)
{
    return l->n_windows / ((uint64_t)l->o.batch * (uint64_t)l->o.dp_size);
}
int flas_loader_n_shards(const flas_loader *l) { return l->n_shards; }
uint64_t flas_loader_n_documents(const flas_loader *l) { return l->n_documents; }
