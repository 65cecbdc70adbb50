#!/usr/bin/python3
"""Benchmark (not a test): flas-convert on a 1.1 GB FLaS checkpoint against dd on the same disk.

Makes a random global of dim 2048, 5 layers, hidden 5632, vocabulary 4096 (273.7 M parameters,
1.095e9 bytes of float32; the SentencePiece model of 4096 pieces for the GGUF is trained here on
made-up words), then times, RUNS times each, with the page cache dropped before every run (warm cache
when /proc/sys/vm/drop_caches cannot be written; the table says which):

  hf        flas-convert X.h5 out_dir                       (safetensors, f32, one file)
  gguf f16  flas-convert X.h5 out.gguf --dtype f16 --tokenizer T
  dd        dd if=X.h5 of=copy bs=16M conv=fsync

GB/s = bytes of X.h5 (the input) / wall seconds, median of RUNS (1 GB = 1e9 bytes); the ratio is against
dd's median; the three commands run in rounds (dd, hf, gguf), so that a slow spell of a shared disk hits
them alike; cpu s is user + system time (median). The converter fsyncs its output like dd's conv=fsync.
Peak RSS (GNU time) is printed next to the largest tensor's float32 bytes, the converter's stated working
set. Everything it writes is deleted at the end (about 4.5 GB at the peak; it refuses to start with
under 6 GB free).

usage: bench_convert.py FLAS_CONVERT FLAS_TRAIN WORKDIR [RUNS]"""
import os
import shutil
import statistics
import subprocess
import sys
import time

import h5py
import numpy as np

MODEL = ["--dim", "2048", "--layers", "5", "--heads", "16", "--kv-heads", "16", "--hidden", "5632",
         "--vocab", "4096", "--seq-len", "2048", "--seed", "3"]
VOCAB = 4096
NEED_FREE = 6 * 10**9


def drop_caches():
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(argv, work, cold):
    """(wall s, peak RSS KiB, user + system CPU s) of argv under GNU time, after dropping the page cache."""
    if cold:
        drop_caches()
    rss_file = os.path.join(work, "time.txt")
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", rss_file] + argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"bench_convert: {' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    with open(rss_file) as f:
        rss, user, sys_ = f.read().split()[-3:]
    return wall, int(rss), float(user) + float(sys_)


def rm(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def du(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    convert, train, work = [os.path.abspath(a) for a in sys.argv[1:4]]
    runs = int(sys.argv[4]) if len(sys.argv) == 5 else 3
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    free = shutil.disk_usage(work).free
    if free < NEED_FREE:
        sys.exit(f"bench_convert: {free / 1e9:.1f} GB free under {work}, need {NEED_FREE / 1e9:.0f} GB")
    p = lambda *n: os.path.join(work, *n)
    try:
        import sentencepiece as spm
        rng = np.random.default_rng(1)
        syll = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"] + [c + v + "n" for c in "bdgkmt" for v in "aeiou"]
        words = ["".join(rng.choice(syll, rng.integers(1, 5))) for _ in range(20000)]
        with open(p("text.txt"), "w") as f:
            for _ in range(40000):
                f.write(" ".join(rng.choice(words, 12)) + ".\n")
        spm.SentencePieceTrainer.train(input=p("text.txt"), model_prefix=p("tok"), vocab_size=VOCAB,
                                       model_type="bpe", byte_fallback=True, minloglevel=2, num_threads=2)
        x = p("model.h5")
        t0 = time.perf_counter()
        subprocess.run([train, "--init"] + MODEL + ["--output", x], check=True, capture_output=True)
        print(f"model: {x} ({du(x) / 1e9:.3f} GB, written in {time.perf_counter() - t0:.1f} s)")
        with h5py.File(x, "r") as f:
            sizes = {k: f["params"][k].size * 4 for k in f["params"]}
        largest = max(sizes, key=sizes.get)
        in_bytes = du(x)
        cold = drop_caches()
        print(f"page cache: {'dropped before every run' if cold else 'NOT dropped (no permission): warm cache'}")
        print(f"disk: {shutil.disk_usage(work).free / 1e9:.1f} GB free on the file system of {work}\n")

        cases = [
            ("dd bs=16M conv=fsync", lambda: ["dd", "if=" + x, "of=" + p("copy.h5"), "bs=16M", "conv=fsync"],
             p("copy.h5")),
            ("flas-convert -> hf f32", lambda: [convert, "--quiet", x, p("hf")], p("hf")),
            ("flas-convert -> gguf f16", lambda: [convert, "--quiet", "--dtype", "f16", "--tokenizer", p("tok.model"),
                                                  x, p("m.gguf")], p("m.gguf")),
        ]
        # Rounds of (dd, hf, gguf): a slow spell of a shared disk then hits every command alike.
        meas = {name: ([], [], [], 0) for name, _, _ in cases}
        for _ in range(runs):
            for name, argv, out in cases:
                rm(out)
                wall, rss, cpu = timed(argv(), work, cold)
                walls, rsss, cpus, _ = meas[name]
                walls.append(wall)
                rsss.append(rss)
                cpus.append(cpu)
                meas[name] = (walls, rsss, cpus, du(out))
                rm(out)
        results = []
        for name, _, _ in cases:
            walls, rsss, cpus, out_bytes = meas[name]
            med = statistics.median(walls)
            results.append((name, walls, med, in_bytes / med / 1e9, out_bytes, max(rsss), statistics.median(cpus)))
        dd_rate = results[0][3]
        print(f"input {in_bytes} bytes ({in_bytes / 1e9:.3f} GB); GB/s = input bytes / wall s, median of {runs}; "
              f"{'cold' if cold else 'warm'} cache")
        print(f"{'what':26s} {'runs (s)':>24s} {'median s':>9s} {'GB/s':>7s} {'x dd':>6s} {'cpu s':>6s} "
              f"{'out GB':>7s} {'peak RSS MiB':>13s}")
        for name, walls, med, rate, ob, rss, cpu in results:
            print(f"{name:26s} {' '.join(f'{w:.2f}' for w in walls):>24s} {med:9.2f} {rate:7.3f} "
                  f"{rate / dd_rate:6.2f} {cpu:6.2f} {ob / 1e9:7.3f} {rss / 1024:13.1f}")
        lt = sizes[largest]
        print(f"\nlargest tensor: {largest}, {lt} bytes as float32 ({lt / 2**20:.1f} MiB)")
        for name, _, _, rate, _, rss, _ in results[1:]:
            verdict = "meets" if rate >= 0.7 * dd_rate else "MISSES"
            print(f"{name}: {rate / dd_rate:.2f}x dd ({verdict} the 0.7x goal); peak RSS {rss / 1024:.1f} MiB = "
                  f"{rss * 1024 / lt:.1f}x the largest tensor")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
