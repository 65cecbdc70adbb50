/* The model's contract around the numerics: refused configurations and inputs, deterministic init
 * with the documented statistics, gradient accumulation, clipping, the LR schedule, AdamW's update,
 * and the start-up line naming threads and BLAS. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/blas_info.h"
#include "flas/llama.h"
#include "flas/optim.h"

static const flas_config tiny = {64, 2, 8, 4, 172, 97, 16, 1e-5f, 10000.0f, 1};

static void expect_create_refused(flas_config c, int tp, int batch, int seq, const char *needle)
{
    flas_model m;
    char err[256] = "";
    ck_assert_int_eq(flas_model_create(&m, &c, 0, tp, batch, seq, 1, err, sizeof err), -1);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

START_TEST(bad_configs_are_refused)
{
    flas_config c = tiny;
    c.n_kv_heads = 3;
    expect_create_refused(c, 1, 1, 8, "n_heads 8 is not divisible by n_kv_heads 3");
    c = tiny;
    c.dim = 72; /* head_dim 9 */
    c.n_heads = 8;
    expect_create_refused(c, 1, 1, 8, "head_dim 9 is odd");
    c = tiny;
    c.hidden_dim = 0;
    expect_create_refused(c, 1, 1, 8, "hidden_dim must be positive");
    c = tiny;
    c.vocab_size = -5;
    expect_create_refused(c, 1, 1, 8, "vocab_size must be positive");
    c = tiny;
    c.n_layers = 0;
    expect_create_refused(c, 1, 1, 8, "n_layers must be positive");
    c = tiny;
    c.vocab_size = 2000000000;
    c.seq_len = 100000;
    expect_create_refused(c, 1, 1, 8, "overflows");
    c = tiny;
    c.dim = 1 << 20;
    c.n_heads = 1 << 10;
    c.n_kv_heads = 1 << 10;
    c.hidden_dim = 1 << 22;
    c.n_layers = 1 << 20;
    expect_create_refused(c, 1, 1, 8, "overflows (n_layers 1048576)");
    c.dim = 1 << 16;
    c.hidden_dim = 1 << 18;
    c.n_layers = 1 << 10;
    expect_create_refused(c, 1, 1, 8, "too many parameters");
    expect_create_refused(tiny, 1, 1, 17, "seq_len 16");
    expect_create_refused(tiny, 1, 0, 8, "batch capacity");
    expect_create_refused(tiny, 16, 1, 8, "not divisible by tp 16");
}
END_TEST

START_TEST(bad_inputs_are_refused)
{
    flas_model m;
    char err[256];
    ck_assert(flas_model_create(&m, &tiny, 0, 1, 2, 8, 1, err, sizeof err) == 0);
    flas_model_init_weights(&m, 1);
    int tok[16] = {0}, tgt[16] = {0};
    float loss;
    ck_assert_int_eq(flas_model_backward(&m, 1.0f), -1);
    ck_assert_msg(strstr(m.err, "forward with targets") != NULL, "%s", m.err);
    tok[5] = 97;
    ck_assert_int_eq(flas_model_forward(&m, tok, tgt, 2, 8, &loss, NULL), -1);
    ck_assert_msg(strstr(m.err, "token 97 at position 5") != NULL, "%s", m.err);
    tok[5] = 0;
    tgt[3] = -1;
    ck_assert_int_eq(flas_model_forward(&m, tok, tgt, 2, 8, &loss, NULL), -1);
    ck_assert_msg(strstr(m.err, "target -1 at position 3") != NULL, "%s", m.err);
    tgt[3] = 0;
    ck_assert_int_eq(flas_model_forward(&m, tok, tgt, 3, 8, &loss, NULL), -1);
    ck_assert_int_eq(flas_model_forward(&m, tok, tgt, 1, 9, &loss, NULL), -1);
    ck_assert_msg(strstr(m.err, "capacity 2 x 8") != NULL, "%s", m.err);
    /* forward without targets gives logits and no loss, and allows no backward */
    ck_assert_int_eq(flas_model_forward(&m, tok, NULL, 2, 8, &loss, NULL), 0);
    ck_assert(isnan(loss));
    ck_assert_int_eq(flas_model_backward(&m, 1.0f), -1);
    /* one backward per forward: the probabilities became gradients */
    ck_assert_int_eq(flas_model_forward(&m, tok, tgt, 2, 8, &loss, NULL), 0);
    ck_assert_int_eq(flas_model_backward(&m, 1.0f), 0);
    ck_assert_int_eq(flas_model_backward(&m, 1.0f), -1);
    flas_model_free(&m);
}
END_TEST

static double tensor_std(const flas_model *m, flas_tensor_kind kind, int layer, double *mean)
{
    const flas_tensor *t = flas_param_get(&m->table, kind, layer);
    double s = 0, ss = 0;
    for (size_t i = 0; i < t->numel; i++)
        s += m->params[t->offset + i], ss += (double)m->params[t->offset + i] * m->params[t->offset + i];
    *mean = s / t->numel;
    return sqrt(ss / t->numel - *mean * *mean);
}

