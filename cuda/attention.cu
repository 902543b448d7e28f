// cherryq CUDA kernels: fused causal grouped-query attention (flash-attention
// style: K/V tiles in shared memory, online softmax, no [T, S] score matrix)
// and its backward, which recomputes P from the saved log-sum-exp.
//
// q [B, T, Hq, D], k/v [B, S, Hkv, D], out [B, T, Hq, D], lse [B, Hq, T].
// Query t sits at absolute position pos0 + t and sees keys s <= pos0 + t.
// Head h reads kv head h / (Hq / Hkv). Scores are scale * q.k.
//
// Forward: one warp per query row, kWarps query rows per block share each
// K/V tile of 32 keys. Lane j scores key j of the tile (dot product over D
// from shared memory, rows padded to D+1 floats: no bank conflicts); the
// warp updates the running max / sum once per tile; lanes then own output
// dims d = lane + 32 i and accumulate p_j v_j[d] with p_j broadcast by shuffle.
//
// Backward (deterministic, no atomics):
//   dsum[t] = dout_t . out_t                                  (attn_dsum_kernel)
//   dq_t = scale * sum_s P_ts (dout_t.v_s - dsum_t) k_s       (warp per query)
//   dv_s = sum_t P_ts dout_t ; dk_s = scale * sum_t dS_ts q_t (warp per key,
//          looping over the query heads of its kv group and query tiles)
//
// Two kernel versions, picked on the host per call: CQ_CUDA_ATTN=1 or 2
// forces one; by default version 2 runs for calls of >= 128 query rows
// (kV2MinRows), version 1 for the rest (decoding); cqk_attn_set_version()
// overrides it, for tests:
//
// Version 1 (below, first): as described above, one query row per warp.
//
// Version 2 (register-tiled, "v2" kernels): a warp takes R rows (queries in
// the forward and dq kernels, keys in the dk/dv kernel) and a block 8 warps =
// 8R rows, so every K/V (or Q/dout) tile staged in shared memory serves 8R
// rows instead of 8. Tiles hold 32 * KPL columns-of-work (keys, or queries in
// dk/dv): lane l owns keys l + 32 i, i < KPL, and computes their dot products
// against the warp's R rows with float4 loads along d: the key rows are
// padded to a stride of 4 * odd floats (conflict-free 128-bit reads), the row
// operand is a broadcast, so each 4 dims cost KPL + R loads for 4 R KPL FMAs.
// Online softmax per row as in version 1 (one rescale per tile; fully masked
// tiles are skipped per warp, a block stops after its last visible key). P
// (or dS) goes to a per-warp shared buffer [key][row]; then lanes own output
// dims d = VW lane + 32 VW c + e (VW = 1, 2 or 4 contiguous floats, NC chunks)
// and accumulate p_rj v_j[d] for all R rows with a broadcast of the R
// p values per key. D <= 128: R = 8, KPL = 2 (64 queries x 64 keys per
// block step); D <= 256: R = 4, KPL = 2. Query blocks run last-first (the
// causal work is largest there). dq: same shape, dS = P (dout.v - dsum) then
// dq += dS k. dk/dv: R keys per warp, lanes own queries of a 32 KPL-query
// tile, looping over the query heads of the kv group; dv += P dout,
// dk += dS (scale q). Same f32 math, different summation order only:
// deterministic, no atomics.
#include <algorithm>
#include <stdlib.h>

#include "common.cuh"

using namespace cqk;

namespace {

constexpr int kWarps = 8;   // query rows (forward, dq) or key rows (dk/dv) per block
constexpr int kTile = 32;   // keys (or queries) per shared-memory tile

struct AttnDims {
    int64_t T, S, Hq, Hkv, D, pos0;
    float scale;
};

__device__ __forceinline__ float dot_sh(const float *a, const float *b, int D)
{
    float d0 = 0.0f, d1 = 0.0f;
    int d = 0;
    for (; d + 1 < D; d += 2) {
        d0 = fmaf(a[d], b[d], d0);
        d1 = fmaf(a[d + 1], b[d + 1], d1);
    }
    if (d < D) d0 = fmaf(a[d], b[d], d0);
    return d0 + d1;
}

template <int DPL>
__global__ void __launch_bounds__(kWarps * 32)
attn_fwd_kernel(float *__restrict__ out, float *__restrict__ lse, const float *__restrict__ q,
                const float *__restrict__ k, const float *__restrict__ v, AttnDims a)
{
    CQK_DYN_SMEM(float, smem);
    const int D = (int)a.D, DP = D + 1;
    float *Ks = smem;                // [kTile][DP]
    float *Vs = Ks + kTile * DP;     // [kTile][D]
    float *Qs = Vs + kTile * D;      // [kWarps][D]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, h = blockIdx.y;
    const int64_t hk = h / (a.Hq / a.Hkv);
    const int64_t t0 = (int64_t)blockIdx.x * kWarps, t = t0 + warp;
    const bool active = t < a.T;
    const int64_t my_last = active ? min(a.S - 1, a.pos0 + t) : -1;
    const int64_t blk_last = min(a.S - 1, a.pos0 + min(a.T - 1, t0 + kWarps - 1));

    float *qs = Qs + warp * D;
    if (active) {
        const float *qr = q + ((b * a.T + t) * a.Hq + h) * a.D;
        for (int d = lane; d < D; d += 32) qs[d] = qr[d] * a.scale;
    }
    float m = -INFINITY, l = 0.0f, acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[i] = 0.0f;

    for (int64_t kb = 0; kb <= blk_last; kb += kTile) {
        __syncthreads();
        const int rows = (int)min((int64_t)kTile, blk_last - kb + 1);
        for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
            const int r = idx / D, d = idx - r * D;
            const int64_t g = ((b * a.S + kb + r) * a.Hkv + hk) * a.D + d;
            Ks[r * DP + d] = k[g];
            Vs[r * D + d] = v[g];
        }
        __syncthreads();
        if (kb > my_last) continue;   // warp-uniform; later tiles are masked too
        const int nk = (int)min((int64_t)kTile, my_last - kb + 1);
        float sc = -INFINITY;
        if (lane < nk) sc = dot_sh(qs, Ks + lane * DP, D);
        const float mn = fmaxf(m, warp_max(sc));   // finite: nk >= 1
        const float p = lane < nk ? expf(sc - mn) : 0.0f;
        const float corr = expf(m - mn);             // 0 on the first tile
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < DPL; ++i) acc[i] *= corr;
        for (int j = 0; j < nk; ++j) {
            const float pj = __shfl_sync(CQK_FULL_MASK, p, j);
            const float *vr = Vs + j * D;
#pragma unroll
            for (int i = 0; i < DPL; ++i) {
                const int d = lane + 32 * i;
                if (d < D) acc[i] = fmaf(pj, vr[d], acc[i]);
            }
        }
        m = mn;
    }
    if (!active) return;
    const float inv = 1.0f / l;
    float *orow = out + ((b * a.T + t) * a.Hq + h) * a.D;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        if (d < D) orow[d] = acc[i] * inv;
    }
    if (lse && lane == 0) lse[(b * a.Hq + h) * a.T + t] = m + logf(l);
}

