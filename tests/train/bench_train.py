#!/usr/bin/python3
"""flas-train benchmark (a program, not a test): `cmake --build build --target bench_train_run`.

1. Data-parallel efficiency: a stories15M-shaped model (llama2.c's, tied head, vocab 32000) on
   synthetic shards, 1 rank x 1 thread and 2 ranks x 1 thread with the SAME per-rank batch, in
   interleaved rounds. Per run: the median step time over the timed steps (first steps dropped);
   efficiency = tok/s(2 ranks) / (2 x tok/s(1 rank)), per round; the median over rounds. Also the share
   of the 2-rank step spent in the gradient allreduce: the most that overlapping it with backward could
   hide.
2. Checkpoint write: flas-train's own end-to-end checkpoint writes of the same model (weights + AdamW
   m + v, collective parallel HDF5, fsync, rename) against h5py writing the same tensors and dd writing
   the same bytes on the same disk (tests/ckpt/bench_ckpt_io.py's peers), interleaved; medians.

usage: bench_train.py FLAS_TRAIN FIXTURE MPIEXEC WORKDIR [ROUNDS] [STEPS]"""
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "ckpt"))
from bench_ckpt_io import PRESETS, dd_write, h5py_write, meta_tensors  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def run(cmd):
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p.stdout


def records(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


def train(flas, mpiexec, ranks, args, metrics):
    if os.path.exists(metrics):
        os.unlink(metrics)
    cmd = [flas] + args + ["--metrics", metrics]
    if ranks > 1:
        cmd = [mpiexec, "-np", str(ranks), "--oversubscribe"] + cmd
    out = run(cmd)
    return records(metrics), out


def main():
    flas, fixture, mpiexec, work = sys.argv[1:5]
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    steps = int(sys.argv[6]) if len(sys.argv) > 6 else 8
    os.makedirs(work, exist_ok=True)
    data, glob = os.path.join(work, "data"), os.path.join(work, "stories15M.h5")
    if not os.path.exists(os.path.join(data, "part-000.flastok")):
        subprocess.run([fixture, "shards", data, "2000000", "32000", "5", "1"], check=True)
    if not os.path.exists(glob):
        run([flas, "--init", "--model", "stories15M", "--output", glob])
    B, T = 4, 256
    common = ["--global", glob, "--data", data, "--batch", str(B), "--seq", str(T), "--threads", "1", "--site",
              "bench", "--log-every", "1", "--output", os.path.join(work, "out.h5")]
    eff, tok1, tok2, share, mfu1 = [], [], [], [], []
    for r in range(rounds):
        per = {}
        for ranks in (1, 2):
            rec, _ = train(flas, mpiexec, ranks, common + ["--steps", str(steps)], os.path.join(work, "dp.jsonl"))
            el = [x["elapsed"] for x in rec if "event" not in x]
            dt = statistics.median(np.diff(el)[1:])  # drop the first step (page faults, caches)
            per[ranks] = B * T * ranks / dt
            end = [x for x in rec if x.get("event") == "end"][0]
            if ranks == 2:
                share.append(end["dp_reduce_seconds"] / end["train_seconds"])
            else:
                mfu1.append(statistics.median([x["mfu"] for x in rec if "event" not in x][1:]))
        tok1.append(per[1])
        tok2.append(per[2])
        eff.append(per[2] / (2 * per[1]))
        print(f"round {r + 1}/{rounds}: 1 rank {per[1]:.0f} tok/s, 2 ranks {per[2]:.0f} tok/s, efficiency "
              f"{eff[-1]:.3f}, allreduce {100 * share[-1]:.1f}% of the 2-rank step time", flush=True)

    # Checkpoint writes: flas-train (2 ranks and 1 rank) vs h5py vs dd, interleaved.
    tensors = meta_tensors(dict(PRESETS["stories15M"], tied=1))
    rng = np.random.default_rng(0)
    arrays = [(n, rng.standard_normal(s, dtype=np.float32)) for n, s in tensors]
    groups = ["params", "optimizer/m", "optimizer/v"]
    nbytes = sum(a.nbytes for _, a in arrays) * len(groups)
    w = {"flas2": [], "flas1": [], "h5py": [], "dd": []}
    for r in range(rounds):
        for ranks in (2, 1):
            subprocess.run(["sync"])
            rec, _ = train(flas, mpiexec, ranks, common + ["--steps", "3", "--checkpoint-every", "1", "--batch", "1",
                                                            "--seq", "32"], os.path.join(work, "ck.jsonl"))
            w[f"flas{ranks}"] += [x["seconds"] for x in rec if x.get("event") == "checkpoint"]
        subprocess.run(["sync"])
        p = os.path.join(work, "h5py.h5")
        w["h5py"].append(h5py_write(p, arrays, groups))
        os.unlink(p)
        subprocess.run(["sync"])
        t, _ = dd_write(os.path.join(work, "dd.bin"), nbytes)
        w["dd"].append(t)
        os.unlink(os.path.join(work, "dd.bin"))
        print(f"round {r + 1}/{rounds}: checkpoint write s: " +
              ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in w.items()), flush=True)
    med = {k: statistics.median(v) for k, v in w.items()}
    print(f"\nflas-train, stories15M shape (tied, vocab 32000, {sum(a.size for _, a in arrays) / 1e6:.1f} M parameters), "
          f"per-rank batch {B} x {T}, 1 thread per rank, median of {rounds} rounds ({steps} steps each, first dropped):")
    print(f"  1 rank  x 1 thread   {statistics.median(tok1):8.0f} tok/s   (MFU {100 * statistics.median(mfu1):.0f}% of "
          f"the measured sgemm peak)")
    print(f"  2 ranks x 1 thread   {statistics.median(tok2):8.0f} tok/s")
    print(f"  data-parallel efficiency  {statistics.median(eff):.3f}  (per round: " +
          ", ".join(f"{x:.3f}" for x in eff) + "; target >= 0.90)")
    print(f"  gradient allreduce        {100 * statistics.median(share):.1f}% of the 2-rank step time "
          "(the ceiling of what overlapping it with backward could save)")
    print(f"\ncheckpoint write, {nbytes / 1e6:.0f} MB (weights + AdamW m + v), durable, median seconds "
          f"({len(w['flas2'])} flas-train writes per rank count, {rounds} h5py and dd):")
    for k, label in (("flas2", "flas-train, 2 ranks (parallel HDF5)"), ("flas1", "flas-train, 1 rank"),
                     ("h5py", "h5py, same tensors + fsync + rename"), ("dd", "dd bs=1M conv=fsync")):
        print(f"  {label:38s} {med[k]:6.3f} s  {nbytes / med[k] / 1e9:5.2f} GB/s")
    print(f"  flas-train 2 ranks vs h5py {med['h5py'] / med['flas2']:.2f}x, vs dd {med['dd'] / med['flas2']:.2f}x "
          f"(> 1: faster)")


if __name__ == "__main__":
    main()
