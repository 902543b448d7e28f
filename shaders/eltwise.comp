#version 450
/* Element-wise f32 ops over contiguous tensors (one invocation per element):
 *   mode 0 ADD        d = x + y[i % ny]
 *   mode 1 MUL        d = x * y[i % ny]
 *   mode 2 SCALE      d = a * x + b
 *   mode 3 AXPY       d += a * x
 *   mode 4 SQR_ACCUM  d = d * a + x * x * b      (a = n/(n+1), b = 1/(n+1))
 * dst may alias x (in place). */
#include "common.glsl"

layout(binding = 0) readonly buffer X { uint x[]; };
layout(binding = 1) readonly buffer Y { uint y[]; };
layout(binding = 2) buffer D { uint d[]; };

layout(push_constant) uniform PC {
    uint xoff, yoff, doff, n, ny, mode;
    float a, b;
} pc;

DEF_LOAD_F32(ldx, x)
DEF_LOAD_F32(ldy, y)
DEF_LOAD_F32(ldd, d)

void main()
{
    uint i = gid_linear();
    if (i >= pc.n) return;
    float v = ldx(pc.xoff, i);
    float r;
    switch (pc.mode) {
    case 0u: r = v + ldy(pc.yoff, i % pc.ny); break;
    case 1u: r = v * ldy(pc.yoff, i % pc.ny); break;
    case 2u: r = pc.a * v + pc.b; break;
    case 3u: r = ldd(pc.doff, i) + pc.a * v; break;
    default: r = ldd(pc.doff, i) * pc.a + v * v * pc.b; break;
    }
    d[(pc.doff >> 2) + i] = floatBitsToUint(r);
}
