/* cherryq generate: text from a prompt with a KV cache (each new token costs
 * one position). Greedy at --temperature 0, else softmax(logits / T) cut to
 * the smallest set of tokens whose probability reaches --top-p, sampled with
 * a splitmix64 stream seeded by --seed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cq_io.h"
#include "llama.h"

#define USAGE "--model PATH --prompt TEXT [--max-tokens N] [--temperature X] [--top-p X] [--seed N] [options]"

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct pidx {
    float p;
    int32_t id;
} pidx;

static int cmp_desc(const void *a, const void *b)
{
    const pidx *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Picks the next token from one row of logits. */
static int32_t pick(const float *logits, int64_t V, double temp, double top_p, uint64_t *rng, pidx *work)
{
    int32_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = (int32_t)i;
    if (temp <= 0) return best;
    double sum = 0;
    for (int64_t i = 0; i < V; i++) {
        work[i].p = (float)exp((logits[i] - logits[best]) / temp);
        work[i].id = (int32_t)i;
        sum += work[i].p;
    }
    qsort(work, (size_t)V, sizeof *work, cmp_desc);
    int64_t k = 0;
    double cum = 0;
    while (k < V) {
        cum += work[k].p / sum;
        k++;
        if (cum >= top_p) break;
    }
    double u = (double)(splitmix(rng) >> 11) * (1.0 / 9007199254740992.0) * cum, acc = 0;
    for (int64_t i = 0; i < k; i++) {
        acc += work[i].p / sum;
        if (u < acc) return work[i].id;
    }
    return work[k - 1].id;
}

