/* Checkpoint reader: validate everything before anyone allocates, then move hyperslabs out.
 * Never trust the file: its config is checked with flas_config_validate and every dataset's shape
 * and dtype against the shapes that config implies, before a caller sizes a buffer from it. */
#include "checkpoint_internal.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct flas_ckpt_reader {
    ck_file f;
    ck_buf codes, scales;   /* an update's codes and scales of one get, kept for the next */
    flas_ckpt_meta meta;
    unsigned contents;
    flas_ckpt_optimizer opt;
    flas_train_state train;
    flas_server_state server;
    flas_ckpt_metrics metrics;
};

/* What rank 0 learns by validating, broadcast to the others. */
typedef struct validated {
    int ok;
    char err[CK_ERR_MAX];
    flas_ckpt_meta meta;
    unsigned contents;
    flas_ckpt_optimizer opt;
    flas_train_state train;
    flas_server_state server;
    flas_ckpt_metrics metrics;
} validated;

/* /update_scale exists: a bit of the contents mask that only validation uses. */
#define CK_HAS_SCALE (1u << 30)

static const unsigned char hdf5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

/* The superblock sits at byte 0, or after a user block at 512, 1024, 2048, ... */
static int has_signature(int fd, off_t size)
{
    for (off_t at = 0; at + 8 <= size && at <= (1 << 20); at = at ? at * 2 : 512) {
        unsigned char b[8];
        if (pread(fd, b, 8, at) == 8 && memcmp(b, hdf5_signature, 8) == 0)
            return 1;
    }
    return 0;
}

static int check_file(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st))
        return flas_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return flas_fail(err, errlen, "%s: is a directory, not a checkpoint file", path);
    if (!S_ISREG(st.st_mode))
        return flas_fail(err, errlen, "%s: not a regular file", path);
    if (st.st_size == 0)
        return flas_fail(err, errlen, "%s: empty file (0 bytes), not an HDF5 checkpoint", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return flas_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    int sig = has_signature(fd, st.st_size);
    close(fd);
    if (!sig)
        return flas_fail(err, errlen, "%s: not an HDF5 file (no HDF5 signature; %lld bytes)", path,
                       (long long)st.st_size);
    return 0;
}

static int check_strings(hid_t root, const char *path, char *err, size_t errlen)
{
    char s[128], why[CK_ERR_MAX];
    int64_t v;
    if (H5Aexists(root, "format") <= 0)
        return flas_fail(err, errlen, "%s: not a FLaS checkpoint (HDF5 file without a 'format' attribute)", path);
    if (ck_attr_get_str(root, "format", s, sizeof s, why, sizeof why))
        return flas_fail(err, errlen, "%s: not a FLaS checkpoint (%s)", path, why);
    if (strcmp(s, FLAS_CKPT_FORMAT))
        return flas_fail(err, errlen, "%s: wrong format '%s' (expected '%s')", path, s, FLAS_CKPT_FORMAT);
    if (ck_attr_get_i64(root, "format_version", &v, 1, why, sizeof why))
        return flas_fail(err, errlen, "%s: %s", path, why);
    if (v != FLAS_CKPT_VERSION)
        return flas_fail(err, errlen, "%s: format version %lld is not supported (this FLaS reads version %d)", path,
                       (long long)v, FLAS_CKPT_VERSION);
    if (H5Aexists(root, "complete") <= 0 || ck_attr_get_i64(root, "complete", &v, 1, why, sizeof why) || v != 1)
        return flas_fail(err, errlen, "%s: incomplete checkpoint: no completion marker (its writer did not finish)",
                       path);
    if (ck_attr_get_str(root, "rope_convention", s, sizeof s, why, sizeof why))
        return flas_fail(err, errlen, "%s: %s", path, why);
    if (strcmp(s, FLAS_CKPT_ROPE))
        return flas_fail(err, errlen, "%s: RoPE convention '%s' is not supported (expected '%s'; convert the wq/wk rows)",
                       path, s, FLAS_CKPT_ROPE);
    return 0;
}

