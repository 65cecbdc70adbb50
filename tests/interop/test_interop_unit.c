/* The converter's element conversions and RoPE permutation (flas/interop.h) against independent
 * references: GCC's _Float16 (IEEE binary16, round to nearest even) for f16, exact bfloat16 values and
 * hand-made ties for bf16, the Q8_0 error bound and a hand-made block, and the permutation on a head
 * whose rows are numbered. Format detection by magic bytes and names. */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/interop.h"

static float f_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t u_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

START_TEST(f16_every_half_round_trips)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = flas_f16_to_f32((uint16_t)h);
        _Float16 ref;
        uint16_t rb = (uint16_t)h;
        memcpy(&ref, &rb, 2);
        if (isnan(f)) {
            ck_assert(isnan((float)ref));
            continue;
        }
        ck_assert_msg(u_of(f) == u_of((float)ref), "half %04x: %a vs %a", h, (double)f, (double)(float)ref);
        ck_assert_uint_eq(flas_f32_to_f16(f), h);
    }
}
END_TEST

START_TEST(f16_rounding_matches_float16)
{
    /* Every 997th float bit pattern: normals, subnormals, overflow, ties. */
    for (uint64_t u = 0; u <= 0xffffffffu; u += 997) {
        float x = f_of((uint32_t)u);
        if (isnan(x))
            continue;
        _Float16 ref = (_Float16)x;
        uint16_t rb;
        memcpy(&rb, &ref, 2);
        ck_assert_msg(flas_f32_to_f16(x) == rb, "%a: %04x vs %04x", (double)x, flas_f32_to_f16(x), rb);
    }
    ck_assert(isnan(flas_f16_to_f32(flas_f32_to_f16(NAN))));
}
END_TEST

START_TEST(bf16_rounds_to_nearest_even)
{
    for (uint32_t b = 0; b < 65536; b++) {
        float x = f_of(b << 16);
        if (isnan(x))
            continue;
        ck_assert_uint_eq(flas_f32_to_bf16(x), b); /* exact values stay */
        ck_assert_uint_eq(u_of(flas_bf16_to_f32((uint16_t)b)), b << 16);
    }
    ck_assert_uint_eq(flas_f32_to_bf16(f_of(0x3f808000u)), 0x3f80); /* tie, even below */
    ck_assert_uint_eq(flas_f32_to_bf16(f_of(0x3f818000u)), 0x3f82); /* tie, odd below: up */
    ck_assert_uint_eq(flas_f32_to_bf16(f_of(0x3f808001u)), 0x3f81); /* above the tie */
    ck_assert_uint_eq(flas_f32_to_bf16(f_of(0x7f7fffffu)), 0x7f80); /* FLT_MAX rounds to infinity */
    ck_assert(isnan(flas_bf16_to_f32(flas_f32_to_bf16(NAN))));
    ck_assert(isnan(flas_bf16_to_f32(flas_f32_to_bf16(f_of(0x7f800001u))))); /* a NaN never becomes inf */
}
END_TEST

START_TEST(q8_0_block)
{
    float x[64], y[64];
    for (int i = 0; i < 64; i++)
        x[i] = i < 32 ? (float)(i - 16) / 16.0f : sinf((float)i) * 3.0f;
    unsigned char q[2 * FLAS_Q8_0_BYTES];
    flas_q8_0_quantize(x, 64, q);
    flas_q8_0_dequantize(q, 64, y);
    /* Block 0: max |x| = 1, d = 1/127 (as f16), x = -1 -> q = -127. */
    ck_assert_int_eq((int8_t)q[2], -127);
    ck_assert_int_eq((int8_t)q[2 + 16], 0);
    for (int b = 0; b < 2; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[32 * b + j]));
        const float d = amax / 127.0f;
        for (int j = 0; j < 32; j++)
            ck_assert_msg(fabsf(y[32 * b + j] - x[32 * b + j]) <= 0.5f * d + 1e-3f * d + amax * 1e-3f,
                          "block %d value %d: %g vs %g", b, j, (double)y[32 * b + j], (double)x[32 * b + j]);
    }
    float z[32] = {0};
    flas_q8_0_quantize(z, 32, q);
    flas_q8_0_dequantize(q, 32, y);
    for (int j = 0; j < 32; j++)
        ck_assert(y[j] == 0.0f);
}
END_TEST

