/* FLaS checkpoints and update files as every reader takes them (a site's local checkpoint at the
 * coordinator, a global at every site): flas_ckpt_open (runtime/checkpoint_read.c: the file checks, the
 * gate of runtime/checkpoint_gate.c, the format, config and metadata validation, every section's tensors
 * and the state groups), then a read of every tensor (flas_ckpt_get_elems / get / get_flat, and
 * flas_ckpt_get_update for update files, include/flas/update.h) and of the optional states.
 *
 * HDF5's own on-disk parser is NOT fuzzed with raw bytes (what that finds are libhdf5 bugs FLaS cannot
 * fix). The input is a compact description from which this harness GENERATES a well-formed HDF5 file
 * with the HDF5 API; the fuzzer varies what a hostile or broken writer can put in a well-formed file:
 * attribute values, types, element counts and presence, dataset dtypes, shapes, layouts (contiguous,
 * chunked, compact, external, virtual), chunk sizes and filters, tensor values (NaN, Inf, -128 codes),
 * links of every kind, named datatypes, stray objects, superblock versions and user blocks.
 *
 * Input: 4 header bytes, then mutation records applied to the baseline file the header describes.
 *   byte 0  kind % 3: 0 checkpoint, 1 int8 update, 2 bf16 update
 *   byte 1  bits: 0 optimizer (/optimizer + m, v), 1 server moments (/server/m, v), 2 train state,
 *           3 server state, 4 metrics, 5 provenance, 6 role global, 7 an empty base_sha256
 *   byte 2  bits: 0 tied embeddings, 1 n_kv_heads 1 (else 2), 2 two layers (else one), 3-4 int8 block
 *           (64, 128, 256, 96)
 *   byte 3  bits: 0-1 libver low bound (v18, latest, earliest), 2-3 user block (0, 512, 1024, 4096)
 *   records of 8 bytes: op, a, b, c, then a 32-bit value v (little-endian); op 4 (string) is followed by
 *           a length byte and the string's bytes. See apply() for the ops.
 * With no records the file is a valid checkpoint or update and must open and read back exactly. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/checkpoint.h"
#include "flas/model.h"
#include "flas/update.h"
#include "support.h"

/* HDF5 1.10 keeps library-lifetime objects and leaks some on the damaged files it refuses (HDF5 issue
 * #3790); OpenSSL's one-time initialisation; as tests/lsan.supp. FLaS's own code is never listed. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libhdf5\nleak:libcrypto\n"; }

/* ---- the description ------------------------------------------------------------------------------ */

enum { G_ROOT, G_OPT, G_TRAIN, G_SERVER, G_METRICS, G_PROV, N_GROUPS };
static const char *const group_path[N_GROUPS] = {"/", "/optimizer", "/train_state", "/server", "/metrics",
                                                 "/provenance"};

enum { T_I8, T_I32, T_I64, T_U64, T_F32, T_F64, T_VSTR, T_FSTR, T_FSTR_SPACE, N_TYPES };
#define VAL_MAX 8
#define STR_MAX 96

typedef struct attr_t {
    int group, type, n, present;
    int space;               /* 0: as the writer (scalar for 1, simple 1-D otherwise), 1: simple 1-D, 2: null */
    char name[24];
    int64_t i[VAL_MAX];
    double d[VAL_MAX];
    char s[4][STR_MAX + 1];
} attr_t;

enum { S_PARAMS, S_ADAM_M, S_ADAM_V, S_SERVER_M, S_SERVER_V, S_UPDATE, S_SCALE, N_SECTIONS };
static const char *const section_path[N_SECTIONS] = {"/params",   "/optimizer/m", "/optimizer/v", "/server/m",
                                                     "/server/v", "/update",      "/update_scale"};

enum { D_F32LE, D_F32BE, D_F64, D_I8, D_U16, D_I16, D_I32, D_U8, D_STR, N_DTYPES };
enum { L_CONTIG, L_CHUNK, L_COMPACT, L_EXTERNAL, L_VIRTUAL, N_LAYOUTS };
enum { F_DEFLATE = 1, F_SHUFFLE = 2, F_FLETCHER = 4, F_NBIT = 8, F_SCALEOFFSET = 16 };

#define MAX_TENSORS (3 + 9 * 2)
#define MAX_POKES 4
#define MAX_ELEMS (1u << 16)  /* the harness writes no tensor bigger than this (the model is tiny) */

typedef struct dset_t {
    int present, dtype, ndim, unlimited, layout;
    unsigned filters;
    hsize_t dims[2], chunk[2];
    int n_pokes;
    uint32_t poke_at[MAX_POKES], poke_bits[MAX_POKES];
} dset_t;

enum {
    E_SOFT = 1, E_EXTERNAL = 2, E_HARD_ALIAS = 4, E_NAMED_TYPE = 8, E_EXTRA_DSET = 16, E_EXTRA_GROUP = 32,
    E_ROOT_DSET = 64, E_DEEP = 128
};

