// cherryq CUDA kernels: cross-entropy over the vocabulary and its backward.
// One block per row (vocab-wide reductions: max, then sum of exp), per-row
// NLL written to `nll`, then one block sums the NLLs in a fixed order in
// double: the loss is deterministic.
#include "common.cuh"

using namespace cqk;

namespace {

constexpr int kThreads = 512;

__global__ void xent_row_kernel(float *lse, float *nll, const float *logits,
                                const int32_t *targets, int64_t V)
{
    CQK_SHARED(float, sh, 32);
    const int64_t n = blockIdx.x;
    const float *x = logits + n * V;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, x[i]);
    mx = block_max(mx, sh);
    float se = 0.0f;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) se += expf(x[i] - mx);
    se = block_sum(se, sh);
    if (threadIdx.x == 0) {
        const float l = mx + logf(se);
        lse[n] = l;
        const int32_t t = targets[n];
        nll[n] = t < 0 ? 0.0f : (t < V ? l - x[t] : NAN);
    }
}

__global__ void xent_loss_kernel(float *loss, const float *nll, int64_t N, float scale)
{
    CQK_SHARED(double, sh, 32);
    double acc = 0.0;
    // Fixed assignment of rows to threads and a fixed tree: deterministic.
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) acc += (double)nll[i];
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) loss[0] = (float)(acc * (double)scale);
}

__global__ void xent_bwd_kernel(float *dlogits, const float *logits, const int32_t *targets,
                                const float *lse, const float *dloss, int64_t V, float scale)
{
    const int64_t n = blockIdx.x;
    const int32_t t = targets[n];
    float *d = dlogits + n * V;
    if (t < 0) {
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) d[i] = 0.0f;
        return;
    }
    const float g = dloss[0] * scale, l = lse[n];
    const float *x = logits + n * V;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
        d[i] = g * (expf(x[i] - l) - (i == t ? 1.0f : 0.0f));
}

}  // namespace

extern "C" cudaError_t cqk_xent(cudaStream_t s, float *loss, float *lse, float *nll,
                                const float *logits, const int32_t *targets, int64_t N, int64_t V,
                                float scale)
{
    if (N > 0x7fffffff || V <= 0) return cudaErrorInvalidValue;
    if (N > 0) {
        CQK_LAUNCH((unsigned)N, kThreads, 0, s, xent_row_kernel, lse, nll, logits, targets, V);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    CQK_LAUNCH(1, 1024, 0, s, xent_loss_kernel, loss, nll, N, scale);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_xent_bwd(cudaStream_t s, float *dlogits, const float *logits,
                                    const int32_t *targets, const float *lse, const float *dloss,
                                    int64_t N, int64_t V, float scale)
{
    if (N > 0x7fffffff || V <= 0) return cudaErrorInvalidValue;
    if (N == 0) return cudaSuccess;
    CQK_LAUNCH((unsigned)N, kThreads, 0, s, xent_bwd_kernel, dlogits, logits, targets, lse, dloss, V, scale);
    return cudaGetLastError();
}
