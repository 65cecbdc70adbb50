/* OpenSSH certificates: the format (PROTOCOL.certkeys), their checks, the CA signature (OpenSSL: libssh
 * 0.10 has no public call that verifies a signature), and known_hosts' marker lines. See flas/ssh_cert.h. */
#include <ctype.h>
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flas/error.h"
#include "flas/ssh_cert.h"

/* A reader over a blob: every read checks what is left first, so no length can run past the end. */
typedef struct {
    const unsigned char *p;
    size_t len, off;
} rd;

static int rd_u32(rd *r, uint32_t *v)
{
    if (r->len - r->off < 4)
        return -1;
    const unsigned char *b = r->p + r->off;
    *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    r->off += 4;
    return 0;
}

static int rd_u64(rd *r, uint64_t *v)
{
    uint32_t hi, lo;
    if (r->len - r->off < 8 || rd_u32(r, &hi) || rd_u32(r, &lo))
        return -1;
    *v = (uint64_t)hi << 32 | lo;
    return 0;
}

static int rd_str(rd *r, const unsigned char **s, size_t *n)
{
    uint32_t l;
    if (rd_u32(r, &l))
        return -1;
    if (l > r->len - r->off) {
        r->off -= 4;
        return -1;
    }
    *s = r->p + r->off;
    *n = l;
    r->off += l;
    return 0;
}

/* A string that is a name: printable ASCII, no NUL, shorter than cap. */
static int is_name(const unsigned char *s, size_t n, size_t cap)
{
    if (n == 0 || n >= cap)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return 0;
    return 1;
}

static int str_is(const unsigned char *s, size_t n, const char *want)
{
    return n == strlen(want) && !memcmp(s, want, n);
}

/* The certificate types read, the key inside each, and its public fields (ed25519: the key; RSA: e, n;
 * ECDSA: the curve and the point). DSA and the security-key (sk-) types are refused. */
static const struct {
    const char *cert, *plain;
    int n_fields;
} types[] = {
    {"ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519", 1},
    {"ssh-rsa-cert-v01@openssh.com", "ssh-rsa", 2},
    {"ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp256", 2},
    {"ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp384", 2},
    {"ecdsa-sha2-nistp521-cert-v01@openssh.com", "ecdsa-sha2-nistp521", 2},
};

/* Options and extensions: a packed list of (string name, string data), names in order. */
static int rd_options(const unsigned char *s, size_t n, int *count)
{
    rd r = {s, n, 0};
    *count = 0;
    while (r.off < r.len) {
        const unsigned char *name, *data;
        size_t nl, dl;
        if (rd_str(&r, &name, &nl) || rd_str(&r, &data, &dl) || !is_name(name, nl, 256))
            return -1;
        (*count)++;
    }
    return 0;
}

