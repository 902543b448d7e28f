/* cherryq: the int8-activation GEMV of the mixed matmul, AVX-512 VNNI + VBMI.
 * Built only into the cq_qmm_vnni static library with per-file ISA flags; the
 * dispatcher calls it only when the CPU has AVX512-VNNI and AVX512-VBMI.
 *
 * The codes are read in their on-disk layout (no repacking, see
 * qmm_internal.h for the super-block / unit vocabulary): one 64-byte load
 * (48 bytes of 3-bit codes) decodes into V vectors of 64 unsigned bytes
 *   8-bit: the bytes themselves;
 *   4-bit: AND 0x0F, and a 16-bit shift by 4 + AND (even, odd columns);
 *   2-bit: shifts by 0, 2, 4, 6 + AND 3;
 *   3-bit: one vpermb puts two 24-bit words (16 codes) into each qword, then
 *          two vpmultishiftqb pick the even and the odd codes of the 16 + AND 7,
 * and vpdpbusd multiplies them with the int8 x (permuted once per call into
 * the same column order), 4 products per dword lane. Per unit (the columns
 * sharing one weight scale and one x scale) the int32 lanes become f32 once,
 * times sw * sx. Four rows at a time share every x load (eight on the
 * interleaved codes: two blocks of four, two streams). No scalar tail: the
 * last loads of a row are masked to the row's bytes and x is zero past `in`.
 */
#include <immintrin.h>
#include <string.h>

#include "qmm_internal.h"

#define AI static inline __attribute__((always_inline))

_Static_assert(CQ_QMM_IL_ROWS == 4, "the kernel reads blocks of 4 interleaved rows");

/* ------------------------------------------------------------ x */

