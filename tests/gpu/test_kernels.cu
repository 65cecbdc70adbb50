// The CUDA kernels of runtime/cuda against the CPU reference layers (runtime/layers_ref.c, plain loops with
// sums in double) and against optimizer.c's AdamW formula. Needs only CUDA (nvcc, cuBLAS, cuBLASLt).
// One line per check: name, shape, max abs err, max rel err, tolerance, PASS/FAIL.
// Exit: 0 all passed, 1 a failure, 77 no CUDA device ("not run": ctest's SKIP_RETURN_CODE).
//
// TOLERANCES. u32 = 2^-24 is fp32's unit roundoff, u16 = 2^-8 bf16's (8 significant bits, round to
// nearest). An error bound is (number of fp32 roundings along the longest dependency chain) * u32 times the
// magnitude the rounded values had (the sum of |terms|, not the result, so that cancellation is
// covered), with a factor 4 of margin: tensor cores accumulate with truncation rather than rounding
// (about 2 u32 per addition), and expf/logf are within 2 ulp on the device. Kernels whose output is bf16
// add one bf16 rounding: u16 * |result|. Matrix products are compared with their operands already rounded
// to bf16 on the host, so that the bound tests the kernel's arithmetic and not bf16 itself (whose error,
// relative u16 per operand, would otherwise swamp fp32 accumulation errors of an index bug's size).
// Gathers, scatters, the one-hot subtraction, the scale and the conversions are exact: tolerance 0.
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "cuda/kernels.h"
extern "C" {
#include "layers.h"
}

typedef std::vector<float> vecf;

static const double U32 = 1.0 / 16777216.0; // 2^-24
static const double U16 = 1.0 / 256.0;      // 2^-8

static int g_failed = 0, g_checks = 0;
static flas_cuda *g_ctx = NULL;
static std::vector<void *> g_allocs;

// ---- harness plumbing (the harness may exit; the library never does) ----

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL harness: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    exit(1);
}

#define CK(call)                                                                                         \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess)                                                                           \
            die("%s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(e_));                     \
    } while (0)

// A library call that failed is a failed check (the message is the context's first error).
static bool lib_ok(int rc, const char *name)
{
    if (rc == 0)
        rc = flas_cuda_sync(g_ctx);
    if (rc == 0)
        return true;
    printf("%-26s %-40s error: %s  FAIL\n", name, "-", flas_cuda_error(g_ctx));
    g_failed++;
    g_checks++;
    return false;
}

static void *dalloc(size_t bytes)
{
    void *p = NULL;
    CK(cudaMalloc(&p, bytes ? bytes : 1));
    g_allocs.push_back(p);
    return p;
}

template <typename T> static T *up(const std::vector<T> &h)
{
    T *d = (T *)dalloc(h.size() * sizeof(T));
    CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

template <typename T> static std::vector<T> down(const T *d, size_t n)
{
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}

// splitmix64: a fixed seed, the same inputs on every machine
static uint64_t g_rng = 0x5EED0F1A5ull;
static uint64_t rnd64(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float rndu(float lo, float hi) { return lo + (hi - lo) * (float)((rnd64() >> 40) * (1.0 / 16777216.0)); }
static vecf rndv(size_t n, float lo, float hi)
{
    vecf v(n);
    for (size_t i = 0; i < n; i++)
        v[i] = rndu(lo, hi);
    return v;
}
static std::vector<int> rndtok(size_t n, int V)
{
    std::vector<int> t(n);
    for (size_t i = 0; i < n; i++)
        t[i] = (int)(rnd64() % (uint64_t)V);
    return t;
}

// bf16 on the host: round to nearest even by integer arithmetic (the device uses __float2bfloat16_rn).
static uint16_t h_f2bf(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); // NaN stays a (quiet) NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float h_bf2f(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static std::vector<uint16_t> to_bf(const vecf &v)
{
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); i++)
        b[i] = h_f2bf(v[i]);
    return b;
}
static vecf from_bf(const std::vector<uint16_t> &b)
{
    vecf v(b.size());
    for (size_t i = 0; i < b.size(); i++)
        v[i] = h_bf2f(b[i]);
    return v;
}
static vecf round_bf(const vecf &v) { return from_bf(to_bf(v)); }
static vecf absv(const vecf &v)
{
    vecf a(v.size());
    for (size_t i = 0; i < v.size(); i++)
        a[i] = fabsf(v[i]);
    return a;
}

// Compares got with want element by element: |got - want| <= tol[i] (NaN where want is NaN is a match).
// Prints the check's line; tolnote says what tol is.
static void check(const char *name, const char *shape, const vecf &got, const vecf &want, const vecf &tol,
                  const char *tolnote)
{
    double max_abs = 0.0, max_rel = 0.0, worst = 0.0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < want.size(); i++) {
        if ((isnan(want[i]) && isnan(got[i])) || got[i] == want[i]) // equal infinities included
            continue;
        double err = fabs((double)got[i] - want[i]);
        if (isnan(err) || isinf(err))
            err = INFINITY;
        double rel = err / fmax(fabs((double)want[i]), 1e-30);
        if (err > max_abs)
            max_abs = err;
        if (rel > max_rel && want[i] != 0.0f)
            max_rel = rel;
        double ratio = tol[i] > 0 ? err / tol[i] : (err > 0 ? INFINITY : 0.0);
        if (ratio > worst)
            worst = ratio;
        if (!(err <= tol[i])) {
            if (!bad)
                first_bad = i;
            bad++;
        }
    }
    g_checks++;
    printf("%-26s %-40s max_abs=%.3e max_rel=%.3e tol=%s (worst err/tol %.3g) %s\n", name, shape, max_abs, max_rel,
           tolnote, worst, bad ? "FAIL" : "PASS");
    if (bad) {
        g_failed++;
        printf("    %zu of %zu elements out of tolerance; first at %zu: got %.9g want %.9g tol %.3g\n", bad, want.size(),
               first_bad, got[first_bad], want[first_bad], tol[first_bad]);
    }
}