START_TEST(init_is_deterministic_with_documented_std)
{
    flas_config c = {256, 4, 4, 2, 688, 1000, 8, 1e-5f, 10000.0f, 0};
    flas_model a, b, d;
    char err[256];
    ck_assert(flas_model_create(&a, &c, 0, 1, 1, 8, 1, err, sizeof err) == 0);
    ck_assert(flas_model_create(&b, &c, 0, 1, 1, 8, 2, err, sizeof err) == 0);
    ck_assert(flas_model_create(&d, &c, 0, 1, 1, 8, 2, err, sizeof err) == 0);
    flas_model_init_weights(&a, 42);
    flas_model_init_weights(&b, 42); /* another thread count: same bits */
    flas_model_init_weights(&d, 43);
    ck_assert(memcmp(a.params, b.params, sizeof(float) * a.table.n_params) == 0);
    ck_assert(memcmp(a.params, d.params, sizeof(float) * a.table.n_params) != 0);
    double mean, sd;
    sd = tensor_std(&a, FLAS_T_WQ, 1, &mean);
    ck_assert_msg(fabs(sd - FLAS_INIT_STD) < 0.02 * FLAS_INIT_STD && fabs(mean) < 0.02 * FLAS_INIT_STD, "wq std %g mean %g", sd, mean);
    sd = tensor_std(&a, FLAS_T_OUTPUT, -1, &mean);
    ck_assert_msg(fabs(sd - FLAS_INIT_STD) < 0.02 * FLAS_INIT_STD, "output std %g", sd);
    double resid = FLAS_INIT_STD / sqrt(2.0 * c.n_layers);
    sd = tensor_std(&a, FLAS_T_W2, 3, &mean);
    ck_assert_msg(fabs(sd - resid) < 0.02 * resid, "w2 std %g, want %g", sd, resid);
    sd = tensor_std(&a, FLAS_T_NORM, -1, &mean);
    ck_assert(sd == 0 && mean == 1.0);
    /* different tensors get different values */
    const flas_tensor *w1 = flas_param_get(&a.table, FLAS_T_W1, 0), *w3 = flas_param_get(&a.table, FLAS_T_W3, 0);
    ck_assert(memcmp(a.params + w1->offset, a.params + w3->offset, sizeof(float) * 64) != 0);
    flas_model_free(&a);
    flas_model_free(&b);
    flas_model_free(&d);
}
END_TEST

START_TEST(gradient_accumulation_equals_one_big_batch)
{
    flas_model m;
    char err[256];
    ck_assert(flas_model_create(&m, &tiny, 0, 1, 4, 16, 2, err, sizeof err) == 0);
    flas_model_init_weights(&m, 5);
    int tok[64], tgt[64];
    for (int i = 0; i < 64; i++)
        tok[i] = (i * 37 + 11) % 97, tgt[i] = (i * 53 + 2) % 97;
    size_t n = m.table.n_params;
    float *big = malloc(sizeof(float) * n), loss_big, l1, l2;
    flas_model_zero_grad(&m);
    ck_assert(flas_model_forward(&m, tok, tgt, 4, 16, &loss_big, NULL) == 0 && flas_model_backward(&m, 1.0f) == 0);
    memcpy(big, m.grads, sizeof(float) * n);
    flas_model_zero_grad(&m);
    ck_assert(flas_model_forward(&m, tok, tgt, 2, 16, &l1, NULL) == 0 && flas_model_backward(&m, 0.5f) == 0);
    ck_assert(flas_model_forward(&m, tok + 32, tgt + 32, 2, 16, &l2, NULL) == 0 && flas_model_backward(&m, 0.5f) == 0);
    ck_assert_msg(fabsf((l1 + l2) / 2 - loss_big) < 1e-5f * loss_big, "%g + %g vs %g", l1, l2, loss_big);
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs(m.grads[i] - big[i])), s = fmax(s, fabs(big[i]));
    ck_assert_msg(d <= 1e-5 * s, "accumulated grads differ by %g of %g", d, s);
    /* clipping: the norm is the L2 norm of the flat buffer; after clipping it is max_norm */
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)m.grads[i] * m.grads[i];
    float norm = flas_model_clip_grad_norm(&m, 0.1f);
    ck_assert_msg(fabs(norm - sqrt(ss)) < 1e-5 * sqrt(ss), "norm %g vs %g", norm, sqrt(ss));
    ck_assert(norm > 0.1f);
    ck_assert_msg(fabsf(flas_model_grad_norm(&m) - 0.1f) < 1e-5f, "clipped norm %g", flas_model_grad_norm(&m));
    ck_assert(flas_model_clip_grad_norm(&m, 1.0f) < 1.0f); /* below max_norm: unchanged */
    ck_assert_msg(fabsf(flas_model_grad_norm(&m) - 0.1f) < 1e-5f, "norm changed without clipping");
    free(big);
    flas_model_free(&m);
}
END_TEST

