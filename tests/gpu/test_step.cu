// One training step of the CUDA model driver (runtime/cuda/model_cuda.h) against a "FLaS step state"
// file that the CPU core wrote (include/flas/step_state.h, tests/gpu/write_step_state):
//   test_step STATE_FILE
// Forward + backward on the file's params and batch: the loss, the logits (when stored), EVERY parameter
// tensor's gradient and the global gradient norm against the CPU's fp32 values; then, when the file
// records S optimizer steps, their replay (fresh AdamW, the file's per-step lr, clipping) with each step's
// loss against the CPU's. One line per check with PASS/FAIL.
// Exit: 0 all passed, 1 a failure, 2 usage, 77 no CUDA device ("not run": ctest's SKIP_RETURN_CODE).
//
// TOLERANCES. The CPU file is fp32 throughout; the GPU follows kernels.h's dtype policy: every operand of a
// matrix product is rounded to bf16 (8 significant bits), accumulation is fp32. The argument is the one of
// tests/core/test_core_bf16.c, whose CPU bf16 path rounds the same operands (its measured worst tensor:
// 6.5e-3 relative for L = 3): rounding an operand moves it by at most u = 2^-9 relative, u/sqrt(3) on
// average, so a product of two rounded operands carries about sqrt(2/3) u ~ 1.6e-3 relative error per
// term, and a whole output (in norm) about the same, errors of terms with mixed signs adding in quadrature
// as the terms do. A weight gradient of block l passes through the products of the forward pass up to it
// and of the backward pass down to it: at most 2 + 4 L + 3 products (head forward and backward, four
// per block each way, the first block's qkv), whose independent errors add in quadrature:
// sqrt(5 + 4 L) x 1.6e-3. The bound per tensor (relative Frobenius difference) is 3x that, and never
// below test_core_bf16.c's 2e-2 (which it equals at L = 3):
//     rel_bound(L) = max(2e-2, 3 x 1.6e-3 x sqrt(5 + 4 L))      (L = 6: 2.6e-2)
// and the cosine must exceed 1 - rel_bound^2 / 2 (an error of relative size e orthogonal to the gradient
// gives cosine 1 - e^2/2: 0.9998 at 2e-2, test_core_bf16.c's bound). The global gradient norm differs by
// at most the Frobenius difference of the whole gradient (triangle inequality), so the same rel_bound.
// The loss, a mean over B*T positions of a smooth function of the logits, within 2e-3 relative (the
// logits' own error, ~ sqrt(3) x 1.6e-3, before averaging), as test_core_bf16.c; the logits themselves,
// after 1 + 4 L products, within max(2e-2, 3 x 1.6e-3 x sqrt(1 + 4 L)) in relative Frobenius norm.
// Replay: AdamW normalises each update (m / sqrt(v)), so the bf16 noise of the gradients moves the
// weights by noise of relative size ~rel_bound per element per step, which does not compound into the
// loss as long as training is stable; each step's loss within 1% relative of the CPU's, as asked of a
// bf16 trainer against its fp32 reference (llm.c checks its bf16 losses at a similar level).
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vector>

#include "cuda/kernels.h"
#include "cuda/model_cuda.h"
#include "flas/step_state.h"

static int g_failed = 0, g_checks = 0;

static void report(const char *name, const char *detail, bool pass)
{
    printf("%-44s %s  %s\n", name, detail, pass ? "PASS" : "FAIL");
    g_checks++;
    if (!pass)
        g_failed++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Relative Frobenius difference and cosine of got against ref, in double. NaN anywhere makes both NaN,
// which every comparison below treats as a failure (the conditions are written `x <= bound`).
struct cmp {
    double rel, cosine, ref_norm, got_norm;
};

static cmp compare(const float *got, const float *ref, size_t n)
{
    double dd = 0, nr = 0, ng = 0, dot = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], r = ref[i];
        dd += (g - r) * (g - r);
        nr += r * r;
        ng += g * g;
        dot += g * r;
    }
    cmp c;
    c.ref_norm = sqrt(nr);
    c.got_norm = sqrt(ng);
    c.rel = nr > 0 ? sqrt(dd / nr) : (dd == 0 ? 0.0 : INFINITY);
    c.cosine = (nr > 0 && ng > 0) ? dot / sqrt(nr * ng) : (nr == 0 && ng == 0 ? 1.0 : 0.0);
    return c;
}

