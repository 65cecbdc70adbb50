#!/usr/bin/python3
"""llama.cpp is the oracle of FLaS's GGUF export (ctest labels: oracle, interop).

A small LLaMA is trained by FLaS on the demo corpora (Italian + Czech, the data_vocab fixture's 2000-piece
BPE), exported with `flas-convert --tokenizer demo.model` to GGUF F32 and Q8_0, and loaded by llama.cpp
(node-llama-cpp 3.21.1's prebuilt linux-x64 CPU binary, llamacpp/oracle.mjs). Checks:
  install    only the linux-x64 CPU package of node-llama-cpp is installed (no CUDA/Vulkan variant) and
             llama.cpp loads from it with no build and no GPU
  metadata   llama.cpp reads the F32 file as a llama model with an SPM vocabulary of the tokenizer's size,
             BOS/EOS of the tokenizer, add-BOS on, the model's context length, file types ALL_F32/MOSTLY_Q8_0
  tokenize   llama.cpp's tokenization (no BOS, no special-token parsing) of EVERY validation line of both
             corpora equals FLaS's (tokenize_dump, SentencePiece-exact: tests/data/oracle_tokenizer.py)
  probs      at every position of two 64-token prompts (BOS + a validation line of each language) the
             next-token distributions of llama.cpp (F32 file, F32 KV cache) and of FLaS's forward pass
             (the h5 checkpoint, softmax in double) agree: max |p_llama - p_flas| <= PROB_TOL,
             max KL(p_flas || p_llama) <= KL_TOL and the same argmax; also printed: max |delta log p|
  greedy     32-token greedy continuations of a 32-token prompt of each language are identical (the
             smallest top1 - top2 logit gap is printed: a near-tie would show there)
  ppl        on held-out text (the first PPL_LINES validation lines of each corpus, BOS + up to seq_len - 1
             tokens each) the Q8_0 file's perplexity is within PPL_Q8_REL of the F32 file's; the F32 file's
             perplexity equals FLaS's own within PPL_F32_REL
Each check fails on a GGUF whose attention rows are in the wrong RoPE order (checked by hand once).

usage: test_llamacpp.py --convert FLAS_CONVERT --train FLAS_TRAIN --prepare FLAS_PREPARE
         --tokenize-dump TOKENIZE_DUMP --logits FLAS_LOGITS --mpiexec MPIEXEC --oracle-dir DIR
         --tokenizer demo.model --corpus CORPUS_DIR --work WORKDIR [--model H5] [--gguf-f32 F --gguf-q8 F]
(for debugging a converter: --model judges this checkpoint instead of training one, --gguf-f32/--gguf-q8
these files instead of flas-convert's)"""
import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import sentencepiece as spm

PROB_TOL = 1e-4      # max |p_llama - p_flas| over positions and vocabulary
KL_TOL = 1e-6        # max over positions of KL(p_flas || p_llama), nats
PPL_Q8_REL = 0.01    # |ppl(Q8_0) / ppl(F32) - 1|
PPL_F32_REL = 1e-5   # |ppl(llama.cpp, F32) / ppl(FLaS) - 1|
GREEDY_PROMPT, GREEDY_NEW = 32, 32
PPL_LINES = 150      # held-out validation lines of each language for the perplexities
MODEL = ["--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--hidden", "192", "--vocab", "2000",
         "--seq-len", "64"]
SEQ_LEN = 64
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
LANGS = ("it", "cs")


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


FAILED = []


def bad(msg):
    """A check failed: reported now, the other checks still run, the test fails at the end."""
    print("FAIL: " + msg, flush=True)
    FAILED.append(msg.split(":")[0])


def ok(msg):
    print("ok " + msg, flush=True)


def run(cmd, what, env=None, timeout=600, **kw):
    e = dict(os.environ, **ROOT_ENV)
    for k in [k for k in e if k.startswith("FLAS_")]:
        del e[k]  # the caller's FLAS_* must not leak into the tools
    e.update(env or {})
    t0 = time.time()
    p = subprocess.run(cmd, env=e, capture_output=True, timeout=timeout, **kw)
    if p.returncode != 0:
        out = p.stdout if isinstance(p.stdout, str) else p.stdout[-4000:].decode(errors="replace")
        err = p.stderr if isinstance(p.stderr, str) else p.stderr[-4000:].decode(errors="replace")
        fail(f"{what}: exit {p.returncode}: {' '.join(map(str, cmd))}\n{out}\n{err}")
    return p, time.time() - t0


