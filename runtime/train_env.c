/* The round's context from the FLAS_* variables that flas.so exports into a --federation job's steps
 * (see include/flas/staging.h). Flags given on the command line win over them. */
#include "flas/error.h"
#include "flas/env.h"
#include "flas/staging.h"
#include "flas/train.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Copies variable name into dst unless the flag bit was given; "" and unset variables are skipped. */
static int take(flas_train_opts *o, unsigned bit, const char *name, char *dst, size_t len, char *err,
                size_t errlen)
{
    const char *v = getenv(name);
    if (!v || !*v || (o->given & bit))
        return 0;
    if (strlen(v) >= len)
        return flas_fail(err, errlen, "%s is longer than %zu characters", name, len - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

int flas_train_opts_from_env(flas_train_opts *o, char *err, size_t errlen)
{
    if (take(o, FLAS_GIVEN_FEDERATION, FLAS_ENV_FEDERATION, o->federation, sizeof o->federation, err, errlen) ||
        take(o, FLAS_GIVEN_SITE, FLAS_ENV_SITE, o->site, sizeof o->site, err, errlen) ||
        take(o, FLAS_GIVEN_GLOBAL, FLAS_ENV_GLOBAL_CHECKPOINT, o->global, sizeof o->global, err, errlen) ||
        take(o, FLAS_GIVEN_OUTPUT, FLAS_ENV_OUTPUT_CHECKPOINT, o->output, sizeof o->output, err, errlen) ||
        take(o, FLAS_GIVEN_OUTPUT_DIR, FLAS_ENV_OUTPUT_DIR, o->output_dir, sizeof o->output_dir, err, errlen) ||
        take(o, FLAS_GIVEN_JOB_ID, FLAS_ENV_JOB_ID, o->job_id, sizeof o->job_id, err, errlen))
        return -1;
    /* FLAS_ERROR is not a setting: the plugin found this job unfit to train (unverified model, closed
     * federation, ...). It is kept whatever the flags say; flas_train_main refuses to train with it. */
    const char *e = getenv(FLAS_ENV_ERROR);
    if (e && *e)
        snprintf(o->flas_error, sizeof o->flas_error, "%s", e);
    const char *sha = getenv(FLAS_ENV_GLOBAL_SHA256);
    if (sha && *sha && !(o->given & FLAS_GIVEN_GLOBAL_SHA)) {
        if (!flas_sha256_is_hex(sha))
            return flas_fail(err, errlen, "FLAS_GLOBAL_SHA256 '%.80s' is not 64 lowercase hex digits", sha);
        snprintf(o->global_sha256, sizeof o->global_sha256, "%s", sha);
    }
    const char *round = getenv(FLAS_ENV_ROUND);
    if (round && *round && !(o->given & FLAS_GIVEN_ROUND)) {
        long r = flas_parse_round(round);
        if (r < 0)
            return flas_fail(err, errlen, "FLAS_ROUND '%.40s' is not a round number (0..%ld)", round, FLAS_ROUND_MAX);
        o->round = r;
    }
    return 0;
}
