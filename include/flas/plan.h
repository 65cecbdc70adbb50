/* `flas-coordinator plan`: what one federated round costs at real scale, before anything runs.
 *
 * A plan is arithmetic over stated inputs, never a measurement: the model's shape (its parameter
 * count comes from the model's own table, flas_param_table_init, and its FLOPs per token from
 * flas_model_flops_per_token: each rule lives in one place), one description per site (GPUs, a
 * throughput, a link rate, a queue wait), the exchange format and the round's length. It predicts,
 * per round: bytes per site and direction, transfer, training and queue time per site, the aggregation
 * time, the critical path, and the memory per GPU under tensor parallel x ZeRO-1. docs/scaling.md uses
 * it and states what it leaves out.
 *
 * Model of one round (the order the coordinator runs it, docs/architecture.md):
 *   site s:   queue_s + down_s + train_s + overhead_s + up_s   (down and up: bytes / link rate + latency;
 *             overhead_s: the job's fixed cost beyond training: start-up, checkpoint writing, polling)
 *   round:    max over sites of the above, then agg_s     (agg_s: all inputs' bytes / merge rate)
 *
 * Every function returns 0, or -1 with a one-line reason in err (flas/error.h). */
#ifndef FLAS_PLAN_H
#define FLAS_PLAN_H

#include <stdio.h>

#include "flas/model.h"
#include "flas/names.h"
#include "flas/update.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_PLAN_MAX_SITES 64
#define FLAS_PLAN_N_TP 2              /* memory is planned for tp = 4 and tp = 8 */
extern const int flas_plan_tp_sizes[FLAS_PLAN_N_TP];

/* The aggregator's merge rate when --agg-gbps is not given, in GB (1e9 bytes) of float32 input read per
 * second: flas-aggregate's whole run (hashing, validation, streaming merge, NaN checks, atomic commit)
 * measured 1.02 GB/s of tensor bytes read + written merging 3 local checkpoints of 0.537 GB into one
 * (docs/performance.md, "Aggregation", "End to end, HDF5 -> HDF5": 2.15 GB per run), i.e.
 * 1.02 x (3 x 0.537) / 2.148 = 0.765 GB/s of input read. A 2-vCPU machine: a real aggregation host
 * with more cores hashes beside the merge and is faster, so this default is pessimistic. */
#define FLAS_PLAN_AGG_GBPS_DEFAULT 0.765
/* Fixed cost added to every transfer, in seconds: an SSH connection of its own (key exchange,
 * host-key check), the remote sha256 and fsync before the rename, the manifest's round trips. */
#define FLAS_PLAN_LATENCY_S_DEFAULT 2.0

/* The exchange formats are those of update files (flas/update.h): their byte counts come from
 * flas_update_bytes and their int8 block bounds from FLAS_UPDATE_BLOCK_*, so a plan counts what
 * flas_ckpt_put_update writes. */
typedef enum flas_plan_compression {
    FLAS_PLAN_FP32 = 0, /* 4 bytes per value: a whole checkpoint (FLAS_UPDATE_FULL) */
    FLAS_PLAN_BF16,     /* 2 bytes per value (FLAS_UPDATE_BF16) */
    FLAS_PLAN_INT8      /* 1 byte per value + one float32 scale per block of `block` values (FLAS_UPDATE_INT8) */
} flas_plan_compression;

/* One site, from "NAME:key=value,key=value,..." (flas_plan_parse_site; docs/man/flas-coordinator.1). */
typedef struct flas_plan_site {
    char name[FLAS_NAME_MAX];
    int gpus;            /* gpus=   GPUs per node, 1..1024 */
    int nodes;           /* nodes=  nodes of the job, 1..100000 */
    double tok_s_gpu;    /* tok_s_gpu= training tokens per second per GPU; 0 when derived from: */
    double peak_tflops;  /* peak_tflops= the GPU's dense bf16 peak, TFLOP/s ... */
    double mfu;          /* mfu=    ... and the model FLOPs utilisation assumed, in (0, 1] */
    double gbps;         /* gbps=   the site's link to the aggregation host, Gb/s (1e9 bits) */
    double queue_s;      /* queue_s= expected wait of the job in the site's queue, s (0 when not given) */
} flas_plan_site;

typedef struct flas_plan_opts {
    flas_config cfg;                /* the model */
    char model[64];                 /* how it was given: "7b", "explicit", "file.h5", ... */
    int n_sites;
    flas_plan_site sites[FLAS_PLAN_MAX_SITES];
    flas_plan_compression compression;
    int block;                      /* int8 block, FLAS_UPDATE_BLOCK_MIN..MAX */
    long long steps;                /* optimizer steps per round per site (with batch_tokens) ... */
    long long batch_tokens;         /* ... tokens per step per site; both 0 when round_hours is used */
    double round_hours;             /* training time per round (0 when steps are used) */
    int rounds;
    double agg_gbps;                /* merge rate, GB of float32 input read per second */
    double latency_s;               /* added to every transfer */
    double overhead_s;              /* added to every site's job: start-up, checkpoint writing, polling */
    double ssh_gbps;                /* cap of one SSH stream, Gb/s (0: no cap, the link's rate) */
    int micro_batch;                /* sequences per GPU per micro-step, for the activation estimate */
} flas_plan_opts;

/* Memory per GPU of one site at one tensor-parallel size, bytes (1 GB = 1e9 bytes when printed).
 * bf16 weights and gradients of the rank's shard, float32 master weights + AdamW m and v sharded by
 * ZeRO-1 over the dp data-parallel ranks, and activations (see flas_plan_memory). */
