// fp32 <-> bf16 conversion: master weights to their bf16 copies, activations to matmul operands.
#include "common.cuh"

// out[n] = bf16(in[n]): __float2bfloat16_rn rounds to nearest, ties to even, and keeps NaN a NaN.
__global__ void f32_to_bf16_kernel(__nv_bfloat16 *out, const float *in, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16_rn(in[i]);
}

__global__ void bf16_to_f32_kernel(float *out, const __nv_bfloat16 *in, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __bfloat162float(in[i]);
}

extern "C" int flas_cuda_f32_to_bf16(flas_cuda *c, flas_bf16 *out, const float *in, size_t n)
{
    if (n == 0)
        return 0;
    f32_to_bf16_kernel<<<flas_grid_for(n, 256), 256, 0, c->stream>>>((__nv_bfloat16 *)out, in, n);
    LAUNCH_CHECK(c);
    return 0;
}

extern "C" int flas_cuda_bf16_to_f32(flas_cuda *c, float *out, const flas_bf16 *in, size_t n)
{
    if (n == 0)
        return 0;
    bf16_to_f32_kernel<<<flas_grid_for(n, 256), 256, 0, c->stream>>>(out, (const __nv_bfloat16 *)in, n);
    LAUNCH_CHECK(c);
    return 0;
}
