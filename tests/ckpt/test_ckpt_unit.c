/* Checkpoint I/O, serial path (no MPI_Init anywhere in this program): round trips through every
 * put/get flavour, commit refusing incomplete writes, atomic replacement, SHA-256. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_fixture.h"

static char dir[512], path[600];
static char err[1024];

static void setup(void)
{
    fix_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/ckpt.h5", dir);
    err[0] = '\0';
}

static void teardown(void) { fix_rmtree(dir); }

static flas_ckpt_writer *new_writer(unsigned contents, int gen)
{
    flas_config c;
    flas_ckpt_meta m;
    fix_config("small", &c);
    fix_meta(&c, gen, &m);
    flas_ckpt_writer *w = flas_ckpt_create(path, &m, contents, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(w != NULL, "create: %s", err);
    return w;
}

static void assert_one_line(const char *msg, const char *needle)
{
    ck_assert_msg(strstr(msg, needle) != NULL, "message '%s' lacks '%s'", msg, needle);
    ck_assert_msg(strchr(msg, '\n') == NULL, "message '%s' spans lines", msg);
}

START_TEST(every_section_round_trips)
{
    ck_assert_msg(fix_write(path, "small", 3, FIX_ALL, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(fix_verify(path, 3, err, sizeof err) == 0, "%s", err);
    /* The verifier can fail: another generation's values differ. */
    ck_assert_int_eq(fix_verify(path, 4, err, sizeof err), -1);
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
    ck_assert_ptr_nonnull(r);
    unsigned want = FIX_ALL | FLAS_CKPT_HAS(FLAS_CKPT_PARAMS);
    ck_assert_uint_eq(flas_ckpt_contents(r), want);
    const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
    ck_assert_int_eq(m->cfg.tied_embeddings, 0);
    ck_assert_int_eq(m->cfg.n_kv_heads, 4);
    ck_assert_float_eq(m->cfg.norm_eps, 1e-5f);
    ck_assert_int_eq(strlen(m->created_utc), 20);
    ck_assert_int_ge(m->created_unix, 1700000000);
    flas_config c;
    fix_config("small", &c);
    ck_assert_int_eq(flas_ckpt_expect_config(r, &c, err, sizeof err), 0);
    c.seq_len = 1024;
    ck_assert_int_eq(flas_ckpt_expect_config(r, &c, err, sizeof err), -1);
    assert_one_line(err, "seq_len 512 != 1024");
    flas_ckpt_close(r);
}
END_TEST