// dsum[b, h, t] = dout . out, one warp per row.
__global__ void attn_dsum_kernel(float *dsum, const float *out, const float *dout, int64_t B,
                                 AttnDims a)
{
    const int64_t rowsN = B * a.T * a.Hq;
    const int64_t row = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= rowsN) return;   // warp-uniform
    const float *o = out + row * a.D, *g = dout + row * a.D;
    float acc = 0.0f;
    for (int64_t d = lane; d < a.D; d += 32) acc = fmaf(o[d], g[d], acc);
    acc = warp_sum(acc);
    if (lane == 0) {
        // row = (b * T + t) * Hq + h  ->  dsum index (b * Hq + h) * T + t
        const int64_t h = row % a.Hq, bt = row / a.Hq, t = bt % a.T, b = bt / a.T;
        dsum[(b * a.Hq + h) * a.T + t] = acc;
    }
}

template <int DPL>
__global__ void __launch_bounds__(kWarps * 32)
attn_bwd_dq_kernel(float *__restrict__ dq, const float *__restrict__ q,
                   const float *__restrict__ k, const float *__restrict__ v,
                   const float *__restrict__ lse, const float *__restrict__ dsum,
                   const float *__restrict__ dout, AttnDims a)
{
    CQK_DYN_SMEM(float, smem);
    const int D = (int)a.D, DP = D + 1;
    float *Ks = smem;                 // [kTile][DP]
    float *Vs = Ks + kTile * DP;      // [kTile][DP]
    float *Qs = Vs + kTile * DP;      // [kWarps][D]
    float *Gs = Qs + kWarps * D;      // [kWarps][D]  (dout rows)
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, h = blockIdx.y;
    const int64_t hk = h / (a.Hq / a.Hkv);
    const int64_t t0 = (int64_t)blockIdx.x * kWarps, t = t0 + warp;
    const bool active = t < a.T;
    const int64_t my_last = active ? min(a.S - 1, a.pos0 + t) : -1;
    const int64_t blk_last = min(a.S - 1, a.pos0 + min(a.T - 1, t0 + kWarps - 1));

    float *qs = Qs + warp * D, *gs = Gs + warp * D;
    float lse_t = 0.0f, dsum_t = 0.0f;
    if (active) {
        const int64_t ro = ((b * a.T + t) * a.Hq + h) * a.D;
        for (int d = lane; d < D; d += 32) {
            qs[d] = q[ro + d] * a.scale;
            gs[d] = dout[ro + d];
        }
        lse_t = lse[(b * a.Hq + h) * a.T + t];
        dsum_t = dsum[(b * a.Hq + h) * a.T + t];
    }
    float acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[i] = 0.0f;

    for (int64_t kb = 0; kb <= blk_last; kb += kTile) {
        __syncthreads();
        const int rows = (int)min((int64_t)kTile, blk_last - kb + 1);
        for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
            const int r = idx / D, d = idx - r * D;
            const int64_t g = ((b * a.S + kb + r) * a.Hkv + hk) * a.D + d;
            Ks[r * DP + d] = k[g];
            Vs[r * DP + d] = v[g];
        }
        __syncthreads();
        if (kb > my_last) continue;
        const int nk = (int)min((int64_t)kTile, my_last - kb + 1);
        float ds = 0.0f;
        if (lane < nk) {
            const float p = expf(dot_sh(qs, Ks + lane * DP, D) - lse_t);
            const float dp = dot_sh(gs, Vs + lane * DP, D);
            ds = p * (dp - dsum_t);
        }
        for (int j = 0; j < nk; ++j) {
            const float dsj = __shfl_sync(CQK_FULL_MASK, ds, j);
            const float *kr = Ks + j * DP;
#pragma unroll
            for (int i = 0; i < DPL; ++i) {
                const int d = lane + 32 * i;
                if (d < D) acc[i] = fmaf(dsj, kr[d], acc[i]);
            }
        }
    }
    if (!active) return;
    float *r = dq + ((b * a.T + t) * a.Hq + h) * a.D;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        if (d < D) r[d] = acc[i] * a.scale;
    }
}

