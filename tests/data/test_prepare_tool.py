#!/usr/bin/python3
"""flas-prepare, the program: --help, a progress line and a summary; each bad input (malformed
JSON, invalid UTF-8, empty input, vocabulary mismatch) gives a one-line message naming the file
(and line), a non-zero exit and no output; SIGTERM mid-run and SIGKILL mid-run leave no visible
shard.

usage: test_prepare_tool.py FLAS_PREPARE MODEL OTHER_MODEL CORPUS_TRAIN_TXT SCRATCH_DIR"""
import os
import shutil
import signal
import subprocess
import sys
import time

TOOL, MODEL, OTHER, TRAIN, SCRATCH = sys.argv[1:6]
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def write(name, data):
    p = os.path.join(SCRATCH, name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def run(args):
    return subprocess.run([TOOL] + args, capture_output=True, text=True)


def visible_shards(top):
    found = []
    for d, _, names in os.walk(top):
        found += [os.path.join(d, n) for n in names if n.endswith(".flastok") and not n.startswith(".")
                  and not any(part.startswith(".") for part in os.path.relpath(d, top).split(os.sep) if part != ".")]
    return found


shutil.rmtree(SCRATCH, ignore_errors=True)
os.makedirs(SCRATCH)

r = run(["--help"])
check(r.returncode == 0 and "--tokenizer" in r.stdout and "jsonl" in r.stdout, "--help")
r = run([])
check(r.returncode == 2 and "--tokenizer" in r.stderr, f"no arguments: rc {r.returncode} {r.stderr!r}")
r = run(["--format", "xml", "x"])
check(r.returncode == 2 and "xml" in r.stderr, f"bad --format: {r.stderr!r}")

# A good run: progress lines on stderr, the summary on stdout.
good = write("good.txt", "Una riga di testo italiano.\nDruhý řádek je česky.\n".encode() * 200)
out = os.path.join(SCRATCH, "good-out")
r = run(["-t", MODEL, "-o", out, good])
check(r.returncode == 0, f"good run failed: {r.stderr}")
check("400 documents" in r.stdout and "bytes/token" in r.stdout and "1 shards" in r.stdout,
      f"summary: {r.stdout!r}")
check("flas-prepare: 1/1 files" in r.stderr, f"progress line: {r.stderr!r}")
r = run(["--verify", "-t", MODEL, out])
check(r.returncode == 0 and "400 documents" in r.stdout, f"--verify: {r.stdout!r} {r.stderr!r}")

bad_cases = [
    ("malformed JSON", ["-t", MODEL], write("bad.jsonl", b'{"text": "ok"}\n{"text": "no end}\n'), "bad.jsonl:2:"),
    ("invalid UTF-8", ["-t", MODEL], write("latin1.txt", b"ciao\nperch\xe9\n"), "latin1.txt:2:"),
    ("empty input", ["-t", MODEL], write("empty.txt", b""), "empty.txt: no documents"),
    ("vocabulary mismatch", ["-t", MODEL, "--vocab-size", "32000"], good, "vocab_size is 32000"),
]
for what, args, path, needle in bad_cases:
    out = os.path.join(SCRATCH, "bad-out")
    r = run(args + ["-o", out, path])
    lines = r.stderr.strip().split("\n")
    check(r.returncode == 1, f"{what}: exit {r.returncode}")
    check(len(lines) == 1 and needle in lines[0], f"{what}: stderr {r.stderr!r} lacks {needle!r}")
    check(not os.path.exists(out), f"{what}: left {out} behind")
    leftovers = [n for n in os.listdir(SCRATCH) if n.startswith(".")]
    check(not leftovers, f"{what}: left {leftovers}")

# --replace-invalid-utf8: the byte is replaced, counted, and the count is in the summary.
r = run(["-t", MODEL, "--replace-invalid-utf8", "-o", os.path.join(SCRATCH, "replaced-out"),
         os.path.join(SCRATCH, "latin1.txt")])
check(r.returncode == 0 and "1 invalid UTF-8 bytes replaced" in r.stdout,
      f"--replace-invalid-utf8: rc {r.returncode} {r.stdout!r} {r.stderr!r}")
shutil.rmtree(os.path.join(SCRATCH, "replaced-out"), ignore_errors=True)

# Shards from one tokenizer checked against another.
r = run(["--verify", "-t", OTHER, os.path.join(SCRATCH, "good-out")])
check(r.returncode == 1 and "vocabulary mismatch" in r.stderr, f"--verify mismatch: {r.stderr!r}")

# Interrupted runs: a big input (the corpus, 8 times) in 4 files, so the run takes seconds.
with open(TRAIN, "rb") as f:
    text = f.read()
big = [write(f"big{i}.txt", text * 2) for i in range(4)]


def interrupted(sig, name):
    out = os.path.join(SCRATCH, name)
    p = subprocess.Popen([TOOL, "-t", MODEL, "-o", out, "-j", "2"] + big,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until the first shard temporaries exist: the run is writing.
    deadline = time.time() + 30
    while time.time() < deadline and not any(n.startswith(f".{name}.tmp") for n in os.listdir(SCRATCH)):
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    return p.returncode, err, out


# Bounded memory: peak RSS does not grow with the input (one file of the corpus, then one of 6 times
# it, one thread). What it may hold: the tokenizer, one document, the shard writer's buffer.
def peak_rss_kib(path, name):
    r = subprocess.run(["/usr/bin/time", "-f", "%M", TOOL, "-q", "-t", MODEL, "-j", "1", "-o",
                        os.path.join(SCRATCH, name), path], capture_output=True, text=True)
    check(r.returncode == 0, f"{name}: {r.stderr}")
    shutil.rmtree(os.path.join(SCRATCH, name), ignore_errors=True)
    return int(r.stderr.strip().split("\n")[-1])


small = peak_rss_kib(write("x1.txt", text), "rss-1x")
large = peak_rss_kib(write("x6.txt", text * 6), "rss-6x")
print(f"peak RSS {small} KiB for {len(text) / 1e6:.1f} MB of text, {large} KiB for {6 * len(text) / 1e6:.1f} MB")
if "libasan" in subprocess.run(["ldd", TOOL], capture_output=True, text=True).stdout:
    # AddressSanitizer keeps freed memory in quarantine (256 MB by default): RSS then follows the
    # amount allocated, not what is live. The bound is checked in the normal build.
    print("peak RSS bound not checked in this AddressSanitizer build")
else:
    check(large - small < 16 * 1024, f"peak RSS grows with the input: {small} KiB for {len(text)} bytes, "
          f"{large} KiB for {6 * len(text)} bytes")

rc, err, out = interrupted(signal.SIGTERM, "term-out")
check(rc == 1 and "interrupted" in err, f"SIGTERM: rc {rc} stderr {err!r}")
check(not os.path.exists(out), "SIGTERM: output directory exists")
check(not [n for n in os.listdir(SCRATCH) if n.startswith(".term-out")], "SIGTERM: temporary left behind")

rc, err, out = interrupted(signal.SIGKILL, "kill-out")
check(rc == -signal.SIGKILL, f"SIGKILL: rc {rc}")
check(not os.path.exists(out), "SIGKILL: output directory exists")
hidden = [n for n in os.listdir(SCRATCH) if n.startswith(".kill-out.tmp")]
check(len(hidden) == 1, f"SIGKILL: expected the one hidden temporary directory, found {hidden}")
# Nothing a loader would pick up: the only .flastok files are inside the hidden directory.
for s in visible_shards(SCRATCH):
    check(s.startswith(os.path.join(SCRATCH, "good-out")), f"SIGKILL: visible shard {s}")

shutil.rmtree(SCRATCH, ignore_errors=True)
for f in failures:
    print("FAIL:", f)
print(f"test_prepare_tool: {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
