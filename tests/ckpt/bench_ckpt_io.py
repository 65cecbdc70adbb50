#!/usr/bin/python3
"""Checkpoint write throughput: FLaS (serial driver and 2 MPI ranks) vs h5py writing the same tensors
vs dd on the same disk, all with fsync, interleaved run by run; medians. Also hot read-back.
Usage: bench_ckpt_io.py BENCH_BINARY MPIRUN DIR [PRESET] [RUNS] [params|optimizer]"""
import os
import statistics
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
import flas_tensors  # noqa: E402


def meta_tensors(c):
    """The FLaS tensor table (tests/oracle/flas_tensors.py) with this benchmark's convention: untied
    unless c["tied"] (tests/train/bench_train.py passes tied=1 for llama2.c's layout)."""
    return flas_tensors.meta_tensors(dict(c, tied_embeddings=1 if c.get("tied") else 0))


PRESETS = {
    # Untied here like the others (bench_ckpt_io.c's convention); pass tied=1 for llama2.c's layout.
    "stories15M": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, hidden_dim=768, vocab_size=32000),
    "stories110M": dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, hidden_dim=2048, vocab_size=32000),
    "stories42M": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=8, hidden_dim=1376, vocab_size=32000),
}


def fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    os.fsync(fd)
    os.close(fd)


def h5py_write(path, arrays, groups):
    """What a user would write by hand: same names/shapes/dtypes, contiguous, durable, renamed."""
    tmp = path + ".tmp"
    t0 = time.perf_counter()
    with h5py.File(tmp, "w") as f:
        for g in groups:
            grp = f.create_group(g)
            for name, a in arrays:
                grp.create_dataset(name, data=a)
    fsync_path(tmp)
    os.rename(tmp, path)
    fsync_path(os.path.dirname(path), True)
    return time.perf_counter() - t0


def h5py_read(path, arrays, groups):
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        for g in groups:
            for name, a in arrays:
                f[g][name].read_direct(a)
    return time.perf_counter() - t0


def dd_write(path, nbytes):
    mib = (nbytes + (1 << 20) - 1) >> 20
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fsync"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, mib << 20


def flas_runs(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.split("\n")
    w = [(float(l.split()[1]), float(l.split()[2])) for l in out if l.startswith("write ")]
    r = [(float(l.split()[1]), float(l.split()[2])) for l in out if l.startswith("read ")]
    return w, r


def main():
    binary, mpirun, outdir = sys.argv[1], sys.argv[2], sys.argv[3]
    preset = sys.argv[4] if len(sys.argv) > 4 else "stories110M"
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    contents = sys.argv[6] if len(sys.argv) > 6 else "optimizer"
    os.makedirs(outdir, exist_ok=True)
    tensors = meta_tensors(PRESETS[preset])
    rng = np.random.default_rng(0)
    arrays = [(n, rng.standard_normal(s, dtype=np.float32)) for n, s in tensors]
    groups = ["params"] + (["optimizer/m", "optimizer/v"] if contents == "optimizer" else [])
    nbytes = sum(a.nbytes for _, a in arrays) * len(groups)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    res = {k: [] for k in ("flas1_w", "flas1_r", "flas2_w", "flas2_r", "flas2c_w", "h5py_w", "h5py_r", "dd_w")}
    for i in range(runs):
        subprocess.run(["sync"])
        w, r = flas_runs([binary, outdir, preset, "1", contents])
        res["flas1_w"] += [b / t for t, b in w]
        res["flas1_r"] += [b / t for t, b in r]
        subprocess.run(["sync"])
        w, r = flas_runs([mpirun, "-np", "2", "--oversubscribe", binary, outdir, preset, "1", contents, "mpi"], env)
        res["flas2_w"] += [b / t for t, b in w]
        res["flas2_r"] += [b / t for t, b in r]
        subprocess.run(["sync"])
        w, r = flas_runs([mpirun, "-np", "2", "--oversubscribe", binary, outdir, preset, "1", contents, "mpi"],
                         dict(env, FLAS_CKPT_MPIO="collective"))
        res["flas2c_w"] += [b / t for t, b in w]
        subprocess.run(["sync"])
        path = os.path.join(outdir, "bench-h5py.h5")
        res["h5py_w"].append(nbytes / h5py_write(path, arrays, groups))
        res["h5py_r"].append(nbytes / h5py_read(path, arrays, groups))
        os.unlink(path)
        subprocess.run(["sync"])
        t, b = dd_write(os.path.join(outdir, "bench-dd.bin"), nbytes)
        res["dd_w"].append(b / t)
        os.unlink(os.path.join(outdir, "bench-dd.bin"))
        print(f"run {i + 1}/{runs}: " + ", ".join(f"{k} {v[-1] / 1e9:.2f}" for k, v in res.items()), flush=True)
    med = {k: statistics.median(v) / 1e9 for k, v in res.items()}
    print(f"\nCheckpoint I/O, {preset} (untied) {contents}: {nbytes / 1e9:.2f} GB per checkpoint, "
          f"median of {runs} runs, GB/s (write includes fsync + rename + directory fsync)")
    print(f"  FLaS write, serial driver     {med['flas1_w']:6.2f}")
    print(f"  FLaS write, 2 ranks MPI-IO    {med['flas2_w']:6.2f}   (tp=2 split, independent raw data)")
    print(f"  FLaS write, 2 ranks collective{med['flas2c_w']:6.2f}   (FLAS_CKPT_MPIO=collective)")
    print(f"  h5py write (same tensors)     {med['h5py_w']:6.2f}")
    print(f"  dd bs=1M conv=fsync           {med['dd_w']:6.2f}")
    print(f"  FLaS read (hot), serial       {med['flas1_r']:6.2f}")
    print(f"  FLaS read (hot), 2 ranks      {med['flas2_r']:6.2f}")
    print(f"  h5py read (hot)               {med['h5py_r']:6.2f}")
    print(f"  ratio FLaS serial / h5py write {med['flas1_w'] / med['h5py_w']:.2f}x, / dd {med['flas1_w'] / med['dd_w']:.2f}x; "
          f"2 ranks / dd {med['flas2_w'] / med['dd_w']:.2f}x")


if __name__ == "__main__":
    main()
