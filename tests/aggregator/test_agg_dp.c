/* DP-FedAvg: the RDP accountant against published reference values and the exact Gaussian bound,
 * clipping, the noise's distribution and stream, and flas_aggregate() with DP on real files. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agg_testutil.h"
#include "flas/aggregate.h"
#include "flas/checkpoint.h"
#include "flas/dp.h"
#include "flas/model.h"
#include "flas/sha256.h"

/* ---- the accountant ---------------------------------------------------------------------------- */

/* Google's dp_accounting, rdp/rdp_privacy_accountant_test.py, test_compute_epsilon_delta_gaussian:
 * "noise multiplier is chosen to obtain exactly (1,1e-6)-DP": one Gaussian mechanism (q = 1) with
 * sigma = 4.530877117 spends epsilon = 1 at delta = 1e-6 under the same RDP-to-DP conversion
 * (Balle et al. 2020), evaluated there on the orders 1.000..99.999 in steps of 0.001 (assertAlmostEqual:
 * 7 places). Our optimum over continuous orders can only be lower, by less than the grid's step costs:
 * tolerance 1e-6. */
START_TEST(epsilon_matches_dp_accounting_reference)
{
    double order = 0;
    double eps = flas_dp_epsilon(flas_dp_round_rho(4.530877117), 1e-6, &order);
    ck_assert_msg(fabs(eps - 1.0) < 1e-6, "epsilon %.10f, expected 1 (dp_accounting)", eps);
    ck_assert_msg(order > 20 && order < 24, "optimal order %g (dp_accounting: 21.985)", order);
    /* and the inverse: the noise multiplier for (1, 1e-6) over one round */
    double sigma = flas_dp_sigma_for_epsilon(1.0, 1e-6, 1);
    ck_assert_msg(fabs(sigma - 4.530877117) < 1e-5, "sigma %.9f", sigma);
    /* T rounds of sigma are one round of sigma / sqrt(T) (RDP adds) */
    double e10 = flas_dp_epsilon(10 * flas_dp_round_rho(2.0), 1e-5, NULL);
    double e1 = flas_dp_epsilon(flas_dp_round_rho(2.0 / sqrt(10.0)), 1e-5, NULL);
    ck_assert(fabs(e10 - e1) < 1e-9 * e1);
    ck_assert(fabs(flas_dp_sigma_for_epsilon(e10, 1e-5, 10) - 2.0) < 1e-6);
}
END_TEST

/* delta of the exact privacy curve of a Gaussian mechanism with mu = sensitivity/stddev (Balle & Wang
 * 2018, Theorem 8; T rounds: mu = sqrt(T)/sigma = sqrt(2 rho)). */
static double exact_delta(double eps, double mu)
{
    return 0.5 * erfc((eps / mu - mu / 2) / sqrt(2.0)) - exp(eps) * 0.5 * erfc((eps / mu + mu / 2) / sqrt(2.0));
}

/* RDP is an upper bound: the exact curve never needs more than the accountant's epsilon, and RDP is
 * not loose by more than a fraction of it in the regimes FLaS runs (tens of rounds, sigma ~ 1). */
START_TEST(epsilon_is_a_tight_upper_bound_of_the_exact_gaussian)
{
    const double sigmas[] = {0.5, 1.0, 2.0, 5.0};
    const long rounds[] = {1, 10, 100};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) {
            double rho = rounds[j] * flas_dp_round_rho(sigmas[i]), delta = 1e-6;
            double eps = flas_dp_epsilon(rho, delta, NULL), mu = sqrt(2 * rho);
            ck_assert_msg(exact_delta(eps, mu) <= delta * (1 + 1e-9), "sigma %g rounds %ld: exact delta %g at eps %g",
                          sigmas[i], rounds[j], exact_delta(eps, mu), eps);
            /* the exact epsilon (bisection on the exact curve) */
            double lo = 0, hi = eps;
            for (int it = 0; it < 200; it++) {
                double mid = 0.5 * (lo + hi);
                if (exact_delta(mid, mu) > delta)
                    lo = mid;
                else
                    hi = mid;
            }
            ck_assert_msg(eps <= 1.35 * hi + 0.05, "sigma %g rounds %ld: RDP eps %g vs exact %g", sigmas[i],
                          rounds[j], eps, hi);
        }
}
END_TEST

