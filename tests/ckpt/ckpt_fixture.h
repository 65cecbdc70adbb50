/* Deterministic checkpoint contents for the checkpoint tests. Every value is exactly representable in
 * float32 and computable in numpy (tests/ckpt/h5py_check.py uses the same formula), so readers can be
 * checked element by element: value = ((tensor*7919 + elem*31 + section*104729 + gen*1000003) % 65521)
 * / 256 - 128, where elem is the row-major index in the FULL tensor. */
#ifndef CKPT_FIXTURE_H
#define CKPT_FIXTURE_H

#include "flas/checkpoint.h"

/* Everything optional, so that one file exercises the whole format. */
#define FIX_ALL (FLAS_CKPT_OPTIMIZER | FLAS_CKPT_TRAIN_STATE | FLAS_CKPT_SERVER_STATE | \
                 FLAS_CKPT_HAS(FLAS_CKPT_SERVER_M) | FLAS_CKPT_HAS(FLAS_CKPT_SERVER_V) | FLAS_CKPT_PROVENANCE | \
                 FLAS_CKPT_METRICS)

float fix_value(int section, int tensor, size_t elem, int gen);
/* The test model: stories260K with an untied output head (so output.weight exists), or "kill": a
 * ~100 MB model that takes long enough to write for kill tests. */
void fix_config(const char *which, flas_config *c);
void fix_meta(const flas_config *c, int gen, flas_ckpt_meta *m);
void fix_train(int gen, flas_train_state *s);
void fix_optimizer(int gen, flas_ckpt_optimizer *o);
void fix_server(int gen, flas_server_state *s);
void fix_metrics(int gen, flas_ckpt_metrics *m);
/* Fills a rank's flat buffer laid out by t (any tp layout) with the values of section/gen. */
void fix_fill(const flas_param_table *t, int section, int gen, float *buf);
/* Sets every chosen optional state of w; 0 or -1 with err. */
int fix_set_states(flas_ckpt_writer *w, unsigned contents, int gen, char *err, size_t errlen);
/* Writes a checkpoint from this rank's part: table layout (tp_rank, tp_size); params from data-parallel
 * rank 0 only; optimizer/server moments as ZeRO-1 slices over dp_size ranks. Collective over comm. */
int fix_write_split(const char *path, const char *which, int gen, int tp_rank, int tp_size, int dp_rank,
                    int dp_size, unsigned contents, MPI_Comm comm, char *err, size_t errlen);
/* Writes a whole checkpoint serially (put_flat of the full buffer per section). */
int fix_write(const char *path, const char *which, int gen, unsigned contents, char *err, size_t errlen);
/* Opens path serially and checks meta, states and EVERY value of every present section against gen.
 * Returns 0, or -1 with the first difference in err. *gen_out (if not NULL) receives the round. */
int fix_verify(const char *path, int gen, char *err, size_t errlen);



/* A fresh directory for one test (under $TMPDIR or /tmp) and its removal. */
void fix_tmpdir(char *out, size_t len);
void fix_rmtree(const char *dir);
/* Number of directory entries (excluding . and ..): "no temporary file left behind" checks. */
int fix_count_entries(const char *dir);
#endif
