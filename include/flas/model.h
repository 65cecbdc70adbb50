/* LLaMA-2 model shape (Config) and the table of named parameter tensors (Weights) that views one
 * contiguous float buffer. This is the contract shared by the trainer, the checkpoint I/O and the
 * aggregator: tensor names are Meta's, linear weights are [out_features, in_features] row-major. */
#ifndef FLAS_MODEL_H
#define FLAS_MODEL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_TENSOR_NAME_MAX 64 /* longest tensor name, NUL included ("layers.79.feed_forward.w3.weight") */
/* Most decoder blocks a config may have (flas_config_validate); the same bound as FLAS_CKPT_MAX_LAYERS.
 * No LLaMA has more than 126. */
#define FLAS_MAX_LAYERS 1024

typedef struct flas_config {
    int dim;             /* model width */
    int n_layers;        /* decoder blocks */
    int n_heads;         /* query heads; head_dim = dim / n_heads */
    int n_kv_heads;      /* key/value heads (GQA); must divide n_heads */
    int hidden_dim;      /* SwiGLU inner width */
    int vocab_size;
    int seq_len;         /* longest context trained */
    float norm_eps;      /* RMSNorm epsilon, 1e-5 for LLaMA-2 */
    float rope_theta;    /* RoPE base, 10000 for LLaMA-2 */
    int tied_embeddings; /* 1: the output head reuses tok_embeddings.weight (llama2.c tiny models) */
} flas_config;

/* What each tensor is, so code can dispatch without parsing names. */
typedef enum flas_tensor_kind {
    FLAS_T_TOK_EMBEDDINGS,
    FLAS_T_ATTENTION_NORM,
    FLAS_T_WQ,
    FLAS_T_WK,
    FLAS_T_WV,
    FLAS_T_WO,
    FLAS_T_FFN_NORM,
    FLAS_T_W1,
    FLAS_T_W2,
    FLAS_T_W3,
    FLAS_T_NORM,
    FLAS_T_OUTPUT,
    FLAS_T_KIND_COUNT
} flas_tensor_kind;

/* How a tensor is split across tensor-parallel ranks (Megatron; a rank's part is its "shard" below,
 * not to be confused with flas_shard, a file of tokens): column-parallel layers split their
 * output rows, row-parallel layers split their input columns, everything else is replicated. */
typedef enum flas_tp_split {
    FLAS_TP_REPLICATED = -1,
    FLAS_TP_SPLIT_ROWS = 0, /* wq, wk, wv, w1, w3 */
    FLAS_TP_SPLIT_COLS = 1  /* wo, w2 */
} flas_tp_split;

typedef struct flas_tensor {
    char name[FLAS_TENSOR_NAME_MAX];  /* Meta name, e.g. "layers.3.attention.wq.weight" */
    flas_tensor_kind kind;
    int layer;                 /* block index, -1 outside the blocks */
    int ndim;                  /* 1 or 2 */
    size_t full_shape[2];      /* logical shape of the whole tensor (what a checkpoint stores) */
    size_t shape[2];           /* shape of this rank's shard */
    flas_tp_split shard;          /* which dimension is split across tensor-parallel ranks */
    size_t shard_start;        /* first row (or column) of full_shape this rank holds */
    size_t offset;             /* start of the shard in the rank's buffer, in floats */
    size_t numel;              /* elements of the shard */
} flas_tensor;

typedef struct flas_param_table {
    flas_config cfg;
    int tp_rank, tp_size;      /* tensor-parallel coordinates this table was laid out for */
    int n_tensors;
    flas_tensor *tensors;      /* Meta order: embeddings, per block (attention_norm, wq, wk, wv, wo,
                                  ffn_norm, w1, w2, w3), norm, output (absent when tied) */
    size_t n_params;           /* floats in this rank's buffer */
    size_t n_params_full;      /* floats in the whole model (all shards once) */
} flas_param_table;

/* Presets: "llama2-7b", "llama2-13b", "llama2-70b", "stories260K", "stories15M", "stories42M",
 * "stories110M". Returns 0, or -1 for an unknown name. */
int flas_config_preset(const char *name, flas_config *out);
/* NULL-terminated list of preset names, for --help and error messages. */
const char *const *flas_config_preset_names(void);
/* LLaMA's FFN width rule: multiple_of * ceil((ffn_dim_multiplier * 2/3 * 4 * dim) / multiple_of);
 * ffn_dim_multiplier <= 0 means "not set" (1.0). */
int flas_hidden_dim(int dim, int multiple_of, float ffn_dim_multiplier);
/* 0 if the shape is trainable (and splittable over tp_size ranks), else -1 with a one-line reason
 * in err. Refuses zero or negative sizes, n_heads % n_kv_heads, odd head_dim (RoPE rotates pairs),
 * and sizes whose products overflow the indexing types. */
int flas_config_validate(const flas_config *c, int tp_size, char *err, size_t errlen);
size_t flas_config_head_dim(const flas_config *c);

/* Lays out the tensors of rank tp_rank of tp_size in one buffer. 0, or -1 with err set. */
int flas_param_table_init(flas_param_table *t, const flas_config *c, int tp_rank, int tp_size,
                          char *err, size_t errlen);
void flas_param_table_free(flas_param_table *t);
/* The tensor called name, or NULL. */
const flas_tensor *flas_param_find(const flas_param_table *t, const char *name);
/* The tensor of the given kind in block layer (layer is ignored for non-block kinds), or NULL. */
const flas_tensor *flas_param_get(const flas_param_table *t, flas_tensor_kind kind, int layer);

#ifdef __cplusplus
}
#endif
#endif
