/* cherryq CLI: helpers shared by the pipeline commands. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "pipe_cli.h"

void pipe_progress_end(pipe_progress *pp)
{
    if (pp && pp->active) cli_progress_done(&pp->p);
    if (pp) pp->active = false;
}

void pipe_progress_cb(void *user, const char *stage, int64_t done, int64_t total, double value)
{
    pipe_progress *pp = user;
    if (!pp) return;
    if (!pp->active || strcmp(pp->stage, stage)) {
        pipe_progress_end(pp);
        snprintf(pp->stage, sizeof pp->stage, "%s", stage);
        int64_t every = total / 10 > 0 ? total / 10 : 1;
        cli_progress_init(&pp->p, pp->stage, total, every);
        pp->t0 = cq_time_sec();
        pp->active = true;
    }
    double el = cq_time_sec() - pp->t0;
    double rate = el > 0 ? (double)done / el : 0;
    if (pp->tokens_per_unit > 0) rate *= (double)pp->tokens_per_unit;
    double eta = done > 0 ? el / (double)done * (double)(total - done) : 0;
    cli_progress_update(&pp->p, done, value != 0 ? value : NAN, rate, eta, NULL);
    if (done == total) pipe_progress_end(pp);
}

int pipe_matrix_name(const char *in, char *out, size_t n)
{
    if (!in || !*in) return CQ_EINVAL;
    const char *pre = strncmp(in, "model.", 6) ? "model." : "";
    size_t L = strlen(in);
    const char *suf = L > 7 && !strcmp(in + L - 7, ".weight") ? "" : ".weight";
    if ((size_t)snprintf(out, n, "%s%s%s", pre, in, suf) >= n) return CQ_EINVAL;
    return CQ_OK;
}

int pipe_impact_run(const char *who, cq_impact *imp, cq_llama *m, const cq_calib *cal, cq_impact_ckpt *ck,
                    pipe_progress *pp)
{
    int r = cq_impact_compute_ckpt(imp, m, cal, ck, pipe_progress_cb, pp);
    pipe_progress_end(pp);
    if (r == CQ_EBADMSG && ck->resume)
        fprintf(stderr, "%s: %s: cannot resume from this impact checkpoint (see above); remove it to start over\n",
                who, ck->path);
    else if (r)
        fprintf(stderr, "%s: impact failed: %s\n", who, cq_strerror(r));
    else if (ck->resumed_at > 0)
        fprintf(stderr, "cherryq: impact resumed from %s after %lld of %lld windows\n", ck->path,
                (long long)ck->resumed_at, (long long)cal->n);
    return r;
}
