/* The LLaMA-2 model of one tensor-parallel rank: buffers, initialisation, and the layer sequence of
 * forward and backward. The layers themselves are in layers.c (fast) and layers_ref.c (reference). */
#include "flas/error.h"
#include "flas/llama.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/blas_info.h"
#include "flas/optim.h"
#include "gemm_bf16.h"
#include "layers.h"
#include "memory.h"

/* What forward keeps for backward, per block. N = B*T rows. */
typedef struct block_acts {
    float *res;        /* [N,D] residual stream entering the block */
    float *rstd1;      /* [N] */
    float *xn1;        /* [N,D] attention_norm output */
    float *qkv;        /* [N, qD+2kvD] q | k | v, RoPE applied to q and k */
    float *probs;      /* [B,Hq,T,T] attention softmax */
    float *att;        /* [N,qD] attention output, input of wo */
    float *res2;       /* [N,D] residual after attention */
    float *rstd2;      /* [N] */
    float *xn2;        /* [N,D] ffn_norm output */
    float *h1, *h3;    /* [N,F] w1 and w3 outputs */
    float *gate;       /* [N,F] silu(h1)*h3, input of w2 */
} block_acts;

struct flas_acts {
    block_acts *blocks;
    float *res_final, *rstd_final, *xn_final; /* [N,D], [N], [N,D] */
    float *logits;     /* [N,V] logits -> probabilities -> their gradient, in place */
    float *losses;     /* [N] */
    float *y;          /* [N,D] partial output of wo/w2 before the tp allreduce */
    float *dres, *dxn; /* [N,D] gradient of the residual stream / of a norm's output */
    float *datt;       /* [N,qD] */
    float *dqkv;       /* [N,qkvD] */
    float *dprobs;     /* [B,Hq,T,T] */
    float *dgate, *dh1, *dh3; /* [N,F] */
    float *rope_cos, *rope_sin; /* [max_seq, hd/2] */
    int *tokens, *targets;     /* [N] copies of the last forward's input */
    int B, T;                  /* shape of the last forward */
    int ready_for_backward;
    float *arena;
    size_t bytes;
};

/* Shapes of this rank. */
typedef struct dims {
    int D, Hq, Hkv, hd, qD, kvD, qkvD, F, V, L;
} dims;

static dims model_dims(const flas_model *m)
{
    const flas_config *c = &m->cfg;
    dims d;
    d.D = c->dim;
    d.hd = c->dim / c->n_heads;
    d.Hq = c->n_heads / m->tp_size;
    d.Hkv = c->n_kv_heads / m->tp_size;
    d.qD = d.Hq * d.hd;
    d.kvD = d.Hkv * d.hd;
    d.qkvD = d.qD + 2 * d.kvD;
    d.F = c->hidden_dim / m->tp_size;
    d.V = c->vocab_size;
    d.L = c->n_layers;
    return d;
}

/* Carves 64-byte aligned arrays out of one allocation; the first pass (base NULL) only counts. */
typedef struct carver {
    float *base;
    size_t used; /* floats */
} carver;

static float *carve(carver *cv, size_t n)
{
    size_t start = cv->used;
    cv->used += (n + 15) / 16 * 16;
    return cv->base ? cv->base + start : NULL;
}

