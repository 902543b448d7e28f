// cherryq CUDA kernels: EMBED (table f32/f16/bf16 -> f32 rows) and its
// backward (zero, then scatter-add rows of dy with atomicAdd).
#include "common.cuh"

using namespace cqk;

namespace {

__global__ void embed_kernel(float *y, const void *table, int tdt, const int32_t *ids, int64_t N,
                             int64_t E, int64_t V)
{
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const int64_t row = ids[n];
        const bool ok = row >= 0 && row < V;
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
            y[n * E + e] = ok ? load_f(table, tdt, row * E + e) : NAN;
    }
}

__global__ void embed_bwd_kernel(float *dtable, const int32_t *ids, const float *dy, int64_t N,
                                 int64_t E, int64_t V)
{
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const int64_t row = ids[n];
        if (row < 0 || row >= V) continue;   // the front-end rejects these; never write out of range
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
            atomicAdd(dtable + row * E + e, dy[n * E + e]);
    }
}

}  // namespace

extern "C" cudaError_t cqk_embed(cudaStream_t s, float *y, const void *table, int tdt,
                                 const int32_t *ids, int64_t N, int64_t E, int64_t V)
{
    if (N <= 0 || E <= 0) return cudaSuccess;
    const unsigned grid = (unsigned)(N < 65535 * 16 ? N : 65535 * 16);
    embed_kernel<<<grid, 256, 0, s>>>(y, table, tdt, ids, N, E, V);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_embed_bwd(cudaStream_t s, float *dtable, const int32_t *ids,
                                     const float *dy, int64_t N, int64_t E, int64_t V)
{
    cudaError_t e = cudaMemsetAsync(dtable, 0, (size_t)(V * E) * sizeof(float), s);
    if (e != cudaSuccess || N <= 0 || E <= 0) return e;
    const unsigned grid = (unsigned)(N < 65535 * 16 ? N : 65535 * 16);
    embed_bwd_kernel<<<grid, 256, 0, s>>>(dtable, ids, dy, N, E, V);
    return cudaGetLastError();
}
