/* flas-train after option parsing: the mode's work on every rank, messages on rank 0. Setting up a
 * training round: refuse what the plugin refused, verify the global model's sha256, load it (or the
 * local checkpoint to resume), open the data, size the round, then run it (train_loop.c). */
#define _GNU_SOURCE /* dirfd, fstatat */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/blas_info.h"
#include "train_internal.h"
#include "train_shards.h"

#ifndef FLAS_VERSION
#define FLAS_VERSION "unknown"
#endif

static int open_data(trainer *t, char *err, size_t errlen)
{
    const flas_train_opts *o = t->o;
    flas_train_comm *c = t->c;
    const char *paths[1] = {o->data};
    flas_loader_opts lo = {.seq_len = t->T, .batch = t->B, .dp_rank = c->dp_rank, .dp_size = c->dp_size,
                           .seed = o->seed, .shuffle = o->shuffle, .vocab_size = t->cfg.vocab_size};
    t->train = flas_loader_open(paths, 1, &lo, err, errlen);
    int ok = t->train != NULL;
    flas_loader_cursor cur;
    char why[512];
    if (ok && t->resume_cursor_valid) {
        flas_loader_cursor_from_words(t->resume_cursor, &cur);
        if (flas_loader_set_cursor(t->train, &cur, why, sizeof why))
            ok = 0, snprintf(err, errlen, "cannot continue on %.300s: %.400s%s", o->data, why,
                             t->cursor_from_inner ? " (the inner state's data position; with new data, remove the "
                                                    "site's inner-round-*.h5 files to start fresh)" : "");
    } else if (ok) {
        /* A new round starts a new epoch of the seeded order: the round number, unless told. Every round
         * starting at epoch 0 would train on the same first windows in every round. */
        flas_loader_get_cursor(t->train, &cur);
        cur.epoch = o->data_epoch >= 0 ? (uint64_t)o->data_epoch : (uint64_t)(t->meta.round > 0 ? t->meta.round : 0);
        cur.position = 0;
        if (flas_loader_set_cursor(t->train, &cur, why, sizeof why))
            ok = 0, snprintf(err, errlen, "internal: data order of epoch %llu: %s", (unsigned long long)cur.epoch, why);
    }
    if (ok && train_shard_ends(o->data, &t->shard_end, &t->n_shards, err, errlen))
        ok = 0;
    if (flas_train_agree(c->world, ok, err, errlen))
        return -1;
    if (o->valid[0] && !(t->valid = train_open_valid(o, c, &t->cfg, t->B, t->T, err, errlen)))
        return -1;
    return 0;
}

/* The round's length in steps and the learning-rate schedule. */
static void size_round(trainer *t)
{
    const flas_train_opts *o = t->o;
    int64_t per_step = (int64_t)t->B * t->T * t->accum * t->c->dp_size;
    long target = o->steps;
    if (o->tokens) {
        /* From what is left: a resumed round may run with another batch or world size. */
        int64_t left = o->tokens > t->tokens_trained ? o->tokens - t->tokens_trained : 0;
        long by_tokens = t->step + (long)((left + per_step - 1) / per_step);
        if (!target || by_tokens < target)
            target = by_tokens;
    }
    t->steps_target = target;
    t->sched.max_lr = o->lr;
    t->sched.min_lr = o->min_lr;
    t->sched.warmup_steps = o->warmup >= 0 ? o->warmup : target / 20;
    t->sched.decay_steps = o->decay_steps ? o->decay_steps : o->schedule_offset + target;
    t->sched_offset = o->schedule_offset;
    if (o->lr_run) {
        /* One schedule over the run, as if its rounds were one training run of rounds x target steps;
         * this round is the round-th stretch of it. A speed-aware round's length varies: its stretch
         * is then approximate, the cosine still ends at the last round. */
        long total = o->rounds * target;
        t->sched_offset = o->schedule_offset ? o->schedule_offset : o->round * target;
        t->sched.warmup_steps = o->warmup >= 0 ? o->warmup : total / 20;
        t->sched.decay_steps = o->decay_steps ? o->decay_steps : total;
    }
    if (t->sched.decay_steps <= t->sched.warmup_steps)
        t->sched.decay_steps = t->sched.warmup_steps + 1;
}

