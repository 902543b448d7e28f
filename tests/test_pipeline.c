/* Tests of the CherryQ pipeline on a tiny LLaMA trained here on a synthetic
 * Markov "language": impact against per-sample gradients computed directly,
 * packed forward against the dequantized dense forward, the quantized
 * directory round trip and export, GPTQ against RTN at model level, the
 * end-to-end train -> impact -> CherryQ QAT -> eval run, bad inputs, and
 * well-formed SVG figures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cq_io.h"
#include "pipeline.h"
#include "qmm.h"
#include "ref.h"
#include "safetensors.h"
#include "train.h"

static cq_backend *be;
static char root[256];             /* scratch directory */
static char fp_dir[300];           /* the trained tiny model */
static int32_t *corpus;
static size_t n_corpus;

/* ------------------------------------------------------------ helpers */

static uint64_t rs = 12345;
static uint64_t rnd(void)
{
    uint64_t z = (rs += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static const cq_llama_config tiny = {
    .vocab = 64, .dim = 64, .ffn = 128, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
    .max_seq = 64, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = false, .bos = -1, .eos = -1,
};

/* A second-order Markov chain with peaked transitions: learnable structure. */
static void make_corpus(size_t n)
{
    corpus = malloc(n * sizeof *corpus);
    assert_non_null(corpus);
    int32_t a = 1, b = 2;
    for (size_t i = 0; i < n; i++) {
        uint64_t u = rnd();
        int32_t nx;
        if (u % 10 < 6) nx = (int32_t)((b * 5 + 1) % 64);
        else if (u % 10 < 9) nx = (int32_t)((a * 7 + b * 3 + 5) % 64);
        else nx = (int32_t)((u >> 8) % 64);
        corpus[i] = nx;
        a = b;
        b = nx;
    }
    n_corpus = n;
}

static cq_llama *load_fp(void)
{
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_load(&m, fp_dir, be), 0);
    return m;
}

static float *logits_of(cq_llama *m, const int32_t *ids, int64_t T)
{
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, be), 0);
    cq_ctx_set_grad(c, false);
    int64_t ne[2] = { 1, T };
    cq_tensor *x = cq_new(c, CQ_I32, 2, ne);
    assert_non_null(x);
    assert_int_equal(cq_tensor_set(x, ids, (size_t)T * 4), 0);
    cq_tensor *lg = cq_llama_forward(c, m, x, 0, false);
    assert_non_null(lg);
    float *out = malloc((size_t)(T * m->cfg.vocab) * sizeof(float));
    assert_int_equal(cq_tensor_get_f32(lg, out), 0);
    cq_ctx_destroy(&c);
    return out;
}

static double max_rel_diff(const float *a, const float *b, int64_t n)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i]));
        worst = d > worst ? d : worst;
    }
    return worst;
}

static cq_qspec spec(int bits, int group, bool cherries, cq_sel_criterion crit, int64_t k)
{
    cq_qspec s;
    memset(&s, 0, sizeof s);
    s.bits = bits;
    s.group = group;
    s.cherries = cherries;
    s.sel.criterion = crit;
    s.sel.k_rule = CQ_K_EXPLICIT;
    s.sel.k = k;
    s.sel.seed = 7;
    return s;
}

/* ------------------------------------------------------------ setup */

static int group_setup(void **state)
{
    (void)state;
    cq_set_num_threads(2);
    if (cq_backend_create(&be, "cpu", -1)) return -1;
    snprintf(root, sizeof root, "/tmp/cq_test_pipeline.%ld", (long)getpid());
    char cmd[512];
    int k = snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", root, root);
    if (k < 0 || (size_t)k >= sizeof cmd || system(cmd)) return -1;
    snprintf(fp_dir, sizeof fp_dir, "%s/fp", root);
    make_corpus(40000);
    cq_llama *m = NULL;
    if (cq_llama_create(&m, &tiny, be, 1)) return -1;
    cq_train_opts o;
    cq_train_opts_default(&o);
    o.steps = 150;
    o.batch = 8;
    o.seq = 32;
    o.lr = 1e-2f;
    o.warmup = 10;
    o.weight_decay = 0;
    o.seed = 3;
    cq_trainer *t = NULL;
    int r = cq_trainer_create(&t, m, &o, corpus, 36000, corpus + 36000, 4000);
    if (!r) r = cq_trainer_run(t);
    double v = 0;
    if (!r) r = cq_trainer_eval(t, &v);
    cq_trainer_destroy(&t);
    fprintf(stderr, "tiny model trained: held-out NLL %.3f (uniform %.3f)\n", v, log(64.0));
    if (!r) r = cq_llama_save(m, fp_dir, CQ_F32, NULL);
    cq_llama_destroy(&m);
    return r || !(v < 3.0) ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd)) return -1;
    free(corpus);
    cq_backend_destroy(&be);
    return 0;
}

/* ------------------------------------------------------------ calibration */

static void test_calib(void **state)
{
    (void)state;
    cq_calib a, b, c;
    assert_int_equal(cq_calib_sample(&a, corpus, 36000, 8, 32, 1), 0);
    assert_int_equal(cq_calib_sample(&b, corpus, 36000, 8, 32, 1), 0);
    assert_int_equal(cq_calib_sample(&c, corpus, 36000, 8, 32, 2), 0);
    assert_memory_equal(a.ids, b.ids, 8 * 33 * 4);
    assert_true(memcmp(a.ids, c.ids, 8 * 33 * 4) != 0);
    /* windows are pieces of the stream */
    for (int w = 0; w < 8; w++) {
        int found = 0;
        for (size_t s = 0; s + 33 <= 36000 && !found; s += 33) found = !memcmp(corpus + s, a.ids + w * 33, 33 * 4);
        assert_true(found);
    }
    cq_calib_free(&a);
    cq_calib_free(&b);
    cq_calib_free(&c);
    assert_int_not_equal(cq_calib_sample(&a, corpus, 10, 4, 32, 1), 0);
}

/* ------------------------------------------------------------ impact */

