// cherryq CUDA kernels: QMATMUL, the mixed int-k + FP16-sparse linear layer,
// device code. Included by cuda/qmatmul.cu (the launches) and by
// tests/test_cuda_emu.cpp, which runs these same kernels on the CPU under a
// small SIMT emulator (tests/cuda_emu/simt.h).
//   Y [N, out] = X [N, in] W^T,  W = dequant(codes, scales) + cherries
// Packed layout (cq_tensor.h CQ_OP_QMATMUL, CHERRYQ.md section 6): the codes
// of a row are one LSB-first bit stream starting on a byte boundary (3-bit:
// 8 codes per 24-bit little-endian word, which is the same stream), code c
// at bit c*b. u = q - qmin;  b <= 4: w = (u - 2^(b-1) + 0.5) s;  b = 8:
// w = (u - 127) s. FP16 scales [out, ngroups], group 0 = the whole row, the
// last group may be partial. Cherries: CSR rowptr/cols/delta, y += delta x[col].
//
// Decoding (small N): the fast GEMV kernel.
//   - A block stages x (one row of X) in shared memory once, pre-multiplied
//     by 2^-e(c) (see below) and XOR-swizzled so that the 128-bit shared
//     loads of 32 lanes are free of bank conflicts, plus the sum of x over
//     each aligned run of 32 columns.
//   - A warp owns ROWS output rows; lane l handles 128-column chunks
//     l, l+32, ...: it loads the chunk's packed codes of its ROWS rows with
//     16-byte loads (16*b bytes per row), then for each 32-column sub-chunk
//     reads 32 x values once and reuses them for the ROWS rows.
//   - A code is turned into a float without a conversion instruction: with
//     the code masked in place at bit offset e (e + b <= 23),
//     as_float(0x4B000000 | (u << e)) - 2^23 = u * 2^e exactly, and x was
//     pre-scaled by 2^-e, so the product is u * x exactly as rounded. Per
//     code: one LOP3, one FADD, one FFMA (plus a shift shared by several
//     codes). The offset is applied once per group run:
//     sum_c (u_c - off) s x_c = s (sum_c u_c x_c - off sum_c x_c).
//   - Per-row partial sums are reduced with warp shuffles; cherries of the
//     row are added by the lanes (CSR delta) before the reduction.
//   Conditions: in % 128 == 0, group == 0 or group % 32 == 0, b in {2,3,4,8},
//   row_bytes % 16 == 0, codes 16-byte aligned, x fits in shared memory.
//   Anything else takes the generic kernel (a warp per row, code by code).
// Batches (large N): dequantize a tile of rows to f32 and run a GEMM
// (backends/cuda/cuda_blas.c): exact f32 arithmetic, same as the CPU path.
#pragma once

#include "common.cuh"
#include "qgemv_q8.h"

using namespace cqk;

namespace {

struct QW {
    const uint8_t *codes;
    const __half *scales;
    const int32_t *rowptr;
    const uint16_t *cols;
    const float *delta;
    int64_t nnz;
    int64_t out, in, row_bytes, ngroups, group;
    int bits;
    float off;
    // 0x4B000000 as a run-time value: the kernels OR it into each masked
    // code, and a value the compiler cannot see lets (src & mask) | magic be
    // one LOP3 (mask immediate, magic in a register) instead of two
    // instructions with two immediates (seen in the H200 SASS: 3 LOP3 per code).
    uint32_t magic;
    // column c's group is __umulhi(c, gdiv) (make_qw): one IMAD.HI where a
    // 32-bit division by the run-time group is about a dozen instructions,
    // four a row and chunk. 0 for group 0 (one scale a row).
    uint32_t gdiv;
};

constexpr int kWarpsFast = 4;
constexpr int kWarpsGeneric = 8;

template <int BITS> struct Rows { static constexpr int value = BITS == 8 ? 2 : 4; };

// In-word bit offset at which code c (0..31) of a 32-code sub-chunk is
// masked in place: its offset in its 32-bit word, minus 16 when that word is
// first shifted right by 16 (offset + bits > 23), or 0 when the code
// straddles two words (funnel shift).
__host__ __device__ constexpr int code_shift(int bits, int c)
{
    return ((c * bits) & 31) + bits > 32 ? 0
         : ((c * bits) & 31) + bits <= 23 ? ((c * bits) & 31)
         : ((c * bits) & 31) - 16;
}

// 2^e for |e| <= 126 as a float: multiplying by it is exact (also into the
// subnormal range, rounded as ldexpf rounds; no flush-to-zero in this build)
// and costs one FMUL where ldexpf costs a call's worth of range checks.
__device__ __forceinline__ float pow2(int e) { return __int_as_float((127 + e) << 23); }

// sum_c u_c * x_c over the 32 codes held in BITS words; x pre-scaled by 2^-e(c).
template <int BITS>
__device__ __forceinline__ float dot32(const uint32_t *wd, const float *x, uint32_t magic)
{
    float a[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
#pragma unroll
    for (int c = 0; c < 32; ++c) {
        constexpr uint32_t mask = (1u << BITS) - 1u;
        const int bit = c * BITS, wi = bit >> 5, off = bit & 31;
        uint32_t src;
        if (off + BITS > 32) src = __funnelshift_r(wd[wi], wd[wi + 1], off);
        else if (off + BITS <= 23) src = wd[wi];
        else src = wd[wi] >> 16;
        const int e = code_shift(BITS, c);
        const float u = __uint_as_float((src & (mask << e)) | magic) - 8388608.0f;
        a[c & 3] = fmaf(u, x[c], a[c & 3]);
    }
    return (a[0] + a[1]) + (a[2] + a[3]);
}

__device__ __forceinline__ float cherries(const QW &w, int64_t row, const float *x, int lane)
{
    float acc = 0.0f;
    if (w.rowptr) {
        const int64_t j0 = max((int64_t)w.rowptr[row], (int64_t)0);
        const int64_t j1 = min((int64_t)w.rowptr[row + 1], w.nnz);
        for (int64_t j = j0 + lane; j < j1; j += 32) {
            const int64_t col = w.cols[j];
            acc = fmaf(w.delta[j], col < w.in ? x[col] : NAN, acc);
        }
    }
    return acc;
}

// The codes and FP16 scales of one 128-column chunk of a warp's ROWS rows.
template <int BITS, int R> struct Chunk {
    static constexpr int ROWS = R;
    uint32_t cw[ROWS][4 * BITS];
    float sc[ROWS][4];
};

// Rows row0 .. row0+R-1 of a warp and their code pointers; rows past the
// end repeat row out - 1 (computed, never stored).
template <int R>
__device__ __forceinline__ void row_ptrs(const uint4 **crow, int64_t *rows_, int64_t row0, const QW &w)
{
#pragma unroll
    for (int r = 0; r < R; ++r) {
        rows_[r] = min(row0 + r, w.out - 1);
        crow[r] = (const uint4 *)(w.codes + rows_[r] * w.row_bytes);
    }
}

// The FP16 scales of the four 32-column runs of chunk ch of row `row`, as
// floats: run k's group is (ch * 128 + k * 32) / group, exact as
// __umulhi(c, gdiv) since in * group <= 2^32 (fast_shape_ok).
__device__ __forceinline__ void chunk_scales(float *sc, const QW &w, int64_t row, int64_t ch)
{
#pragma unroll
    for (int k = 0; k < 4; ++k)
        sc[k] = __half2float(__ldg(w.scales + row * w.ngroups + __umulhi((uint32_t)(ch * 128 + k * 32), w.gdiv)));
}

template <int BITS, int R>
__device__ __forceinline__ void load_chunk(Chunk<BITS, R> &c, const uint4 *const *crow, const int64_t *rows_,
                                           int64_t ch, const QW &w)
{
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int j = 0; j < BITS; ++j) {
            const uint4 t = __ldg(crow[r] + ch * BITS + j);
            c.cw[r][4 * j + 0] = t.x;
            c.cw[r][4 * j + 1] = t.y;
            c.cw[r][4 * j + 2] = t.z;
            c.cw[r][4 * j + 3] = t.w;
        }
        chunk_scales(c.sc[r], w, rows_[r], ch);
    }
}

