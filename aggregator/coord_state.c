/* The coordinator's running state, below both the round state machine (coord_rounds.c) and the site
 * actions (coord_site.c): where each round's files live inside WorkDir, per-site notes, and the round
 * history (rounds.tsv, rounds.png). The file
 * names are the staging area's (flas/staging.h), so a round is "round-000003" everywhere. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coord_internal.h"
#include "flas/atomic_file.h"
#include "flas/error.h"
#include "flas/staging.h"

static int fits(int n, size_t len) { return n > 0 && (size_t)n < len ? 0 : -1; }

int flas_coord_global_path(const flas_coord_conf *c, long round, char *buf, size_t len)
{
    char name[32];
    if (flas_stage_global_name(name, sizeof name, round))
        return -1;
    return fits(snprintf(buf, len, "%s/%s/%s", c->work_dir, FLAS_STAGE_GLOBAL, name), len);
}

int flas_coord_site_model_path(const flas_coord_conf *c, long round, char *buf, size_t len)
{
    char name[32];
    if (c->global_enc == FLAS_UPDATE_FULL || round == 0)
        return flas_coord_global_path(c, round, buf, len);
    if (flas_stage_round_dir(name, sizeof name, round))
        return -1;
    return fits(snprintf(buf, len, "%s/%s/%s.staged.h5", c->work_dir, FLAS_STAGE_GLOBAL, name), len);
}

int flas_coord_delta_path(const flas_coord_conf *c, long round, char *buf, size_t len)
{
    char name[32];
    if (flas_stage_round_dir(name, sizeof name, round))
        return -1;
    return fits(snprintf(buf, len, "%s/%s/%s.delta.h5", c->work_dir, FLAS_STAGE_GLOBAL, name), len);
}

int flas_coord_round_dir(const flas_coord_conf *c, long round, char *buf, size_t len)
{
    char name[32];
    if (flas_stage_round_dir(name, sizeof name, round))
        return -1;
    return fits(snprintf(buf, len, "%s/%s", c->work_dir, name), len);
}

int flas_coord_local_path(const flas_coord_conf *c, long round, const char *site, char *buf, size_t len)
{
    char dir[FLAS_CONF_PATH_MAX + 32];
    if (flas_coord_round_dir(c, round, dir, sizeof dir))
        return -1;
    return fits(snprintf(buf, len, "%s/%s.h5", dir, site), len);
}

void coord_note(coord *k, int i, const char *fmt, ...)
{
    flas_journal_site *s = &k->j.site[i];
    va_list ap;
    va_start(ap, fmt);
    flas_vfail(s->note, sizeof s->note, fmt, ap); /* one line: the journal stores one line per note */
    va_end(ap);
    fprintf(stderr, "flas-coordinator: round %ld: %s: %s\n", k->j.round, k->c->site[i].name, s->note);
}

/* ---- the round history (rounds.tsv) and its plot (rounds.png) ----------------------------------- */

/* Each site's columns in rounds.tsv, in order (the header names them "<site>.<column>"). */
static const char *const site_columns[] = {"state", "job", "bytes_up", "up_s", "queue_s", "train_s", "steps",
                                           "steps_assigned", "tokens", "rate", "bytes_down", "down_s", "end_unix"};
#define N_SITE_COLUMNS (sizeof site_columns / sizeof site_columns[0])
static const char *const total_columns = "round\tcritical_s\tstaging_s\tqueue_s\ttraining_s\tfetch_s\taggregate_s\tother_s"
                                         "\tidle_fastest_s";

static double queue_wait(const flas_journal_site *s)
{
    return s->submit_unix > 0 && s->start_unix >= s->submit_unix ? (double)(s->start_unix - s->submit_unix) : -1;
}

static void put_num(FILE *f, double v, const char *fmt)
{
    if (v < 0)
        fputs("\t-", f);
    else {
        fputc('\t', f);
        fprintf(f, fmt, v);
    }
}

