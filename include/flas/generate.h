/* Text sampling from any FLaS checkpoint: what a model writes after a prompt. */
#ifndef FLAS_GENERATE_H
#define FLAS_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "flas/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct flas_generate_opts {
    int max_new_tokens;   /* tokens to sample after the prompt */
    float temperature;    /* 0: greedy (argmax) */
    int top_k;            /* sample among the k most likely tokens (0: all) */
    uint64_t seed;        /* the same seed and prompt give the same text */
    int threads;          /* OpenMP threads (0: all processors) */
} flas_generate_opts;

/* Loads checkpoint (any role), encodes prompt with the tokenizer (BOS first), samples, and returns the
 * decoded continuation (prompt excluded), malloc'ed; stops early at EOS. The tokenizer's vocabulary
 * size must equal the model's. NULL with a one-line reason in err. */
char *flas_generate(const char *checkpoint, const flas_tokenizer *tok, const char *prompt,
                    const flas_generate_opts *o, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
