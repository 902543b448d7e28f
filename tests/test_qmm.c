/* Tests of the mixed int-k + FP16-sparse matmul (cpu/qmm.h).
 *
 * Inputs are generated here from the layout definition (random codes packed
 * by this file's own packer, random FP16 scales, random cherries), independent
 * of core/quant. Three levels:
 *   1. the scalar reference against a dense dequantize-then-matmul built from
 *      the unpacked codes (never from the library's decoder);
 *   2. every ISA this CPU has (scalar, AVX2, AVX-512) against the reference,
 *      GEMV and GEMM (n = 1, 3, 17, 64), every bit width and group size;
 *   3. argument validation.
 * The int8-activation GEMV (AVX512VNNI ISA) is held to its own scalar
 * reference (cq_qmm_gemv_q8_ref, same int8 x) with the same tight tolerance,
 * and to the exact reference with the bound its definition implies:
 *   |y_q8 - y| <= sum_j |dequant(u_j)| * sx_b(j) / 2 + 1e-5 * mag
 * (xhat = sx * xq is within half a step of x; the cherries use the exact x).
 *
 * Tolerance: |y - y_ref| <= 1e-5 * mag + 1e-30 per output, where mag is the
 * sum of the magnitudes of the terms the kernels add up,
 *   mag = sum_j s_g (u_j + |c|) |x_j| + sum_cherries |delta x|,
 * (c = qmin + 0.5, or qmin for 8-bit). The kernels sum in f32 in a different
 * order from the double reference (per-lane chains of ~in/16 products, group
 * sums of x, the c*sum(x) term separately), so the error is a few f32 ulps of
 * mag times the square root of the chain length; 1e-5 is ~100 ulps of slack
 * yet fails on any wrong code, scale or column (each is >= 1e-3 of mag here).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "op_cases.h"   /* tr_seed, tr_u32, tr_uniform: the tests' random numbers */
#include "qmm.h"

/* A test matrix: the unpacked truth plus its packed form. */
typedef struct {
    cq_qmm_w w;
    int64_t ng, g, rb;
    uint8_t *u;        /* [out, in] codes */
    float *dense;      /* [out, in] the true weights (cherries = their value) */
    float *cmag;       /* [out, in] s_g * (u + |c|): magnitude of the dense terms */
    uint8_t *codes;
    uint16_t *scales;
    int32_t *rowptr;
    uint16_t *cols;
    float *delta;
} tmat;

static float dequant_def(int bits, unsigned u, float s)
{
    if (bits == 8) return ((float)u - 127.0f) * s;
    return ((float)u - (float)(1 << (bits - 1)) + 0.5f) * s;
}

/* Packs code v at column j of row following the layout text. */
static void pack_code(uint8_t *row, int bits, int64_t j, unsigned v)
{
    if (bits == 3) {
        uint8_t *wp = row + (j / 8) * 3;
        uint32_t word = (uint32_t)wp[0] | ((uint32_t)wp[1] << 8) | ((uint32_t)wp[2] << 16);
        word |= (uint32_t)v << (3 * (j % 8));
        wp[0] = (uint8_t)word;
        wp[1] = (uint8_t)(word >> 8);
        wp[2] = (uint8_t)(word >> 16);
    } else {
        int64_t bit = j * bits;
        row[bit / 8] |= (uint8_t)(v << (bit % 8));
    }
}

/* cherry_mode: 0 none (rowptr NULL), 1 mixed (empty rows, few, many) */
static void tmat_make(tmat *t, int64_t out, int64_t in, int bits, int group, int cherry_mode)
{
    memset(t, 0, sizeof(*t));
    t->g = group ? group : in;
    t->ng = (in + t->g - 1) / t->g;
    t->rb = bits == 3 ? (in + 7) / 8 * 3 : (in * bits + 7) / 8;
    assert_int_equal(cq_qmm_row_bytes(bits, in), t->rb);
    assert_int_equal(cq_qmm_ngroups(group, in), t->ng);
    /* exact-size allocations so ASan/valgrind catch reads past the end */
    t->u = malloc((size_t)(out * in) + 1);
    t->dense = malloc(sizeof(float) * (size_t)(out * in) + 4);
    t->cmag = malloc(sizeof(float) * (size_t)(out * in) + 4);
    t->codes = calloc((size_t)(out * t->rb) + 1, 1);
    t->scales = malloc(sizeof(uint16_t) * (size_t)(out * t->ng) + 2);
    assert_non_null(t->u);
    assert_non_null(t->codes);
    float c = bits == 8 ? -127.0f : -(float)(1 << (bits - 1)) + 0.5f;
    unsigned umax = bits == 8 ? 254 : (1u << bits) - 1;
    for (int64_t r = 0; r < out; r++) {
        for (int64_t gi = 0; gi < t->ng; gi++)
            t->scales[r * t->ng + gi] = cq_f32_to_f16(tr_uniform(0.002f, 0.05f));
        for (int64_t j = 0; j < in; j++) {
            unsigned v = tr_u32() % (umax + 1);
            t->u[r * in + j] = (uint8_t)v;
            pack_code(t->codes + r * t->rb, bits, j, v);
            float s = cq_f16_to_f32(t->scales[r * t->ng + j / t->g]);
            t->dense[r * in + j] = dequant_def(bits, v, s);
            t->cmag[r * in + j] = s * ((float)v + fabsf(c));
        }
    }
    if (cherry_mode) {
        t->rowptr = malloc(sizeof(int32_t) * (size_t)(out + 1));
        int64_t cap = 0;
        int32_t *cnt = malloc(sizeof(int32_t) * (size_t)out);
        for (int64_t r = 0; r < out; r++) {
            int kind = (int)(r % 4);
            int64_t k = kind == 0 ? 0 : kind == 1 ? 1 + tr_u32() % 3 : kind == 2 ? (in + 255) / 256 : in / 4 + 1;
            if (k > in) k = in;
            cnt[r] = (int32_t)k;
            cap += k;
        }
        t->cols = malloc(sizeof(uint16_t) * (size_t)cap + 2);
        t->delta = malloc(sizeof(float) * (size_t)cap + 4);
        uint8_t *used = calloc((size_t)in, 1);
        int32_t pos = 0;
        for (int64_t r = 0; r < out; r++) {
            t->rowptr[r] = pos;
            memset(used, 0, (size_t)in);
            for (int32_t i = 0; i < cnt[r]; i++) {
                int64_t j;
                do j = tr_u32() % in; while (used[j]);
                used[j] = 1;
                float v = cq_f16_to_f32(cq_f32_to_f16(tr_uniform(-2.0f, 2.0f)));
                float dq = t->dense[r * in + j];
                t->cols[pos] = (uint16_t)j;
                t->delta[pos] = v - dq;
                t->dense[r * in + j] = v;
                pos++;
            }
        }
        t->rowptr[out] = pos;
        free(used);
        free(cnt);
    }
    t->w = (cq_qmm_w){ .out = out, .in = in, .bits = bits, .group = group, .codes = t->codes,
                       .scales = t->scales, .rowptr = t->rowptr, .cols = t->cols, .delta = t->delta };
    assert_int_equal(cq_qmm_check(&t->w), 0);
}

static void tmat_free(tmat *t)
{
    free(t->u);
    free(t->dense);
    free(t->cmag);
    free(t->codes);
    free(t->scales);
    free(t->rowptr);
    free(t->cols);
    free(t->delta);
}

