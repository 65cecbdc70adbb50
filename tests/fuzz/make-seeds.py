#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz harnesses (tests/fuzz/corpus/<name>/): for each parser a
few valid inputs and near-misses. Run it again after changing a format; it replaces every seed it
writes and leaves other files (inputs the fuzzer found and someone committed) alone.

    python3 tests/fuzz/make-seeds.py [CORPUS_DIR]
"""
import hashlib
import json
import os
import struct
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SEP = b"\n--flas-fuzz-part--\n"  # FZ_SEP in support.h


def put(name, seed, data):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + seed), "wb") as f:
        f.write(data)


SHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
SHA_A = "a" * 64

# ---- 1. flas.conf -------------------------------------------------------------------------------------
put("flas_conf", "example", """# flas.conf
Federation=flas Site=leonardo StagingRoot=/srv/flas
    AllowGroups=flas-users          # members of the Unix group flas-users ...
    AllowUsers=alice,bob            # ... and these two users
    AllowAccounts=proj-llm,proj-bio # jobs charged to other accounts are refused
Federation=bio-pilot Site=leonardo StagingRoot=/srv/flas
""")
put("flas_conf", "star", "federation=open site=s1 stagingroot=/a\nAllowUsers=*\n")
put("flas_conf", "duplicate-key", "Federation=f Site=s StagingRoot=/x Site=t\n")
put("flas_conf", "twice", "Federation=f Site=s StagingRoot=/x\nFederation=f Site=s StagingRoot=/y\n")
put("flas_conf", "bad-path", "Federation=f Site=s StagingRoot=/x/../etc\n")
put("flas_conf", "no-record", "Site=s\n")
put("flas_conf", "long-list", "Federation=f Site=s StagingRoot=/x AllowUsers=" +
    ",".join("u%d" % i for i in range(70)) + "\n")

# ---- 2. coordinator.conf ------------------------------------------------------------------------------
COORD = """Federation=flas WorkDir=/var/lib/flas/coord InitialGlobal=/data/global0.h5
  KnownHosts=/etc/flas/known_hosts Rounds=10 MinSites=1 Strategy=diloco
  Sync=reservation Reservation=flas-flas-r%d Signal=USR1@300 RoundDeadline=10800
Site=leonardo Host=login.leonardo.example User=fl Identity=/etc/flas/keys/leonardo
  StagingRoot=/leonardo_scratch/flas Script=/home/fl/flas-train.sbatch
  ScriptArgs=--data,/leonardo_scratch/fl/it/train,--valid,/leonardo_scratch/fl/it/valid,--steps,500
  Partition=boost Account=proj Nodes=2 Time=120
Site=karolina Host=karolina.example User=fl Jump=fl@gw.example:22
  StagingRoot=/scratch/flas Script=/home/fl/flas-train.sbatch
  ScriptArgs=--data,/scratch/fl/cs/train,--steps,500 Nodes=1 Time=120
