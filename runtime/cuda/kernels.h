/* The CUDA kernels of a LLaMA-2 training step: one family per file of runtime/cuda, each the device
 * counterpart of a layer of layers.h (same shapes, same accumulate-vs-overwrite rules) or of the
 * optimizer (optimizer.c). C-callable; tests/gpu/test_kernels.cu holds every family to layers_ref.c.
 *
 * Shapes as in layers.h: N = B*T token rows, D = model width, Hq/Hkv = query/key-value heads of this
 * rank, hd = head_dim, V = vocabulary. All arrays are row-major and live in device memory; tokens and
 * targets are device int arrays. Every call is asynchronous on the context's stream.
 *
 * DTYPE POLICY (first version). The rule: bf16 where a value is an operand of a matrix product on the
 * tensor cores, fp32 everywhere else.
 *   - fp32: master weights, gradients of parameters, AdamW moments (m, v), the residual stream and its
 *     gradient, rstd, losses, logits/probabilities, RoPE and attention (q, k, v, probs, out, and their
 *     gradients), h1/h3 of the FFN, RMSNorm and embedding weights (read as fp32 masters directly).
 *   - bf16 (operands of matmul): the bf16 copies of the matrix weights (written by the conversion or by
 *     AdamW), the normed activations (RMSNorm output), the attention output and the SwiGLU gate (after
 *     a conversion / as written by swiglu), and every `dout` of matmul_backward.
 *   - Matrix products: bf16 x bf16 with fp32 accumulation (CUBLAS_COMPUTE_32F); the output is fp32 or
 *     bf16 as the caller asks (flas_dtype), parameter gradients always fp32 (+=).
 *   - Reductions (RMSNorm statistics, softmax, losses) in fp32; the global gradient norm in double, as
 *     flas_grad_sumsq_local does on the CPU (it is memory-bound, fp64 costs nothing there).
 *   Kept in fp32 for now where bf16 would save memory: qkv, attention (plain fp32 cuBLAS batched
 *   products, no tensor cores: correct first, the fused bf16 flash-style kernel is the later target),
 *   h1/h3, the [N,V] logits. The functions whose output feeds a matrix product take a flas_dtype for it.
 *
 * ERRORS: every function returns 0, or nonzero after recording a message that flas_cuda_error() returns
 * (the first failing CUDA/cuBLAS call with file:line); nothing aborts the process. Kernel launches are
 * checked with cudaGetLastError; faults inside a kernel surface at the next synchronising call
 * (flas_cuda_sync). After an error the context should be destroyed (a sticky CUDA error poisons it). */
#ifndef FLAS_CUDA_KERNELS_H
#define FLAS_CUDA_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* bf16 storage: the upper half of an IEEE fp32 (1 sign, 8 exponent, 7 mantissa bits). Opaque 16 bits
 * for C; the .cu files read it as __nv_bfloat16. */
typedef uint16_t flas_bf16;

typedef enum flas_dtype { FLAS_F32 = 0, FLAS_BF16 = 1 } flas_dtype;

/* Handles (cuBLASLt, cuBLAS), the cuBLASLt workspace, scratch memory, the stream, the last error. */
typedef struct flas_cuda flas_cuda;

/* On the current device; stream 0 (the legacy default stream) is allowed. 0, or nonzero with *out NULL
 * (the message cannot be kept then: it is written to errbuf when errbuf is not NULL). */
int flas_cuda_create(flas_cuda **out, cudaStream_t stream, char *errbuf, size_t errlen);
void flas_cuda_destroy(flas_cuda *c);
const char *flas_cuda_error(const flas_cuda *c);
/* Waits for the stream; reports a fault of any kernel launched before. */
int flas_cuda_sync(flas_cuda *c);
/* Matrix products that cuBLASLt found no algorithm for and that ran through cublasGemmEx instead. */
long flas_cuda_matmul_fallbacks(const flas_cuda *c);

/* ---- conversion (convert.cu) ---- */
/* out[n] = bf16(in[n]), round to nearest even (NaN stays NaN) */
int flas_cuda_f32_to_bf16(flas_cuda *c, flas_bf16 *out, const float *in, size_t n);
/* out[n] = in[n] exactly */
int flas_cuda_bf16_to_f32(flas_cuda *c, float *out, const flas_bf16 *in, size_t n);

/* ---- matrix products through cuBLASLt (matmul.cu) ---- */
/* out[N,Nout] = in[N,Nin] . W[Nout,Nin]^T; in, W bf16; out fp32 or bf16 (out_type). */
int flas_cuda_matmul_forward(flas_cuda *c, void *out, flas_dtype out_type, const flas_bf16 *in,
                             const flas_bf16 *W, int N, int Nin, int Nout);
/* dW[Nout,Nin] (fp32) += alpha * dout[N,Nout]^T . in[N,Nin]  (skipped when dW is NULL);
 * din[N,Nin] = alpha * dout . W[Nout,Nin]  (+= when din_accumulate; skipped when din is NULL),
 * din fp32 or bf16 (din_type). dout, in, W bf16. */
int flas_cuda_matmul_backward(flas_cuda *c, void *din, flas_dtype din_type, float *dW, const flas_bf16 *dout,
                              const flas_bf16 *in, const flas_bf16 *W, int N, int Nin, int Nout, float alpha,
                              bool din_accumulate);

/* ---- embedding (embedding.cu); fp32 ---- */
/* out[N,D] = table[tokens[n]] (table [V,D]); a token outside [0,V) gives a row of NaN. */
int flas_cuda_embedding_forward(flas_cuda *c, float *out, const int *tokens, const float *table, int N, int D,
                                int V);
