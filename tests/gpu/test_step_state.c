/* The CPU half of the GPU step test: a step state written by the CPU reads back field for field, the
 * CPU core re-run from what was read reproduces the stored loss, logits, grads and step losses bit for
 * bit (same build, same path, same threads), and the reader refuses hostile files with a one-line
 * reason instead of crashing or reading past its buffer (the suite also runs under ASan + UBSan). */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/llama.h"
#include "flas/optim.h"
#include "flas/step_state.h"
#include "step_state_make.h"

#define THREADS 2 /* maker and re-run alike: bitwise equality is promised for one thread count */

/* GQA (4 heads over 2 kv heads), untied head: every tensor kind is in the file. */
static const flas_config small = {16, 2, 4, 2, 24, 11, 8, 1e-5f, 10000.0f, 0};
/* The tied layout of llama2.c's tiny models. */
static const flas_config tied = {32, 1, 4, 4, 64, 37, 8, 1e-5f, 10000.0f, 1};

#define DIR_TEMPLATE "/tmp/test_step_state.XXXXXX"
static char dir[sizeof DIR_TEMPLATE];

static void setup(void)
{
    memcpy(dir, DIR_TEMPLATE, sizeof dir); /* anew per test: with CK_FORK=no one process runs them all */
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        char p[512];
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

static void path_of(char *p, size_t n, const char *name) { snprintf(p, n, "%s/%s", dir, name); }

static void make(const flas_config *c, int steps, int reference, flas_step_state *s)
{
    step_state_opts o;
    step_state_opts_default(&o, c);
    o.B = 3;
    o.T = c->seq_len;
    o.seed = 42;
    o.steps = steps;
    o.reference = reference;
    o.threads = THREADS;
    o.adamw.lr_max = 1e-2f;
    o.adamw.lr_min = 1e-3f;
    o.adamw.warmup = 1;
    o.adamw.decay = steps;
    char err[256];
    ck_assert_msg(step_state_make(&o, s, err, sizeof err) == 0, "%s", err);
}

/* The file's bytes, for the in-memory hostile cases. */
static unsigned char *slurp(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    unsigned char *b = malloc((size_t)n + 16); /* room for the trailing-bytes case */
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static unsigned char *written(const flas_config *c, int steps, size_t *len)
{
    flas_step_state s;
    char p[512], err[256];
    make(c, steps, 0, &s);
    path_of(p, sizeof p, "w.state");
    ck_assert_msg(flas_step_state_write(p, &s, err, sizeof err) == 0, "%s", err);
    flas_step_state_free(&s);
    return slurp(p, len);
}

#define SAME(a, b, n) ck_assert_msg((n) == 0 || memcmp((a), (b), (n)) == 0, "%s differs", #a)

static void expect_equal(const flas_step_state *a, const flas_step_state *b)
{
    ck_assert(memcmp(&a->cfg, &b->cfg, sizeof a->cfg) == 0);
    ck_assert_int_eq(a->reference, b->reference);
    ck_assert_int_eq(a->B, b->B);
    ck_assert_int_eq(a->T, b->T);
    ck_assert(a->seed == b->seed);
    ck_assert_uint_eq(a->n_params, b->n_params);
    ck_assert_uint_eq(a->n_logits, b->n_logits);
    ck_assert_int_eq(a->n_steps, b->n_steps);
    ck_assert(memcmp(&a->loss, &b->loss, 4) == 0);
    ck_assert(memcmp(&a->adamw, &b->adamw, sizeof a->adamw) == 0);
    size_t bt = (size_t)a->B * a->T, S = (size_t)a->n_steps;
    SAME(a->params, b->params, 4 * a->n_params);
    SAME(a->grads, b->grads, 4 * a->n_params);
    SAME(a->tokens, b->tokens, 4 * bt);
    SAME(a->targets, b->targets, 4 * bt);
    SAME(a->logits, b->logits, 4 * a->n_logits);
    SAME(a->step_tokens, b->step_tokens, 4 * bt * S);
    SAME(a->step_targets, b->step_targets, 4 * bt * S);
    SAME(a->step_lr, b->step_lr, 4 * S);
    SAME(a->step_loss, b->step_loss, 4 * S);
    SAME(a->step_norm, b->step_norm, 4 * S);
}

/* What a GPU trainer does with the file, done by the CPU core: the reference step, then the replay of
 * the recorded steps; all of it must give the stored bits. */
static void rerun(const flas_step_state *s)
{
    flas_model m;
    char err[256];
    ck_assert_msg(flas_model_create(&m, &s->cfg, 0, 1, s->B, s->T, THREADS, err, sizeof err) == 0, "%s", err);
    flas_model_use_reference(&m, s->reference);
    ck_assert_uint_eq(m.table.n_params, s->n_params);
    memcpy(m.params, s->params, 4 * s->n_params);
    flas_model_zero_grad(&m);
    float loss, *logits = malloc(4 * ((size_t)s->B * s->T * s->cfg.vocab_size));
    ck_assert_ptr_nonnull(logits);
    ck_assert_msg(flas_model_forward(&m, s->tokens, s->targets, s->B, s->T, &loss, logits) == 0, "%s", m.err);
    ck_assert_int_eq(flas_model_backward(&m, 1.0f), 0);
    ck_assert_msg(memcmp(&loss, &s->loss, 4) == 0, "loss %.9g != stored %.9g", (double)loss, (double)s->loss);
    SAME(m.grads, s->grads, 4 * s->n_params);
    SAME(logits, s->logits, 4 * s->n_logits);
    free(logits);

    flas_adamw opt;
    size_t bt = (size_t)s->B * s->T;
    ck_assert_int_eq(flas_adamw_init(&opt, &m.table, s->adamw.beta1, s->adamw.beta2, s->adamw.eps,
                                     s->adamw.weight_decay), 0);
    for (int k = 0; k < s->n_steps; k++) {
        flas_model_zero_grad(&m);
        ck_assert_int_eq(flas_model_forward(&m, s->step_tokens + k * bt, s->step_targets + k * bt, s->B, s->T,
                                            &loss, NULL), 0);
        ck_assert_int_eq(flas_model_backward(&m, 1.0f), 0);
        float norm = flas_model_clip_grad_norm(&m, s->adamw.clip);
        flas_adamw_step(&opt, m.params, m.grads, s->step_lr[k]);
        ck_assert_msg(memcmp(&loss, &s->step_loss[k], 4) == 0, "step %d loss %.9g != %.9g", k, (double)loss,
                      (double)s->step_loss[k]);
        ck_assert_msg(memcmp(&norm, &s->step_norm[k], 4) == 0, "step %d norm differs", k);
    }
    flas_adamw_free(&opt);
    flas_model_free(&m);
}

static void roundtrip_and_rerun(const flas_config *c, int steps, int reference)
{
    flas_step_state made, got;
    char p[512], err[256];
    make(c, steps, reference, &made);
    path_of(p, sizeof p, "a.state");
    ck_assert_msg(flas_step_state_write(p, &made, err, sizeof err) == 0, "%s", err);
    size_t len;
    free(slurp(p, &len));
    ck_assert_uint_eq(len, flas_step_state_file_bytes(&made));
    ck_assert_msg(flas_step_state_read(p, &got, err, sizeof err) == 0, "%s", err);
    expect_equal(&made, &got);
    if (steps)
        ck_assert(memcmp(&got.step_loss[0], &got.loss, 4) == 0); /* step 0 is the reference batch */
    rerun(&got);
    flas_step_state_free(&made);
    flas_step_state_free(&got);
}

START_TEST(fast_path_reruns_bit_for_bit) { roundtrip_and_rerun(&small, 4, 0); }
END_TEST

START_TEST(reference_path_reruns_bit_for_bit) { roundtrip_and_rerun(&tied, 2, 1); }
END_TEST

START_TEST(no_steps_no_logits)
{
    step_state_opts o;
    flas_step_state s, got;
    char p[512], err[256];
    step_state_opts_default(&o, &tied);
    o.logits = 0;
    o.threads = THREADS;
    ck_assert_int_eq(step_state_make(&o, &s, err, sizeof err), 0);
    ck_assert_ptr_null(s.logits);
    ck_assert_ptr_null(s.step_loss);
    path_of(p, sizeof p, "b.state");
    ck_assert_msg(flas_step_state_write(p, &s, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(flas_step_state_read(p, &got, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(got.n_logits, 0);
    ck_assert_int_eq(got.n_steps, 0);
    expect_equal(&s, &got);
    rerun(&got);
    flas_step_state_free(&s);
    flas_step_state_free(&got);
}
END_TEST

/* The tokens have structure (perm[a] follows a three times in four): a few larger steps must learn
 * some of it, or the multi-step comparison would only ever see a flat loss. */
START_TEST(recorded_steps_learn)
{
    flas_step_state s;
    make(&small, 12, 0, &s);
    ck_assert_msg(s.step_loss[11] < s.step_loss[0] - 0.1f, "loss %g -> %g", (double)s.step_loss[0],
                  (double)s.step_loss[11]);
    ck_assert(s.step_lr[0] == s.adamw.lr_max); /* one warmup step, then the cosine decay, as recorded */
    ck_assert(s.step_lr[11] < s.step_lr[1]);
    flas_step_state_free(&s);
}
END_TEST

/* ---- hostile files ---------------------------------------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static void expect_refused(const unsigned char *b, size_t len, const char *needle)
{
    flas_step_state s;
    char err[256] = "";
    ck_assert_msg(flas_step_state_parse(b, len, &s, err, sizeof err) == -1, "accepted; wanted '%s'", needle);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
    ck_assert_msg(strchr(err, '\n') == NULL, "message has a newline");
    ck_assert_ptr_null(s.params); /* refused states hold nothing */
    ck_assert_ptr_null(s.grads);
}

/* A copy of the good file with one 4- or 8-byte field changed. */
static void expect_patch_refused(const unsigned char *good, size_t len, size_t off, uint64_t v, int width,
                                 const char *needle)
{
    unsigned char *b = malloc(len);
    ck_assert_ptr_nonnull(b);
    memcpy(b, good, len);
    if (width == 8)
        put64(b + off, v);
    else
        put32(b + off, (uint32_t)v);
    expect_refused(b, len, needle);
    free(b);
}

START_TEST(truncated_and_trailing)
{
    size_t len;
    unsigned char *good = written(&small, 2, &len);
    flas_step_state s;
    char err[256];
    ck_assert_int_eq(flas_step_state_parse(good, len, &s, err, sizeof err), 0);
    flas_step_state_free(&s);
    /* Every shorter length: inside the header, and inside each array. */
    for (size_t n = 0; n < len; n++)
        expect_refused(good, n, "truncated");
    good[len] = 0;
    expect_refused(good, len + 1, "trailing bytes");
    /* The same through a file. */
    char p[512];
    path_of(p, sizeof p, "t.state");
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    fwrite(good, 1, len - 5, f);
    fclose(f);
    ck_assert_int_eq(flas_step_state_read(p, &s, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "t.state: truncated") != NULL, "%s", err);
    free(good);
}
END_TEST

START_TEST(bad_magic_version_flags)
{
    size_t len;
    unsigned char *good = written(&small, 1, &len);
    expect_patch_refused(good, len, 0, 0x464c6153, 4, "bad magic"); /* "SaLF": the magic byte-swapped */
    expect_patch_refused(good, len, 8, 0, 4, "version 0 is not the supported 1");
    expect_patch_refused(good, len, 8, 2, 4, "version 2");
    expect_patch_refused(good, len, 8, 0x01000000, 4, "version 16777216"); /* a big-endian writer */
    expect_patch_refused(good, len, 12, 2, 4, "unknown flags 0x2");
    expect_patch_refused(good, len, 132, 1, 4, "reserved");
    free(good);
}
END_TEST

START_TEST(sizes_that_overflow)
{
    size_t len;
    unsigned char *good = written(&small, 1, &len);
    expect_patch_refused(good, len, 64, UINT64_MAX, 8, "n_params");
    expect_patch_refused(good, len, 64, (uint64_t)1 << 62, 8, "does not match the config");
    expect_patch_refused(good, len, 64, 0, 8, "does not match the config");
    expect_patch_refused(good, len, 80, UINT64_MAX, 8, "n_logits");
    expect_patch_refused(good, len, 80, 1, 8, "neither 0 nor B*T*vocab_size");
    expect_patch_refused(good, len, 56, INT32_MAX, 4, "batch size B 2147483647 is outside");
    expect_patch_refused(good, len, 56, (uint32_t)-1, 4, "batch size B -1");
    expect_patch_refused(good, len, 56, 0, 4, "batch size B 0");
    expect_patch_refused(good, len, 60, 0, 4, "sequence length T 0");
    expect_patch_refused(good, len, 60, 9, 4, "sequence length T 9 is outside 1..seq_len 8");
    expect_patch_refused(good, len, 88, (uint32_t)-1, 4, "step count -1");
    expect_patch_refused(good, len, 88, INT32_MAX, 4, "step count 2147483647");
    /* Counts the header may legally hold but the file's length does not back. */
    expect_patch_refused(good, len, 88, 1000, 4, "truncated");
    unsigned char *big = malloc(len);
    ck_assert_ptr_nonnull(big);
    memcpy(big, good, len);
    put32(big + 56, FLAS_STEP_STATE_MAX_BATCH); /* B, and the logits that go with it */
    put64(big + 80, (uint64_t)FLAS_STEP_STATE_MAX_BATCH * small.seq_len * small.vocab_size);
    expect_refused(big, len, "truncated");
    free(big);
    expect_patch_refused(good, len, 88, 0, 4, "trailing bytes");
    /* The size arithmetic itself says "overflow" (0) instead of wrapping. */
    flas_step_state s = {0};
    s.B = s.T = 1;
    s.n_params = SIZE_MAX / 2;
    ck_assert_uint_eq(flas_step_state_file_bytes(&s), 0);
    s.n_params = 0;
    s.n_logits = SIZE_MAX - 10;
    ck_assert_uint_eq(flas_step_state_file_bytes(&s), 0);
    s.n_logits = 0;
    s.B = s.T = INT32_MAX;
    s.n_steps = INT32_MAX;
    ck_assert_uint_eq(flas_step_state_file_bytes(&s), 0);
    free(good);
}
END_TEST

START_TEST(invalid_configs)
{
    size_t len;
    unsigned char *good = written(&small, 1, &len);
    expect_patch_refused(good, len, 28, 3, 4, "n_heads 4 is not divisible by n_kv_heads 3");
    expect_patch_refused(good, len, 28, 0, 4, "n_kv_heads must be positive");
    expect_patch_refused(good, len, 16, 0, 4, "dim must be positive");
    expect_patch_refused(good, len, 16, 12, 4, "head_dim 3 is odd");
    expect_patch_refused(good, len, 20, 2000, 4, "n_layers 2000 exceeds 1024");
    expect_patch_refused(good, len, 36, (uint32_t)-7, 4, "vocab_size must be positive");
    expect_patch_refused(good, len, 52, 2, 4, "tied_embeddings must be 0 or 1");
    /* Tying the head changes the layout: the stored n_params no longer matches. */
    expect_patch_refused(good, len, 52, 1, 4, "does not match the config");
    expect_patch_refused(good, len, 32, 48, 4, "does not match the config");
    float nan = NAN, inf = INFINITY;
    uint32_t u;
    memcpy(&u, &nan, 4);
    expect_patch_refused(good, len, 44, u, 4, "norm_eps");
    memcpy(&u, &inf, 4);
    expect_patch_refused(good, len, 48, u, 4, "rope_theta");
    free(good);
}
END_TEST

START_TEST(bad_tokens_and_optimizer)
{
    size_t len;
    unsigned char *good = written(&small, 2, &len);
    flas_step_state s;
    char err[256];
    ck_assert_int_eq(flas_step_state_parse(good, len, &s, err, sizeof err), 0);
    size_t np = s.n_params, bt = (size_t)s.B * s.T;
    size_t tok = FLAS_STEP_STATE_HEADER_BYTES + 4 * np, tgt = tok + 4 * bt;
    size_t steps_tok = tgt + 4 * bt + 4 * np + 4 * s.n_logits, lr = steps_tok + 8 * bt * 2;
    flas_step_state_free(&s);
    expect_patch_refused(good, len, tok, 11, 4, "tokens[0] = 11 is outside the vocabulary 0..10");
    expect_patch_refused(good, len, tgt + 4 * (bt - 1), (uint32_t)-1, 4, "targets[23] = -1");
    expect_patch_refused(good, len, steps_tok + 4, 1u << 31, 4, "step_tokens[1]");
    expect_patch_refused(good, len, steps_tok + 4 * bt * 2, 99, 4, "step_targets[0] = 99");
    uint32_t u;
    float f = -1.0f;
    memcpy(&u, &f, 4);
    expect_patch_refused(good, len, lr + 4, u, 4, "step_lr[1] = -1");
    f = 1.0f;
    memcpy(&u, &f, 4);
    expect_patch_refused(good, len, 112, u, 4, "AdamW betas 1");
    f = 0.0f;
    memcpy(&u, &f, 4);
    expect_patch_refused(good, len, 120, u, 4, "AdamW eps 0");
    f = NAN;
    memcpy(&u, &f, 4);
    expect_patch_refused(good, len, 128, u, 4, "clip");
    expect_patch_refused(good, len, 124, u, 4, "weight decay");
    free(good);
}
END_TEST

/* Every single-bit change of the header: refused with a message or accepted, never a crash (ASan and
 * UBSan watch the reads). */
START_TEST(header_bit_flips)
{
    size_t len;
    unsigned char *good = written(&small, 1, &len);
    for (size_t i = 0; i < FLAS_STEP_STATE_HEADER_BYTES; i++)
        for (int bit = 0; bit < 8; bit++) {
            good[i] ^= (unsigned char)(1u << bit);
            flas_step_state s;
            char err[256] = "";
            if (flas_step_state_parse(good, len, &s, err, sizeof err) == 0)
                flas_step_state_free(&s);
            else
                ck_assert_msg(err[0] && !strchr(err, '\n'), "byte %zu bit %d: '%s'", i, bit, err);
            good[i] ^= (unsigned char)(1u << bit);
        }
    free(good);
}
END_TEST

START_TEST(read_errors)
{
    flas_step_state s;
    char err[256], p[512];
    path_of(p, sizeof p, "missing.state");
    ck_assert_int_eq(flas_step_state_read(p, &s, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "missing.state: No such file") != NULL, "%s", err);
    ck_assert_int_eq(flas_step_state_read(dir, &s, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not a regular file") != NULL, "%s", err);
    /* A FIFO must be refused, not waited on for a writer. */
    path_of(p, sizeof p, "fifo");
    ck_assert_int_eq(mkfifo(p, 0600), 0);
    ck_assert_int_eq(flas_step_state_read(p, &s, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "fifo: not a regular file") != NULL, "%s", err);
}
END_TEST

/* The writer applies the reader's rules (no file it would refuse) and replaces atomically. */
START_TEST(write_refuses_and_replaces)
{
    flas_step_state s;
    char p[512], err[256];
    make(&small, 1, 0, &s);
    path_of(p, sizeof p, "c.state");
    ck_assert_int_eq(flas_step_state_write(p, &s, err, sizeof err), 0);
    size_t len0;
    free(slurp(p, &len0));
    s.tokens[3] = small.vocab_size;
    ck_assert_int_eq(flas_step_state_write(p, &s, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "tokens[3] = 11") != NULL, "%s", err);
    s.tokens[3] = 0;
    s.n_params--;
    ck_assert_int_eq(flas_step_state_write(p, &s, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "does not match") != NULL, "%s", err);
    s.n_params++;
    /* The refused writes left the earlier file whole; a good write replaces it. */
    size_t len1;
    free(slurp(p, &len1));
    ck_assert_uint_eq(len1, len0);
    s.n_logits = 0;
    ck_assert_int_eq(flas_step_state_write(p, &s, err, sizeof err), 0);
    free(slurp(p, &len1));
    ck_assert_uint_eq(len1, len0 - 4 * (size_t)s.B * s.T * small.vocab_size);
    /* No temporary file is left beside it. */
    DIR *d = opendir(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        entries += strcmp(e->d_name, ".") && strcmp(e->d_name, ".."); /* temporaries are hidden */
    closedir(d);
    ck_assert_int_eq(entries, 1);
    path_of(p, sizeof p, "no-such-dir/x.state");
    ck_assert_int_eq(flas_step_state_write(p, &s, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "no-such-dir") != NULL, "%s", err);
    flas_step_state_free(&s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("step_state");
    TCase *tc = tcase_create("step_state");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fast_path_reruns_bit_for_bit);
    tcase_add_test(tc, reference_path_reruns_bit_for_bit);
    tcase_add_test(tc, no_steps_no_logits);
    tcase_add_test(tc, recorded_steps_learn);
    tcase_add_test(tc, truncated_and_trailing);
    tcase_add_test(tc, bad_magic_version_flags);
    tcase_add_test(tc, sizes_that_overflow);
    tcase_add_test(tc, invalid_configs);
    tcase_add_test(tc, bad_tokens_and_optimizer);
    tcase_add_test(tc, header_bit_flips);
    tcase_add_test(tc, read_errors);
    tcase_add_test(tc, write_refuses_and_replaces);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