void cq_qmm_q8_prep_avx512vnni(const cq_qmm_q8plan *p, const float *x, int8_t *xq, float *sxu,
                               float *xqs, float *xd)
{
    const int64_t in = p->in, S = p->S, npad = p->npad, U = p->U;
    int8_t *nat = xq + npad;   /* natural order, zero padded to nnat */
    float s32[CQ_QMM_Q8_BLOCK / 32];
    for (int64_t b0 = 0; b0 < in; b0 += CQ_QMM_Q8_BLOCK) {
        const int64_t n = in - b0 < CQ_QMM_Q8_BLOCK ? in - b0 : CQ_QMM_Q8_BLOCK;
        __m512 mx = _mm512_setzero_ps();
        for (int64_t j = 0; j < n; j += 16) {
            __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
            mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + b0 + j)));
        }
        /* the same scalar expressions as cq_qmm_quant_x8 */
        const float amax = _mm512_reduce_max_ps(mx);
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        const float sx = amax > 0.0f ? amax / 127.0f : 0.0f;
        const __m512 iv = _mm512_set1_ps(inv);
        const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
        for (int64_t j = 0; j < CQ_QMM_Q8_BLOCK; j += 32) {
            __m512i q2[2];
            for (int h = 0; h < 2; h++) {
                const int64_t jj = j + 16 * h;
                __mmask16 m = jj >= n ? 0 : n - jj >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - jj)) - 1u);
                __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + b0 + jj), iv));
                q2[h] = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
                if (b0 + jj < npad) _mm_storeu_si128((__m128i *)(void *)(nat + b0 + jj), _mm512_cvtepi32_epi8(q2[h]));
            }
            s32[j / 32] = (float)_mm512_reduce_add_epi32(_mm512_add_epi32(q2[0], q2[1]));
        }
        for (int64_t u = b0 / U, k = 0; k < CQ_QMM_Q8_BLOCK / U && u < p->nu; u++, k++) {
            float s = 0.0f;   /* integers below 2^24: exact in any order */
            for (int64_t t = 0; t < U / 32; t++) s += s32[k * (U / 32) + t];
            xqs[u] = s;
            sxu[u] = sx;
        }
    }
    {   /* the blocks above wrote [0, min(npad, whole blocks)); zero the rest up to nnat */
        const int64_t wb = (in + CQ_QMM_Q8_BLOCK - 1) / CQ_QMM_Q8_BLOCK * CQ_QMM_Q8_BLOCK;
        for (int64_t j = wb < npad ? wb : npad; j < p->nnat; j++) nat[j] = 0;
    }
    for (int64_t u = p->nu; u < p->nu + 32; u++) xqs[u] = sxu[u] = 0.0f;
    if (xd)   /* sx_b(j) * xq_j, the x of the cherries' gathers and the lanes' spills */
        for (int64_t j = 0; j < in; j += 16) {
            const __mmask16 m = in - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (in - j)) - 1u);
            const __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, nat + j)));
            /* U (32, 64 or 128) is a multiple of 16: one unit per 16 columns */
            _mm512_mask_storeu_ps(xd + j, m, _mm512_mul_ps(q, _mm512_set1_ps(sxu[j / U])));
        }

    /* permute: position sb*S + k*64 + i <- column sb*S + V*i + k */
    uint8_t ix[4][64];
    for (int k = 0; k < p->V; k++)
        for (int i = 0; i < 64; i++)   /* V = 4: only i < 32 used, per 128-byte pair */
            ix[k][i] = (uint8_t)(p->V == 2 ? 2 * i + k : (4 * (i & 31) + k) & 127);
    for (int64_t sb = 0; sb < p->nsb; sb++) {
        const int8_t *s = nat + sb * S;
        int8_t *o = xq + sb * S;
        if (p->V == 1) {
            _mm512_store_si512((void *)o, _mm512_loadu_si512((const void *)s));
        } else if (p->V == 2) {
            const __m512i a = _mm512_loadu_si512((const void *)s), b = _mm512_loadu_si512((const void *)(s + 64));
            for (int k = 0; k < 2; k++)
                _mm512_store_si512((void *)(o + 64 * k),
                                   _mm512_permutex2var_epi8(a, _mm512_loadu_si512(ix[k]), b));
        } else {
            __m512i v[4];
            for (int t = 0; t < 4; t++) v[t] = _mm512_loadu_si512((const void *)(s + 64 * t));
            for (int k = 0; k < 4; k++) {
                const __m512i idx = _mm512_loadu_si512(ix[k]);
                const __m512i lo2 = _mm512_permutex2var_epi8(v[0], idx, v[1]);
                const __m512i hi2 = _mm512_permutex2var_epi8(v[2], idx, v[3]);
                _mm512_store_si512((void *)(o + 64 * k), _mm512_shuffle_i64x2(lo2, hi2, 0x44));
            }
        }
    }
}

/* ------------------------------------------------------------ rows */

/* Bytes [0, n) of p, n in (0, 64]: a plain load when the whole 64 bytes are
 * inside the row, a masked one (no access past the row) near its end. */
AI __m512i load_codes(const uint8_t *p, int64_t n)
{
    if (n >= 64) return _mm512_loadu_si512((const void *)p);
    return _mm512_maskz_loadu_epi8((__mmask64)((1ull << n) - 1ull), p);
}

/* Software prefetch CQ_QMM_PF bytes ahead in the row (not past its end).
 * Four rows are streamed at once per thread; the hardware prefetcher alone
 * left 1-thread DRAM-bound GEMV about 20% slower (3-bit 4096 x 4096: 1.29 ms
 * without, 1.0-1.06 ms with 256-512 bytes, 1.36-1.6 ms with 768). */
#define CQ_QMM_PF 384
/* Interleaved codes: one stream, prefetched CQ_QMM_IL_PF bytes per row ahead
 * (4 * 768 = 3 KiB; 1-thread 3-bit 4096 x 4096: 1.45 ms without in one run, 0.66-0.98
 * ms with 192..1536 bytes per row, no distance clearly best under the host's
 * +-15% noise). */
#define CQ_QMM_IL_PF 768
AI void prefetch_codes(const uint8_t *row, int64_t off, int64_t rb)
{
    if (off + CQ_QMM_PF < rb) _mm_prefetch((const char *)(row + off + CQ_QMM_PF), _MM_HINT_T0);
}

