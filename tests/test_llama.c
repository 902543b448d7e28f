/* cherryq: golden tests of the LLaMA model (models/llama.c, llama_io.c).
 *
 * tests/fixtures/llama/ was written by tools/gen_llama_golden.py: an
 * independent PyTorch implementation of Hugging Face's LlamaForCausalLM,
 * run in float64 on random f32 weights. For each variant ("untied": GQA 4
 * heads on 2 kv heads, separate lm_head; "tied": 3 heads on 1 kv head,
 * lm_head tied to the embedding) it holds a Hugging Face directory and
 * <variant>.golden.safetensors with the ids, the targets, the logits, the
 * mean next-token loss and the gradient of that loss w.r.t. every parameter;
 * tied.gguf is the tied model as llama.cpp's converter writes it. "headdim"
 * has head_dim in config.json unequal to hidden_size / heads.
 *
 * Errors are normalized: max |got - want| / max |want| over a tensor.
 * Tolerances (CPU backend, f32 compute). The f32 forward and backward
 * reach ~3e-7 (logits) and <= 2e-6 (worst gradient) against the f64
 * reference, so the bounds are set ~30x and ~15x above that: tight enough
 * that a 0.1% error in rope_theta (4e-5 on the logits, 8e-5 on the
 * gradients) fails, loose enough for another BLAS kernel's rounding:
 *   logits  1e-5
 *   loss    1e-6   relative
 *   grads   3e-5   per parameter
 *   same weights, other file (GGUF f32, save/load f32): 1e-6
 *   f16 weights vs the f32 golden: 1e-2 (f16 rounding, 2^-11 relative per
 *                  weight, compounded through the layers); bf16: 5e-2
 * Each test prints the figures it reached.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cq_base.h"
#include "cq_io.h"
#include "cq_ops.h"
#include "gguf.h"
#include "llama.h"
#include "safetensors.h"

#ifndef CQ_TEST_FIXTURES
#error "CQ_TEST_FIXTURES must name the tests/fixtures directory"
#endif
#define FIX(name) CQ_TEST_FIXTURES "/llama/" name

#define TOL_LOGITS 1e-5
#define TOL_LOSS 1e-6
#define TOL_GRAD 3e-5
#define TOL_SAME 1e-6
#define TOL_F16 1e-2
#define TOL_BF16 5e-2

/* ------------------------------------------------------------ helpers */
static cq_backend *g_be;
static char g_tmp[1024];
static char g_last_err[2048];
static char g_all_err[8192]; /* every error since clear_err(), one a line */
static int g_nerr;

static void capture_log(cq_log_level lvl, const char *msg, void *user)
{
    (void)user;
    if (lvl == CQ_LOG_ERROR) {
        snprintf(g_last_err, sizeof g_last_err, "%s", msg);
        size_t o = strlen(g_all_err);
        snprintf(g_all_err + o, sizeof g_all_err - o, "%s\n", msg);
        g_nerr++;
    }
}

static void clear_err(void)
{
    g_last_err[0] = 0;
    g_all_err[0] = 0;
    g_nerr = 0;
}

/* rc must equal want, an error must have been logged, and the last one must
 * contain each given substring */
static void expect_err(int rc, int want, const char *sub1, const char *sub2)
{
    if (rc != want)
        fprintf(stderr, "rc %d (%s), want %d (%s); last error: %s\n", rc, cq_strerror(rc), want, cq_strerror(want),
                g_last_err);
    assert_int_equal(rc, want);
    assert_true(g_nerr > 0);
    if (sub1 && !strstr(g_last_err, sub1)) {
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", g_last_err, sub1);
        fail();
    }
    if (sub2 && !strstr(g_last_err, sub2)) {
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", g_last_err, sub2);
        fail();
    }
    printf("  rejected (%s): %s\n", cq_strerror(rc), g_last_err);
}

/* snprintf into a path buffer; truncation fails the test */
static char *pathf(char *buf, size_t n, const char *fmt, ...) CQ_PRINTF(3, 4);
static char *pathf(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    assert_true(k >= 0 && (size_t)k < n);
    return buf;
}

static char *tmp_path(char *buf, size_t n, const char *name)
{
    return pathf(buf, n, "%s/%s", g_tmp, name);
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static char *read_all(const char *path, size_t *n)
{
    char *d = NULL;
    assert_int_equal(cq_read_file(path, &d, n, 1u << 26), 0);
    return d;
}

/* copy src to dst without its last `cut` bytes */
static void copy_file(const char *src, const char *dst, size_t cut)
{
    size_t n;
    char *d = read_all(src, &n);
    assert_true(cut <= n);
    write_bytes(dst, d, n - cut);
    free(d);
}

/* a fresh directory under the temp dir */
static char *tmp_dir(char *buf, size_t n, const char *name)
{
    tmp_path(buf, n, name);
    assert_int_equal(cq_mkdir_p(buf), 0);
    return buf;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "llama_tmp_XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    char *cwd = getcwd(NULL, 0);
    if (!cwd) return -1;
    char rel[sizeof g_tmp];
    memcpy(rel, g_tmp, sizeof rel);
    int k = snprintf(g_tmp, sizeof g_tmp, "%s/%s", cwd, rel);
    free(cwd);
    if (k < 0 || (size_t)k >= sizeof g_tmp) return -1;
    cq_log_set_callback(capture_log, NULL);
    return cq_backend_create(&g_be, "cpu", -1) ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    cq_backend_destroy(&g_be);
    cq_log_set_callback(NULL, NULL);
    return 0;
}

/* max |a - b| / max |b| */
static double nerr_fd(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= num)) num = d; /* NaN propagates */
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return den > 0 ? num / den : num;
}

static double nerr_ff(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= num)) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

/* ------------------------------------------------------------ golden data */
typedef struct golden {
    cq_st_file *f;
    int64_t B, T, V;
    int32_t *ids, *targets;         /* [B, T] */
    double *logits;
    double loss;
} golden;

static double *read_f64(const cq_st_tensor *t)
{
    assert_non_null(t);
    assert_string_equal(t->st_dtype, "F64");
    double *d = malloc(t->numel * sizeof(double) + 1);
    assert_non_null(d);
    memcpy(d, t->data, t->numel * sizeof(double));
    return d;
}

static int32_t *read_i32(const cq_st_tensor *t)
{
    assert_non_null(t);
    assert_int_equal(t->dtype, CQ_I32);
    int32_t *d = malloc(t->numel * sizeof(int32_t) + 1);
    assert_non_null(d);
    memcpy(d, t->data, t->numel * sizeof(int32_t));
    return d;
}

