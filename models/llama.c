/* cherryq: LLaMA model: parameters, forward graph, loss, KV cache. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "llama.h"

const char *const cq_llama_linear_names[CQ_LLAMA_N_LINEAR] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

int cq_llama_config_validate(const cq_llama_config *c)
{
    CQ_CHECK_ARG(c, CQ_EINVAL);
#define REQ(cond, ...)                                                                                       \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            cq_error("model config: " __VA_ARGS__);                                                          \
            return CQ_EINVAL;                                                                                \
        }                                                                                                    \
    } while (0)
    REQ(c->vocab > 0 && c->vocab < (1 << 24), "vocab_size %lld out of range", (long long)c->vocab);
    REQ(c->dim > 0 && c->dim <= 65536, "hidden_size %lld out of range", (long long)c->dim);
    REQ(c->ffn > 0 && c->ffn <= 262144, "intermediate_size %lld out of range", (long long)c->ffn);
    REQ(c->n_layers > 0 && c->n_layers <= 1024, "num_hidden_layers %lld out of range", (long long)c->n_layers);
    REQ(c->n_heads > 0 && c->n_kv_heads > 0, "head counts must be positive");
    REQ(c->n_heads % c->n_kv_heads == 0, "num_attention_heads (%lld) must be a multiple of num_key_value_heads (%lld)",
        (long long)c->n_heads, (long long)c->n_kv_heads);
    REQ(c->head_dim > 0 && c->head_dim % 2 == 0, "head_dim %lld must be even and positive", (long long)c->head_dim);
    REQ(c->max_seq > 0, "max_position_embeddings must be positive");
    REQ(c->norm_eps > 0 && isfinite(c->norm_eps) && c->rope_theta > 0 && isfinite(c->rope_theta),
        "rms_norm_eps (%g) and rope_theta (%g) must be positive and finite as 32-bit floats", (double)c->norm_eps,
        (double)c->rope_theta);
    REQ(c->bos < c->vocab && c->eos < c->vocab, "bos/eos ids must be below vocab_size");
    const char *why = cq_rope_scaling_check(&c->rope_scaling);
    REQ(!why, "%s (type %d)", why, c->rope_scaling.type);
#undef REQ
    return CQ_OK;
}

int64_t cq_llama_config_n_params(const cq_llama_config *c)
{
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int64_t per = 2 * c->dim + c->dim * qd * 2 + c->dim * kvd * 2 + 3 * c->dim * c->ffn;
    return c->vocab * c->dim * (c->tie_embeddings ? 1 : 2) + c->n_layers * per + c->dim;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float rng_normal(uint64_t *s)
{
    double u1 = ((rng_next(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static int add_param(cq_llama *m, cq_tensor **slot, const char *name, int ndim, int64_t d0, int64_t d1)
{
    int64_t ne[2] = { d0, d1 };
    int r = cq_tensor_new(slot, m->be, CQ_F32, ndim, ne);
    if (r) {
        cq_error("model: cannot allocate parameter %s (%lld x %lld)", name, (long long)d0, (long long)d1);
        return r;
    }
    cq_tensor_set_name(*slot, name);
    m->params[m->n_params++] = *slot;
    return CQ_OK;
}

/* Allocates every parameter (zeroed) with its HF name. */
static int alloc_params(cq_llama *m)
{
    const cq_llama_config *c = &m->cfg;
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->params = calloc((size_t)(c->n_layers * 9 + 3), sizeof *m->params);
    if (!m->layers || !m->params) return CQ_ENOMEM;
    int r = add_param(m, &m->tok_emb, "model.embed_tokens.weight", 2, c->vocab, c->dim);
    char nm[128];
    for (int64_t l = 0; l < c->n_layers && !r; l++) {
        cq_llama_layer *L = &m->layers[l];
        snprintf(nm, sizeof nm, "model.layers.%lld.input_layernorm.weight", (long long)l);
        r = add_param(m, &L->attn_norm, nm, 1, c->dim, 0);
        const int64_t shp[CQ_LLAMA_N_LINEAR][2] = {
            { qd, c->dim }, { kvd, c->dim }, { kvd, c->dim }, { c->dim, qd },
            { c->ffn, c->dim }, { c->ffn, c->dim }, { c->dim, c->ffn },
        };
        for (int i = 0; i < CQ_LLAMA_N_LINEAR && !r; i++) {
            snprintf(nm, sizeof nm, "model.layers.%lld.%s.weight", (long long)l, cq_llama_linear_names[i]);
            r = add_param(m, &L->lin[i], nm, 2, shp[i][0], shp[i][1]);
            if (i == 3 && !r) {
                snprintf(nm, sizeof nm, "model.layers.%lld.post_attention_layernorm.weight", (long long)l);
                r = add_param(m, &L->ffn_norm, nm, 1, c->dim, 0);
            }
        }
    }
    if (!r) r = add_param(m, &m->norm, "model.norm.weight", 1, c->dim, 0);
    if (!r) {
        if (c->tie_embeddings) m->lm_head = m->tok_emb;
        else r = add_param(m, &m->lm_head, "lm_head.weight", 2, c->vocab, c->dim);
    }
    return r;
}

