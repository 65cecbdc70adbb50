/* Merge strategies: names, defaults, and the in-memory kernel that combines one chunk of K inputs.
 * The kernel is memory-bound: it reads each input once, accumulates sum_k p_k x_k in double inside an
 * L1-resident block, then applies the server step and writes each output once (docs/aggregation.md). */
#include "flas/aggregate.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[FLAS_AGG_N_STRATEGIES] = {"fedavg", "mean", "fedavgm", "fedadam", "fedyogi",
                                                         "diloco"};

const char *flas_agg_strategy_name(flas_agg_strategy s)
{
    return (s >= 0 && s < FLAS_AGG_N_STRATEGIES) ? names[s] : "unknown";
}

int flas_agg_strategy_parse(const char *name, flas_agg_strategy *s)
{
    for (int i = 0; name && i < FLAS_AGG_N_STRATEGIES; i++)
        if (strcmp(name, names[i]) == 0) {
            *s = (flas_agg_strategy)i;
            return 0;
        }
    return -1;
}

int flas_agg_strategy_has_m(flas_agg_strategy s) { return s == FLAS_AGG_FEDAVGM || s == FLAS_AGG_DILOCO || s == FLAS_AGG_FEDADAM || s == FLAS_AGG_FEDYOGI; }
int flas_agg_strategy_has_v(flas_agg_strategy s) { return s == FLAS_AGG_FEDADAM || s == FLAS_AGG_FEDYOGI; }

void flas_agg_defaults(flas_agg_options *o, flas_agg_strategy s)
{
    memset(o, 0, sizeof *o);
    o->strategy = s;
    o->policy = FLAS_AGG_REFUSE_ROUND;
    o->min_sites = 1;
    o->max_tokens = (int64_t)10000000000000LL; /* 1e13: more than any site trains in one round */
    o->chunk_elems = (size_t)1 << 20;
    o->threads = 1; /* one core already streams at memory speed; see flas_agg_options.threads */
    o->uniform = s == FLAS_AGG_MEAN;
    switch (s) {
    case FLAS_AGG_FEDAVGM:
        o->lr = 1.0, o->momentum = 0.9; /* Hsu et al. 2019: server lr 1 makes beta=0 plain FedAvg */
        break;
    case FLAS_AGG_DILOCO:
        o->lr = 0.7, o->momentum = 0.9; /* Douillard et al. 2023 */
        break;
    case FLAS_AGG_FEDADAM:
    case FLAS_AGG_FEDYOGI:
        o->lr = 0.01, o->beta1 = 0.9, o->beta2 = 0.99, o->tau = 1e-3; /* Reddi et al. 2021 */
        break;
    default:
        break;
    }
}

#define BLOCK 1024 /* doubles: 8 KiB of accumulator stays in L1 */

static inline int nonfinite(double v) { return !(fabs(v) <= (double)FLT_MAX); }

/* out/m/v for one block from acc = sum_k p_k x_k. Returns 1 if anything written is not finite. */
static int finish_block(const flas_agg_kernel *kp, size_t len, const double *acc, const float *x, float *m,
                        float *v, float *out)
{
    int bad = 0;
    const double lr = kp->lr, mu = kp->momentum, b1 = kp->beta1, b2 = kp->beta2, tau = kp->tau;
    switch (kp->strategy) {
    case FLAS_AGG_FEDAVG:
    case FLAS_AGG_MEAN:
        for (size_t j = 0; j < len; j++) {
            float o = (float)acc[j];
            out[j] = o;
            bad |= nonfinite(o);
        }
        break;
    case FLAS_AGG_FEDAVGM:
        for (size_t j = 0; j < len; j++) {
            double g = (double)x[j] - acc[j], mm = mu * m[j] + g;
            float o = (float)((double)x[j] - lr * mm);
            m[j] = (float)mm;
            out[j] = o;
            bad |= nonfinite(o) | nonfinite((float)mm);
        }
        break;
    case FLAS_AGG_DILOCO:
        for (size_t j = 0; j < len; j++) {
            double g = (double)x[j] - acc[j], mm = mu * m[j] + g;
            float o = (float)((double)x[j] - lr * (g + mu * mm));
            m[j] = (float)mm;
            out[j] = o;
            bad |= nonfinite(o) | nonfinite((float)mm);
        }
        break;
    case FLAS_AGG_FEDADAM:
    case FLAS_AGG_FEDYOGI:
        for (size_t j = 0; j < len; j++) {
            double d = acc[j] - (double)x[j], d2 = d * d, vj = v[j];
            double mm = b1 * m[j] + (1.0 - b1) * d;
            double vv = kp->strategy == FLAS_AGG_FEDADAM ? b2 * vj + (1.0 - b2) * d2
                                                         : vj - (1.0 - b2) * d2 * (double)((vj > d2) - (vj < d2));
            float o = (float)((double)x[j] + lr * mm / (sqrt(vv) + tau));
            m[j] = (float)mm;
            v[j] = (float)vv;
            out[j] = o;
            bad |= nonfinite(o) | nonfinite((float)mm) | nonfinite((float)vv);
        }
        break;
    default:
        bad = 1;
    }
    return bad;
}

/* acc (+)= sum of up to four weighted inputs in one pass, so that all input streams advance together
 * like STREAM's (the hardware prefetchers see continuous streams). No checks here: a NaN or Inf in any
 * input makes acc non-finite (double cannot overflow on a convex combination of floats), and the
 * caller looks for the culprit only then. */
