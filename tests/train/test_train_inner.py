#!/usr/bin/python3
"""flas-train's levers across rounds (docs/tuning.md; ctest label: mpi).

  keep     --inner-state keep: two rounds of 5 steps, the second global made by flas-aggregate from the
           first local (one site: FedAvg of one input is that input), with --lr-schedule run --rounds 2,
           end with exactly the weights of ONE continuous 10-step run (same warmup + cosine, same data):
           the moments, their step count and the data position survive the round trip through the state
           file. The same two rounds with --inner-state reset do not (the test can fail). The published
           file holds the weights only: no /optimizer, and 64-byte runs of the moments are found in the
           state file but in no file of the job's directories; only the last two rounds' states stay.
  data     a new round starts epoch ROUND of the data order: round 0 and round 1 from the same weights
           see different first batches, --data-epoch 0 brings round 0's back
  prox     --prox 100 keeps a round's weights closer to the global than --prox 0
  warmup   --round-warmup N ramps the lr over a round's first N steps; --lr-schedule run gives round 1
           of 2 the second half of one cosine
  refuse   keep without --state-dir or --round, --lr-schedule run without --rounds, a round not below
           --rounds, --prox without a global, malformed FLAS_INNER_STATE / FLAS_LR_SCHEDULE / FLAS_ROUNDS /
           FLAS_PROX: exit 2 and one line; a state of another site or another model, or a symlink where a
           state should be: exit 1, one line, nothing published

usage: test_train_inner.py FLAS_TRAIN FIXTURE MPIEXEC WORKDIR keep|data|prox|warmup|refuse FLAS_AGGREGATE"""
import glob
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

from trainlib import Env, ROOT_ENV, TINY, fail, ok


def message(p):
    """flas-train's own stderr lines (a sanitizer build may add its suppression summary)."""
    return "\n".join(l for l in p.stderr.splitlines() if l.startswith("flas-train"))


def args(e, glob_, out, extra=()):
    return ["--global", glob_, "--data", e.data, "--batch", "2", "--seq", "32", "--threads", "1", "--site", "test",
            "--peak-gflops", "100", "--lr", "1e-2", "--min-lr", "1e-3", "--warmup", "2", "--output", out] + list(extra)


def params(path):
    with h5py.File(path, "r") as f:
        return {n: f["params"][n][...] for n in f["params"]}


def aggregate(agg, prev, local, out):
    p = subprocess.run([agg, "-q", "-p", prev, "-o", out, local], capture_output=True, text=True)
    if p.returncode:
        fail(f"flas-aggregate {prev} {local}: exit {p.returncode}\n{p.stderr}")


def max_diff(a, b):
    return max(float(np.max(np.abs(a[n].astype(np.float64) - b[n]))) for n in a)


def first_loss(metrics):
    with open(metrics) as f:
        for line in f:
            d = json.loads(line)
            if d.get("step") == 1 and "loss" in d and d.get("event") is None:
                return d["loss"]
    fail(f"{metrics}: no step-1 loss")


def two_rounds(e, agg, mode, tag):
    """Round 0 and 1 of 5 steps each with --inner-state mode; returns (final local, state dir, job dirs)."""
    state = e.path(f"state-{tag}")
    os.makedirs(state)
    jobs, g = [], e.glob
    for r in range(2):
        job = e.path(f"{tag}-job{r}")
        os.makedirs(job)
        jobs.append(job)
        out = os.path.join(job, "local.h5")
        e.run(args(e, g, out, ["--steps", "5", "--round", str(r), "--inner-state", mode, "--state-dir", state,
                               "--lr-schedule", "run", "--rounds", "2"]))
        if r == 0:
            g = e.path(f"{tag}-global-1.h5")
            aggregate(agg, e.glob, out, g)
    return os.path.join(jobs[-1], "local.h5"), state, jobs