/* mag of output r for input x (see the header comment). */
static double row_mag(const tmat *t, int64_t r, const float *x)
{
    int64_t in = t->w.in;
    double m = 0.0;
    for (int64_t j = 0; j < in; j++) m += (double)t->cmag[r * in + j] * fabs((double)x[j]);
    if (t->rowptr)
        for (int32_t i = t->rowptr[r]; i < t->rowptr[r + 1]; i++)
            m += fabs((double)t->delta[i] * (double)x[t->cols[i]]);
    return m;
}

static void rand_vec(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = tr_uniform(-1.0f, 1.0f);
}

static void check_close(const tmat *t, const float *X, int64_t n, const float *Y, const float *Yref,
                        const char *what)
{
    int64_t out = t->w.out, in = t->w.in;
    for (int64_t i = 0; i < n; i++)
        for (int64_t r = 0; r < out; r++) {
            double mag = row_mag(t, r, X + i * in);
            double err = fabs((double)Y[i * out + r] - (double)Yref[i * out + r]);
            if (!(err <= 1e-5 * mag + 1e-30)) {
                fail_msg("%s: bits %d group %d out %lld in %lld n %lld: token %lld row %lld: "
                         "got %.9g want %.9g (err %.3g, mag %.3g)", what, t->w.bits, t->w.group,
                         (long long)out, (long long)in, (long long)n, (long long)i, (long long)r,
                         Y[i * out + r], Yref[i * out + r], err, mag);
            }
        }
}

static const int k_bits[] = { 2, 3, 4, 8 };
static const int k_groups[] = { 0, 32, 64, 128, 48 };   /* 48: the generic path */

/* Shapes: odd row counts, in not divisible by 8 / the group / a SIMD block. */
static const int64_t k_shapes[][2] = {
    { 1, 1 }, { 3, 7 }, { 5, 33 }, { 9, 128 }, { 17, 256 }, { 13, 384 }, { 7, 515 },
    { 21, 1000 }, { 4, 1027 }, { 67, 4096 }, { 6, 2048 + 136 },
};
#define NSHAPES (sizeof(k_shapes) / sizeof(k_shapes[0]))

/* 1. reference vs dense dequantize-then-matmul. */
static void test_ref_vs_dense(void **state)
{
    (void)state;
    for (size_t bi = 0; bi < 4; bi++)
        for (size_t gi = 0; gi < 5; gi++)
            for (size_t si = 0; si < NSHAPES; si++) {
                int64_t out = k_shapes[si][0], in = k_shapes[si][1];
                tmat t;
                tmat_make(&t, out, in, k_bits[bi], k_groups[gi], (int)(si % 2 == 0));
                float *x = malloc(sizeof(float) * (size_t)in);
                float *y = malloc(sizeof(float) * (size_t)out);
                float *yd = malloc(sizeof(float) * (size_t)out);
                rand_vec(x, in);
                assert_int_equal(cq_qmm_gemv_ref(&t.w, x, y), 0);
                for (int64_t r = 0; r < out; r++) {
                    double s = 0.0;
                    for (int64_t j = 0; j < in; j++) s += (double)t.dense[r * in + j] * x[j];
                    yd[r] = (float)s;
                }
                check_close(&t, x, 1, y, yd, "ref vs dense");
                /* dequant_rows (natural order, cherries applied) vs dense */
                float *dq = malloc(sizeof(float) * (size_t)(out * in));
                assert_int_equal(cq_qmm_dequant_rows(&t.w, 0, out, dq), 0);
                for (int64_t i = 0; i < out * in; i++)
                    if (fabsf(dq[i] - t.dense[i]) > 1e-6f * (1.0f + fabsf(t.dense[i])))
                        fail_msg("dequant_rows bits %d group %d: elem %lld got %g want %g", k_bits[bi],
                                 k_groups[gi], (long long)i, dq[i], t.dense[i]);
                free(dq);
                free(x);
                free(y);
                free(yd);
                tmat_free(&t);
            }
}

/* 2. every ISA vs reference, GEMV and GEMM. */
static void run_isa(cq_isa isa)
{
    if (!cq_qmm_isa_supported(isa)) {
        assert_int_equal(cq_qmm_set_isa(isa), CQ_ENOTSUP);
        print_message("[ SKIPPED  ] %s not supported on this CPU\n", cq_qmm_isa_name(isa));
        skip();
        return;
    }
    assert_int_equal(cq_qmm_set_isa(isa), 0);
    assert_int_equal(cq_qmm_get_isa(), isa);
    static const int64_t ns[] = { 1, 3, 17, 64 };
    for (size_t bi = 0; bi < 4; bi++)
        for (size_t gi = 0; gi < 5; gi++)
            for (size_t si = 0; si < NSHAPES; si++) {
                int64_t out = k_shapes[si][0], in = k_shapes[si][1];
                tmat t;
                tmat_make(&t, out, in, k_bits[bi], k_groups[gi], (int)((si + gi) % 3 != 0));
                float *x = malloc(sizeof(float) * (size_t)in);
                float *y = malloc(sizeof(float) * (size_t)out);
                float *yr = malloc(sizeof(float) * (size_t)out);
                rand_vec(x, in);
                assert_int_equal(cq_qmm_gemv_ref(&t.w, x, yr), 0);
                for (int64_t i = 0; i < out; i++) y[i] = NAN;
                assert_int_equal(cq_qmm_gemv(&t.w, x, y), 0);
                check_close(&t, x, 1, y, yr, cq_qmm_isa_name(isa));
                /* GEMM on a subset of shapes (the reference is O(n out in)) */
                const int big = out * in > 100000;
                if ((si % 3 == 0 || in == 515) && (!big || gi == 0 || gi == 3)) {
                    for (size_t ni = 0; ni < 4; ni++) {
                        int64_t n = ns[ni];
                        if (big && n != 17) continue;   /* keep the oracle cheap */
                        float *X = malloc(sizeof(float) * (size_t)(n * in));
                        float *Y = malloc(sizeof(float) * (size_t)(n * out));
                        float *Yr = malloc(sizeof(float) * (size_t)(n * out));
                        rand_vec(X, n * in);
                        for (int64_t i = 0; i < n * out; i++) Y[i] = NAN;
                        assert_int_equal(cq_qmm_gemm_ref(&t.w, X, n, Yr), 0);
                        assert_int_equal(cq_qmm_gemm(&t.w, X, n, Y), 0);
                        check_close(&t, X, n, Y, Yr, "gemm");
                        free(X);
                        free(Y);
                        free(Yr);
                    }
                }
                free(x);
                free(y);
                free(yr);
                tmat_free(&t);
            }
    assert_int_equal(cq_qmm_set_isa(CQ_ISA_AUTO), 0);
}

static void count_log(cq_log_level lvl, const char *msg, void *user);

/* h(d) of cq_qmm_gemv_q8_ref: the FP16 rounding of a cherry delta (d
 * itself where that overflows). */
static float lane_h(float d)
{
    const float h = cq_f16_to_f32(cq_f32_to_f16(d));
    return isinf(h) && !isinf(d) ? d : h;
}

/* The bound of the int8 error of row r (qmm.h, cq_qmm_gemv_q8_ref):
 * sum_j |dequant(u_rj)| sx_b(j) / 2 + sum over the row's cherries of
 * |h(delta)| sx_b(col) / 2 + |delta - h(delta)| |x[col]|. */
