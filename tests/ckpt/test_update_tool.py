#!/usr/bin/python3
"""flas-update from the command line: encode then apply rebuilds the model within the encoding's bound
(checked with numpy), apply is byte-reproducible and honours --expect-sha256 (exit 3, nothing left),
a wrong base is refused (exit 1), bad arguments are usage errors (exit 2), info describes the file.
Usage: test_update_tool.py FLAS_UPDATE WORKDIR"""
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "aggregator"))
import agg_lib as L  # noqa: E402

failures = []


def run(*args):
    r = subprocess.run([BIN, *args], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def expect(what, rc, out, want_rc, needle=""):
    if rc != want_rc or needle not in out:
        failures.append(f"{what}: exit {rc} (want {want_rc}), output {out.strip()[:300]!r} (want {needle!r})")
    else:
        print(f"ok: {what}")


def main():
    global BIN
    BIN, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    p = lambda n: os.path.join(work, n)  # noqa: E731
    x = L.random_params(1)
    L.write_ckpt(p("base.h5"), x, role="global", rnd=3)
    base = L.sha256(p("base.h5"))
    y = L.perturb(x, seed=2)
    L.write_ckpt(p("local.h5"), y, role="local", rnd=3, site="it-leonardo", tokens=5000, base=base)
    for enc in ("int8", "bf16"):
        rc, out = run("encode", "-q", "--base", p("base.h5"), "--target", p("local.h5"), "--output", p(f"u-{enc}.h5"),
                      "--encoding", enc, "--residual-out", p(f"r-{enc}.h5"))
        expect(f"encode {enc}", rc, out, 0, "x)")
        rc, out = run("apply", "-q", "--base", p("base.h5"), "--update", p(f"u-{enc}.h5"), "--output", p(f"a-{enc}.h5"))
        expect(f"apply {enc}", rc, out, 0)
        a, r = L.read_section(p(f"a-{enc}.h5")), L.read_section(p(f"r-{enc}.h5"))
        for n in x:
            d = (y[n] - x[n]).astype(np.float64)
            err = np.abs((a[n].astype(np.float64) - x[n]) - d)
            bound = (np.abs(d).max() / 127 * 0.5 * 1.0001 + 1e-7) if enc == "int8" else np.abs(d) * 2.0 ** -8 + 1e-7
            if not np.all(err <= bound):
                failures.append(f"{enc} {n}: error {err.max():.3g} above the bound")
            if not np.allclose(a[n].astype(np.float64) + r[n], y[n], rtol=0, atol=1e-6):
                failures.append(f"{enc} {n}: applied + residual != target")
        with h5py.File(p(f"a-{enc}.h5"), "r") as f:
            if f.attrs["role"] != "local" or f.attrs["site"] != "it-leonardo" or f.attrs["base_sha256"] != base:
                failures.append(f"{enc}: applied attributes {dict(f.attrs)}")
        rc, out = run("info", p(f"u-{enc}.h5"))
        expect(f"info {enc}", rc, out, 0, f"encoding {enc}")
    # reproducible: apply again a second later, with the expected sha256 of the first result
    time.sleep(1.1)
    want = L.sha256(p("a-int8.h5"))
    rc, out = run("apply", "-q", "--base", p("base.h5"), "--update", p("u-int8.h5"), "--output", p("again.h5"),
                  "--expect-sha256", want)
    expect("apply is byte-reproducible (--expect-sha256 of an earlier apply)", rc, out, 0)
    rc, out = run("apply", "-q", "--base", p("base.h5"), "--update", p("u-int8.h5"), "--output", p("other.h5"),
                  "--expect-sha256", "0" * 64)
    expect("another expected sha256: exit 3", rc, out, 3, "fetch the whole model")
    if any(f.startswith(".other.h5") or f == "other.h5" for f in os.listdir(work)):
        failures.append(f"a result that is not the expected one was left behind: {sorted(os.listdir(work))}")
    # refusals
    L.write_ckpt(p("other-base.h5"), L.random_params(9), role="global", rnd=3)
    rc, out = run("apply", "--base", p("other-base.h5"), "--update", p("u-int8.h5"), "--output", p("x.h5"))
    expect("an update of another base is refused", rc, out, 1, "is a delta against")
    rc, out = run("encode", "--base", p("other-base.h5"), "--target", p("local.h5"), "--output", p("x.h5"))
    expect("a target trained from another base is refused", rc, out, 1, "was trained from")
    expect("no such file", *run("apply", "--base", p("nope.h5"), "--update", p("u-int8.h5"), "--output", p("x.h5")),
           1, "nope.h5")
    if os.path.exists(p("x.h5")):
        failures.append("a refused command wrote its output")
    for args, needle in [(["encode", "--base", p("base.h5")], "needs"), (["apply", "--target", "t"], "needs"),
                         (["encode", "--encoding", "fp8"], "int8 or bf16"), (["encode", "--block", "32"], "64..256"),
                         (["frobnicate"], "usage"), ([], "usage")]:
        expect("usage: " + " ".join(args), *run(*args), 2, needle)
    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