static void test_impact_direct(void **state)
{
    (void)state;
    cq_llama *m = load_fp();
    cq_calib cal;
    assert_int_equal(cq_calib_sample(&cal, corpus, 36000, 5, 24, 11), 0);
    cq_impact imp;
    assert_int_equal(cq_impact_compute(&imp, m, &cal, NULL, NULL), 0);
    assert_int_equal(imp.n, 2 + 2 * 7); /* embeddings, lm_head, 14 linears */
    /* direct: per-sample gradients of the summed NLL, squared, averaged */
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, be), 0);
    double **acc = calloc((size_t)imp.n, sizeof *acc), **gsum = calloc((size_t)imp.n, sizeof *gsum);
    for (int k = 0; k < imp.n; k++) {
        int64_t n = imp.shape[k][0] * imp.shape[k][1];
        acc[k] = calloc((size_t)n, sizeof(double));
        gsum[k] = calloc((size_t)n, sizeof(double));
    }
    for (int64_t w = 0; w < cal.n; w++) {
        cq_ctx_reset(c);
        assert_int_equal(cq_llama_zero_grad(m), 0);
        int64_t ne[2] = { 1, 24 };
        cq_tensor *ids = cq_new(c, CQ_I32, 2, ne), *tg = cq_new(c, CQ_I32, 2, ne);
        assert_int_equal(cq_tensor_set(ids, cal.ids + w * 25, 24 * 4), 0);
        assert_int_equal(cq_tensor_set(tg, cal.ids + w * 25 + 1, 24 * 4), 0);
        cq_tensor *loss = cq_llama_loss(c, m, ids, tg, 1.0f);
        assert_non_null(loss);
        assert_int_equal(cq_backward(c, loss), 0);
        for (int k = 0; k < imp.n; k++) {
            cq_tensor *p = cq_llama_param(m, imp.names[k]);
            assert_non_null(p);
            int64_t n = cq_tensor_numel(p);
            float *g = malloc((size_t)n * sizeof(float));
            assert_int_equal(cq_tensor_get_f32(p->grad, g), 0);
            for (int64_t j = 0; j < n; j++) {
                acc[k][j] += (double)g[j] * g[j];
                gsum[k][j] += g[j];
            }
            free(g);
        }
    }
    double worst = 0, batch_gap = 0;
    for (int k = 0; k < imp.n; k++) {
        int64_t n = imp.shape[k][0] * imp.shape[k][1];
        double mx = 0;
        for (int64_t j = 0; j < n; j++) mx = fmax(mx, acc[k][j] / cal.n);
        assert_true(mx > 0);
        for (int64_t j = 0; j < n; j++) {
            double want = acc[k][j] / cal.n;
            double d = fabs(imp.F[k][j] - want) / (want + 1e-6 * mx);
            worst = fmax(worst, d);
            /* the square of the batch-mean gradient is a different thing */
            double bg = gsum[k][j] / cal.n;
            batch_gap = fmax(batch_gap, fabs(bg * bg - want) / (want + 1e-6 * mx));
        }
        free(acc[k]);
        free(gsum[k]);
    }
    free(acc);
    free(gsum);
    fprintf(stderr, "impact vs direct per-sample mean: max rel err %.2e (batch-gradient square differs by %.2f)\n",
            worst, batch_gap);
    assert_true(worst < 1e-4);
    assert_true(batch_gap > 0.1);
    /* save/load round trip with a check against the model */
    char path[400];
    snprintf(path, sizeof path, "%s/impact.safetensors", root);
    assert_int_equal(cq_impact_save(&imp, path), 0);
    cq_impact back;
    assert_int_equal(cq_impact_load(&back, path, m), 0);
    assert_int_equal(back.n, imp.n);
    assert_int_equal(back.n_samples, 5);
    for (int k = 0; k < imp.n; k++)
        assert_memory_equal(back.F[k], imp.F[k], (size_t)(imp.shape[k][0] * imp.shape[k][1]) * 4);
    cq_impact_free(&back);
    cq_impact_free(&imp);
    cq_calib_free(&cal);
    cq_ctx_destroy(&c);
    cq_llama_destroy(&m);
}

/* ------------------------------------------------------------ packed forward */

static void quantize_rtn(cq_llama *m, const cq_qspec *s, cq_qpacked *q)
{
    cq_qplan p;
    assert_int_equal(cq_qplan_make(&p, m, NULL, s), 0);
    assert_int_equal(cq_quantize_rtn(q, m, &p, s), 0);
    cq_qplan_free(&p);
}

static void test_packed_forward(void **state)
{
    (void)state;
    const int grids[][2] = { { 3, 32 }, { 4, 64 }, { 2, 0 }, { 8, 32 } };
    for (int gi = 0; gi < 4; gi++) {
        cq_llama *a = load_fp(), *b = load_fp();
        cq_qspec s = spec(grids[gi][0], grids[gi][1], true, CQ_SEL_MAGNITUDE, 2);
        cq_qpacked q;
        quantize_rtn(a, &s, &q);
        assert_true(q.w[0].nnz == 2 * q.w[0].out);
        assert_int_equal(cq_qmodel_set_dense(a, &q), 0);
        assert_int_equal(cq_qmodel_attach(b, &q), 0);
        assert_null(b->layers[0].lin[0]);
        assert_non_null(b->layers[0].q[0].packed);
        for (int T = 3; T <= 40; T += 37) { /* GEMV path and GEMM path */
            float *la = logits_of(a, corpus + 100, T), *lb = logits_of(b, corpus + 100, T);
            double d = max_rel_diff(lb, la, T * 64);
            fprintf(stderr, "packed vs dequantized dense: %d-bit g%d T=%d: max rel diff %.2e\n", grids[gi][0],
                    grids[gi][1], T, d);
            assert_true(d < 2e-5);
            free(la);
            free(lb);
        }
        cq_qpacked_free(&q);
        cq_llama_destroy(&a);
        cq_llama_destroy(&b);
    }
}

/* The CPU backend's QMATMUL (cpu/qmm.c kernels) against the scalar oracle. */
static void test_qmatmul_kernel(void **state)
{
    (void)state;
    cq_llama *m = load_fp();
    cq_qspec s = spec(3, 64, true, CQ_SEL_MAGNITUDE, 3);
    cq_qpacked q;
    quantize_rtn(m, &s, &q);
    assert_int_equal(cq_qmodel_attach(m, &q), 0);
    const cq_qlinear *ql = m->layers[1].q[6].packed; /* down_proj: in = 128 */
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, be), 0);
    for (int64_t N = 1; N <= 65; N += 64) {
        int64_t ne[2] = { N, ql->in };
        cq_tensor *x = cq_new(c, CQ_F32, 2, ne);
        float *xh = malloc((size_t)(N * ql->in) * 4), *yr = malloc((size_t)(N * ql->out) * 4),
              *yk = malloc((size_t)(N * ql->out) * 4);
        for (int64_t i = 0; i < N * ql->in; i++) xh[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5);
        assert_int_equal(cq_tensor_set_f32(x, xh), 0);
        cq_tensor *y = cq_qlinear_fwd(c, x, ql);
        assert_non_null(y);
        assert_int_equal(cq_tensor_get_f32(y, yk), 0);
        cq_qmm_w w = { ql->out, ql->in, ql->bits, ql->group, cq_tensor_host(ql->codes), cq_tensor_host(ql->scales),
                       cq_tensor_host(ql->rowptr), cq_tensor_host(ql->cols), cq_tensor_host(ql->delta) };
        assert_int_equal(cq_qmm_gemm_ref(&w, xh, N, yr), 0);
        double d = max_rel_diff(yk, yr, N * ql->out);
        assert_true(d < 1e-5);
        /* and it is the fast kernel (bit for bit cq_qmm_gemm), not the
         * scalar reference, that the backend ran */
        float *yf = malloc((size_t)(N * ql->out) * 4);
        assert_int_equal(cq_qmm_gemm(&w, xh, N, yf), 0);
        assert_memory_equal(yk, yf, (size_t)(N * ql->out) * 4);
        assert_true(memcmp(yf, yr, (size_t)(N * ql->out) * 4) != 0);
        free(yf);
        free(xh);
        free(yr);
        free(yk);
    }
    cq_ctx_destroy(&c);
    cq_qpacked_free(&q);
    cq_llama_destroy(&m);
}

