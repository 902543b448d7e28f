/* cherryq: Vulkan backend tests (run for real on lavapipe in CI).
 *
 * Device selection and bad input, upload/download round trips (odd sizes and
 * offsets, direct and staging paths), device copies, batching with
 * dependent and independent ops, binding windows past maxStorageBufferRange,
 * out-of-memory, every pipeline, ops vs the CPU backend at shapes that cross
 * the shaders' block sizes, fake quantization bit for bit against
 * core/quant.h, and the packed matmul for every bit width and group against a
 * host reference. Exits 77 (skipped) when no Vulkan device is available. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "backends.h"
#include "cq_ops.h"
#include "quant.h"
#include "vulkan/vk_internal.h"

static cq_backend *g_vk, *g_cpu;

/* ------------------------------------------------------------ helpers */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static float rndf(float lo, float hi) { return lo + (hi - lo) * (float)((rnd64() >> 40) * (1.0 / 16777216.0)); }

static cq_tensor *mk(cq_backend *be, cq_dtype dt, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t ne[4] = { a, b, c, d };
    cq_tensor *t = NULL;
    assert_int_equal(cq_tensor_new(&t, be, dt, nd, ne), 0);
    return t;
}

/* random f32 tensor on the CPU */
static cq_tensor *rnd_cpu(int nd, int64_t a, int64_t b, int64_t c, int64_t d, float lo, float hi)
{
    cq_tensor *t = mk(g_cpu, CQ_F32, nd, a, b, c, d);
    float *p = cq_tensor_host(t);
    for (int64_t i = 0; i < cq_tensor_numel(t); i++) p[i] = rndf(lo, hi);
    return t;
}

/* a Vulkan tensor with the contents of CPU tensor t */
static cq_tensor *mirror(const cq_tensor *t)
{
    if (!t) return NULL;
    cq_tensor *v = mk(g_vk, t->dtype, t->ndim, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    assert_int_equal(cq_tensor_set(v, cq_tensor_host(t), cq_tensor_nbytes(t)), 0);
    return v;
}

static double nerr(const float *a, const float *ref, int64_t n)
{
    double mx = 0, md = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) && !(isnan(a[i]) && isnan(ref[i]))) return INFINITY;
        double d = fabs((double)a[i] - (double)ref[i]);
        md = d > md ? d : md;
        double r = fabs((double)ref[i]);
        mx = r > mx ? r : mx;
    }
    return md / (mx > 1e-30 ? mx : 1e-30);
}

static double g_worst[CQ_OP_COUNT];

/* Runs op (tensors on the CPU backend) on the CPU and on Vulkan (mirrors of
 * every tensor, dsts included for in-place ops) and returns the max
 * normalized error over the dsts. */
static double run_both(const char *what, cq_op *op)
{
    cq_op v = *op;
    for (int i = 0; i < CQ_MAX_SRC; i++) v.src[i] = mirror(op->src[i]);
    for (int i = 0; i < CQ_MAX_DST; i++) v.dst[i] = mirror(op->dst[i]);
    assert_int_equal(cq_op_run(g_cpu, op), 0);
    int r = cq_op_run(g_vk, &v);
    if (r) fail_msg("%s: vulkan returned %d (%s)", what, r, cq_strerror(r));
    assert_int_equal(cq_backend_sync(g_vk), 0);
    double worst = 0;
    for (int i = 0; i < CQ_MAX_DST; i++) {
        if (!op->dst[i]) continue;
        int64_t n = cq_tensor_numel(op->dst[i]);
        float *a = malloc((size_t)n * 4 + 4);
        assert_non_null(a);
        assert_int_equal(cq_tensor_get_f32(v.dst[i], a), 0);
        double e = nerr(a, cq_tensor_host(op->dst[i]), n);
        worst = e > worst ? e : worst;
        free(a);
    }
    for (int i = 0; i < CQ_MAX_SRC; i++) cq_tensor_free((cq_tensor **)&v.src[i]);
    for (int i = 0; i < CQ_MAX_DST; i++) cq_tensor_free(&v.dst[i]);
    if (worst > g_worst[op->type]) g_worst[op->type] = worst;
    printf("    %-44s max normalized error %.2e\n", what, worst);
    return worst;
}

static void free_op(cq_op *op)
{
    for (int i = 0; i < CQ_MAX_SRC; i++) cq_tensor_free((cq_tensor **)&op->src[i]);
    for (int i = 0; i < CQ_MAX_DST; i++) cq_tensor_free(&op->dst[i]);
}

static void check_op(const char *what, cq_op *op, double tol)
{
    double e = run_both(what, op);
    if (!(e <= tol)) fail_msg("%s: error %.3g above %.1g", what, e, tol);
    free_op(op);
}

static cq_vk *VKX(void) { return (cq_vk *)g_vk->ctx; }

/* ------------------------------------------------------------ device */