template <int BITS, int R>
__device__ __forceinline__ void dot_chunk(float *acc, const Chunk<BITS, R> &c, const float *xs, const float *xsum,
                                          int64_t ch, float off, uint32_t magic)
{
    const float4 *xs4 = (const float4 *)xs;
    const int sw = (int)(ch & 7);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        float xv[32];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float4 t = xs4[ch * 32 + ((k * 8 + i) ^ sw)];
            xv[4 * i + 0] = t.x;
            xv[4 * i + 1] = t.y;
            xv[4 * i + 2] = t.z;
            xv[4 * i + 3] = t.w;
        }
        const float xsk = xsum[ch * 4 + k];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float d = dot32<BITS>(&c.cw[r][k * BITS], xv, magic);
            acc[r] = fmaf(c.sc[r][k], fmaf(-off, xsk, d), acc[r]);
        }
    }
}

// Variant 4 (int8 x, dp4a; cuda/qgemv_q8.h): the chunk's 4 sub-chunks of
// 32 codes against the staged int8 x of chunk ch (two 16-byte loads each),
// one dp4a per 4 codes, then one f32 term per sub-chunk and row.
template <int BITS, int R>
__device__ __forceinline__ void dot_chunk_q8(float *acc, const Chunk<BITS, R> &c, const uint4 *xq4,
                                             const int32_t *xqsum, const float *sxs, int64_t ch, float off)
{
    const float sx = sxs[ch];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const uint4 a = xq4[cqk_q8_unit(ch, k, 0)], b = xq4[cqk_q8_unit(ch, k, 1)];
        const uint32_t xi[8] = { a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w };
        const int32_t sq = xqsum[ch * 4 + k];
#pragma unroll
        for (int r = 0; r < R; ++r)
            acc[r] = cqk_q8_term(c.sc[r][k], sx, cqk_q8_dot32(BITS, &c.cw[r][k * BITS], xi), off, sq, acc[r]);
    }
}

// Where a block keeps x in shared memory (dynamic, 16-byte aligned):
//   exact: xs = in floats, swizzled, pre-scaled; xsum = in / 32 floats;
//   Q8 (int8 x, cuda/qgemv_q8.h): xq = in bytes, swizzled, permuted; sxs =
//   in / 128 x scales; xqsum = in / 32 sums of xq.
struct XStage {
    float4 *smem4;
    float *xs, *xsum;
    int8_t *xq;
    float *sxs;
    int32_t *xqsum;
};

__device__ __forceinline__ XStage x_stage_ptrs(float4 *smem4, int64_t in)
{
    XStage s;
    s.smem4 = smem4;
    s.xs = (float *)smem4;
    s.xsum = s.xs + in;
    s.xq = (int8_t *)smem4;
    s.sxs = (float *)(s.xq + in);
    s.xqsum = (int32_t *)(s.sxs + (in >> 7));
    return s;
}

