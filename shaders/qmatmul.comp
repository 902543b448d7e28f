#version 450
/* Mixed int-k + FP16-sparse linear: Y [N, out] = X [N, in] W^T, W packed
 * (core/quant.h, docs/format.md): codes u of row r are an LSB-first bit
 * stream starting at byte r*row_bytes (3-bit: 8 codes per 24-bit
 * little-endian word is the same stream); w = (u - 2^(b-1) + 0.5) * s for
 * b <= 4, (u - 127) * s for b = 8; s FP16 per (row, group); cherries in CSR
 * (rowptr i32, cols u16, delta f32) add delta * x[col].
 * Codes are read 8 at a time (8 codes = BITS bytes, byte aligned) as 32-bit
 * windows of the word array; no 8/16-bit storage is needed.
 *   -DGEMV: one workgroup per (row, n) for decoding (N small): invocations
 *           stride over 8-code chunks and cherries, then a reduction
 *           (subgroupAdd with -DUSE_SUBGROUP, else shared memory).
 *   -DGEMM: a 64x64 tile of Y per workgroup (256 invocations, 4x4 each); the
 *           weight tile is decoded once into shared memory, K steps of 32.
 * BITS is 2, 3, 4 or 8. */
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_arithmetic : enable
#extension GL_KHR_shader_subgroup_basic : enable
#endif
#include "common.glsl"

#if BITS == 8
#define ZB (-127.0)
#else
#define ZB (0.5 - float(1 << (BITS - 1)))
#endif
#define CMASK ((1u << BITS) - 1u)

layout(binding = 0) readonly buffer Xb { uint xs[]; };
layout(binding = 1) readonly buffer Cb { uint cd[]; };
layout(binding = 2) readonly buffer Sb { uint sc[]; };
layout(binding = 3) readonly buffer Rb { uint rp[]; };
layout(binding = 4) readonly buffer Lb { uint cl[]; };
layout(binding = 5) readonly buffer Db { uint dl[]; };
layout(binding = 6) buffer Yb { uint ys[]; };

layout(push_constant) uniform PC {
    uint xoff, coff, soff, roff, loff, doff, yoff;
    uint N, out_, in_, row_bytes, ngroups, G, nnz, has_cherries;
} pc;

DEF_LOAD_F32(ldx, xs)
DEF_LOAD_U16(ldu16, sc)
DEF_LOAD_U16(ldcol, cl)
DEF_LOAD_F32(lddl, dl)

/* 32 bits of the code stream starting at byte ba of the codes binding. */
uint rd32(uint ba)
{
    uint w = ba >> 2, sh = (ba & 3u) * 8u;
    uint lo = cd[w];
    return sh == 0u ? lo : (lo >> sh) | (cd[w + 1u] << (32u - sh));
}

float scale_of(uint row, uint j)
{
    return f16_to_f32(ldu16(pc.soff, row * pc.ngroups + j / pc.G));
}

/* dequantized weights 8c .. 8c+7 of `row` (without the scale) */
void decode8(uint row, uint c, out float q[8])
{
    uint ba = pc.coff + row * pc.row_bytes + c * uint(BITS);
#if BITS == 8
    uint lo = rd32(ba), hi = rd32(ba + 4u);
    [[unroll]] for (uint k = 0u; k < 4u; k++) {
        q[k] = float((lo >> (8u * k)) & 0xffu) + ZB;
        q[k + 4u] = float((hi >> (8u * k)) & 0xffu) + ZB;
    }
#else
    uint v = rd32(ba);
    [[unroll]] for (uint k = 0u; k < 8u; k++) q[k] = float((v >> (uint(BITS) * k)) & CMASK) + ZB;
#endif
}

void cherry_range(uint row, out uint e0, out uint e1)
{
    e0 = 0u; e1 = 0u;
    if (pc.has_cherries == 0u) return;
    int a = int(rp[(pc.roff >> 2) + row]), b = int(rp[(pc.roff >> 2) + row + 1u]);
    a = clamp(a, 0, int(pc.nnz));
    b = clamp(b, a, int(pc.nnz));
    e0 = uint(a); e1 = uint(b);
}

#ifdef GEMV
#ifdef USE_SUBGROUP
shared float part[WG];
#else
#include "reduce.glsl"
#endif

