/* Sampling text from a checkpoint (see include/flas/generate.h). No KV cache: each new token reruns
 * the forward pass over the last seq_len tokens, which is simple, exact, and fast enough for the small
 * models FLaS's demo trains; the forward pass is the same code training uses. */
#include "flas/error.h"
#include "flas/generate.h"

#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/checkpoint.h"
#include "flas/llama.h"

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct {
    float p;
    int id;
} cand;

static int by_prob_desc(const void *a, const void *b)
{
    float x = ((const cand *)a)->p, y = ((const cand *)b)->p;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Picks the next id from one row of logits: argmax at temperature 0, else softmax(logits / T) over
 * the top_k candidates. */
static int sample(const float *logits, int V, const flas_generate_opts *o, uint64_t *rng, cand *c)
{
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best])
            best = i;
    if (o->temperature <= 0.0f)
        return best;
    for (int i = 0; i < V; i++) {
        c[i].p = expf((logits[i] - logits[best]) / o->temperature);
        c[i].id = i;
    }
    int k = o->top_k > 0 && o->top_k < V ? o->top_k : V;
    qsort(c, (size_t)V, sizeof *c, by_prob_desc);
    double total = 0;
    for (int i = 0; i < k; i++)
        total += c[i].p;
    double u = (double)(splitmix64(rng) >> 11) * 0x1.0p-53 * total;
    for (int i = 0; i < k; i++) {
        u -= c[i].p;
        if (u <= 0)
            return c[i].id;
    }
    return c[k - 1].id;
}

/* The model of a checkpoint, weights loaded, on one rank. */
static int load_model(const char *path, flas_model *m, int threads, char *err, size_t errlen)
{
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, errlen);
    if (!r)
        return -1;
    const flas_config *cfg = &flas_ckpt_meta_of(r)->cfg;
    int rc = flas_model_create(m, cfg, 0, 1, 1, cfg->seq_len, threads, err, errlen);
    if (rc == 0 && flas_ckpt_get_flat(r, FLAS_CKPT_PARAMS, &m->table, 0, m->table.n_params, m->params, err, errlen)) {
        flas_model_free(m);
        rc = -1;
    }
    flas_ckpt_close(r);
    return rc;
}

char *flas_generate(const char *checkpoint, const flas_tokenizer *tok, const char *prompt,
                    const flas_generate_opts *o, char *err, size_t errlen)
{
    flas_model m;
    if (o->max_new_tokens < 1 || o->max_new_tokens > 1000000 || o->top_k < 0 || !(o->temperature >= 0))
        return flas_fail(err, errlen, "max_new_tokens must be 1..1000000, top_k >= 0, temperature >= 0"), NULL;
    if (load_model(checkpoint, &m, o->threads, err, errlen))
        return NULL;
    int V = m.cfg.vocab_size, L = m.cfg.seq_len;
    if (flas_tokenizer_vocab_size(tok) != V) {
        flas_model_free(&m);
        return flas_fail(err, errlen, "the tokenizer has %d pieces but %s was trained with a vocabulary of %d",
                        flas_tokenizer_vocab_size(tok), checkpoint, V), NULL;
    }
    flas_ids ids = {0};
    char *text = NULL;
    float *logits = malloc(sizeof *logits * (size_t)L * (size_t)V);
    cand *c = malloc(sizeof *c * (size_t)V);
    if (!logits || !c || flas_tokenizer_encode(tok, prompt, strlen(prompt), FLAS_TOK_BOS, &ids, err, errlen) ||
        flas_ids_reserve(&ids, (size_t)o->max_new_tokens)) {
        if (!err[0])
            flas_fail(err, errlen, "out of memory");
        goto out;
    }
    size_t first_new = ids.n;
    uint64_t rng = o->seed;
    int eos = flas_tokenizer_eos_id(tok);
    for (int n = 0; n < o->max_new_tokens; n++) {
        int T = ids.n < (size_t)L ? (int)ids.n : L;
        const int32_t *window = ids.ids + ids.n - (size_t)T;
        if (flas_model_forward(&m, window, NULL, 1, T, NULL, logits)) {
            flas_fail(err, errlen, "%s", m.err);
            goto out;
        }
        int next = sample(logits + (size_t)(T - 1) * (size_t)V, V, o, &rng, c);
        ids.ids[ids.n++] = next;
        if (next == eos)
            break;
    }
    text = flas_tokenizer_decode(tok, ids.ids + first_new, ids.n - first_new, NULL, err, errlen);
out:
    free(logits);
    free(c);
    flas_ids_free(&ids);
    flas_model_free(&m);
    return text;
}
