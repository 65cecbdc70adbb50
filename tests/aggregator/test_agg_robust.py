#!/usr/bin/python3
"""One site must not silence or steer the others (ctest label: unit):
  identity   a site's identity is where its file was fetched from (--input SITE=FILE): a file that
             claims another site is refused by name, and the impersonated site's own update merges;
  norms      an update larger than --max-update-norm, or than --max-update-ratio x the lower median of
             the sites' update norms, is dropped (drop-bad) or refuses the round (refuse-round); the
             result equals the float64 reference over the remaining sites;
  overflow   one site with huge finite values (1e21) under fedadam, fedyogi and diloco is blamed and
             dropped, never failing the round, even with no norm bound set;
  symlink    a symlink planted where the output's temporary could be (any '.next.h5.tmp-*' name) is
             never followed: the file it points to is untouched.
Usage: test_agg_robust.py FLAS_AGGREGATE WORKDIR"""
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agg_lib as L  # noqa: E402
from agg_lib import check, failures  # noqa: E402


def provenance(path):
    with h5py.File(path, "r") as f:
        pv = f["provenance"].attrs
        return list(pv["input_used"]), list(pv["input_sites"]), list(pv["input_reasons"])


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    path = lambda n: os.path.join(work, n)
    out_dir = path("out")
    os.makedirs(out_dir)
    out = os.path.join(out_dir, "next.h5")
    x = L.random_params(7)
    glob = path("global.h5")
    L.write_ckpt(glob, x, role="global", rnd=2)
    base = L.sha256(glob)
    xa, xb, xc = (L.perturb(x, seed=s) for s in (1, 2, 3))
    a, b, c = path("leonardo.h5"), path("karolina.h5"), path("vega.h5")
    L.write_ckpt(a, xa, rnd=2, site="leonardo", tokens=1000, base=base)
    L.write_ckpt(b, xb, rnd=2, site="karolina", tokens=3000, base=base)
    L.write_ckpt(c, xc, rnd=2, site="vega", tokens=2000, base=base)

    def agg(*args):
        if os.path.exists(out):
            os.unlink(out)
        return L.run_aggregate(binary, glob, out, [], *args)

    def equals_reference(case, strategy, xs, tokens, extra_hp=None):
        hp = dict(L.DEFAULTS[strategy], **(extra_hp or {}))
        want, _, _ = L.reference_step(strategy, x, xs, tokens, {"m": {}, "v": {}}, hp)
        got = L.read_section(out)
        for n in want:
            if not check(np.allclose(got[n], want[n], rtol=2e-5, atol=1e-6), f"{case}: {n} differs from reference"):
                return

    # identity: karolina's job wrote a checkpoint that claims to be leonardo.
    fake = path("impersonator.h5")
    L.write_ckpt(fake, L.perturb(x, seed=9), rnd=2, site="leonardo", tokens=5000, base=base)
    rc, so, se = agg("--input", f"leonardo={a}", "--input", f"karolina={fake}")
    check(rc == 1 and "fetched from site 'karolina' but claims to be site 'leonardo'" in se,
          f"impersonation, refuse-round: {rc} {se}")
    check(not L.leftovers(out_dir, "next.h5"), "impersonation, refuse-round: output left")
    rc, so, se = agg("--policy", "drop-bad", "--input", f"leonardo={a}", "--input", f"karolina={fake}")
    if check(rc == 0, f"impersonation, drop-bad: {rc} {se}"):
        used, sites, reasons = provenance(out)
        check(used == [1, 0] and sites == ["leonardo", "karolina"], f"impersonation: used {used} sites {sites}")
        check("claims to be site 'leonardo'" in reasons[1], f"impersonation: reason {reasons[1]!r}")
        check("dropped  karolina" in so and "claims to be site 'leonardo'" in so, f"impersonation report: {so}")
        equals_reference("impersonation", "fedavg", [xa], [1000])
    # Without --input the old rule holds: a self-declared duplicate silences the honest site's update.
    # With it, the honest update wins whatever order the files come in.
    rc, so, se = agg("--policy", "drop-bad", "--input", f"karolina={fake}", "--input", f"leonardo={a}")
    check(rc == 0 and provenance(out)[0] == [0, 1], f"impersonation listed first: {rc} {se}")
    rc, so, se = agg("--input", "bad/name=" + a)
    check(rc == 2 and "--input needs SITE=FILE" in se, f"bad site name: {rc} {se}")

    # norms: vega's update is 20x the others'.
    xbig = {n: (x[n] + 20 * (xc[n] - x[n])).astype(np.float32) for n in x}
    big = path("vega-big.h5")
    L.write_ckpt(big, xbig, rnd=2, site="vega", tokens=2000, base=base)
    norm = lambda xs: float(np.sqrt(sum(np.sum((xs[n].astype(np.float64) - x[n]) ** 2) for n in x)))
    na, nb, nbig = norm(xa), norm(xb), norm(xbig)
    rc, so, se = agg("--policy", "drop-bad", "--max-update-ratio", "5", a, b, big)
    if check(rc == 0, f"ratio bound: {rc} {se}"):
        used, _, reasons = provenance(out)
        check(used == [1, 1, 0] and "--max-update-ratio" in reasons[2], f"ratio bound: {used} {reasons}")
        check(f"update norm {nbig:.4g}" in so.replace("\n", " ") or "update norm" in so, f"ratio report: {so}")
        equals_reference("ratio bound", "fedavg", [xa, xb], [1000, 3000])
    rc, so, se = agg("--max-update-ratio", "5", a, b, big)
    check(rc == 1 and "vega-big.h5: update norm" in se, f"ratio bound, refuse-round: {rc} {se}")
    check(not L.leftovers(out_dir, "next.h5"), "ratio bound, refuse-round: output left")
    bound = 2 * max(na, nb)  # between the honest norms and the big one
    check(bound < nbig, "fixture: the big update must exceed the absolute bound")
    rc, so, se = agg("--policy", "drop-bad", "--max-update-norm", f"{bound}", "-s", "diloco", a, b, big)
    if check(rc == 0, f"absolute bound: {rc} {se}"):
        used, _, reasons = provenance(out)
        check(used == [1, 1, 0] and "--max-update-norm" in reasons[2], f"absolute bound: {used} {reasons}")
        equals_reference("absolute bound (diloco)", "diloco", [xa, xb], [1000, 3000])
    rc, so, se = agg("--max-update-ratio", "5", "--max-update-norm", f"{10 * nbig}", a, b, c)
    check(rc == 0 and provenance(out)[0] == [1, 1, 1], f"bounds with honest sites: {rc} {se}")

    # overflow: huge finite values in one site; no bound set. 1e21 squared overflows the adaptive
    # strategies' second moment; DiLoCo's outer step overflows once the values near FLT_MAX dominate.
    for strategy, value, tokens in (("fedadam", 1e21, 2000), ("fedyogi", 1e21, 2000), ("diloco", 3e38, 10**6)):
        xhuge = {n: np.full_like(v, value) for n, v in x.items()}
        huge = path("vega-huge.h5")
        L.write_ckpt(huge, xhuge, rnd=2, site="vega", tokens=tokens, base=base)
        rc, so, se = agg("--policy", "drop-bad", "-s", strategy, a, b, huge)
        if check(rc == 0, f"overflow {strategy}, drop-bad: {rc} {se}"):
            used, _, reasons = provenance(out)
            check(used == [1, 1, 0] and "server step overflow" in reasons[2], f"overflow {strategy}: {used} {reasons}")
            equals_reference(f"overflow {strategy}", strategy, [xa, xb], [1000, 3000])
        rc, so, se = agg("-s", strategy, a, b, huge)
        check(rc == 1 and "vega-huge.h5" in se and "overflow" in se, f"overflow {strategy}, refuse-round: {rc} {se}")

    # symlink: every name the temporary could have is a symlink to a victim file.
    victim = path("victim.txt")
    with open(victim, "w") as f:
        f.write("precious\n")
    import socket
    host = socket.gethostname().replace("/", "_").replace(".", "_")
    for pid in range(os.getpid() + 1, os.getpid() + 200):
        os.symlink(victim, os.path.join(out_dir, f".next.h5.tmp-{host}-{pid}"))
    rc, so, se = agg(a, b)
    check(rc == 0, f"symlinks planted: {rc} {se}")
    check(open(victim).read() == "precious\n", "symlink: the victim file was overwritten")

    for f in failures[:40]:
        print("FAIL:", f)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print("impersonation refused by name with the honest update merged; update-norm bounds (absolute, ratio) "
          "drop the outlier; overflow blamed on its input under fedadam, fedyogi and diloco; planted symlinks "
          "never followed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
