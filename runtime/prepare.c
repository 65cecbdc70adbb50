/* flas-prepare: input files -> token shards, in parallel over files (see include/flas/prepare.h). */
#define _GNU_SOURCE
#include "flas/error.h"
#include "flas/prepare.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flas/atomic_file.h"
#include "flas/shards.h"
#include "flas/tokenizer.h"
#include "text_input.h"

#define DEFAULT_SHARD_TOKENS (1ull << 27)
#define DEFAULT_MAX_DOCUMENT (64u << 20)
#define MAX_INPUTS 999999 /* shard names carry the input index in 6 digits: name order = input order */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int flas_input_format_parse(const char *name, flas_input_format *out)
{
    static const struct { const char *name; flas_input_format f; } names[] = {
        {"auto", FLAS_INPUT_AUTO}, {"lines", FLAS_INPUT_LINES},
        {"paragraphs", FLAS_INPUT_PARAGRAPHS}, {"jsonl", FLAS_INPUT_JSONL}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].f;
            return 0;
        }
    return -1;
}

/* What every worker shares. Counters are updated with atomics so the progress line can read them. */
typedef struct run {
    const flas_prepare_opts *o;
    const flas_tokenizer *tok;
    flas_shard_header proto; /* vocab, BOS/EOS, flags, tokenizer hash of every shard */
    const char *tmp_dir;
    uint64_t shard_tokens;
    size_t max_doc;
    int failed;              /* set once: the other workers stop at their next document */
    char err[1024];
    uint64_t files_done, shards, documents, tokens, bytes, replaced, skipped;
    double t0;
    int64_t last_progress_ms; /* since t0 */
} run;

static void record_error(run *r, const char *msg)
{
#pragma omp critical(flas_prepare_error)
    {
        if (!r->failed) {
            snprintf(r->err, sizeof r->err, "%s", msg);
            __atomic_store_n(&r->failed, 1, __ATOMIC_RELEASE);
        }
    }
}

static int should_stop(const run *r)
{
    return __atomic_load_n(&r->failed, __ATOMIC_ACQUIRE) || (r->o->stop && *r->o->stop);
}

static void progress(run *r, int n_files, int final)
{
    const double t = now();
    const int64_t ms = (int64_t)((t - r->t0) * 1000.0);
    int64_t last = __atomic_load_n(&r->last_progress_ms, __ATOMIC_RELAXED);
    if (!final && ms - last < 1000)
        return;
    /* One thread wins the right to print this second. */
    if (!final && !__atomic_compare_exchange_n(&r->last_progress_ms, &last, ms, 0, __ATOMIC_RELAXED,
                                               __ATOMIC_RELAXED))
        return;
    const double mb = (double)__atomic_load_n(&r->bytes, __ATOMIC_RELAXED) / 1e6;
    fprintf(stderr, "flas-prepare: %llu/%d files, %llu documents, %.2fM tokens, %.1f MB, %.1f MB/s\n",
            (unsigned long long)__atomic_load_n(&r->files_done, __ATOMIC_RELAXED), n_files,
            (unsigned long long)__atomic_load_n(&r->documents, __ATOMIC_RELAXED),
            (double)__atomic_load_n(&r->tokens, __ATOMIC_RELAXED) / 1e6, mb, mb / (t - r->t0 + 1e-9));
}

