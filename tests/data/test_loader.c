/* The data loader: windows are the stream (across shard boundaries), ranks never share a window,
 * shuffling is a deterministic permutation per seed and epoch, a restored cursor continues with
 * the very next batch, the validation iterator walks once, and foreign shards are refused.
 * The test stream's token at position p is p itself, so every row tells where it came from. */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/loader.h"
#include "flas/shards.h"

#define VOCAB 100000 /* > 65536: uint32 tokens, and every position below it is a valid id */
#define T 16
static const uint64_t shard_sizes[] = {10007, 20011, 30001}; /* windows straddle the boundaries */
#define N_TOKENS (10007 + 20011 + 30001)
#define N_WINDOWS ((N_TOKENS - 1) / T)

static char dir[256];

static void write_stream_shard(const char *name, uint64_t first, uint64_t count, uint32_t vocab,
                               unsigned char sha_byte)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    flas_shard_header h = {.vocab_size = vocab, .bos_id = 1, .eos_id = 2, .flags = FLAS_SHARD_DOC_BOS};
    memset(h.tokenizer_sha256, sha_byte, FLAS_SHA256_BYTES);
    flas_shard_writer *w = flas_shard_writer_open(path, &h, err, sizeof err);
    ck_assert_msg(w != NULL, "%s", err);
    int32_t doc[1000];
    for (uint64_t p = 0; p < count;) {
        size_t n = count - p < 1000 ? (size_t)(count - p) : 1000;
        for (size_t i = 0; i < n; i++)
            doc[i] = (int32_t)((first + p + i) % vocab);
        ck_assert_int_eq(flas_shard_writer_add(w, doc, n, err, sizeof err), 0);
        p += n;
    }
    ck_assert_msg(flas_shard_writer_commit(w, NULL, err, sizeof err) == 0, "%s", err);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "%s/flas-loader-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    uint64_t first = 0;
    char name[32];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "part-%d.flastok", i);
        write_stream_shard(name, first, shard_sizes[i], VOCAB, 0x11);
        first += shard_sizes[i];
    }
}

static void teardown(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            char p[512];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

static flas_loader *open_loader(int batch, int rank, int size, uint64_t seed, int shuffle)
{
    const char *paths[] = {dir};
    flas_loader_opts o = {.seq_len = T, .batch = batch, .dp_rank = rank, .dp_size = size,
                          .seed = seed, .shuffle = shuffle, .vocab_size = VOCAB};
    char err[512];
    flas_loader *l = flas_loader_open(paths, 1, &o, err, sizeof err);
    ck_assert_msg(l != NULL, "%s", err);
    return l;
}

/* Next batch; checks that every row is a window of the stream and its targets the tokens moved by
 * one; writes the rows' window indices to windows[batch]. */
static void next_windows(flas_loader *l, int batch, uint64_t *windows)
{
    int32_t tok[64 * T], tgt[64 * T];
    char err[512];
    ck_assert_msg(flas_loader_next(l, tok, tgt, err, sizeof err) == 1, "%s", err);
    for (int b = 0; b < batch; b++) {
        const int32_t *row = tok + b * T;
        ck_assert_int_eq(row[0] % T, 0);
        for (int t = 0; t < T; t++) {
            ck_assert_int_eq(row[t], row[0] + t);
            ck_assert_int_eq(tgt[b * T + t], row[0] + t + 1);
        }
        windows[b] = (uint64_t)row[0] / T;
    }
}

START_TEST(windows_are_the_stream_in_order)
{
    flas_loader *l = open_loader(4, 0, 1, 0, 0);
    ck_assert_uint_eq(flas_loader_n_tokens(l), N_TOKENS);
    ck_assert_uint_eq(flas_loader_n_windows(l), N_WINDOWS);
    ck_assert_int_eq(flas_loader_n_shards(l), 3);
    const uint64_t steps = flas_loader_steps_per_epoch(l);
    ck_assert_uint_eq(steps, N_WINDOWS / 4);
    uint64_t w[4];
    for (uint64_t s = 0; s < steps; s++) {
        next_windows(l, 4, w);
        for (int b = 0; b < 4; b++)
            ck_assert_uint_eq(w[b], s * 4 + (uint64_t)b);
    }
    next_windows(l, 4, w); /* the next epoch starts over */
    ck_assert_uint_eq(w[0], 0);
    flas_loader_cursor c;
    flas_loader_get_cursor(l, &c);
    ck_assert_uint_eq(c.epoch, 1);
    ck_assert_uint_eq(c.position, 4);
    flas_loader_close(l);
}
END_TEST

START_TEST(ranks_get_disjoint_windows)
{
    enum { DP = 3, B = 4 };
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        flas_loader *l[DP];
        for (int r = 0; r < DP; r++)
            l[r] = open_loader(B, r, DP, 7, shuffle);
        const uint64_t steps = flas_loader_steps_per_epoch(l[0]);
        ck_assert_uint_eq(steps, N_WINDOWS / (DP * B));
        for (int epoch = 0; epoch < 2; epoch++) {
            unsigned char *seen = calloc(N_WINDOWS, 1);
            for (uint64_t s = 0; s < steps; s++)
                for (int r = 0; r < DP; r++) {
                    uint64_t w[B];
                    next_windows(l[r], B, w);
                    for (int b = 0; b < B; b++) {
                        ck_assert_uint_lt(w[b], N_WINDOWS);
                        ck_assert_msg(!seen[w[b]], "window %llu handed out twice in epoch %d",
                                      (unsigned long long)w[b], epoch);
                        seen[w[b]] = 1;
                    }
                }
            uint64_t total = 0;
            for (uint64_t i = 0; i < N_WINDOWS; i++)
                total += seen[i];
            ck_assert_uint_eq(total, steps * DP * B);
            free(seen);
        }
        for (int r = 0; r < DP; r++)
            flas_loader_close(l[r]);
    }
}
END_TEST

