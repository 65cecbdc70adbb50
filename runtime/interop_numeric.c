/* Element conversions and the RoPE row permutation of the converter (flas/interop.h). Plain loops: the
 * converter is bound by disk bandwidth, and these are the reference the tests hold files to. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "flas/bf16.h"
#include "flas/interop.h"
#include "interop_internal.h"

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t flas_f32_to_bf16(float x) { return flas_bf16_of(x); }

float flas_bf16_to_f32(uint16_t b) { return flas_float_of_bf16(b); }

static inline uint16_t f16_of(float x)
{
    uint32_t u = bits_of(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00u;                          /* NaN */
    if (a >= 0x477ff000u)                               /* >= 65520 rounds to infinity */
        return sign | 0x7c00u;
    if (a < 0x38800000u) {                              /* below 2^-14: subnormal half (or zero) */
        /* a * 2^24 as an integer, rounded to nearest even: the subnormal's mantissa. */
        float f = float_of(a) * 16777216.0f;            /* exact: a power-of-two scaling */
        float r = nearbyintf(f);                        /* default rounding mode: ties to even */
        return sign | (uint16_t)r;
    }
    uint32_t e = (a >> 23) - 127 + 15, m = a & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    uint32_t rest = m & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
        h++;                                            /* may carry into the exponent: still right */
    return sign | (uint16_t)h;
}

uint16_t flas_f32_to_f16(float x) { return f16_of(x); }

void ix_to_half(const float *x, size_t n, flas_dtype dt, unsigned char *out)
{
    /* The conversions inline here: per-element calls made f16 GGUF export CPU-bound (56% of its time). */
    if (dt == FLAS_DT_F16)
        for (size_t i = 0; i < n; i++) {
            uint16_t h = f16_of(x[i]);
            out[2 * i] = (unsigned char)(h & 0xff);
            out[2 * i + 1] = (unsigned char)(h >> 8);
        }
    else
        for (size_t i = 0; i < n; i++) {
            uint16_t h = flas_bf16_of(x[i]);
            out[2 * i] = (unsigned char)(h & 0xff);
            out[2 * i + 1] = (unsigned char)(h >> 8);
        }
}

float flas_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f)
        return float_of(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f);      /* m * 2^-24, exact */
        return sign ? -v : v;
    }
    return float_of(sign | ((e - 15 + 127) << 23) | (m << 13));
}

void flas_q8_0_quantize(const float *x, size_t n, unsigned char *out)
{
    for (size_t b = 0; b < n / FLAS_Q8_0_BLOCK; b++, x += FLAS_Q8_0_BLOCK, out += FLAS_Q8_0_BYTES) {
        float amax = 0.0f;
        for (int j = 0; j < FLAS_Q8_0_BLOCK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = flas_f32_to_f16(d);
        out[0] = (unsigned char)(h & 0xff);
        out[1] = (unsigned char)(h >> 8);
        for (int j = 0; j < FLAS_Q8_0_BLOCK; j++)
            out[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
    }
}

void flas_q8_0_dequantize(const unsigned char *in, size_t n, float *x)
{
    for (size_t b = 0; b < n / FLAS_Q8_0_BLOCK; b++, x += FLAS_Q8_0_BLOCK, in += FLAS_Q8_0_BYTES) {
        const float d = flas_f16_to_f32((uint16_t)(in[0] | in[1] << 8));
        for (int j = 0; j < FLAS_Q8_0_BLOCK; j++)
            x[j] = (float)(int8_t)in[2 + j] * d;
    }
}

size_t ix_dtype_size(flas_dtype dt)
{
    switch (dt) {
    case FLAS_DT_F32: return 4;
    case FLAS_DT_F16:
    case FLAS_DT_BF16: return 2;
    default: return 0;
    }
}

void ix_to_f32(const unsigned char *in, size_t n, flas_dtype dt, float *out)
{
    switch (dt) {
    case FLAS_DT_F32:
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)in[4 * i] | (uint32_t)in[4 * i + 1] << 8 | (uint32_t)in[4 * i + 2] << 16 |
                         (uint32_t)in[4 * i + 3] << 24;
            out[i] = float_of(u);
        }
        break;
    case FLAS_DT_F16:
        for (size_t i = 0; i < n; i++)
            out[i] = flas_f16_to_f32((uint16_t)(in[2 * i] | in[2 * i + 1] << 8));
        break;
    case FLAS_DT_BF16:
        for (size_t i = 0; i < n; i++)
            out[i] = flas_bf16_to_f32((uint16_t)(in[2 * i] | in[2 * i + 1] << 8));
        break;
    default: break;
    }
}

/* Row r of head h in the interleaved order is pair j = r / 2, member c = r % 2; in the half-split order
 * the same row is at c * head_dim/2 + j. */
static void permute_heads(float *w, int n_heads, int head_dim, size_t cols, float *scratch, int to_half)
{
    const int half = head_dim / 2;
    const size_t row = cols * sizeof(float);
    for (int h = 0; h < n_heads; h++) {
        float *blk = w + (size_t)h * (size_t)head_dim * cols;
        memcpy(scratch, blk, (size_t)head_dim * row);
        for (int j = 0; j < half; j++)
            for (int c = 0; c < 2; c++) {
                size_t inter = (size_t)(2 * j + c), split = (size_t)(c * half + j);
                if (to_half)
                    memcpy(blk + split * cols, scratch + inter * cols, row);
                else
                    memcpy(blk + inter * cols, scratch + split * cols, row);
            }
    }
}

void flas_rope_to_half_split(float *w, int n_heads, int head_dim, size_t cols, float *scratch)
{
    permute_heads(w, n_heads, head_dim, cols, scratch, 1);
}

void flas_rope_to_interleaved(float *w, int n_heads, int head_dim, size_t cols, float *scratch)
{
    permute_heads(w, n_heads, head_dim, cols, scratch, 0);
}
