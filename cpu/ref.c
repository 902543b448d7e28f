/* cherryq: scalar reference implementation of every op (the oracle). */
#include <math.h>
#include <stdlib.h>

#include "cq_tensor.h"
#include "ref.h"

#define P(t) ((float *)cq_tensor_host(t))
#define PC(t) ((const float *)cq_tensor_host(t))
#define PI(t) ((const int32_t *)cq_tensor_host(t))

static float load_f(const cq_tensor *t, int64_t i)
{
    const void *p = cq_tensor_host(t);
    switch (t->dtype) {
    case CQ_F32: return ((const float *)p)[i];
    case CQ_F16: return cq_f16_to_f32(((const uint16_t *)p)[i]);
    case CQ_BF16: return cq_bf16_to_f32(((const uint16_t *)p)[i]);
    case CQ_I32: return (float)((const int32_t *)p)[i];
    default: return 0;
    }
}

static void store_f(cq_tensor *t, int64_t i, float v)
{
    void *p = cq_tensor_host(t);
    switch (t->dtype) {
    case CQ_F32: ((float *)p)[i] = v; break;
    case CQ_F16: ((uint16_t *)p)[i] = cq_f32_to_f16(v); break;
    case CQ_BF16: ((uint16_t *)p)[i] = cq_f32_to_bf16(v); break;
    case CQ_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    default: break;
    }
}

/* element offset (in elements) of linear index i of a possibly strided tensor */
static int64_t strided_off(const cq_tensor *t, int64_t i)
{
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t k = i % t->ne[d];
        i /= t->ne[d];
        off += k * t->nb[d];
    }
    return off;
}

static void ref_copy(const cq_op *op)
{
    const cq_tensor *s = op->src[0];
    cq_tensor *d = op->dst[0];
    int64_t n = cq_tensor_numel(d);
    size_t es = cq_dtype_size(s->dtype);
    for (int64_t i = 0; i < n; i++) {
        int64_t so = strided_off(s, i);
        if (s->dtype == d->dtype)
            memcpy((uint8_t *)cq_tensor_host(d) + i * es, (const uint8_t *)cq_tensor_host(s) + so * es, es);
        else
            store_f(d, i, load_f(s, so));
    }
}

static void ref_matmul(const cq_op *op)
{
    const cq_tensor *A = op->src[0], *B = op->src[1];
    cq_tensor *C = op->dst[0];
    int ta = (int)op->i[0], tb = (int)op->i[1];
    int64_t batch = A->ndim == 3 ? A->ne[0] : 1;
    int64_t bb = B->ndim == 3 ? B->ne[0] : 1;
    int64_t ar = A->ne[A->ndim - 2], ac = A->ne[A->ndim - 1];
    int64_t br = B->ne[B->ndim - 2], bc = B->ne[B->ndim - 1];
    int64_t M = ta ? ac : ar, K = ta ? ar : ac, N = tb ? br : bc;
    float alpha = op->f[0], beta = op->f[1];
    float *c = P(C);
    for (int64_t b = 0; b < batch; b++) {
        int64_t ao = b * ar * ac, bo = (bb == 1 ? 0 : b) * br * bc, co = b * M * N;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++) {
                    float av = load_f(A, ao + (ta ? k * ac + m : m * ac + k));
                    float bv = load_f(B, bo + (tb ? n * bc + k : k * bc + n));
                    acc += (double)av * bv;
                }
                float prev = beta != 0 ? c[co + m * N + n] : 0;
                c[co + m * N + n] = alpha * (float)acc + beta * prev;
            }
    }
}

static void ref_rmsnorm(const cq_op *op, int bwd)
{
    const cq_tensor *X = op->src[0], *W = op->src[1];
    int64_t C = X->ne[X->ndim - 1], R = cq_tensor_numel(X) / C;
    float eps = op->f[0];
    const float *x = PC(X), *w = PC(W);
    if (!bwd) {
        float *y = P(op->dst[0]);
        for (int64_t r = 0; r < R; r++) {
            double ss = 0;
            for (int64_t j = 0; j < C; j++) ss += (double)x[r * C + j] * x[r * C + j];
            float inv = (float)(1.0 / sqrt(ss / C + eps));
            for (int64_t j = 0; j < C; j++) y[r * C + j] = x[r * C + j] * inv * w[j];
        }
        return;
    }
    const float *dy = PC(op->src[2]);
    float *dx = P(op->dst[0]), *dw = P(op->dst[1]);
    double *dwacc = calloc((size_t)C, sizeof *dwacc);
    for (int64_t r = 0; r < R; r++) {
        double ss = 0, dot = 0;
        for (int64_t j = 0; j < C; j++) {
            ss += (double)x[r * C + j] * x[r * C + j];
            dot += (double)dy[r * C + j] * w[j] * x[r * C + j];
        }
        double inv = 1.0 / sqrt(ss / C + eps);
        for (int64_t j = 0; j < C; j++) {
            dx[r * C + j] = (float)(inv * dy[r * C + j] * w[j] - x[r * C + j] * inv * inv * inv * dot / C);
            if (dwacc) dwacc[j] += (double)dy[r * C + j] * x[r * C + j] * inv;
        }
    }
    for (int64_t j = 0; j < C; j++) dw[j] = dwacc ? (float)dwacc[j] : 0;
    free(dwacc);
}

