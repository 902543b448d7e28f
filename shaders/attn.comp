#version 450
/* Causal attention with grouped-query heads, f32, contiguous
 * q [B,T,Hq,D], k/v [B,S,Hkv,D]; query t at position pos0 + t sees keys
 * s <= pos0 + t; head h reads kv head h / (Hq/Hkv). Workgroups of 64
 * invocations (the host specializes WG = 64); D <= 256 (4 dims per
 * invocation). Keys (or queries) go in blocks of 64, one per invocation.
 *   mode 0 forward, one workgroup per (b, t, h): online softmax;
 *          out, and lse [B,Hq,T] when has_lse.
 *   mode 1 backward dq, one workgroup per (b, t, h):
 *          Dt = dout.out -> tmp[b,h,t]; p = exp(q.k scale - lse),
 *          ds = p (dout.v - Dt); dq = scale sum_s ds k_s.
 *   mode 2 backward dk, dv, one workgroup per (b, s, kv head), over the
 *          query heads of its group and the queries that see s:
 *          dv = sum p dout_t, dk = scale sum ds q_t.
 * No atomics: every output row is written by one workgroup. */
#include "common.glsl"
#include "reduce.glsl"

#define AWG 64u
#define DMAX 256u
#define NACC 4

layout(binding = 0) readonly buffer Qb { uint q[]; };
layout(binding = 1) readonly buffer Kb { uint k[]; };
layout(binding = 2) readonly buffer Vb { uint v[]; };
layout(binding = 3) readonly buffer Ob { uint o[]; };
layout(binding = 4) readonly buffer Lb { uint lse[]; };
layout(binding = 5) readonly buffer DOb { uint dout[]; };
layout(binding = 6) buffer R0 { uint r0[]; };    /* out | dq | dk */
layout(binding = 7) buffer R1 { uint r1[]; };    /* lse | dv */
layout(binding = 8) buffer Tb { uint tmp[]; };   /* Dt [B,Hq,T] (bwd) */

layout(push_constant) uniform PC {
    uint qoff, koff, voff, ooff, lseoff, dooff, r0off, r1off, toff;
    uint B, T, S, Hq, Hkv, D, pos0, mode, has_lse;
    float scale;
} pc;

DEF_LOAD_F32(ldq, q)
DEF_LOAD_F32(ldk, k)
DEF_LOAD_F32(ldv, v)
DEF_LOAD_F32(ldo, o)
DEF_LOAD_F32(lddo, dout)

