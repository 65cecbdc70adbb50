/* flas_agg library: the merge kernel against hand-computed values for every strategy, non-finite
 * detection, block/thread boundaries, option defaults, and flas_aggregate() called directly. */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agg_testutil.h"
#include "flas/aggregate.h"
#include "flas/checkpoint.h"

static flas_agg_kernel kernel(flas_agg_strategy s, int k, const double *p)
{
    flas_agg_options o;
    flas_agg_defaults(&o, s);
    return (flas_agg_kernel){s, k, p, o.lr, o.momentum, o.beta1, o.beta2, o.tau, NULL};
}

/* One element, two inputs 1.0 and 4.0 with weights 1/3, 2/3: avg = 3.0; previous x = 2.0. */
START_TEST(each_strategy_matches_a_hand_computation)
{
    const float a = 1.0f, b = 4.0f, x = 2.0f;
    const float *in[2] = {&a, &b};
    const double p[2] = {1.0 / 3, 2.0 / 3};
    float out, m, v;
    int out_bad;
    /* fedavg: 1/3 + 8/3 = 3 */
    flas_agg_kernel k = kernel(FLAS_AGG_FEDAVG, 2, p);
    ck_assert_int_eq(flas_agg_combine(&k, 1, in, NULL, NULL, NULL, &out, NULL, &out_bad), 0);
    ck_assert_float_eq_tol(out, 3.0f, 1e-6f);
    /* fedavgm (lr 1, mu 0.9), m = 0.5: g = 2 - 3 = -1; m = 0.45 - 1 = -0.55; x' = 2 + 0.55 */
    k = kernel(FLAS_AGG_FEDAVGM, 2, p);
    m = 0.5f;
    flas_agg_combine(&k, 1, in, &x, &m, NULL, &out, NULL, &out_bad);
    ck_assert_float_eq_tol(m, -0.55f, 1e-6f);
    ck_assert_float_eq_tol(out, 2.55f, 1e-6f);
    /* diloco (lr 0.7, mu 0.9), m = 0.5: m = -0.55; x' = 2 - 0.7 (-1 + 0.9 (-0.55)) = 2 + 0.7 * 1.495 */
    k = kernel(FLAS_AGG_DILOCO, 2, p);
    m = 0.5f;
    flas_agg_combine(&k, 1, in, &x, &m, NULL, &out, NULL, &out_bad);
    ck_assert_float_eq_tol(m, -0.55f, 1e-6f);
    ck_assert_float_eq_tol(out, 2.0f + 0.7f * 1.495f, 1e-6f);
    /* fedadam (lr .01, b1 .9, b2 .99, tau 1e-3), m = 0, v = tau^2: d = 1; m = 0.1; v = .99e-6 + .01;
     * x' = 2 + .01 * 0.1 / (sqrt(v) + 1e-3) */
    k = kernel(FLAS_AGG_FEDADAM, 2, p);
    m = 0.0f, v = 1e-6f;
    flas_agg_combine(&k, 1, in, &x, &m, &v, &out, NULL, &out_bad);
    double vv = 0.99 * 1e-6 + 0.01;
    ck_assert_float_eq_tol(m, 0.1f, 1e-7f);
    ck_assert_float_eq_tol(v, (float)vv, 1e-9f);
    ck_assert_float_eq_tol(out, (float)(2.0 + 0.01 * 0.1 / (sqrt(vv) + 1e-3)), 1e-6f);
    /* fedyogi with v = 2 > d^2 = 1: v = 2 - 0.01 * 1 * sign(1) = 1.99 */
    k = kernel(FLAS_AGG_FEDYOGI, 2, p);
    m = 0.0f, v = 2.0f;
    flas_agg_combine(&k, 1, in, &x, &m, &v, &out, NULL, &out_bad);
    ck_assert_float_eq_tol(v, 1.99f, 1e-6f);
    ck_assert_float_eq_tol(out, (float)(2.0 + 0.01 * 0.1 / (sqrt(1.99) + 1e-3)), 1e-6f);
    /* ... and with v = 0.5 < d^2 the second moment grows: 0.5 + 0.01 */
    m = 0.0f, v = 0.5f;
    flas_agg_combine(&k, 1, in, &x, &m, &v, &out, NULL, &out_bad);
    ck_assert_float_eq_tol(v, 0.51f, 1e-6f);
    ck_assert_int_eq(out_bad, 0);
}
END_TEST

