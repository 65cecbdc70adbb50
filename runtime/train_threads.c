/* How many OpenMP threads one rank of flas-train uses. Below every other train_*.c: setting up the
 * model, loading a checkpoint and evaluating all need it. */
#define _GNU_SOURCE /* sched_getaffinity */
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "train_internal.h"

int train_threads(const flas_train_opts *o, const flas_train_comm *c)
{
    if (o->threads)
        return o->threads;
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0)
        return atoi(env);
    /* A rank bound to some cores (mpirun --bind-to, srun --cpu-bind, cgroups) uses those; an unbound
     * rank shares the node's processors with the other ranks there. */
    long procs = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) < procs)
        return CPU_COUNT(&set);
    long n = procs / (c->node_ranks > 0 ? c->node_ranks : 1);
    return n < 1 ? 1 : (int)n;
}