static void layout_acts(struct flas_acts *a, const dims *d, int L, size_t N, size_t B, size_t T,
                        size_t S, carver *cv)
{
    size_t probs = B * (size_t)d->Hq * T * T;
    for (int l = 0; l < L; l++) {
        block_acts *b = &a->blocks[l];
        b->res = carve(cv, N * d->D);
        b->rstd1 = carve(cv, N);
        b->xn1 = carve(cv, N * d->D);
        b->qkv = carve(cv, N * d->qkvD);
        b->probs = carve(cv, probs);
        b->att = carve(cv, N * d->qD);
        b->res2 = carve(cv, N * d->D);
        b->rstd2 = carve(cv, N);
        b->xn2 = carve(cv, N * d->D);
        b->h1 = carve(cv, N * d->F);
        b->h3 = carve(cv, N * d->F);
        b->gate = carve(cv, N * d->F);
    }
    a->res_final = carve(cv, N * d->D);
    a->rstd_final = carve(cv, N);
    a->xn_final = carve(cv, N * d->D);
    a->logits = carve(cv, N * d->V);
    a->losses = carve(cv, N);
    a->y = carve(cv, N * d->D);
    a->dres = carve(cv, N * d->D);
    a->dxn = carve(cv, N * d->D);
    a->datt = carve(cv, N * d->qD);
    a->dqkv = carve(cv, N * d->qkvD);
    a->dprobs = carve(cv, probs);
    a->dgate = carve(cv, N * d->F);
    a->dh1 = carve(cv, N * d->F);
    a->dh3 = carve(cv, N * d->F);
    a->rope_cos = carve(cv, S * d->hd / 2);
    a->rope_sin = carve(cv, S * d->hd / 2);
    a->tokens = (int *)carve(cv, N);
    a->targets = (int *)carve(cv, N);
}


int flas_model_create(flas_model *m, const flas_config *cfg, int tp_rank, int tp_size, int max_batch,
                      int max_seq, int n_threads, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (flas_param_table_init(&m->table, cfg, tp_rank, tp_size, err, errlen))
        return -1;
    if (max_batch <= 0 || max_seq <= 0 || max_seq > cfg->seq_len) {
        flas_param_table_free(&m->table);
        return flas_fail(err, errlen, "batch capacity %d x %d is outside 1..any x 1..seq_len %d", max_batch,
                       max_seq, cfg->seq_len);
    }
    m->cfg = *cfg;
    m->tp_rank = tp_rank;
    m->tp_size = tp_size;
    m->max_batch = max_batch;
    m->max_seq = max_seq;
    m->n_threads = flas_threads_setup(n_threads);
    m->kernels = &flas_kernels_fast;
    dims d = model_dims(m);

    /* The fused q|k|v product needs wq, wk, wv (and their grads) adjacent: the table's Meta order. */
    for (int l = 0; l < d.L; l++) {
        const flas_tensor *wq = flas_param_get(&m->table, FLAS_T_WQ, l);
        const flas_tensor *wk = flas_param_get(&m->table, FLAS_T_WK, l);
        const flas_tensor *wv = flas_param_get(&m->table, FLAS_T_WV, l);
        if (wk->offset != wq->offset + wq->numel || wv->offset != wk->offset + wk->numel) {
            flas_param_table_free(&m->table);
            return flas_fail(err, errlen, "internal: wq/wk/wv of layer %d are not adjacent in the table", l);
        }
    }
    size_t N = (size_t)max_batch * max_seq;
    if (N > (size_t)1 << 31 || N * (size_t)d.V > ((size_t)1 << 40)) {
        flas_param_table_free(&m->table);
        return flas_fail(err, errlen, "batch %d x %d is too large for vocabulary %d", max_batch, max_seq, d.V);
    }
    m->acts = calloc(1, sizeof *m->acts);
    if (m->acts)
        m->acts->blocks = calloc((size_t)d.L, sizeof(block_acts));
    carver cv = {NULL, 0};
    if (m->acts && m->acts->blocks)
        layout_acts(m->acts, &d, d.L, N, (size_t)max_batch, (size_t)max_seq, (size_t)max_seq, &cv);
    m->params = flas_alloc_floats(m->table.n_params);
    m->grads = flas_alloc_floats(m->table.n_params);
    float *arena = m->acts && m->acts->blocks ? flas_alloc_floats(cv.used) : NULL;
    if (!m->params || !m->grads || !arena) {
        free(arena);
        flas_model_free(m);
        return flas_fail(err, errlen, "out of memory: %zu parameters + %.1f MiB of activations",
                       m->table.n_params, cv.used * 4.0 / 1048576.0);
    }
    m->acts->arena = arena;
    m->acts->bytes = cv.used * sizeof(float);
    cv = (carver){arena, 0};
    layout_acts(m->acts, &d, d.L, N, (size_t)max_batch, (size_t)max_seq, (size_t)max_seq, &cv);
    /* RoPE angles t * theta^(-2i/hd), computed in double as Meta's precompute_freqs_cis does in float64
     * before casting. */
    for (int t = 0; t < max_seq; t++)
        for (int i = 0; i < d.hd / 2; i++) {
            double freq = pow((double)cfg->rope_theta, -2.0 * i / d.hd), ang = t * freq;
            m->acts->rope_cos[(size_t)t * (d.hd / 2) + i] = (float)cos(ang);
            m->acts->rope_sin[(size_t)t * (d.hd / 2) + i] = (float)sin(ang);
        }
    memset(m->params, 0, m->table.n_params * sizeof(float));
    memset(m->grads, 0, m->table.n_params * sizeof(float));
    return 0;
}

