#!/usr/bin/python3
"""PyTorch oracle for flas-convert's Hugging Face layout.

This file holds an independent implementation of Hugging Face's LlamaForCausalLM forward pass (HF tensor
names, RoPE by `rotate_half` over the two halves of each head with inv_freq = theta^(-2i/d) and the angles
concatenated twice, grouped-query attention by repeating each key/value head, SwiGLU, RMSNorm, tied or
untied lm_head), in float64, driven only by config.json and the safetensors files (read with json + numpy;
no `safetensors`/`transformers` package). It never un-permutes anything: it computes what HF computes.

Case A (export): FLaS checkpoints (untied GQA, the tied GQA preset stories260K, MHA with rope_theta 5e5)
are exported with `flas-convert X.h5 DIR`; the HF forward on DIR must give the logits of the repo's
Meta-layout oracle (tests/oracle/llama_torch.py) on X.h5.
Case B (import): the test writes HF directories itself (f32 one file; bf16 in 3 shards with an index;
f16; a config with Llama-2-7b-hf's key set, without rope_theta, and its rotary_emb.inv_freq tensors;
F32 norms with BF16 matrices shuffled over 4 shards with unpadded headers and no __metadata__; an older
config without num_key_value_heads / tie_word_embeddings), imports each with `flas-convert DIR OUT.h5`, and the Meta
oracle on OUT.h5 must give the logits of the HF forward on DIR; every imported tensor must equal the
dequantised, un-permuted HF tensor bit for bit.

Tolerance: max |a - b| / max |b| <= 1e-9 over all logits (both sides float64; they differ only by the
order of float64 operations and, in case A, by config.json's decimal rms_norm_eps versus the float32
attribute, which moves logits by ~1e-10 relative). A wrong permutation or a wrong head count moves them
by ~1e-1.

usage: test_hf_oracle.py FLAS_CONVERT FLAS_TRAIN WORKDIR [TOKENIZER.model]
The helpers (safetensors I/O, bf16 rounding, permutations, both forwards) are imported by test_roundtrip.py.
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
from llama_torch import Transformer  # noqa: E402

REL_TOL = 1e-9
CONFIG_INTS = ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "seq_len", "tied_embeddings")
CONFIG_FLOATS = ("norm_eps", "rope_theta")


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


# ---------------------------------------------------------------- running tools

def run(cmd, expect_rc=0):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if expect_rc is not None and p.returncode != expect_rc:
        raise Fail(f"{' '.join(map(str, cmd))}: exit {p.returncode} (expected {expect_rc})\n"
                   f"stdout: {p.stdout.strip()}\nstderr: {p.stderr.strip()}")
    return p


def no_leftovers(dirpath, allowed):
    """dirpath holds exactly the names in allowed (no temporaries, hidden or otherwise)."""
    names = set(os.listdir(dirpath))
    check(names == set(allowed), f"{dirpath}: holds {sorted(names)}, expected exactly {sorted(allowed)}")


# ---------------------------------------------------------------- safetensors with json + numpy

ST_NP = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def st_read(path):
    """-> (metadata or None, {name: (dtype string, raw numpy array)}); validates the layout as the
    safetensors library does (offsets contiguous from 0, cover the data exactly, sizes match shapes)."""
    with open(path, "rb") as f:
        data = f.read()
    check(len(data) >= 8, f"{path}: shorter than the 8-byte header length")
    n = struct.unpack("<Q", data[:8])[0]
    check(8 + n <= len(data), f"{path}: header length {n} beyond the file ({len(data)} bytes)")
    hdr = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    meta = hdr.pop("__metadata__", None)
    spans, out = [], {}
    for name, info in hdr.items():
        check(set(info) == {"dtype", "shape", "data_offsets"}, f"{path}: {name}: header keys {sorted(info)}")
        check(info["dtype"] in ST_NP, f"{path}: {name}: dtype {info['dtype']}")
        dt = ST_NP[info["dtype"]]
        b, e = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        check(e - b == count * dt.itemsize, f"{path}: {name}: {e - b} bytes for shape {info['shape']} {info['dtype']}")
        spans.append((b, e, name))
        out[name] = (info["dtype"], np.frombuffer(data, dtype=dt, count=count, offset=base + b).reshape(info["shape"]))
    pos = 0
    for b, e, name in sorted(spans):
        check(b == pos, f"{path}: {name} starts at {b}, expected {pos} (gap or overlap)")
        pos = e
    check(base + pos == len(data), f"{path}: tensors end at {base + pos}, file has {len(data)} bytes")
    return meta, out


def st_write(path, tensors, metadata=None, pad=True):
    """tensors: {name: (dtype string, raw numpy array of ST_NP[dtype])}, written in the given order; the
    header padded to 8 bytes as the safetensors library writes it (the format does not require it)."""
    hdr, off, blobs = {}, 0, []
    if metadata is not None:
        hdr["__metadata__"] = metadata
    for name, (dt, a) in tensors.items():
        a = np.ascontiguousarray(a, dtype=ST_NP[dt])
        hdr[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(hdr, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def dequant(dt, a):
    """raw safetensors array -> float32 (exact for F16 and BF16)."""
    if dt == "F32":
        return a.astype(np.float32)
    if dt == "F16":
        return a.astype(np.float32)
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    raise Fail(f"dtype {dt}")


def bf16_bits(a32):
    """float32 -> bf16 bits, round to nearest, ties to even (finite inputs)."""
    check(np.all(np.isfinite(a32)), "bf16_bits: non-finite input")
    u = np.ascontiguousarray(a32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def hf_read_dir(d):
    """-> (config dict, {name: float32 array}, {name: dtype}, [files]). One file or index + shards."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            index = json.load(f)
        files = sorted(set(index["weight_map"].values()))
    else:
        index, files = None, ["model.safetensors"]
    W, dts = {}, {}
    for fn in files:
        _, t = st_read(os.path.join(d, fn))
        for name, (dt, a) in t.items():
            check(name not in W, f"{d}: tensor {name} in two files")
            if index is not None:
                check(index["weight_map"].get(name) == fn, f"{d}: {name} is in {fn}, index says "
                                                            f"{index['weight_map'].get(name)}")
            W[name], dts[name] = dequant(dt, a), dt
    if index is not None:
        check(set(index["weight_map"]) == set(W), f"{d}: index names {len(index['weight_map'])} tensors, "
                                                  f"files hold {len(W)}")
    return cfg, W, dts, files