template <int DPL>
__global__ void __launch_bounds__(kWarps * 32)
attn_bwd_dkv_kernel(float *__restrict__ dk, float *__restrict__ dv, const float *__restrict__ q,
                    const float *__restrict__ k, const float *__restrict__ v,
                    const float *__restrict__ lse, const float *__restrict__ dsum,
                    const float *__restrict__ dout, AttnDims a)
{
    CQK_DYN_SMEM(float, smem);
    const int D = (int)a.D, DP = D + 1;
    float *Qt = smem;                  // [kTile][DP]  scale * q rows
    float *Gt = Qt + kTile * DP;       // [kTile][DP]  dout rows
    float *Kw = Gt + kTile * DP;       // [kWarps][D]
    float *Vw = Kw + kWarps * D;       // [kWarps][D]
    float *Lt = Vw + kWarps * D;       // [kTile] lse
    float *St = Lt + kTile;            // [kTile] dsum
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, hk = blockIdx.y;
    const int64_t group = a.Hq / a.Hkv;
    const int64_t s0 = (int64_t)blockIdx.x * kWarps, s = s0 + warp;
    const bool active = s < a.S;

    float *ks = Kw + warp * D, *vs = Vw + warp * D;
    if (active) {
        const int64_t ro = ((b * a.S + s) * a.Hkv + hk) * a.D;
        for (int d = lane; d < D; d += 32) {
            ks[d] = k[ro + d];
            vs[d] = v[ro + d];
        }
    }
    float ak[DPL], av[DPL];
#pragma unroll
    for (int i = 0; i < DPL; ++i) ak[i] = av[i] = 0.0f;

    // Queries that see key s satisfy pos0 + t >= s.
    const int64_t tfirst = max((int64_t)0, s0 - a.pos0);
    for (int64_t hh = 0; hh < group; ++hh) {
        const int64_t h = hk * group + hh;
        for (int64_t tq = tfirst; tq < a.T; tq += kTile) {
            __syncthreads();
            const int nq = (int)min((int64_t)kTile, a.T - tq);
            for (int idx = threadIdx.x; idx < nq * D; idx += blockDim.x) {
                const int r = idx / D, d = idx - r * D;
                const int64_t g = ((b * a.T + tq + r) * a.Hq + h) * a.D + d;
                Qt[r * DP + d] = q[g] * a.scale;
                Gt[r * DP + d] = dout[g];
            }
            if (threadIdx.x < nq) {
                Lt[threadIdx.x] = lse[(b * a.Hq + h) * a.T + tq + threadIdx.x];
                St[threadIdx.x] = dsum[(b * a.Hq + h) * a.T + tq + threadIdx.x];
            }
            __syncthreads();
            if (!active) continue;
            const bool valid = lane < nq && a.pos0 + tq + lane >= s;
            float p = 0.0f, ds = 0.0f;
            if (valid) {
                p = expf(dot_sh(Qt + lane * DP, ks, D) - Lt[lane]);
                const float dp = dot_sh(Gt + lane * DP, vs, D);
                ds = p * (dp - St[lane]);
            }
            for (int j = 0; j < nq; ++j) {
                const float pj = __shfl_sync(CQK_FULL_MASK, p, j);
                const float dsj = __shfl_sync(CQK_FULL_MASK, ds, j);
                const float *qr = Qt + j * DP, *gr = Gt + j * DP;
#pragma unroll
                for (int i = 0; i < DPL; ++i) {
                    const int d = lane + 32 * i;
                    if (d < D) {
                        av[i] = fmaf(pj, gr[d], av[i]);
                        ak[i] = fmaf(dsj, qr[d], ak[i]);   // Qt already holds scale * q
                    }
                }
            }
        }
    }
    if (!active) return;
    const int64_t ro = ((b * a.S + s) * a.Hkv + hk) * a.D;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        if (d < D) {
            dk[ro + d] = ak[i];
            dv[ro + d] = av[i];
        }
    }
}

// ---------------------------------------------------------------- version 2
// Register-tiled kernels (see the top of the file). Template parameters:
// R rows per warp, KPL keys (dk/dv: queries) per lane in a tile of 32 KPL,
// output dims per lane VW (contiguous) x NC (chunks of 32 VW).

constexpr int kW2 = 8;   // warps per block

// Shared row strides: DP4 = D rounded up to 4 (rows read whole by one lane
// are broadcast or contiguous); KS = DP4 with DP4 / 4 made odd, for rows that
// different lanes read at the same column (lane l reads row l: 128-bit loads
// of 8 consecutive rows hit 8 distinct bank quads).
__host__ __device__ __forceinline__ int dp4_of(int D) { return (D + 3) & ~3; }
__host__ __device__ __forceinline__ int ks_of(int D)
{
    const int dp = dp4_of(D);
    return ((dp >> 2) & 1) ? dp : dp + 4;
}

// Stage rows [0, nrows) of a global matrix (row r at g + r * ld, D floats)
// into sm [NR][SS] times mul; columns D..SS-1 of those rows and rows
// nrows..NR-1 are zero (padding never holds NaN). Whole block.
template <int NR>
__device__ __forceinline__ void stage_rows(float *sm, int SS, const float *__restrict__ g,
                                           int64_t ld, int nrows, int D, float mul)
{
    const int c4 = dp4_of(D) >> 2;
    const bool vec = (D & 3) == 0 && ((uintptr_t)g & 15) == 0;
    for (int idx = threadIdx.x; idx < NR * c4; idx += blockDim.x) {
        const int r = idx / c4, c = idx - r * c4;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < nrows) {
            const float *p = g + (int64_t)r * ld + 4 * c;
            if (vec) {
                x = __ldg(reinterpret_cast<const float4 *>(p));
            } else {
                const int d = 4 * c;
                x.x = __ldg(p);
                if (d + 1 < D) x.y = __ldg(p + 1);
                if (d + 2 < D) x.z = __ldg(p + 2);
                if (d + 3 < D) x.w = __ldg(p + 3);
            }
            x.x *= mul;
            x.y *= mul;
            x.z *= mul;
            x.w *= mul;
        }
        *reinterpret_cast<float4 *>(sm + r * SS + 4 * c) = x;
    }
    // columns DP..SS-1 (the KS padding) are never read
}

__device__ __forceinline__ float4 lds4(const float *p) { return *reinterpret_cast<const float4 *>(p); }

__device__ __forceinline__ float dot4(float4 a, float4 b, float acc)
{
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
    acc = fmaf(a.z, b.z, acc);
    return fmaf(a.w, b.w, acc);
}

// VW contiguous floats from shared memory (16/8/4-byte aligned).
// (d0 = the first dim: a vector past the padded row DP is zero, never read.)
template <int VW>
__device__ __forceinline__ void ldsv(const float *p, float *o, int d0, int DP)
{
    if (d0 >= DP) {
#pragma unroll
        for (int e = 0; e < VW; ++e) o[e] = 0.0f;
    } else if constexpr (VW == 4) {
        const float4 x = lds4(p);
        o[0] = x.x, o[1] = x.y, o[2] = x.z, o[3] = x.w;
    } else if constexpr (VW == 2) {
        const float2 x = *reinterpret_cast<const float2 *>(p);
        o[0] = x.x, o[1] = x.y;
    } else {
        o[0] = *p;
    }
}

