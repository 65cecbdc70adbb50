/* The coordinator's running state, below both the round state machine (coord_rounds.c) and the site
 * actions (coord_site.c): where each round's files live inside WorkDir, and per-site notes. The file
 * names are the staging area's (flas/staging.h), so a round is "round-000003" everywhere. */
#include <stdarg.h>
#include <stdio.h>

#include "coord_internal.h"
#include "flas/error.h"
#include "flas/staging.h"

static int fits(int n, size_t len) { return n > 0 && (size_t)n < len ? 0 : -1; }

int flas_coord_global_path(const flas_coord_conf *c, long round, char *buf, size_t len)
{
    char name[32];
    if (flas_stage_global_name(name, sizeof name, round))
        return -1;
    return fits(snprintf(buf, len, "%s/%s/%s", c->work_dir, FLAS_STAGE_GLOBAL, name), len);
}

int flas_coord_round_dir(const flas_coord_conf *c, long round, char *buf, size_t len)
{
    char name[32];
    if (flas_stage_round_dir(name, sizeof name, round))
        return -1;
    return fits(snprintf(buf, len, "%s/%s", c->work_dir, name), len);
}

int flas_coord_local_path(const flas_coord_conf *c, long round, const char *site, char *buf, size_t len)
{
    char dir[FLAS_CONF_PATH_MAX + 32];
    if (flas_coord_round_dir(c, round, dir, sizeof dir))
        return -1;
    return fits(snprintf(buf, len, "%s/%s.h5", dir, site), len);
}

void coord_note(coord *k, int i, const char *fmt, ...)
{
    flas_journal_site *s = &k->j.site[i];
    va_list ap;
    va_start(ap, fmt);
    flas_vfail(s->note, sizeof s->note, fmt, ap); /* one line: the journal stores one line per note */
    va_end(ap);
    fprintf(stderr, "flas-coordinator: round %ld: %s: %s\n", k->j.round, k->c->site[i].name, s->note);
}
