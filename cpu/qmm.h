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
    CQ_ISA_AVX512VNNI,        /* AVX-512 + VNNI + VBMI + VBMI2: GEMV with int8 activations */
} cq_isa;

/* Columns per int8 block of x on the int8-activation GEMV path. */
#define CQ_QMM_Q8_BLOCK 128

/* Bytes of one packed row, and the number of groups of a row. */
CQ_API int64_t cq_qmm_row_bytes(int bits, int64_t in);
CQ_API int64_t cq_qmm_ngroups(int group, int64_t in);

/* Full validation of a descriptor, including every cherry (rowptr monotonic
 * from 0, cols < in). O(out + nnz); meant for load time. */
CQ_API int cq_qmm_check(const cq_qmm_w *w);

/* y[out] = W x[in].
 * With the AVX512VNNI ISA (the automatic choice on CPUs that have it) and
 * exact mode off (the default), x is first quantized to int8 (see
 * cq_qmm_quant_x8) and the codes are dotted with it in integers: the result
 * is cq_qmm_gemv_q8_ref's, an approximation of the exact product (error at
 * most sum_j |w_j| * sx_j / 2, sx_j the int8 step of x_j's block, plus the
 * FP16 rounding of the cherry deltas; the bound is at cq_qmm_gemv_q8_ref). Every
 * other ISA, exact mode, and shapes the int8 kernel does not cover (group not
 * 32, 64 or a multiple of 128) compute the exact product in f32. */
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

/* Exact mode (process-wide): 1 makes cq_qmm_gemv (and GEMM's n < 8 path)
 * use the exact f32 kernels even where the int8-activation path is
 * available. The initial value comes from the environment variable
 * CQ_QMM_EXACT (1 = on), read on first use. */
CQ_API void cq_qmm_set_exact(int on);
CQ_API int cq_qmm_get_exact(void);
/* The int8-activation GEMV runs only on rows of at least this many columns
 * (in): on shorter rows its fixed costs per call and per row (quantizing and
 * permuting x, the per-unit scale products, the horizontal sum, a last
 * super-block padded to 128 or 256 columns) outweigh its faster dot
 * products and the exact f32 kernel is as fast or faster, whatever the
 * number of rows (docs/bench-qmm.md, bench_qmm --small). Process-wide; 0
 * uses it on every covered shape. */
#define CQ_QMM_Q8_MIN_IN 512
CQ_API void cq_qmm_set_q8_min_in(int64_t in);
CQ_API int64_t cq_qmm_get_q8_min_in(void);
/* 1 when cq_qmm_gemv(w, ...) would run the int8-activation path under the
 * current ISA, exact setting and size rule, 0 when it computes the exact
 * product. */
CQ_API int cq_qmm_gemv_uses_q8(const cq_qmm_w *w);

/* The int8 quantization of x used by the int8-activation GEMV: blocks of
 * CQ_QMM_Q8_BLOCK consecutive columns (the last one partial), per block
 * amax = max |x_j|, sx = amax / 127, xq_j = lrintf(x_j * (127 / amax))
 * clamped to [-127, 127] (all 0 and sx = 0 when amax = 0). xq [in],
 * sx [ceil(in / CQ_QMM_Q8_BLOCK)]. */
CQ_API void cq_qmm_quant_x8(const float *x, int64_t in, int8_t *xq, float *sx);
/* Scalar reference of the int8-activation GEMV (its oracle): the codes and
 * the cherries against the dequantized x (xd_j = sx_b(j) xq_j),
 *   y_r = sum_j dequant(u_rj) xd_j + sum_{i in row r} h(delta_i) xd[cols_i],
 * summed in double, with h(d) the FP16 rounding of d (round to nearest even;
 * d itself where that overflows FP16): the form the cherry lanes below store.
 * Distance from the exact product: at most
 *   sum_j |dequant(u_rj)| sx_b(j) / 2 + sum_i (|h(delta_i)| sx_b(cols_i) / 2
 *   + |delta_i - h(delta_i)| |x[cols_i]|). */