typedef struct desc {
    int kind, libver, userblock, block;
    flas_config cfg;
    flas_param_table tab;
    int n_attrs;
    attr_t attr[96];
    int section_on[N_SECTIONS];
    dset_t dset[N_SECTIONS][MAX_TENSORS];
    int group_on[N_GROUPS];
    unsigned extras;
    int extras_at;           /* which section group the extra objects go into */
} desc;

static desc D;

static attr_t *add_attr(int group, const char *name, int type, int n)
{
    if (D.n_attrs == (int)(sizeof D.attr / sizeof D.attr[0]))
        fz_fail("attribute table full");
    attr_t *a = &D.attr[D.n_attrs++];
    memset(a, 0, sizeof *a);
    a->group = group;
    a->type = type;
    a->n = n;
    a->present = 1;
    snprintf(a->name, sizeof a->name, "%s", name);
    return a;
}

static void add_int(int group, const char *name, int type, int64_t v)
{
    attr_t *a = add_attr(group, name, type, 1);
    a->i[0] = v;
    a->d[0] = (double)v;
}

static void add_real(int group, const char *name, int type, double v)
{
    attr_t *a = add_attr(group, name, type, 1);
    a->d[0] = v;
    a->i[0] = isfinite(v) && fabs(v) < 9e18 ? (int64_t)v : 0;
}

static void add_str(int group, const char *name, const char *v)
{
    attr_t *a = add_attr(group, name, T_VSTR, 1);
    snprintf(a->s[0], sizeof a->s[0], "%s", v);
}

