/* The built flas.so, loaded with dlopen() the way Slurm loads it, against stand-ins for the spank_* and
 * slurm_* functions Slurm provides. This executable exports them (ENABLE_EXPORTS, -rdynamic) so the
 * plugin binds to them; each test runs in its own forked process, so the plugin's static state (options
 * seen, plugstack arguments) starts fresh every time, as it does in every Slurm process.
 *
 * usage: test_spank_plugin [PATH/flas.so]   (default: the one built with this test) */
#define _GNU_SOURCE
#include <check.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <slurm/spank.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/sha256.h"
#include "spank_testutil.h"

/* ======================================================================= what Slurm would provide */

static spank_context_t context = S_CTX_ALLOCATOR;

static struct spank_option registered[8];
static int n_registered;

/* Values spank_option_getopt reports (the prolog/epilog read the job's options this way). */
static struct {
    const char *name, *value;
} getopt_values[4];

static uint32_t item_job_id;
static uid_t item_job_uid;
static int items_available = 1;

#define ENV_MAX 64
static struct {
    char name[64];
    char value[2048];
} step_env[ENV_MAX];
static int n_env;

#define LOG_MAX 64
static char logged[LOG_MAX][1200];
static int n_logged;

spank_context_t spank_context(void) { return context; }

spank_err_t spank_option_register(spank_t sp, struct spank_option *opt)
{
    (void)sp;
    ck_assert_msg(context != S_CTX_SLURMD && context != S_CTX_JOB_SCRIPT, "option registered in context %d",
                  (int)context);
    ck_assert_int_lt(n_registered, 8);
    registered[n_registered++] = *opt;
    return ESPANK_SUCCESS;
}

spank_err_t spank_option_getopt(spank_t sp, struct spank_option *opt, char **optarg)
{
    (void)sp;
    for (int i = 0; i < 4; i++)
        if (getopt_values[i].name && !strcmp(getopt_values[i].name, opt->name)) {
            *optarg = (char *)getopt_values[i].value;
            return ESPANK_SUCCESS;
        }
    return ESPANK_ERROR; /* the option was not used */
}

spank_err_t spank_get_item(spank_t sp, spank_item_t item, ...)
{
    (void)sp;
    if (!items_available)
        return ESPANK_NOT_AVAIL;
    va_list ap;
    va_start(ap, item);
    spank_err_t rc = ESPANK_SUCCESS;
    switch (item) {
    case S_JOB_ID:
        *va_arg(ap, uint32_t *) = item_job_id;
        break;
    case S_JOB_UID:
        *va_arg(ap, uid_t *) = item_job_uid;
        break;
    default:
        rc = ESPANK_BAD_ARG;
    }
    va_end(ap);
    return rc;
}

static int env_find(const char *name)
{
    for (int i = 0; i < n_env; i++)
        if (!strcmp(step_env[i].name, name))
            return i;
    return -1;
}

static const char *env_get(const char *name)
{
    int i = env_find(name);
    return i < 0 ? NULL : step_env[i].value;
}

spank_err_t spank_getenv(spank_t sp, const char *var, char *buf, int len)
{
    (void)sp;
    const char *v = env_get(var);
    if (!v)
        return ESPANK_ENV_NOEXIST;
    if ((int)strlen(v) >= len)
        return ESPANK_NOSPACE;
    strcpy(buf, v);
    return ESPANK_SUCCESS;
}

spank_err_t spank_setenv(spank_t sp, const char *var, const char *val, int overwrite)
{
    (void)sp;
    ck_assert_msg(context == S_CTX_REMOTE, "spank_setenv outside the remote context");
    int i = env_find(var);
    if (i >= 0 && !overwrite)
        return ESPANK_ENV_EXISTS;
    if (i < 0) {
        ck_assert_int_lt(n_env, ENV_MAX);
        i = n_env++;
    }
    snprintf(step_env[i].name, sizeof step_env[i].name, "%s", var);
    snprintf(step_env[i].value, sizeof step_env[i].value, "%s", val);
    return ESPANK_SUCCESS;
}

spank_err_t spank_unsetenv(spank_t sp, const char *var)
{
    (void)sp;
    int i = env_find(var);
    if (i >= 0)
        step_env[i] = step_env[--n_env];
    return ESPANK_SUCCESS;
}

spank_err_t spank_job_control_setenv(spank_t sp, const char *name, const char *value, int overwrite)
{
    (void)sp;
    (void)name;
    (void)value;
    (void)overwrite;
    ck_abort_msg("flas.so does not use spank_job_control_setenv");
    return ESPANK_ERROR;
}

