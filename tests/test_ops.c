/* cherryq: every op's forward (optimized CPU kernels vs the scalar
 * reference), every differentiable op's backward through the autograd vs
 * central finite differences of an independent double-precision forward,
 * autograd accumulation, and bad-input handling. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "cq_ops.h"
#include "fixtures/rope_hf_golden.h"
#include "op_cases.h"

static cq_backend *cpu;

static int setup(void **state)
{
    (void)state;
    return cq_backend_create(&cpu, "cpu", -1);
}
static int teardown(void **state)
{
    (void)state;
    cq_backend_destroy(&cpu);
    return 0;
}

static void test_forward_vs_reference(void **state)
{
    (void)state;
    op_case *cs;
    int n = op_cases_build(cpu, &cs, 1);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        double e;
        int r = op_case_check(cpu, &cs[i], &e);
        if (r) {
            printf("  FAIL %-40s err %.3g (tol %.1g) status %d\n", cs[i].name, e, cs[i].tol, r);
            bad++;
        }
    }
    printf("  %d op cases checked against the scalar reference\n", n);
    op_cases_free(cs, n);
    assert_int_equal(bad, 0);
}

/* ---------------------------------------------------------------- FD */
/* Double-precision forwards, written independently of cpu/ref.c. */
typedef struct {
    int kind;
    int64_t p[8];
    double f[4];
} fwd_spec;

enum { K_MATMUL, K_ADD, K_MUL, K_SCALE, K_RMSNORM, K_ROPE, K_ATTN, K_SWIGLU, K_SILU, K_EMBED, K_XENT, K_LINEAR };

/* in[k]: double arrays; out: double array */
static void dfwd(const fwd_spec *s, double **in, double *out, const int32_t *ids)
{
    const int64_t *p = s->p;
    switch (s->kind) {
    case K_MATMUL: { /* p: M K N ta tb */
        int64_t M = p[0], K = p[1], N = p[2];
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double a = 0;
                for (int64_t k = 0; k < K; k++)
                    a += in[0][p[3] ? k * M + m : m * K + k] * in[1][p[4] ? n * K + k : k * N + n];
                out[m * N + n] = a;
            }
        break;
    }
    case K_ADD:
        for (int64_t i = 0; i < p[0]; i++) out[i] = in[0][i] + in[1][i];
        break;
    case K_MUL:
        for (int64_t i = 0; i < p[0]; i++) out[i] = in[0][i] * in[1][i];
        break;
    case K_SCALE:
        for (int64_t i = 0; i < p[0]; i++) out[i] = s->f[0] * in[0][i];
        break;
    case K_RMSNORM: { /* p: R C */
        for (int64_t r = 0; r < p[0]; r++) {
            double ss = 0;
            for (int64_t j = 0; j < p[1]; j++) ss += in[0][r * p[1] + j] * in[0][r * p[1] + j];
            double inv = 1 / sqrt(ss / p[1] + s->f[0]);
            for (int64_t j = 0; j < p[1]; j++) out[r * p[1] + j] = in[0][r * p[1] + j] * inv * in[1][j];
        }
        break;
    }
    case K_ROPE: { /* p: B T H D pos0 ; f0 theta */
        int64_t B = p[0], T = p[1], H = p[2], D = p[3];
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t j = 0; j < D / 2; j++) {
                        int64_t o = ((b * T + t) * H + h) * D;
                        double a = (p[4] + t) * pow(s->f[0], -2.0 * j / D);
                        double x1 = in[0][o + j], x2 = in[0][o + j + D / 2];
                        out[o + j] = x1 * cos(a) - x2 * sin(a);
                        out[o + j + D / 2] = x2 * cos(a) + x1 * sin(a);
                    }
        break;
    }
    case K_ATTN: { /* p: B T S Hq Hkv D pos0 ; f0 scale */
        int64_t B = p[0], T = p[1], S = p[2], Hq = p[3], Hk = p[4], D = p[5];
        double sc[64];
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < Hq; h++)
                for (int64_t t = 0; t < T; t++) {
                    int64_t ns = p[6] + t + 1, hk = h / (Hq / Hk);
                    double mx = -1e300, sum = 0;
                    for (int64_t u = 0; u < ns; u++) {
                        double a = 0;
                        for (int64_t d = 0; d < D; d++)
                            a += in[0][((b * T + t) * Hq + h) * D + d] * in[1][((b * S + u) * Hk + hk) * D + d];
                        sc[u] = a * s->f[0];
                        mx = fmax(mx, sc[u]);
                    }
                    for (int64_t u = 0; u < ns; u++) sum += exp(sc[u] - mx);
                    for (int64_t d = 0; d < D; d++) {
                        double a = 0;
                        for (int64_t u = 0; u < ns; u++)
                            a += exp(sc[u] - mx) / sum * in[2][((b * S + u) * Hk + hk) * D + d];
                        out[((b * T + t) * Hq + h) * D + d] = a;
                    }
                }
        break;
    }
    case K_SWIGLU:
    case K_SILU:
        for (int64_t i = 0; i < p[0]; i++) {
            double g = in[0][i];
            out[i] = g / (1 + exp(-g)) * (s->kind == K_SWIGLU ? in[1][i] : 1.0);
        }
        break;
    case K_EMBED: /* p: N E */
        for (int64_t i = 0; i < p[0]; i++)
            for (int64_t e = 0; e < p[1]; e++) out[i * p[1] + e] = in[0][ids[i] * p[1] + e];
        break;
    case K_XENT: { /* p: N V ; f0 scale ; output scalar */
        double tot = 0;
        for (int64_t n = 0; n < p[0]; n++) {
            if (ids[n] < 0) continue;
            double mx = -1e300, sum = 0;
            for (int64_t v = 0; v < p[1]; v++) mx = fmax(mx, in[0][n * p[1] + v]);
            for (int64_t v = 0; v < p[1]; v++) sum += exp(in[0][n * p[1] + v] - mx);
            tot += mx + log(sum) - in[0][n * p[1] + ids[n]];
        }
        out[0] = tot * s->f[0];
        break;
    }
    case K_LINEAR: /* p: N in out: x [N,in] w [out,in] */
        for (int64_t n = 0; n < p[0]; n++)
            for (int64_t o = 0; o < p[2]; o++) {
                double a = 0;
                for (int64_t k = 0; k < p[1]; k++) a += in[0][n * p[1] + k] * in[1][o * p[1] + k];
                out[n * p[2] + o] = a;
            }
        break;
    }
}

