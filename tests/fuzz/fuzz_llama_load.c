/* Fuzz target: model loading (cq_llama_load) from what a stranger hands us.
 *
 * Input starting with "GGUF": a GGUF model file (from a memfd). Otherwise a
 * Hugging Face directory: config.json, then "\n==file==\n" and the bytes of
 * model.safetensors (a config with "quantization_config" goes through the
 * quantized-directory loader, models/qmodel.c). The memory estimate is
 * capped by CQ_MEM_LIMIT (fuzz_common.h), so configs claiming huge models are
 * refused before allocation. A model that loads is run forward on a few
 * tokens. */
#include "fuzz_common.h"
#include "llama.h"

#define SEP "\n==file==\n"

static cq_backend *cpu(void)
{
    static cq_backend *be;
    if (!be && cq_backend_create(&be, "cpu", -1) != 0) abort();
    return be;
}

static void run_forward(cq_llama *m)
{
    if (cq_llama_config_n_params(&m->cfg) > (1 << 22)) return;
    cq_ctx *c = NULL;
    if (cq_ctx_create(&c, m->be) != 0) return;
    cq_ctx_set_grad(c, false);
    int64_t ne[2] = { 1, 3 };
    cq_tensor *ids = NULL;
    if (cq_tensor_new(&ids, m->be, CQ_I32, 2, ne) == 0) {
        int32_t v[3] = { 0, (int32_t)(m->cfg.vocab - 1), (int32_t)(m->cfg.vocab / 2) };
        cq_tensor_set(ids, v, sizeof v);
        cq_tensor *logits = cq_llama_forward(c, m, ids, 0, false);
        if (logits) {
            size_t n = (size_t)cq_tensor_numel(logits);
            float *out = malloc(n * sizeof *out + 1);
            if (out && cq_tensor_get_f32(logits, out) != 0) abort();
            free(out);
        }
        cq_tensor_free(&ids);
    }
    cq_ctx_destroy(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    const char *path;
    if (size >= 4 && !memcmp(data, "GGUF", 4)) {
        path = fuzz_memfd(data, size);
    } else {
        path = fuzz_tmpdir();
        size_t clen, slen;
        const uint8_t *st;
        int have = fuzz_split(data, size, SEP, &clen, &st, &slen);
        fuzz_write_file(path, "config.json", data, clen);
        if (have) fuzz_write_file(path, "model.safetensors", st, slen);
        else fuzz_remove_file(path, "model.safetensors");
    }
    cq_llama *m = NULL;
    if (cq_llama_load(&m, path, cpu()) == 0) {
        if (!m || m->n_params <= 0) abort();
        run_forward(m);
        cq_llama_destroy(&m);
    } else if (m) {
        abort();
    }
    return 0;
}
