/* cherryq train: train a LLaMA model from scratch on a text corpus.
 *
 * Config file (--config FILE.json, e.g. models/default.json): one JSON object
 * whose members are this command's flag names without the leading "--"
 * ("dim", "kv-heads", "steps", "min-lr-ratio", ...), numbers or strings as the
 * flag takes; flags given on the command line override the file. Members
 * whose name starts with '_' are comments and ignored; any other unknown
 * member is an error.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cq_io.h"
#include "llama.h"
#include "train.h"

#define USAGE "--data FILE [--tokenizer FILE | --vocab N] [--config FILE.json] [--out DIR] [options]"

typedef struct train_args {
    const char *data, *val, *tokenizer, *config, *out, *backend;
    int64_t vocab, dim, layers, heads, kv_heads, ffn, seq;
    int64_t steps, batch, accum, warmup, eval_every, eval_tokens, save_every, seed, threads, device;
    double lr, min_lr_ratio, clip, wd, holdout, rope_theta, norm_eps;
    bool resume, tie, force;
    cli_memflags mem;
} train_args;

static int apply_config(const char *path, cli_flag *fl, int n)
{
    char *txt = NULL;
    size_t len = 0;
    int r = cq_read_file(path, &txt, &len, 1u << 20);
    if (r) {
        fprintf(stderr, "cherryq train: %s: cannot read the config file (%s)\n", path, cq_strerror(r));
        return CQ_EXIT_RUNTIME;
    }
    cJSON *j = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!j || !cJSON_IsObject(j)) {
        fprintf(stderr, "cherryq train: %s: not a JSON object\n", path);
        cJSON_Delete(j);
        return CQ_EXIT_RUNTIME;
    }
    r = 0;
    for (cJSON *it = j->child; it && !r; it = it->next) {
        if (it->string[0] == '_') continue;
        cli_flag *f = NULL;
        for (int i = 0; i < n; i++)
            if (!strcmp(fl[i].name, it->string)) f = &fl[i];
        if (!f || !strcmp(it->string, "config")) {
            fprintf(stderr, "cherryq train: %s: unknown member \"%s\" (members are flag names without '--')\n", path,
                    it->string);
            r = CQ_EXIT_RUNTIME;
            break;
        }
        char what[300], num[64];
        snprintf(what, sizeof what, "%s: \"%s\"", path, it->string);
        if (f->type == CLI_BOOL) {
            if (!cJSON_IsBool(it)) goto bad_type;
            *(bool *)f->dst = cJSON_IsTrue(it);
        } else if (f->type == CLI_STR) {
            if (!cJSON_IsString(it)) goto bad_type;
            *(const char **)f->dst = strdup(it->valuestring); /* lives for the process */
        } else {
            if (!cJSON_IsNumber(it)) goto bad_type;
            snprintf(num, sizeof num, "%.17g", it->valuedouble);
            if (f->type == CLI_INT) r = cli_parse_int(what, num, f->range, f->lo, f->hi, (int64_t *)f->dst);
            else r = cli_parse_float(what, num, f->range, f->lo, f->hi, (double *)f->dst);
            if (r) r = CQ_EXIT_RUNTIME;
        }
        continue;
    bad_type:
        fprintf(stderr, "cherryq train: %s: wrong type\n", what);
        r = CQ_EXIT_RUNTIME;
    }
    cJSON_Delete(j);
    return r;
}

typedef struct prog_ctx {
    cli_progress pr;
    int64_t tokens_per_step;
} prog_ctx;