void main()
{
    uint row = group_linear();
    uint n = gl_WorkGroupID.z;
    if (row >= pc.out_) return;                   /* uniform */
    uint tid = gl_LocalInvocationID.x;
    uint xb = n * pc.in_;
    uint nch = (pc.in_ + 7u) / 8u;
    float acc = 0.0;
    for (uint c = tid; c < nch; c += WG) {
        float q[8];
        decode8(row, c, q);
        uint j0 = c * 8u;
        float p = 0.0;
        if (j0 + 8u <= pc.in_) {
            [[unroll]] for (uint k = 0u; k < 8u; k++) p += q[k] * ldx(pc.xoff, xb + j0 + k);
        } else {
            for (uint k = 0u; j0 + k < pc.in_; k++) p += q[k] * ldx(pc.xoff, xb + j0 + k);
        }
        acc += p * scale_of(row, j0);
    }
    uint e0, e1;
    cherry_range(row, e0, e1);
    for (uint e = e0 + tid; e < e1; e += WG) {
        uint col = ldcol(pc.loff, e);
        if (col < pc.in_) acc += lddl(pc.doff, e) * ldx(pc.xoff, xb + col);
    }
#ifdef USE_SUBGROUP
    float s = subgroupAdd(acc);
    if (subgroupElect()) part[gl_SubgroupID] = s;
    barrier();
    if (tid == 0u) {
        float t = 0.0;
        for (uint i = 0u; i < gl_NumSubgroups; i++) t += part[i];
        ys[(pc.yoff >> 2) + n * pc.out_ + row] = floatBitsToUint(t);
    }
#else
    float t = wg_sum(acc);
    if (tid == 0u) ys[(pc.yoff >> 2) + n * pc.out_ + row] = floatBitsToUint(t);
#endif
}

#else /* GEMM */

#define BM 64
#define BN 64
#define BK 32
shared float Ws[BK][BM + 1];
shared float Xs[BK][BN + 1];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint tx = tid % 16u, ty = tid / 16u;
    uint m0 = gl_WorkGroupID.x * BM, n0 = gl_WorkGroupID.y * BN;
    float acc[4][4];
    [[unroll]] for (int i = 0; i < 4; i++)
        [[unroll]] for (int j = 0; j < 4; j++) acc[i][j] = 0.0;

    for (uint k0 = 0u; k0 < pc.in_; k0 += BK) {
        {   /* weights: 64 rows x 4 chunks of 8 codes, one chunk each */
            uint r = tid / 4u, ch = tid % 4u;
            uint row = m0 + r, j0 = k0 + ch * 8u;
            float q[8];
            if (row < pc.out_ && j0 < pc.in_) {
                decode8(row, j0 / 8u, q);
                float s = scale_of(row, j0);
                [[unroll]] for (uint k = 0u; k < 8u; k++)
                    Ws[ch * 8u + k][r] = (j0 + k < pc.in_) ? q[k] * s : 0.0;
            } else {
                [[unroll]] for (uint k = 0u; k < 8u; k++) Ws[ch * 8u + k][r] = 0.0;
            }
        }
        [[unroll]] for (uint r = 0u; r < 8u; r++) {
            uint idx = tid + 256u * r;
            uint kk = idx % BK, nn = idx / BK;
            uint gn = n0 + nn, gk = k0 + kk;
            Xs[kk][nn] = (gn < pc.N && gk < pc.in_) ? ldx(pc.xoff, gn * pc.in_ + gk) : 0.0;
        }
        barrier();
        [[unroll]] for (uint k = 0u; k < BK; k++) {
            float wv[4], xv[4];
            [[unroll]] for (uint i = 0u; i < 4u; i++) wv[i] = Ws[k][ty + 16u * i];
            [[unroll]] for (uint j = 0u; j < 4u; j++) xv[j] = Xs[k][tx + 16u * j];
            [[unroll]] for (uint i = 0u; i < 4u; i++)
                [[unroll]] for (uint j = 0u; j < 4u; j++) acc[i][j] += wv[i] * xv[j];
        }
        barrier();
    }
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
        uint row = m0 + ty + 16u * i;
        if (row >= pc.out_) continue;
        uint e0, e1;
        cherry_range(row, e0, e1);
        for (uint e = e0; e < e1; e++) {
            uint col = ldcol(pc.loff, e);
            if (col >= pc.in_) continue;
            float dv = lddl(pc.doff, e);
            [[unroll]] for (uint j = 0u; j < 4u; j++) {
                uint gn = n0 + tx + 16u * j;
                if (gn < pc.N) acc[i][j] += dv * ldx(pc.xoff, gn * pc.in_ + col);
            }
        }
        [[unroll]] for (uint j = 0u; j < 4u; j++) {
            uint gn = n0 + tx + 16u * j;
            if (gn < pc.N) ys[(pc.yoff >> 2) + gn * pc.out_ + row] = floatBitsToUint(acc[i][j]);
        }
    }
}
#endif