// The whole block stages x (one row of X, in % 128 == 0) into st: XB float4
// loads in flight per thread, then the stores. Q8: each warp's 32 float4 are
// one 128-column block, quantized as cq_qmm_quant_x8 does. The caller syncs.
template <int BITS, bool Q8>
__device__ __forceinline__ void stage_x(const XStage &st, const float *x, int64_t in, int lane, int warp)
{
    constexpr int XB = 8;                        // float4 loads of x in flight per thread
    const int64_t nx4 = in >> 2;
    for (int64_t base = 0; base < nx4; base += (int64_t)XB * blockDim.x) {
        float4 v[XB];
#pragma unroll
        for (int i = 0; i < XB; ++i) {
            const int64_t p = base + (int64_t)i * blockDim.x + threadIdx.x;
            if (p < nx4) v[i] = __ldg((const float4 *)x + p);
        }
#pragma unroll
        for (int i = 0; i < XB; ++i) {
            const int64_t p = base + (int64_t)i * blockDim.x + threadIdx.x;
            if (base + (int64_t)i * blockDim.x + warp * 32 >= nx4) break;   // whole warps: nx4 % 32 == 0
            if constexpr (Q8) {
                // the warp's 32 float4 are one 128-column block: its amax, scale, int8 x
                const float m = warp_max(fmaxf(fmaxf(fabsf(v[i].x), fabsf(v[i].y)), fmaxf(fabsf(v[i].z), fabsf(v[i].w))));
                const float inv = m > 0.0f ? 127.0f / m : 0.0f;
                const int q0 = cqk_q8_quant(v[i].x, inv), q1 = cqk_q8_quant(v[i].y, inv);
                const int q2 = cqk_q8_quant(v[i].z, inv), q3 = cqk_q8_quant(v[i].w, inv);
                int sq = (q0 + q1) + (q2 + q3);
                sq += __shfl_xor_sync(CQK_FULL_MASK, sq, 1);
                sq += __shfl_xor_sync(CQK_FULL_MASK, sq, 2);
                sq += __shfl_xor_sync(CQK_FULL_MASK, sq, 4);
                if ((lane & 7) == 0) st.xqsum[p >> 3] = sq;
                if (lane == 0) st.sxs[p >> 5] = m > 0.0f ? m / 127.0f : 0.0f;
                st.xq[cqk_q8_byte(BITS, p * 4 + 0)] = (int8_t)q0;
                st.xq[cqk_q8_byte(BITS, p * 4 + 1)] = (int8_t)q1;
                st.xq[cqk_q8_byte(BITS, p * 4 + 2)] = (int8_t)q2;
                st.xq[cqk_q8_byte(BITS, p * 4 + 3)] = (int8_t)q3;
                continue;
            }
            float sv = (v[i].x + v[i].y) + (v[i].z + v[i].w);   // 8 lanes = 32 columns
            sv += __shfl_xor_sync(CQK_FULL_MASK, sv, 1);
            sv += __shfl_xor_sync(CQK_FULL_MASK, sv, 2);
            sv += __shfl_xor_sync(CQK_FULL_MASK, sv, 4);
            if ((lane & 7) == 0) st.xsum[p >> 3] = sv;
            const int c = (int)((p * 4) & 31);
            float4 o;
            o.x = v[i].x * pow2(-code_shift(BITS, c + 0));
            o.y = v[i].y * pow2(-code_shift(BITS, c + 1));
            o.z = v[i].z * pow2(-code_shift(BITS, c + 2));
            o.w = v[i].w * pow2(-code_shift(BITS, c + 3));
            st.smem4[p ^ ((p >> 5) & 7)] = o;                   // swizzle by chunk
        }
    }
}

// x[col] for a cherry: exact: from shared memory (the slot of col, times
// the 2^e of its position: exact); Q8: the exact x from global memory. A
// column outside [0, in) gives NaN, never an out-of-range read.
template <int BITS, bool Q8>
__device__ __forceinline__ float x_at(const XStage &st, const float *x, int64_t in, int64_t col)
{
    if (col < 0 || col >= in) return NAN;
    if constexpr (Q8) return __ldg(x + col);
    const int64_t p = col >> 2;
    return st.xs[(p ^ ((p >> 5) & 7)) * 4 + (col & 3)] * pow2(code_shift(BITS, (int)(col & 31)));
}

// The dots of one chunk of a warp's rows into acc: f32 or int8 (Q8).
template <int BITS, int R, bool Q8>
__device__ __forceinline__ void dot_any(float *acc, const Chunk<BITS, R> &c, const XStage &st, int64_t ch,
                                        float off, uint32_t magic)
{
    if constexpr (Q8)
        dot_chunk_q8<BITS, R>(acc, c, (const uint4 *)st.xq, st.xqsum, st.sxs, ch, off);
    else
        dot_chunk<BITS, R>(acc, c, st.xs, st.xsum, ch, off, magic);
}

