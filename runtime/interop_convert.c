/* The converter's driver (flas/interop.h): opens the source, checks its config, creates the sink, and
 * moves the tensors one at a time in the order the sink asks for, through one buffer the size of the
 * largest tensor. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flas/error.h"
#include "flas/interop.h"
#include "interop_internal.h"

static const char *const FORMAT_NAMES[] = {"unknown", "flas", "hf", "gguf", "llama2c"};
static const char *const DTYPE_NAMES[] = {"f32", "f16", "bf16", "q8_0"};

const char *flas_format_name(flas_format f)
{
    return (unsigned)f < sizeof FORMAT_NAMES / sizeof *FORMAT_NAMES ? FORMAT_NAMES[f] : "unknown";
}

flas_format flas_format_parse(const char *name)
{
    for (int i = 1; i < (int)(sizeof FORMAT_NAMES / sizeof *FORMAT_NAMES); i++)
        if (!strcmp(name, FORMAT_NAMES[i]))
            return (flas_format)i;
    return FLAS_FMT_UNKNOWN;
}

const char *flas_dtype_name(flas_dtype d)
{
    return (unsigned)d < sizeof DTYPE_NAMES / sizeof *DTYPE_NAMES ? DTYPE_NAMES[d] : "?";
}

int flas_dtype_parse(const char *name, flas_dtype *out)
{
    for (int i = 0; i < (int)(sizeof DTYPE_NAMES / sizeof *DTYPE_NAMES); i++)
        if (!strcmp(name, DTYPE_NAMES[i])) {
            *out = (flas_dtype)i;
            return 0;
        }
    return -1;
}

void flas_convert_opts_init(flas_convert_opts *o)
{
    memset(o, 0, sizeof *o);
    o->dtype = FLAS_DT_F32;
    o->llama2c_version = 1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

flas_format flas_format_detect_input(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        flas_fail(err, errlen, "%s: %s", path, strerror(errno));
        return FLAS_FMT_UNKNOWN;
    }
    if (S_ISDIR(st.st_mode))
        return FLAS_FMT_HF;
    if (!S_ISREG(st.st_mode)) {
        flas_fail(err, errlen, "%s: not a regular file or a directory", path);
        return FLAS_FMT_UNKNOWN;
    }
    unsigned char m[8] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    ssize_t n = fd >= 0 ? pread(fd, m, sizeof m, 0) : -1;
    if (fd >= 0)
        close(fd);
    if (n < 0) {
        flas_fail(err, errlen, "%s: %s", path, strerror(errno));
        return FLAS_FMT_UNKNOWN;
    }
    if (n >= 4 && !memcmp(m, "GGUF", 4))
        return FLAS_FMT_GGUF;
    if (n == 8 && !memcmp(m, "\x89HDF\r\n\x1a\n", 8))
        return FLAS_FMT_FLAS;
    if (n >= 4 && !memcmp(m, "24ka", 4)) /* 0x616b3432 little-endian */
        return FLAS_FMT_LLAMA2C;
    if (ends_with(path, ".bin"))
        return FLAS_FMT_LLAMA2C;
    flas_fail(err, errlen, "%s: format not recognised (not an hf directory, GGUF, FLaS HDF5 or llama2.c file; "
                           "give --from)", path);
    return FLAS_FMT_UNKNOWN;
}

