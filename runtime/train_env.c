/* The round's context from the FLAS_* variables that flas.so exports into a --federation job's steps
 * (see include/flas/staging.h). Flags given on the command line win over them. */
#include "flas/error.h"
#include "flas/env.h"
#include "flas/kv.h"
#include "flas/names.h"
#include "flas/staging.h"
#include "flas/train.h"
#include "train_internal.h"

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
        take(o, FLAS_GIVEN_JOB_ID, FLAS_ENV_JOB_ID, o->job_id, sizeof o->job_id, err, errlen) ||
        take(o, FLAS_GIVEN_STATE_DIR, FLAS_ENV_STATE_DIR, o->state_dir, sizeof o->state_dir, err, errlen))
        return -1;
    if (o->state_dir[0] && !(o->given & FLAS_GIVEN_STATE_DIR))
        snprintf(o->state_dir_from, sizeof o->state_dir_from, FLAS_ENV_STATE_DIR);
    /* the older name, only when the new one is not set */
    if (!o->state_dir[0]) {
        if (take(o, FLAS_GIVEN_STATE_DIR, FLAS_ENV_RESIDUAL_DIR, o->state_dir, sizeof o->state_dir, err, errlen))
            return -1;
        if (o->state_dir[0])
            snprintf(o->state_dir_from, sizeof o->state_dir_from, FLAS_ENV_RESIDUAL_DIR);
    }
    /* The coordinator's settings for the run: malformed values are refused, never defaulted. */
    const char *v;
    if ((v = getenv(FLAS_ENV_INNER_STATE)) && *v && !(o->given & FLAS_GIVEN_INNER_STATE) &&
        flas_train_parse_inner_state(v, &o->inner_keep, FLAS_ENV_INNER_STATE, err, errlen))
        return -1;
    if ((v = getenv(FLAS_ENV_LR_SCHEDULE)) && *v && !(o->given & FLAS_GIVEN_LR_SCHEDULE) &&
        flas_train_parse_lr_schedule(v, &o->lr_run, FLAS_ENV_LR_SCHEDULE, err, errlen))
        return -1;
    if ((v = getenv(FLAS_ENV_ROUNDS)) && *v && !(o->given & FLAS_GIVEN_ROUNDS) &&
        flas_train_parse_rounds(v, &o->rounds, FLAS_ENV_ROUNDS, err, errlen))
        return -1;
    if ((v = getenv(FLAS_ENV_PROX)) && *v && !(o->given & FLAS_GIVEN_PROX) &&
        flas_train_parse_prox(v, &o->prox, FLAS_ENV_PROX, err, errlen))
        return -1;
    /* The site's update settings: a malformed value is refused, never silently replaced by the default
     * (a site that asked for int8 and got full would publish 4x more than it agreed to). */
    const char *upd = getenv(FLAS_ENV_UPDATE);
    if (upd && *upd && !(o->given & FLAS_GIVEN_UPDATE) &&
        flas_train_parse_update(upd, &o->update, FLAS_ENV_UPDATE, err, errlen))
        return -1;
    const char *block = getenv(FLAS_ENV_UPDATE_BLOCK);
    if (block && *block && !(o->given & FLAS_GIVEN_UPDATE_BLOCK) &&
        flas_train_parse_update_block(block, &o->update_block, FLAS_ENV_UPDATE_BLOCK, err, errlen))
        return -1;
    /* The error-feedback state outlives jobs, so without a directory of the site's choosing it goes to
     * the user's own state directory (XDG base directories), one per federation and site: a site that
     * turns on compressed updates needs no other setting. */
    if (!o->state_dir[0] && o->federation[0] && o->site[0] && flas_name_valid(o->federation) &&
        flas_name_valid(o->site)) {
        const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
        int n = -1;
        if (xdg && xdg[0] == '/' && flas_kv_path_valid(xdg))
            n = snprintf(o->state_dir, sizeof o->state_dir, "%s/flas/%s/%s", xdg, o->federation, o->site);
        else if (home && home[0] == '/' && (flas_kv_path_valid(home) || !strcmp(home, "/")))
            n = snprintf(o->state_dir, sizeof o->state_dir, "%s/.local/state/flas/%s/%s",
                         strcmp(home, "/") ? home : "", o->federation, o->site);
        if (n > 0 && (size_t)n < sizeof o->state_dir)
            o->state_dir_default = 1;
        else
            o->state_dir[0] = '\0';
    }
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
    /* FLAS_STEPS: the coordinator's share of a speed-aware round. The same bounds as --steps, and a value
     * that is not exactly a number is an error, not a default: a job must not train a guessed amount. */
    const char *steps = getenv(FLAS_ENV_STEPS);
    if (steps && *steps && !(o->given & FLAS_GIVEN_STEPS)) {
        char *end;
        errno = 0;
        long n = strtol(steps, &end, 10);
        if (steps[0] < '1' || steps[0] > '9' || *end || errno || n < 1 || n > (1L << 40))
            return flas_fail(err, errlen, "FLAS_STEPS '%.40s' is not a step count (1..%ld)", steps, 1L << 40);
        o->steps = n;
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
