// The LLaMA-2 model on one GPU (tp 1): model.c's flas_model_forward / flas_model_backward, layer for layer,
// over device buffers and the kernels of kernels.h. See model_cuda.h for the API and the dtype rules.
//
// Correspondence with model.c (same names where the buffer is the same quantity):
//   model.c (fp32 everywhere)         here
//   b->res, res2, rstd1/2, qkv,       the same, fp32
//   probs, h1, h3; res_final,
//   rstd_final, logits, losses
//   b->xn1, xn2, xn_final             bf16 (written so by rmsnorm_forward: only matmuls read them)
//   b->att                            att32 (fp32, attention's output) -> b->att bf16 (wo's operand)
//   b->gate                           bf16 (swiglu_forward writes it so: only w2 reads it)
//   a->y, dres, dxn, datt, dqkv,      the same, fp32
//   dprobs, dgate
//   (dout operands of matmul_backward) dlogits (bf16 of probs - onehot), dres_bf, dqkv_bf, dh1, dh3 (bf16)
//   params + offset                   fp32 master (embedding, norms) or its bf16 mirror wbf + offset (matmuls)
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "model_cuda.h"

// Shapes, as model.c's dims with tp_size 1.
typedef struct dims {
    int D, Hq, Hkv, hd, qD, kvD, qkvD, F, V, L;
} dims;

// What forward keeps for backward, per block (model.c's block_acts), and the block's parameter offsets
// (floats into params/grads, elements into the bf16 mirror: the same index).
typedef struct layer_acts {
    float *res;         // [N,D] residual stream entering the block
    float *rstd1;       // [N]
    flas_bf16 *xn1;     // [N,D] attention_norm output
    float *qkv;         // [N,qkvD] q | k | v, RoPE applied to q and k
    float *probs;       // [B,Hq,T,T]
    flas_bf16 *att;     // [N,qD] attention output, wo's input
    float *res2;        // [N,D]
    float *rstd2;       // [N]
    flas_bf16 *xn2;     // [N,D] ffn_norm output
    float *h1, *h3;     // [N,F]
    flas_bf16 *gate;    // [N,F] silu(h1) * h3, w2's input
    size_t o_attn_norm, o_wq, o_wo, o_ffn_norm, o_w1, o_w2, o_w3;
} layer_acts;

struct flas_cuda_model {
    flas_cuda *c;
    flas_config cfg;
    flas_param_table table;
    dims d;
    int max_batch, max_seq;
    size_t o_emb, o_norm, o_head; // o_head = o_emb when the embeddings are tied
    // device
    void *arena;
    size_t arena_bytes;
    float *params, *grads;        // [n_params] fp32
    flas_bf16 *wbf;               // [n_params] bf16(params)
    layer_acts *layers;           // host array of L
    float *res_final, *rstd_final;
    flas_bf16 *xn_final;
    float *logits, *losses;       // [N,V], [N]
    float *y, *att32;             // [N,D], [N,qD]
    float *dres, *dxn, *datt, *dqkv, *dprobs, *dgate;
    flas_bf16 *dlogits, *dres_bf, *dqkv_bf, *dh1, *dh3;
    float *rope_cos, *rope_sin;   // [max_seq, hd/2]
    int *tokens, *targets;        // [N]
    double *sumsq;                // [1]
    float *moments;               // [2 n_params]: m then v (adamw_init)
    // host
    float *host_losses;           // [N]
    int B, T, ready_for_backward;
    float beta1, beta2, eps, weight_decay;
    long step;
    int adam_ready;
    char err[512];
};

__attribute__((format(printf, 2, 3))) static int mfail(flas_cuda_model *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
    return -1;
}

// A kernels.h call failed: its message is the context's (first) error.
static int ctx_fail(flas_cuda_model *m)
{
    snprintf(m->err, sizeof m->err, "%s", flas_cuda_error(m->c));
    return -1;
}

#define TRY(call)                                                                                        \
    do {                                                                                                 \
        if ((call) != 0)                                                                                 \
            return ctx_fail(m);                                                                          \
    } while (0)

// A CUDA runtime call of this file: recorded in the context like the kernels' own, then reported.
#define TRY_CUDA(call)                                                                                   \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess) {                                                                         \
            flas_cuda_fail(m->c, __FILE__, __LINE__, "%s: %s", #call, cudaGetErrorString(e_));           \
            return ctx_fail(m);                                                                          \
        }                                                                                                \
    } while (0)

