/* coordinator.conf parsing (strict, file:line errors) and the round journal (atomic save, exact reload,
 * damaged journals refused). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/aggregate.h"
#include "flas/coordinator.h"
#include "flas/dp.h"
#include "coord_internal.h"

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
    ck_assert_str_eq(c.site[0].ssh.certificate, ""); /* Identity-cert.pub when it exists (flas_ssh_cert_path) */
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
    refused(HEAD "Site=a Host=h User=u StagingRoot=/s Script=/j.sh Certificate=/k-cert.pub\n",
            "t.conf:2: site 'a' has Certificate= but no Identity= (the key it certifies)");
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

START_TEST(dp_keys_are_parsed)
{
    static flas_coord_conf c;
    char err[512] = "";
    ck_assert_msg(flas_coord_conf_parse("t.conf", HEAD SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert(c.dp_clip == 0 && c.dp_noise == 0); /* off by default */
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=4 "
                                        "DpClip=0.5 DpNoise=1.1 DpDelta=1e-5\n" SITE, &c, err, sizeof err) == 0,
                  "%s", err);
    ck_assert(c.dp_clip == 0.5 && c.dp_noise == 1.1 && c.dp_delta == 1e-5);
    /* a target epsilon over the run sets the noise: 4 rounds spend exactly it */
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=4 "
                                        "DpClip=1 DpEpsilon=8\n" SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert(c.dp_delta == 1e-6 && c.dp_noise > 0);
    ck_assert(fabs(flas_dp_epsilon(4 * flas_dp_round_rho(c.dp_noise), 1e-6, NULL) - 8) < 1e-6);
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=4 "
                                        "DpClip=inf\n" SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert(isinf(c.dp_clip));
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 DpNoise=1\n" SITE, "need DpClip=");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 DpClip=1 DpNoise=1 DpEpsilon=3\n" SITE,
            "not both");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 DpClip=-1\n" SITE,
            "DpClip=-1: expected a positive number or inf");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 DpClip=nan\n" SITE, "DpClip=nan");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 DpClip=inf DpNoise=1\n" SITE,
            "cannot carry noise");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 DpClip=1 DpDelta=2\n" SITE,
            "DpDelta=2 must be below 1");
}
END_TEST

/* Every state squeue can print (Slurm 22.05, squeue(1) JOB STATE CODES), and what the coordinator does. */
START_TEST(every_slurm_job_state_is_mapped)
{
    static const struct { const char *state; coord_job_action act; } map[] = {
        {"COMPLETED", COORD_JOB_FETCH},      {"TIMEOUT", COORD_JOB_FETCH},        {"UNKNOWN", COORD_JOB_FETCH},
        {"PREEMPTED", COORD_JOB_SALVAGE},    {"NODE_FAIL", COORD_JOB_SALVAGE},    {"BOOT_FAIL", COORD_JOB_RETRY},
        {"FAILED", COORD_JOB_LOST},          {"CANCELLED", COORD_JOB_LOST},       {"OUT_OF_MEMORY", COORD_JOB_LOST},
        {"DEADLINE", COORD_JOB_LOST},        {"SPECIAL_EXIT", COORD_JOB_LOST},    {"REVOKED", COORD_JOB_LOST},
        {"PENDING", COORD_JOB_WAIT},         {"CONFIGURING", COORD_JOB_WAIT},     {"RUNNING", COORD_JOB_WAIT},
        {"COMPLETING", COORD_JOB_WAIT},      {"SUSPENDED", COORD_JOB_WAIT},       {"STOPPED", COORD_JOB_WAIT},
        {"SIGNALING", COORD_JOB_WAIT},       {"STAGE_OUT", COORD_JOB_WAIT},       {"RESIZING", COORD_JOB_WAIT},
        {"REQUEUED", COORD_JOB_WAIT},        {"REQUEUE_HOLD", COORD_JOB_WAIT},    {"REQUEUE_FED", COORD_JOB_WAIT},
        {"RESV_DEL_HOLD", COORD_JOB_WAIT},   {"SUBMITTED", COORD_JOB_WAIT},       {"A_STATE_TO_COME", COORD_JOB_WAIT},
    };
    for (size_t n = 0; n < sizeof map / sizeof map[0]; n++)
        ck_assert_msg(coord_state_action(map[n].state) == map[n].act, "%s -> %d, expected %d", map[n].state,
                      (int)coord_state_action(map[n].state), (int)map[n].act);
}
END_TEST

