/* cherryq tests: op case table and the compare-against-reference runner. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "op_cases.h"
#include "ref.h"

static uint64_t g_rng = 88172645463325252ull;
void tr_seed(unsigned s) { g_rng = 0x9E3779B97F4A7C15ull * (s + 1); }
static uint64_t next64(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
uint32_t tr_u32(void) { return (uint32_t)(next64() >> 32); }
float tr_uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next64() >> 11) * (1.0 / 9007199254740992.0)); }
float tr_normal(void)
{
    double u1 = (next64() >> 11) * (1.0 / 9007199254740992.0) + 1e-12, u2 = (next64() >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static cq_backend *g_cpu;

static cq_tensor *T(cq_dtype dt, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t ne[4] = { a, b, c, d };
    cq_tensor *t = NULL;
    if (cq_tensor_new(&t, g_cpu, dt, nd, ne)) return NULL;
    return t;
}

static cq_tensor *R(int nd, int64_t a, int64_t b, int64_t c, int64_t d, float scale)
{
    cq_tensor *t = T(CQ_F32, nd, a, b, c, d);
    float *p = cq_tensor_host(t);
    for (int64_t i = 0; i < cq_tensor_numel(t); i++) p[i] = tr_normal() * scale;
    return t;
}

static cq_tensor *ids(int64_t n, int64_t lo, int64_t hi)
{
    cq_tensor *t = T(CQ_I32, 1, n, 0, 0, 0);
    int32_t *p = cq_tensor_host(t);
    for (int64_t i = 0; i < n; i++) p[i] = (int32_t)(lo + (int64_t)(next64() % (uint64_t)(hi - lo)));
    return t;
}

static op_case *add_case(op_case **cs, int *n, int *cap, const char *name, cq_op_type t, double tol)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *cs = realloc(*cs, (size_t)*cap * sizeof **cs);
    }
    op_case *c = &(*cs)[(*n)++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->op.type = t;
    c->tol = tol;
    return c;
}

/* random packed weight for qmatmul */
static void qweight(cq_op *op, int64_t out, int64_t in, int bits, int group, int cherries)
{
    int64_t rb = bits == 3 ? (in + 7) / 8 * 3 : (in * bits + 7) / 8;
    int64_t g = group ? group : in, ng = (in + g - 1) / g;
    cq_tensor *codes = T(CQ_U8, 2, out, rb, 0, 0);
    uint8_t *cp = cq_tensor_host(codes);
    for (int64_t i = 0; i < out * rb; i++) cp[i] = (uint8_t)next64();
    cq_tensor *sc = T(CQ_U16, 2, out, ng, 0, 0);
    uint16_t *sp = cq_tensor_host(sc);
    for (int64_t i = 0; i < out * ng; i++) sp[i] = cq_f32_to_f16(tr_uniform(0.01f, 0.1f));
    op->src[1] = codes;
    op->src[2] = sc;
    if (!cherries) return;
    cq_tensor *rp = T(CQ_I32, 1, out + 1, 0, 0, 0);
    int32_t *r = cq_tensor_host(rp);
    int64_t nnz = 0;
    r[0] = 0;
    for (int64_t o = 0; o < out; o++) {
        int64_t k = (o % 3 == 0) ? 0 : (o % 3 == 1 ? 1 : (in > 8 ? 5 : 1));
        nnz += k;
        r[o + 1] = (int32_t)nnz;
    }
    cq_tensor *cols = T(CQ_U16, 1, nnz ? nnz : 1, 0, 0, 0);
    cq_tensor *dl = T(CQ_F32, 1, nnz ? nnz : 1, 0, 0, 0);
    uint16_t *cc = cq_tensor_host(cols);
    float *dd = cq_tensor_host(dl);
    for (int64_t o = 0; o < out; o++) {
        int64_t k = r[o + 1] - r[o], step = in / (k + 1);
        for (int64_t j = 0; j < k; j++) {
            cc[r[o] + j] = (uint16_t)((j + 1) * step);
            dd[r[o] + j] = tr_normal();
        }
    }
    if (!nnz) { /* rowptr says 0 entries; keep 1-element arrays valid */
        cq_tensor_free(&cols);
        cq_tensor_free(&dl);
        cols = T(CQ_U16, 1, 0, 0, 0, 0);
        dl = T(CQ_F32, 1, 0, 0, 0, 0);
    }
    op->src[3] = rp;
    op->src[4] = cols;
    op->src[5] = dl;
}