/* A packed model with LLaMA-like row lengths (>= CQ_QMM_Q8_MIN_IN columns)
 * on the CPU backend, int8 GEMV on (this file runs with CQ_QMM_EXACT=1;
 * the test switches exact mode off and back): every linear gets the
 * interleaved codes (cq_qlinear.layout CQ_QCODES_IL4, QMATMUL's i[3]), and
 * QMATMUL on 1 token runs the int8 GEMV on them. Checked per linear against
 * the row-layout codes of the packed file (never read back from the model):
 *   - the codes tensor is not the row layout, and unpacks to it;
 *   - the linear has cherry lanes (cpu/qmm.h) that cq_qmm_lanes_check
 *     accepts for the file's cherries, and QMATMUL passes them (src6);
 *   - QMATMUL within 1e-5 * mag of cq_qmm_gemv_q8_ref (the int8 oracle) and
 *     within the derived bound sum_j |dequant(u_j)| sx_b(j) / 2 + the
 *     cherries' sum |h(delta)| sx_b(col) / 2 + |delta - h(delta)| |x_col|
 *     + 1e-5 * mag of the exact product, and farther than 1e-6 * mag from it
 *     on most rows (the int8 path ran, not the exact one);
 *   - the scalar reference backend reads the same op (i[3] = IL4) exactly;
 *   - a layout other than 0 / 1 is refused by the validator, and so are
 *     lanes with the row layout;
 * then the model: logits of 1 token close to the dequantized dense model
 * with int8 activations (relative L2 < 5e-2; 1e-2 seen) and not equal to
 * it, and within 2e-5 of it in exact mode (1 and 9 tokens: the interleaved
 * tiles path). A QMATMUL that read the interleaved bytes as rows fails the
 * per-linear checks (tried: row 0 of linear 0 off by 3.5x the bound). */
