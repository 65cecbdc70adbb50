/* flas_sgemm: one matrix product shared out over the OpenMP threads, as output tiles or K slices. */
#include "gemm.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

/* Products smaller than this (in multiply-adds) are not worth a fork/join. */
#define GEMM_PARALLEL_MIN (1L << 18)
/* Tiles per thread: more than one, so a thread slowed by a neighbour on a shared core is balanced by
 * the dynamic schedule; few, because each tile re-packs the operand it shares with the others. */
#define GEMM_TILES_PER_THREAD 2
/* Tile edges are multiples of the sgemm micro-kernel (16 floats wide on AVX-512). */
#define GEMM_TILE_ALIGN 16

/* Products whose inner dimension dominates (weight gradients: K = tokens) are split along K
 * instead: each thread computes a partial C over a slice of K (no operand is packed twice), and the
 * partials are summed. Worth it from K >= GEMM_KSPLIT_RATIO * max(M, N). */
#define GEMM_KSPLIT_RATIO 2

static void sgemm1(bool tA, bool tB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}

void flas_sgemm(bool tA, bool tB, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (nt <= 1 || (long)M * N * K < GEMM_PARALLEL_MIN) {
        sgemm1(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (K >= GEMM_KSPLIT_RATIO * (M > N ? M : N)) {
        float *partial = malloc(sizeof(float) * (size_t)(nt - 1) * M * N);
        if (partial) {
            int kstep = ((K + nt - 1) / nt + GEMM_TILE_ALIGN - 1) / GEMM_TILE_ALIGN * GEMM_TILE_ALIGN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
            for (int p = 0; p < nt; p++) {
                int k0 = p * kstep, kn = K - k0 < kstep ? K - k0 : kstep;
                float *Cp = p ? partial + (size_t)(p - 1) * M * N : C;
                if (kn <= 0) { /* an empty slice still owes its partial */
                    if (p)
                        for (size_t i = 0; i < (size_t)M * N; i++)
                            Cp[i] = 0.0f;
                    continue;
                }
                const float *Ap = tA ? A + (long)k0 * lda : A + k0; /* columns k0.. of op(A) */
                const float *Bp = tB ? B + k0 : B + (long)k0 * ldb; /* rows k0.. of op(B) */
                sgemm1(tA, tB, M, N, kn, alpha, Ap, lda, Bp, ldb, p ? 0.0f : beta, Cp, p ? N : ldc);
            }
#pragma omp parallel for schedule(static) num_threads(nt)
            for (int i = 0; i < M; i++)
                for (int p = 1; p < nt; p++) {
                    const float *src = partial + (size_t)(p - 1) * M * N + (size_t)i * N;
                    float *dst = C + (size_t)i * ldc;
#pragma omp simd
                    for (int j = 0; j < N; j++)
                        dst[j] += src[j];
                }
            free(partial);
            return;
        }
    }
    /* Split the longer side of C, so the operand every tile re-packs is the smaller one. */
    bool split_rows = M >= N;
    int len = split_rows ? M : N;
    int tiles = nt * GEMM_TILES_PER_THREAD;
    int step = (len + tiles - 1) / tiles;
    step = (step + GEMM_TILE_ALIGN - 1) / GEMM_TILE_ALIGN * GEMM_TILE_ALIGN;
    tiles = (len + step - 1) / step;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int i = 0; i < tiles; i++) {
        int start = i * step, n = len - start < step ? len - start : step;
        if (split_rows) {
            /* rows start.. of C come from rows of op(A): A's rows, or A's columns when transposed */
            const float *Ai = tA ? A + start : A + (long)start * lda;
            sgemm1(tA, tB, n, N, K, alpha, Ai, lda, B, ldb, beta, C + (long)start * ldc, ldc);
        } else {
            const float *Bi = tB ? B + (long)start * ldb : B + start;
            sgemm1(tA, tB, M, n, K, alpha, A, lda, Bi, ldb, beta, C + start, ldc);
        }
    }
}
