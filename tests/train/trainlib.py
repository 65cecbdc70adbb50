"""Shared helpers of the flas-train tests: running flas-train on real MPI ranks, reading its metrics
file, comparing checkpoints with h5py, and the fixture (synthetic token shards, a round-0 global).

Every test script takes: FLAS_TRAIN FIXTURE MPIEXEC WORKDIR [CASE]. A missing tool is a failure."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np

ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
# The tiny model of the functional tests: GQA 4/2 heads, so tp=2 splits both kinds of heads.
TINY = ["--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--vocab", "128", "--seq-len", "64"]
VOCAB = 128


class Env:
    def __init__(self, argv):
        if len(argv) < 5:
            sys.exit("usage: SCRIPT FLAS_TRAIN FIXTURE MPIEXEC WORKDIR [CASE]")
        self.flas_train, self.fixture, self.mpiexec, top = argv[1:5]
        self.case = argv[5] if len(argv) > 5 else None
        for tool in (self.flas_train, self.fixture, self.mpiexec):
            if not os.access(tool, os.X_OK):
                sys.exit(f"FAIL: missing tool {tool}")
        # The shared fixture (made once by the train_fixture test) and a fresh directory per test case.
        fix = os.path.join(top, "fixture")
        self.data = os.path.join(fix, "data")
        self.valid = os.path.join(fix, "valid")
        self.glob = os.path.join(fix, "global.h5")
        script = os.path.splitext(os.path.basename(argv[0]))[0]
        self.work = os.path.join(top, f"{script}-{self.case}" if self.case else script)
        if self.case != "fixture":
            shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work, exist_ok=True)

    def path(self, *names):
        return os.path.join(self.work, *names)

    def cmd(self, args, ranks=1):
        if ranks == 1:
            return [self.flas_train] + args
        return [self.mpiexec, "-np", str(ranks), "--oversubscribe", self.flas_train] + args

    def run(self, args, ranks=1, env=None, check=True, timeout=300):
        """Runs flas-train; returns CompletedProcess. check: a non-zero exit fails the test."""
        e = dict(os.environ, **ROOT_ENV)
        for k in [k for k in e if k.startswith("FLAS_") and k not in ("FLAS_CKPT_MPIO",)]:
            del e[k]  # the caller's FLAS_* must not leak into a test
        e.update(env or {})
        p = subprocess.run(self.cmd(args, ranks), env=e, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            fail(f"flas-train {' '.join(args)} (ranks {ranks}) exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def make_fixture(self):
        """Token shards (2 training shards, 1 validation) and a round-0 global model of TINY."""
        fix = os.path.dirname(self.glob)
        shutil.rmtree(fix, ignore_errors=True)
        os.makedirs(fix)
        subprocess.run([self.fixture, "shards", self.data, "200000", str(VOCAB), "1", "2"], check=True)
        subprocess.run([self.fixture, "shards", self.valid, "20000", str(VOCAB), "2", "1"], check=True)
        return self.run(["--init"] + TINY + ["--seed", "7", "--output", self.glob])

    def ensure_fixture(self):
        if not os.path.exists(self.glob):
            fail(f"no fixture at {self.glob}: the train_fixture test makes it")


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print("PASS: " + msg)


def losses(path):
    """Step -> loss from a metrics file (the last record of each step wins: a resumed run appends)."""
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "event" not in r:
                out[r["step"]] = r["loss"]
    return out


def norms(path):
    """Step -> pre-clip gradient norm (AdamW hides a wrong gradient scale; the norm does not)."""
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "event" not in r:
                out[r["step"]] = r["grad_norm"]
    return out


def events(path, kind):
    with open(path) as f:
        return [r for r in map(json.loads, f) if r.get("event") == kind]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


SECTIONS = ("params", "optimizer/m", "optimizer/v")


def tensors(path, sections=SECTIONS):
    with h5py.File(path, "r") as f:
        return {f"{s}/{n}": f[s][n][...] for s in sections if s in f for n in f[s]}


def attrs(path, group="/"):
    with h5py.File(path, "r") as f:
        return dict(f[group].attrs)


def max_rel(a, b):
    """Worst over tensors of max|a - b| / max|b| (element-wise error on each tensor's scale)."""
    worst, where = 0.0, None
    for k in b:
        d = float(np.abs(a[k].astype(np.float64) - b[k]).max()) / max(float(np.abs(b[k]).max()), 1e-30)
        if d > worst:
            worst, where = d, k
    return worst, where


def fro_rel(a, b):
    """Worst over tensors of ||a - b|| / ||b|| (Frobenius)."""
    worst, where = 0.0, None
    for k in b:
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        d = float(np.linalg.norm(x - y)) / max(float(np.linalg.norm(y)), 1e-30)
        if d > worst:
            worst, where = d, k
    return worst, where


def identical(a, b):
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in b)


def check_complete(path):
    """h5py opens it, the completion marker is set, every tensor reads and is finite."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != "flas-checkpoint" or f.attrs.get("complete") != 1:
            fail(f"{path}: no completion marker / wrong format: {dict(f.attrs)}")
        for s in SECTIONS:
            for n in f[s]:
                if not np.isfinite(f[s][n][...]).all():
                    fail(f"{path}: {s}/{n} holds non-finite values")
        return int(f.attrs["step"])


class Timer:
    def __init__(self):
        self.t0 = time.time()

    def __call__(self):
        return time.time() - self.t0
