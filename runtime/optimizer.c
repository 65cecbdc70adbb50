/* AdamW, gradient norm, and the learning-rate schedule, over flat buffers laid out by the param table. */
#include "flas/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memory.h"

float flas_lr_at(const flas_lr_schedule *s, long step)
{
    if (step < s->warmup_steps)
        return s->max_lr * (float)(step + 1) / (float)s->warmup_steps;
    if (step >= s->decay_steps)
        return s->min_lr;
    double progress = (double)(step - s->warmup_steps) / (double)(s->decay_steps - s->warmup_steps);
    double coeff = 0.5 * (1.0 + cos(M_PI * progress));
    return (float)(s->min_lr + coeff * (s->max_lr - s->min_lr));
}

int flas_adamw_init(flas_adamw *o, const flas_param_table *t, float beta1, float beta2, float eps,
                    float weight_decay)
{
    memset(o, 0, sizeof *o);
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    o->table = t;
    size_t bytes = (t->n_params ? t->n_params : 1) * sizeof(float);
    o->m = flas_alloc_floats(t->n_params);
    o->v = flas_alloc_floats(t->n_params);
    if (!o->m || !o->v) {
        flas_adamw_free(o);
        return -1;
    }
    /* Written now rather than left to calloc's lazy zero pages: the first step would otherwise pay
     * for faulting in 2 x 4 bytes per parameter. */
    memset(o->m, 0, bytes);
    memset(o->v, 0, bytes);
    return 0;
}

void flas_adamw_free(flas_adamw *o)
{
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

/* torch.optim.AdamW's update, element by element:
 *   p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps) */
void flas_adamw_step(flas_adamw *o, float *params, const float *grads, float lr)
{
    o->step++;
    float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    float bc1 = 1.0f - powf(b1, (float)o->step), bc2_sqrt = sqrtf(1.0f - powf(b2, (float)o->step));
    float step_size = lr / bc1;
    const flas_param_table *t = o->table;
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        float decay = x->ndim == 2 ? 1.0f - lr * o->weight_decay : 1.0f;
        float *p = params + x->offset, *m = o->m + x->offset, *v = o->v + x->offset;
        const float *g = grads + x->offset;
        size_t n = x->numel;
#pragma omp parallel for simd schedule(static)
        for (size_t j = 0; j < n; j++) {
            float gj = g[j];
            float mj = b1 * m[j] + (1.0f - b1) * gj;
            float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
            m[j] = mj;
            v[j] = vj;
            p[j] = p[j] * decay - step_size * mj / (sqrtf(vj) / bc2_sqrt + eps);
        }
    }
}

double flas_grad_sumsq_local(const flas_param_table *t, const float *grads)
{
    double total = 0.0;
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        if (x->shard == FLAS_TP_REPLICATED && t->tp_rank != 0)
            continue; /* replicated: rank 0 speaks for the group */
        const float *g = grads + x->offset;
        double s = 0.0;
#pragma omp parallel for simd reduction(+ : s) schedule(static)
        for (size_t j = 0; j < x->numel; j++)
            s += (double)g[j] * g[j];
        total += s;
    }
    return total;
}

void flas_scale(float *x, size_t n, float s)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++)
        x[i] *= s;
}

void flas_prox_grad(float *grads, const float *params, const float *anchor, size_t n, float mu)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        grads[i] += mu * (params[i] - anchor[i]);
}
