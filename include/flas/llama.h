/* LLaMA-2 training core on the CPU: one rank's shard of the model, forward and backward.
 *
 * Lifecycle of one optimizer step with K micro-batches (see optim.h for AdamW and the schedule):
 *
 *     flas_model_zero_grad(m);
 *     for (k = 0; k < K; k++) {
 *         flas_model_forward(m, tokens_k, targets_k, B, T, &loss, NULL);
 *         flas_model_backward(m, 1.0f / K);          // grads += d(loss/K)/d(params)
 *     }
 *     // data parallel: allreduce-average m->grads (m->table.n_params floats) here
 *     norm = flas_model_clip_grad_norm(m, 1.0f);
 *     flas_adamw_step(&opt, m->params, m->grads, flas_lr_at(&sched, step));
 *
 * Memory: params and grads are each ONE contiguous float buffer laid out by m->table
 * (flas_param_table_init), so allreduce, checkpoint I/O and FedAvg work on flat buffers.
 *
 * Tensor parallelism (Megatron): with tp_size > 1 the model holds this rank's heads and FFN slice
 * (wq/wk/wv/w1/w3 split by output rows, wo/w2 by input columns; the rest replicated). The core calls
 * m->allreduce_sum (sum over the tp group, in place) four times per block and pass: on the partial
 * outputs of wo and w2 in forward, and on the partial input gradients of the wq/wk/wv and w1/w3
 * products in backward. Gradients of replicated tensors then come out identical on every tp rank;
 * no further tp reduction of grads is needed. The core itself links no MPI. */
#ifndef FLAS_LLAMA_H
#define FLAS_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "flas/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sum buf[0..n) over the tensor-parallel group, in place (e.g. MPI_Allreduce with MPI_IN_PLACE). */
typedef void (*flas_allreduce_fn)(float *buf, size_t n, void *ctx);

/* Initial weights: normal(0, FLAS_INIT_STD) for embeddings, output head and wq/wk/wv/w1/w3;
 * normal(0, FLAS_INIT_STD / sqrt(2 * n_layers)) for the residual-branch outputs wo and w2 (GPT-2's
 * scaling, so the residual stream's variance does not grow with depth); ones for the RMSNorm weights. */
#define FLAS_INIT_STD 0.02f

struct flas_kernels;
struct flas_acts;

/* Arithmetic of the matrix products. Master weights, gradients and optimizer state are fp32 in both;
 * bf16 is mixed precision: the products take bf16-rounded operands and accumulate in fp32. */
typedef enum flas_precision {
    FLAS_PRECISION_FP32 = 0,
    FLAS_PRECISION_BF16 = 1
} flas_precision;
/* "fp32" / "bf16" -> 0, else -1. And back. */
int flas_precision_parse(const char *name, flas_precision *out);
const char *flas_precision_name(flas_precision p);

typedef struct flas_model {
    flas_config cfg;
    flas_param_table table;       /* this rank's tensors within params/grads */
    int tp_rank, tp_size;
    int n_threads;                /* OpenMP threads used by forward/backward */
    int max_batch, max_seq;       /* activation capacity: forward takes B <= max_batch, T <= max_seq */
    float *params;                /* table.n_params floats, 64-byte aligned */
    float *grads;                 /* same layout; backward accumulates here */
    flas_allreduce_fn allreduce_sum; /* required when tp_size > 1, unused otherwise */
    void *allreduce_ctx;
    const struct flas_kernels *kernels; /* fast path (fp32 or bf16 products), or the plain-loop reference */
    flas_precision precision;
    struct flas_acts *acts;       /* saved activations and scratch (private) */
    char err[256];                /* why the last call failed */
} flas_model;

/* Allocates params, grads and the activations for batches up to max_batch x max_seq
 * (max_seq <= cfg->seq_len). n_threads <= 0 means all processors. Calls flas_threads_setup
 * (blas_info.h): OpenBLAS is switched to one thread per call for the whole process, since the core
 * splits products over its own OpenMP threads; forward, backward and the norm functions set the
 * calling thread's OpenMP thread count to n_threads. 0, or -1 with err set. */
int flas_model_create(flas_model *m, const flas_config *cfg, int tp_rank, int tp_size, int max_batch,
                      int max_seq, int n_threads, char *err, size_t errlen);
void flas_model_free(flas_model *m);
void flas_model_set_allreduce(flas_model *m, flas_allreduce_fn fn, void *ctx);
/* 1: run the plain-loop reference layers (slow; the oracle for the fast path), 0: fast layers of the
 * model's precision. */
void flas_model_use_reference(flas_model *m, int on);
/* Selects the fast layers of precision p (fp32 at creation). bf16 runs its products through oneDNN and
 * needs a processor with AVX512-BF16 or AMX: else -1 with the reason in err and nothing changed. */
int flas_model_set_precision(flas_model *m, flas_precision p, char *err, size_t errlen);

/* Deterministic init (see FLAS_INIT_STD): every element is a function of (seed, tensor, index in the
 * FULL tensor), so any thread count and any tp layout get the same model. Zeroes the grads. */
void flas_model_init_weights(flas_model *m, uint64_t seed);

/* tokens[B*T] (row b is one sequence, positions 0..T-1); targets[B*T] or NULL.
 * With targets: *loss = mean cross-entropy over the B*T positions, and the activations are kept for
 * flas_model_backward. logits (may be NULL): receives [B*T, vocab_size] floats.
 * 0, or -1 with m->err set (token outside the vocabulary, B or T outside the capacity). */
int flas_model_forward(flas_model *m, const int *tokens, const int *targets, int B, int T, float *loss,
                       float *logits);
/* grads += loss_scale * d(mean loss of the last forward)/d(params). Use loss_scale = 1/K for K
 * micro-batches of gradient accumulation. Needs a forward with targets since the last backward. */
int flas_model_backward(flas_model *m, float loss_scale);
void flas_model_zero_grad(flas_model *m);
/* Global L2 norm of the gradients over the whole (tp-sharded) model; uses allreduce_sum when
 * tp_size > 1. Call after any data-parallel averaging. */
float flas_model_grad_norm(flas_model *m);
/* Scales the grads so their global norm is at most max_norm (max_norm <= 0: no clipping). Returns the
 * norm before clipping. */
float flas_model_clip_grad_norm(flas_model *m, float max_norm);

/* Training FLOPs per token at context T for the whole model: 6 * (parameters used in matrix products,
 * i.e. all but the input embedding and the norms; a tied head counts once) + 12 * n_layers * T * dim
 * for attention scores and values (full, not halved for causality: the usual convention). */
double flas_model_flops_per_token(const flas_config *c, int T);
/* Bytes of activations and scratch this model allocated (for memory-per-token reports). */
size_t flas_model_activation_bytes(const flas_model *m);

#ifdef __cplusplus
}
#endif
#endif
