#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/.

Seeds are small valid (and a few nearly valid) inputs of each format, made
here with the standard library only, plus the small checked-in fixtures of
tests/fixtures. Input layouts are those documented at the top of each
tests/fuzz/fuzz_<target>.c. Deterministic: rerunning rewrites the same
files. Usage: python3 tools/fuzz_seeds.py [OUTDIR [CHECKPOINT_BIN [LLAMA_LOAD_BIN]]]
(default tests/fuzz/corpus). The trainer checkpoint seeds and the quantized
model directory seed are real files written by the library: the checkpoint
and llama_load targets write them (CQ_FUZZ_WRITE_SEED), given their replay
or fuzz binaries, e.g. build/tests/fuzz/replay_checkpoint."""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fuzz", "corpus")

ST_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I16": 2, "U16": 2, "U8": 1, "I8": 1, "BOOL": 1,
           "F8_E4M3": 1, "F8_E5M2": 1, "U32": 4, "F64": 8, "I64": 8, "U64": 8}


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixture(*p):
    with open(os.path.join(FIX, *p), "rb") as f:
        return f.read()


def rng(seed):
    s = seed
    while True:
        s = (s * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        yield ((s >> 33) / 2**31) * 0.2 - 0.1


def values(n, dtype, seed=1):
    g = rng(seed)
    v = [next(g) for _ in range(n)]
    if dtype == "F32":
        return struct.pack("<%df" % n, *v)
    if dtype == "F16":
        return struct.pack("<%de" % n, *v)
    if dtype == "BF16":
        return b"".join(struct.pack("<f", x)[2:] for x in v)
    return bytes((i * 37) & 0xFF for i in range(n * ST_SIZE[dtype]))


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape, bytes or None)."""
    hdr, blobs, off = {}, [], 0
    if metadata is not None:
        hdr["__metadata__"] = metadata
    for name, dt, shape, data in tensors:
        n = 1
        for d in shape:
            n *= d
        if data is None:
            data = values(n, dt)
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    js = json.dumps(hdr, separators=(",", ":")).encode()
    if pad:
        js += b" " * ((8 - (8 + len(js)) % 8) % 8)
    return struct.pack("<Q", len(js)) + js + b"".join(blobs)


# ------------------------------------------------------------ GGUF
GT = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "bool": 7, "str": 8, "arr": 9,
      "u64": 10, "i64": 11, "f64": 12}
GFMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == GT["str"]:
        return gstr(v)
    if t == GT["arr"]:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        return out + b"".join(gval(et, x) for x in items)
    return struct.pack(GFMT[t], v)


