/* Trainer, GPTQ-protocol eval and KV-cache generation on tiny models.
 * Single-threaded (OpenMP and OpenBLAS), so CPU results are deterministic. */
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
#include "train.h"

static cq_backend *g_be;

static cq_llama_config tiny_cfg(void)
{
    cq_llama_config c = {
        .vocab = 48, .dim = 32, .ffn = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8,
        .max_seq = 32, .norm_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = false, .bos = -1, .eos = -1,
    };
    return c;
}

/* A learnable token stream: a noisy successor pattern over the vocab (10%
 * random tokens; the best possible mean NLL is about 0.1*ln(48)+0.33). */
static int32_t *make_tokens(size_t n, int64_t vocab, uint64_t seed)
{
    int32_t *t = malloc(n * sizeof *t);
    uint64_t s = seed;
    t[0] = 1;
    t[1] = 2;
    for (size_t i = 2; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int noise = (int)((s >> 33) % 10) == 0;
        t[i] = noise ? (int32_t)((s >> 40) % (uint64_t)vocab) : (int32_t)((t[i - 1] * 5 + 3) % vocab);
    }
    return t;
}

static cq_train_opts tiny_opts(int64_t steps)
{
    cq_train_opts o;
    cq_train_opts_default(&o);
    o.steps = steps;
    o.batch = 4;
    o.seq = 16;
    o.accum = 2;
    o.lr = 1e-2f;
    o.warmup = 3;
    o.seed = 7;
    return o;
}

static void test_loss_decreases(void **state)
{
    (void)state;
    cq_llama_config cfg = tiny_cfg();
    size_t n = 4096;
    int32_t *tok = make_tokens(n, cfg.vocab, 1);
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_create(&m, &cfg, g_be, 3), 0);
    cq_train_opts o = tiny_opts(40);
    cq_trainer *t = NULL;
    assert_int_equal(cq_trainer_create(&t, m, &o, tok, n - 512, tok + n - 512, 512), 0);
    double v0, v1;
    assert_int_equal(cq_trainer_eval(t, &v0), 0);
    assert_true(fabs(v0 - log((double)cfg.vocab)) < 0.2); /* random init: about uniform */
    cq_train_progress p;
    double first = 0, last = 0;
    for (int i = 0; i < 40; i++) {
        assert_int_equal(cq_trainer_step(t, &p), 0);
        if (i < 3) first += p.loss / 3;
        if (i >= 37) last += p.loss / 3;
        assert_true(isfinite(p.grad_norm));
    }
    assert_int_equal(cq_trainer_eval(t, &v1), 0);
    printf("# train loss %.3f -> %.3f, validation %.3f -> %.3f\n", first, last, v0, v1);
    assert_true(last < first - 0.5);
    assert_true(v1 < v0 - 0.5);
    assert_int_equal(cq_trainer_step_count(t), 40);
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    free(tok);
}

static void test_lr_schedule(void **state)
{
    (void)state;
    cq_llama_config cfg = tiny_cfg();
    int32_t *tok = make_tokens(256, cfg.vocab, 2);
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_create(&m, &cfg, g_be, 3), 0);
    cq_train_opts o = tiny_opts(110);
    o.warmup = 10;
    o.lr = 1.0f;
    o.min_lr_ratio = 0.25f;
    cq_trainer *t = NULL;
    assert_int_equal(cq_trainer_create(&t, m, &o, tok, 256, NULL, 0), 0);
    assert_true(fabs(cq_trainer_lr(t, 1) - 0.1) < 1e-12);
    assert_true(fabs(cq_trainer_lr(t, 10) - 1.0) < 1e-12);
    assert_true(fabs(cq_trainer_lr(t, 60) - (0.25 + 0.75 * 0.5)) < 1e-9); /* half way: cos = 0 */
    assert_true(fabs(cq_trainer_lr(t, 110) - 0.25) < 1e-12);
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    free(tok);
}

