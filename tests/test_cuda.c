/* cherryq: CUDA backend tests. Every op against the scalar CPU reference
 * (the shared op table of op_cases.c, then CUDA-specific cases: the fused
 * qmatmul kernels for every bit width and group at decode and batch sizes,
 * long attention with a KV-cache offset and large head dims, big vocabularies,
 * far RoPE positions), plus device selection, memory info and out-of-memory
 * handling. Exits 77 (skipped) when no CUDA device is usable. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "backends.h"
#include "cq_ops.h"
#include "cuda/cq_cuda.h"
#include "cuda/cq_cuda_kernels.h"
#include "op_cases.h"
#include "kernels.h"   /* cq_cpu_qmm_w */
#include "qmm.h"

static cq_backend *g_cpu, *g_cuda;

/* ------------------------------------------------------------ helpers */
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

static cq_tensor *RT(cq_dtype dt, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    cq_tensor *t = T(dt, nd, a, b, c, d);
    int64_t n = cq_tensor_numel(t);
    float *tmp = malloc((size_t)n * sizeof(float) + 4);
    for (int64_t i = 0; i < n; i++) tmp[i] = tr_normal();
    cq_tensor_set_f32(t, tmp);
    free(tmp);
    return t;
}

static cq_tensor *ids(int64_t n, int64_t hi)
{
    cq_tensor *t = T(CQ_I32, 1, n, 0, 0, 0);
    int32_t *p = cq_tensor_host(t);
    for (int64_t i = 0; i < n; i++) p[i] = (int32_t)(tr_uniform(0, (float)hi));
    for (int64_t i = 0; i < n; i++)
        if (p[i] >= hi) p[i] = (int32_t)hi - 1;
    return t;
}

static void free_case(op_case *c)
{
    for (int k = 0; k < CQ_MAX_SRC; k++) cq_tensor_free((cq_tensor **)&c->op.src[k]);
    for (int k = 0; k < CQ_MAX_DST; k++) cq_tensor_free(&c->op.dst[k]);
}

/* Runs the case on CUDA, compares with the reference, frees it. */
static int check(op_case *c)
{
    double e = 0;
    int r = op_case_check(g_cuda, c, &e);
    if (r == CQ_ENOTSUP)
        printf("  [ DECLINED] %s\n", c->name);
    else if (r)
        printf("  [  FAILED ] %-52s err %.3g (tol %.1g) status %d\n", c->name, e, c->tol, r);
    else
        printf("  [      OK ] %-52s max normalized error %.2e\n", c->name, e);
    free_case(c);
    return r;
}

/* Random packed CherryQ weight: codes u8 [out, row_bytes], FP16 scales,
 * CSR cherries (k per row, distinct sorted columns). */
static void qweight(cq_op *op, int64_t out, int64_t in, int bits, int group, int k)
{
    int64_t rb = bits == 3 ? (in + 7) / 8 * 3 : (in * bits + 7) / 8;
    int64_t g = group ? group : in, ng = (in + g - 1) / g;
    cq_tensor *codes = T(CQ_U8, 2, out, rb, 0, 0);
    uint8_t *cp = cq_tensor_host(codes);
    for (int64_t i = 0; i < out * rb; i++) cp[i] = (uint8_t)((unsigned)tr_uniform(0, 256) & 255u);
    cq_tensor *sc = T(CQ_U16, 2, out, ng, 0, 0);
    uint16_t *sp = cq_tensor_host(sc);
    for (int64_t i = 0; i < out * ng; i++) sp[i] = cq_f32_to_f16(tr_uniform(0.005f, 0.05f));
    op->src[1] = codes;
    op->src[2] = sc;
    if (!k) return;
    cq_tensor *rp = T(CQ_I32, 1, out + 1, 0, 0, 0);
    int32_t *r = cq_tensor_host(rp);
    cq_tensor *cols = T(CQ_U16, 1, out * k, 0, 0, 0);
    cq_tensor *dl = T(CQ_F32, 1, out * k, 0, 0, 0);
    uint16_t *cc = cq_tensor_host(cols);
    float *dd = cq_tensor_host(dl);
    int64_t step = in / k;
    for (int64_t o = 0; o <= out; o++) r[o] = (int32_t)(o * k);
    for (int64_t o = 0; o < out; o++)
        for (int64_t j = 0; j < k; j++) {
            int64_t col = j * step + (int64_t)tr_uniform(0, (float)step);
            cc[o * k + j] = (uint16_t)(col < in ? col : in - 1);
            dd[o * k + j] = tr_normal() * 0.3f;
        }
    op->src[3] = rp;
    op->src[4] = cols;
    op->src[5] = dl;
}