"""
put("coord_conf", "example", COORD)
put("coord_conf", "speed", """Federation=f WorkDir=/w InitialGlobal=/w/g0.h5 KnownHosts=/w/kh Rounds=3
RoundBudget=600 MinSteps=10 DropSlowSites=yes FirstSteps=100 RoundDeadline=3600 Sync=begin BeginDelay=30
UpdateEncoding=int8 UpdateBlock=128 GlobalEncoding=bf16 ServerLR=0.7 ServerMomentum=0.9 MaxUpdateNorm=10
MaxUpdateRatio=2 PollInterval=5 PollMax=60 MaxCheckpointBytes=1000000000 CommandTimeout=60
Site=a Host=10.0.0.1 Port=2222 User=u StagingRoot=/s Script=/s/run.sh Tasks=4 CpusPerTask=8 Tools=/opt/flas/bin
""")
put("coord_conf", "reservation-two-pct", COORD.replace("flas-flas-r%d", "r%d%d"))
put("coord_conf", "site-first", "Site=a Host=h User=u StagingRoot=/s Script=/x\n")
put("coord_conf", "budget-no-min", COORD.replace("Rounds=10", "Rounds=10 DropSlowSites=yes RoundBudget=5"))

# ---- 3. plugin options and arguments; flas-train's environment; names --------------------------------
put("spank_options", "valid", b"\x00flas\x003\x00conf=/etc/slurm/flas.conf")
put("spank_options", "remote-getopt", b"\x05bio-pilot\x00000042")
put("spank_options", "refused-check", b"\x02flas\x00999999\x00conf=/a\x00conf=/b")
put("spank_options", "option-as-value", b"\x00--wrap\x00-1\x00conf=relative")
put("spank_options", "unknown-arg", b"\x04fed\x001234567\x00debug=1")

ENV = """FLAS_FEDERATION=flas
FLAS_SITE=leonardo
FLAS_JOB_ID=4242
FLAS_ROUND=3
FLAS_GLOBAL_CHECKPOINT=/srv/flas/flas/global/round-000003.h5
FLAS_GLOBAL_SHA256=%s
FLAS_OUTPUT_DIR=/srv/flas/flas/jobs/4242
FLAS_OUTPUT_CHECKPOINT=/srv/flas/flas/jobs/4242/local.h5
FLAS_STEPS=500
FLAS_UPDATE=int8
FLAS_UPDATE_BLOCK=128
HOME=/home/alice
""" % SHA
put("train_env", "plugin", b"\x00\x00" + ENV.encode())
put("train_env", "with-args", b"\x00\x00" + ENV.encode() + SEP +
    b"--data\x00/d/train\x00--valid\x00/d/valid\x00--residual-dir\x00/home/alice/r\x00--tokens\x0010k")
put("train_env", "given-flags", b"\xff\x0f" + ENV.encode())
put("train_env", "bad-steps", b"\x00\x00FLAS_STEPS=+5\nFLAS_ROUND=1000000\n")
put("train_env", "bad-sha", b"\x00\x00FLAS_GLOBAL_SHA256=ABC\nFLAS_ERROR=the model is not verified\n")
put("train_env", "xdg", b"\x00\x00FLAS_FEDERATION=f\nFLAS_SITE=s\nXDG_STATE_HOME=/state\nFLAS_UPDATE=bf16\n" + SEP +
    b"--global\x00/g.h5\x00--output\x00/o.h5\x00--data\x00/d\x00--steps\x0010")
put("train_env", "home-root", b"\x00\x00FLAS_FEDERATION=f\nFLAS_SITE=s\nHOME=/\nFLAS_UPDATE_BLOCK=1000\n")

for i, s in enumerate(["round-000003.h5", "residual-round-000042.h5", "site_a-1", "/srv/flas/fed",
                       "jobs/7/local.h5", SHA, "int8", "it's a 'quoted' word", "-rf", "999999", "round-1234567.h5",
                       ".hidden", "host.example:22@[x]%"]):
    put("names", "%02d" % i, s)

# ---- 4. manifest, journal -----------------------------------------------------------------------------
def manifest(**kw):
    m = {"format": "flas-manifest", "version": 1, "federation": "fed", "site": "site-a", "round": 3,
         "job_id": 42, "user": "alice", "uid": 1000, "node": "n1", "job_state": "COMPLETED", "exit_code": 0,
         "signal": 0, "checkpoint": "site-a-job42.h5", "size": 123456, "sha256": SHA, "base_sha256": SHA_A,
         "error": "", "published_at": "2025-01-31T12:00:00Z"}
    m.update(kw)
    return json.dumps(m, indent=2) + "\n"


SEL = b"\x3f"  # round 3, job 42, site-a, fed, base aaaa..., size bound 2^42 (fuzz_manifest.c)
put("manifest", "valid", SEL + manifest().encode())
put("manifest", "no-checkpoint", SEL + manifest(checkpoint=None, error="the job failed", size=0, sha256="").encode())
put("manifest", "path-in-name", SEL + manifest(checkpoint="../../etc/passwd").encode())
put("manifest", "other-base", SEL + manifest(base_sha256=SHA).encode())
put("manifest", "too-big", b"\x1f" + manifest().encode())
put("manifest", "not-object", SEL + b"[1, 2, 3]")

JOURNAL = """format=flas-coordinator-journal
version=1
federation=flas
run_id=0123456789abcdef
round=3
phase=training
global_sha256=%s
staged_sha256=%s
begin_unix=0
round_started_unix=1700000000
round_started=1700000000.250
failure=
sites=2
site.0.name=leonardo
site.0.state=submitted
site.0.attempt=1
site.0.job=4242
site.0.job_state=RUNNING
site.0.local_sha256=
site.0.local_bytes=0
site.0.seconds_fetch=0.000
site.0.note=
site.0.bytes_up=1000
site.0.seconds_up=1.500
site.0.submit_unix=1700000001
site.0.start_unix=1700000002
site.0.end_unix=0
site.0.train_seconds=0.000
site.0.steps=0
site.0.tokens=0
site.0.steps_assigned=500
site.0.rate=0.83333333333333337
site.0.staged_via=full
site.1.name=karolina
site.1.state=dropped
site.1.attempt=2
site.1.job=0
site.1.job_state=
site.1.note=too slow
""" % (SHA, SHA)
put("journal", "valid", JOURNAL)
put("journal", "done", JOURNAL.replace("phase=training", "phase=done").replace("sites=2", "sites=1")
    .split("site.1.")[0])
put("journal", "bad-state", JOURNAL.replace("state=submitted", "state=flying"))
put("journal", "site-out-of-range", JOURNAL + "site.7.name=x\n")
put("journal", "negative", JOURNAL.replace("site.0.bytes_up=1000", "site.0.bytes_up=-1"))

# ---- 5. token shards ----------------------------------------------------------------------------------
def shard(tokens, vocab, bos=1, eos=2, flags=3, version=1, hdr=128, tb=None, sha=None, n=None):
    tb = tb or (2 if vocab <= 65536 else 4)
    payload = b"".join(struct.pack("<H" if tb == 2 else "<I", t) for t in tokens)
    h = bytearray(128)
    h[0:8] = b"FLASTOK\0"
    struct.pack_into("<IIII", h, 8, version, hdr, vocab, tb)
    struct.pack_into("<QQiiI", h, 24, len(tokens) if n is None else n, 2, bos, eos, flags)
    h[56:88] = hashlib.sha256(b"tokenizer").digest()
    h[88:120] = sha if sha is not None else hashlib.sha256(payload).digest()
    return bytes(h) + payload


put("shard", "valid16", shard([1, 5, 6, 7, 2, 1, 9, 2], 512))
put("shard", "valid32", shard([1, 70000, 2], 100000))
put("shard", "token-out-of-vocab", shard([1, 600, 2], 512))
put("shard", "bad-hash", shard([1, 5, 2], 512, sha=b"\0" * 32))
put("shard", "truncated", shard([1, 5, 6, 2], 512, n=5))
put("shard", "huge-count", shard([], 512, n=(1 << 63)))

# ---- 6. checkpoints (descriptions: see fuzz_checkpoint.c) ---------------------------------------------
def rec(op, x=0, y=0, z=0, v=0, extra=b""):
    return struct.pack("<BBBBI", op, x, y, z, v & 0xffffffff) + extra


def f32bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


put("checkpoint", "ckpt-minimal", bytes([0, 0x00, 0x00, 0x00]))
put("checkpoint", "ckpt-all-parts", bytes([0, 0x3f, 0x05, 0x00]))
put("checkpoint", "ckpt-global-latest", bytes([0, 0xc0, 0x02, 0x01]))
put("checkpoint", "ckpt-userblock", bytes([0, 0x10, 0x04, 0x04]))
put("checkpoint", "int8-update", bytes([1, 0x10, 0x08, 0x00]))
put("checkpoint", "int8-update-b256", bytes([1, 0x00, 0x16, 0x00]))
put("checkpoint", "bf16-update", bytes([2, 0x10, 0x01, 0x00]))
put("checkpoint", "near-f64-tensor", bytes([0, 0, 0, 0]) + rec(7, 0, 2, 2))
put("checkpoint", "near-int8-minus128", bytes([1, 0, 0x08, 0]) + rec(12, 5, 3, 0, 0x80))
put("checkpoint", "near-scale-nan", bytes([1, 0, 0x08, 0]) + rec(12, 6, 0, 0, 0x7fc00000))
put("checkpoint", "near-bf16-inf", bytes([2, 0, 0, 0]) + rec(12, 5, 1, 0, 0x7f80))
put("checkpoint", "near-huge-chunk", bytes([0, 0, 0, 0]) + rec(9, 0, 1, 16, 1000 | 1000 << 16))
put("checkpoint", "near-soft-link", bytes([0, 0, 0, 0]) + rec(13, 0, 0, 1))
put("checkpoint", "near-superblock0", bytes([0, 0, 0, 0]) + rec(16, 0, 0, 2))
put("checkpoint", "near-external", bytes([0, 0, 0, 0]) + rec(9, 0, 4, 3))
put("checkpoint", "near-version2", bytes([0, 0, 0, 0]) + rec(0, 1, 0, 0, 2))
put("checkpoint", "near-layers", bytes([0, 0, 0, 0]) + rec(0, 4, 0, 0, 100000))
put("checkpoint", "near-fixed-string", bytes([0, 0, 0, 0]) + rec(1, 0, 7))
put("checkpoint", "near-nan-param", bytes([0, 0x01, 0, 0]) + rec(12, 1, 2, 0, f32bits(float("nan"))))
put("checkpoint", "near-update-and-params", bytes([1, 0, 0x08, 0]) + rec(14, 0))
# attribute 45 and 46 of a checkpoint are /server's dp_rho and dp_rounds (baseline() in fuzz_checkpoint.c)
put("checkpoint", "near-server-ledger", bytes([0, 0x0a, 0, 0]) + rec(2, 45) + rec(2, 46) + rec(6, 46, 0, 0, 9))
put("checkpoint", "near-hard-alias", bytes([0, 0, 0, 0]) + rec(13, 0, 0, 4))
put("checkpoint", "near-named-type", bytes([0, 0, 0, 0]) + rec(13, 0, 2, 8))
put("checkpoint", "near-chunk-deflate", bytes([0, 0, 0, 0]) + rec(18, 0, 1, 7, 2 | 4 << 16))
put("checkpoint", "near-scale-shape", bytes([1, 0, 0x08, 0]) + rec(8, 6, 0, 0, 3))

# ---- 7. model imports: tiny models of every format ----------------------------------------------------
DIM, HID, LAYERS, HEADS, VOCAB, SEQ = 8, 16, 1, 2, 16, 8


def shapes(kv, tied):
    hd = DIM // HEADS
    t = [("tok_embeddings", (VOCAB, DIM))]
    for l in range(LAYERS):
        t += [("l%d.attention_norm" % l, (DIM,)), ("l%d.wq" % l, (HEADS * hd, DIM)), ("l%d.wk" % l, (kv * hd, DIM)),
              ("l%d.wv" % l, (kv * hd, DIM)), ("l%d.wo" % l, (DIM, HEADS * hd)), ("l%d.ffn_norm" % l, (DIM,)),
              ("l%d.w1" % l, (HID, DIM)), ("l%d.w2" % l, (DIM, HID)), ("l%d.w3" % l, (HID, DIM))]
    t += [("norm", (DIM,))]
    if not tied:
        t += [("output", (VOCAB, DIM))]
    return t


def numel(s):
    n = 1
    for d in s:
        n *= d
    return n


def floats(n, seed):
    return struct.pack("<%df" % n, *[((i * 7 + seed * 13) % 17 - 8) / 16.0 for i in range(n)])


HF_NAMES = {"tok_embeddings": "model.embed_tokens.weight", "norm": "model.norm.weight", "output": "lm_head.weight",
            "attention_norm": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
            "wv": "self_attn.v_proj", "wo": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
            "w1": "mlp.gate_proj", "w2": "mlp.down_proj", "w3": "mlp.up_proj"}


def hf_name(n):
    if "." in n:
        l, k = n.split(".")
        return "model.layers.%s.%s.weight" % (l[1:], HF_NAMES[k])
    return HF_NAMES[n]


def safetensors(tensors, dtype="F32", meta=True):
    header, data = {}, b""
    if meta:
        header["__metadata__"] = {"format": "pt"}
    for i, (name, shape) in enumerate(tensors):
        raw = floats(numel(shape), i)
        if dtype == "BF16":
            raw = b"".join(raw[k + 2:k + 4] for k in range(0, len(raw), 4))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def hf_config(kv, tied, **kw):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM, "intermediate_size": HID,
         "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": kv, "vocab_size": VOCAB,
         "max_position_embeddings": SEQ, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
         "tie_word_embeddings": tied}
    c.update(kw)
    return json.dumps(c).encode()


hf_t = [(hf_name(n), s) for n, s in shapes(2, False)]
put("safetensors", "single-f32", hf_config(2, False) + SEP + safetensors(hf_t))
hf_tied = [(hf_name(n), s) for n, s in shapes(1, True)]
put("safetensors", "tied-bf16-gqa", hf_config(1, True) + SEP + safetensors(hf_tied, "BF16", meta=False))
half = len(hf_t) // 2
index = {"metadata": {"total_size": 0},
         "weight_map": {n: "model-0000%d-of-00002.safetensors" % (1 if i < half else 2) for i, (n, _) in enumerate(hf_t)}}
put("safetensors", "sharded", hf_config(2, False) + SEP + safetensors(hf_t[:half]) + SEP +
    json.dumps(index).encode() + SEP + safetensors(hf_t[half:]))
put("safetensors", "near-missing-tensor", hf_config(2, False) + SEP + safetensors(hf_t[:-1]))
put("safetensors", "near-rope-scaling", hf_config(2, False, rope_scaling={"type": "linear", "factor": 2.0}) + SEP +
    safetensors(hf_t))
bad = bytearray(safetensors(hf_t))
bad[0:8] = struct.pack("<Q", 1 << 40)
put("safetensors", "near-header-length", hf_config(2, False) + SEP + bytes(bad))


def gguf(kv_heads, tied, ftype=0, layers=LAYERS, extra_kv=()):
    def s(x):
        x = x.encode()
        return struct.pack("<Q", len(x)) + x

    kvs = [("general.architecture", 8, s("llama")), ("general.alignment", 4, struct.pack("<I", 32)),
           ("llama.context_length", 4, struct.pack("<I", SEQ)), ("llama.embedding_length", 4, struct.pack("<I", DIM)),
           ("llama.block_count", 4, struct.pack("<I", layers)),
           ("llama.feed_forward_length", 4, struct.pack("<I", HID)),
           ("llama.attention.head_count", 4, struct.pack("<I", HEADS)),
           ("llama.attention.head_count_kv", 4, struct.pack("<I", kv_heads)),
           ("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
           ("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
           ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + s("<s>") + s("</s>"))] + list(extra_kv)
    gnames = {"tok_embeddings": "token_embd", "norm": "output_norm", "output": "output", "attention_norm": "attn_norm",
              "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output", "ffn_norm": "ffn_norm",
              "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up"}
    infos, data = b"", b""
    for i, (n, shape) in enumerate(shapes(kv_heads, tied)):
        name = ("blk.%s.%s" % (n.split(".")[0][1:], gnames[n.split(".")[1]]) if "." in n else gnames[n]) + ".weight"
        raw = floats(numel(shape), i)
        t = 0
        if ftype == 1 and len(shape) == 2:
            raw = b"".join(raw[k + 2:k + 4] for k in range(0, len(raw), 4))
            t = 30  # BF16
        ne = list(reversed(shape))
        data += b"\0" * (-len(data) % 32)
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne) + \
            struct.pack("<IQ", t, len(data))
        data += raw
    head = b"GGUF" + struct.pack("<IQQ", 3, len(shapes(kv_heads, tied)), len(kvs))
    head += b"".join(s(k) + struct.pack("<I", t) + v for k, t, v in kvs) + infos
    head += b"\0" * (-len(head) % 32)
    return head + data


put("gguf", "f32", gguf(2, False))
put("gguf", "bf16-tied-gqa", gguf(1, True, ftype=1))
put("gguf", "near-arch", gguf(2, False).replace(b"llama\x02", b"llamb\x02", 1))
put("gguf", "near-blocks", gguf(2, False, layers=2))
put("gguf", "near-dup-key", gguf(2, False, extra_kv=[("llama.block_count", 4, struct.pack("<I", 1))]))
put("gguf", "near-version", b"GGUF" + struct.pack("<IQQ", 2, 0, 0))


def llama2c(version, tied, kv=2, vocab=VOCAB, extra=b""):
    hd = DIM // HEADS
    t = dict(shapes(kv, tied))
    cfg = [DIM, HID, LAYERS, HEADS, kv, vocab if (tied or version) else -vocab, SEQ]
    if version == 0:
        order = ["tok_embeddings"] + ["l0.attention_norm", "l0.wq", "l0.wk", "l0.wv", "l0.wo", "l0.ffn_norm", "l0.w1",
                                      "l0.w2", "l0.w3", "norm"]
        body = b"".join(floats(numel(t[n]), i) for i, n in enumerate(order))
        body += floats(SEQ * hd // 2 * 2, 99)  # the RoPE tables
        if not tied:
            body += floats(numel(t["output"]), 98)
        return struct.pack("<7i", *cfg) + body + extra
    order = ["l0.attention_norm", "l0.ffn_norm", "norm", "tok_embeddings", "l0.wq", "l0.wk", "l0.wv", "l0.wo", "l0.w1",
             "l0.w2", "l0.w3"] + ([] if tied else ["output"])
    head = bytearray(256)
    struct.pack_into("<Ii7i", head, 0, 0x616b3432, 1, *cfg)
    head[36] = 1 if tied else 0
    return bytes(head) + b"".join(floats(numel(t[n]), i) for i, n in enumerate(order)) + extra


put("llama2c", "v0-tied", llama2c(0, True))
put("llama2c", "v0-untied-gqa", llama2c(0, False, kv=1))
put("llama2c", "v1-untied", llama2c(1, False))
put("llama2c", "v1-tied", llama2c(1, True))
put("llama2c", "near-trailing", llama2c(1, False, extra=b"\0\0\0\0"))
put("llama2c", "near-version", struct.pack("<Ii", 0x616b3432, 2) + b"\0" * 248)
put("llama2c", "near-header-only", struct.pack("<7i", 8, 16, 1, 2, 2, 16, 8))

# ---- 8. Slurm's replies -------------------------------------------------------------------------------
for i, r in enumerate([b"12345\n", b"12345;cluster\n", b"0 RUNNING\n", b"0 COMPLETED\n",
                       b"1 slurm_load_jobs error: Invalid job id specified\n", b"1 slurm_load_jobs error: timeout\n",
                       b"0 \n", b"123 flas\n124 alice\n12_3 flas\n", b"1700000000 1700000100 1700003600\n",
                       b"1700000000 Unknown N/A\n", b"1700000000 1700000100 1600000000", b"-5\n", b"0 running\n"]):
    put("slurm_replies", "%02d" % i, bytes([i & 7]) + r)
print("seeds written under", ROOT)
