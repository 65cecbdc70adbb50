/* flas_atomic_copy under SIGKILL (the coordinator copies InitialGlobal into its WorkDir with it): a copy
 * killed at any moment leaves the destination as it was or wholly new, never partial, and at most a
 * hidden temporary. Like the checkpoint writer's kill test: kills land uniformly over the time an
 * uninterrupted copy takes, until enough landed while a copy was running. */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "flas/atomic_file.h"
#include "flas/sha256.h"

#define FILE_BYTES (48u << 20) /* large enough that a copy takes tens of milliseconds */
#define KILLS 24

static char dir[] = "/tmp/flas-copy-kill-XXXXXX";

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void make_source(const char *path, unsigned seed, char sha[FLAS_SHA256_HEX])
{
    unsigned char *b = malloc(FILE_BYTES);
    ck_assert_ptr_nonnull(b);
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < FILE_BYTES; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (unsigned char)(x >> 16);
    }
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, FILE_BYTES, f), FILE_BYTES);
    fclose(f);
    free(b);
    char err[256];
    ck_assert_int_eq(flas_sha256_file(path, sha, NULL, err, sizeof err), 0);
}

START_TEST(killed_copies_leave_old_or_new)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char src[2][128], dst[128], sha[2][FLAS_SHA256_HEX], got[FLAS_SHA256_HEX], err[512];
    for (int g = 0; g < 2; g++) {
        snprintf(src[g], sizeof src[g], "%s/gen%d.bin", dir, g);
        make_source(src[g], (unsigned)g + 1, sha[g]);
    }
    snprintf(dst, sizeof dst, "%s/global.h5", dir);
    double t0 = now();
    ck_assert_msg(flas_atomic_copy(src[0], dst, err, sizeof err) == 0, "%s", err);
    double full = now() - t0;
    srand((unsigned)time(NULL));
    int landed = 0, finished = 0, old = 0, fresh = 0, attempts = 0, cur = 0;
    while (landed < KILLS && attempts < 20 * KILLS) {
        attempts++;
        int next = 1 - cur;
        double delay = full * 1.2 * rand() / (double)RAND_MAX;
        pid_t child = fork();
        ck_assert_int_ge(child, 0);
        if (child == 0)
            _exit(flas_atomic_copy(src[next], dst, err, sizeof err) == 0 ? 0 : 1);
        struct timespec d = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
        nanosleep(&d, NULL);
        int status = 0;
        int exited = waitpid(child, &status, WNOHANG) == child;
        if (!exited) {
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
            landed += WIFSIGNALED(status);
        }
        int ran_out = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        finished += ran_out;
        ck_assert_msg(flas_sha256_file(dst, got, NULL, err, sizeof err) == 0, "destination gone: %s", err);
        int is_old = strcmp(got, sha[cur]) == 0, is_new = strcmp(got, sha[next]) == 0;
        ck_assert_msg(is_old || is_new, "attempt %d (kill at %.3f s): the destination is neither version", attempts,
                      delay);
        ck_assert_msg(!ran_out || is_new, "attempt %d: the copy finished but the destination is old", attempts);
        old += is_old;
        fresh += is_new;
        if (is_new)
            cur = next;
        /* Only hidden temporaries of the destination may be left, and they are removed here. */
        DIR *dd = opendir(dir);
        for (struct dirent *e; (e = readdir(dd));) {
            if (e->d_name[0] != '.' || !strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            ck_assert_msg(strncmp(e->d_name, ".global.h5.tmp.", 15) == 0, "unexpected file %s", e->d_name);
            char p[512];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(dd);
    }
    printf("copy kill test: an uninterrupted copy of %u MiB takes %.3f s; %d attempts, %d killed while copying, "
           "%d finished first; destination old %d times, new %d times\n", FILE_BYTES >> 20, full, attempts, landed,
           finished, old, fresh);
    ck_assert_int_ge(landed, KILLS);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("atomic_copy_kill");
    TCase *tc = tcase_create("kill");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, killed_copies_leave_old_or_new);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_set_fork_status(r, CK_NOFORK); /* the test forks its own children */
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
