/* Checkpoint writer: create every dataset up front, move hyperslabs in, commit atomically.
 * Atomicity: the data go to a hidden temporary file in the destination directory; commit flushes and
 * fsyncs it, THEN sets the completion marker, flushes and closes, fsyncs again, renames it over the
 * destination and fsyncs the directory. A crash before the rename leaves the previous destination
 * untouched; the marker can only exist once every tensor byte reached the file. */
#include "checkpoint_internal.h"
#include "flas/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef FLAS_VERSION
#define FLAS_VERSION "unknown"
#endif

enum { SET_OPTIMIZER = 1, SET_TRAIN = 2, SET_SERVER = 4, SET_PROVENANCE = 8, SET_METRICS = 16 };

struct flas_ckpt_writer {
    ck_file f;
    ck_buf codes, scales;         /* an update's codes and scales of one put, kept for the next */
    char temp[CK_PATH_MAX];
    unsigned contents;
    unsigned states_set;
    flas_ckpt_meta meta;
    int64_t *written;             /* [section][tensor]: elements this rank wrote */
    int failed;                   /* a put/set failed on this rank: commit refuses everywhere */
    char first_err[CK_ERR_MAX];
};

static int is_parallel(const ck_file *f) { return f->comm != MPI_COMM_NULL; }

int flas_ckpt_temp_path(const char *path, char *out, size_t outlen)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int dirlen = slash ? (int)(slash - path + 1) : 0;
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)
        if (*p == '/' || *p == '.')
            *p = '_';
    int n = snprintf(out, outlen, "%.*s.%s.tmp-%s-%ld", dirlen, path, base, host, (long)getpid());
    return (*base && n > 0 && (size_t)n < outlen) ? 0 : -1;
}

/* The temporary actually written: the prefix above, then 16 random hex digits, so that nobody can plant
 * a symlink or a file at the name in advance. HDF5 then creates it with O_CREAT|O_EXCL (H5F_ACC_EXCL),
 * which never follows a symlink and never truncates an existing file. */
static int temp_name(const char *path, char *out, size_t outlen)
{
    unsigned char r[8];
    if (flas_ckpt_temp_path(path, out, outlen) || getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return -1;
    size_t n = strlen(out);
    if (n + 1 + 2 * sizeof r + 1 > outlen)
        return -1;
    out[n++] = '.';
    for (size_t i = 0; i < sizeof r; i++)
        n += (size_t)snprintf(out + n, outlen - n, "%02x", r[i]);
    return 0;
}

/* In parallel mode: 0 on every rank if ok on every rank; else -1 everywhere, and ranks whose own
 * arguments were fine get the message of the lowest failing rank. */
static int agree(const ck_file *f, int ok, char *err, size_t errlen)
{
    if (!is_parallel(f))
        return ok ? 0 : -1;
    int bad_rank = ok ? f->size : f->rank, lowest = 0;
    MPI_Allreduce(&bad_rank, &lowest, 1, MPI_INT, MPI_MIN, f->comm);
    if (lowest == f->size)
        return 0;
    char msg[CK_ERR_MAX] = "";
    if (f->rank == lowest && err)
        snprintf(msg, sizeof msg, "%s", err);
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, lowest, f->comm);
    if (ok && err)
        flas_fail(err, errlen, "rank %d: %s", lowest, msg);
    return -1;
}

static void remember(flas_ckpt_writer *w, const char *err)
{
    if (!w->failed)
        snprintf(w->first_err, sizeof w->first_err, "%s", err ? err : "failed");
    w->failed = 1;
}

static int check_meta(const flas_ckpt_meta *m, unsigned contents, char *err, size_t errlen)
{
    char why[256];
    if (flas_config_validate(&m->cfg, 1, why, sizeof why))
        return flas_fail(err, errlen, "invalid model config: %s", why);
    if (m->cfg.n_layers > FLAS_CKPT_MAX_LAYERS)
        return flas_fail(err, errlen, "invalid model config: n_layers %d exceeds %d", m->cfg.n_layers,
                       FLAS_CKPT_MAX_LAYERS);
    if (m->role != FLAS_CKPT_GLOBAL && m->role != FLAS_CKPT_LOCAL)
        return flas_fail(err, errlen, "role %d is neither global nor local", (int)m->role);
    if (m->round < 0 || m->step < 0 || m->tokens_trained < 0)
        return flas_fail(err, errlen, "round, step and tokens_trained must be >= 0");
    if (!memchr(m->site, '\0', sizeof m->site))
        return flas_fail(err, errlen, "site name is not NUL-terminated");
    if (m->role == FLAS_CKPT_LOCAL && !m->site[0])
        return flas_fail(err, errlen, "a local checkpoint needs a site name");
    if (!memchr(m->base_sha256, '\0', sizeof m->base_sha256) ||
        (m->base_sha256[0] && !flas_sha256_is_hex(m->base_sha256)))
        return flas_fail(err, errlen, "base_sha256 must be empty or 64 lowercase hex digits");
    if (m->tp_size < 0 || m->dp_size < 0)
        return flas_fail(err, errlen, "tp_size and dp_size must be >= 1");
    unsigned known = FLAS_CKPT_HAS(FLAS_CKPT_PARAMS) | FLAS_CKPT_OPTIMIZER | FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M) |
                     FLAS_CKPT_HAS(FLAS_CKPT_SERVER_V) | FLAS_CKPT_TRAIN_STATE | FLAS_CKPT_SERVER_STATE |
                     FLAS_CKPT_PROVENANCE | FLAS_CKPT_METRICS | FLAS_CKPT_UPDATE | FLAS_CKPT_KEEP_CREATED;
    if (contents & ~known)
        return flas_fail(err, errlen, "unknown contents bits 0x%x", contents & ~known);
    if (contents & FLAS_CKPT_UPDATE) {
        char why2[128];
        if (contents & ~(FLAS_CKPT_UPDATE | FLAS_CKPT_METRICS | FLAS_CKPT_KEEP_CREATED | FLAS_CKPT_HAS(FLAS_CKPT_PARAMS)))
            return flas_fail(err, errlen, "an update file holds nothing but the update and metrics");
        if (m->update != FLAS_UPDATE_BF16 && m->update != FLAS_UPDATE_INT8)
            return flas_fail(err, errlen, "an update file needs the bf16 or int8 encoding (got %d)", (int)m->update);
        if (m->update == FLAS_UPDATE_INT8 && flas_update_block_check(m->update_block, why2, sizeof why2))
            return flas_fail(err, errlen, "%s", why2);
        if (!m->base_sha256[0])
            return flas_fail(err, errlen, "an update file must name its base model (base_sha256)");
    } else if (m->update != FLAS_UPDATE_FULL) {
        return flas_fail(err, errlen, "update encoding %s without FLAS_CKPT_UPDATE", flas_update_enc_name(m->update));
    }
    if ((contents & FLAS_CKPT_KEEP_CREATED) && !memchr(m->created_utc, '\0', sizeof m->created_utc))
        return flas_fail(err, errlen, "created_utc is not NUL-terminated");
    if (!(contents & FLAS_CKPT_HAS(FLAS_CKPT_ADAM_M)) != !(contents & FLAS_CKPT_HAS(FLAS_CKPT_ADAM_V)))
        return flas_fail(err, errlen, "optimizer state needs both AdamW moments (m and v)");
    if ((contents & FLAS_CKPT_HAS(FLAS_CKPT_SERVER_V)) && !(contents & FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M)))
        return flas_fail(err, errlen, "server second moment (v) without first moment (m)");
    if ((contents & (FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M))) && !(contents & FLAS_CKPT_SERVER_STATE))
        return flas_fail(err, errlen, "server buffers need the server state (FLAS_CKPT_SERVER_STATE)");
    return 0;
}

