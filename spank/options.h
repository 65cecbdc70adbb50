/* The options users type: --federation=NAME and --federation-round=N. Callbacks validate and store;
 * they may run several times (environment, command line, hetjob components), so they only overwrite. */
#ifndef FLAS_SPANK_OPTIONS_H
#define FLAS_SPANK_OPTIONS_H

#include <slurm/spank.h>

#include "flas/conf.h"

typedef struct flas_opts {
    char federation[FLAS_CONF_NAME_MAX]; /* "" when not given */
    long round;                          /* -1 when not given: the newest staged global model */
} flas_opts;

extern flas_opts flas_options;

/* Set by the dispatcher: on the submitting side, checks that a federation exists, admits the user and
 * has the round (or, round < 0, any round) staged: 0, or -1 after printing why. NULL: no check. The
 * option callbacks call it, so that sbatch refuses with "Invalid --federation... argument" and creates
 * no job whether the plugin is "required" or "optional" in plugstack.conf. */
typedef int (*flas_submission_check_fn)(const char *federation, long round);
extern flas_submission_check_fn flas_submission_check;

/* Registers both options (sbatch and salloc need spank_option_register, not a symbol table). */
int flas_options_register(spank_t sp);
/* In prolog/epilog (separate processes, no callbacks): reads the options the job was submitted with. */
int flas_options_getopt(spank_t sp, flas_opts *out);
/* The callbacks themselves, for tests: 0 if value is valid (and stored), else -1 after slurm_error. */
int flas_opt_federation(int val, const char *optarg, int remote);
int flas_opt_round(int val, const char *optarg, int remote);

#endif