# ---------------------------------------------------------------- names and the RoPE row permutation

def hf_name(meta):
    if meta == "tok_embeddings.weight":
        return "model.embed_tokens.weight"
    if meta == "norm.weight":
        return "model.norm.weight"
    if meta == "output.weight":
        return "lm_head.weight"
    p = meta.split(".")
    check(p[0] == "layers", f"unknown tensor {meta}")
    rest = ".".join(p[2:])
    m = {"attention_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
         "attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
         "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
         "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w2.weight": "mlp.down_proj.weight",
         "feed_forward.w3.weight": "mlp.up_proj.weight"}[rest]
    return f"model.layers.{p[1]}.{m}"


def meta_to_hf_rows(w, n_heads):
    """Meta interleaved rows (2i, 2i+1 a pair) -> HF half-split rows (i, i + hd/2 a pair), per head
    (HF's convert_llama_weights_to_hf.py permute)."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def hf_to_meta_rows(w, n_heads):
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def meta_tensor_names(n_layers, tied):
    names = ["tok_embeddings.weight"]
    for i in range(n_layers):
        names += [f"layers.{i}.{t}.weight" for t in ("attention_norm", "attention.wq", "attention.wk",
                                                     "attention.wv", "attention.wo", "ffn_norm",
                                                     "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")]
    names.append("norm.weight")
    if not tied:
        names.append("output.weight")
    return names


# ---------------------------------------------------------------- FLaS HDF5 and the Meta oracle

def h5_read(path):
    """-> (config dict, {meta name: float32 array}, {attr: value})."""
    with h5py.File(path, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
        params = {k: f["params"][k][...] for k in f["params"]}
        for k, v in params.items():
            check(v.dtype == np.dtype("<f4"), f"{path}: {k} dtype {v.dtype}")
    cfg = {k: int(attrs[k]) for k in CONFIG_INTS}
    cfg.update({k: float(attrs[k]) for k in CONFIG_FLOATS})
    return cfg, params, attrs


def meta_logits(h5path, ids):
    cfg, params, _ = h5_read(h5path)
    model = Transformer(cfg, dtype=torch.float64)
    named = dict(model.named_parameters())
    check(set(named) == set(params), f"{h5path}: tensors {sorted(set(named) ^ set(params))} differ from the model's")
    with torch.no_grad():
        for name, a in params.items():
            named[name].copy_(torch.from_numpy(a.astype(np.float64)))
        logits, _ = model.eval()(torch.tensor(ids))
    return logits.numpy()


# ---------------------------------------------------------------- Hugging Face LlamaForCausalLM, float64

def hf_logits(config, W, ids):
    """LlamaForCausalLM.forward as transformers computes it (no KV cache, causal mask), float64."""
    D = config["hidden_size"]
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads") or nh          # LlamaConfig: None -> num_attention_heads
    hd = config.get("head_dim") or D // nh
    eps = float(config.get("rms_norm_eps", 1e-6))
    theta = float(config.get("rope_theta", 10000.0))
    tied = bool(config.get("tie_word_embeddings", False))  # LlamaConfig default False
    check(config.get("hidden_act", "silu") == "silu", f"hidden_act {config.get('hidden_act')}")
    check(config.get("rope_scaling") is None, f"rope_scaling {config.get('rope_scaling')}")
    t = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in W.items()}
    tokens = torch.tensor(ids)
    B, T = tokens.shape

    def rmsnorm(x, w):
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + eps))

    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).to(torch.float64) / hd))
    pos = torch.arange(T, dtype=torch.float64)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]    # [1, 1, T, hd]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)

    x = F.embedding(tokens, t["model.embed_tokens.weight"])
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rmsnorm(x, t[p + "input_layernorm.weight"])
        q = (h @ t[p + "self_attn.q_proj.weight"].T).view(B, T, nh, hd).transpose(1, 2)
        k = (h @ t[p + "self_attn.k_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        v = (h @ t[p + "self_attn.v_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv                                         # repeat_kv: head j serves q heads j*rep..
        k = k[:, :, None].expand(B, nkv, rep, T, hd).reshape(B, nh, T, hd)
        v = v[:, :, None].expand(B, nkv, rep, T, hd).reshape(B, nh, T, hd)
        att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + o @ t[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, t[p + "post_attention_layernorm.weight"])
        x = x + (F.silu(h @ t[p + "mlp.gate_proj.weight"].T) * (h @ t[p + "mlp.up_proj.weight"].T)) \
            @ t[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, t["model.norm.weight"])
    head = t["model.embed_tokens.weight"] if tied else t["lm_head.weight"]
    return (x @ head.T).numpy()


def rel_err(a, b):
    check(a.shape == b.shape, f"logit shapes {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def bits_equal(a, b):
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def token_ids(rng, vocab, seq_len, batch=2):
    return rng.integers(0, vocab, size=(batch, min(seq_len, 37))).tolist()


# ---------------------------------------------------------------- case A: FLaS -> HF

def rescale(path, rng):
    """Replace a FLaS checkpoint's values in place (same datasets, so the file stays FLaS's own) by larger
    random ones: flas-train's init (std 0.02) leaves attention almost uniform, so a wrong RoPE row order
    would move the logits by only ~1e-3 of their size; with these it moves them by ~1."""
    with h5py.File(path, "r+") as f:
        for n in f["params"]:
            ds = f["params"][n]
            if ds.ndim == 1:
                ds[...] = (1 + 0.2 * rng.normal(size=ds.shape)).astype(np.float32)
            else:
                ds[...] = rng.normal(0, 1.0 if n == "tok_embeddings.weight" else 0.25, ds.shape).astype(np.float32)


def case_a(conv, train, work, name, init_args, rng, scale):
    d = os.path.join(work, "A-" + name)
    os.makedirs(d)
    src, out = os.path.join(d, "flas.h5"), os.path.join(d, "hf")
    run([train, "--init", *init_args, "--output", src])
    if scale:
        rescale(src, rng)
    run([conv, "--quiet", src, out])
    no_leftovers(d, ["flas.h5", "hf"])
    no_leftovers(out, ["config.json", "model.safetensors"])

    cfg, params, _ = h5_read(src)
    config, W, dts, _ = hf_read_dir(out)
    want = {"hidden_size": cfg["dim"], "intermediate_size": cfg["hidden_dim"], "num_hidden_layers": cfg["n_layers"],
            "num_attention_heads": cfg["n_heads"], "num_key_value_heads": cfg["n_kv_heads"],
            "vocab_size": cfg["vocab_size"], "max_position_embeddings": cfg["seq_len"],
            "tie_word_embeddings": bool(cfg["tied_embeddings"]), "architectures": ["LlamaForCausalLM"],
            "model_type": "llama", "hidden_act": "silu", "torch_dtype": "float32"}
    for k, v in want.items():
        check(k in config and config[k] == v and type(config[k]) == type(v),
              f"{name}: config.json {k} = {config.get(k)!r}, expected {v!r}")
    check(np.float32(config["rms_norm_eps"]) == np.float32(cfg["norm_eps"]),
          f"{name}: rms_norm_eps {config['rms_norm_eps']} != float32 {cfg['norm_eps']}")
    check(np.float32(config["rope_theta"]) == np.float32(cfg["rope_theta"]),
          f"{name}: rope_theta {config['rope_theta']} != {cfg['rope_theta']}")
    if "head_dim" in config:
        check(config["head_dim"] == cfg["dim"] // cfg["n_heads"], f"{name}: head_dim {config['head_dim']}")
    for k in ("attention_bias", "mlp_bias"):
        check(not config.get(k, False), f"{name}: config.json {k} = {config.get(k)}")

    # every exported tensor: HF name, F32, and the original (wq/wk rows permuted to half-split) bit for bit
    check(set(W) == {hf_name(n) for n in params},
          f"{name}: exported tensors differ: {sorted(set(W) ^ {hf_name(n) for n in params})}")
    # first the forward passes (the oracle), then the exact layout
    ids = token_ids(rng, cfg["vocab_size"], cfg["seq_len"])
    la = hf_logits(config, W, ids)
    lb = meta_logits(src, ids)
    e = rel_err(la, lb)
    check(e <= REL_TOL, f"{name}: HF forward on the export differs from the Meta forward on the original: "
                        f"relative {e:.3g} > {REL_TOL:g}")
    for n, a in params.items():
        exp = a
        if n.endswith("attention.wq.weight"):
            exp = meta_to_hf_rows(a, cfg["n_heads"])
        elif n.endswith("attention.wk.weight"):
            exp = meta_to_hf_rows(a, cfg["n_kv_heads"])
        check(dts[hf_name(n)] == "F32", f"{name}: {hf_name(n)} exported as {dts[hf_name(n)]}")
        check(bits_equal(W[hf_name(n)], exp), f"{name}: {hf_name(n)} differs from {n} (permuted)")

    print(f"ok A {name}: HF-layout forward (float64) on the exported safetensors == Meta oracle on the "
          f"FLaS checkpoint: max rel diff {e:.3g} over {la.size} logits ({len(W)} tensors bit-exact, "
          f"{cfg['n_heads']}/{cfg['n_kv_heads']} heads, {'tied' if cfg['tied_embeddings'] else 'untied'})")


# ---------------------------------------------------------------- case B: HF -> FLaS

def random_hf(rng, c):
    """Random float32 HF weights for shape dict c (dim, layers, heads, kv, hidden, vocab, tied)."""
    D, hd = c["dim"], c["dim"] // c["heads"]
    W = {"model.embed_tokens.weight": rng.normal(0, 1.0, (c["vocab"], D))}
    for i in range(c["layers"]):
        p = f"model.layers.{i}."
        W[p + "input_layernorm.weight"] = 1 + 0.2 * rng.normal(size=D)
        W[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.3, (c["heads"] * hd, D))
        W[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.3, (c["kv"] * hd, D))
        W[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.2, (c["kv"] * hd, D))
        W[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.2, (D, c["heads"] * hd))
        W[p + "post_attention_layernorm.weight"] = 1 + 0.2 * rng.normal(size=D)
        W[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.2, (c["hidden"], D))
        W[p + "mlp.up_proj.weight"] = rng.normal(0, 0.2, (c["hidden"], D))
        W[p + "mlp.down_proj.weight"] = rng.normal(0, 0.2, (D, c["hidden"]))
    W["model.norm.weight"] = 1 + 0.2 * rng.normal(size=D)
    if not c["tied"]:
        W["lm_head.weight"] = rng.normal(0, 0.2, (c["vocab"], D))
    return {k: v.astype(np.float32) for k, v in W.items()}


def encode(W32, dt):
    """float32 -> (raw arrays for safetensors, dequantised float32 values); dt: a dtype, or
    "MIXED" (norms F32, matrices BF16, as some published checkpoints are)."""
    raw, deq = {}, {}
    for k, a in W32.items():
        t = ("F32" if a.ndim == 1 else "BF16") if dt == "MIXED" else dt
        r = {"F32": lambda x: x, "F16": lambda x: x.astype(np.float16), "BF16": bf16_bits}[t](a)
        raw[k], deq[k] = (t, r), dequant(t, r)
    return raw, deq


def write_hf_dir(d, config, raw, n_shards, tokenizer=None, plain=False, rng=None):
    """plain: no __metadata__, unpadded headers, tensors shuffled across the shards (valid, unusual)."""
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    names = list(raw)
    meta, pad = (None, False) if plain else ({"format": "pt"}, True)
    if plain:
        rng.shuffle(names)
    if n_shards == 1:
        st_write(os.path.join(d, "model.safetensors"), {n: raw[n] for n in names}, meta, pad)
    else:
        chunks = np.array_split(np.arange(len(names)), n_shards)
        wm, total = {}, 0
        for k, ix in enumerate(chunks):
            fn = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
            part = {names[j]: raw[names[j]] for j in ix}
            st_write(os.path.join(d, fn), part, meta, pad)
            for n, (_, a) in part.items():
                wm[n] = fn
                total += a.nbytes
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)
    if tokenizer:
        shutil.copyfile(tokenizer, os.path.join(d, "tokenizer.model"))


def hf_config(c, torch_dtype, eps, theta, style="full"):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
           "hidden_size": c["dim"], "intermediate_size": c["hidden"], "num_hidden_layers": c["layers"],
           "num_attention_heads": c["heads"], "num_key_value_heads": c["kv"], "rms_norm_eps": eps,
           "rope_theta": theta, "max_position_embeddings": c["seq"], "vocab_size": c["vocab"],
           "tie_word_embeddings": c["tied"], "torch_dtype": torch_dtype, "bos_token_id": 1, "eos_token_id": 2,
           "initializer_range": 0.02, "use_cache": True, "transformers_version": "4.40.0"}
    if style == "llama2-7b-hf":      # meta-llama/Llama-2-7b-hf's config.json keys: no rope_theta
        del cfg["rope_theta"]
        cfg.update({"pretraining_tp": 1, "rope_scaling": None, "transformers_version": "4.31.0.dev0"})
    elif style == "old":             # transformers < 4.31 (huggyllama): no kv heads, theta or tying keys
        for k in ("rope_theta", "num_key_value_heads", "tie_word_embeddings"):
            del cfg[k]
        cfg["transformers_version"] = "4.28.0.dev0"
    return cfg


def case_b(conv, work, name, c, dt, n_shards, eps, theta, style, rng, tokenizer, plain=False):
    d = os.path.join(work, "B-" + name)
    os.makedirs(d)
    hfdir, out = os.path.join(d, "hf"), os.path.join(d, "flas.h5")
    W32 = random_hf(rng, c)
    raw, deq = encode(W32, dt)
    if style == "llama2-7b-hf":
        # checkpoints saved before transformers 4.32 hold the RoPE buffer rotary_emb.inv_freq per layer;
        # HF ignores it on load, and so must the import
        hd = c["dim"] // c["heads"]
        inv = (1.0 / (theta ** (np.arange(0, hd, 2) / hd))).astype(np.float32)
        for i in range(c["layers"]):
            r, q = encode({"inv_freq": inv}, dt)
            raw[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = r["inv_freq"]
            deq[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = q["inv_freq"]
    config = hf_config(c, {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "MIXED": "bfloat16"}[dt],
                       eps, theta, style)
    write_hf_dir(hfdir, config, raw, n_shards, tokenizer, plain, rng)
    # the writer is checked by the reader the export test relies on
    rc, rW, rdt, files = hf_read_dir(hfdir)
    check(len(files) == n_shards and all(bits_equal(rW[k], deq[k]) for k in deq), f"{name}: test writer broken")

    run([conv, "--quiet", hfdir, out])
    no_leftovers(d, ["hf", "flas.h5"])
    cfg, params, attrs = h5_read(out)
    want = {"dim": c["dim"], "n_layers": c["layers"], "n_heads": c["heads"], "n_kv_heads": c["kv"],
            "hidden_dim": c["hidden"], "vocab_size": c["vocab"], "seq_len": c["seq"], "tied_embeddings": int(c["tied"])}
    for k, v in want.items():
        check(cfg[k] == v, f"{name}: imported {k} = {cfg[k]}, expected {v}")
    check(np.float32(attrs["norm_eps"]) == np.float32(eps), f"{name}: norm_eps {attrs['norm_eps']} != {eps}")
    check(np.float32(attrs["rope_theta"]) == np.float32(theta),
          f"{name}: rope_theta {attrs['rope_theta']} != {theta}")
    check(attrs["role"] == "global" and int(attrs["round"]) == 0,
          f"{name}: role {attrs['role']} round {attrs['round']}")
    check(attrs["rope_convention"] == "meta-interleaved", f"{name}: rope_convention {attrs['rope_convention']}")

    names = meta_tensor_names(c["layers"], c["tied"])
    check(set(params) == set(names), f"{name}: imported tensors differ: {sorted(set(params) ^ set(names))}")
    # first the forward passes (the oracle), then the exact values
    ids = token_ids(rng, c["vocab"], c["seq"])
    la = meta_logits(out, ids)
    lb = hf_logits(config, deq, ids)
    e = rel_err(la, lb)
    check(e <= REL_TOL, f"{name}: Meta forward on the import differs from the HF forward: relative {e:.3g}")
    for n in names:
        exp = deq[hf_name(n)]
        if n.endswith("attention.wq.weight"):
            exp = hf_to_meta_rows(exp, c["heads"])
        elif n.endswith("attention.wk.weight"):
            exp = hf_to_meta_rows(exp, c["kv"])
        check(bits_equal(params[n], exp), f"{name}: imported {n} is not the exact un-permuted {hf_name(n)} "
                                          f"({np.sum(params[n] != exp)} of {exp.size} elements differ)")

    print(f"ok B {name}: {dt} in {n_shards} file{'s' if n_shards > 1 else ''} ({style} config"
          f"{'; shuffled, unpadded, no __metadata__' if plain else ''}"
          f"{'; rotary_emb.inv_freq ignored' if style == 'llama2-7b-hf' else ''}), imported "
          f"{len(names)} tensors bit-exact (dequantised, un-permuted); Meta oracle on the import == HF forward "
          f"on the directory: max rel diff {e:.3g} over {la.size} logits")


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__)
        return 2
    conv, train, work = sys.argv[1:4]
    tok = sys.argv[4] if len(sys.argv) == 5 else None
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rng = np.random.default_rng(20261203)
    torch.set_num_threads(2)
    failures = []

    def attempt(label, fn, *args):
        try:
            fn(*args)
        except Fail as e:
            failures.append(f"{label}: {e}")
            print(f"FAIL {label}: {e}")

    attempt("A untied-gqa", case_a, conv, train, work, "untied-gqa",
            ["--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--hidden", "192", "--vocab", "128",
             "--seq-len", "64", "--seed", "3"], rng, True)
    attempt("A stories260K", case_a, conv, train, work, "stories260K-tied-gqa",
            ["--model", "stories260K", "--seed", "4"], rng, False)
    attempt("A mha-theta", case_a, conv, train, work, "mha-theta5e5",
            ["--dim", "48", "--layers", "1", "--heads", "3", "--kv-heads", "3", "--hidden", "96", "--vocab", "96",
             "--seq-len", "32", "--rope-theta", "500000", "--norm-eps", "1e-6", "--untied", "--seed", "5"], rng, True)

    eps = 2.0 ** -17  # exact in float32: the import's float32 attribute is the config's value
    gqa = {"dim": 64, "layers": 2, "heads": 4, "kv": 2, "hidden": 160, "vocab": 100, "seq": 96, "tied": False}
    attempt("B f32", case_b, conv, work, "f32-untied-gqa", gqa, "F32", 1, eps, 10000.0, "full", rng, tok)
    attempt("B bf16", case_b, conv, work, "bf16-sharded-tied-gqa", dict(gqa, tied=True, heads=8, kv=2, layers=3),
            "BF16", 3, eps, 500000.0, "full", rng, None)
    attempt("B f16", case_b, conv, work, "f16-mha-untied", dict(gqa, heads=4, kv=4), "F16", 1, 1e-5, 10000.0,
            "full", rng, tok)
    attempt("B llama2-config", case_b, conv, work, "f16-llama2-7b-hf-config", dict(gqa, heads=4, kv=4), "F16", 2,
            1e-5, 10000.0, "llama2-7b-hf", rng, None)
    attempt("B mixed", case_b, conv, work, "mixed-f32-bf16-shuffled-4-shards", dict(gqa, tied=True), "MIXED", 4,
            eps, 10000.0, "full", rng, None, True)
    attempt("B old-config", case_b, conv, work, "f32-pre-4.31-config", dict(gqa, heads=2, kv=2, dim=32), "F32", 1,
            1e-6, 10000.0, "old", rng, None)

    if failures:
        print(f"FAIL: {len(failures)} case(s) failed")
        return 1
    print("PASS: HF-layout oracle (export and import)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
