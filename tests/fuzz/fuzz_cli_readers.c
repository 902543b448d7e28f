/* Fuzz target: the CLI's readers of outside bytes (tools/cli.c): the
 * training/eval corpus (cli_load_corpus: plain text, or JSONL records with
 * a "text" field; cli_load_records: the records one by one, for eval's C4
 * protocol) and the tokenizer of a GGUF model (cli_load_tokenizer on
 * a .gguf path: tokenizer.ggml.* arrays through cq_tokenizer_from_spm_arrays).
 *
 * Input: "GGUF..." is written as model.gguf and its tokenizer loaded (then
 * used on a fixed text); anything else is written as corpus.jsonl when it
 * starts with '{' (else corpus.txt) and loaded as a corpus. */
#include "cli.h"
#include "fuzz_common.h"
#include "tok_exercise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    const char *dir = fuzz_tmpdir();
    char path[512];
    if (size >= 4 && !memcmp(data, "GGUF", 4)) {
        fuzz_write_file(dir, "model.gguf", data, size);
        snprintf(path, sizeof path, "%s/model.gguf", dir);
        cq_tokenizer *t = NULL;
        if (cli_load_tokenizer(path, NULL, &t) == 0) {
            if (!t) abort();
            tok_exercise(t, (const uint8_t *)"", 0);
            cq_tokenizer_destroy(&t);
        } else if (t) {
            abort();
        }
        return 0;
    }
    const char *name = size && data[0] == '{' ? "corpus.jsonl" : "corpus.txt";
    fuzz_write_file(dir, name, data, size);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = NULL;
    size_t len = 0;
    if (cli_load_corpus(path, &text, &len) == 0) {
        if (!text || text[len] != 0) abort();
        fuzz_touch(text, len);
    } else if (text) {
        abort();
    }
    free(text);
    char **recs = NULL;
    size_t n = 0;
    if (cli_load_records(path, &recs, &n) == 0) {
        for (size_t i = 0; i < n; i++) fuzz_touch(recs[i], strlen(recs[i]));
    } else if (recs || n) {
        abort();
    }
    cli_records_free(recs, n);
    return 0;
}