class Oracle:
    """Runs llamacpp/oracle.mjs (installed with its node_modules in DIR) on a request, in the background."""

    def __init__(self, directory, work, request, what):
        self.what, self.t0 = what, time.time()
        self.req = os.path.join(work, f"oracle-{what}-req.json")
        self.res = os.path.join(work, f"oracle-{what}-res.json")
        with open(self.req, "w") as f:
            json.dump(request, f)
        self.cmd = ["node", os.path.join(directory, "oracle.mjs"), self.req, self.res]
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self):
        out, _ = self.p.communicate(timeout=900)
        if self.p.returncode != 0:
            fail(f"llama.cpp ({self.what}): exit {self.p.returncode}: {' '.join(self.cmd)}\n{out[-4000:]}")
        with open(self.res) as f:
            res = json.load(f)
        for line in res["info"].get("log", []):
            if "n_ctx_seq" not in line:  # the context is larger than the model's on purpose (oracle.mjs)
                print(f"  llama.cpp [{self.what}] {line}")
        return res, time.time() - self.t0


def check_install(directory):
    """Only the linux-x64 CPU binary package, pinned versions, no GPU variant anywhere."""
    nm = os.path.join(directory, "node_modules")
    if not os.path.isdir(nm):
        fail(f"{nm} missing: the llama.cpp setup test (npm ci) did not run")
    scoped = sorted(os.listdir(os.path.join(nm, "@node-llama-cpp")))
    if scoped != ["linux-x64"]:
        fail(f"node_modules/@node-llama-cpp holds {scoped}, expected only linux-x64")
    gpu = []
    for top, dirs, _ in os.walk(nm):
        gpu += [os.path.join(top, d) for d in dirs if "cuda" in d.lower() or "vulkan" in d.lower()]
    if gpu:
        fail(f"GPU variants installed: {gpu[:5]}")
    versions = {}
    for pkg in ("node-llama-cpp", "@node-llama-cpp/linux-x64"):
        with open(os.path.join(nm, pkg, "package.json")) as f:
            versions[pkg] = json.load(f)["version"]
    if set(versions.values()) != {"3.21.1"}:
        fail(f"versions {versions}, expected 3.21.1")
    size = 0
    for top, _, files in os.walk(nm):
        size += sum(os.lstat(os.path.join(top, x)).st_size for x in files)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{versions['node-llama-cpp']} ({len(os.listdir(nm))} top-level packages, {size / 2**20:.0f} MiB, "
            f"node {node})")


def lines_of(path):
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def flas_tokenize(tool, model, lines):
    """ids of every line with the FLaS tokenizer, no BOS/EOS (tokenize_dump's record protocol)."""
    inp = b"".join(struct.pack("<I", len(x)) + x for x in lines)
    p, _ = run([tool, model, "none"], "tokenize_dump", input=inp)
    out, pos, ids = p.stdout, 0, []
    for _ in lines:
        (n,) = struct.unpack_from("<I", out, pos)
        pos += 4
        ids.append(list(struct.unpack_from(f"<{n}i", out, pos)))
        pos += 4 * n
        (d,) = struct.unpack_from("<I", out, pos)
        pos += 4 + d
    return ids


def write_ids(path, seqs):
    with open(path, "w") as f:
        for s in seqs:
            f.write(" ".join(map(str, s)) + "\n")


def json_lines(path):
    with open(path) as f:
        return [json.loads(x) for x in f]


