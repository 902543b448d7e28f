/* cherryq plan: the estimated peak memory of every command for a model
 * (models/memplan.h gives the formulas), the memory the backend has, and
 * whether each fits. Also the up-front check every command runs before it
 * allocates (cli_plan_check). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cq_io.h"
#include "cq_mem.h"
#include "llama.h"
#include "train.h"

#define USAGE                                                                                                      \
    "(--model PATH | --config FILE.json) [--seqlen N] [--batch N] [--samples N] [--backend NAME] "                  \
    "[--command eval|generate|impact|train|quantize] [--checkpoint-activations] [--offload-optimizer] "            \
    "[--compute-dtype f32|bf16|f16] [--xent-chunk N]"

#define GIB (1024.0 * 1024.0 * 1024.0)

/* Available bytes: host from cq_mem_available, device from the backend
 * (free, else total); 0 when unknown. */
static void available(const cq_backend *be, bool device, double *host, double *dev)
{
    size_t a = 0;
    *host = cq_mem_available(&a) == 0 ? (double)a : 0;
    *dev = 0;
    if (device && be) *dev = (double)(be->mem_free ? be->mem_free : be->mem_total);
}

int cli_plan_check(const char *name, const cq_llama_config *cfg, cq_plan_cmd cmd, cq_plan_opts *opts,
                   const cq_backend *be, bool force)
{
    opts->device = be && strcmp(be->name, "cpu") != 0;
    cq_plan_est e;
    if (cq_memplan_estimate(cfg, cmd, opts, &e)) return 0; /* a bad config is reported by its loader */
    double ah, ad;
    available(be, opts->device, &ah, &ad);
    const char *where = NULL;
    double need = 0, have = 0;
    if (opts->device && ad > 0 && e.device > ad) {
        where = be->device;
        need = e.device;
        have = ad;
    } else if (ah > 0 && e.host > ah) {
        where = opts->device ? "the host" : "cpu (host memory)";
        need = e.host;
        have = ah;
    }
    if (!where) {
        cq_debug("%s: memory plan: host %.2f GiB, device %.2f GiB", name, e.host / GIB, e.device / GIB);
        return 0;
    }
    fprintf(stderr, "cherryq %s: %s needs ~%.2f GiB on %s, only %.2f GiB available (see cherryq plan)%s\n", name,
            cq_plan_cmd_name(cmd), need / GIB, where, have / GIB, getenv("CQ_MEM_LIMIT") ? " (CQ_MEM_LIMIT is set)" : "");
    if (force) {
        fprintf(stderr, "cherryq %s: --force: going on anyway\n", name);
        return 0;
    }
    fprintf(stderr, "cherryq %s: lower %s, use another backend, or pass --force to try anyway\n", name,
            cmd == CQ_PLAN_GENERATE ? "--max-tokens (the KV cache holds prompt + --max-tokens positions)"
                                    : "--seqlen/--batch");
    return CQ_EXIT_RUNTIME;
}

static void log_nothing(cq_log_level lvl, const char *msg, void *user)
{
    (void)lvl;
    (void)msg;
    (void)user;
}

int cli_plan_check_model(const char *name, const char *model, cq_plan_cmd cmd, cq_plan_opts *opts,
                         const cq_backend *be, bool force)
{
    cq_llama_config cfg;
    bool packed = false;
    int bits = opts->bits, group = opts->group;
    /* quiet: a bad config is reported once, by the model loader that runs
     * next (the CLI installs no log callback, so NULL restores stderr) */
    cq_log_set_callback(log_nothing, NULL);
    int r = cq_memplan_config_load(&cfg, model, &packed, &bits, &group);
    cq_log_set_callback(NULL, NULL);
    if (r) return 0; /* the loader reports it (or, for GGUF, checks the weights itself) */
    if (packed) {
        opts->packed = true;
        opts->bits = bits;
        opts->group = group;
    }
    return cli_plan_check(name, &cfg, cmd, opts, be, force);
}

int cli_memflags_apply(const char *cmd, const char *usage, const cli_memflags *mf, cq_plan_opts *po, cq_llama *m,
                       cq_train_opts *to)
{
    const char *dt = mf->compute ? mf->compute : "f32";
    cq_dtype d;
    if (!strcmp(dt, "f32")) d = CQ_F32;
    else if (!strcmp(dt, "bf16")) d = CQ_BF16;
    else if (!strcmp(dt, "f16")) d = CQ_F16;
    else return cli_usage_error(cmd, usage, "--compute-dtype: expected f32, bf16 or f16, got '%s'", dt);
    if (mf->best_on_disk && !strcmp(cmd, "train"))
        return cli_usage_error(cmd, usage, "--best-on-disk: only quantize's QAT keeps a best-weights copy");
    int64_t chunk = mf->xent_chunk > 0 ? mf->xent_chunk : mf->checkpoint ? 1024 : 0;
    if (po) {
        po->checkpoint = mf->checkpoint;
        po->offload = mf->offload;
        po->compute_bytes = d == CQ_F32 ? 4 : 2;
        po->xent_chunk = chunk;
        po->best_on_disk = mf->best_on_disk;
    }
    if (m) {
        m->checkpoint = mf->checkpoint;
        m->compute = d;
        m->xent_chunk = chunk;
    }
    if (to) to->offload_optimizer = mf->offload;
    return 0;
}

