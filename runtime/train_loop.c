/* The round: optimizer steps until --steps/--tokens are done, the walltime runs short or a signal asks
 * to stop; periodic checkpoints; validation; the final checkpoint.
 *
 * One step = accum micro-batches of B x T per rank, backward with loss scale 1/(accum x dp) (so the
 * dp sum IS the mean over the global batch, the same scale one process with accum x dp micro-batches
 * uses), the bucketed dp allreduce of the gradients, one small world allreduce of (loss, failure,
 * stop) that keeps every rank's decisions identical, clipping, AdamW on this rank's slice, and with
 * ZeRO-1 the gather of the updated slices. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

/* The validation time estimate, from the first step's duration (forward ~ 1/3 of forward + backward). */
static void estimate_validation(trainer *t)
{
    if (!t->valid)
        return;
    uint64_t batches = flas_loader_n_windows(t->valid) / ((uint64_t)t->B * t->c->dp_size);
    if (t->o->valid_batches > 0 && (uint64_t)t->o->valid_batches < batches)
        batches = (uint64_t)t->o->valid_batches;
    t->clock.valid_seconds = (double)batches * t->clock.step_seconds / t->accum / 3.0;
}

/* 0: step done (*stop set when any rank wants to stop after it), -1: failed on some rank (err). */
static int train_step(trainer *t, double *loss_out, float *norm_out, int *stop, char *err, size_t errlen)
{
    flas_model *m = &t->model;
    flas_train_comm *c = t->c;
    const flas_train_opts *o = t->o;
    double t0 = flas_train_now(), loss_sum = 0;
    int ok = 1;
    float scale = 1.0f / (float)(t->accum * c->dp_size);
    flas_model_zero_grad(m);
    for (int k = 0; k < t->accum && ok; k++) {
        float loss;
        int rc = flas_loader_next(t->train, t->tokens, t->targets, err, errlen);
        if (rc == 0)
            snprintf(err, errlen, "internal: the training loader ended");
        /* The forward pass of a tp group is collective (an allreduce after wo and w2): its ranks read
         * the same batch, but one of them may still fail to (an I/O error): then none may start it. */
        int loaded = rc == 1;
        if (c->tp_size > 1)
            MPI_Allreduce(MPI_IN_PLACE, &loaded, 1, MPI_INT, MPI_MIN, c->tp);
        if (!loaded) {
            if (rc == 1)
                snprintf(err, errlen, "step %ld: a tensor-parallel peer could not read its batch", t->step + 1);
            ok = 0;
        } else if (flas_model_forward(m, t->tokens, t->targets, t->B, t->T, &loss, NULL) ||
                   flas_model_backward(m, scale)) {
            snprintf(err, errlen, "step %ld: %s", t->step + 1, m->err);
            ok = 0;
        } else {
            loss_sum += loss;
        }
    }
    /* A rank that failed still joins the gradient reduction, so that no rank waits forever. */
    flas_train_dp_allreduce(c, m->grads, m->table.n_params, (size_t)(o->bucket_mb * 1048576.0 / sizeof(float)));
    t->clock.step_seconds = flas_train_now() - t0;
    int want_stop = flas_train_signal_pending() || flas_train_clock_must_stop(&t->clock, flas_train_now());
    double st[3] = {c->tp_rank == 0 ? loss_sum / t->accum : 0, ok ? 0 : 1, want_stop};
    MPI_Allreduce(MPI_IN_PLACE, st, 3, MPI_DOUBLE, MPI_SUM, c->world);
    if (st[1] > 0) {
        flas_train_agree(c->world, ok, err, errlen);
        return -1;
    }
    *loss_out = st[0] / c->dp_size;
    *stop = st[2] > 0;
    if (t->anchor) /* FedProx: the gradient of mu/2 ||x - x_global||^2, before clipping as part of the loss */
        flas_prox_grad(m->grads, m->params, t->anchor, m->table.n_params, o->prox);
    *norm_out = flas_model_clip_grad_norm(m, o->clip);
    t->lr = flas_lr_at(&t->sched, t->sched_offset + t->step);
    if (o->round_warmup > t->step) /* a ramp after the reset of a round, whatever the schedule says */
        t->lr *= (float)(t->step + 1) / (float)o->round_warmup;
    flas_adamw_step(&t->opt, m->params + t->opt_lo, m->grads + t->opt_lo, t->lr);
    if (o->zero)
        flas_train_dp_gather_slices(c, m->params, m->table.n_params);
    t->step++;
    t->tokens_trained += (int64_t)t->B * t->T * t->accum * c->dp_size;
    t->samples += (int64_t)t->B * t->accum * c->dp_size;
    t->losses[t->n_losses++ % TRAIN_LOSS_WINDOW] = *loss_out;
    double dt = flas_train_now() - t0;
    t->clock.step_seconds = dt;
    t->train_seconds += dt;
    return 0;
}