static void test_probe_and_select(void **state)
{
    (void)state;
    cq_backend_info bi;
    assert_int_equal(cq_backend_probe(1, &bi), 0);
    assert_true(bi.built);
    assert_true(bi.n_devices >= 1);
    cq_device_info devs[8];
    int n = cq_backend_devices("vulkan", devs, 8);
    assert_int_equal(n, bi.n_devices > 8 ? 8 : bi.n_devices);
    for (int i = 0; i < n; i++) {
        assert_true(devs[i].name[0] != 0);
        assert_non_null(strstr(devs[i].features, "subgroup"));
        printf("    device %d: %s: %s\n", i, devs[i].name, devs[i].features);
    }
    cq_backend *be = NULL;
    /* out-of-range index: an error, not a crash */
    assert_int_equal(cq_backend_create(&be, "vulkan", n + 3), CQ_ENODEV);
    assert_null(be);
    /* by name substring (case-insensitive) through the environment */
    char sub[8];
    snprintf(sub, sizeof sub, "%.4s", devs[0].name);
    for (char *p = sub; *p; p++) *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    setenv("CQ_VULKAN_DEVICE", sub, 1);
    assert_int_equal(cq_backend_create(&be, "vulkan", -1), 0);
    assert_non_null(strstr(be->device, devs[0].name));
    cq_backend_destroy(&be);
    setenv("CQ_VULKAN_DEVICE", "no-such-gpu-xyz", 1);
    assert_int_equal(cq_backend_create(&be, "vulkan", -1), CQ_ENODEV);
    setenv("CQ_VULKAN_DEVICE", "0", 1);
    assert_int_equal(cq_backend_create(&be, "vulkan", -1), 0);
    assert_int_equal(be->device_index, 0);
    cq_backend_destroy(&be);
    unsetenv("CQ_VULKAN_DEVICE");
    const cq_vk_caps *c = &VKX()->caps;
    assert_true(c->subgroup_size >= 1);
    assert_true(c->max_sb_range > 0);
    assert_true(c->max_wg_inv >= 64);
}

static void test_all_pipelines(void **state)
{
    (void)state;
    cq_vk *vk = VKX();
    int built = 0;
    for (int i = 0; i < CQ_VK_SH_COUNT; i++) {
        const cq_vk_shader *sh = cq_vk_shader_get((cq_vk_shader_id)i);
        assert_non_null(sh);
        assert_true(sh->size > 20 && sh->code[0] == 0x07230203u);
        if (sh->needs_subgroup_arith && !vk->caps.subgroup_arith) continue;
        VkPipeline p;
        assert_int_equal(cq_vk_pipeline(vk, (cq_vk_shader_id)i, &p), 0);
        built++;
    }
    printf("    %d of %d pipelines built\n", built, (int)CQ_VK_SH_COUNT);
}

/* ------------------------------------------------------------ memory */

static void roundtrip_on(cq_backend *be)
{
    const size_t sz = 4099;
    uint8_t *src = malloc(sz), *dst = malloc(sz), *want = calloc(1, sz);
    assert_true(src && dst && want);
    void *h = NULL;
    assert_int_equal(be->ops->alloc(be, sz, &h), 0);
    assert_int_equal(be->ops->upload(be, h, 0, want, sz), 0);
    static const size_t offs[] = { 0, 1, 2, 3, 5, 4090 };
    static const size_t lens[] = { 1, 2, 3, 5, 7, 9, 1023 };
    for (size_t i = 0; i < sizeof offs / sizeof *offs; i++)
        for (size_t j = 0; j < sizeof lens / sizeof *lens; j++) {
            size_t o = offs[i], n = lens[j];
            if (o + n > sz) continue;
            for (size_t k = 0; k < n; k++) src[k] = (uint8_t)rnd64();
            assert_int_equal(be->ops->upload(be, h, o, src, n), 0);
            memcpy(want + o, src, n);
            memset(dst, 0xee, sz);
            assert_int_equal(be->ops->download(be, h, o, dst, n), 0);
            assert_memory_equal(dst, src, n);
        }
    assert_int_equal(be->ops->download(be, h, 0, dst, sz), 0);
    assert_memory_equal(dst, want, sz);
    /* device copies at odd offsets, also overlapping the end */
    void *h2 = NULL;
    assert_int_equal(be->ops->alloc(be, 1001, &h2), 0);
    assert_int_equal(be->ops->copy(be, h2, 3, h, 7, 997), 0);
    assert_int_equal(be->ops->download(be, h2, 3, dst, 997), 0);
    assert_memory_equal(dst, want + 7, 997);
    /* out-of-range access is refused */
    assert_int_equal(be->ops->upload(be, h, sz - 2, src, 3), CQ_EINVAL);
    assert_int_equal(be->ops->download(be, h2, 1000, dst, 2), CQ_EINVAL);
    be->ops->free(be, h);
    be->ops->free(be, h2);
    free(src);
    free(dst);
    free(want);
}

static void test_roundtrip(void **state)
{
    (void)state;
    roundtrip_on(g_vk);
}