def train(a, W, work):
    """A round of FLaS training on 1 rank from a fresh round-0 global."""
    run([a.train, "--init"] + MODEL + ["--seed", "1", "--output", W("global.h5")], "flas-train --init")
    p, dt = run([a.mpiexec, "-n", "1", a.train, "--global", W("global.h5"), "--output", W("model.h5"),
                 "--output-dir", work, "--site", "interop", "--data", W("train"), "--valid", W("valid"),
                 "--steps", "1500", "--batch", "8", "--lr", "3e-3", "--warmup", "50", "--threads", "2",
                 "--log-every", "100"], "flas-train", text=True)
    vline = [x for x in p.stdout.splitlines() + p.stderr.splitlines() if "validation after" in x]
    ok(f"trained dim 64, 2 layers, 4/2 heads, hidden 192, vocab 2000, seq 64: 1500 steps in {dt:.1f} s"
       + (f" ({vline[-1].split(': ', 1)[-1]})" if vline else ""))


def main():
    ap = argparse.ArgumentParser()
    for opt in ("convert", "train", "prepare", "tokenize-dump", "logits", "mpiexec", "oracle-dir", "tokenizer",
                "corpus", "work"):
        ap.add_argument("--" + opt, required=True)
    ap.add_argument("--model", help="judge this FLaS checkpoint (of MODEL's shape) instead of training one")
    ap.add_argument("--gguf-f32")
    ap.add_argument("--gguf-q8")
    a = ap.parse_args()
    t_start = time.time()
    for tool in (a.convert, a.train, a.prepare, a.tokenize_dump, a.logits, a.mpiexec):
        if not os.access(tool, os.X_OK):
            fail(f"missing tool {tool}")
    if not shutil.which("node"):
        fail("node not found (Debian: nodejs)")
    major = int(subprocess.run(["node", "-p", "process.versions.node"], capture_output=True, text=True)
                .stdout.split(".")[0])
    if major < 20:
        fail(f"node {major}: node-llama-cpp 3.21.1 needs Node.js >= 20")

    ok("install: node-llama-cpp " + check_install(a.oracle_dir))

    work = a.work
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    W = lambda *x: os.path.join(work, *x)  # noqa: E731

    # The model: FLaS's shards of both corpora, a round of training on 1 rank.
    train_txt = [os.path.join(a.corpus, lang, "train.txt") for lang in LANGS]
    valid_txt = [os.path.join(a.corpus, lang, "valid.txt") for lang in LANGS]
    run([a.prepare, "-q", "-j", "2", "--tokenizer", a.tokenizer, "--vocab-size", "2000", "--out", W("train")]
        + train_txt, "flas-prepare train")
    run([a.prepare, "-q", "-j", "1", "--tokenizer", a.tokenizer, "--vocab-size", "2000", "--out", W("valid")]
        + valid_txt, "flas-prepare valid")
    if a.model:
        shutil.copy(a.model, W("model.h5"))
    else:
        train(a, W, work)

    # The export.
    f32, q8 = W("m-f32.gguf"), W("m-q8_0.gguf")
    if a.gguf_f32:
        shutil.copy(a.gguf_f32, f32)
        shutil.copy(a.gguf_q8 or a.gguf_f32, q8)
        print(f"  (judging given files {a.gguf_f32}, {a.gguf_q8})")
    else:
        run([a.convert, "--quiet", W("model.h5"), f32, "--tokenizer", a.tokenizer], "flas-convert f32")
        run([a.convert, "--quiet", "--dtype", "q8_0", W("model.h5"), q8, "--tokenizer", a.tokenizer],
            "flas-convert q8_0")
    # The 16-bit exports: llama.cpp must read them too (perplexity within the same 1% of F32).
    halves = {dt: W(f"m-{dt}.gguf") for dt in ("f16", "bf16")}
    for dt, path in halves.items():
        run([a.convert, "--quiet", "--dtype", dt, W("model.h5"), path, "--tokenizer", a.tokenizer], "flas-convert " + dt)
    ok(f"exported: {os.path.getsize(f32)} bytes F32, {os.path.getsize(q8)} bytes Q8_0")

    # Token ids of every validation line, both ways.
    texts, flas_ids = [], []
    for path in valid_txt:
        ls = lines_of(path)
        texts += ls
        flas_ids += flas_tokenize(a.tokenize_dump, a.tokenizer, ls)
    by_lang = {}
    pos = 0
    for lang, path in zip(LANGS, valid_txt):
        n = len(lines_of(path))
        by_lang[lang] = flas_ids[pos:pos + n]
        pos += n
    sp = spm.SentencePieceProcessor(model_file=a.tokenizer)
    bos = sp.bos_id()

    # Prompts: BOS + the first validation line of each language long enough.
    def first_long(lang, n):
        for ids in by_lang[lang]:
            if len(ids) >= n:
                return [bos] + ids[:n]
        fail(f"no {lang} validation line of {n} tokens")

    prob_prompts = [first_long(lang, SEQ_LEN - 1) for lang in LANGS]
    greedy_prompts = [first_long(lang, GREEDY_PROMPT - 1) for lang in LANGS]
    # Held-out text: the first PPL_LINES non-empty validation lines of each language, BOS + up to seq_len - 1
    # tokens each (llama.cpp's next-token probabilities cost ~1 ms a position through node-llama-cpp).
    held_out = [[bos] + ids[:SEQ_LEN - 1] for lang in LANGS for ids in [x for x in by_lang[lang] if x][:PPL_LINES]]

    # Both llama.cpp runs at once (one thread each), a context twice the model's (oracle.mjs: check()).
    common = {"threads": 1, "kv_cache": "F32", "context": 2 * SEQ_LEN}
    run_f32 = Oracle(a.oracle_dir, work, dict(common, model=f32, tokenize=[t.decode("utf-8") for t in texts],
                                              probs=[{"ids": p, "positions": "all"} for p in prob_prompts],
                                              greedy=[{"ids": p, "n": GREEDY_NEW} for p in greedy_prompts],
                                              nll=held_out), "F32")
    run_q8 = Oracle(a.oracle_dir, work, dict(common, model=q8, nll=held_out), "Q8_0")
    lf, dt_f32 = run_f32.wait()
    lq, dt_q8 = run_q8.wait()
    runs_half = {dt: Oracle(a.oracle_dir, work, dict(common, model=path, nll=held_out), dt.upper())
                 for dt, path in halves.items()}
    lh = {dt: r.wait()[0] for dt, r in runs_half.items()}

    check_metadata(lf["info"], lq["info"], sp)
    check_tokenize(texts, flas_ids, lf["tokenize"], by_lang)
    check_probs(a, W, prob_prompts, lf["probs"])
    check_greedy(a, W, greedy_prompts, lf["greedy"])
    check_ppl(a, W, held_out, lf["nll"], lq["nll"])
    check_half(lf["nll"], lh)
    print(f"  llama.cpp ran {dt_f32:.1f} s (F32: tokenize, probs, greedy, nll) and {dt_q8:.1f} s (Q8_0: nll) "
          "at the same time")
    if FAILED:
        fail(f"{len(FAILED)} check(s) failed: {', '.join(FAILED)}")
    print(f"PASS: llama.cpp agrees with FLaS's GGUF export ({time.time() - t_start:.0f} s)")