/* The oracle of the int8-activation GEMV (variant 4): the CPU's int8
 * reference (x quantized per 128 columns the same way), per token. */
static int q8_reference(cq_op *op)
{
    const cq_qmm_w w = cq_cpu_qmm_w(op);
    const int64_t in = w.in, out = w.out, N = cq_tensor_numel(op->src[0]) / in;
    const float *x = cq_tensor_host(op->src[0]);
    float *y = cq_tensor_host(op->dst[0]);
    for (int64_t n = 0; n < N; n++) {
        int r = cq_qmm_gemv_q8_exact_cherries_ref(&w, x + n * in, y + n * out);
        if (r) return r;
    }
    return 0;
}

/* Whether the CUDA backend runs this QMATMUL through the int8 GEMV: the
 * variant picked for the shape is an int8 one (cqk_qgemv_pick), N takes the
 * GEMV (backends/cuda/cuda_ops.c: N <= 8) and the shape the fast kernel
 * (cuda/qmatmul.cu fast_ok: in % 128 == 0, groups of multiples of 32). */
static int runs_q8(int64_t N, int64_t out, int64_t in, int group)
{
    return cqk_qgemv_variant_q8(cqk_qgemv_pick(out, in)) && N <= 8 && in % 128 == 0 && group % 32 == 0;
}

static int qmatmul_case(int64_t N, int64_t out, int64_t in, int bits, int group, int k)
{
    op_case c = { 0 };
    snprintf(c.name, sizeof c.name, "qmatmul N%lld %lldx%lld b%d g%d k%d%s", (long long)N, (long long)out,
             (long long)in, bits, group, k, runs_q8(N, out, in, group) ? " int8" : "");
    c.tol = 1e-5;
    if (runs_q8(N, out, in, group)) c.ref = q8_reference;
    c.op.type = CQ_OP_QMATMUL;
    c.op.src[0] = R(2, N, in, 0, 0, 1);
    qweight(&c.op, out, in, bits, group, k);
    c.op.dst[0] = T(CQ_F32, 2, N, out, 0, 0);
    c.op.i[0] = bits;
    c.op.i[1] = group;
    c.op.i[2] = in;
    return check(&c);
}

static int attn_case(int bwd, int64_t B, int64_t Tq, int64_t S, int64_t Hq, int64_t Hkv, int64_t D)
{
    op_case c = { 0 };
    snprintf(c.name, sizeof c.name, "attn%s B%lld T%lld S%lld Hq%lld Hkv%lld D%lld", bwd ? "_bwd" : "",
             (long long)B, (long long)Tq, (long long)S, (long long)Hq, (long long)Hkv, (long long)D);
    c.tol = 1e-5;
    c.op.type = bwd ? CQ_OP_ATTN_BWD : CQ_OP_ATTN;
    cq_tensor *q = R(4, B, Tq, Hq, D, 1), *k = R(4, B, S, Hkv, D, 1), *v = R(4, B, S, Hkv, D, 1);
    c.op.src[0] = q;
    c.op.src[1] = k;
    c.op.src[2] = v;
    c.op.f[0] = 1.0f / sqrtf((float)D);
    c.op.i[0] = S - Tq;
    if (!bwd) {
        c.op.dst[0] = T(CQ_F32, 4, B, Tq, Hq, D);
        c.op.dst[1] = T(CQ_F32, 3, B, Hq, Tq, 0);
        return check(&c);
    }
    cq_op f = { .type = CQ_OP_ATTN };
    f.src[0] = q;
    f.src[1] = k;
    f.src[2] = v;
    f.f[0] = c.op.f[0];
    f.i[0] = c.op.i[0];
    f.dst[0] = T(CQ_F32, 4, B, Tq, Hq, D);
    f.dst[1] = T(CQ_F32, 3, B, Hq, Tq, 0);
    assert_int_equal(cq_op_run(g_cpu, &f), 0);
    c.op.src[3] = f.dst[0];
    c.op.src[4] = f.dst[1];
    c.op.src[5] = R(4, B, Tq, Hq, D, 1);
    c.op.dst[0] = T(CQ_F32, 4, B, Tq, Hq, D);
    c.op.dst[1] = T(CQ_F32, 4, B, S, Hkv, D);
    c.op.dst[2] = T(CQ_F32, 4, B, S, Hkv, D);
    return check(&c);
}

