/* Reference layers: plain loops, one output element at a time, sums in double.
 * Slow and obviously correct; tests hold the fast path (layers.c) to these results. */
#include <math.h>
#include <string.h>

#include "layers.h"

static void matmul_forward(float *out, const float *in, const float *W, int N, int Nin, int Nout)
{
    for (int n = 0; n < N; n++)
        for (int o = 0; o < Nout; o++) {
            double s = 0.0;
            for (int i = 0; i < Nin; i++)
                s += (double)in[(size_t)n * Nin + i] * W[(size_t)o * Nin + i];
            out[(size_t)n * Nout + o] = (float)s;
        }
}

static void matmul_backward(float *din, float *dW, const float *dout, const float *in, const float *W,
                            int N, int Nin, int Nout, float alpha, bool din_accumulate)
{
    if (din)
        for (int n = 0; n < N; n++)
            for (int i = 0; i < Nin; i++) {
                double s = 0.0;
                for (int o = 0; o < Nout; o++)
                    s += (double)dout[(size_t)n * Nout + o] * W[(size_t)o * Nin + i];
                float *d = &din[(size_t)n * Nin + i];
                *d = (din_accumulate ? *d : 0.0f) + (float)(alpha * s);
            }
    for (int o = 0; o < Nout; o++)
        for (int i = 0; i < Nin; i++) {
            double s = 0.0;
            for (int n = 0; n < N; n++)
                s += (double)dout[(size_t)n * Nout + o] * in[(size_t)n * Nin + i];
            dW[(size_t)o * Nin + i] += (float)(alpha * s);
        }
}

static void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                            float eps)
{
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D;
        double ss = 0.0;
        for (int d = 0; d < D; d++)
            ss += (double)xn[d] * xn[d];
        float r = (float)(1.0 / sqrt(ss / D + eps));
        rstd[n] = r;
        for (int d = 0; d < D; d++)
            out[(size_t)n * D + d] = xn[d] * r * w[d];
    }
}

/* y_d = x_d r w_d with r = (mean(x^2)+eps)^(-1/2):  dx_j = r (dy_j w_j) - r^3/D x_j sum_d dy_d w_d x_d */
static void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                             const float *rstd, int N, int D)
{
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D, *dy = dout + (size_t)n * D;
        double r = rstd[n], dot = 0.0;
        for (int d = 0; d < D; d++)
            dot += (double)dy[d] * w[d] * xn[d];
        for (int d = 0; d < D; d++) {
            dx[(size_t)n * D + d] += (float)(r * dy[d] * w[d] - r * r * r / D * xn[d] * dot);
            dw[d] += (float)(dy[d] * xn[d] * r);
        }
    }
}

static void rope(float *x, int B, int T, int n_heads, int hd, int ld, const float *cos_t,
                 const float *sin_t, float direction)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)b * T + t) * ld + (size_t)h * hd;
                for (int i = 0; i < hd / 2; i++) {
                    float c = cos_t[(size_t)t * (hd / 2) + i], s = direction * sin_t[(size_t)t * (hd / 2) + i];
                    float re = v[2 * i], im = v[2 * i + 1];
                    v[2 * i] = re * c - im * s;
                    v[2 * i + 1] = re * s + im * c;
                }
            }
}

static void rope_forward(float *x, int B, int T, int n_heads, int hd, int ld, const float *c, const float *s)
{
    rope(x, B, T, n_heads, hd, ld, c, s, 1.0f);
}

/* The rotation is orthogonal: its gradient is the rotation by the opposite angle. */
static void rope_backward(float *dx, int B, int T, int n_heads, int hd, int ld, const float *c, const float *s)
{
    rope(dx, B, T, n_heads, hd, ld, c, s, -1.0f);
}

static void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                              int ld, int B, int T, int Hq, int Hkv, int hd)
{
    int group = Hq / Hkv, ldo = Hq * hd;
    double scale = 1.0 / sqrt((double)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++) {
            int g = h / group;
            float *P = probs + ((size_t)b * Hq + h) * T * T;
            for (int i = 0; i < T; i++) {
                const float *qi = q + ((size_t)b * T + i) * ld + (size_t)h * hd;
                double maxv = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    const float *kj = k + ((size_t)b * T + j) * ld + (size_t)g * hd;
                    double s = 0.0;
                    for (int e = 0; e < hd; e++)
                        s += (double)qi[e] * kj[e];
                    P[(size_t)i * T + j] = (float)(s * scale);
                    if (s * scale > maxv)
                        maxv = s * scale;
                }
                double sum = 0.0;
                for (int j = 0; j <= i; j++)
                    sum += exp(P[(size_t)i * T + j] - maxv);
                for (int j = 0; j < T; j++)
                    P[(size_t)i * T + j] = j <= i ? (float)(exp(P[(size_t)i * T + j] - maxv) / sum) : 0.0f;
                float *oi = out + ((size_t)b * T + i) * ldo + (size_t)h * hd;
                for (int e = 0; e < hd; e++) {
                    double acc = 0.0;
                    for (int j = 0; j <= i; j++)
                        acc += (double)P[(size_t)i * T + j] * v[((size_t)b * T + j) * ld + (size_t)g * hd + e];
                    oi[e] = (float)acc;
                }
            }
        }
}