START_TEST(accountant_edges)
{
    ck_assert(flas_dp_epsilon(0, 1e-6, NULL) == 0);
    ck_assert(isinf(flas_dp_epsilon(flas_dp_round_rho(0), 1e-6, NULL)));
    ck_assert(flas_dp_epsilon(1, 0, NULL) < 0 && flas_dp_epsilon(1, 1, NULL) < 0 && flas_dp_epsilon(-1, 0.1, NULL) < 0);
    ck_assert(flas_dp_sigma_for_epsilon(0, 1e-6, 3) < 0 && flas_dp_sigma_for_epsilon(1, 1e-6, 0) < 0);
    /* more rounds at the same target need more noise */
    ck_assert(flas_dp_sigma_for_epsilon(8, 1e-6, 30) > flas_dp_sigma_for_epsilon(8, 1e-6, 3));
}
END_TEST

START_TEST(clip_factor_is_exactly_one_under_the_clip)
{
    ck_assert(flas_dp_clip_factor(0.5, 1.0) == 1.0);
    ck_assert(flas_dp_clip_factor(1.0, 1.0) == 1.0);
    ck_assert(flas_dp_clip_factor(1e30, INFINITY) == 1.0);
    ck_assert(flas_dp_clip_factor(4.0, 1.0) == 0.25);
}
END_TEST

/* ---- the noise ----------------------------------------------------------------------------------- */

static const char *seed_hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

START_TEST(noise_has_the_requested_stddev_and_one_stream_per_seed)
{
    unsigned char seed[FLAS_DP_SEED_BYTES];
    ck_assert_int_eq(flas_dp_seed_parse(seed_hex, seed), 0);
    ck_assert_int_eq(flas_dp_seed_parse("00", seed), -1);
    ck_assert_int_eq(flas_dp_seed_parse(
        "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", seed), -1);
    flas_dp_seed_parse(seed_hex, seed);
    const size_t n = 1000000;
    const double sd = 0.37;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    flas_dp_rng *g = flas_dp_rng_new(seed);
    ck_assert_int_eq(flas_dp_rng_gaussian(g, sd, a, n), 0);
    flas_dp_rng_free(g);
    double s1 = 0, s2 = 0, s4 = 0;
    for (size_t i = 0; i < n; i++)
        s1 += a[i], s2 += (double)a[i] * a[i], s4 += pow(a[i], 4);
    double mean = s1 / n, var = s2 / n - mean * mean, kurt = (s4 / n) / (var * var);
    /* standard errors: mean sd/sqrt(n) = 3.7e-4; stddev sd/sqrt(2n) = 2.6e-4; 5 of each */
    ck_assert_msg(fabs(mean) < 5 * sd / sqrt(n), "mean %g", mean);
    ck_assert_msg(fabs(sqrt(var) - sd) < 5 * sd / sqrt(2.0 * n), "stddev %g, wanted %g", sqrt(var), sd);
    ck_assert_msg(fabs(kurt - 3) < 0.05, "kurtosis %g (a Gaussian's is 3)", kurt);
    /* the same seed cut into odd-sized calls gives the same stream */
    g = flas_dp_rng_new(seed);
    for (size_t lo = 0; lo < n;) {
        size_t len = lo % 7 == 0 ? 3 : 1001;
        len = len < n - lo ? len : n - lo;
        ck_assert_int_eq(flas_dp_rng_gaussian(g, sd, b + lo, len), 0);
        lo += len;
    }
    flas_dp_rng_free(g);
    ck_assert(memcmp(a, b, n * sizeof *a) == 0);
    /* and random seeds differ */
    unsigned char s2b[FLAS_DP_SEED_BYTES];
    ck_assert_int_eq(flas_dp_seed_random(seed), 0);
    ck_assert_int_eq(flas_dp_seed_random(s2b), 0);
    ck_assert(memcmp(seed, s2b, sizeof seed) != 0);
    free(a);
    free(b);
}
END_TEST