START_TEST(rope_permutation)
{
    /* 2 heads of head_dim 4, 3 columns; row r of head h holds 100 h + r in every column. */
    enum { H = 2, D = 4, C = 3 };
    float w[H * D * C], scratch[D * C];
    for (int h = 0; h < H; h++)
        for (int r = 0; r < D; r++)
            for (int c = 0; c < C; c++)
                w[(h * D + r) * C + c] = (float)(100 * h + r);
    flas_rope_to_half_split(w, H, D, C, scratch);
    /* Half-split row order within a head: pair members 0 of pairs 0, 1, then members 1: rows 0, 2, 1, 3. */
    const int want[D] = {0, 2, 1, 3};
    for (int h = 0; h < H; h++)
        for (int r = 0; r < D; r++)
            for (int c = 0; c < C; c++)
                ck_assert(w[(h * D + r) * C + c] == (float)(100 * h + want[r]));
    flas_rope_to_interleaved(w, H, D, C, scratch);
    for (int h = 0; h < H; h++)
        for (int r = 0; r < D; r++)
            ck_assert(w[(h * D + r) * C] == (float)(100 * h + r));
}
END_TEST

START_TEST(format_names_and_detection)
{
    ck_assert_int_eq(flas_format_detect_output("x.h5"), FLAS_FMT_FLAS);
    ck_assert_int_eq(flas_format_detect_output("x.hdf5"), FLAS_FMT_FLAS);
    ck_assert_int_eq(flas_format_detect_output("x.gguf"), FLAS_FMT_GGUF);
    ck_assert_int_eq(flas_format_detect_output("x.bin"), FLAS_FMT_LLAMA2C);
    ck_assert_int_eq(flas_format_detect_output("Llama-2-7b-hf"), FLAS_FMT_HF);
    ck_assert_int_eq(flas_format_parse("gguf"), FLAS_FMT_GGUF);
    ck_assert_int_eq(flas_format_parse("GGUF"), FLAS_FMT_UNKNOWN);
    flas_dtype d;
    ck_assert_int_eq(flas_dtype_parse("q8_0", &d), 0);
    ck_assert_int_eq(d, FLAS_DT_Q8_0);
    ck_assert_int_eq(flas_dtype_parse("f64", &d), -1);
    char dir[] = "/tmp/flas-ix-unit.XXXXXX", path[64], err[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const struct { const char *name; const char bytes[8]; flas_format want; } cases[] = {
        {"a", "GGUF\3\0\0\0", FLAS_FMT_GGUF}, {"b", "\x89HDF\r\n\x1a\n", FLAS_FMT_FLAS},
        {"c", "24ka\1\0\0\0", FLAS_FMT_LLAMA2C}, {"d.bin", "\x40\0\0\0", FLAS_FMT_LLAMA2C},
        {"e", "hello", FLAS_FMT_UNKNOWN}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, cases[i].name);
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        fwrite(cases[i].bytes, 1, 8, f);
        fclose(f);
        ck_assert_int_eq(flas_format_detect_input(path, err, sizeof err), cases[i].want);
        unlink(path);
    }
    ck_assert_int_eq(flas_format_detect_input(dir, err, sizeof err), FLAS_FMT_HF);
    rmdir(dir);
    ck_assert_int_eq(flas_format_detect_input("/nonexistent/x", err, sizeof err), FLAS_FMT_UNKNOWN);
    ck_assert_ptr_nonnull(strstr(err, "No such file"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("interop");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, f16_every_half_round_trips);
    tcase_add_test(tc, f16_rounding_matches_float16);
    tcase_add_test(tc, bf16_rounds_to_nearest_even);
    tcase_add_test(tc, q8_0_block);
    tcase_add_test(tc, rope_permutation);
    tcase_add_test(tc, format_names_and_detection);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