/* scontrol create reservation's answers, as Slurm 22.05 gives them on the test bed */
START_TEST(booking_reply_is_read)
{
    char why[256];
    ck_assert_int_eq(coord_parse_book_reply(0, "Reservation created: flas-f-r3-0a1b2c3d\n", why, sizeof why), FLAS_BOOK_HELD);
    /* a booking repeated after a crash finds its own (the name carries the run id) */
    ck_assert_int_eq(coord_parse_book_reply(1, "Error creating the reservation: Duplicate reservation name\n", why,
                                            sizeof why), FLAS_BOOK_HELD);
    ck_assert_int_eq(coord_parse_book_reply(1, "Error creating the reservation: Invalid user id\n", why, sizeof why),
                     FLAS_BOOK_NO_ROLE);
    ck_assert_msg(strstr(why, "no operator role here"), "%s", why);
    ck_assert_int_eq(coord_parse_book_reply(1, "Error creating the reservation: Access/permission denied\n", why,
                                            sizeof why), FLAS_BOOK_NO_ROLE);
    ck_assert_msg(strstr(why, "no operator role here"), "%s", why);
    ck_assert_int_eq(coord_parse_book_reply(1, "Error creating the reservation: Requested nodes are busy\n", why,
                                            sizeof why), FLAS_BOOK_NO_ROLE);
    ck_assert_msg(strstr(why, "exited 1: Error creating the reservation: Requested nodes are busy"), "%s", why);
    /* success needs exit 0 and the words; a hostile reply's control bytes do not reach the journal */
    ck_assert_int_eq(coord_parse_book_reply(1, "Reservation created: x", why, sizeof why), FLAS_BOOK_NO_ROLE);
    ck_assert_int_eq(coord_parse_book_reply(0, "reservation made\x1b[2J", why, sizeof why), FLAS_BOOK_NO_ROLE);
    ck_assert_ptr_null(strchr(why, '\x1b'));
}
END_TEST

START_TEST(salvage_key_is_parsed)
{
    static flas_coord_conf c;
    char err[512] = "";
    ck_assert_msg(flas_coord_conf_parse("t.conf", HEAD SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert(!c.salvage_resume); /* a preempted job's published checkpoint is merged unless asked */
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=2 "
                                        "Salvage=resume\n" SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert(c.salvage_resume);
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=2 "
                                        "Salvage=merge\n" SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert(!c.salvage_resume);
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 Salvage=maybe\n" SITE,
            "Salvage=maybe: expected merge or resume");
}
END_TEST

START_TEST(tuning_keys_are_parsed)
{
    static flas_coord_conf c;
    char err[512] = "";
    ck_assert_msg(flas_coord_conf_parse("t.conf", HEAD SITE, &c, err, sizeof err) == 0, "%s", err);
    /* today's behaviour unless asked: AdamW reset, the sites' own schedule, no proximal term, and the
     * strategy's own server hyper-parameters */
    ck_assert(!c.inner_keep && !c.lr_run && c.prox == 0);
    ck_assert(c.server_beta1 < 0 && c.server_beta2 < 0 && c.server_tau < 0);
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=24 "
                                        "InnerState=keep LrSchedule=run Prox=0.01 Strategy=fedadam ServerLR=0.01 "
                                        "ServerBeta1=0.8 ServerBeta2=0.995 ServerTau=1e-4\n" SITE, &c, err, sizeof err) == 0,
                  "%s", err);
    ck_assert(c.inner_keep && c.lr_run && c.prox == 0.01);
    ck_assert(c.server_lr == 0.01 && c.server_beta1 == 0.8 && c.server_beta2 == 0.995 && c.server_tau == 1e-4);
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=2 "
                                        "InnerState=reset LrSchedule=round\n" SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert(!c.inner_keep && !c.lr_run);
    /* what reaches the aggregator: the given keys over the strategy's defaults */
    flas_agg_options o;
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=24 "
                                        "Strategy=fedyogi ServerBeta1=0.8 ServerTau=1e-4\n" SITE, &c, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(flas_coord_agg_options(&c, &o), 0);
    ck_assert(o.strategy == FLAS_AGG_FEDYOGI && o.beta1 == 0.8 && o.tau == 1e-4);
    ck_assert(o.lr == 0.01 && o.beta2 == 0.99); /* not given: the strategy's */
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=24 "
                                        "Strategy=fedavgm ServerLR=1 ServerMomentum=0.5\n" SITE, &c, err, sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(flas_coord_agg_options(&c, &o), 0);
    ck_assert(o.strategy == FLAS_AGG_FEDAVGM && o.lr == 1 && o.momentum == 0.5);
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 InnerState=yes\n" SITE,
            "InnerState=yes: expected reset or keep");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 LrSchedule=cosine\n" SITE,
            "LrSchedule=cosine: expected round or run");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 ServerBeta2=1\n" SITE, "below 1");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 Prox=-1\n" SITE, "Prox=-1");
}
END_TEST