// Latency is what limits a GEMV of a few MB: each warp's work is one or a
// few round trips to DRAM. So everything independent is issued before the
// first thing that waits: the codes and scales of the warp's first chunk,
// then the cherry CSR (rowptr -> cols, delta), then x (128-bit loads, all
// of a thread's in one batch). The next chunk's codes are loaded before the
// current one is computed (two chunks in registers). The cherries read x
// back from shared memory (undoing the 2^-e pre-scaling, exact).
//
// Q8 (variant 4): x is staged as int8 instead (cuda/qgemv_q8.h: in bytes,
// then in / 128 float scales, then in / 32 int sums), the dots are dp4a, and
// the cherries read the exact x from global memory.
template <int BITS, int ROWS, bool PF, int MINB, int WARPS, bool Q8 = false>
__global__ void __launch_bounds__(WARPS * 32, MINB)
qgemv_fast_kernel(float *__restrict__ Y, const float *__restrict__ X, QW w)
{
    CQK_DYN_SMEM(float4, smem4);
    const XStage st = x_stage_ptrs(smem4, w.in);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t n = blockIdx.y;
    const float *x = X + n * w.in;

    const int64_t row0 = ((int64_t)blockIdx.x * WARPS + warp) * ROWS;
    const bool active = row0 < w.out;            // no early return: the block syncs below
    const uint4 *crow[ROWS];
    int64_t rows_[ROWS];
    row_ptrs<ROWS>(crow, rows_, row0, w);
    const int64_t nch = w.in >> 7;
    Chunk<BITS, ROWS> cur;
    if (active && lane < nch) load_chunk<BITS, ROWS>(cur, crow, rows_, lane, w);

    // cherries of the warp's rows: lane r < ROWS reads row r's CSR range
    int64_t cj0 = 0, cj1 = 0;
    if (active && w.rowptr && lane < ROWS) {
        const int64_t rr = min(row0 + lane, w.out - 1);
        cj0 = max((int64_t)__ldg(w.rowptr + rr), (int64_t)0);
        cj1 = min((int64_t)__ldg(w.rowptr + rr + 1), w.nnz);
        if (row0 + lane >= w.out) cj1 = cj0;     // clamped duplicate row: no cherries
    }

    stage_x<BITS, Q8>(st, x, w.in, lane, warp);

    // the first 32 cherries of each row, one per lane (more: after the dots)
    float cd[ROWS];
    int ccol[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int64_t j0 = __shfl_sync(CQK_FULL_MASK, cj0, r), j1 = __shfl_sync(CQK_FULL_MASK, cj1, r);
        cd[r] = 0.0f;
        ccol[r] = -1;
        if (j0 + lane < j1) {
            ccol[r] = __ldg(w.cols + j0 + lane);
            cd[r] = __ldg(w.delta + j0 + lane);
        }
    }
    __syncthreads();
    if (!active) return;

    const uint32_t magic = w.magic;
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = 0.0f;
    for (int64_t ch = lane; ch < nch; ch += 32) {
        if (PF && ch + 32 < nch) {
            Chunk<BITS, ROWS> nxt;
            load_chunk<BITS, ROWS>(nxt, crow, rows_, ch + 32, w);
            dot_any<BITS, ROWS, Q8>(acc, cur, st, ch, w.off, magic);
            cur = nxt;
        } else {
            dot_any<BITS, ROWS, Q8>(acc, cur, st, ch, w.off, magic);
            if (ch + 32 < nch) load_chunk<BITS, ROWS>(cur, crow, rows_, ch + 32, w);
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        float v = acc[r];
        if (ccol[r] >= 0) v = fmaf(cd[r], x_at<BITS, Q8>(st, x, w.in, ccol[r]), v);
        const int64_t j0 = __shfl_sync(CQK_FULL_MASK, cj0, r), j1 = __shfl_sync(CQK_FULL_MASK, cj1, r);
        for (int64_t j = j0 + 32 + lane; j < j1; j += 32) v = fmaf(w.delta[j], x_at<BITS, Q8>(st, x, w.in, w.cols[j]), v);
        v = warp_sum(v);
        if (lane == 0 && row0 + r < w.out) Y[n * w.out + row0 + r] = v;
    }
}

// The streaming GEMV (variants 5-7): the fast kernel's math on a persistent
// grid. What it changes, and why: in the fast kernel each warp owns a fixed
// row group, so at in = 4096 a lane loads one chunk, waits one DRAM round
// trip with nothing else to do, computes, and the warp ends; the block
// stages x for only 16 rows; the SM alternates between waiting and
// computing. Here a block of WARPS warps stages x once and its warps walk
// row groups g, g + stride, ... (stride = all the grid's warps, the grid
// sized to the resident blocks), with a two-deep pipeline: while the warp
// computes one (group, chunk) item, the codes of the next item are already
// in flight (the next chunk of the group, or the first of the next group),
// as are the next group's cherries (cols, delta) and the CSR bounds of the
// group after it. Every lane takes the same number of steps per group
// (ceil(in / 4096)), so the per-group warp reductions stay converged.
template <int ROWS, int CK> struct Cherries {
    int col[ROWS][CK];     // -1: no cherry in this slot
    float d[ROWS][CK];
};

// The CSR bounds of rows row0 .. row0 + ROWS - 1, one a lane: lane r <=
// ROWS holds rowptr[min(row0 + r, out)] clamped to [0, nnz], so row r's
// cherries are [lane r's, lane r+1's), empty for rows >= out; 0 elsewhere.
template <int ROWS>
__device__ __forceinline__ int cherry_bounds(const QW &w, int64_t row0, int lane)
{
    if (!w.rowptr || lane > ROWS) return 0;
    const int64_t v = __ldg(w.rowptr + min(row0 + lane, w.out));
    return (int)min(max(v, (int64_t)0), w.nnz);
}

// The first CK * 32 cherries of each of the ROWS rows, from their bounds
// (cherry_bounds), CK a lane and row (the rest: a loop at the row's end).
template <int ROWS, int CK>
__device__ __forceinline__ void cherries_load(Cherries<ROWS, CK> &c, const QW &w, int bv, int lane)
{
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        const int j0 = __shfl_sync(CQK_FULL_MASK, bv, r), j1 = __shfl_sync(CQK_FULL_MASK, bv, r + 1);
#pragma unroll
        for (int k = 0; k < CK; ++k) {
            const int j = j0 + 32 * k + lane;
            c.col[r][k] = j < j1 ? (int)__ldg(w.cols + j) : -1;
            c.d[r][k] = j < j1 ? __ldg(w.delta + j) : 0.0f;
        }
    }
}

// The end of ROWS rows row0 ..: each row's sum plus its cherries (the
// first CK * 32 held in c with their x in cx, the rest loaded here), warp
// reduced, stored to y[row] for rows < out; the sums restart at 0.
template <int BITS, int ROWS, int CK, bool Q8>
__device__ __forceinline__ void rows_finish(float *acc, const Cherries<ROWS, CK> &c, const float (*cx)[CK], int bv,
                                            const QW &w, const XStage &st, const float *x, int lane, float *y,
                                            int64_t row0)
{
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        float v = acc[r];
#pragma unroll
        for (int k = 0; k < CK; ++k) v = fmaf(c.d[r][k], cx[r][k], v);
        const int j0 = __shfl_sync(CQK_FULL_MASK, bv, r), j1 = __shfl_sync(CQK_FULL_MASK, bv, r + 1);
        for (int j = j0 + 32 * CK + lane; j < j1; j += 32)
            v = fmaf(__ldg(w.delta + j), x_at<BITS, Q8>(st, x, w.in, __ldg(w.cols + j)), v);
        v = warp_sum(v);
        if (lane == 0 && row0 + r < w.out) y[row0 + r] = v;
        acc[r] = 0.0f;
    }
}

