/* cherryq: the ops front-end and reverse-mode autograd.
 *
 * A cq_ctx binds a backend, owns the temporaries of one step and records a
 * tape. Ops return a new ctx-owned tensor, or NULL on failure; the first
 * failure is logged (op, shapes) and kept as the ctx status, and every later
 * op on a NULL input returns NULL quietly. This "sticky status" keeps model
 * code as readable as llm.c's (one check at the end of a forward pass) while
 * the library still never exits or aborts.
 *
 * cq_backward() replays the tape in reverse on the same backend. Parameter
 * gradients accumulate (+=) into the parameter's `grad` tensor, which is
 * user-owned and persists across cq_ctx_reset(); intermediate gradients are
 * ctx-owned.
 */
#ifndef CQ_OPS_H
#define CQ_OPS_H

#include "cq_tensor.h"

typedef struct cq_ctx cq_ctx;

CQ_API int cq_ctx_create(cq_ctx **out, cq_backend *be);
CQ_API void cq_ctx_destroy(cq_ctx **c);
/* Frees the step's temporaries and tape; buffers are cached for reuse. */
CQ_API void cq_ctx_reset(cq_ctx *c);
/* Releases cached buffers. */
CQ_API void cq_ctx_trim(cq_ctx *c);
CQ_API int cq_ctx_status(const cq_ctx *c);
CQ_API void cq_ctx_clear_status(cq_ctx *c);
/* Records a failure detected outside the ops (keeps the first one). */
CQ_API void cq_ctx_set_error(cq_ctx *c, int status);
CQ_API cq_backend *cq_ctx_backend(const cq_ctx *c);
/* Recording on/off (off: inference, no tape). Returns the previous value. */
CQ_API bool cq_ctx_set_grad(cq_ctx *c, bool enabled);
/* Bytes currently held by temporaries and by the cache. */
CQ_API size_t cq_ctx_bytes_used(const cq_ctx *c);
/* The highest cq_ctx_bytes_used since creation or cq_ctx_reset_peak: the
 * activation (and activation-gradient) memory of a step, measured. */
CQ_API size_t cq_ctx_peak_bytes(const cq_ctx *c);
CQ_API void cq_ctx_reset_peak(cq_ctx *c);

/* Parameters: mark a user-owned tensor as trainable; allocates its grad
 * (f32, zeroed) on the tensor's backend. */
CQ_API int cq_param_enable_grad(cq_tensor *p);
CQ_API int cq_tensor_zero_grad(cq_tensor *p);

/* ------------------------------------------------ differentiable ops */
CQ_API cq_tensor *cq_new(cq_ctx *c, cq_dtype dt, int ndim, const int64_t *ne);
CQ_API cq_tensor *cq_reshape(cq_ctx *c, cq_tensor *x, int ndim, const int64_t *ne);
/* A ctx-owned contiguous view of x's elements [elem_offset, +numel(ne)) with
 * shape ne (not differentiable: KV-cache slots, slices). */
CQ_API cq_tensor *cq_view(cq_ctx *c, cq_tensor *x, int ndim, const int64_t *ne, int64_t elem_offset);
/* op(a) @ op(b); a [M,K] or [batch,M,K]; b 2-D is broadcast over the batch. */
CQ_API cq_tensor *cq_matmul(cq_ctx *c, cq_tensor *a, cq_tensor *b, bool ta, bool tb);
/* x [..., in] @ w^T with w [out, in] -> [..., out]. */
CQ_API cq_tensor *cq_linear(cq_ctx *c, cq_tensor *x, cq_tensor *w);
CQ_API cq_tensor *cq_add(cq_ctx *c, cq_tensor *a, cq_tensor *b);
CQ_API cq_tensor *cq_mul(cq_ctx *c, cq_tensor *a, cq_tensor *b);
CQ_API cq_tensor *cq_scale(cq_ctx *c, cq_tensor *a, float s);
CQ_API cq_tensor *cq_rmsnorm(cq_ctx *c, cq_tensor *x, cq_tensor *w, float eps);
/* x [B, T, H, D]; positions pos0 .. pos0+T-1. */
CQ_API cq_tensor *cq_rope(cq_ctx *c, cq_tensor *x, int64_t pos0, float theta);
/* The same with Hugging Face's rope_scaling (cq_rope.h); s NULL or
 * CQ_ROPE_PLAIN: cq_rope. */
CQ_API cq_tensor *cq_rope_scaled(cq_ctx *c, cq_tensor *x, int64_t pos0, float theta, const cq_rope_scaling *s);
/* q [B,T,Hq,D], k/v [B,S,Hkv,D]; query t at position pos0 + t. */
CQ_API cq_tensor *cq_attention(cq_ctx *c, cq_tensor *q, cq_tensor *k, cq_tensor *v,
                               int64_t pos0, float scale);
CQ_API cq_tensor *cq_swiglu(cq_ctx *c, cq_tensor *g, cq_tensor *u /* NULL: silu */);
CQ_API cq_tensor *cq_embed(cq_ctx *c, cq_tensor *table, cq_tensor *ids);
/* Scalar [1] loss = scale * sum of token NLLs (targets < 0 ignored).
 * nll_out (optional) receives the per-token NLL [N]. */
