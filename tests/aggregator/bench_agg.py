#!/usr/bin/python3
"""Aggregation benchmark, every peer measured in the same session (docs/performance.md "Aggregation"):
 1. in-memory merge (FedAvg and DiLoCo kernels of flas_agg) vs STREAM triad, 1 and 2 threads
    (bench_agg_merge, interleaved runs) and vs numpy doing the same chunked weighted average;
 2. end to end HDF5 -> HDF5: flas-aggregate vs an h5py script merging the same files chunk by chunk.
Usage: bench_agg.py BENCH_AGG_MERGE FLAS_AGGREGATE WORKDIR [runs]"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agg_lib as L  # noqa: E402

K, MIB = 4, 256  # in-memory: 4 inputs of 256 MiB (1 GiB of inputs, far beyond the caches)
CHUNK = 1 << 16  # numpy's best chunk here (fits L2 with its temporaries)


def c_bench(binary, threads, runs):
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    out = subprocess.run([binary, str(K), str(MIB), str(runs), "4096", str(threads)], capture_output=True, text=True,
                         check=True, env=env).stdout
    return {m.group(1): float(m.group(3)) for m in re.finditer(r"^(\w+) (\d+) ([0-9.]+)$", out, re.M)}


def numpy_avg(xs, w, out, tmp, lo, hi):
    for s in range(lo, hi, CHUNK):
        e = min(s + CHUNK, hi)
        o, t = out[s:e], tmp[:e - s]
        np.multiply(xs[0][s:e], w[0], out=o)
        for x, wi in zip(xs[1:], w[1:]):
            np.multiply(x[s:e], wi, out=t)
            np.add(o, t, out=o)


def numpy_bench(threads, runs):
    n = MIB << 18
    xs = [np.full(n, i + 0.5, dtype=np.float32) for i in range(K)]
    w = np.full(K, 1.0 / K, dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    res = {"chunked": [], "naive": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        if threads == 1:
            numpy_avg(xs, w, out, np.empty(CHUNK, dtype=np.float32), 0, n)
        else:
            half = n // threads
            with ThreadPoolExecutor(threads) as ex:
                list(ex.map(lambda i: numpy_avg(xs, w, out, np.empty(CHUNK, dtype=np.float32), i * half,
                                                n if i == threads - 1 else (i + 1) * half), range(threads)))
        res["chunked"].append((K + 1) * 4 * n / (time.perf_counter() - t0) / 1e9)
        if threads == 1:
            t0 = time.perf_counter()
            r = sum(x * wi for x, wi in zip(xs, w))  # what most scripts write
            res["naive"].append((K + 1) * 4 * n / (time.perf_counter() - t0) / 1e9)
            del r
    assert abs(float(out[12345]) - sum((i + 0.5) / K for i in range(K))) < 1e-5
    return {k: statistics.median(v) for k, v in res.items() if v}


def h5py_merge(glob, inputs, tokens, out):
    """The merge a user would script with h5py: chunked rows, float64 accumulation, durable + renamed."""
    p = np.asarray(tokens, dtype=np.float64) / sum(tokens)
    tmp = out + ".tmp"
    fs = [h5py.File(i, "r") for i in inputs]
    with h5py.File(tmp, "w") as fo:
        g = fo.create_group("params")
        for name in fs[0]["params"]:
            d0 = fs[0]["params"][name]
            dst = g.create_dataset(name, shape=d0.shape, dtype=np.float32)
            rows = max(1, (1 << 20) // (d0.shape[1] if d0.ndim == 2 else d0.shape[0]))
            for r in range(0, d0.shape[0], rows):
                acc = sum(p[j] * f["params"][name][r:r + rows].astype(np.float64) for j, f in enumerate(fs))
                dst[r:r + rows] = acc.astype(np.float32)
    for f in fs:
        f.close()
    fd = os.open(tmp, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, out)


def end_to_end(binary, work, runs):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cfg = dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, hidden_dim=2048, vocab_size=32000, seq_len=1024,
               norm_eps=1e-5, rope_theta=10000.0, tied_embeddings=0)  # stories110M shapes, untied: 537 MB
    x = L.random_params(1, cfg=cfg)
    glob = os.path.join(work, "global.h5")
    L.write_ckpt(glob, x, role="global", rnd=0, cfg=cfg)
    base = L.sha256(glob)
    inputs, tokens = [], [3000, 1000, 2000]
    for j, t in enumerate(tokens):
        p = os.path.join(work, f"local-{j}.h5")
        L.write_ckpt(p, L.perturb(x, seed=j), rnd=0, site=f"s{j}", tokens=t, base=base, cfg=cfg)
        inputs.append(p)
    model = sum(a.nbytes for a in x.values())
    moved = (len(inputs) + 1) * model
    res = {"flas": [], "flas_merge": [], "h5py": [], "h5py_sha": []}
    for _ in range(runs):
        out = os.path.join(work, "next-flas.h5")
        subprocess.run(["sync"])
        t0 = time.perf_counter()
        r = subprocess.run([binary, "-q", "-p", glob, "-o", out, *inputs], capture_output=True, text=True, check=True)
        res["flas"].append(moved / (time.perf_counter() - t0) / 1e9)
        merge_s = float(re.search(r"\(merge ([0-9.]+) s", r.stdout).group(1))
        res["flas_merge"].append(moved / merge_s / 1e9)
        os.unlink(out)
        out = os.path.join(work, "next-h5py.h5")
        subprocess.run(["sync"])
        t0 = time.perf_counter()
        h5py_merge(glob, inputs, tokens, out)
        res["h5py"].append(moved / (time.perf_counter() - t0) / 1e9)
        os.unlink(out)
        subprocess.run(["sync"])
        t0 = time.perf_counter()
        digests = [L.sha256(f) for f in [glob] + inputs]  # the same work: know what was merged
        h5py_merge(glob, inputs, tokens, out)
        res["h5py_sha"].append(moved / (time.perf_counter() - t0) / 1e9)
        assert len(digests) == 4
        os.unlink(out)
    shutil.rmtree(work, ignore_errors=True)
    return {k: statistics.median(v) for k, v in res.items()}, model


def main():
    merge_bin, agg_bin, work = sys.argv[1], sys.argv[2], sys.argv[3]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    rows = []
    for th in (1, 2):
        c1 = c_bench(merge_bin, th, runs)
        npb = numpy_bench(th, runs)
        c2 = c_bench(merge_bin, th, runs)
        c = {k: statistics.median([c1[k], c2[k]]) for k in c1}
        rows.append((th, c, npb))
    print(f"\nIn-memory merge, {K} inputs x {MIB} MiB float32, GB/s counted like STREAM "
          f"(each array read or written once), medians of {runs} runs")
    print("threads | STREAM triad | flas FedAvg | flas DiLoCo | numpy chunked | numpy naive | FedAvg/triad | "
          "FedAvg/numpy")
    for th, c, npb in rows:
        best_np = max(npb.values())
        print(f"{th:7d} | {c['triad']:12.2f} | {c['fedavg']:11.2f} | {c['diloco']:11.2f} | "
              f"{npb['chunked']:13.2f} | {npb.get('naive', float('nan')):11.2f} | {c['fedavg'] / c['triad']:12.2f} | "
              f"{c['fedavg'] / best_np:12.2f}")
    e2e, model = end_to_end(agg_bin, work, runs)
    print(f"\nEnd to end HDF5 -> HDF5, 3 inputs + output of {model / 1e9:.2f} GB each (stories110M shapes), "
          f"GB/s of tensors read + written, medians")
    print(f"  flas-aggregate, whole run (SHA-256 of 4 files, validation, merge, fsync)  {e2e['flas']:6.2f}")
    print(f"  flas-aggregate, merge phase only                                          {e2e['flas_merge']:6.2f}")
    print(f"  h5py script (chunked rows, float64 accumulate, fsync), merge only        {e2e['h5py']:6.2f}")
    print(f"  h5py script + hashlib SHA-256 of the 4 files (the same work)             {e2e['h5py_sha']:6.2f}")
    print(f"  ratios: flas whole run / h5py+sha {e2e['flas'] / e2e['h5py_sha']:.2f}x; flas merge phase / h5py "
          f"merge {e2e['flas_merge'] / e2e['h5py']:.2f}x; flas whole run / h5py merge only "
          f"{e2e['flas'] / e2e['h5py']:.2f}x")


if __name__ == "__main__":
    main()
