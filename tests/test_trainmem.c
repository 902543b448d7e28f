/* Training-memory options (issue 7, docs/cuda.md design (b)) on the CPU and,
 * when a Vulkan device exists (lavapipe here), on Vulkan:
 *   - activation checkpointing per decoder layer: loss and every gradient
 *     bitwise equal to the plain graph (dense and QAT fake-quant), and the
 *     measured peak of the step's context memory drops;
 *   - chunked cross-entropy: one chunk is bitwise the plain head, smaller
 *     chunks agree within a stated tolerance, the peak drops again;
 *   - bf16/f16 GEMM inputs: loss within tolerance of f32, gradients reach the
 *     f32 master weights, training still lowers the loss;
 *   - AdamW states offloaded to host memory: bitwise the same weights as
 *     resident states, and checkpoints resume across the option;
 *   - the memory plan moves the same way as the measured peaks.
 * Single-threaded CPU (OpenMP, OpenBLAS): deterministic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cblas.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cq_io.h"
#include "llama.h"
#include "memplan.h"
#include "train.h"

static cq_backend *g_cpu, *g_vk;

enum { B_ = 2, T_ = 48 };

static cq_llama_config small_cfg(void)
{
    cq_llama_config c = {
        .vocab = 320, .dim = 64, .ffn = 160, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
        .max_seq = 64, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = false, .bos = -1, .eos = -1,
    };
    return c;
}

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* QAT state on every linear: 3 bits, group 32, ~2% random cherries */
static void make_qat(cq_llama *m, cq_backend *be)
{
    uint64_t s = 11;
    for (int64_t l = 0; l < m->cfg.n_layers; l++)
        for (int i = 0; i < CQ_LLAMA_N_LINEAR; i++) {
            cq_tensor *w = m->layers[l].lin[i];
            int64_t n = cq_tensor_numel(w);
            uint8_t *mk = malloc((size_t)n);
            for (int64_t j = 0; j < n; j++) mk[j] = lcg(&s) % 50 == 0;
            cq_llama_qstate *q = &m->layers[l].q[i];
            assert_int_equal(cq_tensor_new(&q->mask, be, CQ_U8, 2, w->ne), 0);
            assert_int_equal(cq_tensor_set(q->mask, mk, (size_t)n), 0);
            q->bits = 3;
            q->group = 32;
            free(mk);
        }
}

typedef struct run_out {
    float loss;
    float *grads; /* all parameter grads, concatenated */
    size_t n;
    size_t peak;  /* cq_ctx_peak_bytes of the step */
} run_out;

/* One forward + backward of a fixed batch with the model's current options. */
static void run_step(cq_llama *m, run_out *o)
{
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, m->be), 0);
    assert_int_equal(cq_llama_enable_grad(m), 0);
    assert_int_equal(cq_llama_zero_grad(m), 0);
    int32_t ids[B_ * T_], tg[B_ * T_];
    uint64_t s = 5;
    for (int i = 0; i < B_ * T_; i++) ids[i] = (int32_t)(lcg(&s) % (uint64_t)m->cfg.vocab);
    for (int i = 0; i < B_ * T_; i++) tg[i] = (i % T_ == T_ - 1) ? -1 : ids[i + 1];
    int64_t ne[2] = { B_, T_ };
    cq_tensor *ti = cq_new(c, CQ_I32, 2, ne), *tt = cq_new(c, CQ_I32, 2, ne);
    assert_non_null(ti);
    assert_int_equal(cq_tensor_set(ti, ids, sizeof ids), 0);
    assert_int_equal(cq_tensor_set(tt, tg, sizeof tg), 0);
    cq_ctx_reset_peak(c);
    cq_tensor *loss = cq_llama_loss(c, m, ti, tt, 1.0f / (B_ * T_));
    assert_non_null(loss);
    assert_int_equal(cq_tensor_get(loss, &o->loss, sizeof o->loss), 0);
    assert_int_equal(cq_backward(c, loss), 0);
    o->peak = cq_ctx_peak_bytes(c);
    o->n = 0;
    for (int i = 0; i < m->n_params; i++) o->n += (size_t)cq_tensor_numel(m->params[i]);
    o->grads = malloc(o->n * sizeof(float));
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        assert_int_equal(cq_tensor_get_f32(m->params[i]->grad, o->grads + off), 0);
        off += (size_t)cq_tensor_numel(m->params[i]);
    }
    cq_ctx_destroy(&c);
}

