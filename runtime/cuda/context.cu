// The context of the CUDA kernels: handles, workspace, scratch, error recording.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

// 32 MiB: what cuBLASLt's fastest Hopper kernels ask for (NVIDIA's recommendation for sm_90); plenty on sm_80.
static const size_t LT_WORKSPACE_BYTES = (size_t)32 << 20;

int flas_cuda_fail(flas_cuda *c, const char *file, int line, const char *fmt, ...)
{
    if (c->failed)
        return -1; // keep the first error: later ones are usually its consequences
    c->failed = 1;
    const char *base = strrchr(file, '/');
    int k = snprintf(c->err, sizeof c->err, "%s:%d: ", base ? base + 1 : file, line);
    if (k < 0 || (size_t)k >= sizeof c->err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + k, sizeof c->err - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

const char *flas_cublas_status_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_(unknown)";
    }
}

// Creation cannot use flas_cuda_fail's macros before c exists; a local context carries the message.
int flas_cuda_create(flas_cuda **out, cudaStream_t stream, char *errbuf, size_t errlen)
{
    *out = NULL;
    flas_cuda *c = (flas_cuda *)calloc(1, sizeof *c);
    if (!c) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "out of host memory");
        return -1;
    }
    c->stream = stream;
    int rc = 0;
    do {
        cublasStatus_t s = cublasLtCreate(&c->lt);
        if (s != CUBLAS_STATUS_SUCCESS) {
            c->lt = NULL;
            rc = flas_cuda_fail(c, __FILE__, __LINE__, "cublasLtCreate: %s", flas_cublas_status_name(s));
            break;
        }
        s = cublasCreate(&c->blas);
        if (s != CUBLAS_STATUS_SUCCESS) {
            c->blas = NULL;
            rc = flas_cuda_fail(c, __FILE__, __LINE__, "cublasCreate: %s", flas_cublas_status_name(s));
            break;
        }
        s = cublasSetStream(c->blas, stream);
        if (s == CUBLAS_STATUS_SUCCESS)
            // Plain fp32 products (no TF32) for attention: the first version is held to fp32 tolerances.
            s = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
        if (s != CUBLAS_STATUS_SUCCESS) {
            rc = flas_cuda_fail(c, __FILE__, __LINE__, "cublasSetStream/MathMode: %s", flas_cublas_status_name(s));
            break;
        }
        cudaError_t e = cudaMalloc(&c->workspace, LT_WORKSPACE_BYTES);
        if (e != cudaSuccess) {
            c->workspace = NULL;
            rc = flas_cuda_fail(c, __FILE__, __LINE__, "cudaMalloc(workspace): %s", cudaGetErrorString(e));
            break;
        }
        c->workspace_bytes = LT_WORKSPACE_BYTES;
    } while (0);
    if (rc) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "%s", c->err);
        flas_cuda_destroy(c);
        return rc;
    }
    *out = c;
    return 0;
}

void flas_cuda_destroy(flas_cuda *c)
{
    if (!c)
        return;
    // Pending work may still use the workspace and scratch: wait before freeing (errors ignored here).
    cudaStreamSynchronize(c->stream);
    cudaFree(c->scratch);
    cudaFree(c->workspace);
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->lt)
        cublasLtDestroy(c->lt);
    free(c);
}

const char *flas_cuda_error(const flas_cuda *c) { return c->failed ? c->err : ""; }

long flas_cuda_matmul_fallbacks(const flas_cuda *c) { return c->matmul_fallbacks; }

int flas_cuda_sync(flas_cuda *c)
{
    CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
    CUDA_CHECK(c, cudaGetLastError());
    return 0;
}

void *flas_cuda_scratch(flas_cuda *c, size_t bytes)
{
    if (bytes <= c->scratch_bytes)
        return c->scratch;
    // The old buffer may still be read by work queued on the stream: wait before freeing it.
    cudaError_t e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        flas_cuda_fail(c, __FILE__, __LINE__, "cudaStreamSynchronize: %s", cudaGetErrorString(e));
        return NULL;
    }
    cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    size_t want = bytes < ((size_t)1 << 20) ? ((size_t)1 << 20) : bytes;
    e = cudaMalloc(&c->scratch, want);
    if (e != cudaSuccess) {
        c->scratch = NULL;
        flas_cuda_fail(c, __FILE__, __LINE__, "cudaMalloc(%zu bytes of scratch): %s", want, cudaGetErrorString(e));
        return NULL;
    }
    c->scratch_bytes = want;
    return c->scratch;
}