static int read_meta(hid_t root, const char *path, flas_ckpt_meta *m, char *err, size_t errlen)
{
    char why[CK_ERR_MAX], role[16];
    int64_t v[2];
    memset(m, 0, sizeof *m);
    if (ck_get_config(root, &m->cfg, why, sizeof why))
        return flas_fail(err, errlen, "%s: config: %s", path, why);
    if (flas_config_validate(&m->cfg, 1, why, sizeof why))
        return flas_fail(err, errlen, "%s: invalid model config: %s", path, why);
    if (m->cfg.n_layers > FLAS_CKPT_MAX_LAYERS)
        return flas_fail(err, errlen, "%s: invalid model config: n_layers %d exceeds %d", path, m->cfg.n_layers,
                       FLAS_CKPT_MAX_LAYERS);
    if (ck_attr_get_str(root, "role", role, sizeof role, why, sizeof why) ||
        ck_attr_get_i64(root, "round", &m->round, 1, why, sizeof why) ||
        ck_attr_get_str(root, "site", m->site, sizeof m->site, why, sizeof why) ||
        ck_attr_get_i64(root, "step", &m->step, 1, why, sizeof why) ||
        ck_attr_get_i64(root, "tokens_trained", &m->tokens_trained, 1, why, sizeof why) ||
        ck_attr_get_str(root, "base_sha256", m->base_sha256, sizeof m->base_sha256, why, sizeof why) ||
        ck_attr_get_i64(root, "tp_size", &v[0], 1, why, sizeof why) ||
        ck_attr_get_i64(root, "dp_size", &v[1], 1, why, sizeof why) ||
        ck_attr_get_i64(root, "created_unix", &m->created_unix, 1, why, sizeof why) ||
        ck_attr_get_str(root, "created_utc", m->created_utc, sizeof m->created_utc, why, sizeof why))
        return flas_fail(err, errlen, "%s: %s", path, why);
    if (!strcmp(role, "global"))
        m->role = FLAS_CKPT_GLOBAL;
    else if (!strcmp(role, "local"))
        m->role = FLAS_CKPT_LOCAL;
    else
        return flas_fail(err, errlen, "%s: role '%s' is neither 'global' nor 'local'", path, role);
    if (m->round < 0 || m->step < 0 || m->tokens_trained < 0)
        return flas_fail(err, errlen, "%s: negative round (%lld), step (%lld) or tokens_trained (%lld)", path,
                       (long long)m->round, (long long)m->step, (long long)m->tokens_trained);
    if (m->base_sha256[0] && !flas_sha256_is_hex(m->base_sha256))
        return flas_fail(err, errlen, "%s: base_sha256 '%s' is not a sha256 hex digest", path, m->base_sha256);
    if (v[0] < 1 || v[0] > INT32_MAX || v[1] < 1 || v[1] > INT32_MAX)
        return flas_fail(err, errlen, "%s: tp_size/dp_size out of range", path);
    m->tp_size = (int32_t)v[0];
    m->dp_size = (int32_t)v[1];
    /* An update file says so; every other checkpoint has neither attribute. */
    htri_t has_enc = H5Aexists(root, "update_encoding");
    if (has_enc < 0)
        return flas_fail(err, errlen, "%s: damaged HDF5 file: cannot look up update_encoding", path);
    if (has_enc) {
        char enc[16];
        int64_t block;
        if (ck_attr_get_str(root, "update_encoding", enc, sizeof enc, why, sizeof why) ||
            ck_attr_get_i64(root, "update_block", &block, 1, why, sizeof why))
            return flas_fail(err, errlen, "%s: %s", path, why);
        if (flas_update_enc_parse(enc, &m->update) || m->update == FLAS_UPDATE_FULL)
            return flas_fail(err, errlen, "%s: update_encoding '%s' is neither bf16 nor int8", path, enc);
        if (m->update == FLAS_UPDATE_INT8 && (block < FLAS_UPDATE_BLOCK_MIN || block > FLAS_UPDATE_BLOCK_MAX))
            return flas_fail(err, errlen, "%s: update_block %lld is outside %d..%d", path, (long long)block,
                             FLAS_UPDATE_BLOCK_MIN, FLAS_UPDATE_BLOCK_MAX);
        if (m->update == FLAS_UPDATE_BF16 && block != 0)
            return flas_fail(err, errlen, "%s: update_block %lld on a bf16 update (expected 0)", path, (long long)block);
        if (!m->base_sha256[0])
            return flas_fail(err, errlen, "%s: an update without base_sha256 (the model it applies to)", path);
        m->update_block = (int32_t)block;
    }
    return 0;
}

/* 1 if the object exists, 0 if not, -1 if HDF5 cannot tell (damaged metadata on the way: a damaged
 * group must never pass for an absent optional part). Opens the object, so its header is verified. */
static int exists(hid_t fid, const char *name)
{
    /* H5Lexists needs every intermediate link to exist: test the parent first. */
    const char *slash = strrchr(name, '/');
    if (slash && slash != name) {
        char parent[128];
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - name), name);
        int p = exists(fid, parent);
        if (p <= 0)
            return p;
    }
    htri_t e = H5Lexists(fid, name, H5P_DEFAULT);
    if (e <= 0)
        return e < 0 ? -1 : 0;
    hid_t o = H5Oopen(fid, name, H5P_DEFAULT);
    if (o < 0)
        return -1;
    H5Oclose(o);
    return 1;
}

/* What every dataset of a group must be: a type (class, size, signedness for integers) and either the
 * tensor's shape or, for blockwise scales (block > 0), one value per block of the flattened tensor. */
typedef struct want_type {
    H5T_class_t cls;
    size_t size;
    int is_signed;      /* integers only */
    const char *name;   /* for messages */
    int block;
} want_type;

static const want_type want_f32 = {H5T_FLOAT, 4, 0, "float32", 0};

