/* cherryq: the CherryQ numerics on plain host arrays.
 *
 *   - the group quantizer of CHERRYQ.md section 4 (fake-quant, bit for bit the
 *     PyTorch reference formula),
 *   - the packed layout of a quantized linear weight (docs/format.md, "Packed
 *     linear weights") and its pack / unpack / cherry-delta helpers,
 *   - cherry selection (impact, magnitude, random, loss-aware) and the
 *     heterogeneity scores of CHERRYQ.md section 2 (select.c),
 *   - GPTQ, the post-training baseline on the same grid (gptq.c).
 *
 * No tensors, no backends: row-major float arrays, int64_t sizes. Every
 * function that can fail returns 0 or a negative CQ_E* code and logs why.
 *
 * Grid (fixed; kernels are written against it):
 *   bits b in {2,3,4,8}; group g in {32,64,128}, or 0 = whole row (g = in).
 *   Groups are consecutive columns of one row on the ORIGINAL column grid;
 *   ngroups = ceil(in/g) and the last group is partial when g does not divide
 *   in. Cherry positions are excluded from their group's max|w|.
 *   b <= 4: s = (max|w| + 1e-6) / 2^(b-1)
 *           q = rint(clamp(w/s, -(2^(b-1)-0.01), 2^(b-1)-0.01) - 0.5)
 *           w' = (q + 0.5) * s              q in [-2^(b-1), 2^(b-1)-1]
 *   b  > 4: s = (max|w| + 1e-6) / (2^(b-1)-1)
 *           q = clamp(rint(w/s), -(2^(b-1)-1), 2^(b-1)-1);  w' = q * s
 *   rint = round half to even; everything in float32 as PyTorch computes it.
 *
 * The fp16_scales flag ("deploy-exact" mode): the packed format stores the
 * scales and the cherries as FP16. With fp16_scales = 1 the scale s is rounded
 * to FP16 before it is used (both for w/s and for (q+0.5)*s) and the cherry
 * values are rounded to FP16, so that
 *     cq_quant_fakequant(W, fp16_scales=1) == cq_qunpack(cq_qpack(W))   exactly.
 * QAT uses fp16_scales = 1 (the default for training): it trains against the
 * weights the packed model computes. fp16_scales = 0 is the literal formula
 * of the reference implementation (float32 scales, cherries as given); the
 * PyTorch golden test checks that mode, and the FP16 mode as well (with the
 * torch formula applying .half().float() to s and to the cherries).
 * If the FP16 scale of a group rounds to 0 (max|w| below ~2^-24 * 2^(b-1)),
 * that group dequantizes to 0; the codes are then taken from the float32
 * scale. A scale that is not finite (inf/NaN weights, or |w| > ~65504*2^(b-1)
 * with FP16 scales) is an error (CQ_ERANGE).
 */
#ifndef CQ_QUANT_H
#define CQ_QUANT_H

#include <math.h>

#include "cq_base.h"

/* ------------------------------------------------------------ grid */

/* 0 when (bits, group) is a supported grid, else CQ_EINVAL with a message
 * ("group size 48 not supported (use 32, 64, 128 or 0 for whole row)"). */
CQ_API int cq_quant_check(int bits, int group);

/* Bytes of one packed row of codes: ceil(in*b/8) for b in {2,4,8},
 * ceil(in/8)*3 for b = 3. -1 on a bad argument. */
CQ_API int64_t cq_quant_row_bytes(int64_t in, int bits);

/* Groups per row: ceil(in/group), 1 for group = 0. -1 on a bad argument. */
CQ_API int64_t cq_quant_ngroups(int64_t in, int group);

/* Nominal bits per weight: b + 16/g + 32*nnz/(out*in) (g = in for group 0).
 * 3-bit g128 with k = in/256 cherries per row gives 3.25. */
CQ_API double cq_quant_bpw(int64_t out, int64_t in, int bits, int group, int64_t nnz);

