#!/usr/bin/python3
"""Oracle for compressed updates (docs/checkpoint-format.md, "Update files"): flas-aggregate merges
int8 and bf16 deltas, written here with h5py and numpy from the format document alone, through every
strategy, and equals the float64 numpy reference applied to the decoded models; the new global it emits
as a compressed downlink decodes (numpy) to its own weights bit for bit; bad updates are refused; peak
RSS with updates is not above that with full models.
Usage: test_agg_updates.py FLAS_AGGREGATE WORKDIR"""
import os
import resource
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agg_lib as L  # noqa: E402

BLOCK = 128


def encode_int8(d, block=BLOCK):
    """numpy's own blockwise int8 encoding of a float32 tensor (row-major blocks)."""
    flat = d.astype(np.float32).ravel()
    nb = (flat.size + block - 1) // block
    pad = np.zeros(nb * block, np.float32)
    pad[:flat.size] = flat
    amax = np.abs(pad.reshape(nb, block)).max(axis=1)
    scale = (amax / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.round(pad.reshape(nb, block) / safe[:, None]), -127, 127).astype(np.int8)
    q[scale == 0] = 0
    return q.ravel()[:flat.size].reshape(d.shape), scale


def decode_int8(q, scale, block=BLOCK):
    """float32 product, one rounding: what a FLaS reader computes."""
    flat = q.astype(np.float32).ravel()
    s = np.repeat(scale.astype(np.float32), block)[:flat.size]
    return (flat * s).astype(np.float32).reshape(q.shape)


def bf16_bits(d):
    """Round to nearest even to bfloat16, as bits."""
    u = d.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return r.astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_update(path, delta, enc, rnd, site, tokens, base, block=BLOCK, hack=None):
    """An update file as the format document describes it; hack(f) may damage it before completion."""
    L.write_ckpt(path, {}, role="local", rnd=rnd, site=site, tokens=tokens, base=base, complete=False)
    decoded = {}
    with h5py.File(path, "a") as f:
        del f["params"]
        f.attrs["update_encoding"] = enc
        f.attrs["update_block"] = np.int32(block if enc == "int8" else 0)
        g = f.create_group("update")
        if enc == "int8":
            gs = f.create_group("update_scale")
        for name, d in delta.items():
            if enc == "int8":
                q, s = encode_int8(d, block)
                g.create_dataset(name, data=q)
                gs.create_dataset(name, data=s)
                decoded[name] = decode_int8(q, s, block)
            else:
                b = bf16_bits(d)
                g.create_dataset(name, data=b)
                decoded[name] = bf16_value(b)
        if hack:
            hack(f)
        f.attrs["complete"] = np.int32(1)
    return decoded


def run_strategy(binary, work, strategy, failures):
    d = os.path.join(work, strategy)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    hp = L.DEFAULTS[strategy]
    glob = os.path.join(d, "global-0.h5")
    L.write_ckpt(glob, L.random_params(1), role="global", rnd=0)
    state = {"m": {}, "v": {}}
    worst = 0.0
    for r in range(2):
        x = L.read_section(glob)
        base = L.sha256(glob)
        # one site sends int8, one bf16, one its full model: the aggregator takes any mix
        sites = [("it-leonardo", 3000 + r, "int8"), ("cz-karolina", 9000, "bf16"), ("de-juwels", 1000, "full")]
        inputs, xs, tokens = [], [], []
        for j, (site, tok, enc) in enumerate(sites):
            xl = L.perturb(x, seed=100 * r + j)
            path = os.path.join(d, f"local-r{r}-{site}.h5")
            if enc == "full":
                L.write_ckpt(path, xl, role="local", rnd=r, site=site, tokens=tok, base=base)
                xs.append(xl)
            else:
                delta = {n: (xl[n] - x[n]).astype(np.float32) for n in x}
                dec = write_update(path, delta, enc, r, site, tok, base)
                xs.append({n: (x[n] + dec[n]).astype(np.float32) for n in x})  # float32 sum, as the reader
            inputs.append(f"--input={site}={path}")
            tokens.append(tok)
        out = os.path.join(d, f"global-{r + 1}.h5")
        rc, so, se = L.run_aggregate(binary, glob, out, inputs, "-s", strategy, "--chunk-kib", "4")
        if rc != 0:
            failures.append(f"{strategy} round {r}: exit {rc}: {se.strip()}")
            return
        want, state, _ = L.reference_step(strategy, x, xs, tokens, state, hp)
        got = L.read_section(out)
        for name in want:
            err = np.abs(got[name].astype(np.float64) - want[name])
            bound = 1e-7 + 2e-6 * np.abs(want[name])
            if not np.all(err <= bound):
                failures.append(f"{strategy} r{r} params/{name}: max |diff| {err.max():.3g}")
            worst = max(worst, float(np.max(err / (np.abs(want[name]) + 0.05))))
        glob = out
    print(f"{strategy}: 2 rounds of int8 + bf16 + full inputs match the float64 reference "
          f"(worst relative error {worst:.2e})")


