/* Names inside a federation's staging area (see include/flas/staging.h). */
#include "flas/staging.h"

#include <stdio.h>
#include <string.h>

static int fits(int n, size_t len) { return n > 0 && (size_t)n < len ? 0 : -1; }

int flas_stage_global_name(char *buf, size_t len, long round)
{
    if (round < 0 || round > FLAS_ROUND_MAX)
        return -1;
    return fits(snprintf(buf, len, "round-%06ld.h5", round), len);
}

int flas_stage_round_dir(char *buf, size_t len, long round)
{
    if (round < 0 || round > FLAS_ROUND_MAX)
        return -1;
    return fits(snprintf(buf, len, "round-%06ld", round), len);
}

int flas_stage_published_name(char *buf, size_t len, const char *site, unsigned long jobid, const char *suffix)
{
    return fits(snprintf(buf, len, "%s-job%lu%s", site, jobid, suffix), len);
}

int flas_stage_full_sibling(char *buf, size_t len, const char *output)
{
    const char *slash = strrchr(output, '/'), *base = slash ? slash + 1 : output;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base) /* "local" or ".hidden": no extension to keep */
        dot = base + strlen(base);
    return fits(snprintf(buf, len, "%.*s-full%s", (int)(dot - output), output, dot), len);
}

int flas_stage_residual_name(char *buf, size_t len, long round)
{
    if (round < 0 || round > FLAS_ROUND_MAX)
        return -1;
    return fits(snprintf(buf, len, "residual-round-%06ld.h5", round), len);
}

int flas_stage_inner_name(char *buf, size_t len, long round)
{
    if (round < 0 || round > FLAS_ROUND_MAX)
        return -1;
    return fits(snprintf(buf, len, "inner-round-%06ld.h5", round), len);
}

long flas_parse_round(const char *s)
{
    if (!s || !*s || strlen(s) > 6)
        return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

long flas_stage_parse_global_name(const char *name)
{
    /* exactly "round-" + 6 digits + ".h5" */
    if (strlen(name) != 15 || strncmp(name, "round-", 6) != 0 || strcmp(name + 12, ".h5") != 0)
        return -1;
    char digits[7];
    memcpy(digits, name + 6, 6);
    digits[6] = '\0';
    return flas_parse_round(digits);
}

long flas_stage_parse_residual_name(const char *name)
{
    /* exactly "residual-round-" + 6 digits + ".h5": nothing else in the directory is ever touched */
    if (strlen(name) != 24 || strncmp(name, "residual-round-", 15) != 0 || strcmp(name + 21, ".h5") != 0)
        return -1;
    char digits[7];
    memcpy(digits, name + 15, 6);
    digits[6] = '\0';
    return flas_parse_round(digits);
}

long flas_stage_parse_inner_name(const char *name)
{
    /* exactly "inner-round-" + 6 digits + ".h5" */
    if (strlen(name) != 21 || strncmp(name, "inner-round-", 12) != 0 || strcmp(name + 18, ".h5") != 0)
        return -1;
    char digits[7];
    memcpy(digits, name + 12, 6);
    digits[6] = '\0';
    return flas_parse_round(digits);
}
