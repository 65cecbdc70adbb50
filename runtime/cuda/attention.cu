// Causal grouped-query attention, first version: fp32 strided-batched cuBLAS products (no TF32) and
// row-wise softmax kernels, the same arithmetic as layers_ref.c's attention with the [B,Hq,T,T]
// probabilities materialised. The fused (flash-style, bf16) kernel is the later target.
//
// Batching with GQA and no copies: query head h = g * group + r (group = Hq/Hkv) reads kv head g. For a
// fixed batch row b and member r of the group, the heads h = r, group + r, 2 group + r, ... pair with
// kv heads g = 0, 1, 2, ...: constant strides (q: group*hd columns, k/v: hd columns, probs: group*T*T),
// so one strided-batched call of Hkv products per (b, r), B * group calls in all. Each batch of a call
// writes to a different head's columns (disjoint elements, interleaved within the rows of stride ld).
// dk and dv sum over the group's r: the call for r = 0 overwrites (beta 0, as layers.h asks), the others add.
#include <math.h>

#include "common.cuh"

#define ROWS_PER_BLOCK 8 // one warp per row of probabilities

// Row-major C[M,N] = alpha op(A) op(B) + beta C over `batch` products (strides in floats), fp32; as
// column-major C^T = op(B)^T op(A)^T: operands swapped, flags kept, m = N, n = M (see matmul.cu).
static int rm_sgemm_batched(flas_cuda *c, bool transa, bool transb, int M, int N, int K, float alpha, const float *A,
                            int lda, long long sa, const float *B, int ldb, long long sb, float beta, float *C, int ldc,
                            long long sc, int batch)
{
    CUBLAS_CHECK(c, cublasSgemmStridedBatched(c->blas, transb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                              transa ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb, sb, A, lda,
                                              sa, &beta, C, ldc, sc, batch));
    return 0;
}

// Row r of the [B*Hq*T, T] probabilities is query position i = r % T: softmax over j <= i of the scaled
// scores already in the row, zeros for j > i.
__global__ void causal_softmax_forward_kernel(float *P, int T, size_t rows)
{
    size_t r = (size_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) // the whole warp leaves together: the shuffles below see all 32 lanes
        return;
    int i = (int)(r % T);
    float *row = P + r * T;
    float mx = -INFINITY;
    for (int j = lane; j <= i; j += 32)
        mx = fmaxf(mx, row[j]);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j <= i; j += 32)
        s += expf(row[j] - mx);
    s = warp_sum(s);
    for (int j = lane; j < T; j += 32)
        row[j] = j <= i ? expf(row[j] - mx) / s : 0.0f;
}

// In place on dP (= dout . v^T): dS_ij = scale P_ij (dP_ij - sum_k P_ik dP_ik) for j <= i, 0 beyond.
__global__ void causal_softmax_backward_kernel(float *dP, const float *P, int T, size_t rows, float scale)
{
    size_t r = (size_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows)
        return;
    int i = (int)(r % T);
    float *drow = dP + r * T;
    const float *prow = P + r * T;
    float dot = 0.0f;
    for (int j = lane; j <= i; j += 32)
        dot += prow[j] * drow[j];
    dot = warp_sum(dot);
    for (int j = lane; j < T; j += 32)
        drow[j] = j <= i ? scale * prow[j] * (drow[j] - dot) : 0.0f;
}

static int check_shape(flas_cuda *c, int ld, int B, int T, int Hq, int Hkv, int hd)
{
    ARG_CHECK(c, B > 0 && T > 0 && Hq > 0 && Hkv > 0 && hd > 0);
    ARG_CHECK(c, Hq % Hkv == 0);
    ARG_CHECK(c, ld >= Hkv * hd && ld >= hd);
    return 0;
}

