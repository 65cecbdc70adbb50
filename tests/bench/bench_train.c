/* flas-bench-train: training throughput of the C core against an sgemm ceiling and PyTorch, all
 * measured in the same run.
 *
 * For each shape (stories15M and stories260K by default) it alternates R rounds of
 *   - a C worker (this program re-executed with --worker, so its peak RSS is its own): S timed
 *     training steps (forward, backward, clip, AdamW) on random tokens -> median tokens/s
 *   - PyTorch (bench_torch.py) at each thread setting -> its best median tokens/s
 * and reports medians over the rounds plus the ratio of medians. Interleaving makes the two see the
 * same background load (the build machines are shared). The sgemm ceiling is the best of OpenBLAS's
 * own threaded sgemm and FLaS's tiled flas_sgemm on a 2048^3 product. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "flas/blas_info.h"
#include "flas/llama.h"
#include "flas/optim.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "layers.h"

#ifndef FLAS_BENCH_TORCH_SCRIPT
#define FLAS_BENCH_TORCH_SCRIPT "bench_torch.py"
#endif

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* GFLOP/s of C[n,n] = A.B: OpenBLAS's own threading (threaded = 1) or FLaS's tiles. Best of reps. */
static double sgemm_gflops(int n, int threads, int tiled)
{
    float *A = malloc(sizeof(float) * n * n), *B = malloc(sizeof(float) * n * n), *C = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) {
        A[i] = (float)(i % 13) * 0.01f;
        B[i] = (float)(i % 7) * 0.01f;
    }
    openblas_set_num_threads(tiled ? 1 : threads);
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        if (tiled)
            flas_sgemm(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        double g = 2.0 * n * n * n / (now() - t0) * 1e-9;
        best = g > best ? g : best;
    }
    openblas_set_num_threads(1);
    free(A);
    free(B);
    free(C);
    return best;
}

/* GFLOP/s of the same product in bf16 through oneDNN (gemm_bf16.h): the ceiling of --precision bf16. */
static double bf16_gflops(int n)
{
    float *A = malloc(sizeof(float) * n * n), *B = malloc(sizeof(float) * n * n), *C = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; i++) {
        A[i] = (float)(i % 13) * 0.01f;
        B[i] = (float)(i % 7) * 0.01f;
    }
    double best = 0;
    char err[256];
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        if (flas_gemm_bf16(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n, err, sizeof err))
            break;
        double g = 2.0 * n * n * n / (now() - t0) * 1e-9;
        best = g > best ? g : best;
    }
    free(A);
    free(B);
    free(C);
    return best;
}

/* --profile: the worker times every layer call by running the fast kernels through this wrapping
 * table (the driver calls layers only through flas_kernels). */
enum { P_MM_F, P_MM_B, P_RMS_F, P_RMS_B, P_ROPE, P_ATT_F, P_ATT_B, P_SWI_F, P_SWI_B, P_EMB, P_XENT_F, P_XENT_B, P_N };
static const char *const prof_names[P_N] = {"matmul fwd", "matmul bwd", "rmsnorm fwd", "rmsnorm bwd", "rope f+b",
                                             "attention fwd", "attention bwd", "swiglu fwd", "swiglu bwd",
                                             "embedding f+b", "softmax+xent fwd", "softmax+xent bwd"};
static double prof_t[P_N];
static const flas_kernels *base_k = &flas_kernels_fast;
#define TIMED(slot, call)                                                                                         \
    do {                                                                                                          \
        double t0_ = now();                                                                                       \
        call;                                                                                                     \
        prof_t[slot] += now() - t0_;                                                                              \
    } while (0)