// tol[i] = rtol * (mag[i] or |want[i]|) + atol
static vecf tol_of(const vecf &want, const vecf *mag, double rtol, double atol)
{
    vecf t(want.size());
    for (size_t i = 0; i < want.size(); i++)
        t[i] = (float)(rtol * fabs(mag ? (double)(*mag)[i] : (double)want[i]) + atol);
    return t;
}

// Normwise: tol[i] = rtol * (|want[i]| + max_j |want[j]|), for results of long fp32 chains (attention).
static vecf tol_normwise(const vecf &want, double rtol)
{
    double mx = 0.0;
    for (float w : want)
        mx = fmax(mx, fabs((double)w));
    vecf t(want.size());
    for (size_t i = 0; i < want.size(); i++)
        t[i] = (float)(rtol * (fabs((double)want[i]) + mx) + 1e-30);
    return t;
}

static const flas_kernels *R = &flas_kernels_reference;

// ---- conversion ----

static void test_convert(void)
{
    vecf x = rndv(1000, -3.0f, 3.0f);
    // Ties (round to even both ways), denormals, the overflow to inf, signed zero, inf, NaN.
    const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0xbf808000u, 0x00000001u, 0x00408000u, 0x80000000u,
                                0x7f7fffffu, 0x7f7f7fffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x3f80ffffu};
    for (uint32_t s : special) {
        float f;
        memcpy(&f, &s, 4);
        x.push_back(f);
    }
    float *dx = up(x);
    flas_bf16 *db = (flas_bf16 *)dalloc(x.size() * 2);
    float *dy = (float *)dalloc(x.size() * 4);
    if (!lib_ok(flas_cuda_f32_to_bf16(g_ctx, db, dx, x.size()), "convert f32->bf16"))
        return;
    std::vector<uint16_t> got = down((const uint16_t *)db, x.size());
    size_t bad = 0;
    for (size_t i = 0; i < x.size(); i++) {
        uint16_t want = h_f2bf(x[i]);
        bool nan_both = isnan(x[i]) && (got[i] & 0x7f80u) == 0x7f80u && (got[i] & 0x7fu);
        if (got[i] != want && !nan_both) {
            if (!bad)
                printf("    f32->bf16 of %a: got 0x%04x want 0x%04x\n", x[i], got[i], want);
            bad++;
        }
    }
    g_checks++;
    if (bad)
        g_failed++;
    printf("%-26s %-40s %zu of %zu values differ in bits  tol=exact %s\n", "convert f32->bf16", "n=1012 (+ties, NaN)",
           bad, x.size(), bad ? "FAIL" : "PASS");
    if (!lib_ok(flas_cuda_bf16_to_f32(g_ctx, dy, db, x.size()), "convert bf16->f32"))
        return;
    vecf back = down(dy, x.size()), want(x.size());
    for (size_t i = 0; i < x.size(); i++)
        want[i] = h_bf2f(got[i]);
    check("convert bf16->f32", "n=1012", back, want, vecf(x.size(), 0.0f), "exact");
}

// ---- matmul ----

// Per-element bound of an fp32-accumulated product: 4 (K + 2) u32 * sum_k |a_k b_k| (absdot), times
// |alpha|, plus one rounding of the accumulated old value, plus the bf16 rounding of a bf16 output.
static vecf matmul_tol(const vecf &want, const vecf &absdot, const vecf &old, int K, float alpha, bool bf16_out)
{
    vecf t(want.size());
    for (size_t i = 0; i < want.size(); i++) {
        double f32 = 4.0 * (K + 2) * U32 * fabs(alpha) * absdot[i] + 2 * U32 * (old.empty() ? 0.0 : fabs(old[i]));
        t[i] = (float)(bf16_out ? f32 * 1.01 + 1.01 * U16 * fabs(want[i]) : f32) + 1e-30f;
    }
    return t;
}