int op_cases_build(cq_backend *cpu, op_case **out, unsigned seed)
{
    g_cpu = cpu;
    tr_seed(seed);
    op_case *cs = NULL;
    int n = 0, cap = 0;
    op_case *c;

    c = add_case(&cs, &n, &cap, "fill", CQ_OP_FILL, 0);
    c->op.dst[0] = T(CQ_F32, 2, 5, 7, 0, 0);
    c->op.f[0] = 1.5f;

    const cq_dtype fdt[3] = { CQ_F32, CQ_F16, CQ_BF16 };
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            char nm[64];
            snprintf(nm, sizeof nm, "copy %s->%s", cq_dtype_name(fdt[a]), cq_dtype_name(fdt[b]));
            c = add_case(&cs, &n, &cap, nm, CQ_OP_COPY, 0);
            cq_tensor *s = T(fdt[a], 2, 9, 13, 0, 0);
            float *tmp = malloc(9 * 13 * sizeof(float));
            for (int i = 0; i < 9 * 13; i++) tmp[i] = tr_normal();
            cq_tensor_set_f32(s, tmp);
            free(tmp);
            c->op.src[0] = s;
            c->op.dst[0] = T(fdt[b], 2, 9, 13, 0, 0);
        }
    { /* strided source: the transpose of a [6, 4] matrix */
        c = add_case(&cs, &n, &cap, "copy strided", CQ_OP_COPY, 0);
        cq_tensor *base = R(2, 6, 4, 0, 0, 1), *v = NULL;
        int64_t ne[2] = { 4, 6 }, nb[2] = { 1, 4 };
        cq_tensor_view(&v, base, 2, ne, nb, 0);
        cq_tensor_free(&base);
        c->op.src[0] = v;
        c->op.dst[0] = T(CQ_F32, 2, 4, 6, 0, 0);
    }
    c = add_case(&cs, &n, &cap, "add", CQ_OP_ADD, 1e-6);
    c->op.src[0] = R(2, 7, 33, 0, 0, 1);
    c->op.src[1] = R(2, 7, 33, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 2, 7, 33, 0, 0);
    c = add_case(&cs, &n, &cap, "add broadcast", CQ_OP_ADD, 1e-6);
    c->op.src[0] = R(2, 7, 33, 0, 0, 1);
    c->op.src[1] = R(1, 33, 0, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 2, 7, 33, 0, 0);
    c = add_case(&cs, &n, &cap, "mul", CQ_OP_MUL, 1e-6);
    c->op.src[0] = R(2, 7, 33, 0, 0, 1);
    c->op.src[1] = R(2, 7, 33, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 2, 7, 33, 0, 0);
    c = add_case(&cs, &n, &cap, "scale", CQ_OP_SCALE, 1e-6);
    c->op.src[0] = R(1, 1000, 0, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 1, 1000, 0, 0, 0);
    c->op.f[0] = -0.75f;
    c->op.f[1] = 0.25f;
    c = add_case(&cs, &n, &cap, "axpy", CQ_OP_AXPY, 1e-6);
    c->op.src[0] = R(1, 1000, 0, 0, 0, 1);
    c->op.dst[0] = R(1, 1000, 0, 0, 0, 1);
    c->op.f[0] = 0.5f;

    static const int mm[][5] = { /* M K N ta tb */
        { 17, 33, 9, 0, 0 }, { 17, 33, 9, 0, 1 }, { 17, 33, 9, 1, 0 }, { 17, 33, 9, 1, 1 },
        { 64, 64, 64, 0, 1 }, { 1, 128, 40, 0, 1 }, { 3, 0, 4, 0, 0 },
    };
    for (size_t i = 0; i < sizeof mm / sizeof mm[0]; i++) {
        char nm[64];
        int M = mm[i][0], K = mm[i][1], N = mm[i][2], ta = mm[i][3], tb = mm[i][4];
        snprintf(nm, sizeof nm, "matmul %dx%dx%d ta%d tb%d", M, K, N, ta, tb);
        c = add_case(&cs, &n, &cap, nm, CQ_OP_MATMUL, 1e-5);
        c->op.src[0] = ta ? R(2, K, M, 0, 0, 1) : R(2, M, K, 0, 0, 1);
        c->op.src[1] = tb ? R(2, N, K, 0, 0, 1) : R(2, K, N, 0, 0, 1);
        c->op.dst[0] = T(CQ_F32, 2, M, N, 0, 0);
        c->op.f[0] = 1.0f;
        c->op.i[0] = ta;
        c->op.i[1] = tb;
    }
    c = add_case(&cs, &n, &cap, "matmul batched alpha beta", CQ_OP_MATMUL, 1e-5);
    c->op.src[0] = R(3, 3, 5, 6, 0, 1);
    c->op.src[1] = R(3, 3, 6, 4, 0, 1);
    c->op.dst[0] = R(3, 3, 5, 4, 0, 1);
    c->op.f[0] = 0.5f;
    c->op.f[1] = 1.0f;
    c = add_case(&cs, &n, &cap, "matmul f16 x f16", CQ_OP_MATMUL, 1e-5);
    {
        cq_tensor *a = T(CQ_F16, 2, 8, 16, 0, 0), *b = T(CQ_F16, 2, 12, 16, 0, 0);
        float tmp[16 * 12];
        for (int i = 0; i < 8 * 16; i++) tmp[i] = tr_normal();
        cq_tensor_set_f32(a, tmp);
        for (int i = 0; i < 12 * 16; i++) tmp[i] = tr_normal();
        cq_tensor_set_f32(b, tmp);
        c->op.src[0] = a;
        c->op.src[1] = b;
        c->op.dst[0] = T(CQ_F32, 2, 8, 12, 0, 0);
        c->op.f[0] = 1.0f;
        c->op.i[1] = 1;
    }
    c = add_case(&cs, &n, &cap, "rmsnorm", CQ_OP_RMSNORM, 1e-5);
    c->op.src[0] = R(2, 6, 48, 0, 0, 2);
    c->op.src[1] = R(1, 48, 0, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 2, 6, 48, 0, 0);
    c->op.f[0] = 1e-5f;
    c = add_case(&cs, &n, &cap, "rmsnorm_bwd", CQ_OP_RMSNORM_BWD, 1e-5);
    c->op.src[0] = R(2, 6, 48, 0, 0, 2);
    c->op.src[1] = R(1, 48, 0, 0, 0, 1);
    c->op.src[2] = R(2, 6, 48, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 2, 6, 48, 0, 0);
    c->op.dst[1] = T(CQ_F32, 1, 48, 0, 0, 0);
    c->op.f[0] = 1e-5f;
    for (int inv = 0; inv < 2; inv++) {
        c = add_case(&cs, &n, &cap, inv ? "rope inverse" : "rope", CQ_OP_ROPE, 1e-5);
        c->op.src[0] = R(4, 2, 5, 3, 16, 1);
        c->op.dst[0] = T(CQ_F32, 4, 2, 5, 3, 16);
        c->op.f[0] = 10000.0f;
        c->op.i[0] = 7;
        c->op.i[1] = inv;
    }
    /* Hugging Face's rope_scaling (core/cq_rope.h): linear, and llama3 with
     * frequencies in all three bands (D 16, theta 5e5, original context 64:
     * j = 0 kept, j = 1 smoothed, j >= 2 divided) */
    for (int inv = 0; inv < 2; inv++)
        for (int ty = CQ_ROPE_LINEAR; ty <= CQ_ROPE_LLAMA3; ty++) {
            char nm[48];
            snprintf(nm, sizeof nm, "rope %s%s", ty == CQ_ROPE_LINEAR ? "linear" : "llama3", inv ? " inverse" : "");
            c = add_case(&cs, &n, &cap, nm, CQ_OP_ROPE, 1e-5);
            c->op.src[0] = R(4, 2, 5, 3, 16, 1);
            c->op.dst[0] = T(CQ_F32, 4, 2, 5, 3, 16);
            c->op.f[0] = ty == CQ_ROPE_LINEAR ? 10000.0f : 500000.0f;
            c->op.i[0] = 1000;
            c->op.i[1] = inv;
            c->op.i[2] = ty;
            c->op.f[1] = ty == CQ_ROPE_LINEAR ? 4.0f : 8.0f;
            c->op.f[2] = 1.0f;
            c->op.f[3] = 4.0f;
            c->op.f[4] = 64.0f;
        }
    static const int at[][6] = { /* B T S Hq Hkv D */
        { 2, 5, 5, 4, 2, 16 }, { 1, 3, 9, 4, 4, 8 }, { 1, 1, 12, 6, 2, 32 }, { 1, 33, 33, 2, 1, 64 },
    };
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        int B = at[i][0], Tt = at[i][1], S = at[i][2], Hq = at[i][3], Hk = at[i][4], D = at[i][5];
        for (int bwd = 0; bwd < 2; bwd++) {
            char nm[64];
            snprintf(nm, sizeof nm, "attn%s B%d T%d S%d Hq%d Hkv%d D%d", bwd ? "_bwd" : "", B, Tt, S, Hq, Hk, D);
            c = add_case(&cs, &n, &cap, nm, bwd ? CQ_OP_ATTN_BWD : CQ_OP_ATTN, 1e-5);
            cq_tensor *q = R(4, B, Tt, Hq, D, 1), *k = R(4, B, S, Hk, D, 1), *v = R(4, B, S, Hk, D, 1);
            c->op.src[0] = q;
            c->op.src[1] = k;
            c->op.src[2] = v;
            c->op.f[0] = 1.0f / sqrtf((float)D);
            c->op.i[0] = S - Tt;
            if (!bwd) {
                c->op.dst[0] = T(CQ_F32, 4, B, Tt, Hq, D);
                c->op.dst[1] = T(CQ_F32, 3, B, Hq, Tt, 0);
            } else {
                /* consistent out/lse from the reference forward */
                cq_op f = { .type = CQ_OP_ATTN };
                f.src[0] = q;
                f.src[1] = k;
                f.src[2] = v;
                f.f[0] = c->op.f[0];
                f.i[0] = c->op.i[0];
                f.dst[0] = T(CQ_F32, 4, B, Tt, Hq, D);
                f.dst[1] = T(CQ_F32, 3, B, Hq, Tt, 0);
                cq_ref_compute(&f);
                c->op.src[3] = f.dst[0];
                c->op.src[4] = f.dst[1];
                c->op.src[5] = R(4, B, Tt, Hq, D, 1);
                c->op.dst[0] = T(CQ_F32, 4, B, Tt, Hq, D);
                c->op.dst[1] = T(CQ_F32, 4, B, S, Hk, D);
                c->op.dst[2] = T(CQ_F32, 4, B, S, Hk, D);
            }
        }
    }
    c = add_case(&cs, &n, &cap, "swiglu", CQ_OP_SWIGLU, 1e-5);
    c->op.src[0] = R(2, 5, 37, 0, 0, 2);
    c->op.src[1] = R(2, 5, 37, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 2, 5, 37, 0, 0);
    c = add_case(&cs, &n, &cap, "silu", CQ_OP_SWIGLU, 1e-5);
    c->op.src[0] = R(2, 5, 37, 0, 0, 2);
    c->op.dst[0] = T(CQ_F32, 2, 5, 37, 0, 0);
    c = add_case(&cs, &n, &cap, "swiglu_bwd", CQ_OP_SWIGLU_BWD, 1e-5);
    c->op.src[0] = R(2, 5, 37, 0, 0, 2);
    c->op.src[1] = R(2, 5, 37, 0, 0, 1);
    c->op.src[2] = R(2, 5, 37, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 2, 5, 37, 0, 0);
    c->op.dst[1] = T(CQ_F32, 2, 5, 37, 0, 0);
    c = add_case(&cs, &n, &cap, "embed", CQ_OP_EMBED, 0);
    c->op.src[0] = R(2, 50, 24, 0, 0, 1);
    c->op.src[1] = ids(19, 0, 50);
    c->op.dst[0] = T(CQ_F32, 2, 19, 24, 0, 0);
    c = add_case(&cs, &n, &cap, "embed f16 table", CQ_OP_EMBED, 0);
    {
        cq_tensor *tb = T(CQ_F16, 2, 50, 24, 0, 0);
        float tmp[50 * 24];
        for (int i = 0; i < 50 * 24; i++) tmp[i] = tr_normal();
        cq_tensor_set_f32(tb, tmp);
        c->op.src[0] = tb;
        c->op.src[1] = ids(19, 0, 50);
        c->op.dst[0] = T(CQ_F32, 2, 19, 24, 0, 0);
    }
    c = add_case(&cs, &n, &cap, "embed_bwd", CQ_OP_EMBED_BWD, 1e-6);
    c->op.src[0] = ids(40, 0, 12); /* many repeats */
    c->op.src[1] = R(2, 40, 24, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 2, 12, 24, 0, 0);
    for (int bwd = 0; bwd < 2; bwd++) {
        c = add_case(&cs, &n, &cap, bwd ? "xent_bwd" : "xent", bwd ? CQ_OP_XENT_BWD : CQ_OP_XENT, 1e-5);
        cq_tensor *lg = R(2, 9, 301, 0, 0, 3), *tg = ids(9, 0, 301);
        ((int32_t *)cq_tensor_host(tg))[4] = -1; /* ignored position */
        c->op.src[0] = lg;
        c->op.src[1] = tg;
        c->op.f[0] = 1.0f / 8;
        if (!bwd) {
            c->op.dst[0] = T(CQ_F32, 1, 1, 0, 0, 0);
            c->op.dst[1] = T(CQ_F32, 1, 9, 0, 0, 0);
            c->op.dst[2] = T(CQ_F32, 1, 9, 0, 0, 0);
        } else {
            cq_op f = { .type = CQ_OP_XENT };
            f.src[0] = lg;
            f.src[1] = tg;
            f.f[0] = 1;
            f.dst[0] = T(CQ_F32, 1, 1, 0, 0, 0);
            f.dst[1] = T(CQ_F32, 1, 9, 0, 0, 0);
            cq_ref_compute(&f);
            cq_tensor_free(&f.dst[0]);
            c->op.src[2] = f.dst[1];
            c->op.src[3] = R(1, 1, 0, 0, 0, 1);
            c->op.dst[0] = T(CQ_F32, 2, 9, 301, 0, 0);
        }
    }
    c = add_case(&cs, &n, &cap, "adamw", CQ_OP_ADAMW, 1e-6);
    c->op.src[0] = R(1, 777, 0, 0, 0, 1);
    c->op.dst[0] = R(1, 777, 0, 0, 0, 1);
    c->op.dst[1] = R(1, 777, 0, 0, 0, 0.1f);
    c->op.dst[2] = T(CQ_F32, 1, 777, 0, 0, 0);
    {
        float *v = cq_tensor_host(c->op.dst[2]);
        for (int i = 0; i < 777; i++) v[i] = tr_uniform(0, 0.1f);
    }
    c->op.f[0] = 1e-3f;
    c->op.f[1] = 0.9f;
    c->op.f[2] = 0.95f;
    c->op.f[3] = 1e-8f;
    c->op.f[4] = 0.01f;
    c->op.f[5] = 1 - 0.9f * 0.9f * 0.9f;
    c->op.f[6] = 1 - 0.95f * 0.95f * 0.95f;
    c->op.f[7] = 0.5f;
    c = add_case(&cs, &n, &cap, "sumsq", CQ_OP_SUMSQ, 1e-5);
    c->op.src[0] = R(1, 100003, 0, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 1, 1, 0, 0, 0);
    c = add_case(&cs, &n, &cap, "sqr_accum", CQ_OP_SQR_ACCUM, 1e-6);
    c->op.src[0] = R(1, 999, 0, 0, 0, 1);
    c->op.dst[0] = T(CQ_F32, 1, 999, 0, 0, 0);
    c->op.f[0] = 3;
    static const int fq[][3] = { { 2, 32, 0 }, { 3, 64, 1 }, { 4, 128, 1 }, { 8, 0, 1 }, { 3, 0, 0 }, { 4, 32, 0 } };
    for (size_t i = 0; i < sizeof fq / sizeof fq[0]; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "fakequant b%d g%d fp16s%d", fq[i][0], fq[i][1], fq[i][2]);
        c = add_case(&cs, &n, &cap, nm, CQ_OP_FAKEQUANT, 0);
        int64_t rows = 7, cols = 300;
        c->op.src[0] = R(2, rows, cols, 0, 0, 1);
        cq_tensor *m = T(CQ_U8, 2, rows, cols, 0, 0);
        uint8_t *mp = cq_tensor_host(m);
        for (int64_t j = 0; j < rows * cols; j++) mp[j] = (next64() % 50) == 0;
        c->op.src[1] = i % 2 ? m : NULL;
        if (!(i % 2)) cq_tensor_free(&m);
        c->op.dst[0] = T(CQ_F32, 2, rows, cols, 0, 0);
        c->op.i[0] = fq[i][0];
        c->op.i[1] = fq[i][1];
        c->op.i[2] = fq[i][2];
    }
    static const int qm[][6] = { /* N out in bits group cherries */
        { 1, 37, 256, 4, 128, 1 }, { 1, 37, 200, 3, 64, 1 }, { 1, 16, 96, 2, 32, 0 }, { 1, 9, 130, 8, 0, 1 },
        { 5, 33, 256, 3, 128, 1 }, { 17, 20, 300, 4, 64, 1 }, { 3, 11, 64, 2, 0, 1 }, { 2, 8, 128, 8, 32, 0 },
    };
    for (size_t i = 0; i < sizeof qm / sizeof qm[0]; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "qmatmul N%d %dx%d b%d g%d c%d", qm[i][0], qm[i][1], qm[i][2], qm[i][3], qm[i][4],
                 qm[i][5]);
        c = add_case(&cs, &n, &cap, nm, CQ_OP_QMATMUL, 1e-5);
        c->op.src[0] = R(2, qm[i][0], qm[i][2], 0, 0, 1);
        qweight(&c->op, qm[i][1], qm[i][2], qm[i][3], qm[i][4], qm[i][5]);
        c->op.dst[0] = T(CQ_F32, 2, qm[i][0], qm[i][1], 0, 0);
        c->op.i[0] = qm[i][3];
        c->op.i[1] = qm[i][4];
        c->op.i[2] = qm[i][2];
    }
    *out = cs;
    return n;
}

