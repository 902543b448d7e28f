/* cherryq: the per-32-code arithmetic of the int8-activation CUDA GEMV
 * (cuda/qmatmul.cu, fast-GEMV variant 4), shared by the kernel and a host
 * test (tests/test_qgemv_q8.c) so that the decoding and the x permutation
 * the device runs are checked on every CI machine, GPU or not.
 *
 * A 32-column sub-chunk of a packed row is `bits` 32-bit words (the row's
 * LSB-first bit stream; 3-bit: four 24-bit words of 8 codes). It decodes into
 * 8 words of 4 unsigned bytes (one code per byte), and x, quantized to int8,
 * is stored for the sub-chunk in the order that pairs byte b of decoded word
 * i with column cqk_q8_col(bits, i, b), so that one dp4a per decoded word
 * multiplies 4 codes with their 4 x values:
 *
 *   bits 2: word t (0..1) shifted by 2k (k = 0..3), AND 0x03030303:
 *           byte b holds code 4b + k of word t -> column 16t + 4b + k, i = 4t + k
 *   bits 3: bytes 3m, 3m+1, 3m+2 of the 12 are 24-bit word m (codes 8m..8m+7);
 *           three byte permutes (prmt) gather byte j of every 24-bit word into
 *           one register R_j (byte b = word b), then shifts, ANDs and two
 *           ORs (codes 2 and 5 straddle a byte) give code k of all four words:
 *           byte b -> column 8b + k, i = k
 *   bits 4: word t (0..3), AND 0x0F0F0F0F (even codes), shifted by 4 (odd):
 *           byte b -> column 8t + 2b + h, i = 2t + h
 *   bits 8: word t is 4 codes as they are: byte b -> column 4t + b, i = t
 *
 * About 1.1 instructions a code for 3-bit (6 prmt, 21 shift/AND/OR, 8 dp4a per
 * 32 codes) against 3 for the f32 kernel (LOP3 + FADD + FFMA per code).
 */
#ifndef CQ_CUDA_QGEMV_Q8_H
#define CQ_CUDA_QGEMV_Q8_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define CQK_Q8_FN static __host__ __device__ __forceinline__
#else
#define CQK_Q8_FN static inline
#endif

/* Column (0..31) of the sub-chunk that byte b of decoded word i holds. */
CQK_Q8_FN int cqk_q8_col(int bits, int i, int b)
{
    switch (bits) {
    case 2: return 16 * (i >> 2) + 4 * b + (i & 3);
    case 3: return 8 * b + i;
    case 4: return 8 * (i >> 1) + 2 * b + (i & 1);
    default: return 4 * i + b;
    }
}

/* Byte position (4 i + b) in the sub-chunk's 32 bytes of int8 x where column
 * j (0..31) goes: the inverse of cqk_q8_col. */
CQK_Q8_FN int cqk_q8_pos(int bits, int j)
{
    switch (bits) {
    case 2: return 4 * (4 * (j >> 4) + (j & 3)) + ((j >> 2) & 3);
    case 3: return 4 * (j & 7) + (j >> 3);
    case 4: return 4 * (2 * (j >> 3) + (j & 1)) + ((j >> 1) & 3);
    default: return j;
    }
}

/* __byte_perm: byte n of the result is byte ((s >> 4n) & 7) of {y, x}. */
CQK_Q8_FN uint32_t cqk_prmt(uint32_t x, uint32_t y, uint32_t s)
{
#if defined(__CUDA_ARCH__)
    return __byte_perm(x, y, s);
#else
    const uint64_t v = ((uint64_t)y << 32) | x;
    uint32_t r = 0;
    for (int n = 0; n < 4; n++) r |= (uint32_t)((v >> (8 * ((s >> (4 * n)) & 7))) & 0xFF) << (8 * n);
    return r;
#endif
}

/* c + sum over the 4 bytes of (unsigned byte of a) * (signed byte of b). */
CQK_Q8_FN int32_t cqk_dp4a_us(uint32_t a, uint32_t b, int32_t c)
{
#if defined(__CUDA_ARCH__)
    int32_t d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#else
    for (int n = 0; n < 4; n++) c += (int32_t)((a >> (8 * n)) & 0xFF) * (int32_t)(int8_t)(uint8_t)(b >> (8 * n));
    return c;
#endif
}

/* The 32 codes of `bits` words w as 8 words of 4 byte codes, in the order
 * of cqk_q8_col. */