static cq_llama *make_model(cq_backend *be, bool qat)
{
    cq_llama_config cfg = small_cfg();
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_create(&m, &cfg, be, 21), 0);
    if (qat) make_qat(m, be);
    return m;
}

/* max |a - b| relative to max |a| */
static double rel_maxdiff(const float *a, const float *b, size_t n)
{
    double md = 0, ma = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md) md = d;
        if (fabs(a[i]) > ma) ma = fabs(a[i]);
    }
    return ma > 0 ? md / ma : md;
}

static double cosine(const float *a, const float *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb + 1e-300);
}

static void checkpoint_bitwise(cq_backend *be, bool qat)
{
    cq_llama *m = make_model(be, qat);
    run_out a, b, c;
    run_step(m, &a);
    m->checkpoint = true;
    run_step(m, &b);
    /* checkpointing + one chunk covering every token: still the same ops */
    m->xent_chunk = B_ * T_;
    run_step(m, &c);
    printf("    %s %s: loss %.7f; peak context memory %zu B plain, %zu B checkpointed (%.0f%%)\n", be->name,
           qat ? "QAT" : "dense", a.loss, a.peak, b.peak, 100.0 * (double)b.peak / (double)a.peak);
    assert_true(memcmp(&a.loss, &b.loss, sizeof a.loss) == 0);
    assert_int_equal(a.n, b.n);
    assert_true(memcmp(a.grads, b.grads, a.n * sizeof(float)) == 0);
    assert_true(memcmp(&a.loss, &c.loss, sizeof a.loss) == 0);
    assert_true(memcmp(a.grads, c.grads, a.n * sizeof(float)) == 0);
    /* only the layer inputs + one layer are held: well under the plain peak */
    assert_true((double)b.peak < 0.6 * (double)a.peak);
    free(a.grads);
    free(b.grads);
    free(c.grads);
    cq_llama_destroy(&m);
}

static void test_checkpoint_cpu(void **st)
{
    (void)st;
    checkpoint_bitwise(g_cpu, false);
    checkpoint_bitwise(g_cpu, true);
}

static void test_checkpoint_vulkan(void **st)
{
    (void)st;
    if (!g_vk) skip();
    checkpoint_bitwise(g_vk, false);
    checkpoint_bitwise(g_vk, true);
}

/* tolerance of chunked vs whole cross-entropy: the loss is a sum of chunk
 * sums (f32) and dW a sum of chunk GEMMs, so only rounding differs */
#define XENT_TOL 2e-6

static void chunked_xent(cq_backend *be)
{
    cq_llama *m = make_model(be, false);
    run_out a, b, c;
    run_step(m, &a);
    m->xent_chunk = 20; /* 96 tokens: chunks of 20, the last of 16 */
    run_step(m, &b);
    m->checkpoint = true;
    run_step(m, &c);
    double dl = fabs((double)a.loss - b.loss) / fabs(a.loss), dg = rel_maxdiff(a.grads, b.grads, a.n);
    printf("    %s: chunked loss rel. diff %.2e, grads max rel. diff %.2e; peak %zu B plain, %zu B chunked, "
           "%zu B chunked + checkpointed\n",
           be->name, dl, dg, a.peak, b.peak, c.peak);
    assert_true(dl <= XENT_TOL);
    assert_true(dg <= XENT_TOL);
    assert_true(rel_maxdiff(b.grads, c.grads, a.n) == 0); /* checkpointing adds no difference */
    assert_true(b.peak < a.peak);
    assert_true(c.peak < b.peak);
    free(a.grads);
    free(b.grads);
    free(c.grads);
    cq_llama_destroy(&m);
}

