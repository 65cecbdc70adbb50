/* The OpenSSH certificate reader (flas/ssh_cert.h): every supported type parses and its CA signature
 * verifies; a certificate cut at any length, with any length field overflowing, or of another type is
 * refused; the validity, principal and type checks; known_hosts' @cert-authority and @revoked lines.
 * Fixtures: tests/stage/certs (README there). */
#include <check.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/ssh_cert.h"

static flas_ssh_cert cert;

static const char *fixture(const char *name)
{
    static char path[1024];
    const char *dir = getenv("FLAS_CERT_DIR");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "certs", name);
    return path;
}

static void load(const char *name)
{
    char err[1024] = "";
    ck_assert_msg(flas_ssh_cert_load(fixture(name), &cert, err, sizeof err) == 0, "%s: %s", name, err);
}

/* A public key file's blob (the second field). */
static size_t pub_blob(const char *name, unsigned char *buf, size_t len)
{
    char text[8192];
    FILE *f = fopen(fixture(name), "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(text, sizeof text, f));
    fclose(f);
    char *b = strchr(text, ' ') + 1;
    long n = flas_base64_decode(b, strcspn(b, " \n"), buf, len);
    ck_assert_int_gt(n, 0);
    return (size_t)n;
}

START_TEST(every_type_parses_and_its_signature_verifies)
{
    char why[512] = "";
    load("ed25519_by_ed25519-cert.pub");
    ck_assert_str_eq(cert.key_type, "ssh-ed25519-cert-v01@openssh.com");
    ck_assert_str_eq(cert.plain_type, "ssh-ed25519");
    ck_assert_int_eq(cert.type, FLAS_SSH_CERT_USER);
    ck_assert_str_eq(cert.key_id, "forever");
    ck_assert_int_eq(cert.n_principals, 2);
    ck_assert_str_eq(cert.principals[1], "bob");
    ck_assert(cert.valid_after == 0 && cert.valid_before == UINT64_MAX);
    ck_assert_msg(flas_ssh_cert_verify(&cert, why, sizeof why) == 0, "%s", why);
    unsigned char a[4096], b[4096];
    size_t an = flas_ssh_cert_plain_key(&cert, a, sizeof a), bn = pub_blob("user_ed25519.pub", b, sizeof b);
    ck_assert(an == bn && !memcmp(a, b, an)); /* the key inside is the key certified */
    bn = pub_blob("ca_ed25519.pub", b, sizeof b);
    ck_assert(cert.ca_len == bn && !memcmp(cert.blob + cert.ca_off, b, bn));

    load("rsa_by_rsa-cert.pub");
    ck_assert_str_eq(cert.plain_type, "ssh-rsa");
    ck_assert_msg(flas_ssh_cert_verify(&cert, why, sizeof why) == 0, "%s", why);
    an = flas_ssh_cert_plain_key(&cert, a, sizeof a), bn = pub_blob("user_rsa.pub", b, sizeof b);
    ck_assert(an == bn && !memcmp(a, b, an));

    load("ecdsa_host_by_ecdsa-cert.pub");
    ck_assert_str_eq(cert.plain_type, "ecdsa-sha2-nistp256");
    ck_assert_int_eq(cert.type, FLAS_SSH_CERT_HOST);
    ck_assert_msg(flas_ssh_cert_verify(&cert, why, sizeof why) == 0, "%s", why);
    an = flas_ssh_cert_plain_key(&cert, a, sizeof a), bn = pub_blob("host_ecdsa.pub", b, sizeof b);
    ck_assert(an == bn && !memcmp(a, b, an));

    load("sha1_by_rsa-cert.pub");
    ck_assert_int_eq(flas_ssh_cert_verify(&cert, why, sizeof why), -1);
    ck_assert_msg(strstr(why, "SHA-1 is not"), "%s", why);
}
END_TEST

START_TEST(validity_principal_and_type_are_checked)
{
    char why[512] = "";
    const int64_t now = 1764000000; /* 2025-11-24 */
    load("ed25519_by_ed25519-cert.pub");
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_USER, "alice", now, 3600, why, sizeof why), 0);
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_USER, "carol", now, 0, why, sizeof why), -1);
    ck_assert_str_eq(why, "is for alice,bob, not for 'carol'");
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_HOST, "alice", now, 0, why, sizeof why), -1);
    ck_assert_str_eq(why, "is a user certificate, not a host certificate");

    load("expired-cert.pub");
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_USER, "alice", now, 0, why, sizeof why), -1);
    ck_assert_str_eq(why, "expired at 2020-01-02T00:00:00Z");
    /* valid_after/before are local midnights of the machine that signed; take them from the blob */
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_USER, "alice", (int64_t)cert.valid_after - 1, 0, why,
                                         sizeof why), -1);
    ck_assert_msg(strstr(why, "is not valid before 2020-01-01T"), "%s", why);
    int64_t end = (int64_t)cert.valid_before;
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_USER, "alice", end - 100, 99, why, sizeof why), 0);
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_USER, "alice", end - 100, 101, why, sizeof why), -1);
    ck_assert_msg(strstr(why, "in 100 s, less than the 101 s it must have left"), "%s", why);
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_USER, "alice", end, 0, why, sizeof why), -1);

    load("ecdsa_host_by_ecdsa-cert.pub");
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_HOST, "10.0.0.1", now, 0, why, sizeof why), 0);
    ck_assert_int_eq(flas_ssh_cert_check(&cert, FLAS_SSH_CERT_HOST, "login.example.evil", now, 0, why, sizeof why), -1);
}
END_TEST

