// AdamW on fp32 master weights and moments: flas_adamw_step's update (optimizer.c), one tensor per call,
// optionally writing the bf16 copy of the updated weights that the matrix products read.
#include <math.h>

#include "common.cuh"

// The scalars are computed once on the host with optimizer.c's very expressions (powf, sqrtf in float),
// so that the per-element arithmetic below is the CPU's.
__global__ void adamw_kernel(float *p, float *m, float *v, const float *g, __nv_bfloat16 *p_bf16, size_t n,
                             float b1, float one_minus_b1, float b2, float one_minus_b2, float eps, float step_size,
                             float bc2_sqrt, float decay)
{
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x) {
        float gj = g[j];
        float mj = b1 * m[j] + one_minus_b1 * gj;
        float vj = b2 * v[j] + one_minus_b2 * gj * gj;
        m[j] = mj;
        v[j] = vj;
        float pj = p[j] * decay - step_size * mj / (sqrtf(vj) / bc2_sqrt + eps);
        p[j] = pj;
        if (p_bf16)
            p_bf16[j] = __float2bfloat16_rn(pj);
    }
}

extern "C" int flas_cuda_adamw(flas_cuda *c, float *p, float *m, float *v, const float *g, flas_bf16 *p_bf16,
                               size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, long step)
{
    ARG_CHECK(c, step >= 1);
    if (n == 0)
        return 0;
    float bc1 = 1.0f - powf(beta1, (float)step), bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)step));
    float step_size = lr / bc1;
    float decay = 1.0f - lr * weight_decay; // optimizer.c passes wd = 0 for 1-D tensors: decay 1 exactly
    adamw_kernel<<<flas_grid_for(n, 256), 256, 0, c->stream>>>(p, m, v, g, (__nv_bfloat16 *)p_bf16, n, beta1,
                                                                1.0f - beta1, beta2, 1.0f - beta2, eps, step_size,
                                                                bc2_sqrt, decay);
    LAUNCH_CHECK(c);
    return 0;
}