static const char *const base_sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* The baseline: exactly what FLaS's writer puts in such a file. */
static void baseline(const uint8_t h[4])
{
    flas_param_table_free(&D.tab);
    memset(&D, 0, sizeof D);
    D.kind = h[0] % 3;
    const unsigned parts = D.kind ? h[1] & 0x10 : h[1]; /* update files: metrics only */
    D.libver = h[3] & 3;
    D.userblock = (h[3] >> 2) & 3;
    static const int blocks[4] = {64, 128, 256, 96};
    D.block = D.kind == 1 ? blocks[(h[2] >> 3) & 3] : 0;
    D.cfg = (flas_config){8, (h[2] & 4) ? 2 : 1, 2, (h[2] & 2) ? 1 : 2, 16, 16, 8, 1e-5f, 10000.0f, h[2] & 1};
    char err[256];
    if (flas_param_table_init(&D.tab, &D.cfg, 0, 1, err, sizeof err))
        fz_fail("baseline config: %s", err);

    add_str(G_ROOT, "format", FLAS_CKPT_FORMAT);
    add_int(G_ROOT, "format_version", T_I32, FLAS_CKPT_VERSION);
    add_str(G_ROOT, "rope_convention", FLAS_CKPT_ROPE);
    add_int(G_ROOT, "dim", T_I32, D.cfg.dim);
    add_int(G_ROOT, "n_layers", T_I32, D.cfg.n_layers);
    add_int(G_ROOT, "n_heads", T_I32, D.cfg.n_heads);
    add_int(G_ROOT, "n_kv_heads", T_I32, D.cfg.n_kv_heads);
    add_int(G_ROOT, "hidden_dim", T_I32, D.cfg.hidden_dim);
    add_int(G_ROOT, "vocab_size", T_I32, D.cfg.vocab_size);
    add_int(G_ROOT, "seq_len", T_I32, D.cfg.seq_len);
    add_int(G_ROOT, "tied_embeddings", T_I32, D.cfg.tied_embeddings);
    add_real(G_ROOT, "norm_eps", T_F32, D.cfg.norm_eps);
    add_real(G_ROOT, "rope_theta", T_F32, D.cfg.rope_theta);
    add_str(G_ROOT, "role", (h[1] & 0x40) && !D.kind ? "global" : "local");
    add_int(G_ROOT, "round", T_I64, 3);
    add_str(G_ROOT, "site", "site-a");
    add_int(G_ROOT, "step", T_I64, 30);
    add_int(G_ROOT, "tokens_trained", T_I64, 3007);
    add_str(G_ROOT, "base_sha256", (h[1] & 0x80) && !D.kind ? "" : base_sha);
    add_int(G_ROOT, "tp_size", T_I32, 1);
    add_int(G_ROOT, "dp_size", T_I32, 1);
    add_int(G_ROOT, "created_unix", T_I64, 1700000000);
    add_str(G_ROOT, "created_utc", "2023-11-14T22:13:20Z");
    add_str(G_ROOT, "writer", "FLaS fuzz");
    if (D.kind) {
        add_str(G_ROOT, "update_encoding", D.kind == 1 ? "int8" : "bf16");
        add_int(G_ROOT, "update_block", T_I32, D.block);
    }
    add_int(G_ROOT, "complete", T_I32, 1);

    D.group_on[G_ROOT] = 1;
    D.group_on[G_OPT] = (parts & 1) != 0;
    add_int(G_OPT, "step", T_I64, 30);
    add_real(G_OPT, "lr", T_F32, 3e-4);
    add_real(G_OPT, "beta1", T_F32, 0.9);
    add_real(G_OPT, "beta2", T_F32, 0.95);
    add_real(G_OPT, "eps", T_F32, 1e-8);
    add_real(G_OPT, "weight_decay", T_F32, 0.1);

    D.group_on[G_TRAIN] = (parts & 4) != 0;
    add_int(G_TRAIN, "epoch", T_I64, 1);
    add_int(G_TRAIN, "shard", T_I64, 2);
    add_int(G_TRAIN, "offset", T_I64, 12345);
    add_int(G_TRAIN, "samples", T_I64, 99);
    add_int(G_TRAIN, "rng_seed", T_U64, 42);
    attr_t *a = add_attr(G_TRAIN, "rng_state", T_U64, 4);
    for (int k = 0; k < 4; k++)
        a->i[k] = k + 1, a->d[k] = k + 1;
    a = add_attr(G_TRAIN, "loader_cursor", T_U64, FLAS_CKPT_CURSOR_WORDS);
    for (int k = 0; k < FLAS_CKPT_CURSOR_WORDS; k++)
        a->i[k] = 7 * k, a->d[k] = 7 * k;

    D.group_on[G_SERVER] = (parts & 0xa) != 0;
    add_str(G_SERVER, "strategy", "fedadam");
    add_int(G_SERVER, "round", T_I64, 3);
    add_int(G_SERVER, "step", T_I64, 4);
    add_int(G_SERVER, "n_sites", T_I64, 2);
    a = add_attr(G_SERVER, "site_names", T_VSTR, 2);
    snprintf(a->s[0], sizeof a->s[0], "site-a");
    snprintf(a->s[1], sizeof a->s[1], "site-b");
    a = add_attr(G_SERVER, "site_rounds", T_I64, 2);
    a->i[0] = 3, a->i[1] = 1, a->d[0] = 3, a->d[1] = 1;
    a = add_attr(G_SERVER, "site_tokens", T_I64, 2);
    a->i[0] = 3000, a->i[1] = 5, a->d[0] = 3000, a->d[1] = 5;
    add_real(G_SERVER, "dp_rho", T_F64, 0.5);
    D.attr[D.n_attrs - 1].present = 0; /* the privacy ledger: only globals made with DP carry it */
    add_int(G_SERVER, "dp_rounds", T_I64, 2);
    D.attr[D.n_attrs - 1].present = 0;

    D.group_on[G_METRICS] = (parts & 0x10) != 0;
    add_real(G_METRICS, "train_loss", T_F64, 2.5);
    add_real(G_METRICS, "train_loss_last", T_F64, 2.25);
    add_real(G_METRICS, "valid_loss", T_F64, NAN);
    add_real(G_METRICS, "valid_perplexity", T_F64, NAN);
    add_int(G_METRICS, "valid_tokens", T_I64, 0);
    add_real(G_METRICS, "train_seconds", T_F64, 12.5);
    add_real(G_METRICS, "tokens_per_second", T_F64, 1000.5);
    add_str(G_METRICS, "stop_reason", "steps");

    D.group_on[G_PROV] = (parts & 0x20) != 0;
    add_str(G_PROV, "tool", "flas-aggregate fuzz");

    if (D.kind == 0) {
        D.section_on[S_PARAMS] = 1;
        D.section_on[S_ADAM_M] = D.section_on[S_ADAM_V] = (parts & 1) != 0;
        D.section_on[S_SERVER_M] = D.section_on[S_SERVER_V] = (parts & 2) != 0;
    } else {
        D.section_on[S_UPDATE] = 1;
        D.section_on[S_SCALE] = D.kind == 1;
    }
    for (int s = 0; s < N_SECTIONS; s++)
        for (int t = 0; t < D.tab.n_tensors; t++) {
            const flas_tensor *x = &D.tab.tensors[t];
            dset_t *ds = &D.dset[s][t];
            ds->present = 1;
            ds->dtype = s == S_UPDATE ? (D.kind == 1 ? D_I8 : D_U16) : D_F32LE;
            ds->ndim = x->ndim;
            ds->dims[0] = x->full_shape[0];
            ds->dims[1] = x->full_shape[1];
            if (s == S_SCALE) {
                ds->ndim = 1;
                ds->dims[0] = (x->numel + (size_t)D.block - 1) / (size_t)(D.block ? D.block : 1);
                ds->dims[1] = 0;
            }
            ds->layout = L_CONTIG;
        }
    D.extras_at = S_PARAMS;
}

/* ---- the mutations -------------------------------------------------------------------------------- */

static int pristine; /* no mutation applied: the file must be accepted */

