/* Model interchange: a FLaS checkpoint to and from the formats other LLaMA tools read.
 *
 *   flas     FLaS HDF5 checkpoint (flas/checkpoint.h): Meta names, float32, Meta's interleaved RoPE rows
 *   hf       Hugging Face directory: config.json, model.safetensors or its sharded form
 *            (model-0000k-of-0000n.safetensors + model.safetensors.index.json), tokenizer.model
 *   gguf     GGUF v3 file, architecture "llama" (llama.cpp), with the SentencePiece vocabulary embedded
 *   llama2c  llama2.c .bin, version 0 (legacy 7-int header) or 1 ("ak42", 256-byte header), float32
 *
 * Any format converts to any other; import means "to flas", export "from flas". The converter streams:
 * it holds one tensor (float32) plus fixed-size buffers, whatever the model's size, so a 70B model
 * converts on a login node. Every file header is hostile until checked against the file's real length.
 * The output appears atomically (temporary name, fsync, rename) or not at all.
 *
 * RoPE row order, the one difference between layouts that shapes cannot reveal: FLaS, GGUF and llama2.c
 * hold wq/wk rows in Meta's interleaved order (RoPE rotates rows 2j and 2j+1 of each head); Hugging Face
 * holds them in the half-split order its rotate_half expects (rows j and j + head_dim/2). The hf reader
 * and writer alone convert (flas_rope_to_half_split / flas_rope_to_interleaved). */
#ifndef FLAS_INTEROP_H
#define FLAS_INTEROP_H

#include <stddef.h>
#include <stdint.h>

#include "flas/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum flas_format {
    FLAS_FMT_UNKNOWN = 0,
    FLAS_FMT_FLAS,
    FLAS_FMT_HF,
    FLAS_FMT_GGUF,
    FLAS_FMT_LLAMA2C
} flas_format;

/* Element type of an output file. Readers take what the file says (f32, f16, bf16). */
typedef enum flas_dtype {
    FLAS_DT_F32 = 0,
    FLAS_DT_F16,
    FLAS_DT_BF16,
    FLAS_DT_Q8_0 /* GGUF only: blocks of 32 int8 with one f16 scale */
} flas_dtype;

typedef struct flas_convert_opts {
    flas_format from, to;      /* FLAS_FMT_UNKNOWN: detect (flas_format_detect_input/_output) */
    flas_dtype dtype;          /* output element type */
    const char *tokenizer;     /* SentencePiece .model: embedded in gguf, copied into hf (NULL: the hf
                                  input's own tokenizer.model, if any) */
    uint64_t shard_bytes;      /* hf output: most tensor bytes per safetensors file (0: one file) */
    int llama2c_version;       /* llama2c output: 0 or 1 */
    int seq_len;               /* > 0: context length to record instead of the input's */
    int64_t round;             /* flas output: round of the imported global */
    int force;                 /* replace an existing output */
    int progress;              /* progress lines on stderr */
} flas_convert_opts;

/* What a conversion did, for the tool's summary line. */
typedef struct flas_convert_report {
    flas_config cfg;
    flas_format from, to;
    int n_tensors;
    uint64_t params;           /* float32 elements moved */
    uint64_t bytes_in;         /* tensor bytes read */
    uint64_t bytes_out;        /* bytes of the output (all files) */
    uint64_t largest_tensor;   /* bytes of the largest tensor as float32: the converter's working set */
    double seconds;
    char tokenizer[4096];      /* the tokenizer embedded or copied, or "" */
} flas_convert_report;

void flas_convert_opts_init(flas_convert_opts *o);

/* Converts input to output. 0, or -1 with a one-line reason in err and nothing at output. */
int flas_convert(const char *input, const char *output, const flas_convert_opts *o, flas_convert_report *rep,
                 char *err, size_t errlen);

/* The format of an existing input (directory: hf; magic bytes: gguf, flas, llama2c v1; a name ending
 * .bin: llama2c v0), or FLAS_FMT_UNKNOWN with a reason in err. */
flas_format flas_format_detect_input(const char *path, char *err, size_t errlen);
/* The format an output name asks for: a name ending .h5 or .hdf5 flas, .gguf gguf, .bin llama2c,
 * anything else an hf directory. */
flas_format flas_format_detect_output(const char *path);

const char *flas_format_name(flas_format f);        /* "flas", "hf", "gguf", "llama2c" */
flas_format flas_format_parse(const char *name);    /* FLAS_FMT_UNKNOWN for others */
const char *flas_dtype_name(flas_dtype d);          /* "f32", "f16", "bf16", "q8_0" */
int flas_dtype_parse(const char *name, flas_dtype *out);

/* ---- element conversions (the reference for every reader and writer) ---------------------------- */

/* IEEE binary16 and bfloat16 to and from float32, round to nearest even, NaN kept NaN. */
uint16_t flas_f32_to_f16(float x);
float flas_f16_to_f32(uint16_t h);
uint16_t flas_f32_to_bf16(float x);
float flas_bf16_to_f32(uint16_t b);

#define FLAS_Q8_0_BLOCK 32                      /* values per block */
#define FLAS_Q8_0_BYTES (2 + FLAS_Q8_0_BLOCK)   /* f16 scale + 32 int8 */
/* Quantizes n floats (a multiple of 32) as llama.cpp's Q8_0: per block d = max|x| / 127 (as f16),
 * q = round(x / d). out gets n / 32 * FLAS_Q8_0_BYTES bytes. */
void flas_q8_0_quantize(const float *x, size_t n, unsigned char *out);
void flas_q8_0_dequantize(const unsigned char *in, size_t n, float *x);

/* ---- RoPE row order (see the top of this file) ------------------------------------------------- */

/* Reorders the rows of w [n_heads * head_dim, cols] in place, head by head, using scratch of
 * head_dim * cols floats: Meta interleaved -> HF half-split (transformers' "permute for sliced
 * rotary": view(n_heads, head_dim/2, 2, cols).transpose(1, 2)), and its inverse. */
void flas_rope_to_half_split(float *w, int n_heads, int head_dim, size_t cols, float *scratch);
void flas_rope_to_interleaved(float *w, int n_heads, int head_dim, size_t cols, float *scratch);

#ifdef __cplusplus
}
#endif
#endif