static void test_matmul(int N, int Nin, int Nout, int offset)
{
    char shape[96];
    snprintf(shape, sizeof shape, "N=%d Nin=%d Nout=%d%s", N, Nin, Nout, offset ? " (+1 elem offset)" : "");
    // Operands bf16-representable; `offset` shifts every device pointer by one element (2-byte alignment).
    vecf in = round_bf(rndv((size_t)N * Nin, -1, 1)), W = round_bf(rndv((size_t)Nout * Nin, -1, 1));
    vecf dout = round_bf(rndv((size_t)N * Nout, -1, 1));
    auto upbf = [&](const vecf &v) {
        std::vector<uint16_t> b = to_bf(v);
        b.insert(b.begin(), (size_t)offset, (uint16_t)0);
        return (flas_bf16 *)up(b) + offset;
    };
    flas_bf16 *din_b = upbf(in), *dW_b = upbf(W), *ddout_b = upbf(dout);
    long fb0 = flas_cuda_matmul_fallbacks(g_ctx);

    // forward, fp32 and bf16 outputs
    vecf want((size_t)N * Nout), absdot((size_t)N * Nout);
    R->matmul_forward(want.data(), in.data(), W.data(), N, Nin, Nout);
    R->matmul_forward(absdot.data(), absv(in).data(), absv(W).data(), N, Nin, Nout);
    float *out32 = (float *)dalloc(want.size() * 4 + 4) + offset;
    flas_bf16 *out16 = (flas_bf16 *)dalloc(want.size() * 2 + 2) + offset;
    if (lib_ok(flas_cuda_matmul_forward(g_ctx, out32, FLAS_F32, din_b, dW_b, N, Nin, Nout), "matmul_forward f32"))
        check("matmul_forward f32", shape, down(out32, want.size()), want, matmul_tol(want, absdot, {}, Nin, 1, false),
              "4(K+2)u32*sum|ab|");
    if (lib_ok(flas_cuda_matmul_forward(g_ctx, out16, FLAS_BF16, din_b, dW_b, N, Nin, Nout), "matmul_forward bf16"))
        check("matmul_forward bf16", shape, from_bf(down((const uint16_t *)out16, want.size())), want,
              matmul_tol(want, absdot, {}, Nin, 1, true), "f32 bound + u16|y|");

    // backward: din overwritten (fp32) and accumulated (fp32, bf16); dW accumulated; alpha folds a scale
    const float alpha = 0.75f;
    for (int variant = 0; variant < 3; variant++) {
        bool acc = variant > 0, bf = variant == 2;
        vecf din0 = acc ? rndv((size_t)N * Nin, -1, 1) : vecf((size_t)N * Nin, 0.0f);
        if (bf)
            din0 = round_bf(din0);
        vecf dW0 = rndv((size_t)Nout * Nin, -1, 1);
        vecf din_want = din0, dW_want = dW0;
        R->matmul_backward(din_want.data(), dW_want.data(), dout.data(), in.data(), W.data(), N, Nin, Nout, alpha, acc);
        vecf din_abs((size_t)N * Nin, 0.0f), dW_abs((size_t)Nout * Nin, 0.0f);
        R->matmul_backward(din_abs.data(), dW_abs.data(), absv(dout).data(), absv(in).data(), absv(W).data(), N, Nin,
                           Nout, 1.0f, false);
        // Device din: garbage (NaN) where it is overwritten, so that a read of it would show.
        void *ddin;
        if (bf) {
            std::vector<uint16_t> b = to_bf(din0);
            b.insert(b.begin(), (size_t)offset, (uint16_t)0);
            ddin = (flas_bf16 *)up(b) + offset;
        } else {
            vecf d = acc ? din0 : vecf(din0.size(), NAN);
            d.insert(d.begin(), (size_t)offset, 0.0f);
            ddin = up(d) + offset;
        }
        vecf dW0o = dW0;
        dW0o.insert(dW0o.begin(), (size_t)offset, 0.0f);
        float *ddW = up(dW0o) + offset;
        char name[64];
        snprintf(name, sizeof name, "matmul_backward din %s%s", bf ? "bf16" : "f32", acc ? " +=" : "");
        if (!lib_ok(flas_cuda_matmul_backward(g_ctx, ddin, bf ? FLAS_BF16 : FLAS_F32, ddW, ddout_b, din_b, dW_b, N, Nin,
                                              Nout, alpha, acc),
                    name))
            continue;
        vecf got_din = bf ? from_bf(down((const uint16_t *)ddin, din_want.size())) : down((float *)ddin, din_want.size());
        check(name, shape, got_din, din_want, matmul_tol(din_want, din_abs, acc ? din0 : vecf(), Nout, alpha, bf),
              bf ? "f32 bound + u16|y|" : "4(K+2)u32*sum|ab|+2u32|old|");
        if (variant == 0)
            check("matmul_backward dW +=", shape, down(ddW, dW_want.size()), dW_want,
                  matmul_tol(dW_want, dW_abs, dW0, N, alpha, false), "4(K+2)u32*sum|ab|+2u32|old|");
    }
    // dW alone (din NULL)
    {
        vecf dW0 = rndv((size_t)Nout * Nin, -1, 1), dW_want = dW0, dW_abs((size_t)Nout * Nin, 0.0f);
        R->matmul_backward(NULL, dW_want.data(), dout.data(), in.data(), W.data(), N, Nin, Nout, alpha, false);
        R->matmul_backward(NULL, dW_abs.data(), absv(dout).data(), absv(in).data(), absv(W).data(), N, Nin, Nout, 1.0f,
                           false);
        float *ddW = up(dW0);
        if (lib_ok(flas_cuda_matmul_backward(g_ctx, NULL, FLAS_F32, ddW, ddout_b, din_b, dW_b, N, Nin, Nout, alpha,
                                             false),
                   "matmul_backward dW only"))
            check("matmul_backward dW only", shape, down(ddW, dW_want.size()), dW_want,
                  matmul_tol(dW_want, dW_abs, dW0, N, alpha, false), "4(K+2)u32*sum|ab|+2u32|old|");
    }
    printf("    (%ld of these products ran through the cublasGemmEx fallback)\n",
           flas_cuda_matmul_fallbacks(g_ctx) - fb0);
}

