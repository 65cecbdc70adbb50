/* flas-train --inner-state keep: the site's optimizer continues across rounds.
 *
 * With keep, the round's full local checkpoint (params, AdamW m and v, their step count, the data
 * loader's cursor) is written to STATE_DIR/inner-round-R.h5 instead of the job's directory, and what
 * the job publishes at --output is a params-only local checkpoint (or the compressed update, which
 * never carried moments). Round R+1 takes its params from the global model, as always, and its
 * moments, step count and data position from the newest inner state of a round < R+1: AdamW goes on
 * as if the round boundary had not been there except for the jump of the weights to the global, and
 * the data loader walks its epochs across rounds instead of starting an epoch in every round.
 *
 * The moments are the site's private state: an average of its squared gradients says more about its
 * data than the weights do, and the coordinator has no use for them (tests/train: the staged and
 * published files are searched for them). Which round's state is read follows the state directory's
 * rule (train_statedir.c, shared with the residuals): the newest of a round < R, never one of round R
 * itself, so that a retried job of round R starts from what round R-1 left and not from its own failed
 * attempt; the directory keeps the last two rounds.
 *
 * The state is refused, not guessed around, when it is another site's or another model's. */
#include <string.h>

#include "flas/error.h"
#include "flas/staging.h"
#include "train_internal.h"

int train_inner_load(trainer *t, char *err, size_t errlen)
{
    const flas_train_opts *o = t->o;
    flas_train_comm *c = t->c;
    long prev = -1;
    int ok = c->rank != 0 ||
             train_state_find_previous(o->state_dir, &train_state_inner, (long)t->meta.round, &prev, err, errlen) == 0;
    if (flas_train_agree(c->world, ok, err, errlen))
        return -1;
    MPI_Bcast(&prev, 1, MPI_LONG, 0, c->world);
    t->inner_from = prev;
    if (prev < 0) {
        train_say(c, "flas-train: inner state: none of a round before %lld in %s: AdamW starts fresh\n",
                  (long long)t->meta.round, o->state_dir);
        return 0;
    }
    char name[64], path[FLAS_TRAIN_PATH_MAX + 64];
    flas_stage_inner_name(name, sizeof name, prev);
    snprintf(path, sizeof path, "%s/%s", o->state_dir, name);
    flas_ckpt_reader *r = flas_ckpt_open(path, train_ckpt_comm(c), err, errlen);
    if (!r)
        return -1;
    const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
    unsigned has = flas_ckpt_contents(r);
    char why[512];
    ok = 1;
    if (m->role != FLAS_CKPT_LOCAL || !(has & FLAS_CKPT_OPTIMIZER) || !(has & FLAS_CKPT_TRAIN_STATE))
        ok = 0, flas_fail(err, errlen, "%s: not an inner state (a local checkpoint with optimizer and training state)", path);
    else if (strcmp(m->site, t->meta.site))
        ok = 0, flas_fail(err, errlen, "%s: the inner state of site '%s', not of '%s': a state directory belongs to one "
                          "site of one federation", path, m->site, t->meta.site);
    else if (flas_ckpt_expect_config(r, &t->cfg, why, sizeof why))
        ok = 0, flas_fail(err, errlen, "%s: another model's inner state: %s (remove it to start AdamW fresh)", path, why);
    flas_ckpt_optimizer opt;
    flas_train_state ts;
    flas_model *md = &t->model;
    if (ok) {
        ok = flas_ckpt_get_flat(r, FLAS_CKPT_ADAM_M, &md->table, t->opt_lo, t->opt_hi, t->opt.m, err, errlen) == 0 &&
             flas_ckpt_get_flat(r, FLAS_CKPT_ADAM_V, &md->table, t->opt_lo, t->opt_hi, t->opt.v, err, errlen) == 0 &&
             flas_ckpt_get_optimizer(r, &opt, err, errlen) == 0 && flas_ckpt_get_train_state(r, &ts, err, errlen) == 0;
    }
    flas_ckpt_close(r);
    if (flas_train_agree(c->world, ok, err, errlen))
        return -1;
    t->opt.step = opt.step;
    /* The data position continues where the site's previous round stopped (same seed: the same data). */
    if (ts.loader_cursor[0] != 0 && ts.rng_seed == o->seed) {
        memcpy(t->resume_cursor, ts.loader_cursor, sizeof t->resume_cursor);
        t->resume_cursor_valid = 1;
        t->cursor_from_inner = 1;
    }
    train_say(c, "flas-train: inner state from %s: AdamW continues at its step %ld%s\n", path, opt.step,
              t->cursor_from_inner ? ", the data where that round stopped" : "");
    return 0;
}

void train_inner_prune(const trainer *t)
{
    /* a resumed round read no earlier state itself; the one before it stays for a retry from scratch */
    long keep_from = t->inner_from >= 0 ? t->inner_from : (long)t->meta.round - 1;
    train_state_prune(t->o->state_dir, &train_state_inner, keep_from, t->c);
}

int train_publish_params(trainer *t, const flas_ckpt_metrics *mt, char *err, size_t errlen)
{
    flas_model *md = &t->model;
    flas_ckpt_writer *w = flas_ckpt_create(t->o->output, &t->meta, FLAS_CKPT_METRICS, train_ckpt_comm(t->c), err, errlen);
    if (!w)
        return -1;
    flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, &md->table, t->io_lo, t->io_hi, md->params + t->io_lo, err, errlen);
    flas_ckpt_set_metrics(w, mt, err, errlen);
    return flas_ckpt_commit(w, err, errlen);
}