/* ------------------------------------------------------------ tests */

/* The shared op table (tests/op_cases.c): every op type, every backend. */
static void test_op_table(void **state)
{
    (void)state;
    op_case *cs;
    int n = op_cases_build(g_cpu, &cs, 11);
    int failed = 0;
    /* the table holds QMATMUL to the exact product: the exact GEMV variant 1
     * whatever CQ_QGEMV_VARIANT or the automatic choice would run (the
     * int8 ones have their cases below) */
    const int env_variant = cqk_qgemv_variant();
    cqk_qgemv_set_variant(1);
    for (int i = 0; i < n; i++) {
        double e = 0;
        int r = op_case_check(g_cuda, &cs[i], &e);
        if (r) {
            /* the CUDA backend implements every op: declining is a failure too */
            printf("  [  FAILED ] %-52s err %.3g (tol %.1g) status %d\n", cs[i].name, e, cs[i].tol, r);
            failed++;
        } else {
            printf("  [      OK ] %-52s max normalized error %.2e\n", cs[i].name, e);
        }
    }
    op_cases_free(cs, n);
    cqk_qgemv_set_variant(env_variant);
    assert_int_equal(failed, 0);
}

/* Every bit width and group through the fast GEMV (in % 128 == 0), the
 * generic GEMV (other in), and the dequantize + SGEMM batch path (N > 8). */
static void test_qmatmul_sweep(void **state)
{
    (void)state;
    tr_seed(21);
    static const int bits[] = { 2, 3, 4, 8 }, groups[] = { 0, 32, 64, 128 };
    int failed = 0;
    const int env_variant = cqk_qgemv_variant();
    for (int v = 0; v < CQK_QGEMV_VARIANTS; v++) {   /* every fast-GEMV variant of cuda/qmatmul.cu */
        cqk_qgemv_set_variant(v);
        for (int b = 0; b < 4; b++)
            for (int g = 0; g < 4; g++) {
                failed += qmatmul_case(1, 70, 512, bits[b], groups[g], 2) != 0;    /* fast, N = 1 */
                failed += qmatmul_case(3, 33, 384, bits[b], groups[g], 0) != 0;    /* fast, no cherries */
                if (v) continue;   /* the rest do not take the fast kernel */
                failed += qmatmul_case(2, 19, 200, bits[b], groups[g], 3) != 0;    /* generic, partial group */
                failed += qmatmul_case(24, 41, 256, bits[b], groups[g], 2) != 0;   /* batch path */
            }
    }
    cqk_qgemv_set_variant(env_variant);
    assert_int_equal(failed, 0);
}

/* The automatic choice (the default): exact variant 1 in exact mode and on
 * rows shorter than the int8 rule's 512 columns, else int8 (6 from 8192
 * rows, 4 below), each case against the oracle of what it picked. */
static void test_qgemv_auto(void **state)
{
    (void)state;
    tr_seed(23);
    const int env_variant = cqk_qgemv_variant(), env_exact = cq_qmm_get_exact();
    cqk_qgemv_set_variant(CQK_QGEMV_AUTO);
    assert_int_equal(cqk_qgemv_variant(), CQK_QGEMV_AUTO);
    int failed = 0;
    for (int exact = 1; exact >= 0; exact--) {
        cq_qmm_set_exact(exact);
        assert_int_equal(cqk_qgemv_pick(14336, 4096), exact ? 1 : 6);
        assert_int_equal(cqk_qgemv_pick(8192, 4096), exact ? 1 : 6);
        assert_int_equal(cqk_qgemv_pick(8191, 11008), exact ? 1 : 4);
        assert_int_equal(cqk_qgemv_pick(4096, 384), 1);
        failed += qmatmul_case(1, 8192, 512, 3, 128, 2) != 0;
        failed += qmatmul_case(2, 96, 4096, 4, 128, 16) != 0;
        failed += qmatmul_case(1, 40, 384, 4, 32, 2) != 0;
    }
    cq_qmm_set_exact(env_exact);
    cqk_qgemv_set_variant(env_variant);
    assert_int_equal(failed, 0);
}

/* LLaMA-sized rows: 4096 (one chunk per lane), 11008 (uneven lanes, 44 KiB
 * of x in shared memory) and 14336 (> 48 KiB: opt-in shared memory). */
