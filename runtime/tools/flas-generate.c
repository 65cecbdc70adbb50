/* flas-generate: what a FLaS checkpoint writes after a prompt. A thin main over flas_generate(). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/checkpoint.h"
#include "flas/generate.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: flas-generate --model CKPT.h5 --tokenizer TOKENIZER.model [options] [PROMPT]\n"
               "Samples a continuation of PROMPT (default: empty, i.e. from BOS) from any FLaS checkpoint.\n"
               "  -m, --model FILE         checkpoint (global or local)\n"
               "  -t, --tokenizer FILE     the federation's SentencePiece model\n"
               "  -n, --tokens N           tokens to sample (default 64)\n"
               "      --temperature X      0 = greedy (default 0.8)\n"
               "      --top-k K            sample among the K most likely tokens (default 40; 0 = all)\n"
               "      --seed S             the same seed and prompt give the same text (default 1)\n"
               "      --samples N          independent samples, seeds S, S+1, ... (default 1)\n"
               "      --threads N          OpenMP threads (default: all processors)\n");
}

int main(int argc, char **argv)
{
    const char *model = NULL, *tokpath = NULL;
    flas_generate_opts o = {64, 0.8f, 40, 1, 0};
    int samples = 1;
    enum { O_TEMP = 1000, O_TOPK, O_SEED, O_SAMPLES, O_THREADS };
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},    {"tokenizer", required_argument, 0, 't'},
        {"tokens", required_argument, 0, 'n'},   {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"seed", required_argument, 0, O_SEED},
        {"samples", required_argument, 0, O_SAMPLES}, {"threads", required_argument, 0, O_THREADS},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "m:t:n:h", longopts, NULL)) != -1;) {
        char *end = NULL;
        switch (c) {
        case 'm': model = optarg; break;
        case 't': tokpath = optarg; break;
        case 'n': o.max_new_tokens = (int)strtol(optarg, &end, 10); break;
        case O_TEMP: o.temperature = strtof(optarg, &end); break;
        case O_TOPK: o.top_k = (int)strtol(optarg, &end, 10); break;
        case O_SEED: o.seed = strtoull(optarg, &end, 10); break;
        case O_SAMPLES: samples = (int)strtol(optarg, &end, 10); break;
        case O_THREADS: o.threads = (int)strtol(optarg, &end, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (end && *end) {
            fprintf(stderr, "flas-generate: '%s' is not a number\n", optarg);
            return 2;
        }
    }
    if (!model || !tokpath || optind + 1 < argc || samples < 1) {
        usage(stderr);
        return 2;
    }
    const char *prompt = optind < argc ? argv[optind] : "";
    char err[1024] = "";
    flas_ckpt_hdf5_quiet();
    flas_tokenizer *tok = flas_tokenizer_open(tokpath, err, sizeof err);
    if (!tok) {
        fprintf(stderr, "flas-generate: %s\n", err);
        return 1;
    }
    int rc = 0;
    for (int s = 0; s < samples && rc == 0; s++, o.seed++) {
        char *text = flas_generate(model, tok, prompt, &o, err, sizeof err);
        if (!text) {
            fprintf(stderr, "flas-generate: %s\n", err);
            rc = 1;
            break;
        }
        printf("%s%s\n", prompt, text);
        free(text);
    }
    flas_tokenizer_close(tok);
    return rc;
}
