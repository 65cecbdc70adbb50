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

/* Set by the dispatcher: checks on the submitting side that a federation exists and admits the user
 * (0), or prints why not (-1). NULL: no check. */
typedef int (*flas_federation_check_fn)(const char *federation);
extern flas_federation_check_fn flas_federation_check;

/* Registers both options (sbatch and salloc need spank_option_register, not a symbol table). */
int flas_options_register(spank_t sp);
/* In prolog/epilog (separate processes, no callbacks): reads the options the job was submitted with. */
int flas_options_getopt(spank_t sp, flas_opts *out);
/* The callbacks themselves, for tests: 0 if value is valid (and stored), else -1 after slurm_error. */
int flas_opt_federation(int val, const char *optarg, int remote);
int flas_opt_round(int val, const char *optarg, int remote);

#endif
