/* cherryq: group quantizer (fake-quant), packed layout, pack / unpack.
 * See quant.h for the formulas and docs/format.md for the byte layout. */
#include "quant.h"

#include <float.h>
#include <stdlib.h>

/* ------------------------------------------------------------ grid */

int cq_quant_check(int bits, int group)
{
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8) {
        cq_error("quant: %d bits not supported (use 2, 3, 4 or 8)", bits);
        return CQ_EINVAL;
    }
    if (group != 0 && group != 32 && group != 64 && group != 128) {
        cq_error("quant: group size %d not supported (use 32, 64, 128 or 0 for whole row)",
                 group);
        return CQ_EINVAL;
    }
    return 0;
}

int64_t cq_quant_row_bytes(int64_t in, int bits)
{
    if (in < 0 || cq_quant_check(bits, 0)) return -1;
    if (bits == 3) return (in + 7) / 8 * 3;
    return (in * bits + 7) / 8;
}

int64_t cq_quant_ngroups(int64_t in, int group)
{
    if (in < 0 || cq_quant_check(2, group)) return -1;
    if (in == 0) return 0;
    if (group == 0) return 1;
    return (in + group - 1) / group;
}

double cq_quant_bpw(int64_t out, int64_t in, int bits, int group, int64_t nnz)
{
    if (out <= 0 || in <= 0 || nnz < 0 || cq_quant_check(bits, group)) return -1.0;
    double g = group ? (double)group : (double)in;
    return (double)bits + 16.0 / g + 32.0 * (double)nnz / ((double)out * (double)in);
}

int64_t cq_quant_nbytes(int64_t out, int64_t in, int bits, int group, int64_t nnz)
{
    if (out < 0 || in < 0 || nnz < 0 || cq_quant_check(bits, group)) return -1;
    return out * cq_quant_row_bytes(in, bits) + out * cq_quant_ngroups(in, group) * 2 +
           (out + 1) * 4 + nnz * 4;
}

static inline float f16_round(float x)
{
    return cq_f16_to_f32(cq_f32_to_f16(x));
}

/* max|w| over the normal weights of [c0, c1); -1 if a weight is not finite
 * (its column in *bad). */
static inline float group_maxabs(const float *w, const uint8_t *m, int64_t c0, int64_t c1,
                                 int64_t *bad)
{
    float mx = 0.0f;
    for (int64_t j = c0; j < c1; j++) {
        float a = fabsf(w[j]);
        if (!(a <= FLT_MAX)) {
            *bad = j;
            return -1.0f;
        }
        if (m && m[j]) continue;
        mx = a > mx ? a : mx;
    }
    return mx;
}

/* ------------------------------------------------------------ fake-quant */

int cq_quant_fakequant(float *dst, const float *w, const uint8_t *cherry_mask, int64_t rows,
                 int64_t cols, int bits, int group, int fp16_scales)
{
    CQ_CHECK_ARG(dst && w, CQ_EINVAL);
    CQ_CHECK_ARG(rows >= 0 && cols >= 0, CQ_EINVAL);
    if (cq_quant_check(bits, group)) return CQ_EINVAL;
    if (rows == 0 || cols == 0) return 0;
    int64_t ng = cq_quant_ngroups(cols, group);
    int64_t bad_r = -1, bad_c = -1;
    float bad_s = 0.0f;

#pragma omp parallel for schedule(static) if (rows * cols > 32768)
    for (int64_t r = 0; r < rows; r++) {
        const float *wr = w + r * cols;
        float *dr = dst + r * cols;
        const uint8_t *mr = cherry_mask ? cherry_mask + r * cols : NULL;
        for (int64_t gi = 0; gi < ng; gi++) {
            int64_t c0, c1, badc = -1;
            cq_quant_group_range(gi, cols, group, &c0, &c1);
            float mx = group_maxabs(wr, mr, c0, c1, &badc);
            float sq = 0.0f, sd = 0.0f;
            if (mx >= 0.0f) sd = cq_quant_group_scale(mx, bits, fp16_scales, &sq, NULL);
            if (mx < 0.0f || !isfinite(sd)) {
#pragma omp critical(cq_fakequant_err)
                if (bad_r < 0) {
                    bad_r = r;
                    bad_c = badc >= 0 ? badc : c0;
                    bad_s = mx < 0.0f ? NAN : sd;
                }
                break;
            }
            if (sq == sd) {
                for (int64_t j = c0; j < c1; j++) {
                    if (mr && mr[j]) dr[j] = fp16_scales ? f16_round(wr[j]) : wr[j];
                    else dr[j] = cq_quant_value(wr[j], sd, bits);
                }
            } else {
                for (int64_t j = c0; j < c1; j++) {
                    if (mr && mr[j]) dr[j] = fp16_scales ? f16_round(wr[j]) : wr[j];
                    else dr[j] = cq_quant_dequant(cq_quant_level(wr[j], sq, bits), sd, bits);
                }
            }
        }
    }
    if (bad_r >= 0) {
        if (isnan(bad_s))
            cq_error("fakequant: non-finite weight at row %lld column %lld",
                     (long long)bad_r, (long long)bad_c);
        else
            cq_error("fakequant: scale %g of row %lld group at column %lld is not finite "
                     "(|w| too large for %s scales)", (double)bad_s, (long long)bad_r,
                     (long long)bad_c, fp16_scales ? "FP16" : "float32");
        return CQ_ERANGE;
    }
    return 0;
}

