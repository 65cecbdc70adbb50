"""Helpers for the flas-aggregate tests: write FLaS checkpoints with h5py straight from
docs/checkpoint-format.md (so the tests also show that a third-party writer interoperates), and an
independent float64 numpy implementation of every merge strategy (docs/aggregation.md)."""
import hashlib
import os
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
from flas_tensors import meta_tensors  # noqa: E402,F401  (also used as L.meta_tensors)

# stories260K shapes with an untied output head: 48 tensors, GQA (8 heads, 4 kv heads).
CFG = dict(dim=64, n_layers=5, n_heads=8, n_kv_heads=4, hidden_dim=172, vocab_size=512, seq_len=512,
           norm_eps=1e-5, rope_theta=10000.0, tied_embeddings=0)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_ckpt(path, params, role="local", rnd=0, site="", tokens=0, base="", cfg=CFG, complete=True,
               fmt="flas-checkpoint", version=1, server=None, tensor_dtype=np.float32):
    """A checkpoint as the format document describes it (h5py defaults: str attrs are UTF-8 vlen)."""
    with h5py.File(path, "w", libver=("v108", "v108")) as f:  # the checksummed format FLaS reads
        a = f.attrs
        a["format"] = fmt
        a["format_version"] = np.int32(version)
        a["rope_convention"] = "meta-interleaved"
        for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "seq_len",
                  "tied_embeddings"):
            a[k] = np.int32(cfg[k])
        a["norm_eps"] = np.float32(cfg["norm_eps"])
        a["rope_theta"] = np.float32(cfg["rope_theta"])
        a["role"] = role
        a["round"] = np.int64(rnd)
        a["site"] = site
        a["step"] = np.int64(10)
        a["tokens_trained"] = np.int64(tokens)
        a["base_sha256"] = base
        a["tp_size"] = np.int32(1)
        a["dp_size"] = np.int32(1)
        a["created_unix"] = np.int64(1700000000)
        a["created_utc"] = "2023-11-14T22:13:20Z"
        a["writer"] = "h5py test"
        g = f.create_group("params")
        for name, arr in params.items():
            g.create_dataset(name, data=np.asarray(arr, dtype=tensor_dtype))
        if server is not None:
            s = f.create_group("server")
            s.attrs["strategy"] = server["strategy"]
            s.attrs["round"] = np.int64(server["round"])
            s.attrs["step"] = np.int64(server["step"])
            s.attrs["n_sites"] = np.int64(0)
            for buf in ("m", "v"):
                if buf in server:
                    gb = s.create_group(buf)
                    for name, arr in server[buf].items():
                        gb.create_dataset(name, data=np.asarray(arr, dtype=np.float32))
        if complete:
            a["complete"] = np.int32(1)


def read_section(path, section="params"):
    with h5py.File(path, "r") as f:
        return {k: f[section][k][...] for k in f[section].keys()}


def random_params(seed, scale=0.1, cfg=CFG):
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal(s) * scale).astype(np.float32) for n, s in meta_tensors(cfg)}


def perturb(params, seed, scale=0.02):
    rng = np.random.default_rng(seed)
    return {n: (a + rng.standard_normal(a.shape) * scale).astype(np.float32) for n, a in params.items()}


DEFAULTS = {"fedavg": {}, "mean": {}, "fedavgm": dict(lr=1.0, momentum=0.9), "diloco": dict(lr=0.7, momentum=0.9),
            "fedadam": dict(lr=0.01, beta1=0.9, beta2=0.99, tau=1e-3),
            "fedyogi": dict(lr=0.01, beta1=0.9, beta2=0.99, tau=1e-3)}


def reference_step(strategy, x, xs, tokens, state, hp, uniform=False):
    """One server round in float64. x: previous global (dict of arrays), xs: list of local dicts,
    state: dict with 'm'/'v' dicts (float64) carried across rounds by the caller. Returns (new, state)."""
    k = len(xs)
    t = np.asarray(tokens, dtype=np.float64)
    p = np.full(k, 1.0 / k) if (uniform or strategy == "mean") else t / t.sum()
    new, m_out, v_out = {}, {}, {}
    for name in x:
        x0 = x[name].astype(np.float64)
        avg = sum(p[i] * xs[i][name].astype(np.float64) for i in range(k))
        if strategy in ("fedavg", "mean"):
            new[name] = avg
            continue
        if strategy in ("fedavgm", "diloco"):
            g = x0 - avg
            m = hp["momentum"] * state["m"].get(name, 0.0) + g
            m_out[name] = m
            new[name] = x0 - hp["lr"] * (m if strategy == "fedavgm" else g + hp["momentum"] * m)
            continue
        d = avg - x0
        m = hp["beta1"] * state["m"].get(name, 0.0) + (1 - hp["beta1"]) * d
        v0 = state["v"].get(name, np.full_like(x0, hp["tau"] ** 2))
        if strategy == "fedadam":
            v = hp["beta2"] * v0 + (1 - hp["beta2"]) * d * d
        else:
            v = v0 - (1 - hp["beta2"]) * d * d * np.sign(v0 - d * d)
        m_out[name], v_out[name] = m, v
        new[name] = x0 + hp["lr"] * m / (np.sqrt(v) + hp["tau"])
    return new, {"m": m_out, "v": v_out}, p


def run_aggregate(binary, previous, output, inputs, *args):
    """Runs flas-aggregate; returns (exit code, stdout, stderr)."""
    r = subprocess.run([binary, "-q", "-p", previous, "-o", output, *args, *inputs], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def leftovers(directory, name):
    """Files in directory that are the output or a temporary of it."""
    return [f for f in os.listdir(directory) if f == name or f.startswith("." + name + ".tmp-")]


# A test collects every failed check and reports them together at its end.
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond
