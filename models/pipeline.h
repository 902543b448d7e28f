/* cherryq: the CherryQ pipeline on a LLaMA model (CHERRYQ.md sections 1-5).
 *
 *   calibration windows   deterministic windows of a token stream
 *   impact                Fisher diagonal of every 2-D weight from per-sample
 *                         gradients of the summed NLL (batch 1), running mean
 *   heterogeneity         impact / magnitude scores of every quantized matrix,
 *                         and the paper's two figures as SVG
 *   plan                  cherry masks of every quantized linear (selection)
 *   rtn / gptq            post-training quantization into packed weights
 *   qat setup             fake-quant state of every linear for QAT (the
 *                         training loop itself is models/train.c)
 *   quantized directory   save / load / dequantized export (models/qmodel.c,
 *                         layout in docs/format.md)
 *
 * The quantized linears are the 7 projections of every decoder layer, indexed
 * l * CQ_LLAMA_N_LINEAR + i (i in cq_llama_linear_names order). Library code:
 * returns 0 or a negative CQ_E* and logs why; never exits.
 */
#ifndef CQ_PIPELINE_H
#define CQ_PIPELINE_H

#include "llama.h"
#include "quant.h"

/* Long-running work reports here: stage name, units done of total, and a
 * value (loss or 0). May be NULL. */
typedef void (*cq_progress_fn)(void *user, const char *stage, int64_t done, int64_t total, double value);

/* ------------------------------------------------------------ calibration */

/* n windows of seqlen+1 tokens: inputs ids[w*(seqlen+1) + 0 .. seqlen-1],
 * targets shifted by one. */
typedef struct cq_calib {
    int32_t *ids;
    int64_t n, seqlen;
} cq_calib;

/* Picks n windows of seqlen+1 tokens from tokens[0..ntok) at start offsets
 * drawn from a seeded generator (deterministic for a seed). When the stream
 * holds at least n non-overlapping windows, the windows do not overlap (a
 * random choice among the non-overlapping slots); otherwise starts are drawn
 * uniformly. CQ_EINVAL if ntok < seqlen + 1. */
CQ_API int cq_calib_sample(cq_calib *c, const int32_t *tokens, int64_t ntok, int64_t n, int64_t seqlen,
                           uint64_t seed);
/* Consecutive non-overlapping windows from the start (evaluation: the GPTQ
 * perplexity protocol; the remainder is dropped). max_windows 0 = all. */
CQ_API int cq_calib_windows(cq_calib *c, const int32_t *tokens, int64_t ntok, int64_t seqlen,
                            int64_t max_windows);
/* Copies windows [first, first+count) of src into dst. */
CQ_API int cq_calib_slice(cq_calib *dst, const cq_calib *src, int64_t first, int64_t count);
CQ_API void cq_calib_free(cq_calib *c);

/* Mean next-token NLL per token over all windows (batch 1, no gradients;
 * runs whatever state the linears are in). exp() of it is the perplexity
 * of CHERRYQ.md section 7 when every window has the same length. */
CQ_API int cq_calib_nll(cq_llama *m, const cq_calib *c, double *mean_nll, cq_progress_fn fn, void *user);

/* ------------------------------------------------------------ impact */

typedef struct cq_impact {
    int n;                 /* number of 2-D weights */
    char (*names)[96];     /* HF names */
    int64_t (*shape)[2];
    float **F;             /* host arrays [shape0 * shape1] */
    int64_t n_samples, seqlen;
} cq_impact;

/* F = E[g^2] of every 2-D parameter over the windows of cal, g the gradient
 * of one window's summed next-token NLL (cq_llama_loss with scale 1), as the
 * running mean F = F n/(n+1) + g^2/(n+1) (cq_sqr_accum). The linears must be
 * dense (no fake-quant or packed state). Enables gradients on the model. */
