/* cherryq: optimized CPU kernels. GEMMs go to OpenBLAS; everything else is
 * threaded with OpenMP over independent rows. Results agree with cpu/ref.c
 * to float rounding (tests/test_ops.c). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "fastmath.h"
#include "kernels.h"
#include "quant.h"
#include "qmm.h"
#include "ref.h"

_Static_assert(CQ_QMM_IL_ROWS == 4, "CQ_QCODES_IL4 (cq_tensor.h) is cq_qmm_il with blocks of 4 rows");

#define P(t) ((float *)cq_tensor_host(t))
#define PC(t) ((const float *)cq_tensor_host(t))

static float *as_f32(const cq_tensor *t, float **tmp)
{
    *tmp = NULL;
    if (t->dtype == CQ_F32) return (float *)cq_tensor_host(t);
    size_t n = (size_t)cq_tensor_numel(t);
    *tmp = malloc(n * sizeof(float) + 1);
    if (!*tmp) return NULL;
    cq_convert(*tmp, CQ_F32, cq_tensor_host(t), t->dtype, n);
    return *tmp;
}

static int k_matmul(const cq_op *op)
{
    const cq_tensor *A = op->src[0], *B = op->src[1];
    cq_tensor *C = op->dst[0];
    int ta = (int)op->i[0], tb = (int)op->i[1];
    int64_t batch = A->ndim == 3 ? A->ne[0] : 1;
    int64_t bb = B->ndim == 3 ? B->ne[0] : 1;
    int64_t ar = A->ne[A->ndim - 2], ac = A->ne[A->ndim - 1];
    int64_t br = B->ne[B->ndim - 2], bc = B->ne[B->ndim - 1];
    int64_t M = ta ? ac : ar, K = ta ? ar : ac, N = tb ? br : bc;
    float *ta_, *tb_;
    const float *a = as_f32(A, &ta_), *b = as_f32(B, &tb_);
    if (!a || !b) {
        free(ta_);
        free(tb_);
        return CQ_ENOMEM;
    }
    float *c = P(C);
    if (K == 0) {
        for (int64_t i = 0; i < batch * M * N; i++) c[i] = op->f[1] != 0 ? op->f[1] * c[i] : 0;
    } else if (bb == 1 && !ta && batch > 1) {
        /* broadcast B: fold the batch into M */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)(batch * M), (int)N, (int)K,
                    op->f[0], a, (int)ac, b, (int)bc, op->f[1], c, (int)N);
    } else {
        for (int64_t i = 0; i < batch; i++)
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M,
                        (int)N, (int)K, op->f[0], a + i * ar * ac, (int)ac, b + (bb == 1 ? 0 : i) * br * bc,
                        (int)bc, op->f[1], c + i * M * N, (int)N);
    }
    free(ta_);
    free(tb_);
    return CQ_OK;
}

static int k_rmsnorm(const cq_op *op)
{
    const cq_tensor *X = op->src[0];
    int64_t C = X->ne[X->ndim - 1], R = cq_tensor_numel(X) / C;
    float eps = op->f[0];
    const float *x = PC(X), *w = PC(op->src[1]);
    float *y = P(op->dst[0]);
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = x + r * C;
        float ss = 0;
        for (int64_t j = 0; j < C; j++) ss += xr[j] * xr[j];
        float inv = 1.0f / sqrtf(ss / (float)C + eps);
        for (int64_t j = 0; j < C; j++) y[r * C + j] = xr[j] * inv * w[j];
    }
    return CQ_OK;
}