AI void decode(__m512i v, __m512i *d, const int B)
{
    if (B == 8) {
        d[0] = v;
    } else if (B == 4) {
        const __m512i m = _mm512_set1_epi8(0x0F);
        d[0] = _mm512_and_si512(v, m);
        d[1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
    } else if (B == 2) {
        const __m512i m = _mm512_set1_epi8(3);
        d[0] = _mm512_and_si512(v, m);
        d[1] = _mm512_and_si512(_mm512_srli_epi16(v, 2), m);
        d[2] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
        d[3] = _mm512_and_si512(_mm512_srli_epi16(v, 6), m);
    } else {
        /* qword q <- bytes 6q .. 6q+5 (words 2q, 2q+1: columns 16q .. 16q+15) */
        const __m512i idx = _mm512_set_epi8(
            47, 47, 47, 46, 45, 44, 43, 42, 41, 41, 41, 40, 39, 38, 37, 36,
            35, 35, 35, 34, 33, 32, 31, 30, 29, 29, 29, 28, 27, 26, 25, 24,
            23, 23, 23, 22, 21, 20, 19, 18, 17, 17, 17, 16, 15, 14, 13, 12,
            11, 11, 11, 10, 9, 8, 7, 6, 5, 5, 5, 4, 3, 2, 1, 0);
        /* byte e of a qword: the code at bit 6e (even columns) / 6e + 3 (odd) */
        const __m512i ev = _mm512_set1_epi64(0x2A241E18120C0600ll);
        const __m512i od = _mm512_set1_epi64(0x2D27211B150F0903ll);
        const __m512i m = _mm512_set1_epi8(7);
        const __m512i t = _mm512_permutexvar_epi8(idx, v);
        d[0] = _mm512_and_si512(_mm512_multishift_epi64_epi8(ev, t), m);
        d[1] = _mm512_and_si512(_mm512_multishift_epi64_epi8(od, t), m);
    }
}

/* Per-unit scales sw * sx of row r into sf (zero padded by 32); returns the
 * row's offset term c * sum_u sf_u * sum(xq in u). */
AI float row_scales(const cq_qmm_q8plan *p, int64_t r, const float *sxu, const float *xqs, float *sf)
{
    const uint16_t *sc = p->w->scales + r * p->ng;
    const int64_t nu = p->nu;
    if (p->upg == 1) {
        for (int64_t j = 0; j < nu; j += 16) {
            __mmask16 m = nu - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nu - j)) - 1u);
            __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, sc + j));
            _mm512_storeu_ps(sf + j, _mm512_mul_ps(s, _mm512_loadu_ps(sxu + j)));
        }
    } else if (p->upg == 0) {
        const __m512 s = _mm512_set1_ps(_cvtsh_ss(sc[0]));
        for (int64_t j = 0; j < nu; j += 16) _mm512_storeu_ps(sf + j, _mm512_mul_ps(s, _mm512_loadu_ps(sxu + j)));
    } else {
        for (int64_t u = 0; u < nu; u++) sf[u] = _cvtsh_ss(sc[u / p->upg]) * sxu[u];
    }
    for (int64_t j = nu; j < nu + 32; j++) sf[j] = 0.0f;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < nu; j += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(sf + j), _mm512_loadu_ps(xqs + j), acc);
    return p->c * _mm512_reduce_add_ps(acc);
}

/* Cherry correction of row r by gathers (weights without cherry lanes): 16
 * cherries at a time (masked loads and a masked gather: nothing past the
 * row's cherries), h(delta) times the dequantized x xd (qmm.h,
 * cq_qmm_gemv_q8_ref), added into the row's accumulator acc before its one
 * horizontal sum. */
