/* Loader throughput: batches of B x T tokens (with targets) per second from shards, shuffled.
 * Usage: bench_loader SHARD_DIR VOCAB_SIZE B T SECONDS -> prints "tokens_per_s N" */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "flas/loader.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: bench_loader SHARD_DIR VOCAB_SIZE B T SECONDS\n");
        return 2;
    }
    const char *paths[] = {argv[1]};
    flas_loader_opts o = {.vocab_size = atoi(argv[2]), .batch = atoi(argv[3]), .seq_len = atoi(argv[4]),
                          .dp_size = 1, .seed = 1, .shuffle = 1};
    const double seconds = atof(argv[5]);
    char err[512];
    flas_loader *l = flas_loader_open(paths, 1, &o, err, sizeof err);
    if (!l) {
        fprintf(stderr, "bench_loader: %s\n", err);
        return 1;
    }
    const size_t n = (size_t)o.batch * (size_t)o.seq_len;
    int32_t *tok = malloc(n * sizeof *tok), *tgt = malloc(n * sizeof *tgt);
    long batches = 0;
    unsigned long long sum = 0;
    const double t0 = now();
    double t;
    while ((t = now()) - t0 < seconds) {
        for (int k = 0; k < 64; k++, batches++) {
            if (flas_loader_next(l, tok, tgt, err, sizeof err) != 1) {
                fprintf(stderr, "bench_loader: %s\n", err);
                return 1;
            }
            sum += (unsigned)tok[batches % (long)n]; /* keep the copies observable */
        }
    }
    printf("tokens_per_s %.0f checksum %llu\n", (double)batches * (double)n / (t - t0), sum);
    free(tok);
    free(tgt);
    flas_loader_close(l);
    return 0;
}