static int k_rmsnorm_bwd(const cq_op *op)
{
    const cq_tensor *X = op->src[0];
    int64_t C = X->ne[X->ndim - 1], R = cq_tensor_numel(X) / C;
    float eps = op->f[0];
    const float *x = PC(X), *w = PC(op->src[1]), *dy = PC(op->src[2]);
    float *dx = P(op->dst[0]), *dw = P(op->dst[1]);
    int nt = cq_num_threads();
    float *part = calloc((size_t)nt * (size_t)C, sizeof(float));
    if (!part) return CQ_ENOMEM;
#pragma omp parallel num_threads(nt) if (R * C > 16384)
    {
#ifdef _OPENMP
        float *pw = part + (size_t)omp_get_thread_num() * (size_t)C;
#else
        float *pw = part;
#endif
#pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            const float *xr = x + r * C, *dr = dy + r * C;
            float ss = 0, dot = 0;
            for (int64_t j = 0; j < C; j++) {
                ss += xr[j] * xr[j];
                dot += dr[j] * w[j] * xr[j];
            }
            float inv = 1.0f / sqrtf(ss / (float)C + eps);
            float k = inv * inv * inv * dot / (float)C;
            for (int64_t j = 0; j < C; j++) {
                dx[r * C + j] = inv * dr[j] * w[j] - xr[j] * k;
                pw[j] += dr[j] * xr[j] * inv;
            }
        }
    }
    for (int64_t j = 0; j < C; j++) {
        float s = 0;
        for (int t = 0; t < nt; t++) s += part[(size_t)t * C + j];
        dw[j] = s;
    }
    free(part);
    return CQ_OK;
}

static int k_rope(const cq_op *op)
{
    const cq_tensor *X = op->src[0];
    int64_t B = X->ne[0], T = X->ne[1], H = X->ne[2], D = X->ne[3], half = D / 2;
    float *tab = malloc((size_t)(T * half * 2) * sizeof(float));
    if (!tab) return CQ_ENOMEM;
    double sgn = op->i[1] ? -1.0 : 1.0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < half; j++) {
            float inv_freq =
                cq_rope_inv_freq(op->f[0], D, j, (int)op->i[2], op->f[1], op->f[2], op->f[3], op->f[4]);
            double a = (double)(op->i[0] + t) * inv_freq;
            tab[(t * half + j) * 2] = (float)cos(a);
            tab[(t * half + j) * 2 + 1] = (float)(sgn * sin(a));
        }
    const float *x = PC(X);
    float *y = P(op->dst[0]);
#pragma omp parallel for collapse(2) schedule(static) if (B * T * H * D > 16384)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t o = ((b * T + t) * H + h) * D;
                const float *cs = tab + t * half * 2;
                for (int64_t j = 0; j < half; j++) {
                    float c = cs[2 * j], s = cs[2 * j + 1];
                    float x1 = x[o + j], x2 = x[o + j + half];
                    y[o + j] = x1 * c - x2 * s;
                    y[o + j + half] = x2 * c + x1 * s;
                }
            }
    free(tab);
    return CQ_OK;
}

/* Attention with BLAS over strided head slices. Work is split over
 * (batch, kv head) pairs with OpenMP, each thread calling single-threaded
 * sgemm on its own scratch (OpenBLAS's own threads would oversubscribe the
 * cores from inside a parallel region); the query heads that share a kv head
 * run in one task so dK/dV accumulate without races. */