// ---- embedding ----

static void test_embedding(int N, int D, int V)
{
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d D=%d V=%d", N, D, V);
    std::vector<int> tok = rndtok(N, V);
    vecf table = rndv((size_t)V * D, -1, 1), dout = rndv((size_t)N * D, -1, 1);
    int *dtok = up(tok);
    float *dtable = up(table), *dout_d = up(dout), *dres = (float *)dalloc((size_t)N * D * 4);
    vecf want((size_t)N * D);
    R->embedding_forward(want.data(), tok.data(), table.data(), N, D);
    if (lib_ok(flas_cuda_embedding_forward(g_ctx, dres, dtok, dtable, N, D, V), "embedding_forward"))
        check("embedding_forward", shape, down(dres, want.size()), want, vecf(want.size(), 0.0f), "exact");
    // Same additions in the same order as the reference: the same bits.
    vecf dtab_want = table;
    R->embedding_backward(dtab_want.data(), dout.data(), tok.data(), N, D);
    if (lib_ok(flas_cuda_embedding_backward(g_ctx, dtable, dout_d, dtok, N, D, V), "embedding_backward"))
        check("embedding_backward", shape, down(dtable, dtab_want.size()), dtab_want, vecf(dtab_want.size(), 0.0f),
              "exact (same order)");
}

// ---- RMSNorm ----

static void test_rmsnorm(int N, int D)
{
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d D=%d", N, D);
    const float eps = 1e-5f;
    vecf x = rndv((size_t)N * D, -2, 2), w = rndv(D, 0.5f, 1.5f);
    float *dx_in = up(x), *dw = up(w), *dout32 = (float *)dalloc(x.size() * 4), *drstd = (float *)dalloc(N * 4);
    flas_bf16 *dout16 = (flas_bf16 *)dalloc(x.size() * 2);
    vecf want(x.size()), rstd(N);
    R->rmsnorm_forward(want.data(), rstd.data(), x.data(), w.data(), N, D, eps);
    // The sum of squares: a chain of D/256 + 8 (block tree) fp32 additions; then a few roundings.
    double rt = 4.0 * (D / 256 + 16) * U32;
    char note[64];
    snprintf(note, sizeof note, "%.1e*|y|", rt);
    if (lib_ok(flas_cuda_rmsnorm_forward(g_ctx, dout32, FLAS_F32, drstd, dx_in, dw, N, D, eps), "rmsnorm_forward")) {
        check("rmsnorm_forward out f32", shape, down(dout32, want.size()), want, tol_of(want, NULL, rt, 1e-30), note);
        check("rmsnorm_forward rstd", shape, down(drstd, N), rstd, tol_of(rstd, NULL, rt, 0), note);
    }
    if (lib_ok(flas_cuda_rmsnorm_forward(g_ctx, dout16, FLAS_BF16, drstd, dx_in, dw, N, D, eps), "rmsnorm_forward bf16"))
        check("rmsnorm_forward out bf16", shape, from_bf(down((const uint16_t *)dout16, want.size())), want,
              tol_of(want, NULL, rt + 1.01 * U16, 1e-30), "(f32 bound + u16)*|y|");

    // backward from the reference's rstd; dx and dw accumulate into random values
    vecf dy = rndv(x.size(), -1, 1), dx0 = rndv(x.size(), -1, 1), dw0 = rndv(D, -1, 1);
    vecf dx_want = dx0, dw_want = dw0;
    R->rmsnorm_backward(dx_want.data(), dw_want.data(), dy.data(), x.data(), w.data(), rstd.data(), N, D);
    // Magnitudes: dx_j: |old| + r|dy w| + r^3/D |x| sum_d |dy w x|; dw_d: |old| + sum_n |dy x r|.
    vecf mag_dx(x.size()), mag_dw(D);
    for (int d = 0; d < D; d++)
        mag_dw[d] = fabsf(dw0[d]);
    for (int n = 0; n < N; n++) {
        double r = rstd[n], dot = 0.0;
        for (int d = 0; d < D; d++)
            dot += fabs((double)dy[(size_t)n * D + d] * w[d] * x[(size_t)n * D + d]);
        for (int d = 0; d < D; d++) {
            size_t i = (size_t)n * D + d;
            mag_dx[i] = (float)(fabs(dx0[i]) + r * fabs(dy[i] * w[d]) + r * r * r / D * fabs(x[i]) * dot);
            mag_dw[d] += (float)fabs(dy[i] * x[i] * r);
        }
    }
    float *ddy = up(dy), *ddx = up(dx0), *ddw = up(dw0), *drstd_ref = up(rstd);
    if (lib_ok(flas_cuda_rmsnorm_backward(g_ctx, ddx, ddw, ddy, dx_in, dw, drstd_ref, N, D), "rmsnorm_backward")) {
        check("rmsnorm_backward dx +=", shape, down(ddx, x.size()), dx_want, tol_of(dx_want, &mag_dx, rt, 1e-30),
              "4(D/256+16)u32*mag");
        double rw = 4.0 * (128 + N / 128 + 8) * U32; // 128-row partial chains, then N/128 partials
        check("rmsnorm_backward dw +=", shape, down(ddw, D), dw_want, tol_of(dw_want, &mag_dw, rw, 1e-30),
              "4(136+N/128)u32*mag");
    }
}