static void log_line(const char *level, const char *fmt, va_list ap)
{
    if (n_logged == LOG_MAX)
        return;
    int n = snprintf(logged[n_logged], sizeof logged[0], "%s: ", level);
    vsnprintf(logged[n_logged] + n, sizeof logged[0] - (size_t)n, fmt, ap);
    n_logged++;
}

#define LOG_FN(fn, level)                                                                                        \
    void fn(const char *fmt, ...)                                                                                \
    {                                                                                                            \
        va_list ap;                                                                                              \
        va_start(ap, fmt);                                                                                       \
        log_line(level, fmt, ap);                                                                                \
        va_end(ap);                                                                                              \
    }
LOG_FN(slurm_error, "error")
LOG_FN(slurm_info, "info")
LOG_FN(slurm_verbose, "verbose")
LOG_FN(slurm_debug, "debug")

/* ======================================================================= the plugin */

static const char *plugin_path = FLAS_SO_PATH;
static void *plugin;
static spank_f *p_init, *p_init_post_opt, *p_user_init, *p_job_prolog, *p_job_epilog;
static int handle_storage;
#define SP ((spank_t)(void *)&handle_storage)

/* The scratch site: <dir>/flas.conf and the staging root <dir>/stage. */
static char dir[128], conf_arg[256];
static char *plugstack_args[1];

static const char *D(const char *rel) { return test_path("%s/%s", dir, rel); }

static void write_conf(void)
{
    char text[1024];
    snprintf(text, sizeof text,
             "# the site of the plugin tests\n"
             "Federation=flas Site=siteA StagingRoot=%s/stage\n"
             "Federation=other Site=siteA StagingRoot=%s/stage\n"
             "Federation=closed Site=siteA StagingRoot=%s/stage AllowUsers=nobody\n"
             "Federation=acct Site=siteA StagingRoot=%s/stage AllowAccounts=proj1\n",
             dir, dir, dir, dir);
    test_write_text(D("flas.conf"), text);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "%s", test_scratch_dir("plugin"));
    write_conf();
    test_mkdir(D("stage"), 0755, 0, 0);
    const char *feds[] = {"flas", "other", "closed", "acct"};
    for (int i = 0; i < 4; i++) {
        test_mkdir(D(test_path("stage/%s", feds[i])), 0755, 0, 0);
        test_mkdir(D(test_path("stage/%s/global", feds[i])), 0755, TEST_UID, TEST_GID);
    }
    snprintf(conf_arg, sizeof conf_arg, "conf=%s/flas.conf", dir);
    plugstack_args[0] = conf_arg;
    /* the environment slurmd gives the prolog and epilog */
    setenv("SLURM_JOB_ID", "77", 1);
    setenv("SLURM_JOB_USER", "nobody", 1);
    setenv("SLURM_JOB_GID", "65534", 1);
    setenv("SLURMD_NODENAME", "n1", 1);
    unsetenv("SLURM_JOB_ACCOUNT");
    unsetenv("SBATCH_ACCOUNT");
    unsetenv("SLURM_ACCOUNT");
    item_job_id = 77;
    item_job_uid = TEST_UID;
    alarm(30);
}

static void teardown(void) { test_remove_tree(dir); }

static void stage_model(const char *fed, long round, const char *content)
{
    char hex[FLAS_SHA256_HEX_LEN + 1], side[160];
    flas_sha256_buffer(content, strlen(content), hex);
    const char *name = test_path("round-%06ld.h5", round);
    test_write_file(D(test_path("stage/%s/global/%s", fed, name)), content, strlen(content), 0644, TEST_UID, TEST_GID);
    snprintf(side, sizeof side, "%s  %s\n", hex, name);
    test_write_file(D(test_path("stage/%s/global/%s.sha256", fed, name)), side, strlen(side), 0644, TEST_UID,
                    TEST_GID);
}

/* slurm_spank_init in context ctx with the plugstack arguments of the scratch site. */
static int init_in(spank_context_t ctx)
{
    context = ctx;
    n_registered = 0;
    return p_init(SP, 1, plugstack_args);
}

static struct spank_option *option(const char *name)
{
    for (int i = 0; i < n_registered; i++)
        if (!strcmp(registered[i].name, name))
            return &registered[i];
    return NULL;
}

/* The option callback, as Slurm calls it for --name=value. */
static int give(const char *name, const char *value, int remote)
{
    struct spank_option *o = option(name);
    ck_assert_msg(o != NULL, "--%s is not registered", name);
    return o->cb(o->val, value, remote);
}