static void attn_task(const cq_op *op, int bwd, int64_t b, int64_t hk, float *sc, float *dp)
{
    const cq_tensor *Q = op->src[0], *K = op->src[1], *V = op->src[2];
    int64_t T = Q->ne[1], Hq = Q->ne[2], D = Q->ne[3];
    int64_t S = K->ne[1], Hkv = K->ne[2], rep = Hq / Hkv, pos0 = op->i[0];
    float scale = op->f[0];
    const float *q = PC(Q), *k = PC(K), *v = PC(V);
    int lq = (int)(Hq * D), lk = (int)(Hkv * D);
    const float *kh = k + (b * S * Hkv + hk) * D;
    const float *vh = v + (b * S * Hkv + hk) * D;
    for (int64_t h = hk * rep; h < (hk + 1) * rep; h++) {
        const float *qh = q + (b * T * Hq + h) * D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)S, (int)D, scale, qh, lq, kh, lk, 0.0f, sc,
                    (int)S);
        const float *lse_in = bwd ? PC(op->src[4]) + (b * Hq + h) * T : NULL;
        float *lse_out = !bwd && op->dst[1] ? P(op->dst[1]) + (b * Hq + h) * T : NULL;
        for (int64_t t = 0; t < T; t++) {
            float *r = sc + t * S;
            int64_t ns = pos0 + t + 1;
            float l;
            if (bwd) {
                l = lse_in[t];
            } else {
                float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
                for (int64_t s = 0; s < ns; s++) mx = fmaxf(mx, r[s]);
                float sum = 0;
#pragma omp simd reduction(+ : sum)
                for (int64_t s = 0; s < ns; s++) {
                    r[s] = cq_fexp(r[s] - mx);
                    sum += r[s];
                }
                l = mx + logf(sum);
                if (lse_out) lse_out[t] = l;
                float inv = 1.0f / sum;
                for (int64_t s = 0; s < ns; s++) r[s] *= inv;
                for (int64_t s = ns; s < S; s++) r[s] = 0;
                continue;
            }
#pragma omp simd
            for (int64_t s = 0; s < ns; s++) r[s] = cq_fexp(r[s] - l);
            for (int64_t s = ns; s < S; s++) r[s] = 0;
        }
        if (!bwd) {
            float *oh = P(op->dst[0]) + (b * T * Hq + h) * D;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)D, (int)S, 1.0f, sc, (int)S, vh, lk,
                        0.0f, oh, lq);
            continue;
        }
        const float *oh = PC(op->src[3]) + (b * T * Hq + h) * D;
        const float *doh = PC(op->src[5]) + (b * T * Hq + h) * D;
        float *dqh = P(op->dst[0]) + (b * T * Hq + h) * D;
        float *dkh = P(op->dst[1]) + (b * S * Hkv + hk) * D;
        float *dvh = P(op->dst[2]) + (b * S * Hkv + hk) * D;
        /* dV += P^T dO ; dP = dO V^T ; dS = P (dP - rowsum(dO o O)) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)S, (int)D, (int)T, 1.0f, sc, (int)S, doh, lq, 1.0f,
                    dvh, lk);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)S, (int)D, 1.0f, doh, lq, vh, lk, 0.0f, dp,
                    (int)S);
        for (int64_t t = 0; t < T; t++) {
            float Di = 0;
            for (int64_t d = 0; d < D; d++) Di += doh[t * lq + d] * oh[t * lq + d];
            float *pr = sc + t * S, *dr = dp + t * S;
            for (int64_t s = 0; s < S; s++) dr[s] = pr[s] * (dr[s] - Di);
        }
        /* dQ = dS K * scale ; dK += dS^T Q * scale */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)D, (int)S, scale, dp, (int)S, kh, lk, 1.0f,
                    dqh, lq);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)S, (int)D, (int)T, scale, dp, (int)S, qh, lq, 1.0f,
                    dkh, lk);
    }
}

static int k_attn(const cq_op *op, int bwd)
{
    const cq_tensor *Q = op->src[0], *K = op->src[1];
    int64_t B = Q->ne[0], T = Q->ne[1], S = K->ne[1], Hkv = K->ne[2];
    if (bwd) {
        memset(P(op->dst[0]), 0, cq_tensor_nbytes(op->dst[0]));
        memset(P(op->dst[1]), 0, cq_tensor_nbytes(op->dst[1]));
        memset(P(op->dst[2]), 0, cq_tensor_nbytes(op->dst[2]));
    }
    int64_t tasks = B * Hkv;
    int nt = cq_num_threads();
    if (nt > tasks) nt = (int)tasks;
    size_t per = (size_t)(T * S) * (bwd ? 2 : 1);
    float *scratch = malloc((size_t)(nt > 0 ? nt : 1) * per * sizeof(float));
    if (!scratch) return CQ_ENOMEM;
    int blas_threads = openblas_get_num_threads();
    if (nt > 1) openblas_set_num_threads(1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt > 0 ? nt : 1)
    for (int64_t i = 0; i < tasks; i++) {
#ifdef _OPENMP
        float *sc = scratch + (size_t)omp_get_thread_num() * per;
#else
        float *sc = scratch;
#endif
        attn_task(op, bwd, i / Hkv, i % Hkv, sc, bwd ? sc + T * S : NULL);
    }
    if (nt > 1) openblas_set_num_threads(blas_threads);
    free(scratch);
    return CQ_OK;
}

