/* cherryq eval: perplexity with the GPTQ protocol (CHERRYQ.md section 7).
 *
 * --protocol stream (WikiText-2, PTB, any text): the whole file is tokenized
 * once as a Hugging Face tokenizer call does it (the tokenizer's lead token,
 * LLaMA's <s>, first; plain text as is; JSONL: the records' "text" joined
 * with "\n\n"), cut into floor(n / seqlen) non-overlapping windows of
 * seqlen tokens (remainder dropped).
 * --protocol c4: GPTQ's C4 draw (models/evalset.h): 256 windows (or
 * --max-windows), each from a random JSONL record with more than seqlen
 * tokens, picked by CPython's generator seeded with --seed (0), so the
 * windows are the reference's.
 * Like the GPTQ reference (HF's loss with labels = inputs, shifted inside the
 * model), each window contributes seqlen-1 predictions: token i+1 from
 * tokens 0..i; the first token of a window has no prediction. PPL =
 * exp(mean over windows of the window's mean NLL); all windows have the same
 * length, so this equals exp(total NLL / (windows * (seqlen-1))).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cq_io.h"
#include "llama.h"
#include "train.h"

#define USAGE "--model PATH --data FILE [--protocol stream|c4] [--seqlen N] [--max-windows N] [--json] [options]"

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *tokp = NULL, *backend = "cpu", *protocol = "stream";
    int64_t seqlen = 2048, max_windows = 0, batch = 0, threads = 0, device = -1, seed = 0;
    bool json = false, force = false;
    cli_flag fl[] = {
        { "model", CLI_STR, &model, "model: Hugging Face directory, cherryq quantized directory or .gguf",
          .metavar = "PATH" },
        { "data", CLI_STR, &data, "text file, or JSONL with a \"text\" field", .metavar = "FILE" },
        { "tokenizer", CLI_STR, &tokp, "tokenizer.json (default: next to the model)", .metavar = "FILE" },
        { "protocol", CLI_STR, &protocol,
          "stream: the file tokenized once, consecutive windows (WikiText-2); c4: GPTQ's random C4 windows "
          "from a JSONL file's records" },
        { "seqlen", CLI_INT, &seqlen, "window length (capped at the model's context)", CLI_RANGE, 2, 1 << 24 },
        { "max-windows", CLI_INT, &max_windows, "evaluate at most N windows (0: all; c4: 256)", CLI_NONNEG },
        { "seed", CLI_INT, &seed, "c4: the seed of the window draw (GPTQ's is 0)", CLI_NONNEG },
        { "batch", CLI_INT, &batch, "windows per forward pass (0: about 2048 tokens per pass)", CLI_NONNEG },
        { "force", CLI_BOOL, &force, "run even when the memory plan says it will not fit" },
        { "json", CLI_BOOL, &json, "print one machine-readable JSON line on stdout" },
        { "threads", CLI_INT, &threads, "CPU threads (0: all cores)", CLI_NONNEG },
        { "backend", CLI_STR, &backend, "cpu, vulkan, cuda or auto" },
        { "device", CLI_INT, &device, "device index (-1: default)", CLI_RANGE, -1, 1024 },
    };
    int r = cli_parse("eval", USAGE,
                      "Perplexity of a model on a text file with the GPTQ protocol: tokenize once,\n"
                      "non-overlapping windows of --seqlen tokens, remainder dropped, seqlen-1 predictions\n"
                      "per window, PPL = exp(mean over windows of the window's mean NLL).",
                      fl, (int)(sizeof fl / sizeof fl[0]), argc, argv);
    if (r == CLI_HELP) return CQ_EXIT_OK;
    if (r) return r;
    if ((r = cli_check_backend_name("eval", USAGE, backend))) return r;
    if (!model) return cli_usage_error("eval", USAGE, "--model is required");
    if (!data) return cli_usage_error("eval", USAGE, "--data is required");
    bool c4;
    if ((r = cli_protocol("eval", USAGE, protocol, &c4))) return r;
    if (!c4 && seed) return cli_usage_error("eval", USAGE, "--seed is for --protocol c4");
    if (!cq_file_exists(model)) {
        fprintf(stderr, "cherryq eval: %s: no such file or directory\n", model);
        return CQ_EXIT_RUNTIME;
    }
    cli_set_threads(threads);
    cq_backend *be = NULL;
    cq_tokenizer *tok = NULL;
    cq_llama *m = NULL;
    cq_ctx *c = NULL;
    int32_t *ids = NULL;
    double *wnll = NULL;
    char **recs = NULL;
    size_t n = 0, n_recs = 0, n_tokenized = 0;
    int rc = CQ_EXIT_RUNTIME;
    if ((r = cli_load_tokenizer(model, tokp, &tok))) goto done;
    double t0 = cq_time_sec();
    if (c4) {
        if ((r = cli_load_records(data, &recs, &n_recs))) goto done;
    } else if ((r = cli_tokenize_file(tok, data, true, &ids, &n))) {
        goto done;
    }
    double t_tok = cq_time_sec() - t0;
    if ((r = cli_backend_open(backend, device, &be))) goto done;
    cq_plan_opts po = { .batch = batch, .seqlen = seqlen };
    if ((r = cli_plan_check_model("eval", model, CQ_PLAN_EVAL, &po, be, force))) goto done;
    r = cq_llama_load(&m, model, be);
    if (r) {
        fprintf(stderr, "cherryq eval: %s: cannot load the model: %s\n", model, cq_strerror(r));
        goto done;
    }
    if (cq_tokenizer_n_vocab(tok) > m->cfg.vocab)
        fprintf(stderr, "cherryq: warning: the tokenizer has %d tokens, the model %lld\n", cq_tokenizer_n_vocab(tok),
                (long long)m->cfg.vocab);
    if (seqlen > m->cfg.max_seq) {
        fprintf(stderr, "cherryq: --seqlen %lld capped at the model's context of %lld\n", (long long)seqlen,
                (long long)m->cfg.max_seq);
        seqlen = m->cfg.max_seq;
    }
    int64_t nw;
    if (c4) {
        /* GPTQ's draw, after the context cap: the windows depend on seqlen */
        nw = max_windows > 0 ? max_windows : 256;
        if (nw > INT64_MAX / seqlen || !(ids = malloc((size_t)(nw * seqlen) * sizeof *ids))) {
            fprintf(stderr, "cherryq eval: %lld windows of %lld tokens: out of memory\n", (long long)nw,
                    (long long)seqlen);
            r = CQ_ENOMEM;
            goto done;
        }
        t0 = cq_time_sec();
        r = cli_c4_draw("eval", tok, data, recs, n_recs, seqlen, nw, (uint64_t)seed, ids, &n_tokenized);
        t_tok = cq_time_sec() - t0;
        if (r) goto done;
        cli_records_free(recs, n_recs);   /* the windows are drawn; the count stays for the report */
        recs = NULL;
        n = (size_t)(nw * seqlen);
    } else {
        nw = (int64_t)(n / (size_t)seqlen);
        if (max_windows > 0 && nw > max_windows) nw = max_windows;
    }
    if (nw == 0) {
        fprintf(stderr, "cherryq eval: %s: %zu tokens do not fill one window of %lld tokens (lower --seqlen)\n", data,
                n, (long long)seqlen);
        r = CQ_EXIT_RUNTIME;
        goto done;
    }
    if (batch == 0) batch = seqlen >= 2048 ? 1 : 2048 / seqlen;
    if ((r = cq_ctx_create(&c, be))) goto done;
    cq_ctx_set_grad(c, false);
    wnll = malloc((size_t)nw * sizeof *wnll);
    if (!wnll) {
        r = CQ_ENOMEM;
        goto done;
    }
    /* windows in chunks so that progress can be shown */
    cli_progress pr;
    cli_progress_init(&pr, "eval", nw, 10);
    double sum = 0;
    int64_t npred = 0;
    t0 = cq_time_sec();
    for (int64_t w = 0; w < nw; w += batch) {
        int64_t k = nw - w < batch ? nw - w : batch;
        double s = 0;
        int64_t np = 0;
        r = cq_eval_windows(c, m, ids + w * seqlen, (size_t)(k * seqlen), seqlen, k, k, &s, &np, wnll + w);
        if (r) {
            cli_progress_done(&pr);
            fprintf(stderr, "cherryq eval: window %lld failed: %s\n", (long long)w, cq_strerror(r));
            goto done;
        }
        sum += s;
        npred += np;
        double el = cq_time_sec() - t0;
        int64_t done_w = w + k;
        cli_progress_update(&pr, done_w, sum / (double)npred, (double)(done_w * seqlen) / el,
                            el / (double)done_w * (double)(nw - done_w), NULL);
    }
    cli_progress_done(&pr);
    double el = cq_time_sec() - t0;
    double mean = 0;
    for (int64_t w = 0; w < nw; w++) mean += wnll[w];
    mean /= (double)nw;
    if (!isfinite(mean)) {
        /* NaN or Inf weights (or activations that overflow): no perplexity
         * to report, and a script must not take one */
        fprintf(stderr, "cherryq eval: %s: the model's loss is not finite (%g): NaN or Inf in its weights or "
                        "activations\n",
                model, mean);
        r = CQ_EXIT_RUNTIME;
        goto done;
    }
    double ppl = exp(mean);   /* may overflow to inf for a finite but huge loss */
    size_t used = (size_t)(nw * seqlen);
    if (json) {
        printf("{\"ppl\": ");
        if (isfinite(ppl)) printf("%.6f", ppl);
        else printf("null");   /* JSON has no inf */
        printf(", \"mean_nll\": %.8f, \"tokens\": %zu, \"tokens_used\": %zu, \"windows\": %lld, "
               "\"seqlen\": %lld, \"predictions\": %lld, \"protocol\": \"%s\", \"model\": ",
               mean, n, used, (long long)nw, (long long)seqlen, (long long)npred, c4 ? "gptq-c4" : "gptq");
        json_str(model);
        printf(", \"data\": ");
        json_str(data);
        printf(", \"tokens_per_s\": %.1f}\n", (double)used / el);
    } else {
        printf("perplexity %.4f  (mean NLL %.6f)\n", ppl, mean);
        if (c4)
            printf("data %s: %zu records; %lld windows of %lld tokens drawn as GPTQ's C4 protocol (seed %lld; "
                   "%zu records tokenized in %.1fs)\n",
                   data, n_recs, (long long)nw, (long long)seqlen, (long long)seed, n_tokenized, t_tok);
        else
            printf("data %s: %zu tokens (tokenized in %.1fs); %lld windows of %lld tokens = %zu tokens used, %zu "
                   "dropped\n",
                   data, n, t_tok, (long long)nw, (long long)seqlen, used, n - used);
        printf("protocol: GPTQ%s (%s windows of %lld, %lld predictions per window: the first token of a "
               "window has none; PPL = exp(mean over windows of the window's mean NLL))\n",
               c4 ? " C4" : "", c4 ? "random" : "non-overlapping", (long long)seqlen, (long long)(seqlen - 1));
        printf("speed: %.0f tokens/s on %s (%s)\n", (double)used / el, be->name, be->device);
    }
    rc = CQ_EXIT_OK;
done:
    if (r == CQ_EXIT_USAGE) rc = CQ_EXIT_USAGE;
    free(wnll);
    free(ids);
    cli_records_free(recs, n_recs);
    cq_ctx_destroy(&c);
    cq_llama_destroy(&m);
    cq_backend_destroy(&be);
    cq_tokenizer_destroy(&tok);
    return rc;
}
