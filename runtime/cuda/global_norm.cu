// The global gradient norm's sum of squares (double, deterministic) and the clipping scale.
#include "common.cuh"

// A fixed grid, the same on every device: each block's share of the buffer, and so the bits of the
// result, do not depend on the GPU model (a grid sized from the SM count would).
#define SUMSQ_BLOCKS 1024
#define SUMSQ_THREADS 256

// Sum over the block in a fixed tree order; buf holds blockDim.x (a power of two) doubles.
__device__ double block_sum_double(double x, double *buf)
{
    buf[threadIdx.x] = x;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s)
            buf[threadIdx.x] += buf[threadIdx.x + s];
        __syncthreads();
    }
    return buf[0];
}

// Pass 1: partial[block] = sum of x[i]^2 over the block's grid-stride share, in double.
__global__ void sumsq_partial_kernel(double *partial, const float *x, size_t n)
{
    __shared__ double buf[SUMSQ_THREADS];
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i];
    s = block_sum_double(s, buf);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = s;
}

// Pass 2: one block of SUMSQ_BLOCKS threads adds the partials.
__global__ void sumsq_final_kernel(double *sumsq, const double *partial, int accumulate)
{
    __shared__ double buf[SUMSQ_BLOCKS];
    double s = block_sum_double(partial[threadIdx.x], buf);
    if (threadIdx.x == 0)
        *sumsq = (accumulate ? *sumsq : 0.0) + s;
}

__global__ void scale_kernel(float *x, size_t n, float s)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

// flas_model_clip_grad_norm's rule; every thread derives the same coefficient from the device-side sum.
__global__ void clip_kernel(float *x, size_t n, const double *sumsq, float max_norm)
{
    float norm = sqrtf((float)*sumsq);
    float coef = max_norm / (norm + 1e-6f);
    if (!(max_norm > 0.0f && coef < 1.0f))
        return;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= coef;
}

extern "C" int flas_cuda_sumsq(flas_cuda *c, double *sumsq, const float *x, size_t n, bool accumulate)
{
    double *partial = (double *)flas_cuda_scratch(c, SUMSQ_BLOCKS * sizeof(double));
    if (!partial)
        return -1;
    // Every block writes its partial, also when n is small (then most are 0): no memset needed.
    sumsq_partial_kernel<<<SUMSQ_BLOCKS, SUMSQ_THREADS, 0, c->stream>>>(partial, x, n);
    LAUNCH_CHECK(c);
    sumsq_final_kernel<<<1, SUMSQ_BLOCKS, 0, c->stream>>>(sumsq, partial, accumulate ? 1 : 0);
    LAUNCH_CHECK(c);
    return 0;
}

extern "C" int flas_cuda_scale(flas_cuda *c, float *x, size_t n, float s)
{
    if (n == 0)
        return 0;
    scale_kernel<<<flas_grid_for(n, 256), 256, 0, c->stream>>>(x, n, s);
    LAUNCH_CHECK(c);
    return 0;
}

extern "C" int flas_cuda_clip(flas_cuda *c, float *x, size_t n, const double *sumsq, float max_norm)
{
    if (n == 0)
        return 0;
    clip_kernel<<<flas_grid_for(n, 256), 256, 0, c->stream>>>(x, n, sumsq, max_norm);
    LAUNCH_CHECK(c);
    return 0;
}