void op_cases_free(op_case *cs, int n)
{
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < CQ_MAX_SRC; k++) cq_tensor_free((cq_tensor **)&cs[i].op.src[k]);
        for (int k = 0; k < CQ_MAX_DST; k++) cq_tensor_free(&cs[i].op.dst[k]);
    }
    free(cs);
}

/* copy a CPU tensor to backend be (contiguous copy of its elements) */
static cq_tensor *to_backend(cq_backend *be, const cq_tensor *t)
{
    if (!t) return NULL;
    cq_tensor *u = NULL;
    if (cq_tensor_new(&u, be, t->dtype, t->ndim, t->ne)) return NULL;
    size_t nb = cq_tensor_nbytes(u);
    if (!nb) return u;
    if (cq_tensor_is_contiguous(t)) {
        cq_tensor_set(u, cq_tensor_host(t), nb);
        return u;
    }
    /* strided source: keep the strides by uploading the whole base buffer */
    cq_tensor_free(&u);
    cq_buffer *b = NULL;
    if (cq_buffer_alloc(be, t->buf->size, &b)) return NULL;
    be->ops->upload(be, b->handle, 0, t->buf->handle, t->buf->size);
    u = calloc(1, sizeof *u);
    *u = *t;
    u->buf = b;
    u->grad = NULL;
    u->owner = NULL;
    return u;
}

