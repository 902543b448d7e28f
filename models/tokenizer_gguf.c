/* cherryq: the LLaMA (SentencePiece) tokenizer stored in GGUF metadata
 * (tokenizer.ggml.tokens / scores / token_type, bos/eos/unk ids), as
 * llama.cpp's converters write it. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

int cq_tokenizer_load_gguf(const char *path, cq_tokenizer **out)
{
    CQ_CHECK_ARG(path && out, CQ_EINVAL);
    *out = NULL;
    cq_gguf *g = NULL;
    int r = cq_gguf_open(&g, path);
    if (r) return r;
    cq_gguf_type et;
    uint64_t n = 0;
    const char *model = NULL;
    size_t ml = 0;
    if (cq_gguf_get_str(g, "tokenizer.ggml.model", &model, &ml) == 0 && !(ml == 5 && !memcmp(model, "llama", 5))) {
        cq_error("%s: tokenizer.ggml.model is '%.*s'; cherryq reads only the 'llama' (SentencePiece) tokenizer",
                 path, (int)ml, model);
        cq_gguf_close(&g);
        return CQ_ENOTSUP;
    }
    r = cq_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n);
    if (r || n == 0 || n > (1u << 24)) {
        if (r == CQ_ENOENT) cq_error("%s: no tokenizer.ggml.tokens in the GGUF metadata", path);
        else if (!r) cq_error("%s: tokenizer.ggml.tokens has %llu entries", path, (unsigned long long)n);
        cq_gguf_close(&g);
        return r ? r : CQ_EBADMSG;
    }
    char **toks = calloc((size_t)n, sizeof *toks);
    float *scores = malloc((size_t)n * sizeof(float));
    int32_t *types = malloc((size_t)n * sizeof(int32_t));
    r = (!toks || !scores || !types) ? CQ_ENOMEM : CQ_OK;
    for (uint64_t i = 0; i < n && !r; i++) {
        const char *s;
        size_t l;
        r = cq_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &l);
        if (!r && !(toks[i] = malloc(l + 1))) r = CQ_ENOMEM;
        if (!r) {
            memcpy(toks[i], s, l);
            toks[i][l] = 0;
        }
    }
    uint64_t cnt;
    bool have_scores = !r && cq_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &cnt) == 0 && cnt == n;
    bool have_types = !r && cq_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &cnt) == 0 && cnt == n;
    if (!r && have_scores) r = cq_gguf_copy_arr_f32(g, "tokenizer.ggml.scores", scores, n);
    if (!r && have_types) r = cq_gguf_copy_arr_i32(g, "tokenizer.ggml.token_type", types, n);
    int32_t bos = -1, eos = -1, unk = -1;
    uint32_t u;
    if (cq_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u) == 0) bos = (int32_t)u;
    if (cq_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u) == 0) eos = (int32_t)u;
    if (cq_gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &u) == 0) unk = (int32_t)u;
    if (!r)
        r = cq_tokenizer_from_spm_arrays((const char *const *)toks, have_scores ? scores : NULL,
                                         have_types ? types : NULL, (int)n, bos, eos, unk, out);
    for (uint64_t i = 0; toks && i < n; i++) free(toks[i]);
    free(toks);
    free(scores);
    free(types);
    cq_gguf_close(&g);
    return r;
}
