// cherryq CUDA kernels: EMBED (table f32/f16/bf16 -> f32 rows) and its
// backward (zero, then scatter-add rows of dy with atomicAdd). Ids are
// checked in the kernel (they live in device memory): an out-of-range id is
// never used as an address and its position is reported to the caller.
#include "common.cuh"

using namespace cqk;

namespace {

__device__ __forceinline__ void note_bad(int32_t *first_bad, int64_t n)
{
    if (first_bad && threadIdx.x == 0) atomicMin(first_bad, (int32_t)min(n, (int64_t)CQK_NO_BAD_ID - 1));
}

__global__ void embed_kernel(float *y, const void *table, int tdt, const int32_t *ids, int64_t N,
                             int64_t E, int64_t V, int32_t *first_bad)
{
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const int64_t row = ids[n];
        const bool ok = row >= 0 && row < V;
        if (!ok) note_bad(first_bad, n);
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
            y[n * E + e] = ok ? load_f(table, tdt, row * E + e) : NAN;
    }
}

__global__ void embed_bwd_kernel(float *dtable, const int32_t *ids, const float *dy, int64_t N,
                                 int64_t E, int64_t V, int32_t *first_bad)
{
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const int64_t row = ids[n];
        if (row < 0 || row >= V) {   // never write out of range; the op fails
            note_bad(first_bad, n);
            continue;
        }
        for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
            atomicAdd(dtable + row * E + e, dy[n * E + e]);
    }
}

}  // namespace

extern "C" cudaError_t cqk_embed(cudaStream_t s, float *y, const void *table, int tdt,
                                 const int32_t *ids, int64_t N, int64_t E, int64_t V,
                                 int32_t *first_bad)
{
    if (N <= 0 || E <= 0) return cudaSuccess;
    const unsigned grid = (unsigned)(N < 65535 * 16 ? N : 65535 * 16);
    CQK_LAUNCH(grid, 256, 0, s, embed_kernel, y, table, tdt, ids, N, E, V, first_bad);
    return cudaGetLastError();
}

extern "C" cudaError_t cqk_embed_bwd(cudaStream_t s, float *dtable, const int32_t *ids,
                                     const float *dy, int64_t N, int64_t E, int64_t V,
                                     int32_t *first_bad)
{
    cudaError_t e = cudaMemsetAsync(dtable, 0, (size_t)(V * E) * sizeof(float), s);
    if (e != cudaSuccess || N <= 0 || E <= 0) return e;
    const unsigned grid = (unsigned)(N < 65535 * 16 ? N : 65535 * 16);
    CQK_LAUNCH(grid, 256, 0, s, embed_bwd_kernel, dtable, ids, dy, N, E, V, first_bad);
    return cudaGetLastError();
}