static void w_mm_f(float *o, const float *i, const float *W, int N, int Nin, int Nout)
{
    TIMED(P_MM_F, base_k->matmul_forward(o, i, W, N, Nin, Nout));
}
static void w_mm_b(float *di, float *dW, const float *d, const float *i, const float *W, int N, int Nin, int Nout, float a,
                   bool acc)
{
    TIMED(P_MM_B, base_k->matmul_backward(di, dW, d, i, W, N, Nin, Nout, a, acc));
}
static void w_rms_f(float *o, float *r, const float *x, const float *w, int N, int D, float e)
{
    TIMED(P_RMS_F, base_k->rmsnorm_forward(o, r, x, w, N, D, e));
}
static void w_rms_b(float *dx, float *dw, const float *d, const float *x, const float *w, const float *r, int N, int D)
{
    TIMED(P_RMS_B, base_k->rmsnorm_backward(dx, dw, d, x, w, r, N, D));
}
static void w_rope_f(float *x, int B, int T, int H, int hd, int ld, const float *c, const float *s)
{
    TIMED(P_ROPE, base_k->rope_forward(x, B, T, H, hd, ld, c, s));
}
static void w_rope_b(float *x, int B, int T, int H, int hd, int ld, const float *c, const float *s)
{
    TIMED(P_ROPE, base_k->rope_backward(x, B, T, H, hd, ld, c, s));
}
static void w_att_f(float *o, float *p, const float *q, const float *k, const float *v, int ld, int B, int T, int Hq,
                    int Hkv, int hd)
{
    TIMED(P_ATT_F, base_k->attention_forward(o, p, q, k, v, ld, B, T, Hq, Hkv, hd));
}
static void w_att_b(float *dq, float *dk, float *dv, float *dp, const float *d, const float *p, const float *q,
                    const float *k, const float *v, int ld, int B, int T, int Hq, int Hkv, int hd)
{
    TIMED(P_ATT_B, base_k->attention_backward(dq, dk, dv, dp, d, p, q, k, v, ld, B, T, Hq, Hkv, hd));
}
static void w_swi_f(float *g, const float *a, const float *b, size_t n) { TIMED(P_SWI_F, base_k->swiglu_forward(g, a, b, n)); }
static void w_swi_b(float *da, float *db, const float *dg, const float *a, const float *b, size_t n)
{
    TIMED(P_SWI_B, base_k->swiglu_backward(da, db, dg, a, b, n));
}
static void w_emb_f(float *o, const int *t, const float *tab, int N, int D)
{
    TIMED(P_EMB, base_k->embedding_forward(o, t, tab, N, D));
}
static void w_emb_b(float *dt, const float *d, const int *t, int N, int D)
{
    TIMED(P_EMB, base_k->embedding_backward(dt, d, t, N, D));
}
static void w_xent_f(float *l, float *loss, const int *t, int N, int V)
{
    TIMED(P_XENT_F, base_k->xent_forward(l, loss, t, N, V));
}
static void w_xent_b(float *p, const int *t, int N, int V) { TIMED(P_XENT_B, base_k->xent_backward(p, t, N, V)); }
static int w_status(char *err, size_t errlen) { return base_k->status ? base_k->status(err, errlen) : 0; }
static const flas_kernels profiled = {"profiled", w_mm_f, w_mm_b, w_rms_f, w_rms_b, w_rope_f, w_rope_b, w_att_f,
                                      w_att_b, w_swi_f, w_swi_b, w_emb_f, w_emb_b, w_xent_f, w_xent_b, w_status};

