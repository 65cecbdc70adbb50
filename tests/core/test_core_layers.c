/* Fast path == reference path: every layer pair on random inputs, then the whole model (logits, loss,
 * every gradient). Also the accuracy of the vectorised exp the fast path relies on. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastmath.h"
#include "flas/blas_info.h"
#include "flas/llama.h"
#include "layers.h"

/* Fast (float sums in BLAS blocking order) vs reference (double sums) differ by the fast path's float
 * rounding: about sqrt(terms) * 6e-8 relative per reduction, compounded over a few layers. Measured
 * worst cases are below 1e-6 (whole model, all gradients); 2e-5 leaves a 20x margin and still
 * catches any real defect (a wrong index or a missing term moves results by 1e-3 or more). */
#define TOL 2e-5

static unsigned long long rng = 88172645463325252ull;
static float unif(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)(rng >> 40) / 8388608.0f - 1.0f; /* [-1, 1) */
}

static float *rand_buf(size_t n, float scale)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        p[i] = scale * unif();
    return p;
}

static float *copy_buf(const float *src, size_t n)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    memcpy(p, src, sizeof(float) * n);
    return p;
}

/* max|a-b| / max|b|, the error relative to the tensor's scale */
static double rel(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return s > 0 ? d / s : d;
}

#define EXPECT_CLOSE(a, b, n, what) \
    ck_assert_msg(rel(a, b, n) <= TOL, "%s: fast vs reference rel error %.3g", what, rel(a, b, n))

static const flas_kernels *F = &flas_kernels_fast, *R = &flas_kernels_reference;

START_TEST(fast_exp_is_accurate)
{
    double worst = 0;
    for (double x = -87.0; x < 88.0; x += 0.0013) {
        float xf = (float)x; /* compare against exp of the float actually passed */
        worst = fmax(worst, fabs(flas_expf(xf) - exp((double)xf)) / exp((double)xf));
    }
    ck_assert_msg(worst < 2e-7, "flas_expf max rel error %.3g", worst);
    ck_assert(flas_expf(-1000.0f) < 1e-37f);
    ck_assert(isfinite(flas_expf(1000.0f)));
}
END_TEST

static void check_matmul(int N, int Nin, int Nout, float alpha)
{
    float *in = rand_buf((size_t)N * Nin, 1), *W = rand_buf((size_t)Nout * Nin, 1), *dout = rand_buf((size_t)N * Nout, 1);
    float *of = rand_buf((size_t)N * Nout, 1), *orf = rand_buf((size_t)N * Nout, 1);
    F->matmul_forward(of, in, W, N, Nin, Nout);
    R->matmul_forward(orf, in, W, N, Nin, Nout);
    EXPECT_CLOSE(of, orf, (size_t)N * Nout, "matmul_forward");
    for (int acc = 0; acc < 2; acc++) {
        float *dinf = rand_buf((size_t)N * Nin, 1), *dWf = rand_buf((size_t)Nout * Nin, 1);
        float *dinr = copy_buf(dinf, (size_t)N * Nin), *dWr = copy_buf(dWf, (size_t)Nout * Nin);
        F->matmul_backward(dinf, dWf, dout, in, W, N, Nin, Nout, alpha, acc);
        R->matmul_backward(dinr, dWr, dout, in, W, N, Nin, Nout, alpha, acc);
        EXPECT_CLOSE(dinf, dinr, (size_t)N * Nin, "matmul_backward din");
        EXPECT_CLOSE(dWf, dWr, (size_t)Nout * Nin, "matmul_backward dW");
        free(dinf), free(dWf), free(dinr), free(dWr);
    }
    free(in), free(W), free(dout), free(of), free(orf);
}

START_TEST(matmul_matches)
{
    check_matmul(37, 29, 53, 1.0f);    /* below the tiling threshold: one call */
    check_matmul(150, 70, 91, 0.25f);  /* tiled over rows */
    check_matmul(40, 64, 700, 1.0f);   /* tiled over columns */
    check_matmul(401, 30, 40, 0.5f);   /* weight gradient split along K (tokens), partials summed */
}
END_TEST

