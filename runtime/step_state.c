/* The "FLaS step state" file (see flas/step_state.h for the layout). Plain C99 + stdio, plus the POSIX
 * calls of the atomic write and of the regular-file check, so the GPU harness compiles it alone. */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64
#include "flas/step_state.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/atomic_file.h"
#include "flas/error.h"

#define H FLAS_STEP_STATE_HEADER_BYTES

/* ---- little-endian fields, whatever the host's byte order ---------------------------------------- */

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }
/* Through memcpy, not a cast: a u32 above INT32_MAX must become the negative i32 it encodes, which a
 * conversion only promises implementation-defined. */
static int32_t get_i32(const unsigned char *p)
{
    uint32_t u = get_u32(p);
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}
static float get_f32(const unsigned char *p)
{
    uint32_t u = get_u32(p);
    float v;
    memcpy(&v, &u, 4);
    return v;
}
static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}
static void put_i32(unsigned char *p, int32_t v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(p, u);
}
static void put_f32(unsigned char *p, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(p, u);
}

static int host_is_le(void)
{
    const uint32_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}

/* Arrays are copied as bytes; on a big-endian host every 4-byte word is then turned around. */
static void swap_words(void *a, size_t n)
{
    unsigned char *p = a, t;
    for (size_t i = 0; i < n; i++, p += 4) {
        t = p[0], p[0] = p[3], p[3] = t;
        t = p[1], p[1] = p[2], p[2] = t;
    }
}

/* ---- counts ---------------------------------------------------------------------------------------- */

/* Overflow-safe size arithmetic: once *ok is 0 the results are meaningless and callers refuse. */
static size_t mul(size_t a, size_t b, int *ok)
{
    if (b != 0 && a > SIZE_MAX / b)
        *ok = 0;
    return *ok ? a * b : 0;
}
static size_t add(size_t a, size_t b, int *ok)
{
    if (a > SIZE_MAX - b)
        *ok = 0;
    return *ok ? a + b : 0;
}

size_t flas_step_state_file_bytes(const flas_step_state *s)
{
    int ok = s->B >= 0 && s->T >= 0 && s->n_steps >= 0;
    size_t bt = mul((size_t)(s->B > 0 ? s->B : 0), (size_t)(s->T > 0 ? s->T : 0), &ok);
    size_t S = (size_t)(s->n_steps > 0 ? s->n_steps : 0);
    size_t words = mul(s->n_params, 2, &ok);                       /* params, grads */
    words = add(words, mul(bt, 2, &ok), &ok);                      /* tokens, targets */
    words = add(words, s->n_logits, &ok);
    words = add(words, mul(mul(S, bt, &ok), 2, &ok), &ok);         /* step tokens, targets */
    words = add(words, mul(S, 3, &ok), &ok);                       /* step lr, loss, norm */
    size_t bytes = add(H, mul(words, 4, &ok), &ok);
    return ok ? bytes : 0;
}

/* Everything that can be checked without the arrays: the same rules for the writer (never write a
 * file the reader refuses) and the reader (before allocating anything). */
