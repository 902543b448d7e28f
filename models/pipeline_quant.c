/* cherryq: cherry plans, round-to-nearest and GPTQ quantization of a LLaMA
 * model, the QAT fake-quant state, and the heterogeneity scores. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "pipeline.h"

static float *download(const cq_tensor *t)
{
    size_t n = (size_t)cq_tensor_numel(t);
    float *f = malloc(n * sizeof(float) + 1);
    if (f && cq_tensor_get_f32(t, f)) {
        free(f);
        return NULL;
    }
    return f;
}

static int need_dense(const cq_llama *m, int64_t k, const char *what)
{
    if (cq_linear_weight(m, k)) return CQ_OK;
    char nm[96];
    cq_error("%s: %s has no dense weight (the model is already quantized)", what,
             cq_linear_name(nm, sizeof nm, k / CQ_LLAMA_N_LINEAR, (int)(k % CQ_LLAMA_N_LINEAR)));
    return CQ_EINVAL;
}

/* ------------------------------------------------------------ plan */

void cq_qplan_free(cq_qplan *p)
{
    if (!p) return;
    for (int64_t i = 0; p->mask && i < p->n; i++) free(p->mask[i]);
    free(p->mask);
    memset(p, 0, sizeof *p);
}

int cq_qplan_make(cq_qplan *p, const cq_llama *m, const cq_impact *imp, const cq_qspec *s)
{
    CQ_CHECK_ARG(p && m && s, CQ_EINVAL);
    memset(p, 0, sizeof *p);
    int r = cq_quant_check(s->bits, s->group);
    if (r) return r;
    int64_t n = cq_n_linears(m);
    p->n = n;
    p->mask = calloc((size_t)n, sizeof *p->mask);
    if (!p->mask) return CQ_ENOMEM;
    cq_select_opts so = s->sel;
    so.bits = s->bits;
    so.group = s->group;
    bool need_f = s->cherries && (so.criterion == CQ_SEL_IMPACT || so.criterion == CQ_SEL_LOSS_AWARE);
    if (need_f && !imp) {
        cq_error("cherry selection by %s needs an impact file",
                 so.criterion == CQ_SEL_IMPACT ? "impact" : "loss-aware estimate");
        cq_qplan_free(p);
        return CQ_EINVAL;
    }
    if (s->cherries && so.k_rule != CQ_K_FRACTION) {
        const cq_tensor *w0 = cq_linear_weight(m, 0);
        if (w0 && cq_cherry_k(w0->ne[1], so.k_rule, so.k) < 0) {
            cq_qplan_free(p);
            return CQ_EINVAL;
        }
    }
    for (int64_t k = 0; k < n && !r; k++) {
        r = need_dense(m, k, "plan");
        if (r) break;
        const cq_tensor *t = cq_linear_weight(m, k);
        int64_t out = t->ne[0], in = t->ne[1];
        p->nweights += out * in;
        if (!s->cherries) continue;
        const float *F = NULL;
        if (need_f) {
            F = cq_impact_get(imp, t->name, out, in);
            if (!F) {
                cq_error("the impact file has no entry for %s [%lld, %lld]: it does not match the model", t->name,
                         (long long)out, (long long)in);
                r = CQ_EINVAL;
                break;
            }
        }
        float *W = download(t);
        p->mask[k] = malloc((size_t)(out * in) + 1);
        if (!W || !p->mask[k]) r = CQ_ENOMEM;
        if (!r) {
            so.seed = s->sel.seed + (uint64_t)k * 0x9E3779B97F4A7C15ull;
            r = cq_select_cherries(p->mask[k], W, F, out, in, &so);
            if (r == CQ_ERANGE)   /* the selector said which element: say which matrix */
                cq_error("cherry selection of %s [%lld x %lld]: the weights or their impact are not finite", t->name,
                         (long long)out, (long long)in);
        }
        free(W);
        for (int64_t j = 0; !r && j < out * in; j++) p->nnz += p->mask[k][j] != 0;
    }
    if (r) cq_qplan_free(p);
    return r;
}

/* ------------------------------------------------------------ RTN */

