/* The shared Key=Value parser (flas/kv.h): every value type's accept/refuse edges, the record structure
 * (opening keys, open() refusals, keys before any record, twice, unknown, case), line numbers across
 * comments, blank lines and CRLF, flas_kv_read_file's refusals, and the cases where flas.conf and
 * coordinator.conf used to disagree, parsed through both. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/conf.h"
#include "flas/coordinator.h"
#include "flas/kv.h"

/* ---------------------------------------------------------------- a test table of every type */

typedef struct {
    char name[FLAS_NAME_MAX]; /* Thing= (opens) */
    char tiny[8];             /* Tiny=: a NAME in a field shorter than the name rule */
    char path[32];            /* Path= */
    char text[16];            /* Text= */
    int small;                /* Small= 1..10 */
    int unbounded;            /* Count= >= 0, int */
    int64_t bytes;            /* Bytes= >= 1, int64 */
    double ratio;             /* Ratio= */
    int flag;                 /* Flag=yes|no */
    int line;
} thing;

typedef struct {
    thing t[4];
    int n;
    int max; /* open() refuses more */
} things;

static int parse_flag(const char *v, void *rec, char *why, size_t whylen)
{
    thing *t = rec;
    if (!strcmp(v, "yes"))
        t->flag = 1;
    else if (!strcmp(v, "no"))
        t->flag = 0;
    else {
        snprintf(why, whylen, "expected yes or no");
        return -1;
    }
    return 0;
}

#define K(k, ty, f, l, h) {.key = k, .type = ty, .offset = offsetof(thing, f), .size = sizeof(((thing *)0)->f), \
                           .lo = l, .hi = h}
static const flas_kv_key thing_keys[] = {
    K("Thing", FLAS_KV_NAME, name, 0, 0),
    K("Tiny", FLAS_KV_NAME, tiny, 0, 0),
    K("Path", FLAS_KV_PATH, path, 0, 0),
    K("Text", FLAS_KV_TEXT, text, 0, 0),
    K("Small", FLAS_KV_INT, small, 1, 10),
    K("Count", FLAS_KV_INT, unbounded, 0, 0),
    K("Bytes", FLAS_KV_INT, bytes, 1, 0),
    K("Ratio", FLAS_KV_DOUBLE, ratio, 0, 0),
    {.key = "Flag", .type = FLAS_KV_CUSTOM, .parse = parse_flag},
};

static void *open_thing(void *ctx, const char *value, int line, char *why, size_t whylen)
{
    things *s = ctx;
    if (s->n == s->max) {
        snprintf(why, whylen, "no more than %d things (not '%s')", s->max, value);
        return NULL;
    }
    thing *t = &s->t[s->n++];
    memset(t, 0, sizeof *t);
    t->line = line;
    return t;
}

static const flas_kv_kind thing_kind = {thing_keys, sizeof thing_keys / sizeof thing_keys[0], open_thing};

static things got;
static char err[1024];

/* Parses text; returns flas_kv_parse's result, with err and got filled. */
static int parse(const char *text)
{
    memset(&got, 0, sizeof got);
    got.max = 4;
    snprintf(err, sizeof err, "(untouched)");
    return flas_kv_parse("t.conf", text, &thing_kind, 1, &got, err, sizeof err);
}

static void accepted(const char *text)
{
    ck_assert_msg(parse(text) == 0, "refused '%s': %s", text, err);
}

static void refused(const char *text, const char *want)
{
    ck_assert_msg(parse(text) == -1, "accepted '%s'", text);
    ck_assert_msg(strcmp(err, want) == 0, "for '%s'\n got '%s'\nwant '%s'", text, err, want);
}

/* One key of a record Thing=x, on line 1. */
static void value_ok(const char *kv)
{
    char text[512];
    snprintf(text, sizeof text, "Thing=x %s\n", kv);
    accepted(text);
}

