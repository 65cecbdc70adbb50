/* Inside the converter (flas/interop.h): one reader (a "source") and one writer (a "sink") per format,
 * and the driver in interop_convert.c that moves tensors from one to the other, one at a time.
 *
 * A source knows the model's config after open and hands out any tensor by its Meta description, as
 * float32 in Meta's layout and RoPE row order. A sink is created for a config and a tensor table, says
 * in which order it wants the tensors (llama2.c groups them by kind across layers; the others take
 * Meta order), takes each one once, and commits (the output appears) or aborts (nothing appears). */
#ifndef FLAS_INTEROP_INTERNAL_H
#define FLAS_INTEROP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "flas/interop.h"
#include "flas/model.h"

#define IX_IO_BYTES ((size_t)4 << 20) /* the fixed buffer of every reader and writer */
#define IX_JSON_MAX ((size_t)100 << 20) /* largest JSON header or config accepted */
/* More tensors than any LLaMA model has (9 per block, FLAS_CKPT_MAX_LAYERS blocks, plus the rest and
 * harmless extras such as rotary_emb.inv_freq): a file claiming more is refused before any lookup. */
#define IX_MAX_TENSORS (10 * 1024 + 16)

typedef struct ix_source {
    flas_config cfg;
    int has_seq_len;              /* 0: the format does not record one (the caller must give it) */
    char tokenizer[4096];         /* a tokenizer.model found with the input, or "" */
    uint64_t bytes_in;            /* tensor bytes read so far */
    /* Reads the whole tensor t (full shape, as flas_param_table_init(cfg, 0, 1) lays it out) into out. */
    int (*read)(struct ix_source *s, const flas_tensor *t, float *out, char *err, size_t errlen);
    void (*close)(struct ix_source *s);
} ix_source;

typedef struct ix_sink {
    const flas_param_table *table;
    int *order;                   /* table indices in the order write expects them; n_tensors entries */
    uint64_t bytes_out;
    int (*write)(struct ix_sink *k, const flas_tensor *t, const float *data, char *err, size_t errlen);
    int (*commit)(struct ix_sink *k, char *err, size_t errlen);
    void (*abort)(struct ix_sink *k);     /* frees k */
} ix_sink;

/* The sources. Each validates everything it will later rely on before returning. */
ix_source *ix_flas_open(const char *path, char *err, size_t errlen);
ix_source *ix_hf_open(const char *dir, char *err, size_t errlen);
ix_source *ix_gguf_open(const char *path, char *err, size_t errlen);
ix_source *ix_llama2c_open(const char *path, char *err, size_t errlen);

/* The sinks. commit frees the sink too. */
ix_sink *ix_flas_create(const char *path, const flas_param_table *t, const flas_convert_opts *o, char *err,
                        size_t errlen);
ix_sink *ix_hf_create(const char *dir, const flas_param_table *t, const flas_convert_opts *o,
                      const char *tokenizer, char *err, size_t errlen);
ix_sink *ix_gguf_create(const char *path, const flas_param_table *t, const flas_convert_opts *o,
                        const char *tokenizer, char *err, size_t errlen);
ix_sink *ix_llama2c_create(const char *path, const flas_param_table *t, const flas_convert_opts *o, char *err,
                           size_t errlen);

/* ---- shared helpers (interop_io.c) ------------------------------------------------------------- */

/* An input file whose length was measured once at open: every offset from the file is checked
 * against it before use. */
typedef struct ix_file {
    int fd;
    uint64_t size;
    char path[4096];
} ix_file;

int ix_file_open(ix_file *f, const char *path, char *err, size_t errlen); /* regular files only */
void ix_file_close(ix_file *f);
/* Reads exactly n bytes at off; refuses a range outside the file ("truncated"). */
int ix_file_read(ix_file *f, uint64_t off, void *buf, size_t n, char *err, size_t errlen);

/* An output file written in order, through IX_IO_BYTES of buffer, to a hidden temporary created
 * exclusively next to its final name; ix_out_commit fsyncs and renames it into place. */
typedef struct ix_out {
    int fd;
    char *tmp;                    /* temporary path */
    char final[4096];
    uint64_t written;
    unsigned char *buf;
    size_t used;
} ix_out;

int ix_out_create(ix_out *o, const char *final_path, char *err, size_t errlen);
int ix_out_write(ix_out *o, const void *data, size_t n, char *err, size_t errlen);
int ix_out_zeros(ix_out *o, size_t n, char *err, size_t errlen);
/* Flushes, fsyncs, renames onto final (refusing an existing final unless force); closes either way. */
int ix_out_commit(ix_out *o, int force, char *err, size_t errlen);
void ix_out_abort(ix_out *o);      /* closes and unlinks the temporary */

/* Writes n float32 elements converted to dtype (f32, f16 or bf16) through a fixed buffer. */
int ix_out_write_floats(ix_out *o, const float *x, size_t n, flas_dtype dt, char *err, size_t errlen);

/* Refuses an output that exists unless force; and an hf output directory that is not replaceable. */
int ix_output_free(const char *path, int force, char *err, size_t errlen);

/* float32 to little-endian f16 or bf16 (2 n bytes at out). */
void ix_to_half(const float *x, size_t n, flas_dtype dt, unsigned char *out);

/* Converts n elements of a little-endian file type (f32, f16, bf16) to float32. */
void ix_to_f32(const unsigned char *in, size_t n, flas_dtype dt, float *out);
size_t ix_dtype_size(flas_dtype dt); /* bytes per element (f32 4, f16/bf16 2; q8_0: 0, use blocks) */

/* Reads a tensor of n elements of dtype dt at [off, off + n*size) into out, in chunks. */
int ix_read_elems(ix_file *f, uint64_t off, size_t n, flas_dtype dt, float *out, char *err, size_t errlen);

#endif
