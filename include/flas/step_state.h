/* "FLaS step state": one training step of the CPU core, written to a plain binary file, so that a
 * GPU trainer on a machine without HDF5, MPI or OpenBLAS can check its forward, backward and optimizer
 * against the CPU (the role of llm.c's gpt2_124M_debug_state.bin). The CPU writes it
 * (tests/gpu/write_step_state), the GPU harness reads it: this header is the contract between them.
 *
 * The reader and writer (runtime/step_state.c) are plain C99 plus the POSIX calls of flas_common's
 * atomic write, so a GPU harness compiles them with the host compiler and no FLaS dependency:
 *     cc -std=c99 -Iinclude runtime/step_state.c runtime/model_config.c \
 *        runtime/common/atomic_file.c runtime/common/error.c -lm -lpthread
 * (model_config.c gives flas_config_validate and the parameter layout; it needs libm only.)
 *
 * File layout, version 1. Every integer and float is little-endian; floats are IEEE-754 binary32,
 * integers two's complement. No padding anywhere: offsets below are exact.
 *
 *   offset size type     field
 *   ------ ---- -------- ------------------------------------------------------------------------------
 *        0    8 char[8]  magic "FLaSstep" (no NUL)
 *        8    4 u32      version, 1
 *       12    4 u32      flags: bit 0 set = the CPU ran the plain-loop reference layers (layers_ref.c)
 *                        rather than the fast path; every other bit must be 0
 *       16    4 i32      cfg.dim
 *       20    4 i32      cfg.n_layers
 *       24    4 i32      cfg.n_heads
 *       28    4 i32      cfg.n_kv_heads
 *       32    4 i32      cfg.hidden_dim
 *       36    4 i32      cfg.vocab_size
 *       40    4 i32      cfg.seq_len
 *       44    4 f32      cfg.norm_eps
 *       48    4 f32      cfg.rope_theta
 *       52    4 i32      cfg.tied_embeddings (0 or 1)
 *       56    4 i32      B, sequences per batch (1 .. FLAS_STEP_STATE_MAX_BATCH)
 *       60    4 i32      T, positions per sequence (1 .. cfg.seq_len)
 *       64    8 u64      n_params: floats of the model = flas_param_table_init(cfg, tp_rank 0,
 *                        tp_size 1).n_params (the reader refuses any other value)
 *       72    8 u64      seed the writer initialised the weights and drew the tokens with (informative)
 *       80    8 u64      n_logits: 0 (not stored) or B * T * vocab_size
 *       88    4 i32      S, optimizer steps recorded (0 .. FLAS_STEP_STATE_MAX_STEPS)
 *       92    4 f32      loss: mean cross-entropy of the reference batch at params
 *       96    4 f32      adamw.lr_max    } the schedule the writer's per-step lr came from
 *      100    4 f32      adamw.lr_min    } (flas_lr_at of optim.h: linear warmup, cosine decay);
 *      104    4 i32      adamw.warmup    } informative: the per-step lr array below is what to use
 *      108    4 i32      adamw.decay     }
 *      112    4 f32      adamw.beta1     in [0, 1)
 *      116    4 f32      adamw.beta2     in [0, 1)
 *      120    4 f32      adamw.eps       > 0
 *      124    4 f32      adamw.weight_decay >= 0 (matrices only, not RMSNorm weights: see optim.h)
 *      128    4 f32      adamw.clip      global-norm clip, <= 0 means no clipping
 *      132    4 u32      reserved, 0
 *      136               end of the fixed header (FLAS_STEP_STATE_HEADER_BYTES); then the arrays:
 *
 *   params   f32[n_params]     the weights, in flas_param_table order (Meta names: tok_embeddings,
 *                              per block attention_norm wq wk wv wo ffn_norm w1 w2 w3, norm, output
 *                              unless tied); linear weights [out, in] row-major
 *   tokens   i32[B*T]          the reference batch, row b = sequence b; each in [0, vocab_size)
 *   targets  i32[B*T]          next-token targets of the same positions; each in [0, vocab_size)
 *   grads    f32[n_params]     d(loss)/d(params) from ONE forward + backward(loss_scale 1) on zeroed
 *                              grads, same layout as params
 *   logits   f32[n_logits]     [B*T, vocab_size] row-major, when n_logits != 0
 *   step_tokens  i32[S*B*T]    step s's batch at [s*B*T, (s+1)*B*T)
 *   step_targets i32[S*B*T]
 *   step_lr      f32[S]        the learning rate AdamW step s used
 *   step_loss    f32[S]        the loss of step s's forward, before its update
 *   step_norm    f32[S]        the global gradient norm of step s, before clipping
 *   end of file: the file is exactly this long (the reader refuses trailing bytes).
 *
 * Replaying the S steps (what a GPU trainer compares): start from params with fresh AdamW moments
 * (zero, step count 0); for s = 0 .. S-1: zero the grads, forward step s's batch (its loss must match
 * step_loss[s]), backward with loss_scale 1, clip to adamw.clip (flas_model_clip_grad_norm), then
 * flas_adamw_step with lr = step_lr[s]. One micro-batch per step, tp 1, no data parallelism.
 * tests/gpu/write_step_state uses the reference batch as step 0's batch, so step_loss[0] == loss. */
