/* SSH sessions for staging: strict host-key checking, key or agent authentication, remote commands,
 * and ProxyJump-style tunnelling through a jump host (libssh 0.10 has no native ProxyJump; a direct-
 * tcpip channel through the jump host is pumped into a socketpair that the target session runs over,
 * so both hops get libssh's own host-key checks). */
#include <errno.h>
#include <netdb.h>
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
#include "flas/ssh_cert.h"
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

/* ---- host certificates ----------------------------------------------------------------------------
 * libssh 0.10 never offers a certificate host-key algorithm (ssh_client_select_hostkeys drops them), so
 * the session itself always gets the host's plain key, whose signature over the key exchange libssh
 * checks. A certificate is public: where it comes from does not matter, only that a trusted CA signed
 * it for this host and that the key inside is the key the session was verified with. So the host's
 * certificate is asked for in a key exchange of our own, carried only as far as the server's reply
 * (which holds its host key, here the certificate), on a second connection. */

typedef struct {
    int fd;            /* a TCP connection, or -1 */
    ssh_channel ch;    /* else a tunnel through the jump host */
    int timeout_ms;
} probe_io;

static int pio_write(probe_io *io, const unsigned char *b, size_t n)
{
    if (io->ch)
        return ssh_channel_write(io->ch, b, (uint32_t)n) == (int)n ? 0 : -1;
    for (size_t o = 0; o < n;) {
        ssize_t w = write(io->fd, b + o, n - o);
        if (w <= 0)
            return -1;
        o += (size_t)w;
    }
    return 0;
}

static int pio_read(probe_io *io, unsigned char *b, size_t n)
{
    for (size_t o = 0; o < n;) {
        int r;
        if (io->ch) {
            r = ssh_channel_read_timeout(io->ch, b + o, (uint32_t)(n - o), 0, io->timeout_ms);
        } else {
            struct pollfd p = {io->fd, POLLIN, 0};
            if (poll(&p, 1, io->timeout_ms) <= 0)
                return -1;
            r = (int)read(io->fd, b + o, n - o);
        }
        if (r <= 0)
            return -1;
        o += (size_t)r;
    }
    return 0;
}

static void put_u32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16), b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* One unencrypted binary packet (RFC 4253 6): length, padding length, payload, 4..11 bytes padding. */
static int send_packet(probe_io *io, const unsigned char *payload, size_t n)
{
    unsigned char buf[2048];
    size_t pad = 8 - (5 + n) % 8;
    if (pad < 4)
        pad += 8;
    if (5 + n + pad > sizeof buf)
        return -1;
    put_u32(buf, (uint32_t)(1 + n + pad));
    buf[4] = (unsigned char)pad;
    memcpy(buf + 5, payload, n);
    memset(buf + 5 + n, 0, pad);
    return pio_write(io, buf, 5 + n + pad);
}

/* The next packet's payload (at most 35000 bytes, RFC 4253 6.1); its length, or -1. */
static long read_packet(probe_io *io, unsigned char *buf, size_t len)
{
    unsigned char h[5];
    if (pio_read(io, h, 5))
        return -1;
    uint32_t plen = get_u32(h);
    if (plen < 5 || plen > 35000 || plen - 1 > len || h[4] >= plen - 1)
        return -1;
    if (pio_read(io, buf, plen - 1))
        return -1;
    return (long)(plen - 1 - h[4]);
}

static size_t put_str(unsigned char *b, const char *s)
{
    size_t n = strlen(s);
    put_u32(b, (uint32_t)n);
    memcpy(b + 4, s, n);
    return 4 + n;
}

/* Does the comma-separated list (SSH name-list) hold any of ours? */
static int lists_share(const unsigned char *list, size_t n, const char *ours)
{
    for (const char *o = ours; *o;) {
        size_t l = strcspn(o, ",");
        for (size_t i = 0; i < n;) {
            size_t m = 0;
            while (i + m < n && list[i + m] != ',')
                m++;
            if (m == l && !memcmp(list + i, o, l))
                return 1;
            i += m + 1;
        }
        o += l + (o[l] == ',');
    }
    return 0;
}

