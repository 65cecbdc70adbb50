/* Model shapes: presets, the FFN width rule, validation, and the named-tensor layout. */
#include "flas/error.h"
#include "flas/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    flas_config cfg;
} preset;

/* Shapes from Meta's LLaMA-2 params.json and Karpathy's llama2.c tinystories models (which tie the
 * output head to the embeddings). */
static const preset presets[] = {
    {"llama2-7b", {4096, 32, 32, 32, 11008, 32000, 4096, 1e-5f, 10000.0f, 0}},
    {"llama2-13b", {5120, 40, 40, 40, 13824, 32000, 4096, 1e-5f, 10000.0f, 0}},
    {"llama2-70b", {8192, 80, 64, 8, 28672, 32000, 4096, 1e-5f, 10000.0f, 0}},
    {"stories260K", {64, 5, 8, 4, 172, 512, 512, 1e-5f, 10000.0f, 1}},
    {"stories15M", {288, 6, 6, 6, 768, 32000, 256, 1e-5f, 10000.0f, 1}},
    {"stories42M", {512, 8, 8, 8, 1376, 32000, 1024, 1e-5f, 10000.0f, 1}},
    {"stories110M", {768, 12, 12, 12, 2048, 32000, 1024, 1e-5f, 10000.0f, 1}},
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

static const char *const preset_names[N_PRESETS + 1] = {
    "llama2-7b", "llama2-13b", "llama2-70b", "stories260K", "stories15M", "stories42M", "stories110M", NULL};

const char *const *flas_config_preset_names(void) { return preset_names; }

int flas_config_preset(const char *name, flas_config *out)
{
    for (size_t i = 0; i < N_PRESETS; i++)
        if (strcmp(presets[i].name, name) == 0) {
            *out = presets[i].cfg;
            return 0;
        }
    return -1;
}

int flas_hidden_dim(int dim, int multiple_of, float ffn_dim_multiplier)
{
    /* Meta's model.py: int(2 * 4 * dim / 3), optional int(multiplier * h), round up to multiple_of. */
    long h = (long)(2.0 * 4.0 * dim / 3.0);
    if (ffn_dim_multiplier > 0.0f)
        h = (long)(ffn_dim_multiplier * (double)h);
    if (multiple_of <= 0)
        multiple_of = 1;
    h = multiple_of * ((h + multiple_of - 1) / multiple_of);
    return h > INT32_MAX ? -1 : (int)h;
}

size_t flas_config_head_dim(const flas_config *c) { return (size_t)(c->dim / c->n_heads); }

/* a * b without overflow, else 0 (callers refuse 0: every factor is already known positive). */
static size_t mul_ok(size_t a, size_t b) { return (b != 0 && a > SIZE_MAX / b) ? 0 : a * b; }

int flas_config_validate(const flas_config *c, int tp_size, char *err, size_t errlen)
{
    const struct { const char *name; int v; } pos[] = {
        {"dim", c->dim}, {"n_layers", c->n_layers}, {"n_heads", c->n_heads},
        {"n_kv_heads", c->n_kv_heads}, {"hidden_dim", c->hidden_dim},
        {"vocab_size", c->vocab_size}, {"seq_len", c->seq_len}, {"tp", tp_size}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0)
            return flas_fail(err, errlen, "%s must be positive (got %d)", pos[i].name, pos[i].v);
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f))
        return flas_fail(err, errlen, "norm_eps must be in (0, 1) (got %g)", (double)c->norm_eps);
    if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta))
        return flas_fail(err, errlen, "rope_theta must be finite and > 1 (got %g)", (double)c->rope_theta);
    if (c->tied_embeddings != 0 && c->tied_embeddings != 1)
        return flas_fail(err, errlen, "tied_embeddings must be 0 or 1 (got %d)", c->tied_embeddings);
    if (c->dim % c->n_heads)
        return flas_fail(err, errlen, "dim %d is not divisible by n_heads %d", c->dim, c->n_heads);
    if (c->n_heads % c->n_kv_heads)
        return flas_fail(err, errlen, "n_heads %d is not divisible by n_kv_heads %d (grouped-query attention)",
                    c->n_heads, c->n_kv_heads);
    if ((c->dim / c->n_heads) % 2)
        return flas_fail(err, errlen, "head_dim %d is odd: RoPE rotates pairs of dimensions", c->dim / c->n_heads);
    if (c->n_kv_heads % tp_size)
        return flas_fail(err, errlen, "n_kv_heads %d is not divisible by tp %d", c->n_kv_heads, tp_size);
    if (c->hidden_dim % tp_size)
        return flas_fail(err, errlen, "hidden_dim %d is not divisible by tp %d", c->hidden_dim, tp_size);
    /* Products that index activations and logits must fit in int-based loops and size_t buffers. */
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim, v = (size_t)c->vocab_size, t = (size_t)c->seq_len;
    size_t per_layer = 0, total = 0;
    size_t kv = mul_ok(d / c->n_heads, c->n_kv_heads);
    size_t qo = mul_ok(d, d), kvw = mul_ok(kv, d), ffn = mul_ok(d, h), emb = mul_ok(v, d);
    if (!qo || !kvw || !ffn || !emb || mul_ok(t, v) == 0 || mul_ok(t, t) == 0 ||
        mul_ok(t, h) > (size_t)INT32_MAX || mul_ok(t, v) > (size_t)INT32_MAX || emb > (size_t)INT32_MAX * 64)
        return flas_fail(err, errlen, "model shape overflows (dim %d, hidden_dim %d, vocab_size %d, seq_len %d)",
                    c->dim, c->hidden_dim, c->vocab_size, c->seq_len);
    per_layer = 2 * qo + 2 * kvw + 3 * ffn + 2 * d;
    if (per_layer < qo || mul_ok(per_layer, (size_t)c->n_layers) == 0)
        return flas_fail(err, errlen, "model shape overflows (n_layers %d)", c->n_layers);
    total = per_layer * (size_t)c->n_layers + emb * (c->tied_embeddings ? 1 : 2) + d;
    if (total < per_layer || total > ((size_t)1 << 40))
        return flas_fail(err, errlen, "model has too many parameters (%zu)", total);
    /* The tensor table holds 9 entries per block: a model file's header (llama2.c, GGUF, config.json)
     * claiming millions of tiny blocks made every reader allocate gigabytes for the table (or overflow
     * 9 * n_layers) before the file's length could refute it (found by tests/fuzz/fuzz_llama2c). */
    if (c->n_layers > FLAS_MAX_LAYERS)
        return flas_fail(err, errlen, "n_layers %d exceeds %d", c->n_layers, FLAS_MAX_LAYERS);
    return 0;
}

