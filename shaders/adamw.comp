#version 450
/* AdamW, PyTorch semantics, in place on param/m/v (f32), gradient src. */
#include "common.glsl"

layout(binding = 0) readonly buffer G { uint g[]; };
layout(binding = 1) buffer P { uint p[]; };
layout(binding = 2) buffer M { uint m[]; };
layout(binding = 3) buffer V { uint v[]; };

layout(push_constant) uniform PC {
    uint goff, poff, moff, voff, n, pad0;
    float lr, b1, b2, eps, wd, bc1, bc2, gscale;
} pc;

void main()
{
    uint i = gid_linear();
    if (i >= pc.n) return;
    uint pi = (pc.poff >> 2) + i, mi = (pc.moff >> 2) + i, vi = (pc.voff >> 2) + i;
    float gr = uintBitsToFloat(g[(pc.goff >> 2) + i]) * pc.gscale;
    float pr = uintBitsToFloat(p[pi]);
    float mr = uintBitsToFloat(m[mi]);
    float vr = uintBitsToFloat(v[vi]);
    pr -= pc.lr * pc.wd * pr;
    mr = pc.b1 * mr + (1.0 - pc.b1) * gr;
    vr = pc.b2 * vr + (1.0 - pc.b2) * gr * gr;
    pr -= (pc.lr / pc.bc1) * mr / (sqrt(vr) / sqrt(pc.bc2) + pc.eps);
    p[pi] = floatBitsToUint(pr);
    m[mi] = floatBitsToUint(mr);
    v[vi] = floatBitsToUint(vr);
}
