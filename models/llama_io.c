/* cherryq: loading LLaMA models from Hugging Face directories and GGUF
 * files, and saving Hugging Face directories. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "cq_io.h"
#include "cq_mem.h"
#include "gguf.h"
#include "hfconfig.h"
#include "llama.h"
#include "safetensors.h"

int cq_llama_alloc(cq_llama **out, const cq_llama_config *cfg, cq_backend *be);
/* defined in models/qmodel.c: loads packed linear weights of a cherryq
 * quantized directory into m (config has a quantization_config) */
int cq_qmodel_load_packed(cq_llama *m, const cq_st_set *st, const char *dir);
int cq_qmodel_is_quantized(const char *dir);

/* RoPE scaling of a GGUF file (llama.cpp's keys): linear as
 * llama.rope.scaling.type "linear" + .factor (or the older
 * llama.rope.scale_linear); "none" or absent: plain. Anything else, and the
 * per-dimension frequency factors llama.cpp stores for LLaMA-3.1's llama3
 * scaling (rope_freqs.weight), is refused rather than run wrong. */
static int gguf_rope_scaling(const cq_gguf *g, const char *path, cq_rope_scaling *s)
{
    memset(s, 0, sizeof *s);
    if (cq_gguf_find_tensor(g, "rope_freqs.weight")) {
        cq_error("%s: rope_freqs.weight (per-dimension RoPE frequency factors, llama.cpp's form of LLaMA-3.1's "
                 "rope scaling) is not supported; load the Hugging Face directory, whose config.json rope_scaling "
                 "cherryq applies",
                 path);
        return CQ_ENOTSUP;
    }
    const char *ty = NULL;
    size_t tl = 0;
    float f = 0;
    int e = cq_gguf_get_str(g, "llama.rope.scaling.type", &ty, &tl);
    if (e && e != CQ_ENOENT) return e;
    if (!e && !(tl == 4 && !memcmp(ty, "none", 4))) {
        if (!(tl == 6 && !memcmp(ty, "linear", 6))) {
            cq_error("%s: llama.rope.scaling.type \"%.*s\" is not supported (cherryq applies linear)", path,
                     (int)(tl > 64 ? 64 : tl), ty);
            return CQ_ENOTSUP;
        }
        if ((e = cq_gguf_get_f32(g, "llama.rope.scaling.factor", &f))) {
            if (e == CQ_ENOENT) cq_error("%s: llama.rope.scaling.type linear needs llama.rope.scaling.factor", path);
            return e == CQ_ENOENT ? CQ_EBADMSG : e;
        }
    } else if (e == CQ_ENOENT && (e = cq_gguf_get_f32(g, "llama.rope.scale_linear", &f)) != CQ_ENOENT) {
        if (e) return e;
        if (f == 1.0f) return 0;
    } else {
        return 0;
    }
    if (!(f > 0) || !isfinite(f)) {
        cq_error("%s: the RoPE scaling factor (%g) must be positive and finite", path, (double)f);
        return CQ_EBADMSG;
    }
    s->type = CQ_ROPE_LINEAR;
    s->factor = f;
    return 0;
}

static void cfg_from_hf(cq_llama_config *c, const cq_hf_config *h)
{
    memset(c, 0, sizeof *c);
    c->vocab = h->vocab_size;
    c->dim = h->hidden_size;
    c->ffn = h->intermediate_size;
    c->n_layers = h->num_hidden_layers;
    c->n_heads = h->num_attention_heads;
    c->n_kv_heads = h->num_key_value_heads;
    c->head_dim = h->head_dim;
    c->max_seq = h->max_position_embeddings;
    c->norm_eps = (float)h->rms_norm_eps;
    c->rope_theta = (float)h->rope_theta;
    c->rope_scaling = h->rope_scaling;
    c->tie_embeddings = h->tie_word_embeddings;
    c->bos = (int32_t)h->bos_token_id;
    c->eos = (int32_t)h->eos_token_id;
}

/* Memory estimate before allocating (issue 8, resource limits): refuse with
 * the figure instead of dying half-way. Parameters are f32 master weights:
 * on a host backend they are all in host memory; on a device backend the
 * host holds at most two f32 copies of the largest tensor while converting
 * (Q/K unpermute), and the device must hold the parameters when its free
 * memory is known. Computed in double: the config is not validated yet. */