#ifndef FLAS_STEP_STATE_H
#define FLAS_STEP_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "flas/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_STEP_STATE_MAGIC "FLaSstep"
#define FLAS_STEP_STATE_VERSION 1u
#define FLAS_STEP_STATE_HEADER_BYTES 136
#define FLAS_STEP_STATE_FLAG_REFERENCE 1u
/* Bounds the reader enforces before it allocates anything (the file length bounds the rest). */
#define FLAS_STEP_STATE_MAX_BATCH 65536
#define FLAS_STEP_STATE_MAX_STEPS 1000000

/* The optimizer of the S recorded steps (optim.h's AdamW and clipping). */
typedef struct flas_step_adamw {
    float lr_max, lr_min;
    int32_t warmup, decay;
    float beta1, beta2, eps, weight_decay, clip;
} flas_step_adamw;

/* One file's content. Arrays the state owns after flas_step_state_read; for a write they are the
 * caller's (NULL where the count is 0). */
typedef struct flas_step_state {
    flas_config cfg;
    int reference;              /* 1: computed with the plain-loop reference layers */
    int B, T;
    uint64_t seed;
    size_t n_params;            /* floats in params and in grads */
    float *params;              /* [n_params] */
    int32_t *tokens, *targets;  /* [B*T] */
    float loss;
    float *grads;               /* [n_params] */
    size_t n_logits;            /* 0 or B*T*vocab_size */
    float *logits;
    flas_step_adamw adamw;
    int n_steps;                /* S */
    int32_t *step_tokens, *step_targets; /* [S*B*T] */
    float *step_lr, *step_loss, *step_norm; /* [S] */
} flas_step_state;

/* Reads and checks a whole file (see the layout above). The file is treated as hostile: magic,
 * version, flags, the config (flas_config_validate), every count against its bound and the file's
 * length (overflow-safe), n_params against the config's layout, every token and target against the
 * vocabulary and, when S > 0, the AdamW hyper-parameters. 0, or -1 with a one-line reason in err and
 * *s zeroed (nothing to free). */
int flas_step_state_read(const char *path, flas_step_state *s, char *err, size_t errlen);
/* The same checks on a file already in memory (tests, fuzzing). */
int flas_step_state_parse(const void *buf, size_t len, flas_step_state *s, char *err, size_t errlen);
/* Checks s as the reader would, then writes it atomically (flas/atomic_file.h: a temporary file
 * beside path, fsync, rename), so a reader never sees a partial state. 0, or -1 with err set. */
int flas_step_state_write(const char *path, const flas_step_state *s, char *err, size_t errlen);
/* Bytes of the file s makes, or 0 if a count overflows. */
size_t flas_step_state_file_bytes(const flas_step_state *s);
/* Frees what flas_step_state_read allocated and zeroes *s. */
void flas_step_state_free(flas_step_state *s);

#ifdef __cplusplus
}
#endif
#endif
