/* A Hugging Face LLaMA directory (transformers' LlamaForCausalLM):
 *   config.json                          hidden_size, intermediate_size, num_hidden_layers, ...
 *   model.safetensors                    or the sharded form: model-0000k-of-0000n.safetensors and
 *   model.safetensors.index.json         {"weight_map": {tensor name: shard file}}
 *   tokenizer.model                      SentencePiece, copied through
 * safetensors: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:
 * [begin, end)}, "__metadata__": {..}}, then the data, offsets relative to its start, no holes.
 *
 * Names: model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
 * post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head (gate = w1, up = w3,
 * down = w2). wq and wk rows are in the half-split RoPE order (flas/interop.h): converted here, head
 * by head, and nowhere else. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/atomic_file.h"
#include "flas/error.h"
#include "flas/kv.h"
#include "flas/tokenizer.h"
#include "interop_internal.h"

#define HF_CONFIG "config.json"
#define HF_SINGLE "model.safetensors"
#define HF_INDEX "model.safetensors.index.json"
#define HF_TOKENIZER "tokenizer.model"
#define HF_CONFIG_MAX ((size_t)1 << 20)
#define HF_MAX_SHARDS 100000
#define HF_MAX_DIM ((int64_t)1 << 40)

/* The HF name of a FLaS tensor. */
static void hf_name(const flas_tensor *t, char *out, size_t n)
{
    static const char *const block[FLAS_T_KIND_COUNT] = {
        [FLAS_T_ATTENTION_NORM] = "input_layernorm",   [FLAS_T_WQ] = "self_attn.q_proj",
        [FLAS_T_WK] = "self_attn.k_proj",              [FLAS_T_WV] = "self_attn.v_proj",
        [FLAS_T_WO] = "self_attn.o_proj",              [FLAS_T_FFN_NORM] = "post_attention_layernorm",
        [FLAS_T_W1] = "mlp.gate_proj",                 [FLAS_T_W2] = "mlp.down_proj",
        [FLAS_T_W3] = "mlp.up_proj"};
    switch (t->kind) {
    case FLAS_T_TOK_EMBEDDINGS: snprintf(out, n, "model.embed_tokens.weight"); break;
    case FLAS_T_NORM: snprintf(out, n, "model.norm.weight"); break;
    case FLAS_T_OUTPUT: snprintf(out, n, "lm_head.weight"); break;
    default: snprintf(out, n, "model.layers.%d.%s.weight", t->layer, block[t->kind]); break;
    }
}

/* safetensors dtypes: every one the format defines is sized (so any file's offsets can be checked);
 * the converter reads F32, F16 and BF16. */
static int st_dtype(const char *s, size_t *size, flas_dtype *dt)
{
    static const struct { const char *name; size_t size; int dt; } T[] = {
        {"F32", 4, FLAS_DT_F32}, {"F16", 2, FLAS_DT_F16}, {"BF16", 2, FLAS_DT_BF16}, {"F64", 8, -1},
        {"I64", 8, -1}, {"U64", 8, -1}, {"I32", 4, -1}, {"U32", 4, -1}, {"I16", 2, -1}, {"U16", 2, -1},
        {"I8", 1, -1}, {"U8", 1, -1}, {"BOOL", 1, -1}, {"F8_E4M3", 1, -1}, {"F8_E5M2", 1, -1}};
    for (size_t i = 0; i < sizeof T / sizeof *T; i++)
        if (!strcmp(s, T[i].name)) {
            *size = T[i].size;
            *dt = T[i].dt < 0 ? (flas_dtype)-1 : (flas_dtype)T[i].dt;
            return 0;
        }
    return -1;
}

/* ---- reading ---------------------------------------------------------------------------------- */

typedef struct st_entry {
    char *name;
    int shard;
    int readable;          /* dtype is F32, F16 or BF16 */
    flas_dtype dt;
    char dtype[16];
    int ndim;
    int64_t shape[8];
    uint64_t begin, end;   /* absolute file offsets */
} st_entry;

typedef struct st_shard {
    ix_file f;
    char name[256];
} st_shard;

typedef struct hf_src {
    ix_source base;
    char dir[PATH_MAX];
    st_shard *shards;
    int n_shards;
    st_entry *e;
    size_t n_e, cap_e;
    float *scratch;        /* one head of wq/wk: head_dim * dim floats */
} hf_src;

