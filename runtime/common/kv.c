/* The Key=Value parser (see flas/kv.h). libc only: it runs inside the SPANK plugin. */
#include "flas/kv.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/atomic_file.h"
#include "flas/error.h"
#include "flas/names.h"

int flas_kv_path_valid(const char *p)
{
    size_t n = strlen(p);
    if (n < 2 || p[0] != '/' || p[n - 1] == '/')
        return 0;
    for (size_t i = 0; i < n; i++) /* printable ASCII, whatever the locale says */
        if ((unsigned char)p[i] <= ' ' || (unsigned char)p[i] >= 0x7f)
            return 0;
    for (const char *c = p; *c;) {
        c++; /* the '/' */
        size_t len = strcspn(c, "/");
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += len;
    }
    return 1;
}

/* isalnum() follows the locale, which a Slurm client may have set: the rules are ASCII. */
static int ascii_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

int flas_kv_text_valid(const char *v)
{
    if (!*v)
        return 0;
    for (; *v; v++)
        if (!ascii_alnum(*v) && !strchr("._-:@%[]", *v))
            return 0;
    return 1;
}

typedef struct {
    const char *path;
    int line;
    char *err;
    size_t errlen;
} where;

static int fail_at(const where *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail_at(const where *w, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return flas_fail(w->err, w->errlen, "%s:%d: %s", w->path, w->line, msg);
}

/* Checks value against k's type and, when record is not NULL, stores it there. */
static int set_value(const where *w, const flas_kv_key *k, void *record, const char *v)
{
    char *dst = record ? (char *)record + k->offset : NULL;
    char *end;
    switch (k->type) {
    case FLAS_KV_NAME: {
        size_t max = k->size < FLAS_NAME_MAX ? k->size - 1 : FLAS_NAME_MAX - 1; /* the field may be shorter */
        if (!flas_name_valid(v) || strlen(v) > max)
            return fail_at(w, "%s=%s: a name is 1-%zu characters of [A-Za-z0-9_-], not starting with '-'", k->key, v,
                           max);
        break;
    }
    case FLAS_KV_PATH:
        if (!flas_kv_path_valid(v))
            return fail_at(w, "%s=%s: must be an absolute path without '.', '..', '//' or a trailing '/'", k->key, v);
        if (strlen(v) >= k->size)
            return fail_at(w, "%s=%s: longer than %zu characters", k->key, v, k->size - 1);
        break;
    case FLAS_KV_TEXT:
        if (!flas_kv_text_valid(v))
            return fail_at(w, "%s=%s: unexpected characters (allowed: letters, digits, ._-:@%%[])", k->key, v);
        if (strlen(v) >= k->size)
            return fail_at(w, "%s=%s: longer than %zu characters", k->key, v, k->size - 1);
        break;
    case FLAS_KV_INT: {
        /* hi == 0 means no bound of the key's own, but an int still holds no more than INT_MAX */
        long long hi = k->size == sizeof(int64_t) ? k->hi : k->hi > 0 && k->hi < INT_MAX ? k->hi : INT_MAX;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        /* decimal digits with an optional '-': strtoll alone would also take "+5" */
        int digits = (v[0] >= '0' && v[0] <= '9') || (v[0] == '-' && v[1] >= '0' && v[1] <= '9');
        if (!digits || errno || *end || x < k->lo || (hi > 0 && x > hi)) {
            if (hi > 0)
                return fail_at(w, "%s=%s: expected a whole number from %lld to %lld", k->key, v, k->lo, hi);
            return fail_at(w, "%s=%s: expected a whole number of at least %lld", k->key, v, k->lo);
        }
        if (!dst)
            return 0;
        if (k->size == sizeof(int64_t))
            *(int64_t *)dst = x;
        else
            *(int *)dst = (int)x;
        return 0;
    }
    case FLAS_KV_DOUBLE: {
        /* plain decimal notation: strtod alone would also take "inf", "nan" and hexadecimal */
        int plain = v[strspn(v, "0123456789.eE+-")] == '\0';
        errno = 0;
        double x = strtod(v, &end);
        if (!plain || errno || end == v || *end || !(x >= 0 && x < 1e6))
            return fail_at(w, "%s=%s: expected a non-negative number below 1e6", k->key, v);
        if (dst)
            *(double *)dst = x;
        return 0;
    }
    case FLAS_KV_CUSTOM: {
        char why[512] = "invalid value";
        if (record && k->parse(v, record, why, sizeof why))
            return fail_at(w, "%s=%s: %s", k->key, v, why);
        return 0;
    }
    }
    if (dst)
        snprintf(dst, k->size, "%s", v);
    return 0;
}

static const flas_kv_key *find_key(const flas_kv_kind *kind, const char *name)
{
    for (size_t i = 0; i < kind->n_keys; i++)
        if (!strcasecmp(kind->keys[i].key, name))
            return &kind->keys[i];
    return NULL;
}

static void key_list(const flas_kv_kind *kind, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < kind->n_keys && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", kind->keys[i].key);
}

int flas_kv_parse(const char *path, const char *text, const flas_kv_kind *kinds, size_t n_kinds, void *ctx,
                  char *err, size_t errlen)
{
    for (size_t i = 0; i < n_kinds; i++) /* the keys given in a record are bits of a 64-bit word */
        if (kinds[i].n_keys == 0 || kinds[i].n_keys > 64 || !kinds[i].open)
            return flas_fail(err, errlen, "%s: bad key table (record kind %zu)", path, i);
    if (n_kinds == 0)
        return flas_fail(err, errlen, "%s: no record kinds", path);
    char *copy = strdup(text);
    if (!copy)
        return flas_fail(err, errlen, "%s: out of memory", path);
    where w = {path, 0, err, errlen};
    const flas_kv_kind *kind = NULL;
    void *record = NULL;
    const char *opened = NULL; /* the value that opened the record, for messages */
    unsigned long long seen = 0;
    int rc = 0;
    /* strtok_r would skip empty lines and break the numbering: lines are split by hand. */
    for (char *line = copy, *next; line && rc == 0; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        w.line++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL;
        for (char *tok = strtok_r(line, " \t\r\v\f", &save); tok && rc == 0; tok = strtok_r(NULL, " \t\r\v\f", &save)) {
            char *eq = strchr(tok, '=');
            if (!eq || eq == tok) {
                rc = fail_at(&w, "'%s': expected Key=Value", tok);
                break;
            }
            *eq = '\0';
            const char *v = eq + 1;
            const flas_kv_kind *opens = NULL;
            for (size_t i = 0; i < n_kinds && !opens; i++)
                if (!strcasecmp(kinds[i].keys[0].key, tok))
                    opens = &kinds[i];
            const flas_kv_key *k = opens ? &opens->keys[0] : kind ? find_key(kind, tok) : NULL;
            if (!k && !kind) {
                rc = fail_at(&w, "%s= before any %s= record", tok, kinds[0].keys[0].key);
                break;
            }
            if (!k) {
                char known[512];
                key_list(kind, known, sizeof known);
                rc = fail_at(&w, "unknown key '%s' in a %s record (known: %s)", tok, kind->keys[0].key, known);
                break;
            }
            if (!*v) {
                rc = fail_at(&w, "%s has an empty value", k->key);
                break;
            }
            if (opens) {
                char why[512] = "cannot open a record";
                if (set_value(&w, k, NULL, v)) { /* validated before the record exists */
                    rc = -1;
                    break;
                }
                void *r = opens->open(ctx, v, w.line, why, sizeof why);
                if (!r) {
                    rc = fail_at(&w, "%s", why);
                    break;
                }
                kind = opens, record = r, opened = v, seen = 0;
            }
            unsigned long long bit = 1ull << (k - kind->keys);
            if (seen & bit) {
                rc = fail_at(&w, "%s given twice in the %s=%s record", k->key, kind->keys[0].key, opened);
                break;
            }
            seen |= bit;
            rc = set_value(&w, k, record, v);
        }
    }
    free(copy);
    return rc;
}

int flas_kv_read_file(const char *path, size_t max_bytes, char **text, char *err, size_t errlen)
{
    *text = NULL;
    /* O_NONBLOCK: a FIFO in the file's place must not hang a Slurm daemon in open(); it is then refused
     * as not a regular file (on a regular file the flag changes nothing). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return flas_fail(err, errlen, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max_bytes) {
        close(fd);
        return flas_fail(err, errlen, "%s: not a regular file of at most %zu bytes", path, max_bytes);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = buf ? flas_read_all(fd, buf, (size_t)st.st_size) : 0;
    close(fd);
    if (!buf || got != (size_t)st.st_size) {
        free(buf);
        return flas_fail(err, errlen, "%s: read failed", path);
    }
    buf[got] = '\0';
    if (memchr(buf, '\0', got)) {
        free(buf);
        return flas_fail(err, errlen, "%s: contains a NUL byte", path);
    }
    *text = buf;
    return 0;
}