START_TEST(rmsnorm_matches)
{
    int N = 33, D = 150;
    float *x = rand_buf((size_t)N * D, 2), *w = rand_buf(D, 1), *dout = rand_buf((size_t)N * D, 1);
    float *of = rand_buf((size_t)N * D, 1), *orf = rand_buf((size_t)N * D, 1), rf[33], rr[33];
    F->rmsnorm_forward(of, rf, x, w, N, D, 1e-5f);
    R->rmsnorm_forward(orf, rr, x, w, N, D, 1e-5f);
    EXPECT_CLOSE(of, orf, (size_t)N * D, "rmsnorm_forward");
    EXPECT_CLOSE(rf, rr, (size_t)N, "rmsnorm rstd");
    float *dxf = rand_buf((size_t)N * D, 1), *dwf = rand_buf(D, 1);
    float *dxr = copy_buf(dxf, (size_t)N * D), *dwr = copy_buf(dwf, D);
    F->rmsnorm_backward(dxf, dwf, dout, x, w, rr, N, D);
    R->rmsnorm_backward(dxr, dwr, dout, x, w, rr, N, D);
    EXPECT_CLOSE(dxf, dxr, (size_t)N * D, "rmsnorm_backward dx");
    EXPECT_CLOSE(dwf, dwr, D, "rmsnorm_backward dw");
    free(x), free(w), free(dout), free(of), free(orf), free(dxf), free(dwf), free(dxr), free(dwr);
}
END_TEST

static void rope_tables(float *c, float *s, int T, int hd, float theta)
{
    for (int t = 0; t < T; t++)
        for (int i = 0; i < hd / 2; i++) {
            double a = t * pow(theta, -2.0 * i / hd);
            c[t * (hd / 2) + i] = (float)cos(a);
            s[t * (hd / 2) + i] = (float)sin(a);
        }
}

START_TEST(rope_matches_and_inverts)
{
    int B = 2, T = 9, H = 3, hd = 10, ld = 37; /* row stride wider than the heads, like q in q|k|v */
    float c[9 * 5], s[9 * 5];
    rope_tables(c, s, T, hd, 10000.0f);
    size_t n = (size_t)B * T * ld;
    float *x = rand_buf(n, 1), *xf = copy_buf(x, n), *xr = copy_buf(x, n);
    F->rope_forward(xf, B, T, H, hd, ld, c, s);
    R->rope_forward(xr, B, T, H, hd, ld, c, s);
    EXPECT_CLOSE(xf, xr, n, "rope_forward");
    /* position 0 is the identity; columns past the heads are untouched */
    for (int e = 0; e < H * hd; e++)
        ck_assert_float_eq(xf[e], x[e]);
    for (int row = 0; row < B * T; row++)
        for (int e = H * hd; e < ld; e++)
            ck_assert_float_eq(xf[(size_t)row * ld + e], x[(size_t)row * ld + e]);
    /* the rotation is orthogonal: backward (rotation by -angle) undoes forward */
    F->rope_backward(xf, B, T, H, hd, ld, c, s);
    ck_assert_msg(rel(xf, x, n) < 1e-6, "rope backward does not invert forward");
    R->rope_backward(xr, B, T, H, hd, ld, c, s);
    F->rope_backward(x, B, T, H, hd, ld, c, s);
    ck_assert(rel(x, x, n) == 0);
    free(x), free(xf), free(xr);
}
END_TEST