static int logged_has(const char *level, const char *text)
{
    for (int i = 0; i < n_logged; i++)
        if (!strncmp(logged[i], level, strlen(level)) && strstr(logged[i], text))
            return 1;
    return 0;
}

static void dump_log(void)
{
    for (int i = 0; i < n_logged; i++)
        fprintf(stderr, "  log: %s\n", logged[i]);
}

#define assert_logged(level, text)                                                                               \
    do {                                                                                                         \
        if (!logged_has(level, text))                                                                            \
            dump_log();                                                                                          \
        ck_assert_msg(logged_has(level, text), "no %s message containing \"%s\"", level, text);                  \
    } while (0)

static int count_level(const char *level)
{
    int n = 0;
    for (int i = 0; i < n_logged; i++)
        n += !strncmp(logged[i], level, strlen(level));
    return n;
}

static void use_job_option(const char *name, const char *value)
{
    for (int i = 0; i < 4; i++)
        if (!getopt_values[i].name) {
            getopt_values[i].name = name;
            getopt_values[i].value = value;
            return;
        }
    ck_abort_msg("too many options");
}

static void assert_env(const char *name, const char *want)
{
    const char *v = env_get(name);
    ck_assert_msg(v && !strcmp(v, want), "%s=%s, want %s", name, v ? v : "(unset)", want);
}

static void assert_unset(const char *name)
{
    ck_assert_msg(!env_get(name), "%s=%s should not be set", name, env_get(name));
}

/* ======================================================================= tests */

START_TEST(plugin_identity_and_exports)
{
    const char *name = dlsym(plugin, "plugin_name"), *type = dlsym(plugin, "plugin_type");
    ck_assert_ptr_nonnull(name);
    ck_assert_str_eq(name, "flas");
    ck_assert_ptr_nonnull(type);
    ck_assert_str_eq(type, "spank");
    ck_assert_ptr_nonnull(dlsym(plugin, "plugin_version"));
    /* only Slurm's entry points leave the plugin: its internals cannot clash with another plugin's */
    const char *internal[] = {"flas_conf_parse", "flas_prolog", "flas_options", "flas_opt_federation",
                              "safefs_open_trusted_root", "flas_sha256_fd"};
    for (size_t i = 0; i < sizeof internal / sizeof internal[0]; i++) {
        ck_assert_msg(dlsym(plugin, internal[i]) == NULL, "flas.so exports %s", internal[i]);
    }
}
END_TEST

START_TEST(options_registered_where_users_type_them)
{
    const spank_context_t with[] = {S_CTX_ALLOCATOR, S_CTX_LOCAL, S_CTX_REMOTE};
    for (int c = 0; c < 3; c++) {
        ck_assert_int_eq(init_in(with[c]), 0);
        ck_assert_int_eq(n_registered, 2);
        struct spank_option *f = option("federation"), *r = option("federation-round");
        ck_assert_ptr_nonnull(f);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(f->has_arg, 1);
        ck_assert_int_eq(r->has_arg, 1);
        ck_assert_str_eq(f->arginfo, "NAME");
        ck_assert_str_eq(r->arginfo, "N");
        ck_assert_ptr_nonnull(f->cb);
        ck_assert_ptr_nonnull(r->cb);
        /* the help text itself says which "federation" this is */
        ck_assert_msg(strstr(f->usage, "federated-learning") && strstr(f->usage, "unrelated to Slurm"), "%s",
                      f->usage);
    }
    /* slurmd (start-up must stay trivial) and the prolog/epilog register nothing */
    ck_assert_int_eq(init_in(S_CTX_SLURMD), 0);
    ck_assert_int_eq(n_registered, 0);
    ck_assert_int_eq(init_in(S_CTX_JOB_SCRIPT), 0);
    ck_assert_int_eq(n_registered, 0);
    ck_assert_int_eq(count_level("error"), 0);
}
END_TEST

