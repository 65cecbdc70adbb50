// The residual connection of a block: the fp32 residual stream plus the fp32 output of wo or w2
// (model.c's residual_add). One IEEE fp32 addition per element: exactly the CPU's bits.
#include "common.cuh"

__global__ void residual_add_kernel(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

extern "C" int flas_cuda_residual_add(flas_cuda *c, float *out, const float *a, const float *b, size_t n)
{
    if (n == 0)
        return 0;
    residual_add_kernel<<<flas_grid_for(n, 256), 256, 0, c->stream>>>(out, a, b, n);
    LAUNCH_CHECK(c);
    return 0;
}
