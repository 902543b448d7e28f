/* cherryq: AVX-512 (F/BW/VL/DQ + FMA + F16C) kernels of the mixed matmul.
 * Built only into the cq_avx512 static library with per-file ISA flags; the
 * dispatcher calls it only when the CPU has these extensions.
 *
 * One block = 16 words = 16*m columns (64 bytes of codes, 48 for 3-bit). Code
 * k of the 16 words is one AND away from an exact integer in each lane, so a
 * block costs per 16 weights: AND, int->float, FMA against the permuted x
 * (see qmm_internal.h). Four rows at a time share each x load and give four
 * independent FMA chains. */
#include <immintrin.h>

#include "qmm_internal.h"

#define AI static inline __attribute__((always_inline))

/* 16 words of one block; b = 3: 48 bytes (masked load: never reads past the
 * block, so the last row is safe), each 24-bit word widened to a dword. */
AI __m512i load_words(const uint8_t *p, const int B)
{
    if (B == 3) {
        __m512i v = _mm512_maskz_loadu_epi32(0x0FFF, p);
        const __m512i perm = _mm512_setr_epi32(0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8, 0, 9, 10, 11, 0);
        v = _mm512_permutexvar_epi32(perm, v);
        const __m512i shuf = _mm512_broadcast_i32x4(
            _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1));
        return _mm512_shuffle_epi8(v, shuf);
    }
    return _mm512_loadu_si512((const void *)p);
}

/* FP16 scales of one row -> f32, zero padded to ng + 32. */
AI void row_scales(const uint16_t *sc, int64_t ng, float *sf)
{
    int64_t j = 0;
    for (; j + 16 <= ng; j += 16)
        _mm512_storeu_ps(sf + j, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + j))));
    __mmask16 mk = (__mmask16)((1u << (ng - j)) - 1u);
    _mm512_storeu_ps(sf + j, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, sc + j)));
    _mm512_storeu_ps(sf + j + 16, _mm512_setzero_ps());
}

AI float dot_padded(const float *a, const float *b, int64_t n)
{
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), acc);
    return _mm512_reduce_add_ps(acc);
}

AI __m512i group_index(const cq_qmm_plan *p)
{
    if (p->wpg >= 16) return _mm512_setzero_si512();
    int32_t idx[16];
    for (int d = 0; d < 16; d++) idx[d] = (int32_t)(d / p->wpg);
    return _mm512_loadu_si512(idx);
}

AI void gemv_rows_t(const cq_qmm_plan *p, const float *xp, const float *gsum, const float *x,
                    float *y, int64_t r, float *ws, const int R, const int B)
{
    const int M = B == 3 ? 8 : 32 / B, H = B == 3 ? 8 : M / 2, SH = B * H;
    const int64_t bbytes = B == 3 ? 48 : 64;
    const int64_t stride = p->ng + 32;
    const uint8_t *row[4];
    float *sf[4];
    __m512 tot[4];
    for (int i = 0; i < R; i++) {
        row[i] = p->w->codes + (r + i) * p->rb;
        sf[i] = ws + i * stride;
        row_scales(p->w->scales + (r + i) * p->ng, p->ng, sf[i]);
        tot[i] = _mm512_setzero_ps();
    }
    const __m512i gidx = group_index(p);
    const int bcast = p->wpg >= 16;
    int64_t grp = 0, cnt = 0;
    for (int64_t blk = 0; blk < p->nblk; blk++) {
        __m512i wv[4];
        __m512 acc[4];
        for (int i = 0; i < R; i++) wv[i] = load_words(row[i] + blk * bbytes, B);
        const float *xb = xp + blk * p->bc;
        for (int k = 0; k < H; k++) {
            const __m512 xk = _mm512_load_ps(xb + k * 16);
            const __m512i mk = _mm512_set1_epi32(((1 << B) - 1) << (B * k));
            for (int i = 0; i < R; i++) {
                __m512 f = _mm512_cvtepi32_ps(_mm512_and_si512(wv[i], mk));
                acc[i] = k == 0 ? _mm512_mul_ps(f, xk) : _mm512_fmadd_ps(f, xk, acc[i]);
            }
        }
        if (H < M)
            for (int i = 0; i < R; i++) wv[i] = _mm512_srli_epi32(wv[i], SH % 32);
        for (int k = H; k < M; k++) {
            const __m512 xk = _mm512_load_ps(xb + k * 16);
            const __m512i mk = _mm512_set1_epi32(((1 << B) - 1) << (B * (k - H)));
            for (int i = 0; i < R; i++) {
                __m512 f = _mm512_cvtepi32_ps(_mm512_and_si512(wv[i], mk));
                acc[i] = _mm512_fmadd_ps(f, xk, acc[i]);
            }
        }
        if (bcast) {
            for (int i = 0; i < R; i++)
                tot[i] = _mm512_fmadd_ps(_mm512_set1_ps(sf[i][grp]), acc[i], tot[i]);
            if (++cnt == p->bpg) {
                cnt = 0;
                grp++;
            }
        } else {
            for (int i = 0; i < R; i++) {
                __m512 sv = _mm512_permutexvar_ps(gidx, _mm512_loadu_ps(sf[i] + blk * p->gpb));
                tot[i] = _mm512_fmadd_ps(sv, acc[i], tot[i]);
            }
        }
    }
    for (int i = 0; i < R; i++) {
        float v = _mm512_reduce_add_ps(tot[i]) + p->c * dot_padded(sf[i], gsum, p->ng);
        if (p->ncols_blk < p->in) v += cq_qmm_tail_dot(p, row[i], sf[i], x);
        y[r + i] = v + cq_qmm_cherry_dot(p->w, r + i, x);
    }
}

