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
    extern __shared__ float smem[];
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
    extern __shared__ float smem[];
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
    extern __shared__ float smem[];
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
    attn_fwd_kernel<DPL><<<grid, kWarps * 32, sm, s>>>(out, lse, q, k, v, a);
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
    attn_bwd_dq_kernel<DPL><<<gq, kWarps * 32, sq, s>>>(dq, q, k, v, lse, dsum, dout, a);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    dim3 gkv((unsigned)((a.S + kWarps - 1) / kWarps), (unsigned)a.Hkv, (unsigned)B);
    attn_bwd_dkv_kernel<DPL><<<gkv, kWarps * 32, skv, s>>>(dk, dv, q, k, v, lse, dsum, dout, a);
    return cudaGetLastError();
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
    attn_dsum_kernel<<<grid_for(rows * 32, 256, 0x7fffffffu), 256, 0, s>>>(dsum, out, dout, B, a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (D <= 32) return run_bwd<1>(s, dq, dk, dv, q, k, v, lse, dsum, dout, B, a);
    if (D <= 64) return run_bwd<2>(s, dq, dk, dv, q, k, v, lse, dsum, dout, B, a);
    if (D <= 128) return run_bwd<4>(s, dq, dk, dv, q, k, v, lse, dsum, dout, B, a);
    return run_bwd<8>(s, dq, dk, dv, q, k, v, lse, dsum, dout, B, a);
}
