/* Threads and BLAS: how the training core uses the CPU, and a start-up line that says so.
 * (A silently single-threaded build is a known trap: every tool prints this line.) */
#ifndef FLAS_BLAS_INFO_H
#define FLAS_BLAS_INFO_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sets the OpenMP thread count of the calling thread (n <= 0: all processors) and makes OpenBLAS run
 * each call on ONE thread: FLaS splits every large matrix product into tiles over its OpenMP team
 * (gemm.c), so there is one thread pool and no OpenBLAS workers spinning against OpenMP workers on the
 * same cores. Returns the thread count in effect. */
int flas_threads_setup(int n_threads);
/* One line: OpenMP threads, processors, BLAS library/configuration/kernel and its threads per call. */
void flas_print_runtime_info(FILE *f, int n_threads);
/* The BLAS identification string (openblas_get_config), for benchmark reports. */
const char *flas_blas_name(void);

#ifdef __cplusplus
}
#endif
#endif
