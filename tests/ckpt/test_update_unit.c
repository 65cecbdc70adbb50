/* Compressed updates (flas/update.h): the encodings' error bounds per block, error feedback over many
 * rounds, update files written, read and applied through the checkpoint API, and the refusals. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_fixture.h"
#include "flas/sha256.h"
#include "flas/update.h"

/* Deterministic pseudo-random floats with a spread of magnitudes inside each block. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    double u = (double)(rng >> 11) / 9007199254740992.0;
    return (float)((u - 0.5) * pow(10.0, (double)(rng % 7) - 4.0));
}

START_TEST(int8_error_within_half_a_step_per_block)
{
    const int blocks[] = {64, 100, 128, 256};
    for (size_t bi = 0; bi < sizeof blocks / sizeof *blocks; bi++) {
        int B = blocks[bi];
        size_t n = 10 * (size_t)B + 37; /* a partial last block */
        float *x = malloc(n * 4), *res = malloc(n * 4), *out = malloc(n * 4);
        int8_t *q = malloc(n);
        size_t nb = (n + (size_t)B - 1) / (size_t)B;
        float *s = malloc(nb * 4);
        for (size_t i = 0; i < n; i++)
            x[i] = rnd();
        x[3] = 0; /* zeros and a whole zero block */
        for (size_t i = 2 * (size_t)B; i < 3 * (size_t)B; i++)
            x[i] = 0;
        ck_assert_int_eq(flas_update_encode(FLAS_UPDATE_INT8, B, x, n, q, s, res), 0);
        flas_update_decode(FLAS_UPDATE_INT8, B, 0, q, s, n, out);
        for (size_t b = 0; b < nb; b++) {
            float amax = 0;
            for (size_t i = b * (size_t)B; i < n && i < (b + 1) * (size_t)B; i++)
                amax = fmaxf(amax, fabsf(x[i]));
            ck_assert_float_eq(s[b], amax / 127.0f);
            for (size_t i = b * (size_t)B; i < n && i < (b + 1) * (size_t)B; i++) {
                /* half a quantisation step, plus the float rounding of q * scale */
                ck_assert_msg(fabsf(x[i] - out[i]) <= 0.5f * s[b] * (1 + 1e-6f) + 1e-7f * fabsf(x[i]),
                              "B=%d i=%zu x=%g out=%g scale=%g", B, i, (double)x[i], (double)out[i], (double)s[b]);
                ck_assert_int_le(abs(q[i]), 127);
                ck_assert_float_eq(res[i], x[i] - out[i]);
            }
        }
        /* the block maximum is exact, and zero blocks decode to exactly zero */
        for (size_t i = 2 * (size_t)B; i < 3 * (size_t)B; i++)
            ck_assert(out[i] == 0.0f && q[i] == 0);
        /* decoding from the middle of a tensor (any first element) picks the right scales */
        float part[50];
        size_t first = (size_t)B + 17;
        flas_update_decode(FLAS_UPDATE_INT8, B, first, q + first, s + first / (size_t)B, 50, part);
        for (int i = 0; i < 50; i++)
            ck_assert(part[i] == out[first + (size_t)i]);
        free(x), free(res), free(out), free(q), free(s);
    }
}
END_TEST

START_TEST(bf16_relative_error)
{
    size_t n = 4096;
    float *x = malloc(n * 4), *res = malloc(n * 4), *out = malloc(n * 4);
    uint16_t *q = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        x[i] = rnd();
    ck_assert_int_eq(flas_update_encode(FLAS_UPDATE_BF16, 0, x, n, q, NULL, res), 0);
    flas_update_decode(FLAS_UPDATE_BF16, 0, 0, q, NULL, n, out);
    for (size_t i = 0; i < n; i++) {
        ck_assert(fabsf(x[i] - out[i]) <= ldexpf(fabsf(x[i]), -8) /* bf16 has 8 significant bits: unit roundoff 2^-8 */);
        ck_assert_float_eq(res[i], x[i] - out[i]);
    }
    free(x), free(res), free(out), free(q);
}
END_TEST