CQ_API cq_tensor *cq_cross_entropy(cq_ctx *c, cq_tensor *logits, cq_tensor *targets,
                                   float scale, cq_tensor **nll_out);
/* Straight-through fake quantization: forward Q(w) with cherries kept,
 * backward identity (cherries get their true gradient, normal weights the STE). */
CQ_API cq_tensor *cq_fakequant(cq_ctx *c, cq_tensor *w, cq_tensor *mask, int bits,
                               int group, bool fp16_scales);
/* Copy with dtype conversion (differentiable between float dtypes: the
 * gradient passes through unchanged, as f32). */
CQ_API cq_tensor *cq_cast(cq_ctx *c, cq_tensor *x, cq_dtype dt);

/* Activation checkpointing. y = fn(c, user, arg, x) runs without recording
 * and every temporary it made except y is released at once (buffers back to
 * the ctx cache), so only x and y outlive the region. When gradients are
 * recorded, one tape node stands for the region: the backward runs fn again
 * on x (recording a sub-tape), back-propagates y's gradient through it
 * (parameter gradients accumulate as usual), gives x its gradient and
 * releases the region's temporaries again. fn must be deterministic, read
 * only x and user-owned tensors, and return a new tensor of this ctx. With
 * the same ops in the same order, gradients are bitwise those of the
 * uncheckpointed graph. */
typedef cq_tensor *(*cq_region_fn)(cq_ctx *c, void *user, int64_t arg, cq_tensor *x);
CQ_API cq_tensor *cq_checkpoint(cq_ctx *c, cq_region_fn fn, void *user, int64_t arg, cq_tensor *x);

/* Chunked cross-entropy of a linear head: scalar [1] loss = scale * sum of
 * the NLLs of logits = x w^T (x [..., K], w [V, K], targets i32 with x's row
 * count, < 0 ignored), computed `chunk` rows at a time, so at most [chunk, V]
 * logits (and in the backward, which recomputes them, their gradient) exist
 * at once. mm is the dtype of the GEMM inputs (f32, or bf16/f16: x rows and
 * w converted, f32 accumulation and output). chunk <= 0 or >= rows: one chunk,
 * the ops of cq_linear + cq_cross_entropy (bitwise equal for f32); more
 * chunks sum the per-chunk losses and accumulate dw chunk by chunk (rounding
 * differs in the last bits). */
CQ_API cq_tensor *cq_linear_xent(cq_ctx *c, cq_tensor *x, cq_tensor *w, cq_tensor *targets, float scale,
                                 int64_t chunk, cq_dtype mm);

/* Packed mixed-precision weight (all tensors on the ctx backend). */
typedef struct cq_qlinear {
    int64_t out, in;
    int bits, group;
    cq_tensor *codes, *scales;               /* u8 [out,row_bytes], u16 [out,ngroups] */
    cq_tensor *rowptr, *cols, *delta;        /* i32 [out+1], u16 [nnz], f32 [nnz]; NULL if none */
    int layout;                              /* cq_qcodes_layout of codes: CQ_QCODES_ROWS (0) unless
                                              * the builder interleaved them (models/qmodel.c, CPU) */
    cq_tensor *lanes;                        /* u8 [bytes]: cherry lanes (cpu/qmm.h), CQ_QCODES_IL4
                                              * with cherries only; NULL otherwise */
} cq_qlinear;
/* x [..., in] -> [..., out] through the packed weight (no gradient). */
CQ_API cq_tensor *cq_qlinear_fwd(cq_ctx *c, cq_tensor *x, const cq_qlinear *w);
/* Frees the tensors of *w and *w itself; *w = NULL. */
CQ_API void cq_qlinear_free(cq_qlinear **w);

/* Backward from a scalar loss (grad 1), or with an explicit seed grad. */
CQ_API int cq_backward(cq_ctx *c, cq_tensor *loss);

/* ------------------------------------------- in-place, non-differentiable */
CQ_API int cq_fill(cq_ctx *c, cq_tensor *t, float v);
CQ_API int cq_axpy(cq_ctx *c, cq_tensor *y, float a, const cq_tensor *x);
CQ_API int cq_copy_into(cq_ctx *c, cq_tensor *dst, const cq_tensor *src);

typedef struct cq_adamw_params {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t step;            /* 1-based step for bias correction */
    float grad_scale;        /* multiplies the gradient (clipping); 0 = 1 */
} cq_adamw_params;
CQ_API int cq_adamw_step(cq_ctx *c, cq_tensor *p, cq_tensor *m, cq_tensor *v,
                         const cq_tensor *g, const cq_adamw_params *ap);
/* sum of squares of t, read back to host as double */
CQ_API int cq_sumsq(cq_ctx *c, const cq_tensor *t, double *out);
/* F = F*n/(n+1) + g^2/(n+1) */
CQ_API int cq_sqr_accum(cq_ctx *c, cq_tensor *F, const cq_tensor *g, int64_t n);

#endif