static void golden_open(golden *g, const char *variant)
{
    char path[1024];
    memset(g, 0, sizeof *g);
    pathf(path, sizeof path, FIX("%s.golden.safetensors"), variant);
    assert_int_equal(cq_st_open(&g->f, path), 0);
    const cq_st_tensor *lg = cq_st_find(g->f, "logits");
    assert_non_null(lg);
    assert_int_equal(lg->ndim, 3);
    g->B = lg->shape[0];
    g->T = lg->shape[1];
    g->V = lg->shape[2];
    g->ids = read_i32(cq_st_find(g->f, "ids"));
    g->targets = read_i32(cq_st_find(g->f, "targets"));
    g->logits = read_f64(lg);
    double *l = read_f64(cq_st_find(g->f, "loss"));
    g->loss = l[0];
    free(l);
}

static void golden_close(golden *g)
{
    free(g->ids);
    free(g->targets);
    free(g->logits);
    cq_st_close(&g->f);
}

static cq_tensor *i32_tensor(const int32_t *v, int64_t B, int64_t T)
{
    int64_t ne[2] = { B, T };
    cq_tensor *t = NULL;
    assert_int_equal(cq_tensor_new(&t, g_be, CQ_I32, 2, ne), 0);
    assert_int_equal(cq_tensor_set(t, v, (size_t)(B * T) * sizeof(int32_t)), 0);
    return t;
}

/* logits [B, T, V] of ids at positions pos0.. (malloc'ed, f32) */
static float *run_logits(cq_llama *m, const int32_t *ids, int64_t B, int64_t T, int64_t pos0, bool use_cache)
{
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, g_be), 0);
    cq_ctx_set_grad(c, false);
    cq_tensor *t = i32_tensor(ids, B, T);
    cq_tensor *lg = cq_llama_forward(c, m, t, pos0, use_cache);
    if (!lg) fprintf(stderr, "forward failed: %s\n", g_last_err);
    assert_non_null(lg);
    assert_int_equal(cq_ctx_status(c), 0);
    assert_int_equal(cq_tensor_numel(lg), B * T * m->cfg.vocab);
    float *out = malloc((size_t)cq_tensor_numel(lg) * sizeof(float));
    assert_non_null(out);
    assert_int_equal(cq_tensor_get_f32(lg, out), 0);
    cq_tensor_free(&t);
    cq_ctx_destroy(&c);
    return out;
}

static cq_llama *load_ok(const char *path)
{
    cq_llama *m = NULL;
    clear_err();
    int r = cq_llama_load(&m, path, g_be);
    if (r) fprintf(stderr, "load %s: %s: %s\n", path, cq_strerror(r), g_last_err);
    assert_int_equal(r, 0);
    assert_non_null(m);
    return m;
}

static float *param_f32(const cq_tensor *p)
{
    float *d = malloc((size_t)cq_tensor_numel(p) * sizeof(float));
    assert_non_null(d);
    assert_int_equal(cq_tensor_get_f32(p, d), 0);
    return d;
}

/* ------------------------------------------------------------ golden: forward, loss, every gradient */
static void check_golden(const char *variant, bool tied)
{
    golden g;
    golden_open(&g, variant);
    char dir[1024];
    pathf(dir, sizeof dir, FIX("%s"), variant);
    cq_llama *m = load_ok(dir);
    assert_int_equal(m->cfg.vocab, g.V);
    assert_int_equal(m->cfg.tie_embeddings, tied);
    assert_int_equal(m->lm_head == m->tok_emb, tied);
    assert_int_equal(cq_llama_param(m, "lm_head.weight") != NULL, !tied);
    size_t nlog = (size_t)(g.B * g.T * g.V);

    /* forward */
    float *lg = run_logits(m, g.ids, g.B, g.T, 0, false);
    double e_log = nerr_fd(lg, g.logits, nlog);
    printf("  [%s] logits [%lld, %lld, %lld]: max normalized error %.3g (tol %.0e)\n", variant, (long long)g.B,
           (long long)g.T, (long long)g.V, e_log, TOL_LOGITS);
    assert_true(e_log <= TOL_LOGITS);
    free(lg);

    /* loss and backward */
    assert_int_equal(cq_llama_enable_grad(m), 0);
    assert_int_equal(cq_llama_zero_grad(m), 0);
    int64_t ntgt = 0;
    for (int64_t i = 0; i < g.B * g.T; i++) ntgt += g.targets[i] >= 0;
    assert_true(ntgt > 0 && ntgt < g.B * g.T);
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, g_be), 0);
    cq_tensor *ids = i32_tensor(g.ids, g.B, g.T), *tg = i32_tensor(g.targets, g.B, g.T);
    float **grad1 = calloc((size_t)m->n_params, sizeof *grad1);
    assert_non_null(grad1);
    for (int pass = 0; pass < 2; pass++) {
        cq_ctx_reset(c);
        cq_tensor *loss = cq_llama_loss(c, m, ids, tg, 1.0f / (float)ntgt);
        assert_non_null(loss);
        float lv;
        assert_int_equal(cq_tensor_get_f32(loss, &lv), 0);
        double e_loss = fabs(lv - g.loss) / fabs(g.loss);
        if (pass == 0)
            printf("  [%s] loss %.7f vs %.7f: relative error %.3g (tol %.0e)\n", variant, lv, g.loss, e_loss,
                   TOL_LOSS);
        assert_true(e_loss <= TOL_LOSS);
        assert_int_equal(cq_backward(c, loss), 0);
        if (pass == 1) break;
        double worst = 0;
        const char *worst_name = "";
        for (int i = 0; i < m->n_params; i++) {
            cq_tensor *p = m->params[i];
            char gn[160];
            pathf(gn, sizeof gn, "grad.%s", p->name);
            const cq_st_tensor *gt = cq_st_find(g.f, gn);
            if (!gt) fprintf(stderr, "golden has no %s\n", gn);
            assert_non_null(gt);
            assert_int_equal(gt->ndim, p->ndim);
            for (int d = 0; d < p->ndim; d++) assert_int_equal(gt->shape[d], p->ne[d]);
            assert_non_null(p->grad);
            double *want = read_f64(gt);
            grad1[i] = param_f32(p->grad);
            double e = nerr_fd(grad1[i], want, (size_t)gt->numel);
            printf("  [%s] grad %-46s %.3g\n", variant, p->name, e);
            if (!(e <= worst)) {
                worst = e;
                worst_name = p->name;
            }
            free(want);
        }
        /* every golden gradient belongs to a parameter: none left unchecked */
        size_t ngrad = 0;
        for (size_t i = 0; i < cq_st_count(g.f); i++) ngrad += !strncmp(cq_st_tensor_at(g.f, i)->name, "grad.", 5);
        assert_int_equal(ngrad, (size_t)m->n_params);
        printf("  [%s] worst gradient error %.3g (%s), tol %.0e\n", variant, worst, worst_name, TOL_GRAD);
        assert_true(worst <= TOL_GRAD);
    }
    /* a second backward without zeroing accumulates: grads doubled */
    for (int i = 0; i < m->n_params; i++) {
        float *g2 = param_f32(m->params[i]->grad);
        size_t n = (size_t)cq_tensor_numel(m->params[i]);
        for (size_t j = 0; j < n; j++) g2[j] *= 0.5f;
        assert_true(nerr_ff(g2, grad1[i], n) <= 1e-6);
        free(g2);
        free(grad1[i]);
    }
    free(grad1);
    cq_tensor_free(&ids);
    cq_tensor_free(&tg);
    cq_ctx_destroy(&c);
    cq_llama_destroy(&m);
    assert_null(m);
    golden_close(&g);
}