// The R values of one key of a per-warp [key][R] buffer (broadcast loads).
template <int R>
__device__ __forceinline__ void ld_row(const float *p, float *o)
{
    if constexpr (R % 4 == 0) {
#pragma unroll
        for (int r = 0; r < R; r += 4) {
            const float4 x = lds4(p + r);
            o[r] = x.x, o[r + 1] = x.y, o[r + 2] = x.z, o[r + 3] = x.w;
        }
    } else {
#pragma unroll
        for (int r = 0; r < R; ++r) o[r] = p[r];
    }
}

template <int R, int KPL>
__device__ __forceinline__ void st_row(float *p, const float (&x)[R][KPL], int i)
{
    if constexpr (R % 4 == 0) {
#pragma unroll
        for (int r = 0; r < R; r += 4)
            *reinterpret_cast<float4 *>(p + r) = make_float4(x[r][i], x[r + 1][i], x[r + 2][i], x[r + 3][i]);
    } else {
#pragma unroll
        for (int r = 0; r < R; ++r) p[r] = x[r][i];
    }
}

// Store the VW NC dims of one row a lane owns (d < D only).
template <int VW, int NC>
__device__ __forceinline__ void store_dims(float *__restrict__ row, const float *x, int lane, int D,
                                           float mul)
{
#pragma unroll
    for (int c = 0; c < NC; ++c)
#pragma unroll
        for (int e = 0; e < VW; ++e) {
            const int d = VW * lane + 32 * VW * c + e;
            if (d < D) row[d] = x[c * VW + e] * mul;
        }
}

template <int R, int KPL>
struct Fwd2Smem {
    static size_t bytes(int D)
    {
        return ((size_t)kW2 * R * dp4_of(D) + (size_t)32 * KPL * (ks_of(D) + dp4_of(D)) +
                (size_t)kW2 * 32 * KPL * R) * 4;
    }
};

template <int R, int KPL, int VW, int NC>
__global__ void __launch_bounds__(kW2 * 32)
attn_fwd_v2_kernel(float *__restrict__ out, float *__restrict__ lse, const float *__restrict__ q,
                   const float *__restrict__ k, const float *__restrict__ v, AttnDims a)
{
    constexpr int BQ = kW2 * R, BK = 32 * KPL, NO = VW * NC;
    CQK_DYN_SMEM(float4, smem4);
    const int D = (int)a.D, DP = dp4_of(D), KS = ks_of(D);
    float *Qs = reinterpret_cast<float *>(smem4);   // [BQ][DP]   scale * q
    float *Ks = Qs + BQ * DP;                          // [BK][KS]
    float *Vs = Ks + BK * KS;                          // [BK][DP]
    float *Ps = Vs + BK * DP;                          // [kW2][BK][R]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, h = blockIdx.y;
    const int64_t hk = h / (a.Hq / a.Hkv);
    const int64_t t0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * BQ;   // heavy blocks first
    const int nq = (int)min((int64_t)BQ, a.T - t0);
    const int64_t blk_last = min(a.S - 1, a.pos0 + t0 + nq - 1);
    const int64_t tw = t0 + warp * R;
    const int64_t warp_last = tw < a.T ? min(a.S - 1, a.pos0 + min(a.T - 1, tw + R - 1)) : -1;
    // last key of each row; rows past T repeat row T-1 (finite math, never stored)
    int64_t lim[R];
#pragma unroll
    for (int r = 0; r < R; ++r) lim[r] = min(a.S - 1, a.pos0 + min(a.T - 1, tw + r));

    stage_rows<BQ>(Qs, DP, q + ((b * a.T + t0) * a.Hq + h) * a.D, a.Hq * a.D, nq, D, a.scale);

    float m[R], l[R], o[R][NO];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < NO; ++i) o[r][i] = 0.0f;
    }
    const float *Qw = Qs + warp * R * DP;
    float *Pw = Ps + warp * BK * R;

    for (int64_t kb = 0; kb <= blk_last; kb += BK) {
        __syncthreads();
        const int nk = (int)min((int64_t)BK, blk_last - kb + 1);
        const int64_t g0 = ((b * a.S + kb) * a.Hkv + hk) * a.D;
        stage_rows<BK>(Ks, KS, k + g0, a.Hkv * a.D, nk, D, 1.0f);
        stage_rows<BK>(Vs, DP, v + g0, a.Hkv * a.D, nk, D, 1.0f);
        __syncthreads();
        if (kb > warp_last) continue;   // warp-uniform: every row of the warp is past this tile

        float sc[R][KPL];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int i = 0; i < KPL; ++i) sc[r][i] = 0.0f;
        for (int c = 0; c < DP; c += 4) {
            float4 kf[KPL];
#pragma unroll
            for (int i = 0; i < KPL; ++i) kf[i] = lds4(Ks + (lane + 32 * i) * KS + c);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float4 qf = lds4(Qw + r * DP + c);
#pragma unroll
                for (int i = 0; i < KPL; ++i) sc[r][i] = dot4(qf, kf[i], sc[r][i]);
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float mx = -INFINITY;
#pragma unroll
            for (int i = 0; i < KPL; ++i) {
                if (kb + lane + 32 * i > lim[r]) sc[r][i] = -INFINITY;
                mx = fmaxf(mx, sc[r][i]);
            }
            // finite: every row saw key 0 in the first tile
            const float mn = fmaxf(m[r], warp_max(mx));
            float ps = 0.0f;
#pragma unroll
            for (int i = 0; i < KPL; ++i) {
                sc[r][i] = expf(sc[r][i] - mn);   // exp(-inf) = 0 for masked keys
                ps += sc[r][i];
            }
            const float corr = expf(m[r] - mn);   // 0 on the first tile
            l[r] = l[r] * corr + warp_sum(ps);
#pragma unroll
            for (int i = 0; i < NO; ++i) o[r][i] *= corr;
            m[r] = mn;
        }
