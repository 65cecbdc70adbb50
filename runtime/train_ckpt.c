/* Checkpoint glue of flas-train: verify and load the global model or a local checkpoint to resume,
 * write the local checkpoint (collective, atomic), and write a round-0 global model (--init).
 *
 * Who writes what: data-parallel rank d writes slice d (flas_train_slice over dp ranks) of its tp
 * shard's flat buffer for every section, so all ranks write at once and every element exactly once
 * (replicated tensors: tp rank 0, by flas_ckpt_put_flat). Without ZeRO-1 every rank holds the whole
 * AdamW state and writes only its slice; with ZeRO-1 the slice is what it holds. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/error.h"
#include "flas/interop.h"
#include "train_internal.h"

int train_verify_global(const flas_train_opts *o, flas_train_comm *c, char sha[FLAS_SHA256_HEX], char *err,
                        size_t errlen)
{
    int ok = 1;
    memset(sha, 0, FLAS_SHA256_HEX);
    if (c->rank == 0) {
        if (flas_sha256_file(o->global, sha, NULL, err, errlen))
            ok = 0;
        else if (o->global_sha256[0] && strcmp(sha, o->global_sha256))
            ok = 0, flas_fail(err, errlen,
                         "%s: sha256 %s differs from the expected %s (FLAS_GLOBAL_SHA256 or --global-sha256): "
                         "not the model staged for this round, refusing to train on it",
                         o->global, sha, o->global_sha256);
    }
    if (flas_train_agree(c->world, ok, err, errlen))
        return -1;
    MPI_Bcast(sha, FLAS_SHA256_HEX, MPI_CHAR, 0, c->world);
    return 0;
}

/* Everything that can be said about the file before allocating: role, round, base, config. */
static int check_source(const trainer *t, const flas_ckpt_reader *r, const char *path, int resume,
                        const char *global_sha, char *err, size_t errlen)
{
    const flas_train_opts *o = t->o;
    const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
    unsigned has = flas_ckpt_contents(r);
    if (resume) {
        if (m->role != FLAS_CKPT_LOCAL)
            return flas_fail(err, errlen, "%s: --resume needs a local checkpoint written by flas-train, this is a %s model",
                        path, flas_ckpt_role_name(m->role));
        if (!(has & FLAS_CKPT_OPTIMIZER) || !(has & FLAS_CKPT_TRAIN_STATE))
            return flas_fail(err, errlen, "%s: cannot resume: no optimizer state or training state in the file", path);
        if (global_sha[0] && strcmp(m->base_sha256, global_sha))
            return flas_fail(err, errlen, "%s: started from the global model with sha256 %s, not from %s (%s): another round",
                        path, m->base_sha256[0] ? m->base_sha256 : "(none)", o->global, global_sha);
        if (o->site[0] && strcmp(m->site, o->site))
            return flas_fail(err, errlen, "%s: trained by site '%s', not '%s'", path, m->site, o->site);
    } else if (m->role != FLAS_CKPT_GLOBAL) {
        return flas_fail(err, errlen, "%s: is a %s checkpoint (site '%s'), not a global model; continue it with --resume",
                    path, flas_ckpt_role_name(m->role), m->site);
    }
    if (o->round >= 0 && m->round != o->round)
        return flas_fail(err, errlen, "%s: holds round %lld, but this job trains round %ld (FLAS_ROUND or --round)", path,
                    (long long)m->round, o->round);
    if (o->cfg_given) {
        flas_config want;
        char why[512];
        flas_train_opts_overlay(o, &m->cfg, &want);
        if (flas_ckpt_expect_config(r, &want, why, sizeof why))
            return flas_fail(err, errlen, "model flags do not match the checkpoint: %s", why);
    }
    int T = o->seq ? o->seq : m->cfg.seq_len;
    if (T > m->cfg.seq_len)
        return flas_fail(err, errlen, "--seq %d is longer than the model's seq_len %d", T, m->cfg.seq_len);
    return 0;
}