static int check_counts(const flas_step_state *s, char *err, size_t errlen)
{
    char why[200];
    if (flas_config_validate(&s->cfg, 1, why, sizeof why))
        return flas_fail(err, errlen, "invalid model config: %s", why);
    if (s->B < 1 || s->B > FLAS_STEP_STATE_MAX_BATCH)
        return flas_fail(err, errlen, "batch size B %d is outside 1..%d", s->B, FLAS_STEP_STATE_MAX_BATCH);
    if (s->T < 1 || s->T > s->cfg.seq_len)
        return flas_fail(err, errlen, "sequence length T %d is outside 1..seq_len %d", s->T, s->cfg.seq_len);
    if (s->n_steps < 0 || s->n_steps > FLAS_STEP_STATE_MAX_STEPS)
        return flas_fail(err, errlen, "step count %d is outside 0..%d", s->n_steps, FLAS_STEP_STATE_MAX_STEPS);
    flas_param_table t;
    if (flas_param_table_init(&t, &s->cfg, 0, 1, why, sizeof why))
        return flas_fail(err, errlen, "invalid model config: %s", why);
    size_t want = t.n_params;
    flas_param_table_free(&t);
    if (s->n_params != want)
        return flas_fail(err, errlen, "n_params %zu does not match the config's %zu parameters", s->n_params, want);
    int ok = 1;
    size_t logits = mul(mul((size_t)s->B, (size_t)s->T, &ok), (size_t)s->cfg.vocab_size, &ok);
    if (s->n_logits != 0 && (!ok || s->n_logits != logits))
        return flas_fail(err, errlen, "n_logits %zu is neither 0 nor B*T*vocab_size", s->n_logits);
    if (s->n_steps > 0) {
        const flas_step_adamw *a = &s->adamw;
        if (!(a->beta1 >= 0.0f && a->beta1 < 1.0f) || !(a->beta2 >= 0.0f && a->beta2 < 1.0f))
            return flas_fail(err, errlen, "AdamW betas %g, %g are outside [0, 1)", (double)a->beta1, (double)a->beta2);
        if (!(a->eps > 0.0f) || !isfinite(a->eps))
            return flas_fail(err, errlen, "AdamW eps %g is not finite and positive", (double)a->eps);
        if (!(a->weight_decay >= 0.0f) || !isfinite(a->weight_decay))
            return flas_fail(err, errlen, "AdamW weight decay %g is not finite and >= 0", (double)a->weight_decay);
        if (isnan(a->clip) || isinf(a->clip))
            return flas_fail(err, errlen, "clip %g is not finite", (double)a->clip);
    }
    if (flas_step_state_file_bytes(s) == 0)
        return flas_fail(err, errlen, "the state's size overflows");
    return 0;
}

/* Tokens index the embedding rows and the logits: out of range, a GPU kernel would read or write
 * outside its buffers. */
static int check_tokens(const char *what, const int32_t *v, size_t n, int vocab, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0 || v[i] >= vocab)
            return flas_fail(err, errlen, "%s[%zu] = %d is outside the vocabulary 0..%d", what, i, (int)v[i], vocab - 1);
    return 0;
}

static int check_arrays(const flas_step_state *s, char *err, size_t errlen)
{
    size_t bt = (size_t)s->B * (size_t)s->T, sbt = bt * (size_t)s->n_steps;
    if (check_tokens("tokens", s->tokens, bt, s->cfg.vocab_size, err, errlen) ||
        check_tokens("targets", s->targets, bt, s->cfg.vocab_size, err, errlen) ||
        check_tokens("step_tokens", s->step_tokens, sbt, s->cfg.vocab_size, err, errlen) ||
        check_tokens("step_targets", s->step_targets, sbt, s->cfg.vocab_size, err, errlen))
        return -1;
    for (int i = 0; i < s->n_steps; i++)
        if (!isfinite(s->step_lr[i]) || s->step_lr[i] < 0.0f)
            return flas_fail(err, errlen, "step_lr[%d] = %g is not finite and >= 0", i, (double)s->step_lr[i]);
    return 0;
}

/* ---- header ---------------------------------------------------------------------------------------- */