template <int BITS, int ROWS, int MINB, int WARPS, bool Q8>
__global__ void __launch_bounds__(WARPS * 32, MINB)
qgemv_stream_kernel(float *__restrict__ Y, const float *__restrict__ X, QW w)
{
    constexpr int CK = 2;                          // cherries a row and lane held ahead (64 a row)
    CQK_DYN_SMEM(float4, smem4);
    const XStage st = x_stage_ptrs(smem4, w.in);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t n = blockIdx.y;
    const float *x = X + n * w.in;
    const int64_t ngr = (w.out + ROWS - 1) / ROWS, stride = (int64_t)gridDim.x * WARPS;
    const int64_t nch = w.in >> 7;
    const int steps = (int)((nch + 31) >> 5);
    int64_t g = (int64_t)blockIdx.x * WARPS + warp;

    // the codes of chunk ch of group gg's rows (a partial last group repeats
    // row out - 1, never stored)
    auto load = [&](Chunk<BITS, ROWS> &c, int64_t gg, int64_t ch) {
        const uint4 *crow[ROWS];
        int64_t rows_[ROWS];
        row_ptrs<ROWS>(crow, rows_, gg * ROWS, w);
        load_chunk<BITS, ROWS>(c, crow, rows_, ch, w);
    };
    // group gg's CSR bounds (cherry_bounds; none past the last group) and cherries
    auto bounds = [&](int64_t gg) -> int { return gg < ngr ? cherry_bounds<ROWS>(w, gg * ROWS, lane) : 0; };
    auto cherries_of = [&](Cherries<ROWS, CK> &c, int bv) { cherries_load<ROWS, CK>(c, w, bv, lane); };

    Chunk<BITS, ROWS> A, B;
    if (g < ngr && lane < nch) load(A, g, lane);
    int bv = bounds(g), bv_next = bounds(g + stride), bv_after = 0;
    stage_x<BITS, Q8>(st, x, w.in, lane, warp);
    Cherries<ROWS, CK> ch_cur, ch_next;
    cherries_of(ch_cur, bv);
    __syncthreads();
    if (g >= ngr) return;                          // warp-uniform; no block syncs below

    const uint32_t magic = w.magic;
    float acc[ROWS], cx[ROWS][CK];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = 0.0f;
    int s = 0;                                     // step within group g
    // one item: the codes of (g, step s) are in c; prefetch the next item's
    // into nx; at a group's last step add its cherries, reduce, store.
    // False when the warp has no group left.
    auto step = [&](const Chunk<BITS, ROWS> &c, Chunk<BITS, ROWS> &nx) -> bool {
        const int64_t ch = (int64_t)s * 32 + lane;
        const bool last = s + 1 == steps;
        const int64_t gn = last ? g + stride : g, chn = last ? lane : ch + 32;
        if (gn < ngr && chn < nch) load(nx, gn, chn);
        if (s == 0) {
            cherries_of(ch_next, bv_next);
            bv_after = bounds(g + 2 * stride);
#pragma unroll
            for (int r = 0; r < ROWS; ++r)
#pragma unroll
                for (int k = 0; k < CK; ++k)
                    cx[r][k] = ch_cur.col[r][k] >= 0 ? x_at<BITS, Q8>(st, x, w.in, ch_cur.col[r][k]) : 0.0f;
        }
        if (ch < nch) dot_any<BITS, ROWS, Q8>(acc, c, st, ch, w.off, magic);
        if (!last) {
            ++s;
            return true;
        }
        rows_finish<BITS, ROWS, CK, Q8>(acc, ch_cur, cx, bv, w, st, x, lane, Y + n * w.out, g * ROWS);
        ch_cur = ch_next;
        bv = bv_next;
        bv_next = bv_after;
        g += stride;
        s = 0;
        return g < ngr;
    };
    for (;;) {
        if (!step(A, B)) break;
        if (!step(B, A)) break;
    }
}

// The pipelined GEMV (variants 8, 9): the codes reach shared memory by
// asynchronous copies (cp.async), several tiles ahead. Why: the fast and
// streaming kernels (0-7) load codes into registers, each lane its own
// chunk (16-byte loads 16*b bytes apart: part of each 32-byte sector per
// instruction), and then wait for them, so the bytes in flight are what
// the registers hold and a warp alternates between waiting and computing.
// Here the loads cost no registers and nobody waits on them but the
// barrier of the tile they belong to.
//   - A tile is T = WARPS * R rows x one segment of 4096 columns (32 chunks
//     of 128, one a lane; the last segment of a row may be shorter). Each
//     block (one an SM, persistent) owns a contiguous run of row blocks and
//     walks their tiles in order, segment by segment.
//   - Its threads copy tile k + S - 1 into ring slot (k + S - 1) % S while
//     every warp computes R rows of tile k from slot k % S: lane l takes
//     chunk l of the segment, its R rows' codes from the slot, x from the
//     block's staged copy (once per block), the FP16 scales from global
//     memory one tile ahead in registers. S (2..6) is what shared memory
//     holds (PipeGeo, from the host); a row's segment sits in its slot at a
//     stride of 512*b bytes, its 16-byte units XOR-swizzled in groups of 8
//     at even b (pipe_swz) so that the 8 lanes of a quarter warp, reading
//     chunks l .. l + 7, hit 8 different bank groups (at 3 bits 3l mod 8
//     already differs).
//   - A warp's R sums run over the segments of its row block; at the last
//     one the cherries are added (loaded a row block ahead, their CSR
//     bounds two ahead), the sums reduced and stored.
// Q8 = int8 x and dp4a (variant 8), else the exact f32 math (variant 9).
constexpr int kPipeWarps = 16, kPipeSegChunks = 32;

struct PipeGeo {
    int stages;          // S: tiles in the ring
    int slot_bytes;      // one tile: T rows x 512 * b bytes
    int xbytes;          // staged x ahead of the ring (16-byte multiple)
    int nseg;            // segments of 4096 columns in a row
};

template <int BITS>
__host__ __device__ __forceinline__ int pipe_swz(int v)
{
    return BITS == 3 ? v : v ^ ((v >> 3) & 7);
}

