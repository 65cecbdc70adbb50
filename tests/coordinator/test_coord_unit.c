/* coordinator.conf parsing (strict, file:line errors) and the round journal (atomic save, exact reload,
 * damaged journals refused). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/coordinator.h"

static const char *good =
    "# a federation of two sites\n"
    "Federation=flas WorkDir=/var/lib/flas/coord InitialGlobal=/data/global0.h5 KnownHosts=/etc/flas/known_hosts\n"
    "Rounds=3 MinSites=1 Strategy=diloco ServerLR=0.7 Sync=begin BeginDelay=30 Signal=USR1@120\n"
    "Site=leonardo Host=login.leonardo.example Port=2222 User=fl Identity=/keys/leo StagingRoot=/stage\n"
    "  Script=/home/fl/flas-train.sbatch ScriptArgs=/data/it,--steps=100 Partition=boost Account=proj Time=60\n"
    "Site=karolina Host=10.0.0.12 User=fl StagingRoot=/scratch/stage Script=/home/fl/job.sh Jump=fl@gw.example:22\n";

START_TEST(parses_a_description)
{
    static flas_coord_conf c;
    char err[512] = "";
    ck_assert_msg(flas_coord_conf_parse("t.conf", good, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(c.federation, "flas");
    ck_assert_int_eq(c.rounds, 3);
    ck_assert_int_eq(c.min_sites, 1);
    ck_assert_str_eq(c.strategy, "diloco");
    ck_assert(c.server_lr > 0.69 && c.server_lr < 0.71);
    ck_assert(c.server_momentum < 0); /* not given: the strategy's default */
    ck_assert_int_eq(c.sync, FLAS_SYNC_BEGIN);
    ck_assert_int_eq(c.n_sites, 2);
    ck_assert_str_eq(c.site[0].name, "leonardo");
    ck_assert_int_eq(c.site[0].ssh.port, 2222);
    ck_assert_str_eq(c.site[0].ssh.known_hosts, "/etc/flas/known_hosts");
    ck_assert_int_eq(c.site[0].n_args, 2);
    ck_assert_str_eq(c.site[0].args[1], "--steps=100");
    ck_assert_int_eq(c.site[0].time_min, 60);
    ck_assert_str_eq(c.site[1].ssh.jump_host, "gw.example");
    ck_assert_str_eq(c.site[1].ssh.jump_user, "fl");
    ck_assert_int_eq(c.site[1].ssh.jump_port, 22);
}
END_TEST

static void refused(const char *text, const char *needle)
{
    static flas_coord_conf c;
    char err[512] = "";
    ck_assert_int_eq(flas_coord_conf_parse("t.conf", text, &c, err, sizeof err), -1);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

#define HEAD "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1\n"
#define SITE "Site=a Host=h User=u StagingRoot=/s Script=/j.sh\n"

START_TEST(refuses_bad_descriptions_with_file_and_line)
{
    refused(HEAD SITE "Site=b Host=h User=u StagingRoot=/s Script=/j.sh Colour=red\n", "t.conf:3: unknown key 'Colour'");
    refused(HEAD "Site=a Host=h Host=i User=u StagingRoot=/s Script=/j.sh\n", "t.conf:2: Host given twice");
    refused(HEAD SITE SITE, "site 'a' is described twice");
    refused(HEAD "Site=a Host=h User=u StagingRoot=relative Script=/j.sh\n", "t.conf:2: StagingRoot=relative");
    refused(HEAD "Site=a Host=h;rm User=u StagingRoot=/s Script=/j.sh\n", "t.conf:2: Host=h;rm");
    refused(HEAD "Site=a Host=h User=u StagingRoot=/s Script=/j.sh ScriptArgs=$(id)\n", "ScriptArgs");
    refused(HEAD "Site=a Host=h User=u StagingRoot=/s\n", "site 'a' has no Script=");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=0\n" SITE, "t.conf:1: Rounds=0");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 Rounds=2\n" SITE, "KnownHosts= is required");
    refused(HEAD, "Site= is required");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 MinSites=2\n" SITE, "MinSites=2");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 Sync=reservation\n" SITE,
            "Sync=reservation needs Reservation=NAME");
    /* the name is never a format: only one %d may be in it */
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 Sync=reservation Reservation=r-%s-%d\n"
            SITE, "at most one %d");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 Sync=reservation Reservation=r%d%d\n"
            SITE, "at most one %d");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 Sync=reservation Reservation=r%\n"
            SITE, "at most one %d");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 Sync=sometimes\n" SITE, "Sync=sometimes");
    refused(SITE HEAD, "t.conf:1: Site= before Federation=");
    refused(HEAD "Site=a Port=99999 Host=h User=u StagingRoot=/s Script=/j.sh\n", "Port=99999");
    refused(HEAD "Site=-a Host=h User=u StagingRoot=/s Script=/j.sh\n", "Site=-a");
}
END_TEST

