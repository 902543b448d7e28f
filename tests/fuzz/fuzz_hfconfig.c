/* Fuzz target: config.json (cq_hf_config_parse on the raw bytes, not
 * NUL-terminated), then the write -> load round trip of what parsed. */
#include "fuzz_common.h"
#include "hfconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    cq_hf_config c;
    cq_hf_config_init(&c);
    if (cq_hf_config_parse(&c, (const char *)data, size, "fuzz/config.json") != 0) return 0;
    /* a config that parsed has passed validation: fixed-size strings are
     * terminated and the sizes are positive */
    if (!memchr(c.architecture, 0, sizeof c.architecture) || !memchr(c.model_type, 0, sizeof c.model_type) ||
        !memchr(c.torch_dtype, 0, sizeof c.torch_dtype) ||
        !memchr(c.rope_scaling_type, 0, sizeof c.rope_scaling_type))
        abort();
    if (c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.num_key_value_heads <= 0 || c.head_dim <= 0)
        abort();
    if (cq_hf_config_validate(&c, "fuzz") != 0) abort();
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", fuzz_tmpdir());
    if (cq_hf_config_write(path, &c, NULL) != 0) return 0;
    cq_hf_config d;
    cq_hf_config_init(&d);
    if (cq_hf_config_load(&d, path) != 0) abort(); /* what we write we must read */
    if (d.hidden_size != c.hidden_size || d.intermediate_size != c.intermediate_size ||
        d.num_hidden_layers != c.num_hidden_layers || d.num_attention_heads != c.num_attention_heads ||
        d.num_key_value_heads != c.num_key_value_heads || d.head_dim != c.head_dim ||
        d.vocab_size != c.vocab_size || d.tie_word_embeddings != c.tie_word_embeddings ||
        d.bos_token_id != c.bos_token_id || d.eos_token_id != c.eos_token_id)
        abort();
    return 0;
}
