/* flas-stage: verified, resumable checkpoint transfers to and from a site over SSH (libssh), the same
 * code the coordinator uses. A thin main over include/flas/stage.h. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/stage.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flas-stage [OPTIONS] put LOCAL REMOTE\n"
            "       flas-stage [OPTIONS] get REMOTE LOCAL\n"
            "       flas-stage [OPTIONS] exec COMMAND\n"
            "\n"
            "Moves checkpoints to and from a FLaS site over SSH: resumable after a cut (from the longest\n"
            "prefix whose sha256 matches at both ends), verified by sha256 before the final rename, with\n"
            "strict host-key checking.\n"
            "\n"
            "  -t, --target USER@HOST[:PORT]  the site's SSH login (required)\n"
            "  -i, --identity FILE            private key (default: ssh-agent)\n"
            "  -c, --certificate FILE         OpenSSH user certificate of that key (default: FILE-cert.pub of\n"
            "                                 --identity if it exists); checked first: expired, not yet valid\n"
            "                                 or for another user is refused with the reason\n"
            "  -k, --known-hosts FILE         known_hosts to verify the host key against (required)\n"
            "      --trust-new-host           accept and record a host never seen (never a changed key)\n"
            "  -J, --jump USER@HOST[:PORT]    reach the target through this jump host\n"
            "      --chunk MIB                resume/verification chunk (default 8)\n"
            "      --sha256 HEX               get: the sha256 the file must have (default: the site's own)\n"
            "      --size BYTES               get: the size the file must have\n"
            "      --sidecar                  put: also write REMOTE.sha256 (sha256sum format) after the file\n"
            "      --limit SECONDS            wall-clock limit of each command at the site (exec, and the\n"
            "                                 hashing of put/get); past it the command is killed (default: none)\n"
            "  -q, --quiet                    no progress line\n"
            "  -h, --help\n"
            "\n"
            "Exit status: 0 done, 1 transfer or verification failed, 2 usage error.\n");
}

/* USER@HOST[:PORT] */
static int parse_login(const char *s, char *user, size_t ulen, char *host, size_t hlen, int *port)
{
    const char *at = strchr(s, '@');
    if (!at || at == s || (size_t)(at - s) >= ulen)
        return -1;
    snprintf(user, ulen, "%.*s", (int)(at - s), s);
    const char *h = at + 1, *colon = strrchr(h, ':');
    size_t n = colon ? (size_t)(colon - h) : strlen(h);
    if (n == 0 || n >= hlen)
        return -1;
    snprintf(host, hlen, "%.*s", (int)n, h);
    *port = 22;
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p <= 0 || p > 65535)
            return -1;
        *port = (int)p;
    }
    return 0;
}

static void show_progress(const char *what, int64_t done, int64_t total, void *ctx)
{
    static int64_t last;
    (void)ctx;
    if (done != total && done - last < (32 << 20))
        return;
    last = done;
    fprintf(stderr, "\rflas-stage: %s %lld/%lld MiB (%.0f%%)%s", what, (long long)(done >> 20),
            (long long)(total >> 20), total ? 100.0 * (double)done / (double)total : 100.0, done == total ? "\n" : "");
}