int flas_ssh_cert_parse(const unsigned char *blob, size_t len, flas_ssh_cert *c, char *why, size_t whylen)
{
    memset(c, 0, sizeof *c);
    if (len > sizeof c->blob)
        return flas_fail(why, whylen, "certificate of %zu bytes: more than %d is not a certificate", len,
                         FLAS_SSH_CERT_MAX_BYTES);
    memcpy(c->blob, blob, len);
    c->len = len;
    rd r = {c->blob, len, 0};
    const unsigned char *s;
    size_t n;
    size_t t;
    if (rd_str(&r, &s, &n))
        return flas_fail(why, whylen, "truncated certificate (no key type)");
    for (t = 0; t < sizeof types / sizeof types[0] && !str_is(s, n, types[t].cert); t++)
        ;
    if (t == sizeof types / sizeof types[0])
        return flas_fail(why, whylen, "not a supported certificate type: '%.*s' (ed25519, RSA and ECDSA "
                         "certificates are)", (int)(n < 64 ? n : 64), is_name(s, n, 65) ? (const char *)s : "?");
    snprintf(c->key_type, sizeof c->key_type, "%s", types[t].cert);
    snprintf(c->plain_type, sizeof c->plain_type, "%s", types[t].plain);
    if (rd_str(&r, &s, &n))
        return flas_fail(why, whylen, "truncated certificate (nonce)");
    c->pub_off = r.off;
    for (int f = 0; f < types[t].n_fields; f++) {
        if (rd_str(&r, &s, &n))
            return flas_fail(why, whylen, "truncated certificate (public key)");
        if (types[t].n_fields == 1 && n != 32)
            return flas_fail(why, whylen, "an ed25519 key of %zu bytes, not 32", n);
        if (types[t].n_fields == 2 && f == 0 && !strncmp(types[t].plain, "ecdsa", 5) &&
            !str_is(s, n, types[t].plain + strlen("ecdsa-sha2-")))
            return flas_fail(why, whylen, "the curve of the key is not the one its type names");
    }
    c->pub_len = r.off - c->pub_off;
    const unsigned char *id, *pr, *crit, *ext;
    size_t idl, prl, critl, extl;
    if (rd_u64(&r, &c->serial) || rd_u32(&r, &c->type) || rd_str(&r, &id, &idl) || rd_str(&r, &pr, &prl) ||
        rd_u64(&r, &c->valid_after) || rd_u64(&r, &c->valid_before) || rd_str(&r, &crit, &critl) ||
        rd_str(&r, &ext, &extl) || rd_str(&r, &s, &n))
        return flas_fail(why, whylen, "truncated certificate (serial to reserved)");
    if (c->type != FLAS_SSH_CERT_USER && c->type != FLAS_SSH_CERT_HOST)
        return flas_fail(why, whylen, "certificate of type %u, neither user (1) nor host (2)", c->type);
    /* the key id is only shown: cut to fit, anything unprintable replaced */
    for (size_t i = 0; i < idl && i + 1 < sizeof c->key_id; i++)
        c->key_id[i] = id[i] >= 0x20 && id[i] < 0x7f ? (char)id[i] : '?';
    rd p = {pr, prl, 0};
    while (p.off < p.len) {
        if (rd_str(&p, &s, &n))
            return flas_fail(why, whylen, "malformed principals list");
        if (!is_name(s, n, FLAS_SSH_CERT_NAME_MAX))
            return flas_fail(why, whylen, "a principal that is empty, too long or not printable");
        if (c->n_principals == FLAS_SSH_CERT_MAX_PRINCIPALS)
            return flas_fail(why, whylen, "more than %d principals", FLAS_SSH_CERT_MAX_PRINCIPALS);
        memcpy(c->principals[c->n_principals], s, n);
        c->principals[c->n_principals++][n] = '\0';
    }
    int n_ext;
    if (rd_options(crit, critl, &c->n_critical) || rd_options(ext, extl, &n_ext))
        return flas_fail(why, whylen, "malformed critical options or extensions");
    if (rd_str(&r, &s, &n) || n == 0)
        return flas_fail(why, whylen, "truncated certificate (signature key)");
    c->ca_off = (size_t)(s - c->blob);
    c->ca_len = n;
    c->signed_len = r.off;
    if (rd_str(&r, &s, &n) || n == 0)
        return flas_fail(why, whylen, "truncated certificate (signature)");
    c->sig_off = (size_t)(s - c->blob);
    c->sig_len = n;
    if (r.off != r.len)
        return flas_fail(why, whylen, "%zu bytes after the signature", r.len - r.off);
    return 0;
}

long flas_base64_decode(const char *in, size_t n, unsigned char *out, size_t outlen)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    if (n == 0 || n % 4)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            const char *d = in[i + k] ? strchr(alpha, in[i + k]) : NULL;
            if (in[i + k] == '=' && i + 4 == n && k >= 2 && (k == 3 || in[i + 3] == '=')) {
                pad++;
                v <<= 6;
            } else if (d && !pad) {
                v = v << 6 | (uint32_t)(d - alpha);
            } else {
                return -1;
            }
        }
        for (int k = 0; k < 3 - pad; k++) {
            if (o == outlen)
                return -1;
            out[o++] = (unsigned char)(v >> (16 - 8 * k));
        }
    }
    return (long)o;
}