AI __m512 cherry_acc(const cq_qmm_w *w, int64_t r, const float *xd, __m512 acc)
{
    const int32_t a = w->rowptr[r], b = w->rowptr[r + 1];
    const __m512i inv = _mm512_set1_epi32((int)w->in);
    for (int32_t i = a; i < b; i += 16) {
        __mmask16 m = b - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (b - i)) - 1u);
        __m512i c = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w->cols + i));
        m = _mm512_mask_cmplt_epi32_mask(m, c, inv);
        __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, c, xd, 4);
        const __m512 d = _mm512_maskz_loadu_ps(m, w->delta + i);
        /* h(d): round to FP16 and back; d itself where that overflows */
        __m512 h = _mm512_cvtph_ps(_mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        h = _mm512_mask_blend_ps(_mm512_fpclass_ps_mask(h, 0x18) & ~_mm512_fpclass_ps_mask(d, 0x18), h, d);
        acc = _mm512_fmadd_ps(h, xv, acc);
    }
    return acc;
}

/* NS streams (NS <= 2) of R rows each (R <= 4): stream s is rows [rs[s],
 * rs[s]+R), and all NS*R rows share every x load. Row layout (IL = 0): row
 * i at codes + (rs[s]+i)*rb, one stream per row. Interleaved (IL = 1,
 * cq_qmm_il): the R rows of stream s lie in one block of nb rows starting at
 * row rs[s] - i0; super-block sb of its row i0+i is at base_s + nb*sbb*sb +
 * (i0+i)*len, len = min(sbb, rb - sbb*sb): one sequential stream a block. */
AI void rows_t(const cq_qmm_q8plan *p, const int8_t *xq, const float *sxu, const float *xqs,
               const float *xd, float *y, const int64_t *rs, float *ws, const int NS, const int R,
               const int B, const int IL, int64_t i0, int64_t nb, const int CH)
{
    enum { MR = 8 };
    const int V = B == 8 ? 1 : B == 2 ? 4 : 2, NR = NS * R;
    const int64_t S = 64 * V, sbb = B == 3 ? 48 : 64, rb = p->rb, nsb = p->nsb;
    const int64_t stride = p->nu + 48;
    const uint8_t *row[MR], *base[2];
    const uint8_t *end = p->w->codes + p->out * rb;
    float *sf[MR], rowc[MR];
    __m512 tot[MR];
    for (int s = 0; s < NS; s++) base[s] = p->w->codes + (rs[s] - i0) * rb;
    for (int i = 0; i < NR; i++) {
        const int64_t r = rs[i / R] + i % R;
        row[i] = p->w->codes + r * rb;
        sf[i] = ws + i * stride;
        rowc[i] = row_scales(p, r, sxu, xqs, sf[i]);
        /* the cherries first: their gathers and the loads of rowptr, cols
         * and delta overlap the codes of the rows instead of waiting at
         * the end (cherry cost over the same matrix without them, 3-bit
         * 4096 x 4096 alternating passes: 12-20% -> 1-15%, docs/bench-qmm.md) */
        tot[i] = CH ? cherry_acc(p->w, r, xd, _mm512_setzero_ps()) : _mm512_setzero_ps();
    }
/* the codes of super-block sb of row i (stream i / R), decoded into dv */
#define LOAD_ROW(sb, i, dv)                                                                    \
    do {                                                                                       \
        const int64_t off = (sb) * sbb, len = rb - off < sbb ? rb - off : sbb;                 \
        if (IL) {                                                                              \
            const uint8_t *blk = base[(i) / R] + nb * off;                                     \
            if (blk + nb * CQ_QMM_IL_PF + R * sbb <= end)                                      \
                _mm_prefetch((const char *)(blk + nb * CQ_QMM_IL_PF + (i0 + (i) % R) * sbb), _MM_HINT_T0); \
            decode(load_codes(blk + (i0 + (i) % R) * len, len), dv, B);                        \
        } else {                                                                               \
            prefetch_codes(row[i], off, rb);                                                   \
            decode(load_codes(row[i] + off, len), dv, B);                                      \
        }                                                                                      \
    } while (0)
    if (p->U >= S) {
        /* whole super-blocks per unit: int32 sums over the unit, one scale */
        const int64_t ups = p->U / S;
        for (int64_t u = 0, sb0 = 0; u < p->nu; u++, sb0 += ups) {
            const int64_t sb1 = sb0 + ups < nsb ? sb0 + ups : nsb;
            __m512i acc[MR];
            for (int i = 0; i < NR; i++) acc[i] = _mm512_setzero_si512();
            for (int64_t sb = sb0; sb < sb1; sb++) {
                __m512i xk[4];
                for (int k = 0; k < V; k++) xk[k] = _mm512_load_si512((const void *)(xq + sb * S + k * 64));
                for (int i = 0; i < NR; i++) {
                    __m512i d[4];
                    LOAD_ROW(sb, i, d);
                    for (int k = 0; k < V; k++) acc[i] = _mm512_dpbusd_epi32(acc[i], d[k], xk[k]);
                }
            }
            for (int i = 0; i < NR; i++)
                tot[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i]), _mm512_set1_ps(sf[i][u]), tot[i]);
        }
    } else {
        /* several units per super-block: lane d (columns 4Vd .. 4Vd+4V-1)
         * belongs to unit 4Vd / U of the block */
        const int64_t upsb = S / p->U;
        int32_t li[16];
        for (int d = 0; d < 16; d++) li[d] = (int32_t)(4 * V * d / p->U);
        const __m512i l2u = _mm512_loadu_si512(li);
        for (int64_t sb = 0; sb < nsb; sb++) {
            __m512i xk[4];
            for (int k = 0; k < V; k++) xk[k] = _mm512_load_si512((const void *)(xq + sb * S + k * 64));
            for (int i = 0; i < NR; i++) {
                __m512i d[4], acc = _mm512_setzero_si512();
                LOAD_ROW(sb, i, d);
                for (int k = 0; k < V; k++) acc = _mm512_dpbusd_epi32(acc, d[k], xk[k]);
                const __m512 sv = _mm512_permutexvar_ps(l2u, _mm512_loadu_ps(sf[i] + sb * upsb));
                tot[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), sv, tot[i]);
            }
        }
    }