CQ_API int cq_qmm_gemv_q8_ref(const cq_qmm_w *w, const float *x, float *y);
/* The same with the cherries against the exact x and f32 deltas,
 *   y_r = sum_j dequant(u_rj) xd_j + sum_{i in row r} delta_i x[cols_i]:
 * the definition of the CUDA backend's int8-activation GEMVs (cuda/qmatmul.cu),
 * which gather x per cherry from device memory. */
CQ_API int cq_qmm_gemv_q8_exact_cherries_ref(const cq_qmm_w *w, const float *x, float *y);

/* ------------------------------------------------ interleaved codes
 *
 * A repacked form of the codes for the int8-activation GEMV, built once at
 * load time: the rows the kernel reads together (blocks of CQ_QMM_IL_ROWS
 * consecutive rows) are interleaved in chunks of C bytes (C = 48 for 3-bit,
 * 64 otherwise: the bytes of one 64-byte load), so that a thread walking a
 * range of rows reads ONE sequential stream of codes instead of one per row.
 * Block b holds rows [R*b, R*b + nb), nb = min(R, out - R*b) (the last block
 * may be short); its bytes start at R*b*rb, and byte j of its row i is at
 *   R*b*rb + nb*C*k + i*len_k + (j - C*k),  k = j / C,  len_k = min(C, rb - C*k),
 * so the interleaved codes take exactly out*rb bytes, the size of the
 * on-disk codes, and can replace them (scales and cherries stay as they are:
 * they already form one sequential stream over a range of rows). */
#define CQ_QMM_IL_ROWS 4
/* On the CPU backend a cq_qlinear whose codes hold this layout has layout
 * CQ_QCODES_IL4 (core/cq_tensor.h), which QMATMUL carries in its i[3]
 * (models/qmodel.c sets it, cpu/kernels.c reads it). */

typedef struct cq_qmm_il {
    cq_qmm_w w;             /* the weight; w.codes holds the interleaved layout above */
    const uint8_t *lanes;   /* optional cherry lanes of w (cq_qmm_lanes_build), or NULL */
    int64_t lanes_bytes;    /* their size (cq_qmm_lanes_bytes) */
} cq_qmm_il;

/* Bytes per row of one interleave chunk (48 for 3-bit, 64 otherwise). */
CQ_API int cq_qmm_il_chunk(int bits);
/* Writes the interleaved codes of w into dst (out*row_bytes bytes; dst must
 * not overlap w->codes) and fills il (il->w = *w with codes = dst). */
CQ_API int cq_qmm_il_build(cq_qmm_il *il, const cq_qmm_w *w, uint8_t *dst);
/* The on-disk codes of rows [r0, r0+nr) of il into dst [nr, row_bytes]. */
CQ_API int cq_qmm_il_unpack_rows(const cq_qmm_il *il, int64_t r0, int64_t nr, uint8_t *dst);
/* 1 when it pays to build the interleaved form of w for CPU inference: the
 * int8-activation GEMV would run on it (cq_qmm_gemv_uses_q8). */
CQ_API int cq_qmm_il_wanted(const cq_qmm_w *w);
/* cq_qmm_gemv / cq_qmm_gemm on the interleaved form: the same results as on
 * the source descriptor, bit for bit without cherry lanes (il->lanes NULL);
 * with them the same oracle (cq_qmm_gemv_q8_ref), summed in another order.
 * The int8-activation GEMV reads the interleaved stream (and the lanes)
 * directly; every other path (exact mode, other ISAs, GEMM with n >= 8,
 * uncovered groups) unpacks tiles of rows into a scratch buffer of at most
 * 8 MiB of codes and runs the row-layout kernels on them (the CSR cherries). */
CQ_API int cq_qmm_il_gemv(const cq_qmm_il *il, const float *x, float *y);
CQ_API int cq_qmm_il_gemm(const cq_qmm_il *il, const float *X, int64_t n, float *Y);