int cq_quant_loss(double *row_loss, const float *w, const float *fisher,
                  const uint8_t *cherry_mask, int64_t rows, int64_t cols, int bits, int group)
{
    CQ_CHECK_ARG(row_loss && w, CQ_EINVAL);
    CQ_CHECK_ARG(rows >= 0 && cols >= 0, CQ_EINVAL);
    if (cq_quant_check(bits, group)) return CQ_EINVAL;
    int64_t ng = cq_quant_ngroups(cols, group);
    int64_t bad = -1;

#pragma omp parallel for schedule(static) if (rows * cols > 32768)
    for (int64_t r = 0; r < rows; r++) {
        const float *wr = w + r * cols;
        const float *fr = fisher ? fisher + r * cols : NULL;
        const uint8_t *mr = cherry_mask ? cherry_mask + r * cols : NULL;
        double acc = 0.0;
        for (int64_t gi = 0; gi < ng; gi++) {
            int64_t c0, c1, badc = -1;
            cq_quant_group_range(gi, cols, group, &c0, &c1);
            float mx = group_maxabs(wr, mr, c0, c1, &badc);
            if (mx < 0.0f) {
#pragma omp critical(cq_quant_loss_err)
                bad = r;
                break;
            }
            float s = cq_quant_scale(mx, bits);
            for (int64_t j = c0; j < c1; j++) {
                if (mr && mr[j]) continue;
                double e = (double)wr[j] - (double)cq_quant_value(wr[j], s, bits);
                acc += (fr ? (double)fr[j] : 1.0) * e * e;
            }
        }
        row_loss[r] = acc;
    }
    if (bad >= 0) {
        cq_error("quant_loss: non-finite weight in row %lld", (long long)bad);
        return CQ_ERANGE;
    }
    return 0;
}

/* ------------------------------------------------------------ codes */

/* Code j of a row sits at bit j*b of the row's LSB-first bit stream. For
 * b = 3 this is the same as "8 codes per 24-bit little-endian word, code j at
 * bit 3*(j%8) of word j/8", since consecutive little-endian words form one
 * LSB-first stream; a code spans at most 2 bytes. */
int cq_qcode_get(const uint8_t *row, int64_t j, int bits)
{
    int64_t bit = j * bits;
    int64_t byte = bit >> 3;
    int sh = (int)(bit & 7);
    unsigned v = row[byte];
    if (sh + bits > 8) v |= (unsigned)row[byte + 1] << 8;
    return (int)((v >> sh) & ((1u << bits) - 1u));
}

void cq_qcode_set(uint8_t *row, int64_t j, int bits, int u)
{
    int64_t bit = j * bits;
    int64_t byte = bit >> 3;
    int sh = (int)(bit & 7);
    unsigned mask = ((1u << bits) - 1u) << sh;
    unsigned v = ((unsigned)u << sh) & mask;
    row[byte] = (uint8_t)((row[byte] & ~mask) | v);
    if (sh + bits > 8)
        row[byte + 1] = (uint8_t)((row[byte + 1] & ~(mask >> 8)) | (v >> 8));
}

/* ------------------------------------------------------------ qweight */

void cq_qweight_free(cq_qweight *q)
{
    if (!q) return;
    free(q->codes);
    free(q->scales);
    free(q->rowptr);
    free(q->cols);
    free(q->vals);
    memset(q, 0, sizeof(*q));
}

