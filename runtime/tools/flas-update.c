/* flas-update: compressed model updates from the command line (a thin main over flas/update.h): encode
 * a model as a bf16/int8 delta against another, apply a delta to its base (what the coordinator runs at
 * a site to rebuild the next global model from a compressed one), and describe an update file. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "flas/checkpoint.h"
#include "flas/update.h"

#ifndef FLAS_VERSION
#define FLAS_VERSION "unknown"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flas-update encode --base BASE.h5 --target MODEL.h5 --output UPDATE.h5 [options]\n"
            "       flas-update apply --base BASE.h5 --update UPDATE.h5 --output MODEL.h5 [--expect-sha256 HEX]\n"
            "       flas-update info UPDATE.h5\n"
            "\n"
            "Compressed model updates (docs/checkpoint-format.md, \"Update files\"): a model sent as a delta\n"
            "against a model the receiver already holds, as bf16 (2 bytes per value) or blockwise int8\n"
            "(1 byte per value plus a float32 scale per block: 3.9x smaller than float32).\n"
            "\n"
            "  encode   UPDATE = encoding(MODEL - BASE + residual); the new residual (what the encoding\n"
            "           lost) goes to --residual-out, to be added to the next delta (error feedback)\n"
            "      --encoding int8|bf16   (default int8)\n"
            "      --block N              values per int8 scale, 64..256 (default 128)\n"
            "      --residual-in FILE     a residual written by an earlier encode (default: none)\n"
            "      --residual-out FILE    where this encode's residual goes (default: dropped)\n"
            "  apply    MODEL = BASE + decode(UPDATE); refuses an update of another base. The output's\n"
            "           bytes depend only on the inputs, so the sender can name the result:\n"
            "      --expect-sha256 HEX    the sha256 the result must have; another result is removed and\n"
            "                             the exit status is 3 (fetch the whole model instead)\n"
            "  info     encoding, base, round, site, tokens, and the size against float32\n"
            "\n"
            "  -q, --quiet   no progress lines;   -h, --help;   --version\n"
            "\n"
            "Exit status: 0 done; 1 refused or failed (nothing written); 2 usage; 3 apply: not the\n"
            "expected result.\n");
}

static int info(const char *path)
{
    char err[1024];
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
    if (!r) {
        fprintf(stderr, "flas-update: error: %s\n", err);
        return 1;
    }
    const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
    const flas_param_table *t = flas_ckpt_tensors(r);
    struct stat st;
    double size = stat(path, &st) == 0 ? (double)st.st_size : 0;
    double full = 4.0 * (double)t->n_params_full;
    printf("%s: %s %s, round %lld%s%s, %lld tokens, %zu parameters\n", path,
           m->update == FLAS_UPDATE_FULL ? "full model" : "update", flas_ckpt_role_name(m->role), (long long)m->round,
           m->site[0] ? ", site " : "", m->site, (long long)m->tokens_trained, t->n_params_full);
    if (m->update != FLAS_UPDATE_FULL)
        printf("  encoding %s%s%.0d, delta against %s\n", flas_update_enc_name(m->update),
               m->update == FLAS_UPDATE_INT8 ? ", block " : "", m->update == FLAS_UPDATE_INT8 ? m->update_block : 0,
               m->base_sha256);
    printf("  %.0f bytes: %.2fx smaller than the float32 parameters (%.0f bytes)\n", size, size > 0 ? full / size : 0,
           full);
    flas_ckpt_close(r);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "--version")) {
        printf("flas-update (FLaS) %s\n", FLAS_VERSION);
        return 0;
    }
    if (argc < 2 || (strcmp(argv[1], "encode") && strcmp(argv[1], "apply") && strcmp(argv[1], "info"))) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    flas_ckpt_hdf5_quiet();
    if (!strcmp(cmd, "info")) {
        if (argc != 3) {
            usage(stderr);
            return 2;
        }
        return info(argv[2]);
    }
    enum { O_BASE = 256, O_TARGET, O_UPDATE, O_OUTPUT, O_ENC, O_BLOCK, O_RIN, O_ROUT, O_EXPECT };
    static const struct option longopts[] = {
        {"base", required_argument, 0, O_BASE},         {"target", required_argument, 0, O_TARGET},
        {"update", required_argument, 0, O_UPDATE},     {"output", required_argument, 0, O_OUTPUT},
        {"encoding", required_argument, 0, O_ENC},      {"block", required_argument, 0, O_BLOCK},
        {"residual-in", required_argument, 0, O_RIN},   {"residual-out", required_argument, 0, O_ROUT},
        {"expect-sha256", required_argument, 0, O_EXPECT}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},                  {0, 0, 0, 0}};
    const char *base = NULL, *target = NULL, *update = NULL, *output = NULL, *rin = NULL, *rout = NULL;
    flas_update_opts o = {.enc = FLAS_UPDATE_INT8, .block = FLAS_UPDATE_BLOCK_DEFAULT, .progress = 1};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        switch (c) {
        case O_BASE: base = optarg; break;
        case O_TARGET: target = optarg; break;
        case O_UPDATE: update = optarg; break;
        case O_OUTPUT: output = optarg; break;
        case O_RIN: rin = optarg; break;
        case O_ROUT: rout = optarg; break;
        case O_EXPECT: o.expect_sha256 = optarg; break;
        case O_ENC:
            if (flas_update_enc_parse(optarg, &o.enc) || o.enc == FLAS_UPDATE_FULL) {
                fprintf(stderr, "flas-update: error: --encoding must be int8 or bf16, got '%s'\n", optarg);
                return 2;
            }
            break;
        case O_BLOCK: {
            char *end, why[128];
            errno = 0;
            long b = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || b > 100000 || flas_update_block_check((int)b, why, sizeof why)) {
                fprintf(stderr, "flas-update: error: --block: '%s' is not a block size of %d..%d values\n", optarg,
                        FLAS_UPDATE_BLOCK_MIN, FLAS_UPDATE_BLOCK_MAX);
                return 2;
            }
            o.block = (int)b;
            break;
        }
        case 'q': o.progress = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "flas-update: error: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    char err[2048];
    if (!strcmp(cmd, "encode")) {
        if (!base || !target || !output || update || o.expect_sha256) {
            fprintf(stderr, "flas-update: error: encode needs --base, --target and --output (and takes no --update "
                    "or --expect-sha256)\n");
            return 2;
        }
        flas_update_report rep;
        if (flas_update_encode_file(base, target, rin, output, rout, &o, &rep, err, sizeof err)) {
            fprintf(stderr, "flas-update: error: %s\n", err);
            return 1;
        }
        printf("flas-update: %s: %s update of %s against %.16s...: %llu bytes (the model: %llu, %.2fx), delta norm "
               "%.4g, residual norm %.4g, %.2f s\n", output, flas_update_enc_name(o.enc), target, rep.base_sha256,
               (unsigned long long)rep.bytes_out, (unsigned long long)rep.bytes_in,
               rep.bytes_out ? (double)rep.bytes_in / (double)rep.bytes_out : 0.0, rep.delta_norm, rep.residual_norm,
               rep.seconds);
        return 0;
    }
    if (!base || !update || !output || target || rin || rout) {
        fprintf(stderr, "flas-update: error: apply needs --base, --update and --output (and takes no --target or "
                "residuals)\n");
        return 2;
    }
    int rc = flas_update_apply_file(base, update, output, &o, err, sizeof err);
    if (rc) {
        fprintf(stderr, "flas-update: error: %s\n", err);
        return rc == -2 ? 3 : 1;
    }
    if (o.progress)
        printf("flas-update: %s = %s + %s\n", output, base, update);
    return 0;
}