flas_format flas_format_detect_output(const char *path)
{
    if (ends_with(path, ".h5") || ends_with(path, ".hdf5"))
        return FLAS_FMT_FLAS;
    if (ends_with(path, ".gguf"))
        return FLAS_FMT_GGUF;
    if (ends_with(path, ".bin"))
        return FLAS_FMT_LLAMA2C;
    return FLAS_FMT_HF;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static ix_source *open_source(flas_format f, const char *path, char *err, size_t errlen)
{
    switch (f) {
    case FLAS_FMT_FLAS: return ix_flas_open(path, err, errlen);
    case FLAS_FMT_HF: return ix_hf_open(path, err, errlen);
    case FLAS_FMT_GGUF: return ix_gguf_open(path, err, errlen);
    case FLAS_FMT_LLAMA2C: return ix_llama2c_open(path, err, errlen);
    default: flas_fail(err, errlen, "no input format"); return NULL;
    }
}

/* Which element types each output takes. */
static int dtype_allowed(flas_format f, flas_dtype d)
{
    switch (f) {
    case FLAS_FMT_HF: return d != FLAS_DT_Q8_0;
    case FLAS_FMT_GGUF: return 1;
    default: return d == FLAS_DT_F32;
    }
}

int flas_convert(const char *input, const char *output, const flas_convert_opts *o, flas_convert_report *rep,
                 char *err, size_t errlen)
{
    flas_convert_report dummy;
    if (!rep)
        rep = &dummy;
    memset(rep, 0, sizeof *rep);
    const double t0 = now();
    flas_format from = o->from ? o->from : flas_format_detect_input(input, err, errlen);
    if (!from)
        return -1;
    flas_format to = o->to ? o->to : flas_format_detect_output(output);
    rep->from = from;
    rep->to = to;
    if (!dtype_allowed(to, o->dtype))
        return flas_fail(err, errlen, "--dtype %s: %s output is %s", flas_dtype_name(o->dtype), flas_format_name(to),
                         to == FLAS_FMT_HF ? "f32, f16 or bf16" : "f32 only");
    if (to != FLAS_FMT_HF && ix_output_free(output, o->force, err, errlen))
        return -1;
    ix_source *src = open_source(from, input, err, errlen);
    if (!src)
        return -1;
    flas_config cfg = src->cfg;
    if (o->seq_len > 0)
        cfg.seq_len = o->seq_len;
    else if (!src->has_seq_len) {
        src->close(src);
        return flas_fail(err, errlen, "%s: the file records no context length: give --seq-len N", input);
    }
    char why[256];
    if (flas_config_validate(&cfg, 1, why, sizeof why)) {
        src->close(src);
        return flas_fail(err, errlen, "%s: unusable model config: %s", input, why);
    }
    src->cfg = cfg;
    rep->cfg = cfg;
    flas_param_table tab;
    if (flas_param_table_init(&tab, &cfg, 0, 1, err, errlen)) {
        src->close(src);
        return -1;
    }
    const char *tokenizer = o->tokenizer ? o->tokenizer : (src->tokenizer[0] ? src->tokenizer : NULL);
    if (tokenizer)
        snprintf(rep->tokenizer, sizeof rep->tokenizer, "%s", tokenizer);
    size_t largest = 0;
    for (int i = 0; i < tab.n_tensors; i++)
        if (tab.tensors[i].numel > largest)
            largest = tab.tensors[i].numel;
    ix_sink *k = NULL;
    switch (to) {
    case FLAS_FMT_FLAS: k = ix_flas_create(output, &tab, o, err, errlen); break;
    case FLAS_FMT_HF: k = ix_hf_create(output, &tab, o, tokenizer, err, errlen); break;
    case FLAS_FMT_GGUF: k = ix_gguf_create(output, &tab, o, tokenizer, err, errlen); break;
    case FLAS_FMT_LLAMA2C: k = ix_llama2c_create(output, &tab, o, err, errlen); break;
    default: flas_fail(err, errlen, "no output format"); break;
    }
    float *buf = k ? malloc(largest * sizeof(float)) : NULL;
    int rc = k && buf ? 0 : -1;
    if (k && !buf)
        flas_fail(err, errlen, "out of memory for a tensor of %zu floats", largest);
    uint64_t moved = 0;
    double next_report = t0 + 2.0; /* a line every 2 s: quick conversions print only their summary */
    const uint64_t total = (uint64_t)tab.n_params_full;
    for (int i = 0; i < tab.n_tensors && !rc; i++) {
        const flas_tensor *t = &tab.tensors[k->order[i]];
        rc = src->read(src, t, buf, err, errlen);
        if (!rc)
            rc = k->write(k, t, buf, err, errlen);
        moved += t->numel;
        if (!rc && o->progress && now() >= next_report) {
            double dt = now() - t0;
            fprintf(stderr, "flas-convert: %3.0f%% %d/%d tensors, %.2f GB read in %.1f s (%.2f GB/s)\n",
                    100.0 * (double)moved / (double)total, i + 1, tab.n_tensors, (double)src->bytes_in / 1e9, dt,
                    (double)src->bytes_in / 1e9 / dt);
            next_report = now() + 2.0;
        }
    }
    free(buf);
    uint64_t out_bytes = 0;
    if (k && !rc) {
        out_bytes = k->bytes_out; /* commit frees k */
        rc = k->commit(k, err, errlen);
    } else if (k)
        k->abort(k);
    rep->bytes_in = src->bytes_in;
    src->close(src);
    rep->n_tensors = tab.n_tensors;
    rep->params = total;
    rep->largest_tensor = (uint64_t)largest * 4;
    rep->seconds = now() - t0;
    flas_param_table_free(&tab);
    if (rc)
        return -1;
    rep->bytes_out = out_bytes;
    return 0;
}