static void test_interleaved_model(void **state)
{
    (void)state;
    const int old_exact = cq_qmm_get_exact();
    cq_qmm_set_exact(0);
    const cq_llama_config cfg = {
        .vocab = 96, .dim = 512, .ffn = 1024, .n_layers = 1, .n_heads = 8, .n_kv_heads = 4, .head_dim = 64,
        .max_seq = 32, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = false, .bos = -1, .eos = -1,
    };
    cq_llama *a = NULL, *b = NULL;
    assert_int_equal(cq_llama_create(&a, &cfg, be, 77), 0);
    assert_int_equal(cq_llama_create(&b, &cfg, be, 77), 0);
    cq_qspec s = spec(3, 128, true, CQ_SEL_MAGNITUDE, 2);
    cq_qpacked q;
    quantize_rtn(a, &s, &q);
    assert_int_equal(cq_qmodel_set_dense(a, &q), 0);
    assert_int_equal(cq_qmodel_attach(b, &q), 0);
    const int vnni = cq_qmm_isa_supported(CQ_ISA_AVX512VNNI) && cq_qmm_get_isa() == CQ_ISA_AVX512VNNI;
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, be), 0);
    for (int i = 0; i < CQ_LLAMA_N_LINEAR; i++) {
        const cq_qweight *qw = &q.w[i];
        const cq_qlinear *ql = b->layers[0].q[i].packed;
        assert_non_null(ql);
        assert_true(ql->in >= CQ_QMM_Q8_MIN_IN && qw->nnz == 2 * qw->out);
        assert_int_equal(ql->layout, vnni ? CQ_QCODES_IL4 : CQ_QCODES_ROWS);
        if (!vnni) continue; /* no int8 GEMV on this CPU: the row layout, tested elsewhere */
        const int64_t out = ql->out, in = ql->in, rb = cq_qmm_row_bytes(ql->bits, in);
        const uint8_t *ic = cq_tensor_host(ql->codes);
        /* the row-layout weight of the file (delta: the model's, computed at load) */
        cq_qmm_w rw = { out, in, qw->bits, qw->group, qw->codes, qw->scales, qw->rowptr, qw->cols,
                        cq_tensor_host(ql->delta) };
        assert_true(memcmp(ic, qw->codes, (size_t)(out * rb)) != 0);
        assert_non_null(ql->lanes);
        assert_int_equal(cq_qmm_lanes_check(&rw, cq_tensor_host(ql->lanes), cq_tensor_nbytes(ql->lanes)), 0);
        cq_qmm_il il = { .w = rw };
        il.w.codes = ic;
        uint8_t *un = malloc((size_t)(out * rb));
        assert_int_equal(cq_qmm_il_unpack_rows(&il, 0, out, un), 0);
        assert_memory_equal(un, qw->codes, (size_t)(out * rb));
        free(un);

        int64_t ne[2] = { 1, in };
        cq_tensor *x = cq_new(c, CQ_F32, 2, ne);
        float *xh = malloc((size_t)in * 4), *y = malloc((size_t)out * 4), *y8 = malloc((size_t)out * 4),
              *ye = malloc((size_t)out * 4), *yr = malloc((size_t)out * 4), *wd = malloc((size_t)(out * in) * 4),
              *sx = malloc((size_t)(in / CQ_QMM_Q8_BLOCK + 1) * 4);
        int8_t *xq = malloc((size_t)in);
        for (int64_t j = 0; j < in; j++) xh[j] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5);
        assert_int_equal(cq_tensor_set_f32(x, xh), 0);
        cq_tensor *yt = cq_qlinear_fwd(c, x, ql);
        assert_non_null(yt);
        assert_int_equal(cq_tensor_get_f32(yt, y), 0);
        assert_int_equal(cq_qmm_gemv_q8_ref(&rw, xh, y8), 0);
        assert_int_equal(cq_qmm_gemv_ref(&rw, xh, ye), 0);
        cq_qmm_w cw = rw; /* codes only, for the bound */
        cw.rowptr = NULL;
        assert_int_equal(cq_qmm_dequant_rows(&cw, 0, out, wd), 0);
        cq_qmm_quant_x8(xh, in, xq, sx);
        const float cabs = 3.5f; /* |qmin + 0.5| of 3-bit */
        const int64_t ng = cq_qmm_ngroups(qw->group, in), g = qw->group;
        /* the reference backend on the same op (interleaved codes, i[3]) */
        int64_t yne[2] = { 1, out };
        cq_tensor *yo = cq_new(c, CQ_F32, 2, yne);
        cq_op op = { .type = CQ_OP_QMATMUL };
        op.src[0] = x;
        op.src[1] = ql->codes;
        op.src[2] = ql->scales;
        op.src[3] = ql->rowptr;
        op.src[4] = ql->cols;
        op.src[5] = ql->delta;
        op.dst[0] = yo;
        op.i[0] = ql->bits;
        op.i[1] = ql->group;
        op.i[2] = in;
        op.i[3] = CQ_QCODES_IL4;
        assert_int_equal(cq_op_validate(&op), 0);
        assert_int_equal(cq_ref_compute(&op), 0);
        assert_int_equal(cq_tensor_get_f32(yo, yr), 0);
        op.src[6] = ql->lanes;   /* the reference ignores the lanes: still exact */
        assert_int_equal(cq_op_validate(&op), 0);
        assert_int_equal(cq_ref_compute(&op), 0);
        float *yr2 = malloc((size_t)out * 4);
        assert_int_equal(cq_tensor_get_f32(yo, yr2), 0);
        assert_memory_equal(yr, yr2, (size_t)out * 4);
        free(yr2);
        op.i[3] = CQ_QCODES_ROWS;   /* lanes belong to interleaved codes */
        assert_int_equal(cq_op_validate(&op), CQ_EINVAL);
        op.src[6] = NULL;
        op.i[3] = 2;
        assert_int_equal(cq_op_validate(&op), CQ_EINVAL);
        int64_t far = 0;
        for (int64_t r = 0; r < out; r++) {
            double mag = 0, bound = 0;
            for (int64_t j = 0; j < in; j++) {
                const double w = wd[r * in + j], sg = cq_f16_to_f32(qw->scales[r * ng + j / g]);
                mag += (fabs(w) + 2 * cabs * sg) * fabs(xh[j]);
                bound += fabs(w) * sx[j / CQ_QMM_Q8_BLOCK] / 2;
            }
            for (int32_t k = qw->rowptr[r]; k < qw->rowptr[r + 1]; k++) {
                const float d = rw.delta[k], h = cq_f16_to_f32(cq_f32_to_f16(d));
                mag += fabs(d * xh[qw->cols[k]]);
                bound += fabs(h) * sx[qw->cols[k] / CQ_QMM_Q8_BLOCK] / 2 + fabs(d - h) * fabs(xh[qw->cols[k]]);
            }
            const double tol = 1e-5 * mag + 1e-30;
            if (fabs((double)y[r] - y8[r]) > tol || fabs((double)y[r] - ye[r]) > bound + tol ||
                fabs((double)yr[r] - ye[r]) > tol)
                fail_msg("linear %d row %lld: qmatmul %.9g int8 ref %.9g exact %.9g (bound %.3g) ref op %.9g", i,
                         (long long)r, y[r], y8[r], ye[r], bound, yr[r]);
            far += fabs((double)y[r] - ye[r]) > 1e-6 * mag;
        }
        assert_true(far > out / 2);
        free(xh);
        free(y);
        free(y8);
        free(ye);
        free(yr);
        free(wd);
        free(sx);
        free(xq);
    }
    cq_ctx_destroy(&c);
    if (vnni) {
        const int32_t *ids = corpus + 200;
        for (int mode = 0; mode < 2; mode++) {
            cq_qmm_set_exact(mode);
            for (int64_t T = 1; T <= (mode ? 9 : 1); T += 8) {
                float *la = logits_of(a, ids, T), *lb = logits_of(b, ids, T);
                double d2 = 0, n2 = 0;
                for (int64_t k = 0; k < T * cfg.vocab; k++) {
                    d2 += ((double)lb[k] - la[k]) * ((double)lb[k] - la[k]);
                    n2 += (double)la[k] * la[k];
                }
                const double rel = sqrt(d2 / n2), mx = max_rel_diff(lb, la, T * cfg.vocab);
                fprintf(stderr, "interleaved model, %s GEMV, T=%lld: logits rel L2 %.2e, max rel diff %.2e\n",
                        mode ? "exact" : "int8", (long long)T, rel, mx);
                if (mode)
                    assert_true(mx < 2e-5);
                else
                    assert_true(rel < 5e-2 && rel > 0);
                free(la);
                free(lb);
            }
        }
    }
    cq_qmm_set_exact(old_exact);
    cq_qpacked_free(&q);
    cq_llama_destroy(&a);
    cq_llama_destroy(&b);
}

/* ------------------------------------------------------------ directory */

static const char *QCFG = "{\"quant_method\": \"cherryq\", \"method\": \"rtn\", \"bits\": %d, \"group_size\": %d, "
                          "\"selection\": \"magnitude\", \"k\": 2, \"format_version\": 1}";

static void save_q(cq_llama *m, cq_qpacked *q, const char *dir, int bits, int group)
{
    char js[512];
    snprintf(js, sizeof js, QCFG, bits, group);
    assert_int_equal(cq_qmodel_save(m, q, dir, js, NULL), 0);
}

