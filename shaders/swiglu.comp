#version 450
/* SwiGLU product and its backward, element-wise over contiguous f32.
 *   fwd:  d0 = silu(g) * u                  (u absent: plain silu)
 *   bwd:  d0 = dy * u * silu'(g),  d1 = dy * silu(g)
 * silu(g) = g * sigmoid(g), silu'(g) = s (1 + g (1 - s)). */
#include "common.glsl"

layout(binding = 0) readonly buffer Gb { uint g[]; };
layout(binding = 1) readonly buffer Ub { uint u[]; };
layout(binding = 2) readonly buffer DYb { uint dy[]; };
layout(binding = 3) buffer D0 { uint d0[]; };
layout(binding = 4) buffer D1 { uint d1[]; };

layout(push_constant) uniform PC {
    uint goff, uoff, dyoff, d0off, d1off, n, has_u, bwd;
} pc;

DEF_LOAD_F32(ldg, g)
DEF_LOAD_F32(ldu, u)
DEF_LOAD_F32(lddy, dy)

void main()
{
    uint i = gid_linear();
    if (i >= pc.n) return;
    float gv = ldg(pc.goff, i);
    float s = 1.0 / (1.0 + exp(-gv));
    float silu = gv * s;
    float uv = pc.has_u != 0u ? ldu(pc.uoff, i) : 1.0;
    if (pc.bwd == 0u) {
        d0[(pc.d0off >> 2) + i] = floatBitsToUint(silu * uv);
    } else {
        float dyv = lddy(pc.dyoff, i);
        d0[(pc.d0off >> 2) + i] = floatBitsToUint(dyv * uv * (s * (1.0 + gv * (1.0 - s))));
        if (pc.has_u != 0u) d1[(pc.d1off >> 2) + i] = floatBitsToUint(dyv * silu);
    }
}