static int check_model_memory(const cq_llama_config *c, const cq_backend *be, const char *what)
{
    if (cq_llama_config_validate(c)) return CQ_OK; /* cq_llama_alloc reports it */
    double qd = (double)c->n_heads * (double)c->head_dim, kvd = (double)c->n_kv_heads * (double)c->head_dim;
    double dim = (double)c->dim, ffn = (double)c->ffn, vocab = (double)c->vocab;
    double per_layer = 2 * dim + 2 * dim * qd + 2 * dim * kvd + 3 * dim * ffn;
    double params = vocab * dim * (c->tie_embeddings ? 1 : 2) + (double)c->n_layers * per_layer + dim;
    double largest = vocab * dim;
    if (dim * qd > largest) largest = dim * qd;
    if (dim * ffn > largest) largest = dim * ffn;
    const double overhead = 64.0 * 1024 * 1024;
    int host = !strcmp(be->name, "cpu");
    double need = (host ? 4 * params : 8 * largest) + overhead;
    char msg[4200], count[32];
    if (params >= 1e9) snprintf(count, sizeof count, "%.2fB", params / 1e9);
    else if (params >= 1e6) snprintf(count, sizeof count, "%.1fM", params / 1e6);
    else snprintf(count, sizeof count, "%.0f", params);
    snprintf(msg, sizeof msg, "%s: loading this model (%s parameters, f32)", what, count);
    if (need > 1.8e19) need = 1.8e19;
    int r = cq_mem_check((uint64_t)need, msg);
    if (!r && !host && be->mem_free && 4 * params > (double)be->mem_free) {
        cq_error("%s needs ~%.2f GiB of device memory, only %.2f GiB free on %s", msg, 4 * params / 1073741824.0,
                 (double)be->mem_free / 1073741824.0, be->device);
        r = CQ_ENOMEM;
    }
    return r;
}

/* Copy a file tensor (f32/f16/bf16 data) into parameter p after checking
 * its shape. */
static int load_into(cq_tensor *p, const char *file, const char *name, cq_dtype dt, int ndim, const int64_t *shape,
                     const void *data, const float *override)
{
    if (ndim != p->ndim) goto bad;
    for (int i = 0; i < ndim; i++)
        if (shape[i] != p->ne[i]) goto bad;
    if (override) return cq_tensor_set_f32(p, override);
    if (dt != CQ_F32 && dt != CQ_F16 && dt != CQ_BF16) {
        cq_error("%s: tensor '%s' has dtype %s; only F32, F16 and BF16 are supported", file, name, cq_dtype_name(dt));
        return CQ_ENOTSUP;
    }
    size_t n = (size_t)cq_tensor_numel(p);
    float *host = cq_tensor_host(p);
    if (host) return cq_convert(host, CQ_F32, data, dt, n);
    float *tmp = malloc(n * sizeof(float) + 1);
    if (!tmp) return CQ_ENOMEM;
    int r = cq_convert(tmp, CQ_F32, data, dt, n);
    if (!r) r = cq_tensor_set_f32(p, tmp);
    free(tmp);
    return r;
bad:;
    char want[96];
    cq_tensor_desc(p, want, sizeof want);
    char got[128];
    size_t o = (size_t)snprintf(got, sizeof got, "[");
    for (int i = 0; i < ndim && o < sizeof got; i++)
        o += (size_t)snprintf(got + o, sizeof got - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < sizeof got) snprintf(got + o, sizeof got - o, "]");
    cq_error("%s: tensor '%s' has shape %s but the config says %s", file, name, got, want);
    return CQ_EBADMSG;
}

/* A tensor of layer (block) L, named by fmt ("model.layers.%lld." or
 * "blk.%lld."), must have L < n: a layer past the count means the config
 * and the weights disagree (loading the first layers only would run a
 * different model without a word). */
static int layer_in_range(const char *file, const char *name, const char *fmt, const char *count, int64_t n)
{
    long long L = -1;
    if (sscanf(name, fmt, &L) != 1 || (L >= 0 && L < n)) return CQ_OK;
    cq_error("%s: tensor '%s' is of layer %lld, but %s %lld: the config does not match the weights", file, name, L,
             count, (long long)n);
    return CQ_EBADMSG;
}