int cq_llama_alloc(cq_llama **out, const cq_llama_config *cfg, cq_backend *be);
int cq_llama_alloc(cq_llama **out, const cq_llama_config *cfg, cq_backend *be)
{
    CQ_CHECK_ARG(out && cfg && be, CQ_EINVAL);
    *out = NULL;
    int r = cq_llama_config_validate(cfg);
    if (r) return r;
    cq_llama *m = calloc(1, sizeof *m);
    if (!m) return CQ_ENOMEM;
    m->cfg = *cfg;
    m->be = be;
    r = alloc_params(m);
    if (r) {
        cq_llama_destroy(&m);
        return r;
    }
    *out = m;
    return CQ_OK;
}

int cq_llama_create(cq_llama **out, const cq_llama_config *cfg, cq_backend *be, uint64_t seed)
{
    int r = cq_llama_alloc(out, cfg, be);
    if (r) return r;
    cq_llama *m = *out;
    uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
    for (int i = 0; i < m->n_params && !r; i++) {
        cq_tensor *p = m->params[i];
        int64_t n = cq_tensor_numel(p);
        float *buf = malloc((size_t)n * sizeof(float));
        if (!buf) {
            r = CQ_ENOMEM;
            break;
        }
        for (int64_t j = 0; j < n; j++) buf[j] = p->ndim == 1 ? 1.0f : 0.02f * rng_normal(&s);
        r = cq_tensor_set_f32(p, buf);
        free(buf);
    }
    if (r) cq_llama_destroy(out);
    return r;
}

static void free_qstate(cq_llama_qstate *q)
{
    cq_tensor_free(&q->mask);
    cq_qlinear_free(&q->packed);
}

void cq_llama_destroy(cq_llama **pm)
{
    if (!pm || !*pm) return;
    cq_llama *m = *pm;
    *pm = NULL;
    cq_llama_cache_reset(m);
    if (m->layers)
        for (int64_t l = 0; l < m->cfg.n_layers; l++)
            for (int i = 0; i < CQ_LLAMA_N_LINEAR; i++) free_qstate(&m->layers[l].q[i]);
    for (int i = 0; i < m->n_params; i++) cq_tensor_free(&m->params[i]);
    free(m->params);
    free(m->layers);
    free(m);
}

cq_tensor *cq_llama_param(const cq_llama *m, const char *name)
{
    if (!m || !name) return NULL;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i] && !strcmp(m->params[i]->name, name)) return m->params[i];
    return NULL;
}

int cq_llama_enable_grad(cq_llama *m)
{
    CQ_CHECK_ARG(m, CQ_EINVAL);
    for (int i = 0; i < m->n_params; i++) {
        if (!m->params[i]) continue;
        int r = cq_param_enable_grad(m->params[i]);
        if (r) return r;
    }
    return CQ_OK;
}

int cq_llama_zero_grad(cq_llama *m)
{
    CQ_CHECK_ARG(m, CQ_EINVAL);
    for (int i = 0; i < m->n_params; i++) {
        if (!m->params[i]) continue;
        int r = cq_tensor_zero_grad(m->params[i]);
        if (r) return r;
    }
    return CQ_OK;
}

