/* The coordinator's running state (coord_state.c), shared by coord_rounds.c (the state machine) and
 * coord_site.c (what it does at a site): the rounds call the site actions, and both call down into
 * coord_state.c, never the other way. Not part of the public API. */
#ifndef FLAS_COORD_INTERNAL_H
#define FLAS_COORD_INTERNAL_H

#include "flas/coordinator.h"

typedef struct coord {
    const flas_coord_conf *c;
    flas_journal j;
    char journal_path[FLAS_CONF_PATH_MAX + 16];
    flas_ssh *ssh[FLAS_COORD_MAX_SITES]; /* opened on first use, dropped when SSH fails, reopened */
    int journal_broken;                  /* a save failed: act on nothing more (the journal is the truth) */
    char journal_err[1024];
    int halted;                          /* a site's certificate no longer allows an action: act on nothing
                                            more, save nothing more; flas_coord_run exits 3 with halt_why */
    char halt_why[1600];
    struct {
        double seconds_stage, seconds_aggregate;
        int64_t bytes_staged;
    } stats;                             /* of the current round, for its progress line */
} coord;

/* Records a message about site i in its journal note (and prints it). */
void coord_note(coord *k, int i, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* rounds.png from rounds.tsv (a failure is a warning), and rounds.tsv as tables for `status`. */
void coord_plot_rounds(const flas_coord_conf *c);
void coord_print_history(const flas_coord_conf *c, FILE *out);

/* Stops everything new: a failed journal save or a halt. */
static inline int coord_stopped(const coord *k) { return k->journal_broken || k->halted; }

/* Site i's certificate (Certificate=, or Identity-cert.pub) allows an SSH action now: readable, a user
 * certificate for its User=, valid, with more than CommandTimeout= seconds left. Else the coordinator
 * halts (k->halted, the reason naming the site, the file and the time) and this returns -1. At a
 * round's start (round_start) it also warns when the certificate ends before the round's deadline.
 * A site without a certificate: 0. Every action at a site passes here (coord_ssh). */
int coord_cert_ok(coord *k, int i, int round_start);
flas_ssh *coord_ssh(coord *k, int i);
void coord_ssh_lost(coord *k, int i);
int coord_stage_global(coord *k, int i);
void coord_job_name(const coord *k, int i, int attempt, char *buf, size_t len);
long coord_submit(coord *k, int i);                   /* job id, or -1 */
long coord_find_job(coord *k, int i, int attempt);    /* id of the job with this attempt's name, 0 none, -1 error */
int coord_job_state(coord *k, int i, long job, char *state, size_t len);
int coord_cancel(coord *k, int i, long job);
int coord_job_times(coord *k, int i, long job);       /* submit/start/end into the journal; -1: unknown */
int coord_read_manifest(coord *k, int i, long job, char *remote, size_t rlen, int64_t *size, char *sha);
/* Sync=book: the name of this round's own reservation (flas-FED-rK-RUN: this run's, no admin's), the
 * booking at site i for the round's start (k->j.begin_unix), and its deletion. coord_book returns the
 * new state (FLAS_BOOK_HELD or FLAS_BOOK_NO_ROLE), or -1 when the site could not be asked; coord_unbook
 * 0 when the reservation is gone. */
void coord_booking_name(const coord *k, char *buf, size_t len);
int coord_book(coord *k, int i);
int coord_unbook(coord *k, int i);
/* scontrol create reservation's exit status and output: FLAS_BOOK_HELD (created, or already there: a
 * booking repeated after a crash), FLAS_BOOK_NO_ROLE (refused: the reason in why). */
int coord_parse_book_reply(int status, const char *out, char *why, size_t whylen);

/* The newest checkpoint an interrupted job left in its directory at the site that a new attempt can
 * continue (optimizer state included: full updates, inner state reset): 1 with its path, 0 none, -1 the
 * site could not be asked. */
int coord_job_checkpoint(coord *k, int i, long job, char *path, size_t len);
int coord_fetch(coord *k, int i, const char *remote, int64_t size, const char *sha);

/* What the coordinator does with a job in a Slurm state (squeue %T, or UNKNOWN when the controller has
 * forgotten it); docs/operations.md has the table. */
typedef enum {
    COORD_JOB_WAIT,    /* not over: ask again (until the round's deadline cancels it) */
    COORD_JOB_FETCH,   /* over: fetch the checkpoint its manifest names */
    COORD_JOB_SALVAGE, /* interrupted: merge what it published, or continue its checkpoint in a new attempt */
    COORD_JOB_RETRY,   /* never ran: a new attempt */
    COORD_JOB_LOST,    /* over, no update this round */
} coord_job_action;
coord_job_action coord_state_action(const char *state);

/* What the site actions above believe of a site's answers, as pure functions of the text (no SSH), so
 * that tests and the fuzz harnesses (tests/fuzz) run the very checks the coordinator does. */
/* sbatch --parsable's reply ("123" or "123;cluster", a newline allowed): the job id, or -1. */
long coord_parse_sbatch_reply(const char *out);
/* coord_job_state's reply "RC STATE" (squeue's exit status, then its output): 0 with the state (or
 * UNKNOWN for a job the controller has forgotten), -1 with the reason in why. Modifies out. */
int coord_parse_job_state(char *out, long job, char *state, size_t len, char *why, size_t whylen);
/* The manifest mname of job in round round_now at site (of federation), as coord_read_manifest
 * checks it: 0 (fetchable: the checkpoint's file name in ckpt, its size and sha256), 1 (the job published
 * no checkpoint), -2 (refused); the reason in note when not 0. sha holds FLAS_SHA256_HEX_LEN + 1. */
int coord_parse_manifest(const char *text, const char *mname, const char *site, const char *federation, long round_now,
                         long job, const char *staged_sha256, int64_t max_bytes, char *ckpt, size_t cklen,
                         int64_t *size, char *sha, char *note, size_t notelen);

#endif