def check_downlink(binary, work, failures):
    """--emit-update: the new global = previous + decode(emitted update), bit for bit, and the update
    names the base it was given."""
    d = os.path.join(work, "downlink")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    glob = os.path.join(d, "global-0.h5")
    L.write_ckpt(glob, L.random_params(7), role="global", rnd=0)
    x = L.read_section(glob)
    base = L.sha256(glob)
    stage_sha = "ab" * 32  # the params-only copy the sites hold: it is what their updates name
    inputs = []
    for j, site in enumerate(["it-leonardo", "cz-karolina"]):
        path = os.path.join(d, f"local-{site}.h5")
        L.write_ckpt(path, L.perturb(x, seed=50 + j), role="local", rnd=0, site=site, tokens=1000 * (j + 1),
                     base=stage_sha)
        inputs.append(f"--input={site}={path}")
    for enc in ("int8", "bf16"):
        out, upd = os.path.join(d, f"global-1-{enc}.h5"), os.path.join(d, f"down-{enc}.h5")
        rc, so, se = L.run_aggregate(binary, glob, out, inputs, "--chunk-kib", "5", "--base-sha256", stage_sha,
                                     "--emit-update", upd, "--emit-encoding", enc, "-s", "diloco")
        if rc != 0:
            failures.append(f"downlink {enc}: exit {rc}: {se.strip()}")
            continue
        got = L.read_section(out)
        with h5py.File(upd, "r") as f:
            a = f.attrs
            if a["update_encoding"] != enc or a["base_sha256"] != stage_sha or a["role"] != "global" or a["round"] != 1:
                failures.append(f"downlink {enc}: attributes {dict(a)}")
            for name in x:
                if enc == "int8":
                    dec = decode_int8(f["update"][name][...], f["update_scale"][name][...], int(a["update_block"]))
                else:
                    dec = bf16_value(f["update"][name][...])
                if not np.array_equal((x[name] + dec).astype(np.float32), got[name]):
                    failures.append(f"downlink {enc}: params/{name} != previous + decode(update)")
        print(f"downlink {enc}: the new global is previous + decode(emitted update), bit for bit "
              f"({os.path.getsize(upd)} bytes against {os.path.getsize(out)} for the global)")
    # without --base-sha256 the sites' updates name the previous file itself; one naming the copy is refused
    rc, so, se = L.run_aggregate(binary, glob, os.path.join(d, "x.h5"), inputs)
    if rc != 1 or "another base model" not in se:
        failures.append(f"updates against another base were not refused: exit {rc}: {se.strip()}")


def check_refusals(binary, work, failures):
    d = os.path.join(work, "refuse")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    glob = os.path.join(d, "global-0.h5")
    L.write_ckpt(glob, L.random_params(3), role="global", rnd=0)
    x = L.read_section(glob)
    base = L.sha256(glob)
    good = os.path.join(d, "good.h5")
    L.write_ckpt(good, L.perturb(x, seed=9), role="local", rnd=0, site="cz-karolina", tokens=10, base=base)
    delta = {n: (L.perturb(x, seed=11)[n] - x[n]).astype(np.float32) for n in x}
    name0 = "layers.0.attention.wq.weight"

    def nan_scale(f):
        s = f["update_scale"][name0]
        v = s[...]
        v[3] = np.nan
        s[...] = v

    def neg_scale(f):
        s = f["update_scale"][name0]
        v = s[...]
        v[0] = -1.0
        s[...] = v

    def short_scales(f):
        v = f["update_scale"][name0][...]
        del f["update_scale"][name0]
        f["update_scale"].create_dataset(name0, data=v[:-1])

    def code_128(f):
        q = f["update"][name0]
        v = q[...]
        v[0, 0] = -128
        q[...] = v

    def with_params(f):
        f.create_group("params")

    def float_codes(f):
        v = f["update"][name0][...]
        del f["update"][name0]
        f["update"].create_dataset(name0, data=v.astype(np.float32))

    def bad_block(f):
        f.attrs["update_block"] = np.int32(32)

    cases = [("a NaN scale", "int8", nan_scale, base, "update_scale"),
             ("a negative scale", "int8", neg_scale, base, "not a finite number >= 0"),
             ("one scale missing (block count disagrees with the shape)", "int8", short_scales, base,
              "one scale per block"),
             ("an int8 code -128", "int8", code_128, base, "-128"),
             ("params beside the update", "int8", with_params, base, "other parts"),
             ("float codes", "int8", float_codes, base, "expected int8"),
             ("a block of 32", "int8", bad_block, base, "update_block 32"),
             ("a delta against another base", "int8", None, "cd" * 32, "delta against another base"),
             ("a bf16 delta against another base", "bf16", None, "ef" * 32, "delta against another base")]
    for what, enc, hack, b, needle in cases:
        path = os.path.join(d, "bad.h5")
        if os.path.exists(path):
            os.remove(path)
        write_update(path, delta, enc, 0, "it-leonardo", 100, b, hack=hack)
        out = os.path.join(d, "next.h5")
        rc, so, se = L.run_aggregate(binary, glob, out, [f"--input=it-leonardo={path}", f"--input=cz-karolina={good}"])
        if rc != 1 or needle not in se or L.leftovers(d, "next.h5"):
            failures.append(f"{what}: exit {rc} (want 1), message {se.strip()!r} (want {needle!r}), "
                            f"leftovers {L.leftovers(d, 'next.h5')}")
        else:
            print(f"refused: {what}: {se.strip()[:150]}")
        # drop-bad: the good site alone makes the round
        rc, so, se = L.run_aggregate(binary, glob, out, [f"--input=it-leonardo={path}", f"--input=cz-karolina={good}"],
                                     "--policy", "drop-bad")
        if rc != 0 or not os.path.exists(out):
            failures.append(f"{what} with drop-bad: exit {rc}: {se.strip()}")
        else:
            os.remove(out)