static void ref_rope(const cq_op *op)
{
    const cq_tensor *X = op->src[0];
    int64_t B = X->ne[0], T = X->ne[1], H = X->ne[2], D = X->ne[3], half = D / 2;
    const float *x = PC(X);
    float *y = P(op->dst[0]);
    double sgn = op->i[1] ? -1.0 : 1.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            double pos = (double)(op->i[0] + t);
            for (int64_t h = 0; h < H; h++) {
                int64_t o = ((b * T + t) * H + h) * D;
                for (int64_t j = 0; j < half; j++) {
                    float inv_freq = cq_rope_inv_freq(op->f[0], D, j, (int)op->i[2], op->f[1], op->f[2],
                                                      op->f[3], op->f[4]);
                    double a = pos * inv_freq;
                    double c = cos(a), s = sgn * sin(a);
                    double x1 = x[o + j], x2 = x[o + j + half];
                    y[o + j] = (float)(x1 * c - x2 * s);
                    y[o + j + half] = (float)(x2 * c + x1 * s);
                }
            }
        }
}

/* scores for one (b, h, t) row: returns count of visible keys */
static void ref_attn(const cq_op *op, int bwd)
{
    const cq_tensor *Q = op->src[0], *K = op->src[1], *V = op->src[2];
    int64_t B = Q->ne[0], T = Q->ne[1], Hq = Q->ne[2], D = Q->ne[3];
    int64_t S = K->ne[1], Hkv = K->ne[2], rep = Hq / Hkv;
    int64_t pos0 = op->i[0];
    float scale = op->f[0];
    const float *q = PC(Q), *k = PC(K), *v = PC(V);
    double *p = malloc((size_t)S * sizeof *p);
    double *dp = malloc((size_t)S * sizeof *dp);
    if (!p || !dp) {
        free(p);
        free(dp);
        return;
    }
    float *dq = NULL, *dk = NULL, *dv = NULL;
    const float *o = NULL, *lse = NULL, *dout = NULL;
    if (bwd) {
        o = PC(op->src[3]);
        lse = PC(op->src[4]);
        dout = PC(op->src[5]);
        dq = P(op->dst[0]);
        dk = P(op->dst[1]);
        dv = P(op->dst[2]);
        memset(dq, 0, cq_tensor_nbytes(op->dst[0]));
        memset(dk, 0, cq_tensor_nbytes(op->dst[1]));
        memset(dv, 0, cq_tensor_nbytes(op->dst[2]));
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            int64_t hk = h / rep;
            for (int64_t t = 0; t < T; t++) {
                const float *qr = q + ((b * T + t) * Hq + h) * D;
                int64_t ns = pos0 + t + 1;
                double mx = -INFINITY;
                for (int64_t s = 0; s < ns; s++) {
                    const float *kr = k + ((b * S + s) * Hkv + hk) * D;
                    double acc = 0;
                    for (int64_t d = 0; d < D; d++) acc += (double)qr[d] * kr[d];
                    p[s] = acc * scale;
                    if (p[s] > mx) mx = p[s];
                }
                double sum = 0;
                for (int64_t s = 0; s < ns; s++) sum += exp(p[s] - mx);
                double l = mx + log(sum);
                for (int64_t s = 0; s < ns; s++) p[s] = exp(p[s] - l);
                int64_t oo = ((b * T + t) * Hq + h) * D;
                if (!bwd) {
                    float *out = P(op->dst[0]);
                    for (int64_t d = 0; d < D; d++) {
                        double acc = 0;
                        for (int64_t s = 0; s < ns; s++) acc += p[s] * v[((b * S + s) * Hkv + hk) * D + d];
                        out[oo + d] = (float)acc;
                    }
                    if (op->dst[1]) P(op->dst[1])[(b * Hq + h) * T + t] = (float)l;
                    continue;
                }
                (void)lse;
                double Di = 0;
                for (int64_t d = 0; d < D; d++) Di += (double)dout[oo + d] * o[oo + d];
                for (int64_t s = 0; s < ns; s++) {
                    const float *vr = v + ((b * S + s) * Hkv + hk) * D;
                    double acc = 0;
                    for (int64_t d = 0; d < D; d++) acc += (double)dout[oo + d] * vr[d];
                    dp[s] = p[s] * (acc - Di); /* dS */
                    float *dvr = dv + ((b * S + s) * Hkv + hk) * D;
                    for (int64_t d = 0; d < D; d++) dvr[d] += (float)(p[s] * dout[oo + d]);
                }
                for (int64_t s = 0; s < ns; s++) {
                    const float *kr = k + ((b * S + s) * Hkv + hk) * D;
                    float *dkr = dk + ((b * S + s) * Hkv + hk) * D;
                    for (int64_t d = 0; d < D; d++) {
                        dq[oo + d] += (float)(dp[s] * kr[d] * scale);
                        dkr[d] += (float)(dp[s] * qr[d] * scale);
                    }
                }
            }
        }
    free(p);
    free(dp);
}

