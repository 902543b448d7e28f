/* cherryq CUDA kernels: C interface of the launchers in the .cu files of cuda/.
 *
 * Kernels know nothing of tensors, backends or models: the host glue in
 * backends/cuda/ validates an op, extracts raw device pointers and sizes and
 * calls one of these. Every launcher enqueues its work on stream `s` and
 * returns the status of the launch (cudaGetLastError()); errors raised while
 * the kernel runs surface at the next synchronization. All tensors are
 * contiguous unless a layout is passed; sizes are in elements.
 */
#ifndef CQ_CUDA_KERNELS_H
#define CQ_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>   /* in the emulated test build: tests/cuda_emu/include */

#include "cq_rope.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types, numerically equal to cq_dtype (checked on the C side). */
enum { CQK_F32 = 0, CQK_F16 = 1, CQK_BF16 = 2, CQK_I32 = 3, CQK_I16 = 4, CQK_U16 = 5, CQK_U8 = 6 };

/* Shape + strides (elements), dim 0 outermost, as cq_tensor. */
typedef struct cqk_layout {
    int ndim;
    int64_t ne[4];
    int64_t nb[4];
} cqk_layout;

/* ------------------------------------------------------ elementwise.cu */
cudaError_t cqk_fill(cudaStream_t s, void *dst, int dt, int64_t n, float v);
/* dst[i] = convert(src[i]) for linear index i < n, each side addressed through
 * its own layout. Float dtypes convert; identical dtypes of 1/2/4 bytes copy. */
cudaError_t cqk_copy(cudaStream_t s, void *dst, int ddt, const cqk_layout *dl,
                     const void *src, int sdt, const cqk_layout *sl, int64_t n);
/* op 0: add, 1: mul; b is broadcast with period nb (nb divides n). */
cudaError_t cqk_binary(cudaStream_t s, int op, float *dst, const float *a, const float *b,
                       int64_t n, int64_t nb);
cudaError_t cqk_scale(cudaStream_t s, float *dst, const float *src, int64_t n, float a, float b);
cudaError_t cqk_axpy(cudaStream_t s, float *y, const float *x, int64_t n, float a);
cudaError_t cqk_swiglu(cudaStream_t s, float *y, const float *g, const float *u, int64_t n);
cudaError_t cqk_swiglu_bwd(cudaStream_t s, float *dg, float *du, const float *g, const float *u,
                           const float *dy, int64_t n);
/* f: lr, beta1, beta2, eps, wd, bc1, bc2, grad_scale (0 = 1). */
cudaError_t cqk_adamw(cudaStream_t s, float *p, float *m, float *v, const float *g, int64_t n,
                      const float f[8]);
cudaError_t cqk_sqr_accum(cudaStream_t s, float *F, const float *g, int64_t n, float count);

/* ------------------------------------------------------ reduce.cu */
/* Partials needed by cqk_sumsq for n elements (doubles of workspace). */
int cqk_sumsq_ws(int64_t n);
cudaError_t cqk_sumsq(cudaStream_t s, float *out, const void *x, int dt, int64_t n, double *ws);

/* ------------------------------------------------------ norm.cu */
cudaError_t cqk_rmsnorm(cudaStream_t s, float *y, const float *x, const float *w, int64_t rows,
                        int64_t C, float eps);
/* ws: workspace of cqk_rmsnorm_bwd_ws(rows, C) floats (rstd per row, then
 * the partial column sums of dw over row blocks). */
int64_t cqk_rmsnorm_bwd_ws(int64_t rows, int64_t C);
cudaError_t cqk_rmsnorm_bwd(cudaStream_t s, float *dx, float *dw, const float *x, const float *w,
                            const float *dy, int64_t rows, int64_t C, float eps, float *rstd);

/* ------------------------------------------------------ rope.cu */
/* scaling: Hugging Face's rope_scaling (core/cq_rope.h), NULL = plain */
cudaError_t cqk_rope(cudaStream_t s, float *y, const float *x, int64_t B, int64_t T, int64_t H,
                     int64_t D, int64_t pos0, float theta, int inverse, const cq_rope_scaling *scaling);

/* ------------------------------------------------------ attention.cu */
/* Largest head dim the fused kernels take. */
#define CQK_ATTN_MAX_D 256
cudaError_t cqk_attn(cudaStream_t s, float *out, float *lse /* may be NULL */, const float *q,
                     const float *k, const float *v, int64_t B, int64_t T, int64_t S, int64_t Hq,
                     int64_t Hkv, int64_t D, int64_t pos0, float scale);
/* Kernel version of cqk_attn / cqk_attn_bwd: 1 = one query row per warp,
 * 2 = register-tiled (several rows per warp, docs/cuda.md). The first call
 * reads CQ_CUDA_ATTN (1 or 2) once; without it (0, auto) version 2 runs
 * for calls of >= 128 query rows and version 1 for the rest; set_version
 * (1, 2, or 0 = auto) overrides it (tests run both). Version 2 falls back
 * to 1 where its shared memory does not fit the device. */
