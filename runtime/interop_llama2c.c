/* llama2.c's .bin (karpathy/llama2.c, export.py), float32, both versions:
 *   version 0 (legacy): 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
 *     a negative vocab_size means an untied classifier), then the tensors grouped by kind across layers:
 *     tok_embeddings, attention_norm[L], wq[L], wk[L], wv[L], wo[L], ffn_norm[L], w1[L], w2[L], w3[L], norm,
 *     two RoPE tables of seq_len x head_dim/2 (cos, sin; readers skip them), output if untied;
 *   version 1: a 256-byte header (u32 magic "ak42", i32 version 1, the same 7 int32 with a positive
 *     vocab_size, one byte "shared classifier", zeros), then attention_norm[L], ffn_norm[L], norm,
 *     tok_embeddings, wq[L], wk[L], wv[L], wo[L], w1[L], w2[L], w3[L], output if untied.
 * Rows are in Meta's layout and RoPE order. The files hold no RMSNorm epsilon or RoPE base: llama2.c
 * uses 1e-5 and 10000. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flas/error.h"
#include "interop_internal.h"

#define L2C_MAGIC 0x616b3432u
#define L2C_V1_HEADER 256
#define L2C_NORM_EPS 1e-5f
#define L2C_ROPE_THETA 10000.0f

/* The kinds in file order; FREQS marks version 0's RoPE tables. */
#define FREQS FLAS_T_KIND_COUNT
static const int ORDER_V0[] = {FLAS_T_TOK_EMBEDDINGS, FLAS_T_ATTENTION_NORM, FLAS_T_WQ, FLAS_T_WK, FLAS_T_WV,
                               FLAS_T_WO, FLAS_T_FFN_NORM, FLAS_T_W1, FLAS_T_W2, FLAS_T_W3, FLAS_T_NORM, FREQS,
                               FLAS_T_OUTPUT};
static const int ORDER_V1[] = {FLAS_T_ATTENTION_NORM, FLAS_T_FFN_NORM, FLAS_T_NORM, FLAS_T_TOK_EMBEDDINGS,
                               FLAS_T_WQ, FLAS_T_WK, FLAS_T_WV, FLAS_T_WO, FLAS_T_W1, FLAS_T_W2, FLAS_T_W3,
                               FLAS_T_OUTPUT};

static int is_block_kind(int k)
{
    return k != FLAS_T_TOK_EMBEDDINGS && k != FLAS_T_NORM && k != FLAS_T_OUTPUT && k != FREQS;
}

static uint64_t freq_floats(const flas_config *c)
{
    return (uint64_t)c->seq_len * (uint64_t)(c->dim / c->n_heads / 2) * 2;
}

/* The table indices in file order (order[]) and each tensor's byte offset (offs[], by table index);
 * *size gets the file's expected length. The config is validated, so no product overflows. */
static int layout(const flas_param_table *t, int version, int *order, uint64_t *offs, uint64_t *size)
{
    const int *ko = version ? ORDER_V1 : ORDER_V0;
    const int nk = version ? (int)(sizeof ORDER_V1 / sizeof *ORDER_V1) : (int)(sizeof ORDER_V0 / sizeof *ORDER_V0);
    uint64_t pos = version ? L2C_V1_HEADER : 7 * 4;
    int n = 0;
    for (int i = 0; i < nk; i++) {
        if (ko[i] == FREQS) {
            pos += freq_floats(&t->cfg) * 4;
            continue;
        }
        int layers = is_block_kind(ko[i]) ? t->cfg.n_layers : 1;
        for (int l = 0; l < layers; l++) {
            const flas_tensor *x = flas_param_get(t, (flas_tensor_kind)ko[i], l);
            if (!x)
                continue; /* the output of a tied model */
            int idx = (int)(x - t->tensors);
            order[n++] = idx;
            offs[idx] = pos;
            pos += (uint64_t)x->numel * 4;
        }
    }
    *size = pos;
    return n == t->n_tensors ? 0 : -1;
}

typedef struct l2c_src {
    ix_source base;
    ix_file f;
    flas_param_table tab;
    uint64_t *offs;
} l2c_src;

