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

/* exactly prefix + 6 digits + ".h5": nothing else in a directory is ever taken for a round's file */
static long parse_round_file(const char *name, const char *prefix)
{
    size_t p = strlen(prefix);
    if (strlen(name) != p + 9 || strncmp(name, prefix, p) != 0 || strcmp(name + p + 6, ".h5") != 0)
        return -1;
    char digits[7];
    memcpy(digits, name + p, 6);
    digits[6] = '\0';
    return flas_parse_round(digits);
}

long flas_stage_parse_global_name(const char *name) { return parse_round_file(name, "round-"); }

long flas_stage_parse_residual_name(const char *name) { return parse_round_file(name, "residual-round-"); }

long flas_stage_parse_inner_name(const char *name) { return parse_round_file(name, "inner-round-"); }
