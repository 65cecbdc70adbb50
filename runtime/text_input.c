/* Documents from one input file of flas-prepare (see text_input.h). */
#include "flas/error.h"
#include "text_input.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define READ_CHUNK (1u << 20)

struct text_input {
    char *path;
    gzFile gz;
    flas_input_format format;
    char *field;
    size_t max_doc;
    int replace;
    char *chunk;            /* READ_CHUNK bytes read ahead */
    size_t chunk_len, chunk_pos;
    int eof;
    uint64_t line_no;       /* of the line last read */
    char *line;             /* the current line, without its terminator */
    size_t line_len, line_cap;
    char *doc;              /* the document handed out (paragraphs, JSON text, repaired text) */
    size_t doc_len, doc_cap;
    uint64_t replaced, skipped_empty;
};

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

flas_input_format text_input_format_for(const char *path, flas_input_format requested)
{
    if (requested != FLAS_INPUT_AUTO)
        return requested;
    static const char *const json[] = {".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson"};
    for (size_t i = 0; i < sizeof json / sizeof json[0]; i++)
        if (ends_with(path, json[i]))
            return FLAS_INPUT_JSONL;
    return FLAS_INPUT_LINES;
}

size_t flas_utf8_valid_prefix(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the first continuation byte */
        if (c >= 0xC2 && c <= 0xDF)
            k = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            if (c == 0xF4)
                hi = 0x8F; /* beyond U+10FFFF */
        } else
            return i;
        if (i + k >= n)
            return i; /* truncated sequence */
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return i;
        i += k + 1;
    }
    return n;
}

text_input *text_input_open(const char *path, flas_input_format format, const char *json_field,
                            size_t max_document_bytes, int replace_invalid_utf8, char *err,
                            size_t errlen)
{
    text_input *in = calloc(1, sizeof *in);
    if (!in || !(in->path = strdup(path)) || !(in->field = strdup(json_field ? json_field : "text")) ||
        !(in->chunk = malloc(READ_CHUNK))) {
        flas_fail(err, errlen, "%s: out of memory", path);
        text_input_close(in);
        return NULL;
    }
    in->format = format;
    in->max_doc = max_document_bytes;
    in->replace = replace_invalid_utf8;
    errno = 0;
    in->gz = gzopen(path, "rb");
    if (!in->gz) {
        flas_fail(err, errlen, "%s: %s", path, errno ? strerror(errno) : "cannot open");
        text_input_close(in);
        return NULL;
    }
    gzbuffer(in->gz, 1u << 17);
    return in;
}

void text_input_close(text_input *in)
{
    if (!in)
        return;
    if (in->gz)
        gzclose(in->gz);
    free(in->path);
    free(in->field);
    free(in->chunk);
    free(in->line);
    free(in->doc);
    free(in);
}

uint64_t text_input_replaced(const text_input *in) { return in->replaced; }
uint64_t text_input_skipped_empty(const text_input *in) { return in->skipped_empty; }

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    char *p = realloc(*buf, c);
    if (!p)
        return -1;
    *buf = p;
    *cap = c;
    return 0;
}

/* Reads the next line into in->line (terminator removed). 1, 0 at end of file, -1 with err. */
static int read_line(text_input *in, char *err, size_t errlen)
{
    in->line_len = 0;
    int got = 0;
    for (;;) {
        if (in->chunk_pos == in->chunk_len) {
            if (in->eof)
                break;
            int k = gzread(in->gz, in->chunk, READ_CHUNK);
            if (k < 0) {
                int code;
                const char *msg = gzerror(in->gz, &code);
                return flas_fail(err, errlen, "%s:%llu: read error: %s", in->path,
                            (unsigned long long)in->line_no + 1, code == Z_ERRNO ? strerror(errno) : msg);
            }
            if (k == 0) {
                in->eof = 1;
                break;
            }
            in->chunk_len = (size_t)k;
            in->chunk_pos = 0;
        }
        got = 1;
        const char *start = in->chunk + in->chunk_pos;
        const char *nl = memchr(start, '\n', in->chunk_len - in->chunk_pos);
        size_t take = nl ? (size_t)(nl - start) : in->chunk_len - in->chunk_pos;
        if (in->line_len + take > in->max_doc)
            return flas_fail(err, errlen, "%s:%llu: line longer than %zu bytes (raise --max-document-bytes)",
                        in->path, (unsigned long long)in->line_no + 1, in->max_doc);
        if (grow(&in->line, &in->line_cap, in->line_len + take + 1) != 0)
            return flas_fail(err, errlen, "%s:%llu: out of memory", in->path, (unsigned long long)in->line_no + 1);
        memcpy(in->line + in->line_len, start, take);
        in->line_len += take;
        in->chunk_pos += take + (nl ? 1 : 0);
        if (nl)
            break;
    }
    if (!got)
        return 0;
    in->line_no++;
    if (in->line_len > 0 && in->line[in->line_len - 1] == '\r')
        in->line_len--;
    in->line[in->line_len] = '\0';
    return 1;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\f' && s[i] != '\v')
            return 0;
    return 1;
}

