#!/usr/bin/python3
"""Oracle: flas-prepare's shards of the demo corpora hold exactly BOS + python3-sentencepiece's
ids of every line, in input order; the headers follow docs/data.md (magic, version, vocab size,
dtype, counts, the SHA-256 of the tokenizer file and of the tokens).

usage: oracle_shards.py FLAS_PREPARE MODEL CORPUS_DIR SCRATCH_DIR"""
import glob
import hashlib
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import sentencepiece as spm

TOOL, MODEL, CORPUS, SCRATCH = sys.argv[1:5]
failures = []
inputs = [f"{CORPUS}/{lang}/{part}.txt" for lang in ("it", "cs") for part in ("train", "valid")]
shutil.rmtree(SCRATCH, ignore_errors=True)
os.makedirs(SCRATCH)
out = os.path.join(SCRATCH, "shards")
r = subprocess.run([TOOL, "-t", MODEL, "-o", out, "-j", "2", "--shard-tokens", "1000000"] + inputs,
                   capture_output=True, text=True)
print(r.stdout.strip())
if r.returncode != 0:
    sys.exit(f"flas-prepare failed: {r.stderr}")

sp = spm.SentencePieceProcessor(model_file=MODEL)
with open(MODEL, "rb") as f:
    model_sha = hashlib.sha256(f.read()).digest()
total_tokens = total_bytes = total_docs = 0
for i, path in enumerate(inputs):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in f.read().split("\n") if d.strip()]
    want = np.concatenate([np.array([sp.bos_id()] + ids, dtype=np.int64) for ids in sp.encode(docs)])
    parts, n_docs = [], 0
    for shard in sorted(glob.glob(f"{out}/part-{i:06d}-*.flastok")):
        with open(shard, "rb") as f:
            raw = f.read()
        magic, version, hbytes, vocab, tbytes, n_tokens, n_documents, bos, eos, flags = \
            struct.unpack_from("<8sIIIIQQiiI", raw, 0)
        tok_sha, payload_sha = raw[56:88], raw[88:120]
        payload = raw[hbytes:]
        ok = (magic == b"FLASTOK\0" and version == 1 and hbytes == 128 and vocab == sp.get_piece_size()
              and tbytes == 2 and len(payload) == n_tokens * 2 and bos == sp.bos_id() and eos == sp.eos_id()
              and flags == 1 and tok_sha == model_sha and payload_sha == hashlib.sha256(payload).digest()
              and raw[52:56] == b"\0" * 4 and raw[120:128] == b"\0" * 8)
        if not ok:
            failures.append(f"{shard}: header does not follow the documented format")
        parts.append(np.frombuffer(payload, dtype="<u2").astype(np.int64))
        n_docs += n_documents
    got = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if len(parts) < 1 or n_docs != len(docs):
        failures.append(f"{path}: {len(parts)} shards with {n_docs} documents, expected {len(docs)} documents")
    if got.shape != want.shape or not np.array_equal(got, want):
        first = int(np.argmax(got[:len(want)] != want[:len(got)])) if min(len(got), len(want)) else 0
        failures.append(f"{path}: token stream differs from python3-sentencepiece "
                        f"({len(got)} vs {len(want)} tokens, first difference at {first})")
    total_tokens += len(got) - len(docs)
    total_bytes += sum(len(d.encode("utf-8")) for d in docs)
    total_docs += len(docs)
    print(f"{path}: {len(parts)} shards, {len(docs)} documents, {len(got)} tokens: "
          f"{'equal' if np.array_equal(got, want) else 'DIFFERENT'}")
print(f"oracle_shards: {total_docs} documents, {total_bytes} bytes, {total_tokens} text tokens, "
      f"{total_bytes / total_tokens:.2f} bytes/token")
shutil.rmtree(SCRATCH, ignore_errors=True)
for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)
