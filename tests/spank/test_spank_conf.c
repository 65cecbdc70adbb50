/* flas.conf(5) parsing (every error path, with its "file:line:" prefix), flas_conf_allows, the plugin's
 * plugstack arguments, staging names and rounds, and sha256 against published test vectors. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "flas/conf.h"
#include "flas/sha256.h"
#include "flas/staging.h"
#include "spank_testutil.h"

/* ---------------------------------------------------------------- flas.conf: valid files */

START_TEST(conf_parses_records_comments_case_and_lists)
{
    const char *text = "# flas.conf of site leonardo\n"
                       "\n"
                       "Federation=flas Site=leonardo StagingRoot=/srv/flas   # trailing comment\r\n"
                       "\tAllowUsers=alice,bob AllowGroups=nogroup AllowAccounts=*\n"
                       "   \n"
                       "federation=bio-2  SITE=leo_nardo\n"
                       "stagingroot=/scratch/fl-stage/x.y\n"
                       "#Federation=commented Site=out StagingRoot=/nope\n";
    flas_conf c;
    char err[512] = "";
    ck_assert_msg(flas_conf_parse("site.conf", text, &c, err, sizeof err) == 0, "refused: %s", err);
    ck_assert_str_eq(c.path, "site.conf");
    ck_assert_int_eq(c.n, 2);
    const flas_federation_conf *f = flas_conf_find(&c, "flas");
    ck_assert_ptr_nonnull(f);
    ck_assert_str_eq(f->site, "leonardo");
    ck_assert_str_eq(f->staging_root, "/srv/flas");
    ck_assert_int_eq(f->line, 3);
    ck_assert_int_eq(f->allow_users.n, 2);
    ck_assert_str_eq(f->allow_users.name[0], "alice");
    ck_assert_str_eq(f->allow_users.name[1], "bob");
    ck_assert_int_eq(f->allow_groups.n, 1);
    ck_assert_str_eq(f->allow_groups.name[0], "nogroup");
    ck_assert_int_eq(f->allow_accounts.n, 1);
    ck_assert_str_eq(f->allow_accounts.name[0], "*");
    const flas_federation_conf *g = flas_conf_find(&c, "bio-2");
    ck_assert_ptr_eq(g, &c.fed[1]); /* file order */
    ck_assert_str_eq(g->site, "leo_nardo");
    ck_assert_str_eq(g->staging_root, "/scratch/fl-stage/x.y");
    ck_assert_int_eq(g->line, 6);
    ck_assert_int_eq(g->allow_users.n, 0); /* not given: no restriction */
    ck_assert_int_eq(g->allow_groups.n, 0);
    ck_assert_int_eq(g->allow_accounts.n, 0);
    ck_assert_ptr_null(flas_conf_find(&c, "commented"));
    ck_assert_ptr_null(flas_conf_find(&c, "FLAS")); /* federation names are case-sensitive */
    flas_conf_free(&c);
    ck_assert_ptr_null(c.fed);
    ck_assert_int_eq(c.n, 0);
}
END_TEST