static double q8_bound(const tmat *t, int64_t r, const float *x, const float *sx)
{
    int64_t in = t->w.in;
    double b = 0.0;
    for (int64_t j = 0; j < in; j++) {
        float s = cq_f16_to_f32(t->scales[r * t->ng + j / t->g]);
        b += fabs((double)dequant_def(t->w.bits, t->u[r * in + j], s)) * 0.5 * (double)sx[j / CQ_QMM_Q8_BLOCK];
    }
    if (t->w.rowptr)
        for (int32_t i = t->w.rowptr[r]; i < t->w.rowptr[r + 1]; i++) {
            const int64_t c = t->w.cols[i];
            if (c >= in) continue;
            const float d = t->w.delta[i], h = lane_h(d);
            b += fabs((double)h) * 0.5 * (double)sx[c / CQ_QMM_Q8_BLOCK] + fabs((double)d - (double)h) * fabs((double)x[c]);
        }
    return b;
}

/* Every row of an int8-activation GEMV y within the int8 bound of the exact
 * ye: |y - ye| <= q8_bound + 1e-5 |row|. Returns the rows that differ by
 * more than 1e-5 |row| (the int8 path is not the exact one). */
static int64_t check_q8_rows(const tmat *t, const float *x, const float *sx, const float *y, const float *ye,
                             const char *what)
{
    int64_t differs = 0;
    for (int64_t r = 0; r < t->w.out; r++) {
        double mag = row_mag(t, r, x), err = fabs((double)y[r] - (double)ye[r]);
        double bound = q8_bound(t, r, x, sx) + 1e-5 * mag + 1e-30;
        if (!(err <= bound))
            fail_msg("%s: bits %d group %lld out %lld in %lld row %lld: got %.9g exact %.9g (err %.3g > bound %.3g)",
                     what, t->w.bits, (long long)t->g, (long long)t->w.out, (long long)t->w.in, (long long)r, y[r], ye[r],
                     err, bound);
        differs += err > 1e-5 * mag;
    }
    return differs;
}

/* The reference of a GEMM over n tokens: the int8 reference GEMV per token
 * where the kernel uses int8 activations (q8), else the exact one. */
static void gemm_ref(const tmat *t, const float *X, int64_t n, float *Yr, int q8)
{
    for (int64_t k = 0; k < n; k++)
        assert_int_equal((q8 ? cq_qmm_gemv_q8_ref : cq_qmm_gemv_ref)(&t->w, X + k * t->w.in, Yr + k * t->w.out), 0);
}

/* A random x for t with its int8 quantization (xq, sx), both references
 * (yq: cq_qmm_gemv_q8_ref, ye: the exact one) and two output buffers (y
 * filled with NaN for the kernel under test, y2 for another path). */
typedef struct gv_io {
    float *x, *sx, *y, *y2, *yq, *ye;
    int8_t *xq;
} gv_io;

static void gv_io_make(gv_io *io, const tmat *t)
{
    const int64_t out = t->w.out, in = t->w.in;
    io->x = malloc(sizeof(float) * (size_t)in);
    io->sx = malloc(sizeof(float) * (size_t)(in / CQ_QMM_Q8_BLOCK + 1));
    io->xq = malloc((size_t)in);
    io->y = malloc(sizeof(float) * (size_t)out);
    io->y2 = malloc(sizeof(float) * (size_t)out);
    io->yq = malloc(sizeof(float) * (size_t)out);
    io->ye = malloc(sizeof(float) * (size_t)out);
    rand_vec(io->x, in);
    cq_qmm_quant_x8(io->x, in, io->xq, io->sx);
    assert_int_equal(cq_qmm_gemv_q8_ref(&t->w, io->x, io->yq), 0);
    assert_int_equal(cq_qmm_gemv_ref(&t->w, io->x, io->ye), 0);
    for (int64_t i = 0; i < out; i++) io->y[i] = NAN;
}

static void gv_io_free(gv_io *io)
{
    free(io->x);
    free(io->sx);
    free(io->xq);
    free(io->y);
    free(io->y2);
    free(io->yq);
    free(io->ye);
}

/* The int8 quantization of x itself: range, half-step error, amax -> 127. */
static void test_quant_x8(void **state)
{
    (void)state;
    static const int64_t ins[] = { 1, 7, 128, 129, 300, 1000 };
    for (size_t k = 0; k < sizeof ins / sizeof ins[0]; k++) {
        int64_t in = ins[k], nb = (in + CQ_QMM_Q8_BLOCK - 1) / CQ_QMM_Q8_BLOCK;
        float *x = malloc(sizeof(float) * (size_t)in), *sx = malloc(sizeof(float) * (size_t)nb);
        int8_t *xq = malloc((size_t)in);
        rand_vec(x, in);
        if (in > 200)   /* one all-zero block */
            for (int64_t j = 128; j < 256; j++) x[j] = 0.0f;
        if (in >= 7) x[3] = -37.5f;   /* an outlier sets its block's step */
        cq_qmm_quant_x8(x, in, xq, sx);
        for (int64_t b = 0; b < nb; b++) {
            int64_t j0 = b * CQ_QMM_Q8_BLOCK, j1 = j0 + CQ_QMM_Q8_BLOCK < in ? j0 + CQ_QMM_Q8_BLOCK : in;
            float amax = 0.0f;
            int hit = 0;
            for (int64_t j = j0; j < j1; j++) amax = fmaxf(amax, fabsf(x[j]));
            assert_true(fabsf(sx[b] - amax / 127.0f) <= 1e-7f * amax);
            for (int64_t j = j0; j < j1; j++) {
                assert_true(xq[j] >= -127 && xq[j] <= 127);
                assert_true(fabs((double)x[j] - (double)sx[b] * xq[j]) <= 0.5001 * (double)sx[b] + 1e-30);
                hit |= fabsf(x[j]) == amax && abs(xq[j]) == 127;
            }
            assert_true(hit || amax == 0.0f);
            if (amax == 0.0f) assert_true(sx[b] == 0.0f);
        }
        free(x);
        free(sx);
        free(xq);
    }
}

/* The int8-activation GEMV: tight against its reference, within the int8
 * bound of the exact one, the exact kernels where it does not apply (group 96
 * and 48), in exact mode, and for GEMM (n < 8 runs it, n >= 8 is exact). */
