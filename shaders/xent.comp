#version 450
/* Cross-entropy over contiguous f32 logits [N, V].
 *   mode 0 (one workgroup per row): lse[n] = log-sum-exp(logits[n, :]);
 *          nll[n] = lse - logits[n, target] (0 if target < 0).
 *   mode 1 XENT_BWD (one invocation per (n, v)):
 *          dlogits = dloss * scale * (exp(logit - lse) - [v == target]),
 *          0 for ignored rows. */
#include "common.glsl"
#include "reduce.glsl"

layout(binding = 0) readonly buffer Lg { uint lg[]; };
layout(binding = 1) readonly buffer Tg { uint tg[]; };
layout(binding = 2) buffer Ls { uint lse[]; };
layout(binding = 3) buffer Nl { uint nll[]; };    /* nll (fwd) or dloss (bwd) */
layout(binding = 4) buffer Dl { uint dl[]; };     /* dlogits (bwd) */

layout(push_constant) uniform PC {
    uint loff, toff, lseoff, nlloff, dloff, N, V, mode;
    float scale;
} pc;

DEF_LOAD_F32(ldl, lg)

void main()
{
    if (pc.mode == 1u) {
        uint i = gid_linear();
        if (i >= pc.N * pc.V) return;
        uint n = i / pc.V, v = i % pc.V;
        int tgt = int(tg[(pc.toff >> 2) + n]);
        float r = 0.0;
        if (tgt >= 0) {
            float p = exp(ldl(pc.loff, i) - uintBitsToFloat(lse[(pc.lseoff >> 2) + n]));
            float g = uintBitsToFloat(nll[pc.nlloff >> 2]) * pc.scale;
            r = g * (p - (int(v) == tgt ? 1.0 : 0.0));
        }
        dl[(pc.dloff >> 2) + i] = floatBitsToUint(r);
        return;
    }
    uint row = group_linear();
    if (row >= pc.N) return;
    uint t = gl_LocalInvocationID.x;
    uint base = row * pc.V;
    float mx = -1.0 / 0.0;
    for (uint v = t; v < pc.V; v += WG) mx = max(mx, ldl(pc.loff, base + v));
    mx = wg_max(mx);
    float s = 0.0;
    for (uint v = t; v < pc.V; v += WG) s += exp(ldl(pc.loff, base + v) - mx);
    s = wg_sum(s);
    if (t == 0u) {
        float l = mx + log(s);
        lse[(pc.lseoff >> 2) + row] = floatBitsToUint(l);
        int tgt = int(tg[(pc.toff >> 2) + row]);
        float nl = tgt >= 0 ? l - ldl(pc.loff, base + uint(tgt)) : 0.0;
        nll[(pc.nlloff >> 2) + row] = floatBitsToUint(nl);
    }
}
