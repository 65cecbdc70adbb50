/* SIGKILL at random moments during checkpoint writes: the previous checkpoint always stays intact
 * and the new one is either absent or complete (every value checked), never half-written.
 *   test_ckpt_kill serial CKPT_TOOL KILLS          one writer process (serial HDF5 driver)
 *   test_ckpt_kill mpi CKPT_TOOL KILLS MPIRUN      mpirun -np 2, tensor-parallel split (MPI-IO)
 * KILLS: how many kills must land while a writer runs.
 * The writer runs in its own session; the kill takes the whole session (mpirun puts every rank in its
 * own process group, but they share the session). FLAS_KILL_SEED=N replays a run. */
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_fixture.h"

static const char *mode, *tool, *mpirun;
static int trials;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static pid_t spawn_writer(const char *path, int gen)
{
    char g[16];
    snprintf(g, sizeof g, "%d", gen);
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        if (strcmp(mode, "mpi") == 0) {
            setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
            setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
            execl(mpirun, mpirun, "-np", "2", "--oversubscribe", tool, "mpi-write", path, g, "kill", (char *)NULL);
        } else {
            execl(tool, tool, "write", path, g, "kill", "params", (char *)NULL);
        }
        _exit(127);
    }
    return pid;
}

/* SIGKILL to every live process of session sid (the writer and, with MPI, its ranks); returns how many
 * were still alive. Zombies are skipped: they are dead already. */
static int kill_session(pid_t sid)
{
    int alive = 0;
    DIR *d = opendir("/proc");
    for (struct dirent *e; d && (e = readdir(d));) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0)
            continue;
        char p[64], buf[512];
        snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
        FILE *fp = fopen(p, "r");
        if (!fp)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, fp);
        fclose(fp);
        buf[n] = '\0';
        char *close_paren = strrchr(buf, ')');
        char state;
        int ppid, pgrp, session;
        if (close_paren && sscanf(close_paren + 2, "%c %d %d %d", &state, &ppid, &pgrp, &session) == 4 &&
            session == (int)sid && state != 'Z') {
            kill(pid, SIGKILL);
            alive++;
        }
    }
    if (d)
        closedir(d);
    return alive;
}

static void kill_all(pid_t child, int *status)
{
    kill_session(child);
    waitpid(child, status, 0);
    /* Ranks are not our children: wait until none is left in the session. */
    for (int i = 0; i < 500 && kill_session(child) > 0; i++)
        usleep(10000);
    ck_assert_int_eq(kill_session(child), 0);
}

START_TEST(sigkill_never_damages_the_previous_checkpoint)
{
    char dir[512], path[600], err[1024];
    fix_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/local.h5", dir);
    unsigned seed = getenv("FLAS_KILL_SEED") ? (unsigned)atoi(getenv("FLAS_KILL_SEED")) : (unsigned)time(NULL);
    srand(seed);
    printf("kill test (%s): seed %u, %d trials\n", mode, seed, trials);

    /* Three uninterrupted writes; the slowest sets the range of kill moments (writes vary with the page
     * cache and the disk, and every moment up to the end of the commit must be covered). */
    int status, gen = 0;
    double duration = 0;
    for (int i = 0; i < 3; i++) {
        double t0 = now();
        pid_t child = spawn_writer(path, ++gen);
        waitpid(child, &status, 0);
        double took = now() - t0;
        duration = took > duration ? took : duration;
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the uninterrupted write failed");
        ck_assert_msg(fix_verify(path, gen, err, sizeof err) == 0, "%s", err);
        kill_session(child);
    }
    printf("an uninterrupted write takes up to %.3f s; kills land uniformly in [0, %.3f] s\n", duration,
           1.2 * duration);
    pid_t child;

    int killed = 0, old_kept = 0, new_done = 0, finished = 0, temps_left = 0, temps_complete = 0;
    /* Trials go on until `trials` kills have landed while a writer was running and at least 5 of them
     * left an unfinished temporary (at most 6x as many attempts: a kill after the writer finished, or
     * before it created its file, tests nothing; under a sanitizer, start-up and teardown take most of
     * a run, so fewer kills land inside the write itself). */
    int trial = 0;
    for (; (killed < trials || temps_left - temps_complete < 5) && trial < 6 * trials; trial++) {
        double delay = duration * 1.2 * rand() / (double)RAND_MAX;
        child = spawn_writer(path, gen + 1);
        usleep((useconds_t)(delay * 1e6));
        int exited = waitpid(child, &status, WNOHANG) == child;
        if (!exited)
            kill_all(child, &status);
        else
            kill_session(child);
        int ran_out = exited && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        /* The destination holds the previous generation or the new one, complete in every value. */
        int is_old = fix_verify(path, gen, err, sizeof err) == 0;
        int is_new = !is_old && fix_verify(path, gen + 1, err, sizeof err) == 0;
        ck_assert_msg(is_old || is_new, "trial %d (kill at %.3f s): destination damaged: %s", trial, delay, err);
        ck_assert_msg(!ran_out || is_new, "trial %d: the writer finished but the new checkpoint is not there", trial);
        /* A leftover temporary is either refused (no completion marker) or complete and correct. */
        DIR *d = opendir(dir);
        for (struct dirent *e; (e = readdir(d));) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "local.h5"))
                continue;
            ck_assert_msg(e->d_name[0] == '.' && strstr(e->d_name, ".tmp-"), "unexpected file %s", e->d_name);
            char tmp[1200];
            snprintf(tmp, sizeof tmp, "%s/%s", dir, e->d_name);
            flas_ckpt_reader *r = flas_ckpt_open(tmp, MPI_COMM_NULL, err, sizeof err);
            temps_left++;
            if (r) {
                flas_ckpt_close(r);
                ck_assert_msg(fix_verify(tmp, gen + 1, err, sizeof err) == 0, "a temporary looks complete but is not: %s",
                              err);
                temps_complete++;
            }
            unlink(tmp); /* what an operator's clean-up would do */
        }
        closedir(d);
        killed += !exited;
        finished += ran_out;
        old_kept += is_old;
        new_done += is_new;
        if (is_new)
            gen++;
    }
    printf("%d attempts: %d killed while writing, %d finished first; destination kept the previous checkpoint %d "
           "times, had the new complete one %d times; %d temporaries left behind (%d of them complete)\n",
           trial, killed, finished, old_kept, new_done, temps_left, temps_complete);
    /* The test must really interrupt writes: most kills land while the writer runs, and some of them
     * leave an unfinished temporary behind (the previous checkpoint survived a half-written new one). */
    ck_assert_int_ge(killed, trials);
    ck_assert_int_ge(temps_left - temps_complete, 5);
    ck_assert_int_ge(new_done, 1);
    fix_rmtree(dir);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc < 4 || (strcmp(argv[1], "serial") && strcmp(argv[1], "mpi")) || (!strcmp(argv[1], "mpi") && argc < 5)) {
        fprintf(stderr, "usage: %s serial|mpi CKPT_TOOL TRIALS [MPIRUN]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress survives a failing (forked) test */
    mode = argv[1];
    tool = argv[2];
    trials = atoi(argv[3]);
    mpirun = argc > 4 ? argv[4] : NULL;
    Suite *s = suite_create("checkpoint_kill");
    TCase *tc = tcase_create("kill");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, sigkill_never_damages_the_previous_checkpoint);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