START_TEST(option_callbacks_accept_valid_and_refuse_invalid_values)
{
    ck_assert_int_eq(init_in(S_CTX_REMOTE), 0);
    const char *names[] = {"flas", "F_2-x", "0"};
    for (int i = 0; i < 3; i++)
        ck_assert_msg(give("federation", names[i], 1) == 0, "--federation=%s refused", names[i]);
    const char *bad_names[] = {"-x", "--wrap", "a/b", "a.b", "", "x y"};
    for (int i = 0; i < 6; i++) {
        n_logged = 0;
        ck_assert_msg(give("federation", bad_names[i], 1) == -1, "--federation=%s accepted", bad_names[i]);
        assert_logged("error", test_path("flas: --federation=%s: a federation name is 1-63 characters of "
                                         "[A-Za-z0-9_-] and does not start with '-'", bad_names[i]));
    }
    ck_assert_int_eq(give("federation", NULL, 1), -1);
    const char *rounds[] = {"0", "12", "000012", "999999"};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(give("federation-round", rounds[i], 1) == 0, "--federation-round=%s refused", rounds[i]);
    const char *bad_rounds[] = {"abc", "-1", "1000000", "", "1.5", "+3", "3 "};
    for (int i = 0; i < 7; i++) {
        n_logged = 0;
        ck_assert_msg(give("federation-round", bad_rounds[i], 1) == -1, "--federation-round=%s accepted",
                      bad_rounds[i]);
        assert_logged("error", test_path("flas: --federation-round=%s: a round is a whole number from 0 to 999999",
                                         bad_rounds[i]));
    }
    ck_assert_int_eq(give("federation-round", NULL, 1), -1);
}
END_TEST

START_TEST(option_callbacks_are_idempotent_and_the_last_value_counts)
{
    stage_model("flas", 2, "two");
    ck_assert_int_eq(init_in(S_CTX_ALLOCATOR), 0);
    /* the same value twice (environment and command line; hetjob components) */
    ck_assert_int_eq(give("federation", "flas", 0), 0);
    ck_assert_int_eq(give("federation", "flas", 0), 0);
    ck_assert_int_eq(give("federation-round", "2", 0), 0);
    ck_assert_int_eq(give("federation-round", "2", 0), 0);
    ck_assert_int_eq(p_init_post_opt(SP, 1, plugstack_args), 0);
    /* a round that is not staged is refused by its own callback; the previous value stays */
    n_logged = 0;
    ck_assert_int_eq(give("federation-round", "5", 0), -1);
    assert_logged("error", "flas: round 5 of federation 'flas' is not staged at site 'siteA'");
    ck_assert_int_eq(p_init_post_opt(SP, 1, plugstack_args), 0);
    /* the same for a federation without that round */
    n_logged = 0;
    ck_assert_int_eq(give("federation", "other", 0), -1);
    assert_logged("error", "flas: round 2 of federation 'other' is not staged at site 'siteA'");
    ck_assert_int_eq(give("federation", "flas", 0), 0);
    ck_assert_int_eq(p_init_post_opt(SP, 1, plugstack_args), 0);
    /* a refused value leaves the previous one in place */
    ck_assert_int_eq(give("federation", "-bad", 0), -1);
    ck_assert_int_eq(p_init_post_opt(SP, 1, plugstack_args), 0);
}
END_TEST

START_TEST(bad_plugstack_arguments_fail_init_with_a_message)
{
    char *unknown[] = {conf_arg, "verbose"};
    const spank_context_t all[] = {S_CTX_ALLOCATOR, S_CTX_LOCAL, S_CTX_REMOTE, S_CTX_SLURMD};
    for (int c = 0; c < 4; c++) {
        context = all[c];
        n_logged = 0;
        n_registered = 0;
        ck_assert_int_eq(p_init(SP, 2, unknown), -1);
        assert_logged("error", "flas: plugstack argument 'verbose': unknown (known: conf=/path/to/flas.conf)");
    }
    char *relative[] = {"conf=flas.conf"};
    context = S_CTX_ALLOCATOR;
    n_logged = 0;
    ck_assert_int_eq(p_init(SP, 1, relative), -1);
    assert_logged("error", "flas: plugstack argument 'conf=flas.conf': conf= must be given once, as an absolute path");
    /* and in the prolog/epilog, where there is no init */
    context = S_CTX_JOB_SCRIPT;
    use_job_option("federation", "flas");
    n_logged = 0;
    ck_assert_int_eq(p_job_prolog(SP, 2, unknown), -1);
    assert_logged("error", "flas: plugstack argument 'verbose'");
}
END_TEST

