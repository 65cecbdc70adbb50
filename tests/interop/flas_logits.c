/* Oracle helper of the llama.cpp interop test: what FLaS's own forward pass computes for given token ids,
 * for a Python comparison with llama.cpp on the same model exported to GGUF.
 *
 * Usage: flas_logits CKPT MODE IN OUT [N]
 *   IN: a text file, one id sequence per line (decimal ids, space-separated; the caller puts the BOS)
 *   logits  OUT is a .npy of float32 [T, V]: the logits at every position of IN's first line
 *   greedy  OUT gets one JSON line per IN line: {"ids": [N new ids], "gap": [N logit gaps top1 - top2]}
 *           (argmax, ties to the lowest id; the whole sequence is re-run for every new token, no cache)
 *   nll     OUT gets one JSON line per IN line: {"sum": sum over positions 1..T-1 of -log p(id_i | ids_<i),
 *           "count": T-1} (log-softmax in double)
 * Every sequence (with its N new tokens) must fit the model's seq_len. One thread: the models are tiny. */
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/checkpoint.h"
#include "flas/llama.h"
#include "npy.h"

static void die(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "flas_logits: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(1);
}

/* Reads the id lines of IN: ids[k], n[k] for k < *lines. */
static int **read_lines(const char *path, int **n_out, int *lines)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("%s: %s", path, strerror(errno));
    int **ids = NULL, *n = NULL, count = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) >= 0) {
        ids = realloc(ids, sizeof *ids * (size_t)(count + 1));
        n = realloc(n, sizeof *n * (size_t)(count + 1));
        ids[count] = NULL;
        n[count] = 0;
        char *p = line, *end;
        for (;;) {
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            if (errno || v < 0 || v > 0x7fffffff)
                die("%s: bad id in %s", path, line);
            ids[count] = realloc(ids[count], sizeof **ids * (size_t)(n[count] + 1));
            ids[count][n[count]++] = (int)v;
            p = end;
        }
        if (n[count] == 0)
            die("%s: an empty line%s", path, "");
        count++;
    }
    free(line);
    fclose(f);
    *n_out = n;
    *lines = count;
    return ids;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: flas_logits CKPT logits|greedy|nll IN OUT [N]\n");
        return 2;
    }
    const char *ckpt = argv[1], *mode = argv[2], *in = argv[3], *outp = argv[4];
    int N = argc > 5 ? atoi(argv[5]) : 0;
    if (strcmp(mode, "logits") && strcmp(mode, "greedy") && strcmp(mode, "nll"))
        die("unknown mode %s%s", mode, "");
    if (!strcmp(mode, "greedy") && N < 1)
        die("greedy needs N >= 1%s%s", "", "");

    char err[512] = "";
    flas_ckpt_reader *r = flas_ckpt_open(ckpt, MPI_COMM_NULL, err, sizeof err);
    if (!r)
        die("%s: %s", ckpt, err);
    flas_config cfg = flas_ckpt_meta_of(r)->cfg;
    flas_model m;
    if (flas_model_create(&m, &cfg, 0, 1, 1, cfg.seq_len, 1, err, sizeof err))
        die("%s: %s", ckpt, err);
    if (flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, &m.table, 0, m.table.n_params, m.params, err, sizeof err))
        die("%s: %s", ckpt, err);
    flas_ckpt_close(r);

    int lines, *n, **ids = read_lines(in, &n, &lines);
    const int V = cfg.vocab_size, L = cfg.seq_len;
    float *logits = malloc(sizeof *logits * (size_t)L * (size_t)V);
    int *seq = malloc(sizeof *seq * (size_t)L);
    if (!logits || !seq)
        die("out of memory%s%s", "", "");
    FILE *out = NULL;
    if (strcmp(mode, "logits") && !(out = fopen(outp, "w")))
        die("%s: %s", outp, strerror(errno));

    for (int k = 0; k < lines; k++) {
        int T = n[k];
        if (T + N > L) {
            char what[64];
            snprintf(what, sizeof what, "%d + %d", T, N);
            die("a sequence of %s tokens exceeds seq_len (%s)", what, ckpt);
        }
        memcpy(seq, ids[k], sizeof *seq * (size_t)T);
        if (!strcmp(mode, "logits")) {
            if (flas_model_forward(&m, seq, NULL, 1, T, NULL, logits))
                die("forward: %s%s", m.err, "");
            size_t shape[2] = {(size_t)T, (size_t)V};
            if (npy_write(outp, "<f4", logits, sizeof *logits, 2, shape))
                die("%s: cannot write%s", outp, "");
            break;
        }
        if (!strcmp(mode, "nll")) {
            if (flas_model_forward(&m, seq, NULL, 1, T, NULL, logits))
                die("forward: %s%s", m.err, "");
            double sum = 0;
            for (int t = 0; t + 1 < T; t++) {
                const float *row = logits + (size_t)t * (size_t)V;
                double mx = row[0], s = 0;
                for (int v = 1; v < V; v++)
                    mx = row[v] > mx ? row[v] : mx;
                for (int v = 0; v < V; v++)
                    s += exp((double)row[v] - mx);
                sum += mx + log(s) - (double)row[seq[t + 1]];
            }
            fprintf(out, "{\"sum\": %.17g, \"count\": %d}\n", sum, T - 1);
            continue;
        }
        /* greedy */
        fprintf(out, "{\"ids\": [");
        double *gap = malloc(sizeof *gap * (size_t)N);
        for (int s = 0; s < N; s++) {
            if (flas_model_forward(&m, seq, NULL, 1, T, NULL, logits))
                die("forward: %s%s", m.err, "");
            const float *row = logits + (size_t)(T - 1) * (size_t)V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (row[v] > row[best])
                    best = v;
            float second = -INFINITY;
            for (int v = 0; v < V; v++)
                if (v != best && row[v] > second)
                    second = row[v];
            gap[s] = (double)row[best] - (double)second;
            seq[T++] = best;
            fprintf(out, "%s%d", s ? ", " : "", best);
        }
        fprintf(out, "], \"gap\": [");
        for (int s = 0; s < N; s++)
            fprintf(out, "%s%.9g", s ? ", " : "", gap[s]);
        fprintf(out, "]}\n");
        free(gap);
    }
    if (out && fclose(out))
        die("%s: %s", outp, strerror(errno));
    for (int k = 0; k < lines; k++)
        free(ids[k]);
    free(ids);
    free(n);
    free(logits);
    free(seq);
    flas_model_free(&m);
    return 0;
}