static void apply(fz_bytes *b)
{
    const unsigned op = fz_u8(b), x = fz_u8(b), y = fz_u8(b), z = fz_u8(b);
    const uint32_t v = fz_u32(b);
    attr_t *a = &D.attr[x % D.n_attrs];
    int s = x % N_SECTIONS, t = D.tab.n_tensors ? (int)(y % (unsigned)D.tab.n_tensors) : 0;
    dset_t *ds = &D.dset[s][t];
    if (op % 20 != 19)
        pristine = 0;
    switch (op % 20) {
    case 0: /* an attribute's integer value (element z) */
        a->i[z % VAL_MAX] = (int32_t)v;
        a->d[z % VAL_MAX] = (int32_t)v;
        break;
    case 1: /* an attribute's type */
        a->type = (int)(y % N_TYPES);
        break;
    case 2: /* an attribute present or not */
        a->present = !a->present;
        break;
    case 3: /* an attribute's element count, and dataspace (as written, simple, null) */
        a->n = (int)(y % (VAL_MAX + 1));
        a->space = (int)(z % 3);
        break;
    case 4: { /* an attribute's string value (element z) */
        fz_str(b, a->s[z % 4], STR_MAX);
        break;
    }
    case 5: { /* an attribute's real value, from the 32 bits of a float */
        float f;
        memcpy(&f, &v, 4);
        a->d[z % VAL_MAX] = f;
        break;
    }
    case 6: /* an attribute's 64-bit value: v as the high word */
        a->i[z % VAL_MAX] = (int64_t)((uint64_t)v << 32 | y);
        a->d[z % VAL_MAX] = (double)a->i[z % VAL_MAX];
        break;
    case 7: /* a dataset's dtype */
        ds->dtype = (int)(z % N_DTYPES);
        break;
    case 8: /* a dataset's shape: one dimension set, or its rank */
        if (z & 0x80)
            ds->ndim = (int)(z % 4);
        else
            ds->dims[z & 1] = v % 70000;
        break;
    case 9: /* a dataset's layout, chunk shape and unlimited maximum */
        ds->layout = (int)(z % N_LAYOUTS);
        ds->chunk[0] = v & 0xffff;
        ds->chunk[1] = v >> 16;
        ds->unlimited = (z >> 4) & 1;
        break;
    case 10: /* a dataset's filters */
        ds->filters = z;
        break;
    case 11: /* a dataset present or not */
        ds->present = !ds->present;
        break;
    case 12: /* a value inside a dataset: the raw bits of a float32 (or an integer code) */
        if (ds->n_pokes < MAX_POKES) {
            ds->poke_at[ds->n_pokes] = (uint32_t)z << 8 | y;
            ds->poke_bits[ds->n_pokes++] = v;
        }
        break;
    case 13: /* objects that do not belong: links of other kinds, aliases, named types, strays */
        D.extras ^= z;
        D.extras_at = (int)(y % N_SECTIONS);
        break;
    case 14: /* a whole section present or not */
        D.section_on[s] = !D.section_on[s];
        break;
    case 15: /* a state group present or not */
        D.group_on[x % N_GROUPS] = !D.group_on[x % N_GROUPS];
        break;
    case 16: /* the file: superblock versions and user block */
        D.libver = (int)(z % 3);
        D.userblock = (int)(y % 4);
        break;
    case 17: { /* a new attribute somewhere (an unknown name, or a second one of a known name's spelling) */
        attr_t *n = add_attr((int)(y % N_GROUPS), "", (int)(z % N_TYPES), 1);
        fz_str(b, n->name, sizeof n->name - 1);
        if (!n->name[0])
            snprintf(n->name, sizeof n->name, "extra%u", v % 100);
        n->i[0] = (int32_t)v;
        n->d[0] = (int32_t)v;
        break;
    }
    case 18: /* the same dataset change on every tensor of a section */
        for (int k = 0; k < D.tab.n_tensors; k++) {
            if (z & 1)
                D.dset[s][k].dtype = (int)(y % N_DTYPES);
            if (z & 2)
                D.dset[s][k].layout = (int)(y % N_LAYOUTS), D.dset[s][k].chunk[0] = v & 0xffff,
                D.dset[s][k].chunk[1] = v >> 16;
            if (z & 4)
                D.dset[s][k].filters = v & 0x1f;
        }
        break;
    default: /* 19: nothing */
        break;
    }
}

/* ---- writing the file ----------------------------------------------------------------------------- */

static hid_t str_type(const attr_t *a, size_t *size)
{
    size_t most = 1;
    int n = a->n < 1 ? 1 : a->n > 4 ? 4 : a->n;
    for (int k = 0; k < n; k++)
        most = strlen(a->s[k]) + 1 > most ? strlen(a->s[k]) + 1 : most;
    hid_t t = H5Tcopy(H5T_C_S1);
    if (a->type == T_VSTR) {
        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, H5T_CSET_UTF8);
        *size = sizeof(char *);
    } else {
        /* space-padded: exactly the longest string, no terminator (as Fortran and some tools write) */
        size_t sz = a->type == T_FSTR_SPACE && most > 1 ? most - 1 : most;
        H5Tset_size(t, sz);
        H5Tset_strpad(t, a->type == T_FSTR_SPACE ? H5T_STR_SPACEPAD : H5T_STR_NULLTERM);
        *size = sz;
    }
    return t;
}