// ---- RoPE ----

static void test_rope(int B, int T, int Hq, int Hkv, int hd, int pad)
{
    char shape[96];
    int ld = (Hq + 2 * Hkv) * hd + pad;
    snprintf(shape, sizeof shape, "B=%d T=%d Hq=%d Hkv=%d hd=%d ld=%d", B, T, Hq, Hkv, hd, ld);
    int half = hd / 2;
    vecf cs((size_t)T * half), sn((size_t)T * half);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double ang = t * pow(10000.0, -2.0 * i / hd);
            cs[(size_t)t * half + i] = (float)cos(ang);
            sn[(size_t)t * half + i] = (float)sin(ang);
        }
    vecf qkv = rndv((size_t)B * T * ld, -2, 2);
    float *dcs = up(cs), *dsn = up(sn);
    // The way model.c applies it: on q (Hq heads at column 0) and on k (Hkv heads at column Hq*hd) of the
    // qkv rows; v and the padding must come back untouched. One ulp-scale chain: 4 roundings, |re|+|im|.
    for (int dir = 0; dir < 2; dir++) {
        vecf want = qkv, mag(qkv.size());
        float *dq = up(qkv);
        auto fn = dir ? R->rope_backward : R->rope_forward;
        fn(want.data(), B, T, Hq, hd, ld, cs.data(), sn.data());
        fn(want.data() + (size_t)Hq * hd, B, T, Hkv, hd, ld, cs.data(), sn.data());
        for (size_t i = 0; i < qkv.size(); i++) // pairs: |re| + |im| of the element's pair
            mag[i] = fabsf(qkv[i & ~(size_t)1]) + fabsf(qkv[i | 1]);
        int rc = dir ? flas_cuda_rope_backward(g_ctx, dq, B, T, Hq, hd, ld, dcs, dsn)
                     : flas_cuda_rope_forward(g_ctx, dq, B, T, Hq, hd, ld, dcs, dsn);
        if (!rc)
            rc = dir ? flas_cuda_rope_backward(g_ctx, dq + (size_t)Hq * hd, B, T, Hkv, hd, ld, dcs, dsn)
                     : flas_cuda_rope_forward(g_ctx, dq + (size_t)Hq * hd, B, T, Hkv, hd, ld, dcs, dsn);
        // (ld is even in every test shape, so element pairs never straddle rows)
        if (lib_ok(rc, dir ? "rope_backward" : "rope_forward"))
            check(dir ? "rope_backward (q,k of qkv)" : "rope_forward (q,k of qkv)", shape, down(dq, qkv.size()), want,
                  tol_of(want, &mag, 16 * U32, 0), "16u32*(|re|+|im|)");
    }
}

// ---- attention ----

static void test_attention(int B, int T, int Hq, int Hkv, int hd, int pad)
{
    char shape[96];
    int ld = (Hq + 2 * Hkv) * hd + pad, N = B * T, ldo = Hq * hd;
    snprintf(shape, sizeof shape, "B=%d T=%d Hq=%d Hkv=%d hd=%d ld=%d", B, T, Hq, Hkv, hd, ld);
    size_t np = (size_t)B * Hq * T * T;
    vecf qkv = rndv((size_t)N * ld, -1.5f, 1.5f);
    const float *q = qkv.data(), *k = q + (size_t)Hq * hd, *v = k + (size_t)Hkv * hd;
    vecf out((size_t)N * ldo), probs(np);
    R->attention_forward(out.data(), probs.data(), q, k, v, ld, B, T, Hq, Hkv, hd);
    float *dqkv_in = up(qkv), *dout_att = (float *)dalloc(out.size() * 4), *dprobs = (float *)dalloc(np * 4);
    float *dq = dqkv_in, *dk = dq + (size_t)Hq * hd, *dv = dk + (size_t)Hkv * hd;
    // Normwise bounds: chains of hd (scores) then T (softmax sums, P.V) fp32 roundings plus ~32 for exp,
    // division and the reductions' trees; 4x margin forward, 8x backward (two more chained products).
    double rf = 4.0 * (hd + T + 32) * U32, rb = 8.0 * (hd + T + 32) * U32;
    char nf[48], nb[48];
    snprintf(nf, sizeof nf, "%.1e*(|y|+max|y|)", rf);
    snprintf(nb, sizeof nb, "%.1e*(|y|+max|y|)", rb);
    CK(cudaMemset(dprobs, 0xff, np * 4)); // NaN: entries j > i must be written (as 0)
    if (lib_ok(flas_cuda_attention_forward(g_ctx, dout_att, dprobs, dq, dk, dv, ld, B, T, Hq, Hkv, hd),
               "attention_forward")) {
        check("attention_forward out", shape, down(dout_att, out.size()), out, tol_normwise(out, rf), nf);
        check("attention_forward probs", shape, down(dprobs, np), probs, tol_normwise(probs, rf), nf);
    }
    // backward from the reference's probs; dq/dk/dv land in a qkv-shaped buffer whose padding columns
    // hold a sentinel that must survive (and whose other columns start as NaN: they must be overwritten).
    vecf dout = rndv(out.size(), -1, 1);
    vecf grad_want((size_t)N * ld, 0.0f), dprobs_ref(np);
    for (int n = 0; n < N; n++)
        for (int c = (Hq + 2 * Hkv) * hd; c < ld; c++)
            grad_want[(size_t)n * ld + c] = 12345.0f;
    R->attention_backward(grad_want.data(), grad_want.data() + (size_t)Hq * hd,
                          grad_want.data() + (size_t)(Hq + Hkv) * hd, dprobs_ref.data(), dout.data(), probs.data(), q, k,
                          v, ld, B, T, Hq, Hkv, hd);
    vecf grad0 = grad_want;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < (Hq + 2 * Hkv) * hd; c++)
            grad0[(size_t)n * ld + c] = NAN;
    float *dgrad = up(grad0), *ddout = up(dout), *dprobs_in = up(probs), *ddprobs = (float *)dalloc(np * 4);
    if (lib_ok(flas_cuda_attention_backward(g_ctx, dgrad, dgrad + (size_t)Hq * hd, dgrad + (size_t)(Hq + Hkv) * hd,
                                            ddprobs, ddout, dprobs_in, dq, dk, dv, ld, B, T, Hq, Hkv, hd),
               "attention_backward")) {
        vecf got = down(dgrad, grad_want.size());
        // Each of dq, dk, dv on its own (own magnitudes), the padding exactly.
        const char *names[3] = {"attention_backward dq", "attention_backward dk", "attention_backward dv"};
        int c0[4] = {0, Hq * hd, (Hq + Hkv) * hd, (Hq + 2 * Hkv) * hd};
        for (int part = 0; part < 4; part++) {
            vecf g, w;
            for (int n = 0; n < N; n++)
                for (int c = c0[part]; c < (part < 3 ? c0[part + 1] : ld); c++) {
                    g.push_back(got[(size_t)n * ld + c]);
                    w.push_back(grad_want[(size_t)n * ld + c]);
                }
            if (part < 3)
                check(names[part], shape, g, w, tol_normwise(w, rb), nb);
            else if (pad)
                check("attention_backward pad", shape, g, w, vecf(w.size(), 0.0f), "exact (untouched)");
        }
    }
}

