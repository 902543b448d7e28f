#!/usr/bin/python3
"""End-to-end hostile-input test of the cherryq CLI (issue 8).

Makes a tiny valid model directory, a quantized directory, a tokenizer, a
corpus, a trainer checkpoint, an impact file and an impact checkpoint, then
derives many broken variants of each, deterministically from --seed:
truncations, bit flips, huge length fields, wrong dtypes / shapes / offsets
in safetensors JSON headers, wrong types and values in config.json and
tokenizer.json, header fields of the checksummed checkpoints changed with
the checksum recomputed (so the reader's later checks are reached), missing
files, empty files, directories where files are expected. It runs the real
commands on them (eval, generate, impact, quantize, analyze, export,
train --resume, impact --resume) and asserts for every run:

  * no crash: the exit status is 0, 1 or 2 (never a signal, never >= 128),
    and the run ends within its timeout;
  * a non-zero exit prints an error message on stderr (more than the
    backend line);
  * the inputs are untouched (SHA-256 of every input file before and after;
    for the checkpoints a command may legitimately rewrite on success, the
    check applies when it failed);
  * a failed run leaves no output and no temp file behind.

  tests/hostile_cli_test.py /path/to/cherryq [--seed N] [--jobs N] [--keep]
Exits 0 when every run passed, 1 otherwise (listing the failures).
"""
import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("cherryq")
ap.add_argument("--seed", type=int, default=8)
ap.add_argument("--jobs", type=int, default=2)
ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
args = ap.parse_args()
CQ = os.path.abspath(args.cherryq)
rng = random.Random(args.seed)
T = tempfile.mkdtemp(prefix="cqhostile.")
ENV = dict(os.environ, OMP_WAIT_POLICY="passive", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
t_start = time.time()


def run(cmd, timeout=120):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, timeout=timeout)


def must(cmd):
    p = run(cmd)
    if p.returncode != 0:
        sys.stdout.write("setup failed: %s\n%s" % (" ".join(cmd), p.stderr.decode(errors="replace")))
        sys.exit(1)


# ------------------------------------------------------------ the valid inputs
B = os.path.join(T, "base")
os.makedirs(B)
corpus = os.path.join(B, "c.txt")
with open(corpus, "w") as f:
    for i in range(1, 700):
        f.write("the number %d is followed by %d and then %d. " % (i, i + 1, i + 2))
MODEL_ARGS = ["--vocab", "300", "--dim", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--ffn", "64",
              "--seq", "32", "--batch", "4", "--lr", "0.005", "--warmup", "1", "--eval-every", "0", "--threads", "1",
              "--seed", "3"]
fp = os.path.join(B, "fp")
must([CQ, "train", "--data", corpus, *MODEL_ARGS, "--steps", "4", "--save-every", "2", "--out", fp])
qdir = os.path.join(B, "q")
must([CQ, "quantize", "--model", fp, "--data", corpus, "--out", qdir, "--method", "rtn", "--select", "magnitude",
      "--bits", "4", "--group", "32", "--seqlen", "16", "--threads", "1"])
shutil.rmtree(qdir + ".ckpt", ignore_errors=True)
imp = os.path.join(B, "imp.st")
must([CQ, "impact", "--model", fp, "--data", corpus, "--out", imp, "--samples", "2", "--seqlen", "16", "--threads", "1"])
# an impact checkpoint of an interrupted run: the output cannot be written
# (its directory does not exist), so the checkpoint of 3 of 4 windows stays
ick = os.path.join(B, "imp.ckpt")
p = run([CQ, "impact", "--model", fp, "--data", corpus, "--out", os.path.join(B, "nodir", "x.st"), "--samples", "4",
         "--seqlen", "16", "--threads", "1", "--ckpt", ick, "--ckpt-every", "1"])
if p.returncode != 1 or not os.path.isfile(ick):
    print("setup: expected an impact checkpoint left by a failed run (rc %d)" % p.returncode)
    sys.exit(1)
trainer_ckpt = os.path.join(fp, "checkpoint", "trainer.ckpt")