template <int BITS, int R, int WARPS, bool Q8>
__global__ void __launch_bounds__(WARPS * 32, 1)
qgemv_pipe_kernel(float *__restrict__ Y, const float *__restrict__ X, QW w, PipeGeo geo)
{
    constexpr int T = WARPS * R, CK = 2, SU = kPipeSegChunks * BITS;   // SU: 16-byte units of a row's segment
    CQK_DYN_SMEM(float4, smem4);
    const XStage st = x_stage_ptrs(smem4, w.in);
    unsigned char *const ring = (unsigned char *)smem4 + geo.xbytes;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t n = blockIdx.y;
    const float *x = X + n * w.in;
    const int64_t nch = w.in >> 7, nrb = (w.out + T - 1) / T;
    const int S = geo.stages, nseg = geo.nseg;
    // this block's row blocks [rb_lo, rb_hi)
    const int64_t rb_lo = nrb * blockIdx.x / gridDim.x, rb_hi = nrb * (blockIdx.x + 1) / gridDim.x;
    const int64_t ntile = (rb_hi - rb_lo) * nseg;

    // copies of the block's tile k (row block rb, segment sg) into slot
    // sl = k % S, one group a call (empty past the last tile); the caller
    // walks k, sl, rb, sg in step
    auto issue = [&](int64_t k, int sl, int64_t rb, int sg) {
        if (k < ntile) {
            unsigned char *slot = ring + (size_t)sl * (size_t)geo.slot_bytes;
            const int64_t row0 = rb * T;
            const int nr = (int)min((int64_t)T, w.out - row0);
            const int su = (int)min((int64_t)kPipeSegChunks, nch - (int64_t)sg * kPipeSegChunks) * BITS;
            const unsigned char *src = w.codes + row0 * w.row_bytes + (int64_t)sg * SU * 16;
            for (int r = warp; r < nr; r += WARPS)
                for (int v = lane; v < su; v += 32)
                    cp_async16(slot + (size_t)(r * SU + pipe_swz<BITS>(v)) * 16, src + r * w.row_bytes + v * 16, 16);
        }
        cp_async_commit();
    };
    // the FP16 scales of lane's chunk of this warp's R rows in tile (rb, sg)
    auto scales_of = [&](float (*sc)[4], int64_t rb, int sg) {
        const int64_t ch = (int64_t)sg * kPipeSegChunks + lane;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (ch < nch && rb < rb_hi) {
                chunk_scales(sc[r], w, min(rb * T + warp * R + r, w.out - 1), ch);
            } else {
#pragma unroll
                for (int q = 0; q < 4; ++q) sc[r][q] = 0.0f;
            }
        }
    };
    // the CSR bounds of this warp's rows in row block rb (cherry_bounds;
    // none past the block's last row block) and their cherries
    auto bounds = [&](int64_t rb) -> int { return rb < rb_hi ? cherry_bounds<R>(w, rb * T + warp * R, lane) : 0; };
    auto cherries_of = [&](Cherries<R, CK> &c, int bv) { cherries_load<R, CK>(c, w, bv, lane); };

    // the issue walk runs S - 1 tiles ahead of the compute walk
    int64_t ik = 0, irb = rb_lo;
    int isg = 0, isl = 0;
    auto issue_next = [&]() {
        issue(ik, isl, irb, isg);
        ++ik;
        if (++isl == S) isl = 0;
        if (++isg == nseg) {
            isg = 0;
            ++irb;
        }
    };
    for (int k = 0; k < S - 1; ++k) issue_next();
    int bv = bounds(rb_lo), bv_next = bounds(rb_lo + 1);
    float sc[R][4], scn[R][4];
    scales_of(sc, rb_lo, 0);
    stage_x<BITS, Q8>(st, x, w.in, lane, warp);
    Cherries<R, CK> cc, cn;
    cherries_of(cc, bv);
    __syncthreads();                               // x staged

    const uint32_t magic = w.magic;
    float acc[R], cx[R][CK];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    int bv_after = 0;                              // set at a row block's first segment, used at its last
    int64_t rb = rb_lo;
    int sg = 0, sl = 0;                            // sl = k % S
    for (int64_t k = 0; k < ntile; ++k) {
        issue_next();                              // into the slot freed at the end of k - 1
        const int64_t rbn = sg + 1 == nseg ? rb + 1 : rb;
        scales_of(scn, rbn, sg + 1 == nseg ? 0 : sg + 1);
        if (sg == 0) {                             // a new row block: the next one's cherries, bounds after it
            bv_after = bounds(rb + 2);
            cherries_of(cn, bv_next);
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int j = 0; j < CK; ++j)
                    cx[r][j] = cc.col[r][j] >= 0 ? x_at<BITS, Q8>(st, x, w.in, cc.col[r][j]) : 0.0f;
        }
        cp_async_wait(S - 1);                      // this thread's copies of tile k have landed
        __syncthreads();                           // and everyone's
        const int64_t ch = (int64_t)sg * kPipeSegChunks + lane;
        if (ch < nch && rb * T + warp * R < w.out) {
            const uint4 *slot = (const uint4 *)(ring + (size_t)sl * (size_t)geo.slot_bytes);
            Chunk<BITS, R> c;
#pragma unroll
            for (int r = 0; r < R; ++r) {
#pragma unroll
                for (int j = 0; j < BITS; ++j) {
                    const uint4 t = slot[(warp * R + r) * SU + pipe_swz<BITS>(lane * BITS + j)];
                    c.cw[r][4 * j + 0] = t.x;
                    c.cw[r][4 * j + 1] = t.y;
                    c.cw[r][4 * j + 2] = t.z;
                    c.cw[r][4 * j + 3] = t.w;
                }
#pragma unroll
                for (int q = 0; q < 4; ++q) c.sc[r][q] = sc[r][q];
            }
            dot_any<BITS, R, Q8>(acc, c, st, ch, w.off, magic);
        }
        if (sg + 1 == nseg) {                      // the row block's last segment: cherries, sums, stores
            rows_finish<BITS, R, CK, Q8>(acc, cc, cx, bv, w, st, x, lane, Y + n * w.out, rb * T + warp * R);
            cc = cn;
            bv = bv_next;
            bv_next = bv_after;
        }
        __syncthreads();                           // slot k % S is free
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int q = 0; q < 4; ++q) sc[r][q] = scn[r][q];
        rb = rbn;
        sg = sg + 1 == nseg ? 0 : sg + 1;
        if (++sl == S) sl = 0;
    }
    cp_async_wait(0);                              // (the groups past the last tile are empty)
}

__device__ __forceinline__ uint32_t read_code(const uint8_t *row, int64_t c, int bits,
                                              int64_t row_bytes)
{
    const int64_t bit = c * bits, byte = bit >> 3;
    uint32_t v = row[byte];
    if (byte + 1 < row_bytes) v |= (uint32_t)row[byte + 1] << 8;
    return (v >> (bit & 7)) & ((1u << bits) - 1u);
}