extern "C" int flas_cuda_attention_forward(flas_cuda *c, float *out, float *probs, const float *q, const float *k,
                                           const float *v, int ld, int B, int T, int Hq, int Hkv, int hd)
{
    if (check_shape(c, ld, B, T, Hq, Hkv, hd))
        return -1;
    int group = Hq / Hkv, ldo = Hq * hd;
    size_t TT = (size_t)T * T;
    float scale = 1.0f / sqrtf((float)hd);
    // Scores: S_h[T,T] = scale Q_h[T,hd] . K_g[T,hd]^T, straight into probs.
    for (int b = 0; b < B; b++)
        for (int r = 0; r < group; r++)
            if (rm_sgemm_batched(c, false, true, T, T, hd, scale, q + (size_t)b * T * ld + (size_t)r * hd, ld,
                                 (long long)group * hd, k + (size_t)b * T * ld, ld, hd, 0.0f,
                                 probs + ((size_t)b * Hq + r) * TT, T, (long long)group * TT, Hkv))
                return -1;
    size_t rows = (size_t)B * Hq * T;
    causal_softmax_forward_kernel<<<(unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, 0,
                                    c->stream>>>(probs, T, rows);
    LAUNCH_CHECK(c);
    // out_h[T,hd] = P_h[T,T] . V_g[T,hd], into columns h*hd of out[N, Hq*hd].
    for (int b = 0; b < B; b++)
        for (int r = 0; r < group; r++)
            if (rm_sgemm_batched(c, false, false, T, hd, T, 1.0f, probs + ((size_t)b * Hq + r) * TT, T,
                                 (long long)group * TT, v + (size_t)b * T * ld, ld, hd, 0.0f,
                                 out + (size_t)b * T * ldo + (size_t)r * hd, ldo, (long long)group * hd, Hkv))
                return -1;
    return 0;
}

extern "C" int flas_cuda_attention_backward(flas_cuda *c, float *dq, float *dk, float *dv, float *dprobs,
                                            const float *dout, const float *probs, const float *q, const float *k,
                                            const float *v, int ld, int B, int T, int Hq, int Hkv, int hd)
{
    if (check_shape(c, ld, B, T, Hq, Hkv, hd))
        return -1;
    int group = Hq / Hkv, ldo = Hq * hd;
    size_t TT = (size_t)T * T;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++)
        for (int r = 0; r < group; r++) {
            const float *dob = dout + (size_t)b * T * ldo + (size_t)r * hd;
            const float *Pb = probs + ((size_t)b * Hq + r) * TT;
            // dP_h[T,T] = dout_h[T,hd] . V_g[T,hd]^T
            if (rm_sgemm_batched(c, false, true, T, T, hd, 1.0f, dob, ldo, (long long)group * hd,
                                 v + (size_t)b * T * ld, ld, hd, 0.0f, dprobs + ((size_t)b * Hq + r) * TT, T,
                                 (long long)group * TT, Hkv))
                return -1;
            // dV_g[T,hd] (+)= P_h^T . dout_h: P_h's storage [T(i), T(j)] is the [K, M] of a transposed A.
            if (rm_sgemm_batched(c, true, false, T, hd, T, 1.0f, Pb, T, (long long)group * TT, dob, ldo,
                                 (long long)group * hd, r ? 1.0f : 0.0f, dv + (size_t)b * T * ld, ld, hd, Hkv))
                return -1;
        }
    size_t rows = (size_t)B * Hq * T;
    causal_softmax_backward_kernel<<<(unsigned)((rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK), 32 * ROWS_PER_BLOCK, 0,
                                     c->stream>>>(dprobs, probs, T, rows, scale);
    LAUNCH_CHECK(c);
    for (int b = 0; b < B; b++)
        for (int r = 0; r < group; r++) {
            const float *dSb = dprobs + ((size_t)b * Hq + r) * TT;
            // dQ_h[T,hd] = dS_h[T,T] . K_g[T,hd]
            if (rm_sgemm_batched(c, false, false, T, hd, T, 1.0f, dSb, T, (long long)group * TT,
                                 k + (size_t)b * T * ld, ld, hd, 0.0f, dq + (size_t)b * T * ld + (size_t)r * hd, ld,
                                 (long long)group * hd, Hkv))
                return -1;
            // dK_g[T,hd] (+)= dS_h^T . Q_h[T,hd]
            if (rm_sgemm_batched(c, true, false, T, hd, T, 1.0f, dSb, T, (long long)group * TT,
                                 q + (size_t)b * T * ld + (size_t)r * hd, ld, (long long)group * hd, r ? 1.0f : 0.0f,
                                 dk + (size_t)b * T * ld, ld, hd, Hkv))
                return -1;
        }
    return 0;
}