static void params_snapshot(const cq_llama *m, float **out, size_t *total)
{
    size_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += (size_t)cq_tensor_numel(m->params[i]);
    float *b = malloc(n * sizeof(float));
    size_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        assert_int_equal(cq_tensor_get_f32(m->params[i], b + off), 0);
        off += (size_t)cq_tensor_numel(m->params[i]);
    }
    *out = b;
    *total = n;
}

static char g_dir[256];

static void test_resume_bitwise(void **state)
{
    (void)state;
    cq_llama_config cfg = tiny_cfg();
    size_t n = 3000;
    int32_t *tok = make_tokens(n, cfg.vocab, 3);
    const int64_t steps = 12, cut = 5;
    /* uninterrupted */
    cq_llama *a = NULL;
    assert_int_equal(cq_llama_create(&a, &cfg, g_be, 11), 0);
    cq_train_opts o = tiny_opts(steps);
    o.eval_every = 4;
    cq_trainer *ta = NULL;
    assert_int_equal(cq_trainer_create(&ta, a, &o, tok, n - 300, tok + n - 300, 300), 0);
    assert_int_equal(cq_trainer_run(ta), 0);
    /* interrupted after `cut` steps, resumed in a fresh process state */
    cq_llama *b = NULL;
    assert_int_equal(cq_llama_create(&b, &cfg, g_be, 11), 0);
    cq_trainer *tb = NULL;
    assert_int_equal(cq_trainer_create(&tb, b, &o, tok, n - 300, tok + n - 300, 300), 0);
    for (int64_t i = 0; i < cut; i++) assert_int_equal(cq_trainer_step(tb, NULL), 0);
    assert_int_equal(cq_trainer_save(tb, g_dir), 0);
    cq_trainer_destroy(&tb);
    cq_llama_destroy(&b);
    assert_int_equal(cq_llama_create(&b, &cfg, g_be, 999), 0); /* other init: the checkpoint must overwrite it */
    assert_int_equal(cq_trainer_create(&tb, b, &o, tok, n - 300, tok + n - 300, 300), 0);
    assert_int_equal(cq_trainer_load(tb, g_dir), 0);
    assert_int_equal(cq_trainer_step_count(tb), cut);
    assert_int_equal(cq_trainer_run(tb), 0);
    float *pa, *pb;
    size_t na, nb;
    params_snapshot(a, &pa, &na);
    params_snapshot(b, &pb, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na * sizeof(float));
    /* and training did change the weights */
    cq_llama *init = NULL;
    float *p0;
    size_t n0;
    assert_int_equal(cq_llama_create(&init, &cfg, g_be, 11), 0);
    params_snapshot(init, &p0, &n0);
    assert_true(memcmp(p0, pa, n0 * sizeof(float)) != 0);
    free(p0);
    cq_llama_destroy(&init);
    /* a checkpoint for another shape is refused; a corrupted one too */
    cq_llama_config c2 = cfg;
    c2.ffn = 48;
    cq_llama *c = NULL;
    cq_trainer *tc = NULL;
    assert_int_equal(cq_llama_create(&c, &c2, g_be, 1), 0);
    assert_int_equal(cq_trainer_create(&tc, c, &o, tok, n, NULL, 0), 0);
    assert_int_equal(cq_trainer_load(tc, g_dir), CQ_EBADMSG);
    char path[300];
    snprintf(path, sizeof path, "%s/trainer.ckpt", g_dir);
    char *data;
    size_t len;
    assert_int_equal(cq_read_file(path, &data, &len, 1u << 30), 0);
    data[len / 2] ^= 0x10;
    assert_int_equal(cq_write_file_atomic(path, data, len), 0);
    assert_int_equal(cq_trainer_load(tb, g_dir), CQ_EBADMSG);
    assert_int_equal(cq_write_file_atomic(path, data, len / 3), 0); /* truncated */
    assert_int_equal(cq_trainer_load(tb, g_dir), CQ_EBADMSG);
    free(data);
    unlink(path);
    assert_int_equal(cq_trainer_load(tb, g_dir), CQ_ENOENT);
    free(pa);
    free(pb);
    cq_trainer_destroy(&tc);
    cq_llama_destroy(&c);
    cq_trainer_destroy(&ta);
    cq_trainer_destroy(&tb);
    cq_llama_destroy(&a);
    cq_llama_destroy(&b);
    free(tok);
}

