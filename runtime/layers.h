/* The layers of a LLaMA-2 block as forward/backward pairs over flat row-major float arrays.
 *
 * Implementations share these signatures: flas_kernels_fast (BLAS + OpenMP, layers.c),
 * flas_kernels_bf16 (the same with bf16 matrix products, layers.c) and flas_kernels_reference (plain
 * loops, layers_ref.c), the readable oracle that tests compare the others against. The model driver (model.c) calls one of them through this table, so both run the very
 * same sequence of layers. Shapes: N = B*T token rows, D = model width, Hq/Hkv = query/key-value heads
 * of this rank, hd = head_dim. Backward functions ACCUMULATE into parameter gradients (+=) and, where
 * stated, into input gradients; everything else is overwritten. */
#ifndef FLAS_LAYERS_H
#define FLAS_LAYERS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct flas_kernels {
    const char *name;
    /* out[N,Nout] = in[N,Nin] . W[Nout,Nin]^T  (a Linear layer without bias, W as [out_features, in_features]) */
    void (*matmul_forward)(float *out, const float *in, const float *W, int N, int Nin, int Nout);
    /* dW[Nout,Nin] += alpha * dout[N,Nout]^T . in[N,Nin];
     * din[N,Nin] = alpha * dout . W  (+= when din_accumulate; skipped when din is NULL).
     * alpha lets the caller fold a loss scale into the product instead of a pass over dout. */
    void (*matmul_backward)(float *din, float *dW, const float *dout, const float *in, const float *W,
                            int N, int Nin, int Nout, float alpha, bool din_accumulate);
    /* out[N,D] = x * rstd * w with rstd[N] = 1/sqrt(mean(x^2) + eps) (saved for backward) */
    void (*rmsnorm_forward)(float *out, float *rstd, const float *x, const float *w, int N, int D,
                            float eps);
    /* dx[N,D] += d(out)/dx . dout (dx is the residual stream's gradient); dw[D] += sum_n dout*x*rstd */
    void (*rmsnorm_backward)(float *dx, float *dw, const float *dout, const float *x, const float *w,
                             const float *rstd, int N, int D);
    /* Rotary embedding in place on n_heads heads of each row (row stride ld) at position t = row % T.
     * Meta's convention: dimensions (2i, 2i+1) of a head form one complex number that is rotated by
     * the angle t * theta^(-2i/hd); cos/sin tables are [T, hd/2]. Backward rotates by -angle. */
    void (*rope_forward)(float *x, int B, int T, int n_heads, int hd, int ld, const float *cos,
                         const float *sin);
    void (*rope_backward)(float *dx, int B, int T, int n_heads, int hd, int ld, const float *cos,
                          const float *sin);
    /* Causal attention with grouped-query heads. q, k, v: rows of stride ld, q head h at column h*hd,
     * k/v head g at g*hd; query head h reads key/value head h / (Hq/Hkv) by index (no copies).
     * out[N, Hq*hd]; probs[B, Hq, T, T] keeps the softmax for backward: entries j <= i of row i are
     * defined (the rest of the row is layout padding that implementations may leave unwritten). */
    void (*attention_forward)(float *out, float *probs, const float *q, const float *k, const float *v,
                              int ld, int B, int T, int Hq, int Hkv, int hd);
    /* dq, dk, dv (stride ld) are overwritten; dprobs[B, Hq, T, T] is scratch. */
    void (*attention_backward)(float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                               const float *probs, const float *q, const float *k, const float *v, int ld,
                               int B, int T, int Hq, int Hkv, int hd);
    /* SwiGLU gate: g = silu(h1) * h3, silu(x) = x * sigmoid(x); n elements. */
    void (*swiglu_forward)(float *g, const float *h1, const float *h3, size_t n);
    void (*swiglu_backward)(float *dh1, float *dh3, const float *dg, const float *h1, const float *h3,
                            size_t n);
    /* out[N,D] = table[tokens[n]];  dtable[tokens[n]] += dout[n] */
    void (*embedding_forward)(float *out, const int *tokens, const float *table, int N, int D);
    void (*embedding_backward)(float *dtable, const float *dout, const int *tokens, int N, int D);
    /* Fused softmax + cross-entropy, in place so the [N,V] matrix exists once: logits become the
     * probabilities, losses[n] = logsumexp(logits[n]) - logits[n][targets[n]]. */
    void (*xent_forward)(float *logits, float *losses, const int *targets, int N, int V);
    /* probs become d(sum of losses)/d(logits) = probs - onehot(targets), in place. */
    void (*xent_backward)(float *probs, const int *targets, int N, int V);
    /* Optional (NULL: the layers cannot fail): -1 with err when a layer failed since the last call
     * (the bf16 products allocate and can run out of memory), and clears it. */
    int (*status)(char *err, size_t errlen);
} flas_kernels;

extern const flas_kernels flas_kernels_fast;
extern const flas_kernels flas_kernels_reference;
/* The fast layers with bf16 matrix products (fp32 accumulation) through oneDNN; see layers.c. */
extern const flas_kernels flas_kernels_bf16;

#endif
