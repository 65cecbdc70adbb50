/* Validation loss: at the end of a round, and of any checkpoint with --eval (the experiment measures
 * every model on the Italian and Czech held-out shards with it). The validation loader hands each
 * data-parallel rank its own windows, in order, one pass; tensor-parallel ranks of a replica read the
 * same windows and compute the same loss, so only tp rank 0 contributes to the sums. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

flas_loader *train_open_valid(const flas_train_opts *o, flas_train_comm *c, const flas_config *cfg, int B, int T,
                              char *err, size_t errlen)
{
    const char *paths[1] = {o->valid};
    flas_loader *l = flas_loader_open_validation(paths, 1, T, B, c->dp_rank, c->dp_size, cfg->vocab_size, NULL, err,
                                                 errlen);
    if (flas_train_agree(c->world, l != NULL, err, errlen)) {
        if (l)
            flas_loader_close(l);
        return NULL;
    }
    return l;
}

int train_evaluate(flas_model *m, flas_loader *valid, flas_train_comm *c, long max_batches, int32_t *tokens,
                   int32_t *targets, double *loss, int64_t *n_tokens, char *err, size_t errlen)
{
    int B = m->max_batch, T = m->max_seq, ok = 1;
    double sum = 0, count = 0;
    flas_loader_rewind(valid);
    /* Every dp rank gets the same number of batches (the loader hands them out in rounds of B x dp), so
     * the ranks leave the loop together; a rank that fails leaves early and only the final allreduce,
     * which every rank reaches exactly once, is shared across replicas. */
    for (long b = 0; ok && (max_batches <= 0 || b < max_batches); b++) {
        int rc = flas_loader_next(valid, tokens, targets, err, errlen), all = rc;
        /* The forward pass is collective within a tp group: its ranks go on together or stop together. */
        if (c->tp_size > 1)
            MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, c->tp);
        if (all <= 0) {
            ok = all == 0;
            if (rc == 1)
                snprintf(err, errlen, "validation: a tensor-parallel peer could not read its batch");
            break;
        }
        float l;
        if (flas_model_forward(m, tokens, targets, B, T, &l, NULL)) {
            snprintf(err, errlen, "validation: %s", m->err);
            ok = 0;
            break;
        }
        sum += (double)l * B * T;
        count += (double)B * T;
    }
    double st[3] = {c->tp_rank == 0 ? sum : 0, c->tp_rank == 0 ? count : 0, ok ? 0 : 1};
    MPI_Allreduce(MPI_IN_PLACE, st, 3, MPI_DOUBLE, MPI_SUM, c->world);
    if (st[2] > 0) {
        flas_train_agree(c->world, ok, err, errlen);
        return -1;
    }
    *loss = st[1] > 0 ? st[0] / st[1] : NAN;
    *n_tokens = (int64_t)st[1];
    return 0;
}

int train_eval_main(const flas_train_opts *o, flas_train_comm *c, char *err, size_t errlen)
{
    char sha[FLAS_SHA256_HEX] = "";
    int ok = c->rank != 0 || flas_sha256_file(o->eval, sha, NULL, err, errlen) == 0;
    if (flas_train_agree(c->world, ok, err, errlen))
        return -1;
    flas_ckpt_reader *r = flas_ckpt_open(o->eval, train_ckpt_comm(c), err, errlen);
    if (!r)
        return -1;
    flas_ckpt_meta meta = *flas_ckpt_meta_of(r);
    int T = o->seq ? o->seq : meta.cfg.seq_len;
    if (T > meta.cfg.seq_len) {
        flas_ckpt_close(r);
        snprintf(err, errlen, "--seq %d is longer than the model's seq_len %d", T, meta.cfg.seq_len);
        return -1;
    }
    flas_model m;
    int threads = train_threads(o, c);
    ok = flas_model_create(&m, &meta.cfg, c->tp_rank, c->tp_size, o->batch, T, threads, err, errlen) == 0;
    if (ok && flas_model_set_precision(&m, o->precision, err, errlen)) {
        flas_model_free(&m);
        ok = 0;
    }
    if (flas_train_agree(c->world, ok, err, errlen)) {
        if (ok)
            flas_model_free(&m);
        flas_ckpt_close(r);
        return -1;
    }
    flas_model_set_allreduce(&m, flas_train_tp_allreduce, c);
    ok = flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, &m.table, 0, m.table.n_params, m.params, err, errlen) == 0;
    flas_ckpt_close(r);
    int rc = flas_train_agree(c->world, ok, err, errlen);
    flas_loader *valid = rc ? NULL : train_open_valid(o, c, &meta.cfg, o->batch, T, err, errlen);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)o->batch * T), *tgt = malloc(sizeof(int32_t) * (size_t)o->batch * T);
    double loss = NAN, t0 = flas_train_now();
    int64_t n = 0;
    if (valid && tok && tgt)
        rc = train_evaluate(&m, valid, c, o->valid_batches, tok, tgt, &loss, &n, err, errlen);
    else
        rc = -1;
    double secs = flas_train_now() - t0;
    if (rc == 0 && c->rank == 0) {
        if (o->json)
            printf("{\"checkpoint\":\"%s\",\"sha256\":\"%s\",\"role\":\"%s\",\"round\":%lld,\"site\":\"%s\","
                   "\"step\":%lld,\"tokens_trained\":%lld,\"valid\":\"%s\",\"loss\":%.9g,\"perplexity\":%.9g,"
                   "\"tokens\":%lld,\"seq\":%d,\"seconds\":%.3f}\n",
                   o->eval, sha, flas_ckpt_role_name(meta.role), (long long)meta.round, meta.site, (long long)meta.step,
                   (long long)meta.tokens_trained, o->valid, loss, exp(loss), (long long)n, T, secs);
        else
            printf("flas-train: eval %s (%s, round %lld%s%s): loss %.4f, perplexity %.2f over %lld tokens of %s "
                   "(seq %d, %.1f s)\n",
                   o->eval, flas_ckpt_role_name(meta.role), (long long)meta.round, meta.site[0] ? ", site " : "",
                   meta.site, loss, exp(loss), (long long)n, o->valid, T, secs);
        fflush(stdout);
    }
    if (valid)
        flas_loader_close(valid);
    free(tok);
    free(tgt);
    flas_model_free(&m);
    return rc;
}