static float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

static void ref_xent(const cq_op *op, int bwd)
{
    const cq_tensor *L = op->src[0];
    int64_t N = L->ne[0], V = L->ne[1];
    const float *lg = PC(L);
    const int32_t *tg = PI(op->src[1]);
    if (!bwd) {
        double tot = 0;
        float *lse = P(op->dst[1]);
        float *nll = op->dst[2] ? P(op->dst[2]) : NULL;
        for (int64_t n = 0; n < N; n++) {
            double mx = -INFINITY;
            for (int64_t v = 0; v < V; v++) mx = fmax(mx, lg[n * V + v]);
            double s = 0;
            for (int64_t v = 0; v < V; v++) s += exp(lg[n * V + v] - mx);
            double l = mx + log(s);
            lse[n] = (float)l;
            double e = tg[n] >= 0 ? l - lg[n * V + tg[n]] : 0;
            if (nll) nll[n] = (float)e;
            tot += e;
        }
        P(op->dst[0])[0] = (float)(tot * op->f[0]);
        return;
    }
    const float *lse = PC(op->src[2]);
    float g = PC(op->src[3])[0] * op->f[0];
    float *dl = P(op->dst[0]);
    for (int64_t n = 0; n < N; n++)
        for (int64_t v = 0; v < V; v++) {
            if (tg[n] < 0) {
                dl[n * V + v] = 0;
                continue;
            }
            double sm = exp((double)lg[n * V + v] - lse[n]);
            dl[n * V + v] = (float)(g * (sm - (v == tg[n] ? 1.0 : 0.0)));
        }
}

/* The CherryQ quantizer, written out plainly (core/quant.c is the threaded
 * production version; the two must agree bit for bit). With fp16_scales the
 * dequantization scale is the FP16-rounded scale (levels use it too unless
 * it rounded to 0) and cherries are rounded to FP16, which is exactly what
 * the packed model computes. */
void cq_ref_fakequant_rows(float *dst, const float *w, const uint8_t *mask, int64_t rows, int64_t cols,
                           int bits, int group, int fp16_scales)
{
    int64_t g = group ? group : cols;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g0 = 0; g0 < cols; g0 += g) {
            int64_t g1 = g0 + g < cols ? g0 + g : cols;
            const float *wr = w + r * cols;
            const uint8_t *mr = mask ? mask + r * cols : NULL;
            float mx = 0;
            for (int64_t j = g0; j < g1; j++)
                if (!mr || !mr[j]) mx = fmaxf(mx, fabsf(wr[j]));
            float *dr = dst + r * cols;
            float levels = bits <= 4 ? (float)(1 << (bits - 1)) : (float)((1 << (bits - 1)) - 1);
            float s = (mx + 1e-6f) / levels, sd = s, sq = s;
            if (fp16_scales) {
                sd = cq_f16_to_f32(cq_f32_to_f16(s));
                sq = sd != 0.0f ? sd : s;
            }
            for (int64_t j = g0; j < g1; j++) {
                if (mr && mr[j]) {
                    dr[j] = fp16_scales ? cq_f16_to_f32(cq_f32_to_f16(wr[j])) : wr[j];
                    continue;
                }
                if (bits <= 4) {
                    float lim = levels - 0.01f;
                    float x = wr[j] / sq;
                    x = x < -lim ? -lim : (x > lim ? lim : x);
                    dr[j] = (rintf(x - 0.5f) + 0.5f) * sd;
                } else {
                    float q = rintf(wr[j] / sq);
                    q = q < -levels ? -levels : (q > levels ? levels : q);
                    dr[j] = q * sd;
                }
            }
        }
}