#define PROBE_KEX "curve25519-sha256,curve25519-sha256@libssh.org"
#define PROBE_HOSTKEYS "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com," \
                       "ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com," \
                       "rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com"

/* 1: the host's certificate in c; 0: the host has none (why says so); -1: could not ask (why). */
static int probe_exchange(probe_io *io, flas_ssh_cert *c, char *why, size_t whylen)
{
    static const char hello[] = "SSH-2.0-FLaS_certprobe\r\n";
    static unsigned char buf[35000];
    if (pio_write(io, (const unsigned char *)hello, sizeof hello - 1))
        return flas_fail(why, whylen, "cannot send a version");
    /* the server's version line, after up to 20 other lines (RFC 4253 4.2) */
    for (int lines = 0;; lines++) {
        size_t n = 0;
        while (n < 255 && !pio_read(io, buf + n, 1) && buf[n] != '\n')
            n++;
        if (n >= 255 || lines > 20 || (n && buf[n] != '\n'))
            return flas_fail(why, whylen, "no SSH version from the server");
        if (n >= 4 && !memcmp(buf, "SSH-", 4))
            break;
    }
    unsigned char kexinit[1024];
    size_t o = 0;
    kexinit[o++] = 20; /* SSH_MSG_KEXINIT */
    for (int i = 0; i < 16; i++)
        kexinit[o++] = (unsigned char)rand();
    const char *lists[10] = {PROBE_KEX, PROBE_HOSTKEYS, "aes128-ctr", "aes128-ctr", "hmac-sha2-256", "hmac-sha2-256",
                             "none", "none", "", ""};
    for (int i = 0; i < 10; i++)
        o += put_str(kexinit + o, lists[i]);
    kexinit[o++] = 0; /* no guessed packet follows */
    put_u32(kexinit + o, 0);
    o += 4;
    if (send_packet(io, kexinit, o))
        return flas_fail(why, whylen, "cannot send KEXINIT");
    for (int packets = 0; packets < 16; packets++) {
        long n = read_packet(io, buf, sizeof buf);
        if (n < 1)
            return flas_fail(why, whylen, "the server ended the key exchange");
        if (buf[0] == 1) /* SSH_MSG_DISCONNECT: no algorithm in common, say */
            return flas_fail(why, whylen, "the server refused the key exchange");
        if (buf[0] == 20) {
            /* its KEXINIT: a certificate type and curve25519 in common, or the host has no certificate */
            const unsigned char *p = buf + 17;
            size_t left = n >= 17 ? (size_t)n - 17 : 0;
            uint32_t kl, hl;
            if (left < 4 || (kl = get_u32(p)) > left - 4 || left - 4 - kl < 4 ||
                (hl = get_u32(p + 4 + kl)) > left - 8 - kl)
                return flas_fail(why, whylen, "malformed KEXINIT from the server");
            if (!lists_share(p + 4 + kl + 4, hl, PROBE_HOSTKEYS)) {
                flas_fail(why, whylen, "the host offers no certificate");
                return 0;
            }
            if (!lists_share(p + 4, kl, PROBE_KEX))
                return flas_fail(why, whylen, "the host offers no curve25519 key exchange");
            /* SSH_MSG_KEX_ECDH_INIT with the X25519 base point: a valid public key whose secret we do
             * not need, since this exchange stops at the server's reply */
            unsigned char init[1 + 4 + 32] = {30, 0, 0, 0, 32, 9};
            if (send_packet(io, init, sizeof init))
                return flas_fail(why, whylen, "cannot send KEX_ECDH_INIT");
        } else if (buf[0] == 31) { /* SSH_MSG_KEX_ECDH_REPLY: string K_S, the host key */
            uint32_t kl;
            if (n < 5 || (kl = get_u32(buf + 1)) > (size_t)n - 5)
                return flas_fail(why, whylen, "malformed key exchange reply");
            return flas_ssh_cert_parse(buf + 5, kl, c, why, whylen) ? -1 : 1;
        }
        /* anything else before the reply (IGNORE, DEBUG) is skipped */
    }
    return flas_fail(why, whylen, "no key exchange reply");
}