/* Every tensor of group gname present with the wanted type and shape, and nothing else. */
static int check_group(hid_t fid, const char *path, const char *gname, const flas_param_table *t, want_type want,
                       char *err, size_t errlen)
{
    hid_t g = H5Gopen2(fid, gname, H5P_DEFAULT);
    H5G_info_t info;
    if (g < 0 || H5Gget_info(g, &info) < 0) {
        if (g >= 0)
            H5Gclose(g);
        return flas_fail(err, errlen, "%s: %s is not a group", path, gname);
    }
    int rc = 0;
    for (int i = 0; i < t->n_tensors && rc == 0; i++) {
        const flas_tensor *x = &t->tensors[i];
        if (H5Lexists(g, x->name, H5P_DEFAULT) <= 0) {
            rc = flas_fail(err, errlen, "%s: missing tensor %s/%s", path, gname + 1, x->name);
            break;
        }
        hid_t d = H5Dopen2(g, x->name, H5P_DEFAULT);
        if (d < 0) {
            rc = flas_fail(err, errlen, "%s: %s/%s is not a dataset", path, gname + 1, x->name);
            break;
        }
        hid_t ty = H5Dget_type(d), sp = H5Dget_space(d);
        H5T_class_t cls = H5Tget_class(ty);
        size_t tsize = H5Tget_size(ty);
        int sgn = cls == H5T_INTEGER ? H5Tget_sign(ty) == H5T_SGN_2 : 0;
        int nd = H5Sget_simple_extent_ndims(sp);
        hsize_t dims[2] = {0, 0};
        if (nd >= 1 && nd <= 2)
            H5Sget_simple_extent_dims(sp, dims, NULL);
        size_t want_nd = want.block ? 1 : (size_t)x->ndim;
        size_t want_dims[2] = {x->full_shape[0], x->full_shape[1]};
        if (want.block)
            want_dims[0] = ck_update_blocks(ck_rows(x) * ck_cols(x), want.block);
        if (cls != want.cls || tsize != want.size || (cls == H5T_INTEGER && sgn != want.is_signed)) {
            rc = flas_fail(err, errlen, "%s: tensor %s/%s has dtype %s%s%zu, expected %s", path, gname + 1, x->name,
                           cls == H5T_INTEGER && !sgn ? "u" : "",
                           cls == H5T_FLOAT ? "float" : cls == H5T_INTEGER ? "int" : "non-numeric size ", tsize * 8,
                           want.name);
        } else if ((size_t)nd != want_nd || dims[0] != want_dims[0] || (nd == 2 && dims[1] != want_dims[1])) {
            char have[64], wants[64];
            if (nd == 1)
                snprintf(have, sizeof have, "(%llu)", (unsigned long long)dims[0]);
            else if (nd == 2)
                snprintf(have, sizeof have, "(%llu, %llu)", (unsigned long long)dims[0], (unsigned long long)dims[1]);
            else
                snprintf(have, sizeof have, "rank %d", nd);
            if (want_nd == 1)
                snprintf(wants, sizeof wants, "(%zu)", want_dims[0]);
            else
                snprintf(wants, sizeof wants, "(%zu, %zu)", want_dims[0], want_dims[1]);
            rc = flas_fail(err, errlen, "%s: tensor %s/%s has shape %s but the config needs %s%s", path, gname + 1,
                           x->name, have, wants, want.block ? " (one scale per block)" : "");
        }
        H5Tclose(ty);
        H5Sclose(sp);
        H5Dclose(d);
    }
    if (rc == 0 && info.nlinks != (hsize_t)t->n_tensors)
        rc = flas_fail(err, errlen, "%s: %s holds %llu objects but the config has %d tensors (wrong model?)", path,
                     gname + 1, (unsigned long long)info.nlinks, t->n_tensors);
    H5Gclose(g);
    return rc;
}

static int check_section(hid_t fid, const char *path, flas_ckpt_section s, const flas_param_table *t, char *err,
                         size_t errlen)
{
    return check_group(fid, path, ck_section_group(s), t, want_f32, err, errlen);
}

/* An update file: /update (int8 or bf16 bits) with /update_scale for int8, and nothing else but
 * metrics (contents says what exists). */
static int check_update(hid_t fid, const char *path, const flas_ckpt_meta *m, unsigned contents,
                        const flas_param_table *t, char *err, size_t errlen)
{
    int int8 = m->update == FLAS_UPDATE_INT8, has_scale = (contents & CK_HAS_SCALE) != 0;
    if (contents & ~(FLAS_CKPT_UPDATE | CK_HAS_SCALE | FLAS_CKPT_METRICS))
        return flas_fail(err, errlen, "%s: an update file (update_encoding %s) with other parts (params, optimizer or "
                         "server state)", path, flas_update_enc_name(m->update));
    if (!(contents & FLAS_CKPT_UPDATE))
        return flas_fail(err, errlen, "%s: update_encoding %s but no /update group", path,
                         flas_update_enc_name(m->update));
    if (int8 != has_scale)
        return flas_fail(err, errlen, "%s: %s update %s /update_scale", path, flas_update_enc_name(m->update),
                         int8 ? "without" : "with");
    want_type codes = int8 ? (want_type){H5T_INTEGER, 1, 1, "int8", 0} : (want_type){H5T_INTEGER, 2, 0, "uint16 (bf16)", 0};
    int rc = check_group(fid, path, "/update", t, codes, err, errlen);
    if (rc == 0 && int8) {
        want_type sc = want_f32;
        sc.block = m->update_block;
        rc = check_group(fid, path, "/update_scale", t, sc, err, errlen);
    }
    return rc;
}

