/* Root-side work of the plugin: the prolog prepares and verifies, the epilog publishes (see job.h).
 * Every file is reached through safefs from the trusted staging root, never by a path a user wrote. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "flas/error.h"
#include "flas/staging.h"
#include "job.h"
#include "safefs.h"

typedef struct {
    int root, fed, state;
} stage_fds;

static void close_fds(stage_fds *s)
{
    if (s->state >= 0)
        close(s->state);
    if (s->fed >= 0)
        close(s->fed);
    if (s->root >= 0)
        close(s->root);
}

/* The federation directory and its state/ directory, root-owned, created when create is set. */
static int open_stage(const flas_federation_conf *fed, int create, stage_fds *s, char *err, size_t errlen)
{
    s->root = s->fed = s->state = -1;
    char e[256];
    s->root = safefs_open_trusted_root(fed->staging_root, e, sizeof e);
    if (s->root < 0)
        return flas_fail(err, errlen, "StagingRoot of federation '%s': %s", fed->name, e);
    s->fed = safefs_open_dir(s->root, fed->name, create, 0755, 0, 0, 0, e, sizeof e);
    if (s->fed >= 0)
        s->state = safefs_open_dir(s->fed, FLAS_STAGE_STATE, create, 0755, 0, 0, 0, e, sizeof e);
    if (s->state < 0) {
        close_fds(s);
        return flas_fail(err, errlen, "%s/%s: %s", fed->staging_root, fed->name, e);
    }
    return 0;
}

static int write_record(const stage_fds *s, unsigned long jobid, const flas_job_record *rec, char *err,
                        size_t errlen)
{
    char name[32], text[1024], e[512];
    snprintf(name, sizeof name, "%lu", jobid);
    if (flas_job_record_format(rec, text, sizeof text) < 0 ||
        safefs_write_atomic(s->state, name, text, strlen(text), 0644, 0, 0, 0, e, sizeof e) < 0)
        return flas_fail(err, errlen, "state/%s: %s", name, e);
    return 0;
}

/* "HEX  name\n" (sha256sum format) -> hex; 0 if well formed. */
static int parse_sidecar(const char *text, char hex[FLAS_SHA256_HEX_LEN + 1])
{
    if (strlen(text) < FLAS_SHA256_HEX_LEN)
        return -1;
    memcpy(hex, text, FLAS_SHA256_HEX_LEN);
    hex[FLAS_SHA256_HEX_LEN] = '\0';
    char c = text[FLAS_SHA256_HEX_LEN];
    return flas_sha256_is_hex(hex) && (c == '\0' || c == ' ' || c == '\n') ? 0 : -1;
}

/* Verifies global/round-K.h5 against its sidecar, reusing state/verified-round-K when the file is the
 * same inode, size and mtime as when it was last hashed. 0 and sha filled, or -1 with the reason. */
