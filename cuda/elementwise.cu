// cherryq CUDA kernels: FILL, COPY (strided, f32/f16/bf16 conversions), ADD,
// MUL, SCALE, AXPY, SWIGLU(+BWD), ADAMW, SQR_ACCUM.
#include "common.cuh"

using namespace cqk;

namespace {

constexpr int kThreads = 256;

__global__ void fill_kernel(void *dst, int dt, int64_t n, float v)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (dt == CQK_I32) ((int32_t *)dst)[i] = (int32_t)v;
        else store_f(dst, dt, i, v);
    }
}

struct Layout {
    int ndim;
    int64_t ne[4];
    int64_t nb[4];
};

// Element offset of flat index i. I = uint32_t when every size and the
// element count fit (the divisions are then 32-bit: a 64-bit division is a
// long software sequence on the GPU), else int64_t.
template <typename I>
__device__ __forceinline__ int64_t offset_of(const Layout &l, I i)
{
    int64_t off = 0;
    for (int d = l.ndim - 1; d >= 0; --d) {
        const I ne = (I)l.ne[d];
        const I c = i % ne;
        i /= ne;
        off += (int64_t)c * l.nb[d];
    }
    return off;
}

// Float conversions between f32/f16/bf16.
template <typename I>
__global__ void copy_convert_kernel(void *dst, int ddt, Layout dl, const void *src, int sdt,
                                    Layout sl, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        store_f(dst, ddt, offset_of<I>(dl, (I)i), load_f(src, sdt, offset_of<I>(sl, (I)i)));
}

// Identical dtypes: move elements of T bytes.
template <typename T, typename I>
__global__ void copy_raw_kernel(T *dst, Layout dl, const T *src, Layout sl, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[offset_of<I>(dl, (I)i)] = src[offset_of<I>(sl, (I)i)];
}

// Both sides contiguous, dtype conversion: 4 elements per thread and step
// (the casts of bf16 compute: every linear's weight and input each step).
template <typename S, typename D>
__device__ __forceinline__ D cvt(S v) { return (D)v; }
template <> __device__ __forceinline__ __nv_bfloat16 cvt(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half cvt(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ float cvt(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float cvt(__half v) { return __half2float(v); }

template <typename S, typename D>
__global__ void convert_contig_kernel(D *__restrict__ dst, const S *__restrict__ src, int64_t n)
{
    const int64_t n4 = n >> 2;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        const S a = src[4 * i], b = src[4 * i + 1], c = src[4 * i + 2], d = src[4 * i + 3];
        dst[4 * i] = cvt<S, D>(a);
        dst[4 * i + 1] = cvt<S, D>(b);
        dst[4 * i + 2] = cvt<S, D>(c);
        dst[4 * i + 3] = cvt<S, D>(d);
    }
    for (int64_t i = 4 * n4 + blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = cvt<S, D>(src[i]);
}

// Both sides contiguous: the 4-wide kernel for the four conversions of the
// bf16/f16 compute path; false (nothing launched) for any other pair.
bool convert_contig(cudaStream_t s, void *dst, int ddt, const void *src, int sdt, int64_t n)
{
    const unsigned g = grid_for((n + 3) / 4, kThreads);
    if (sdt == CQK_F32 && ddt == CQK_BF16)
        CQK_LAUNCH(g, kThreads, 0, s, convert_contig_kernel<float, __nv_bfloat16>, (__nv_bfloat16 *)dst, (const float *)src, n);
    else if (sdt == CQK_F32 && ddt == CQK_F16)
        CQK_LAUNCH(g, kThreads, 0, s, convert_contig_kernel<float, __half>, (__half *)dst, (const float *)src, n);
    else if (sdt == CQK_BF16 && ddt == CQK_F32)
        CQK_LAUNCH(g, kThreads, 0, s, convert_contig_kernel<__nv_bfloat16, float>, (float *)dst, (const __nv_bfloat16 *)src, n);
    else if (sdt == CQK_F16 && ddt == CQK_F32)
        CQK_LAUNCH(g, kThreads, 0, s, convert_contig_kernel<__half, float>, (float *)dst, (const __half *)src, n);
    else
        return false;
    return true;
}

bool layout_contig(const Layout &l)
{
    int64_t st = 1;
    for (int d = l.ndim - 1; d >= 0; --d) {
        if (l.ne[d] != 1 && l.nb[d] != st) return false;
        st *= l.ne[d];
    }
    return true;
}

bool layout_fits32(const Layout &l, int64_t n)
{
    if (n > (int64_t)UINT32_MAX) return false;
    for (int d = 0; d < l.ndim; ++d)
        if (l.ne[d] > (int64_t)UINT32_MAX) return false;
    return true;
}

__global__ void binary_kernel(int op, float *dst, const float *a, const float *b, int64_t n,
                              int64_t nb)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float y = b[nb == n ? i : i % nb];
        dst[i] = op == 0 ? a[i] + y : a[i] * y;
    }
}

__global__ void scale_kernel(float *dst, const float *src, int64_t n, float a, float b)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = a * src[i] + b;
}

