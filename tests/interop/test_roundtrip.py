#!/usr/bin/python3
"""Round trips through flas-convert, bit-exact in float32, and the files on the way read independently.

For FLaS checkpoints (untied GQA; tied GQA shaped like stories260K; MHA with rope_theta 5e5 and norm_eps
1e-6; a copy of the first with edge values: -0.0, float32 subnormals, float16 subnormals and underflow,
bf16 and f16 rounding ties, 65504):
  HDF5 -> hf (f32) -> HDF5, HDF5 -> gguf (f32) -> HDF5, HDF5 -> llama2c v0 and v1 -> HDF5: every tensor
  bit-identical (uint32 view), the config attributes equal, the imports identical to each other;
  hf --dtype bf16 / f16 -> HDF5: equal to the original rounded (bf16: round to nearest even, computed
  here on the bits; f16: numpy astype), exactly;
  hf --shard-size 500k (one tensor is exactly 500k) or 200k: >= 3 shards + index, each shard at most that
  many bytes of tensor data unless it holds a single larger tensor (as HF shards); bit-exact;
  hf with --tokenizer: tokenizer.model copied byte for byte; hf dir -> gguf takes it from there;
  flas-train --init --init-from SRC (hf dir, gguf, llama2c) == flas-convert SRC X.h5;
  gguf -> hf, hf -> gguf, hf -> hf bf16, llama2c -> gguf / hf, hf / gguf -> llama2c: byte-identical to the
  exports from the HDF5 (the converter is deterministic and goes through the same tensors).
The intermediate files are parsed here, independently of FLaS: safetensors (json + numpy, HF names and
half-split wq/wk rows), GGUF v3 (header, metadata, tensor infos, alignment, llama.cpp names, Meta row
order, the vocabulary equal to the SentencePiece model's), llama.2c v0 (7-int header, negative vocab when
untied, freq_cis tables) and v1 ("ak42", 256-byte header, norms first). Every output directory holds
exactly the expected files (no temporary left).
llama2.c files cannot carry rope_theta / norm_eps: for the MHA model (non-default values) the llama2c export
must be refused with one line and leave nothing.

usage: test_roundtrip.py FLAS_CONVERT FLAS_TRAIN WORKDIR TOKENIZER.model
"""
import filecmp
import json
import os
import shutil
import struct
import sys

import h5py
import numpy as np
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_hf_oracle import (CONFIG_FLOATS, CONFIG_INTS, Fail, bf16_bits, bits_equal, check, h5_read,  # noqa: E402
                            hf_name, hf_read_dir, meta_to_hf_rows, no_leftovers, rescale, run, st_read)



def compare_h5(a_path, b_path, what, expect=None):
    """b_path equals a_path (or the arrays in expect) bit for bit, and the configs are equal."""
    ca, pa, aa = h5_read(a_path)
    cb, pb, ab = h5_read(b_path)
    want = expect if expect is not None else pa
    check(set(pb) == set(want), f"{what}: tensors differ: {sorted(set(pb) ^ set(want))}")
    bad = [n for n in want if not bits_equal(pb[n], want[n])]
    if bad:
        x, y = pb[bad[0]], np.asarray(want[bad[0]], np.float32)
        detail = (f"{int(np.sum(x.view(np.uint32) != y.view(np.uint32)))} of {y.size} elements"
                  if x.shape == y.shape else f"shape {x.shape} vs {y.shape}")
        raise Fail(f"{what}: {len(bad)} tensors differ, e.g. {bad[:3]} ({bad[0]}: {detail})")
    for k in CONFIG_INTS:
        check(int(aa[k]) == int(ab[k]), f"{what}: {k} {ab[k]} != {aa[k]}")
    for k in CONFIG_FLOATS:
        check(np.float32(aa[k]).view(np.uint32) == np.float32(ab[k]).view(np.uint32), f"{what}: {k} {ab[k]} != {aa[k]}")
    for k, v in (("format", "flas-checkpoint"), ("format_version", 1), ("rope_convention", "meta-interleaved"),
                 ("role", "global"), ("round", 0), ("complete", 1)):
        check(k in ab and ab[k] == v, f"{what}: attribute {k} = {ab.get(k)!r}, expected {v!r}")
    return sum(a.size for a in pb.values())


