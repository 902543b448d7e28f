/* cherryq: GPTQ (Frantar et al. 2023), the post-training baseline, on the
 * CherryQ grid (quant.h), with cherries left unquantized.
 *
 * The algorithm, as in the reference implementation (gptq.py, act_order off,
 * static_groups off):
 *   H += lambda I, lambda = damp * mean(diag H), after dead columns
 *   (H_jj == 0) got H_jj = 1 and W[:, j] = 0;
 *   U = upper Cholesky factor of H^-1 (H^-1 = U^T U);
 *   for each block of columns [i1, i2):
 *     for i in [i1, i2):
 *       entering a group: scales of each row from the group's current
 *         weights, cherries excluded;
 *       q = Q(w) (cherries: q = w);  err = (w - q) / U_ii;
 *       w[i+1:i2] -= err * U[i, i+1:i2]           (per row, in place)
 *     W[:, i2:] -= Err[:, i1:i2] U[i1:i2, i2:]     (lazy batch update, sgemm)
 * Rows are independent apart from sharing U, so the in-block loop runs row by
 * row (OpenMP over rows, contiguous memory), and the trailing update is one
 * cblas_sgemm per block. The factorizations run in double precision with a
 * blocked Cholesky on cblas_dtrsm / cblas_dsyrk.
 */
#include "quant.h"

#include <cblas.h>
#include <float.h>
#include <stdlib.h>

/* In-place lower Cholesky of the row-major n x n matrix A (reads and writes
 * the lower triangle only). Returns -1 when A is not positive definite, with
 * the failing pivot index in *bad. */
static int chol_lower(double *A, int64_t n, int64_t *bad)
{
    const int64_t nb = 128;
    for (int64_t k = 0; k < n; k += nb) {
        int64_t kb = n - k < nb ? n - k : nb;
        for (int64_t j = k; j < k + kb; j++) {
            double *Aj = A + j * n;
            double d = Aj[j];
            for (int64_t p = k; p < j; p++) d -= Aj[p] * Aj[p];
            if (!(d > 0.0) || !isfinite(d)) {
                *bad = j;
                return -1;
            }
            d = sqrt(d);
            Aj[j] = d;
            for (int64_t i = j + 1; i < k + kb; i++) {
                double *Ai = A + i * n;
                double s = Ai[j];
                for (int64_t p = k; p < j; p++) s -= Ai[p] * Aj[p];
                Ai[j] = s / d;
            }
        }
        int64_t m = n - k - kb;
        if (m > 0) {
            cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit,
                        (int)m, (int)kb, 1.0, A + k * n + k, (int)n, A + (k + kb) * n + k,
                        (int)n);
            cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)m, (int)kb, -1.0,
                        A + (k + kb) * n + k, (int)n, 1.0, A + (k + kb) * n + k + kb, (int)n);
        }
    }
    return 0;
}

/* U (float, row-major, upper triangle; lower zero) with H^-1 = U^T U. Hd is
 * the dampened H (double, destroyed). */
static int hinv_upper(float *U, double *Hd, int64_t n)
{
    int64_t bad = -1;
    if (chol_lower(Hd, n, &bad)) {
        cq_error("gptq: H is not positive definite even after dampening (pivot %lld of "
                 "%lld); use more calibration data or a larger damp", (long long)bad,
                 (long long)n);
        return CQ_ERANGE;
    }
    double *X = calloc((size_t)(n * n), sizeof(double));
    if (!X) {
        cq_error("gptq: out of memory for a %lld x %lld inverse", (long long)n, (long long)n);
        return CQ_ENOMEM;
    }
    for (int64_t i = 0; i < n; i++) X[i * n + i] = 1.0;
    /* X = L^-1, then Hd (lower) = X^T X = H^-1 */
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, (int)n,
                (int)n, 1.0, Hd, (int)n, X, (int)n);
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (int)n, (int)n, 1.0, X, (int)n, 0.0,
                Hd, (int)n);
    free(X);
    if (chol_lower(Hd, n, &bad)) {
        cq_error("gptq: H^-1 is numerically not positive definite (pivot %lld of %lld); "
                 "increase damp", (long long)bad, (long long)n);
        return CQ_ERANGE;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) U[i * n + j] = j >= i ? (float)Hd[j * n + i] : 0.0f;
    return 0;
}