// ---- layout ---------------------------------------------------------------------------------------------

// Carves 256-byte aligned arrays out of one allocation; the first pass (base NULL) only counts.
typedef struct carver {
    char *base;
    size_t used; // bytes
} carver;

static void *carve(carver *cv, size_t bytes)
{
    size_t start = cv->used;
    cv->used += (bytes + 255) / 256 * 256;
    return cv->base ? cv->base + start : NULL;
}

static float *carve_f(carver *cv, size_t n) { return (float *)carve(cv, n * sizeof(float)); }
static flas_bf16 *carve_bf(carver *cv, size_t n) { return (flas_bf16 *)carve(cv, n * sizeof(flas_bf16)); }

static void layout(flas_cuda_model *m, carver *cv)
{
    const dims *d = &m->d;
    size_t N = (size_t)m->max_batch * m->max_seq, np = m->table.n_params;
    size_t probs = (size_t)m->max_batch * d->Hq * m->max_seq * m->max_seq;
    m->params = carve_f(cv, np);
    m->grads = carve_f(cv, np);
    m->wbf = carve_bf(cv, np);
    for (int l = 0; l < d->L; l++) {
        layer_acts *b = &m->layers[l];
        b->res = carve_f(cv, N * d->D);
        b->rstd1 = carve_f(cv, N);
        b->xn1 = carve_bf(cv, N * d->D);
        b->qkv = carve_f(cv, N * d->qkvD);
        b->probs = carve_f(cv, probs);
        b->att = carve_bf(cv, N * d->qD);
        b->res2 = carve_f(cv, N * d->D);
        b->rstd2 = carve_f(cv, N);
        b->xn2 = carve_bf(cv, N * d->D);
        b->h1 = carve_f(cv, N * d->F);
        b->h3 = carve_f(cv, N * d->F);
        b->gate = carve_bf(cv, N * d->F);
    }
    m->res_final = carve_f(cv, N * d->D);
    m->rstd_final = carve_f(cv, N);
    m->xn_final = carve_bf(cv, N * d->D);
    m->logits = carve_f(cv, N * d->V);
    m->losses = carve_f(cv, N);
    m->y = carve_f(cv, N * d->D);
    m->att32 = carve_f(cv, N * d->qD);
    m->dres = carve_f(cv, N * d->D);
    m->dxn = carve_f(cv, N * d->D);
    m->datt = carve_f(cv, N * d->qD);
    m->dqkv = carve_f(cv, N * d->qkvD);
    m->dprobs = carve_f(cv, probs);
    m->dgate = carve_f(cv, N * d->F);
    m->dlogits = carve_bf(cv, N * d->V);
    m->dres_bf = carve_bf(cv, N * d->D);
    m->dqkv_bf = carve_bf(cv, N * d->qkvD);
    m->dh1 = carve_bf(cv, N * d->F);
    m->dh3 = carve_bf(cv, N * d->F);
    m->rope_cos = carve_f(cv, (size_t)m->max_seq * (d->hd / 2));
    m->rope_sin = carve_f(cv, (size_t)m->max_seq * (d->hd / 2));
    m->tokens = (int *)carve(cv, N * sizeof(int));
    m->targets = (int *)carve(cv, N * sizeof(int));
    m->sumsq = (double *)carve(cv, sizeof(double));
}

// The offset of a tensor after checking that it exists with the shape the layer sequence assumes.
static int tensor_at(flas_cuda_model *m, flas_tensor_kind kind, int layer, size_t rows, size_t cols, size_t *off)
{
    const flas_tensor *x = flas_param_get(&m->table, kind, layer);
    if (!x || x->shape[0] != rows || (cols ? x->ndim != 2 || x->shape[1] != cols : x->ndim != 1) ||
        x->numel != rows * (cols ? cols : 1))
        return mfail(m, "internal: tensor kind %d of layer %d is missing or not [%zu, %zu]", (int)kind, layer, rows,
                     cols);
    *off = x->offset;
    return 0;
}