// ---- SwiGLU ----

static void test_swiglu(size_t n)
{
    char shape[32];
    snprintf(shape, sizeof shape, "n=%zu", n);
    vecf h1 = rndv(n, -6, 6), h3 = rndv(n, -2, 2), dg = rndv(n, -1, 1);
    const float extreme[] = {-100.0f, -88.5f, -30.0f, 30.0f, 100.0f, 0.0f, -1.2784645f};
    for (size_t i = 0; i < sizeof extreme / sizeof *extreme && i < n; i++)
        h1[i] = extreme[i];
    float *d1 = up(h1), *d3 = up(h3), *ddg = up(dg), *g32 = (float *)dalloc(n * 4);
    float *a32 = (float *)dalloc(n * 4), *b32 = (float *)dalloc(n * 4);
    flas_bf16 *g16 = (flas_bf16 *)dalloc(n * 2), *a16 = (flas_bf16 *)dalloc(n * 2), *b16 = (flas_bf16 *)dalloc(n * 2);
    vecf g(n), dh1(n), dh3(n), mag1(n);
    R->swiglu_forward(g.data(), h1.data(), h3.data(), n);
    R->swiglu_backward(dh1.data(), dh3.data(), dg.data(), h1.data(), h3.data(), n);
    for (size_t i = 0; i < n; i++) { // dh1's factor 1 + x(1-s) cancels near x = -1.28: bound by the parts
        double x = h1[i], s = 1.0 / (1.0 + exp(-x));
        mag1[i] = (float)fabs(dg[i] * h3[i] * s * (1.0 + fabs(x * (1.0 - s))));
    }
    // expf within 2 ulp, then ~6 roundings: 16 u32 relative.
    double rt = 16 * U32;
    if (lib_ok(flas_cuda_swiglu_forward(g_ctx, g32, FLAS_F32, d1, d3, n), "swiglu_forward"))
        check("swiglu_forward f32", shape, down(g32, n), g, tol_of(g, NULL, rt, 1e-30), "16u32*|y|");
    if (lib_ok(flas_cuda_swiglu_forward(g_ctx, g16, FLAS_BF16, d1, d3, n), "swiglu_forward bf16"))
        check("swiglu_forward bf16", shape, from_bf(down((const uint16_t *)g16, n)), g,
              tol_of(g, NULL, rt + 1.01 * U16, 1e-30), "(16u32+u16)*|y|");
    if (lib_ok(flas_cuda_swiglu_backward(g_ctx, a32, b32, FLAS_F32, ddg, d1, d3, n), "swiglu_backward")) {
        check("swiglu_backward dh1 f32", shape, down(a32, n), dh1, tol_of(dh1, &mag1, 2 * rt, 1e-30), "32u32*mag");
        check("swiglu_backward dh3 f32", shape, down(b32, n), dh3, tol_of(dh3, NULL, rt, 1e-30), "16u32*|y|");
    }
    if (lib_ok(flas_cuda_swiglu_backward(g_ctx, a16, b16, FLAS_BF16, ddg, d1, d3, n), "swiglu_backward bf16")) {
        vecf t1 = tol_of(dh1, &mag1, 2 * rt, 1e-30), t1b = tol_of(dh1, NULL, 1.01 * U16, 0);
        for (size_t i = 0; i < n; i++)
            t1[i] = t1[i] * 1.01f + t1b[i];
        check("swiglu_backward dh1 bf16", shape, from_bf(down((const uint16_t *)a16, n)), dh1, t1, "32u32*mag+u16|y|");
        check("swiglu_backward dh3 bf16", shape, from_bf(down((const uint16_t *)b16, n)), dh3,
              tol_of(dh3, NULL, rt + 1.01 * U16, 1e-30), "(16u32+u16)*|y|");
    }
}