/* dtable[tokens[n]] += dout[n] for n in order: deterministic, the same additions in the same order as
 * layers_ref.c (so the same bits). Tokens outside [0,V) are skipped. */
int flas_cuda_embedding_backward(flas_cuda *c, float *dtable, const float *dout, const int *tokens, int N, int D,
                                 int V);

/* ---- RMSNorm (rmsnorm.cu) ---- */
/* out[N,D] = x * rstd * w, rstd[N] = 1/sqrt(mean(x^2) + eps) (saved). x, w, rstd fp32; out fp32 or bf16. */
int flas_cuda_rmsnorm_forward(flas_cuda *c, void *out, flas_dtype out_type, float *rstd, const float *x,
                              const float *w, int N, int D, float eps);
/* dx[N,D] += d(out)/dx . dout;  dw[D] += sum_n dout*x*rstd (deterministic). All fp32. */
int flas_cuda_rmsnorm_backward(flas_cuda *c, float *dx, float *dw, const float *dout, const float *x,
                               const float *w, const float *rstd, int N, int D);

/* ---- rotary embedding (rope.cu); fp32, in place ---- */
/* n_heads heads of hd columns at the start of each of the B*T rows (row stride ld), position t = row % T,
 * pairs (2i, 2i+1) rotated by t * theta^(-2i/hd): cos/sin tables [T, hd/2]. Backward: by -angle. */
int flas_cuda_rope_forward(flas_cuda *c, float *x, int B, int T, int n_heads, int hd, int ld, const float *cos,
                           const float *sin);
int flas_cuda_rope_backward(flas_cuda *c, float *dx, int B, int T, int n_heads, int hd, int ld,
                            const float *cos, const float *sin);

/* ---- causal grouped-query attention (attention.cu); fp32 ---- */
/* As layers.h: q, k, v rows of stride ld (q head h at column h*hd, k/v head g at g*hd), query head h
 * reads kv head h / (Hq/Hkv); out[N, Hq*hd]; probs[B,Hq,T,T] saved (entries j > i are written as 0). */
int flas_cuda_attention_forward(flas_cuda *c, float *out, float *probs, const float *q, const float *k,
                                const float *v, int ld, int B, int T, int Hq, int Hkv, int hd);
/* dq, dk, dv (stride ld) overwritten; dprobs[B,Hq,T,T] scratch. dout [N, Hq*hd]. */
int flas_cuda_attention_backward(flas_cuda *c, float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                                 const float *probs, const float *q, const float *k, const float *v, int ld,
                                 int B, int T, int Hq, int Hkv, int hd);

/* ---- SwiGLU gate (swiglu.cu) ---- */
/* g = silu(h1) * h3 over n elements; h1, h3 fp32; g fp32 or bf16 (g_type). */
int flas_cuda_swiglu_forward(flas_cuda *c, void *g, flas_dtype g_type, const float *h1, const float *h3,
                             size_t n);
/* dh1 = dg * h3 * silu'(h1), dh3 = dg * silu(h1) (overwritten); dg, h1, h3 fp32; dh1, dh3 fp32 or bf16. */
int flas_cuda_swiglu_backward(flas_cuda *c, void *dh1, void *dh3, flas_dtype d_type, const float *dg,
                              const float *h1, const float *h3, size_t n);

/* ---- fused softmax + cross-entropy (xent.cu); fp32, in place ---- */
/* logits[N,V] become the probabilities; losses[N] = logsumexp(row) - row[targets[n]]
 * (NaN for a target outside [0,V)). */
int flas_cuda_xent_forward(flas_cuda *c, float *logits, float *losses, const int *targets, int N, int V);
/* probs[N,V] become probs - onehot(targets), in place (rows with a target outside [0,V) unchanged). */
int flas_cuda_xent_backward(flas_cuda *c, float *probs, const int *targets, int N, int V);

/* ---- global gradient norm and clipping (global_norm.cu) ---- */
/* *sumsq (device double) = (accumulate ? *sumsq : 0) + sum x[i]^2, in double, deterministic: a fixed
 * grid (independent of the device) and a fixed order of the final reduction. */
int flas_cuda_sumsq(flas_cuda *c, double *sumsq, const float *x, size_t n, bool accumulate);
/* x[0..n) *= s */
int flas_cuda_scale(flas_cuda *c, float *x, size_t n, float s);
/* flas_model_clip_grad_norm's rule from a device-side sum of squares, without a host round trip:
 * coef = max_norm / (sqrtf((float)*sumsq) + 1e-6f); x *= coef when max_norm > 0 and coef < 1. */
int flas_cuda_clip(flas_cuda *c, float *x, size_t n, const double *sumsq, float max_norm);

/* ---- residual connection (residual.cu); fp32 ---- */
/* out[i] = a[i] + b[i] over n elements (out may alias a or b): one fp32 addition, the bits of model.c's
 * residual_add. */
int flas_cuda_residual_add(flas_cuda *c, float *out, const float *a, const float *b, size_t n);

/* ---- AdamW (adamw.cu); fp32 ---- */
/* flas_adamw_step's update of one tensor of n elements: step counts from 1 (the step after increment),
 * weight_decay is the decay of this tensor (0 for 1-D tensors, as optimizer.c does):
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p = p (1 - lr wd) - (lr / (1-b1^step)) m / (sqrt(v) / sqrt(1-b2^step) + eps)
 * and, when p_bf16 is not NULL, p_bf16 = bf16(p) (round to nearest even). */
int flas_cuda_adamw(flas_cuda *c, float *p, float *m, float *v, const float *g, flas_bf16 *p_bf16, size_t n,
                    float lr, float beta1, float beta2, float eps, float weight_decay, long step);

#ifdef __cplusplus
}
#endif
#endif
