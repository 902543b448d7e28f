/* cherryq impact: the Fisher-diagonal impact of every 2-D weight
 * (CHERRYQ.md section 1): per-sample gradients of the summed next-token NLL
 * (batch 1), running mean of their squares over --samples calibration
 * windows of --seqlen tokens drawn deterministically (--seed) from a corpus:
 * --protocol stream, at random offsets of the tokenized file without overlap
 * (seqlen inputs and their targets); --protocol c4, GPTQ's C4 draw from the
 * records of a JSONL file (models/evalset.h: the reference's windows of
 * seqlen tokens, seqlen - 1 predictions each).
 * Saved as safetensors keyed by the weight names (F32), atomically.
 * Crash safety: the running mean is checkpointed atomically every
 * --ckpt-every windows to --ckpt (default <out>.ckpt); --resume continues
 * from it (bitwise equal to an uninterrupted run on the CPU backend with the
 * same --threads); the checkpoint is removed once the impact file is
 * written. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cq_io.h"
#include "pipe_cli.h"

#define USAGE                                                                                                  \
    "--model PATH --data FILE --out FILE [--protocol stream|c4] [--samples N] [--seqlen N] [--ckpt-every N] "  \
    "[--resume] [options]"

int cmd_impact(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *out = NULL, *tokp = NULL, *ckpt = NULL, *backend = "cpu",
               *protocol = "stream";
    int64_t samples = 128, seqlen = 2048, seed = 0, threads = 0, device = -1, ckpt_every = 32;
    bool force = false, resume = false;
    cli_flag fl[] = {
        { "model", CLI_STR, &model, "full-precision model (Hugging Face directory or .gguf)", .metavar = "PATH" },
        { "data", CLI_STR, &data, "calibration corpus: text, or JSONL with a \"text\" field", .metavar = "FILE" },
        { "out", CLI_STR, &out, "impact file to write (safetensors)", .metavar = "FILE" },
        { "protocol", CLI_STR, &protocol,
          "stream: windows at random offsets of the tokenized file; c4: GPTQ's C4 calibration draw from a "
          "JSONL file's records" },
        { "samples", CLI_INT, &samples, "calibration windows (the paper: 128)", CLI_POS },
        { "seqlen", CLI_INT, &seqlen, "tokens per window (capped at the model's context)", CLI_RANGE, 2, 1 << 24 },
        { "seed", CLI_INT, &seed, "window sampling seed", CLI_NONNEG },
        { "tokenizer", CLI_STR, &tokp, "tokenizer.json (default: next to the model)", .metavar = "FILE" },
        { "threads", CLI_INT, &threads, "CPU threads (0: all cores)", CLI_NONNEG },
        { "ckpt", CLI_STR, &ckpt, "checkpoint file of the running mean (default: <out>.ckpt)", .metavar = "FILE" },
        { "ckpt-every", CLI_INT, &ckpt_every, "checkpoint every N windows (0: no checkpoints)", CLI_NONNEG },
        { "resume", CLI_BOOL, &resume, "continue from the checkpoint of an interrupted run" },
        { "force", CLI_BOOL, &force, "run even when the memory plan says it will not fit" },
        { "backend", CLI_STR, &backend, "cpu, vulkan, cuda or auto" },
        { "device", CLI_INT, &device, "device index (-1: default)", CLI_RANGE, -1, 1024 },
    };
    int r = cli_parse("impact", USAGE,
                      "Impact of every 2-D weight: the Fisher diagonal F = E[g^2] over calibration windows,\n"
                      "g = gradient of one window's summed next-token NLL (batch 1), as the running mean\n"
                      "F = F*n/(n+1) + g^2/(n+1). Windows are drawn without overlap from the corpus.",
                      fl, (int)(sizeof fl / sizeof fl[0]), argc, argv);
    if (r == CLI_HELP) return CQ_EXIT_OK;
    if (r) return r;
    if ((r = cli_check_backend_name("impact", USAGE, backend))) return r;
    if (!model) return cli_usage_error("impact", USAGE, "--model is required");
    if (!data) return cli_usage_error("impact", USAGE, "--data is required");
    if (!out) return cli_usage_error("impact", USAGE, "--out is required");
    bool c4;
    if ((r = cli_protocol("impact", USAGE, protocol, &c4))) return r;
    if (!cq_file_exists(model)) {
        fprintf(stderr, "cherryq impact: %s: no such file or directory\n", model);
        return CQ_EXIT_RUNTIME;
    }
    char ckbuf[4200];
    if (!ckpt) {
        if ((size_t)snprintf(ckbuf, sizeof ckbuf, "%s.ckpt", out) >= sizeof ckbuf)
            return cli_usage_error("impact", USAGE, "--out path too long");
        ckpt = ckbuf;
    }
    if (!strcmp(ckpt, out) || !strcmp(ckpt, model) || !strcmp(ckpt, data))
        return cli_usage_error("impact", USAGE, "--ckpt must be a file of its own (not --out, --model or --data)");
    {
        /* an interrupted run's checkpoint is never overwritten silently */
        int64_t done = 0, total = 0;
        int pr = cq_impact_ckpt_peek(ckpt, &done, &total);
        if (!resume && pr != CQ_ENOENT) {
            if (pr == CQ_OK)
                fprintf(stderr, "cherryq impact: %s: a checkpoint of an interrupted run exists (%lld of %lld windows);"
                        " pass --resume to continue it, or remove it to start over\n", ckpt, (long long)done,
                        (long long)total);
            else
                fprintf(stderr, "cherryq impact: %s exists and is not a usable impact checkpoint; remove it or give"
                        " another --ckpt\n", ckpt);
            return CQ_EXIT_RUNTIME;
        }
        if (resume && pr != CQ_OK && pr != CQ_ENOENT) {
            fprintf(stderr, "cherryq impact: %s: cannot resume from this checkpoint: %s\n", ckpt, cq_strerror(pr));
            return CQ_EXIT_RUNTIME;
        }
        if (resume && pr == CQ_ENOENT)
            fprintf(stderr, "cherryq: no checkpoint at %s; starting from the first window\n", ckpt);
    }
    cli_set_threads(threads);
    cq_backend *be = NULL;
    cq_tokenizer *tok = NULL;
    cq_llama *m = NULL;
    int32_t *ids = NULL;
    char **recs = NULL;
    size_t n = 0, n_recs = 0;
    cq_calib cal = { 0 };
    cq_impact imp = { 0 };
    int rc = CQ_EXIT_RUNTIME;
    if ((r = cli_load_tokenizer(model, tokp, &tok))) goto done;
    if ((r = c4 ? cli_load_records(data, &recs, &n_recs) : cli_tokenize_file(tok, data, false, &ids, &n))) goto done;
    if ((r = cli_backend_open(backend, device, &be))) goto done;
    cq_plan_opts po = { .batch = 1, .seqlen = seqlen, .samples = samples };
    if ((r = cli_plan_check_model("impact", model, CQ_PLAN_IMPACT, &po, be, force))) goto done;
    if ((r = cq_llama_load(&m, model, be))) {
        fprintf(stderr, "cherryq impact: %s: cannot load the model: %s\n", model, cq_strerror(r));
        goto done;
    }
    if (seqlen > m->cfg.max_seq) {
        fprintf(stderr, "cherryq: --seqlen %lld capped at the model's context of %lld\n", (long long)seqlen,
                (long long)m->cfg.max_seq);
        seqlen = m->cfg.max_seq;
    }
    if (c4) {
        r = cli_c4_calib("impact", tok, data, recs, n_recs, samples, seqlen, (uint64_t)seed, &cal);
        cli_records_free(recs, n_recs);   /* the records are not needed again */
        recs = NULL;
        n_recs = 0;
        if (r) goto done;
    } else if ((r = cq_calib_sample(&cal, ids, (int64_t)n, samples, seqlen, (uint64_t)seed))) {
        fprintf(stderr, "cherryq impact: %s: %s\n", data, cq_strerror(r));
        goto done;
    }
    double t0 = cq_time_sec();
    pipe_progress pp = { .tokens_per_unit = seqlen };
    cq_impact_ckpt ck = { .path = ckpt, .every = ckpt_every, .resume = resume };
    if ((r = pipe_impact_run("cherryq impact", &imp, m, &cal, &ck, &pp))) goto done;
    if ((r = cq_impact_save(&imp, out))) {
        fprintf(stderr, "cherryq impact: %s: cannot write: %s\n", out, cq_strerror(r));
        goto done;
    }
    /* the result is safely on disk: the checkpoint has served its purpose */
    if (unlink(ckpt) != 0 && errno != ENOENT)
        fprintf(stderr, "cherryq: warning: cannot remove the checkpoint %s: %s\n", ckpt, strerror(errno));
    printf("impact of %d weights from %lld windows of %lld tokens (%.1fs) -> %s\n", imp.n, (long long)samples,
           (long long)seqlen, cq_time_sec() - t0, out);
    rc = CQ_EXIT_OK;
done:
    cq_impact_free(&imp);
    cq_calib_free(&cal);
    free(ids);
    cli_records_free(recs, n_recs);
    cq_llama_destroy(&m);
    cq_backend_destroy(&be);
    cq_tokenizer_destroy(&tok);
    return rc;
}
