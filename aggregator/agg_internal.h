/* Internals of flas_agg shared by merge.c and validate.c (not installed). */
#ifndef FLAS_AGG_INTERNAL_H
#define FLAS_AGG_INTERNAL_H

#include "flas/aggregate.h"
#include "flas/checkpoint.h"

/* The previous global model and what the merge takes from it. */
typedef struct agg_previous {
    const char *path;
    flas_ckpt_reader *r;
    const flas_ckpt_meta *meta;
    char sha256[FLAS_SHA256_HEX];   /* of the file */
    char base_sha256[FLAS_SHA256_HEX]; /* what the inputs must name as their base (the file's, or
                                          flas_agg_options.base_sha256) */
    flas_server_state *server; /* NULL when the file has none */
    int m_from_file, v_from_file; /* the server buffers continue from the file (else start fresh) */
} agg_previous;

/* One local checkpoint. */
typedef struct agg_input {
    const char *path;
    flas_ckpt_reader *r;         /* open while usable */
    flas_agg_input_report *rep;  /* sha256, site, tokens, weight, used, reason */
    int hash_ok;
    char hash_err[256];
    int is_update;               /* an update file: its values are previous + decode(delta) */
} agg_input;

/* SHA-256 of the inputs in background threads, overlapping validation and the merge (the merge only
 * needs the previous global's digest up front). join waits and fills rep->sha256 / hash_ok. */
typedef struct agg_hasher agg_hasher;
agg_hasher *agg_hash_start(agg_input *in, int n, int threads);
void agg_hash_join(agg_hasher *h);
/* Stops handing out files (a refused round need not finish hashing), then joins. */
void agg_hash_cancel(agg_hasher *h);

/* After the digests are known: unreadable files and the same checkpoint given twice are refused. */
void agg_check_digests(agg_input *in, int n);

/* Opens and checks the previous global: USAGE-class failures. 0 or -1 with err. */
int agg_open_previous(agg_previous *prev, const flas_agg_options *o, char *err, size_t errlen);

/* Opens and checks every input against the previous global (format, role, config, base model, round,
 * tokens, one update per site). Sets rep->used = 1 for good inputs, else 0 with rep->reason. */
void agg_validate_inputs(const agg_previous *prev, agg_input *in, int n, const flas_agg_options *o);

#endif