int flas_ssh_cert_parse_line(const char *line, flas_ssh_cert *c, char *why, size_t whylen)
{
    static unsigned char blob[FLAS_SSH_CERT_MAX_BYTES];
    const char *p = line + strspn(line, " \t");
    size_t tl = strcspn(p, " \t\r\n");
    const char *b = p + tl;
    b += strspn(b, " \t");
    size_t bl = strcspn(b, " \t\r\n");
    if (!tl || !bl)
        return flas_fail(why, whylen, "expected 'TYPE BASE64 [COMMENT]'");
    if (bl > (FLAS_SSH_CERT_MAX_BYTES / 3 + 1) * 4)
        return flas_fail(why, whylen, "certificate of more than %d bytes", FLAS_SSH_CERT_MAX_BYTES);
    long n = flas_base64_decode(b, bl, blob, sizeof blob);
    if (n < 0)
        return flas_fail(why, whylen, "the certificate is not valid base64");
    if (flas_ssh_cert_parse(blob, (size_t)n, c, why, whylen))
        return -1;
    if (strlen(c->key_type) != tl || strncmp(p, c->key_type, tl))
        return flas_fail(why, whylen, "the line says '%.*s' but the certificate is %s", (int)(tl < 64 ? tl : 64), p,
                         c->key_type);
    return 0;
}

int flas_ssh_cert_load(const char *path, flas_ssh_cert *c, char *err, size_t errlen)
{
    char text[(FLAS_SSH_CERT_MAX_BYTES / 3 + 1) * 4 + 1024], why[512];
    FILE *f = fopen(path, "re");
    if (!f)
        return flas_fail(err, errlen, "certificate %s: %s", path, strerror(errno));
    size_t n = fread(text, 1, sizeof text - 1, f);
    int big = n == sizeof text - 1 && fgetc(f) != EOF;
    fclose(f);
    text[n] = '\0';
    if (big)
        return flas_fail(err, errlen, "certificate %s: larger than a certificate can be", path);
    if (strlen(text) != n)
        return flas_fail(err, errlen, "certificate %s: a NUL byte in the file", path);
    if (flas_ssh_cert_parse_line(text, c, why, sizeof why))
        return flas_fail(err, errlen, "certificate %s: %s", path, why);
    /* one certificate per file: anything after the first line but white space is refused */
    const char *rest = strchr(text, '\n');
    if (rest && rest[strspn(rest, " \t\r\n")])
        return flas_fail(err, errlen, "certificate %s: more than one line", path);
    return 0;
}

