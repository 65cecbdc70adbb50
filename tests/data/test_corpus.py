#!/usr/bin/python3
"""flas-corpus: the demo corpora are real prose (no markup, de-duplicated, NFC, long enough, big
enough), split train/validation without overlap, reproducible byte for byte; on a small fake
package tree the output is exactly what the rules say; a missing package is a clear error.

usage: test_corpus.py FLAS_CORPUS CORPUS_DIR SCRATCH_DIR"""
import os
import re
import shutil
import subprocess
import sys
import unicodedata

TOOL, CORPUS, SCRATCH = sys.argv[1:4]
PY = "/usr/bin/python3"
TAG = re.compile(r"</?(p|span|div|a|h[1-6]|li|td|th|br|img|meta|script|style|html|body|head)\b[^>]*>", re.I)
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def lines(path):
    with open(path, encoding="utf-8") as f:  # strict: invalid UTF-8 raises
        return f.read().split("\n")[:-1]


def check_real(lang, min_train_bytes):
    d = os.path.join(CORPUS, lang)
    train, valid = lines(f"{d}/train.txt"), lines(f"{d}/valid.txt")
    size = os.path.getsize(f"{d}/train.txt")
    check(size >= min_train_bytes, f"{lang}: train.txt has {size} bytes, expected >= {min_train_bytes}")
    share = len(valid) / (len(train) + len(valid))
    check(0.03 <= share <= 0.08, f"{lang}: validation share {share:.3f} not near 5%")
    both = train + valid
    check(len(set(both)) == len(both), f"{lang}: {len(both) - len(set(both))} duplicate documents")
    for i, doc in enumerate(both):
        if len(doc) < 40 or TAG.search(doc) or doc != unicodedata.normalize("NFC", doc) \
                or "\ufffd" in doc or doc != " ".join(doc.split()):
            failures.append(f"{lang}: document {i} is not clean prose: {doc[:120]!r}")
            break
    with open(f"{d}/SOURCES", encoding="utf-8") as f:
        sources = f.read()
    for pkg in (f"fortunes-{lang}", f"libreoffice-help-{lang}"):
        check(pkg in sources, f"{lang}: SOURCES does not name {pkg}")
    return train


def run(args, **kw):
    return subprocess.run([PY, TOOL] + args, capture_output=True, text=True, **kw)


it_train = check_real("it", 3_500_000)
check_real("cs", 3_000_000)
check(any("perche'" in d for d in it_train), "it: the fortunes (which write e' for è) are missing")

# Reproducible: a second extraction gives the same bytes.
again = os.path.join(SCRATCH, "it-again")
r = run(["--lang", "it", "--out", again, "--quiet"])
check(r.returncode == 0, f"second run failed: {r.stderr}")
for name in ("train.txt", "valid.txt"):
    with open(os.path.join(CORPUS, "it", name), "rb") as a, open(os.path.join(again, name), "rb") as b:
        check(a.read() == b.read(), f"it/{name} differs between two runs")

# A fake package tree: exact output.
root = os.path.join(SCRATCH, "root")
shutil.rmtree(root, ignore_errors=True)
fort = os.path.join(root, "usr/share/games/fortunes/it")
help_dir = os.path.join(root, "usr/share/libreoffice/help/it/text/swriter")
os.makedirs(fort)
os.makedirs(help_dir)
with open(os.path.join(fort, "detti"), "w", encoding="utf-8") as f:
    f.write("Chi va piano va sano e va lontano, dice il proverbio\n"
            "della nonna.\n\t\t-- Anonimo <anonimo@example.org>\n%\n"
            "corto\n%\n"
            "Chi va piano va sano e va lontano, dice il proverbio della nonna. -- Anonimo\n%\n"
            "The early bird catches the worm, and this is an English fortune.\n%\n"
            "|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|_|\n")
with open(os.path.join(fort, "detti.dat"), "wb") as f:
    f.write(b"\x00\x01binary index")
os.symlink("detti", os.path.join(fort, "detti.u8"))
page = """<!DOCTYPE html><html><head><title>Titolo della pagina che non deve comparire mai</title>
<script>var x = "codice che non e' testo e non deve comparire";</script></head><body>
<header><p>Guida di LibreOffice: intestazione della pagina uguale per tutte</p></header>
<div id="DisplayArea"><h1>Inserire una tabella</h1>
<p class="paragraph">Per inserire una tabella nel documento, scegliete il menu <span class="menuitem">Tabella</span> e
premete <span hidden="true" class="MAC">Cmd</span><span hidden="true">Ctrl</span>+F12 sulla tastiera.</p>
<p>To insert a table into the document, choose the menu and press the key on the keyboard.</p>
<p>Questo paragrafo compare in entrambe le pagine della guida &amp; una volta sola.</p>
</div><footer><p>This page is: /text/swriter/guide/table.xhp e questo non conta</p></footer></body></html>"""
with open(os.path.join(help_dir, "a.html"), "w", encoding="utf-8") as f:
    f.write(page)
with open(os.path.join(help_dir, "b.html"), "w", encoding="utf-8") as f:
    f.write(page.replace("Per inserire una tabella nel documento",
                         "Per eliminare una tabella dal documento"))
out = os.path.join(SCRATCH, "fake")
r = run(["--lang", "it", "--out", out, "--root", root, "--valid-permille", "0", "--quiet"])
check(r.returncode == 0, f"fake tree: {r.stderr}")
expected = (
    "Chi va piano va sano e va lontano, dice il proverbio della nonna. -- Anonimo\n"
    "Per inserire una tabella nel documento, scegliete il menu Tabella e premete Ctrl+F12 sulla tastiera. "
    "Questo paragrafo compare in entrambe le pagine della guida & una volta sola.\n"
    "Per eliminare una tabella dal documento, scegliete il menu Tabella e premete Ctrl+F12 sulla tastiera.\n")
with open(os.path.join(out, "train.txt"), encoding="utf-8") as f:
    got = f.read()
check(got == expected, f"fake tree: train.txt is\n{got!r}\nexpected\n{expected!r}")
with open(os.path.join(out, "valid.txt"), encoding="utf-8") as f:
    check(f.read() == "", "fake tree: valid.txt should be empty with --valid-permille 0")
r = run(["--lang", "it", "--out", out, "--root", root, "--valid-permille", "1000", "--quiet"])
with open(os.path.join(out, "valid.txt"), encoding="utf-8") as f:
    check(f.read() == expected, "fake tree: --valid-permille 1000 should put everything in valid.txt")

# A missing package is a clear error, and nothing is written.
shutil.rmtree(os.path.join(root, "usr/share/libreoffice"))
out2 = os.path.join(SCRATCH, "missing")
r = run(["--lang", "it", "--out", out2, "--root", root, "--quiet"])
check(r.returncode != 0 and "apt-get install libreoffice-help-it" in r.stderr and not os.path.exists(out2),
      f"missing package: rc {r.returncode}, stderr {r.stderr!r}")
r = run(["--lang", "xx", "--out", out2])
check(r.returncode != 0 and "xx" in r.stderr, f"unknown language accepted: {r.stderr!r}")

for f in failures:
    print("FAIL:", f)
print(f"test_corpus: {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