static void test_golden_untied(void **state)
{
    (void)state;
    check_golden("untied", false);
}

static void test_golden_tied(void **state)
{
    (void)state;
    check_golden("tied", true);
}

static void test_golden_headdim(void **state)
{
    (void)state;
    check_golden("headdim", false);
}

/* LLaMA-3.1's rope_scaling (llama3) against the PyTorch reference: logits,
 * loss and every gradient; and the same weights with plain RoPE are far
 * from it, so the scaling is what the match shows. */
static void test_golden_llama3(void **state)
{
    (void)state;
    check_golden("llama3", false);
    golden g;
    golden_open(&g, "llama3");
    cq_llama *m = load_ok(FIX("llama3"));
    assert_int_equal(m->cfg.rope_scaling.type, CQ_ROPE_LLAMA3);
    assert_true(m->cfg.rope_scaling.factor == 8.0f && m->cfg.rope_scaling.original_max == 64.0f);
    m->cfg.rope_scaling.type = CQ_ROPE_PLAIN;
    float *lg = run_logits(m, g.ids, g.B, g.T, 0, false);
    double e = nerr_fd(lg, g.logits, (size_t)(g.B * g.T * g.V));
    printf("  [llama3] the same weights with plain RoPE: logits error %.3g\n", e);
    assert_true(e > 100 * TOL_LOGITS);
    free(lg);
    cq_llama_destroy(&m);
    golden_close(&g);
}

/* ------------------------------------------------------------ GGUF export (as convert_hf_to_gguf.py) */
static void gguf_name(char *out, size_t n, const char *hf)
{
    static const char *const from[] = {
        "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
        "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
        "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    };
    static const char *const to[] = {
        "attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
    };
    if (!strcmp(hf, "model.embed_tokens.weight")) snprintf(out, n, "token_embd.weight");
    else if (!strcmp(hf, "model.norm.weight")) snprintf(out, n, "output_norm.weight");
    else if (!strcmp(hf, "lm_head.weight")) snprintf(out, n, "output.weight");
    else {
        int l;
        char rest[96];
        assert_int_equal(sscanf(hf, "model.layers.%d.%95s", &l, rest), 2);
        for (size_t i = 0; i < sizeof from / sizeof from[0]; i++)
            if (!strcmp(rest, from[i])) {
                snprintf(out, n, "blk.%d.%s.weight", l, to[i]);
                return;
            }
        fail_msg("no GGUF name for %s", hf);
    }
}

/* Writes m as a llama.cpp GGUF: metadata, llama.cpp tensor names, q/k rows
 * permuted. ggml_type F32 or F16; arch is general.architecture; the
 * parameter named `skip` (may be NULL) is left out. */
static void expect_load_err(const char *path, int want, const char *sub1, const char *sub2);

/* RoPE scaling metadata write_gguf adds when set (llama.cpp's keys; freqs:
 * a rope_freqs.weight tensor, its form of LLaMA-3.1's llama3 scaling) */
static struct {
    const char *type;
    float factor;
    bool freqs;
} g_gguf_rope;

static void write_gguf(const cq_llama *m, const char *path, uint32_t ggml_type, const char *arch, const char *skip)
{
    const cq_llama_config *c = &m->cfg;
    cq_gguf_writer *w = NULL;
    assert_int_equal(cq_gguf_writer_create(&w, 0), 0);
    assert_int_equal(cq_gguf_writer_add_str(w, "general.architecture", arch), 0);
    assert_int_equal(cq_gguf_writer_add_str(w, "general.name", "cherryq test"), 0);
    assert_int_equal(cq_gguf_writer_add_u32(w, "llama.context_length", (uint32_t)c->max_seq), 0);
    assert_int_equal(cq_gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)c->dim), 0);
    assert_int_equal(cq_gguf_writer_add_u32(w, "llama.block_count", (uint32_t)c->n_layers), 0);
    assert_int_equal(cq_gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)c->ffn), 0);
    assert_int_equal(cq_gguf_writer_add_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim), 0);
    assert_int_equal(cq_gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads), 0);
    assert_int_equal(cq_gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads), 0);
    if (c->head_dim != c->dim / c->n_heads) { /* as convert_hf_to_gguf.py does for a config head_dim */
        assert_int_equal(cq_gguf_writer_add_u32(w, "llama.attention.key_length", (uint32_t)c->head_dim), 0);
        assert_int_equal(cq_gguf_writer_add_u32(w, "llama.attention.value_length", (uint32_t)c->head_dim), 0);
    }
    assert_int_equal(cq_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps), 0);
    assert_int_equal(cq_gguf_writer_add_f32(w, "llama.rope.freq_base", c->rope_theta), 0);
    if (g_gguf_rope.type) {
        assert_int_equal(cq_gguf_writer_add_str(w, "llama.rope.scaling.type", g_gguf_rope.type), 0);
        assert_int_equal(cq_gguf_writer_add_f32(w, "llama.rope.scaling.factor", g_gguf_rope.factor), 0);
    }
    static float freqs[256];
    if (g_gguf_rope.freqs) {
        int64_t ne = c->head_dim / 2;
        for (int64_t j = 0; j < ne; j++) freqs[j] = 1.0f + (float)j;
        assert_int_equal(cq_gguf_writer_add_tensor(w, "rope_freqs.weight", CQ_GGML_F32, 1, &ne, freqs), 0);
    }
    assert_int_equal(cq_gguf_writer_add_u32(w, "general.file_type", ggml_type == CQ_GGML_F16 ? 1u : 0u), 0);
    if (c->bos >= 0) assert_int_equal(cq_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos), 0);
    if (c->eos >= 0) assert_int_equal(cq_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos), 0);
    void **bufs = calloc((size_t)m->n_params, sizeof *bufs);
    assert_non_null(bufs);
    for (int i = 0; i < m->n_params; i++) {
        const cq_tensor *p = m->params[i];
        if (skip && !strcmp(p->name, skip)) continue;
        size_t n = (size_t)cq_tensor_numel(p);
        float *f = param_f32(p);
        int64_t heads = strstr(p->name, "q_proj") ? c->n_heads : strstr(p->name, "k_proj") ? c->n_kv_heads : 0;
        if (heads) {
            float *perm = malloc(n * sizeof(float));
            assert_non_null(perm);
            assert_int_equal(cq_gguf_permute_qk(perm, f, heads, p->ne[0], p->ne[1]), 0);
            free(f);
            f = perm;
        }
        if (ggml_type == CQ_GGML_F16) {
            uint16_t *h = malloc(n * sizeof(uint16_t));
            assert_non_null(h);
            assert_int_equal(cq_convert(h, CQ_F16, f, CQ_F32, n), 0);
            free(f);
            bufs[i] = h;
        } else {
            bufs[i] = f;
        }
        char name[128];
        gguf_name(name, sizeof name, p->name);
        assert_int_equal(cq_gguf_writer_add_tensor(w, name, ggml_type, p->ndim, p->ne, bufs[i]), 0);
    }
    assert_int_equal(cq_gguf_writer_write(w, path), 0);
    cq_gguf_writer_destroy(&w);
    for (int i = 0; i < m->n_params; i++) free(bufs[i]);
    free(bufs);
}