/* flas_ckpt_put in blocks of rows, read back with boxes, element ranges and tp=2 shard layouts. */
START_TEST(hyperslabs_elements_and_shards_round_trip)
{
    flas_ckpt_writer *w = new_writer(0, 5);
    const flas_param_table *t = flas_ckpt_writer_tensors(w);
    float *tmp = malloc(t->n_params * sizeof *tmp);
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        size_t rows = x->ndim == 2 ? x->full_shape[0] : x->full_shape[0];
        size_t cols = x->ndim == 2 ? x->full_shape[1] : 1;
        for (size_t r0 = 0; r0 < rows; r0 += 7) {
            size_t nr = rows - r0 < 7 ? rows - r0 : 7;
            for (size_t k = 0; k < nr * cols; k++)
                tmp[k] = fix_value(0, i, r0 * cols + k, 5);
            size_t start[2] = {r0, 0}, count[2] = {nr, cols};
            ck_assert_msg(flas_ckpt_put(w, FLAS_CKPT_PARAMS, x->name, start, count, tmp, err, sizeof err) == 0, "%s",
                          err);
        }
        /* An empty selection is allowed (a replica that writes nothing). */
        size_t zero[2] = {0, 0};
        ck_assert_int_eq(flas_ckpt_put(w, FLAS_CKPT_PARAMS, x->name, zero, zero, NULL, err, sizeof err), 0);
    }
    ck_assert_msg(flas_ckpt_commit(w, err, sizeof err) == 0, "%s", err);

    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(r != NULL, "%s", err);
    const flas_tensor *wo = flas_param_find(flas_ckpt_tensors(r), "layers.2.attention.wo.weight");
    int wo_i = (int)(wo - flas_ckpt_tensors(r)->tensors);
    size_t start[2] = {5, 9}, count[2] = {11, 13};
    ck_assert_int_eq(flas_ckpt_get(r, FLAS_CKPT_PARAMS, wo->name, start, count, tmp, err, sizeof err), 0);
    for (size_t a = 0; a < 11; a++)
        for (size_t b = 0; b < 13; b++)
            ck_assert_float_eq(tmp[a * 13 + b], fix_value(0, wo_i, (5 + a) * 64 + 9 + b, 5));
    /* Element ranges starting and ending mid-row (partial, whole rows, partial). */
    const size_t los[] = {0, 1, 63, 64, 65, 100, 4000}, ns[] = {1, 64, 2, 130, 4031, 0, 96};
    for (size_t k = 0; k < sizeof los / sizeof los[0]; k++) {
        ck_assert_int_eq(flas_ckpt_get_elems(r, FLAS_CKPT_PARAMS, wo->name, los[k], ns[k], tmp, err, sizeof err), 0);
        for (size_t e = 0; e < ns[k]; e++)
            ck_assert_float_eq(tmp[e], fix_value(0, wo_i, los[k] + e, 5));
    }
    /* Out of range requests are refused, not clipped. */
    ck_assert_int_eq(flas_ckpt_get_elems(r, FLAS_CKPT_PARAMS, wo->name, 4000, 97, tmp, err, sizeof err), -1);
    assert_one_line(err, "outside");
    size_t bad[2] = {60, 0}, badc[2] = {5, 1};
    ck_assert_int_eq(flas_ckpt_get(r, FLAS_CKPT_PARAMS, wo->name, bad, badc, tmp, err, sizeof err), -1);
    ck_assert_int_eq(flas_ckpt_get(r, FLAS_CKPT_ADAM_M, wo->name, start, count, tmp, err, sizeof err), -1);
    assert_one_line(err, "no optimizer/m section");
    /* Any world size: each tp=2 rank reads its own shard layout from the full tensors. */
    for (int rank = 0; rank < 2; rank++) {
        flas_param_table tp;
        ck_assert_int_eq(flas_param_table_init(&tp, &flas_ckpt_meta_of(r)->cfg, rank, 2, err, sizeof err), 0);
        float *want = malloc(tp.n_params * sizeof *want), *got = malloc(tp.n_params * sizeof *got);
        fix_fill(&tp, 0, 5, want);
        ck_assert_int_eq(flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, &tp, 0, tp.n_params, got, err, sizeof err), 0);
        ck_assert_int_eq(memcmp(want, got, tp.n_params * sizeof *got), 0);
        /* A ZeRO-style middle slice lands at the right place. */
        size_t lo = tp.n_params / 3 + 5, hi = 2 * tp.n_params / 3 + 1;
        ck_assert_int_eq(flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, &tp, lo, hi, got, err, sizeof err), 0);
        ck_assert_int_eq(memcmp(want + lo, got, (hi - lo) * sizeof *got), 0);
        free(want);
        free(got);
        flas_param_table_free(&tp);
    }
    flas_ckpt_close(r);
    free(tmp);
}
END_TEST

/* Shards written by "ranks" of several layouts (serially here) assemble into full tensors. */
START_TEST(tensor_parallel_and_zero1_slices_assemble)
{
    flas_ckpt_writer *w = new_writer(FLAS_CKPT_OPTIMIZER, 6);
    flas_config c;
    fix_config("small", &c);
    for (int rank = 0; rank < 2; rank++) {
        flas_param_table tp;
        ck_assert_int_eq(flas_param_table_init(&tp, &c, rank, 2, err, sizeof err), 0);
        float *buf = malloc(tp.n_params * sizeof *buf);
        fix_fill(&tp, FLAS_CKPT_PARAMS, 6, buf);
        ck_assert_int_eq(flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, &tp, 0, tp.n_params, buf, err, sizeof err), 0);
        /* ZeRO-1 over 3 data-parallel ranks: uneven slices of the tp shard's flat buffer. */
        for (int s = FLAS_CKPT_ADAM_M; s <= FLAS_CKPT_ADAM_V; s++) {
            fix_fill(&tp, s, 6, buf);
            size_t cut[4] = {0, tp.n_params / 3 - 17, tp.n_params / 2 + 3, tp.n_params};
            for (int d = 0; d < 3; d++)
                ck_assert_msg(flas_ckpt_put_flat(w, (flas_ckpt_section)s, &tp, cut[d], cut[d + 1], buf + cut[d], err,
                                                 sizeof err) == 0, "%s", err);
        }
        free(buf);
        flas_param_table_free(&tp);
    }
    ck_assert_int_eq(fix_set_states(w, FLAS_CKPT_OPTIMIZER, 6, err, sizeof err), 0);
    ck_assert_msg(flas_ckpt_commit(w, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(fix_verify(path, 6, err, sizeof err) == 0, "%s", err);
}
END_TEST

START_TEST(commit_refuses_a_tensor_not_fully_written)
{
    flas_ckpt_writer *w = new_writer(0, 1);
    const flas_param_table *t = flas_ckpt_writer_tensors(w);
    float *buf = calloc(t->n_params, sizeof *buf);
    for (int i = 0; i < t->n_tensors; i++) {
        size_t n = t->tensors[i].numel - (strcmp(t->tensors[i].name, "layers.3.ffn_norm.weight") ? 0 : 1);
        ck_assert_int_eq(flas_ckpt_put_elems(w, FLAS_CKPT_PARAMS, t->tensors[i].name, 0, n, buf, err, sizeof err), 0);
    }
    free(buf);
    ck_assert_int_eq(flas_ckpt_commit(w, err, sizeof err), -1);
    assert_one_line(err, "params/layers.3.ffn_norm.weight was not fully written (63 of 64");
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(fix_count_entries(dir), 0); /* the temporary file is gone too */
}
END_TEST

START_TEST(commit_refuses_a_chosen_state_never_set)
{
    flas_ckpt_writer *w = new_writer(FLAS_CKPT_TRAIN_STATE, 1);
    const flas_param_table *t = flas_ckpt_writer_tensors(w);
    float *buf = calloc(t->n_params, sizeof *buf);
    ck_assert_int_eq(flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, t, 0, t->n_params, buf, err, sizeof err), 0);
    free(buf);
    ck_assert_int_eq(flas_ckpt_commit(w, err, sizeof err), -1);
    assert_one_line(err, "training state");
    ck_assert_int_eq(fix_count_entries(dir), 0);
}
END_TEST

