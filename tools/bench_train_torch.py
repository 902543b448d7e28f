#!/usr/bin/python3
"""The model of tools/bench_train.c in PyTorch (Debian's python3-torch), for
the training-throughput comparison of tools/bench_train.sh.

Same LLaMA: untied lm_head, RMSNorm (eps 1e-5), rotate-half RoPE (theta 1e4),
grouped-query attention (causal; torch's scaled_dot_product_attention where
torch >= 2.0 has it, else softmax(QK^T/sqrt(d) + mask) V), SwiGLU
MLP; same step: random windows of seq tokens, mean cross-entropy, backward,
global-norm clipping at 1.0, AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1
on matrices only), f32 throughout unless --dtype bf16 (autocast: bf16
matmuls, f32 master weights, as cherryq's --compute-dtype bf16). --device cuda
runs it on the GPU (the baseline of bench_train --backend cuda). Prints one
JSON line last.

  python3 tools/bench_train_torch.py [--config models/default.json] [--steps N] [--threads N]
                                     [--device cpu|cuda] [--dtype f32|bf16] [--batch N] [--seq N]
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    def __init__(s, dim, heads, kv, ffn):
        super().__init__()
        s.h, s.kv, s.hd = heads, kv, dim // heads
        s.q = torch.nn.Linear(dim, heads * s.hd, bias=False)
        s.k = torch.nn.Linear(dim, kv * s.hd, bias=False)
        s.v = torch.nn.Linear(dim, kv * s.hd, bias=False)
        s.o = torch.nn.Linear(heads * s.hd, dim, bias=False)
        s.gate = torch.nn.Linear(dim, ffn, bias=False)
        s.up = torch.nn.Linear(dim, ffn, bias=False)
        s.down = torch.nn.Linear(ffn, dim, bias=False)
        s.n1 = torch.nn.Parameter(torch.ones(dim))
        s.n2 = torch.nn.Parameter(torch.ones(dim))

    @staticmethod
    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    @staticmethod
    def rope(x, cos, sin):
        h = x.shape[-1] // 2
        rot = torch.cat((-x[..., h:], x[..., :h]), -1)
        return x * cos + rot * sin

    def forward(s, x, cos, sin):
        B, T, C = x.shape
        h = s.norm(x, s.n1)
        q = s.q(h).view(B, T, s.h, s.hd).transpose(1, 2)
        k = s.k(h).view(B, T, s.kv, s.hd).transpose(1, 2)
        v = s.v(h).view(B, T, s.kv, s.hd).transpose(1, 2)
        q, k = s.rope(q, cos, sin), s.rope(k, cos, sin)
        rep = s.h // s.kv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0
            sc = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(s.hd))
            mask = torch.ones(T, T, dtype=torch.bool).triu(1)
            a = sc.masked_fill(mask, float("-inf")).softmax(-1) @ v
        x = x + s.o(a.transpose(1, 2).reshape(B, T, C))
        h = s.norm(x, s.n2)
        return x + s.down(F.silu(s.gate(h)) * s.up(h))


class Llama(torch.nn.Module):
    def __init__(s, c):
        super().__init__()
        s.emb = torch.nn.Embedding(c["vocab"], c["dim"])
        s.blocks = torch.nn.ModuleList(Block(c["dim"], c["heads"], c["kv-heads"], c["ffn"]) for _ in range(c["layers"]))
        s.norm = torch.nn.Parameter(torch.ones(c["dim"]))
        s.head = torch.nn.Linear(c["dim"], c["vocab"], bias=False)
        hd = c["dim"] // c["heads"]
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        ang = torch.outer(torch.arange(c["seq"], dtype=torch.float64), inv)
        ang = torch.cat((ang, ang), -1)
        s.register_buffer("cos", ang.cos().float(), persistent=False)
        s.register_buffer("sin", ang.sin().float(), persistent=False)
        for p in s.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, 0.0, 0.02)

    def forward(s, ids):
        x = s.emb(ids)
        T = ids.shape[1]
        for b in s.blocks:
            x = b(x, s.cos[:T], s.sin[:T])
        return s.head(Block.norm(x, s.norm))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(here, "..", "models", "default.json"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--seq", type=int, default=0)
    a = ap.parse_args()
    c = json.load(open(a.config))
    if a.batch:
        c["batch"] = a.batch
    if a.seq:
        c["seq"] = a.seq
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    c.setdefault("kv-heads", c["heads"])
    threads = a.threads or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = Llama(c).to(dev)
    decay = [p for p in m.parameters() if p.dim() >= 2]
    other = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    B, T, V = c["batch"], c["seq"], c["vocab"]
    data = torch.randint(0, V, (1 << 18,), device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        starts = torch.randint(0, data.numel() - T - 1, (B,))
        w = torch.stack([data[s:s + T + 1] for s in starts.tolist()])
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            logits = m(w[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, V), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(2):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    el = time.perf_counter() - t0
    tps = a.steps * B * T / el
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{threads} threads"
    print(f"bench_train_torch: torch {torch.__version__}, {where}, {a.dtype}")
    print(f"training: {a.steps} steps of {B} x {T} tokens in {el:.2f}s: {tps:.0f} tokens/s")
    print(json.dumps({"impl": "torch", "tokens_per_s": round(tps, 1), "threads": threads, "batch": B, "seq": T,
                      "device": a.device, "dtype": a.dtype, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