static int probe_host_cert(const flas_ssh_target *t, ssh_session via, const char *host, int port,
                           flas_ssh_cert *c, char *why, size_t whylen)
{
    probe_io io = {-1, NULL, (t->timeout_s > 0 ? t->timeout_s : 30) * 1000};
    int rc;
    if (via) {
        io.ch = ssh_channel_new(via);
        if (!io.ch || ssh_channel_open_forward(io.ch, host, port, "127.0.0.1", 0) != SSH_OK) {
            if (io.ch)
                ssh_channel_free(io.ch);
            return flas_fail(why, whylen, "the jump host cannot open a tunnel to ask for the certificate");
        }
        rc = probe_exchange(&io, c, why, whylen);
        ssh_channel_close(io.ch);
        ssh_channel_free(io.ch);
        return rc;
    }
    char portstr[16];
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(portstr, sizeof portstr, "%d", port);
    if (getaddrinfo(host, portstr, &hints, &ai))
        return flas_fail(why, whylen, "cannot resolve %s", host);
    rc = flas_fail(why, whylen, "cannot connect to ask for the certificate");
    for (struct addrinfo *a = ai; a && rc < 0; a = a->ai_next) {
        io.fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (io.fd < 0)
            continue;
        struct pollfd p = {io.fd, POLLOUT, 0};
        int e = 0;
        socklen_t el = sizeof e;
        if ((connect(io.fd, a->ai_addr, a->ai_addrlen) == 0 ||
             (errno == EINPROGRESS && poll(&p, 1, io.timeout_ms) == 1 &&
              !getsockopt(io.fd, SOL_SOCKET, SO_ERROR, &e, &el) && e == 0)))
            rc = probe_exchange(&io, c, why, whylen);
        close(io.fd);
    }
    freeaddrinfo(ai);
    return rc;
}

/* A public key as its wire blob (plain keys: what known_hosts holds; certificates: the certificate). */
static long key_blob(ssh_key key, unsigned char *buf, size_t len)
{
    char *b64 = NULL;
    if (ssh_pki_export_pubkey_base64(key, &b64) != SSH_OK)
        return -1;
    long n = flas_base64_decode(b64, strlen(b64), buf, len);
    ssh_string_free_char(b64);
    return n;
}

/* The host's certificate, checked as OpenSSH does for a @cert-authority line, and more: a host
 * certificate (type 2) that names host among its principals, valid now, without critical options (none
 * is defined for hosts), signed by a CA that a @cert-authority line for host lists and no @revoked line
 * does, with a valid signature, and whose key is the session's (plain) host key. 0 accepted; 1 no
 * certificate to check; -1 refused (why). */