static void value_bad(const char *kv, const char *reason)
{
    char text[512], want[1024];
    snprintf(text, sizeof text, "Thing=x %s\n", kv);
    snprintf(want, sizeof want, "t.conf:1: %s: %s", kv, reason);
    refused(text, want);
}

#define NAME_RULE "a name is 1-63 characters of [A-Za-z0-9_-], not starting with '-'"
#define PATH_RULE "must be an absolute path without '.', '..', '//' or a trailing '/'"
#define TEXT_RULE "unexpected characters (allowed: letters, digits, ._-:@%[])"
#define DOUBLE_RULE "expected a non-negative number below 1e6"

/* ---------------------------------------------------------------- value types */

START_TEST(name_values)
{
    char n63[80], text[128];
    memset(n63, 'n', 63);
    n63[63] = '\0';
    value_ok("Tiny=a");
    value_ok("Tiny=A-z_09");
    value_ok("Tiny=0");
    value_ok("Tiny=abcdefg"); /* 7: fills the 8-byte field */
    value_bad("Tiny=abcdefgh", "a name is 1-7 characters of [A-Za-z0-9_-], not starting with '-'");
    value_bad("Tiny=-x", "a name is 1-7 characters of [A-Za-z0-9_-], not starting with '-'");
    snprintf(text, sizeof text, "Thing=%s", n63);
    accepted(text);
    ck_assert_str_eq(got.t[0].name, n63);
    snprintf(text, sizeof text, "Thing=%sn", n63); /* 64 */
    ck_assert_int_eq(parse(text), -1);
    ck_assert_msg(strstr(err, ": " NAME_RULE), "%s", err);
    refused("Thing=a.b", "t.conf:1: Thing=a.b: " NAME_RULE);
    refused("Thing=a/b", "t.conf:1: Thing=a/b: " NAME_RULE);
    refused("Thing=\xc3\xa9", "t.conf:1: Thing=\xc3\xa9: " NAME_RULE);
    refused("Thing=--wrap", "t.conf:1: Thing=--wrap: " NAME_RULE);
    accepted("Thing=x Tiny=ok\n");
    ck_assert_str_eq(got.t[0].name, "x");
    ck_assert_str_eq(got.t[0].tiny, "ok");
}
END_TEST

START_TEST(path_values)
{
    const char *good[] = {"/a", "/srv/flas", "/srv/.flas", "/srv/..flas", "/srv/flas.", "/a/b-c_d/e.h5", "/x:y@z%+"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ck_assert_msg(flas_kv_path_valid(good[i]), "'%s' refused", good[i]);
        char kv[64];
        snprintf(kv, sizeof kv, "Path=%s", good[i]);
        value_ok(kv);
        ck_assert_str_eq(got.t[0].path, good[i]);
    }
    const char *bad[] = {"a",          "srv/flas",    "/",          "//",        "//srv",       "/srv//flas",
                         "/srv/flas/", "/srv//flas/", "/srv/./flas", "/srv/.",    "/./srv",      "/srv/../etc",
                         "/srv/..",    "/..",         "/a\x7f",      "/a\x01b",   "/\xc3\xa9",   "./srv",
                         "/srv/flas//"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!flas_kv_path_valid(bad[i]), "'%s' accepted", bad[i]);
        char kv[64];
        snprintf(kv, sizeof kv, "Path=%s", bad[i]);
        value_bad(kv, PATH_RULE);
    }
    ck_assert(!flas_kv_path_valid(""));
    ck_assert(!flas_kv_path_valid("/a b")); /* never in a file (whitespace splits tokens), but the rule says no */
    /* the field holds 31 characters */
    value_ok("Path=/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    value_bad("Path=/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "longer than 31 characters");
}
END_TEST