START_TEST(submit_side_refuses_unknown_and_closed_federations)
{
    stage_model("closed", 1, "one");
    stage_model("flas", 1, "one");
    stage_model("acct", 1, "one");
    const spank_context_t submit[] = {S_CTX_ALLOCATOR, S_CTX_LOCAL};
    for (int c = 0; c < 2; c++) {
        ck_assert_int_eq(init_in(submit[c]), 0);
        n_logged = 0;
        ck_assert_int_eq(give("federation", "nosuch", 0), -1);
        assert_logged("error", test_path("flas: federation 'nosuch' is not defined at this site (%s/flas.conf)", dir));
        n_logged = 0;
        ck_assert_int_eq(give("federation", "closed", 0), -1); /* this test runs as root; 'closed' admits nobody */
        assert_logged("error", "flas: user 'root' may not use federation 'closed' (AllowUsers/AllowGroups in flas.conf)");
        ck_assert_int_eq(give("federation", "flas", 0), 0);
    }
    /* the account chosen in the environment (SPANK cannot see sbatch -A) */
    setenv("SBATCH_ACCOUNT", "proj2", 1);
    n_logged = 0;
    ck_assert_int_eq(give("federation", "acct", 0), -1);
    assert_logged("error", "flas: account 'proj2' may not use federation 'acct' (AllowAccounts in flas.conf)");
    setenv("SBATCH_ACCOUNT", "proj1", 1);
    ck_assert_int_eq(give("federation", "acct", 0), 0);
    /* a broken or missing flas.conf refuses every federation, with the file's own message */
    test_write_text(D("flas.conf"), "Federation=flas Site=siteA\n");
    n_logged = 0;
    ck_assert_int_eq(give("federation", "flas", 0), -1);
    assert_logged("error", test_path("flas: %s/flas.conf:1: federation 'flas' has no StagingRoot=", dir));
    unlink(D("flas.conf"));
    n_logged = 0;
    ck_assert_int_eq(give("federation", "flas", 0), -1);
    assert_logged("error", test_path("flas: %s/flas.conf: No such file or directory", dir));
    /* inside the job (remote) the value was already checked at submission: stored, not re-checked */
    ck_assert_int_eq(init_in(S_CTX_REMOTE), 0);
    ck_assert_int_eq(give("federation", "nosuch", 1), 0);
}
END_TEST

START_TEST(init_post_opt_refuses_unstaged_rounds_and_a_round_alone)
{
    stage_model("flas", 1, "one");
    ck_assert_int_eq(init_in(S_CTX_ALLOCATOR), 0);
    ck_assert_int_eq(p_init_post_opt(SP, 1, plugstack_args), 0); /* no options: not a federation job */
    ck_assert_int_eq(n_logged, 0);
    /* a round before its federation is not checked yet, but alone it is refused after all options */
    ck_assert_int_eq(give("federation-round", "1", 0), 0);
    ck_assert_int_eq(p_init_post_opt(SP, 1, plugstack_args), -1);
    assert_logged("error", "flas: --federation-round needs --federation=NAME");
    n_logged = 0;
    ck_assert_int_eq(give("federation", "flas", 0), 0); /* checks round 1 of flas */
    assert_logged("verbose", "flas: federation flas, site siteA, round 1");
    ck_assert_int_eq(p_init_post_opt(SP, 1, plugstack_args), 0);
    ck_assert_int_eq(count_level("info"), 0); /* nothing printed on the user's terminal */
    n_logged = 0;
    ck_assert_int_eq(give("federation-round", "9", 0), -1);
    assert_logged("error", "flas: round 9 of federation 'flas' is not staged at site 'siteA' (no complete "
                           "round-000009.h5)");
    /* a federation without the round asked for (round 1 is still the option's value) */
    n_logged = 0;
    ck_assert_int_eq(give("federation", "other", 0), -1);
    assert_logged("error", "flas: round 1 of federation 'other' is not staged at site 'siteA'");
    /* srun is checked the same way */
    ck_assert_int_eq(init_in(S_CTX_LOCAL), 0);
    ck_assert_int_eq(give("federation", "flas", 0), 0);
    ck_assert_int_eq(give("federation-round", "9", 0), -1);
    /* in the job's steps the submission was already accepted */
    ck_assert_int_eq(init_in(S_CTX_REMOTE), 0);
    ck_assert_int_eq(give("federation-round", "9", 1), 0);
    ck_assert_int_eq(p_init_post_opt(SP, 1, plugstack_args), 0);
}
END_TEST

/* The prolog through the plugin (job script context, as root), for job 77 of user nobody. */
static void run_prolog(const char *federation)
{
    memset(getopt_values, 0, sizeof getopt_values);
    use_job_option("federation", federation);
    context = S_CTX_JOB_SCRIPT;
    n_logged = 0;
    ck_assert_int_eq(p_job_prolog(SP, 1, plugstack_args), 0);
    assert_logged("info", test_path("flas: prolog of job 77 (federation %s) done", federation));
    memset(getopt_values, 0, sizeof getopt_values);
}