START_TEST(permutation_is_a_bijection)
{
    const uint64_t sizes[] = {1, 2, 3, 5, 16, 17, 1000, 4097, 65537};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const uint64_t n = sizes[k];
        unsigned char *hit = calloc(n, 1);
        uint64_t fixed = 0;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t j = flas_loader_permute(i, n, 42, 3);
            ck_assert_uint_lt(j, n);
            ck_assert(!hit[j]);
            hit[j] = 1;
            fixed += j == i;
        }
        if (n >= 1000) /* a shuffle, not the identity */
            ck_assert_uint_lt(fixed, n / 50);
        free(hit);
    }
}
END_TEST

START_TEST(shuffling_is_deterministic_per_seed)
{
    enum { STEPS = 50, B = 4 };
    uint64_t a[STEPS][B], b[STEPS][B], c[STEPS][B], plain[STEPS][B];
    flas_loader *la = open_loader(B, 0, 1, 7, 1), *lb = open_loader(B, 0, 1, 7, 1);
    flas_loader *lc = open_loader(B, 0, 1, 8, 1), *lp = open_loader(B, 0, 1, 7, 0);
    int same_c = 1, same_plain = 1;
    for (int s = 0; s < STEPS; s++) {
        next_windows(la, B, a[s]);
        next_windows(lb, B, b[s]);
        next_windows(lc, B, c[s]);
        next_windows(lp, B, plain[s]);
        for (int i = 0; i < B; i++) {
            ck_assert_uint_eq(a[s][i], b[s][i]);
            same_c &= a[s][i] == c[s][i];
            same_plain &= a[s][i] == plain[s][i];
        }
    }
    ck_assert_msg(!same_c, "seeds 7 and 8 gave the same order");
    ck_assert_msg(!same_plain, "shuffle gave the stream order");
    /* Each epoch has its own order. */
    ck_assert_uint_ne(flas_loader_permute(0, N_WINDOWS, 7, 0) * N_WINDOWS + flas_loader_permute(1, N_WINDOWS, 7, 0),
                      flas_loader_permute(0, N_WINDOWS, 7, 1) * N_WINDOWS + flas_loader_permute(1, N_WINDOWS, 7, 1));
    flas_loader_close(la);
    flas_loader_close(lb);
    flas_loader_close(lc);
    flas_loader_close(lp);
}
END_TEST