def gguf(kvs, tensors, version=3, align=32):
    """kvs: list of (key, type, value); tensors: (name, ggml_type, ne list, bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + gval(t, v)
    off, blobs = 0, []
    for name, gt, ne, data in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", gt, off)
        blobs.append(data)
        off += len(data)
        off = (off + align - 1) // align * align
    out += b"\0" * ((align - len(out) % align) % align)
    for b in blobs:
        out += b + b"\0" * ((align - len(b) % align) % align)
    return out


# ------------------------------------------------------------ tiny LLaMA
LIN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
       "mlp.up_proj", "mlp.down_proj"]
GG = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


def tiny_cfg(tied):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
            "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1, "vocab_size": 10, "max_position_embeddings": 16,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": tied,
            "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}


def tiny_params(c):
    d, f, v, hd = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["hidden_size"] // c["num_attention_heads"]
    qd, kvd = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    ps = [("model.embed_tokens.weight", [v, d])]
    for l in range(c["num_hidden_layers"]):
        ps.append(("model.layers.%d.input_layernorm.weight" % l, [d]))
        shapes = [[qd, d], [kvd, d], [kvd, d], [d, qd], [f, d], [f, d], [d, f]]
        for i, nm in enumerate(LIN):
            ps.append(("model.layers.%d.%s.weight" % (l, nm), shapes[i]))
        ps.append(("model.layers.%d.post_attention_layernorm.weight" % l, [d]))
    ps.append(("model.norm.weight", [d]))
    if not c["tie_word_embeddings"]:
        ps.append(("lm_head.weight", [v, d]))
    return ps


def hf_seed(c, dtype="F32"):
    st = safetensors([(n, dtype, s, None) for n, s in tiny_params(c)], {"format": "pt"})
    return json.dumps(c, indent=1).encode() + b"\n==file==\n" + st


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")
    l, rest = parts[2], ".".join(parts[3:])
    if rest == "input_layernorm.weight":
        return "blk.%s.attn_norm.weight" % l
    if rest == "post_attention_layernorm.weight":
        return "blk.%s.ffn_norm.weight" % l
    return "blk.%s.%s.weight" % (l, GG[LIN.index(rest[:-len(".weight")])])


SPM_TOKENS = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + \
    ["\u2581", "\u2581t", "h", "e", "\u2581th", "\u2581the", "a", "n", "d", "\u2581a", "\u2581and", "o", "r",
     "\u2581o", "\u2581or", "i", "s", "\u2581is", "\u2581I", "\u2581In", "\u2581b", "g", "\u2581be"]


def gguf_model(c, with_tok=True, dtype=0):
    kvs = [("general.architecture", GT["str"], "llama"),
           ("llama.context_length", GT["u32"], c["max_position_embeddings"]),
           ("llama.embedding_length", GT["u32"], c["hidden_size"]),
           ("llama.block_count", GT["u32"], c["num_hidden_layers"]),
           ("llama.feed_forward_length", GT["u32"], c["intermediate_size"]),
           ("llama.attention.head_count", GT["u32"], c["num_attention_heads"]),
           ("llama.attention.head_count_kv", GT["u32"], c["num_key_value_heads"]),
           ("llama.attention.layer_norm_rms_epsilon", GT["f32"], 1e-5),
           ("llama.rope.freq_base", GT["f32"], 10000.0)]
    if with_tok:
        toks = SPM_TOKENS[:]
        kvs += [("tokenizer.ggml.model", GT["str"], "llama"),
                ("tokenizer.ggml.tokens", GT["arr"], (GT["str"], toks)),
                ("tokenizer.ggml.scores", GT["arr"], (GT["f32"], [-float(i) for i in range(len(toks))])),
                ("tokenizer.ggml.token_type", GT["arr"],
                 (GT["i32"], [2, 3, 3] + [6] * 256 + [1] * (len(toks) - 259))),
                ("tokenizer.ggml.bos_token_id", GT["u32"], 1),
                ("tokenizer.ggml.eos_token_id", GT["u32"], 2),
                ("tokenizer.ggml.unknown_token_id", GT["u32"], 0)]
    ts = []
    for n, s in tiny_params(c):
        cnt = 1
        for x in s:
            cnt *= x
        ts.append((gguf_name(n), dtype, list(reversed(s)), values(cnt, {0: "F32", 1: "F16", 30: "BF16"}[dtype])))
    return gguf(kvs, ts)


def main():
    # ---------------------------------------------------- safetensors
    t = "safetensors"
    put(t, "fixture_golden", fixture("golden.safetensors"))
    put(t, "fixture_shard1", fixture("sharded", "model-00001-of-00002.safetensors"))
    put(t, "fixture_shard2", fixture("sharded", "model-00002-of-00002.safetensors"))
    put(t, "all_dtypes", safetensors([("t_" + dt.lower(), dt, [2, 3], None) for dt in ST_SIZE],
                                     {"format": "pt", "k": "v"}))
    put(t, "scalar_empty", safetensors([("s", "F32", [], None), ("z", "F16", [0, 4], b""),
                                        ("e", "U8", [0], b"")]))
    put(t, "unpadded", safetensors([("w", "BF16", [4, 4], None)], pad=False))
    put(t, "empty_header", struct.pack("<Q", 2) + b"{}")
    put(t, "bad_offsets", struct.pack("<Q", 64) +
        b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'.ljust(64) + bytes(8))
    # ---------------------------------------------------- sharded index
    t = "st_index"
    s1 = fixture("sharded", "model-00001-of-00002.safetensors")
    s2 = fixture("sharded", "model-00002-of-00002.safetensors")
    idx = json.loads(fixture("sharded", "model.safetensors.index.json"))
    wm = {k: ("a.safetensors" if v.endswith("00001-of-00002.safetensors") else "b.safetensors")
          for k, v in idx["weight_map"].items()}
    idx["weight_map"] = wm
    sep = b"\n==shard==\n"
    put(t, "fixture_sharded", json.dumps(idx, indent=1).encode() + sep + s1 + sep + s2)
    one = {"metadata": {"total_size": 24}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors"}}
    put(t, "one_shard", json.dumps(one).encode() + sep + safetensors([("x", "F32", [2], None),
                                                                      ("y", "F16", [4], None)]))
    put(t, "escape", b'{"weight_map":{"x":"../a.safetensors","y":"/etc/passwd"}}' + sep + s1)
    put(t, "dup", json.dumps({"weight_map": {"model.embed_tokens.weight": "a.safetensors",
                                             "lm_head.weight": "b.safetensors"}}).encode() + sep + s1 + sep + s1)
    # ---------------------------------------------------- GGUF
    t = "gguf"
    put(t, "fixture_v2", fixture("golden_v2.gguf"))
    put(t, "fixture_v3", fixture("golden_v3.gguf"))
    kvs = [("k.%s" % n, GT[n], v) for n, v in [("u8", 7), ("i8", -7), ("u16", 700), ("i16", -700), ("u32", 7 << 20),
                                              ("i32", -(7 << 20)), ("f32", 1.5), ("bool", 1), ("u64", 1 << 40),
                                              ("i64", -(1 << 40)), ("f64", 2.25)]]
    kvs += [("k.str", GT["str"], "hello"), ("general.alignment", GT["u32"], 64),
            ("k.arr_i32", GT["arr"], (GT["i32"], [1, -2, 3])), ("k.arr_str", GT["arr"], (GT["str"], ["a", "", "bc"])),
            ("k.arr_f64", GT["arr"], (GT["f64"], [0.5, -1.0]))]
    ts = [("f32", 0, [4, 2], values(8, "F32")), ("f16", 1, [8], values(8, "F16")),
          ("bf16", 30, [2, 2, 2], values(8, "BF16")), ("q8", 8, [32], bytes(34)), ("q4k", 12, [256], bytes(144))]
    put(t, "all_types", gguf(kvs, ts, align=64))
    put(t, "v2_empty", gguf([], [], version=2))
    put(t, "tiny_model_tok", gguf_model(tiny_cfg(False)))
    # ---------------------------------------------------- config.json
    t = "hfconfig"
    for n in ["config_gpt2", "config_llama32", "config_minimal", "config_mistral", "config_tinyllama"]:
        put(t, n, fixture(n + ".json"))
    put(t, "tiny_rope_scaling", json.dumps(dict(tiny_cfg(True), rope_scaling={"rope_type": "llama3", "factor": 8.0},
                                                eos_token_id=[2, 3], head_dim=4)))
    # ---------------------------------------------------- tokenizer.json
    t = "tokenizer_json"
    put(t, "fixture_llama_small", fixture("tok", "llama_small.json"))
    put(t, "fixture_bytelevel_kjv", fixture("tok", "bytelevel_kjv.json"))
    b2u = {}
    n = 0
    for b in range(256):
        if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255:
            b2u[b] = chr(b)
        else:
            b2u[b] = chr(256 + n)
            n += 1
    vocab = {b2u[b]: b for b in range(256)}
    vocab.update({"<s>": 256, "</s>": 257, "th": 258, "the": 259, "\u0120the": 260})
    byte_tok = {"version": "1.0", "added_tokens": [
        {"id": 256, "content": "<s>", "special": True}, {"id": 257, "content": "</s>", "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "x"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": ["t h", "th e", "\u0120 the"]}}
    put(t, "tiny_bytelevel", json.dumps(byte_tok))
    spm_vocab = {tok: i for i, tok in enumerate(SPM_TOKENS)}
    merges = ["\u2581 t", "t h", "\u2581t h", "\u2581th e", "a n", "an d", "\u2581 a", "\u2581a nd"]
    spm_tok = {"version": "1.0", "added_tokens": [{"id": 0, "content": "<unk>", "special": True},
                                                  {"id": 1, "content": "<s>", "special": True},
                                                  {"id": 2, "content": "</s>", "special": True}],
               "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                                  {"type": "Replace", "pattern": {"String": " "},
                                                                   "content": "\u2581"}]},
               "pre_tokenizer": None,
               "decoder": {"type": "Sequence", "decoders": []},
               "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": True, "fuse_unk": True,
                         "vocab": spm_vocab, "merges": merges}}
    put(t, "tiny_spm", json.dumps(spm_tok, ensure_ascii=False))
    # ---------------------------------------------------- SPM arrays
    t = "tokenizer_spm"
    rows = [l.split("\t") for l in fixture("tok", "llama_small.tsv").decode().splitlines() if l]

    def spm_input(rows, flags, bos, eos, unk, text):
        ents = []
        for r in rows:
            score = max(-128, min(127, int(round(float(r[1]) * 4))))
            ents.append(bytes([ord("0") + int(r[2]), score & 0xFF]) + r[3].encode())
        return bytes([flags, bos, eos, unk]) + b"\n".join(ents) + b"\n\n" + text

    put(t, "fixture_llama_small", spm_input(rows, 3, 1, 2, 0, b"In the beginning God created the heaven."))
    small = [[str(i), str(-i / 4), "1", tok] for i, tok in enumerate(SPM_TOKENS)]
    put(t, "tiny_no_types", spm_input(small, 1, 1, 2, 0, b"the and or is be"))
    put(t, "tiny_no_scores", spm_input(small[:40], 2, 0xFF, 0xFF, 0, "caf\u00e9 \u2581".encode()))
    # ---------------------------------------------------- model loading
    t = "llama_load"
    put(t, "tiny_hf_untied_f32", hf_seed(tiny_cfg(False)))
    put(t, "tiny_hf_tied_bf16", hf_seed(tiny_cfg(True), "BF16"))
    put(t, "tiny_hf_f16", hf_seed(dict(tiny_cfg(False), torch_dtype="float16"), "F16"))
    put(t, "tiny_gguf_f32", gguf_model(tiny_cfg(False), with_tok=False))
    put(t, "tiny_gguf_tied_f16_tok", gguf_model(tiny_cfg(True), dtype=1))
    put(t, "fixture_tied_gguf", fixture("llama", "tied.gguf"))
    # ---------------------------------------------------- CLI readers
    t = "cli_readers"
    put(t, "corpus_txt", b"In the beginning God created the heaven and the earth.\n\nAnd the earth was "
        b"without form, and void.\n")
    put(t, "corpus_jsonl", b'{"text": "first record"}\n\n{"text": "caf\\u00e9 \\n second", "id": 2}\n'
        b'{"text": ""}\n')
    put(t, "corpus_jsonl_bad", b'{"text": 3}\n{"text": "x"}\n')
    put(t, "gguf_tokenizer", gguf_model(tiny_cfg(True)))
    # checkpoint seeds are real checkpoints: written by the target itself
    # (CQ_FUZZ_WRITE_SEED, see tests/fuzz/fuzz_checkpoint.c) when given
    # its binary: python3 tools/fuzz_seeds.py OUTDIR REPLAY_CHECKPOINT_BINARY
    if len(sys.argv) > 2:
        import subprocess
        d = os.path.join(OUT, "checkpoint")
        os.makedirs(d, exist_ok=True)
        env = dict(os.environ, CQ_FUZZ_WRITE_SEED=d)
        subprocess.run([sys.argv[2], os.path.join(OUT, "cli_readers", "corpus_txt")], env=env, check=True)
    # the quantized-directory seed is written by the llama_load target
    # (cq_qmodel_save on a tiny model): third argument, its binary
    if len(sys.argv) > 3:
        import subprocess
        env = dict(os.environ, CQ_FUZZ_WRITE_SEED=os.path.join(OUT, "llama_load"))
        subprocess.run([sys.argv[3], os.path.join(OUT, "llama_load", "tiny_gguf_f32")], env=env, check=True)


if __name__ == "__main__":
    main()
