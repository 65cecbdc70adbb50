/* The one error formatter of FLaS: every library function reports failure as one line in a caller's
 * buffer (err, errlen) and returns -1. One line always, because tools print it after "TOOL: error: " and
 * logs are read line by line; messages embedding text from HDF5, libssh or a file may carry newlines. */
#ifndef FLAS_ERROR_H
#define FLAS_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Formats into err (when err and errlen are non-zero), folds newlines and carriage returns into
 * spaces, returns -1. */
int flas_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int flas_vfail(char *err, size_t errlen, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
/* The same, returning code instead of -1 (for functions whose failures have several kinds). */
int flas_fail_code(int code, char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif
#endif
