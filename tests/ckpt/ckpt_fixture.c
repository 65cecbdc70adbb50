#define _GNU_SOURCE /* nftw */
#include "ckpt_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float fix_value(int section, int tensor, size_t elem, int gen)
{
    long long k = ((long long)tensor * 7919 + (long long)elem * 31 + (long long)section * 104729 +
                   (long long)gen * 1000003) % 65521;
    return (float)k / 256.0f - 128.0f;
}

void fix_config(const char *which, flas_config *c)
{
    if (which && strcmp(which, "kill") == 0) {
        /* ~26M parameters (105 MB): writes take long enough to be interrupted at random moments. */
        *c = (flas_config){512, 6, 8, 8, 1376, 8192, 256, 1e-5f, 10000.0f, 0};
        return;
    }
    flas_config_preset("stories260K", c);
    c->tied_embeddings = 0;
}

void fix_meta(const flas_config *c, int gen, flas_ckpt_meta *m)
{
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->role = FLAS_CKPT_LOCAL;
    m->round = gen;
    snprintf(m->site, sizeof m->site, "site-a");
    m->step = 10 * (int64_t)gen;
    m->tokens_trained = 1000 * (int64_t)gen + 7;
    char base[32];
    snprintf(base, sizeof base, "base-%d", gen);
    flas_sha256_buffer(base, strlen(base), m->base_sha256);
    m->tp_size = 2;
    m->dp_size = 3;
}

void fix_train(int gen, flas_train_state *s)
{
    *s = (flas_train_state){gen, gen + 1, 12345 + gen, 99 * gen, 42u + (uint64_t)gen,
                            {1u + (uint64_t)gen, 2, 3, UINT64_MAX},
                            {1, 42u + (uint64_t)gen, 1, 256, 1000000u + (uint64_t)gen, UINT64_MAX - 1, gen, 7}};
}

void fix_metrics(int gen, flas_ckpt_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->train_loss = 2.5 + gen;
    m->train_loss_last = 2.25 + gen;
    m->valid_loss = 3.0 + gen;
    m->valid_perplexity = 20.0 + gen;
    m->valid_tokens = 4096 + gen;
    m->train_seconds = 12.5;
    m->tokens_per_second = 1000.5;
    snprintf(m->stop_reason, sizeof m->stop_reason, "walltime");
}

void fix_optimizer(int gen, flas_ckpt_optimizer *o)
{
    *o = (flas_ckpt_optimizer){10 * (int64_t)gen, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f};
}

void fix_server(int gen, flas_server_state *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->strategy, sizeof s->strategy, "fedadam");
    s->round = gen;
    s->step = gen + 1;
    s->n_sites = 2;
    snprintf(s->sites[0].name, sizeof s->sites[0].name, "site-a");
    s->sites[0].rounds = gen;
    s->sites[0].tokens = 1000 * (int64_t)gen;
    snprintf(s->sites[1].name, sizeof s->sites[1].name, "site-b");
    s->sites[1].rounds = 1;
    s->sites[1].tokens = 5;
}

void fix_fill(const flas_param_table *t, int section, int gen, float *buf)
{
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        size_t rows = x->ndim == 2 ? x->shape[0] : 1, cols = x->ndim == 2 ? x->shape[1] : x->shape[0];
        size_t full_cols = x->ndim == 2 ? x->full_shape[1] : x->full_shape[0];
        size_t r0 = 0, c0 = 0;
        if (x->ndim == 2 && x->shard == FLAS_TP_SPLIT_ROWS)
            r0 = x->shard_start;
        if (x->ndim == 2 && x->shard == FLAS_TP_SPLIT_COLS)
            c0 = x->shard_start;
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < cols; c++)
                buf[x->offset + r * cols + c] = fix_value(section, i, (r0 + r) * full_cols + c0 + c, gen);
    }
}

