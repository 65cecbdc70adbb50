/* In-memory merge throughput of the flas_agg kernel vs STREAM triad, measured in the same run at the
 * same thread count (driven by bench_agg.py, which adds the numpy peer).
 *   bench_agg_merge [K inputs=4] [MiB per input=512] [runs=5] [chunk KiB=4096] [threads=1]
 * Prints lines "triad THREADS GBps", "fedavg THREADS GBps", "diloco THREADS GBps" (medians).
 * Bytes counted like STREAM (each array element read or written once, no write-allocate):
 * triad 24 B per element; fedavg (K + 1) x 4 B; diloco (K + 4) x 4 B (x, m read; out, m written). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flas/aggregate.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct bench {
    int k;
    size_t n, chunk;
    float **in, *x, *m, *out;
    double *p, *a, *b, *c;
    const float **view;
} bench;

static void setup(bench *B)
{
    size_t n = B->n;
    B->in = malloc((size_t)B->k * sizeof *B->in);
    B->view = malloc((size_t)B->k * sizeof *B->view);
    B->p = malloc((size_t)B->k * sizeof *B->p);
    B->x = malloc(n * 4), B->m = malloc(n * 4), B->out = malloc(n * 4);
    B->a = malloc(n / 2 * 8), B->b = malloc(n / 2 * 8), B->c = malloc(n / 2 * 8);
    for (int i = 0; i < B->k; i++) {
        B->in[i] = malloc(n * 4);
        B->p[i] = 1.0 / B->k;
        for (size_t j = 0; j < n; j++)
            B->in[i][j] = (float)(j % 1000) * 1e-3f + (float)i;
    }
    for (size_t j = 0; j < n; j++)
        B->x[j] = 0.5f, B->m[j] = 0.0f, B->out[j] = 0.0f;
    for (size_t j = 0; j < n / 2; j++)
        B->a[j] = 0, B->b[j] = 1, B->c[j] = 2;
}

/* STREAM triad a = b + s c over n/2 doubles: the same bytes per array as n floats. GB/s. */
static double triad(bench *B)
{
    size_t n = B->n / 2;
    double *a = B->a, *b = B->b, *c = B->c;
    double t0 = now();
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        a[i] = b[i] + 3.0 * c[i];
    double t = now() - t0;
    if (a[n / 2] != 7.0)
        fprintf(stderr, "triad result wrong\n");
    return 24.0 * n / t / 1e9;
}

/* The kernel over the whole arrays, chunk by chunk as the streaming merge calls it. GB/s. */
static double merge(bench *B, flas_agg_strategy s)
{
    flas_agg_options o;
    flas_agg_defaults(&o, s);
    flas_agg_kernel kp = {s, B->k, B->p, o.lr, o.momentum, o.beta1, o.beta2, o.tau, NULL};
    int arrays = s == FLAS_AGG_FEDAVG ? B->k + 1 : B->k + 4;
    double t0 = now();
    for (size_t lo = 0; lo < B->n; lo += B->chunk) {
        size_t nn = B->n - lo < B->chunk ? B->n - lo : B->chunk;
        for (int i = 0; i < B->k; i++)
            B->view[i] = B->in[i] + lo;
        int bad = 0;
        flas_agg_combine(&kp, nn, B->view, B->x + lo, B->m + lo, NULL, B->out + lo, NULL, &bad);
    }
    return (double)arrays * 4.0 * B->n / (now() - t0) / 1e9;
}

int main(int argc, char **argv)
{
    bench B = {0};
    B.k = argc > 1 ? atoi(argv[1]) : 4;
    size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 512;
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    B.chunk = (argc > 4 ? (size_t)atol(argv[4]) : 4096) << 8;
    int threads = argc > 5 ? atoi(argv[5]) : 1;
    if (B.k < 1 || runs < 1 || runs > 64 || !mib || !B.chunk || threads < 1) {
        fprintf(stderr, "usage: bench_agg_merge [K] [MiB per input] [runs<=64] [chunk KiB] [threads]\n");
        return 2;
    }
    B.n = mib << 18;
    omp_set_num_threads(threads);
    setup(&B);
    double t[3][64];
    /* Interleaved, so that the machine's noise hits every kernel alike; medians. */
    for (int r = 0; r < runs; r++) {
        t[0][r] = triad(&B);
        t[1][r] = merge(&B, FLAS_AGG_FEDAVG);
        t[2][r] = merge(&B, FLAS_AGG_DILOCO);
    }
    printf("# %d inputs x %zu MiB, chunks of %zu KiB, %d thread(s), medians of %d interleaved runs\n", B.k, mib,
           B.chunk >> 8, threads, runs);
    printf("triad %d %.2f\nfedavg %d %.2f\ndiloco %d %.2f\n", threads, median(t[0], runs), threads,
           median(t[1], runs), threads, median(t[2], runs));
    return 0;
}