static int resolve_offsets(flas_cuda_model *m)
{
    const dims *d = &m->d;
    size_t D = (size_t)d->D, qD = (size_t)d->qD, kvD = (size_t)d->kvD, F = (size_t)d->F, V = (size_t)d->V;
    if (tensor_at(m, FLAS_T_TOK_EMBEDDINGS, -1, V, D, &m->o_emb) || tensor_at(m, FLAS_T_NORM, -1, D, 0, &m->o_norm))
        return -1;
    if (m->cfg.tied_embeddings)
        m->o_head = m->o_emb;
    else if (tensor_at(m, FLAS_T_OUTPUT, -1, V, D, &m->o_head))
        return -1;
    for (int l = 0; l < d->L; l++) {
        layer_acts *b = &m->layers[l];
        size_t o_wk = 0, o_wv = 0;
        if (tensor_at(m, FLAS_T_ATTENTION_NORM, l, D, 0, &b->o_attn_norm) || tensor_at(m, FLAS_T_WQ, l, qD, D, &b->o_wq) ||
            tensor_at(m, FLAS_T_WK, l, kvD, D, &o_wk) || tensor_at(m, FLAS_T_WV, l, kvD, D, &o_wv) ||
            tensor_at(m, FLAS_T_WO, l, D, qD, &b->o_wo) || tensor_at(m, FLAS_T_FFN_NORM, l, D, 0, &b->o_ffn_norm) ||
            tensor_at(m, FLAS_T_W1, l, F, D, &b->o_w1) || tensor_at(m, FLAS_T_W2, l, D, F, &b->o_w2) ||
            tensor_at(m, FLAS_T_W3, l, F, D, &b->o_w3))
            return -1;
        // The fused q|k|v product reads wq, wk, wv as one [qD + 2 kvD, D] matrix (and writes their
        // gradients as one): they must be adjacent, as model.c checks.
        if (o_wk != b->o_wq + qD * D || o_wv != o_wk + kvD * D)
            return mfail(m, "internal: wq/wk/wv of layer %d are not adjacent in the table", l);
    }
    return 0;
}

// ---- life cycle -----------------------------------------------------------------------------------------

void flas_cuda_model_destroy(flas_cuda_model *m)
{
    if (!m)
        return;
    // Queued work may still use the buffers (errors ignored: the context reports them).
    cudaStreamSynchronize(m->c->stream);
    cudaFree(m->moments);
    cudaFree(m->arena);
    free(m->layers);
    free(m->host_losses);
    flas_param_table_free(&m->table);
    free(m);
}

static int create_fail(flas_cuda_model *m, char *err, size_t errlen)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", m->err);
    flas_cuda_model_destroy(m);
    return -1;
}