static void test_staging_path(void **state)
{
    (void)state;
    setenv("CQ_VULKAN_STAGING", "1", 1);
    cq_backend *be = NULL;
    int r = cq_backend_create(&be, "vulkan", -1);
    unsetenv("CQ_VULKAN_STAGING");
    assert_int_equal(r, 0);
    assert_false(((cq_vk *)be->ctx)->direct);
    roundtrip_on(be);
    /* and an op chain through device-local memory */
    int64_t ne[1] = { 1000 };
    cq_tensor *x = NULL, *y = NULL;
    assert_int_equal(cq_tensor_new(&x, be, CQ_F32, 1, ne), 0);
    assert_int_equal(cq_tensor_new(&y, be, CQ_F32, 1, ne), 0);
    float h[1000], o[1000];
    for (int i = 0; i < 1000; i++) h[i] = (float)i;
    assert_int_equal(cq_tensor_set(x, h, sizeof h), 0);
    cq_op op = { .type = CQ_OP_SCALE, .f = { 2.0f, 1.0f } };
    op.src[0] = x;
    op.dst[0] = y;
    assert_int_equal(cq_op_run(be, &op), 0);
    assert_int_equal(cq_tensor_get(y, o, sizeof o), 0);
    for (int i = 0; i < 1000; i++) assert_true(o[i] == 2.0f * i + 1.0f);
    cq_tensor_free(&x);
    cq_tensor_free(&y);
    cq_backend_destroy(&be);
}

/* Dependent chains recorded without a sync, independent ops between them,
 * frees of buffers the open batch still uses, uploads into such buffers. */
static void test_batching(void **state)
{
    (void)state;
    const int64_t n = 4097;
    float *h = malloc((size_t)n * 4), *o = malloc((size_t)n * 4);
    double *want = malloc((size_t)n * 8);
    assert_true(h && o && want);
    cq_tensor *x = mk(g_vk, CQ_F32, 1, n, 0, 0, 0), *y = mk(g_vk, CQ_F32, 1, n, 0, 0, 0);
    for (int64_t i = 0; i < n; i++) h[i] = (float)(i % 17) - 8.0f;
    assert_int_equal(cq_tensor_set(x, h, (size_t)n * 4), 0);
    for (int64_t i = 0; i < n; i++) want[i] = 0;
    /* 40 dependent AXPYs, with independent throwaway ops in between */
    for (int k = 0; k < 40; k++) {
        cq_op op = { .type = CQ_OP_AXPY, .f = { 0.5f } };
        op.src[0] = x;
        op.dst[0] = y;
        assert_int_equal(cq_op_run(g_vk, &op), 0);
        for (int64_t i = 0; i < n; i++) want[i] += 0.5 * h[i];
        cq_tensor *t = mk(g_vk, CQ_F32, 1, n, 0, 0, 0);
        cq_op sc = { .type = CQ_OP_SCALE, .f = { 3.0f } };
        sc.src[0] = y;
        sc.dst[0] = t;
        assert_int_equal(cq_op_run(g_vk, &sc), 0);
        cq_tensor_free(&t); /* freed while the batch still uses it */
    }
    assert_true(VKX()->recording);
    /* upload into x while the open batch reads it: the batch must see the old x */
    float *h2 = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) h2[i] = 100.0f;
    assert_int_equal(cq_tensor_set(x, h2, (size_t)n * 4), 0);
    cq_op op = { .type = CQ_OP_AXPY, .f = { 1.0f } };
    op.src[0] = x;
    op.dst[0] = y;
    assert_int_equal(cq_op_run(g_vk, &op), 0);
    for (int64_t i = 0; i < n; i++) want[i] += 100.0;
    assert_int_equal(cq_tensor_get(y, o, (size_t)n * 4), 0);
    for (int64_t i = 0; i < n; i++) assert_true(fabs(o[i] - want[i]) <= 1e-4 * fabs(want[i]) + 1e-4);
    cq_tensor_free(&x);
    cq_tensor_free(&y);
    free(h);
    free(h2);
    free(o);
    free(want);
}

static void test_large_buffer(void **state)
{
    (void)state;
    cq_vk *vk = VKX();
    uint64_t range = vk->caps.max_sb_range;
    if (range > ((uint64_t)512 << 20)) {
        printf("    maxStorageBufferRange %llu MiB: not exercised here (too large to test cheaply)\n",
               (unsigned long long)(range >> 20));
        return;
    }
    /* a buffer beyond the range; a small tensor near its end is bound through
     * a window, a tensor spanning more than the range is declined */
    int64_t n = (int64_t)((range + ((uint64_t)8 << 20)) / 4);
    cq_tensor *big = mk(g_vk, CQ_F32, 1, n, 0, 0, 0);
    int64_t ne[1] = { 1000 };
    cq_tensor *tail = NULL, *head = NULL, *out = mk(g_vk, CQ_F32, 1, 1000, 0, 0, 0);
    assert_int_equal(cq_tensor_view(&tail, big, 1, ne, NULL, n - 1003), 0);
    float h[1000], o[1000];
    for (int i = 0; i < 1000; i++) h[i] = (float)i;
    assert_int_equal(cq_tensor_set(tail, h, sizeof h), 0);
    cq_op op = { .type = CQ_OP_SCALE, .f = { -1.0f, 0.5f } };
    op.src[0] = tail;
    op.dst[0] = out;
    assert_int_equal(cq_op_run(g_vk, &op), 0);
    assert_int_equal(cq_tensor_get(out, o, sizeof o), 0);
    for (int i = 0; i < 1000; i++) assert_true(o[i] == 0.5f - (float)i);
    /* ... and as a destination */
    op.src[0] = out;
    op.dst[0] = tail;
    assert_int_equal(cq_op_run(g_vk, &op), 0);
    assert_int_equal(cq_tensor_get(tail, o, sizeof o), 0);
    for (int i = 0; i < 1000; i++) assert_true(o[i] == (float)i);
    /* too wide to bind: declined with a message, nothing crashes */
    int64_t ne2[1] = { n - 8 };
    assert_int_equal(cq_tensor_view(&head, big, 1, ne2, NULL, 4), 0);
    cq_tensor *dst = NULL;
    assert_int_equal(cq_tensor_view(&dst, big, 1, ne2, NULL, 4), 0);
    cq_op op2 = { .type = CQ_OP_SCALE, .f = { 1.0f } };
    op2.src[0] = head;
    op2.dst[0] = dst;
    assert_int_equal(cq_backend_supports(g_vk, &op2), 0);
    assert_int_equal(cq_op_run(g_vk, &op2), CQ_ENOTSUP);
    cq_tensor_free(&dst);
    cq_tensor_free(&head);
    cq_tensor_free(&tail);
    cq_tensor_free(&out);
    cq_tensor_free(&big);
    assert_int_equal(cq_backend_sync(g_vk), 0);
}

