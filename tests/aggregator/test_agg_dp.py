#!/usr/bin/python3
"""flas-aggregate --dp-clip/--dp-noise against an independent float64 numpy DP-FedAvg: clipping of
every site's update, equal weights, FedAvg and FedAdam on the clipped mean, the noise's standard
deviation, the privacy ledger and epsilon read back by h5py against dp_accounting's conversion, two
rounds composing, and the CLI's refusals. Inputs are written by h5py from the format document.
Usage: test_agg_dp.py FLAS_AGGREGATE WORKDIR"""
import math
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agg_lib as L  # noqa: E402
from agg_lib import check  # noqa: E402

SEED = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def norm(d):
    return math.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in d.values()))


def epsilon(rho, delta):
    """Google dp_accounting's compute_epsilon (Balle et al. 2020) over its orders 1.01..100 step 0.001
    and a coarser tail: an independent re-implementation of the conversion."""
    orders = [1 + 0.001 * i for i in range(11, 100000)] + list(range(100, 20000, 5))
    return min(a * rho + math.log1p(-1 / a) - math.log(delta * a) / (a - 1) for a in orders)


def main():
    agg, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    x = L.random_params(1)
    glob = os.path.join(work, "global.h5")
    L.write_ckpt(glob, x, role="global", rnd=0)
    base = L.sha256(glob)
    # three sites whose updates have norms of about 0.3, 3 and 30 (C = 2.5 clips the last two)
    paths, locs = [], []
    for j, scale in enumerate([0.0005, 0.005, 0.05]):
        loc = L.perturb(x, seed=10 + j, scale=scale)
        p = os.path.join(work, f"local-{j}.h5")
        L.write_ckpt(p, loc, rnd=0, site=f"s{j}", tokens=1000 * (j + 1), base=base)
        paths.append(p)
        locs.append(loc)
    C = 2.5
    norms = [norm({n: locs[j][n].astype(np.float64) - x[n] for n in x}) for j in range(3)]
    print("update norms", ["%.4g" % v for v in norms], "clip", C)
    clipped = []
    for j in range(3):
        f = min(1.0, C / norms[j])
        clipped.append({n: x[n].astype(np.float64) + f * (locs[j][n].astype(np.float64) - x[n]) for n in x})

    # 1. FedAvg, clipping only: the float64 mean of the clipped models with equal weights
    out = os.path.join(work, "fedavg.h5")
    rc, so, se = L.run_aggregate(agg, glob, out, paths, "--dp-clip", str(C))
    check(rc == 0, f"DP FedAvg failed: {se}")
    if rc == 0:
        want, _, p = L.reference_step("fedavg", x, clipped, [1, 1, 1], {"m": {}, "v": {}}, {}, uniform=True)
        got = L.read_section(out)
        err = max(float(np.max(np.abs(got[n] - want[n]) / (1 + np.abs(want[n])))) for n in x)
        print(f"FedAvg on clipped updates: max relative error {err:.2e} against numpy")
        check(err < 1e-6, f"FedAvg with clipping differs from numpy by {err:.2e}")
        check(so.count("clipped x1 ") == 1 and "clipped x0." in so, f"clip factors not reported: {so}")
        check("WARNING" in se.upper() or "warning" in se, "no warning that sigma 0 is not private")
        with h5py.File(out, "r") as f:
            pr = f["provenance"].attrs
            check(list(pr["input_weights"]) == [1 / 3] * 3 or np.allclose(pr["input_weights"], 1 / 3),
                  "weights are not equal")
            check(np.isinf(pr["hyper.dp_epsilon"]), "sigma 0 must report epsilon inf")

    # 2. FedAdam acts on the clipped mean
    out = os.path.join(work, "fedadam.h5")
    rc, so, se = L.run_aggregate(agg, glob, out, paths, "--strategy", "fedadam", "--dp-clip", str(C))
    check(rc == 0, f"DP FedAdam failed: {se}")
    if rc == 0:
        want, _, _ = L.reference_step("fedadam", x, clipped, [1, 1, 1], {"m": {}, "v": {}}, L.DEFAULTS["fedadam"],
                                      uniform=True)
        got = L.read_section(out)
        err = max(float(np.max(np.abs(got[n] - want[n]) / (1 + np.abs(want[n])))) for n in x)
        print(f"FedAdam on clipped updates: max relative error {err:.2e} against numpy")
        check(err < 1e-5, f"FedAdam with clipping differs from numpy by {err:.2e}")

    # 3. noise: stddev sigma C / n around the clipped mean; the ledger and epsilon in the file
    sigma, delta = 0.8, 1e-5
    out = os.path.join(work, "noised.h5")
    rc, so, se = L.run_aggregate(agg, glob, out, paths, "--dp-clip", str(C), "--dp-noise", str(sigma),
                                 "--dp-delta", str(delta), "--dp-seed", SEED)
    check(rc == 0, f"DP with noise failed: {se}")
    if rc == 0:
        clean = L.read_section(os.path.join(work, "fedavg.h5"))
        got = L.read_section(out)
        noise = np.concatenate([(got[n].astype(np.float64) - clean[n]).ravel() for n in x])
        sd, want_sd = float(noise.std()), sigma * C / 3
        print(f"noise on {noise.size} coordinates: stddev {sd:.6f}, expected sigma C / n = {want_sd:.6f}")
        check(abs(sd - want_sd) < 5 * want_sd / math.sqrt(2 * noise.size) + 1e-6 * want_sd, "noise stddev")
        check(abs(float(noise.mean())) < 5 * want_sd / math.sqrt(noise.size), "noise mean")
        with h5py.File(out, "r") as f:
            pr, sv = f["provenance"].attrs, f["server"].attrs
            rho = 1 / (2 * sigma * sigma)
            eps = epsilon(rho, delta)
            print(f"epsilon: file {float(pr['hyper.dp_epsilon']):.6f}, independent {eps:.6f}")
            check(abs(float(pr["hyper.dp_epsilon"]) - eps) < 1e-4 * eps, "epsilon in the provenance")
            check(abs(float(pr["hyper.dp_noise_stddev"]) - want_sd) < 1e-12, "noise stddev in the provenance")
            check(int(sv["dp_rounds"]) == 1 and abs(float(sv["dp_rho"]) - rho) < 1e-12, "ledger in /server")
        # the same seed gives the same file's weights; no seed gives other noise
        again = os.path.join(work, "again.h5")
        L.run_aggregate(agg, glob, again, paths, "--dp-clip", str(C), "--dp-noise", str(sigma), "--dp-seed", SEED)
        check(all(np.array_equal(L.read_section(again)[n], got[n]) for n in x), "same seed, other noise")
        os.unlink(again)
        L.run_aggregate(agg, glob, again, paths, "--dp-clip", str(C), "--dp-noise", str(sigma))
        check(not all(np.array_equal(L.read_section(again)[n], got[n]) for n in x), "fresh seed gave the same noise")

        # 4. round 2 from the noised global composes the ledger
        base2 = L.sha256(out)
        g2 = L.read_section(out)
        p2 = []
        for j in range(2):
            p = os.path.join(work, f"r1-{j}.h5")
            L.write_ckpt(p, L.perturb(g2, seed=20 + j, scale=0.001), rnd=1, site=f"s{j}", tokens=10, base=base2)
            p2.append(p)
        out2 = os.path.join(work, "round2.h5")
        rc, so, se = L.run_aggregate(agg, out, out2, p2, "--dp-clip", str(C), "--dp-noise", "2", "--dp-delta",
                                     str(delta))
        check(rc == 0, f"round 2 failed: {se}")
        if rc == 0:
            with h5py.File(out2, "r") as f:
                rho2 = 1 / (2 * 0.64) + 1 / (2 * 4.0)
                check(int(f["server"].attrs["dp_rounds"]) == 2, "round 2 ledger rounds")
                check(abs(float(f["server"].attrs["dp_rho"]) - rho2) < 1e-12, "round 2 ledger rho")
                e2 = epsilon(rho2, delta)
                check(abs(float(f["provenance"].attrs["hyper.dp_epsilon"]) - e2) < 1e-4 * e2, "round 2 epsilon")
                print(f"two rounds (sigma 0.8 then 2): epsilon {float(f['provenance'].attrs['hyper.dp_epsilon']):.4f},"
                      f" independent {e2:.4f}")

    # 4b. norm bounds judge the raw updates measured by the norm pass: the largest (27) is dropped
    out = os.path.join(work, "bounded.h5")
    rc, so, se = L.run_aggregate(agg, glob, out, paths, "--dp-clip", str(C), "--max-update-norm", "10",
                                 "--policy", "drop-bad")
    check(rc == 0 and so.count("dropped") == 1 and "exceeds --max-update-norm 10" in so,
          f"DP with a norm bound: rc {rc}: {so} {se}")

    # 5. refusals: exit 2, nothing written
    bad = os.path.join(work, "bad.h5")
    for args, what in ((["--dp-noise", "1"], "need --dp-clip"), (["--dp-clip", "0"], "> 0"),
                       (["--dp-clip", "-1"], "> 0"), (["--dp-clip", "inf", "--dp-noise", "1"], "infinite noise"),
                       (["--dp-clip", "1", "--dp-seed", "abc"], "64 hex digits"),
                       (["--dp-clip", "1", "--dp-delta", "2"], "--dp-delta"),
                       (["--dp-clip", "nan"], "--dp-clip")):
        rc, so, se = L.run_aggregate(agg, glob, bad, paths, *args)
        check(rc == 2 and what in se and not os.path.exists(bad), f"{args}: rc {rc}, {se.strip()}")
    if L.failures:
        print("FAILED:\n  " + "\n  ".join(L.failures))
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("DP-FedAvg matches numpy (clipping, FedAvg, FedAdam), the noise has stddev sigma C / n, the ledger "
          "composes, epsilon matches an independent accountant, bad options are refused")


if __name__ == "__main__":
    main()