void flas_model_free(flas_model *m)
{
    if (m->acts) {
        free(m->acts->arena);
        free(m->acts->blocks);
        free(m->acts);
    }
    free(m->params);
    free(m->grads);
    flas_param_table_free(&m->table);
    memset(m, 0, sizeof *m);
}

void flas_model_set_allreduce(flas_model *m, flas_allreduce_fn fn, void *ctx)
{
    m->allreduce_sum = fn;
    m->allreduce_ctx = ctx;
}

static const flas_kernels *fast_kernels(flas_precision p)
{
    return p == FLAS_PRECISION_BF16 ? &flas_kernels_bf16 : &flas_kernels_fast;
}

void flas_model_use_reference(flas_model *m, int on)
{
    m->kernels = on ? &flas_kernels_reference : fast_kernels(m->precision);
}

static const char *const precision_names[] = {"fp32", "bf16"};

int flas_precision_parse(const char *name, flas_precision *out)
{
    for (int i = 0; i < 2; i++)
        if (!strcmp(name, precision_names[i])) {
            *out = (flas_precision)i;
            return 0;
        }
    return -1;
}

const char *flas_precision_name(flas_precision p)
{
    return (unsigned)p < 2 ? precision_names[p] : "?";
}

int flas_model_set_precision(flas_model *m, flas_precision p, char *err, size_t errlen)
{
    char why[200];
    if (p == FLAS_PRECISION_BF16 && !flas_bf16_supported(why, sizeof why))
        return flas_fail(err, errlen, "bf16 precision is not available: %s", why);
    if (p != FLAS_PRECISION_FP32 && p != FLAS_PRECISION_BF16)
        return flas_fail(err, errlen, "unknown precision %d", (int)p);
    int reference = m->kernels == &flas_kernels_reference;
    m->precision = p;
    flas_model_use_reference(m, reference);
    return 0;
}

/* A layer that can fail (the bf16 products) reports after the pass: -1 with m->err. */
static int kernels_status(flas_model *m)
{
    return m->kernels->status ? m->kernels->status(m->err, sizeof m->err) : 0;
}

size_t flas_model_activation_bytes(const flas_model *m) { return m->acts ? m->acts->bytes : 0; }

/* ---- initialisation ---------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* A standard normal that depends only on (key, index): counter-based, so order and sharding do not
 * matter. Box-Muller on two 24-bit uniforms, u1 in (0, 1]. */
