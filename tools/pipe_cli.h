/* cherryq CLI: helpers shared by the pipeline commands (impact, analyze,
 * quantize, export): progress bridging and model + corpus loading. */
#ifndef CQ_PIPE_CLI_H
#define CQ_PIPE_CLI_H

#include "cli.h"
#include "pipeline.h"

/* Bridges cq_progress_fn to cli_progress: one progress line per stage, with
 * rate (units/s, tokens/s when tokens_per_unit > 0) and ETA. */
typedef struct pipe_progress {
    cli_progress p;
    char stage[32];
    bool active;
    double t0;
    int64_t tokens_per_unit;
} pipe_progress;

void pipe_progress_cb(void *user, const char *stage, int64_t done, int64_t total, double value);
void pipe_progress_end(pipe_progress *pp);

/* The checkpointed impact accumulation (cq_impact_compute_ckpt) with
 * progress; says on stderr, as `who` ("cherryq impact"), why it failed (a
 * checkpoint that cannot be resumed, or another error) or where it resumed. */
int pipe_impact_run(const char *who, cq_impact *imp, cq_llama *m, const cq_calib *cal, cq_impact_ckpt *ck,
                    pipe_progress *pp);

/* "layers.3.self_attn.v_proj", "model.layers.3.self_attn.v_proj" or the full
 * weight name -> the full weight name; 0 or CQ_EINVAL. */
int pipe_matrix_name(const char *in, char *out, size_t n);

#endif
