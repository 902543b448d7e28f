/* Fuzz target: Hugging Face tokenizer.json, both kinds (SentencePiece-style
 * BPE and byte-level BPE) through cq_tokenizer_load_json_mem on the raw,
 * not NUL-terminated bytes; then encode/decode and, for byte-level
 * tokenizers, the save -> load round trip. */
#include "tok_exercise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    cq_tokenizer *t = NULL;
    if (cq_tokenizer_load_json_mem((const char *)data, size, "fuzz/tokenizer.json", &t) != 0) {
        if (t) abort();
        return 0;
    }
    tok_exercise(t, data, size);
    if (cq_tokenizer_kind_of(t) == CQ_TOK_BYTE) {
        char *js = NULL;
        if (cq_tokenizer_to_json(t, &js) == 0) {
            cq_tokenizer *u = NULL;
            /* what we write we must read back, with the same vocab */
            if (cq_tokenizer_load_json_mem(js, strlen(js), "fuzz/saved", &u) != 0) abort();
            if (cq_tokenizer_n_vocab(u) != cq_tokenizer_n_vocab(t)) abort();
            cq_tokenizer_destroy(&u);
        }
        free(js);
    }
    cq_tokenizer_destroy(&t);
    if (t) abort();
    return 0;
}