int cq_quantize_rtn(cq_qpacked *q, const cq_llama *m, const cq_qplan *p, const cq_qspec *s)
{
    CQ_CHECK_ARG(q && m && p && s && p->n == cq_n_linears(m), CQ_EINVAL);
    memset(q, 0, sizeof *q);
    q->n = p->n;
    q->w = calloc((size_t)p->n, sizeof *q->w);
    if (!q->w) return CQ_ENOMEM;
    int r = CQ_OK;
    for (int64_t k = 0; k < p->n && !r; k++) {
        r = need_dense(m, k, "rtn");
        if (r) break;
        const cq_tensor *t = cq_linear_weight(m, k);
        float *W = download(t);
        if (!W) r = CQ_ENOMEM;
        if (!r) r = cq_qpack(&q->w[k], W, p->mask[k], t->ne[0], t->ne[1], s->bits, s->group);
        if (r == CQ_ERANGE) cq_error("rtn: %s has non-finite or huge weights", t->name);
        free(W);
    }
    if (r) cq_qpacked_free(q);
    return r;
}

/* ------------------------------------------------------------ GPTQ */

/* Adds 2 X^T X (X = x viewed as [rows, in]) into H (double, [in, in]). */
static int gram_add(cq_ctx *c, cq_tensor *x, double *H, float *tmp)
{
    int64_t in = x->ne[x->ndim - 1], rows = cq_tensor_numel(x) / in;
    int64_t ne[2] = { rows, in };
    cq_tensor *x2 = cq_reshape(c, x, 2, ne);
    cq_tensor *g = cq_matmul(c, x2, x2, true, false);
    if (!g) return cq_ctx_status(c) ? cq_ctx_status(c) : CQ_EINVAL;
    int r = cq_tensor_get_f32(g, tmp);
    if (r) return r;
    for (int64_t i = 0; i < in * in; i++) H[i] += 2.0 * (double)tmp[i];
    return CQ_OK;
}

/* Decoder layer l on x [1, T, dim] with the dense linears (what llama.c's
 * forward computes); with H non-NULL, the input Gram matrices of the linears
 * are accumulated: H[0] q/k/v, H[1] o, H[2] gate/up, H[3] down. */
static cq_tensor *layer_fwd(cq_ctx *c, cq_llama *m, int64_t l, cq_tensor *x, double **H, float *tmp, int *st)
{
    const cq_llama_config *cf = &m->cfg;
    cq_llama_layer *L = &m->layers[l];
    int64_t T = x->ne[1], Hq = cf->n_heads, Hk = cf->n_kv_heads, D = cf->head_dim;
    int64_t qs[4] = { 1, T, Hq, D }, ks[4] = { 1, T, Hk, D }, as[3] = { 1, T, Hq * D };
    cq_tensor *h = cq_rmsnorm(c, x, L->attn_norm, cf->norm_eps);
    if (H && h && !*st) *st = gram_add(c, h, H[0], tmp);
    cq_tensor *q = cq_reshape(c, cq_linear(c, h, L->lin[0]), 4, qs);
    cq_tensor *k = cq_reshape(c, cq_linear(c, h, L->lin[1]), 4, ks);
    cq_tensor *v = cq_reshape(c, cq_linear(c, h, L->lin[2]), 4, ks);
    q = cq_rope_scaled(c, q, 0, cf->rope_theta, &cf->rope_scaling);
    k = cq_rope_scaled(c, k, 0, cf->rope_theta, &cf->rope_scaling);
    cq_tensor *a = cq_reshape(c, cq_attention(c, q, k, v, 0, 1.0f / sqrtf((float)D)), 3, as);
    if (H && a && !*st) *st = gram_add(c, a, H[1], tmp);
    x = cq_add(c, x, cq_linear(c, a, L->lin[3]));
    h = cq_rmsnorm(c, x, L->ffn_norm, cf->norm_eps);
    if (H && h && !*st) *st = gram_add(c, h, H[2], tmp);
    cq_tensor *s = cq_swiglu(c, cq_linear(c, h, L->lin[4]), cq_linear(c, h, L->lin[5]));
    if (H && s && !*st) *st = gram_add(c, s, H[3], tmp);
    x = cq_add(c, x, cq_linear(c, s, L->lin[6]));
    if (!x && !*st) *st = cq_ctx_status(c) ? cq_ctx_status(c) : CQ_EINVAL;
    return x;
}

