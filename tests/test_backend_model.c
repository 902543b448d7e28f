/* cherryq: whole-model parity of every other built backend with the CPU:
 * perplexity of the same model within 1e-3 relative, greedy generation with
 * the KV cache giving the same tokens, and a quantized (packed, with
 * cherries) model's perplexity equal on both. Exits 77 (skipped) when no
 * backend besides the CPU has a device. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "llama.h"
#include "pipeline.h"

static const char *g_names[3];
static int g_n;
static char g_dir[256], g_qdir[300];
static int32_t g_tokens[4 * 48];

static double ppl_of(cq_llama *m, int64_t windows, int64_t T)
{
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, m->be), 0);
    cq_ctx_set_grad(c, false);
    double tot = 0;
    for (int64_t w = 0; w < windows; w++) {
        int64_t ne[2] = { 1, T };
        cq_tensor *ids = cq_new(c, CQ_I32, 2, ne), *tg = cq_new(c, CQ_I32, 2, ne);
        int32_t tgt[64];
        for (int64_t t = 0; t < T; t++) tgt[t] = t + 1 < T ? g_tokens[w * T + t + 1] : -1;
        assert_int_equal(cq_tensor_set(ids, g_tokens + w * T, (size_t)T * 4), 0);
        assert_int_equal(cq_tensor_set(tg, tgt, (size_t)T * 4), 0);
        cq_tensor *loss = cq_llama_loss(c, m, ids, tg, 1.0f / (float)(T - 1));
        assert_non_null(loss);
        float l;
        assert_int_equal(cq_tensor_get(loss, &l, 4), 0);
        tot += l;
        cq_ctx_reset(c);
    }
    cq_ctx_destroy(&c);
    return exp(tot / (double)windows);
}

static void greedy(cq_llama *m, int32_t *out, int n_new)
{
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, m->be), 0);
    cq_ctx_set_grad(c, false);
    assert_int_equal(cq_llama_cache_init(m, 1, 32), 0);
    int64_t pos = 0, T = 6;
    int32_t cur[8];
    memcpy(cur, g_tokens, (size_t)T * 4);
    int64_t V = m->cfg.vocab;
    float *logits = malloc((size_t)(V * T) * sizeof(float));
    for (int i = 0; i < n_new; i++) {
        int64_t ne[2] = { 1, T };
        cq_tensor *ids = cq_new(c, CQ_I32, 2, ne);
        assert_int_equal(cq_tensor_set(ids, cur, (size_t)T * 4), 0);
        cq_tensor *lg = cq_llama_forward(c, m, ids, pos, true);
        assert_non_null(lg);
        assert_int_equal(cq_tensor_get_f32(lg, logits), 0);
        const float *last = logits + (T - 1) * V;
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (last[v] > last[best]) best = (int32_t)v;
        out[i] = best;
        pos += T;
        T = 1;
        cur[0] = best;
        cq_ctx_reset(c);
    }
    free(logits);
    cq_llama_cache_reset(m);
    cq_ctx_destroy(&c);
}

static void compare_backend(void **state)
{
    const char *name = *state;
    cq_backend *cpu = NULL, *be = NULL;
    assert_int_equal(cq_backend_create(&cpu, "cpu", -1), 0);
    assert_int_equal(cq_backend_create(&be, name, -1), 0);
    for (int q = 0; q < 2; q++) {
        const char *dir = q ? g_qdir : g_dir;
        cq_llama *a = NULL, *b = NULL;
        assert_int_equal(cq_llama_load(&a, dir, cpu), 0);
        assert_int_equal(cq_llama_load(&b, dir, be), 0);
        double pa = ppl_of(a, 4, 48), pb = ppl_of(b, 4, 48);
        printf("  %s model: ppl cpu %.6f  %s %.6f  rel diff %.2e\n", q ? "quantized" : "f32", pa, name, pb,
               fabs(pa - pb) / pa);
        assert_true(isfinite(pa) && isfinite(pb));
        assert_true(fabs(pa - pb) / pa < 1e-3);
        int32_t ta[12], tb[12];
        greedy(a, ta, 12);
        greedy(b, tb, 12);
        for (int i = 0; i < 12; i++) assert_int_equal(ta[i], tb[i]);
        printf("  %s model: 12 greedy tokens with the KV cache identical\n", q ? "quantized" : "f32");
        cq_llama_destroy(&a);
        cq_llama_destroy(&b);
    }
    cq_backend_destroy(&be);
    cq_backend_destroy(&cpu);
}

static int make_models(void)
{
    cq_backend *cpu = NULL;
    if (cq_backend_create(&cpu, "cpu", -1)) return 1;
    cq_llama_config cfg = { .vocab = 97, .dim = 64, .ffn = 160, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                            .head_dim = 16, .max_seq = 64, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
                            .tie_embeddings = false, .bos = -1, .eos = -1 };
    cq_llama *m = NULL;
    int r = cq_llama_create(&m, &cfg, cpu, 11);
    /* larger weights than the 0.02 init so the logits are not flat */
    for (int i = 0; !r && i < m->n_params; i++) {
        cq_tensor *p = m->params[i];
        if (p->ndim != 2) continue;
        float *h = cq_tensor_host(p);
        for (int64_t j = 0; j < cq_tensor_numel(p); j++) h[j] *= 4.0f;
    }
    snprintf(g_dir, sizeof g_dir, "%s/cq_bm_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!r && !mkdtemp(g_dir)) r = 1;
    if (!r) r = cq_llama_save(m, g_dir, CQ_F32, NULL);
    /* packed 4-bit g32 with magnitude-selected cherries */
    cq_qspec s = { .bits = 4, .group = 32, .cherries = true };
    s.sel.criterion = CQ_SEL_MAGNITUDE;
    s.sel.k_rule = CQ_K_EXPLICIT;
    s.sel.k = 2;
    cq_qplan p = { 0 };
    cq_qpacked qp = { 0 };
    if (!r) r = cq_qplan_make(&p, m, NULL, &s);
    if (!r) r = cq_quantize_rtn(&qp, m, &p, &s);
    snprintf(g_qdir, sizeof g_qdir, "%s/q", g_dir);
    if (!r) r = cq_qmodel_save(m, &qp, g_qdir, "{\"quant_method\":\"cherryq\",\"method\":\"rtn\",\"bits\":4,"
                                               "\"group_size\":32,\"format_version\":1}", NULL);
    cq_qpacked_free(&qp);
    cq_qplan_free(&p);
    uint64_t st = 5;
    for (int i = 0; i < 4 * 48; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        g_tokens[i] = (int32_t)((st >> 33) % 97);
    }
    cq_llama_destroy(&m);
    cq_backend_destroy(&cpu);
    return r;
}

int main(void)
{
    for (int i = 1; i < cq_backend_count(); i++) {
        cq_backend_info bi;
        if (cq_backend_probe(i, &bi) == 0 && bi.n_devices > 0) g_names[g_n++] = bi.name;
    }
    if (!g_n) {
        printf("backend_model: no backend besides the CPU has a device; skipped\n");
        return 77;
    }
    if (make_models()) {
        printf("backend_model: could not build the test models\n");
        return 1;
    }
    struct CMUnitTest tests[3];
    for (int i = 0; i < g_n; i++) {
        tests[i] = (struct CMUnitTest)cmocka_unit_test_prestate(compare_backend, (void *)g_names[i]);
        tests[i].name = g_names[i];
    }
    int r = _cmocka_run_group_tests("backend_model", tests, (size_t)g_n, NULL, NULL);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return r;
}