static void row(const char *label, const cq_plan_est *e, bool device, double ah, double ad)
{
    double need = device ? e->device : e->host;
    double have = device ? ad : ah;
    bool host_ok = ah <= 0 || e->host <= ah;
    bool dev_ok = !device || ad <= 0 || e->device <= ad;
    const char *fits = (have <= 0 && (device || ah <= 0)) ? "unknown" : host_ok && dev_ok ? "yes" : "NO";
    (void)need;
    printf("%-18s %10.2f %10.2f %12.2f %10.2f", label, e->weights / GIB, e->state / GIB, e->activations / GIB,
           e->host / GIB);
    if (device) printf(" %10.2f", e->device / GIB);
    else printf(" %10s", "-");
    printf("  %s\n", fits);
}

int cmd_plan(int argc, char **argv)
{
    const char *model = NULL, *config = NULL, *backend = "cpu", *only = NULL;
    int64_t seqlen = 0, batch = 0, samples = 128, bits = 3, group = 128, device = -1, train_batch = 0;
    cli_memflags mf = { 0 };
    cli_flag fl[] = {
        { "model", CLI_STR, &model, "model: Hugging Face or cherryq quantized directory (its config.json)",
          .metavar = "PATH" },
        { "config", CLI_STR, &config, "a config.json (HF) or `cherryq train --config` file; no weights needed",
          .metavar = "FILE" },
        { "seqlen", CLI_INT, &seqlen, "tokens per sequence (0: the model's context)", CLI_NONNEG },
        { "batch", CLI_INT, &batch, "sequences per forward for eval/train/QAT (0: eval's 2048/seqlen, train 8)",
          CLI_NONNEG },
        { "samples", CLI_INT, &samples, "calibration windows (impact, GPTQ)", CLI_POS },
        { "bits", CLI_INT, &bits, "quantization bits (packed output)", CLI_RANGE, 2, 8 },
        { "group", CLI_INT, &group, "quantization group", CLI_POS },
        { "command", CLI_STR, &only, "only this command: eval, generate, impact, train or quantize",
          .metavar = "NAME" },
        { "backend", CLI_STR, &backend, "cpu, vulkan, cuda or auto" },
        { "device", CLI_INT, &device, "device index (-1: default)", CLI_RANGE, -1, 1024 },
        CLI_MEMFLAGS(mf),
    };
    int r = cli_parse("plan", USAGE,
                      "Estimated peak memory (GiB) of eval, generate, impact, train and quantize for a model,\n"
                      "from its config alone (formulas in models/memplan.c), the memory the backend has, and\n"
                      "whether each fits. Every command runs the same check before it allocates.",
                      fl, (int)(sizeof fl / sizeof fl[0]), argc, argv);
    if (r == CLI_HELP) return CQ_EXIT_OK;
    if (r) return r;
    if ((r = cli_check_backend_name("plan", USAGE, backend))) return r;
    cq_plan_opts mo = { 0 };
    if ((r = cli_memflags_apply("plan", USAGE, &mf, &mo, NULL, NULL))) return r;
    if (!model == !config) return cli_usage_error("plan", USAGE, "give one of --model or --config");
    const char *cmds[] = { "eval", "generate", "impact", "train", "quantize" };
    if (only) {
        bool ok = false;
        for (int i = 0; i < 5; i++) ok |= !strcmp(only, cmds[i]);
        if (!ok)
            return cli_usage_error("plan", USAGE, "--command: expected eval, generate, impact, train or quantize, "
                                                  "got '%s'", only);
    }
    const char *src = model ? model : config;
    cq_llama_config cfg;
    bool packed = false;
    int qb = (int)bits, qg = (int)group;
    if ((r = cq_memplan_config_load(&cfg, src, &packed, &qb, &qg))) {
        /* CQ_ENOTSUP is also a config.json of another architecture or RoPE
         * scaling, whose own message is out already */
        if (r == CQ_ENOTSUP && cli_ends_with(src, ".gguf"))
            fprintf(stderr, "cherryq plan: %s: GGUF is not read by plan; pass --config\n", src);
        else fprintf(stderr, "cherryq plan: %s: cannot read the config: %s\n", src, cq_strerror(r));
        return CQ_EXIT_RUNTIME;
    }
    if (seqlen <= 0 || seqlen > cfg.max_seq) {
        if (seqlen > cfg.max_seq)
            fprintf(stderr, "cherryq: --seqlen %lld capped at the model's context of %lld\n", (long long)seqlen,
                    (long long)cfg.max_seq);
        seqlen = cfg.max_seq;
    }
    bool dev = strcmp(backend, "cpu") != 0;
    cq_backend *be = NULL;
    int br = cq_backend_create(&be, backend, (int)device);
    if (br) fprintf(stderr, "cherryq plan: backend '%s' cannot be opened here (%s); its memory is unknown\n", backend,
                    cq_strerror(br));
    double ah, ad;
    available(be, dev, &ah, &ad);
    double P = (double)cq_llama_config_n_params(&cfg);
    printf("model %s: %.3fB parameters (dim %lld, ffn %lld, %lld layers, %lld heads, %lld kv heads, head_dim %lld, "
           "vocab %lld, context %lld)%s\n",
           src, P / 1e9, (long long)cfg.dim, (long long)cfg.ffn, (long long)cfg.n_layers, (long long)cfg.n_heads,
           (long long)cfg.n_kv_heads, (long long)cfg.head_dim, (long long)cfg.vocab, (long long)cfg.max_seq,
           packed ? ", packed" : "");
    int64_t eval_batch = batch > 0 ? batch : (seqlen >= 2048 ? 1 : 2048 / seqlen);
    train_batch = batch > 0 ? batch : 8;
    printf("seqlen %lld; batch %lld for eval, %lld for train/QAT, 1 for impact; %lld calibration samples\n",
           (long long)seqlen, (long long)eval_batch, (long long)train_batch, (long long)samples);
    printf("backend %s%s%s%s: host memory available %.2f GiB", be ? be->name : backend, be ? " (" : "",
           be ? be->device : "", be ? ")" : "", ah / GIB);
    if (dev) {
        if (ad > 0) printf(", device %.2f GiB %s (of %.2f GiB)", ad / GIB, be && be->mem_free ? "free" : "total",
                           be ? (double)be->mem_total / GIB : 0.0);
        else printf(", device memory unknown");
    }
    printf("\n\n%-18s %10s %10s %12s %10s %10s  %s\n", "command", "weights", "state", "activations", "host", "device",
           "fits");
    struct {
        const char *label, *group;
        cq_plan_cmd cmd;
        int64_t batch;
    } rows[] = {
        { "eval", "eval", CQ_PLAN_EVAL, eval_batch },
        { "generate", "generate", CQ_PLAN_GENERATE, 1 },
        { "impact", "impact", CQ_PLAN_IMPACT, 1 },
        { "train", "train", CQ_PLAN_TRAIN, train_batch },
        { "quantize qat", "quantize", CQ_PLAN_QAT, train_batch },
        { "quantize gptq", "quantize", CQ_PLAN_GPTQ, 1 },
        { "quantize rtn", "quantize", CQ_PLAN_RTN, 1 },
    };
    double qat_dev = 0, qat_host = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (only && strcmp(only, rows[i].group)) continue;
        cq_plan_opts o = { .batch = rows[i].batch, .seqlen = seqlen, .samples = samples, .bits = qb, .group = qg,
                           .device = dev };
        o.packed = packed && (rows[i].cmd == CQ_PLAN_EVAL || rows[i].cmd == CQ_PLAN_GENERATE);
        if (rows[i].cmd == CQ_PLAN_TRAIN || rows[i].cmd == CQ_PLAN_QAT) {
            o.checkpoint = mo.checkpoint;
            o.offload = mo.offload;
            o.compute_bytes = mo.compute_bytes;
            o.xent_chunk = mo.xent_chunk;
            o.best_on_disk = mo.best_on_disk;
        }
        cq_plan_est e;
        if (cq_memplan_estimate(&cfg, rows[i].cmd, &o, &e)) continue;
        row(rows[i].label, &e, dev, ah, ad);
        if (rows[i].cmd == CQ_PLAN_QAT) {
            qat_dev = e.device;
            qat_host = e.host;
        }
    }
    printf("\nGiB. weights: parameters as held (f32 master weights; packed for a quantized model); state: grads,\n"
           "AdamW m and v, Fisher, QAT masks and best weights, GPTQ Hessians, KV cache; activations: what one\n"
           "forward (+ backward) keeps. quantize --method cherryq also runs impact first: the larger of the two.\n");
    if (qat_host > 0 && (!only || !strcmp(only, "quantize") || !strcmp(only, "train"))) {
        printf("train/QAT memory options: activation checkpointing %s, optimizer states %s, GEMM inputs %s, "
               "cross-entropy %s",
               mo.checkpoint ? "on" : "off", mo.offload ? "in host memory" : "resident",
               mo.compute_bytes == 2 ? (mf.compute ? mf.compute : "bf16") : "f32",
               mo.xent_chunk > 0 ? "chunked" : "whole batch");
        if (mo.xent_chunk > 0) printf(" (%lld tokens)", (long long)mo.xent_chunk);
        printf(".\nquantize qat: %.1f GiB %s", (dev ? qat_dev : qat_host) / GIB, dev ? "device" : "host");
        if (dev) printf(" + %.1f GiB host", qat_host / GIB);
        printf(" (%.1f GB).%s\n", (dev ? qat_dev : qat_host) / 1e9,
               mo.checkpoint && mo.offload ? ""
                                           : " --checkpoint-activations, --offload-optimizer, --compute-dtype "
                                             "bf16 lower it (docs/cuda.md).");
    }
    cq_backend_destroy(&be);
    return CQ_EXIT_OK;
}
