#!/usr/bin/python3
"""Hostile checkpoints: every reader (flas-aggregate for a site's local checkpoint and for the previous
global, flas-train for the staged global on 2 MPI ranks, flas-generate) refuses a file whose bytes
could come from elsewhere than itself, or that is not built the way FLaS writes, before reading any
tensor (ctest label: unit).

Each attack is crafted here with h5py from a valid checkpoint (the train fixture's global), changing
one tensor. Each run must: exit non-zero with one error line that names the attack; leave no output
and no temporary; peak below RSS_BOUND (one attack asks HDF5 for a 1 GiB chunk); and never put a
byte of the planted secret file into anything it writes or prints. A control file built the same way
without the attack goes through every tool, so the checks can fail.

usage: test_ckpt_hostile.py FLAS_AGGREGATE FLAS_TRAIN FLAS_GENERATE TRAIN_FIXTURE MPIEXEC WORKDIR"""
import hashlib
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

RSS_BOUND_KIB = 400 * 1024  # the tiny model needs tens of MiB (ASan included); the chunk attack 1 GiB
TARGET = "norm.weight"      # the attacked tensor: (dim,) = 64 float32 = 256 bytes
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def copy_attrs(src, dst):
    for k, v in src.attrs.items():
        dst.attrs[k] = v


def craft(src, dst, attack, role="global", base="", libver=("v108", "v108")):
    """dst = src rebuilt with h5py, TARGET replaced by attack(params_group, name, array) (None: kept)."""
    if getattr(attack, "needs_latest", False):
        libver = (libver[0], "latest")  # virtual datasets need the 1.10 format
    with h5py.File(src, "r") as fi, h5py.File(dst, "w", libver=libver) as fo:

        def copy(gi, go):
            copy_attrs(gi, go)
            for name, obj in gi.items():
                if isinstance(obj, h5py.Group):
                    copy(obj, go.create_group(name))
                elif gi.name == "/params" and name == TARGET and attack is not None:
                    attack(go, name, obj[...])
                else:
                    go.create_dataset(name, data=obj[...])
        copy(fi, fo)
        if role == "local":
            fo.attrs["role"] = "local"
            fo.attrs["site"] = "karolina"
            fo.attrs["tokens_trained"] = np.int64(4096)
            fo.attrs["base_sha256"] = base