static void assert_same_config(const cq_llama_config *a, const cq_llama_config *b)
{
    assert_int_equal(a->vocab, b->vocab);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->ffn, b->ffn);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->max_seq, b->max_seq);
    assert_true(a->norm_eps == b->norm_eps);
    assert_true(a->rope_theta == b->rope_theta);
    assert_memory_equal(&a->rope_scaling, &b->rope_scaling, sizeof a->rope_scaling);
    assert_int_equal(a->tie_embeddings, b->tie_embeddings);
    assert_int_equal(a->bos, b->bos);
    assert_int_equal(a->eos, b->eos);
}

/* every parameter of a equals b's (after rounding b to dt: f32, f16, bf16) */
static void assert_same_params(const cq_llama *a, const cq_llama *b, cq_dtype dt)
{
    assert_int_equal(a->n_params, b->n_params);
    for (int i = 0; i < a->n_params; i++) {
        const cq_tensor *pa = a->params[i], *pb = cq_llama_param(b, a->params[i]->name);
        assert_non_null(pb);
        assert_true(cq_tensor_same_shape(pa, pb));
        float *fa = param_f32(pa), *fb = param_f32(pb);
        size_t n = (size_t)cq_tensor_numel(pa);
        if (dt == CQ_F16)
            for (size_t j = 0; j < n; j++) fb[j] = cq_f16_to_f32(cq_f32_to_f16(fb[j]));
        if (dt == CQ_BF16)
            for (size_t j = 0; j < n; j++) fb[j] = cq_bf16_to_f32(cq_f32_to_bf16(fb[j]));
        if (memcmp(fa, fb, n * sizeof(float))) fail_msg("parameter %s differs", pa->name);
        free(fa);
        free(fb);
    }
}

struct variant_logits {
    double e_golden, e_ref;
};

/* load path, check its weights against ref's rounded to dt, its logits
 * against the golden and against ref_logits */
static struct variant_logits check_file_model(const char *what, const char *path, const cq_llama *ref,
                                              const float *ref_logits, const golden *g, cq_dtype dt)
{
    cq_llama *m = load_ok(path);
    assert_same_config(&m->cfg, &ref->cfg);
    assert_int_equal(m->lm_head == m->tok_emb, ref->cfg.tie_embeddings);
    assert_same_params(m, ref, dt);
    size_t nlog = (size_t)(g->B * g->T * g->V);
    float *lg = run_logits(m, g->ids, g->B, g->T, 0, false);
    struct variant_logits r = { nerr_fd(lg, g->logits, nlog), nerr_ff(lg, ref_logits, nlog) };
    printf("  %-34s logits vs golden %.3g, vs reference run %.3g\n", what, r.e_golden, r.e_ref);
    free(lg);
    cq_llama_destroy(&m);
    return r;
}