/* ---- flas_aggregate() with DP on real files ------------------------------------------------------- */

static size_t n_params(void)
{
    flas_config c;
    flas_config_preset("stories260K", &c);
    flas_param_table t;
    char err[256];
    ck_assert_int_eq(flas_param_table_init(&t, &c, 0, 1, err, sizeof err), 0);
    size_t n = t.n_params;
    flas_param_table_free(&t);
    return n;
}

static void write_params(const char *path, flas_ckpt_role role, const char *site, int64_t tokens, const char *base,
                         const float *buf)
{
    agg_write_params(path, role, site, tokens, base, buf, 2);
}

static float *read_params(const char *path)
{
    char err[512];
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    const flas_param_table *t = flas_ckpt_tensors(r);
    float *buf = malloc(t->n_params * 4);
    ck_assert_int_eq(flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, t, 0, t->n_params, buf, err, sizeof err), 0);
    flas_ckpt_close(r);
    return buf;
}

typedef struct bed {
    char dir[64], g[96], a[96], b[96], out[96], sha[65];
    size_t n;
    float *x, *xa, *xb;
} bed;

/* previous global x, site a = x + da * d, site b = x + db * d with d a fixed pattern of norm ||d|| */
static double setup(bed *e, double da, double db)
{
    snprintf(e->dir, sizeof e->dir, "/tmp/flas-dp-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(e->dir));
    snprintf(e->g, sizeof e->g, "%s/g.h5", e->dir);
    snprintf(e->a, sizeof e->a, "%s/a.h5", e->dir);
    snprintf(e->b, sizeof e->b, "%s/b.h5", e->dir);
    snprintf(e->out, sizeof e->out, "%s/out.h5", e->dir);
    e->n = n_params();
    e->x = malloc(e->n * 4), e->xa = malloc(e->n * 4), e->xb = malloc(e->n * 4);
    double norm2 = 0;
    for (size_t i = 0; i < e->n; i++) {
        float d = (float)((int)(i % 13) - 6) * 0.001f;
        e->x[i] = (float)(i % 97) * 0.01f - 0.5f;
        e->xa[i] = e->x[i] + (float)da * d;
        e->xb[i] = e->x[i] + (float)db * d;
        norm2 += (double)d * d;
    }
    char err[512];
    write_params(e->g, FLAS_CKPT_GLOBAL, "", 0, "", e->x);
    ck_assert_int_eq(flas_sha256_file(e->g, e->sha, NULL, err, sizeof err), 0);
    write_params(e->a, FLAS_CKPT_LOCAL, "site-a", 100, e->sha, e->xa);
    write_params(e->b, FLAS_CKPT_LOCAL, "site-b", 300, e->sha, e->xb);
    return sqrt(norm2);
}

static void teardown(bed *e)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", e->dir);
    ck_assert_int_eq(system(cmd), 0);
    free(e->x), free(e->xa), free(e->xb);
}

static int run(bed *e, const flas_agg_options *o, int n_inputs, flas_agg_report *rep)
{
    const char *inputs[2] = {e->a, e->b};
    char err[1024];
    unlink(e->out);
    int rc = flas_aggregate(e->g, inputs, n_inputs, e->out, o, rep, err, sizeof err);
    ck_assert_msg(rc == FLAS_AGG_OK, "%s", err);
    return rc;
}

