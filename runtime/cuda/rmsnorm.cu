// RMSNorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). Statistics in fp32; x (the residual stream),
// w (the fp32 master), rstd, and all gradients fp32; the forward output fp32 or bf16 (it feeds a matmul).
#include "common.cuh"

// Rows of dw's partial sums in the backward (see rmsnorm_dw_partial_kernel).
#define DW_ROWS 128

// One block per row: the sum of squares by a block reduction, then the scaled row.
template <typename T>
__global__ void rmsnorm_forward_kernel(T *out, float *rstd, const float *x, const float *w, int D, float eps)
{
    __shared__ float shared[32];
    size_t n = blockIdx.x;
    const float *xn = x + n * D;
    float ss = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        ss += xn[d] * xn[d];
    ss = block_sum(ss, shared);
    // 1/sqrtf rather than rsqrtf: correctly rounded steps (rsqrtf is up to 2 ulp off).
    float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (threadIdx.x == 0)
        rstd[n] = r;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        store_as(out + n * D + d, xn[d] * r * w[d]);
}

// dx_j += r dy_j w_j - r^3/D x_j sum_d dy_d w_d x_d   (the derivation is above layers_ref.c's rmsnorm_backward)
__global__ void rmsnorm_dx_kernel(float *dx, const float *dout, const float *x, const float *w, const float *rstd,
                                  int D)
{
    __shared__ float shared[32];
    size_t n = blockIdx.x;
    const float *xn = x + n * D, *dy = dout + n * D;
    float dot = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        dot += dy[d] * w[d] * xn[d];
    dot = block_sum(dot, shared);
    float r = rstd[n], coef = r * r * r / (float)D * dot;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        dx[n * D + d] += r * dy[d] * w[d] - coef * xn[d];
}

// dw without atomics, so deterministic: block (x, y) sums rows [y*DW_ROWS, (y+1)*DW_ROWS) of column d into
// partial[y, d] (threads along d: coalesced), and rmsnorm_dw_final_kernel adds the partials in order of y.
__global__ void rmsnorm_dw_partial_kernel(float *partial, const float *dout, const float *x, const float *rstd,
                                          int N, int D)
{
    int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= D)
        return;
    int n0 = blockIdx.y * DW_ROWS, n1 = min(N, n0 + DW_ROWS);
    float s = 0.0f;
    for (int n = n0; n < n1; n++)
        s += dout[(size_t)n * D + d] * x[(size_t)n * D + d] * rstd[n];
    partial[(size_t)blockIdx.y * D + d] = s;
}

__global__ void rmsnorm_dw_final_kernel(float *dw, const float *partial, int chunks, int D)
{
    int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= D)
        return;
    float s = 0.0f;
    for (int y = 0; y < chunks; y++)
        s += partial[(size_t)y * D + d];
    dw[d] += s;
}

extern "C" int flas_cuda_rmsnorm_forward(flas_cuda *c, void *out, flas_dtype out_type, float *rstd, const float *x,
                                         const float *w, int N, int D, float eps)
{
    ARG_CHECK(c, N >= 0 && D > 0);
    ARG_CHECK(c, out_type == FLAS_F32 || out_type == FLAS_BF16);
    if (N == 0)
        return 0;
    if (out_type == FLAS_BF16)
        rmsnorm_forward_kernel<<<N, 256, 0, c->stream>>>((__nv_bfloat16 *)out, rstd, x, w, D, eps);
    else
        rmsnorm_forward_kernel<<<N, 256, 0, c->stream>>>((float *)out, rstd, x, w, D, eps);
    LAUNCH_CHECK(c);
    return 0;
}

extern "C" int flas_cuda_rmsnorm_backward(flas_cuda *c, float *dx, float *dw, const float *dout, const float *x,
                                          const float *w, const float *rstd, int N, int D)
{
    ARG_CHECK(c, N >= 0 && D > 0);
    if (N == 0)
        return 0;
    int chunks = (N + DW_ROWS - 1) / DW_ROWS;
    ARG_CHECK(c, chunks <= 65535); // grid y
    float *partial = (float *)flas_cuda_scratch(c, (size_t)chunks * D * sizeof(float));
    if (!partial)
        return -1;
    rmsnorm_dx_kernel<<<N, 256, 0, c->stream>>>(dx, dout, x, w, rstd, D);
    LAUNCH_CHECK(c);
    dim3 grid((unsigned)((D + 255) / 256), (unsigned)chunks);
    rmsnorm_dw_partial_kernel<<<grid, 256, 0, c->stream>>>(partial, dout, x, rstd, N, D);
    LAUNCH_CHECK(c);
    rmsnorm_dw_final_kernel<<<(D + 255) / 256, 256, 0, c->stream>>>(dw, partial, chunks, D);
    LAUNCH_CHECK(c);
    return 0;
}