static int load_hf_dir(cq_llama **out, const char *dir, cq_backend *be)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cq_hf_config h;
    cq_hf_config_init(&h);
    int r = cq_hf_config_load(&h, path);
    if (r) return r;
    cq_llama_config cfg;
    cfg_from_hf(&cfg, &h);
    cq_st_set *st = NULL;
    r = cq_st_set_open(&st, dir);
    if (r) return r;
    int quantized = cq_qmodel_is_quantized(dir);
    cq_llama *m = NULL;
    /* weights the config does not describe (layer_in_range); a tied
     * model's own lm_head.weight is not used (as in transformers) */
    for (size_t i = 0; !r && i < cq_st_set_count(st); i++)
        r = layer_in_range(dir, cq_st_set_tensor_at(st, i)->name, "model.layers.%lld.",
                           "config.json has num_hidden_layers", cfg.n_layers);
    if (!r && cfg.tie_embeddings && cq_st_set_find(st, "lm_head.weight"))
        cq_warn("%s: lm_head.weight is not used: tie_word_embeddings is true (the output layer is the embedding)",
                dir);
    if (!r) r = check_model_memory(&cfg, be, dir);
    if (!r) r = cq_llama_alloc(&m, &cfg, be);
    for (int i = 0; m && !r && i < m->n_params; i++) {
        cq_tensor *p = m->params[i];
        const cq_st_tensor *t = cq_st_set_find(st, p->name);
        if (!t && quantized && p->ndim == 2 && strstr(p->name, "model.layers.")) continue; /* packed */
        if (!t && p == m->lm_head && !cfg.tie_embeddings && cq_st_set_find(st, "model.embed_tokens.weight") &&
            !cq_st_set_find(st, "lm_head.weight")) {
            cq_error("%s: lm_head.weight is missing and tie_word_embeddings is false", dir);
            r = CQ_EBADMSG;
            break;
        }
        if (!t) {
            cq_error("%s: tensor '%s' is missing from the safetensors files", dir, p->name);
            r = CQ_EBADMSG;
            break;
        }
        if (t->dtype == CQ_DTYPE_COUNT) {
            cq_error("%s: tensor '%s' has unsupported dtype %s", dir, p->name, t->st_dtype);
            r = CQ_ENOTSUP;
            break;
        }
        r = load_into(p, dir, p->name, t->dtype, t->ndim, t->shape, t->data, NULL);
    }
    if (!r && quantized) r = cq_qmodel_load_packed(m, st, dir);
    cq_st_set_close(&st);
    if (r) {
        cq_llama_destroy(&m);
        return r;
    }
    *out = m;
    return CQ_OK;
}

/* An integer metadata value of any GGUF integer type (the getter converts
 * and range-checks; a wrong type is reported by it). A missing optional key
 * leaves *v unchanged. */
static int gguf_u32(const cq_gguf *g, const char *key, int64_t *v, int required)
{
    int r = cq_gguf_get_i64(g, key, v);
    if (r == CQ_ENOENT && !required) return CQ_OK;
    if (r == CQ_ENOENT) {
        cq_error("%s: GGUF metadata key '%s' is missing", cq_gguf_path(g), key);
        return CQ_EBADMSG;
    }
    return r;
}