__global__ void axpy_kernel(float *y, const float *x, int64_t n, float a)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += a * x[i];
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_kernel(float *y, const float *g, const float *u, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float x = g[i];
        const float si = x * sigmoid(x);
        y[i] = u ? si * u[i] : si;
    }
}

__global__ void swiglu_bwd_kernel(float *dg, float *du, const float *g, const float *u,
                                  const float *dy, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float x = g[i], sg = sigmoid(x);
        const float si = x * sg;
        const float dsilu = sg * (1.0f + x * (1.0f - sg));
        const float d = dy[i];
        if (u) {
            dg[i] = d * u[i] * dsilu;
            if (du) du[i] = d * si;
        } else {
            dg[i] = d * dsilu;
        }
    }
}

struct AdamW {
    float lr, b1, b2, eps, wd, step, sqrt_bc2, gs;
};

__global__ void adamw_kernel(float *p, float *m, float *v, const float *g, int64_t n, AdamW a)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float gi = g[i] * a.gs;
        float pi = p[i];
        pi -= a.lr * a.wd * pi;
        const float mi = a.b1 * m[i] + (1.0f - a.b1) * gi;
        const float vi = a.b2 * v[i] + (1.0f - a.b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / a.sqrt_bc2 + a.eps;
        p[i] = pi - a.step * mi / denom;
    }
}

// In double, as the reference: F is a running mean over many samples.
__global__ void sqr_accum_kernel(float *F, const float *g, int64_t n, double keep, double div)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const double gi = g[i];
        F[i] = (float)((double)F[i] * keep + gi * gi / div);
    }
}

Layout to_layout(const cqk_layout *l)
{
    Layout r;
    r.ndim = l->ndim;
    for (int d = 0; d < 4; ++d) {
        r.ne[d] = d < l->ndim ? l->ne[d] : 1;
        r.nb[d] = d < l->ndim ? l->nb[d] : 0;
    }
    return r;
}

bool is_float(int dt) { return dt == CQK_F32 || dt == CQK_F16 || dt == CQK_BF16; }

int dt_size(int dt)
{
    switch (dt) {
    case CQK_F32: case CQK_I32: return 4;
    case CQK_F16: case CQK_BF16: case CQK_I16: case CQK_U16: return 2;
    case CQK_U8: return 1;
    default: return 0;
    }
}

}  // namespace

