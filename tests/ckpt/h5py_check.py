#!/usr/bin/python3
"""Oracle: h5py (an independent HDF5 reader) reads EVERY tensor and EVERY attribute of a fixture
checkpoint written by the C library and checks them against values computed here from scratch:
the tensor names/shapes from the LLaMA layout, the element values from the fixture formula
(tests/ckpt/ckpt_fixture.h), the attributes from the documented schema (docs/checkpoint-format.md).
Usage: h5py_check.py FILE GEN [all|optimizer]   (exit 0 only if everything matches)"""
import hashlib
import os
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
from flas_tensors import meta_tensors  # noqa: E402  (names/shapes in the order of runtime/model_config.c)

SECTIONS = {"params": 0, "optimizer/m": 1, "optimizer/v": 2, "server/m": 3, "server/v": 4}
CFG = dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, hidden_dim=172, vocab_size=512, seq_len=512,
           tied_embeddings=0)


def expected(section, tensor, shape, gen):
    n = int(np.prod(shape))
    elem = np.arange(n, dtype=np.int64)
    k = (tensor * 7919 + elem * 31 + section * 104729 + gen * 1000003) % 65521
    return (k.astype(np.float64) / 256.0 - 128.0).astype(np.float32).reshape(shape)


failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def check_attrs(obj, want, where):
    """Every attribute present is expected (and equal), and every expected one is present."""
    have = set(obj.attrs.keys())
    check(have == set(want), f"{where}: attributes {sorted(have ^ set(want))} differ from the schema")
    for name, (value, dtype) in want.items():
        if name not in obj.attrs:
            continue
        got = obj.attrs[name]
        if dtype == "str":
            ok = isinstance(got, str) and got == value
        elif dtype == "str[]":
            ok = list(got) == list(value)
        elif value is None:
            ok = np.asarray(got).dtype == np.dtype(dtype)
        else:
            arr = np.asarray(got)
            ok = arr.dtype == np.dtype(dtype) and np.array_equal(arr, np.asarray(value, dtype=dtype))
        check(ok, f"{where}: attribute {name} = {got!r}, expected {value!r} ({dtype})")