def case_keep(e, agg):
    cont = e.path("continuous.h5")
    e.run(args(e, e.glob, cont, ["--steps", "10"]))
    local, state, jobs = two_rounds(e, agg, "keep", "keep")
    want = params(cont)
    d = max_diff(params(local), want)
    if d != 0.0:
        fail(f"two kept rounds differ from one continuous run by {d:g} (the state did not round-trip)")
    reset_local, _, _ = two_rounds(e, agg, "reset", "reset")
    dr = max_diff(params(reset_local), want)
    if dr == 0.0:
        fail("two reset rounds equal the continuous run: the test cannot tell kept state from reset")
    ok(f"2 x 5 kept steps = 10 continuous steps bit for bit (reset rounds differ by {dr:.3g})")

    # What the job publishes carries no moments; the state file does.
    states = sorted(os.listdir(state))
    if states != ["inner-round-000000.h5", "inner-round-000001.h5"]:
        fail(f"state directory holds {states}")
    with h5py.File(os.path.join(state, states[-1]), "r") as f:
        if "optimizer" not in f:
            fail("the inner state has no /optimizer")
        probes = []
        for kind in ("m", "v"):
            for n in f["optimizer"][kind]:
                a = f["optimizer"][kind][n][...].ravel()
                if a.size >= 16 and np.count_nonzero(a[:16]) == 16:
                    probes.append((f"{kind}/{n}", a[:16].astype("<f4").tobytes()))
    if len(probes) < 4:
        fail(f"too few non-zero moment tensors to search for ({len(probes)})")
    state_bytes = open(os.path.join(state, states[-1]), "rb").read()
    if not all(p in state_bytes for _, p in probes):
        fail("the moments' bytes are not found in the state file itself: the search would find nothing anywhere")
    for job in jobs:
        for path in glob.glob(os.path.join(job, "**"), recursive=True):
            if not os.path.isfile(path):
                continue
            data = open(path, "rb").read()
            for name, p in probes:
                if p in data:
                    fail(f"{path}: holds the bytes of the moments {name}: the inner state left the state directory")
        with h5py.File(os.path.join(job, "local.h5"), "r") as f:
            if "optimizer" in f or "train_state" in f:
                fail(f"{job}/local.h5 carries {[k for k in f if k in ('optimizer', 'train_state')]}")
    ok(f"{len(probes)} moment tensors: found in the state file, in none of the {len(jobs)} jobs' files; published "
       "local.h5 has params only")

    # A third round: round 0's state goes, rounds 1 and 2 stay.
    g2 = e.path("keep-global-2.h5")
    aggregate(agg, e.path("keep-global-1.h5"), local, g2)
    job = e.path("keep-job2")
    os.makedirs(job)
    p = e.run(args(e, g2, os.path.join(job, "local.h5"), ["--steps", "2", "--round", "2", "--inner-state", "keep",
                                                          "--state-dir", state]))
    if sorted(os.listdir(state)) != ["inner-round-000001.h5", "inner-round-000002.h5"]:
        fail(f"after round 2 the state directory holds {sorted(os.listdir(state))}")
    if "AdamW continues at its step 10" not in p.stdout:
        fail(f"round 2 did not say it continues AdamW at step 10:\n{p.stdout}")
    ok("round 2 continues at AdamW step 10; only rounds 1 and 2 are kept")


def case_data(e, agg):
    losses = {}
    for name, extra in (("r0", []), ("r0-epoch1", ["--data-epoch", "1"]), ("r0-epoch0", ["--data-epoch", "0"])):
        m = e.path(f"{name}.jsonl")
        e.run(args(e, e.glob, e.path(f"{name}.h5"), ["--steps", "1", "--round", "0", "--metrics", m] + extra))
        losses[name] = first_loss(m)
    g1 = e.path("global-1.h5")
    aggregate(agg, e.glob, e.path("r0.h5"), g1)
    # round 1 from round 0's weights again, so that only the data differs
    for name, extra in (("r1", []), ("r1-epoch0", ["--data-epoch", "0"]), ("r1-epoch1", ["--data-epoch", "1"])):
        m = e.path(f"{name}.jsonl")
        e.run(args(e, g1, e.path(f"{name}.h5"), ["--steps", "1", "--round", "1", "--metrics", m] + extra))
        losses[name] = first_loss(m)
    if losses["r0"] != losses["r0-epoch0"] or losses["r0"] == losses["r0-epoch1"]:
        fail(f"round 0 does not start at epoch 0 of the order: {losses}")
    if losses["r1"] != losses["r1-epoch1"] or losses["r1"] == losses["r1-epoch0"]:
        fail(f"round 1 does not start at epoch 1 of the order: {losses}")
    ok(f"round R starts epoch R of the data order (first losses {losses})")


def case_prox(e, agg):
    g = params(e.glob)
    dist = {}
    for mu in ("0", "100"):
        out = e.path(f"prox-{mu}.h5")
        e.run(args(e, e.glob, out, ["--steps", "6", "--prox", mu]))
        x = params(out)
        dist[mu] = float(np.sqrt(sum(np.sum((x[n].astype(np.float64) - g[n]) ** 2) for n in g)))
    if not dist["100"] < 0.8 * dist["0"]:
        fail(f"--prox 100 did not keep the weights nearer the global: distance {dist}")
    ok(f"distance to the global after 6 steps: prox 0 {dist['0']:.4f}, prox 100 {dist['100']:.4f}")


