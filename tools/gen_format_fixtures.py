#!/usr/bin/python3
"""Writes the golden files of tests/test_formats.c into tests/fixtures/.

Independent of the C code: safetensors and GGUF files are laid out byte by
byte from the format specifications with numpy and struct, and the Q/K row
permutation is the one from llama.cpp's convert_hf_to_gguf.py (numpy
reshape/swapaxes). The files are checked in; tests do not run python.

Run with /usr/bin/python3 (needs numpy):  /usr/bin/python3 tools/gen_format_fixtures.py
"""
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")


def bf16_bytes(values):
    f = np.asarray(values, dtype="<f4")
    assert np.all((f.view("<u4") & 0xFFFF) == 0), "bf16 golden values must be exact"
    return (f.view("<u4") >> 16).astype("<u2").tobytes()


# ------------------------------------------------------------ safetensors
def write_safetensors(path, tensors, metadata=None, reverse_data=False):
    """tensors: list of (name, dtype string, shape, raw bytes)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    order = list(reversed(tensors)) if reverse_data else tensors
    offsets, off = {}, 0
    for name, _, _, raw in order:
        offsets[name] = (off, off + len(raw))
        off += len(raw)
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": list(offsets[name])}
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, raw in order:
            f.write(raw)


def golden_safetensors():
    t = [
        ("a.f32", "F32", [2, 3], (np.arange(6, dtype="<f4") * 0.5 - 1.0).tobytes()),
        ("b.f16", "F16", [4], np.array([1.0, -2.5, 0.5, 65504.0], dtype="<f2").tobytes()),
        ("c.bf16", "BF16", [2, 2], bf16_bytes([1.0, -3.0, 0.15625, 256.0])),
        ("d.i32", "I32", [3], np.array([-1, 0, 2147483647], dtype="<i4").tobytes()),
        ("e.i16", "I16", [2], np.array([-32768, 7], dtype="<i2").tobytes()),
        ("f.u16", "U16", [3], np.array([0, 65535, 42], dtype="<u2").tobytes()),
        ("g.u8", "U8", [5], np.array([0, 1, 2, 254, 255], dtype="u1").tobytes()),
        ("h.i8", "I8", [3], np.array([-128, 0, 127], dtype="i1").tobytes()),
        ("i.f64", "F64", [2], np.array([3.14159, -1e300], dtype="<f8").tobytes()),
        ("j.i64", "I64", [1], np.array([-(2 ** 40)], dtype="<i8").tobytes()),
        ("k.scalar", "F32", [], np.array([42.0], dtype="<f4").tobytes()),
        ("l.empty", "F32", [0, 3], b""),
    ]
    meta = {"format": "pt", "note": 'golden "quoted" \u00fc'}
    write_safetensors(os.path.join(OUT, "golden.safetensors"), t, meta, reverse_data=True)


def sharded():
    d = os.path.join(OUT, "sharded")
    os.makedirs(d, exist_ok=True)
    emb = ("model.embed_tokens.weight", "F32", [4, 2], (np.arange(8, dtype="<f4") + 1).tobytes())
    up = ("model.layers.0.mlp.up_proj.weight", "F16", [2, 2],
          np.array([0.25, -0.25, 2.0, -4.0], dtype="<f2").tobytes())
    head = ("lm_head.weight", "BF16", [2, 3], bf16_bytes([1, 2, 3, -1, -2, -3]))
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    write_safetensors(os.path.join(d, s1), [emb], {"format": "pt"})
    write_safetensors(os.path.join(d, s2), [up, head], {"format": "pt"})
    total = sum(len(x[3]) for x in (emb, up, head))
    index = {"metadata": {"total_size": total},
             "weight_map": {emb[0]: s1, up[0]: s2, head[0]: s2}}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


# ------------------------------------------------------------ GGUF
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
FMT = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
       FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}


def gstr(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == STRING:
        return gstr(v)
    return struct.pack(FMT[t], v)


def gkv(key, t, v, et=None):
    out = gstr(key) + struct.pack("<I", t)
    if t == ARRAY:
        out += struct.pack("<IQ", et, len(v)) + b"".join(gval(et, x) for x in v)
    else:
        out += gval(t, v)
    return out


def write_gguf(path, version, kvs, tensors, alignment=32):
    """kvs: list of (key, type, value[, elem type]); tensors: (name, ggml type, torch shape, raw).
    The last tensor ends at the end of the file (no trailing padding)."""
    body = b"".join(gkv(*kv) for kv in kvs)
    infos, off, datas = b"", 0, []
    for name, gt, shape, raw in tensors:
        ne = list(reversed(shape))
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", gt, off)
        datas.append((off, raw))
        off += len(raw)
        off = (off + alignment - 1) // alignment * alignment
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + body + infos
    head += b"\0" * ((alignment - len(head) % alignment) % alignment)
    data = bytearray()
    for o, raw in datas:
        data += b"\0" * (o - len(data))
        data += raw
    with open(path, "wb") as f:
        f.write(head)
        f.write(bytes(data))


def permute(w, n_head, n_head_kv=None):
    # llama.cpp convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def golden_gguf():
    n_embd, n_head, n_head_kv, hd, vocab = 8, 2, 1, 4, 5
    tokens = ["<unk>", "<s>", "</s>", "\u2581hello", ""]
    kvs = [
        ("general.architecture", STRING, "llama"),
        ("general.alignment", UINT32, 64),
        ("llama.context_length", UINT32, 2048),
        ("llama.embedding_length", UINT32, n_embd),
        ("llama.block_count", UINT32, 1),
        ("llama.feed_forward_length", UINT32, 16),
        ("llama.attention.head_count", UINT32, n_head),
        ("llama.attention.head_count_kv", UINT32, n_head_kv),
        ("llama.attention.layer_norm_rms_epsilon", FLOAT32, 1e-5),
        ("llama.rope.freq_base", FLOAT32, 10000.0),
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, tokens, STRING),
        ("tokenizer.ggml.scores", ARRAY, [0.0, -1.5, 2.25, -1000.0, 0.125], FLOAT32),
        ("tokenizer.ggml.token_type", ARRAY, [2, 3, 3, 1, 1], INT32),
        ("tokenizer.ggml.bos_token_id", UINT32, 1),
        ("tokenizer.ggml.eos_token_id", UINT32, 2),
        ("tokenizer.ggml.unknown_token_id", UINT32, 0),
        ("test.u8", UINT8, 200),
        ("test.i8", INT8, -100),
        ("test.u16", UINT16, 60000),
        ("test.i16", INT16, -30000),
        ("test.u32", UINT32, 4000000000),
        ("test.i32", INT32, -2000000000),
        ("test.f32", FLOAT32, 0.5),
        ("test.bool", BOOL, True),
        ("test.str", STRING, "h\u00e9llo"),
        ("test.u64", UINT64, 2 ** 63 + 5),
        ("test.i64", INT64, -(2 ** 62)),
        ("test.f64", FLOAT64, -1.25e-300),
        ("test.arr_u8", ARRAY, [1, 2, 255], UINT8),
        ("test.arr_i16", ARRAY, [-7, 7], INT16),
        ("test.arr_i64", ARRAY, [-(2 ** 40), 5], INT64),
        ("test.arr_f64", ARRAY, [0.25, -8.0], FLOAT64),
        ("test.arr_bool", ARRAY, [True, False, True], BOOL),
        ("test.arr_empty", ARRAY, [], UINT32),
    ]
    q_hf = np.arange(n_head * hd * n_embd, dtype="<f4").reshape(n_head * hd, n_embd)
    k_hf = (np.arange(n_head_kv * hd * n_embd, dtype="<f4") * -1.0).reshape(n_head_kv * hd, n_embd)
    q4k = bytes((i * 37 + 11) & 0xFF for i in range(144))
    tensors = [
        ("token_embd.weight", 0, [vocab, n_embd],
         (np.arange(vocab * n_embd, dtype="<f4") * 0.25).tobytes()),
        ("blk.0.attn_q.weight", 0, [n_head * hd, n_embd], permute(q_hf, n_head, n_head).tobytes()),
        ("blk.0.attn_k.weight", 0, [n_head_kv * hd, n_embd],
         permute(k_hf, n_head, n_head_kv).tobytes()),
        ("blk.0.attn_norm.weight", 1, [n_embd],
         np.array([1, 0.5, -0.5, 2, 0.25, -4, 8, 0], dtype="<f2").tobytes()),
        ("output.weight", 30, [2, 4], bf16_bytes([1, 2, 3, 4, -1, -2, -3, -4])),
        ("blk.0.ffn_down.weight", 12, [1, 256], q4k),
        ("test.3d", 0, [2, 3, 4], np.arange(24, dtype="<f4").tobytes()),
    ]
    write_gguf(os.path.join(OUT, "golden_v3.gguf"), 3, kvs, tensors, alignment=64)
    # v2: same layout rules, default alignment
    write_gguf(os.path.join(OUT, "golden_v2.gguf"), 2,
               [("general.architecture", STRING, "llama"),
                ("tokenizer.ggml.tokens", ARRAY, ["a", "bc"], STRING)],
               [("w", 0, [3, 2], np.array([1, 2, 3, 4, 5, 6], dtype="<f4").tobytes()),
                ("v", 1, [3], np.array([0.5, -1, 2], dtype="<f2").tobytes())])


# ------------------------------------------------------------ config.json
CONFIGS = {
    # TinyLlama/TinyLlama-1.1B-Chat-v1.0
    "config_tinyllama.json": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
        "intermediate_size": 5632, "max_position_embeddings": 2048, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.35.0",
        "use_cache": True, "vocab_size": 32000},
    # mistralai/Mistral-7B-v0.1 (no head_dim, sliding window)
    "config_mistral.json": {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
        "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0",
        "use_cache": True, "vocab_size": 32000},
    # meta-llama/Llama-3.2-1B style: eos list, tied embeddings, rope_scaling, "dtype"
    "config_llama32.json": {
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu",
        "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072,
        "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "dtype": "bfloat16",
        "vocab_size": 128256},
    # only model_type, minimal fields: defaults apply
    "config_minimal.json": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100},
    "config_gpt2.json": {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 768,
        "n_head": 12, "n_layer": 12, "vocab_size": 50257},
}


def configs():
    for name, c in CONFIGS.items():
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(c, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    golden_safetensors()
    sharded()
    golden_gguf()
    configs()
    total = 0
    for root, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print("fixtures: %d bytes in %s" % (total, os.path.normpath(OUT)))