static int check_host_cert(const flas_ssh_target *t, ssh_session via, const char *host, int port,
                           const unsigned char *session_key, size_t session_len, char *why, size_t whylen)
{
    static flas_ssh_cert c;
    static unsigned char plain[FLAS_SSH_CERT_MAX_BYTES];
    char fp[80], reason[512];
    int rc = probe_host_cert(t, via, host, port, &c, reason, sizeof reason);
    if (rc == 0)
        return 1;
    if (rc < 0)
        return flas_fail(why, whylen, "cannot get the host certificate of %s:%d: %s", host, port, reason);
    const unsigned char *ca = c.blob + c.ca_off;
    flas_ssh_key_fingerprint(ca, c.ca_len, fp, sizeof fp);
    size_t pl = flas_ssh_cert_plain_key(&c, plain, sizeof plain);
    int trusted = flas_known_hosts_ca(t->known_hosts, host, port, ca, c.ca_len, reason, sizeof reason);
    int revoked = trusted < 0 ? 0 : flas_known_hosts_revoked(t->known_hosts, ca, c.ca_len, reason, sizeof reason);
    if (trusted < 0 || revoked < 0)
        return flas_fail(why, whylen, "%s", reason);
    if (revoked)
        return flas_fail(why, whylen, "the host certificate of %s:%d is signed by CA %s, which %s revokes: refusing",
                         host, port, fp, t->known_hosts);
    if (!trusted)
        return flas_fail(why, whylen, "the host certificate of %s:%d is signed by CA %s, which no @cert-authority line "
                         "in %s trusts for this host: refusing to connect", host, port, fp, t->known_hosts);
    if (!pl || pl != session_len || memcmp(plain, session_key, pl))
        return flas_fail(why, whylen, "the host certificate of %s:%d is for another key than the one the host "
                         "proved it holds: refusing", host, port);
    if (flas_ssh_cert_check(&c, FLAS_SSH_CERT_HOST, host, time(NULL), 0, reason, sizeof reason) ||
        (c.n_critical && snprintf(reason, sizeof reason, "has critical options (none is defined for hosts)")) ||
        flas_ssh_cert_verify(&c, reason, sizeof reason))
        return flas_fail(why, whylen, "the host certificate of %s:%d (CA %s) %s: refusing", host, port, fp, reason);
    return 0;
}

/* The host key must be vouched for by known_hosts: a plain key listed for the host, or a host
 * certificate of a CA that a @cert-authority line trusts for it (a host that rotates its keys under a
 * CA then needs no new line); a key or CA on a @revoked line never is. A new host is accepted only when
 * asked, a changed one never. libssh reads the plain lines and skips the marker lines; these are ours. */
static int check_host_key(ssh_session ss, ssh_session via, const flas_ssh_target *t, const char *host, int port,
                          char *err, size_t errlen)
{
    static unsigned char blob[FLAS_SSH_CERT_MAX_BYTES];
    ssh_key key = NULL;
    char shown[80] = "(unknown fingerprint)", why[1024];
    long bl = -1;
    if (ssh_get_server_publickey(ss, &key) == SSH_OK) {
        bl = key_blob(key, blob, sizeof blob);
        ssh_key_free(key);
    }
    if (bl <= 0)
        return flas_fail(err, errlen, "cannot read the host key of %s:%d: %s", host, port, ssh_get_error(ss));
    flas_ssh_key_fingerprint(blob, (size_t)bl, shown, sizeof shown);
    int r = flas_known_hosts_revoked(t->known_hosts, blob, (size_t)bl, why, sizeof why);
    if (r)
        return flas_fail(err, errlen, r < 0 ? "%s" : "host key %s of %s:%d is revoked in %s: refusing to connect",
                         r < 0 ? why : shown, host, port, t->known_hosts);
    int known = ssh_session_is_known_server(ss);
    if (known == SSH_KNOWN_HOSTS_OK)
        return 0;
    int cas = flas_known_hosts_ca(t->known_hosts, host, port, NULL, 0, why, sizeof why);
    if (cas < 0)
        return flas_fail(err, errlen, "%s", why);
    if (cas && known != SSH_KNOWN_HOSTS_ERROR) {
        int c = check_host_cert(t, via, host, port, blob, (size_t)bl, why, sizeof why);
        if (c == 0) {
            if (known == SSH_KNOWN_HOSTS_CHANGED || known == SSH_KNOWN_HOSTS_OTHER)
                fprintf(stderr, "flas-stage: %s:%d: its key %s differs from the one listed in %s, but a trusted CA "
                        "certifies it: accepted\n", host, port, shown, t->known_hosts);
            return 0;
        }
        if (c < 0)
            return flas_fail(err, errlen, "%s", why);
        /* no certificate offered: the plain lines decide */
    }
    switch (known) {
    case SSH_KNOWN_HOSTS_CHANGED:
        return flas_fail(err, errlen,
                         "host key of %s:%d has CHANGED (now %s) from the one in %s: refusing to connect (possible "
                         "man-in-the-middle; if the site really changed its key, update known_hosts)",
                         host, port, shown, t->known_hosts);
    case SSH_KNOWN_HOSTS_OTHER:
        return flas_fail(err, errlen, "%s:%d offers a key of another type (%s) than the one in %s: refusing", host,
                         port, shown, t->known_hosts);
    case SSH_KNOWN_HOSTS_NOT_FOUND:
    case SSH_KNOWN_HOSTS_UNKNOWN:
        if (t->trust_new_host && ssh_session_update_known_hosts(ss) == SSH_OK) {
            fprintf(stderr, "flas-stage: trusting new host %s:%d (%s), recorded in %s\n", host, port, shown,
                    t->known_hosts);
            return 0;
        }
        return flas_fail(err, errlen, "host key of %s:%d (%s) is not in %s%s: refusing to connect to an unknown host",
                         host, port, shown, t->known_hosts, cas ? " and the host offers no certificate" : "");
    default:
        return flas_fail(err, errlen, "cannot check the host key of %s:%d: %s", host, port, ssh_get_error(ss));
    }
}

