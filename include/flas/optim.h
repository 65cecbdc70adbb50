/* Optimizer: AdamW over the flat parameter buffer, global-norm gradient clipping, LR schedule. */
#ifndef FLAS_OPTIM_H
#define FLAS_OPTIM_H

#include <stddef.h>

#include "flas/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Linear warmup from max_lr/warmup_steps to max_lr over steps 0..warmup_steps-1, then cosine decay to
 * min_lr at decay_steps, then min_lr. Steps count from 0. */
typedef struct flas_lr_schedule {
    float max_lr, min_lr;
    long warmup_steps, decay_steps;
} flas_lr_schedule;

float flas_lr_at(const flas_lr_schedule *s, long step);

/* AdamW as in Loshchilov & Hutter / torch.optim.AdamW: decoupled weight decay p -= lr*wd*p, moments
 * with bias correction. Weight decay applies to matrices (2-D tensors: embeddings, projections, head)
 * and not to RMSNorm weights, the usual LLaMA recipe. m and v are flat buffers with the param
 * table's layout (same offsets as params), so they can be checkpointed or sharded like params. */
typedef struct flas_adamw {
    float beta1, beta2, eps, weight_decay;
    long step;                       /* steps taken (bias correction uses step after increment) */
    const flas_param_table *table;   /* layout of params, grads, m, v */
    float *m, *v;                    /* table->n_params floats each, zeroed by init */
} flas_adamw;

/* 0, or -1 if memory is short. */
int flas_adamw_init(flas_adamw *o, const flas_param_table *t, float beta1, float beta2, float eps,
                    float weight_decay);
void flas_adamw_free(flas_adamw *o);
void flas_adamw_step(flas_adamw *o, float *params, const float *grads, float lr);

/* Sum of squared gradients this rank contributes to the global norm: tensors split across the tp
 * group count fully, replicated tensors only on tp rank 0, so a sum over the group is the global
 * value (with tp_size 1 it is the global value). */
double flas_grad_sumsq_local(const flas_param_table *t, const float *grads);
/* FedProx (Li et al., MLSys 2020): grads[0..n) += mu (params - anchor), the gradient of
 * mu/2 ||params - anchor||^2 that pulls a site's weights toward the round's global (anchor). */
void flas_prox_grad(float *grads, const float *params, const float *anchor, size_t n, float mu);
/* x[0..n) *= s (OpenMP). */
void flas_scale(float *x, size_t n, float s);

#ifdef __cplusplus
}
#endif
#endif