// ---- cross-entropy ----

static void test_xent(int N, int V)
{
    char shape[48];
    snprintf(shape, sizeof shape, "N=%d V=%d", N, V);
    vecf logits = rndv((size_t)N * V, -8, 8);
    std::vector<int> tgt = rndtok(N, V);
    tgt[0] = V - 1; // the last column
    vecf probs = logits, losses(N);
    R->xent_forward(probs.data(), losses.data(), tgt.data(), N, V);
    float *dl = up(logits), *dloss = (float *)dalloc(N * 4);
    int *dt = up(tgt);
    // Probabilities: the sum's chain V/512 + 9 (block tree), expf 2 ulp, a division: 4(V/512+20)u32 |p|.
    // Losses: log(sum) + max - x_t: absolute, relative to |max| + |x_t| + |log sum|.
    double rt = 4.0 * (V / 512 + 20) * U32;
    vecf magl(N);
    for (int n = 0; n < N; n++) {
        float mx = logits[(size_t)n * V];
        for (int i = 1; i < V; i++)
            mx = fmaxf(mx, logits[(size_t)n * V + i]);
        magl[n] = fabsf(mx) + fabsf(logits[(size_t)n * V + tgt[n]]) + fabsf(losses[n] + logits[(size_t)n * V + tgt[n]] - mx);
    }
    if (lib_ok(flas_cuda_xent_forward(g_ctx, dl, dloss, dt, N, V), "xent_forward")) {
        check("xent_forward probs", shape, down(dl, probs.size()), probs, tol_of(probs, NULL, rt, 1e-30),
              "4(V/512+20)u32*|p|");
        check("xent_forward losses", shape, down(dloss, N), losses, tol_of(losses, &magl, rt, 1e-30),
              "4(V/512+20)u32*mag");
    }
    // backward on the reference's probabilities: one exact subtraction
    vecf grad = probs;
    R->xent_backward(grad.data(), tgt.data(), N, V);
    float *dp = up(probs);
    if (lib_ok(flas_cuda_xent_backward(g_ctx, dp, dt, N, V), "xent_backward"))
        check("xent_backward", shape, down(dp, grad.size()), grad, vecf(grad.size(), 0.0f), "exact");
}

// ---- global norm, scale, clip ----

static void test_global_norm(size_t n)
{
    char shape[32];
    snprintf(shape, sizeof shape, "n=%zu", n);
    vecf x = rndv(n, -1, 1);
    double want = 0.0;
    for (size_t i = 0; i < n; i++)
        want += (double)x[i] * x[i];
    float *dx = up(x);
    double *dsum = (double *)dalloc(2 * sizeof(double));
    // Doubles summed in another order: n * 2^-53 relative at worst.
    double rt = (double)(n + 64) * ldexp(1.0, -53);
    if (!lib_ok(flas_cuda_sumsq(g_ctx, dsum, dx, n, false), "sumsq"))
        return;
    if (!lib_ok(flas_cuda_sumsq(g_ctx, dsum + 1, dx, n, false), "sumsq"))
        return;
    std::vector<double> got = down(dsum, 2);
    g_checks++;
    double err = fabs(got[0] - want);
    bool ok = err <= rt * want && memcmp(&got[0], &got[1], sizeof(double)) == 0;
    if (!ok)
        g_failed++;
    printf("%-26s %-40s max_abs=%.3e max_rel=%.3e tol=(n+64)2^-53 rel, 2 runs same bits %s\n", "sumsq (double)", shape,
           err, err / want, ok ? "PASS" : "FAIL");
    // accumulate: + the same again
    if (lib_ok(flas_cuda_sumsq(g_ctx, dsum, dx, n, true), "sumsq accumulate")) {
        double acc = down(dsum, 1)[0];
        g_checks++;
        bool ok2 = fabs(acc - 2 * want) <= 2 * rt * want;
        if (!ok2)
            g_failed++;
        printf("%-26s %-40s max_abs=%.3e tol=2(n+64)2^-53 rel %s\n", "sumsq accumulate", shape, fabs(acc - 2 * want),
               ok2 ? "PASS" : "FAIL");
    }
    // scale: one exact fp32 multiplication, as flas_scale
    vecf sc = x;
    for (float &f : sc)
        f *= 0.3f;
    if (lib_ok(flas_cuda_scale(g_ctx, dx, n, 0.3f), "scale"))
        check("scale", shape, down(dx, n), sc, vecf(n, 0.0f), "exact");
    // clip (on the scaled buffer, from the original sum): norm = sqrt(want) > max_norm -> scale by coef;
    // the device's float(sum) may differ from the host's by an ulp: 4 u32 relative.
    for (int k = 0; k < 2; k++) {
        float max_norm = k ? 1e6f : 0.5f; // the second never clips
        vecf cl = sc;
        float norm = sqrtf((float)want), coef = max_norm / (norm + 1e-6f);
        if (max_norm > 0.0f && coef < 1.0f)
            for (float &f : cl)
                f *= coef;
        float *dcl = up(sc);
        if (lib_ok(flas_cuda_clip(g_ctx, dcl, n, dsum + 1, max_norm), "clip"))
            check(k ? "clip (no clipping)" : "clip", shape, down(dcl, n), cl, tol_of(cl, NULL, 4 * U32, 0),
                  "4u32*|y|");
    }
}