static void test_qmatmul_llama_shapes(void **state)
{
    (void)state;
    tr_seed(22);
    int failed = 0;
    const int env_variant = cqk_qgemv_variant();
    for (int v = 0; v < CQK_QGEMV_VARIANTS; v++) {
        cqk_qgemv_set_variant(v);
        failed += qmatmul_case(1, 512, 4096, 3, 128, 16) != 0;
        failed += qmatmul_case(1, 256, 4096, 4, 128, 16) != 0;
        failed += qmatmul_case(1, 128, 11008, 3, 128, 43) != 0;
        failed += qmatmul_case(1, 128, 11008, 4, 64, 43) != 0;
        failed += qmatmul_case(1, 64, 14336, 3, 128, 56) != 0;
        failed += qmatmul_case(4, 300, 4096, 2, 64, 16) != 0;
        failed += qmatmul_case(1, 64, 4096, 8, 128, 16) != 0;
    }
    cqk_qgemv_set_variant(env_variant);
    failed += qmatmul_case(64, 256, 4096, 3, 128, 16) != 0;   /* prefill through the GEMM */
    assert_int_equal(failed, 0);
}

/* Every case under both kernel versions of cuda/attention.cu (1: a query
 * row per warp, 2: register-tiled, 64-row tiles), then the version the
 * environment picked is restored. */
static void test_attention_shapes(void **state)
{
    (void)state;
    int failed = 0;
    const int env_version = cqk_attn_version();
    for (int ver = 1; ver <= 2; ver++) {
        cqk_attn_set_version(ver);
        printf("  attention kernels: version %d\n", ver);
        tr_seed(23);
        for (int bwd = 0; bwd < 2; bwd++) {
            failed += attn_case(bwd, 1, 70, 70, 8, 2, 128) != 0;   /* several key tiles, GQA 4:1 */
            failed += attn_case(bwd, 2, 5, 100, 4, 4, 64) != 0;    /* KV cache: pos0 = 95 */
            failed += attn_case(bwd, 1, 1, 200, 32, 8, 128) != 0;  /* decoding */
            failed += attn_case(bwd, 1, 40, 40, 2, 1, 80) != 0;    /* D not a power of two */
            failed += attn_case(bwd, 1, 33, 45, 2, 2, 256) != 0;   /* > 48 KiB of shared memory */
            failed += attn_case(bwd, 1, 9, 9, 3, 1, 17) != 0;      /* odd D */
            failed += attn_case(bwd, 1, 300, 300, 4, 2, 128) != 0; /* 5 query / key tiles of 64 */
            failed += attn_case(bwd, 1, 40, 300, 4, 2, 128) != 0;  /* pos0 = 260, partial tiles */
            failed += attn_case(bwd, 2, 70, 70, 2, 1, 36) != 0;    /* D % 8 = 4, two tiles */
            failed += attn_case(bwd, 1, 130, 150, 2, 1, 256) != 0; /* D 256, pos0 = 20, 3 tiles */
        }
    }
    cqk_attn_set_version(env_version);
    assert_int_equal(failed, 0);
}