START_TEST(text_values)
{
    const char *good[] = {"login.example", "10.0.0.12", "fl@gw:22", "r-%d", "[::1]", "USR1@60", "a_b"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ck_assert_msg(flas_kv_text_valid(good[i]), "'%s' refused", good[i]);
        char kv[64];
        snprintf(kv, sizeof kv, "Text=%s", good[i]);
        value_ok(kv);
        ck_assert_str_eq(got.t[0].text, good[i]);
    }
    const char *bad[] = {"h;rm", "$(id)", "a/b", "a,b", "a'b", "a\"b", "a`b", "a|b", "a*", "\xc3\xa9", "a\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!flas_kv_text_valid(bad[i]), "'%s' accepted", bad[i]);
        char kv[64];
        snprintf(kv, sizeof kv, "Text=%s", bad[i]);
        value_bad(kv, TEXT_RULE);
    }
    ck_assert(!flas_kv_text_valid(""));
    value_ok("Text=abcdefghijklmno"); /* 15: fills the field */
    value_bad("Text=abcdefghijklmnop", "longer than 15 characters");
}
END_TEST

START_TEST(int_values)
{
    value_ok("Small=1");
    ck_assert_int_eq(got.t[0].small, 1);
    value_ok("Small=10");
    ck_assert_int_eq(got.t[0].small, 10);
    value_ok("Small=007");
    ck_assert_int_eq(got.t[0].small, 7);
    const char *bad[] = {"0", "11", "-1", "+5", "5a", "1.0", "0x5", "1e1", "-", "a", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char kv[64];
        snprintf(kv, sizeof kv, "Small=%s", bad[i]);
        value_bad(kv, "expected a whole number from 1 to 10");
    }
    /* no bound of its own: an int still ends at INT_MAX, never wraps */
    value_ok("Count=0");
    value_ok("Count=2147483647");
    ck_assert_int_eq(got.t[0].unbounded, 2147483647);
    value_bad("Count=2147483648", "expected a whole number from 0 to 2147483647");
    value_bad("Count=-1", "expected a whole number from 0 to 2147483647");
    /* int64 without an upper bound */
    value_ok("Bytes=9223372036854775807");
    ck_assert(got.t[0].bytes == INT64_MAX);
    value_ok("Bytes=4398046511104");
    ck_assert(got.t[0].bytes == (int64_t)1 << 42);
    value_bad("Bytes=9223372036854775808", "expected a whole number of at least 1");
    value_bad("Bytes=0", "expected a whole number of at least 1");
}
END_TEST

START_TEST(double_values)
{
    value_ok("Ratio=0");
    ck_assert(got.t[0].ratio == 0);
    value_ok("Ratio=0.5");
    ck_assert(got.t[0].ratio == 0.5);
    value_ok("Ratio=.25");
    ck_assert(got.t[0].ratio == 0.25);
    value_ok("Ratio=1e3");
    ck_assert(got.t[0].ratio == 1000);
    value_ok("Ratio=999999.5");
    ck_assert(got.t[0].ratio == 999999.5);
    const char *bad[] = {"-1", "-0.5", "1e6", "1000000", "inf", "nan", "NaN", "0x10", "1,5", "1e", "abc", ".", "1..2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char kv[64];
        snprintf(kv, sizeof kv, "Ratio=%s", bad[i]);
        value_bad(kv, DOUBLE_RULE);
    }
}
END_TEST

START_TEST(custom_values)
{
    value_ok("Flag=yes");
    ck_assert_int_eq(got.t[0].flag, 1);
    value_ok("Flag=no");
    ck_assert_int_eq(got.t[0].flag, 0);
    value_bad("Flag=maybe", "expected yes or no");
    value_bad("Flag=YES", "expected yes or no"); /* values keep their case */
}
END_TEST

/* ---------------------------------------------------------------- records and lines */