START_TEST(bad_puts_fail_and_poison_the_commit)
{
    flas_ckpt_writer *w = new_writer(0, 1);
    const flas_param_table *t = flas_ckpt_writer_tensors(w);
    float *buf = calloc(t->n_params, sizeof *buf);
    ck_assert_int_eq(flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, t, 0, t->n_params, buf, err, sizeof err), 0);
    size_t start[2] = {0, 0}, count[2] = {1, 1};
    ck_assert_int_eq(flas_ckpt_put(w, FLAS_CKPT_PARAMS, "layers.9.attention.wq.weight", start, count, buf, err,
                                   sizeof err), -1);
    assert_one_line(err, "no tensor named 'layers.9.attention.wq.weight'");
    count[0] = 513;
    ck_assert_int_eq(flas_ckpt_put(w, FLAS_CKPT_PARAMS, "tok_embeddings.weight", start, count, buf, err, sizeof err),
                     -1);
    assert_one_line(err, "outside its shape (512, 64)");
    ck_assert_int_eq(flas_ckpt_put_elems(w, FLAS_CKPT_ADAM_M, "norm.weight", 0, 1, buf, err, sizeof err), -1);
    assert_one_line(err, "section optimizer/m was not chosen");
    flas_train_state s = {0};
    ck_assert_int_eq(flas_ckpt_set_train_state(w, &s, err, sizeof err), -1);
    free(buf);
    ck_assert_int_eq(flas_ckpt_commit(w, err, sizeof err), -1);
    assert_one_line(err, "not committed: ");
    assert_one_line(err, "layers.9.attention.wq.weight"); /* the first failure is reported */
    ck_assert_int_eq(fix_count_entries(dir), 0);
}
END_TEST

START_TEST(bad_create_arguments_are_refused)
{
    flas_config c;
    flas_ckpt_meta m;
    fix_config("small", &c);
    fix_meta(&c, 1, &m);
    flas_ckpt_meta b = m;
    b.cfg.n_heads = 0;
    ck_assert_ptr_null(flas_ckpt_create(path, &b, 0, MPI_COMM_NULL, err, sizeof err));
    assert_one_line(err, "n_heads must be positive");
    b = m;
    b.site[0] = '\0';
    ck_assert_ptr_null(flas_ckpt_create(path, &b, 0, MPI_COMM_NULL, err, sizeof err));
    assert_one_line(err, "needs a site name");
    b = m;
    snprintf(b.base_sha256, sizeof b.base_sha256, "xyz");
    ck_assert_ptr_null(flas_ckpt_create(path, &b, 0, MPI_COMM_NULL, err, sizeof err));
    assert_one_line(err, "base_sha256");
    ck_assert_ptr_null(flas_ckpt_create(path, &m, FLAS_CKPT_HAS(FLAS_CKPT_ADAM_M), MPI_COMM_NULL, err, sizeof err));
    assert_one_line(err, "both AdamW moments");
    ck_assert_ptr_null(flas_ckpt_create(path, &m, FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M), MPI_COMM_NULL, err, sizeof err));
    assert_one_line(err, "server state");
    char missing[700];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.h5", dir);
    ck_assert_ptr_null(flas_ckpt_create(missing, &m, 0, MPI_COMM_NULL, err, sizeof err));
    assert_one_line(err, "does not exist");
    ck_assert_ptr_null(flas_ckpt_create(dir, &m, 0, MPI_COMM_NULL, err, sizeof err));
    assert_one_line(err, "is a directory");
    ck_assert_int_eq(fix_count_entries(dir), 0);
}
END_TEST