typedef struct {
    const char *name;
    fwd_spec spec;
    int nin;
    int ndim[3];
    int64_t ne[3][4];
    int64_t nout;
    int ndim_out;
    int64_t ne_out[4];
    int32_t ids[16];
    int nids;
} grad_case;

static cq_tensor *build(cq_ctx *c, const grad_case *g, cq_tensor **x, cq_tensor *idt)
{
    const fwd_spec *s = &g->spec;
    switch (s->kind) {
    case K_MATMUL: return cq_matmul(c, x[0], x[1], s->p[3], s->p[4]);
    case K_ADD: return cq_add(c, x[0], x[1]);
    case K_MUL: return cq_mul(c, x[0], x[1]);
    case K_SCALE: return cq_scale(c, x[0], (float)s->f[0]);
    case K_RMSNORM: return cq_rmsnorm(c, x[0], x[1], (float)s->f[0]);
    case K_ROPE: return cq_rope(c, x[0], s->p[4], (float)s->f[0]);
    case K_ATTN: return cq_attention(c, x[0], x[1], x[2], s->p[6], (float)s->f[0]);
    case K_SWIGLU: return cq_swiglu(c, x[0], x[1]);
    case K_SILU: return cq_swiglu(c, x[0], NULL);
    case K_EMBED: return cq_embed(c, x[0], idt);
    case K_XENT: return cq_cross_entropy(c, x[0], idt, (float)s->f[0], NULL);
    case K_LINEAR: return cq_linear(c, x[0], x[1]);
    }
    return NULL;
}

