/* cherryq: Hugging Face config.json reader/writer. See hfconfig.h. */
#include "hfconfig.h"
#include "cq_io.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define CONFIG_MAX_BYTES (16u * 1024u * 1024u)

void cq_hf_config_init(cq_hf_config *c)
{
    if (!c) return;
    memset(c, 0, sizeof *c);
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->max_position_embeddings = 2048;
    c->bos_token_id = -1;
    c->eos_token_id = -1;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src);
}

/* Reads an integer field. Returns 1 if set, 0 if absent (or null when
 * null_ok), negative on a type error (logged). */
static int get_int(const cJSON *root, const char *key, int64_t *out, const char *path)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j)) return 0;
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) ||
        fabs(j->valuedouble) > 9007199254740992.0) {
        cq_error("%s: field \"%s\" must be an integer", path, key);
        return CQ_EBADMSG;
    }
    *out = (int64_t)j->valuedouble;
    return 1;
}

static int get_num(const cJSON *root, const char *key, double *out, const char *path)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j)) return 0;
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble)) {
        cq_error("%s: field \"%s\" must be a number", path, key);
        return CQ_EBADMSG;
    }
    *out = j->valuedouble;
    return 1;
}

/* token id: integer, or array of integers (first taken), or null */
static int get_token_id(const cJSON *root, const char *key, int64_t *out, const char *path)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j || cJSON_IsNull(j)) return 0;
    if (cJSON_IsArray(j)) {
        if (cJSON_GetArraySize(j) == 0) return 0;
        j = cJSON_GetArrayItem(j, 0);
    }
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || j->valuedouble < 0 ||
        j->valuedouble > 9007199254740992.0) {
        cq_error("%s: field \"%s\" must be a non-negative integer or an array of them", path, key);
        return CQ_EBADMSG;
    }
    *out = (int64_t)j->valuedouble;
    return 1;
}

/* rope_scaling (transformers' modeling_rope_utils): the type under
 * "rope_type" (or the older "type"), its parameters as numbers. */
static int parse_rope_scaling(cq_hf_config *c, const cJSON *rs, const char *path)
{
    if (!cJSON_IsObject(rs)) {
        cq_error("%s: field \"rope_scaling\" must be an object or null", path);
        return CQ_EBADMSG;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsString(t) || !t->valuestring) {
        cq_error("%s: rope_scaling has no string \"rope_type\" (or \"type\")", path);
        return CQ_EBADMSG;
    }
    copy_str(c->rope_scaling_type, sizeof c->rope_scaling_type, t->valuestring);
    const char *ty = t->valuestring;
    cq_rope_scaling *s = &c->rope_scaling;
    memset(s, 0, sizeof *s);
    if (!strcmp(ty, "default")) return 0;
    if (!strcmp(ty, "dynamic")) {
        /* dynamic NTK changes the frequencies only past
         * max_position_embeddings, where no sequence of cherryq goes */
        cq_log(CQ_LOG_INFO, "%s: rope_scaling \"dynamic\": plain RoPE, which it is up to max_position_embeddings",
               path);
        return 0;
    }
    const bool llama3 = !strcmp(ty, "llama3");
    if (!llama3 && strcmp(ty, "linear")) {
        cq_error("%s: rope_scaling type \"%s\" is not supported (cherryq applies linear, llama3, and dynamic "
                 "within the context): its results would be wrong",
                 path, ty);
        return CQ_ENOTSUP;
    }
    static const char *const keys[4] = { "factor", "low_freq_factor", "high_freq_factor",
                                          "original_max_position_embeddings" };
    double v[4] = { 0, 0, 0, 0 };
    for (int i = 0; i < (llama3 ? 4 : 1); i++) {
        int r = get_num(rs, keys[i], &v[i], path);
        if (r < 0) return r;
        if (r == 0) {
            cq_error("%s: rope_scaling \"%s\" needs \"%s\"", path, ty, keys[i]);
            return CQ_EBADMSG;
        }
    }
    s->type = llama3 ? CQ_ROPE_LLAMA3 : CQ_ROPE_LINEAR;
    s->factor = (float)v[0];
    s->low_freq_factor = (float)v[1];
    s->high_freq_factor = (float)v[2];
    s->original_max = (float)v[3];
    return 0;
}

static int supported_arch(const char *a)
{
    return !strcmp(a, "LlamaForCausalLM") || !strcmp(a, "MistralForCausalLM");
}

