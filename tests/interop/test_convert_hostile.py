#!/usr/bin/python3
"""Hostile model files: flas-convert refuses every lying header, truncated file and config mismatch of
safetensors (Hugging Face), GGUF and llama2.c with exit status 1, exactly one line on stderr that begins
"flas-convert: ", nothing at OUTPUT and no temporary in OUTPUT's directory (ctest labels: interop;unit).

A valid tiny model (flas-train --init, vocabulary V = 320 with a SentencePiece model trained here) is
exported to every format; each export must import back to the same weights, and a re-serialization of
each export by this script's own writers must import too (so that every variant below differs from a
valid file by its one attack only). Then each variant is made by editing bytes or JSON and fed to
flas-convert, mostly towards a FLaS checkpoint, some towards hf, gguf and llama2.c.

Each run must also: leave its input untouched, end within TIMEOUT_S (20 s where a FIFO stands in for a
file: it is refused, not waited on), stay below RSS_BOUND_KIB (a header that claims 2^61 elements must
not be believed), and, in a sanitizer build, print no sanitizer report
(the one-line rule catches it; a report is named as such). The sanitizer options are the suite's
(tests/run.sh --sanitize) unless the environment sets its own.

usage: test_convert_hostile.py FLAS_CONVERT FLAS_TRAIN WORKDIR [GROUP...]
  GROUP: valid (exports import back, controls, OUTPUT exists), hf, gguf, llama2c, flas (hostile HDF5 and
  output paths); default: all of them"""
import copy
import hashlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys

import h5py
import numpy as np

V = 320
MODEL = ["--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--vocab", str(V), "--seq-len", "64",
         "--seed", "11"]
TIMEOUT_S = 120
RSS_BOUND_KIB = 512 * 1024   # the model is 0.56 MB; ASan's own overhead is tens of MiB
SAN_WORDS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
             "SUMMARY: ", "==ERROR")

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ)
ENV.setdefault("ASAN_OPTIONS", "detect_leaks=1:fast_unwind_on_malloc=0")
ENV.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0"
               % os.path.join(os.path.dirname(HERE), "lsan.supp"))
ENV.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")

CONVERT = TRAIN = WORK = None
failures = []
refused = []


def p(*n):
    return os.path.join(WORK, *n)


def fail(msg):
    print("FAIL: " + msg, flush=True)
    failures.append(msg)


def tree_digest(path):
    """sha256 over a file, or over the names and contents of a directory tree."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in sorted(os.walk(path)):
            dirs.sort()
            for f in sorted(files):
                fp = os.path.join(root, f)
                h.update(os.path.relpath(fp, path).encode() + b"\0")
                file_digest(h, fp)
    else:
        file_digest(h, path)
    return h.hexdigest()


def file_digest(h, path):
    """Adds a file's bytes (a FIFO or other special file: its type only, never opened)."""
    if not os.path.lexists(path):
        return
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        h.update(b"special %o" % stat.S_IFMT(st.st_mode))
        return
    with open(path, "rb") as fh:
        h.update(fh.read())


def convert(args, rss_file, timeout=TIMEOUT_S):
    """Runs flas-convert under GNU time: (exit status or -signal, or None when it ran past timeout and was
    killed with its process group; stdout, stderr, peak RSS KiB)."""
    argv = ["/usr/bin/time", "-f", "maxrss_kib=%M", "-o", rss_file, CONVERT] + args
    if os.path.exists(rss_file):
        os.unlink(rss_file)
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        sout, serr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # GNU time and flas-convert (its own session: nothing else)
        sout, serr = proc.communicate()
        return None, sout.decode(errors="replace"), serr.decode(errors="replace"), 0
    r = subprocess.CompletedProcess(argv, proc.returncode, sout, serr)
    rss = 0
    try:
        with open(rss_file) as f:
            txt = f.read()
        rss = int(txt.split("maxrss_kib=")[1].split()[0])
        if "terminated by signal" in txt:  # GNU time exits 128+N itself; say so
            sig = int(txt.split("terminated by signal")[1].split()[0])
            return -sig, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"), rss
    except (OSError, IndexError, ValueError):
        pass
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"), rss


def ok_run(args, what):
    rc, out, err, rss = convert(args, p("rss.txt"))
    if rc != 0:
        fail(f"{what}: flas-convert {' '.join(args)} exited {rc}:\n{out}{err}")
        return False
    return True


# ---- expected refusals ---------------------------------------------------------------------------

OUT_KINDS = {"flas": "model.h5", "hf": "hfout", "gguf": "model.gguf", "llama2c": "model.bin"}


def hostile(name, inp, to="flas", extra=(), want_rc=1, timeout=TIMEOUT_S, tokenizer=True):
    """inp: a prepared input (file or hf dir). Checks the refusal; prints the case and its message."""
    outdir = p("out", name)
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir)
    out = os.path.join(outdir, OUT_KINDS[to])
    args = list(extra)
    if to == "gguf" and tokenizer and "--tokenizer" not in args:
        args += ["--tokenizer", p("tok.model")]
    before = tree_digest(inp)
    rc, sout, err, rss = convert(args + [inp, out], p("rss.txt"), timeout)
    lines = err.splitlines()
    msg = lines[0] if lines else ""
    problems = []
    if rc is None:
        problems.append(f"still running after {timeout} s (killed)")
    elif rc < 0:
        problems.append(f"killed by signal {-rc}")
    elif rc == 0:
        problems.append("accepted (exit 0)")
    elif rc != want_rc:
        problems.append(f"exit {rc}, expected {want_rc}")
    if any(w in err for w in SAN_WORDS):
        problems.append("sanitizer report on stderr")
    if len(lines) != 1 or not msg.strip():
        problems.append(f"{len(lines)} lines on stderr, expected exactly one")
    elif not msg.startswith("flas-convert: "):
        problems.append("the line does not begin 'flas-convert: '")
    if os.path.lexists(out):
        problems.append(f"OUTPUT {OUT_KINDS[to]} exists")
    left = sorted(os.listdir(outdir))
    if left:
        problems.append(f"left behind in the output directory: {left}")
    if tree_digest(inp) != before:
        problems.append("the input was modified")
    if rss > RSS_BOUND_KIB:
        problems.append(f"peak RSS {rss // 1024} MiB > {RSS_BOUND_KIB // 1024} MiB")
    tag = f"{name} [->{to}]"
    if problems:
        fail(f"{tag}: " + "; ".join(problems) + f"\n  stderr: {err.strip()[:4000]}"
             + (f"\n  stdout: {sout.strip()[:500]}" if sout.strip() else ""))
    else:
        print(f"ok  {tag:42s} {msg}", flush=True)
        refused.append((tag, msg))
    shutil.rmtree(outdir, ignore_errors=True)


