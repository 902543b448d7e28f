/* cherryq: scalar reference of the mixed int-k + FP16-sparse matmul (the
 * oracle of the SIMD kernels), plus the scalar helpers they share.
 *
 * Written straight from the layout definition in qmm.h: decode one code,
 * dequantize it with its group's scale, multiply, sum in double. */
#include <math.h>
#include <stdlib.h>

#include "qmm_internal.h"

int64_t cq_qmm_row_bytes(int bits, int64_t in)
{
    if (in < 0) return -1;
    if (bits == 3) return (in + 7) / 8 * 3;
    if (bits == 2 || bits == 4 || bits == 8) return (in * bits + 7) / 8;
    return -1;
}

int64_t cq_qmm_ngroups(int group, int64_t in)
{
    if (group < 0 || in < 1) return -1;
    if (group == 0) return 1;
    return (in + group - 1) / group;
}

int cq_qmm_check_basic(const cq_qmm_w *w, const char *fn)
{
    if (!w) {
        cq_error("%s: NULL weight descriptor", fn);
        return CQ_EINVAL;
    }
    if (w->bits != 2 && w->bits != 3 && w->bits != 4 && w->bits != 8) {
        cq_error("%s: bits %d not in {2,3,4,8}", fn, w->bits);
        return CQ_EINVAL;
    }
    if (w->out < 0 || w->in < 1 || w->group < 0 ||
        (w->rowptr && w->in > 65536)) {
        cq_error("%s: bad shape out %lld in %lld group %d%s", fn, (long long)w->out,
                 (long long)w->in, w->group,
                 w->rowptr && w->in > 65536 ? " (cherries need in <= 65536)" : "");
        return CQ_EINVAL;
    }
    if (w->out > 0 && (!w->codes || !w->scales)) {
        cq_error("%s: NULL codes or scales", fn);
        return CQ_EINVAL;
    }
    if (w->rowptr && w->out > 0 && w->rowptr[w->out] > w->rowptr[0] &&
        (!w->cols || !w->delta)) {
        cq_error("%s: cherries without cols or delta", fn);
        return CQ_EINVAL;
    }
    return CQ_OK;
}

int cq_qmm_check(const cq_qmm_w *w)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    if (!w->rowptr) return CQ_OK;
    if (w->rowptr[0] != 0) {
        cq_error("%s: rowptr[0] = %d, expected 0", __func__, w->rowptr[0]);
        return CQ_EINVAL;
    }
    for (int64_t r = 0; r < w->out; r++) {
        int32_t a = w->rowptr[r], b = w->rowptr[r + 1];
        if (b < a) {
            cq_error("%s: rowptr decreases at row %lld (%d -> %d)", __func__, (long long)r, a, b);
            return CQ_EINVAL;
        }
        for (int32_t i = a; i < b; i++)
            if (w->cols[i] >= w->in) {
                cq_error("%s: row %lld cherry %d: column %u >= in %lld", __func__,
                         (long long)r, i, w->cols[i], (long long)w->in);
                return CQ_EINVAL;
            }
    }
    return CQ_OK;
}

/* Dequantized weight of code u with scale s, exactly as the layout says. */
static double ref_dequant(int bits, unsigned u, float s)
{
    if (bits == 8) return ((double)u - 127.0) * (double)s;
    double qmin = -(double)(1 << (bits - 1));
    return ((double)u + qmin + 0.5) * (double)s;
}

static void ref_row(const cq_qmm_w *w, int64_t r, const float *x, float *yr)
{
    int64_t g = w->group ? w->group : w->in;
    int64_t ng = cq_qmm_ngroups(w->group, w->in);
    const uint8_t *row = w->codes + r * cq_qmm_row_bytes(w->bits, w->in);
    const uint16_t *sc = w->scales + r * ng;
    double acc = 0.0;
    for (int64_t j = 0; j < w->in; j++) {
        unsigned u = cq_qmm_code(row, w->bits, j);
        acc += ref_dequant(w->bits, u, cq_f16_to_f32(sc[j / g])) * (double)x[j];
    }
    if (w->rowptr)
        for (int32_t i = w->rowptr[r]; i < w->rowptr[r + 1]; i++)
            if (w->cols[i] < w->in) acc += (double)w->delta[i] * (double)x[w->cols[i]];
    *yr = (float)acc;
}

int cq_qmm_gemv_ref(const cq_qmm_w *w, const float *x, float *y)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(x && y, CQ_EINVAL);
    for (int64_t r = 0; r < w->out; r++) ref_row(w, r, x, &y[r]);
    return CQ_OK;
}

int cq_qmm_gemm_ref(const cq_qmm_w *w, const float *X, int64_t n, float *Y)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(n >= 0, CQ_EINVAL);
    CQ_CHECK_ARG(n == 0 || (X && Y), CQ_EINVAL);
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < w->out; r++) ref_row(w, r, X + t * w->in, &Y[t * w->out + r]);
    return CQ_OK;
}

