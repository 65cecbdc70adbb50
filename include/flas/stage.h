/* Verified, resumable staging of checkpoints over SSH (libssh): what the coordinator uses to move
 * global models to the sites and local checkpoints back.
 *
 * Trust: the site's host key must already be in the known_hosts file given (an unknown or changed key
 * is a refusal), or carry a host certificate of a CA that an @cert-authority line there trusts for the
 * host, unless the caller explicitly asks to trust a new host on first use; a key or CA listed by an
 * @revoked line is always refused. Nothing the remote
 * side says about a file is trusted: sizes are checked against what is expected, and every byte is
 * checked by sha256 (per chunk when resuming, whole file at the end) before the file gets its final
 * name. Writes are atomic at the receiver: "<dir>/.<name>.part" until verified, then renamed. */
#ifndef FLAS_STAGE_H
#define FLAS_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "flas/sha256.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct flas_ssh_target {
    char host[256];          /* name or address */
    int port;                /* 0: 22 */
    char user[64];
    char identity[1024];     /* private key file; "" = use ssh-agent (SSH_AUTH_SOCK) */
    char certificate[1024];  /* OpenSSH user certificate of that key; "": IDENTITY-cert.pub if it exists
                                (flas/ssh_cert.h) */
    char known_hosts[1024];  /* the ONLY known_hosts file consulted */
    int trust_new_host;      /* 1: accept and record a host key never seen before (never a changed one) */
    int timeout_s;           /* connect/IO timeout; 0: 30 s */
    /* ProxyJump-style: reach host through this jump host (its key must be in known_hosts too). */
    char jump_host[256];
    int jump_port;
    char jump_user[64];
} flas_ssh_target;

typedef struct flas_ssh flas_ssh; /* one authenticated session with its SFTP channel */

flas_ssh *flas_ssh_connect(const flas_ssh_target *target, char *err, size_t errlen);
void flas_ssh_close(flas_ssh *s);

/* Runs cmd at the remote side. out/errout receive (truncated) stdout/stderr, NUL-terminated; either may
 * be NULL. *status gets the exit status. 0, or -1 with err set if the command could not be run or ran
 * past the session's exec limit (then it is sent SIGKILL, its channel is closed and *status is -1). */
int flas_ssh_exec(flas_ssh *s, const char *cmd, char *out, size_t outlen, char *errout, size_t errout_len,
                  int *status, char *err, size_t errlen);

/* The wall-clock limit of every later flas_ssh_exec on this session, also those the transfers below run
 * at the site (hashing, renames): a site whose command hangs cannot stall the caller longer than this.
 * seconds <= 0: no limit (the default). */
void flas_ssh_set_exec_limit(flas_ssh *s, double seconds);

/* Quotes s for a POSIX shell ('...'); -1 if it does not fit. */
int flas_shell_quote(const char *s, char *buf, size_t len);

typedef struct flas_xfer_stats {
    int64_t size;          /* bytes of the file */
    int64_t resumed_at;    /* verified bytes already at the receiver when the transfer started */
    int64_t sent;          /* bytes moved by this call */
    double seconds;        /* wall time of the data movement */
    char sha256[FLAS_SHA256_HEX_LEN + 1];
} flas_xfer_stats;

typedef void (*flas_xfer_progress_fn)(const char *what, int64_t done, int64_t total, void *ctx);

typedef struct flas_xfer_opts {
    int64_t chunk;                 /* resume/verification granularity; 0: 8 MiB (multiple of 1 MiB) */
    int64_t max_size;              /* downloads larger than this are refused; 0: no limit */
    flas_xfer_progress_fn progress;
    void *progress_ctx;
} flas_xfer_opts;

/* Uploads local to remote (a path at the site). Resumes a previous partial upload from its longest
 * verified prefix; verifies the whole file by sha256 at the remote side before the rename. */
int flas_xfer_upload(flas_ssh *s, const char *local, const char *remote, const flas_xfer_opts *opts,
                      flas_xfer_stats *st, char *err, size_t errlen);

/* Downloads remote to local. expect_size (or -1) and expect_sha256 (or NULL, then the remote side's own
 * sha256sum is used) come from a manifest; a mismatch is a refusal and leaves only the .part file. */
int flas_xfer_download(flas_ssh *s, const char *remote, const char *local, int64_t expect_size,
                        const char *expect_sha256, const flas_xfer_opts *opts, flas_xfer_stats *st, char *err,
                        size_t errlen);

/* Writes a small file at the remote side atomically (temp name, fsync, rename). */
int flas_xfer_put_text(flas_ssh *s, const char *remote, const char *text, char *err, size_t errlen);
/* Reads a small remote file (at most max bytes; larger is a refusal) into buf (NUL-terminated). */
int flas_xfer_get_text(flas_ssh *s, const char *remote, char *buf, size_t max, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
