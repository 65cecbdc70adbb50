/* GGUF v3, architecture "llama" (llama.cpp's ggml/docs/gguf.md), all little-endian:
 *   "GGUF", u32 version 3, u64 tensor count, u64 key/value count,
 *   key/values: string key, u32 value type, value (strings are u64 length + bytes, arrays are u32 element
 *   type + u64 count + elements), tensor infos: string name, u32 n_dims, u64 dims[n_dims] (innermost
 *   first: a [rows, cols] matrix is ne = {cols, rows}), u32 ggml type, u64 offset in the data section,
 *   then padding to general.alignment (32 by default) and the data, each tensor aligned.
 * Tensors hold Meta's interleaved RoPE rows (llama.cpp's converter un-permutes Hugging Face's q/k).
 * Names: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
 * ffn_down, ffn_up}, output_norm, output (absent when the head is tied), each ".weight".
 * Export writes F32, F16, BF16 or Q8_0 (norms stay F32, as llama.cpp's own converter keeps them;
 * Q8_0 needs rows that are a multiple of 32, other matrices stay F16) and embeds the SentencePiece
 * vocabulary. Import reads F32, F16 and BF16. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/error.h"
#include "flas/tokenizer.h"
#include "interop_internal.h"

#define GGUF_VERSION 3
#define GGUF_ALIGN 32
#define GGUF_MAX_ALIGN ((uint64_t)1 << 20)
#define GGUF_MAX_KEY 65535
#define GGUF_MAX_NAME 64        /* ggml's GGML_MAX_NAME, NUL included */
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_KVS ((uint64_t)1 << 16)   /* key/values: llama.cpp's files have about 30 */

enum { GT_U8 = 0, GT_I8, GT_U16, GT_I16, GT_U32, GT_I32, GT_F32, GT_BOOL, GT_STRING, GT_ARRAY, GT_U64, GT_I64, GT_F64 };
enum { GG_F32 = 0, GG_F16 = 1, GG_Q8_0 = 8, GG_BF16 = 30 };
enum { FT_ALL_F32 = 0, FT_MOSTLY_F16 = 1, FT_MOSTLY_Q8_0 = 7, FT_MOSTLY_BF16 = 32 };

static void gguf_name(const flas_tensor *t, char *out, size_t n)
{
    static const char *const block[FLAS_T_KIND_COUNT] = {
        [FLAS_T_ATTENTION_NORM] = "attn_norm", [FLAS_T_WQ] = "attn_q",     [FLAS_T_WK] = "attn_k",
        [FLAS_T_WV] = "attn_v",                [FLAS_T_WO] = "attn_output", [FLAS_T_FFN_NORM] = "ffn_norm",
        [FLAS_T_W1] = "ffn_gate",              [FLAS_T_W2] = "ffn_down",   [FLAS_T_W3] = "ffn_up"};
    switch (t->kind) {
    case FLAS_T_TOK_EMBEDDINGS: snprintf(out, n, "token_embd.weight"); break;
    case FLAS_T_NORM: snprintf(out, n, "output_norm.weight"); break;
    case FLAS_T_OUTPUT: snprintf(out, n, "output.weight"); break;
    default: snprintf(out, n, "blk.%d.%s.weight", t->layer, block[t->kind]); break;
    }
}

/* Bytes of n elements of a ggml type (n a multiple of the block). */
static uint64_t type_bytes(uint32_t type, uint64_t n)
{
    switch (type) {
    case GG_F32: return 4 * n;
    case GG_F16:
    case GG_BF16: return 2 * n;
    case GG_Q8_0: return n / FLAS_Q8_0_BLOCK * FLAS_Q8_0_BYTES;
    default: return 0;
    }
}