void flas_ssh_cert_time(uint64_t t, char *buf, size_t len)
{
    if (t == UINT64_MAX) {
        snprintf(buf, len, "forever");
        return;
    }
    if (t > 253402300799ULL) { /* after 9999-12-31: past what the format below can show */
        snprintf(buf, len, "the year 10000 or later");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int flas_ssh_cert_check(const flas_ssh_cert *c, uint32_t want, const char *principal, int64_t now,
                        int64_t margin_s, char *why, size_t whylen)
{
    char t[48];
    uint64_t n = now > 0 ? (uint64_t)now : 0, m = margin_s > 0 ? (uint64_t)margin_s : 0;
    if (c->type != want)
        return flas_fail(why, whylen, "is a %s certificate, not a %s certificate",
                         c->type == FLAS_SSH_CERT_HOST ? "host" : "user", want == FLAS_SSH_CERT_HOST ? "host" : "user");
    if (c->valid_after > n) {
        flas_ssh_cert_time(c->valid_after, t, sizeof t);
        return flas_fail(why, whylen, "is not valid before %s", t);
    }
    if (c->valid_before <= n) {
        flas_ssh_cert_time(c->valid_before, t, sizeof t);
        return flas_fail(why, whylen, "expired at %s", t);
    }
    if (c->valid_before != UINT64_MAX && c->valid_before - n < m) {
        flas_ssh_cert_time(c->valid_before, t, sizeof t);
        return flas_fail(why, whylen, "expires at %s, in %llu s, less than the %lld s it must have left", t,
                         (unsigned long long)(c->valid_before - n), (long long)margin_s);
    }
    /* no principals reads as "any" to OpenSSH's ssh for a host; FLaS wants the name written */
    for (int i = 0; i < c->n_principals; i++)
        if (!strcmp(c->principals[i], principal))
            return 0;
    char list[512] = "";
    for (int i = 0; i < c->n_principals && strlen(list) + 2 < sizeof list; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? "," : "", c->principals[i]);
    if (!c->n_principals)
        return flas_fail(why, whylen, "names no principal (FLaS wants '%s' written in it)", principal);
    return flas_fail(why, whylen, "is for %s, not for '%s'", list, principal);
}

/* ---- the CA's signature ------------------------------------------------------------------------- */

static BIGNUM *rd_mpint(rd *r)
{
    const unsigned char *s;
    size_t n;
    if (rd_str(r, &s, &n) || (n && (s[0] & 0x80)) || n > 2049) /* positive, at most 16384 bits */
        return NULL;
    return BN_bin2bn(s, (int)n, NULL);
}

static EVP_PKEY *from_params(const char *alg, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

int flas_ssh_cert_verify(const flas_ssh_cert *c, char *why, size_t whylen)
{
    rd k = {c->blob + c->ca_off, c->ca_len, 0}, g = {c->blob + c->sig_off, c->sig_len, 0};
    const unsigned char *ktype, *stype, *sig;
    size_t ktl, stl, sigl;
    if (rd_str(&k, &ktype, &ktl) || rd_str(&g, &stype, &stl) || rd_str(&g, &sig, &sigl) || g.off != g.len)
        return flas_fail(why, whylen, "malformed CA key or signature");
    EVP_PKEY *pkey = NULL;
    const EVP_MD *md = NULL;
    unsigned char *der = NULL;
    int derlen = 0;
    const char *curve = NULL;
    int rc = -1;
    if (str_is(ktype, ktl, "ssh-ed25519")) {
        const unsigned char *pk;
        size_t pkl;
        if (rd_str(&k, &pk, &pkl) || pkl != 32 || k.off != k.len || !str_is(stype, stl, "ssh-ed25519") || sigl != 64)
            return flas_fail(why, whylen, "malformed ed25519 CA key or signature");
        pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk, 32);
    } else if (str_is(ktype, ktl, "ssh-rsa")) {
        if (str_is(stype, stl, "rsa-sha2-256"))
            md = EVP_sha256();
        else if (str_is(stype, stl, "rsa-sha2-512"))
            md = EVP_sha512();
        else
            return flas_fail(why, whylen, "RSA CA signature of type '%.*s' refused (rsa-sha2-256 and rsa-sha2-512 "
                             "are accepted; SHA-1 is not)", (int)(stl < 40 ? stl : 40), is_name(stype, stl, 41) ? (const char *)stype : "?");
        BIGNUM *e = rd_mpint(&k), *n = rd_mpint(&k);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (e && n && k.off == k.len && BN_num_bits(n) >= 1024 && bld && OSSL_PARAM_BLD_push_BN(bld, "n", n) &&
            OSSL_PARAM_BLD_push_BN(bld, "e", e))
            pkey = from_params("RSA", bld);
        OSSL_PARAM_BLD_free(bld);
        BN_free(e);
        BN_free(n);
    } else if (str_is(ktype, ktl, "ecdsa-sha2-nistp256") || str_is(ktype, ktl, "ecdsa-sha2-nistp384") ||
               str_is(ktype, ktl, "ecdsa-sha2-nistp521")) {
        char bits = (char)ktype[ktl - 1]; /* '6', '4', '1' */
        md = bits == '6' ? EVP_sha256() : bits == '4' ? EVP_sha384() : EVP_sha512();
        curve = bits == '6' ? "prime256v1" : bits == '4' ? "secp384r1" : "secp521r1";
        const unsigned char *cn, *q;
        size_t cnl, ql;
        if (rd_str(&k, &cn, &cnl) || rd_str(&k, &q, &ql) || k.off != k.len || cnl != 8 ||
            memcmp(cn, ktype + ktl - 8, 8) || stl != ktl || memcmp(stype, ktype, ktl))
            return flas_fail(why, whylen, "malformed ECDSA CA key or signature");
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, "group", curve, 0) &&
            OSSL_PARAM_BLD_push_octet_string(bld, "pub", q, ql))
            pkey = from_params("EC", bld);
        OSSL_PARAM_BLD_free(bld);
        /* the SSH signature is (mpint r, mpint s); OpenSSL wants it DER-encoded */
        rd sr = {sig, sigl, 0};
        BIGNUM *r = rd_mpint(&sr), *s = rd_mpint(&sr);
        ECDSA_SIG *es = ECDSA_SIG_new();
        if (r && s && sr.off == sr.len && es && ECDSA_SIG_set0(es, r, s)) {
            r = s = NULL;
            derlen = i2d_ECDSA_SIG(es, &der);
        }
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        if (derlen <= 0) {
            EVP_PKEY_free(pkey);
            return flas_fail(why, whylen, "malformed ECDSA signature");
        }
    } else {
        return flas_fail(why, whylen, "CA key of type '%.*s' is not supported (ed25519, RSA and ECDSA are)",
                         (int)(ktl < 40 ? ktl : 40), is_name(ktype, ktl, 41) ? (const char *)ktype : "?");
    }
    if (!pkey) {
        OPENSSL_free(der);
        return flas_fail(why, whylen, "the CA key cannot be used (malformed, or RSA under 1024 bits)");
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestVerifyInit(ctx, NULL, md, NULL, pkey) == 1 &&
        EVP_DigestVerify(ctx, der ? der : sig, der ? (size_t)derlen : sigl, c->blob, c->signed_len) == 1)
        rc = 0;
    else
        flas_fail(why, whylen, "the CA's signature over the certificate is not valid");
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    OPENSSL_free(der);
    return rc;
}