static void check_attention(int B, int T, int Hq, int Hkv, int hd)
{
    int qD = Hq * hd, kvD = Hkv * hd, ld = qD + 2 * kvD;
    size_t N = (size_t)B * T, P = (size_t)B * Hq * T * T;
    float *qkv = rand_buf(N * ld, 1.5f), *dout = rand_buf(N * qD, 1);
    float *of = rand_buf(N * qD, 1), *orf = rand_buf(N * qD, 1), *pf = rand_buf(P, 1), *pr = rand_buf(P, 1);
    F->attention_forward(of, pf, qkv, qkv + qD, qkv + qD + kvD, ld, B, T, Hq, Hkv, hd);
    R->attention_forward(orf, pr, qkv, qkv + qD, qkv + qD + kvD, ld, B, T, Hq, Hkv, hd);
    EXPECT_CLOSE(of, orf, N * qD, "attention_forward out");
    for (size_t r = 0; r < (size_t)B * Hq * T; r++) { /* the causal part of each row: equal, sums to one */
        int i = (int)(r % T);
        double sum = 0, d = 0;
        for (int j = 0; j <= i; j++)
            sum += pf[r * T + j], d = fmax(d, fabs(pf[r * T + j] - pr[r * T + j]));
        ck_assert_msg(fabs(sum - 1.0) < 1e-5, "softmax row %zu sums to %g", r, sum);
        ck_assert_msg(d <= TOL, "attention probs row %zu differs by %g", r, d);
    }
    float *df = rand_buf(N * ld, 1), *dr = rand_buf(N * ld, 1), *sf = rand_buf(P, 1), *sr = rand_buf(P, 1);
    F->attention_backward(df, df + qD, df + qD + kvD, sf, dout, pr, qkv, qkv + qD, qkv + qD + kvD, ld, B, T, Hq,
                          Hkv, hd);
    R->attention_backward(dr, dr + qD, dr + qD + kvD, sr, dout, pr, qkv, qkv + qD, qkv + qD + kvD, ld, B, T, Hq,
                          Hkv, hd);
    EXPECT_CLOSE(df, dr, N * ld, "attention_backward dq|dk|dv");
    free(qkv), free(dout), free(of), free(orf), free(pf), free(pr), free(df), free(dr), free(sf), free(sr);
}

START_TEST(attention_matches)
{
    check_attention(2, 13, 6, 2, 8);  /* GQA 3:1 */
    check_attention(3, 7, 4, 4, 6);   /* multi-head */
    check_attention(1, 33, 4, 1, 16); /* multi-query */
    check_attention(2, 150, 4, 2, 8); /* several row blocks of the causal blocking, the last one partial */
}
END_TEST

START_TEST(swiglu_embedding_xent_match)
{
    size_t n = 1000;
    float *h1 = rand_buf(n, 6), *h3 = rand_buf(n, 2), *dg = rand_buf(n, 1);
    float *gf = rand_buf(n, 1), *gr = rand_buf(n, 1), *a1 = rand_buf(n, 1), *a3 = rand_buf(n, 1),
          *b1 = rand_buf(n, 1), *b3 = rand_buf(n, 1);
    F->swiglu_forward(gf, h1, h3, n);
    R->swiglu_forward(gr, h1, h3, n);
    EXPECT_CLOSE(gf, gr, n, "swiglu_forward");
    F->swiglu_backward(a1, a3, dg, h1, h3, n);
    R->swiglu_backward(b1, b3, dg, h1, h3, n);
    EXPECT_CLOSE(a1, b1, n, "swiglu_backward dh1");
    EXPECT_CLOSE(a3, b3, n, "swiglu_backward dh3");

    int N = 40, D = 70, V = 9;
    int tok[40];
    for (int i = 0; i < N; i++)
        tok[i] = (int)((unif() + 1) * 4.5f) % V; /* repeated tokens: accumulation order */
    float *table = rand_buf((size_t)V * D, 1), *ef = rand_buf((size_t)N * D, 1), *er = rand_buf((size_t)N * D, 1);
    F->embedding_forward(ef, tok, table, N, D);
    R->embedding_forward(er, tok, table, N, D);
    ck_assert(rel(ef, er, (size_t)N * D) == 0);
    float *dtf = rand_buf((size_t)V * D, 1), *dtr = copy_buf(dtf, (size_t)V * D);
    F->embedding_backward(dtf, ef, tok, N, D);
    R->embedding_backward(dtr, ef, tok, N, D);
    EXPECT_CLOSE(dtf, dtr, (size_t)V * D, "embedding_backward");

    int VV = 3001;
    float *lf = rand_buf((size_t)N * VV, 8), *lr = copy_buf(lf, (size_t)N * VV), lossf[40], lossr[40];
    int tg[40];
    for (int i = 0; i < N; i++)
        tg[i] = (i * 97) % VV;
    F->xent_forward(lf, lossf, tg, N, VV);
    R->xent_forward(lr, lossr, tg, N, VV);
    EXPECT_CLOSE(lf, lr, (size_t)N * VV, "xent_forward probs");
    EXPECT_CLOSE(lossf, lossr, (size_t)N, "xent_forward losses");
    F->xent_backward(lf, tg, N, VV);
    R->xent_backward(lr, tg, N, VV);
    EXPECT_CLOSE(lf, lr, (size_t)N * VV, "xent_backward");
    free(h1), free(h3), free(dg), free(gf), free(gr), free(a1), free(a3), free(b1), free(b3);
    free(table), free(ef), free(er), free(dtf), free(dtr), free(lf), free(lr);
}
END_TEST

