/* Fast layers: matrix products through BLAS (gemm.c), everything else OpenMP loops that the compiler
 * vectorises. Same contracts as the reference (layers.h); tests/core checks fast == reference. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "fastmath.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "layers.h"

static void matmul_forward(float *out, const float *in, const float *W, int N, int Nin, int Nout)
{
    flas_sgemm(false, true, N, Nout, Nin, 1.0f, in, Nin, W, Nin, 0.0f, out, Nout);
}

static void matmul_backward(float *din, float *dW, const float *dout, const float *in, const float *W,
                            int N, int Nin, int Nout, float alpha, bool din_accumulate)
{
    if (din)
        flas_sgemm(false, false, N, Nin, Nout, alpha, dout, Nout, W, Nin, din_accumulate ? 1.0f : 0.0f, din, Nin);
    flas_sgemm(true, false, Nout, Nin, N, alpha, dout, Nout, in, Nin, 1.0f, dW, Nin);
}

static void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                            float eps)
{
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D;
        float *on = out + (size_t)n * D;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int d = 0; d < D; d++)
            ss += xn[d] * xn[d];
        float r = 1.0f / sqrtf(ss / (float)D + eps);
        rstd[n] = r;
#pragma omp simd
        for (int d = 0; d < D; d++)
            on[d] = xn[d] * r * w[d];
    }
}

/* Column block per thread for the weight gradient, so no thread-private copies need reducing. */
#define RMS_DW_BLOCK 64

static void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                             const float *rstd, int N, int D)
{
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int n = 0; n < N; n++) {
            const float *xn = x + (size_t)n * D, *dy = dout + (size_t)n * D;
            float *dxn = dx + (size_t)n * D;
            float r = rstd[n], dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int d = 0; d < D; d++)
                dot += dy[d] * w[d] * xn[d];
            float c = r * r * r / (float)D * dot;
#pragma omp simd
            for (int d = 0; d < D; d++)
                dxn[d] += r * dy[d] * w[d] - c * xn[d];
        }
        int blocks = (D + RMS_DW_BLOCK - 1) / RMS_DW_BLOCK;
#pragma omp for schedule(static)
        for (int blk = 0; blk < blocks; blk++) {
            int d0 = blk * RMS_DW_BLOCK, d1 = d0 + RMS_DW_BLOCK < D ? d0 + RMS_DW_BLOCK : D;
            float acc[RMS_DW_BLOCK] = {0};
            for (int n = 0; n < N; n++) {
                const float *xn = x + (size_t)n * D, *dy = dout + (size_t)n * D;
                float r = rstd[n];
#pragma omp simd
                for (int d = d0; d < d1; d++)
                    acc[d - d0] += dy[d] * xn[d] * r;
            }
            for (int d = d0; d < d1; d++)
                dw[d] += acc[d - d0];
        }
    }
}

static void rope(float *x, int B, int T, int n_heads, int hd, int ld, const float *cos_t,
                 const float *sin_t, float direction)
{
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int row = 0; row < B * T; row++) {
        int t = row % T;
        const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)row * ld + (size_t)h * hd;
#pragma omp simd
            for (int i = 0; i < half; i++) {
                float re = v[2 * i], im = v[2 * i + 1], si = direction * s[i];
                v[2 * i] = re * c[i] - im * si;
                v[2 * i + 1] = re * si + im * c[i];
            }
        }
    }
}

static void rope_forward(float *x, int B, int T, int n_heads, int hd, int ld, const float *c, const float *s)
{
    rope(x, B, T, n_heads, hd, ld, c, s, 1.0f);
}

static void rope_backward(float *dx, int B, int T, int n_heads, int hd, int ld, const float *c, const float *s)
{
    rope(dx, B, T, n_heads, hd, ld, c, s, -1.0f);
}

/* Causal attention is computed in blocks of ATT_BLOCK query rows: block r0.. needs keys 0..r0+rows-1
 * only, so the products skip the upper block triangle (for T = 256: 62% of the full work, T = 512:
 * 56%) and nothing above the diagonal block is ever written or read. */
#ifndef ATT_BLOCK
#define ATT_BLOCK 64
#endif

/* Row i of a causal score matrix: softmax over columns 0..i; columns i+1..n-1 (the rest of the
 * diagonal block, which the next product reads) become zero. */
static void causal_softmax_row(float *row, int i, int n)
{
    float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
    for (int j = 0; j <= i; j++)
        maxv = row[j] > maxv ? row[j] : maxv;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j <= i; j++) {
        float e = flas_expf(row[j] - maxv);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j <= i; j++)
        row[j] *= inv;
    for (int j = i + 1; j < n; j++)
        row[j] = 0.0f;
}

/* One (batch, head) pair per task, spread over the team; within a task, per row block two BLAS
 * products around a softmax, all on one thread. */