static void test_out_of_memory(void **state)
{
    (void)state;
    cq_buffer *b = NULL;
    size_t huge = (size_t)1 << 46; /* 64 TiB */
    int r = cq_buffer_alloc(g_vk, huge, &b);
    assert_int_equal(r, CQ_ENOMEM);
    assert_null(b);
    /* the backend still works */
    assert_int_equal(cq_buffer_alloc(g_vk, 1024, &b), 0);
    cq_buffer_release(&b);
}

/* ------------------------------------------------------------ ops vs CPU */

static void test_ops_vs_cpu(void **state)
{
    (void)state;
    cq_op op;
    /* matmul: several tiles, partial edges, all transposes, batched + broadcast B, beta */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t M = 70, K = 100, N = 130;
            memset(&op, 0, sizeof op);
            op.type = CQ_OP_MATMUL;
            op.src[0] = ta ? rnd_cpu(3, 2, K, M, 0, -1, 1) : rnd_cpu(3, 2, M, K, 0, -1, 1);
            op.src[1] = tb ? rnd_cpu(2, N, K, 0, 0, -1, 1) : rnd_cpu(2, K, N, 0, 0, -1, 1);
            op.dst[0] = rnd_cpu(3, 2, M, N, 0, -1, 1);
            op.i[0] = ta;
            op.i[1] = tb;
            op.f[0] = 0.75f;
            op.f[1] = ta ? 0.5f : 0.0f;
            char nm[64];
            snprintf(nm, sizeof nm, "matmul 2x%lldx%lldx%lld ta%d tb%d", (long long)M, (long long)K,
                     (long long)N, ta, tb);
            check_op(nm, &op, 2e-6);
        }
    /* rmsnorm fwd/bwd with C larger than a workgroup */
    memset(&op, 0, sizeof op);
    op.type = CQ_OP_RMSNORM;
    op.src[0] = rnd_cpu(2, 9, 1000, 0, 0, -2, 2);
    op.src[1] = rnd_cpu(1, 1000, 0, 0, 0, 0.5f, 1.5f);
    op.dst[0] = rnd_cpu(2, 9, 1000, 0, 0, 0, 0);
    op.f[0] = 1e-5f;
    check_op("rmsnorm 9x1000", &op, 1e-6);
    memset(&op, 0, sizeof op);
    op.type = CQ_OP_RMSNORM_BWD;
    op.src[0] = rnd_cpu(2, 9, 1000, 0, 0, -2, 2);
    op.src[1] = rnd_cpu(1, 1000, 0, 0, 0, 0.5f, 1.5f);
    op.src[2] = rnd_cpu(2, 9, 1000, 0, 0, -1, 1);
    op.dst[0] = rnd_cpu(2, 9, 1000, 0, 0, 0, 0);
    op.dst[1] = rnd_cpu(1, 1000, 0, 0, 0, 0, 0);
    op.f[0] = 1e-5f;
    check_op("rmsnorm_bwd 9x1000", &op, 1e-6);
    /* rope at large positions, in place */
    memset(&op, 0, sizeof op);
    op.type = CQ_OP_ROPE;
    op.src[0] = rnd_cpu(4, 2, 7, 3, 64, -1, 1);
    op.dst[0] = (cq_tensor *)op.src[0];
    op.i[0] = 6000;
    op.f[0] = 10000.0f;
    {
        /* in place: run_both mirrors src and dst separately, so use a copy */
        op.dst[0] = rnd_cpu(4, 2, 7, 3, 64, 0, 0);
        check_op("rope pos0 6000", &op, 1e-6);
    }
    /* attention: several key blocks, GQA, KV-cache offset, D = 128 */
    for (int bwd = 0; bwd < 2; bwd++) {
        int64_t B = 1, T = 70, S = 80, Hq = 4, Hkv = 2, D = 128;
        memset(&op, 0, sizeof op);
        op.type = CQ_OP_ATTN;
        cq_tensor *q = rnd_cpu(4, B, T, Hq, D, -1, 1), *k = rnd_cpu(4, B, S, Hkv, D, -1, 1);
        cq_tensor *v = rnd_cpu(4, B, S, Hkv, D, -1, 1);
        op.src[0] = q;
        op.src[1] = k;
        op.src[2] = v;
        op.dst[0] = rnd_cpu(4, B, T, Hq, D, 0, 0);
        op.dst[1] = rnd_cpu(3, B, Hq, T, 0, 0, 0);
        op.i[0] = S - T;
        op.f[0] = 1.0f / sqrtf((float)D);
        if (!bwd) {
            check_op("attn T70 S80 Hq4 Hkv2 D128", &op, 2e-6);
            continue;
        }
        assert_int_equal(cq_op_run(g_cpu, &op), 0);
        cq_op bo;
        memset(&bo, 0, sizeof bo);
        bo.type = CQ_OP_ATTN_BWD;
        bo.src[0] = q;
        bo.src[1] = k;
        bo.src[2] = v;
        bo.src[3] = op.dst[0];
        bo.src[4] = op.dst[1];
        bo.src[5] = rnd_cpu(4, B, T, Hq, D, -1, 1);
        bo.dst[0] = rnd_cpu(4, B, T, Hq, D, 0, 0);
        bo.dst[1] = rnd_cpu(4, B, S, Hkv, D, 0, 0);
        bo.dst[2] = rnd_cpu(4, B, S, Hkv, D, 0, 0);
        bo.i[0] = op.i[0];
        bo.f[0] = op.f[0];
        check_op("attn_bwd T70 S80 Hq4 Hkv2 D128", &bo, 5e-6);
    }
    /* cross-entropy with ignored targets, V larger than a workgroup */
    {
        int64_t N = 6, V = 3000;
        cq_tensor *lg = rnd_cpu(2, N, V, 0, 0, -4, 4);
        cq_tensor *tg = mk(g_cpu, CQ_I32, 1, N, 0, 0, 0);
        int32_t *tp = cq_tensor_host(tg);
        for (int64_t i = 0; i < N; i++) tp[i] = i == 2 ? -1 : (int32_t)(rnd64() % (uint64_t)V);
        memset(&op, 0, sizeof op);
        op.type = CQ_OP_XENT;
        op.src[0] = lg;
        op.src[1] = tg;
        op.dst[0] = mk(g_cpu, CQ_F32, 1, 1, 0, 0, 0);
        op.dst[1] = mk(g_cpu, CQ_F32, 1, N, 0, 0, 0);
        op.f[0] = 1.0f / 5;
        double e = run_both("xent 6x3000", &op);
        assert_true(e <= 1e-6);
        cq_op bo;
        memset(&bo, 0, sizeof bo);
        bo.type = CQ_OP_XENT_BWD;
        bo.src[0] = lg;
        bo.src[1] = tg;
        bo.src[2] = op.dst[1];
        bo.src[3] = mk(g_cpu, CQ_F32, 1, 1, 0, 0, 0);
        ((float *)cq_tensor_host(bo.src[3]))[0] = 1.5f;
        bo.dst[0] = mk(g_cpu, CQ_F32, 2, N, V, 0, 0);
        bo.f[0] = op.f[0];
        cq_tensor_free(&op.dst[0]);
        check_op("xent_bwd 6x3000", &bo, 1e-6);
    }
    /* embedding backward with repeated ids */
    {
        int64_t N = 40, V = 13, E = 70;
        cq_tensor *ids = mk(g_cpu, CQ_I32, 1, N, 0, 0, 0);
        int32_t *ip = cq_tensor_host(ids);
        for (int64_t i = 0; i < N; i++) ip[i] = (int32_t)(rnd64() % 7); /* repeats, rows 7..12 unused */
        memset(&op, 0, sizeof op);
        op.type = CQ_OP_EMBED_BWD;
        op.src[0] = ids;
        op.src[1] = rnd_cpu(2, N, E, 0, 0, -1, 1);
        op.dst[0] = rnd_cpu(2, V, E, 0, 0, -1, 1); /* garbage: must be zeroed */
        check_op("embed_bwd 40 ids into 13x70", &op, 1e-7);
    }
    /* multi-pass reductions */
    memset(&op, 0, sizeof op);
    op.type = CQ_OP_SUMSQ;
    op.src[0] = rnd_cpu(1, 1500001, 0, 0, 0, -1, 1);
    op.dst[0] = mk(g_cpu, CQ_F32, 1, 1, 0, 0, 0);
    check_op("sumsq 1.5M", &op, 1e-6);
    /* element-wise families on an odd size */
    memset(&op, 0, sizeof op);
    op.type = CQ_OP_SWIGLU_BWD;
    op.src[0] = rnd_cpu(1, 10007, 0, 0, 0, -6, 6);
    op.src[1] = rnd_cpu(1, 10007, 0, 0, 0, -2, 2);
    op.src[2] = rnd_cpu(1, 10007, 0, 0, 0, -1, 1);
    op.dst[0] = rnd_cpu(1, 10007, 0, 0, 0, 0, 0);
    op.dst[1] = rnd_cpu(1, 10007, 0, 0, 0, 0, 0);
    check_op("swiglu_bwd 10007", &op, 1e-6);
    memset(&op, 0, sizeof op);
    op.type = CQ_OP_ADAMW;
    op.src[0] = rnd_cpu(1, 10007, 0, 0, 0, -1, 1);
    op.dst[0] = rnd_cpu(1, 10007, 0, 0, 0, -1, 1);
    op.dst[1] = rnd_cpu(1, 10007, 0, 0, 0, -0.1f, 0.1f);
    op.dst[2] = rnd_cpu(1, 10007, 0, 0, 0, 0, 0.01f);
    float f[8] = { 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.19f, 0.0975f, 0.5f };
    memcpy(op.f, f, sizeof f);
    check_op("adamw 10007", &op, 1e-6);
}