static void check_grad_case(const grad_case *g)
{
    cq_ctx *c;
    assert_int_equal(cq_ctx_create(&c, cpu), 0);
    cq_tensor *x[3] = { 0 };
    double *xd[3] = { 0 };
    for (int k = 0; k < g->nin; k++) {
        assert_int_equal(cq_tensor_new(&x[k], cpu, CQ_F32, g->ndim[k], g->ne[k]), 0);
        snprintf(x[k]->name, sizeof x[k]->name, "%s.in%d", g->name, k);
        int64_t n = cq_tensor_numel(x[k]);
        float *p = cq_tensor_host(x[k]);
        xd[k] = malloc((size_t)n * sizeof(double));
        for (int64_t i = 0; i < n; i++) {
            p[i] = tr_normal();
            xd[k][i] = p[i];
        }
        assert_int_equal(cq_param_enable_grad(x[k]), 0);
    }
    cq_tensor *idt = NULL;
    if (g->nids) {
        int64_t ni = g->nids;
        assert_int_equal(cq_tensor_new(&idt, cpu, CQ_I32, 1, &ni), 0);
        cq_tensor_set(idt, g->ids, (size_t)ni * 4);
    }
    /* loss = sum(out * R) for a fixed random R, via a matmul [1,n] x [n,1] */
    int64_t nout = g->nout;
    double *Rw = malloc((size_t)nout * sizeof(double));
    cq_tensor *Rt;
    int64_t rne[2] = { nout, 1 };
    assert_int_equal(cq_tensor_new(&Rt, cpu, CQ_F32, 2, rne), 0);
    float *rp = cq_tensor_host(Rt);
    for (int64_t i = 0; i < nout; i++) Rw[i] = rp[i] = tr_normal();

    cq_tensor *y = build(c, g, x, idt);
    assert_non_null(y);
    int64_t one_n[2] = { 1, nout };
    cq_tensor *yf = cq_reshape(c, y, 2, one_n);
    cq_tensor *l = cq_matmul(c, yf, Rt, false, false);
    int64_t one = 1;
    cq_tensor *loss = cq_reshape(c, l, 1, &one);
    assert_non_null(loss);
    assert_int_equal(cq_backward(c, loss), 0);

    double *out = malloc((size_t)nout * sizeof(double));
    double h = 1e-5, worst = 0;
    for (int k = 0; k < g->nin; k++) {
        int64_t n = cq_tensor_numel(x[k]);
        const float *an = cq_tensor_host(x[k]->grad);
        double amax = 0;
        for (int64_t i = 0; i < n; i++) {
            assert_true(isfinite(an[i]));
            amax = fmax(amax, fabs(an[i]));
        }
        for (int64_t i = 0; i < n; i++) {
            double save = xd[k][i], lp = 0, lm = 0;
            xd[k][i] = save + h;
            dfwd(&g->spec, xd, out, g->ids);
            for (int64_t j = 0; j < nout; j++) lp += out[j] * Rw[j];
            xd[k][i] = save - h;
            dfwd(&g->spec, xd, out, g->ids);
            for (int64_t j = 0; j < nout; j++) lm += out[j] * Rw[j];
            xd[k][i] = save;
            double fd = (lp - lm) / (2 * h);
            assert_true(isfinite(fd));
            double e = fabs(fd - an[i]) / fmax(amax, 1e-3);
            if (e > worst) worst = e;
            if (e > 2e-4) printf("  %s input %d elem %lld: fd %.6g autograd %.6g\n", g->name, k, (long long)i, fd, an[i]);
        }
    }
    printf("  grad %-10s max normalized error vs finite differences %.2e\n", g->name, worst);
    assert_true(worst < 2e-4);
    free(out);
    free(Rw);
    for (int k = 0; k < g->nin; k++) {
        cq_tensor_free(&x[k]);
        free(xd[k]);
    }
    cq_tensor_free(&idt);
    cq_tensor_free(&Rt);
    cq_ctx_destroy(&c);
}

static void test_grad_matmul(void **state)
{
    (void)state;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            grad_case g = { .name = "matmul", .spec = { K_MATMUL, { 3, 4, 5, ta, tb } }, .nin = 2 };
            g.ndim[0] = g.ndim[1] = 2;
            g.ne[0][0] = ta ? 4 : 3;
            g.ne[0][1] = ta ? 3 : 4;
            g.ne[1][0] = tb ? 5 : 4;
            g.ne[1][1] = tb ? 4 : 5;
            g.nout = 15;
            check_grad_case(&g);
        }
    grad_case lin = { .name = "linear", .spec = { K_LINEAR, { 6, 5, 3 } }, .nin = 2, .ndim = { 2, 2 },
                      .ne = { { 6, 5 }, { 3, 5 } }, .nout = 18 };
    check_grad_case(&lin);
}

