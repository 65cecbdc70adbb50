/* flas-prepare as a library: shards hold BOS + the tokenizer's ids of each document in input
 * order, the same bytes for any thread count and shard size; every bad input (malformed JSON,
 * invalid UTF-8, empty input, vocabulary mismatch, existing output, a stop request) is refused with
 * file:line where there is one, and leaves no output directory and no temporary behind. */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "flas/loader.h"
#include "flas/prepare.h"
#include "flas/shards.h"
#include "flas/tokenizer.h"

static char dir[256];
static const char *model;
static char *owned[64];
static int n_owned;

static void setup(void)
{
    model = getenv("FLAS_TEST_MODEL");
    ck_assert_msg(model && *model, "FLAS_TEST_MODEL is not set: the data_vocab fixture trains it");
    snprintf(dir, sizeof dir, "%s/flas-prepare-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void rm_rf(const char *path)
{
    char *cmd;
    ck_assert_int_ge(asprintf(&cmd, "rm -rf '%s'", path), 0);
    ck_assert_int_eq(system(cmd), 0);
    free(cmd);
}

static void teardown(void)
{
    rm_rf(dir);
    while (n_owned > 0)
        free(owned[--n_owned]);
}

/* Paths handed out by path_of live until the test's teardown (owned[]). */
static char *path_of(const char *name)
{
    char *p;
    ck_assert_int_ge(asprintf(&p, "%s/%s", dir, name), 0);
    ck_assert_int_lt(n_owned, 64);
    owned[n_owned++] = p;
    return p;
}

static char *write_file(const char *name, const char *content, size_t len)
{
    char *p = path_of(name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(content, 1, len, f), len);
    fclose(f);
    return p;
}
#define WRITE(name, literal) write_file(name, literal, sizeof literal - 1)

/* What a run left behind in dir: directories (an output) or hidden entries (a temporary). The
 * inputs are the only plain files there. */
static int leftovers(const char *const *inputs, int n_inputs)
{
    (void)inputs, (void)n_inputs;
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        struct stat st;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        ck_assert_int_eq(lstat(p, &st), 0);
        n += e->d_name[0] == '.' || !S_ISREG(st.st_mode);
    }
    closedir(d);
    return n;
}

static flas_prepare_opts opts(const char *out, const char *const *inputs, int n)
{
    return (flas_prepare_opts){.tokenizer_path = model, .out_dir = out, .inputs = inputs, .n_inputs = n,
                               .threads = 2};
}

/* Runs o expecting failure with every needle in the message and nothing left behind. */
static void expect_refused(flas_prepare_opts o, const char *needle1, const char *needle2)
{
    char err[1024] = "";
    flas_prepare_stats st;
    ck_assert_int_eq(flas_prepare_run(&o, &st, err, sizeof err), -1);
    ck_assert_msg(strstr(err, needle1), "message '%s' lacks '%s'", err, needle1);
    ck_assert_msg(!needle2 || strstr(err, needle2), "message '%s' lacks '%s'", err, needle2);
    ck_assert_msg(strchr(err, '\n') == NULL, "message is not one line: '%s'", err);
    ck_assert_int_eq(access(o.out_dir, F_OK), -1);
    ck_assert_int_eq(leftovers(o.inputs, o.n_inputs), 0);
}

static void run_ok(flas_prepare_opts o, flas_prepare_stats *st)
{
    char err[1024] = "";
    ck_assert_msg(flas_prepare_run(&o, st, err, sizeof err) == 0, "%s", err);
}

/* The stream of all shards under out, in loader order. */
static int32_t *read_stream(const char *out, uint64_t *n)
{
    const char *paths[] = {out};
    char **list;
    int k;
    char err[512];
    ck_assert_msg(flas_shard_list(paths, 1, &list, &k, err, sizeof err) == 0, "%s", err);
    int32_t *all = NULL;
    *n = 0;
    for (int i = 0; i < k; i++) {
        flas_shard s;
        ck_assert_msg(flas_shard_open(&s, list[i], err, sizeof err) == 0, "%s", err);
        ck_assert_msg(flas_shard_verify(&s, err, sizeof err) == 0, "%s", err);
        all = realloc(all, (*n + s.h.n_tokens) * sizeof *all);
        for (uint64_t j = 0; j < s.h.n_tokens; j++)
            all[*n + j] = (int32_t)flas_shard_token(&s, j);
        *n += s.h.n_tokens;
        flas_shard_close(&s);
    }
    flas_shard_list_free(list, k);
    return all;
}

/* BOS + ids of each document, as the tokenizer gives them. */
static void expected_stream(const char *const *docs, int n, flas_ids *out)
{
    char err[256];
    flas_tokenizer *t = flas_tokenizer_open(model, err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(flas_tokenizer_encode(t, docs[i], strlen(docs[i]), FLAS_TOK_BOS, out, err, sizeof err), 0);
    flas_tokenizer_close(t);
}

static void assert_stream(const char *out, const char *const *docs, int n)
{
    flas_ids want = {0};
    expected_stream(docs, n, &want);
    uint64_t got_n;
    int32_t *got = read_stream(out, &got_n);
    ck_assert_uint_eq(got_n, want.n);
    ck_assert_int_eq(memcmp(got, want.ids, want.n * sizeof *got), 0);
    free(got);
    flas_ids_free(&want);
}

START_TEST(lines_become_bos_separated_documents_in_input_order)
{
    const char *in[] = {WRITE("a.txt", "Prima riga del documento.\n\nSeconda riga, dopo una vuota.\r\n"),
                        WRITE("b.txt", "Žluťoučký kůň úpěl ďábelské ódy.\nPoslední řádek bez konce")};
    char *out = path_of("out");
    flas_prepare_stats st;
    run_ok(opts(out, in, 2), &st);
    ck_assert_uint_eq(st.files, 2);
    ck_assert_uint_eq(st.shards, 2);
    ck_assert_uint_eq(st.documents, 4);
    ck_assert_uint_eq(st.skipped_empty, 1);
    const char *docs[] = {"Prima riga del documento.", "Seconda riga, dopo una vuota.",
                          "Žluťoučký kůň úpěl ďábelské ódy.", "Poslední řádek bez konce"};
    ck_assert_uint_eq(st.bytes, strlen(docs[0]) + strlen(docs[1]) + strlen(docs[2]) + strlen(docs[3]));
    assert_stream(out, docs, 4);
    /* The shards carry the tokenizer's facts. */
    char *shard = path_of("out/part-000001-0000.flastok");
    flas_shard s;
    char err[512];
    ck_assert_msg(flas_shard_open(&s, shard, err, sizeof err) == 0, "%s", err);
    flas_tokenizer *t = flas_tokenizer_open(model, err, sizeof err);
    ck_assert_uint_eq(s.h.vocab_size, (uint32_t)flas_tokenizer_vocab_size(t));
    ck_assert_int_eq(memcmp(s.h.tokenizer_sha256, flas_tokenizer_sha256(t), FLAS_SHA256_BYTES), 0);
    ck_assert_uint_eq(s.h.n_documents, 2);
    ck_assert_uint_eq(s.h.flags, FLAS_SHARD_DOC_BOS);
    ck_assert_uint_eq(s.h.token_bytes, 2);
    flas_tokenizer_close(t);
    flas_shard_close(&s);
    /* And verify accepts them against the model. */
    const char *paths[] = {out};
    ck_assert_msg(flas_prepare_verify(model, 0, paths, 1, &st, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(st.documents, 4);
}
END_TEST

START_TEST(paragraphs_json_lines_and_gzip)
{
    const char *para = WRITE("p.txt", "\n\nFirst paragraph,\nsecond line.\n\n\n\nSecond paragraph.\n  \nThird.");
    const char *json = WRITE("d.jsonl", "{\"text\": \"Uno\\ndue \\u00e8 tr\\u00e9\", \"url\": \"x\"}\n"
                                        "\n{\"url\": \"y\", \"text\": \"\"}\n{\"text\": \"Quattro \\ud83d\\ude00\"}\n");
    char *gz = path_of("g.json.gz");
    gzFile g = gzopen(gz, "wb");
    gzputs(g, "{\"content\": \"compressed one\"}\n{\"content\": \"compressed two\", \"text\": 5}\n");
    gzclose(g);
    flas_prepare_stats st;
    char *out1 = path_of("o1"), *out2 = path_of("o2"), *out3 = path_of("o3");
    const char *p[] = {para};
    flas_prepare_opts o = opts(out1, p, 1);
    o.format = FLAS_INPUT_PARAGRAPHS;
    run_ok(o, &st);
    const char *pdocs[] = {"First paragraph,\nsecond line.", "Second paragraph.", "Third."};
    assert_stream(out1, pdocs, 3);

    const char *j[] = {json};
    run_ok(opts(out2, j, 1), &st); /* auto: *.jsonl is JSON lines */
    ck_assert_uint_eq(st.skipped_empty, 1);
    const char *jdocs[] = {"Uno\ndue è tré", "Quattro 😀"};
    assert_stream(out2, jdocs, 2);

    const char *z[] = {gz};
    o = opts(out3, z, 1);
    o.json_field = "content";
    run_ok(o, &st);
    const char *zdocs[] = {"compressed one", "compressed two"};
    assert_stream(out3, zdocs, 2);
}
END_TEST

START_TEST(same_shards_for_any_thread_count_and_split)
{
    /* 4 files of 300 documents: 2 threads vs 1 thread must give identical bytes; a small
     * shard_tokens splits files into parts whose stream is the same. */
    char *in[4];
    for (int f = 0; f < 4; f++) {
        char name[16];
        snprintf(name, sizeof name, "in%d.txt", f);
        char *text = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&text, &len);
        for (int d = 0; d < 300; d++)
            fprintf(m, "Documento %d del file %d: la volpe veloce salta sopra il cane pigro.\n", d, f);
        fclose(m);
        in[f] = write_file(name, text, len);
        free(text);
    }
    char *o1 = path_of("t1"), *o2 = path_of("t2"), *o3 = path_of("t3");
    flas_prepare_stats s1, s2, s3;
    flas_prepare_opts o = opts(o1, (const char *const *)in, 4);
    o.threads = 1;
    run_ok(o, &s1);
    o.out_dir = o2;
    o.threads = 2;
    run_ok(o, &s2);
    o.out_dir = o3;
    o.shard_tokens = 1000;
    run_ok(o, &s3);
    ck_assert_uint_eq(s1.tokens, s2.tokens);
    ck_assert_uint_eq(s1.tokens, s3.tokens);
    ck_assert_uint_eq(s2.shards, 4);
    ck_assert_uint_gt(s3.shards, 8);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cmp -s %s/part-000002-0000.flastok %s/part-000002-0000.flastok", o1, o2);
    ck_assert_int_eq(system(cmd), 0);
    uint64_t n1, n3;
    int32_t *a = read_stream(o1, &n1), *b = read_stream(o3, &n3);
    ck_assert_uint_eq(n1, n3);
    ck_assert_int_eq(memcmp(a, b, n1 * sizeof *a), 0);
    free(a), free(b);
}
END_TEST

START_TEST(malformed_json_is_refused_with_file_and_line)
{
    const char *in[] = {WRITE("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"ok too\"}\n{\"text\": \"broken\"\n")};
    char *out = path_of("out");
    expect_refused(opts(out, in, 1), "bad.jsonl:3:", "malformed JSON");
    const char *nofield[] = {WRITE("nofield.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n")};
    expect_refused(opts(out, nofield, 1), "nofield.jsonl:2:", "\"text\"");
    const char *notstr[] = {WRITE("num.jsonl", "[\"text\", \"array\"]\n")};
    expect_refused(opts(out, notstr, 1), "num.jsonl:1:", "JSON object");
    const char *nul[] = {WRITE("nul.jsonl", "{\"text\": \"a\\u0000b\"}\n")};
    expect_refused(opts(out, nul, 1), "nul.jsonl:1:", "malformed JSON");
}
END_TEST

START_TEST(invalid_utf8_is_refused_or_replaced_and_counted)
{
    const char *in[] = {WRITE("latin1.txt", "buona giornata\nperch\xe9 no?\n")};
    char *out = path_of("out");
    expect_refused(opts(out, in, 1), "latin1.txt:2:", "invalid UTF-8");
    const char *j[] = {WRITE("latin1.jsonl", "{\"text\": \"perch\xe9\"}\n")};
    expect_refused(opts(out, j, 1), "latin1.jsonl:1:", "invalid UTF-8");
    const char *more[] = {WRITE("more.txt", "overlong \xc0\xaf slash\nsurrogate \xed\xa0\x80 x\ncut \xe2\x82")};
    expect_refused(opts(out, more, 1), "more.txt:1:", "invalid UTF-8");

    flas_prepare_opts o = opts(out, more, 1);
    o.replace_invalid_utf8 = 1;
    flas_prepare_stats st;
    run_ok(o, &st);
    ck_assert_uint_eq(st.replaced, 2 + 3 + 2);
    const char *docs[] = {"overlong \xef\xbf\xbd\xef\xbf\xbd slash",
                          "surrogate \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd x", "cut \xef\xbf\xbd\xef\xbf\xbd"};
    assert_stream(out, docs, 3);
}
END_TEST

START_TEST(empty_input_is_refused)
{
    char *out = path_of("out");
    const char *empty[] = {WRITE("empty.txt", "")};
    expect_refused(opts(out, empty, 1), "empty.txt", "no documents");
    const char *blank[] = {WRITE("blank.txt", "\n  \n\t\n\n")};
    expect_refused(opts(out, blank, 1), "blank.txt", "no documents");
    const char *emptyjson[] = {WRITE("e.jsonl", "{\"text\": \"\"}\n")};
    expect_refused(opts(out, emptyjson, 1), "e.jsonl", "no documents");
    /* One empty file among good ones still refuses the run. */
    const char *mixed[] = {WRITE("good.txt", "buon giorno\n"), empty[0]};
    expect_refused(opts(out, mixed, 2), "empty.txt", "no documents");
}
END_TEST

START_TEST(vocabulary_mismatch_is_refused)
{
    char *out = path_of("out");
    const char *in[] = {WRITE("a.txt", "testo\n")};
    flas_prepare_opts o = opts(out, in, 1);
    o.expect_vocab_size = 32000;
    expect_refused(o, "32000", "vocab_size");
    /* Shards checked against another tokenizer (flas-prepare --verify). */
    o.expect_vocab_size = 0;
    flas_prepare_stats st;
    run_ok(o, &st);
    const char *other = getenv("FLAS_TEST_MODEL_UNIGRAM");
    ck_assert_msg(other && *other, "FLAS_TEST_MODEL_UNIGRAM is not set");
    const char *paths[] = {out};
    char err[1024];
    ck_assert_int_eq(flas_prepare_verify(other, 0, paths, 1, &st, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "vocabulary mismatch") && strstr(err, "part-000000-0000.flastok"), "%s", err);
    ck_assert_int_eq(flas_prepare_verify(NULL, 4096, paths, 1, &st, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "4096"), "%s", err);
}
END_TEST

START_TEST(a_failing_file_leaves_no_partial_output)
{
    /* The good files finish (their shards are committed inside the temporary directory) before the
     * bad one fails at its last line: still nothing may remain. */
    char *big = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&big, &len);
    for (int d = 0; d < 2000; d++)
        fprintf(m, "Riga %d di un file valido che viene scritto per intero.\n", d);
    fclose(m);
    const char *in[] = {write_file("g1.txt", big, len), write_file("g2.txt", big, len),
                        WRITE("late.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": b}\n")};
    free(big);
    char *out = path_of("out");
    expect_refused(opts(out, in, 3), "late.jsonl:3:", "malformed JSON");
    flas_prepare_opts o = opts(out, in, 3);
    o.threads = 1;
    expect_refused(o, "late.jsonl:3:", "malformed JSON");
}
END_TEST

START_TEST(existing_output_and_missing_inputs_are_refused)
{
    char *out = path_of("exists");
    mkdir(out, 0755);
    const char *in[] = {WRITE("a.txt", "testo\n")};
    char err[1024];
    flas_prepare_stats st;
    flas_prepare_opts o = opts(out, in, 1);
    ck_assert_int_eq(flas_prepare_run(&o, &st, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "exists"), "%s", err);
    rmdir(out);
    const char *missing[] = {"/nonexistent/input.txt"};
    expect_refused(opts(out, missing, 1), "/nonexistent/input.txt", "No such file");
    o = opts(out, in, 1);
    o.tokenizer_path = "/nonexistent/tokenizer.model";
    expect_refused(o, "/nonexistent/tokenizer.model", NULL);
}
END_TEST

START_TEST(a_stop_request_abandons_the_run)
{
    volatile sig_atomic_t stop = 1;
    const char *in[] = {WRITE("a.txt", "uno\ndue\n")};
    char *out = path_of("out");
    flas_prepare_opts o = opts(out, in, 1);
    o.stop = &stop;
    expect_refused(o, "interrupted", NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("prepare");
    TCase *tc = tcase_create("prepare");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, lines_become_bos_separated_documents_in_input_order);
    tcase_add_test(tc, paragraphs_json_lines_and_gzip);
    tcase_add_test(tc, same_shards_for_any_thread_count_and_split);
    tcase_add_test(tc, malformed_json_is_refused_with_file_and_line);
    tcase_add_test(tc, invalid_utf8_is_refused_or_replaced_and_counted);
    tcase_add_test(tc, empty_input_is_refused);
    tcase_add_test(tc, vocabulary_mismatch_is_refused);
    tcase_add_test(tc, a_failing_file_leaves_no_partial_output);
    tcase_add_test(tc, existing_output_and_missing_inputs_are_refused);
    tcase_add_test(tc, a_stop_request_abandons_the_run);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
