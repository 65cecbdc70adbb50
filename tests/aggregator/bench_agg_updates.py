#!/usr/bin/python3
"""Aggregation of compressed updates against full models, in the same session (docs/performance.md,
"Aggregation of compressed updates"): flas-aggregate merging 3 sites' full float32 models, bf16 updates
and int8 updates (made by flas-update from the same models) onto one previous global, FedAvg and
DiLoCo, interleaved runs, medians. GB/s are model-equivalent: (inputs + 1) x the float32 model size
per second, so the modes compare at equal work; the bytes actually read are printed beside them.
Usage: bench_agg_updates.py FLAS_AGGREGATE FLAS_UPDATE WORKDIR [runs]"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agg_lib as L  # noqa: E402


def main():
    agg, upd, work = sys.argv[1], sys.argv[2], sys.argv[3]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cfg = dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, hidden_dim=2048, vocab_size=32000, seq_len=1024,
               norm_eps=1e-5, rope_theta=10000.0, tied_embeddings=0)  # stories110M shapes, untied: 537 MB
    x = L.random_params(1, cfg=cfg)
    glob = os.path.join(work, "global.h5")
    L.write_ckpt(glob, x, role="global", rnd=0, cfg=cfg)
    base = L.sha256(glob)
    inputs = {"fp32": [], "bf16": [], "int8": []}
    for j, t in enumerate([3000, 1000, 2000]):
        p = os.path.join(work, f"local-{j}.h5")
        L.write_ckpt(p, L.perturb(x, seed=j), rnd=0, site=f"s{j}", tokens=t, base=base, cfg=cfg)
        inputs["fp32"].append(p)
        for enc in ("bf16", "int8"):
            q = os.path.join(work, f"local-{j}-{enc}.h5")
            subprocess.run([upd, "encode", "-q", "--base", glob, "--target", p, "--output", q, "--encoding", enc],
                           check=True, capture_output=True)
            inputs[enc].append(q)
    model = sum(a.nbytes for a in x.values())
    moved = (3 + 1) * model
    res = {(m, s): [] for m in inputs for s in ("fedavg", "diloco")}
    for _ in range(runs):
        for (mode, strat) in res:
            out = os.path.join(work, "next.h5")
            subprocess.run(["sync"])
            t0 = time.perf_counter()
            r = subprocess.run([agg, "-q", "-s", strat, "-p", glob, "-o", out, *inputs[mode]], capture_output=True,
                               text=True, check=True)
            dt = time.perf_counter() - t0
            merge_s = float(re.search(r"\(merge ([0-9.]+) s", r.stdout).group(1))
            res[(mode, strat)].append((moved / dt / 1e9, moved / merge_s / 1e9))
            os.unlink(out)
    sizes = {m: sum(os.path.getsize(p) for p in inputs[m]) / 3 for m in inputs}
    print(f"\nflas-aggregate, 3 inputs of a {model / 1e6:.0f} MB model (stories110M shapes) onto one previous global, "
          f"page cache warm, medians of {runs} interleaved runs")
    print("inputs | input file | strategy | whole run GB/s | merge GB/s | vs fp32 (whole run)")
    for strat in ("fedavg", "diloco"):
        ref = statistics.median(v[0] for v in res[("fp32", strat)])
        for mode in inputs:
            whole = statistics.median(v[0] for v in res[(mode, strat)])
            merge = statistics.median(v[1] for v in res[(mode, strat)])
            print(f"{mode:6s} | {sizes[mode] / 1e6:7.0f} MB | {strat:8s} | {whole:14.2f} | {merge:10.2f} | "
                  f"{whole / ref:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