#undef LOAD_ROW
    for (int i = 0; i < NR; i++)
        y[rs[i / R] + i % R] = _mm512_reduce_add_ps(tot[i]) + rowc[i];
}

/* ------------------------------------------------------------ cherry lanes */

/* Entries [e0, e1) of a pair's lanes (qmm.h "cherry lanes": masks [ne],
 * chunks [ne], cols [nz], h(delta) [nz] at pd) into the 64 row sums acc:
 * the entry's cols, expanded to the rows of its mask, index the chunk's 128
 * natural-order int8 x held in two registers (vpermi2b); the looked-up
 * values times the chunk's sx and the expanded deltas go to row lanes. *po
 * is the offset of entry e0's first cherry, advanced past e1's last. */
AI void lane_entries(const uint8_t *pd, int64_t ne, int64_t nz, int64_t e0, int64_t e1, int64_t *po,
                     const int8_t *nat, const float *sxu, int64_t spc, float *acc)
{
    const uint64_t *mk = (const uint64_t *)(const void *)pd;
    const uint16_t *chk = (const uint16_t *)(const void *)(pd + 8 * ne);
    const uint8_t *cols = pd + 10 * ne, *dl = cols + nz;
    int64_t o = *po;
    __m512 a0 = _mm512_load_ps(acc), a1 = _mm512_load_ps(acc + 16), a2 = _mm512_load_ps(acc + 32),
           a3 = _mm512_load_ps(acc + 48);
    for (int64_t e = e0; e < e1; e++) {
        const uint64_t k = mk[e];
        const int64_t c = chk[e];
        const __m512i tlo = _mm512_load_si512((const void *)(nat + CQ_QMM_LANE_COLS * c));
        const __m512i thi = _mm512_load_si512((const void *)(nat + CQ_QMM_LANE_COLS * c + 64));
        const __m512 sx = _mm512_set1_ps(sxu[c * spc]);
        const __m512i idx = _mm512_maskz_expand_epi8(k, _mm512_loadu_si512((const void *)(cols + o)));
        const __m512i xv = _mm512_permutex2var_epi8(tlo, idx, thi);
        const int nlo = __builtin_popcount((uint32_t)k);
        const __m512i d0 = _mm512_maskz_expand_epi16((__mmask32)k, _mm512_loadu_si512((const void *)(dl + 2 * o)));
        const __m512i d1 =
            _mm512_maskz_expand_epi16((__mmask32)(k >> 32), _mm512_loadu_si512((const void *)(dl + 2 * (o + nlo))));
        o += __builtin_popcountll(k);
#define LANE_Q(a, xb, dh)                                                                                    \
    a = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(xb)), sx), _mm512_cvtph_ps(dh), a)
        LANE_Q(a0, _mm512_castsi512_si128(xv), _mm512_castsi512_si256(d0));
        LANE_Q(a1, _mm512_extracti32x4_epi32(xv, 1), _mm512_extracti64x4_epi64(d0, 1));
        LANE_Q(a2, _mm512_extracti32x4_epi32(xv, 2), _mm512_castsi512_si256(d1));
        LANE_Q(a3, _mm512_extracti32x4_epi32(xv, 3), _mm512_extracti64x4_epi64(d1, 1));
