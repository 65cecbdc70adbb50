#!/usr/bin/python3
"""PyTorch oracle for the C training core (ctest label: oracle).

For each configuration, runs tests/core/core_oracle_dump (the C model), which writes its weights,
tokens, logits, loss, every parameter gradient and the losses of 10 AdamW steps as .npy files; then
builds the same model in PyTorch (llama_torch.py, an ordinary LLaMA-2 written independently of the C
code), loads the weights, and compares. PyTorch runs in float64 from the C model's float32 weights, so
the differences measure the error of the C float32 computation itself.

Pass criteria (all must hold, per configuration):
  logits, loss, and every gradient tensor: max|c - t| <= 1e-4 * max|t|   (relative to the tensor's scale)
  each of the 10 AdamW-step losses: |c - t| <= 1e-4 * |t|
  each step's pre-clip gradient norm: |c - t| <= 1e-4 * |t|
Exit status 0 only if every check passed.
"""
import argparse
import math
import os
import random
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_torch import Transformer  # noqa: E402

TOL = 1e-4
# Hyper-parameters mirrored from core_oracle_dump.c.
LR_MAX, LR_MIN, WARMUP = 3e-3, 3e-4, 3
BETAS, EPS, WD, CLIP = (0.9, 0.95), 1e-8, 0.1, 1.0
STEPS = 10

FIXED = [
    # GQA 2:1, tied head, B > 1
    dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, hidden_dim=172, vocab_size=97, seq_len=16,
         tied_embeddings=1, B=3, T=16, accum=1),
    # multi-head, untied head, T shorter than seq_len
    dict(dim=48, n_layers=3, n_heads=4, n_kv_heads=4, hidden_dim=128, vocab_size=211, seq_len=24,
         tied_embeddings=0, B=2, T=20, accum=1),
    # GQA 3:1, untied, two micro-batches of gradient accumulation per step
    dict(dim=96, n_layers=2, n_heads=6, n_kv_heads=2, hidden_dim=256, vocab_size=300, seq_len=32,
         tied_embeddings=0, B=4, T=32, accum=2),
    # the first shape again through the plain-loop reference layers
    dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, hidden_dim=172, vocab_size=97, seq_len=16,
         tied_embeddings=1, B=3, T=16, accum=1, reference=1),
    # big enough for the fast path's tiled and K-split products and several causal row blocks
    dict(dim=128, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=344, vocab_size=1000, seq_len=160,
         tied_embeddings=0, B=2, T=150, accum=1),
    # multi-query (one kv head), tied, LLaMA-3-style rope_theta and a smaller eps
    dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=96, vocab_size=64, seq_len=8,
         tied_embeddings=1, B=1, T=8, accum=1, norm_eps=1e-6, rope_theta=500000.0),
]


def random_configs(rng, count):
    out = []
    for _ in range(count):
        head_dim = rng.choice([2, 4, 6, 8, 12, 16])
        n_kv = rng.choice([1, 2, 3])
        n_heads = n_kv * rng.choice([1, 2, 4])
        dim = head_dim * n_heads
        seq = rng.randint(4, 24)
        out.append(dict(dim=dim, n_layers=rng.randint(1, 3), n_heads=n_heads, n_kv_heads=n_kv,
                        hidden_dim=rng.randint(8, 96), vocab_size=rng.randint(16, 400), seq_len=seq,
                        tied_embeddings=rng.randint(0, 1), B=rng.randint(1, 4), T=rng.randint(1, seq),
                        accum=rng.randint(1, 2)))
    return out


def lr_at(step):
    """Linear warmup then cosine decay to LR_MIN at STEPS (the schedule's definition)."""
    if step < WARMUP:
        return LR_MAX * (step + 1) / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return LR_MIN + 0.5 * (1 + math.cos(math.pi * progress)) * (LR_MAX - LR_MIN)


def load(d, name):
    return np.load(os.path.join(d, name))