/* ------------------------------------------------ int8-activation reference */

void cq_qmm_quant_x8(const float *x, int64_t in, int8_t *xq, float *sx)
{
    for (int64_t b0 = 0, bi = 0; b0 < in; b0 += CQ_QMM_Q8_BLOCK, bi++) {
        const int64_t b1 = b0 + CQ_QMM_Q8_BLOCK < in ? b0 + CQ_QMM_Q8_BLOCK : in;
        float amax = 0.0f;
        for (int64_t j = b0; j < b1; j++) {
            float a = fabsf(x[j]);
            if (a > amax) amax = a;
        }
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        sx[bi] = amax > 0.0f ? amax / 127.0f : 0.0f;
        for (int64_t j = b0; j < b1; j++) {
            long q = lrintf(x[j] * inv);
            xq[j] = (int8_t)(q < -127 ? -127 : q > 127 ? 127 : q);
        }
    }
}

static int gemv_q8_ref(const cq_qmm_w *w, const float *x, float *y, int exact_cherries)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(x && y, CQ_EINVAL);
    const int64_t in = w->in;
    int8_t *xq = malloc((size_t)in);
    float *sx = malloc(sizeof(float) * (size_t)((in + CQ_QMM_Q8_BLOCK - 1) / CQ_QMM_Q8_BLOCK));
    double *xh = malloc(sizeof(double) * (size_t)in);
    if (!xq || !sx || !xh) {
        free(xq);
        free(sx);
        free(xh);
        return CQ_ENOMEM;
    }
    cq_qmm_quant_x8(x, in, xq, sx);
    for (int64_t j = 0; j < in; j++) xh[j] = (double)sx[j / CQ_QMM_Q8_BLOCK] * (double)xq[j];
    int64_t g = w->group ? w->group : in;
    int64_t ng = cq_qmm_ngroups(w->group, in), rb = cq_qmm_row_bytes(w->bits, in);
    for (int64_t r = 0; r < w->out; r++) {
        const uint8_t *row = w->codes + r * rb;
        const uint16_t *sc = w->scales + r * ng;
        double acc = 0.0;
        for (int64_t j = 0; j < in; j++)
            acc += ref_dequant(w->bits, cq_qmm_code(row, w->bits, j), cq_f16_to_f32(sc[j / g])) * xh[j];
        if (w->rowptr)
            for (int32_t i = w->rowptr[r]; i < w->rowptr[r + 1]; i++) {
                const int64_t c = w->cols[i];
                if (c >= in) continue;
                acc += exact_cherries ? (double)w->delta[i] * (double)x[c]
                                      : (double)cq_qmm_lane_delta(w->delta[i]) * xh[c];
            }
        y[r] = (float)acc;
    }
    free(xq);
    free(sx);
    free(xh);
    return CQ_OK;
}

int cq_qmm_gemv_q8_ref(const cq_qmm_w *w, const float *x, float *y)
{
    return gemv_q8_ref(w, x, y, 0);
}

int cq_qmm_gemv_q8_exact_cherries_ref(const cq_qmm_w *w, const float *x, float *y)
{
    return gemv_q8_ref(w, x, y, 1);
}

/* ------------------------------------------------ shared scalar helpers */

void cq_qmm_dequant_row_scalar(const cq_qmm_plan *p, int64_t r, float *dst)
{
    const uint8_t *row = p->w->codes + r * p->rb;
    const uint16_t *sc = p->w->scales + r * p->ng;
    for (int64_t g0 = 0, gi = 0; g0 < p->in; g0 += p->g, gi++) {
        float s = cq_f16_to_f32(sc[gi]), cs = p->c * s;
        int64_t g1 = g0 + p->g < p->in ? g0 + p->g : p->in;
        for (int64_t j = g0; j < g1; j++) dst[j] = (float)cq_qmm_code(row, p->bits, j) * s + cs;
    }
}

float cq_qmm_tail_dot(const cq_qmm_plan *p, const uint8_t *row, const float *sf, const float *x)
{
    float acc = 0.0f;
    for (int64_t j = p->ncols_blk; j < p->in; j++)
        acc += sf[j / p->g] * (float)cq_qmm_code(row, p->bits, j) * x[j];
    return acc;
}

float cq_qmm_cherry_dot(const cq_qmm_w *w, int64_t r, const float *x)
{
    float acc = 0.0f;
    if (!w->rowptr) return 0.0f;
    const int32_t e = w->rowptr[r + 1];
    for (int32_t i = w->rowptr[r]; i < e; i++) {
        unsigned c = w->cols[i];
        if (c < (uint64_t)w->in) acc += w->delta[i] * x[c];
    }
    return acc;
}