/* The worker: S steps of training, prints "tok_per_s X peak_rss_kib Y loss Z act_mib W". */
static int worker(const char *preset, int batch, int steps, int warmup, int threads, int profile, flas_precision prec)
{
    flas_config cfg;
    if (flas_config_preset(preset, &cfg)) {
        fprintf(stderr, "flas-bench-train: unknown model '%s'\n", preset);
        return 2;
    }
    flas_model m;
    char err[256];
    int T = cfg.seq_len;
    if (flas_model_create(&m, &cfg, 0, 1, batch, T, threads, err, sizeof err)) {
        fprintf(stderr, "flas-bench-train: %s\n", err);
        return 1;
    }
    flas_model_init_weights(&m, 1);
    if (flas_model_set_precision(&m, prec, err, sizeof err)) {
        fprintf(stderr, "flas-bench-train: %s\n", err);
        return 1;
    }
    base_k = m.kernels;
    if (profile)
        m.kernels = &profiled;
    flas_adamw opt;
    if (flas_adamw_init(&opt, &m.table, 0.9f, 0.95f, 1e-8f, 0.1f)) {
        fprintf(stderr, "flas-bench-train: out of memory for AdamW state\n");
        return 1;
    }
    int N = batch * T;
    int *tokens = malloc(sizeof(int) * N), *targets = malloc(sizeof(int) * N);
    double *times = malloc(sizeof(double) * (steps > 0 ? steps : 1));
    unsigned long long rng = 12345;
    double opt_time = 0;
    float loss = 0;
    for (int s = 0; s < warmup + steps; s++) {
        for (int i = 0; i < N; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            tokens[i] = (int)((rng >> 33) % (unsigned)cfg.vocab_size);
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            targets[i] = (int)((rng >> 33) % (unsigned)cfg.vocab_size);
        }
        if (s == warmup)
            memset(prof_t, 0, sizeof prof_t);
        double t0 = now();
        flas_model_zero_grad(&m);
        if (flas_model_forward(&m, tokens, targets, batch, T, &loss, NULL) || flas_model_backward(&m, 1.0f)) {
            fprintf(stderr, "flas-bench-train: %s\n", m.err);
            return 1;
        }
        double t1 = now();
        flas_model_clip_grad_norm(&m, 1.0f);
        flas_adamw_step(&opt, m.params, m.grads, 3e-4f);
        if (s >= warmup)
            opt_time += now() - t1;
        if (s >= warmup)
            times[s - warmup] = now() - t0;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (profile) {
        double total = 0, layers = 0;
        for (int s = 0; s < steps; s++)
            total += times[s];
        for (int k = 0; k < P_N; k++)
            layers += prof_t[k];
        fprintf(stderr, "profile of %s, %d steps, %.3f s/step:\n", preset, steps, total / steps);
        for (int k = 0; k < P_N; k++)
            fprintf(stderr, "  %-18s %7.1f ms/step %5.1f%%\n", prof_names[k], 1e3 * prof_t[k] / steps,
                    100 * prof_t[k] / total);
        fprintf(stderr, "  %-18s %7.1f ms/step %5.1f%%\n", "clip + AdamW", 1e3 * opt_time / steps, 100 * opt_time / total);
        fprintf(stderr, "  %-18s %7.1f ms/step %5.1f%%\n", "rest (driver)", 1e3 * (total - layers - opt_time) / steps,
                100 * (total - layers - opt_time) / total);
    }
    printf("tok_per_s %.1f peak_rss_kib %ld loss %.4f act_mib %.1f\n", N / median(times, steps), ru.ru_maxrss,
           loss, flas_model_activation_bytes(&m) / 1048576.0);
    flas_adamw_free(&opt);
    flas_model_free(&m);
    free(tokens);
    free(targets);
    free(times);
    return 0;
}

static double last_act_mib; /* the last C worker's activation + scratch arena */

/* Runs cmd, parses "tok_per_s X peak_rss_kib Y [loss L act_mib A]"; 0 on success. */
static int run_probe(const char *cmd, double *tok_s, long *rss_kib)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[512];
    int ok = 0;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "tok_per_s %lf peak_rss_kib %ld", tok_s, rss_kib) == 2) {
            float loss;
            ok = 1;
            sscanf(line, "tok_per_s %*f peak_rss_kib %*d loss %f act_mib %lf", &loss, &last_act_mib);
        }
    int rc = pclose(p);
    return ok && rc == 0 ? 0 : -1;
}

typedef struct bench {
    const char *self, *python, *torch_script; /* torch_script NULL: no PyTorch */
    int batch, steps, rounds, threads;
    flas_precision prec; /* bf16: FLaS in bf16 and fp32, PyTorch under CPU autocast, the bf16 ceiling */
} bench;

/* PyTorch thread settings tried: {torch.set_num_threads, OPENBLAS_NUM_THREADS}. */
static const int torch_settings[4][2] = {{1, 1}, {1, 2}, {2, 1}, {2, 2}};