START_TEST(compression_keys_are_parsed)
{
    static flas_coord_conf c;
    char err[512] = "", path[512];
    ck_assert_msg(flas_coord_conf_parse("t.conf", HEAD SITE, &c, err, sizeof err) == 0, "%s", err);
    /* full models both ways unless asked: compression is lossy, a federation opts in */
    ck_assert_int_eq(c.update_enc, FLAS_UPDATE_FULL);
    ck_assert_int_eq(c.global_enc, FLAS_UPDATE_FULL);
    ck_assert_int_eq(c.update_block, FLAS_UPDATE_BLOCK_DEFAULT);
    ck_assert_str_eq(c.site[0].tools, "");
    ck_assert_int_eq(flas_coord_site_model_path(&c, 3, path, sizeof path), 0);
    ck_assert_str_eq(path, "/w/global/round-000003.h5");
    ck_assert_msg(flas_coord_conf_parse("t.conf", "Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 "
                                        "UpdateEncoding=int8 GlobalEncoding=bf16 UpdateBlock=64\n" SITE " Tools=/opt/flas/bin",
                                        &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.update_enc, FLAS_UPDATE_INT8);
    ck_assert_int_eq(c.global_enc, FLAS_UPDATE_BF16);
    ck_assert_int_eq(c.update_block, 64);
    ck_assert_str_eq(c.site[0].tools, "/opt/flas/bin");
    /* round 0 is sent whole; later rounds' site model is the params-only copy rebuilt from an update */
    ck_assert_int_eq(flas_coord_site_model_path(&c, 0, path, sizeof path), 0);
    ck_assert_str_eq(path, "/w/global/round-000000.h5");
    ck_assert_int_eq(flas_coord_site_model_path(&c, 4, path, sizeof path), 0);
    ck_assert_str_eq(path, "/w/global/round-000004.staged.h5");
    ck_assert_int_eq(flas_coord_delta_path(&c, 4, path, sizeof path), 0);
    ck_assert_str_eq(path, "/w/global/round-000004.delta.h5");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 UpdateEncoding=fp8\n" SITE,
            "t.conf:1: UpdateEncoding=fp8: expected full, bf16 or int8");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 GlobalEncoding=int4\n" SITE,
            "GlobalEncoding=int4: expected full, bf16 or int8");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1 UpdateBlock=32\n" SITE,
            "t.conf:1: UpdateBlock=32");
    refused("Federation=f WorkDir=/w InitialGlobal=/g.h5 KnownHosts=/k Rounds=1\n" SITE " Tools=relative/bin",
            "Tools=relative/bin");
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

/* ---- speed-aware rounds and round accounting -------------------------------------------------- */