def permuted(params, cfg):
    """Meta params -> {HF name: float32 in HF row order}."""
    out = {}
    for n, a in params.items():
        if n.endswith("attention.wq.weight"):
            a = meta_to_hf_rows(a, cfg["n_heads"])
        elif n.endswith("attention.wk.weight"):
            a = meta_to_hf_rows(a, cfg["n_kv_heads"])
        out[hf_name(n)] = a
    return out


# ---------------------------------------------------------------- GGUF v3, read independently

GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_read(path):
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return v

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode("utf-8")
        pos += n
        return s

    def value(t):
        if t in GGUF_SCALAR:
            return take(GGUF_SCALAR[t])
        if t == 8:
            return string()
        if t == 9:
            it, n = take("I"), take("Q")
            return [value(it) for _ in range(n)]
        raise Fail(f"{path}: metadata value type {t}")

    check(data[:4] == b"GGUF", f"{path}: magic {data[:4]!r}")
    pos = 4
    version, n_t, n_kv = take("I"), take("Q"), take("Q")
    check(version == 3, f"{path}: GGUF version {version}")
    kv, types = {}, {}
    for _ in range(n_kv):
        k = string()
        t = take("I")
        check(k not in kv, f"{path}: key {k} twice")
        kv[k], types[k] = value(t), t
    infos = []
    for _ in range(n_t):
        name = string()
        nd = take("I")
        dims = [take("Q") for _ in range(nd)]
        infos.append((name, dims, take("I"), take("Q")))
    align = kv.get("general.alignment", 32)
    base = pos + (-pos % align)
    tensors, spans = {}, []
    for name, dims, t, off in infos:
        check(t == 0, f"{path}: {name} has ggml type {t}, expected 0 (F32)")
        check(off % align == 0, f"{path}: {name} at offset {off}, not a multiple of {align}")
        count = int(np.prod(dims, dtype=np.int64))
        check(base + off + 4 * count <= len(data), f"{path}: {name} beyond the end of the file")
        spans.append((off, off + 4 * count, name))
        tensors[name] = np.frombuffer(data, "<f4", count, base + off).reshape(list(reversed(dims)))
    end = 0
    for b, e, name in sorted(spans):
        check(b >= end, f"{path}: {name} overlaps the previous tensor")
        end = e
    return kv, types, tensors


def gguf_name(meta):
    if meta in ("tok_embeddings.weight", "norm.weight", "output.weight"):
        return {"tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
                "output.weight": "output.weight"}[meta]
    p = meta.split(".")
    m = {"attention_norm": "attn_norm", "attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
         "attention.wo": "attn_output", "ffn_norm": "ffn_norm", "feed_forward.w1": "ffn_gate",
         "feed_forward.w2": "ffn_down", "feed_forward.w3": "ffn_up"}[".".join(p[2:-1])]
    return f"blk.{p[1]}.{m}.weight"


