// Rotary position embedding, Meta's interleaved convention, in place on fp32 rows (as layers_ref.c's rope):
// the pair (2i, 2i+1) of each head is the complex number re + i im, multiplied by e^(i t theta_i).
#include "common.cuh"

// One thread per (row, head, pair). direction = +1 forward, -1 backward: the rotation is orthogonal, so its
// gradient is the rotation by the opposite angle.
__global__ void rope_kernel(float *x, int T, int n_heads, int hd, int ld, const float *cos_t, const float *sin_t,
                            float direction, size_t total)
{
    int half = hd / 2;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t rh = idx / half; // row * n_heads + head
        int h = (int)(rh % n_heads);
        size_t row = rh / n_heads; // b * T + t
        int t = (int)(row % T);
        float *v = x + row * ld + (size_t)h * hd;
        float cs = cos_t[(size_t)t * half + i], sn = direction * sin_t[(size_t)t * half + i];
        float re = v[2 * i], im = v[2 * i + 1];
        v[2 * i] = re * cs - im * sn;
        v[2 * i + 1] = re * sn + im * cs;
    }
}

static int rope(flas_cuda *c, float *x, int B, int T, int n_heads, int hd, int ld, const float *cos_t,
                const float *sin_t, float direction)
{
    ARG_CHECK(c, B >= 0 && T > 0 && n_heads >= 0 && hd > 0 && hd % 2 == 0 && ld >= n_heads * hd);
    size_t total = (size_t)B * T * n_heads * (hd / 2);
    if (total == 0)
        return 0;
    rope_kernel<<<flas_grid_for(total, 256), 256, 0, c->stream>>>(x, T, n_heads, hd, ld, cos_t, sin_t, direction,
                                                                   total);
    LAUNCH_CHECK(c);
    return 0;
}

extern "C" int flas_cuda_rope_forward(flas_cuda *c, float *x, int B, int T, int n_heads, int hd, int ld,
                                      const float *cos, const float *sin)
{
    return rope(c, x, B, T, n_heads, hd, ld, cos, sin, 1.0f);
}

extern "C" int flas_cuda_rope_backward(flas_cuda *c, float *dx, int B, int T, int n_heads, int hd, int ld,
                                       const float *cos, const float *sin)
{
    return rope(c, dx, B, T, n_heads, hd, ld, cos, sin, -1.0f);
}