int cq_gptq_quantize(float *W, const float *H, const uint8_t *cherry_mask, int64_t out,
                     int64_t in, int bits, int group, float damp, int block, int fp16_scales,
                     cq_qweight *packed)
{
    CQ_CHECK_ARG(W && H, CQ_EINVAL);
    CQ_CHECK_ARG(out >= 0 && in > 0, CQ_EINVAL);
    CQ_CHECK_ARG(in <= INT32_MAX / 2 && out <= INT32_MAX, CQ_EINVAL);
    CQ_CHECK_ARG(damp >= 0.0f && isfinite(damp), CQ_EINVAL);
    CQ_CHECK_ARG(block > 0, CQ_EINVAL);
    if (packed) memset(packed, 0, sizeof(*packed));
    if (cq_quant_check(bits, group)) return CQ_EINVAL;
    for (int64_t i = 0; i < in * in; i++)
        if (!(fabsf(H[i]) <= FLT_MAX)) {
            cq_error("gptq: H[%lld, %lld] is not finite", (long long)(i / in),
                     (long long)(i % in));
            return CQ_ERANGE;
        }
    for (int64_t i = 0; i < out * in; i++)
        if (!(fabsf(W[i]) <= FLT_MAX)) {
            cq_error("gptq: W[%lld, %lld] is not finite", (long long)(i / in),
                     (long long)(i % in));
            return CQ_ERANGE;
        }
    /* groups must not straddle blocks: the scales of a group are taken from
     * weights that have received all earlier error feedback */
    int64_t B = block;
    if (group > 0 && B % group) B = (B + group - 1) / group * group;
    if (B > in) B = in;

    int64_t n = in;
    double *Hd = malloc((size_t)(n * n) * sizeof(double));
    float *U = malloc((size_t)(n * n) * sizeof(float));
    float *Err = malloc((size_t)(out * B + 1) * sizeof(float));
    int32_t *cur = NULL; /* next cherry slot of each row in packed */
    float *scl = malloc((size_t)(2 * out + 1) * sizeof(float)); /* current s_q, s_d per row */
    int rc = 0;
    if (!Hd || !U || !Err || !scl) {
        cq_error("gptq: out of memory for in = %lld", (long long)in);
        rc = CQ_ENOMEM;
        goto done;
    }
    for (int64_t i = 0; i < n * n; i++) Hd[i] = H[i];
    int64_t dead = 0;
    double mean = 0.0;
    for (int64_t j = 0; j < n; j++) {
        if (Hd[j * n + j] == 0.0) {
            Hd[j * n + j] = 1.0;
            for (int64_t r = 0; r < out; r++) W[r * in + j] = 0.0f;
            dead++;
        }
        mean += Hd[j * n + j];
    }
    double lambda = (double)damp * mean / (double)n;
    for (int64_t j = 0; j < n; j++) Hd[j * n + j] += lambda;
    cq_debug("gptq: %lld x %lld, %d bits, group %d, %lld dead columns, lambda %g",
             (long long)out, (long long)in, bits, group, (long long)dead, lambda);
    double t0 = cq_time_sec();
    rc = hinv_upper(U, Hd, n);
    cq_debug("gptq: H^-1 Cholesky factor of %lld x %lld in %.2f s", (long long)n, (long long)n,
             cq_time_sec() - t0);
    t0 = cq_time_sec();
    free(Hd);
    Hd = NULL;
    if (rc) goto done;

    if (packed) {
        rc = cq_qweight_alloc_mask(packed, cherry_mask, out, in, bits, group);
        if (rc) goto done;
        cur = malloc((size_t)(out + 1) * sizeof(int32_t));
        if (!cur) {
            cq_error("gptq: out of memory");
            rc = CQ_ENOMEM;
            goto done;
        }
        memcpy(cur, packed->rowptr, (size_t)out * sizeof(int32_t));
    }

    int64_t g = group ? group : in;
    int64_t ng = cq_quant_ngroups(in, group);
    int64_t rb = cq_quant_row_bytes(in, bits);
    int qmin = cq_quant_qmin(bits);
    int64_t bad_r = -1;
    for (int64_t i1 = 0; i1 < in; i1 += B) {
        int64_t i2 = i1 + B < in ? i1 + B : in, nb = i2 - i1;
#pragma omp parallel for schedule(static) if (out * nb * nb > 65536)
        for (int64_t r = 0; r < out; r++) {
            float *wr = W + r * in;
            const uint8_t *mr = cherry_mask ? cherry_mask + r * in : NULL;
            float *er = Err + r * nb;
            float sq = scl[2 * r], sd = scl[2 * r + 1];
            int32_t ci = packed ? cur[r] : 0;
            for (int64_t i = i1; i < i2; i++) {
                if (i % g == 0) {
                    int64_t c1 = i + g < in ? i + g : in;
                    float mx = 0.0f;
                    for (int64_t j = i; j < c1; j++) {
                        if (mr && mr[j]) continue;
                        float a = fabsf(wr[j]);
                        mx = a > mx ? a : mx;
                    }
                    uint16_t h;
                    sd = cq_quant_group_scale(mx, bits, fp16_scales, &sq, &h);
                    if (!(fabsf(sd) <= FLT_MAX)) {
#pragma omp critical(cq_gptq_err)
                        bad_r = r;
                        sd = sq = 1.0f;
                    }
                    if (packed) packed->scales[r * ng + i / g] = h;
                }
                float w = wr[i], q;
                int lev;
                if (mr && mr[i]) {
                    q = fp16_scales ? cq_f16_to_f32(cq_f32_to_f16(w)) : w;
                    lev = cq_quant_level(q, sq, bits);
                    if (packed) {
                        packed->cols[ci] = (uint16_t)i;
                        packed->vals[ci] = cq_f32_to_f16(q);
                        ci++;
                    }
                } else {
                    lev = cq_quant_level(w, sq, bits);
                    q = cq_quant_dequant(lev, sd, bits);
                }
                if (packed) cq_qcode_set(packed->codes + r * rb, i, bits, lev - qmin);
                wr[i] = q;
                float e = (w - q) / U[i * n + i];
                er[i - i1] = e;
                const float *ui = U + i * n;
                for (int64_t j = i + 1; j < i2; j++) wr[j] -= e * ui[j];
            }
            if (packed) cur[r] = ci;
            scl[2 * r] = sq;
            scl[2 * r + 1] = sd;
        }
        if (i2 < in && out > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, (int)(in - i2),
                        (int)nb, -1.0f, Err, (int)nb, U + i1 * n + i2, (int)n, 1.0f, W + i2,
                        (int)in);
    }
    cq_debug("gptq: column loop in %.2f s", cq_time_sec() - t0);
    if (bad_r >= 0) {
        cq_error("gptq: a scale of row %lld is not finite (weights too large for %s scales "
                 "after error feedback)", (long long)bad_r, fp16_scales ? "FP16" : "float32");
        rc = CQ_ERANGE;
    }
done:
    if (rc && packed) cq_qweight_free(packed);
    free(Hd);
    free(U);
    free(Err);
    free(cur);
    free(scl);
    return rc;
}