// A check of got against ref within (rel_bound, 1 - rel_bound^2/2); returns the relative difference.
static double check_tensor(const char *name, const float *got, const float *ref, size_t n, double rel_bound)
{
    cmp c = compare(got, ref, n);
    double cos_min = 1.0 - rel_bound * rel_bound / 2;
    char detail[200];
    if (c.ref_norm == 0)
        snprintf(detail, sizeof detail, "cpu grad is zero, gpu norm %.3e (must be 0)", c.got_norm);
    else
        snprintf(detail, sizeof detail, "rel %.3e (<= %.1e) cos %.7f (> %.7f) |cpu| %.3e", c.rel, rel_bound, c.cosine,
                 cos_min, c.ref_norm);
    report(name, detail, c.rel <= rel_bound && c.cosine > cos_min);
    return c.rel;
}

static bool lib_ok(int rc, flas_cuda_model *m, const char *what)
{
    if (rc == 0)
        return true;
    char detail[700];
    snprintf(detail, sizeof detail, "error: %s", flas_cuda_model_error(m));
    report(what, detail, false);
    return false;
}

// splitmix64 for the residual check's inputs
static uint64_t g_rng = 0x5EED57E9ull;
static float rnd(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((z >> 40) * (1.0 / 16777216.0)) * 8.0f - 4.0f;
}