/* The model, its optimizer slice, and buffers. Rank-local failures (memory) are agreed by the caller. */
static int build(trainer *t, const flas_config *cfg, char *err, size_t errlen)
{
    const flas_train_opts *o = t->o;
    flas_train_comm *c = t->c;
    t->cfg = *cfg;
    t->B = o->batch;
    t->T = o->seq ? o->seq : cfg->seq_len;
    t->accum = o->accum;
    int threads = train_threads(o, c);
    if (flas_model_create(&t->model, cfg, c->tp_rank, c->tp_size, t->B, t->T, threads, err, errlen))
        return -1;
    if (flas_model_set_precision(&t->model, o->precision, err, errlen))
        return -1;
    flas_model_set_allreduce(&t->model, flas_train_tp_allreduce, c);
    size_t n = t->model.table.n_params;
    flas_train_slice(n, c->dp_rank, c->dp_size, &t->io_lo, &t->io_hi);
    t->opt_lo = o->zero ? t->io_lo : 0;
    t->opt_hi = o->zero ? t->io_hi : n;
    if (flas_train_slice_table(&t->model.table, t->opt_lo, t->opt_hi, &t->opt_table) ||
        flas_adamw_init(&t->opt, &t->opt_table, o->beta1, o->beta2, o->eps, o->weight_decay))
        return flas_fail(err, errlen, "out of memory for the AdamW state (%zu floats x 2)", t->opt_hi - t->opt_lo);
    t->tokens = malloc(sizeof(int32_t) * (size_t)t->B * t->T);
    t->targets = malloc(sizeof(int32_t) * (size_t)t->B * t->T);
    if (!t->tokens || !t->targets)
        return flas_fail(err, errlen, "out of memory for a %d x %d batch", t->B, t->T);
    return 0;
}

int train_load(trainer *t, const char *resume, const char *global_sha, char *err, size_t errlen)
{
    const flas_train_opts *o = t->o;
    flas_train_comm *c = t->c;
    const char *path = resume[0] ? resume : o->global;
    flas_ckpt_reader *r = flas_ckpt_open(path, train_ckpt_comm(c), err, errlen);
    if (!r)
        return -1; /* the library validated on rank 0 and told everyone */
    const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
    /* Same meta on every rank: the checks agree without communication. */
    if (check_source(t, r, path, resume[0] != 0, global_sha, err, errlen)) {
        flas_ckpt_close(r);
        return -1;
    }
    int ok = build(t, &m->cfg, err, errlen) == 0;
    if (flas_train_agree(c->world, ok, err, errlen)) {
        flas_ckpt_close(r);
        return -1;
    }
    flas_model *md = &t->model;
    ok = flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, &md->table, 0, md->table.n_params, md->params, err, errlen) == 0;
    flas_train_state ts = {0};
    if (resume[0]) {
        flas_ckpt_optimizer opt;
        flas_ckpt_metrics mt;
        ok &= flas_ckpt_get_flat(r, FLAS_CKPT_ADAM_M, &md->table, t->opt_lo, t->opt_hi, t->opt.m, err, errlen) == 0;
        ok &= flas_ckpt_get_flat(r, FLAS_CKPT_ADAM_V, &md->table, t->opt_lo, t->opt_hi, t->opt.v, err, errlen) == 0;
        if (ok && flas_ckpt_get_optimizer(r, &opt, err, errlen) == 0 &&
            flas_ckpt_get_train_state(r, &ts, err, errlen) == 0) {
            t->opt.step = opt.step;
            t->step = m->step;
            t->tokens_trained = m->tokens_trained;
            t->samples = ts.samples;
            memcpy(t->rng_state, ts.rng_state, sizeof t->rng_state);
            if (flas_ckpt_get_metrics(r, &mt, err, errlen) == 0)
                t->train_seconds = mt.train_seconds;
            if (ts.loader_cursor[0] == 0)
                ok = 0, flas_fail(err, errlen, "%s: no data loader cursor in /train_state: cannot continue exactly", path);
        } else {
            ok = 0;
        }
    }
    memset(&t->meta, 0, sizeof t->meta);
    t->meta.cfg = m->cfg;
    t->meta.role = FLAS_CKPT_LOCAL;
    t->meta.round = m->round;
    snprintf(t->meta.site, sizeof t->meta.site, "%s", o->site[0] ? o->site : m->site);
    snprintf(t->meta.base_sha256, sizeof t->meta.base_sha256, "%s", resume[0] ? m->base_sha256 : global_sha);
    t->meta.tp_size = c->tp_size;
    t->meta.dp_size = c->dp_size;
    flas_ckpt_close(r);
    if (flas_train_agree(c->world, ok, err, errlen))
        return -1;
    t->resume_cursor_valid = resume[0] != 0;
    memcpy(t->resume_cursor, ts.loader_cursor, sizeof t->resume_cursor);
    return 0;
}

