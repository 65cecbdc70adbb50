/* safefs: the no-follow, owner-checked file operations behind the plugin's root-side work. Each test
 * runs in its own scratch directory under /tmp (root-owned 0755 below the sticky /tmp). */
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
#include <sys/wait.h>
#include <unistd.h>

#include "safefs.h"
#include "spank_testutil.h"

/* Stand-ins for two system calls, which the code under test (linked statically) binds to instead of
 * libc's. They pass through unless a test switches them on. renameat2 is spank_testutil's (NFS-like
 * when spank_test_nfs_like is set). */

/* Runs once, just before the next fchown: another node acting in the middle of an operation. */
static void (*before_next_fchown)(void);

int fchown(int fd, uid_t owner, gid_t group)
{
    void (*hook)(void) = before_next_fchown;
    before_next_fchown = NULL;
    if (hook)
        hook();
    return (int)syscall(SYS_fchown, fd, owner, group);
}

/* The temporary name safefs gives name on this host in this process. */
static const char *temp_name_of(const char *name)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    return test_path(".%s.tmp.%s.%ld", name, host, (long)getpid());
}

static char dir[128];
static int dirfd_;

static void setup(void)
{
    snprintf(dir, sizeof dir, "%s", test_scratch_dir("safefs"));
    dirfd_ = open(dir, O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(dirfd_, 0);
    /* a FIFO opened without O_NONBLOCK would hang: let SIGALRM end such a test with a clear failure */
    alarm(20);
}

static void teardown(void)
{
    close(dirfd_);
    test_remove_tree(dir);
}

static const char *in(const char *name) { return test_path("%s/%s", dir, name); }

static void stat_of(const char *path, struct stat *st) { ck_assert_msg(lstat(path, st) == 0, "no %s", path); }

/* ---------------------------------------------------------------- trusted root */

START_TEST(trusted_root_accepts_root_owned_path_below_sticky_tmp)
{
    char err[512] = "";
    test_mkdir(in("stage"), 0755, 0, 0);
    int fd = safefs_open_trusted_root(in("stage"), err, sizeof err);
    ck_assert_msg(fd >= 0, "refused: %s", err);
    struct stat a, b;
    ck_assert_int_eq(fstat(fd, &a), 0);
    stat_of(in("stage"), &b);
    ck_assert_int_eq(a.st_ino, b.st_ino); /* the very directory named */
    close(fd);
    /* a sticky, world-writable component in the middle (like /tmp) is fine when what follows is root's */
    test_mkdir(in("sticky"), 01777, 0, 0);
    test_mkdir(in("sticky/stage"), 0755, 0, 0);
    fd = safefs_open_trusted_root(in("sticky/stage"), err, sizeof err);
    ck_assert_msg(fd >= 0, "refused: %s", err);
    close(fd);
    fd = safefs_open_trusted_root("/", err, sizeof err);
    ck_assert_int_ge(fd, 0);
    close(fd);
}
END_TEST

START_TEST(trusted_root_refuses_a_symlink_component)
{
    char err[512] = "";
    test_mkdir(in("real"), 0755, 0, 0);
    test_mkdir(in("real/stage"), 0755, 0, 0);
    ck_assert_int_eq(symlink(in("real"), in("link")), 0);
    ck_assert_int_eq(safefs_open_trusted_root(in("link/stage"), err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s: component 'link': not a directory (symlink?)", in("link/stage")));
    /* the last component too */
    ck_assert_int_eq(symlink(in("real/stage"), in("stagelink")), 0);
    ck_assert_int_eq(safefs_open_trusted_root(in("stagelink"), err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s: component 'stagelink': not a directory (symlink?)", in("stagelink")));
}
END_TEST

START_TEST(trusted_root_refuses_writable_or_foreign_components)
{
    char err[512] = "";
    const mode_t modes[] = {0775, 0757, 0777, 0770};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        const char *p = in(test_path("w%zu", i));
        test_mkdir(p, modes[i], 0, 0);
        test_mkdir(test_path("%s/stage", p), 0755, 0, 0);
        /* as the last component and as a middle one */
        ck_assert_msg(safefs_open_trusted_root(p, err, sizeof err) == -1, "mode %o accepted", modes[i]);
        ck_assert_int_eq(errno, EPERM);
        ck_assert_int_eq(safefs_open_trusted_root(test_path("%s/stage", p), err, sizeof err), -1);
        ck_assert_str_eq(err, test_path("%s/stage: component 'w%zu' is not owned by root or is writable by others", p, i));
    }
    /* owned by a user, even with mode 0755 */
    test_mkdir(in("users"), 0755, TEST_UID, TEST_GID);
    test_mkdir(in("users/stage"), 0755, 0, 0);
    ck_assert_int_eq(safefs_open_trusted_root(in("users/stage"), err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s: component 'users' is not owned by root or is writable by others", in("users/stage")));
    /* a root-owned directory below a sticky one is fine, a user's is not */
    test_mkdir(in("tmp"), 01777, 0, 0);
    test_mkdir(in("tmp/mine"), 0755, TEST_UID, TEST_GID);
    ck_assert_int_eq(safefs_open_trusted_root(in("tmp/mine"), err, sizeof err), -1);
}
END_TEST

START_TEST(trusted_root_refuses_relative_dotdot_and_missing)
{
    char err[512] = "";
    ck_assert_int_eq(safefs_open_trusted_root("tmp/x", err, sizeof err), -1);
    ck_assert_str_eq(err, "tmp/x: not an absolute path");
    ck_assert_int_eq(safefs_open_trusted_root(NULL, err, sizeof err), -1);
    test_mkdir(in("stage"), 0755, 0, 0);
    const char *dots = test_path("%s/stage/../stage", dir);
    ck_assert_int_eq(safefs_open_trusted_root(dots, err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s: '.' or '..' in path", dots));
    ck_assert_int_eq(safefs_open_trusted_root(test_path("%s/./stage", dir), err, sizeof err), -1);
    ck_assert_int_eq(safefs_open_trusted_root(in("absent"), err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s: component 'absent': No such file or directory", in("absent")));
    test_write_text(in("file"), "x");
    ck_assert_int_eq(safefs_open_trusted_root(in("file"), err, sizeof err), -1);
}
END_TEST

/* ---------------------------------------------------------------- open_dir */

START_TEST(open_dir_creates_with_owner_and_mode)
{
    char err[512] = "";
    mode_t old = umask(077); /* the mode asked for is the mode given, whatever the umask */
    int fd = safefs_open_dir(dirfd_, "job", 1, 0750, TEST_UID, TEST_GID, TEST_UID, err, sizeof err);
    umask(old);
    ck_assert_msg(fd >= 0, "%s", err);
    struct stat st, fst;
    stat_of(in("job"), &st);
    ck_assert_int_eq(st.st_uid, TEST_UID);
    ck_assert_int_eq(st.st_gid, TEST_GID);
    ck_assert_int_eq(st.st_mode, S_IFDIR | 0750);
    ck_assert_int_eq(fstat(fd, &fst), 0);
    ck_assert_int_eq(fst.st_ino, st.st_ino);
    close(fd);
    /* opening it again (create or not) keeps it as it is */
    ck_assert_int_eq(chmod(in("job"), 0700), 0);
    fd = safefs_open_dir(dirfd_, "job", 1, 0755, 0, 0, TEST_UID, err, sizeof err);
    ck_assert_msg(fd >= 0, "%s", err);
    close(fd);
    stat_of(in("job"), &st);
    ck_assert_int_eq(st.st_uid, TEST_UID);
    ck_assert_int_eq(st.st_mode, S_IFDIR | 0700);
    fd = safefs_open_dir(dirfd_, "job", 0, 0, 0, 0, SAFEFS_ANY_OWNER, err, sizeof err);
    ck_assert_int_ge(fd, 0);
    close(fd);
}
END_TEST

START_TEST(open_dir_checks_the_owner)
{
    char err[512] = "";
    test_mkdir(in("roots"), 0755, 0, 0);
    errno = 0;
    ck_assert_int_eq(safefs_open_dir(dirfd_, "roots", 1, 0700, TEST_UID, TEST_GID, TEST_UID, err, sizeof err), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_str_eq(err, "roots: owned by uid 0, expected uid 65534");
    struct stat st;
    stat_of(in("roots"), &st);
    ck_assert_int_eq(st.st_uid, 0); /* not taken over */
    test_mkdir(in("users"), 0755, TEST_UID, TEST_GID);
    ck_assert_int_eq(safefs_open_dir(dirfd_, "users", 0, 0, 0, 0, 0, err, sizeof err), -1);
    ck_assert_str_eq(err, "users: owned by uid 65534, expected uid 0");
}
END_TEST

START_TEST(open_dir_refuses_missing_symlinks_files_and_bad_names)
{
    char err[512] = "";
    errno = 0;
    ck_assert_int_eq(safefs_open_dir(dirfd_, "absent", 0, 0, 0, 0, SAFEFS_ANY_OWNER, err, sizeof err), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_str_eq(err, "absent: No such file or directory");
    test_mkdir(in("real"), 0755, 0, 0);
    ck_assert_int_eq(symlink(in("real"), in("link")), 0);
    /* neither opened nor created through the link */
    ck_assert_int_eq(safefs_open_dir(dirfd_, "link", 1, 0755, 0, 0, SAFEFS_ANY_OWNER, err, sizeof err), -1);
    ck_assert_str_eq(err, "link: not a directory (symlink?)");
    ck_assert_int_eq(symlink(in("real/made"), in("dangling")), 0);
    ck_assert_int_eq(safefs_open_dir(dirfd_, "dangling", 1, 0755, 0, 0, SAFEFS_ANY_OWNER, err, sizeof err), -1);
    ck_assert_int_eq(access(in("real/made"), F_OK), -1);
    test_write_text(in("file"), "x");
    ck_assert_int_eq(safefs_open_dir(dirfd_, "file", 1, 0755, 0, 0, SAFEFS_ANY_OWNER, err, sizeof err), -1);
    const char *bad[] = {"", ".", "..", "a/b", "/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        ck_assert_int_eq(safefs_open_dir(dirfd_, bad[i], 1, 0755, 0, 0, SAFEFS_ANY_OWNER, err, sizeof err), -1);
        ck_assert_int_eq(errno, EINVAL);
        ck_assert_str_eq(err, test_path("'%s': not a single path component", bad[i]));
    }
    ck_assert_int_eq(safefs_open_dir(dirfd_, NULL, 1, 0755, 0, 0, SAFEFS_ANY_OWNER, err, sizeof err), -1);
}
END_TEST

/* ---------------------------------------------------------------- open_regular, read_small */

START_TEST(open_regular_opens_plain_files_only)
{
    char err[512] = "";
    struct stat st;
    test_write_file(in("plain"), "hello", 5, 0640, TEST_UID, TEST_GID);
    int fd = safefs_open_regular(dirfd_, "plain", &st, err, sizeof err);
    ck_assert_msg(fd >= 0, "%s", err);
    ck_assert_int_eq(st.st_size, 5);
    ck_assert_int_eq(st.st_uid, TEST_UID);
    ck_assert_int_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0); /* an ordinary blocking descriptor afterwards */
    char b[8] = "";
    ck_assert_int_eq(read(fd, b, sizeof b), 5);
    close(fd);

    ck_assert_int_eq(symlink(in("plain"), in("link")), 0);
    ck_assert_int_eq(safefs_open_regular(dirfd_, "link", &st, err, sizeof err), -1);
    ck_assert_str_eq(err, "link: is a symlink (refused)");

    ck_assert_int_eq(mkfifo(in("fifo"), 0666), 0); /* nobody writes it: a blocking open would hang */
    errno = 0;
    ck_assert_int_eq(safefs_open_regular(dirfd_, "fifo", &st, err, sizeof err), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_str_eq(err, "fifo: not a regular file (refused)");

    test_mkdir(in("sub"), 0755, 0, 0);
    ck_assert_int_eq(safefs_open_regular(dirfd_, "sub", &st, err, sizeof err), -1);
    ck_assert_str_eq(err, "sub: not a regular file (refused)");
    ck_assert_int_eq(safefs_open_regular(dirfd_, "/dev/null", &st, err, sizeof err), -1);
    ck_assert_int_eq(safefs_open_regular(dirfd_, "..", &st, err, sizeof err), -1);
    errno = 0;
    ck_assert_int_eq(safefs_open_regular(dirfd_, "absent", &st, err, sizeof err), -1);
    ck_assert_int_eq(errno, ENOENT);
}
END_TEST

START_TEST(read_small_limits_the_size)
{
    char err[512] = "", buf[17];
    test_write_text(in("f"), "0123456789abcdef"); /* 16 bytes */
    memset(buf, 'Z', sizeof buf);
    ck_assert_int_eq(safefs_read_small(dirfd_, "f", buf, 16, err, sizeof err), 16);
    ck_assert_str_eq(buf, "0123456789abcdef");
    ck_assert_int_eq(safefs_read_small(dirfd_, "f", buf, 15, err, sizeof err), -1);
    ck_assert_str_eq(err, "f: larger than 15 bytes (refused)");
    test_write_text(in("empty"), "");
    ck_assert_int_eq(safefs_read_small(dirfd_, "empty", buf, 16, err, sizeof err), 0);
    ck_assert_str_eq(buf, "");
    ck_assert_int_eq(symlink(in("f"), in("link")), 0);
    ck_assert_int_eq(safefs_read_small(dirfd_, "link", buf, 16, err, sizeof err), -1);
    ck_assert_str_eq(err, "link: is a symlink (refused)");
    ck_assert_int_eq(mkfifo(in("fifo"), 0666), 0);
    ck_assert_int_eq(safefs_read_small(dirfd_, "fifo", buf, 16, err, sizeof err), -1);
}
END_TEST

/* ---------------------------------------------------------------- write_atomic */

START_TEST(write_atomic_writes_content_mode_owner)
{
    char err[512] = "";
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "out", "first\n", 6, 0640, TEST_UID, TEST_GID, 0, err, sizeof err), 0);
    struct stat st;
    stat_of(in("out"), &st);
    ck_assert_int_eq(st.st_mode, S_IFREG | 0640);
    ck_assert_int_eq(st.st_uid, TEST_UID);
    ck_assert_int_eq(st.st_gid, TEST_GID);
    char *text = test_read_file(in("out"));
    ck_assert_str_eq(text, "first\n");
    free(text);
    /* replaced: a new inode, never the old one rewritten in place */
    ino_t old = st.st_ino;
    int keep = open(in("out"), O_RDONLY);
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "out", "second", 6, 0644, 0, 0, 0, err, sizeof err), 0);
    stat_of(in("out"), &st);
    ck_assert_int_ne(st.st_ino, old);
    ck_assert_int_eq(st.st_uid, 0);
    ck_assert_int_eq(st.st_mode, S_IFREG | 0644);
    text = test_read_file(in("out"));
    ck_assert_str_eq(text, "second");
    free(text);
    char b[8] = "";
    ck_assert_int_eq(read(keep, b, sizeof b), 6); /* a reader of the old file still sees it whole */
    ck_assert_int_eq(memcmp(b, "first\n", 6), 0);
    close(keep);
    /* empty content */
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "empty", "", 0, 0600, 0, 0, 0, err, sizeof err), 0);
    stat_of(in("empty"), &st);
    ck_assert_int_eq(st.st_size, 0);
    ck_assert_int_eq(test_count_entries(dir, ".tmp."), 0);
}
END_TEST

START_TEST(write_atomic_noreplace_keeps_the_existing_file)
{
    char err[512] = "";
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "m", "one", 3, 0644, 0, 0, 1, err, sizeof err), 0);
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "m", "two", 3, 0644, 0, 0, 1, err, sizeof err), 1);
    char *text = test_read_file(in("m"));
    ck_assert_str_eq(text, "one");
    free(text);
    ck_assert_int_eq(test_count_entries(dir, ".tmp."), 0);
    /* noreplace also holds against a symlink at the name: neither replaced nor written through */
    test_write_text(in("victim"), "victim");
    ck_assert_int_eq(symlink(in("victim"), in("ln")), 0);
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "ln", "x", 1, 0644, 0, 0, 1, err, sizeof err), 1);
    text = test_read_file(in("victim"));
    ck_assert_str_eq(text, "victim");
    free(text);
}
END_TEST