int cq_qweight_alloc(cq_qweight *q, int64_t out, int64_t in, int bits, int group, int64_t nnz)
{
    CQ_CHECK_ARG(q, CQ_EINVAL);
    memset(q, 0, sizeof(*q));
    CQ_CHECK_ARG(out >= 0 && in >= 0 && nnz >= 0, CQ_EINVAL);
    if (cq_quant_check(bits, group)) return CQ_EINVAL;
    if (nnz > 0 && in > 65536) {
        cq_error("qweight: in_features %lld too large for cherries (column indices are "
                 "uint16: at most 65536 columns)", (long long)in);
        return CQ_EINVAL;
    }
    if (nnz > INT32_MAX || out >= INT32_MAX || (out > 0 && in > INT64_MAX / 8 / out)) {
        cq_error("qweight: %lld x %lld with %lld cherries is too large", (long long)out,
                 (long long)in, (long long)nnz);
        return CQ_EINVAL;
    }
    if (nnz > out * in) {
        cq_error("qweight: %lld cherries for %lld x %lld weights", (long long)nnz,
                 (long long)out, (long long)in);
        return CQ_EINVAL;
    }
    int64_t rb = cq_quant_row_bytes(in, bits), ng = cq_quant_ngroups(in, group);
    q->out = out;
    q->in = in;
    q->bits = bits;
    q->group = group;
    q->nnz = nnz;
    q->codes = calloc((size_t)(out * rb) + 1, 1);
    q->scales = calloc((size_t)(out * ng) + 1, sizeof(uint16_t));
    q->rowptr = calloc((size_t)out + 1, sizeof(int32_t));
    q->cols = calloc((size_t)nnz + 1, sizeof(uint16_t));
    q->vals = calloc((size_t)nnz + 1, sizeof(uint16_t));
    if (!q->codes || !q->scales || !q->rowptr || !q->cols || !q->vals) {
        cq_error("qweight: out of memory for %lld x %lld", (long long)out, (long long)in);
        cq_qweight_free(q);
        return CQ_ENOMEM;
    }
    return 0;
}

int cq_qweight_alloc_mask(cq_qweight *q, const uint8_t *cherry_mask, int64_t out, int64_t in,
                          int bits, int group)
{
    CQ_CHECK_ARG(q, CQ_EINVAL);
    memset(q, 0, sizeof(*q));
    CQ_CHECK_ARG(out >= 0 && in >= 0, CQ_EINVAL);
    CQ_CHECK_ARG(out == 0 || in <= INT64_MAX / out, CQ_EINVAL);
    int64_t nnz = 0;
    if (cherry_mask)
        for (int64_t i = 0; i < out * in; i++) nnz += cherry_mask[i] != 0;
    int rc = cq_qweight_alloc(q, out, in, bits, group, nnz);
    if (rc) return rc;
    for (int64_t r = 0; r < out; r++) {
        int64_t c = 0;
        if (cherry_mask)
            for (int64_t j = 0; j < in; j++) c += cherry_mask[r * in + j] != 0;
        q->rowptr[r + 1] = (int32_t)(q->rowptr[r] + c);
    }
    return 0;
}

int cq_qweight_validate(const cq_qweight *q)
{
    CQ_CHECK_ARG(q, CQ_EINVAL);
    CQ_CHECK_ARG(q->out >= 0 && q->in >= 0 && q->nnz >= 0, CQ_EINVAL);
    if (cq_quant_check(q->bits, q->group)) return CQ_EBADMSG;
    if (!q->codes || !q->scales || !q->rowptr || (q->nnz > 0 && (!q->cols || !q->vals))) {
        cq_error("qweight: missing array");
        return CQ_EINVAL;
    }
    if (q->rowptr[0] != 0 || (int64_t)q->rowptr[q->out] != q->nnz) {
        cq_error("qweight: rowptr[0] = %d and rowptr[out] = %d, expected 0 and nnz %lld",
                 q->rowptr[0], q->rowptr[q->out], (long long)q->nnz);
        return CQ_EBADMSG;
    }
    for (int64_t r = 0; r < q->out; r++) {
        int32_t a = q->rowptr[r], b = q->rowptr[r + 1];
        if (b < a || b > q->nnz) {
            cq_error("qweight: rowptr not monotone at row %lld (%d, %d)", (long long)r, a, b);
            return CQ_EBADMSG;
        }
        for (int32_t i = a; i < b; i++) {
            if (q->cols[i] >= q->in || (i > a && q->cols[i] <= q->cols[i - 1])) {
                cq_error("qweight: cherry %d of row %lld has column %u (in = %lld; columns "
                         "must ascend)", i - a, (long long)r, q->cols[i], (long long)q->in);
                return CQ_EBADMSG;
            }
        }
    }
    return 0;
}

