// cherryq CUDA kernels: QMATMUL, the mixed int-k + FP16-sparse linear layer:
// the launches. The kernels and what they do: cuda/qmatmul_kernels.cuh.
#include <stdlib.h>

#include "qmatmul_kernels.cuh"

namespace {

bool fast_ok(const cqk_qweight *q) { return fast_shape_ok(q) && fast_smem(q) <= smem_optin_bytes(); }

// CQ_QGEMV_VARIANT=0..7 picks one for benchmarking (tools/bench_cuda);
// the default is the exact one measured fastest on the H200 (docs/cuda.md).
constexpr int kDefaultVariant = 1;
int g_gemv_variant = -1;   // -1: not read yet

int gemv_variant()
{
    if (g_gemv_variant < 0) {
        const char *e = getenv("CQ_QGEMV_VARIANT");
        g_gemv_variant = (e && *e >= '0' && *e < '0' + CQK_QGEMV_VARIANTS && !e[1]) ? *e - '0' : kDefaultVariant;
    }
    return g_gemv_variant;
}

template <int BITS>
cudaError_t launch_fast(cudaStream_t s, float *Y, const float *X, int64_t N, const QW &w)
{
    FastLaunch f = { s, Y, X, N, w };
    return with_variant<BITS>(gemv_variant(), f);
}

}  // namespace

extern "C" int cqk_qmatmul_supported_bits(int bits)
{
    return bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

extern "C" void cqk_qgemv_set_variant(int v) { g_gemv_variant = v >= 0 && v < CQK_QGEMV_VARIANTS ? v : kDefaultVariant; }

extern "C" int cqk_qgemv_variant(void) { return gemv_variant(); }

extern "C" int cqk_qgemv_variant_q8(int v) { return v == 4 || v == 5 || v == 6; }

extern "C" const char *cqk_qgemv_path(const cqk_qweight *q)
{
    if (!valid(q)) return "invalid";
    static const char *const names[CQK_QGEMV_VARIANTS] = {
        "fast v0", "fast v1", "fast v2", "fast v3", "fast v4 (int8 x, dp4a)",
        "stream v5 (int8 x, dp4a)", "stream v6 (int8 x, dp4a, 1 row a warp)", "stream v7"
    };
    return fast_ok(q) ? names[gemv_variant()] : "generic";
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
            switch (q->bits) {
            case 2: e = launch_fast<2>(s, y, x, nn, w); break;
            case 3: e = launch_fast<3>(s, y, x, nn, w); break;
            case 4: e = launch_fast<4>(s, y, x, nn, w); break;
            default: e = launch_fast<8>(s, y, x, nn, w); break;
            }
        } else {
            dim3 grid((unsigned)((q->out + kWarpsGeneric - 1) / kWarpsGeneric), (unsigned)nn);
            CQK_LAUNCH(grid, kWarpsGeneric * 32, 0, s, qgemv_generic_kernel, y, x, w);
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
    CQK_LAUNCH(grid_for(nrows * q->in, 256), 256, 0, s, qdequant_kernel, Wt, row0, nrows, w);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || !q->rowptr) return e;
    CQK_LAUNCH((unsigned)((nrows + 127) / 128), 128, 0, s, qcherry_kernel, Wt, row0, nrows, w);
    return cudaGetLastError();
}
