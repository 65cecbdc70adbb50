/* The coordinator's journal (WorkDir/journal), read back at every start: flas_journal_load
 * (aggregator/journal.c) takes a path, so the input is written to a file in the harness's temporary
 * directory first. What loads must also survive the coordinator's own cycle: saved
 * (flas_journal_save, an atomic write in the same directory) and loaded again, giving the same state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flas/coordinator.h"
#include "flas/names.h"
#include "support.h"

static flas_journal jload, jagain; /* large: not on the stack */

static void same(const flas_journal *a, const flas_journal *b)
{
#define SAME(cond, what) \
    if (!(cond))         \
        fz_fail("journal saved and loaded again differs in %s", what);
    SAME(!strcmp(a->federation, b->federation), "federation")
    SAME(!strcmp(a->run_id, b->run_id), "run_id")
    SAME(a->round == b->round && a->phase == b->phase, "round or phase")
    SAME(!strcmp(a->global_sha256, b->global_sha256) && !strcmp(a->staged_sha256, b->staged_sha256), "sha256")
    SAME(a->begin_unix == b->begin_unix && a->round_started_unix == b->round_started_unix, "round times")
    SAME(a->n_sites == b->n_sites, "sites")
    for (int i = 0; i < a->n_sites; i++) {
        const flas_journal_site *x = &a->site[i], *y = &b->site[i];
        SAME(!strcmp(a->site_name[i], b->site_name[i]), "site name")
        SAME(x->state == y->state && x->attempt == y->attempt && x->job == y->job, "site state, attempt or job")
        SAME(!strcmp(x->local_sha256, y->local_sha256) && x->local_bytes == y->local_bytes, "local checkpoint")
        SAME(x->bytes_up == y->bytes_up && x->submit_unix == y->submit_unix && x->start_unix == y->start_unix &&
                 x->end_unix == y->end_unix && x->steps == y->steps && x->tokens == y->tokens &&
                 x->steps_assigned == y->steps_assigned,
             "site accounting")
        SAME(x->rate == y->rate, "site rate")
        SAME(!strcmp(x->staged_via, y->staged_via), "staged_via")
    }
#undef SAME
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[4200], saved[4200], err[1024];
    fz_write_file("journal", data, size, path, sizeof path);
    err[0] = '\0';
    if (flas_journal_load(path, &jload, err, sizeof err) != 0) {
        if (!err[0])
            fz_fail("journal refused without a reason");
        return 0;
    }
    if (jload.n_sites < 0 || jload.n_sites > FLAS_COORD_MAX_SITES || jload.round < 0)
        fz_fail("journal accepted with %d sites, round %ld", jload.n_sites, jload.round);
    if (jload.phase < FLAS_PHASE_STAGING || jload.phase > FLAS_PHASE_FAILED)
        fz_fail("journal accepted with phase %d", (int)jload.phase);
    for (int i = 0; i < jload.n_sites; i++)
        if (jload.site[i].state < FLAS_SITE_PENDING || jload.site[i].state > FLAS_SITE_DROPPED)
            fz_fail("journal accepted with site %d in state %d", i, (int)jload.site[i].state);
    /* the coordinator writes its state back after every transition: it must read what it wrote */
    fz_write_file("journal.saved", "", 0, saved, sizeof saved);
    if (flas_journal_save(saved, &jload, err, sizeof err) != 0)
        fz_fail("cannot save a journal it loaded: %s", err);
    if (flas_journal_load(saved, &jagain, err, sizeof err) != 0)
        fz_fail("cannot load the journal it saved: %s", err);
    same(&jload, &jagain);
    return 0;
}
