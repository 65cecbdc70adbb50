/* The converter's FLaS side: a checkpoint read or written through flas/checkpoint.h (serial mode), one
 * tensor at a time. Reading goes through the checkpoint gate like every other reader of FLaS files. */
#include <stdlib.h>
#include <string.h>

#include "flas/checkpoint.h"
#include "flas/error.h"
#include "interop_internal.h"

typedef struct flas_src {
    ix_source base;
    flas_ckpt_reader *r;
} flas_src;

static int flas_read(ix_source *s, const flas_tensor *t, float *out, char *err, size_t errlen)
{
    flas_src *f = (flas_src *)s;
    if (flas_ckpt_get_elems(f->r, FLAS_CKPT_PARAMS, t->name, 0, t->numel, out, err, errlen))
        return -1;
    s->bytes_in += (uint64_t)t->numel * 4;
    return 0;
}

static void flas_close(ix_source *s)
{
    flas_src *f = (flas_src *)s;
    flas_ckpt_close(f->r);
    free(f);
}

ix_source *ix_flas_open(const char *path, char *err, size_t errlen)
{
    flas_ckpt_hdf5_quiet();
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, errlen);
    if (!r)
        return NULL;
    flas_src *f = calloc(1, sizeof *f);
    if (!f) {
        flas_ckpt_close(r);
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    f->r = r;
    f->base.cfg = flas_ckpt_meta_of(r)->cfg;
    f->base.has_seq_len = 1;
    f->base.read = flas_read;
    f->base.close = flas_close;
    return &f->base;
}

typedef struct flas_snk {
    ix_sink base;
    flas_ckpt_writer *w;
} flas_snk;

static int flas_write(ix_sink *k, const flas_tensor *t, const float *data, char *err, size_t errlen)
{
    flas_snk *f = (flas_snk *)k;
    if (flas_ckpt_put_elems(f->w, FLAS_CKPT_PARAMS, t->name, 0, t->numel, data, err, errlen))
        return -1;
    k->bytes_out += (uint64_t)t->numel * 4;
    return 0;
}

static int flas_commit(ix_sink *k, char *err, size_t errlen)
{
    flas_snk *f = (flas_snk *)k;
    int rc = flas_ckpt_commit(f->w, err, errlen);
    free(k->order);
    free(f);
    return rc;
}

static void flas_abort(ix_sink *k)
{
    flas_snk *f = (flas_snk *)k;
    flas_ckpt_abort(f->w);
    free(k->order);
    free(f);
}

ix_sink *ix_flas_create(const char *path, const flas_param_table *t, const flas_convert_opts *o, char *err,
                        size_t errlen)
{
    flas_snk *f = calloc(1, sizeof *f);
    int *order = calloc((size_t)t->n_tensors, sizeof *order);
    if (!f || !order) {
        free(f);
        free(order);
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    for (int i = 0; i < t->n_tensors; i++)
        order[i] = i;
    flas_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.cfg = t->cfg;
    meta.role = FLAS_CKPT_GLOBAL;
    meta.round = o->round;
    meta.tp_size = meta.dp_size = 1;
    flas_ckpt_hdf5_quiet();
    f->w = flas_ckpt_create(path, &meta, 0, MPI_COMM_NULL, err, errlen);
    if (!f->w) {
        free(f);
        free(order);
        return NULL;
    }
    f->base.table = t;
    f->base.order = order;
    f->base.write = flas_write;
    f->base.commit = flas_commit;
    f->base.abort = flas_abort;
    return &f->base;
}
