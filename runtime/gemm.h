/* Matrix products for the fast path: OpenBLAS sgemm, split across the OpenMP team. */
#ifndef FLAS_GEMM_H
#define FLAS_GEMM_H

#include <stdbool.h>

/* C[M,N] = alpha * op(A) * op(B) + beta * C, all row-major; op(X) = X^T when transX.
 * Outside a parallel region the output is cut into tiles that the OpenMP threads take dynamically
 * (or, when K dominates, K is cut into one slice per thread and the partial products summed),
 * each piece one single-threaded cblas_sgemm (see flas_threads_setup: OpenBLAS runs 1 thread per call,
 * so FLaS has one thread pool, never OpenBLAS's and OpenMP's spinning against each other). Inside a
 * parallel region (per-head attention) it is one plain call. */
void flas_sgemm(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);

#endif