/* The round's line (without its newline). */
static void round_line(FILE *f, const flas_journal *j, double critical_s, double aggregate_s)
{
    double staging = 0, queue = 0, training = 0, fetch = 0, first_end = 0, last_end = 0;
    int merged = 0, ends = 0;
    for (int i = 0; i < j->n_sites; i++) {
        const flas_journal_site *s = &j->site[i];
        staging += s->seconds_up;
        if (s->state != FLAS_SITE_FETCHED)
            continue;
        merged++;
        fetch += s->seconds_fetch;
        if (queue_wait(s) > queue)
            queue = queue_wait(s);
        if (s->train_seconds > training)
            training = s->train_seconds;
        if (s->end_unix > 0) {
            if (!ends || s->end_unix < first_end)
                first_end = (double)s->end_unix;
            if (!ends || s->end_unix > last_end)
                last_end = (double)s->end_unix;
            ends++;
        }
    }
    double other = critical_s - staging - queue - training - fetch - aggregate_s;
    fprintf(f, "%ld\t%.3f\t%.3f\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f", j->round, critical_s, staging, queue, training, fetch,
            aggregate_s, other > 0 ? other : 0);
    /* idle of the fastest site: known only when every merged site's end is */
    put_num(f, merged > 0 && ends == merged ? last_end - first_end : -1, "%.0f");
    for (int i = 0; i < j->n_sites; i++) {
        const flas_journal_site *s = &j->site[i];
        int got = s->state == FLAS_SITE_FETCHED;
        fprintf(f, "\t%s\t%ld", flas_site_state_name(s->state), s->job);
        put_num(f, s->bytes_up > 0 ? (double)s->bytes_up : -1, "%.0f");
        put_num(f, s->bytes_up > 0 ? s->seconds_up : -1, "%.3f");
        put_num(f, queue_wait(s), "%.0f");
        put_num(f, got ? s->train_seconds : -1, "%.3f");
        put_num(f, got ? (double)s->steps : -1, "%.0f");
        put_num(f, s->steps_assigned > 0 ? (double)s->steps_assigned : -1, "%.0f");
        put_num(f, got ? (double)s->tokens : -1, "%.0f");
        put_num(f, got && s->train_seconds > 0 ? (double)s->steps / s->train_seconds : -1, "%.3f");
        put_num(f, got ? (double)s->local_bytes : -1, "%.0f");
        put_num(f, got ? s->seconds_fetch : -1, "%.3f");
        put_num(f, s->end_unix > 0 ? (double)s->end_unix : -1, "%.0f");
    }
}

int flas_coord_record_round(const char *path, const flas_journal *j, double critical_s, double aggregate_s,
                            char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return flas_fail(err, errlen, "%s: %s", path, strerror(errno));
    fputs(total_columns, f);
    for (int i = 0; i < j->n_sites; i++)
        for (size_t c = 0; c < N_SITE_COLUMNS; c++)
            fprintf(f, "\t%s.%s", j->site_name[i], site_columns[c]);
    fputc('\n', f);
    /* the earlier rounds' lines as they are; a line of this round or a later one (recorded before a
     * crash, or by a run whose journal went back) is left out, so each round has one line */
    FILE *in = fopen(path, "re");
    if (in) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        int first = 1;
        while ((n = getline(&line, &cap, in)) > 0) {
            if (first) { /* the header is written anew from the journal (its site list is the conf's) */
                first = 0;
                continue;
            }
            char *end;
            long r = strtol(line, &end, 10);
            if (end != line && *end == '\t' && r >= 0 && r < j->round)
                fwrite(line, 1, (size_t)n, f);
        }
        free(line);
        fclose(in);
    } else if (errno != ENOENT) {
        fclose(f);
        free(text);
        return flas_fail(err, errlen, "%s: %s", path, strerror(errno));
    }
    round_line(f, j, critical_s, aggregate_s);
    fputc('\n', f);
    if (fclose(f) != 0 || !text) {
        free(text);
        return flas_fail(err, errlen, "%s: out of memory", path);
    }
    int rc = flas_atomic_write_file(path, text, len, err, errlen);
    free(text);
    return rc;
}

/* rounds.png: time per round by phase, stacked, drawn by gnuplot from rounds.tsv. gnuplot writes a
 * temporary of the atomic-write rule, which is then committed: a reader never sees half a PNG. Nothing
 * here can fail a round: a missing gnuplot or a failed plot is one line on stderr. */