/* With a certificate (flas_ssh_cert_path), the key authenticates as the certificate: a site that trusts
 * only its CA (TrustedUserCAKeys, short-lived certificates after a 2FA login) lists no key of ours. The
 * certificate is checked here first, so that an expired one or one for another user is named as such
 * rather than reported as a refused key. */
static int authenticate(ssh_session ss, const flas_ssh_target *t, const char *user, const char *host, char *err,
                        size_t errlen)
{
    int rc;
    char cert_path[sizeof t->certificate + 16];
    flas_ssh_cert_path(t, cert_path, sizeof cert_path);
    if (t->identity[0]) {
        ssh_key key = NULL, cert = NULL;
        if (ssh_pki_import_privkey_file(t->identity, NULL, NULL, NULL, &key) != SSH_OK)
            return flas_fail(err, errlen, "cannot read private key %s (a passphrase-protected key needs ssh-agent)",
                              t->identity);
        if (cert_path[0]) {
            static flas_ssh_cert c;
            char why[512];
            if (flas_ssh_cert_load(cert_path, &c, why, sizeof why)) {
                ssh_key_free(key);
                return flas_fail(err, errlen, "%s@%s: %s", user, host, why);
            }
            if (flas_ssh_cert_check(&c, FLAS_SSH_CERT_USER, user, time(NULL), 0, why, sizeof why)) {
                ssh_key_free(key);
                return flas_fail(err, errlen, "%s@%s: certificate %s %s", user, host, cert_path, why);
            }
            if (ssh_pki_import_cert_file(cert_path, &cert) != SSH_OK || ssh_pki_copy_cert_to_privkey(cert, key) != SSH_OK) {
                ssh_key_free(cert);
                ssh_key_free(key);
                return flas_fail(err, errlen, "%s@%s: certificate %s is not for the key %s", user, host, cert_path,
                                 t->identity);
            }
            ssh_key_free(cert);
        }
        rc = ssh_userauth_publickey(ss, NULL, key);
        ssh_key_free(key);
    } else {
        rc = ssh_userauth_agent(ss, NULL);
    }
    if (rc != SSH_AUTH_SUCCESS)
        return flas_fail(err, errlen, "%s@%s: public-key authentication failed (%s%s%s)", user, host,
                          t->identity[0] ? t->identity : "ssh-agent", cert_path[0] ? " with certificate " : "", cert_path);
    return 0;
}

/* A libssh session to host:port as user, host key checked, authenticated. fd >= 0: run over that socket,
 * a tunnel through the jump host session via (which also carries the question for a host certificate). */
static ssh_session open_session(const flas_ssh_target *t, const char *host, int port, const char *user, int fd,
                                ssh_session via, char *err, size_t errlen)
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
    if (check_host_key(ss, via, t, host, port, err, errlen) || authenticate(ss, t, user, host, err, errlen)) {
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
    s->jump = open_session(t, t->jump_host, jport, juser, -1, NULL, err, errlen);
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
    s->session = open_session(t, t->host, port, t->user, fd, s->jump, err, errlen);
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