static float normal_at(uint64_t key, uint64_t index)
{
    uint64_t r = splitmix64(key ^ splitmix64(index));
    double u1 = ((double)(r >> 40) + 1.0) / 16777216.0;
    double u2 = (double)(r & 0xFFFFFF) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void flas_model_init_weights(flas_model *m, uint64_t seed)
{
    omp_set_num_threads(m->n_threads);
    const flas_param_table *t = &m->table;
    float residual_std = FLAS_INIT_STD / sqrtf(2.0f * (float)m->cfg.n_layers);
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        float *p = m->params + x->offset;
        if (x->ndim == 1) {
            for (size_t j = 0; j < x->numel; j++)
                p[j] = 1.0f;
            continue;
        }
        float std = (x->kind == FLAS_T_WO || x->kind == FLAS_T_W2) ? residual_std : FLAS_INIT_STD;
        uint64_t key = splitmix64(seed ^ splitmix64(0x5EEDull + (uint64_t)i));
        size_t rows = x->shape[0], cols = x->shape[1], full_cols = x->full_shape[1];
        size_t row0 = x->shard == FLAS_TP_SPLIT_ROWS ? x->shard_start : 0;
        size_t col0 = x->shard == FLAS_TP_SPLIT_COLS ? x->shard_start : 0;
#pragma omp parallel for schedule(static)
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < cols; c++)
                p[r * cols + c] = std * normal_at(key, (row0 + r) * full_cols + col0 + c);
    }
    flas_model_zero_grad(m);
}

void flas_model_zero_grad(flas_model *m) { memset(m->grads, 0, m->table.n_params * sizeof(float)); }

/* ---- forward / backward ------------------------------------------------------------------------ */

static void tp_allreduce(flas_model *m, float *buf, size_t n)
{
    if (m->tp_size > 1)
        m->allreduce_sum(buf, n, m->allreduce_ctx);
}