/* The blob of a fixture, copied into a buffer of exactly n bytes (so ASan sees any read past n). */
static void parse_exact(const unsigned char *blob, size_t n, int *ok)
{
    static flas_ssh_cert c;
    char why[512];
    unsigned char *copy = malloc(n ? n : 1);
    memcpy(copy, blob, n);
    *ok = flas_ssh_cert_parse(copy, n, &c, why, sizeof why) == 0;
    if (*ok)
        *ok = flas_ssh_cert_verify(&c, why, sizeof why) == 0;
    free(copy);
}

START_TEST(truncated_at_every_length_is_refused)
{
    const char *names[] = {"ed25519_by_ed25519-cert.pub", "rsa_by_rsa-cert.pub", "ecdsa_host_by_ecdsa-cert.pub"};
    for (size_t f = 0; f < 3; f++) {
        load(names[f]);
        static unsigned char blob[FLAS_SSH_CERT_MAX_BYTES + 8];
        size_t len = cert.len;
        memcpy(blob, cert.blob, len);
        int ok;
        for (size_t n = 0; n < len; n++) {
            parse_exact(blob, n, &ok);
            ck_assert_msg(!ok, "%s cut at %zu of %zu accepted", names[f], n, len);
        }
        parse_exact(blob, len, &ok);
        ck_assert(ok);
        blob[len] = 0; /* a trailing byte */
        parse_exact(blob, len + 1, &ok);
        ck_assert(!ok);
    }
}
END_TEST

START_TEST(overflowing_lengths_and_changed_bytes_are_refused)
{
    load("ed25519_by_ed25519-cert.pub");
    static unsigned char blob[FLAS_SSH_CERT_MAX_BYTES];
    const size_t len = cert.len;
    const uint32_t bad[] = {0xffffffffu, 0x80000000u, 0x7fffffffu, (uint32_t)len, (uint32_t)len + 1};
    int ok;
    /* a huge or too-long value at every offset: a length it lands on must not be believed */
    for (size_t off = 0; off + 4 <= len; off++)
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            memcpy(blob, cert.blob, len);
            blob[off] = (unsigned char)(bad[b] >> 24), blob[off + 1] = (unsigned char)(bad[b] >> 16);
            blob[off + 2] = (unsigned char)(bad[b] >> 8), blob[off + 3] = (unsigned char)bad[b];
            if (!memcmp(blob, cert.blob, len))
                continue;
            parse_exact(blob, len, &ok);
            ck_assert_msg(!ok, "0x%08x at offset %zu accepted", bad[b], off);
        }
    /* any changed byte: refused by the reader or by the CA's signature */
    for (size_t off = 0; off < len; off++) {
        memcpy(blob, cert.blob, len);
        blob[off] ^= 0x01;
        parse_exact(blob, len, &ok);
        ck_assert_msg(!ok, "a flipped bit at offset %zu accepted", off);
    }
    char why[512];
    ck_assert_int_eq(flas_ssh_cert_parse(cert.blob, FLAS_SSH_CERT_MAX_BYTES + 1, &cert, why, sizeof why), -1);
}
END_TEST

