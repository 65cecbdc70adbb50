/* `flas-coordinator plan` (include/flas/plan.h): parameter counts of the real LLaMA-2 shapes, bytes per
 * exchange format, the round's arithmetic and the memory per GPU on cases computed by hand, every bad
 * site description refused with its reason, and the command line (in process and, when
 * FLAS_COORDINATOR names the built binary, through its exit status and --tsv output). */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "flas/checkpoint.h"
#include "flas/plan.h"

#define NEAR(x, want, rel) ck_assert_msg(fabs((x) - (want)) <= (rel) * fabs(want), "%s = %.9g, want %.9g", #x, (double)(x), (double)(want))
#define EXACT(x, want) ck_assert_msg((x) == (want), "%s = %.17g, want %.17g", #x, (double)(x), (double)(want))

/* A small shape every number of which is worked out by hand below: head_dim 8, q 64, kv 32 wide. */
static flas_config hand_shape(void)
{
    return (flas_config){64, 2, 8, 4, 192, 256, 32, 1e-5f, 10000.0f, 0};
}

START_TEST(llama2_parameter_counts)
{
    /* Meta's published sizes: 6.74e9 (7B), 13.02e9 (13B), 68.98e9 (70B, GQA with 8 kv heads). */
    static const struct { const char *name; double want; } m[] = {{"7b", 6.74e9}, {"13b", 13.02e9}, {"70b", 68.98e9}};
    char err[256];
    for (size_t i = 0; i < 3; i++) {
        flas_config c;
        ck_assert_msg(flas_plan_model(m[i].name, &c, err, sizeof err) == 0, "%s", err);
        flas_param_table t;
        ck_assert_msg(flas_param_table_init(&t, &c, 0, 1, err, sizeof err) == 0, "%s", err);
        NEAR((double)t.n_params_full, m[i].want, 1e-3);
        flas_param_table_free(&t);
    }
    flas_config c;
    ck_assert_int_eq(flas_plan_model("70b", &c, err, sizeof err), 0);
    ck_assert_int_eq(c.n_kv_heads, 8);
    ck_assert_int_eq(c.hidden_dim, 28672);
    /* tiny is the coordinator test bed's model: FFN 192 by flas-train's rule. */
    ck_assert_int_eq(flas_plan_model("tiny", &c, err, sizeof err), 0);
    ck_assert_int_eq(c.dim, 64);
    ck_assert_int_eq(c.hidden_dim, 192);
    ck_assert_int_eq(c.n_kv_heads, 2);
    ck_assert_int_eq(flas_plan_model("7B", &c, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown model '7B'"));
}
END_TEST

START_TEST(bytes_per_exchange_format)
{
    char err[256];
    flas_config c = hand_shape();
    double fp32, bf16, int8, int8_64;
    /* 131392 parameters: per block 64+4096+2048+2048+4096+64+3x12288 = 49280, x2, + 2x16384 + 64. */
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_FP32, 128, &fp32, err, sizeof err), 0);
    EXACT(fp32, 4.0 * 131392);
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_BF16, 128, &bf16, err, sizeof err), 0);
    EXACT(bf16, 2.0 * 131392);
    /* Blocks per tensor: embeddings 128, per layer 1+32+16+16+32+1+3x96 = 386, norm 1, output 128:
     * 1029 scales of 4 bytes. A 64-element norm is one (short) block of its own. */
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_INT8, 128, &int8, err, sizeof err), 0);
    EXACT(int8, 131392.0 + 4 * 1029);
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_INT8, 64, &int8_64, err, sizeof err), 0);
    EXACT(int8_64, 131392.0 + 4 * (256 + 2 * (1 + 64 + 32 + 32 + 64 + 1 + 3 * 192) + 1 + 256));
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_INT8, 32, &int8, err, sizeof err), -1);
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_INT8, 257, &int8, err, sizeof err), -1);

    /* LLaMA-2 7B: int8 at least 3.5x smaller than float32 (3.88x at block 128), bf16 exactly 2x. */
    ck_assert_int_eq(flas_plan_model("7b", &c, err, sizeof err), 0);
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_FP32, 128, &fp32, err, sizeof err), 0);
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_BF16, 128, &bf16, err, sizeof err), 0);
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_INT8, 128, &int8, err, sizeof err), 0);
    NEAR(fp32, 4 * 6.738e9, 1e-3);
    EXACT(fp32 / bf16, 2.0);
    ck_assert_msg(fp32 / int8 >= 3.5, "int8 ratio %.3f", fp32 / int8);
    NEAR(fp32 / int8, 4.0 / (1.0 + 4.0 / 128), 1e-4);
    ck_assert_int_eq(flas_plan_exchange_bytes(&c, FLAS_PLAN_INT8, 256, &int8_64, err, sizeof err), 0);
    ck_assert_msg(int8_64 < int8, "a larger block needs fewer scales");

    ck_assert_int_eq(flas_plan_compression_parse("int8"), FLAS_PLAN_INT8);
    ck_assert_int_eq(flas_plan_compression_parse("fp16"), -1);
    ck_assert_str_eq(flas_plan_compression_name(FLAS_PLAN_BF16), "bf16");
}
END_TEST