static void encode_header(const flas_step_state *s, unsigned char *h)
{
    memset(h, 0, H);
    memcpy(h, FLAS_STEP_STATE_MAGIC, 8);
    put_u32(h + 8, FLAS_STEP_STATE_VERSION);
    put_u32(h + 12, s->reference ? FLAS_STEP_STATE_FLAG_REFERENCE : 0);
    const flas_config *c = &s->cfg;
    put_i32(h + 16, c->dim);
    put_i32(h + 20, c->n_layers);
    put_i32(h + 24, c->n_heads);
    put_i32(h + 28, c->n_kv_heads);
    put_i32(h + 32, c->hidden_dim);
    put_i32(h + 36, c->vocab_size);
    put_i32(h + 40, c->seq_len);
    put_f32(h + 44, c->norm_eps);
    put_f32(h + 48, c->rope_theta);
    put_i32(h + 52, c->tied_embeddings);
    put_i32(h + 56, s->B);
    put_i32(h + 60, s->T);
    put_u64(h + 64, (uint64_t)s->n_params);
    put_u64(h + 72, s->seed);
    put_u64(h + 80, (uint64_t)s->n_logits);
    put_i32(h + 88, s->n_steps);
    put_f32(h + 92, s->loss);
    const flas_step_adamw *a = &s->adamw;
    put_f32(h + 96, a->lr_max);
    put_f32(h + 100, a->lr_min);
    put_i32(h + 104, a->warmup);
    put_i32(h + 108, a->decay);
    put_f32(h + 112, a->beta1);
    put_f32(h + 116, a->beta2);
    put_f32(h + 120, a->eps);
    put_f32(h + 124, a->weight_decay);
    put_f32(h + 128, a->clip);
}

static int decode_header(const unsigned char *h, flas_step_state *s, char *err, size_t errlen)
{
    if (memcmp(h, FLAS_STEP_STATE_MAGIC, 8) != 0)
        return flas_fail(err, errlen, "not a FLaS step state (bad magic)");
    uint32_t version = get_u32(h + 8), flags = get_u32(h + 12);
    if (version != FLAS_STEP_STATE_VERSION)
        return flas_fail(err, errlen, "step state version %u is not the supported %u", (unsigned)version,
                         (unsigned)FLAS_STEP_STATE_VERSION);
    if (flags & ~FLAS_STEP_STATE_FLAG_REFERENCE)
        return flas_fail(err, errlen, "unknown flags 0x%x", (unsigned)flags);
    if (get_u32(h + 132) != 0)
        return flas_fail(err, errlen, "reserved header field is not 0");
    s->reference = (flags & FLAS_STEP_STATE_FLAG_REFERENCE) != 0;
    flas_config *c = &s->cfg;
    c->dim = get_i32(h + 16);
    c->n_layers = get_i32(h + 20);
    c->n_heads = get_i32(h + 24);
    c->n_kv_heads = get_i32(h + 28);
    c->hidden_dim = get_i32(h + 32);
    c->vocab_size = get_i32(h + 36);
    c->seq_len = get_i32(h + 40);
    c->norm_eps = get_f32(h + 44);
    c->rope_theta = get_f32(h + 48);
    c->tied_embeddings = get_i32(h + 52);
    s->B = get_i32(h + 56);
    s->T = get_i32(h + 60);
    uint64_t n_params = get_u64(h + 64), n_logits = get_u64(h + 80);
    if (n_params > SIZE_MAX || n_logits > SIZE_MAX)
        return flas_fail(err, errlen, "counts do not fit this host's size_t");
    s->n_params = (size_t)n_params;
    s->seed = get_u64(h + 72);
    s->n_logits = (size_t)n_logits;
    s->n_steps = get_i32(h + 88);
    s->loss = get_f32(h + 92);
    flas_step_adamw *a = &s->adamw;
    a->lr_max = get_f32(h + 96);
    a->lr_min = get_f32(h + 100);
    a->warmup = get_i32(h + 104);
    a->decay = get_i32(h + 108);
    a->beta1 = get_f32(h + 112);
    a->beta2 = get_f32(h + 116);
    a->eps = get_f32(h + 120);
    a->weight_decay = get_f32(h + 124);
    a->clip = get_f32(h + 128);
    return check_counts(s, err, errlen);
}

/* ---- reading ---------------------------------------------------------------------------------------- */