START_TEST(non_finite_deltas_are_refused)
{
    float x[128];
    int8_t q[128];
    uint16_t h[128];
    float s[2];
    for (int i = 0; i < 128; i++)
        x[i] = 1.0f;
    x[77] = NAN;
    ck_assert_int_eq(flas_update_encode(FLAS_UPDATE_INT8, 64, x, 128, q, s, NULL), -1);
    ck_assert_int_eq(flas_update_encode(FLAS_UPDATE_BF16, 0, x, 128, h, NULL, NULL), -1);
    x[77] = INFINITY;
    ck_assert_int_eq(flas_update_encode(FLAS_UPDATE_INT8, 64, x, 128, q, s, NULL), -1);
    x[77] = 3.4e38f; /* finite, but rounds to bf16 infinity */
    ck_assert_int_eq(flas_update_encode(FLAS_UPDATE_BF16, 0, x, 128, h, NULL, NULL), -1);
    ck_assert_int_eq(flas_update_encode(FLAS_UPDATE_INT8, 64, x, 128, q, s, NULL), 0);
}
END_TEST

/* Error feedback: after T rounds, sum(sent) = sum(true deltas) - residual_T, and the residual stays
 * within one quantisation step (half a step of the last round's scale, per element). Without it the
 * bias of rounding accumulates: a delta below half a step is never sent at all. */
START_TEST(error_feedback_tracks_the_cumulative_delta)
{
    enum { N = 1024, B = 128, T = 200 };
    static float delta[N], acc_true[N], acc_sent[N], acc_noef[N], e[N], in[N], sent[N], res[N], s[N / B];
    static int8_t q[N];
    memset(acc_true, 0, sizeof acc_true), memset(acc_sent, 0, sizeof acc_sent), memset(e, 0, sizeof e);
    memset(acc_noef, 0, sizeof acc_noef);
    float last_scale[N / B];
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < N; i++) {
            /* one large value per block sets the scale; the small steady drift of the others is below
             * half a step, so without feedback it is rounded away every round */
            delta[i] = (i % B == 0) ? 1.0f : 0.002f + 0.0005f * rnd();
            acc_true[i] += delta[i];
            in[i] = delta[i] + e[i];
        }
        ck_assert_int_eq(flas_update_encode(FLAS_UPDATE_INT8, B, in, N, q, s, res), 0);
        flas_update_decode(FLAS_UPDATE_INT8, B, 0, q, s, N, sent);
        for (int i = 0; i < N; i++)
            acc_sent[i] += sent[i], e[i] = res[i];
        memcpy(last_scale, s, sizeof s);
        ck_assert_int_eq(flas_update_encode(FLAS_UPDATE_INT8, B, delta, N, q, s, NULL), 0);
        flas_update_decode(FLAS_UPDATE_INT8, B, 0, q, s, N, sent);
        for (int i = 0; i < N; i++)
            acc_noef[i] += sent[i];
    }
    double worst = 0, worst_noef = 0;
    for (int i = 0; i < N; i++) {
        float step = last_scale[i / B];
        double gap = fabs((double)acc_true[i] - acc_sent[i]);
        /* one step, with room for the float rounding of 200 accumulations */
        ck_assert_msg(gap <= step + 1e-4, "i=%d: cumulative gap %g > one step %g", i, gap, (double)step);
        worst = fmax(worst, gap);
        worst_noef = fmax(worst_noef, fabs((double)acc_true[i] - acc_noef[i]));
    }
    /* the test would fail without feedback: the drift (0.002 x 200 = 0.4) is lost there */
    ck_assert_msg(worst_noef > 0.3, "without error feedback the gap is only %g", worst_noef);
    ck_assert_msg(worst < 0.01, "with error feedback the gap is %g", worst);
}
END_TEST

static void path_in(char *out, size_t len, const char *dir, const char *name) { snprintf(out, len, "%s/%s", dir, name); }

static void sha_of(const char *path, char *hex)
{
    char err[512];
    ck_assert_msg(flas_sha256_file(path, hex, NULL, err, sizeof err) == 0, "%s", err);
}

