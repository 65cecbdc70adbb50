/* The plugin's job-side and root-side work without Slurm: the prolog (choose and verify the global model,
 * prepare the job directory, record the decision), the epilog (publish the checkpoint by hard link with a
 * root-owned manifest), the job record, the FLAS_* environment and the submit-time checks. Each test
 * builds its own staging root under /tmp; the job's user is nobody/nogroup. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "flas/sha256.h"
#include "flas/staging.h"
#include "job.h"
#include "spank_testutil.h"

/* Stand in for libc's pread and clock_gettime, so that what happens while the epilog hashes a checkpoint
 * is decided by the test, not by a race with a writer process or by how fast this machine reads (only
 * the hashing reads with pread, and only its deadline asks the monotonic clock). on_first_read runs at
 * the first pread, as a job still writing or another node's epilog would act mid-hash; each MiB read
 * then moves the monotonic clock on by read_s_per_mib, as a slow file system would. */
static void (*on_first_read)(void);
static long long preads, read_s_per_mib, clock_ahead_ns;

ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
    if (preads++ == 0 && on_first_read)
        on_first_read();
    clock_ahead_ns += (long long)(count * (double)read_s_per_mib * 1e9 / (1 << 20));
    return (ssize_t)syscall(SYS_pread64, fd, buf, count, offset);
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int rc = (int)syscall(SYS_clock_gettime, id, ts);
    if (rc == 0 && id == CLOCK_MONOTONIC && clock_ahead_ns) {
        long long ns = ts->tv_nsec + clock_ahead_ns % 1000000000;
        ts->tv_sec += clock_ahead_ns / 1000000000 + ns / 1000000000;
        ts->tv_nsec = ns % 1000000000;
    }
    return rc;
}

static char root[128];
static flas_federation_conf fed;
static flas_job job;

/* A path inside the staging root. */
static const char *S(const char *rel) { return test_path("%s/%s", root, rel); }

static void setup(void)
{
    snprintf(root, sizeof root, "%s", test_scratch_dir("actions"));
    memset(&fed, 0, sizeof fed);
    snprintf(fed.name, sizeof fed.name, "flas");
    snprintf(fed.site, sizeof fed.site, "siteA");
    snprintf(fed.staging_root, sizeof fed.staging_root, "%s", root);
    /* what the admin prepares: the federation directory (root) and global/ for the coordinator's login */
    test_mkdir(S("flas"), 0755, 0, 0);
    test_mkdir(S("flas/global"), 0755, TEST_UID, TEST_GID);
    memset(&job, 0, sizeof job);
    job.fed = &fed;
    job.jobid = 42;
    job.uid = TEST_UID;
    job.exit_known = 1; /* as from SLURM_JOB_EXIT_CODE2 in the epilog's environment */
    job.gid = TEST_GID;
    snprintf(job.user, sizeof job.user, "nobody");
    job.round = -1;
    snprintf(job.node, sizeof job.node, "node1");
    alarm(30); /* a FIFO opened the blocking way would hang the test: fail it instead */
}

static void teardown(void) { test_remove_tree(root); }

/* Stages a global model the coordinator's way (its user owns it), with its sha256sum-format sidecar. */
static void stage_model(long round, const char *content)
{
    char name[32], hex[FLAS_SHA256_HEX_LEN + 1], side[160];
    flas_stage_global_name(name, sizeof name, round);
    flas_sha256_buffer(content, strlen(content), hex);
    test_write_file(S(test_path("flas/global/%s", name)), content, strlen(content), 0644, TEST_UID, TEST_GID);
    snprintf(side, sizeof side, "%s  %s\n", hex, name);
    test_write_file(S(test_path("flas/global/%s.sha256", name)), side, strlen(side), 0644, TEST_UID, TEST_GID);
}

static const char *sha_of(const char *content)
{
    static char hex[FLAS_SHA256_HEX_LEN + 1];
    flas_sha256_buffer(content, strlen(content), hex);
    return hex;
}