static void hand_opts(flas_plan_opts *o)
{
    char err[256];
    memset(o, 0, sizeof *o);
    o->cfg = hand_shape();
    snprintf(o->model, sizeof o->model, "hand");
    ck_assert_msg(flas_plan_parse_site("a:gpus=2,nodes=1,tok_s_gpu=100,gbps=0.001,queue_s=10", &o->sites[0], err, sizeof err) == 0, "%s", err);
    ck_assert_msg(flas_plan_parse_site("b:gpus=1,nodes=2,tok_s_gpu=50,gbps=0.002,queue_s=90", &o->sites[1], err, sizeof err) == 0, "%s", err);
    o->n_sites = 2;
    o->compression = FLAS_PLAN_FP32;
    o->block = 128;
    o->steps = 10;
    o->batch_tokens = 1000;
    o->rounds = 3;
    o->agg_gbps = 0.001;
    o->latency_s = 1;
    o->micro_batch = 1;
}

START_TEST(round_arithmetic_by_hand)
{
    static flas_plan_opts o;
    static flas_plan_result r;
    char err[256];
    hand_opts(&o);
    ck_assert_msg(flas_plan_compute(&o, &r, err, sizeof err) == 0, "%s", err);
    /* one model: 525568 bytes = 4204544 bits. a: 1 Mb/s, b: 2 Mb/s; +1 s latency each way. */
    EXACT(r.bytes_model, 525568.0);
    EXACT(r.n_params, 131392.0);
    const flas_plan_site_result *a = &r.site[0], *b = &r.site[1];
    EXACT(a->tokens, 10000.0);
    EXACT(a->tok_s, 200.0);
    NEAR(a->train_s, 50.0, 1e-12);
    NEAR(a->down_s, 4.204544 + 1, 1e-12);
    NEAR(a->up_s, 4.204544 + 1, 1e-12);
    NEAR(a->path_s, 10 + 50 + 2 * 5.204544, 1e-12);
    EXACT(b->tok_s, 100.0);
    NEAR(b->train_s, 100.0, 1e-12);
    NEAR(b->down_s, 2.102272 + 1, 1e-12);
    NEAR(b->path_s, 90 + 100 + 2 * 3.102272, 1e-12);
    ck_assert_int_eq(r.critical_site, 1);
    /* aggregation: 2 inputs x 525568 bytes at 1 MB/s. */
    NEAR(r.agg_s, 1.051136, 1e-12);
    NEAR(r.round_s, 196.204544 + 1.051136, 1e-12);
    ck_assert_str_eq(r.dominant, "training");
    NEAR(r.comm_fraction, (6.204544 + 1.051136) / 197.25568, 1e-12);
    NEAR(r.total_s, 3 * 197.25568, 1e-12);
    EXACT(r.total_bytes, 3.0 * 4 * 525568);
    EXACT(r.total_tokens, 60000.0);

    /* int8 moves fewer bytes and the merge reads fewer: both scale by the bytes. */
    o.compression = FLAS_PLAN_INT8;
    ck_assert_int_eq(flas_plan_compute(&o, &r, err, sizeof err), 0);
    EXACT(r.bytes_model, 135508.0);
    NEAR(r.agg_s, 2 * 135508 / 1e6, 1e-12);
    NEAR(r.site[0].down_s, 135508 * 8 / 1e6 + 1, 1e-12);

    /* One SSH stream capped at 1 Mb/s: b's 2 Mb/s link no longer helps. */
    o.compression = FLAS_PLAN_FP32;
    o.ssh_gbps = 0.001;
    ck_assert_int_eq(flas_plan_compute(&o, &r, err, sizeof err), 0);
    NEAR(r.site[1].down_s, 4.204544 + 1, 1e-12);
    NEAR(r.site[0].down_s, 4.204544 + 1, 1e-12);
    o.ssh_gbps = 0;

    /* Training for a time instead of steps: tokens follow from the rate. */
    o.steps = o.batch_tokens = 0;
    o.round_hours = 0.5;
    ck_assert_int_eq(flas_plan_compute(&o, &r, err, sizeof err), 0);
    EXACT(r.site[0].train_s, 1800.0);
    EXACT(r.site[0].tokens, 360000.0);
    EXACT(r.site[1].tokens, 180000.0);

    /* A long queue dominates; a derived throughput: 312 TFLOP/s x 0.4 / FLOPs per token. */
    o.sites[0].queue_s = 5000;
    ck_assert_int_eq(flas_plan_compute(&o, &r, err, sizeof err), 0);
    ck_assert_int_eq(r.critical_site, 0);
    ck_assert_str_eq(r.dominant, "queue");
    ck_assert_int_eq(flas_plan_parse_site("h:gpus=4,nodes=1,peak_tflops=312,mfu=0.4,gbps=1", &o.sites[1], err, sizeof err), 0);
    ck_assert_int_eq(flas_plan_compute(&o, &r, err, sizeof err), 0);
    NEAR(r.site[1].tok_s_gpu, 312e12 * 0.4 / r.flops_per_token, 1e-12);
}
END_TEST