static void test_qmodel_roundtrip(void **state)
{
    (void)state;
    cq_llama *m = load_fp();
    /* a LLaMA-3.1-style rope_scaling must survive the quantized directory
     * and the export (the logits below compare against m, which has it) */
    m->cfg.rope_scaling = (cq_rope_scaling){ CQ_ROPE_LLAMA3, 8.0f, 1.0f, 4.0f, 16.0f };
    cq_qspec s = spec(3, 32, true, CQ_SEL_MAGNITUDE, 2);
    cq_qpacked q;
    quantize_rtn(m, &s, &q);
    char dir[400], exp[400], path[500];
    snprintf(dir, sizeof dir, "%s/q3", root);
    save_q(m, &q, dir, 3, 32);
    snprintf(path, sizeof path, "%s.tmp", dir);
    assert_false(cq_file_exists(path));
    assert_true(cq_qmodel_is_quantized(dir));
    /* file contents: names, dtypes, shapes */
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cq_st_file *f = NULL;
    assert_int_equal(cq_st_open(&f, path), 0);
    const cq_st_tensor *t = cq_st_find(f, "model.layers.1.mlp.down_proj.qcodes");
    assert_non_null(t);
    assert_int_equal(t->dtype, CQ_U8);
    assert_int_equal(t->shape[0], 64);
    assert_int_equal(t->shape[1], 48); /* 128 columns * 3 bits / 8 */
    t = cq_st_find(f, "model.layers.1.mlp.down_proj.scales");
    assert_true(t && t->dtype == CQ_F16 && t->shape[1] == 4);
    t = cq_st_find(f, "model.layers.1.mlp.down_proj.cherry_cols");
    assert_true(t && t->dtype == CQ_U16 && t->shape[0] == 128);
    assert_null(cq_st_find(f, "model.layers.1.mlp.down_proj.weight"));
    assert_non_null(cq_st_find(f, "model.embed_tokens.weight"));
    cq_st_close(&f);
    /* reading back gives the same bytes */
    cq_qpacked r;
    int bits, group;
    assert_int_equal(cq_qmodel_read(dir, &r, &bits, &group), 0);
    assert_int_equal(bits, 3);
    assert_int_equal(group, 32);
    for (int64_t k = 0; k < q.n; k++) {
        assert_int_equal(r.w[k].nnz, q.w[k].nnz);
        assert_memory_equal(r.w[k].codes, q.w[k].codes, (size_t)(q.w[k].out * cq_quant_row_bytes(q.w[k].in, 3)));
        assert_memory_equal(r.w[k].vals, q.w[k].vals, (size_t)q.w[k].nnz * 2);
        assert_memory_equal(r.w[k].cols, q.w[k].cols, (size_t)q.w[k].nnz * 2);
    }
    cq_qpacked_free(&r);
    /* loading runs packed and computes what the attached model computes */
    cq_llama *l = NULL;
    assert_int_equal(cq_llama_load(&l, dir, be), 0);
    assert_non_null(l->layers[1].q[6].packed);
    assert_null(l->layers[1].lin[6]);
    assert_memory_equal(&l->cfg.rope_scaling, &m->cfg.rope_scaling, sizeof m->cfg.rope_scaling);
    assert_int_equal(cq_qmodel_attach(m, &q), 0);
    float *la = logits_of(m, corpus + 7, 20), *lb = logits_of(l, corpus + 7, 20);
    assert_memory_equal(la, lb, 20 * 64 * 4);
    /* export --dequantize: a plain HF directory computing the same model */
    snprintf(exp, sizeof exp, "%s/q3_export", root);
    assert_int_equal(cq_qmodel_export_dense(dir, exp, CQ_F32, be), 0);
    assert_false(cq_qmodel_is_quantized(exp));
    cq_llama *e = NULL;
    assert_int_equal(cq_llama_load(&e, exp, be), 0);
    assert_non_null(e->layers[1].lin[6]);
    assert_memory_equal(&e->cfg.rope_scaling, &m->cfg.rope_scaling, sizeof m->cfg.rope_scaling);
    float *le = logits_of(e, corpus + 7, 20);
    assert_true(max_rel_diff(le, la, 20 * 64) < 2e-5);
    assert_int_equal(cq_qmodel_export_dense(dir, exp, CQ_F16, be), 0); /* replaces the previous export */
    cq_llama_destroy(&e);
    assert_int_equal(cq_llama_load(&e, exp, be), 0);
    free(le);
    free(la);
    free(lb);
    cq_llama_destroy(&e);
    cq_llama_destroy(&l);
    cq_qpacked_free(&q);
    cq_llama_destroy(&m);
}

/* ------------------------------------------------------------ GPTQ */

static void test_gptq_vs_rtn(void **state)
{
    (void)state;
    cq_calib cal, held;
    assert_int_equal(cq_calib_sample(&cal, corpus, 36000, 32, 48, 5), 0);
    assert_int_equal(cq_calib_windows(&held, corpus + 36000, 4000, 48, 40), 0);
    cq_qspec s = spec(3, 32, false, CQ_SEL_IMPACT, 0);
    double nll[3];
    for (int method = 0; method < 3; method++) {
        cq_llama *m = load_fp();
        cq_qplan p;
        assert_int_equal(cq_qplan_make(&p, m, NULL, &s), 0);
        cq_qpacked q = { 0 };
        if (method == 1) {
            assert_int_equal(cq_quantize_rtn(&q, m, &p, &s), 0);
            assert_int_equal(cq_qmodel_attach(m, &q), 0);
        } else if (method == 2) {
            assert_int_equal(cq_quantize_gptq(&q, m, &p, &s, &cal, NULL, NULL, NULL), 0);
            /* the dense weights GPTQ leaves in m are exactly the packed ones */
            float *W = malloc(64 * 128 * 4), *D = malloc(64 * 128 * 4);
            assert_int_equal(cq_tensor_get_f32(m->layers[1].lin[6], W), 0);
            assert_int_equal(cq_qunpack(&q.w[13], D), 0);
            assert_memory_equal(W, D, 64 * 128 * 4);
            free(W);
            free(D);
            assert_int_equal(cq_qmodel_attach(m, &q), 0);
        }
        assert_int_equal(cq_calib_nll(m, &cal, &nll[method], NULL, NULL), 0);
        double h;
        assert_int_equal(cq_calib_nll(m, &held, &h, NULL, NULL), 0);
        fprintf(stderr, "%s: calibration NLL %.4f, held-out NLL %.4f\n",
                method == 0 ? "fp32" : method == 1 ? "rtn 3-bit g32" : "gptq 3-bit g32", nll[method], h);
        cq_qpacked_free(&q);
        cq_qplan_free(&p);
        cq_llama_destroy(&m);
    }
    assert_true(nll[1] > nll[0]);
    assert_true(nll[2] < nll[1]);
    cq_calib_free(&cal);
    cq_calib_free(&held);
}

/* ------------------------------------------------------------ end to end */

