#!/usr/bin/python3
"""The fixture of the flas-train tests, and --init (ctest label: mpi; FIXTURES_SETUP train_data).

Makes synthetic token shards and the round-0 global model with `flas-train --init`, then checks the
global with h5py: role global, round 0, no site, no base, complete; every tensor of the LLaMA layout
with its shape; RMSNorm weights 1; matrices ~ N(0, 0.02) and the residual outputs wo/w2 ~
N(0, 0.02 / sqrt(2 n_layers)) (GPT-2 scaling, llama.h). The initialisation is deterministic and
layout-free: --init again with the same seed, and --init on 2 ranks with --tp 2, give identical
tensors; another seed gives other ones; a preset works (--model stories260K).

usage: test_train_init.py FLAS_TRAIN FIXTURE MPIEXEC WORKDIR fixture"""
import json
import math
import sys

import numpy as np

from trainlib import TINY, Env, attrs, fail, identical, ok, sha256, tensors


def main():
    e = Env(sys.argv)
    p = e.make_fixture()
    a = attrs(e.glob)
    want = {"format": "flas-checkpoint", "role": "global", "round": 0, "site": "", "base_sha256": "", "step": 0,
            "tokens_trained": 0, "complete": 1, "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
            "hidden_dim": 192, "vocab_size": 128, "seq_len": 64, "tied_embeddings": 0}
    for k, v in want.items():
        if a.get(k) != v:
            fail(f"--init: attribute {k} = {a.get(k)!r}, expected {v!r}")
    if sha256(e.glob) not in p.stdout:
        fail(f"--init did not print the file's sha256: {p.stdout}")
    w = tensors(e.glob, ("params",))
    shapes = {"tok_embeddings.weight": (128, 64), "layers.1.attention.wq.weight": (64, 64),
              "layers.1.attention.wk.weight": (32, 64), "layers.0.feed_forward.w2.weight": (64, 192),
              "output.weight": (128, 64), "norm.weight": (64,)}
    for k, s in shapes.items():
        if w["params/" + k].shape != s:
            fail(f"--init: {k} has shape {w['params/' + k].shape}, expected {s}")
    if len(w) != 1 + 2 * 9 + 2:
        fail(f"--init: {len(w)} tensors")
    for k, x in w.items():
        if x.ndim == 1:
            if not np.all(x == 1):
                fail(f"{k}: RMSNorm weight not ones")
            continue
        std = 0.02 / math.sqrt(4) if k.endswith(("wo.weight", "w2.weight")) else 0.02
        if abs(x.mean()) > 4 * std / math.sqrt(x.size) + 1e-4 or abs(x.std() / std - 1) > 0.1:
            fail(f"{k}: mean {x.mean():.2e} std {x.std():.4f}, expected N(0, {std:.4f})")
    again, tp2, other = e.path("again.h5"), e.path("tp2.h5"), e.path("seed8.h5")
    e.run(["--init"] + TINY + ["--seed", "7", "--output", again])
    e.run(["--init"] + TINY + ["--seed", "7", "--tp", "2", "--output", tp2], 2)
    e.run(["--init"] + TINY + ["--seed", "8", "--output", other])
    if not identical(tensors(again, ("params",)), w) or not identical(tensors(tp2, ("params",)), w):
        fail("--init is not deterministic across runs or tensor-parallel layouts")
    if identical(tensors(other, ("params",)), w):
        fail("--init ignores --seed")
    preset = e.path("preset.h5")
    r = e.run(["--init", "--model", "stories260K", "--round", "0", "--output", preset, "--json"])
    j = json.loads(r.stdout.strip().splitlines()[-1])
    if j["sha256"] != sha256(preset) or attrs(preset)["n_kv_heads"] != 4 or attrs(preset)["tied_embeddings"] != 1:
        fail(f"--init --model stories260K: {j}, {attrs(preset)}")
    ok("fixture made; --init writes a complete round-0 global (LLaMA layout, N(0, 0.02) and scaled residual "
       "outputs, ones for norms), the same for the same seed on 1 rank or tp=2, another for another seed; presets work")


if __name__ == "__main__":
    main()