#pragma unroll
        for (int i = 0; i < KPL; ++i) st_row<R, KPL>(Pw + (lane + 32 * i) * R, sc, i);
        __syncwarp();
        const int nkw = (int)min((int64_t)BK, warp_last - kb + 1);
#pragma unroll 2
        for (int j = 0; j < nkw; ++j) {
            float p[R];
            ld_row<R>(Pw + j * R, p);
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                float vv[VW];
                ldsv<VW>(Vs + j * DP + VW * lane + 32 * VW * c, vv, VW * lane + 32 * VW * c, DP);
#pragma unroll
                for (int r = 0; r < R; ++r)
#pragma unroll
                    for (int e = 0; e < VW; ++e) o[r][c * VW + e] = fmaf(p[r], vv[e], o[r][c * VW + e]);
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t t = tw + r;
        if (t >= a.T) break;
        store_dims<VW, NC>(out + ((b * a.T + t) * a.Hq + h) * a.D, o[r], lane, D, 1.0f / l[r]);
        if (lse && lane == 0) lse[(b * a.Hq + h) * a.T + t] = m[r] + logf(l[r]);
    }
}

template <int R, int KPL>
struct Dq2Smem {
    static size_t bytes(int D)
    {
        return ((size_t)2 * kW2 * R * dp4_of(D) + (size_t)2 * 32 * KPL * ks_of(D) +
                (size_t)kW2 * 32 * KPL * R) * 4;
    }
};