/* Row o of QMATMUL codes in the CQ_QCODES_IL4 layout (cq_tensor.h: blocks of
 * 4 rows, chunk k of each row of a block in row order, chunks of 48 bytes
 * for 3-bit, 64 otherwise) copied into row [rb], from the layout's definition. */
static void ref_il4_row(const uint8_t *codes, int64_t out, int64_t rb, int bits, int64_t o, uint8_t *row)
{
    const int64_t C = bits == 3 ? 48 : 64, b0 = o / 4 * 4, nb = out - b0 < 4 ? out - b0 : 4;
    for (int64_t j = 0; j < rb; j++) {
        const int64_t k = j / C, len = rb - k * C < C ? rb - k * C : C;
        row[j] = codes[b0 * rb + nb * C * k + (o - b0) * len + (j - k * C)];
    }
}

static int ref_qmatmul(const cq_op *op)
{
    const cq_tensor *X = op->src[0];
    int bits = (int)op->i[0], group = (int)op->i[1];
    int64_t in = op->i[2], N = X->ne[0], out = op->src[1]->ne[0];
    int64_t rb = op->src[1]->ne[1];
    int64_t g = group ? group : in, ng = (in + g - 1) / g;
    const uint8_t *codes = cq_tensor_host(op->src[1]);
    const uint16_t *sc = cq_tensor_host(op->src[2]);
    const int32_t *rp = op->src[3] ? cq_tensor_host(op->src[3]) : NULL;
    const uint16_t *cols = rp ? cq_tensor_host(op->src[4]) : NULL;
    const float *delta = rp ? cq_tensor_host(op->src[5]) : NULL;
    const float *x = PC(X);
    float *y = P(op->dst[0]);
    double off = bits <= 4 ? -(double)(1 << (bits - 1)) + 0.5 : -127.0;
    const int il = op->i[3] == CQ_QCODES_IL4;
    uint8_t *tmp = il ? malloc(rb > 0 ? (size_t)rb : 1) : NULL;
    if (il && !tmp) return CQ_ENOMEM;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < out; o++) {
            double acc = 0;
            const uint8_t *row = codes + o * rb;
            if (il) {
                ref_il4_row(codes, out, rb, bits, o, tmp);
                row = tmp;
            }
            for (int64_t j = 0; j < in; j++) {
                double s = cq_f16_to_f32(sc[o * ng + j / g]);
                acc += ((double)cq_ref_code(row, j, bits) + off) * s * x[n * in + j];
            }
            if (rp)
                for (int32_t c = rp[o]; c < rp[o + 1]; c++) acc += (double)delta[c] * x[n * in + cols[c]];
            y[n * out + o] = (float)acc;
        }
    free(tmp);
    return CQ_OK;
}