static void init_clock(trainer *t, double start, double job_end)
{
    flas_train_clock *k = &t->clock;
    k->start = start;
    k->end = flas_train_deadline(start, job_end, t->o->time_budget);
    double span = k->end > 0 ? k->end - start : 0;
    k->margin = t->o->margin >= 0 ? t->o->margin : fmin(30.0, 0.05 * span);
    /* Before the first write: 100 MB/s plus open/fsync/rename latency; replaced by each real write. An
     * update reads the global and the checkpoint again and writes the update and the residual: about as
     * many bytes once more. */
    k->ckpt_seconds = 3.0 * 4.0 * (double)t->model.table.n_params_full / 100e6 + 0.5;
    if (t->o->update != FLAS_UPDATE_FULL)
        k->ckpt_seconds *= 2;
}

static void rng_from_seed(uint64_t seed, uint64_t s[4])
{
    for (int i = 0; i < 4; i++) { /* splitmix64, the usual xoshiro256** seeding */
        uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        s[i] = z ^ (z >> 31);
    }
}

/* A killed process can linger as a zombie until its reaper (in containers, often a lazy PID 1) waits
 * for it: count that as gone. */
static int process_alive(pid_t pid)
{
    if (kill(pid, 0) && errno == ESRCH)
        return 0;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* "pid (comm) S ...": comm may hold spaces */
    return !(paren && paren[1] == ' ' && paren[2] == 'Z');
}

/* Temporaries of the output left by killed writers on this host (".<name>.tmp-<host>-<pid>.<random>"
 * whose pid is gone) are garbage: remove them so that repeated kills cannot fill the disk. Rank 0 only. */
void train_remove_stale_temps(const char *output, const flas_train_comm *c)
{
    char mine[FLAS_TRAIN_PATH_MAX + 128];
    if (c->rank != 0 || flas_ckpt_temp_path(output, mine, sizeof mine))
        return;
    char *slash = strrchr(mine, '/'), *dash = strrchr(mine, '-');
    if (!dash)
        return;
    dash[1] = '\0'; /* the prefix ".<name>.tmp-<host>-" */
    const char *prefix = slash ? slash + 1 : mine;
    char dir[FLAS_TRAIN_PATH_MAX + 128];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - mine) : 1, slash ? mine : ".");
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(prefix);
        if (strncmp(e->d_name, prefix, n) || !e->d_name[n])
            continue;
        char *end;
        long pid = strtol(e->d_name + n, &end, 10);
        if ((*end && *end != '.') || pid <= 0 || pid == (long)getpid() || process_alive((pid_t)pid))
            continue;
        struct stat st; /* only plain files: a symlink at such a name is someone else's, not a temporary */
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode))
            continue;
        char path[2 * FLAS_TRAIN_PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) == 0)
            printf("flas-train: removed %s, the unfinished write of a process that no longer exists\n", path);
    }
    if (d)
        closedir(d);
}

/* Found out before training, not at the end of the round: the output's directory must take a file. */
static int output_dir_ok(const char *output, flas_train_comm *c, char *err, size_t errlen)
{
    int ok = 1;
    if (c->rank == 0) {
        char dir[FLAS_TRAIN_PATH_MAX];
        const char *slash = strrchr(output, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - output) : 1, slash ? (slash == output ? "/" : output) : ".");
        struct stat st;
        if (stat(dir, &st) || !S_ISDIR(st.st_mode))
            ok = 0, snprintf(err, errlen, "%.400s: the output directory %.400s does not exist", output, dir);
        else if (access(dir, W_OK | X_OK))
            ok = 0, snprintf(err, errlen, "%.400s: the output directory %.400s is not writable: %s", output, dir, strerror(errno));
    }
    return flas_train_agree(c->world, ok, err, errlen);
}

/* resume "auto": the local checkpoint if it exists (a requeued or restarted job), else nothing. With
 * --update that is the full checkpoint, never the update at --output. */
static void resolve_resume(const flas_train_opts *o, const flas_train_comm *c, char *out, size_t len)
{
    int exists = 0;
    if (strcmp(o->resume, "auto")) {
        snprintf(out, len, "%s", o->resume);
        return;
    }
    struct stat st;
    if (c->rank == 0)
        exists = stat(o->checkpoint, &st) == 0;
    MPI_Bcast(&exists, 1, MPI_INT, 0, c->world);
    snprintf(out, len, "%s", exists ? o->checkpoint : "");
}

