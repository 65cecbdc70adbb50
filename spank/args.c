/* plugstack.conf arguments of flas.so: unknown keys are errors, like in flas.conf. */
#include "args.h"

#include <stdio.h>
#include <string.h>

int flas_plugin_args_parse(int ac, char **av, flas_plugin_args *args, char *err, size_t errlen)
{
    snprintf(args->conf, sizeof args->conf, "%s", FLAS_DEFAULT_CONF);
    int seen_conf = 0;
    for (int i = 0; i < ac; i++) {
        const char *a = av[i];
        if (strncmp(a, "conf=", 5) == 0) {
            const char *v = a + 5;
            if (seen_conf++ || v[0] != '/' || strlen(v) >= sizeof args->conf) {
                snprintf(err, errlen, "plugstack argument '%s': conf= must be given once, as an absolute path", a);
                return -1;
            }
            snprintf(args->conf, sizeof args->conf, "%s", v);
        } else {
            snprintf(err, errlen, "plugstack argument '%s': unknown (known: conf=/path/to/flas.conf)", a);
            return -1;
        }
    }
    return 0;
}