static void test_grad_elementwise(void **state)
{
    (void)state;
    grad_case a = { .name = "add", .spec = { K_ADD, { 12 } }, .nin = 2, .ndim = { 2, 2 },
                    .ne = { { 3, 4 }, { 3, 4 } }, .nout = 12 };
    check_grad_case(&a);
    grad_case m = a;
    m.name = "mul";
    m.spec.kind = K_MUL;
    check_grad_case(&m);
    grad_case s = { .name = "scale", .spec = { K_SCALE, { 12 }, { -1.75 } }, .nin = 1, .ndim = { 2 },
                    .ne = { { 3, 4 } }, .nout = 12 };
    check_grad_case(&s);
    grad_case sw = { .name = "swiglu", .spec = { K_SWIGLU, { 14 } }, .nin = 2, .ndim = { 2, 2 },
                     .ne = { { 2, 7 }, { 2, 7 } }, .nout = 14 };
    check_grad_case(&sw);
    grad_case si = { .name = "silu", .spec = { K_SILU, { 14 } }, .nin = 1, .ndim = { 2 }, .ne = { { 2, 7 } },
                     .nout = 14 };
    check_grad_case(&si);
}

static void test_grad_rmsnorm_rope(void **state)
{
    (void)state;
    grad_case r = { .name = "rmsnorm", .spec = { K_RMSNORM, { 3, 8 }, { 1e-5 } }, .nin = 2, .ndim = { 2, 1 },
                    .ne = { { 3, 8 }, { 8 } }, .nout = 24 };
    check_grad_case(&r);
    grad_case p = { .name = "rope", .spec = { K_ROPE, { 2, 3, 2, 8, 5 }, { 10000 } }, .nin = 1, .ndim = { 4 },
                    .ne = { { 2, 3, 2, 8 } }, .nout = 96 };
    check_grad_case(&p);
}

static void test_grad_attention(void **state)
{
    (void)state;
    /* GQA (4 query heads on 2 kv heads), a KV-cache style offset (T < S) */
    grad_case a = { .name = "attention", .spec = { K_ATTN, { 2, 3, 5, 4, 2, 4, 2 }, { 0.5 } }, .nin = 3,
                    .ndim = { 4, 4, 4 }, .ne = { { 2, 3, 4, 4 }, { 2, 5, 2, 4 }, { 2, 5, 2, 4 } }, .nout = 96 };
    check_grad_case(&a);
    grad_case b = { .name = "attn-mha", .spec = { K_ATTN, { 1, 4, 4, 2, 2, 4, 0 }, { 0.5 } }, .nin = 3,
                    .ndim = { 4, 4, 4 }, .ne = { { 1, 4, 2, 4 }, { 1, 4, 2, 4 }, { 1, 4, 2, 4 } }, .nout = 32 };
    check_grad_case(&b);
}

static void test_grad_embed_xent(void **state)
{
    (void)state;
    grad_case e = { .name = "embed", .spec = { K_EMBED, { 6, 3 } }, .nin = 1, .ndim = { 2 }, .ne = { { 5, 3 } },
                    .nout = 18, .ids = { 0, 4, 4, 2, 0, 4 }, .nids = 6 };
    check_grad_case(&e);
    grad_case x = { .name = "xent", .spec = { K_XENT, { 4, 7 }, { 0.25 } }, .nin = 1, .ndim = { 2 },
                    .ne = { { 4, 7 } }, .nout = 1, .ids = { 3, 6, -1, 0 }, .nids = 4 };
    check_grad_case(&x);
}

