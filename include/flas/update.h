/* Compressed model updates: a model sent as a DELTA against a model the receiver already holds, stored
 * as bf16 or as blockwise int8 (docs/checkpoint-format.md, "Update files").
 *
 * An update file is a FLaS checkpoint (same gate, validation, root attributes, atomic commit) whose
 * /params section is replaced by /update/<name> (the delta, int8 or bf16 bits, full tensor shape) and,
 * for int8, /update_scale/<name> (one float32 scale per block of `update_block` consecutive elements of
 * the row-major tensor). Its base_sha256 names the model the delta applies to; a reader refuses to
 * apply it to any other.
 *
 * Error feedback: whoever encodes keeps the residual (what quantisation lost) and adds it to the next
 * delta it encodes, so the sum of what was sent tracks the sum of the true deltas within one
 * quantisation step instead of drifting (Seide et al. 2014; Karimireddy et al. 2019).
 *
 * Decoding is bit-reproducible: x + d, with d = (float)q * scale (int8) or the bf16 value, each one
 * IEEE single-precision rounding and never fused (the implementation is compiled with
 * -ffp-contract=off), so the coordinator and a site that apply the same update to the same base get
 * the same bytes. */
#ifndef FLAS_UPDATE_H
#define FLAS_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum flas_update_enc {
    FLAS_UPDATE_FULL = 0, /* not an update: full float32 parameters (an ordinary checkpoint) */
    FLAS_UPDATE_BF16,     /* delta rounded to bfloat16 (round to nearest even): 2 bytes per value */
    FLAS_UPDATE_INT8,     /* delta as int8 in [-127, 127] with a float32 scale per block: 1 + 4/block bytes */
    FLAS_UPDATE_N_ENC
} flas_update_enc;

#define FLAS_UPDATE_BLOCK_MIN 64
#define FLAS_UPDATE_BLOCK_MAX 256
#define FLAS_UPDATE_BLOCK_DEFAULT 128 /* 1.03 bytes per value: 3.88x smaller than float32 */

const char *flas_update_enc_name(flas_update_enc e); /* "full", "bf16", "int8" */
int flas_update_enc_parse(const char *name, flas_update_enc *e); /* 0, or -1 for an unknown name */
/* 0 if block is a valid int8 block size (FLAS_UPDATE_BLOCK_MIN..MAX), else -1 with err. */
int flas_update_block_check(int block, char *err, size_t errlen);
/* Bytes of the encoded delta of n values (data + scales; no file overhead). */
double flas_update_bytes(flas_update_enc e, int block, double n);

/* ---- the numerics (in memory) ------------------------------------------------------------------ */

/* Encodes n values of x (block-aligned: x[0] starts a block). int8: q (int8_t[n]) and scales
 * (float[ceil(n/block)]): scale = max|x| / 127 over the block, q = round(x / scale); bf16: q
 * (uint16_t[n]), scales unused (may be NULL). residual (may be NULL) receives x - decode(q).
 * -1 if some x is not finite (nothing sensible can be sent), else 0. */
int flas_update_encode(flas_update_enc e, int block, const float *x, size_t n, void *q, float *scales,
                       float *residual);
/* out[i] = decode(q)[i], for n values starting at element `first` of the encoded tensor (any first:
 * the scale of element first+i is scales[(first+i)/block - first/block]). */
void flas_update_decode(flas_update_enc e, int block, size_t first, const void *q, const float *scales, size_t n,
                        float *out);

/* out[i] = x[i] + d[i], rounded once per element and never fused with the decode (see above). out may be
 * x or d. */
void flas_update_add(const float *x, const float *d, size_t n, float *out);

/* ---- whole files --------------------------------------------------------------------------------- */

typedef struct flas_update_opts {
    flas_update_enc enc;
    int block;          /* int8 block size (0: FLAS_UPDATE_BLOCK_DEFAULT) */
    size_t chunk_elems; /* elements per streamed chunk (0: 1 Mi); memory is a few chunks, not the model */
    int progress;       /* progress lines on stderr */
    /* apply: the sha256 the output must have (the model the sender made from the same base and update;
     * NULL: not checked). A different result is never left at output: -2 is returned, and the caller
     * fetches the whole model instead (another FLaS or HDF5 version writes other bytes). */
    const char *expect_sha256;
    /* encode: sha256(base) when the caller already knows it (a staged global verified by the plugin);
     * NULL: base is hashed here, which for a large model takes a while on every call */
    const char *base_sha256;
} flas_update_opts;

typedef struct flas_update_report {
    char base_sha256[65];  /* of `base` */
    uint64_t bytes_in;     /* size of `target` */
    uint64_t bytes_out;    /* size of the update written */
    double delta_norm;     /* ||target - base + residual_in||_2: what was to be sent */
    double residual_norm;  /* ||residual_out||_2: what error feedback carries to the next update */
    double seconds;
} flas_update_report;

/* Encodes target - base (+ the residual in residual_in, a checkpoint whose params are a previous
 * residual; NULL: none) into the update file update_out, and writes the new residual to residual_out
 * (NULL: dropped; a checkpoint with the residual as params, role and site of target). base must be the
 * model target was trained from (sha256(base) == target's base_sha256) unless target is a global model
 * (then the update names sha256(base) and the caller vouches for it). The update carries target's
 * round, site, step, tokens_trained and metrics. Streams chunk by chunk. 0, or -1 with err. Each file
 * is written atomically, the residual first: if the update then fails, the new residual stays (a
 * caller that names residuals by round never reads it in a retry of that round), and nothing is left
 * at update_out that was not there before. report may be NULL. */
int flas_update_encode_file(const char *base, const char *target, const char *residual_in, const char *update_out,
                            const char *residual_out, const flas_update_opts *o, flas_update_report *report,
                            char *err, size_t errlen);

/* Writes output = base + decode(update): a params-only checkpoint with the update's role, round, site,
 * step, tokens_trained and creation time, and base_sha256 = the update's base. Refuses an update whose
 * base_sha256 is not sha256(base), a config that differs, and non-finite results. The output's bytes
 * depend only on the inputs (and FLaS's and HDF5's versions): two hosts applying the same update to
 * the same base write identical files. 0, -1 with err, or -2 (err set) when the result is not
 * o->expect_sha256. */
int flas_update_apply_file(const char *base, const char *update, const char *output, const flas_update_opts *o,
                           char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
