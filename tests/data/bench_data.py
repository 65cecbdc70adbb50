#!/usr/bin/python3
"""Benchmark of the data path (not a test): `cmake --build build --target bench_data`.

Tokenization: flas-prepare (1 and 2 threads, shards written and fsync'ed) against the peers a user
would pick, measured in the same run on the same text: Debian's spm_encode (ids as text) and
python3-sentencepiece's batch encode (2 threads, ids kept in memory). Loader: flas_loader_next
(shuffled windows with targets, int32) against nanoGPT's get_batch (numpy memmap, random offsets,
int64). Medians of 3 runs; the machine is shared, so numbers are noisy.

usage: bench_data.py FLAS_PREPARE BENCH_LOADER FLAS_CORPUS FLAS_VOCAB WORK_DIR"""
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import sentencepiece as spm

PREPARE, LOADER, CORPUS_TOOL, VOCAB_TOOL, WORK = sys.argv[1:6]
PY = "/usr/bin/python3"
RUNS = 3
os.makedirs(WORK, exist_ok=True)
corpus, model = os.path.join(WORK, "corpus"), os.path.join(WORK, "demo.model")
for lang in ("it", "cs"):
    if not os.path.exists(os.path.join(corpus, lang, "train.txt")):
        subprocess.run([PY, CORPUS_TOOL, "--lang", lang, "--out", os.path.join(corpus, lang), "--quiet"], check=True)
if not os.path.exists(model):
    subprocess.run(["bash", VOCAB_TOOL, "--out", model[:-6], "--vocab-size", "4096",
                    f"{corpus}/it/train.txt", f"{corpus}/cs/train.txt"], check=True)

# The input: both training corpora as 4 files (two halves each, ~8 MB), so 2 threads have work.
inputs = []
for lang in ("it", "cs"):
    docs = open(f"{corpus}/{lang}/train.txt", encoding="utf-8").read().split("\n")[:-1]
    for half, part in enumerate((docs[:len(docs) // 2], docs[len(docs) // 2:])):
        p = os.path.join(WORK, f"input-{lang}{half}.txt")
        with open(p, "w", encoding="utf-8") as f:
            f.write("".join(d + "\n" for d in part))
        inputs.append(p)
total_bytes = sum(os.path.getsize(p) for p in inputs)
lines = [l for p in inputs for l in open(p, encoding="utf-8").read().split("\n") if l.strip()]


def median_time(fn):
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flas_prepare(threads):
    out = os.path.join(WORK, "shards")
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([PREPARE, "-q", "-t", model, "-o", out, "-j", str(threads)] + inputs, check=True,
                   stdout=subprocess.DEVNULL)


def spm_encode():
    for p in inputs:
        subprocess.run(["spm_encode", f"--model={model}", "--output_format=id", f"--input={p}",
                        "--output=/dev/null"], check=True)


sp = spm.SentencePieceProcessor(model_file=model)
results = {
    "flas-prepare -j1": median_time(lambda: flas_prepare(1)),
    "flas-prepare -j2": median_time(lambda: flas_prepare(2)),
    "spm_encode (1 thread)": median_time(spm_encode),
    "python sentencepiece (2 threads)": median_time(lambda: sp.encode(lines, num_threads=2)),
}
print(f"tokenization of {total_bytes / 1e6:.1f} MB ({len(lines)} documents), median of {RUNS}:")
base = results["flas-prepare -j2"]
for name, t in results.items():
    print(f"  {name:34s} {total_bytes / t / 1e6:6.2f} MB/s   flas-prepare -j2 is {t / base:4.2f}x as fast")

# Loader: stories15M-like batches (B 8, T 256) from the shards just written.
flas_prepare(2)
shard_dir = os.path.join(WORK, "shards")
B, T = 8, 256
flas_rates = []
for _ in range(RUNS):
    r = subprocess.run([LOADER, shard_dir, "4096", str(B), str(T), "1.0"], check=True, capture_output=True, text=True)
    flas_rates.append(float(r.stdout.split()[1]))
flat = os.path.join(WORK, "tokens.bin")  # nanoGPT keeps one flat uint16 file
with open(flat, "wb") as f:
    for name in sorted(os.listdir(shard_dir)):
        with open(os.path.join(shard_dir, name), "rb") as s:
            f.write(s.read()[128:])
data = np.memmap(flat, dtype=np.uint16, mode="r")
rng = np.random.default_rng(1)


def numpy_rate():
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        for _ in range(64):
            ix = rng.integers(0, len(data) - T - 1, B)
            x = np.stack([data[i:i + T].astype(np.int64) for i in ix])
            y = np.stack([data[i + 1:i + 1 + T].astype(np.int64) for i in ix])
            n += x.size + 0 * y.size
    return n / (time.perf_counter() - t0)


numpy_rates = [numpy_rate() for _ in range(RUNS)]
f, p = statistics.median(flas_rates), statistics.median(numpy_rates)
print(f"loader, B {B} x T {T} with targets, median of {RUNS}:")
print(f"  flas_loader_next (shuffled, int32)        {f / 1e6:8.1f} M tokens/s")
print(f"  numpy memmap get_batch (nanoGPT, int64)   {p / 1e6:8.1f} M tokens/s   flas is {f / p:.1f}x as fast")