static void plan_refused(flas_plan_opts *o, const char *needle)
{
    static flas_plan_result r;
    char err[256] = "";
    ck_assert_int_eq(flas_plan_compute(o, &r, err, sizeof err), -1);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

START_TEST(bad_plans_refused)
{
    static flas_plan_opts o;
    hand_opts(&o);
    o.round_hours = 1;
    plan_refused(&o, "not both");
    hand_opts(&o);
    o.batch_tokens = 0;
    plan_refused(&o, "--steps and --batch-tokens go together");
    hand_opts(&o);
    o.steps = o.batch_tokens = 0;
    plan_refused(&o, "training is missing");
    hand_opts(&o);
    o.sites[1] = o.sites[0];
    plan_refused(&o, "site a is described twice");
    hand_opts(&o);
    o.n_sites = 0;
    plan_refused(&o, "give 1..64 sites");
    hand_opts(&o);
    o.rounds = 0;
    plan_refused(&o, "--rounds");
    hand_opts(&o);
    o.cfg.n_kv_heads = 3;
    plan_refused(&o, "model: n_heads 8 is not divisible by n_kv_heads 3");
    hand_opts(&o);
    o.sites[1].tok_s_gpu = 0;
    plan_refused(&o, "site b: gpus, nodes, gbps and a throughput must be positive");
    hand_opts(&o);
    o.compression = FLAS_PLAN_INT8;
    o.block = 512;
    plan_refused(&o, "outside 64..256");
}
END_TEST

START_TEST(zero1_memory_by_hand)
{
    char err[256];
    flas_config c = hand_shape();
    flas_plan_mem m;
    ck_assert_msg(flas_plan_memory(&c, 4, 2, 1, &m, err, sizeof err) == 0, "%s", err);
    /* A tp=4 rank: per block 64 + 16x64 + 8x64 + 8x64 + 64x16 + 64 + 3 x 48x64 = 12416, x2, plus the
     * replicated embeddings, head and norm 16384 + 16384 + 64: 57664 floats. */
    EXACT(m.params_per_gpu, 57664.0);
    EXACT(m.weights, 2.0 * 57664);
    EXACT(m.grads, 2.0 * 57664);
    EXACT(m.optimizer, 12.0 * 57664 / 2);
    /* A layer at s=32, b=1, h=64, h_kv=32, F=192, a=8, t=4: 8sh = 16384 replicated, plus
     * (2s(2h+2h_kv) + 6sF + 2as^2)/4 = (12288 + 36864 + 16384)/4 = 16384: 32768 bytes. Logits 4sV = 32768. */
    EXACT(m.act_off, 2 * 32768.0 + 32768);
    /* recompute on: the block inputs 2sh per layer, one layer's working set, the logits. */
    EXACT(m.act_on, 2 * (2.0 * 32 * 64) + 32768 + 32768);
    EXACT(m.total_off, 4.0 * 57664 + 6.0 * 57664 + 98304);
    EXACT(m.total_on, 10.0 * 57664 + 73728);
    /* ZeRO-1 shards only the optimizer: at dp 1 it is whole, weights and grads do not change. */
    flas_plan_mem m1;
    ck_assert_int_eq(flas_plan_memory(&c, 4, 1, 1, &m1, err, sizeof err), 0);
    EXACT(m1.optimizer, 12.0 * 57664);
    EXACT(m1.weights, m.weights);
    /* Two sequences per micro-step double the activations. */
    ck_assert_int_eq(flas_plan_memory(&c, 4, 2, 2, &m1, err, sizeof err), 0);
    EXACT(m1.act_off, 2 * m.act_off);
    /* tp 8 cannot split 4 kv heads: the model's own rule says so. */
    ck_assert_int_eq(flas_plan_memory(&c, 8, 1, 1, &m1, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "n_kv_heads 4 is not divisible by tp 8"));

    /* In a plan: 2 GPUs per site are no multiple of 4, and tp spanning nodes is noted. */
    static flas_plan_opts o;
    static flas_plan_result r;
    hand_opts(&o);
    ck_assert_int_eq(flas_plan_parse_site("c:gpus=2,nodes=4,tok_s_gpu=1,gbps=1", &o.sites[1], err, sizeof err), 0);
    ck_assert_int_eq(flas_plan_compute(&o, &r, err, sizeof err), 0);
    ck_assert_int_eq(r.site[0].mem[0].ok, 0);
    ck_assert_ptr_nonnull(strstr(r.site[0].mem[0].why, "2 GPUs are not a multiple of tp 4"));
    ck_assert_int_eq(r.site[1].mem[0].ok, 1);
    ck_assert_int_eq(r.site[1].mem[0].dp, 2);
    ck_assert_ptr_nonnull(strstr(r.site[1].mem[0].why, "tp 4 spans nodes of 2 GPUs"));
    ck_assert_int_eq(r.site[1].mem[1].ok, 0); /* tp 8: the kv heads */
}
END_TEST

START_TEST(llama2_7b_memory_plausible)
{
    /* 7B at tp 4 on one node of 4 GPUs: a rank holds a quarter of the blocks plus the replicated
     * 2 x 131M embeddings/head; 16 bytes per parameter at dp 1 (~28 GiB) plus activations. */
    char err[256];
    flas_config c;
    flas_plan_mem m;
    ck_assert_int_eq(flas_plan_model("7b", &c, err, sizeof err), 0);
    ck_assert_int_eq(flas_plan_memory(&c, 4, 1, 1, &m, err, sizeof err), 0);
    NEAR(m.params_per_gpu, (6738415616.0 - 2 * 131072000.0 - 4096 - 32 * 8192) / 4 + 2 * 131072000.0 + 4096 + 32 * 8192, 1e-12);
    ck_assert(m.act_on < m.act_off / 4);
    ck_assert(m.total_on < 64.0 * 1073741824);
}
END_TEST

static void site_refused(const char *spec, const char *needle)
{
    flas_plan_site s;
    char err[256] = "";
    ck_assert_msg(flas_plan_parse_site(spec, &s, err, sizeof err) == -1, "'%s' was accepted", spec);
    ck_assert_msg(strstr(err, needle) != NULL, "'%s': message '%s' lacks '%s'", spec, err, needle);
}

START_TEST(site_specs)
{
    flas_plan_site s;
    char err[256];
    ck_assert_msg(flas_plan_parse_site("leonardo:gpus=4,nodes=2,tok_s_gpu=3000,gbps=10,queue_s=600", &s, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(s.name, "leonardo");
    ck_assert_int_eq(s.gpus, 4);
    ck_assert_int_eq(s.nodes, 2);
    EXACT(s.tok_s_gpu, 3000.0);
    EXACT(s.gbps, 10.0);
    EXACT(s.queue_s, 600.0);
    ck_assert_int_eq(flas_plan_parse_site("k-2:gbps=0.5,nodes=1,gpus=8,peak_tflops=989,mfu=0.40", &s, err, sizeof err), 0);
    EXACT(s.queue_s, 0.0);
    EXACT(s.mfu, 0.4);

    site_refused("", "empty site description");
    site_refused("leonardo", "no ':' after the name");
    site_refused(":gpus=4", "the name must be 1..63");
    site_refused("-x:gpus=4,nodes=1,tok_s_gpu=1,gbps=1", "site name '-x' is invalid");
    site_refused("a b:gpus=4,nodes=1,tok_s_gpu=1,gbps=1", "site name 'a b' is invalid");
    site_refused("a:", "no values after ':'");
    site_refused("a:gpus=4,,nodes=1", "empty item");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=1,gbps=1,", "empty item");
    site_refused("a:gpus", "'gpus' is not key=value");
    site_refused("a:gpus=", "gpus has no value");
    site_refused("a:colour=red", "unknown key 'colour'");
    site_refused("a:GPUS=4", "unknown key 'GPUS'");
    site_refused("a:gpus=4,gpus=8", "gpus given twice");
    site_refused("a:gpus=0,nodes=1,tok_s_gpu=1,gbps=1", "gpus=0: outside 1..1024");
    site_refused("a:gpus=4.5", "gpus=4.5: not a whole number");
    site_refused("a:gpus=-4", "gpus=-4: not a whole number");
    site_refused("a:gpus= 4", "not a whole number");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=1e3,gbps=1", "tok_s_gpu=1e3: not a plain decimal");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=inf,gbps=1", "tok_s_gpu=inf: not a plain decimal");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=nan,gbps=1", "not a plain decimal");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=0x10,gbps=1", "not a plain decimal");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=.5,gbps=1", "not a plain decimal");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=5.,gbps=1", "not a plain decimal");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=1.2.3,gbps=1", "not a plain decimal");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=0,gbps=1", "tok_s_gpu=0: outside (0, 1e+09]");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=1,gbps=0", "gbps=0: outside (0, 100000]");
    site_refused("a:gpus=4,nodes=1,peak_tflops=312,mfu=1.5,gbps=1", "mfu=1.5: outside (0, 1]");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=1,gbps=1,queue_s=-1", "queue_s=-1: not a plain decimal");
    site_refused("a:nodes=1,tok_s_gpu=1,gbps=1", "gpus= is missing");
    site_refused("a:gpus=4,tok_s_gpu=1,gbps=1", "nodes= is missing");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=1", "gbps= is missing");
    site_refused("a:gpus=4,nodes=1,gbps=1", "the throughput is missing");
    site_refused("a:gpus=4,nodes=1,peak_tflops=312,gbps=1", "the throughput is missing");
    site_refused("a:gpus=4,nodes=1,tok_s_gpu=1,mfu=0.4,gbps=1", "not both");
    site_refused("a:gpus=4;nodes=1", "gpus=4;nodes=1: not a whole number");
}
END_TEST

