#!/usr/bin/python3
"""Writes the golden fixtures of tests/test_llama.c into tests/fixtures/llama/.

An independent PyTorch implementation of Hugging Face's LlamaForCausalLM
(transformers' modeling_llama.py, written out here because transformers is
not installed): RMSNorm computed in f32 or wider, rotate-half RoPE with
inv_freq = 1 / theta^(arange(0, D, 2) / D), grouped-query attention with kv
heads repeated as repeat_kv does (head h reads kv head h // (Hq / Hkv)),
causal softmax attention scaled by 1/sqrt(D), SwiGLU MLP
down(silu(gate(x)) * up(x)), final norm, lm_head (untied, or tied to the
embedding).

Variants: "untied" (GQA, 4 heads on 2 kv heads, separate lm_head), "tied"
(3 heads on 1 kv head, lm_head tied to the embedding, rope_theta 5e5),
"headdim" (head_dim given in config.json and unequal to hidden_size/heads)
and "llama3" (LLaMA-3.1's rope_scaling, transformers'
_compute_llama3_parameters, with an original context of 64 so that a head
dim of 16 has frequencies in all three bands).
For each variant it writes
  <variant>/config.json                 Hugging Face config
  <variant>/model.safetensors           f32 weights, laid out byte by byte
  <variant>.golden.safetensors          ids, targets (i32 [B, T]); logits,
                                        loss and "grad.<param>" for every
                                        parameter (f64)
and, for the tied variant, tied.gguf: the same weights as llama.cpp's
convert_hf_to_gguf.py writes them (names, metadata, q/k rows permuted with
its numpy reshape/swapaxes), F32.

The reference runs in float64 (weights are the f32 values, converted
exactly), so the golden values are precise to ~1e-15 and the C code's f32
error is what the test measures. The loss is the mean next-token cross
entropy over the targets that are not -1, i.e. what cq_llama_loss computes
with scale 1 / (number of targets).

Run with /usr/bin/python3 (needs torch and numpy):
    /usr/bin/python3 tools/gen_llama_golden.py
"""
import json
import math
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "llama")

VARIANTS = {
    # GQA (4 query heads on 2 kv heads), untied lm_head
    "untied": dict(vocab=67, dim=32, layers=2, heads=4, kv_heads=2, ffn=88, batch=2, seq=11,
                   eps=1e-6, theta=10000.0, max_pos=64, tie=False, seed=1234),
    # multi-query (3 heads on 1 kv head), tied embeddings, llama-3 style theta
    "tied": dict(vocab=53, dim=24, layers=2, heads=3, kv_heads=1, ffn=40, batch=2, seq=9,
                 eps=1e-5, theta=500000.0, max_pos=32, tie=True, seed=99),
    # head_dim given in config.json and != hidden_size / heads (q_proj [24, 20])
    "headdim": dict(vocab=19, dim=20, layers=1, heads=2, kv_heads=1, head_dim=12, ffn=24, batch=1,
                    seq=7, eps=1e-6, theta=10000.0, max_pos=16, tie=False, seed=5),
    # rope_scaling llama3 (LLaMA-3.1 / 3.2), head_dim 16: j = 0 kept, j = 1 smoothed, j >= 2 divided
    "llama3": dict(vocab=41, dim=32, layers=2, heads=2, kv_heads=1, ffn=48, batch=2, seq=13,
                   eps=1e-5, theta=500000.0, max_pos=512, tie=False, seed=31,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
}

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


# ------------------------------------------------------------ the model
def head_dim(c):
    return c.get("head_dim", c["dim"] // c["heads"])


def param_shapes(c):
    d, hd = c["dim"], head_dim(c)
    qd, kvd = c["heads"] * hd, c["kv_heads"] * hd
    shapes = [("model.embed_tokens.weight", (c["vocab"], d))]
    lin = {"self_attn.q_proj": (qd, d), "self_attn.k_proj": (kvd, d), "self_attn.v_proj": (kvd, d),
           "self_attn.o_proj": (d, qd), "mlp.gate_proj": (c["ffn"], d), "mlp.up_proj": (c["ffn"], d),
           "mlp.down_proj": (d, c["ffn"])}
    for l in range(c["layers"]):
        p = "model.layers.%d." % l
        shapes.append((p + "input_layernorm.weight", (d,)))
        for n in LINEARS:
            shapes.append((p + n + ".weight", lin[n]))
        shapes.append((p + "post_attention_layernorm.weight", (d,)))
    shapes.append(("model.norm.weight", (d,)))
    if not c["tie"]:
        shapes.append(("lm_head.weight", (c["vocab"], d)))
    return shapes


def init_weights(c):
    """f32 weights with enough spread that every path matters: matrices
    ~ N(0, 1/fan_in), embeddings N(0, 1), norms 1 + N(0, 0.2^2)."""
    g = torch.Generator().manual_seed(c["seed"])
    w = {}
    for name, shape in param_shapes(c):
        if len(shape) == 1:
            t = 1.0 + 0.2 * torch.randn(shape, generator=g)
        elif name == "model.embed_tokens.weight":
            t = torch.randn(shape, generator=g)
            if c["tie"]:
                t = t * (2.0 / math.sqrt(shape[1]))  # also the output projection
        elif name == "lm_head.weight":
            t = torch.randn(shape, generator=g) * (2.0 / math.sqrt(shape[1]))
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        w[name] = t.to(torch.float32).contiguous()
    return w


def rms_norm(x, w, eps):
    # LlamaRMSNorm: variance in f32 (here: the reference dtype, f64)
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def llama3_scaling(inv_freq, rs):
    """transformers' _compute_llama3_parameters on a default inv_freq."""
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old / lo, old / hi
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


def rope(x, pos, theta, rope_scaling=None):
    """x [B, H, T, D]; LlamaRotaryEmbedding (default rope_type, or llama3) +
    apply_rotary_pos_emb."""
    D = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).to(x.dtype) / D))
    if rope_scaling:
        assert rope_scaling["rope_type"] == "llama3"
        inv_freq = llama3_scaling(inv_freq, rope_scaling)
    freqs = torch.outer(pos.to(x.dtype), inv_freq)           # [T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)                    # [T, D]
    return x * emb.cos() + rotate_half(x) * emb.sin()


