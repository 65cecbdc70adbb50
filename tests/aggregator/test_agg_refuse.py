#!/usr/bin/python3
"""Every bad input flas-aggregate must catch: for each case, with the default policy (refuse-round) the
run exits non-zero with one clear line, the previous global is byte-for-byte untouched, and neither the
output nor a temporary of it is visible. With --policy drop-bad the same input is dropped (reason in
the provenance, weight 0), the round goes on with the good inputs and equals the float64 reference,
and --min-sites above the good count refuses again.
Usage: test_agg_refuse.py FLAS_AGGREGATE WORKDIR"""
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agg_lib as L  # noqa: E402
from agg_lib import check, failures  # noqa: E402


class Round:
    """A previous global and three good local checkpoints of round 4."""

    def __init__(self, work, binary):
        self.d, self.binary = work, binary
        self.glob = os.path.join(work, "global.h5")
        self.x = L.random_params(7)
        L.write_ckpt(self.glob, self.x, role="global", rnd=4)
        self.base = L.sha256(self.glob)
        self.glob_stat = os.stat(self.glob)
        self.good, self.good_x, self.tokens = [], [], [1000, 2000, 4000]
        for j, site in enumerate(["site-a", "site-b", "site-c"]):
            p = os.path.join(work, f"good-{j}.h5")
            xl = L.perturb(self.x, seed=j)
            L.write_ckpt(p, xl, rnd=4, site=site, tokens=self.tokens[j], base=self.base)
            self.good.append(p)
            self.good_x.append(xl)
        self.out_dir = os.path.join(work, "out")
        os.makedirs(self.out_dir, exist_ok=True)
        self.out = os.path.join(self.out_dir, "next.h5")

    def local(self, name, **kw):
        """A local checkpoint of site-bad: good values unless kw changes something."""
        p = os.path.join(self.d, name)
        args = dict(rnd=4, site="site-bad", tokens=3000, base=self.base)
        params = kw.pop("params", L.perturb(self.x, seed=99))
        args.update(kw)
        L.write_ckpt(p, params, **args)
        return p

    def untouched(self, case):
        st = os.stat(self.glob)
        check(L.sha256(self.glob) == self.base and st.st_mtime_ns == self.glob_stat.st_mtime_ns,
              f"{case}: the previous global changed")

    def no_output(self, case):
        left = L.leftovers(self.out_dir, "next.h5")
        check(not left, f"{case}: output or temporary visible after a refusal: {left}")

    def refused(self, case, bad_inputs, needle, code=1, extra=()):
        rc, so, se = L.run_aggregate(self.binary, self.glob, self.out, bad_inputs, *extra)
        lines = [l for l in se.strip().split("\n") if l]
        check(rc == code, f"{case}: exit {rc}, want {code} ({se.strip()})")
        check(len(lines) == 1 and lines[0].startswith("flas-aggregate: error: "),
              f"{case}: stderr is not one error line: {se!r}")
        check(needle in se, f"{case}: message lacks '{needle}': {se.strip()}")
        self.untouched(case)
        self.no_output(case)

    def dropped(self, case, bad, needle):
        """drop-bad: the good three merge; the bad one is dropped with its reason."""
        inputs = self.good + [bad]
        rc, so, se = L.run_aggregate(self.binary, self.glob, self.out, inputs, "--policy", "drop-bad",
                                     "--min-sites", "3")
        if not check(rc == 0, f"{case} (drop-bad): exit {rc}: {se.strip()}"):
            return
        self.untouched(case + " (drop-bad)")
        want, _, p = L.reference_step("fedavg", self.x, self.good_x, self.tokens, {}, {})
        got = L.read_section(self.out)
        for n in want:
            check(np.allclose(got[n], want[n], rtol=2e-6, atol=1e-7), f"{case} (drop-bad): {n} differs")
        with h5py.File(self.out, "r") as f:
            pv = f["provenance"].attrs
            check(list(pv["input_used"]) == [1, 1, 1, 0], f"{case} (drop-bad): input_used {pv['input_used']}")
            check(np.allclose(pv["input_weights"], list(p) + [0.0]), f"{case} (drop-bad): weights {pv['input_weights']}")
            check(needle in pv["input_reasons"][3], f"{case} (drop-bad): reason {pv['input_reasons'][3]!r}")
            check(pv["policy"] == "drop-bad" and f.attrs["tokens_trained"] == sum(self.tokens),
                  f"{case} (drop-bad): policy/tokens")
        os.unlink(self.out)
        # Too few sites left: refused after all.
        self.refused(case + " (min-sites 4)", inputs, "--min-sites is 4", 1, ("--policy", "drop-bad",
                                                                                "--min-sites", "4"))


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    R = Round(work, binary)

    # The good round itself works (so every refusal below is caused by its bad input).
    rc, so, se = L.run_aggregate(binary, R.glob, R.out, R.good)
    check(rc == 0, f"good round: exit {rc}: {se}")
    os.unlink(R.out)

    cases = []  # (name, path of the bad input, message needle)
    p = os.path.join(work, "text.h5")
    open(p, "w").write("not a checkpoint\n")
    cases.append(("not HDF5", p, "not an HDF5 file"))
    p = R.local("truncated.h5")
    os.truncate(p, os.path.getsize(p) // 2)
    cases.append(("truncated", p, "truncated file"))
    cases.append(("wrong format", R.local("fmt.h5", fmt="safetensors"), "wrong format 'safetensors'"))
    cases.append(("wrong version", R.local("ver.h5", version=2), "format version 2 is not supported"))
    cases.append(("no completion marker", R.local("incomplete.h5", complete=False), "no completion marker"))
    other = dict(L.CFG, hidden_dim=176)
    cases.append(("other config", R.local("cfg.h5", cfg=other, params=L.random_params(3, cfg=other)),
                  "model config differs from the expected one: hidden_dim 176 != 172"))
    bad_shape = L.perturb(R.x, seed=5)
    bad_shape["layers.2.attention.wq.weight"] = bad_shape["layers.2.attention.wq.weight"][:, :63]
    cases.append(("tensor shape", R.local("shape.h5", params=bad_shape),
                  "tensor params/layers.2.attention.wq.weight has shape (64, 63) but the config needs (64, 64)"))
    cases.append(("float64 tensors", R.local("f64.h5", tensor_dtype=np.float64), "has dtype float64"))
    nan = L.perturb(R.x, seed=6)
    nan["layers.4.feed_forward.w3.weight"][100, 7] = np.nan  # late in the stream: found mid-merge
    cases.append(("NaN", R.local("nan.h5", params=nan),
                  "non-finite values (NaN or Inf) in params/layers.4.feed_forward.w3.weight"))
    inf = L.perturb(R.x, seed=8)
    inf["tok_embeddings.weight"][3, 3] = -np.inf
    cases.append(("Inf", R.local("inf.h5", params=inf), "non-finite values (NaN or Inf) in params/tok_embeddings"))
    cases.append(("other base model", R.local("base.h5", base=L.sha256(R.good[0])), "trained from another base model"))
    cases.append(("no base model", R.local("nobase.h5", base=""), "trained from another base model"))
    cases.append(("wrong round", R.local("round.h5", rnd=3), "round 3, but the previous global starts round 4"))
    cases.append(("zero tokens", R.local("tok0.h5", tokens=0), "implausible tokens_trained 0"))
    cases.append(("too many tokens", R.local("tokbig.h5", tokens=10**14), "implausible tokens_trained 100000000000000"))
    cases.append(("negative tokens", R.local("tokneg.h5", tokens=-5), "negative round"))
    cases.append(("a global as input", R.local("role.h5", role="global"), "is a global checkpoint"))
    cases.append(("same site twice", R.local("dupsite.h5", site="site-a"), "site 'site-a' already has an update"))
    dup = os.path.join(work, "copy-of-good-0.h5")
    shutil.copy(R.good[0], dup)
    cases.append(("same file twice", dup, "site 'site-a' already has an update"))
    cases.append(("missing file", os.path.join(work, "absent.h5"), "No such file or directory"))

    for name, bad, needle in cases:
        R.refused(name, R.good + [bad], needle)
        R.dropped(name, bad, needle)

    # Non-finite values under the server optimizers too (their momentum and moment buffers must not
    # take in a NaN): refused, or dropped with the good three merged exactly as the reference does.
    nan_path = next(c[1] for c in cases if c[0] == "NaN")
    for strat in ("diloco", "fedadam"):
        R.refused(f"NaN with {strat}", R.good + [nan_path], "non-finite values", 1, ("-s", strat))
        rc, so, se = L.run_aggregate(binary, R.glob, R.out, R.good + [nan_path], "-s", strat, "--policy",
                                     "drop-bad", "--min-sites", "3")
        if check(rc == 0, f"NaN with {strat} (drop-bad): exit {rc}: {se.strip()}"):
            want, state, _ = L.reference_step(strat, R.x, R.good_x, R.tokens, {"m": {}, "v": {}}, L.DEFAULTS[strat])
            got = L.read_section(R.out)
            with h5py.File(R.out, "r") as f:
                bufs = {b: {n: f["server"][b][n][...] for n in want} for b in ("m", "v") if b in f["server"]}
            for n in want:
                check(np.allclose(got[n], want[n], rtol=2e-6, atol=1e-7), f"NaN with {strat} (drop-bad): {n} differs")
                for b in bufs:
                    check(np.all(np.isfinite(bufs[b][n])) and np.allclose(bufs[b][n], state[b][n], rtol=1e-5, atol=1e-8),
                          f"NaN with {strat} (drop-bad): server/{b}/{n} differs from the reference")
            os.unlink(R.out)
            R.untouched(f"NaN with {strat} (drop-bad)")

    # Problems that no policy can drop: the previous global itself, and the output path.
    rc, so, se = L.run_aggregate(binary, R.good[0], R.out, R.good[1:])
    check(rc == 2 and "is a local checkpoint" in se, f"previous local: {rc} {se}")
    damaged = os.path.join(work, "damaged-global.h5")
    shutil.copy(R.glob, damaged)
    os.truncate(damaged, 5000)
    rc, so, se = L.run_aggregate(binary, damaged, R.out, R.good)
    check(rc == 2 and "previous global" in se and "truncated" in se, f"damaged previous: {rc} {se}")
    R.no_output("damaged previous")
    rc, so, se = L.run_aggregate(binary, R.glob, R.glob, R.good)
    check(rc == 2 and "never overwritten" in se, f"output = previous: {rc} {se}")
    R.untouched("output = previous")
    rc, so, se = L.run_aggregate(binary, R.glob, R.good[1], R.good)
    check(rc == 2 and "is the input" in se, f"output = input: {rc} {se}")
    rc, so, se = L.run_aggregate(binary, R.glob, os.path.join(work, "no", "dir", "x.h5"), R.good)
    check(rc == 3 and "does not exist" in se, f"output dir missing: {rc} {se}")
    # Server state of another strategy is not silently reinterpreted.
    adam = os.path.join(work, "global-adam.h5")
    zeros = {n: np.zeros_like(a) for n, a in R.x.items()}
    L.write_ckpt(adam, R.x, role="global", rnd=4,
                 server={"strategy": "fedadam", "round": 2, "step": 2, "m": zeros, "v": zeros})
    locs = []
    for j in range(2):
        pth = os.path.join(work, f"adam-local-{j}.h5")
        L.write_ckpt(pth, L.perturb(R.x, seed=j), rnd=4, site=f"s{j}", tokens=10, base=L.sha256(adam))
        locs.append(pth)
    rc, so, se = L.run_aggregate(binary, adam, R.out, locs, "-s", "diloco")
    check(rc == 2 and "carries fedadam server state" in se, f"strategy switch: {rc} {se}")
    R.no_output("strategy switch")
    rc, so, se = L.run_aggregate(binary, adam, R.out, locs, "-s", "diloco", "--reset-server-state")
    check(rc == 0, f"strategy switch with reset: {rc} {se}")
    os.path.exists(R.out) and os.unlink(R.out)
    # A numerically exploding server step is refused, not written.
    rc, so, se = L.run_aggregate(binary, R.glob, R.out, R.good, "-s", "fedadam", "--lr", "1e300")
    check(rc == 3 and "non-finite values" in se, f"exploding server step: {rc} {se}")
    R.no_output("exploding server step")
    # Not enough sites with every input good, and bad option values.
    R.refused("min-sites above the input count", R.good, "--min-sites is 4", 1, ("--min-sites", "4"))
    for args, needle in [(("-s", "fedsgd"), "unknown strategy 'fedsgd'"), (("--lr", "abc"), "--lr needs a number"),
                         (("-s", "diloco", "--momentum", "1.5"), "--momentum must be in [0, 1)"),
                         (("--policy", "maybe"), "unknown policy 'maybe'"), (("--chunk-kib", "1"), "--chunk-kib")]:
        R.refused(f"option {' '.join(args)}", R.good, needle, 2, args)

    for f in failures[:40]:
        print("FAIL:", f)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    print(f"{len(cases)} bad-input cases refused (refuse-round) and dropped (drop-bad); previous-global, output "
          f"and option errors refused; previous global untouched and no partial output every time")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
