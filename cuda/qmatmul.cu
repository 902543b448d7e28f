// cherryq CUDA kernels: QMATMUL, the mixed int-k + FP16-sparse linear layer:
// the launches. The kernels and what they do: cuda/qmatmul_kernels.cuh.
#include <stdlib.h>

#include "qmatmul_kernels.cuh"

extern "C" {
#include "cpu/qmm.h"   // the exact-mode switch and the int8 size rule, shared with the CPU backend
}

namespace {

bool fast_ok(const cqk_qweight *q) { return fast_shape_ok(q) && fast_smem(q) <= smem_optin_bytes(); }

// CQ_QGEMV_VARIANT=0..9 picks one for benchmarking (tools/bench_cuda); the
// default, CQK_QGEMV_AUTO, picks per weight (cqk_qgemv_pick).
int g_gemv_variant = -2;   // -2: not read yet

int gemv_variant()
{
    if (g_gemv_variant == -2) {
        const char *e = getenv("CQ_QGEMV_VARIANT");
        g_gemv_variant = (e && *e >= '0' && *e < '0' + CQK_QGEMV_VARIANTS && !e[1]) ? *e - '0' : CQK_QGEMV_AUTO;
    }
    return g_gemv_variant;
}

template <int BITS>
cudaError_t launch_fast(cudaStream_t s, float *Y, const float *X, int64_t N, const QW &w, int v)
{
    FastLaunch f = { s, Y, X, N, w };
    return with_variant<BITS>(v, f);
}

}  // namespace

extern "C" int cqk_qmatmul_supported_bits(int bits)
{
    return bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

extern "C" void cqk_qgemv_set_variant(int v) { g_gemv_variant = v >= 0 && v < CQK_QGEMV_VARIANTS ? v : CQK_QGEMV_AUTO; }

extern "C" int cqk_qgemv_variant(void) { return gemv_variant(); }

// The automatic choice, from the H100 runs of 2026-11-26 (docs/cuda.md):
// the exact variant 1 in exact mode (CQ_QMM_EXACT=1, cq_qmm_set_exact, as
// the CPU backend) and below the CPU's int8 size rule (in < 512); else int8
// activations: the streaming variant 6 for 8192 rows or more (1.4x variant
// 1 at 11008 and 14336 x 4096), variant 4 below (1.02-1.05x variant 1;
// variant 6 is slower there).
extern "C" int cqk_qgemv_pick(int64_t out, int64_t in)
{
    const int v = gemv_variant();
    if (v != CQK_QGEMV_AUTO) return v;
    if (cq_qmm_get_exact() || in < cq_qmm_get_q8_min_in()) return 1;
    return out >= 8192 ? 6 : 4;
}

extern "C" int cqk_qgemv_variant_q8(int v) { return v == 4 || v == 5 || v == 6 || v == 8; }

extern "C" const char *cqk_qgemv_path(const cqk_qweight *q)
{
    if (!valid(q)) return "invalid";
    static const char *const names[CQK_QGEMV_VARIANTS] = {
        "fast v0", "fast v1", "fast v2", "fast v3", "fast v4 (int8 x, dp4a)",
        "stream v5 (int8 x, dp4a)", "stream v6 (int8 x, dp4a, 1 row a warp)", "stream v7",
        "pipe v8 (int8 x, dp4a)", "pipe v9"
    };
    if (!fast_ok(q)) return "generic";
    const int v = cqk_qgemv_pick(q->out, q->in);
    PipeGeo g;
    if ((v == 8 || v == 9) && !pipe_geo(make_qw(q), v == 8, pipe_rows(q->bits), smem_optin_bytes(), &g))
        return v == 8 ? "fast v4 (int8 x, dp4a; v8's ring does not fit)" : "fast v1 (v9's ring does not fit)";
    return names[v];
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
            const int v = cqk_qgemv_pick(q->out, q->in);
            switch (q->bits) {
            case 2: e = launch_fast<2>(s, y, x, nn, w, v); break;
            case 3: e = launch_fast<3>(s, y, x, nn, w, v); break;
            case 4: e = launch_fast<4>(s, y, x, nn, w, v); break;
            default: e = launch_fast<8>(s, y, x, nn, w, v); break;
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