int flas_cuda_model_create(flas_cuda_model **out, flas_cuda *ctx, const flas_config *cfg, int max_batch,
                           int max_seq, char *err, size_t errlen)
{
    *out = NULL;
    flas_cuda_model *m = (flas_cuda_model *)calloc(1, sizeof *m);
    if (!m) {
        if (err && errlen)
            snprintf(err, errlen, "out of host memory");
        return -1;
    }
    m->c = ctx;
    m->cfg = *cfg;
    if (flas_param_table_init(&m->table, cfg, 0, 1, m->err, sizeof m->err)) {
        memset(&m->table, 0, sizeof m->table);
        return create_fail(m, err, errlen);
    }
    if (max_batch <= 0 || max_seq <= 0 || max_seq > cfg->seq_len) {
        mfail(m, "batch capacity %d x %d is outside 1..any x 1..seq_len %d", max_batch, max_seq, cfg->seq_len);
        return create_fail(m, err, errlen);
    }
    m->max_batch = max_batch;
    m->max_seq = max_seq;
    dims *d = &m->d;
    d->D = cfg->dim;
    d->hd = cfg->dim / cfg->n_heads;
    d->Hq = cfg->n_heads;
    d->Hkv = cfg->n_kv_heads;
    d->qD = d->Hq * d->hd;
    d->kvD = d->Hkv * d->hd;
    d->qkvD = d->qD + 2 * d->kvD;
    d->F = cfg->hidden_dim;
    d->V = cfg->vocab_size;
    d->L = cfg->n_layers;
    // Row counts go to the kernels as int; N * V elements as size_t.
    size_t N = (size_t)max_batch * max_seq;
    if (N > (size_t)INT_MAX || N * (size_t)d->V > ((size_t)1 << 40)) {
        mfail(m, "batch %d x %d is too large for vocabulary %d", max_batch, max_seq, d->V);
        return create_fail(m, err, errlen);
    }
    m->layers = (layer_acts *)calloc((size_t)d->L, sizeof(layer_acts));
    m->host_losses = (float *)malloc(N * sizeof(float));
    float *host_rope = (float *)malloc((size_t)max_seq * (d->hd / 2) * 2 * sizeof(float));
    if (!m->layers || !m->host_losses || !host_rope) {
        free(host_rope);
        mfail(m, "out of host memory");
        return create_fail(m, err, errlen);
    }
    if (resolve_offsets(m)) {
        free(host_rope);
        return create_fail(m, err, errlen);
    }
    carver cv = {NULL, 0};
    layout(m, &cv);
    cudaError_t e = cudaMalloc(&m->arena, cv.used);
    if (e != cudaSuccess) {
        m->arena = NULL;
        free(host_rope);
        mfail(m, "cudaMalloc(%.1f MiB for parameters, gradients and activations): %s", cv.used / 1048576.0,
              cudaGetErrorString(e));
        return create_fail(m, err, errlen);
    }
    m->arena_bytes = cv.used;
    cv = (carver){(char *)m->arena, 0};
    layout(m, &cv);
    // RoPE angles t * theta^(-2i/hd) in double, as model.c computes them.
    size_t half = (size_t)(d->hd / 2), tab = (size_t)max_seq * half;
    for (int t = 0; t < max_seq; t++)
        for (size_t i = 0; i < half; i++) {
            double freq = pow((double)cfg->rope_theta, -2.0 * (double)i / d->hd), ang = t * freq;
            host_rope[(size_t)t * half + i] = (float)cos(ang);
            host_rope[tab + (size_t)t * half + i] = (float)sin(ang);
        }
    cudaStream_t s = ctx->stream;
    size_t np = m->table.n_params;
    if ((e = cudaMemcpyAsync(m->rope_cos, host_rope, tab * sizeof(float), cudaMemcpyHostToDevice, s)) ||
        (e = cudaMemcpyAsync(m->rope_sin, host_rope + tab, tab * sizeof(float), cudaMemcpyHostToDevice, s)) ||
        (e = cudaMemsetAsync(m->params, 0, np * sizeof(float), s)) ||
        (e = cudaMemsetAsync(m->grads, 0, np * sizeof(float), s)) ||
        (e = cudaMemsetAsync(m->wbf, 0, np * sizeof(flas_bf16), s)) || (e = cudaStreamSynchronize(s))) {
        free(host_rope);
        mfail(m, "initialising the model's device buffers: %s", cudaGetErrorString(e));
        return create_fail(m, err, errlen);
    }
    free(host_rope);
    *out = m;
    return 0;
}

const char *flas_cuda_model_error(const flas_cuda_model *m) { return m->err; }
const flas_param_table *flas_cuda_model_table(const flas_cuda_model *m) { return &m->table; }
size_t flas_cuda_model_device_bytes(const flas_cuda_model *m)
{
    return m->arena_bytes + (m->moments ? 2 * m->table.n_params * sizeof(float) : 0);
}
float *flas_cuda_model_params(flas_cuda_model *m) { return m->params; }
float *flas_cuda_model_grads(flas_cuda_model *m) { return m->grads; }

// ---- parameters and gradients ---------------------------------------------------------------------------

int flas_cuda_model_set_params(flas_cuda_model *m, const float *host)
{
    size_t np = m->table.n_params;
    TRY_CUDA(cudaMemcpyAsync(m->params, host, np * sizeof(float), cudaMemcpyHostToDevice, m->c->stream));
    TRY(flas_cuda_f32_to_bf16(m->c, m->wbf, m->params, np));
    TRY(flas_cuda_sync(m->c));
    return 0;
}

int flas_cuda_model_get_params(flas_cuda_model *m, float *host)
{
    TRY_CUDA(cudaMemcpyAsync(host, m->params, m->table.n_params * sizeof(float), cudaMemcpyDeviceToHost,
                             m->c->stream));
    TRY(flas_cuda_sync(m->c));
    return 0;
}

int flas_cuda_model_get_grads(flas_cuda_model *m, float *host)
{
    TRY_CUDA(cudaMemcpyAsync(host, m->grads, m->table.n_params * sizeof(float), cudaMemcpyDeviceToHost,
                             m->c->stream));
    TRY(flas_cuda_sync(m->c));
    return 0;
}

int flas_cuda_model_zero_grad(flas_cuda_model *m)
{
    TRY_CUDA(cudaMemsetAsync(m->grads, 0, m->table.n_params * sizeof(float), m->c->stream));
    return 0;
}

