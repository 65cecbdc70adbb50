#!/usr/bin/python3
"""flas-corpus: the demo corpora are real prose (no markup, de-duplicated, NFC, long enough, big
enough), split train/validation without overlap, reproducible byte for byte; on a small fake
package tree the output is exactly what the rules say; a missing package is a clear error. The
held-out source (--sources aptitude: the aptitude manual, aptitude-doc-it/-cs) is real prose of its
language without DocBook chrome, deterministic, and exactly what the rules say on a fake page.

usage: test_corpus.py FLAS_CORPUS CORPUS_DIR SCRATCH_DIR"""
import html
import importlib.machinery
import importlib.util
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

# --- the held-out source: the aptitude manual (--sources aptitude) ---------------------------------

# The tool's own function-word lists: the language test the extraction applies to every paragraph.
loader = importlib.machinery.SourceFileLoader("flas_corpus", TOOL)
tool = importlib.util.module_from_spec(importlib.util.spec_from_loader("flas_corpus", loader))
loader.exec_module(tool)
WORD = re.compile(r"[^\W\d_]+")
# Labels of the DocBook chrome, in the manual's words: the navigation bars' image labels (Previous,
# Up, Home, Next; the parser never emits alt text, so two in a row can only be a leak: single ones
# are ordinary words, "Další" = "further") and the segmented lists' field labels.
NAV = {"it": ["Indietro", "Avanti", "Risali", "Partenza"],
       "cs": ["Předcházející", "Další", "Nahoru", "Domů"]}
SEGTITLE = {"it": ["Opzione:", "Predefinito:", "Descrizione:"],
            "cs": ["Volba:", "Implicitní hodnota:", "Popis:"]}
# Floors well below what Debian 12's 0.8.13-5 gives (it: 54 documents, 249 kB; cs: 49, 174 kB).
APTITUDE_MIN = {"it": (25, 100_000), "cs": (25, 80_000)}


def page_titles(top):
    """Titles of the manual's pages, of three words or more: a run of two in a row is a table of
    contents or a navigation bar that got through."""
    titles = set()
    for n in os.listdir(top):
        if n.endswith(".html"):
            with open(os.path.join(top, n), encoding="utf-8", errors="replace") as f:
                m = re.search(r"<title>(.*?)</title>", f.read(), re.S)
            if m:
                t = " ".join(html.unescape(re.sub(r"<[^>]*>", "", m.group(1))).split())
                if len(t.split()) >= 3:
                    titles.add(t)
    return titles


def function_word_share(docs, lang, other):
    """Share of DOCS with more function words of LANG than of OTHER."""
    wins = 0
    for doc in docs:
        words = [w.lower() for w in WORD.findall(doc)]
        wins += sum(w in tool.STOPWORDS[lang] for w in words) > sum(w in tool.STOPWORDS[other] for w in words)
    return wins / len(docs) if docs else 0.0


held_out = {}
for lang in ("it", "cs"):
    pkg, top = f"aptitude-doc-{lang}", f"/usr/share/doc/aptitude/html/{lang}"
    if not os.path.isdir(top):
        failures.append(f"{pkg} is not installed ({top} missing): apt-get install {pkg} "
                        "(tests/bed/install-deps.sh installs it)")
        continue
    outs = []
    for k in (1, 2):
        o = os.path.join(SCRATCH, f"aptitude-{lang}-{k}")
        r = run(["--lang", lang, "--sources", "aptitude", "--valid-permille", "0", "--out", o, "--quiet"])
        check(r.returncode == 0, f"aptitude {lang}: run {k} failed: {r.stderr}")
        outs.append(o)
    if r.returncode != 0:
        continue
    raw = [open(os.path.join(o, "train.txt"), "rb").read() for o in outs]
    check(raw[0] == raw[1], f"aptitude {lang}: train.txt differs between two runs")
    check(os.path.getsize(os.path.join(outs[0], "valid.txt")) == 0,
          f"aptitude {lang}: valid.txt should be empty with --valid-permille 0")
    docs = lines(os.path.join(outs[0], "train.txt"))
    held_out[lang] = docs
    min_docs, min_bytes = APTITUDE_MIN[lang]
    check(len(docs) >= min_docs and len(raw[0]) >= min_bytes,
          f"aptitude {lang}: {len(docs)} documents, {len(raw[0])} bytes; expected >= {min_docs}, >= {min_bytes}")
    with open(os.path.join(outs[0], "SOURCES"), encoding="utf-8") as f:
        check(f"\taptitude-doc-{lang}\t" in f.read(), f"aptitude {lang}: SOURCES does not name {pkg}")
    check(len(set(docs)) == len(docs), f"aptitude {lang}: duplicate documents")
    nav_run = re.compile(r"\b(?:%s)\W+(?:%s)\b" % ("|".join(NAV[lang]), "|".join(NAV[lang])))
    alt = "|".join(re.escape(t) for t in sorted(page_titles(top), key=len, reverse=True))
    title_run = re.compile(f"(?:{alt}) (?:{alt})")
    for i, doc in enumerate(docs):
        bad = ("markup" if TAG.search(doc) or re.search(r"&(?:[a-z]+|#\d+);|</|/>", doc) else
               "not NFC or not collapsed" if doc != unicodedata.normalize("NFC", doc) or doc != " ".join(doc.split()) else
               "navigation labels" if nav_run.search(doc) else
               "segmented-list labels" if any(label in doc for label in SEGTITLE[lang]) else
               "a run of page titles (table of contents, navigation)" if title_run.search(doc) else
               "short" if len(doc) < 40 else None)
        if bad:
            failures.append(f"aptitude {lang}: document {i}: {bad}: {doc[:160]!r}")
            break