START_TEST(reservation_names_per_round)
{
    static flas_coord_conf c;
    char err[512] = "", name[64];
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 "
                                        "Sync=reservation Reservation=flas-f-r%d-gpu\n" SITE, &c, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(flas_coord_reservation_name(&c, 12, name, sizeof name), 0);
    ck_assert_str_eq(name, "flas-f-r12-gpu");
    ck_assert_int_eq(flas_coord_reservation_name(&c, 12, name, 10), -1); /* does not fit: refused, not cut */
    /* a repeating reservation (Flags=DAILY) serves every round under one name */
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 "
                                        "Sync=reservation Reservation=flas-daily\n" SITE, &c, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(flas_coord_reservation_name(&c, 3, name, sizeof name), 0);
    ck_assert_str_eq(name, "flas-daily");
}
END_TEST

START_TEST(journal_round_trips_and_refuses_damage)
{
    char dir[] = "/tmp/flas-journal-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/journal", dir);
    static flas_journal j, back;
    memset(&j, 0, sizeof j);
    snprintf(j.federation, sizeof j.federation, "flas");
    j.round = 7;
    j.phase = FLAS_PHASE_TRAINING;
    snprintf(j.global_sha256, sizeof j.global_sha256, "%064d", 0);
    j.begin_unix = 1790000000;
    snprintf(j.failure, sizeof j.failure, "line one\nline two");
    j.n_sites = 2;
    snprintf(j.site_name[0], sizeof j.site_name[0], "leonardo");
    snprintf(j.site_name[1], sizeof j.site_name[1], "karolina");
    j.site[0].state = FLAS_SITE_SUBMITTED;
    j.site[0].attempt = 2;
    j.site[0].job = 4242;
    snprintf(j.site[0].job_state, sizeof j.site[0].job_state, "RUNNING");
    j.site[1].state = FLAS_SITE_DROPPED;
    snprintf(j.site[1].note, sizeof j.site[1].note, "job 9 ended CANCELLED");
    ck_assert_msg(flas_journal_save(path, &j, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(flas_journal_load(path, &back, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(back.round, 7);
    ck_assert_int_eq(back.phase, FLAS_PHASE_TRAINING);
    ck_assert_int_eq(back.begin_unix, 1790000000);
    ck_assert_str_eq(back.failure, "line one line two"); /* free text stays on its line */
    ck_assert_int_eq(back.site[0].state, FLAS_SITE_SUBMITTED);
    ck_assert_int_eq(back.site[0].job, 4242);
    ck_assert_int_eq(back.site[0].attempt, 2);
    ck_assert_str_eq(back.site[0].job_state, "RUNNING");
    ck_assert_str_eq(back.site_name[1], "karolina");
    ck_assert_str_eq(back.site[1].note, "job 9 ended CANCELLED");
    /* no temporary file left beside it */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "test $(ls -a %s | wc -l) -eq 3", dir);
    ck_assert_int_eq(system(cmd), 0);
    /* damaged: an unknown state, then a truncated line */
    FILE *f = fopen(path, "a");
    fputs("site.0.state=dancing\n", f);
    fclose(f);
    ck_assert_int_eq(flas_journal_load(path, &back, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "the journal is damaged"));
    f = fopen(path, "w");
    fputs("format=flas-coordinator-journal\nversion=2\n", f);
    fclose(f);
    ck_assert_int_eq(flas_journal_load(path, &back, err, sizeof err), -1);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(command_limit_follows_the_deadline)
{
    static flas_coord_conf c;
    char err[512] = "";
    ck_assert_msg(flas_coord_conf_parse("t.conf", HEAD SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.command_timeout_s, 120); /* the default */
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 "
                                        "RoundDeadline=600 CommandTimeout=30\n" SITE, &c, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(c.command_timeout_s, 30);
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 CommandTimeout=2\n" SITE,
            "t.conf:1: CommandTimeout=2");
    /* round started at t=1000 with a 600 s deadline (t=1600): CommandTimeout while there is time, then
     * what is left, never under the floor (the scancel at the deadline still runs) */
    ck_assert(flas_coord_command_limit(&c, 1000, 1000) == 30);
    ck_assert(flas_coord_command_limit(&c, 1000, 1580) == 20);
    ck_assert(flas_coord_command_limit(&c, 1000, 1598) == FLAS_COORD_MIN_COMMAND_S);
    ck_assert(flas_coord_command_limit(&c, 1000, 5000) == FLAS_COORD_MIN_COMMAND_S);
}
END_TEST

START_TEST(update_bounds_are_parsed)
{
    static flas_coord_conf c;
    char err[512] = "";
    ck_assert_msg(flas_coord_conf_parse("t.conf", HEAD SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert(c.max_update_norm == 0 && c.max_update_ratio == 0); /* off by default */
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 "
                                        "MaxUpdateNorm=12.5 MaxUpdateRatio=10\n" SITE, &c, err, sizeof err) == 0,
                  "%s", err);
    ck_assert(c.max_update_norm == 12.5 && c.max_update_ratio == 10);
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 MaxUpdateRatio=0.5\n" SITE,
            "MaxUpdateRatio=0.5: must be 0 (no bound) or at least 1");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 MaxUpdateNorm=-1\n" SITE,
            "t.conf:1: MaxUpdateNorm=-1");
}
END_TEST

START_TEST(adopts_only_the_login_users_job)
{
    int others = -1;
    /* another user's job with this run's job name is listed first: never adopted */
    ck_assert_int_eq(flas_coord_pick_own_job("41 mallory\n42 fl\n", "fl", &others), 42);
    ck_assert_int_eq(others, 1);
    ck_assert_int_eq(flas_coord_pick_own_job("41 mallory\n", "fl", &others), 0);
    ck_assert_int_eq(others, 1);
    ck_assert_int_eq(flas_coord_pick_own_job("", "fl", &others), 0);
    ck_assert_int_eq(others, 0);
    /* a name that only starts like the user's, a missing owner, extra fields: not the user's job */
    ck_assert_int_eq(flas_coord_pick_own_job("7 flx\n8\n9 fl extra\n", "fl", NULL), 0);
    ck_assert_int_eq(flas_coord_pick_own_job("  43 fl  \n", "fl", NULL), 43);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coordinator");
    TCase *tc = tcase_create("unit");
    tcase_add_test(tc, parses_a_description);
    tcase_add_test(tc, refuses_bad_descriptions_with_file_and_line);
    tcase_add_test(tc, reservation_names_per_round);
    tcase_add_test(tc, journal_round_trips_and_refuses_damage);
    tcase_add_test(tc, command_limit_follows_the_deadline);
    tcase_add_test(tc, update_bounds_are_parsed);
    tcase_add_test(tc, adopts_only_the_login_users_job);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