static void accumulate(double *restrict acc, size_t len, int first, int g, const float *const *a, const double *p)
{
    const float *restrict a0 = a[0], *restrict a1 = g > 1 ? a[1] : NULL, *restrict a2 = g > 2 ? a[2] : NULL,
                          *restrict a3 = g > 3 ? a[3] : NULL;
    const double p0 = p[0], p1 = g > 1 ? p[1] : 0, p2 = g > 2 ? p[2] : 0, p3 = g > 3 ? p[3] : 0;
#define LOOP(expr)                                      \
    if (first)                                          \
        for (size_t j = 0; j < len; j++)                \
            acc[j] = (expr);                            \
    else                                                \
        for (size_t j = 0; j < len; j++)                \
            acc[j] += (expr);
    switch (g) {
    case 1: LOOP(p0 * a0[j]) break;
    case 2: LOOP(p0 * a0[j] + p1 * a1[j]) break;
    case 3: LOOP(p0 * a0[j] + p1 * a1[j] + p2 * a2[j]) break;
    default: LOOP(p0 * a0[j] + p1 * a1[j] + p2 * a2[j] + p3 * a3[j]) break;
    }
#undef LOOP
}

/* FedAvg and the plain mean in one pass: out = (float)(acc + sum of the last group), no accumulator
 * round trip. Returns 1 if a sum is not finite (then some input is not). */
static int average_out(float *restrict out, const double *restrict acc, size_t len, int g, const float *const *a,
                       const double *p, const float *restrict noise)
{
    const float *restrict a0 = a[0], *restrict a1 = g > 1 ? a[1] : NULL, *restrict a2 = g > 2 ? a[2] : NULL,
                          *restrict a3 = g > 3 ? a[3] : NULL;
    const double p0 = p[0], p1 = g > 1 ? p[1] : 0, p2 = g > 2 ? p[2] : 0, p3 = g > 3 ? p[3] : 0;
    int bad = 0;
#define LOOP(expr)                                      \
    for (size_t j = 0; j < len; j++) {                  \
        double sum = (acc ? acc[j] : 0.0) + (expr);     \
        if (noise)                                      \
            sum += noise[j];                            \
        out[j] = (float)sum;                            \
        bad |= nonfinite(sum);                          \
    }
    switch (g) {
    case 1: LOOP(p0 * a0[j]) break;
    case 2: LOOP(p0 * a0[j] + p1 * a1[j]) break;
    case 3: LOOP(p0 * a0[j] + p1 * a1[j] + p2 * a2[j]) break;
    default: LOOP(p0 * a0[j] + p1 * a1[j] + p2 * a2[j] + p3 * a3[j]) break;
    }
#undef LOOP
    return bad;
}

static int block_has_nonfinite(const float *a, size_t len)
{
    int nf = 0;
    for (size_t j = 0; j < len; j++)
        nf |= !(fabsf(a[j]) <= FLT_MAX);
    return nf;
}

int flas_agg_combine(const flas_agg_kernel *kp, size_t n, const float *const *in, const float *x, float *m,
                     float *v, float *out, unsigned char *bad, int *out_bad)
{
    const int k = kp->k;
    int *badv = calloc((size_t)(k > 0 ? k : 1), sizeof *badv);
    int res_bad = 0;
    if (!badv || k < 1) {
        free(badv);
        if (out_bad)
            *out_bad = 1;
        return -1;
    }
    const size_t nblocks = (n + BLOCK - 1) / BLOCK;
    /* Threads only when there is enough work to pay for waking them. */
#pragma omp parallel for schedule(static) reduction(| : badv[:k]) reduction(| : res_bad) if (n >= (1u << 16))
    for (size_t b = 0; b < nblocks; b++) {
        const size_t lo = b * BLOCK, len = n - lo < BLOCK ? n - lo : BLOCK;
        double acc[BLOCK];
        const float *a[4];
        const int averaging = kp->strategy == FLAS_AGG_FEDAVG || kp->strategy == FLAS_AGG_MEAN;
        int accbad = 0;
        for (int i = 0; i < k; i += 4) {
            int g = k - i < 4 ? k - i : 4;
            for (int q = 0; q < g; q++)
                a[q] = in[i + q] + lo;
            if (averaging && i + g == k) /* the last group writes the result directly */
                accbad = average_out(out + lo, i ? acc : NULL, len, g, a, kp->p + i,
                                     kp->noise ? kp->noise + lo : NULL);
            else
                accumulate(acc, len, i == 0, g, a, kp->p + i);
        }
        if (!averaging && kp->noise)
            for (size_t j = 0; j < len; j++)
                acc[j] += kp->noise[lo + j]; /* the server step acts on the noised mean */
        if (!averaging)
            for (size_t j = 0; j < len; j++)
                accbad |= nonfinite(acc[j]);
        if (accbad) {
            int culprit = 0;
            for (int i = 0; i < k; i++)
                if (block_has_nonfinite(in[i] + lo, len))
                    badv[i] = 1, culprit = 1;
            res_bad |= !culprit;
        }
        if (!averaging)
            res_bad |= finish_block(kp, len, acc, x ? x + lo : NULL, m ? m + lo : NULL, v ? v + lo : NULL,
                                    out + lo);
    }
    int nbad = 0;
    for (int i = 0; i < k; i++) {
        if (bad)
            bad[i] = (unsigned char)(badv[i] != 0);
        nbad += badv[i] != 0;
    }
    free(badv);
    if (out_bad)
        *out_bad = res_bad;
    return nbad;
}