static int read_optimizer(hid_t g, flas_ckpt_optimizer *o, char *err, size_t errlen)
{
    double d[5];
    const char *names[5] = {"lr", "beta1", "beta2", "eps", "weight_decay"};
    if (ck_attr_get_i64(g, "step", &o->step, 1, err, errlen))
        return -1;
    for (int i = 0; i < 5; i++)
        if (ck_attr_get_f64(g, names[i], &d[i], err, errlen))
            return -1;
    o->lr = (float)d[0], o->beta1 = (float)d[1], o->beta2 = (float)d[2], o->eps = (float)d[3];
    o->weight_decay = (float)d[4];
    return o->step < 0 ? flas_fail(err, errlen, "optimizer step is negative") : 0;
}

static int read_train(hid_t g, flas_train_state *s, char *err, size_t errlen)
{
    if (ck_attr_get_i64(g, "epoch", &s->epoch, 1, err, errlen) ||
        ck_attr_get_i64(g, "shard", &s->shard, 1, err, errlen) ||
        ck_attr_get_i64(g, "offset", &s->offset, 1, err, errlen) ||
        ck_attr_get_i64(g, "samples", &s->samples, 1, err, errlen) ||
        ck_attr_get_u64(g, "rng_seed", &s->rng_seed, 1, err, errlen) ||
        ck_attr_get_u64(g, "rng_state", s->rng_state, 4, err, errlen))
        return -1;
    /* Optional (added in a compatible revision of version 1): absent means "no loader cursor". */
    memset(s->loader_cursor, 0, sizeof s->loader_cursor);
    htri_t has_cursor = H5Aexists(g, "loader_cursor");
    if (has_cursor < 0 ||
        (has_cursor > 0 && ck_attr_get_u64(g, "loader_cursor", s->loader_cursor, FLAS_CKPT_CURSOR_WORDS, err, errlen)))
        return has_cursor < 0 ? flas_fail(err, errlen, "cannot look up attribute loader_cursor") : -1;
    if (s->epoch < 0 || s->shard < 0 || s->offset < 0 || s->samples < 0)
        return flas_fail(err, errlen, "negative data cursor");
    return 0;
}

static int read_metrics(hid_t g, flas_ckpt_metrics *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (ck_attr_get_f64(g, "train_loss", &m->train_loss, err, errlen) ||
        ck_attr_get_f64(g, "train_loss_last", &m->train_loss_last, err, errlen) ||
        ck_attr_get_f64(g, "valid_loss", &m->valid_loss, err, errlen) ||
        ck_attr_get_f64(g, "valid_perplexity", &m->valid_perplexity, err, errlen) ||
        ck_attr_get_i64(g, "valid_tokens", &m->valid_tokens, 1, err, errlen) ||
        ck_attr_get_f64(g, "train_seconds", &m->train_seconds, err, errlen) ||
        ck_attr_get_f64(g, "tokens_per_second", &m->tokens_per_second, err, errlen) ||
        ck_attr_get_str(g, "stop_reason", m->stop_reason, sizeof m->stop_reason, err, errlen))
        return -1;
    return m->valid_tokens < 0 ? flas_fail(err, errlen, "negative valid_tokens") : 0;
}

static int read_group(hid_t fid, const char *name, int (*fn)(hid_t, void *, char *, size_t), void *out,
                      const char *path, char *err, size_t errlen)
{
    char why[CK_ERR_MAX];
    hid_t g = H5Gopen2(fid, name, H5P_DEFAULT);
    int rc = g < 0 ? (snprintf(why, sizeof why, "cannot open"), -1) : fn(g, out, why, sizeof why);
    if (g >= 0)
        H5Gclose(g);
    return rc ? flas_fail(err, errlen, "%s: %s: %s", path, name, why) : 0;
}

static int opt_fn(hid_t g, void *o, char *e, size_t n) { return read_optimizer(g, o, e, n); }
static int train_fn(hid_t g, void *o, char *e, size_t n) { return read_train(g, o, e, n); }
static int server_fn(hid_t g, void *o, char *e, size_t n) { return ck_get_server_state(g, o, e, n); }
static int metrics_fn(hid_t g, void *o, char *e, size_t n) { return read_metrics(g, o, e, n); }