shared float va[DMAX];
shared float vb[DMAX];
shared float ps[AWG];
shared float dss[AWG];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint gi = group_linear();
    uint D = pc.D;
    float acc[NACC], acc2[NACC];
    [[unroll]] for (int i = 0; i < NACC; i++) { acc[i] = 0.0; acc2[i] = 0.0; }

    if (pc.mode == 2u) {
        if (gi >= pc.B * pc.S * pc.Hkv) return;            /* uniform */
        uint hk = gi % pc.Hkv, s = (gi / pc.Hkv) % pc.S, b = gi / (pc.Hkv * pc.S);
        uint krow = ((b * pc.S + s) * pc.Hkv + hk) * D;
        for (uint d = tid; d < D; d += AWG) { va[d] = ldk(pc.koff, krow + d); vb[d] = ldv(pc.voff, krow + d); }
        barrier();
        uint grp = pc.Hq / pc.Hkv;
        uint tmin = s > pc.pos0 ? s - pc.pos0 : 0u;
        for (uint h = hk * grp; h < hk * grp + grp; h++) {
            for (uint t0 = tmin; t0 < pc.T; t0 += AWG) {
                uint t = t0 + tid;
                float p = 0.0, ds = 0.0;
                if (t < pc.T) {
                    uint qrow = ((b * pc.T + t) * pc.Hq + h) * D;
                    float sc = 0.0, dp = 0.0;
                    for (uint d = 0u; d < D; d++) {
                        sc += ldq(pc.qoff, qrow + d) * va[d];
                        dp += lddo(pc.dooff, qrow + d) * vb[d];
                    }
                    uint li = (b * pc.Hq + h) * pc.T + t;
                    p = exp(sc * pc.scale - uintBitsToFloat(lse[(pc.lseoff >> 2) + li]));
                    ds = p * (dp - uintBitsToFloat(tmp[(pc.toff >> 2) + li]));
                }
                ps[tid] = p;
                dss[tid] = ds;
                barrier();
                uint cnt = min(AWG, pc.T - t0);
                [[unroll]] for (uint i = 0u; i < uint(NACC); i++) {
                    uint d = tid + AWG * i;
                    if (d >= D) continue;
                    float a1 = acc[i], a2 = acc2[i];
                    for (uint j = 0u; j < cnt; j++) {
                        uint qrow = ((b * pc.T + t0 + j) * pc.Hq + h) * D;
                        a1 += dss[j] * ldq(pc.qoff, qrow + d);
                        a2 += ps[j] * lddo(pc.dooff, qrow + d);
                    }
                    acc[i] = a1; acc2[i] = a2;
                }
                barrier();
            }
        }
        [[unroll]] for (uint i = 0u; i < uint(NACC); i++) {
            uint d = tid + AWG * i;
            if (d >= D) continue;
            r0[(pc.r0off >> 2) + krow + d] = floatBitsToUint(acc[i] * pc.scale);
            r1[(pc.r1off >> 2) + krow + d] = floatBitsToUint(acc2[i]);
        }
        return;
    }

    if (gi >= pc.B * pc.T * pc.Hq) return;                 /* uniform */
    uint h = gi % pc.Hq, t = (gi / pc.Hq) % pc.T, b = gi / (pc.Hq * pc.T);
    uint hk = h / (pc.Hq / pc.Hkv);
    uint qrow = ((b * pc.T + t) * pc.Hq + h) * D;
    uint li = (b * pc.Hq + h) * pc.T + t;
    uint last = pc.pos0 + t;                               /* < S (validated) */
    for (uint d = tid; d < D; d += AWG) va[d] = ldq(pc.qoff, qrow + d);

    if (pc.mode == 1u) {
        float dd = 0.0;
        for (uint d = tid; d < D; d += AWG) {
            float g = lddo(pc.dooff, qrow + d);
            vb[d] = g;
            dd += g * ldo(pc.ooff, qrow + d);
        }
        float Dt = wg_sum(dd);                             /* barrier: va, vb visible */
        if (tid == 0u) tmp[(pc.toff >> 2) + li] = floatBitsToUint(Dt);
        float lsei = uintBitsToFloat(lse[(pc.lseoff >> 2) + li]);
        for (uint s0 = 0u; s0 <= last; s0 += AWG) {
            uint s = s0 + tid;
            float ds = 0.0;
            if (s <= last) {
                uint krow = ((b * pc.S + s) * pc.Hkv + hk) * D;
                float sc = 0.0, dp = 0.0;
                for (uint d = 0u; d < D; d++) {
                    sc += va[d] * ldk(pc.koff, krow + d);
                    dp += vb[d] * ldv(pc.voff, krow + d);
                }
                float p = exp(sc * pc.scale - lsei);
                ds = p * (dp - Dt);
            }
            dss[tid] = ds;
            barrier();
            uint cnt = min(AWG, last + 1u - s0);
            [[unroll]] for (uint i = 0u; i < uint(NACC); i++) {
                uint d = tid + AWG * i;
                if (d >= D) continue;
                float a = acc[i];
                for (uint j = 0u; j < cnt; j++)
                    a += dss[j] * ldk(pc.koff, ((b * pc.S + s0 + j) * pc.Hkv + hk) * D + d);
                acc[i] = a;
            }
            barrier();
        }
        [[unroll]] for (uint i = 0u; i < uint(NACC); i++) {
            uint d = tid + AWG * i;
            if (d < D) r0[(pc.r0off >> 2) + qrow + d] = floatBitsToUint(acc[i] * pc.scale);
        }
        return;
    }

    barrier();
    float m = -1.0 / 0.0, l = 0.0;
    for (uint s0 = 0u; s0 <= last; s0 += AWG) {
        uint s = s0 + tid;
        float sc = -1.0 / 0.0;
        if (s <= last) {
            uint krow = ((b * pc.S + s) * pc.Hkv + hk) * D;
            float dot_ = 0.0;
            for (uint d = 0u; d < D; d++) dot_ += va[d] * ldk(pc.koff, krow + d);
            sc = dot_ * pc.scale;
        }
        float mn = max(m, wg_max(sc));
        float p = s <= last ? exp(sc - mn) : 0.0;
        ps[tid] = p;
        float bl = wg_sum(p);                              /* barrier: ps visible */
        float corr = exp(m - mn);
        l = l * corr + bl;
        uint cnt = min(AWG, last + 1u - s0);
        [[unroll]] for (uint i = 0u; i < uint(NACC); i++) {
            uint d = tid + AWG * i;
            if (d >= D) continue;
            float a = acc[i] * corr;
            for (uint j = 0u; j < cnt; j++)
                a += ps[j] * ldv(pc.voff, ((b * pc.S + s0 + j) * pc.Hkv + hk) * D + d);
            acc[i] = a;
        }
        m = mn;
        barrier();
    }
    [[unroll]] for (uint i = 0u; i < uint(NACC); i++) {
        uint d = tid + AWG * i;
        if (d < D) r0[(pc.r0off >> 2) + qrow + d] = floatBitsToUint(acc[i] / l);
    }
    if (tid == 0u && pc.has_lse != 0u) r1[(pc.r1off >> 2) + li] = floatBitsToUint(m + log(l));
}