static void test_gguf_and_save(void **state)
{
    (void)state;
    static const char *const variants[4] = { "untied", "tied", "headdim", "llama3" };
    for (int v = 0; v < 4; v++) {
        golden g;
        golden_open(&g, variants[v]);
        char dir[1024], path[1024], what[128];
        pathf(dir, sizeof dir, FIX("%s"), variants[v]);
        cq_llama *m = load_ok(dir);
        float *ref = run_logits(m, g.ids, g.B, g.T, 0, false);
        struct variant_logits r;

        const bool llama3 = m->cfg.rope_scaling.type == CQ_ROPE_LLAMA3;
        /* GGUF F32: same weights, so the same logits; llama.cpp stores
         * llama3 scaling as per-dimension factors, which are refused */
        pathf(what, sizeof what, "%s.f32.gguf", variants[v]);
        g_gguf_rope.freqs = llama3;
        write_gguf(m, tmp_path(path, sizeof path, what), CQ_GGML_F32, "llama", NULL);
        g_gguf_rope.freqs = false;
        if (llama3) {
            expect_load_err(path, CQ_ENOTSUP, "rope_freqs.weight", "not supported");
        } else {
            r = check_file_model(what, path, m, ref, &g, CQ_F32);
            assert_true(r.e_ref <= TOL_SAME && r.e_golden <= TOL_LOGITS);
        }

        /* HF save -> load, f32: identical weights and logits */
        pathf(what, sizeof what, "%s saved f32", variants[v]);
        pathf(path, sizeof path, "%s/%s_f32", g_tmp, variants[v]);
        assert_int_equal(cq_llama_save(m, path, CQ_F32, NULL), 0);
        r = check_file_model(what, path, m, ref, &g, CQ_F32);
        assert_true(r.e_ref <= TOL_SAME);

        /* HF save -> load, bf16 (8 mantissa bits) */
        pathf(what, sizeof what, "%s saved bf16", variants[v]);
        pathf(path, sizeof path, "%s/%s_bf16", g_tmp, variants[v]);
        assert_int_equal(cq_llama_save(m, path, CQ_BF16, NULL), 0);
        r = check_file_model(what, path, m, ref, &g, CQ_BF16);
        assert_true(r.e_golden <= TOL_BF16);

        /* HF save -> load, f16: weights are the f16 roundings */
        pathf(what, sizeof what, "%s saved f16", variants[v]);
        pathf(path, sizeof path, "%s/%s_f16", g_tmp, variants[v]);
        assert_int_equal(cq_llama_save(m, path, CQ_F16, NULL), 0);
        r = check_file_model(what, path, m, ref, &g, CQ_F16);
        assert_true(r.e_golden <= TOL_F16 && r.e_ref <= TOL_F16);
        cq_llama *m16 = load_ok(path);
        float *ref16 = run_logits(m16, g.ids, g.B, g.T, 0, false);
        cq_llama_destroy(&m16);

        /* GGUF F16: the same f16 weights as the f16 save, so its logits */
        pathf(what, sizeof what, "%s.f16.gguf", variants[v]);
        write_gguf(m, tmp_path(path, sizeof path, what), CQ_GGML_F16, "llama", NULL);
        if (!llama3) {
            r = check_file_model(what, path, m, ref16, &g, CQ_F16);
            assert_true(r.e_ref <= TOL_SAME && r.e_golden <= TOL_F16);
        }
        if (v == 0) {
            /* llama.cpp's linear RoPE scaling keys: the model with the same
             * scaling set by hand gives the same logits; other types refused */
            g_gguf_rope.type = "linear";
            g_gguf_rope.factor = 2.0f;
            write_gguf(m, tmp_path(path, sizeof path, "untied.linear.gguf"), CQ_GGML_F32, "llama", NULL);
            cq_llama *ml = load_ok(path);
            assert_int_equal(ml->cfg.rope_scaling.type, CQ_ROPE_LINEAR);
            assert_true(ml->cfg.rope_scaling.factor == 2.0f);
            float *lin = run_logits(ml, g.ids, g.B, g.T, 0, false);
            m->cfg.rope_scaling = ml->cfg.rope_scaling;
            float *want = run_logits(m, g.ids, g.B, g.T, 0, false);
            m->cfg.rope_scaling = (cq_rope_scaling){ 0 };
            size_t nlog = (size_t)(g.B * g.T * g.V);
            printf("  untied.linear.gguf: logits vs the model with linear x2 set %.3g, vs plain %.3g\n",
                   nerr_ff(lin, want, nlog), nerr_ff(lin, ref, nlog));
            assert_true(nerr_ff(lin, want, nlog) <= TOL_SAME && nerr_ff(lin, ref, nlog) > 100 * TOL_LOGITS);
            free(lin);
            free(want);
            cq_llama_destroy(&ml);
            g_gguf_rope.type = "yarn";
            write_gguf(m, tmp_path(path, sizeof path, "untied.yarn.gguf"), CQ_GGML_F32, "llama", NULL);
            g_gguf_rope.type = NULL;
            expect_load_err(path, CQ_ENOTSUP, "\"yarn\" is not supported", NULL);
        }
        free(ref16);

        if (v == 1) {
            /* tied.gguf from the generator: llama.cpp's numpy permutation and
             * names, independent of cq_gguf_permute_qk */
            r = check_file_model("tied.gguf (python)", FIX("tied.gguf"), m, ref, &g, CQ_F32);
            assert_true(r.e_ref <= TOL_SAME && r.e_golden <= TOL_LOGITS);
            /* and our writer produced the very same tensor bytes */
            cq_gguf *a = NULL, *b = NULL;
            assert_int_equal(cq_gguf_open(&a, FIX("tied.gguf")), 0);
            assert_int_equal(cq_gguf_open(&b, tmp_path(path, sizeof path, "tied.f32.gguf")), 0);
            assert_int_equal(cq_gguf_tensor_count(a), cq_gguf_tensor_count(b));
            for (size_t i = 0; i < cq_gguf_tensor_count(a); i++) {
                const cq_gguf_tensor *ta = cq_gguf_tensor_at(a, i);
                const cq_gguf_tensor *tb = cq_gguf_find_tensor(b, ta->name);
                if (!tb) fail_msg("our GGUF lacks %s", ta->name);
                assert_int_equal(ta->ggml_type, tb->ggml_type);
                assert_int_equal(ta->nbytes, tb->nbytes);
                for (int d = 0; d < ta->ndim; d++) assert_int_equal(ta->ne[d], tb->ne[d]);
                if (memcmp(ta->data, tb->data, ta->nbytes)) fail_msg("tensor %s differs from llama.cpp's layout", ta->name);
            }
            cq_gguf_close(&a);
            cq_gguf_close(&b);
        }
        free(ref);
        cq_llama_destroy(&m);
        golden_close(&g);
    }
}

