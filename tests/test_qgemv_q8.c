/* cherryq: the arithmetic of the int8-activation CUDA GEMV (cuda/qgemv_q8.h,
 * fast-GEMV variant 4 of cuda/qmatmul.cu), run on the host.
 *
 * The header's functions are the ones the kernel calls (on the device the
 * byte permute and dp4a are the hardware instructions, here their C
 * definitions), so this checks on every machine, GPU or not:
 *   - the column order of the decoded bytes is a permutation of the 32
 *     columns and cqk_q8_pos inverts it;
 *   - the decode + dp4a dot of 32 codes equals sum u_j xq_j for every bit
 *     width, on random codes and on the extremes (all codes maximal, x at
 *     +-127);
 *   - the staged layout (cqk_q8_byte / cqk_q8_unit) puts every column of a
 *     row in its own byte and the 16-byte loads of 8 consecutive chunks in 8
 *     different bank groups;
 *   - a GEMV computed the kernel's way (128-column chunks of 4 sub-chunks,
 *     x staged and quantized by the header's functions, the f32 term per
 *     sub-chunk, cherries against the exact x) matches cq_qmm_gemv_q8_exact_cherries_ref,
 *     the CPU's int8 oracle, to f32 rounding, for every bit width and group,
 *     and is farther from the exact product than that (the int8 path ran).
 * What only a GPU can check (thread mapping, shared memory, the launch) is
 * in test_cuda, which runs variant 4 against the same oracle. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cuda/qgemv_q8.h"
#include "op_cases.h"       /* tr_seed, tr_u32, tr_normal: the tests' random numbers */
#include "qmm_internal.h"   /* cq_qmm_code: the library's reader of the packed layout */

static const int k_bits[] = { 2, 3, 4, 8 };

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ------------------------------------------------------------ layout */

static void test_col_pos_bijection(void **state)
{
    (void)state;
    for (int bi = 0; bi < 4; bi++) {
        const int bits = k_bits[bi];
        int seen[32] = { 0 };
        for (int i = 0; i < 8; i++)
            for (int b = 0; b < 4; b++) {
                const int j = cqk_q8_col(bits, i, b);
                assert_true(j >= 0 && j < 32);
                seen[j]++;
                assert_int_equal(cqk_q8_pos(bits, j), 4 * i + b);
            }
        for (int j = 0; j < 32; j++) assert_int_equal(seen[j], 1);
    }
}

static void test_prmt_dp4a(void **state)
{
    (void)state;
    /* byte n of the result = byte selected by nibble n of {y, x} */
    assert_int_equal(cqk_prmt(0x33221100u, 0x77665544u, 0x7531u), 0x77553311u);
    assert_int_equal(cqk_prmt(0x33221100u, 0x77665544u, 0x0000u), 0x00000000u);
    assert_int_equal(cqk_prmt(0x33221100u, 0x77665544u, 0x4444u), 0x44444444u);
    /* unsigned bytes of a times signed bytes of b, plus c */
    assert_int_equal(cqk_dp4a_us(0xFFFFFFFFu, 0x81818181u, 5), 5 + 4 * 255 * -127);
    assert_int_equal(cqk_dp4a_us(0x04030201u, 0x7FFF0102u, -3), -3 + 1 * 2 + 2 * 1 + 3 * -1 + 4 * 127);
}

/* Packs 32 codes u (each < 2^bits) into bits words of an LSB-first stream. */
static void pack32(int bits, const unsigned *u, uint32_t *w)
{
    uint8_t b[32] = { 0 };
    for (int j = 0; j < 32; j++)
        for (int t = 0; t < bits; t++)
            if ((u[j] >> t) & 1u) b[(j * bits + t) >> 3] |= (uint8_t)(1u << ((j * bits + t) & 7));
    for (int i = 0; i < bits; i++) w[i] = le32(b + 4 * i);
}

/* x in the sub-chunk's order: byte cqk_q8_pos(j) holds xq_j. */
static void perm_x(int bits, const int *xq, uint32_t *xw)
{
    uint8_t b[32];
    for (int j = 0; j < 32; j++) b[cqk_q8_pos(bits, j)] = (uint8_t)(int8_t)xq[j];
    for (int i = 0; i < 8; i++) xw[i] = le32(b + 4 * i);
}