def check_gguf(path, cfg, params, sp):
    kv, types, tensors = gguf_read(path)
    hd = cfg["dim"] // cfg["n_heads"]
    want = {"general.architecture": "llama", "llama.context_length": cfg["seq_len"],
            "llama.embedding_length": cfg["dim"], "llama.block_count": cfg["n_layers"],
            "llama.feed_forward_length": cfg["hidden_dim"], "llama.attention.head_count": cfg["n_heads"],
            "llama.attention.head_count_kv": cfg["n_kv_heads"], "llama.rope.dimension_count": hd,
            "tokenizer.ggml.model": "llama"}
    for k, v in want.items():
        check(kv.get(k) == v, f"{path}: {k} = {kv.get(k)!r}, expected {v!r}")
    for k in ("llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base"):
        check(types.get(k) == 6, f"{path}: {k} missing or not float32")
    check(np.float32(kv["llama.attention.layer_norm_rms_epsilon"]) == np.float32(cfg["norm_eps"]), f"{path}: eps")
    check(np.float32(kv["llama.rope.freq_base"]) == np.float32(cfg["rope_theta"]), f"{path}: freq_base")
    if "llama.vocab_size" in kv:
        check(kv["llama.vocab_size"] == cfg["vocab_size"], f"{path}: llama.vocab_size {kv['llama.vocab_size']}")
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    check(kv.get("tokenizer.ggml.tokens") == pieces, f"{path}: tokenizer.ggml.tokens differ from the model's pieces")
    scores = np.array(kv.get("tokenizer.ggml.scores", []), np.float32)
    check(bits_equal(scores, np.array([sp.get_score(i) for i in range(len(pieces))], np.float32)),
          f"{path}: tokenizer.ggml.scores differ")
    names = {gguf_name(n): n for n in params}
    check(set(tensors) == set(names), f"{path}: tensors differ: {sorted(set(tensors) ^ set(names))}")
    for g, n in names.items():          # Meta row order (llama.cpp's), no permutation
        check(bits_equal(tensors[g], params[n]), f"{path}: {g} differs from {n}")


# ---------------------------------------------------------------- llama2.c, read independently

