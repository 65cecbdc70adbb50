/* Helpers shared by the flas.so unit tests: a scratch directory that passes the plugin's trusted-root
 * checks (root-owned, 0755, under the sticky /tmp), files written with a given owner and mode, and a
 * strict parser for the flat JSON objects the epilog writes as manifests. */
#ifndef FLAS_SPANK_TESTUTIL_H
#define FLAS_SPANK_TESTUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* The "other user" of the tests: Debian's nobody/nogroup. */
#define TEST_UID ((uid_t)65534)
#define TEST_GID ((gid_t)65534)

/* mkdtemp under /tmp, chmod 0755; aborts the test on failure. The returned string is static. */
const char *test_scratch_dir(const char *tag);
/* rm -rf (no symlink is followed). */
void test_remove_tree(const char *path);
/* Writes len bytes of data to path (replacing it), then chown/chmod. */
void test_write_file(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid);
void test_write_text(const char *path, const char *text);
/* Whole file into a malloc'd NUL-terminated string (NULL if it cannot be read). */
char *test_read_file(const char *path);
/* Makes a directory (mode, owner); parents must exist. */
void test_mkdir(const char *path, mode_t mode, uid_t uid, gid_t gid);
/* Number of entries of dir whose name contains needle. */
int test_count_entries(const char *dir, const char *needle);
/* printf into a static rotating buffer (8 slots), for building paths inline. */
const char *test_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The test binaries' renameat2 stands in for libc's in the code under test (linked statically; the plugin
 * harness exports it to flas.so too). It passes through to the system call, unless spank_test_nfs_like is
 * set: then it refuses every flag with EINVAL, as the Linux NFS client (and other network file systems)
 * does. */
extern int spank_test_nfs_like;

/* A flat JSON object: string, integer or null values only (what a manifest holds). */
#define TEST_JSON_MAX 32
typedef struct test_json {
    int n;
    struct {
        char key[64];
        int is_null, is_string;
        long long number;
        char string[1024];
    } field[TEST_JSON_MAX];
} test_json;

/* 0 when text is exactly one such object (and whitespace), else -1. Duplicate keys are an error. */
int test_json_parse(const char *text, test_json *out);
/* The field named key, or NULL. */
const char *test_json_string(const test_json *j, const char *key); /* NULL unless a string */
int test_json_has(const test_json *j, const char *key);
int test_json_is_null(const test_json *j, const char *key);
long long test_json_number(const test_json *j, const char *key); /* aborts unless a number */

#endif