def check_metadata(info, info_q8, sp):
    want = {"architecture": "llama", "vocabulary_type": "spm", "vocab_size": sp.vocab_size(), "bos": sp.bos_id(),
            "eos": sp.eos_id(), "add_bos": True, "add_eos": False, "train_context": SEQ_LEN, "gpu": False,
            "build": "prebuilt", "file_type": 0}  # file types: 0 = ALL_F32, 7 = MOSTLY_Q8_0
    wrong = {k: (info.get(k), v) for k, v in want.items() if info.get(k) != v}
    if info_q8.get("file_type") != 7:
        wrong["q8_0 file_type"] = (info_q8.get("file_type"), 7)
    if wrong:
        return bad(f"metadata: llama.cpp reads the export differently (got, expected): {wrong}")
    ok(f"metadata: llama.cpp {info.get('llama_cpp_release')} ({info['build']}, CPU) reads a llama model, "
       f"{info['vocabulary_type']} vocabulary of {info['vocab_size']}, BOS {info['bos']} EOS {info['eos']}, "
       f"context {info['train_context']}; file types {info['file_type']} (F32) and {info_q8['file_type']} (Q8_0)")


def check_tokenize(texts, flas_ids, got, by_lang):
    mism = [i for i in range(len(texts)) if got[i] != flas_ids[i]]
    if mism:
        i = mism[0]
        return bad(f"tokenize: llama.cpp's ids differ on {len(mism)} of {len(texts)} validation lines; first: "
                   f"line {i} {texts[i][:120].decode(errors='replace')!r}\n  FLaS      {flas_ids[i][:40]}\n"
                   f"  llama.cpp {got[i][:40]}")
    ok(f"tokenize: {len(texts)} validation lines ({', '.join(f'{len(by_lang[x])} {x}' for x in LANGS)}), "
       f"{sum(map(len, flas_ids))} tokens: identical ids")