START_TEST(lr_schedule_warms_up_then_decays)
{
    flas_lr_schedule s = {1e-3f, 1e-4f, 10, 110};
    ck_assert_float_eq_tol(flas_lr_at(&s, 0), 1e-4f, 1e-9f);
    ck_assert_float_eq_tol(flas_lr_at(&s, 4), 5e-4f, 1e-9f);
    ck_assert_float_eq_tol(flas_lr_at(&s, 9), 1e-3f, 1e-9f);
    ck_assert_float_eq_tol(flas_lr_at(&s, 10), 1e-3f, 1e-9f);
    ck_assert_float_eq_tol(flas_lr_at(&s, 60), 5.5e-4f, 1e-9f); /* halfway: mean of max and min */
    ck_assert_float_eq_tol(flas_lr_at(&s, 110), 1e-4f, 1e-9f);
    ck_assert_float_eq_tol(flas_lr_at(&s, 1000), 1e-4f, 1e-9f);
    float prev = 1.0f;
    for (long i = 10; i <= 110; i++) {
        ck_assert(flas_lr_at(&s, i) <= prev);
        prev = flas_lr_at(&s, i);
    }
}
END_TEST

START_TEST(adamw_first_steps_by_hand)
{
    flas_param_table t;
    char err[256];
    ck_assert(flas_param_table_init(&t, &tiny, 0, 1, err, sizeof err) == 0);
    float *p = calloc(t.n_params, sizeof(float)), *g = calloc(t.n_params, sizeof(float));
    const flas_tensor *wq = flas_param_get(&t, FLAS_T_WQ, 0), *nw = flas_param_get(&t, FLAS_T_NORM, -1);
    p[wq->offset] = 0.5f, g[wq->offset] = 0.02f;
    p[nw->offset] = 1.0f, g[nw->offset] = -0.3f;
    flas_adamw o;
    ck_assert(flas_adamw_init(&o, &t, 0.9f, 0.95f, 1e-8f, 0.1f) == 0);
    flas_adamw_step(&o, p, g, 0.01f);
    /* step 1: m_hat = g, v_hat = g^2: p = p (1 - lr wd) - lr g / (|g| + eps); no decay on norm weights */
    ck_assert_float_eq_tol(p[wq->offset], 0.5f * (1 - 0.001f) - 0.01f * 0.02f / (0.02f + 1e-8f), 1e-7f);
    ck_assert_float_eq_tol(p[nw->offset], 1.0f + 0.01f, 1e-7f);
    ck_assert_float_eq_tol(o.m[wq->offset], 0.1f * 0.02f, 1e-9f);
    ck_assert_float_eq_tol(o.v[wq->offset], 0.05f * 0.02f * 0.02f, 1e-10f);
    /* step 2 with g = 0: m = 0.9 m1, v = 0.95 v1; bias corrections 1-0.9^2, 1-0.95^2 */
    float before = p[wq->offset];
    g[wq->offset] = 0.0f;
    flas_adamw_step(&o, p, g, 0.01f);
    double m2 = 0.9 * 0.002, v2 = 0.95 * 0.05 * 0.0004;
    double want = before * (1 - 0.001) - 0.01 / (1 - 0.81) * m2 / (sqrt(v2) / sqrt(1 - 0.9025) + 1e-8);
    ck_assert_float_eq_tol(p[wq->offset], (float)want, 1e-6f);
    flas_adamw_free(&o);
    free(p);
    free(g);
    flas_param_table_free(&t);
}
END_TEST

START_TEST(startup_line_names_threads_and_blas)
{
    char buf[1024] = "";
    FILE *f = tmpfile();
    int n = flas_threads_setup(2);
    ck_assert_int_eq(n, 2);
    flas_print_runtime_info(f, n);
    rewind(f);
    ck_assert(fgets(buf, sizeof buf, f) != NULL);
    fclose(f);
    ck_assert_msg(strstr(buf, "2 OpenMP threads") && strstr(buf, "OpenBLAS") && strstr(buf, "1 thread per call"), "%s", buf);
    ck_assert(strstr(flas_blas_name(), "OpenBLAS") != NULL);
}
END_TEST

START_TEST(flops_per_token_formula)
{
    flas_config c;
    flas_config_preset("stories15M", &c);
    /* 6 * (6 layers * (4*288*288 + 3*288*768) + 32000*288) + 12*6*256*288 */
    double want = 6.0 * (6 * (4.0 * 288 * 288 + 3.0 * 288 * 768) + 32000.0 * 288) + 12.0 * 6 * 256 * 288;
    ck_assert_double_eq_tol(flas_model_flops_per_token(&c, 256), want, 1.0);
}
END_TEST

int main(void)
{
    flas_threads_setup(2);
    Suite *s = suite_create("core_model");
    TCase *tc = tcase_create("contract");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bad_configs_are_refused);
    tcase_add_test(tc, bad_inputs_are_refused);
    tcase_add_test(tc, init_is_deterministic_with_documented_std);
    tcase_add_test(tc, gradient_accumulation_equals_one_big_batch);
    tcase_add_test(tc, lr_schedule_warms_up_then_decays);
    tcase_add_test(tc, adamw_first_steps_by_hand);
    tcase_add_test(tc, startup_line_names_threads_and_blas);
    tcase_add_test(tc, flops_per_token_formula);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