// ---- forward / backward ---------------------------------------------------------------------------------

int flas_cuda_model_forward(flas_cuda_model *m, const int *tokens, const int *targets, int B, int T, float *loss,
                            float *logits)
{
    flas_cuda *c = m->c;
    const dims d = m->d;
    cudaStream_t s = c->stream;
    if (B <= 0 || T <= 0 || B > m->max_batch || T > m->max_seq)
        return mfail(m, "batch %d x %d is outside the capacity %d x %d", B, T, m->max_batch, m->max_seq);
    int N = B * T; // <= max_batch * max_seq <= INT_MAX (create)
    for (int n = 0; n < N; n++) {
        if (tokens[n] < 0 || tokens[n] >= d.V)
            return mfail(m, "token %d at position %d is outside the vocabulary 0..%d", tokens[n], n, d.V - 1);
        if (targets && (targets[n] < 0 || targets[n] >= d.V))
            return mfail(m, "target %d at position %d is outside the vocabulary 0..%d", targets[n], n, d.V - 1);
    }
    m->B = B;
    m->T = T;
    m->ready_for_backward = 0;
    const float *P = m->params;   // fp32 masters: embedding table, norm weights
    const flas_bf16 *W = m->wbf;  // bf16 mirror: the matmul weights
    const float eps = m->cfg.norm_eps;
    const size_t ND = (size_t)N * d.D, NF = (size_t)N * d.F;
    TRY_CUDA(cudaMemcpyAsync(m->tokens, tokens, sizeof(int) * (size_t)N, cudaMemcpyHostToDevice, s));
    if (targets)
        TRY_CUDA(cudaMemcpyAsync(m->targets, targets, sizeof(int) * (size_t)N, cudaMemcpyHostToDevice, s));

    TRY(flas_cuda_embedding_forward(c, m->layers[0].res, m->tokens, P + m->o_emb, N, d.D, d.V));
    for (int l = 0; l < d.L; l++) {
        layer_acts *b = &m->layers[l];
        float *next = l + 1 < d.L ? m->layers[l + 1].res : m->res_final;
        TRY(flas_cuda_rmsnorm_forward(c, b->xn1, FLAS_BF16, b->rstd1, b->res, P + b->o_attn_norm, N, d.D, eps));
        // wq|wk|wv are adjacent rows of one [qD + 2 kvD, D] matrix: one product.
        TRY(flas_cuda_matmul_forward(c, b->qkv, FLAS_F32, b->xn1, W + b->o_wq, N, d.D, d.qkvD));
        TRY(flas_cuda_rope_forward(c, b->qkv, B, T, d.Hq, d.hd, d.qkvD, m->rope_cos, m->rope_sin));
        TRY(flas_cuda_rope_forward(c, b->qkv + d.qD, B, T, d.Hkv, d.hd, d.qkvD, m->rope_cos, m->rope_sin));
        TRY(flas_cuda_attention_forward(c, m->att32, b->probs, b->qkv, b->qkv + d.qD, b->qkv + d.qD + d.kvD, d.qkvD,
                                        B, T, d.Hq, d.Hkv, d.hd));
        TRY(flas_cuda_f32_to_bf16(c, b->att, m->att32, (size_t)N * d.qD));
        TRY(flas_cuda_matmul_forward(c, m->y, FLAS_F32, b->att, W + b->o_wo, N, d.qD, d.D));
        TRY(flas_cuda_residual_add(c, b->res2, b->res, m->y, ND));
        TRY(flas_cuda_rmsnorm_forward(c, b->xn2, FLAS_BF16, b->rstd2, b->res2, P + b->o_ffn_norm, N, d.D, eps));
        TRY(flas_cuda_matmul_forward(c, b->h1, FLAS_F32, b->xn2, W + b->o_w1, N, d.D, d.F));
        TRY(flas_cuda_matmul_forward(c, b->h3, FLAS_F32, b->xn2, W + b->o_w3, N, d.D, d.F));
        TRY(flas_cuda_swiglu_forward(c, b->gate, FLAS_BF16, b->h1, b->h3, NF));
        TRY(flas_cuda_matmul_forward(c, m->y, FLAS_F32, b->gate, W + b->o_w2, N, d.F, d.D));
        TRY(flas_cuda_residual_add(c, next, b->res2, m->y, ND));
    }
    TRY(flas_cuda_rmsnorm_forward(c, m->xn_final, FLAS_BF16, m->rstd_final, m->res_final, P + m->o_norm, N, d.D,
                                  eps));
    TRY(flas_cuda_matmul_forward(c, m->logits, FLAS_F32, m->xn_final, W + m->o_head, N, d.D, d.V));
    if (logits)
        TRY_CUDA(cudaMemcpyAsync(logits, m->logits, sizeof(float) * (size_t)N * d.V, cudaMemcpyDeviceToHost, s));
    if (!targets) {
        TRY(flas_cuda_sync(c));
        if (loss)
            *loss = NAN;
        return 0;
    }
    TRY(flas_cuda_xent_forward(c, m->logits, m->losses, m->targets, N, d.V));
    TRY_CUDA(cudaMemcpyAsync(m->host_losses, m->losses, sizeof(float) * (size_t)N, cudaMemcpyDeviceToHost, s));
    TRY(flas_cuda_sync(c));
    double sum = 0.0; // model.c's order: rows 0..N-1 in double
    for (int n = 0; n < N; n++)
        sum += m->host_losses[n];
    if (loss)
        *loss = (float)(sum / N);
    m->ready_for_backward = 1;
    return 0;
}

