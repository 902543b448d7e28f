#!/usr/bin/python3
"""Golden values of the CherryQ group quantizer, computed by PyTorch.

Implements CHERRYQ.md section 4 literally in torch (torch.round, torch.clamp,
float32 tensors) on the original column grid with cherries excluded from the
group max, and writes inputs and outputs to tests/fixtures/quant/golden.bin,
which tests/test_quant.c compares with cq_quant_fakequant bit for bit.

Run with a Python that has torch:  /usr/bin/python3 tools/gen_quant_golden.py

File layout (little endian):
  char[4] "CQQG"; u32 version = 1; u32 rows; u32 cols; u32 ncases
  f32 w[rows*cols]; u8 mask[rows*cols]
  ncases times: i32 bits; i32 group (0 = whole row); i32 use_mask; i32 fp16;
                f32 out[rows*cols]
fp16 = 1 is cherryq's deploy-exact mode: s is rounded to FP16 before use
(s.half().float()) and the cherries are rounded to FP16.
"""
import os
import struct
import sys

import torch

ROWS, COLS = 4, 200  # 200: groups 32 and 64 end in a partial group of 8, 128 in one of 72


def fakequant(w, mask, bits, group, fp16):
    out = w.clone()
    cols = w.shape[1]
    g = cols if group == 0 else group
    for c0 in range(0, cols, g):
        ws = w[:, c0:c0 + g]
        ms = mask[:, c0:c0 + g]
        mx = torch.where(ms, torch.zeros_like(ws), ws.abs()).amax(dim=1, keepdim=True)
        if bits <= 4:
            s = (mx + 1e-6) / 2 ** (bits - 1)
            if fp16:
                s = s.half().float()
            lim = 2 ** (bits - 1) - 0.01
            q = torch.round(torch.clamp(ws / s, -lim, lim) - 0.5)
            wq = (q + 0.5) * s
        else:
            s = (mx + 1e-6) / (2 ** (bits - 1) - 1)
            if fp16:
                s = s.half().float()
            m = 2 ** (bits - 1) - 1
            wq = torch.clamp(torch.round(ws / s), -m, m) * s
        c = ws.half().float() if fp16 else ws
        out[:, c0:c0 + g] = torch.where(ms, c, wq)
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "tests", "fixtures", "quant", "golden.bin")
    gen = torch.Generator().manual_seed(20240402)
    # heavy tailed (Student t, 3 dof), a different magnitude per row
    t = torch.distributions.StudentT(3.0)
    torch.manual_seed(20240402)
    w = t.sample((ROWS, COLS)).float()
    w *= torch.tensor([[1e-3], [0.02], [1.0], [7.5]])
    w[1, 40:64] = 0.0  # a run of zeros (and a group 32 that is mostly zero)
    mask = torch.rand((ROWS, COLS), generator=gen) < 0.03
    mask[torch.arange(ROWS), w.abs().argmax(dim=1)] = True  # the row max is a cherry
    mask[2, 128:136] = True
    cases = []
    for bits in (2, 3, 4, 8):
        for group in (32, 64, 128, 0):
            for use_mask in (0, 1):
                for fp16 in (0, 1):
                    m = mask if use_mask else torch.zeros_like(mask)
                    cases.append((bits, group, use_mask, fp16, fakequant(w, m, bits, group, fp16)))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"CQQG" + struct.pack("<4I", 1, ROWS, COLS, len(cases)))
        f.write(w.contiguous().numpy().astype("<f4").tobytes())
        f.write(mask.contiguous().numpy().astype("u1").tobytes())
        for bits, group, use_mask, fp16, o in cases:
            f.write(struct.pack("<4i", bits, group, use_mask, fp16))
            f.write(o.contiguous().numpy().astype("<f4").tobytes())
    print(f"wrote {path}: {len(cases)} cases of {ROWS}x{COLS} ({os.path.getsize(path)} bytes)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