static void test_chunked_xent_cpu(void **st)
{
    (void)st;
    chunked_xent(g_cpu);
}

static void test_chunked_xent_vulkan(void **st)
{
    (void)st;
    if (!g_vk) skip();
    chunked_xent(g_vk);
}

/* bf16 keeps 8 significant bits: the loss (about ln 320) moves by well under
 * 1e-2 relative; the gradients keep their direction */
#define HALF_LOSS_TOL 1e-2
#define HALF_GRAD_COS 0.99

static void half_compute(cq_backend *be, cq_dtype dt, bool qat)
{
    cq_llama *m = make_model(be, qat);
    run_out a, b;
    run_step(m, &a);
    m->compute = dt;
    m->checkpoint = true;
    m->xent_chunk = 32;
    run_step(m, &b);
    double dl = fabs((double)a.loss - b.loss) / fabs(a.loss), cs = cosine(a.grads, b.grads, a.n);
    printf("    %s %s%s: loss %.6f vs f32 %.6f (rel. %.2e), gradient cosine %.6f\n", be->name, cq_dtype_name(dt),
           qat ? " QAT" : "", b.loss, a.loss, dl, cs);
    assert_true(dl <= HALF_LOSS_TOL);
    assert_true(dl > 0); /* the GEMMs really ran on converted inputs */
    assert_true(cs >= HALF_GRAD_COS);
    /* every linear weight (the f32 master) got a gradient through the conversion */
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        size_t n = (size_t)cq_tensor_numel(m->params[i]);
        double ss = 0;
        for (size_t j = 0; j < n; j++) ss += (double)b.grads[off + j] * b.grads[off + j];
        assert_true(ss > 0);
        off += n;
    }
    free(a.grads);
    free(b.grads);
    cq_llama_destroy(&m);
}

static void test_half_compute_cpu(void **st)
{
    (void)st;
    half_compute(g_cpu, CQ_BF16, false);
    half_compute(g_cpu, CQ_F16, false);
    half_compute(g_cpu, CQ_BF16, true);
}

static void test_half_compute_vulkan(void **st)
{
    (void)st;
    if (!g_vk) skip();
    half_compute(g_vk, CQ_BF16, true);
}

/* ------------------------------------------------------------ trainer */

static cq_llama_config tiny_cfg(void)
{
    cq_llama_config c = {
        .vocab = 48, .dim = 32, .ffn = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8,
        .max_seq = 32, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = false, .bos = -1, .eos = -1,
    };
    return c;
}

static int32_t *make_tokens(size_t n, int64_t vocab)
{
    int32_t *t = malloc(n * sizeof *t);
    uint64_t s = 1;
    t[0] = 1;
    for (size_t i = 1; i < n; i++) {
        int noise = lcg(&s) % 10 == 0;
        t[i] = noise ? (int32_t)(lcg(&s) % (uint64_t)vocab) : (int32_t)((t[i - 1] * 5 + 3) % vocab);
    }
    return t;
}

typedef struct topts {
    bool offload, ckpt;
    cq_dtype compute;
} topts;

static cq_trainer *make_trainer(cq_llama **pm, cq_backend *be, const int32_t *tok, size_t n, int64_t steps,
                                topts to)
{
    cq_llama_config cfg = tiny_cfg();
    assert_int_equal(cq_llama_create(pm, &cfg, be, 3), 0);
    (*pm)->checkpoint = to.ckpt;
    (*pm)->compute = to.compute;
    cq_train_opts o;
    cq_train_opts_default(&o);
    o.steps = steps;
    o.batch = 4;
    o.seq = 16;
    o.accum = 2;
    o.lr = 1e-2f;
    o.warmup = 2;
    o.seed = 7;
    o.offload_optimizer = to.offload;
    cq_trainer *t = NULL;
    assert_int_equal(cq_trainer_create(&t, *pm, &o, tok, n, NULL, 0), 0);
    return t;
}

