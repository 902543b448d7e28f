#version 450
/* Rotary embedding, Hugging Face "rotate half", on contiguous f32
 * x [B, T, H, D]; one invocation per (row, j < D/2). inv_freq[j] comes from
 * a table the host computes (exactly as the CPU reference does); the angle
 * pos * inv_freq is formed exactly (two_prod) and reduced to [-pi, pi] before
 * sin/cos, so large positions keep their accuracy on GPUs whose sin/cos are
 * only accurate near 0.
 * inverse = 1 rotates by -a (the backward pass). dst may alias src. */
#include "common.glsl"

layout(binding = 0) readonly buffer Xb { uint x[]; };
layout(binding = 1) readonly buffer Fb { uint freq[]; };
layout(binding = 2) buffer Yb { uint y[]; };

layout(push_constant) uniform PC {
    uint xoff, foff, yoff, rows, T, H, D, pos0, inverse, n;
} pc;

void main()
{
    uint i = gid_linear();
    if (i >= pc.n) return;
    uint half_ = pc.D / 2u;
    uint row = i / half_, j = i % half_;
    uint t = (row / pc.H) % pc.T;
    float inv = uintBitsToFloat(freq[(pc.foff >> 2) + j]);
    /* a = pos * inv_freq exactly (as the reference's double product): a + ae */
    float a, ae;
    two_prod(float(pc.pos0 + t), inv, a, ae);
    /* r = a - k*2pi, 2pi = C1 + C2 + C3 with C1 (8 bits) and C2 (13 bits)
     * short enough that k*C1 and k*C2 are exact for k < 2^11 (|a| < 12800) */
    precise float k = roundEven(a * 0.15915494309189535);
    precise float r = a - k * 6.28125;
    r = r - k * 0.0019352436065673828;
    r = (r - k * 6.357301884918343e-08) + ae;
    float c = cos(r), s = sin(r);
    if (pc.inverse != 0u) s = -s;
    uint b = (pc.xoff >> 2) + row * pc.D + j;
    float x0 = uintBitsToFloat(x[b]);
    float x1 = uintBitsToFloat(x[b + half_]);
    uint ob = (pc.yoff >> 2) + row * pc.D + j;
    y[ob] = floatBitsToUint(x0 * c - x1 * s);
    y[ob + half_] = floatBitsToUint(x1 * c + x0 * s);
}
