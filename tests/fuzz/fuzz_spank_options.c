/* What users and admins hand the SPANK plugin: the values of --federation and --federation-round (the
 * option callbacks flas_opt_federation / flas_opt_round of spank/options.c, run by sbatch, salloc, srun
 * and slurmd; the prolog's flas_options_getopt) and the plugin's own plugstack.conf arguments
 * (flas_plugin_args_parse, spank/args.c). options.c is compiled into this harness from the plugin's own
 * source; the Slurm functions it calls are the stand-ins below, as in tests/spank/test_spank_plugin.c.
 *
 * Input: byte 0 = flags (bit 0: remote context; bit 1: the submission check refuses; bit 2: run the
 * prolog's getopt path), then NUL-separated strings: the --federation value, the --federation-round value,
 * then plugstack arguments. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/names.h"
#include "flas/staging.h"
#include "args.h"
#include "options.h"
#include "support.h"

/* ---- Slurm's side ---------------------------------------------------------------------------------- */

void slurm_error(const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
}

static const char *getopt_value[2];

spank_err_t spank_option_register(spank_t sp, struct spank_option *opt)
{
    (void)sp, (void)opt;
    return ESPANK_SUCCESS;
}

spank_err_t spank_option_getopt(spank_t sp, struct spank_option *opt, char **optarg)
{
    (void)sp;
    int i = !strcmp(opt->name, "federation") ? 0 : !strcmp(opt->name, "federation-round") ? 1 : -1;
    if (i < 0 || !getopt_value[i])
        return ESPANK_ERROR;
    *optarg = (char *)getopt_value[i];
    return ESPANK_SUCCESS;
}

/* ---- the plugin's submission check, as the dispatcher installs it ---------------------------------- */

static int check_refuses;

static int submission_check(const char *federation, long round)
{
    /* the callbacks promise to ask only about a valid name and a round that is -1 or 0..FLAS_ROUND_MAX */
    if (!flas_name_valid(federation) || round < -1 || round > FLAS_ROUND_MAX)
        fz_fail("submission check called with federation '%s', round %ld", federation, round);
    return check_refuses ? -1 : 0;
}

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return -1;
    const unsigned flags = data[0];
    char *text = malloc(size); /* the strings after the flags byte, NUL-terminated */
    if (!text)
        fz_fail("out of memory");
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char *part[MAX_ARGS + 2];
    int n = 0;
    for (char *p = text; n < MAX_ARGS + 2;) {
        part[n++] = p;
        char *nul = memchr(p, '\0', (size_t)(text + size - 1 - p) + 1);
        if (!nul || nul == text + size - 1)
            break;
        p = nul + 1;
    }
    const int remote = flags & 1;
    check_refuses = (flags >> 1) & 1;
    flas_submission_check = submission_check;
    memset(&flas_options, 0, sizeof flas_options);
    flas_options.round = -1;

    if (flas_opt_federation(0, part[0], remote) == 0 &&
        (strcmp(flas_options.federation, part[0]) || !flas_name_valid(flas_options.federation)))
        fz_fail("--federation=%s accepted as '%s'", part[0], flas_options.federation);
    if (n > 1) {
        long before = flas_options.round;
        if (flas_opt_round(0, part[1], remote) == 0) {
            if (flas_options.round < 0 || flas_options.round > FLAS_ROUND_MAX ||
                flas_options.round != flas_parse_round(part[1]))
                fz_fail("--federation-round=%s accepted as %ld", part[1], flas_options.round);
        } else if (flas_options.round != before) {
            fz_fail("a refused --federation-round=%s changed the round", part[1]);
        }
    }
    /* NULL: the user did not give the option (Slurm passes no value) */
    flas_opt_federation(0, NULL, remote);
    flas_opt_round(0, NULL, remote);

    if (flags & 4) { /* the prolog/epilog read the options back */
        flas_opts got;
        getopt_value[0] = part[0];
        getopt_value[1] = n > 1 ? part[1] : NULL;
        flas_options_getopt(NULL, &got);
        if (got.federation[0] && !flas_name_valid(got.federation))
            fz_fail("getopt gave federation '%s'", got.federation);
        if (got.round < -1 || got.round > FLAS_ROUND_MAX)
            fz_fail("getopt gave round %ld", got.round);
        getopt_value[0] = getopt_value[1] = NULL;
    }
    flas_options_register(NULL);

    /* plugstack.conf: "required flas.so conf=/etc/slurm/flas.conf" */
    int ac = n > 2 ? n - 2 : 0;
    char **av = part + 2;
    flas_plugin_args args;
    char err[1024];
    err[0] = '\0';
    if (flas_plugin_args_parse(ac, av, &args, err, sizeof err) == 0) {
        if (args.conf[0] != '/' || memchr(args.conf, '\0', sizeof args.conf) == NULL)
            fz_fail("plugstack arguments gave conf '%.100s'", args.conf);
    } else if (!err[0]) {
        fz_fail("plugstack arguments refused without a reason");
    }
    free(text);
    return 0;
}