/* ------------------------------------------------ cherry lanes
 *
 * A second load-time form of the cherries, for the int8-activation GEMV on
 * the interleaved codes: instead of one gather of x per 16 cherries of a
 * row, the cherries of 64 consecutive rows (a group; one row per byte lane
 * of a 512-bit vector) that fall in one 128-column chunk of x (one int8
 * block) are looked up together from the chunk's 128 int8 values of x, held
 * in two registers (vpermi2b), with no access to memory per cherry.
 *
 * Per group and chunk, the cherries form "entries": entry l of a chunk holds
 * the l-th cherry (by position in the CSR row) in that chunk of every row
 * that has more than l of them, as a 64-bit row mask, then per cherry (in
 * row order) its column within the chunk (1 byte) and h(delta) (FP16, 2
 * bytes; h as in cq_qmm_gemv_q8_ref). An entry costs the same however few
 * rows it holds, so layers with fewer than CQ_QMM_LANE_MIN_FILL cherries
 * (and every layer after) are "spilled" instead: per cherry its column, its
 * h(delta) and its row in the pair, added one by one. Two groups
 * form a pair (128 rows, the rows the kernel streams together); the buffer is
 *   header   64 bytes: u32 magic "CQL1", u32 64 (rows a group),
 *            u32 128 (columns a chunk), u32 0, i64 out, in, nnz, npairs, bytes
 *   table    npairs x 32 bytes: u64 offset of the pair's data, u32 entries of
 *            its first and second group, u32 lane cherries of each, u32
 *            spilled cherries of the pair, u32 0
 *   per pair (64-byte aligned): u64 masks[entries], u16 chunks[entries],
 *            u8 cols[lane cherries], u16 h(delta)[lane cherries], then the
 *            spills: u16 column[spills], u16 h(delta)[spills], u8 row in the
 *            pair[spills]; the first group's entries, cherries and spills
 *            first, spills by chunk, then row, then CSR order
 *   192 zero bytes (the kernel's 64-byte loads read past a pair's end)
 * About 3.3 bytes a lane cherry (the CSR form takes 6), 5 a spilled one,
 * plus 10 per entry; it is kept next to the CSR form (which the exact paths
 * read). Lanes are used by the VNNI kernel only; every other path ignores
 * them. */
#define CQ_QMM_LANE_ROWS 64    /* rows of a group: one per byte lane of a 512-bit vector */
#define CQ_QMM_LANE_COLS 128   /* columns of a chunk: one int8 block of x (CQ_QMM_Q8_BLOCK) */
#define CQ_QMM_LANE_MIN_FILL 6 /* fewest cherries an entry holds; the rest are spilled */
/* Bytes of the lanes of w (0 when w has no cherries); < 0 on bad w. */
CQ_API int64_t cq_qmm_lanes_bytes(const cq_qmm_w *w);
/* Writes the lanes of w into dst (n = cq_qmm_lanes_bytes(w) bytes).
 * CQ_ERANGE when a delta overflows FP16 (such a weight keeps the gathers). */
CQ_API int cq_qmm_lanes_build(const cq_qmm_w *w, uint8_t *dst, int64_t n);
/* Full validation of lanes against w (header, table, every entry and
 * cherry in range, counts matching w's rows). O(entries + nnz). Like the
 * CSR cherries (cq_qmm_check), lanes are trusted by the kernels: run it once
 * when they are built or loaded; cq_qmm_il_gemv only checks their header
 * against the weight (O(1)) on every call. */
CQ_API int cq_qmm_lanes_check(const cq_qmm_w *w, const uint8_t *lanes, int64_t n);

/* Dequantize rows [r0, r0+nr) of W (cherries applied) to dst [nr, in] f32. */
CQ_API int cq_qmm_dequant_rows(const cq_qmm_w *w, int64_t r0, int64_t nr, float *dst);

/* ISA used by cq_qmm_gemv/gemm (process-wide). CQ_ENOTSUP if this CPU (or
 * this build) lacks it; CQ_ISA_AUTO picks the best. */
CQ_API int cq_qmm_set_isa(cq_isa isa);
CQ_API cq_isa cq_qmm_get_isa(void);
CQ_API int cq_qmm_isa_supported(cq_isa isa);
CQ_API const char *cq_qmm_isa_name(cq_isa isa);

#endif
