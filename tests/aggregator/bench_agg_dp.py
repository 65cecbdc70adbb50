#!/usr/bin/python3
"""What DP-FedAvg costs the aggregator, in the same session (docs/performance.md, "DP-FedAvg"):
flas-aggregate merging 2 sites' float32 models (stories110M shapes, 537 MB each) with equal weights,
plain, with clipping only (the extra norm pass), and with clipping plus noise (the ChaCha20 stream and
Box-Muller on every coordinate). Interleaved runs, medians, ratios to the plain merge.
Usage: bench_agg_dp.py FLAS_AGGREGATE WORKDIR [runs]"""
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
    agg, work = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cfg = dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, hidden_dim=2048, vocab_size=32000, seq_len=1024,
               norm_eps=1e-5, rope_theta=10000.0, tied_embeddings=0)
    x = L.random_params(1, cfg=cfg)
    glob = os.path.join(work, "global.h5")
    L.write_ckpt(glob, x, role="global", rnd=0, cfg=cfg)
    base = L.sha256(glob)
    inputs = []
    for j in range(2):
        p = os.path.join(work, f"local-{j}.h5")
        L.write_ckpt(p, L.perturb(x, seed=j), rnd=0, site=f"s{j}", tokens=1000, base=base, cfg=cfg)
        inputs.append(p)
    model_bytes = os.path.getsize(glob)
    modes = {"plain": ["--uniform"], "clip": ["--dp-clip", "1"], "clip+noise": ["--dp-clip", "1", "--dp-noise", "1"]}
    times = {m: [] for m in modes}
    norm_pass = []
    out = os.path.join(work, "out.h5")
    for _ in range(runs):
        for m, extra in modes.items():
            if os.path.exists(out):
                os.unlink(out)
            t0 = time.perf_counter()
            r = subprocess.run([agg, "-q", "-p", glob, "-o", out, *extra, *inputs], capture_output=True, text=True,
                               check=True)
            times[m].append(time.perf_counter() - t0)
            g = re.search(r"norm pass ([0-9.]+) s", r.stdout)
            if g and m == "clip":
                norm_pass.append(float(g.group(1)))
    base_t = statistics.median(times["plain"])
    print(f"2 inputs of {model_bytes / 1e6:.0f} MB, {runs} interleaved runs each (medians):")
    for m in modes:
        t = statistics.median(times[m])
        print(f"  {m:<11} {t:6.2f} s  {3 * model_bytes / t / 1e9:5.2f} GB/s model-equivalent  {t / base_t:4.2f}x plain")
    print(f"  the norm pass alone: {statistics.median(norm_pass):.2f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
