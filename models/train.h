/* cherryq: the trainer (pre-training from scratch and CherryQ's QAT).
 *
 * One optimizer step:
 *   for each of `accum` micro-batches: sample `batch` windows of seq+1 tokens
 *   at uniformly random offsets of the training tokens (a splitmix64 stream
 *   seeded by opts.seed; ids = window[0..seq-1], targets = window[1..seq]),
 *   forward + backward of loss = sum NLL / (batch * seq * accum), so the
 *   accumulated gradient is that of the step's mean next-token NLL;
 *   global gradient norm = sqrt(sum over trained parameters of cq_sumsq(grad));
 *   a non-finite loss or norm skips the step (grads dropped, `n_skipped`
 *   counted, the first non-finite tensor named in the log); `max_bad_steps`
 *   consecutive skips stop training with CQ_ERANGE;
 *   AdamW (PyTorch semantics, cq_adamw_step) with grad_scale = min(1, clip /
 *   norm) (clip <= 0: no clipping); weight decay applies to matrices (ndim >=
 *   2) only, never to norm weights;
 *   lr(s) for step s = 1..steps: lr * s / warmup while s <= warmup, then
 *   cosine from lr down to lr * min_lr_ratio at s = steps.
 *
 * Evaluation (every eval_every steps and at the end): the first eval_tokens
 * validation tokens cut into non-overlapping windows of seq tokens (GPTQ
 * protocol, cq_eval_windows): mean NLL over the seq-1 predictions per
 * window, averaged over windows; PPL = exp of that.
 *
 * Checkpoints: <ckpt_dir>/trainer.ckpt, ONE file written atomically
 * (cq_afile: temp file, fsync, rename, fsync of the directory), so a crash
 * leaves either the previous checkpoint or the new one, never a mix. It holds
 * the model shape, the step, the RNG state (= the data position: windows are
 * drawn from it), the skip counters, the best validation loss, and for every
 * parameter (by HF name) its f32 values, the AdamW m and v (trained ones),
 * and the best-so-far values when keep_best is on. Little-endian; trailer:
 * FNV-1a 64 of everything before it. Resuming (cq_trainer_load) restores all
 * of it, so a resumed run gives bitwise the same weights as an uninterrupted
 * one (same backend, same thread count). Written every save_every steps and at
 * the end of cq_trainer_run.
 *
 * The trainer never owns the model or the token arrays; they must outlive it.
 */
#ifndef CQ_TRAIN_H
#define CQ_TRAIN_H

#include "llama.h"

typedef struct cq_trainer cq_trainer;

/* What the trainer reports after every step (and after every evaluation). */
typedef struct cq_train_progress {
    int64_t step, steps;      /* step just done (1-based), total */
    double loss;              /* mean train NLL of this step (NaN if skipped) */
    double lr, grad_norm;     /* lr used; norm before clipping */
    double tokens_per_s;      /* training tokens per second (this run) */
    double elapsed_s, eta_s;
    double val_loss;          /* NaN unless an evaluation just ran */
    int64_t n_skipped;        /* non-finite steps so far */
    bool evaluated;           /* this report is for an evaluation */
} cq_train_progress;

typedef struct cq_train_opts {
    int64_t steps;            /* optimizer steps (total, including resumed ones) */
    int64_t batch;            /* sequences per micro-batch */
    int64_t seq;              /* tokens per sequence */
    int64_t accum;            /* micro-batches per step (>= 1) */
    float lr, min_lr_ratio;   /* peak lr; cosine floor as a fraction of lr */
    int64_t warmup;           /* warmup steps (0: none) */
    float beta1, beta2, eps, weight_decay;
    float clip;               /* max global grad norm; <= 0: no clipping */
    int64_t eval_every;       /* 0: only at the end (if val tokens given) */
    int64_t eval_tokens;      /* validation tokens used (0: all) */
    int64_t save_every;       /* 0: only at the end (if ckpt_dir) */
    const char *ckpt_dir;     /* NULL: no checkpoints */
    uint64_t seed;
    int max_bad_steps;        /* consecutive non-finite steps before giving up */
    /* QAT hooks. trainable: which parameters train (NULL: all). keep_best:
     * remember the weights with the lowest validation loss; the caller gets
     * them back with cq_trainer_restore_best. */
    bool (*trainable)(const cq_tensor *param, void *user);
    bool keep_best;
    /* AdamW m and v in host memory (cq_backend_host_alloc: pinned on CUDA)
     * instead of on the model's backend: each step streams a parameter's m, v
     * into one device staging pair (sized for the largest parameter), runs
     * ADAMW there and copies them back. Bitwise the same weights as resident
     * states; the checkpoint layout is the same, so a run can resume across
     * the option. */
    bool offload_optimizer;
    /* keep_best only: hold the best weights in this file (all parameters as
     * f32, in parameter order, written atomically at each new best) instead
     * of host memory (4 bytes a parameter: 27 GB for a 7B model). NULL:
     * memory. The string must outlive the trainer; the file is left in
     * place (the caller removes it). */
    const char *best_file;
    /* called after every step and every evaluation; may be NULL. Return
     * nonzero to stop training (cq_trainer_run then returns 0). */
    int (*progress)(const cq_train_progress *p, void *user);
    void *user;
} cq_train_opts;

