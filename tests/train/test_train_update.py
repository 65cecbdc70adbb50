#!/usr/bin/python3
"""flas-train --update bf16|int8 publishes a compressed delta with error feedback (ctest label: mpi).

  round     one round with --update int8 (2 MPI ranks, a model wide enough that HDF5's per-dataset
            overhead does not hide the ratio) and --update bf16 (1 rank): --output is an update file
            (root attribute update_encoding, /update int8 or uint16 with each tensor's shape,
            /update_scale float32 of ceil(numel/block)); numpy's decode added to the global reproduces
            the full local checkpoint (written beside it, local-full.h5) within the quantisation bound;
            the int8 update is >= 3.5x smaller than the float32 params; the residual file holds exactly
            what the encoding lost; --resume auto continues local-full.h5, not the update
  feedback  three rounds of one site, each next global made by flas-aggregate from the previous local
            checkpoint: residual files appear and only the last two rounds' stay; round r's update plus
            its residual equals (local_r - global_r) + residual_{r-1}, which fails if the residual were
            not fed back; a rerun of round 2 with a periodic update before the final one reads round 1's
            residual again (never its own), so its update decodes to the same values
  refuse    --update with --init-from, bf16/int8 without a global (a --resume alone), unknown encodings
            (flag and FLAS_UPDATE), a bad --update-block (flag and FLAS_UPDATE_BLOCK), no or a relative
            --residual-dir: exit 2 and one line; a residual directory that is missing, a file, or the
            job's own directory, and a residual of another site: exit 1 and one line; nothing published

usage: test_train_update.py FLAS_TRAIN FIXTURE MPIEXEC WORKDIR round|feedback|refuse [FLAS_AGGREGATE]"""
import json
import math
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

from trainlib import Env, ROOT_ENV, fail, ok

