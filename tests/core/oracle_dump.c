/* Runs the C training core on one configuration and writes what it computed as .npy files, for the
 * PyTorch oracle (tests/oracle/core_oracle.py) to rebuild the same model and compare:
 *   params.npy (flat, this layout), table.txt (name offset rows cols), tokens.npy/targets.npy [B,T],
 *   logits.npy [B*T,V], loss.npy, grads.npy (flat), and for the AdamW run steps_tokens.npy
 *   [S,K,B,T+1], steps_loss.npy [S], steps_norm.npy [S].
 * Usage: core_oracle_dump OUTDIR dim layers heads kv_heads hidden vocab seq tied B T seed steps accum
 *        [norm_eps rope_theta] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/llama.h"
#include "flas/optim.h"
#include "npy.h"

/* Fixed hyper-parameters the oracle mirrors. */
#define LR_MAX 3e-3f
#define LR_MIN 3e-4f
#define WARMUP 3
#define BETA1 0.9f
#define BETA2 0.95f
#define ADAM_EPS 1e-8f
#define WEIGHT_DECAY 0.1f
#define CLIP 1.0f

static unsigned long long rng_state;
static unsigned rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)(rng_state >> 33);
}
static float unif(void) { return (float)rnd() / 2147483648.0f - 1.0f; } /* [-1, 1) */

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "core_oracle_dump: %s: %s\n", what, detail);
    exit(1);
}

static void put(const char *dir, const char *name, const char *descr, const void *data, size_t es, int nd,
                const size_t *shape)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (npy_write(path, descr, data, es, nd, shape))
        die("cannot write", path);
}

int main(int argc, char **argv)
{
    if (argc != 15 && argc != 17) {
        fprintf(stderr, "usage: %s OUTDIR dim layers heads kv_heads hidden vocab seq tied B T seed steps accum "
                        "[norm_eps rope_theta]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    flas_config c = {atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7]),
                     atoi(argv[8]), 1e-5f, 10000.0f, atoi(argv[9])};
    int B = atoi(argv[10]), T = atoi(argv[11]), steps = atoi(argv[13]), accum = atoi(argv[14]);
    rng_state = strtoull(argv[12], NULL, 10);
    if (argc == 17) {
        c.norm_eps = strtof(argv[15], NULL);
        c.rope_theta = strtof(argv[16], NULL);
    }
    flas_model m;
    char err[256];
    if (flas_model_create(&m, &c, 0, 1, B, T, 0, err, sizeof err))
        die("model", err);
    /* CORE_ORACLE_REFERENCE=1: run the plain-loop reference layers instead of the fast ones. */
    const char *ref = getenv("CORE_ORACLE_REFERENCE");
    flas_model_use_reference(&m, ref && strcmp(ref, "1") == 0);
    flas_model_init_weights(&m, rng_state);
    /* Larger than LLaMA's init (std 0.02) and non-unit norm weights, so attention is far from uniform
     * and every weight visibly shapes the output: a sharper test. */
    for (int i = 0; i < m.table.n_tensors; i++) {
        const flas_tensor *t = &m.table.tensors[i];
        for (size_t j = 0; j < t->numel; j++)
            m.params[t->offset + j] = t->ndim == 1 ? 1.0f + 0.3f * unif() : m.params[t->offset + j] * 6.0f;
    }
    size_t N = (size_t)B * T, V = (size_t)c.vocab_size;
    int *tokens = malloc(sizeof(int) * N), *targets = malloc(sizeof(int) * N);
    float *logits = malloc(sizeof(float) * N * V);
    for (size_t i = 0; i < N; i++) {
        tokens[i] = (int)(rnd() % V);
        targets[i] = (int)(rnd() % V);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/table.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        die("cannot write", path);
    for (int i = 0; i < m.table.n_tensors; i++) {
        const flas_tensor *t = &m.table.tensors[i];
        fprintf(f, "%s %zu %zu %zu\n", t->name, t->offset, t->shape[0], t->ndim == 2 ? t->shape[1] : 0);
    }
    fclose(f);
    size_t np = m.table.n_params, bt[2] = {(size_t)B, (size_t)T}, nv[2] = {N, V}, one = 1;
    put(dir, "params.npy", "<f4", m.params, 4, 1, &np);
    put(dir, "tokens.npy", "<i4", tokens, 4, 2, bt);
    put(dir, "targets.npy", "<i4", targets, 4, 2, bt);

    float loss;
    flas_model_zero_grad(&m);
    if (flas_model_forward(&m, tokens, targets, B, T, &loss, logits) || flas_model_backward(&m, 1.0f))
        die("forward/backward", m.err);
    put(dir, "logits.npy", "<f4", logits, 4, 2, nv);
    put(dir, "loss.npy", "<f4", &loss, 4, 1, &one);
    put(dir, "grads.npy", "<f4", m.grads, 4, 1, &np);

    /* AdamW run: every step sees the same accum micro-batches of B sequences of T+1 tokens, so the
     * model memorises them and the loss falls far more than the tolerance: the oracle then sees
     * whether the C optimizer moves the weights as PyTorch's does. (Written per step anyway.) */
    flas_adamw opt;
    flas_lr_schedule sched = {LR_MAX, LR_MIN, WARMUP, steps};
    if (flas_adamw_init(&opt, &m.table, BETA1, BETA2, ADAM_EPS, WEIGHT_DECAY))
        die("adamw", "out of memory");
    size_t per_step = (size_t)accum * B * (T + 1);
    int *seqs = malloc(sizeof(int) * per_step * steps);
    float *step_loss = malloc(sizeof(float) * steps), *step_norm = malloc(sizeof(float) * steps);
    for (size_t i = 0; i < per_step; i++)
        seqs[i] = (int)(rnd() % V);
    for (int s = 1; s < steps; s++)
        memcpy(seqs + (size_t)s * per_step, seqs, sizeof(int) * per_step);
    for (int s = 0; s < steps; s++) {
        flas_model_zero_grad(&m);
        double sum = 0.0;
        for (int k = 0; k < accum; k++) {
            const int *base = seqs + (size_t)s * per_step + (size_t)k * B * (T + 1);
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++) {
                    tokens[b * T + t] = base[b * (T + 1) + t];
                    targets[b * T + t] = base[b * (T + 1) + t + 1];
                }
            if (flas_model_forward(&m, tokens, targets, B, T, &loss, NULL) ||
                flas_model_backward(&m, 1.0f / accum))
                die("step", m.err);
            sum += loss;
        }
        step_loss[s] = (float)(sum / accum);
        step_norm[s] = flas_model_clip_grad_norm(&m, CLIP);
        flas_adamw_step(&opt, m.params, m.grads, flas_lr_at(&sched, s));
    }
    size_t sh[4] = {(size_t)steps, (size_t)accum, (size_t)B, (size_t)T + 1}, ns = (size_t)steps;
    put(dir, "steps_tokens.npy", "<i4", seqs, 4, 4, sh);
    put(dir, "steps_loss.npy", "<f4", step_loss, 4, 1, &ns);
    put(dir, "steps_norm.npy", "<f4", step_norm, 4, 1, &ns);
    flas_adamw_free(&opt);
    flas_model_free(&m);
    free(tokens);
    free(targets);
    free(logits);
    free(seqs);
    free(step_loss);
    free(step_norm);
    return 0;
}