START_TEST(other_types_and_garbage_are_refused)
{
    static flas_ssh_cert c;
    char why[512] = "", line[8192];
    /* a plain key is not a certificate */
    FILE *f = fopen(fixture("user_ed25519.pub"), "r");
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    fclose(f);
    ck_assert_int_eq(flas_ssh_cert_parse_line(line, &c, why, sizeof why), -1);
    ck_assert_msg(strstr(why, "not a supported certificate type: 'ssh-ed25519'"), "%s", why);
    /* the line's type must be the certificate's */
    f = fopen(fixture("rsa_by_rsa-cert.pub"), "r");
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    fclose(f);
    char swapped[8300];
    snprintf(swapped, sizeof swapped, "ssh-ed25519-cert-v01@openssh.com%s", strchr(line, ' '));
    ck_assert_int_eq(flas_ssh_cert_parse_line(swapped, &c, why, sizeof why), -1);
    ck_assert_msg(strstr(why, "the line says"), "%s", why);
    ck_assert_int_eq(flas_ssh_cert_parse_line("ssh-ed25519-cert-v01@openssh.com AAAA!!==", &c, why, sizeof why), -1);
    ck_assert_str_eq(why, "the certificate is not valid base64");
    ck_assert_int_eq(flas_ssh_cert_parse_line("", &c, why, sizeof why), -1);
    ck_assert_int_eq(flas_ssh_cert_load("/nonexistent-cert.pub", &c, why, sizeof why), -1);
    ck_assert_msg(strstr(why, "certificate /nonexistent-cert.pub: No such file"), "%s", why);
    /* a certificate of type 3 */
    load("ed25519_by_ed25519-cert.pub");
    static unsigned char blob[FLAS_SSH_CERT_MAX_BYTES];
    memcpy(blob, cert.blob, cert.len);
    size_t type_off = 4 + 32 + 4 + 32 + 4 + 32 + 8; /* type name, nonce, key, serial */
    ck_assert_int_eq(blob[type_off + 3], FLAS_SSH_CERT_USER);
    blob[type_off + 3] = 3;
    ck_assert_int_eq(flas_ssh_cert_parse(blob, cert.len, &c, why, sizeof why), -1);
    ck_assert_str_eq(why, "certificate of type 3, neither user (1) nor host (2)");
    unsigned char d[8];
    ck_assert_int_eq(flas_base64_decode("QUJD", 4, d, sizeof d), 3);
    ck_assert_int_eq(flas_base64_decode("QUI=", 4, d, sizeof d), 2);
    ck_assert_int_eq(flas_base64_decode("QQ==", 4, d, sizeof d), 1);
    ck_assert_int_eq(flas_base64_decode("Q===", 4, d, sizeof d), -1);
    ck_assert_int_eq(flas_base64_decode("QQ=A", 4, d, sizeof d), -1);
    ck_assert_int_eq(flas_base64_decode("QUJDQUJD", 8, d, 5), -1);
}
END_TEST

