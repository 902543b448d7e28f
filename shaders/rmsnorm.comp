#version 450
/* RMSNorm over the last dim (C) of contiguous f32 rows, and its backward.
 *   mode 0 (fwd, one workgroup per row): y = x * rstd * w,
 *          rstd = 1 / sqrt(mean(x^2) + eps)
 *   mode 1 (bwd dx, one workgroup per row):
 *          dx = rstd * (w dy) - x rstd^3 * sum(w dy x) / C; rstd -> tmp[row]
 *   mode 2 (bwd dw, one invocation per column): dw[c] = sum_r dy x rstd_r,
 *          rows in order (deterministic). */
#include "common.glsl"
#include "reduce.glsl"

layout(binding = 0) readonly buffer Xb { uint x[]; };
layout(binding = 1) readonly buffer Wb { uint w[]; };
layout(binding = 2) readonly buffer DYb { uint dy[]; };
layout(binding = 3) buffer Ob { uint o[]; };     /* y (fwd), dx (bwd) or dw */
layout(binding = 4) buffer Tb { uint tmp[]; };   /* rstd per row (bwd) */

layout(push_constant) uniform PC {
    uint xoff, woff, dyoff, ooff, toff, rows, C, mode;
    float eps;
} pc;

DEF_LOAD_F32(ldx, x)
DEF_LOAD_F32(ldw, w)
DEF_LOAD_F32(lddy, dy)

void main()
{
    uint t = gl_LocalInvocationID.x;
    if (pc.mode == 2u) {
        uint c = gid_linear();
        if (c >= pc.C) return;
        float acc = 0.0;
        for (uint r = 0u; r < pc.rows; r++) {
            uint i = r * pc.C + c;
            acc += lddy(pc.dyoff, i) * ldx(pc.xoff, i) * uintBitsToFloat(tmp[(pc.toff >> 2) + r]);
        }
        o[(pc.ooff >> 2) + c] = floatBitsToUint(acc);
        return;
    }
    uint row = group_linear();
    if (row >= pc.rows) return;            /* uniform over the workgroup */
    uint base = row * pc.C;
    float ss = 0.0;
    for (uint c = t; c < pc.C; c += WG) {
        float v = ldx(pc.xoff, base + c);
        ss += v * v;
    }
    ss = wg_sum(ss);
    float rstd = 1.0 / sqrt(ss / float(pc.C) + pc.eps);
    if (pc.mode == 0u) {
        for (uint c = t; c < pc.C; c += WG)
            o[(pc.ooff >> 2) + base + c] = floatBitsToUint(ldx(pc.xoff, base + c) * rstd * ldw(pc.woff, c));
        return;
    }
    float dot_ = 0.0;
    for (uint c = t; c < pc.C; c += WG)
        dot_ += ldw(pc.woff, c) * lddy(pc.dyoff, base + c) * ldx(pc.xoff, base + c);
    dot_ = wg_sum(dot_);
    float k = rstd * rstd * rstd * dot_ / float(pc.C);
    for (uint c = t; c < pc.C; c += WG) {
        float xv = ldx(pc.xoff, base + c);
        float g = ldw(pc.woff, c) * lddy(pc.dyoff, base + c);
        o[(pc.ooff >> 2) + base + c] = floatBitsToUint(rstd * g - xv * k);
    }
    if (t == 0u) tmp[(pc.toff >> 2) + row] = floatBitsToUint(rstd);
}