def rel_err(c, t):
    c = np.asarray(c, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    scale = np.max(np.abs(t))
    return float(np.max(np.abs(c - t)) / scale) if scale > 0 else float(np.max(np.abs(c)))


def check_config(dump, cfg, seed, failures):
    cfg = dict(cfg)
    cfg.setdefault("norm_eps", 1e-5)
    cfg.setdefault("rope_theta", 10000.0)
    reference = cfg.pop("reference", 0)
    label = ("dim {dim} L{n_layers} H{n_heads}/{n_kv_heads} F{hidden_dim} V{vocab_size} "
             "tied {tied_embeddings} B{B} T{T} accum {accum}").format(**cfg) + (" (reference)" if reference else "")
    with tempfile.TemporaryDirectory(prefix="flas-oracle-") as d:
        args = [dump, d] + [str(cfg[k]) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim",
                                                  "vocab_size", "seq_len", "tied_embeddings", "B", "T")]
        args += [str(seed), str(STEPS), str(cfg["accum"]), repr(cfg["norm_eps"]), repr(cfg["rope_theta"])]
        env = dict(os.environ, CORE_ORACLE_REFERENCE="1" if reference else "0")
        subprocess.run(args, check=True, env=env)
        model = Transformer(cfg, dtype=torch.float64)
        params = load(d, "params.npy")
        table = []
        with open(os.path.join(d, "table.txt")) as f:
            for line in f:
                name, off, rows, cols = line.split()
                table.append((name, int(off), int(rows), int(cols)))
        named = dict(model.named_parameters())
        expected = set(named)
        seen = set()
        with torch.no_grad():
            for name, off, rows, cols in table:
                shape = (rows, cols) if cols else (rows,)
                size = rows * (cols or 1)
                if name not in named:
                    failures.append(f"{label}: C tensor {name} has no PyTorch counterpart")
                    continue
                named[name].copy_(torch.from_numpy(params[off:off + size].reshape(shape).astype(np.float64)))
                seen.add(name)
        if seen != expected:
            failures.append(f"{label}: PyTorch parameters never loaded: {sorted(expected - seen)}")

        tokens = torch.from_numpy(load(d, "tokens.npy").astype(np.int64))
        targets = torch.from_numpy(load(d, "targets.npy").astype(np.int64))
        logits, loss = model(tokens, targets)
        loss.backward()
        results = [("logits", rel_err(load(d, "logits.npy"), logits.detach().reshape(-1, cfg["vocab_size"]).numpy())),
                   ("loss", rel_err(load(d, "loss.npy")[0], loss.item()))]
        grads = load(d, "grads.npy")
        for name, off, rows, cols in table:
            if name in named:
                size = rows * (cols or 1)
                results.append((name + ".grad", rel_err(grads[off:off + size], named[name].grad.reshape(-1).numpy())))

        # 10 AdamW steps from the same start, same batches, same schedule and clipping.
        with torch.no_grad():
            for name, off, rows, cols in table:
                if name in named:
                    named[name].copy_(torch.from_numpy(
                        params[off:off + rows * (cols or 1)].reshape((rows, cols) if cols else (rows,))
                        .astype(np.float64)))
        decay = [p for p in model.parameters() if p.dim() == 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=LR_MAX, betas=BETAS, eps=EPS)
        seqs = torch.from_numpy(load(d, "steps_tokens.npy").astype(np.int64))  # [S, K, B, T+1]
        c_losses, c_norms = load(d, "steps_loss.npy"), load(d, "steps_norm.npy")
        for s in range(STEPS):
            opt.zero_grad()
            total = 0.0
            for k in range(cfg["accum"]):
                batch = seqs[s, k]
                _, l = model(batch[:, :-1], batch[:, 1:])
                (l / cfg["accum"]).backward()
                total += l.item()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP).item()
            for g in opt.param_groups:
                g["lr"] = lr_at(s)
            opt.step()
            t_loss = total / cfg["accum"]
            results.append((f"step {s} loss", abs(c_losses[s] - t_loss) / abs(t_loss)))
            results.append((f"step {s} grad norm", abs(c_norms[s] - norm) / abs(norm)))

    worst = max(results, key=lambda r: r[1])
    bad = [r for r in results if not (r[1] <= TOL)]
    print(f"{label}: {len(results)} comparisons, worst {worst[0]} rel {worst[1]:.2e}, "
          f"loss {loss.item():.5f} -> step {STEPS - 1} loss {c_losses[-1]:.5f}"
          + ("" if not bad else f"  FAILED {len(bad)}"))
    for name, err in bad:
        failures.append(f"{label}: {name} rel error {err:.3e} > {TOL}")
    # The batches repeat, so a working optimizer lowers the loss by far more than the tolerance.
    if not c_losses[-1] < c_losses[0] * (1 - 100 * TOL):
        failures.append(f"{label}: training did not lower the loss ({c_losses[0]} -> {c_losses[-1]})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", required=True, help="path of the core_oracle_dump program")
    ap.add_argument("--random", type=int, default=3, help="random configurations besides the fixed ones")
    ap.add_argument("--seed", type=int, default=20240611)
    args = ap.parse_args()
    if not os.access(args.dump, os.X_OK):
        sys.exit(f"core_oracle: {args.dump} is not an executable")
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    configs = FIXED + random_configs(rng, args.random)
    failures = []
    for i, cfg in enumerate(configs):
        check_config(args.dump, cfg, args.seed + i, failures)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"all {len(configs)} configurations match PyTorch within {TOL}")


if __name__ == "__main__":
    main()