def llama2c_expected(path, cfg, params, version):
    """The file llama2.c's export.py writes (legacy_export / version1_export), compared byte for byte
    except v0's freq_cis tables, which are compared with float64 cos/sin to 1e-4."""
    with open(path, "rb") as f:
        data = f.read()
    L, tied = cfg["n_layers"], cfg["tied_embeddings"]
    hd = cfg["dim"] // cfg["n_heads"]
    hdr7 = [cfg["dim"], cfg["hidden_dim"], L, cfg["n_heads"], cfg["n_kv_heads"], cfg["vocab_size"], cfg["seq_len"]]
    per = lambda t: [params[f"layers.{i}.{t}.weight"] for i in range(L)]  # noqa: E731
    if version == 0:
        hdr7[5] = hdr7[5] if tied else -hdr7[5]
        head = struct.pack("<7i", *hdr7)
        body = [params["tok_embeddings.weight"], *per("attention_norm"), *per("attention.wq"), *per("attention.wk"),
                *per("attention.wv"), *per("attention.wo"), *per("ffn_norm"), *per("feed_forward.w1"),
                *per("feed_forward.w2"), *per("feed_forward.w3"), params["norm.weight"]]
        tail = [] if tied else [params["output.weight"]]
        nf = cfg["seq_len"] * hd // 2
    else:
        head = struct.pack("<Ii7iB", 0x616B3432, 1, *hdr7, int(bool(tied)))
        head += b"\0" * (256 - len(head))
        body = [*per("attention_norm"), *per("ffn_norm"), params["norm.weight"], params["tok_embeddings.weight"],
                *per("attention.wq"), *per("attention.wk"), *per("attention.wv"), *per("attention.wo"),
                *per("feed_forward.w1"), *per("feed_forward.w2"), *per("feed_forward.w3")]
        tail = [] if tied else [params["output.weight"]]
        nf = 0
    pre = head + b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in body)
    post = b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in tail)
    size = len(pre) + 8 * nf + len(post)
    check(len(data) == size, f"{path}: {len(data)} bytes, expected {size}")
    check(data[:len(head)] == head, f"{path}: header {data[:len(head)]!r}, expected {head!r}")
    check(data[:len(pre)] == pre, f"{path}: weights differ from llama2.c's layout (version {version})")
    check(data[len(pre) + 8 * nf:] == post, f"{path}: classifier differs")
    if nf:
        fc = np.frombuffer(data, "<f4", 2 * nf, len(pre)).reshape(2, cfg["seq_len"], hd // 2).astype(np.float64)
        freqs = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2)[: hd // 2] / hd))
        ang = np.outer(np.arange(cfg["seq_len"]), freqs)
        err = max(np.max(np.abs(fc[0] - np.cos(ang))), np.max(np.abs(fc[1] - np.sin(ang))))
        check(err < 1e-4, f"{path}: freq_cis_real/imag differ from cos/sin by {err:.3g}")


# ---------------------------------------------------------------- the checks

def edge_values():
    """float32 values at the edges of bf16/f16 rounding; all finite and within f16 range."""
    bits = [0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF, 0xBF818000, 0xBF808000, 0x3FFFFFFF, 0x80000000,
            0x00000000, 0x00000001, 0x80000001, 0x00400000, 0x007FFFFF, 0x00808000, 0x00818000]
    vals = np.array(bits, np.uint32).view(np.float32).tolist()
    vals += [1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, -(1 + 2.0 ** -11), 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -24,
             3 * 2.0 ** -25, 1e-6, -1e-6, 1e-9, -1e-9, 6.1035156e-05, 6.09e-05, 65504.0, -65504.0, 65519.0,
             -65519.0, 0.1, 1.0 / 3]
    return np.array(vals, np.float32)


def make_edge(src, dst):
    shutil.copyfile(src, dst)
    ev = edge_values()
    with h5py.File(dst, "r+") as f:
        e = f["params/tok_embeddings.weight"]
        row = e[3]
        row[: len(ev)] = ev
        e[3] = row
        n = f["params/layers.1.ffn_norm.weight"]
        a = n[...]
        a[: len(ev)] = ev[::-1]
        n[...] = a
        q = f["params/layers.0.attention.wq.weight"]
        a = q[...]
        a[:, 5] = ev[np.arange(a.shape[0]) % len(ev)]
        q[...] = a


def roundtrip_model(conv, train, work, name, init_args, tok, sp, rng, shard, llama2c=True, edge=False):
    d = os.path.join(work, name)
    os.makedirs(d)
    j = lambda *p: os.path.join(d, *p)  # noqa: E731
    run([train, "--init", *init_args, "--output", j("init.h5")])
    # distinct random values in every tensor, norms included (flas-train sets them all to 1, which would
    # hide a mix-up between norm tensors)
    rescale(j("init.h5"), rng)
    if edge:
        make_edge(j("init.h5"), j("src.h5"))
        os.remove(j("init.h5"))
    else:
        os.rename(j("init.h5"), j("src.h5"))
    cfg, params, _ = h5_read(j("src.h5"))
    what = f"{name} ({cfg['n_heads']}/{cfg['n_kv_heads']} heads, {'tied' if cfg['tied_embeddings'] else 'untied'})"
    files = ["src.h5"]
    imports = {}

    # hf f32, with the tokenizer copied through
    run([conv, "--quiet", "--tokenizer", tok, j("src.h5"), j("hf")])
    no_leftovers(j("hf"), ["config.json", "model.safetensors", "tokenizer.model"])
    check(filecmp.cmp(tok, j("hf", "tokenizer.model"), shallow=False), f"{what}: tokenizer.model not copied exactly")
    config, W, dts, _ = hf_read_dir(j("hf"))
    want = permuted(params, cfg)
    check(set(W) == set(want), f"{what}: hf tensors differ: {sorted(set(W) ^ set(want))}")
    check(all(dts[k] == "F32" and bits_equal(W[k], want[k]) for k in want), f"{what}: hf f32 tensors not bit-exact")
    run([conv, "--quiet", j("hf"), j("from-hf.h5")])
    n = compare_h5(j("src.h5"), j("from-hf.h5"), f"{what}: hdf5 -> hf -> hdf5")
    imports["hf"] = j("from-hf.h5")
    files += ["hf", "from-hf.h5"]
    print(f"ok {what}: hdf5 -> hf f32 -> hdf5 bit-exact ({n} values, {len(W)} tensors; config equal; "
          f"tokenizer.model copied)")

    # gguf f32 from the HDF5 (--tokenizer) and from the hf dir (its tokenizer.model)
    run([conv, "--quiet", "--tokenizer", tok, j("src.h5"), j("m.gguf")])
    check_gguf(j("m.gguf"), cfg, params, sp)
    run([conv, "--quiet", j("m.gguf"), j("from-gguf.h5")])
    compare_h5(j("src.h5"), j("from-gguf.h5"), f"{what}: hdf5 -> gguf -> hdf5")
    run([conv, "--quiet", j("hf"), j("hf.gguf")])
    check_gguf(j("hf.gguf"), cfg, params, sp)
    run([conv, "--quiet", j("hf.gguf"), j("from-hf-gguf.h5")])
    compare_h5(j("src.h5"), j("from-hf-gguf.h5"), f"{what}: hf -> gguf -> hdf5")
    imports["gguf"] = j("from-gguf.h5")
    files += ["m.gguf", "from-gguf.h5", "hf.gguf", "from-hf-gguf.h5"]
    print(f"ok {what}: hdf5 -> gguf f32 -> hdf5 and hf -> gguf -> hdf5 bit-exact; the GGUF read here has "
          f"llama.cpp names, Meta row order, the hyper-parameters and the {sp.get_piece_size()} pieces")

    # llama2.c v0 and v1
    if llama2c:
        for v in (0, 1):
            b = j(f"v{v}.bin")
            run([conv, "--quiet", "--llama2c-version", str(v), j("src.h5"), b])
            llama2c_expected(b, cfg, params, v)
            run([conv, "--quiet", b, j(f"from-v{v}.h5")])
            compare_h5(j("src.h5"), j(f"from-v{v}.h5"), f"{what}: hdf5 -> llama2c v{v} -> hdf5")
            files += [f"v{v}.bin", f"from-v{v}.h5"]
        run([conv, "--quiet", j("src.h5"), j("default.bin")])
        with open(j("default.bin"), "rb") as f:
            check(struct.unpack("<Ii", f.read(8)) == (0x616B3432, 1), f"{what}: default llama2c output is not v1")
        files.append("default.bin")
        imports["llama2c"] = j("from-v1.h5")
        print(f"ok {what}: hdf5 -> llama2c v0 and v1 -> hdf5 bit-exact; both files byte-identical to llama2.c's "
              f"export.py layout (v0 freq_cis within 1e-4); default version 1")

    else:
        # llama2.c cannot carry this rope_theta / norm_eps: refused with one line, nothing written
        p = run([conv, "--quiet", j("src.h5"), j("v1.bin")], expect_rc=1)
        lines = p.stderr.strip().splitlines()
        check(len(lines) == 1 and lines[0].startswith("flas-convert: error: "),
              f"{what}: llama2c refusal printed {p.stderr!r}")
        no_leftovers(d, files)
        print(f"ok {what}: llama2c export refused (rc 1, one line: {lines[0][len('flas-convert: error: '):]!r}), "
              f"nothing left behind")

    # the imports from every format are identical to each other
    names = list(imports)
    for k in names[1:]:
        compare_h5(imports[names[0]], imports[k], f"{what}: import from {names[0]} vs from {k}")
    print(f"ok {what}: imports from {', '.join(names)} identical tensors and config")

    # hf bf16 / f16: equal to the original rounded, exactly
    for dt, tdt, ext in (("bf16", "bfloat16", "BF16"), ("f16", "float16", "F16")):
        out = j(f"hf-{dt}")
        run([conv, "--quiet", "--dtype", dt, j("src.h5"), out])
        no_leftovers(out, ["config.json", "model.safetensors"])
        config, W, dts, _ = hf_read_dir(out)
        check(config.get("torch_dtype") == tdt, f"{what}: {dt} export has torch_dtype {config.get('torch_dtype')}")
        check(set(dts.values()) == {ext}, f"{what}: {dt} export holds dtypes {sorted(set(dts.values()))}")
        if dt == "bf16":
            rounded = {k: (bf16_bits(a).astype(np.uint32) << 16).view(np.float32) for k, a in params.items()}
        else:
            rounded = {k: a.astype(np.float16).astype(np.float32) for k, a in params.items()}
        want = permuted(rounded, cfg)
        bad = [k for k in want if not bits_equal(W[k], want[k])]
        check(not bad, f"{what}: {dt} export differs from the original rounded in {bad[:3]}")
        run([conv, "--quiet", out, j(f"from-hf-{dt}.h5")])
        n = compare_h5(j("src.h5"), j(f"from-hf-{dt}.h5"), f"{what}: hdf5 -> hf {dt} -> hdf5", expect=rounded)
        changed = sum(int(np.sum(rounded[k].view(np.uint32) != params[k].view(np.uint32))) for k in params)
        files += [f"hf-{dt}", f"from-hf-{dt}.h5"]
        print(f"ok {what}: hdf5 -> hf {dt} -> hdf5 == original rounded "
              f"({'round to nearest even' if dt == 'bf16' else 'numpy float16'}), {n} values exact, "
              f"{changed} changed by the rounding")

    # conversions between the foreign formats give the same bytes as the direct exports
    def same_bytes(a, b, label):
        check(filecmp.cmp(j(a), j(b), shallow=False), f"{what}: {label}: {a} differs from {b} byte for byte")
    run([conv, "--quiet", j("m.gguf"), j("gguf-hf")])
    no_leftovers(j("gguf-hf"), ["config.json", "model.safetensors"])
    for fn in ("config.json", "model.safetensors"):
        same_bytes(f"gguf-hf/{fn}", f"hf/{fn}", "gguf -> hf")
    same_bytes("hf.gguf", "m.gguf", "hf (with tokenizer.model) -> gguf")
    run([conv, "--quiet", "--dtype", "bf16", j("hf"), j("hf-hf-bf16")])
    same_bytes("hf-hf-bf16/model.safetensors", "hf-bf16/model.safetensors", "hf -> hf bf16")
    files += ["gguf-hf", "hf-hf-bf16"]
    pairs = ["gguf -> hf", "hf -> gguf", "hf -> hf bf16"]
    if llama2c:
        run([conv, "--quiet", "--tokenizer", tok, j("v0.bin"), j("v0.gguf")])
        same_bytes("v0.gguf", "m.gguf", "llama2c v0 -> gguf")
        run([conv, "--quiet", j("v1.bin"), j("v1-hf")])
        for fn in ("config.json", "model.safetensors"):
            same_bytes(f"v1-hf/{fn}", f"hf/{fn}", "llama2c v1 -> hf")
        run([conv, "--quiet", j("hf"), j("hf-v1.bin")])
        same_bytes("hf-v1.bin", "v1.bin", "hf -> llama2c")
        run([conv, "--quiet", "--llama2c-version", "0", j("m.gguf"), j("gguf-v0.bin")])
        same_bytes("gguf-v0.bin", "v0.bin", "gguf -> llama2c v0")
        files += ["v0.gguf", "v1-hf", "hf-v1.bin", "gguf-v0.bin"]
        pairs += ["llama2c v0 -> gguf", "llama2c v1 -> hf", "hf -> llama2c v1", "gguf -> llama2c v0"]
    print(f"ok {what}: {', '.join(pairs)}: byte-identical to the exports from the HDF5")

    # sharded hf
    out = j("hf-sharded")
    shard_bytes = int(shard[:-1]) * 1024 if shard.endswith("k") else int(shard)
    run([conv, "--quiet", "--shard-size", shard, j("src.h5"), out])
    listing = sorted(os.listdir(out))
    shards = [f for f in listing if f.endswith(".safetensors")]
    k = len(shards)
    check(k >= 3, f"{what}: --shard-size {shard} gave {k} shard(s): {listing}")
    no_leftovers(out, ["config.json", "model.safetensors.index.json"] +
                 [f"model-{i:05d}-of-{k:05d}.safetensors" for i in range(1, k + 1)])
    with open(os.path.join(out, "model.safetensors.index.json")) as f:
        index = json.load(f)
    total, largest = 0, 0
    for s in shards:
        _, t = st_read(os.path.join(out, s))
        size = sum(a.nbytes for _, a in t.values())
        # HF's rule: a file exceeds the limit only when it holds one tensor larger than the limit
        check(0 < size <= shard_bytes or len(t) == 1, f"{what}: {s} holds {size} bytes in {len(t)} tensors "
                                                      f"(limit {shard_bytes})")
        largest = max(largest, size if len(t) == 1 else 0)
        total += size
    check(index.get("metadata", {}).get("total_size") == total,
          f"{what}: index total_size {index.get('metadata', {}).get('total_size')}, shards hold {total}")
    config, W, dts, _ = hf_read_dir(out)
    want = permuted(params, cfg)
    check(all(bits_equal(W[k2], want[k2]) for k2 in want) and set(W) == set(want), f"{what}: sharded tensors differ")
    run([conv, "--quiet", out, j("from-sharded.h5")])
    n = compare_h5(j("src.h5"), j("from-sharded.h5"), f"{what}: hdf5 -> sharded hf -> hdf5")
    files += ["hf-sharded", "from-sharded.h5"]
    print(f"ok {what}: --shard-size {shard}: {k} shards + index (total_size {total}, each <= {shard_bytes} bytes"
          f"{f' or one tensor alone, largest {largest}' if largest > shard_bytes else ''}), "
          f"hdf5 -> hf -> hdf5 bit-exact")

    # flas-train --init --init-from SRC == flas-convert SRC
    for src, conv_out in (("hf", "from-hf.h5"), ("m.gguf", "from-gguf.h5")) + ((("v1.bin", "from-v1.h5"),
                                                                               ("v0.bin", "from-v0.h5"))
                                                                              if llama2c else ()):
        g = j(f"init-from-{src.replace('.', '-')}.h5")
        run([train, "--init", "--init-from", j(src), "--output", g])
        compare_h5(j(conv_out), g, f"{what}: flas-train --init --init-from {src} vs flas-convert")
        files.append(os.path.basename(g))
    print(f"ok {what}: flas-train --init --init-from (hf, gguf{', llama2c v1, v0' if llama2c else ''}) == "
          f"flas-convert's import")
    no_leftovers(d, files)


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        return 2
    conv, train, work, tok = sys.argv[1:]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    sp = spm.SentencePieceProcessor(model_file=tok)
    V = str(sp.get_piece_size())
    rng = np.random.default_rng(20261204)
    failures = []
    models = [
        ("untied-gqa", ["--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--hidden", "192",
                        "--vocab", V, "--seq-len", "64", "--seed", "3", "--untied"], {"shard": "500k"}),
        ("tied-gqa-stories260K", ["--model", "stories260K", "--vocab", V, "--seq-len", "128", "--seed", "5"],
         {"shard": "500k"}),
        ("mha-theta5e5-eps1e-6", ["--dim", "48", "--layers", "1", "--heads", "3", "--kv-heads", "3", "--hidden", "96",
                                  "--vocab", V, "--seq-len", "32", "--rope-theta", "500000", "--norm-eps", "1e-6",
                                  "--untied", "--seed", "7"], {"llama2c": False, "shard": "200k"}),
        ("edge-values", ["--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--hidden", "192",
                         "--vocab", V, "--seq-len", "64", "--seed", "9", "--tied"], {"edge": True, "shard": "200k"}),
    ]
    for name, args, kw in models:
        try:
            roundtrip_model(conv, train, work, name, args, tok, sp, rng, **kw)
        except Fail as e:
            failures.append(f"{name}: {e}")
            print(f"FAIL {name}: {e}")
    if failures:
        print(f"FAIL: {len(failures)} model(s) failed")
        return 1
    print("PASS: round trips bit-exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
