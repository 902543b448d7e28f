/* cherryq Vulkan shaders: shared helpers.
 *
 * Every storage buffer is bound as an array of 32-bit words (`uint`), so no
 * optional 8/16-bit storage feature is needed: f32 via uintBitsToFloat, f16 /
 * bf16 / u16 / u8 by extracting bits from words. Offsets the host passes in
 * push constants are BYTE offsets into the binding (the host binds a window
 * of at most maxStorageBufferRange bytes and passes where the tensor starts).
 *
 * Specialization constant 0 is the workgroup size (x); 1 the subgroup size.
 * Large 1-D grids use gl_WorkGroupID.y as the high part of the group index
 * (the host splits a dispatch into x <= 65535 and y). */
#extension GL_EXT_control_flow_attributes : enable

layout(constant_id = 0) const uint WG = 64;
layout(constant_id = 1) const uint SUBGROUP = 32;
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

uint group_linear(void)
{
    return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
}

uint gid_linear(void)
{
    return group_linear() * WG + gl_LocalInvocationID.x;
}

/* ---- IEEE half / bfloat16 <-> f32, as bit patterns (exactly core/base.c:
 * round to nearest even, quiet NaN for bf16, denormals kept). Working on bit
 * patterns avoids any denormal flushing by float arithmetic. */
uint f16_to_f32_bits(uint h)
{
    uint sign = (h & 0x8000u) << 16;
    uint e = (h >> 10) & 0x1fu;
    uint m = h & 0x3ffu;
    if (e == 0u) {
        if (m == 0u) return sign;
        int msb = findMSB(m);            /* 0..9 */
        uint sh = uint(10 - msb);
        m = (m << sh) & 0x3ffu;
        uint ee = uint(127 - 15 + 1) - sh;
        return sign | (ee << 23) | (m << 13);
    }
    if (e == 31u) return sign | 0x7f800000u | (m << 13);
    return sign | ((e - 15u + 127u) << 23) | (m << 13);
}

uint f32_bits_to_f16(uint x)
{
    uint sign = (x >> 16) & 0x8000u;
    uint e = (x >> 23) & 0xffu;
    uint m = x & 0x7fffffu;
    if (e == 0xffu) return sign | 0x7c00u | (m != 0u ? (0x200u | (m >> 13)) : 0u);
    int ne = int(e) - 127 + 15;
    if (ne >= 31) return sign | 0x7c00u;
    if (ne <= 0) {
        if (ne < -10) return sign;
        m |= 0x800000u;
        uint shift = uint(14 - ne);
        uint hm = m >> shift;
        uint rem = m & ((1u << shift) - 1u);
        uint half_ = 1u << (shift - 1u);
        if (rem > half_ || (rem == half_ && (hm & 1u) != 0u)) hm++;
        return sign | hm;
    }
    uint hm = m >> 13;
    uint rem = m & 0x1fffu;
    uint h = sign | (uint(ne) << 10) | hm;
    if (rem > 0x1000u || (rem == 0x1000u && (hm & 1u) != 0u)) h++;
    return h;
}

uint f32_bits_to_bf16(uint x)
{
    if ((x & 0x7fffffffu) > 0x7f800000u) return ((x >> 16) | 0x40u) & 0xffffu;
    x += 0x7fffu + ((x >> 16) & 1u);
    return x >> 16;
}

float f16_to_f32(uint h) { return uintBitsToFloat(f16_to_f32_bits(h)); }
float f16_round(float v) { return f16_to_f32(f32_bits_to_f16(floatBitsToUint(v))); }

/* Float dtype codes the host passes: 0 f32, 1 f16, 2 bf16. */
uint to_f32_bits(uint bits, uint dt)
{
    if (dt == 1u) return f16_to_f32_bits(bits);
    if (dt == 2u) return bits << 16;
    return bits;
}
uint from_f32_bits(uint x, uint dt)
{
    if (dt == 1u) return f32_bits_to_f16(x);
    if (dt == 2u) return f32_bits_to_bf16(x);
    return x;
}

/* Exact product a*b = p + e (Dekker / Veltkamp splitting). Uses only
 * `precise` (no contraction) multiplies and adds, which Vulkan rounds
 * correctly; fma() cannot be used: drivers may evaluate it unfused (lavapipe
 * does). Valid for |a|, |b| < 2^115 (no overflow in the split). */
void two_prod(float a, float b, out float p, out float e)
{
    precise float pp = a * b;
    precise float ca = 4097.0 * a;
    precise float ah = ca - (ca - a);
    precise float al = a - ah;
    precise float cb = 4097.0 * b;
    precise float bh = cb - (cb - b);
    precise float bl = b - bh;
    precise float ee = ((ah * bh - pp) + ah * bl + al * bh) + al * bl;
    p = pp;
    e = ee;
}

/* Division rounded to nearest like IEEE a / b (the Vulkan a / b may be off
 * by 2.5 ulp, or be a * rcp(b)): one correction by the exact residual. */
float div_rn(float a, float b)
{
    precise float q = a / b;
    float p, e;
    two_prod(q, b, p, e);
    precise float r = (a - p) - e;
    precise float q1 = q + r / b;
    return q1;
}

/* Loads of elements from a word array: byte offset boff of the tensor start,
 * element index i. Defined per buffer by macros since GLSL cannot pass an
 * unsized buffer array to a function. */
#define DEF_LOAD_F32(fn, arr) \
    float fn(uint boff, uint i) { return uintBitsToFloat(arr[(boff >> 2) + i]); }
#define DEF_LOAD_U16(fn, arr) \
    uint fn(uint boff, uint i) { uint ba = boff + 2u * i; return (arr[ba >> 2] >> ((ba & 2u) * 8u)) & 0xffffu; }
#define DEF_LOAD_U8(fn, arr) \
    uint fn(uint boff, uint i) { uint ba = boff + i; return (arr[ba >> 2] >> ((ba & 3u) * 8u)) & 0xffu; }
/* any float dtype (0 f32, 1 f16, 2 bf16) as f32 */
#define DEF_LOAD_ANYF(fn, arr) \
    float fn(uint boff, uint i, uint dt) { \
        if (dt == 0u) return uintBitsToFloat(arr[(boff >> 2) + i]); \
        uint ba = boff + 2u * i; \
        uint h = (arr[ba >> 2] >> ((ba & 2u) * 8u)) & 0xffffu; \
        return uintBitsToFloat(to_f32_bits(h, dt)); }
