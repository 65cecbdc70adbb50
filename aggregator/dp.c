/* DP-FedAvg's pieces that are not the merge itself: the RDP accountant, the clipping rule and the
 * cryptographically seeded Gaussian noise (include/flas/dp.h). */
#include "flas/dp.h"

#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

double flas_dp_round_rho(double sigma)
{
    if (!(sigma > 0))
        return INFINITY;
    return 1.0 / (2.0 * sigma * sigma);
}

/* epsilon at one order, as dp_accounting's compute_epsilon: the improved conversion is unstable as
 * alpha -> 1, so orders up to 1.01 give nothing; a tiny rho gives 0 through the KL bound
 * delta <= sqrt(1 - exp(-rdp)). */
static double eps_at(double alpha, double rho, double delta)
{
    double r = alpha * rho;
    if (delta * delta + expm1(-r) > 0)
        return 0;
    if (!(alpha > 1.01))
        return INFINITY;
    return r + log1p(-1.0 / alpha) - log(delta * alpha) / (alpha - 1.0);
}

double flas_dp_epsilon(double rho, double delta, double *order)
{
    if (!(delta > 0 && delta < 1) || !(rho >= 0))
        return -1;
    if (order)
        *order = INFINITY;
    if (rho == 0)
        return 0;
    if (isinf(rho))
        return INFINITY;
    /* epsilon(alpha) is unimodal in alpha: a log-spaced scan over (1.01, 1e7] brackets the optimum
     * (large orders matter when sigma is large), then golden-section search refines it. */
    const int n = 4000;
    const double lo = log(1.0101), hi = log(1e7);
    double best = INFINITY, best_a = 1.0101;
    int best_i = 0;
    for (int i = 0; i <= n; i++) {
        double a = exp(lo + (hi - lo) * i / n), e = eps_at(a, rho, delta);
        if (e < best)
            best = e, best_a = a, best_i = i;
    }
    double a = exp(lo + (hi - lo) * (best_i > 0 ? best_i - 1 : 0) / n);
    double b = exp(lo + (hi - lo) * (best_i < n ? best_i + 1 : n) / n);
    const double g = (sqrt(5.0) - 1) / 2;
    double c1 = b - g * (b - a), c2 = a + g * (b - a), f1 = eps_at(c1, rho, delta), f2 = eps_at(c2, rho, delta);
    for (int it = 0; it < 200 && b - a > 1e-12 * b; it++) {
        if (f1 < f2)
            b = c2, c2 = c1, f2 = f1, c1 = b - g * (b - a), f1 = eps_at(c1, rho, delta);
        else
            a = c1, c1 = c2, f1 = f2, c2 = a + g * (b - a), f2 = eps_at(c2, rho, delta);
    }
    if (f1 < best)
        best = f1, best_a = c1;
    if (f2 < best)
        best = f2, best_a = c2;
    if (order)
        *order = best_a;
    return best > 0 ? best : 0;
}

double flas_dp_sigma_for_epsilon(double target_epsilon, double delta, long rounds)
{
    if (!(target_epsilon > 0) || isinf(target_epsilon) || rounds < 1 || !(delta > 0 && delta < 1))
        return -1;
    /* epsilon falls as sigma grows: bisection on log sigma */
    double lo = log(1e-4), hi = log(1e7);
    if (flas_dp_epsilon(rounds * flas_dp_round_rho(exp(hi)), delta, NULL) > target_epsilon)
        return -1;
    for (int it = 0; it < 200 && hi - lo > 1e-10; it++) {
        double mid = 0.5 * (lo + hi);
        if (flas_dp_epsilon(rounds * flas_dp_round_rho(exp(mid)), delta, NULL) > target_epsilon)
            lo = mid;
        else
            hi = mid;
    }
    return exp(hi);
}

double flas_dp_clip_factor(double norm, double clip)
{
    if (!(norm > clip))
        return 1.0;
    return clip / norm;
}

int flas_dp_seed_random(unsigned char seed[FLAS_DP_SEED_BYTES])
{
    size_t got = 0;
    while (got < FLAS_DP_SEED_BYTES) {
        ssize_t r = getrandom(seed + got, FLAS_DP_SEED_BYTES - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

int flas_dp_seed_parse(const char *hex, unsigned char seed[FLAS_DP_SEED_BYTES])
{
    if (!hex || strlen(hex) != 2 * FLAS_DP_SEED_BYTES)
        return -1;
    for (int i = 0; i < FLAS_DP_SEED_BYTES; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char ch = hex[2 * i + j];
            unsigned d = ch >= '0' && ch <= '9' ? (unsigned)(ch - '0')
                         : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
                         : ch >= 'A' && ch <= 'F' ? (unsigned)(ch - 'A' + 10) : 16u;
            if (d > 15)
                return -1;
            v = v * 16 + d;
        }
        seed[i] = (unsigned char)v;
    }
    return 0;
}

#define POOL 4096 /* bytes of keystream per refill */

struct flas_dp_rng {
    EVP_CIPHER_CTX *ctx;
    unsigned char pool[POOL];
    size_t used;
    int has_spare;
    double spare;
};

flas_dp_rng *flas_dp_rng_new(const unsigned char seed[FLAS_DP_SEED_BYTES])
{
    flas_dp_rng *g = calloc(1, sizeof *g);
    static const unsigned char iv[16] = {0}; /* counter 0, nonce 0: one key is one stream */
    if (!g || !(g->ctx = EVP_CIPHER_CTX_new()) ||
        EVP_EncryptInit_ex(g->ctx, EVP_chacha20(), NULL, seed, iv) != 1) {
        flas_dp_rng_free(g);
        return NULL;
    }
    g->used = POOL;
    return g;
}

void flas_dp_rng_free(flas_dp_rng *g)
{
    if (!g)
        return;
    if (g->ctx)
        EVP_CIPHER_CTX_free(g->ctx);
    explicit_bzero(g, sizeof *g); /* the keystream left in the pool would reveal noise */
    free(g);
}

static int next_u64(flas_dp_rng *g, uint64_t *v)
{
    if (g->used + 8 > POOL) {
        static const unsigned char zeros[POOL];
        int len = 0;
        if (EVP_EncryptUpdate(g->ctx, g->pool, &len, zeros, POOL) != 1 || len != POOL)
            return -1;
        g->used = 0;
    }
    memcpy(v, g->pool + g->used, 8);
    g->used += 8;
    return 0;
}

int flas_dp_rng_gaussian(flas_dp_rng *g, double stddev, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (g->has_spare) {
            out[i] = (float)(stddev * g->spare);
            g->has_spare = 0;
            continue;
        }
        uint64_t a, b;
        if (next_u64(g, &a) || next_u64(g, &b))
            return -1;
        /* u1 in (0, 1] so that log(u1) is finite; u2 in [0, 1) */
        double u1 = ((double)(a >> 11) + 1.0) * 0x1.0p-53, u2 = (double)(b >> 11) * 0x1.0p-53;
        double r = sqrt(-2.0 * log(u1)), t = 2.0 * M_PI * u2;
        out[i] = (float)(stddev * r * cos(t));
        g->spare = r * sin(t);
        g->has_spare = 1;
    }
    return 0;
}