static void test_e2e_cherryq(void **state)
{
    (void)state;
    cq_llama *m = load_fp();
    /* impact on calibration windows of the training part */
    cq_calib cal;
    assert_int_equal(cq_calib_sample(&cal, corpus, 30000, 16, 32, 9), 0);
    cq_impact imp;
    assert_int_equal(cq_impact_compute(&imp, m, &cal, NULL, NULL), 0);
    cq_qspec s = spec(2, 32, true, CQ_SEL_IMPACT, 1);
    s.sel.k_rule = CQ_K_DEFAULT; /* max(1, round(in/256)) = 1 */
    cq_qplan p;
    assert_int_equal(cq_qplan_make(&p, m, &imp, &s), 0);
    assert_int_equal(p.nnz, 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64)); /* one per row */
    /* RTN starting point on held-out text */
    cq_calib held;
    assert_int_equal(cq_calib_windows(&held, corpus + 36000, 4000, 32, 0), 0);
    double fp, rtn, qat;
    assert_int_equal(cq_calib_nll(m, &held, &fp, NULL, NULL), 0);
    {
        cq_llama *r = load_fp();
        cq_qpacked q;
        assert_int_equal(cq_quantize_rtn(&q, r, &p, &s), 0);
        assert_int_equal(cq_qmodel_attach(r, &q), 0);
        assert_int_equal(cq_calib_nll(r, &held, &rtn, NULL, NULL), 0);
        cq_qpacked_free(&q);
        cq_llama_destroy(&r);
    }
    cq_train_opts o;
    cq_train_opts_default(&o);
    o.steps = 40;
    o.batch = 4;
    o.seq = 32;
    o.lr = 1e-3f;
    o.warmup = 2;
    o.min_lr_ratio = 0.25f;
    o.weight_decay = 0;
    o.beta2 = 0.95f;
    o.eval_every = 10;
    char ck[400];
    snprintf(ck, sizeof ck, "%s/qat_ckpt", root);
    o.ckpt_dir = ck;
    cq_qat_result res;
    assert_int_equal(cq_qat_train(m, &p, &s, &o, corpus, 30000, corpus + 30000, 2048, false, &res), 0);
    assert_int_equal(res.steps, 40);
    assert_null(m->layers[0].q[0].mask);
    cq_qpacked q;
    assert_int_equal(cq_quantize_rtn(&q, m, &p, &s), 0);
    char dir[400];
    snprintf(dir, sizeof dir, "%s/cherryq2", root);
    save_q(m, &q, dir, 2, 32);
    cq_llama *l = NULL;
    assert_int_equal(cq_llama_load(&l, dir, be), 0);
    assert_int_equal(cq_calib_nll(l, &held, &qat, NULL, NULL), 0);
    fprintf(stderr, "e2e 2-bit g32, 1 cherry/row: fp32 %.4f  rtn %.4f  cherryq-qat %.4f (start %.4f best %.4f, %.2f "
                    "epochs)\n",
            fp, rtn, qat, res.start_val, res.best_val, res.epochs);
    assert_true(rtn > fp);
    assert_true(qat < rtn);
    assert_false(res.kept_start);
    /* resuming a finished run is a no-op that still hands back good weights */
    cq_llama_destroy(&l);
    cq_qpacked_free(&q);
    cq_qplan_free(&p);
    cq_impact_free(&imp);
    cq_calib_free(&cal);
    cq_calib_free(&held);
    cq_llama_destroy(&m);
}

/* QAT that never beats the round-to-nearest start (a learning rate that
 * wrecks the weights): the start comes back bitwise, from the trainer's
 * best copy that the start seeded (no second copy of the weights). */
static void test_qat_keeps_start(void **state)
{
    (void)state;
    cq_llama *m = load_fp();
    cq_qspec s = spec(3, 32, true, CQ_SEL_MAGNITUDE, 1);
    cq_qplan p;
    assert_int_equal(cq_qplan_make(&p, m, NULL, &s), 0);
    float **w0 = calloc((size_t)m->n_params, sizeof *w0);
    assert_non_null(w0);
    for (int i = 0; i < m->n_params; i++) {
        w0[i] = malloc(cq_tensor_nbytes(m->params[i]));
        assert_non_null(w0[i]);
        assert_int_equal(cq_tensor_get(m->params[i], w0[i], cq_tensor_nbytes(m->params[i])), 0);
    }
    cq_train_opts o;
    cq_train_opts_default(&o);
    o.steps = 4;
    o.batch = 2;
    o.seq = 32;
    o.lr = 50.0f;
    o.warmup = 0;
    o.clip = 0;
    o.eval_every = 2;
    cq_qat_result res;
    assert_int_equal(cq_qat_train(m, &p, &s, &o, corpus, 30000, corpus + 30000, 2048, false, &res), 0);
    fprintf(stderr, "qat at lr 50: start %.4f best %.4f final %.4f kept_start %d\n", res.start_val, res.best_val,
            res.final_val, res.kept_start);
    assert_true(res.kept_start);
    assert_true(res.final_val == res.start_val);
    for (int i = 0; i < m->n_params; i++) {
        float *w = malloc(cq_tensor_nbytes(m->params[i]));
        assert_non_null(w);
        assert_int_equal(cq_tensor_get(m->params[i], w, cq_tensor_nbytes(m->params[i])), 0);
        assert_memory_equal(w, w0[i], cq_tensor_nbytes(m->params[i]));
        free(w);
        free(w0[i]);
    }
    free(w0);
    cq_qplan_free(&p);
    cq_llama_destroy(&m);
}

/* ------------------------------------------------------------ bad input */

/* overwrite bytes of tensor `name` in dir/model.safetensors */
static void poke(const char *dir, const char *name, size_t off, const void *bytes, size_t n)
{
    char path[500];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cq_st_file *f = NULL;
    assert_int_equal(cq_st_open(&f, path), 0);
    const cq_st_tensor *t = cq_st_find(f, name);
    assert_non_null(t);
    uint64_t at = t->file_offset + off;
    cq_st_close(&f);
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, (long)at, SEEK_SET), 0);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    fclose(fp);
}

static void copy_dir(const char *src, const char *dst)
{
    char cmd[1024];
    int k = snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dst, src, dst);
    assert_true(k > 0 && (size_t)k < sizeof cmd);
    assert_int_equal(system(cmd), 0);
}

