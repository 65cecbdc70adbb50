/* Internals shared by checkpoint_write.c, checkpoint_read.c and checkpoint_h5.c (not installed). */
#ifndef FLAS_CHECKPOINT_INTERNAL_H
#define FLAS_CHECKPOINT_INTERNAL_H

#include <hdf5.h>
#include <limits.h>

#include "flas/checkpoint.h"
#include "flas/error.h"

#define CK_PATH_MAX 4096
#define CK_ERR_MAX 512

/* One open checkpoint file, reader or writer side. */
typedef struct ck_file {
    hid_t fid;
    hid_t dxpl;              /* collective MPI-IO transfer in parallel mode, H5P_DEFAULT in serial */
    MPI_Comm comm;           /* MPI_COMM_NULL in serial mode */
    int rank, size;
    char path[CK_PATH_MAX];  /* the destination (writer) or the file (reader), for messages */
    flas_param_table table;  /* full shapes (tp_size 1) of the file's config */
    /* The dataset of the last put/get: streaming calls hit the same tensor many times in a row. */
    hid_t cache_dset;
    int cache_section, cache_tensor;
} ck_file;

/* Up to three row-major blocks of a 2-D (rows, cols) view of a tensor; 1-D tensors are (1, len). */
typedef struct ck_sel {
    int nblocks;
    size_t row[3], col[3], rows[3], cols[3];
    size_t n; /* elements selected */
} ck_sel;

/* A rectangle of a tensor, in full-tensor coordinates (a tensor-parallel shard, or the whole). */
typedef struct ck_rect {
    size_t row, col, rows, cols;
} ck_rect;

/* HDF5 prints its error stack to stderr by default; the library reports one line instead. */
typedef struct ck_quiet {
    H5E_auto2_t func;
    void *data;
} ck_quiet;
void ck_quiet_begin(ck_quiet *q);
void ck_quiet_end(const ck_quiet *q);
/* The most specific message on HDF5's error stack (e.g. "truncated file: eof = 100, ..."). */
void ck_h5_detail(char *buf, size_t len);

/* The gate (checkpoint_gate.c): refuses any file whose bytes could come from elsewhere than itself, or
 * that is not built the way FLaS writes, before any attribute or tensor is read. 0 or -1 with err. */
int ck_gate(hid_t fid, const char *path, char *err, size_t errlen);


hid_t ck_fapl(MPI_Comm comm);
/* Raw-data transfer property list of the parallel path (see FLAS_CKPT_MPIO in checkpoint.h). */
hid_t ck_dxpl(void);
const char *ck_section_group(int s); /* also CK_SEC_UPDATE, CK_SEC_UPDATE_SCALE below */
size_t ck_rows(const flas_tensor *t);
size_t ck_cols(const flas_tensor *t);

/* Selections: validate against the tensor and describe what to move. 0 or -1 with err. */
int ck_sel_box(const flas_tensor *t, const size_t start[2], const size_t count[2], ck_sel *sel, char *err,
               size_t errlen);
void ck_sel_range(ck_rect rect, size_t lo, size_t n, ck_sel *sel);
ck_rect ck_full_rect(const flas_tensor *t);
/* The rectangle of the full tensor that shard s (from a table laid out for some tp rank) covers. */
ck_rect ck_shard_rect(const flas_tensor *s);

/* Moves sel between buf and the dataset section/tensor of f (H5Dwrite when writing). Collective in
 * parallel mode; an empty selection joins the call without moving data. */
int ck_io(ck_file *f, int writing, flas_ckpt_section s, int tensor, const ck_sel *sel, void *buf, char *err,
          size_t errlen);
/* The same for any memory type and the update files' groups below (a 1-D dataset takes the selection's
 * columns). */
int ck_io_as(ck_file *f, int writing, int s, int tensor, hid_t memtype, const ck_sel *sel, void *buf, char *err,
             size_t errlen);

/* A buffer reused across calls (an update's codes and scales per chunk): get returns at least need
 * bytes, NULL when out of memory. */
typedef struct ck_buf {
    void *p;
    size_t cap;
} ck_buf;
void *ck_buf_get(ck_buf *b, size_t need);
void ck_buf_free(ck_buf *b);

/* Update files (flas/update.h): internal section numbers after the public ones, for ck_io_as and the
 * dataset cache. /update/<name> has the tensor's shape; /update_scale/<name> is 1-D, one per block. */
#define CK_SEC_UPDATE FLAS_CKPT_N_SECTIONS
#define CK_SEC_UPDATE_SCALE (FLAS_CKPT_N_SECTIONS + 1)
/* File and memory types of the encoded delta. */
hid_t ck_update_file_type(flas_update_enc e);
hid_t ck_update_mem_type(flas_update_enc e);
size_t ck_update_value_size(flas_update_enc e);
size_t ck_update_blocks(size_t numel, int block);
/* The tensor an update put/get names and its element count, with [lo, lo+n) inside it and a buffer
 * for a non-empty range: its index, or -1 with err. */
int ck_update_tensor(const ck_file *f, const char *name, size_t lo, size_t n, int have_buf, size_t *numel,
                     char *err, size_t errlen);
void ck_drop_cache(ck_file *f);
int ck_tensor_index(const ck_file *f, const char *name);

/* Checks a caller's table is laid out for the file's config. */
int ck_flat_check(const ck_file *f, const flas_param_table *t, size_t lo, size_t hi, int have_data, char *err,
                  size_t errlen);
int ck_same_config(const flas_config *a, const flas_config *b, char *what, size_t whatlen);

/* Attributes. */
int ck_attr_put(hid_t obj, const char *name, hid_t memtype, size_t n, const void *v);
int ck_attr_put_str(hid_t obj, const char *name, const char *v);
int ck_attr_put_strs(hid_t obj, const char *name, size_t n, const char *const *v);
int ck_attr_get_i64(hid_t obj, const char *name, int64_t *v, size_t n, char *err, size_t errlen);
int ck_attr_get_u64(hid_t obj, const char *name, uint64_t *v, size_t n, char *err, size_t errlen);
int ck_attr_get_f64(hid_t obj, const char *name, double *v, char *err, size_t errlen);
int ck_attr_get_str(hid_t obj, const char *name, char *buf, size_t len, char *err, size_t errlen);
/* Element i of a string-array attribute. */
int ck_attr_get_str_at(hid_t obj, const char *name, size_t i, char *buf, size_t len, char *err, size_t errlen);

/* Config attributes, the same names as flas_config's fields. */
int ck_put_config(hid_t root, const flas_config *c);
int ck_get_config(hid_t root, flas_config *c, char *err, size_t errlen);

/* The optional state groups. */
int ck_put_server_state(hid_t grp, const flas_server_state *s);
int ck_get_server_state(hid_t grp, flas_server_state *s, char *err, size_t errlen);

#endif
