/* --federation and --federation-round: validation and storage (see options.h). */
#include "options.h"

#include <stdio.h>
#include <string.h>

#include "flas/staging.h"

flas_opts flas_options = {"", -1};

flas_submission_check_fn flas_submission_check;

int flas_opt_federation(int val, const char *optarg, int remote)
{
    (void)val;
    /* "--federation --wrap x" hands "--wrap" over as the value: a name never starts with '-'. */
    if (!flas_name_valid(optarg)) {
        slurm_error("flas: --federation=%s: a federation name is 1-63 characters of [A-Za-z0-9_-] and does not "
                    "start with '-'", optarg ? optarg : "");
        return -1;
    }
    /* Submitting side: refuse here an unknown federation, a user it does not admit, or a round that is
     * not staged (the round, if given before, is known; if given after, its callback checks again). */
    if (!remote && flas_submission_check && flas_submission_check(optarg, flas_options.round))
        return -1;
    snprintf(flas_options.federation, sizeof flas_options.federation, "%s", optarg);
    return 0;
}

int flas_opt_round(int val, const char *optarg, int remote)
{
    (void)val;
    (void)remote;
    long r = flas_parse_round(optarg);
    if (r < 0) {
        slurm_error("flas: --federation-round=%s: a round is a whole number from 0 to %ld", optarg ? optarg : "",
                    FLAS_ROUND_MAX);
        return -1;
    }
    if (!remote && flas_options.federation[0] && flas_submission_check &&
        flas_submission_check(flas_options.federation, r))
        return -1;
    flas_options.round = r;
    return 0;
}

static struct spank_option option_table[] = {
    {"federation", "NAME",
     "Train in federated-learning federation NAME, as defined in this site's flas.conf (FLaS; unrelated to "
     "Slurm's multi-cluster federation)",
     1, 0, flas_opt_federation},
    {"federation-round", "N", "Train round N of the federation (default: the newest global model staged at this site)",
     1, 0, flas_opt_round},
    SPANK_OPTIONS_TABLE_END};

int flas_options_register(spank_t sp)
{
    for (struct spank_option *o = option_table; o->name; o++)
        if (spank_option_register(sp, o) != ESPANK_SUCCESS) {
            slurm_error("flas: cannot register option --%s", o->name);
            return -1;
        }
    return 0;
}

int flas_options_getopt(spank_t sp, flas_opts *out)
{
    char *value = NULL;
    out->federation[0] = '\0';
    out->round = -1;
    if (spank_option_getopt(sp, &option_table[0], &value) == ESPANK_SUCCESS && value && flas_name_valid(value))
        snprintf(out->federation, sizeof out->federation, "%s", value);
    value = NULL;
    if (spank_option_getopt(sp, &option_table[1], &value) == ESPANK_SUCCESS && value)
        out->round = flas_parse_round(value);
    return 0;
}
