/* flas-train --update bf16|int8: what the epilog publishes is a compressed delta, not the checkpoint.
 *
 * After each commit of the full local checkpoint (periodic and final), rank 0 encodes
 *     update = encode(checkpoint - global + residual of an earlier round)
 * into --output and keeps what the encoding lost as this round's residual in the site's residual
 * directory (flas_update_encode_file, flas/update.h). The other ranks wait for its verdict: the job must
 * not end before the file the epilog publishes is complete, and every rank must return the same result.
 *
 * Error feedback: DIR/residual-round-R.h5 (flas_stage_residual_name) is the residual after round R's
 * update. Round R's encoding reads the newest residual of a round < R, never one of round R itself: a
 * periodic update followed by the final one, or a retried job of the same round, must each start from
 * the previous round's residual and not add their own earlier output a second time. Round R's residual
 * replaces an earlier one of round R atomically; the files of rounds older than the one read are
 * removed, so the directory holds the last two rounds (what a retry of the newest round needs).
 *
 * A residual belongs to one site of one federation: it is the part of that site's deltas that its
 * updates have not carried yet. Its site is checked; the federation is not recorded in checkpoints, so
 * a site in several federations gives each its own residual directory (docs/user.md). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "flas/atomic_file.h"
#include "flas/error.h"
#include "flas/staging.h"
#include "flas/update.h"
#include "train_internal.h"

#define RESIDUAL_PATH_MAX (FLAS_TRAIN_PATH_MAX + 64)

int train_residual_path(const flas_train_opts *o, long round, char *buf, size_t len)
{
    char name[64];
    if (flas_stage_residual_name(name, sizeof name, round))
        return -1;
    int n = snprintf(buf, len, "%s/%s", o->state_dir, name);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

/* The residual read must be this site's (the encoder checks the model; only the caller knows the site). */
static int check_residual_site(const char *path, const char *site, char *err, size_t errlen)
{
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, errlen);
    if (!r)
        return -1;
    int rc = 0;
    const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
    if (strcmp(m->site, site))
        rc = flas_fail(err, errlen, "%s: the error-feedback state of site '%s', not of '%s': a residual directory "
                       "belongs to one site of one federation", path, m->site, site);
    flas_ckpt_close(r);
    return rc;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

int train_publish_update(trainer *t, const char *reason, char *err, size_t errlen)
{
    const flas_train_opts *o = t->o;
    flas_train_comm *c = t->c;
    long round = (long)t->meta.round, prev = -1;
    char in[RESIDUAL_PATH_MAX] = "", out[RESIDUAL_PATH_MAX] = "";
    flas_update_report rep;
    memset(&rep, 0, sizeof rep);
    int ok = 1;
    if (c->rank == 0) {
        flas_update_opts uo = {.enc = o->update, .block = o->update_block, .chunk_elems = 0, .progress = 0};
        /* The plugin verified the staged global against this digest: no need to hash it at every checkpoint. */
        uo.base_sha256 = o->global_sha256[0] ? o->global_sha256 : NULL;
        ok = train_residual_path(o, round, out, sizeof out) == 0;
        if (!ok)
            flas_fail(err, errlen, "--state-dir %.400s: no residual name for round %ld", o->state_dir, round);
        ok = ok && train_state_find_previous(o->state_dir, &train_state_residual, round, &prev, err, errlen) == 0;
        if (ok && prev >= 0) {
            ok = train_residual_path(o, prev, in, sizeof in) == 0 &&
                 check_residual_site(in, t->meta.site, err, errlen) == 0;
        }
        ok = ok && flas_update_encode_file(o->global, o->checkpoint, in[0] ? in : NULL, o->output, out, &uo, &rep, err,
                                           errlen) == 0;
        if (ok) /* the residual read and this round's stay: what a retry of the newest round needs */
            train_state_prune(o->state_dir, &train_state_residual, prev >= 0 ? prev : round, c);
    }
    if (flas_train_agree(c->world, ok, err, errlen))
        return -1;
    if (c->rank == 0) {
        double full = (double)file_size(o->checkpoint), params = 4.0 * (double)t->model.table.n_params_full;
        double bytes = (double)rep.bytes_out;
        const char *rin = in[0] ? strrchr(in, '/') + 1 : NULL, *rout = strrchr(out, '/') + 1;
        char enc[32];
        if (o->update == FLAS_UPDATE_INT8)
            snprintf(enc, sizeof enc, "int8 block %d", o->update_block);
        else
            snprintf(enc, sizeof enc, "%s", flas_update_enc_name(o->update));
        train_say(c, "flas-train: update step %ld (%s) -> %s: %s, %.3f MB = %.2fx smaller than the full checkpoint "
                  "(%.3f MB), %.2fx smaller than float32 params (%.3f MB); delta norm %.6g, residual norm %.6g "
                  "(error feedback from %s, kept in %s) in %.2f s\n",
                  t->step, reason, o->output, enc, bytes / 1e6, bytes > 0 ? full / bytes : 0, full / 1e6,
                  bytes > 0 ? params / bytes : 0, params / 1e6, rep.delta_norm, rep.residual_norm,
                  rin ? rin : "none", rout, rep.seconds);
        char in_json[80] = "null";
        if (rin)
            snprintf(in_json, sizeof in_json, "\"%s\"", rin);
        train_log_json(&t->log,
                       "{\"event\":\"update\",\"step\":%ld,\"reason\":\"%s\",\"encoding\":\"%s\",\"block\":%d,"
                       "\"bytes\":%.0f,\"checkpoint_bytes\":%.0f,\"params_bytes\":%.0f,\"delta_norm\":%.9g,"
                       "\"residual_norm\":%.9g,\"residual_in\":%s,\"residual_out\":\"%s\",\"base_sha256\":\"%s\","
                       "\"seconds\":%.4f}",
                       t->step, reason, flas_update_enc_name(o->update),
                       o->update == FLAS_UPDATE_INT8 ? o->update_block : 0, bytes, full, params, rep.delta_norm,
                       rep.residual_norm, in_json, rout, rep.base_sha256, rep.seconds);
    }
    return 0;
}