START_TEST(restored_cursor_continues_with_the_next_batch)
{
    enum { B = 4, DP = 2, BEFORE = 400, AFTER = 200 };
    flas_loader *a = open_loader(B, 1, DP, 3, 1);
    ck_assert_uint_lt(flas_loader_steps_per_epoch(a), BEFORE + AFTER); /* crosses an epoch */
    uint64_t w[B], expect[AFTER][B];
    for (int s = 0; s < BEFORE; s++)
        next_windows(a, B, w);
    flas_loader_cursor c, back;
    uint64_t words[FLAS_LOADER_CURSOR_WORDS];
    flas_loader_get_cursor(a, &c);
    flas_loader_cursor_to_words(&c, words); /* what a checkpoint stores */
    for (int s = 0; s < AFTER; s++)
        next_windows(a, B, expect[s]);
    flas_loader_close(a);

    flas_loader *b = open_loader(B, 1, DP, 3, 1);
    flas_loader_cursor_from_words(words, &back);
    char err[512];
    ck_assert_msg(flas_loader_set_cursor(b, &back, err, sizeof err) == 0, "%s", err);
    for (int s = 0; s < AFTER; s++) {
        next_windows(b, B, w);
        for (int i = 0; i < B; i++)
            ck_assert_uint_eq(w[i], expect[s][i]);
    }
    flas_loader_close(b);

    /* A cursor for other settings or data is refused with the reason. */
    flas_loader *other = open_loader(B, 1, DP, 4, 1);
    ck_assert_int_eq(flas_loader_set_cursor(other, &back, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "seed"));
    flas_loader_close(other);
    flas_loader_cursor bad = back;
    bad.n_tokens++;
    b = open_loader(B, 1, DP, 3, 1);
    ck_assert_int_eq(flas_loader_set_cursor(b, &bad, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "other data"));
    bad = back;
    bad.seq_len = 32;
    ck_assert_int_eq(flas_loader_set_cursor(b, &bad, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "seq_len"));
    bad = back;
    bad.version = 99;
    ck_assert_int_eq(flas_loader_set_cursor(b, &bad, err, sizeof err), -1);
    flas_loader_close(b);
}
END_TEST

START_TEST(a_cursor_survives_a_change_of_rank_count)
{
    /* Saved with 2 ranks x 4 rows, restored on 1 rank x 8 rows: the next batch is what both ranks
     * would have taken next, so no window is skipped or repeated. */
    flas_loader *r0 = open_loader(4, 0, 2, 9, 1), *r1 = open_loader(4, 1, 2, 9, 1);
    uint64_t w[8], w0[4], w1[4];
    for (int s = 0; s < 10; s++) {
        next_windows(r0, 4, w0);
        next_windows(r1, 4, w1);
    }
    flas_loader_cursor c;
    flas_loader_get_cursor(r0, &c);
    next_windows(r0, 4, w0);
    next_windows(r1, 4, w1);
    flas_loader *one = open_loader(8, 0, 1, 9, 1);
    char err[512];
    ck_assert_msg(flas_loader_set_cursor(one, &c, err, sizeof err) == 0, "%s", err);
    next_windows(one, 8, w);
    for (int i = 0; i < 4; i++) {
        ck_assert_uint_eq(w[i], w0[i]);
        ck_assert_uint_eq(w[4 + i], w1[i]);
    }
    flas_loader_close(r0);
    flas_loader_close(r1);
    flas_loader_close(one);
}
END_TEST

START_TEST(validation_walks_once_and_rewinds)
{
    enum { B = 5, DP = 2 };
    const char *paths[] = {dir};
    char err[512];
    unsigned char *seen = calloc(N_WINDOWS, 1);
    for (int r = 0; r < DP; r++) {
        flas_loader *v = flas_loader_open_validation(paths, 1, T, B, r, DP, VOCAB, NULL, err, sizeof err);
        ck_assert_msg(v != NULL, "%s", err);
        uint64_t w[B], first[B], steps = 0;
        int32_t tok[B * T], tgt[B * T];
        while (1) {
            int rc = flas_loader_next(v, tok, tgt, err, sizeof err);
            ck_assert_int_ge(rc, 0);
            if (rc == 0)
                break;
            for (int b = 0; b < B; b++) {
                w[b] = (uint64_t)tok[b * T] / T;
                ck_assert(!seen[w[b]]);
                seen[w[b]] = 1;
                ck_assert_uint_eq(w[b], steps * B * DP + (uint64_t)r * B + (uint64_t)b); /* stream order */
                if (steps == 0)
                    first[b] = w[b];
            }
            steps++;
        }
        ck_assert_uint_eq(steps, N_WINDOWS / (B * DP));
        ck_assert_int_eq(flas_loader_next(v, tok, tgt, err, sizeof err), 0); /* stays at the end */
        flas_loader_rewind(v);
        next_windows(v, B, w);
        for (int b = 0; b < B; b++)
            ck_assert_uint_eq(w[b], first[b]);
        flas_loader_close(v);
    }
    free(seen);
}
END_TEST

