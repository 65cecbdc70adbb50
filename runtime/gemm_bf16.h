/* Matrix products in bf16 with fp32 accumulation on the CPU, through oneDNN (libdnnl), for the mixed
 * precision policy (flas_model_set_precision): operands rounded to bf16, products accumulated and
 * written in fp32. The same numerics as the GPU path's cuBLASLt products, testable on any processor
 * with AVX512-BF16 or AMX. */
#ifndef FLAS_GEMM_BF16_H
#define FLAS_GEMM_BF16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 1 when this build has oneDNN and the processor runs bf16 products natively (oneDNN's effective ISA
 * includes AVX512-BF16 or AMX); else 0 with the reason in why (may be NULL). */
int flas_bf16_supported(char *why, size_t whylen);

/* C[M,N] = alpha * op(A) * op(B) + beta * C, row-major fp32 arrays as flas_sgemm (gemm.h), with A and
 * B rounded to bf16 (nearest even) before the product and fp32 accumulation. Call outside OpenMP
 * parallel regions (oneDNN runs its own team of the caller's OpenMP size). 0, or -1 when oneDNN
 * refuses (message in err). */
int flas_gemm_bf16(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc, char *err, size_t errlen);

#endif