START_TEST(records_open_and_reset)
{
    accepted("Thing=a Path=/x\nThing=b Path=/y Small=3\n");
    ck_assert_int_eq(got.n, 2);
    ck_assert_str_eq(got.t[0].name, "a");
    ck_assert_str_eq(got.t[0].path, "/x");
    ck_assert_int_eq(got.t[0].small, 0);
    ck_assert_str_eq(got.t[1].name, "b");
    ck_assert_str_eq(got.t[1].path, "/y"); /* the same key again in a new record is fine */
    ck_assert_int_eq(got.t[1].small, 3);
    ck_assert_int_eq(got.t[1].line, 2);
    /* open() refuses: its reason, at the line of the opening key */
    memset(&got, 0, sizeof got);
    got.max = 1;
    ck_assert_int_eq(flas_kv_parse("t.conf", "Thing=a\n\nThing=b\n", &thing_kind, 1, &got, err, sizeof err), -1);
    ck_assert_str_eq(err, "t.conf:3: no more than 1 things (not 'b')");
    /* the opening value is checked before open() sees it */
    refused("Thing=-a\n", "t.conf:1: Thing=-a: " NAME_RULE);
    ck_assert_int_eq(got.n, 0);
}
END_TEST

START_TEST(empty_value)
{
    refused("Thing=a Path=\n", "t.conf:1: Path has an empty value");
    refused("Thing=\n", "t.conf:1: Thing has an empty value");
    refused("Thing=a Flag=\n", "t.conf:1: Flag has an empty value"); /* custom parsers never see "" */
}
END_TEST

START_TEST(key_before_any_record)
{
    refused("# header\n\nPath=/x Thing=a\n", "t.conf:3: Path= before any Thing= record");
    refused("Colour=red\n", "t.conf:1: Colour= before any Thing= record");
    ck_assert_int_eq(got.n, 0);
}
END_TEST

START_TEST(key_given_twice)
{
    refused("Thing=a Path=/x Path=/y\n", "t.conf:1: Path given twice in the Thing=a record");
    refused("Thing=a Path=/x\n# c\n  path=/y\n", "t.conf:3: Path given twice in the Thing=a record");
    refused("Thing=a\nThing=b Small=1 SMALL=2\n", "t.conf:2: Small given twice in the Thing=b record");
    refused("Thing=a Flag=yes Flag=no\n", "t.conf:1: Flag given twice in the Thing=a record");
}
END_TEST

START_TEST(unknown_key_lists_the_known)
{
    refused("Thing=a\nColour=red\n", "t.conf:2: unknown key 'Colour' in a Thing record (known: Thing, Tiny, Path, "
                                     "Text, Small, Count, Bytes, Ratio, Flag)");
    refused("Thing=a Paths=/x\n", "t.conf:1: unknown key 'Paths' in a Thing record (known: Thing, Tiny, Path, Text, "
                                  "Small, Count, Bytes, Ratio, Flag)");
}
END_TEST

START_TEST(keys_are_case_insensitive)
{
    accepted("tHiNg=A PATH=/x small=2 fLaG=yes\nTHING=b\n");
    ck_assert_int_eq(got.n, 2);
    ck_assert_str_eq(got.t[0].name, "A"); /* values keep their case */
    ck_assert_str_eq(got.t[0].path, "/x");
    ck_assert_int_eq(got.t[0].small, 2);
    ck_assert_int_eq(got.t[0].flag, 1);
    ck_assert_str_eq(got.t[1].name, "b");
}
END_TEST

START_TEST(comments_and_blank_lines_keep_line_numbers)
{
    const char *text = "# one\n"
                       "\n"
                       "   \t \n"
                       "Thing=a # a comment Path=/not-a-key\n"
                       "#Thing=commented\n"
                       "\n"
                       "Thing=b\tSmall=2#glued comment\n"
                       "  Small=3\n";
    refused(text, "t.conf:8: Small given twice in the Thing=b record");
    ck_assert_int_eq(got.n, 2);
    ck_assert_int_eq(got.t[0].line, 4);
    ck_assert_int_eq(got.t[1].line, 7);
    ck_assert_str_eq(got.t[0].path, ""); /* the commented Path= was not read */
    accepted("Thing=a\n\n\n\nThing=b"); /* no final newline */
    ck_assert_int_eq(got.t[1].line, 5);
    refused("Thing=a\n\n\n\nPath=/x oops", "t.conf:5: 'oops': expected Key=Value");
    refused("Thing=a =x\n", "t.conf:1: '=x': expected Key=Value");
    refused("Thing=a Path = /x\n", "t.conf:1: 'Path': expected Key=Value");
}
END_TEST

