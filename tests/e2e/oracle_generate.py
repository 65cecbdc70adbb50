#!/usr/bin/python3
"""Oracle for flas-generate: greedy decoding (--temperature 0) of a trained checkpoint equals greedy
decoding by PyTorch (tests/oracle/llama_torch.py, float64, weights read with h5py) with the prompt
encoded and the result decoded by python3-sentencepiece.

usage: oracle_generate.py FLAS_GENERATE CHECKPOINT TOKENIZER N PROMPT...
Prints the smallest gap between the best and the second-best logit seen, so a run shows how far it
was from a near tie (where float rounding could pick the other token); a mismatch says if one was."""
import os
import subprocess
import sys

import h5py
import numpy as np
import sentencepiece as spm
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
from llama_torch import Transformer  # noqa: E402

MIN_GAP = 1e-4  # logits; float32 forward passes agree with float64 to ~1e-5 on these models


def load(path):
    with h5py.File(path, "r") as f:
        a = f.attrs
        cfg = {k: int(a[k]) for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size",
                                      "seq_len", "tied_embeddings")}
        cfg["norm_eps"], cfg["rope_theta"] = float(a["norm_eps"]), float(a["rope_theta"])
        model = Transformer(cfg, dtype=torch.float64)
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name in f["params"]:
                named[name].copy_(torch.from_numpy(f["params"][name][...].astype(np.float64)))
    return model.eval(), cfg


def greedy(model, cfg, ids, n, eos):
    gaps = []
    new = []
    with torch.no_grad():
        for _ in range(n):
            window = ids[-cfg["seq_len"]:]
            logits, _ = model(torch.tensor([window]))
            row = logits[0, -1]
            top = torch.topk(row, 2)
            gaps.append(float(top.values[0] - top.values[1]))
            nxt = int(top.indices[0])
            ids = ids + [nxt]
            new.append(nxt)
            if nxt == eos:
                break
    return new, min(gaps)


def main():
    tool, ckpt, tok, n, prompts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
    sp = spm.SentencePieceProcessor(model_file=tok)
    model, cfg = load(ckpt)
    failures, worst_gap = [], float("inf")
    for prompt in prompts:
        ids = [sp.bos_id()] + sp.encode(prompt)
        new, gap = greedy(model, cfg, ids, n, sp.eos_id())
        worst_gap = min(worst_gap, gap)
        want = prompt + sp.decode([i for i in new if i != sp.eos_id()])  # flas-generate prints prompt + text
        got = subprocess.run([tool, "-m", ckpt, "-t", tok, "-n", str(n), "--temperature", "0", "--threads", "1",
                              prompt], capture_output=True, text=True)
        if got.returncode != 0:
            failures.append(f"{prompt!r}: flas-generate exited {got.returncode}: {got.stderr.strip()}")
            continue
        text = got.stdout.rstrip("\n")
        if text != want:
            tie = f" (after a near tie, logit gap {gap:.2e}: float rounding may decide)" if gap < MIN_GAP else ""
            failures.append(f"{prompt!r}: flas-generate wrote {text!r}, PyTorch greedy {want!r}{tie}")
    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    print(f"PASS: greedy flas-generate == PyTorch (float64) greedy on {len(prompts)} prompts x {n} tokens "
          f"(smallest top-2 logit gap {worst_gap:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