static void test_dot32(void **state)
{
    (void)state;
    for (int bi = 0; bi < 4; bi++) {
        const int bits = k_bits[bi];
        const unsigned umax = (1u << bits) - 1u;
        for (int trial = 0; trial < 3000; trial++) {
            unsigned u[32];
            int xq[32];
            for (int j = 0; j < 32; j++) {
                /* trial 0: every code maximal against x = -127; 1: against +127 */
                u[j] = trial < 2 ? umax : tr_u32() & umax;
                xq[j] = trial == 0 ? -127 : trial == 1 ? 127 : (int)(tr_u32() % 255u) - 127;
            }
            uint32_t w[8], xw[8];
            pack32(bits, u, w);
            for (int j = 0; j < 32; j++) assert_int_equal(cq_qmm_code((const uint8_t *)w, bits, j), u[j]);
            perm_x(bits, xq, xw);
            int32_t want = 0;
            for (int j = 0; j < 32; j++) want += (int32_t)u[j] * xq[j];
            const int32_t got = cqk_q8_dot32(bits, w, xw);
            if (got != want) fail_msg("bits %d trial %d: dot %d, want %d", bits, trial, got, want);
        }
    }
}

static void test_staged_layout(void **state)
{
    (void)state;
    const int64_t in = 4096;
    for (int bi = 0; bi < 4; bi++) {
        const int bits = k_bits[bi];
        uint8_t *hit = calloc((size_t)in, 1);
        for (int64_t c = 0; c < in; c++) {
            const int64_t o = cqk_q8_byte(bits, c);
            assert_true(o >= 0 && o < in);
            assert_true(o / 128 == c / 128);   /* stays in its chunk's 128 bytes */
            hit[o]++;
        }
        for (int64_t o = 0; o < in; o++) assert_int_equal(hit[o], 1);
        free(hit);
    }
    /* 8 lanes reading sub-chunk k, half h of 8 consecutive chunks: the units
     * fall in 8 different 16-byte bank groups (unit mod 8) */
    for (int64_t ch0 = 0; ch0 < 64; ch0 += 8)
        for (int k = 0; k < 4; k++)
            for (int h = 0; h < 2; h++) {
                int grp[8] = { 0 };
                for (int64_t ch = ch0; ch < ch0 + 8; ch++) grp[cqk_q8_unit(ch, k, h) & 7]++;
                for (int g = 0; g < 8; g++) assert_int_equal(grp[g], 1);
            }
}

/* ------------------------------------------------------------ whole GEMV */

typedef struct {
    cq_qmm_w w;
    uint8_t *codes;
    uint16_t *scales;
    int32_t *rowptr;
    uint16_t *cols;
    float *delta;
} qmat;

static void qmat_make(qmat *m, int64_t out, int64_t in, int bits, int group, int k)
{
    const int64_t rb = cq_qmm_row_bytes(bits, in), ng = cq_qmm_ngroups(group, in);
    m->codes = malloc((size_t)(out * rb));
    m->scales = malloc((size_t)(out * ng) * 2);
    m->rowptr = malloc((size_t)(out + 1) * 4);
    m->cols = malloc((size_t)(out * k + 1) * 2);
    m->delta = malloc((size_t)(out * k + 1) * 4);
    for (int64_t i = 0; i < out * rb; i++) m->codes[i] = (uint8_t)tr_u32();
    for (int64_t i = 0; i < out * ng; i++) m->scales[i] = cq_f32_to_f16(0.005f + 0.045f * (float)(tr_u32() % 1000) / 1000.0f);
    for (int64_t r = 0; r <= out; r++) m->rowptr[r] = (int32_t)(r * k);
    for (int64_t r = 0; r < out; r++)
        for (int j = 0; j < k; j++) {
            m->cols[r * k + j] = (uint16_t)(j * (in / k) + (int64_t)(tr_u32() % (uint32_t)(in / k)));
            m->delta[r * k + j] = 0.3f * tr_normal();
        }
    m->w = (cq_qmm_w){ .out = out, .in = in, .bits = bits, .group = group, .codes = m->codes,
                       .scales = m->scales, .rowptr = k ? m->rowptr : NULL, .cols = m->cols,
                       .delta = m->delta };
}

static void qmat_free(qmat *m)
{
    free(m->codes);
    free(m->scales);
    free(m->rowptr);
    free(m->cols);
    free(m->delta);
}

/* y = W x the way the variant-4 kernel computes it (in % 128 == 0, group 0
 * or a multiple of 32): stage x, then per row, per 128-column chunk, per
 * 32-column sub-chunk one dot and one f32 term, then the cherries. */