if len(held_out) == 2:
    # Each manual is its own language: the Italian one has more Italian than Czech function words, document
    # by document, and the Czech one the other way round.
    for lang, other in (("it", "cs"), ("cs", "it")):
        share = function_word_share(held_out[lang], lang, other)
        wrong = function_word_share(held_out[lang], other, lang)
        check(share >= 0.9 and share > wrong,
              f"aptitude {lang}: {share:.2f} of documents pass the {lang} function-word test against "
              f"{other}, {wrong:.2f} the {other} one")

# A fake DocBook page: navigation bars, table of contents, screen listing, command synopsis and the
# segmented lists' labels are dropped, even where they would pass as prose; terms and descriptions
# of a definition list are separate paragraphs; a page is one document.
root = os.path.join(SCRATCH, "root-aptitude")
shutil.rmtree(root, ignore_errors=True)
man = os.path.join(root, "usr/share/doc/aptitude/html/it")
os.makedirs(man)
NAVBAR = ('<table summary="Navigation {0}"><tr><th colspan="3">Questo titolo di navigazione della pagina non '
          'deve comparire</th></tr><tr><td><a accesskey="p" href="a.html"><img src="images/prev.gif" alt="Indietro" />'
          '</a> Il capitolo precedente che non deve comparire nel testo</td><td><a accesskey="h" href="index.html">'
          '<img src="images/home.gif" alt="Partenza" /></a></td></tr></table>')
with open(os.path.join(man, "ch01.html"), "w", encoding="utf-8") as f:
    f.write('<?xml version="1.0" encoding="utf-8" standalone="no"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 '
            'Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd"><html xmlns="http://www.w3.org'
            '/1999/xhtml"><head><title>Un titolo della pagina che non deve comparire</title></head><body>'
            '<div class="navheader">' + NAVBAR.format("header") + '<hr /></div>'
            '<div class="chapter"><div class="toc"><p><strong>Indice</strong></p><dl class="toc"><dt><span class="section">'
            '<a href="b.html">Una voce del sommario che non deve comparire nel testo</a></span></dt></dl></div>'
            '<p>\n\t  Per installare un pacchetto si usa il comando <code class="literal">aptitude install</code>\ne si '
            'preme <span class="keycap"><strong>Invio</strong></span> per <span class="quote">«<span class="quote">'
            'confermare</span>»</span>.\n\t</p><pre class="screen">Questa schermata della console non deve comparire '
            'nel testo del manuale</pre><div class="cmdsynopsis"><p><code class="command">aptitude</code> [<opzioni> '
            'della riga di comando che non devono comparire mai]</p></div><div class="segmentedlist"><div '
            'class="seglistitem"><div class="seg"><strong><span class="segtitle">Descrizione: </span></strong>\n'
            'Se questa opzione è attiva, il programma non rimuove i pacchetti inutilizzati.</div></div></div>'
            '<div class="variablelist"><dl class="variablelist"><dt><span class="term">Il termine della lista che '
            'si trova prima della sua descrizione</span></dt><dd><p>La descrizione del termine della lista, che è '
            'un paragrafo a sé.</p></dd></dl></div></div>'
            '<div class="navfooter"><hr />' + NAVBAR.format("footer") + '</div></body></html>')
with open(os.path.join(man, "aptitude.css"), "w", encoding="utf-8") as f:
    f.write("p { margin: 0; } /* un foglio di stile che non è una pagina e non deve comparire */\n")
out = os.path.join(SCRATCH, "fake-aptitude")
r = run(["--lang", "it", "--sources", "aptitude", "--out", out, "--root", root, "--valid-permille", "0", "--quiet"])
check(r.returncode == 0, f"fake aptitude tree: {r.stderr}")
expected = ("Per installare un pacchetto si usa il comando aptitude install e si preme Invio per «confermare». "
            "Se questa opzione è attiva, il programma non rimuove i pacchetti inutilizzati. "
            "Il termine della lista che si trova prima della sua descrizione "
            "La descrizione del termine della lista, che è un paragrafo a sé.\n")
got = open(os.path.join(out, "train.txt"), encoding="utf-8").read() if r.returncode == 0 else None
check(got == expected, f"fake aptitude tree: train.txt is\n{got!r}\nexpected\n{expected!r}")
# A missing package names itself; a package installed without its /usr/share/doc (a dpkg path-exclude)
# says so.
out2 = os.path.join(SCRATCH, "missing-aptitude")
r = run(["--lang", "cs", "--sources", "aptitude", "--out", out2, "--root", root, "--quiet"])
check(r.returncode != 0 and "aptitude-doc-cs is not installed (apt-get install aptitude-doc-cs)" in r.stderr
      and not os.path.exists(out2), f"missing aptitude-doc-cs: rc {r.returncode}, stderr {r.stderr!r}")
os.makedirs(os.path.join(root, "var/lib/dpkg"))
with open(os.path.join(root, "var/lib/dpkg/status"), "w", encoding="utf-8") as f:
    f.write("Package: aptitude-doc-cs\nStatus: install ok installed\nVersion: 0.8.13-5\n\n")
r = run(["--lang", "cs", "--sources", "aptitude", "--out", out2, "--root", root, "--quiet"])
check(r.returncode != 0 and "aptitude-doc-cs is installed but" in r.stderr and "path-exclude" in r.stderr,
      f"aptitude-doc-cs without its files: rc {r.returncode}, stderr {r.stderr!r}")

for f in failures:
    print("FAIL:", f)
print(f"test_corpus: {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