static void test_isa_vnni(void **state)
{
    (void)state;
    if (!cq_qmm_isa_supported(CQ_ISA_AVX512VNNI)) {
        assert_int_equal(cq_qmm_set_isa(CQ_ISA_AVX512VNNI), CQ_ENOTSUP);
        print_message("[ SKIPPED  ] avx512vnni not supported on this CPU\n");
        skip();
        return;
    }
    assert_int_equal(cq_qmm_set_isa(CQ_ISA_AVX512VNNI), 0);
    const int exact0 = cq_qmm_get_exact();
    const int64_t min_in0 = cq_qmm_get_q8_min_in();
    cq_qmm_set_exact(0);
    cq_qmm_set_q8_min_in(0);   /* the int8 kernel on every shape, short rows too */
    static const int groups[] = { 0, 32, 64, 128, 256, 96, 48 };
    static const int64_t ns[] = { 1, 3, 17 };
    int64_t q8_rows = 0, q8_differs = 0;
    for (size_t bi = 0; bi < 4; bi++)
        for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++)
            for (size_t si = 0; si < NSHAPES; si++) {
                const int64_t out = k_shapes[si][0], in = k_shapes[si][1];
                const int group = groups[gi];
                tmat t;
                tmat_make(&t, out, in, k_bits[bi], group, (int)((si + gi) % 3 != 0));
                const int covered = group != 96 && group != 48;
                assert_int_equal(cq_qmm_gemv_uses_q8(&t.w), covered || t.ng == 1);
                float *x = malloc(sizeof(float) * (size_t)in), *sx = malloc(sizeof(float) * (size_t)(in / 128 + 1));
                int8_t *xq = malloc((size_t)in);
                float *y = malloc(sizeof(float) * (size_t)out), *yq = malloc(sizeof(float) * (size_t)out),
                      *ye = malloc(sizeof(float) * (size_t)out);
                rand_vec(x, in);
                cq_qmm_quant_x8(x, in, xq, sx);
                assert_int_equal(cq_qmm_gemv_q8_ref(&t.w, x, yq), 0);
                assert_int_equal(cq_qmm_gemv_ref(&t.w, x, ye), 0);
                for (int64_t i = 0; i < out; i++) y[i] = NAN;
                assert_int_equal(cq_qmm_gemv(&t.w, x, y), 0);
                if (cq_qmm_gemv_uses_q8(&t.w)) {
                    check_close(&t, x, 1, y, yq, "avx512vnni vs int8 reference");
                    q8_differs += check_q8_rows(&t, x, sx, y, ye, "int8 GEMV vs exact");
                    q8_rows += out;
                } else {
                    check_close(&t, x, 1, y, ye, "avx512vnni fallback vs exact reference");
                }
                /* exact mode: the f32 kernels */
                cq_qmm_set_exact(1);
                assert_int_equal(cq_qmm_gemv_uses_q8(&t.w), 0);
                assert_int_equal(cq_qmm_gemv(&t.w, x, y), 0);
                check_close(&t, x, 1, y, ye, "avx512vnni exact mode");
                cq_qmm_set_exact(0);
                /* GEMM: repeated int8 GEMV below 8 tokens, exact above */
                if (si % 3 == 0 || in == 515) {
                    for (size_t ni = 0; ni < 3; ni++) {
                        int64_t n = ns[ni];
                        float *X = malloc(sizeof(float) * (size_t)(n * in));
                        float *Y = malloc(sizeof(float) * (size_t)(n * out));
                        float *Yr = malloc(sizeof(float) * (size_t)(n * out));
                        rand_vec(X, n * in);
                        const int q8 = n < 8 && cq_qmm_gemv_uses_q8(&t.w);
                        gemm_ref(&t, X, n, Yr, q8);
                        assert_int_equal(cq_qmm_gemm(&t.w, X, n, Y), 0);
                        check_close(&t, X, n, Y, Yr, q8 ? "avx512vnni gemm (int8)" : "avx512vnni gemm");
                        free(X);
                        free(Y);
                        free(Yr);
                    }
                }
                free(x);
                free(sx);
                free(xq);
                free(y);
                free(yq);
                free(ye);
                tmat_free(&t);
            }
    /* the int8 path ran (it is not the exact product in disguise) */
    print_message("int8 GEMV: %lld of %lld rows differ from the exact product by more than 1e-5 mag\n",
                  (long long)q8_differs, (long long)q8_rows);
    assert_true(q8_differs > q8_rows / 4);
    cq_qmm_set_exact(exact0);
    cq_qmm_set_q8_min_in(min_in0);
    assert_int_equal(cq_qmm_set_isa(CQ_ISA_AUTO), 0);
}

/* The size rule: the int8 GEMV only on rows of >= CQ_QMM_Q8_MIN_IN columns,
 * the exact product below (and the result says which one ran). */
static void test_q8_min_in(void **state)
{
    (void)state;
    if (!cq_qmm_isa_supported(CQ_ISA_AVX512VNNI)) {
        print_message("[ SKIPPED  ] avx512vnni not supported on this CPU\n");
        skip();
        return;
    }
    assert_int_equal(cq_qmm_set_isa(CQ_ISA_AVX512VNNI), 0);
    const int exact0 = cq_qmm_get_exact();
    cq_qmm_set_exact(0);
    assert_int_equal(cq_qmm_get_q8_min_in(), CQ_QMM_Q8_MIN_IN);
    static const int64_t ins[] = { CQ_QMM_Q8_MIN_IN - 128, CQ_QMM_Q8_MIN_IN - 1, CQ_QMM_Q8_MIN_IN,
                                   CQ_QMM_Q8_MIN_IN + 64 };
    for (size_t k = 0; k < 4; k++) {
        const int64_t in = ins[k], out = 37;
        tmat t;
        tmat_make(&t, out, in, 3, 64, 1);
        const int q8 = in >= CQ_QMM_Q8_MIN_IN;
        assert_int_equal(cq_qmm_gemv_uses_q8(&t.w), q8);
        assert_int_equal(cq_qmm_il_wanted(&t.w), q8);
        float *x = malloc(sizeof(float) * (size_t)in), *y = malloc(sizeof(float) * (size_t)out),
              *yr = malloc(sizeof(float) * (size_t)out), *ye = malloc(sizeof(float) * (size_t)out);
        rand_vec(x, in);
        assert_int_equal(cq_qmm_gemv(&t.w, x, y), 0);
        assert_int_equal(cq_qmm_gemv_q8_ref(&t.w, x, yr), 0);
        assert_int_equal(cq_qmm_gemv_ref(&t.w, x, ye), 0);
        check_close(&t, x, 1, y, q8 ? yr : ye, q8 ? "rule: int8" : "rule: exact");
        int64_t differs = 0;   /* the other path would not have passed */
        for (int64_t r = 0; r < out; r++)
            differs += fabs((double)y[r] - (double)(q8 ? ye : yr)[r]) > 1e-5 * row_mag(&t, r, x);
        assert_true(differs > out / 4);
        free(x);
        free(y);
        free(yr);
        free(ye);
        tmat_free(&t);
    }
    cq_qmm_set_q8_min_in(0);
    tmat t;
    tmat_make(&t, 5, 192, 4, 32, 0);
    assert_true(cq_qmm_gemv_uses_q8(&t.w));
    tmat_free(&t);
    cq_qmm_set_q8_min_in(CQ_QMM_Q8_MIN_IN);
    cq_qmm_set_exact(exact0);
    assert_int_equal(cq_qmm_set_isa(CQ_ISA_AUTO), 0);
}

/* Offset of byte j of row r in the interleaved layout, written from the
 * definition in qmm.h (not from the library). */
static int64_t il_off(int64_t out, int64_t rb, int bits, int64_t r, int64_t j)
{
    const int64_t R = CQ_QMM_IL_ROWS, C = bits == 3 ? 48 : 64;
    const int64_t b = r / R, nb = out - R * b < R ? out - R * b : R, i = r - R * b;
    const int64_t k = j / C, len = rb - C * k < C ? rb - C * k : C;
    return R * b * rb + nb * C * k + i * len + (j - C * k);
}

/* The interleaved form (cq_qmm_il): its bytes against the layout definition,
 * unpacking, and its GEMV / GEMM against the row-layout kernels (bit for bit
 * for the GEMV), the int8 reference (tight) and the exact one (within the
 * int8 bound), for every bit width, group (48: not covered by the int8
 * kernel, the tiles fallback), odd row counts, in not a multiple of a
 * super-block, rows without and with many cherries; exact mode, GEMM with
 * n = 3 (int8 GEMV per token) and 17 (tiles + exact GEMM). Buffers are exact
 * size (ASan: tests/test_qmm under build-h5bsan). */