template <int R, int KPL, int VW, int NC>
__global__ void __launch_bounds__(kW2 * 32)
attn_bwd_dq_v2_kernel(float *__restrict__ dq, const float *__restrict__ q,
                      const float *__restrict__ k, const float *__restrict__ v,
                      const float *__restrict__ lse, const float *__restrict__ dsum,
                      const float *__restrict__ dout, AttnDims a)
{
    constexpr int BQ = kW2 * R, BK = 32 * KPL, NO = VW * NC;
    CQK_DYN_SMEM(float4, smem4);
    const int D = (int)a.D, DP = dp4_of(D), KS = ks_of(D);
    float *Qs = reinterpret_cast<float *>(smem4);   // [BQ][DP]   scale * q
    float *Gs = Qs + BQ * DP;                          // [BQ][DP]   dout
    float *Ks = Gs + BQ * DP;                          // [BK][KS]
    float *Vs = Ks + BK * KS;                          // [BK][KS]
    float *Ps = Vs + BK * KS;                          // [kW2][BK][R]  dS
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, h = blockIdx.y;
    const int64_t hk = h / (a.Hq / a.Hkv);
    const int64_t t0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * BQ;
    const int nq = (int)min((int64_t)BQ, a.T - t0);
    const int64_t blk_last = min(a.S - 1, a.pos0 + t0 + nq - 1);
    const int64_t tw = t0 + warp * R;
    const int64_t warp_last = tw < a.T ? min(a.S - 1, a.pos0 + min(a.T - 1, tw + R - 1)) : -1;
    int64_t lim[R];
    float lse_r[R], dsum_r[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t t = min(a.T - 1, tw + r);
        lim[r] = min(a.S - 1, a.pos0 + t);
        lse_r[r] = lse[(b * a.Hq + h) * a.T + t];
        dsum_r[r] = dsum[(b * a.Hq + h) * a.T + t];
    }
    const int64_t ro = ((b * a.T + t0) * a.Hq + h) * a.D;
    stage_rows<BQ>(Qs, DP, q + ro, a.Hq * a.D, nq, D, a.scale);
    stage_rows<BQ>(Gs, DP, dout + ro, a.Hq * a.D, nq, D, 1.0f);

    float acc[R][NO];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int i = 0; i < NO; ++i) acc[r][i] = 0.0f;
    const float *Qw = Qs + warp * R * DP, *Gw = Gs + warp * R * DP;
    float *Pw = Ps + warp * BK * R;

    for (int64_t kb = 0; kb <= blk_last; kb += BK) {
        __syncthreads();
        const int nk = (int)min((int64_t)BK, blk_last - kb + 1);
        const int64_t g0 = ((b * a.S + kb) * a.Hkv + hk) * a.D;
        stage_rows<BK>(Ks, KS, k + g0, a.Hkv * a.D, nk, D, 1.0f);
        stage_rows<BK>(Vs, KS, v + g0, a.Hkv * a.D, nk, D, 1.0f);
        __syncthreads();
        if (kb > warp_last) continue;

        float sc[R][KPL], dp[R][KPL];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int i = 0; i < KPL; ++i) sc[r][i] = dp[r][i] = 0.0f;
        for (int c = 0; c < DP; c += 4) {
            float4 kf[KPL], vf[KPL];
#pragma unroll
            for (int i = 0; i < KPL; ++i) {
                kf[i] = lds4(Ks + (lane + 32 * i) * KS + c);
                vf[i] = lds4(Vs + (lane + 32 * i) * KS + c);
            }
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float4 qf = lds4(Qw + r * DP + c), gf = lds4(Gw + r * DP + c);
#pragma unroll
                for (int i = 0; i < KPL; ++i) {
                    sc[r][i] = dot4(qf, kf[i], sc[r][i]);
                    dp[r][i] = dot4(gf, vf[i], dp[r][i]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int i = 0; i < KPL; ++i)
                sc[r][i] = kb + lane + 32 * i <= lim[r]
                               ? expf(sc[r][i] - lse_r[r]) * (dp[r][i] - dsum_r[r])
                               : 0.0f;
#pragma unroll
        for (int i = 0; i < KPL; ++i) st_row<R, KPL>(Pw + (lane + 32 * i) * R, sc, i);
        __syncwarp();
        const int nkw = (int)min((int64_t)BK, warp_last - kb + 1);
#pragma unroll 2
        for (int j = 0; j < nkw; ++j) {
            float ds[R];
            ld_row<R>(Pw + j * R, ds);
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                float kv[VW];
                ldsv<VW>(Ks + j * KS + VW * lane + 32 * VW * c, kv, VW * lane + 32 * VW * c, DP);
#pragma unroll
                for (int r = 0; r < R; ++r)
#pragma unroll
                    for (int e = 0; e < VW; ++e)
                        acc[r][c * VW + e] = fmaf(ds[r], kv[e], acc[r][c * VW + e]);
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t t = tw + r;
        if (t >= a.T) break;
        store_dims<VW, NC>(dq + ((b * a.T + t) * a.Hq + h) * a.D, acc[r], lane, D, a.scale);
    }
}

template <int R, int KPL>
struct Dkv2Smem {
    static size_t bytes(int D)
    {
        return ((size_t)2 * kW2 * R * dp4_of(D) + (size_t)2 * 32 * KPL * ks_of(D) +
                (size_t)2 * 32 * KPL + (size_t)2 * kW2 * 32 * KPL * R) * 4;
    }
};

template <int R, int KPL, int VW, int NC>
__global__ void __launch_bounds__(kW2 * 32)
attn_bwd_dkv_v2_kernel(float *__restrict__ dk, float *__restrict__ dv, const float *__restrict__ q,
                       const float *__restrict__ k, const float *__restrict__ v,
                       const float *__restrict__ lse, const float *__restrict__ dsum,
                       const float *__restrict__ dout, AttnDims a)
{
    constexpr int BS = kW2 * R, BT = 32 * KPL, NO = VW * NC;
    CQK_DYN_SMEM(float4, smem4);
    const int D = (int)a.D, DP = dp4_of(D), KS = ks_of(D);
    float *Kb = reinterpret_cast<float *>(smem4);   // [BS][DP]   the block's keys
    float *Vb = Kb + BS * DP;                          // [BS][DP]
    float *Qt = Vb + BS * DP;                          // [BT][KS]   scale * q tile
    float *Gt = Qt + BT * KS;                          // [BT][KS]   dout tile
    float *Lt = Gt + BT * KS;                          // [BT] lse
    float *St = Lt + BT;                               // [BT] dsum
    float *Ps = St + BT;                               // [kW2][BT][R]  P
    float *Ds = Ps + kW2 * BT * R;                     // [kW2][BT][R]  dS
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t b = blockIdx.z, hk = blockIdx.y;
    const int64_t group = a.Hq / a.Hkv;
    const int64_t s0 = (int64_t)blockIdx.x * BS;   // small s0 (most queries) first
    const int ns = (int)min((int64_t)BS, a.S - s0);
    const int64_t sw = s0 + warp * R;
    const bool active = sw < a.S;

    const int64_t ko = ((b * a.S + s0) * a.Hkv + hk) * a.D;
    stage_rows<BS>(Kb, DP, k + ko, a.Hkv * a.D, ns, D, 1.0f);
    stage_rows<BS>(Vb, DP, v + ko, a.Hkv * a.D, ns, D, 1.0f);

    float ak[R][NO], av[R][NO];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int i = 0; i < NO; ++i) ak[r][i] = av[r][i] = 0.0f;
    const float *Kw = Kb + warp * R * DP, *Vw = Vb + warp * R * DP;
    float *Pw = Ps + warp * BT * R, *Dw = Ds + warp * BT * R;

    // Queries that see key s satisfy pos0 + t >= s.
    const int64_t tfirst = max((int64_t)0, s0 - a.pos0);
    for (int64_t hh = 0; hh < group; ++hh) {
        const int64_t h = hk * group + hh;
        for (int64_t tq = tfirst; tq < a.T; tq += BT) {
            __syncthreads();
            const int nq = (int)min((int64_t)BT, a.T - tq);
            const int64_t go = ((b * a.T + tq) * a.Hq + h) * a.D;
            stage_rows<BT>(Qt, KS, q + go, a.Hq * a.D, nq, D, a.scale);
            stage_rows<BT>(Gt, KS, dout + go, a.Hq * a.D, nq, D, 1.0f);
            if (threadIdx.x < BT) {
                const bool in = (int)threadIdx.x < nq;
                Lt[threadIdx.x] = in ? lse[(b * a.Hq + h) * a.T + tq + threadIdx.x] : 0.0f;
                St[threadIdx.x] = in ? dsum[(b * a.Hq + h) * a.T + tq + threadIdx.x] : 0.0f;
            }
            __syncthreads();
            // warp-uniform: no key of the warp, or no query of the tile sees its first key
            if (!active || a.pos0 + tq + nq - 1 < sw) continue;

            float sc[R][KPL], dp[R][KPL];
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int i = 0; i < KPL; ++i) sc[r][i] = dp[r][i] = 0.0f;
            for (int c = 0; c < DP; c += 4) {
                float4 qf[KPL], gf[KPL];
#pragma unroll
                for (int i = 0; i < KPL; ++i) {
                    qf[i] = lds4(Qt + (lane + 32 * i) * KS + c);
                    gf[i] = lds4(Gt + (lane + 32 * i) * KS + c);
                }
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const float4 kf = lds4(Kw + r * DP + c), vf = lds4(Vw + r * DP + c);
#pragma unroll
                    for (int i = 0; i < KPL; ++i) {
                        sc[r][i] = dot4(qf[i], kf, sc[r][i]);
                        dp[r][i] = dot4(gf[i], vf, dp[r][i]);
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < KPL; ++i) {
                const int j = lane + 32 * i;
                const float lt = Lt[j], st = St[j];
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const bool valid = j < nq && a.pos0 + tq + j >= sw + r;
                    const float p = valid ? expf(sc[r][i] - lt) : 0.0f;
                    sc[r][i] = p;
                    dp[r][i] = p * (dp[r][i] - st);
                }
            }
#pragma unroll
            for (int i = 0; i < KPL; ++i) {
                st_row<R, KPL>(Pw + (lane + 32 * i) * R, sc, i);
                st_row<R, KPL>(Dw + (lane + 32 * i) * R, dp, i);
            }
            __syncwarp();
            // queries before tq + jfirst see none of the warp's keys
            const int jfirst = (int)max((int64_t)0, sw - a.pos0 - tq);
#pragma unroll 2
            for (int j = jfirst; j < nq; ++j) {
                float p[R], ds[R];
                ld_row<R>(Pw + j * R, p);
                ld_row<R>(Dw + j * R, ds);
#pragma unroll
                for (int c = 0; c < NC; ++c) {
                    float gv[VW], qv[VW];
                    ldsv<VW>(Gt + j * KS + VW * lane + 32 * VW * c, gv, VW * lane + 32 * VW * c, DP);
                    ldsv<VW>(Qt + j * KS + VW * lane + 32 * VW * c, qv, VW * lane + 32 * VW * c, DP);
#pragma unroll
                    for (int r = 0; r < R; ++r)
#pragma unroll
                        for (int e = 0; e < VW; ++e) {
                            av[r][c * VW + e] = fmaf(p[r], gv[e], av[r][c * VW + e]);
                            ak[r][c * VW + e] = fmaf(ds[r], qv[e], ak[r][c * VW + e]);
                        }
                }
            }
            __syncwarp();
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t s = sw + r;
        if (s >= a.S) break;
        const int64_t o = ((b * a.S + s) * a.Hkv + hk) * a.D;
        store_dims<VW, NC>(dk + o, ak[r], lane, D, 1.0f);
        store_dims<VW, NC>(dv + o, av[r], lane, D, 1.0f);
    }
}

