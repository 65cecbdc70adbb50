/* The LLaMA-2 model on one GPU (tensor-parallel size 1): the layer sequence of model.c's
 * flas_model_forward / flas_model_backward, on device buffers, through the kernels of kernels.h only.
 *
 * Parameters, gradients and AdamW moments are fp32 device buffers in the flas_param_table layout of
 * include/flas/model.h (flas_param_table_init with tp 0 of 1), so a checkpoint or a step-state file is
 * copied in and out as one array. A bf16 mirror of the whole parameter buffer (same offsets) holds the
 * matrix products' weight operands; it is refreshed by set_params and by every AdamW step.
 * Dtypes follow kernels.h's policy: bf16 for matmul operands (normed activations, attention output,
 * SwiGLU gate, every dout of a matmul backward, the weight copies), fp32 for everything else.
 *
 * Every function returns 0, or -1 with a one-line message that flas_cuda_model_error() returns. An
 * error in a CUDA call poisons the context (kernels.h): destroy the model and the context then.
 * Argument errors (batch shape, tokens outside the vocabulary) leave both usable.
 * Calls are queued on the context's stream; forward (the loss), the norm and the copies to the host
 * synchronise, so do backward and adamw_step (to report a kernel fault where it happened). */
#ifndef FLAS_CUDA_MODEL_CUDA_H
#define FLAS_CUDA_MODEL_CUDA_H

#include <stddef.h>

#include "kernels.h"
/* Relative to this file: the flas_cuda target's include path is runtime/ only. */
#include "../../include/flas/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct flas_cuda_model flas_cuda_model;

/* A model of shape cfg on ctx's device for batches of at most max_batch x max_seq (max_seq <= seq_len):
 * parameters and gradients (zeroed), their bf16 mirror, the activations, the RoPE tables. No AdamW
 * moments until flas_cuda_model_adamw_init. 0, or -1 with the reason in err and *out NULL. */
int flas_cuda_model_create(flas_cuda_model **out, flas_cuda *ctx, const flas_config *cfg, int max_batch,
                           int max_seq, char *err, size_t errlen);
void flas_cuda_model_destroy(flas_cuda_model *m);
const char *flas_cuda_model_error(const flas_cuda_model *m);
/* The layout of params, grads and moments (n_params floats each). */
const flas_param_table *flas_cuda_model_table(const flas_cuda_model *m);
/* Device memory the model holds, in bytes (not counting the context's workspace and scratch). */
size_t flas_cuda_model_device_bytes(const flas_cuda_model *m);
/* Device pointers, for callers that move data themselves (an allreduce, a checkpoint). */
float *flas_cuda_model_params(flas_cuda_model *m);
float *flas_cuda_model_grads(flas_cuda_model *m);

/* host[n_params] -> the fp32 parameters, and their bf16 mirror. */
int flas_cuda_model_set_params(flas_cuda_model *m, const float *host);
/* The fp32 parameters / gradients -> host[n_params]. */
int flas_cuda_model_get_params(flas_cuda_model *m, float *host);
int flas_cuda_model_get_grads(flas_cuda_model *m, float *host);
int flas_cuda_model_zero_grad(flas_cuda_model *m);

/* flas_model_forward: tokens and targets are HOST arrays of B*T ids (row b = sequence b), each in
 * [0, vocab). *loss = mean cross-entropy (sum over rows in double, as model.c); targets NULL: no loss
 * (*loss = NaN) and no backward. logits (host, may be NULL) receives the [B*T, vocab] logits before
 * the softmax. */
int flas_cuda_model_forward(flas_cuda_model *m, const int *tokens, const int *targets, int B, int T, float *loss,
                            float *logits);
/* flas_model_backward: grads += d(loss_scale * mean loss)/d(params) of the last forward with targets
 * (accumulates: zero_grad first for one step's gradient). */
int flas_cuda_model_backward(flas_cuda_model *m, float loss_scale);
/* flas_model_grad_norm: *norm = sqrtf((float)sum of squared gradients), the sum in double. */
int flas_cuda_model_grad_norm(flas_cuda_model *m, float *norm);
/* flas_model_clip_grad_norm: *norm as above (before clipping); grads *= max_norm / (norm + 1e-6) when
 * max_norm > 0 and that is < 1. */
int flas_cuda_model_clip_grad_norm(flas_cuda_model *m, float max_norm, float *norm);

/* flas_adamw_init: allocates the moments (zeroed), step count 0. Again: starts afresh. */
int flas_cuda_model_adamw_init(flas_cuda_model *m, float beta1, float beta2, float eps, float weight_decay);
/* flas_adamw_step: one step at lr over every tensor (weight decay on 2-D tensors only), then the bf16
 * mirror of the new parameters. */
int flas_cuda_model_adamw_step(flas_cuda_model *m, float lr);

#ifdef __cplusplus
}
#endif
#endif