#undef LANE_Q
    }
    _mm512_store_ps(acc, a0);
    _mm512_store_ps(acc + 16, a1);
    _mm512_store_ps(acc + 32, a2);
    _mm512_store_ps(acc + 48, a3);
    *po = o;
}

/* Spilled cherries [s0, s1) of a pair (of ns; qmm.h: columns, h(delta),
 * rows in the pair) into the pair's 128 row sums acc, one by one, against
 * the dequantized x xd (= xq * sx, the value the lanes compute per term). */
AI void lane_spills(const uint8_t *sp, int64_t ns, int64_t s0, int64_t s1, const float *xd, float *acc)
{
    const uint8_t *sh = sp + 2 * ns, *sr = sp + 4 * ns;
    for (int64_t q = s0; q < s1; q++) {
        uint16_t c, h;
        memcpy(&c, sp + 2 * q, 2);
        memcpy(&h, sh + 2 * q, 2);
        acc[sr[q]] = __builtin_fmaf(xd[c], _cvtsh_ss(h), acc[sr[q]]);
    }
}

/* y[0, n) += acc[0, n), n <= 64 */
static void lane_add(float *y, const float *acc, int64_t n)
{
    for (int64_t h = 0; h < n; h += 16) {
        const __mmask16 m = n - h >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - h)) - 1u);
        _mm512_mask_storeu_ps(y + h, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + h), _mm512_load_ps(acc + h)));
    }
}

/* One pair's row of the lanes table. */
typedef struct lane_pair {
    const uint8_t *pd, *sp;        /* its entries, its spill records */
    int64_t ne, ne_a, nz, ns, bytes;   /* bytes: to the next pair's data */
} lane_pair;

static lane_pair lane_pair_at(const uint8_t *lanes, int64_t j, int64_t npairs, int64_t total)
{
    uint32_t v[5], vn[5];
    const uint64_t off = cq_qmm_lanes_pair(lanes, j, v);
    const uint64_t next = j + 1 < npairs ? cq_qmm_lanes_pair(lanes, j + 1, vn) : (uint64_t)total;
    const int64_t ne = (int64_t)v[0] + v[1], nz = (int64_t)v[2] + v[3];
    return (lane_pair){ lanes + off, lanes + off + 10 * ne + 3 * nz, ne, v[0], nz, v[4], (int64_t)(next - off) };
}

/* Interleaved codes: rows [r, r1) (r a multiple of 4 or not) as before the
 * lanes: the whole blocks of CQ_QMM_IL_ROWS (= 4) rows walked as two streams
 * at once, block k of the first half with block k of the second (two
 * sequential streams in flight per thread, 8 rows per x load; 3-bit 4096 x
 * 4096 from DRAM, docs/bench-qmm.md); an odd block as one quad, rows of a
 * short or partly covered block one by one. CH: the cherries by gathers.
 *
 * With lanes (rows_b, p->lanes), chunks are whole pairs of lane groups: a
 * pair's two groups are the two streams (rows r + k and r + 64 + k, 16 steps
 * of 4 + 4 rows), and after each step 1/16 of the pair's lane entries are
 * summed (spread so that their work overlaps the code stream) while 1/16 of
 * the next pair's lanes is prefetched; the row sums go into y once the pair's
 * codes are done. A last pair shorter than 128 rows runs the walk above
 * without cherries, then all its entries. */