START_TEST(foreign_shards_are_refused)
{
    const char *paths[] = {dir};
    char err[512];
    flas_loader_opts o = {.seq_len = T, .batch = 4, .dp_size = 1, .vocab_size = 32000};
    ck_assert_ptr_null(flas_loader_open(paths, 1, &o, err, sizeof err));
    ck_assert_msg(strstr(err, "100000") && strstr(err, "32000") && strstr(err, "part-0.flastok"), "%s", err);

    unsigned char other_sha[FLAS_SHA256_BYTES];
    memset(other_sha, 0x22, sizeof other_sha);
    o.vocab_size = VOCAB;
    o.tokenizer_sha256 = other_sha;
    ck_assert_ptr_null(flas_loader_open(paths, 1, &o, err, sizeof err));
    ck_assert_msg(strstr(err, "tokenizer"), "%s", err);

    /* Shards made by two tokenizers of the same size do not mix. */
    write_stream_shard("part-3.flastok", 0, 100, VOCAB, 0x33);
    o.tokenizer_sha256 = NULL;
    ck_assert_ptr_null(flas_loader_open(paths, 1, &o, err, sizeof err));
    ck_assert_msg(strstr(err, "part-3.flastok") && strstr(err, "tokenizer"), "%s", err);

    /* Too little data for one step. */
    const char *one[] = {"part-3.flastok"};
    char p3[512];
    snprintf(p3, sizeof p3, "%s/part-3.flastok", dir);
    one[0] = p3;
    o.batch = 8;
    ck_assert_ptr_null(flas_loader_open(one, 1, &o, err, sizeof err));
    ck_assert_msg(strstr(err, "fewer than one step"), "%s", err);
    o.batch = 0;
    ck_assert_ptr_null(flas_loader_open(one, 1, &o, err, sizeof err));
}
END_TEST

START_TEST(a_damaged_token_stops_the_batch)
{
    /* A uint16 shard whose payload holds an id >= vocab_size (the header hash is not re-checked at
     * open: that costs a full read; flas-prepare --verify does it). */
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/small.flastok", dir);
    flas_shard_header h = {.vocab_size = 1000, .bos_id = 1, .eos_id = 2};
    flas_shard_writer *w = flas_shard_writer_open(path, &h, err, sizeof err);
    int32_t ids[200];
    for (int i = 0; i < 200; i++)
        ids[i] = i;
    ck_assert_int_eq(flas_shard_writer_add(w, ids, 200, err, sizeof err), 0);
    ck_assert_int_eq(flas_shard_writer_commit(w, NULL, err, sizeof err), 0);
    int fd = open(path, O_WRONLY);
    const unsigned char big[2] = {0xff, 0xff};
    ck_assert_int_eq(pwrite(fd, big, 2, FLAS_SHARD_HEADER_BYTES + 2 * 5), 2);
    close(fd);
    const char *paths[] = {path};
    flas_loader_opts o = {.seq_len = T, .batch = 2, .dp_size = 1, .vocab_size = 1000};
    flas_loader *l = flas_loader_open(paths, 1, &o, err, sizeof err);
    ck_assert_msg(l != NULL, "%s", err);
    int32_t tok[2 * T], tgt[2 * T];
    ck_assert_int_eq(flas_loader_next(l, tok, tgt, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "65535") && strstr(err, "small.flastok"), "%s", err);
    flas_loader_close(l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("loader");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, windows_are_the_stream_in_order);
    tcase_add_test(tc, ranks_get_disjoint_windows);
    tcase_add_test(tc, permutation_is_a_bijection);
    tcase_add_test(tc, shuffling_is_deterministic_per_seed);
    tcase_add_test(tc, restored_cursor_continues_with_the_next_batch);
    tcase_add_test(tc, a_cursor_survives_a_change_of_rank_count);
    tcase_add_test(tc, validation_walks_once_and_rewinds);
    tcase_add_test(tc, foreign_shards_are_refused);
    tcase_add_test(tc, a_damaged_token_stops_the_batch);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