static flas_job_record record_of(unsigned long jobid)
{
    flas_job_record rec;
    char err[512] = "";
    ck_assert_msg(flas_job_record_load(&fed, jobid, &rec, err, sizeof err) == 0, "no record: %s", err);
    return rec;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void assert_owner_mode(const char *path, uid_t uid, mode_t mode)
{
    struct stat st;
    ck_assert_msg(lstat(path, &st) == 0, "%s missing", path);
    ck_assert_msg(st.st_uid == uid && st.st_mode == mode, "%s: uid %u mode %o, want uid %u mode %o", path,
                  (unsigned)st.st_uid, (unsigned)st.st_mode, (unsigned)uid, (unsigned)mode);
}

static void prolog_ok(void)
{
    char err[512] = "";
    ck_assert_msg(flas_prolog(&job, err, sizeof err) == 0, "prolog: %s", err);
}

/* Fills a large stretch of stack with a pattern, so that a message built from an uninitialised buffer in
 * the next call shows up as garbage (or as a stack overflow under ASan) instead of passing by luck. */
__attribute__((noinline)) static void dirty_stack(void)
{
    volatile char junk[65536];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = 'Z';
}

/* ---------------------------------------------------------------- prolog */

START_TEST(prolog_chooses_the_newest_complete_round_and_verifies_it)
{
    stage_model(1, "model one");
    stage_model(3, "model three");
    stage_model(2, "model two");
    /* incomplete (no sidecar yet) and unrelated names are not rounds */
    test_write_file(S("flas/global/round-000005.h5"), "partial", 7, 0644, TEST_UID, TEST_GID);
    test_write_text(S("flas/global/round-000009.h5.part"), "x");
    test_write_text(S("flas/global/.round-000008.h5.tmp.77"), "x");
    prolog_ok();
    flas_job_record rec = record_of(42);
    ck_assert_str_eq(rec.federation, "flas");
    ck_assert_int_eq(rec.round, 3);
    ck_assert_str_eq(rec.sha256, sha_of("model three"));
    ck_assert_str_eq(rec.error, "");
    assert_owner_mode(S("flas/jobs/42"), TEST_UID, S_IFDIR | 0700);
    struct stat st;
    ck_assert_int_eq(lstat(S("flas/jobs/42"), &st), 0);
    ck_assert_int_eq(st.st_gid, TEST_GID);
    assert_owner_mode(S("flas/jobs"), 0, S_IFDIR | 0755);
    assert_owner_mode(S("flas/state"), 0, S_IFDIR | 0755);
    assert_owner_mode(S("flas/state/42"), 0, S_IFREG | 0644);
    /* the verification is cached for the next job of this round */
    assert_owner_mode(S("flas/state/verified-round-000003"), 0, S_IFREG | 0644);
    char *cache = test_read_file(S("flas/state/verified-round-000003"));
    ck_assert_msg(strstr(cache, test_path("sha256=%s\n", sha_of("model three"))) != NULL, "cache: %s", cache);
    free(cache);
    ck_assert_int_eq(test_count_entries(S("flas/state"), ".tmp."), 0);
}
END_TEST

START_TEST(prolog_uses_the_requested_round)
{
    stage_model(1, "model one");
    stage_model(2, "model two");
    job.round = 1;
    prolog_ok();
    flas_job_record rec = record_of(42);
    ck_assert_int_eq(rec.round, 1);
    ck_assert_str_eq(rec.sha256, sha_of("model one"));
    ck_assert(exists(S("flas/jobs/42")));
}
END_TEST

START_TEST(prolog_records_an_unstaged_round_and_lets_the_job_start)
{
    stage_model(1, "model one");
    job.round = 7;
    prolog_ok(); /* a user's mistake: recorded, never returned (a failing prolog drains the node) */
    flas_job_record rec = record_of(42);
    ck_assert_int_eq(rec.round, 7);
    ck_assert_str_eq(rec.sha256, "");
    ck_assert_str_eq(rec.error, "global model of round 7 has no valid round-000007.h5.sha256 "
                                "(round-000007.h5.sha256: No such file or directory)");
    ck_assert(!exists(S("flas/jobs/42")));
}
END_TEST

START_TEST(prolog_records_that_nothing_is_staged)
{
    prolog_ok();
    flas_job_record rec = record_of(42);
    ck_assert_int_eq(rec.round, -1);
    ck_assert_str_eq(rec.error, "no global model is staged for federation 'flas'");
    ck_assert(!exists(S("flas/jobs/42")));
    /* global/ itself missing: the same, and no site fault */
    test_remove_tree(S("flas/global"));
    job.jobid = 43;
    prolog_ok();
    ck_assert_str_eq(record_of(43).error, "no global model is staged for federation 'flas'");
}
END_TEST

START_TEST(prolog_records_a_corrupt_model)
{
    stage_model(1, "model one");
    /* the same size, one byte changed after the sidecar was written */
    test_write_file(S("flas/global/round-000001.h5"), "model 0ne", 9, 0644, TEST_UID, TEST_GID);
    prolog_ok();
    flas_job_record rec = record_of(42);
    ck_assert_int_eq(rec.round, 1);
    ck_assert_str_eq(rec.sha256, "");
    char want[512];
    snprintf(want, sizeof want, "global model of round 1 failed verification: sha256 %s, expected ",
             sha_of("model 0ne"));
    strcat(want, sha_of("model one"));
    ck_assert_str_eq(rec.error, want);
    ck_assert(!exists(S("flas/jobs/42")));
    ck_assert(!exists(S("flas/state/verified-round-000001"))); /* a failure is never cached */
}
END_TEST

START_TEST(prolog_records_a_malformed_sidecar_with_a_clean_message)
{
    stage_model(1, "model one");
    test_write_file(S("flas/global/round-000001.h5.sha256"), "not-a-hash  round-000001.h5\n", 28, 0644, TEST_UID,
                    TEST_GID);
    dirty_stack();
    prolog_ok();
    /* regression: the reason once came from an error buffer that nothing had written */
    ck_assert_str_eq(record_of(42).error,
                     "global model of round 1 has no valid round-000001.h5.sha256 (not in sha256sum format)");
    char hex[FLAS_SHA256_HEX_LEN + 1];
    snprintf(hex, sizeof hex, "%s", sha_of("model one"));
    hex[0] = hex[0] == 'a' ? 'b' : 'a';
    char side[160];
    snprintf(side, sizeof side, "%sX round-000001.h5\n", hex); /* 64 hex digits, then garbage */
    test_write_file(S("flas/global/round-000001.h5.sha256"), side, strlen(side), 0644, TEST_UID, TEST_GID);
    job.jobid = 43;
    dirty_stack();
    prolog_ok();
    ck_assert_str_eq(record_of(43).error,
                     "global model of round 1 has no valid round-000001.h5.sha256 (not in sha256sum format)");
}
END_TEST

START_TEST(prolog_refuses_symlinked_and_fifo_models)
{
    char outside[160];
    snprintf(outside, sizeof outside, "%s/outside.h5", root);
    test_write_text(outside, "model one");
    stage_model(1, "model one");
    ck_assert_int_eq(unlink(S("flas/global/round-000001.h5")), 0);
    ck_assert_int_eq(symlink(outside, S("flas/global/round-000001.h5")), 0);
    /* a symlink is not a staged round ... */
    prolog_ok();
    ck_assert_str_eq(record_of(42).error, "no global model is staged for federation 'flas'");
    /* ... and asked for by number it is refused, not followed */
    job.round = 1;
    job.jobid = 43;
    prolog_ok();
    ck_assert_str_eq(record_of(43).error, "global model of round 1: round-000001.h5: is a symlink (refused)");
    /* a FIFO in its place is refused without blocking */
    ck_assert_int_eq(unlink(S("flas/global/round-000001.h5")), 0);
    ck_assert_int_eq(mkfifo(S("flas/global/round-000001.h5"), 0666), 0);
    job.jobid = 44;
    prolog_ok();
    ck_assert_str_eq(record_of(44).error, "global model of round 1: round-000001.h5: not a regular file (refused)");
    /* a symlinked sidecar */
    stage_model(2, "model two");
    ck_assert_int_eq(unlink(S("flas/global/round-000002.h5.sha256")), 0);
    ck_assert_int_eq(symlink("/etc/shadow", S("flas/global/round-000002.h5.sha256")), 0);
    job.round = 2;
    job.jobid = 45;
    prolog_ok();
    ck_assert_str_eq(record_of(45).error, "global model of round 2 has no valid round-000002.h5.sha256 "
                                          "(round-000002.h5.sha256: is a symlink (refused))");
    ck_assert(!exists(S("flas/jobs/43")) && !exists(S("flas/jobs/44")) && !exists(S("flas/jobs/45")));
}
END_TEST

START_TEST(prolog_cache_skips_rehashing_until_the_file_changes)
{
    stage_model(1, "model one");
    prolog_ok();
    /* Change the content in place but keep size and mtime: the cached verification is trusted (the
     * trade-off docs/admin.md describes: the cache guards against replaced files, not silent bit rot). */
    struct stat st;
    ck_assert_int_eq(stat(S("flas/global/round-000001.h5"), &st), 0);
    int fd = open(S("flas/global/round-000001.h5"), O_WRONLY);
    ck_assert_int_eq(pwrite(fd, "M", 1, 0), 1);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    ck_assert_int_eq(futimens(fd, times), 0);
    close(fd);
    job.jobid = 43;
    prolog_ok();
    flas_job_record rec = record_of(43);
    ck_assert_str_eq(rec.error, "");
    ck_assert_str_eq(rec.sha256, sha_of("model one"));
    /* a new mtime (any write by the coordinator) invalidates the cache: hashed again, and refused */
    times[1].tv_sec += 10;
    fd = open(S("flas/global/round-000001.h5"), O_WRONLY);
    ck_assert_int_eq(futimens(fd, times), 0);
    close(fd);
    job.jobid = 44;
    prolog_ok();
    ck_assert_msg(strstr(record_of(44).error, "failed verification") != NULL, "%s", record_of(44).error);
    /* a re-staged file (a new inode: upload to a temporary name, then rename) is hashed again too */
    ck_assert_int_eq(unlink(S("flas/global/round-000001.h5")), 0);
    stage_model(1, "model one, again");
    job.jobid = 45;
    prolog_ok();
    ck_assert_str_eq(record_of(45).sha256, sha_of("model one, again"));
}
END_TEST

START_TEST(prolog_records_a_user_or_account_not_allowed)
{
    stage_model(1, "model one");
    fed.allow_users.n = 1;
    snprintf(fed.allow_users.name[0], sizeof fed.allow_users.name[0], "alice");
    prolog_ok();
    flas_job_record rec = record_of(42);
    ck_assert_str_eq(rec.error, "user 'nobody' may not use federation 'flas' (AllowUsers/AllowGroups in flas.conf)");
    ck_assert_int_eq(rec.round, -1);
    ck_assert_str_eq(rec.sha256, "");
    ck_assert(!exists(S("flas/jobs/42")));
    /* admitted through the group nogroup, then stopped by the account */
    fed.allow_groups.n = 1;
    snprintf(fed.allow_groups.name[0], sizeof fed.allow_groups.name[0], "nogroup");
    fed.allow_accounts.n = 1;
    snprintf(fed.allow_accounts.name[0], sizeof fed.allow_accounts.name[0], "proj1");
    snprintf(job.account, sizeof job.account, "proj2");
    job.jobid = 43;
    prolog_ok();
    ck_assert_str_eq(record_of(43).error, "account 'proj2' may not use federation 'flas' (AllowAccounts in flas.conf)");
    snprintf(job.account, sizeof job.account, "proj1");
    job.jobid = 44;
    prolog_ok();
    ck_assert_str_eq(record_of(44).error, "");
    ck_assert(exists(S("flas/jobs/44")));
}
END_TEST

START_TEST(prolog_fails_only_for_an_unsafe_staging_root)
{
    stage_model(1, "model one");
    char err[512] = "";
    /* group/world-writable staging root: anybody could swap what root works on */
    ck_assert_int_eq(chmod(root, 0777), 0);
    ck_assert_int_eq(flas_prolog(&job, err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("StagingRoot of federation 'flas': %s: component '%s' is not owned by root or "
                                    "is writable by others", root, strrchr(root, '/') + 1));
    ck_assert(!exists(S("flas/state")));
    ck_assert_int_eq(chmod(root, 0755), 0);
    /* owned by a user */
    ck_assert_int_eq(chown(root, TEST_UID, TEST_GID), 0);
    ck_assert_int_eq(flas_prolog(&job, err, sizeof err), -1);
    ck_assert_int_eq(chown(root, 0, 0), 0);
    /* the federation directory owned by a user */
    ck_assert_int_eq(chown(S("flas"), TEST_UID, TEST_GID), 0);
    ck_assert_int_eq(flas_prolog(&job, err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s/flas: flas: owned by uid 65534, expected uid 0", root));
    ck_assert_int_eq(chown(S("flas"), 0, 0), 0);
    /* a staging root reached through a symlink */
    char link[160];
    snprintf(link, sizeof link, "%s-link", root);
    ck_assert_int_eq(symlink(root, link), 0);
    snprintf(fed.staging_root, sizeof fed.staging_root, "%s", link);
    ck_assert_int_eq(flas_prolog(&job, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not a directory (symlink?)") != NULL, "%s", err);
    unlink(link);
    ck_assert(!exists(S("flas/state")) && !exists(S("flas/jobs")));
    /* and fine once repaired */
    snprintf(fed.staging_root, sizeof fed.staging_root, "%s", root);
    prolog_ok();
    ck_assert_str_eq(record_of(42).error, "");
}
END_TEST

START_TEST(prolog_creates_the_federation_tree)
{
    test_remove_tree(S("flas"));
    prolog_ok(); /* nothing staged yet: the job is told, the tree exists for the next one */
    assert_owner_mode(S("flas"), 0, S_IFDIR | 0755);
    assert_owner_mode(S("flas/state"), 0, S_IFDIR | 0755);
    assert_owner_mode(S("flas/jobs"), 0, S_IFDIR | 0755);
    ck_assert_str_eq(record_of(42).error, "no global model is staged for federation 'flas'");
}
END_TEST

START_TEST(prolog_refuses_a_job_directory_of_someone_else)
{
    stage_model(1, "model one");
    test_mkdir(S("flas/jobs"), 0755, 0, 0);
    test_mkdir(S("flas/jobs/42"), 0700, 0, 0); /* left over, e.g. a job id reused after a controller reset */
    prolog_ok();
    flas_job_record rec = record_of(42);
    ck_assert_str_eq(rec.error, "cannot prepare the job directory: 42: owned by uid 0, expected uid 65534");
    ck_assert_str_eq(rec.sha256, "");
    /* a directory already the user's (the prolog of another node of the same job) is fine */
    ck_assert_int_eq(chown(S("flas/jobs/42"), TEST_UID, TEST_GID), 0);
    prolog_ok();
    ck_assert_str_eq(record_of(42).error, "");
}
END_TEST

/* ---------------------------------------------------------------- records */

START_TEST(record_format_and_parse_round_trip)
{
    flas_job_record rec = {"flas", 12, "", "a reason: with = signs"}, back;
    snprintf(rec.sha256, sizeof rec.sha256, "%s", sha_of("x"));
    char text[1024];
    ck_assert_int_gt(flas_job_record_format(&rec, text, sizeof text), 0);
    ck_assert_str_eq(text, test_path("federation=flas\nround=12\nsha256=%s\nerror=a reason: with = signs\n", rec.sha256));
    ck_assert_int_eq(flas_job_record_parse(text, &back), 0);
    ck_assert_str_eq(back.federation, "flas");
    ck_assert_int_eq(back.round, 12);
    ck_assert_str_eq(back.sha256, rec.sha256);
    ck_assert_str_eq(back.error, rec.error);
    ck_assert_int_eq(flas_job_record_parse("federation=f\nround=-1\nsha256=\nerror=why\n", &back), 0);
    ck_assert_int_eq(back.round, -1);
    ck_assert_int_eq(flas_job_record_format(&rec, text, 20), -1); /* too small */
    const char *bad[] = {
        "round=1\nsha256=\nerror=\n",                           /* no federation */
        "federation=f\nround=1\nsha256=\n",                     /* no error */
        "federation=f\nround=x\nsha256=\nerror=\n",             /* bad round */
        "federation=f\nround=-2\nsha256=\nerror=\n",
        "federation=f\nround=1\nsha256=ABC\nerror=\n",          /* bad sha256 */
        "federation=-f\nround=1\nsha256=\nerror=\n",            /* bad name */
        "federation=f\nround=1\nsha256=\nerror=\ncolour=red\n", /* unknown key */
        "federation=f\nround=1\nsha256=\nerror=\nnoequals\n",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(flas_job_record_parse(bad[i], &back) == -1, "accepted: %s", bad[i]);
}
END_TEST

START_TEST(record_load_trusts_only_root_owned_files)
{
    stage_model(1, "model one");
    prolog_ok();
    flas_job_record rec;
    char err[512];
    ck_assert_int_eq(chown(S("flas/state/42"), TEST_UID, TEST_GID), 0);
    ck_assert_int_eq(flas_job_record_load(&fed, 42, &rec, err, sizeof err), -1);
    ck_assert_str_eq(err, "job 42: prolog record is not a root-owned file");
    ck_assert_int_eq(chown(S("flas/state/42"), 0, 0), 0);
    ck_assert_int_eq(symlink(S("flas/state/42"), S("flas/state/43")), 0);
    ck_assert_int_eq(flas_job_record_load(&fed, 43, &rec, err, sizeof err), -1);
    ck_assert_str_eq(err, "no prolog record for job 43 in federation 'flas'");
    ck_assert_int_eq(flas_job_record_load(&fed, 44, &rec, err, sizeof err), -1);
    ck_assert_str_eq(err, "no prolog record for job 44 in federation 'flas'");
    /* a record of another federation under this one's name */
    test_write_text(S("flas/state/46"), "federation=other\nround=1\nsha256=\nerror=\n");
    ck_assert_int_eq(flas_job_record_load(&fed, 46, &rec, err, sizeof err), -1);
    ck_assert_str_eq(err, "job 46: prolog record is malformed");
}
END_TEST

START_TEST(newest_round_ignores_incomplete_rounds_and_can_be_asked_twice)
{
    int g = open(S("flas/global"), O_RDONLY | O_DIRECTORY);
    ck_assert_int_eq(flas_newest_round_fd(g), -1);
    stage_model(4, "four");
    stage_model(11, "eleven");
    test_write_file(S("flas/global/round-000012.h5"), "x", 1, 0644, TEST_UID, TEST_GID); /* no sidecar */
    test_write_text(S("flas/global/round-000013.h5.sha256"), "x");                      /* no model */
    test_mkdir(S("flas/global/round-000014.h5"), 0755, 0, 0);                           /* not a file */
    test_write_text(S("flas/global/round-000014.h5.sha256"), "x");
    ck_assert_int_eq(flas_newest_round_fd(g), 11);
    /* regression: the scan once shared the directory offset with the caller's descriptor, so a second
     * call on the same descriptor found nothing */
    ck_assert_int_eq(flas_newest_round_fd(g), 11);
    close(g);
}
END_TEST

/* ---------------------------------------------------------------- submit side and FLAS_* environment */

START_TEST(submit_check_finds_the_round_or_says_why_not)
{
    long round = -9;
    char err[512] = "";
    ck_assert_int_eq(flas_submit_check(&fed, -1, TEST_UID, NULL, &round, err, sizeof err), -1);
    ck_assert_str_eq(err, "federation 'flas' has no global model staged at site 'siteA' yet");
    stage_model(2, "two");
    stage_model(5, "five");
    ck_assert_int_eq(flas_submit_check(&fed, -1, TEST_UID, NULL, &round, err, sizeof err), 0);
    ck_assert_int_eq(round, 5);
    ck_assert_int_eq(flas_submit_check(&fed, 2, TEST_UID, NULL, &round, err, sizeof err), 0);
    ck_assert_int_eq(round, 2);
    ck_assert_int_eq(flas_submit_check(&fed, 3, TEST_UID, NULL, &round, err, sizeof err), -1);
    ck_assert_str_eq(err, "round 3 of federation 'flas' is not staged at site 'siteA' (no complete round-000003.h5)");
    fed.allow_users.n = 1;
    snprintf(fed.allow_users.name[0], sizeof fed.allow_users.name[0], "root");
    ck_assert_int_eq(flas_submit_check(&fed, -1, TEST_UID, NULL, &round, err, sizeof err), -1);
    ck_assert_str_eq(err, "user 'nobody' may not use federation 'flas' (AllowUsers/AllowGroups in flas.conf)");
    ck_assert_int_eq(flas_submit_check(&fed, -1, 0, NULL, &round, err, sizeof err), 0);
    ck_assert_int_eq(flas_check_user(&fed, 987654, NULL, err, sizeof err), -1);
    ck_assert_str_eq(err, "uid 987654 has no passwd entry");
    fed.allow_users.n = 0;
    test_remove_tree(S("flas/global"));
    ck_assert_int_eq(flas_submit_check(&fed, -1, TEST_UID, NULL, &round, err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("federation 'flas' has no global model staged at site 'siteA' "
                                    "(%s/flas/global: No such file or directory)", root));
}
END_TEST

START_TEST(job_env_from_a_good_record)
{
    stage_model(3, "three");
    prolog_ok();
    flas_env env;
    flas_job_env(&fed, -1, 42, &env);
    const char *want[][2] = {
        {"FLAS_FEDERATION", "flas"},
        {"FLAS_SITE", "siteA"},
        {"FLAS_STAGE_DIR", S("flas")},
        {"FLAS_JOB_ID", "42"},
        {"FLAS_ROUND", "3"},
        {"FLAS_GLOBAL_CHECKPOINT", S("flas/global/round-000003.h5")},
        {"FLAS_GLOBAL_SHA256", sha_of("three")},
        {"FLAS_OUTPUT_DIR", S("flas/jobs/42")},
        {"FLAS_OUTPUT_CHECKPOINT", S("flas/jobs/42/local.h5")},
    };
    ck_assert_int_eq(env.n, 9);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *v = flas_env_get(&env, want[i][0]);
        ck_assert_msg(v && !strcmp(v, want[i][1]), "%s=%s, want %s", want[i][0], v ? v : "(unset)", want[i][1]);
    }
    ck_assert_ptr_null(flas_env_get(&env, "FLAS_ERROR"));
    /* the same round asked again by a step: the same environment */
    flas_env again;
    flas_job_env(&fed, 3, 42, &again);
    ck_assert_int_eq(again.n, 9);
    ck_assert_ptr_null(flas_env_get(&again, "FLAS_ERROR"));
    /* a newer round staged while the job runs does not change its round */
    stage_model(4, "four");
    flas_job_env(&fed, -1, 42, &again);
    ck_assert_str_eq(flas_env_get(&again, "FLAS_ROUND"), "3");
}
END_TEST

START_TEST(job_env_tells_why_a_job_may_not_train)
{
    stage_model(3, "three");
    flas_env env;
    /* no prolog record (another federation's step, or a prolog that never ran) */
    flas_job_env(&fed, -1, 42, &env);
    ck_assert_str_eq(flas_env_get(&env, "FLAS_ERROR"), "no prolog record for job 42 in federation 'flas'");
    ck_assert_str_eq(flas_env_get(&env, "FLAS_ROUND"), "3"); /* for information: the newest staged */
    ck_assert_ptr_null(flas_env_get(&env, "FLAS_OUTPUT_CHECKPOINT"));
    ck_assert_ptr_null(flas_env_get(&env, "FLAS_OUTPUT_DIR"));
    ck_assert_ptr_null(flas_env_get(&env, "FLAS_GLOBAL_SHA256"));
    /* a record with an error */
    test_write_file(S("flas/global/round-000003.h5"), "thrEe", 5, 0644, TEST_UID, TEST_GID);
    prolog_ok();
    flas_job_env(&fed, -1, 42, &env);
    ck_assert_msg(strstr(flas_env_get(&env, "FLAS_ERROR"), "failed verification") != NULL, "%s",
                  flas_env_get(&env, "FLAS_ERROR"));
    ck_assert_ptr_null(flas_env_get(&env, "FLAS_OUTPUT_CHECKPOINT"));
    /* a step asking for another round than the job was prepared for */
    stage_model(3, "three");
    prolog_ok();
    flas_job_env(&fed, 2, 42, &env);
    ck_assert_str_eq(flas_env_get(&env, "FLAS_ERROR"), "step asks for round 2 but the job was prepared for round 3");
    ck_assert_str_eq(flas_env_get(&env, "FLAS_ROUND"), "2");
    ck_assert_ptr_null(flas_env_get(&env, "FLAS_OUTPUT_CHECKPOINT"));
}
END_TEST

/* ---------------------------------------------------------------- epilog */

static const char *manifest_path(long round, unsigned long jobid)
{
    return S(test_path("flas/outbox/round-%06ld/siteA-job%lu.manifest.json", round, jobid));
}

static test_json manifest(long round, unsigned long jobid)
{
    test_json j;
    char *text = test_read_file(manifest_path(round, jobid));
    ck_assert_msg(text != NULL, "no manifest %s", manifest_path(round, jobid));
    ck_assert_msg(test_json_parse(text, &j) == 0, "manifest is not a flat JSON object:\n%s", text);
    free(text);
    return j;
}

static void write_checkpoint(const char *content)
{
    test_write_file(S("flas/jobs/42/local.h5"), content, strlen(content), 0644, TEST_UID, TEST_GID);
}

static void epilog_ok(char *err, size_t errlen)
{
    err[0] = '\0';
    ck_assert_msg(flas_epilog(&job, err, errlen) == 0, "epilog: %s", err);
}

START_TEST(epilog_publishes_by_hard_link_with_a_manifest)
{
    stage_model(3, "three");
    prolog_ok();
    write_checkpoint("the local checkpoint");
    char err[512];
    time_t before = time(NULL);
    epilog_ok(err, sizeof err);
    /* the checkpoint: the job's own inode under its published name, still the user's */
    struct stat local, pub;
    ck_assert_int_eq(lstat(S("flas/jobs/42/local.h5"), &local), 0);
    ck_assert_int_eq(lstat(S("flas/outbox/round-000003/siteA-job42.h5"), &pub), 0);
    ck_assert_int_eq(local.st_ino, pub.st_ino);
    ck_assert_int_eq(pub.st_nlink, 2);
    ck_assert_int_eq(pub.st_uid, TEST_UID);
    assert_owner_mode(S("flas/outbox"), 0, S_IFDIR | 0755);
    assert_owner_mode(S("flas/outbox/round-000003"), 0, S_IFDIR | 0755);
    assert_owner_mode(manifest_path(3, 42), 0, S_IFREG | 0644); /* the site's statement, root's */
    test_json m = manifest(3, 42);
    ck_assert_str_eq(test_json_string(&m, "format"), "flas-manifest");
    ck_assert_int_eq(test_json_number(&m, "version"), 1);
    ck_assert_str_eq(test_json_string(&m, "federation"), "flas");
    ck_assert_str_eq(test_json_string(&m, "site"), "siteA");
    ck_assert_int_eq(test_json_number(&m, "round"), 3);
    ck_assert_int_eq(test_json_number(&m, "job_id"), 42);
    ck_assert_str_eq(test_json_string(&m, "user"), "nobody");
    ck_assert_int_eq(test_json_number(&m, "uid"), 65534);
    ck_assert_str_eq(test_json_string(&m, "node"), "node1");
    ck_assert_str_eq(test_json_string(&m, "job_state"), "COMPLETED");
    ck_assert_int_eq(test_json_number(&m, "exit_code"), 0);
    ck_assert_int_eq(test_json_number(&m, "signal"), 0);
    ck_assert_str_eq(test_json_string(&m, "checkpoint"), "siteA-job42.h5");
    ck_assert_int_eq(test_json_number(&m, "size"), (long long)strlen("the local checkpoint"));
    ck_assert_str_eq(test_json_string(&m, "sha256"), sha_of("the local checkpoint"));
    ck_assert_str_eq(test_json_string(&m, "base_sha256"), sha_of("three"));
    ck_assert_str_eq(test_json_string(&m, "error"), "");
    struct tm tm = {0};
    const char *at = test_json_string(&m, "published_at");
    ck_assert_ptr_nonnull(at);
    const char *end = strptime(at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    ck_assert_msg(end && !*end, "published_at '%s' is not UTC ISO 8601", at);
    time_t t = timegm(&tm);
    ck_assert_msg(t >= before - 1 && t <= time(NULL) + 1, "published_at %s is not now", at);
    ck_assert_int_eq(m.n, 18); /* no other fields */
    ck_assert_int_eq(test_count_entries(S("flas/outbox/round-000003"), ".tmp."), 0);
    ck_assert_int_eq(test_count_entries(S("flas/outbox/round-000003"), ""), 2);
}
END_TEST

START_TEST(prolog_and_epilog_work_on_nfs)
{
    /* Regression: without RENAME_NOREPLACE (NFS) the manifest could not be written and every epilog
     * failed as a site fault, which drains the node when the plugin is required. */
    spank_test_nfs_like = 1;
    stage_model(3, "three");
    prolog_ok();
    assert_owner_mode(S("flas/jobs/42"), TEST_UID, S_IFDIR | 0700);
    write_checkpoint("the local checkpoint");
    char err[512];
    epilog_ok(err, sizeof err);
    test_json m = manifest(3, 42);
    ck_assert_str_eq(test_json_string(&m, "checkpoint"), "siteA-job42.h5");
    ck_assert_str_eq(test_json_string(&m, "sha256"), sha_of("the local checkpoint"));
    struct stat st;
    ck_assert_int_eq(lstat(S("flas/outbox/round-000003/siteA-job42.h5"), &st), 0);
    ck_assert_int_eq(st.st_nlink, 2);
    assert_owner_mode(manifest_path(3, 42), 0, S_IFREG | 0644);
    /* the epilog of another node leaves it alone there too */
    char *first = test_read_file(manifest_path(3, 42));
    snprintf(job.node, sizeof job.node, "node2");
    epilog_ok(err, sizeof err);
    char *second = test_read_file(manifest_path(3, 42));
    ck_assert_str_eq(first, second);
    free(first);
    free(second);
    ck_assert_int_eq(test_count_entries(S("flas/outbox/round-000003"), ".tmp."), 0);
    ck_assert_int_eq(test_count_entries(S("flas/state"), ".tmp."), 0);
}
END_TEST

START_TEST(epilog_records_failed_and_signaled_jobs)
{
    stage_model(3, "three");
    prolog_ok();
    job.exit_code = 3;
    char err[512];
    epilog_ok(err, sizeof err);
    test_json m = manifest(3, 42);
    ck_assert_str_eq(test_json_string(&m, "job_state"), "FAILED");
    ck_assert_int_eq(test_json_number(&m, "exit_code"), 3);
    ck_assert(test_json_is_null(&m, "checkpoint"));
    ck_assert_int_eq(test_json_number(&m, "size"), -1);
    ck_assert_str_eq(test_json_string(&m, "sha256"), "");
    ck_assert_str_eq(test_json_string(&m, "error"), "no checkpoint: local.h5: No such file or directory");
    /* killed by a signal (time limit, scancel), with a checkpoint written before */
    job.jobid = 43;
    job.exit_code = 0;
    job.signal = 9;
    prolog_ok();
    test_write_file(S("flas/jobs/43/local.h5"), "partial", 7, 0644, TEST_UID, TEST_GID);
    epilog_ok(err, sizeof err);
    m = manifest(3, 43);
    ck_assert_str_eq(test_json_string(&m, "job_state"), "SIGNALED");
    ck_assert_int_eq(test_json_number(&m, "signal"), 9);
    ck_assert_str_eq(test_json_string(&m, "checkpoint"), "siteA-job43.h5");
}
END_TEST

START_TEST(epilog_prefers_the_batch_steps_record_of_how_the_script_ended)
{
    /* A job killed at its time limit: the epilog's environment says 0:0, the batch step saw SIGTERM. */
    stage_model(3, "three");
    job.jobid = 44;
    prolog_ok();
    char err[512];
    ck_assert_msg(flas_record_batch_exit(&fed, 44, SIGTERM, err, sizeof err) == 0, "%s", err);
    char *exit_record = test_read_file(S("flas/state/44.exit"));
    ck_assert_str_eq(exit_record, "status=15\n");
    free(exit_record);
    epilog_ok(err, sizeof err);
    test_json m = manifest(3, 44);
    ck_assert_str_eq(test_json_string(&m, "job_state"), "SIGNALED");
    ck_assert_int_eq(test_json_number(&m, "signal"), 15);
    /* an exit status recorded by the batch step: exit 2 */
    job.jobid = 45;
    prolog_ok();
    ck_assert_int_eq(flas_record_batch_exit(&fed, 45, 2 << 8, err, sizeof err), 0);
    epilog_ok(err, sizeof err);
    m = manifest(3, 45);
    ck_assert_str_eq(test_json_string(&m, "job_state"), "FAILED");
    ck_assert_int_eq(test_json_number(&m, "exit_code"), 2);
    /* neither told: the manifest says so rather than guessing */
    job.jobid = 46;
    job.exit_known = 0;
    prolog_ok();
    epilog_ok(err, sizeof err);
    m = manifest(3, 46);
    ck_assert_str_eq(test_json_string(&m, "job_state"), "UNKNOWN");
}
END_TEST

/* What a user can put in place of the checkpoint; each must be refused with the manifest saying why. */
START_TEST(epilog_refuses_symlink_fifo_hardlink_and_foreign_checkpoints)
{
    stage_model(3, "three");
    char victim[160], err[512];
    snprintf(victim, sizeof victim, "%s/victim", root);
    test_write_file(victim, "not a checkpoint", 16, 0600, TEST_UID, TEST_GID);
    struct {
        const char *what, *error;
    } cases[] = {
        {"symlink", "no checkpoint: local.h5: is a symlink (refused)"},
        {"fifo", "no checkpoint: local.h5: not a regular file (refused)"},
        {"directory", "no checkpoint: local.h5: not a regular file (refused)"},
        {"hardlink", "checkpoint refused: owner uid 65534, 2 links, 16 bytes"},
        {"foreign", "checkpoint refused: owner uid 0, 1 links, 6 bytes"},
        {"empty", "checkpoint refused: owner uid 65534, 1 links, 0 bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        job.jobid = 100 + i;
        prolog_ok();
        const char *ck = S(test_path("flas/jobs/%lu/local.h5", job.jobid));
        const char *what = cases[i].what;
        if (!strcmp(what, "symlink"))
            ck_assert_int_eq(symlink(victim, ck), 0);
        else if (!strcmp(what, "fifo"))
            ck_assert_int_eq(mkfifo(ck, 0666), 0);
        else if (!strcmp(what, "directory"))
            test_mkdir(ck, 0755, TEST_UID, TEST_GID);
        else if (!strcmp(what, "hardlink"))
            ck_assert_int_eq(link(victim, ck), 0);
        else if (!strcmp(what, "foreign"))
            test_write_file(ck, "root's", 6, 0644, 0, 0);
        else
            test_write_file(ck, "", 0, 0644, TEST_UID, TEST_GID);
        epilog_ok(err, sizeof err);
        test_json m = manifest(3, job.jobid);
        ck_assert_msg(test_json_is_null(&m, "checkpoint"), "%s: a checkpoint was published", what);
        ck_assert_msg(!strcmp(test_json_string(&m, "error"), cases[i].error), "%s: error '%s', want '%s'", what,
                      test_json_string(&m, "error"), cases[i].error);
        ck_assert_msg(!exists(S(test_path("flas/outbox/round-000003/siteA-job%lu.h5", job.jobid))), "%s published",
                      what);
    }
    char *text = test_read_file(victim);
    ck_assert_str_eq(text, "not a checkpoint");
    free(text);
    assert_owner_mode(victim, TEST_UID, S_IFREG | 0600);
    ck_assert_int_eq(test_count_entries(S("flas/outbox/round-000003"), ".h5"), 0); /* manifests only */
    ck_assert_int_eq(test_count_entries(S("flas/outbox/round-000003"), ".manifest.json"), 6);
}
END_TEST

/* What a refused checkpoint leaves: a manifest that says why, and nothing in the outbox. */
static void assert_refused(unsigned long jobid, const char *error_prefix)
{
    test_json m = manifest(3, jobid);
    const char *error = test_json_string(&m, "error");
    ck_assert_msg(!strncmp(error, error_prefix, strlen(error_prefix)), "job %lu: error '%s', want '%s...'", jobid,
                  error, error_prefix);
    ck_assert_msg(test_json_is_null(&m, "checkpoint"), "job %lu: a checkpoint was published", jobid);
    ck_assert_int_eq(test_json_number(&m, "size"), -1);
    ck_assert_str_eq(test_json_string(&m, "sha256"), "");
    ck_assert_int_eq(test_count_entries(S("flas/outbox/round-000003"), ".h5"), 0);
}

/* truncate -s 1T costs the user nothing and would keep root hashing zeros for minutes (the test's alarm
 * ends it long before). */
START_TEST(epilog_refuses_a_sparse_checkpoint_without_reading_it)
{
    stage_model(3, "three");
    prolog_ok();
    char block[4096];
    memset(block, 'x', sizeof block);
    test_write_file(S("flas/jobs/42/local.h5"), block, sizeof block, 0644, TEST_UID, TEST_GID);
    ck_assert_int_eq(truncate(S("flas/jobs/42/local.h5"), 1LL << 40), 0);
    char err[512];
    epilog_ok(err, sizeof err);
    assert_refused(42, "checkpoint refused: sparse file (");
    test_json m = manifest(3, 42);
    ck_assert_msg(strstr(test_json_string(&m, "error"), " bytes allocated for 1099511627776 bytes)") != NULL, "%s",
                  test_json_string(&m, "error"));
    ck_assert_int_eq(preads, 0);
    /* a file of one chunk or less is not judged by its allocation: hashing it costs nothing */
    job.jobid = 43;
    prolog_ok();
    test_write_file(S("flas/jobs/43/local.h5"), block, sizeof block, 0644, TEST_UID, TEST_GID);
    ck_assert_int_eq(truncate(S("flas/jobs/43/local.h5"), 8 << 20), 0);
    epilog_ok(err, sizeof err);
    m = manifest(3, 43);
    ck_assert_str_eq(test_json_string(&m, "error"), "");
    ck_assert_str_eq(test_json_string(&m, "checkpoint"), "siteA-job43.h5");
}
END_TEST

static void append_to_checkpoint(void)
{
    int fd = open(S(test_path("flas/jobs/%lu/local.h5", job.jobid)), O_WRONLY | O_APPEND);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "more", 4), 4);
    close(fd);
}

static void truncate_checkpoint(void)
{
    ck_assert_int_eq(truncate(S(test_path("flas/jobs/%lu/local.h5", job.jobid)), 5), 0);
}

static void link_checkpoint_into_the_job_directory(void)
{
    ck_assert_int_eq(link(S(test_path("flas/jobs/%lu/local.h5", job.jobid)),
                          S(test_path("flas/jobs/%lu/second-name", job.jobid))), 0);
}

/* The published sha256 must be the published file's: a checkpoint the job (or anything of the user's)
 * still writes to while root hashes it is refused. */
START_TEST(epilog_refuses_a_checkpoint_that_changes_while_it_is_hashed)
{
    stage_model(3, "three");
    struct {
        void (*act)(void);
        const char *error;
    } cases[] = {
        {append_to_checkpoint, "checkpoint changed while it was being hashed (20 bytes, then 24)"},
        {truncate_checkpoint, "checkpoint changed while it was being hashed (20 bytes, then 5)"},
        {link_checkpoint_into_the_job_directory, "checkpoint changed while it was being hashed (20 bytes, then 20)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        job.jobid = 100 + i;
        prolog_ok();
        test_write_file(S(test_path("flas/jobs/%lu/local.h5", job.jobid)), "the local checkpoint", 20, 0644,
                        TEST_UID, TEST_GID);
        preads = 0;
        on_first_read = cases[i].act;
        char err[512];
        epilog_ok(err, sizeof err);
        on_first_read = NULL;
        ck_assert_msg(preads > 0, "case %zu: the pread stand-in was not reached", i);
        assert_refused(job.jobid, cases[i].error);
        test_json m = manifest(3, job.jobid);
        ck_assert_str_eq(test_json_string(&m, "error"), cases[i].error);
    }
}
END_TEST

static void publish_from_another_node(void)
{
    ck_assert_int_eq(link(S("flas/jobs/42/local.h5"), S("flas/outbox/round-000003/siteA-job42.h5")), 0);
}

/* Every node of a multi-node job runs the epilog; the first to finish links the checkpoint into the outbox
 * while the others still hash it. That link (one more, new ctime) is root's doing, not a change. */
START_TEST(epilog_publishes_although_another_node_linked_the_checkpoint_meanwhile)
{
    stage_model(3, "three");
    prolog_ok();
    write_checkpoint("the local checkpoint");
    on_first_read = publish_from_another_node;
    char err[512];
    epilog_ok(err, sizeof err);
    ck_assert_int_gt(preads, 0);
    test_json m = manifest(3, 42);
    ck_assert_str_eq(test_json_string(&m, "error"), "");
    ck_assert_str_eq(test_json_string(&m, "checkpoint"), "siteA-job42.h5");
    ck_assert_str_eq(test_json_string(&m, "sha256"), sha_of("the local checkpoint"));
    struct stat st;
    ck_assert_int_eq(lstat(S("flas/outbox/round-000003/siteA-job42.h5"), &st), 0);
    ck_assert_int_eq(st.st_nlink, 2);
}
END_TEST

/* After the first node published, the job's other node runs its epilog: it must neither refuse the
 * checkpoint (now two links) nor replace the first node's manifest. */
START_TEST(epilog_publishes_only_on_the_jobs_first_node)
{
    stage_model(3, "three");
    prolog_ok();
    write_checkpoint("the local checkpoint");
    snprintf(job.first_node, sizeof job.first_node, "node1");
    char err[512];
    epilog_ok(err, sizeof err);
    char *before = test_read_file(S("flas/outbox/round-000003/siteA-job42.manifest.json"));
    snprintf(job.node, sizeof job.node, "node2");
    epilog_ok(err, sizeof err);
    ck_assert_msg(strstr(err, "published by its first node node1"), "%s", err);
    char *after = test_read_file(S("flas/outbox/round-000003/siteA-job42.manifest.json"));
    ck_assert_str_eq(after, before);
    test_json m = manifest(3, 42);
    ck_assert_str_eq(test_json_string(&m, "checkpoint"), "siteA-job42.h5");
    ck_assert_str_eq(test_json_string(&m, "node"), "node1");
    free(before);
    free(after);
}
END_TEST

START_TEST(hostlist_first_host)
{
    static const struct { const char *list, *first; } ok[] = {
        {"leonardo,leonardo2", "leonardo"}, {"leonardo2", "leonardo2"}, {"lrdn[0001-0004,0010]", "lrdn0001"},
        {"lrdn[0007,0001-0004]", "lrdn0007"}, {"a[1-2]b[03-4],c", "a1b03"}, {"gpu[7]", "gpu7"},
        {"node-1.cluster_x", "node-1.cluster_x"},
    };
    static const char *bad[] = {"", ",a", "a[", "a[]", "a[x]", "a[1-", "a b", "a/b", "a[1-2;3]", "[-1]"};
    char out[64];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ck_assert_msg(flas_hostlist_first(ok[i].list, out, sizeof out) == 0, "%s refused", ok[i].list);
        ck_assert_str_eq(out, ok[i].first);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(flas_hostlist_first(bad[i], out, sizeof out) == -1, "'%s' accepted as %s", bad[i], out);
    ck_assert_int_eq(flas_hostlist_first("abcdef", out, 6), -1); /* would not fit with its NUL */
    ck_assert_int_eq(flas_hostlist_first("abcde", out, 6), 0);
    ck_assert_int_eq(flas_hostlist_first("n[0001]", out, 5), -1);
}
END_TEST

/* A checkpoint that cannot be hashed in 300 s is refused rather than holding the node in COMPLETING. The
 * clock is the test's: reading 8 MiB (one chunk) "takes" 320 s, then 240 s. */
START_TEST(epilog_gives_up_hashing_after_its_time_limit)
{
    stage_model(3, "three");
    size_t len = (8 << 20) + 1; /* two chunks: the deadline is checked between them */
    char *data = malloc(len);
    ck_assert_ptr_nonnull(data);
    unsigned x = 1; /* no two chunks alike, so a chunk hashed from the wrong offset shows */
    for (size_t i = 0; i < len; i++)
        data[i] = (char)((x = x * 1103515245u + 12345u) >> 16);
    char want[FLAS_SHA256_HEX_LEN + 1], err[512];
    flas_sha256_buffer(data, len, want);
    prolog_ok();
    test_write_file(S("flas/jobs/42/local.h5"), data, len, 0644, TEST_UID, TEST_GID);
    read_s_per_mib = 40;
    epilog_ok(err, sizeof err);
    assert_refused(42, "checkpoint refused: not hashed within 300 s (8388608 of 8388609 bytes read)");
    /* within the limit, the same file is published, hashed across both chunks */
    job.jobid = 43;
    prolog_ok();
    test_write_file(S("flas/jobs/43/local.h5"), data, len, 0644, TEST_UID, TEST_GID);
    read_s_per_mib = 30;
    epilog_ok(err, sizeof err);
    read_s_per_mib = 0;
    clock_ahead_ns = 0;
    test_json m = manifest(3, 43);
    ck_assert_str_eq(test_json_string(&m, "error"), "");
    ck_assert_str_eq(test_json_string(&m, "checkpoint"), "siteA-job43.h5");
    ck_assert_int_eq(test_json_number(&m, "size"), (long long)len);
    ck_assert_str_eq(test_json_string(&m, "sha256"), want);
    free(data);
}
END_TEST

START_TEST(epilog_of_another_node_keeps_the_first_manifest)
{
    stage_model(3, "three");
    prolog_ok();
    write_checkpoint("ckpt");
    char err[512];
    epilog_ok(err, sizeof err);
    char *first = test_read_file(manifest_path(3, 42));
    struct stat st1, st2;
    ck_assert_int_eq(lstat(manifest_path(3, 42), &st1), 0);
    /* the epilog runs on every node of a multi-node job; the second one finds everything in place */
    snprintf(job.node, sizeof job.node, "node2");
    job.exit_code = 1;
    epilog_ok(err, sizeof err);
    char *second = test_read_file(manifest_path(3, 42));
    ck_assert_str_eq(first, second);
    ck_assert_int_eq(lstat(manifest_path(3, 42), &st2), 0);
    ck_assert_int_eq(st1.st_ino, st2.st_ino);
    test_json m = manifest(3, 42);
    ck_assert_str_eq(test_json_string(&m, "node"), "node1");
    ck_assert_str_eq(test_json_string(&m, "job_state"), "COMPLETED");
    ck_assert_int_eq(test_count_entries(S("flas/outbox/round-000003"), ""), 2);
    free(first);
    free(second);
}
END_TEST

START_TEST(epilog_without_a_usable_record_publishes_nothing)
{
    char err[512];
    /* no prolog record at all (the job was not a federation job when the prolog ran) */
    test_mkdir(S("flas/state"), 0755, 0, 0);
    test_mkdir(S("flas/jobs"), 0755, 0, 0);
    test_mkdir(S("flas/jobs/42"), 0700, TEST_UID, TEST_GID);
    write_checkpoint("ckpt");
    epilog_ok(err, sizeof err);
    ck_assert_str_eq(err, "job 42: nothing to publish (42: No such file or directory)");
    ck_assert(!exists(S("flas/outbox")));
    /* a record without a round (the user was refused by the prolog): nothing to file it under */
    fed.allow_users.n = 1;
    snprintf(fed.allow_users.name[0], sizeof fed.allow_users.name[0], "alice");
    prolog_ok();
    dirty_stack();
    epilog_ok(err, sizeof err);
    /* regression: this message once came from an error buffer nothing had written */
    ck_assert_str_eq(err, "job 42: nothing to publish (the prolog chose no round: user 'nobody' may not use "
                          "federation 'flas' (AllowUsers/AllowGroups in flas.conf))");
    ck_assert(!exists(S("flas/outbox")));
    /* a malformed record */
    test_write_text(S("flas/state/42"), "federation=flas\n");
    dirty_stack();
    epilog_ok(err, sizeof err);
    ck_assert_str_eq(err, "job 42: nothing to publish (malformed prolog record)");
    ck_assert(!exists(S("flas/outbox")));
}
END_TEST

START_TEST(epilog_after_a_refused_model_files_the_reason)
{
    stage_model(3, "three");
    test_write_file(S("flas/global/round-000003.h5"), "thr33", 5, 0644, TEST_UID, TEST_GID);
    prolog_ok();
    char err[512];
    epilog_ok(err, sizeof err);
    test_json m = manifest(3, 42);
    ck_assert(test_json_is_null(&m, "checkpoint"));
    ck_assert_msg(strstr(test_json_string(&m, "error"), "failed verification") != NULL, "%s",
                  test_json_string(&m, "error"));
    ck_assert_str_eq(test_json_string(&m, "base_sha256"), "");
}
END_TEST

START_TEST(epilog_escapes_free_text_in_the_manifest)
{
    stage_model(3, "three");
    prolog_ok();
    const char *why = "a \"quoted\" back\\slash\tand tab";
    char text[512];
    snprintf(text, sizeof text, "federation=flas\nround=3\nsha256=\nerror=%s\n", why);
    test_write_text(S("flas/state/42"), text);
    char err[512];
    epilog_ok(err, sizeof err);
    test_json m = manifest(3, 42);
    ck_assert_str_eq(test_json_string(&m, "error"), why);
}
END_TEST

START_TEST(epilog_fails_only_for_an_unsafe_staging_root)
{
    stage_model(3, "three");
    prolog_ok();
    write_checkpoint("ckpt");
    char err[512];
    ck_assert_int_eq(chmod(root, 0775), 0);
    ck_assert_int_eq(flas_epilog(&job, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "is not owned by root or is writable by others") != NULL, "%s", err);
    ck_assert(!exists(S("flas/outbox")));
    ck_assert_int_eq(chmod(root, 0755), 0);
    /* an outbox that is not root's is a site fault too */
    test_mkdir(S("flas/outbox"), 0755, TEST_UID, TEST_GID);
    ck_assert_int_eq(flas_epilog(&job, err, sizeof err), -1);
    ck_assert_str_eq(err, "outbox/round-000003: outbox: owned by uid 65534, expected uid 0");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("spank_actions");
    TCase *t = tcase_create("prolog");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, prolog_chooses_the_newest_complete_round_and_verifies_it);
    tcase_add_test(t, prolog_uses_the_requested_round);
    tcase_add_test(t, prolog_records_an_unstaged_round_and_lets_the_job_start);
    tcase_add_test(t, prolog_records_that_nothing_is_staged);
    tcase_add_test(t, prolog_records_a_corrupt_model);
    tcase_add_test(t, prolog_records_a_malformed_sidecar_with_a_clean_message);
    tcase_add_test(t, prolog_refuses_symlinked_and_fifo_models);
    tcase_add_test(t, prolog_cache_skips_rehashing_until_the_file_changes);
    tcase_add_test(t, prolog_records_a_user_or_account_not_allowed);
    tcase_add_test(t, prolog_fails_only_for_an_unsafe_staging_root);
    tcase_add_test(t, prolog_creates_the_federation_tree);
    tcase_add_test(t, prolog_refuses_a_job_directory_of_someone_else);
    suite_add_tcase(s, t);

    t = tcase_create("record_env");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, record_format_and_parse_round_trip);
    tcase_add_test(t, record_load_trusts_only_root_owned_files);
    tcase_add_test(t, newest_round_ignores_incomplete_rounds_and_can_be_asked_twice);
    tcase_add_test(t, submit_check_finds_the_round_or_says_why_not);
    tcase_add_test(t, job_env_from_a_good_record);
    tcase_add_test(t, job_env_tells_why_a_job_may_not_train);
    suite_add_tcase(s, t);

    t = tcase_create("epilog");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, epilog_publishes_by_hard_link_with_a_manifest);
    tcase_add_test(t, epilog_records_failed_and_signaled_jobs);
    tcase_add_test(t, epilog_prefers_the_batch_steps_record_of_how_the_script_ended);
    tcase_add_test(t, prolog_and_epilog_work_on_nfs);
    tcase_add_test(t, epilog_refuses_symlink_fifo_hardlink_and_foreign_checkpoints);
    tcase_add_test(t, epilog_of_another_node_keeps_the_first_manifest);
    tcase_add_test(t, epilog_refuses_a_sparse_checkpoint_without_reading_it);
    tcase_add_test(t, epilog_refuses_a_checkpoint_that_changes_while_it_is_hashed);
    tcase_add_test(t, epilog_publishes_although_another_node_linked_the_checkpoint_meanwhile);
    tcase_add_test(t, epilog_publishes_only_on_the_jobs_first_node);
    tcase_add_test(t, hostlist_first_host);
    tcase_add_test(t, epilog_gives_up_hashing_after_its_time_limit);
    tcase_add_test(t, epilog_without_a_usable_record_publishes_nothing);
    tcase_add_test(t, epilog_after_a_refused_model_files_the_reason);
    tcase_add_test(t, epilog_escapes_free_text_in_the_manifest);
    tcase_add_test(t, epilog_fails_only_for_an_unsafe_staging_root);
    suite_add_tcase(s, t);

    SRunner *r = srunner_create(s);
    srunner_set_fork_status(r, CK_FORK);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