/* sigma = 0 and C = inf is plain FedAvg with equal weights, bit for bit */
START_TEST(no_noise_and_no_clip_is_plain_fedavg_bit_for_bit)
{
    bed e;
    setup(&e, 3.0, -1.0);
    flas_agg_options o;
    flas_agg_defaults(&o, FLAS_AGG_FEDAVG);
    o.uniform = 1;
    o.chunk_elems = 1500;
    flas_agg_report rep;
    run(&e, &o, 2, &rep);
    flas_agg_report_free(&rep);
    float *plain = read_params(e.out);
    o.dp_clip = INFINITY;
    run(&e, &o, 2, &rep);
    ck_assert(rep.inputs[0].clip_factor == 1.0 && rep.inputs[1].clip_factor == 1.0);
    ck_assert(isinf(rep.dp_epsilon));
    flas_agg_report_free(&rep);
    float *dp = read_params(e.out);
    ck_assert(memcmp(plain, dp, e.n * 4) == 0);
    free(plain), free(dp);
    teardown(&e);
}
END_TEST

/* one input over the clip lands exactly at norm C; one under it is untouched */
START_TEST(clipping_scales_to_c_and_leaves_small_updates_alone)
{
    bed e;
    double dn = setup(&e, 10.0, 0.5); /* ||a - x|| = 10 dn, ||b - x|| = 0.5 dn */
    const double C = 2.0 * dn;
    flas_agg_options o;
    flas_agg_defaults(&o, FLAS_AGG_FEDAVG);
    o.uniform = 1, o.dp_clip = C, o.chunk_elems = 4096;
    flas_agg_report rep;
    run(&e, &o, 1, &rep); /* site a alone: the new global is x + clip(a - x) */
    ck_assert_msg(fabs(rep.inputs[0].update_norm - 10 * dn) < 1e-5 * dn, "%g", rep.inputs[0].update_norm);
    ck_assert(fabs(rep.inputs[0].clip_factor - 0.2) < 1e-6);
    flas_agg_report_free(&rep);
    float *out = read_params(e.out);
    double n2 = 0;
    for (size_t i = 0; i < e.n; i++)
        n2 += ((double)out[i] - e.x[i]) * ((double)out[i] - e.x[i]);
    /* exactly C up to float32 rounding of each coordinate (relative 2^-24 each, random signs) */
    ck_assert_msg(fabs(sqrt(n2) - C) < 1e-5 * C, "norm after clipping %.9g, C %.9g", sqrt(n2), C);
    free(out);
    /* site b alone is under C: its model comes out bit for bit */
    const char *only_b[1] = {e.b};
    char err[512];
    unlink(e.out);
    ck_assert_int_eq(flas_aggregate(e.g, only_b, 1, e.out, &o, &rep, err, sizeof err), FLAS_AGG_OK);
    ck_assert(rep.inputs[0].clip_factor == 1.0);
    flas_agg_report_free(&rep);
    out = read_params(e.out);
    ck_assert(memcmp(out, e.xb, e.n * 4) == 0);
    free(out);
    /* both: x + (0.2 (a - x) + (b - x)) / 2 */
    run(&e, &o, 2, &rep);
    flas_agg_report_free(&rep);
    out = read_params(e.out);
    for (size_t i = 0; i < e.n; i++) {
        double want = e.x[i] + 0.5 * (0.2 * ((double)e.xa[i] - e.x[i]) + ((double)e.xb[i] - e.x[i]));
        ck_assert_msg(fabs(out[i] - want) <= 2e-7 * (1 + fabs(want)), "[%zu] %g vs %g", i, out[i], want);
    }
    free(out);
    teardown(&e);
}
END_TEST