static int by_name(const void *a, const void *b)
{
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static int by_place(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static const st_entry *find(const hf_src *h, const char *name)
{
    st_entry key = {.name = (char *)name};
    return bsearch(&key, h->e, h->n_e, sizeof *h->e, by_name);
}

static int json_u64(const json_t *v, uint64_t max, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Reads one shard's header and appends its entries, every size and offset checked against the file. */
static int read_shard(hf_src *h, int si, char *err, size_t errlen)
{
    st_shard *s = &h->shards[si];
    const char *path = s->f.path;
    unsigned char b8[8];
    if (ix_file_read(&s->f, 0, b8, 8, err, errlen))
        return -1;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | b8[i];
    if (n > s->f.size - 8)
        return flas_fail(err, errlen, "%s: safetensors header of %llu bytes is larger than the file (%llu bytes)", path,
                         (unsigned long long)n, (unsigned long long)s->f.size);
    if (n > IX_JSON_MAX || n < 2)
        return flas_fail(err, errlen, "%s: safetensors header length %llu is not plausible", path, (unsigned long long)n);
    char *txt = malloc(n);
    if (!txt)
        return flas_fail(err, errlen, "out of memory");
    if (ix_file_read(&s->f, 8, txt, n, err, errlen)) {
        free(txt);
        return -1;
    }
    json_error_t je;
    json_t *root = json_loadb(txt, n, JSON_REJECT_DUPLICATES, &je);
    free(txt);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return flas_fail(err, errlen, "%s: safetensors header is not a JSON object (%s)", path,
                         root ? "another JSON value" : je.text);
    }
    const uint64_t data0 = 8 + n, data_len = s->f.size - data0;
    const char *key;
    json_t *v;
    int rc = 0;
    size_t first = h->n_e;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(v)) {
                rc = flas_fail(err, errlen, "%s: __metadata__ is not an object", path);
                break;
            }
            json_object_foreach(v, mk, mv) if (!json_is_string(mv)) {
                rc = flas_fail(err, errlen, "%s: __metadata__.%s is not a string", path, mk);
                break;
            }
            if (rc)
                break;
            continue;
        }
        json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
               *jo = json_object_get(v, "data_offsets");
        if (!json_is_object(v) || !json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) ||
            json_array_size(jo) != 2) {
            rc = flas_fail(err, errlen, "%s: tensor %.80s: needs dtype, shape and data_offsets [begin, end]", path, key);
            break;
        }
        if (h->n_e >= IX_MAX_TENSORS) {
            rc = flas_fail(err, errlen, "%s: more than %d tensors: more than a LLaMA model has", path, IX_MAX_TENSORS);
            break;
        }
        if (h->n_e == h->cap_e) {
            size_t cap = h->cap_e ? 2 * h->cap_e : 512;
            st_entry *ne = realloc(h->e, cap * sizeof *ne);
            if (!ne) {
                rc = flas_fail(err, errlen, "out of memory");
                break;
            }
            h->e = ne;
            h->cap_e = cap;
        }
        st_entry *e = &h->e[h->n_e];
        memset(e, 0, sizeof *e);
        size_t es;
        flas_dtype dt;
        if (st_dtype(json_string_value(jd), &es, &dt)) {
            rc = flas_fail(err, errlen, "%s: tensor %.80s has unknown dtype '%.20s'", path, key, json_string_value(jd));
            break;
        }
        snprintf(e->dtype, sizeof e->dtype, "%s", json_string_value(jd));
        e->readable = (int)dt >= 0;
        e->dt = dt;
        e->shard = si;
        if (json_array_size(js) > 8) {
            rc = flas_fail(err, errlen, "%s: tensor %.80s has %zu dimensions", path, key, json_array_size(js));
            break;
        }
        uint64_t numel = 1, begin, end;
        e->ndim = (int)json_array_size(js);
        for (int d = 0; d < e->ndim && !rc; d++) {
            uint64_t x;
            if (json_u64(json_array_get(js, (size_t)d), (uint64_t)HF_MAX_DIM, &x) ||
                __builtin_mul_overflow(numel, x, &numel))
                rc = flas_fail(err, errlen, "%s: tensor %.80s: shape is not a list of sizes below 2^40 whose product "
                                            "fits", path, key);
            else
                e->shape[d] = (int64_t)x;
        }
        if (rc)
            break;
        uint64_t bytes;
        if (__builtin_mul_overflow(numel, (uint64_t)es, &bytes) ||
            json_u64(json_array_get(jo, 0), UINT64_MAX >> 1, &begin) ||
            json_u64(json_array_get(jo, 1), UINT64_MAX >> 1, &end)) {
            rc = flas_fail(err, errlen, "%s: tensor %.80s: data_offsets are not two byte offsets", path, key);
            break;
        }
        if (begin > end || end > data_len) {
            rc = flas_fail(err, errlen, "%s: tensor %.80s: data_offsets [%llu, %llu) outside the %llu data bytes", path,
                           key, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_len);
            break;
        }
        if (end - begin != bytes) {
            rc = flas_fail(err, errlen, "%s: tensor %.80s: %llu bytes at data_offsets, but %s x %llu elements need "
                                        "%llu", path, key, (unsigned long long)(end - begin), e->dtype,
                           (unsigned long long)numel, (unsigned long long)bytes);
            break;
        }
        e->begin = data0 + begin;
        e->end = data0 + end;
        e->name = strdup(key);
        if (!e->name) {
            rc = flas_fail(err, errlen, "out of memory");
            break;
        }
        h->n_e++;
    }
    json_decref(root);
    if (rc)
        return -1;
    /* The data must be exactly the tensors, each byte once: no overlap, no hole. */
    qsort(h->e + first, h->n_e - first, sizeof *h->e, by_place);
    uint64_t at = data0;
    for (size_t i = first; i < h->n_e; i++) {
        if (h->e[i].begin < at)
            return flas_fail(err, errlen, "%s: tensors %.80s and %.80s overlap", path, h->e[i].name, h->e[i - 1].name);
        if (h->e[i].begin > at)
            return flas_fail(err, errlen, "%s: %llu bytes before tensor %.80s belong to no tensor", path,
                             (unsigned long long)(h->e[i].begin - at), h->e[i].name);
        at = h->e[i].end;
    }
    if (at != s->f.size)
        return flas_fail(err, errlen, "%s: %llu bytes after the last tensor belong to no tensor", path,
                         (unsigned long long)(s->f.size - at));
    return 0;
}

