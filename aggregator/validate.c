/* Validation of the previous global and the local checkpoints before anything is merged. Each refused
 * input gets a one-line reason; the policy (refuse-round / drop-bad) is applied by merge.c. */
#include "agg_internal.h"
#include "flas/error.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void reason(agg_input *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason(agg_input *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    flas_vfail(x->rep->reason, sizeof x->rep->reason, fmt, ap);
    va_end(ap);
    x->rep->used = 0;
    if (x->r) {
        flas_ckpt_close(x->r);
        x->r = NULL;
    }
}

struct agg_hasher {
    agg_input *in;
    int n, nthreads;
    atomic_int next;
    pthread_t threads[16];
};

static void *hash_worker(void *arg)
{
    agg_hasher *h = arg;
    for (int i; (i = atomic_fetch_add(&h->next, 1)) < h->n;)
        h->in[i].hash_ok = flas_sha256_file(h->in[i].path, h->in[i].rep->sha256, NULL, h->in[i].hash_err,
                                            sizeof h->in[i].hash_err) == 0;
    return NULL;
}

agg_hasher *agg_hash_start(agg_input *in, int n, int threads)
{
    agg_hasher *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->in = in;
    h->n = n;
    atomic_init(&h->next, 0);
    int want = threads > n ? n : threads;
    want = want > 16 ? 16 : want;
    for (int t = 0; t < want; t++)
        if (pthread_create(&h->threads[h->nthreads], NULL, hash_worker, h) == 0)
            h->nthreads++;
    if (h->nthreads == 0)
        hash_worker(h); /* no thread could start: hash here */
    return h;
}

void agg_hash_join(agg_hasher *h)
{
    if (!h)
        return;
    for (int t = 0; t < h->nthreads; t++)
        pthread_join(h->threads[t], NULL);
    free(h);
}

void agg_hash_cancel(agg_hasher *h)
{
    if (!h)
        return;
    atomic_store(&h->next, h->n);
    agg_hash_join(h);
}

void agg_check_digests(agg_input *in, int n)
{
    for (int i = 0; i < n; i++) {
        if (!in[i].rep->used)
            continue;
        if (!in[i].hash_ok) {
            reason(&in[i], "%s", in[i].hash_err);
            continue;
        }
        for (int j = 0; j < i; j++)
            if (in[j].rep->used && strcmp(in[i].rep->sha256, in[j].rep->sha256) == 0) {
                reason(&in[i], "%s: the same checkpoint as %s (identical sha256)", in[i].path, in[j].path);
                break;
            }
    }
}

int agg_open_previous(agg_previous *prev, const flas_agg_options *o, char *err, size_t errlen)
{
    char why[1024];
    prev->r = flas_ckpt_open(prev->path, MPI_COMM_NULL, why, sizeof why);
    if (!prev->r) {
        snprintf(err, errlen, "previous global: %s", why);
        return -1;
    }
    prev->meta = flas_ckpt_meta_of(prev->r);
    if (!(flas_ckpt_contents(prev->r) & FLAS_CKPT_HAS(FLAS_CKPT_PARAMS))) {
        snprintf(err, errlen, "previous global: %s is an update file, not a model", prev->path);
        return -1;
    }
    if (o->base_sha256 && !flas_sha256_is_hex(o->base_sha256)) {
        snprintf(err, errlen, "--base-sha256 '%.80s' is not 64 lowercase hex digits", o->base_sha256);
        return -1;
    }
    snprintf(prev->base_sha256, sizeof prev->base_sha256, "%s", o->base_sha256 ? o->base_sha256 : prev->sha256);
    if (prev->meta->role != FLAS_CKPT_GLOBAL) {
        snprintf(err, errlen, "previous global: %s is a local checkpoint (site '%s'), not a global one", prev->path,
                 prev->meta->site);
        return -1;
    }
    unsigned c = flas_ckpt_contents(prev->r);
    prev->m_from_file = prev->v_from_file = 0;
    if (c & FLAS_CKPT_SERVER_STATE) {
        prev->server = malloc(sizeof *prev->server);
        if (!prev->server || flas_ckpt_get_server_state(prev->r, prev->server, why, sizeof why)) {
            snprintf(err, errlen, "previous global: %s", prev->server ? why : "out of memory");
            return -1;
        }
        const char *want = flas_agg_strategy_name(o->strategy);
        int same = strcmp(prev->server->strategy, want) == 0;
        int has_buffers = (c & (FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M) | FLAS_CKPT_HAS(FLAS_CKPT_SERVER_V))) != 0;
        if (!same && has_buffers && !o->reset_server_state) {
            snprintf(err, errlen, "previous global: %s carries %s server state; refusing to continue it with %s "
                     "(pass --reset-server-state to start fresh buffers)", prev->path, prev->server->strategy, want);
            return -1;
        }
        if (same && !o->reset_server_state) {
            prev->m_from_file = flas_agg_strategy_has_m(o->strategy) && (c & FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M));
            prev->v_from_file = flas_agg_strategy_has_v(o->strategy) && (c & FLAS_CKPT_HAS(FLAS_CKPT_SERVER_V));
            if (flas_agg_strategy_has_m(o->strategy) && !prev->m_from_file && prev->server->round > 0) {
                snprintf(err, errlen, "previous global: %s has %s server state without its momentum buffer "
                         "(/server/m)", prev->path, want);
                return -1;
            }
            if (flas_agg_strategy_has_v(o->strategy) && !prev->v_from_file && prev->server->round > 0) {
                snprintf(err, errlen, "previous global: %s has %s server state without its second moment "
                         "(/server/v)", prev->path, want);
                return -1;
            }
        }
    }
    return 0;
}