// ---- AdamW ----

static void test_adamw(size_t n, float wd)
{
    char shape[48];
    snprintf(shape, sizeof shape, "n=%zu wd=%g 3 steps", n, wd);
    const float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    vecf p = rndv(n, -1, 1), m(n, 0.0f), v(n, 0.0f), mag_p(n), mag_m(n), mag_v(n);
    float *dp = up(p), *dm = up(m), *dv = up(v);
    flas_bf16 *dpb = (flas_bf16 *)dalloc(n * 2);
    for (long step = 1; step <= 3; step++) {
        vecf g = rndv(n, -0.1f, 0.1f);
        float *dg = up(g);
        // optimizer.c's flas_adamw_step, element by element, in float
        float bc1 = 1.0f - powf(b1, (float)step), bc2_sqrt = sqrtf(1.0f - powf(b2, (float)step));
        float step_size = lr / bc1, decay = 1.0f - lr * wd;
        for (size_t j = 0; j < n; j++) {
            float gj = g[j];
            float mj = b1 * m[j] + (1.0f - b1) * gj;
            float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
            float upd = step_size * mj / (sqrtf(vj) / bc2_sqrt + eps);
            mag_m[j] = fabsf(b1 * m[j]) + fabsf((1.0f - b1) * gj);
            mag_v[j] = fabsf(b2 * v[j]) + fabsf((1.0f - b2) * gj * gj);
            mag_p[j] = fabsf(p[j] * decay) + fabsf(upd);
            m[j] = mj;
            v[j] = vj;
            p[j] = p[j] * decay - upd;
        }
        if (!lib_ok(flas_cuda_adamw(g_ctx, dp, dm, dv, dg, dpb, n, lr, b1, b2, eps, wd, step), "adamw"))
            return;
    }
    // Contraction to fused multiply-adds may change last bits per step (on either side): 16 u32 of the
    // magnitudes of the last step's terms, errors of earlier steps being damped by b1, b2 < 1.
    vecf gp = down(dp, n);
    check("adamw p", shape, gp, p, tol_of(p, &mag_p, 16 * U32, 1e-30), "16u32*mag");
    check("adamw m", shape, down(dm, n), m, tol_of(m, &mag_m, 16 * U32, 1e-30), "16u32*mag");
    check("adamw v", shape, down(dv, n), v, tol_of(v, &mag_v, 16 * U32, 1e-30), "16u32*mag");
    // the bf16 copy is the rounding of the device's own fp32 weights: bits
    std::vector<uint16_t> pb = down((const uint16_t *)dpb, n);
    vecf pb_want(n);
    for (size_t j = 0; j < n; j++)
        pb_want[j] = h_bf2f(h_f2bf(gp[j]));
    check("adamw bf16 copy", shape, from_bf(pb), pb_want, vecf(n, 0.0f), "exact (RNE of p)");
}

int main(void)
{
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("not run: no GPU (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device 0: %s, sm_%d%d\n", prop.name, prop.major, prop.minor);
    char err[512];
    if (flas_cuda_create(&g_ctx, 0, err, sizeof err))
        die("flas_cuda_create: %s", err);

    test_convert();
    test_matmul(64, 128, 96, 0);
    test_matmul(37, 29, 19, 0);   // odd: every leading dimension misaligned for vector loads
    test_matmul(200, 288, 100, 1); // sub-array pointers, 2-byte aligned
    test_matmul(256, 512, 384, 0);
    test_embedding(37, 33, 7); // many repeated tokens
    test_embedding(300, 256, 1000);
    test_rmsnorm(7, 33);
    test_rmsnorm(300, 1000); // several 128-row dw chunks, D not a multiple of the block
    test_rmsnorm(64, 4096);
    test_rope(2, 7, 4, 2, 16, 0);
    test_rope(3, 13, 6, 2, 8, 2);
    test_attention(2, 13, 4, 2, 8, 0);  // GQA, group 2
    test_attention(1, 67, 4, 4, 16, 2); // MHA, T not a multiple of 32 or 8, padded rows
    test_attention(2, 33, 6, 2, 32, 0); // group 3
    test_attention(2, 40, 4, 1, 16, 4); // MQA
    test_swiglu(1000);
    test_swiglu(100003);
    test_xent(37, 1000);
    test_xent(5, 32003);
    test_global_norm(12345);
    test_global_norm(3000017);
    test_adamw(10007, 0.1f);
    test_adamw(999, 0.0f);

    for (void *p : g_allocs)
        cudaFree(p);
    flas_cuda_destroy(g_ctx);
    printf("%d of %d checks failed\n", g_failed, g_checks);
    return g_failed ? 1 : 0;
}