/* A shard name from an index: a plain file name in the model directory, never a path. */
static int plain_name(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < 256 && s[0] != '.' && !strchr(s, '/');
}

/* config.json and the index: small files, read whole by the bounded reader every config file uses. */
static json_t *load_json(const char *path, size_t max, char *err, size_t errlen)
{
    char *txt;
    if (flas_kv_read_file(path, max, &txt, err, errlen))
        return NULL;
    json_error_t je;
    json_t *j = json_loads(txt, JSON_REJECT_DUPLICATES, &je);
    free(txt);
    if (!j || !json_is_object(j)) {
        flas_fail(err, errlen, "%s: not a JSON object (%s)", path, j ? "another JSON value" : je.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

static int add_shard(hf_src *h, const char *name, char *err, size_t errlen)
{
    for (int i = 0; i < h->n_shards; i++)
        if (!strcmp(h->shards[i].name, name))
            return i;
    if (h->n_shards >= HF_MAX_SHARDS)
        return flas_fail(err, errlen, "%s: more than %d shards", h->dir, HF_MAX_SHARDS);
    st_shard *ns = realloc(h->shards, (size_t)(h->n_shards + 1) * sizeof *ns);
    if (!ns)
        return flas_fail(err, errlen, "out of memory");
    h->shards = ns;
    st_shard *s = &h->shards[h->n_shards];
    memset(s, 0, sizeof *s);
    s->f.fd = -1;
    snprintf(s->name, sizeof s->name, "%s", name);
    char path[PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/%s", h->dir, name);
    if (ix_file_open(&s->f, path, err, errlen))
        return -1;
    h->n_shards++;
    if (read_shard(h, h->n_shards - 1, err, errlen))
        return -1;
    return h->n_shards - 1;
}

/* An integer config value in [1, 2^31). */
static int cfg_int(json_t *c, const char *key, int dflt, int *out, const char *path, char *err, size_t errlen)
{
    json_t *v = json_object_get(c, key);
    if (!v || json_is_null(v)) {
        if (dflt < 0)
            return flas_fail(err, errlen, "%s: %s is missing", path, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > INT_MAX)
        return flas_fail(err, errlen, "%s: %s must be a positive integer", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int cfg_real(json_t *c, const char *key, double dflt, double lo, double hi, float *out, const char *path,
                    char *err, size_t errlen)
{
    json_t *v = json_object_get(c, key);
    double x = dflt;
    if (v && !json_is_null(v)) {
        if (!json_is_number(v))
            return flas_fail(err, errlen, "%s: %s must be a number", path, key);
        x = json_number_value(v);
    }
    if (!(x > lo && x < hi))
        return flas_fail(err, errlen, "%s: %s = %g is outside (%g, %g)", path, key, x, lo, hi);
    *out = (float)x;
    return 0;
}

/* config.json: LlamaConfig's keys and defaults; anything this converter cannot represent is refused
 * rather than dropped (RoPE scaling, biases, another activation or architecture). */
static int read_config(hf_src *h, char *err, size_t errlen)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/" HF_CONFIG, h->dir);
    json_t *c = load_json(path, HF_CONFIG_MAX, err, errlen);
    if (!c)
        return -1;
    flas_config *cfg = &h->base.cfg;
    int rc = cfg_int(c, "hidden_size", -1, &cfg->dim, path, err, errlen) ||
             cfg_int(c, "intermediate_size", -1, &cfg->hidden_dim, path, err, errlen) ||
             cfg_int(c, "num_hidden_layers", -1, &cfg->n_layers, path, err, errlen) ||
             cfg_int(c, "num_attention_heads", -1, &cfg->n_heads, path, err, errlen) ||
             cfg_int(c, "vocab_size", -1, &cfg->vocab_size, path, err, errlen) ||
             cfg_int(c, "max_position_embeddings", 2048, &cfg->seq_len, path, err, errlen) ||
             cfg_real(c, "rms_norm_eps", 1e-6, 0.0, 1.0, &cfg->norm_eps, path, err, errlen) ||
             cfg_real(c, "rope_theta", 10000.0, 1.0, 1e12, &cfg->rope_theta, path, err, errlen)
                 ? -1 : 0;
    if (!rc)
        rc = cfg_int(c, "num_key_value_heads", cfg->n_heads, &cfg->n_kv_heads, path, err, errlen);
    json_t *v;
    if (!rc && (v = json_object_get(c, "tie_word_embeddings")) && !json_is_boolean(v))
        rc = flas_fail(err, errlen, "%s: tie_word_embeddings must be true or false", path);
    cfg->tied_embeddings = !rc && v && json_is_true(v);
    if (!rc && (v = json_object_get(c, "model_type")) && (!json_is_string(v) || strcmp(json_string_value(v), "llama")))
        rc = flas_fail(err, errlen, "%s: model_type is not \"llama\"", path);
    if (!rc && (v = json_object_get(c, "hidden_act")) && (!json_is_string(v) || strcmp(json_string_value(v), "silu")))
        rc = flas_fail(err, errlen, "%s: hidden_act is not \"silu\" (LLaMA's SwiGLU)", path);
    if (!rc && (v = json_object_get(c, "rope_scaling")) && !json_is_null(v))
        rc = flas_fail(err, errlen, "%s: rope_scaling is set: scaled RoPE is not supported", path);
    if (!rc && (v = json_object_get(c, "attention_bias")) && !json_is_false(v))
        rc = flas_fail(err, errlen, "%s: attention_bias is set: LLaMA has no biases", path);
    if (!rc && (v = json_object_get(c, "mlp_bias")) && !json_is_false(v))
        rc = flas_fail(err, errlen, "%s: mlp_bias is set: LLaMA has no biases", path);
    if (!rc && (v = json_object_get(c, "head_dim")) && !json_is_null(v) &&
        (!json_is_integer(v) || cfg->n_heads <= 0 || json_integer_value(v) * cfg->n_heads != cfg->dim))
        rc = flas_fail(err, errlen, "%s: head_dim is not hidden_size / num_attention_heads", path);
    json_decref(c);
    return rc;
}

/* Every tensor of the file must be one the model uses (or a known harmless extra); every one the model
 * uses must be there, readable, with its shape. */
static int check_tensors(hf_src *h, char *err, size_t errlen)
{
    flas_param_table tab;
    char why[256];
    if (flas_config_validate(&h->base.cfg, 1, why, sizeof why))
        return flas_fail(err, errlen, "%s/" HF_CONFIG ": %s", h->dir, why);
    if (flas_param_table_init(&tab, &h->base.cfg, 0, 1, err, errlen))
        return -1;
    int rc = 0;
    char name[128];
    for (int i = 0; i < tab.n_tensors && !rc; i++) {
        const flas_tensor *t = &tab.tensors[i];
        hf_name(t, name, sizeof name);
        const st_entry *e = find(h, name);
        if (!e)
            rc = flas_fail(err, errlen, "%s: tensor %s is missing", h->dir, name);
        else if (!e->readable)
            rc = flas_fail(err, errlen, "%s: tensor %s has dtype %s (F32, F16 and BF16 are read)", h->dir, name, e->dtype);
        else if (e->ndim != t->ndim || (uint64_t)e->shape[0] != t->full_shape[0] ||
                 (t->ndim == 2 && (uint64_t)e->shape[1] != t->full_shape[1]))
            rc = flas_fail(err, errlen, "%s: tensor %s has shape [%lld%s%lld], config.json says [%zu%s%zu]", h->dir, name,
                           (long long)e->shape[0], e->ndim > 1 ? ", " : "", e->ndim > 1 ? (long long)e->shape[1] : 0LL,
                           t->full_shape[0], t->ndim > 1 ? ", " : "", t->ndim > 1 ? t->full_shape[1] : (size_t)0);
    }
    /* Names are unique (checked before): mark the ones the model uses, then refuse the rest. */
    unsigned char *used = rc ? NULL : calloc(h->n_e ? h->n_e : 1, 1);
    if (!rc && !used)
        rc = flas_fail(err, errlen, "out of memory");
    for (int i = 0; i < tab.n_tensors && !rc; i++) {
        hf_name(&tab.tensors[i], name, sizeof name);
        used[find(h, name) - h->e] = 1;
    }
    for (size_t i = 0; i < h->n_e && !rc; i++) {
        const char *n = h->e[i].name;
        size_t len = strlen(n);
        int known = used[i] || (len > 20 && !strcmp(n + len - 20, ".rotary_emb.inv_freq")) ||
                    (!strcmp(n, "lm_head.weight") && h->base.cfg.tied_embeddings);
        if (!known)
            rc = flas_fail(err, errlen, "%s: unexpected tensor %.80s (not part of a LLaMA model)", h->dir, n);
    }
    free(used);
    flas_param_table_free(&tab);
    return rc;
}

static int hf_read(ix_source *s, const flas_tensor *t, float *out, char *err, size_t errlen)
{
    hf_src *h = (hf_src *)s;
    char name[128];
    hf_name(t, name, sizeof name);
    const st_entry *e = find(h, name);
    if (!e)
        return flas_fail(err, errlen, "%s: tensor %s is missing", h->dir, name);
    if (ix_read_elems(&h->shards[e->shard].f, e->begin, t->numel, e->dt, out, err, errlen))
        return -1;
    s->bytes_in += e->end - e->begin;
    const flas_config *c = &s->cfg;
    const int hd = c->dim / c->n_heads;
    if (t->kind == FLAS_T_WQ)
        flas_rope_to_interleaved(out, c->n_heads, hd, (size_t)c->dim, h->scratch);
    else if (t->kind == FLAS_T_WK)
        flas_rope_to_interleaved(out, c->n_kv_heads, hd, (size_t)c->dim, h->scratch);
    return 0;
}

static void hf_close(ix_source *s)
{
    hf_src *h = (hf_src *)s;
    for (int i = 0; i < h->n_shards; i++)
        ix_file_close(&h->shards[i].f);
    for (size_t i = 0; i < h->n_e; i++)
        free(h->e[i].name);
    free(h->e);
    free(h->shards);
    free(h->scratch);
    free(h);
}

ix_source *ix_hf_open(const char *dir, char *err, size_t errlen)
{
    hf_src *h = calloc(1, sizeof *h);
    if (!h) {
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    h->base.read = hf_read;
    h->base.close = hf_close;
    h->base.has_seq_len = 1;
    snprintf(h->dir, sizeof h->dir, "%s", dir);
    char path[PATH_MAX + 64];
    struct stat st;
    if (read_config(h, err, errlen))
        goto fail;
    snprintf(path, sizeof path, "%s/" HF_INDEX, dir);
    if (stat(path, &st) == 0) {
        json_t *idx = load_json(path, IX_JSON_MAX, err, errlen);
        if (!idx)
            goto fail;
        json_t *wm = json_object_get(idx, "weight_map");
        const char *key;
        json_t *v;
        int rc = json_is_object(wm) ? 0 : flas_fail(err, errlen, "%s: no weight_map object", path);
        /* Open every shard the index names (each once), then hold the index to its word. */
        json_object_foreach(wm, key, v) {
            if (rc)
                break;
            if (!json_is_string(v) || !plain_name(json_string_value(v)))
                rc = flas_fail(err, errlen, "%s: tensor %.80s: shard must be a plain file name in the directory", path, key);
            else if (add_shard(h, json_string_value(v), err, errlen) < 0)
                rc = -1;
        }
        if (!rc) {
            qsort(h->e, h->n_e, sizeof *h->e, by_name);
            json_object_foreach(wm, key, v) {
                const st_entry *e = find(h, key);
                if (!e || strcmp(h->shards[e->shard].name, json_string_value(v))) {
                    rc = flas_fail(err, errlen, "%s: tensor %.80s is not in %.100s as the index says", path, key,
                                   json_string_value(v));
                    break;
                }
            }
        }
        for (size_t i = 0; !rc && i < h->n_e; i++)
            if (!json_object_get(wm, h->e[i].name))
                rc = flas_fail(err, errlen, "%s: tensor %.80s of %s is not in the index", path, h->e[i].name,
                               h->shards[h->e[i].shard].name);
        json_decref(idx);
        if (rc)
            goto fail;
    } else {
        snprintf(path, sizeof path, "%s/" HF_SINGLE, dir);
        if (stat(path, &st) != 0) {
            flas_fail(err, errlen, "%s: neither " HF_SINGLE " nor " HF_INDEX " (not a Hugging Face model directory)", dir);
            goto fail;
        }
        if (add_shard(h, HF_SINGLE, err, errlen) < 0)
            goto fail;
        qsort(h->e, h->n_e, sizeof *h->e, by_name);
    }
    for (size_t i = 1; i < h->n_e; i++)
        if (!strcmp(h->e[i].name, h->e[i - 1].name)) {
            flas_fail(err, errlen, "%s: tensor %.80s appears twice", dir, h->e[i].name);
            goto fail;
        }
    if (check_tensors(h, err, errlen))
        goto fail;
    h->scratch = malloc((size_t)h->base.cfg.dim * sizeof(float) * (size_t)(h->base.cfg.dim / h->base.cfg.n_heads));
    if (!h->scratch) {
        flas_fail(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(path, sizeof path, "%s/" HF_TOKENIZER, dir);
    if (strlen(path) < sizeof h->base.tokenizer && stat(path, &st) == 0 && S_ISREG(st.st_mode))
        memcpy(h->base.tokenizer, path, strlen(path) + 1);
    return &h->base;
fail:
    hf_close(&h->base);
    return NULL;
}

/* ---- writing ---------------------------------------------------------------------------------- */

typedef struct hf_snk {
    ix_sink base;
    flas_convert_opts o;
    char final[PATH_MAX];
    char *tmpdir;
    char tokenizer[PATH_MAX];
    int bos, eos;
    int *shard_of;         /* table index -> shard */
    int n_shards, cur;     /* shards, the one being written (-1 none) */
    uint64_t shard_bytes_done; /* bytes of the shards already closed */
    ix_out out;
    float *scratch;        /* one head of wq/wk */
} hf_snk;

static void shard_file(const hf_snk *k, int s, char *out, size_t n)
{
    if (k->n_shards == 1)
        snprintf(out, n, HF_SINGLE);
    else
        snprintf(out, n, "model-%05d-of-%05d.safetensors", s + 1, k->n_shards);
}

static size_t tensor_bytes(const hf_snk *k, const flas_tensor *t) { return t->numel * ix_dtype_size(k->o.dtype); }

static const char *st_name(flas_dtype d) { return d == FLAS_DT_F16 ? "F16" : d == FLAS_DT_BF16 ? "BF16" : "F32"; }

/* Opens shard s and writes its header (its tensors, in table order, back to back). */
static int open_shard(hf_snk *k, int s, char *err, size_t errlen)
{
    const flas_param_table *t = k->base.table;
    json_t *h = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(h, "__metadata__", meta);
    uint64_t at = 0;
    char name[128];
    for (int i = 0; i < t->n_tensors; i++) {
        if (k->shard_of[i] != s)
            continue;
        const flas_tensor *x = &t->tensors[i];
        json_t *e = json_object(), *shape = json_array(), *off = json_array();
        for (int d = 0; d < x->ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)x->full_shape[d]));
        json_array_append_new(off, json_integer((json_int_t)at));
        at += tensor_bytes(k, x);
        json_array_append_new(off, json_integer((json_int_t)at));
        json_object_set_new(e, "dtype", json_string(st_name(k->o.dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", off);
        hf_name(x, name, sizeof name);
        json_object_set_new(h, name, e);
    }
    char *txt = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!txt)
        return flas_fail(err, errlen, "out of memory");
    size_t n = strlen(txt), padded = (n + 7) & ~(size_t)7; /* the data start 8-byte aligned, as safetensors does */
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    char file[64], path[PATH_MAX + 64];
    shard_file(k, s, file, sizeof file);
    snprintf(path, sizeof path, "%s/%s", k->tmpdir, file);
    int rc = ix_out_create(&k->out, path, err, errlen);
    if (!rc) {
        k->cur = s;
        rc = ix_out_write(&k->out, len, 8, err, errlen) || ix_out_write(&k->out, txt, n, err, errlen) ||
             ix_out_write(&k->out, "        ", padded - n, err, errlen) ? -1 : 0;
    }
    free(txt);
    return rc;
}

static int close_shard(hf_snk *k, char *err, size_t errlen)
{
    if (k->cur < 0)
        return 0;
    k->shard_bytes_done += k->out.written;
    k->cur = -1;
    return ix_out_commit(&k->out, 0, err, errlen);
}

static int hf_write_tensor(hf_snk *k, const flas_tensor *t, const flas_config *c, const float *data, char *err,
                           size_t errlen);

static int hf_write(ix_sink *s, const flas_tensor *t, const float *data, char *err, size_t errlen)
{
    hf_snk *k = (hf_snk *)s;
    int idx = (int)(t - s->table->tensors);
    if (k->shard_of[idx] != k->cur) {
        if (close_shard(k, err, errlen) || open_shard(k, k->shard_of[idx], err, errlen))
            return -1;
    }
    const flas_config *c = &s->table->cfg;
    int rc = hf_write_tensor(k, t, c, data, err, errlen);
    s->bytes_out = k->shard_bytes_done + k->out.written;
    return rc;
}

static int hf_write_tensor(hf_snk *k, const flas_tensor *t, const flas_config *c, const float *data, char *err,
                           size_t errlen)
{
    if (t->kind != FLAS_T_WQ && t->kind != FLAS_T_WK)
        return ix_out_write_floats(&k->out, data, t->numel, k->o.dtype, err, errlen);
    /* wq/wk: each head's rows go out in the half-split order, one head at a time. */
    const int hd = c->dim / c->n_heads, heads = t->kind == FLAS_T_WQ ? c->n_heads : c->n_kv_heads;
    const size_t head = (size_t)hd * (size_t)c->dim;
    float *tmp = k->scratch + head; /* scratch holds two heads: the copy and permute's own */
    for (int h = 0; h < heads; h++) {
        memcpy(k->scratch, data + (size_t)h * head, head * sizeof(float));
        flas_rope_to_half_split(k->scratch, 1, hd, (size_t)c->dim, tmp);
        if (ix_out_write_floats(&k->out, k->scratch, head, k->o.dtype, err, errlen))
            return -1;
    }
    return 0;
}

/* Removes a directory this converter made or may replace: its plain entries, then itself. */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
}

static void hf_free(hf_snk *k)
{
    free(k->base.order);
    free(k->shard_of);
    free(k->scratch);
    free(k->tmpdir);
    free(k);
}

static void hf_abort(ix_sink *s)
{
    hf_snk *k = (hf_snk *)s;
    if (k->cur >= 0)
        ix_out_abort(&k->out);
    if (k->tmpdir)
        remove_dir(k->tmpdir);
    hf_free(k);
}

/* The shortest decimal that reads back as x, so config.json says 1e-05 and not 9.99999975e-06. */
static double short_decimal(float x)
{
    char buf[64];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)x);
        if (strtof(buf, NULL) == x)
            return strtod(buf, NULL);
    }
    return (double)x;
}

static int write_config(hf_snk *k, char *err, size_t errlen)
{
    const flas_config *c = &k->base.table->cfg;
    json_t *j = json_object(), *arch = json_array();
    json_array_append_new(arch, json_string("LlamaForCausalLM"));
    json_object_set_new(j, "architectures", arch);
    json_object_set_new(j, "model_type", json_string("llama"));
    json_object_set_new(j, "hidden_size", json_integer(c->dim));
    json_object_set_new(j, "intermediate_size", json_integer(c->hidden_dim));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(c->dim / c->n_heads));
    json_object_set_new(j, "rms_norm_eps", json_real(short_decimal(c->norm_eps)));
    json_object_set_new(j, "rope_theta", json_real(short_decimal(c->rope_theta)));
    json_object_set_new(j, "rope_scaling", json_null());
    json_object_set_new(j, "max_position_embeddings", json_integer(c->seq_len));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "attention_bias", json_false());
    json_object_set_new(j, "mlp_bias", json_false());
    json_object_set_new(j, "bos_token_id", json_integer(k->bos));
    json_object_set_new(j, "eos_token_id", json_integer(k->eos));
    json_object_set_new(j, "initializer_range", json_real(0.02));
    json_object_set_new(j, "pretraining_tp", json_integer(1));
    json_object_set_new(j, "use_cache", json_true());
    json_object_set_new(j, "torch_dtype", json_string(k->o.dtype == FLAS_DT_F16    ? "float16"
                                                      : k->o.dtype == FLAS_DT_BF16 ? "bfloat16"
                                                                                   : "float32"));
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (!txt)
        return flas_fail(err, errlen, "out of memory");
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/" HF_CONFIG, k->tmpdir);
    char *line = NULL;
    int n = asprintf(&line, "%s\n", txt);
    free(txt);
    if (n < 0)
        return flas_fail(err, errlen, "out of memory");
    int rc = flas_atomic_write_file(path, line, (size_t)n, err, errlen);
    free(line);
    return rc;
}

static int write_index(hf_snk *k, char *err, size_t errlen)
{
    const flas_param_table *t = k->base.table;
    json_t *j = json_object(), *meta = json_object(), *wm = json_object();
    uint64_t total = 0;
    char name[128], file[64];
    for (int i = 0; i < t->n_tensors; i++) {
        total += tensor_bytes(k, &t->tensors[i]);
        hf_name(&t->tensors[i], name, sizeof name);
        shard_file(k, k->shard_of[i], file, sizeof file);
        json_object_set_new(wm, name, json_string(file));
    }
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    json_object_set_new(j, "metadata", meta);
    json_object_set_new(j, "weight_map", wm);
    char *txt = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    if (!txt)
        return flas_fail(err, errlen, "out of memory");
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/" HF_INDEX, k->tmpdir);
    int rc = flas_atomic_write_file(path, txt, strlen(txt), err, errlen);
    free(txt);
    return rc;
}

static int hf_commit(ix_sink *s, char *err, size_t errlen)
{
    hf_snk *k = (hf_snk *)s;
    char path[PATH_MAX + 32];
    int rc = close_shard(k, err, errlen) || write_config(k, err, errlen) ||
             (k->n_shards > 1 && write_index(k, err, errlen)) ? -1 : 0;
    if (!rc && k->tokenizer[0]) {
        snprintf(path, sizeof path, "%s/" HF_TOKENIZER, k->tmpdir);
        rc = flas_atomic_copy(k->tokenizer, path, err, errlen);
    }
    if (!rc && flas_fsync_dir_of(k->tmpdir, 1) != 0)
        rc = flas_fail(err, errlen, "%s: fsync: %s", k->tmpdir, strerror(errno));
    if (!rc) {
        /* The directory appears whole: renamed into place, or exchanged with the one it replaces. */
        struct stat st;
        int exists = lstat(k->final, &st) == 0;
        if (!exists && renameat2(AT_FDCWD, k->tmpdir, AT_FDCWD, k->final, RENAME_NOREPLACE) != 0)
            rc = flas_fail(err, errlen, "%s: %s", k->final,
                           errno == EEXIST ? "appeared while converting (give --force to replace it)" : strerror(errno));
        else if (exists && (!k->o.force || renameat2(AT_FDCWD, k->tmpdir, AT_FDCWD, k->final, RENAME_EXCHANGE) != 0))
            rc = flas_fail(err, errlen, "%s: %s", k->final, !k->o.force ? "exists (give --force to replace it)" : strerror(errno));
        else if (exists)
            remove_dir(k->tmpdir); /* now the old model */
        if (!rc) {
            free(k->tmpdir);
            k->tmpdir = NULL;
            if (flas_fsync_dir_of(k->final, 0) != 0)
                rc = flas_fail(err, errlen, "%s: fsync of the parent directory: %s", k->final, strerror(errno));
        }
    }
    if (rc && k->tmpdir)
        remove_dir(k->tmpdir);
    hf_free(k);
    return rc;
}

/* An existing output directory is replaced (--force) only when it holds a model and nothing else that
 * removing it could destroy: plain files only, config.json among them. */
static int replaceable(const char *dir, int force, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(dir, &st) != 0)
        return errno == ENOENT ? 0 : flas_fail(err, errlen, "%s: %s", dir, strerror(errno));
    if (!force)
        return flas_fail(err, errlen, "%s exists (give --force to replace it)", dir);
    if (!S_ISDIR(st.st_mode))
        return flas_fail(err, errlen, "%s exists and is not a directory: not replaced", dir);
    DIR *d = opendir(dir);
    if (!d)
        return flas_fail(err, errlen, "%s: %s", dir, strerror(errno));
    int config = 0, other = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            other = 1;
        config |= !strcmp(e->d_name, HF_CONFIG);
    }
    closedir(d);
    if (!config || other)
        return flas_fail(err, errlen, "%s exists and is not a model directory of plain files: not replaced", dir);
    return 0;
}

ix_sink *ix_hf_create(const char *dir, const flas_param_table *t, const flas_convert_opts *o, const char *tokenizer,
                      char *err, size_t errlen)
{
    if (replaceable(dir, o->force, err, errlen))
        return NULL;
    hf_snk *k = calloc(1, sizeof *k);
    if (!k) {
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    k->o = *o;
    k->cur = -1;
    k->bos = 1;
    k->eos = 2;
    k->base.table = t;
    k->base.write = hf_write;
    k->base.commit = hf_commit;
    k->base.abort = hf_abort;
    snprintf(k->final, sizeof k->final, "%s", dir);
    size_t n = strlen(k->final);
    while (n > 1 && k->final[n - 1] == '/')
        k->final[--n] = '\0';
    if (tokenizer) {
        flas_tokenizer *tok = flas_tokenizer_open(tokenizer, err, errlen);
        if (!tok)
            goto fail;
        int v = flas_tokenizer_vocab_size(tok);
        k->bos = flas_tokenizer_bos_id(tok);
        k->eos = flas_tokenizer_eos_id(tok);
        flas_tokenizer_close(tok);
        if (v != t->cfg.vocab_size) {
            flas_fail(err, errlen, "%s has %d pieces, the model a vocabulary of %d", tokenizer, v, t->cfg.vocab_size);
            goto fail;
        }
        snprintf(k->tokenizer, sizeof k->tokenizer, "%s", tokenizer);
    }
    k->base.order = calloc((size_t)t->n_tensors, sizeof *k->base.order);
    k->shard_of = calloc((size_t)t->n_tensors, sizeof *k->shard_of);
    k->scratch = malloc(2 * (size_t)t->cfg.dim * (size_t)(t->cfg.dim / t->cfg.n_heads) * sizeof(float));
    if (!k->base.order || !k->shard_of || !k->scratch) {
        flas_fail(err, errlen, "out of memory");
        goto fail;
    }
    /* Shards in Meta order, each up to shard_bytes (a larger tensor gets a shard of its own). */
    uint64_t in_shard = 0;
    int s = 0;
    for (int i = 0; i < t->n_tensors; i++) {
        uint64_t b = tensor_bytes(k, &t->tensors[i]);
        if (o->shard_bytes && in_shard > 0 && in_shard + b > o->shard_bytes) {
            s++;
            in_shard = 0;
        }
        in_shard += b;
        k->shard_of[i] = s;
        k->base.order[i] = i;
    }
    k->n_shards = s + 1;
    /* The hidden temporary directory next to the output, renamed into place at commit. */
    char tmpl[PATH_MAX + 32];
    const char *slash = strrchr(k->final, '/');
    if (slash)
        snprintf(tmpl, sizeof tmpl, "%.*s/.%s.tmp.XXXXXX", (int)(slash - k->final), k->final, slash + 1);
    else
        snprintf(tmpl, sizeof tmpl, ".%s.tmp.XXXXXX", k->final);
    if (!mkdtemp(tmpl)) {
        flas_fail(err, errlen, "%s: cannot create a temporary directory next to it: %s", k->final, strerror(errno));
        goto fail;
    }
    chmod(tmpl, flas_atomic_mode(0777));
    k->tmpdir = strdup(tmpl);
    if (!k->tmpdir) {
        rmdir(tmpl);
        flas_fail(err, errlen, "out of memory");
        goto fail;
    }
    return &k->base;
fail:
    hf_free(k);
    return NULL;
}