static int verify_global(const stage_fds *s, long round, char sha[FLAS_SHA256_HEX_LEN + 1], char *why,
                         size_t whylen)
{
    char e[256], name[32], side[48], cache_name[48], text[256], cache[512], want[FLAS_SHA256_HEX_LEN + 1];
    int gdir = safefs_open_dir(s->fed, FLAS_STAGE_GLOBAL, 0, 0, 0, 0, SAFEFS_ANY_OWNER, e, sizeof e);
    if (gdir < 0) {
        snprintf(why, whylen, "no global/ directory in the staging area: %s", e);
        return -1;
    }
    flas_stage_global_name(name, sizeof name, round);
    snprintf(side, sizeof side, "%s%s", name, FLAS_STAGE_SHA256_SUFFIX);
    int got = safefs_read_small(gdir, side, text, sizeof text - 1, e, sizeof e);
    if (got < 0 || parse_sidecar(text, want)) {
        snprintf(why, whylen, "global model of round %ld has no valid %s (%s)", round, side,
                 got < 0 ? e : "not in sha256sum format");
        close(gdir);
        return -1;
    }
    struct stat st;
    int fd = safefs_open_regular(gdir, name, &st, e, sizeof e);
    close(gdir);
    if (fd < 0) {
        snprintf(why, whylen, "global model of round %ld: %s", round, e);
        return -1;
    }
    char identity[256];
    snprintf(identity, sizeof identity, "dev=%lu ino=%lu size=%lld mtime=%lld.%09ld sha256=%s\n",
             (unsigned long)st.st_dev, (unsigned long)st.st_ino, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec, want);
    char rdir[32];
    flas_stage_round_dir(rdir, sizeof rdir, round);
    snprintf(cache_name, sizeof cache_name, "verified-%s", rdir);
    if (safefs_read_small(s->state, cache_name, cache, sizeof cache - 1, e, sizeof e) >= 0 &&
        strcmp(cache, identity) == 0) {
        close(fd);
        memcpy(sha, want, sizeof want);
        return 0;
    }
    int64_t n = flas_sha256_fd(fd, sha);
    close(fd);
    if (n != (int64_t)st.st_size) {
        snprintf(why, whylen, "global model of round %ld: read error while hashing", round);
        return -1;
    }
    if (strcmp(sha, want)) {
        snprintf(why, whylen, "global model of round %ld failed verification: sha256 %s, expected %s", round, sha,
                 want);
        return -1;
    }
    safefs_write_atomic(s->state, cache_name, identity, strlen(identity), 0644, 0, 0, 0, e, sizeof e);
    return 0;
}

static int access_ok(const flas_job *job, char *why, size_t whylen)
{
    gid_t groups[256];
    int ngroups = 256;
    if (getgrouplist(job->user, job->gid, groups, &ngroups) < 0)
        ngroups = 0;
    return flas_conf_allows(job->fed, job->user, job->gid, groups, ngroups, job->account, why, whylen);
}

int flas_prolog(const flas_job *job, char *err, size_t errlen)
{
    stage_fds s;
    if (open_stage(job->fed, 1, &s, err, errlen))
        return -1;
    flas_job_record rec;
    memset(&rec, 0, sizeof rec);
    snprintf(rec.federation, sizeof rec.federation, "%s", job->fed->name);
    rec.round = job->round;
    char e[256];
    int jobs = safefs_open_dir(s.fed, FLAS_STAGE_JOBS, 1, 0755, 0, 0, 0, e, sizeof e);
    if (jobs < 0) {
        close_fds(&s);
        return flas_fail(err, errlen, "%s/%s/%s: %s", job->fed->staging_root, job->fed->name, FLAS_STAGE_JOBS, e);
    }
    if (access_ok(job, rec.error, sizeof rec.error) == 0) {
        if (rec.round < 0) {
            int gdir = safefs_open_dir(s.fed, FLAS_STAGE_GLOBAL, 0, 0, 0, 0, SAFEFS_ANY_OWNER, e, sizeof e);
            rec.round = gdir < 0 ? -1 : flas_newest_round_fd(gdir);
            if (gdir >= 0)
                close(gdir);
        }
        if (rec.round < 0)
            snprintf(rec.error, sizeof rec.error, "no global model is staged for federation '%s'", job->fed->name);
        else if (verify_global(&s, rec.round, rec.sha256, rec.error, sizeof rec.error) == 0) {
            char name[32];
            snprintf(name, sizeof name, "%lu", job->jobid);
            int d = safefs_open_dir(jobs, name, 1, 0700, job->uid, job->gid, job->uid, e, sizeof e);
            if (d < 0)
                snprintf(rec.error, sizeof rec.error, "cannot prepare the job directory: %s", e);
            else
                close(d);
        }
        if (rec.error[0])
            rec.sha256[0] = '\0';
    }
    close(jobs);
    int rc = write_record(&s, job->jobid, &rec, err, errlen);
    close_fds(&s);
    return rc;
}