static void residual_add(float *out, const float *a, const float *b, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

static const float *param(const flas_model *m, flas_tensor_kind kind, int layer)
{
    return m->params + flas_param_get(&m->table, kind, layer)->offset;
}

static float *grad(const flas_model *m, flas_tensor_kind kind, int layer)
{
    return m->grads + flas_param_get(&m->table, kind, layer)->offset;
}

static flas_tensor_kind head_kind(const flas_model *m)
{
    return m->cfg.tied_embeddings ? FLAS_T_TOK_EMBEDDINGS : FLAS_T_OUTPUT;
}

int flas_model_forward(flas_model *m, const int *tokens, const int *targets, int B, int T, float *loss,
                       float *logits)
{
    struct flas_acts *a = m->acts;
    const flas_kernels *K = m->kernels;
    dims d = model_dims(m);
    if (B <= 0 || T <= 0 || B > m->max_batch || T > m->max_seq)
        return flas_fail(m->err, sizeof m->err, "batch %d x %d is outside the capacity %d x %d", B, T,
                       m->max_batch, m->max_seq);
    if (m->tp_size > 1 && !m->allreduce_sum)
        return flas_fail(m->err, sizeof m->err, "tp size %d needs an allreduce (flas_model_set_allreduce)",
                       m->tp_size);
    int N = B * T;
    for (int n = 0; n < N; n++) {
        if (tokens[n] < 0 || tokens[n] >= d.V)
            return flas_fail(m->err, sizeof m->err, "token %d at position %d is outside the vocabulary 0..%d",
                           tokens[n], n, d.V - 1);
        if (targets && (targets[n] < 0 || targets[n] >= d.V))
            return flas_fail(m->err, sizeof m->err, "target %d at position %d is outside the vocabulary 0..%d",
                           targets[n], n, d.V - 1);
    }
    omp_set_num_threads(m->n_threads);
    a->B = B;
    a->T = T;
    a->ready_for_backward = 0;
    memcpy(a->tokens, tokens, sizeof(int) * N);

    K->embedding_forward(a->blocks[0].res, tokens, param(m, FLAS_T_TOK_EMBEDDINGS, -1), N, d.D);
    for (int l = 0; l < d.L; l++) {
        block_acts *b = &a->blocks[l];
        float *next = l + 1 < d.L ? a->blocks[l + 1].res : a->res_final;
        K->rmsnorm_forward(b->xn1, b->rstd1, b->res, param(m, FLAS_T_ATTENTION_NORM, l), N, d.D, m->cfg.norm_eps);
        /* wq|wk|wv are adjacent rows of one [qD+2kvD, D] matrix: one product. */
        K->matmul_forward(b->qkv, b->xn1, param(m, FLAS_T_WQ, l), N, d.D, d.qkvD);
        K->rope_forward(b->qkv, B, T, d.Hq, d.hd, d.qkvD, a->rope_cos, a->rope_sin);
        K->rope_forward(b->qkv + d.qD, B, T, d.Hkv, d.hd, d.qkvD, a->rope_cos, a->rope_sin);
        K->attention_forward(b->att, b->probs, b->qkv, b->qkv + d.qD, b->qkv + d.qD + d.kvD, d.qkvD, B, T,
                             d.Hq, d.Hkv, d.hd);
        K->matmul_forward(a->y, b->att, param(m, FLAS_T_WO, l), N, d.qD, d.D);
        tp_allreduce(m, a->y, (size_t)N * d.D); /* row-parallel wo: sum the partial outputs */
        residual_add(b->res2, b->res, a->y, (size_t)N * d.D);
        K->rmsnorm_forward(b->xn2, b->rstd2, b->res2, param(m, FLAS_T_FFN_NORM, l), N, d.D, m->cfg.norm_eps);
        K->matmul_forward(b->h1, b->xn2, param(m, FLAS_T_W1, l), N, d.D, d.F);
        K->matmul_forward(b->h3, b->xn2, param(m, FLAS_T_W3, l), N, d.D, d.F);
        K->swiglu_forward(b->gate, b->h1, b->h3, (size_t)N * d.F);
        K->matmul_forward(a->y, b->gate, param(m, FLAS_T_W2, l), N, d.F, d.D);
        tp_allreduce(m, a->y, (size_t)N * d.D); /* row-parallel w2 */
        residual_add(next, b->res2, a->y, (size_t)N * d.D);
    }
    K->rmsnorm_forward(a->xn_final, a->rstd_final, a->res_final, param(m, FLAS_T_NORM, -1), N, d.D,
                       m->cfg.norm_eps);
    K->matmul_forward(a->logits, a->xn_final, param(m, head_kind(m), -1), N, d.D, d.V);
    if (kernels_status(m))
        return -1;
    if (logits)
        memcpy(logits, a->logits, sizeof(float) * (size_t)N * d.V);
    if (!targets) {
        if (loss)
            *loss = NAN;
        return 0;
    }
    memcpy(a->targets, targets, sizeof(int) * N);
    K->xent_forward(a->logits, a->losses, targets, N, d.V);
    double sum = 0.0;
    for (int n = 0; n < N; n++)
        sum += a->losses[n];
    if (loss)
        *loss = (float)(sum / N);
    a->ready_for_backward = 1;
    return 0;
}

int flas_model_backward(flas_model *m, float loss_scale)
{
    struct flas_acts *a = m->acts;
    const flas_kernels *K = m->kernels;
    dims d = model_dims(m);
    if (!a->ready_for_backward)
        return flas_fail(m->err, sizeof m->err, "backward needs a forward with targets first");
    omp_set_num_threads(m->n_threads);
    int B = a->B, T = a->T, N = B * T;
    a->ready_for_backward = 0; /* the probabilities are about to become gradients */

    /* Head: d(mean loss)/d(logits) = (probs - onehot) / N, the 1/N folded into the products. */
    K->xent_backward(a->logits, a->targets, N, d.V);
    K->matmul_backward(a->dxn, grad(m, head_kind(m), -1), a->logits, a->xn_final, param(m, head_kind(m), -1),
                       N, d.D, d.V, loss_scale / (float)N, false);
    memset(a->dres, 0, sizeof(float) * (size_t)N * d.D);
    K->rmsnorm_backward(a->dres, grad(m, FLAS_T_NORM, -1), a->dxn, a->res_final, param(m, FLAS_T_NORM, -1),
                        a->rstd_final, N, d.D);
    for (int l = d.L - 1; l >= 0; l--) {
        block_acts *b = &a->blocks[l];
        /* FFN: next = res2 + w2(silu(w1 xn2) * w3 xn2); dres holds d(next). */
        K->matmul_backward(a->dgate, grad(m, FLAS_T_W2, l), a->dres, b->gate, param(m, FLAS_T_W2, l), N, d.F,
                           d.D, 1.0f, false);
        K->swiglu_backward(a->dh1, a->dh3, a->dgate, b->h1, b->h3, (size_t)N * d.F);
        K->matmul_backward(a->dxn, grad(m, FLAS_T_W1, l), a->dh1, b->xn2, param(m, FLAS_T_W1, l), N, d.D, d.F,
                           1.0f, false);
        K->matmul_backward(a->dxn, grad(m, FLAS_T_W3, l), a->dh3, b->xn2, param(m, FLAS_T_W3, l), N, d.D, d.F,
                           1.0f, true);
        tp_allreduce(m, a->dxn, (size_t)N * d.D); /* column-parallel w1/w3: sum input gradients */
        K->rmsnorm_backward(a->dres, grad(m, FLAS_T_FFN_NORM, l), a->dxn, b->res2,
                            param(m, FLAS_T_FFN_NORM, l), b->rstd2, N, d.D);
        /* Attention: res2 = res + wo(att); dres now holds d(res2). */
        K->matmul_backward(a->datt, grad(m, FLAS_T_WO, l), a->dres, b->att, param(m, FLAS_T_WO, l), N, d.qD,
                           d.D, 1.0f, false);
        K->attention_backward(a->dqkv, a->dqkv + d.qD, a->dqkv + d.qD + d.kvD, a->dprobs, a->datt, b->probs,
                              b->qkv, b->qkv + d.qD, b->qkv + d.qD + d.kvD, d.qkvD, B, T, d.Hq, d.Hkv, d.hd);
        K->rope_backward(a->dqkv, B, T, d.Hq, d.hd, d.qkvD, a->rope_cos, a->rope_sin);
        K->rope_backward(a->dqkv + d.qD, B, T, d.Hkv, d.hd, d.qkvD, a->rope_cos, a->rope_sin);
        K->matmul_backward(a->dxn, grad(m, FLAS_T_WQ, l), a->dqkv, b->xn1, param(m, FLAS_T_WQ, l), N, d.D,
                           d.qkvD, 1.0f, false);
        tp_allreduce(m, a->dxn, (size_t)N * d.D); /* column-parallel wq/wk/wv */
        K->rmsnorm_backward(a->dres, grad(m, FLAS_T_ATTENTION_NORM, l), a->dxn, b->res,
                            param(m, FLAS_T_ATTENTION_NORM, l), b->rstd1, N, d.D);
    }
    K->embedding_backward(grad(m, FLAS_T_TOK_EMBEDDINGS, -1), a->dres, a->tokens, N, d.D);
    return kernels_status(m);
}

float flas_model_grad_norm(flas_model *m)
{
    omp_set_num_threads(m->n_threads);
    float sumsq = (float)flas_grad_sumsq_local(&m->table, m->grads);
    tp_allreduce(m, &sumsq, 1);
    return sqrtf(sumsq);
}

float flas_model_clip_grad_norm(flas_model *m, float max_norm)
{
    float norm = flas_model_grad_norm(m);
    float coef = max_norm / (norm + 1e-6f); /* torch.nn.utils.clip_grad_norm_'s rule */
    if (max_norm > 0.0f && coef < 1.0f)
        flas_scale(m->grads, m->table.n_params, coef);
    return norm;
}

double flas_model_flops_per_token(const flas_config *c, int T)
{
    double D = c->dim, hd = (double)c->dim / c->n_heads, H = c->hidden_dim, V = c->vocab_size;
    double per_layer = D * hd * c->n_heads * 2 + D * hd * c->n_kv_heads * 2 + 3.0 * D * H;
    double matmul_params = per_layer * c->n_layers + V * D; /* head: tied or not, one V x D product */
    return 6.0 * matmul_params + 12.0 * c->n_layers * (double)T * D;
}