// Any layout: a warp per (row, n), code by code.
__global__ void __launch_bounds__(kWarpsGeneric * 32)
qgemv_generic_kernel(float *__restrict__ Y, const float *__restrict__ X, QW w)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t row = (int64_t)blockIdx.x * kWarpsGeneric + warp;
    const int64_t n = blockIdx.y;
    if (row >= w.out) return;
    const float *x = X + n * w.in;
    const uint8_t *cr = w.codes + row * w.row_bytes;
    const __half *sr = w.scales + row * w.ngroups;
    float acc = 0.0f;
    for (int64_t c = lane; c < w.in; c += 32) {
        const float u = (float)read_code(cr, c, w.bits, w.row_bytes);
        const float s = __half2float(sr[w.group ? c / w.group : 0]);
        acc = fmaf((u - w.off) * s, x[c], acc);
    }
    acc += cherries(w, row, x, lane);
    acc = warp_sum(acc);
    if (lane == 0) Y[n * w.out + row] = acc;
}

__global__ void qdequant_kernel(float *__restrict__ Wt, int64_t row0, int64_t nrows, QW w)
{
    const int64_t total = nrows * w.in;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / w.in, c = i - r * w.in, row = row0 + r;
        const float u = (float)read_code(w.codes + row * w.row_bytes, c, w.bits, w.row_bytes);
        const float s = __half2float(w.scales[row * w.ngroups + (w.group ? c / w.group : 0)]);
        Wt[i] = (u - w.off) * s;
    }
}

// One thread per row, cherries in CSR order: deterministic, handles repeats.
__global__ void qcherry_kernel(float *__restrict__ Wt, int64_t row0, int64_t nrows, QW w)
{
    const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= nrows) return;
    const int64_t row = row0 + r;
    const int64_t j0 = max((int64_t)w.rowptr[row], (int64_t)0);
    const int64_t j1 = min((int64_t)w.rowptr[row + 1], w.nnz);
    for (int64_t j = j0; j < j1; ++j) {
        const int64_t col = w.cols[j];
        if (col < w.in) Wt[r * w.in + col] += w.delta[j];
        else Wt[r * w.in] = NAN;   // corrupt cherry column: poison the row, never write out of range
    }
}

QW make_qw(const cqk_qweight *q)
{
    QW w;
    w.codes = q->codes;
    w.scales = (const __half *)q->scales;
    w.rowptr = q->rowptr;
    w.cols = q->cols;
    w.delta = q->delta;
    w.nnz = q->rowptr ? q->nnz : 0;
    w.out = q->out;
    w.in = q->in;
    w.row_bytes = q->row_bytes;
    w.ngroups = q->ngroups;
    w.group = q->group;
    w.bits = q->bits;
    w.off = q->bits <= 4 ? (float)(1 << (q->bits - 1)) - 0.5f : (float)((1 << (q->bits - 1)) - 1);
    w.magic = 0x4B000000u;
    // ceil(2^32 / group): floor(c * gdiv / 2^32) = floor(c / group) whenever
    // c * (gdiv * group - 2^32) < 2^32, which c < 2^32 / group guarantees:
    // the fast kernels, its only users, take in * group <= 2^32 (fast_shape_ok;
    // LLaMA sizes are ~2^21), so every column c < in qualifies
    w.gdiv = q->group >= 32 ? (uint32_t)((((uint64_t)1 << 32) + (uint64_t)q->group - 1) / (uint64_t)q->group) : 0u;
    return w;
}

bool valid(const cqk_qweight *q)
{
    if (!q || !q->codes || !q->scales || q->out < 0 || q->in < 0 || q->group < 0) return false;
    if (q->bits != 2 && q->bits != 3 && q->bits != 4 && q->bits != 8) return false;
    if (q->row_bytes < (q->in * q->bits + 7) / 8) return false;
    const int64_t ng = q->group ? (q->in + q->group - 1) / q->group : 1;
    if (q->ngroups < ng) return false;
    if (q->rowptr && (!q->cols || !q->delta)) return false;
    return true;
}

// exact f32 x: in floats + an f32 sum per 32 columns
size_t fast_smem_in(int64_t in) { return (size_t)(in + in / 32) * sizeof(float); }
size_t fast_smem(const cqk_qweight *q) { return fast_smem_in(q->in); }
// variant 4: int8 x, a float scale per 128 columns, an int sum per 32 (never
// more than fast_smem, so fast_ok covers it)
size_t q8_smem(int64_t in) { return (size_t)in + (size_t)(in / 128 + in / 32) * 4; }

// The ring for tiles of `rows` rows x 4096 columns with x staged as Q8 or
// f32, in the shared memory a block may have (smem_max); false when fewer
// than 2 slots fit (x of more than ~100k columns in f32, ~190k in int8) or
// the layout's conditions fail (then the launcher takes the fast kernel).
// The rows of a tile: kPipeWarps warps x the variant's rows a warp.
constexpr int pipe_rows(int bits) { return kPipeWarps * (bits == 8 ? 1 : 2); }
bool pipe_geo(const QW &w, bool q8, int rows, size_t smem_max, PipeGeo *g)
{
    if (w.in % 128 || w.row_bytes % 16) return false;
    const int64_t slot = (int64_t)rows * 512 * w.bits;
    const int64_t xb = ((int64_t)(q8 ? q8_smem(w.in) : fast_smem_in(w.in)) + 15) & ~(int64_t)15;
    if (xb + 2 * slot > (int64_t)smem_max) return false;
    int64_t S = ((int64_t)smem_max - xb) / slot;
    if (S > 6) S = 6;
    g->stages = (int)S;
    g->slot_bytes = (int)slot;
    g->xbytes = (int)xb;
    g->nseg = (int)(((w.in >> 7) + kPipeSegChunks - 1) / kPipeSegChunks);
    return true;
}

// The layout conditions of the fast kernel (the launcher adds: x fits in
// the device's shared memory).
bool fast_shape_ok(const cqk_qweight *q)
{
    if (q->in <= 0 || q->in % 128 || q->in >= ((int64_t)1 << 31) || (q->group && q->group % 32)) return false;
    if (q->group && q->in * q->group > ((int64_t)1 << 32)) return false;   // QW.gdiv exact (make_qw)
    return q->row_bytes % 16 == 0 && ((uintptr_t)q->codes & 15) == 0;
}

