/* cherryq: Hugging Face config.json for LLaMA-family models.
 *
 * cq_hf_config_load() reads config.json (a file, or a directory holding one)
 * with cJSON and validates it:
 *   - missing file                          -> CQ_ENOENT, path in the message
 *   - malformed JSON / not an object        -> CQ_EBADMSG with the byte offset
 *   - architecture other than LlamaForCausalLM / MistralForCausalLM (from
 *     "architectures"[0], else "model_type" llama / mistral) -> CQ_ENOTSUP
 *   - missing required field (hidden_size, intermediate_size,
 *     num_hidden_layers, num_attention_heads, vocab_size), a wrong type,
 *     a non-positive size, hidden_size % num_attention_heads != 0 (when
 *     head_dim is absent), an odd head_dim, num_attention_heads %
 *     num_key_value_heads != 0, non-positive rms_norm_eps or rope_theta
 *                                           -> CQ_EBADMSG naming the field.
 * Defaults: num_key_value_heads = num_attention_heads, head_dim =
 * hidden_size / num_attention_heads, rms_norm_eps = 1e-6, rope_theta = 1e4,
 * tie_word_embeddings = false, max_position_embeddings = 2048,
 * bos/eos_token_id = -1 when absent or null (an array: its first element),
 * torch_dtype = "" when absent (newer files call it "dtype"; both read).
 * rope_scaling is not applied by cherryq: when present and not null, its
 * "rope_type"/"type" is kept in rope_scaling_type and a warning is logged.
 */
#ifndef CQ_HFCONFIG_H
#define CQ_HFCONFIG_H

#include "cq_rope.h"
#include "cq_base.h"

typedef struct cq_hf_config {
    char architecture[64];        /* "LlamaForCausalLM" / "MistralForCausalLM" */
    char model_type[32];          /* "llama" / "mistral" */
    int64_t hidden_size;
    int64_t intermediate_size;
    int64_t num_hidden_layers;
    int64_t num_attention_heads;
    int64_t num_key_value_heads;
    int64_t head_dim;
    int64_t vocab_size;
    int64_t max_position_embeddings;   /* capped at a smaller sliding_window (Mistral) */
    double rms_norm_eps;
    double rope_theta;
    int tie_word_embeddings;
    int64_t bos_token_id;         /* -1: none */
    int64_t eos_token_id;         /* -1: none */
    char torch_dtype[16];         /* "float16", "bfloat16", "float32" or "" */
    char rope_scaling_type[32];   /* "" when rope_scaling is absent/null */
    /* rope_scaling as cherryq applies it (core/cq_rope.h): linear and llama3
     * exactly; "default" and "dynamic" (the same as plain up to
     * max_position_embeddings, which bounds every sequence) as plain RoPE;
     * any other type is refused at load */
    cq_rope_scaling rope_scaling;
} cq_hf_config;

/* Fills the defaults above and zeroes the required fields. */
CQ_API void cq_hf_config_init(cq_hf_config *cfg);
CQ_API int cq_hf_config_load(cq_hf_config *cfg, const char *path);
/* Parses config.json text; path is used only in messages. */
CQ_API int cq_hf_config_parse(cq_hf_config *cfg, const char *json, size_t len, const char *path);
/* The consistency checks of load; what names the config in messages. */
CQ_API int cq_hf_config_validate(const cq_hf_config *cfg, const char *what);

/* Writes a config.json transformers can load (architectures
 * ["LlamaForCausalLM"], model_type "llama", hidden_act "silu", the fields
 * above; torch_dtype "float32" when empty), atomically. extra_json, if not
 * NULL, is the text of a JSON object whose members are added (replacing a
 * member of the same name), e.g. {"quantization_config": {...}}. The config
 * is validated first (CQ_EBADMSG), a bad extra_json gives CQ_EINVAL. If path
 * is a directory, writes path/config.json. */
CQ_API int cq_hf_config_write(const char *path, const cq_hf_config *cfg, const char *extra_json);

#endif
