/* cherryq: internals shared by the qmm dispatcher and its per-ISA kernels.
 *
 * The SIMD kernels view a packed row as 32-bit words of m = 32/b codes
 * (b = 3: m = 8 codes in a 24-bit word widened to 32 bits), code k of a word at
 * bit b*k. A "block" is L consecutive words (L = SIMD lanes: 16 for AVX-512, 8
 * for AVX2), i.e. L*m columns. Inside a block the kernels decode code k of all
 * L words at once (one AND, no cross-lane work), so they pair it with x in a
 * permuted order: position k*L + d of a block holds column d*m + k. Columns
 * after the last full block (the tail) keep their natural order and are done
 * by scalar code.
 *
 * To keep every decoded value an exact integer without a shift per code, the
 * kernels decode codes 0..h-1 in place (value u << b*k, an AND) and, after one
 * shift of the word by b*h bits, codes h..m-1 the same way; h = m/2, except
 * for 3-bit where all 8 codes fit in 24 bits (< 2^24, exact in f32 and
 * positive) and h = m. The permuted x of GEMV is prescaled by 2^-(b*(k % h))
 * to compensate (exact: a power of two, unless x is below ~1e-31 and goes
 * subnormal), and the GEMM dequantizer folds the same factor into the scale.
 */
#ifndef CQ_QMM_INTERNAL_H
#define CQ_QMM_INTERNAL_H

#include <string.h>

#include "qmm.h"

typedef struct cq_qmm_plan {
    const cq_qmm_w *w;
    int bits;
    int64_t in, out;
    int64_t g;        /* effective group size (group 0 -> in) */
    int64_t ng;       /* groups per row */
    int64_t rb;       /* bytes per packed row */
    float c;          /* qmin + 0.5 (b <= 4) or qmin (b = 8) */
    /* SIMD view (valid when L > 0) */
    int L;            /* words per block; 0 = natural order (scalar) */
    int m;            /* codes per word */
    int64_t bc;       /* columns per block, L*m */
    int64_t nblk;     /* full blocks per row */
    int64_t ncols_blk;/* nblk*bc: columns covered by blocks */
    int64_t wpg;      /* words per group (g/m); >= L: one scale per block */
    int64_t bpg;      /* blocks per group when wpg >= L (ng == 1: nblk + 1) */
    int64_t gpb;      /* groups per block when wpg < L */
} cq_qmm_plan;

