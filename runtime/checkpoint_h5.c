/* HDF5 plumbing shared by the checkpoint reader and writer: error capture, file access properties,
 * hyperslab selections, the one data-movement routine, and typed attributes. */
#include "checkpoint_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ck_quiet_begin(ck_quiet *q)
{
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void ck_quiet_end(const ck_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->func, q->data); }

void flas_ckpt_hdf5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct {
    char *buf;
    size_t len;
} detail_ctx;

static herr_t keep_deepest(unsigned n, const H5E_error2_t *e, void *client)
{
    detail_ctx *d = client;
    /* The walk goes from the innermost call outwards; the first entry with text is the most specific. */
    if (d->buf[0] == '\0' && e->desc && e->desc[0])
        snprintf(d->buf, d->len, "%s", e->desc);
    (void)n;
    return 0;
}

void ck_h5_detail(char *buf, size_t len)
{
    detail_ctx d = {buf, len};
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_deepest, &d);
    if (!buf[0])
        snprintf(buf, len, "no detail from HDF5");
}

hid_t ck_fapl(MPI_Comm comm)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0)
        return -1;
    herr_t rc = 0;
    if (comm != MPI_COMM_NULL) {
        rc |= H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
        /* Rank 0 reads/writes metadata and broadcasts: no metadata storm from thousands of ranks. */
        rc |= H5Pset_coll_metadata_write(fapl, 1);
        rc |= H5Pset_all_coll_metadata_ops(fapl, 1);
        /* Big tensors start on 1 MiB boundaries (the usual Lustre/GPFS stripe and block size), so no two
         * ranks' writes share a stripe more than they must. */
        rc |= H5Pset_alignment(fapl, 1 << 20, 1 << 20);
    } else {
        rc |= H5Pset_fapl_sec2(fapl);
        rc |= H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    }
    /* Format 1.8 objects carry checksums on the superblock and object headers, so damaged metadata is
     * detected on open instead of being misread; h5py and every HDF5 >= 1.8 read them. */
    rc |= H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
    /* Files are never modified in place after commit (atomic rename), so HDF5's advisory locks add
     * nothing, and they fail on parallel file systems mounted without flock. */
    rc |= H5Pset_file_locking(fapl, 0, 1);
    if (rc < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

hid_t ck_dxpl(void)
{
    /* Independent by default: each rank moves its own hyperslab straight to the file, which measured
     * faster than two-phase collective buffering on node-local disks (docs/performance.md). Parallel
     * file systems with many ranks per file usually prefer collective buffering. Metadata operations
     * stay collective either way (ck_fapl). */
    const char *mode = getenv("FLAS_CKPT_MPIO");
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (dxpl >= 0)
        H5Pset_dxpl_mpio(dxpl, mode && strcmp(mode, "collective") == 0 ? H5FD_MPIO_COLLECTIVE
                                                                       : H5FD_MPIO_INDEPENDENT);
    return dxpl;
}

const char *ck_section_group(int s)
{
    static const char *const groups[FLAS_CKPT_N_SECTIONS + 2] = {"/params",   "/optimizer/m", "/optimizer/v",
                                                                 "/server/m", "/server/v",    "/update",
                                                                 "/update_scale"};
    return (s >= 0 && s < FLAS_CKPT_N_SECTIONS + 2) ? groups[s] : NULL;
}

const char *flas_ckpt_section_name(flas_ckpt_section s)
{
    const char *g = s >= 0 && s < FLAS_CKPT_N_SECTIONS ? ck_section_group(s) : NULL;
    return g ? g + 1 : "unknown-section";
}

const char *flas_ckpt_role_name(flas_ckpt_role r) { return r == FLAS_CKPT_LOCAL ? "local" : "global"; }

size_t ck_rows(const flas_tensor *t) { return t->ndim == 2 ? t->full_shape[0] : 1; }
size_t ck_cols(const flas_tensor *t) { return t->ndim == 2 ? t->full_shape[1] : t->full_shape[0]; }

ck_rect ck_full_rect(const flas_tensor *t) { return (ck_rect){0, 0, ck_rows(t), ck_cols(t)}; }

ck_rect ck_shard_rect(const flas_tensor *s)
{
    ck_rect r = ck_full_rect(s);
    if (s->ndim == 2 && s->shard == FLAS_TP_SPLIT_ROWS) {
        r.row = s->shard_start;
        r.rows = s->shape[0];
    } else if (s->ndim == 2 && s->shard == FLAS_TP_SPLIT_COLS) {
        r.col = s->shard_start;
        r.cols = s->shape[1];
    }
    return r;
}

int ck_sel_box(const flas_tensor *t, const size_t start[2], const size_t count[2], ck_sel *sel, char *err,
               size_t errlen)
{
    memset(sel, 0, sizeof *sel);
    size_t s0 = start ? start[0] : 0, c0 = count ? count[0] : 0;
    size_t s1 = (start && t->ndim == 2) ? start[1] : 0, c1 = (count && t->ndim == 2) ? count[1] : 1;
    if (t->ndim == 1) {
        if (s0 > t->full_shape[0] || c0 > t->full_shape[0] - s0)
            return flas_fail(err, errlen, "%s: hyperslab [%zu, +%zu) is outside its length %zu", t->name, s0, c0,
                           t->full_shape[0]);
        if (c0) {
            sel->nblocks = 1;
            sel->row[0] = 0, sel->rows[0] = 1, sel->col[0] = s0, sel->cols[0] = c0;
            sel->n = c0;
        }
        return 0;
    }
    if (s0 > t->full_shape[0] || c0 > t->full_shape[0] - s0 || s1 > t->full_shape[1] ||
        c1 > t->full_shape[1] - s1)
        return flas_fail(err, errlen, "%s: hyperslab start (%zu, %zu) count (%zu, %zu) is outside its shape (%zu, %zu)",
                       t->name, s0, s1, c0, c1, t->full_shape[0], t->full_shape[1]);
    if (c0 && c1) {
        sel->nblocks = 1;
        sel->row[0] = s0, sel->rows[0] = c0, sel->col[0] = s1, sel->cols[0] = c1;
        sel->n = c0 * c1;
    }
    return 0;
}

static void add_block(ck_sel *sel, size_t row, size_t col, size_t rows, size_t cols)
{
    if (!rows || !cols)
        return;
    int b = sel->nblocks++;
    sel->row[b] = row, sel->col[b] = col, sel->rows[b] = rows, sel->cols[b] = cols;
    sel->n += rows * cols;
}

/* Elements [lo, lo+n) of rect in row-major order = a partial first row, whole rows, a partial last row.
 * HDF5 visits a union of hyperslabs in row-major file order, which is exactly this flat order. */
void ck_sel_range(ck_rect rect, size_t lo, size_t n, ck_sel *sel)
{
    memset(sel, 0, sizeof *sel);
    if (!n)
        return;
    size_t w = rect.cols, hi = lo + n;
    size_t r0 = lo / w, c0 = lo % w, r1 = hi / w, c1 = hi % w;
    if (r0 == r1) {
        add_block(sel, rect.row + r0, rect.col + c0, 1, c1 - c0);
        return;
    }
    if (c0) {
        add_block(sel, rect.row + r0, rect.col + c0, 1, w - c0);
        r0++;
    }
    add_block(sel, rect.row + r0, rect.col, r1 - r0, w);
    add_block(sel, rect.row + r1, rect.col, 1, c1);
}

void ck_drop_cache(ck_file *f)
{
    if (f->cache_dset >= 0)
        H5Dclose(f->cache_dset);
    f->cache_dset = -1;
    f->cache_section = -1;
    f->cache_tensor = -1;
}

static hid_t dataset_of(ck_file *f, int s, int tensor)
{
    if (f->cache_dset >= 0 && f->cache_section == (int)s && f->cache_tensor == tensor)
        return f->cache_dset;
    ck_drop_cache(f);
    char name[256];
    snprintf(name, sizeof name, "%s/%s", ck_section_group(s), f->table.tensors[tensor].name);
    f->cache_dset = H5Dopen2(f->fid, name, H5P_DEFAULT);
    if (f->cache_dset >= 0) {
        f->cache_section = (int)s;
        f->cache_tensor = tensor;
    }
    return f->cache_dset;
}

int ck_tensor_index(const ck_file *f, const char *name)
{
    if (f->cache_tensor >= 0 && strcmp(f->table.tensors[f->cache_tensor].name, name) == 0)
        return f->cache_tensor;
    for (int i = 0; i < f->table.n_tensors; i++)
        if (strcmp(f->table.tensors[i].name, name) == 0)
            return i;
    return -1;
}

int ck_io(ck_file *f, int writing, flas_ckpt_section s, int tensor, const ck_sel *sel, void *buf, char *err,
          size_t errlen)
{
    return ck_io_as(f, writing, (int)s, tensor, H5T_NATIVE_FLOAT, sel, buf, err, errlen);
}

int ck_io_as(ck_file *f, int writing, int s, int tensor, hid_t memtype, const ck_sel *sel, void *buf, char *err,
             size_t errlen)
{
    const flas_tensor *t = &f->table.tensors[tensor];
    hid_t d = dataset_of(f, s, tensor);
    if (d < 0) {
        char detail[256];
        ck_h5_detail(detail, sizeof detail);
        return flas_fail(err, errlen, "%s: cannot open dataset %s/%s (%s)", f->path, ck_section_group(s), t->name,
                       detail);
    }
    hid_t fs = H5Dget_space(d), ms = -1;
    herr_t rc = fs < 0 ? -1 : 0;
    int ndim = rc < 0 ? 0 : H5Sget_simple_extent_ndims(fs);
    if (ndim != 1 && ndim != 2)
        rc = -1;
    float dummy = 0.0f;
    if (rc >= 0 && sel->n == 0) {
        hsize_t one = 1;
        ms = H5Screate_simple(1, &one, NULL);
        rc = (ms < 0 || H5Sselect_none(ms) < 0 || H5Sselect_none(fs) < 0) ? -1 : 0;
        buf = &dummy; /* HDF5 wants a non-NULL pointer even for nothing */
    } else if (rc >= 0) {
        for (int b = 0; b < sel->nblocks && rc >= 0; b++) {
            hsize_t start[2], count[2];
            if (ndim == 2) {
                start[0] = sel->row[b], start[1] = sel->col[b];
                count[0] = sel->rows[b], count[1] = sel->cols[b];
            } else {
                start[0] = sel->col[b];
                count[0] = sel->cols[b];
            }
            rc = H5Sselect_hyperslab(fs, b == 0 ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL, count, NULL);
        }
        hsize_t n = sel->n;
        ms = rc < 0 ? -1 : H5Screate_simple(1, &n, NULL);
        if (ms < 0)
            rc = -1;
    }
    if (rc >= 0)
        rc = writing ? H5Dwrite(d, memtype, ms, fs, f->dxpl, buf) : H5Dread(d, memtype, ms, fs, f->dxpl, buf);
    if (rc < 0) {
        char detail[256];
        ck_h5_detail(detail, sizeof detail);
        flas_fail(err, errlen, "%s: %s %s/%s failed (%s)", f->path, writing ? "writing" : "reading",
                ck_section_group(s), t->name, detail);
    }
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

hid_t ck_update_file_type(flas_update_enc e) { return e == FLAS_UPDATE_INT8 ? H5T_STD_I8LE : H5T_STD_U16LE; }
hid_t ck_update_mem_type(flas_update_enc e) { return e == FLAS_UPDATE_INT8 ? H5T_NATIVE_INT8 : H5T_NATIVE_UINT16; }
size_t ck_update_value_size(flas_update_enc e) { return e == FLAS_UPDATE_INT8 ? 1 : 2; }
size_t ck_update_blocks(size_t numel, int block) { return block > 0 ? (numel + (size_t)block - 1) / (size_t)block : 0; }

void *ck_buf_get(ck_buf *b, size_t need)
{
    if (need > b->cap) {
        void *p = realloc(b->p, need);
        if (!p)
            return NULL;
        b->p = p;
        b->cap = need;
    }
    return b->p;
}

void ck_buf_free(ck_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->cap = 0;
}

int ck_update_tensor(const ck_file *f, const char *name, size_t lo, size_t n, int have_buf, size_t *numel,
                     char *err, size_t errlen)
{
    int tensor = name ? ck_tensor_index(f, name) : -1;
    if (tensor < 0)
        return flas_fail(err, errlen, "%s: no tensor named '%s' in this model", f->path, name ? name : "(null)");
    const flas_tensor *t = &f->table.tensors[tensor];
    *numel = ck_rows(t) * ck_cols(t);
    if (lo > *numel || n > *numel - lo || (n && !have_buf))
        return flas_fail(err, errlen, "%s: elements [%zu, +%zu) of %s: outside its %zu elements or no buffer", f->path,
                         lo, n, name, *numel);
    return tensor;
}

int ck_same_config(const flas_config *a, const flas_config *b, char *what, size_t whatlen)
{
#define SAME_INT(field)                                                                              \
    if (a->field != b->field)                                                                        \
        return snprintf(what, whatlen, #field " %d != %d", a->field, b->field), -1;
    SAME_INT(dim) SAME_INT(n_layers) SAME_INT(n_heads) SAME_INT(n_kv_heads) SAME_INT(hidden_dim)
    SAME_INT(vocab_size) SAME_INT(seq_len) SAME_INT(tied_embeddings)
#undef SAME_INT
    if (a->norm_eps != b->norm_eps)
        return snprintf(what, whatlen, "norm_eps %g != %g", (double)a->norm_eps, (double)b->norm_eps), -1;
    if (a->rope_theta != b->rope_theta)
        return snprintf(what, whatlen, "rope_theta %g != %g", (double)a->rope_theta, (double)b->rope_theta), -1;
    return 0;
}

/* Shared by put_flat and get_flat: the elements [lo, hi) of a rank's buffer laid out by t, tensor by
 * tensor. Replicated tensors are written by tensor-parallel rank 0 only (all tp ranks hold the same
 * values); every rank reads them. */
int ck_flat_check(const ck_file *f, const flas_param_table *t, size_t lo, size_t hi, int have_data, char *err,
                  size_t errlen)
{
    char what[128];
    if (!t || ck_same_config(&t->cfg, &f->table.cfg, what, sizeof what))
        return flas_fail(err, errlen, "%s: the parameter table is for another model (%s)", f->path,
                       t ? what : "no table");
    if (t->n_tensors != f->table.n_tensors)
        return flas_fail(err, errlen, "%s: the parameter table has %d tensors, the file %d", f->path, t->n_tensors,
                       f->table.n_tensors);
    if (lo > hi || hi > t->n_params)
        return flas_fail(err, errlen, "%s: flat range [%zu, %zu) is outside the %zu-element buffer", f->path, lo, hi,
                       t->n_params);
    if (hi > lo && !have_data)
        return flas_fail(err, errlen, "%s: flat range without a buffer", f->path);
    return 0;
}

/* ---- attributes -------------------------------------------------------------------------------- */

static hid_t file_type_of(hid_t memtype)
{
    if (H5Tequal(memtype, H5T_NATIVE_INT64) > 0)
        return H5T_STD_I64LE;
    if (H5Tequal(memtype, H5T_NATIVE_UINT64) > 0)
        return H5T_STD_U64LE;
    if (H5Tequal(memtype, H5T_NATIVE_INT32) > 0)
        return H5T_STD_I32LE;
    if (H5Tequal(memtype, H5T_NATIVE_FLOAT) > 0)
        return H5T_IEEE_F32LE;
    return H5T_IEEE_F64LE;
}

static hid_t space_of(size_t n)
{
    hsize_t dim = n;
    return n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
}

int ck_attr_put(hid_t obj, const char *name, hid_t memtype, size_t n, const void *v)
{
    hid_t sp = space_of(n);
    hid_t a = sp < 0 ? -1 : H5Acreate2(obj, name, file_type_of(memtype), sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, memtype, v);
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static hid_t utf8_vlen(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

int ck_attr_put_strs(hid_t obj, const char *name, size_t n, const char *const *v)
{
    /* Variable-length UTF-8: h5py returns str, not bytes. */
    hid_t t = utf8_vlen(), sp = space_of(n);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, t, v);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc < 0 ? -1 : 0;
}

int ck_attr_put_str(hid_t obj, const char *name, const char *v) { return ck_attr_put_strs(obj, name, 1, &v); }

/* Opens attribute name of obj, checks its type class and element count. */
static hid_t open_attr(hid_t obj, const char *name, H5T_class_t want, size_t n, size_t *have, char *err,
                       size_t errlen)
{
    if (H5Aexists(obj, name) <= 0)
        return flas_fail(err, errlen, "attribute '%s' is missing", name), -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t t = a < 0 ? -1 : H5Aget_type(a), sp = a < 0 ? -1 : H5Aget_space(a);
    H5T_class_t cls = t < 0 ? H5T_NO_CLASS : H5Tget_class(t);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (t >= 0)
        H5Tclose(t);
    if (sp >= 0)
        H5Sclose(sp);
    static const char *const cls_names[] = {"integer", "float", "time", "string", "bitfield", "opaque",
                                            "compound", "reference", "enum", "vlen", "array"};
    if (a < 0 || cls != want) {
        flas_fail(err, errlen, "attribute '%s' has type %s, expected %s", name,
                (cls >= 0 && cls < 11) ? cls_names[cls] : "unknown", cls_names[want]);
    } else if (n && np != (hssize_t)n) {
        flas_fail(err, errlen, "attribute '%s' has %lld elements, expected %zu", name, (long long)np, n);
    } else {
        if (have)
            *have = (size_t)np;
        return a;
    }
    if (a >= 0)
        H5Aclose(a);
    return -1;
}

static int read_num(hid_t obj, const char *name, H5T_class_t cls, hid_t memtype, void *v, size_t n, char *err,
                    size_t errlen)
{
    hid_t a = open_attr(obj, name, cls, n, NULL, err, errlen);
    if (a < 0)
        return -1;
    herr_t rc = H5Aread(a, memtype, v);
    H5Aclose(a);
    return rc < 0 ? flas_fail(err, errlen, "attribute '%s' cannot be read", name) : 0;
}

int ck_attr_get_i64(hid_t obj, const char *name, int64_t *v, size_t n, char *err, size_t errlen)
{
    return read_num(obj, name, H5T_INTEGER, H5T_NATIVE_INT64, v, n, err, errlen);
}

int ck_attr_get_u64(hid_t obj, const char *name, uint64_t *v, size_t n, char *err, size_t errlen)
{
    return read_num(obj, name, H5T_INTEGER, H5T_NATIVE_UINT64, v, n, err, errlen);
}

int ck_attr_get_f64(hid_t obj, const char *name, double *v, char *err, size_t errlen)
{
    return read_num(obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, v, 1, err, errlen);
}

int ck_attr_get_str_at(hid_t obj, const char *name, size_t i, char *buf, size_t len, char *err, size_t errlen)
{
    size_t n = 0;
    hid_t a = open_attr(obj, name, H5T_STRING, 0, &n, err, errlen);
    if (a < 0)
        return -1;
    int rc = -1;
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    if (i >= n) {
        flas_fail(err, errlen, "attribute '%s' has %zu strings, element %zu wanted", name, n, i);
    } else if (H5Tis_variable_str(ft) > 0) {
        char **all = calloc(n, sizeof *all);
        hid_t mt = H5Tcopy(ft); /* same character set: no conversion */
        if (all && H5Aread(a, mt, all) >= 0) {
            if (!all[i] || strlen(all[i]) >= len)
                flas_fail(err, errlen, "attribute '%s' is longer than %zu bytes", name, len - 1);
            else
                rc = (snprintf(buf, len, "%s", all[i]), 0);
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, all);
        } else {
            flas_fail(err, errlen, "attribute '%s' cannot be read", name);
        }
        H5Tclose(mt);
        free(all);
    } else {
        size_t sz = H5Tget_size(ft);
        char *all = sz && sz < len && n <= (1u << 20) / sz ? calloc(n, sz) : NULL;
        if (!all)
            flas_fail(err, errlen, "attribute '%s' is longer than %zu bytes", name, len - 1);
        else if (H5Aread(a, ft, all) < 0)
            flas_fail(err, errlen, "attribute '%s' cannot be read", name);
        else {
            memcpy(buf, all + i * sz, sz);
            buf[sz] = '\0'; /* fixed-length strings may be padded with NULs or spaces, or not end at all */
            for (size_t k = strlen(buf); k > 0 && buf[k - 1] == ' '; k--)
                buf[k - 1] = '\0';
            rc = 0;
        }
        free(all);
    }
    H5Tclose(ft);
    H5Sclose(sp);
    H5Aclose(a);
    return rc;
}

int ck_attr_get_str(hid_t obj, const char *name, char *buf, size_t len, char *err, size_t errlen)
{
    return ck_attr_get_str_at(obj, name, 0, buf, len, err, errlen);
}

/* ---- config and server state -------------------------------------------------------------------- */

#define CONFIG_INTS(X) X(dim) X(n_layers) X(n_heads) X(n_kv_heads) X(hidden_dim) X(vocab_size) X(seq_len) \
    X(tied_embeddings)

int ck_put_config(hid_t root, const flas_config *c)
{
    int rc = 0;
#define PUT(field) rc |= ck_attr_put(root, #field, H5T_NATIVE_INT32, 1, &c->field);
    CONFIG_INTS(PUT)
#undef PUT
    rc |= ck_attr_put(root, "norm_eps", H5T_NATIVE_FLOAT, 1, &c->norm_eps);
    rc |= ck_attr_put(root, "rope_theta", H5T_NATIVE_FLOAT, 1, &c->rope_theta);
    return rc;
}

int ck_get_config(hid_t root, flas_config *c, char *err, size_t errlen)
{
    int64_t v;
    double d;
    memset(c, 0, sizeof *c);
#define GET(field)                                                                           \
    if (ck_attr_get_i64(root, #field, &v, 1, err, errlen))                                   \
        return -1;                                                                           \
    if (v < INT32_MIN || v > INT32_MAX)                                                      \
        return flas_fail(err, errlen, "config " #field " %lld is out of range", (long long)v); \
    c->field = (int)v;
    CONFIG_INTS(GET)
#undef GET
    if (ck_attr_get_f64(root, "norm_eps", &d, err, errlen))
        return -1;
    c->norm_eps = (float)d;
    if (ck_attr_get_f64(root, "rope_theta", &d, err, errlen))
        return -1;
    c->rope_theta = (float)d;
    return 0;
}

int ck_put_server_state(hid_t g, const flas_server_state *s)
{
    int rc = ck_attr_put_str(g, "strategy", s->strategy);
    int64_t n = s->n_sites;
    rc |= ck_attr_put(g, "round", H5T_NATIVE_INT64, 1, &s->round);
    rc |= ck_attr_put(g, "step", H5T_NATIVE_INT64, 1, &s->step);
    rc |= ck_attr_put(g, "n_sites", H5T_NATIVE_INT64, 1, &n);
    if (s->dp_rounds > 0) { /* only globals made with DP carry the ledger */
        rc |= ck_attr_put(g, "dp_rho", H5T_NATIVE_DOUBLE, 1, &s->dp_rho);
        rc |= ck_attr_put(g, "dp_rounds", H5T_NATIVE_INT64, 1, &s->dp_rounds);
    }
    if (s->n_sites > 0) {
        const char *names[FLAS_CKPT_MAX_SITES];
        int64_t rounds[FLAS_CKPT_MAX_SITES], tokens[FLAS_CKPT_MAX_SITES];
        for (int i = 0; i < s->n_sites; i++) {
            names[i] = s->sites[i].name;
            rounds[i] = s->sites[i].rounds;
            tokens[i] = s->sites[i].tokens;
        }
        rc |= ck_attr_put_strs(g, "site_names", (size_t)s->n_sites, names);
        rc |= ck_attr_put(g, "site_rounds", H5T_NATIVE_INT64, (size_t)s->n_sites, rounds);
        rc |= ck_attr_put(g, "site_tokens", H5T_NATIVE_INT64, (size_t)s->n_sites, tokens);
    }
    return rc;
}

int ck_get_server_state(hid_t g, flas_server_state *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    int64_t n;
    if (ck_attr_get_str(g, "strategy", s->strategy, sizeof s->strategy, err, errlen) ||
        ck_attr_get_i64(g, "round", &s->round, 1, err, errlen) ||
        ck_attr_get_i64(g, "step", &s->step, 1, err, errlen) || ck_attr_get_i64(g, "n_sites", &n, 1, err, errlen))
        return -1;
    if (n < 0 || n > FLAS_CKPT_MAX_SITES)
        return flas_fail(err, errlen, "server state lists %lld sites (at most %d)", (long long)n, FLAS_CKPT_MAX_SITES);
    if (s->round < 0 || s->step < 0)
        return flas_fail(err, errlen, "server state round/step is negative");
    s->n_sites = (int)n;
    if (H5Aexists(g, "dp_rounds") > 0 || H5Aexists(g, "dp_rho") > 0) {
        if (ck_attr_get_f64(g, "dp_rho", &s->dp_rho, err, errlen) ||
            ck_attr_get_i64(g, "dp_rounds", &s->dp_rounds, 1, err, errlen))
            return -1;
        if (!(s->dp_rho >= 0) || s->dp_rounds < 1 || s->dp_rounds > s->round)
            return flas_fail(err, errlen, "server state's privacy ledger is invalid (dp_rho %g over %lld rounds)",
                             s->dp_rho, (long long)s->dp_rounds);
    }
    if (n == 0)
        return 0;
    int64_t rounds[FLAS_CKPT_MAX_SITES], tokens[FLAS_CKPT_MAX_SITES];
    if (ck_attr_get_i64(g, "site_rounds", rounds, (size_t)n, err, errlen) ||
        ck_attr_get_i64(g, "site_tokens", tokens, (size_t)n, err, errlen))
        return -1;
    for (int i = 0; i < s->n_sites; i++) {
        if (ck_attr_get_str_at(g, "site_names", (size_t)i, s->sites[i].name, sizeof s->sites[i].name, err, errlen))
            return -1;
        s->sites[i].rounds = rounds[i];
        s->sites[i].tokens = tokens[i];
    }
    return 0;
}
