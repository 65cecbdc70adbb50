/* What the aggregator's C tests share: a stories260K checkpoint (untied head) written from one flat
 * float32 buffer with the checkpoint library. */
#ifndef AGG_TESTUTIL_H
#define AGG_TESTUTIL_H

#include <stdint.h>

#include "flas/checkpoint.h"

/* Writes path (role, site, tokens, base, round) with params buf (flas_ckpt_writer_tensors' n_params
 * values); fails the current check test on any error. */
void agg_write_params(const char *path, flas_ckpt_role role, const char *site, int64_t tokens, const char *base,
                      const float *buf, int64_t round);
#endif