/* Scales every matrix so the random model has peaked, distinct logits. */
static void sharpen(cq_llama *m, float f)
{
    for (int i = 0; i < m->n_params; i++) {
        cq_tensor *p = m->params[i];
        if (p->ndim < 2) continue;
        size_t n = (size_t)cq_tensor_numel(p);
        float *b = malloc(n * sizeof(float));
        assert_int_equal(cq_tensor_get_f32(p, b), 0);
        for (size_t j = 0; j < n; j++) b[j] *= f;
        assert_int_equal(cq_tensor_set_f32(p, b), 0);
        free(b);
    }
}

static void test_eval_matches_direct(void **state)
{
    (void)state;
    cq_llama_config cfg = tiny_cfg();
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_create(&m, &cfg, g_be, 5), 0);
    sharpen(m, 10.0f);
    const int64_t T = 12;
    const size_t n = 5 * T + 7; /* 5 windows, 7 tokens dropped */
    int32_t *tok = make_tokens(n, cfg.vocab, 9);
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, g_be), 0);
    double sum = 0, wn[5];
    int64_t np = 0;
    assert_int_equal(cq_eval_windows(c, m, tok, n, T, 0, 2, &sum, &np, wn), 0);
    assert_int_equal(np, 5 * (T - 1));
    /* direct: forward each window alone, log-softmax in double */
    double direct = 0;
    float *lg = malloc((size_t)(T * cfg.vocab) * sizeof(float));
    for (int w = 0; w < 5; w++) {
        cq_ctx_reset(c);
        cq_ctx_set_grad(c, false);
        int64_t ne[2] = { 1, T };
        cq_tensor *ids = cq_new(c, CQ_I32, 2, ne);
        assert_non_null(ids);
        assert_int_equal(cq_tensor_set(ids, tok + w * T, (size_t)T * sizeof(int32_t)), 0);
        cq_tensor *l = cq_llama_forward(c, m, ids, 0, false);
        assert_non_null(l);
        assert_int_equal(cq_tensor_get_f32(l, lg), 0);
        double ws = 0;
        for (int64_t i = 0; i + 1 < T; i++) {
            const float *row = lg + i * cfg.vocab;
            double mx = row[0];
            for (int64_t v = 1; v < cfg.vocab; v++) mx = row[v] > mx ? row[v] : mx;
            double se = 0;
            for (int64_t v = 0; v < cfg.vocab; v++) se += exp(row[v] - mx);
            ws += mx + log(se) - row[tok[w * T + i + 1]];
        }
        ws /= (double)(T - 1);
        assert_true(fabs(ws - wn[w]) < 1e-4 * fabs(ws));
        direct += ws;
    }
    direct /= 5;
    double ours = sum / (double)np;
    printf("# eval: mean NLL %.6f, direct %.6f\n", ours, direct);
    assert_true(fabs(ours - direct) < 1e-5 * direct);
    assert_true(direct > 0.5); /* not a degenerate model */
    /* max_windows and too-short inputs */
    assert_int_equal(cq_eval_windows(c, m, tok, n, T, 2, 4, &sum, &np, NULL), 0);
    assert_int_equal(np, 2 * (T - 1));
    assert_int_equal(cq_eval_windows(c, m, tok, (size_t)T - 1, T, 0, 1, &sum, &np, NULL), CQ_EINVAL);
    free(lg);
    free(tok);
    cq_ctx_destroy(&c);
    cq_llama_destroy(&m);
}

static int32_t argmax(const float *x, int64_t n)
{
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int32_t)i;
    return b;
}