/* Where the bytes come from: a FILE (whose length was checked) or a buffer. */
typedef struct {
    FILE *f;
    const unsigned char *buf;
    size_t len, pos;
} source;

static int source_get(source *src, void *dst, size_t n)
{
    if (n == 0)
        return 0;
    if (src->f)
        return fread(dst, 1, n, src->f) == n ? 0 : -1;
    if (n > src->len - src->pos)
        return -1;
    memcpy(dst, src->buf + src->pos, n);
    src->pos += n;
    return 0;
}

/* n 4-byte words into a new array: NULL when n is 0 or on failure (*failed set, err written). Once
 * *failed is set later calls do nothing, so a run of them needs one check at the end. */
static void *get_words(source *src, size_t n, const char *what, int *failed, char *err, size_t errlen)
{
    if (n == 0 || *failed)
        return NULL;
    void *p = malloc(n * 4); /* n * 4 <= the checked file length */
    if (!p) {
        *failed = flas_fail(err, errlen, "out of memory for %s (%zu bytes)", what, n * 4);
        return NULL;
    }
    if (source_get(src, p, n * 4)) {
        *failed = flas_fail(err, errlen, "short read in %s (the file changed while it was read?)", what);
        free(p);
        return NULL;
    }
    if (!host_is_le())
        swap_words(p, n);
    return p;
}

static int parse(source *src, size_t len, flas_step_state *s, char *err, size_t errlen)
{
    unsigned char h[H];
    memset(s, 0, sizeof *s);
    if (len < H)
        return flas_fail(err, errlen, "truncated: %zu bytes, the header alone has %d", len, H);
    if (source_get(src, h, H))
        return flas_fail(err, errlen, "short read in the header");
    if (decode_header(h, s, err, errlen))
        goto fail;
    size_t want = flas_step_state_file_bytes(s);
    if (len != want) {
        flas_fail(err, errlen, "%s: %zu bytes where the header describes %zu", len < want ? "truncated" : "trailing bytes",
                  len, want);
        goto fail;
    }
    size_t bt = (size_t)s->B * (size_t)s->T, S = (size_t)s->n_steps;
    int failed = 0;
    s->params = get_words(src, s->n_params, "params", &failed, err, errlen);
    s->tokens = get_words(src, bt, "tokens", &failed, err, errlen);
    s->targets = get_words(src, bt, "targets", &failed, err, errlen);
    s->grads = get_words(src, s->n_params, "grads", &failed, err, errlen);
    s->logits = get_words(src, s->n_logits, "logits", &failed, err, errlen);
    s->step_tokens = get_words(src, S * bt, "step_tokens", &failed, err, errlen);
    s->step_targets = get_words(src, S * bt, "step_targets", &failed, err, errlen);
    s->step_lr = get_words(src, S, "step_lr", &failed, err, errlen);
    s->step_loss = get_words(src, S, "step_loss", &failed, err, errlen);
    s->step_norm = get_words(src, S, "step_norm", &failed, err, errlen);
    if (failed || check_arrays(s, err, errlen))
        goto fail;
    return 0;
fail:
    flas_step_state_free(s);
    return -1;
}

int flas_step_state_parse(const void *buf, size_t len, flas_step_state *s, char *err, size_t errlen)
{
    source src = {NULL, buf, len, 0};
    return parse(&src, len, s, err, errlen);
}

int flas_step_state_read(const char *path, flas_step_state *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    /* O_NONBLOCK: a FIFO in path's place must not hang the open; it is refused just below. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return flas_fail(err, errlen, "%s: %s", path, strerror(errno));
    /* The length bounds every allocation: a header may claim anything, the file cannot. */
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0) {
        close(fd);
        return flas_fail(err, errlen, "%s: not a regular file", path);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return flas_fail(err, errlen, "%s: %s", path, strerror(errno));
    }
    if ((uintmax_t)st.st_size > SIZE_MAX) {
        fclose(f);
        return flas_fail(err, errlen, "%s: too large for this host", path);
    }
    source src = {f, NULL, 0, 0};
    char why[256];
    int rc = parse(&src, (size_t)st.st_size, s, why, sizeof why);
    fclose(f);
    if (rc)
        flas_fail(err, errlen, "%s: %s", path, why);
    return rc;
}