int cmd_generate(int argc, char **argv)
{
    const char *model = NULL, *prompt = NULL, *tokp = NULL, *backend = "cpu";
    int64_t max_tokens = 128, seed = 0, threads = 0, device = -1;
    double temperature = 0, top_p = 0.9;
    bool force = false;
    cli_flag fl[] = {
        { "model", CLI_STR, &model, "model: Hugging Face directory, cherryq quantized directory or .gguf",
          .metavar = "PATH" },
        { "prompt", CLI_STR, &prompt, "the text to continue", .metavar = "TEXT" },
        { "tokenizer", CLI_STR, &tokp, "tokenizer.json (default: next to the model)", .metavar = "FILE" },
        { "max-tokens", CLI_INT, &max_tokens, "tokens to generate at most", CLI_POS },
        { "temperature", CLI_FLOAT, &temperature, "sampling temperature (0: greedy)", CLI_NONNEG },
        { "top-p", CLI_FLOAT, &top_p, "nucleus sampling mass", CLI_RANGE, 1e-6, 1 },
        { "seed", CLI_INT, &seed, "sampling seed", CLI_NONNEG },
        { "threads", CLI_INT, &threads, "CPU threads (0: all cores)", CLI_NONNEG },
        { "force", CLI_BOOL, &force, "run even when the memory plan says it will not fit" },
        { "backend", CLI_STR, &backend, "cpu, vulkan, cuda or auto" },
        { "device", CLI_INT, &device, "device index (-1: default)", CLI_RANGE, -1, 1024 },
    };
    int r = cli_parse("generate", USAGE,
                      "Continues --prompt, streaming the text to stdout; stops at EOS, after --max-tokens,\n"
                      "or when the model's context is full. Prints tokens/s to stderr.",
                      fl, (int)(sizeof fl / sizeof fl[0]), argc, argv);
    if (r == CLI_HELP) return CQ_EXIT_OK;
    if (r) return r;
    if ((r = cli_check_backend_name("generate", USAGE, backend))) return r;
    if (!model) return cli_usage_error("generate", USAGE, "--model is required");
    if (!prompt) return cli_usage_error("generate", USAGE, "--prompt is required");
    if (max_tokens > ((int64_t)1 << 31))   /* more than any model's context; and n + max_tokens stays exact */
        return cli_usage_error("generate", USAGE, "--max-tokens %lld: at most 2147483648", (long long)max_tokens);
    if (!cq_file_exists(model)) {
        fprintf(stderr, "cherryq generate: %s: no such file or directory\n", model);
        return CQ_EXIT_RUNTIME;
    }
    cli_set_threads(threads);
    cq_backend *be = NULL;
    cq_tokenizer *tok = NULL;
    cq_llama *m = NULL;
    cq_ctx *c = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    pidx *work = NULL;
    size_t n = 0;
    int rc = CQ_EXIT_RUNTIME;
    if ((r = cli_load_tokenizer(model, tokp, &tok))) goto done;
    /* the prompt starts as the tokenizer's own rules say: a template's
     * <|begin_of_text|>, LLaMA-2's <s>, or nothing (cherryq's byte-level
     * models are trained on raw text without a BOS) */
    r = cli_encode_lead(tok, prompt, strlen(prompt), &ids, &n);
    if (r) {
        fprintf(stderr, "cherryq generate: cannot tokenize the prompt: %s\n", cq_strerror(r));
        goto done;
    }
    if (n == 0) {
        fprintf(stderr, "cherryq generate: the prompt is empty (and the tokenizer adds no BOS)\n");
        r = CQ_EXIT_USAGE;
        goto done;
    }
    if ((r = cli_backend_open(backend, device, &be))) goto done;
    /* KV cache of prompt + max-tokens positions, prefill over at most as many */
    cq_plan_opts po = { .batch = 1, .seqlen = (int64_t)n + max_tokens };
    if ((r = cli_plan_check_model("generate", model, CQ_PLAN_GENERATE, &po, be, force))) goto done;
    r = cq_llama_load(&m, model, be);
    if (r) {
        fprintf(stderr, "cherryq generate: %s: cannot load the model: %s\n", model, cq_strerror(r));
        goto done;
    }
    const int64_t V = m->cfg.vocab, ctxlen = m->cfg.max_seq;
    if ((int64_t)n >= ctxlen) {
        fprintf(stderr, "cherryq generate: the prompt has %zu tokens; the model's context is %lld\n", n,
                (long long)ctxlen);
        r = CQ_EXIT_RUNTIME;
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= V) {
            fprintf(stderr,
                    "cherryq generate: the tokenizer gives id %d but the model's vocab has %lld tokens (wrong "
                    "tokenizer?)\n",
                    ids[i], (long long)V);
            r = CQ_EXIT_RUNTIME;
            goto done;
        }
    int64_t total = (int64_t)n + max_tokens;
    if (total > ctxlen) total = ctxlen;
    if ((r = cq_llama_cache_init(m, 1, total))) goto done;
    if ((r = cq_ctx_create(&c, be))) goto done;
    cq_ctx_set_grad(c, false);
    logits = malloc((size_t)V * sizeof(float) * n);
    work = malloc((size_t)V * sizeof *work);
    if (!logits || !work) {
        r = CQ_ENOMEM;
        goto done;
    }
    int32_t eos = m->cfg.eos >= 0 ? m->cfg.eos : cq_tokenizer_eos(tok);
    uint64_t rng = (uint64_t)seed;
    fputs(prompt, stdout);
    fflush(stdout);
    double t0 = cq_time_sec(), t_prefill = 0;
    int64_t pos = 0, produced = 0, steps = 0;
    const int32_t *feed = ids;
    int64_t nfeed = (int64_t)n;
    int32_t next = 0;
    const char *why = "--max-tokens reached";
    for (;;) {
        cq_ctx_reset(c);
        int64_t ne[2] = { 1, nfeed };
        cq_tensor *in = cq_new(c, CQ_I32, 2, ne);
        if (!in || (r = cq_tensor_set(in, feed, (size_t)nfeed * sizeof(int32_t)))) break;
        cq_tensor *lg = cq_llama_forward(c, m, in, pos, true);
        if (!lg || (r = cq_tensor_get_f32(lg, logits))) break;
        pos += nfeed;
        if (nfeed == 1) steps++;
        if (pos == (int64_t)n) t_prefill = cq_time_sec() - t0;
        next = pick(logits + (nfeed - 1) * V, V, temperature, top_p, &rng, work);
        if (next == eos) {
            why = "end of sequence";
            break;
        }
        size_t pl = 0;
        const char *piece = cq_tokenizer_token_piece(tok, next, &pl);
        if (piece) fwrite(piece, 1, pl, stdout);
        fflush(stdout);
        produced++;
        if (produced >= max_tokens) break;
        if (pos >= total) {
            why = "the model's context is full";
            break;
        }
        feed = &next;
        nfeed = 1;
    }
    if (!r) r = cq_ctx_status(c);
    printf("\n");
    fflush(stdout);   /* the text ends before the summary on stderr, also when both go to one pipe */
    if (r) {
        fprintf(stderr, "cherryq generate: %s\n", cq_strerror(r));
        goto done;
    }
    double el = cq_time_sec() - t0, dec = el - t_prefill;
    fprintf(stderr, "cherryq: %lld tokens generated (%s); prompt %zu tokens at %.1f tokens/s, generation %.1f "
                    "tokens/s (%lld single-position steps)\n",
            (long long)produced, why, n, t_prefill > 0 ? (double)n / t_prefill : 0,
            dec > 0 ? (double)steps / dec : 0, (long long)steps);
    rc = CQ_EXIT_OK;
done:
    if (r == CQ_EXIT_USAGE) rc = CQ_EXIT_USAGE;
    free(work);
    free(logits);
    free(ids);
    cq_ctx_destroy(&c);
    cq_llama_destroy(&m);
    cq_backend_destroy(&be);
    cq_tokenizer_destroy(&tok);
    return rc;
}