int cq_llama_cache_init(cq_llama *m, int64_t batch, int64_t max_len)
{
    CQ_CHECK_ARG(m && batch == 1 && max_len > 0, CQ_EINVAL);
    cq_llama_cache_reset(m);
    const cq_llama_config *c = &m->cfg;
    m->k_cache = calloc((size_t)c->n_layers, sizeof *m->k_cache);
    m->v_cache = calloc((size_t)c->n_layers, sizeof *m->v_cache);
    if (!m->k_cache || !m->v_cache) {
        cq_llama_cache_reset(m);
        return CQ_ENOMEM;
    }
    int64_t ne[4] = { batch, max_len, c->n_kv_heads, c->head_dim };
    for (int64_t l = 0; l < c->n_layers; l++) {
        int r = cq_tensor_new(&m->k_cache[l], m->be, CQ_F32, 4, ne);
        if (!r) r = cq_tensor_new(&m->v_cache[l], m->be, CQ_F32, 4, ne);
        if (r) {
            cq_error("KV cache: cannot allocate %lld positions", (long long)max_len);
            cq_llama_cache_reset(m);
            return r;
        }
    }
    m->cache_batch = batch;
    m->cache_len = max_len;
    return CQ_OK;
}

void cq_llama_cache_reset(cq_llama *m)
{
    if (!m) return;
    if (m->k_cache)
        for (int64_t l = 0; l < m->cfg.n_layers; l++) {
            cq_tensor_free(&m->k_cache[l]);
            cq_tensor_free(&m->v_cache[l]);
        }
    free(m->k_cache);
    free(m->v_cache);
    m->k_cache = m->v_cache = NULL;
    m->cache_len = m->cache_batch = 0;
}

/* x @ w^T with the model's GEMM input dtype; xm: x already converted (or NULL) */
static cq_tensor *mm_linear(cq_ctx *c, cq_dtype dt, cq_tensor *x, cq_tensor *xm, cq_tensor *w)
{
    if (dt == CQ_F32) return cq_linear(c, x, w);
    return cq_linear(c, xm ? xm : cq_cast(c, x, dt), cq_cast(c, w, dt));
}

/* xm: x converted to the compute dtype (shared by the linears of one input) */
static cq_tensor *linear(cq_ctx *c, const cq_llama *m, cq_llama_layer *L, int i, cq_tensor *x, cq_tensor *xm)
{
    cq_llama_qstate *q = &L->q[i];
    if (q->packed) return cq_qlinear_fwd(c, x, q->packed);
    cq_tensor *w = q->bits ? cq_fakequant(c, L->lin[i], q->mask, q->bits, q->group, true) : L->lin[i];
    return mm_linear(c, m->compute, x, xm, w);
}

static bool uses_compute(const cq_llama *m, const cq_llama_layer *L, int i0, int n)
{
    if (m->compute == CQ_F32) return false;
    for (int i = i0; i < i0 + n; i++)
        if (!L->q[i].packed) return true;
    return false;
}

/* One decoder layer on x [B, T, dim] at positions pos0.. */
static cq_tensor *layer_fwd(cq_ctx *c, cq_llama *m, int64_t l, cq_tensor *x, int64_t pos0, bool use_cache)
{
    const cq_llama_config *cf = &m->cfg;
    int64_t B = x->ne[0], T = x->ne[1];
    int64_t H = cf->n_heads, Hk = cf->n_kv_heads, D = cf->head_dim;
    float scale = 1.0f / sqrtf((float)D);
    int64_t qs[4] = { B, T, H, D }, ks[4] = { B, T, Hk, D }, as[3] = { B, T, H * D };
    cq_llama_layer *L = &m->layers[l];
    cq_tensor *h = cq_rmsnorm(c, x, L->attn_norm, cf->norm_eps);
    cq_tensor *hm = uses_compute(m, L, 0, 3) ? cq_cast(c, h, m->compute) : NULL;
    cq_tensor *q = cq_reshape(c, linear(c, m, L, 0, h, hm), 4, qs);
    cq_tensor *k = cq_reshape(c, linear(c, m, L, 1, h, hm), 4, ks);
    cq_tensor *v = cq_reshape(c, linear(c, m, L, 2, h, hm), 4, ks);
    q = cq_rope_scaled(c, q, pos0, cf->rope_theta, &cf->rope_scaling);
    k = cq_rope_scaled(c, k, pos0, cf->rope_theta, &cf->rope_scaling);
    cq_tensor *a;
    if (use_cache) {
        cq_tensor *kslot = cq_view(c, m->k_cache[l], 4, ks, pos0 * Hk * D);
        cq_tensor *vslot = cq_view(c, m->v_cache[l], 4, ks, pos0 * Hk * D);
        if (!kslot || !vslot || cq_copy_into(c, kslot, k) || cq_copy_into(c, vslot, v)) return NULL;
        int64_t all[4] = { B, pos0 + T, Hk, D };
        cq_tensor *ka = cq_view(c, m->k_cache[l], 4, all, 0);
        cq_tensor *va = cq_view(c, m->v_cache[l], 4, all, 0);
        a = cq_attention(c, q, ka, va, pos0, scale);
    } else {
        a = cq_attention(c, q, k, v, 0, scale);
    }
    cq_tensor *o = linear(c, m, L, 3, cq_reshape(c, a, 3, as), NULL);
    x = cq_add(c, x, o);
    h = cq_rmsnorm(c, x, L->ffn_norm, cf->norm_eps);
    hm = uses_compute(m, L, 4, 2) ? cq_cast(c, h, m->compute) : NULL;
    cq_tensor *g = linear(c, m, L, 4, h, hm);
    cq_tensor *u = linear(c, m, L, 5, h, hm);
    return cq_add(c, x, linear(c, m, L, 6, cq_swiglu(c, g, u), NULL));
}

