/* write_step_state: computes one training step (and optionally S more) of the CPU core and writes it
 * as a "FLaS step state" (flas/step_state.h), the input of the GPU step test. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/step_state.h"
#include "step_state_make.h"

static void usage(FILE *f)
{
    fputs("usage: write_step_state --out FILE [--preset NAME | --dim N --layers N --heads N --kv-heads N\n"
          "                         --hidden N --vocab N --seq N [--untied]] [options]\n"
          "Runs the CPU core on one deterministic batch and writes params, tokens, targets, loss, grads\n"
          "(and logits, and S AdamW steps' losses) for the GPU step test.\n"
          "  --preset NAME      model shape: ", f);
    for (const char *const *p = flas_config_preset_names(); *p; p++)
        fprintf(f, "%s%s", *p, p[1] ? ", " : "\n");
    fputs("  --dim, --layers, --heads, --kv-heads, --hidden, --vocab, --seq N\n"
          "                     explicit shape (overrides the preset's field); --untied: separate output head\n"
          "  --norm-eps X, --rope-theta X   (1e-5, 10000)\n"
          "  --batch B          sequences per batch (2)\n"
          "  --seq-len T        positions per sequence (min(16, seq))\n"
          "  --seed N           weights and tokens (1)\n"
          "  --steps S          AdamW steps to record after the reference step (0)\n"
          "  --lr X, --min-lr X, --warmup N, --decay N   schedule (3e-4, lr/10, 0, S)\n"
          "  --beta1 X, --beta2 X, --eps X, --weight-decay X, --clip X   (0.9, 0.95, 1e-8, 0.1, 1)\n"
          "  --threads N        OpenMP threads of the core (all)\n"
          "  --reference        plain-loop reference layers instead of the fast path\n"
          "  --logits, --no-logits   store the B*T*vocab reference logits or not (default: when they\n"
          "                     take at most 64 MiB)\n"
          "  --out FILE         where to write (atomically)\n"
          "  -h, --help         this text\n",
          f);
}

enum { O_PRESET = 256, O_DIM, O_LAYERS, O_HEADS, O_KV, O_HIDDEN, O_VOCAB, O_SEQ, O_UNTIED, O_NORM_EPS, O_THETA,
       O_BATCH, O_SEQ_LEN, O_SEED, O_STEPS, O_LR, O_MIN_LR, O_WARMUP, O_DECAY, O_BETA1, O_BETA2, O_EPS, O_WD,
       O_CLIP, O_THREADS, O_REFERENCE, O_LOGITS, O_NO_LOGITS, O_OUT };

static const struct option longopts[] = {
    {"preset", 1, 0, O_PRESET}, {"dim", 1, 0, O_DIM}, {"layers", 1, 0, O_LAYERS}, {"heads", 1, 0, O_HEADS},
    {"kv-heads", 1, 0, O_KV}, {"hidden", 1, 0, O_HIDDEN}, {"vocab", 1, 0, O_VOCAB}, {"seq", 1, 0, O_SEQ},
    {"untied", 0, 0, O_UNTIED}, {"norm-eps", 1, 0, O_NORM_EPS}, {"rope-theta", 1, 0, O_THETA},
    {"batch", 1, 0, O_BATCH}, {"seq-len", 1, 0, O_SEQ_LEN}, {"seed", 1, 0, O_SEED}, {"steps", 1, 0, O_STEPS},
    {"lr", 1, 0, O_LR}, {"min-lr", 1, 0, O_MIN_LR}, {"warmup", 1, 0, O_WARMUP}, {"decay", 1, 0, O_DECAY},
    {"beta1", 1, 0, O_BETA1}, {"beta2", 1, 0, O_BETA2}, {"eps", 1, 0, O_EPS}, {"weight-decay", 1, 0, O_WD},
    {"clip", 1, 0, O_CLIP}, {"threads", 1, 0, O_THREADS}, {"reference", 0, 0, O_REFERENCE},
    {"logits", 0, 0, O_LOGITS}, {"no-logits", 0, 0, O_NO_LOGITS}, {"out", 1, 0, O_OUT}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    /* Shape options override fields of the preset (or of an all-zero shape, which validation refuses
     * unless every field was given): collected first, applied after the loop. */
    flas_config cfg = {0, 0, 0, 0, 0, 0, 0, 1e-5f, 10000.0f, 1};
    int shape[7] = {0}, have[7] = {0}, untied = 0, B = 2, T = 0, steps = 0, threads = 0, reference = 0,
        logits = -1, warmup = 0, decay = -1;
    float lr = 3e-4f, min_lr = -1.0f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f, clip = 1.0f;
    float norm_eps = 0, theta = 0;
    int have_eps = 0, have_theta = 0;
    uint64_t seed = 1;
    const char *out = NULL, *preset = NULL;
    for (int c; (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1;) {
        int bad = 0;
        switch (c) {
        case 'h': usage(stdout); return 0;
        case O_PRESET: preset = optarg; break;
        case O_DIM: case O_LAYERS: case O_HEADS: case O_KV: case O_HIDDEN: case O_VOCAB: case O_SEQ:
            bad = parse_int(optarg, 1, 1L << 30, &shape[c - O_DIM]);
            have[c - O_DIM] = 1;
            break;
        case O_UNTIED: untied = 1; break;
        case O_NORM_EPS: bad = parse_float(optarg, &norm_eps), have_eps = 1; break;
        case O_THETA: bad = parse_float(optarg, &theta), have_theta = 1; break;
        case O_BATCH: bad = parse_int(optarg, 1, FLAS_STEP_STATE_MAX_BATCH, &B); break;
        case O_SEQ_LEN: bad = parse_int(optarg, 1, 1L << 30, &T); break;
        case O_SEED: bad = parse_u64(optarg, &seed); break;
        case O_STEPS: bad = parse_int(optarg, 0, FLAS_STEP_STATE_MAX_STEPS, &steps); break;
        case O_LR: bad = parse_float(optarg, &lr); break;
        case O_MIN_LR: bad = parse_float(optarg, &min_lr); break;
        case O_WARMUP: bad = parse_int(optarg, 0, 1L << 30, &warmup); break;
        case O_DECAY: bad = parse_int(optarg, 0, 1L << 30, &decay); break;
        case O_BETA1: bad = parse_float(optarg, &beta1); break;
        case O_BETA2: bad = parse_float(optarg, &beta2); break;
        case O_EPS: bad = parse_float(optarg, &eps); break;
        case O_WD: bad = parse_float(optarg, &wd); break;
        case O_CLIP: bad = parse_float(optarg, &clip); break;
        case O_THREADS: bad = parse_int(optarg, 0, 4096, &threads); break;
        case O_REFERENCE: reference = 1; break;
        case O_LOGITS: logits = 1; break;
        case O_NO_LOGITS: logits = 0; break;
        case O_OUT: out = optarg; break;
        default: fputs("write_step_state: see --help\n", stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "write_step_state: invalid value '%s' (see --help)\n", optarg);
            return 2;
        }
    }
    if (optind < argc || !out) {
        fprintf(stderr, "write_step_state: %s (see --help)\n", out ? "unexpected argument" : "--out FILE is required");
        return 2;
    }
    if (preset && flas_config_preset(preset, &cfg)) {
        fprintf(stderr, "write_step_state: unknown preset '%s' (see --help)\n", preset);
        return 2;
    }
    if (!preset && !(have[0] && have[1] && have[2] && have[3] && have[4] && have[5] && have[6])) {
        fputs("write_step_state: give --preset NAME, or all of --dim --layers --heads --kv-heads --hidden --vocab "
              "--seq (see --help)\n", stderr);
        return 2;
    }
    int *field[7] = {&cfg.dim, &cfg.n_layers, &cfg.n_heads, &cfg.n_kv_heads, &cfg.hidden_dim, &cfg.vocab_size,
                     &cfg.seq_len};
    for (int i = 0; i < 7; i++)
        if (have[i])
            *field[i] = shape[i];
    if (untied)
        cfg.tied_embeddings = 0;
    if (have_eps)
        cfg.norm_eps = norm_eps;
    if (have_theta)
        cfg.rope_theta = theta;

    step_state_opts o;
    step_state_opts_default(&o, &cfg);
    o.B = B;
    if (T)
        o.T = T;
    o.seed = seed;
    o.steps = steps;
    o.reference = reference;
    o.threads = threads;
    /* Logits are the biggest optional part (B*T*32000 floats for a LLaMA vocabulary): by default only
     * when small, since the loss and the grads already pin the forward pass down. */
    o.logits = logits >= 0 ? logits : (double)B * o.T * cfg.vocab_size * 4.0 <= 64.0 * 1048576.0;
    o.adamw = (flas_step_adamw){lr, min_lr < 0 ? lr * 0.1f : min_lr, warmup, decay < 0 ? steps : decay,
                                beta1, beta2, eps, wd, clip};
    flas_step_state s;
    char err[512];
    if (step_state_make(&o, &s, err, sizeof err) || flas_step_state_write(out, &s, err, sizeof err)) {
        fprintf(stderr, "write_step_state: error: %s\n", err);
        return 1;
    }
    printf("write_step_state: %s: %zu params, B %d x T %d, loss %.6f, %d steps, %zu bytes\n", out, s.n_params,
           s.B, s.T, (double)s.loss, s.n_steps, flas_step_state_file_bytes(&s));
    if (s.n_steps)
        printf("write_step_state: step losses %.6f .. %.6f\n", (double)s.step_loss[0],
               (double)s.step_loss[s.n_steps - 1]);
    flas_step_state_free(&s);
    return 0;
}