void flas_step_state_free(flas_step_state *s)
{
    free(s->params);
    free(s->tokens);
    free(s->targets);
    free(s->grads);
    free(s->logits);
    free(s->step_tokens);
    free(s->step_targets);
    free(s->step_lr);
    free(s->step_loss);
    free(s->step_norm);
    memset(s, 0, sizeof *s);
}

/* ---- writing ---------------------------------------------------------------------------------------- */

/* Buffered little-endian output to a descriptor: one write per MiB, not per word. */
typedef struct {
    int fd, failed;
    size_t used;
    unsigned char buf[1 << 20];
} sink;

static void sink_flush(sink *k)
{
    if (!k->failed && k->used && flas_atomic_write_all(k->fd, k->buf, k->used) != 0)
        k->failed = errno ? errno : EIO;
    k->used = 0;
}

static void sink_put(sink *k, const void *p, size_t n)
{
    const unsigned char *c = p;
    while (n > 0 && !k->failed) {
        size_t room = sizeof k->buf - k->used, m = n < room ? n : room;
        memcpy(k->buf + k->used, c, m);
        k->used += m;
        c += m;
        n -= m;
        if (k->used == sizeof k->buf)
            sink_flush(k);
    }
}

/* n 4-byte words, turned little-endian on a big-endian host (in the sink's buffer, not the caller's). */
static void sink_words(sink *k, const void *p, size_t n)
{
    if (host_is_le()) {
        sink_put(k, p, n * 4);
        return;
    }
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++, c += 4) {
        unsigned char w[4] = {c[3], c[2], c[1], c[0]};
        sink_put(k, w, 4);
    }
}

int flas_step_state_write(const char *path, const flas_step_state *s, char *err, size_t errlen)
{
    size_t bt = 0, S = 0;
    if (check_counts(s, err, errlen))
        return -1;
    bt = (size_t)s->B * (size_t)s->T;
    S = (size_t)s->n_steps;
    if (!s->params || !s->grads || !s->tokens || !s->targets || (s->n_logits && !s->logits) ||
        (S && (!s->step_tokens || !s->step_targets || !s->step_lr || !s->step_loss || !s->step_norm)))
        return flas_fail(err, errlen, "step state to write lacks an array");
    if (check_arrays(s, err, errlen))
        return -1;
    sink *k = malloc(sizeof *k);
    if (!k)
        return flas_fail(err, errlen, "out of memory");
    char *tmp = NULL;
    int fd = flas_atomic_create(path, &tmp, err, errlen);
    if (fd < 0) {
        free(k);
        return -1;
    }
    k->fd = fd;
    k->failed = 0;
    k->used = 0;
    unsigned char h[H];
    encode_header(s, h);
    sink_put(k, h, H);
    sink_words(k, s->params, s->n_params);
    sink_words(k, s->tokens, bt);
    sink_words(k, s->targets, bt);
    sink_words(k, s->grads, s->n_params);
    sink_words(k, s->logits, s->n_logits);
    sink_words(k, s->step_tokens, S * bt);
    sink_words(k, s->step_targets, S * bt);
    sink_words(k, s->step_lr, S);
    sink_words(k, s->step_loss, S);
    sink_words(k, s->step_norm, S);
    sink_flush(k);
    int rc;
    if (k->failed) {
        rc = flas_fail(err, errlen, "%s: write: %s", tmp, strerror(k->failed));
        close(fd);
        unlink(tmp);
    } else {
        rc = flas_atomic_commit(fd, tmp, path, err, errlen);
    }
    free(tmp);
    free(k);
    return rc;
}