static void test_interleaved(void **state)
{
    (void)state;
    const int vnni = cq_qmm_isa_supported(CQ_ISA_AVX512VNNI);
    if (vnni) assert_int_equal(cq_qmm_set_isa(CQ_ISA_AVX512VNNI), 0);
    const int exact0 = cq_qmm_get_exact();
    const int64_t min_in0 = cq_qmm_get_q8_min_in();
    cq_qmm_set_exact(0);
    cq_qmm_set_q8_min_in(0);
    static const int groups[] = { 0, 32, 64, 128, 48 };
    static const int64_t shapes[][2] = { { 1, 1 },  { 3, 7 },    { 5, 33 },  { 9, 128 },    { 13, 384 },
                                         { 7, 515 }, { 21, 1000 }, { 4, 1027 }, { 67, 4096 }, { 6, 2184 } };
    int64_t n_q8 = 0;
    for (size_t bi = 0; bi < 4; bi++)
        for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++)
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
                const int64_t out = shapes[si][0], in = shapes[si][1];
                const int bits = k_bits[bi], group = groups[gi];
                tmat t;
                tmat_make(&t, out, in, bits, group, (int)((si + gi) % 3 != 0));
                const int64_t rb = t.rb;
                uint8_t *ic = malloc((size_t)(out * rb));
                cq_qmm_il il;
                assert_int_equal(cq_qmm_il_chunk(bits), bits == 3 ? 48 : 64);
                assert_int_equal(cq_qmm_il_build(&il, &t.w, ic), 0);
                assert_ptr_equal(il.w.codes, ic);
                assert_ptr_equal(il.w.scales, t.w.scales);
                for (int64_t r = 0; r < out; r++)
                    for (int64_t j = 0; j < rb; j++)
                        if (ic[il_off(out, rb, bits, r, j)] != t.codes[r * rb + j])
                            fail_msg("interleave bits %d out %lld in %lld: row %lld byte %lld misplaced", bits,
                                     (long long)out, (long long)in, (long long)r, (long long)j);
                /* unpack: all rows, and an inner range */
                uint8_t *un = malloc((size_t)(out * rb));
                assert_int_equal(cq_qmm_il_unpack_rows(&il, 0, out, un), 0);
                assert_memory_equal(un, t.codes, (size_t)(out * rb));
                if (out > 2) {
                    assert_int_equal(cq_qmm_il_unpack_rows(&il, 1, out - 2, un), 0);
                    assert_memory_equal(un, t.codes + rb, (size_t)((out - 2) * rb));
                }
                free(un);

                gv_io io;
                gv_io_make(&io, &t);
                float *x = io.x, *sx = io.sx, *y = io.y, *yrow = io.y2, *yq = io.yq, *ye = io.ye;
                assert_int_equal(cq_qmm_il_gemv(&il, x, y), 0);
                assert_int_equal(cq_qmm_gemv(&t.w, x, yrow), 0);
                assert_memory_equal(y, yrow, sizeof(float) * (size_t)out);
                if (cq_qmm_gemv_uses_q8(&t.w)) {
                    n_q8++;
                    check_close(&t, x, 1, y, yq, "interleaved int8 vs int8 reference");
                    check_q8_rows(&t, x, sx, y, ye, "interleaved int8 vs exact");
                } else {
                    check_close(&t, x, 1, y, ye, "interleaved fallback vs exact reference");
                }
                /* exact mode: tiles unpacked, the f32 kernels */
                cq_qmm_set_exact(1);
                assert_int_equal(cq_qmm_il_gemv(&il, x, y), 0);
                check_close(&t, x, 1, y, ye, "interleaved exact mode");
                cq_qmm_set_exact(0);
                /* GEMM: n = 3 (GEMV per token), n = 17 (exact) */
                if (si % 2 == 0 || out == 67) {
                    static const int64_t ns[] = { 3, 17 };
                    for (size_t ni = 0; ni < 2; ni++) {
                        const int64_t n = ns[ni];
                        float *X = malloc(sizeof(float) * (size_t)(n * in));
                        float *Y = malloc(sizeof(float) * (size_t)(n * out));
                        float *Yr = malloc(sizeof(float) * (size_t)(n * out));
                        rand_vec(X, n * in);
                        const int q8 = n < 8 && cq_qmm_gemv_uses_q8(&t.w);
                        gemm_ref(&t, X, n, Yr, q8);
                        for (int64_t i = 0; i < n * out; i++) Y[i] = NAN;
                        assert_int_equal(cq_qmm_il_gemm(&il, X, n, Y), 0);
                        check_close(&t, X, n, Y, Yr, q8 ? "interleaved gemm (int8)" : "interleaved gemm");
                        free(X);
                        free(Y);
                        free(Yr);
                    }
                }
                gv_io_free(&io);
                free(ic);
                tmat_free(&t);
            }
    if (vnni) assert_true(n_q8 > 100);   /* the interleaved int8 kernel ran */
    /* overlapping source and destination are refused */
    {
        tmat t;
        tmat_make(&t, 4, 64, 4, 32, 0);
        cq_qmm_il il;
        int nlog = 0;
        cq_log_set_callback(count_log, &nlog);
        assert_int_equal(cq_qmm_il_build(&il, &t.w, t.codes), CQ_EINVAL);
        assert_int_equal(cq_qmm_il_unpack_rows(NULL, 0, 1, t.codes), CQ_EINVAL);
        cq_log_set_callback(NULL, NULL);
        assert_true(nlog >= 2);
        tmat_free(&t);
    }
    cq_qmm_set_exact(exact0);
    cq_qmm_set_q8_min_in(min_in0);
    assert_int_equal(cq_qmm_set_isa(CQ_ISA_AUTO), 0);
}

/* Row p of a lanes buffer's pair table (qmm.h): returns the offset of the
 * pair's data; v: entries of each group, lane cherries of each group,
 * spills of the pair. */
static uint64_t lanes_pair(const uint8_t *L, int64_t p, uint32_t v[5])
{
    uint64_t off;
    memcpy(&off, L + 64 + 32 * p, 8);
    memcpy(v, L + 64 + 32 * p + 8, 20);
    return off;
}

/* Reads the lanes of t by the layout qmm.h documents (not the library's
 * code) and checks that they hold exactly t's cherries: for every row and
 * 128-column chunk, the (column, h(delta) bits) met walking the entries in
 * order, then its spill records in order, must be the row's CSR cherries
 * with a column < in in that chunk, in CSR order (entry l of a chunk = the
 * row's l-th cherry there); every entry holds at least
 * CQ_QMM_LANE_MIN_FILL cherries. Returns the number of spilled cherries. */