static int load_gguf(cq_llama **out, const char *path, cq_backend *be)
{
    cq_gguf *g = NULL;
    int r = cq_gguf_open(&g, path);
    if (r) return r;
    const char *arch;
    size_t alen;
    if (cq_gguf_get_str(g, "general.architecture", &arch, &alen) || alen != 5 || memcmp(arch, "llama", 5)) {
        cq_error("%s: general.architecture is not 'llama'; only LLaMA-architecture GGUF files are supported", path);
        cq_gguf_close(&g);
        return CQ_ENOTSUP;
    }
    cq_llama_config c = { 0 };
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.max_seq = 2048;
    c.bos = c.eos = -1;
    r = gguf_u32(g, "llama.embedding_length", &c.dim, 1);
    if (!r) r = gguf_u32(g, "llama.feed_forward_length", &c.ffn, 1);
    if (!r) r = gguf_u32(g, "llama.block_count", &c.n_layers, 1);
    if (!r) r = gguf_u32(g, "llama.attention.head_count", &c.n_heads, 1);
    c.n_kv_heads = c.n_heads;
    if (!r) r = gguf_u32(g, "llama.attention.head_count_kv", &c.n_kv_heads, 0);
    if (!r) r = gguf_u32(g, "llama.context_length", &c.max_seq, 0);
    /* optional keys: absent -> the default; present with a wrong type ->
     * the error (printed by the getter), never a silent default */
    float f;
    int e;
    if (!r && (e = cq_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f)) != CQ_ENOENT) {
        if (e) r = e;
        else c.norm_eps = f;
    }
    if (!r && (e = cq_gguf_get_f32(g, "llama.rope.freq_base", &f)) != CQ_ENOENT) {
        if (e) r = e;
        else c.rope_theta = f;
    }
    if (!r) r = gguf_rope_scaling(g, path, &c.rope_scaling);
    int64_t v = -1;
    /* ids past int32 would wrap into another token (or "none"): the
     * vocabulary check of cq_llama_config_check refuses them as the vocab */
    if (!r && (r = gguf_u32(g, "tokenizer.ggml.bos_token_id", &v, 0)) == 0 && v >= 0)
        c.bos = v > INT32_MAX ? INT32_MAX : (int32_t)v;
    v = -1;
    if (!r && (r = gguf_u32(g, "tokenizer.ggml.eos_token_id", &v, 0)) == 0 && v >= 0)
        c.eos = v > INT32_MAX ? INT32_MAX : (int32_t)v;
    const cq_gguf_tensor *emb = cq_gguf_find_tensor(g, "token_embd.weight");
    if (!r && (!emb || emb->ndim != 2)) {
        cq_error("%s: token_embd.weight is missing or not 2-D", path);
        r = CQ_EBADMSG;
    }
    if (!r) {
        c.vocab = emb->shape[0];
        c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
        c.tie_embeddings = cq_gguf_find_tensor(g, "output.weight") == NULL;
        /* convert_hf_to_gguf.py stores a config head_dim other than
         * dim / heads as key_length (e.g. Mistral-Nemo: 128 vs 5120 / 32) */
        r = gguf_u32(g, "llama.attention.key_length", &c.head_dim, 0);
    }
    /* a block past llama.block_count: metadata and weights disagree */
    for (size_t i = 0; !r && i < cq_gguf_tensor_count(g); i++)
        r = layer_in_range(path, cq_gguf_tensor_at(g, i)->name, "blk.%lld.", "llama.block_count is", c.n_layers);
    cq_llama *m = NULL;
    if (!r) r = check_model_memory(&c, be, path);
    if (!r) r = cq_llama_alloc(&m, &c, be);
    static const char *const gg[CQ_LLAMA_N_LINEAR] = { "attn_q", "attn_k", "attn_v", "attn_output",
                                                       "ffn_gate", "ffn_up", "ffn_down" };
    char name[128];
    for (int i = 0; !r && i < m->n_params; i++) {
        cq_tensor *p = m->params[i];
        const char *pn = p->name;
        int64_t l = -1;
        int lin = -1;
        if (!strcmp(pn, "model.embed_tokens.weight")) snprintf(name, sizeof name, "token_embd.weight");
        else if (!strcmp(pn, "model.norm.weight")) snprintf(name, sizeof name, "output_norm.weight");
        else if (!strcmp(pn, "lm_head.weight")) snprintf(name, sizeof name, "output.weight");
        else {
            char rest[96];
            long long ll;
            if (sscanf(pn, "model.layers.%lld.%95s", &ll, rest) != 2) {
                r = CQ_EBADMSG;
                break;
            }
            l = ll;
            if (!strcmp(rest, "input_layernorm.weight")) snprintf(name, sizeof name, "blk.%lld.attn_norm.weight", ll);
            else if (!strcmp(rest, "post_attention_layernorm.weight"))
                snprintf(name, sizeof name, "blk.%lld.ffn_norm.weight", ll);
            else
                for (int k = 0; k < CQ_LLAMA_N_LINEAR; k++) {
                    char want[96];
                    snprintf(want, sizeof want, "%s.weight", cq_llama_linear_names[k]);
                    if (!strcmp(rest, want)) {
                        lin = k;
                        snprintf(name, sizeof name, "blk.%lld.%s.weight", ll, gg[k]);
                    }
                }
        }
        (void)l;
        const cq_gguf_tensor *t;
        cq_dtype dt;
        r = cq_gguf_get_tensor(g, name, &t, &dt);
        if (r == CQ_ENOENT) cq_error("%s: tensor '%s' (for %s) is missing", path, name, pn);
        if (r) break;
        float *perm = NULL;
        if ((lin == 0 || lin == 1) && t->ndim == 2 && t->shape[0] == p->ne[0] && t->shape[1] == p->ne[1]) {
            /* llama.cpp's converter permuted q/k rows for its interleaved RoPE */
            size_t n = (size_t)t->numel;
            float *src = malloc(n * sizeof(float) + 1);
            perm = malloc(n * sizeof(float) + 1);
            if (!src || !perm) r = CQ_ENOMEM;
            if (!r) r = cq_convert(src, CQ_F32, t->data, dt, n);
            if (!r) r = cq_gguf_unpermute_qk(perm, src, lin == 0 ? c.n_heads : c.n_kv_heads, t->shape[0], t->shape[1]);
            free(src);
        }
        if (!r) r = load_into(p, path, name, dt, t->ndim, t->shape, t->data, perm);
        free(perm);
    }
    cq_gguf_close(&g);
    if (r) {
        cq_llama_destroy(&m);
        return r;
    }
    *out = m;
    return CQ_OK;
}