int cq_quantize_gptq(cq_qpacked *q, cq_llama *m, const cq_qplan *p, const cq_qspec *s, const cq_calib *cal,
                     const cq_gptq_opts *o, cq_progress_fn fn, void *user)
{
    CQ_CHECK_ARG(q && m && p && s && cal && cal->n > 0 && p->n == cq_n_linears(m), CQ_EINVAL);
    memset(q, 0, sizeof *q);
    float damp = o && o->damp > 0 ? o->damp : 0.01f;
    int block = o && o->block > 0 ? o->block : 128;
    const cq_llama_config *cf = &m->cfg;
    for (int64_t k = 0; k < p->n; k++) {
        int r = need_dense(m, k, "gptq");
        if (r) return r;
        const cq_llama_qstate *qs = &m->layers[k / CQ_LLAMA_N_LINEAR].q[k % CQ_LLAMA_N_LINEAR];
        if (qs->bits || qs->packed) {
            cq_error("gptq: the model's linears must be dense (no fake-quant state)");
            return CQ_EINVAL;
        }
    }
    if (cal->seqlen > cf->max_seq) {
        cq_error("gptq: calibration windows of %lld tokens exceed the model's context of %lld",
                 (long long)cal->seqlen, (long long)cf->max_seq);
        return CQ_EINVAL;
    }
    int64_t T = cal->seqlen, dim = cf->dim, qd = cf->n_heads * cf->head_dim, ffn = cf->ffn;
    int64_t hin[4] = { dim, qd, dim, ffn };
    const int hidx[CQ_LLAMA_N_LINEAR] = { 0, 0, 0, 1, 2, 2, 3 };
    int64_t maxin = dim > qd ? dim : qd;
    maxin = maxin > ffn ? maxin : ffn;
    q->n = p->n;
    q->w = calloc((size_t)p->n, sizeof *q->w);
    size_t nx = (size_t)(cal->n * T * dim);
    float *X = malloc(nx * sizeof(float));
    float *tmp = malloc((size_t)(maxin * maxin) * sizeof(float));
    float *Hf = malloc((size_t)(maxin * maxin) * sizeof(float));
    double *H[4] = { 0 };
    for (int i = 0; i < 4; i++) H[i] = malloc((size_t)(hin[i] * hin[i]) * sizeof(double));
    cq_ctx *c = NULL;
    int r = (!q->w || !X || !tmp || !Hf || !H[0] || !H[1] || !H[2] || !H[3]) ? CQ_ENOMEM : CQ_OK;
    if (!r) r = cq_ctx_create(&c, m->be);
    if (!r) cq_ctx_set_grad(c, false);
    /* embeddings of every window */
    for (int64_t w = 0; !r && w < cal->n; w++) {
        cq_ctx_reset(c);
        int64_t ne[1] = { T };
        cq_tensor *ids = cq_new(c, CQ_I32, 1, ne);
        if (!ids) r = CQ_ENOMEM;
        for (int64_t t = 0; !r && t < T; t++)
            if (cal->ids[w * (T + 1) + t] < 0 || cal->ids[w * (T + 1) + t] >= cf->vocab) {
                cq_error("gptq: calibration token id %d outside the vocabulary", cal->ids[w * (T + 1) + t]);
                r = CQ_EINVAL;
            }
        if (!r) r = cq_tensor_set(ids, cal->ids + w * (T + 1), (size_t)T * sizeof(int32_t));
        cq_tensor *e = r ? NULL : cq_embed(c, m->tok_emb, ids);
        if (!r && !e) r = cq_ctx_status(c) ? cq_ctx_status(c) : CQ_EINVAL;
        if (!r) r = cq_tensor_get_f32(e, X + w * T * dim);
    }
    int64_t xne[3] = { 1, T, dim };
    for (int64_t l = 0; !r && l < cf->n_layers; l++) {
        for (int i = 0; i < 4; i++) memset(H[i], 0, (size_t)(hin[i] * hin[i]) * sizeof(double));
        /* 1. inputs of every linear of layer l (previous layers quantized) */
        for (int64_t w = 0; !r && w < cal->n; w++) {
            cq_ctx_reset(c);
            cq_tensor *x = cq_new(c, CQ_F32, 3, xne);
            if (!x) r = CQ_ENOMEM;
            if (!r) r = cq_tensor_set_f32(x, X + w * T * dim);
            if (!r) layer_fwd(c, m, l, x, H, tmp, &r);
        }
        /* 2. quantize the 7 linears */
        for (int i = 0; !r && i < CQ_LLAMA_N_LINEAR; i++) {
            int64_t k = l * CQ_LLAMA_N_LINEAR + i;
            cq_tensor *t = m->layers[l].lin[i];
            int64_t out = t->ne[0], in = t->ne[1];
            const double *Hd = H[hidx[i]];
            for (int64_t j = 0; j < in * in; j++) Hf[j] = (float)(Hd[j] / (double)cal->n);
            float *W = download(t);
            if (!W) r = CQ_ENOMEM;
            if (!r) r = cq_gptq_quantize(W, Hf, p->mask[k], out, in, s->bits, s->group, damp, block, 1, &q->w[k]);
            if (r) cq_error("gptq: quantizing %s failed", t->name);
            if (!r) r = cq_tensor_set_f32(t, W);
            free(W);
        }
        /* 3. outputs of the quantized layer feed the next one */
        for (int64_t w = 0; !r && w < cal->n; w++) {
            cq_ctx_reset(c);
            cq_tensor *x = cq_new(c, CQ_F32, 3, xne);
            if (!x) r = CQ_ENOMEM;
            if (!r) r = cq_tensor_set_f32(x, X + w * T * dim);
            cq_tensor *y = r ? NULL : layer_fwd(c, m, l, x, NULL, NULL, &r);
            if (!r) r = cq_tensor_get_f32(y, X + w * T * dim);
        }
        if (!r && fn) fn(user, "gptq", l + 1, cf->n_layers, 0);
    }
    cq_ctx_destroy(&c);
    free(X);
    free(tmp);
    free(Hf);
    for (int i = 0; i < 4; i++) free(H[i]);
    if (r) cq_qpacked_free(q);
    return r;
}