static void attention_backward(float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                               const float *probs, const float *q, const float *k, const float *v, int ld,
                               int B, int T, int Hq, int Hkv, int hd)
{
    int group = Hq / Hkv, ldo = Hq * hd;
    double scale = 1.0 / sqrt((double)hd);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            memset(dk + ((size_t)b * T + t) * ld, 0, sizeof(float) * Hkv * hd);
            memset(dv + ((size_t)b * T + t) * ld, 0, sizeof(float) * Hkv * hd);
        }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < Hq; h++) {
            int g = h / group;
            const float *P = probs + ((size_t)b * Hq + h) * T * T;
            float *dP = dprobs + ((size_t)b * Hq + h) * T * T;
            for (int i = 0; i < T; i++) {
                const float *doi = dout + ((size_t)b * T + i) * ldo + (size_t)h * hd;
                /* out_i = sum_j P_ij v_j  =>  dP_ij = dout_i . v_j,  dv_j += P_ij dout_i */
                for (int j = 0; j <= i; j++) {
                    const float *vj = v + ((size_t)b * T + j) * ld + (size_t)g * hd;
                    float *dvj = dv + ((size_t)b * T + j) * ld + (size_t)g * hd;
                    double s = 0.0;
                    for (int e = 0; e < hd; e++) {
                        s += (double)doi[e] * vj[e];
                        dvj[e] += P[(size_t)i * T + j] * doi[e];
                    }
                    dP[(size_t)i * T + j] = (float)s;
                }
                /* softmax: dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik); S_ij = scale q_i . k_j */
                double dot = 0.0;
                for (int j = 0; j <= i; j++)
                    dot += (double)P[(size_t)i * T + j] * dP[(size_t)i * T + j];
                const float *qi = q + ((size_t)b * T + i) * ld + (size_t)h * hd;
                float *dqi = dq + ((size_t)b * T + i) * ld + (size_t)h * hd;
                for (int e = 0; e < hd; e++)
                    dqi[e] = 0.0f;
                for (int j = 0; j <= i; j++) {
                    double ds = P[(size_t)i * T + j] * (dP[(size_t)i * T + j] - dot) * scale;
                    const float *kj = k + ((size_t)b * T + j) * ld + (size_t)g * hd;
                    float *dkj = dk + ((size_t)b * T + j) * ld + (size_t)g * hd;
                    for (int e = 0; e < hd; e++) {
                        dqi[e] += (float)(ds * kj[e]);
                        dkj[e] += (float)(ds * qi[e]);
                    }
                }
            }
        }
}

static void swiglu_forward(float *g, const float *h1, const float *h3, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = (float)(h1[i] / (1.0 + exp(-(double)h1[i])) * h3[i]);
}

/* silu'(x) = s (1 + x (1 - s)) with s = sigmoid(x) */
static void swiglu_backward(float *dh1, float *dh3, const float *dg, const float *h1, const float *h3,
                            size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double x = h1[i], s = 1.0 / (1.0 + exp(-x));
        dh1[i] = (float)(dg[i] * h3[i] * s * (1.0 + x * (1.0 - s)));
        dh3[i] = (float)(dg[i] * x * s);
    }
}

static void embedding_forward(float *out, const int *tokens, const float *table, int N, int D)
{
    for (int n = 0; n < N; n++)
        memcpy(out + (size_t)n * D, table + (size_t)tokens[n] * D, sizeof(float) * D);
}

static void embedding_backward(float *dtable, const float *dout, const int *tokens, int N, int D)
{
    for (int n = 0; n < N; n++)
        for (int d = 0; d < D; d++)
            dtable[(size_t)tokens[n] * D + d] += dout[(size_t)n * D + d];
}

static void xent_forward(float *logits, float *losses, const int *targets, int N, int V)
{
    for (int n = 0; n < N; n++) {
        float *row = logits + (size_t)n * V;
        double maxv = row[0];
        for (int i = 1; i < V; i++)
            if (row[i] > maxv)
                maxv = row[i];
        double sum = 0.0;
        for (int i = 0; i < V; i++)
            sum += exp(row[i] - maxv);
        losses[n] = (float)(log(sum) + maxv - row[targets[n]]);
        for (int i = 0; i < V; i++)
            row[i] = (float)(exp(row[i] - maxv) / sum);
    }
}

static void xent_backward(float *probs, const int *targets, int N, int V)
{
    for (int n = 0; n < N; n++)
        probs[(size_t)n * V + targets[n]] -= 1.0f;
}

const flas_kernels flas_kernels_reference = {
    .name = "reference",
    .matmul_forward = matmul_forward,
    .matmul_backward = matmul_backward,
    .rmsnorm_forward = rmsnorm_forward,
    .rmsnorm_backward = rmsnorm_backward,
    .rope_forward = rope_forward,
    .rope_backward = rope_backward,
    .attention_forward = attention_forward,
    .attention_backward = attention_backward,
    .swiglu_forward = swiglu_forward,
    .swiglu_backward = swiglu_backward,
    .embedding_forward = embedding_forward,
    .embedding_backward = embedding_backward,
    .xent_forward = xent_forward,
    .xent_backward = xent_backward,
};