/* Agreement before the first step: a signal that came during loading, or no time left at all. */
static int stop_now(trainer *t)
{
    int want = flas_train_signal_pending() || flas_train_clock_must_stop(&t->clock, flas_train_now()), any = 0;
    MPI_Allreduce(&want, &any, 1, MPI_INT, MPI_MAX, t->c->world);
    return any;
}

static const char *why_stopped(const trainer *t)
{
    /* Every rank must name the same reason: decide from values all ranks share. */
    int sig = flas_train_signal_pending() != 0, any = 0;
    MPI_Allreduce(&sig, &any, 1, MPI_INT, MPI_MAX, t->c->world);
    return any ? "signal" : "walltime";
}

int train_round(trainer *t, char *err, size_t errlen)
{
    const flas_train_opts *o = t->o;
    flas_train_comm *c = t->c;
    int stop = t->step < t->steps_target && stop_now(t);
    t->stop_reason = o->tokens && (!o->steps || t->steps_target < o->steps) ? "tokens" : "steps";
    while (!stop && t->step < t->steps_target) {
        double loss;
        float norm;
        int first = t->clock.step_seconds == 0; /* the first step of this run */
        if (train_step(t, &loss, &norm, &stop, err, errlen))
            return -1;
        if (first)
            estimate_validation(t);
        train_log_step(t, loss, norm, t->step == 1 || t->step == t->steps_target || stop);
        if (!stop && o->checkpoint_every && t->step % o->checkpoint_every == 0 && t->step < t->steps_target &&
            train_write(t, "periodic", err, errlen))
            return -1;
    }
    if (t->step < t->steps_target)
        t->stop_reason = why_stopped(t);
    if (stop)
        train_say(c, "flas-train: stopping after step %ld of %ld: %s\n", t->step, t->steps_target,
                  strcmp(t->stop_reason, "signal") ? "the job's walltime is running out" : "signal received");
    /* Validation unless a signal asked for the checkpoint now (the walltime reserve includes it). */
    if (t->valid && strcmp(t->stop_reason, "signal")) {
        double t0 = flas_train_now(), loss;
        int64_t n;
        if (train_evaluate(&t->model, t->valid, c, o->valid_batches, t->tokens, t->targets, &loss, &n, err, errlen))
            return -1;
        t->valid_loss = loss;
        t->valid_tokens = n;
        char a[32] = "null", b[32] = "null";
        if (isfinite(loss))
            snprintf(a, sizeof a, "%.9g", loss), snprintf(b, sizeof b, "%.9g", exp(loss));
        train_log_json(&t->log, "{\"event\":\"valid\",\"step\":%ld,\"loss\":%s,\"perplexity\":%s,\"tokens\":%lld,\"seconds\":%.3f}",
                       t->step, a, b, (long long)n, flas_train_now() - t0);
        train_say(c, "flas-train: validation after step %ld: loss %.4f, perplexity %.2f over %lld tokens\n", t->step,
                  loss, exp(loss), (long long)n);
    }
    return train_write(t, t->stop_reason, err, errlen);
}