/* COPY / FILL through views: transposed sources, 16-bit and byte dsts at odd
 * element offsets (sub-word writes must not disturb the neighbours). */
static void test_strided_copy_fill(void **state)
{
    (void)state;
    const int64_t R = 33, C = 47;
    cq_tensor *a = rnd_cpu(2, R, C, 0, 0, -3, 3);
    float *ap = cq_tensor_host(a);
    cq_tensor *va = mirror(a);
    static const cq_dtype dts[] = { CQ_F32, CQ_F16, CQ_BF16 };
    for (int di = 0; di < 3; di++) {
        /* dst: a [C, R] view at element offset 1 of a bigger buffer */
        cq_tensor *big = mk(g_vk, dts[di], 1, R * C + 3, 0, 0, 0);
        cq_op fl = { .type = CQ_OP_FILL, .f = { 7.0f } };
        fl.dst[0] = big;
        assert_int_equal(cq_op_run(g_vk, &fl), 0);
        int64_t ne[2] = { C, R }, nbT[2] = { 1, C };
        cq_tensor *dst = NULL, *srcT = NULL;
        assert_int_equal(cq_tensor_view(&dst, big, 2, ne, NULL, 1), 0);
        assert_int_equal(cq_tensor_view(&srcT, va, 2, ne, nbT, 0), 0);
        cq_op cp = { .type = CQ_OP_COPY };
        cp.src[0] = srcT;
        cp.dst[0] = dst;
        assert_int_equal(cq_op_run(g_vk, &cp), 0);
        float *o = malloc((size_t)(R * C + 3) * 4);
        assert_int_equal(cq_tensor_get_f32(big, o), 0);
        assert_true(o[0] == 7.0f && o[R * C + 1] == 7.0f && o[R * C + 2] == 7.0f);
        for (int64_t c = 0; c < C; c++)
            for (int64_t r = 0; r < R; r++) {
                float want = ap[r * C + c];
                if (dts[di] == CQ_F16) want = cq_f16_to_f32(cq_f32_to_f16(want));
                if (dts[di] == CQ_BF16) want = cq_bf16_to_f32(cq_f32_to_bf16(want));
                assert_true(o[1 + c * R + r] == want);
            }
        /* fill of an odd-offset, odd-length 16-bit view goes through the shader */
        int64_t ne1[1] = { 5 };
        cq_tensor *part = NULL;
        assert_int_equal(cq_tensor_view(&part, big, 1, ne1, NULL, 3), 0);
        cq_op f2 = { .type = CQ_OP_FILL, .f = { -2.5f } };
        f2.dst[0] = part;
        assert_int_equal(cq_op_run(g_vk, &f2), 0);
        float *o2 = malloc((size_t)(R * C + 3) * 4);
        assert_int_equal(cq_tensor_get_f32(big, o2), 0);
        for (int64_t i = 0; i < R * C + 3; i++) assert_true(o2[i] == (i >= 3 && i < 8 ? -2.5f : o[i]));
        free(o);
        free(o2);
        cq_tensor_free(&part);
        cq_tensor_free(&dst);
        cq_tensor_free(&srcT);
        cq_tensor_free(&big);
    }
    /* u8 strided copy (raw bytes) into an odd offset */
    cq_tensor *u = mk(g_cpu, CQ_U8, 2, 9, 13, 0, 0);
    uint8_t *up = cq_tensor_host(u);
    for (int i = 0; i < 9 * 13; i++) up[i] = (uint8_t)(i * 7 + 1);
    cq_tensor *vu = mirror(u), *ub = mk(g_vk, CQ_U8, 1, 9 * 13 + 2, 0, 0, 0), *ud = NULL, *uT = NULL;
    int64_t ne[2] = { 13, 9 }, nbT[2] = { 1, 13 };
    assert_int_equal(cq_tensor_view(&ud, ub, 2, ne, NULL, 1), 0);
    assert_int_equal(cq_tensor_view(&uT, vu, 2, ne, nbT, 0), 0);
    cq_op cp = { .type = CQ_OP_COPY };
    cp.src[0] = uT;
    cp.dst[0] = ud;
    assert_int_equal(cq_op_run(g_vk, &cp), 0);
    uint8_t got[9 * 13 + 2];
    assert_int_equal(cq_tensor_get(ub, got, sizeof got), 0);
    assert_int_equal(got[0], 0);
    assert_int_equal(got[9 * 13 + 1], 0);
    for (int c = 0; c < 13; c++)
        for (int r = 0; r < 9; r++) assert_int_equal(got[1 + c * 9 + r], up[r * 13 + c]);
    cq_tensor_free(&ud);
    cq_tensor_free(&uT);
    cq_tensor_free(&ub);
    cq_tensor_free(&vu);
    cq_tensor_free(&u);
    cq_tensor_free(&va);
    cq_tensor_free(&a);
}