def case_warmup(e, agg):
    """--round-warmup N scales the lr by (i+1)/N over a round's first N steps, on top of the schedule;
    --lr-schedule run places round R's steps at R x steps of one schedule."""
    m = e.path("warm.jsonl")
    e.run(args(e, e.glob, e.path("warm.h5"), ["--steps", "5", "--round-warmup", "4", "--lr", "1e-2", "--min-lr", "1e-2",
                                              "--warmup", "0", "--metrics", m, "--log-every", "1"]))
    lrs = warm = [d["lr"] for d in map(json.loads, open(m)) if d.get("event") is None and "lr" in d]
    want = [2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2]
    if len(lrs) != 5 or any(abs(a - b) > 1e-9 for a, b in zip(lrs, want)):
        fail(f"--round-warmup 4: lr per step {lrs}, want {want}")
    # round 1 of 2 rounds of 4 steps: schedule steps 4..7 of a warmup-0 cosine over 8 from 1e-2 to 1e-3
    g1 = e.path("global-1.h5")
    aggregate(agg, e.glob, e.path("warm.h5"), g1)
    m = e.path("run.jsonl")
    e.run(args(e, g1, e.path("run.h5"), ["--steps", "4", "--round", "1", "--lr-schedule", "run", "--rounds", "2",
                                         "--warmup", "0", "--metrics", m, "--log-every", "1"]))
    lrs = [d["lr"] for d in map(json.loads, open(m)) if d.get("event") is None and "lr" in d]
    import math
    want = [1e-3 + 0.5 * (1e-2 - 1e-3) * (1 + math.cos(math.pi * s / 8)) for s in range(4, 8)]
    if len(lrs) != 4 or any(abs(a - b) > 1e-6 * b for a, b in zip(lrs, want)):
        fail(f"--lr-schedule run, round 1: lr per step {lrs}, want {want}")
    ok(f"round warm-up: lr {[round(x, 6) for x in warm]}; the run's cosine gives round 1 {[round(x, 6) for x in lrs]}")


def case_refuse(e, agg):
    out = e.path("job", "local.h5")
    os.makedirs(os.path.dirname(out))
    st = e.path("st")
    os.makedirs(st)

    def refused(extra, env, code, needle):
        p = e.run(args(e, e.glob, out, ["--steps", "2"] + extra), env=env, check=False)
        msg = message(p)
        if p.returncode != code or needle not in msg or len(msg.splitlines()) != 1:
            fail(f"{extra} {env}: exit {p.returncode} (want {code}), stderr {msg!r} (want one line with {needle!r})")
        if os.path.exists(out):
            fail(f"{extra} {env}: published {out} although refused")

    refused(["--inner-state", "keep", "--round", "0"], None, 2, "--state-dir")
    refused(["--inner-state", "keep", "--state-dir", st], None, 2, "--round")
    refused(["--inner-state", "keep", "--state-dir", "rel", "--round", "0"], None, 2, "absolute")
    refused(["--lr-schedule", "run", "--round", "0"], None, 2, "--rounds")
    refused(["--lr-schedule", "run", "--rounds", "2", "--round", "2"], None, 2, "not below")
    refused(["--inner-state", "sometimes"], None, 2, "reset, keep")
    refused([], {"FLAS_INNER_STATE": "kept"}, 2, "FLAS_INNER_STATE")
    refused([], {"FLAS_LR_SCHEDULE": "cosine"}, 2, "FLAS_LR_SCHEDULE")
    refused([], {"FLAS_ROUNDS": "0"}, 2, "FLAS_ROUNDS")
    refused([], {"FLAS_PROX": "-1"}, 2, "FLAS_PROX")
    p = e.run(["--data", e.data, "--resume", "x.h5", "--output", out, "--steps", "1", "--prox", "1"], check=False)
    if p.returncode != 2 or "--prox" not in p.stderr:
        fail(f"--prox without a global: exit {p.returncode} {p.stderr!r}")
    # A state of round 0 by site "test", read by site "other" in round 1.
    e.run(args(e, e.glob, e.path("r0.h5"), ["--round", "0", "--steps", "1", "--inner-state", "keep", "--state-dir",
                                             st]))
    g1 = e.path("global-1.h5")
    aggregate(agg, e.glob, e.path("r0.h5"), g1)

    def refused1(extra, needle, glob_=g1):
        p = e.run(args(e, glob_, out, ["--steps", "1", "--round", "1", "--inner-state", "keep"] + extra), check=False)
        msg = message(p)
        if p.returncode != 1 or needle not in msg or len(msg.splitlines()) != 1:
            fail(f"{extra}: exit {p.returncode}, stderr {msg!r} (want exit 1, one line with {needle!r})")
        if os.path.exists(out):
            fail(f"{extra}: published {out} although refused")

    refused1(["--state-dir", st, "--site", "other"], "of site 'test', not of 'other'")
    link = e.path("linked")
    os.makedirs(link)
    os.symlink(os.path.join(st, "inner-round-000000.h5"), os.path.join(link, "inner-round-000000.h5"))
    refused1(["--state-dir", link], "not a regular file")
    # Another model's state: a wider model's round-1 global with this state directory.
    wide = e.path("wide-global-1.h5")
    e.run(["--init", "--dim", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--vocab", "128", "--seq-len",
           "64", "--seed", "3", "--round", "1", "--output", wide])
    refused1(["--state-dir", st], "another model's inner state", wide)
    ok("refusals: usage (exit 2) and foreign or linked state (exit 1), one line each, nothing published")


def main():
    e = Env(sys.argv)
    e.ensure_fixture()
    if len(sys.argv) < 7 or not os.access(sys.argv[6], os.X_OK):
        fail("usage: ... CASE FLAS_AGGREGATE (missing flas-aggregate)")
    agg = sys.argv[6]
    {"keep": case_keep, "data": case_data, "prox": case_prox, "warmup": case_warmup,
     "refuse": case_refuse}[e.case](e, agg)


if __name__ == "__main__":
    main()
