#version 450
/* CherryQ fake quantization (core/quant.h cq_quant_fakequant, bit for bit): one
 * workgroup per (row, group) of w [rows, cols] f32.
 *   max|w| over the group's normal weights (mask u8 == 0), then
 *   b <= 4: s = (max + 1e-6) / 2^(b-1); w' = (rint(clamp(w/s, +-lim) - 0.5) + 0.5) s
 *   b  > 4: s = (max + 1e-6) / (2^(b-1)-1); w' = clamp(rint(w/s), +-(2^(b-1)-1)) s
 *   rint = roundEven; divisions correctly rounded (div_rn).
 *   fp16: the scale goes through FP16 (s_d); codes use s_q = s_d unless it
 *   rounded to 0 (then the float32 scale; the group dequantizes to 0).
 *   Cherries keep their value (FP16-rounded when fp16).
 * A non-finite weight or scale sets bit 0 of the status word (binding 3),
 * which the host turns into CQ_ERANGE at the next sync. */
#include "common.glsl"
#include "reduce.glsl"

layout(binding = 0) readonly buffer Wb { uint w[]; };
layout(binding = 1) readonly buffer Mb { uint mk[]; };
layout(binding = 2) buffer Db { uint d[]; };
layout(binding = 3) buffer Eb { uint status[]; };

layout(push_constant) uniform PC {
    uint woff, moff, doff, rows, cols, bits, G, ngroups, fp16, has_mask;
    float lim_lo4;     /* (float)(2^(b-1) - 0.01) computed in double by the host */
} pc;

DEF_LOAD_F32(ldw, w)
DEF_LOAD_U8(ldm, mk)

float quant_value(float v, float s)
{
    float x = div_rn(v, s);
    if (pc.bits <= 4u) {
        x = clamp(x, -pc.lim_lo4, pc.lim_lo4);
        precise float q = roundEven(x - 0.5);
        return (q + 0.5) * s;
    }
    float lim = float((1u << (pc.bits - 1u)) - 1u);
    float r = clamp(roundEven(x), -lim, lim);
    return r * s;
}

float quant_level_dequant(float v, float sq, float sd)
{
    float x = div_rn(v, sq);
    if (pc.bits <= 4u) {
        x = clamp(x, -pc.lim_lo4, pc.lim_lo4);
        precise float q = roundEven(x - 0.5);
        return (q + 0.5) * sd;
    }
    float lim = float((1u << (pc.bits - 1u)) - 1u);
    float r = clamp(roundEven(x), -lim, lim);
    /* the level is an integer on the CPU (no -0): clear the sign of a zero
     * on the bits (float arithmetic may not keep signed zeros without
     * float controls, so x + 0.0 would not do) */
    uint rb = floatBitsToUint(r);
    if ((rb & 0x7fffffffu) == 0u) rb = 0u;
    return uintBitsToFloat(rb) * sd;
}

void main()
{
    uint gi = group_linear();
    uint row = gi / pc.ngroups, g = gi % pc.ngroups;
    if (row >= pc.rows) return;                         /* uniform */
    uint tid = gl_LocalInvocationID.x;
    uint c0 = g * pc.G, c1 = min(c0 + pc.G, pc.cols);
    uint base = row * pc.cols;
    float mx = 0.0, bad = 0.0;
    for (uint j = c0 + tid; j < c1; j += WG) {
        float a = abs(ldw(pc.woff, base + j));
        if (!(a <= 3.4028234663852886e38)) bad = 1.0;
        if (pc.has_mask != 0u && ldm(pc.moff, base + j) != 0u) continue;
        mx = max(mx, a);
    }
    mx = wg_max(mx);
    bad = wg_max(bad);
    float den = pc.bits <= 4u ? float(1u << (pc.bits - 1u)) : float((1u << (pc.bits - 1u)) - 1u);
    precise float s = div_rn(mx + 1e-6, den);
    float sd = s, sq = s;
    if (pc.fp16 != 0u) {
        sd = f16_round(s);
        sq = sd != 0.0 ? sd : s;
    }
    if (bad != 0.0 || isinf(sd) || isnan(sd)) {
        if (tid == 0u) atomicOr(status[0], 1u);
        return;
    }
    for (uint j = c0 + tid; j < c1; j += WG) {
        float v = ldw(pc.woff, base + j);
        float r;
        if (pc.has_mask != 0u && ldm(pc.moff, base + j) != 0u) r = pc.fp16 != 0u ? f16_round(v) : v;
        else if (sq == sd) r = quant_value(v, sd);
        else r = quant_level_dequant(v, sq, sd);
        d[(pc.doff >> 2) + base + j] = floatBitsToUint(r);
    }
}