/* ------------------------------------------------------------ CherryQ */

/* FAKEQUANT on the device equals core/quant.h's cq_quant_fakequant bit for bit */
static void test_fakequant_exact(void **state)
{
    (void)state;
    static const int bits[] = { 2, 3, 4, 8 }, groups[] = { 32, 64, 128, 0 };
    const int64_t rows = 6, cols = 200;
    float *w = malloc((size_t)(rows * cols) * 4), *want = malloc((size_t)(rows * cols) * 4);
    float *got = malloc((size_t)(rows * cols) * 4);
    uint8_t *mask = malloc((size_t)(rows * cols));
    int cases = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        w[i] = rndf(-1, 1) * (i / cols == 1 ? 1e-3f : 1.0f);
        mask[i] = (rnd64() % 23) == 0;
    }
    for (int64_t j = 0; j < cols; j++) w[4 * cols + j] = rndf(-1, 1) * 1e-9f; /* FP16 scale -> 0 (b=8) */
    for (int64_t j = 0; j < cols; j++) w[5 * cols + j] = (float)((int)(j % 9) - 4) * 0.25f; /* ties */
    cq_tensor *tw = mk(g_vk, CQ_F32, 2, rows, cols, 0, 0), *tm = mk(g_vk, CQ_U8, 2, rows, cols, 0, 0);
    cq_tensor *td = mk(g_vk, CQ_F32, 2, rows, cols, 0, 0);
    assert_int_equal(cq_tensor_set(tw, w, (size_t)(rows * cols) * 4), 0);
    assert_int_equal(cq_tensor_set(tm, mask, (size_t)(rows * cols)), 0);
    for (int bi = 0; bi < 4; bi++)
        for (int gi = 0; gi < 4; gi++)
            for (int fp16 = 0; fp16 < 2; fp16++)
                for (int m = 0; m < 2; m++) {
                    assert_int_equal(cq_quant_fakequant(want, w, m ? mask : NULL, rows, cols, bits[bi], groups[gi], fp16), 0);
                    cq_op op = { .type = CQ_OP_FAKEQUANT, .i = { bits[bi], groups[gi], fp16 } };
                    op.src[0] = tw;
                    op.src[1] = m ? tm : NULL;
                    op.dst[0] = td;
                    assert_int_equal(cq_op_run(g_vk, &op), 0);
                    assert_int_equal(cq_tensor_get(td, got, (size_t)(rows * cols) * 4), 0);
                    for (int64_t i = 0; i < rows * cols; i++)
                        if (memcmp(&got[i], &want[i], 4) != 0)
                            fail_msg("fakequant b%d g%d fp16 %d mask %d: [%lld] = %.9g, want %.9g", bits[bi],
                                     groups[gi], fp16, m, (long long)i, got[i], want[i]);
                    cases++;
                }
    printf("    %d fakequant configurations bit-exact vs cq_quant_fakequant\n", cases);
    /* a non-finite weight: CQ_ERANGE at the next sync, then the backend goes on */
    w[7] = INFINITY;
    assert_int_equal(cq_tensor_set(tw, w, (size_t)(rows * cols) * 4), 0);
    cq_op op = { .type = CQ_OP_FAKEQUANT, .i = { 3, 64, 1 } };
    op.src[0] = tw;
    op.dst[0] = td;
    assert_int_equal(cq_op_run(g_vk, &op), 0);
    assert_int_equal(cq_backend_sync(g_vk), CQ_ERANGE);
    assert_int_equal(cq_backend_sync(g_vk), 0);
    cq_tensor_free(&tw);
    cq_tensor_free(&tm);
    cq_tensor_free(&td);
    free(w);
    free(want);
    free(got);
    free(mask);
}