static int l2c_read(ix_source *s, const flas_tensor *t, float *out, char *err, size_t errlen)
{
    l2c_src *f = (l2c_src *)s;
    const flas_tensor *x = flas_param_find(&f->tab, t->name);
    if (!x || x->numel != t->numel)
        return flas_fail(err, errlen, "%s: no tensor %s", f->f.path, t->name);
    if (ix_file_read(&f->f, f->offs[x - f->tab.tensors], out, t->numel * 4, err, errlen))
        return -1;
    s->bytes_in += (uint64_t)t->numel * 4;
    return 0;
}

static void l2c_close(ix_source *s)
{
    l2c_src *f = (l2c_src *)s;
    ix_file_close(&f->f);
    flas_param_table_free(&f->tab);
    free(f->offs);
    free(f);
}

static int32_t le32(const unsigned char *p) { return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24); }

ix_source *ix_llama2c_open(const char *path, char *err, size_t errlen)
{
    l2c_src *f = calloc(1, sizeof *f);
    if (!f) {
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    unsigned char h[L2C_V1_HEADER];
    int version = 0;
    if (ix_file_open(&f->f, path, err, errlen) || ix_file_read(&f->f, 0, h, 7 * 4, err, errlen))
        goto fail;
    if ((uint32_t)le32(h) == L2C_MAGIC) {
        if (ix_file_read(&f->f, 0, h, L2C_V1_HEADER, err, errlen))
            goto fail;
        version = le32(h + 4);
        if (version != 1) {
            flas_fail(err, errlen, "%s: llama2.c version %d is not supported (0 and 1 are)", path, version);
            goto fail;
        }
    }
    const unsigned char *p = version ? h + 8 : h;
    int32_t v[7];
    for (int i = 0; i < 7; i++)
        v[i] = le32(p + 4 * i);
    flas_config *c = &f->base.cfg;
    c->dim = v[0];
    c->hidden_dim = v[1];
    c->n_layers = v[2];
    c->n_heads = v[3];
    c->n_kv_heads = v[4];
    c->vocab_size = v[5] < 0 && v[5] != INT32_MIN ? -v[5] : v[5];
    c->seq_len = v[6];
    c->norm_eps = L2C_NORM_EPS;
    c->rope_theta = L2C_ROPE_THETA;
    if (version) {
        if (v[5] < 0 || h[36] > 1) {
            flas_fail(err, errlen, "%s: llama2.c v1 header: vocab_size %d, shared classifier byte %u", path, v[5], h[36]);
            goto fail;
        }
        c->tied_embeddings = h[36];
    } else
        c->tied_embeddings = v[5] > 0;
    char why[256];
    if (flas_config_validate(c, 1, why, sizeof why)) {
        flas_fail(err, errlen, "%s: llama2.c header (dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, "
                               "seq_len %d): %s", path, v[0], v[1], v[2], v[3], v[4], v[5], v[6], why);
        goto fail;
    }
    if (flas_param_table_init(&f->tab, c, 0, 1, err, errlen))
        goto fail;
    f->offs = calloc((size_t)f->tab.n_tensors, sizeof *f->offs);
    int *order = calloc((size_t)f->tab.n_tensors, sizeof *order);
    uint64_t want = 0;
    int bad = !f->offs || !order || layout(&f->tab, version, order, f->offs, &want);
    free(order);
    if (bad) {
        flas_fail(err, errlen, "out of memory");
        goto fail;
    }
    if (want != f->f.size) {
        flas_fail(err, errlen, "%s: llama2.c v%d file of %llu bytes, but its header describes %llu (%s)", path, version,
                  (unsigned long long)f->f.size, (unsigned long long)want, want > f->f.size ? "truncated" : "trailing data");
        goto fail;
    }
    f->base.has_seq_len = 1;
    f->base.read = l2c_read;
    f->base.close = l2c_close;
    return &f->base;
fail:
    ix_file_close(&f->f);
    flas_param_table_free(&f->tab);
    free(f->offs);
    free(f);
    return NULL;
}

typedef struct l2c_snk {
    ix_sink base;
    ix_out out;
    int version, force, next;
    uint64_t *offs;
} l2c_snk;

static int put_i32(unsigned char *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    p[0] = (unsigned char)u;
    p[1] = (unsigned char)(u >> 8);
    p[2] = (unsigned char)(u >> 16);
    p[3] = (unsigned char)(u >> 24);
    return 4;
}

/* Version 0's RoPE tables, as llama2.c's model.py computes them (readers ignore them). */
static int write_freqs(l2c_snk *f, char *err, size_t errlen)
{
    const flas_config *c = &f->base.table->cfg;
    const int half = c->dim / c->n_heads / 2;
    float *row = malloc((size_t)half * sizeof *row);
    if (!row)
        return flas_fail(err, errlen, "out of memory");
    int rc = 0;
    for (int which = 0; which < 2 && !rc; which++)
        for (int pos = 0; pos < c->seq_len && !rc; pos++) {
            for (int i = 0; i < half; i++) {
                float freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)(2 * half));
                float a = (float)pos * freq;
                row[i] = which ? sinf(a) : cosf(a);
            }
            rc = ix_out_write(&f->out, row, (size_t)half * 4, err, errlen);
        }
    free(row);
    return rc;
}