/* Exact bytes of the packed form: codes + scales + rowptr + cols + vals. */
CQ_API int64_t cq_quant_nbytes(int64_t out, int64_t in, int bits, int group, int64_t nnz);

/* Smallest signed level: -2^(b-1) for b <= 4, -(2^(b-1)-1) for b > 4.
 * Codes are u = q - qmin. */
static inline int cq_quant_qmin(int bits)
{
    return bits <= 4 ? -(1 << (bits - 1)) : -((1 << (bits - 1)) - 1);
}

/* Scale from the group's max|w| over its normal (non-cherry) weights, float32
 * exactly as the reference: (maxabs + 1e-6) / 2^(b-1) or / (2^(b-1)-1). */
static inline float cq_quant_scale(float maxabs, int bits)
{
    float den = bits <= 4 ? (float)(1 << (bits - 1)) : (float)((1 << (bits - 1)) - 1);
    return (maxabs + 1e-6f) / den;
}

/* Signed level of w under scale s (s > 0, finite) as a float: the rint()
 * result, so -0 for small negative w with b > 4, as torch computes it. */
static inline float cq_quant_levelf(float w, float s, int bits)
{
    float x = w / s;
    if (bits <= 4) {
        /* python: 2**(b-1) - 0.01 in double, then torch casts to float */
        float lim = (float)((double)(1 << (bits - 1)) - 0.01);
        x = x < -lim ? -lim : x;
        x = x > lim ? lim : x;
        return rintf(x - 0.5f);
    }
    float lim = (float)((1 << (bits - 1)) - 1);
    float r = rintf(x);
    r = r < -lim ? -lim : r;
    return r > lim ? lim : r;
}

/* Signed level q of w under scale s, in [qmin, qmax]. */
static inline int cq_quant_level(float w, float s, int bits)
{
    return (int)cq_quant_levelf(w, s, bits);
}

/* Dequantized value of level q under scale s. */
static inline float cq_quant_dequant(int q, float s, int bits)
{
    return bits <= 4 ? ((float)q + 0.5f) * s : (float)q * s;
}

/* Fake-quant value of w (the reference formula), bit for bit torch's result,
 * signed zeros included: for b > 4 torch computes clamp(rint(w/s)) * s, which
 * is -0 for small negative w. */
static inline float cq_quant_value(float w, float s, int bits)
{
    float q = cq_quant_levelf(w, s, bits);
    return bits <= 4 ? (q + 0.5f) * s : q * s;
}

/* Columns [*c0, *c1) of group gi of a row of `in` columns. */
static inline void cq_quant_group_range(int64_t gi, int64_t in, int group, int64_t *c0,
                                        int64_t *c1)
{
    int64_t g = group ? group : in;
    *c0 = gi * g;
    *c1 = *c0 + g < in ? *c0 + g : in;
}

/* Scales of one group from its max|w|: *s_q is the scale the levels are
 * computed with, the return value the scale they are dequantized with.
 * fp16 off: both are cq_quant_scale(). fp16 on: the return value is the
 * scale rounded to FP16 (what cq_qpack stores) and *s_q equals it, unless it
 * rounded to 0 (then *s_q is the float32 scale and the group dequantizes to
 * 0). The FP16 bits are stored in *h when h is not NULL. */
static inline float cq_quant_group_scale(float maxabs, int bits, int fp16, float *s_q,
                                         uint16_t *h)
{
    float s = cq_quant_scale(maxabs, bits);
    if (!fp16) {
        *s_q = s;
        if (h) *h = cq_f32_to_f16(s);
        return s;
    }
    uint16_t hs = cq_f32_to_f16(s);
    float sd = cq_f16_to_f32(hs);
    if (h) *h = hs;
    *s_q = sd != 0.0f ? sd : s;
    return sd;
}

/* ------------------------------------------------------------ fake-quant */

/* dst[r, :] = Q(w[r, :]) on the grid above; cherry positions (mask != 0) keep
 * their value (rounded to FP16 when fp16_scales) and are excluded from their
 * group's max|w|. cherry_mask [rows, cols] may be NULL (no cherries). dst may
 * alias w. OpenMP over rows. CQ_ERANGE on a non-finite scale. */