/* Everything about the file except tensor data. Leaves the file open in *fid on success. */
static int validate(const char *path, validated *v, hid_t *fid)
{
    char *err = v->err;
    size_t errlen = sizeof v->err;
    *fid = -1;
    if (check_file(path, err, errlen))
        return -1;
    hid_t fapl = ck_fapl(MPI_COMM_NULL);
    *fid = fapl < 0 ? -1 : H5Fopen(path, H5F_ACC_RDONLY, fapl);
    char detail[256];
    ck_h5_detail(detail, sizeof detail); /* before the next HDF5 call clears the error stack */
    if (fapl >= 0)
        H5Pclose(fapl);
    if (*fid < 0) {
        if (strstr(detail, "truncated"))
            return flas_fail(err, errlen, "%s: truncated file (HDF5: %s)", path, detail);
        return flas_fail(err, errlen, "%s: damaged HDF5 file, cannot open it (HDF5: %s)", path, detail);
    }
    /* Another kind of HDF5 file altogether gets the plainer message; then where the bytes come from,
     * before anything else is read: see checkpoint_gate.c. */
    htri_t has_format = H5Aexists_by_name(*fid, "/", "format", H5P_DEFAULT);
    if (has_format <= 0) {
        H5Fclose(*fid);
        *fid = -1;
        return has_format < 0 ? flas_fail(err, errlen, "%s: damaged HDF5 file: cannot read the root group", path)
                              : flas_fail(err, errlen, "%s: not a FLaS checkpoint (HDF5 file without a 'format' "
                                        "attribute)", path);
    }
    if (ck_gate(*fid, path, err, errlen)) {
        H5Fclose(*fid);
        *fid = -1;
        return -1;
    }
    hid_t root = H5Gopen2(*fid, "/", H5P_DEFAULT);
    int rc = root < 0 ? flas_fail(err, errlen, "%s: damaged HDF5 file (no root group)", path) : 0;
    if (rc == 0)
        rc = check_strings(root, path, err, errlen);
    if (rc == 0)
        rc = read_meta(root, path, &v->meta, err, errlen);
    if (root >= 0)
        H5Gclose(root);
    flas_param_table t = {0};
    if (rc == 0 && flas_param_table_init(&t, &v->meta.cfg, 0, 1, err, errlen))
        rc = -1;
    /* Which optional parts exist; pairs that belong together must come together. */
    static const struct { const char *group; unsigned bit; } parts[] = {
        {"/params", FLAS_CKPT_HAS(FLAS_CKPT_PARAMS)},    {"/optimizer/m", FLAS_CKPT_HAS(FLAS_CKPT_ADAM_M)},
        {"/optimizer/v", FLAS_CKPT_HAS(FLAS_CKPT_ADAM_V)}, {"/server/m", FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M)},
        {"/server/v", FLAS_CKPT_HAS(FLAS_CKPT_SERVER_V)}, {"/train_state", FLAS_CKPT_TRAIN_STATE},
        {"/server", FLAS_CKPT_SERVER_STATE},              {"/provenance", FLAS_CKPT_PROVENANCE},
        {"/metrics", FLAS_CKPT_METRICS},                  {"/update", FLAS_CKPT_UPDATE},
        {"/update_scale", CK_HAS_SCALE}};
    v->contents = 0;
    for (size_t i = 0; rc == 0 && i < sizeof parts / sizeof parts[0]; i++) {
        int e = exists(*fid, parts[i].group);
        if (e < 0)
            rc = flas_fail(err, errlen, "%s: damaged HDF5 file: cannot look up %s", path, parts[i].group);
        else if (e)
            v->contents |= parts[i].bit;
    }
    if (rc == 0 && (v->meta.update != FLAS_UPDATE_FULL || (v->contents & (FLAS_CKPT_UPDATE | CK_HAS_SCALE)))) {
        if (v->meta.update == FLAS_UPDATE_FULL)
            rc = flas_fail(err, errlen, "%s: /update without update_encoding", path);
        else
            rc = check_update(*fid, path, &v->meta, v->contents, &t, err, errlen);
        if (rc == 0 && (v->contents & FLAS_CKPT_METRICS))
            rc = read_group(*fid, "/metrics", metrics_fn, &v->metrics, path, err, errlen);
        v->contents &= ~CK_HAS_SCALE;
        flas_param_table_free(&t);
        if (rc) {
            H5Fclose(*fid);
            *fid = -1;
        }
        return rc;
    }
    if (rc == 0 && !(v->contents & FLAS_CKPT_HAS(FLAS_CKPT_PARAMS)))
        rc = flas_fail(err, errlen, "%s: no /params group (no model weights)", path);
    if (rc == 0 && !(v->contents & FLAS_CKPT_HAS(FLAS_CKPT_ADAM_M)) != !(v->contents & FLAS_CKPT_HAS(FLAS_CKPT_ADAM_V)))
        rc = flas_fail(err, errlen, "%s: optimizer state has only one of the AdamW moments m, v", path);
    if (rc == 0 && (v->contents & FLAS_CKPT_HAS(FLAS_CKPT_ADAM_M)))
        rc = read_group(*fid, "/optimizer", opt_fn, &v->opt, path, err, errlen);
    for (int s = 0; rc == 0 && s < FLAS_CKPT_N_SECTIONS; s++)
        if (v->contents & FLAS_CKPT_HAS(s))
            rc = check_section(*fid, path, (flas_ckpt_section)s, &t, err, errlen);
    if (rc == 0 && (v->contents & FLAS_CKPT_TRAIN_STATE))
        rc = read_group(*fid, "/train_state", train_fn, &v->train, path, err, errlen);
    if (rc == 0 && (v->contents & FLAS_CKPT_SERVER_STATE))
        rc = read_group(*fid, "/server", server_fn, &v->server, path, err, errlen);
    if (rc == 0 && (v->contents & FLAS_CKPT_METRICS))
        rc = read_group(*fid, "/metrics", metrics_fn, &v->metrics, path, err, errlen);
    flas_param_table_free(&t);
    if (rc) {
        H5Fclose(*fid);
        *fid = -1;
    }
    return rc;
}