#define ROWS_B(B)                                                                          \
    static void il_range_b##B(const cq_qmm_q8plan *p, const int8_t *xq, const float *sxu,   \
                              const float *xqs, const float *xd, float *y, int64_t r,       \
                              int64_t r1, float *ws, const int CH)                          \
    {                                                                                      \
        const int64_t full = p->out / 4 * 4; /* rows in whole blocks */                    \
        for (; r < r1 && r % 4; r++) {                                                     \
            const int64_t b0 = r / 4 * 4, nb = p->out - b0 < 4 ? p->out - b0 : 4;          \
            rows_t(p, xq, sxu, xqs, xd, y, &r, ws, 1, 1, B, 1, r - b0, nb, CH);            \
        }                                                                                  \
        const int64_t re = (r1 < full ? r1 : full) / 4 * 4;                                \
        const int64_t nq = re > r ? (re - r) / 4 : 0, h = 4 * (nq / 2);                    \
        for (int64_t k = 0; k < h; k += 4) {                                               \
            const int64_t rs[2] = {r + k, r + h + k};                                      \
            rows_t(p, xq, sxu, xqs, xd, y, rs, ws, 2, 4, B, 1, 0, 4, CH);                  \
        }                                                                                  \
        r += 2 * h;                                                                        \
        if (nq % 2) {                                                                      \
            rows_t(p, xq, sxu, xqs, xd, y, &r, ws, 1, 4, B, 1, 0, 4, CH);                  \
            r += 4;                                                                        \
        }                                                                                  \
        for (; r < r1; r++) {                                                              \
            const int64_t b0 = r / 4 * 4, nb = p->out - b0 < 4 ? p->out - b0 : 4;          \
            rows_t(p, xq, sxu, xqs, xd, y, &r, ws, 1, 1, B, 1, r - b0, nb, CH);            \
        }                                                                                  \
    }                                                                                      \
    static void lane_pairs_b##B(const cq_qmm_q8plan *p, const int8_t *xq, const float *sxu, \
                                const float *xqs, const float *xd, float *y, int64_t r, int64_t r1, \
                                float *ws)                                                 \
    {                                                                                      \
        enum { P = 2 * CQ_QMM_LANE_ROWS, NSTEP = CQ_QMM_LANE_ROWS / 4 };                   \
        const int8_t *nat = xq + p->npad;                                                  \
        const int64_t spc = CQ_QMM_LANE_COLS / p->U;                                       \
        const int64_t npairs = cq_qmm_lanes_npairs(p->out), total = p->lanes_bytes;         \
        float lacc[2 * CQ_QMM_LANE_ROWS] __attribute__((aligned(64))); /* the pair's rows */ \
        for (; r < r1; r += P) {                                                           \
            const int64_t j = r / P;                                                       \
            const lane_pair lp = lane_pair_at(p->lanes, j, npairs, total);                 \
            int64_t o = 0;                                                                 \
            memset(lacc, 0, sizeof lacc);                                                  \
            if (r + P <= r1) {                                                             \
                const lane_pair nx = j + 1 < npairs ? lane_pair_at(p->lanes, j + 1, npairs, total) : lp; \
                for (int64_t st = 0; st < NSTEP; st++) {                                   \
                    const int64_t rs[2] = {r + 4 * st, r + CQ_QMM_LANE_ROWS + 4 * st};     \
                    rows_t(p, xq, sxu, xqs, NULL, y, rs, ws, 2, 4, B, 1, 0, 4, 0);         \
                    if (j + 1 < npairs)                                                    \
                        for (int64_t q = nx.bytes * st / NSTEP; q < nx.bytes * (st + 1) / NSTEP; q += 64) \
                            _mm_prefetch((const char *)nx.pd + q, _MM_HINT_T0);            \
                    const int64_t e0 = lp.ne * st / NSTEP, e1 = lp.ne * (st + 1) / NSTEP;  \
                    if (e0 < lp.ne_a)                                                      \
                        lane_entries(lp.pd, lp.ne, lp.nz, e0, e1 < lp.ne_a ? e1 : lp.ne_a, &o, nat, sxu, spc, \
                                     lacc);                                             \
                    if (e1 > lp.ne_a)                                                      \
                        lane_entries(lp.pd, lp.ne, lp.nz, e0 > lp.ne_a ? e0 : lp.ne_a, e1, &o, nat, sxu, spc, \
                                     lacc + CQ_QMM_LANE_ROWS);                                             \
                    lane_spills(lp.sp, lp.ns, lp.ns * st / NSTEP, lp.ns * (st + 1) / NSTEP, xd, lacc); \
                }                                                                          \
                lane_add(y + r, lacc, CQ_QMM_LANE_ROWS);                                \
                lane_add(y + r + CQ_QMM_LANE_ROWS, lacc + CQ_QMM_LANE_ROWS, CQ_QMM_LANE_ROWS);             \
            } else { /* the last pair, short: r1 == out */                                 \
                il_range_b##B(p, xq, sxu, xqs, NULL, y, r, r1, ws, 0);                     \
                lane_entries(lp.pd, lp.ne, lp.nz, 0, lp.ne_a, &o, nat, sxu, spc, lacc); \
                lane_entries(lp.pd, lp.ne, lp.nz, lp.ne_a, lp.ne, &o, nat, sxu, spc, lacc + CQ_QMM_LANE_ROWS); \
                lane_spills(lp.sp, lp.ns, 0, lp.ns, xd, lacc);                            \
                const int64_t n = r1 - r;                                                  \
                lane_add(y + r, lacc, n < CQ_QMM_LANE_ROWS ? n : CQ_QMM_LANE_ROWS);     \
                if (n > CQ_QMM_LANE_ROWS) lane_add(y + r + CQ_QMM_LANE_ROWS, lacc + CQ_QMM_LANE_ROWS, n - CQ_QMM_LANE_ROWS); \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    static void rows_b##B(const cq_qmm_q8plan *p, const int8_t *xq, const float *sxu,       \
                          const float *xqs, const float *xd, float *y, int64_t r0, int64_t r1, \
                          float *ws)                                                       \
    {                                                                                      \
        const int CH = p->w->rowptr != NULL;                                               \
        if (p->il && p->lanes) {                                                           \
            lane_pairs_b##B(p, xq, sxu, xqs, xd, y, r0, r1, ws);                           \
        } else if (p->il) {                                                                \
            il_range_b##B(p, xq, sxu, xqs, xd, y, r0, r1, ws, CH);                         \
        } else {                                                                           \
            int64_t r = r0;                                                                \
            for (; r + 4 <= r1; r += 4) rows_t(p, xq, sxu, xqs, xd, y, &r, ws, 1, 4, B, 0, 0, 4, CH); \
            for (; r < r1; r++) rows_t(p, xq, sxu, xqs, xd, y, &r, ws, 1, 1, B, 0, 0, 1, CH);         \
        }                                                                                  \
    }
ROWS_B(2)
ROWS_B(3)
ROWS_B(4)
ROWS_B(8)

void cq_qmm_gemv_q8_rows_avx512vnni(const cq_qmm_q8plan *p, const int8_t *xq, const float *sxu,
                                    const float *xqs, const float *xd, float *y, int64_t r0,
                                    int64_t r1, float *ws)
{
    switch (p->bits) {
    case 2: rows_b2(p, xq, sxu, xqs, xd, y, r0, r1, ws); break;
    case 3: rows_b3(p, xq, sxu, xqs, xd, y, r0, r1, ws); break;
    case 4: rows_b4(p, xq, sxu, xqs, xd, y, r0, r1, ws); break;
    default: rows_b8(p, xq, sxu, xqs, xd, y, r0, r1, ws); break;
    }
}
