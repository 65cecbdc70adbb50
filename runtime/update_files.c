/* Update files as whole files (flas/update.h): encode target - base (+ an error-feedback residual) and
 * apply an update to its base, streaming chunk by chunk through the checkpoint API, so memory is a few
 * chunks whatever the model size. */
#include "flas/checkpoint.h"
#include "flas/error.h"
#include "flas/sha256.h"
#include "flas/update.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flas/atomic_file.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Elements per chunk: whole int8 blocks, so that every chunk but a tensor's last starts and ends one. */
static size_t chunk_of(const flas_update_opts *o, int block)
{
    size_t c = o && o->chunk_elems ? o->chunk_elems : (size_t)1 << 20;
    if (block > 0) {
        c -= c % (size_t)block;
        if (c < (size_t)block)
            c = (size_t)block;
    }
    return c;
}

static int is_full_model(flas_ckpt_reader *r, const char *what, const char *path, char *err, size_t errlen)
{
    if (!(flas_ckpt_contents(r) & FLAS_CKPT_HAS(FLAS_CKPT_PARAMS)))
        return flas_fail(err, errlen, "%s %s is an update file, not a model with its parameters", what, path);
    return 0;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

int flas_update_encode_file(const char *base, const char *target, const char *residual_in, const char *update_out,
                            const char *residual_out, const flas_update_opts *o, flas_update_report *report,
                            char *err, size_t errlen)
{
    flas_update_report local;
    flas_update_report *rep = report ? report : &local;
    memset(rep, 0, sizeof *rep);
    double t0 = now();
    char why[1024];
    int block = o->block ? o->block : FLAS_UPDATE_BLOCK_DEFAULT;
    if (o->enc != FLAS_UPDATE_BF16 && o->enc != FLAS_UPDATE_INT8)
        return flas_fail(err, errlen, "an update is encoded as bf16 or int8 (got %s)", flas_update_enc_name(o->enc));
    if (o->enc == FLAS_UPDATE_INT8 && flas_update_block_check(block, err, errlen))
        return -1;
    if (o->base_sha256) {
        if (!flas_sha256_is_hex(o->base_sha256))
            return flas_fail(err, errlen, "base sha256 '%.80s' is not 64 lowercase hex digits", o->base_sha256);
        snprintf(rep->base_sha256, sizeof rep->base_sha256, "%s", o->base_sha256);
    } else if (flas_sha256_file(base, rep->base_sha256, NULL, why, sizeof why)) {
        return flas_fail(err, errlen, "base model: %s", why);
    }

    flas_ckpt_reader *rb = NULL, *rt = NULL, *rr = NULL;
    flas_ckpt_writer *wu = NULL, *wr = NULL;
    float *x = NULL, *y = NULL, *res = NULL, *d = NULL;
    int rc = -1;
    if (!(rb = flas_ckpt_open(base, MPI_COMM_NULL, err, errlen)) || !(rt = flas_ckpt_open(target, MPI_COMM_NULL, err, errlen)) ||
        (residual_in && !(rr = flas_ckpt_open(residual_in, MPI_COMM_NULL, err, errlen))))
        goto out;
    if (is_full_model(rb, "base model", base, err, errlen) || is_full_model(rt, "target", target, err, errlen) ||
        (rr && is_full_model(rr, "residual", residual_in, err, errlen)))
        goto out;
    const flas_ckpt_meta *bm = flas_ckpt_meta_of(rb), *tm = flas_ckpt_meta_of(rt);
    if (flas_ckpt_expect_config(rt, &bm->cfg, err, errlen) || (rr && flas_ckpt_expect_config(rr, &bm->cfg, err, errlen)))
        goto out;
    /* A site's model must be the one trained from this base: a delta against another model would move
     * the global somewhere nobody trained towards. */
    if (tm->role == FLAS_CKPT_LOCAL && strcmp(tm->base_sha256, rep->base_sha256)) {
        flas_fail(err, errlen, "%s was trained from %.16s..., not from the base %s (%.16s...)", target,
                  tm->base_sha256[0] ? tm->base_sha256 : "(no base)", base, rep->base_sha256);
        goto out;
    }
    flas_ckpt_meta um = *tm;
    snprintf(um.base_sha256, sizeof um.base_sha256, "%s", rep->base_sha256);
    um.update = o->enc;
    um.update_block = o->enc == FLAS_UPDATE_INT8 ? block : 0;
    um.tp_size = um.dp_size = 1;
    int has_metrics = (flas_ckpt_contents(rt) & FLAS_CKPT_METRICS) != 0;
    if (!(wu = flas_ckpt_create(update_out, &um, FLAS_CKPT_UPDATE | (has_metrics ? FLAS_CKPT_METRICS : 0),
                                MPI_COMM_NULL, err, errlen)))
        goto out;
    if (residual_out) {
        flas_ckpt_meta rm = *tm;
        snprintf(rm.base_sha256, sizeof rm.base_sha256, "%s", rep->base_sha256);
        rm.tp_size = rm.dp_size = 1;
        if (!(wr = flas_ckpt_create(residual_out, &rm, 0, MPI_COMM_NULL, err, errlen)))
            goto out;
    }
    size_t step = chunk_of(o, o->enc == FLAS_UPDATE_INT8 ? block : 0);
    x = malloc(step * sizeof *x), y = malloc(step * sizeof *y), res = malloc(step * sizeof *res);
    d = malloc(step * sizeof *d);
    if (!x || !y || !res || !d) {
        flas_fail(err, errlen, "out of memory for chunks of %zu values", step);
        goto out;
    }
    const flas_param_table *t = flas_ckpt_tensors(rb);
    double dn = 0, rn = 0, last = t0;
    uint64_t done = 0;
    for (int ti = 0; ti < t->n_tensors; ti++) {
        const flas_tensor *tn = &t->tensors[ti];
        for (size_t lo = 0; lo < tn->numel; lo += step) {
            size_t n = tn->numel - lo < step ? tn->numel - lo : step;
            if (flas_ckpt_get_elems(rb, FLAS_CKPT_PARAMS, tn->name, lo, n, x, err, errlen) ||
                flas_ckpt_get_elems(rt, FLAS_CKPT_PARAMS, tn->name, lo, n, y, err, errlen) ||
                (rr && flas_ckpt_get_elems(rr, FLAS_CKPT_PARAMS, tn->name, lo, n, res, err, errlen)))
                goto out;
            for (size_t i = 0; i < n; i++) {
                d[i] = (y[i] - x[i]) + (rr ? res[i] : 0.0f);
                dn += (double)d[i] * d[i];
            }
            if (flas_ckpt_put_update(wu, tn->name, lo, n, d, res, err, errlen))
                goto out;
            for (size_t i = 0; i < n; i++)
                rn += (double)res[i] * res[i];
            if (wr && flas_ckpt_put_elems(wr, FLAS_CKPT_PARAMS, tn->name, lo, n, res, err, errlen))
                goto out;
            done += n;
            if (o->progress && (now() - last > 2.0)) {
                last = now();
                fprintf(stderr, "flas: encoding %s update: %.1f%%\n", flas_update_enc_name(o->enc),
                        100.0 * (double)done / (double)t->n_params_full);
            }
        }
    }
    if (has_metrics) {
        flas_ckpt_metrics m;
        if (flas_ckpt_get_metrics(rt, &m, err, errlen) || flas_ckpt_set_metrics(wu, &m, err, errlen))
            goto out;
    }
    /* The residual first: it is the site's private state, and a round whose update never lands is
     * retried from the residual of an earlier round anyway (the caller names them by round). */
    if (wr) {
        int c = flas_ckpt_commit(wr, err, errlen);
        wr = NULL;
        if (c)
            goto out;
    }
    int c = flas_ckpt_commit(wu, err, errlen);
    wu = NULL;
    if (c)
        goto out;
    rep->delta_norm = sqrt(dn);
    rep->residual_norm = sqrt(rn);
    rep->bytes_in = file_size(target);
    rep->bytes_out = file_size(update_out);
    rep->seconds = now() - t0;
    rc = 0;
out:
    if (wu)
        flas_ckpt_abort(wu);
    if (wr)
        flas_ckpt_abort(wr);
    flas_ckpt_close(rb);
    flas_ckpt_close(rt);
    flas_ckpt_close(rr);
    free(x), free(y), free(res), free(d);
    return rc;
}

static int apply_to(const char *base, const char *update, const char *output, const flas_update_opts *o, char *err,
                    size_t errlen);

int flas_update_apply_file(const char *base, const char *update, const char *output, const flas_update_opts *o,
                           char *err, size_t errlen)
{
    if (!o || !o->expect_sha256)
        return apply_to(base, update, output, o, err, errlen);
    if (!flas_sha256_is_hex(o->expect_sha256))
        return flas_fail(err, errlen, "expected sha256 '%.80s' is not 64 lowercase hex digits", o->expect_sha256);
    /* Written and hashed under a hidden temporary name of the same directory, renamed only when it is
     * the model expected: a reader of output never sees another one. */
    char tmp[4200], got[FLAS_SHA256_HEX], why[1024];
    if (flas_ckpt_temp_path(output, tmp, sizeof tmp - 8))
        return flas_fail(err, errlen, "%s: path too long", output);
    strcat(tmp, ".apply");
    int rc = apply_to(base, update, tmp, o, err, errlen);
    if (rc)
        return rc;
    if (flas_sha256_file(tmp, got, NULL, why, sizeof why)) {
        unlink(tmp);
        return flas_fail(err, errlen, "%s", why);
    }
    if (strcmp(got, o->expect_sha256)) {
        unlink(tmp);
        flas_fail(err, errlen, "applying %s gives sha256 %.16s..., not the expected %.16s... (another FLaS or HDF5 "
                  "version?): fetch the whole model instead", update, got, o->expect_sha256);
        return -2;
    }
    if (rename(tmp, output)) {
        int e = errno;
        unlink(tmp);
        return flas_fail(err, errlen, "%s: rename failed: %s", output, strerror(e));
    }
    if (flas_fsync_dir_of(output, 0))
        return flas_fail(err, errlen, "%s: fsync of its directory failed", output);
    return 0;
}

static int apply_to(const char *base, const char *update, const char *output, const flas_update_opts *o, char *err,
                    size_t errlen)
{
    char why[1024], sha[FLAS_SHA256_HEX];
    if (flas_sha256_file(base, sha, NULL, why, sizeof why))
        return flas_fail(err, errlen, "base model: %s", why);
    flas_ckpt_reader *rb = NULL, *ru = NULL;
    flas_ckpt_writer *w = NULL;
    float *x = NULL, *dd = NULL;
    int rc = -1;
    if (!(rb = flas_ckpt_open(base, MPI_COMM_NULL, err, errlen)) || !(ru = flas_ckpt_open(update, MPI_COMM_NULL, err, errlen)))
        goto out;
    if (is_full_model(rb, "base model", base, err, errlen))
        goto out;
    const flas_ckpt_meta *um = flas_ckpt_meta_of(ru);
    if (!(flas_ckpt_contents(ru) & FLAS_CKPT_UPDATE)) {
        flas_fail(err, errlen, "%s is not an update file", update);
        goto out;
    }
    if (strcmp(um->base_sha256, sha)) {
        flas_fail(err, errlen, "%s is a delta against %.16s..., but %s is %.16s...: refused", update, um->base_sha256,
                  base, sha);
        goto out;
    }
    if (flas_ckpt_expect_config(ru, &flas_ckpt_meta_of(rb)->cfg, err, errlen))
        goto out;
    flas_ckpt_meta m = *um;
    m.update = FLAS_UPDATE_FULL;
    m.update_block = 0;
    m.tp_size = m.dp_size = 1;
    if (!(w = flas_ckpt_create(output, &m, FLAS_CKPT_KEEP_CREATED, MPI_COMM_NULL, err, errlen)))
        goto out;
    size_t step = chunk_of(o, um->update == FLAS_UPDATE_INT8 ? um->update_block : 0);
    x = malloc(step * sizeof *x), dd = malloc(step * sizeof *dd);
    if (!x || !dd) {
        flas_fail(err, errlen, "out of memory for chunks of %zu values", step);
        goto out;
    }
    const flas_param_table *t = flas_ckpt_tensors(rb);
    for (int ti = 0; ti < t->n_tensors; ti++) {
        const flas_tensor *tn = &t->tensors[ti];
        for (size_t lo = 0; lo < tn->numel; lo += step) {
            size_t n = tn->numel - lo < step ? tn->numel - lo : step;
            if (flas_ckpt_get_elems(rb, FLAS_CKPT_PARAMS, tn->name, lo, n, x, err, errlen) ||
                flas_ckpt_get_update(ru, tn->name, lo, n, dd, err, errlen))
                goto out;
            flas_update_add(x, dd, n, x);
            for (size_t i = 0; i < n; i++)
                if (!(fabsf(x[i]) <= 3.4028234663852886e38f)) {
                    flas_fail(err, errlen, "%s: applying it makes params/%s[%zu] non-finite: refused", update,
                              tn->name, lo + i);
                    goto out;
                }
            if (flas_ckpt_put_elems(w, FLAS_CKPT_PARAMS, tn->name, lo, n, x, err, errlen))
                goto out;
        }
    }
    int c = flas_ckpt_commit(w, err, errlen);
    w = NULL;
    rc = c ? -1 : 0;
out:
    if (w)
        flas_ckpt_abort(w);
    flas_ckpt_close(rb);
    flas_ckpt_close(ru);
    free(x), free(dd);
    return rc;
}
