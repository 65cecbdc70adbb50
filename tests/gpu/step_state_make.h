/* Computes a "FLaS step state" (flas/step_state.h) with the CPU core: the shared body of
 * write_step_state (the tool) and test_step_state (its unit test), so both make the same file. */
#ifndef FLAS_TESTS_STEP_STATE_MAKE_H
#define FLAS_TESTS_STEP_STATE_MAKE_H

#include <stddef.h>
#include <stdint.h>

#include "flas/step_state.h"

typedef struct step_state_opts {
    flas_config cfg;
    int B, T;
    uint64_t seed;      /* weights (flas_model_init_weights) and tokens */
    int steps;          /* S AdamW steps to record after the reference step */
    int reference;      /* 1: the plain-loop reference layers instead of the fast path */
    int threads;        /* OpenMP threads of the core; <= 0 all processors */
    int logits;         /* 1: store the reference logits (B*T*vocab floats), 0: not */
    flas_step_adamw adamw;
} step_state_opts;

/* Defaults: flas-train's optimizer (lr 3e-4 decaying to 3e-5, betas 0.9/0.95, eps 1e-8, weight decay
 * 0.1, clip 1), B 2, T 16 (capped at seq_len), seed 1, no steps, fast path, logits stored. */
void step_state_opts_default(step_state_opts *o, const flas_config *cfg);

/* Builds the model (tp 1), initialises it from seed, runs one forward + backward on the reference
 * batch, then S steps of clipping + AdamW (optim.h) on per-step batches (step 0 = the reference
 * batch), filling *s with malloc'ed arrays (flas_step_state_free frees them). 0, or -1 with err. */
int step_state_make(const step_state_opts *o, flas_step_state *s, char *err, size_t errlen);

#endif