static int write_root(hid_t root, const flas_ckpt_meta *m)
{
    int32_t version = FLAS_CKPT_VERSION;
    int rc = ck_attr_put_str(root, "format", FLAS_CKPT_FORMAT);
    rc |= ck_attr_put(root, "format_version", H5T_NATIVE_INT32, 1, &version);
    rc |= ck_attr_put_str(root, "rope_convention", FLAS_CKPT_ROPE);
    rc |= ck_put_config(root, &m->cfg);
    rc |= ck_attr_put_str(root, "role", flas_ckpt_role_name(m->role));
    rc |= ck_attr_put(root, "round", H5T_NATIVE_INT64, 1, &m->round);
    rc |= ck_attr_put_str(root, "site", m->site);
    rc |= ck_attr_put(root, "step", H5T_NATIVE_INT64, 1, &m->step);
    rc |= ck_attr_put(root, "tokens_trained", H5T_NATIVE_INT64, 1, &m->tokens_trained);
    rc |= ck_attr_put_str(root, "base_sha256", m->base_sha256);
    rc |= ck_attr_put(root, "tp_size", H5T_NATIVE_INT32, 1, &m->tp_size);
    rc |= ck_attr_put(root, "dp_size", H5T_NATIVE_INT32, 1, &m->dp_size);
    rc |= ck_attr_put(root, "created_unix", H5T_NATIVE_INT64, 1, &m->created_unix);
    rc |= ck_attr_put_str(root, "created_utc", m->created_utc);
    rc |= ck_attr_put_str(root, "writer", "FLaS " FLAS_VERSION);
    if (m->update != FLAS_UPDATE_FULL) {
        int32_t block = m->update == FLAS_UPDATE_INT8 ? m->update_block : 0;
        rc |= ck_attr_put_str(root, "update_encoding", flas_update_enc_name(m->update));
        rc |= ck_attr_put(root, "update_block", H5T_NATIVE_INT32, 1, &block);
    }
    return rc;
}

/* Objects are created without HDF5's access/modification timestamps: the file's bytes then depend on
 * its contents only (an update applied on two hosts gives the same file; flas/update.h). */