START_TEST(budget_steps_follow_each_sites_rate)
{
    static flas_coord_conf c;
    char err[512] = "";
    ck_assert_msg(flas_coord_conf_parse("t.conf", HEAD "RoundBudget=60 MinSteps=100 FirstSteps=50\n" SITE
                                        "Site=b Host=h User=u StagingRoot=/s Script=/j.sh\n"
                                        "Site=c Host=h User=u StagingRoot=/s Script=/j.sh\n",
                                        &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.round_budget_s, 60);
    ck_assert_int_eq(c.min_steps, 100);
    ck_assert_int_eq(c.first_steps, 50);
    ck_assert_int_eq(c.drop_slow_sites, 0);
    long steps[3];
    int slow[3];
    /* a: 10 steps/s, b: 2.5 steps/s (4x slower), c: not measured yet */
    double rate[3] = {10.0, 2.5, 0};
    ck_assert_int_eq(flas_coord_budget_steps(&c, rate, steps, slow), 0);
    ck_assert_int_eq(steps[0], 600);
    ck_assert_int_eq(steps[1], 150);
    ck_assert_int_eq(steps[2], 50); /* FirstSteps= */
    /* every measured site then trains the budget: steps / rate = 60 s at both */
    ck_assert(steps[0] / rate[0] == 60.0 && steps[1] / rate[1] == 60.0);
    /* floor, never 0; a site under MinSteps= is slow */
    double slow_rates[3] = {1.0 / 7, 1.66, 1e-9};
    ck_assert_int_eq(flas_coord_budget_steps(&c, slow_rates, steps, slow), 3);
    ck_assert_int_eq(steps[0], 8);   /* 60/7 = 8.57 */
    ck_assert_int_eq(steps[1], 99);  /* 99.6: one short of MinSteps=100 */
    ck_assert_int_eq(steps[2], 1);   /* at least 1 */
    ck_assert(slow[0] && slow[1] && slow[2]);
    double exact[3] = {100.0 / 60, 1e30, NAN};
    ck_assert_int_eq(flas_coord_budget_steps(&c, exact, steps, slow), 0);
    ck_assert_int_eq(steps[0], 100); /* exactly MinSteps=: not slow */
    ck_assert_int_eq(steps[1], 1L << 40); /* flas-train's bound */
    ck_assert_int_eq(steps[2], 50);  /* a NaN rate is no rate */
    ck_assert(!slow[0] && !slow[1] && !slow[2]);
    /* DropSlowSites= is parsed (the drop itself is the state machine's: the bed's speed-aware case) */
    ck_assert_msg(flas_coord_conf_parse("t.conf", HEAD "RoundBudget=60 MinSteps=100 DropSlowSites=yes\n" SITE, &c, err,
                                        sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.drop_slow_sites, 1);
    double r1[1] = {1.0};
    ck_assert_int_eq(flas_coord_budget_steps(&c, r1, steps, slow), 1);
    ck_assert_int_eq(steps[0], 60);
    ck_assert_int_eq(slow[0], 1);
    /* budget off: nothing is passed, whatever the rate */
    ck_assert_msg(flas_coord_conf_parse("t.conf", HEAD SITE, &c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(flas_coord_budget_steps(&c, r1, steps, slow), 0);
    ck_assert_int_eq(steps[0], 0);
    /* the keys are refused where they would mean nothing */
    refused(HEAD "MinSteps=5\n" SITE, "need RoundBudget=");
    refused(HEAD "FirstSteps=5\n" SITE, "need RoundBudget=");
    refused(HEAD "RoundBudget=60 DropSlowSites=yes\n" SITE, "DropSlowSites=yes needs MinSteps=");
    refused(HEAD "RoundBudget=60 DropSlowSites=maybe\n" SITE, "expected yes or no");
    refused(HEAD "RoundBudget=3600\n" SITE, "must be shorter than RoundDeadline=3600");
    refused(HEAD "RoundBudget=-1\n" SITE, "RoundBudget=-1");
    refused(HEAD "RoundBudget=60 FirstSteps=0\n" SITE, "FirstSteps=0");
}
END_TEST

START_TEST(job_times_reply_is_parsed_strictly)
{
    int64_t a = -1, b = -1, e = -1;
    char why[256];
    ck_assert_msg(flas_coord_parse_job_times("1790000000 1790000012 1790000100\n", &a, &b, &e, why, sizeof why) == 0,
                  "%s", why);
    ck_assert(a == 1790000000 && b == 1790000012 && e == 1790000100);
    ck_assert_int_eq(flas_coord_parse_job_times("1790000000 1790000000 1790000000", &a, &b, &e, why, sizeof why), 0);
    /* not started (cancelled while pending), or not ended */
    ck_assert_int_eq(flas_coord_parse_job_times("1790000000 Unknown Unknown\n", &a, &b, &e, why, sizeof why), 0);
    ck_assert(a == 1790000000 && b == 0 && e == 0);
    ck_assert_int_eq(flas_coord_parse_job_times("1790000000 1790000005 N/A\n", &a, &b, &e, why, sizeof why), 0);
    ck_assert(b == 1790000005 && e == 0);
    /* hostile or confused replies: each refused, with a reason, nothing stored */
    static const char *const bad[] = {
        "",                                                  /* nothing */
        "\n",
        "1790000000 1790000012\n",                           /* two fields */
        "1790000000 1790000012 1790000100 1790000101\n",     /* four */
        "1790000000 1790000012 1790000100\n1790000000 1 2\n",/* two lines (two jobs?) */
        "2026-12-03T09:00:00 2026-12-03T09:00:05 2026-12-03T09:01:00\n", /* local time: zone unknown */
        "+1790000000 1790000012 1790000100\n",               /* sign */
        "-1790000000 1790000012 1790000100\n",
        "1790000000 1790000012 1790000100x\n",               /* trailing junk */
        "0179000000 1790000012 1790000100\n",                /* leading zero */
        "179000000 1790000012 1790000100\n",                 /* 1975: no Slurm job */
        "179000000000 1790000012 1790000100\n",              /* year 7642 */
        "99999999999999999999 1790000012 1790000100\n",      /* overflow */
        "1790000000  1790000012 1790000100\n",               /* two spaces */
        " 1790000000 1790000012 1790000100\n",
        "1790000000\t1790000012\t1790000100\n",              /* tabs */
        "1790000000 1790000012 1790000100 \n",
        "1790000000 1790000012 1790000100\r\n",              /* control character */
        "1790000100 1790000012 1790000200\n",                /* started before it was submitted */
        "1790000000 1790000100 1790000012\n",                /* ended before it started */
        "1790000000 Unknown 1790000100\n",                   /* ended without starting */
        "Unknown 1790000012 1790000100\n",                   /* no submit time */
        "slurm_load_jobs error: Invalid job id specified\n", /* an error text */
        "1790000000 1790000012 1790000100 \xc3\xa9\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = b = e = 7;
        why[0] = '\0';
        ck_assert_msg(flas_coord_parse_job_times(bad[i], &a, &b, &e, why, sizeof why) == -1, "accepted '%s'", bad[i]);
        ck_assert_msg(why[0] != '\0', "no reason for '%s'", bad[i]);
        ck_assert(a == 7 && b == 7 && e == 7);
    }
    /* a very long reply is refused, not cut to a valid-looking prefix */
    char longer[400];
    memset(longer, '1', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    memcpy(longer, "1790000000 1790000012 1790000100 ", 33);
    ck_assert_int_eq(flas_coord_parse_job_times(longer, &a, &b, &e, why, sizeof why), -1);
}
END_TEST

START_TEST(journal_round_trips_the_accounting)
{
    char dir[] = "/tmp/flas-journal-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], err[512], cmd[300];
    snprintf(path, sizeof path, "%s/journal", dir);
    static flas_journal j, back;
    memset(&j, 0, sizeof j);
    snprintf(j.federation, sizeof j.federation, "flas");
    j.round = 3;
    j.round_started = 1790000000.125;
    j.dp_rounds = 2, j.dp_rho = 1.0 / 3, j.dp_epsilon = INFINITY; /* a round without noise spends everything */
    j.n_sites = 2;
    snprintf(j.site_name[0], sizeof j.site_name[0], "leonardo");
    snprintf(j.site_name[1], sizeof j.site_name[1], "karolina");
    flas_journal_site *s = &j.site[0];
    s->state = FLAS_SITE_FETCHED;
    s->bytes_up = 1234567;
    s->seconds_up = 0.25;
    s->local_bytes = 7654321;
    s->seconds_fetch = 0.5;
    s->submit_unix = 1790000001;
    s->start_unix = 1790000003;
    s->end_unix = 1790000033;
    s->train_seconds = 29.75;
    s->steps = 1234;
    s->tokens = 315904;
    s->steps_assigned = 1234;
    s->rate = 1234 / 29.75; /* not a short decimal: carried exactly */
    j.site[1].rate = 1.0 / 3;
    /* a compressed downlink: the sites' model differs from the global, and how each got it */
    snprintf(j.global_sha256, sizeof j.global_sha256, "%064d", 1);
    snprintf(j.staged_sha256, sizeof j.staged_sha256, "%064d", 2);
    snprintf(s->staged_via, sizeof s->staged_via, "delta");
    snprintf(j.site[1].staged_via, sizeof j.site[1].staged_via, "full");
    snprintf(s->resume, sizeof s->resume, "/site/stage/flas/jobs/41/local.h5");
    ck_assert_msg(flas_journal_save(path, &j, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(flas_journal_load(path, &back, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(back.staged_sha256, j.staged_sha256);
    ck_assert_str_eq(back.global_sha256, j.global_sha256);
    ck_assert_str_eq(back.site[0].staged_via, "delta");
    ck_assert_str_eq(back.site[1].staged_via, "full");
    ck_assert_str_eq(back.site[0].resume, "/site/stage/flas/jobs/41/local.h5");
    ck_assert_str_eq(back.site[1].resume, "");
    ck_assert(back.round_started == 1790000000.125);
    ck_assert(back.dp_rounds == 2 && back.dp_rho == 1.0 / 3 && isinf(back.dp_epsilon));
    const flas_journal_site *b = &back.site[0];
    ck_assert_int_eq(b->bytes_up, 1234567);
    ck_assert(b->seconds_up == 0.25 && b->seconds_fetch == 0.5 && b->train_seconds == 29.75);
    ck_assert_int_eq(b->local_bytes, 7654321);
    ck_assert_int_eq(b->submit_unix, 1790000001);
    ck_assert_int_eq(b->start_unix, 1790000003);
    ck_assert_int_eq(b->end_unix, 1790000033);
    ck_assert_int_eq(b->steps, 1234);
    ck_assert_int_eq(b->tokens, 315904);
    ck_assert_int_eq(b->steps_assigned, 1234);
    ck_assert(b->rate == 1234 / 29.75);
    ck_assert(back.site[1].rate == 1.0 / 3);
    /* damaged figures are refused like any damage */
    static const char *const bad[] = {"site.0.rate=-1\n", "site.0.rate=nan\n", "site.0.steps=-5\n",
                                      "site.0.bytes_up=12x\n", "site.0.train_seconds=inf\n", "site.0.end_unix=\n",
                                      "round_started=-3\n", "site.0.staged_via=gzip\n", "staged_sha256=12ab\n",
                                      "global_sha256=../../etc/passwd\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(flas_journal_save(path, &j, err, sizeof err) == 0, "%s", err);
        FILE *f = fopen(path, "a");
        fputs(bad[i], f);
        fclose(f);
        ck_assert_msg(flas_journal_load(path, &back, err, sizeof err) == -1, "accepted %s", bad[i]);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Lines of a text file, and the one starting with prefix (NULL if none). */
static int file_lines(const char *path, const char *prefix, char *found, size_t len)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    int n = 0, hits = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        if (prefix && !strncmp(line, prefix, strlen(prefix))) {
            hits++;
            snprintf(found, len, "%s", line);
        }
    }
    fclose(f);
    ck_assert_int_le(hits, 1);
    return n;
}

START_TEST(rounds_tsv_has_one_line_per_round)
{
    char dir[] = "/tmp/flas-rounds-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], err[512], line[8192], cmd[300];
    snprintf(path, sizeof path, "%s/rounds.tsv", dir);
    static flas_journal j;
    memset(&j, 0, sizeof j);
    j.n_sites = 2;
    snprintf(j.site_name[0], sizeof j.site_name[0], "leonardo");
    snprintf(j.site_name[1], sizeof j.site_name[1], "karolina");
    for (int i = 0; i < 2; i++) {
        flas_journal_site *s = &j.site[i];
        s->state = FLAS_SITE_FETCHED;
        s->job = 10 + i;
        s->bytes_up = 1000;
        s->seconds_up = 0.5;
        s->local_bytes = 2000;
        s->seconds_fetch = 0.25;
        s->submit_unix = 1790000000;
        s->start_unix = 1790000002 + i;
        s->end_unix = 1790000010 + 5 * i;
        s->train_seconds = 6 + i;
        s->steps = 600 - 100 * i;
        s->tokens = 1000;
    }
    j.round = 0;
    ck_assert_msg(flas_coord_record_round(path, &j, 20.0, 1.0, err, sizeof err) == 0, "%s", err);
    j.round = 1;
    j.site[1].state = FLAS_SITE_DROPPED;
    j.site[1].end_unix = 0;
    ck_assert_msg(flas_coord_record_round(path, &j, 21.0, 1.0, err, sizeof err) == 0, "%s", err);
    /* a crash after recording round 1 but before the journal moved on: recorded again on resume */
    ck_assert_msg(flas_coord_record_round(path, &j, 22.0, 1.5, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(file_lines(path, "1\t", line, sizeof line), 3); /* header, round 0, round 1 once */
    ck_assert_ptr_nonnull(strstr(line, "1\t22.000\t1.000\t")); /* the later record won */
    ck_assert_int_eq(file_lines(path, "0\t", line, sizeof line), 3);
    /* round 0: critical 20, staging 0.5+0.5, queue max(2,3), training max(6,7), fetch 0.5, aggregation 1,
     * other the rest (20-1-3-7-0.5-1 = 7.5), the fastest site idle 15-10 = 5 s */
    ck_assert_msg(!strncmp(line, "0\t20.000\t1.000\t3\t7.000\t0.500\t1.000\t7.500\t5\tfetched\t10\t1000\t0.500\t2\t6.000\t600\t-\t1000\t100.000\t2000\t0.250\t1790000010\tfetched\t11\t",
                           strlen("0\t20.000\t1.000\t3\t7.000\t0.500\t1.000\t7.500\t5\tfetched\t10\t1000\t0.500\t2\t6.000\t600\t-\t1000\t100.000\t2000\t0.250\t1790000010\tfetched\t11\t")),
                  "round 0: %s", line);
    file_lines(path, "round\t", line, sizeof line);
    ck_assert_ptr_nonnull(strstr(line, "\tidle_fastest_s\tleonardo.state\t"));
    ck_assert_ptr_nonnull(strstr(line, "\tkarolina.end_unix\n"));
    /* round 1: karolina dropped, so its training figures are unknown */
    file_lines(path, "1\t", line, sizeof line);
    ck_assert_ptr_nonnull(strstr(line, "\tdropped\t11\t1000\t0.500\t3\t-\t-\t-\t-\t-\t-\t-\t-\n"));
    /* a journal that went back (round 0 again) drops the later rounds' lines */
    j.round = 0;
    ck_assert_msg(flas_coord_record_round(path, &j, 19.0, 1.0, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(file_lines(path, NULL, line, sizeof line), 2);
    /* written atomically: no temporary left beside it */
    snprintf(cmd, sizeof cmd, "test $(ls -a %s | wc -l) -eq 3", dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
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
    tcase_add_test(tc, compression_keys_are_parsed);
    tcase_add_test(tc, dp_keys_are_parsed);
    tcase_add_test(tc, tuning_keys_are_parsed);
    tcase_add_test(tc, adopts_only_the_login_users_job);
    tcase_add_test(tc, budget_steps_follow_each_sites_rate);
    tcase_add_test(tc, job_times_reply_is_parsed_strictly);
    tcase_add_test(tc, journal_round_trips_the_accounting);
    tcase_add_test(tc, rounds_tsv_has_one_line_per_round);
    tcase_add_test(tc, every_slurm_job_state_is_mapped);
    tcase_add_test(tc, salvage_key_is_parsed);
    tcase_add_test(tc, booking_reply_is_read);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