CQ_API int cq_quant_fakequant(float *dst, const float *w, const uint8_t *cherry_mask,
                        int64_t rows, int64_t cols, int bits, int group, int fp16_scales);

/* Row loss estimate of CHERRYQ-style selection: row_loss[r] = sum over the
 * normal weights j of F_j (w_j - Q(w_j))^2 with float32 scales (fp16 off).
 * fisher may be NULL (F = 1: plain squared error). */
CQ_API int cq_quant_loss(double *row_loss, const float *w, const float *fisher,
                         const uint8_t *cherry_mask, int64_t rows, int64_t cols,
                         int bits, int group);

/* ------------------------------------------------------------ packed weight */

/* A packed linear weight W [out, in] (docs/format.md):
 *   codes  uint8  [out, row_bytes]   u = q - qmin, see cq_quant_row_bytes
 *   scales FP16   [out, ngroups]
 *   rowptr int32  [out + 1]          cherries in compressed sparse rows
 *   cols   uint16 [nnz]              ascending within a row
 *   vals   FP16   [nnz]
 * Every array is malloc'ed by cq_qpack (or by the caller when filled by hand)
 * and freed by cq_qweight_free. */
typedef struct cq_qweight {
    int64_t out, in;
    int bits, group;      /* group 0 = whole row */
    uint8_t *codes;
    uint16_t *scales;
    int32_t *rowptr;
    uint16_t *cols;
    uint16_t *vals;
    int64_t nnz;
} cq_qweight;

/* Allocates the arrays of q for (out, in, bits, group) and nnz cherries
 * (zeroed). Fails (CQ_EINVAL) for in > 65535 with nnz > 0 (u16 columns) and
 * for nnz > INT32_MAX. */
CQ_API int cq_qweight_alloc(cq_qweight *q, int64_t out, int64_t in, int bits, int group,
                            int64_t nnz);
/* cq_qweight_alloc for the cherries of mask [out, in] (NULL = none): nnz and
 * rowptr are filled from the mask, everything else is zero. */
CQ_API int cq_qweight_alloc_mask(cq_qweight *q, const uint8_t *cherry_mask, int64_t out,
                                 int64_t in, int bits, int group);
CQ_API void cq_qweight_free(cq_qweight *q);

/* Checks the internal consistency of q (sizes, rowptr monotone and ending at
 * nnz, columns ascending and < in). For data read from files. */
CQ_API int cq_qweight_validate(const cq_qweight *q);

/* Packs W [out, in] with cherry mask (NULL = none) into q (allocated here;
 * free with cq_qweight_free). Scales and cherries are stored as FP16, the
 * codes are those of the FP16 scale, so cq_qunpack gives exactly
 * cq_quant_fakequant(W, mask, fp16_scales = 1). At a cherry position the code is
 * that the quantizer gives for the cherry's value (clamped). */
CQ_API int cq_qpack(cq_qweight *q, const float *W, const uint8_t *cherry_mask,
                    int64_t out, int64_t in, int bits, int group);

/* dense [out, in] = dequant(q), cherry positions = the FP16 cherries. */
CQ_API int cq_qunpack(const cq_qweight *q, float *dense);

/* Reads one code (u, unsigned) from a packed row; for tests and slow paths. */
CQ_API int cq_qcode_get(const uint8_t *row, int64_t j, int bits);
/* Writes one code u (0 <= u < 2^bits) into a packed row. */
CQ_API void cq_qcode_set(uint8_t *row, int64_t j, int bits, int u);

/* delta[i] = cherry_value[i] - dequant(code at (row, cols[i])), float32 [nnz]:
 * y = dequant(codes) x + sum_i delta[i] x[cols[i]] equals the packed matmul. */
CQ_API int cq_qpack_cherry_delta(const cq_qweight *q, float *delta);

/* ------------------------------------------------------------ selection */