/* STE: the gradient of fake-quant is exactly the identity, cherries or not */
static void test_grad_ste_identity(void **state)
{
    (void)state;
    cq_ctx *c;
    assert_int_equal(cq_ctx_create(&c, cpu), 0);
    int64_t ne[2] = { 4, 64 };
    cq_tensor *w, *m, *R;
    assert_int_equal(cq_tensor_new(&w, cpu, CQ_F32, 2, ne), 0);
    assert_int_equal(cq_tensor_new(&m, cpu, CQ_U8, 2, ne), 0);
    assert_int_equal(cq_tensor_new(&R, cpu, CQ_F32, 2, ne), 0);
    float *wp = cq_tensor_host(w), *rp = cq_tensor_host(R);
    uint8_t *mp = cq_tensor_host(m);
    for (int i = 0; i < 256; i++) {
        wp[i] = tr_normal();
        rp[i] = tr_normal();
        mp[i] = i % 17 == 0;
    }
    cq_param_enable_grad(w);
    cq_tensor *q = cq_fakequant(c, w, m, 3, 32, true);
    cq_tensor *y = cq_mul(c, q, R);
    int64_t fl[2] = { 1, 256 }, col[2] = { 256, 1 }, one = 1;
    cq_tensor *ones;
    assert_int_equal(cq_tensor_new(&ones, cpu, CQ_F32, 2, col), 0);
    for (int i = 0; i < 256; i++) ((float *)cq_tensor_host(ones))[i] = 1;
    cq_tensor *loss = cq_reshape(c, cq_matmul(c, cq_reshape(c, y, 2, fl), ones, false, false), 1, &one);
    assert_non_null(loss);
    assert_int_equal(cq_backward(c, loss), 0);
    const float *gp = cq_tensor_host(w->grad);
    for (int i = 0; i < 256; i++) assert_float_equal(gp[i], rp[i], 0);
    /* the forward kept cherries (as FP16, as the packed model stores them) */
    const float *qp = cq_tensor_host(q);
    for (int i = 0; i < 256; i++)
        if (mp[i]) assert_float_equal(qp[i], cq_f16_to_f32(cq_f32_to_f16(wp[i])), 0);
    cq_tensor_free(&w);
    cq_tensor_free(&m);
    cq_tensor_free(&R);
    cq_tensor_free(&ones);
    cq_ctx_destroy(&c);
}

/* parameter gradients accumulate over backward passes (+=) */
static void test_grad_accumulates(void **state)
{
    (void)state;
    cq_ctx *c;
    assert_int_equal(cq_ctx_create(&c, cpu), 0);
    int64_t ne[2] = { 3, 5 }, xne[2] = { 2, 5 };
    cq_tensor *w, *x;
    cq_tensor_new(&w, cpu, CQ_F32, 2, ne);
    cq_tensor_new(&x, cpu, CQ_F32, 2, xne);
    for (int i = 0; i < 15; i++) ((float *)cq_tensor_host(w))[i] = tr_normal();
    for (int i = 0; i < 10; i++) ((float *)cq_tensor_host(x))[i] = tr_normal();
    cq_param_enable_grad(w);
    float g1[15];
    for (int pass = 0; pass < 2; pass++) {
        cq_tensor *y = cq_linear(c, x, w);
        int32_t tg[2] = { 1, 2 };
        int64_t two = 2;
        cq_tensor *t = cq_new(c, CQ_I32, 1, &two);
        cq_tensor_set(t, tg, sizeof tg);
        cq_tensor *loss = cq_cross_entropy(c, y, t, 1.0f, NULL);
        assert_int_equal(cq_backward(c, loss), 0);
        if (pass == 0) memcpy(g1, cq_tensor_host(w->grad), sizeof g1);
        cq_ctx_reset(c);
    }
    const float *g2 = cq_tensor_host(w->grad);
    for (int i = 0; i < 15; i++) assert_float_equal(g2[i], 2 * g1[i], 1e-5);
    assert_int_equal(cq_tensor_zero_grad(w), 0);
    for (int i = 0; i < 15; i++) assert_float_equal(((float *)cq_tensor_host(w->grad))[i], 0, 0);
    cq_tensor_free(&w);
    cq_tensor_free(&x);
    cq_ctx_destroy(&c);
}

/* ---------------------------------------------------------------- bad input */
static char g_log[4096];
static void capture(cq_log_level lvl, const char *msg, void *user)
{
    (void)user;
    size_t o = strlen(g_log);
    if (lvl == CQ_LOG_ERROR && o < sizeof g_log) snprintf(g_log + o, sizeof g_log - o, "%s\n", msg);
}

