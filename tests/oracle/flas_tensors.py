"""The LLaMA tensor table of a FLaS checkpoint, written from scratch for the Python tests and benchmarks:
Meta's names and full (unsharded) shapes, in the order of runtime/model_config.c's flas_param_table_init.

cfg is a dict with dim, n_layers, n_heads, n_kv_heads (grouped-query attention: wk/wv have
n_kv_heads * head_dim rows), hidden_dim, vocab_size and tied_embeddings (1: the output head shares
tok_embeddings, as in llama2.c's tiny models, and there is no output.weight)."""


def meta_tensors(cfg):
    """[(name, shape)]: tok_embeddings, then per layer its 9 tensors, norm, and output unless tied."""
    d, h, v = cfg["dim"], cfg["hidden_dim"], cfg["vocab_size"]
    hd = d // cfg["n_heads"]
    q, kv = hd * cfg["n_heads"], hd * cfg["n_kv_heads"]
    out = [("tok_embeddings.weight", (v, d))]
    for l in range(cfg["n_layers"]):
        p = f"layers.{l}."
        out += [(p + "attention_norm.weight", (d,)), (p + "attention.wq.weight", (q, d)),
                (p + "attention.wk.weight", (kv, d)), (p + "attention.wv.weight", (kv, d)),
                (p + "attention.wo.weight", (d, q)), (p + "ffn_norm.weight", (d,)),
                (p + "feed_forward.w1.weight", (h, d)), (p + "feed_forward.w2.weight", (d, h)),
                (p + "feed_forward.w3.weight", (h, d))]
    out.append(("norm.weight", (d,)))
    if not cfg["tied_embeddings"]:
        out.append(("output.weight", (v, d)))
    return out