def forward(c, w, ids):
    B, T = ids.shape
    H, Hk = c["heads"], c["kv_heads"]
    D = head_dim(c)
    eps, theta = c["eps"], c["theta"]
    pos = torch.arange(T)
    x = w["model.embed_tokens.weight"][ids]                    # [B, T, dim]
    mask = torch.full((T, T), float("-inf"), dtype=x.dtype).triu(1)
    for l in range(c["layers"]):
        p = "model.layers.%d." % l
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, Hk, D).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, Hk, D).transpose(1, 2)
        rs = c.get("rope_scaling")
        q, k = rope(q, pos, theta, rs), rope(k, pos, theta, rs)
        # repeat_kv: [B, Hk, T, D] -> [B, Hk * n_rep, T, D], kv head j serves heads j*n_rep ..
        k = k.repeat_interleave(H // Hk, dim=1)
        v = v.repeat_interleave(H // Hk, dim=1)
        s = (q @ k.transpose(2, 3)) / math.sqrt(D) + mask
        a = torch.softmax(s, dim=-1) @ v                          # [B, H, T, D]
        a = a.transpose(1, 2).reshape(B, T, H * D)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c["tie"] else w["lm_head.weight"]
    return x @ head.T


def make_inputs(c):
    g = torch.Generator().manual_seed(c["seed"] + 1)
    B, T, V = c["batch"], c["seq"], c["vocab"]
    ids = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
    ids[0, 0], ids[B - 1, 3] = 0, V - 1  # both ends of the vocabulary
    targets = torch.full((B, T), -1, dtype=torch.int64)
    targets[:, :-1] = ids[:, 1:]
    targets[B - 1, 4] = -1  # one more ignored position (padding) inside a row
    return ids, targets


def reference(c, w32, ids, targets):
    """f64 logits, loss and the gradient of the loss w.r.t. every parameter."""
    w = {n: t.to(torch.float64).requires_grad_(True) for n, t in w32.items()}
    logits = forward(c, w, ids)
    n = int((targets >= 0).sum())
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c["vocab"]), targets.reshape(-1),
                                             ignore_index=-1, reduction="sum") / n
    loss.backward()
    # sanity: an f32 run of the same reference agrees to f32 precision
    l32 = forward(c, w32, ids)
    err = (l32.double() - logits.detach()).abs().max() / logits.detach().abs().max()
    assert err < 1e-5, err
    return logits.detach(), loss.detach(), {nm: t.grad for nm, t in w.items()}