/* Decoded code j of a packed row (any bits). */
static inline unsigned cq_qmm_code(const uint8_t *row, int bits, int64_t j)
{
    if (bits == 3) {
        const uint8_t *p = row + (j >> 3) * 3;
        uint32_t v = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
        return (v >> (3 * (j & 7))) & 7u;
    }
    if (bits == 8) return row[j];
    int64_t bit = j * bits;
    return (row[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1u);
}

/* Cheap validation of a descriptor (no cherry scan). 0 or CQ_EINVAL. */
int cq_qmm_check_basic(const cq_qmm_w *w, const char *fn);

/* Fill p for w and a SIMD width L (0 = scalar). Returns 1 when the SIMD
 * kernels can run this shape (group a multiple of m and either a multiple or
 * a divisor of L words, or one group per row), 0 otherwise. */
int cq_qmm_plan_init(cq_qmm_plan *p, const cq_qmm_w *w, int L);

/* Position of column j in the block-permuted order of p. */
static inline int64_t cq_qmm_perm_pos(const cq_qmm_plan *p, int64_t j)
{
    if (p->L == 0 || j >= p->ncols_blk) return j;
    int64_t blk = j / p->bc, r = j - blk * p->bc;
    int64_t d = r / p->m, k = r - d * p->m;
    return blk * p->bc + k * p->L + d;
}

/* Codes decoded before the word is shifted (h above). */
static inline int cq_qmm_half(int bits)
{
    return bits == 3 ? 8 : 16 / bits;
}

/* Scale of the decoded value of code k (k < m): 2^-(b*(k % h)). */
float cq_qmm_kscale(int bits, int k);

/* Scalar tail of one row: sum over the tail columns of s_g * u_j * x_j
 * (codes only: the qmin term is in the group sums). */
float cq_qmm_tail_dot(const cq_qmm_plan *p, const uint8_t *row, const float *sf, const float *x);
/* Cherry correction of row r: sum delta * x[col]. */
float cq_qmm_cherry_dot(const cq_qmm_w *w, int64_t r, const float *x);

/* Per-ISA kernels. Rows [r0, r1). xp: permuted, prescaled x (nblk*bc floats,
 * 64-byte aligned); gsum: per-group sums of x (ng floats, padded to ng+16
 * with zeros); ws: 4*(ng+32) floats of per-thread workspace. */
void cq_qmm_gemv_rows_avx2(const cq_qmm_plan *p, const float *xp, const float *gsum,
                           const float *x, float *y, int64_t r0, int64_t r1, float *ws);
void cq_qmm_gemv_rows_avx512(const cq_qmm_plan *p, const float *xp, const float *gsum,
                             const float *x, float *y, int64_t r0, int64_t r1, float *ws);
/* Dequantize rows [r0, r0+nr) to dst [nr, ld] in the permuted order (codes and
 * scales only; cherries are applied by the caller). */
void cq_qmm_dequant_avx2(const cq_qmm_plan *p, int64_t r0, int64_t nr, float *dst,
                         int64_t ld, float *ws);
void cq_qmm_dequant_avx512(const cq_qmm_plan *p, int64_t r0, int64_t nr, float *dst,
                           int64_t ld, float *ws);
/* Scalar dequantization of codes and scales of one row in natural order. */
void cq_qmm_dequant_row_scalar(const cq_qmm_plan *p, int64_t r, float *dst);

/* ---------------------------------------------- int8-activation GEMV (VNNI)
 *
 * The codes stay in the on-disk layout. A "super-block" (SB) is the codes of
 * one 64-byte load (48 bytes for 3-bit): S = 64*V columns that decode into V
 * vectors of 64 unsigned bytes, vector k holding column V*i + k at byte i
 * (8-bit V = 1; 3- and 4-bit V = 2; 2-bit V = 4). So dword lane d of every
 * vector covers columns [4Vd, 4V(d+1)) of the SB, and vpdpbusd against the int8
 * x, permuted once per call into the same order (xq position sb*S + k*64 + i
 * holds column sb*S + V*i + k), sums 4 products per lane. A "unit" is the
 * U = min(g, 128) columns that share one weight scale and one x scale
 * (g = 0: U = 128); each unit's int32 sums become f32 once, times
 * sw_g * sx_b. The offset term is c * sum_u sw sx sum(xq in u), a per-row dot
 * of ng-sized vectors. Columns past `in` meet zeros in xq (codes are loaded
 * with masks near the end of a row, never past its bytes). */
typedef struct cq_qmm_q8plan {
    const cq_qmm_w *w;
    int bits;
    int V;            /* vectors per super-block */
    int sbbytes;      /* code bytes per super-block (64, or 48 for 3-bit) */
    int64_t in, out, g, ng, rb;
    float c;
    int64_t S;        /* columns per super-block, 64*V */
    int64_t U;        /* columns per unit, min(g, 128) */
    int64_t nsb;      /* super-blocks per row, ceil(in / S) */
    int64_t nu;       /* units per row, ceil(in / U) */
    int64_t upg;      /* units per group; 0 when the row is one group */
    int il;           /* 1: w->codes in the interleaved layout (cq_qmm_il) */
    int64_t npad;     /* nsb*S: bytes of the permuted xq */
    int64_t nnat;     /* npad rounded up to CQ_QMM_LANE_COLS: natural-order xq after it */
    const uint8_t *lanes;   /* cherry lanes (header checked), or NULL: gathers */
    int64_t lanes_bytes;    /* their size */
} cq_qmm_q8plan;

/* Fill p; 1 when the int8 kernel covers w's shape, 0 otherwise. */
int cq_qmm_q8plan_init(cq_qmm_q8plan *p, const cq_qmm_w *w);
/* Quantize x for p: xq [npad] permuted, then xq + npad [nnat] the same
 * values in natural order, both zero padded; sxu [nu+32] and xqs [nu+32]:
 * per unit the x scale and the sum of xq (as f32), zero padded; xd [in]
 * (when not NULL) the dequantized x, sx_b(j) * xq_j, that the cherries'
 * gathers and the lanes' spills read. Same values as cq_qmm_quant_x8. */
void cq_qmm_q8_prep_avx512vnni(const cq_qmm_q8plan *p, const float *x, int8_t *xq, float *sxu,
                               float *xqs, float *xd);
/* Rows [r0, r1); ws: 8*(nu+48) floats per thread. With p->lanes, r0 is a
 * multiple of 2*CQ_QMM_LANE_ROWS (the caller's chunks are whole pairs). */
void cq_qmm_gemv_q8_rows_avx512vnni(const cq_qmm_q8plan *p, const int8_t *xq, const float *sxu,
                                    const float *xqs, const float *xd, float *y, int64_t r0,
                                    int64_t r1, float *ws);

/* ---------------------------------------------- cherry lanes (qmm_lanes.c) */
/* The buffer's header and pair-table row sizes (qmm.h layout). */
#define CQ_QMM_LANES_HDR 64
#define CQ_QMM_LANES_PAIR 32
/* Pairs of lane groups of a weight with out rows. */
static inline int64_t cq_qmm_lanes_npairs(int64_t out)
{
    return ((out + CQ_QMM_LANE_ROWS - 1) / CQ_QMM_LANE_ROWS + 1) / 2;
}
/* Row p of the pair table: returns the offset of the pair's data; v =
 * entries of its two groups, lane cherries of its two groups, spills. */
static inline uint64_t cq_qmm_lanes_pair(const uint8_t *lanes, int64_t p, uint32_t v[5])
{
    uint64_t off;
    memcpy(&off, lanes + CQ_QMM_LANES_HDR + p * CQ_QMM_LANES_PAIR, 8);
    memcpy(v, lanes + CQ_QMM_LANES_HDR + p * CQ_QMM_LANES_PAIR + 8, 20);
    return off;
}
/* h(d) of qmm.h: the FP16 rounding of a cherry delta, d where that overflows. */
float cq_qmm_lane_delta(float d);
/* O(1) check of a lanes buffer's header against w (the kernel's per-call check). */
int cq_qmm_lanes_header(const cq_qmm_w *w, const uint8_t *lanes, int64_t n);

#endif
