// Internal to runtime/cuda: the context, error recording, and small device helpers shared by the kernel
// families. Not for callers outside this directory (they use kernels.h).
#ifndef FLAS_CUDA_COMMON_CUH
#define FLAS_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stddef.h>

#include "kernels.h"

struct flas_cuda {
    cudaStream_t stream;
    cublasLtHandle_t lt;
    cublasHandle_t blas;     // attention's batched products and the matmul fallback
    void *workspace;         // cuBLASLt workspace
    size_t workspace_bytes;
    void *scratch;           // grows on demand (flas_cuda_scratch); used by one call at a time
    size_t scratch_bytes;
    long matmul_fallbacks;
    int failed;              // an error was recorded; err holds the first one
    char err[512];
};

// Records the first error with its origin; returns -1 so that callers can `return flas_cuda_fail(...)`.
int flas_cuda_fail(flas_cuda *c, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
const char *flas_cublas_status_name(cublasStatus_t s);

// At least `bytes` of device scratch owned by c (valid until the next call that asks for scratch), or NULL.
void *flas_cuda_scratch(flas_cuda *c, size_t bytes);

#define CUDA_CHECK(c, call)                                                                              \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess)                                                                           \
            return flas_cuda_fail((c), __FILE__, __LINE__, "%s: %s", #call, cudaGetErrorString(e_));     \
    } while (0)

#define CUBLAS_CHECK(c, call)                                                                            \
    do {                                                                                                 \
        cublasStatus_t s_ = (call);                                                                      \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                 \
            return flas_cuda_fail((c), __FILE__, __LINE__, "%s: %s", #call, flas_cublas_status_name(s_)); \
    } while (0)

// After a <<<...>>> launch: a bad configuration or an earlier asynchronous fault.
#define LAUNCH_CHECK(c) CUDA_CHECK(c, cudaGetLastError())

#define ARG_CHECK(c, cond)                                                                               \
    do {                                                                                                 \
        if (!(cond))                                                                                     \
            return flas_cuda_fail((c), __FILE__, __LINE__, "invalid argument: %s", #cond);               \
    } while (0)

// Blocks for a grid-stride loop over n elements: enough to fill the device, capped so that the grid's
// x dimension stays far below its limit (2^31-1).
static inline unsigned flas_grid_for(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    if (b > 65536)
        b = 65536;
    return b ? (unsigned)b : 1u;
}

// Stores an fp32 result as the output dtype: fp32 as is, bf16 rounded to nearest even.
__device__ __forceinline__ void store_as(float *p, float x) { *p = x; }
__device__ __forceinline__ void store_as(__nv_bfloat16 *p, float x) { *p = __float2bfloat16_rn(x); }

// Sum over a warp; every lane gets the total. The order is fixed (butterfly), so results are reproducible.
__device__ __forceinline__ float warp_sum(float x)
{
    for (int o = 16; o > 0; o >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x)
{
    for (int o = 16; o > 0; o >>= 1)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets the total.
// `shared` holds 32 floats. Two barriers: callers may reuse `shared` right after it returns.
__device__ __forceinline__ float block_sum(float x, float *shared)
{
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    x = warp_sum(x);
    if (lane == 0)
        shared[warp] = x;
    __syncthreads();
    float t = lane < nwarps ? shared[lane] : 0.0f;
    t = warp_sum(t);
    __syncthreads();
    return t;
}

__device__ __forceinline__ float block_max(float x, float *shared)
{
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    x = warp_max(x);
    if (lane == 0)
        shared[warp] = x;
    __syncthreads();
    float t = lane < nwarps ? shared[lane] : -INFINITY;
    t = warp_max(t);
    __syncthreads();
    return t;
}

#endif