/* ggml type names for messages: the ones a file may plausibly hold. */
static const char *type_name(uint32_t t)
{
    static const char *const N[] = {"F32", "F16", "Q4_0", "Q4_1", "?", "?", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
                                    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"};
    if (t < sizeof N / sizeof *N)
        return N[t];
    return t == GG_BF16 ? "BF16" : "?";
}

/* ---- reading ---------------------------------------------------------------------------------- */

typedef struct gg_cursor {
    ix_file *f;
    uint64_t pos;
    char *err;
    size_t errlen;
} gg_cursor;

static int rd(gg_cursor *c, void *p, size_t n)
{
    if (ix_file_read(c->f, c->pos, p, n, c->err, c->errlen))
        return -1;
    c->pos += n;
    return 0;
}

static int rd_u32(gg_cursor *c, uint32_t *v)
{
    unsigned char b[4];
    if (rd(c, b, 4))
        return -1;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

static int rd_u64(gg_cursor *c, uint64_t *v)
{
    unsigned char b[8];
    if (rd(c, b, 8))
        return -1;
    *v = 0;
    for (int i = 7; i >= 0; i--)
        *v = *v << 8 | b[i];
    return 0;
}

/* A string into out (NUL-terminated, at most cap - 1 bytes; longer ones are refused). */
static int rd_str(gg_cursor *c, char *out, size_t cap, const char *what)
{
    uint64_t n;
    if (rd_u64(c, &n))
        return -1;
    if (n >= cap || n > c->f->size - c->pos)
        return flas_fail(c->err, c->errlen, "%s: GGUF %s of %llu bytes at byte %llu (%s)", c->f->path, what,
                         (unsigned long long)n, (unsigned long long)c->pos,
                         n > c->f->size - c->pos ? "past the end of the file" : "too long");
    if (rd(c, out, (size_t)n))
        return -1;
    out[n] = '\0';
    return 0;
}

static int skip_str(gg_cursor *c)
{
    uint64_t n;
    if (rd_u64(c, &n))
        return -1;
    if (n > c->f->size - c->pos)
        return flas_fail(c->err, c->errlen, "%s: GGUF string of %llu bytes at byte %llu runs past the end of the file",
                         c->f->path, (unsigned long long)n, (unsigned long long)c->pos);
    c->pos += n;
    return 0;
}

static uint64_t scalar_size(uint32_t t)
{
    switch (t) {
    case GT_U8: case GT_I8: case GT_BOOL: return 1;
    case GT_U16: case GT_I16: return 2;
    case GT_U32: case GT_I32: case GT_F32: return 4;
    case GT_U64: case GT_I64: case GT_F64: return 8;
    default: return 0;
    }
}

/* A scalar value as a number (integers exactly up to 2^53, which is plenty for a config). */
static int rd_scalar(gg_cursor *c, uint32_t t, double *v, int *is_int)
{
    unsigned char b[8] = {0};
    uint64_t n = scalar_size(t), u = 0;
    if (rd(c, b, (size_t)n))
        return -1;
    for (int i = (int)n - 1; i >= 0; i--)
        u = u << 8 | b[i];
    *is_int = 1;
    switch (t) {
    case GT_I8: *v = (int8_t)u; break;
    case GT_I16: *v = (int16_t)u; break;
    case GT_I32: *v = (int32_t)u; break;
    case GT_I64: *v = (double)(int64_t)u; break;
    case GT_F32: {
        uint32_t w = (uint32_t)u;
        float f;
        memcpy(&f, &w, 4);
        *v = f;
        *is_int = 0;
        break;
    }
    case GT_F64: memcpy(v, &u, 8); *is_int = 0; break;
    default: *v = (double)u; break;
    }
    return 0;
}

typedef struct gg_tensor {
    char name[GGUF_MAX_NAME];
    uint32_t n_dims, type;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t offset, bytes; /* offset from the data section, then absolute */
} gg_tensor;

typedef struct gg_src {
    ix_source base;
    ix_file f;
    gg_tensor *t;
    uint64_t n_t;
} gg_src;

/* The config keys, as read (NaN: absent). */
enum { K_CTX, K_EMB, K_BLOCKS, K_FFN, K_HEADS, K_KV_HEADS, K_EPS, K_THETA, K_ROPE_DIM, K_N };
static const char *const KEYS[K_N] = {"llama.context_length", "llama.embedding_length", "llama.block_count",
                                      "llama.feed_forward_length", "llama.attention.head_count",
                                      "llama.attention.head_count_kv", "llama.attention.layer_norm_rms_epsilon",
                                      "llama.rope.freq_base", "llama.rope.dimension_count"};

static int by_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* llama.cpp refuses a file that names a key twice (which value would count?): so does this reader. */
static int unique_keys(gg_cursor *c, char **keys, uint64_t n)
{
    qsort(keys, n, sizeof *keys, by_str);
    for (uint64_t i = 1; i < n; i++)
        if (!strcmp(keys[i], keys[i - 1]))
            return flas_fail(c->err, c->errlen, "%s: GGUF key %.100s appears twice", c->f->path, keys[i]);
    return 0;
}

static int read_kvs_into(gg_cursor *c, uint64_t n_kv, double *kv, uint64_t *align, char *arch, size_t archlen,
                         char **keys);

static int read_kvs(gg_cursor *c, uint64_t n_kv, double *kv, uint64_t *align, char *arch, size_t archlen)
{
    char **keys = calloc(n_kv ? n_kv : 1, sizeof *keys);
    if (!keys)
        return flas_fail(c->err, c->errlen, "out of memory");
    int rc = read_kvs_into(c, n_kv, kv, align, arch, archlen, keys);
    if (!rc)
        rc = unique_keys(c, keys, n_kv);
    for (uint64_t i = 0; i < n_kv; i++)
        free(keys[i]);
    free(keys);
    return rc;
}

static int read_kvs_into(gg_cursor *c, uint64_t n_kv, double *kv, uint64_t *align, char *arch, size_t archlen,
                         char **keys)
{
    char key[GGUF_MAX_KEY + 1];
    for (uint64_t i = 0; i < n_kv; i++) {
        uint32_t t;
        if (rd_str(c, key, sizeof key, "key") || rd_u32(c, &t))
            return -1;
        if (!(keys[i] = strdup(key)))
            return flas_fail(c->err, c->errlen, "out of memory");
        if (!strcmp(key, "general.alignment") && t != GT_U32)
            return flas_fail(c->err, c->errlen, "%s: GGUF general.alignment has value type %u (a u32 is required)",
                             c->f->path, t);
        if (t == GT_STRING) {
            if (!strcmp(key, "general.architecture")) {
                if (rd_str(c, arch, archlen, "general.architecture"))
                    return -1;
            } else if (skip_str(c))
                return -1;
            continue;
        }
        if (t == GT_ARRAY) {
            uint32_t et;
            uint64_t count;
            if (rd_u32(c, &et) || rd_u64(c, &count))
                return -1;
            if (et == GT_STRING) {
                if (count > (c->f->size - c->pos) / 8)
                    return flas_fail(c->err, c->errlen, "%s: GGUF key %s: %llu strings cannot fit in the file", c->f->path,
                                     key, (unsigned long long)count);
                for (uint64_t k = 0; k < count; k++)
                    if (skip_str(c))
                        return -1;
            } else if (scalar_size(et)) {
                if (count > (c->f->size - c->pos) / scalar_size(et))
                    return flas_fail(c->err, c->errlen, "%s: GGUF key %s: an array of %llu values runs past the end of "
                                     "the file", c->f->path, key, (unsigned long long)count);
                c->pos += count * scalar_size(et);
            } else
                return flas_fail(c->err, c->errlen, "%s: GGUF key %s: array of value type %u", c->f->path, key, et);
            continue;
        }
        if (!scalar_size(t))
            return flas_fail(c->err, c->errlen, "%s: GGUF key %s has unknown value type %u", c->f->path, key, t);
        double v;
        int is_int;
        if (rd_scalar(c, t, &v, &is_int))
            return -1;
        if (!strcmp(key, "general.alignment")) {
            if (t != GT_U32 || v == 0 || ((uint64_t)v & ((uint64_t)v - 1)) || (uint64_t)v > GGUF_MAX_ALIGN)
                return flas_fail(c->err, c->errlen, "%s: GGUF general.alignment %.0f (type %u): not a u32 power of two "
                                 "up to %llu", c->f->path, v, t, (unsigned long long)GGUF_MAX_ALIGN);
            *align = (uint64_t)v;
        }
        for (int k = 0; k < K_N; k++)
            if (!strcmp(key, KEYS[k])) {
                if (k != K_EPS && k != K_THETA && (!is_int || v < 1 || v > 2147483647.0))
                    return flas_fail(c->err, c->errlen, "%s: GGUF key %s = %g is not a positive integer", c->f->path, key, v);
                kv[k] = v;
            }
    }
    return 0;
}

static int by_offset(const void *a, const void *b)
{
    const gg_tensor *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

static int by_tname(const void *a, const void *b)
{
    return strcmp(((const gg_tensor *)a)->name, ((const gg_tensor *)b)->name);
}

/* Needs g->t sorted by name (ix_gguf_open does it once the offsets are checked). */
static int key_vs_tname(const void *key, const void *t)
{
    return strcmp(key, ((const gg_tensor *)t)->name);
}

static const gg_tensor *gg_find(const gg_src *g, const char *name)
{
    return bsearch(name, g->t, g->n_t, sizeof *g->t, key_vs_tname);
}

static int gg_read(ix_source *s, const flas_tensor *t, float *out, char *err, size_t errlen)
{
    gg_src *g = (gg_src *)s;
    char name[GGUF_MAX_NAME + 16];
    gguf_name(t, name, sizeof name);
    const gg_tensor *x = gg_find(g, name);
    if (!x)
        return flas_fail(err, errlen, "%s: tensor %s is missing", g->f.path, name);
    flas_dtype dt = x->type == GG_F32 ? FLAS_DT_F32 : x->type == GG_F16 ? FLAS_DT_F16 : FLAS_DT_BF16;
    if (ix_read_elems(&g->f, x->offset, t->numel, dt, out, err, errlen))
        return -1;
    s->bytes_in += x->bytes;
    return 0;
}

static void gg_close(ix_source *s)
{
    gg_src *g = (gg_src *)s;
    ix_file_close(&g->f);
    free(g->t);
    free(g);
}

/* Stage 1: magic, version, counts and the key/values (what the config needs, general.alignment). */
static int gg_read_header(gg_src *g, gg_cursor *c, uint64_t *n_t, double *kv, uint64_t *align)
{
    const char *path = g->f.path;
    char magic[4], arch[64] = "";
    uint32_t version;
    uint64_t n_kv;
    if (rd(c, magic, 4) || rd_u32(c, &version))
        return -1;
    if (memcmp(magic, "GGUF", 4))
        return flas_fail(c->err, c->errlen, "%s: not a GGUF file (magic)", path);
    if (version != GGUF_VERSION)
        return flas_fail(c->err, c->errlen, "%s: GGUF version %u is not supported (version 3 is read)", path, version);
    if (rd_u64(c, n_t) || rd_u64(c, &n_kv))
        return -1;
    const int unfit = *n_t > g->f.size / 32 || n_kv > g->f.size / 12;
    if (unfit || *n_t > IX_MAX_TENSORS || n_kv > GGUF_MAX_KVS)
        return flas_fail(c->err, c->errlen, "%s: GGUF header claims %llu tensors and %llu keys: more than %s", path,
                         (unsigned long long)*n_t, (unsigned long long)n_kv,
                         unfit ? "the file can hold" : "a LLaMA model has");
    if (read_kvs(c, n_kv, kv, align, arch, sizeof arch))
        return -1;
    if (strcmp(arch, "llama"))
        return flas_fail(c->err, c->errlen, "%s: GGUF architecture '%s' (only llama is read)", path, arch);
    return 0;
}

/* Stage 2: the tensor infos, each shape, type and alignment checked. */
static int gg_read_infos(gg_src *g, gg_cursor *c, uint64_t n_t, uint64_t align)
{
    const char *path = g->f.path;
    g->t = calloc(n_t ? n_t : 1, sizeof *g->t);
    if (!g->t)
        return flas_fail(c->err, c->errlen, "out of memory");
    for (uint64_t i = 0; i < n_t; i++, g->n_t++) {
        gg_tensor *x = &g->t[i];
        if (rd_str(c, x->name, sizeof x->name, "tensor name") || rd_u32(c, &x->n_dims))
            return -1;
        if (x->n_dims < 1 || x->n_dims > GGUF_MAX_DIMS)
            return flas_fail(c->err, c->errlen, "%s: tensor %s has %u dimensions (1 to 4)", path, x->name, x->n_dims);
        uint64_t numel = 1;
        for (uint32_t d = 0; d < x->n_dims; d++) {
            if (rd_u64(c, &x->ne[d]))
                return -1;
            if (x->ne[d] == 0 || x->ne[d] > ((uint64_t)1 << 40) || __builtin_mul_overflow(numel, x->ne[d], &numel))
                return flas_fail(c->err, c->errlen, "%s: tensor %s has an implausible shape", path, x->name);
        }
        if (rd_u32(c, &x->type) || rd_u64(c, &x->offset))
            return -1;
        if (x->type != GG_F32 && x->type != GG_F16 && x->type != GG_BF16)
            return flas_fail(c->err, c->errlen, "%s: tensor %s has ggml type %u (%s): import reads F32, F16 and BF16",
                             path, x->name, x->type, type_name(x->type));
        x->bytes = type_bytes(x->type, numel);
        if (x->offset % align)
            return flas_fail(c->err, c->errlen, "%s: tensor %s at offset %llu is not aligned to %llu", path, x->name,
                             (unsigned long long)x->offset, (unsigned long long)align);
    }
    return 0;
}

/* Stage 3: the data section is the tensors back to back, each at the next aligned offset, after zero
 * padding, and the file ends with the last one (and its padding). A byte that belongs to no tensor means
 * the header lies about where things are (a tensor count lowered by one shifts every tensor, for
 * instance). Makes the offsets absolute. */
static int gg_check_layout(gg_src *g, uint64_t infos_end, uint64_t align, char *err, size_t errlen)
{
    const char *path = g->f.path;
    const uint64_t data0 = (infos_end + align - 1) / align * align;
    if (data0 > g->f.size)
        return flas_fail(err, errlen, "%s: truncated: no data section", path);
    for (uint64_t i = 0; i < g->n_t; i++) {
        const gg_tensor *x = &g->t[i];
        if (x->offset > g->f.size - data0 || x->bytes > g->f.size - data0 - x->offset)
            return flas_fail(err, errlen, "%s: tensor %s [%llu, +%llu) runs past the end of the file (truncated?)", path,
                             x->name, (unsigned long long)x->offset, (unsigned long long)x->bytes);
    }
    qsort(g->t, g->n_t, sizeof *g->t, by_offset);
    uint64_t at = 0;
    for (uint64_t i = 0; i < g->n_t; i++) {
        if (g->t[i].offset < at)
            return flas_fail(err, errlen, "%s: tensors %s and %s overlap", path, g->t[i - 1].name, g->t[i].name);
        if (g->t[i].offset > (at + align - 1) / align * align)
            return flas_fail(err, errlen, "%s: %llu bytes before tensor %s belong to no tensor", path,
                             (unsigned long long)(g->t[i].offset - at), g->t[i].name);
        at = g->t[i].offset + g->t[i].bytes;
    }
    if (g->f.size - data0 > (at + align - 1) / align * align)
        return flas_fail(err, errlen, "%s: %llu bytes after the last tensor belong to no tensor", path,
                         (unsigned long long)(g->f.size - data0 - at));
    unsigned char pad[4096];
    for (uint64_t p = infos_end; p < data0;) {
        size_t n = data0 - p < sizeof pad ? (size_t)(data0 - p) : sizeof pad;
        if (ix_file_read(&g->f, p, pad, n, err, errlen))
            return -1;
        for (size_t k = 0; k < n; k++)
            if (pad[k])
                return flas_fail(err, errlen, "%s: the padding before the data holds non-zero bytes (the header's "
                                              "counts do not match the file)", path);
        p += n;
    }
    for (uint64_t i = 0; i < g->n_t; i++)
        g->t[i].offset += data0;
    /* From here on the tensors are sorted by name: duplicates sit side by side, lookups bisect. */
    qsort(g->t, g->n_t, sizeof *g->t, by_tname);
    for (uint64_t i = 1; i < g->n_t; i++)
        if (!strcmp(g->t[i].name, g->t[i - 1].name))
            return flas_fail(err, errlen, "%s: tensor %s appears twice", path, g->t[i].name);
    return 0;
}

/* Stage 4: the config, from the keys and (vocabulary, tied head) the tensors. */
static int gg_config(gg_src *g, const double *kv, char *err, size_t errlen)
{
    const char *path = g->f.path;
    for (int k = 0; k < K_N; k++)
        if (kv[k] < 0 && k != K_KV_HEADS && k != K_ROPE_DIM && k != K_THETA)
            return flas_fail(err, errlen, "%s: GGUF key %s is missing", path, KEYS[k]);
    flas_config *cf = &g->base.cfg;
    cf->seq_len = (int)kv[K_CTX];
    cf->dim = (int)kv[K_EMB];
    cf->n_layers = (int)kv[K_BLOCKS];
    cf->hidden_dim = (int)kv[K_FFN];
    cf->n_heads = (int)kv[K_HEADS];
    cf->n_kv_heads = kv[K_KV_HEADS] > 0 ? (int)kv[K_KV_HEADS] : cf->n_heads;
    cf->norm_eps = (float)kv[K_EPS];
    cf->rope_theta = kv[K_THETA] > 0 ? (float)kv[K_THETA] : 10000.0f;
    const gg_tensor *emb = gg_find(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2 || emb->ne[1] > 0x7fffffff)
        return flas_fail(err, errlen, "%s: tensor token_embd.weight is %s", path,
                         emb ? "not a [vocab, dim] matrix" : "missing");
    cf->vocab_size = (int)emb->ne[1];
    cf->tied_embeddings = gg_find(g, "output.weight") == NULL;
    if (!(cf->norm_eps > 0.0f && cf->norm_eps < 1.0f))
        return flas_fail(err, errlen, "%s: GGUF llama config: rms epsilon outside (0, 1)", path);
    if (!(cf->rope_theta >= 1.0f) || !isfinite(cf->rope_theta))
        return flas_fail(err, errlen, "%s: GGUF llama config: rope freq base not a finite number >= 1", path);
    char why[256];
    if (flas_config_validate(cf, 1, why, sizeof why))
        return flas_fail(err, errlen, "%s: GGUF llama config: %s", path, why);
    if (kv[K_ROPE_DIM] > 0 && (int)kv[K_ROPE_DIM] != cf->dim / cf->n_heads)
        return flas_fail(err, errlen, "%s: llama.rope.dimension_count %.0f differs from the head size %d (partial "
                                      "RoPE is not supported)", path, kv[K_ROPE_DIM], cf->dim / cf->n_heads);
    return 0;
}

/* Stage 5: every tensor the model needs, with its shape; nothing else. */
static int gg_check_tensors(gg_src *g, char *err, size_t errlen)
{
    const char *path = g->f.path;
    flas_param_table tab;
    if (flas_param_table_init(&tab, &g->base.cfg, 0, 1, err, errlen))
        return -1;
    int rc = 0;
    char name[GGUF_MAX_NAME + 16];
    for (int i = 0; i < tab.n_tensors && !rc; i++) {
        const flas_tensor *t = &tab.tensors[i];
        gguf_name(t, name, sizeof name);
        const gg_tensor *x = gg_find(g, name);
        if (!x)
            rc = flas_fail(err, errlen, "%s: tensor %s is missing", path, name);
        else if ((int)x->n_dims != t->ndim || (t->ndim == 1 && x->ne[0] != t->full_shape[0]) ||
                 (t->ndim == 2 && (x->ne[0] != t->full_shape[1] || x->ne[1] != t->full_shape[0])))
            rc = flas_fail(err, errlen, "%s: tensor %s has the wrong shape for the config", path, name);
    }
    /* Every needed name was found once and names are unique: any further tensor is one the model lacks. */
    if (!rc && (uint64_t)tab.n_tensors != g->n_t) {
        unsigned char *used = calloc(g->n_t, 1);
        if (!used)
            rc = flas_fail(err, errlen, "out of memory");
        for (int i = 0; i < tab.n_tensors && !rc; i++) {
            gguf_name(&tab.tensors[i], name, sizeof name);
            used[gg_find(g, name) - g->t] = 1;
        }
        for (uint64_t i = 0; i < g->n_t && !rc; i++)
            if (!used[i])
                rc = flas_fail(err, errlen, "%s: unexpected tensor %s (not part of a LLaMA model)", path, g->t[i].name);
        free(used);
    }
    flas_param_table_free(&tab);
    return rc;
}

ix_source *ix_gguf_open(const char *path, char *err, size_t errlen)
{
    gg_src *g = calloc(1, sizeof *g);
    if (!g) {
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    g->f.fd = -1;
    g->base.read = gg_read;
    g->base.close = gg_close;
    g->base.has_seq_len = 1;
    gg_cursor c = {&g->f, 0, err, errlen};
    uint64_t n_t = 0, align = GGUF_ALIGN;
    double kv[K_N];
    for (int k = 0; k < K_N; k++)
        kv[k] = -1;
    if (ix_file_open(&g->f, path, err, errlen) || gg_read_header(g, &c, &n_t, kv, &align) ||
        gg_read_infos(g, &c, n_t, align) || gg_check_layout(g, c.pos, align, err, errlen) ||
        gg_config(g, kv, err, errlen) || gg_check_tensors(g, err, errlen)) {
        gg_close(&g->base);
        return NULL;
    }
    return &g->base;
}

/* ---- writing ---------------------------------------------------------------------------------- */

typedef struct gg_snk {
    ix_sink base;
    ix_out out;
    int force;
    flas_dtype dtype;
    uint32_t *types;           /* ggml type per table index */
    unsigned char *q;          /* Q8_0 output buffer */
} gg_snk;

/* A growable byte buffer for the header. */
typedef struct gbuf {
    unsigned char *p;
    size_t n, cap;
    int oom;
    uint64_t keys;             /* key/values written */
} gbuf;

static void put(gbuf *b, const void *d, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_u32(gbuf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    put(b, x, 4);
}

static void put_u64(gbuf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    put(b, x, 8);
}

static void put_str(gbuf *b, const char *s)
{
    size_t n = strlen(s);
    put_u64(b, n);
    put(b, s, n);
}

static void put_f32(gbuf *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}

static void kv_u32(gbuf *b, const char *k, uint32_t v)
{
    b->keys++;
    put_str(b, k);
    put_u32(b, GT_U32);
    put_u32(b, v);
}

static void kv_f32(gbuf *b, const char *k, float v)
{
    b->keys++;
    put_str(b, k);
    put_u32(b, GT_F32);
    put_f32(b, v);
}

static void kv_str(gbuf *b, const char *k, const char *v)
{
    b->keys++;
    put_str(b, k);
    put_u32(b, GT_STRING);
    put_str(b, v);
}

static void kv_bool(gbuf *b, const char *k, int v)
{
    unsigned char x = (unsigned char)(v != 0);
    b->keys++;
    put_str(b, k);
    put_u32(b, GT_BOOL);
    put(b, &x, 1);
}

static int gg_write(ix_sink *s, const flas_tensor *t, const float *data, char *err, size_t errlen)
{
    gg_snk *k = (gg_snk *)s;
    uint32_t type = k->types[t - s->table->tensors];
    int rc;
    if (type == GG_Q8_0) {
        /* Block by block through a fixed buffer: a 32-multiple of rows' worth at a time. */
        const size_t per = IX_IO_BYTES / FLAS_Q8_0_BYTES * FLAS_Q8_0_BLOCK;
        rc = 0;
        for (size_t i = 0; i < t->numel && !rc; i += per) {
            size_t n = t->numel - i < per ? t->numel - i : per;
            flas_q8_0_quantize(data + i, n, k->q);
            rc = ix_out_write(&k->out, k->q, n / FLAS_Q8_0_BLOCK * FLAS_Q8_0_BYTES, err, errlen);
        }
    } else
        rc = ix_out_write_floats(&k->out, data, t->numel,
                                 type == GG_F32 ? FLAS_DT_F32 : type == GG_F16 ? FLAS_DT_F16 : FLAS_DT_BF16, err, errlen);
    uint64_t b = type_bytes(type, t->numel);
    if (!rc && b % GGUF_ALIGN)
        rc = ix_out_zeros(&k->out, (size_t)(GGUF_ALIGN - b % GGUF_ALIGN), err, errlen);
    s->bytes_out = k->out.written;
    return rc;
}

static void gg_free(gg_snk *k)
{
    free(k->base.order);
    free(k->types);
    free(k->q);
    free(k);
}

static int gg_commit(ix_sink *s, char *err, size_t errlen)
{
    gg_snk *k = (gg_snk *)s;
    int rc = ix_out_commit(&k->out, k->force, err, errlen);
    gg_free(k);
    return rc;
}

static void gg_abort(ix_sink *s)
{
    gg_snk *k = (gg_snk *)s;
    ix_out_abort(&k->out);
    gg_free(k);
}

/* The vocabulary llama.cpp's "llama" (SentencePiece) tokenizer needs. */
static int put_vocab(gbuf *b, const char *path, int vocab, char *err, size_t errlen)
{
    flas_tokenizer *tok = flas_tokenizer_open(path, err, errlen);
    if (!tok)
        return -1;
    int n = flas_tokenizer_vocab_size(tok);
    if (n != vocab) {
        flas_tokenizer_close(tok);
        return flas_fail(err, errlen, "%s has %d pieces, the model a vocabulary of %d", path, n, vocab);
    }
    kv_str(b, "tokenizer.ggml.model", "llama");
    b->keys += 3; /* the three arrays */
    put_str(b, "tokenizer.ggml.tokens");
    put_u32(b, GT_ARRAY);
    put_u32(b, GT_STRING);
    put_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++)
        put_str(b, flas_tokenizer_piece(tok, i));
    put_str(b, "tokenizer.ggml.scores");
    put_u32(b, GT_ARRAY);
    put_u32(b, GT_F32);
    put_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++)
        put_f32(b, flas_tokenizer_score(tok, i));
    put_str(b, "tokenizer.ggml.token_type");
    put_u32(b, GT_ARRAY);
    put_u32(b, GT_I32);
    put_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++)
        put_u32(b, (uint32_t)flas_tokenizer_piece_type(tok, i));
    int bos = flas_tokenizer_bos_id(tok), eos = flas_tokenizer_eos_id(tok), unk = flas_tokenizer_unk_id(tok);
    if (bos >= 0)
        kv_u32(b, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0)
        kv_u32(b, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (unk >= 0)
        kv_u32(b, "tokenizer.ggml.unknown_token_id", (uint32_t)unk);
    kv_bool(b, "tokenizer.ggml.add_bos_token", bos >= 0);
    kv_bool(b, "tokenizer.ggml.add_eos_token", 0);
    kv_bool(b, "tokenizer.ggml.add_space_prefix", flas_tokenizer_adds_space_prefix(tok));
    flas_tokenizer_close(tok);
    return 0;
}

ix_sink *ix_gguf_create(const char *path, const flas_param_table *t, const flas_convert_opts *o,
                        const char *tokenizer, char *err, size_t errlen)
{
    if (!tokenizer) {
        flas_fail(err, errlen, "GGUF output embeds the vocabulary: give --tokenizer FILE (the SentencePiece .model)");
        return NULL;
    }
    gg_snk *k = calloc(1, sizeof *k);
    if (!k) {
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    k->out.fd = -1;
    k->force = o->force;
    k->dtype = o->dtype;
    k->base.table = t;
    k->base.write = gg_write;
    k->base.commit = gg_commit;
    k->base.abort = gg_abort;
    k->base.order = calloc((size_t)t->n_tensors, sizeof *k->base.order);
    k->types = calloc((size_t)t->n_tensors, sizeof *k->types);
    k->q = malloc(IX_IO_BYTES);
    gbuf b = {0};
    if (!k->base.order || !k->types || !k->q) {
        flas_fail(err, errlen, "out of memory");
        goto fail;
    }
    static const uint32_t file_type[] = {FT_ALL_F32, FT_MOSTLY_F16, FT_MOSTLY_BF16, FT_MOSTLY_Q8_0};
    static const uint32_t matrix_type[] = {GG_F32, GG_F16, GG_BF16, GG_Q8_0};
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        uint32_t ty = x->ndim == 1 ? GG_F32 : matrix_type[o->dtype];
        if (ty == GG_Q8_0 && x->full_shape[1] % FLAS_Q8_0_BLOCK)
            ty = GG_F16;
        k->types[i] = ty;
        k->base.order[i] = i;
    }
    const flas_config *c = &t->cfg;
    put(&b, "GGUF", 4);
    put_u32(&b, GGUF_VERSION);
    put_u64(&b, (uint64_t)t->n_tensors);
    size_t n_kv_at = b.n;
    put_u64(&b, 0); /* key/value count, patched below */
    kv_str(&b, "general.architecture", "llama");
    kv_str(&b, "general.name", "flas");
    kv_u32(&b, "general.alignment", GGUF_ALIGN);
    kv_u32(&b, "general.file_type", file_type[o->dtype]);
    if (o->dtype == FLAS_DT_Q8_0) /* ggml's quantization format version, as llama.cpp's converter records it */
        kv_u32(&b, "general.quantization_version", 2);
    kv_u32(&b, "llama.context_length", (uint32_t)c->seq_len);
    kv_u32(&b, "llama.embedding_length", (uint32_t)c->dim);
    kv_u32(&b, "llama.block_count", (uint32_t)c->n_layers);
    kv_u32(&b, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
    kv_u32(&b, "llama.attention.head_count", (uint32_t)c->n_heads);
    kv_u32(&b, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    kv_u32(&b, "llama.rope.dimension_count", (uint32_t)(c->dim / c->n_heads));
    kv_u32(&b, "llama.vocab_size", (uint32_t)c->vocab_size);
    kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    kv_f32(&b, "llama.rope.freq_base", c->rope_theta);
    if (put_vocab(&b, tokenizer, c->vocab_size, err, errlen))
        goto fail;
    const uint64_t n_kv = b.keys;
    for (int i = 0; i < 8; i++)
        if (!b.oom)
            b.p[n_kv_at + (size_t)i] = (unsigned char)(n_kv >> (8 * i));
    uint64_t off = 0;
    char name[GGUF_MAX_NAME + 16];
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        gguf_name(x, name, sizeof name);
        put_str(&b, name);
        put_u32(&b, (uint32_t)x->ndim);
        if (x->ndim == 1)
            put_u64(&b, x->full_shape[0]);
        else {
            put_u64(&b, x->full_shape[1]);
            put_u64(&b, x->full_shape[0]);
        }
        put_u32(&b, k->types[i]);
        put_u64(&b, off);
        uint64_t bytes = type_bytes(k->types[i], x->numel);
        off += (bytes + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
    }
    if (b.oom) {
        flas_fail(err, errlen, "out of memory");
        goto fail;
    }
    if (ix_out_create(&k->out, path, err, errlen))
        goto fail;
    if (ix_out_write(&k->out, b.p, b.n, err, errlen) ||
        (b.n % GGUF_ALIGN && ix_out_zeros(&k->out, GGUF_ALIGN - b.n % GGUF_ALIGN, err, errlen))) {
        ix_out_abort(&k->out);
        goto fail;
    }
    free(b.p);
    k->base.bytes_out = k->out.written;
    return &k->base;
fail:
    free(b.p);
    gg_free(k);
    return NULL;
}