static double nerr(const float *a, const float *ref, int64_t n)
{
    double num = 0, den = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) != !isfinite(ref[i])) return INFINITY;
        double d = fabs((double)a[i] - ref[i]);
        if (d > mx) mx = d;
        den = fmax(den, fabs(ref[i]));
        num += d * d;
    }
    (void)num;
    return mx / (den > 1e-30 ? den : 1.0);
}

static int dst_as_f32(const cq_tensor *t, float *out)
{
    int64_t n = cq_tensor_numel(t);
    if (t->dtype == CQ_I32) {
        int32_t *tmp = malloc((size_t)n * 4 + 4);
        int r = cq_tensor_get(t, tmp, (size_t)n * 4);
        for (int64_t i = 0; i < n; i++) out[i] = (float)tmp[i];
        free(tmp);
        return r;
    }
    return cq_tensor_get_f32(t, out);
}

int op_case_check(cq_backend *be, const op_case *c, double *err_out)
{
    *err_out = 0;
    /* reference on private CPU copies of the dsts (inputs may be in-out) */
    cq_op ref = c->op, run = c->op;
    int r = 0;
    for (int k = 0; k < CQ_MAX_DST; k++) {
        ref.dst[k] = NULL;
        run.dst[k] = NULL;
        if (!c->op.dst[k]) continue;
        ref.dst[k] = to_backend(g_cpu, c->op.dst[k]);
        run.dst[k] = to_backend(be, c->op.dst[k]);
    }
    for (int k = 0; k < CQ_MAX_SRC; k++) run.src[k] = to_backend(be, c->op.src[k]);
    r = cq_op_validate(&ref);
    if (!r) r = c->ref ? c->ref(&ref) : cq_ref_compute(&ref);
    if (!r) {
        if (!cq_backend_supports(be, &run))
            r = CQ_ENOTSUP;
        else
            r = cq_op_run(be, &run);
    }
    if (!r) r = cq_backend_sync(be);
    for (int k = 0; k < CQ_MAX_DST && !r; k++) {
        if (!ref.dst[k]) continue;
        int64_t n = cq_tensor_numel(ref.dst[k]);
        float *a = malloc((size_t)n * 4 + 4), *b = malloc((size_t)n * 4 + 4);
        dst_as_f32(run.dst[k], a);
        dst_as_f32(ref.dst[k], b);
        double e = nerr(a, b, n);
        if (e > *err_out) *err_out = e;
        free(a);
        free(b);
    }
    for (int k = 0; k < CQ_MAX_DST; k++) {
        cq_tensor_free(&ref.dst[k]);
        cq_tensor_free(&run.dst[k]);
    }
    for (int k = 0; k < CQ_MAX_SRC; k++) cq_tensor_free((cq_tensor **)&run.src[k]);
    if (r) return r;
    return *err_out <= c->tol ? 0 : 1;
}