typedef struct {
    flas_param_table *t;
    int cap;
} layout;

static void add(layout *L, flas_tensor_kind kind, int layer, const char *name, size_t rows, size_t cols,
                flas_tp_split shard)
{
    flas_param_table *t = L->t;
    flas_tensor *x = &t->tensors[t->n_tensors++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->kind = kind;
    x->layer = layer;
    x->ndim = cols ? 2 : 1;
    x->full_shape[0] = rows;
    x->full_shape[1] = cols;
    x->shape[0] = rows;
    x->shape[1] = cols;
    x->shard = shard;
    if (shard != FLAS_TP_REPLICATED) {
        size_t part = x->full_shape[shard] / (size_t)t->tp_size;
        x->shape[shard] = part;
        x->shard_start = part * (size_t)t->tp_rank;
    }
    x->numel = x->shape[0] * (cols ? x->shape[1] : 1);
    x->offset = t->n_params;
    t->n_params += x->numel;
    t->n_params_full += rows * (cols ? cols : 1);
}

int flas_param_table_init(flas_param_table *t, const flas_config *c, int tp_rank, int tp_size,
                          char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (flas_config_validate(c, tp_size, err, errlen))
        return -1;
    if (tp_rank < 0 || tp_rank >= tp_size)
        return flas_fail(err, errlen, "tp rank %d is outside 0..%d", tp_rank, tp_size - 1);
    t->cfg = *c;
    t->tp_rank = tp_rank;
    t->tp_size = tp_size;
    int cap = 3 + 9 * c->n_layers;
    t->tensors = calloc((size_t)cap, sizeof *t->tensors);
    if (!t->tensors)
        return flas_fail(err, errlen, "out of memory for %d tensor descriptors", cap);
    layout L = {t, cap};
    size_t d = (size_t)c->dim, hd = flas_config_head_dim(c), h = (size_t)c->hidden_dim;
    size_t q = hd * (size_t)c->n_heads, kv = hd * (size_t)c->n_kv_heads;
    char name[FLAS_TENSOR_NAME_MAX];
    add(&L, FLAS_T_TOK_EMBEDDINGS, -1, "tok_embeddings.weight", (size_t)c->vocab_size, d, FLAS_TP_REPLICATED);
    for (int l = 0; l < c->n_layers; l++) {
#define BLOCK(kind, suffix, rows, cols, shard)                                   \
    snprintf(name, sizeof name, "layers.%d.%s", l, suffix);                      \
    add(&L, kind, l, name, rows, cols, shard)
        BLOCK(FLAS_T_ATTENTION_NORM, "attention_norm.weight", d, 0, FLAS_TP_REPLICATED);
        BLOCK(FLAS_T_WQ, "attention.wq.weight", q, d, FLAS_TP_SPLIT_ROWS);
        BLOCK(FLAS_T_WK, "attention.wk.weight", kv, d, FLAS_TP_SPLIT_ROWS);
        BLOCK(FLAS_T_WV, "attention.wv.weight", kv, d, FLAS_TP_SPLIT_ROWS);
        BLOCK(FLAS_T_WO, "attention.wo.weight", d, q, FLAS_TP_SPLIT_COLS);
        BLOCK(FLAS_T_FFN_NORM, "ffn_norm.weight", d, 0, FLAS_TP_REPLICATED);
        BLOCK(FLAS_T_W1, "feed_forward.w1.weight", h, d, FLAS_TP_SPLIT_ROWS);
        BLOCK(FLAS_T_W2, "feed_forward.w2.weight", d, h, FLAS_TP_SPLIT_COLS);
        BLOCK(FLAS_T_W3, "feed_forward.w3.weight", h, d, FLAS_TP_SPLIT_ROWS);
#undef BLOCK
    }
    add(&L, FLAS_T_NORM, -1, "norm.weight", d, 0, FLAS_TP_REPLICATED);
    if (!c->tied_embeddings)
        add(&L, FLAS_T_OUTPUT, -1, "output.weight", (size_t)c->vocab_size, d, FLAS_TP_REPLICATED);
    (void)L.cap;
    return 0;
}

void flas_param_table_free(flas_param_table *t)
{
    free(t->tensors);
    t->tensors = NULL;
    t->n_tensors = 0;
}

const flas_tensor *flas_param_find(const flas_param_table *t, const char *name)
{
    for (int i = 0; i < t->n_tensors; i++)
        if (strcmp(t->tensors[i].name, name) == 0)
            return &t->tensors[i];
    return NULL;
}

const flas_tensor *flas_param_get(const flas_param_table *t, flas_tensor_kind kind, int layer)
{
    for (int i = 0; i < t->n_tensors; i++)
        if (t->tensors[i].kind == kind && (t->tensors[i].layer == layer || t->tensors[i].layer < 0))
            return &t->tensors[i];
    return NULL;
}
