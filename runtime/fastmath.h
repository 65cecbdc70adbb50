/* Vectorisable exp for the softmax, cross-entropy and SiLU loops.
 *
 * glibc's expf is a scalar call that GCC only vectorises under -ffast-math, which FLaS does not use
 * (it would also license reassociation everywhere). This inline version is plain arithmetic, so
 * `#pragma omp simd` loops compile to AVX-512/AVX2 code. Method (Cephes): split x = n*ln2 + r with
 * |r| <= ln2/2, a degree-6 polynomial for e^r, and 2^n built in the exponent bits. Relative error is
 * below 2e-7 (about 2 ulp) on the clamped range, checked against exp() in tests/core. Inputs below
 * -87.3 give ~1e-38 instead of a denormal: softmax/SiLU treat that as zero anyway. */
#ifndef FLAS_FASTMATH_H
#define FLAS_FASTMATH_H

#include <stdint.h>
#include <string.h>

#pragma omp declare simd notinbranch
static inline float flas_expf(float x)
{
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    /* Round-to-nearest by the 1.5*2^23 trick: exact for |x*log2e| < 2^22, no rint() call. */
    const float magic = 12582912.0f;
    float n = (x * 1.44269504088896341f + magic) - magic;
    float r = x - n * 0.693359375f;           /* ln2 split hi/lo so n*ln2 is exact enough */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23; /* n in [-126, 127] after the clamp */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
