#!/usr/bin/python3
"""flas-train refuses bad inputs with one clear line and a non-zero exit, writes nothing, and never
hangs its ranks (every refusal runs on 2 MPI ranks) (ctest label: mpi).

  checkpoints  corrupt, truncated, not HDF5, wrong format, unfinished (no completion marker),
               shape-mismatched, model flags that differ, a local checkpoint given as global, a resume
               from another round's global, a round that differs from FLAS_ROUND
  env          FLAS_ERROR, a sha256 mismatch, a malformed FLAS_GLOBAL_SHA256; the FLAS_* variables are
               used when no flag is given, and flags win over them
  args         unknown flags, bad values, missing inputs, --tp not dividing the ranks, data of another
               vocabulary

usage: test_train_refuse.py FLAS_TRAIN FIXTURE MPIEXEC WORKDIR checkpoints|env|args"""
import os
import shutil
import sys

import h5py
import numpy as np

from trainlib import TINY, Env, attrs, fail, ok, sha256


def train_args(e, glob, out, extra=()):
    return ["--global", glob, "--data", e.data, "--batch", "2", "--seq", "32", "--steps", "2", "--threads", "1",
            "--site", "test", "--peak-gflops", "100", "--output", out] + list(extra)


def refused(e, what, args, words, env=None, ranks=2):
    """flas-train must exit 1 with one 'flas-train: error:' line holding every word, and no output."""
    out = args[args.index("--output") + 1] if "--output" in args else None
    if out and os.path.exists(out):
        os.unlink(out)
    p = e.run(args, ranks, env=env, check=False, timeout=120)
    errs = [l for l in p.stderr.splitlines() if l.startswith("flas-train: error:")]
    if p.returncode == 0 or len(errs) != 1:
        fail(f"{what}: exit {p.returncode}, error lines {errs}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    for w in words:
        if w not in errs[0]:
            fail(f"{what}: the message lacks '{w}': {errs[0]}")
    if out and os.path.exists(out):
        fail(f"{what}: an output checkpoint was written although the run was refused")
    print(f"refused ({what}): {errs[0]}")


def damaged(e, name, fn):
    p = e.path(name)
    shutil.copy(e.glob, p)
    fn(p)
    return p


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def case_checkpoints(e):
    out = e.path("refused.h5")
    size = os.path.getsize(e.glob)
    g = damaged(e, "corrupt.h5", lambda p: poke(p, 48, b"\xff" * 400))  # superblock + root object header
    refused(e, "corrupt metadata", train_args(e, g, out), [g, "damaged"])
    g = damaged(e, "truncated.h5", lambda p: os.truncate(p, size // 2))
    refused(e, "truncated", train_args(e, g, out), [g, "truncated"])
    g = e.path("text.h5")
    with open(g, "w") as f:
        f.write("this is not a checkpoint\n" * 100)
    refused(e, "not HDF5", train_args(e, g, out), [g, "not an HDF5 file"])

    def set_attr(name, value):
        def fn(p):
            with h5py.File(p, "r+") as f:
                if value is None:
                    del f.attrs[name]
                else:
                    f.attrs[name] = value
        return fn
    g = damaged(e, "format.h5", set_attr("format", "safetensors-export"))
    refused(e, "wrong format", train_args(e, g, out), [g, "wrong format 'safetensors-export'"])
    g = damaged(e, "unfinished.h5", set_attr("complete", None))
    refused(e, "no completion marker", train_args(e, g, out), [g, "incomplete checkpoint"])

    def reshape(p):
        with h5py.File(p, "r+") as f:
            del f["params/layers.0.attention.wq.weight"]
            f["params"].create_dataset("layers.0.attention.wq.weight", data=np.zeros((64, 63), "<f4"))
    g = damaged(e, "shape.h5", reshape)
    refused(e, "shape mismatch", train_args(e, g, out), [g, "layers.0.attention.wq.weight", "(64, 63)"])
    refused(e, "model flags differ", train_args(e, e.glob, out, ["--dim", "32"]), ["do not match", "dim"])
    # A local checkpoint is not a global model; a resume must come from this round's global.
    local = e.path("a-local.h5")
    e.run(train_args(e, e.glob, local))
    refused(e, "local as global", train_args(e, local, out), [local, "not a global model", "--resume"])
    other = e.path("other-global.h5")
    e.run(["--init"] + TINY + ["--seed", "99", "--output", other])
    refused(e, "resume from another round", train_args(e, other, out, ["--resume", local]),
            [local, "started from the global model with sha256"])
    refused(e, "round differs", train_args(e, e.glob, out), [e.glob, "holds round 0", "round 3"],
            env={"FLAS_ROUND": "3"})
    ok("corrupt, truncated, non-HDF5, wrong-format, unfinished, shape-mismatched, config-mismatched, local-as-global, "
       "other-round and wrong-round checkpoints are refused with one line, nothing written")


def case_env(e):
    out = e.path("env-out.h5")
    refused(e, "FLAS_ERROR", train_args(e, e.glob, out),
            ["refusing to train", "round-000004.h5 failed verification (sha256)"],
            env={"FLAS_ERROR": "global model round-000004.h5 failed verification (sha256)"})
    # As in a refused job: the plugin exports FLAS_ERROR but no output or global; the reason must show.
    refused(e, "FLAS_ERROR without output", ["--data", e.data, "--steps", "2"], ["refusing to train", "closed"],
            env={"FLAS_ERROR": "federation 'flas' is closed"})
    wrong = "0" * 64
    refused(e, "sha256 mismatch", train_args(e, e.glob, out), [e.glob, wrong, "differs from the expected"],
            env={"FLAS_GLOBAL_SHA256": wrong})
    refused(e, "sha256 mismatch (flag)", train_args(e, e.glob, out, ["--global-sha256", wrong]), [wrong])
    refused(e, "malformed FLAS_GLOBAL_SHA256", train_args(e, e.glob, out), ["FLAS_GLOBAL_SHA256", "hex"],
            env={"FLAS_GLOBAL_SHA256": "abc"})
    # The plugin's variables alone make a run: global, its sha256, output, site, round, job id.
    sha = sha256(e.glob)
    env = {"FLAS_FEDERATION": "flas", "FLAS_SITE": "leonardo", "FLAS_ROUND": "0", "FLAS_GLOBAL_CHECKPOINT": e.glob,
           "FLAS_GLOBAL_SHA256": sha, "FLAS_OUTPUT_CHECKPOINT": out, "FLAS_OUTPUT_DIR": e.work, "FLAS_JOB_ID": "77"}
    if os.path.exists(os.path.join(e.work, "metrics.jsonl")):
        os.unlink(os.path.join(e.work, "metrics.jsonl"))
    e.run(["--data", e.data, "--batch", "2", "--seq", "32", "--steps", "2", "--threads", "1"], 2, env=env)
    a = attrs(out)
    if (a["site"], a["round"], a["base_sha256"], a["role"]) != ("leonardo", 0, sha, "local") or a["tokens_trained"] != 256:
        fail(f"the FLAS_* environment was not used: {a}")
    if not os.path.exists(os.path.join(e.work, "metrics.jsonl")):
        fail("no metrics.jsonl in FLAS_OUTPUT_DIR")
    # Flags win: a broken FLAS_OUTPUT_CHECKPOINT and another FLAS_SITE are overridden.
    out2 = e.path("flag-out.h5")
    env2 = dict(env, FLAS_OUTPUT_CHECKPOINT="/nonexistent/dir/x.h5")
    e.run(["--data", e.data, "--batch", "2", "--seq", "32", "--steps", "2", "--threads", "1", "--output", out2,
           "--site", "karolina"], 2, env=env2)
    if attrs(out2)["site"] != "karolina":
        fail("--site did not win over FLAS_SITE")
    ok("FLAS_ERROR, a sha256 mismatch (variable or flag) and a malformed sha256 are refused; FLAS_* alone drive a "
       "run (site, round, base_sha256, metrics in FLAS_OUTPUT_DIR) and flags win over them")


def case_args(e):
    out = e.path("args-out.h5")
    base = train_args(e, e.glob, out)
    refused(e, "unknown flag", base + ["--bogus"], ["--bogus"], ranks=1)
    refused(e, "bad number", train_args(e, e.glob, out, ["--steps", "-3"]), ["--steps", "-3"], ranks=1)
    refused(e, "bad lr", train_args(e, e.glob, out, ["--lr", "fast"]), ["--lr", "fast"], ranks=1)
    refused(e, "no data", ["--global", e.glob, "--steps", "2", "--output", out], ["--data"], ranks=1)
    refused(e, "no global", ["--data", e.data, "--steps", "2", "--output", out], ["FLAS_GLOBAL_CHECKPOINT", "--global"],
            ranks=1)
    refused(e, "no length", ["--global", e.glob, "--data", e.data, "--output", out], ["--steps", "--tokens"], ranks=1)
    refused(e, "resume auto with nothing to resume", ["--resume", "auto", "--data", e.data, "--steps", "2", "--output",
                                                      out], ["--resume auto", "does not exist", "global"])
    refused(e, "tp does not divide", train_args(e, e.glob, out, ["--tp", "3"]), ["--tp 3", "2 MPI ranks"])
    refused(e, "seq too long", train_args(e, e.glob, out, ["--seq", "128"]), ["--seq 128", "seq_len 64"])
    wide = e.path("vocab256.h5")
    e.run(["--init", "--dim", "64", "--layers", "2", "--heads", "4", "--vocab", "256", "--seq-len", "64",
           "--output", wide])
    refused(e, "data of another vocabulary", train_args(e, wide, out), ["vocab", "256"])
    refused(e, "missing data", train_args(e, e.glob, out) + ["--data", e.path("nowhere")], ["nowhere"])
    refused(e, "unwritable output", train_args(e, e.glob, "/proc/nope/x.h5"), ["/proc/nope"])
    ok("unknown flags, bad values, missing inputs, a --tp that does not divide the ranks, a too long --seq, data "
       "of another vocabulary, missing data and an unwritable output are refused")


def main():
    e = Env(sys.argv)
    e.ensure_fixture()
    {"checkpoints": case_checkpoints, "env": case_env, "args": case_args}[e.case](e)


if __name__ == "__main__":
    main()
