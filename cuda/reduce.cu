// cherryq CUDA kernels: SUMSQ, two-pass (per-block double partials, then one
// block sums them in a fixed order): deterministic, no atomics.
#include "common.cuh"

using namespace cqk;

namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

int sumsq_blocks(int64_t n)
{
    int64_t b = (n + kThreads * 4 - 1) / (kThreads * 4);
    if (b < 1) b = 1;
    if (b > kMaxBlocks) b = kMaxBlocks;
    return (int)b;
}

__global__ void sumsq_partial_kernel(const void *x, int dt, int64_t n, double *partial)
{
    CQK_SHARED(double, sh, 32);
    double acc = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const double v = load_f(x, dt, i);
        acc += v * v;
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sumsq_final_kernel(const double *partial, int nparts, float *out)
{
    CQK_SHARED(double, sh, 32);
    double acc = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += partial[i];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) out[0] = (float)acc;
}

}  // namespace

extern "C" int cqk_sumsq_ws(int64_t n) { return sumsq_blocks(n); }

extern "C" cudaError_t cqk_sumsq(cudaStream_t s, float *out, const void *x, int dt, int64_t n,
                                 double *ws)
{
    const int nb = sumsq_blocks(n);
    CQK_LAUNCH(nb, kThreads, 0, s, sumsq_partial_kernel, x, dt, n < 0 ? 0 : n, ws);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    CQK_LAUNCH(1, kThreads, 0, s, sumsq_final_kernel, ws, nb, out);
    return cudaGetLastError();
}
