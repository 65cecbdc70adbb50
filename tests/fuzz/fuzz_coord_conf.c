/* coordinator.conf(5): flas_coord_conf_parse (aggregator/coord_conf.c over runtime/common/kv.c), what
 * flas_coord_conf_load runs on the file's text, then what the coordinator derives from it before a round:
 * each round's reservation name, the remote command limits and the speed-aware step budget. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flas/coordinator.h"
#include "flas/names.h"
#include "support.h"

static flas_coord_conf conf; /* ~3 MB: not on the stack */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memchr(data, '\0', size) || size > (1u << 20)) /* flas_kv_read_file refuses these */
        return -1;
    char *text = fz_strndup(data, size);
    char err[1024];
    err[0] = '\0';
    if (flas_coord_conf_parse("/etc/flas/coordinator.conf", text, &conf, err, sizeof err) == 0) {
        if (conf.n_sites < 1 || conf.n_sites > FLAS_COORD_MAX_SITES || conf.min_sites < 1 ||
            conf.min_sites > conf.n_sites || !flas_name_valid(conf.federation) || conf.poll_max_s < conf.poll_min_s)
            fz_fail("accepted an inconsistent description (%d sites, MinSites %d, PollInterval %d/%d)", conf.n_sites,
                    conf.min_sites, conf.poll_min_s, conf.poll_max_s);
        for (int i = 0; i < conf.n_sites; i++) {
            const flas_coord_site *s = &conf.site[i];
            if (!flas_name_valid(s->name) || !s->ssh.host[0] || s->n_args < 0 || s->n_args > FLAS_COORD_MAX_ARGS)
                fz_fail("site %d accepted with name '%s', host '%s', %d arguments", i, s->name, s->ssh.host, s->n_args);
        }
        char buf[FLAS_CONF_NAME_MAX + 24];
        const long rounds[] = {0, 1, 7, 999999, -1, 2147483647L};
        for (size_t r = 0; r < sizeof rounds / sizeof *rounds; r++)
            if (flas_coord_reservation_name(&conf, rounds[r], buf, sizeof buf) == 0 && strchr(buf, '%') &&
                conf.sync == FLAS_SYNC_RESERVATION)
                fz_fail("reservation name '%s' of round %ld still holds a '%%'", buf, rounds[r]);
        const int64_t started[] = {0, 1700000000, -(INT64_C(1) << 40)};
        for (size_t t = 0; t < sizeof started / sizeof *started; t++) {
            double l = flas_coord_command_limit(&conf, started[t], 1700000100);
            if (!(l > 0) || !isfinite(l))
                fz_fail("command limit %g", l);
        }
        double rate[FLAS_COORD_MAX_SITES];
        long steps[FLAS_COORD_MAX_SITES];
        int slow[FLAS_COORD_MAX_SITES];
        for (int i = 0; i < conf.n_sites; i++)
            rate[i] = i % 3 == 0 ? 0.0 : i % 3 == 1 ? 1e-9 * (i + 1) : 1e12;
        flas_coord_budget_steps(&conf, rate, steps, slow);
        for (int i = 0; i < conf.n_sites; i++)
            if (steps[i] < 0 || steps[i] > (1L << 40))
                fz_fail("site %d assigned %ld steps", i, steps[i]);
    } else if (!err[0]) {
        fz_fail("refused without a reason");
    }
    free(text);
    return 0;
}