static int run_torch(const bench *o, const flas_config *c, int setting, double *tok, long *rss)
{
    char cmd[PATH_MAX + 768];
    snprintf(cmd, sizeof cmd,
             "OPENBLAS_NUM_THREADS=%d OMP_NUM_THREADS=%d '%s' '%s' --dim %d --n_layers %d --n_heads %d "
             "--n_kv_heads %d --hidden_dim %d --vocab_size %d --seq_len %d --tied_embeddings %d --batch %d "
             "--steps %d --torch_threads %d%s",
             torch_settings[setting][1], torch_settings[setting][0], o->python, o->torch_script, c->dim, c->n_layers,
             c->n_heads, c->n_kv_heads, c->hidden_dim, c->vocab_size, c->seq_len, c->tied_embeddings, o->batch,
             o->steps, torch_settings[setting][0], o->prec == FLAS_PRECISION_BF16 ? " --autocast_bf16 1" : "");
    if (run_probe(cmd, tok, rss)) {
        fprintf(stderr, "\nflas-bench-train: PyTorch failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

/* One shape: PyTorch's best thread setting first (each setting twice, interleaved, best run kept),
 * then R rounds of {sgemm ceiling, FLaS, PyTorch at that setting}: one sample of each per round, so
 * neither side gets more draws from the noise than the other. */
static int bench_model(const bench *o, const char *name)
{
    flas_config cfg;
    flas_config_preset(name, &cfg);
    int T = cfg.seq_len, R = o->rounds, best = -1;
    double fpt = flas_model_flops_per_token(&cfg, T);
    printf("\n%s: dim %d, %d layers, %d/%d heads, hidden %d, vocab %d, batch %d x %d tokens, %.1f MFLOP/token\n", name,
           cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.hidden_dim, cfg.vocab_size, o->batch, T, fpt * 1e-6);
    if (o->torch_script) {
        double best_tok[4] = {0};
        long rss;
        printf("  PyTorch thread settings (torch/OpenBLAS threads: tok/s):");
        for (int pass = 0; pass < 2; pass++)
            for (int s = 0; s < 4; s++) {
                double tok;
                if (torch_settings[s][0] > o->threads || torch_settings[s][1] > o->threads)
                    continue;
                if (run_torch(o, &cfg, s, &tok, &rss))
                    return -1;
                printf(" %d/%d: %.0f", torch_settings[s][0], torch_settings[s][1], tok);
                fflush(stdout);
                best_tok[s] = tok > best_tok[s] ? tok : best_tok[s];
                if (best < 0 || best_tok[s] > best_tok[best])
                    best = s;
            }
        printf("\n  PyTorch's best: torch %d / OpenBLAS %d threads\n", torch_settings[best][0], torch_settings[best][1]);
    }
    double *c_tok = calloc((size_t)R, sizeof(double)), *t_tok = calloc((size_t)R, sizeof(double));
    double *ratio = calloc((size_t)R, sizeof(double)), *mfu = calloc((size_t)R, sizeof(double));
    double *ceil = calloc((size_t)R, sizeof(double));
    double *f32_tok = calloc((size_t)R, sizeof(double)), *speedup = calloc((size_t)R, sizeof(double));
    int bf16 = o->prec == FLAS_PRECISION_BF16;
    const char *ceil_name = bf16 ? "bf16 GEMM" : "sgemm";
    long c_rss = 0, t_rss = 0;
    int rc = 0;
    for (int r = 0; r < R && !rc; r++) {
        /* the ceiling next to this round's measurement: both see the same background load */
        if (bf16) {
            ceil[r] = bf16_gflops(2048);
        } else {
            double cb = sgemm_gflops(2048, o->threads, 0), ct = sgemm_gflops(2048, o->threads, 1);
            ceil[r] = cb > ct ? cb : ct;
        }
        char cmd[PATH_MAX + 512];
        long f32_rss;
        if (bf16) { /* the fp32 step in the same round: the speed-up of bf16 on this processor */
            snprintf(cmd, sizeof cmd, "'%s' --worker %s --batch %d --steps %d --threads %d", o->self, name, o->batch,
                     o->steps, o->threads);
            if (run_probe(cmd, &f32_tok[r], &f32_rss)) {
                fprintf(stderr, "flas-bench-train: the C worker failed: %s\n", cmd);
                rc = -1;
                break;
            }
        }
        snprintf(cmd, sizeof cmd, "'%s' --worker %s --batch %d --steps %d --threads %d --precision %s", o->self, name,
                 o->batch, o->steps, o->threads, flas_precision_name(o->prec));
        if (run_probe(cmd, &c_tok[r], &c_rss)) {
            fprintf(stderr, "flas-bench-train: the C worker failed: %s\n", cmd);
            rc = -1;
            break;
        }
        mfu[r] = c_tok[r] * fpt * 1e-9 / ceil[r];
        printf("  round %d: %s %.0f GFLOP/s | FLaS %s%.0f tok/s, %.1f GFLOP/s, MFU %.0f%%", r + 1, ceil_name, ceil[r],
               bf16 ? "bf16 " : "", c_tok[r], c_tok[r] * fpt * 1e-9, 100.0 * mfu[r]);
        if (bf16) {
            speedup[r] = c_tok[r] / f32_tok[r];
            printf(" (fp32 %.0f tok/s, bf16/fp32 %.2fx)", f32_tok[r], speedup[r]);
        }
        if (o->torch_script) {
            if (run_torch(o, &cfg, best, &t_tok[r], &t_rss)) {
                rc = -1;
                break;
            }
            ratio[r] = c_tok[r] / t_tok[r];
            printf(" | PyTorch%s %.0f tok/s | ratio %.2fx", bf16 ? " autocast bf16" : "", t_tok[r], ratio[r]);
        }
        printf("\n");
        fflush(stdout);
    }
    if (!rc) {
        double c_med = median(c_tok, R), ceil_med = median(ceil, R);
        printf("  %s ceiling median %.1f GFLOP/s\n", ceil_name, ceil_med);
        if (bf16)
            printf("  FLaS fp32 median %.0f tok/s; bf16/fp32: median of per-round ratios %.2fx\n", median(f32_tok, R),
                   median(speedup, R));
        printf("  FLaS    median %.0f tok/s, %.1f GFLOP/s, MFU %.1f%% (median of per-round MFU), peak RSS %.1f MiB = "
               "%.1f KiB/token (activations + scratch %.1f MiB = %.1f KiB/token)\n",
               c_med, c_med * fpt * 1e-9, 100.0 * median(mfu, R), c_rss / 1024.0, (double)c_rss / (o->batch * T),
               last_act_mib, last_act_mib * 1024.0 / (o->batch * T));
        if (o->torch_script) {
            double t_med = median(t_tok, R), ratio_med = median(ratio, R); /* sorts ratio: [0] is the min */
            printf("  PyTorch median %.0f tok/s, %.1f GFLOP/s, MFU %.1f%% (of the median ceiling), peak RSS %.1f MiB = "
                   "%.1f KiB/token\n",
                   t_med, t_med * fpt * 1e-9, 100.0 * t_med * fpt * 1e-9 / ceil_med, t_rss / 1024.0,
                   (double)t_rss / (o->batch * T));
            printf("  FLaS/PyTorch: median of per-round ratios %.2fx (min %.2fx), ratio of medians %.2fx\n",
                   ratio_med, ratio[0], c_med / t_med);
        }
    }
    free(c_tok);
    free(t_tok);
    free(ratio);
    free(mfu);
    free(ceil);
    free(f32_tok);
    free(speedup);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flas-bench-train [options]\n"
            "Training throughput of the FLaS core vs an sgemm ceiling and PyTorch, same run.\n"
            "  --model NAME      preset to train (repeatable; default stories15M and stories260K)\n"
            "  --batch B         sequences per step (default 8); T is the preset's seq_len\n"
            "  --steps S         timed steps per run (default 6, after 1 warm-up step)\n"
            "  --rounds R        alternating FLaS/PyTorch rounds; medians are over rounds (default 5)\n"
            "  --threads N       OpenMP threads for FLaS (default: all processors)\n"
            "  --no-torch        skip PyTorch\n"
            "  --python PATH     interpreter for PyTorch (default /usr/bin/python3)\n"
            "  --torch-script P  PyTorch peer script (default %s)\n"
            "  --profile         only time each layer of FLaS's training step (needs --model)\n"
            "  --precision bf16  bf16 mixed precision (oneDNN): FLaS bf16 and fp32 in each round, PyTorch\n"
            "                    under CPU autocast(bf16), MFU against a bf16 GEMM ceiling\n",
            FLAS_BENCH_TORCH_SCRIPT);
}

int main(int argc, char **argv)
{
    const char *models[8];
    int n_models = 0, batch = 8, steps = 6, rounds = 5, threads = 0, torch = 1, warmup = 1, profile = 0;
    flas_precision prec = FLAS_PRECISION_FP32;
    const char *python = "/usr/bin/python3", *script = FLAS_BENCH_TORCH_SCRIPT, *worker_model = NULL;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"batch", required_argument, 0, 'b'},
        {"steps", required_argument, 0, 's'}, {"rounds", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'}, {"no-torch", no_argument, 0, 'n'},
        {"python", required_argument, 0, 'p'}, {"torch-script", required_argument, 0, 'S'},
        {"worker", required_argument, 0, 'w'}, {"profile", no_argument, 0, 'P'},
        {"precision", required_argument, 0, 'x'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:b:s:r:t:np:S:w:Px:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (n_models < 8)
                models[n_models++] = optarg;
            break;
        case 'b': batch = atoi(optarg); break;
        case 's': steps = atoi(optarg); break;
        case 'r': rounds = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'n': torch = 0; break;
        case 'p': python = optarg; break;
        case 'S': script = optarg; break;
        case 'w': worker_model = optarg; break;
        case 'P': profile = 1; break;
        case 'x':
            if (flas_precision_parse(optarg, &prec)) {
                fprintf(stderr, "flas-bench-train: --precision: '%s' is not fp32 or bf16\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (batch <= 0 || steps <= 0 || rounds <= 0) {
        fprintf(stderr, "flas-bench-train: --batch, --steps and --rounds must be positive\n");
        return 2;
    }
    if (worker_model)
        return worker(worker_model, batch, steps, warmup, threads, profile, prec);
    if (profile) { /* time per layer, in this process, no peers */
        for (int i = 0; i < n_models; i++)
            if (worker(models[i], batch, steps, warmup, flas_threads_setup(threads), 1, prec))
                return 1;
        return 0;
    }
    if (!n_models) {
        models[n_models++] = "stories15M";
        models[n_models++] = "stories260K";
    }
    for (int i = 0; i < n_models; i++) {
        flas_config cfg;
        if (flas_config_preset(models[i], &cfg)) {
            fprintf(stderr, "flas-bench-train: unknown model '%s'\n", models[i]);
            return 2;
        }
    }
    if (torch && access(script, R_OK)) {
        fprintf(stderr, "flas-bench-train: PyTorch script %s: %s (or use --no-torch)\n", script, strerror(errno));
        return 1;
    }
    threads = flas_threads_setup(threads);
    flas_print_runtime_info(stdout, threads);
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        fprintf(stderr, "flas-bench-train: cannot find its own executable\n");
        return 1;
    }
    self[len] = 0;

    double ceil_blas = sgemm_gflops(2048, threads, 0), ceil_tiled = sgemm_gflops(2048, threads, 1);
    printf("sgemm ceiling at start (2048^3): OpenBLAS %d threads %.1f GFLOP/s, FLaS tiles %.1f GFLOP/s\n", threads,
           ceil_blas, ceil_tiled);
    char no_bf16[256];
    if (prec == FLAS_PRECISION_BF16 && !flas_bf16_supported(no_bf16, sizeof no_bf16)) {
        fprintf(stderr, "flas-bench-train: --precision bf16: %s\n", no_bf16);
        return 1;
    }
    bench opt = {self, python, torch ? script : NULL, batch, steps, rounds, threads, prec};
    for (int i = 0; i < n_models; i++)
        if (bench_model(&opt, models[i]))
            return 1;
    return 0;
}