def main():
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    agg, train, gen, fixture, mpiexec, work = sys.argv[1:]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    p = lambda *n: os.path.join(work, *n)

    # The secret: a file of the reading side that a hostile checkpoint points at. 256 bytes, so that it
    # fills TARGET exactly; printable, so it would show in a message too; finite as float32.
    token = hashlib.sha256(os.urandom(16)).hexdigest()[:32]
    secret = ("FLAS-PLANTED-SECRET-" + token).encode()
    secret = (secret * (256 // len(secret) + 1))[:256]
    with open(p("secret.bin"), "wb") as f:
        f.write(secret)
    # An HDF5 file of the reading side holding the secret, for external links and virtual datasets.
    with h5py.File(p("other.h5"), "w", libver=("v108", "v108")) as f:
        f.create_dataset("stolen", data=np.frombuffer(secret, dtype="<f4"))

    # Data and a valid global of the train fixture's tiny model (vocabulary 128).
    data = p("data")
    subprocess.run([fixture, "shards", data, "20000", "128", "1", "1"], check=True)
    base = p("global.h5")
    subprocess.run([train, "--init", "--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--vocab",
                    "128", "--seq-len", "64", "--seed", "7", "--output", base], check=True, env=ENV,
                   capture_output=True)
    base_sha = sha256(base)
    # A tokenizer of the model's vocabulary for flas-generate, trained on words made up here.
    import sentencepiece as spm
    rng = np.random.default_rng(3)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    with open(p("text.txt"), "w") as f:
        for _ in range(2000):
            f.write(" ".join("".join(rng.choice(letters, rng.integers(2, 8))) for _ in range(12)) + "\n")
    spm.SentencePieceTrainer.train(input=p("text.txt"), model_prefix=p("tok"), vocab_size=128,
                                   model_type="unigram", minloglevel=2)

    def external_storage(g, name, a):
        g.create_dataset(name, shape=a.shape, dtype="<f4", external=[(p("secret.bin"), 0, a.nbytes)])

    def external_link(g, name, a):
        g[name] = h5py.ExternalLink(p("other.h5"), "/stolen")

    def virtual(g, name, a):
        layout = h5py.VirtualLayout(shape=a.shape, dtype="<f4")
        layout[:] = h5py.VirtualSource(p("other.h5"), "stolen", shape=a.shape)
        g.create_virtual_dataset(name, layout)

    virtual.needs_latest = True

    def soft_link(g, name, a):
        g.create_dataset("decoy", data=a)  # (also an extra object) the soft link aliases another dataset
        g[name] = h5py.SoftLink(g.name + "/decoy")

    def huge_chunk(g, name, a):
        # 256 bytes of tensor, one gzip chunk of 2^28 floats: HDF5 would allocate 1 GiB to read it.
        d = g.create_dataset(name, shape=a.shape, maxshape=(None,), chunks=(1 << 28,), dtype="<f4",
                             compression="gzip")
        d[...] = a

    def bad_filter(g, name, a):
        g.create_dataset(name, data=a, chunks=a.shape, scaleoffset=2)  # lossy, not on the allow-list

    def two_names(g, name, a):
        g.create_dataset(name, data=a)
        g.parent["alias"] = g[name]  # a second hard link to the same tensor

    attacks = [("external raw storage", external_storage, "external file"),
               ("external link", external_link, "external link"),
               ("virtual dataset", virtual, "virtual dataset"),
               ("soft link", soft_link, "soft link"),
               ("chunk larger than its tensor", huge_chunk, "may not exceed its tensor"),
               ("filter outside the allow-list", bad_filter, "filter"),
               ("second hard link", two_names, "under 2 names")]

    def run(tool, argv, outdir, outname, what, words, expect_ok=False):
        """Runs argv under GNU time; checks exit, message, leftovers, RSS and the secret."""
        before = set(os.listdir(outdir))
        r = subprocess.run(["/usr/bin/time", "-f", "maxrss_kib=%M", "-o", p("rss.txt")] + argv, env=ENV,
                           capture_output=True, timeout=300)
        rss = int(open(p("rss.txt")).read().split("maxrss_kib=")[1].split()[0])
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        blob = r.stdout + r.stderr
        if secret[:32] in blob or token.encode() in blob:
            fail(f"{tool} / {what}: the secret appears in what it printed")
        if rss > RSS_BOUND_KIB:
            fail(f"{tool} / {what}: peak RSS {rss} KiB > {RSS_BOUND_KIB} KiB")
        new = sorted(set(os.listdir(outdir)) - before)
        if expect_ok:
            if r.returncode != 0:
                fail(f"{tool} / {what}: a valid file was refused (exit {r.returncode}):\n{out}\n{err}")
            return rss
        prefix = "flas-generate: " if tool == "flas-generate" else tool + ": error:"
        errs = [l for l in err.splitlines() if l.startswith(prefix)]
        if r.returncode == 0:
            fail(f"{tool} / {what}: accepted (exit 0):\n{out}\n{err}")
        if len(errs) != 1 or not all(w in errs[0] for w in words):
            fail(f"{tool} / {what}: expected one error line with {words}, got {errs}\nstderr: {err}")
        if new:
            fail(f"{tool} / {what}: left {new} behind")
        if outname and os.path.exists(os.path.join(outdir, outname)):
            fail(f"{tool} / {what}: wrote its output")
        print(f"refused by {tool} ({what}, peak {rss // 1024} MiB): {errs[0]}")
        return rss

    def agg_local(local, what, words, expect_ok=False):
        out = p("agg-out")
        os.makedirs(out, exist_ok=True)
        rc = run("flas-aggregate", [agg, "-q", "-p", base, "-o", os.path.join(out, "next.h5"), local], out, "next.h5",
                 what, words, expect_ok)
        if expect_ok:
            os.unlink(os.path.join(out, "next.h5"))
        return rc

    def agg_previous(glob, what, words):
        out = p("agg-out")
        ok_local = p("control-local.h5")
        return run("flas-aggregate", [agg, "-q", "-p", glob, "-o", os.path.join(out, "next.h5"), ok_local], out,
                   "next.h5", what, words)

    def train_global(glob, what, words, expect_ok=False):
        out = p("train-out")
        os.makedirs(out, exist_ok=True)
        argv = [mpiexec, "-np", "2", "--oversubscribe", train, "--global", glob, "--data", data, "--batch", "2",
                "--seq", "32", "--steps", "2", "--threads", "1", "--site", "karolina", "--peak-gflops", "100",
                "--output", os.path.join(out, "local.h5")]
        rc = run("flas-train", argv, out, "local.h5", what, words, expect_ok)
        if expect_ok:
            os.unlink(os.path.join(out, "local.h5"))
        return rc

    def generate(model, what, words, expect_ok=False):
        return run("flas-generate", [gen, "-m", model, "-t", p("tok.model"), "-n", "4", "--threads", "1", "x"],
                   work, None, what, words, expect_ok)

    # Controls: the same h5py rebuild without an attack passes through every tool.
    craft(base, p("control-global.h5"), None)
    craft(base, p("control-local.h5"), None, role="local", base=base_sha)
    agg_local(p("control-local.h5"), "control", [], expect_ok=True)
    train_global(p("control-global.h5"), "control", [], expect_ok=True)
    generate(p("control-global.h5"), "control", [], expect_ok=True)
    print("controls: the h5py-built checkpoints of FLaS's layout are accepted by all three tools")

    # h5py's default format (superblock 0, unchecksummed headers) is not the format FLaS promises.
    craft(base, p("old-format.h5"), None, libver=("earliest", "v108"))
    agg_previous(p("old-format.h5"), "superblock without checksums", ["superblock version 0", "libver"])
    train_global(p("old-format.h5"), "superblock without checksums", ["superblock version 0"])
    generate(p("old-format.h5"), "superblock without checksums", ["superblock version 0"])

    for what, attack, word in attacks:
        g, l = p("hostile-global.h5"), p("hostile-local.h5")
        craft(base, g, attack)
        craft(base, l, attack, role="local", base=base_sha)
        agg_local(l, what, [l, word])
        agg_previous(g, what, [g, word])
        train_global(g, what, [g, word])
        generate(g, what, [g, word])

    # Byte for byte: nothing under the work directory but the planted sources holds the secret.
    for root, _, files in os.walk(work):
        for f in files:
            path = os.path.join(root, f)
            if path in (p("secret.bin"), p("other.h5")):
                continue
            with open(path, "rb") as fh:
                data_bytes = fh.read()
            if secret[:32] in data_bytes or token.encode() in data_bytes:
                fail(f"the planted secret appears in {path}")
    print(f"PASS: {len(attacks) + 1} hostile constructions refused by flas-aggregate (local and previous), "
          f"flas-train (2 ranks) and flas-generate; no output, no temporary, no secret byte anywhere")


if __name__ == "__main__":
    main()
