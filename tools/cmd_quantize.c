/* cherryq quantize: CherryQ and its baselines (CHERRYQ.md sections 3-5).
 *
 *   rtn      round to nearest on the CherryQ grid, with or without cherries
 *   gptq     GPTQ layer by layer (H = 2XX^T from calibration activations,
 *            1% dampening, blocks of 128) on the same grid, +- cherries
 *   qat      quantization-aware training, no cherries (the paper's baseline)
 *   cherryq  impact -> cherry selection -> QAT: cherries train as ordinary
 *            weights, normal weights through the STE, everything else
 *            (embeddings, norms, lm_head) trains unquantized
 *
 * The calibration tokens are split: --val-frac of them, as every k-th chunk
 * of 16 windows across the corpus (the last --val-frac when the corpus is too
 * short for that), is a held-out slice (QAT keeps the weights that do best
 * there, never worse than the RTN start); the rest gives the impact / GPTQ
 * windows and the QAT training windows.
 * Output: a quantized model directory (docs/format.md), written as <out>.tmp
 * and renamed into place at the end.
 * Crash safety: the impact computed here is checkpointed every --ckpt-every
 * windows (and once complete) to <ckpt>/impact.ckpt, QAT at every held-out
 * evaluation to <ckpt>/trainer.ckpt (<ckpt> = --ckpt, default <out>.ckpt);
 * --resume continues from both. impact.ckpt is removed when the quantized
 * model is written. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sys/file.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cq_io.h"
#include "pipe_cli.h"
#include "train.h"

#define USAGE                                                                                                  \
    "--model PATH (--data FILE | --self-generate N) --out DIR --method cherryq|qat|rtn|gptq [--bits 3] "      \
    "[--group 128] [--select impact|magnitude|random|loss-aware|none] [--k N | --k-rule paper|reference | "    \
    "--frac F] [--impact FILE] [options]"

/* The default peak learning rate of QAT for a model of hidden size dim:
 * the paper's 2e-5 at dim 4096 (LLaMA-2-7B), scaled by sqrt(4096/dim)
 * (smaller models take larger steps): 9.2e-5 for the default model (dim
 * 192). Measured there (docs/results.md): 1e-4 improves the held-out NLL
 * from the first steps; 4.3e-4 (linear scaling) first loses ~0.03 nats and
 * needs > 30 steps to recover; 1e-3 never beats the RTN start in 40 steps. */
static double default_lr(int64_t dim)
{
    return 2e-5 * sqrt(4096.0 / (double)dim);
}

static int qat_progress(const cq_train_progress *p, void *user)
{
    cli_progress *pr = user;
    if (p->evaluated) {
        cli_progress_note(pr, "step %lld: held-out NLL %.4f (PPL %.3f)", (long long)p->step, p->val_loss,
                          exp(p->val_loss));
        return 0;
    }
    char extra[64];
    snprintf(extra, sizeof extra, "lr %.2e", p->lr);
    cli_progress_update(pr, p->step, p->loss, p->tokens_per_s, p->eta_s, extra);
    return 0;
}

static const char *crit_name(cq_sel_criterion c)
{
    switch (c) {
    case CQ_SEL_IMPACT: return "impact";
    case CQ_SEL_MAGNITUDE: return "magnitude";
    case CQ_SEL_RANDOM: return "random";
    case CQ_SEL_LOSS_AWARE: return "loss-aware";
    }
    return "?";
}

/* One run per checkpoint directory: an exclusive flock on it for the rest
 * of the run (*fd, closed at the end), so a second quantize sharing it
 * fails at once instead of overwriting the first one's checkpoints. */
static int ckpt_lock(const char *dir, int *fd)
{
    if (*fd >= 0) return 0;
    *fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0) {
        fprintf(stderr, "cherryq quantize: %s: cannot open the checkpoint directory: %s\n", dir, strerror(errno));
        return CQ_EXIT_RUNTIME;
    }
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "cherryq quantize: %s: another cherryq quantize is using this checkpoint directory; give "
                "each run its own --ckpt (or --out)\n", dir);
        close(*fd);
        *fd = -1;
        return CQ_EXIT_RUNTIME;
    }
    return 0;
}

/* After the model is written: this job's temp files of killed checkpoint
 * writes (<name>.tmp.<pid>) in its checkpoint directory. */
static void ckpt_sweep(const char *dir)
{
    static const char *const own[] = { "impact.ckpt.tmp.", "trainer.ckpt.tmp.", "qat_run.txt.tmp.",
                                       "qat_best.f32.tmp." };
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[8192];
    while ((e = readdir(d)))
        for (size_t k = 0; k < sizeof own / sizeof own[0]; k++)
            if (!strncmp(e->d_name, own[k], strlen(own[k])) &&
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p)
                unlink(p);
    closedir(d);
}