static int on_progress(const cq_train_progress *p, void *user)
{
    prog_ctx *pc = user;
    if (p->evaluated) {
        char el[32];
        cli_progress_note(&pc->pr, "step %lld: validation loss %.4f, perplexity %.2f (%s elapsed)", (long long)p->step,
                          p->val_loss, exp(p->val_loss), cli_fmt_duration(p->elapsed_s, el, sizeof el));
        return 0;
    }
    char extra[96];
    snprintf(extra, sizeof extra, "lr %.2e  |g| %.2f%s", p->lr, p->grad_norm, p->n_skipped ? "  (skips)" : "");
    cli_progress_update(&pc->pr, p->step, p->loss, p->tokens_per_s, p->eta_s, extra);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    train_args a = {
        .out = "out/model", .backend = "cpu", .vocab = 4096, .dim = 256, .layers = 4, .heads = 8, .kv_heads = 4,
        .ffn = 688, .seq = 256, .steps = 1000, .batch = 16, .accum = 1, .warmup = 100, .eval_every = 100,
        .eval_tokens = 65536, .save_every = 100, .seed = 1, .threads = 0, .device = -1, .lr = 1e-3,
        .min_lr_ratio = 0.1, .clip = 1.0, .wd = 0.1, .holdout = 0.05, .rope_theta = 10000.0, .norm_eps = 1e-5,
    };
    cli_flag fl[] = {
        { "data", CLI_STR, &a.data, "training corpus: text, or JSONL with a \"text\" field", .metavar = "FILE" },
        { "val", CLI_STR, &a.val, "validation corpus (default: the last --holdout of --data)", .metavar = "FILE" },
        { "holdout", CLI_FLOAT, &a.holdout, "fraction of --data held out when --val is absent", CLI_RANGE, 0, 0.5 },
        { "tokenizer", CLI_STR, &a.tokenizer, "tokenizer.json to use (else a byte-level BPE is trained)",
          .metavar = "FILE" },
        { "config", CLI_STR, &a.config, "JSON object of flag values (flags override it)", .metavar = "FILE" },
        { "vocab", CLI_INT, &a.vocab, "vocab size of the BPE trained on --data", CLI_RANGE, 258, 1 << 20 },
        { "dim", CLI_INT, &a.dim, "hidden size", CLI_RANGE, 2, 65536 },
        { "layers", CLI_INT, &a.layers, "decoder layers", CLI_RANGE, 1, 1024 },
        { "heads", CLI_INT, &a.heads, "attention heads", CLI_RANGE, 1, 4096 },
        { "kv-heads", CLI_INT, &a.kv_heads, "key/value heads (GQA)", CLI_RANGE, 1, 4096 },
        { "ffn", CLI_INT, &a.ffn, "MLP intermediate size", CLI_RANGE, 1, 262144 },
        { "seq", CLI_INT, &a.seq, "sequence length (also the model's context)", CLI_RANGE, 2, 1 << 20 },
        { "rope-theta", CLI_FLOAT, &a.rope_theta, "RoPE base", CLI_POS },
        { "norm-eps", CLI_FLOAT, &a.norm_eps, "RMSNorm epsilon", CLI_POS },
        { "tie", CLI_BOOL, &a.tie, "tie lm_head to the token embeddings" },
        { "steps", CLI_INT, &a.steps, "optimizer steps", CLI_POS },
        { "batch", CLI_INT, &a.batch, "sequences per micro-batch", CLI_POS },
        { "accum", CLI_INT, &a.accum, "micro-batches per step (gradient accumulation)", CLI_POS },
        { "lr", CLI_FLOAT, &a.lr, "peak learning rate", CLI_POS },
        { "warmup", CLI_INT, &a.warmup, "linear warmup steps", CLI_NONNEG },
        { "min-lr-ratio", CLI_FLOAT, &a.min_lr_ratio, "cosine floor as a fraction of --lr", CLI_RANGE, 0, 1 },
        { "clip", CLI_FLOAT, &a.clip, "max global gradient norm (0: no clipping)", CLI_NONNEG },
        { "wd", CLI_FLOAT, &a.wd, "AdamW weight decay (matrices only)", CLI_NONNEG },
        { "eval-every", CLI_INT, &a.eval_every, "steps between validation runs (0: only at the end)", CLI_NONNEG },
        { "eval-tokens", CLI_INT, &a.eval_tokens, "validation tokens per evaluation (0: all)", CLI_NONNEG },
        { "save-every", CLI_INT, &a.save_every, "steps between checkpoints (0: only at the end)", CLI_NONNEG },
        { "out", CLI_STR, &a.out, "output directory (model, tokenizer.json, checkpoint/)", .metavar = "DIR" },
        { "resume", CLI_BOOL, &a.resume, "continue from DIR/checkpoint" },
        { "seed", CLI_INT, &a.seed, "seed for the initial weights and the data order", CLI_NONNEG },
        { "threads", CLI_INT, &a.threads, "CPU threads (0: all cores)", CLI_NONNEG },
        { "force", CLI_BOOL, &a.force, "run even when the memory plan says it will not fit" },
        { "backend", CLI_STR, &a.backend, "cpu, vulkan, cuda or auto" },
        { "device", CLI_INT, &a.device, "device index (-1: default)", CLI_RANGE, -1, 1024 },
        CLI_MEMFLAGS(a.mem),
    };
    const int nf = (int)(sizeof fl / sizeof fl[0]);
    /* the config file first, so the command line overrides it */
    for (int i = 1; i < argc; i++) {
        const char *cfg = NULL;
        if (!strcmp(argv[i], "--config") && i + 1 < argc) cfg = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9)) cfg = argv[i] + 9;
        if (cfg) {
            int r = apply_config(cfg, fl, nf);
            if (r) return r;
        }
    }
    int r = cli_parse("train", USAGE,
                      "Trains a LLaMA model from scratch (AdamW, warmup + cosine, clipping, accumulation,\n"
                      "periodic validation, resumable checkpoints) and saves DIR/config.json,\n"
                      "DIR/model.safetensors and DIR/tokenizer.json.",
                      fl, nf, argc, argv);
    if (r == CLI_HELP) return CQ_EXIT_OK;
    if (r) return r;
    if ((r = cli_check_backend_name("train", USAGE, a.backend))) return r;
    if ((r = cli_memflags_apply("train", USAGE, &a.mem, NULL, NULL, NULL))) return r;
    if (!a.data) return cli_usage_error("train", USAGE, "--data is required");
    if (a.heads % a.kv_heads || a.dim % a.heads || (a.dim / a.heads) % 2)
        return cli_usage_error("train", USAGE,
                               "--heads must divide --dim into an even head size and be a multiple of --kv-heads");
    cli_set_threads(a.threads);

    cq_backend *be = NULL;
    cq_tokenizer *tok = NULL;
    cq_llama *m = NULL;
    cq_trainer *tr = NULL;
    char *text = NULL;
    int32_t *ids = NULL, *vids = NULL;
    size_t n = 0, nv = 0, len = 0;
    char path[4200], ckpt[4200];
    int rc = CQ_EXIT_RUNTIME;

    if (cq_mkdir_p(a.out)) {
        fprintf(stderr, "cherryq train: %s: cannot create the output directory\n", a.out);
        return CQ_EXIT_RUNTIME;
    }
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint", a.out);
    snprintf(path, sizeof path, "%s/tokenizer.json", a.out);
    if ((r = cli_load_corpus(a.data, &text, &len))) goto done;
    if (a.tokenizer) {
        if ((r = cli_load_tokenizer(NULL, a.tokenizer, &tok))) goto done;
    } else if (a.resume && cq_file_exists(path)) {
        if ((r = cli_load_tokenizer(NULL, path, &tok))) goto done;
        fprintf(stderr, "cherryq: resuming with the tokenizer %s\n", path);
    } else {
        double t0 = cq_time_sec();
        r = cq_bpe_train(text, len, (int)a.vocab, &tok);
        if (r) {
            fprintf(stderr, "cherryq train: training the tokenizer failed: %s\n", cq_strerror(r));
            goto done;
        }
        r = cq_tokenizer_save_json(tok, path);
        if (r) {
            fprintf(stderr, "cherryq train: %s: cannot write the tokenizer: %s\n", path, cq_strerror(r));
            goto done;
        }
        fprintf(stderr, "cherryq: trained a byte-level BPE of %d tokens on %zu bytes in %.1fs -> %s\n",
                cq_tokenizer_n_vocab(tok), len, cq_time_sec() - t0, path);
    }
    if (a.tokenizer) {
        r = cq_tokenizer_save_json(tok, path);
        if (r == CQ_ENOTSUP) {
            /* an SPM tokenizer: copy the file as is */
            char *tj = NULL;
            size_t tl = 0;
            r = cq_read_file(a.tokenizer, &tj, &tl, 1u << 30);
            if (!r) r = cq_write_file_atomic(path, tj, tl);
            free(tj);
        }
        if (r) {
            fprintf(stderr, "cherryq train: %s: cannot write the tokenizer: %s\n", path, cq_strerror(r));
            goto done;
        }
    }
    double t0 = cq_time_sec();
    r = cq_tokenizer_encode(tok, text, len, 0, &ids, &n);
    free(text);
    text = NULL;
    if (r) {
        fprintf(stderr, "cherryq train: %s: tokenizing failed: %s\n", a.data, cq_strerror(r));
        goto done;
    }
    if (a.val) {
        if ((r = cli_tokenize_file(tok, a.val, false, &vids, &nv))) goto done;
    } else if (a.holdout > 0) {
        nv = (size_t)((double)n * a.holdout);
        if (nv < (size_t)a.seq) nv = 0;
        n -= nv;
        vids = ids + n; /* points into ids: not freed separately */
    }
    fprintf(stderr, "cherryq: %zu training tokens, %zu validation tokens%s (tokenized in %.1fs)\n", n, nv,
            a.val ? "" : " (held out from --data)", cq_time_sec() - t0);
    if (n <= (size_t)a.seq) {
        fprintf(stderr, "cherryq train: %s: %zu tokens are too few for --seq %lld\n", a.data, n, (long long)a.seq);
        r = CQ_EXIT_RUNTIME;
        goto done;
    }
    if ((r = cli_backend_open(a.backend, a.device, &be))) goto done;

    cq_llama_config cfg = {
        .vocab = cq_tokenizer_n_vocab(tok), .dim = a.dim, .ffn = a.ffn, .n_layers = a.layers, .n_heads = a.heads,
        .n_kv_heads = a.kv_heads, .head_dim = a.dim / a.heads, .max_seq = a.seq, .norm_eps = (float)a.norm_eps,
        .rope_theta = (float)a.rope_theta, .tie_embeddings = a.tie, .bos = cq_tokenizer_bos(tok),
        .eos = cq_tokenizer_eos(tok),
    };
    cq_plan_opts po = { .batch = a.batch, .seqlen = a.seq };
    cli_memflags_apply("train", USAGE, &a.mem, &po, NULL, NULL);
    if ((r = cli_plan_check("train", &cfg, CQ_PLAN_TRAIN, &po, be, a.force))) goto done;
    r = cq_llama_create(&m, &cfg, be, (uint64_t)a.seed);
    if (r) {
        fprintf(stderr, "cherryq train: cannot create the model: %s\n", cq_strerror(r));
        goto done;
    }
    cli_memflags_apply("train", USAGE, &a.mem, NULL, m, NULL);
    fprintf(stderr,
            "cherryq: model: vocab %lld, dim %lld, %lld layers, %lld heads (%lld kv), ffn %lld, seq %lld: %.2fM "
            "parameters\n",
            (long long)cfg.vocab, (long long)cfg.dim, (long long)cfg.n_layers, (long long)cfg.n_heads,
            (long long)cfg.n_kv_heads, (long long)cfg.ffn, (long long)cfg.max_seq,
            (double)cq_llama_config_n_params(&cfg) / 1e6);

    prog_ctx pc;
    cq_train_opts o;
    cq_train_opts_default(&o);
    o.steps = a.steps;
    o.batch = a.batch;
    o.seq = a.seq;
    o.accum = a.accum;
    o.lr = (float)a.lr;
    o.min_lr_ratio = (float)a.min_lr_ratio;
    o.warmup = a.warmup;
    o.weight_decay = (float)a.wd;
    o.clip = (float)a.clip;
    o.eval_every = a.eval_every;
    o.eval_tokens = a.eval_tokens;
    o.save_every = a.save_every;
    o.ckpt_dir = ckpt;
    o.seed = (uint64_t)a.seed;
    o.progress = on_progress;
    o.user = &pc;
    cli_memflags_apply("train", USAGE, &a.mem, NULL, NULL, &o);
    r = cq_trainer_create(&tr, m, &o, ids, n, nv ? vids : NULL, nv);
    if (r) {
        fprintf(stderr, "cherryq train: %s\n", cq_strerror(r));
        goto done;
    }
    if (a.resume) {
        r = cq_trainer_load(tr, ckpt);
        if (r) {
            fprintf(stderr, "cherryq train: cannot resume from %s: %s\n", ckpt, cq_strerror(r));
            goto done;
        }
        fprintf(stderr, "cherryq: resumed from %s at step %lld\n", ckpt, (long long)cq_trainer_step_count(tr));
    }
    pc.tokens_per_step = a.batch * a.seq * a.accum;
    fprintf(stderr, "cherryq: %lld steps of %lld tokens (%lld x %lld x %lld), lr %g, warmup %lld, checkpoints in %s\n",
            (long long)a.steps, (long long)pc.tokens_per_step, (long long)a.batch, (long long)a.seq,
            (long long)a.accum, a.lr, (long long)a.warmup, ckpt);
    cli_progress_init(&pc.pr, "train", a.steps, a.eval_every > 0 ? (a.eval_every < 10 ? a.eval_every : 10) : 10);
    t0 = cq_time_sec();
    r = cq_trainer_run(tr);
    cli_progress_done(&pc.pr);
    if (r) {
        fprintf(stderr, "cherryq train: training failed: %s\n", cq_strerror(r));
        goto done;
    }
    r = cq_llama_save(m, a.out, CQ_F32, NULL);
    if (r) {
        fprintf(stderr, "cherryq train: %s: cannot save the model: %s\n", a.out, cq_strerror(r));
        goto done;
    }
    char dur[32];
    fprintf(stderr, "cherryq: trained to step %lld in %s; model saved to %s", (long long)cq_trainer_step_count(tr),
            cli_fmt_duration(cq_time_sec() - t0, dur, sizeof dur), a.out);
    if (isfinite(cq_trainer_best_val(tr)))
        fprintf(stderr, " (best validation perplexity %.2f)", exp(cq_trainer_best_val(tr)));
    fprintf(stderr, "\n");
    rc = CQ_EXIT_OK;
done:
    if (r == CQ_EXIT_USAGE) rc = CQ_EXIT_USAGE;
    cq_trainer_destroy(&tr);
    cq_llama_destroy(&m);
    cq_backend_destroy(&be);
    cq_tokenizer_destroy(&tok);
    free(text);
    if (a.val) free(vids);
    free(ids);
    return rc;
}