static void expect_load_fails(const char *dir)
{
    cq_llama *l = NULL;
    int r = cq_llama_load(&l, dir, be);
    assert_true(r < 0);
    assert_null(l);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    cq_llama *m = load_fp();
    /* impact file of another model */
    cq_llama_config other = tiny;
    other.n_layers = 1;
    cq_llama *o = NULL;
    assert_int_equal(cq_llama_create(&o, &other, be, 2), 0);
    cq_calib cal;
    assert_int_equal(cq_calib_sample(&cal, corpus, 36000, 2, 16, 1), 0);
    cq_impact imp;
    assert_int_equal(cq_impact_compute(&imp, o, &cal, NULL, NULL), 0);
    char path[400];
    snprintf(path, sizeof path, "%s/other_impact.safetensors", root);
    assert_int_equal(cq_impact_save(&imp, path), 0);
    cq_impact_free(&imp);
    assert_int_equal(cq_impact_load(&imp, path, m), CQ_EBADMSG);
    other = tiny;
    other.ffn = 192;
    cq_llama_destroy(&o);
    assert_int_equal(cq_llama_create(&o, &other, be, 2), 0);
    assert_int_equal(cq_impact_compute(&imp, o, &cal, NULL, NULL), 0);
    assert_int_equal(cq_impact_save(&imp, path), 0);
    cq_impact_free(&imp);
    assert_int_equal(cq_impact_load(&imp, path, m), CQ_EBADMSG);
    cq_llama_destroy(&o);
    cq_calib_free(&cal);
    /* a plan by impact without an impact file; unsupported grids */
    cq_qplan p;
    cq_qspec s = spec(3, 32, true, CQ_SEL_IMPACT, 2);
    assert_int_equal(cq_qplan_make(&p, m, NULL, &s), CQ_EINVAL);
    s = spec(5, 32, false, CQ_SEL_IMPACT, 0);
    assert_int_equal(cq_qplan_make(&p, m, NULL, &s), CQ_EINVAL);
    s = spec(3, 48, false, CQ_SEL_IMPACT, 0);
    assert_int_equal(cq_qplan_make(&p, m, NULL, &s), CQ_EINVAL);

    /* corrupt quantized directories */
    s = spec(3, 32, true, CQ_SEL_MAGNITUDE, 2);
    cq_qpacked q;
    quantize_rtn(m, &s, &q);
    char good[400], bad[400], cfg[500];
    snprintf(good, sizeof good, "%s/good", root);
    snprintf(bad, sizeof bad, "%s/bad", root);
    save_q(m, &q, good, 3, 32);
    cq_llama *l = NULL;
    assert_int_equal(cq_llama_load(&l, good, be), 0);
    cq_llama_destroy(&l);
    const char *base = "model.layers.0.self_attn.v_proj";
    char nm[200];
    /* rowptr decreasing */
    copy_dir(good, bad);
    int32_t big = 1000;
    snprintf(nm, sizeof nm, "%s.cherry_rowptr", base);
    poke(bad, nm, 4 * 3, &big, 4);
    expect_load_fails(bad);
    /* column out of range */
    copy_dir(good, bad);
    uint16_t col = 64;
    snprintf(nm, sizeof nm, "%s.cherry_cols", base);
    poke(bad, nm, 2, &col, 2);
    expect_load_fails(bad);
    /* columns not ascending within a row */
    copy_dir(good, bad);
    uint16_t two[2] = { 9, 3 };
    poke(bad, nm, 0, two, 4);
    expect_load_fails(bad);
    /* a NaN scale */
    copy_dir(good, bad);
    uint16_t nan16 = 0x7e00;
    snprintf(nm, sizeof nm, "%s.scales", base);
    poke(bad, nm, 0, &nan16, 2);
    expect_load_fails(bad);
    /* config says 4 bits: every qcodes shape is wrong */
    copy_dir(good, bad);
    snprintf(cfg, sizeof cfg, "%s/config.json", bad);
    char *txt = NULL;
    assert_int_equal(cq_read_file(cfg, &txt, NULL, 1 << 20), 0);
    char *b3 = strstr(txt, "\"bits\":");
    assert_non_null(b3);
    while (*b3 && *b3 != '3') b3++;
    assert_int_equal(*b3, '3');
    *b3 = '4';
    assert_int_equal(cq_write_file_atomic(cfg, txt, strlen(txt)), 0);
    expect_load_fails(bad);
    /* unsupported grid in the config */
    *b3 = '5';
    assert_int_equal(cq_write_file_atomic(cfg, txt, strlen(txt)), 0);
    expect_load_fails(bad);
    /* another tool's quantization_config */
    char *qm = strstr(txt, "\"cherryq\"");
    assert_non_null(qm);
    memcpy(qm, "\"awq_xyz\"", 9);
    *b3 = '3';
    assert_int_equal(cq_write_file_atomic(cfg, txt, strlen(txt)), 0);
    expect_load_fails(bad);
    free(txt);
    /* truncated safetensors */
    copy_dir(good, bad);
    snprintf(cfg, sizeof cfg, "%s/model.safetensors", bad);
    struct stat st;
    assert_int_equal(stat(cfg, &st), 0);
    assert_int_equal(truncate(cfg, st.st_size / 2), 0);
    expect_load_fails(bad);
    /* a packed tensor missing */
    copy_dir(good, bad);
    {
        cq_qpacked q2;
        int bits, group;
        assert_int_equal(cq_qmodel_read(good, &q2, &bits, &group), 0);
        cq_qweight_free(&q2.w[5]);
        cq_llama *m2 = load_fp();
        /* drop the param-table entry before freeing the tensor (comparing
         * the pointer: reading the name after the free was a use after free,
         * found by ASan in build-asan) */
        for (int i = 0; i < m2->n_params; i++)
            if (m2->params[i] == m2->layers[0].lin[5]) m2->params[i] = NULL;
        cq_tensor_free(&m2->layers[0].lin[5]);
        char js[512];
        snprintf(js, sizeof js, QCFG, 3, 32);
        assert_int_not_equal(cq_qmodel_save(m2, &q2, bad, js, NULL), 0); /* neither packed nor dense */
        cq_llama_destroy(&m2);
        cq_qpacked_free(&q2);
    }

    /* nothing half-written: a failing save leaves no directory behind and
     * an existing one untouched */
    char fresh[400], tmpd[420];
    snprintf(fresh, sizeof fresh, "%s/never", root);
    snprintf(tmpd, sizeof tmpd, "%s.tmp", fresh);
    float nanv[64];
    assert_int_equal(cq_tensor_get_f32(m->norm, nanv), 0);
    nanv[5] = NAN;
    assert_int_equal(cq_tensor_set_f32(m->norm, nanv), 0);
    char js[512];
    snprintf(js, sizeof js, QCFG, 3, 32);
    assert_int_equal(cq_qmodel_save(m, &q, fresh, js, NULL), CQ_ERANGE);
    assert_false(cq_file_exists(fresh));
    assert_false(cq_file_exists(tmpd));
    assert_int_equal(cq_qmodel_save(m, &q, good, js, NULL), CQ_ERANGE);
    assert_int_equal(cq_llama_load(&l, good, be), 0);
    cq_llama_destroy(&l);
    /* refuses to replace a directory that is not a model */
    char notmodel[400], keep[500];
    snprintf(notmodel, sizeof notmodel, "%s/notmodel", root);
    snprintf(keep, sizeof keep, "%s/keep.txt", notmodel);
    assert_int_equal(cq_mkdir_p(notmodel), 0);
    assert_int_equal(cq_write_file_atomic(keep, "x", 1), 0);
    assert_int_equal(cq_qmodel_save(m, &q, notmodel, js, NULL), CQ_EINVAL);
    assert_true(cq_file_exists(keep));
    cq_qpacked_free(&q);
    cq_llama_destroy(&m);
}