/* ------------------------------------------------------------ QAT state */

void cq_qat_clear(cq_llama *m)
{
    if (!m) return;
    for (int64_t k = 0; k < cq_n_linears(m); k++) {
        cq_llama_qstate *qs = &m->layers[k / CQ_LLAMA_N_LINEAR].q[k % CQ_LLAMA_N_LINEAR];
        cq_tensor_free(&qs->mask);
        qs->bits = qs->group = 0;
    }
}

int cq_qat_setup(cq_llama *m, const cq_qplan *p, const cq_qspec *s)
{
    CQ_CHECK_ARG(m && p && s && p->n == cq_n_linears(m), CQ_EINVAL);
    int r = cq_quant_check(s->bits, s->group);
    if (r) return r;
    cq_qat_clear(m);
    for (int64_t k = 0; k < p->n && !r; k++) {
        r = need_dense(m, k, "qat");
        if (r) break;
        cq_llama_qstate *qs = &m->layers[k / CQ_LLAMA_N_LINEAR].q[k % CQ_LLAMA_N_LINEAR];
        const cq_tensor *t = cq_linear_weight(m, k);
        if (p->mask[k]) {
            int any = 0;
            for (int64_t j = 0; j < cq_tensor_numel(t) && !any; j++) any = p->mask[k][j] != 0;
            if (any) {
                r = cq_tensor_new(&qs->mask, m->be, CQ_U8, 2, t->ne);
                if (!r) r = cq_tensor_set(qs->mask, p->mask[k], (size_t)cq_tensor_numel(t));
            }
        }
        qs->bits = s->bits;
        qs->group = s->group;
    }
    if (r) cq_qat_clear(m);
    return r;
}

/* ------------------------------------------------------------ heterogeneity */

int cq_hetero_analyze(const cq_llama *m, const cq_impact *imp, cq_hetero **rows, int *n)
{
    CQ_CHECK_ARG(m && imp && rows && n, CQ_EINVAL);
    *rows = NULL;
    *n = 0;
    int64_t nl = cq_n_linears(m);
    cq_hetero *h = calloc((size_t)nl, sizeof *h);
    if (!h) return CQ_ENOMEM;
    int r = CQ_OK;
    for (int64_t k = 0; k < nl && !r; k++) {
        r = need_dense(m, k, "analyze");
        if (r) break;
        const cq_tensor *t = cq_linear_weight(m, k);
        cq_hetero *e = &h[k];
        e->layer = k / CQ_LLAMA_N_LINEAR;
        e->lin = (int)(k % CQ_LLAMA_N_LINEAR);
        snprintf(e->name, sizeof e->name, "%s", t->name);
        e->out = t->ne[0];
        e->in = t->ne[1];
        const float *F = cq_impact_get(imp, t->name, e->out, e->in);
        if (!F) {
            cq_error("analyze: the impact file has no entry for %s: it does not match the model", t->name);
            r = CQ_EINVAL;
            break;
        }
        float *W = download(t);
        if (!W) r = CQ_ENOMEM;
        if (!r) r = cq_hetero_score(F, e->out * e->in, &e->impact);
        if (!r) r = cq_hetero_score_abs(W, e->out * e->in, &e->magnitude);
        free(W);
    }
    if (r) {
        free(h);
        return r;
    }
    *rows = h;
    *n = (int)nl;
    return CQ_OK;
}