/* the noise on the mean has stddev sigma C / n, and the server step sees the noised mean */
START_TEST(noise_on_the_mean_is_sigma_c_over_n)
{
    bed e;
    setup(&e, 0.0, 0.0); /* no update at all: the output minus x is the noise alone */
    unsigned char seed[FLAS_DP_SEED_BYTES];
    flas_dp_seed_parse(seed_hex, seed);
    flas_agg_options o;
    flas_agg_defaults(&o, FLAS_AGG_FEDAVG);
    o.uniform = 1, o.dp_clip = 0.5, o.dp_noise = 1.2, o.dp_seed = seed, o.dp_delta = 1e-5;
    flas_agg_report rep;
    run(&e, &o, 2, &rep);
    const double want = 1.2 * 0.5 / 2;
    ck_assert(fabs(rep.dp_noise_stddev - want) < 1e-12);
    ck_assert_int_eq(rep.dp_rounds, 1);
    ck_assert(fabs(rep.dp_epsilon - flas_dp_epsilon(flas_dp_round_rho(1.2), 1e-5, NULL)) < 1e-12);
    flas_agg_report_free(&rep);
    float *out = read_params(e.out);
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < e.n; i++) {
        double d = (double)out[i] - e.x[i];
        s1 += d, s2 += d * d;
    }
    double mean = s1 / e.n, sd = sqrt(s2 / e.n - mean * mean);
    ck_assert_msg(fabs(sd - want) < 5 * want / sqrt(2.0 * e.n) + 1e-6, "stddev %g, wanted %g (n %zu)", sd, want, e.n);
    ck_assert_msg(fabs(mean) < 5 * want / sqrt((double)e.n), "mean %g", mean);
    /* the same seed gives the same model; the kernel's CSPRNG gives another */
    float *again = NULL;
    run(&e, &o, 2, &rep);
    flas_agg_report_free(&rep);
    again = read_params(e.out);
    ck_assert(memcmp(out, again, e.n * 4) == 0);
    free(again);
    o.dp_seed = NULL;
    run(&e, &o, 2, &rep);
    flas_agg_report_free(&rep);
    again = read_params(e.out);
    ck_assert(memcmp(out, again, e.n * 4) != 0);
    free(again);
    /* FedAdam acts on the noised mean: with no update, its step is driven by the noise only */
    flas_agg_defaults(&o, FLAS_AGG_FEDADAM);
    o.uniform = 1, o.dp_clip = 0.5, o.dp_noise = 1.2, o.dp_seed = seed;
    run(&e, &o, 2, &rep);
    flas_agg_report_free(&rep);
    again = read_params(e.out);
    size_t moved = 0, same_sign = 0;
    for (size_t i = 0; i < e.n; i++) {
        double step = (double)again[i] - e.x[i], noise = (double)out[i] - e.x[i];
        moved += step != 0;
        same_sign += (step > 0) == (noise > 0);
    }
    ck_assert_msg(moved > e.n * 0.99 && same_sign > e.n * 0.99, "moved %zu same sign %zu of %zu", moved, same_sign, e.n);
    free(again);
    free(out);
    teardown(&e);
}
END_TEST

