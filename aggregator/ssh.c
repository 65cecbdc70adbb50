/* SSH sessions for staging: strict host-key checking, key or agent authentication, remote commands,
 * and ProxyJump-style tunnelling through a jump host (libssh 0.10 has no native ProxyJump; a direct-
 * tcpip channel through the jump host is pumped into a socketpair that the target session runs over,
 * so both hops get libssh's own host-key checks). */
#include <errno.h>
#include <libssh/libssh.h>
#include <libssh/sftp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "flas/error.h"
#include "flas/stage.h"
#include "stage_internal.h"

int flas_shell_quote(const char *s, char *buf, size_t len)
{
    size_t o = 0;
    if (len < 3)
        return -1;
    buf[o++] = '\'';
    for (; *s; s++) {
        if (*s == '\'') {
            if (o + 5 >= len)
                return -1;
            memcpy(buf + o, "'\\''", 4);
            o += 4;
        } else {
            if (o + 2 >= len)
                return -1;
            buf[o++] = *s;
        }
    }
    buf[o++] = '\'';
    buf[o] = '\0';
    return 0;
}

/* The host key must match known_hosts; a new host is accepted only when asked, a changed one never. */
static int check_host_key(ssh_session ss, const flas_ssh_target *t, const char *host, int port, char *err,
                          size_t errlen)
{
    ssh_key key = NULL;
    char *fp = NULL;
    if (ssh_get_server_publickey(ss, &key) == SSH_OK) {
        unsigned char *hash = NULL;
        size_t hlen = 0;
        if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) == 0) {
            fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
            ssh_clean_pubkey_hash(&hash);
        }
        ssh_key_free(key);
    }
    const char *shown = fp ? fp : "(unknown fingerprint)";
    int rc = -1;
    switch (ssh_session_is_known_server(ss)) {
    case SSH_KNOWN_HOSTS_OK:
        rc = 0;
        break;
    case SSH_KNOWN_HOSTS_CHANGED:
        flas_fail(err, errlen,
                   "host key of %s:%d has CHANGED (now %s) from the one in %s: refusing to connect (possible "
                   "man-in-the-middle; if the site really changed its key, update known_hosts)",
                   host, port, shown, t->known_hosts);
        break;
    case SSH_KNOWN_HOSTS_OTHER:
        flas_fail(err, errlen, "%s:%d offers a key of another type (%s) than the one in %s: refusing", host, port,
                   shown, t->known_hosts);
        break;
    case SSH_KNOWN_HOSTS_NOT_FOUND:
    case SSH_KNOWN_HOSTS_UNKNOWN:
        if (t->trust_new_host && ssh_session_update_known_hosts(ss) == SSH_OK) {
            fprintf(stderr, "flas-stage: trusting new host %s:%d (%s), recorded in %s\n", host, port, shown,
                    t->known_hosts);
            rc = 0;
        } else {
            flas_fail(err, errlen, "host key of %s:%d (%s) is not in %s: refusing to connect to an unknown host",
                       host, port, shown, t->known_hosts);
        }
        break;
    default:
        flas_fail(err, errlen, "cannot check the host key of %s:%d: %s", host, port, ssh_get_error(ss));
    }
    ssh_string_free_char(fp);
    return rc;
}

static int authenticate(ssh_session ss, const flas_ssh_target *t, const char *user, const char *host, char *err,
                        size_t errlen)
{
    int rc;
    if (t->identity[0]) {
        ssh_key key = NULL;
        if (ssh_pki_import_privkey_file(t->identity, NULL, NULL, NULL, &key) != SSH_OK)
            return flas_fail(err, errlen, "cannot read private key %s (a passphrase-protected key needs ssh-agent)",
                              t->identity);
        rc = ssh_userauth_publickey(ss, NULL, key);
        ssh_key_free(key);
    } else {
        rc = ssh_userauth_agent(ss, NULL);
    }
    if (rc != SSH_AUTH_SUCCESS)
        return flas_fail(err, errlen, "%s@%s: public-key authentication failed (%s)", user, host,
                          t->identity[0] ? t->identity : "ssh-agent");
    return 0;
}

