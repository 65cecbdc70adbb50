/* Unit tests of flas-train's library pieces that need no MPI: flags, the FLAS_* environment and which
 * wins, option checks, the walltime arithmetic, signals, ZeRO-1 slices, and AdamW over slice tables
 * being bit-identical to AdamW over the whole buffer; the --update options and the names of the full
 * checkpoint and residual files. */
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "flas/optim.h"
#include "flas/staging.h"
#include "flas/train.h"

static char err[1024];

static int parse(flas_train_opts *o, const char *line)
{
    char buf[2048], *argv[64];
    int argc = 0;
    snprintf(buf, sizeof buf, "flas-train %s", line);
    for (char *t = strtok(buf, " "); t && argc < 63; t = strtok(NULL, " "))
        argv[argc++] = t;
    argv[argc] = NULL;
    flas_train_opts_init(o);
    return flas_train_parse_args(o, argc, argv, err, sizeof err);
}

static void clear_env(void)
{
    const char *vars[] = {"FLAS_FEDERATION", "FLAS_SITE", "FLAS_ROUND", "FLAS_GLOBAL_CHECKPOINT", "FLAS_GLOBAL_SHA256",
                          "FLAS_OUTPUT_CHECKPOINT", "FLAS_OUTPUT_DIR", "FLAS_JOB_ID", "FLAS_ERROR", "SLURM_JOB_END_TIME",
                          "FLAS_UPDATE", "FLAS_UPDATE_BLOCK", "FLAS_RESIDUAL_DIR", "FLAS_STATE_DIR", "FLAS_INNER_STATE",
                          "FLAS_LR_SCHEDULE", "FLAS_ROUNDS", "FLAS_PROX", "FLAS_STEPS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

START_TEST(flags_parse)
{
    flas_train_opts o;
    ck_assert_int_eq(parse(&o, "--global g.h5 --data d --output o.h5 --steps 100 --tokens 1.5M --batch 8 --seq 128 "
                               "--accum 4 --lr 1e-3 --tp 2 --zero --threads 3 --time-budget 60 --checkpoint-every 10 "
                               "--round 3 --site leonardo --seed 42 --no-shuffle"), 0);
    ck_assert_str_eq(o.global, "g.h5");
    ck_assert_int_eq(o.steps, 100);
    ck_assert_int_eq(o.tokens, 1500000);
    ck_assert_int_eq(o.batch, 8);
    ck_assert_int_eq(o.seq, 128);
    ck_assert_int_eq(o.accum, 4);
    ck_assert(fabsf(o.lr - 1e-3f) < 1e-9f);
    ck_assert_int_eq(o.tp, 2);
    ck_assert_int_eq(o.zero, 1);
    ck_assert_int_eq(o.threads, 3);
    ck_assert_int_eq(o.round, 3);
    ck_assert_str_eq(o.site, "leonardo");
    ck_assert_int_eq(o.seed, 42);
    ck_assert_int_eq(o.shuffle, 0);
    ck_assert_int_eq(o.checkpoint_every, 10);
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
    ck_assert(fabsf(o.min_lr - 1e-4f) < 1e-9f); /* default: lr / 10 */
    ck_assert_int_eq(parse(&o, "--tokens 20k"), 0);
    ck_assert_int_eq(o.tokens, 20000);
}
END_TEST

START_TEST(flags_refused)
{
    flas_train_opts o;
    const struct { const char *line, *word; } bad[] = {
        {"--steps 0", "--steps"},        {"--steps 12x", "--steps"},     {"--lr fast", "--lr"},
        {"--tokens -5", "--tokens"},      {"--tokens 1.5", "--tokens"},   {"--tp 0", "--tp"},
        {"--bogus", "--bogus"},           {"--global", "--global"},       {"--model nosuch", "stories15M"},
        {"--global-sha256 abc", "hex"},   {"--round -1", "--round"},      {"extra", "extra"},
        {"--time-budget 0", "--time-budget"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(parse(&o, bad[i].line) == -1, "accepted: %s", bad[i].line);
        ck_assert_msg(strstr(err, bad[i].word) != NULL, "'%s': message '%s' lacks '%s'", bad[i].line, err, bad[i].word);
    }
}
END_TEST

START_TEST(checks_per_mode)
{
    flas_train_opts o;
    const struct { const char *line, *word; } bad[] = {
        {"--global g --output o --steps 1", "--data"},
        {"--data d --output o --steps 1", "--global"},
        {"--data d --global g --steps 1", "--output"},
        {"--data d --global g --output o", "--steps"},
        {"--data d --global g --output o --steps 1 --lr 1e-4 --min-lr 1e-3", "--min-lr"},
        {"--init --output x.h5", "--model"},
        {"--init --dim 64 --layers 2 --heads 4 --vocab 128 --seq-len 64", "--output"},
        {"--init --dim 64 --layers 2 --heads 3 --vocab 128 --seq-len 64 --output x", "model"},
        {"--eval x.h5", "--valid"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(parse(&o, bad[i].line), 0);
        ck_assert_msg(flas_train_opts_check(&o, err, sizeof err) == -1, "accepted: %s", bad[i].line);
        ck_assert_msg(strstr(err, bad[i].word) != NULL, "'%s': message '%s' lacks '%s'", bad[i].line, err, bad[i].word);
    }
    ck_assert_int_eq(parse(&o, "--resume auto --data d --output o --tokens 1k"), 0);
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
}
END_TEST

START_TEST(model_config)
{
    flas_train_opts o;
    flas_config c;
    ck_assert_int_eq(parse(&o, "--dim 64 --layers 2 --heads 4 --vocab 128 --seq-len 64"), 0);
    ck_assert_int_eq(flas_train_opts_config(&o, &c, err, sizeof err), 0);
    ck_assert_int_eq(c.n_kv_heads, 4);    /* multi-head unless --kv-heads */
    ck_assert_int_eq(c.hidden_dim, 192);  /* 32 * ceil(170.67 / 32) */
    ck_assert(fabsf(c.norm_eps - 1e-5f) < 1e-12f && c.rope_theta == 10000.0f && c.tied_embeddings == 0);
    ck_assert_int_eq(parse(&o, "--model stories15M --vocab 4096 --untied"), 0);
    ck_assert_int_eq(flas_train_opts_config(&o, &c, err, sizeof err), 0);
    ck_assert_int_eq(c.dim, 288);
    ck_assert_int_eq(c.hidden_dim, 768); /* the preset's, not recomputed */
    ck_assert_int_eq(c.vocab_size, 4096);
    ck_assert_int_eq(c.tied_embeddings, 0);
    /* Overlay on a checkpoint's config: only the given fields change. */
    flas_config base;
    flas_config_preset("stories260K", &base);
    ck_assert_int_eq(parse(&o, "--vocab 99"), 0);
    flas_train_opts_overlay(&o, &base, &c);
    ck_assert_int_eq(c.vocab_size, 99);
    ck_assert_int_eq(c.n_kv_heads, base.n_kv_heads);
    ck_assert_int_eq(c.hidden_dim, base.hidden_dim);
}
END_TEST

START_TEST(env_and_flags)
{
    clear_env();
    const char *sha = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    setenv("FLAS_FEDERATION", "flas", 1);
    setenv("FLAS_SITE", "leonardo", 1);
    setenv("FLAS_ROUND", "4", 1);
    setenv("FLAS_GLOBAL_CHECKPOINT", "/stage/flas/global/round-000004.h5", 1);
    setenv("FLAS_GLOBAL_SHA256", sha, 1);
    setenv("FLAS_OUTPUT_CHECKPOINT", "/stage/flas/jobs/17/local.h5", 1);
    setenv("FLAS_OUTPUT_DIR", "/stage/flas/jobs/17", 1);
    setenv("FLAS_JOB_ID", "17", 1);
    flas_train_opts o;
    ck_assert_int_eq(parse(&o, "--data d --steps 5"), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_str_eq(o.global, "/stage/flas/global/round-000004.h5");
    ck_assert_str_eq(o.global_sha256, sha);
    ck_assert_str_eq(o.output, "/stage/flas/jobs/17/local.h5");
    ck_assert_str_eq(o.site, "leonardo");
    ck_assert_str_eq(o.job_id, "17");
    ck_assert_int_eq(o.round, 4);
    ck_assert_str_eq(o.flas_error, "");
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
    /* Flags win over every variable. */
    ck_assert_int_eq(parse(&o, "--data d --steps 5 --global mine.h5 --output out.h5 --site karolina --round 2 "
                               "--global-sha256 ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_str_eq(o.global, "mine.h5");
    ck_assert_str_eq(o.output, "out.h5");
    ck_assert_str_eq(o.site, "karolina");
    ck_assert_int_eq(o.round, 2);
    ck_assert(o.global_sha256[0] == 'f');
    /* FLAS_ERROR is kept whatever the flags say; malformed values are refused by name. */
    setenv("FLAS_ERROR", "federation 'flas' is closed", 1);
    ck_assert_int_eq(parse(&o, "--data d --steps 5"), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_str_eq(o.flas_error, "federation 'flas' is closed");
    setenv("FLAS_ROUND", "x3", 1);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), -1);
    ck_assert(strstr(err, "FLAS_ROUND") != NULL);
    setenv("FLAS_ROUND", "3", 1);
    setenv("FLAS_GLOBAL_SHA256", "XYZ", 1);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), -1);
    ck_assert(strstr(err, "FLAS_GLOBAL_SHA256") != NULL);
    clear_env();
}
END_TEST

START_TEST(walltime)
{
    clear_env();
    ck_assert(flas_train_job_end_from_env() == 0);
    setenv("SLURM_JOB_END_TIME", "1700000000", 1);
    ck_assert(flas_train_job_end_from_env() == 1700000000.0);
    setenv("SLURM_JOB_END_TIME", "soon", 1);
    ck_assert(flas_train_job_end_from_env() == 0);
    clear_env();
    ck_assert(flas_train_deadline(100, 0, 0) == 0);
    ck_assert(flas_train_deadline(100, 500, 0) == 500);
    ck_assert(flas_train_deadline(100, 0, 60) == 160);
    ck_assert(flas_train_deadline(100, 500, 60) == 160);
    ck_assert(flas_train_deadline(100, 130, 60) == 130);
    /* Reserve = 1.5 x checkpoint + validation + margin; stop when a step would eat into it. */
    flas_train_clock c = {.start = 0, .end = 100, .margin = 5, .step_seconds = 2, .ckpt_seconds = 10, .valid_seconds = 3};
    ck_assert(fabs(flas_train_clock_reserve(&c) - 23) < 1e-12);
    ck_assert_int_eq(flas_train_clock_must_stop(&c, 74.9), 0);
    ck_assert_int_eq(flas_train_clock_must_stop(&c, 75.0), 1);
    c.end = 0;
    ck_assert_int_eq(flas_train_clock_must_stop(&c, 1e12), 0); /* no deadline */
}
END_TEST

START_TEST(signals)
{
    flas_train_signals_install();
    flas_train_signal_clear();
    ck_assert_int_eq(flas_train_signal_pending(), 0);
    raise(SIGUSR1); /* would kill the process without the handler */
    ck_assert_int_eq(flas_train_signal_pending(), SIGUSR1);
    flas_train_signal_clear();
    raise(SIGTERM);
    ck_assert_int_eq(flas_train_signal_pending(), SIGTERM);
}
END_TEST

START_TEST(slices)
{
    for (size_t n = 0; n < 300; n += 7)
        for (int parts = 1; parts <= 5; parts++) {
            size_t next = 0;
            for (int p = 0; p < parts; p++) {
                size_t lo, hi;
                flas_train_slice(n, p, parts, &lo, &hi);
                ck_assert_uint_eq(lo, next);
                ck_assert(hi >= lo && (lo % 16 == 0 || lo == n));
                next = hi;
            }
            ck_assert_uint_eq(next, n);
        }
}
END_TEST

/* AdamW over ZeRO-1 slice tables: the same bits as over the whole buffer (decay by tensor rank, per
 * element updates), for slice boundaries inside tensors. */
START_TEST(adamw_on_slices)
{
    flas_config cfg;
    flas_config_preset("stories260K", &cfg);
    cfg.tied_embeddings = 0;
    flas_param_table t;
    ck_assert_int_eq(flas_param_table_init(&t, &cfg, 0, 1, err, sizeof err), 0);
    size_t n = t.n_params;
    float *p_full = malloc(n * sizeof(float)), *p_part = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        p_full[i] = p_part[i] = sinf((float)i * 0.37f) * 0.05f;
        g[i] = cosf((float)i * 1.3f) * 1e-3f;
    }
    flas_adamw full;
    ck_assert_int_eq(flas_adamw_init(&full, &t, 0.9f, 0.95f, 1e-8f, 0.1f), 0);
    const int parts = 3;
    flas_adamw part[3];
    flas_param_table slice[3];
    size_t lo[3], hi[3];
    for (int k = 0; k < parts; k++) {
        flas_train_slice(n, k, parts, &lo[k], &hi[k]);
        ck_assert_int_eq(flas_train_slice_table(&t, lo[k], hi[k], &slice[k]), 0);
        ck_assert_int_eq(flas_adamw_init(&part[k], &slice[k], 0.9f, 0.95f, 1e-8f, 0.1f), 0);
    }
    double sumsq = 0;
    for (int k = 0; k < parts; k++)
        sumsq += flas_grad_sumsq_local(&slice[k], g + lo[k]);
    ck_assert(fabs(sumsq - flas_grad_sumsq_local(&t, g)) <= 1e-12 * sumsq);
    for (int step = 0; step < 3; step++) {
        flas_adamw_step(&full, p_full, g, 1e-3f);
        for (int k = 0; k < parts; k++)
            flas_adamw_step(&part[k], p_part + lo[k], g + lo[k], 1e-3f);
    }
    ck_assert_int_eq(memcmp(p_full, p_part, n * sizeof(float)), 0);
    for (int k = 0; k < parts; k++) {
        ck_assert_int_eq(memcmp(full.m + lo[k], part[k].m, (hi[k] - lo[k]) * sizeof(float)), 0);
        ck_assert_int_eq(memcmp(full.v + lo[k], part[k].v, (hi[k] - lo[k]) * sizeof(float)), 0);
        flas_adamw_free(&part[k]);
        flas_param_table_free(&slice[k]);
    }
    flas_adamw_free(&full);
    flas_param_table_free(&t);
    free(p_full);
    free(p_part);
    free(g);
}
END_TEST

/* --update and its companions: flags, variables, which wins, and what the checks derive and refuse. */
START_TEST(update_options)
{
    clear_env();
    flas_train_opts o;
    const char *run = "--data d --global /g/round-000003.h5 --output /stage/jobs/7/local.h5 --steps 2";
    char line[512];
    ck_assert_int_eq(parse(&o, run), 0);
    ck_assert_int_eq(o.update, FLAS_UPDATE_FULL);
    ck_assert_int_eq(o.update_block, FLAS_UPDATE_BLOCK_DEFAULT);
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
    ck_assert_str_eq(o.checkpoint, o.output); /* full: the checkpoint is what is published */
    snprintf(line, sizeof line, "%s --update int8 --update-block 64 --residual-dir /site/res", run);
    ck_assert_int_eq(parse(&o, line), 0);
    ck_assert_int_eq(o.update, FLAS_UPDATE_INT8);
    ck_assert_int_eq(o.update_block, 64);
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
    ck_assert_str_eq(o.checkpoint, "/stage/jobs/7/" FLAS_STAGE_LOCAL_FULL_CHECKPOINT);
    /* The site's variables apply when no flag is given; flags win. */
    setenv("FLAS_UPDATE", "bf16", 1);
    setenv("FLAS_UPDATE_BLOCK", "256", 1);
    setenv("FLAS_RESIDUAL_DIR", "/site/env-res", 1);
    ck_assert_int_eq(parse(&o, run), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_int_eq(o.update, FLAS_UPDATE_BF16);
    ck_assert_int_eq(o.update_block, 256);
    ck_assert_str_eq(o.state_dir, "/site/env-res");
    snprintf(line, sizeof line, "%s --update full --update-block 128 --residual-dir /site/flag-res", run);
    ck_assert_int_eq(parse(&o, line), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_int_eq(o.update, FLAS_UPDATE_FULL);
    ck_assert_int_eq(o.update_block, 128);
    ck_assert_str_eq(o.state_dir, "/site/flag-res");
    /* A malformed variable is refused by name, never replaced by the default. */
    setenv("FLAS_UPDATE", "int4", 1);
    ck_assert_int_eq(parse(&o, run), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), -1);
    ck_assert(strstr(err, "FLAS_UPDATE") && strstr(err, "int4"));
    setenv("FLAS_UPDATE", "int8", 1);
    setenv("FLAS_UPDATE_BLOCK", "63", 1);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), -1);
    ck_assert(strstr(err, "FLAS_UPDATE_BLOCK") && strstr(err, "63"));
    clear_env();
    const struct { const char *line, *word; } bad_flags[] = {
        {"--update zstd", "zstd"}, {"--update INT8", "INT8"}, {"--update-block 63", "--update-block"},
        {"--update-block 257", "--update-block"}, {"--update-block 1e2", "--update-block"}};
    for (size_t i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++) {
        ck_assert_msg(parse(&o, bad_flags[i].line) == -1, "accepted: %s", bad_flags[i].line);
        ck_assert_msg(strstr(err, bad_flags[i].word), "'%s': '%s'", bad_flags[i].line, err);
    }
    const struct { const char *line, *word; } bad[] = {
        {"--data d --resume l.h5 --output o.h5 --steps 2 --update int8 --residual-dir /r", "--global"},
        {"--data d --global g --output o.h5 --steps 2 --update bf16", "--state-dir"},
        {"--data d --global g --output o.h5 --steps 2 --update int8 --residual-dir r", "absolute"},
        {"--data d --global g --output o.h5 --steps 2 --update int8 --residual-dir /r/", "absolute"},
        {"--data d --global g --output o.h5 --steps 2 --update int8 --residual-dir /a//b", "absolute"},
        {"--data d --global g --output o.h5 --steps 2 --update int8 --residual-dir /a/./b", "absolute"},
        {"--init-from m.gguf --output g.h5 --update int8", "--init-from"},
        {"--init --model stories260K --output g.h5 --update bf16", "--init"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(parse(&o, bad[i].line), 0);
        ck_assert_msg(flas_train_opts_check(&o, err, sizeof err) == -1, "accepted: %s", bad[i].line);
        ck_assert_msg(strstr(err, bad[i].word) != NULL, "'%s': message '%s' lacks '%s'", bad[i].line, err, bad[i].word);
    }
    /* --eval writes nothing: a site-wide FLAS_UPDATE does not stop it. */
    ck_assert_int_eq(parse(&o, "--eval x.h5 --valid v --update int8"), 0);
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
}
END_TEST

/* The names of the full checkpoint and of the residual files (runtime/common/staging.c). */
START_TEST(update_names)
{
    char b[256];
    ck_assert_int_eq(flas_stage_full_sibling(b, sizeof b, "/s/jobs/7/" FLAS_STAGE_LOCAL_CHECKPOINT), 0);
    ck_assert_str_eq(b, "/s/jobs/7/" FLAS_STAGE_LOCAL_FULL_CHECKPOINT);
    ck_assert_int_eq(flas_stage_full_sibling(b, sizeof b, "out.v2.h5"), 0);
    ck_assert_str_eq(b, "out.v2-full.h5");
    ck_assert_int_eq(flas_stage_full_sibling(b, sizeof b, "/a.b/local"), 0); /* a dot in a directory is no extension */
    ck_assert_str_eq(b, "/a.b/local-full");
    ck_assert_int_eq(flas_stage_full_sibling(b, sizeof b, "/d/.hidden"), 0);
    ck_assert_str_eq(b, "/d/.hidden-full");
    ck_assert_int_eq(flas_stage_full_sibling(b, 10, "/d/local.h5"), -1);
    ck_assert_int_eq(flas_stage_residual_name(b, sizeof b, 3), 0);
    ck_assert_str_eq(b, "residual-round-000003.h5");
    ck_assert_int_eq(flas_stage_residual_name(b, sizeof b, 1000000), -1);
    ck_assert_int_eq(flas_stage_residual_name(b, 24, 3), -1); /* no room for the NUL */
    ck_assert_int_eq(flas_stage_parse_residual_name("residual-round-000003.h5"), 3);
    ck_assert_int_eq(flas_stage_parse_residual_name("residual-round-999999.h5"), 999999);
    const char *other[] = {"residual-round-3.h5", "residual-round-0000003.h5", "residual-round-00000a.h5",
                           "residual-round-000003.h5.tmp", ".residual-round-000003.h5", "round-000003.h5",
                           "residual-round-000003.H5", "residual-round--00003.h5", ""};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        ck_assert_msg(flas_stage_parse_residual_name(other[i]) == -1, "'%s' taken for a residual", other[i]);
}
END_TEST

/* The levers across rounds: the kept state's checkpoint lives in the state directory under the round's
 * name (never beside the published output); the coordinator's variables apply unless flags say
 * otherwise; FLAS_STATE_DIR wins over its older name. */
START_TEST(inner_state_options)
{
    clear_env();
    flas_train_opts o;
    char err[512], line[512], b[64];
    const char *run = "--data d --global /g/round-000003.h5 --output /stage/jobs/7/local.h5 --steps 2 --round 3";
    snprintf(line, sizeof line, "%s --inner-state keep --state-dir /site/st", run);
    ck_assert_int_eq(parse(&o, line), 0);
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
    ck_assert(o.inner_keep);
    ck_assert_str_eq(o.checkpoint, "/site/st/inner-round-000003.h5");
    snprintf(line, sizeof line, "%s --inner-state keep --state-dir /site/st --update int8", run);
    ck_assert_int_eq(parse(&o, line), 0);
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
    ck_assert_str_eq(o.checkpoint, "/site/st/inner-round-000003.h5"); /* the update is encoded from the state */
    setenv("FLAS_INNER_STATE", "keep", 1);
    setenv("FLAS_LR_SCHEDULE", "run", 1);
    setenv("FLAS_ROUNDS", "24", 1);
    setenv("FLAS_PROX", "0.01", 1);
    setenv("FLAS_RESIDUAL_DIR", "/site/old-name", 1);
    setenv("FLAS_STATE_DIR", "/site/new-name", 1);
    ck_assert_int_eq(parse(&o, run), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert(o.inner_keep && o.lr_run && o.rounds == 24 && o.prox == 0.01f);
    ck_assert_str_eq(o.state_dir, "/site/new-name");
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
    snprintf(line, sizeof line, "%s --inner-state reset --lr-schedule round --rounds 5 --prox 0", run);
    ck_assert_int_eq(parse(&o, line), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert(!o.inner_keep && !o.lr_run && o.rounds == 5 && o.prox == 0); /* flags win */
    unsetenv("FLAS_STATE_DIR");
    ck_assert_int_eq(parse(&o, run), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_str_eq(o.state_dir, "/site/old-name");
    clear_env();
    ck_assert_int_eq(flas_stage_inner_name(b, sizeof b, 3), 0);
    ck_assert_str_eq(b, "inner-round-000003.h5");
    ck_assert_int_eq(flas_stage_parse_inner_name("inner-round-000003.h5"), 3);
    ck_assert_int_eq(flas_stage_inner_name(b, sizeof b, 1000000), -1);
    const char *other[] = {"inner-round-3.h5", "inner-round-0000003.h5", "residual-round-000003.h5",
                           "inner-round-000003.h5.tmp", ".inner-round-000003.h5", "inner-round-00000x.h5", ""};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        ck_assert_msg(flas_stage_parse_inner_name(other[i]) == -1, "'%s' taken for an inner state", other[i]);
}
END_TEST

START_TEST(prox_gradient)
{
    float g[3] = {1, 2, 3}, x[3] = {1, 1, 1}, a[3] = {0, 1, 3};
    flas_prox_grad(g, x, a, 3, 0.5f);
    ck_assert(g[0] == 1.5f && g[1] == 2.0f && g[2] == 2.0f);
}
END_TEST

/* FLAS_STEPS (the coordinator's speed-aware share): the steps when no --steps is given; --steps wins;
 * anything but a whole number in --steps' range is refused. */
START_TEST(steps_from_env)
{
    clear_env();
    unsetenv("FLAS_STEPS");
    flas_train_opts o;
    const char *base = "--data d --global /g/round-000003.h5 --output /o.h5";
    char line[512];
    ck_assert_int_eq(parse(&o, base), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), -1); /* no amount at all */
    setenv("FLAS_STEPS", "1234", 1);
    ck_assert_int_eq(parse(&o, base), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_int_eq(o.steps, 1234);
    ck_assert_int_eq(flas_train_opts_check(&o, err, sizeof err), 0);
    snprintf(line, sizeof line, "%s --steps 7", base);
    ck_assert_int_eq(parse(&o, line), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_int_eq(o.steps, 7); /* the flag wins */
    static const char *const bad[] = {"0", "-5", "+5", "12x", " 12", "1e3", "0x10", "1099511627777",
                                      "99999999999999999999999", "012"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("FLAS_STEPS", bad[i], 1);
        ck_assert_int_eq(parse(&o, base), 0);
        err[0] = '\0';
        ck_assert_msg(flas_train_opts_from_env(&o, err, sizeof err) == -1, "FLAS_STEPS=%s accepted", bad[i]);
        ck_assert_msg(strstr(err, "FLAS_STEPS") != NULL, "%s", err);
    }
    setenv("FLAS_STEPS", "1099511627776", 1); /* 2^40: the largest */
    ck_assert_int_eq(parse(&o, base), 0);
    ck_assert_int_eq(flas_train_opts_from_env(&o, err, sizeof err), 0);
    ck_assert_int_eq(o.steps, 1L << 40);
    unsetenv("FLAS_STEPS");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_add_test(tc, flags_parse);
    tcase_add_test(tc, flags_refused);
    tcase_add_test(tc, checks_per_mode);
    tcase_add_test(tc, model_config);
    tcase_add_test(tc, env_and_flags);
    tcase_add_test(tc, walltime);
    tcase_add_test(tc, signals);
    tcase_add_test(tc, slices);
    tcase_add_test(tc, adamw_on_slices);
    tcase_add_test(tc, update_options);
    tcase_add_test(tc, update_names);
    tcase_add_test(tc, steps_from_env);
    tcase_add_test(tc, inner_state_options);
    tcase_add_test(tc, prox_gradient);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
