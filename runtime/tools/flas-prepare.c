/* flas-prepare: a site's text (plain lines, paragraphs or JSON lines) -> token shards for
 * flas-train, with the federation's shared tokenizer. A thin main over flas_prepare_run. */
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/prepare.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: flas-prepare --tokenizer MODEL --out DIR [options] INPUT...\n"
        "       flas-prepare --verify [--tokenizer MODEL] [--vocab-size N] SHARD|DIR...\n"
        "Tokenizes INPUT files (plain UTF-8 text or JSON lines, optionally gzip'ed) with the\n"
        "SentencePiece MODEL into token shards DIR/part-*.flastok for flas-train. DIR must not exist;\n"
        "it appears only when every input succeeded.\n"
        "  -t, --tokenizer MODEL       SentencePiece .model shared by the federation\n"
        "  -o, --out DIR               output directory (new)\n"
        "  -f, --format F              lines (one document per line; default), paragraphs (blank-line\n"
        "                              separated), jsonl (a JSON object per line), auto (jsonl for\n"
        "                              *.jsonl/*.json[.gz], else lines)\n"
        "      --json-field NAME       the JSON string field holding the text (default: text)\n"
        "      --eos                   end every document with EOS too (BOS always starts one)\n"
        "      --replace-invalid-utf8  replace invalid UTF-8 bytes with U+FFFD (counted) instead of\n"
        "                              refusing the file\n"
        "      --vocab-size N          the model's vocab_size: refuse a tokenizer of another size\n"
        "      --shard-tokens N        start a new shard after N tokens (default 134217728)\n"
        "      --max-document-bytes N  refuse longer documents (default 67108864): bounds memory\n"
        "  -j, --threads N             input files tokenized at once (default: OMP_NUM_THREADS or cores)\n"
        "  -q, --quiet                 no progress lines, only the summary\n"
        "      --verify                check existing shards (hashes, ids, vocabulary) instead\n"
        "  -h, --help                  this text\n");
}

static int parse_u64(const char *opt, const char *s, unsigned long long min, unsigned long long *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || s[0] == '-' || v < min) {
        fprintf(stderr, "flas-prepare: %s '%s': expected an integer >= %llu\n", opt, s, min);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { OPT_JSON_FIELD = 256, OPT_EOS, OPT_REPLACE, OPT_VOCAB, OPT_SHARD, OPT_MAXDOC, OPT_VERIFY };
    static const struct option longopts[] = {
        {"tokenizer", required_argument, 0, 't'}, {"out", required_argument, 0, 'o'},
        {"format", required_argument, 0, 'f'}, {"json-field", required_argument, 0, OPT_JSON_FIELD},
        {"eos", no_argument, 0, OPT_EOS}, {"replace-invalid-utf8", no_argument, 0, OPT_REPLACE},
        {"vocab-size", required_argument, 0, OPT_VOCAB}, {"shard-tokens", required_argument, 0, OPT_SHARD},
        {"max-document-bytes", required_argument, 0, OPT_MAXDOC}, {"threads", required_argument, 0, 'j'},
        {"quiet", no_argument, 0, 'q'}, {"verify", no_argument, 0, OPT_VERIFY},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    flas_prepare_opts o = {.progress = 1, .stop = &stop_requested};
    int verify = 0, c;
    unsigned long long v;
    while ((c = getopt_long(argc, argv, "t:o:f:j:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 't': o.tokenizer_path = optarg; break;
        case 'o': o.out_dir = optarg; break;
        case 'f':
            if (flas_input_format_parse(optarg, &o.format) != 0) {
                fprintf(stderr, "flas-prepare: --format '%s': expected lines, paragraphs, jsonl or auto\n", optarg);
                return 2;
            }
            break;
        case OPT_JSON_FIELD: o.json_field = optarg; break;
        case OPT_EOS: o.add_eos = 1; break;
        case OPT_REPLACE: o.replace_invalid_utf8 = 1; break;
        case OPT_VOCAB:
            if (parse_u64("--vocab-size", optarg, 1, &v) != 0 || v > 0x7fffffff)
                return 2;
            o.expect_vocab_size = (int)v;
            break;
        case OPT_SHARD:
            if (parse_u64("--shard-tokens", optarg, 1, &v) != 0)
                return 2;
            o.shard_tokens = v;
            break;
        case OPT_MAXDOC:
            if (parse_u64("--max-document-bytes", optarg, 1, &v) != 0)
                return 2;
            o.max_document_bytes = (size_t)v;
            break;
        case 'j':
            if (parse_u64("--threads", optarg, 1, &v) != 0 || v > 4096)
                return 2;
            o.threads = (int)v;
            break;
        case 'q': o.progress = 0; break;
        case OPT_VERIFY: verify = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    o.inputs = (const char *const *)argv + optind;
    o.n_inputs = argc - optind;
    char err[1024];
    flas_prepare_stats st;

    if (verify) {
        if (o.n_inputs == 0) {
            fprintf(stderr, "flas-prepare: --verify needs shard files or directories\n");
            return 2;
        }
        if (flas_prepare_verify(o.tokenizer_path, o.expect_vocab_size, o.inputs, o.n_inputs, &st, err,
                                sizeof err) != 0) {
            fprintf(stderr, "flas-prepare: %s\n", err);
            return 1;
        }
        printf("flas-prepare: verified %llu shards: %llu documents, %llu tokens\n",
               (unsigned long long)st.shards, (unsigned long long)st.documents, (unsigned long long)st.tokens);
        return 0;
    }
    if (!o.tokenizer_path || !o.out_dir || o.n_inputs == 0) {
        fprintf(stderr, "flas-prepare: need --tokenizer MODEL, --out DIR and at least one INPUT (see --help)\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    if (flas_prepare_run(&o, &st, err, sizeof err) != 0) {
        fprintf(stderr, "flas-prepare: %s; nothing was written\n", err);
        return 1;
    }
    /* bytes/token of the text alone, as spm_encode would count it: BOS/EOS left out. */
    const uint64_t text_tokens = st.tokens - st.documents * (o.add_eos ? 2u : 1u);
    printf("flas-prepare: %llu files -> %llu shards in %s: %llu documents, %llu tokens, %.2f bytes/token, "
           "%llu invalid UTF-8 bytes replaced, %llu empty skipped, %.1f s\n",
           (unsigned long long)st.files, (unsigned long long)st.shards, o.out_dir,
           (unsigned long long)st.documents, (unsigned long long)st.tokens,
           text_tokens ? (double)st.bytes / (double)text_tokens : 0.0, (unsigned long long)st.replaced,
           (unsigned long long)st.skipped_empty, st.seconds);
    return 0;
}