/* the checkpointed region: decoder layer `l` at position 0, no cache */
static cq_tensor *layer_region(cq_ctx *c, void *user, int64_t l, cq_tensor *x)
{
    return layer_fwd(c, user, l, x, 0, false);
}

static cq_tensor *forward_hidden(cq_ctx *c, cq_llama *m, cq_tensor *ids, int64_t pos0, bool use_cache)
{
    if (!c || !m || !ids || cq_ctx_status(c)) return NULL;
    const cq_llama_config *cf = &m->cfg;
    if (ids->ndim != 2 || ids->dtype != CQ_I32) {
        char d[96];
        cq_error("llama forward: ids %s must be i32 [B, T]", cq_tensor_desc(ids, d, sizeof d));
        cq_ctx_set_error(c, CQ_EINVAL);
        return NULL;
    }
    int64_t B = ids->ne[0], T = ids->ne[1];
    if (pos0 + T > cf->max_seq) {
        cq_error("llama forward: positions up to %lld exceed the model's context of %lld", (long long)(pos0 + T),
                 (long long)cf->max_seq);
        cq_ctx_set_error(c, CQ_EINVAL);
        return NULL;
    }
    if (use_cache && (!m->k_cache || B != m->cache_batch || pos0 + T > m->cache_len)) {
        cq_error("llama forward: KV cache not initialized for batch %lld and %lld positions", (long long)B,
                 (long long)(pos0 + T));
        cq_ctx_set_error(c, CQ_EINVAL);
        return NULL;
    }
    if (m->compute != CQ_F32 && m->compute != CQ_BF16 && m->compute != CQ_F16) {
        cq_error("llama forward: compute dtype must be f32, bf16 or f16 (got %s)", cq_dtype_name(m->compute));
        cq_ctx_set_error(c, CQ_EINVAL);
        return NULL;
    }
    bool ckpt = m->checkpoint && !use_cache && pos0 == 0;
    cq_tensor *x = cq_embed(c, m->tok_emb, ids); /* [B, T, dim] */
    for (int64_t l = 0; l < cf->n_layers && x; l++)
        x = ckpt ? cq_checkpoint(c, layer_region, m, l, x) : layer_fwd(c, m, l, x, pos0, use_cache);
    return cq_rmsnorm(c, x, m->norm, cf->norm_eps);
}

cq_tensor *cq_llama_hidden(cq_ctx *c, cq_llama *m, cq_tensor *ids) { return forward_hidden(c, m, ids, 0, false); }

cq_tensor *cq_llama_forward(cq_ctx *c, cq_llama *m, cq_tensor *ids, int64_t pos0, bool use_cache)
{
    cq_tensor *x = forward_hidden(c, m, ids, pos0, use_cache);
    return x ? mm_linear(c, m->compute, x, NULL, m->lm_head) : NULL;
}

cq_tensor *cq_llama_loss(cq_ctx *c, cq_llama *m, cq_tensor *ids, cq_tensor *targets, float scale)
{
    if (m && m->xent_chunk > 0) {
        cq_tensor *h = forward_hidden(c, m, ids, 0, false);
        return h ? cq_linear_xent(c, h, m->lm_head, targets, scale, m->xent_chunk, m->compute) : NULL;
    }
    cq_tensor *logits = cq_llama_forward(c, m, ids, 0, false);
    if (!logits) return NULL;
    return cq_cross_entropy(c, logits, targets, scale, NULL);
}
