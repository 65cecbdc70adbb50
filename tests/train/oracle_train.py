#!/usr/bin/python3
"""Oracles for flas-train's files (ctest label: oracle).

  eval   PyTorch (tests/oracle/llama_torch.py, float64) loads a checkpoint flas-train trained, reads the
         validation shard with numpy, cuts the same windows the validation loader hands out, and
         computes the mean cross-entropy; flas-train --eval (1 rank, dp=2, tp=2) must agree within 1e-5,
         and the valid_loss stored in the checkpoint's /metrics too
  h5py   every attribute flas-train puts in a local checkpoint, against values computed here: role,
         round, site, step, tokens_trained = steps x global batch, base_sha256 = sha256 of the global,
         the loader cursor words, shard/offset of the next window, the AdamW settings, /metrics; and a
         checkpoint written before the loader_cursor attribute existed still opens but cannot resume

usage: oracle_train.py FLAS_TRAIN FIXTURE MPIEXEC WORKDIR eval|h5py"""
import glob
import json
import math
import os
import shutil
import sys

import h5py
import numpy as np

from trainlib import Env, attrs, fail, ok, sha256

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))

B, T, STEPS = 2, 32, 12


def trained(e):
    out = e.path("oracle-local.h5")
    if not os.path.exists(out):
        e.run(["--global", e.glob, "--data", e.data, "--valid", e.valid, "--batch", str(B), "--seq", str(T),
               "--steps", str(STEPS), "--threads", "1", "--site", "oracle-site", "--lr", "3e-3", "--seed", "11",
               "--peak-gflops", "100", "--log-every", "1", "--output", out, "--metrics", out + ".jsonl"], 2)
    return out


def stream(directory):
    """The tokens of a directory's shards in the loader's order (names sorted), from the documented header."""
    parts, total = [], 0
    for p in sorted(glob.glob(os.path.join(directory, "*.flastok"))):
        with open(p, "rb") as f:
            head = f.read(128)
        if head[:8] != b"FLASTOK\0":
            fail(f"{p}: not a shard")
        token_bytes = int.from_bytes(head[20:24], "little")
        n = int.from_bytes(head[24:32], "little")
        dt = np.uint16 if token_bytes == 2 else np.uint32
        parts.append(np.fromfile(p, dtype=dt, offset=128, count=n).astype(np.int64))
        total += n
    return np.concatenate(parts), [len(x) for x in parts]


def torch_loss(path, tokens, windows):
    import torch
    from llama_torch import Transformer
    a = attrs(path)
    cfg = {k: int(a[k]) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "seq_len",
                                  "tied_embeddings")}
    cfg["norm_eps"], cfg["rope_theta"] = float(a["norm_eps"]), float(a["rope_theta"])
    model = Transformer(cfg, dtype=torch.float64)
    named = dict(model.named_parameters())
    with h5py.File(path, "r") as f, torch.no_grad():
        for name in f["params"]:
            named[name].copy_(torch.from_numpy(f["params"][name][...].astype(np.float64)))
        if set(f["params"]) != set(named):
            fail(f"tensor names differ: {sorted(set(f['params']) ^ set(named))}")
    x = np.stack([tokens[w * T: w * T + T] for w in windows])
    y = np.stack([tokens[w * T + 1: w * T + T + 1] for w in windows])
    with torch.no_grad():
        total = 0.0
        for i in range(0, len(windows), 16):
            _, loss = model(torch.from_numpy(x[i:i + 16]), torch.from_numpy(y[i:i + 16]))
            total += float(loss) * len(x[i:i + 16])
    return total / len(windows)


def flas_eval(e, path, ranks, extra=()):
    p = e.run(["--eval", path, "--valid", e.valid, "--batch", str(B), "--seq", str(T), "--json", "--threads", "1"]
              + list(extra), ranks)
    return json.loads(p.stdout.strip().splitlines()[-1])