static int k_xent(const cq_op *op, int bwd)
{
    const cq_tensor *L = op->src[0];
    int64_t N = L->ne[0], V = L->ne[1];
    const float *lg = PC(L);
    const int32_t *tg = cq_tensor_host(op->src[1]);
    for (int64_t n = 0; n < N; n++)
        if (tg[n] >= V) {
            cq_error("xent: target %d out of range for vocab %lld", tg[n], (long long)V);
            return CQ_EINVAL;
        }
    if (!bwd) {
        float *lse = P(op->dst[1]);
        float *nll = op->dst[2] ? P(op->dst[2]) : NULL;
        double tot = 0;
#pragma omp parallel for schedule(static) reduction(+ : tot) if (N * V > 16384)
        for (int64_t n = 0; n < N; n++) {
            const float *r = lg + n * V;
            float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
            for (int64_t v = 0; v < V; v++) mx = fmaxf(mx, r[v]);
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t v = 0; v < V; v++) s += cq_fexp(r[v] - mx);
            float l = mx + logf(s);
            lse[n] = l;
            float e = tg[n] >= 0 ? l - r[tg[n]] : 0.0f;
            if (nll) nll[n] = e;
            tot += e;
        }
        P(op->dst[0])[0] = (float)(tot * op->f[0]);
        return CQ_OK;
    }
    const float *lse = PC(op->src[2]);
    float g = PC(op->src[3])[0] * op->f[0];
    float *dl = P(op->dst[0]);
#pragma omp parallel for schedule(static) if (N * V > 16384)
    for (int64_t n = 0; n < N; n++) {
        float *d = dl + n * V;
        const float *r = lg + n * V;
        if (tg[n] < 0) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        float ln = lse[n];
#pragma omp simd
        for (int64_t v = 0; v < V; v++) d[v] = g * cq_fexp(r[v] - ln);
        d[tg[n]] -= g;
    }
    return CQ_OK;
}

static float sigm(float x) { return cq_fsigmoid(x); }

cq_qmm_w cq_cpu_qmm_w(const cq_op *op)
{
    const cq_qmm_w w = {
        .out = op->src[1]->ne[0],
        .in = op->i[2],
        .bits = (int)op->i[0],
        .group = (int)op->i[1],
        .codes = cq_tensor_host(op->src[1]),
        .scales = cq_tensor_host(op->src[2]),
        .rowptr = op->src[3] ? cq_tensor_host(op->src[3]) : NULL,
        .cols = op->src[3] ? cq_tensor_host(op->src[4]) : NULL,
        .delta = op->src[3] ? cq_tensor_host(op->src[5]) : NULL,
    };
    return w;
}