#define GEMV_B(B)                                                                      \
    static void gemv_rows_b##B(const cq_qmm_plan *p, const float *xp, const float *gsum, \
                               const float *x, float *y, int64_t r0, int64_t r1, float *ws) \
    {                                                                                  \
        int64_t r = r0;                                                                \
        for (; r + 4 <= r1; r += 4) gemv_rows_t(p, xp, gsum, x, y, r, ws, 4, B);       \
        for (; r < r1; r++) gemv_rows_t(p, xp, gsum, x, y, r, ws, 1, B);               \
    }
GEMV_B(2)
GEMV_B(3)
GEMV_B(4)
GEMV_B(8)

void cq_qmm_gemv_rows_avx512(const cq_qmm_plan *p, const float *xp, const float *gsum,
                             const float *x, float *y, int64_t r0, int64_t r1, float *ws)
{
    switch (p->bits) {
    case 2: gemv_rows_b2(p, xp, gsum, x, y, r0, r1, ws); break;
    case 3: gemv_rows_b3(p, xp, gsum, x, y, r0, r1, ws); break;
    case 4: gemv_rows_b4(p, xp, gsum, x, y, r0, r1, ws); break;
    default: gemv_rows_b8(p, xp, gsum, x, y, r0, r1, ws); break;
    }
}

/* ------------------------------------------------------------ dequant */

AI void dequant_row_t(const cq_qmm_plan *p, int64_t r, float *dst, float *sf, const int B)
{
    const int M = B == 3 ? 8 : 32 / B, H = B == 3 ? 8 : M / 2, SH = B * H;
    const int64_t bbytes = B == 3 ? 48 : 64;
    const uint8_t *row = p->w->codes + r * p->rb;
    row_scales(p->w->scales + r * p->ng, p->ng, sf);
    const __m512i gidx = group_index(p);
    const int bcast = p->wpg >= 16;
    const __m512 cv = _mm512_set1_ps(p->c);
    int64_t grp = 0, cnt = 0;
    for (int64_t blk = 0; blk < p->nblk; blk++) {
        __m512 sv;
        if (bcast) {
            sv = _mm512_set1_ps(sf[grp]);
            if (++cnt == p->bpg) {
                cnt = 0;
                grp++;
            }
        } else {
            sv = _mm512_permutexvar_ps(gidx, _mm512_loadu_ps(sf + blk * p->gpb));
        }
        const __m512 cs = _mm512_mul_ps(sv, cv);
        __m512 sk[8];
        float f = 1.0f;
        for (int k = 0; k < H; k++) {
            sk[k] = _mm512_mul_ps(sv, _mm512_set1_ps(f));
            for (int i = 0; i < B; i++) f *= 0.5f;
        }
        __m512i wv = load_words(row + blk * bbytes, B);
        float *ob = dst + blk * p->bc;
        for (int k = 0; k < H; k++) {
            const __m512i mk = _mm512_set1_epi32(((1 << B) - 1) << (B * k));
            __m512 v = _mm512_cvtepi32_ps(_mm512_and_si512(wv, mk));
            _mm512_storeu_ps(ob + k * 16, _mm512_fmadd_ps(v, sk[k], cs));
        }
        if (H < M) wv = _mm512_srli_epi32(wv, SH % 32);
        for (int k = H; k < M; k++) {
            const __m512i mk = _mm512_set1_epi32(((1 << B) - 1) << (B * (k - H)));
            __m512 v = _mm512_cvtepi32_ps(_mm512_and_si512(wv, mk));
            _mm512_storeu_ps(ob + k * 16, _mm512_fmadd_ps(v, sk[k - H], cs));
        }
    }
    for (int64_t j = p->ncols_blk; j < p->in; j++) {
        float s = sf[j / p->g];
        dst[j] = (float)cq_qmm_code(row, B, j) * s + p->c * s;
    }
}

#define DEQ_B(B)                                                                       \
    static void dequant_b##B(const cq_qmm_plan *p, int64_t r0, int64_t nr, float *dst,  \
                             int64_t ld, float *ws)                                    \
    {                                                                                  \
        for (int64_t i = 0; i < nr; i++) dequant_row_t(p, r0 + i, dst + i * ld, ws, B); \
    }
DEQ_B(2)
DEQ_B(3)
DEQ_B(4)
DEQ_B(8)

void cq_qmm_dequant_avx512(const cq_qmm_plan *p, int64_t r0, int64_t nr, float *dst, int64_t ld,
                           float *ws)
{
    switch (p->bits) {
    case 2: dequant_b2(p, r0, nr, dst, ld, ws); break;
    case 3: dequant_b3(p, r0, nr, dst, ld, ws); break;
    case 4: dequant_b4(p, r0, nr, dst, ld, ws); break;
    default: dequant_b8(p, r0, nr, dst, ld, ws); break;
    }
}