static void test_large_rows(void **state)
{
    (void)state;
    tr_seed(24);
    int failed = 0;
    op_case c;

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "xent N6 V32000");
    c.op.type = CQ_OP_XENT;
    c.tol = 1e-5;
    c.op.src[0] = R(2, 6, 32000, 0, 0, 4);
    c.op.src[1] = ids(6, 32000);
    ((int32_t *)cq_tensor_host(c.op.src[1]))[2] = -1;
    c.op.dst[0] = T(CQ_F32, 1, 1, 0, 0, 0);
    c.op.dst[1] = T(CQ_F32, 1, 6, 0, 0, 0);
    c.op.f[0] = 0.2f;
    failed += check(&c) != 0;

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "rmsnorm 8x4096");
    c.op.type = CQ_OP_RMSNORM;
    c.tol = 1e-5;
    c.op.src[0] = R(2, 8, 4096, 0, 0, 3);
    c.op.src[1] = R(1, 4096, 0, 0, 0, 1);
    c.op.dst[0] = T(CQ_F32, 2, 8, 4096, 0, 0);
    c.op.f[0] = 1e-6f;
    failed += check(&c) != 0;

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "rmsnorm_bwd 300x512");
    c.op.type = CQ_OP_RMSNORM_BWD;
    c.tol = 1e-5;
    c.op.src[0] = R(2, 300, 512, 0, 0, 2);
    c.op.src[1] = R(1, 512, 0, 0, 0, 1);
    c.op.src[2] = R(2, 300, 512, 0, 0, 1);
    c.op.dst[0] = T(CQ_F32, 2, 300, 512, 0, 0);
    c.op.dst[1] = T(CQ_F32, 1, 512, 0, 0, 0);
    c.op.f[0] = 1e-5f;
    failed += check(&c) != 0;

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "rope pos0 4000 D128");
    c.op.type = CQ_OP_ROPE;
    c.tol = 1e-5;
    c.op.src[0] = R(4, 1, 8, 4, 128, 1);
    c.op.dst[0] = T(CQ_F32, 4, 1, 8, 4, 128);
    c.op.f[0] = 500000.0f;
    c.op.i[0] = 4000;
    failed += check(&c) != 0;

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "sumsq 5M");
    c.op.type = CQ_OP_SUMSQ;
    c.tol = 1e-6;
    c.op.src[0] = R(1, 5000011, 0, 0, 0, 1);
    c.op.dst[0] = T(CQ_F32, 1, 1, 0, 0, 0);
    failed += check(&c) != 0;

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "fakequant b3 g128 64x4096 mask fp16s");
    c.op.type = CQ_OP_FAKEQUANT;
    c.tol = 0;   /* bit-exact, as the CPU quantizer */
    c.op.src[0] = R(2, 64, 4096, 0, 0, 0.02f);
    {
        cq_tensor *m = T(CQ_U8, 2, 64, 4096, 0, 0);
        uint8_t *mp = cq_tensor_host(m);
        for (int64_t j = 0; j < 64 * 4096; j++) mp[j] = tr_uniform(0, 1) < 1.0f / 256;
        c.op.src[1] = m;
    }
    c.op.dst[0] = T(CQ_F32, 2, 64, 4096, 0, 0);
    c.op.i[0] = 3;
    c.op.i[1] = 128;
    c.op.i[2] = 1;
    failed += check(&c) != 0;

    static const cq_dtype mdt[][2] = { { CQ_F32, CQ_F32 }, { CQ_BF16, CQ_BF16 }, { CQ_F32, CQ_F16 } };
    for (int i = 0; i < 3; i++) {
        memset(&c, 0, sizeof c);
        snprintf(c.name, sizeof c.name, "matmul 3x96x160x72 %s x %s tb1", cq_dtype_name(mdt[i][0]),
                 cq_dtype_name(mdt[i][1]));
        c.op.type = CQ_OP_MATMUL;
        c.tol = 1e-5;
        c.op.src[0] = RT(mdt[i][0], 3, 3, 96, 160, 0);
        c.op.src[1] = RT(mdt[i][1], 2, 72, 160, 0, 0);
        c.op.dst[0] = T(CQ_F32, 3, 3, 96, 72, 0);
        c.op.f[0] = 1.0f;
        c.op.i[1] = 1;
        failed += check(&c) != 0;
    }

    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "embed_bwd N4096 V1000 E64");
    c.op.type = CQ_OP_EMBED_BWD;
    c.tol = 1e-6;
    c.op.src[0] = ids(4096, 1000);
    c.op.src[1] = R(2, 4096, 64, 0, 0, 1);
    c.op.dst[0] = T(CQ_F32, 2, 1000, 64, 0, 0);
    failed += check(&c) != 0;
    assert_int_equal(failed, 0);
}

/* 1 PB: CQ_ENOMEM with a message, no crash, and the device stays usable. */
static void test_oom(void **state)
{
    (void)state;
    cq_buffer *b = NULL;
    int r = cq_buffer_alloc(g_cuda, (size_t)1 << 50, &b);
    assert_int_equal(r, CQ_ENOMEM);
    assert_null(b);
    int64_t ne[1] = { 1 << 20 };
    cq_tensor *t = NULL;
    assert_int_equal(cq_tensor_new(&t, g_cuda, CQ_F32, 1, ne), 0);
    cq_op f = { .type = CQ_OP_FILL };
    f.dst[0] = t;
    f.f[0] = 2.5f;
    assert_int_equal(cq_op_run(g_cuda, &f), 0);
    float *h = malloc((size_t)ne[0] * sizeof(float));
    assert_int_equal(cq_tensor_get_f32(t, h), 0);
    assert_true(h[0] == 2.5f && h[ne[0] - 1] == 2.5f);
    free(h);
    cq_tensor_free(&t);
}

/* An out-of-range token id fails EMBED and EMBED_BWD with CQ_EINVAL (the
 * kernel checks ids; nothing is read or written out of range) and the
 * device stays usable. */