/* ------------------------------------------------------------ KV cache */
static void check_cache(const char *variant)
{
    golden g;
    golden_open(&g, variant);
    char dir[1024];
    pathf(dir, sizeof dir, FIX("%s"), variant);
    cq_llama *m = load_ok(dir);
    int64_t T = g.T, V = g.V;
    double worst_prefill = 0, worst_step = 0;
    for (int64_t b = 0; b < g.B; b++) {
        const int32_t *row = g.ids + b * T;
        const double *want = g.logits + b * T * V;
        float *full = run_logits(m, row, 1, T, 0, false);
        /* prefill T-1 tokens, then the last one */
        assert_int_equal(cq_llama_cache_init(m, 1, T), 0);
        float *pre = run_logits(m, row, 1, T - 1, 0, true);
        float *last = run_logits(m, row + T - 1, 1, 1, T - 1, true);
        double e1 = nerr_ff(pre, full, (size_t)((T - 1) * V));
        double e2 = nerr_ff(last, full + (T - 1) * V, (size_t)V);
        assert_true(nerr_fd(last, want + (T - 1) * V, (size_t)V) <= TOL_LOGITS);
        free(pre);
        free(last);
        /* one token at a time through the whole row, on a fresh cache */
        assert_int_equal(cq_llama_cache_init(m, 1, T), 0);
        double e3 = 0;
        for (int64_t t = 0; t < T; t++) {
            float *one = run_logits(m, row + t, 1, 1, t, true);
            double e = nerr_ff(one, full + t * V, (size_t)V);
            if (e > e3) e3 = e;
            assert_true(nerr_fd(one, want + t * V, (size_t)V) <= TOL_LOGITS);
            free(one);
        }
        /* a cache full to its length refuses another token */
        clear_err();
        cq_ctx *c = NULL;
        assert_int_equal(cq_ctx_create(&c, g_be), 0);
        cq_tensor *ids = i32_tensor(row, 1, 1);
        assert_null(cq_llama_forward(c, m, ids, T, true));
        assert_true(g_nerr > 0);
        cq_tensor_free(&ids);
        cq_ctx_destroy(&c);
        cq_llama_cache_reset(m);
        if (e1 > worst_prefill) worst_prefill = e1;
        if (e2 > worst_step) worst_step = e2;
        if (e3 > worst_step) worst_step = e3;
        free(full);
    }
    printf("  [%s] KV cache vs full forward: prefill rows %.3g, cached steps %.3g (tol %.0e)\n", variant,
           worst_prefill, worst_step, TOL_SAME);
    assert_true(worst_prefill <= TOL_SAME && worst_step <= TOL_SAME);
    /* without an initialized cache, use_cache is refused */
    clear_err();
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, g_be), 0);
    cq_tensor *ids = i32_tensor(g.ids, 1, 1);
    assert_null(cq_llama_forward(c, m, ids, 0, true));
    assert_non_null(strstr(g_last_err, "KV cache"));
    cq_tensor_free(&ids);
    cq_ctx_destroy(&c);
    cq_llama_destroy(&m);
    golden_close(&g);
}

static void test_kv_cache(void **state)
{
    (void)state;
    check_cache("untied");
    check_cache("tied");
    check_cache("llama3");   /* scaled RoPE at the cache's positions */
}

/* ------------------------------------------------------------ bad inputs */
static void expect_load_err(const char *path, int want, const char *sub1, const char *sub2)
{
    cq_llama *m = (cq_llama *)(uintptr_t)1; /* must be reset to NULL */
    clear_err();
    int r = cq_llama_load(&m, path, g_be);
    expect_err(r, want, sub1, sub2);
    assert_null(m);
}

/* dir/config.json = the untied fixture's with `from` replaced by `to` */
static void write_config(const char *dir, const char *from, const char *to)
{
    size_t n;
    char *txt = read_all(FIX("untied/config.json"), &n);
    char *at = from ? strstr(txt, from) : NULL;
    if (from) assert_non_null(at);
    char path[1024];
    pathf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (at) {
        fwrite(txt, 1, (size_t)(at - txt), f);
        fputs(to, f);
        fputs(at + strlen(from), f);
    } else {
        fwrite(txt, 1, n, f);
    }
    assert_int_equal(fclose(f), 0);
    free(txt);
}

/* Writes a safetensors file by hand (spec layout) with the untied fixture's
 * tensors, dropping `drop` and replacing `swap` by an i64 tensor of the same
 * shape when given. */