/* Weighted mean over a length that is not a multiple of the block, single vs multi-threaded. */
START_TEST(blocks_and_threads_give_the_same_result)
{
    const size_t n = 200003;
    const int K = 5;
    float *in[5], *out1 = malloc(n * 4), *out2 = malloc(n * 4);
    double p[5], sum = 0;
    for (int i = 0; i < K; i++) {
        in[i] = malloc(n * 4);
        for (size_t j = 0; j < n; j++)
            in[i][j] = (float)((j * (i + 3)) % 1000) * 1e-3f - 0.5f;
        p[i] = i + 1;
        sum += p[i];
    }
    for (int i = 0; i < K; i++)
        p[i] /= sum;
    flas_agg_kernel k = kernel(FLAS_AGG_FEDAVG, K, p);
    int out_bad;
    omp_set_num_threads(1);
    ck_assert_int_eq(flas_agg_combine(&k, n, (const float *const *)in, NULL, NULL, NULL, out1, NULL, &out_bad), 0);
    omp_set_num_threads(2);
    ck_assert_int_eq(flas_agg_combine(&k, n, (const float *const *)in, NULL, NULL, NULL, out2, NULL, &out_bad), 0);
    ck_assert_int_eq(memcmp(out1, out2, n * 4), 0);
    for (size_t j = 0; j < n; j += 997) {
        double want = 0;
        for (int i = 0; i < K; i++)
            want += p[i] * in[i][j];
        ck_assert_float_eq(out1[j], (float)want);
    }
    ck_assert_float_eq(out1[n - 1], out2[n - 1]);
    for (int i = 0; i < K; i++)
        free(in[i]);
    free(out1);
    free(out2);
}
END_TEST

START_TEST(non_finite_inputs_are_named_and_results_checked)
{
    const size_t n = 70000;
    float *a = calloc(n, 4), *b = calloc(n, 4), *c = calloc(n, 4), *out = malloc(n * 4);
    b[69999] = NAN;
    c[1234] = -INFINITY;
    const float *in[3] = {a, b, c};
    const double p[3] = {0.2, 0.3, 0.5};
    unsigned char bad[3];
    int out_bad;
    flas_agg_kernel k = kernel(FLAS_AGG_FEDAVG, 3, p);
    ck_assert_int_eq(flas_agg_combine(&k, n, in, NULL, NULL, NULL, out, bad, &out_bad), 2);
    ck_assert_int_eq(bad[0], 0);
    ck_assert_int_eq(bad[1], 1);
    ck_assert_int_eq(bad[2], 1);
    /* Finite inputs, but a server step that overflows float32: the result is flagged. */
    b[69999] = 0, c[1234] = 0;
    a[5] = 3e38f;
    float *x = calloc(n, 4), *m = calloc(n, 4);
    k = kernel(FLAS_AGG_DILOCO, 3, p);
    k.lr = 1e10;
    ck_assert_int_eq(flas_agg_combine(&k, n, in, x, m, NULL, out, bad, &out_bad), 0);
    ck_assert_int_eq(out_bad, 1);
    free(a), free(b), free(c), free(out), free(x), free(m);
}
END_TEST

START_TEST(names_and_defaults)
{
    flas_agg_strategy s;
    const char *names[] = {"fedavg", "mean", "fedavgm", "fedadam", "fedyogi", "diloco"};
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(flas_agg_strategy_parse(names[i], &s), 0);
        ck_assert_str_eq(flas_agg_strategy_name(s), names[i]);
    }
    ck_assert_int_eq(flas_agg_strategy_parse("fedprox", &s), -1);
    flas_agg_options o;
    flas_agg_defaults(&o, FLAS_AGG_DILOCO);
    ck_assert(o.lr == 0.7 && o.momentum == 0.9 && o.policy == FLAS_AGG_REFUSE_ROUND && o.min_sites == 1);
    flas_agg_defaults(&o, FLAS_AGG_MEAN);
    ck_assert_int_eq(o.uniform, 1);
    flas_agg_defaults(&o, FLAS_AGG_FEDAVG);
    ck_assert_int_eq(o.uniform, 0);
    ck_assert(flas_agg_strategy_has_v(FLAS_AGG_FEDYOGI) && !flas_agg_strategy_has_v(FLAS_AGG_DILOCO));
    ck_assert(flas_agg_strategy_has_m(FLAS_AGG_FEDAVGM) && !flas_agg_strategy_has_m(FLAS_AGG_FEDAVG));
}
END_TEST