int cq_ref_compute(const cq_op *op)
{
    const cq_tensor *s0 = op->src[0], *s1 = op->src[1];
    cq_tensor *d0 = op->dst[0];
    int64_t n = d0 ? cq_tensor_numel(d0) : 0;
    switch (op->type) {
    case CQ_OP_FILL:
        for (int64_t i = 0; i < n; i++) store_f(d0, i, op->f[0]);
        return CQ_OK;
    case CQ_OP_COPY: ref_copy(op); return CQ_OK;
    case CQ_OP_ADD:
    case CQ_OP_MUL: {
        int64_t nb = cq_tensor_numel(s1);
        const float *a = PC(s0), *b = PC(s1);
        float *d = P(d0);
        for (int64_t i = 0; i < n; i++)
            d[i] = op->type == CQ_OP_ADD ? a[i] + b[i % nb] : a[i] * b[i % nb];
        return CQ_OK;
    }
    case CQ_OP_SCALE: {
        const float *a = PC(s0);
        float *d = P(d0);
        for (int64_t i = 0; i < n; i++) d[i] = op->f[0] * a[i] + op->f[1];
        return CQ_OK;
    }
    case CQ_OP_AXPY: {
        const float *a = PC(s0);
        float *d = P(d0);
        for (int64_t i = 0; i < n; i++) d[i] += op->f[0] * a[i];
        return CQ_OK;
    }
    case CQ_OP_MATMUL: ref_matmul(op); return CQ_OK;
    case CQ_OP_RMSNORM: ref_rmsnorm(op, 0); return CQ_OK;
    case CQ_OP_RMSNORM_BWD: ref_rmsnorm(op, 1); return CQ_OK;
    case CQ_OP_ROPE: ref_rope(op); return CQ_OK;
    case CQ_OP_ATTN: ref_attn(op, 0); return CQ_OK;
    case CQ_OP_ATTN_BWD: ref_attn(op, 1); return CQ_OK;
    case CQ_OP_SWIGLU: {
        const float *g = PC(s0), *u = s1 ? PC(s1) : NULL;
        float *d = P(d0);
        for (int64_t i = 0; i < n; i++) d[i] = g[i] * sigm(g[i]) * (u ? u[i] : 1.0f);
        return CQ_OK;
    }
    case CQ_OP_SWIGLU_BWD: {
        const float *g = PC(s0), *u = s1 ? PC(s1) : NULL, *dy = PC(op->src[2]);
        float *dg = P(d0), *du = op->dst[1] ? P(op->dst[1]) : NULL;
        for (int64_t i = 0; i < n; i++) {
            float s = sigm(g[i]), uu = u ? u[i] : 1.0f;
            dg[i] = dy[i] * uu * s * (1.0f + g[i] * (1.0f - s));
            if (du) du[i] = dy[i] * g[i] * s;
        }
        return CQ_OK;
    }
    case CQ_OP_EMBED: {
        int64_t E = s0->ne[1], V = s0->ne[0], N = cq_tensor_numel(s1);
        const int32_t *ids = PI(s1);
        for (int64_t i = 0; i < N; i++) {
            if (ids[i] < 0 || ids[i] >= V) return CQ_EINVAL;
            for (int64_t e = 0; e < E; e++) store_f(d0, i * E + e, load_f(s0, (int64_t)ids[i] * E + e));
        }
        return CQ_OK;
    }
    case CQ_OP_EMBED_BWD: {
        int64_t V = d0->ne[0], E = d0->ne[1], N = cq_tensor_numel(s0);
        const int32_t *ids = PI(s0);
        const float *dy = PC(s1);
        float *dt = P(d0);
        memset(dt, 0, cq_tensor_nbytes(d0));
        for (int64_t i = 0; i < N; i++) {
            if (ids[i] < 0 || ids[i] >= V) return CQ_EINVAL;
            for (int64_t e = 0; e < E; e++) dt[(int64_t)ids[i] * E + e] += dy[i * E + e];
        }
        return CQ_OK;
    }
    case CQ_OP_XENT: ref_xent(op, 0); return CQ_OK;
    case CQ_OP_XENT_BWD: ref_xent(op, 1); return CQ_OK;
    case CQ_OP_ADAMW: {
        const float *g = PC(s0);
        float *p = P(d0), *m = P(op->dst[1]), *v = P(op->dst[2]);
        float lr = op->f[0], b1 = op->f[1], b2 = op->f[2], eps = op->f[3], wd = op->f[4];
        float bc1 = op->f[5], bc2 = op->f[6], gs = op->f[7] != 0 ? op->f[7] : 1.0f;
        float step = lr / bc1, sq = sqrtf(bc2);
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
        double acc = 0;
        for (int64_t i = 0, m = cq_tensor_numel(s0); i < m; i++) acc += (double)a[i] * a[i];
        P(d0)[0] = (float)acc;
        return CQ_OK;
    }
    case CQ_OP_SQR_ACCUM: {
        const float *g = PC(s0);
        float *f = P(d0);
        double k = op->f[0];
        for (int64_t i = 0; i < n; i++) f[i] = (float)(f[i] * (k / (k + 1)) + (double)g[i] * g[i] / (k + 1));
        return CQ_OK;
    }
    case CQ_OP_FAKEQUANT:
        cq_ref_fakequant_rows(P(d0), PC(s0), s1 ? cq_tensor_host(s1) : NULL, s0->ne[0], s0->ne[1],
                              (int)op->i[0], (int)op->i[1], (int)op->i[2]);
        return CQ_OK;
    case CQ_OP_QMATMUL: return ref_qmatmul(op);
    default: return CQ_ENOTSUP;
    }
}