static void write_st_variant(const char *path, const char *drop, const char *swap_i64)
{
    cq_st_file *f = NULL;
    assert_int_equal(cq_st_open(&f, FIX("untied/model.safetensors")), 0);
    size_t cap = 1 << 16, len = 0, off = 0;
    char *hdr = malloc(cap);
    assert_non_null(hdr);
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t nt = cq_st_count(f);
    for (size_t i = 0; i < nt; i++) {
        const cq_st_tensor *t = cq_st_tensor_at(f, i);
        if (drop && !strcmp(t->name, drop)) continue;
        bool sw = swap_i64 && !strcmp(t->name, swap_i64);
        size_t nb = sw ? t->numel * 8 : t->nbytes;
        len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                                sw ? "I64" : t->st_dtype);
        for (int d = 0; d < t->ndim; d++)
            len += (size_t)snprintf(hdr + len, cap - len, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
        off += nb;
        assert_true(len < cap - 256);
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';
    FILE *o = fopen(path, "wb");
    assert_non_null(o);
    uint64_t hl = len; /* little-endian host assumed, as the library does */
    assert_int_equal(fwrite(&hl, 8, 1, o), 1);
    assert_int_equal(fwrite(hdr, 1, len, o), len);
    for (size_t i = 0; i < nt; i++) {
        const cq_st_tensor *t = cq_st_tensor_at(f, i);
        if (drop && !strcmp(t->name, drop)) continue;
        if (swap_i64 && !strcmp(t->name, swap_i64)) {
            for (uint64_t j = 0; j < t->numel; j++) {
                int64_t one = 1;
                assert_int_equal(fwrite(&one, 8, 1, o), 1);
            }
        } else {
            assert_int_equal(fwrite(t->data, 1, t->nbytes, o), t->nbytes);
        }
    }
    assert_int_equal(fclose(o), 0);
    free(hdr);
    cq_st_close(&f);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    char d[1024], p[1024];
    const char *st = FIX("untied/model.safetensors");

    expect_load_err(tmp_path(p, sizeof p, "does-not-exist"), CQ_ENOENT, "does-not-exist", NULL);

    /* missing config.json */
    tmp_dir(d, sizeof d, "no_config");
    pathf(p, sizeof p, "%s/model.safetensors", d);
    copy_file(st, p, 0);
    expect_load_err(d, CQ_ENOENT, "config.json", NULL);

    /* malformed config.json */
    tmp_dir(d, sizeof d, "bad_json");
    pathf(p, sizeof p, "%s/model.safetensors", d);
    copy_file(st, p, 0);
    pathf(p, sizeof p, "%s/config.json", d);
    write_bytes(p, "{\"hidden_size\": 32, \"vocab_size\": ", 34);
    expect_load_err(d, CQ_EBADMSG, "config.json", NULL);

    /* unsupported architecture */
    tmp_dir(d, sizeof d, "gpt2");
    pathf(p, sizeof p, "%s/model.safetensors", d);
    copy_file(st, p, 0);
    write_config(d, "\"LlamaForCausalLM\"", "\"GPT2LMHeadModel\"");
    expect_load_err(d, CQ_ENOTSUP, "GPT2LMHeadModel", NULL);

    /* a tensor shape that disagrees with the config */
    tmp_dir(d, sizeof d, "shape");
    pathf(p, sizeof p, "%s/model.safetensors", d);
    copy_file(st, p, 0);
    write_config(d, "\"intermediate_size\": 88", "\"intermediate_size\": 80");
    expect_load_err(d, CQ_EBADMSG, "model.layers.0.mlp.gate_proj.weight", "[88, 32]");
    /* vocab too: the embedding is checked first */
    write_config(d, "\"vocab_size\": 67", "\"vocab_size\": 68");
    expect_load_err(d, CQ_EBADMSG, "model.embed_tokens.weight", "shape");

    /* a missing tensor */
    tmp_dir(d, sizeof d, "missing");
    write_config(d, NULL, NULL);
    pathf(p, sizeof p, "%s/model.safetensors", d);
    write_st_variant(p, "model.layers.1.mlp.up_proj.weight", NULL);
    expect_load_err(d, CQ_EBADMSG, "model.layers.1.mlp.up_proj.weight", "missing");
    /* lm_head missing while tie_word_embeddings is false */
    write_st_variant(p, "lm_head.weight", NULL);
    expect_load_err(d, CQ_EBADMSG, "lm_head.weight", "tie_word_embeddings");
    /* the same file loads once the config says tied */
    write_config(d, "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true");
    cq_llama *m = load_ok(d);
    assert_true(m->lm_head == m->tok_emb);
    cq_llama_destroy(&m);

    /* unsupported dtype: an I64 tensor where a weight should be */
    tmp_dir(d, sizeof d, "dtype");
    write_config(d, NULL, NULL);
    pathf(p, sizeof p, "%s/model.safetensors", d);
    write_st_variant(p, NULL, "model.layers.0.self_attn.v_proj.weight");
    expect_load_err(d, CQ_ENOTSUP, "model.layers.0.self_attn.v_proj.weight", "I64");
    /* the control: the hand-written file without changes loads */
    write_st_variant(p, NULL, NULL);
    m = load_ok(d);
    cq_llama_destroy(&m);

    /* truncated model.safetensors: the last bytes cut, and the header cut */
    tmp_dir(d, sizeof d, "trunc");
    write_config(d, NULL, NULL);
    pathf(p, sizeof p, "%s/model.safetensors", d);
    size_t stsize;
    free(read_all(st, &stsize));
    static const size_t cuts[] = { 1, 100, 4096 };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        copy_file(st, p, cuts[i]);
        expect_load_err(d, CQ_EBADMSG, "model.safetensors", NULL);
    }
    copy_file(st, p, stsize - 20);
    expect_load_err(d, CQ_EBADMSG, "model.safetensors", NULL);

    /* GGUF: another architecture, a missing tensor, truncations */
    m = load_ok(FIX("untied"));
    write_gguf(m, tmp_path(p, sizeof p, "gpt2.gguf"), CQ_GGML_F32, "gpt2", NULL);
    expect_load_err(p, CQ_ENOTSUP, "general.architecture", "llama");
    write_gguf(m, tmp_path(p, sizeof p, "missing.gguf"), CQ_GGML_F32, "llama", "model.layers.1.mlp.down_proj.weight");
    expect_load_err(p, CQ_ENOENT, "blk.1.ffn_down.weight", NULL);
    write_gguf(m, tmp_path(p, sizeof p, "good.gguf"), CQ_GGML_F16, "llama", NULL);
    cq_llama_destroy(&m);
    size_t gsize;
    free(read_all(p, &gsize));
    char t[1024];
    static const size_t gcuts[] = { 1, 1000 };
    for (size_t i = 0; i < sizeof gcuts / sizeof gcuts[0]; i++) {
        copy_file(p, tmp_path(t, sizeof t, "trunc.gguf"), gcuts[i]);
        expect_load_err(t, CQ_EBADMSG, "trunc.gguf", NULL);
    }
    copy_file(p, t, gsize - 100); /* inside the metadata */
    expect_load_err(t, CQ_EBADMSG, "trunc.gguf", NULL);
    /* not a GGUF at all */
    write_bytes(t, "hello, world", 12);
    expect_load_err(t, CQ_EBADMSG, "trunc.gguf", NULL);
}

/* A sharded HF directory (model.safetensors.index.json + two shards, as
 * large checkpoints come) with an extra tensor older checkpoints carry
 * (rotary_emb.inv_freq, not a parameter): loads to the same model. */
static void test_sharded_dir(void **state)
{
    (void)state;
    static const char *const shard[2] = { "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors" };
    char d[1024], p[1024];
    tmp_dir(d, sizeof d, "sharded");
    write_config(d, NULL, NULL);
    cq_st_file *f = NULL;
    assert_int_equal(cq_st_open(&f, FIX("untied/model.safetensors")), 0);
    cq_st_writer *w[2] = { NULL, NULL };
    assert_int_equal(cq_st_writer_create(&w[0]), 0);
    assert_int_equal(cq_st_writer_create(&w[1]), 0);
    size_t cap = 1 << 15, len = 0, total = 0, nt = cq_st_count(f);
    char *idx = malloc(cap);
    assert_non_null(idx);
    len += (size_t)snprintf(idx, cap, "{\"weight_map\": {");
    for (size_t i = 0; i < nt; i++) {
        const cq_st_tensor *t = cq_st_tensor_at(f, i);
        int k = i >= nt / 2;
        assert_int_equal(cq_st_writer_add(w[k], t->name, t->dtype, t->ndim, t->shape, t->data), 0);
        len += (size_t)snprintf(idx + len, cap - len, "%s\"%s\": \"%s\"", i ? ", " : "", t->name, shard[k]);
        total += t->nbytes;
        assert_true(len < cap - 256);
    }
    static const float inv_freq[4] = { 1.0f, 0.1f, 0.01f, 0.001f };
    const int64_t four = 4;
    const char *extra = "model.layers.0.self_attn.rotary_emb.inv_freq";
    assert_int_equal(cq_st_writer_add(w[1], extra, CQ_F32, 1, &four, inv_freq), 0);
    len += (size_t)snprintf(idx + len, cap - len, ", \"%s\": \"%s\"}, \"metadata\": {\"total_size\": %zu}}\n",
                            extra, shard[1], total + sizeof inv_freq);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(cq_st_writer_add_metadata(w[k], "format", "pt"), 0);
        assert_int_equal(cq_st_writer_write(w[k], pathf(p, sizeof p, "%s/%s", d, shard[k])), 0);
        cq_st_writer_destroy(&w[k]);
    }
    write_bytes(pathf(p, sizeof p, "%s/model.safetensors.index.json", d), idx, len);
    free(idx);
    cq_st_close(&f);

    cq_llama *ref = load_ok(FIX("untied"));
    golden g;
    golden_open(&g, "untied");
    float *lg = run_logits(ref, g.ids, g.B, g.T, 0, false);
    struct variant_logits r = check_file_model("sharded untied", d, ref, lg, &g, CQ_F32);
    assert_true(r.e_ref <= TOL_SAME && r.e_golden <= TOL_LOGITS);
    free(lg);
    golden_close(&g);
    cq_llama_destroy(&ref);
}

