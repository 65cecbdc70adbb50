/* Model shapes: presets equal Meta's/llama2.c's, the FFN rule reproduces them, bad shapes refused. */
#include <check.h>
#include <string.h>

#include "flas/model.h"

START_TEST(presets_match_published_shapes)
{
    flas_config c;
    ck_assert_int_eq(flas_config_preset("llama2-70b", &c), 0);
    ck_assert_int_eq(c.dim, 8192);
    ck_assert_int_eq(c.n_kv_heads, 8);
    ck_assert_int_eq(c.hidden_dim, 28672);
    ck_assert_int_eq(flas_config_preset("stories260K", &c), 0);
    ck_assert_int_eq(c.n_kv_heads, 4);
    ck_assert_int_eq(c.vocab_size, 512);
    ck_assert_int_eq(flas_config_preset("gpt-5", &c), -1);
    int n = 0;
    for (const char *const *p = flas_config_preset_names(); *p; p++, n++) {
        ck_assert_int_eq(flas_config_preset(*p, &c), 0);
        ck_assert_int_eq(flas_config_validate(&c, 1, NULL, 0), 0);
    }
    ck_assert_int_eq(n, 7);
}
END_TEST

START_TEST(ffn_rule_reproduces_presets)
{
    ck_assert_int_eq(flas_hidden_dim(4096, 256, 0), 11008);
    ck_assert_int_eq(flas_hidden_dim(5120, 256, 0), 13824);
    ck_assert_int_eq(flas_hidden_dim(8192, 4096, 1.3f), 28672);
    ck_assert_int_eq(flas_hidden_dim(288, 32, 0), 768);
    ck_assert_int_eq(flas_hidden_dim(64, 4, 0), 172);
    ck_assert_int_eq(flas_hidden_dim(512, 32, 0), 1376);
}
END_TEST

static void expect_refused(flas_config c, int tp, const char *needle)
{
    char err[256] = "";
    ck_assert_int_eq(flas_config_validate(&c, tp, err, sizeof err), -1);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

START_TEST(bad_shapes_are_refused_with_a_reason)
{
    flas_config c;
    flas_config_preset("stories260K", &c);
    flas_config b = c;
    b.n_kv_heads = 3;
    expect_refused(b, 1, "not divisible by n_kv_heads");
    b = c;
    b.dim = 72; /* head_dim 9 */
    expect_refused(b, 1, "odd");
    b = c;
    b.vocab_size = 0;
    expect_refused(b, 1, "vocab_size must be positive");
    b = c;
    b.seq_len = 1 << 30;
    expect_refused(b, 1, "overflows");
    b = c;
    expect_refused(b, 8, "not divisible by tp");
}
END_TEST

START_TEST(table_lays_out_meta_names_contiguously)
{
    flas_config c;
    flas_param_table t;
    char err[128];
    flas_config_preset("stories260K", &c);
    c.tied_embeddings = 0;
    ck_assert_int_eq(flas_param_table_init(&t, &c, 0, 1, err, sizeof err), 0);
    ck_assert_int_eq(t.n_tensors, 3 + 9 * 5);
    size_t next = 0;
    for (int i = 0; i < t.n_tensors; i++) {
        ck_assert_uint_eq(t.tensors[i].offset, next);
        next += t.tensors[i].numel;
    }
    ck_assert_uint_eq(next, t.n_params);
    const flas_tensor *wk = flas_param_find(&t, "layers.4.attention.wk.weight");
    ck_assert_ptr_nonnull(wk);
    ck_assert_uint_eq(wk->full_shape[0], 32); /* 4 kv heads x head_dim 8 */
    ck_assert_uint_eq(wk->full_shape[1], 64);
    ck_assert_ptr_eq(flas_param_get(&t, FLAS_T_WK, 4), wk);
    ck_assert_ptr_nonnull(flas_param_find(&t, "output.weight"));
    flas_param_table_free(&t);
}
END_TEST

START_TEST(tensor_parallel_shards_cover_the_model_once)
{
    flas_config c;
    flas_config_preset("stories260K", &c);
    size_t sum = 0, full = 0;
    for (int r = 0; r < 2; r++) {
        flas_param_table t;
        ck_assert_int_eq(flas_param_table_init(&t, &c, r, 2, NULL, 0), 0);
        const flas_tensor *w2 = flas_param_get(&t, FLAS_T_W2, 0);
        ck_assert_int_eq(w2->shard, FLAS_TP_SPLIT_COLS);
        ck_assert_uint_eq(w2->shape[1], 86);
        ck_assert_uint_eq(w2->shard_start, 86u * r);
        for (int i = 0; i < t.n_tensors; i++)
            if (t.tensors[i].shard != FLAS_TP_REPLICATED)
                sum += t.tensors[i].numel;
            else if (r == 0)
                sum += t.tensors[i].numel;
        full = t.n_params_full;
        flas_param_table_free(&t);
    }
    ck_assert_uint_eq(sum, full);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, presets_match_published_shapes);
    tcase_add_test(tc, ffn_rule_reproduces_presets);
    tcase_add_test(tc, bad_shapes_are_refused_with_a_reason);
    tcase_add_test(tc, table_lays_out_meta_names_contiguously);
    tcase_add_test(tc, tensor_parallel_shards_cover_the_model_once);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
