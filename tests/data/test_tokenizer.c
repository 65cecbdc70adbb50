/* The tokenizer shim on real models trained at test time (FLAS_TEST_MODEL: flas-vocab's BPE with
 * byte fallback and identity normalisation; FLAS_TEST_MODEL_UNIGRAM: unigram, NFKC, no byte
 * fallback). Round trips are exact for the first model except for a literal U+2581 '▁' (which is
 * the model's own space symbol); the second model normalises (collapses spaces, NFKC, unknowns),
 * so it is shown NOT to round-trip. Ids themselves are compared with python3-sentencepiece by
 * oracle_tokenizer.py. */
#include <check.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/tokenizer.h"

static const char *model_path(const char *var)
{
    const char *p = getenv(var);
    ck_assert_msg(p && *p, "%s is not set: the test needs the model the data_vocab fixture trains", var);
    return p;
}

static flas_tokenizer *open_model(const char *var)
{
    char err[512];
    flas_tokenizer *t = flas_tokenizer_open(model_path(var), err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    return t;
}

static char *round_trip(const flas_tokenizer *t, const char *text, unsigned flags, flas_ids *ids)
{
    char err[512];
    ids->n = 0;
    ck_assert_msg(flas_tokenizer_encode(t, text, strlen(text), flags, ids, err, sizeof err) == 0, "%s", err);
    char *back = flas_tokenizer_decode(t, ids->ids, ids->n, NULL, err, sizeof err);
    ck_assert_msg(back != NULL, "%s", err);
    return back;
}

/* The edge cases. */
static const char *const edge_cases[] = {
    "ciao  mondo   tre",                         /* runs of spaces */
    "\ttab\tseparated\t\tcolumns",               /* tabs */
    "line one\nline two\n\nafter a blank line\n", /* newlines */
    "emoji 😀🇮🇹👍🏽 and ZWJ 👩‍💻",              /* emoji, flags, modifiers, ZWJ */
    "città perché è žluťoučký kůň úpěl ďábelské ódy", /* accents, Czech */
    "e\xcc\x81 decomposed vs \xc3\xa9 composed",     /* NFD and NFC */
    "text with <s> and </s> and <unk> inside",   /* control piece names as plain text */
    "  leading and trailing spaces  ",
    "",
    "\r\n",
    "数字 12345 and 3.14159",
};

START_TEST(model_facts)
{
    flas_tokenizer *t = open_model("FLAS_TEST_MODEL");
    ck_assert_int_eq(flas_tokenizer_vocab_size(t), 2000);
    ck_assert_int_eq(flas_tokenizer_unk_id(t), 0);
    ck_assert_int_eq(flas_tokenizer_bos_id(t), 1);
    ck_assert_int_eq(flas_tokenizer_eos_id(t), 2);
    ck_assert_int_eq(flas_tokenizer_byte_fallback(t), 1);
    ck_assert_str_eq(flas_tokenizer_piece(t, 1), "<s>");
    ck_assert_str_eq(flas_tokenizer_piece(t, 3), "<0x00>");
    ck_assert_ptr_null(flas_tokenizer_piece(t, 2000));
    ck_assert_ptr_null(flas_tokenizer_piece(t, -1));
    /* The hash is of the file's bytes (read here independently). */
    FILE *f = fopen(model_path("FLAS_TEST_MODEL"), "rb");
    ck_assert_ptr_nonnull(f);
    static unsigned char bytes[1 << 22];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    unsigned char sha[32];
    unsigned int hlen;
    EVP_Digest(bytes, n, sha, &hlen, EVP_sha256(), NULL);
    ck_assert_int_eq(memcmp(sha, flas_tokenizer_sha256(t), 32), 0);
    flas_tokenizer_close(t);

    t = open_model("FLAS_TEST_MODEL_UNIGRAM");
    ck_assert_int_eq(flas_tokenizer_vocab_size(t), 800);
    ck_assert_int_eq(flas_tokenizer_byte_fallback(t), 0);
    ck_assert_int_ne(memcmp(sha, flas_tokenizer_sha256(t), 32), 0);
    flas_tokenizer_close(t);
}
END_TEST

START_TEST(bos_and_eos_as_asked)
{
    flas_tokenizer *t = open_model("FLAS_TEST_MODEL");
    flas_ids a = {0}, b = {0};
    char err[256];
    const char *s = "Scegliete Strumenti - Opzioni.";
    ck_assert_int_eq(flas_tokenizer_encode(t, s, strlen(s), 0, &a, err, sizeof err), 0);
    ck_assert_int_eq(flas_tokenizer_encode(t, s, strlen(s), FLAS_TOK_BOS | FLAS_TOK_EOS, &b, err, sizeof err), 0);
    ck_assert_uint_eq(b.n, a.n + 2);
    ck_assert_int_eq(b.ids[0], 1);
    ck_assert_int_eq(b.ids[b.n - 1], 2);
    ck_assert_int_eq(memcmp(a.ids, b.ids + 1, a.n * sizeof *a.ids), 0);
    for (size_t i = 0; i < a.n; i++)
        ck_assert(a.ids[i] > 2);
    /* encode appends: a second call continues the buffer. */
    ck_assert_int_eq(flas_tokenizer_encode(t, s, strlen(s), FLAS_TOK_BOS, &a, err, sizeof err), 0);
    ck_assert_int_eq(a.ids[b.n - 2], 1);
    /* User text cannot smuggle in a BOS: "<s>" is ordinary characters. */
    flas_ids c = {0};
    const char *fake = "<s><s></s>";
    ck_assert_int_eq(flas_tokenizer_encode(t, fake, strlen(fake), 0, &c, err, sizeof err), 0);
    for (size_t i = 0; i < c.n; i++)
        ck_assert(c.ids[i] != 1 && c.ids[i] != 2);
    flas_ids_free(&a);
    flas_ids_free(&b);
    flas_ids_free(&c);
    flas_tokenizer_close(t);
}
END_TEST

START_TEST(byte_fallback_model_round_trips_exactly)
{
    flas_tokenizer *t = open_model("FLAS_TEST_MODEL");
    flas_ids ids = {0};
    for (size_t i = 0; i < sizeof edge_cases / sizeof edge_cases[0]; i++) {
        char *back = round_trip(t, edge_cases[i], FLAS_TOK_BOS | FLAS_TOK_EOS, &ids);
        ck_assert_msg(strcmp(back, edge_cases[i]) == 0, "'%s' came back as '%s'", edge_cases[i], back);
        free(back);
    }
    /* Unknown characters go through UTF-8 byte pieces, never unk. */
    char *back = round_trip(t, "\xf0\x9f\x98\x80", 0, &ids);
    for (size_t i = 0; i < ids.n; i++)
        ck_assert_int_ne(ids.ids[i], 0);
    free(back);
    /* The exception: '▁' is the model's space, so a literal one decodes as a space. */
    back = round_trip(t, "a\xe2\x96\x81" "b", 0, &ids);
    ck_assert_str_eq(back, "a b");
    free(back);
    flas_ids_free(&ids);
    flas_tokenizer_close(t);
}
END_TEST

START_TEST(normalising_model_does_not_round_trip)
{
    flas_tokenizer *t = open_model("FLAS_TEST_MODEL_UNIGRAM");
    flas_ids ids = {0};
    char *back = round_trip(t, "ciao  mondo   tre", 0, &ids);
    ck_assert_str_eq(back, "ciao mondo tre"); /* remove_extra_whitespaces */
    free(back);
    back = round_trip(t, "\xef\xbd\x86\xef\xbd\x95\xef\xbd\x8c\xef\xbd\x8c width", 0, &ids);
    ck_assert_str_eq(back, "full width"); /* NFKC folds full-width letters */
    free(back);
    back = round_trip(t, "emoji \xf0\x9f\x98\x80", 0, &ids);
    ck_assert_int_eq(ids.ids[ids.n - 1], flas_tokenizer_unk_id(t)); /* no byte fallback: unk */
    ck_assert_ptr_nonnull(strstr(back, "\xe2\x81\x87"));          /* decoded as ' ⁇ ' */
    free(back);
    flas_ids_free(&ids);
    flas_tokenizer_close(t);
}
END_TEST

typedef struct {
    const flas_tokenizer *t;
    flas_ids ids;
} job;

static void *encode_many(void *arg)
{
    job *j = arg;
    char err[256];
    for (int k = 0; k < 200; k++) {
        j->ids.n = 0;
        for (size_t i = 0; i < sizeof edge_cases / sizeof edge_cases[0]; i++)
            if (flas_tokenizer_encode(j->t, edge_cases[i], strlen(edge_cases[i]), FLAS_TOK_BOS, &j->ids, err,
                                      sizeof err) != 0)
                return (void *)1;
    }
    return NULL;
}

START_TEST(encoding_is_thread_safe)
{
    flas_tokenizer *t = open_model("FLAS_TEST_MODEL");
    job jobs[3] = {{t, {0}}, {t, {0}}, {t, {0}}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, encode_many, &jobs[i]);
    for (int i = 0; i < 3; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        ck_assert_ptr_null(rc);
    }
    for (int i = 1; i < 3; i++) {
        ck_assert_uint_eq(jobs[i].ids.n, jobs[0].ids.n);
        ck_assert_int_eq(memcmp(jobs[i].ids.ids, jobs[0].ids.ids, jobs[0].ids.n * 4), 0);
    }
    for (int i = 0; i < 3; i++)
        flas_ids_free(&jobs[i].ids);
    flas_tokenizer_close(t);
}
END_TEST

START_TEST(bad_models_and_ids_are_refused)
{
    char err[512];
    ck_assert_ptr_null(flas_tokenizer_open("/nonexistent/tokenizer.model", err, sizeof err));
    ck_assert_msg(strstr(err, "/nonexistent/tokenizer.model") && strstr(err, "No such file"), "%s", err);
    char path[] = "/tmp/flas-not-a-model-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_eq(write(fd, "this is not a protobuf\n", 23), 23);
    close(fd);
    ck_assert_ptr_null(flas_tokenizer_open(path, err, sizeof err));
    ck_assert_msg(strstr(err, path) && strstr(err, "not a SentencePiece model"), "%s", err);
    unlink(path);

    flas_tokenizer *t = open_model("FLAS_TEST_MODEL");
    const int32_t bad[] = {5, 2000};
    ck_assert_ptr_null(flas_tokenizer_decode(t, bad, 2, NULL, err, sizeof err));
    ck_assert_msg(strstr(err, "2000") && strstr(err, "position 1"), "%s", err);
    flas_tokenizer_close(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("tokenizer");
    tcase_add_test(tc, model_facts);
    tcase_add_test(tc, bos_and_eos_as_asked);
    tcase_add_test(tc, byte_fallback_model_round_trips_exactly);
    tcase_add_test(tc, normalising_model_does_not_round_trip);
    tcase_add_test(tc, encoding_is_thread_safe);
    tcase_add_test(tc, bad_models_and_ids_are_refused);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
