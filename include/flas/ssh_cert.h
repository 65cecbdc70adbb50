/* OpenSSH certificates (PROTOCOL.certkeys): the one reader of the format in FLaS, the checks of a
 * certificate's type, principals and validity window, the CA's signature, and the @cert-authority and
 * @revoked lines of known_hosts. libssh 0.10 authenticates with a user certificate but exposes none of
 * its fields, never negotiates a host certificate, never checks a CA signature and skips every marker
 * line of known_hosts: what it does not do is done here (docs/security.md#certificates).
 *
 * Every certificate is hostile input: every length is checked against what is left of the blob, and
 * anything malformed, truncated, trailing or of an unsupported type is refused with the reason. */
#ifndef FLAS_SSH_CERT_H
#define FLAS_SSH_CERT_H

#include <stddef.h>
#include <stdint.h>

#include "flas/stage.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_SSH_CERT_USER 1
#define FLAS_SSH_CERT_HOST 2
#define FLAS_SSH_CERT_MAX_BYTES 16384   /* a blob larger than this (two RSA-16384 keys fit) is refused */
#define FLAS_SSH_CERT_MAX_PRINCIPALS 64
#define FLAS_SSH_CERT_NAME_MAX 256       /* a principal or key id, with its NUL */

typedef struct flas_ssh_cert {
    char key_type[64];                   /* e.g. ssh-ed25519-cert-v01@openssh.com */
    char plain_type[32];                 /* the key inside: ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ... */
    uint32_t type;                       /* FLAS_SSH_CERT_USER or FLAS_SSH_CERT_HOST */
    uint64_t serial;
    char key_id[FLAS_SSH_CERT_NAME_MAX];
    int n_principals;                    /* 0: OpenSSH reads as "any"; FLaS refuses it */
    char principals[FLAS_SSH_CERT_MAX_PRINCIPALS][FLAS_SSH_CERT_NAME_MAX];
    uint64_t valid_after, valid_before;  /* seconds since the epoch; valid_before UINT64_MAX: forever */
    int n_critical;                      /* critical options (force-command, source-address, ...) */
    /* the blob and where its parts are, for the signature and the keys */
    unsigned char blob[FLAS_SSH_CERT_MAX_BYTES];
    size_t len;
    size_t pub_off, pub_len;             /* the key-type-specific public fields */
    size_t ca_off, ca_len;               /* the signature key (the CA's public key blob) */
    size_t signed_len;                   /* the signature covers blob[0, signed_len) */
    size_t sig_off, sig_len;             /* the signature blob */
} flas_ssh_cert;

/* Parses a certificate blob (the base64-decoded second field of a -cert.pub line). 0, or -1 with why. */
int flas_ssh_cert_parse(const unsigned char *blob, size_t len, flas_ssh_cert *c, char *why, size_t whylen);
/* Parses a -cert.pub line, "TYPE BASE64 [COMMENT]": TYPE must be the type inside. */
int flas_ssh_cert_parse_line(const char *line, flas_ssh_cert *c, char *why, size_t whylen);
/* Reads and parses a -cert.pub file (the errors name it). */
int flas_ssh_cert_load(const char *path, flas_ssh_cert *c, char *err, size_t errlen);

/* The certificate is of type want (FLAS_SSH_CERT_USER/HOST), names principal, is valid at now and
 * stays valid for margin_s more seconds. 0, or -1 with why: "expired at 2026-12-03T18:00:00Z", "is not
 * valid before ...", "expires at ..., within ... s", "is for principals a,b, not USER", ... */
int flas_ssh_cert_check(const flas_ssh_cert *c, uint32_t want, const char *principal, int64_t now,
                        int64_t margin_s, char *why, size_t whylen);

/* Checks the CA's signature over the certificate (ssh-ed25519, rsa-sha2-256/512, ecdsa-sha2-nistp256/
 * 384/521 CA keys; the SHA-1 "ssh-rsa" signature is refused, as OpenSSH >= 8.2 does). 0, or -1. */
int flas_ssh_cert_verify(const flas_ssh_cert *c, char *why, size_t whylen);

/* The plain public key blob inside the certificate (string plain_type + the public fields): what a
 * known_hosts line or a session's host key holds. Returns its length, or 0 if buf is too small. */
size_t flas_ssh_cert_plain_key(const flas_ssh_cert *c, unsigned char *buf, size_t len);

/* "SHA256:base64" of a public key blob, as ssh-keygen -l prints it. */
void flas_ssh_key_fingerprint(const unsigned char *blob, size_t len, char *buf, size_t buflen);
/* An epoch time as 2026-12-03T18:00:00Z ("forever" for UINT64_MAX). */
void flas_ssh_cert_time(uint64_t t, char *buf, size_t len);

/* The certificate a target authenticates with: its certificate if given, else IDENTITY-cert.pub if that
 * file exists (as OpenSSH does), else "" (none). */
void flas_ssh_cert_path(const flas_ssh_target *t, char *buf, size_t len);

/* The marker lines of known_hosts (libssh skips them). host/port: what was connected to (the pattern
 * for a port other than 22 is "[host]:port", as in OpenSSH); hashed names (|1|...) are matched too.
 *  flas_known_hosts_revoked: 1 if a @revoked line lists the key blob (for any host), 0 if not, -1 error.
 *  flas_known_hosts_ca: 1 if a @cert-authority line for host lists the CA key blob, 0 if not, -1 error;
 *  with ca == NULL: 1 if any @cert-authority line is for host. */
int flas_known_hosts_revoked(const char *path, const unsigned char *key, size_t keylen, char *err, size_t errlen);
int flas_known_hosts_ca(const char *path, const char *host, int port, const unsigned char *ca, size_t calen,
                        char *err, size_t errlen);

/* Strict base64 (padding required, no white space): decoded length, or -1. */
long flas_base64_decode(const char *in, size_t inlen, unsigned char *out, size_t outlen);

#ifdef __cplusplus
}
#endif
#endif