def sha_tree(path):
    """sha256 of a file, or of every file under a directory (with names)"""
    h = hashlib.sha256()
    if os.path.islink(path):
        h.update(b"L" + os.readlink(path).encode())
    elif os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for n in sorted(files) + sorted(dirs):
                q = os.path.join(root, n)
                h.update(os.path.relpath(q, path).encode() + b"\0")
                if os.path.isfile(q) and not os.path.islink(q):
                    with open(q, "rb") as f:
                        h.update(f.read())
    elif os.path.exists(path):
        with open(path, "rb") as f:
            h.update(f.read())
    else:
        h.update(b"absent")
    return h.hexdigest()


base_sha = sha_tree(B)

# ------------------------------------------------------------ mutators
V = os.path.join(T, "variants")
os.makedirs(V)
nvar = [0]


def new_variant_path(kind, name):
    nvar[0] += 1
    d = os.path.join(V, "%04d_%s" % (nvar[0], kind))
    os.makedirs(d)
    return os.path.join(d, name)


def read(p):
    with open(p, "rb") as f:
        return f.read()


def binary_mutations(data, n_flips=6):
    """(description, bytes) pairs: truncations, bit flips, 0xff runs, junk"""
    out = []
    for cut in sorted({0, 1, 7, 8, 9, 16, len(data) // 3, len(data) // 2, len(data) - 8, len(data) - 1}):
        if 0 <= cut < len(data):
            out.append(("truncated to %d of %d bytes" % (cut, len(data)), data[:cut]))
    for i in range(n_flips):
        b = bytearray(data)
        nb = rng.randint(1, 8)
        where = []
        for _ in range(nb):
            # half the flips in the first 512 bytes (headers), half anywhere
            pos = rng.randrange(min(len(b), 512)) if rng.random() < 0.5 else rng.randrange(len(b))
            bit = rng.randrange(8)
            b[pos] ^= 1 << bit
            where.append(pos)
        out.append(("%d bit flip(s) at %s" % (nb, where), bytes(b)))
    b = bytearray(data)
    pos = rng.randrange(max(1, len(b) - 8))
    b[pos:pos + 8] = b"\xff" * 8
    out.append(("8 bytes of 0xff at %d" % pos, bytes(b)))
    out.append(("random junk appended", data + bytes(rng.randrange(256) for _ in range(37))))
    return out


def st_split(data):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def st_join(hdr, body, raw=None):
    h = raw if raw is not None else json.dumps(hdr).encode()
    return struct.pack("<Q", len(h)) + h + body


def safetensors_mutations(data):
    out = binary_mutations(data)
    n = struct.unpack("<Q", data[:8])[0]
    for v in (0, 1, 2, n + 1, n - 1, len(data), len(data) - 7, 2 ** 31, 2 ** 40, 2 ** 63, 2 ** 64 - 1):
        out.append(("header length field %d (was %d)" % (v, n), struct.pack("<Q", v) + data[8:]))
    hdr, body = st_split(data)
    names = [k for k in hdr if k != "__metadata__"]
    for _ in range(12):
        h = json.loads(json.dumps(hdr))
        k = rng.choice(names)
        t = h[k]
        what = rng.choice(["dtype", "shape", "offsets", "drop", "type"])
        if what == "dtype":
            t["dtype"] = rng.choice(["F16", "BF16", "I8", "U8", "U16", "I32", "F64", "BOOL", "X", "", 5, None])
            desc = "dtype of %s -> %r" % (k, t["dtype"])
        elif what == "shape":
            s = t["shape"]
            t["shape"] = rng.choice([[], [0], [-1] + s[1:], [2 ** 40, 2 ** 40], [1], s[::-1], s + [1], s + [2],
                                     [s[0] * 2] + s[1:], ["a"], 7, [2 ** 63]])
            desc = "shape of %s %r -> %r" % (k, s, t["shape"])
        elif what == "offsets":
            a, b = t["data_offsets"]
            t["data_offsets"] = rng.choice([[0, 0], [-1, b], [a, 2 ** 62], [b, a], [a, a + 1], [a + 1, b + 1],
                                            [a, b, 3], [a], "x", [len(body), len(body) + 4]])
            desc = "data_offsets of %s [%d, %d] -> %r" % (k, a, b, t["data_offsets"])
        elif what == "drop":
            del h[k]
            desc = "tensor %s removed from the header" % k
        else:
            h[k] = rng.choice([[], "x", 3, None])
            desc = "entry %s -> %r" % (k, h[k])
        out.append((desc, st_join(h, body)))
    raw = json.dumps(hdr).encode()
    out.append(("header JSON truncated", st_join(None, body, raw[: len(raw) // 2])))
    out.append(("header JSON is an array", st_join(None, body, b"[" + raw + b"]")))
    out.append(("header JSON nested 100000 deep", st_join(None, body, b"[" * 100000 + b"]" * 100000)))
    out.append(("header with invalid UTF-8 in a name", st_join(None, body, raw.replace(b"model.", b"\xff\xfe.", 1))))
    if "__metadata__" in hdr:
        h = json.loads(json.dumps(hdr))
        h["__metadata__"] = {k: rng.choice(["99", "-1", "", "x" * 300]) for k in h["__metadata__"]}
        out.append(("metadata values changed %r" % h["__metadata__"], st_join(h, body)))
    return out


BAD_VALUES = [-1, 0, 1, 3, 2 ** 31, 2 ** 63, 1e308, -1e308, 0.5, "x", "", None, [], {}, True]


def json_mutations(data, n_values=14):
    out = binary_mutations(data, n_flips=3)
    out.append(("invalid UTF-8", data.replace(b'"', b'"\xc3\x28', 1)))
    out.append(("not JSON", b"this is not json"))
    out.append(("JSON nested 100000 deep", b"[" * 100000 + b"]" * 100000))
    out.append(("JSON array", b"[1, 2, 3]"))
    doc = json.loads(data)
    paths = []

    def walk(o, p, depth):
        if depth > 3:
            return
        if isinstance(o, dict):
            for k, v in list(o.items())[:60]:
                paths.append(p + [k])
                walk(v, p + [k], depth + 1)
        elif isinstance(o, list) and o:
            paths.append(p + [0])
            walk(o[0], p + [0], depth + 1)

    walk(doc, [], 0)
    for _ in range(n_values):
        d = json.loads(data)
        path = rng.choice(paths)
        o = d
        for k in path[:-1]:
            o = o[k]
        if rng.random() < 0.2 and isinstance(o, dict):
            del o[path[-1]]
            desc = "%s removed" % ".".join(map(str, path))
        else:
            v = rng.choice(BAD_VALUES)
            o[path[-1]] = v
            desc = "%s -> %r" % (".".join(map(str, path)), v)
        out.append((desc, json.dumps(d).encode()))
    return out


def fnv1a64(b):
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def hash32(b):
    h = 0xcbf29ce484222325
    n4 = len(b) // 4 * 4
    for (w,) in struct.iter_unpack("<I", b[:n4]):
        h = ((h ^ w) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    for x in b[n4:]:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def rechecksummed(data, offsets, checksum):
    """u64 header fields changed with the trailing checksum recomputed"""
    out = []
    for off in offsets:
        old = struct.unpack_from("<Q", data, off)[0]
        for v in (0, 1, old + 1, old - 1 if old else 2, 2 ** 31, 2 ** 63, 2 ** 64 - 1):
            b = bytearray(data[:-8])
            struct.pack_into("<Q", b, off, v & 0xFFFFFFFFFFFFFFFF)
            out.append(("u64 at %d %d -> %d, checksum fixed" % (off, old, v & 0xFFFFFFFFFFFFFFFF),
                        bytes(b) + struct.pack("<Q", checksum(bytes(b)))))
    return out


def structural(kind_ok_as_dir=False):
    out = [("empty file", b""), ("missing", None), ("a directory", "DIR")]
    return out


# ------------------------------------------------------------ the runs
runs = []   # (description, argv, watched paths {path: check_always}, outputs, rc_policy)
O = os.path.join(T, "out")
os.makedirs(O)


def out_path(name):
    d = os.path.join(O, "r%05d" % len(runs))
    return d, os.path.join(d, name)


def add(desc, argv, watch, outputs, rundir):
    runs.append({"desc": desc, "argv": argv, "watch": watch, "outputs": outputs, "rundir": rundir})


def write_variant(path, content):
    if content is None:
        return
    if content == "DIR":
        os.makedirs(path)
        with open(os.path.join(path, "inside"), "w") as f:
            f.write("x")
        return
    with open(path, "wb") as f:
        f.write(content)


def model_dir_variant(src, fname, content, kind):
    """copy of model directory src with fname replaced by content"""
    d = new_variant_path(kind, "model")
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("checkpoint"))
    os.remove(os.path.join(d, fname))
    write_variant(os.path.join(d, fname), content)
    return d


EVAL = ["--seqlen", "16", "--max-windows", "2", "--threads", "1"]

# 1. the full-precision model directory
for fname, muts in (("model.safetensors", safetensors_mutations(read(os.path.join(fp, "model.safetensors")))),
                    ("config.json", json_mutations(read(os.path.join(fp, "config.json")), 24)),
                    ("tokenizer.json", json_mutations(read(os.path.join(fp, "tokenizer.json")), 16))):
    for desc, content in muts + structural():
        m = model_dir_variant(fp, fname, content, "fp")
        d = "fp model, %s: %s" % (fname, desc)
        add(d, [CQ, "eval", "--model", m, "--data", corpus, *EVAL], {m: True}, [], None)
        which = rng.randrange(3)
        if which == 0:
            add(d, [CQ, "generate", "--model", m, "--prompt", "the number", "--max-tokens", "3", "--threads", "1"],
                {m: True}, [], None)
        elif which == 1:
            rd, o = out_path("imp.st")
            add(d, [CQ, "impact", "--model", m, "--data", corpus, "--out", o, "--samples", "2", "--seqlen", "16",
                    "--threads", "1"], {m: True}, [o], rd)
        else:
            rd, o = out_path("q")
            add(d, [CQ, "quantize", "--model", m, "--data", corpus, "--out", o, "--method", "rtn", "--bits", "4",
                    "--group", "32", "--seqlen", "16", "--threads", "1"], {m: True}, [o], rd)
# a model path that is a file, a missing path, an empty directory
for desc, content in (("a plain file", b"not a model"), ("missing", None), ("an empty directory", "EMPTYDIR")):
    m = new_variant_path("fp", "model")
    if content == "EMPTYDIR":
        os.makedirs(m)
    else:
        write_variant(m, content)
    add("--model is %s" % desc, [CQ, "eval", "--model", m, "--data", corpus, *EVAL], {m: True}, [], None)

# 2. the quantized directory
for fname, muts in (("model.safetensors", safetensors_mutations(read(os.path.join(qdir, "model.safetensors")))),
                    ("config.json", json_mutations(read(os.path.join(qdir, "config.json")), 24))):
    for desc, content in muts + structural():
        m = model_dir_variant(qdir, fname, content, "q")
        d = "quantized dir, %s: %s" % (fname, desc)
        add(d, [CQ, "eval", "--model", m, "--data", corpus, *EVAL], {m: True}, [], None)
        if rng.random() < 0.5:
            rd, o = out_path("fp16")
            add(d, [CQ, "export", "--dequantize", "--model", m, "--out", o], {m: True}, [o], rd)
        else:
            add(d, [CQ, "generate", "--model", m, "--prompt", "the", "--max-tokens", "3", "--threads", "1"],
                {m: True}, [], None)
# quantization_config fields one by one
qcfg = json.loads(read(os.path.join(qdir, "config.json")))
for k in list(qcfg["quantization_config"].keys()):
    for v in rng.sample(BAD_VALUES, 2):
        c = json.loads(json.dumps(qcfg))
        c["quantization_config"][k] = v
        m = model_dir_variant(qdir, "config.json", json.dumps(c).encode(), "q")
        add("quantized dir, quantization_config.%s -> %r" % (k, v),
            [CQ, "eval", "--model", m, "--data", corpus, *EVAL], {m: True}, [], None)

# regressions: every number of config.json and of quantization_config set to
# +-1e308 (found under UBSan: models/memplan.c converted 1e308 to int64)
fcfg = json.loads(read(os.path.join(fp, "config.json")))
for src, cfg, sub in ((qdir, qcfg, "quantization_config"), (fp, fcfg, None)):
    keys = cfg[sub] if sub else cfg
    for k in [k for k, v in keys.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]:
        for v in (1e308, -1e308):
            c = json.loads(json.dumps(cfg))
            (c[sub] if sub else c)[k] = v
            m = model_dir_variant(src, "config.json", json.dumps(c).encode(), "cfgnum")
            add("config.json %s%s -> %r" % (sub + "." if sub else "", k, v),
                [CQ, "eval", "--model", m, "--data", corpus, *EVAL], {m: True}, [], None)

# 3. a tokenizer given with --tokenizer
for desc, content in json_mutations(read(os.path.join(fp, "tokenizer.json")), 10) + structural():
    tk = new_variant_path("tok", "tokenizer.json")
    write_variant(tk, content)
    add("--tokenizer %s" % desc, [CQ, "eval", "--model", fp, "--tokenizer", tk, "--data", corpus, *EVAL],
        {tk: True}, [], None)

# 4. corpora
craw = read(corpus)
corpora = [(d, c, "c.txt") for d, c in binary_mutations(craw, 2)]
corpora += [("binary junk", bytes(rng.randrange(256) for _ in range(3000)), "c.txt"),
            ("NUL bytes", b"\0" * 500, "c.txt"),
            ("invalid UTF-8", b"\xff\xfe\xc3\x28" * 300, "c.txt"),
            ("one character", b"x", "c.txt"),
            ("JSONL, bad line 2", b'{"text": "the number 1"}\n{"text": \n', "c.jsonl"),
            ("JSONL, text not a string", b'{"text": 5}\n', "c.jsonl"),
            ("JSONL, no text field", b'{"foo": "bar"}\n', "c.jsonl"),
            ("JSONL nested 100000 deep", b"{" + b'"a":[' * 50000 + b"]" * 50000 + b"}\n", "c.jsonl"),
            ("JSONL starting with { but plain text", b"{ not json at all\n", "c.txt")]
corpora += [(d, c, "c.txt") for d, c in structural()]
for desc, content, name in corpora:
    cp = new_variant_path("corpus", name)
    write_variant(cp, content)
    d = "corpus %s" % desc
    add(d, [CQ, "eval", "--model", fp, "--data", cp, *EVAL], {cp: True}, [], None)
    rd, o = out_path("imp.st")
    add(d, [CQ, "impact", "--model", fp, "--data", cp, "--out", o, "--samples", "2", "--seqlen", "16",
            "--threads", "1"], {cp: True}, [o], rd)
    rd, o = out_path("t")
    add(d, [CQ, "train", "--data", cp, *MODEL_ARGS, "--steps", "2", "--out", o], {cp: True}, [], rd)
    rd, o = out_path("q")
    add(d, [CQ, "quantize", "--model", fp, "--data", cp, "--out", o, "--method", "gptq", "--bits", "4", "--group",
            "32", "--seqlen", "16", "--samples", "2", "--threads", "1"], {cp: True}, [o], rd)

# 5. trainer checkpoints: train --resume in a copy of the model directory
tdata = read(trainer_ckpt)
tmuts = binary_mutations(tdata) + rechecksummed(tdata, [8, 16, 24, 48, 72], fnv1a64) + structural()
for desc, content in tmuts:
    d = new_variant_path("trainer", "run")
    shutil.copytree(fp, d)
    ck = os.path.join(d, "checkpoint", "trainer.ckpt")
    os.remove(ck)
    write_variant(ck, content)
    add("trainer.ckpt %s" % desc, [CQ, "train", "--data", corpus, *MODEL_ARGS, "--steps", "6", "--out", d,
                                   "--resume"], {ck: False}, [], None)

# 6. impact files: quantize --impact and analyze --impact
for desc, content in safetensors_mutations(read(imp)) + structural():
    f = new_variant_path("impact", "imp.st")
    write_variant(f, content)
    d = "impact file %s" % desc
    rd, o = out_path("q")
    add(d, [CQ, "quantize", "--model", fp, "--data", corpus, "--out", o, "--method", "rtn", "--select", "impact",
            "--impact", f, "--bits", "4", "--group", "32", "--seqlen", "16", "--threads", "1"], {f: True}, [o], rd)
    rd, o = out_path("an")
    add(d, [CQ, "analyze", "--model", fp, "--impact", f, "--out-dir", o], {f: True}, [], rd)

# 7. impact checkpoints: impact --resume
idata = read(ick)
imuts = binary_mutations(idata) + rechecksummed(idata, [8, 16, 24, 32, 40, 48, 56, 64 + 96, 64 + 104], hash32)
imuts += structural()
for desc, content in imuts:
    f = new_variant_path("ickpt", "imp.ckpt")
    write_variant(f, content)
    rd, o = out_path("imp.st")
    add("impact checkpoint %s" % desc, [CQ, "impact", "--model", fp, "--data", corpus, "--out", o, "--samples", "4",
                                        "--seqlen", "16", "--threads", "1", "--ckpt", f, "--ckpt-every", "1",
                                        "--resume"], {f: False}, [o], rd)

# ------------------------------------------------------------ run them
# the backend line and progress lines ("impact 3/4 ...", "step 6: ...") are
# not error messages
NOISE = re.compile(r"^(cherryq: backend |\S+ \d+/\d+ |step \d+: )")


def one(i, r):
    if r["rundir"]:
        os.makedirs(r["rundir"], exist_ok=True)
    before = {p: sha_tree(p) for p in r["watch"]}
    t0 = time.time()
    try:
        p = run(r["argv"], timeout=60)
        rc, err = p.returncode, p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        rc, err = "timeout", ""
    dt = time.time() - t0
    problems = []
    if rc not in (0, 1, 2):
        problems.append("exit status %s (%s)" % (rc, "signal %d" % -rc if isinstance(rc, int) and rc < 0 else
                                                 "not 0, 1 or 2"))
    if rc in (1, 2):
        msgs = [ln for ln in err.splitlines() if ln.strip() and not NOISE.match(ln)]
        if not msgs:
            problems.append("exit %d without an error message on stderr" % rc)
    for pth, always in r["watch"].items():
        if (always or rc != 0) and sha_tree(pth) != before[pth]:
            problems.append("input %s was changed" % os.path.relpath(pth, T))
    if rc != 0:
        for o in r["outputs"]:
            if os.path.exists(o):
                problems.append("a failed run left its output %s" % os.path.relpath(o, T))
        if r["rundir"] and os.path.isdir(r["rundir"]):
            left = [n for n in os.listdir(r["rundir"]) if ".tmp" in n]
            if left:
                problems.append("temp files left: %s" % left)
    if r["rundir"]:
        shutil.rmtree(r["rundir"], ignore_errors=True)
    tail = "\n".join(err.splitlines()[-4:])
    return i, rc, dt, problems, tail


results = [None] * len(runs)
with cf.ThreadPoolExecutor(max_workers=args.jobs) as ex:
    for i, rc, dt, problems, tail in ex.map(lambda ir: one(*ir), enumerate(runs)):
        results[i] = (rc, dt, problems, tail)

fails = 0
by_cmd = {}
for r, (rc, dt, problems, tail) in zip(runs, results):
    cmd = r["argv"][1]
    s = by_cmd.setdefault(cmd, {})
    s[rc] = s.get(rc, 0) + 1
    if problems:
        fails += 1
        print("FAIL: %s\n  cherryq %s\n  %s\n  stderr: %s" % (r["desc"], " ".join(
            os.path.relpath(a, T) if a.startswith(T) else a for a in r["argv"][1:]), "; ".join(problems),
            tail.replace("\n", "\n          ")))
if sha_tree(B) != base_sha:
    fails += 1
    print("FAIL: the valid base inputs were changed")
print("%d runs on %d variants (seed %d) in %.0f s; exit codes per command:" % (len(runs), nvar[0], args.seed,
                                                                             time.time() - t_start))
for cmd, s in sorted(by_cmd.items()):
    print("  %-9s %s" % (cmd, "  ".join("rc=%s: %d" % (k, v) for k, v in sorted(s.items(), key=str))))
if not args.keep:
    shutil.rmtree(T, ignore_errors=True)
else:
    print("kept", T)
print("%d failure(s)" % fails)
sys.exit(1 if fails else 0)
