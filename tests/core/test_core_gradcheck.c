/* Gradients by finite differences: for sampled elements of EVERY tensor of a tiny model, the
 * backward pass must agree with the numerical derivative of the forward loss.
 *
 * The model computes in float32, so the derivative is taken with the fourth-order central stencil
 *     g ~ (-L(p+2h) + 8 L(p+h) - 8 L(p-h) + L(p-2h)) / (12 h),  h = 1e-2,
 * whose truncation error (h^4 / 30 * L''''' ~ 3e-10 for these O(1) derivatives) is negligible, leaving
 * rounding: each loss carries about 3e-7 absolute error (loss ~3, float epsilon 6e-8, a few roundings
 * that do not cancel), amplified by (1 + 8 + 8 + 1) / 12 / h = 150 to about 5e-5. The tolerance is
 * therefore |g_fd - g| <= 2e-4 + 1e-3 |g|: four times that noise floor, while the checked gradients
 * are 1e-3 .. 1e-1 so a wrong term (a missing factor, a transposed index) shows as an error of 10% or
 * more of the value. The reference layers are used (their sums are in double: less noise); the fast
 * path is held equal to them by test_core_layers. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/blas_info.h"
#include "flas/llama.h"

#define H 1e-2f
#define ABS_TOL 2e-4
#define REL_TOL 1e-3
#define SAMPLES 8 /* elements per tensor */

static float loss_at(flas_model *m, const int *tok, const int *tgt, int B, int T)
{
    float loss;
    ck_assert_msg(flas_model_forward(m, tok, tgt, B, T, &loss, NULL) == 0, "%s", m->err);
    return loss;
}

static void gradcheck(flas_config c, int B, int T, int reference)
{
    flas_model m;
    char err[256];
    ck_assert_msg(flas_model_create(&m, &c, 0, 1, B, T, 1, err, sizeof err) == 0, "%s", err);
    flas_model_use_reference(&m, reference);
    flas_model_init_weights(&m, 3);
    unsigned long long rng = 977;
    for (int i = 0; i < m.table.n_tensors; i++) { /* std 0.2 matrices, norm weights around 1 */
        const flas_tensor *t = &m.table.tensors[i];
        for (size_t j = 0; j < t->numel; j++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            float u = (float)(rng >> 40) / 16777216.0f;
            m.params[t->offset + j] = t->ndim == 2 ? m.params[t->offset + j] * 10.0f : 0.7f + 0.6f * u;
        }
    }
    int N = B * T, tok[64], tgt[64];
    for (int i = 0; i < N; i++)
        tok[i] = (i * 7 + 3) % c.vocab_size, tgt[i] = (i * 5 + 1) % c.vocab_size;
    flas_model_zero_grad(&m);
    loss_at(&m, tok, tgt, B, T);
    ck_assert(flas_model_backward(&m, 1.0f) == 0);
    double worst = 0;
    int checked = 0, informative = 0;
    for (int i = 0; i < m.table.n_tensors; i++) {
        const flas_tensor *t = &m.table.tensors[i];
        for (int s = 0; s < SAMPLES; s++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t j = t->offset + (size_t)(rng >> 33) % t->numel;
            float p0 = m.params[j];
            float l[4];
            const float off[4] = {2 * H, H, -H, -2 * H};
            for (int k = 0; k < 4; k++) {
                m.params[j] = p0 + off[k];
                l[k] = loss_at(&m, tok, tgt, B, T);
            }
            m.params[j] = p0;
            double fd = (-(double)l[0] + 8.0 * l[1] - 8.0 * l[2] + l[3]) / (12.0 * H);
            double g = m.grads[j], e = fabs(fd - g);
            ck_assert_msg(e <= ABS_TOL + REL_TOL * fabs(g), "%s[%zu]: backward %.6g, finite difference %.6g",
                          t->name, j - t->offset, g, fd);
            worst = fmax(worst, e / (ABS_TOL + REL_TOL * fabs(g)));
            checked++;
            informative += fabs(g) > 10 * ABS_TOL;
        }
    }
    printf("gradcheck %s: %d elements of %d tensors (%d with |g| > %g), worst error %.2f of the tolerance\n",
           reference ? "reference" : "fast", checked, m.table.n_tensors, informative, 10 * ABS_TOL, worst);
    /* A check of near-zero gradients would pass anything: most samples must be well above the noise. */
    ck_assert_msg(informative * 2 > checked, "only %d of %d sampled gradients exceed %g", informative, checked,
                  10 * ABS_TOL);
    flas_model_free(&m);
}

START_TEST(gradients_match_finite_differences)
{
    /* GQA 2:1, untied head, B > 1 */
    gradcheck((flas_config){16, 2, 4, 2, 24, 13, 6, 1e-5f, 10000.0f, 0}, 2, 6, 1);
    /* multi-query, tied head */
    gradcheck((flas_config){12, 1, 3, 1, 20, 11, 5, 1e-5f, 10000.0f, 1}, 3, 5, 1);
    /* the fast path too, on the first shape */
    gradcheck((flas_config){16, 2, 4, 2, 24, 13, 6, 1e-5f, 10000.0f, 0}, 2, 6, 0);
}
END_TEST

int main(void)
{
    flas_threads_setup(1);
    Suite *s = suite_create("core_gradcheck");
    TCase *tc = tcase_create("finite_differences");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, gradients_match_finite_differences);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
