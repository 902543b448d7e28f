#version 450
/* Batched matmul C = alpha * op(A) op(B) + beta * C, tiled through shared
 * memory: a 64x64 tile of C per workgroup of 256 invocations, each computing
 * 4x4 outputs, K in steps of 16. Variants: TRANS_A (A stored [K, M]),
 * TRANS_B (B stored [N, K]); tile loads follow the contiguous dimension of
 * each variant. A and B may be f32, f16 or bf16 (adt/bdt), C is f32.
 * beta == 0 does not read C. Batch = gl_WorkGroupID.z; B batch stride 0
 * broadcasts a 2-D B. */
#include "common.glsl"

#define BM 64
#define BN 64
#define BK 16

layout(binding = 0) readonly buffer Ab { uint a[]; };
layout(binding = 1) readonly buffer Bb { uint b[]; };
layout(binding = 2) buffer Cb { uint c[]; };

layout(push_constant) uniform PC {
    uint aoff, boff, coff, M, N, K, adt, bdt;
    uint a_bstride, b_bstride, c_bstride, pad0;
    float alpha, beta;
} pc;

DEF_LOAD_ANYF(lda, a)
DEF_LOAD_ANYF(ldb, b)

shared float As[BK][BM + 1];
shared float Bs[BK][BN + 1];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint tx = tid % 16u, ty = tid / 16u;
    uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM, batch = gl_WorkGroupID.z;
    uint abase = batch * pc.a_bstride, bbase = batch * pc.b_bstride, cbase = batch * pc.c_bstride;
    float acc[4][4];
    [[unroll]] for (int i = 0; i < 4; i++)
        [[unroll]] for (int j = 0; j < 4; j++) acc[i][j] = 0.0;

    for (uint k0 = 0u; k0 < pc.K; k0 += BK) {
        [[unroll]] for (uint r = 0u; r < 4u; r++) {
            uint idx = tid + 256u * r;
#ifdef TRANS_A
            uint mm = idx % BM, kk = idx / BM;      /* A[k, m] at k*M + m */
            uint gm = m0 + mm, gk = k0 + kk;
            float v = (gm < pc.M && gk < pc.K) ? lda(pc.aoff, abase + gk * pc.M + gm, pc.adt) : 0.0;
#else
            uint kk = idx % BK, mm = idx / BK;      /* A[m, k] at m*K + k */
            uint gm = m0 + mm, gk = k0 + kk;
            float v = (gm < pc.M && gk < pc.K) ? lda(pc.aoff, abase + gm * pc.K + gk, pc.adt) : 0.0;
#endif
            As[kk][mm] = v;
#ifdef TRANS_B
            uint kb = idx % BK, nb = idx / BK;      /* B[n, k] at n*K + k */
            uint gn = n0 + nb, gkb = k0 + kb;
            float w = (gn < pc.N && gkb < pc.K) ? ldb(pc.boff, bbase + gn * pc.K + gkb, pc.bdt) : 0.0;
#else
            uint nb = idx % BN, kb = idx / BN;      /* B[k, n] at k*N + n */
            uint gn = n0 + nb, gkb = k0 + kb;
            float w = (gn < pc.N && gkb < pc.K) ? ldb(pc.boff, bbase + gkb * pc.N + gn, pc.bdt) : 0.0;
#endif
            Bs[kb][nb] = w;
        }
        barrier();
        [[unroll]] for (uint k = 0u; k < BK; k++) {
            float av[4], bv[4];
            [[unroll]] for (uint i = 0u; i < 4u; i++) av[i] = As[k][ty + 16u * i];
            [[unroll]] for (uint j = 0u; j < 4u; j++) bv[j] = Bs[k][tx + 16u * j];
            [[unroll]] for (uint i = 0u; i < 4u; i++)
                [[unroll]] for (uint j = 0u; j < 4u; j++) acc[i][j] += av[i] * bv[j];
        }
        barrier();
    }
    [[unroll]] for (uint i = 0u; i < 4u; i++) {
        uint gm = m0 + ty + 16u * i;
        if (gm >= pc.M) continue;
        [[unroll]] for (uint j = 0u; j < 4u; j++) {
            uint gn = n0 + tx + 16u * j;
            if (gn >= pc.N) continue;
            uint ci = (pc.coff >> 2) + cbase + gm * pc.N + gn;
            float r = pc.alpha * acc[i][j];
            if (pc.beta != 0.0) r += pc.beta * uintBitsToFloat(c[ci]);
            c[ci] = floatBitsToUint(r);
        }
    }
}
