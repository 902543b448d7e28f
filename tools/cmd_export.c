/* cherryq export --dequantize: a quantized model directory -> a plain
 * Hugging Face directory (config.json without quantization_config,
 * model.safetensors with dense FP16 (or --dtype) weights, tokenizer.json),
 * written as <out>.tmp and renamed into place. */
#include <string.h>

#include "cq_io.h"
#include "pipe_cli.h"

#define USAGE "--dequantize --model QDIR --out DIR [--dtype f16|f32|bf16]"

int cmd_export(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *dtype = "f16";
    bool deq = false;
    cli_flag fl[] = {
        { "dequantize", CLI_BOOL, &deq, "write dense weights (the only export there is)" },
        { "model", CLI_STR, &model, "cherryq quantized model directory", .metavar = "QDIR" },
        { "out", CLI_STR, &out, "Hugging Face directory to write", .metavar = "DIR" },
        { "dtype", CLI_STR, &dtype, "f16, f32 or bf16" },
    };
    int r = cli_parse("export", USAGE,
                      "Dequantize a cherryq quantized model into a plain Hugging Face directory that\n"
                      "transformers (or cherryq) loads as an ordinary LlamaForCausalLM.",
                      fl, (int)(sizeof fl / sizeof fl[0]), argc, argv);
    if (r == CLI_HELP) return CQ_EXIT_OK;
    if (r) return r;
    if (!deq) return cli_usage_error("export", USAGE, "--dequantize is required (the only export there is)");
    if (!model) return cli_usage_error("export", USAGE, "--model is required");
    if (!out) return cli_usage_error("export", USAGE, "--out is required");
    cq_dtype dt = !strcmp(dtype, "f16") ? CQ_F16 : !strcmp(dtype, "f32") ? CQ_F32 : !strcmp(dtype, "bf16") ? CQ_BF16
                                                                                                          : CQ_DTYPE_COUNT;
    if (dt == CQ_DTYPE_COUNT) return cli_usage_error("export", USAGE, "--dtype must be f16, f32 or bf16");
    if (!cq_file_exists(model)) {
        fprintf(stderr, "cherryq export: %s: no such file or directory\n", model);
        return CQ_EXIT_RUNTIME;
    }
    if (cq_dir_check(out, model)) return CQ_EXIT_RUNTIME;   /* replaceable, and not the input */
    cq_backend *be = NULL;
    if ((r = cq_backend_create(&be, "cpu", -1))) return CQ_EXIT_RUNTIME;
    r = cq_qmodel_export_dense(model, out, dt, be);
    cq_backend_destroy(&be);
    if (r) {
        fprintf(stderr, "cherryq export: %s -> %s failed: %s\n", model, out, cq_strerror(r));
        return CQ_EXIT_RUNTIME;
    }
    printf("wrote %s (%s, dequantized from %s)\n", out, dtype, model);
    return CQ_EXIT_OK;
}