/* base (gen 1, a global) and target (gen 2, a local trained from base). */
static void make_pair(const char *dir, char *base, char *target, size_t len)
{
    char err[1024];
    path_in(base, len, dir, "base.h5");
    path_in(target, len, dir, "target.h5");
    ck_assert_msg(fix_write(base, "small", 1, 0, err, sizeof err) == 0, "%s", err);
    /* the fixture's meta is a local one; make the target name base as its base */
    flas_config c;
    fix_config("small", &c);
    flas_ckpt_meta m;
    fix_meta(&c, 2, &m);
    m.role = FLAS_CKPT_LOCAL;
    snprintf(m.site, sizeof m.site, "leonardo");
    sha_of(base, m.base_sha256);
    flas_ckpt_writer *w = flas_ckpt_create(target, &m, FLAS_CKPT_METRICS, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(w != NULL, "%s", err);
    const flas_param_table *t = flas_ckpt_writer_tensors(w);
    float *buf = malloc(t->n_params * sizeof *buf);
    fix_fill(t, FLAS_CKPT_PARAMS, 2, buf);
    ck_assert(flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, t, 0, t->n_params, buf, err, sizeof err) == 0);
    free(buf);
    flas_ckpt_metrics mt;
    fix_metrics(2, &mt);
    ck_assert(flas_ckpt_set_metrics(w, &mt, err, sizeof err) == 0);
    ck_assert_msg(flas_ckpt_commit(w, err, sizeof err) == 0, "%s", err);
}

static float *read_params(const char *path, size_t *n)
{
    char err[1024];
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    const flas_param_table *t = flas_ckpt_tensors(r);
    float *p = malloc(t->n_params_full * sizeof *p);
    ck_assert(flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, t, 0, t->n_params, p, err, sizeof err) == 0);
    *n = t->n_params_full;
    flas_ckpt_close(r);
    return p;
}

START_TEST(update_file_round_trip_and_reproducible_apply)
{
    char dir[512], base[600], target[600], upd[600], res[600], out1[600], out2[600], err[1024];
    fix_tmpdir(dir, sizeof dir);
    make_pair(dir, base, target, sizeof base);
    path_in(upd, sizeof upd, dir, "update.h5");
    path_in(res, sizeof res, dir, "residual.h5");
    path_in(out1, sizeof out1, dir, "applied1.h5");
    path_in(out2, sizeof out2, dir, "applied2.h5");
    for (int enc = FLAS_UPDATE_BF16; enc <= FLAS_UPDATE_INT8; enc++) {
        flas_update_opts o = {.enc = (flas_update_enc)enc, .block = 128, .chunk_elems = 5000};
        flas_update_report rep;
        ck_assert_msg(flas_update_encode_file(base, target, NULL, upd, res, &o, &rep, err, sizeof err) == 0, "%s", err);
        ck_assert(rep.bytes_out > 0 && rep.delta_norm > 0 && rep.residual_norm > 0);
        ck_assert(rep.residual_norm < rep.delta_norm * (enc == FLAS_UPDATE_INT8 ? 0.02 : 0.004));
        flas_ckpt_reader *r = flas_ckpt_open(upd, MPI_COMM_NULL, err, sizeof err);
        ck_assert_msg(r != NULL, "%s", err);
        const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
        ck_assert_int_eq(m->update, enc);
        ck_assert_int_eq(m->update_block, enc == FLAS_UPDATE_INT8 ? 128 : 0);
        ck_assert_str_eq(m->site, "leonardo");
        ck_assert(flas_ckpt_contents(r) & FLAS_CKPT_METRICS);
        ck_assert(!(flas_ckpt_contents(r) & FLAS_CKPT_HAS(FLAS_CKPT_PARAMS)));
        float tmp[4];
        ck_assert_int_eq(flas_ckpt_get_elems(r, FLAS_CKPT_PARAMS, "norm.weight", 0, 4, tmp, err, sizeof err), -1);
        flas_ckpt_close(r);

        ck_assert_msg(flas_update_apply_file(base, upd, out1, &o, err, sizeof err) == 0, "%s", err);
        sleep(1); /* a different second: the bytes must not depend on when the file is written */
        ck_assert_msg(flas_update_apply_file(base, upd, out2, &o, err, sizeof err) == 0, "%s", err);
        char h1[65], h2[65];
        sha_of(out1, h1), sha_of(out2, h2);
        ck_assert_str_eq(h1, h2);

        size_t n, n2, n3;
        float *pb = read_params(base, &n), *pt = read_params(target, &n2), *pa = read_params(out1, &n3),
              *pr = read_params(res, &n3);
        for (size_t i = 0; i < n; i++) {
            /* applied + residual = target, up to the float rounding of the two sums */
            double want = (double)pt[i], got = (double)pa[i] + (double)pr[i];
            ck_assert_msg(fabs(want - got) <= 1e-6 * (fabs(want) + fabs((double)pb[i])) + 1e-30,
                          "i=%zu target %g applied %g residual %g", i, want, (double)pa[i], (double)pr[i]);
        }
        free(pb), free(pt), free(pa), free(pr);
    }
    fix_rmtree(dir);
}
END_TEST