START_TEST(write_atomic_never_writes_through_symlinks)
{
    char err[512] = "";
    test_write_file(in("victim"), "victim", 6, 0600, TEST_UID, TEST_GID);
    /* a symlink at the name is replaced by the file, its target untouched */
    ck_assert_int_eq(symlink(in("victim"), in("name")), 0);
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "name", "data", 4, 0644, 0, 0, 0, err, sizeof err), 0);
    struct stat st;
    stat_of(in("name"), &st);
    ck_assert(S_ISREG(st.st_mode));
    /* a symlink planted at this process's temporary name */
    ck_assert_int_eq(symlink(in("victim"), in(temp_name_of("other"))), 0);
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "other", "data", 4, 0644, 0, 0, 0, err, sizeof err), 0);
    char *text = test_read_file(in("victim"));
    ck_assert_str_eq(text, "victim");
    free(text);
    stat_of(in("victim"), &st);
    ck_assert_int_eq(st.st_uid, TEST_UID);
    ck_assert_int_eq(st.st_mode, S_IFREG | 0600);
    ck_assert_int_eq(test_count_entries(dir, ".tmp."), 0);
    /* bad names */
    errno = 0;
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "a/b", "x", 1, 0644, 0, 0, 0, err, sizeof err), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "..", "x", 1, 0644, 0, 0, 0, err, sizeof err), -1);
}
END_TEST