START_TEST(user_init_exports_flas_env_from_the_prolog_record)
{
    stage_model("flas", 1, "one");
    run_prolog("flas");
    ck_assert_int_eq(init_in(S_CTX_REMOTE), 0);
    ck_assert_int_eq(give("federation", "flas", 1), 0);
    spank_setenv(SP, "FLAS_ERROR", "stale, from the parent step", 1);
    spank_setenv(SP, "PATH", "/usr/bin", 1);
    n_logged = 0;
    ck_assert_int_eq(p_user_init(SP, 1, plugstack_args), 0);
    char sha[FLAS_SHA256_HEX_LEN + 1];
    flas_sha256_buffer("one", 3, sha);
    assert_env("FLAS_FEDERATION", "flas");
    assert_env("FLAS_SITE", "siteA");
    assert_env("FLAS_JOB_ID", "77");
    assert_env("FLAS_ROUND", "1");
    assert_env("FLAS_STAGE_DIR", D("stage/flas"));
    assert_env("FLAS_GLOBAL_CHECKPOINT", D("stage/flas/global/round-000001.h5"));
    assert_env("FLAS_GLOBAL_SHA256", sha);
    assert_env("FLAS_OUTPUT_DIR", D("stage/flas/jobs/77"));
    assert_env("FLAS_OUTPUT_CHECKPOINT", D("stage/flas/jobs/77/local.h5"));
    assert_unset("FLAS_ERROR");
    assert_env("PATH", "/usr/bin"); /* only FLAS_* is touched */
    ck_assert_int_eq(n_env, 10);
    ck_assert_int_eq(count_level("error"), 0);
}
END_TEST

START_TEST(user_init_unsets_inherited_flas_vars_that_do_not_apply)
{
    stage_model("flas", 1, "one");
    stage_model("other", 4, "four");
    run_prolog("flas");
    /* the batch step's environment, inherited by an inner `srun --federation=other` */
    ck_assert_int_eq(init_in(S_CTX_REMOTE), 0);
    ck_assert_int_eq(give("federation", "flas", 1), 0);
    ck_assert_int_eq(p_user_init(SP, 1, plugstack_args), 0);
    ck_assert_ptr_nonnull(env_get("FLAS_OUTPUT_CHECKPOINT"));
    ck_assert_int_eq(give("federation", "other", 1), 0);
    n_logged = 0;
    ck_assert_int_eq(p_user_init(SP, 1, plugstack_args), 0);
    assert_env("FLAS_FEDERATION", "other");
    assert_env("FLAS_ROUND", "4");
    assert_env("FLAS_ERROR", "no prolog record for job 77 in federation 'other'");
    assert_unset("FLAS_OUTPUT_CHECKPOINT");
    assert_unset("FLAS_OUTPUT_DIR");
    assert_unset("FLAS_GLOBAL_SHA256");
    assert_logged("error", "flas: federation other: no prolog record for job 77 in federation 'other' "
                           "(flas-train will refuse to train)");
}
END_TEST

START_TEST(user_init_for_a_federation_gone_from_flas_conf)
{
    stage_model("flas", 1, "one");
    run_prolog("flas");
    ck_assert_int_eq(init_in(S_CTX_REMOTE), 0);
    ck_assert_int_eq(give("federation", "flas", 1), 0);
    ck_assert_int_eq(p_user_init(SP, 1, plugstack_args), 0);
    /* the admin removed the federation while the job ran; a step names it */
    ck_assert_int_eq(give("federation", "gone", 1), 0);
    n_logged = 0;
    ck_assert_int_eq(p_user_init(SP, 1, plugstack_args), 0); /* never fail a step for this */
    assert_env("FLAS_FEDERATION", "gone");
    assert_env("FLAS_ERROR", test_path("federation 'gone' is not defined at this site (%s/flas.conf)", dir));
    /* regression: the parent step's paths once stayed set beside FLAS_ERROR */
    const char *stale[] = {"FLAS_SITE", "FLAS_STAGE_DIR", "FLAS_JOB_ID", "FLAS_ROUND", "FLAS_GLOBAL_CHECKPOINT",
                           "FLAS_GLOBAL_SHA256", "FLAS_OUTPUT_DIR", "FLAS_OUTPUT_CHECKPOINT"};
    for (size_t i = 0; i < sizeof stale / sizeof stale[0]; i++)
        assert_unset(stale[i]);
    ck_assert_int_eq(n_env, 2);
    assert_logged("error", "flas: federation 'gone' is not defined at this site");
}
END_TEST