size_t fwd_smem(int64_t D) { return (size_t)(kTile * (D + 1) + kTile * D + kWarps * D) * 4; }
size_t bwd_smem(int64_t D) { return (size_t)(2 * kTile * (D + 1) + 2 * kWarps * D) * 4; }
size_t dkv_smem(int64_t D) { return (size_t)(2 * kTile * (D + 1) + 2 * kWarps * D + 2 * kTile) * 4; }

// Raise the dynamic shared memory limit of a kernel when it needs > 48 KiB.
template <typename K>
cudaError_t allow_smem(K kernel, size_t bytes)
{
    if (bytes <= 48 * 1024) return cudaSuccess;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

bool dims_ok(int64_t B, const AttnDims &a)
{
    if (a.D <= 0 || a.D > CQK_ATTN_MAX_D || a.Hkv <= 0 || a.Hq % a.Hkv) return false;
    if (B > 65535 || a.Hq > 65535 || a.pos0 < 0) return false;
    if ((a.T + kWarps - 1) / kWarps > 0x7fffffff || (a.S + kWarps - 1) / kWarps > 0x7fffffff)
        return false;
    return true;
}

template <int DPL>
cudaError_t run_fwd(cudaStream_t s, float *out, float *lse, const float *q, const float *k,
                    const float *v, int64_t B, const AttnDims &a)
{
    const size_t sm = fwd_smem(a.D);
    cudaError_t e = allow_smem(attn_fwd_kernel<DPL>, sm);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((a.T + kWarps - 1) / kWarps), (unsigned)a.Hq, (unsigned)B);
    CQK_LAUNCH(grid, kWarps * 32, sm, s, attn_fwd_kernel<DPL>, out, lse, q, k, v, a);
    return cudaGetLastError();
}

template <int DPL>
cudaError_t run_bwd(cudaStream_t s, float *dq, float *dk, float *dv, const float *q,
                    const float *k, const float *v, const float *lse, const float *dsum,
                    const float *dout, int64_t B, const AttnDims &a)
{
    const size_t sq = bwd_smem(a.D), skv = dkv_smem(a.D);
    cudaError_t e = allow_smem(attn_bwd_dq_kernel<DPL>, sq);
    if (e == cudaSuccess) e = allow_smem(attn_bwd_dkv_kernel<DPL>, skv);
    if (e != cudaSuccess) return e;
    dim3 gq((unsigned)((a.T + kWarps - 1) / kWarps), (unsigned)a.Hq, (unsigned)B);
    CQK_LAUNCH(gq, kWarps * 32, sq, s, attn_bwd_dq_kernel<DPL>, dq, q, k, v, lse, dsum, dout, a);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    dim3 gkv((unsigned)((a.S + kWarps - 1) / kWarps), (unsigned)a.Hkv, (unsigned)B);
    CQK_LAUNCH(gkv, kWarps * 32, skv, s, attn_bwd_dkv_kernel<DPL>, dk, dv, q, k, v, lse, dsum, dout, a);
    return cudaGetLastError();
}

// ------------------------------------------------------- version selection
// 1 or 2: always that version; 0 (auto, the default): version 2 when a
// call has at least kV2MinRows query rows, else version 1. Measured on an
// H200: at B4 T=S=2048 H16 D128 version 2 is 3.6x (forward) and 2.7x
// (backward) faster; below ~100 rows its 64-row tiles are mostly empty and
// it is 1.0-1.5x slower (decoding, T = 1, always takes version 1).
constexpr int64_t kV2MinRows = 128;
int g_attn_version = -1;   // -1: not read yet

int attn_version()
{
    if (g_attn_version < 0) {
        const char *e = getenv("CQ_CUDA_ATTN");
        g_attn_version = (e && (e[0] == '1' || e[0] == '2') && !e[1]) ? e[0] - '0' : 0;
    }
    return g_attn_version;
}


template <int R, int KPL, int VW, int NC>
cudaError_t run_fwd2(cudaStream_t s, float *out, float *lse, const float *q, const float *k,
                     const float *v, int64_t B, const AttnDims &a)
{
    static size_t set[64];
    const size_t sm = Fwd2Smem<R, KPL>::bytes((int)a.D);
    cudaError_t e = allow_smem_cached(attn_fwd_v2_kernel<R, KPL, VW, NC>, sm, set);
    if (e != cudaSuccess) return e;
    constexpr int BQ = kW2 * R;
    dim3 grid((unsigned)((a.T + BQ - 1) / BQ), (unsigned)a.Hq, (unsigned)B);
    CQK_LAUNCH(grid, kW2 * 32, sm, s, attn_fwd_v2_kernel<R, KPL, VW, NC>, out, lse, q, k, v, a);
    return cudaGetLastError();
}

