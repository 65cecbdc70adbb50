/* Thread setup and the start-up line naming the BLAS and thread counts. */
#include "flas/blas_info.h"

#include <cblas.h>
#include <omp.h>

int flas_threads_setup(int n_threads)
{
    if (n_threads <= 0)
        n_threads = omp_get_num_procs();
    omp_set_num_threads(n_threads);
    /* FLaS parallelises matrix products itself (gemm.c); OpenBLAS threads would compete with OpenMP's. */
    openblas_set_num_threads(1);
    return n_threads;
}

const char *flas_blas_name(void) { return openblas_get_config(); }

void flas_print_runtime_info(FILE *f, int n_threads)
{
    fprintf(f, "flas: %d OpenMP thread%s on %d processor%s; BLAS: %s (kernel %s), %d thread%s per call, "
               "matrix products split over the OpenMP threads\n",
            n_threads, n_threads == 1 ? "" : "s", omp_get_num_procs(), omp_get_num_procs() == 1 ? "" : "s",
            openblas_get_config(), openblas_get_corename(), openblas_get_num_threads(),
            openblas_get_num_threads() == 1 ? "" : "s");
}