static int run_round(const flas_train_opts *o, flas_train_comm *c, double start, double job_end, char *err,
                     size_t errlen)
{
    if (!o->checkpoint[0]) /* derived by flas_train_opts_check, which every caller must run first */
        return snprintf(err, errlen, "internal: no checkpoint path (flas_train_opts_check was not called)"), -1;
    trainer *t = calloc(1, sizeof *t);
    if (!t)
        return snprintf(err, errlen, "out of memory"), -1;
    t->o = o;
    t->c = c;
    t->valid_loss = NAN;
    rng_from_seed(o->seed, t->rng_state);
    char resume[FLAS_TRAIN_PATH_MAX], sha[FLAS_SHA256_HEX] = "";
    if (output_dir_ok(o->output, c, err, errlen) || train_state_dir_ok(o, c, err, errlen))
        return free(t), -1;
    train_remove_stale_temps(o->output, c);
    if (strcmp(o->checkpoint, o->output))
        train_remove_stale_temps(o->checkpoint, c);
    resolve_resume(o, c, resume, sizeof resume);
    if (!resume[0] && !o->global[0]) {
        snprintf(err, errlen, "--resume auto: %.500s does not exist yet and no global model was given (--global or "
                 "FLAS_GLOBAL_CHECKPOINT)", o->checkpoint);
        return free(t), -1;
    }
    int rc = 0;
    if (o->global[0])
        rc = train_verify_global(o, c, sha, err, errlen);
    if (rc == 0)
        rc = train_load(t, resume, sha, err, errlen);
    t->inner_from = -1;
    if (rc == 0 && o->inner_keep && !resume[0])
        rc = train_inner_load(t, err, errlen);
    if (rc == 0 && o->prox > 0)
        rc = train_load_anchor(t, resume[0] != 0, err, errlen);
    if (rc == 0)
        rc = open_data(t, err, errlen);
    if (rc == 0)
        rc = flas_train_agree(c->world, train_log_open(&t->log, o, c->rank == 0, err, errlen) == 0, err, errlen);
    if (rc) {
        train_free(t);
        free(t);
        return -1;
    }
    char residual[FLAS_TRAIN_PATH_MAX + 64];
    if (o->update != FLAS_UPDATE_FULL && train_residual_path(o, (long)t->meta.round, residual, sizeof residual) == 0)
        train_remove_stale_temps(residual, c);
    size_round(t);
    init_clock(t, start, job_end);
    double peak = o->peak_gflops > 0 ? o->peak_gflops : train_measure_peak(o->precision);
    MPI_Allreduce(&peak, &t->peak_gflops, 1, MPI_DOUBLE, MPI_MIN, c->world);
    if (c->rank == 0) {
        flas_print_runtime_info(stdout, t->model.n_threads);
        printf("flas-train %s: %s round %lld, site %s%s%s: %d ranks = tp %d x dp %d%s; model %zu parameters "
               "(dim %d, %d layers, %d/%d heads, vocab %d); step = %d x %d tokens x %d accum x %d dp = %lld tokens; "
               "%s step %ld, target %ld steps; %s on %s, %s GEMM peak %.1f GFLOP/s per rank%s\n",
               FLAS_VERSION, resume[0] ? "resuming" : "starting", (long long)t->meta.round, t->meta.site,
               o->federation[0] ? ", federation " : "", o->federation, c->size, c->tp_size, c->dp_size,
               o->zero ? ", ZeRO-1" : "", t->model.table.n_params_full, t->cfg.dim, t->cfg.n_layers, t->cfg.n_heads,
               t->cfg.n_kv_heads, t->cfg.vocab_size, t->B, t->T, t->accum, c->dp_size,
               (long long)t->B * t->T * t->accum * c->dp_size, resume[0] ? "from" : "at", t->step,
               t->steps_target, flas_precision_name(o->precision), "cpu", flas_precision_name(o->precision),
               t->peak_gflops, o->peak_gflops > 0 ? " (given)" : " (measured)");
        char where[512];
        flas_train_comm_placement(c, where, sizeof where);
        printf("flas-train: %d rank%s on %d node%s: %s\n", c->size, c->size > 1 ? "s" : "", c->n_nodes,
               c->n_nodes > 1 ? "s" : "", where);
        if (c->tp_spans_nodes)
            printf("flas-train: warning: a tensor-parallel group spans nodes; place --tp consecutive ranks on one node\n");
        if (t->clock.end > 0)
            printf("flas-train: walltime: %.0f s left, keeping %.1f s for the checkpoint, validation and margin\n",
                   t->clock.end - start, flas_train_clock_reserve(&t->clock));
        fflush(stdout);
    }
    char *hosts = c->rank == 0 ? malloc((size_t)c->size * (FLAS_TRAIN_HOST_LEN + 3) + 3) : NULL;
    if (hosts)
        flas_train_comm_hosts_json(c, hosts, (size_t)c->size * (FLAS_TRAIN_HOST_LEN + 3) + 3);
    train_log_json(&t->log,
                   "{\"event\":\"start\",\"round\":%lld,\"site\":\"%s\",\"job_id\":\"%s\",\"resume\":%s,\"step\":%ld,"
                   "\"steps_target\":%ld,\"ranks\":%d,\"tp\":%d,\"dp\":%d,\"zero\":%d,\"threads\":%d,\"batch\":%d,"
                   "\"seq\":%d,\"accum\":%d,\"parameters\":%zu,\"peak_gflops\":%.2f,\"base_sha256\":\"%s\","
                   "\"nodes\":%d,\"hosts\":%s,\"device\":\"cpu\",\"precision\":\"%s\"}",
                   (long long)t->meta.round, t->meta.site, o->job_id, resume[0] ? "true" : "false", t->step,
                   t->steps_target, c->size, c->tp_size, c->dp_size, o->zero, t->model.n_threads, t->B, t->T,
                   t->accum, t->model.table.n_params_full, t->peak_gflops, t->meta.base_sha256, c->n_nodes,
                   hosts ? hosts : "[]", flas_precision_name(o->precision));
    free(hosts);
    /* Rates on the first progress line count from here: from the step a resume starts at, and not
     * the set-up time (loading, the peak measurement) before it. */
    t->log.last_step = t->step;
    t->log.last_time = flas_train_now();
    rc = train_round(t, err, errlen);
    if (rc == 0 && c->rank == 0) {
        char published[FLAS_TRAIN_PATH_MAX + 64] = "";
        if (o->update != FLAS_UPDATE_FULL)
            snprintf(published, sizeof published, "; published update (%s) %s", flas_update_enc_name(o->update),
                     o->output);
        else if (o->inner_keep)
            snprintf(published, sizeof published, "; published weights %s", o->output);
        printf("flas-train: done: round %lld site %s: %ld steps, %lld tokens trained (%s), loss %.4f, "
               "validation loss %.4f, dp gradient reduction %.1f%% of step time; checkpoint %s%s\n",
               (long long)t->meta.round, t->meta.site, t->step, (long long)t->tokens_trained, t->stop_reason,
               t->n_losses ? t->losses[(t->n_losses - 1) % TRAIN_LOSS_WINDOW] : NAN, t->valid_loss,
               t->train_seconds > 0 ? 100.0 * c->reduce_seconds / t->train_seconds : 0.0, o->checkpoint, published);
        fflush(stdout);
    }
    train_log_json(&t->log,
                   "{\"event\":\"end\",\"ok\":%s,\"step\":%ld,\"tokens_trained\":%lld,\"reason\":\"%s\","
                   "\"train_seconds\":%.3f,\"dp_reduce_seconds\":%.3f}",
                   rc == 0 ? "true" : "false", t->step, (long long)t->tokens_trained,
                   t->stop_reason ? t->stop_reason : "error", t->train_seconds, c->reduce_seconds);
    train_free(t);
    free(t);
    return rc;
}

int flas_train_main(const flas_train_opts *o, MPI_Comm world, double job_end_unix)
{
    double start = flas_train_now();
    char err[TRAIN_ERR_MAX] = "";
    int rank;
    MPI_Comm_rank(world, &rank);
    flas_ckpt_hdf5_quiet();
    if (o->mode == FLAS_TRAIN_RUN && o->flas_error[0]) {
        if (rank == 0)
            fprintf(stderr, "flas-train: error: refusing to train: the federation plugin reports: %s\n", o->flas_error);
        return 1;
    }
    flas_train_comm c;
    int rc = flas_train_comm_init(&c, world, o->tp, err, sizeof err);
    if (rc == 0) {
        if (o->mode == FLAS_TRAIN_INIT)
            rc = train_init_global(o, &c, err, sizeof err);
        else if (o->mode == FLAS_TRAIN_EVAL)
            rc = train_eval_main(o, &c, err, sizeof err);
        else
            rc = run_round(o, &c, start, job_end_unix, err, sizeof err);
        flas_train_comm_free(&c);
    }
    if (rc && rank == 0) {
        fprintf(stderr, "flas-train: error: %s\n", err);
        fflush(stderr);
    }
    return rc ? 1 : 0;
}