START_TEST(update_refusals)
{
    char dir[512], base[600], target[600], upd[600], out[600], other[600], err[1024];
    fix_tmpdir(dir, sizeof dir);
    make_pair(dir, base, target, sizeof base);
    path_in(upd, sizeof upd, dir, "update.h5");
    path_in(out, sizeof out, dir, "out.h5");
    path_in(other, sizeof other, dir, "other.h5");
    ck_assert(fix_write(other, "small", 3, 0, err, sizeof err) == 0);
    flas_update_opts o = {.enc = FLAS_UPDATE_INT8, .block = 128};
    /* the target was not trained from this base */
    ck_assert_int_eq(flas_update_encode_file(other, target, NULL, upd, NULL, &o, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "was trained from"), "%s", err);
    ck_assert_int_eq(access(upd, F_OK), -1);
    /* bad encodings and blocks */
    o.block = 32;
    ck_assert_int_eq(flas_update_encode_file(base, target, NULL, upd, NULL, &o, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "outside 64..256"), "%s", err);
    o.block = 128, o.enc = FLAS_UPDATE_FULL;
    ck_assert_int_eq(flas_update_encode_file(base, target, NULL, upd, NULL, &o, NULL, err, sizeof err), -1);
    o.enc = FLAS_UPDATE_INT8;
    ck_assert_msg(flas_update_encode_file(base, target, NULL, upd, NULL, &o, NULL, err, sizeof err) == 0, "%s", err);
    /* applied to another model than the one it names */
    ck_assert_int_eq(flas_update_apply_file(other, upd, out, &o, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "is a delta against"), "%s", err);
    ck_assert_int_eq(access(out, F_OK), -1);
    /* an update is not a model: it cannot be a base, nor be encoded against */
    ck_assert_int_eq(flas_update_apply_file(upd, upd, out, &o, err, sizeof err), -1);
    ck_assert_int_eq(flas_update_encode_file(upd, target, NULL, out, NULL, &o, NULL, err, sizeof err), -1);
    /* the writer API: wrong alignment, non-finite values, params puts */
    flas_config c;
    fix_config("small", &c);
    flas_ckpt_meta m;
    fix_meta(&c, 4, &m);
    m.update = FLAS_UPDATE_INT8, m.update_block = 64;
    sha_of(base, m.base_sha256);
    flas_ckpt_writer *w = flas_ckpt_create(out, &m, FLAS_CKPT_UPDATE, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(w != NULL, "%s", err);
    float d[256] = {0};
    ck_assert_int_eq(flas_ckpt_put_update(w, "tok_embeddings.weight", 10, 64, d, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "does not follow its blocks"), "%s", err);
    d[5] = NAN;
    ck_assert_int_eq(flas_ckpt_put_update(w, "tok_embeddings.weight", 0, 64, d, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "non-finite"), "%s", err);
    ck_assert_int_eq(flas_ckpt_put_elems(w, FLAS_CKPT_PARAMS, "norm.weight", 0, 64, d, err, sizeof err), -1);
    ck_assert_int_eq(flas_ckpt_commit(w, err, sizeof err), -1); /* failures are remembered */
    ck_assert_int_eq(access(out, F_OK), -1);
    /* an update without a base, or with an encoding but without the UPDATE part */
    m.base_sha256[0] = '\0';
    ck_assert(flas_ckpt_create(out, &m, FLAS_CKPT_UPDATE, MPI_COMM_NULL, err, sizeof err) == NULL);
    sha_of(base, m.base_sha256);
    ck_assert(flas_ckpt_create(out, &m, 0, MPI_COMM_NULL, err, sizeof err) == NULL);
    m.update_block = 1000;
    ck_assert(flas_ckpt_create(out, &m, FLAS_CKPT_UPDATE, MPI_COMM_NULL, err, sizeof err) == NULL);
    fix_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("update");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, int8_error_within_half_a_step_per_block);
    tcase_add_test(tc, bf16_relative_error);
    tcase_add_test(tc, non_finite_deltas_are_refused);
    tcase_add_test(tc, error_feedback_tracks_the_cumulative_delta);
    tcase_add_test(tc, update_file_round_trip_and_reproducible_apply);
    tcase_add_test(tc, update_refusals);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