/* JSON string body: the manifest's free text (error messages) may hold quotes or backslashes. */
static void json_escape(const char *in, char *out, size_t len)
{
    size_t o = 0;
    for (; *in && o + 7 < len; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, len - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

/* COMPLETED, FAILED, or SIGNALED (cancelled, time limit or preemption: the coordinator asks Slurm). */
/* COMPLETED, FAILED, SIGNALED (cancelled, time limit or preemption: the coordinator asks Slurm which),
 * or UNKNOWN when neither the batch step nor Slurm told. */
static const char *job_state(const flas_job *job)
{
    if (!job->exit_known)
        return "UNKNOWN";
    if (job->signal)
        return "SIGNALED";
    return job->exit_code ? "FAILED" : "COMPLETED";
}

int flas_record_batch_exit(const flas_federation_conf *fed, unsigned long jobid, int wait_status, char *err,
                           size_t errlen)
{
    stage_fds s;
    if (open_stage(fed, 0, &s, err, errlen))
        return -1;
    char name[48], text[64], e[256];
    snprintf(name, sizeof name, "%lu.exit", jobid);
    int n = snprintf(text, sizeof text, "status=%d\n", wait_status);
    int rc = safefs_write_atomic(s.state, name, text, (size_t)n, 0644, 0, 0, 0, e, sizeof e) < 0 ? -1 : 0;
    if (rc)
        snprintf(err, errlen, "state/%s: %s", name, e);
    close_fds(&s);
    return rc;
}

/* The batch script's end as the batch step recorded it (preferred), else as the epilog's environment
 * says; a copy of job with exit_known/exit_code/signal filled. */
static flas_job with_exit(const flas_job *job, int state_dir)
{
    flas_job j = *job;
    char name[48], text[64], e[256];
    int status;
    snprintf(name, sizeof name, "%lu.exit", job->jobid);
    if (safefs_read_small(state_dir, name, text, sizeof text - 1, e, sizeof e) >= 0 &&
        sscanf(text, "status=%d", &status) == 1) {
        j.exit_known = 1;
        j.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        j.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    }
    return j;
}

typedef struct {
    char name[FLAS_CONF_NAME_MAX + 48];
    int64_t size;
    char sha256[FLAS_SHA256_HEX_LEN + 1];
    char error[512];
} published;

/* Limits on hashing the checkpoint. The epilog runs as root and Slurm keeps the node COMPLETING (no new
 * job starts on it) until it ends, but the file is the user's: its size, its holes and whether it is
 * still being written are the user's choice, and the node must not pay for a user's mistake.
 *
 * 300 s hashes ~500 GB at the 1.8 GB/s one core reaches from memory (docs/admin.md), or ~150 GB from a
 * shared file system that delivers 0.5 GB/s; a 7B model in fp32 with its AdamW moments is ~81 GB. A
 * checkpoint that takes longer is refused: the job's result is lost, the node is not held. */
#define CHECKPOINT_HASH_LIMIT_S 300
/* The deadline is checked between chunks: 8 MiB hashes in ~5 ms, and one pread of a 1 MiB block cannot
 * be interrupted anyway (flas_sha256_update_fd). */
#define CHECKPOINT_HASH_CHUNK ((int64_t)8 << 20)

static int64_t monotonic_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int same_time(struct timespec a, struct timespec b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

/* Did the file change between the fstat() before hashing (a) and the one after (b)? Size and mtime show
 * a write, ctime (which the user cannot set) a write whose mtime was put back. A write within the clock
 * tick of the previous one can keep all three; the coordinator checks the file against the manifest's
 * sha256 when it fetches it, so that costs a refetch, not a wrong model. One change is not the user's: in
 * a multi-node job every node runs the epilog, and the first to finish links the inode into the outbox
 * (one more link, new ctime) while the others are still hashing. Only root can link there. */
static int changed_while_hashed(const struct stat *a, const struct stat *b, int round_dir, const char *name)
{
    if (a->st_size != b->st_size || !same_time(a->st_mtim, b->st_mtim))
        return 1;
    if (same_time(a->st_ctim, b->st_ctim) && a->st_nlink == b->st_nlink)
        return 0;
    struct stat out;
    return !(b->st_nlink == a->st_nlink + 1 && fstatat(round_dir, name, &out, AT_SYMLINK_NOFOLLOW) == 0 &&
             out.st_dev == b->st_dev && out.st_ino == b->st_ino);
}

/* Hashes exactly st->st_size bytes of fd (a user's checkpoint that st describes, name its published name
 * in round_dir), within CHECKPOINT_HASH_LIMIT_S. 0 and sha filled, or -1 with the reason in why. */
static int hash_checkpoint(int fd, const struct stat *st, int round_dir, const char *name,
                           char sha[FLAS_SHA256_HEX_LEN + 1], char *why, size_t whylen)
{
    /* A sparse file costs the user neither time nor quota (truncate -s 1T) and root hours of hashing
     * zeros. FLaS checkpoints are dense: every byte of every tensor is written, and the only holes are
     * the parallel writer's alignment gaps (under 1 MiB per tensor of 1 MiB or more: 8% of a 537 MB model,
     * docs/performance.md). Half leaves room for those, for metadata not yet counted and for file systems
     * that report compressed allocation (float data rarely compresses to half), and still refuses a file
     * that is mostly holes. Files of one chunk or less cost nothing to hash whatever their allocation
     * (small ones may live inside the inode with no blocks of their own), so they are not judged. */
    int64_t allocated = (int64_t)st->st_blocks * 512;
    if (st->st_size > CHECKPOINT_HASH_CHUNK && allocated < st->st_size / 2) {
        snprintf(why, whylen, "checkpoint refused: sparse file (%lld bytes allocated for %lld bytes)",
                 (long long)allocated, (long long)st->st_size);
        return -1;
    }
    flas_sha256_ctx *c = flas_sha256_begin();
    if (!c) {
        snprintf(why, whylen, "cannot publish the checkpoint: no sha256 context");
        return -1;
    }
    int64_t deadline = monotonic_ns() + (int64_t)CHECKPOINT_HASH_LIMIT_S * 1000000000;
    int64_t done = 0;
    int timed_out = 0, read_errno = 0;
    while (done < st->st_size) {
        if (monotonic_ns() >= deadline) {
            timed_out = 1;
            break;
        }
        int64_t n = st->st_size - done < CHECKPOINT_HASH_CHUNK ? st->st_size - done : CHECKPOINT_HASH_CHUNK;
        errno = 0;
        if (flas_sha256_update_fd(c, fd, done, n)) {
            read_errno = errno ? errno : EIO; /* 0: the file ended early (truncated) */
            break;
        }
        done += n;
    }
    char hex[FLAS_SHA256_HEX_LEN + 1];
    int hashed = flas_sha256_end(c, hex) == 0 && done == st->st_size;
    struct stat after;
    if (timed_out) {
        snprintf(why, whylen, "checkpoint refused: not hashed within %d s (%lld of %lld bytes read)",
                 CHECKPOINT_HASH_LIMIT_S, (long long)done, (long long)st->st_size);
        return -1;
    }
    /* The published sha256 must be that of the published file: a file written to meanwhile (or a read
     * that failed because it was truncated) is refused, not published with a hash of neither version. */
    if (fstat(fd, &after) == 0 && changed_while_hashed(st, &after, round_dir, name)) {
        snprintf(why, whylen, "checkpoint changed while it was being hashed (%lld bytes, then %lld)",
                 (long long)st->st_size, (long long)after.st_size);
        return -1;
    }
    if (!hashed) {
        snprintf(why, whylen, "cannot publish the checkpoint: read error: %s",
                 read_errno ? strerror(read_errno) : "sha256 failed");
        return -1;
    }
    memcpy(sha, hex, sizeof hex);
    return 0;
}

/* Links jobs/<jobid>/local.h5 into the round's outbox if it is a plain file of the job's user. */
static void publish_checkpoint(const flas_job *job, int fed, int round_dir, published *p)
{
    char e[256], jobname[32];
    snprintf(jobname, sizeof jobname, "%lu", job->jobid);
    p->name[0] = '\0';
    p->size = -1;
    int jobs = safefs_open_dir(fed, FLAS_STAGE_JOBS, 0, 0, 0, 0, 0, e, sizeof e);
    int dir = jobs < 0 ? -1 : safefs_open_dir(jobs, jobname, 0, 0, 0, 0, job->uid, e, sizeof e);
    if (jobs >= 0)
        close(jobs);
    if (dir < 0) {
        snprintf(p->error, sizeof p->error, "job directory: %s", e);
        return;
    }
    struct stat st;
    int fd = safefs_open_regular(dir, FLAS_STAGE_LOCAL_CHECKPOINT, &st, e, sizeof e);
    close(dir);
    if (fd < 0) {
        snprintf(p->error, sizeof p->error, "no checkpoint: %s", e);
        return;
    }
    /* A second link could be a file the user does not own the content of (e.g. hard-linked in). */
    if (st.st_uid != job->uid || st.st_nlink != 1 || st.st_size == 0) {
        snprintf(p->error, sizeof p->error, "checkpoint refused: owner uid %u, %lu links, %lld bytes",
                 (unsigned)st.st_uid, (unsigned long)st.st_nlink, (long long)st.st_size);
        close(fd);
        return;
    }
    flas_stage_published_name(p->name, sizeof p->name, job->fed->site, job->jobid, ".h5");
    if (hash_checkpoint(fd, &st, round_dir, p->name, p->sha256, p->error, sizeof p->error)) {
        p->name[0] = '\0';
        close(fd);
        return;
    }
    p->size = st.st_size;
    if (safefs_link_fd(fd, round_dir, p->name, 1, e, sizeof e) < 0) {
        snprintf(p->error, sizeof p->error, "cannot publish the checkpoint: %s", e);
        p->name[0] = '\0';
    }
    close(fd);
}

static int write_manifest(const flas_job *job, const flas_job_record *rec, int round_dir, const published *p,
                          char *err, size_t errlen)
{
    char name[FLAS_CONF_NAME_MAX + 64], when[32], error[1100], text[4096], e[256], ckpt[FLAS_CONF_NAME_MAX + 64];
    flas_stage_published_name(name, sizeof name, job->fed->site, job->jobid, FLAS_STAGE_MANIFEST_SUFFIX);
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    const char *why = rec->error[0] ? rec->error : p->error;
    json_escape(why, error, sizeof error);
    if (p->name[0])
        snprintf(ckpt, sizeof ckpt, "\"%s\"", p->name);
    else
        snprintf(ckpt, sizeof ckpt, "null");
    int n = snprintf(text, sizeof text,
                     "{\n  \"format\": \"flas-manifest\",\n  \"version\": 1,\n  \"federation\": \"%s\",\n"
                     "  \"site\": \"%s\",\n  \"round\": %ld,\n  \"job_id\": %lu,\n  \"user\": \"%s\",\n"
                     "  \"uid\": %u,\n  \"node\": \"%s\",\n  \"job_state\": \"%s\",\n  \"exit_code\": %d,\n"
                     "  \"signal\": %d,\n  \"checkpoint\": %s,\n  \"size\": %lld,\n  \"sha256\": \"%s\",\n"
                     "  \"base_sha256\": \"%s\",\n  \"error\": \"%s\",\n  \"published_at\": \"%s\"\n}\n",
                     job->fed->name, job->fed->site, rec->round, job->jobid, job->user, (unsigned)job->uid, job->node,
                     job_state(job), job->exit_code, job->signal, ckpt, p->name[0] ? (long long)p->size : -1LL,
                     p->name[0] ? p->sha256 : "", rec->sha256, error, when);
    if (n < 0 || (size_t)n >= sizeof text)
        return flas_fail(err, errlen, "manifest too long");
    /* Root-owned: the manifest is the site's statement about the job, not the user's. */
    if (safefs_write_atomic(round_dir, name, text, (size_t)n, 0644, 0, 0, 1, e, sizeof e) < 0)
        return flas_fail(err, errlen, "outbox: %s", e);
    return 0;
}

int flas_hostlist_first(const char *hostlist, char *out, size_t len)
{
    size_t o = 0;
    const char *p = hostlist;
    /* Host names are letters, digits, '-', '_' and '.'; a bracket holds ranges "a-b" or numbers, comma
     * separated, of which the first number (with its zero padding) is the first host's. */
    while (*p && *p != ',') {
        if (*p == '[') {
            const char *d = ++p;
            while (*p >= '0' && *p <= '9')
                p++;
            if (p == d || (*p != '-' && *p != ',' && *p != ']'))
                return -1;
            if ((size_t)(p - d) >= len - o)
                return -1;
            memcpy(out + o, d, (size_t)(p - d));
            o += (size_t)(p - d);
            while (*p && *p != ']')
                if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == ','))
                    return -1;
                else
                    p++;
            if (*p++ != ']')
                return -1;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return -1;
        if (o + 1 >= len)
            return -1;
        out[o++] = *p++;
    }
    if (o == 0 || len == 0)
        return -1;
    out[o] = '\0';
    return 0;
}

int flas_epilog(const flas_job *job, char *err, size_t errlen)
{
    /* Every node of a job runs the epilog. One publishes, the job's first node (its batch host): a
     * second node would find the checkpoint already linked into the outbox (two links, refused) and
     * replace the first node's manifest with its refusal. */
    if (job->first_node[0] && job->node[0] && strcmp(job->first_node, job->node)) {
        snprintf(err, errlen, "job %lu: published by its first node %s, not here", job->jobid, job->first_node);
        return 0;
    }
    stage_fds s;
    if (open_stage(job->fed, 0, &s, err, errlen))
        return -1;
    flas_job_record rec;
    char e[256], text[1024], jobname[32], rname[32];
    snprintf(jobname, sizeof jobname, "%lu", job->jobid);
    /* No usable prolog record (no round to file it under): nothing to publish. */
    const char *none = NULL;
    if (safefs_read_small(s.state, jobname, text, sizeof text - 1, e, sizeof e) < 0)
        none = e;
    else if (flas_job_record_parse(text, &rec))
        none = "malformed prolog record";
    if (none || rec.round < 0) {
        close_fds(&s);
        if (none)
            snprintf(err, errlen, "job %lu: nothing to publish (%s)", job->jobid, none);
        else
            snprintf(err, errlen, "job %lu: nothing to publish (the prolog chose no round: %s)", job->jobid,
                     rec.error);
        return 0;
    }
    flas_stage_round_dir(rname, sizeof rname, rec.round);
    int outbox = safefs_open_dir(s.fed, FLAS_STAGE_OUTBOX, 1, 0755, 0, 0, 0, e, sizeof e);
    int round_dir = outbox < 0 ? -1 : safefs_open_dir(outbox, rname, 1, 0755, 0, 0, 0, e, sizeof e);
    if (outbox >= 0)
        close(outbox);
    if (round_dir < 0) {
        close_fds(&s);
        return flas_fail(err, errlen, "outbox/%s: %s", rname, e);
    }
    published p;
    memset(&p, 0, sizeof p);
    if (!rec.error[0])
        publish_checkpoint(job, s.fed, round_dir, &p);
    flas_job ended = with_exit(job, s.state);
    int rc = write_manifest(&ended, &rec, round_dir, &p, err, errlen);
    close(round_dir);
    close_fds(&s);
    return rc;
}