size_t flas_ssh_cert_plain_key(const flas_ssh_cert *c, unsigned char *buf, size_t len)
{
    size_t tl = strlen(c->plain_type), n = 4 + tl + c->pub_len;
    if (n > len)
        return 0;
    buf[0] = (unsigned char)(tl >> 24), buf[1] = (unsigned char)(tl >> 16), buf[2] = (unsigned char)(tl >> 8);
    buf[3] = (unsigned char)tl;
    memcpy(buf + 4, c->plain_type, tl);
    memcpy(buf + 4 + tl, c->blob + c->pub_off, c->pub_len);
    return n;
}

void flas_ssh_key_fingerprint(const unsigned char *blob, size_t len, char *buf, size_t buflen)
{
    unsigned char h[SHA256_DIGEST_LENGTH], b64[64];
    SHA256(blob, len, h);
    int n = EVP_EncodeBlock(b64, h, sizeof h);
    while (n > 0 && b64[n - 1] == '=')
        b64[--n] = '\0';
    snprintf(buf, buflen, "SHA256:%s", (char *)b64);
}

void flas_ssh_cert_path(const flas_ssh_target *t, char *buf, size_t len)
{
    buf[0] = '\0';
    if (t->certificate[0])
        snprintf(buf, len, "%s", t->certificate);
    else if (t->identity[0]) {
        int n = snprintf(buf, len, "%s-cert.pub", t->identity);
        if (n < 0 || (size_t)n >= len || access(buf, F_OK))
            buf[0] = '\0';
    }
}

/* ---- known_hosts marker lines ------------------------------------------------------------------- */

/* OpenSSH's patterns: '*' any run, '?' any one character, everything else itself (so "[host]:port" is
 * literal, unlike fnmatch's brackets). */