CQK_Q8_FN void cqk_q8_decode(int bits, const uint32_t *w, uint32_t *v)
{
    if (bits == 2) {
        for (int t = 0; t < 2; t++)
            for (int k = 0; k < 4; k++) v[4 * t + k] = (w[t] >> (2 * k)) & 0x03030303u;
    } else if (bits == 3) {
        /* R_j = byte j of the four 24-bit words (stream bytes j, 3 + j, 6 + j, 9 + j) */
        const uint32_t r0 = cqk_prmt(cqk_prmt(w[0], w[1], 0x0630u), w[2], 0x5210u);
        const uint32_t r1 = cqk_prmt(cqk_prmt(w[0], w[1], 0x0741u), w[2], 0x6210u);
        const uint32_t r2 = cqk_prmt(cqk_prmt(w[0], w[1], 0x0052u), w[2], 0x7410u);
        const uint32_t m = 0x07070707u;
        v[0] = r0 & m;
        v[1] = (r0 >> 3) & m;
        v[2] = ((r0 >> 6) & 0x03030303u) | ((r1 << 2) & 0x04040404u);
        v[3] = (r1 >> 1) & m;
        v[4] = (r1 >> 4) & m;
        v[5] = ((r1 >> 7) & 0x01010101u) | ((r2 << 1) & 0x06060606u);
        v[6] = (r2 >> 2) & m;
        v[7] = (r2 >> 5) & m;
    } else if (bits == 4) {
        for (int t = 0; t < 4; t++) {
            v[2 * t] = w[t] & 0x0F0F0F0Fu;
            v[2 * t + 1] = (w[t] >> 4) & 0x0F0F0F0Fu;
        }
    } else {
        for (int t = 0; t < 8; t++) v[t] = w[t];
    }
}

/* sum_j u_j xq_j over the 32 codes of w, xq in the sub-chunk's permuted
 * order as 8 words (exact: |sum| <= 32 * 255 * 127). */
CQK_Q8_FN int32_t cqk_q8_dot32(int bits, const uint32_t *w, const uint32_t *xq)
{
    uint32_t v[8];
    cqk_q8_decode(bits, w, v);
    int32_t d = 0;
    for (int i = 0; i < 8; i++) d = cqk_dp4a_us(v[i], xq[i], d);
    return d;
}

/* ---------------------------------------------------------------- x
 * x is quantized per 128-column block (one block per 128-column chunk of a
 * row) exactly as the CPU's cq_qmm_quant_x8: inv = 127 / amax, q =
 * round-to-nearest-even(x * inv) clamped to [-127, 127], sx = amax / 127,
 * so cq_qmm_gemv_q8_ref is this kernel's oracle. In shared memory the int8
 * x of a chunk is 8 units of 16 bytes (units 2k, 2k+1: sub-chunk k), XOR-
 * swizzled by the chunk index so that the 16-byte loads of 8 lanes reading
 * 8 consecutive chunks hit 8 different groups of 4 banks. */

CQK_Q8_FN int cqk_q8_quant(float x, float inv)
{
#if defined(__CUDA_ARCH__)
    const int q = __float2int_rn(x * inv);
#else
    const long q = lrintf(x * inv);
#endif
    return q < -127 ? -127 : q > 127 ? 127 : (int)q;
}

/* 16-byte unit of half h (bytes 16h .. 16h+15) of sub-chunk k of chunk ch. */
CQK_Q8_FN int64_t cqk_q8_unit(int64_t ch, int k, int h)
{
    return ch * 8 + ((2 * k + h) ^ (int)(ch & 7));
}

/* Byte offset of column c's int8 x in the staged buffer. */
CQK_Q8_FN int64_t cqk_q8_byte(int bits, int64_t c)
{
    const int pos = cqk_q8_pos(bits, (int)(c & 31));
    return cqk_q8_unit(c >> 7, (int)((c >> 5) & 3), pos >> 4) * 16 + (pos & 15);
}

/* A sub-chunk's share of the row: s * sx * (sum u xq - off * sum xq). The
 * inner difference is exact in f32 (integers below 2^24, off a multiple of
 * 0.5), so the kernel rounds only at the scale products and the sum. */
CQK_Q8_FN float cqk_q8_term(float s, float sx, int32_t dot, float off, int32_t sq, float acc)
{
    return fmaf(s * sx, fmaf(-off, (float)sq, (float)dot), acc);
}

#endif
