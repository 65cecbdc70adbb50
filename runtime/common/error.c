/* The one error formatter (see flas/error.h). */
#include "flas/error.h"

#include <errno.h>
#include <stdio.h>

int flas_vfail(char *err, size_t errlen, const char *fmt, va_list ap)
{
    int saved = errno; /* callers may still report or test errno after formatting */
    if (err && errlen) {
        vsnprintf(err, errlen, fmt, ap);
        for (char *p = err; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
    errno = saved;
    return -1;
}

int flas_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    flas_vfail(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int flas_fail_code(int code, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    flas_vfail(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}