def case_eval(e):
    path = trained(e)
    tokens, _ = stream(e.valid)
    W = (len(tokens) - 1) // T
    results = []
    for ranks, extra, dp in ((1, [], 1), (2, [], 2), (2, ["--tp", "2"], 1)):
        r = flas_eval(e, path, ranks, extra)
        used = W // (B * dp) * B * dp  # full rounds of B x dp windows, in order
        want = torch_loss(path, tokens, range(used))
        if r["tokens"] != used * T:
            fail(f"--eval ({ranks} ranks {extra}) measured {r['tokens']} tokens, the loader rule gives {used * T}")
        if abs(r["loss"] - want) > 1e-5 * want or abs(r["perplexity"] - math.exp(r["loss"])) > 1e-6 * r["perplexity"]:
            fail(f"--eval ({ranks} ranks {extra}): loss {r['loss']} vs PyTorch {want}")
        if r["sha256"] != sha256(path) or r["role"] != "local" or r["site"] != "oracle-site":
            fail(f"--eval JSON fields wrong: {r}")
        results.append((ranks, extra, r["loss"], want))
    stored = attrs(path, "metrics")
    if abs(stored["valid_loss"] - results[1][3]) > 1e-5 * results[1][3] or \
            stored["valid_tokens"] != (W // (B * 2) * B * 2) * T:
        fail(f"/metrics valid_loss {stored['valid_loss']} over {stored['valid_tokens']} vs PyTorch {results[1][3]}")
    capped = flas_eval(e, path, 1, ["--valid-batches", "3"])
    want = torch_loss(path, tokens, range(3 * B))
    if abs(capped["loss"] - want) > 1e-5 * want:
        fail(f"--valid-batches 3: {capped['loss']} vs PyTorch {want}")
    ok("flas-train --eval == PyTorch float64 on the same windows: " +
       ", ".join(f"{n} {l:.6f} vs {w:.6f}" for n, (r, x, l, w) in zip(("1 rank", "dp=2", "tp=2"), results)) +
       f"; the checkpoint's /metrics valid_loss {stored['valid_loss']:.6f} too; --valid-batches 3 also")


def case_h5py(e):
    path = trained(e)
    a, m, ts, opt = attrs(path), attrs(path, "metrics"), attrs(path, "train_state"), attrs(path, "optimizer")
    want = {"format": "flas-checkpoint", "role": "local", "round": 0, "site": "oracle-site", "step": STEPS,
            "tokens_trained": STEPS * B * T * 2, "base_sha256": sha256(e.glob), "tp_size": 1, "dp_size": 2,
            "complete": 1}
    for k, v in want.items():
        if a.get(k) != v:
            fail(f"root attribute {k} = {a.get(k)!r}, expected {v!r}")
    tokens, sizes = stream(e.data)
    W = (len(tokens) - 1) // T
    samples = STEPS * B * 2
    cur = [int(x) for x in ts["loader_cursor"]]
    if cur[:5] != [1, 11, 1, T, len(tokens)] or cur[6] != 0 or cur[7] != samples:
        fail(f"loader_cursor {cur}: expected version 1, seed 11, shuffle 1, seq {T}, {len(tokens)} tokens, "
             f"epoch 0, position {samples}")
    if ts["samples"] != samples or ts["epoch"] != 0 or ts["rng_seed"] != 11:
        fail(f"/train_state {ts}")
    # The next window: the loader's permutation is not recomputed here; shard/offset must name a real
    # token position consistent with the shard sizes.
    shard, offset = int(ts["shard"]), int(ts["offset"])
    if not (0 <= shard < len(sizes) and 0 <= offset < sizes[shard] and (sum(sizes[:shard]) + offset) % T == 0):
        fail(f"/train_state shard {shard} offset {offset} is not a window start in shards of {sizes}")
    if (opt["step"], round(float(opt["beta1"]), 6), round(float(opt["beta2"]), 6)) != (STEPS, 0.9, 0.95):
        fail(f"/optimizer {opt}")
    if m["stop_reason"] != "steps" or not m["valid_tokens"] > 0 or \
            abs(m["valid_perplexity"] - math.exp(m["valid_loss"])) > 1e-9 * m["valid_perplexity"]:
        fail(f"/metrics {m}")
    with open(path + ".jsonl") as f:
        steps = [json.loads(l) for l in f if '"event"' not in l]
    last = [s["loss"] for s in steps[-10:]]
    if abs(m["train_loss_last"] - steps[-1]["loss"]) > 1e-6 or abs(m["train_loss"] - sum(last) / len(last)) > 1e-6:
        fail(f"/metrics train losses {m['train_loss']}, {m['train_loss_last']} vs the metrics file {last}")
    # A file from before the loader_cursor attribute: readable (eval), but not resumable.
    old = e.path("old-format.h5")
    shutil.copy(path, old)
    with h5py.File(old, "r+") as f:
        del f["train_state"].attrs["loader_cursor"]
    flas_eval(e, old, 1, ["--valid-batches", "1"])
    p = e.run(["--resume", old, "--data", e.data, "--steps", str(STEPS + 1), "--output", e.path("x.h5"), "--batch",
               str(B), "--seq", str(T), "--threads", "1"], 1, check=False)
    if p.returncode == 0 or "no data loader cursor" not in p.stderr:
        fail(f"a checkpoint without loader_cursor was resumed: {p.stderr}")
    ok(f"h5py reads every attribute of a flas-train checkpoint as computed here (tokens_trained {want['tokens_trained']}, "
       f"base_sha256 of the global, cursor {cur}, shard {shard} offset {offset}, /metrics); a file without "
       "loader_cursor opens but is not resumed")


def main():
    e = Env(sys.argv)
    e.ensure_fixture()
    {"eval": case_eval, "h5py": case_h5py}[e.case](e)


if __name__ == "__main__":
    main()