def case_file(name, data, suffix):
    """Writes data as the input of case name; returns its path."""
    d = p("cases", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    path = os.path.join(d, "model" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    return path


def case_dir(name, src):
    """A copy of the hf directory src as the input of case name; returns its path."""
    d = p("cases", name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    dst = os.path.join(d, "hf")
    shutil.copytree(src, dst)
    return dst


# ---- safetensors ---------------------------------------------------------------------------------

ST_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1}


def st_read(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack_from("<Q", b, 0)[0]
    hdr = json.loads(b[8:8 + n])
    return hdr, b[8 + n:]


def st_header_bytes(hdr):
    h = hdr if isinstance(hdr, (bytes, bytearray)) else json.dumps(hdr, separators=(",", ":")).encode()
    return bytes(h) + b" " * (-len(h) % 8)


def st_pack(hdr, body, n=None):
    h = st_header_bytes(hdr)
    return struct.pack("<Q", len(h) if n is None else n) + h + body


def st_tensors(hdr, body):
    """[(name, dtype, shape, bytes)] in file order, and the metadata."""
    items = sorted(((k, v) for k, v in hdr.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])
    return [(k, v["dtype"], list(v["shape"]), body[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in items], hdr.get("__metadata__")


def st_build(tensors, meta):
    """A consistent safetensors file from [(name, dtype, shape, bytes)]."""
    hdr, body, off = {}, bytearray(), 0
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, dt, shape, data in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        body += data
        off += len(data)
    return st_pack(hdr, bytes(body))


def st_file(d):
    return os.path.join(d, "model.safetensors")


def put(path, data):
    with open(path, "wb") as f:
        f.write(data)


def edit_json(path, fn):
    with open(path) as f:
        j = json.load(f)
    fn(j)
    with open(path, "w") as f:
        json.dump(j, f, indent=2)


def find_name(names, *want):
    """The first name containing every word of want (tensor names differ between formats)."""
    for n in names:
        if all(w in n for w in want):
            return n
    raise SystemExit(f"test_convert_hostile: no tensor with {want} in {sorted(names)[:8]}...")


def hf_cases(hf, hfs):
    hdr, body = st_read(st_file(hf))
    tensors, meta = st_tensors(hdr, body)
    names = [t[0] for t in tensors]
    q0 = find_name(names, "layers.0.", "q_proj")
    q1 = find_name(names, "layers.1.", "q_proj")
    v1 = find_name(names, "layers.1.", "v_proj")
    size = len(st_pack(hdr, body))

    def variant(name, data=None, cfg=None, to="flas", extra=()):
        d = case_dir(name, hf)
        if data is not None:
            put(st_file(d), data)
        if cfg is not None:
            edit_json(os.path.join(d, "config.json"), cfg)
        hostile(name, d, to, extra)

    def with_entry(fn):
        h = copy.deepcopy(hdr)
        fn(h)
        return st_pack(h, body)

    # The header length word.
    raw = bytearray(st_pack(hdr, body))
    struct.pack_into("<Q", raw, 0, size)
    variant("st_header_len_past_eof", bytes(raw))
    struct.pack_into("<Q", raw, 0, 1 << 63)
    variant("st_header_len_2^63", bytes(raw))
    struct.pack_into("<Q", raw, 0, (1 << 64) - 8)   # 8 + n wraps to 0
    variant("st_header_len_wraps", bytes(raw))
    variant("st_file_4_bytes", bytes(raw[:4]))
    variant("st_empty_file", b"")
    # The header's text.
    variant("st_header_not_json", st_pack(b"this is not json at all, " * 4, body))
    variant("st_header_array", st_pack(b"[1,2,3]", body))
    variant("st_header_nul", st_pack(st_header_bytes(hdr)[:40] + b"\0" + st_header_bytes(hdr)[41:], body))
    variant("st_header_cut", st_pack(st_header_bytes(hdr)[:len(st_header_bytes(hdr)) // 2], body))
    # Offsets.
    sz = hdr[v1]["data_offsets"][1] - hdr[v1]["data_offsets"][0]
    variant("st_offset_past_end", with_entry(lambda h: h[v1].update(data_offsets=[len(body) - sz + 4, len(body) + 4])))
    variant("st_offset_2^64", with_entry(lambda h: h[v1].update(data_offsets=[(1 << 64) - sz, (1 << 64)])))
    b0, e0 = hdr[q0]["data_offsets"]
    variant("st_end_before_begin", with_entry(lambda h: h[q0].update(data_offsets=[e0, b0])))
    # Overlap: q1 moved to start 4 bytes inside q0 (same size, so only the overlap is wrong).
    variant("st_overlap", with_entry(lambda h: h[q1].update(data_offsets=[e0 - 4, e0 - 4 + (e0 - b0)])))
    variant("st_same_bytes_twice", with_entry(lambda h: h[q1].update(data_offsets=[b0, e0])))
    variant("st_size_not_dtype_x_shape", with_entry(lambda h: h[q0].update(data_offsets=[b0, e0 - 4])))
    # Element types: F64 with its data really float64 (only the type is foreign), I8 and a made-up Q4.
    t64 = [(n, "F64", s, np.frombuffer(d, "<f4").astype("<f8").tobytes()) if n == q0 else (n, dt, s, d)
           for n, dt, s, d in tensors]
    variant("st_dtype_F64", st_build(t64, meta))
    t8 = [(n, "I8", s, d[:len(d) // 4]) if n == q0 else (n, dt, s, d) for n, dt, s, d in tensors]
    variant("st_dtype_I8", st_build(t8, meta))
    variant("st_dtype_Q4", with_entry(lambda h: h[q0].update(dtype="Q4")))
    variant("st_dtype_number", with_entry(lambda h: h[q0].update(dtype=7)))
    # Shapes.
    variant("st_dim_negative", with_entry(lambda h: h[q0].update(shape=[-64, -64])))
    # 2^62 x 2^14 x 4 bytes wraps to the true 2^14 bytes in 64 bits.
    variant("st_dims_overflow_wraps", with_entry(lambda h: h[q0].update(shape=[1 << 62, 1 << 14])))
    variant("st_dim_2^64", with_entry(lambda h: h[q0].update(shape=[1 << 64, 64])))
    variant("st_dim_float", with_entry(lambda h: h[q0].update(shape=[64.5, 64])))
    variant("st_shape_not_config", with_entry(lambda h: h[q0].update(shape=[32, 128])))
    variant("st_shape_3d", with_entry(lambda h: h[q0].update(shape=[4, 16, 64])))
    variant("st_offsets_not_numbers", with_entry(lambda h: h[q0].update(data_offsets="0-16384")))
    variant("st_missing_tensor", st_build([t for t in tensors if t[0] != v1], meta))
    # A duplicated key: JSON parsers differ on which one wins, so a reader must refuse it.
    hb = st_header_bytes(hdr).rstrip()
    dup = hb[:-1] + b',"' + q1.encode() + b'":' + json.dumps(hdr[q0], separators=(",", ":")).encode() + b"}"
    variant("st_duplicate_key", st_pack(dup, body))
    variant("st_truncated", st_pack(hdr, body)[:-1000])
    # The spec: the data is exactly the tensors, no hole (no polyglot files), nothing after them.
    holed, off = copy.deepcopy(hdr), 0
    for n, _, _, d in tensors:
        gap = 16 if n == q1 else 0
        holed[n]["data_offsets"] = [off + gap, off + gap + len(d)]
        off += gap + len(d)
    variant("st_hole", st_pack(holed, b"".join((bytes(16) if n == q1 else b"") + d for n, _, _, d in tensors)))
    variant("st_trailing_bytes", st_pack(hdr, body + bytes(16)))
    variant("st_offsets_three", with_entry(lambda h: h[q0].update(data_offsets=[b0, e0, e0])))
    # Parser limits: 100000 nested arrays, a 100000-byte tensor name, a NUL inside a name.
    variant("st_deep_nesting", st_pack(b'{"__metadata__":' + b"[" * 100000 + b"]" * 100000 + b"}", body))

    def rename(old, new):
        h = {}
        for k, v in hdr.items():
            h[new if k == old else k] = v
        return st_pack(h, body)

    emb = find_name(names, "embed_tokens")
    variant("st_name_100k", rename(emb, "m" * 100000))
    nul = st_header_bytes(hdr).replace(json.dumps(emb).encode(), json.dumps(emb + "\0x").encode(), 1)
    if nul == st_header_bytes(hdr):
        fail("st_name_nul: could not rename the embedding")
    variant("st_name_nul", st_pack(nul.rstrip(), body))
    variant("st_truncated_in_header", st_pack(hdr, body)[:8 + 20])
    # Towards other formats.
    variant("st_offset_past_end", with_entry(lambda h: h[v1].update(data_offsets=[len(body) - sz + 4, len(body) + 4])),
            to="gguf")
    variant("st_dims_overflow_wraps", with_entry(lambda h: h[q0].update(shape=[1 << 62, 1 << 14])), to="llama2c")

    # config.json.
    variant("cfg_hidden_size_wrong", cfg=lambda j: j.update(hidden_size=96))
    variant("cfg_heads_not_dividing", cfg=lambda j: j.update(num_attention_heads=5))
    variant("cfg_heads_zero", cfg=lambda j: j.update(num_attention_heads=0))
    variant("cfg_kv_heads_not_dividing", cfg=lambda j: j.update(num_key_value_heads=3))
    variant("cfg_layers_more", cfg=lambda j: j.update(num_hidden_layers=3))
    variant("cfg_layers_negative", cfg=lambda j: j.update(num_hidden_layers=-1))
    variant("cfg_intermediate_wrong", cfg=lambda j: j.update(intermediate_size=j["intermediate_size"] + 32))
    variant("cfg_vocab_wrong", cfg=lambda j: j.update(vocab_size=V + 1))
    variant("cfg_vocab_huge", cfg=lambda j: j.update(vocab_size=1 << 62))
    variant("cfg_rope_scaling", cfg=lambda j: j.update(rope_scaling={"type": "linear", "factor": 2.0}))
    variant("cfg_hidden_act_gelu", cfg=lambda j: j.update(hidden_act="gelu"))
    variant("cfg_missing_hidden_size", cfg=lambda j: j.pop("hidden_size"))
    variant("cfg_missing_layers", cfg=lambda j: j.pop("num_hidden_layers"))
    variant("cfg_hidden_size_string", cfg=lambda j: j.update(hidden_size="64"))
    variant("cfg_missing_kv_heads", cfg=lambda j: j.pop("num_key_value_heads"))   # = 4 heads: k_proj is 2
    variant("cfg_head_dim_wrong", cfg=lambda j: j.update(head_dim=32))
    variant("cfg_rope_theta_negative", cfg=lambda j: j.update(rope_theta=-10000.0))
    variant("cfg_rms_eps_zero", cfg=lambda j: j.update(rms_norm_eps=0))
    variant("cfg_max_position_zero", cfg=lambda j: j.update(max_position_embeddings=0))
    variant("cfg_attention_bias", cfg=lambda j: j.update(attention_bias=True))
    d = case_dir("cfg_not_json", hf)
    put(os.path.join(d, "config.json"), b"{\"hidden_size\": 64,")
    hostile("cfg_not_json", d)
    d = case_dir("cfg_missing", hf)
    os.unlink(os.path.join(d, "config.json"))
    hostile("cfg_missing", d)
    d = case_dir("cfg_hidden_size_1e400", hf)
    cfg_text = open(os.path.join(d, "config.json")).read()
    put(os.path.join(d, "config.json"), json.dumps(dict(json.loads(cfg_text), hidden_size=1)).replace(
        '"hidden_size": 1', '"hidden_size": 1e400').encode())
    hostile("cfg_hidden_size_1e400", d)
    d = case_dir("cfg_deep_nesting", hf)
    put(os.path.join(d, "config.json"), b'{"x":' + b"[" * 100000 + b"]" * 100000 + b"}")
    hostile("cfg_deep_nesting", d)
    d = case_dir("st_missing_file", hf)
    os.unlink(st_file(d))
    hostile("st_missing_file", d)
    # A FIFO where the weights should be: opening it for reading would wait for a writer for ever.
    d = case_dir("st_fifo", hf)
    os.unlink(st_file(d))
    os.mkfifo(st_file(d))
    hostile("st_fifo", d, timeout=20)
    d = case_dir("cfg_fifo", hf)
    os.unlink(os.path.join(d, "config.json"))
    os.mkfifo(os.path.join(d, "config.json"))
    hostile("cfg_fifo", d, timeout=20)
    # The tokenizer an hf directory carries, embedded into a GGUF: garbage, or of another vocabulary size.
    d = case_dir("tokenizer_garbage", hf)
    put(os.path.join(d, "tokenizer.model"), os.urandom(3000))
    hostile("tokenizer_garbage", d, to="gguf", tokenizer=False)
    hostile("tokenizer_other_vocab", hf, to="gguf", extra=["--tokenizer", p("tok300.model")])
    hostile("tokenizer_missing_file", hf, to="gguf", extra=["--tokenizer", p("no-such.model")])
    os.mkfifo(p("cases", "tok.fifo"))
    hostile("tokenizer_fifo", hf, to="gguf", extra=["--tokenizer", p("cases", "tok.fifo")], timeout=20)

    # The sharded form.
    idx_name = "model.safetensors.index.json"
    with open(os.path.join(hfs, idx_name)) as f:
        idx = json.load(f)
    shards = sorted(set(idx["weight_map"].values()))
    if len(shards) < 2:
        raise SystemExit(f"test_convert_hostile: the sharded export has {len(shards)} shard(s)")
    key = sorted(idx["weight_map"])[len(idx["weight_map"]) // 2]

    def sharded(name, fn, to="flas"):
        d = case_dir(name, hfs)
        fn(d)
        hostile(name, d, to)

    def set_map(value, k=key):
        return lambda d: edit_json(os.path.join(d, idx_name), lambda j: j["weight_map"].update({k: value}))

    sharded("index_missing_shard", set_map("model-00009-of-00009.safetensors"))
    # A shard outside the directory that really exists there and holds the tensor: still refused.
    shutil.copy(os.path.join(hfs, idx["weight_map"][key]), p("cases", "x.safetensors"))
    sharded("index_shard_outside_dir", set_map("../../x.safetensors"))
    sharded("index_shard_absolute", set_map(os.path.abspath(p("cases", "x.safetensors"))))
    sharded("index_shard_subdir", set_map("sub/" + idx["weight_map"][key]))
    other = [s for s in shards if s != idx["weight_map"][key]][0]
    sharded("index_wrong_shard", set_map(other))
    sharded("index_not_json", lambda d: put(os.path.join(d, idx_name), b"{\"weight_map\": "))
    sharded("index_map_missing_tensor",
            lambda d: edit_json(os.path.join(d, idx_name), lambda j: j["weight_map"].pop(key)))
    sharded("shard_truncated", lambda d: put(os.path.join(d, shards[-1]),
                                             open(os.path.join(d, shards[-1]), "rb").read()[:-100]))
    sharded("shard_truncated", lambda d: put(os.path.join(d, shards[0]),
                                             open(os.path.join(d, shards[0]), "rb").read()[:-100]), to="gguf")
    sharded("shard_missing_file", lambda d: os.unlink(os.path.join(d, shards[0])))
    sharded("index_shard_is_config", set_map("config.json"))
    sharded("index_map_not_object",
            lambda d: edit_json(os.path.join(d, idx_name), lambda j: j.update(weight_map=["a", "b"])))


# ---- GGUF ----------------------------------------------------------------------------------------

GG_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GG_F32, GG_F16, GG_Q4_0, GG_Q8_0, GG_BF16 = 0, 1, 2, 8, 30


def gg_tensor_bytes(typ, n):
    return {GG_F32: 4 * n, GG_F16: 2 * n, GG_BF16: 2 * n, GG_Q8_0: n // 32 * 34, GG_Q4_0: n // 32 * 18}[typ]


def gg_parse(b):
    """Header fields with the byte positions an attack edits."""
    if b[:4] != b"GGUF":
        raise SystemExit("test_convert_hostile: the gguf export has no GGUF magic")
    ver, nt, nkv = struct.unpack_from("<IQQ", b, 4)
    pos = 24

    def rstr(pos):
        n = struct.unpack_from("<Q", b, pos)[0]
        return b[pos + 8:pos + 8 + n].decode(), pos + 8 + n

    def rval(t, pos):
        if t == 8:
            return rstr(pos)
        if t == 9:
            at, n = struct.unpack_from("<IQ", b, pos)
            pos += 12
            vals = []
            for _ in range(n):
                v, pos = rval(at, pos)
                vals.append(v)
            return (at, vals), pos
        return struct.unpack_from(GG_SCALAR[t], b, pos)[0], pos + struct.calcsize(GG_SCALAR[t])

    kvs = []
    for _ in range(nkv):
        start = pos
        k, pos = rstr(pos)
        t = struct.unpack_from("<I", b, pos)[0]
        vstart = pos + 4
        v, pos = rval(t, vstart)
        kvs.append(dict(key=k, type=t, value=v, start=start, vstart=vstart, end=pos))
    tensors = []
    for _ in range(nt):
        start = pos
        name, pos = rstr(pos)
        nd = struct.unpack_from("<I", b, pos)[0]
        dims_at = pos + 4
        dims = list(struct.unpack_from("<%dQ" % nd, b, dims_at))
        pos = dims_at + 8 * nd
        typ, off = struct.unpack_from("<IQ", b, pos)
        tensors.append(dict(name=name, dims=dims, type=typ, offset=off, start=start, dims_at=dims_at,
                            type_at=pos, offset_at=pos + 4))
        pos += 12
    align = next((kv["value"] for kv in kvs if kv["key"] == "general.alignment"), 32)
    data_start = (pos + align - 1) // align * align
    for t in tensors:
        n = int(np.prod(t["dims"], dtype=np.uint64))
        t["data"] = b[data_start + t["offset"]:data_start + t["offset"] + gg_tensor_bytes(t["type"], n)]
    return dict(version=ver, kvs=kvs, tensors=tensors, align=align, data_start=data_start, header_end=pos)


def gg_str(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


def gg_val(t, v):
    if t == 8:
        return gg_str(v)
    if t == 9:
        at, vals = v
        return struct.pack("<IQ", at, len(vals)) + b"".join(gg_val(at, x) for x in vals)
    return struct.pack(GG_SCALAR[t], v)


def gg_build(kvs, tensors, version=3, align=32, layout_align=None):
    """A GGUF file from [(key, type, value)] and [dict(name, dims, type, data)]: tensor data in order,
    each at a multiple of layout_align (default: align) from the data start."""
    la = layout_align or align
    head = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
    for k, t, v in kvs:
        head += gg_str(k) + struct.pack("<I", t) + gg_val(t, v)
    blob, offs = bytearray(), []
    for t in tensors:
        blob += b"\0" * (-len(blob) % la)
        offs.append(len(blob))
        blob += t["data"]
    for t, off in zip(tensors, offs):
        head += gg_str(t["name"]) + struct.pack("<I", len(t["dims"]))
        head += struct.pack("<%dQ" % len(t["dims"]), *t["dims"]) + struct.pack("<IQ", t["type"], off)
    head += b"\0" * (-len(head) % la)
    return bytes(head + blob)


def gg_rebuild(g, kv_edit=None, tensor_edit=None, align=None, layout_align=None, version=3):
    kvs = [(kv["key"], kv["type"], kv["value"]) for kv in g["kvs"]]
    if align is not None:
        kvs = [kv for kv in kvs if kv[0] != "general.alignment"] + [("general.alignment", 4, align)]
    if kv_edit:
        kvs = kv_edit(kvs)
    tensors = [dict(t) for t in g["tensors"]]
    if tensor_edit:
        tensors = tensor_edit(tensors)
    a = align if align is not None else g["align"]
    la = layout_align or (a if a and a & (a - 1) == 0 and a < 4096 else 32)
    return gg_build(kvs, tensors, version, a, la)


def gg_cases(gguf, gguf_q8):
    with open(gguf, "rb") as f:
        b = f.read()
    g = gg_parse(b)
    ts = g["tensors"]
    tn = [t["name"] for t in ts]
    q0 = tn.index(find_name(tn, "blk.0.", "attn_q"))
    q1 = tn.index(find_name(tn, "blk.1.", "attn_q"))
    down1 = find_name(tn, "blk.1.", "ffn_down")

    def variant(name, data, to="flas"):
        hostile(name, case_file(name, data, ".gguf"), to)

    def patched(fmt, at, value, src=b):
        r = bytearray(src)
        struct.pack_into(fmt, r, at, value)
        return bytes(r)

    variant("gguf_bad_magic", b"GGUX" + b[4:])
    variant("gguf_version_2", patched("<I", 4, 2))
    variant("gguf_version_4", patched("<I", 4, 4))
    variant("gguf_tensor_count_2^63", patched("<Q", 8, 1 << 63))
    variant("gguf_tensor_count_2^64-1", patched("<Q", 8, (1 << 64) - 1))
    variant("gguf_kv_count_2^62", patched("<Q", 16, 1 << 62))
    variant("gguf_key_len_past_eof", patched("<Q", g["kvs"][0]["start"], len(b)))
    variant("gguf_key_len_2^64-1", patched("<Q", g["kvs"][0]["start"], (1 << 64) - 1))
    strkv = next(kv for kv in g["kvs"] if kv["type"] == 8)
    variant("gguf_string_value_past_eof", patched("<Q", strkv["vstart"], len(b) - strkv["vstart"]))
    arr = next((kv for kv in g["kvs"] if kv["type"] == 9 and kv["value"][0] == 8), None)
    if arr is None:
        fail("gguf: the export has no string array (tokenizer.ggml.tokens)")
    else:
        variant("gguf_array_count_2^61", patched("<Q", arr["vstart"] + 4, 1 << 61))   # x 8 bytes wraps to 0
        variant("gguf_array_count_2^64-1", patched("<Q", arr["vstart"] + 4, (1 << 64) - 1))
        variant("gguf_array_elem_type_array", patched("<I", arr["vstart"], 9))
    num = next(kv for kv in g["kvs"] if kv["type"] in (4, 5, 10))
    variant("gguf_kv_type_13", patched("<I", num["vstart"] - 4, 13))
    variant("gguf_kv_type_2^31", patched("<I", num["vstart"] - 4, 1 << 31))
    # Alignment (general.alignment, u32): 0, 48 with the data really laid out at 48, 2^31.
    variant("gguf_alignment_0", gg_rebuild(g, align=0))
    variant("gguf_alignment_48", gg_rebuild(g, align=48, layout_align=48))
    variant("gguf_alignment_2^31", gg_rebuild(g, align=1 << 31))
    variant("gguf_alignment_string", gg_rebuild(
        g, kv_edit=lambda kvs: [kv for kv in kvs if kv[0] != "general.alignment"] + [("general.alignment", 8, "32")]))
    # ... "256" with the data really at 256: a reader that ignores the mistyped key reads every tensor
    # from the wrong place.
    variant("gguf_alignment_string_256", gg_rebuild(
        g, kv_edit=lambda kvs: [kv for kv in kvs if kv[0] != "general.alignment"] + [("general.alignment", 8, "256")],
        layout_align=256))
    variant("gguf_alignment_u64", gg_rebuild(
        g, kv_edit=lambda kvs: [kv for kv in kvs if kv[0] != "general.alignment"] + [("general.alignment", 10, 64)],
        layout_align=64))
    variant("gguf_duplicate_key", gg_rebuild(
        g, kv_edit=lambda kvs: kvs + [kv for kv in kvs if kv[0] == "llama.block_count"]))
    # Tensor types: Q4_0 with data of Q4_0's size; an unknown number; Q8_0 as exported by flas-convert.

    def retype(i, typ, data=None):
        def fn(tensors):
            t = tensors[i]
            n = int(np.prod(t["dims"]))
            t["type"] = typ
            t["data"] = data if data is not None else bytes(gg_tensor_bytes(typ, n))
            return tensors
        return fn

    variant("gguf_type_q4_0", gg_rebuild(g, tensor_edit=retype(q0, GG_Q4_0)))
    variant("gguf_type_99", gg_rebuild(g, tensor_edit=retype(q0, 99, ts[q0]["data"])))
    variant("gguf_type_2^32-1", patched("<I", ts[q0]["type_at"], (1 << 32) - 1))
    variant("gguf_type_q8_0_import", open(gguf_q8, "rb").read())
    # Offsets.
    variant("gguf_offset_misaligned", patched("<Q", ts[q1]["offset_at"], ts[q1]["offset"] + 4))
    past = (len(b) - g["data_start"] + g["align"]) // g["align"] * g["align"]
    variant("gguf_offset_past_end", patched("<Q", ts[-1]["offset_at"], past))
    variant("gguf_offset_wraps", patched("<Q", ts[-1]["offset_at"], (1 << 64) - g["align"]))
    variant("gguf_offset_overlap", patched("<Q", ts[q1]["offset_at"], ts[q0]["offset"] + g["align"]))
    # Dimensions.

    def redim(i, dims):
        def fn(tensors):
            tensors[i]["dims"] = dims
            return tensors
        return fn

    variant("gguf_n_dims_0", gg_rebuild(g, tensor_edit=redim(q0, [])))
    variant("gguf_n_dims_5", gg_rebuild(g, tensor_edit=redim(q0, ts[q0]["dims"] + [1, 1, 1])))
    variant("gguf_n_dims_2^32-1", patched("<I", ts[q0]["dims_at"] - 4, (1 << 32) - 1))
    # ne = 2^58 x 2^18: the product wraps to the true 4096 elements in 64 bits.
    r = bytearray(b)
    struct.pack_into("<QQ", r, ts[q0]["dims_at"], 1 << 58, 1 << 18)
    variant("gguf_dims_overflow_wraps", bytes(r))
    r = bytearray(b)
    struct.pack_into("<QQ", r, ts[q0]["dims_at"], 128, 32)
    variant("gguf_shape_not_config", bytes(r))
    struct.pack_into("<QQ", r, ts[q0]["dims_at"], 0, 64)
    variant("gguf_dim_zero", bytes(r))
    # Names.
    if len(ts[q0]["name"]) != len(ts[q1]["name"]):
        fail("gguf: blk.0/blk.1 names differ in length")
    else:
        r = bytearray(b)
        r[ts[q1]["start"] + 8:ts[q1]["start"] + 8 + len(ts[q1]["name"])] = ts[q0]["name"].encode()
        variant("gguf_duplicate_tensor_name", bytes(r))
    variant("gguf_tensor_name_len_2^63", patched("<Q", ts[0]["start"], 1 << 63))

    def long_name(tensors):
        tensors[q0]["name"] = "blk.0.attn_q." + "x" * 100000
        return tensors

    variant("gguf_tensor_name_100k", gg_rebuild(g, tensor_edit=long_name))
    variant("gguf_key_100k", gg_rebuild(g, kv_edit=lambda kvs: [("k" * 100000, 4, 1)] + kvs))
    variant("gguf_missing_tensor", gg_rebuild(g, tensor_edit=lambda tt: [t for t in tt if t["name"] != down1]))
    variant("gguf_tensor_count_one_less", patched("<Q", 8, len(ts) - 1))
    # Metadata against the tensors.

    def set_kv(key, typ, value):
        def fn(kvs):
            if not any(k == key for k, _, _ in kvs):
                fail(f"gguf: the export has no {key}")
            return [(k, typ, value) if k == key else (k, t, v) for k, t, v in kvs]
        return fn

    def kv_type(key):
        return next(kv["type"] for kv in g["kvs"] if kv["key"] == key)

    variant("gguf_arch_gpt2", gg_rebuild(g, kv_edit=set_kv("general.architecture", 8, "gpt2")))
    variant("gguf_embedding_length_96",
            gg_rebuild(g, kv_edit=set_kv("llama.embedding_length", kv_type("llama.embedding_length"), 96)))
    variant("gguf_head_count_5",
            gg_rebuild(g, kv_edit=set_kv("llama.attention.head_count", kv_type("llama.attention.head_count"), 5)))
    variant("gguf_head_count_0",
            gg_rebuild(g, kv_edit=set_kv("llama.attention.head_count", kv_type("llama.attention.head_count"), 0)))
    variant("gguf_head_count_kv_3", gg_rebuild(g, kv_edit=set_kv(
        "llama.attention.head_count_kv", kv_type("llama.attention.head_count_kv"), 3)))
    variant("gguf_block_count_3",
            gg_rebuild(g, kv_edit=set_kv("llama.block_count", kv_type("llama.block_count"), 3)))
    eps_key, base_key = "llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base"
    variant("gguf_rms_eps_nan", gg_rebuild(g, kv_edit=set_kv(eps_key, 6, float("nan"))))
    variant("gguf_rms_eps_zero", gg_rebuild(g, kv_edit=set_kv(eps_key, 6, 0.0)))
    variant("gguf_rope_base_inf", gg_rebuild(g, kv_edit=set_kv(base_key, 6, float("inf"))))
    variant("gguf_context_length_0",
            gg_rebuild(g, kv_edit=set_kv("llama.context_length", kv_type("llama.context_length"), 0)))
    variant("gguf_missing_block_count",
            gg_rebuild(g, kv_edit=lambda kvs: [kv for kv in kvs if kv[0] != "llama.block_count"]))
    # Truncations.
    variant("gguf_truncated", b[:-1000])
    variant("gguf_truncated_in_kvs", b[:g["kvs"][3]["start"] + 5])
    variant("gguf_truncated_in_tensor_info", b[:ts[len(ts) // 2]["start"] + 3])
    variant("gguf_header_only", b[:24])
    fifo = os.path.join(p("cases"), "fifo.gguf")
    os.mkfifo(fifo)
    hostile("gguf_fifo", fifo, timeout=20)
    hostile("gguf_fifo", fifo, to="hf", extra=["--from", "gguf"], timeout=20)
    variant("gguf_truncated", b[:-1000], to="hf")
    r = bytearray(b)
    struct.pack_into("<QQ", r, ts[q0]["dims_at"], 1 << 58, 1 << 18)
    variant("gguf_dims_overflow_wraps", bytes(r), to="hf")
    if arr is not None:
        variant("gguf_array_count_2^61", patched("<Q", arr["vstart"] + 4, 1 << 61), to="llama2c")


# ---- llama2.c ------------------------------------------------------------------------------------

L2C_MAGIC = 0x616b3432


def l2c_cases(v1, v0):
    with open(v1, "rb") as f:
        b1 = f.read()
    with open(v0, "rb") as f:
        b0 = f.read()
    magic, version = struct.unpack_from("<Ii", b1, 0)
    if magic != L2C_MAGIC or version != 1:
        raise SystemExit(f"test_convert_hostile: the llama2c v1 export starts {magic:#x} {version}")
    h1 = list(struct.unpack_from("<7i", b1, 8))     # dim hidden layers heads kv_heads vocab seq_len
    h0 = list(struct.unpack_from("<7i", b0, 0))

    def v1_with(name, to="flas", **kw):
        h = list(h1)
        for k, v in kw.items():
            h["dim hidden layers heads kv vocab seq".split().index(k)] = v
        r = bytearray(b1)
        struct.pack_into("<7i", r, 8, *h)
        hostile(name, case_file(name, bytes(r), ".bin"), to)

    def v0_with(name, to="flas", **kw):
        h = list(h0)
        for k, v in kw.items():
            h["dim hidden layers heads kv vocab seq".split().index(k)] = v
        r = bytearray(b0)
        struct.pack_into("<7i", r, 0, *h)
        hostile(name, case_file(name, bytes(r), ".bin"), to)

    def v1_bytes(name, data, to="flas"):
        hostile(name, case_file(name, data, ".bin"), to)

    v1_bytes("l2c1_truncated", b1[:-100])
    v1_bytes("l2c1_one_byte_short", b1[:-1])
    v1_bytes("l2c1_too_long", b1 + b"\0\0\0\0")
    v1_bytes("l2c1_header_only", b1[:256])
    v1_bytes("l2c1_header_cut", b1[:100])
    v1_bytes("l2c1_version_2", b1[:4] + struct.pack("<i", 2) + b1[8:])
    v1_bytes("l2c1_version_0", b1[:4] + struct.pack("<i", 0) + b1[8:])
    v1_bytes("l2c1_version_neg", b1[:4] + struct.pack("<i", -1) + b1[8:])
    shared_at = 8 + 28
    v1_bytes("l2c1_shared_flag_flipped", b1[:shared_at] + bytes([1 - b1[shared_at]]) + b1[shared_at + 1:])
    v1_bytes("l2c1_shared_flag_7", b1[:shared_at] + bytes([7]) + b1[shared_at + 1:])
    v1_with("l2c1_dim_negative", dim=-h1[0])
    v1_with("l2c1_dim_zero", dim=0)
    v1_with("l2c1_layers_zero", layers=0)
    v1_with("l2c1_layers_negative", layers=-2)
    v1_with("l2c1_heads_zero", heads=0)
    v1_with("l2c1_kv_heads_zero", kv=0)
    v1_with("l2c1_heads_not_dividing_dim", heads=5)
    v1_with("l2c1_kv_not_dividing_heads", kv=3)
    v1_with("l2c1_kv_more_than_heads", kv=8)
    v1_with("l2c1_hidden_negative", hidden=-h1[1])
    v1_with("l2c1_vocab_negative", vocab=-h1[5])
    v1_with("l2c1_vocab_zero", vocab=0)
    v1_with("l2c1_seq_len_zero", seq=0)
    v1_with("l2c1_seq_len_negative", seq=-1)
    v1_with("l2c1_all_2^31-1", dim=2**31 - 1, hidden=2**31 - 1, layers=2**31 - 1, heads=1, kv=1, vocab=2**31 - 1,
            seq=2**31 - 1)
    # Valid-looking shapes (even head size, dividing heads) whose byte counts overflow 32 and 64 bits.
    v1_with("l2c1_huge_products", dim=2**31 - 2, hidden=2**31 - 1, layers=2**31 - 1, heads=1, kv=1, vocab=2**31 - 1,
            seq=2**31 - 1)
    v1_with("l2c1_2^30_products_wrap", dim=1 << 30, hidden=1 << 30, layers=1 << 30, heads=1 << 20, kv=1 << 20,
            vocab=1 << 30, seq=1 << 30)
    v1_with("l2c1_heads_not_dividing_dim", to="hf", heads=5)
    v1_with("l2c1_all_2^31-1", to="gguf", dim=2**31 - 1, hidden=2**31 - 1, layers=2**31 - 1, heads=1, kv=1,
            vocab=2**31 - 1, seq=2**31 - 1)
    # Version 0 (the name .bin says so): 7 ints, negative vocabulary = separate classifier.
    hostile("l2c0_truncated", case_file("l2c0_truncated", b0[:-100], ".bin"))
    hostile("l2c0_too_long", case_file("l2c0_too_long", b0 + b"\0" * 4, ".bin"))
    hostile("l2c0_header_cut", case_file("l2c0_header_cut", b0[:20], ".bin"))
    hostile("l2c0_all_zero_header", case_file("l2c0_all_zero_header", bytes(28), ".bin"))
    hostile("l2c0_empty", case_file("l2c0_empty", b"", ".bin"))
    v0_with("l2c0_heads_not_dividing_dim", heads=5)
    v0_with("l2c0_kv_not_dividing_heads", kv=3)
    v0_with("l2c0_dim_negative", dim=-h0[0])
    v0_with("l2c0_seq_len_negative", seq=-h0[6])
    v0_with("l2c0_heads_zero", heads=0)
    v0_with("l2c0_vocab_flipped_sign", vocab=-h0[5])   # tied <-> untied: the size no longer matches
    v0_with("l2c0_all_2^31-1", dim=2**31 - 1, hidden=2**31 - 1, layers=2**31 - 1, heads=1, kv=1, vocab=2**31 - 1,
            seq=2**31 - 1)
    v0_with("l2c0_vocab_int_min", vocab=-2**31)
    v0_with("l2c0_huge_products", dim=2**31 - 2, hidden=2**31 - 1, layers=2**31 - 1, heads=1, kv=1, vocab=-(2**31 - 1),
            seq=2**31 - 1)
    fifo = os.path.join(p("cases"), "fifo.bin")
    os.mkfifo(fifo)
    hostile("l2c_fifo", fifo, timeout=20)


# ---- FLaS HDF5 and the output side ---------------------------------------------------------------

def flas_cases():
    with open(p("base.h5"), "rb") as f:
        b = f.read()
    hostile("flas_truncated", case_file("flas_truncated", b[:len(b) // 2], ".h5"), to="hf")
    hostile("flas_header_only", case_file("flas_header_only", b[:2048], ".h5"), to="gguf")
    path = case_file("flas_attr_dim_wrong", b, ".h5")
    with h5py.File(path, "r+") as f:
        f.attrs["dim"] = np.int64(96)
    hostile("flas_attr_dim_wrong", path, to="llama2c")
    # Non-finite scalars: JSON cannot hold them (an hf writer would drop or mangle the key).
    path = case_file("flas_rope_theta_inf", b, ".h5")
    with h5py.File(path, "r+") as f:
        f.attrs["rope_theta"] = np.float32("inf")
    hostile("flas_rope_theta_inf", path, to="hf")
    path = case_file("flas_norm_eps_nan", b, ".h5")
    with h5py.File(path, "r+") as f:
        f.attrs["norm_eps"] = np.float32("nan")
    hostile("flas_norm_eps_nan", path, to="hf")
    path = case_file("flas_tensor_missing", b, ".h5")
    with h5py.File(path, "r+") as f:
        del f["params/layers.1.feed_forward.w2.weight"]
    hostile("flas_tensor_missing", path, to="hf")
    # OUTPUT in a directory that does not exist; an existing directory that is not a model, even with --force.
    outdir = p("out", "parent_missing")
    os.makedirs(outdir, exist_ok=True)
    rc, _, err, _ = convert([p("m1.bin"), os.path.join(outdir, "no", "such", "m.h5")], p("rss.txt"))
    lines = err.splitlines()
    if rc != 1 or len(lines) != 1 or not lines[0].startswith("flas-convert: ") or os.listdir(outdir):
        fail(f"output_parent_missing: exit {rc}, stderr {err.strip()!r}, left {os.listdir(outdir)}")
    else:
        print(f"ok  {'output_parent_missing [->flas]':42s} {lines[0]}")
        refused.append(("output_parent_missing [->flas]", lines[0]))
    notmodel = p("out", "notmodel")
    os.makedirs(os.path.join(notmodel, "sub"), exist_ok=True)
    put(os.path.join(notmodel, "keep.txt"), b"precious\n")
    before = tree_digest(notmodel)
    rc, _, err, _ = convert(["--force", p("m1.bin"), notmodel], p("rss.txt"))
    lines = err.splitlines()
    if rc != 1 or len(lines) != 1 or not lines[0].startswith("flas-convert: ") or tree_digest(notmodel) != before \
            or sorted(os.listdir(p("out"))) != ["notmodel", "parent_missing"]:
        fail(f"output_dir_not_a_model_force: exit {rc}, stderr {err.strip()!r}, dir "
             f"{'unchanged' if tree_digest(notmodel) == before else 'CHANGED'}, out/ {os.listdir(p('out'))}")
    else:
        print(f"ok  {'output_dir_not_a_model_force [->hf]':42s} {lines[0]}")
        refused.append(("output_dir_not_a_model_force [->hf]", lines[0]))


# ---- the valid side ------------------------------------------------------------------------------

def params(path):
    with h5py.File(path, "r") as f:
        attrs = {k: f.attrs[k] for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size")}
        return attrs, {k: f["params"][k][...] for k in f["params"]}


def same_model(base, other, what, rtol=0.0, atol=0.0):
    a_attrs, a = params(base)
    b_attrs, b = params(other)
    if {k: int(v) for k, v in a_attrs.items()} != {k: int(v) for k, v in b_attrs.items()}:
        fail(f"{what}: shapes {b_attrs} != {a_attrs}")
        return
    if sorted(a) != sorted(b):
        fail(f"{what}: tensors {sorted(set(a) ^ set(b))} differ")
        return
    for k in a:
        if a[k].shape != b[k].shape or not np.allclose(a[k], b[k], rtol=rtol, atol=atol):
            fail(f"{what}: {k} differs (max |d| {np.abs(a[k].astype(np.float64) - b[k]).max()})")
            return
    print(f"ok  {what}: the same {len(a)} tensors", flush=True)


def import_ok(src, what, rtol=0.0, atol=0.0, extra=()):
    out = p("imports", what + ".h5")
    if ok_run(list(extra) + [src, out], what):
        same_model(p("base.h5"), out, what, rtol, atol)


def main():
    global CONVERT, TRAIN, WORK
    groups = {"valid", "hf", "gguf", "llama2c", "flas"}
    if len(sys.argv) < 4 or not set(sys.argv[4:]) <= groups:
        sys.exit(__doc__)
    CONVERT, TRAIN, WORK = [os.path.abspath(a) for a in sys.argv[1:4]]
    groups = set(sys.argv[4:]) or groups
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(p("imports"))
    os.makedirs(p("out"))
    os.makedirs(p("cases"))
    ldd = subprocess.run(["ldd", CONVERT], capture_output=True, text=True).stdout
    san = "libasan" in ldd
    print(f"flas-convert: {CONVERT} ({'ASan + UBSan build' if san else 'no sanitizer'})")
    if san:
        print(f"ASAN_OPTIONS={ENV['ASAN_OPTIONS']}  LSAN_OPTIONS={ENV['LSAN_OPTIONS']}")

    # A SentencePiece model of exactly V pieces, trained on made-up words.
    import sentencepiece as spm
    rng = np.random.default_rng(5)
    syll = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = ["".join(rng.choice(syll, rng.integers(1, 4))) for _ in range(600)]
    with open(p("text.txt"), "w") as f:
        for _ in range(600):
            f.write(" ".join(rng.choice(words, 12)) + ".\n")
    spm.SentencePieceTrainer.train(input=p("text.txt"), model_prefix=p("tok"), vocab_size=V, model_type="bpe",
                                   byte_fallback=True, minloglevel=2, num_threads=1)
    if spm.SentencePieceProcessor(model_file=p("tok.model")).get_piece_size() != V:
        sys.exit("test_convert_hostile: the tokenizer does not have V pieces")
    spm.SentencePieceTrainer.train(input=p("text.txt"), model_prefix=p("tok300"), vocab_size=300, model_type="bpe",
                                   byte_fallback=True, minloglevel=2, num_threads=1)

    subprocess.run([TRAIN, "--init"] + MODEL + ["--output", p("base.h5")], check=True, env=ENV,
                   capture_output=True)
    tok = ["--tokenizer", p("tok.model")]
    exports = {
        "hf": ([p("hf")], tok),
        "hf_sharded": ([p("hf_sharded")], tok + ["--shard-size", "150k"]),
        "hf_bf16": ([p("hf_bf16")], ["--dtype", "bf16"]),
        "gguf": ([p("m.gguf")], tok),
        "gguf_f16": ([p("m16.gguf")], tok + ["--dtype", "f16"]),
        "gguf_q8_0": ([p("m8.gguf")], tok + ["--dtype", "q8_0"]),
        "llama2c_v1": ([p("m1.bin")], []),
        "llama2c_v0": ([p("m0.bin")], ["--llama2c-version", "0"]),
    }
    for what, (out, extra) in exports.items():
        if not ok_run(extra + [p("base.h5")] + out, "export " + what):
            sys.exit("test_convert_hostile: the valid exports failed; nothing to derive from")
    print("exports: " + ", ".join(exports))
    for fn in os.listdir(p("hf_sharded")):
        print(f"  hf_sharded/{fn}: {os.path.getsize(p('hf_sharded', fn))} bytes")

    if "valid" in groups:
        valid_checks(tok)
    print("\nhostile cases (name [->output format], flas-convert's line):", flush=True)
    if "hf" in groups:
        hf_cases(p("hf"), p("hf_sharded"))
    if "gguf" in groups:
        gg_cases(p("m.gguf"), p("m8.gguf"))
    if "llama2c" in groups:
        l2c_cases(p("m1.bin"), p("m0.bin"))
    if "flas" in groups:
        flas_cases()

    print(f"\n{len(refused)} hostile cases refused as required, {len(failures)} failure(s)"
          + (" (ASan + UBSan build)" if san else ""))
    if groups & {"hf", "gguf", "llama2c"} and len(refused) + len(failures) < 15:
        fail("fewer than 15 cases ran")
    if failures:
        print("\nFAILURES:")
        for f in failures:
            print("  " + f.split("\n")[0])
        sys.exit(1)
    shutil.rmtree(WORK, ignore_errors=True)


def valid_checks(tok):
    # The valid files import back.
    import_ok(p("hf"), "import_hf")
    import_ok(p("hf_sharded"), "import_hf_sharded")
    import_ok(p("hf_bf16"), "import_hf_bf16", rtol=1e-2, atol=1e-3)
    import_ok(p("m.gguf"), "import_gguf")
    import_ok(p("m16.gguf"), "import_gguf_f16", rtol=1e-3, atol=1e-4)
    import_ok(p("m1.bin"), "import_llama2c_v1")
    import_ok(p("m0.bin"), "import_llama2c_v0")
    # This script's writers are faithful: its re-serialization of each export imports too.
    hdr, body = st_read(st_file(p("hf")))
    d = case_dir("control_st", p("hf"))
    put(st_file(d), st_build(*st_tensors(hdr, body)))
    import_ok(d, "control_safetensors_rebuilt")
    g = gg_parse(open(p("m.gguf"), "rb").read())
    import_ok(case_file("control_gguf", gg_rebuild(g), ".gguf"), "control_gguf_rebuilt")
    import_ok(case_file("control_gguf_align64", gg_rebuild(g, align=64), ".gguf"), "control_gguf_alignment_64")
    import_ok(case_file("control_l2c1", open(p("m1.bin"), "rb").read(), ".bin"), "control_llama2c_v1_copy")

    # OUTPUT exists, no --force: refused, untouched; with --force: replaced.
    for to, out in (("flas", p("exists", "model.h5")), ("hf", p("exists", "hfout")), ("gguf", p("exists", "m.gguf"))):
        shutil.rmtree(p("exists"), ignore_errors=True)
        os.makedirs(p("exists"))
        if to == "hf":
            shutil.copytree(p("hf_bf16"), out)   # a model directory: --force may replace it
        else:
            put(out, b"precious\n")
        before = tree_digest(out)
        args = (tok if to == "gguf" else []) + [p("m1.bin"), out]
        rc, sout, err, _ = convert(args, p("rss.txt"))
        lines = err.splitlines()
        name = f"output_exists_no_force [->{to}]"
        if rc != 1 or len(lines) != 1 or not lines[0].startswith("flas-convert: ") or tree_digest(out) != before \
                or sorted(os.listdir(p("exists"))) != [os.path.basename(out)]:
            fail(f"{name}: exit {rc}, stderr {err.strip()!r}, output "
                 f"{'unchanged' if tree_digest(out) == before else 'CHANGED'}, dir {os.listdir(p('exists'))}")
        else:
            print(f"ok  {name:42s} {lines[0]}", flush=True)
            refused.append((name, lines[0]))
        if ok_run(["--force"] + args, f"output_exists_force [->{to}]") and tree_digest(out) == before:
            fail(f"output_exists_force [->{to}]: exit 0 but the output was not replaced")


if __name__ == "__main__":
    main()
