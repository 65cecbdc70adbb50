/* The normal build's stand-in for libFuzzer: runs LLVMFuzzerTestOneInput once over every file of the
 * directories and files given (directories in name order, not recursively), so the committed corpus and
 * the regression inputs are checked by ctest on every build (and under ASan + UBSan with
 * -DFLAS_SANITIZE=ON). A harness that finds a fault aborts, and so does this run: ctest sees a failure.
 * Missing paths are skipped (tests/fuzz/regressions/<name> exists only once a finding was made); no input
 * at all is an error, so a wrong path cannot pass silently. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "support.h"

/* libFuzzer calls it when a harness defines it; so does this driver. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        fprintf(stderr, "fuzz_driver: %s: %s\n", path, strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    /* exactly the input's size, so that ASan sees a read past its end as libFuzzer would */
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    size_t got = buf ? fread(buf, 1, n, f) : 0;
    fclose(f);
    if (!buf || got != n) {
        free(buf);
        fprintf(stderr, "fuzz_driver: cannot read %s\n", path);
        return -1;
    }
    fprintf(stderr, "fuzz_driver: %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    int ran = 0, errors = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "fuzz_driver: %s: not there, skipped\n", argv[i]);
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            errors += run_file(argv[i]) != 0;
            ran++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) {
            fprintf(stderr, "fuzz_driver: %s: %s\n", argv[i], strerror(errno));
            errors++;
            continue;
        }
        char **names = NULL;
        size_t n = 0, cap = 0;
        for (struct dirent *e; (e = readdir(d));) {
            if (e->d_name[0] == '.')
                continue;
            if (n == cap) {
                char **grown = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
                if (!grown)
                    break;
                names = grown;
            }
            if (asprintf(&names[n], "%s/%s", argv[i], e->d_name) >= 0)
                n++;
        }
        closedir(d);
        qsort(names, n, sizeof *names, by_name);
        for (size_t k = 0; k < n; k++) {
            if (stat(names[k], &st) == 0 && S_ISREG(st.st_mode)) {
                errors += run_file(names[k]) != 0;
                ran++;
            }
            free(names[k]);
        }
        free(names);
    }
    fprintf(stderr, "fuzz_driver: %d input(s) run, %d unreadable\n", ran, errors);
    if (ran == 0) {
        fprintf(stderr, "fuzz_driver: no input found: check the corpus paths\n");
        return 2;
    }
    return errors ? 1 : 0;
}