/* ------------------------------------------------------------ SVG */

/* A small XML well-formedness checker: prolog, one root <svg>, balanced
 * tags, quoted attributes, numeric geometry attributes, escaped text.
 * Returns the number of elements named `count_tag`, or -1 if malformed. */
static int xml_check(const char *s, const char *count_tag)
{
    const char *stack[64];
    size_t stack_len[64];
    int depth = 0, roots = 0, count = 0;
    if (strncmp(s, "<?xml", 5)) return -1;
    s = strstr(s, "?>");
    if (!s) return -1;
    s += 2;
    while (*s) {
        if (*s != '<') {
            if (*s == '&') {
                if (strncmp(s, "&amp;", 5) && strncmp(s, "&lt;", 4) && strncmp(s, "&gt;", 4) &&
                    strncmp(s, "&quot;", 6))
                    return -1;
            } else if (*s == '>') return -1;
            if (depth == 0 && !isspace((unsigned char)*s)) return -1;
            s++;
            continue;
        }
        s++;
        int closing = *s == '/';
        if (closing) s++;
        const char *name = s;
        while (isalnum((unsigned char)*s) || *s == '-' || *s == ':') s++;
        size_t nlen = (size_t)(s - name);
        if (nlen == 0) return -1;
        if (closing) {
            if (*s != '>' || depth == 0 || stack_len[depth - 1] != nlen || strncmp(stack[depth - 1], name, nlen))
                return -1;
            depth--;
            s++;
            continue;
        }
        if (depth == 0) {
            if (roots++ || nlen != 3 || strncmp(name, "svg", 3)) return -1;
        }
        if (strlen(count_tag) == nlen && !strncmp(name, count_tag, nlen)) count++;
        /* attributes */
        for (;;) {
            while (isspace((unsigned char)*s)) s++;
            if (*s == '>' || (*s == '/' && s[1] == '>')) break;
            const char *an = s;
            while (isalnum((unsigned char)*s) || *s == '-' || *s == ':') s++;
            size_t alen = (size_t)(s - an);
            if (alen == 0 || *s != '=' || s[1] != '"') return -1;
            s += 2;
            const char *v = s;
            while (*s && *s != '"' && *s != '<') s++;
            if (*s != '"') return -1;
            static const char *const numeric[] = { "x", "y", "cx", "cy", "r", "x1", "x2", "y1", "y2", "width",
                                                   "height" };
            for (size_t k = 0; k < sizeof numeric / sizeof *numeric; k++)
                if (strlen(numeric[k]) == alen && !strncmp(an, numeric[k], alen)) {
                    char *end;
                    double d = strtod(v, &end);
                    if (end != s || !isfinite(d)) return -1;
                }
            s++;
        }
        if (*s == '/') {
            s += 2;
            continue;
        }
        s++;
        if (depth == 64) return -1;
        stack[depth] = name;
        stack_len[depth++] = nlen;
    }
    return depth == 0 && roots == 1 ? count : -1;
}

static void test_svg(void **state)
{
    (void)state;
    /* the checker itself rejects malformed documents */
    assert_int_equal(xml_check("<?xml version=\"1.0\"?><svg><g><circle cx=\"1\" cy=\"2\"/></g></svg>", "circle"), 1);
    assert_int_equal(xml_check("<?xml version=\"1.0\"?><svg><g><circle cx=\"1\" cy=\"2\"/></svg>", "circle"), -1);
    assert_int_equal(xml_check("<?xml version=\"1.0\"?><svg><circle cx=\"nan\" cy=\"2\"/></svg>", "circle"), -1);
    assert_int_equal(xml_check("<?xml version=\"1.0\"?><svg><text>a < b</text></svg>", "text"), -1);
    assert_int_equal(xml_check("<?xml version=\"1.0\"?><svg></svg><svg></svg>", "svg"), -1);

    cq_llama *m = load_fp();
    cq_calib cal;
    assert_int_equal(cq_calib_sample(&cal, corpus, 36000, 4, 32, 1), 0);
    cq_impact imp;
    assert_int_equal(cq_impact_compute(&imp, m, &cal, NULL, NULL), 0);
    cq_hetero *rows = NULL;
    int n = 0;
    assert_int_equal(cq_hetero_analyze(m, &imp, &rows, &n), 0);
    assert_int_equal(n, 14);
    for (int i = 0; i < n; i++) assert_true(rows[i].impact >= 1.0 && rows[i].magnitude >= 1.0);
    char p1[400], p2[400];
    snprintf(p1, sizeof p1, "%s/scatter.svg", root);
    snprintf(p2, sizeof p2, "%s/scores.svg", root);
    const float *F = cq_impact_get(&imp, "model.layers.1.self_attn.v_proj.weight", 32, 64);
    assert_non_null(F);
    assert_int_equal(cq_svg_impact_scatter(p1, F, 32 * 64, 4096, 1, "v_proj <layer 1> & impact"), 0);
    assert_int_equal(cq_svg_hetero_scores(p2, rows, n, "scores"), 0);
    char *t1 = NULL, *t2 = NULL;
    assert_int_equal(cq_read_file(p1, &t1, NULL, 1 << 24), 0);
    assert_int_equal(cq_read_file(p2, &t2, NULL, 1 << 24), 0);
    int npos = 0;
    for (int i = 0; i < 32 * 64; i++) npos += F[i] > 0;
    assert_int_equal(xml_check(t1, "circle"), npos); /* all 2048 weights (fewer than 4096) */
    int c2 = xml_check(t2, "circle");
    assert_true(c2 >= n + 1); /* one per matrix + the legend */
    assert_non_null(strstr(t1, "&lt;layer 1&gt; &amp; impact"));
    free(t1);
    free(t2);
    free(rows);
    cq_impact_free(&imp);
    cq_calib_free(&cal);
    cq_llama_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calib),
        cmocka_unit_test(test_impact_direct),
        cmocka_unit_test(test_packed_forward),
        cmocka_unit_test(test_qmatmul_kernel),
        cmocka_unit_test(test_interleaved_model),
        cmocka_unit_test(test_qmodel_roundtrip),
        cmocka_unit_test(test_gptq_vs_rtn),
        cmocka_unit_test(test_e2e_cherryq),
        cmocka_unit_test(test_qat_keeps_start),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_svg),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
