// SwiGLU gate g = silu(h1) * h3, silu(x) = x sigmoid(x). h1, h3, dg fp32 (matmul outputs kept fp32); the
// outputs g, dh1, dh3 feed matrix products (w2 forward; w1/w3 backward), so fp32 or bf16 as asked.
#include "common.cuh"

template <typename T>
__global__ void swiglu_forward_kernel(T *g, const float *h1, const float *h3, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = h1[i];
        // expf(-x) overflows to inf for x < -88: x / inf = -0, the right limit.
        store_as(g + i, x / (1.0f + expf(-x)) * h3[i]);
    }
}

// silu'(x) = s (1 + x (1 - s)) with s = sigmoid(x)
template <typename T>
__global__ void swiglu_backward_kernel(T *dh1, T *dh3, const float *dg, const float *h1, const float *h3, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = h1[i], s = 1.0f / (1.0f + expf(-x)), d = dg[i];
        store_as(dh1 + i, d * h3[i] * s * (1.0f + x * (1.0f - s)));
        store_as(dh3 + i, d * x * s);
    }
}

extern "C" int flas_cuda_swiglu_forward(flas_cuda *c, void *g, flas_dtype g_type, const float *h1, const float *h3,
                                        size_t n)
{
    ARG_CHECK(c, g_type == FLAS_F32 || g_type == FLAS_BF16);
    if (n == 0)
        return 0;
    unsigned blocks = flas_grid_for(n, 256);
    if (g_type == FLAS_BF16)
        swiglu_forward_kernel<<<blocks, 256, 0, c->stream>>>((__nv_bfloat16 *)g, h1, h3, n);
    else
        swiglu_forward_kernel<<<blocks, 256, 0, c->stream>>>((float *)g, h1, h3, n);
    LAUNCH_CHECK(c);
    return 0;
}

extern "C" int flas_cuda_swiglu_backward(flas_cuda *c, void *dh1, void *dh3, flas_dtype d_type, const float *dg,
                                         const float *h1, const float *h3, size_t n)
{
    ARG_CHECK(c, d_type == FLAS_F32 || d_type == FLAS_BF16);
    if (n == 0)
        return 0;
    unsigned blocks = flas_grid_for(n, 256);
    if (d_type == FLAS_BF16)
        swiglu_backward_kernel<<<blocks, 256, 0, c->stream>>>((__nv_bfloat16 *)dh1, (__nv_bfloat16 *)dh3, dg, h1, h3,
                                                              n);
    else
        swiglu_backward_kernel<<<blocks, 256, 0, c->stream>>>((float *)dh1, (float *)dh3, dg, h1, h3, n);
    LAUNCH_CHECK(c);
    return 0;
}