static void test_generate_cache_matches_recompute(void **state)
{
    (void)state;
    cq_llama_config cfg = tiny_cfg();
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_create(&m, &cfg, g_be, 21), 0);
    sharpen(m, 12.0f);
    const int np = 5, ngen = 20;
    int32_t seq[32] = { 3, 17, 5, 40, 8 };
    int32_t cached[32];
    memcpy(cached, seq, sizeof seq);
    const int64_t V = cfg.vocab;
    float *lg = malloc((size_t)(32 * V) * sizeof(float));
    float *lg2 = malloc((size_t)(32 * V) * sizeof(float));
    cq_ctx *c = NULL;
    assert_int_equal(cq_ctx_create(&c, g_be), 0);
    cq_ctx_set_grad(c, false);
    assert_int_equal(cq_llama_cache_init(m, 1, np + ngen), 0);
    /* with the cache: the prompt once, then one position per token */
    int64_t pos = 0, nfeed = np;
    double maxdiff = 0;
    for (int g = 0; g < ngen; g++) {
        cq_ctx_reset(c);
        int64_t ne[2] = { 1, nfeed };
        cq_tensor *ids = cq_new(c, CQ_I32, 2, ne);
        assert_int_equal(cq_tensor_set(ids, cached + pos, (size_t)nfeed * sizeof(int32_t)), 0);
        cq_tensor *l = cq_llama_forward(c, m, ids, pos, true);
        assert_non_null(l);
        assert_int_equal(cq_tensor_get_f32(l, lg), 0);
        pos += nfeed;
        cached[pos] = argmax(lg + (nfeed - 1) * V, V);
        /* full recomputation without the cache */
        cq_ctx_reset(c);
        int64_t ne2[2] = { 1, pos };
        cq_tensor *ids2 = cq_new(c, CQ_I32, 2, ne2);
        assert_int_equal(cq_tensor_set(ids2, seq, (size_t)pos * sizeof(int32_t)), 0);
        cq_tensor *l2 = cq_llama_forward(c, m, ids2, 0, false);
        assert_non_null(l2);
        assert_int_equal(cq_tensor_get_f32(l2, lg2), 0);
        seq[pos] = argmax(lg2 + (pos - 1) * V, V);
        for (int64_t v = 0; v < V; v++) {
            double d = fabs((double)lg[(nfeed - 1) * V + v] - (double)lg2[(pos - 1) * V + v]);
            if (d > maxdiff) maxdiff = d;
        }
        assert_int_equal(cached[pos], seq[pos]);
        nfeed = 1;
    }
    int distinct = 0;
    for (int i = np + 1; i <= np + ngen - 1; i++) distinct += seq[i] != seq[i - 1];
    printf("# generate: %d tokens equal with and without the KV cache, max logit diff %.2e, %d changes\n", ngen,
           maxdiff, distinct);
    assert_true(maxdiff < 1e-3);
    assert_true(distinct > 0); /* not a constant stream */
    /* the cache refuses positions past its length */
    cq_ctx_reset(c);
    int64_t ne[2] = { 1, 1 };
    cq_tensor *ids = cq_new(c, CQ_I32, 2, ne);
    assert_int_equal(cq_tensor_set(ids, seq, sizeof(int32_t)), 0);
    assert_null(cq_llama_forward(c, m, ids, np + ngen, true));
    free(lg);
    free(lg2);
    cq_ctx_destroy(&c);
    cq_llama_destroy(&m);
}

static bool only_norms(const cq_tensor *p, void *user)
{
    (void)user;
    return p->ndim == 1;
}

static void test_trainable_hook_and_keep_best(void **state)
{
    (void)state;
    cq_llama_config cfg = tiny_cfg();
    int32_t *tok = make_tokens(2048, cfg.vocab, 4);
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_create(&m, &cfg, g_be, 8), 0);
    float *before, *after;
    size_t nb, na;
    params_snapshot(m, &before, &nb);
    cq_train_opts o = tiny_opts(6);
    o.trainable = only_norms;
    o.keep_best = true;
    o.eval_every = 2;
    cq_trainer *t = NULL;
    assert_int_equal(cq_trainer_create(&t, m, &o, tok, 1800, tok + 1800, 248), 0);
    assert_int_equal(cq_trainer_restore_best(t), CQ_EINVAL); /* nothing kept yet */
    assert_int_equal(cq_trainer_run(t), 0);
    params_snapshot(m, &after, &na);
    size_t off = 0;
    int changed_norms = 0;
    for (int i = 0; i < m->n_params; i++) {
        size_t k = (size_t)cq_tensor_numel(m->params[i]);
        int same = !memcmp(before + off, after + off, k * sizeof(float));
        if (m->params[i]->ndim >= 2) assert_true(same);
        else changed_norms += !same;
        off += k;
    }
    assert_true(changed_norms > 0);
    assert_true(isfinite(cq_trainer_best_val(t)));
    assert_int_equal(cq_trainer_restore_best(t), 0);
    double v;
    assert_int_equal(cq_trainer_eval(t, &v), 0);
    assert_true(fabs(v - cq_trainer_best_val(t)) < 1e-9);
    free(before);
    free(after);
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    free(tok);
}