static void test_bad_input(void **state)
{
    (void)state;
    cq_log_set_callback(capture, NULL);
    cq_ctx *c;
    assert_int_equal(cq_ctx_create(&c, cpu), 0);
    int64_t a_ne[2] = { 3, 4 }, b_ne[2] = { 5, 6 };
    cq_tensor *a = cq_new(c, CQ_F32, 2, a_ne), *b = cq_new(c, CQ_F32, 2, b_ne);
    /* wrong shapes: the op and both shapes are named */
    g_log[0] = 0;
    assert_null(cq_matmul(c, a, b, false, false));
    assert_int_equal(cq_ctx_status(c), CQ_EINVAL);
    assert_non_null(strstr(g_log, "matmul"));
    assert_non_null(strstr(g_log, "f32[3, 4]"));
    assert_non_null(strstr(g_log, "f32[5, 6]"));
    /* sticky: later ops return NULL quietly */
    assert_null(cq_add(c, a, a));
    cq_ctx_reset(c);
    cq_ctx_clear_status(c);
    /* mismatched dtypes */
    cq_tensor *h = cq_new(c, CQ_F16, 2, a_ne);
    cq_tensor *f = cq_new(c, CQ_F32, 2, a_ne);
    g_log[0] = 0;
    assert_null(cq_add(c, f, h));
    assert_int_equal(cq_ctx_status(c), CQ_EINVAL);
    assert_non_null(strstr(g_log, "add"));
    assert_non_null(strstr(g_log, "f16[3, 4]"));
    cq_ctx_reset(c);
    cq_ctx_clear_status(c);
    /* RoPE scaling the op cannot apply (cq_rope_scaling_check) */
    int64_t r_ne[4] = { 1, 2, 2, 8 };
    const cq_rope_scaling bad_rs[2] = { { CQ_ROPE_LINEAR, -1.0f, 0, 0, 0 }, { CQ_ROPE_LLAMA3, 8.0f, 4.0f, 4.0f, 64.0f } };
    for (int i = 0; i < 2; i++) {
        cq_tensor *rx = cq_new(c, CQ_F32, 4, r_ne);   /* the reset below frees it */
        g_log[0] = 0;
        assert_null(cq_rope_scaled(c, rx, 0, 10000.0f, &bad_rs[i]));
        assert_int_equal(cq_ctx_status(c), CQ_EINVAL);
        assert_non_null(strstr(g_log, i ? "low_freq_factor" : "factor"));
        cq_ctx_reset(c);
        cq_ctx_clear_status(c);
    }
    /* null pointers */
    assert_null(cq_add(c, NULL, f));
    assert_int_equal(cq_op_run(NULL, NULL), CQ_EINVAL);
    assert_int_equal(cq_op_validate(NULL), CQ_EINVAL);
    cq_op op = { .type = CQ_OP_ADD };
    g_log[0] = 0;
    assert_int_equal(cq_op_run(cpu, &op), CQ_EINVAL);
    assert_non_null(strstr(g_log, "add"));
    assert_int_equal(cq_tensor_new(NULL, cpu, CQ_F32, 2, a_ne), CQ_EINVAL);
    /* failed allocation: 2^42 floats cannot be had */
    int64_t huge[2] = { (int64_t)1 << 21, (int64_t)1 << 21 };
    cq_tensor *t = NULL;
    g_log[0] = 0;
    assert_int_equal(cq_tensor_new(&t, cpu, CQ_F32, 2, huge), CQ_ENOMEM);
    assert_null(t);
    assert_non_null(strstr(g_log, "cannot allocate"));
    assert_null(cq_new(c, CQ_F32, 2, huge));
    assert_int_equal(cq_ctx_status(c), CQ_ENOMEM);
    cq_ctx_reset(c);
    cq_ctx_clear_status(c);
    /* out-of-range token ids and bad quantizer settings */
    int64_t vne[2] = { 10, 4 }, one = 1;
    cq_tensor *tab = cq_new(c, CQ_F32, 2, vne), *id = cq_new(c, CQ_I32, 1, &one);
    int32_t bad = 10;
    cq_tensor_set(id, &bad, 4);
    g_log[0] = 0;
    assert_null(cq_embed(c, tab, id));
    assert_non_null(strstr(g_log, "out of range"));
    cq_ctx_reset(c);
    cq_ctx_clear_status(c);
    cq_tensor *w = cq_new(c, CQ_F32, 2, a_ne);
    g_log[0] = 0;
    assert_null(cq_fakequant(c, w, NULL, 5, 64, true));
    assert_non_null(strstr(g_log, "bits"));
    cq_ctx_reset(c);
    cq_ctx_clear_status(c);
    /* attention with incompatible head counts */
    int64_t qn[4] = { 1, 2, 3, 4 }, kn[4] = { 1, 2, 2, 4 };
    cq_tensor *q = cq_new(c, CQ_F32, 4, qn), *k = cq_new(c, CQ_F32, 4, kn);
    g_log[0] = 0;
    assert_null(cq_attention(c, q, k, k, 0, 1.0f));
    assert_non_null(strstr(g_log, "multiple of kv heads"));
    cq_ctx_destroy(&c);
    cq_log_set_callback(NULL, NULL);
}

