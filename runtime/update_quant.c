/* The numerics of compressed updates (flas/update.h): blockwise int8 and bf16 encodings of a delta.
 * This file is compiled with -ffp-contract=off (runtime/CMakeLists.txt): decode-and-add must round
 * q * scale and then x + d separately on every host, or a coordinator and a site that apply one
 * update would disagree in the last bit (a fused multiply-add rounds once). */
#include "flas/error.h"
#include "flas/interop.h"
#include "flas/update.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static const char *const enc_names[FLAS_UPDATE_N_ENC] = {"full", "bf16", "int8"};

const char *flas_update_enc_name(flas_update_enc e)
{
    return (e >= 0 && e < FLAS_UPDATE_N_ENC) ? enc_names[e] : "unknown";
}

int flas_update_enc_parse(const char *name, flas_update_enc *e)
{
    for (int i = 0; name && i < FLAS_UPDATE_N_ENC; i++)
        if (!strcmp(name, enc_names[i])) {
            *e = (flas_update_enc)i;
            return 0;
        }
    return -1;
}

int flas_update_block_check(int block, char *err, size_t errlen)
{
    if (block < FLAS_UPDATE_BLOCK_MIN || block > FLAS_UPDATE_BLOCK_MAX)
        return flas_fail(err, errlen, "int8 block of %d values is outside %d..%d", block, FLAS_UPDATE_BLOCK_MIN,
                         FLAS_UPDATE_BLOCK_MAX);
    return 0;
}

double flas_update_bytes(flas_update_enc e, int block, double n)
{
    switch (e) {
    case FLAS_UPDATE_BF16:
        return 2.0 * n;
    case FLAS_UPDATE_INT8:
        return n + 4.0 * ceil(n / (block > 0 ? block : FLAS_UPDATE_BLOCK_DEFAULT));
    default:
        return 4.0 * n;
    }
}

/* int8: scale = max|x| / 127 makes the largest value of the block exactly representable (q = +-127)
 * and bounds every element's error by scale / 2. The quotient x / scale is rounded to nearest (ties
 * away from zero: lroundf), and clamped because x / scale can exceed 127 by a rounding of the scale. */
static int encode_int8(int block, const float *x, size_t n, int8_t *q, float *scales, float *residual)
{
    for (size_t b0 = 0, bi = 0; b0 < n; b0 += (size_t)block, bi++) {
        size_t len = n - b0 < (size_t)block ? n - b0 : (size_t)block;
        float amax = 0.0f;
        for (size_t j = 0; j < len; j++) {
            float a = fabsf(x[b0 + j]);
            if (!(a <= 3.4028234663852886e38f))
                return -1; /* NaN or Inf */
            amax = a > amax ? a : amax;
        }
        float scale = amax / 127.0f;
        scales[bi] = scale;
        for (size_t j = 0; j < len; j++) {
            long v = scale > 0.0f ? lroundf(x[b0 + j] / scale) : 0;
            v = v > 127 ? 127 : v < -127 ? -127 : v;
            q[b0 + j] = (int8_t)v;
            if (residual)
                residual[b0 + j] = x[b0 + j] - (float)v * scale;
        }
    }
    return 0;
}

static int encode_bf16(const float *x, size_t n, uint16_t *q, float *residual)
{
    for (size_t i = 0; i < n; i++) {
        if (!(fabsf(x[i]) <= 3.4028234663852886e38f))
            return -1;
        q[i] = flas_f32_to_bf16(x[i]);
        /* a finite float can round up to bf16 infinity (above 3.39e38): not sendable either */
        if ((q[i] & 0x7f80u) == 0x7f80u)
            return -1;
        if (residual)
            residual[i] = x[i] - flas_bf16_to_f32(q[i]);
    }
    return 0;
}

int flas_update_encode(flas_update_enc e, int block, const float *x, size_t n, void *q, float *scales,
                       float *residual)
{
    switch (e) {
    case FLAS_UPDATE_INT8:
        return block >= 1 ? encode_int8(block, x, n, q, scales, residual) : -1;
    case FLAS_UPDATE_BF16:
        return encode_bf16(x, n, q, residual);
    default:
        return -1;
    }
}

void flas_update_decode(flas_update_enc e, int block, size_t first, const void *q, const float *scales, size_t n,
                        float *out)
{
    if (e == FLAS_UPDATE_INT8) {
        /* block by block, so that the inner loop is a plain vectorisable multiply by one scale */
        const int8_t *qi = q;
        const size_t B = (size_t)block, b0 = first / B;
        for (size_t i = 0; i < n;) {
            size_t b = (first + i) / B, end = (b + 1) * B - first;
            end = end < n ? end : n;
            const float sc = scales[b - b0];
            for (; i < end; i++)
                out[i] = (float)qi[i] * sc;
        }
    } else if (e == FLAS_UPDATE_BF16) {
        const uint16_t *qb = q;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)qb[i] << 16; /* bf16 is the top half of a float32 */
            memcpy(&out[i], &u, sizeof u);
        }
    }
}

void flas_update_add(const float *x, const float *d, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = x[i] + d[i];
}
