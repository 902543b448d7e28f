/* Fuzz target: model loading (cq_llama_load) from what a stranger hands us.
 *
 * Input starting with "GGUF": a GGUF model file (from a memfd). Otherwise a
 * Hugging Face directory: config.json, then "\n==file==\n" and the bytes of
 * model.safetensors (a config with "quantization_config" goes through the
 * quantized-directory loader, models/qmodel.c). The memory estimate is
 * capped by CQ_MEM_LIMIT (fuzz_common.h), so configs claiming huge models are
 * refused before allocation. A model that loads is run forward on a few
 * tokens.
 *
 * CQ_FUZZ_WRITE_SEED=DIR writes a seed of the quantized directory (a tiny
 * model, RTN 4-bit with magnitude cherries, saved by cq_qmodel_save) in this
 * input format into DIR and exits. */
#include "fuzz_common.h"
#include "llama.h"
#include "pipeline.h"

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

static void append_file(FILE *out, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) abort();
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        if (fwrite(buf, 1, n, out) != n) abort();
    fclose(f);
}

static void write_qmodel_seed(const char *out)
{
    cq_llama_config c = { .vocab = 10, .dim = 8, .ffn = 12, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                          .head_dim = 4, .max_seq = 16, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
                          .tie_embeddings = true, .bos = 1, .eos = 2 };
    cq_llama *m = NULL;
    if (cq_llama_create(&m, &c, cpu(), 3) != 0) abort();
    cq_qspec s;
    memset(&s, 0, sizeof s);
    s.bits = 4;
    s.group = 0;
    s.cherries = true;
    s.sel.criterion = CQ_SEL_MAGNITUDE;
    s.sel.k_rule = CQ_K_EXPLICIT;
    s.sel.k = 2;
    s.sel.seed = 7;
    cq_qplan plan;
    cq_qpacked q;
    if (cq_qplan_make(&plan, m, NULL, &s) != 0 || cq_quantize_rtn(&q, m, &plan, &s) != 0) abort();
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/qmodel", fuzz_tmpdir());
    const char *qcfg = "{\"quant_method\": \"cherryq\", \"method\": \"rtn\", \"bits\": 4, "
                       "\"group_size\": 0, \"selection\": \"magnitude\", \"k\": 2, \"format_version\": 1}";
    if (cq_qmodel_save(m, &q, dir, qcfg, NULL) != 0) abort();
    snprintf(p, sizeof p, "%s/qmodel_rtn4_cherries", out);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    snprintf(p, sizeof p, "%s/config.json", dir);
    append_file(f, p);
    fputs(SEP, f);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    append_file(f, p);
    fclose(f);
    _exit(0); /* not exit(): libFuzzer reports a target that exits */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    const char *seeds = getenv("CQ_FUZZ_WRITE_SEED");
    if (seeds) write_qmodel_seed(seeds);
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