static char g_log[4096];
static void capture(cq_log_level lvl, const char *msg, void *user)
{
    (void)user;
    size_t o = strlen(g_log);
    if (lvl == CQ_LOG_ERROR && o < sizeof g_log) snprintf(g_log + o, sizeof g_log - o, "%s\n", msg);
}

/* keep_best with best_file: the same best weights as in host memory
 * (bitwise), through a checkpoint and back into another trainer's file, and
 * a truncated file refused with a message. */
/* a tiny model (seed) and a keep_best trainer over fixed tokens */
static cq_trainer *best_trainer(uint64_t seed, const char *best_file, cq_llama **m, int32_t **tok)
{
    cq_llama_config cfg = tiny_cfg();
    *tok = make_tokens(2048, cfg.vocab, 4);
    assert_int_equal(cq_llama_create(m, &cfg, g_be, seed), 0);
    cq_train_opts o = tiny_opts(6);
    o.keep_best = true;
    o.eval_every = 2;
    o.lr = 3e-2f;
    o.best_file = best_file;
    cq_trainer *t = NULL;
    assert_int_equal(cq_trainer_create(&t, *m, &o, *tok, 1800, *tok + 1800, 248), 0);
    return t;
}

static int run_best(const char *best_file, float **w, size_t *nw, const char *save_dir)
{
    cq_llama *m = NULL;
    int32_t *tok = NULL;
    cq_trainer *t = best_trainer(8, best_file, &m, &tok);
    double v0;
    assert_int_equal(cq_trainer_eval(t, &v0), 0);
    assert_int_equal(cq_trainer_seed_best(t, v0), 0);
    assert_int_equal(cq_trainer_run(t), 0);
    if (save_dir) assert_int_equal(cq_trainer_save(t, save_dir), 0);
    assert_int_equal(cq_trainer_restore_best(t), 0);
    params_snapshot(m, w, nw);
    int improved = cq_trainer_best_val(t) < v0;
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    free(tok);
    return improved;
}

static void test_best_file(void **state)
{
    (void)state;
    char bf[400], bf2[400], ck[400];
    snprintf(bf, sizeof bf, "%s/best.f32", g_dir);
    snprintf(bf2, sizeof bf2, "%s/best2.f32", g_dir);
    snprintf(ck, sizeof ck, "%s/best_ckpt", g_dir);
    assert_int_equal(cq_mkdir_p(ck), 0);
    float *wm, *wf;
    size_t nm, nf;
    int imp_m = run_best(NULL, &wm, &nm, NULL);
    int imp_f = run_best(bf, &wf, &nf, ck);
    assert_int_equal(imp_m, imp_f);
    assert_true(imp_m); /* the evaluations beat the start: the best is not the seed */
    assert_int_equal(nm, nf);
    assert_memory_equal(wm, wf, nm * sizeof(float));
    /* the checkpoint's best weights into another file (another model's
     * trainer: other initial weights), then restored */
    cq_llama *m = NULL;
    int32_t *tok = NULL;
    cq_trainer *t = best_trainer(99, bf2, &m, &tok);
    assert_int_equal(cq_trainer_load(t, ck), 0);
    assert_int_equal(cq_trainer_restore_best(t), 0);
    float *w2;
    size_t n2;
    params_snapshot(m, &w2, &n2);
    assert_memory_equal(wm, w2, nm * sizeof(float));
    /* a truncated best file: refused, named */
    assert_int_equal(truncate(bf2, 100), 0);
    g_log[0] = 0;
    cq_log_set_callback(capture, NULL);
    assert_int_equal(cq_trainer_restore_best(t), CQ_EBADMSG);
    cq_log_set_callback(NULL, NULL);
    assert_non_null(strstr(g_log, "best2.f32"));
    cq_trainer_destroy(&t);
    char ckf[500];
    snprintf(ckf, sizeof ckf, "%s/trainer.ckpt", ck);
    assert_int_equal(unlink(ckf), 0);
    assert_int_equal(rmdir(ck), 0);
    assert_int_equal(unlink(bf), 0);
    assert_int_equal(unlink(bf2), 0);
    cq_llama_destroy(&m);
    free(tok);
    free(wm);
    free(wf);
    free(w2);
}