START_TEST(conf_list_of_64_names_is_the_maximum)
{
    char text[4096];
    int o = snprintf(text, sizeof text, "Federation=f Site=s StagingRoot=/s AllowUsers=u0");
    for (int i = 1; i < FLAS_CONF_LIST_MAX; i++)
        o += snprintf(text + o, sizeof text - (size_t)o, ",u%d", i);
    flas_conf c;
    char err[512] = "";
    ck_assert_msg(flas_conf_parse("t.conf", text, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.fed[0].allow_users.n, FLAS_CONF_LIST_MAX);
    ck_assert_str_eq(c.fed[0].allow_users.name[63], "u63");
    flas_conf_free(&c);
    snprintf(text + o, sizeof text - (size_t)o, ",u64");
    ck_assert_int_eq(flas_conf_parse("t.conf", text, &c, err, sizeof err), -1);
    ck_assert_str_eq(err, "t.conf:1: AllowUsers=u0,u1,u2,u3,u4,u5,u6,u7,u8,u9,u10,u11,u12,u13,u14,u15,u16,u17,u18,"
                          "u19,u20,u21,u22,u23,u24,u25,u26,u27,u28,u29,u30,u31,u32,u33,u34,u35,u36,u37,u38,u39,u40,"
                          "u41,u42,u43,u44,u45,u46,u47,u48,u49,u50,u51,u52,u53,u54,u55,u56,u57,u58,u59,u60,u61,u62,"
                          "u63,u64: expected a comma-separated list of names (or *), at most 64");
}
END_TEST

START_TEST(conf_example_shipped_with_flas_parses)
{
    flas_conf c;
    char err[512] = "";
    ck_assert_msg(flas_conf_load(FLAS_EXAMPLE_CONF, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.n, 2);
    const flas_federation_conf *f = flas_conf_find(&c, "flas");
    ck_assert_ptr_nonnull(f);
    ck_assert_str_eq(f->site, "leonardo");
    ck_assert_str_eq(f->staging_root, "/srv/flas");
    ck_assert_int_eq(f->allow_groups.n, 1);
    ck_assert_int_eq(f->allow_users.n, 2);
    ck_assert_int_eq(f->allow_accounts.n, 2);
    ck_assert_ptr_nonnull(flas_conf_find(&c, "bio-pilot"));
    flas_conf_free(&c);
}
END_TEST

/* ---------------------------------------------------------------- flas.conf: every error */

typedef struct {
    const char *text;
    const char *error; /* the exact message */
} bad_conf;

#define NAME_RULE "a name is 1-63 characters of [A-Za-z0-9_-], not starting with '-'"
#define PATH_RULE "must be an absolute path without '.', '..', '//' or a trailing '/'"
#define LIST_RULE "expected a comma-separated list of names (or *), at most 64"
#define OK_REC "Federation=ok Site=s StagingRoot=/srv/ok\n"
#define KNOWN_KEYS "Federation, Site, StagingRoot, AllowUsers, AllowGroups, AllowAccounts"

static const bad_conf bad_confs[] = {
    /* unknown key */
    {OK_REC "Federation=f Site=s StagingRoot=/x Colour=red\n",
     "bad.conf:2: unknown key 'Colour' in a Federation record (known: " KNOWN_KEYS ")"},
    {"Federation=f Site=s StagingRoot=/x AllowUser=alice\n",
     "bad.conf:1: unknown key 'AllowUser' in a Federation record (known: " KNOWN_KEYS ")"},
    /* duplicate key in one record, on the same line or the next one, whatever the case */
    {"Federation=f Site=s Site=t StagingRoot=/x\n", "bad.conf:1: Site given twice in the Federation=f record"},
    {"Federation=f Site=s\n# comment\nsite=t StagingRoot=/x\n", "bad.conf:3: Site given twice in the Federation=f record"},
    {"Federation=f Site=s StagingRoot=/x AllowUsers=a\nALLOWUSERS=b\n",
     "bad.conf:2: AllowUsers given twice in the Federation=f record"},
    /* duplicate federation */
    {OK_REC "\n" OK_REC, "bad.conf:3: federation 'ok' is defined twice"},
    /* bad names */
    {"Federation=-f Site=s StagingRoot=/x\n", "bad.conf:1: Federation=-f: " NAME_RULE},
    {"Federation=f.g Site=s StagingRoot=/x\n", "bad.conf:1: Federation=f.g: " NAME_RULE},
    {"Federation=f Site=a/b StagingRoot=/x\n", "bad.conf:1: Site=a/b: " NAME_RULE},
    {"Federation=f Site=s StagingRoot=/x AllowGroups=wheel,bad$name\n",
     "bad.conf:1: AllowGroups=wheel,bad$name: " LIST_RULE},
    {"Federation=f Site=s StagingRoot=/x AllowAccounts=a,,b\n", "bad.conf:1: AllowAccounts=a,,b: " LIST_RULE},
    {"Federation=f Site=s StagingRoot=/x AllowUsers=a,\n", "bad.conf:1: AllowUsers=a,: " LIST_RULE},
    {"Federation=f Site=s StagingRoot=/x AllowUsers=,a\n", "bad.conf:1: AllowUsers=,a: " LIST_RULE},
    {"Federation=f Site=s StagingRoot=/x AllowUsers=-rf\n", "bad.conf:1: AllowUsers=-rf: " LIST_RULE},
    /* StagingRoot: relative, '..', '.', '//', trailing '/', the root itself */
    {"Federation=f Site=s StagingRoot=srv/flas\n", "bad.conf:1: StagingRoot=srv/flas: " PATH_RULE},
    {"Federation=f Site=s StagingRoot=/srv/../etc\n", "bad.conf:1: StagingRoot=/srv/../etc: " PATH_RULE},
    {"Federation=f Site=s StagingRoot=/srv/..\n", "bad.conf:1: StagingRoot=/srv/..: " PATH_RULE},
    {"Federation=f Site=s StagingRoot=/srv/./flas\n", "bad.conf:1: StagingRoot=/srv/./flas: " PATH_RULE},
    {"Federation=f Site=s StagingRoot=/srv//flas\n", "bad.conf:1: StagingRoot=/srv//flas: " PATH_RULE},
    {"Federation=f Site=s StagingRoot=//srv\n", "bad.conf:1: StagingRoot=//srv: " PATH_RULE},
    {"Federation=f Site=s StagingRoot=/srv/flas/\n", "bad.conf:1: StagingRoot=/srv/flas/: " PATH_RULE},
    {"Federation=f Site=s StagingRoot=/\n", "bad.conf:1: StagingRoot=/: " PATH_RULE},
    /* missing Site or StagingRoot: reported at the line where the record starts */
    {OK_REC "# second\nFederation=f\n StagingRoot=/x\n", "bad.conf:3: federation 'f' has no Site="},
    {"Federation=f Site=s\n" OK_REC, "bad.conf:1: federation 'f' has no StagingRoot="},
    /* a key before any Federation= */
    {"# header\nSite=s Federation=f StagingRoot=/x\n", "bad.conf:2: Site= before any Federation= record"},
    /* empty value */
    {"Federation=f Site= StagingRoot=/x\n", "bad.conf:1: Site has an empty value"},
    {"Federation=\n", "bad.conf:1: Federation has an empty value"},
    /* a token without '=' (or without a key) */
    {OK_REC "Federation=f Site=s StagingRoot=/x oops\n", "bad.conf:2: 'oops': expected Key=Value"},
    {"Federation=f Site=s =x StagingRoot=/x\n", "bad.conf:1: '=x': expected Key=Value"},
    {"Federation=f Site = s StagingRoot=/x\n", "bad.conf:1: 'Site': expected Key=Value"},
    /* no federation at all */
    {"", "bad.conf: defines no federation (expected Federation=NAME Site=NAME StagingRoot=PATH)"},
    {"# nothing but comments\n\n   \n", "bad.conf: defines no federation (expected Federation=NAME Site=NAME StagingRoot=PATH)"},
};

START_TEST(conf_error_has_file_and_line)
{
    const bad_conf *b = &bad_confs[_i];
    flas_conf c;
    char err[512] = "";
    ck_assert_msg(flas_conf_parse("bad.conf", b->text, &c, err, sizeof err) == -1, "accepted: %s", b->text);
    ck_assert_msg(strcmp(err, b->error) == 0, "for %s\n got '%s'\nwant '%s'", b->text, err, b->error);
    ck_assert_ptr_null(c.fed); /* nothing left allocated on failure */
    ck_assert_int_eq(c.n, 0);
}
END_TEST

START_TEST(conf_name_of_63_characters_is_the_maximum)
{
    char name[80], text[256], err[512] = "";
    memset(name, 'n', 63);
    name[63] = '\0';
    snprintf(text, sizeof text, "Federation=%s Site=s StagingRoot=/x\n", name);
    flas_conf c;
    ck_assert_msg(flas_conf_parse("t.conf", text, &c, err, sizeof err) == 0, "%s", err);
    flas_conf_free(&c);
    strcat(name, "n");
    snprintf(text, sizeof text, "Federation=%s Site=s StagingRoot=/x\n", name);
    ck_assert_int_eq(flas_conf_parse("t.conf", text, &c, err, sizeof err), -1);
    ck_assert_msg(strncmp(err, "t.conf:1: Federation=nnnn", 25) == 0, "%s", err);
}
END_TEST

START_TEST(conf_error_buffer_is_never_overrun)
{
    char small[12];
    memset(small, 'Z', sizeof small);
    flas_conf c;
    ck_assert_int_eq(flas_conf_parse("a-rather-long-file-name.conf", "Colour=red\n", &c, small, 8), -1);
    ck_assert_int_eq(strlen(small), 7);
    ck_assert_int_eq(small[8], 'Z');
    ck_assert_int_eq(flas_conf_parse("x", "Colour=red\n", &c, NULL, 0), -1); /* no buffer at all */
}
END_TEST

/* ---------------------------------------------------------------- flas.conf: files */

static const char *conf_dir;

static void conf_dir_setup(void) { conf_dir = strdup(test_scratch_dir("conf")); }
static void conf_dir_teardown(void) { test_remove_tree(conf_dir); }

START_TEST(conf_load_reads_a_file)
{
    const char *p = test_path("%s/flas.conf", conf_dir);
    test_write_text(p, "Federation=flas Site=s StagingRoot=/srv/flas\n");
    flas_conf c;
    char err[512] = "";
    ck_assert_msg(flas_conf_load(p, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(c.path, p);
    ck_assert_str_eq(c.fed[0].staging_root, "/srv/flas");
    flas_conf_free(&c);
    /* an error in a file names that file */
    test_write_text(p, "Federation=flas Site=s StagingRoot=/srv/flas\nSite=x\n");
    ck_assert_int_eq(flas_conf_load(p, &c, err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s:2: Site given twice in the Federation=flas record", p));
}
END_TEST

START_TEST(conf_load_refuses_missing_unreadable_odd_files)
{
    flas_conf c;
    char err[512] = "";
    const char *missing = test_path("%s/none/flas.conf", conf_dir);
    ck_assert_int_eq(flas_conf_load(missing, &c, err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s: No such file or directory", missing));
    ck_assert_ptr_null(c.fed);

    /* unreadable: a root-only file read by another user (this test runs in its own forked process) */
    const char *secret = test_path("%s/secret.conf", conf_dir);
    test_write_file(secret, "Federation=f Site=s StagingRoot=/x\n", 35, 0600, 0, 0);
    ck_assert_int_eq(setegid(TEST_GID), 0);
    ck_assert_int_eq(seteuid(TEST_UID), 0);
    int rc = flas_conf_load(secret, &c, err, sizeof err);
    ck_assert_int_eq(seteuid(0), 0);
    ck_assert_int_eq(rc, -1);
    ck_assert_str_eq(err, test_path("%s: Permission denied", secret));

    /* not a regular file */
    ck_assert_int_eq(flas_conf_load(conf_dir, &c, err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s: not a regular file of at most 1048576 bytes", conf_dir));

    /* NUL byte */
    const char *nul = test_path("%s/nul.conf", conf_dir);
    test_write_file(nul, "Federation=f\0Site=s StagingRoot=/x\n", 35, 0644, 0, 0);
    ck_assert_int_eq(flas_conf_load(nul, &c, err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s: contains a NUL byte", nul));

    /* too large: 1 MiB is the limit, one byte more is refused */
    size_t big = 1 << 20;
    char *text = malloc(big + 1);
    const char *rec = "Federation=f Site=s StagingRoot=/x\n";
    memset(text, '#', big);
    memcpy(text, rec, strlen(rec));
    text[big - 1] = '\n';
    const char *large = test_path("%s/large.conf", conf_dir);
    test_write_file(large, text, big, 0644, 0, 0);
    ck_assert_msg(flas_conf_load(large, &c, err, sizeof err) == 0, "1 MiB refused: %s", err);
    flas_conf_free(&c);
    text[big] = '\n';
    test_write_file(large, text, big + 1, 0644, 0, 0);
    ck_assert_int_eq(flas_conf_load(large, &c, err, sizeof err), -1);
    ck_assert_str_eq(err, test_path("%s: not a regular file of at most 1048576 bytes", large));
    free(text);
}
END_TEST

/* ---------------------------------------------------------------- who may use a federation */

static flas_federation_conf fed_with(const char *users, const char *groups, const char *accounts)
{
    char text[512], err[512] = "";
    int o = snprintf(text, sizeof text, "Federation=f Site=s StagingRoot=/x");
    if (users)
        o += snprintf(text + o, sizeof text - (size_t)o, " AllowUsers=%s", users);
    if (groups)
        o += snprintf(text + o, sizeof text - (size_t)o, " AllowGroups=%s", groups);
    if (accounts)
        snprintf(text + o, sizeof text - (size_t)o, " AllowAccounts=%s", accounts);
    flas_conf c;
    ck_assert_msg(flas_conf_parse("t.conf", text, &c, err, sizeof err) == 0, "%s", err);
    flas_federation_conf f = c.fed[0];
    flas_conf_free(&c);
    return f;
}

static int allows(const flas_federation_conf *f, const char *user, gid_t gid, const gid_t *groups, int ngroups,
                  const char *account, char *err)
{
    err[0] = '\0';
    return flas_conf_allows(f, user, gid, groups, ngroups, account, err, 512);
}

START_TEST(allows_everyone_without_lists)
{
    flas_federation_conf f = fed_with(NULL, NULL, NULL);
    char err[512];
    ck_assert_int_eq(allows(&f, "anyone", 12345, NULL, 0, "anyacct", err), 0);
    ck_assert_int_eq(allows(&f, "anyone", 12345, NULL, 0, NULL, err), 0);
}
END_TEST

START_TEST(allows_listed_users_only)
{
    flas_federation_conf f = fed_with("alice,bob", NULL, NULL);
    char err[512];
    ck_assert_int_eq(allows(&f, "alice", 1000, NULL, 0, NULL, err), 0);
    ck_assert_int_eq(allows(&f, "bob", 1001, NULL, 0, "", err), 0);
    ck_assert_int_eq(allows(&f, "carol", 1002, NULL, 0, NULL, err), -1);
    ck_assert_str_eq(err, "user 'carol' may not use federation 'f' (AllowUsers/AllowGroups in flas.conf)");
    ck_assert_int_eq(allows(&f, "Alice", 1000, NULL, 0, NULL, err), -1); /* user names are case-sensitive */
    f = fed_with("*", NULL, NULL);
    ck_assert_int_eq(allows(&f, "carol", 1002, NULL, 0, NULL, err), 0);
}
END_TEST

START_TEST(allows_members_of_listed_groups)
{
    /* nogroup (gid 65534) and root (gid 0) come from the system's group database */
    flas_federation_conf f = fed_with(NULL, "nogroup", NULL);
    char err[512];
    gid_t supp[] = {4242, 65534};
    ck_assert_int_eq(allows(&f, "x", 65534, NULL, 0, NULL, err), 0);    /* primary group */
    ck_assert_int_eq(allows(&f, "x", 4242, supp, 2, NULL, err), 0);     /* supplementary group */
    ck_assert_int_eq(allows(&f, "x", 0, supp, 1, NULL, err), -1);       /* neither */
    ck_assert_str_eq(err, "user 'x' may not use federation 'f' (AllowUsers/AllowGroups in flas.conf)");
    /* users OR groups */
    f = fed_with("alice", "root", NULL);
    ck_assert_int_eq(allows(&f, "alice", 65534, NULL, 0, NULL, err), 0);
    ck_assert_int_eq(allows(&f, "zed", 0, NULL, 0, NULL, err), 0);
    ck_assert_int_eq(allows(&f, "zed", 65534, NULL, 0, NULL, err), -1);
    f = fed_with("alice", "*", NULL);
    ck_assert_int_eq(allows(&f, "zed", 65534, NULL, 0, NULL, err), 0);
}
END_TEST

START_TEST(allows_listed_accounts_only)
{
    flas_federation_conf f = fed_with(NULL, NULL, "proj1,proj2");
    char err[512];
    ck_assert_int_eq(allows(&f, "alice", 1000, NULL, 0, "proj2", err), 0);
    ck_assert_int_eq(allows(&f, "alice", 1000, NULL, 0, "proj3", err), -1);
    ck_assert_str_eq(err, "account 'proj3' may not use federation 'f' (AllowAccounts in flas.conf)");
    /* an unknown account (sbatch without -A in the environment) is left to the prolog, which knows it */
    ck_assert_int_eq(allows(&f, "alice", 1000, NULL, 0, NULL, err), 0);
    ck_assert_int_eq(allows(&f, "alice", 1000, NULL, 0, "", err), 0);
    /* both conditions must hold */
    f = fed_with("alice", NULL, "proj1");
    ck_assert_int_eq(allows(&f, "alice", 1000, NULL, 0, "proj1", err), 0);
    ck_assert_int_eq(allows(&f, "bob", 1000, NULL, 0, "proj1", err), -1);
    ck_assert_int_eq(allows(&f, "alice", 1000, NULL, 0, "proj9", err), -1);
    f = fed_with(NULL, NULL, "*");
    ck_assert_int_eq(allows(&f, "alice", 1000, NULL, 0, "anything", err), 0);
}
END_TEST

START_TEST(name_rule)
{
    ck_assert(flas_name_valid("flas"));
    ck_assert(flas_name_valid("A-z_09"));
    ck_assert(flas_name_valid("0"));
    ck_assert(!flas_name_valid(NULL));
    ck_assert(!flas_name_valid(""));
    ck_assert(!flas_name_valid("-x"));
    ck_assert(!flas_name_valid("--wrap"));
    ck_assert(!flas_name_valid("a b"));
    ck_assert(!flas_name_valid("a.b"));
    ck_assert(!flas_name_valid("a/b"));
    ck_assert(!flas_name_valid(".."));
    ck_assert(!flas_name_valid("é"));
}
END_TEST

/* ---------------------------------------------------------------- plugstack arguments */

START_TEST(plugstack_args)
{
    flas_plugin_args a;
    char err[512] = "";
    ck_assert_int_eq(flas_plugin_args_parse(0, NULL, &a, err, sizeof err), 0);
    ck_assert_str_eq(a.conf, FLAS_DEFAULT_CONF);
    char *good[] = {"conf=/etc/slurm/site/flas.conf"};
    ck_assert_int_eq(flas_plugin_args_parse(1, good, &a, err, sizeof err), 0);
    ck_assert_str_eq(a.conf, "/etc/slurm/site/flas.conf");

    char *unknown[] = {"conf=/x", "debug=1"};
    ck_assert_int_eq(flas_plugin_args_parse(2, unknown, &a, err, sizeof err), -1);
    ck_assert_str_eq(err, "plugstack argument 'debug=1': unknown (known: conf=/path/to/flas.conf)");
    char *bare[] = {"conf"};
    ck_assert_int_eq(flas_plugin_args_parse(1, bare, &a, err, sizeof err), -1);
    ck_assert_str_eq(err, "plugstack argument 'conf': unknown (known: conf=/path/to/flas.conf)");
    char *relative[] = {"conf=etc/flas.conf"};
    ck_assert_int_eq(flas_plugin_args_parse(1, relative, &a, err, sizeof err), -1);
    ck_assert_str_eq(err, "plugstack argument 'conf=etc/flas.conf': conf= must be given once, as an absolute path");
    char *empty[] = {"conf="};
    ck_assert_int_eq(flas_plugin_args_parse(1, empty, &a, err, sizeof err), -1);
    char *twice[] = {"conf=/a", "conf=/b"};
    ck_assert_int_eq(flas_plugin_args_parse(2, twice, &a, err, sizeof err), -1);
    ck_assert_str_eq(err, "plugstack argument 'conf=/b': conf= must be given once, as an absolute path");
    char longpath[FLAS_CONF_PATH_MAX + 16] = "conf=/";
    memset(longpath + 6, 'p', FLAS_CONF_PATH_MAX);
    longpath[FLAS_CONF_PATH_MAX + 6] = '\0';
    char *toolong[] = {longpath};
    ck_assert_int_eq(flas_plugin_args_parse(1, toolong, &a, err, sizeof err), -1);
}
END_TEST

/* ---------------------------------------------------------------- staging names and rounds */

START_TEST(staging_names)
{
    char b[64];
    ck_assert_int_eq(flas_stage_global_name(b, sizeof b, 3), 0);
    ck_assert_str_eq(b, "round-000003.h5");
    ck_assert_int_eq(flas_stage_global_name(b, sizeof b, 999999), 0);
    ck_assert_str_eq(b, "round-999999.h5");
    ck_assert_int_eq(flas_stage_global_name(b, sizeof b, 1000000), -1);
    ck_assert_int_eq(flas_stage_global_name(b, sizeof b, -1), -1);
    ck_assert_int_eq(flas_stage_global_name(b, 15, 3), -1); /* no room for the NUL */
    ck_assert_int_eq(flas_stage_global_name(b, 16, 3), 0);
    ck_assert_int_eq(flas_stage_round_dir(b, sizeof b, 0), 0);
    ck_assert_str_eq(b, "round-000000");
    ck_assert_int_eq(flas_stage_round_dir(b, sizeof b, -5), -1);
    ck_assert_int_eq(flas_stage_round_dir(b, 12, 1), -1);
    ck_assert_int_eq(flas_stage_published_name(b, sizeof b, "leonardo", 4211, ".h5"), 0);
    ck_assert_str_eq(b, "leonardo-job4211.h5");
    ck_assert_int_eq(flas_stage_published_name(b, sizeof b, "leonardo", 4211, FLAS_STAGE_MANIFEST_SUFFIX), 0);
    ck_assert_str_eq(b, "leonardo-job4211.manifest.json");
    ck_assert_int_eq(flas_stage_published_name(b, 10, "leonardo", 4211, ".h5"), -1);
}
END_TEST

START_TEST(staging_rounds_parse_strictly)
{
    ck_assert_int_eq(flas_parse_round("0"), 0);
    ck_assert_int_eq(flas_parse_round("7"), 7);
    ck_assert_int_eq(flas_parse_round("000007"), 7);
    ck_assert_int_eq(flas_parse_round("999999"), 999999);
    const char *bad[] = {"1000000", "0000007", "-1", "+1", "", " 1", "1 ", "0x1", "1e3", "abc", "3.0", "١"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(flas_parse_round(bad[i]) == -1, "'%s' accepted as a round", bad[i]);
    ck_assert_int_eq(flas_parse_round(NULL), -1);

    ck_assert_int_eq(flas_stage_parse_global_name("round-000003.h5"), 3);
    ck_assert_int_eq(flas_stage_parse_global_name("round-000000.h5"), 0);
    ck_assert_int_eq(flas_stage_parse_global_name("round-999999.h5"), 999999);
    const char *names[] = {"round-3.h5",        "round-0000003.h5",       "round-00000a.h5", "round-000003.h5.sha256",
                           "xround-000003.h5", "round-000003.h5.part",   "round-000003.h6", "round_000003.h5",
                           "round--00003.h5",  ".round-000003.h5.tmp.1", "round-000003h5",  ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        ck_assert_msg(flas_stage_parse_global_name(names[i]) == -1, "'%s' taken for a global model", names[i]);
}
END_TEST

/* ---------------------------------------------------------------- sha256 (FIPS 180-2 vectors) */

#define SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_448 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
#define SHA_MILLION_A "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"

START_TEST(sha256_known_vectors)
{
    char hex[FLAS_SHA256_HEX_LEN + 1];
    flas_sha256_buffer("abc", 3, hex);
    ck_assert_str_eq(hex, SHA_ABC);
    flas_sha256_buffer("", 0, hex);
    ck_assert_str_eq(hex, SHA_EMPTY);
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    flas_sha256_buffer(m448, strlen(m448), hex);
    ck_assert_str_eq(hex, SHA_448);
}
END_TEST

START_TEST(sha256_of_files_and_descriptors)
{
    char hex[FLAS_SHA256_HEX_LEN + 1];
    /* one million 'a' and, to cross the 1 MiB read chunk, three million: compared with the buffer path */
    size_t n = 3000000;
    char *a = malloc(n);
    memset(a, 'a', n);
    const char *p = test_path("%s/million", conf_dir);
    test_write_file(p, a, 1000000, 0644, 0, 0);
    uint64_t bytes = 0;
    ck_assert_int_eq(flas_sha256_file(p, hex, &bytes, NULL, 0), 0);
    ck_assert_uint_eq(bytes, 1000000);
    ck_assert_str_eq(hex, SHA_MILLION_A);
    test_write_file(p, a, n, 0644, 0, 0);
    char want[FLAS_SHA256_HEX_LEN + 1];
    flas_sha256_buffer(a, n, want);
    ck_assert_int_eq(flas_sha256_file(p, hex, &bytes, NULL, 0), 0);
    ck_assert_uint_eq(bytes, n);
    ck_assert_str_eq(hex, want);
    free(a);

    /* from the descriptor's current offset */
    test_write_text(p, "xxabc");
    int fd = open(p, O_RDONLY);
    ck_assert_int_eq(lseek(fd, 2, SEEK_SET), 2);
    ck_assert_int_eq(flas_sha256_fd(fd, hex), 3);
    ck_assert_str_eq(hex, SHA_ABC);
    close(fd);

    /* a symlink is not followed; a missing file is an error */
    const char *link = test_path("%s/link", conf_dir);
    ck_assert_int_eq(symlink(p, link), 0);
    char err[512];
    ck_assert_int_eq(flas_sha256_file(link, hex, NULL, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "cannot open for hashing"));
    ck_assert_ptr_nonnull(strstr(err, "symbolic links"));
    ck_assert_int_eq(flas_sha256_file(test_path("%s/none", conf_dir), hex, NULL, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "No such file"));
    /* a descriptor that cannot be read */
    fd = open(conf_dir, O_RDONLY | O_DIRECTORY);
    ck_assert_int_eq(flas_sha256_fd(fd, hex), -1);
    close(fd);
}
END_TEST

START_TEST(sha256_hex_rule)
{
    ck_assert(flas_sha256_is_hex(SHA_ABC));
    ck_assert(!flas_sha256_is_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
    ck_assert(!flas_sha256_is_hex(SHA_ABC "0"));
    ck_assert(!flas_sha256_is_hex("ba7816bf"));
    char g[] = SHA_ABC;
    g[10] = 'g';
    ck_assert(!flas_sha256_is_hex(g));
    ck_assert(!flas_sha256_is_hex(""));
    ck_assert(!flas_sha256_is_hex(NULL));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("spank_conf");
    TCase *t = tcase_create("conf");
    tcase_add_test(t, conf_parses_records_comments_case_and_lists);
    tcase_add_test(t, conf_list_of_64_names_is_the_maximum);
    tcase_add_test(t, conf_example_shipped_with_flas_parses);
    tcase_add_loop_test(t, conf_error_has_file_and_line, 0, (int)(sizeof bad_confs / sizeof bad_confs[0]));
    tcase_add_test(t, conf_name_of_63_characters_is_the_maximum);
    tcase_add_test(t, conf_error_buffer_is_never_overrun);
    suite_add_tcase(s, t);

    t = tcase_create("files");
    tcase_add_checked_fixture(t, conf_dir_setup, conf_dir_teardown);
    tcase_add_test(t, conf_load_reads_a_file);
    tcase_add_test(t, conf_load_refuses_missing_unreadable_odd_files);
    tcase_add_test(t, sha256_of_files_and_descriptors);
    suite_add_tcase(s, t);

    t = tcase_create("allows");
    tcase_add_test(t, allows_everyone_without_lists);
    tcase_add_test(t, allows_listed_users_only);
    tcase_add_test(t, allows_members_of_listed_groups);
    tcase_add_test(t, allows_listed_accounts_only);
    tcase_add_test(t, name_rule);
    suite_add_tcase(s, t);

    t = tcase_create("args_staging_sha256");
    tcase_add_test(t, plugstack_args);
    tcase_add_test(t, staging_names);
    tcase_add_test(t, staging_rounds_parse_strictly);
    tcase_add_test(t, sha256_known_vectors);
    tcase_add_test(t, sha256_hex_rule);
    suite_add_tcase(s, t);

    SRunner *r = srunner_create(s);
    srunner_set_fork_status(r, CK_FORK); /* the "unreadable" case changes the euid of its own process */
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
