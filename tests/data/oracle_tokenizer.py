#!/usr/bin/python3
"""Oracle: the FLaS tokenizer (C shim over libsentencepiece) gives the ids python3-sentencepiece
gives, for two models (flas-vocab's BPE with byte fallback and identity normalisation; a unigram
model with NFKC and no byte fallback), on the issue's edge cases and on the demo corpora (all
validation documents, every 5th training document). Decoding matches python's too. Round trips:
exact for the BPE model except a literal U+2581; the unigram model is shown to normalise.

usage: oracle_tokenizer.py TOKENIZE_DUMP BPE_MODEL UNIGRAM_MODEL CORPUS_DIR"""
import struct
import subprocess
import sys

import sentencepiece as spm

DUMP, BPE, UNIGRAM, CORPUS = sys.argv[1:5]
failures = []

EDGE = [
    "ciao  mondo   tre", "     ", "a" + " " * 40 + "b",
    "\ttab\tseparated\t\tcolumns", "\t", "line one\nline two\n\nafter a blank\n", "\n", "\r\n",
    "emoji 😀🇮🇹👍🏽 and ZWJ 👩‍💻 🫠", "città perché è žluťoučký kůň úpěl ďábelské ódy ŘŠČŽÝÁÍÉ",
    "e\u0301 decomposed vs é composed", "ｆｕｌｌ ｗｉｄｔｈ ① ㍿ ﬁ",
    "literal \u2581 lower one eighth block \u2581\u2581", "\u2581",
    "text with <s> and </s> and <unk> and <pad> inside", "<s>", "  leading", "trailing  ",
    "", "数字 12345 and 3.14159 and 1,000,000", "a\u0000b", "zero\u200bwidth\u00a0nbsp",
    "Привет мир", "مرحبا", "🇮🇹" * 20, "x" * 5000,
]


def corpus_docs():
    docs = []
    for lang in ("it", "cs"):
        with open(f"{CORPUS}/{lang}/valid.txt", encoding="utf-8") as f:
            docs += f.read().split("\n")[:-1]
        with open(f"{CORPUS}/{lang}/train.txt", encoding="utf-8") as f:
            docs += f.read().split("\n")[:-1][::5]
    return docs


def flas(model, texts, flags):
    data = b"".join(struct.pack("<I", len(b)) + b for b in (t.encode("utf-8") for t in texts))
    r = subprocess.run([DUMP, model, flags], input=data, capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"tokenize_dump failed: {r.stderr.decode()}")
    out, pos, res = r.stdout, 0, []
    for _ in texts:
        (n,) = struct.unpack_from("<I", out, pos)
        ids = list(struct.unpack_from(f"<{n}i", out, pos + 4))
        pos += 4 + 4 * n
        (d,) = struct.unpack_from("<I", out, pos)
        res.append((ids, out[pos + 4:pos + 4 + d].decode("utf-8")))
        pos += 4 + d
    return res


def compare(name, model, texts, exact_round_trip):
    sp = spm.SentencePieceProcessor(model_file=model)
    want = sp.encode(texts)
    got = flas(model, texts, "none")
    got_both = flas(model, texts[:len(EDGE)], "both")
    bad_ids = bad_decode = not_exact = 0
    for i, (t, w, (ids, dec)) in enumerate(zip(texts, want, got)):
        if ids != w:
            bad_ids += 1
            if bad_ids <= 3:
                failures.append(f"{name}: ids differ for {t[:60]!r}: flas {ids[:12]} python {w[:12]}")
        if dec != sp.decode(w):
            bad_decode += 1
            if bad_decode <= 3:
                failures.append(f"{name}: decode differs for {t[:60]!r}: {dec[:60]!r} vs {sp.decode(w)[:60]!r}")
        if dec != t:
            not_exact += 1
            if exact_round_trip and dec != t.replace("\u2581", " "):
                failures.append(f"{name}: round trip of {t[:60]!r} gave {dec[:60]!r}")
    for t, (ids, _) in zip(EDGE, got_both):
        if ids != [sp.bos_id()] + sp.encode(t) + [sp.eos_id()]:
            failures.append(f"{name}: BOS/EOS ids differ for {t[:60]!r}")
    print(f"{name}: {len(texts)} texts ({sum(len(t) for t in texts)} chars): ids differ {bad_ids}, "
          f"decode differs {bad_decode}, round trip not exact {not_exact}")
    return not_exact


texts = EDGE + corpus_docs()
if len(texts) < 3000:
    failures.append(f"only {len(texts)} texts: the corpora are missing")
inexact = compare("bpe+byte_fallback", BPE, texts, True)
if inexact != sum(1 for t in texts if "\u2581" in t):
    failures.append(f"bpe: {inexact} inexact round trips, expected only the U+2581 ones")
inexact = compare("unigram+nfkc", UNIGRAM, texts, False)
if inexact == 0:
    failures.append("unigram+nfkc: every round trip exact: the normalising model did not normalise")

for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)