static void write_attr(hid_t obj, const attr_t *a)
{
    if (!a->present)
        return;
    int n = a->n;
    hsize_t dim = (hsize_t)(n ? n : 1);
    hid_t sp = a->space == 2 ? H5Screate(H5S_NULL)
               : (a->space == 0 && n <= 1) ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
    size_t count = a->space == 2 ? 0 : n <= 1 ? 1 : (size_t)n;
    hid_t ft = -1, mt = -1;
    void *buf = NULL;
    int64_t ibuf[VAL_MAX];
    uint64_t ubuf[VAL_MAX];
    double dbuf[VAL_MAX];
    const char *sbuf[VAL_MAX];
    char *fbuf = NULL;
    for (size_t k = 0; k < VAL_MAX; k++) {
        ibuf[k] = a->i[k];
        ubuf[k] = (uint64_t)a->i[k];
        dbuf[k] = a->d[k];
        sbuf[k] = a->s[k % 4];
    }
    switch (a->type) {
    case T_I8: ft = H5Tcopy(H5T_STD_I8LE), mt = H5Tcopy(H5T_NATIVE_INT64), buf = ibuf; break;
    case T_I32: ft = H5Tcopy(H5T_STD_I32LE), mt = H5Tcopy(H5T_NATIVE_INT64), buf = ibuf; break;
    case T_I64: ft = H5Tcopy(H5T_STD_I64LE), mt = H5Tcopy(H5T_NATIVE_INT64), buf = ibuf; break;
    case T_U64: ft = H5Tcopy(H5T_STD_U64LE), mt = H5Tcopy(H5T_NATIVE_UINT64), buf = ubuf; break;
    case T_F32: ft = H5Tcopy(H5T_IEEE_F32LE), mt = H5Tcopy(H5T_NATIVE_DOUBLE), buf = dbuf; break;
    case T_F64: ft = H5Tcopy(H5T_IEEE_F64LE), mt = H5Tcopy(H5T_NATIVE_DOUBLE), buf = dbuf; break;
    default: {
        size_t sz;
        ft = str_type(a, &sz);
        mt = H5Tcopy(ft);
        if (a->type == T_VSTR) {
            buf = sbuf;
        } else {
            fbuf = calloc(VAL_MAX, sz);
            if (!fbuf)
                fz_fail("out of memory");
            for (size_t k = 0; k < VAL_MAX; k++) {
                size_t l = strlen(sbuf[k]);
                memcpy(fbuf + k * sz, sbuf[k], l < sz ? l : sz);
                if (a->type == T_FSTR_SPACE)
                    memset(fbuf + k * sz + (l < sz ? l : sz), ' ', sz - (l < sz ? l : sz));
            }
            buf = fbuf;
        }
    }
    }
    /* HDF5 refuses a second attribute of one name: a repeated name keeps the first */
    if (H5Aexists(obj, a->name) == 0) {
        hid_t at = H5Acreate2(obj, a->name, ft, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (at >= 0) {
            if (count)
                H5Awrite(at, mt, buf);
            H5Aclose(at);
        }
    }
    free(fbuf);
    H5Tclose(ft);
    H5Tclose(mt);
    H5Sclose(sp);
}

static hid_t file_type(int dtype)
{
    switch (dtype) {
    case D_F32BE: return H5Tcopy(H5T_IEEE_F32BE);
    case D_F64: return H5Tcopy(H5T_IEEE_F64LE);
    case D_I8: return H5Tcopy(H5T_STD_I8LE);
    case D_U16: return H5Tcopy(H5T_STD_U16LE);
    case D_I16: return H5Tcopy(H5T_STD_I16LE);
    case D_I32: return H5Tcopy(H5T_STD_I32LE);
    case D_U8: return H5Tcopy(H5T_STD_U8LE);
    case D_STR: {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, 4);
        return t;
    }
    default: return H5Tcopy(H5T_IEEE_F32LE);
    }
}

/* The value a baseline file holds at element k of tensor t of section s (what a reader must get back). */
static double value_at(int s, int t, size_t k)
{
    if (s == S_SCALE)
        return 0.0078125 * (double)(1 + (k + (size_t)t) % 5);
    if (s == S_UPDATE && D.kind == 1)
        return (double)((int)((k * 37 + (size_t)t * 11) % 255) - 127);
    double f = (double)((k * 7 + (size_t)t * 31 + (size_t)s * 101) % 251) / 64.0 - 2.0;
    if (s == S_UPDATE) { /* bf16 bits of f (exact: f has few significant bits) */
        float x = (float)f;
        uint32_t bits;
        memcpy(&bits, &x, 4);
        return (double)(bits >> 16);
    }
    return f;
}