int train_load_anchor(trainer *t, int resumed, char *err, size_t errlen)
{
    flas_model *md = &t->model;
    size_t n = md->table.n_params;
    t->anchor = malloc(sizeof(float) * n);
    int ok = t->anchor != NULL;
    if (!ok)
        flas_fail(err, errlen, "out of memory for --prox's copy of the global weights (%zu floats)", n);
    if (flas_train_agree(t->c->world, ok, err, errlen))
        return -1;
    if (!resumed) { /* the params were just loaded from the global */
        memcpy(t->anchor, md->params, sizeof(float) * n);
        return 0;
    }
    flas_ckpt_reader *r = flas_ckpt_open(t->o->global, train_ckpt_comm(t->c), err, errlen);
    if (!r)
        return -1;
    char why[512];
    if (flas_ckpt_expect_config(r, &t->cfg, why, sizeof why))
        ok = 0, flas_fail(err, errlen, "%s: --prox: another model than the resumed checkpoint: %s", t->o->global, why);
    else
        ok = flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, &md->table, 0, n, t->anchor, err, errlen) == 0;
    flas_ckpt_close(r);
    return flas_train_agree(t->c->world, ok, err, errlen);
}

/* Where the next window starts: the shard and token offset for /train_state (informational; the exact
 * position is the loader cursor). */
static void locate(const trainer *t, const flas_loader_cursor *cur, int64_t *shard, int64_t *offset)
{
    uint64_t W = flas_loader_n_windows(t->train), pos = cur->position, epoch = cur->epoch;
    uint64_t per_step = (uint64_t)t->B * (uint64_t)t->c->dp_size;
    if (pos + per_step > W)
        pos = 0, epoch++;
    uint64_t w = cur->shuffle ? flas_loader_permute(pos, W, cur->seed, epoch) : pos;
    uint64_t tok = w * (uint64_t)t->T, start = 0;
    *shard = 0;
    for (int i = 0; i < t->n_shards; i++) {
        if (tok < t->shard_end[i]) {
            *shard = i;
            break;
        }
        start = t->shard_end[i];
    }
    *offset = (int64_t)(tok - start);
}

static void train_state_of(const trainer *t, flas_train_state *s)
{
    flas_loader_cursor cur;
    flas_loader_get_cursor(t->train, &cur);
    memset(s, 0, sizeof *s);
    s->epoch = (int64_t)cur.epoch;
    locate(t, &cur, &s->shard, &s->offset);
    s->samples = t->samples;
    s->rng_seed = t->o->seed;
    memcpy(s->rng_state, t->rng_state, sizeof s->rng_state);
    flas_loader_cursor_to_words(&cur, s->loader_cursor);
}

static void metrics_of(const trainer *t, const char *reason, flas_ckpt_metrics *m)
{
    memset(m, 0, sizeof *m);
    long n = t->n_losses < TRAIN_LOSS_WINDOW ? t->n_losses : TRAIN_LOSS_WINDOW;
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += t->losses[i];
    m->train_loss = n ? sum / n : NAN;
    m->train_loss_last = t->n_losses ? t->losses[(t->n_losses - 1) % TRAIN_LOSS_WINDOW] : NAN;
    m->valid_loss = t->valid_loss;
    m->valid_perplexity = isnan(t->valid_loss) ? NAN : exp(t->valid_loss);
    m->valid_tokens = t->valid_tokens;
    m->train_seconds = t->train_seconds;
    m->tokens_per_second = t->train_seconds > 0 ? (double)t->tokens_trained / t->train_seconds : 0;
    snprintf(m->stop_reason, sizeof m->stop_reason, "%s", reason);
}