void agg_validate_inputs(const agg_previous *prev, agg_input *in, int n, const flas_agg_options *o)
{
    char why[1024];
    for (int i = 0; i < n; i++) {
        agg_input *x = &in[i];
        x->rep->used = 1;
        x->rep->reason[0] = '\0';
        x->r = flas_ckpt_open(x->path, MPI_COMM_NULL, why, sizeof why);
        if (!x->r) {
            reason(x, "%s", why);
            continue;
        }
        const flas_ckpt_meta *m = flas_ckpt_meta_of(x->r);
        /* Who sent a file is where it was fetched from; the file's own `site` only has to agree. */
        const char *fetched = o->input_sites && o->input_sites[i] && o->input_sites[i][0] ? o->input_sites[i] : NULL;
        snprintf(x->rep->site, sizeof x->rep->site, "%s", fetched ? fetched : m->site);
        x->rep->round = m->round;
        x->rep->tokens = m->tokens_trained;
        if (m->role != FLAS_CKPT_LOCAL) {
            reason(x, "%s: is a global checkpoint, not a site's local one", x->path);
            continue;
        }
        if (fetched && strcmp(m->site, fetched) != 0) {
            reason(x, "%s: fetched from site '%s' but claims to be site '%s'", x->path, fetched, m->site);
            continue;
        }
        if (flas_ckpt_expect_config(x->r, &prev->meta->cfg, why, sizeof why)) {
            reason(x, "%s", why);
            continue;
        }
        if (strcmp(m->base_sha256, prev->base_sha256) != 0) {
            reason(x, "%s: %s another base model (base_sha256 %.12s..., the previous global is %.12s...)", x->path,
                   m->update != FLAS_UPDATE_FULL ? "a delta against" : "trained from",
                   m->base_sha256[0] ? m->base_sha256 : "(none)", prev->base_sha256);
            continue;
        }
        x->is_update = (flas_ckpt_contents(x->r) & FLAS_CKPT_UPDATE) != 0;
        if (m->round != prev->meta->round) {
            reason(x, "%s: round %lld, but the previous global starts round %lld", x->path, (long long)m->round,
                   (long long)prev->meta->round);
            continue;
        }
        if (m->tokens_trained <= 0 || m->tokens_trained > o->max_tokens) {
            reason(x, "%s: implausible tokens_trained %lld (expected 1..%lld)", x->path, (long long)m->tokens_trained,
                   (long long)o->max_tokens);
            continue;
        }
    }
    /* One site twice would count its update twice. (A copy of a file has the same site, so this also
     * catches the same checkpoint given twice before anything is merged; agg_check_digests double-checks
     * by content.) */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i && in[i].rep->used; j++)
            if (in[j].rep->used && strcmp(in[i].rep->site, in[j].rep->site) == 0)
                reason(&in[i], "%s: site '%s' already has an update in this round (%s)", in[i].path, in[i].rep->site,
                       in[j].path);
}