flas_ckpt_reader *flas_ckpt_open(const char *path, MPI_Comm comm, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    flas_ckpt_reader *r = calloc(1, sizeof *r);
    validated *v = calloc(1, sizeof *v);
    if (!r || !v) {
        flas_fail(err, errlen, "%s: out of memory", path);
        free(r);
        free(v);
        ck_quiet_end(&q);
        return NULL;
    }
    ck_file *f = &r->f;
    f->fid = f->cache_dset = -1;
    f->dxpl = H5P_DEFAULT;
    f->cache_section = f->cache_tensor = -1;
    f->comm = comm;
    f->size = 1;
    snprintf(f->path, sizeof f->path, "%s", path);
    if (comm != MPI_COMM_NULL) {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) {
            flas_fail(err, errlen, "%s: parallel checkpoint read before MPI_Init", path);
            goto fail;
        }
        MPI_Comm_rank(comm, &f->rank);
        MPI_Comm_size(comm, &f->size);
    }
    /* Rank 0 validates with the serial driver and tells the others: one reader of the metadata, and no
     * rank can disagree about whether the file is good. */
    hid_t serial_fid = -1;
    if (f->rank == 0)
        v->ok = validate(path, v, &serial_fid) == 0;
    if (comm != MPI_COMM_NULL) {
        if (serial_fid >= 0)
            H5Fclose(serial_fid);
        serial_fid = -1;
        MPI_Bcast(v, sizeof *v, MPI_BYTE, 0, comm);
    }
    if (!v->ok) {
        flas_fail(err, errlen, "%s", v->err);
        goto fail;
    }
    r->meta = v->meta;
    r->contents = v->contents;
    r->opt = v->opt;
    r->train = v->train;
    r->server = v->server;
    r->metrics = v->metrics;
    char why[CK_ERR_MAX];
    int ok = flas_param_table_init(&f->table, &r->meta.cfg, 0, 1, why, sizeof why) == 0;
    if (ok && comm == MPI_COMM_NULL) {
        f->fid = serial_fid;
    } else if (ok) {
        hid_t fapl = ck_fapl(comm);
        f->fid = fapl < 0 ? -1 : H5Fopen(path, H5F_ACC_RDONLY, fapl);
        char detail[256];
        ck_h5_detail(detail, sizeof detail);
        if (fapl >= 0)
            H5Pclose(fapl);
        f->dxpl = ck_dxpl();
        if (f->fid < 0) {
            snprintf(why, sizeof why, "%s: parallel open failed (HDF5: %s)", path, detail);
            ok = 0;
        }
        int all = ok;
        MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, comm);
        if (ok && !all)
            snprintf(why, sizeof why, "%s: parallel open failed on another rank", path);
        ok = all;
        /* The file at path may have been replaced since rank 0 validated it: the gate again, on what every
         * rank now has open (collective metadata reads, so all ranks walk it together). */
        if (ok) {
            ok = ck_gate(f->fid, path, why, sizeof why) == 0;
            MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, comm);
            if (ok && !all)
                snprintf(why, sizeof why, "%s: refused by another rank's checkpoint gate", path);
            ok = all;
        }
    }
    if (!ok) {
        flas_fail(err, errlen, "%s", why);
        flas_ckpt_close(r);
        r = NULL;
    }
    free(v);
    ck_quiet_end(&q);
    return r;
fail:
    free(v);
    if (r)
        flas_ckpt_close(r);
    ck_quiet_end(&q);
    return NULL;
}

void flas_ckpt_close(flas_ckpt_reader *r)
{
    if (!r)
        return;
    ck_quiet q;
    ck_quiet_begin(&q);
    ck_drop_cache(&r->f);
    if (r->f.fid >= 0)
        H5Fclose(r->f.fid);
    if (r->f.dxpl >= 0 && r->f.dxpl != H5P_DEFAULT)
        H5Pclose(r->f.dxpl);
    flas_param_table_free(&r->f.table);
    ck_buf_free(&r->codes);
    ck_buf_free(&r->scales);
    free(r);
    ck_quiet_end(&q);
}

const flas_ckpt_meta *flas_ckpt_meta_of(const flas_ckpt_reader *r) { return &r->meta; }
unsigned flas_ckpt_contents(const flas_ckpt_reader *r) { return r->contents; }
const flas_param_table *flas_ckpt_tensors(const flas_ckpt_reader *r) { return &r->f.table; }