int fix_set_states(flas_ckpt_writer *w, unsigned contents, int gen, char *err, size_t errlen)
{
    if (contents & FLAS_CKPT_OPTIMIZER) {
        flas_ckpt_optimizer o;
        fix_optimizer(gen, &o);
        if (flas_ckpt_set_optimizer(w, &o, err, errlen))
            return -1;
    }
    if (contents & FLAS_CKPT_TRAIN_STATE) {
        flas_train_state s;
        fix_train(gen, &s);
        if (flas_ckpt_set_train_state(w, &s, err, errlen))
            return -1;
    }
    if (contents & FLAS_CKPT_SERVER_STATE) {
        flas_server_state *s = malloc(sizeof *s);
        fix_server(gen, s);
        int rc = flas_ckpt_set_server_state(w, s, err, errlen);
        free(s);
        if (rc)
            return -1;
    }
    if (contents & FLAS_CKPT_METRICS) {
        flas_ckpt_metrics mt;
        fix_metrics(gen, &mt);
        if (flas_ckpt_set_metrics(w, &mt, err, errlen))
            return -1;
    }
    if (contents & FLAS_CKPT_PROVENANCE) {
        static const char *const names[] = {"lr", "momentum"};
        const double values[] = {0.7, 0.9};
        const flas_ckpt_input in[2] = {
            {"/in/a.h5", "aa", "site-a", gen, 100, 0.25, 1, ""},
            {"/in/b.h5", "bb", "site-b", gen, 300, 0.0, 0, "NaN in layers.0.attention.wq.weight"}};
        const flas_ckpt_provenance p = {"flas-test", "diloco", "drop-bad", "/g/prev.h5", "cc", 2, names, values, 2, in};
        if (flas_ckpt_set_provenance(w, &p, err, errlen))
            return -1;
    }
    return 0;
}

int fix_write_split(const char *path, const char *which, int gen, int tp_rank, int tp_size, int dp_rank,
                    int dp_size, unsigned contents, MPI_Comm comm, char *err, size_t errlen)
{
    flas_config c;
    flas_ckpt_meta m;
    flas_param_table t;
    fix_config(which, &c);
    fix_meta(&c, gen, &m);
    if (flas_param_table_init(&t, &c, tp_rank, tp_size, err, errlen))
        return -1;
    float *buf = malloc(t.n_params * sizeof *buf);
    flas_ckpt_writer *w = buf ? flas_ckpt_create(path, &m, contents, comm, err, errlen) : NULL;
    int rc = w ? 0 : -1;
    for (int s = 0; rc == 0 && s < FLAS_CKPT_N_SECTIONS; s++) {
        if (s != FLAS_CKPT_PARAMS && !(contents & FLAS_CKPT_HAS(s)))
            continue;
        fix_fill(&t, s, gen, buf);
        /* Params come from data-parallel rank 0 (replicas hold the same values); the other sections are
         * ZeRO-1 slices, one per data-parallel rank. */
        size_t lo = 0, hi = dp_rank == 0 ? t.n_params : 0;
        if (s != FLAS_CKPT_PARAMS) {
            lo = t.n_params * (size_t)dp_rank / (size_t)dp_size;
            hi = t.n_params * (size_t)(dp_rank + 1) / (size_t)dp_size;
        }
        rc = flas_ckpt_put_flat(w, (flas_ckpt_section)s, &t, lo, hi, buf + lo, err, errlen);
    }
    if (rc == 0)
        rc = fix_set_states(w, contents, gen, err, errlen);
    if (rc == 0)
        rc = flas_ckpt_commit(w, err, errlen);
    else if (w)
        flas_ckpt_abort(w);
    free(buf);
    flas_param_table_free(&t);
    return rc;
}

int fix_write(const char *path, const char *which, int gen, unsigned contents, char *err, size_t errlen)
{
    return fix_write_split(path, which, gen, 0, 1, 0, 1, contents, MPI_COMM_NULL, err, errlen);
}

