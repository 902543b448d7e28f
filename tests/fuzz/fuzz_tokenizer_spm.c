/* Fuzz target: the GGUF tokenizer-array path, cq_tokenizer_from_spm_arrays
 * (tokenizer.ggml.tokens / scores / token_type / special ids), fed directly
 * so the fuzzer does not have to find its way through the GGUF container
 * first (fuzz_gguf covers that path with the CLI's extraction).
 *
 * Input: byte 0 flags (bit 0: pass scores, bit 1: pass types), bytes 1-3
 * bos/eos/unk (0xff: none, else the id modulo the vocab size + 1, so out of
 * range ids occur), then entries separated by '\n' up to a blank line
 * ("\n\n"), each: a type byte (as a signed value minus '0', so "1".."6" are
 * the valid CQ_TOKTYPE_*), a score byte (signed / 4), the token text. The
 * bytes after the blank line are encoded. */
#include "tok_exercise.h"

#define MAX_TOKENS 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    if (size < 4) return 0;
    int flags = data[0];
    int sp[3];
    size_t vlen, tlen;
    const uint8_t *text;
    fuzz_split(data + 4, size - 4, "\n\n", &vlen, &text, &tlen);
    const uint8_t *v = data + 4;
    char **tok = calloc(MAX_TOKENS, sizeof *tok);
    float *scores = calloc(MAX_TOKENS, sizeof *scores);
    int32_t *types = calloc(MAX_TOKENS, sizeof *types);
    int n = 0;
    if (!tok || !scores || !types) goto out;
    size_t i = 0;
    while (i < vlen && n < MAX_TOKENS) {
        size_t j = i;
        while (j < vlen && v[j] != '\n') j++;
        size_t el = j - i;
        types[n] = el > 0 ? (int32_t)(int8_t)v[i] - '0' : 1;
        scores[n] = el > 1 ? (float)(int8_t)v[i + 1] / 4.0f : 0.0f;
        size_t tl = el > 2 ? el - 2 : 0;
        tok[n] = malloc(tl + 1);
        if (!tok[n]) goto out;
        if (tl) memcpy(tok[n], v + i + 2, tl);
        tok[n][tl] = 0; /* a NUL inside ends the token, as a C-string copy does */
        n++;
        i = j + 1;
    }
    if (n == 0) goto out;
    for (int k = 0; k < 3; k++) sp[k] = data[1 + k] == 0xff ? -1 : data[1 + k] % (n + 1);
    cq_tokenizer *t = NULL;
    int r = cq_tokenizer_from_spm_arrays((const char *const *)tok, flags & 1 ? scores : NULL,
                                         flags & 2 ? types : NULL, n, sp[0], sp[1], sp[2], &t);
    if (r == 0) {
        if (cq_tokenizer_kind_of(t) != CQ_TOK_SPM || cq_tokenizer_n_vocab(t) != n) abort();
        tok_exercise(t, text, tlen);
        cq_tokenizer_destroy(&t);
    } else if (t) {
        abort();
    }
out:
    for (int k = 0; tok && k < n; k++) free(tok[k]);
    free(tok);
    free(scores);
    free(types);
    return 0;
}
