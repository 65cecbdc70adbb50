/* bf16 mixed precision on the CPU (oneDNN) against the fp32 reference.
 *
 * 1. The product itself: flas_gemm_bf16 over every transpose pair, leading dimensions wider than the
 *    matrix, alpha and beta, equals a double-precision product of the bf16-ROUNDED operands up to fp32
 *    accumulation error (so the plumbing, strides and post-ops are exact), and differs from the product
 *    of the unrounded operands by bf16 rounding (so it really is bf16).
 * 2. One training step: every parameter gradient of the bf16 model within a bound derived from bf16's
 *    unit roundoff (below) of the fp32 model's, on the same weights and tokens, and the same loss.
 *
 * Without AVX512-BF16 or AMX the runner prints why and exits 77: ctest reports "not run". */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/bf16.h"
#include "flas/llama.h"
#include "gemm_bf16.h"

static uint64_t rng = 0x1234567ull;

static float uniform(void) /* [-1, 1) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 40) / 8388608.0 - 1.0);
}

static float rounded(float x) { return flas_float_of_bf16(flas_bf16_of(x)); }

/* op(X)[i][j] of a row-major X with leading dimension ld */
static float at(const float *X, int ld, int trans, int i, int j) { return trans ? X[(size_t)j * ld + i] : X[(size_t)i * ld + j]; }

START_TEST(gemm_matches_rounded_operands)
{
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {64, 96, 128}, {5, 300, 41}};
    static const float ab[][2] = {{1.0f, 0.0f}, {0.25f, 1.0f}, {-1.5f, 0.5f}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t k = 0; k < sizeof ab / sizeof ab[0]; k++) {
                    int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                    float alpha = ab[k][0], beta = ab[k][1];
                    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2; /* padded rows */
                    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
                    float *A = malloc(na * 4), *B = malloc(nb * 4), *C = malloc(nc * 4), *C0 = malloc(nc * 4);
                    for (size_t i = 0; i < na; i++)
                        A[i] = uniform();
                    for (size_t i = 0; i < nb; i++)
                        B[i] = uniform();
                    for (size_t i = 0; i < nc; i++)
                        C[i] = C0[i] = uniform();
                    char err[256];
                    ck_assert_msg(flas_gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, err, sizeof err) == 0,
                                  "%s", err);
                    double worst = 0, unrounded_diff = 0;
                    for (int i = 0; i < M; i++) {
                        for (int j = 0; j < N; j++) {
                            double r = 0, u = 0, mag = 0;
                            for (int l = 0; l < K; l++) {
                                float a = at(A, lda, ta, i, l), b = at(B, ldb, tb, l, j);
                                r += (double)rounded(a) * rounded(b);
                                u += (double)a * b;
                                mag += fabs((double)rounded(a) * rounded(b));
                            }
                            double want = alpha * r + beta * C0[(size_t)i * ldc + j];
                            double got = C[(size_t)i * ldc + j];
                            /* fp32 accumulation of K terms: at most K * 2^-24 of the sum of |terms| (a
                             * bound, not an estimate), plus the rounding of beta * C and of the result. */
                            double bound = (K + 2) * 0x1p-24 * (fabs(alpha) * mag + fabs(beta * C0[(size_t)i * ldc + j])) +
                                           0x1p-24 * fabs(want) + 1e-30;
                            double e = fabs(got - want) / bound;
                            worst = e > worst ? e : worst;
                            unrounded_diff = fmax(unrounded_diff, fabs(alpha * (u - r)));
                        }
                        /* the padding of C's rows is never written */
                        for (int j = N; j < ldc; j++)
                            ck_assert(C[(size_t)i * ldc + j] == C0[(size_t)i * ldc + j]);
                    }
                    ck_assert_msg(worst <= 1.0, "M %d N %d K %d ta %d tb %d alpha %g beta %g: error %.2f x the fp32 "
                                  "accumulation bound", M, N, K, ta, tb, alpha, beta, worst);
                    /* operands of 8 significant bits: the exact product moves (except 1x1x1 by luck) */
                    if (K * M * N > 8)
                        ck_assert_msg(unrounded_diff > 1e-4, "the product did not round its operands to bf16");
                    free(A), free(B), free(C), free(C0);
                }
}
END_TEST

/* A LLaMA of GQA shape, untied, small enough for a unit test but with every layer kind. */
static const flas_config cfg = {128, 3, 8, 4, 352, 512, 64, 1e-5f, 10000.0f, 0};
enum { BATCH = 4, SEQ = 64 };

static void step(flas_model *m, const int *tok, const int *tgt, float *loss)
{
    flas_model_zero_grad(m);
    ck_assert_msg(flas_model_forward(m, tok, tgt, BATCH, SEQ, loss, NULL) == 0, "%s", m->err);
    ck_assert_msg(flas_model_backward(m, 1.0f) == 0, "%s", m->err);
}