/* A libssh session to host:port as user, host key checked, authenticated. fd >= 0: run over that socket. */
static ssh_session open_session(const flas_ssh_target *t, const char *host, int port, const char *user, int fd,
                                char *err, size_t errlen)
{
    ssh_session ss = ssh_new();
    if (!ss) {
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    long timeout = t->timeout_s > 0 ? t->timeout_s : 30;
    int no = 0;
    /* Only the given known_hosts file, no ~/.ssh/config surprises. */
    ssh_options_set(ss, SSH_OPTIONS_PROCESS_CONFIG, &no);
    ssh_options_set(ss, SSH_OPTIONS_HOST, host);
    ssh_options_set(ss, SSH_OPTIONS_PORT, &port);
    ssh_options_set(ss, SSH_OPTIONS_USER, user);
    ssh_options_set(ss, SSH_OPTIONS_KNOWNHOSTS, t->known_hosts);
    ssh_options_set(ss, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
    ssh_options_set(ss, SSH_OPTIONS_TIMEOUT, &timeout);
    /* Cipher order by direction, as measured with libssh 0.10 on the test bed (bench-stage.sh): our
     * AES-GCM encryption is faster than ChaCha20 (uploads), its AES-GCM decryption slower (downloads). */
    ssh_options_set(ss, SSH_OPTIONS_CIPHERS_C_S,
                    "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr");
    ssh_options_set(ss, SSH_OPTIONS_CIPHERS_S_C,
                    "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr");
    if (fd >= 0)
        ssh_options_set(ss, SSH_OPTIONS_FD, &fd);
    if (ssh_connect(ss) != SSH_OK) {
        flas_fail(err, errlen, "cannot connect to %s:%d: %s", host, port, ssh_get_error(ss));
        ssh_free(ss);
        return NULL;
    }
    if (check_host_key(ss, t, host, port, err, errlen) || authenticate(ss, t, user, host, err, errlen)) {
        ssh_disconnect(ss);
        ssh_free(ss);
        return NULL;
    }
    return ss;
}

/* Copies bytes both ways between the jump host's channel and our end of the socketpair. */
static void *pump_jump(void *arg)
{
    flas_ssh *s = arg;
    char buf[65536];
    while (!s->jump_stop) {
        struct pollfd p = {s->jump_fd, POLLIN, 0};
        int moved = 0;
        if (poll(&p, 1, 0) > 0) {
            ssize_t n = read(s->jump_fd, buf, sizeof buf);
            if (n <= 0)
                break;
            if (ssh_channel_write(s->jump_channel, buf, (uint32_t)n) != n)
                break;
            moved = 1;
        }
        int n = ssh_channel_read_timeout(s->jump_channel, buf, sizeof buf, 0, moved ? 0 : 10);
        if (n == SSH_ERROR || (n == 0 && ssh_channel_is_eof(s->jump_channel)))
            break;
        for (int off = 0; off < n;) {
            ssize_t w = write(s->jump_fd, buf + off, (size_t)(n - off));
            if (w <= 0)
                goto out;
            off += (int)w;
        }
    }
out:
    shutdown(s->jump_fd, SHUT_RDWR);
    return NULL;
}

static int open_jump(flas_ssh *s, const flas_ssh_target *t, int port, int *target_fd, char *err, size_t errlen)
{
    int jport = t->jump_port > 0 ? t->jump_port : 22;
    const char *juser = t->jump_user[0] ? t->jump_user : t->user;
    s->jump = open_session(t, t->jump_host, jport, juser, -1, err, errlen);
    if (!s->jump)
        return -1;
    s->jump_channel = ssh_channel_new(s->jump);
    if (!s->jump_channel || ssh_channel_open_forward(s->jump_channel, t->host, port, "127.0.0.1", 0) != SSH_OK)
        return flas_fail(err, errlen, "jump host %s cannot open a tunnel to %s:%d: %s", t->jump_host, t->host, port,
                          ssh_get_error(s->jump));
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair))
        return flas_fail(err, errlen, "socketpair: %s", strerror(errno));
    s->jump_fd = pair[1];
    *target_fd = pair[0];
    if (pthread_create(&s->jump_thread, NULL, pump_jump, s)) {
        close(pair[0]);
        return flas_fail(err, errlen, "cannot start the jump-host tunnel");
    }
    s->jump_thread_started = 1;
    return 0;
}

flas_ssh *flas_ssh_connect(const flas_ssh_target *t, char *err, size_t errlen)
{
    flas_ssh *s = calloc(1, sizeof *s);
    if (!s) {
        flas_fail(err, errlen, "out of memory");
        return NULL;
    }
    s->jump_fd = -1;
    s->io_timeout_s = t->timeout_s > 0 ? t->timeout_s : 30;
    int port = t->port > 0 ? t->port : 22, fd = -1;
    snprintf(s->where, sizeof s->where, "%s@%s:%d", t->user, t->host, port);
    if (!t->known_hosts[0] || access(t->known_hosts, R_OK)) {
        flas_fail(err, errlen, "known_hosts file '%s' is missing or unreadable: host keys must be verified",
                   t->known_hosts);
        free(s);
        return NULL;
    }
    if (t->jump_host[0] && open_jump(s, t, port, &fd, err, errlen)) {
        flas_ssh_close(s);
        return NULL;
    }
    s->session = open_session(t, t->host, port, t->user, fd, err, errlen);
    if (!s->session) {
        flas_ssh_close(s);
        return NULL;
    }
    s->sftp = sftp_new(s->session);
    if (!s->sftp || sftp_init(s->sftp) != SSH_OK) {
        flas_fail(err, errlen, "%s: cannot start SFTP: %s", s->where, ssh_get_error(s->session));
        flas_ssh_close(s);
        return NULL;
    }
    return s;
}

