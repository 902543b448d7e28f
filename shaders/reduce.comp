#version 450
/* Deterministic sum of an f32 array in passes: workgroup w sums elements
 * [w*per_wg, (w+1)*per_wg) (squared when square = 1; compensated per
 * invocation, then a tree) and writes out[w] = scale * sum. The host repeats
 * it until one value is left (SUMSQ, the XENT loss). */
#include "common.glsl"
#include "reduce.glsl"

layout(binding = 0) readonly buffer Ib { uint src[]; };
layout(binding = 1) buffer Ob { uint dst[]; };

layout(push_constant) uniform PC {
    uint ioff, ooff, n, per_wg, square, pad0;
    float scale;
} pc;

void main()
{
    uint w = group_linear();
    uint lo = w * pc.per_wg;
    if (lo >= pc.n) return;
    uint hi = min(pc.n, lo + pc.per_wg);
    precise float s = 0.0, c = 0.0;
    for (uint i = lo + gl_LocalInvocationID.x; i < hi; i += WG) {
        float v = uintBitsToFloat(src[(pc.ioff >> 2) + i]);
        if (pc.square != 0u) v = v * v;
        precise float y = v - c;
        precise float t = s + y;
        c = (t - s) - y;
        s = t;
    }
    float r = wg_sum(s);
    if (gl_LocalInvocationID.x == 0u) dst[(pc.ooff >> 2) + w] = floatBitsToUint(r * pc.scale);
}