int train_write(trainer *t, const char *reason, char *err, size_t errlen)
{
    flas_model *md = &t->model;
    const flas_param_table *tab = &md->table;
    double t0 = flas_train_now();
    t->meta.step = t->step;
    t->meta.tokens_trained = t->tokens_trained;
    unsigned contents = FLAS_CKPT_OPTIMIZER | FLAS_CKPT_TRAIN_STATE | FLAS_CKPT_METRICS;
    flas_ckpt_writer *w = flas_ckpt_create(t->o->checkpoint, &t->meta, contents, train_ckpt_comm(t->c), err, errlen);
    if (!w)
        return -1;
    size_t lo = t->io_lo, hi = t->io_hi, base = t->opt_lo;
    flas_ckpt_optimizer opt = {t->opt.step, t->lr, t->o->beta1, t->o->beta2, t->o->eps, t->o->weight_decay};
    flas_train_state ts;
    flas_ckpt_metrics mt;
    train_state_of(t, &ts);
    metrics_of(t, reason, &mt);
    /* Every call is collective and made by every rank in the same order; a failure is remembered by
     * the writer and makes commit refuse everywhere. */
    flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, tab, lo, hi, md->params + lo, err, errlen);
    flas_ckpt_put_flat(w, FLAS_CKPT_ADAM_M, tab, lo, hi, t->opt.m + (lo - base), err, errlen);
    flas_ckpt_put_flat(w, FLAS_CKPT_ADAM_V, tab, lo, hi, t->opt.v + (lo - base), err, errlen);
    flas_ckpt_set_optimizer(w, &opt, err, errlen);
    flas_ckpt_set_train_state(w, &ts, err, errlen);
    flas_ckpt_set_metrics(w, &mt, err, errlen);
    if (flas_ckpt_commit(w, err, errlen))
        return -1;
    double secs = flas_train_now() - t0;
    MPI_Bcast(&secs, 1, MPI_DOUBLE, 0, t->c->world);
    double bytes = 3.0 * 4.0 * (double)tab->n_params_full;
    train_log_json(&t->log, "{\"event\":\"checkpoint\",\"step\":%ld,\"reason\":\"%s\",\"seconds\":%.4f,\"bytes\":%.0f}",
                   t->step, reason, secs, bytes);
    train_say(t->c, "flas-train: checkpoint step %ld (%s) -> %s: %.1f MB in %.2f s\n", t->step, reason,
              t->o->checkpoint, bytes / 1e6, secs);
    /* Each committed checkpoint is followed by its update, so that --output always matches the newest
     * checkpoint a resume would continue from. With a kept inner state the checkpoint is the site's
     * private state and the published file carries the weights only. */
    if (t->o->update != FLAS_UPDATE_FULL && train_publish_update(t, reason, err, errlen))
        return -1;
    if (t->o->update == FLAS_UPDATE_FULL && t->o->inner_keep && train_publish_params(t, &mt, err, errlen))
        return -1;
    if (t->o->inner_keep)
        train_inner_prune(t);
    /* The walltime reserve covers everything the end of a round writes. */
    secs = flas_train_now() - t0;
    MPI_Bcast(&secs, 1, MPI_DOUBLE, 0, t->c->world);
    t->clock.ckpt_seconds = secs;
    return 0;
}

/* --init-from: rank 0 imports the published model as the round-0 global (flas_convert streams it, one
 * tensor at a time); the other ranks wait for the verdict. */