void flas_ssh_close(flas_ssh *s)
{
    if (!s)
        return;
    if (s->sftp)
        sftp_free(s->sftp);
    if (s->session) {
        ssh_disconnect(s->session);
        ssh_free(s->session);
    }
    if (s->jump_thread_started) {
        s->jump_stop = 1;
        pthread_join(s->jump_thread, NULL);
    }
    if (s->jump_fd >= 0)
        close(s->jump_fd);
    if (s->jump_channel) {
        ssh_channel_close(s->jump_channel);
        ssh_channel_free(s->jump_channel);
    }
    if (s->jump) {
        ssh_disconnect(s->jump);
        ssh_free(s->jump);
    }
    free(s);
}

/* Appends what a stream has to out (truncating silently beyond len); returns bytes read or -1. */
static int drain(ssh_channel ch, int is_stderr, char *out, size_t len, size_t *used)
{
    char buf[8192];
    int n = ssh_channel_read_nonblocking(ch, buf, sizeof buf, is_stderr);
    if (n == SSH_EOF)
        return 0;
    if (n > 0 && out && *used + 1 < len) {
        size_t take = (size_t)n < len - 1 - *used ? (size_t)n : len - 1 - *used;
        memcpy(out + *used, buf, take);
        *used += take;
        out[*used] = '\0';
    }
    return n;
}

void flas_ssh_set_exec_limit(flas_ssh *s, double seconds) { s->exec_limit_s = seconds > 0 ? seconds : 0; }

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* libssh's own waits (the exit status, closing the channel) use the session's I/O timeout: it is lowered
 * to what is left of the exec limit (at least 1 s), so those waits cannot overrun the limit either. */
static void set_io_timeout(flas_ssh *s, long seconds)
{
    ssh_options_set(s->session, SSH_OPTIONS_TIMEOUT, &seconds);
}

int flas_ssh_exec(flas_ssh *s, const char *cmd, char *out, size_t outlen, char *errout, size_t errout_len,
                  int *status, char *err, size_t errlen)
{
    size_t used_out = 0, used_err = 0;
    const double limit = s->exec_limit_s, end = mono_s() + limit;
    if (out && outlen)
        out[0] = '\0';
    if (errout && errout_len)
        errout[0] = '\0';
    if (status)
        *status = -1;
    ssh_channel ch = ssh_channel_new(s->session);
    if (!ch || ssh_channel_open_session(ch) != SSH_OK || ssh_channel_request_exec(ch, cmd) != SSH_OK) {
        flas_fail(err, errlen, "%s: cannot run a command: %s", s->where, ssh_get_error(s->session));
        if (ch)
            ssh_channel_free(ch);
        return -1;
    }
    int rc = 0, expired = 0;
    while (!ssh_channel_is_eof(ch)) {
        int a = drain(ch, 0, out, outlen, &used_out), b = drain(ch, 1, errout, errout_len, &used_err);
        if (a < 0 || b < 0) {
            rc = flas_fail(err, errlen, "%s: connection lost while running a command", s->where);
            break;
        }
        double left = limit > 0 ? end - mono_s() : 1;
        if (left <= 0) {
            expired = 1;
            rc = flas_fail(err, errlen, "%s: remote command ran past its limit of %g s", s->where, limit);
            break;
        }
        int wait_ms = left < 0.2 ? (int)(left * 1000) + 1 : 200;
        if (a == 0 && b == 0 && ssh_channel_poll_timeout(ch, wait_ms, 0) == SSH_ERROR) {
            rc = flas_fail(err, errlen, "%s: connection lost while running a command", s->where);
            break;
        }
    }
    while (rc == 0 && (drain(ch, 0, out, outlen, &used_out) > 0 || drain(ch, 1, errout, errout_len, &used_err) > 0))
        ;
    if (limit > 0) {
        double left = end - mono_s();
        long t = left < 1 ? 1 : (long)left + 1;
        set_io_timeout(s, t < s->io_timeout_s ? t : s->io_timeout_s);
    }
    int exit_status = -1;
    if (expired) {
        /* Closing the channel alone leaves a command without a terminal running at the site: ask sshd
         * to kill it (OpenSSH >= 7.9; an older one ignores the request and the command runs on). */
        ssh_channel_request_send_signal(ch, "KILL");
    } else {
        ssh_channel_send_eof(ch);
        exit_status = ssh_channel_get_exit_status(ch);
    }
    ssh_channel_close(ch);
    ssh_channel_free(ch);
    if (limit > 0)
        set_io_timeout(s, s->io_timeout_s);
    if (status)
        *status = exit_status;
    return rc;
}