START_TEST(user_init_finds_the_federation_from_the_record_alone)
{
    /* --export=NONE: the step may not see the option; the prolog's record still names the federation */
    stage_model("other", 2, "two");
    run_prolog("other");
    ck_assert_int_eq(init_in(S_CTX_REMOTE), 0);
    ck_assert_int_eq(p_user_init(SP, 1, plugstack_args), 0);
    assert_env("FLAS_FEDERATION", "other");
    assert_env("FLAS_ROUND", "2");
    assert_env("FLAS_OUTPUT_CHECKPOINT", D("stage/other/jobs/77/local.h5"));
    assert_unset("FLAS_ERROR");
}
END_TEST

START_TEST(user_init_leaves_other_jobs_alone)
{
    stage_model("flas", 1, "one");
    ck_assert_int_eq(init_in(S_CTX_REMOTE), 0);
    spank_setenv(SP, "HOME", "/home/x", 1);
    ck_assert_int_eq(p_user_init(SP, 1, plugstack_args), 0); /* job 77 has no option and no record */
    ck_assert_int_eq(n_env, 1);
    ck_assert_int_eq(n_logged, 0);
    /* no job id available: nothing to do */
    items_available = 0;
    ck_assert_int_eq(give("federation", "flas", 1), 0);
    ck_assert_int_eq(p_user_init(SP, 1, plugstack_args), 0);
    ck_assert_int_eq(n_env, 1);
}
END_TEST

START_TEST(job_prolog_and_epilog_ignore_jobs_without_federation)
{
    stage_model("flas", 1, "one");
    context = S_CTX_JOB_SCRIPT;
    ck_assert_int_eq(p_job_prolog(SP, 1, plugstack_args), 0);
    ck_assert_int_eq(p_job_epilog(SP, 1, plugstack_args), 0);
    ck_assert_int_eq(n_logged, 0);
    const char *feds[] = {"flas", "other", "closed", "acct"};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(test_count_entries(D(test_path("stage/%s", feds[i])), ""), 1); /* global/ only */
    }
    /* not even a broken flas.conf matters to them */
    unlink(D("flas.conf"));
    ck_assert_int_eq(p_job_prolog(SP, 1, plugstack_args), 0);
    ck_assert_int_eq(p_job_epilog(SP, 1, plugstack_args), 0);
}
END_TEST

START_TEST(job_prolog_and_epilog_publish_through_the_plugin)
{
    stage_model("flas", 1, "one");
    run_prolog("flas");
    struct stat st;
    ck_assert_int_eq(stat(D("stage/flas/jobs/77"), &st), 0);
    ck_assert_int_eq(st.st_uid, TEST_UID);
    test_write_file(D("stage/flas/jobs/77/local.h5"), "ckpt", 4, 0644, TEST_UID, TEST_GID);
    setenv("SLURM_JOB_EXIT_CODE2", "3:0", 1);
    use_job_option("federation", "flas");
    context = S_CTX_JOB_SCRIPT;
    n_logged = 0;
    ck_assert_int_eq(p_job_epilog(SP, 1, plugstack_args), 0);
    assert_logged("info", "flas: epilog of job 77 (federation flas) done");
    test_json m;
    char *text = test_read_file(D("stage/flas/outbox/round-000001/siteA-job77.manifest.json"));
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(test_json_parse(text, &m), 0);
    free(text);
    ck_assert_str_eq(test_json_string(&m, "job_state"), "FAILED");
    ck_assert_int_eq(test_json_number(&m, "exit_code"), 3);
    ck_assert_str_eq(test_json_string(&m, "user"), "nobody");
    ck_assert_int_eq(test_json_number(&m, "uid"), 65534);
    ck_assert_str_eq(test_json_string(&m, "node"), "n1");
    ck_assert_str_eq(test_json_string(&m, "checkpoint"), "siteA-job77.h5");
}
END_TEST