int cq_cpu_compute(const cq_op *op)
{
    const cq_tensor *s0 = op->src[0], *s1 = op->src[1];
    cq_tensor *d0 = op->dst[0];
    int64_t n = d0 ? cq_tensor_numel(d0) : 0;
    int par = n > 32768;
    switch (op->type) {
    case CQ_OP_FILL:
        if (d0->dtype == CQ_F32) {
            float *d = P(d0), v = op->f[0];
#pragma omp parallel for schedule(static) if (par)
            for (int64_t i = 0; i < n; i++) d[i] = v;
            return CQ_OK;
        }
        return cq_ref_compute(op);
    case CQ_OP_COPY:
        if (cq_tensor_is_contiguous(s0)) {
            if (s0->dtype == d0->dtype) {
                memmove(cq_tensor_host(d0), cq_tensor_host(s0), cq_tensor_nbytes(d0));
                return CQ_OK;
            }
            return cq_convert(cq_tensor_host(d0), d0->dtype, cq_tensor_host(s0), s0->dtype, (size_t)n);
        }
        return cq_ref_compute(op);
    case CQ_OP_ADD:
    case CQ_OP_MUL: {
        int64_t nb = cq_tensor_numel(s1);
        const float *a = PC(s0), *b = PC(s1);
        float *d = P(d0);
        if (nb == n) {
            if (op->type == CQ_OP_ADD) {
#pragma omp parallel for schedule(static) if (par)
                for (int64_t i = 0; i < n; i++) d[i] = a[i] + b[i];
            } else {
#pragma omp parallel for schedule(static) if (par)
                for (int64_t i = 0; i < n; i++) d[i] = a[i] * b[i];
            }
            return CQ_OK;
        }
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = 0; r < n / nb; r++)
            for (int64_t j = 0; j < nb; j++)
                d[r * nb + j] = op->type == CQ_OP_ADD ? a[r * nb + j] + b[j] : a[r * nb + j] * b[j];
        return CQ_OK;
    }
    case CQ_OP_SCALE: {
        const float *a = PC(s0);
        float *d = P(d0), s = op->f[0], c = op->f[1];
#pragma omp parallel for schedule(static) if (par)
        for (int64_t i = 0; i < n; i++) d[i] = s * a[i] + c;
        return CQ_OK;
    }
    case CQ_OP_AXPY: {
        const float *a = PC(s0);
        float *d = P(d0), s = op->f[0];
#pragma omp parallel for schedule(static) if (par)
        for (int64_t i = 0; i < n; i++) d[i] += s * a[i];
        return CQ_OK;
    }
    case CQ_OP_MATMUL: return k_matmul(op);
    case CQ_OP_RMSNORM: return k_rmsnorm(op);
    case CQ_OP_RMSNORM_BWD: return k_rmsnorm_bwd(op);
    case CQ_OP_ROPE: return k_rope(op);
    case CQ_OP_ATTN: return k_attn(op, 0);
    case CQ_OP_ATTN_BWD: return k_attn(op, 1);
    case CQ_OP_SWIGLU: {
        const float *g = PC(s0), *u = s1 ? PC(s1) : NULL;
        float *d = P(d0);
        if (u) {
#pragma omp parallel for simd schedule(static) if (par)
            for (int64_t i = 0; i < n; i++) d[i] = g[i] * sigm(g[i]) * u[i];
        } else {
#pragma omp parallel for simd schedule(static) if (par)
            for (int64_t i = 0; i < n; i++) d[i] = g[i] * sigm(g[i]);
        }
        return CQ_OK;
    }
    case CQ_OP_SWIGLU_BWD: {
        const float *g = PC(s0), *u = s1 ? PC(s1) : NULL, *dy = PC(op->src[2]);
        float *dg = P(d0), *du = op->dst[1] ? P(op->dst[1]) : NULL;
#pragma omp parallel for simd schedule(static) if (par)
        for (int64_t i = 0; i < n; i++) {
            float s = sigm(g[i]), uu = u ? u[i] : 1.0f;
            dg[i] = dy[i] * uu * s * (1.0f + g[i] * (1.0f - s));
            if (du) du[i] = dy[i] * g[i] * s;
        }
        return CQ_OK;
    }
    case CQ_OP_EMBED: {
        int64_t E = s0->ne[1], V = s0->ne[0], N = cq_tensor_numel(s1);
        const int32_t *ids = cq_tensor_host(s1);
        for (int64_t i = 0; i < N; i++)
            if (ids[i] < 0 || ids[i] >= V) {
                cq_error("embed: token id %d out of range for vocab %lld", ids[i], (long long)V);
                return CQ_EINVAL;
            }
        if (s0->dtype != CQ_F32) return cq_ref_compute(op);
        const float *tab = PC(s0);
        float *d = P(d0);
#pragma omp parallel for schedule(static) if (N * E > 32768)
        for (int64_t i = 0; i < N; i++) memcpy(d + i * E, tab + (int64_t)ids[i] * E, (size_t)E * sizeof(float));
        return CQ_OK;
    }
    case CQ_OP_EMBED_BWD: {
        int64_t V = d0->ne[0];
        const int32_t *ids = cq_tensor_host(s0);
        for (int64_t i = 0, N = cq_tensor_numel(s0); i < N; i++)
            if (ids[i] < 0 || ids[i] >= V) {
                cq_error("embed_bwd: token id %d out of range for vocab %lld", ids[i], (long long)V);
                return CQ_EINVAL;
            }
        return cq_ref_compute(op);
    }
    case CQ_OP_XENT: return k_xent(op, 0);
    case CQ_OP_XENT_BWD: return k_xent(op, 1);
    case CQ_OP_ADAMW: {
        const float *g = PC(s0);
        float *p = P(d0), *m = P(op->dst[1]), *v = P(op->dst[2]);
        float lr = op->f[0], b1 = op->f[1], b2 = op->f[2], eps = op->f[3], wd = op->f[4];
        float bc1 = op->f[5], bc2 = op->f[6], gs = op->f[7] != 0 ? op->f[7] : 1.0f;
        float step = lr / bc1, sq = sqrtf(bc2);
#pragma omp parallel for schedule(static) if (par)
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i] * gs;
            p[i] -= lr * wd * p[i];
            m[i] = b1 * m[i] + (1 - b1) * gi;
            v[i] = b2 * v[i] + (1 - b2) * gi * gi;
            p[i] -= step * m[i] / (sqrtf(v[i]) / sq + eps);
        }
        return CQ_OK;
    }
    case CQ_OP_SUMSQ: {
        const float *a = PC(s0);
        int64_t m = cq_tensor_numel(s0);
        double acc = 0;
#pragma omp parallel for schedule(static) reduction(+ : acc) if (m > 32768)
        for (int64_t i = 0; i < m; i++) acc += (double)a[i] * a[i];
        P(d0)[0] = (float)acc;
        return CQ_OK;
    }
    case CQ_OP_SQR_ACCUM: {
        const float *g = PC(s0);
        float *f = P(d0);
        float a = (float)(op->f[0] / (op->f[0] + 1.0)), b = (float)(1.0 / (op->f[0] + 1.0));
#pragma omp parallel for schedule(static) if (par)
        for (int64_t i = 0; i < n; i++) f[i] = f[i] * a + g[i] * g[i] * b;
        return CQ_OK;
    }
    case CQ_OP_FAKEQUANT:
        return cq_quant_fakequant(P(d0), PC(s0), s1 ? cq_tensor_host(s1) : NULL, s0->ne[0], s0->ne[1],
                                  (int)op->i[0], (int)op->i[1], (int)op->i[2]);
    case CQ_OP_QMATMUL: {
        /* the fast mixed int-k + FP16-sparse kernels of cpu/qmm.c (GEMV for
         * a few tokens, tiled dequant + sgemm above); the scalar reference
         * in cpu/ref.c stays the oracle (tests/test_pipeline.c compares) */
        const cq_qmm_w w = cq_cpu_qmm_w(op);
        if (op->i[3] == CQ_QCODES_IL4) {
            /* codes interleaved at load time (models/qmodel.c make_qlinear) */
            const cq_qmm_il il = { .w = w,
                                   .lanes = op->src[6] ? cq_tensor_host(op->src[6]) : NULL,
                                   .lanes_bytes = op->src[6] ? cq_tensor_nbytes(op->src[6]) : 0 };
            return cq_qmm_il_gemm(&il, PC(s0), s0->ne[0], P(d0));
        }
        return cq_qmm_gemm(&w, PC(s0), s0->ne[0], P(d0));
    }
    default: return cq_ref_compute(op);
    }
}
