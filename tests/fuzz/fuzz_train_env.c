/* flas-train's FLAS_* environment: what the SPANK plugin, the coordinator (sbatch --export) and a site's
 * batch script hand a training job. flas_train_opts_from_env (runtime/train_env.c) reads them with
 * getenv, so this harness puts the fuzzed variables into its own environment, then runs what flas-train
 * runs: defaults, the environment, the command line (flas_train_parse_args, when the input has one), and
 * flas_train_opts_check.
 *
 * Input: 2 bytes of FLAS_GIVEN_* bits (flags already given on the command line), then NAME=VALUE lines;
 * optionally FZ_SEP and NUL-separated command-line arguments. Only the names below are ever set (putenv of
 * static buffers: glibc's setenv keeps every value it was ever given, which would grow without bound over
 * millions of runs), and every one is unset again afterwards (HOME restored). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/env.h"
#include "flas/kv.h"
#include "flas/names.h"
#include "flas/sha256.h"
#include "flas/staging.h"
#include "flas/train.h"
#include "support.h"

static const char *const names[] = {
    FLAS_ENV_FEDERATION, FLAS_ENV_SITE,         FLAS_ENV_STAGE_DIR,       FLAS_ENV_JOB_ID,
    FLAS_ENV_ROUND,      FLAS_ENV_GLOBAL_CHECKPOINT, FLAS_ENV_GLOBAL_SHA256, FLAS_ENV_OUTPUT_DIR,
    FLAS_ENV_OUTPUT_CHECKPOINT, FLAS_ENV_ERROR, FLAS_ENV_STEPS,           FLAS_ENV_UPDATE,
    FLAS_ENV_UPDATE_BLOCK, FLAS_ENV_RESIDUAL_DIR, "XDG_STATE_HOME",      "HOME"};
#define N_NAMES (sizeof names / sizeof names[0])
#define VALUE_MAX 8192

static char env_buf[N_NAMES][VALUE_MAX + 32];
static char home_buf[VALUE_MAX + 8];
static int have_home = -1;

static void restore_env(void)
{
    for (size_t i = 0; i < N_NAMES; i++)
        unsetenv(names[i]);
    if (have_home)
        putenv(home_buf);
}

#define MAX_ARGS 64
static flas_train_opts opts; /* large: not on the stack */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (have_home < 0) { /* once: the real HOME, put back after every input */
        const char *h = getenv("HOME");
        have_home = h && strlen(h) < VALUE_MAX;
        if (have_home)
            snprintf(home_buf, sizeof home_buf, "HOME=%s", h);
    }
    if (size < 2)
        return -1;
    unsigned given = (unsigned)data[0] | (unsigned)data[1] << 8;
    const uint8_t *part[2];
    size_t len[2];
    size_t n_parts = fz_split(data + 2, size - 2, FZ_SEP, part, len, 2);

    /* the environment: NAME=VALUE lines; a NUL ends a value as it would in a real environment */
    char *env = fz_strndup(part[0], len[0]);
    for (char *line = env, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        for (size_t i = 0; i < N_NAMES; i++)
            if (!strcmp(line, names[i])) {
                snprintf(env_buf[i], sizeof env_buf[i], "%s=%.*s", names[i], VALUE_MAX, eq + 1);
                putenv(env_buf[i]);
            }
    }

    flas_train_opts_init(&opts);
    opts.given = given & 0xfff;
    char err[2048];
    err[0] = '\0';
    int rc = flas_train_opts_from_env(&opts, err, sizeof err);
    if (rc == 0) {
        if (opts.round < -1 || opts.round > FLAS_ROUND_MAX)
            fz_fail("round %ld from the environment", opts.round);
        if (opts.steps < 0 || opts.steps > (1L << 40))
            fz_fail("steps %ld from the environment", opts.steps);
        if (opts.global_sha256[0] && !flas_sha256_is_hex(opts.global_sha256))
            fz_fail("global sha256 '%s' from the environment", opts.global_sha256);
        if (opts.update < FLAS_UPDATE_FULL || opts.update >= FLAS_UPDATE_N_ENC)
            fz_fail("update encoding %d", (int)opts.update);
        if (opts.state_dir_default && !flas_kv_path_valid(opts.state_dir))
            fz_fail("default residual directory '%s' is not a clean absolute path", opts.state_dir);
        /* then the command line, as flas-train does, and the final check */
        if (n_parts == 2) {
            char *args = fz_strndup(part[1], len[1]);
            char *argv[MAX_ARGS + 2] = {"flas-train"};
            int argc = 1;
            for (char *p = args; argc <= MAX_ARGS && p < args + len[1] + 1; p += strlen(p) + 1)
                argv[argc++] = p;
            argv[argc] = NULL;
            rc = flas_train_parse_args(&opts, argc, argv, err, sizeof err);
            free(args);
        }
        if (rc == 0)
            rc = flas_train_opts_check(&opts, err, sizeof err);
    }
    if (rc != 0 && !err[0])
        fz_fail("refused without a reason");
    restore_env();
    free(env);
    return 0;
}