static void write_dset(hid_t g, int s, int t, const char *name)
{
    const dset_t *ds = &D.dset[s][t];
    if (!ds->present || ds->ndim < 0)
        return;
    hsize_t dims[2] = {ds->dims[0], ds->dims[1]}, maxd[2] = {H5S_UNLIMITED, H5S_UNLIMITED};
    int nd = ds->ndim > 2 ? 2 : ds->ndim;
    hid_t sp = nd == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(nd, dims, ds->unlimited ? maxd : NULL);
    hid_t ft = file_type(ds->dtype);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    char ext[4400];
    size_t numel = 1;
    for (int k = 0; k < nd; k++)
        numel = dims[k] && numel <= SIZE_MAX / dims[k] ? numel * dims[k] : 0;
    int write_data = numel > 0 && numel <= MAX_ELEMS && ds->dtype != D_STR;
    switch (ds->layout) {
    case L_CHUNK:
    default: {
        hsize_t c[2] = {ds->chunk[0] ? ds->chunk[0] : 1, ds->chunk[1] ? ds->chunk[1] : 1};
        if (ds->layout == L_CHUNK || ds->unlimited || ds->filters)
            H5Pset_chunk(dcpl, nd ? nd : 1, c);
        /* HDF5 writes through a buffer of a whole chunk: no data for a chunk bigger than the harness's bound
         * (the gate refuses a chunk larger than its tensor before anything reads one) */
        if (c[0] * (nd == 2 ? c[1] : 1) > MAX_ELEMS)
            write_data = 0;
        break;
    }
    case L_CONTIG: break;
    case L_COMPACT: H5Pset_layout(dcpl, H5D_COMPACT); break;
    case L_EXTERNAL: /* the bytes in another file (inside the harness's directory), never written */
        snprintf(ext, sizeof ext, "%s/external.bin", fz_tmpdir());
        H5Pset_external(dcpl, ext, 0, (hsize_t)numel * 8 + 8);
        write_data = 0;
        break;
    case L_VIRTUAL: { /* a view of a dataset in another file (there or not) */
        hid_t src = H5Screate_simple(nd ? nd : 1, dims, NULL);
        snprintf(ext, sizeof ext, "%s/source.h5", fz_tmpdir());
        H5Pset_virtual(dcpl, sp, ext, "/data", src);
        H5Sclose(src);
        write_data = 0;
        break;
    }
    }
    if (ds->filters & F_SHUFFLE)
        H5Pset_shuffle(dcpl);
    if (ds->filters & F_DEFLATE)
        H5Pset_deflate(dcpl, 1);
    if (ds->filters & F_FLETCHER)
        H5Pset_fletcher32(dcpl);
    if (ds->filters & F_NBIT)
        H5Pset_nbit(dcpl);
    if (ds->filters & F_SCALEOFFSET)
        H5Pset_scaleoffset(dcpl, H5Z_SO_INT, H5Z_SO_INT_MINBITS_DEFAULT);
    hid_t d = H5Dcreate2(g, name, ft, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d >= 0 && write_data) {
        double *v = malloc(numel * sizeof *v);
        if (!v)
            fz_fail("out of memory");
        for (size_t k = 0; k < numel; k++)
            v[k] = value_at(s, t, k);
        for (int p = 0; p < ds->n_pokes; p++) {
            size_t k = ds->poke_at[p] % numel;
            if (ds->dtype == D_F32LE || ds->dtype == D_F32BE || ds->dtype == D_F64) {
                float f;
                memcpy(&f, &ds->poke_bits[p], 4);
                v[k] = f;
            } else {
                v[k] = ds->dtype == D_I8 ? (double)(int8_t)ds->poke_bits[p] : (double)(ds->poke_bits[p] & 0xffff);
            }
        }
        H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        free(v);
    }
    if (d >= 0)
        H5Dclose(d);
    H5Pclose(dcpl);
    H5Tclose(ft);
    H5Sclose(sp);
}

