#version 450
/* COPY (strided source and destination, f32/f16/bf16 conversions, raw copies
 * of identical dtypes of 1, 2 or 4 bytes) and FILL of non-contiguous or
 * unaligned tensors. One invocation per element; element i (row-major over
 * the logical shape) is located in src and dst through their own shape and
 * strides (numel equal, shapes may differ). Sub-word destinations are written
 * with atomicAnd/atomicOr so neighbouring elements in one word never race. */
#include "common.glsl"

layout(binding = 0) readonly buffer S { uint s[]; };
layout(binding = 1) buffer D { uint d[]; };

layout(push_constant) uniform PC {
    uint soff, doff, n, mode;     /* mode 0 copy, 1 fill */
    uint sdt, ddt, ssize, dsize;  /* dtype codes: 0 f32 1 f16 2 bf16 3 raw; sizes in bytes */
    uint fill_bits, pad0, pad1, pad2;
    uint sne[4];
    int snb[4];
    uint dne[4];
    int dnb[4];
} pc;

int elem_offset(uint i, uint ne0, uint ne1, uint ne2, uint ne3, int nb0, int nb1, int nb2, int nb3)
{
    uint c3 = i % ne3; i /= ne3;
    uint c2 = i % ne2; i /= ne2;
    uint c1 = i % ne1; i /= ne1;
    return int(i) * nb0 + int(c1) * nb1 + int(c2) * nb2 + int(c3) * nb3;
}

void main()
{
    uint i = gid_linear();
    if (i >= pc.n) return;
    uint bits;
    if (pc.mode == 1u) {
        bits = pc.fill_bits;
    } else {
        int se = elem_offset(i, pc.sne[0], pc.sne[1], pc.sne[2], pc.sne[3],
                             pc.snb[0], pc.snb[1], pc.snb[2], pc.snb[3]);
        uint ba = pc.soff + uint(se) * pc.ssize;
        uint w = s[ba >> 2];
        if (pc.ssize == 4u) bits = w;
        else if (pc.ssize == 2u) bits = (w >> ((ba & 2u) * 8u)) & 0xffffu;
        else bits = (w >> ((ba & 3u) * 8u)) & 0xffu;
        if (pc.sdt != pc.ddt && pc.sdt < 3u && pc.ddt < 3u)
            bits = from_f32_bits(to_f32_bits(bits, pc.sdt), pc.ddt);
    }
    int de = elem_offset(i, pc.dne[0], pc.dne[1], pc.dne[2], pc.dne[3],
                         pc.dnb[0], pc.dnb[1], pc.dnb[2], pc.dnb[3]);
    uint da = pc.doff + uint(de) * pc.dsize;
    if (pc.dsize == 4u) {
        d[da >> 2] = bits;
    } else {
        uint sh = (da & 3u) * 8u;
        uint mask = (pc.dsize == 2u ? 0xffffu : 0xffu) << sh;
        atomicAnd(d[da >> 2], ~mask);
        atomicOr(d[da >> 2], (bits << sh) & mask);
    }
}
