/* The plugin's own arguments from its plugstack.conf line, strict key=value:
 *   required /usr/lib/x86_64-linux-gnu/slurm-wlm/flas.so conf=/etc/slurm/flas.conf */
#ifndef FLAS_SPANK_ARGS_H
#define FLAS_SPANK_ARGS_H

#include <stddef.h>

#include "flas/conf.h"

#ifndef FLAS_DEFAULT_CONF
#define FLAS_DEFAULT_CONF "/etc/slurm/flas.conf"
#endif

typedef struct flas_plugin_args {
    char conf[FLAS_CONF_PATH_MAX]; /* conf=: path of flas.conf */
} flas_plugin_args;

/* 0, or -1 with "plugstack argument 'x': reason" in err. Unknown keys are errors. */
int flas_plugin_args_parse(int ac, char **av, flas_plugin_args *args, char *err, size_t errlen);

#endif