static void test_nonfinite_steps(void **state)
{
    (void)state;
    cq_llama_config cfg = tiny_cfg();
    int32_t *tok = make_tokens(1024, cfg.vocab, 6);
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_create(&m, &cfg, g_be, 8), 0);
    cq_tensor *w = cq_llama_param(m, "model.layers.1.mlp.up_proj.weight");
    assert_non_null(w);
    float *b = malloc((size_t)cq_tensor_numel(w) * sizeof(float));
    assert_int_equal(cq_tensor_get_f32(w, b), 0);
    b[3] = NAN;
    assert_int_equal(cq_tensor_set_f32(w, b), 0);
    cq_train_opts o = tiny_opts(20);
    o.max_bad_steps = 3;
    cq_trainer *t = NULL;
    assert_int_equal(cq_trainer_create(&t, m, &o, tok, 1024, NULL, 0), 0);
    cq_train_progress p;
    assert_int_equal(cq_trainer_step(t, &p), 0);
    assert_true(isnan(p.loss));
    assert_int_equal(p.n_skipped, 1);
    assert_int_equal(cq_trainer_step(t, &p), 0);
    assert_int_equal(cq_trainer_step(t, &p), CQ_ERANGE);
    /* the weights were never updated: the NaN is still alone */
    assert_int_equal(cq_tensor_get_f32(w, b), 0);
    assert_true(isnan(b[3]) && isfinite(b[2]) && isfinite(b[4]));
    free(b);
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    free(tok);
}

static void test_bad_args(void **state)
{
    (void)state;
    cq_llama_config cfg = tiny_cfg();
    int32_t tok[64] = { 0 };
    cq_llama *m = NULL;
    assert_int_equal(cq_llama_create(&m, &cfg, g_be, 8), 0);
    cq_train_opts o = tiny_opts(5);
    cq_trainer *t = NULL;
    assert_int_equal(cq_trainer_create(&t, m, &o, tok, 16, NULL, 0), CQ_EINVAL); /* too few tokens */
    tok[7] = 1000;
    assert_int_equal(cq_trainer_create(&t, m, &o, tok, 64, NULL, 0), CQ_EINVAL); /* id out of vocab */
    tok[7] = 0;
    o.seq = 64; /* > max_seq */
    assert_int_equal(cq_trainer_create(&t, m, &o, tok, 64, NULL, 0), CQ_EINVAL);
    assert_null(t);
    cq_llama_destroy(&m);
}

int main(void)
{
    cq_set_num_threads(1);
    openblas_set_num_threads(1);
    snprintf(g_dir, sizeof g_dir, "test_train_ckpt.%d", (int)getpid());
    if (cq_backend_create(&g_be, "cpu", -1)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_decreases),
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_resume_bitwise),
        cmocka_unit_test(test_eval_matches_direct),
        cmocka_unit_test(test_generate_cache_matches_recompute),
        cmocka_unit_test(test_trainable_hook_and_keep_best),
        cmocka_unit_test(test_best_file),
        cmocka_unit_test(test_nonfinite_steps),
        cmocka_unit_test(test_bad_args),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(g_dir);
    cq_backend_destroy(&g_be);
    return r;
}
