/* flas-convert: a model between FLaS HDF5 and Hugging Face, GGUF and llama2.c. A thin main over
 * flas_convert() (flas/interop.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/checkpoint.h"
#include "flas/interop.h"

static void usage(FILE *f)
{
    fputs("usage: flas-convert [options] INPUT OUTPUT\n"
          "Converts a LLaMA model between a FLaS checkpoint (HDF5) and the formats other tools read:\n"
          "  flas     FLaS HDF5 checkpoint (*.h5, *.hdf5); an import writes a round-0 global model\n"
          "  hf       Hugging Face directory: config.json, model.safetensors (or shards + index), tokenizer.model\n"
          "  gguf     GGUF v3 for llama.cpp (*.gguf), with the SentencePiece vocabulary embedded\n"
          "  llama2c  llama2.c checkpoint (*.bin), version 0 or 1\n"
          "The input's format is detected (a directory is hf); the output's follows its name (a name\n"
          "without .h5/.hdf5/.gguf/.bin is an hf directory).\n"
          "\n"
          "  --from FMT            input format (flas, hf, gguf, llama2c)\n"
          "  --to FMT              output format\n"
          "  --dtype T             output elements: f32 (default), f16, bf16 (hf, gguf), q8_0 (gguf)\n"
          "  --tokenizer FILE      SentencePiece model: embedded in gguf (required there unless the input\n"
          "                        is an hf directory with tokenizer.model), copied into hf\n"
          "  --shard-size SIZE     hf: at most SIZE bytes per safetensors file (k, M, G suffixes);\n"
          "                        more than one file gives model-0000k-of-0000n.safetensors + index\n"
          "  --llama2c-version V   llama2c output version, 0 (legacy) or 1 (default)\n"
          "  --seq-len N           context length to record (required when the input has none)\n"
          "  --round N             round of an imported global model (default 0)\n"
          "  --force               replace an existing OUTPUT\n"
          "  --quiet               no progress lines\n"
          "  --json                one JSON summary line on stdout\n"
          "  -h, --help            this text\n"
          "\n"
          "Exit status: 0 converted; 1 input refused or conversion failed (nothing written); 2 usage.\n",
          f);
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-')
        return -1;
    uint64_t mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = (uint64_t)1 << 10;
    else if (*end == 'M')
        mul = (uint64_t)1 << 20;
    else if (*end == 'G')
        mul = (uint64_t)1 << 30;
    if (mul > 1)
        end++;
    if (*end || v == 0 || v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

int main(int argc, char **argv)
{
    flas_convert_opts o;
    flas_convert_opts_init(&o);
    o.progress = 1;
    int json = 0;
    enum { O_FROM = 1000, O_TO, O_DTYPE, O_TOKENIZER, O_SHARD, O_L2C, O_SEQ, O_ROUND, O_FORCE, O_QUIET, O_JSON };
    static const struct option longopts[] = {
        {"from", required_argument, 0, O_FROM},         {"to", required_argument, 0, O_TO},
        {"dtype", required_argument, 0, O_DTYPE},       {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"shard-size", required_argument, 0, O_SHARD},  {"llama2c-version", required_argument, 0, O_L2C},
        {"seq-len", required_argument, 0, O_SEQ},       {"round", required_argument, 0, O_ROUND},
        {"force", no_argument, 0, O_FORCE},             {"quiet", no_argument, 0, O_QUIET},
        {"json", no_argument, 0, O_JSON},               {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        long v;
        int bad = 0;
        switch (c) {
        case O_FROM: bad = !(o.from = flas_format_parse(optarg)); break;
        case O_TO: bad = !(o.to = flas_format_parse(optarg)); break;
        case O_DTYPE: bad = flas_dtype_parse(optarg, &o.dtype) != 0; break;
        case O_TOKENIZER: o.tokenizer = optarg; break;
        case O_SHARD: bad = parse_size(optarg, &o.shard_bytes) != 0; break;
        case O_L2C: bad = parse_int(optarg, 0, 1, &v) != 0; o.llama2c_version = (int)v; break;
        case O_SEQ: bad = parse_int(optarg, 1, 1 << 30, &v) != 0; o.seq_len = (int)v; break;
        case O_ROUND: bad = parse_int(optarg, 0, 1L << 40, &v) != 0; o.round = v; break;
        case O_FORCE: o.force = 1; break;
        case O_QUIET: o.progress = 0; break;
        case O_JSON: json = 1; break;
        case 'h': usage(stdout); return 0;
        default: fputs("flas-convert: see --help\n", stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "flas-convert: %s: invalid value '%s' (see --help)\n", longopts[c - O_FROM].name, optarg);
            return 2;
        }
    }
    if (argc - optind != 2) {
        fputs("flas-convert: needs INPUT and OUTPUT (see --help)\n", stderr);
        return 2;
    }
    const char *in = argv[optind], *out = argv[optind + 1];
    flas_ckpt_hdf5_quiet();
    flas_convert_report r;
    char err[2048] = "";
    if (flas_convert(in, out, &o, &r, err, sizeof err)) {
        fprintf(stderr, "flas-convert: error: %s\n", err);
        return 1;
    }
    const double gb = (double)r.bytes_out / 1e9;
    if (json) {
        printf("{\"input\":");
        json_str(in);
        printf(",\"output\":");
        json_str(out);
        printf(",\"from\":\"%s\",\"to\":\"%s\",\"dtype\":\"%s\",\"tensors\":%d,\"parameters\":%" PRIu64
               ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64 ",\"largest_tensor_bytes\":%" PRIu64
               ",\"seconds\":%.3f,\"tokenizer\":",
               flas_format_name(r.from), flas_format_name(r.to), flas_dtype_name(o.dtype), r.n_tensors, r.params,
               r.bytes_in, r.bytes_out, r.largest_tensor, r.seconds);
        json_str(r.tokenizer);
        printf("}\n");
    } else if (o.progress)
        fprintf(stderr, "flas-convert: wrote %s (%s, %s): %d tensors, %" PRIu64 " parameters (dim %d, %d layers, %d/%d heads, "
                        "hidden %d, vocab %d, seq_len %d%s), %.2f GB in %.1f s%s%s\n",
                out, flas_format_name(r.to), flas_dtype_name(o.dtype), r.n_tensors, r.params, r.cfg.dim, r.cfg.n_layers,
                r.cfg.n_heads, r.cfg.n_kv_heads, r.cfg.hidden_dim, r.cfg.vocab_size, r.cfg.seq_len,
                r.cfg.tied_embeddings ? ", tied" : "", gb, r.seconds, r.tokenizer[0] ? "; tokenizer " : "",
                r.tokenizer);
    return 0;
}