def peak_rss(cmd):
    """Peak RSS (KiB) of a child, measured by a fresh python so earlier children do not count."""
    code = ("import resource,subprocess,sys;r=subprocess.run(sys.argv[1:],capture_output=True);"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])


def check_rss(binary, work, failures):
    """~48 MB models: the merge of three int8 updates peaks no higher than that of three full models."""
    d = os.path.join(work, "rss")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cfg = dict(L.CFG, dim=256, n_layers=12, n_heads=8, n_kv_heads=4, hidden_dim=688, vocab_size=4096)
    glob = os.path.join(d, "g.h5")
    x = L.random_params(5, cfg=cfg)
    L.write_ckpt(glob, x, role="global", rnd=0, cfg=cfg)
    base = L.sha256(glob)
    full, upd = [], []
    for j, site in enumerate(["a", "b", "c"]):
        xl = L.perturb(x, seed=70 + j)
        p = os.path.join(d, f"full-{site}.h5")
        L.write_ckpt(p, xl, role="local", rnd=0, site=site, tokens=100, base=base, cfg=cfg)
        full.append(f"--input={site}={p}")
        p = os.path.join(d, f"upd-{site}.h5")
        L.write_ckpt(p, {}, role="local", rnd=0, site=site, tokens=100, base=base, cfg=cfg, complete=False)
        with h5py.File(p, "a") as f:
            del f["params"]
            f.attrs["update_encoding"] = "int8"
            f.attrs["update_block"] = np.int32(BLOCK)
            g, gs = f.create_group("update"), f.create_group("update_scale")
            for n in x:
                q, s = encode_int8(xl[n] - x[n])
                g.create_dataset(n, data=q)
                gs.create_dataset(n, data=s)
            f.attrs["complete"] = np.int32(1)
        upd.append(f"--input={site}={p}")
    rss = {}
    for label, ins in (("full", full), ("int8", upd)):
        rc, kib = peak_rss([binary, "-q", "-p", glob, "-o", os.path.join(d, f"out-{label}.h5"), "-s", "fedadam", "--chunk-kib", "1024", *ins])
        if rc != 0:
            failures.append(f"rss {label}: exit {rc}")
        rss[label] = kib
    size = sum(os.path.getsize(os.path.join(d, f"full-{s}.h5")) for s in "abc") / 3
    print(f"peak RSS merging 3 inputs of {size / 1e6:.0f} MB: full {rss['full'] / 1024:.1f} MiB, "
          f"int8 updates {rss['int8'] / 1024:.1f} MiB")
    # the chunks are the same size; decoding adds a chunk of codes at most (4 MiB of slack)
    if rss["int8"] > rss["full"] + 4096:
        failures.append(f"peak RSS with int8 updates {rss['int8']} KiB above full models' {rss['full']} KiB")
    if rss["full"] > size / 1024:
        failures.append(f"peak RSS {rss['full']} KiB is not below one model ({size / 1024:.0f} KiB): not streaming?")


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    failures = []
    for s in ["fedavg", "mean", "fedavgm", "fedadam", "fedyogi", "diloco"]:
        run_strategy(binary, work, s, failures)
    check_downlink(binary, work, failures)
    check_refusals(binary, work, failures)
    if "libasan" in subprocess.run(["ldd", binary], capture_output=True, text=True).stdout:
        # AddressSanitizer keeps freed memory in quarantine (256 MB by default): RSS then follows the
        # allocator's bookkeeping, not the program's working set
        print("peak RSS not compared in this AddressSanitizer build")
    else:
        check_rss(binary, work, failures)
    for f in failures[:30]:
        print("FAIL:", f)
    if failures:
        print(f"{len(failures)} failures")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
