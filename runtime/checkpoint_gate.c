/* The checkpoint gate: what a FLaS reader accepts from HDF5 before it reads anything else.
 *
 * Every checkpoint is hostile input: a site hands the coordinator its local checkpoint, and the
 * coordinator hands every site the global one. HDF5 can take a dataset's bytes from places other than
 * the file itself (external raw-data storage, external links, virtual datasets over other files,
 * dynamically loaded filter plugins), and a tiny dataset can ask for a huge chunk buffer. Any of these
 * would let one party read the other's files into a model that then travels, or exhaust its memory.
 * The validators after this gate check names, shapes and dtypes; this one checks WHERE the bytes come
 * from, walking every link and object header before a single attribute or tensor is read.
 *
 * The rule (docs/checkpoint-format.md, "What a reader accepts"): the structure FLaS writes and nothing
 * else. Superblock version 2 or later and version-2 object headers (the checksummed metadata the format
 * promises); hard links only, one per object; groups and float32 datasets of rank 1 or 2 only (int8 or
 * bf16 bits under /update); each
 * dataset contiguous or chunked inside this file, no external storage, no virtual mapping; filters
 * from an allow-list only, with every chunk no larger than the dataset itself. */
#include "checkpoint_internal.h"

#include <H5PLpublic.h>
#include <stdio.h>
#include <string.h>

/* A FLaS file has 5 sections x (9 x layers + 3) tensors plus a dozen groups: this bound is far above
 * any real model (FLAS_CKPT_MAX_LAYERS) and stops a file from making the walk itself the attack. */
#define GATE_MAX_OBJECTS (5 * (9 * FLAS_CKPT_MAX_LAYERS + 3) + 64)

typedef struct gate {
    const char *path;
    char *err;
    size_t errlen;
    long objects;
} gate;

static const char *link_type_name(H5L_type_t t)
{
    switch (t) {
    case H5L_TYPE_SOFT: return "a soft link";
    case H5L_TYPE_EXTERNAL: return "an external link (to another file)";
    default: return "a user-defined link";
    }
}

/* Filters FLaS or a careful third-party writer may use: lossless, built into libhdf5, bounded output.
 * Anything else (szip, n-bit, scale-offset, or a plugin, which would load code) is refused. */
static int filter_allowed(H5Z_filter_t id)
{
    return id == H5Z_FILTER_DEFLATE || id == H5Z_FILTER_SHUFFLE || id == H5Z_FILTER_FLETCHER32;
}

static int gate_dataset(hid_t d, const char *name, gate *g)
{
    hid_t dcpl = H5Dget_create_plist(d), ty = H5Dget_type(d), sp = H5Dget_space(d);
    int rc = 0;
    if (dcpl < 0 || ty < 0 || sp < 0) {
        rc = flas_fail(g->err, g->errlen, "%s: damaged HDF5 file: /%s: unreadable dataset header", g->path, name);
        goto out;
    }
    /* The layout first: a virtual dataset or external storage is refused before anything else is
     * asked of it. */
    H5D_layout_t layout = H5Pget_layout(dcpl);
    if (layout == H5D_VIRTUAL) {
        rc = flas_fail(g->err, g->errlen, "%s: /%s is a virtual dataset (its data would come from other files); "
                     "refused", g->path, name);
        goto out;
    }
    int n_ext = H5Pget_external_count(dcpl);
    if (n_ext != 0) {
        rc = flas_fail(g->err, g->errlen, "%s: /%s stores its data in %d external file%s; refused (FLaS checkpoints "
                     "keep every byte inside the file)", g->path, name, n_ext, n_ext == 1 ? "" : "s");
        goto out;
    }
    if (layout != H5D_CONTIGUOUS && layout != H5D_CHUNKED) {
        rc = flas_fail(g->err, g->errlen, "%s: /%s has %s layout; refused (contiguous or chunked only)", g->path, name,
                     layout == H5D_COMPACT ? "compact" : "an unknown");
        goto out;
    }
    /* float32 everywhere; the encoded delta of an update file (/update, flas/update.h) is int8 or the
     * bits of bf16 (uint16). Which of them a file must have is the validator's business. */
    int is_f32 = H5Tget_class(ty) == H5T_FLOAT && (H5Tequal(ty, H5T_IEEE_F32LE) > 0 || H5Tequal(ty, H5T_IEEE_F32BE) > 0);
    int is_code = !strncmp(name, "update/", 7) &&
                  (H5Tequal(ty, H5T_STD_I8LE) > 0 || H5Tequal(ty, H5T_STD_I8BE) > 0 || H5Tequal(ty, H5T_STD_U16LE) > 0 ||
                   H5Tequal(ty, H5T_STD_U16BE) > 0);
    if (!is_f32 && !is_code) {
        H5T_class_t cls = H5Tget_class(ty);
        rc = flas_fail(g->err, g->errlen, "%s: tensor %s has dtype %s%zu, expected float32", g->path, name,
                     cls == H5T_FLOAT ? "float" : cls == H5T_INTEGER ? "int" : "non-numeric size ", H5Tget_size(ty) * 8);
        goto out;
    }
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[2] = {0, 0};
    if (H5Sget_simple_extent_type(sp) != H5S_SIMPLE || nd < 1 || nd > 2 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        rc = flas_fail(g->err, g->errlen, "%s: /%s is not a tensor of rank 1 or 2; refused", g->path, name);
        goto out;
    }
    int nf = H5Pget_nfilters(dcpl);
    for (int i = 0; i < nf && rc == 0; i++) {
        unsigned flags = 0, conf = 0;
        size_t ncd = 0;
        char fname[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, NULL, sizeof fname, fname, &conf);
        if (id < 0 || !filter_allowed(id))
            rc = flas_fail(g->err, g->errlen, "%s: /%s uses HDF5 filter %d%s%s%s; refused (allowed: deflate, shuffle, "
                         "fletcher32)", g->path, name, (int)id, fname[0] ? " (" : "", fname, fname[0] ? ")" : "");
    }
    if (rc == 0 && nf > 0 && layout != H5D_CHUNKED)
        rc = flas_fail(g->err, g->errlen, "%s: /%s: filters without chunks", g->path, name);
    if (rc == 0 && layout == H5D_CHUNKED) {
        /* HDF5 allocates a whole chunk to read any part of it: a chunk larger than its tensor turns a few
         * bytes of file into gigabytes of memory. */
        hsize_t cd[2] = {0, 0};
        if (H5Pget_chunk(dcpl, 2, cd) != nd)
            rc = flas_fail(g->err, g->errlen, "%s: /%s: chunk rank differs from the dataset's", g->path, name);
        for (int i = 0; i < nd && rc == 0; i++)
            if (cd[i] < 1 || cd[i] > dims[i])
                rc = flas_fail(g->err, g->errlen, "%s: /%s has chunks of %llu elements along axis %d but only %llu "
                             "there; refused (a chunk may not exceed its tensor)", g->path, name,
                             (unsigned long long)cd[i], i, (unsigned long long)dims[i]);
    }
out:
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (ty >= 0)
        H5Tclose(ty);
    if (sp >= 0)
        H5Sclose(sp);
    return rc;
}