static int64_t lanes_decode_check(const tmat *t, const uint8_t *L, int64_t n)
{
    const int64_t out = t->w.out, in = t->w.in, ng = (out + 63) / 64, np = (ng + 1) / 2, nch = (in + 127) / 128;
    uint32_t h32[4];
    int64_t h64[5];
    memcpy(h32, L, 16);
    memcpy(h64, L + 16, 40);
    assert_int_equal(h32[0], 0x314C5143u);
    assert_int_equal(h32[1], 64);
    assert_int_equal(h32[2], 128);
    assert_int_equal(h32[3], 0);
    assert_int_equal(h64[0], out);
    assert_int_equal(h64[1], in);
    assert_int_equal(h64[2], t->w.rowptr[out]);
    assert_int_equal(h64[3], np);
    assert_int_equal(h64[4], n);
    const int64_t nnz = t->w.rowptr[out];
    int64_t *got = malloc(sizeof(int64_t) * (size_t)(2 * nnz + 2)), spilled = 0;
    for (int64_t p = 0; p < np; p++) {
        uint32_t v[5];
        const uint64_t off = lanes_pair(L, p, v);
        assert_int_equal(off % 64, 0);
        const int64_t ne = (int64_t)v[0] + v[1], nz = (int64_t)v[2] + v[3], ns = v[4];
        assert_true((int64_t)off + ne * 10 + nz * 3 + ns * 5 + 192 <= n);
        const uint8_t *pd = L + off, *sp = pd + 10 * ne + 3 * nz;
        spilled += ns;
        for (int64_t e = 0; e < ne; e++) {
            uint64_t m;
            memcpy(&m, pd + 8 * e, 8);
            assert_true(__builtin_popcountll(m) >= CQ_QMM_LANE_MIN_FILL);
        }
        for (int h = 0; h < 2; h++) {
            const int64_t r0 = (2 * p + h) * 64, e0 = h ? v[0] : 0, e1 = h ? ne : v[0];
            for (int64_t i = 0; i < 64 && r0 + i < out; i++) {
                const int64_t r = r0 + i;
                for (int64_t c = 0; c < nch; c++) {
                    int64_t k = 0, oo = 0;
                    for (int64_t e = 0; e < ne; e++) {   /* the lanes, in entry order */
                        uint64_t m;
                        uint16_t cc;
                        memcpy(&m, pd + 8 * e, 8);
                        memcpy(&cc, pd + 8 * ne + 2 * e, 2);
                        if (e >= e0 && e < e1 && cc == c && (m >> i & 1)) {
                            const int64_t at = oo + __builtin_popcountll(m & ((1ull << i) - 1ull));
                            uint16_t hb;
                            memcpy(&hb, pd + 10 * ne + nz + 2 * at, 2);
                            got[2 * k] = c * 128 + pd[10 * ne + at];
                            got[2 * k + 1] = hb;
                            k++;
                        }
                        oo += __builtin_popcountll(m);
                    }
                    for (int64_t q = 0; q < ns; q++) {   /* then the spills */
                        uint16_t rec[3];
                        rec[0] = sp[4 * ns + q];
                        memcpy(rec + 1, sp + 2 * q, 2);
                        memcpy(rec + 2, sp + 2 * ns + 2 * q, 2);
                        if (rec[0] == h * 64 + i && rec[1] / 128 == c) {
                            got[2 * k] = rec[1];
                            got[2 * k + 1] = rec[2];
                            k++;
                        }
                    }
                    int64_t kk = 0;   /* the expected: CSR order within the chunk */
                    for (int32_t ci = t->w.rowptr[r]; ci < t->w.rowptr[r + 1]; ci++) {
                        if (t->w.cols[ci] >= in || t->w.cols[ci] / 128 != c) continue;
                        if (kk >= k || got[2 * kk] != t->w.cols[ci] ||
                            got[2 * kk + 1] != cq_f32_to_f16(lane_h(t->w.delta[ci])))
                            fail_msg("lanes out %lld in %lld row %lld chunk %lld: cherry %lld is not CSR cherry %d",
                                     (long long)out, (long long)in, (long long)r, (long long)c, (long long)kk, ci);
                        kk++;
                    }
                    if (kk != k)
                        fail_msg("lanes row %lld chunk %lld: %lld cherries, CSR %lld", (long long)r, (long long)c,
                                 (long long)k, (long long)kk);
                }
            }
        }
    }
    free(got);
    return spilled;
}

/* The cherry lanes: their bytes against the documented layout, and the
 * VNNI GEMV on interleaved codes + lanes against the int8 reference (tight),
 * the exact product (the int8 bound) and the same GEMV by gathers, over bit
 * widths, groups, row counts around the 64-row groups and 128-row pairs (one
 * thread chunk or several, a short last pair), rows without cherries, with
 * many, and with all their cherries in one chunk (many entries there). Then:
 * the kernel reads them (one changed delta changes one row), a weight whose
 * delta overflows FP16 is refused, and cq_qmm_lanes_check / the GEMV's
 * header check refuse damaged or mismatched lanes. */