START_TEST(known_hosts_marker_lines)
{
    char path[] = "/tmp/test_ssh_cert.XXXXXX", err[512] = "", hashed[128];
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unsigned char ca[4096], other[4096], key[4096];
    size_t cal = pub_blob("ca_ed25519.pub", ca, sizeof ca), otl = pub_blob("ca_rsa.pub", other, sizeof other);
    size_t kl = pub_blob("host_ecdsa.pub", key, sizeof key);
    /* a hashed name as ssh-keygen -H writes it: |1|base64(salt)|base64(HMAC-SHA1(salt, name)) */
    unsigned char salt[20] = {1, 2, 3}, mac[20], s64[40], m64[40];
    unsigned int ml;
    HMAC(EVP_sha1(), salt, 20, (const unsigned char *)"[gw.example]:2222", 17, mac, &ml);
    EVP_EncodeBlock(s64, salt, 20);
    EVP_EncodeBlock(m64, mac, 20);
    snprintf(hashed, sizeof hashed, "|1|%s|%s", s64, m64);
    char ca64[2048], key64[2048];
    FILE *p = fopen(fixture("ca_ed25519.pub"), "r");
    ck_assert_int_eq(fscanf(p, "%*s %2047s", ca64), 1);
    fclose(p);
    p = fopen(fixture("host_ecdsa.pub"), "r");
    ck_assert_int_eq(fscanf(p, "%*s %2047s", key64), 1);
    fclose(p);
    dprintf(fd, "# comment\nlogin.example ssh-ed25519 AAAA\n"
                "@cert-authority *.leonardo.example,!bad.leonardo.example ssh-ed25519 %s\n"
                "  @cert-authority [10.0.0.1]:2222,%s ssh-ed25519 %s comment\n"
                "@revoked * ecdsa-sha2-nistp256 %s\n", ca64, hashed, ca64, key64);
    close(fd);
    ck_assert_int_eq(flas_known_hosts_ca(path, "login.leonardo.example", 22, ca, cal, err, sizeof err), 1);
    ck_assert_int_eq(flas_known_hosts_ca(path, "LOGIN.Leonardo.example", 22, ca, cal, err, sizeof err), 1);
    ck_assert_int_eq(flas_known_hosts_ca(path, "login.leonardo.example", 22, other, otl, err, sizeof err), 0);
    ck_assert_int_eq(flas_known_hosts_ca(path, "bad.leonardo.example", 22, ca, cal, err, sizeof err), 0);
    ck_assert_int_eq(flas_known_hosts_ca(path, "login.leonardo.example", 2222, ca, cal, err, sizeof err), 0);
    ck_assert_int_eq(flas_known_hosts_ca(path, "10.0.0.1", 2222, ca, cal, err, sizeof err), 1);
    ck_assert_int_eq(flas_known_hosts_ca(path, "10.0.0.1", 22, NULL, 0, err, sizeof err), 0);
    ck_assert_int_eq(flas_known_hosts_ca(path, "gw.example", 2222, NULL, 0, err, sizeof err), 1);
    ck_assert_int_eq(flas_known_hosts_ca(path, "gw.example", 22, NULL, 0, err, sizeof err), 0);
    ck_assert_int_eq(flas_known_hosts_revoked(path, key, kl, err, sizeof err), 1);
    ck_assert_int_eq(flas_known_hosts_revoked(path, ca, cal, err, sizeof err), 0);
    FILE *f = fopen(path, "a");
    fprintf(f, "@cert-authority host\n");
    fclose(f);
    ck_assert_int_eq(flas_known_hosts_ca(path, "x", 22, NULL, 0, err, sizeof err), -1);
    ck_assert_msg(strstr(err, ":6: expected '@cert-authority|@revoked HOSTS KEYTYPE BASE64'"), "%s", err);
    unlink(path);
}
END_TEST

START_TEST(certificate_path_defaults_like_openssh)
{
    flas_ssh_target t;
    char buf[2100];
    memset(&t, 0, sizeof t);
    flas_ssh_cert_path(&t, buf, sizeof buf);
    ck_assert_str_eq(buf, ""); /* ssh-agent */
    snprintf(t.identity, sizeof t.identity, "%s", fixture("user_ed25519"));
    flas_ssh_cert_path(&t, buf, sizeof buf);
    ck_assert_str_eq(buf, ""); /* no user_ed25519-cert.pub next to it */
    snprintf(t.identity, sizeof t.identity, "%s", fixture("expired"));
    flas_ssh_cert_path(&t, buf, sizeof buf);
    ck_assert_str_eq(buf, fixture("expired-cert.pub"));
    snprintf(t.certificate, sizeof t.certificate, "/elsewhere-cert.pub");
    flas_ssh_cert_path(&t, buf, sizeof buf);
    ck_assert_str_eq(buf, "/elsewhere-cert.pub");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ssh_cert");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, every_type_parses_and_its_signature_verifies);
    tcase_add_test(tc, validity_principal_and_type_are_checked);
    tcase_add_test(tc, truncated_at_every_length_is_refused);
    tcase_add_test(tc, overflowing_lengths_and_changed_bytes_are_refused);
    tcase_add_test(tc, other_types_and_garbage_are_refused);
    tcase_add_test(tc, known_hosts_marker_lines);
    tcase_add_test(tc, certificate_path_defaults_like_openssh);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