int cq_llama_load(cq_llama **out, const char *path, cq_backend *be)
{
    CQ_CHECK_ARG(out && path && be, CQ_EINVAL);
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        cq_error("%s: no such file or directory", path);
        return CQ_ENOENT;
    }
    if (S_ISDIR(st.st_mode)) return load_hf_dir(out, path, be);
    return load_gguf(out, path, be);
}

int cq_llama_save(const cq_llama *m, const char *dir, cq_dtype dtype, const char *extra_config_json)
{
    CQ_CHECK_ARG(m && dir, CQ_EINVAL);
    if (dtype != CQ_F32 && dtype != CQ_F16 && dtype != CQ_BF16) {
        cq_error("save: dtype must be f32, f16 or bf16");
        return CQ_EINVAL;
    }
    int r = cq_mkdir_p(dir);
    if (r) return r;
    cq_st_writer *w = NULL;
    r = cq_st_writer_create(&w);
    if (r) return r;
    void **bufs = calloc((size_t)m->n_params, sizeof *bufs);
    if (!bufs) r = CQ_ENOMEM;
    for (int i = 0; !r && i < m->n_params; i++) {
        const cq_tensor *p = m->params[i];
        if (!p) continue;
        /* packed-only linear weights are written by the quantized writer */
        size_t n = (size_t)cq_tensor_numel(p);
        float *f = malloc(n * sizeof(float) + 1);
        if (!f) {
            r = CQ_ENOMEM;
            break;
        }
        r = cq_tensor_get_f32(p, f);
        for (size_t j = 0; !r && j < n; j++)
            if (!isfinite(f[j])) {
                cq_error("save: parameter %s has a non-finite value at element %zu; refusing to write it", p->name, j);
                r = CQ_ERANGE;
            }
        if (!r && dtype != CQ_F32) {
            /* a finite f32 past the target's range (|x| > 65504 for f16)
             * would be written as inf: refuse it, naming the parameter */
            const float lim = dtype == CQ_F16 ? 65504.0f : 3.3895314e38f;
            for (size_t j = 0; !r && j < n; j++)
                if (fabsf(f[j]) > lim) {
                    cq_error("save: parameter %s element %zu is %g, beyond the range of %s (+-%g); refusing to write "
                             "it (f32 keeps it: --dtype f32)",
                             p->name, j, (double)f[j], dtype == CQ_F16 ? "f16" : "bf16", (double)lim);
                    r = CQ_ERANGE;
                }
            void *h = r ? NULL : malloc(n * 2 + 1);
            if (!r && !h) r = CQ_ENOMEM;
            else if (h) {
                cq_convert(h, dtype, f, CQ_F32, n);
                free(f);
                f = h;
            }
        }
        bufs[i] = f;
        if (!r) r = cq_st_writer_add(w, p->name, dtype, p->ndim, p->ne, f);
    }
    char path[4096];
    if (!r) r = cq_st_writer_add_metadata(w, "format", "pt");
    if (!r) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        r = cq_st_writer_write(w, path);
    }
    if (!r) {
        cq_hf_config h;
        cq_hf_config_init(&h);
        const cq_llama_config *c = &m->cfg;
        snprintf(h.architecture, sizeof h.architecture, "LlamaForCausalLM");
        snprintf(h.model_type, sizeof h.model_type, "llama");
        h.hidden_size = c->dim;
        h.intermediate_size = c->ffn;
        h.num_hidden_layers = c->n_layers;
        h.num_attention_heads = c->n_heads;
        h.num_key_value_heads = c->n_kv_heads;
        h.head_dim = c->head_dim;
        h.vocab_size = c->vocab;
        h.max_position_embeddings = c->max_seq;
        h.rms_norm_eps = c->norm_eps;
        h.rope_theta = c->rope_theta;
        h.rope_scaling = c->rope_scaling;
        h.tie_word_embeddings = c->tie_embeddings;
        h.bos_token_id = c->bos;
        h.eos_token_id = c->eos;
        snprintf(h.torch_dtype, sizeof h.torch_dtype, "%s",
                 dtype == CQ_F32 ? "float32" : dtype == CQ_F16 ? "float16" : "bfloat16");
        snprintf(path, sizeof path, "%s/config.json", dir);
        r = cq_hf_config_write(path, &h, extra_config_json);
    }
    cq_st_writer_destroy(&w);
    for (int i = 0; bufs && i < m->n_params; i++) free(bufs[i]);
    free(bufs);
    return r;
}