void coord_plot_rounds(const flas_coord_conf *c)
{
    char tsv[FLAS_CONF_PATH_MAX + 16], png[FLAS_CONF_PATH_MAX + 16], err[512];
    snprintf(tsv, sizeof tsv, "%s/rounds.tsv", c->work_dir);
    snprintf(png, sizeof png, "%s/rounds.png", c->work_dir);
    if (strpbrk(c->work_dir, "\"\\'`$")) { /* the paths go into gnuplot's quoted strings */
        fprintf(stderr, "flas-coordinator: warning: no rounds.png: WorkDir has quote characters\n");
        return;
    }
    char *tmp = NULL;
    int fd = flas_atomic_create(png, &tmp, err, sizeof err);
    if (fd < 0) {
        fprintf(stderr, "flas-coordinator: warning: no rounds.png: %s\n", err);
        return;
    }
    close(fd);
    /* stdout and stderr of gnuplot go nowhere: its verdict is its exit status (127: not installed) */
    FILE *p = popen("exec gnuplot >/dev/null 2>&1", "w");
    if (p) {
        fprintf(p,
                "set terminal png size 960,540\n"
                "set output \"%s\"\n"
                "set datafile separator \"\\t\"\n"
                "set datafile missing \"-\"\n"
                "set title \"flas-coordinator: time per round by phase (federation %s)\"\n"
                "set xlabel \"round\"\nset ylabel \"seconds\"\n"
                "set style data histograms\nset style histogram rowstacked\nset style fill solid 0.8 border -1\n"
                "set boxwidth 0.7\nset key outside right top\nset yrange [0:*]\n"
                "plot \"%s\" using \"staging_s\":xtic(1) title \"staging\", '' using \"queue_s\" title \"queue wait\", "
                "'' using \"training_s\" title \"training\", '' using \"fetch_s\" title \"fetch\", "
                "'' using \"aggregate_s\" title \"aggregation\", '' using \"other_s\" title \"other\"\n",
                tmp, c->federation, tsv);
    }
    int st = p ? pclose(p) : -1;
    if (st != 0) {
        unlink(tmp);
        fprintf(stderr, "flas-coordinator: warning: no rounds.png: %s\n",
                st == -1                                        ? strerror(errno)
                : WIFEXITED(st) && WEXITSTATUS(st) == 127       ? "gnuplot is not installed (Debian: gnuplot-nox)"
                                                                : "gnuplot failed");
        free(tmp);
        return;
    }
    fd = open(tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0 && fchmod(fd, flas_atomic_mode(0644))) /* the temporary is 0600, as mkstemp makes it */
        snprintf(err, sizeof err, "%s", strerror(errno));
    if (fd < 0 || flas_atomic_commit(fd, tmp, png, err, sizeof err)) {
        if (fd < 0)
            unlink(tmp);
        fprintf(stderr, "flas-coordinator: warning: no rounds.png: %s\n", fd < 0 ? strerror(errno) : err);
    }
    free(tmp);
}

/* Prints rounds.tsv as tables: the totals, then one per site (the round and that site's columns). */
void coord_print_history(const flas_coord_conf *c, FILE *out)
{
    char path[FLAS_CONF_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/rounds.tsv", c->work_dir);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    /* the header and the first 1000 rounds (a longer history is in the file) */
    enum { MAX_ROWS = 1001, MAX_COLS = 9 + FLAS_COORD_MAX_SITES * (int)N_SITE_COLUMNS };
    static char *cell[MAX_ROWS][MAX_COLS];
    int rows = 0, cols = 0;
    char *line = NULL;
    size_t cap = 0;
    while (rows < MAX_ROWS && getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = '\0';
        int n = 0;
        for (char *save = NULL, *t = strtok_r(line, "\t", &save); t && n < MAX_COLS; t = strtok_r(NULL, "\t", &save))
            cell[rows][n++] = strdup(t);
        if (rows == 0)
            cols = n;
        if (n != cols) { /* a line that does not fit the header: not shown */
            for (int i = 0; i < n; i++)
                free(cell[rows][i]);
            continue;
        }
        rows++;
    }
    int more = rows == MAX_ROWS && getline(&line, &cap, f) > 0;
    free(line);
    fclose(f);
    if (rows > 1) {
        fprintf(out, "finished rounds (%s):\n", path);
        /* groups of columns: the totals (no '.'), then each site's (the prefix before '.') */
        for (int g0 = 0; g0 < cols;) {
            const char *dot = strchr(cell[0][g0], '.');
            size_t plen = dot ? (size_t)(dot - cell[0][g0]) : 0;
            int g1 = g0 + 1;
            while (g1 < cols && (dot ? !strncmp(cell[0][g1], cell[0][g0], plen + 1) : !strchr(cell[0][g1], '.')))
                g1++;
            if (dot)
                fprintf(out, "  %.*s:\n", (int)plen, cell[0][g0]);
            for (int r = 0; r < rows; r++) {
                fputs("  ", out);
                if (dot)
                    fprintf(out, "%-6s", r ? cell[r][0] : "round");
                for (int col = g0; col < g1; col++) {
                    const char *v = r ? cell[r][col] : cell[0][col] + (dot ? plen + 1 : 0);
                    size_t w = strlen(cell[0][col]) - (dot ? plen + 1 : 0);
                    for (int rr = 1; rr < rows; rr++)
                        if (strlen(cell[rr][col]) > w)
                            w = strlen(cell[rr][col]);
                    fprintf(out, "%s%*s", col == g0 && !dot ? "" : " ", (int)w, v);
                }
                fputc('\n', out);
            }
            g0 = g1;
        }
        if (more)
            fprintf(out, "  (the first %d rounds; the rest are in the file)\n", MAX_ROWS - 1);
    }
    for (int r = 0; r < rows; r++)
        for (int col = 0; col < cols; col++)
            free(cell[r][col]);
}