int main(int argc, char **argv)
{
    flas_ssh_target t;
    memset(&t, 0, sizeof t);
    flas_xfer_opts xo = {0};
    const char *sha = NULL;
    int64_t size = -1;
    int quiet = 0, sidecar = 0, have_target = 0;
    double limit = 0;
    enum { O_TRUST = 1000, O_CHUNK, O_SHA, O_SIZE, O_SIDECAR, O_LIMIT };
    static const struct option longopts[] = {
        {"target", required_argument, 0, 't'},   {"identity", required_argument, 0, 'i'},
        {"certificate", required_argument, 0, 'c'},
        {"known-hosts", required_argument, 0, 'k'}, {"trust-new-host", no_argument, 0, O_TRUST},
        {"jump", required_argument, 0, 'J'},     {"chunk", required_argument, 0, O_CHUNK},
        {"sha256", required_argument, 0, O_SHA}, {"size", required_argument, 0, O_SIZE},
        {"sidecar", no_argument, 0, O_SIDECAR},  {"quiet", no_argument, 0, 'q'},
        {"limit", required_argument, 0, O_LIMIT}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "+t:i:c:k:J:qh", longopts, NULL)) != -1;) {
        switch (c) {
        case 't':
            if (parse_login(optarg, t.user, sizeof t.user, t.host, sizeof t.host, &t.port)) {
                fprintf(stderr, "flas-stage: --target %s: expected USER@HOST[:PORT]\n", optarg);
                return 2;
            }
            have_target = 1;
            break;
        case 'i': snprintf(t.identity, sizeof t.identity, "%s", optarg); break;
        case 'c': snprintf(t.certificate, sizeof t.certificate, "%s", optarg); break;
        case 'k': snprintf(t.known_hosts, sizeof t.known_hosts, "%s", optarg); break;
        case O_TRUST: t.trust_new_host = 1; break;
        case 'J':
            if (parse_login(optarg, t.jump_user, sizeof t.jump_user, t.jump_host, sizeof t.jump_host, &t.jump_port)) {
                fprintf(stderr, "flas-stage: --jump %s: expected USER@HOST[:PORT]\n", optarg);
                return 2;
            }
            break;
        case O_CHUNK: xo.chunk = atoll(optarg) << 20; break;
        case O_SHA: sha = optarg; break;
        case O_SIZE: size = atoll(optarg); break;
        case O_SIDECAR: sidecar = 1; break;
        case O_LIMIT: {
            char *end;
            limit = strtod(optarg, &end);
            if (*end || !(limit > 0 && limit < 1e7)) {
                fprintf(stderr, "flas-stage: --limit %s: expected a positive number of seconds\n", optarg);
                return 2;
            }
            break;
        }
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int nargs = argc - optind;
    const char *cmd = nargs > 0 ? argv[optind] : "";
    int ok_args = (!strcmp(cmd, "put") || !strcmp(cmd, "get")) ? nargs == 3 : !strcmp(cmd, "exec") ? nargs == 2 : 0;
    if (t.certificate[0] && !t.identity[0]) {
        fprintf(stderr, "flas-stage: --certificate needs --identity (the key it certifies)\n");
        return 2;
    }
    if (!have_target || !t.known_hosts[0] || !ok_args) {
        fprintf(stderr, "flas-stage: %s\n", !have_target ? "--target is required"
                                             : !t.known_hosts[0] ? "--known-hosts is required (host keys are always verified)"
                                                                 : "expected: put LOCAL REMOTE | get REMOTE LOCAL | exec COMMAND");
        return 2;
    }
    if (!quiet && isatty(2))
        xo.progress = show_progress;
    char err[2048];
    flas_ssh *s = flas_ssh_connect(&t, err, sizeof err);
    if (!s) {
        fprintf(stderr, "flas-stage: %s\n", err);
        return 1;
    }
    flas_ssh_set_exec_limit(s, limit);
    int rc = 0;
    flas_xfer_stats st;
    if (!strcmp(cmd, "exec")) {
        static char out[1 << 20], eout[1 << 16];
        int status = -1;
        rc = flas_ssh_exec(s, argv[optind + 1], out, sizeof out, eout, sizeof eout, &status, err, sizeof err);
        fputs(out, stdout);
        fputs(eout, stderr);
        flas_ssh_close(s);
        if (rc)
            fprintf(stderr, "flas-stage: %s\n", err);
        return rc ? 1 : status;
    }
    if (!strcmp(cmd, "put")) {
        rc = flas_xfer_upload(s, argv[optind + 1], argv[optind + 2], &xo, &st, err, sizeof err);
        if (rc == 0 && sidecar) {
            char side[2200], text[2400];
            const char *base = strrchr(argv[optind + 2], '/');
            snprintf(side, sizeof side, "%s.sha256", argv[optind + 2]);
            snprintf(text, sizeof text, "%s  %s\n", st.sha256, base ? base + 1 : argv[optind + 2]);
            rc = flas_xfer_put_text(s, side, text, err, sizeof err);
        }
    } else {
        rc = flas_xfer_download(s, argv[optind + 1], argv[optind + 2], size, sha, &xo, &st, err, sizeof err);
    }
    flas_ssh_close(s);
    if (rc) {
        fprintf(stderr, "flas-stage: %s\n", err);
        return 1;
    }
    double mb = (double)st.sent / 1e6;
    printf("flas-stage: %s %s: %lld bytes, sha256 %s, resumed at %lld, %.1f MB in %.2f s (%.0f MB/s)\n", cmd,
           argv[optind + 1], (long long)st.size, st.sha256, (long long)st.resumed_at, mb, st.seconds,
           st.seconds > 0 ? mb / st.seconds : 0.0);
    return 0;
}