CQ_API int cq_impact_compute(cq_impact *imp, cq_llama *m, const cq_calib *cal, cq_progress_fn fn, void *user);
/* safetensors: one F32 tensor per weight name; metadata cherryq_impact=1,
 * n_samples, seqlen. Atomic. */
CQ_API int cq_impact_save(const cq_impact *imp, const char *path);
/* Loads and checks against m (NULL: no check): every quantized linear of m
 * must be present with m's shape, every tensor in the file must be a 2-D
 * weight of m with its shape, F32, finite and >= 0. CQ_EBADMSG otherwise. */
CQ_API int cq_impact_load(cq_impact *imp, const char *path, const cq_llama *m);
/* The F of a weight, NULL if absent or of another shape. */
CQ_API const float *cq_impact_get(const cq_impact *imp, const char *name, int64_t rows, int64_t cols);
CQ_API void cq_impact_free(cq_impact *imp);

/* Crash-safe impact (issue 8). With a checkpoint path and every > 0 the
 * running mean is written atomically (temp file, fsync, rename; cq_afile)
 * to path after every `every` windows, and after the last one too when
 * save_final is set (so a job that goes on after the impact, like quantize,
 * does not redo it when killed later). The file records what it belongs to:
 * a hash of every parameter of the model (names, shapes, values), a hash of
 * the calibration windows (count, length, token ids: the corpus, tokenizer,
 * seed and sampling), the number of windows accumulated and the 2-D weights'
 * names and shapes, with a checksum over the whole file. With resume set and
 * a checkpoint at path, the accumulation continues after its windows; a
 * checkpoint of another model or other windows, or a corrupt one, is refused
 * with CQ_EBADMSG and a message naming the difference. The result equals an
 * uninterrupted run's bit for bit when the backward pass is deterministic
 * (the CPU backend with the same thread count). The caller removes the
 * checkpoint once the result is safely written. */
typedef struct cq_impact_ckpt {
    const char *path;       /* checkpoint file; NULL: no checkpoints */
    int64_t every;          /* windows between checkpoints; 0: none written */
    bool save_final;        /* also write one after the last window */
    bool resume;            /* continue from path when it exists */
    int64_t resumed_at;     /* out: windows taken from the checkpoint (0: none) */
} cq_impact_ckpt;

CQ_API int cq_impact_compute_ckpt(cq_impact *imp, cq_llama *m, const cq_calib *cal, cq_impact_ckpt *ck,
                                  cq_progress_fn fn, void *user);
/* Reads only the header of a checkpoint: windows accumulated and in all.
 * CQ_ENOENT when there is none, CQ_EBADMSG when it is not one. */
CQ_API int cq_impact_ckpt_peek(const char *path, int64_t *done, int64_t *total);

/* "model.layers.<l>.<proj>.weight" */
CQ_API const char *cq_linear_name(char *buf, size_t n, int64_t layer, int lin);
/* The dense weight of quantized linear idx (l*7 + i), NULL when packed-only. */
CQ_API cq_tensor *cq_linear_weight(const cq_llama *m, int64_t idx);
CQ_API int64_t cq_n_linears(const cq_llama *m);

/* ------------------------------------------------------------ heterogeneity */

typedef struct cq_hetero {
    int64_t layer;
    int lin;
    char name[96];
    int64_t out, in;
    double impact, magnitude;   /* CHERRYQ.md section 2 scores */
} cq_hetero;

/* Scores of every quantized linear (rows malloc'ed, n_layers * 7 of them). */
CQ_API int cq_hetero_analyze(const cq_llama *m, const cq_impact *imp, cq_hetero **rows, int *n);
/* Figure 1: impacts of nsample weights of F[0..n) drawn with seed, log y. */
CQ_API int cq_svg_impact_scatter(const char *path, const float *F, int64_t n, int64_t nsample, uint64_t seed,
                                 const char *title);
