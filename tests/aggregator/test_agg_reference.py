#!/usr/bin/python3
"""Oracle: flas-aggregate equals an independent float64 numpy computation for every strategy, over
three rounds with the server state carried over (the reference keeps its OWN state in float64; it never
reads the aggregator's buffers to compute the next round). Inputs are written with h5py, tokens differ
per site and round, one round has only two sites, and chunks are 4 KiB so tensors span many chunks.
Usage: test_agg_reference.py FLAS_AGGREGATE WORKDIR [strategy ...]"""
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agg_lib as L  # noqa: E402

# Server buffers are small differences of ~0.1-sized weights stored in float32, so their error is
# absolute, at float32 resolution of the weights (0.1 * 2^-24 = 6e-9): allow 1e-8.
BUFFER_ATOL = 1e-8
ROUNDS = [  # (site, tokens) per round
    [("it-leonardo", 3000), ("cz-karolina", 9000), ("de-juwels", 1000)],
    [("it-leonardo", 5000), ("cz-karolina", 2000)],
    [("it-leonardo", 1000), ("cz-karolina", 1000), ("de-juwels", 7000)],
]


def check_close(what, got, want, rtol, atol, failures):
    err = np.abs(got.astype(np.float64) - want)
    bound = atol + rtol * np.abs(want)
    if not np.all(err <= bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        failures.append(f"{what}: at {i} got {got[i]!r}, want {want[i]!r} (|diff| {err[i]:.3g})")
    return float(np.max(err / (np.abs(want) + atol / rtol)))


# Hyper-parameters other than the defaults (given on the command line), and --uniform weights.
VARIANTS = {"fedavgm": dict(lr=0.6, momentum=0.5), "diloco": dict(lr=0.4, momentum=0.7),
            "fedadam": dict(lr=0.05, beta1=0.8, beta2=0.95, tau=1e-2),
            "fedyogi": dict(lr=0.03, beta1=0.7, beta2=0.9, tau=3e-3)}


def run_strategy(binary, work, strategy, failures, hp=None, uniform=False):
    label = strategy + ("-custom" if hp else "") + ("-uniform" if uniform else "")
    d = os.path.join(work, label)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    flags = [f"--{k}={v!r}" for k, v in (hp or {}).items()] + (["--uniform"] if uniform else [])
    hp = {**L.DEFAULTS[strategy], **(hp or {})}
    glob = os.path.join(d, "global-0.h5")
    L.write_ckpt(glob, L.random_params(1), role="global", rnd=0)
    state = {"m": {}, "v": {}}
    site_rounds, site_tokens = {}, {}
    worst = 0.0
    before = len(failures)
    for r, sites in enumerate(ROUNDS):
        x = L.read_section(glob)
        base = L.sha256(glob)
        inputs, xs, tokens = [], [], []
        for j, (site, tok) in enumerate(sites):
            xl = L.perturb(x, seed=100 * r + j)
            path = os.path.join(d, f"local-r{r}-{site}.h5")
            L.write_ckpt(path, xl, role="local", rnd=r, site=site, tokens=tok, base=base)
            inputs.append(path)
            xs.append(xl)
            tokens.append(tok)
            site_rounds[site] = site_rounds.get(site, 0) + 1
            site_tokens[site] = site_tokens.get(site, 0) + tok
        out = os.path.join(d, f"global-{r + 1}.h5")
        rc, so, se = L.run_aggregate(binary, glob, out, inputs, "-s", strategy, "--chunk-kib", "4", *flags)
        if rc != 0:
            failures.append(f"{strategy} round {r}: exit {rc}: {se.strip()}")
            return
        want, state, p = L.reference_step(strategy, x, xs, tokens, state, hp, uniform=uniform)
        got = L.read_section(out)
        if sorted(got) != sorted(want):
            failures.append(f"{strategy} round {r}: tensor names differ")
            return
        for name in want:
            worst = max(worst, check_close(f"{strategy} r{r} params/{name}", got[name], want[name], 2e-6, 1e-7,
                                           failures))
        with h5py.File(out, "r") as f:
            a = f.attrs
            expect = {"role": "global", "round": r + 1, "base_sha256": base, "tokens_trained": sum(tokens),
                      "site": "", "complete": 1, "format": "flas-checkpoint"}
            for k, v in expect.items():
                if a[k] != v:
                    failures.append(f"{strategy} r{r}: attribute {k} = {a[k]!r}, want {v!r}")
            s = f["server"].attrs
            if s["strategy"] != strategy or s["round"] != r + 1 or s["step"] != r + 1:
                failures.append(f"{strategy} r{r}: server state {dict(s)}")
            names = list(s["site_names"])
            if sorted(names) != sorted(site_rounds) or any(
                    s["site_rounds"][names.index(n)] != site_rounds[n] or
                    s["site_tokens"][names.index(n)] != site_tokens[n] for n in names):
                failures.append(f"{strategy} r{r}: per-site counters {names} {s['site_rounds']} {s['site_tokens']}")
            for buf in ("m", "v"):
                present = buf in f["server"]
                if present != (buf in ("m",) and strategy not in ("fedavg", "mean") or
                               buf == "v" and strategy in ("fedadam", "fedyogi")):
                    failures.append(f"{strategy} r{r}: /server/{buf} present={present}")
                if present:
                    for name in want:
                        worst = max(worst, check_close(f"{strategy} r{r} server/{buf}/{name}",
                                                       f["server"][buf][name][...], state[buf][name], 1e-5,
                                                       BUFFER_ATOL, failures))
            pv = f["provenance"].attrs
            if (list(pv["input_paths"]) != inputs or list(pv["input_sha256"]) != [L.sha256(i) for i in inputs]
                    or not np.allclose(pv["input_weights"], p, rtol=1e-12) or list(pv["input_used"]) != [1] * len(p)
                    or pv["strategy"] != strategy or pv["previous_sha256"] != base or pv["previous_path"] != glob):
                failures.append(f"{strategy} r{r}: provenance {dict(pv)}")
            for k, v in hp.items():
                if pv[f"hyper.{k}"] != v:
                    failures.append(f"{strategy} r{r}: hyper.{k} = {pv[f'hyper.{k}']}, want {v}")
        glob = out
    if len(failures) == before:
        print(f"{label} {' '.join(flags)}: 3 rounds match the float64 reference (worst relative error {worst:.2e})")


def main():
    binary, work = sys.argv[1], sys.argv[2]
    strategies = sys.argv[3:] or ["fedavg", "mean", "fedavgm", "fedadam", "fedyogi", "diloco"]
    os.makedirs(work, exist_ok=True)
    failures = []
    for s in strategies:
        run_strategy(binary, work, s, failures)
        if s in VARIANTS:
            run_strategy(binary, work, s, failures, hp=VARIANTS[s])
    if "fedavg" in strategies:
        run_strategy(binary, work, "fedavg", failures, uniform=True)
        run_strategy(binary, work, "diloco", failures, hp=VARIANTS["diloco"], uniform=True)
    for f in failures[:30]:
        print("FAIL:", f)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