static void test_bad_ids(void **state)
{
    (void)state;
    int64_t tne[2] = { 10, 8 }, ine[1] = { 5 }, yne[2] = { 5, 8 };
    cq_tensor *table = NULL, *id = NULL, *y = NULL, *dy = NULL, *dt = NULL;
    assert_int_equal(cq_tensor_new(&table, g_cuda, CQ_F32, 2, tne), 0);
    assert_int_equal(cq_tensor_new(&id, g_cuda, CQ_I32, 1, ine), 0);
    assert_int_equal(cq_tensor_new(&y, g_cuda, CQ_F32, 2, yne), 0);
    assert_int_equal(cq_tensor_new(&dy, g_cuda, CQ_F32, 2, yne), 0);
    assert_int_equal(cq_tensor_new(&dt, g_cuda, CQ_F32, 2, tne), 0);
    const int32_t bad[5] = { 1, 2, 10, 3, -4 }, good[5] = { 0, 9, 9, 4, 1 };
    assert_int_equal(cq_tensor_set(id, bad, sizeof bad), 0);
    cq_op e = { .type = CQ_OP_EMBED };
    e.src[0] = table;
    e.src[1] = id;
    e.dst[0] = y;
    assert_int_equal(cq_op_run(g_cuda, &e), CQ_EINVAL);
    cq_op b = { .type = CQ_OP_EMBED_BWD };
    b.src[0] = id;
    b.src[1] = dy;
    b.dst[0] = dt;
    assert_int_equal(cq_op_run(g_cuda, &b), CQ_EINVAL);
    assert_int_equal(cq_tensor_set(id, good, sizeof good), 0);
    assert_int_equal(cq_op_run(g_cuda, &e), 0);
    assert_int_equal(cq_op_run(g_cuda, &b), 0);
    assert_int_equal(cq_backend_sync(g_cuda), 0);
    cq_tensor_free(&table);
    cq_tensor_free(&id);
    cq_tensor_free(&y);
    cq_tensor_free(&dy);
    cq_tensor_free(&dt);
}

static void test_devices(void **state)
{
    (void)state;
    cq_device_info devs[8];
    int n = cq_backend_devices("cuda", devs, 8);
    assert_true(n >= 1);
    for (int i = 0; i < n; i++) printf("  cuda device %d: %s, %s\n", i, devs[i].name, devs[i].features);
    size_t fr = 0, tot = 0;
    assert_int_equal(cq_cuda_mem_info(&fr, &tot), 0);
    assert_true(tot > 0 && fr <= tot);
    printf("  memory: %.2f GiB free of %.2f GiB\n", fr / 1073741824.0, tot / 1073741824.0);

    /* selection by name substring (case-insensitive) and by index */
    char sub[16];
    snprintf(sub, sizeof sub, "%.6s", devs[0].name + (strlen(devs[0].name) > 8 ? 7 : 0));
    for (char *p = sub; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    setenv("CQ_CUDA_DEVICE", sub, 1);
    cq_backend *be = NULL;
    assert_int_equal(cq_backend_create(&be, "cuda", -1), 0);
    cq_backend_destroy(&be);
    setenv("CQ_CUDA_DEVICE", "no-such-gpu-name", 1);
    assert_int_equal(cq_backend_create(&be, "cuda", -1), CQ_ENODEV);
    assert_null(be);
    unsetenv("CQ_CUDA_DEVICE");
    assert_int_equal(cq_backend_create(&be, "cuda", n), CQ_ENODEV);
    assert_int_equal(cq_backend_create(&be, "cuda", 0), 0);
    cq_backend_destroy(&be);
}

int main(void)
{
    cq_backend_info bi;
    if (cq_cuda_probe(&bi) != 0 || bi.n_devices == 0) {
        printf("cuda: skipped: %s\n", bi.reason);
        return 77;
    }
    if (cq_backend_create(&g_cpu, "cpu", -1)) return 1;
    if (cq_backend_create(&g_cuda, "cuda", -1)) {
        cq_backend_destroy(&g_cpu);
        return 1;
    }
    printf("cuda: %s\n", g_cuda->device);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_op_table),
        cmocka_unit_test(test_qmatmul_sweep),
        cmocka_unit_test(test_qmatmul_llama_shapes),
        cmocka_unit_test(test_qgemv_auto),
        cmocka_unit_test(test_attention_shapes),
        cmocka_unit_test(test_large_rows),
        cmocka_unit_test(test_oom),
        cmocka_unit_test(test_bad_ids),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    cq_backend_destroy(&g_cuda);
    cq_backend_destroy(&g_cpu);
    return r;
}
