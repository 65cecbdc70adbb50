#!/usr/bin/python3
"""Peak memory of flas-aggregate does not grow with the model: three local checkpoints of > 2 GiB each
(542 M parameters, 2.17 GB) plus a 2.17 GB previous global, merged with DiLoCo (so the momentum buffer
streams too, 4.3 GB written), must stay below 256 MiB of peak RSS (the kernel's getrusage of the child,
the number /usr/bin/time -v prints as "Maximum resident set size"). Spot checks of the result against
numpy prove the merge really happened. Needs ~14 GB of disk under WORKDIR.
Usage: test_agg_rss.py FLAS_AGGREGATE WORKDIR [LIMIT_MIB]"""
import os
import shutil
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agg_lib as L  # noqa: E402

BIG = dict(dim=2048, n_layers=8, n_heads=16, n_kv_heads=16, hidden_dim=5632, vocab_size=32000, seq_len=2048,
           norm_eps=1e-5, rope_theta=10000.0, tied_embeddings=0)
TOKENS = [4000, 1000, 3000]


def value(name, shape, seed):
    """Cheap deterministic values per tensor (uniform in [-0.05, 0.05))."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return (rng.random(shape, dtype=np.float32) - 0.5) * 0.1


class Lazy(dict):
    """params mapping for write_ckpt that builds each tensor when written (one tensor in memory)."""

    def __init__(self, seed, base=None):
        super().__init__()
        self.seed, self.base = seed, base
        self.names = L.meta_tensors(BIG)

    def items(self):
        for name, shape in self.names:
            x = value(name, shape, 0)
            yield name, x if self.seed == 0 else x + value(name, shape, self.seed) * 0.2


def main():
    binary, work = sys.argv[1], sys.argv[2]
    limit = float(sys.argv[3]) if len(sys.argv) > 3 else 256.0
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t0 = time.time()
    glob = os.path.join(work, "global.h5")
    L.write_ckpt(glob, Lazy(0), role="global", rnd=0, cfg=BIG)
    base = L.sha256(glob)
    inputs = []
    for j, tok in enumerate(TOKENS):
        p = os.path.join(work, f"local-{j}.h5")
        L.write_ckpt(p, Lazy(j + 1), rnd=0, site=f"site-{j}", tokens=tok, base=base, cfg=BIG)
        inputs.append(p)
    sizes = [os.path.getsize(p) for p in inputs]
    print(f"inputs: {len(inputs)} x {min(sizes) / 2**30:.2f} GiB (+ previous global {os.path.getsize(glob) / 2**30:.2f}"
          f" GiB), written in {time.time() - t0:.0f} s", flush=True)
    if min(sizes) < 2 * 2**30:
        print("FAIL: the inputs are smaller than 2 GiB")
        return 1

    out = os.path.join(work, "next.h5")
    t0 = time.time()
    proc = subprocess.Popen(["/usr/bin/time", "-v", binary, "-p", glob, "-o", out, "-s", "diloco", *inputs],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    so, se = proc.communicate()
    wall = time.time() - t0
    if proc.returncode != 0:
        print(f"FAIL: flas-aggregate exited {proc.returncode}:\n{se}")
        return 1
    rss_kib = [int(l.split(":")[1]) for l in se.split("\n") if "Maximum resident set size" in l][0]
    print(so.strip().split("\n")[0])
    print(f"peak RSS {rss_kib / 1024:.1f} MiB (limit {limit:.0f} MiB) merging {sum(sizes) / 2**30:.2f} GiB of inputs "
          f"in {wall:.1f} s")

    # Spot checks: DiLoCo's first round from m = 0: g = x - avg, m = g, x' = x - lr (1 + mu) g.
    p = np.asarray(TOKENS, dtype=np.float64) / sum(TOKENS)
    ok = True
    with h5py.File(out, "r") as f:
        for name, sl in [("norm.weight", np.s_[:]), ("layers.7.feed_forward.w2.weight", np.s_[100:103, :]),
                         ("output.weight", np.s_[31990:32000, :]), ("tok_embeddings.weight", np.s_[0:2, :])]:
            shape = dict(L.meta_tensors(BIG))[name]
            x = value(name, shape, 0)[sl].astype(np.float64)
            avg = sum(p[j] * (value(name, shape, 0) + value(name, shape, j + 1) * 0.2)[sl].astype(np.float64)
                      for j in range(3))
            g = x - avg
            want = x - 0.7 * (1 + 0.9) * g
            got = f["params"][name][sl]
            if not np.allclose(got, want, rtol=2e-6, atol=1e-7):
                print(f"FAIL: {name} differs from the reference")
                ok = False
            if not np.allclose(f["server/m"][name][sl], g, rtol=1e-5, atol=1e-8):
                print(f"FAIL: server/m/{name} differs from the reference")
                ok = False
    if rss_kib / 1024 >= limit:
        print(f"FAIL: peak RSS {rss_kib / 1024:.1f} MiB >= {limit:.0f} MiB")
        ok = False
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