void cqk_attn_set_version(int version);
int cqk_attn_version(void);
/* dsum: workspace of B*Hq*T floats. */
cudaError_t cqk_attn_bwd(cudaStream_t s, float *dq, float *dk, float *dv, const float *q,
                         const float *k, const float *v, const float *out, const float *lse,
                         const float *dout, int64_t B, int64_t T, int64_t S, int64_t Hq,
                         int64_t Hkv, int64_t D, int64_t pos0, float scale, float *dsum);

/* ------------------------------------------------------ embed.cu */
/* Ids outside [0, V) are never read through: their output row is NaN (the
 * backward skips them) and the smallest position holding one is stored with
 * atomicMin into *first_bad (may be NULL), which the caller presets to
 * CQK_NO_BAD_ID (cudaMemsetAsync to 0x7f bytes). */
#define CQK_NO_BAD_ID 0x7f7f7f7f
cudaError_t cqk_embed(cudaStream_t s, float *y, const void *table, int tdt, const int32_t *ids,
                      int64_t N, int64_t E, int64_t V, int32_t *first_bad);
/* Zeroes dtable [V, E] then scatter-adds (atomicAdd: the order of the adds of
 * repeated ids is not fixed, so the last bits may vary between runs). */
cudaError_t cqk_embed_bwd(cudaStream_t s, float *dtable, const int32_t *ids, const float *dy,
                          int64_t N, int64_t E, int64_t V, int32_t *first_bad);

/* ------------------------------------------------------ xent.cu */
/* nll: N floats (dst2, or workspace). Deterministic: fixed-order sum. */
cudaError_t cqk_xent(cudaStream_t s, float *loss, float *lse, float *nll, const float *logits,
                     const int32_t *targets, int64_t N, int64_t V, float scale);
cudaError_t cqk_xent_bwd(cudaStream_t s, float *dlogits, const float *logits,
                         const int32_t *targets, const float *lse, const float *dloss, int64_t N,
                         int64_t V, float scale);

/* ------------------------------------------------------ fakequant.cu */
cudaError_t cqk_fakequant(cudaStream_t s, float *y, const float *w, const uint8_t *mask,
                          int64_t rows, int64_t cols, int bits, int64_t group, int fp16_scales);

/* ------------------------------------------------------ qmatmul.cu */
/* The packed mixed int-k + FP16-sparse weight of one linear layer. */
typedef struct cqk_qweight {
    const uint8_t *codes;     /* [out, row_bytes], LSB-first codes per row */
    const uint16_t *scales;   /* FP16 bits [out, ngroups] */
    const int32_t *rowptr;    /* [out + 1] or NULL (no cherries) */
    const uint16_t *cols;     /* [nnz] */
    const float *delta;       /* [nnz] */
    int64_t nnz;              /* entries of cols/delta: rowptr is clamped to it, and a
                               * column >= in reads as NaN (no out-of-range access) */
    int64_t out, in, row_bytes, ngroups, group; /* group 0 = whole row */
    int bits;                 /* 2, 3, 4 or 8 */
} cqk_qweight;

/* 1 if the GEMV kernels handle these bits. */
int cqk_qmatmul_supported_bits(int bits);
/* Y [N, out] = X [N, in] W^T, fused: reads only the packed bytes. Any N;
 * meant for small N (decoding). */
cudaError_t cqk_qgemv(cudaStream_t s, float *Y, const float *X, int64_t N, const cqk_qweight *w);
/* Dequantize rows [row0, row0 + nrows) to f32 W_tile [nrows, in], cherries
 * applied (the batch path: then a GEMM). */
cudaError_t cqk_qdequant(cudaStream_t s, float *Wt, int64_t row0, int64_t nrows,
                         const cqk_qweight *w);
/* Which GEMV kernel cqk_qgemv picks ("fast vN" or "generic"), for logs/benchmarks. */
const char *cqk_qgemv_path(const cqk_qweight *w);
/* Variant of the fast GEMV kernel (0..9, cuda/qmatmul_kernels.cuh
 * with_variant), or CQK_QGEMV_AUTO (the default): CQ_QGEMV_VARIANT=0..9,
 * read once, or set_variant fixes one for every weight (test_cuda runs
 * every variant; out-of-range values restore AUTO). 0..3, 7 and 9 are
 * exact f32; 4, 5, 6 and 8 quantize x to int8 per 128 columns (dp4a), an
 * approximation whose oracle is cq_qmm_gemv_q8_ref (cpu/qmm.h):
 * cqk_qgemv_variant_q8(v) says which. cqk_qgemv_pick(out, in) is the
 * variant cqk_qgemv runs for a weight of that shape (AUTO resolved: exact
 * variant 1 under CQ_QMM_EXACT=1 / cq_qmm_set_exact(1) or in < 512, else
 * int8 as the CPU backend's decoding GEMV: 6 from 8192 rows, 4 below). */
#define CQK_QGEMV_VARIANTS 10
#define CQK_QGEMV_AUTO (-1)
void cqk_qgemv_set_variant(int v);
int cqk_qgemv_variant(void);
int cqk_qgemv_pick(int64_t out, int64_t in);
int cqk_qgemv_variant_q8(int v);

#ifdef __cplusplus
}
#endif

#endif
