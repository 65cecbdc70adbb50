#!/usr/bin/python3
"""PyTorch peer for flas-bench-train: trains the same LLaMA-2 shape on random tokens with AdamW and
prints its median tokens/s. Run by the benchmark once per thread setting (torch.set_num_threads here,
OPENBLAS_NUM_THREADS in the environment), the benchmark keeps PyTorch's best."""
import argparse
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
from llama_torch import Transformer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "seq_len",
              "tied_embeddings", "batch", "steps", "torch_threads"):
        ap.add_argument("--" + k, type=int, required=True)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--autocast_bf16", type=int, default=0, help="forward under torch.autocast('cpu', bfloat16)")
    a = ap.parse_args()
    torch.set_num_threads(a.torch_threads)
    torch.manual_seed(0)
    cfg = dict(dim=a.dim, n_layers=a.n_layers, n_heads=a.n_heads, n_kv_heads=a.n_kv_heads,
               hidden_dim=a.hidden_dim, vocab_size=a.vocab_size, seq_len=a.seq_len, norm_eps=1e-5,
               rope_theta=10000.0, tied_embeddings=a.tied_embeddings)
    model = Transformer(cfg)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95))
    times = []
    for step in range(a.warmup + a.steps):
        batch = torch.randint(0, a.vocab_size, (a.batch, a.seq_len + 1))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(a.autocast_bf16)):
            _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    tok_s = a.batch * a.seq_len / statistics.median(times)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"tok_per_s {tok_s:.1f} peak_rss_kib {rss_kib} loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