static void test_registry(void **state)
{
    (void)state;
    assert_int_equal(cq_backend_count(), 3);
    cq_backend_info bi;
    assert_int_equal(cq_backend_probe(0, &bi), 0);
    assert_string_equal(bi.name, "cpu");
    assert_true(bi.built);
    assert_int_equal(bi.n_devices, 1);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(cq_backend_probe(i, &bi), 0);
        if (!bi.n_devices) assert_true(strlen(bi.reason) > 0);
    }
    cq_backend *be = NULL;
    assert_int_equal(cq_backend_create(&be, "nonsense", -1), CQ_EINVAL);
    assert_int_equal(cq_backend_create(&be, "auto", -1), 0);
    assert_non_null(be);
    cq_backend_destroy(&be);
    assert_null(be);
}

/* RoPE inverse frequencies (core/cq_rope.h) against transformers' own
 * formulas run in torch (tools/gen_rope_golden.py): plain, linear and
 * llama3 scaling for LLaMA-3.1 and 3.2 shapes. cherryq forms theta^(-2j/D)
 * in double before rounding to f32 (torch: in f32), so up to an ulp there,
 * a few after llama3's smoothing; a wrong band would be off by up to 8-32x. */
static int ulps(float a, float b)
{
    int32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x > y ? x - y : y - x;
}

static void test_rope_inv_freq_hf(void **state)
{
    (void)state;
    static const struct {
        const float *want;
        int64_t D;
        float theta;
        cq_rope_scaling s;
        int max_ulps;
    } cases[] = {
        { hf_default_128, 128, 10000.0f, { CQ_ROPE_PLAIN, 0, 0, 0, 0 }, 1 },
        { hf_linear_64, 64, 10000.0f, { CQ_ROPE_LINEAR, 4.0f, 0, 0, 0 }, 1 },
        { hf_llama3_128, 128, 500000.0f, { CQ_ROPE_LLAMA3, 8.0f, 1.0f, 4.0f, 8192.0f }, 4 },
        { hf_llama3_64, 64, 500000.0f, { CQ_ROPE_LLAMA3, 32.0f, 1.0f, 4.0f, 8192.0f }, 4 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int worst = 0;
        for (int64_t j = 0; j < cases[k].D / 2; j++) {
            const cq_rope_scaling *s = &cases[k].s;
            float got = cq_rope_inv_freq(cases[k].theta, cases[k].D, j, s->type, s->factor, s->low_freq_factor,
                                         s->high_freq_factor, s->original_max);
            int u = ulps(got, cases[k].want[j]);
            if (u > worst) worst = u;
        }
        printf("  rope inv_freq case %zu (D %lld, type %d): worst %d ulp against transformers\n", k,
               (long long)cases[k].D, cases[k].s.type, worst);
        assert_true(worst <= cases[k].max_ulps);
    }
}

int main(void)
{
    tr_seed(42);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_forward_vs_reference),
        cmocka_unit_test(test_grad_matmul),
        cmocka_unit_test(test_grad_elementwise),
        cmocka_unit_test(test_grad_rmsnorm_rope),
        cmocka_unit_test(test_rope_inv_freq_hf),
        cmocka_unit_test(test_grad_attention),
        cmocka_unit_test(test_grad_embed_xent),
        cmocka_unit_test(test_grad_ste_identity),
        cmocka_unit_test(test_grad_accumulates),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