/* Runs flas_plan_main on a NULL-terminated argument list; returns its status, output in out/err. */
static int plan_cli(char *out, size_t outlen, char *errbuf, size_t errlen, const char *first, ...)
{
    const char *argv[64];
    int argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 63; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    FILE *o = tmpfile(), *e = tmpfile();
    ck_assert(o && e);
    int rc = flas_plan_main(argc, (char **)argv, o, e);
    rewind(o);
    rewind(e);
    size_t n = fread(out, 1, outlen - 1, o);
    out[n] = 0;
    n = fread(errbuf, 1, errlen - 1, e);
    errbuf[n] = 0;
    fclose(o);
    fclose(e);
    return rc;
}

#define SITE_A "--site", "a:gpus=4,nodes=1,tok_s_gpu=3000,gbps=10,queue_s=600"

static void cli_refused(const char *needle, const char *first, ...);

START_TEST(command_line_in_process)
{
    static char out[16384], err[4096];
    ck_assert_int_eq(plan_cli(out, sizeof out, err, sizeof err, "plan", "--model", "70b", SITE_A, "--site",
                              "b:gpus=8,nodes=4,peak_tflops=989,mfu=0.4,gbps=100", "--compression", "int8", "--block", "256",
                              "--round-hours", "2", "--rounds", "3", "--tsv", NULL),
                     0);
    ck_assert_msg(strstr(out, "model\t70b\t68976648192\t") != NULL, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "exchange\tint8\t256\t"));
    ck_assert_ptr_nonnull(strstr(out, "\nsite\ta\t4\t3000.000\t"));
    ck_assert_ptr_nonnull(strstr(out, "\nmemory\tb\t8\t4\t"));
    ck_assert_ptr_nonnull(strstr(out, "\ntotal\t3\t"));
    ck_assert_str_eq(err, "");
    /* The readable table names the critical site and the memory columns. */
    ck_assert_int_eq(plan_cli(out, sizeof out, err, sizeof err, "plan", "--model=7b", SITE_A, "--steps", "100",
                              "--batch-tokens=1048576", NULL),
                     0);
    ck_assert_ptr_nonnull(strstr(out, "<- critical"));
    ck_assert_ptr_nonnull(strstr(out, "total off"));
    /* The explicit shape (kv heads and FFN by flas-train's defaults) and --seq-len over a model. */
    ck_assert_int_eq(plan_cli(out, sizeof out, err, sizeof err, "plan", "--dim", "64", "--layers", "2", "--heads", "8",
                              "--kv-heads", "4", "--ffn-dim", "192", "--vocab", "256", "--seq-len", "32", SITE_A,
                              "--round-hours", "1", "--tsv", NULL),
                     0);
    ck_assert_msg(strstr(out, "model\texplicit\t131392\t") != NULL, "%s", out);
    ck_assert_int_eq(plan_cli(out, sizeof out, err, sizeof err, "plan", "--model", "7b", "--seq-len", "2048", SITE_A,
                              "--round-hours", "1", "--tsv", NULL),
                     0);
    ck_assert_ptr_nonnull(strstr(out, "\t32000\t2048\n"));
    ck_assert_int_eq(plan_cli(out, sizeof out, err, sizeof err, "plan", "--help", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: flas-coordinator plan"));

    cli_refused("no model", "plan", SITE_A, "--round-hours", "1", NULL);
    cli_refused("unknown model 'llama'", "plan", "--model", "llama", SITE_A, "--round-hours", "1", NULL);
    cli_refused("not both", "plan", "--model", "7b", "--dim", "64", SITE_A, "--round-hours", "1", NULL);
    cli_refused("one of --model and --config", "plan", "--model", "7b", "--model", "70b", SITE_A, "--round-hours", "1", NULL);
    cli_refused("needs --vocab", "plan", "--dim", "64", "--layers", "2", "--heads", "8", "--seq-len", "32", SITE_A,
                "--round-hours", "1", NULL);
    cli_refused("--dim given twice", "plan", "--dim", "64", "--dim", "64", NULL);
    cli_refused("--site: site a: gpus= is missing", "plan", "--model", "7b", "--site", "a:nodes=1,tok_s_gpu=1,gbps=1",
                "--round-hours", "1", NULL);
    cli_refused("give 1..64 sites", "plan", "--model", "7b", "--round-hours", "1", NULL);
    cli_refused("site a is described twice", "plan", "--model", "7b", SITE_A, SITE_A, "--round-hours", "1", NULL);
    cli_refused("--compression fp16: fp32, bf16 or int8", "plan", "--model", "7b", "--compression", "fp16", NULL);
    cli_refused("--block=32: outside 64..256", "plan", "--model", "7b", "--compression", "int8", "--block=32", NULL);
    cli_refused("--block applies to --compression int8 only", "plan", "--model", "7b", "--block", "64", SITE_A,
                "--round-hours", "1", NULL);
    cli_refused("--round-hours=0: outside (0, 10000]", "plan", "--round-hours=0", NULL);
    cli_refused("--agg-gbps=-1: not a plain decimal", "plan", "--agg-gbps=-1", NULL);
    cli_refused("--steps needs a value", "plan", "--steps", NULL);
    cli_refused("--steps and --batch-tokens go together", "plan", "--model", "7b", SITE_A, "--steps", "10", NULL);
    cli_refused("unknown option '--colour'", "plan", "--colour", "red", NULL);
    cli_refused("unexpected argument 'extra'", "plan", "extra", NULL);
    cli_refused("--tsv takes no value", "plan", "--tsv=1", NULL);
    cli_refused("--config: ", "plan", "--config", "/nonexistent/model.h5", SITE_A, "--round-hours", "1", NULL);
}
END_TEST

static void cli_refused(const char *needle, const char *first, ...)
{
    const char *argv[64];
    int argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 63; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    FILE *o = tmpfile(), *e = tmpfile();
    ck_assert(o && e);
    int rc = flas_plan_main(argc, (char **)argv, o, e);
    long outlen = ftell(o);
    char msg[1024] = "";
    rewind(e);
    size_t n = fread(msg, 1, sizeof msg - 1, e);
    msg[n] = 0;
    fclose(o);
    fclose(e);
    ck_assert_msg(rc == 2, "%s: exit %d", needle, rc);
    ck_assert_msg(outlen == 0, "%s: a refused plan printed something", needle);
    ck_assert_msg(!strncmp(msg, "flas-coordinator plan: error: ", 30), "message '%s'", msg);
    ck_assert_msg(strstr(msg, needle) != NULL, "message '%s' lacks '%s'", msg, needle);
    ck_assert_msg(strchr(msg, '\n') == msg + strlen(msg) - 1, "message '%s' is not one line", msg);
}

START_TEST(config_from_a_checkpoint)
{
    /* A checkpoint of the hand shape: plan --config reads its shape through flas_ckpt_open. */
    char dir[] = "/tmp/flas-plan-XXXXXX", path[128], err[512];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.h5", dir);
    flas_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.cfg = hand_shape();
    meta.role = FLAS_CKPT_GLOBAL;
    flas_ckpt_writer *w = flas_ckpt_create(path, &meta, 0, MPI_COMM_NULL, err, sizeof err);
    ck_assert_msg(w != NULL, "%s", err);
    const flas_param_table *t = flas_ckpt_writer_tensors(w);
    float *zeros = calloc(t->n_params, sizeof *zeros);
    ck_assert_ptr_nonnull(zeros);
    ck_assert_msg(flas_ckpt_put_flat(w, FLAS_CKPT_PARAMS, t, 0, t->n_params, zeros, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(flas_ckpt_commit(w, err, sizeof err) == 0, "%s", err);
    free(zeros);
    static char out[16384], e[4096];
    int rc = plan_cli(out, sizeof out, e, sizeof e, "plan", "--config", path, SITE_A, "--round-hours", "1", "--tsv", NULL);
    ck_assert_msg(rc == 0, "%s", e);
    ck_assert_msg(strstr(out, "model\tm.h5\t131392\t") != NULL, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "\t64\t2\t8\t4\t192\t256\t32\n"));
    unlink(path);
    rmdir(dir);
}
END_TEST

/* The built binary, when the build tells where it is: exit status 2 for bad arguments, and a good
 * --tsv plan whose records a script could read. */
static int run_binary(const char *cmd, char *out, size_t outlen)
{
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(the_binary)
{
    const char *bin = getenv("FLAS_COORDINATOR");
    if (!bin || !*bin) {
        fprintf(stderr, "the_binary: FLAS_COORDINATOR not set, binary checks skipped\n");
        return;
    }
    ck_assert_msg(access(bin, X_OK) == 0, "%s is not built (cmake --build ... --target flas-coordinator)", bin);
    static char cmd[2048], out[16384];
    static const char *const bad_args[] = {
        "plan",
        "plan --model 7b --site a:gpus=4 --round-hours 1",
        "plan --model 7b --site a:gpus=4,nodes=1,tok_s_gpu=3000,gbps=10 --round-hours 1 --compression zip",
        "plan --model 7b --site a:gpus=4,nodes=1,tok_s_gpu=3000,gbps=10",
        "plan --model 7b --site a:gpus=4,nodes=1,tok_s_gpu=3000,gbps=10 --round-hours 1 --rounds 0",
    };
    for (size_t i = 0; i < sizeof bad_args / sizeof bad_args[0]; i++) {
        snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, bad_args[i]);
        int rc = run_binary(cmd, out, sizeof out);
        ck_assert_msg(rc == 2, "%s: exit %d, want 2 (%s)", bad_args[i], rc, out);
        ck_assert_msg(strstr(out, "error: ") || strstr(out, "usage:"), "%s: %s", bad_args[i], out);
    }
    /* 7B, two sites of 4 GPUs at 3000 tok/s/GPU, 1000 steps of 262144 tokens, 10 Gb/s, bf16:
     * train 262.144e6 / 12000 = 21845.33 s; one way 13.477 GB x 8 / 10 Gb/s + 2 s = 12.78 s. */
    snprintf(cmd, sizeof cmd,
             "'%s' plan --model 7b --site a:gpus=4,nodes=1,tok_s_gpu=3000,gbps=10,queue_s=600 "
             "--site b:gpus=4,nodes=1,tok_s_gpu=3000,gbps=10 --compression bf16 --steps 1000 --batch-tokens 262144 "
             "--rounds 2 --tsv | awk -F'\\t' '$1==\"site\"&&$2==\"a\"{printf \"train=%%s down=%%s path=%%s crit=%%s \", $11, $10, $13, $14}"
             " $1==\"round\"{printf \"dom=%%s round=%%s \", $6, $5} $1==\"total\"{printf \"total=%%s\", $3}'",
             bin);
    ck_assert_int_eq(run_binary(cmd, out, sizeof out), 0);
    double train, down, path, round_s, total;
    int crit;
    char dom[32];
    ck_assert_msg(sscanf(out, "train=%lf down=%lf path=%lf crit=%d dom=%31s round=%lf total=%lf", &train, &down, &path,
                         &crit, dom, &round_s, &total) == 7,
                  "unexpected records: %s", out);
    NEAR(train, 262144000.0 / 12000, 1e-6);
    NEAR(down, 6738415616.0 * 2 * 8 / 10e9 + 2, 1e-4);
    NEAR(path, 600 + train + 2 * down, 1e-6);
    ck_assert_int_eq(crit, 1);
    ck_assert_str_eq(dom, "training");
    NEAR(round_s, path + 2 * 6738415616.0 * 2 / 0.765e9, 1e-6);
    NEAR(total, 2 * round_s, 1e-6);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("plan");
    tcase_add_test(tc, llama2_parameter_counts);
    tcase_add_test(tc, bytes_per_exchange_format);
    tcase_add_test(tc, round_arithmetic_by_hand);
    tcase_add_test(tc, bad_plans_refused);
    tcase_add_test(tc, zero1_memory_by_hand);
    tcase_add_test(tc, llama2_7b_memory_plausible);
    tcase_add_test(tc, site_specs);
    tcase_add_test(tc, command_line_in_process);
    tcase_add_test(tc, config_from_a_checkpoint);
    tcase_add_test(tc, the_binary);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
