/* Helpers of the flas.so unit tests (see spank_testutil.h). */
#define _GNU_SOURCE
#include "spank_testutil.h"

#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* renameat2 with an NFS-like switch (see spank_testutil.h). */
int spank_test_nfs_like;

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)
{
    if (flags && spank_test_nfs_like) {
        errno = EINVAL;
        return -1;
    }
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

const char *test_scratch_dir(const char *tag)
{
    static char dir[128];
    snprintf(dir, sizeof dir, "/tmp/flas-%s-XXXXXX", tag);
    ck_assert_msg(mkdtemp(dir) != NULL, "mkdtemp %s failed", dir);
    ck_assert_int_eq(chmod(dir, 0755), 0);
    return dir;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 ? 0 : 0; /* best effort: keep going */
}

void test_remove_tree(const char *path)
{
    if (path && path[0])
        nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

void test_write_file(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "cannot create %s", path);
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    ck_assert_int_eq(fchown(fd, uid, gid), 0);
    ck_assert_int_eq(fchmod(fd, mode), 0);
    ck_assert_int_eq(close(fd), 0);
}

void test_write_text(const char *path, const char *text) { test_write_file(path, text, strlen(text), 0644, 0, 0); }

char *test_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

void test_mkdir(const char *path, mode_t mode, uid_t uid, gid_t gid)
{
    ck_assert_msg(mkdir(path, 0700) == 0, "mkdir %s failed", path);
    ck_assert_int_eq(chown(path, uid, gid), 0);
    ck_assert_int_eq(chmod(path, mode), 0);
}

int test_count_entries(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot list %s", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strstr(e->d_name, needle))
            n++;
    closedir(d);
    return n;
}

const char *test_path(const char *fmt, ...)
{
    static char slots[8][2048];
    static int next;
    char *buf = slots[next++ % 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof slots[0], fmt, ap);
    va_end(ap);
    return buf;
}

/* --- a strict parser for flat JSON objects --- */

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* A JSON string at p (after the opening quote) into out; returns the position after the closing quote. */
static const char *parse_string(const char *p, char *out, size_t len)
{
    size_t o = 0;
    for (; *p && *p != '"'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || o + 1 >= len)
            return NULL;
        if (c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        p++;
        switch (*p) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'n': out[o++] = '\n'; break;
        case 't': out[o++] = '\t'; break;
        case 'r': out[o++] = '\r'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'u': {
            unsigned v = 0;
            for (int i = 1; i <= 4; i++) {
                if (!isxdigit((unsigned char)p[i]))
                    return NULL;
                v = v * 16 + (unsigned)(isdigit((unsigned char)p[i]) ? p[i] - '0' : (tolower(p[i]) - 'a' + 10));
            }
            if (v == 0 || v > 0x7f) /* manifests escape only control characters */
                return NULL;
            out[o++] = (char)v;
            p += 4;
            break;
        }
        default: return NULL;
        }
    }
    if (*p != '"')
        return NULL;
    out[o] = '\0';
    return p + 1;
}

int test_json_parse(const char *text, test_json *out)
{
    memset(out, 0, sizeof *out);
    const char *p = skip_ws(text);
    if (*p++ != '{')
        return -1;
    p = skip_ws(p);
    if (*p == '}')
        return *skip_ws(p + 1) ? -1 : 0;
    for (;;) {
        if (out->n == TEST_JSON_MAX || *p++ != '"')
            return -1;
        typeof(out->field[0]) *f = &out->field[out->n];
        if (!(p = parse_string(p, f->key, sizeof f->key)))
            return -1;
        for (int i = 0; i < out->n; i++)
            if (!strcmp(out->field[i].key, f->key))
                return -1;
        p = skip_ws(p);
        if (*p++ != ':')
            return -1;
        p = skip_ws(p);
        if (*p == '"') {
            f->is_string = 1;
            if (!(p = parse_string(p + 1, f->string, sizeof f->string)))
                return -1;
        } else if (!strncmp(p, "null", 4)) {
            f->is_null = 1;
            p += 4;
        } else {
            char *end;
            if (*p != '-' && !isdigit((unsigned char)*p))
                return -1;
            f->number = strtoll(p, &end, 10);
            if (end == p)
                return -1;
            p = end;
        }
        out->n++;
        p = skip_ws(p);
        if (*p == '}')
            return *skip_ws(p + 1) ? -1 : 0;
        if (*p++ != ',')
            return -1;
        p = skip_ws(p);
    }
}

static int find(const test_json *j, const char *key)
{
    for (int i = 0; i < j->n; i++)
        if (!strcmp(j->field[i].key, key))
            return i;
    return -1;
}

const char *test_json_string(const test_json *j, const char *key)
{
    int i = find(j, key);
    return i >= 0 && j->field[i].is_string ? j->field[i].string : NULL;
}

int test_json_has(const test_json *j, const char *key) { return find(j, key) >= 0; }

int test_json_is_null(const test_json *j, const char *key)
{
    int i = find(j, key);
    return i >= 0 && j->field[i].is_null;
}

long long test_json_number(const test_json *j, const char *key)
{
    int i = find(j, key);
    ck_assert_msg(i >= 0 && !j->field[i].is_null && !j->field[i].is_string, "manifest field '%s' is not a number",
                  key);
    return j->field[i].number;
}