static float *weights(const cq_llama *m, size_t *n)
{
    *n = 0;
    for (int i = 0; i < m->n_params; i++) *n += (size_t)cq_tensor_numel(m->params[i]);
    float *w = malloc(*n * sizeof(float));
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        assert_int_equal(cq_tensor_get_f32(m->params[i], w + off), 0);
        off += (size_t)cq_tensor_numel(m->params[i]);
    }
    return w;
}

static float *train_weights(cq_backend *be, topts to, int64_t steps, size_t *n)
{
    size_t nt = 2048;
    int32_t *tok = make_tokens(nt, 48);
    cq_llama *m = NULL;
    cq_trainer *t = make_trainer(&m, be, tok, nt, steps, to);
    for (int64_t i = 0; i < steps; i++) assert_int_equal(cq_trainer_step(t, NULL), 0);
    float *w = weights(m, n);
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    free(tok);
    return w;
}

static void offload_bitwise(cq_backend *be)
{
    size_t n1, n2, n3;
    float *a = train_weights(be, (topts){ false, false, CQ_F32 }, 4, &n1);
    float *b = train_weights(be, (topts){ true, false, CQ_F32 }, 4, &n2);
    /* offload and checkpointing together: still the plain run's weights */
    float *c = train_weights(be, (topts){ true, true, CQ_F32 }, 4, &n3);
    assert_int_equal(n1, n2);
    assert_true(memcmp(a, b, n1 * sizeof(float)) == 0);
    assert_true(memcmp(a, c, n1 * sizeof(float)) == 0);
    printf("    %s: 4 steps with offloaded AdamW states (and with checkpointing): weights bitwise equal\n",
           be->name);
    free(a);
    free(b);
    free(c);
}

static void test_offload_cpu(void **st)
{
    (void)st;
    offload_bitwise(g_cpu);
}

static void test_offload_vulkan(void **st)
{
    (void)st;
    if (!g_vk) skip();
    offload_bitwise(g_vk);
}

/* save after 2 steps with one setting, resume with the other, 2 more steps:
 * the weights of 4 uninterrupted steps */
static void resume_across(cq_backend *be, bool first_offload)
{
    char dir[] = "/tmp/cqtmXXXXXX";
    assert_non_null(mkdtemp(dir));
    size_t nt = 2048, n1, n2;
    int32_t *tok = make_tokens(nt, 48);
    float *ref = train_weights(be, (topts){ false, false, CQ_F32 }, 4, &n1);
    cq_llama *m = NULL;
    cq_trainer *t = make_trainer(&m, be, tok, nt, 4, (topts){ first_offload, false, CQ_F32 });
    for (int i = 0; i < 2; i++) assert_int_equal(cq_trainer_step(t, NULL), 0);
    assert_int_equal(cq_trainer_save(t, dir), 0);
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    t = make_trainer(&m, be, tok, nt, 4, (topts){ !first_offload, false, CQ_F32 });
    assert_int_equal(cq_trainer_load(t, dir), 0);
    assert_int_equal(cq_trainer_step_count(t), 2);
    for (int i = 0; i < 2; i++) assert_int_equal(cq_trainer_step(t, NULL), 0);
    float *w = weights(m, &n2);
    assert_int_equal(n1, n2);
    assert_true(memcmp(ref, w, n1 * sizeof(float)) == 0);
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    char p[64];
    snprintf(p, sizeof p, "%s/trainer.ckpt", dir);
    unlink(p);
    rmdir(dir);
    free(ref);
    free(w);
    free(tok);
}

static void test_resume_across_offload(void **st)
{
    (void)st;
    resume_across(g_cpu, true);
    resume_across(g_cpu, false);
    if (g_vk) resume_across(g_vk, true);
}

