/* cherryq: the mixed int-k + FP16-sparse matmul on the CPU.
 *
 * W [out, in] is stored packed (the layout is documented in docs/bench-qmm.md
 * and CHERRYQ.md section 6):
 *   codes  uint8 [out, row_bytes], each row starting on a byte boundary, code
 *          u = q - qmin (unsigned). b in {2,4,8}: row_bytes = ceil(in*b/8),
 *          code j at bit (j*b)%8 of byte (j*b)/8 (LSB first). b = 3: every 8
 *          codes form one 24-bit little-endian word (3 bytes), code j at bit
 *          3*(j%8) of word j/8; row_bytes = ceil(in/8)*3.
 *   scales FP16 bits [out, ngroups], ngroups = ceil(in/g); groups are
 *          consecutive columns of a row on the original column grid, the last
 *          one partial when g does not divide in; g = 0 means g = in.
 *   dequant b <= 4: w = (u + qmin + 0.5)*s, qmin = -2^(b-1);
 *           b == 8: w = (u + qmin)*s, qmin = -127.
 *   cherries (optional) as CSR: rowptr int32 [out+1], cols uint16 [nnz],
 *          delta f32 [nnz] = cherry_value - dequant(code at that position),
 *          so W x = dense(codes) x + sum_row delta * x[col].
 *
 * The kernels read only these bytes; GEMV never builds the dense matrix.
 * Cherries are trusted to be valid (see cq_qmm_check, run it once when the
 * weights are loaded); the kernels skip a column index >= in.
 */
#ifndef CQ_QMM_H
#define CQ_QMM_H

#include "cq_base.h"

typedef struct cq_qmm_w {
    int64_t out, in;          /* W is [out, in]; in <= 65536 (16-bit cols) */
    int bits;                 /* 2, 3, 4 or 8 */
    int group;                /* columns per scale; 0 = whole row */
    const uint8_t *codes;     /* [out, cq_qmm_row_bytes(bits, in)] */
    const uint16_t *scales;   /* FP16 bits [out, ngroups] */
    const int32_t *rowptr;    /* [out+1]; NULL = no cherries */
    const uint16_t *cols;     /* [nnz] */
    const float *delta;       /* [nnz] */
} cq_qmm_w;

typedef enum {
    CQ_ISA_AUTO = 0,          /* best the CPU supports */
    CQ_ISA_SCALAR,            /* the scalar reference */
    CQ_ISA_AVX2,              /* AVX2 + FMA + F16C */
    CQ_ISA_AVX512,            /* AVX-512 F/BW/VL/DQ + FMA + F16C */
} cq_isa;

/* Bytes of one packed row, and the number of groups of a row. */
CQ_API int64_t cq_qmm_row_bytes(int bits, int64_t in);
CQ_API int64_t cq_qmm_ngroups(int group, int64_t in);

/* Full validation of a descriptor, including every cherry (rowptr monotonic
 * from 0, cols < in). O(out + nnz); meant for load time. */
CQ_API int cq_qmm_check(const cq_qmm_w *w);

/* y[out] = W x[in]. */
CQ_API int cq_qmm_gemv(const cq_qmm_w *w, const float *x, float *y);
/* Y[n, out] = X[n, in] W^T (row-major): a linear layer on n tokens.
 * n < 8 runs repeated GEMV; larger n dequantizes tiles of rows into per-thread
 * f32 buffers and multiplies them with single-threaded OpenBLAS sgemm calls
 * from the OpenMP threads (OpenBLAS's thread count is set to 1 for the
 * duration of the call and restored after). */
CQ_API int cq_qmm_gemm(const cq_qmm_w *w, const float *X, int64_t n, float *Y);

/* Scalar reference (the oracle): plain per-element decode, double sums. */
CQ_API int cq_qmm_gemv_ref(const cq_qmm_w *w, const float *x, float *y);
CQ_API int cq_qmm_gemm_ref(const cq_qmm_w *w, const float *X, int64_t n, float *Y);

/* Dequantize rows [r0, r0+nr) of W (cherries applied) to dst [nr, in] f32. */
CQ_API int cq_qmm_dequant_rows(const cq_qmm_w *w, int64_t r0, int64_t nr, float *dst);

/* ISA used by cq_qmm_gemv/gemm (process-wide). CQ_ENOTSUP if this CPU (or
 * this build) lacks it; CQ_ISA_AUTO picks the best. */
CQ_API int cq_qmm_set_isa(cq_isa isa);
CQ_API cq_isa cq_qmm_get_isa(void);
CQ_API int cq_qmm_isa_supported(cq_isa isa);
CQ_API const char *cq_qmm_isa_name(cq_isa isa);

#endif
