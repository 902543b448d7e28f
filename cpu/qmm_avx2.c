/* cherryq: AVX2 + FMA + F16C kernels of the mixed matmul (the AVX-512 scheme,
 * qmm_avx512.c, on 8 lanes). Built only into the cq_avx2 static library with
 * per-file ISA flags; the dispatcher calls it only when the CPU has AVX2+FMA.
 *
 * One block = 8 words = 8*m columns (32 bytes of codes, 24 for 3-bit). */
#include <immintrin.h>

#include "qmm_internal.h"

#define AI static inline __attribute__((always_inline))

/* 8 words of one block; b = 3: 24 bytes through a masked load (never past the
 * block, so the last row is safe), each 24-bit word widened to a dword. */
AI __m256i load_words(const uint8_t *p, const int B)
{
    if (B == 3) {
        const __m256i lm = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
        __m256i v = _mm256_maskload_epi32((const int *)(const void *)p, lm);
        v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 1, 2, 0, 3, 4, 5, 0));
        const __m256i shuf = _mm256_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1,
                                              0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
        return _mm256_shuffle_epi8(v, shuf);
    }
    return _mm256_loadu_si256((const __m256i *)(const void *)p);
}

AI void row_scales(const uint16_t *sc, int64_t ng, float *sf)
{
    int64_t j = 0;
    for (; j + 8 <= ng; j += 8)
        _mm256_storeu_ps(sf + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + j))));
    for (; j < ng; j++) sf[j] = _cvtsh_ss(sc[j]);
    for (int i = 0; i < 16; i++) sf[ng + i] = 0.0f;
}

AI float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI float dot_padded(const float *a, const float *b, int64_t n)
{
    __m256 acc = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc);
    return hsum(acc);
}

AI __m256i group_index(const cq_qmm_plan *p)
{
    if (p->wpg >= 8) return _mm256_setzero_si256();
    int32_t idx[8];
    for (int d = 0; d < 8; d++) idx[d] = (int32_t)(d / p->wpg);
    return _mm256_loadu_si256((const __m256i *)(const void *)idx);
}

AI void gemv_rows_t(const cq_qmm_plan *p, const float *xp, const float *gsum, const float *x,
                    float *y, int64_t r, float *ws, const int R, const int B)
{
    const int M = B == 3 ? 8 : 32 / B, H = B == 3 ? 8 : M / 2, SH = B * H;
    const int64_t bbytes = B == 3 ? 24 : 32;
    const int64_t stride = p->ng + 32;
    const uint8_t *row[4];
    float *sf[4];
    __m256 tot[4];
    for (int i = 0; i < R; i++) {
        row[i] = p->w->codes + (r + i) * p->rb;
        sf[i] = ws + i * stride;
        row_scales(p->w->scales + (r + i) * p->ng, p->ng, sf[i]);
        tot[i] = _mm256_setzero_ps();
    }
    const __m256i gidx = group_index(p);
    const int bcast = p->wpg >= 8;
    int64_t grp = 0, cnt = 0;
    for (int64_t blk = 0; blk < p->nblk; blk++) {
        __m256i wv[4];
        __m256 acc[4];
        for (int i = 0; i < R; i++) wv[i] = load_words(row[i] + blk * bbytes, B);
        const float *xb = xp + blk * p->bc;
        for (int k = 0; k < H; k++) {
            const __m256 xk = _mm256_load_ps(xb + k * 8);
            const __m256i mk = _mm256_set1_epi32(((1 << B) - 1) << (B * k));
            for (int i = 0; i < R; i++) {
                __m256 f = _mm256_cvtepi32_ps(_mm256_and_si256(wv[i], mk));
                acc[i] = k == 0 ? _mm256_mul_ps(f, xk) : _mm256_fmadd_ps(f, xk, acc[i]);
            }
        }
        if (H < M)
            for (int i = 0; i < R; i++) wv[i] = _mm256_srli_epi32(wv[i], SH % 32);
        for (int k = H; k < M; k++) {
            const __m256 xk = _mm256_load_ps(xb + k * 8);
            const __m256i mk = _mm256_set1_epi32(((1 << B) - 1) << (B * (k - H)));
            for (int i = 0; i < R; i++) {
                __m256 f = _mm256_cvtepi32_ps(_mm256_and_si256(wv[i], mk));
                acc[i] = _mm256_fmadd_ps(f, xk, acc[i]);
            }
        }
        if (bcast) {
            for (int i = 0; i < R; i++)
                tot[i] = _mm256_fmadd_ps(_mm256_set1_ps(sf[i][grp]), acc[i], tot[i]);
            if (++cnt == p->bpg) {
                cnt = 0;
                grp++;
            }
        } else {
            for (int i = 0; i < R; i++) {
                __m256 sv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(sf[i] + blk * p->gpb), gidx);
                tot[i] = _mm256_fmadd_ps(sv, acc[i], tot[i]);
            }
        }
    }
    for (int i = 0; i < R; i++) {
        float v = hsum(tot[i]) + p->c * dot_padded(sf[i], gsum, p->ng);
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

void cq_qmm_gemv_rows_avx2(const cq_qmm_plan *p, const float *xp, const float *gsum,
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
    const int64_t bbytes = B == 3 ? 24 : 32;
    const uint8_t *row = p->w->codes + r * p->rb;
    row_scales(p->w->scales + r * p->ng, p->ng, sf);
    const __m256i gidx = group_index(p);
    const int bcast = p->wpg >= 8;
    const __m256 cv = _mm256_set1_ps(p->c);
    int64_t grp = 0, cnt = 0;
    for (int64_t blk = 0; blk < p->nblk; blk++) {
        __m256 sv;
        if (bcast) {
            sv = _mm256_set1_ps(sf[grp]);
            if (++cnt == p->bpg) {
                cnt = 0;
                grp++;
            }
        } else {
            sv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(sf + blk * p->gpb), gidx);
        }
        const __m256 cs = _mm256_mul_ps(sv, cv);
        __m256 sk[8];
        float f = 1.0f;
        for (int k = 0; k < H; k++) {
            sk[k] = _mm256_mul_ps(sv, _mm256_set1_ps(f));
            for (int i = 0; i < B; i++) f *= 0.5f;
        }
        __m256i wv = load_words(row + blk * bbytes, B);
        float *ob = dst + blk * p->bc;
        for (int k = 0; k < H; k++) {
            const __m256i mk = _mm256_set1_epi32(((1 << B) - 1) << (B * k));
            __m256 v = _mm256_cvtepi32_ps(_mm256_and_si256(wv, mk));
            _mm256_storeu_ps(ob + k * 8, _mm256_fmadd_ps(v, sk[k], cs));
        }
        if (H < M) wv = _mm256_srli_epi32(wv, SH % 32);
        for (int k = H; k < M; k++) {
            const __m256i mk = _mm256_set1_epi32(((1 << B) - 1) << (B * (k - H)));
            __m256 v = _mm256_cvtepi32_ps(_mm256_and_si256(wv, mk));
            _mm256_storeu_ps(ob + k * 8, _mm256_fmadd_ps(v, sk[k - H], cs));
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

void cq_qmm_dequant_avx2(const cq_qmm_plan *p, int64_t r0, int64_t nr, float *dst, int64_t ld,
                         float *ws)
{
    switch (p->bits) {
    case 2: dequant_b2(p, r0, nr, dst, ld, ws); break;
    case 3: dequant_b3(p, r0, nr, dst, ld, ws); break;
    case 4: dequant_b4(p, r0, nr, dst, ld, ws); break;
    default: dequant_b8(p, r0, nr, dst, ld, ws); break;
    }
}