/* Figure 2: both scores of every matrix against its index, log y. */
CQ_API int cq_svg_hetero_scores(const char *path, const cq_hetero *rows, int n, const char *title);

/* ------------------------------------------------------------ plan */

typedef struct cq_qspec {
    int bits, group;
    bool cherries;          /* false: no cherries at all (RTN, GPTQ, QAT) */
    cq_select_opts sel;     /* criterion, k rule/k/fraction, seed */
} cq_qspec;

/* Cherry masks of every quantized linear. */
typedef struct cq_qplan {
    int64_t n;              /* n_layers * 7 */
    uint8_t **mask;         /* [n] host u8 [out, in], or NULL entries (none) */
    int64_t nnz, nweights;  /* cherries and weights over all linears */
} cq_qplan;

/* Checks the spec (grid, k rule) against m; imp is needed for the impact and
 * loss-aware criteria (checked against m). With cherries false the plan has
 * no masks. */
CQ_API int cq_qplan_make(cq_qplan *p, const cq_llama *m, const cq_impact *imp, const cq_qspec *s);
CQ_API void cq_qplan_free(cq_qplan *p);

/* ------------------------------------------------------------ packed result */

typedef struct cq_qpacked {
    int64_t n;              /* n_layers * 7 */
    cq_qweight *w;          /* [n], host */
} cq_qpacked;

/* Packs the current dense linear weights of m with the plan's masks
 * (round to nearest; also the last step of QAT). */
CQ_API int cq_quantize_rtn(cq_qpacked *q, const cq_llama *m, const cq_qplan *p, const cq_qspec *s);

typedef struct cq_gptq_opts {
    float damp;             /* 0.01 */
    int block;              /* 128 */
} cq_gptq_opts;
/* GPTQ layer by layer: the inputs of every linear of decoder layer l are
 * captured on cal with layers < l already quantized (as the GPTQ reference
 * does), H = 2 X^T X / n_windows, each linear quantized with
 * cq_gptq_quantize on the plan's masks, and the dequantized weights written
 * back into m's dense linears (so m then computes the quantized model). */
CQ_API int cq_quantize_gptq(cq_qpacked *q, cq_llama *m, const cq_qplan *p, const cq_qspec *s,
                            const cq_calib *cal, const cq_gptq_opts *o, cq_progress_fn fn, void *user);

/* Nominal bits per weight over all quantized linears (CHERRYQ.md 4). */
CQ_API double cq_qpacked_bpw(const cq_qpacked *q);
CQ_API void cq_qpacked_free(cq_qpacked *q);

/* Puts the packed weights on m's backend as the linears' packed state (with
 * the f32 cherry deltas) and frees the dense linear weights. */
CQ_API int cq_qmodel_attach(cq_llama *m, const cq_qpacked *q);

/* Overwrites m's dense linear weights with dequant(q) (packing is exact: the
 * model then computes what the packed model computes). */
CQ_API int cq_qmodel_set_dense(cq_llama *m, const cq_qpacked *q);

/* ------------------------------------------------------------ QAT state */

/* Sets every linear's qstate (bits, group, mask uploaded to the backend)
 * from the spec and plan: the forward then uses cq_fakequant (STE). */
CQ_API int cq_qat_setup(cq_llama *m, const cq_qplan *p, const cq_qspec *s);
/* Back to dense linears (masks freed). */
CQ_API void cq_qat_clear(cq_llama *m);

/* ------------------------------------------------------------ QAT run */

struct cq_train_opts;

typedef struct cq_qat_result {
    double start_val;       /* held-out NLL of the RTN starting point */
    double best_val;        /* best held-out NLL seen during training */
    double final_val;       /* held-out NLL of the weights handed back */
    int64_t steps;          /* optimizer steps done (all runs) */
    int64_t resumed_at;     /* step the checkpoint resumed at (0: started fresh) */
    double epochs;          /* passes over the training tokens */
    bool kept_start;        /* training never beat the RTN start: start kept */
    double seconds;
} cq_qat_result;

