/* Slurm's answers as the coordinator reads them over SSH from a site (aggregator/coord_site.c): the
 * sbatch --parsable reply (coord_parse_sbatch_reply), the job state (coord_parse_job_state), the squeue
 * listing a restarted coordinator adopts its job from (flas_coord_pick_own_job) and the job's times
 * (flas_coord_parse_job_times). A site is not trusted: its replies are input.
 *
 * Input: byte 0 picks the parser (all four run on every input, the choice only varies the user and job
 * they are checked against), the rest is the reply. */
#include <stdlib.h>
#include <string.h>

#include "coord_internal.h"
#include "flas/coordinator.h"
#include "support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return -1;
    const unsigned sel = data[0];
    /* the reply buffers are NUL-terminated text (the SSH reader's), at most 4 KiB in the coordinator */
    char *reply = fz_strndup(data + 1, size - 1);

    long id = coord_parse_sbatch_reply(reply);
    if (id == 0 || id < -1)
        fz_fail("sbatch reply '%.80s' gave job %ld", reply, id);

    char *copy = fz_strndup(data + 1, size - 1);
    char state[32] = "", why[320] = "";
    long job = sel & 1 ? 123 : 2147483647L;
    if (coord_parse_job_state(copy, job, state, sizeof state, why, sizeof why) == 0) {
        if (!state[0] || strspn(state, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != strlen(state))
            fz_fail("job state '%s' accepted", state);
    } else if (!why[0]) {
        fz_fail("job state refused without a reason");
    }
    free(copy);

    static const char *const users[] = {"flas", "alice", "", "a-very-long-user-name-that-fits-in-a-login"};
    int others = -1;
    long own = flas_coord_pick_own_job(reply, users[sel >> 1 & 3], &others);
    if (own < 0 || others < 0)
        fz_fail("squeue listing gave job %ld, %d others", own, others);
    flas_coord_pick_own_job(reply, users[0], NULL);

    int64_t submit = -1, start = -1, end = -1;
    char twhy[256] = "";
    if (flas_coord_parse_job_times(reply, &submit, &start, &end, twhy, sizeof twhy) == 0) {
        if (submit <= 0 || start < 0 || end < 0 || (start && start < submit) || (end && (!start || end < start)))
            fz_fail("job times %lld %lld %lld accepted", (long long)submit, (long long)start, (long long)end);
    } else if (!twhy[0] || submit != -1 || start != -1 || end != -1) {
        fz_fail("job times refused without a reason, or with times stored");
    }
    free(reply);
    return 0;
}