static int l2c_write(ix_sink *k, const flas_tensor *t, const float *data, char *err, size_t errlen)
{
    l2c_snk *f = (l2c_snk *)k;
    /* Version 0 places the RoPE tables between the final norm and the classifier. */
    if (!f->version && t->kind == FLAS_T_OUTPUT && write_freqs(f, err, errlen))
        return -1;
    if (ix_out_write(&f->out, data, t->numel * 4, err, errlen))
        return -1;
    f->next++;
    if (!f->version && t->kind == FLAS_T_NORM && k->table->cfg.tied_embeddings && write_freqs(f, err, errlen))
        return -1;
    k->bytes_out = f->out.written;
    return 0;
}

static void l2c_free(l2c_snk *f)
{
    free(f->base.order);
    free(f->offs);
    free(f);
}

static int l2c_commit(ix_sink *k, char *err, size_t errlen)
{
    l2c_snk *f = (l2c_snk *)k;
    int rc = ix_out_commit(&f->out, f->force, err, errlen);
    l2c_free(f);
    return rc;
}

static void l2c_abort(ix_sink *k)
{
    l2c_snk *f = (l2c_snk *)k;
    ix_out_abort(&f->out);
    l2c_free(f);
}

ix_sink *ix_llama2c_create(const char *path, const flas_param_table *t, const flas_convert_opts *o, char *err,
                           size_t errlen)
{
    if (o->llama2c_version != 0 && o->llama2c_version != 1) {
        flas_fail(err, errlen, "llama2.c version %d: 0 or 1", o->llama2c_version);
        return NULL;
    }
    if (t->cfg.norm_eps != L2C_NORM_EPS || t->cfg.rope_theta != L2C_ROPE_THETA) {
        flas_fail(err, errlen, "llama2.c files cannot record rms eps %g and rope theta %g (only 1e-5 and 10000)",
                  (double)t->cfg.norm_eps, (double)t->cfg.rope_theta);
        return NULL;
    }
    l2c_snk *f = calloc(1, sizeof *f);
    int *order = calloc((size_t)t->n_tensors, sizeof *order);
    uint64_t *offs = calloc((size_t)t->n_tensors, sizeof *offs);
    uint64_t size;
    if (!f || !order || !offs || layout(t, o->llama2c_version, order, offs, &size)) {
        free(f);
        free(order);
        free(offs);
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    f->base.table = t;
    f->base.order = order;
    f->offs = offs;
    f->version = o->llama2c_version;
    f->force = o->force;
    f->base.write = l2c_write;
    f->base.commit = l2c_commit;
    f->base.abort = l2c_abort;
    if (ix_out_create(&f->out, path, err, errlen)) {
        l2c_free(f);
        return NULL;
    }
    unsigned char h[L2C_V1_HEADER] = {0};
    size_t n = 0;
    const flas_config *c = &t->cfg;
    if (f->version) {
        n += (size_t)put_i32(h + n, (int32_t)L2C_MAGIC);
        n += (size_t)put_i32(h + n, 1);
    }
    const int32_t v[7] = {c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                          f->version || c->tied_embeddings ? c->vocab_size : -c->vocab_size, c->seq_len};
    for (int i = 0; i < 7; i++)
        n += (size_t)put_i32(h + n, v[i]);
    if (f->version) {
        h[n] = (unsigned char)(c->tied_embeddings ? 1 : 0);
        n = L2C_V1_HEADER;
    }
    if (ix_out_write(&f->out, h, n, err, errlen)) {
        l2c_abort(&f->base);
        return NULL;
    }
    return &f->base;
}