static flas_shard_writer *next_shard(run *r, int file, int part, char *err, size_t errlen)
{
    char *path = NULL;
    if (asprintf(&path, "%s/part-%06d-%04d%s", r->tmp_dir, file, part, FLAS_SHARD_SUFFIX) < 0) {
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    flas_shard_writer *w = flas_shard_writer_open(path, &r->proto, err, errlen);
    free(path);
    return w;
}

/* Tokenizes input file `file` into its shards. 0, or -1 with err set. */
static int prepare_file(run *r, int file, char *err, size_t errlen)
{
    const flas_prepare_opts *o = r->o;
    const char *path = o->inputs[file];
    text_input *in = text_input_open(path, text_input_format_for(path, o->format), o->json_field,
                                     r->max_doc, o->replace_invalid_utf8, err, errlen);
    if (!in)
        return -1;
    const unsigned flags = FLAS_TOK_BOS | (o->add_eos ? FLAS_TOK_EOS : 0u);
    flas_ids ids = {0};
    flas_shard_writer *w = NULL;
    int part = 0, rc;
    uint64_t docs = 0;
    const char *text;
    size_t len;
    char why[512];
    while ((rc = text_input_next(in, &text, &len, err, errlen)) == 1) {
        if (should_stop(r)) {
            rc = flas_fail(err, errlen, "interrupted");
            break;
        }
        ids.n = 0;
        if (flas_tokenizer_encode(r->tok, text, len, flags, &ids, why, sizeof why) != 0) {
            rc = flas_fail(err, errlen, "%s: document %llu: %s", path, (unsigned long long)docs + 1, why);
            break;
        }
        if (w && flas_shard_writer_tokens(w) + ids.n > r->shard_tokens) {
            rc = flas_shard_writer_commit(w, NULL, err, errlen);
            w = NULL;
            if (rc != 0)
                break;
            __atomic_add_fetch(&r->shards, 1, __ATOMIC_RELAXED);
            part++;
        }
        if (!w && !(w = next_shard(r, file, part, err, errlen))) {
            rc = -1;
            break;
        }
        if (flas_shard_writer_add(w, ids.ids, ids.n, err, errlen) != 0) {
            rc = -1;
            break;
        }
        docs++;
        __atomic_add_fetch(&r->documents, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&r->tokens, ids.n, __ATOMIC_RELAXED);
        __atomic_add_fetch(&r->bytes, len, __ATOMIC_RELAXED);
        if (o->progress && (docs & 255) == 0)
            progress(r, o->n_inputs, 0);
    }
    if (rc == 0 && docs == 0)
        rc = flas_fail(err, errlen, "%s: no documents (empty input)", path);
    if (rc == 0) {
        rc = flas_shard_writer_commit(w, NULL, err, errlen);
        w = NULL;
        if (rc == 0)
            __atomic_add_fetch(&r->shards, 1, __ATOMIC_RELAXED);
    }
    flas_shard_writer_abort(w);
    __atomic_add_fetch(&r->replaced, text_input_replaced(in), __ATOMIC_RELAXED);
    __atomic_add_fetch(&r->skipped, text_input_skipped_empty(in), __ATOMIC_RELAXED);
    text_input_close(in);
    flas_ids_free(&ids);
    return rc < 0 ? -1 : 0;
}

/* Removes the temporary output directory and what is in it (only plain files are ever there). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char *p = NULL;
            if (asprintf(&p, "%s/%s", dir, e->d_name) >= 0) {
                unlink(p);
                free(p);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

static char *make_tmp_dir(const char *out_dir, char *err, size_t errlen)
{
    char *a = strdup(out_dir), *b = strdup(out_dir), *tmp = NULL;
    if (a && b && asprintf(&tmp, "%s/.%s.tmp.XXXXXX", dirname(a), basename(b)) < 0)
        tmp = NULL;
    free(a);
    free(b);
    if (!tmp) {
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    if (!mkdtemp(tmp)) {
        flas_fail(err, errlen, "%s: cannot create a temporary directory next to it: %s", out_dir, strerror(errno));
        free(tmp);
        return NULL;
    }
    return tmp;
}

static int check_opts(const flas_prepare_opts *o, char *err, size_t errlen)
{
    struct stat st;
    if (!o->tokenizer_path)
        return flas_fail(err, errlen, "no tokenizer model given (--tokenizer)");
    if (!o->out_dir || !*o->out_dir)
        return flas_fail(err, errlen, "no output directory given (--out)");
    if (o->n_inputs <= 0)
        return flas_fail(err, errlen, "no input files given");
    if (o->n_inputs > MAX_INPUTS)
        return flas_fail(err, errlen, "%d input files: at most %d per run", o->n_inputs, MAX_INPUTS);
    if (lstat(o->out_dir, &st) == 0)
        return flas_fail(err, errlen, "%s: exists; flas-prepare writes a new directory (remove it or choose "
                    "another --out)", o->out_dir);
    for (int i = 0; i < o->n_inputs; i++) {
        if (stat(o->inputs[i], &st) != 0)
            return flas_fail(err, errlen, "%s: %s", o->inputs[i], strerror(errno));
        if (S_ISDIR(st.st_mode))
            return flas_fail(err, errlen, "%s: is a directory, expected a text or JSON-lines file", o->inputs[i]);
        if (access(o->inputs[i], R_OK) != 0)
            return flas_fail(err, errlen, "%s: %s", o->inputs[i], strerror(errno));
    }
    return 0;
}

int flas_prepare_run(const flas_prepare_opts *o, flas_prepare_stats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    if (check_opts(o, err, errlen) != 0)
        return -1;
    char why[768];
    flas_tokenizer *tok = flas_tokenizer_open(o->tokenizer_path, why, sizeof why);
    if (!tok)
        return flas_fail(err, errlen, "%s", why);
    const int vocab = flas_tokenizer_vocab_size(tok);
    if (o->expect_vocab_size > 0 && o->expect_vocab_size != vocab) {
        flas_tokenizer_close(tok);
        return flas_fail(err, errlen, "%s: vocabulary of %d pieces but the model's vocab_size is %d: shards "
                    "made with it could not train that model", o->tokenizer_path, vocab, o->expect_vocab_size);
    }
    if (flas_tokenizer_bos_id(tok) < 0) {
        flas_tokenizer_close(tok);
        return flas_fail(err, errlen, "%s: the model has no BOS piece, so documents could not be told apart",
                    o->tokenizer_path);
    }
    run r = {.o = o, .tok = tok, .t0 = now()};
    r.shard_tokens = o->shard_tokens ? o->shard_tokens : DEFAULT_SHARD_TOKENS;
    r.max_doc = o->max_document_bytes ? o->max_document_bytes : DEFAULT_MAX_DOCUMENT;
    r.proto.vocab_size = (uint32_t)vocab;
    r.proto.bos_id = flas_tokenizer_bos_id(tok);
    r.proto.eos_id = flas_tokenizer_eos_id(tok);
    r.proto.flags = FLAS_SHARD_DOC_BOS | (o->add_eos ? FLAS_SHARD_DOC_EOS : 0u);
    memcpy(r.proto.tokenizer_sha256, flas_tokenizer_sha256(tok), FLAS_SHA256_BYTES);

    char *tmp = make_tmp_dir(o->out_dir, err, errlen);
    if (!tmp) {
        flas_tokenizer_close(tok);
        return -1;
    }
    r.tmp_dir = tmp;
    const int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int i = 0; i < o->n_inputs; i++) {
        if (should_stop(&r))
            continue;
        char msg[1024];
        if (prepare_file(&r, i, msg, sizeof msg) != 0)
            record_error(&r, msg);
        else
            __atomic_add_fetch(&r.files_done, 1, __ATOMIC_RELAXED);
        if (o->progress)
            progress(&r, o->n_inputs, 0);
    }
    flas_tokenizer_close(tok);

    int rc = 0;
    if (o->stop && *o->stop)
        rc = flas_fail(err, errlen, "interrupted");
    else if (r.failed)
        rc = flas_fail(err, errlen, "%s", r.err);
    if (rc == 0 && chmod(tmp, flas_atomic_mode(0777)) != 0)
        rc = flas_fail(err, errlen, "%s: chmod: %s", tmp, strerror(errno));
    /* The directory appears whole or not at all: its files are fsync'ed already. */
    if (rc == 0 && flas_fsync_dir_of(tmp, 1) != 0)
        rc = flas_fail(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
    /* NOREPLACE: a directory someone created meanwhile is not clobbered. */
    if (rc == 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, o->out_dir, RENAME_NOREPLACE) != 0)
        rc = flas_fail(err, errlen, "%s: cannot rename %s into place: %s", o->out_dir, tmp, strerror(errno));
    if (rc == 0 && flas_fsync_dir_of(o->out_dir, 0) != 0)
        rc = flas_fail(err, errlen, "%s: fsync of its parent directory: %s", o->out_dir, strerror(errno));
    if (rc != 0)
        remove_tree(access(tmp, F_OK) == 0 ? tmp : o->out_dir);
    free(tmp);
    if (o->progress && rc == 0)
        progress(&r, o->n_inputs, 1);
    *st = (flas_prepare_stats){.files = r.files_done, .shards = r.shards, .documents = r.documents,
                               .tokens = r.tokens, .bytes = r.bytes, .replaced = r.replaced,
                               .skipped_empty = r.skipped, .seconds = now() - r.t0};
    return rc;
}