START_TEST(gradients_within_bf16_tolerance)
{
    flas_model a, b;
    char err[256];
    ck_assert(flas_model_create(&a, &cfg, 0, 1, BATCH, SEQ, 2, err, sizeof err) == 0);
    ck_assert(flas_model_create(&b, &cfg, 0, 1, BATCH, SEQ, 2, err, sizeof err) == 0);
    flas_model_init_weights(&a, 42);
    /* weights as a model after some training would have them: not all norms exactly 1 */
    for (size_t i = 0; i < a.table.n_params; i++)
        a.params[i] *= 1.0f + 0.1f * uniform();
    memcpy(b.params, a.params, a.table.n_params * sizeof(float));
    ck_assert_msg(flas_model_set_precision(&b, FLAS_PRECISION_BF16, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(b.precision, FLAS_PRECISION_BF16);
    int tok[BATCH * SEQ], tgt[BATCH * SEQ];
    for (int i = 0; i < BATCH * SEQ; i++) { /* a learnable stream, as training sees */
        tok[i] = i % SEQ == 0 ? 1 : (tok[i - 1] * 7 + 3) % cfg.vocab_size;
        tgt[i] = (tok[i] * 7 + 3) % cfg.vocab_size;
    }
    float la, lb;
    step(&a, tok, tgt, &la);
    step(&b, tok, tgt, &lb);
    /* Why these bounds. bf16 keeps 8 significant bits: rounding an operand moves it by at most
     * u = 2^-9 relative, by u/sqrt(3) on average. A product of two rounded operands then carries a
     * relative error of about sqrt(2/3) u ~ 1.6e-3 per term; summed over K terms of mixed signs the
     * errors add in quadrature, as the terms' magnitudes do, so the relative error of a whole output
     * (in norm) stays ~ 1.6e-3. A weight gradient of block l passes through the products of the
     * forward pass up to it and of the backward pass down to it: at most 2 + 4 L + 3 = 17 products
     * for L = 3 here. Independent errors of that many products add in quadrature too:
     * sqrt(17) x 1.6e-3 ~ 0.7%. The bound is 3x that, 2%, per tensor in the Frobenius norm; the
     * loss, an average over 256 positions of a smooth function of the logits, must agree to 2e-3
     * relative (the logits' own error, ~ sqrt(3) x 1.6e-3, before averaging). Measured: printed. */
    double loss_rel = fabs(la - lb) / fabs(la);
    printf("bf16 step: loss fp32 %.6f bf16 %.6f (relative %.2e)\n", la, lb, loss_rel);
    ck_assert_msg(loss_rel < 2e-3, "loss %g (bf16) vs %g (fp32)", lb, la);
    double worst = 0;
    const char *worst_name = "";
    for (int t = 0; t < a.table.n_tensors; t++) {
        const flas_tensor *x = &a.table.tensors[t];
        double d = 0, n = 0, dot = 0, nb = 0;
        for (size_t i = 0; i < x->numel; i++) {
            double ga = a.grads[x->offset + i], gb = b.grads[x->offset + i];
            d += (ga - gb) * (ga - gb);
            n += ga * ga;
            nb += gb * gb;
            dot += ga * gb;
        }
        double rel = sqrt(d / n), cosine = dot / sqrt(n * nb);
        ck_assert_msg(n > 0, "%s: zero gradient in fp32", x->name);
        ck_assert_msg(rel < 0.02 && cosine > 0.9998, "%s: relative difference %.3e, cosine %.6f", x->name, rel,
                      cosine);
        if (rel > worst)
            worst = rel, worst_name = x->name;
    }
    printf("bf16 step: worst gradient tensor %s, relative difference %.3e (bound 2e-2)\n", worst_name, worst);
    /* and bf16 is really in use: the gradients differ from fp32's */
    ck_assert_msg(worst > 1e-5, "bf16 gradients equal fp32's: the bf16 products did not run");
    flas_model_free(&a);
    flas_model_free(&b);
}
END_TEST

START_TEST(precision_names)
{
    flas_precision p;
    ck_assert_int_eq(flas_precision_parse("bf16", &p), 0);
    ck_assert_int_eq(p, FLAS_PRECISION_BF16);
    ck_assert_int_eq(flas_precision_parse("fp32", &p), 0);
    ck_assert_int_eq(p, FLAS_PRECISION_FP32);
    ck_assert_int_eq(flas_precision_parse("fp16", &p), -1);
    ck_assert_str_eq(flas_precision_name(FLAS_PRECISION_BF16), "bf16");
}
END_TEST

int main(void)
{
    char why[256];
    if (!flas_bf16_supported(why, sizeof why)) {
        printf("not run: %s\n", why);
        return 77;
    }
    Suite *s = suite_create("core_bf16");
    TCase *tc = tcase_create("bf16");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, precision_names);
    tcase_add_test(tc, gemm_matches_rounded_operands);
    tcase_add_test(tc, gradients_within_bf16_tolerance);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