/* One link: hard, to a group or a dataset with a version-2 header and no second name. */
static herr_t gate_link(hid_t grp, const char *name, const H5L_info_t *info, void *arg)
{
    gate *g = arg;
    if (++g->objects > GATE_MAX_OBJECTS)
        return flas_fail(g->err, g->errlen, "%s: more than %d objects; refused", g->path, GATE_MAX_OBJECTS);
    if (info->type != H5L_TYPE_HARD)
        return flas_fail(g->err, g->errlen, "%s: /%s is %s; refused (FLaS checkpoints hold hard links only)", g->path,
                       name, link_type_name(info->type));
    H5O_info_t oi;
    if (H5Oget_info_by_name2(grp, name, &oi, H5O_INFO_BASIC | H5O_INFO_HDR, H5P_DEFAULT) < 0)
        return flas_fail(g->err, g->errlen, "%s: damaged HDF5 file: /%s: unreadable object header", g->path, name);
    if (oi.hdr.version < 2)
        return flas_fail(g->err, g->errlen, "%s: /%s has a version-%u object header without a checksum; refused "
                       "(write with HDF5 1.8 format or later: h5py libver='v108')", g->path, name, oi.hdr.version);
    if (oi.rc != 1)
        return flas_fail(g->err, g->errlen, "%s: /%s is reachable under %u names; refused (one link per object)",
                       g->path, name, oi.rc);
    if (oi.type == H5O_TYPE_GROUP)
        return 0;
    if (oi.type != H5O_TYPE_DATASET)
        return flas_fail(g->err, g->errlen, "%s: /%s is %s; refused (groups and tensors only)", g->path, name,
                       oi.type == H5O_TYPE_NAMED_DATATYPE ? "a named datatype" : "an unknown object");
    hid_t d = H5Dopen2(grp, name, H5P_DEFAULT);
    if (d < 0)
        return flas_fail(g->err, g->errlen, "%s: damaged HDF5 file: /%s: unreadable dataset", g->path, name);
    int rc = gate_dataset(d, name, g);
    H5Dclose(d);
    return rc;
}

int ck_gate(hid_t fid, const char *path, char *err, size_t errlen)
{
    /* Filters come from libhdf5 alone: never load a plugin named by a file (or by HDF5_PLUGIN_PATH). */
    H5PLset_loading_state(0);
    H5F_info2_t fi;
    if (H5Fget_info2(fid, &fi) < 0)
        return flas_fail(err, errlen, "%s: damaged HDF5 file (no superblock information)", path);
    if (fi.super.version < 2)
        return flas_fail(err, errlen, "%s: HDF5 superblock version %u carries no checksums; refused (FLaS checkpoints "
                       "use the HDF5 1.8 format or later: h5py libver='v108')", path, fi.super.version);
    H5O_info_t oi;
    if (H5Oget_info_by_name2(fid, "/", &oi, H5O_INFO_HDR, H5P_DEFAULT) < 0) {
        char detail[256];
        ck_h5_detail(detail, sizeof detail);
        return flas_fail(err, errlen, "%s: damaged HDF5 file: cannot read the root group's header (HDF5: %s)", path, detail);
    }
    if (oi.hdr.version < 2)
        return flas_fail(err, errlen, "%s: the root group has no checksummed (version-2) object header; refused", path);
    gate g = {path, err, errlen, 0};
    hid_t root = H5Gopen2(fid, "/", H5P_DEFAULT);
    if (root < 0)
        return flas_fail(err, errlen, "%s: damaged HDF5 file (no root group)", path);
    if (err && errlen)
        err[0] = '\0';
    herr_t rc = H5Lvisit(root, H5_INDEX_NAME, H5_ITER_INC, gate_link, &g);
    H5Gclose(root);
    if (rc < 0 && (!err || !err[0]))
        return flas_fail(err, errlen, "%s: damaged HDF5 file: cannot walk its groups", path);
    return rc == 0 ? 0 : -1;
}