static void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                              int ld, int B, int T, int Hq, int Hkv, int hd)
{
    int group = Hq / Hkv, ldo = Hq * hd;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * Hq; task++) {
        int b = task / Hq, h = task % Hq, g = h / group;
        const float *qb = q + (size_t)b * T * ld + (size_t)h * hd;
        const float *kb = k + (size_t)b * T * ld + (size_t)g * hd;
        const float *vb = v + (size_t)b * T * ld + (size_t)g * hd;
        float *P = probs + (size_t)task * T * T, *ob = out + (size_t)b * T * ldo + (size_t)h * hd;
        for (int r0 = 0; r0 < T; r0 += ATT_BLOCK) {
            int rows = T - r0 < ATT_BLOCK ? T - r0 : ATT_BLOCK, keys = r0 + rows;
            float *Pr = P + (size_t)r0 * T;
            flas_sgemm(false, true, rows, keys, hd, scale, qb + (size_t)r0 * ld, ld, kb, ld, 0.0f, Pr, T);
            for (int i = 0; i < rows; i++)
                causal_softmax_row(Pr + (size_t)i * T, r0 + i, keys);
            flas_sgemm(false, false, rows, hd, keys, 1.0f, Pr, T, vb, ld, 0.0f, ob + (size_t)r0 * ldo, ldo);
        }
    }
}

/* One (batch, kv head) pair per task: the query heads sharing a kv head accumulate into its dk/dv in
 * turn, so no two threads write the same rows. */
static void attention_backward(float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                               const float *probs, const float *q, const float *k, const float *v, int ld,
                               int B, int T, int Hq, int Hkv, int hd)
{
    int group = Hq / Hkv, ldo = Hq * hd;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * Hkv; task++) {
        int b = task / Hkv, g = task % Hkv;
        const float *kb = k + (size_t)b * T * ld + (size_t)g * hd;
        const float *vb = v + (size_t)b * T * ld + (size_t)g * hd;
        float *dkb = dk + (size_t)b * T * ld + (size_t)g * hd;
        float *dvb = dv + (size_t)b * T * ld + (size_t)g * hd;
        for (int t = 0; t < T; t++) {
            memset(dkb + (size_t)t * ld, 0, sizeof(float) * hd);
            memset(dvb + (size_t)t * ld, 0, sizeof(float) * hd);
        }
        for (int r = 0; r < group; r++) {
            int h = g * group + r;
            const float *P = probs + ((size_t)b * Hq + h) * T * T;
            float *dP = dprobs + ((size_t)b * Hq + h) * T * T;
            const float *qb = q + (size_t)b * T * ld + (size_t)h * hd;
            const float *dob = dout + (size_t)b * T * ldo + (size_t)h * hd;
            float *dqb = dq + (size_t)b * T * ld + (size_t)h * hd;
            for (int r0 = 0; r0 < T; r0 += ATT_BLOCK) {
                int rows = T - r0 < ATT_BLOCK ? T - r0 : ATT_BLOCK, keys = r0 + rows;
                const float *Pr = P + (size_t)r0 * T, *dOr = dob + (size_t)r0 * ldo;
                float *dPr = dP + (size_t)r0 * T;
                flas_sgemm(false, true, rows, keys, hd, 1.0f, dOr, ldo, vb, ld, 0.0f, dPr, T); /* dP = dO.V^T */
                flas_sgemm(true, false, keys, hd, rows, 1.0f, Pr, T, dOr, ldo, 1.0f, dvb, ld);  /* dV += P^T.dO */
                for (int i = 0; i < rows; i++) {
                    const float *Pi = Pr + (size_t)i * T;
                    float *dPi = dPr + (size_t)i * T, dot = 0.0f;
                    int last = r0 + i;
#pragma omp simd reduction(+ : dot)
                    for (int j = 0; j <= last; j++)
                        dot += Pi[j] * dPi[j];
#pragma omp simd
                    for (int j = 0; j <= last; j++)
                        dPi[j] = Pi[j] * (dPi[j] - dot);
                    for (int j = last + 1; j < keys; j++)
                        dPi[j] = 0.0f;
                }
                flas_sgemm(false, false, rows, hd, keys, scale, dPr, T, kb, ld, 0.0f, dqb + (size_t)r0 * ld,
                           ld);                                                                /* dQ = dS.K */
                flas_sgemm(true, false, keys, hd, rows, scale, dPr, T, qb + (size_t)r0 * ld, ld, 1.0f, dkb,
                           ld);                                                                /* dK += dS^T.Q */
            }
        }
    }
}

static void swiglu_forward(float *g, const float *h1, const float *h3, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++)
        g[i] = h1[i] / (1.0f + flas_expf(-h1[i])) * h3[i];
}

static void swiglu_backward(float *dh1, float *dh3, const float *dg, const float *h1, const float *h3,
                            size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = h1[i], s = 1.0f / (1.0f + flas_expf(-x));
        dh1[i] = dg[i] * h3[i] * s * (1.0f + x * (1.0f - s));
        dh3[i] = dg[i] * x * s;
    }
}