/* Quantization-aware training (CHERRYQ.md section 5) through the trainer:
 * cq_qat_setup(m, p, s) (cherries = the plan's masks, normal weights through
 * the STE), every parameter trainable, keep_best on the held-out tokens val
 * (required), evaluated first at the RTN starting point. On return m holds
 * dense master weights (fake-quant state cleared): the best weights seen, or
 * the starting weights if training never improved the held-out NLL; pack
 * them with cq_quantize_rtn and the same plan. resume: continue from the
 * trainer checkpoint in o->ckpt_dir if there is one. The model's
 * training-memory options (checkpoint, xent_chunk, compute) apply to the QAT
 * run and are reset to off on return. */
CQ_API int cq_qat_train(cq_llama *m, const cq_qplan *p, const cq_qspec *s, const struct cq_train_opts *o,
                        const int32_t *train, size_t n_train, const int32_t *val, size_t n_val, bool resume,
                        cq_qat_result *res);

/* LLM-QAT-style data: n_seq sequences of len tokens sampled from the model
 * itself (temperature 1, seeded, starting from BOS or a seeded token),
 * concatenated into *out (malloc'ed, n_seq * len tokens). */
CQ_API int cq_self_generate(cq_llama *m, int64_t n_seq, int64_t len, uint64_t seed, int32_t **out, size_t *n,
                            cq_progress_fn fn, void *user);

/* ------------------------------------------------------------ directory */

/* Writes a quantized model directory (docs/format.md): config.json with
 * quantization_config = quant_config_json (a JSON object's text), one
 * model.safetensors with the packed linears and every other parameter of m
 * as F32, and tokenizer.json copied from tokenizer_src (a file; NULL or
 * absent: none). The directory is written as <dir>.tmp and renamed over
 * <dir> at the end (a previous <dir> is replaced only then). */
CQ_API int cq_qmodel_save(const cq_llama *m, const cq_qpacked *q, const char *dir, const char *quant_config_json,
                          const char *tokenizer_src);
/* Reads the packed weights of a quantized directory without a backend:
 * q->w[i] for every quantized linear (validated as the loader does). */
CQ_API int cq_qmodel_read(const char *dir, cq_qpacked *q, int *bits, int *group);
/* Writes a plain Hugging Face directory (F16 or F32) with dequantized
 * linears, atomically as above; tokenizer.json copied when present. */
CQ_API int cq_qmodel_export_dense(const char *qdir, const char *out, cq_dtype dt, cq_backend *be);
/* 1 if <dir>/config.json has a quantization_config. */
CQ_API int cq_qmodel_is_quantized(const char *dir);

/* Writes the files of a directory to <dir>.tmp, then swaps it in: helpers
 * for every writer of directories (rules: docs/format.md). Only what
 * cherryq wrote is ever removed: an existing <dir> is replaced only when it
 * is empty or carries cherryq's ".cherryq" marker (every committed
 * directory does), and files the user added to it are carried over into
 * the new one; a leftover <dir>.tmp / <dir>.tmp.old is cleaned up only when
 * it is cherryq's own. begin..commit/abort holds an flock on the parent
 * (one directory at a time per process). cq_dir_check says up front whether
 * cq_dir_begin would refuse dir, and refuses src (the input model) as
 * <dir>, <dir>.tmp or <dir>.tmp.old. */
CQ_API int cq_dir_check(const char *dir, const char *src);
CQ_API int cq_dir_begin(const char *dir, char *tmp, size_t n);
CQ_API int cq_dir_commit(const char *tmp, const char *dir);
CQ_API void cq_dir_abort(const char *tmp);
/* 1 if a and b name the same existing file or directory (after links). */
CQ_API int cq_same_file(const char *a, const char *b);
/* Copies a (small) file atomically. */
CQ_API int cq_copy_file(const char *src, const char *dst);

#endif