START_TEST(destination_changes_only_at_commit)
{
    ck_assert_int_eq(fix_write(path, "small", 1, FIX_ALL, err, sizeof err), 0);
    flas_ckpt_writer *w = new_writer(0, 2);
    flas_param_table table; /* the writer's own table dies with it: keep one for both writers */
    ck_assert_int_eq(flas_param_table_init(&table, &flas_ckpt_writer_tensors(w)->cfg, 0, 1, err, sizeof err), 0);
    const flas_param_table *t = &table;
    float *buf = malloc(t->n_params * sizeof *buf);
    fix_fill(t, 0, 2, buf);
    ck_assert_int_eq(flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, t, 0, t->n_params, buf, err, sizeof err), 0);
    ck_assert_int_eq(fix_count_entries(dir), 2); /* destination + hidden temporary */
    ck_assert_msg(fix_verify(path, 1, err, sizeof err) == 0, "%s", err);
    flas_ckpt_abort(w);
    ck_assert_int_eq(fix_count_entries(dir), 1);
    ck_assert_msg(fix_verify(path, 1, err, sizeof err) == 0, "%s", err);
    w = new_writer(0, 2);
    ck_assert_int_eq(flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, t, 0, t->n_params, buf, err, sizeof err), 0);
    ck_assert_msg(flas_ckpt_commit(w, err, sizeof err) == 0, "%s", err);
    free(buf);
    flas_param_table_free(&table);
    ck_assert_int_eq(fix_count_entries(dir), 1);
    ck_assert_msg(fix_verify(path, 2, err, sizeof err) == 0, "%s", err);
}
END_TEST

START_TEST(temporary_name_is_hidden_in_the_same_directory)
{
    char tmp[256];
    ck_assert_int_eq(flas_ckpt_temp_path("/a/b/global.h5", tmp, sizeof tmp), 0);
    ck_assert_msg(strncmp(tmp, "/a/b/.global.h5.tmp-", 20) == 0, "%s", tmp);
    char pid[32];
    snprintf(pid, sizeof pid, "-%ld", (long)getpid());
    ck_assert_ptr_nonnull(strstr(tmp, pid));
    ck_assert_int_eq(flas_ckpt_temp_path("x.h5", tmp, sizeof tmp), 0);
    ck_assert_msg(strncmp(tmp, ".x.h5.tmp-", 10) == 0, "%s", tmp);
    ck_assert_int_eq(flas_ckpt_temp_path("/a/b/", tmp, sizeof tmp), -1);
}
END_TEST

START_TEST(sha256_matches_known_digests_and_sha256sum)
{
    char hex[FLAS_SHA256_HEX];
    flas_sha256_buffer("abc", 3, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ck_assert_int_eq(flas_sha256_is_hex(hex), 1);
    ck_assert_int_eq(flas_sha256_is_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"), 0);
    ck_assert_int_eq(fix_write(path, "small", 1, FIX_ALL, err, sizeof err), 0);
    uint64_t bytes = 0;
    ck_assert_int_eq(flas_sha256_file(path, hex, &bytes, err, sizeof err), 0);
    struct stat st;
    stat(path, &st);
    ck_assert_uint_eq(bytes, (uint64_t)st.st_size);
    char cmd[700], line[128] = "";
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(fgets(line, sizeof line, p));
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_int_eq(strncmp(line, hex, 64), 0);
    snprintf(cmd, sizeof cmd, "%s/absent", dir);
    ck_assert_int_eq(flas_sha256_file(cmd, hex, NULL, err, sizeof err), -1);
    assert_one_line(err, "absent: cannot open for hashing: No such file");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("serial");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, every_section_round_trips);
    tcase_add_test(tc, hyperslabs_elements_and_shards_round_trip);
    tcase_add_test(tc, tensor_parallel_and_zero1_slices_assemble);
    tcase_add_test(tc, commit_refuses_a_tensor_not_fully_written);
    tcase_add_test(tc, commit_refuses_a_chosen_state_never_set);
    tcase_add_test(tc, bad_puts_fail_and_poison_the_commit);
    tcase_add_test(tc, bad_create_arguments_are_refused);
    tcase_add_test(tc, destination_changes_only_at_commit);
    tcase_add_test(tc, temporary_name_is_hidden_in_the_same_directory);
    tcase_add_test(tc, sha256_matches_known_digests_and_sha256sum);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