/* the ledger: rounds compose through the global's /server, and epsilon is in the provenance */
START_TEST(privacy_ledger_composes_across_rounds)
{
    bed e;
    setup(&e, 1.0, 2.0);
    unsigned char seed[FLAS_DP_SEED_BYTES];
    flas_dp_seed_parse(seed_hex, seed);
    flas_agg_options o;
    flas_agg_defaults(&o, FLAS_AGG_FEDAVG);
    o.uniform = 1, o.dp_clip = 1.0, o.dp_noise = 0.8, o.dp_seed = seed;
    flas_agg_report rep;
    run(&e, &o, 2, &rep);
    flas_agg_report_free(&rep);
    /* round 2 starts from round 1's output */
    char g2[128], err[1024], sha[65];
    snprintf(g2, sizeof g2, "%s/g2.h5", e.dir);
    ck_assert_int_eq(rename(e.out, g2), 0);
    ck_assert_int_eq(flas_sha256_file(g2, sha, NULL, err, sizeof err), 0);
    float *x2 = read_params(g2);
    for (size_t i = 0; i < e.n; i++)
        e.xa[i] = x2[i] + 0.001f;
    agg_write_params(e.a, FLAS_CKPT_LOCAL, "site-a", 100, sha, e.xa, 3);
    agg_write_params(e.b, FLAS_CKPT_LOCAL, "site-b", 100, sha, x2, 3);
    free(x2);
    const char *inputs[2] = {e.a, e.b};
    o.dp_noise = 1.6; /* another sigma: rho adds 1/(2 0.8^2) + 1/(2 1.6^2) */
    ck_assert_msg(flas_aggregate(g2, inputs, 2, e.out, &o, &rep, err, sizeof err) == FLAS_AGG_OK, "%s", err);
    double rho = 1 / (2 * 0.64) + 1 / (2 * 2.56);
    ck_assert_int_eq(rep.dp_rounds, 2);
    ck_assert(fabs(rep.dp_rho - rho) < 1e-12);
    ck_assert(fabs(rep.dp_epsilon - flas_dp_epsilon(rho, 1e-6, NULL)) < 1e-12);
    flas_agg_report_free(&rep);
    flas_ckpt_reader *r = flas_ckpt_open(e.out, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    flas_server_state *s = malloc(sizeof *s);
    ck_assert_int_eq(flas_ckpt_get_server_state(r, s, err, sizeof err), 0);
    ck_assert_int_eq(s->dp_rounds, 2);
    ck_assert(fabs(s->dp_rho - rho) < 1e-12);
    free(s);
    flas_ckpt_close(r);
    teardown(&e);
}
END_TEST

START_TEST(bad_dp_options_are_refused)
{
    bed e;
    setup(&e, 1.0, 1.0);
    const char *inputs[2] = {e.a, e.b};
    char err[1024];
    flas_agg_options o;
    flas_agg_defaults(&o, FLAS_AGG_FEDAVG);
    o.dp_clip = 1.0; /* token weights */
    ck_assert_int_eq(flas_aggregate(e.g, inputs, 2, e.out, &o, NULL, err, sizeof err), FLAS_AGG_USAGE);
    ck_assert_msg(strstr(err, "equally") != NULL, "%s", err);
    o.uniform = 1, o.dp_clip = INFINITY, o.dp_noise = 1.0;
    ck_assert_int_eq(flas_aggregate(e.g, inputs, 2, e.out, &o, NULL, err, sizeof err), FLAS_AGG_USAGE);
    ck_assert_msg(strstr(err, "infinite noise") != NULL, "%s", err);
    o.dp_clip = 0, o.dp_noise = 1.0;
    ck_assert_int_eq(flas_aggregate(e.g, inputs, 2, e.out, &o, NULL, err, sizeof err), FLAS_AGG_USAGE);
    o.dp_clip = 1, o.dp_noise = 1.0, o.dp_delta = 1.5;
    ck_assert_int_eq(flas_aggregate(e.g, inputs, 2, e.out, &o, NULL, err, sizeof err), FLAS_AGG_USAGE);
    o.dp_delta = 0, o.dp_clip = NAN;
    ck_assert_int_eq(flas_aggregate(e.g, inputs, 2, e.out, &o, NULL, err, sizeof err), FLAS_AGG_USAGE);
    ck_assert_int_eq(access(e.out, F_OK), -1);
    teardown(&e);
}
END_TEST

int main(void)
{
    flas_ckpt_hdf5_quiet();
    Suite *s = suite_create("dp");
    TCase *tc = tcase_create("dp");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, epsilon_matches_dp_accounting_reference);
    tcase_add_test(tc, epsilon_is_a_tight_upper_bound_of_the_exact_gaussian);
    tcase_add_test(tc, accountant_edges);
    tcase_add_test(tc, clip_factor_is_exactly_one_under_the_clip);
    tcase_add_test(tc, noise_has_the_requested_stddev_and_one_stream_per_seed);
    tcase_add_test(tc, no_noise_and_no_clip_is_plain_fedavg_bit_for_bit);
    tcase_add_test(tc, clipping_scales_to_c_and_leaves_small_updates_alone);
    tcase_add_test(tc, noise_on_the_mean_is_sigma_c_over_n);
    tcase_add_test(tc, privacy_ledger_composes_across_rounds);
    tcase_add_test(tc, bad_dp_options_are_refused);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