START_TEST(crlf_line_endings)
{
    accepted("# dos\r\nThing=a Path=/x\r\n\r\nThing=b Small=4\r\n");
    ck_assert_int_eq(got.n, 2);
    ck_assert_str_eq(got.t[0].path, "/x"); /* no '\r' in the value */
    ck_assert_int_eq(got.t[1].line, 4);
    ck_assert_int_eq(got.t[1].small, 4);
    refused("Thing=a\r\n\r\nPath=/x/\r\n", "t.conf:3: Path=/x/: " PATH_RULE);
    refused("Thing=a\r\nPath=\r\n", "t.conf:2: Path has an empty value");
}
END_TEST

START_TEST(error_buffer_is_never_overrun)
{
    memset(&got, 0, sizeof got);
    got.max = 4;
    char small[12];
    memset(small, 'Z', sizeof small);
    ck_assert_int_eq(flas_kv_parse("a-long-file-name.conf", "Colour=red\n", &thing_kind, 1, &got, small, 8), -1);
    ck_assert_int_eq(strlen(small), 7);
    ck_assert_int_eq(small[8], 'Z');
    ck_assert_int_eq(flas_kv_parse("x", "Colour=red\n", &thing_kind, 1, &got, NULL, 0), -1);
}
END_TEST

/* ---------------------------------------------------------------- flas_kv_read_file */

static char dir[64];