extern "C" cudaError_t cqk_fill(cudaStream_t s, void *dst, int dt, int64_t n, float v)
{
    if (n <= 0) return cudaSuccess;
    CQK_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, fill_kernel, dst, dt, n, v);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_copy(cudaStream_t s, void *dst, int ddt, const cqk_layout *dl,
                                const void *src, int sdt, const cqk_layout *sl, int64_t n)
{
    if (n <= 0) return cudaSuccess;
    const Layout d = to_layout(dl), l = to_layout(sl);
    const unsigned grid = grid_for(n, kThreads);
    if (ddt != sdt && layout_contig(d) && layout_contig(l) && convert_contig(s, dst, ddt, src, sdt, n))
        return cudaGetLastError();
    const bool i32 = layout_fits32(d, n) && layout_fits32(l, n);
    if (ddt == sdt) {
        switch (dt_size(ddt)) {
#define CQK_RAW(T)                                                                                          \
    if (i32) CQK_LAUNCH(grid, kThreads, 0, s, copy_raw_kernel<T, uint32_t>, (T *)dst, d, (const T *)src, l, n);    \
    else CQK_LAUNCH(grid, kThreads, 0, s, copy_raw_kernel<T, int64_t>, (T *)dst, d, (const T *)src, l, n);
        case 4: CQK_RAW(uint32_t) break;
        case 2: CQK_RAW(uint16_t) break;
        case 1: CQK_RAW(uint8_t) break;
#undef CQK_RAW
        default: return cudaErrorInvalidValue;
        }
    } else if (is_float(ddt) && is_float(sdt)) {
        if (i32) CQK_LAUNCH(grid, kThreads, 0, s, copy_convert_kernel<uint32_t>, dst, ddt, d, src, sdt, l, n);
        else CQK_LAUNCH(grid, kThreads, 0, s, copy_convert_kernel<int64_t>, dst, ddt, d, src, sdt, l, n);
    } else {
        return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_binary(cudaStream_t s, int op, float *dst, const float *a,
                                  const float *b, int64_t n, int64_t nb)
{
    if (n <= 0) return cudaSuccess;
    if (nb <= 0 || n % nb) return cudaErrorInvalidValue;
    CQK_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, binary_kernel, op, dst, a, b, n, nb);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_scale(cudaStream_t s, float *dst, const float *src, int64_t n, float a,
                                 float b)
{
    if (n <= 0) return cudaSuccess;
    CQK_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, scale_kernel, dst, src, n, a, b);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_axpy(cudaStream_t s, float *y, const float *x, int64_t n, float a)
{
    if (n <= 0) return cudaSuccess;
    CQK_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, axpy_kernel, y, x, n, a);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_swiglu(cudaStream_t s, float *y, const float *g, const float *u,
                                  int64_t n)
{
    if (n <= 0) return cudaSuccess;
    CQK_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, swiglu_kernel, y, g, u, n);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_swiglu_bwd(cudaStream_t s, float *dg, float *du, const float *g,
                                      const float *u, const float *dy, int64_t n)
{
    if (n <= 0) return cudaSuccess;
    CQK_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, swiglu_bwd_kernel, dg, du, g, u, dy, n);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_adamw(cudaStream_t s, float *p, float *m, float *v, const float *g,
                                 int64_t n, const float f[8])
{
    if (n <= 0) return cudaSuccess;
    if (!(f[5] > 0.0f) || !(f[6] > 0.0f)) return cudaErrorInvalidValue;
    AdamW a;
    a.lr = f[0];
    a.b1 = f[1];
    a.b2 = f[2];
    a.eps = f[3];
    a.wd = f[4];
    a.step = f[0] / f[5];
    a.sqrt_bc2 = sqrtf(f[6]);
    a.gs = f[7] == 0.0f ? 1.0f : f[7];
    CQK_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, adamw_kernel, p, m, v, g, n, a);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_sqr_accum(cudaStream_t s, float *F, const float *g, int64_t n,
                                     float count)
{
    if (n <= 0) return cudaSuccess;
    const double k = count;
    CQK_LAUNCH(grid_for(n, kThreads), kThreads, 0, s, sqr_accum_kernel, F, g, n, k / (k + 1.0), k + 1.0);
    return cudaGetLastError();
}
