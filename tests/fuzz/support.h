/* Helpers shared by the fuzz harnesses (tests/fuzz/fuzz_*.c): a private temporary directory for the
 * parsers that take a path, NUL-terminated copies, splitting one input into several parts, and a byte
 * reader for the harnesses that build their input (fuzz_checkpoint.c). Nothing here parses what the
 * harnesses test: that is always the library's own code. */
#ifndef FLAS_FUZZ_SUPPORT_H
#define FLAS_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

/* The one entry point every harness defines (libFuzzer's, and fuzz_driver.c's in the normal build). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The harness's own directory, $TMPDIR/flas-fuzz-XXXXXX ($TMPDIR unset: /tmp), made on first use and removed
 * with everything in it when the process exits normally. Nothing else is ever written. Aborts if it
 * cannot be made (a harness that cannot run must not pass). */
const char *fz_tmpdir(void);
/* Writes the n bytes of data to fz_tmpdir()/name (replacing it; name may hold one '/', below a directory
 * made with fz_mkdir) and puts its path in path. Aborts on failure. */
void fz_write_file(const char *name, const void *data, size_t n, char *path, size_t pathlen);
/* fz_tmpdir()/name as a fresh, empty directory (whatever was there is removed); its path into path. */
void fz_mkdir(const char *name, char *path, size_t pathlen);
/* Removes fz_tmpdir()/name, file or directory tree, if it exists. */
void fz_remove(const char *name);

/* A malloc'ed, NUL-terminated copy of n bytes (aborts when out of memory). */
char *fz_strndup(const uint8_t *data, size_t n);

/* Splits data at every occurrence of sep into at most max parts (the last one takes the rest): part i is
 * parts[i], lens[i] bytes. Returns the number of parts (at least 1). */
size_t fz_split(const uint8_t *data, size_t size, const char *sep, const uint8_t **parts, size_t *lens, size_t max);
/* The separator of multi-part inputs: a line of its own, easy to spot in a seed and for the fuzzer to
 * find (it compares against it). */
#define FZ_SEP "\n--flas-fuzz-part--\n"

/* Consumes bytes from the front of an input; once it runs out every read gives 0. */
typedef struct fz_bytes {
    const uint8_t *p;
    size_t n;
} fz_bytes;
uint8_t fz_u8(fz_bytes *b);
uint16_t fz_u16(fz_bytes *b);
uint32_t fz_u32(fz_bytes *b);
uint64_t fz_u64(fz_bytes *b);
/* A length byte, then that many bytes (at most max, and at most what is left) into out, NUL-terminated
 * (out holds max + 1). Returns the length. */
size_t fz_str(fz_bytes *b, char *out, size_t max);

/* Aborts with a message: a property the harness checks does not hold (the regression run and libFuzzer
 * both treat an abort as a failure). */
void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