template <int R, int KPL, int VW, int NC>
cudaError_t run_bwd2(cudaStream_t s, float *dq, float *dk, float *dv, const float *q,
                     const float *k, const float *v, const float *lse, const float *dsum,
                     const float *dout, int64_t B, const AttnDims &a)
{
    static size_t set_q[64], set_kv[64];
    const size_t sq = Dq2Smem<R, KPL>::bytes((int)a.D), skv = Dkv2Smem<R, KPL>::bytes((int)a.D);
    cudaError_t e = allow_smem_cached(attn_bwd_dq_v2_kernel<R, KPL, VW, NC>, sq, set_q);
    if (e == cudaSuccess) e = allow_smem_cached(attn_bwd_dkv_v2_kernel<R, KPL, VW, NC>, skv, set_kv);
    if (e != cudaSuccess) return e;
    constexpr int BR = kW2 * R;
    dim3 gq((unsigned)((a.T + BR - 1) / BR), (unsigned)a.Hq, (unsigned)B);
    CQK_LAUNCH(gq, kW2 * 32, sq, s, attn_bwd_dq_v2_kernel<R, KPL, VW, NC>, dq, q, k, v, lse, dsum, dout, a);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    dim3 gkv((unsigned)((a.S + BR - 1) / BR), (unsigned)a.Hkv, (unsigned)B);
    CQK_LAUNCH(gkv, kW2 * 32, skv, s, attn_bwd_dkv_v2_kernel<R, KPL, VW, NC>, dk, dv, q, k, v, lse, dsum,
                                                                     dout, a);
    return cudaGetLastError();
}

// Version 2 shapes per head dim: D <= 128 takes R = 8 rows per warp,
// D <= 256 R = 4 (shared memory); 64-key (dk/dv: 64-query) tiles.
#define CQK_ATTN_V2_DISPATCH(FN, ...)                                                  \
    (a.D <= 32    ? FN<8, 2, 1, 1>(__VA_ARGS__)                                        \
     : a.D <= 64  ? FN<8, 2, 2, 1>(__VA_ARGS__)                                        \
     : a.D <= 128 ? FN<8, 2, 4, 1>(__VA_ARGS__)                                        \
                  : FN<4, 2, 4, 2>(__VA_ARGS__))

// Version 2 runs when selected and its shared memory fits the device (the
// D = 256 dk/dv kernel needs 216 KiB: not on an A100); else version 1.
bool use_v2(const AttnDims &a, bool bwd)
{
    const int ver = attn_version();
    if (ver == 1 || (ver == 0 && a.T < kV2MinRows)) return false;
    const int D = (int)a.D;
    size_t need;
    if (D <= 128)
        need = bwd ? std::max(Dq2Smem<8, 2>::bytes(D), Dkv2Smem<8, 2>::bytes(D)) : Fwd2Smem<8, 2>::bytes(D);
    else
        need = bwd ? std::max(Dq2Smem<4, 2>::bytes(D), Dkv2Smem<4, 2>::bytes(D)) : Fwd2Smem<4, 2>::bytes(D);
    return need <= smem_optin_bytes();
}

}  // namespace

extern "C" cudaError_t cqk_attn(cudaStream_t s, float *out, float *lse, const float *q,
                                const float *k, const float *v, int64_t B, int64_t T, int64_t S,
                                int64_t Hq, int64_t Hkv, int64_t D, int64_t pos0, float scale)
{
    const AttnDims a = {T, S, Hq, Hkv, D, pos0, scale};
    if (!dims_ok(B, a)) return cudaErrorInvalidValue;
    if (B == 0 || T == 0 || Hq == 0) return cudaSuccess;
    if (S == 0) return cudaErrorInvalidValue;   // a query with no key has no softmax
    if (use_v2(a, false)) return CQK_ATTN_V2_DISPATCH(run_fwd2, s, out, lse, q, k, v, B, a);
    if (D <= 32) return run_fwd<1>(s, out, lse, q, k, v, B, a);
    if (D <= 64) return run_fwd<2>(s, out, lse, q, k, v, B, a);
    if (D <= 128) return run_fwd<4>(s, out, lse, q, k, v, B, a);
    return run_fwd<8>(s, out, lse, q, k, v, B, a);
}

extern "C" cudaError_t cqk_attn_bwd(cudaStream_t s, float *dq, float *dk, float *dv,
                                    const float *q, const float *k, const float *v,
                                    const float *out, const float *lse, const float *dout,
                                    int64_t B, int64_t T, int64_t S, int64_t Hq, int64_t Hkv,
                                    int64_t D, int64_t pos0, float scale, float *dsum)
{
    const AttnDims a = {T, S, Hq, Hkv, D, pos0, scale};
    if (!dims_ok(B, a)) return cudaErrorInvalidValue;
    if (B == 0 || Hq == 0 || S == 0) return cudaSuccess;
    if (T == 0) {   // no query: gradients of k and v are zero
        cudaError_t e = cudaMemsetAsync(dk, 0, (size_t)(B * S * Hkv * D) * 4, s);
        if (e == cudaSuccess) e = cudaMemsetAsync(dv, 0, (size_t)(B * S * Hkv * D) * 4, s);
        return e;
    }
    const int64_t rows = B * T * Hq;
    CQK_LAUNCH(grid_for(rows * 32, 256, 0x7fffffffu), 256, 0, s, attn_dsum_kernel, dsum, out, dout, B, a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (use_v2(a, true))
        return CQK_ATTN_V2_DISPATCH(run_bwd2, s, dq, dk, dv, q, k, v, lse, dsum, dout, B, a);
    if (D <= 32) return run_bwd<1>(s, dq, dk, dv, q, k, v, lse, dsum, dout, B, a);
    if (D <= 64) return run_bwd<2>(s, dq, dk, dv, q, k, v, lse, dsum, dout, B, a);
    if (D <= 128) return run_bwd<4>(s, dq, dk, dv, q, k, v, lse, dsum, dout, B, a);
    return run_bwd<8>(s, dq, dk, dv, q, k, v, lse, dsum, dout, B, a);
}

extern "C" void cqk_attn_set_version(int version) { g_attn_version = version == 1 || version == 2 ? version : 0; }

extern "C" int cqk_attn_version(void) { return attn_version(); }