int flas_ckpt_expect_config(const flas_ckpt_reader *r, const flas_config *want, char *err, size_t errlen)
{
    char what[128];
    if (ck_same_config(&r->meta.cfg, want, what, sizeof what))
        return flas_fail(err, errlen, "%s: model config differs from the expected one: %s (file != expected)",
                       r->f.path, what);
    return 0;
}

/* Local validation, agreement across ranks (and on the tensor), then the collective read. */
static int get_sel(flas_ckpt_reader *r, flas_ckpt_section s, int tensor, int ok, const ck_sel *sel, float *out,
                   char *err, size_t errlen)
{
    ck_file *f = &r->f;
    if (f->comm != MPI_COMM_NULL) {
        int key[3] = {ok ? 0 : 1, (int)s * 1000000 + tensor, -((int)s * 1000000 + tensor)};
        MPI_Allreduce(MPI_IN_PLACE, key, 3, MPI_INT, MPI_MAX, f->comm);
        if (key[0] || key[1] != -key[2]) {
            if (ok)
                flas_fail(err, errlen, "%s: ranks disagree on the get (another rank passed invalid arguments or "
                        "another tensor)", f->path);
            return -1;
        }
    } else if (!ok) {
        return -1;
    }
    return ck_io(f, 0, s, tensor, sel, out, err, errlen);
}

static int locate(flas_ckpt_reader *r, flas_ckpt_section s, const char *name, int *tensor, char *err, size_t errlen)
{
    *tensor = -1;
    if (s < 0 || s >= FLAS_CKPT_N_SECTIONS || !(r->contents & FLAS_CKPT_HAS(s)))
        return flas_fail(err, errlen, "%s: the checkpoint has no %s section", r->f.path, flas_ckpt_section_name(s));
    *tensor = name ? ck_tensor_index(&r->f, name) : -1;
    if (*tensor < 0)
        return flas_fail(err, errlen, "%s: no tensor named '%s' in this model", r->f.path, name ? name : "(null)");
    return 0;
}