/* The whole model, fast vs reference: logits, loss and every gradient tensor. */
static void check_model(flas_config c, int B, int T)
{
    flas_model f, r;
    char err[256];
    ck_assert_msg(flas_model_create(&f, &c, 0, 1, B, T, 2, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(flas_model_create(&r, &c, 0, 1, B, T, 2, err, sizeof err) == 0, "%s", err);
    flas_model_use_reference(&r, 1);
    flas_model_init_weights(&f, 7);
    for (int i = 0; i < f.table.n_tensors; i++) /* matrices x5: sharper attention than the 0.02 init */
        for (size_t j = 0; j < f.table.tensors[i].numel; j++)
            f.params[f.table.tensors[i].offset + j] *= f.table.tensors[i].ndim == 2 ? 5.0f : 1.0f;
    memcpy(r.params, f.params, sizeof(float) * f.table.n_params);
    size_t N = (size_t)B * T;
    int *tok = malloc(sizeof(int) * N), *tgt = malloc(sizeof(int) * N);
    for (size_t i = 0; i < N; i++)
        tok[i] = (int)(i * 31 + 7) % c.vocab_size, tgt[i] = (int)(i * 17 + 3) % c.vocab_size;
    float *lf = malloc(sizeof(float) * N * c.vocab_size), *lr = malloc(sizeof(float) * N * c.vocab_size);
    float lossf, lossr;
    ck_assert(flas_model_forward(&f, tok, tgt, B, T, &lossf, lf) == 0);
    ck_assert(flas_model_forward(&r, tok, tgt, B, T, &lossr, lr) == 0);
    EXPECT_CLOSE(lf, lr, N * c.vocab_size, "model logits");
    ck_assert_msg(fabs(lossf - lossr) <= TOL * fabs(lossr), "loss %g vs %g", lossf, lossr);
    ck_assert(flas_model_backward(&f, 1.0f) == 0);
    ck_assert(flas_model_backward(&r, 1.0f) == 0);
    for (int i = 0; i < f.table.n_tensors; i++) {
        const flas_tensor *t = &f.table.tensors[i];
        double e = rel(f.grads + t->offset, r.grads + t->offset, t->numel);
        if (getenv("CORE_TEST_VERBOSE"))
            printf("%-40s fast vs reference rel %.2e\n", t->name, e);
        ck_assert_msg(e <= TOL, "%s grad: rel %.3g", t->name, e);
    }
    free(tok), free(tgt), free(lf), free(lr);
    flas_model_free(&f);
    flas_model_free(&r);
}

START_TEST(model_fast_equals_reference)
{
    check_model((flas_config){64, 2, 8, 4, 172, 97, 16, 1e-5f, 10000.0f, 1}, 3, 16); /* GQA, tied */
    check_model((flas_config){48, 3, 4, 4, 128, 211, 24, 1e-5f, 10000.0f, 0}, 2, 20); /* MHA, untied, T<seq */
    check_model((flas_config){96, 1, 6, 2, 256, 300, 40, 1e-5f, 10000.0f, 0}, 4, 40); /* GQA 3:1, tiled gemms */
}
END_TEST

int main(void)
{
    flas_threads_setup(2);
    Suite *s = suite_create("core_layers");
    TCase *tc = tcase_create("fast_vs_reference");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fast_exp_is_accurate);
    tcase_add_test(tc, matmul_matches);
    tcase_add_test(tc, rmsnorm_matches);
    tcase_add_test(tc, rope_matches_and_inverts);
    tcase_add_test(tc, attention_matches);
    tcase_add_test(tc, swiglu_embedding_xent_match);
    tcase_add_test(tc, model_fast_equals_reference);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
