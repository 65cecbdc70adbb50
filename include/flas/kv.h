/* The one Key=Value parser of FLaS: flas.conf(5) (the plugin, as root, in every Slurm process) and
 * coordinator.conf(5) (the coordinator) are both read through it, so a value means the same in both.
 *
 * The format, slurm.conf-style: lines of whitespace-separated Key=Value tokens; '#' starts a comment;
 * keys are case-insensitive; values may not be empty or hold whitespace. A file is a sequence of
 * records, each opened by its kind's first key (e.g. Federation=, Site=). Strict: an unknown key, a
 * key given twice in one record or a value its type refuses is an error "FILE:LINE: reason".
 *
 * One rule per value type, the strictest either parser had:
 *   FLAS_KV_NAME    flas_name_valid (flas/names.h)
 *   FLAS_KV_PATH    absolute and normalised: no "//", "." or ".." component, no trailing '/',
 *                   printable ASCII only (a path that means one thing, and no way to smuggle a space
 *                   or a control character into a command line or a log)
 *   FLAS_KV_TEXT    letters, digits and ._-:@%[] (host names, addresses, templates, signal specs)
 *   FLAS_KV_INT     decimal digits with an optional '-', in [lo, hi] (hi == 0: no upper bound but the
 *                   destination's), stored as int or int64_t by size
 *   FLAS_KV_DOUBLE  a number in plain decimal notation (no inf, nan or hexadecimal) in [0, 1e6)
 *   FLAS_KV_CUSTOM  the key's parse function decides (lists, enumerations) */
#ifndef FLAS_KV_H
#define FLAS_KV_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { FLAS_KV_NAME, FLAS_KV_PATH, FLAS_KV_TEXT, FLAS_KV_INT, FLAS_KV_DOUBLE, FLAS_KV_CUSTOM } flas_kv_type;

typedef struct flas_kv_key {
    const char *key;
    flas_kv_type type;
    size_t offset, size;  /* the destination inside the record, and its size */
    long long lo, hi;     /* FLAS_KV_INT bounds */
    /* FLAS_KV_CUSTOM: stores value into record; 0, or -1 with a reason (the parser adds FILE:LINE and
     * "Key=value: "). */
    int (*parse)(const char *value, void *record, char *why, size_t whylen);
} flas_kv_key;

/* A kind of record. keys[0] opens one: open() is called with its (already validated) value and the line,
 * and returns the record its keys are stored into, or NULL with a reason (a record defined twice, too
 * many records, a record before the one that must come first). */
typedef struct flas_kv_kind {
    const flas_kv_key *keys;
    size_t n_keys;
    void *(*open)(void *ctx, const char *value, int line, char *why, size_t whylen);
} flas_kv_kind;

/* Parses text as the file called path. Each kind has 1 to 64 keys and an open(). 0, or -1 with
 * "path:line: reason" in err. */
int flas_kv_parse(const char *path, const char *text, const flas_kv_kind *kinds, size_t n_kinds, void *ctx,
                  char *err, size_t errlen);

/* Reads a configuration file: a regular file of at most max_bytes, without NUL bytes (anything else, a
 * FIFO included, is refused without blocking). *text is malloc'ed and NUL-terminated. 0, or -1 with
 * "path: reason" in err. */
int flas_kv_read_file(const char *path, size_t max_bytes, char **text, char *err, size_t errlen);

/* The value rules, for callers that check a value outside a file (1 valid, 0 not). */
int flas_kv_path_valid(const char *p);
int flas_kv_text_valid(const char *v);

#ifdef __cplusplus
}
#endif
#endif