int flas_cuda_model_backward(flas_cuda_model *m, float loss_scale)
{
    flas_cuda *c = m->c;
    const dims d = m->d;
    if (!m->ready_for_backward)
        return mfail(m, "backward needs a forward with targets first");
    int B = m->B, T = m->T, N = B * T;
    m->ready_for_backward = 0; // the probabilities are about to become gradients
    const float *P = m->params;
    const flas_bf16 *W = m->wbf;
    float *G = m->grads;
    const size_t ND = (size_t)N * d.D, NF = (size_t)N * d.F;

    // Head: d(mean loss)/d(logits) = (probs - onehot) / N, the 1/N (and loss_scale) folded into the product.
    TRY(flas_cuda_xent_backward(c, m->logits, m->targets, N, d.V));
    TRY(flas_cuda_f32_to_bf16(c, m->dlogits, m->logits, (size_t)N * d.V));
    TRY(flas_cuda_matmul_backward(c, m->dxn, FLAS_F32, G + m->o_head, m->dlogits, m->xn_final, W + m->o_head, N, d.D,
                                  d.V, loss_scale / (float)N, false));
    TRY_CUDA(cudaMemsetAsync(m->dres, 0, sizeof(float) * ND, c->stream));
    TRY(flas_cuda_rmsnorm_backward(c, m->dres, G + m->o_norm, m->dxn, m->res_final, P + m->o_norm, m->rstd_final, N,
                                   d.D));
    for (int l = d.L - 1; l >= 0; l--) {
        layer_acts *b = &m->layers[l];
        // FFN: next = res2 + w2(silu(w1 xn2) * w3 xn2); dres holds d(next).
        TRY(flas_cuda_f32_to_bf16(c, m->dres_bf, m->dres, ND));
        TRY(flas_cuda_matmul_backward(c, m->dgate, FLAS_F32, G + b->o_w2, m->dres_bf, b->gate, W + b->o_w2, N, d.F,
                                      d.D, 1.0f, false));
        TRY(flas_cuda_swiglu_backward(c, m->dh1, m->dh3, FLAS_BF16, m->dgate, b->h1, b->h3, NF));
        TRY(flas_cuda_matmul_backward(c, m->dxn, FLAS_F32, G + b->o_w1, m->dh1, b->xn2, W + b->o_w1, N, d.D, d.F,
                                      1.0f, false));
        TRY(flas_cuda_matmul_backward(c, m->dxn, FLAS_F32, G + b->o_w3, m->dh3, b->xn2, W + b->o_w3, N, d.D, d.F,
                                      1.0f, true));
        TRY(flas_cuda_rmsnorm_backward(c, m->dres, G + b->o_ffn_norm, m->dxn, b->res2, P + b->o_ffn_norm, b->rstd2, N,
                                       d.D));
        // Attention: res2 = res + wo(att); dres now holds d(res2).
        TRY(flas_cuda_f32_to_bf16(c, m->dres_bf, m->dres, ND));
        TRY(flas_cuda_matmul_backward(c, m->datt, FLAS_F32, G + b->o_wo, m->dres_bf, b->att, W + b->o_wo, N, d.qD,
                                      d.D, 1.0f, false));
        TRY(flas_cuda_attention_backward(c, m->dqkv, m->dqkv + d.qD, m->dqkv + d.qD + d.kvD, m->dprobs, m->datt,
                                         b->probs, b->qkv, b->qkv + d.qD, b->qkv + d.qD + d.kvD, d.qkvD, B, T, d.Hq,
                                         d.Hkv, d.hd));
        TRY(flas_cuda_rope_backward(c, m->dqkv, B, T, d.Hq, d.hd, d.qkvD, m->rope_cos, m->rope_sin));
        TRY(flas_cuda_rope_backward(c, m->dqkv + d.qD, B, T, d.Hkv, d.hd, d.qkvD, m->rope_cos, m->rope_sin));
        TRY(flas_cuda_f32_to_bf16(c, m->dqkv_bf, m->dqkv, (size_t)N * d.qkvD));
        TRY(flas_cuda_matmul_backward(c, m->dxn, FLAS_F32, G + b->o_wq, m->dqkv_bf, b->xn1, W + b->o_wq, N, d.D,
                                      d.qkvD, 1.0f, false));
        TRY(flas_cuda_rmsnorm_backward(c, m->dres, G + b->o_attn_norm, m->dxn, b->res, P + b->o_attn_norm, b->rstd1,
                                       N, d.D));
    }
    TRY(flas_cuda_embedding_backward(c, G + m->o_emb, m->dres, m->tokens, N, d.D, d.V));
    TRY(flas_cuda_sync(c));
    return 0;
}