int cq_qpack(cq_qweight *q, const float *W, const uint8_t *cherry_mask, int64_t out,
             int64_t in, int bits, int group)
{
    if (q) memset(q, 0, sizeof(*q));
    CQ_CHECK_ARG(q && W, CQ_EINVAL);
    int rc = cq_qweight_alloc_mask(q, cherry_mask, out, in, bits, group);
    if (rc) return rc;
    int64_t rb = cq_quant_row_bytes(in, bits), ng = cq_quant_ngroups(in, group);
    int qmin = cq_quant_qmin(bits);
    int64_t bad_r = -1, bad_c = -1;

#pragma omp parallel for schedule(static) if (out * in > 32768)
    for (int64_t r = 0; r < out; r++) {
        const float *wr = W + r * in;
        const uint8_t *mr = cherry_mask ? cherry_mask + r * in : NULL;
        uint8_t *cr = q->codes + r * rb;
        int64_t ci = q->rowptr[r];
        for (int64_t gi = 0; gi < ng; gi++) {
            int64_t c0, c1, badc = -1;
            cq_quant_group_range(gi, in, group, &c0, &c1);
            float mx = group_maxabs(wr, mr, c0, c1, &badc);
            float sq = 0.0f, sd = 0.0f;
            uint16_t h = 0;
            if (mx >= 0.0f) sd = cq_quant_group_scale(mx, bits, 1, &sq, &h);
            if (mx < 0.0f || !isfinite(sd)) {
#pragma omp critical(cq_qpack_err)
                if (bad_r < 0) {
                    bad_r = r;
                    bad_c = badc >= 0 ? badc : c0;
                }
                break;
            }
            q->scales[r * ng + gi] = h;
            for (int64_t j = c0; j < c1; j++) {
                int u = cq_quant_level(wr[j], sq, bits) - qmin;
                cq_qcode_set(cr, j, bits, u);
                if (mr && mr[j]) {
                    q->cols[ci] = (uint16_t)j;
                    q->vals[ci] = cq_f32_to_f16(wr[j]);
                    ci++;
                }
            }
        }
    }
    if (bad_r >= 0) {
        cq_error("qpack: non-finite weight or FP16 scale overflow in row %lld near column "
                 "%lld", (long long)bad_r, (long long)bad_c);
        cq_qweight_free(q);
        return CQ_ERANGE;
    }
    return 0;
}

int cq_qunpack(const cq_qweight *q, float *dense)
{
    CQ_CHECK_ARG(q && dense, CQ_EINVAL);
    int rc = cq_qweight_validate(q);
    if (rc) return rc;
    int64_t out = q->out, in = q->in;
    int bits = q->bits, qmin = cq_quant_qmin(bits);
    int64_t rb = cq_quant_row_bytes(in, bits), ng = cq_quant_ngroups(in, q->group);

#pragma omp parallel for schedule(static) if (out * in > 32768)
    for (int64_t r = 0; r < out; r++) {
        const uint8_t *cr = q->codes + r * rb;
        float *dr = dense + r * in;
        for (int64_t gi = 0; gi < ng; gi++) {
            int64_t c0, c1;
            cq_quant_group_range(gi, in, q->group, &c0, &c1);
            float s = cq_f16_to_f32(q->scales[r * ng + gi]);
            for (int64_t j = c0; j < c1; j++)
                dr[j] = cq_quant_dequant(cq_qcode_get(cr, j, bits) + qmin, s, bits);
        }
        for (int32_t i = q->rowptr[r]; i < q->rowptr[r + 1]; i++)
            dr[q->cols[i]] = cq_f16_to_f32(q->vals[i]);
    }
    return 0;
}

int cq_qpack_cherry_delta(const cq_qweight *q, float *delta)
{
    CQ_CHECK_ARG(q && (delta || q->nnz == 0), CQ_EINVAL);
    int rc = cq_qweight_validate(q);
    if (rc) return rc;
    int64_t rb = cq_quant_row_bytes(q->in, q->bits), ng = cq_quant_ngroups(q->in, q->group);
    int64_t g = q->group ? q->group : q->in;
    int qmin = cq_quant_qmin(q->bits);
    for (int64_t r = 0; r < q->out; r++) {
        const uint8_t *cr = q->codes + r * rb;
        for (int32_t i = q->rowptr[r]; i < q->rowptr[r + 1]; i++) {
            int64_t j = q->cols[i];
            float s = cq_f16_to_f32(q->scales[r * ng + j / g]);
            float d = cq_quant_dequant(cq_qcode_get(cr, j, q->bits) + qmin, s, q->bits);
            delta[i] = cq_f16_to_f32(q->vals[i]) - d;
        }
    }
    return 0;
}