static int make_group(hid_t fid, const char *name)
{
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    hid_t g = gcpl < 0 || H5Pset_obj_track_times(gcpl, 0) < 0 ? -1
                                                                : H5Gcreate2(fid, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (gcpl >= 0)
        H5Pclose(gcpl);
    if (g < 0)
        return -1;
    H5Gclose(g);
    return 0;
}

/* An update file's datasets: /update/<name> (int8 or bf16 bits, the tensor's shape) and, for int8,
 * /update_scale/<name> (float32, one per block of the row-major tensor). */
static int create_update_layout(ck_file *f, const flas_ckpt_meta *meta, hid_t dcpl, char *err, size_t errlen)
{
    int int8 = meta->update == FLAS_UPDATE_INT8;
    if (make_group(f->fid, "/update") || (int8 && make_group(f->fid, "/update_scale")))
        return flas_fail(err, errlen, "%s: cannot create the update groups", f->path);
    for (int i = 0; i < f->table.n_tensors; i++) {
        const flas_tensor *t = &f->table.tensors[i];
        for (int scale = 0; scale <= int8; scale++) {
            hsize_t dims[2] = {t->full_shape[0], t->full_shape[1]};
            int ndim = t->ndim;
            if (scale)
                dims[0] = ck_update_blocks(ck_rows(t) * ck_cols(t), meta->update_block), ndim = 1;
            char name[256];
            snprintf(name, sizeof name, "%s/%s", ck_section_group(scale ? CK_SEC_UPDATE_SCALE : CK_SEC_UPDATE),
                     t->name);
            hid_t sp = H5Screate_simple(ndim, dims, NULL);
            hid_t d = sp < 0 ? -1 : H5Dcreate2(f->fid, name, scale ? H5T_IEEE_F32LE : ck_update_file_type(meta->update),
                                               sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
            if (sp >= 0)
                H5Sclose(sp);
            if (d < 0)
                return flas_fail(err, errlen, "%s: cannot create dataset %s", f->path, name);
            H5Dclose(d);
        }
    }
    return 0;
}

/* Groups and full-shape float32 datasets for every chosen section. Contiguous (MPI-IO writes them
 * directly; no chunk index) and never filled (every byte is written by the caller; commit checks
 * that). Parallel HDF5 must allocate at creation; the serial path allocates at the first write, which
 * appends to the file instead of filling a pre-sized sparse file (measurably faster on ext4). */
static int create_layout(ck_file *f, unsigned contents, const flas_ckpt_meta *meta, char *err, size_t errlen)
{
    static const char *const groups[] = {"/params", "/optimizer", "/optimizer/m", "/optimizer/v", "/train_state",
                                         "/server", "/server/m", "/server/v", "/provenance", "/metrics"};
    if (contents & FLAS_CKPT_UPDATE)
        contents &= ~FLAS_CKPT_HAS(FLAS_CKPT_PARAMS); /* the update stands in for the params */
    const unsigned need[] = {FLAS_CKPT_HAS(FLAS_CKPT_PARAMS), FLAS_CKPT_OPTIMIZER, FLAS_CKPT_OPTIMIZER,
                             FLAS_CKPT_OPTIMIZER, FLAS_CKPT_TRAIN_STATE, FLAS_CKPT_SERVER_STATE,
                             FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M), FLAS_CKPT_HAS(FLAS_CKPT_SERVER_V),
                             FLAS_CKPT_PROVENANCE, FLAS_CKPT_METRICS};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if ((contents & need[i]) && make_group(f->fid, groups[i]))
            return flas_fail(err, errlen, "%s: cannot create group %s", f->path, groups[i]);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int rc = (dcpl < 0 || H5Pset_layout(dcpl, H5D_CONTIGUOUS) < 0 || H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 ||
              H5Pset_alloc_time(dcpl, f->comm != MPI_COMM_NULL ? H5D_ALLOC_TIME_EARLY : H5D_ALLOC_TIME_LATE) < 0 ||
              H5Pset_obj_track_times(dcpl, 0) < 0)
             ? -1 : 0;
    if (rc == 0 && (contents & FLAS_CKPT_UPDATE))
        rc = create_update_layout(f, meta, dcpl, err, errlen);
    for (int s = 0; s < FLAS_CKPT_N_SECTIONS && rc == 0; s++) {
        if (!(contents & FLAS_CKPT_HAS(s)))
            continue;
        hid_t g = H5Gopen2(f->fid, ck_section_group((flas_ckpt_section)s), H5P_DEFAULT);
        for (int i = 0; i < f->table.n_tensors && g >= 0 && rc == 0; i++) {
            const flas_tensor *t = &f->table.tensors[i];
            hsize_t dims[2] = {t->full_shape[0], t->full_shape[1]};
            hid_t sp = H5Screate_simple(t->ndim, dims, NULL);
            hid_t d = sp < 0 ? -1 : H5Dcreate2(g, t->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
            if (d < 0) {
                char detail[256];
                ck_h5_detail(detail, sizeof detail);
                rc = flas_fail(err, errlen, "%s: cannot create dataset %s/%s (%s)", f->path,
                             ck_section_group((flas_ckpt_section)s), t->name, detail);
            } else {
                H5Dclose(d);
            }
            if (sp >= 0)
                H5Sclose(sp);
        }
        if (g < 0)
            rc = flas_fail(err, errlen, "%s: cannot open group %s", f->path, ck_section_group((flas_ckpt_section)s));
        else
            H5Gclose(g);
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return rc;
}

static void writer_free(flas_ckpt_writer *w)
{
    ck_drop_cache(&w->f);
    if (w->f.dxpl >= 0 && w->f.dxpl != H5P_DEFAULT)
        H5Pclose(w->f.dxpl);
    flas_param_table_free(&w->f.table);
    ck_buf_free(&w->codes);
    ck_buf_free(&w->scales);
    free(w->written);
    free(w);
}

flas_ckpt_writer *flas_ckpt_create(const char *path, const flas_ckpt_meta *meta, unsigned contents,
                                   MPI_Comm comm, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    flas_ckpt_writer *w = calloc(1, sizeof *w);
    if (!w) {
        flas_fail(err, errlen, "%s: out of memory", path);
        ck_quiet_end(&q);
        return NULL;
    }
    ck_file *f = &w->f;
    f->fid = f->cache_dset = -1;
    f->dxpl = H5P_DEFAULT;
    f->cache_section = f->cache_tensor = -1;
    f->comm = comm;
    f->size = 1;
    if (comm != MPI_COMM_NULL) {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) {
            flas_fail(err, errlen, "%s: parallel checkpoint write before MPI_Init", path);
            goto fail_local;
        }
        MPI_Comm_rank(comm, &f->rank);
        MPI_Comm_size(comm, &f->size);
    }
    snprintf(f->path, sizeof f->path, "%s", path);
    /* The PARAMS bit stands for "the model": /params, or /update in an update file. */
    w->contents = (contents & ~FLAS_CKPT_KEEP_CREATED) | FLAS_CKPT_HAS(FLAS_CKPT_PARAMS);
    w->meta = *meta;
    if (w->meta.tp_size == 0)
        w->meta.tp_size = 1;
    if (w->meta.dp_size == 0)
        w->meta.dp_size = 1;

    /* Rank 0 names the temporary file and stamps the time; everyone uses its values so that the
     * collective metadata writes agree byte for byte. */
    char msg[CK_ERR_MAX] = "";
    int ok = 1;
    if (strlen(path) >= CK_PATH_MAX - 128) {
        ok = 0;
        flas_fail(msg, sizeof msg, "%.200s...: path too long", path);
    } else if ((contents & FLAS_CKPT_UPDATE) && comm != MPI_COMM_NULL) {
        ok = 0;
        flas_fail(msg, sizeof msg, "%s: update files are written serially", path);
    } else if (check_meta(&w->meta, contents, msg, sizeof msg)) {
        ok = 0;
        char tmp[CK_ERR_MAX];
        flas_fail(tmp, sizeof tmp, "%s: %s", path, msg);
        snprintf(msg, sizeof msg, "%s", tmp);
    }
    if (ok && f->rank == 0) {
        char dir[CK_PATH_MAX];
        struct stat st;
        flas_dir_of(path, dir, sizeof dir);
        if (!(contents & FLAS_CKPT_KEEP_CREATED)) {
            time_t now = time(NULL);
            struct tm tm;
            gmtime_r(&now, &tm);
            w->meta.created_unix = (int64_t)now;
            strftime(w->meta.created_utc, sizeof w->meta.created_utc, "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
        if (stat(dir, &st) || !S_ISDIR(st.st_mode))
            ok = 0, flas_fail(msg, sizeof msg, "%s: directory %s does not exist", path, dir);
        else if (access(dir, W_OK | X_OK))
            ok = 0, flas_fail(msg, sizeof msg, "%s: directory %s is not writable: %s", path, dir, strerror(errno));
        else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            ok = 0, flas_fail(msg, sizeof msg, "%s: is a directory", path);
        else if (temp_name(path, w->temp, sizeof w->temp))
            ok = 0, flas_fail(msg, sizeof msg, "%s: cannot form a temporary name", path);
    }
    if (is_parallel(f)) {
        MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
        MPI_Bcast(msg, sizeof msg, MPI_CHAR, 0, comm);
        MPI_Bcast(w->temp, sizeof w->temp, MPI_CHAR, 0, comm);
        MPI_Bcast(&w->meta, sizeof w->meta, MPI_BYTE, 0, comm);
    }
    if (agree(f, ok, msg, sizeof msg)) {
        flas_fail(err, errlen, "%s", msg);
        goto fail_local;
    }
    if (flas_param_table_init(&f->table, &w->meta.cfg, 0, 1, msg, sizeof msg)) {
        flas_fail(err, errlen, "%s: %s", path, msg); /* same config everywhere: every rank fails alike */
        goto fail_local;
    }
    w->written = calloc((size_t)FLAS_CKPT_N_SECTIONS * (size_t)f->table.n_tensors, sizeof *w->written);
    ok = w->written != NULL;
    if (agree(f, ok, msg, sizeof msg)) {
        flas_fail(err, errlen, "%s: out of memory", path);
        goto fail_local;
    }

    hid_t fapl = ck_fapl(comm);
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE); /* the root group without timestamps, like every object */
    if (fcpl >= 0 && H5Pset_obj_track_times(fcpl, 0) < 0) {
        H5Pclose(fcpl);
        fcpl = -1;
    }
    f->fid = fapl < 0 || fcpl < 0 ? -1 : H5Fcreate(w->temp, H5F_ACC_EXCL, fcpl, fapl);
    if (fcpl >= 0)
        H5Pclose(fcpl);
    char detail[256];
    ck_h5_detail(detail, sizeof detail); /* before the next HDF5 call clears the error stack */
    if (fapl >= 0)
        H5Pclose(fapl);
    if (f->fid < 0) {
        flas_fail(err, errlen, "%s: cannot create temporary file %s (%s)", path, w->temp, detail);
        goto fail_local;
    }
    if (is_parallel(f))
        f->dxpl = ck_dxpl();
    hid_t root = H5Gopen2(f->fid, "/", H5P_DEFAULT);
    int rc = (root < 0 || write_root(root, &w->meta)) ? -1 : 0;
    if (root >= 0)
        H5Gclose(root);
    if (rc)
        flas_fail(err, errlen, "%s: cannot write the root attributes", path);
    else
        rc = create_layout(f, w->contents, &w->meta, err, errlen);
    if (rc) {
        flas_ckpt_abort(w);
        w = NULL;
    }
    ck_quiet_end(&q);
    return w;

fail_local:
    writer_free(w);
    ck_quiet_end(&q);
    return NULL;
}

const flas_param_table *flas_ckpt_writer_tensors(const flas_ckpt_writer *w) { return &w->f.table; }

/* Validates one put's arguments locally, agrees across ranks (also that all name the same tensor),
 * then moves the data. */
static int put_sel(flas_ckpt_writer *w, flas_ckpt_section s, int tensor, int ok, const ck_sel *sel,
                   const float *data, char *err, size_t errlen)
{
    ck_file *f = &w->f;
    if (is_parallel(f)) {
        int key[3] = {ok ? 0 : 1, (int)s * 1000000 + tensor, -((int)s * 1000000 + tensor)};
        MPI_Allreduce(MPI_IN_PLACE, key, 3, MPI_INT, MPI_MAX, f->comm);
        if (key[0] || key[1] != -key[2]) {
            if (ok)
                flas_fail(err, errlen, "%s: ranks disagree on the put (another rank passed invalid arguments or "
                        "another tensor)", f->path);
            remember(w, err);
            return -1;
        }
    } else if (!ok) {
        remember(w, err);
        return -1;
    }
    if (ck_io(f, 1, s, tensor, sel, (void *)data, err, errlen)) {
        remember(w, err);
        return -1;
    }
    w->written[(size_t)s * (size_t)f->table.n_tensors + (size_t)tensor] += (int64_t)sel->n;
    return 0;
}

static int locate(flas_ckpt_writer *w, flas_ckpt_section s, const char *name, int *tensor, char *err, size_t errlen)
{
    *tensor = -1;
    if (s < 0 || s >= FLAS_CKPT_N_SECTIONS || !(w->contents & FLAS_CKPT_HAS(s)) ||
        ((w->contents & FLAS_CKPT_UPDATE) && s == FLAS_CKPT_PARAMS))
        return flas_fail(err, errlen, "%s: section %s was not chosen at create%s", w->f.path, flas_ckpt_section_name(s),
                         (w->contents & FLAS_CKPT_UPDATE) ? " (an update file: flas_ckpt_put_update)" : "");
    *tensor = name ? ck_tensor_index(&w->f, name) : -1;
    if (*tensor < 0)
        return flas_fail(err, errlen, "%s: no tensor named '%s' in this model", w->f.path, name ? name : "(null)");
    return 0;
}

int flas_ckpt_put(flas_ckpt_writer *w, flas_ckpt_section section, const char *name, const size_t start[2],
                  const size_t count[2], const float *data, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    int tensor;
    ck_sel sel = {0};
    int ok = locate(w, section, name, &tensor, err, errlen) == 0 &&
             ck_sel_box(&w->f.table.tensors[tensor], start, count, &sel, err, errlen) == 0;
    if (ok && sel.n && !data)
        ok = 0, flas_fail(err, errlen, "%s: put of %s without data", w->f.path, name);
    int rc = put_sel(w, section, ok ? tensor : 0, ok, &sel, data, err, errlen);
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_put_elems(flas_ckpt_writer *w, flas_ckpt_section section, const char *name, size_t lo, size_t n,
                        const float *data, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    int tensor;
    ck_sel sel = {0};
    int ok = locate(w, section, name, &tensor, err, errlen) == 0;
    if (ok) {
        const flas_tensor *t = &w->f.table.tensors[tensor];
        size_t numel = ck_rows(t) * ck_cols(t);
        if (lo > numel || n > numel - lo)
            ok = 0, flas_fail(err, errlen, "%s: elements [%zu, +%zu) of %s are outside its %zu elements", w->f.path,
                            lo, n, name, numel);
        else if (n && !data)
            ok = 0, flas_fail(err, errlen, "%s: put of %s without data", w->f.path, name);
        else
            ck_sel_range(ck_full_rect(t), lo, n, &sel);
    }
    int rc = put_sel(w, section, ok ? tensor : 0, ok, &sel, data, err, errlen);
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_put_flat(flas_ckpt_writer *w, flas_ckpt_section section, const flas_param_table *t, size_t lo,
                       size_t hi, const float *data, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    int ok = 1;
    if (section < 0 || section >= FLAS_CKPT_N_SECTIONS || !(w->contents & FLAS_CKPT_HAS(section)) ||
        ((w->contents & FLAS_CKPT_UPDATE) && section == FLAS_CKPT_PARAMS))
        ok = 0, flas_fail(err, errlen, "%s: section %s was not chosen at create", w->f.path,
                        flas_ckpt_section_name(section));
    else if (ck_flat_check(&w->f, t, lo, hi, data != NULL, err, errlen))
        ok = 0;
    if (agree(&w->f, ok, err, errlen)) {
        remember(w, err);
        ck_quiet_end(&q);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        size_t a = lo > x->offset ? lo : x->offset, b = hi < x->offset + x->numel ? hi : x->offset + x->numel;
        ck_sel sel = {0};
        if (a < b && !(x->shard == FLAS_TP_REPLICATED && t->tp_rank != 0))
            ck_sel_range(ck_shard_rect(x), a - x->offset, b - a, &sel);
        /* Every rank calls for every tensor (same config, same order): no per-tensor agreement needed. */
        if (ck_io(&w->f, 1, section, i, &sel, (void *)(sel.n ? data + (a - lo) : NULL), err, errlen)) {
            remember(w, err);
            rc = -1;
        } else {
            w->written[(size_t)section * (size_t)t->n_tensors + (size_t)i] += (int64_t)sel.n;
        }
    }
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_put_update(flas_ckpt_writer *w, const char *name, size_t lo, size_t n, const float *delta,
                         float *residual, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    ck_file *f = &w->f;
    const flas_update_enc e = w->meta.update;
    const int block = w->meta.update_block;
    int rc = 0, tensor = -1;
    void *codes = NULL;
    float *scales = NULL;
    size_t numel = 0;
    if (!(w->contents & FLAS_CKPT_UPDATE)) {
        rc = flas_fail(err, errlen, "%s: not an update file (put_update)", f->path);
        goto out;
    }
    if ((tensor = ck_update_tensor(f, name, lo, n, delta != NULL, &numel, err, errlen)) < 0) {
        rc = -1;
        goto out;
    }
    const flas_tensor *t = &f->table.tensors[tensor];
    if (e == FLAS_UPDATE_INT8 && (lo % (size_t)block || (n % (size_t)block && lo + n != numel))) {
        rc = flas_fail(err, errlen, "%s: update of %s at [%zu, +%zu) does not follow its blocks of %d", f->path, name,
                       lo, n, block);
        goto out;
    }
    size_t nb = e == FLAS_UPDATE_INT8 ? ck_update_blocks(n, block) : 0;
    codes = ck_buf_get(&w->codes, (n ? n : 1) * ck_update_value_size(e));
    scales = ck_buf_get(&w->scales, (nb ? nb : 1) * sizeof *scales);
    if (!codes || !scales) {
        rc = flas_fail(err, errlen, "%s: out of memory", f->path);
        goto out;
    }
    if (n && flas_update_encode(e, block, delta, n, codes, scales, residual)) {
        rc = flas_fail(err, errlen, "%s: the delta of %s has a non-finite value (or one beyond the encoding's range) "
                       "in [%zu, +%zu)", f->path, name, lo, n);
        goto out;
    }
    ck_sel sel;
    ck_sel_range(ck_full_rect(t), lo, n, &sel);
    rc = ck_io_as(f, 1, CK_SEC_UPDATE, tensor, ck_update_mem_type(e), &sel, codes, err, errlen);
    if (rc == 0 && nb) {
        ck_sel_range((ck_rect){0, 0, 1, ck_update_blocks(numel, block)}, lo / (size_t)block, nb, &sel);
        rc = ck_io_as(f, 1, CK_SEC_UPDATE_SCALE, tensor, H5T_NATIVE_FLOAT, &sel, scales, err, errlen);
    }
    if (rc == 0)
        w->written[(size_t)FLAS_CKPT_PARAMS * (size_t)f->table.n_tensors + (size_t)tensor] += (int64_t)n;
out:
    if (rc)
        remember(w, err);
    ck_quiet_end(&q);
    return rc;
}

/* Setters of the optional state: rank 0's values are broadcast so that every rank writes the same. */
static int set_begin(flas_ckpt_writer *w, unsigned content_bit, unsigned set_bit, const char *what, void *v,
                     size_t vsize, char *err, size_t errlen)
{
    int ok = 1;
    if (!(w->contents & content_bit))
        ok = 0, flas_fail(err, errlen, "%s: %s was not chosen at create", w->f.path, what);
    else if (w->states_set & set_bit)
        ok = 0, flas_fail(err, errlen, "%s: %s set twice", w->f.path, what);
    if (agree(&w->f, ok, err, errlen)) {
        remember(w, err);
        return -1;
    }
    if (is_parallel(&w->f) && v)
        MPI_Bcast(v, (int)vsize, MPI_BYTE, 0, w->f.comm);
    return 0;
}

static int set_end(flas_ckpt_writer *w, unsigned set_bit, int rc, const char *what, char *err, size_t errlen)
{
    if (rc) {
        flas_fail(err, errlen, "%s: cannot write %s", w->f.path, what);
        remember(w, err);
        return -1;
    }
    w->states_set |= set_bit;
    return 0;
}

static int with_group(hid_t fid, const char *name, int (*fn)(hid_t, const void *), const void *arg)
{
    hid_t g = H5Gopen2(fid, name, H5P_DEFAULT);
    if (g < 0)
        return -1;
    int rc = fn(g, arg);
    H5Gclose(g);
    return rc;
}

static int put_optimizer(hid_t g, const void *arg)
{
    const flas_ckpt_optimizer *o = arg;
    int rc = ck_attr_put(g, "step", H5T_NATIVE_INT64, 1, &o->step);
    rc |= ck_attr_put(g, "lr", H5T_NATIVE_FLOAT, 1, &o->lr);
    rc |= ck_attr_put(g, "beta1", H5T_NATIVE_FLOAT, 1, &o->beta1);
    rc |= ck_attr_put(g, "beta2", H5T_NATIVE_FLOAT, 1, &o->beta2);
    rc |= ck_attr_put(g, "eps", H5T_NATIVE_FLOAT, 1, &o->eps);
    rc |= ck_attr_put(g, "weight_decay", H5T_NATIVE_FLOAT, 1, &o->weight_decay);
    return rc;
}

static int put_train(hid_t g, const void *arg)
{
    const flas_train_state *s = arg;
    int rc = ck_attr_put(g, "epoch", H5T_NATIVE_INT64, 1, &s->epoch);
    rc |= ck_attr_put(g, "shard", H5T_NATIVE_INT64, 1, &s->shard);
    rc |= ck_attr_put(g, "offset", H5T_NATIVE_INT64, 1, &s->offset);
    rc |= ck_attr_put(g, "samples", H5T_NATIVE_INT64, 1, &s->samples);
    rc |= ck_attr_put(g, "rng_seed", H5T_NATIVE_UINT64, 1, &s->rng_seed);
    rc |= ck_attr_put(g, "rng_state", H5T_NATIVE_UINT64, 4, s->rng_state);
    rc |= ck_attr_put(g, "loader_cursor", H5T_NATIVE_UINT64, FLAS_CKPT_CURSOR_WORDS, s->loader_cursor);
    return rc;
}

static int put_metrics(hid_t g, const void *arg)
{
    const flas_ckpt_metrics *m = arg;
    int rc = ck_attr_put(g, "train_loss", H5T_NATIVE_DOUBLE, 1, &m->train_loss);
    rc |= ck_attr_put(g, "train_loss_last", H5T_NATIVE_DOUBLE, 1, &m->train_loss_last);
    rc |= ck_attr_put(g, "valid_loss", H5T_NATIVE_DOUBLE, 1, &m->valid_loss);
    rc |= ck_attr_put(g, "valid_perplexity", H5T_NATIVE_DOUBLE, 1, &m->valid_perplexity);
    rc |= ck_attr_put(g, "valid_tokens", H5T_NATIVE_INT64, 1, &m->valid_tokens);
    rc |= ck_attr_put(g, "train_seconds", H5T_NATIVE_DOUBLE, 1, &m->train_seconds);
    rc |= ck_attr_put(g, "tokens_per_second", H5T_NATIVE_DOUBLE, 1, &m->tokens_per_second);
    rc |= ck_attr_put_str(g, "stop_reason", m->stop_reason);
    return rc;
}

static int put_server(hid_t g, const void *arg) { return ck_put_server_state(g, arg); }

int flas_ckpt_set_optimizer(flas_ckpt_writer *w, const flas_ckpt_optimizer *o, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    flas_ckpt_optimizer v = *o;
    int rc = set_begin(w, FLAS_CKPT_OPTIMIZER, SET_OPTIMIZER, "optimizer state", &v, sizeof v, err, errlen);
    if (rc == 0 && v.step < 0)
        rc = -1, flas_fail(err, errlen, "%s: optimizer step %lld is negative", w->f.path, (long long)v.step),
        remember(w, err);
    if (rc == 0)
        rc = set_end(w, SET_OPTIMIZER, with_group(w->f.fid, "/optimizer", put_optimizer, &v), "optimizer state",
                     err, errlen);
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_set_train_state(flas_ckpt_writer *w, const flas_train_state *s, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    flas_train_state v = *s;
    int rc = set_begin(w, FLAS_CKPT_TRAIN_STATE, SET_TRAIN, "training state", &v, sizeof v, err, errlen);
    if (rc == 0)
        rc = set_end(w, SET_TRAIN, with_group(w->f.fid, "/train_state", put_train, &v), "training state", err,
                     errlen);
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_set_metrics(flas_ckpt_writer *w, const flas_ckpt_metrics *m, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    flas_ckpt_metrics v = *m;
    int rc = set_begin(w, FLAS_CKPT_METRICS, SET_METRICS, "metrics", &v, sizeof v, err, errlen);
    if (rc == 0 && (v.valid_tokens < 0 || !memchr(v.stop_reason, '\0', sizeof v.stop_reason)))
        rc = -1, flas_fail(err, errlen, "%s: invalid metrics (valid_tokens %lld)", w->f.path, (long long)v.valid_tokens),
        remember(w, err);
    if (rc == 0)
        rc = set_end(w, SET_METRICS, with_group(w->f.fid, "/metrics", put_metrics, &v), "metrics", err, errlen);
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_set_server_state(flas_ckpt_writer *w, const flas_server_state *s, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    flas_server_state *v = malloc(sizeof *v);
    int rc = -1;
    if (!v) {
        flas_fail(err, errlen, "%s: out of memory", w->f.path);
        remember(w, err);
        ck_quiet_end(&q);
        return -1;
    }
    *v = *s;
    rc = set_begin(w, FLAS_CKPT_SERVER_STATE, SET_SERVER, "server state", v, sizeof *v, err, errlen);
    if (rc == 0 && (v->n_sites < 0 || v->n_sites > FLAS_CKPT_MAX_SITES || v->round < 0 || v->step < 0 ||
                    !memchr(v->strategy, '\0', sizeof v->strategy)))
        rc = -1, flas_fail(err, errlen, "%s: invalid server state (sites %d, round %lld)", w->f.path, v->n_sites,
                         (long long)v->round), remember(w, err);
    if (rc == 0)
        rc = set_end(w, SET_SERVER, with_group(w->f.fid, "/server", put_server, v), "server state", err, errlen);
    free(v);
    ck_quiet_end(&q);
    return rc;
}

static int put_provenance(hid_t g, const void *arg)
{
    const flas_ckpt_provenance *p = arg;
    int rc = ck_attr_put_str(g, "tool", p->tool ? p->tool : "");
    rc |= ck_attr_put_str(g, "strategy", p->strategy ? p->strategy : "");
    rc |= ck_attr_put_str(g, "policy", p->policy ? p->policy : "");
    rc |= ck_attr_put_str(g, "previous_path", p->previous_path ? p->previous_path : "");
    rc |= ck_attr_put_str(g, "previous_sha256", p->previous_sha256 ? p->previous_sha256 : "");
    for (int i = 0; i < p->n_hyper; i++) {
        char name[96];
        snprintf(name, sizeof name, "hyper.%s", p->hyper_names[i]);
        rc |= ck_attr_put(g, name, H5T_NATIVE_DOUBLE, 1, &p->hyper_values[i]);
    }
    int64_t n = p->n_inputs;
    rc |= ck_attr_put(g, "n_inputs", H5T_NATIVE_INT64, 1, &n);
    if (n <= 0)
        return rc;
    const char **strs = calloc((size_t)n, sizeof *strs);
    int64_t *ints = calloc((size_t)n, sizeof *ints);
    double *dbls = calloc((size_t)n, sizeof *dbls);
    if (!strs || !ints || !dbls) {
        rc = -1;
        goto out;
    }
#define STRS(attr, field)                                                   \
    for (int64_t i = 0; i < n; i++)                                         \
        strs[i] = p->inputs[i].field ? p->inputs[i].field : "";             \
    rc |= ck_attr_put_strs(g, attr, (size_t)n, strs);
#define INTS(attr, expr)                                                    \
    for (int64_t i = 0; i < n; i++)                                         \
        ints[i] = (int64_t)(expr);                                          \
    rc |= ck_attr_put(g, attr, H5T_NATIVE_INT64, (size_t)n, ints);
    STRS("input_paths", path)
    STRS("input_sha256", sha256)
    STRS("input_sites", site)
    STRS("input_reasons", reason)
    INTS("input_rounds", p->inputs[i].round)
    INTS("input_tokens", p->inputs[i].tokens)
    INTS("input_used", p->inputs[i].used)
#undef STRS
#undef INTS
    for (int64_t i = 0; i < n; i++)
        dbls[i] = p->inputs[i].weight;
    rc |= ck_attr_put(g, "input_weights", H5T_NATIVE_DOUBLE, (size_t)n, dbls);
out:
    free(strs);
    free(ints);
    free(dbls);
    return rc;
}

int flas_ckpt_set_provenance(flas_ckpt_writer *w, const flas_ckpt_provenance *p, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    /* Pointers cannot be broadcast: parallel callers pass identical provenance on every rank. */
    int rc = set_begin(w, FLAS_CKPT_PROVENANCE, SET_PROVENANCE, "provenance", NULL, 0, err, errlen);
    if (rc == 0 && (p->n_inputs < 0 || p->n_hyper < 0 || (p->n_inputs && !p->inputs) ||
                    (p->n_hyper && (!p->hyper_names || !p->hyper_values))))
        rc = -1, flas_fail(err, errlen, "%s: invalid provenance", w->f.path), remember(w, err);
    if (rc == 0)
        rc = set_end(w, SET_PROVENANCE, with_group(w->f.fid, "/provenance", put_provenance, p), "provenance", err,
                     errlen);
    ck_quiet_end(&q);
    return rc;
}

/* Everything the caller promised at create was delivered: every tensor of every section fully written
 * (summed over ranks) and every chosen state set. Same answer on every rank. */
static int check_complete(flas_ckpt_writer *w, char *err, size_t errlen)
{
    ck_file *f = &w->f;
    size_t n = (size_t)FLAS_CKPT_N_SECTIONS * (size_t)f->table.n_tensors;
    if (is_parallel(f))
        MPI_Allreduce(MPI_IN_PLACE, w->written, (int)n, MPI_INT64_T, MPI_SUM, f->comm);
    for (int s = 0; s < FLAS_CKPT_N_SECTIONS; s++) {
        if (!(w->contents & FLAS_CKPT_HAS(s)))
            continue;
        for (int i = 0; i < f->table.n_tensors; i++) {
            const flas_tensor *t = &f->table.tensors[i];
            int64_t want = (int64_t)(ck_rows(t) * ck_cols(t));
            int64_t got = w->written[(size_t)s * (size_t)f->table.n_tensors + (size_t)i];
            if (got < want)
                return flas_fail(err, errlen, "%s: %s/%s was not fully written (%lld of %lld elements)", f->path,
                               ck_section_group((flas_ckpt_section)s), t->name, (long long)got, (long long)want);
        }
    }
    const struct { unsigned content, set; const char *what; } states[] = {
        {FLAS_CKPT_OPTIMIZER, SET_OPTIMIZER, "optimizer state (flas_ckpt_set_optimizer)"},
        {FLAS_CKPT_TRAIN_STATE, SET_TRAIN, "training state (flas_ckpt_set_train_state)"},
        {FLAS_CKPT_SERVER_STATE, SET_SERVER, "server state (flas_ckpt_set_server_state)"},
        {FLAS_CKPT_PROVENANCE, SET_PROVENANCE, "provenance (flas_ckpt_set_provenance)"},
        {FLAS_CKPT_METRICS, SET_METRICS, "metrics (flas_ckpt_set_metrics)"}};
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        if ((w->contents & states[i].content) && !(w->states_set & states[i].set))
            return flas_fail(err, errlen, "%s: %s was chosen but never set", f->path, states[i].what);
    return 0;
}

int flas_ckpt_commit(flas_ckpt_writer *w, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    ck_file *f = &w->f;
    char msg[CK_ERR_MAX];
    snprintf(msg, sizeof msg, "%s", w->first_err);
    if (agree(f, !w->failed, msg, sizeof msg) || check_complete(w, msg, sizeof msg)) {
        flas_fail(err, errlen, "%s: not committed: %s", f->path, msg);
        flas_ckpt_abort(w);
        ck_quiet_end(&q);
        return -1;
    }
    ck_drop_cache(f);
    /* 1. every tensor byte durable; 2. marker; 3. close; 4. durable again; 5. rename; 6. directory. */
    int ok = H5Fflush(f->fid, H5F_SCOPE_GLOBAL) >= 0;
    if (is_parallel(f))
        MPI_Barrier(f->comm);
    if (f->rank == 0 && ok && flas_fsync_path(w->temp))
        ok = 0;
    int32_t one = 1;
    if (agree(f, ok, msg, sizeof msg) == 0) {
        hid_t root = H5Gopen2(f->fid, "/", H5P_DEFAULT);
        ok = root >= 0 && ck_attr_put(root, "complete", H5T_NATIVE_INT32, 1, &one) == 0;
        if (root >= 0)
            H5Gclose(root);
        ok = ok && H5Fflush(f->fid, H5F_SCOPE_GLOBAL) >= 0;
    } else {
        ok = 0;
    }
    ok = (H5Fclose(f->fid) >= 0) && ok;
    f->fid = -1;
    flas_fail(msg, sizeof msg, "%s: writing %s failed (disk full or I/O error?)", f->path, w->temp);
    if (f->rank == 0 && ok) {
        if (flas_fsync_path(w->temp))
            ok = 0, flas_fail(msg, sizeof msg, "%s: fsync of %s failed: %s", f->path, w->temp, strerror(errno));
        else if (rename(w->temp, f->path))
            ok = 0, flas_fail(msg, sizeof msg, "%s: rename from %s failed: %s", f->path, w->temp, strerror(errno));
        else if (flas_fsync_dir_of(f->path, 0))
            ok = 0, flas_fail(msg, sizeof msg, "%s: fsync of its directory failed: %s", f->path, strerror(errno));
    }
    if (is_parallel(f)) {
        MPI_Bcast(&ok, 1, MPI_INT, 0, f->comm);
        MPI_Bcast(msg, sizeof msg, MPI_CHAR, 0, f->comm);
    }
    int renamed = ok;
    if (!ok && f->rank == 0) {
        struct stat st;
        /* Never leave the temporary behind unless it already became the destination. */
        if (stat(w->temp, &st) == 0)
            unlink(w->temp);
    }
    writer_free(w);
    ck_quiet_end(&q);
    if (!renamed)
        return flas_fail(err, errlen, "%s", msg);
    return 0;
}

void flas_ckpt_abort(flas_ckpt_writer *w)
{
    if (!w)
        return;
    ck_quiet q;
    ck_quiet_begin(&q);
    ck_drop_cache(&w->f);
    if (w->f.fid >= 0)
        H5Fclose(w->f.fid);
    w->f.fid = -1;
    if (is_parallel(&w->f))
        MPI_Barrier(w->f.comm);
    if (w->f.rank == 0 && w->temp[0])
        unlink(w->temp);
    writer_free(w);
    ck_quiet_end(&q);
}
