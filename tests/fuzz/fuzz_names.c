/* The small parsers every tool applies to names and numbers from outside: the name rule
 * (runtime/common/names.c: federations, sites, users, accounts), the staging area's names and rounds
 * (runtime/common/staging.c: flas_parse_round, flas_stage_parse_global_name,
 * flas_stage_parse_residual_name, flas_stage_full_sibling), the Key=Value value rules
 * (flas_kv_path_valid, flas_kv_text_valid), sha256 digests, update encodings, and the shell quoting
 * the coordinator applies to everything it puts into a remote command line (aggregator/ssh.c).
 * Each is run on the input as one string, and the round trips that the staging area relies on are
 * checked: a name that parses to round N is exactly the name written for N. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/kv.h"
#include "flas/names.h"
#include "flas/sha256.h"
#include "flas/stage.h"
#include "flas/staging.h"
#include "flas/update.h"
#include "support.h"

static int plain_name_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
}

/* The shell's reading of one single-quoted word as flas_shell_quote writes them ('...' and '\'' only). */
static int unquote(const char *q, char *out, size_t len)
{
    size_t o = 0;
    while (*q) {
        if (*q == '\'') {
            const char *end = strchr(q + 1, '\'');
            if (!end)
                return -1;
            for (const char *c = q + 1; c < end; c++) {
                if (o + 1 >= len)
                    return -1;
                out[o++] = *c;
            }
            q = end + 1;
        } else if (q[0] == '\\' && q[1]) {
            if (o + 1 >= len)
                return -1;
            out[o++] = q[1];
            q += 2;
        } else {
            return -1; /* anything unquoted is a word the shell would interpret */
        }
    }
    out[o] = '\0';
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fz_strndup(data, size); /* up to the first NUL, as any C caller sees it */
    size_t n = strlen(s);
    char buf[8192], back[8192];

    int valid = flas_name_valid(s);
    int want = n >= 1 && n < FLAS_NAME_MAX && s[0] != '-';
    for (size_t i = 0; want && i < n; i++)
        want = plain_name_char(s[i]);
    if (valid != want)
        fz_fail("flas_name_valid('%s') = %d", s, valid);

    long r = flas_parse_round(s);
    if (r >= 0) {
        snprintf(buf, sizeof buf, "%06ld", r);
        if (r > FLAS_ROUND_MAX || n > 6 || strtol(s, NULL, 10) != r)
            fz_fail("flas_parse_round('%s') = %ld", s, r);
    } else if (r != -1) {
        fz_fail("flas_parse_round('%s') = %ld", s, r);
    }
    r = flas_stage_parse_global_name(s);
    if (r >= 0 && (flas_stage_global_name(buf, sizeof buf, r) || strcmp(buf, s)))
        fz_fail("global name '%s' parses to round %ld, written '%s'", s, r, buf);
    r = flas_stage_parse_residual_name(s);
    if (r >= 0 && (flas_stage_residual_name(buf, sizeof buf, r) || strcmp(buf, s)))
        fz_fail("residual name '%s' parses to round %ld, written '%s'", s, r, buf);

    /* the other way: a round taken from the input's first bytes */
    fz_bytes b = {data, size};
    long round = (long)(fz_u32(&b) % (FLAS_ROUND_MAX + 3)) - 1;
    if (flas_stage_global_name(buf, sizeof buf, round) == 0 && flas_stage_parse_global_name(buf) != round)
        fz_fail("round %ld written as '%s' does not parse back", round, buf);
    if (flas_stage_residual_name(buf, sizeof buf, round) == 0 && flas_stage_parse_residual_name(buf) != round)
        fz_fail("residual of round %ld written as '%s' does not parse back", round, buf);
    if (flas_stage_round_dir(buf, sizeof buf, round) == 0 && (round < 0 || strlen(buf) != 12))
        fz_fail("round directory '%s' of round %ld", buf, round);
    if (valid && flas_stage_published_name(buf, sizeof buf, s, (unsigned long)round, FLAS_STAGE_MANIFEST_SUFFIX) == 0 &&
        strncmp(buf, s, n))
        fz_fail("published name '%s' of site '%s'", buf, s);

    /* the full checkpoint beside an output: same directory, "-full" before the extension */
    if (flas_stage_full_sibling(buf, sizeof buf, s) == 0) {
        const char *slash = strrchr(s, '/');
        size_t dir = slash ? (size_t)(slash - s) + 1 : 0;
        if (strncmp(buf, s, dir) || !strstr(buf + dir, "-full") || strlen(buf) != n + 5)
            fz_fail("full sibling of '%s' is '%s'", s, buf);
    } else if (n + 5 < sizeof buf) {
        fz_fail("full sibling of '%s' does not fit", s);
    }

    if (flas_kv_path_valid(s)) {
        if (s[0] != '/' || strstr(s, "//") || strstr(s, "/./") || strstr(s, "/../") || s[n - 1] == '/' ||
            (n >= 2 && !strcmp(s + n - 2, "/.")) || (n >= 3 && !strcmp(s + n - 3, "/..")))
            fz_fail("path '%s' accepted", s);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
                fz_fail("path with byte 0x%02x accepted", (unsigned char)s[i]);
    }
    if (flas_kv_text_valid(s))
        for (size_t i = 0; i < n; i++)
            if (!plain_name_char(s[i]) && !strchr("._:@%[]", s[i]))
                fz_fail("text value with '%c' accepted", s[i]);

    if (flas_sha256_is_hex(s) && (n != FLAS_SHA256_HEX_LEN || strspn(s, "0123456789abcdef") != n))
        fz_fail("sha256 '%s' accepted", s);
    flas_update_enc e;
    if (flas_update_enc_parse(s, &e) == 0 && (e < 0 || e >= FLAS_UPDATE_N_ENC || strcmp(flas_update_enc_name(e), s)))
        fz_fail("update encoding '%s' parsed as %d", s, (int)e);

    /* whatever the text, its quoted form is one word that the shell reads back as the text */
    if (flas_shell_quote(s, buf, sizeof buf) == 0) {
        if (unquote(buf, back, sizeof back) || strcmp(back, s))
            fz_fail("'%s' quoted as %s", s, buf);
    } else if (4 * n + 3 < sizeof buf) {
        fz_fail("'%s' could not be quoted into %zu bytes", s, sizeof buf);
    }
    char small[16];
    if (flas_shell_quote(s, small, sizeof small) == 0 && (unquote(small, back, sizeof back) || strcmp(back, s)))
        fz_fail("'%s' quoted as %s into a small buffer", s, small);
    free(s);
    return 0;
}