int cq_hf_config_validate(const cq_hf_config *c, const char *what)
{
    CQ_CHECK_ARG(c, CQ_EINVAL);
    if (!what) what = "config";
    struct {
        const char *name;
        int64_t v;
    } pos[] = {
        {"hidden_size", c->hidden_size},
        {"intermediate_size", c->intermediate_size},
        {"num_hidden_layers", c->num_hidden_layers},
        {"num_attention_heads", c->num_attention_heads},
        {"num_key_value_heads", c->num_key_value_heads},
        {"head_dim", c->head_dim},
        {"vocab_size", c->vocab_size},
        {"max_position_embeddings", c->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        if (pos[i].v <= 0) {
            cq_error("%s: field \"%s\" must be positive (got %" PRId64 ")", what, pos[i].name,
                     pos[i].v);
            return CQ_EBADMSG;
        }
    }
    if (c->head_dim % 2) {
        cq_error("%s: field \"head_dim\" must be even for RoPE (got %" PRId64 ")", what,
                 c->head_dim);
        return CQ_EBADMSG;
    }
    if (c->num_attention_heads % c->num_key_value_heads) {
        cq_error("%s: field \"num_key_value_heads\" (%" PRId64 ") does not divide "
                 "num_attention_heads (%" PRId64 ")", what, c->num_key_value_heads,
                 c->num_attention_heads);
        return CQ_EBADMSG;
    }
    if (c->bos_token_id >= c->vocab_size || c->eos_token_id >= c->vocab_size) {
        cq_error("%s: \"bos_token_id\" (%" PRId64 ") and \"eos_token_id\" (%" PRId64 ") must be below vocab_size (%" PRId64
                 ")",
                 what, c->bos_token_id, c->eos_token_id, c->vocab_size);
        return CQ_EBADMSG;
    }
    /* the model computes in 32-bit floats: 1e300 would become inf, 1e-50 zero */
    if (!((float)c->rms_norm_eps > 0) || !isfinite((float)c->rms_norm_eps)) {
        cq_error("%s: field \"rms_norm_eps\" (%g) must be positive and finite as a 32-bit float", what,
                 c->rms_norm_eps);
        return CQ_EBADMSG;
    }
    if (!((float)c->rope_theta > 0) || !isfinite((float)c->rope_theta)) {
        cq_error("%s: field \"rope_theta\" (%g) must be positive and finite as a 32-bit float", what,
                 c->rope_theta);
        return CQ_EBADMSG;
    }
    const cq_rope_scaling *s = &c->rope_scaling;
    const char *why = cq_rope_scaling_check(s);
    if (why) {
        cq_error("%s: %s (factor %g, low_freq_factor %g, high_freq_factor %g, original_max_position_embeddings %g)",
                 what, why, (double)s->factor, (double)s->low_freq_factor, (double)s->high_freq_factor,
                 (double)s->original_max);
        return CQ_EBADMSG;
    }
    return CQ_OK;
}

static int parse_root(cq_hf_config *c, const cJSON *root, const char *path)
{
    /* architecture */
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt && !cJSON_IsNull(mt)) {
        if (!cJSON_IsString(mt)) {
            cq_error("%s: field \"model_type\" must be a string", path);
            return CQ_EBADMSG;
        }
        copy_str(c->model_type, sizeof c->model_type, mt->valuestring);
    }
    if (archs && !cJSON_IsNull(archs)) {
        const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
        if (!cJSON_IsString(a0)) {
            cq_error("%s: field \"architectures\" must be a non-empty array of strings", path);
            return CQ_EBADMSG;
        }
        copy_str(c->architecture, sizeof c->architecture, a0->valuestring);
        if (!supported_arch(a0->valuestring)) {
            cq_error("%s: architecture '%s' is not supported (LlamaForCausalLM, "
                     "MistralForCausalLM only)", path, a0->valuestring);
            return CQ_ENOTSUP;
        }
    } else if (c->model_type[0]) {
        if (!strcmp(c->model_type, "llama")) copy_str(c->architecture, sizeof c->architecture,
                                                      "LlamaForCausalLM");
        else if (!strcmp(c->model_type, "mistral"))
            copy_str(c->architecture, sizeof c->architecture, "MistralForCausalLM");
        else {
            cq_error("%s: model_type '%s' is not supported (llama, mistral only)", path,
                     c->model_type);
            return CQ_ENOTSUP;
        }
    } else {
        cq_error("%s: neither \"architectures\" nor \"model_type\" is present", path);
        return CQ_EBADMSG;
    }
    if (!c->model_type[0])
        copy_str(c->model_type, sizeof c->model_type,
                 strcmp(c->architecture, "MistralForCausalLM") ? "llama" : "mistral");

    struct {
        const char *key;
        int64_t *dst;
        int required;
    } ints[] = {
        {"hidden_size", &c->hidden_size, 1},
        {"intermediate_size", &c->intermediate_size, 1},
        {"num_hidden_layers", &c->num_hidden_layers, 1},
        {"num_attention_heads", &c->num_attention_heads, 1},
        {"vocab_size", &c->vocab_size, 1},
        {"num_key_value_heads", &c->num_key_value_heads, 0},
        {"head_dim", &c->head_dim, 0},
        {"max_position_embeddings", &c->max_position_embeddings, 0},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int r = get_int(root, ints[i].key, ints[i].dst, path);
        if (r < 0) return r;
        if (r == 0 && ints[i].required) {
            cq_error("%s: required field \"%s\" is missing", path, ints[i].key);
            return CQ_EBADMSG;
        }
    }
    int r;
    /* Mistral's sliding-window attention equals full causal attention on
     * sequences no longer than the window: the context stops there */
    int64_t window = 0;
    if ((r = get_int(root, "sliding_window", &window, path)) < 0) return r;
    if (r == 1 && window > 0 && window < c->max_position_embeddings) {
        cq_log(CQ_LOG_INFO, "%s: sliding_window %" PRId64 ": the context is capped there (from %" PRId64 ")", path,
               window, c->max_position_embeddings);
        c->max_position_embeddings = window;
    }
    if ((r = get_num(root, "rms_norm_eps", &c->rms_norm_eps, path)) < 0) return r;
    if ((r = get_num(root, "rope_theta", &c->rope_theta, path)) < 0) return r;
    if ((r = get_token_id(root, "bos_token_id", &c->bos_token_id, path)) < 0) return r;
    if ((r = get_token_id(root, "eos_token_id", &c->eos_token_id, path)) < 0) return r;

    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (tie && !cJSON_IsNull(tie)) {
        if (!cJSON_IsBool(tie)) {
            cq_error("%s: field \"tie_word_embeddings\" must be true or false", path);
            return CQ_EBADMSG;
        }
        c->tie_word_embeddings = cJSON_IsTrue(tie);
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
    if (!dt || cJSON_IsNull(dt)) dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    if (dt && !cJSON_IsNull(dt)) {
        if (!cJSON_IsString(dt)) {
            cq_error("%s: field \"torch_dtype\" must be a string", path);
            return CQ_EBADMSG;
        }
        copy_str(c->torch_dtype, sizeof c->torch_dtype, dt->valuestring);
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs) && (r = parse_rope_scaling(c, rs, path)) < 0) return r;

    if (c->num_key_value_heads == 0) c->num_key_value_heads = c->num_attention_heads;
    if (c->head_dim == 0) {
        if (c->num_attention_heads > 0 && c->hidden_size % c->num_attention_heads) {
            cq_error("%s: field \"num_attention_heads\" (%" PRId64 ") does not divide "
                     "hidden_size (%" PRId64 ")", path, c->num_attention_heads, c->hidden_size);
            return CQ_EBADMSG;
        }
        if (c->num_attention_heads > 0) c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    return cq_hf_config_validate(c, path);
}

int cq_hf_config_parse(cq_hf_config *cfg, const char *json, size_t len, const char *path)
{
    CQ_CHECK_ARG(cfg && json, CQ_EINVAL);
    if (!path) path = "config.json";
    cq_hf_config c;
    cq_hf_config_init(&c);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t off = end && end >= json ? (size_t)(end - json) : 0;
        /* line/column make the message useful for hand-edited files */
        size_t line = 1, col = 1;
        for (size_t i = 0; i < off && i < len; i++) {
            if (json[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        cq_error("%s: malformed JSON at byte %zu (line %zu, column %zu)", path, off, line, col);
        return CQ_EBADMSG;
    }
    int r;
    if (!cJSON_IsObject(root)) {
        cq_error("%s: top level is not a JSON object", path);
        r = CQ_EBADMSG;
    } else {
        r = parse_root(&c, root, path);
    }
    cJSON_Delete(root);
    if (!r) *cfg = c;
    return r;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *config_path(const char *path)
{
    size_t n = strlen(path) + sizeof "/config.json";
    char *p = malloc(n);
    if (!p) return NULL;
    if (is_dir(path)) snprintf(p, n, "%s/config.json", path);
    else snprintf(p, n, "%s", path);
    return p;
}

int cq_hf_config_load(cq_hf_config *cfg, const char *path)
{
    CQ_CHECK_ARG(cfg && path, CQ_EINVAL);
    char *p = config_path(path);
    if (!p) return CQ_ENOMEM;
    char *text = NULL;
    size_t len = 0;
    int r = cq_read_file(p, &text, &len, CONFIG_MAX_BYTES);
    if (!r) r = cq_hf_config_parse(cfg, text, len, p);
    free(text);
    free(p);
    return r;
}

static int add_num(cJSON *o, const char *k, double v)
{
    return cJSON_AddNumberToObject(o, k, v) ? 0 : CQ_ENOMEM;
}

/* Integers beyond int range would print as %g with cJSON; write them raw. */
static int add_int(cJSON *o, const char *k, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return cJSON_AddRawToObject(o, k, buf) ? 0 : CQ_ENOMEM;
}

int cq_hf_config_write(const char *path, const cq_hf_config *cfg, const char *extra_json)
{
    CQ_CHECK_ARG(path && cfg, CQ_EINVAL);
    char *p = config_path(path);
    if (!p) return CQ_ENOMEM;
    int r = cq_hf_config_validate(cfg, p);
    cJSON *root = NULL, *extra = NULL;
    char *text = NULL;
    if (r) goto done;
    if (extra_json) {
        const char *end = NULL;
        extra = cJSON_ParseWithOpts(extra_json, &end, 1);
        if (!extra || !cJSON_IsObject(extra)) {
            cq_error("%s: extra JSON is not a valid JSON object (error at byte %zu)", p,
                     end && end >= extra_json ? (size_t)(end - extra_json) : (size_t)0);
            r = CQ_EINVAL;
            goto done;
        }
    }
    r = CQ_ENOMEM;
    root = cJSON_CreateObject();
    if (!root) goto done;
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON *a0 = cJSON_CreateString("LlamaForCausalLM");
    if (!arch || !a0) {
        cJSON_Delete(a0);
        goto done;
    }
    cJSON_AddItemToArray(arch, a0);
    if (!cJSON_AddStringToObject(root, "model_type", "llama")) goto done;
    if (!cJSON_AddStringToObject(root, "hidden_act", "silu")) goto done;
    if (add_int(root, "hidden_size", cfg->hidden_size) ||
        add_int(root, "intermediate_size", cfg->intermediate_size) ||
        add_int(root, "num_hidden_layers", cfg->num_hidden_layers) ||
        add_int(root, "num_attention_heads", cfg->num_attention_heads) ||
        add_int(root, "num_key_value_heads", cfg->num_key_value_heads) ||
        add_int(root, "head_dim", cfg->head_dim) ||
        add_int(root, "vocab_size", cfg->vocab_size) ||
        add_int(root, "max_position_embeddings", cfg->max_position_embeddings) ||
        add_num(root, "rms_norm_eps", cfg->rms_norm_eps) ||
        add_num(root, "rope_theta", cfg->rope_theta))
        goto done;
    if (!cJSON_AddBoolToObject(root, "tie_word_embeddings", cfg->tie_word_embeddings != 0))
        goto done;
    if (cfg->rope_scaling.type != CQ_ROPE_PLAIN) {
        const cq_rope_scaling *s = &cfg->rope_scaling;
        const bool llama3 = s->type == CQ_ROPE_LLAMA3;
        cJSON *rs = cJSON_AddObjectToObject(root, "rope_scaling");
        if (!rs || !cJSON_AddStringToObject(rs, "rope_type", llama3 ? "llama3" : "linear") ||
            add_num(rs, "factor", s->factor))
            goto done;
        if (llama3 && (add_num(rs, "low_freq_factor", s->low_freq_factor) ||
                       add_num(rs, "high_freq_factor", s->high_freq_factor) ||
                       add_int(rs, "original_max_position_embeddings", (int64_t)s->original_max)))
            goto done;
    }
    if (cfg->bos_token_id >= 0 ? add_int(root, "bos_token_id", cfg->bos_token_id)
                               : !cJSON_AddNullToObject(root, "bos_token_id"))
        goto done;
    if (cfg->eos_token_id >= 0 ? add_int(root, "eos_token_id", cfg->eos_token_id)
                               : !cJSON_AddNullToObject(root, "eos_token_id"))
        goto done;
    if (!cJSON_AddStringToObject(root, "torch_dtype",
                                 cfg->torch_dtype[0] ? cfg->torch_dtype : "float32"))
        goto done;
    if (!cJSON_AddFalseToObject(root, "attention_bias") ||
        !cJSON_AddFalseToObject(root, "mlp_bias") ||
        !cJSON_AddNumberToObject(root, "initializer_range", 0.02) ||
        !cJSON_AddTrueToObject(root, "use_cache"))
        goto done;
    if (extra) {
        cJSON *m = extra->child;
        while (m) {
            cJSON *next = m->next;
            cJSON_DetachItemViaPointer(extra, m);
            /* (not cJSON_ReplaceItem...: it frees m->string before copying it) */
            cJSON_DeleteItemFromObjectCaseSensitive(root, m->string);
            cJSON_AddItemToObject(root, m->string, m);
            m = next;
        }
    }
    text = cJSON_Print(root);
    if (!text) goto done;
    size_t n = strlen(text);
    text[n] = '\n';   /* replace the NUL: files end with a newline */
    r = cq_write_file_atomic(p, text, n + 1);
done:
    if (r == CQ_ENOMEM) cq_error("%s: out of memory building config.json", p);
    cJSON_free(text);
    cJSON_Delete(extra);
    cJSON_Delete(root);
    free(p);
    return r;
}