START_TEST(job_prolog_records_user_mistakes_and_fails_only_for_site_faults)
{
    stage_model("acct", 1, "one");
    /* the job's real account is not admitted: recorded for the job, the prolog succeeds */
    setenv("SLURM_JOB_ACCOUNT", "proj2", 1);
    run_prolog("acct");
    char *rec = test_read_file(D("stage/acct/state/77"));
    ck_assert_ptr_nonnull(rec);
    ck_assert_msg(strstr(rec, "error=account 'proj2' may not use federation 'acct'") != NULL, "%s", rec);
    free(rec);
    context = S_CTX_JOB_SCRIPT;
    /* a federation removed from flas.conf since submission: logged, the job runs */
    use_job_option("federation", "gone");
    n_logged = 0;
    ck_assert_int_eq(p_job_prolog(SP, 1, plugstack_args), 0);
    assert_logged("error", test_path("flas: prolog: federation 'gone' is no longer defined in %s/flas.conf", dir));
    memset(getopt_values, 0, sizeof getopt_values);
    use_job_option("federation", "flas");
    /* the job's identity missing from the environment */
    unsetenv("SLURM_JOB_ID");
    n_logged = 0;
    ck_assert_int_eq(p_job_prolog(SP, 1, plugstack_args), 0);
    assert_logged("error", "flas: prolog: job identity missing from the environment");
    setenv("SLURM_JOB_ID", "77", 1);
    /* site faults: a staging root others can write, an unreadable flas.conf */
    ck_assert_int_eq(chmod(D("stage"), 0777), 0);
    n_logged = 0;
    ck_assert_int_eq(p_job_prolog(SP, 1, plugstack_args), -1);
    assert_logged("error", "flas: prolog of job 77: site fault: StagingRoot of federation 'flas'");
    n_logged = 0;
    ck_assert_int_eq(p_job_epilog(SP, 1, plugstack_args), -1);
    assert_logged("error", "flas: epilog of job 77: site fault: StagingRoot of federation 'flas'");
    unlink(D("flas.conf"));
    n_logged = 0;
    ck_assert_int_eq(p_job_prolog(SP, 1, plugstack_args), -1);
    assert_logged("error", test_path("flas: prolog: %s/flas.conf: No such file or directory", dir));
}
END_TEST

int main(int argc, char **argv)
{
    if (argc > 1)
        plugin_path = argv[1];
    plugin = dlopen(plugin_path, RTLD_NOW | RTLD_LOCAL);
    if (!plugin) {
        fprintf(stderr, "test_spank_plugin: cannot load %s: %s\n", plugin_path, dlerror());
        return EXIT_FAILURE;
    }
    struct {
        spank_f **fn;
        const char *name;
    } entry[] = {{&p_init, "slurm_spank_init"},
                 {&p_init_post_opt, "slurm_spank_init_post_opt"},
                 {&p_user_init, "slurm_spank_user_init"},
                 {&p_job_prolog, "slurm_spank_job_prolog"},
                 {&p_job_epilog, "slurm_spank_job_epilog"}};
    for (size_t i = 0; i < sizeof entry / sizeof entry[0]; i++) {
        *entry[i].fn = (spank_f *)dlsym(plugin, entry[i].name);
        if (!*entry[i].fn) {
            fprintf(stderr, "test_spank_plugin: %s does not define %s\n", plugin_path, entry[i].name);
            return EXIT_FAILURE;
        }
    }

    Suite *s = suite_create("spank_plugin");
    TCase *t = tcase_create("submit");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, plugin_identity_and_exports);
    tcase_add_test(t, options_registered_where_users_type_them);
    tcase_add_test(t, option_callbacks_accept_valid_and_refuse_invalid_values);
    tcase_add_test(t, option_callbacks_are_idempotent_and_the_last_value_counts);
    tcase_add_test(t, bad_plugstack_arguments_fail_init_with_a_message);
    tcase_add_test(t, submit_side_refuses_unknown_and_closed_federations);
    tcase_add_test(t, init_post_opt_refuses_unstaged_rounds_and_a_round_alone);
    suite_add_tcase(s, t);

    t = tcase_create("job");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, user_init_exports_flas_env_from_the_prolog_record);
    tcase_add_test(t, user_init_unsets_inherited_flas_vars_that_do_not_apply);
    tcase_add_test(t, user_init_for_a_federation_gone_from_flas_conf);
    tcase_add_test(t, user_init_finds_the_federation_from_the_record_alone);
    tcase_add_test(t, user_init_leaves_other_jobs_alone);
    tcase_add_test(t, job_prolog_and_epilog_ignore_jobs_without_federation);
    tcase_add_test(t, job_prolog_and_epilog_publish_through_the_plugin);
    tcase_add_test(t, job_prolog_records_user_mistakes_and_fails_only_for_site_faults);
    suite_add_tcase(s, t);

    SRunner *r = srunner_create(s);
    /* the plugin keeps per-process state, as in Slurm: every test gets a fresh copy in its own process */
    srunner_set_fork_status(r, CK_FORK);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