def main():
    path, gen = sys.argv[1], int(sys.argv[2])
    kind = sys.argv[3] if len(sys.argv) > 3 else "all"
    f = h5py.File(path, "r")
    root = {
        "format": ("flas-checkpoint", "str"), "format_version": (1, "<i4"),
        "rope_convention": ("meta-interleaved", "str"),
        "dim": (CFG["dim"], "<i4"), "n_layers": (CFG["n_layers"], "<i4"), "n_heads": (CFG["n_heads"], "<i4"),
        "n_kv_heads": (CFG["n_kv_heads"], "<i4"), "hidden_dim": (CFG["hidden_dim"], "<i4"),
        "vocab_size": (CFG["vocab_size"], "<i4"), "seq_len": (CFG["seq_len"], "<i4"),
        "tied_embeddings": (0, "<i4"), "norm_eps": (np.float32(1e-5), "<f4"), "rope_theta": (10000.0, "<f4"),
        "role": ("local", "str"), "round": (gen, "<i8"), "site": ("site-a", "str"), "step": (10 * gen, "<i8"),
        "tokens_trained": (1000 * gen + 7, "<i8"),
        "base_sha256": (hashlib.sha256(f"base-{gen}".encode()).hexdigest(), "str"),
        "tp_size": (2, "<i4"), "dp_size": (3, "<i4"), "created_unix": (None, "<i8"),
        "created_utc": (None, "str-any"), "writer": (None, "str-any"), "complete": (1, "<i4"),
    }
    for k in ("created_utc", "writer"):
        check(isinstance(f.attrs.get(k), str), f"attribute {k} is not a string")
        root[k] = (f.attrs.get(k), "str")
    check_attrs(f, root, "/")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(f.attrs["created_unix"])))
    check(stamp == f.attrs["created_utc"], f"created_utc {f.attrs['created_utc']} != created_unix {stamp}")

    sections = ["params", "optimizer/m", "optimizer/v"]
    groups = {"optimizer"}
    if kind == "all":
        sections += ["server/m", "server/v"]
        groups |= {"server", "train_state", "provenance", "metrics"}
    check(set(f.keys()) == groups | {"params"}, f"top-level groups {sorted(f.keys())}")
    tensors = meta_tensors(CFG)
    n_values = 0
    for sec in sections:
        g = f[sec]
        check(sorted(g.keys()) == sorted(n for n, _ in tensors), f"{sec}: tensor names differ")
        for i, (name, shape) in enumerate(tensors):
            d = g[name]
            check(d.dtype == np.dtype("<f4"), f"{sec}/{name}: dtype {d.dtype}")
            check(d.shape == shape, f"{sec}/{name}: shape {d.shape} != {shape}")
            data = d[...]
            n_values += data.size
            if not np.array_equal(data, expected(SECTIONS[sec], i, shape, gen)):
                bad = np.argwhere(data != expected(SECTIONS[sec], i, shape, gen))[0]
                failures.append(f"{sec}/{name}: value at {tuple(bad)} differs")
            check(len(d.attrs) == 0, f"{sec}/{name}: unexpected attributes")

    check_attrs(f["optimizer"], {"step": (10 * gen, "<i8"), "lr": (np.float32(3e-4), "<f4"),
                                 "beta1": (np.float32(0.9), "<f4"), "beta2": (np.float32(0.95), "<f4"),
                                 "eps": (np.float32(1e-8), "<f4"), "weight_decay": (np.float32(0.1), "<f4")},
                "/optimizer")
    for sub in ("optimizer/m", "optimizer/v"):
        check(len(f[sub].attrs) == 0, f"{sub}: unexpected attributes")
    if kind == "all":
        check_attrs(f["train_state"], {
            "epoch": (gen, "<i8"), "shard": (gen + 1, "<i8"), "offset": (12345 + gen, "<i8"),
            "samples": (99 * gen, "<i8"), "rng_seed": (42 + gen, "<u8"),
            "rng_state": ([1 + gen, 2, 3, 2**64 - 1], "<u8"),
            "loader_cursor": ([1, 42 + gen, 1, 256, 1000000 + gen, 2**64 - 2, gen, 7], "<u8")}, "/train_state")
        check_attrs(f["metrics"], {
            "train_loss": (2.5 + gen, "<f8"), "train_loss_last": (2.25 + gen, "<f8"),
            "valid_loss": (3.0 + gen, "<f8"), "valid_perplexity": (20.0 + gen, "<f8"),
            "valid_tokens": (4096 + gen, "<i8"), "train_seconds": (12.5, "<f8"),
            "tokens_per_second": (1000.5, "<f8"), "stop_reason": ("walltime", "str")}, "/metrics")
        check_attrs(f["server"], {
            "strategy": ("fedadam", "str"), "round": (gen, "<i8"), "step": (gen + 1, "<i8"), "n_sites": (2, "<i8"),
            "site_names": (["site-a", "site-b"], "str[]"), "site_rounds": ([gen, 1], "<i8"),
            "site_tokens": ([1000 * gen, 5], "<i8")}, "/server")
        check_attrs(f["provenance"], {
            "tool": ("flas-test", "str"), "strategy": ("diloco", "str"), "policy": ("drop-bad", "str"),
            "previous_path": ("/g/prev.h5", "str"), "previous_sha256": ("cc", "str"),
            "hyper.lr": (0.7, "<f8"), "hyper.momentum": (0.9, "<f8"), "n_inputs": (2, "<i8"),
            "input_paths": (["/in/a.h5", "/in/b.h5"], "str[]"), "input_sha256": (["aa", "bb"], "str[]"),
            "input_sites": (["site-a", "site-b"], "str[]"),
            "input_reasons": (["", "NaN in layers.0.attention.wq.weight"], "str[]"),
            "input_rounds": ([gen, gen], "<i8"), "input_tokens": ([100, 300], "<i8"), "input_used": ([1, 0], "<i8"),
            "input_weights": ([0.25, 0.0], "<f8")}, "/provenance")
    if failures:
        for m in failures[:20]:
            print("FAIL:", m)
        print(f"{len(failures)} mismatches in {path}")
        return 1
    print(f"{path}: {len(sections)} sections x {len(tensors)} tensors ({n_values} values) and every attribute "
          f"match (h5py {h5py.__version__}, HDF5 {h5py.version.hdf5_version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