int flas_ckpt_get(flas_ckpt_reader *r, flas_ckpt_section section, const char *name, const size_t start[2],
                  const size_t count[2], float *out, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    int tensor;
    ck_sel sel = {0};
    int ok = locate(r, section, name, &tensor, err, errlen) == 0 &&
             ck_sel_box(&r->f.table.tensors[tensor], start, count, &sel, err, errlen) == 0;
    if (ok && sel.n && !out)
        ok = 0, flas_fail(err, errlen, "%s: get of %s without a buffer", r->f.path, name);
    int rc = get_sel(r, section, ok ? tensor : 0, ok, &sel, out, err, errlen);
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_get_elems(flas_ckpt_reader *r, flas_ckpt_section section, const char *name, size_t lo, size_t n,
                        float *out, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    int tensor;
    ck_sel sel = {0};
    int ok = locate(r, section, name, &tensor, err, errlen) == 0;
    if (ok) {
        const flas_tensor *t = &r->f.table.tensors[tensor];
        size_t numel = ck_rows(t) * ck_cols(t);
        if (lo > numel || n > numel - lo)
            ok = 0, flas_fail(err, errlen, "%s: elements [%zu, +%zu) of %s are outside its %zu elements", r->f.path,
                            lo, n, name, numel);
        else if (n && !out)
            ok = 0, flas_fail(err, errlen, "%s: get of %s without a buffer", r->f.path, name);
        else
            ck_sel_range(ck_full_rect(t), lo, n, &sel);
    }
    int rc = get_sel(r, section, ok ? tensor : 0, ok, &sel, out, err, errlen);
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_get_flat(flas_ckpt_reader *r, flas_ckpt_section section, const flas_param_table *t, size_t lo,
                       size_t hi, float *out, char *err, size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    int ok = 1;
    if (section < 0 || section >= FLAS_CKPT_N_SECTIONS || !(r->contents & FLAS_CKPT_HAS(section)))
        ok = 0, flas_fail(err, errlen, "%s: the checkpoint has no %s section", r->f.path, flas_ckpt_section_name(section));
    else if (ck_flat_check(&r->f, t, lo, hi, out != NULL, err, errlen))
        ok = 0;
    if (r->f.comm != MPI_COMM_NULL) {
        int all = ok;
        MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, r->f.comm);
        if (ok && !all)
            flas_fail(err, errlen, "%s: another rank passed invalid arguments to get_flat", r->f.path);
        ok = all;
    }
    int rc = ok ? 0 : -1;
    for (int i = 0; ok && i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        size_t a = lo > x->offset ? lo : x->offset, b = hi < x->offset + x->numel ? hi : x->offset + x->numel;
        ck_sel sel = {0};
        if (a < b)
            ck_sel_range(ck_shard_rect(x), a - x->offset, b - a, &sel);
        if (ck_io(&r->f, 0, section, i, &sel, sel.n ? out + (a - lo) : NULL, err, errlen))
            rc = -1;
    }
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_get_update(flas_ckpt_reader *r, const char *name, size_t lo, size_t n, float *out, char *err,
                         size_t errlen)
{
    ck_quiet q;
    ck_quiet_begin(&q);
    ck_file *f = &r->f;
    const flas_update_enc e = r->meta.update;
    const int block = r->meta.update_block;
    void *codes = NULL;
    float *scales = NULL;
    int rc = 0, tensor = -1;
    size_t numel = 0;
    if (!(r->contents & FLAS_CKPT_UPDATE) || f->comm != MPI_COMM_NULL) {
        rc = flas_fail(err, errlen, "%s: not an update file opened serially (get_update)", f->path);
        goto out;
    }
    if ((tensor = ck_update_tensor(f, name, lo, n, out != NULL, &numel, err, errlen)) < 0) {
        rc = -1;
        goto out;
    }
    const flas_tensor *t = &f->table.tensors[tensor];
    if (n == 0)
        goto out;
    size_t b0 = e == FLAS_UPDATE_INT8 ? lo / (size_t)block : 0;
    size_t nb = e == FLAS_UPDATE_INT8 ? (lo + n - 1) / (size_t)block - b0 + 1 : 0;
    codes = ck_buf_get(&r->codes, n * ck_update_value_size(e));
    scales = ck_buf_get(&r->scales, (nb ? nb : 1) * sizeof *scales);
    if (!codes || !scales) {
        rc = flas_fail(err, errlen, "%s: out of memory", f->path);
        goto out;
    }
    ck_sel sel;
    ck_sel_range(ck_full_rect(t), lo, n, &sel);
    rc = ck_io_as(f, 0, CK_SEC_UPDATE, tensor, ck_update_mem_type(e), &sel, codes, err, errlen);
    if (rc == 0 && nb) {
        ck_sel_range((ck_rect){0, 0, 1, ck_update_blocks(numel, block)}, b0, nb, &sel);
        rc = ck_io_as(f, 0, CK_SEC_UPDATE_SCALE, tensor, H5T_NATIVE_FLOAT, &sel, scales, err, errlen);
        /* A scale is max|delta| / 127 of its block: a finite number >= 0. Anything else is a damaged or
         * forged file, and would spread NaN or Inf over a whole block of the model. */
        for (size_t i = 0; rc == 0 && i < nb; i++)
            if (!(scales[i] >= 0.0f && scales[i] <= 3.4028234663852886e38f))
                rc = flas_fail(err, errlen, "%s: update_scale/%s[%zu] is %g, not a finite number >= 0", f->path, name,
                               b0 + i, (double)scales[i]);
    }
    if (rc == 0)
        flas_update_decode(e, block, lo, codes, scales, n, out);
    /* Codes the encoder never writes: int8 -128, bf16 infinities and NaNs. One branch-free pass
     * first; the culprit is looked for only in a bad file. */
    int bad = 0;
    if (rc == 0 && e == FLAS_UPDATE_INT8) {
        const int8_t *c8 = codes;
        for (size_t i = 0; i < n; i++)
            bad |= c8[i] == -128;
        for (size_t i = 0; bad && i < n; i++)
            if (c8[i] == -128) {
                rc = flas_fail(err, errlen, "%s: update/%s[%zu] is -128, outside the int8 code range -127..127",
                               f->path, name, lo + i);
                break;
            }
    } else if (rc == 0) {
        const uint16_t *c16 = codes;
        for (size_t i = 0; i < n; i++)
            bad |= (c16[i] & 0x7f80u) == 0x7f80u;
        for (size_t i = 0; bad && i < n; i++)
            if ((c16[i] & 0x7f80u) == 0x7f80u) {
                rc = flas_fail(err, errlen, "%s: update/%s[%zu] is not a finite bf16 value", f->path, name, lo + i);
                break;
            }
    }
out:
    ck_quiet_end(&q);
    return rc;
}

int flas_ckpt_get_optimizer(const flas_ckpt_reader *r, flas_ckpt_optimizer *o, char *err, size_t errlen)
{
    if (!(r->contents & FLAS_CKPT_OPTIMIZER))
        return flas_fail(err, errlen, "%s: the checkpoint holds no optimizer state", r->f.path);
    *o = r->opt;
    return 0;
}

int flas_ckpt_get_train_state(const flas_ckpt_reader *r, flas_train_state *s, char *err, size_t errlen)
{
    if (!(r->contents & FLAS_CKPT_TRAIN_STATE))
        return flas_fail(err, errlen, "%s: the checkpoint holds no training state", r->f.path);
    *s = r->train;
    return 0;
}

int flas_ckpt_get_server_state(const flas_ckpt_reader *r, flas_server_state *s, char *err, size_t errlen)
{
    if (!(r->contents & FLAS_CKPT_SERVER_STATE))
        return flas_fail(err, errlen, "%s: the checkpoint holds no server state", r->f.path);
    *s = r->server;
    return 0;
}

int flas_ckpt_get_metrics(const flas_ckpt_reader *r, flas_ckpt_metrics *m, char *err, size_t errlen)
{
    if (!(r->contents & FLAS_CKPT_METRICS))
        return flas_fail(err, errlen, "%s: the checkpoint holds no metrics", r->f.path);
    *m = r->metrics;
    return 0;
}