/* QMATMUL for every bit width and group, GEMV (N = 1, 3) and GEMM (N = 9)
 * paths, vs dequantize (cq_qunpack) + a double-precision matmul. */
static void test_qmatmul_all(void **state)
{
    (void)state;
    static const int bits[] = { 2, 3, 4, 8 }, groups[] = { 32, 64, 128, 0 }, Ns[] = { 1, 3, 9 };
    const int64_t out = 70, in = 200; /* 200: a partial last group for g = 64, 128 */
    float *W = malloc((size_t)(out * in) * 4), *dense = malloc((size_t)(out * in) * 4);
    uint8_t *mask = malloc((size_t)(out * in));
    float *X = malloc((size_t)(9 * in) * 4), *Y = malloc((size_t)(9 * out) * 4);
    double worst = 0;
    for (int64_t i = 0; i < out * in; i++) {
        W[i] = rndf(-1, 1);
        mask[i] = (rnd64() % 40) == 0;
        if (mask[i]) W[i] *= 8;
    }
    for (int64_t i = 0; i < 9 * in; i++) X[i] = rndf(-1, 1);
    for (int bi = 0; bi < 4; bi++)
        for (int gi = 0; gi < 4; gi++) {
            cq_qweight q;
            assert_int_equal(cq_qpack(&q, W, mask, out, in, bits[bi], groups[gi]), 0);
            assert_int_equal(cq_qunpack(&q, dense), 0);
            float *delta = malloc((size_t)(q.nnz ? q.nnz : 1) * 4);
            assert_int_equal(cq_qpack_cherry_delta(&q, delta), 0);
            int64_t rb = cq_quant_row_bytes(in, bits[bi]), ng = cq_quant_ngroups(in, groups[gi]);
            cq_tensor *codes = mk(g_vk, CQ_U8, 2, out, rb, 0, 0), *sc = mk(g_vk, CQ_U16, 2, out, ng, 0, 0);
            cq_tensor *rp = mk(g_vk, CQ_I32, 1, out + 1, 0, 0, 0), *cl = mk(g_vk, CQ_U16, 1, q.nnz, 0, 0, 0);
            cq_tensor *dl = mk(g_vk, CQ_F32, 1, q.nnz, 0, 0, 0);
            assert_int_equal(cq_tensor_set(codes, q.codes, (size_t)(out * rb)), 0);
            assert_int_equal(cq_tensor_set(sc, q.scales, (size_t)(out * ng) * 2), 0);
            assert_int_equal(cq_tensor_set(rp, q.rowptr, (size_t)(out + 1) * 4), 0);
            assert_int_equal(cq_tensor_set(cl, q.cols, (size_t)q.nnz * 2), 0);
            assert_int_equal(cq_tensor_set(dl, delta, (size_t)q.nnz * 4), 0);
            for (int ni = 0; ni < 3; ni++) {
                int64_t N = Ns[ni];
                cq_tensor *tx = mk(g_vk, CQ_F32, 2, N, in, 0, 0), *ty = mk(g_vk, CQ_F32, 2, N, out, 0, 0);
                assert_int_equal(cq_tensor_set(tx, X, (size_t)(N * in) * 4), 0);
                cq_op op = { .type = CQ_OP_QMATMUL, .i = { bits[bi], groups[gi], in } };
                op.src[0] = tx;
                op.src[1] = codes;
                op.src[2] = sc;
                op.src[3] = rp;
                op.src[4] = cl;
                op.src[5] = dl;
                op.dst[0] = ty;
                /* interleaved codes (CQ_QCODES_IL4, the CPU's int8 GEMV form)
                 * are declined: the shaders read the row layout only */
                op.i[3] = CQ_QCODES_IL4;
                assert_int_equal(cq_backend_supports(g_vk, &op), 0);
                assert_int_equal(cq_op_run(g_vk, &op), CQ_ENOTSUP);
                op.i[3] = CQ_QCODES_ROWS;
                assert_int_equal(cq_op_run(g_vk, &op), 0);
                assert_int_equal(cq_tensor_get(ty, Y, (size_t)(N * out) * 4), 0);
                double md = 0, mx = 0;
                for (int64_t n = 0; n < N; n++)
                    for (int64_t o = 0; o < out; o++) {
                        double acc = 0;
                        for (int64_t j = 0; j < in; j++) acc += (double)dense[o * in + j] * X[n * in + j];
                        double d = fabs(acc - Y[n * out + o]);
                        md = d > md ? d : md;
                        mx = fabs(acc) > mx ? fabs(acc) : mx;
                    }
                double e = md / mx;
                worst = e > worst ? e : worst;
                if (!(e < 2e-6))
                    fail_msg("qmatmul b%d g%d N%lld: normalized error %.3g", bits[bi], groups[gi], (long long)N, e);
                cq_tensor_free(&tx);
                cq_tensor_free(&ty);
            }
            cq_tensor_free(&codes);
            cq_tensor_free(&sc);
            cq_tensor_free(&rp);
            cq_tensor_free(&cl);
            cq_tensor_free(&dl);
            free(delta);
            cq_qweight_free(&q);
        }
    printf("    qmatmul: 4 bit widths x 4 groups x N in {1, 3, 9}: max normalized error %.2e\n", worst);
    g_worst[CQ_OP_QMATMUL] = worst > g_worst[CQ_OP_QMATMUL] ? worst : g_worst[CQ_OP_QMATMUL];
    free(W);
    free(dense);
    free(mask);
    free(X);
    free(Y);
}

/* ------------------------------------------------------------ main */

static int setup(void **state)
{
    (void)state;
    if (cq_backend_create(&g_cpu, "cpu", -1)) return -1;
    if (cq_backend_create(&g_vk, "vulkan", -1)) return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    printf("  worst normalized error per op type (vs the CPU backend):\n");
    for (int i = 1; i < CQ_OP_COUNT; i++)
        if (g_worst[i] > 0) printf("    %-12s %.2e\n", cq_op_name((cq_op_type)i), g_worst[i]);
    cq_backend_destroy(&g_vk);
    cq_backend_destroy(&g_cpu);
    return 0;
}

int main(void)
{
    cq_backend_info bi;
    if (cq_backend_probe(1, &bi) != 0 || bi.n_devices == 0) {
        printf("vulkan: skipped: %s\n", bi.reason[0] ? bi.reason : "not built");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_and_select),
        cmocka_unit_test(test_all_pipelines),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_staging_path),
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_large_buffer),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_ops_vs_cpu),
        cmocka_unit_test(test_strided_copy_fill),
        cmocka_unit_test(test_fakequant_exact),
        cmocka_unit_test(test_qmatmul_all),
    };
    return cmocka_run_group_tests_name("vulkan", tests, setup, teardown);
}