START_TEST(write_atomic_leaves_another_nodes_temporary_file_alone)
{
    /* Nodes sharing a staging area write the same names at the same time (every node's prolog writes the
     * job's record), and the same pid can run on two nodes. Regression: the temporary name was
     * ".NAME.tmp.PID" and the "leftover" of another node with our pid was deleted under it. */
    char err[512] = "";
    const char *theirs = in(test_path(".record.tmp.%ld", (long)getpid()));
    test_write_text(theirs, "another node's record, being written");
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "record", "ours", 4, 0644, 0, 0, 0, err, sizeof err), 0);
    char *text = test_read_file(theirs);
    ck_assert_ptr_nonnull(text);
    ck_assert_str_eq(text, "another node's record, being written");
    free(text);
    text = test_read_file(in("record"));
    ck_assert_str_eq(text, "ours");
    free(text);
}
END_TEST

START_TEST(noreplace_works_without_renameat2_flags)
{
    /* Regression: on NFS every no-replace write failed with EINVAL, so no manifest was ever written and
     * each epilog failed as a site fault (a drained node for a required plugin). */
    char err[512] = "";
    spank_test_nfs_like = 1;
    errno = 0;
    ck_assert_int_eq(renameat2(dirfd_, "a", dirfd_, "b", RENAME_NOREPLACE), -1); /* the stand-in is active */
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_msg(safefs_write_atomic(dirfd_, "m", "one", 3, 0644, 0, 0, 1, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "m", "two", 3, 0644, 0, 0, 1, err, sizeof err), 1);
    char *text = test_read_file(in("m"));
    ck_assert_str_eq(text, "one");
    free(text);
    struct stat st;
    stat_of(in("m"), &st);
    ck_assert_int_eq(st.st_nlink, 1);
    ck_assert_int_eq(st.st_mode, S_IFREG | 0644);
    /* replacing still replaces */
    ck_assert_int_eq(safefs_write_atomic(dirfd_, "m", "three", 5, 0644, 0, 0, 0, err, sizeof err), 0);
    text = test_read_file(in("m"));
    ck_assert_str_eq(text, "three");
    free(text);
    /* publishing by hard link */
    test_write_file(in("ckpt"), "checkpoint", 10, 0600, TEST_UID, TEST_GID);
    int fd = open(in("ckpt"), O_RDONLY);
    ck_assert_msg(safefs_link_fd(fd, dirfd_, "pub.h5", 1, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(safefs_link_fd(fd, dirfd_, "m", 1, err, sizeof err), 1);
    close(fd);
    struct stat a;
    stat_of(in("ckpt"), &a);
    stat_of(in("pub.h5"), &st);
    ck_assert_int_eq(a.st_ino, st.st_ino);
    ck_assert_int_eq(st.st_nlink, 2); /* the checkpoint and its published name, no temporary link */
    ck_assert_int_eq(test_count_entries(dir, ".tmp."), 0);
}
END_TEST

/* Another node's prolog creating the same job directory, from another process. */
static int other_node_ok;
static void other_node_opens_job_dir(void)
{
    pid_t p = fork();
    if (p == 0) {
        char err[512];
        int fd = safefs_open_dir(dirfd_, "job", 1, 0700, TEST_UID, TEST_GID, TEST_UID, err, sizeof err);
        if (fd < 0)
            fprintf(stderr, "other node: %s\n", err);
        _exit(fd >= 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(p, &status, 0);
    other_node_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void created_once_by_two_nodes(int nfs)
{
    char err[512] = "";
    spank_test_nfs_like = nfs;
    other_node_ok = -1;
    before_next_fchown = other_node_opens_job_dir;
    int fd = safefs_open_dir(dirfd_, "job", 1, 0700, TEST_UID, TEST_GID, TEST_UID, err, sizeof err);
    ck_assert_msg(fd >= 0, "%s", err);
    close(fd);
    ck_assert_int_ne(other_node_ok, -1); /* it did run in between */
    ck_assert_msg(other_node_ok == 1, "the other node's prolog saw a half-made directory");
    struct stat st;
    stat_of(in("job"), &st);
    ck_assert_int_eq(st.st_uid, TEST_UID);
    ck_assert_int_eq(st.st_mode, S_IFDIR | 0700);
    ck_assert_int_eq(test_count_entries(dir, ".tmp."), 0);
}

/* Regression: the directory appeared root-owned (mkdir, then chown), and the prolog of another node of
 * the same job, arriving in between, recorded "owned by uid 0" and the job could not train. */
START_TEST(open_dir_never_shows_a_half_made_directory)
{
    created_once_by_two_nodes(0);
}
END_TEST

START_TEST(open_dir_never_shows_a_half_made_directory_on_nfs)
{
    created_once_by_two_nodes(1);
}
END_TEST

/* ---------------------------------------------------------------- link_fd */

START_TEST(link_fd_gives_the_same_inode_a_new_name)
{
    char err[512] = "";
    test_mkdir(in("jobs"), 0700, TEST_UID, TEST_GID);
    test_mkdir(in("outbox"), 0755, 0, 0);
    test_write_file(in("jobs/local.h5"), "checkpoint", 10, 0600, TEST_UID, TEST_GID);
    int out = open(in("outbox"), O_RDONLY | O_DIRECTORY);
    int fd = open(in("jobs/local.h5"), O_RDONLY);
    ck_assert_int_eq(safefs_link_fd(fd, out, "pub.h5", 1, err, sizeof err), 0);
    struct stat a, b;
    stat_of(in("jobs/local.h5"), &a);
    stat_of(in("outbox/pub.h5"), &b);
    ck_assert_int_eq(a.st_ino, b.st_ino); /* no copy: same inode, same owner */
    ck_assert_int_eq(b.st_nlink, 2);
    ck_assert_int_eq(b.st_uid, TEST_UID);
    /* noreplace: an existing name is kept */
    test_write_text(in("other"), "other");
    int other = open(in("other"), O_RDONLY);
    ck_assert_int_eq(safefs_link_fd(other, out, "pub.h5", 1, err, sizeof err), 1);
    stat_of(in("outbox/pub.h5"), &b);
    ck_assert_int_eq(b.st_ino, a.st_ino);
    /* without noreplace it is replaced */
    ck_assert_int_eq(safefs_link_fd(other, out, "pub.h5", 0, err, sizeof err), 0);
    stat_of(in("outbox/pub.h5"), &b);
    stat_of(in("other"), &a);
    ck_assert_int_eq(b.st_ino, a.st_ino);
    ck_assert_int_eq(test_count_entries(in("outbox"), ".tmp."), 0);
    ck_assert_int_eq(safefs_link_fd(fd, out, "../escape", 1, err, sizeof err), -1);
    ck_assert_int_eq(safefs_link_fd(fd, out, "", 1, err, sizeof err), -1);
    close(other);
    close(fd);
    close(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("spank_safefs");
    TCase *t = tcase_create("trusted_root");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, trusted_root_accepts_root_owned_path_below_sticky_tmp);
    tcase_add_test(t, trusted_root_refuses_a_symlink_component);
    tcase_add_test(t, trusted_root_refuses_writable_or_foreign_components);
    tcase_add_test(t, trusted_root_refuses_relative_dotdot_and_missing);
    suite_add_tcase(s, t);

    t = tcase_create("files");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, open_dir_creates_with_owner_and_mode);
    tcase_add_test(t, open_dir_checks_the_owner);
    tcase_add_test(t, open_dir_refuses_missing_symlinks_files_and_bad_names);
    tcase_add_test(t, open_regular_opens_plain_files_only);
    tcase_add_test(t, read_small_limits_the_size);
    tcase_add_test(t, write_atomic_writes_content_mode_owner);
    tcase_add_test(t, write_atomic_noreplace_keeps_the_existing_file);
    tcase_add_test(t, write_atomic_never_writes_through_symlinks);
    tcase_add_test(t, link_fd_gives_the_same_inode_a_new_name);
    tcase_add_test(t, write_atomic_leaves_another_nodes_temporary_file_alone);
    tcase_add_test(t, noreplace_works_without_renameat2_flags);
    tcase_add_test(t, open_dir_never_shows_a_half_made_directory);
    tcase_add_test(t, open_dir_never_shows_a_half_made_directory_on_nfs);
    suite_add_tcase(s, t);

    SRunner *r = srunner_create(s);
    srunner_set_fork_status(r, CK_FORK);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