static int init_from_import(const flas_train_opts *o, flas_train_comm *c, char *err, size_t errlen)
{
    flas_convert_report r;
    int ok = 1;
    char sha[FLAS_SHA256_HEX] = "";
    if (c->rank == 0) {
        flas_convert_opts co;
        flas_convert_opts_init(&co);
        co.to = FLAS_FMT_FLAS;
        co.round = o->round >= 0 ? o->round : 0;
        co.force = 1; /* as --init: the output is replaced, atomically */
        co.seq_len = (o->cfg_given & FLAS_CFG_SEQ_LEN) ? o->cfg.seq_len : 0;
        co.progress = 1;
        ok = flas_convert(o->init_from, o->output, &co, &r, err, errlen) == 0 &&
             flas_sha256_file(o->output, sha, NULL, err, errlen) == 0;
    }
    if (flas_train_agree(c->world, ok, err, errlen))
        return -1;
    if (c->rank == 0) {
        const flas_config *m = &r.cfg;
        if (o->json)
            printf("{\"output\":\"%s\",\"round\":%lld,\"parameters\":%llu,\"from\":\"%s\",\"sha256\":\"%s\"}\n", o->output,
                   (long long)(o->round >= 0 ? o->round : 0), (unsigned long long)r.params, flas_format_name(r.from), sha);
        else
            printf("flas-train: wrote global model %s: round %lld, %llu parameters (dim %d, %d layers, %d/%d heads, "
                   "hidden %d, vocab %d, seq_len %d%s) imported from %s (%s), sha256 %s\n",
                   o->output, (long long)(o->round >= 0 ? o->round : 0), (unsigned long long)r.params, m->dim,
                   m->n_layers, m->n_heads, m->n_kv_heads, m->hidden_dim, m->vocab_size, m->seq_len,
                   m->tied_embeddings ? ", tied" : "", o->init_from, flas_format_name(r.from), sha);
        fflush(stdout);
    }
    return 0;
}

int train_init_global(const flas_train_opts *o, flas_train_comm *c, char *err, size_t errlen)
{
    if (o->init_from[0])
        return init_from_import(o, c, err, errlen);
    flas_config cfg;
    if (flas_train_opts_config(o, &cfg, err, errlen))
        return -1;
    flas_model m;
    int threads = train_threads(o, c);
    int ok = flas_model_create(&m, &cfg, c->tp_rank, c->tp_size, 1, 1, threads, err, errlen) == 0;
    if (flas_train_agree(c->world, ok, err, errlen)) {
        if (ok)
            flas_model_free(&m);
        return -1;
    }
    flas_model_init_weights(&m, o->seed);
    flas_ckpt_meta meta = {0};
    meta.cfg = cfg;
    meta.role = FLAS_CKPT_GLOBAL;
    meta.round = o->round >= 0 ? o->round : 0;
    meta.tp_size = c->tp_size;
    meta.dp_size = c->dp_size;
    size_t lo, hi;
    flas_train_slice(m.table.n_params, c->dp_rank, c->dp_size, &lo, &hi);
    int rc = -1;
    flas_ckpt_writer *w = flas_ckpt_create(o->output, &meta, 0, train_ckpt_comm(c), err, errlen);
    if (w) {
        flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, &m.table, lo, hi, m.params + lo, err, errlen);
        rc = flas_ckpt_commit(w, err, errlen);
    }
    size_t n_full = m.table.n_params_full;
    flas_model_free(&m);
    if (rc)
        return -1;
    char sha[FLAS_SHA256_HEX] = "";
    ok = c->rank != 0 || flas_sha256_file(o->output, sha, NULL, err, errlen) == 0;
    if (flas_train_agree(c->world, ok, err, errlen))
        return -1;
    if (c->rank == 0) {
        if (o->json)
            printf("{\"output\":\"%s\",\"round\":%lld,\"parameters\":%zu,\"seed\":%llu,\"sha256\":\"%s\"}\n", o->output,
                   (long long)meta.round, n_full, (unsigned long long)o->seed, sha);
        else
            printf("flas-train: wrote global model %s: round %lld, %zu parameters (dim %d, %d layers, %d/%d heads, "
                   "hidden %d, vocab %d, seq_len %d%s), seed %llu, sha256 %s\n",
                   o->output, (long long)meta.round, n_full, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                   cfg.hidden_dim, cfg.vocab_size, cfg.seq_len, cfg.tied_embeddings ? ", tied" : "",
                   (unsigned long long)o->seed, sha);
        fflush(stdout);
    }
    return 0;
}

void train_free(trainer *t)
{
    if (t->train)
        flas_loader_close(t->train);
    if (t->valid)
        flas_loader_close(t->valid);
    if (t->model.params)
        flas_model_free(&t->model);
    flas_adamw_free(&t->opt);
    flas_param_table_free(&t->opt_table);
    free(t->tokens);
    free(t->targets);
    free(t->anchor);
    free(t->shard_end);
    train_log_close(&t->log);
    memset(t, 0, sizeof *t);
}