# ------------------------------------------------------------ files
ST_DTYPE = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64", np.dtype("<i4"): "I32"}


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, numpy array); laid out from the safetensors
    spec: u64 header length, JSON header padded with spaces to 8 bytes,
    data in order."""
    header, off, raws = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        raw = a.tobytes()
        header[name] = {"dtype": ST_DTYPE[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        raws.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for r in raws:
            f.write(r)


def hf_config(c):
    h = {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": c["dim"],
        "initializer_range": 0.02, "intermediate_size": c["ffn"],
        "max_position_embeddings": c["max_pos"], "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": c["heads"], "num_hidden_layers": c["layers"],
        "num_key_value_heads": c["kv_heads"], "pretraining_tp": 1, "rms_norm_eps": c["eps"],
        "rope_scaling": c.get("rope_scaling"), "rope_theta": c["theta"], "tie_word_embeddings": c["tie"],
        "torch_dtype": "float32", "transformers_version": "4.44.0", "use_cache": True,
        "vocab_size": c["vocab"],
    }
    if "head_dim" in c:
        h["head_dim"] = c["head_dim"]
    return h


# GGUF (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), v3
GG_U32, GG_F32, GG_STR = 4, 6, 8


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gkv(key, t, v):
    out = gstr(key) + struct.pack("<I", t)
    if t == GG_STR:
        return out + gstr(v)
    return out + struct.pack("<I" if t == GG_U32 else "<f", v)


def permute(w, n_head, n_head_kv=None):
    # llama.cpp convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def gguf_name(hf):
    m = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
         "lm_head.weight": "output.weight"}
    if hf in m:
        return m[hf]
    _, _, l, rest = hf.split(".", 3)
    m = {"input_layernorm.weight": "attn_norm", "post_attention_layernorm.weight": "ffn_norm",
         "self_attn.q_proj.weight": "attn_q", "self_attn.k_proj.weight": "attn_k",
         "self_attn.v_proj.weight": "attn_v", "self_attn.o_proj.weight": "attn_output",
         "mlp.gate_proj.weight": "ffn_gate", "mlp.up_proj.weight": "ffn_up",
         "mlp.down_proj.weight": "ffn_down"}
    return "blk.%s.%s.weight" % (l, m[rest])


def write_gguf(path, c, w32, align=32):
    kvs = [("general.architecture", GG_STR, "llama"), ("general.name", GG_STR, "cherryq golden"),
           ("llama.context_length", GG_U32, c["max_pos"]),
           ("llama.embedding_length", GG_U32, c["dim"]), ("llama.block_count", GG_U32, c["layers"]),
           ("llama.feed_forward_length", GG_U32, c["ffn"]),
           ("llama.rope.dimension_count", GG_U32, head_dim(c)),
           ("llama.attention.head_count", GG_U32, c["heads"]),
           ("llama.attention.head_count_kv", GG_U32, c["kv_heads"]),
           ("llama.attention.layer_norm_rms_epsilon", GG_F32, c["eps"]),
           ("llama.rope.freq_base", GG_F32, c["theta"]), ("general.file_type", GG_U32, 0),
           ("tokenizer.ggml.bos_token_id", GG_U32, 1), ("tokenizer.ggml.eos_token_id", GG_U32, 2)]
    tensors = []
    for name, t in w32.items():
        a = t.numpy()
        if name.endswith("q_proj.weight"):
            a = permute(a, c["heads"], c["heads"])
        elif name.endswith("k_proj.weight"):
            a = permute(a, c["heads"], c["kv_heads"])
        tensors.append((gguf_name(name), np.ascontiguousarray(a, dtype="<f4")))
    body = b"".join(gkv(*kv) for kv in kvs)
    infos, off, datas = b"", 0, []
    for name, a in tensors:
        ne = list(reversed(a.shape))  # ggml order: fastest dim first
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", 0, off)  # GGML_TYPE_F32
        datas.append((off, a.tobytes()))
        off = (off + a.nbytes + align - 1) // align * align
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + body + infos
    head += b"\0" * ((align - len(head) % align) % align)
    data = bytearray()
    for o, raw in datas:
        data += b"\0" * (o - len(data)) + raw
    with open(path, "wb") as f:
        f.write(head + bytes(data))


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for name, c in VARIANTS.items():
        w32 = init_weights(c)
        ids, targets = make_inputs(c)
        logits, loss, grads = reference(c, w32, ids, targets)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(c), f, indent=2)
            f.write("\n")
        write_safetensors(os.path.join(d, "model.safetensors"),
                          [(n, t.numpy().astype("<f4")) for n, t in w32.items()], {"format": "pt"})
        g = [("ids", ids.numpy().astype("<i4")), ("targets", targets.numpy().astype("<i4")),
             ("logits", logits.numpy().astype("<f8")), ("loss", loss.reshape(1).numpy().astype("<f8"))]
        g += [("grad." + n, grads[n].numpy().astype("<f8")) for n in w32]
        write_safetensors(os.path.join(OUT, name + ".golden.safetensors"), g,
                          {"generator": "tools/gen_llama_golden.py", "precision": "float64"})
        if c["tie"]:
            write_gguf(os.path.join(OUT, name + ".gguf"), c, w32)
        print("%s: loss %.6f, |logits| max %.3f, %d params" %
              (name, float(loss), float(logits.abs().max()), len(w32)))


if __name__ == "__main__":
    main()