static void dir_setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/flas-kv-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void dir_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static const char *file_with(const char *name, const void *data, size_t n)
{
    static char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

START_TEST(read_file_refusals)
{
    char *text = (char *)1, want[256];
    const char *p = file_with("ok.conf", "Thing=a\n", 8);
    ck_assert_msg(flas_kv_read_file(p, 8, &text, err, sizeof err) == 0, "%s", err); /* exactly the limit */
    ck_assert_str_eq(text, "Thing=a\n");
    free(text);

    ck_assert_int_eq(flas_kv_read_file(p, 7, &text, err, sizeof err), -1); /* one byte over */
    ck_assert_ptr_null(text);
    snprintf(want, sizeof want, "%s: not a regular file of at most 7 bytes", p);
    ck_assert_str_eq(err, want);

    p = file_with("nul.conf", "Thing=a\0Path=/x\n", 16);
    ck_assert_int_eq(flas_kv_read_file(p, 1 << 20, &text, err, sizeof err), -1);
    ck_assert_ptr_null(text);
    snprintf(want, sizeof want, "%s: contains a NUL byte", p);
    ck_assert_str_eq(err, want);

    p = file_with("empty.conf", "", 0);
    ck_assert_msg(flas_kv_read_file(p, 16, &text, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(text, "");
    free(text);

    ck_assert_int_eq(flas_kv_read_file(dir, 1 << 20, &text, err, sizeof err), -1); /* a directory */
    snprintf(want, sizeof want, "%s: not a regular file of at most 1048576 bytes", dir);
    ck_assert_str_eq(err, want);

    char missing[128];
    snprintf(missing, sizeof missing, "%s/none.conf", dir);
    ck_assert_int_eq(flas_kv_read_file(missing, 1 << 20, &text, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: No such file or directory", missing);
    ck_assert_str_eq(err, want);

    /* a FIFO is refused at once, not waited on for a writer */
    char fifo[128];
    snprintf(fifo, sizeof fifo, "%s/fifo.conf", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    alarm(10);
    ck_assert_int_eq(flas_kv_read_file(fifo, 1 << 20, &text, err, sizeof err), -1);
    alarm(0);
    snprintf(want, sizeof want, "%s: not a regular file of at most 1048576 bytes", fifo);
    ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(both_loaders_keep_the_1_mib_limit)
{
    size_t big = 1 << 20;
    char *text = malloc(big + 1), path[128];
    const char *head = "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1\n"
                       "Site=a Host=h User=u StagingRoot=/s Script=/j.sh\n";
    memset(text, '#', big + 1);
    memcpy(text, head, strlen(head));
    text[big - 1] = '\n';
    const char *p = file_with("coordinator.conf", text, big);
    snprintf(path, sizeof path, "%s", p);
    static flas_coord_conf c;
    ck_assert_msg(flas_coord_conf_load(path, &c, err, sizeof err) == 0, "1 MiB refused: %s", err);
    ck_assert_int_eq(c.n_sites, 1);
    text[big] = '\n';
    file_with("coordinator.conf", text, big + 1);
    ck_assert_int_eq(flas_coord_conf_load(path, &c, err, sizeof err), -1);
    char want[256];
    snprintf(want, sizeof want, "%s: not a regular file of at most 1048576 bytes", path);
    ck_assert_str_eq(err, want);
    flas_conf fc;
    ck_assert_int_eq(flas_conf_load(path, &fc, err, sizeof err), -1);
    ck_assert_str_eq(err, want);
    ck_assert_ptr_null(fc.fed);
    free(text);
}
END_TEST

/* ---------------------------------------------------------------- flas.conf and coordinator.conf agree */

static flas_coord_conf cc;

/* The reason after "t.conf:LINE: " that each parser gives for a value, or "" if accepted. */
static void reasons(const char *key_value, char *site, char *coord, size_t len)
{
    char text[512], e[512];
    flas_conf fc;
    snprintf(text, sizeof text, "Federation=f Site=s StagingRoot=/s\n%s\n", key_value);
    /* flas.conf has no WorkDir=: a StagingRoot= value is tried there, in a second record */
    if (!strncmp(key_value, "StagingRoot=", 12))
        snprintf(text, sizeof text, "Federation=g Site=s\n%s\n", key_value);
    int rc = flas_conf_parse("t.conf", text, &fc, e, sizeof e);
    snprintf(site, len, "%s", rc ? e : "");
    if (!rc)
        flas_conf_free(&fc);
    snprintf(text, sizeof text, "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1\n"
                                "Site=a Host=h User=u Script=/j.sh\n%s%s\n",
             strncmp(key_value, "StagingRoot=", 12) ? "StagingRoot=/s " : "", key_value);
    rc = flas_coord_conf_parse("t.conf", text, &cc, e, sizeof e);
    snprintf(coord, len, "%s", rc ? e : "");
}

START_TEST(the_old_disagreements_are_gone)
{
    /* coordinator.conf used to take these (only ".." was refused there) */
    const char *paths[] = {"/srv//flas/", "/srv/./flas", "/srv/flas/", "/srv//flas", "//srv", "/srv/.", "/a/../b",
                           "srv/flas"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char kv[64], site[512], coord[512], want[256];
        snprintf(kv, sizeof kv, "StagingRoot=%s", paths[i]);
        reasons(kv, site, coord, sizeof site);
        snprintf(want, sizeof want, "t.conf:2: StagingRoot=%s: " PATH_RULE, paths[i]);
        ck_assert_msg(!strcmp(site, want), "flas.conf: '%s', want '%s'", site, want);
        snprintf(want, sizeof want, "t.conf:3: StagingRoot=%s: " PATH_RULE, paths[i]);
        ck_assert_msg(!strcmp(coord, want), "coordinator.conf: '%s', want '%s'", coord, want);
    }
    /* and the same path is fine in both */
    char site[512], coord[512];
    reasons("StagingRoot=/srv/flas", site, coord, sizeof site);
    ck_assert_msg(!site[0] && !coord[0], "'%s' / '%s'", site, coord);
    ck_assert_str_eq(cc.site[0].staging_root, "/srv/flas");

    /* WorkDir= follows the same rule */
    static const char *dirs[] = {"/srv//flas/", "/a/./b"};
    for (size_t i = 0; i < 2; i++) {
        char text[256], want[256];
        snprintf(text, sizeof text, "Federation=f WorkDir=%s InitialGlobal=/g.h5 KnownHosts=/k Rounds=1\n"
                                    "Site=a Host=h User=u StagingRoot=/s Script=/j.sh\n", dirs[i]);
        ck_assert_int_eq(flas_coord_conf_parse("t.conf", text, &cc, err, sizeof err), -1);
        snprintf(want, sizeof want, "t.conf:1: WorkDir=%s: " PATH_RULE, dirs[i]);
        ck_assert_str_eq(err, want);
    }
}
END_TEST

START_TEST(both_parsers_share_the_record_messages)
{
    char site[512], coord[512];
    /* an empty value: coordinator.conf used to call it "expected Key=Value" */
    reasons("StagingRoot=", site, coord, sizeof site);
    ck_assert_str_eq(site, "t.conf:2: StagingRoot has an empty value");
    ck_assert_str_eq(coord, "t.conf:3: StagingRoot has an empty value");
    /* a key given twice (an opening key given again opens a new record instead) */
    reasons("StagingRoot=/a StagingRoot=/b", site, coord, sizeof site);
    ck_assert_str_eq(site, "t.conf:2: StagingRoot given twice in the Federation=g record");
    ck_assert_str_eq(coord, "t.conf:3: StagingRoot given twice in the Site=a record");
    /* an unknown key names the known ones in both */
    reasons("Colour=red", site, coord, sizeof site);
    ck_assert_str_eq(site, "t.conf:2: unknown key 'Colour' in a Federation record (known: Federation, Site, "
                           "StagingRoot, AllowUsers, AllowGroups, AllowAccounts)");
    const char *coord_known = "t.conf:3: unknown key 'Colour' in a Site record (known: Site, Host, Port, ";
    ck_assert_msg(!strncmp(coord, coord_known, strlen(coord_known)), "%s", coord);
    /* a key before any record */
    flas_conf fc;
    ck_assert_int_eq(flas_conf_parse("t.conf", "\nSite=s Federation=f StagingRoot=/s\n", &fc, site, sizeof site), -1);
    ck_assert_str_eq(site, "t.conf:2: Site= before any Federation= record");
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", "\nRounds=1 Federation=f\n", &cc, coord, sizeof coord), -1);
    ck_assert_str_eq(coord, "t.conf:2: Rounds= before any Federation= record");
    /* record order and count, in coordinator.conf's open() callbacks */
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", "Site=a\nFederation=f\n", &cc, coord, sizeof coord), -1);
    ck_assert_str_eq(coord, "t.conf:1: Site= before Federation=");
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", "Federation=f\nSite=a\nFederation=g\n", &cc, coord, sizeof coord),
                     -1);
    ck_assert_str_eq(coord, "t.conf:3: Federation= must come first, once");
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", "Federation=f\nfederation=f\n", &cc, coord, sizeof coord), -1);
    ck_assert_str_eq(coord, "t.conf:2: Federation= must come first, once");
    char text[4096];
    int o = snprintf(text, sizeof text, "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1\n");
    for (int i = 0; i <= FLAS_COORD_MAX_SITES; i++)
        o += snprintf(text + o, sizeof text - (size_t)o, "Site=s%d Host=h User=u StagingRoot=/s Script=/j.sh\n", i);
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", text, &cc, coord, sizeof coord), -1);
    char want[64];
    snprintf(want, sizeof want, "t.conf:%d: more than %d sites", FLAS_COORD_MAX_SITES + 2, FLAS_COORD_MAX_SITES);
    ck_assert_str_eq(coord, want);
    text[o - (int)strlen("Site=s32 Host=h User=u StagingRoot=/s Script=/j.sh\n")] = '\0';
    ck_assert_msg(flas_coord_conf_parse("t.conf", text, &cc, coord, sizeof coord) == 0, "%s", coord);
    ck_assert_int_eq(cc.n_sites, FLAS_COORD_MAX_SITES);
    /* flas.conf: a federation twice is refused in its open() callback */
    ck_assert_int_eq(flas_conf_parse("t.conf", "Federation=f Site=s StagingRoot=/s\nFederation=f\n", &fc, site,
                                     sizeof site), -1);
    ck_assert_str_eq(site, "t.conf:2: federation 'f' is defined twice");
    ck_assert_ptr_null(fc.fed);
    ck_assert_int_eq(flas_conf_parse("t.conf", "# nothing\n", &fc, site, sizeof site), -1);
    ck_assert_str_eq(site, "t.conf: defines no federation (expected Federation=NAME Site=NAME StagingRoot=PATH)");
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", "# nothing\n", &cc, coord, sizeof coord), -1);
    ck_assert_str_eq(coord, "t.conf: no Federation= record");
}
END_TEST

START_TEST(coordinator_custom_keys)
{
    const char *head = "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 Sync=%s\n"
                       "Site=a Host=h User=u StagingRoot=/s Script=/j.sh ScriptArgs=%s\n";
    char text[512];
    snprintf(text, sizeof text, head, "reservation Reservation=r%d", "/data,--steps=5,x:y+z,");
    ck_assert_msg(flas_coord_conf_parse("t.conf", text, &cc, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(cc.sync, FLAS_SYNC_RESERVATION);
    ck_assert_int_eq(cc.site[0].n_args, 3);
    ck_assert_str_eq(cc.site[0].args[2], "x:y+z");
    snprintf(text, sizeof text, head, "Begin", "a");
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", text, &cc, err, sizeof err), -1);
    ck_assert_str_eq(err, "t.conf:1: Sync=Begin: expected none, begin, reservation or book");
    snprintf(text, sizeof text, head, "none", "a,,b");
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", text, &cc, err, sizeof err), -1);
    ck_assert_str_eq(err, "t.conf:2: ScriptArgs=a,,b: expected up to 48 comma-separated arguments");
    snprintf(text, sizeof text, head, "none", "a,$(id)");
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", text, &cc, err, sizeof err), -1);
    ck_assert_str_eq(err, "t.conf:2: ScriptArgs=a,$(id): '$(id)' has characters other than [A-Za-z0-9/._-=:+]");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kv");
    TCase *t = tcase_create("values");
    tcase_add_test(t, name_values);
    tcase_add_test(t, path_values);
    tcase_add_test(t, text_values);
    tcase_add_test(t, int_values);
    tcase_add_test(t, double_values);
    tcase_add_test(t, custom_values);
    suite_add_tcase(s, t);

    t = tcase_create("records");
    tcase_add_test(t, records_open_and_reset);
    tcase_add_test(t, empty_value);
    tcase_add_test(t, key_before_any_record);
    tcase_add_test(t, key_given_twice);
    tcase_add_test(t, unknown_key_lists_the_known);
    tcase_add_test(t, keys_are_case_insensitive);
    tcase_add_test(t, comments_and_blank_lines_keep_line_numbers);
    tcase_add_test(t, crlf_line_endings);
    tcase_add_test(t, error_buffer_is_never_overrun);
    suite_add_tcase(s, t);

    t = tcase_create("files");
    tcase_add_checked_fixture(t, dir_setup, dir_teardown);
    tcase_add_test(t, read_file_refusals);
    tcase_add_test(t, both_loaders_keep_the_1_mib_limit);
    suite_add_tcase(s, t);

    t = tcase_create("both_formats");
    tcase_add_test(t, the_old_disagreements_are_gone);
    tcase_add_test(t, both_parsers_share_the_record_messages);
    tcase_add_test(t, coordinator_custom_keys);
    suite_add_tcase(s, t);

    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
