// cherryq CUDA kernels: QMATMUL, the mixed int-k + FP16-sparse linear layer.
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
#include "common.cuh"

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

// sum_c u_c * x_c over the 32 codes held in BITS words; x pre-scaled by 2^-e(c).
template <int BITS>
__device__ __forceinline__ float dot32(const uint32_t *wd, const float *x)
{
    float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
        constexpr uint32_t mask = (1u << BITS) - 1u;
        const int bit = c * BITS, wi = bit >> 5, off = bit & 31;
        uint32_t src;
        if (off + BITS > 32) src = __funnelshift_r(wd[wi], wd[wi + 1], off);
        else if (off + BITS <= 23) src = wd[wi];
        else src = wd[wi] >> 16;
        const int e = code_shift(BITS, c);
        const float u = __uint_as_float((src & (mask << e)) | 0x4B000000u) - 8388608.0f;
        if (c & 1) a1 = fmaf(u, x[c], a1);
        else a0 = fmaf(u, x[c], a0);
    }
    return a0 + a1;
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

template <int BITS>
__global__ void __launch_bounds__(kWarpsFast * 32)
qgemv_fast_kernel(float *__restrict__ Y, const float *__restrict__ X, QW w)
{
    constexpr int ROWS = Rows<BITS>::value;
    extern __shared__ float4 smem4[];
    float *xs = (float *)smem4;                  // in floats, swizzled, pre-scaled
    float *xsum = xs + w.in;                     // in / 32 floats
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t n = blockIdx.y;
    const float *x = X + n * w.in;

    // Stage x. Each warp's 32 consecutive columns form one aligned sub-chunk.
    for (int64_t c = threadIdx.x; c < w.in; c += blockDim.x) {
        const float v = x[c];
        const float sv = warp_sum(v);
        if (lane == 0) xsum[c >> 5] = sv;
        const int64_t p = c >> 2;                    // float4 slot
        const int64_t phys = p ^ ((p >> 5) & 7);     // swizzle by chunk
        xs[phys * 4 + (c & 3)] = ldexpf(v, -code_shift(BITS, (int)(c & 31)));
    }
    __syncthreads();

    const int64_t row0 = ((int64_t)blockIdx.x * kWarpsFast + warp) * ROWS;
    if (row0 >= w.out) return;
    const uint4 *crow[ROWS];
    int64_t rows_[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        rows_[r] = min(row0 + r, w.out - 1);
        crow[r] = (const uint4 *)(w.codes + rows_[r] * w.row_bytes);
    }
    float acc[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[r] = 0.0f;

    const int64_t nch = w.in >> 7;
    for (int64_t ch = lane; ch < nch; ch += 32) {
        uint32_t cw[ROWS][4 * BITS];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
#pragma unroll
            for (int j = 0; j < BITS; ++j) {
                const uint4 t = __ldg(crow[r] + ch * BITS + j);
                cw[r][4 * j + 0] = t.x;
                cw[r][4 * j + 1] = t.y;
                cw[r][4 * j + 2] = t.z;
                cw[r][4 * j + 3] = t.w;
            }
        }
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
            const int64_t col = ch * 128 + k * 32;
            const int64_t g = w.group ? col / w.group : 0;
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                const float d = dot32<BITS>(&cw[r][k * BITS], xv);
                const float sc = __half2float(w.scales[rows_[r] * w.ngroups + g]);
                acc[r] = fmaf(sc, fmaf(-w.off, xsk, d), acc[r]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
        float v = acc[r] + cherries(w, rows_[r], x, lane);
        v = warp_sum(v);
        if (lane == 0 && row0 + r < w.out) Y[n * w.out + row0 + r] = v;
    }
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

size_t fast_smem(const cqk_qweight *q) { return (size_t)(q->in + q->in / 32) * sizeof(float); }

bool fast_ok(const cqk_qweight *q)
{
    if (q->in <= 0 || q->in % 128 || (q->group && q->group % 32)) return false;
    if (q->row_bytes % 16 || ((uintptr_t)q->codes & 15)) return false;
    int dev = 0, optin = 48 * 1024;
    if (cudaGetDevice(&dev) == cudaSuccess)
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    return fast_smem(q) <= (size_t)optin;
}

template <int BITS>
cudaError_t launch_fast(cudaStream_t s, float *Y, const float *X, int64_t N, const QW &w,
                        size_t smem)
{
    constexpr int ROWS = Rows<BITS>::value;
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(qgemv_fast_kernel<BITS>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    const int64_t per_block = (int64_t)kWarpsFast * ROWS;
    dim3 grid((unsigned)((w.out + per_block - 1) / per_block), (unsigned)N);
    qgemv_fast_kernel<BITS><<<grid, kWarpsFast * 32, smem, s>>>(Y, X, w);
    return cudaGetLastError();
}

}  // namespace

extern "C" int cqk_qmatmul_supported_bits(int bits)
{
    return bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

extern "C" const char *cqk_qgemv_path(const cqk_qweight *q)
{
    if (!valid(q)) return "invalid";
    return fast_ok(q) ? "fast" : "generic";
}

extern "C" cudaError_t cqk_qgemv(cudaStream_t s, float *Y, const float *X, int64_t N,
                                 const cqk_qweight *q)
{
    if (!valid(q) || N < 0) return cudaErrorInvalidValue;
    if (N == 0 || q->out == 0) return cudaSuccess;
    if (q->in == 0) return cudaMemsetAsync(Y, 0, (size_t)(N * q->out) * sizeof(float), s);
    const QW w = make_qw(q);
    cudaError_t e = cudaSuccess;
    for (int64_t n0 = 0; n0 < N && e == cudaSuccess; n0 += 65535) {   // grid.y limit
        const int64_t nn = N - n0 < 65535 ? N - n0 : 65535;
        float *y = Y + n0 * q->out;
        const float *x = X + n0 * q->in;
        if (fast_ok(q)) {
            const size_t sm = fast_smem(q);
            switch (q->bits) {
            case 2: e = launch_fast<2>(s, y, x, nn, w, sm); break;
            case 3: e = launch_fast<3>(s, y, x, nn, w, sm); break;
            case 4: e = launch_fast<4>(s, y, x, nn, w, sm); break;
            default: e = launch_fast<8>(s, y, x, nn, w, sm); break;
            }
        } else {
            dim3 grid((unsigned)((q->out + kWarpsGeneric - 1) / kWarpsGeneric), (unsigned)nn);
            qgemv_generic_kernel<<<grid, kWarpsGeneric * 32, 0, s>>>(y, x, w);
            e = cudaGetLastError();
        }
    }
    return e;
}

extern "C" cudaError_t cqk_qdequant(cudaStream_t s, float *Wt, int64_t row0, int64_t nrows,
                                    const cqk_qweight *q)
{
    if (!valid(q) || row0 < 0 || nrows < 0 || row0 + nrows > q->out) return cudaErrorInvalidValue;
    if (nrows == 0 || q->in == 0) return cudaSuccess;
    const QW w = make_qw(q);
    qdequant_kernel<<<grid_for(nrows * q->in, 256), 256, 0, s>>>(Wt, row0, nrows, w);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || !q->rowptr) return e;
    qcherry_kernel<<<(unsigned)((nrows + 127) / 128), 128, 0, s>>>(Wt, row0, nrows, w);
    return cudaGetLastError();
}
