/* Token shards: the header round-trips, tokens come back as written (uint16 and uint32), damaged
 * files are refused with the path, and a shard never becomes visible before its commit (also when
 * the writer is killed). */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "flas/shards.h"

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "%s/flas-shards-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0)))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* Entries of dir, hidden ones included (".", ".." excluded). */
static int count_entries(int *hidden)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    *hidden = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        n++;
        *hidden += e->d_name[0] == '.';
    }
    closedir(d);
    return n;
}

static flas_shard_header proto(uint32_t vocab)
{
    flas_shard_header h = {0};
    h.vocab_size = vocab;
    h.bos_id = 1;
    h.eos_id = 2;
    h.flags = FLAS_SHARD_DOC_BOS;
    for (int i = 0; i < FLAS_SHA256_BYTES; i++)
        h.tokenizer_sha256[i] = (unsigned char)(0xA0 + i);
    return h;
}

/* Writes docs documents of len tokens with id(i) = (i * 7919 + 3) % vocab; returns the path. */
static char *write_shard(const char *name, uint32_t vocab, int docs, int len)
{
    char *path;
    ck_assert_int_ge(asprintf(&path, "%s/%s", dir, name), 0);
    char err[256];
    flas_shard_header h = proto(vocab);
    flas_shard_writer *w = flas_shard_writer_open(path, &h, err, sizeof err);
    ck_assert_msg(w != NULL, "%s", err);
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    uint64_t k = 0;
    for (int d = 0; d < docs; d++) {
        for (int i = 0; i < len; i++, k++)
            ids[i] = (int32_t)((k * 7919 + 3) % vocab);
        ck_assert_int_eq(flas_shard_writer_add(w, ids, (size_t)len, err, sizeof err), 0);
    }
    free(ids);
    flas_shard_header out;
    ck_assert_msg(flas_shard_writer_commit(w, &out, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(out.n_tokens, (uint64_t)docs * (uint64_t)len);
    ck_assert_uint_eq(out.n_documents, (uint64_t)docs);
    return path;
}

START_TEST(header_round_trips)
{
    flas_shard_header h = proto(32000), back;
    h.token_bytes = 2;
    h.version = FLAS_SHARD_VERSION;
    h.n_tokens = 0x123456789ull;
    h.n_documents = 77;
    h.eos_id = -1;
    h.flags = FLAS_SHARD_DOC_BOS | FLAS_SHARD_DOC_EOS;
    for (int i = 0; i < FLAS_SHA256_BYTES; i++)
        h.payload_sha256[i] = (unsigned char)i;
    unsigned char raw[FLAS_SHARD_HEADER_BYTES];
    flas_shard_header_encode(&h, raw);
    ck_assert_int_eq(memcmp(raw, "FLASTOK", 8), 0);
    ck_assert_int_eq(raw[24], 0x89); /* little-endian n_tokens at offset 24 */
    ck_assert_int_eq(raw[28], 0x01);
    char err[128];
    ck_assert_int_eq(flas_shard_header_decode(raw, &back, err, sizeof err), 0);
    ck_assert_int_eq(memcmp(&h, &back, sizeof h), 0);
    raw[0] = 'X';
    ck_assert_int_eq(flas_shard_header_decode(raw, &back, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "magic"));
    raw[0] = 'F';
    raw[20] = 4; /* 4-byte tokens for a 32000 vocabulary: inconsistent */
    ck_assert_int_eq(flas_shard_header_decode(raw, &back, err, sizeof err), -1);
    ck_assert_uint_eq(flas_shard_token_bytes(65536), 2);
    ck_assert_uint_eq(flas_shard_token_bytes(65537), 4);
}
END_TEST

static void check_round_trip(uint32_t vocab, uint32_t want_bytes)
{
    make_dir();
    /* 70000 tokens: more than the writer's buffer, so flushes happen mid-shard. */
    char *path = write_shard("a.flastok", vocab, 7, 10000);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, FLAS_SHARD_HEADER_BYTES + 70000 * (off_t)want_bytes);
    flas_shard s;
    char err[256];
    ck_assert_msg(flas_shard_open(&s, path, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(s.h.token_bytes, want_bytes);
    ck_assert_uint_eq(s.h.vocab_size, vocab);
    ck_assert_int_eq(s.h.bos_id, 1);
    ck_assert_int_eq(memcmp(s.h.tokenizer_sha256, proto(vocab).tokenizer_sha256, FLAS_SHA256_BYTES), 0);
    for (uint64_t k = 0; k < s.h.n_tokens; k++)
        ck_assert_uint_eq(flas_shard_token(&s, k), (uint32_t)((k * 7919 + 3) % vocab));
    ck_assert_msg(flas_shard_verify(&s, err, sizeof err) == 0, "%s", err);
    flas_shard_close(&s);
    free(path);
    remove_dir();
}

START_TEST(tokens_round_trip_uint16) { check_round_trip(32000, 2); }
END_TEST
START_TEST(tokens_round_trip_uint32) { check_round_trip(100000, 4); }
END_TEST

START_TEST(ids_outside_the_vocabulary_are_refused)
{
    make_dir();
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/x.flastok", dir);
    flas_shard_header h = proto(1000);
    flas_shard_writer *w = flas_shard_writer_open(path, &h, err, sizeof err);
    int32_t bad[] = {1, 5, 1000};
    ck_assert_int_eq(flas_shard_writer_add(w, bad, 3, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "1000"));
    flas_shard_writer_abort(w);
    int hidden;
    ck_assert_int_eq(count_entries(&hidden), 0);
    remove_dir();
}
END_TEST

START_TEST(nothing_is_visible_before_commit)
{
    make_dir();
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/x.flastok", dir);
    flas_shard_header h = proto(1000);
    flas_shard_writer *w = flas_shard_writer_open(path, &h, err, sizeof err);
    int32_t ids[] = {1, 5, 7};
    ck_assert_int_eq(flas_shard_writer_add(w, ids, 3, err, sizeof err), 0);
    int hidden;
    ck_assert_int_eq(count_entries(&hidden), 1);
    ck_assert_int_eq(hidden, 1); /* only the temporary */
    ck_assert_int_eq(access(path, F_OK), -1);
    flas_shard_writer_abort(w);
    ck_assert_int_eq(count_entries(&hidden), 0);
    /* An empty shard is refused and leaves nothing. */
    w = flas_shard_writer_open(path, &h, err, sizeof err);
    ck_assert_int_eq(flas_shard_writer_commit(w, NULL, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no tokens"));
    ck_assert_int_eq(count_entries(&hidden), 0);
    remove_dir();
}
END_TEST

START_TEST(a_killed_writer_leaves_no_visible_shard)
{
    make_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/killed.flastok", dir);
    pid_t pid = fork();
    if (pid == 0) {
        char err[256];
        flas_shard_header h = proto(1000);
        flas_shard_writer *w = flas_shard_writer_open(path, &h, err, sizeof err);
        int32_t ids[4096];
        for (int i = 0; i < 4096; i++)
            ids[i] = i % 1000;
        for (int k = 0; k < 64; k++)
            flas_shard_writer_add(w, ids, 4096, err, sizeof err);
        raise(SIGKILL); /* before the commit */
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ck_assert_int_eq(access(path, F_OK), -1);
    int hidden;
    ck_assert_int_eq(count_entries(&hidden), 1);
    ck_assert_int_eq(hidden, 1);
    /* Listing the directory skips the leftover temporary: there is no shard. */
    const char *paths[] = {dir};
    char **list;
    int n;
    char err[512];
    ck_assert_int_eq(flas_shard_list(paths, 1, &list, &n, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no *.flastok"));
    remove_dir();
}
END_TEST

START_TEST(damaged_shards_are_refused_with_the_path)
{
    make_dir();
    char *path = write_shard("d.flastok", 1000, 3, 100);
    flas_shard s;
    char err[512];
    /* Flip one token byte: the header still parses, verify catches it. */
    int fd = open(path, O_RDWR);
    unsigned char b;
    ck_assert_int_eq(pread(fd, &b, 1, FLAS_SHARD_HEADER_BYTES + 10), 1);
    b ^= 1;
    ck_assert_int_eq(pwrite(fd, &b, 1, FLAS_SHARD_HEADER_BYTES + 10), 1);
    ck_assert_int_eq(flas_shard_open(&s, path, err, sizeof err), 0);
    ck_assert_int_eq(flas_shard_verify(&s, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "damaged"));
    flas_shard_close(&s);
    /* Truncate it: refused at open. */
    ck_assert_int_eq(ftruncate(fd, FLAS_SHARD_HEADER_BYTES + 599), 0);
    close(fd);
    ck_assert_int_eq(flas_shard_open(&s, path, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "truncated"));
    ck_assert_ptr_nonnull(strstr(err, path));
    /* Not a shard at all. */
    fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_int_eq(write(fd, "hello, world, this is text and not a token shard at all..........."
                              "..................................................................",
                           132), 132);
    close(fd);
    ck_assert_int_eq(flas_shard_open(&s, path, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "magic"));
    free(path);
    remove_dir();
}
END_TEST

START_TEST(directories_list_in_name_order)
{
    make_dir();
    free(write_shard("b.flastok", 1000, 1, 10));
    free(write_shard("a.flastok", 1000, 1, 10));
    free(write_shard("c.flastok", 1000, 1, 10));
    char other[512];
    snprintf(other, sizeof other, "%s/notes.txt", dir);
    FILE *f = fopen(other, "w");
    fputs("not a shard\n", f);
    fclose(f);
    const char *paths[] = {dir};
    char **list;
    int n;
    char err[512];
    ck_assert_int_eq(flas_shard_list(paths, 1, &list, &n, err, sizeof err), 0);
    ck_assert_int_eq(n, 3);
    ck_assert_ptr_nonnull(strstr(list[0], "/a.flastok"));
    ck_assert_ptr_nonnull(strstr(list[2], "/c.flastok"));
    flas_shard_list_free(list, n);
    const char *bad[] = {other};
    ck_assert_int_eq(flas_shard_list(bad, 1, &list, &n, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "notes.txt"));
    const char *missing[] = {"/nonexistent/x.flastok"};
    ck_assert_int_eq(flas_shard_list(missing, 1, &list, &n, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/x.flastok"));
    remove_dir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shards");
    TCase *tc = tcase_create("shards");
    tcase_add_test(tc, header_round_trips);
    tcase_add_test(tc, tokens_round_trip_uint16);
    tcase_add_test(tc, tokens_round_trip_uint32);
    tcase_add_test(tc, ids_outside_the_vocabulary_are_refused);
    tcase_add_test(tc, nothing_is_visible_before_commit);
    tcase_add_test(tc, a_killed_writer_leaves_no_visible_shard);
    tcase_add_test(tc, damaged_shards_are_refused_with_the_path);
    tcase_add_test(tc, directories_list_in_name_order);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
