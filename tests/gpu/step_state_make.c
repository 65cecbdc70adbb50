/* Computes a step state with the CPU core (see step_state_make.h). Library calls only: the model,
 * its init, forward/backward, clipping, the LR schedule and AdamW are libflas's own. */
#include "step_state_make.h"

#include <stdlib.h>
#include <string.h>

#include "flas/error.h"
#include "flas/llama.h"
#include "flas/optim.h"

void step_state_opts_default(step_state_opts *o, const flas_config *cfg)
{
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->B = 2;
    o->T = cfg->seq_len < 16 ? cfg->seq_len : 16;
    o->seed = 1;
    o->logits = 1;
    o->adamw = (flas_step_adamw){3e-4f, 3e-5f, 0, 0, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
}

/* splitmix64: the tokens are a function of the seed alone, on any host. */
static uint64_t next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int below(uint64_t *x, int n) { return (int)(next(x) % (uint64_t)n); }

/* Token streams with structure to learn: after token a comes perm[a] three times in four, else a
 * uniform token. Over the S steps the loss then falls well below ln(vocab), so a replay whose
 * optimizer is wrong drifts visibly away from the recorded losses. */
typedef struct {
    uint64_t rng;
    int vocab;
    int *perm;
} token_source;

static int tokens_init(token_source *g, uint64_t seed, int vocab)
{
    g->rng = seed ^ 0x5eed5eed5eed5eedull;
    g->vocab = vocab;
    g->perm = malloc(sizeof(int) * (size_t)vocab);
    if (!g->perm)
        return -1;
    for (int i = 0; i < vocab; i++)
        g->perm[i] = i;
    for (int i = vocab - 1; i > 0; i--) {
        int j = below(&g->rng, i + 1), t = g->perm[i];
        g->perm[i] = g->perm[j];
        g->perm[j] = t;
    }
    return 0;
}

/* One batch: B sequences of T + 1 tokens, split into inputs and next-token targets. */
static void tokens_batch(token_source *g, int B, int T, int32_t *tokens, int32_t *targets)
{
    for (int b = 0; b < B; b++) {
        int cur = below(&g->rng, g->vocab);
        for (int t = 0; t < T; t++) {
            int nxt = below(&g->rng, 4) ? g->perm[cur] : below(&g->rng, g->vocab);
            tokens[(size_t)b * T + t] = cur;
            targets[(size_t)b * T + t] = nxt;
            cur = nxt;
        }
    }
}

int step_state_make(const step_state_opts *o, flas_step_state *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (o->B < 1 || o->B > FLAS_STEP_STATE_MAX_BATCH || o->T < 1 || o->steps < 0 ||
        o->steps > FLAS_STEP_STATE_MAX_STEPS)
        return flas_fail(err, errlen, "batch %d x %d or %d steps out of range", o->B, o->T, o->steps);
    flas_model m;
    if (flas_model_create(&m, &o->cfg, 0, 1, o->B, o->T, o->threads, err, errlen))
        return -1;
    flas_model_use_reference(&m, o->reference);
    flas_model_init_weights(&m, o->seed);
    token_source g = {0, 0, NULL};
    flas_adamw opt;
    int opt_ready = 0, rc = -1;
    size_t bt = (size_t)o->B * (size_t)o->T, S = (size_t)o->steps, np = m.table.n_params;
    s->cfg = o->cfg;
    s->reference = o->reference != 0;
    s->B = o->B;
    s->T = o->T;
    s->seed = o->seed;
    s->n_params = np;
    s->n_logits = o->logits ? bt * (size_t)o->cfg.vocab_size : 0;
    s->adamw = o->adamw;
    s->n_steps = o->steps;
    s->params = malloc(sizeof(float) * np);
    s->grads = malloc(sizeof(float) * np);
    s->tokens = malloc(sizeof(int32_t) * bt);
    s->targets = malloc(sizeof(int32_t) * bt);
    s->logits = s->n_logits ? malloc(sizeof(float) * s->n_logits) : NULL;
    if (S) {
        s->step_tokens = malloc(sizeof(int32_t) * bt * S);
        s->step_targets = malloc(sizeof(int32_t) * bt * S);
        s->step_lr = malloc(sizeof(float) * S);
        s->step_loss = malloc(sizeof(float) * S);
        s->step_norm = malloc(sizeof(float) * S);
    }
    if (!s->params || !s->grads || !s->tokens || !s->targets || (s->n_logits && !s->logits) ||
        (S && (!s->step_tokens || !s->step_targets || !s->step_lr || !s->step_loss || !s->step_norm)) ||
        tokens_init(&g, o->seed, o->cfg.vocab_size)) {
        flas_fail(err, errlen, "out of memory");
        goto out;
    }
    memcpy(s->params, m.params, sizeof(float) * np);
    tokens_batch(&g, o->B, o->T, s->tokens, s->targets);

    /* The reference step: one forward + backward from zeroed grads (init_weights zeroed them). */
    if (flas_model_forward(&m, s->tokens, s->targets, o->B, o->T, &s->loss, s->logits) ||
        flas_model_backward(&m, 1.0f)) {
        flas_fail(err, errlen, "reference step: %s", m.err);
        goto out;
    }
    memcpy(s->grads, m.grads, sizeof(float) * np);

    /* The replay the header documents: zero, forward, backward, clip, AdamW at the schedule's lr. */
    if (S) {
        const flas_step_adamw *a = &o->adamw;
        flas_lr_schedule sched = {a->lr_max, a->lr_min, a->warmup, a->decay};
        if (flas_adamw_init(&opt, &m.table, a->beta1, a->beta2, a->eps, a->weight_decay)) {
            flas_fail(err, errlen, "out of memory for the AdamW moments");
            goto out;
        }
        opt_ready = 1;
        memcpy(s->step_tokens, s->tokens, sizeof(int32_t) * bt);
        memcpy(s->step_targets, s->targets, sizeof(int32_t) * bt);
        for (size_t k = 1; k < S; k++)
            tokens_batch(&g, o->B, o->T, s->step_tokens + k * bt, s->step_targets + k * bt);
        for (size_t k = 0; k < S; k++) {
            flas_model_zero_grad(&m);
            if (flas_model_forward(&m, s->step_tokens + k * bt, s->step_targets + k * bt, o->B, o->T,
                                   &s->step_loss[k], NULL) ||
                flas_model_backward(&m, 1.0f)) {
                flas_fail(err, errlen, "step %zu: %s", k, m.err);
                goto out;
            }
            s->step_norm[k] = flas_model_clip_grad_norm(&m, a->clip);
            s->step_lr[k] = flas_lr_at(&sched, (long)k);
            flas_adamw_step(&opt, m.params, m.grads, s->step_lr[k]);
        }
    }
    rc = 0;
out:
    if (opt_ready)
        flas_adamw_free(&opt);
    free(g.perm);
    flas_model_free(&m);
    if (rc)
        flas_step_state_free(s);
    return rc;
}
