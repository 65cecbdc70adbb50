/* flas-aggregate: merge a round's local checkpoints into the next global checkpoint.
 * A thin main over flas_aggregate() (aggregator/merge.c); see flas-aggregate(1). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/aggregate.h"
#include "flas/checkpoint.h"
#include "flas/conf.h"
#include "flas/dp.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flas-aggregate --previous GLOBAL.h5 --output NEXT.h5 [options] [--input SITE=]LOCAL.h5...\n"
            "Merge the local checkpoints of one round into the next global checkpoint, streaming\n"
            "tensor by tensor (memory: (inputs + 4) x chunk, not the model size).\n"
            "\n"
            "  -p, --previous FILE      the global checkpoint the round started from (never modified)\n"
            "  -o, --output FILE        the new global checkpoint (written atomically)\n"
            "  -s, --strategy NAME      fedavg (default; weighted by tokens trained), mean, fedavgm,\n"
            "                           fedadam, fedyogi, diloco (outer Nesterov)\n"
            "      --lr X               server learning rate (fedavgm 1, diloco 0.7, fedadam/fedyogi 0.01)\n"
            "      --momentum X         fedavgm/diloco momentum (0.9)\n"
            "      --beta1 X --beta2 X  fedadam/fedyogi moment decay (0.9, 0.99)\n"
            "      --tau X              fedadam/fedyogi adaptivity (1e-3)\n"
            "      --uniform            weight every input equally instead of by tokens trained\n"
            "      --policy P           refuse-round (default: any bad input refuses the round) or\n"
            "                           drop-bad (drop bad inputs, go on with at least --min-sites)\n"
            "      --min-sites N        fewest usable inputs for a round (default 1)\n"
            "      --max-tokens N       largest plausible tokens_trained of one input (default 1e13)\n"
            "      --reset-server-state start fresh server buffers when the previous global carries\n"
            "                           another strategy's state\n"
            "      --chunk-kib N        KiB per streamed chunk per input (default 4096, at least 4)\n"
            "      --threads N          OpenMP threads of the merge kernel (default 1; files are\n"
            "                           hashed in parallel anyway; on shared nodes with N > 1 set\n"
            "                           OMP_WAIT_POLICY=passive)\n"
            "      --max-update-norm X  refuse an input whose update ||x_k - x_prev||_2 exceeds X\n"
            "      --max-update-ratio R refuse an input whose update norm exceeds R (>= 1) times the\n"
            "                           lower median of the inputs' norms (both: the policy decides)\n"
            "      --base-sha256 HEX    the model the sites trained from, when it is a params-only copy of\n"
            "                           the previous global (default: the previous global's own sha256)\n"
            "      --emit-update FILE   also write the new global as an update (bf16/int8 delta) against\n"
            "                           that base; the new global's weights are then base + its decode\n"
            "      --emit-encoding E    int8 (default) or bf16\n"
            "      --emit-block N       values per int8 scale, 64..256 (default 128)\n"
            "      --dp-clip C          DP-FedAvg: clip every site's update to L2 norm C ('inf': no\n"
            "                           clipping), weight the sites equally (implies --uniform), and\n"
            "      --dp-noise SIGMA     add Gaussian noise of stddev SIGMA*C/n to the mean (default 0)\n"
            "      --dp-delta D         the delta of the epsilon reported (default 1e-6)\n"
            "      --dp-seed HEX        64 hex digits: a fixed noise seed, FOR TESTS ONLY (whoever knows\n"
            "                           the seed can remove the noise); default: the kernel's CSPRNG\n"
            "  -i, --input SITE=FILE    a local checkpoint fetched from SITE: refused if the file claims\n"
            "                           another site (repeatable; LOCAL.h5 arguments name no site).\n"
            "                           Inputs may be update files (flas-train --update): decoded onto\n"
            "                           the previous global's weights chunk by chunk\n"
            "  -q, --quiet              no progress lines\n"
            "  -h, --help               this help;  --version  the version\n"
            "\n"
            "Exit status: 0 merged; 1 round refused (bad inputs or too few sites); 2 usage error or\n"
            "unusable previous global; 3 I/O or numerical failure. On failure nothing is written.\n");
}

static int parse_double(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        fprintf(stderr, "flas-aggregate: error: %s needs a number, got '%s'\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_long(const char *opt, const char *s, long long lo, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo) {
        fprintf(stderr, "flas-aggregate: error: %s needs an integer >= %lld, got '%s'\n", opt, lo, s);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_LR = 256, O_MOM, O_B1, O_B2, O_TAU, O_UNIFORM, O_POLICY, O_MIN, O_MAXTOK, O_RESET, O_CHUNK, O_THREADS,
           O_VERSION, O_MAXNORM, O_MAXRATIO, O_BASE, O_EMIT, O_EMITENC, O_EMITBLOCK, O_DPCLIP, O_DPNOISE, O_DPDELTA, O_DPSEED };
    static const struct option longopts[] = {
        {"previous", required_argument, 0, 'p'}, {"output", required_argument, 0, 'o'},
        {"strategy", required_argument, 0, 's'}, {"lr", required_argument, 0, O_LR},
        {"momentum", required_argument, 0, O_MOM}, {"beta1", required_argument, 0, O_B1},
        {"beta2", required_argument, 0, O_B2},   {"tau", required_argument, 0, O_TAU},
        {"uniform", no_argument, 0, O_UNIFORM},  {"policy", required_argument, 0, O_POLICY},
        {"min-sites", required_argument, 0, O_MIN}, {"max-tokens", required_argument, 0, O_MAXTOK},
        {"reset-server-state", no_argument, 0, O_RESET}, {"chunk-kib", required_argument, 0, O_CHUNK},
        {"threads", required_argument, 0, O_THREADS}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, O_VERSION},
        {"max-update-norm", required_argument, 0, O_MAXNORM}, {"max-update-ratio", required_argument, 0, O_MAXRATIO},
        {"base-sha256", required_argument, 0, O_BASE}, {"emit-update", required_argument, 0, O_EMIT},
        {"emit-encoding", required_argument, 0, O_EMITENC}, {"emit-block", required_argument, 0, O_EMITBLOCK},
        {"dp-clip", required_argument, 0, O_DPCLIP}, {"dp-noise", required_argument, 0, O_DPNOISE},
        {"dp-delta", required_argument, 0, O_DPDELTA}, {"dp-seed", required_argument, 0, O_DPSEED},
        {"input", required_argument, 0, 'i'}, {0, 0, 0, 0}};
    /* Inputs: --input SITE=FILE in the order given, then the plain LOCAL.h5 arguments. */
    static const char **paths, **sites; /* static: still reachable at every early exit (leak checkers) */
    paths = calloc((size_t)argc + 1, sizeof *paths);
    sites = calloc((size_t)argc + 1, sizeof *sites);
    int n = 0;
    double max_norm = 0, max_ratio = 0;
    if (!paths || !sites) {
        fprintf(stderr, "flas-aggregate: error: out of memory\n");
        return 3;
    }
    const char *previous = NULL, *output = NULL, *strategy = "fedavg", *policy = "refuse-round";
    double lr = NAN, mom = NAN, b1 = NAN, b2 = NAN, tau = NAN;
    long long min_sites = 1, max_tokens = -1, chunk_kib = 4096, threads = 1;
    int uniform = 0, reset = 0, quiet = 0, c;
    const char *base_sha = NULL, *emit = NULL, *emit_enc = "int8";
    long long emit_block = FLAS_UPDATE_BLOCK_DEFAULT;
    double dp_clip = 0, dp_noise = 0, dp_delta = 0;
    static unsigned char dp_seed[FLAS_DP_SEED_BYTES];
    int have_seed = 0;
    while ((c = getopt_long(argc, argv, "p:o:s:i:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'i': {
            /* Site names never hold '=' (flas_name_valid), so the first one splits. */
            char *eq = strchr(optarg, '=');
            if (eq)
                *eq = '\0';
            if (!eq || !flas_name_valid(optarg) || !eq[1]) {
                fprintf(stderr, "flas-aggregate: error: --input needs SITE=FILE with a valid site name, got '%s%s%s'\n",
                        optarg, eq ? "=" : "", eq ? eq + 1 : "");
                return 2;
            }
            sites[n] = optarg;
            paths[n++] = eq + 1;
            break;
        }
        case O_MAXNORM: if (parse_double("--max-update-norm", optarg, &max_norm)) return 2; break;
        case O_MAXRATIO: if (parse_double("--max-update-ratio", optarg, &max_ratio)) return 2; break;
        case 'p': previous = optarg; break;
        case 'o': output = optarg; break;
        case 's': strategy = optarg; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case O_VERSION: printf("flas-aggregate (FLaS) %s\n", FLAS_VERSION); return 0;
        case O_LR: if (parse_double("--lr", optarg, &lr)) return 2; break;
        case O_MOM: if (parse_double("--momentum", optarg, &mom)) return 2; break;
        case O_B1: if (parse_double("--beta1", optarg, &b1)) return 2; break;
        case O_B2: if (parse_double("--beta2", optarg, &b2)) return 2; break;
        case O_TAU: if (parse_double("--tau", optarg, &tau)) return 2; break;
        case O_UNIFORM: uniform = 1; break;
        case O_POLICY: policy = optarg; break;
        case O_MIN: if (parse_long("--min-sites", optarg, 1, &min_sites)) return 2; break;
        case O_MAXTOK: if (parse_long("--max-tokens", optarg, 1, &max_tokens)) return 2; break;
        case O_RESET: reset = 1; break;
        case O_BASE: base_sha = optarg; break;
        case O_EMIT: emit = optarg; break;
        case O_EMITENC: emit_enc = optarg; break;
        case O_EMITBLOCK: if (parse_long("--emit-block", optarg, 1, &emit_block)) return 2; break;
        case O_DPCLIP:
            if (strcmp(optarg, "inf") == 0)
                dp_clip = INFINITY;
            else if (parse_double("--dp-clip", optarg, &dp_clip))
                return 2;
            if (!(dp_clip > 0)) {
                fprintf(stderr, "flas-aggregate: error: --dp-clip must be > 0 or 'inf', got '%s'\n", optarg);
                return 2;
            }
            break;
        case O_DPNOISE: if (parse_double("--dp-noise", optarg, &dp_noise)) return 2; break;
        case O_DPDELTA: if (parse_double("--dp-delta", optarg, &dp_delta)) return 2; break;
        case O_DPSEED:
            if (flas_dp_seed_parse(optarg, dp_seed)) {
                fprintf(stderr, "flas-aggregate: error: --dp-seed needs 64 hex digits\n");
                return 2;
            }
            have_seed = 1;
            break;
        case O_CHUNK: if (parse_long("--chunk-kib", optarg, 4, &chunk_kib)) return 2; break;
        case O_THREADS: if (parse_long("--threads", optarg, 1, &threads)) return 2; break;
        default: usage(stderr); return 2;
        }
    }
    for (int a = optind; a < argc; a++)
        paths[n++] = argv[a];
    if (!previous || !output || n == 0) {
        fprintf(stderr, "flas-aggregate: error: %s\n", !previous ? "--previous GLOBAL.h5 is required"
                                                    : !output  ? "--output NEXT.h5 is required"
                                                               : "no local checkpoints given");
        usage(stderr);
        return 2;
    }
    flas_agg_strategy s;
    if (flas_agg_strategy_parse(strategy, &s)) {
        fprintf(stderr, "flas-aggregate: error: unknown strategy '%s' (fedavg, mean, fedavgm, fedadam, fedyogi, "
                "diloco)\n", strategy);
        return 2;
    }
    flas_agg_options o;
    flas_agg_defaults(&o, s);
    if (!isnan(lr)) o.lr = lr;
    if (!isnan(mom)) o.momentum = mom;
    if (!isnan(b1)) o.beta1 = b1;
    if (!isnan(b2)) o.beta2 = b2;
    if (!isnan(tau)) o.tau = tau;
    o.uniform = o.uniform || uniform;
    if (strcmp(policy, "refuse-round") == 0)
        o.policy = FLAS_AGG_REFUSE_ROUND;
    else if (strcmp(policy, "drop-bad") == 0)
        o.policy = FLAS_AGG_DROP_BAD;
    else {
        fprintf(stderr, "flas-aggregate: error: unknown policy '%s' (refuse-round, drop-bad)\n", policy);
        return 2;
    }
    if (chunk_kib > (1 << 22)) {
        fprintf(stderr, "flas-aggregate: error: --chunk-kib %lld is larger than 4 GiB\n", chunk_kib);
        return 2;
    }
    o.min_sites = (int)(min_sites > 1000000 ? 1000000 : min_sites);
    if (max_tokens > 0)
        o.max_tokens = max_tokens;
    o.reset_server_state = reset;
    o.chunk_elems = (size_t)chunk_kib << 8; /* KiB of float32 */
    o.threads = (int)(threads > 4096 ? 4096 : threads);
    o.progress = !quiet;
    o.max_update_norm = max_norm;
    o.max_update_ratio = max_ratio;
    o.input_sites = sites;
    o.base_sha256 = base_sha;
    o.emit_update = emit;
    if (flas_update_enc_parse(emit_enc, &o.emit_enc) || o.emit_enc == FLAS_UPDATE_FULL) {
        fprintf(stderr, "flas-aggregate: error: --emit-encoding must be int8 or bf16, got '%s'\n", emit_enc);
        return 2;
    }
    o.emit_block = (int)(emit_block > 100000 ? 100000 : emit_block);
    o.dp_clip = dp_clip;
    o.dp_noise = dp_noise;
    o.dp_delta = dp_delta;
    o.dp_seed = have_seed ? dp_seed : NULL;
    if (dp_clip > 0)
        o.uniform = 1; /* DP-FedAvg's mean weights the sites equally */
    if (dp_clip > 0 && dp_noise == 0) /* not a progress line: -q keeps it */
        fprintf(stderr, "flas-aggregate: warning: --dp-noise 0: updates are clipped but NOT private (epsilon is "
                "infinite)\n");
    flas_ckpt_hdf5_quiet();

    char err[2048];
    flas_agg_report rep;
    if (!quiet)
        fprintf(stderr, "flas-aggregate: %s of %d local checkpoint%s onto %s\n", flas_agg_strategy_name(s), n,
                n == 1 ? "" : "s", previous);
    int rc = flas_aggregate(previous, paths, n, output, &o, &rep, err, sizeof err);
    if (rc != FLAS_AGG_OK) {
        fprintf(stderr, "flas-aggregate: error: %s\n", err);
        flas_agg_report_free(&rep);
        free(paths);
        free(sites);
        return rc;
    }
    printf("flas-aggregate: round %lld written to %s: %s of %d/%d inputs in %.2f s (merge %.2f s at %.0f MB/s of "
           "tensors; SHA-256 of all files done %.2f s after the start)\n", (long long)rep.new_round, output,
           flas_agg_strategy_name(s), rep.n_used, rep.n_inputs, rep.seconds_total, rep.seconds_merge,
           rep.seconds_merge > 0 ? (rep.bytes_read + rep.bytes_written) / rep.seconds_merge / 1e6 : 0.0,
           rep.seconds_hash);
    if (dp_clip > 0)
        printf("flas-aggregate: DP-FedAvg: clip %g, noise multiplier %g (stddev %.4g per coordinate), norm pass "
               "%.2f s; privacy spent over %lld DP round%s: epsilon %.4g at delta %g\n", dp_clip, dp_noise,
               rep.dp_noise_stddev, rep.seconds_dp_norms, (long long)rep.dp_rounds, rep.dp_rounds == 1 ? "" : "s",
               rep.dp_epsilon, rep.dp_delta);
    for (int i = 0; i < rep.n_inputs; i++) {
        const flas_agg_input_report *x = &rep.inputs[i];
        char norm[80] = "";
        if (x->update_norm >= 0 && dp_clip > 0)
            snprintf(norm, sizeof norm, " update norm %.4g clipped x%.4g", x->update_norm, x->clip_factor);
        else if (x->update_norm >= 0)
            snprintf(norm, sizeof norm, " update norm %.4g", x->update_norm);
        printf("  %-8s %-16s tokens %-12lld weight %.6f%s sha256 %.16s... %s\n", x->used ? "merged" : "dropped",
               x->site[0] ? x->site : "?", (long long)x->tokens, x->weight, norm, x->sha256, paths[i]);
        if (!x->used)
            printf("           reason: %s\n", x->reason);
    }
    flas_agg_report_free(&rep);
    free(paths);
    free(sites);
    return 0;
}