static hid_t open_or_make_group(hid_t fid, const char *path)
{
    if (!strcmp(path, "/"))
        return H5Gopen2(fid, "/", H5P_DEFAULT);
    /* H5Lexists needs the parent to exist; a missing parent is made too */
    const char *slash = strrchr(path, '/');
    htri_t e = 1;
    if (slash && slash != path) {
        char parent[128];
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - path), path);
        e = H5Lexists(fid, parent, H5P_DEFAULT);
    }
    if (e > 0 && H5Lexists(fid, path, H5P_DEFAULT) > 0)
        return H5Gopen2(fid, path, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = H5Gcreate2(fid, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    return g;
}

static void write_extras(hid_t fid)
{
    if (!D.extras)
        return;
    hid_t g = open_or_make_group(fid, section_path[D.extras_at]);
    if (g < 0)
        return;
    char target[256];
    snprintf(target, sizeof target, "%s/%s", section_path[D.extras_at], D.tab.tensors[0].name);
    if (D.extras & E_SOFT)
        H5Lcreate_soft(target, g, "soft.weight", H5P_DEFAULT, H5P_DEFAULT);
    if (D.extras & E_EXTERNAL)
        H5Lcreate_external("elsewhere.h5", "/params/tok_embeddings.weight", g, "external.weight", H5P_DEFAULT,
                           H5P_DEFAULT);
    if ((D.extras & E_HARD_ALIAS) && H5Lexists(fid, target, H5P_DEFAULT) > 0)
        H5Lcreate_hard(fid, target, g, "alias.weight", H5P_DEFAULT, H5P_DEFAULT);
    if (D.extras & E_NAMED_TYPE) {
        hid_t t = H5Tcopy(H5T_IEEE_F32LE);
        H5Tcommit2(g, "float_type", t, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Tclose(t);
    }
    if (D.extras & E_EXTRA_DSET) {
        hsize_t n = 4;
        hid_t sp = H5Screate_simple(1, &n, NULL);
        hid_t d = H5Dcreate2(g, "stray.weight", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (d >= 0)
            H5Dclose(d);
        H5Sclose(sp);
    }
    if (D.extras & E_EXTRA_GROUP) {
        hid_t sub = H5Gcreate2(g, "sub", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (sub >= 0)
            H5Gclose(sub);
    }
    if (D.extras & E_ROOT_DSET) {
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t d = H5Dcreate2(fid, "/stray", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (d >= 0)
            H5Dclose(d);
        H5Sclose(sp);
    }
    if (D.extras & E_DEEP) {
        char path[64] = "";
        for (int k = 0; k < 6; k++) {
            strcat(path, "/d");
            hid_t sub = open_or_make_group(g, path + 1);
            if (sub >= 0)
                H5Gclose(sub);
        }
    }
    H5Gclose(g);
}

/* 0 when the file was written. */
static int write_file(const char *path)
{
    static const H5F_libver_t lows[3] = {H5F_LIBVER_V18, H5F_LIBVER_LATEST, H5F_LIBVER_EARLIEST};
    static const hsize_t userblocks[4] = {0, 512, 1024, 4096};
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_libver_bounds(fapl, lows[D.libver % 3], D.libver % 3 == 1 ? H5F_LIBVER_LATEST : H5F_LIBVER_V18);
    H5Pset_file_locking(fapl, 0, 1);
    if (userblocks[D.userblock % 4])
        H5Pset_userblock(fcpl, userblocks[D.userblock % 4]);
    hid_t fid = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    H5Pclose(fapl);
    H5Pclose(fcpl);
    if (fid < 0)
        return -1;
    for (int gi = 0; gi < N_GROUPS; gi++) {
        if (!D.group_on[gi])
            continue;
        hid_t g = open_or_make_group(fid, group_path[gi]);
        if (g < 0)
            continue;
        for (int k = 0; k < D.n_attrs; k++)
            if (D.attr[k].group == gi)
                write_attr(g, &D.attr[k]);
        H5Gclose(g);
    }
    for (int s = 0; s < N_SECTIONS; s++) {
        if (!D.section_on[s])
            continue;
        hid_t g = open_or_make_group(fid, section_path[s]);
        if (g < 0)
            continue;
        for (int t = 0; t < D.tab.n_tensors; t++)
            write_dset(g, s, t, D.tab.tensors[t].name);
        H5Gclose(g);
    }
    write_extras(fid);
    return H5Fclose(fid) < 0 ? -1 : 0;
}

/* ---- reading it as FLaS does ---------------------------------------------------------------------- */

static int verbose = -1; /* FUZZ_VERBOSE=1: print why each file was refused (for writing seeds) */

static void expect(int ok, const char *what, const char *err)
{
    if (!ok && verbose)
        fprintf(stderr, "fuzz_checkpoint: %s: %s\n", what, err);
    if (!ok && pristine)
        fz_fail("a valid file (no mutation) was refused: %s: %s", what, err);
}

static void read_file(const char *path, fz_bytes *rest)
{
    char err[1024] = "";
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
    expect(r != NULL, "open", err);
    if (!r) {
        if (!err[0])
            fz_fail("refused without a reason");
        return;
    }
    const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
    const unsigned contents = flas_ckpt_contents(r);
    const flas_param_table *tab = flas_ckpt_tensors(r);
    if (flas_config_validate(&m->cfg, 1, err, sizeof err) || m->cfg.n_layers > FLAS_CKPT_MAX_LAYERS)
        fz_fail("opened with an invalid config: %s", err);
    if (m->update != FLAS_UPDATE_FULL && !(contents & FLAS_CKPT_UPDATE))
        fz_fail("an update file opened without /update");
    size_t most = 0;
    for (int i = 0; i < tab->n_tensors; i++)
        most = tab->tensors[i].numel > most ? tab->tensors[i].numel : most;
    float *buf = malloc((most ? most : 1) * sizeof *buf);
    float *flat = NULL;
    if (!buf)
        fz_fail("out of memory");
    if (contents & FLAS_CKPT_UPDATE) {
        for (int i = 0; i < tab->n_tensors; i++) {
            const flas_tensor *x = &tab->tensors[i];
            int ok = flas_ckpt_get_update(r, x->name, 0, x->numel, buf, err, sizeof err) == 0;
            expect(ok, x->name, err);
            for (size_t k = 0; ok && pristine && k < x->numel; k++) {
                float want;
                if (m->update == FLAS_UPDATE_INT8) {
                    int8_t q = (int8_t)value_at(S_UPDATE, i, k);
                    float sc = (float)value_at(S_SCALE, i, k / (size_t)m->update_block);
                    flas_update_decode(FLAS_UPDATE_INT8, m->update_block, 0, &q, &sc, 1, &want);
                } else {
                    uint16_t q = (uint16_t)value_at(S_UPDATE, i, k);
                    flas_update_decode(FLAS_UPDATE_BF16, 0, 0, &q, NULL, 1, &want);
                }
                if (memcmp(&want, &buf[k], sizeof want))
                    fz_fail("update %s[%zu] read back as %g, written %g", x->name, k, (double)buf[k], (double)want);
            }
            /* and a range that starts and ends inside blocks */
            size_t lo = x->numel ? fz_u16(rest) % x->numel : 0, n = x->numel - lo;
            n = n ? 1 + fz_u16(rest) % n : 0;
            flas_ckpt_get_update(r, x->name, lo, n, buf, err, sizeof err);
        }
        flas_ckpt_get_update(r, "no.such.tensor", 0, 1, buf, err, sizeof err);
    }
    for (int s = 0; s < FLAS_CKPT_N_SECTIONS; s++) {
        if (!(contents & FLAS_CKPT_HAS(s)))
            continue;
        for (int i = 0; i < tab->n_tensors; i++) {
            const flas_tensor *x = &tab->tensors[i];
            int ok = flas_ckpt_get_elems(r, (flas_ckpt_section)s, x->name, 0, x->numel, buf, err, sizeof err) == 0;
            expect(ok, x->name, err);
            for (size_t k = 0; ok && pristine && k < x->numel; k++)
                if (buf[k] != (float)value_at(s, i, k))
                    fz_fail("%s/%s[%zu] read back as %g, written %g", flas_ckpt_section_name((flas_ckpt_section)s),
                            x->name, k, (double)buf[k], value_at(s, i, k));
            /* a box of the tensor, as the tensor-parallel readers ask */
            size_t rows = x->ndim == 2 ? x->full_shape[0] : 1, cols = x->ndim == 2 ? x->full_shape[1] : x->full_shape[0];
            size_t r0 = rows ? fz_u8(rest) % rows : 0, c0 = cols ? fz_u8(rest) % cols : 0;
            size_t start[2] = {x->ndim == 2 ? r0 : c0, c0}, count[2] = {rows - r0, cols - c0};
            if (x->ndim == 1)
                count[0] = cols - c0, count[1] = 0;
            flas_ckpt_get(r, (flas_ckpt_section)s, x->name, start, count, buf, err, sizeof err);
        }
        if (!flat)
            flat = malloc((tab->n_params ? tab->n_params : 1) * sizeof *flat);
        if (!flat)
            fz_fail("out of memory");
        expect(flas_ckpt_get_flat(r, (flas_ckpt_section)s, tab, 0, tab->n_params, flat, err, sizeof err) == 0,
               "get_flat", err);
    }
    flas_ckpt_optimizer o;
    flas_train_state ts;
    flas_server_state *ss = malloc(sizeof *ss);
    flas_ckpt_metrics mt;
    if (!ss)
        fz_fail("out of memory");
    if (flas_ckpt_get_optimizer(r, &o, err, sizeof err) == 0 && o.step < 0)
        fz_fail("optimizer step %lld accepted", (long long)o.step);
    if (flas_ckpt_get_train_state(r, &ts, err, sizeof err) == 0 && (ts.epoch < 0 || ts.shard < 0 || ts.offset < 0))
        fz_fail("negative data cursor accepted");
    if (flas_ckpt_get_server_state(r, ss, err, sizeof err) == 0 &&
        (ss->n_sites < 0 || ss->n_sites > FLAS_CKPT_MAX_SITES || ss->round < 0))
        fz_fail("server state with %d sites, round %lld accepted", ss->n_sites, (long long)ss->round);
    if (flas_ckpt_get_metrics(r, &mt, err, sizeof err) == 0 && mt.valid_tokens < 0)
        fz_fail("negative valid_tokens accepted");
    flas_ckpt_expect_config(r, &D.cfg, err, sizeof err);
    free(ss);
    free(flat);
    free(buf);
    flas_ckpt_close(r);
}

/* ---- HDF5 identifiers: whatever FLaS opened it must close ----------------------------------------- */

/* After flas_ckpt_close no file and no object in one may stay open. (HDF5 1.10 counts the other kinds of
 * identifier, dataspaces and property lists, for user-defined types only: those are not checked.) */
static void check_ids(void)
{
    ssize_t open_objs = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open_objs != 0)
        fz_fail("%zd HDF5 files or objects left open after the checkpoint was closed", open_objs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        if (!getenv("FUZZ_VERBOSE"))
            flas_ckpt_hdf5_quiet();
        quiet = 1;
    }
    if (size < 4 || size > 4096)
        return -1;
    fz_bytes b = {data + 4, size - 4};
    if (verbose < 0)
        verbose = getenv("FUZZ_VERBOSE") != NULL;
    baseline(data);
    pristine = 1;
    int records = 0;
    /* records until the bytes run out; "rest" bytes (after a 0xff op) pick the ranges the reads ask for */
    while (b.n >= 8 && records < 64 && b.p[0] != 0xff) {
        apply(&b);
        records++;
    }
    if (b.n && b.p[0] == 0xff)
        fz_u8(&b);
    /* FLaS writes and reads the HDF5 1.8 format (superblock 2): a file made with the latest format is
     * refused by design, so it is no valid file to insist on */
    if (D.libver != 0)
        pristine = 0;
    char path[4200];
    fz_write_file("checkpoint.h5", "", 0, path, sizeof path);
    if (write_file(path) != 0) {
        if (pristine)
            fz_fail("the harness could not write a valid file");
    } else {
        read_file(path, &b);
    }
    check_ids();
    return 0;
}