/* ---- flas_aggregate() on real files written with the checkpoint library ----------------------- */

static void write_model(const char *path, flas_ckpt_role role, const char *site, int64_t tokens, const char *base,
                        float offset)
{
    flas_config c;
    flas_config_preset("stories260K", &c);
    flas_param_table t;
    char err[256];
    ck_assert_int_eq(flas_param_table_init(&t, &c, 0, 1, err, sizeof err), 0);
    float *buf = malloc(t.n_params * 4);
    for (size_t i = 0; i < t.n_params; i++)
        buf[i] = (float)(i % 97) * 0.01f + offset;
    agg_write_params(path, role, site, tokens, base, buf, 2);
    flas_param_table_free(&t);
    free(buf);
}

START_TEST(library_call_merges_files_and_reports)
{
    char dir[] = "/tmp/flas-agg-XXXXXX", g[64], a[64], b[64], out[64], sha[65], err[1024];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(g, sizeof g, "%s/g.h5", dir);
    snprintf(a, sizeof a, "%s/a.h5", dir);
    snprintf(b, sizeof b, "%s/b.h5", dir);
    snprintf(out, sizeof out, "%s/out.h5", dir);
    write_model(g, FLAS_CKPT_GLOBAL, "", 0, "", 0.0f);
    ck_assert_int_eq(flas_sha256_file(g, sha, NULL, err, sizeof err), 0);
    write_model(a, FLAS_CKPT_LOCAL, "site-a", 100, sha, 1.0f);
    write_model(b, FLAS_CKPT_LOCAL, "site-b", 300, sha, 2.0f);
    const char *inputs[2] = {a, b};
    flas_agg_options o;
    flas_agg_defaults(&o, FLAS_AGG_FEDAVG);
    o.chunk_elems = 1500; /* many chunks, none aligned with tensor ends */
    flas_agg_report rep;
    ck_assert_msg(flas_aggregate(g, inputs, 2, out, &o, &rep, err, sizeof err) == FLAS_AGG_OK, "%s", err);
    ck_assert_int_eq(rep.n_used, 2);
    ck_assert_int_eq(rep.new_round, 3);
    ck_assert_str_eq(rep.previous_sha256, sha);
    ck_assert(fabs(rep.inputs[0].weight - 0.25) < 1e-12 && fabs(rep.inputs[1].weight - 0.75) < 1e-12);
    char sa[65];
    flas_sha256_file(a, sa, NULL, err, sizeof err);
    ck_assert_str_eq(rep.inputs[0].sha256, sa);
    flas_agg_report_free(&rep);
    flas_ckpt_reader *r = flas_ckpt_open(out, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    const flas_param_table *t = flas_ckpt_tensors(r);
    float *buf = malloc(t->n_params * 4);
    ck_assert_int_eq(flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, t, 0, t->n_params, buf, err, sizeof err), 0);
    for (size_t i = 0; i < t->n_params; i++) /* 0.25 (v + 1) + 0.75 (v + 2) = v + 1.75 */
        ck_assert_float_eq_tol(buf[i], (float)(i % 97) * 0.01f + 1.75f, 1e-6f);
    ck_assert_int_eq(flas_ckpt_meta_of(r)->tokens_trained, 400);
    flas_server_state *s = malloc(sizeof *s);
    ck_assert_int_eq(flas_ckpt_get_server_state(r, s, err, sizeof err), 0);
    ck_assert_str_eq(s->strategy, "fedavg");
    ck_assert_int_eq(s->n_sites, 2);
    free(s);
    free(buf);
    flas_ckpt_close(r);
    /* A refused round returns REFUSED and leaves no output behind. */
    unlink(out);
    const char *twice[2] = {a, a};
    ck_assert_int_eq(flas_aggregate(g, twice, 2, out, &o, NULL, err, sizeof err), FLAS_AGG_REFUSED);
    ck_assert_msg(strstr(err, "already has an update in this round") != NULL, "%s", err);
    ck_assert_int_eq(access(out, F_OK), -1);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    flas_ckpt_hdf5_quiet();
    Suite *s = suite_create("aggregate");
    TCase *tc = tcase_create("kernel");
    tcase_add_test(tc, each_strategy_matches_a_hand_computation);
    tcase_add_test(tc, blocks_and_threads_give_the_same_result);
    tcase_add_test(tc, non_finite_inputs_are_named_and_results_checked);
    tcase_add_test(tc, names_and_defaults);
    tcase_add_test(tc, library_call_merges_files_and_reports);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