static int glob(const char *p, const char *s)
{
    const char *star = NULL, *back = NULL;
    while (*s) {
        if (*p == '*') {
            star = ++p;
            back = s;
        } else if (*p && (*p == '?' || *p == *s)) {
            p++;
            s++;
        } else if (star) {
            p = star;
            s = ++back;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

/* One host pattern entry: a hashed name |1|SALT|HASH (HMAC-SHA1 of the name), or a glob. */
static int entry_matches(const char *pat, size_t n, const char *name)
{
    char buf[1024];
    if (n >= sizeof buf)
        return 0;
    memcpy(buf, pat, n);
    buf[n] = '\0';
    if (!strncmp(buf, "|1|", 3)) {
        char *bar = strchr(buf + 3, '|');
        unsigned char salt[64], hash[64], mac[EVP_MAX_MD_SIZE];
        unsigned int ml = 0;
        if (!bar)
            return 0;
        long sl = flas_base64_decode(buf + 3, (size_t)(bar - buf - 3), salt, sizeof salt);
        long hl = flas_base64_decode(bar + 1, strlen(bar + 1), hash, sizeof hash);
        if (sl <= 0 || hl != 20 ||
            !HMAC(EVP_sha1(), salt, (int)sl, (const unsigned char *)name, strlen(name), mac, &ml) || ml != 20)
            return 0;
        return !memcmp(mac, hash, 20);
    }
    for (char *c = buf; *c; c++) /* host names are case-insensitive; name is in lower case */
        *c = (char)tolower((unsigned char)*c);
    return glob(buf, name);
}

/* A comma-separated pattern list: matches when an entry matches and no negated (!) one does. */
static int host_matches(const char *list, size_t n, const char *name)
{
    int hit = 0;
    for (size_t i = 0; i < n;) {
        size_t l = 0;
        while (i + l < n && list[i + l] != ',')
            l++;
        int neg = l > 0 && list[i] == '!';
        if (entry_matches(list + i + neg, l - (size_t)neg, name)) {
            if (neg)
                return 0;
            hit = 1;
        }
        i += l + 1;
    }
    return hit;
}

/* Walks the marker lines of a known_hosts file; calls fn for each with the host patterns and the key
 * blob. A marker line that cannot be read is an error (it was meant to trust or to revoke). */
typedef int (*marker_fn)(const char *marker, const char *hosts, size_t hl, const unsigned char *key, size_t kl,
                         void *ctx);

static int walk_markers(const char *path, marker_fn fn, void *ctx, char *err, size_t errlen)
{
    static unsigned char key[FLAS_SSH_CERT_MAX_BYTES];
    FILE *f = fopen(path, "re");
    if (!f)
        return flas_fail(err, errlen, "%s: %s", path, strerror(errno));
    char line[32768];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        const char *p = line + strspn(line, " \t");
        if (*p != '@')
            continue;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = flas_fail(err, errlen, "%s:%d: line too long", path, lineno);
            break;
        }
        const char *fld[4];
        size_t len[4];
        for (int i = 0; i < 4; i++) {
            p += strspn(p, " \t");
            fld[i] = p;
            len[i] = strcspn(p, " \t\r\n");
            p += len[i];
        }
        const char *marker = !strncmp(fld[0], "@cert-authority", len[0]) && len[0] == 15 ? "@cert-authority"
                             : !strncmp(fld[0], "@revoked", len[0]) && len[0] == 8     ? "@revoked"
                                                                                       : NULL;
        long kl = len[3] ? flas_base64_decode(fld[3], len[3], key, sizeof key) : -1;
        if (!marker || !len[1] || !len[2] || kl <= 4) {
            rc = flas_fail(err, errlen, "%s:%d: expected '@cert-authority|@revoked HOSTS KEYTYPE BASE64'", path, lineno);
            break;
        }
        rc = fn(marker, fld[1], len[1], key, (size_t)kl, ctx);
    }
    fclose(f);
    return rc < 0 ? -1 : rc;
}

typedef struct {
    const char *name;
    const unsigned char *key;
    size_t kl;
} find_ctx;

static int find_revoked(const char *marker, const char *hosts, size_t hl, const unsigned char *key, size_t kl, void *v)
{
    find_ctx *f = v;
    (void)hosts, (void)hl;
    return !strcmp(marker, "@revoked") && kl == f->kl && !memcmp(key, f->key, kl);
}

static int find_ca(const char *marker, const char *hosts, size_t hl, const unsigned char *key, size_t kl, void *v)
{
    find_ctx *f = v;
    return !strcmp(marker, "@cert-authority") && host_matches(hosts, hl, f->name) &&
           (!f->key || (kl == f->kl && !memcmp(key, f->key, kl)));
}

int flas_known_hosts_revoked(const char *path, const unsigned char *key, size_t keylen, char *err, size_t errlen)
{
    find_ctx f = {NULL, key, keylen};
    return walk_markers(path, find_revoked, &f, err, errlen);
}

int flas_known_hosts_ca(const char *path, const char *host, int port, const unsigned char *ca, size_t calen,
                        char *err, size_t errlen)
{
    char name[300];
    /* as OpenSSH writes a host on another port than 22 */
    if (port > 0 && port != 22)
        snprintf(name, sizeof name, "[%s]:%d", host, port);
    else
        snprintf(name, sizeof name, "%s", host);
    for (char *c = name; *c; c++) /* as OpenSSH, which also hashes the lower-case name */
        *c = (char)tolower((unsigned char)*c);
    find_ctx f = {name, ca, calen};
    return walk_markers(path, find_ca, &f, err, errlen);
}