/* Defaults: AdamW betas 0.9/0.95, eps 1e-8, wd 0.1, lr 1e-3, min_lr_ratio
 * 0.1, clip 1.0, accum 1, max_bad_steps 10, seed 0; sizes zero. */
CQ_API void cq_train_opts_default(cq_train_opts *o);

/* train: n_train tokens (> seq); val may be NULL/0 (no evaluation).
 * Enables gradients on the trainable parameters and allocates AdamW state. */
CQ_API int cq_trainer_create(cq_trainer **out, cq_llama *m, const cq_train_opts *opts,
                             const int32_t *train, size_t n_train, const int32_t *val, size_t n_val);
CQ_API void cq_trainer_destroy(cq_trainer **t);

/* One optimizer step (see above). p (may be NULL) gets the report. A skipped
 * step returns 0; CQ_ERANGE after max_bad_steps consecutive skips. */
CQ_API int cq_trainer_step(cq_trainer *t, cq_train_progress *p);
/* Steps until opts.steps with evaluation, checkpoints and progress. */
CQ_API int cq_trainer_run(cq_trainer *t);
/* Mean validation NLL over the eval slice (no gradients). */
CQ_API int cq_trainer_eval(cq_trainer *t, double *mean_nll);

CQ_API int cq_trainer_save(cq_trainer *t, const char *dir);
/* CQ_ENOENT if dir holds no checkpoint; CQ_EBADMSG if it is corrupt or was
 * made for another model shape or trainable set. */
CQ_API int cq_trainer_load(cq_trainer *t, const char *dir);

CQ_API int64_t cq_trainer_step_count(const cq_trainer *t);  /* steps done */
CQ_API double cq_trainer_lr(const cq_trainer *t, int64_t step); /* schedule */
/* Best validation loss seen (INFINITY if none) and restoring those weights
 * (keep_best only; CQ_EINVAL otherwise or if no evaluation ran). */
CQ_API double cq_trainer_best_val(const cq_trainer *t);
CQ_API int cq_trainer_restore_best(cq_trainer *t);
/* keep_best only: take the current weights as the best so far, with
 * validation loss val (QAT seeds it with the round-to-nearest start, so the
 * best copy doubles as the start and no second host copy is needed).
 * Evaluations replace it only when strictly lower. A checkpoint that holds
 * no best weights does not clear the seed on load. */
CQ_API int cq_trainer_seed_best(cq_trainer *t, double val);

/* GPTQ-protocol NLL (CHERRYQ.md section 7) on the ctx's backend without
 * gradients: tokens cut into floor(n / seqlen) non-overlapping windows of
 * seqlen (at most max_windows, 0 = all; the remainder is dropped); each
 * window predicts its tokens 1..seqlen-1 from the ones before (seqlen-1
 * predictions: the first token has none), `batch` windows per forward.
 * *nll_sum gets the summed NLL, *n_pred the number of predictions, and
 * window_nll (may be NULL; n_windows entries) each window's mean NLL.
 * The ctx is reset after every forward. */
CQ_API int cq_eval_windows(cq_ctx *c, cq_llama *m, const int32_t *tokens, size_t n, int64_t seqlen,
                           int64_t max_windows, int64_t batch, double *nll_sum, int64_t *n_pred,
                           double *window_nll);

#endif
