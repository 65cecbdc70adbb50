/* Walltime and signals: stop in time to validate and write the checkpoint before the job ends, and turn
 * Slurm's warning signals (sbatch --signal, scancel --signal, the SIGTERM before a time-limit kill) into
 * "finish this step, checkpoint, exit 0". */
#include "flas/train.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double flas_train_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double flas_train_job_end_from_env(void)
{
    const char *v = getenv("SLURM_JOB_END_TIME");
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    long long t = strtoll(v, &end, 10);
    return (*end || errno || t <= 0) ? 0 : (double)t;
}

double flas_train_deadline(double start, double job_end, double time_budget)
{
    double d = job_end > 0 ? job_end : 0;
    if (time_budget > 0 && (d == 0 || start + time_budget < d))
        d = start + time_budget;
    return d;
}

double flas_train_clock_reserve(const flas_train_clock *c)
{
    /* A write can be slower than the last one (a busy file system): 1.5x the estimate. */
    return 1.5 * c->ckpt_seconds + c->valid_seconds + c->margin;
}

int flas_train_clock_must_stop(const flas_train_clock *c, double now)
{
    if (c->end <= 0)
        return 0;
    return now + c->step_seconds + flas_train_clock_reserve(c) >= c->end;
}

static volatile sig_atomic_t caught;

static void on_signal(int sig) { caught = sig; }

void flas_train_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* MPI and file I/O carry on; the loop looks at the flag between steps */
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int flas_train_signal_pending(void) { return caught; }

void flas_train_signal_clear(void) { caught = 0; }