/* forward on bad ids: refused, and one of the logged errors says why */
static void expect_forward_err(cq_llama *m, cq_tensor *ids, const char *sub)
{
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, g_be), 0);
    clear_err();
    assert_null(cq_llama_forward(c, m, ids, 0, false));
    assert_true(g_nerr > 0);
    if (!strstr(g_all_err, sub)) fail_msg("messages \"%s\" lack \"%s\"", g_all_err, sub);
    printf("  rejected: %s", g_all_err);
    cq_ctx_destroy(&c);
}

static void test_bad_forward(void **state)
{
    (void)state;
    cq_llama *m = load_ok(FIX("untied"));
    int64_t V = m->cfg.vocab, S = m->cfg.max_seq;
    int32_t ids[3] = { 1, (int32_t)V, 2 };
    cq_tensor *t = i32_tensor(ids, 1, 3);
    expect_forward_err(m, t, "token id 67 out of range");
    cq_tensor_free(&t);
    ids[1] = -1;
    t = i32_tensor(ids, 1, 3);
    expect_forward_err(m, t, "token id -1 out of range");
    cq_tensor_free(&t);
    /* longer than max_position_embeddings */
    int32_t *longer = calloc((size_t)S + 1, sizeof *longer);
    assert_non_null(longer);
    t = i32_tensor(longer, 1, S + 1);
    expect_forward_err(m, t, "context");
    cq_tensor_free(&t);
    free(longer);
    /* ids not i32 [B, T] */
    int64_t ne[2] = { 1, 3 };
    assert_int_equal(cq_tensor_new(&t, g_be, CQ_F32, 2, ne), 0);
    expect_forward_err(m, t, "i32");
    cq_tensor_free(&t);
    /* the model still works afterwards: row 0 of the golden */
    golden g;
    golden_open(&g, "untied");
    float *lg = run_logits(m, g.ids, 1, g.T, 0, false);
    assert_true(nerr_fd(lg, g.logits, (size_t)(g.T * g.V)) <= TOL_LOGITS);
    free(lg);
    golden_close(&g);
    cq_llama_destroy(&m);
}

/* ------------------------------------------------------------ a few training steps */
static void test_train_steps(void **state)
{
    (void)state;
    cq_llama_config cfg = {
        .vocab = 29, .dim = 16, .ffn = 40, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 4,
        .max_seq = 16, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = false, .bos = -1, .eos = -1,
    };
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_create(&m, &cfg, g_be, 7), 0);
    assert_int_equal(cq_llama_enable_grad(m), 0);
    enum { B = 2, T = 12, STEPS = 30 };
    int32_t ids[B * T], tg[B * T];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) ids[b * T + t] = (int32_t)((b * 5 + t * (b + 2)) % cfg.vocab);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) tg[b * T + t] = t + 1 < T ? ids[b * T + t + 1] : -1;
    cq_tensor **mom = calloc((size_t)m->n_params * 2, sizeof *mom);
    assert_non_null(mom);
    for (int i = 0; i < m->n_params; i++) {
        const cq_tensor *p = m->params[i];
        assert_int_equal(cq_tensor_new(&mom[2 * i], g_be, CQ_F32, p->ndim, p->ne), 0);
        assert_int_equal(cq_tensor_new(&mom[2 * i + 1], g_be, CQ_F32, p->ndim, p->ne), 0);
    }
    float *before = param_f32(m->params[1]);
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, g_be), 0);
    cq_tensor *tid = i32_tensor(ids, B, T), *ttg = i32_tensor(tg, B, T);
    float first = 0, last = 0;
    for (int s = 0; s < STEPS; s++) {
        cq_ctx_reset(c);
        assert_int_equal(cq_llama_zero_grad(m), 0);
        cq_tensor *loss = cq_llama_loss(c, m, tid, ttg, 1.0f / (float)(B * (T - 1)));
        assert_non_null(loss);
        float lv;
        assert_int_equal(cq_tensor_get_f32(loss, &lv), 0);
        assert_true(isfinite(lv));
        if (s == 0) first = lv;
        last = lv;
        assert_int_equal(cq_backward(c, loss), 0);
        cq_adamw_params ap = { .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.01f,
                               .step = s + 1 };
        for (int i = 0; i < m->n_params; i++)
            assert_int_equal(cq_adamw_step(c, m->params[i], mom[2 * i], mom[2 * i + 1], m->params[i]->grad, &ap), 0);
    }
    printf("  training: loss %.4f -> %.4f after %d AdamW steps (ln V = %.4f)\n", first, last, STEPS - 1,
           log((double)cfg.vocab));
    /* random init at std 0.02 predicts ~uniformly */
    assert_true(fabs(first - log((double)cfg.vocab)) < 0.05);
    assert_true(last < 0.5f * first);
    float *after = param_f32(m->params[1]);
    assert_true(memcmp(before, after, (size_t)cq_tensor_numel(m->params[1]) * sizeof(float)) != 0);
    free(before);
    free(after);
    cq_tensor_free(&tid);
    cq_tensor_free(&ttg);
    cq_ctx_destroy(&c);
    for (int i = 0; i < 2 * m->n_params; i++) cq_tensor_free(&mom[i]);
    free(mom);
    cq_llama_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_untied), cmocka_unit_test(test_golden_tied),
        cmocka_unit_test(test_golden_headdim),
        cmocka_unit_test(test_golden_llama3),
        cmocka_unit_test(test_gguf_and_save), cmocka_unit_test(test_sharded_dir),
        cmocka_unit_test(test_kv_cache),
        cmocka_unit_test(test_bad_inputs),    cmocka_unit_test(test_bad_forward),
        cmocka_unit_test(test_train_steps),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
