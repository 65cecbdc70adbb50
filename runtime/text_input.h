/* Documents from one input file of flas-prepare: lines, blank-line-separated paragraphs or JSON
 * lines, gzip or plain, UTF-8 checked (or repaired), with bounded memory (one read buffer and the
 * longest document allowed). */
#ifndef FLAS_TEXT_INPUT_H
#define FLAS_TEXT_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "flas/prepare.h"

typedef struct text_input text_input;

/* Opens path (format must not be AUTO: resolve it with text_input_format_for first). NULL with
 * err set. */
text_input *text_input_open(const char *path, flas_input_format format, const char *json_field,
                            size_t max_document_bytes, int replace_invalid_utf8, char *err,
                            size_t errlen);
/* The next document: 1 with text and len set (valid until the next call), 0 at the end of the file,
 * -1 with "path:line: reason" in err. */
int text_input_next(text_input *in, const char **text, size_t *len, char *err, size_t errlen);
uint64_t text_input_replaced(const text_input *in);      /* bytes replaced by U+FFFD so far */
uint64_t text_input_skipped_empty(const text_input *in); /* blank lines or empty fields skipped */
void text_input_close(text_input *in);

flas_input_format text_input_format_for(const char *path, flas_input_format requested);

/* Length of the valid UTF-8 prefix of s[0..n) (strict: no overlongs, surrogates or > U+10FFFF). */
size_t flas_utf8_valid_prefix(const char *s, size_t n);

#endif