int cmd_quantize(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *out = NULL, *method = NULL, *select = NULL, *krule = NULL,
               *impact_path = NULL, *save_impact = NULL, *tokp = NULL, *ckpt = NULL, *backend = "cpu",
               *protocol = "stream";
    int64_t bits = 3, group = 128, k = 0, samples = 128, seqlen = 2048, seed = 0, threads = 0, device = -1;
    int64_t steps = 200, batch = 8, accum = 1, eval_every = 0, self_gen = 0, eval_tokens = 16384;
    double frac = 0, lr = 0, warmup_frac = 0.05, min_lr_ratio = -1, clip = 1.0, wd = 0, beta1 = 0.9, beta2 = 0.95;
    double val_frac = 0.1, max_epochs = 1.0, damp = 0.01;
    int64_t gblock = 128, ckpt_every = 32;
    bool resume = false, json = false, force = false, qat_ran = false;
    int ck_fd = -1;   /* flock of the checkpoint directory (ckpt_lock) */
    cli_memflags mem = { 0 };
    cli_flag fl[] = {
        { "model", CLI_STR, &model, "full-precision model (Hugging Face directory or .gguf)", .metavar = "PATH" },
        { "data", CLI_STR, &data, "calibration corpus: text, or JSONL with a \"text\" field", .metavar = "FILE" },
        { "self-generate", CLI_INT, &self_gen,
          "calibration text sampled from the model itself: N sequences of --seqlen tokens (LLM-QAT style)",
          CLI_NONNEG },
        { "out", CLI_STR, &out, "quantized model directory to write", .metavar = "DIR" },
        { "method", CLI_STR, &method, "cherryq, qat, rtn or gptq", .metavar = "NAME" },
        { "bits", CLI_INT, &bits, "bits per normal weight: 2, 3, 4 or 8", CLI_ANY },
        { "group", CLI_INT, &group, "group size: 32, 64, 128 or 0 (whole row); a partial last group is used "
                                    "when it does not divide the row", CLI_ANY },
        { "select", CLI_STR, &select,
          "cherry criterion: impact, magnitude, random, loss-aware or none (default: impact for cherryq, none "
          "otherwise)", .metavar = "NAME" },
        { "k", CLI_INT, &k, "cherries per row (overrides --k-rule)", CLI_POS },
        { "k-rule", CLI_STR, &krule,
          "paper: k = max(1, round(in/256)) (default); reference: floor(ceil(in/256)/8)*8 (0 below 1024 columns)",
          .metavar = "RULE" },
        { "frac", CLI_FLOAT, &frac, "cherries = this fraction of each matrix's weights, chosen matrix-wide",
          CLI_RANGE, 0, 1 },
        { "impact", CLI_STR, &impact_path, "impact file (cherryq impact); computed here when absent",
          .metavar = "FILE" },
        { "save-impact", CLI_STR, &save_impact, "write the impact computed here to FILE", .metavar = "FILE" },
        { "samples", CLI_INT, &samples, "calibration windows for impact and GPTQ", CLI_POS },
        { "protocol", CLI_STR, &protocol,
          "calibration windows for impact and GPTQ: stream (random offsets of the tokenized corpus) or c4 "
          "(GPTQ's C4 draw from the JSONL records); QAT trains on the tokenized corpus either way" },
        { "seqlen", CLI_INT, &seqlen, "tokens per window (capped at the model's context)", CLI_RANGE, 2, 1 << 24 },
        { "val-frac", CLI_FLOAT, &val_frac, "held-out fraction of the calibration tokens (QAT keep-best)",
          CLI_RANGE, 0.001, 0.5 },
        { "steps", CLI_INT, &steps, "QAT optimizer steps", CLI_POS },
        { "batch", CLI_INT, &batch, "QAT sequences per micro-batch", CLI_POS },
        { "accum", CLI_INT, &accum, "QAT micro-batches per step (gradient accumulation)", CLI_POS },
        { "lr", CLI_FLOAT, &lr, "QAT peak learning rate (0: 2e-5 * sqrt(4096 / hidden_size))",
          CLI_NONNEG },
        { "warmup-frac", CLI_FLOAT, &warmup_frac, "QAT warmup as a fraction of the steps", CLI_RANGE, 0, 1 },
        { "min-lr-ratio", CLI_FLOAT, &min_lr_ratio,
          "cosine floor as a fraction of the peak (-1: 0.25 for <= 3 bits, 0.1 above)", CLI_RANGE, -1, 1 },
        { "clip", CLI_FLOAT, &clip, "gradient-norm clip (0: none)", CLI_NONNEG },
        { "wd", CLI_FLOAT, &wd, "AdamW weight decay", CLI_NONNEG },
        { "beta1", CLI_FLOAT, &beta1, "AdamW beta1", CLI_RANGE, 0, 0.999999 },
        { "beta2", CLI_FLOAT, &beta2, "AdamW beta2", CLI_RANGE, 0, 0.999999 },
        { "max-epochs", CLI_FLOAT, &max_epochs,
          "cap QAT at this many passes over the calibration tokens (overfitting guard)", CLI_POS },
        { "eval-every", CLI_INT, &eval_every, "held-out evaluation every N steps (0: steps/10)", CLI_NONNEG },
        { "eval-tokens", CLI_INT, &eval_tokens, "held-out tokens evaluated (0: all)", CLI_NONNEG },
        { "ckpt", CLI_STR, &ckpt, "QAT checkpoint directory (default: <out>.ckpt)", .metavar = "DIR" },
        { "resume", CLI_BOOL, &resume, "continue the impact and QAT from their checkpoints" },
        { "ckpt-every", CLI_INT, &ckpt_every, "impact checkpoint every N windows (0: none)", CLI_NONNEG },
        { "gptq-damp", CLI_FLOAT, &damp, "GPTQ dampening (fraction of mean diag H)", CLI_RANGE, 0, 1 },
        { "gptq-block", CLI_INT, &gblock, "GPTQ lazy-batch columns", CLI_POS },
        { "seed", CLI_INT, &seed, "seed for windows, random selection and QAT", CLI_NONNEG },
        { "json", CLI_BOOL, &json, "print one machine-readable JSON line on stdout" },
        { "tokenizer", CLI_STR, &tokp, "tokenizer.json (default: next to the model)", .metavar = "FILE" },
        { "threads", CLI_INT, &threads, "CPU threads (0: all cores)", CLI_NONNEG },
        CLI_MEMFLAGS(mem), /* QAT (qat, cherryq) */
        { "force", CLI_BOOL, &force, "run even when the memory plan says it will not fit" },
        { "backend", CLI_STR, &backend, "cpu, vulkan, cuda or auto" },
        { "device", CLI_INT, &device, "device index (-1: default)", CLI_RANGE, -1, 1024 },
    };
    const int nfl = (int)(sizeof fl / sizeof fl[0]);
    int r = cli_parse("quantize", USAGE,
                      "Quantize the 7 linear projections of every decoder layer with CherryQ or a baseline.\n"
                      "QAT (cherryq, qat): AdamW (0.9, 0.95), wd 0, warmup 5%, cosine to a floor, clip 1.0,\n"
                      "every parameter trains; the best weights on the held-out slice are kept.",
                      fl, nfl, argc, argv);
    if (r == CLI_HELP) return CQ_EXIT_OK;
    if (r) return r;
    if ((r = cli_check_backend_name("quantize", USAGE, backend))) return r;
    if (!model) return cli_usage_error("quantize", USAGE, "--model is required");
    if (!out) return cli_usage_error("quantize", USAGE, "--out is required");
    if (!method) return cli_usage_error("quantize", USAGE, "--method is required");
    int meth = !strcmp(method, "rtn") ? 0 : !strcmp(method, "gptq") ? 1 : !strcmp(method, "qat") ? 2
             : !strcmp(method, "cherryq") ? 3 : -1;
    if (meth < 0) return cli_usage_error("quantize", USAGE, "--method must be cherryq, qat, rtn or gptq (got '%s')", method);
    if ((r = cli_memflags_apply("quantize", USAGE, &mem, NULL, NULL, NULL))) return r;
    if (!data && !self_gen)
        return cli_usage_error("quantize", USAGE, "calibration data is required: --data FILE or --self-generate N");
    if (data && self_gen) return cli_usage_error("quantize", USAGE, "give --data or --self-generate, not both");
    bool c4;
    if ((r = cli_protocol("quantize", USAGE, protocol, &c4))) return r;
    if (c4 && !data) return cli_usage_error("quantize", USAGE, "--protocol c4 draws from --data (a JSONL file)");
    /* before any work: the output must be replaceable, and not the input */
    if (cq_dir_check(out, model)) return CQ_EXIT_RUNTIME;
    /* --out without trailing slashes: <out>.ckpt, <out>.tmp are siblings */
    char outbuf[4096];
    {
        size_t lo = strlen(out);
        while (lo > 1 && out[lo - 1] == '/') lo--;
        if (lo >= sizeof outbuf) return cli_usage_error("quantize", USAGE, "--out: path too long");
        memcpy(outbuf, out, lo);
        outbuf[lo] = 0;
        out = outbuf;
    }
    if (ckpt) {   /* the checkpoints live beside the output, never in it (it is replaced whole) */
        char ro[8192], rc[8192];
        cli_abs_path(out, ro, sizeof ro);
        cli_abs_path(ckpt, rc, sizeof rc);
        const size_t lo = strlen(ro), lc = strlen(rc);
        /* the rest of ckpt after the out prefix: "" (out itself), "/..."
         * (inside it), ".tmp" / ".tmp.old" and inside them (the writer's);
         * "<out>.ckpt", the default, is fine */
        const char *rest = lc >= lo && !strncmp(rc, ro, lo) ? rc + lo : NULL;
        if (rest && (!*rest || *rest == '/' || !strncmp(rest, ".tmp", 4)))
            return cli_usage_error("quantize", USAGE, "--ckpt %s: must not be --out, inside it, or its "
                                   "%s.tmp* (give another directory, e.g. the default %s.ckpt)", ckpt, out, out);
    }
    if (cq_quant_check((int)bits, (int)group))
        return cli_usage_error("quantize", USAGE, "unsupported grid --bits %lld --group %lld (bits 2, 3, 4, 8; "
                               "group 32, 64, 128 or 0)", (long long)bits, (long long)group);
    cq_qspec qs;
    memset(&qs, 0, sizeof qs);
    qs.bits = (int)bits;
    qs.group = (int)group;
    qs.sel.seed = (uint64_t)seed;
    if (!select) select = meth == 3 ? "impact" : "none";
    if (!strcmp(select, "none")) qs.cherries = false;
    else {
        qs.cherries = true;
        if (!strcmp(select, "impact")) qs.sel.criterion = CQ_SEL_IMPACT;
        else if (!strcmp(select, "magnitude")) qs.sel.criterion = CQ_SEL_MAGNITUDE;
        else if (!strcmp(select, "random")) qs.sel.criterion = CQ_SEL_RANDOM;
        else if (!strcmp(select, "loss-aware")) qs.sel.criterion = CQ_SEL_LOSS_AWARE;
        else return cli_usage_error("quantize", USAGE, "--select must be impact, magnitude, random, loss-aware or none");
    }
    if (meth == 2 && qs.cherries)
        return cli_usage_error("quantize", USAGE, "--method qat is QAT without cherries; use --method cherryq "
                               "for QAT with cherries");
    if (meth == 3 && !qs.cherries)
        return cli_usage_error("quantize", USAGE, "--method cherryq needs cherries; --select none is --method qat");
    int nk = (k > 0) + (krule != NULL) + (frac > 0);
    if (nk > 1) return cli_usage_error("quantize", USAGE, "give at most one of --k, --k-rule and --frac");
    if (nk && !qs.cherries) return cli_usage_error("quantize", USAGE, "--k/--k-rule/--frac need cherries (--select)");
    const char *krule_name = "paper";
    qs.sel.k_rule = CQ_K_DEFAULT;
    if (k > 0) qs.sel.k_rule = CQ_K_EXPLICIT, qs.sel.k = k, krule_name = "explicit";
    else if (frac > 0) qs.sel.k_rule = CQ_K_FRACTION, qs.sel.fraction = frac, krule_name = "fraction";
    else if (krule) {
        if (!strcmp(krule, "paper")) qs.sel.k_rule = CQ_K_DEFAULT;
        else if (!strcmp(krule, "reference")) qs.sel.k_rule = CQ_K_REFERENCE, krule_name = "reference";
        else return cli_usage_error("quantize", USAGE, "--k-rule must be paper or reference");
    }
    if (!cq_file_exists(model)) {
        fprintf(stderr, "cherryq quantize: %s: no such file or directory\n", model);
        return CQ_EXIT_RUNTIME;
    }
    cli_set_threads(threads);
    double t_start = cq_time_sec();
    cq_backend *be = NULL;
    cq_tokenizer *tok = NULL;
    cq_llama *m = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    cq_calib cal = { 0 };
    cq_impact imp = { 0 };
    cq_qplan plan = { 0 };
    cq_qpacked q = { 0 };
    cq_qat_result qr = { 0 };
    int rc = CQ_EXIT_RUNTIME;
    bool have_imp = false;
    pipe_progress pp = { 0 };
    char ckdir[4096], tokpath[4096], ickpt[4200] = "", bestpath[4200] = "", qat_ck[4096] = "";
    if ((r = cli_load_tokenizer(model, tokp, &tok))) goto done;
    if ((r = cli_backend_open(backend, device, &be))) goto done;
    {
        /* memory plan: QAT (qat, cherryq), GPTQ or RTN; cherryq computes the
         * impact first when no --impact is given */
        cq_plan_cmd pc = meth == 0 ? CQ_PLAN_RTN : meth == 1 ? CQ_PLAN_GPTQ : CQ_PLAN_QAT;
        cq_plan_opts po = { .batch = batch, .seqlen = seqlen, .samples = samples, .bits = (int)bits,
                            .group = (int)group };
        cli_memflags_apply("quantize", USAGE, &mem, &po, NULL, NULL); /* validated above */
        if ((r = cli_plan_check_model("quantize", model, pc, &po, be, force))) goto done;
        cq_plan_opts pi = { .batch = 1, .seqlen = seqlen, .samples = samples };
        if (meth == 3 && !impact_path && (r = cli_plan_check_model("quantize", model, CQ_PLAN_IMPACT, &pi, be, force)))
            goto done;
    }
    if ((r = cq_llama_load(&m, model, be))) {
        fprintf(stderr, "cherryq quantize: %s: cannot load the model: %s\n", model, cq_strerror(r));
        goto done;
    }
    if (cq_qmodel_is_quantized(model)) {
        fprintf(stderr, "cherryq quantize: %s is already quantized; give the full-precision model\n", model);
        goto done;
    }
    if (seqlen > m->cfg.max_seq) {
        fprintf(stderr, "cherryq: --seqlen %lld capped at the model's context of %lld\n", (long long)seqlen,
                (long long)m->cfg.max_seq);
        seqlen = m->cfg.max_seq;
    }
    if (data) {
        if ((r = cli_tokenize_file(tok, data, false, &ids, &n))) goto done;
    } else {
        pp.tokens_per_unit = seqlen;
        r = cq_self_generate(m, self_gen, seqlen, (uint64_t)seed, &ids, &n, pipe_progress_cb, &pp);
        pipe_progress_end(&pp);
        if (r) {
            fprintf(stderr, "cherryq quantize: self-generation failed: %s\n", cq_strerror(r));
            goto done;
        }
        fprintf(stderr, "cherryq: calibration text: %lld sequences of %lld tokens sampled from the model\n",
                (long long)self_gen, (long long)seqlen);
    }
    size_t n_val = (size_t)((double)n * val_frac);
    if (n_val < (size_t)seqlen) n_val = (size_t)seqlen;
    if (n < n_val + (size_t)seqlen + 1) {
        fprintf(stderr, "cherryq quantize: %zu calibration tokens are too few for a held-out slice and one window "
                "of %lld tokens (lower --seqlen or give more data)\n", n, (long long)seqlen);
        goto done;
    }
    size_t n_train = n - n_val;
    /* Held-out slice: interleaved chunks of 16 windows spread over the whole
     * corpus (a tail slice would be another distribution: training on the
     * rest would look like overfitting); the rest, in order, trains. */
    {
        size_t chunk = (size_t)seqlen * 16, nchunks = n / chunk;
        size_t every = val_frac > 0 ? (size_t)llround(1.0 / val_frac) : 0;
        if (every >= 2 && nchunks >= 2 * every) {
            int32_t *re = malloc(n * sizeof *re);
            if (!re) {
                r = CQ_ENOMEM;
                goto done;
            }
            size_t nt = 0, nv = 0, nvc = 0;
            for (size_t c = 0; c < nchunks; c++)
                if (c % every == every - 1) nvc++;
            size_t vbase = n - nvc * chunk;
            for (size_t c = 0; c * chunk < n; c++) {
                size_t len = c < nchunks ? chunk : n - c * chunk;
                if (c < nchunks && c % every == every - 1) {
                    memcpy(re + vbase + nv, ids + c * chunk, len * sizeof *re);
                    nv += len;
                } else {
                    memcpy(re + nt, ids + c * chunk, len * sizeof *re);
                    nt += len;
                }
            }
            free(ids);
            ids = re;
            n_train = nt;
            n_val = nv;
        }
    }
    const int32_t *val = ids + n_train;
    bool need_imp = qs.cherries && (qs.sel.criterion == CQ_SEL_IMPACT || qs.sel.criterion == CQ_SEL_LOSS_AWARE);
    bool need_cal = (need_imp && !impact_path) || meth == 1;
    if (need_cal && c4) {
        char **recs = NULL;
        size_t n_recs = 0;
        if ((r = cli_load_records(data, &recs, &n_recs))) goto done;
        r = cli_c4_calib("quantize", tok, data, recs, n_recs, samples, seqlen, (uint64_t)seed, &cal);
        cli_records_free(recs, n_recs);
        if (r) goto done;
    } else if (need_cal && (r = cq_calib_sample(&cal, ids, (int64_t)n_train, samples, seqlen, (uint64_t)seed))) {
        goto done;
    }
    if (need_imp) {
        if (impact_path) {
            if ((r = cq_impact_load(&imp, impact_path, m))) {
                fprintf(stderr, "cherryq quantize: %s: cannot use this impact file: %s\n", impact_path,
                        cq_strerror(r));
                goto done;
            }
        } else {
            if (!ckpt) {
                snprintf(ckdir, sizeof ckdir, "%s.ckpt", out);
                ckpt = ckdir;
            }
            if ((size_t)snprintf(ickpt, sizeof ickpt, "%s/impact.ckpt", ckpt) >= sizeof ickpt) {
                fprintf(stderr, "cherryq quantize: --ckpt path too long\n");
                goto done;
            }
            if (ckpt_every > 0 && ((r = cq_mkdir_p(ckpt)) || (r = ckpt_lock(ckpt, &ck_fd)))) goto done;
            snprintf(qat_ck, sizeof qat_ck, "%s", ckpt);   /* cleaned up once the model is written */
            if (!resume && cq_file_exists(ickpt))
                fprintf(stderr, "cherryq: %s: an earlier run's impact checkpoint is replaced (pass --resume to "
                        "continue it)\n", ickpt);
            cq_impact_ckpt ck = { .path = ickpt, .every = ckpt_every, .save_final = true, .resume = resume };
            pp.tokens_per_unit = seqlen;
            if ((r = pipe_impact_run("cherryq quantize", &imp, m, &cal, &ck, &pp))) goto done;
            if (save_impact && (r = cq_impact_save(&imp, save_impact))) goto done;
        }
        have_imp = true;
    }
    if ((r = cq_qplan_make(&plan, m, have_imp ? &imp : NULL, &qs))) goto done;
    fprintf(stderr, "cherryq: %s %lld-bit g%lld, cherries: %s (%lld = %.3f%% of %lld weights)\n", method,
            (long long)bits, (long long)group, qs.cherries ? crit_name(qs.sel.criterion) : "none",
            (long long)plan.nnz, 100.0 * (double)plan.nnz / (double)plan.nweights, (long long)plan.nweights);
    if (meth == 0) {
        r = cq_quantize_rtn(&q, m, &plan, &qs);
    } else if (meth == 1) {
        cq_gptq_opts go = { (float)damp, (int)gblock };
        r = cq_quantize_gptq(&q, m, &plan, &qs, &cal, &go, pipe_progress_cb, &pp);
        pipe_progress_end(&pp);
    } else {
        cq_train_opts to;
        cq_train_opts_default(&to);
        to.seq = seqlen;
        to.batch = batch;
        to.accum = accum;
        to.lr = (float)(lr > 0 ? lr : default_lr(m->cfg.dim));
        to.min_lr_ratio = (float)(min_lr_ratio >= 0 ? min_lr_ratio : bits <= 3 ? 0.25 : 0.1);
        to.beta1 = (float)beta1;
        to.beta2 = (float)beta2;
        to.weight_decay = (float)wd;
        to.clip = (float)clip;
        to.seed = (uint64_t)seed;
        cli_memflags_apply("quantize", USAGE, &mem, NULL, m, &to);
        double tok_per_step = (double)(batch * seqlen * accum);
        int64_t cap = (int64_t)floor(max_epochs * (double)n_train / tok_per_step);
        if (cap < 1) {
            /* even one step is more than --max-epochs: run one, and say so */
            fprintf(stderr, "cherryq: one QAT step (%.0f tokens) already passes over the %zu calibration tokens "
                    "%.2f times, more than --max-epochs %.2g; running 1 step (lower --batch, --accum or --seqlen, "
                    "or give more data)\n",
                    tok_per_step, n_train, tok_per_step / (double)n_train, max_epochs);
            cap = 1;
            steps = 1;
        }
        if (steps > cap) {
            fprintf(stderr, "cherryq: %lld QAT steps would pass over the %zu calibration tokens %.2f times; capped "
                    "at %lld steps (--max-epochs %.2g) against overfitting a small calibration set\n",
                    (long long)steps, n_train, (double)steps * tok_per_step / (double)n_train, (long long)cap,
                    max_epochs);
            steps = cap;
        }
        to.steps = steps;
        to.warmup = (int64_t)llround(warmup_frac * (double)steps);
        to.eval_every = eval_every > 0 ? eval_every : (steps >= 10 ? steps / 10 : 1);
        to.eval_tokens = eval_tokens;
        to.save_every = to.eval_every;
        if (!ckpt) {
            snprintf(ckdir, sizeof ckdir, "%s.ckpt", out);
            ckpt = ckdir;
        }
        to.ckpt_dir = ckpt;
        if ((r = cq_mkdir_p(ckpt)) || (r = ckpt_lock(ckpt, &ck_fd))) goto done;
        snprintf(qat_ck, sizeof qat_ck, "%s", ckpt);
        if (mem.best_on_disk) {
            if ((size_t)snprintf(bestpath, sizeof bestpath, "%s/qat_best.f32", ckpt) >= sizeof bestpath) {
                fprintf(stderr, "cherryq quantize: --ckpt path too long\n");
                r = CQ_EXIT_USAGE;
                goto done;
            }
            to.best_file = bestpath;
        }
        /* the settings the QAT checkpoint belongs to: --resume continues only
         * a run with the same ones (a finished or an other run's trainer.ckpt
         * would otherwise be loaded as if it were this run's) */
        char key[32768], keypath[4300], ckfile[4300], rmodel[8192], rdata[8192] = "(self-generated)";
        cli_abs_path(model, rmodel, sizeof rmodel);
        if (data) cli_abs_path(data, rdata, sizeof rdata);
        /* which weights are cherries (not only how many): FNV-1a of the masks */
        uint64_t mh = 1469598103934665603ull;
        for (int64_t i = 0; plan.mask && i < plan.n; i++) {
            const cq_tensor *lt = m->layers[i / CQ_LLAMA_N_LINEAR].lin[i % CQ_LLAMA_N_LINEAR];
            const int64_t ne = plan.mask[i] && lt ? cq_tensor_numel(lt) : 0;
            for (int64_t j = 0; j < ne; j++) mh = (mh ^ (uint64_t)(plan.mask[i][j] != 0)) * 1099511628211ull;
        }
        snprintf(key, sizeof key,
                 "cherryq QAT run 2\nmodel %s\ndata %s\ntrain_tokens %zu\nheld_out_tokens %zu\nmethod %s\nbits "
                 "%lld\ngroup %lld\ncherries %lld %016llx\nsteps %lld\ntokens_per_step %.0f\nlr %.9g min_lr_ratio "
                 "%.9g warmup %lld clip %.9g wd %.9g betas %.9g %.9g\neval_every %lld eval_tokens %lld\nseed %lld\n",
                 rmodel, rdata, n_train, n_val, method, (long long)bits, (long long)group, (long long)plan.nnz,
                 (unsigned long long)mh, (long long)steps, tok_per_step, to.lr, to.min_lr_ratio, (long long)to.warmup,
                 to.clip, to.weight_decay, to.beta1, to.beta2, (long long)to.eval_every, (long long)to.eval_tokens,
                 (long long)seed);
        snprintf(keypath, sizeof keypath, "%s/qat_run.txt", ckpt);
        snprintf(ckfile, sizeof ckfile, "%s/trainer.ckpt", ckpt);
        if (cq_file_exists(ckfile) && !cq_file_exists(keypath)) {
            /* not a quantize QAT checkpoint (cherryq train's, or another
             * tool's): never overwritten, never resumed */
            fprintf(stderr,
                    "cherryq quantize: %s is not this command's QAT checkpoint (no qat_run.txt beside it: a "
                    "training run's?); it is left alone: give another --ckpt\n",
                    ckfile);
            r = CQ_EXIT_RUNTIME;
            goto done;
        }
        if (!resume && cq_file_exists(ckfile))
            fprintf(stderr, "cherryq: %s: an earlier run's QAT checkpoint is replaced (pass --resume to continue "
                    "it)\n", ckfile);
        if (resume && cq_file_exists(ckfile)) {
            char *old = NULL;
            size_t on = 0;
            if (!cq_file_exists(keypath) || cq_read_file(keypath, &old, &on, 1 << 20) || on != strlen(key) ||
                memcmp(old, key, on)) {
                fprintf(stderr,
                        "cherryq quantize: %s was made by a QAT run with other settings (model, data, method, "
                        "bits, group, which weights are cherries, steps, batch, learning-rate schedule, optimizer, "
                        "evaluation or seed: compare with %s): remove it, or run without --resume\n",
                        ckfile, keypath);
                free(old);
                r = CQ_EXIT_RUNTIME;
                goto done;
            }
            free(old);
        } else if ((r = cq_write_file_atomic(keypath, key, strlen(key)))) {
            goto done;
        }
        cli_progress pr;
        cli_progress_init(&pr, method, steps, steps / 20 > 0 ? steps / 20 : 1);
        to.progress = qat_progress;
        to.user = &pr;
        fprintf(stderr, "cherryq: QAT %lld steps x %lld tokens, lr %.3g (floor %.2g x), warmup %lld, clip %.2g, "
                "held-out %zu tokens\n", (long long)steps, (long long)tok_per_step, to.lr, to.min_lr_ratio,
                (long long)to.warmup, to.clip, n_val);
        qat_ran = true;
        r = cq_qat_train(m, &plan, &qs, &to, ids, n_train, val, n_val, resume, &qr);
        cli_progress_done(&pr);
        if (r) goto done;
        if (qr.resumed_at > 0)
            fprintf(stderr, "cherryq: QAT resumed from %s at step %lld\n", ckpt, (long long)qr.resumed_at);
        fprintf(stderr, "cherryq: held-out NLL: RTN start %.4f, best %.4f, handed back %.4f%s; %.2f epochs of the "
                "calibration tokens\n", qr.start_val, qr.best_val, qr.final_val,
                qr.kept_start ? " (training never beat the start: RTN weights kept)" : "", qr.epochs);
        r = cq_quantize_rtn(&q, m, &plan, &qs);
    }
    if (r) {
        fprintf(stderr, "cherryq quantize: %s failed: %s\n", method, cq_strerror(r));
        goto done;
    }
    double bpw = cq_qpacked_bpw(&q);
    char qcfg[1024], kpart[96];
    if (!qs.cherries) snprintf(kpart, sizeof kpart, "\"k_rule\": null, \"k\": 0");
    else if (qs.sel.k_rule == CQ_K_EXPLICIT) snprintf(kpart, sizeof kpart, "\"k_rule\": \"explicit\", \"k\": %lld", (long long)k);
    else if (qs.sel.k_rule == CQ_K_FRACTION) snprintf(kpart, sizeof kpart, "\"k_rule\": \"fraction\", \"fraction\": %.8g", frac);
    else snprintf(kpart, sizeof kpart, "\"k_rule\": \"%s\"", krule_name);
    snprintf(qcfg, sizeof qcfg,
             "{\"quant_method\": \"cherryq\", \"method\": \"%s\", \"bits\": %lld, \"group_size\": %lld, "
             "\"selection\": \"%s\", %s, \"cherries\": %lld, \"bits_per_weight\": %.6f, "
             "\"cherry_cols_dtype\": \"U16\", \"format_version\": 1}",
             method, (long long)bits, (long long)group, qs.cherries ? crit_name(qs.sel.criterion) : "none", kpart,
             (long long)plan.nnz, bpw);
    if (tokp) snprintf(tokpath, sizeof tokpath, "%s", tokp);
    else snprintf(tokpath, sizeof tokpath, "%s/tokenizer.json", model);
    if ((r = cq_qmodel_save(m, &q, out, qcfg, tokpath))) {
        fprintf(stderr, "cherryq quantize: %s: cannot write the quantized model: %s\n", out, cq_strerror(r));
        goto done;
    }
    /* the model is written: the impact checkpoint is no longer needed */
    if (ickpt[0] && unlink(ickpt) != 0 && errno != ENOENT)
        fprintf(stderr, "cherryq: warning: cannot remove the checkpoint %s: %s\n", ickpt, strerror(errno));
    if (bestpath[0] && unlink(bestpath) != 0 && errno != ENOENT)
        fprintf(stderr, "cherryq: warning: cannot remove %s: %s\n", bestpath, strerror(errno));
    /* and the QAT checkpoint: the run is over, nothing is left to resume */
    if (qat_ck[0]) {
        char f[4300];
        for (int i = 0; qat_ran && i < 2; i++) {   /* only this run's own QAT checkpoint */
            snprintf(f, sizeof f, "%s/%s", qat_ck, i ? "qat_run.txt" : "trainer.ckpt");
            if (unlink(f) != 0 && errno != ENOENT)
                fprintf(stderr, "cherryq: warning: cannot remove the checkpoint %s: %s\n", f, strerror(errno));
        }
        ckpt_sweep(qat_ck);
        rmdir(qat_ck);   /* when empty; a user's --ckpt directory with other files stays */
    }
    double secs = cq_time_sec() - t_start;
    if (json)
        printf("{\"method\": \"%s\", \"bits\": %lld, \"group\": %lld, \"selection\": \"%s\", \"cherries\": %lld, "
               "\"bpw\": %.6f, \"seconds\": %.2f, \"qat_start_nll\": %.6f, \"qat_best_nll\": %.6f, "
               "\"qat_steps\": %lld, \"qat_kept_start\": %s, \"out\": \"%s\"}\n",
               method, (long long)bits, (long long)group, qs.cherries ? crit_name(qs.sel.criterion) : "none",
               (long long)plan.nnz, bpw, secs, qr.start_val, qr.best_val, (long long)qr.steps,
               qr.kept_start ? "true" : "false", out);
    else
        printf("%s %lld-bit g%lld: %.4f bits per weight (%lld cherries) in %.1fs -> %s\n", method, (long long)bits,
               (long long)group, bpw, (long long)plan.nnz, secs, out);
    rc = CQ_EXIT_OK;
done:
    if (ck_fd >= 0) close(ck_fd);
    pipe_progress_end(&pp);
    cq_qpacked_free(&q);
    cq_qplan_free(&plan);
    cq_impact_free(&imp);
    cq_calib_free(&cal);
    free(ids);
    cq_llama_destroy(&m);
    cq_backend_destroy(&be);
    cq_tokenizer_destroy(&tok);
    return rc;
}
