/* bfloat16: the top half of an IEEE float32. The one rounding rule of every bf16 path in FLaS (file
 * conversion, compressed updates, mixed-precision products): round to nearest, ties to even, NaN kept
 * NaN. Inline, because the callers convert whole tensors in vectorised loops. */
#ifndef FLAS_BF16_H
#define FLAS_BF16_H

#include <stdint.h>
#include <string.h>

static inline uint16_t flas_bf16_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it NaN (rounding could carry it to infinity) */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);     /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

static inline float flas_float_of_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

#endif