static void embedding_forward(float *out, const int *tokens, const float *table, int N, int D)
{
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * D, table + (size_t)tokens[n] * D, sizeof(float) * D);
}

/* Threads own column blocks, so repeated tokens never race. */
static void embedding_backward(float *dtable, const float *dout, const int *tokens, int N, int D)
{
    int blocks = (D + 63) / 64;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        int d0 = blk * 64, d1 = d0 + 64 < D ? d0 + 64 : D;
        for (int n = 0; n < N; n++) {
            float *dst = dtable + (size_t)tokens[n] * D;
            const float *src = dout + (size_t)n * D;
#pragma omp simd
            for (int d = d0; d < d1; d++)
                dst[d] += src[d];
        }
    }
}

/* Each row is read from memory once (the max); the exp and the normalisation passes then hit the row
 * in L2 (32000 floats = 125 KiB). */
static void xent_forward(float *logits, float *losses, const int *targets, int N, int V)
{
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *row = logits + (size_t)n * V;
        float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
        for (int i = 0; i < V; i++)
            maxv = row[i] > maxv ? row[i] : maxv;
        float target_logit = row[targets[n]], sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < V; i++) {
            float e = flas_expf(row[i] - maxv);
            row[i] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
#pragma omp simd
        for (int i = 0; i < V; i++)
            row[i] *= inv;
        losses[n] = logf(sum) + maxv - target_logit;
    }
}

static void xent_backward(float *probs, const int *targets, int N, int V)
{
    for (int n = 0; n < N; n++)
        probs[(size_t)n * V + targets[n]] -= 1.0f;
}

const flas_kernels flas_kernels_fast = {
    .name = "fast",
    .matmul_forward = matmul_forward,
    .matmul_backward = matmul_backward,
    .rmsnorm_forward = rmsnorm_forward,
    .rmsnorm_backward = rmsnorm_backward,
    .rope_forward = rope_forward,
    .rope_backward = rope_backward,
    .attention_forward = attention_forward,
    .attention_backward = attention_backward,
    .swiglu_forward = swiglu_forward,
    .swiglu_backward = swiglu_backward,
    .embedding_forward = embedding_forward,
    .embedding_backward = embedding_backward,
    .xent_forward = xent_forward,
    .xent_backward = xent_backward,
};

/* ---- mixed precision (flas_model_set_precision): the fast layers with bf16 matrix products ---------
 * Linear layers (q|k|v, wo, w1, w3, w2 and the classifier) take bf16-rounded operands and accumulate in
 * fp32 through oneDNN; their fp32 outputs feed fp32 norms, RoPE, softmax and SwiGLU, and the weight
 * gradients accumulate in fp32. Attention's per-head products stay fp32 here: they run inside one
 * OpenMP region, where oneDNN's own team cannot, and at training contexts they are a small share of the
 * FLOPs (12 L T D of 6 P + 12 L T D per token). A failed product (out of memory) is kept until
 * bf16_status reports it after the pass. */
static char bf16_err[256];
static int bf16_failed;

static void bf16_gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
    char e[sizeof bf16_err];
    if (!bf16_failed && flas_gemm_bf16(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, e, sizeof e)) {
        memcpy(bf16_err, e, sizeof e);
        bf16_failed = 1;
    }
}

static void matmul_forward_bf16(float *out, const float *in, const float *W, int N, int Nin, int Nout)
{
    bf16_gemm(false, true, N, Nout, Nin, 1.0f, in, Nin, W, Nin, 0.0f, out, Nout);
}

static void matmul_backward_bf16(float *din, float *dW, const float *dout, const float *in, const float *W,
                                 int N, int Nin, int Nout, float alpha, bool din_accumulate)
{
    if (din)
        bf16_gemm(false, false, N, Nin, Nout, alpha, dout, Nout, W, Nin, din_accumulate ? 1.0f : 0.0f, din, Nin);
    bf16_gemm(true, false, Nout, Nin, N, alpha, dout, Nout, in, Nin, 1.0f, dW, Nin);
}

static int bf16_status(char *err, size_t errlen)
{
    if (!bf16_failed)
        return 0;
    snprintf(err, errlen, "bf16 product: %s", bf16_err);
    bf16_failed = 0;
    return -1;
}

const flas_kernels flas_kernels_bf16 = {
    .name = "bf16",
    .matmul_forward = matmul_forward_bf16,
    .matmul_backward = matmul_backward_bf16,
    .rmsnorm_forward = rmsnorm_forward,
    .rmsnorm_backward = rmsnorm_backward,
    .rope_forward = rope_forward,
    .rope_backward = rope_backward,
    .attention_forward = attention_forward,
    .attention_backward = attention_backward,
    .swiglu_forward = swiglu_forward,
    .swiglu_backward = swiglu_backward,
    .embedding_forward = embedding_forward,
    .embedding_backward = embedding_backward,
    .xent_forward = xent_forward,
    .xent_backward = xent_backward,
    .status = bf16_status,
};