// residual.cu against the host's fp32 addition: one IEEE rounding each, so the same bits.
static void check_residual(flas_cuda *ctx)
{
    const size_t n = 100003;
    std::vector<float> a(n), b(n), want(n), got(n);
    for (size_t i = 0; i < n; i++) {
        a[i] = rnd();
        b[i] = rnd() * 1e-3f;
        want[i] = a[i] + b[i];
    }
    float *d = NULL;
    bool ok = cudaMalloc(&d, 3 * n * sizeof(float)) == cudaSuccess &&
              cudaMemcpy(d, a.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess &&
              cudaMemcpy(d + n, b.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess &&
              flas_cuda_residual_add(ctx, d + 2 * n, d, d + n, n) == 0 && flas_cuda_sync(ctx) == 0 &&
              cudaMemcpy(got.data(), d + 2 * n, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess;
    cudaFree(d);
    size_t bad = 0;
    for (size_t i = 0; ok && i < n; i++)
        bad += memcmp(&got[i], &want[i], sizeof(float)) != 0;
    char detail[200];
    snprintf(detail, sizeof detail, "n %zu, %zu elements differ (exact)%s%s", n, bad, ok ? "" : " error: ",
             ok ? "" : flas_cuda_error(ctx));
    report("residual add", detail, ok && bad == 0);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fprintf(stderr, "usage: test_step STATE_FILE   (a FLaS step state, tests/gpu/write_step_state)\n");
        return 2;
    }
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("not run: no GPU (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    flas_step_state s;
    char err[512];
    if (flas_step_state_read(argv[1], &s, err, sizeof err)) {
        printf("FAIL reading %s: %s\n", argv[1], err);
        return 1;
    }
    const flas_config *cfg = &s.cfg;
    const int L = cfg->n_layers, B = s.B, T = s.T, S = s.n_steps;
    const size_t bt = (size_t)B * T, np = s.n_params;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        printf("device 0: %s, sm_%d%d\n", prop.name, prop.major, prop.minor);
    printf("state %s: dim %d layers %d heads %d kv %d hidden %d vocab %d seq %d %s, B %d T %d, %zu params, "
           "S %d, cpu %s, loss %.6f\n",
           argv[1], cfg->dim, L, cfg->n_heads, cfg->n_kv_heads, cfg->hidden_dim, cfg->vocab_size, cfg->seq_len,
           cfg->tied_embeddings ? "tied" : "untied", B, T, np, S, s.reference ? "reference layers" : "fast path",
           (double)s.loss);

    flas_cuda *ctx = NULL;
    if (flas_cuda_create(&ctx, 0, err, sizeof err)) {
        printf("FAIL flas_cuda_create: %s\n", err);
        flas_step_state_free(&s);
        return 1;
    }
    flas_cuda_model *m = NULL;
    if (flas_cuda_model_create(&m, ctx, cfg, B, T, err, sizeof err)) {
        printf("FAIL flas_cuda_model_create: %s\n", err);
        flas_cuda_destroy(ctx);
        flas_step_state_free(&s);
        return 1;
    }
    const flas_param_table *tab = flas_cuda_model_table(m);
    {
        char detail[200];
        snprintf(detail, sizeof detail, "table %zu floats, file %zu; %.1f MiB on the device", tab->n_params, np,
                 flas_cuda_model_device_bytes(m) / 1048576.0);
        report("parameter layout", detail, tab->n_params == np);
    }
    check_residual(ctx);

    const double rel_bound = fmax(2e-2, 3 * 1.6e-3 * sqrt(5.0 + 4.0 * L));
    const double logit_bound = fmax(2e-2, 3 * 1.6e-3 * sqrt(1.0 + 4.0 * L));
    std::vector<float> grads(np), logits(s.n_logits);
    float loss = NAN, norm = NAN;
    bool ok = tab->n_params == np;
    double t0 = now_s();
    ok = ok && lib_ok(flas_cuda_model_set_params(m, s.params), m, "set params") &&
         lib_ok(flas_cuda_model_zero_grad(m), m, "zero grad") &&
         lib_ok(flas_cuda_model_forward(m, s.tokens, s.targets, B, T, &loss, s.n_logits ? logits.data() : NULL), m,
                "forward") &&
         lib_ok(flas_cuda_model_backward(m, 1.0f), m, "backward") &&
         lib_ok(flas_cuda_model_get_grads(m, grads.data()), m, "get grads") &&
         lib_ok(flas_cuda_model_grad_norm(m, &norm), m, "grad norm");
    double t1 = now_s();
    if (ok) {
        printf("first step (with cuBLASLt set-up): %.1f ms\n", (t1 - t0) * 1e3);
        char detail[200];
        double rel = fabs((double)loss - s.loss) / fabs((double)s.loss);
        snprintf(detail, sizeof detail, "gpu %.6f cpu %.6f rel %.3e (<= 2e-3)", (double)loss, (double)s.loss, rel);
        report("loss", detail, rel <= 2e-3);
        if (s.n_logits)
            check_tensor("logits", logits.data(), s.logits, s.n_logits, logit_bound);
        double worst = -1;
        const char *worst_name = "";
        for (int i = 0; i < tab->n_tensors; i++) {
            const flas_tensor *x = &tab->tensors[i];
            char name[FLAS_TENSOR_NAME_MAX + 8];
            snprintf(name, sizeof name, "grad %s", x->name);
            double r = check_tensor(name, grads.data() + x->offset, s.grads + x->offset, x->numel, rel_bound);
            if (!(r <= worst)) // NaN counts as worst
                worst = r, worst_name = x->name;
        }
        printf("worst gradient tensor: %s, relative difference %.3e (bound %.2e)\n", worst_name, worst, rel_bound);
        double nr = 0;
        for (size_t i = 0; i < np; i++)
            nr += (double)s.grads[i] * s.grads[i];
        float ref_norm = sqrtf((float)nr);
        double nrel = fabs((double)norm - ref_norm) / ref_norm;
        snprintf(detail, sizeof detail, "gpu %.6e cpu %.6e rel %.3e (<= %.1e)", (double)norm, (double)ref_norm, nrel,
                 rel_bound);
        report("grad norm", detail, nrel <= rel_bound);
    }

    // The replay of flas/step_state.h: fresh moments; zero, forward, backward, clip, AdamW at step_lr[k].
    if (ok && S > 0) {
        const flas_step_adamw *a = &s.adamw;
        double worst = -1, worst_norm = -1;
        int worst_k = 0, n_bad = 0;
        float last = NAN;
        double r0 = now_s();
        ok = lib_ok(flas_cuda_model_set_params(m, s.params), m, "replay: set params") &&
             lib_ok(flas_cuda_model_adamw_init(m, a->beta1, a->beta2, a->eps, a->weight_decay), m, "replay: adamw init");
        printf("replay: %d steps, B %d T %d, betas %g %g eps %g wd %g clip %g, lr %g .. %g\n", S, B, T,
               (double)a->beta1, (double)a->beta2, (double)a->eps, (double)a->weight_decay, (double)a->clip,
               (double)s.step_lr[0], (double)s.step_lr[S - 1]);
        for (int k = 0; ok && k < S; k++) {
            const int32_t *tok = s.step_tokens + (size_t)k * bt, *tgt = s.step_targets + (size_t)k * bt;
            float l = NAN, n = NAN;
            ok = lib_ok(flas_cuda_model_zero_grad(m), m, "replay: zero grad") &&
                 lib_ok(flas_cuda_model_forward(m, tok, tgt, B, T, &l, NULL), m, "replay: forward") &&
                 lib_ok(flas_cuda_model_backward(m, 1.0f), m, "replay: backward") &&
                 lib_ok(flas_cuda_model_clip_grad_norm(m, a->clip, &n), m, "replay: clip") &&
                 lib_ok(flas_cuda_model_adamw_step(m, s.step_lr[k]), m, "replay: adamw step");
            if (!ok)
                break;
            double rel = fabs((double)l - s.step_loss[k]) / fabs((double)s.step_loss[k]);
            double nrel = fabs((double)n - s.step_norm[k]) / fabs((double)s.step_norm[k]);
            bool bad = !(rel <= 1e-2);
            n_bad += bad;
            if (!(rel <= worst))
                worst = rel, worst_k = k;
            if (!(nrel <= worst_norm))
                worst_norm = nrel;
            last = l;
            if (k < 5 || k % 20 == 19 || k == S - 1 || bad)
                printf("replay step %4d: loss gpu %.6f cpu %.6f rel %.2e; norm gpu %.4e cpu %.4e; lr %.3e%s\n", k,
                       (double)l, (double)s.step_loss[k], rel, (double)n, (double)s.step_norm[k],
                       (double)s.step_lr[k], bad ? "  <- over 1%" : "");
        }
        if (ok) {
            double secs = now_s() - r0;
            char detail[300];
            snprintf(detail, sizeof detail,
                     "%d steps, %d over 1%%, worst rel %.3e at step %d (<= 1e-2); final loss gpu %.6f cpu %.6f", S,
                     n_bad, worst, worst_k, (double)last, (double)s.step_loss[S - 1]);
            report("replay losses", detail, n_bad == 0 && worst <= 1e-2);
            printf("replay: worst relative difference of the pre-clip gradient norm %.3e (informative); "
                   "%.1f ms per step\n",
                   worst_norm, secs * 1e3 / S);
        }
    }

    flas_cuda_model_destroy(m);
    printf("matmul fallbacks (cublasGemmEx instead of cuBLASLt): %ld\n", flas_cuda_matmul_fallbacks(ctx));
    flas_cuda_destroy(ctx);
    flas_step_state_free(&s);
    printf("%d of %d checks failed\n", g_failed, g_checks);
    return g_failed || !ok ? 1 : 0;
}