typedef enum {
    CQ_SEL_IMPACT = 0,   /* Fisher diagonal F (the method)                     */
    CQ_SEL_MAGNITUDE,    /* |w| (paper Table 5 ablation)                       */
    CQ_SEL_RANDOM,       /* uniform, seeded (ablation)                         */
    CQ_SEL_LOSS_AWARE,   /* greedy on sum F (w - Q(w))^2 (beyond the paper)    */
} cq_sel_criterion;

typedef enum {
    CQ_K_DEFAULT = 0,    /* k = max(1, round(in/256)) per row                  */
    CQ_K_REFERENCE,      /* k = floor(ceil(in/256)/8)*8: 0 for in <= 1792      */
    CQ_K_EXPLICIT,       /* k = opts.k per row                                 */
    CQ_K_FRACTION,       /* top fraction opts.fraction of all out*in entries   */
} cq_k_rule;

typedef struct cq_select_opts {
    cq_sel_criterion criterion;
    cq_k_rule k_rule;
    int64_t k;           /* CQ_K_EXPLICIT (clamped to in)                      */
    double fraction;     /* CQ_K_FRACTION, in [0, 1]                           */
    uint64_t seed;       /* CQ_SEL_RANDOM                                      */
    int bits, group;     /* CQ_SEL_LOSS_AWARE: the grid the loss is measured on */
} cq_select_opts;

/* Cherries per row under a per-row rule (not CQ_K_FRACTION); -1 on error. */
CQ_API int64_t cq_cherry_k(int64_t in, cq_k_rule rule, int64_t k_explicit);

/* Fills mask [out, in] (1 = cherry). w is needed for magnitude and
 * loss-aware, fisher [out, in] for impact (and used by loss-aware; NULL there
 * means F = 1). Ties go to the lower column (lower flat index in fraction
 * mode). Deterministic for a given seed, whatever the thread count. */
CQ_API int cq_select_cherries(uint8_t *mask, const float *w, const float *fisher,
                              int64_t out, int64_t in, const cq_select_opts *opts);

/* Heterogeneity score of CHERRYQ.md section 2 over x[0..n): mean of the top 1%
 * divided by the max of the bottom 99%. top = max(1, floor(n/100)) largest
 * values (exact, by quickselect on a copy); bottom = the other n - top. If the
 * bottom max is 0: INFINITY when the top mean is > 0, 1 when it is 0 too
 * (all zero). n < 2 is an error. Apply to F for the impact score
 * (cq_hetero_score) and to |w| for the magnitude score (cq_hetero_score_abs). */
CQ_API int cq_hetero_score(const float *x, int64_t n, double *score);
CQ_API int cq_hetero_score_abs(const float *w, int64_t n, double *score);

/* ------------------------------------------------------------ GPTQ */

/* GPTQ (Frantar et al.) on the CherryQ grid. W [out, in] in/out: on return the
 * dequantized weights (cherries keep their error-updated value, rounded to
 * FP16 when fp16_scales). H [in, in] = 2 X X^T summed over the calibration
 * tokens (symmetric; not modified). Dead columns (H_jj == 0) get H_jj = 1 and
 * W[:, j] = 0; lambda = damp * mean(diag H) is added to the diagonal
 * (damp 0.01 typical); Hinv = upper Cholesky factor of H^-1 (double
 * precision); columns are processed in lazy blocks of `block` (128; rounded up
 * to a multiple of the group) with error feedback err = (w - q)/Hinv_jj.
 * A group's scales are computed when the column loop enters it, from the
 * current (updated) weights of its columns, cherries excluded. Cherries are
 * not quantized (error 0; with fp16_scales the FP16 rounding error is fed
 * back). packed may be NULL; otherwise it receives the packed form
 * (cq_qunpack(packed) == W on return when fp16_scales = 1).
 * CQ_ERANGE if H is not positive definite even after dampening. */
CQ_API int cq_gptq_quantize(float *W, const float *H, const uint8_t *cherry_mask,
                            int64_t out, int64_t in, int bits, int group,
                            float damp, int block, int fp16_scales, cq_qweight *packed);

#endif