// Kernel variants (rows per warp, next-chunk prefetch, min blocks per SM,
// warps per block): 0 = 4 rows (2 at 8 bits), prefetch, 1 block, 4 warps;
// 1 = half the rows (1 at 8 bits), 2 blocks of 8 warps (x staged once per 16 rows);
// 2 = half the rows, 4 blocks of 4 warps; 3 = 4 rows, 2 blocks of 4 warps;
// 4 = variant 1's shape with int8 activations and dp4a (Q8 above: an
// approximation, like the CPU's default decoding GEMV; its oracle is
// cq_qmm_gemv_q8_ref, not the exact product);
// 5-7 = the streaming kernel (persistent grid, pipelined over row groups):
// 5 = int8 x, half the rows, 2 blocks of 8 warps; 6 = int8 x, 1 row a warp,
// 3 blocks of 8 warps (2 at 8 bits); 7 = exact f32, half the rows, 3 blocks
// of 4 warps (the register budgets at which ptxas does not spill, sm_90);
// 8, 9 = the cp.async pipeline (qgemv_pipe_kernel), one block of 16 warps
// an SM, half the rows a warp (tiles of 32 rows; 16 at 8 bits): 8 = int8 x,
// 9 = exact f32 (where two slots do not fit: variant 4's and 1's kernels).
// One table for the launcher and the emulator test: calls
// f.template run<BITS, ROWS, PF, MINB, WARPS, Q8, KIND>() for variant v
// (KIND: kFast, kStream, kPipe).
enum { kFast = 0, kStream = 1, kPipe = 2 };
template <int BITS, typename F>
auto with_variant(int v, F &f)
{
    constexpr int R = Rows<BITS>::value, H = R > 1 ? R / 2 : 1;
    constexpr int M6 = BITS == 8 ? 2 : 3;   // 8-bit: twice the code registers (no spills at 2)
    switch (v) {
    case 0: return f.template run<BITS, R, true, 1, kWarpsFast, false, kFast>();
    case 1: return f.template run<BITS, H, false, 2, 8, false, kFast>();
    case 3: return f.template run<BITS, R, false, 2, kWarpsFast, false, kFast>();
    case 4: return f.template run<BITS, H, false, 2, 8, true, kFast>();
    case 5: return f.template run<BITS, H, false, 2, 8, true, kStream>();
    case 6: return f.template run<BITS, 1, false, M6, 8, true, kStream>();
    case 7: return f.template run<BITS, H, false, 3, kWarpsFast, false, kStream>();
    case 8: return f.template run<BITS, H, false, 2, kPipeWarps, true, kPipe>();
    case 9: return f.template run<BITS, H, false, 2, kPipeWarps, false, kPipe>();
    default: return f.template run<BITS, H, false, 4, kWarpsFast, false, kFast>();
    }
}

// Launches variant (ROWS, PF, MINB, WARPS, Q8, KIND) of the fast GEMV for
// N rows of X on stream s (tests/test_cuda_emu.cpp launches through it too):
// the fast kernel on one block per WARPS * ROWS rows, the streaming kernel
// on the blocks the device holds at once (SMs x resident blocks, split over
// the N rows of X), the pipelined one on one block an SM (split likewise;
// WARPS x ROWS rows a tile; MINB is that of its fallback, the fast kernel
// with 8 warps), each with its dynamic shared memory allowed first.
struct FastLaunch {
    cudaStream_t s;
    float *Y;
    const float *X;
    int64_t N;
    const QW &w;

    template <int BITS, int ROWS, bool PF, int MINB, int WARPS, bool Q8, int KIND> cudaError_t run()
    {
        static size_t smem_set[64];   // the largest size already allowed, per device
        const size_t sm = Q8 ? q8_smem(w.in) : fast_smem_in(w.in);
        if constexpr (KIND == kPipe) {
            static_assert(WARPS * ROWS == pipe_rows(BITS), "cqk_qgemv_path sizes the ring with pipe_rows");
            PipeGeo g;
            if (!pipe_geo(w, Q8, WARPS * ROWS, smem_optin_bytes(), &g)) return run<BITS, ROWS, PF, MINB, 8, Q8, kFast>();
            auto k = qgemv_pipe_kernel<BITS, ROWS, WARPS, Q8>;
            const size_t bytes = (size_t)g.xbytes + (size_t)g.stages * (size_t)g.slot_bytes;
            cudaError_t e = allow_smem_cached(k, bytes, smem_set);
            if (e != cudaSuccess) return e;
            const int64_t rbs = (w.out + WARPS * ROWS - 1) / (WARPS * ROWS), per_n = (sm_count() + N - 1) / N;
            const dim3 grid((unsigned)(rbs < per_n ? rbs : per_n), (unsigned)N);
            CQK_LAUNCH(grid, WARPS * 32, bytes, s, k, Y, X, w, g);
            return cudaGetLastError();
        } else {
            const int64_t groups = (w.out + ROWS - 1) / ROWS, need = (groups + WARPS - 1) / WARPS;
            if constexpr (KIND == kStream) {
                auto k = qgemv_stream_kernel<BITS, ROWS, MINB, WARPS, Q8>;
                cudaError_t e = allow_smem_cached(k, sm, smem_set);
                if (e != cudaSuccess) return e;
                static uint64_t occ[64];
                const int64_t resident = (int64_t)sm_count() * occupancy_cached(k, WARPS * 32, sm, occ);
                const int64_t per_n = (resident + N - 1) / N;
                const dim3 grid((unsigned)(need < per_n ? need : per_n), (unsigned)N);
                CQK_LAUNCH(grid, WARPS * 32, sm, s, k, Y, X, w);
            } else {
                auto k = qgemv_fast_kernel<BITS, ROWS, PF, MINB, WARPS, Q8>;
                cudaError_t e = allow_smem_cached(k, sm, smem_set);
                if (e != cudaSuccess) return e;
                CQK_LAUNCH(dim3((unsigned)need, (unsigned)N), WARPS * 32, sm, s, k, Y, X, w);
            }
            return cudaGetLastError();
        }
    }
};

}  // namespace
