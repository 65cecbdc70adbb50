/* Synthetic token shards for the flas-train tests: a learnable stream (each token follows from the
 * previous one by a fixed rule 80% of the time, random otherwise; documents start with BOS = 1), so a
 * tiny model's loss visibly falls within a few steps.
 *   train_fixture shards DIR TOKENS VOCAB SEED [N_SHARDS]   writes DIR/part-NNN.flastok */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "flas/shards.h"

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int write_shards(const char *dir, long tokens, int vocab, uint64_t seed, int n_shards)
{
    char err[512];
    if (mkdir(dir, 0755) && errno != EEXIST) {
        perror(dir);
        return 1;
    }
    int32_t *doc = malloc(sizeof(int32_t) * 400);
    for (int s = 0; s < n_shards; s++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/part-%03d.flastok", dir, s);
        flas_shard_header h = {0};
        h.vocab_size = (uint32_t)vocab;
        h.bos_id = 1;
        h.eos_id = -1;
        h.flags = FLAS_SHARD_DOC_BOS;
        memset(h.tokenizer_sha256, 0x5a, sizeof h.tokenizer_sha256);
        flas_shard_writer *w = flas_shard_writer_open(path, &h, err, sizeof err);
        if (!w) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        long want = tokens / n_shards;
        while ((long)flas_shard_writer_tokens(w) < want) {
            int len = 50 + (int)(next_rand(&seed) % 250);
            doc[0] = 1;
            int32_t prev = 2 + (int32_t)(next_rand(&seed) % (uint64_t)(vocab - 2));
            for (int i = 1; i < len; i++) {
                uint64_t r = next_rand(&seed);
                int32_t t = (r % 10 < 8) ? 2 + (prev * 7 + 3) % (vocab - 2) : 2 + (int32_t)((r >> 8) % (uint64_t)(vocab - 2));
                doc[i] = prev = t;
            }
            if (flas_shard_writer_add(w, doc, (size_t)len, err, sizeof err)) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
        }
        if (flas_shard_writer_commit(w, NULL, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    free(doc);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 6 && !strcmp(argv[1], "shards"))
        return write_shards(argv[2], atol(argv[3]), atoi(argv[4]), strtoull(argv[5], NULL, 10),
                            argc > 6 ? atoi(argv[6]) : 1);
    fprintf(stderr, "usage: train_fixture shards DIR TOKENS VOCAB SEED [N_SHARDS]\n");
    return 2;
}