static void gemv_q8_emulated(const cq_qmm_w *w, const float *x, float *y)
{
    const int bits = w->bits;
    const int64_t in = w->in, nch = in / 128, rb = cq_qmm_row_bytes(bits, in), ng = cq_qmm_ngroups(w->group, in);
    const float off = bits <= 4 ? (float)(1 << (bits - 1)) - 0.5f : 127.0f;
    int8_t *xq = malloc((size_t)in);
    float *sxs = malloc((size_t)nch * 4);
    int32_t *xqsum = calloc((size_t)(in / 32), 4);
    for (int64_t ch = 0; ch < nch; ch++) {   /* staging: one warp's 128 columns */
        float m = 0.0f;
        for (int j = 0; j < 128; j++) m = fmaxf(m, fabsf(x[ch * 128 + j]));
        const float inv = m > 0.0f ? 127.0f / m : 0.0f;
        sxs[ch] = m > 0.0f ? m / 127.0f : 0.0f;
        for (int j = 0; j < 128; j++) {
            const int64_t c = ch * 128 + j;
            const int q = cqk_q8_quant(x[c], inv);
            xq[cqk_q8_byte(bits, c)] = (int8_t)q;
            xqsum[c / 32] += q;
        }
    }
    for (int64_t r = 0; r < w->out; r++) {
        const uint8_t *row = w->codes + r * rb;
        float acc = 0.0f;
        for (int64_t ch = 0; ch < nch; ch++)
            for (int k = 0; k < 4; k++) {
                uint32_t cw[8], xi[8];
                for (int t = 0; t < bits; t++) cw[t] = le32(row + ch * 16 * bits + (k * bits + t) * 4);
                for (int h = 0; h < 2; h++)
                    for (int t = 0; t < 4; t++)
                        xi[4 * h + t] = le32((const uint8_t *)xq + cqk_q8_unit(ch, k, h) * 16 + 4 * t);
                const int64_t g = w->group ? (ch * 128 + k * 32) / w->group : 0;
                const float s = cq_f16_to_f32(w->scales[r * ng + g]);
                acc = cqk_q8_term(s, sxs[ch], cqk_q8_dot32(bits, cw, xi), off, xqsum[ch * 4 + k], acc);
            }
        if (w->rowptr)
            for (int32_t i = w->rowptr[r]; i < w->rowptr[r + 1]; i++) acc = fmaf(w->delta[i], x[w->cols[i]], acc);
        y[r] = acc;
    }
    free(xq);
    free(sxs);
    free(xqsum);
}

static double max_abs(const float *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

static void test_gemv_vs_q8_oracle(void **state)
{
    (void)state;
    static const int groups[] = { 0, 32, 64, 128, 256 };
    static const int64_t shapes[][3] = { { 37, 128, 1 }, { 20, 512, 2 }, { 9, 4096, 16 }, { 5, 1152, 0 } };
    for (int bi = 0; bi < 4; bi++)
        for (int gi = 0; gi < 5; gi++)
            for (int si = 0; si < 4; si++) {
                const int bits = k_bits[bi], group = groups[gi];
                const int64_t out = shapes[si][0], in = shapes[si][1];
                const int k = (int)shapes[si][2];
                if (group > in) continue;
                qmat m;
                qmat_make(&m, out, in, bits, group, k);
                float *x = malloc((size_t)in * 4), *y = malloc((size_t)out * 4);
                float *yr = malloc((size_t)out * 4), *ye = malloc((size_t)out * 4);
                for (int64_t j = 0; j < in; j++) x[j] = tr_normal();
                x[in / 2] = 0.0f;
                if (in >= 256)   /* an all-zero 128-column block: sx = 0 */
                    for (int64_t j = 128; j < 256; j++) x[j] = 0.0f;
                gemv_q8_emulated(&m.w, x, y);
                assert_int_equal(cq_qmm_gemv_q8_exact_cherries_ref(&m.w, x, yr), 0);
                assert_int_equal(cq_qmm_gemv_ref(&m.w, x, ye), 0);
                double e = 0, eex = 0;
                for (int64_t r = 0; r < out; r++) {
                    e = fmax(e, fabs((double)y[r] - yr[r]));
                    eex = fmax(eex, fabs((double)y[r] - ye[r]));
                }
                const double den = max_abs(yr, out);
                if (!(e <= 1e-5 * den))
                    fail_msg("bits %d group %d %lldx%lld: error %.3g vs the int8 oracle (max |y| %.3g)", bits, group,
                             (long long)out, (long long)in, e, den);
                /* the int8 path really ran: farther from the exact product */
                if (!(eex > 1e-5 * den))
                    fail_msg("bits %d group %d %lldx%lld: equal to the exact product (%.3g)", bits, group,
                             (long long)out, (long long)in, eex);
                free(x);
                free(y);
                free(yr);
                free(ye);
                qmat_free(&m);
            }
}

int main(void)
{
    tr_seed(8);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_col_pos_bijection),
        cmocka_unit_test(test_prmt_dp4a),
        cmocka_unit_test(test_dot32),
        cmocka_unit_test(test_staged_layout),
        cmocka_unit_test(test_gemv_vs_q8_oracle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