static void test_lanes(void **state)
{
    (void)state;
    const int vnni = cq_qmm_isa_supported(CQ_ISA_AVX512VNNI);
    if (vnni) assert_int_equal(cq_qmm_set_isa(CQ_ISA_AVX512VNNI), 0);
    const int exact0 = cq_qmm_get_exact();
    const int64_t min_in0 = cq_qmm_get_q8_min_in();
    cq_qmm_set_exact(0);
    cq_qmm_set_q8_min_in(0);
    static const int64_t shapes[][2] = { { 1, 512 },   { 63, 515 },  { 64, 1000 }, { 65, 256 },
                                         { 128, 384 }, { 129, 4096 }, { 300, 1027 }, { 600, 4096 } };
    static const int groups[] = { 0, 32, 64, 128 };
    int64_t n_lanes = 0, n_spilled = 0, n_reads = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t bi = 0; bi < 4; bi++) {
            const int64_t out = shapes[si][0], in = shapes[si][1];
            const int bits = k_bits[bi], group = groups[(si + bi) % 4];
            tmat t;
            tmat_make(&t, out, in, bits, group, 1);
            if (si % 3 == 1) {
                /* every 5th row: its first 128 cherries moved into the first
                 * chunk (up to 128 layers there, the sparse ones spilled); a moved cherry may share
                 * its column with another one of the row, which the CSR
                 * form sums: the dense truth is rebuilt that way */
                for (int64_t r = 0; r < out; r += 5)
                    for (int32_t i = t.w.rowptr[r], k = 0; i < t.w.rowptr[r + 1] && k < 128; i++, k++)
                        t.cols[i] = (uint16_t)((k * 37) % 128);
                for (int64_t r = 0; r < out; r++)
                    for (int64_t j = 0; j < in; j++)
                        t.dense[r * in + j] = dequant_def(bits, t.u[r * in + j], cq_f16_to_f32(t.scales[r * t.ng + j / t.g]));
                for (int64_t r = 0; r < out; r++)
                    for (int32_t i = t.w.rowptr[r]; i < t.w.rowptr[r + 1]; i++) t.dense[r * in + t.w.cols[i]] += t.delta[i];
            }
            assert_int_equal(cq_qmm_check(&t.w), 0);
            const int64_t nb = cq_qmm_lanes_bytes(&t.w);
            assert_true(nb > 0);
            uint8_t *L = malloc((size_t)nb), *ic = malloc((size_t)(out * t.rb));
            assert_int_equal(cq_qmm_lanes_build(&t.w, L, nb), 0);
            assert_int_equal(cq_qmm_lanes_check(&t.w, L, nb), 0);
            n_spilled += lanes_decode_check(&t, L, nb);
            cq_qmm_il il, il0;
            assert_int_equal(cq_qmm_il_build(&il, &t.w, ic), 0);
            assert_null(il.lanes);
            il0 = il;
            il.lanes = L;
            il.lanes_bytes = nb;
            gv_io io;
            gv_io_make(&io, &t);
            float *x = io.x, *sx = io.sx, *y = io.y, *y0 = io.y2, *yq = io.yq, *ye = io.ye;
            assert_int_equal(cq_qmm_il_gemv(&il, x, y), 0);
            assert_int_equal(cq_qmm_il_gemv(&il0, x, y0), 0);
            if (vnni) {
                n_lanes++;
                check_close(&t, x, 1, y, yq, "lanes vs int8 reference");
                check_close(&t, x, 1, y, y0, "lanes vs gathers");
                check_q8_rows(&t, x, sx, y, ye, "lanes vs exact");
                /* the kernel reads the lanes: change the h(delta) of pair 0's
                 * first lane cherry, then of its first spilled one: exactly
                 * that row's output changes */
                uint64_t m;
                uint32_t v[5];
                const uint64_t off = lanes_pair(L, 0, v);
                const int64_t ne = (int64_t)v[0] + v[1], nz = (int64_t)v[2] + v[3];
                for (int which = 0; which < 2; which++) {
                    uint8_t *hb;
                    int64_t row;
                    if (which == 0) {
                        if (ne == 0) continue;
                        memcpy(&m, L + off, 8);
                        row = __builtin_ctzll(m) + (v[0] ? 0 : 64);
                        hb = L + off + 10 * ne + nz;
                    } else {
                        if (v[4] == 0) continue;
                        row = L[off + 10 * ne + 3 * nz + 4 * v[4]];   /* spill 0's row */
                        hb = L + off + 10 * ne + 3 * nz + 2 * v[4];     /* and its h(delta) */
                    }
                    const uint16_t h_old = (uint16_t)(hb[0] | hb[1] << 8),
                                   h_new = cq_f32_to_f16(cq_f16_to_f32(h_old) + 64.0f);
                    hb[0] = (uint8_t)h_new;
                    hb[1] = (uint8_t)(h_new >> 8);
                    assert_int_equal(cq_qmm_il_gemv(&il, x, y0), 0);
                    for (int64_t r = 0; r < out; r++)
                        if ((r == row) != (y0[r] != y[r]))
                            fail_msg("lanes: a changed %s delta of row %lld changed row %lld (out %lld in %lld)",
                                     which ? "spilled" : "lane", (long long)row, (long long)r, (long long)out,
                                     (long long)in);
                    hb[0] = (uint8_t)h_old;
                    hb[1] = (uint8_t)(h_old >> 8);
                    n_reads++;
                }
            }
            /* GEMM on 3 tokens: the lanes GEMV per token */
            {
                float *X = malloc(sizeof(float) * (size_t)(3 * in)), *Y = malloc(sizeof(float) * (size_t)(3 * out)),
                      *Yr = malloc(sizeof(float) * (size_t)(3 * out));
                rand_vec(X, 3 * in);
                gemm_ref(&t, X, 3, Yr, cq_qmm_gemv_uses_q8(&t.w));
                assert_int_equal(cq_qmm_il_gemm(&il, X, 3, Y), 0);
                check_close(&t, X, 3, Y, Yr, "lanes gemm");
                free(X);
                free(Y);
                free(Yr);
            }
            /* damaged or mismatched lanes are refused */
            {
                int nlog = 0;
                cq_log_set_callback(count_log, &nlog);
                uint8_t *bad = malloc((size_t)nb);
                const int64_t ng = (out + 63) / 64;
                uint32_t v[5];
                const uint64_t off = lanes_pair(L, 0, v);
                const int64_t ne = (int64_t)v[0] + v[1];
                for (int k = 0; k < 7; k++) {
                    memcpy(bad, L, (size_t)nb);
                    int64_t nbad = nb;
                    if (k == 0) bad[0] ^= 1;                              /* magic */
                    if (k == 1) nbad = nb - 1;                            /* size */
                    if (k == 2) bad[64] += 64;                            /* pair 0's offset */
                    if ((k == 3 || k == 4) && ne == 0) continue;   /* pair 0 has no cherries */
                    if (k == 3) bad[off + 8 * ne] = 0xFF, bad[off + 8 * ne + 1] = 0x7F;   /* chunk of entry 0 */
                    if (k == 4) bad[off + 10 * ne] = 200;                 /* column of cherry 0 */
                    if (k == 5) {                                         /* a row past a short group */
                        if (out % 64 == 0) continue;
                        const int64_t p = (ng - 1) / 2;
                        uint64_t mm;
                        uint32_t pv[5];
                        const uint64_t po = lanes_pair(L, p, pv);
                        const int64_t first = (ng - 1) % 2 ? pv[0] : 0, cnt = (ng - 1) % 2 ? pv[1] : pv[0];
                        if (cnt == 0) continue;
                        memcpy(&mm, bad + po + 8 * first, 8);
                        mm |= 1ull << 63;
                        memcpy(bad + po + 8 * first, &mm, 8);
                    }
                    if (k == 6) {                                         /* a spill's row past the pair */
                        if (v[4] == 0) continue;
                        const int64_t nz0 = (int64_t)v[2] + v[3];
                        bad[off + 10 * ne + 3 * nz0 + 4 * v[4]] = 200;    /* spill 0's row */
                    }
                    if (cq_qmm_lanes_check(&t.w, bad, nbad) != CQ_EINVAL)
                        fail_msg("lanes check accepted damage %d (out %lld in %lld)", k, (long long)out, (long long)in);
                }
                cq_qmm_w w2 = t.w;   /* lanes of another weight */
                w2.out = out > 1 ? out - 1 : out;
                w2.in = out > 1 ? in : in - 1;
                assert_int_equal(cq_qmm_lanes_check(&w2, L, nb), CQ_EINVAL);
                if (vnni) {
                    memcpy(bad, L, (size_t)nb);
                    bad[16] ^= 1;   /* header: out */
                    cq_qmm_il ib = il;
                    ib.lanes = bad;
                    assert_int_equal(cq_qmm_il_gemv(&ib, x, y0), CQ_EINVAL);
                }
                assert_int_equal(cq_qmm_lanes_build(&t.w, L, nb - 1), CQ_EINVAL);
                cq_log_set_callback(NULL, NULL);
                assert_true(nlog >= 6);
                free(bad);
            }
            gv_io_free(&io);
            free(ic);
            free(L);
            tmat_free(&t);
        }
    if (vnni) assert_true(n_lanes > 20);
    assert_true(n_spilled > 1000);   /* the many-cherry rows spilled */
    if (vnni) assert_true(n_reads > 20);
    /* no cherries: no lanes */
    {
        tmat t;
        tmat_make(&t, 70, 512, 3, 128, 0);
        assert_int_equal(cq_qmm_lanes_bytes(&t.w), 0);
        tmat_free(&t);
    }
    /* a delta that overflows FP16: refused; the gathers keep it unrounded */
    {
        tmat t;
        tmat_make(&t, 5, 512, 4, 128, 1);
        t.delta[t.w.rowptr[1]] = 1.0e6f;
        const int64_t nb = cq_qmm_lanes_bytes(&t.w);
        uint8_t *L = malloc((size_t)nb);
        int nlog = 0;
        cq_log_set_callback(count_log, &nlog);
        assert_int_equal(cq_qmm_lanes_build(&t.w, L, nb), CQ_ERANGE);
        cq_log_set_callback(NULL, NULL);
        assert_int_equal(nlog, 0);   /* a warning, not an error: the caller falls back */
        float x[512], y[5], yr[5];
        rand_vec(x, 512);
        assert_int_equal(cq_qmm_gemv(&t.w, x, y), 0);
        assert_int_equal((cq_qmm_gemv_uses_q8(&t.w) ? cq_qmm_gemv_q8_ref : cq_qmm_gemv_ref)(&t.w, x, yr), 0);
        check_close(&t, x, 1, y, yr, "overflowing delta, gathers");
        free(L);
        tmat_free(&t);
    }
    cq_qmm_set_exact(exact0);
    cq_qmm_set_q8_min_in(min_in0);
    assert_int_equal(cq_qmm_set_isa(CQ_ISA_AUTO), 0);
}