def check_probs(a, W, prompts, got):
    worst_p = worst_kl = worst_lp = 0.0
    failed = False
    for k, prompt in enumerate(prompts):
        write_ids(W(f"prompt-{k}.txt"), [prompt])
        run([a.logits, W("model.h5"), "logits", W(f"prompt-{k}.txt"), W(f"logits-{k}.npy")], "flas_logits")
        z = np.load(W(f"logits-{k}.npy")).astype(np.float64)
        lp_flas = z - z.max(axis=1, keepdims=True)
        lp_flas -= np.log(np.exp(lp_flas).sum(axis=1, keepdims=True))
        p_flas = np.exp(lp_flas)
        p_llama = np.array(got[k]["probs"], dtype=np.float64)
        if p_llama.shape != p_flas.shape:
            return bad(f"probs: llama.cpp gave {p_llama.shape}, FLaS {p_flas.shape}")
        if not np.all(p_llama > 0):
            return bad(f"probs: llama.cpp gave {int((p_llama <= 0).sum())} zero probabilities")
        # node-llama-cpp normalises in float32 (a sum of 2000 floats): renormalised in double for the KL
        # and log p, so that they measure the models, not that rounding (|dp| is of the raw values).
        norm = float(np.abs(p_llama.sum(axis=1) - 1).max())
        lp_llama = np.log(p_llama / p_llama.sum(axis=1, keepdims=True))
        dp = float(np.abs(p_llama - p_flas).max())
        kl = float((p_flas * (lp_flas - lp_llama)).sum(axis=1).max())
        dlp = float(np.abs(lp_llama - lp_flas).max())
        am = np.flatnonzero(p_llama.argmax(axis=1) != p_flas.argmax(axis=1))
        print(f"  prompt {LANGS[k]} ({len(prompt)} positions): max |dp| {dp:.3e}, max KL {kl:.3e}, "
              f"max |d log p| {dlp:.3e}, argmax differs at {len(am)} positions (llama.cpp's float32 "
              f"sums off 1 by <= {norm:.1e})")
        if dp > PROB_TOL or kl > KL_TOL or len(am):
            first = int(np.flatnonzero(np.abs(p_llama - p_flas).max(axis=1) > PROB_TOL)[:1].sum())
            bad(f"probs: next-token distributions of llama.cpp and FLaS differ on the {LANGS[k]} prompt: "
                f"max |dp| {dp:.3e} (tolerance {PROB_TOL:g}), max KL {kl:.3e} (tolerance {KL_TOL:g}), "
                f"argmax differs at positions {am[:10].tolist()}; first position over the tolerance: {first}")
            failed = True
        worst_p, worst_kl, worst_lp = max(worst_p, dp), max(worst_kl, kl), max(worst_lp, dlp)
    if not failed:
        ok(f"probs: {len(prompts)} prompts x {SEQ_LEN} positions x 2000 tokens: max |p_llama - p_flas| "
           f"{worst_p:.3e} <= {PROB_TOL:g}, max KL {worst_kl:.3e} <= {KL_TOL:g}, max |d log p| {worst_lp:.3e}, "
           "same argmax")


