// cherryq CUDA kernels: ROPE, Hugging Face LLaMA "rotate half" convention.
// x [B, T, H, D]; position of row t = pos0 + t; inv_freq[j] = theta^(-2j/D),
// scaled as core/cq_rope.h says.
//   y[j]     = x[j] cos a - x[j+D/2] sin a
//   y[j+D/2] = x[j+D/2] cos a + x[j] sin a      (inverse: sin -> -sin)
// Each thread owns a pair (j, j+D/2) and reads both before writing: y may
// alias x.
#include "common.cuh"
#include "cq_rope.h"

using namespace cqk;

namespace {

__global__ void rope_kernel(float *y, const float *x, int64_t T, int64_t H, int64_t D,
                            int64_t pos0, float theta, int inverse, int64_t npairs, cq_rope_scaling sc)
{
    const int64_t half = D / 2;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < npairs;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t j = i % half;
        const int64_t row = i / half;          // (b, t, h) flattened
        const int64_t t = (row / H) % T;
        // Same arithmetic as the reference (cpu/ref.c): the inverse frequency
        // rounded to f32 (as Hugging Face stores it) and scaled as the
        // config asks (core/cq_rope.h), the angle and its sine and cosine in
        // double, so that large positions keep their accuracy.
        const float inv_freq = cq_rope_inv_freq(theta, D, j, sc.type, sc.factor, sc.low_freq_factor,
                                                sc.high_freq_factor, sc.original_max);
        const double a = (double)(pos0 + t) * (double)inv_freq;
        double sn, cs;
        sincos(a, &sn, &cs);
        if (inverse) sn = -sn;
        const float *xr = x + row * D;
        float *yr = y + row * D;
        const double x0 = xr[j], x1 = xr[j + half];
        yr[j] = (float)(x0 * cs - x1 * sn);
        yr[j + half] = (float)(x1 * cs + x0 * sn);
    }
}

}  // namespace

extern "C" cudaError_t cqk_rope(cudaStream_t s, float *y, const float *x, int64_t B, int64_t T,
                                int64_t H, int64_t D, int64_t pos0, float theta, int inverse,
                                const cq_rope_scaling *scaling)
{
    const cq_rope_scaling sc = scaling ? *scaling : cq_rope_scaling{ CQ_ROPE_PLAIN, 1.0f, 0.0f, 0.0f, 0.0f };
    if (D % 2) return cudaErrorInvalidValue;
    const int64_t npairs = B * T * H * (D / 2);
    if (npairs <= 0) return cudaSuccess;
    CQK_LAUNCH(grid_for(npairs, 256), 256, 0, s, rope_kernel, y, x, T, H, D, pos0, theta, inverse, npairs, sc);
    return cudaGetLastError();
}