int flas_prepare_verify(const char *tokenizer_path, int expect_vocab_size, const char *const *paths,
                        int n_paths, flas_prepare_stats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    const double t0 = now();
    unsigned char want_sha[FLAS_SHA256_BYTES];
    int have_sha = 0, want_vocab = expect_vocab_size;
    char why[768];
    if (tokenizer_path) {
        flas_tokenizer *tok = flas_tokenizer_open(tokenizer_path, why, sizeof why);
        if (!tok)
            return flas_fail(err, errlen, "%s", why);
        const int v = flas_tokenizer_vocab_size(tok);
        memcpy(want_sha, flas_tokenizer_sha256(tok), FLAS_SHA256_BYTES);
        flas_tokenizer_close(tok);
        have_sha = 1;
        if (want_vocab > 0 && want_vocab != v)
            return flas_fail(err, errlen, "%s: vocabulary of %d pieces but the model's vocab_size is %d",
                        tokenizer_path, v, want_vocab);
        want_vocab = v;
    }
    char **list = NULL;
    int n = 0, rc = 0;
    if (flas_shard_list(paths, n_paths, &list, &n, err, errlen) != 0)
        return -1;
    for (int i = 0; i < n && rc == 0; i++) {
        flas_shard s;
        if (flas_shard_open(&s, list[i], err, errlen) != 0) {
            rc = -1;
            break;
        }
        char got[2 * FLAS_SHA256_BYTES + 1], want[2 * FLAS_SHA256_BYTES + 1];
        if (want_vocab > 0 && s.h.vocab_size != (uint32_t)want_vocab) {
            rc = flas_fail(err, errlen, "%s: shard vocabulary has %u tokens but %s has %d: vocabulary mismatch",
                      list[i], s.h.vocab_size, tokenizer_path ? tokenizer_path : "the model", want_vocab);
        } else if (have_sha && memcmp(s.h.tokenizer_sha256, want_sha, FLAS_SHA256_BYTES) != 0) {
            flas_sha256_hex(s.h.tokenizer_sha256, got);
            flas_sha256_hex(want_sha, want);
            rc = flas_fail(err, errlen, "%s: tokenized with tokenizer sha256 %.16s..., %s is %.16s...: "
                      "vocabulary mismatch", list[i], got, tokenizer_path, want);
        } else if (flas_shard_verify(&s, err, errlen) != 0) {
            rc = -1;
        }
        if (rc == 0 && !have_sha) {
            /* Without a tokenizer, all shards must at least agree with the first. */
            memcpy(want_sha, s.h.tokenizer_sha256, FLAS_SHA256_BYTES);
            have_sha = 1;
            want_vocab = (int)s.h.vocab_size;
            tokenizer_path = list[i];
        }
        st->shards++;
        st->documents += s.h.n_documents;
        st->tokens += s.h.n_tokens;
        flas_shard_close(&s);
    }
    flas_shard_list_free(list, n);
    st->seconds = now() - t0;
    return rc;
}