def check_greedy(a, W, prompts, got):
    write_ids(W("greedy.txt"), prompts)
    run([a.logits, W("model.h5"), "greedy", W("greedy.txt"), W("greedy.jsonl"), str(GREEDY_NEW)], "flas_logits")
    fg = json_lines(W("greedy.jsonl"))
    gaps, failed = [], False
    for k, lang in enumerate(LANGS):
        ours, theirs = fg[k]["ids"], got[k]["ids"]
        gap_f, gap_l = min(fg[k]["gap"]), min(got[k]["gap"])
        print(f"  greedy {lang}: FLaS      {ours}\n            llama.cpp {theirs}\n"
              f"            min top1-top2 logit gap: FLaS {gap_f:.4g}, llama.cpp {gap_l:.4g}")
        if ours != theirs:
            i = next(i for i in range(GREEDY_NEW) if ours[i] != theirs[i])
            bad(f"greedy: the {lang} continuations differ from new token {i} on (top1-top2 gap there: FLaS "
                f"{fg[k]['gap'][i]:.4g}, llama.cpp {got[k]['gap'][i]:.4g})")
            failed = True
        gaps.append(min(gap_f, gap_l))
    if not failed:
        ok(f"greedy: {len(LANGS)} x {GREEDY_NEW}-token continuations identical (min top1-top2 logit gap "
           f"{min(gaps):.4g})")


def check_ppl(a, W, held_out, nll_f32, nll_q8):
    write_ids(W("held-out.txt"), held_out)
    run([a.logits, W("model.h5"), "nll", W("held-out.txt"), W("nll.jsonl")], "flas_logits")
    fn = json_lines(W("nll.jsonl"))
    n_tok = sum(r["count"] for r in fn)
    ppl_flas = math.exp(sum(r["sum"] for r in fn) / n_tok)
    if nll_f32["count"] != n_tok or nll_q8["count"] != n_tok:
        return bad(f"ppl: token counts {nll_f32['count']}, {nll_q8['count']}, {n_tok}")
    ppl_f32 = math.exp(nll_f32["sum"] / n_tok)
    ppl_q8 = math.exp(nll_q8["sum"] / n_tok)
    r_f32, r_q8 = ppl_f32 / ppl_flas - 1, ppl_q8 / ppl_f32 - 1
    print(f"  ppl over {len(held_out)} held-out sequences, {n_tok} predicted tokens: FLaS {ppl_flas:.4f}, "
          f"llama.cpp F32 {ppl_f32:.4f} ({r_f32:+.2e}), Q8_0 {ppl_q8:.4f} ({r_q8:+.3%} of F32)")
    if abs(r_f32) > PPL_F32_REL:
        bad(f"ppl: llama.cpp F32 {ppl_f32:.6f} vs FLaS {ppl_flas:.6f}: {r_f32:+.2e} (tolerance {PPL_F32_REL:g})")
    if abs(r_q8) > PPL_Q8_REL:
        bad(f"ppl: Q8_0 {ppl_q8:.4f} vs F32 {ppl_f32:.4f}: {r_q8:+.3%} (tolerance {PPL_Q8_REL:.0%})")
    if abs(r_f32) <= PPL_F32_REL and abs(r_q8) <= PPL_Q8_REL:
        ok(f"ppl: Q8_0 {ppl_q8:.4f} vs F32 {ppl_f32:.4f} ({r_q8:+.3%}, within {PPL_Q8_REL:.0%}); F32 vs FLaS "
           f"{ppl_flas:.4f} ({r_f32:+.1e}, within {PPL_F32_REL:g})")

def check_half(nll_f32, lh):
    """F16 and BF16 exports: loaded by llama.cpp with their file types, perplexity within 1% of F32."""
    ppl_f32 = math.exp(nll_f32["sum"] / nll_f32["count"])
    for dt, want_type in (("f16", 1), ("bf16", 32)):  # LLAMA_FTYPE_MOSTLY_F16, _BF16
        r = lh[dt]
        ppl = math.exp(r["nll"]["sum"] / r["nll"]["count"])
        rel = ppl / ppl_f32 - 1
        if r["info"].get("file_type") != want_type or r["nll"]["count"] != nll_f32["count"]:
            bad(f"{dt}: file type {r['info'].get('file_type')} (want {want_type}), {r['nll']['count']} tokens")
        elif abs(rel) > PPL_Q8_REL:
            bad(f"ppl: {dt.upper()} {ppl:.4f} vs F32 {ppl_f32:.4f}: {rel:+.3%} (tolerance {PPL_Q8_REL:.0%})")
        else:
            ok(f"ppl: {dt.upper()} {ppl:.4f} vs F32 {ppl_f32:.4f} ({rel:+.3%}, within {PPL_Q8_REL:.0%}; file type {want_type})")


if __name__ == "__main__":
    main()