/* bf16 GEMMs + checkpointing + chunked head + offload: the loss still falls */
static void test_bf16_training_decreases(void **st)
{
    (void)st;
    size_t nt = 4096;
    int32_t *tok = make_tokens(nt, 48);
    cq_llama *m = NULL;
    cq_trainer *t = make_trainer(&m, g_cpu, tok, nt, 30, (topts){ true, true, CQ_BF16 });
    m->xent_chunk = 24;
    cq_train_progress p;
    double first = 0, last = 0;
    for (int i = 0; i < 30; i++) {
        assert_int_equal(cq_trainer_step(t, &p), 0);
        assert_true(isfinite(p.loss));
        if (i < 3) first += p.loss / 3;
        if (i >= 27) last += p.loss / 3;
    }
    printf("    bf16 training: mean loss of steps 1-3 %.3f, of steps 28-30 %.3f\n", first, last);
    assert_true(last < first - 1.0);
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    free(tok);
}

/* ------------------------------------------------------------ memory plan */

static void test_plan_follows(void **st)
{
    (void)st;
    cq_llama_config cfg = small_cfg();
    cq_plan_opts o = { .batch = B_, .seqlen = T_ };
    cq_plan_est plain, ck, ckx, half, off;
    assert_int_equal(cq_memplan_estimate(&cfg, CQ_PLAN_TRAIN, &o, &plain), 0);
    o.checkpoint = true;
    assert_int_equal(cq_memplan_estimate(&cfg, CQ_PLAN_TRAIN, &o, &ck), 0);
    o.xent_chunk = 20;
    assert_int_equal(cq_memplan_estimate(&cfg, CQ_PLAN_TRAIN, &o, &ckx), 0);
    assert_true(ck.activations < 0.6 * plain.activations);
    assert_true(ckx.activations < ck.activations);
    o.compute_bytes = 2;
    assert_int_equal(cq_memplan_estimate(&cfg, CQ_PLAN_TRAIN, &o, &half), 0);
    assert_true(half.activations > ckx.activations); /* the bf16 copies cost memory, they save none */
    o.device = true;
    o.offload = true;
    assert_int_equal(cq_memplan_estimate(&cfg, CQ_PLAN_TRAIN, &o, &off), 0);
    o.offload = false;
    cq_plan_est res;
    assert_int_equal(cq_memplan_estimate(&cfg, CQ_PLAN_TRAIN, &o, &res), 0);
    double P = (double)cq_llama_config_n_params(&cfg);
    assert_true(res.device - off.device > 4 * P); /* m, v (8P) leave the device, a staging pair stays */
    assert_true(off.host - res.host == 8 * P);
    /* the measured step peaks (test_checkpoint_cpu) lie under the estimates */
    cq_llama *m = make_model(g_cpu, false);
    run_out a, b;
    run_step(m, &a);
    m->checkpoint = true;
    run_step(m, &b);
    printf("    plan activations %.0f kB plain, %.0f kB checkpointed; measured step peak %zu kB, %zu kB\n",
           plain.activations / 1024, ck.activations / 1024, a.peak / 1024, b.peak / 1024);
    assert_true((double)a.peak <= plain.activations);
    assert_true((double)b.peak <= ck.activations);
    free(a.grads);
    free(b.grads);
    cq_llama_destroy(&m);
}

int main(void)
{
    cq_log_set_level(CQ_LOG_WARN);
    cq_set_num_threads(1);
    openblas_set_num_threads(1);
    if (cq_backend_create(&g_cpu, "cpu", -1)) return 1;
    if (cq_backend_create(&g_vk, "vulkan", -1)) {
        printf("(no Vulkan device: the Vulkan cases are skipped)\n");
        g_vk = NULL;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkpoint_cpu),       cmocka_unit_test(test_chunked_xent_cpu),
        cmocka_unit_test(test_half_compute_cpu),     cmocka_unit_test(test_offload_cpu),
        cmocka_unit_test(test_resume_across_offload), cmocka_unit_test(test_bf16_training_decreases),
        cmocka_unit_test(test_plan_follows),         cmocka_unit_test(test_checkpoint_vulkan),
        cmocka_unit_test(test_chunked_xent_vulkan),  cmocka_unit_test(test_half_compute_vulkan),
        cmocka_unit_test(test_offload_vulkan),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    cq_backend_destroy(&g_vk);
    cq_backend_destroy(&g_cpu);
    return r;
}