# Wide enough (about 1.5 M parameters) that an int8 update's bytes are its data, not HDF5 headers.
WIDE = ["--dim", "256", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--vocab", "128", "--seq-len", "64"]
F32 = np.float32


def train_args(e, glob, out, extra=()):
    return ["--global", glob, "--data", e.data, "--batch", "2", "--seq", "32", "--steps", "2", "--threads", "1",
            "--site", "test", "--peak-gflops", "100", "--output", out] + list(extra)


def full_of(out):
    """local.h5 -> local-full.h5 (flas_stage_full_sibling)."""
    stem, ext = os.path.splitext(out)
    return stem + "-full" + ext


def params(path):
    with h5py.File(path, "r") as f:
        return {n: f["params"][n][...] for n in f["params"]}


def read_update(path):
    """(attrs, {name: (codes, scales or None)}) with the layout checked."""
    with h5py.File(path, "r") as f:
        a = dict(f.attrs)
        enc = a.get("update_encoding")
        if enc not in ("int8", "bf16"):
            fail(f"{path}: root attribute update_encoding is {enc!r}, not an update")
        if "params" in f:
            fail(f"{path}: an update file holds /params")
        block = int(a["update_block"]) if enc == "int8" else 0
        out = {}
        for n in f["update"]:
            q = f["update"][n]
            want = np.int8 if enc == "int8" else np.uint16
            if q.dtype != want:
                fail(f"{path}: /update/{n} is {q.dtype}, not {np.dtype(want)}")
            s = None
            if enc == "int8":
                s = f["update_scale"][n]
                nb = math.ceil(q.size / block)
                if s.dtype != np.float32 or s.shape != (nb,):
                    fail(f"{path}: /update_scale/{n} is {s.dtype} {s.shape}, not float32 ({nb},) for {q.size} "
                         f"values in blocks of {block}")
                s = s[...]
            out[n] = (q[...], s)
        return a, out


def decode(enc, block, q, s):
    """The delta as float32, each value one IEEE single rounding (flas/update.h)."""
    if enc == "bf16":
        return (q.astype(np.uint32) << 16).view(F32)
    scale = np.repeat(s, block)[:q.size].reshape(q.shape)
    return q.astype(F32) * scale


def check_round(e, glob, out, enc, base_sha=None):
    """The update at out against glob reproduces the full checkpoint beside it; returns (ratio, deltas)."""
    full = full_of(out)
    a, upd = read_update(out)
    if a["update_encoding"] != enc:
        fail(f"{out}: encoding {a['update_encoding']}, asked for {enc}")
    fa = dict(h5py.File(full, "r").attrs)
    if "update_encoding" in fa or fa["role"] != "local":
        fail(f"{full}: the full local checkpoint is not an ordinary local checkpoint: {fa}")
    for k in ("round", "site", "step", "tokens_trained", "base_sha256"):
        if a[k] != fa[k]:
            fail(f"{out}: attribute {k} = {a[k]!r}, the full checkpoint says {fa[k]!r}")
    if base_sha and a["base_sha256"] != base_sha:
        fail(f"{out}: base_sha256 {a['base_sha256']} is not the global's {base_sha}")
    base, local = params(glob), params(full)
    if sorted(upd) != sorted(local):
        fail(f"{out}: tensors {sorted(upd)} differ from the checkpoint's {sorted(local)}")
    block = int(a.get("update_block", 0))
    worst, deltas, n = 0.0, {}, 0
    for name, (q, s) in upd.items():
        b, l = base[name], local[name]
        if q.shape != l.shape:
            fail(f"{out}: /update/{name} has shape {q.shape}, the tensor {l.shape}")
        d = decode(enc, block, q, s)
        deltas[name] = d
        got = (b + d).astype(np.float64)  # float32 addition, as flas_update_apply_file does
        err = np.abs(got - l.astype(np.float64))
        x = l.astype(np.float64) - b.astype(np.float64)
        rounding = 2.0 * np.spacing(np.maximum(np.abs(l), np.abs(b))).astype(np.float64)
        if enc == "int8":
            # |x - q*scale| <= scale/2 per block, plus the float roundings of x, q*scale and base + d.
            bound = 0.5 * np.repeat(s, block)[:q.size].reshape(q.shape).astype(np.float64) * (1 + 2**-20) + rounding
        else:
            # Round to nearest with 8 significant bits: half a bf16 ulp, 2^-9 of the power of two above |x|.
            _, ex = np.frexp(x)
            bound = np.ldexp(1.0, ex - 9) + rounding
        if (err > bound).any():
            i = np.unravel_index(np.argmax(err - bound), err.shape)
            fail(f"{out}: {name}{list(i)}: base + decode = {got[i]!r}, local {l[i]!r}: error {err[i]:.3g} > "
                 f"bound {bound[i]:.3g}")
        worst = max(worst, float((err / np.maximum(bound, 1e-45)).max()))
        n += q.size
    # The bound must be tight enough to mean something: a decode that dropped the delta would be far off.
    moved = max(float(np.abs(local[k] - base[k]).max()) for k in local)
    if moved == 0:
        fail(f"{full}: training did not change the model; nothing was tested")
    size = os.path.getsize(out)
    ratio = 4.0 * n / size
    print(f"{enc}: {n} values, update {size} bytes = {ratio:.2f}x smaller than float32 params, full checkpoint "
          f"{os.path.getsize(full)} bytes; worst error / bound {worst:.3f}")
    return ratio, deltas


def metric_events(path, kind):
    with open(path) as f:
        return [r for r in map(json.loads, f) if r.get("event") == kind]


def case_round(e):
    res = e.path("residual")
    os.makedirs(res)
    # int8 on 2 ranks, the wide model.
    wide = e.path("wide-global.h5")
    e.run(["--init"] + WIDE + ["--seed", "3", "--output", wide])
    os.makedirs(e.path("int8"))
    out = e.path("int8", "local.h5")
    metrics = e.path("int8", "metrics.jsonl")
    p = e.run(train_args(e, wide, out, ["--update", "int8", "--residual-dir", res, "--metrics", metrics,
                                        "--lr", "1e-2"]), 2)
    lines = [l for l in p.stdout.splitlines() if l.startswith("flas-train: update step")]
    if len(lines) != 1 or not all(w in lines[0] for w in ("int8 block 128", "smaller than the full checkpoint",
                                                           "residual norm", "error feedback from none")):
        fail(f"no (or an incomplete) update summary line:\n{p.stdout}")
    print(lines[0])
    sha = subprocess.run(["sha256sum", wide], capture_output=True, text=True, check=True).stdout.split()[0]
    ratio, deltas = check_round(e, wide, out, "int8", sha)
    if ratio < 3.5:
        fail(f"{out}: the int8 update is only {ratio:.2f}x smaller than the float32 params (want >= 3.5)")
    # The residual is what the encoding lost: (local - base) - decode, in float32.
    r0 = e.path("residual", "residual-round-000000.h5")
    if sorted(os.listdir(res)) != ["residual-round-000000.h5"]:
        fail(f"residual directory holds {sorted(os.listdir(res))}")
    resid, base, local = params(r0), params(wide), params(full_of(out))
    for k in local:
        want = (local[k] - base[k]) - deltas[k]
        if not np.allclose(resid[k], want, rtol=0, atol=4 * float(np.spacing(np.abs(local[k]).max()))):
            fail(f"{r0}: {k} is not (local - base) - decode(update)")
    ev = metric_events(metrics, "update")
    if len(ev) != 1 or ev[0]["encoding"] != "int8" or ev[0]["residual_in"] is not None or \
            ev[0]["residual_out"] != "residual-round-000000.h5" or ev[0]["bytes"] != os.path.getsize(out):
        fail(f"metrics: update events {ev}")
    # bf16 on 1 rank, the fixture's tiny global, another residual directory.
    res2 = e.path("residual-bf16")
    os.makedirs(res2)
    os.makedirs(e.path("bf16"))
    out = e.path("bf16", "local.h5")
    e.run(train_args(e, e.glob, out, ["--update", "bf16", "--residual-dir", res2]), 1)
    ratio, _ = check_round(e, e.glob, out, "bf16")
    if not 1.5 < ratio < 2.05:
        fail(f"{out}: a bf16 update {ratio:.2f}x smaller than float32: not 2 bytes per value")
    # A requeued job (--resume auto) continues the full checkpoint, never the update at --output, and
    # publishes the update of where it ends.
    p = e.run(train_args(e, e.glob, out, ["--update", "bf16", "--residual-dir", res2, "--resume", "auto", "--steps",
                                          "3"]), 1)
    if "resuming round 0" not in p.stdout or "from step 2" not in p.stdout:
        fail(f"--resume auto with --update did not continue {full_of(out)}:\n{p.stdout}")
    if read_update(out)[0]["step"] != 3:
        fail(f"{out}: after the resumed run the update is not of step 3")
    check_round(e, e.glob, out, "bf16")
    if sorted(os.listdir(res2)) != ["residual-round-000000.h5"]:
        fail(f"{res2}: {sorted(os.listdir(res2))} after a resumed round 0")
    # A --federation job that names no residual directory keeps its error feedback in the user's state
    # directory ($XDG_STATE_HOME or ~/.local/state)/flas/<federation>/<site>, created private (0700).
    home = e.path("home")
    os.makedirs(home)
    os.makedirs(e.path("dflt"))
    out = e.path("dflt", "local.h5")
    e.run(train_args(e, e.glob, out, ["--update", "int8"]), 1,
          env={"HOME": home, "FLAS_FEDERATION": "fed", "FLAS_SITE": "test"})
    dflt = os.path.join(home, ".local", "state", "flas", "fed", "test")
    if sorted(os.listdir(dflt) if os.path.isdir(dflt) else []) != ["residual-round-000000.h5"]:
        fail(f"default residual directory {dflt}: {os.listdir(dflt) if os.path.isdir(dflt) else 'missing'}")
    for d in (dflt, os.path.dirname(dflt), os.path.join(home, ".local")):
        if os.stat(d).st_mode & 0o777 != 0o700:
            fail(f"{d}: mode {oct(os.stat(d).st_mode & 0o777)}, want 0700 (the site's private state)")
    xdg = e.path("xdg")
    os.makedirs(xdg)
    e.run(train_args(e, e.glob, out, ["--update", "int8"]), 1,
          env={"HOME": home, "XDG_STATE_HOME": xdg, "FLAS_FEDERATION": "fed", "FLAS_SITE": "test"})
    if not os.path.isfile(os.path.join(xdg, "flas", "fed", "test", "residual-round-000000.h5")):
        fail(f"XDG_STATE_HOME={xdg} was not used for the default residual directory")
    ok("int8 (2 ranks) and bf16 (1 rank) updates decode onto the global to the full local checkpoint within the "
       "quantisation bound; int8 is >= 3.5x smaller than float32; the residual is what the encoding lost; "
       "--resume auto continues the full checkpoint; without --residual-dir a federation job keeps it in "
       "$XDG_STATE_HOME or ~/.local/state/flas/FED/SITE (0700)")


def aggregate(e, agg, prev, local, out):
    """The next global from one site's full local checkpoint (FedAvg of one input)."""
    p = subprocess.run([agg, "-q", "-p", prev, "-o", out, local], capture_output=True, text=True,
                       env=dict(os.environ, **ROOT_ENV), timeout=300)
    if p.returncode != 0:
        fail(f"flas-aggregate -p {prev} -o {out} {local}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")


def residual_names(res):
    return sorted(n for n in os.listdir(res) if n.startswith("residual-round-"))


def check_feedback(e, glob, out, prev_residual, this_residual, tol_scale=8):
    """update_r + residual_r == (local_r - global_r) + residual_{r-1}, within float rounding. Returns the
    largest |residual_{r-1}| so that the caller knows the check could tell the residual was used."""
    a, upd = read_update(out)
    base, local, res = params(glob), params(full_of(out)), params(this_residual)
    prev = params(prev_residual) if prev_residual else {k: np.zeros_like(v) for k, v in local.items()}
    block = int(a.get("update_block", 0))
    biggest = 0.0
    for k, (q, s) in upd.items():
        d = decode(a["update_encoding"], block, q, s)
        lhs = d.astype(np.float64) + res[k]
        rhs = (local[k].astype(np.float64) - base[k]) + prev[k]
        # x = fl(fl(local - base) + prev), d + r = x up to the rounding of r = fl(x - d): a few ulps of x.
        tol = tol_scale * np.spacing(np.maximum(np.abs(local[k]), np.abs(base[k]))).astype(np.float64)
        if (np.abs(lhs - rhs) > tol).any():
            i = np.unravel_index(np.argmax(np.abs(lhs - rhs) - tol), lhs.shape)
            fail(f"{out}: {k}{list(i)}: update + residual = {lhs[i]!r}, (local - global) + previous residual = "
                 f"{rhs[i]!r} (from {prev_residual})")
        biggest = max(biggest, float(np.abs(prev[k]).max()))
    return biggest


def case_feedback(e):
    if len(sys.argv) < 7 or not os.access(sys.argv[6], os.X_OK):
        fail("usage: ... feedback FLAS_AGGREGATE (the aggregator makes each next round's global)")
    agg = sys.argv[6]
    res = e.path("residual")
    os.makedirs(res)
    glob = [e.glob]
    outs = []
    metrics = e.path("metrics.jsonl")
    for r in range(3):
        os.makedirs(e.path(f"job{r}"))
        out = e.path(f"job{r}", "local.h5")
        e.run(train_args(e, glob[r], out, ["--update", "int8", "--residual-dir", res, "--round", str(r),
                                           "--metrics", metrics, "--seed", str(11 + r)]), 2 if r == 1 else 1)
        outs.append(out)
        want = [f"residual-round-{k:06d}.h5" for k in range(max(0, r - 1), r + 1)]
        if residual_names(res) != want:
            fail(f"after round {r}: residual files {residual_names(res)}, want {want} (the last two rounds)")
        if r == 0:  # later rounds also send the previous residual: check_feedback says what they must hold
            check_round(e, glob[r], out, "int8")
        if r < 2:
            nxt = e.path(f"global-r{r + 1}.h5")
            aggregate(e, agg, glob[r], full_of(out), nxt)
            if h5py.File(nxt, "r").attrs["round"] != r + 1:
                fail(f"{nxt}: flas-aggregate did not make round {r + 1}")
            glob.append(nxt)
        # Keep round r's residual for the numeric check below (the directory keeps only two rounds).
        shutil.copy(os.path.join(res, f"residual-round-{r:06d}.h5"), e.path(f"kept-residual-{r}.h5"))
    for r in range(3):
        prev = e.path(f"kept-residual-{r - 1}.h5") if r else None
        biggest = check_feedback(e, glob[r], outs[r], prev, e.path(f"kept-residual-{r}.h5"))
        if r and biggest < 1e-6:
            fail(f"round {r}: the previous residual is ~0 ({biggest}); the check cannot tell it was fed back")
    ev = metric_events(metrics, "update")
    ins = [x["residual_in"] for x in ev]
    if ins != [None, "residual-round-000000.h5", "residual-round-000001.h5"]:
        fail(f"metrics: residuals read {ins}")
    print("rounds 0-2: update_r + residual_r == (local_r - global_r) + residual_{r-1}; residual files of the last "
          "two rounds kept")
    # A retried job of round 2 with a periodic update at step 1 before the final one at step 2: both read
    # round 1's residual, never the round-2 residual they themselves write, so the final update is the
    # first run's, value for value.
    os.makedirs(e.path("job2-retry"))
    out = e.path("job2-retry", "local.h5")
    e.run(train_args(e, glob[2], out, ["--update", "int8", "--residual-dir", res, "--round", "2", "--metrics",
                                       metrics, "--seed", "13", "--checkpoint-every", "1"]), 1)
    ev = metric_events(metrics, "update")[3:]
    if [(x["step"], x["residual_in"]) for x in ev] != [(1, "residual-round-000001.h5"),
                                                        (2, "residual-round-000001.h5")]:
        fail(f"retry of round 2: updates {ev}")
    if not np.array_equal(np.concatenate([v.ravel() for v in params(full_of(out)).values()]),
                          np.concatenate([v.ravel() for v in params(full_of(outs[2])).values()])):
        fail("the retried round 2 did not train to the same weights; the comparison below would mean nothing")
    a1, u1 = read_update(outs[2])
    a2, u2 = read_update(out)
    for k in u1:
        if not np.array_equal(decode("int8", 128, *u1[k]), decode("int8", 128, *u2[k])):
            fail(f"retry of round 2: /update/{k} decodes differently: the retry did not start from round 1's residual")
    check_feedback(e, glob[2], out, e.path("kept-residual-1.h5"), os.path.join(res, "residual-round-000002.h5"))
    if residual_names(res) != ["residual-round-000001.h5", "residual-round-000002.h5"]:
        fail(f"after the retry: residual files {residual_names(res)}")
    # A symlink at an older residual's name is never followed or removed, and an unrelated file stays.
    os.symlink(e.glob, os.path.join(res, "residual-round-000000.h5"))
    open(os.path.join(res, "notes.txt"), "w").write("site notes\n")
    os.makedirs(e.path("job3"))
    nxt = e.path("global-r3.h5")
    aggregate(e, agg, glob[2], full_of(outs[2]), nxt)
    e.run(train_args(e, nxt, e.path("job3", "local.h5"), ["--update", "int8", "--residual-dir", res, "--round", "3"]))
    if not os.path.islink(os.path.join(res, "residual-round-000000.h5")) or not os.path.exists(e.glob) or \
            not os.path.exists(os.path.join(res, "notes.txt")):
        fail("pruning touched a symlink, its target or a file of another name")
    if residual_names(res) != ["residual-round-000000.h5", "residual-round-000002.h5", "residual-round-000003.h5"]:
        fail(f"after round 3: {residual_names(res)}")
    ok("error feedback over three rounds (and a retried round with a periodic update) reads the newest residual "
       "of an earlier round; only the last two rounds' residual files stay; symlinks and other files are left alone")


def refused(e, what, args, words, code, env=None, ranks=1):
    """flas-train must exit with code and one 'flas-train: error:' line holding every word, publishing nothing."""
    out = args[args.index("--output") + 1]
    for p in (out, full_of(out)):
        if os.path.exists(p):
            os.unlink(p)
    p = e.run(args, ranks, env=env, check=False, timeout=120)
    errs = [l for l in p.stderr.splitlines() if l.startswith("flas-train: error:")]
    if p.returncode != code or len(errs) != 1:
        fail(f"{what}: exit {p.returncode} (want {code}), error lines {errs}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    for w in words:
        if w not in errs[0]:
            fail(f"{what}: the message lacks '{w}': {errs[0]}")
    if os.path.exists(out):
        fail(f"{what}: {out} was written although the run was refused")
    print(f"refused ({what}, exit {code}): {errs[0]}")


def case_refuse(e):
    res = e.path("residual")
    os.makedirs(res)
    os.makedirs(e.path("job"))
    out = e.path("job", "local.h5")
    upd = ["--update", "int8", "--residual-dir", res]
    refused(e, "--update with --init-from", ["--init-from", e.glob, "--output", out, "--update", "bf16"],
            ["--update bf16", "--init-from", "base"], 2)
    refused(e, "FLAS_UPDATE with --init", ["--init", "--dim", "64", "--layers", "2", "--heads", "4", "--vocab", "128",
                                           "--seq-len", "64", "--output", out], ["FLAS_UPDATE=int8", "--init"], 2,
            env={"FLAS_UPDATE": "int8"})
    local = e.path("job", "plain.h5")
    e.run(train_args(e, e.glob, local))
    refused(e, "int8 without a global", ["--resume", local, "--data", e.data, "--steps", "3", "--output", out] + upd,
            ["--update int8", "--global", "FLAS_GLOBAL_CHECKPOINT"], 2)
    refused(e, "unknown encoding", train_args(e, e.glob, out, ["--update", "zstd", "--residual-dir", res]),
            ["--update", "zstd", "full, bf16, int8"], 2, ranks=2)
    refused(e, "unknown FLAS_UPDATE", train_args(e, e.glob, out, ["--residual-dir", res]), ["FLAS_UPDATE", "INT8"], 2,
            env={"FLAS_UPDATE": "INT8"})
    for b in ("32", "257", "12x"):
        refused(e, f"block {b}", train_args(e, e.glob, out, upd + ["--update-block", b]), ["--update-block", b,
                                                                                         "64..256"], 2)
    refused(e, "bad FLAS_UPDATE_BLOCK", train_args(e, e.glob, out, upd), ["FLAS_UPDATE_BLOCK", "1024"], 2,
            env={"FLAS_UPDATE_BLOCK": "1024"})
    refused(e, "no residual dir", train_args(e, e.glob, out, ["--update", "bf16"]),
            ["--update bf16", "--residual-dir", "FLAS_RESIDUAL_DIR"], 2)
    refused(e, "relative residual dir", train_args(e, e.glob, out, ["--update", "int8", "--residual-dir", "residual"]),
            ["--residual-dir", "absolute"], 2)
    refused(e, "residual dir with '..'", train_args(e, e.glob, out, ["--update", "int8"]),
            ["FLAS_RESIDUAL_DIR", res + "/../residual"], 2, env={"FLAS_RESIDUAL_DIR": res + "/../residual"})
    # Found when the job starts, before any training: exit 1 like an unwritable output.
    refused(e, "missing residual dir", train_args(e, e.glob, out, ["--update", "int8", "--residual-dir",
                                                                   e.path("nowhere")]), [e.path("nowhere"), "exist"],
            1, ranks=2)
    refused(e, "residual dir is a file", train_args(e, e.glob, out, ["--update", "int8", "--residual-dir", local]),
            [local, "not a directory"], 1)
    refused(e, "residual dir is the job's directory", train_args(e, e.glob, out, ["--update", "int8",
                                                                                  "--residual-dir", e.path("job")]),
            ["output's directory", "outlive"], 1)
    # Another site's residual is never fed back into this site's update.
    e.run(train_args(e, e.glob, e.path("job", "other.h5"), upd + ["--site", "karolina", "--round", "0"]))
    nxt = e.path("global-r1.h5")
    with h5py.File(e.glob, "r") as f:
        if f.attrs["round"] != 0:
            fail("the fixture's global is not of round 0")
    # A round-1 job of site 'test' in the same directory would read karolina's round-0 residual.
    shutil.copy(e.glob, nxt)
    with h5py.File(nxt, "r+") as f:
        f.attrs["round"] = 1
    refused(e, "residual of another site", train_args(e, nxt, out, upd), ["karolina", "one site"], 1, ranks=2)
    if residual_names(res) != ["residual-round-000000.h5"]:
        fail(f"the refused update left residual files {residual_names(res)}")
    ok("--update with --init/--init-from, without a global, unknown encodings, bad blocks and bad residual "
       "directory paths exit 2; a missing, non-directory or per-job residual directory and another site's "
       "residual exit 1; each with one line and no update published")


def main():
    e = Env(sys.argv)
    e.ensure_fixture()
    {"round": case_round, "feedback": case_feedback, "refuse": case_refuse}[e.case](e)


if __name__ == "__main__":
    main()