typedef struct flas_plan_mem {
    int tp, dp;
    int ok;                         /* 0: this tp does not apply (reason in why) */
    char why[256];
    double params_per_gpu;          /* floats in one tensor-parallel rank's shard (replicated tensors included) */
    double weights, grads;          /* 2 bytes each per parameter */
    double optimizer;               /* 12 bytes per parameter / dp */
    double act_off, act_on;         /* activations without and with full activation recomputation */
    double total_off, total_on;
} flas_plan_mem;

typedef struct flas_plan_site_result {
    double tok_s;                   /* the whole job: tok_s_gpu x gpus x nodes */
    double tok_s_gpu;               /* given, or derived from peak_tflops x mfu */
    double tokens;                  /* trained per round */
    double bytes_down, bytes_up;    /* per round */
    double down_s, up_s, train_s, queue_s;
    double path_s;                  /* queue + down + train + up */
    flas_plan_mem mem[FLAS_PLAN_N_TP];
} flas_plan_site_result;

typedef struct flas_plan_result {
    double n_params;                /* whole model, from flas_param_table_init */
    double flops_per_token;         /* flas_model_flops_per_token at seq_len */
    double bytes_model;             /* one model's worth in the exchange format (= bytes per site and direction) */
    double bytes_fp32;              /* the same in float32, for the compression ratio */
    int n_sites;
    flas_plan_site_result site[FLAS_PLAN_MAX_SITES];
    int critical_site;              /* index of the site whose path is longest */
    double agg_s;                   /* n_sites x bytes_model / merge rate */
    double round_s;                 /* max path + agg_s */
    const char *dominant;           /* the largest term of the round: "queue", "transfer", "training", "aggregation" */
    double comm_fraction;           /* (down + up of the critical site + agg) / round_s */
    /* all rounds */
    double total_s, total_bytes, total_tokens;
} flas_plan_result;

/* LLaMA-2 shapes: "7b", "13b", "70b" (Meta's, seq_len 4096), "tiny" (the coordinator test bed's model,
 * tests/coordinator/coord-tests.sh: dim 64, 2 layers, 4 heads, 2 kv heads, vocab 1024, seq 64, FFN by
 * flas-train's default rule). */
int flas_plan_model(const char *name, flas_config *out, char *err, size_t errlen);

/* Parses "NAME:key=value,...": NAME by flas_name_valid; keys gpus, nodes, gbps (required), tok_s_gpu or
 * both peak_tflops and mfu (exactly one way), queue_s (optional). Values are plain decimals (digits,
 * at most one '.'): no sign, exponent, inf or nan. Unknown, repeated or empty keys are refused. */
int flas_plan_parse_site(const char *spec, flas_plan_site *out, char *err, size_t errlen);

/* "fp32", "bf16", "int8" -> enum; -1 for anything else. And back. */
int flas_plan_compression_parse(const char *s);
const char *flas_plan_compression_name(flas_plan_compression c);

/* Bytes of one model in the exchange format: flas_update_bytes of every tensor of the model's table
 * (for int8 a block never crosses tensors: each tensor's last block may be short). */
int flas_plan_exchange_bytes(const flas_config *c, flas_plan_compression comp, int block, double *bytes,
                             char *err, size_t errlen);

/* Memory per GPU at tensor parallel tp with ZeRO-1 over dp ranks and micro_batch sequences of seq_len.
 * Activations (bf16), per layer and sequence of s tokens, b = micro_batch, t = tp, h = dim,
 * h_kv = kv_heads x head_dim, F = hidden_dim, a = heads -- Korthikanti et al. 2022 ("Reducing
 * Activation Recomputation in Large Transformer Models", sec. 4.1, tensor parallel without sequence
 * parallel) re-counted for LLaMA's block (no dropout, RMSNorm, GQA, SwiGLU):
 *     8sbh                                  (2 RMSNorm inputs, the q|k|v and FFN inputs: replicated)
 *   + [2sb(2h + 2h_kv) + 6sbF + 2as^2b] / t (q, k, v, the attention output; the softmax; w1, w3, gate)
 * recompute off: L layers of it; on (full recomputation): 2sbh per layer (the block inputs) plus one
 * layer's working set. Both add the float32 logits of the loss, 4sbV (replicated: FLaS does not split
 * the vocabulary). -1 when the shape cannot be split over tp (the model's own rule). */
int flas_plan_memory(const flas_config *c, int tp, int dp, int micro_batch, flas_plan_mem *out, char *err,
                     size_t errlen);

/* Checks the options (at least one site, unique site names, steps x batch_tokens or round_hours,
 * rounds >= 1, ...) and computes the plan. */
int flas_plan_compute(const flas_plan_opts *o, flas_plan_result *r, char *err, size_t errlen);

/* The plan as a readable table, or (tsv) as tab-separated lines "section key value..." for scripts:
 * docs/man/flas-coordinator.1 lists the columns. */
void flas_plan_print(const flas_plan_opts *o, const flas_plan_result *r, int tsv, FILE *f);

/* The whole command: argv[0] is "plan". Prints the plan on out, errors on errf as
 * "flas-coordinator plan: error: ...". Returns the exit status: 0, or 2 for bad input. */
int flas_plan_main(int argc, char **argv, FILE *out, FILE *errf);

#ifdef __cplusplus
}
#endif
#endif