static void test_isa_scalar(void **state) { (void)state; run_isa(CQ_ISA_SCALAR); }
static void test_isa_avx2(void **state) { (void)state; run_isa(CQ_ISA_AVX2); }
static void test_isa_avx512(void **state) { (void)state; run_isa(CQ_ISA_AVX512); }

/* A LLaMA-like row length through every fast path: multi-threaded GEMV, and
 * GEMM with 600 rows (up to 256-row tiles per thread, so at two threads or
 * fewer a thread walks more than one tile, the last one partial). */
static void test_llama_shape(void **state)
{
    (void)state;
    for (int isa = CQ_ISA_AVX2; isa <= CQ_ISA_AVX512VNNI; isa++) {
        if (!cq_qmm_isa_supported((cq_isa)isa)) continue;
        assert_int_equal(cq_qmm_set_isa((cq_isa)isa), 0);
        cq_qmm_set_exact(0);
        for (int bits = 3; bits <= 4; bits++) {
            tmat t;
            tmat_make(&t, 600, 4096, bits, 128, 1);
            int64_t n = 9;
            float *X = malloc(sizeof(float) * (size_t)(n * 4096));
            float *Y = malloc(sizeof(float) * (size_t)(n * 600));
            float *Yr = malloc(sizeof(float) * (size_t)(n * 600));
            rand_vec(X, n * 4096);
            assert_int_equal(cq_qmm_gemm_ref(&t.w, X, n, Yr), 0);
            assert_int_equal(cq_qmm_gemm(&t.w, X, n, Y), 0);
            check_close(&t, X, n, Y, Yr, "llama gemm");
            assert_int_equal(cq_qmm_gemv(&t.w, X, Y), 0);
            if (isa == CQ_ISA_AVX512VNNI) {
                assert_true(cq_qmm_gemv_uses_q8(&t.w));
                assert_int_equal(cq_qmm_gemv_q8_ref(&t.w, X, Yr), 0);
            }
            check_close(&t, X, 1, Y, Yr, "llama gemv");
            /* the interleaved form, rows spread over the threads in chunks */
            uint8_t *ic = malloc((size_t)(600 * t.rb));
            cq_qmm_il il;
            assert_int_equal(cq_qmm_il_build(&il, &t.w, ic), 0);
            assert_int_equal(cq_qmm_il_gemv(&il, X, Yr), 0);
            assert_memory_equal(Y, Yr, 600 * sizeof(float));
            assert_int_equal(cq_qmm_il_gemm(&il, X, n, Yr), 0);
            assert_int_equal(cq_qmm_gemm_ref(&t.w, X, n, Y), 0);
            check_close(&t, X, n, Yr, Y, "llama interleaved gemm");
            free(ic);
            free(X);
            free(Y);
            free(Yr);
            tmat_free(&t);
        }
    }
    assert_int_equal(cq_qmm_set_isa(CQ_ISA_AUTO), 0);
}

/* A wrong code anywhere must be caught: flip one code and expect a mismatch. */
static void test_detects_corruption(void **state)
{
    (void)state;
    tmat t;
    tmat_make(&t, 8, 512, 3, 128, 1);
    float x[512], y[8], yr[8];
    for (int i = 0; i < 512; i++) x[i] = 1.0f;
    /* the oracle of the path cq_qmm_gemv takes (int8 activations on VNNI) */
    assert_int_equal((cq_qmm_gemv_uses_q8(&t.w) ? cq_qmm_gemv_q8_ref : cq_qmm_gemv_ref)(&t.w, x, yr), 0);
    t.codes[5 * t.rb + 100] ^= 0x10;     /* one code of row 5 */
    assert_int_equal(cq_qmm_gemv(&t.w, x, y), 0);
    int diff = 0;
    for (int r = 0; r < 8; r++) {
        double err = fabs((double)y[r] - yr[r]);
        if (err > 1e-5 * row_mag(&t, r, x)) diff |= 1 << r;
    }
    assert_int_equal(diff, 1 << 5);
    tmat_free(&t);
}

static void count_log(cq_log_level lvl, const char *msg, void *user)
{
    (void)msg;
    if (lvl == CQ_LOG_ERROR) (*(int *)user)++;
}

static void test_args(void **state)
{
    (void)state;
    tmat t;
    tmat_make(&t, 4, 64, 4, 32, 1);
    float x[64] = { 0 }, y[4];
    int nlog = 0;
    cq_log_set_callback(count_log, &nlog);   /* swallow the expected errors */
    cq_qmm_w bad = t.w;
    bad.bits = 5;
    assert_int_equal(cq_qmm_gemv(&bad, x, y), CQ_EINVAL);
    assert_int_equal(cq_qmm_gemm(&bad, x, 1, y), CQ_EINVAL);
    assert_int_equal(cq_qmm_gemv_ref(&bad, x, y), CQ_EINVAL);
    assert_int_equal(cq_qmm_gemv(&t.w, NULL, y), CQ_EINVAL);
    assert_int_equal(cq_qmm_gemv(NULL, x, y), CQ_EINVAL);
    assert_int_equal(cq_qmm_gemm(&t.w, x, -1, y), CQ_EINVAL);
    bad = t.w;
    bad.in = 0;
    assert_int_equal(cq_qmm_gemv(&bad, x, y), CQ_EINVAL);
    bad = t.w;
    bad.group = -3;
    assert_int_equal(cq_qmm_gemv(&bad, x, y), CQ_EINVAL);
    /* cherry validation */
    uint16_t c0 = t.cols[t.rowptr[1]];
    t.cols[t.rowptr[1]] = 64;
    assert_int_equal(cq_qmm_check(&t.w), CQ_EINVAL);
    t.cols[t.rowptr[1]] = c0;
    int32_t r1 = t.rowptr[2];
    t.rowptr[2] = t.rowptr[1] - 1;
    assert_int_equal(cq_qmm_check(&t.w), CQ_EINVAL);
    t.rowptr[2] = r1;
    assert_int_equal(cq_qmm_check(&t.w), 0);
    assert_int_equal(cq_qmm_set_isa((cq_isa)42), CQ_EINVAL);
    cq_log_set_callback(NULL, NULL);
    assert_true(nlog >= 10);                 /* every rejection was logged */
    assert_int_equal(cq_qmm_gemm(&t.w, x, 0, y), 0);
    assert_string_equal(cq_qmm_isa_name(CQ_ISA_AVX512), "avx512");
    tmat_free(&t);
}

int main(void)
{
    tr_seed(5);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_vs_dense),
        cmocka_unit_test(test_isa_scalar),
        cmocka_unit_test(test_isa_avx2),
        cmocka_unit_test(test_isa_avx512),
        cmocka_unit_test(test_quant_x8),
        cmocka_unit_test(test_isa_vnni),
        cmocka_unit_test(test_q8_min_in),
        cmocka_unit_test(test_interleaved),
        cmocka_unit_test(test_lanes),
        cmocka_unit_test(test_llama_shape),
        cmocka_unit_test(test_detects_corruption),
        cmocka_unit_test(test_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