/* Checks (or repairs, into in->doc) the UTF-8 of text; *out points at the text to use. */
static int check_utf8(text_input *in, const char *text, size_t len, const char **out, size_t *out_len,
                      char *err, size_t errlen)
{
    size_t ok = flas_utf8_valid_prefix(text, len);
    if (ok == len) {
        *out = text;
        *out_len = len;
        return 0;
    }
    if (!in->replace)
        return flas_fail(err, errlen, "%s:%llu: invalid UTF-8 (byte 0x%02x at offset %zu); fix the input or "
                    "use --replace-invalid-utf8", in->path, (unsigned long long)in->line_no,
                    (unsigned char)text[ok], ok);
    /* Worst case every byte becomes 3 bytes of U+FFFD. */
    char *fixed = malloc(3 * len + 1);
    if (!fixed)
        return flas_fail(err, errlen, "%s:%llu: out of memory", in->path, (unsigned long long)in->line_no);
    size_t i = 0, j = 0;
    while (i < len) {
        size_t run = flas_utf8_valid_prefix(text + i, len - i);
        memcpy(fixed + j, text + i, run);
        i += run;
        j += run;
        if (i < len) {
            memcpy(fixed + j, "\xEF\xBF\xBD", 3);
            j += 3;
            i++;
            in->replaced++;
        }
    }
    if (grow(&in->doc, &in->doc_cap, j + 1) != 0) {
        free(fixed);
        return flas_fail(err, errlen, "%s:%llu: out of memory", in->path, (unsigned long long)in->line_no);
    }
    memcpy(in->doc, fixed, j);
    in->doc[j] = '\0';
    free(fixed);
    *out = in->doc;
    *out_len = j;
    return 0;
}

static int next_line_doc(text_input *in, const char **text, size_t *len, char *err, size_t errlen)
{
    int rc;
    while ((rc = read_line(in, err, errlen)) == 1) {
        if (blank(in->line, in->line_len)) {
            in->skipped_empty++;
            continue;
        }
        return check_utf8(in, in->line, in->line_len, text, len, err, errlen) == 0 ? 1 : -1;
    }
    return rc;
}

static int next_paragraph(text_input *in, const char **text, size_t *len, char *err, size_t errlen)
{
    int rc;
    size_t n = 0;
    while ((rc = read_line(in, err, errlen)) == 1) {
        if (blank(in->line, in->line_len)) {
            if (n > 0)
                break;
            continue;
        }
        if (n + in->line_len + 1 > in->max_doc)
            return flas_fail(err, errlen, "%s:%llu: paragraph longer than %zu bytes (raise --max-document-bytes)",
                        in->path, (unsigned long long)in->line_no, in->max_doc);
        if (grow(&in->doc, &in->doc_cap, n + in->line_len + 2) != 0)
            return flas_fail(err, errlen, "%s:%llu: out of memory", in->path, (unsigned long long)in->line_no);
        if (n > 0)
            in->doc[n++] = '\n';
        memcpy(in->doc + n, in->line, in->line_len);
        n += in->line_len;
    }
    if (rc < 0)
        return -1;
    if (n == 0)
        return 0;
    in->doc[n] = '\0';
    /* The check may repair into in->doc itself: work from a copy of the paragraph then. */
    if (flas_utf8_valid_prefix(in->doc, n) == n) {
        *text = in->doc;
        *len = n;
        return 1;
    }
    char *copy = malloc(n);
    if (!copy)
        return flas_fail(err, errlen, "%s:%llu: out of memory", in->path, (unsigned long long)in->line_no);
    memcpy(copy, in->doc, n);
    rc = check_utf8(in, copy, n, text, len, err, errlen);
    free(copy);
    return rc == 0 ? 1 : -1;
}

static int next_json(text_input *in, const char **text, size_t *len, char *err, size_t errlen)
{
    int rc;
    while ((rc = read_line(in, err, errlen)) == 1) {
        if (blank(in->line, in->line_len))
            continue;
        const char *raw;
        size_t raw_len;
        if (check_utf8(in, in->line, in->line_len, &raw, &raw_len, err, errlen) != 0)
            return -1;
        json_error_t je;
        json_t *obj = json_loadb(raw, raw_len, 0, &je);
        if (!obj)
            return flas_fail(err, errlen, "%s:%llu: malformed JSON at column %d: %s", in->path,
                        (unsigned long long)in->line_no, je.column, je.text);
        json_t *v = json_is_object(obj) ? json_object_get(obj, in->field) : NULL;
        if (!json_is_string(v)) {
            json_decref(obj);
            return flas_fail(err, errlen, "%s:%llu: expected a JSON object with a string field \"%s\"",
                        in->path, (unsigned long long)in->line_no, in->field);
        }
        size_t n = json_string_length(v);
        if (n == 0) {
            json_decref(obj);
            in->skipped_empty++;
            continue;
        }
        if (grow(&in->doc, &in->doc_cap, n + 1) != 0) {
            json_decref(obj);
            return flas_fail(err, errlen, "%s:%llu: out of memory", in->path, (unsigned long long)in->line_no);
        }
        memcpy(in->doc, json_string_value(v), n);
        in->doc[n] = '\0';
        json_decref(obj);
        *text = in->doc;
        *len = n;
        return 1;
    }
    return rc;
}

int text_input_next(text_input *in, const char **text, size_t *len, char *err, size_t errlen)
{
    switch (in->format) {
    case FLAS_INPUT_PARAGRAPHS:
        return next_paragraph(in, text, len, err, errlen);
    case FLAS_INPUT_JSONL:
        return next_json(in, text, len, err, errlen);
    default:
        return next_line_doc(in, text, len, err, errlen);
    }
}