// ---- gradient norm, clipping, AdamW ---------------------------------------------------------------------

static int norm_from_device(flas_cuda_model *m, float *norm)
{
    double h = 0.0;
    TRY_CUDA(cudaMemcpyAsync(&h, m->sumsq, sizeof h, cudaMemcpyDeviceToHost, m->c->stream));
    TRY(flas_cuda_sync(m->c));
    if (norm)
        *norm = sqrtf((float)h); // model.c: float sumsq = (float)double; sqrtf(sumsq)
    return 0;
}

int flas_cuda_model_grad_norm(flas_cuda_model *m, float *norm)
{
    TRY(flas_cuda_sumsq(m->c, m->sumsq, m->grads, m->table.n_params, false));
    return norm_from_device(m, norm);
}

int flas_cuda_model_clip_grad_norm(flas_cuda_model *m, float max_norm, float *norm)
{
    TRY(flas_cuda_sumsq(m->c, m->sumsq, m->grads, m->table.n_params, false));
    TRY(flas_cuda_clip(m->c, m->grads, m->table.n_params, m->sumsq, max_norm));
    return norm_from_device(m, norm);
}

int flas_cuda_model_adamw_init(flas_cuda_model *m, float beta1, float beta2, float eps, float weight_decay)
{
    size_t np = m->table.n_params;
    m->adam_ready = 0;
    if (!m->moments) {
        cudaError_t e = cudaMalloc(&m->moments, 2 * np * sizeof(float));
        if (e != cudaSuccess) {
            m->moments = NULL;
            return mfail(m, "cudaMalloc(%.1f MiB of AdamW moments): %s", 2.0 * np * sizeof(float) / 1048576.0,
                         cudaGetErrorString(e));
        }
    }
    TRY_CUDA(cudaMemsetAsync(m->moments, 0, 2 * np * sizeof(float), m->c->stream));
    m->beta1 = beta1;
    m->beta2 = beta2;
    m->eps = eps;
    m->weight_decay = weight_decay;
    m->step = 0;
    m->adam_ready = 1;
    return 0;
}

int flas_cuda_model_adamw_step(flas_cuda_model *m, float lr)
{
    if (!m->adam_ready)
        return mfail(m, "adamw_step needs adamw_init first");
    m->step++;
    const flas_param_table *t = &m->table;
    float *mm = m->moments, *vv = m->moments + t->n_params;
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        // optimizer.c: decoupled weight decay on 2-D tensors only (not the RMSNorm weights)
        float wd = x->ndim == 2 ? m->weight_decay : 0.0f;
        TRY(flas_cuda_adamw(m->c, m->params + x->offset, mm + x->offset, vv + x->offset, m->grads + x->offset,
                            m->wbf + x->offset, x->numel, lr, m->beta1, m->beta2, m->eps, wd, m->step));
    }
    TRY(flas_cuda_sync(m->c));
    return 0;
}