int fix_verify(const char *path, int gen, char *err, size_t errlen)
{
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, errlen);
    if (!r)
        return -1;
    const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
    flas_ckpt_meta want;
    fix_meta(&m->cfg, gen, &want);
    int rc = 0;
    if (m->round != want.round || m->step != want.step || m->tokens_trained != want.tokens_trained ||
        strcmp(m->site, want.site) || strcmp(m->base_sha256, want.base_sha256) || m->role != want.role ||
        m->tp_size != 2 || m->dp_size != 3) {
        snprintf(err, errlen, "%s: meta differs from generation %d (round %lld)", path, gen, (long long)m->round);
        rc = -1;
    }
    const flas_param_table *t = flas_ckpt_tensors(r);
    float *buf = malloc(t->n_params * sizeof *buf);
    for (int s = 0; rc == 0 && s < FLAS_CKPT_N_SECTIONS; s++) {
        if (!(flas_ckpt_contents(r) & FLAS_CKPT_HAS(s)))
            continue;
        if (flas_ckpt_get_flat(r, (flas_ckpt_section)s, t, 0, t->n_params, buf, err, errlen)) {
            rc = -1;
            break;
        }
        for (int i = 0; rc == 0 && i < t->n_tensors; i++)
            for (size_t e = 0; e < t->tensors[i].numel; e++)
                if (buf[t->tensors[i].offset + e] != fix_value(s, i, e, gen)) {
                    snprintf(err, errlen, "%s: %s/%s[%zu] = %g, expected %g", path, flas_ckpt_section_name(s),
                             t->tensors[i].name, e, (double)buf[t->tensors[i].offset + e],
                             (double)fix_value(s, i, e, gen));
                    rc = -1;
                    break;
                }
    }
    free(buf);
    flas_train_state ts, tw;
    fix_train(gen, &tw);
    if (rc == 0 && (flas_ckpt_contents(r) & FLAS_CKPT_TRAIN_STATE) &&
        (flas_ckpt_get_train_state(r, &ts, err, errlen) || memcmp(&ts, &tw, sizeof ts))) {
        snprintf(err, errlen, "%s: training state differs", path);
        rc = -1;
    }
    flas_ckpt_optimizer o, ow;
    fix_optimizer(gen, &ow);
    if (rc == 0 && (flas_ckpt_contents(r) & FLAS_CKPT_OPTIMIZER) &&
        (flas_ckpt_get_optimizer(r, &o, err, errlen) || o.step != ow.step || o.lr != ow.lr || o.beta1 != ow.beta1 ||
         o.beta2 != ow.beta2 || o.eps != ow.eps || o.weight_decay != ow.weight_decay)) {
        snprintf(err, errlen, "%s: optimizer state differs", path);
        rc = -1;
    }
    if (rc == 0 && (flas_ckpt_contents(r) & FLAS_CKPT_SERVER_STATE)) {
        flas_server_state *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
        fix_server(gen, b);
        int same = flas_ckpt_get_server_state(r, a, err, errlen) == 0 && !strcmp(a->strategy, b->strategy) &&
                   a->round == b->round && a->step == b->step && a->n_sites == b->n_sites;
        for (int i = 0; same && i < a->n_sites; i++)
            same = !strcmp(a->sites[i].name, b->sites[i].name) && a->sites[i].rounds == b->sites[i].rounds &&
                   a->sites[i].tokens == b->sites[i].tokens;
        if (!same) {
            snprintf(err, errlen, "%s: server state differs", path);
            rc = -1;
        }
        free(a);
        free(b);
    }
    flas_ckpt_metrics mr, mw;
    fix_metrics(gen, &mw);
    if (rc == 0 && (flas_ckpt_contents(r) & FLAS_CKPT_METRICS) &&
        (flas_ckpt_get_metrics(r, &mr, err, errlen) || memcmp(&mr, &mw, sizeof mr))) {
        snprintf(err, errlen, "%s: metrics differ", path);
        rc = -1;
    }
    flas_ckpt_close(r);
    return rc;
}

#include <dirent.h>
#include <ftw.h>
#include <unistd.h>

void fix_tmpdir(char *out, size_t len)
{
    const char *base = getenv("TMPDIR");
    snprintf(out, len, "%s/flas-ckpt-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        abort();
    }
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void fix_rmtree(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

int fix_count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    if (d)
        closedir(d);
    return n;
}
