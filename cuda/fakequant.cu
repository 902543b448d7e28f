// cherryq CUDA kernels: CherryQ fake quantization (CHERRYQ.md section 4).
// One block per (group, row). Cherry positions (mask != 0) are excluded from
// the group's max|w| and pass through unchanged.
//   b <= 4: s = (max + 1e-6) / 2^(b-1); q = rint(clamp(w/s, +-(2^(b-1) - 0.01)) - 0.5);
//           w' = (q + 0.5) s
//   b > 4:  s = (max + 1e-6) / (2^(b-1) - 1); w' = clamp(rint(w/s), +-(2^(b-1)-1)) s
// rint is rintf (round half to even, as torch.round); the division is IEEE
// (no fast-math). With fp16_scales the dequantization scale is s rounded to
// FP16 (__float2half_rn), the levels use it too unless it rounded to 0, and
// cherries are rounded to FP16: what the packed model computes, bit for bit
// the same as cq_ref_fakequant_rows (cpu/ref.c) and core/quant.c.
#include "common.cuh"

using namespace cqk;

namespace {

constexpr int kThreads = 128;

__global__ void fakequant_kernel(float *y, const float *w, const uint8_t *mask, int64_t cols,
                                 int bits, int64_t gsize, int fp16_scales)
{
    CQK_SHARED(float, sh, 32);
    const int64_t row = blockIdx.y;
    const int64_t c0 = (int64_t)blockIdx.x * gsize;
    const int64_t c1 = min(cols, c0 + gsize);
    const float *wr = w + row * cols;
    const uint8_t *mr = mask ? mask + row * cols : nullptr;
    float *yr = y + row * cols;

    float mx = 0.0f, bad = 0.0f;
    for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x)
        if (!mr || !mr[c]) {
            const float a = fabsf(wr[c]);
            if (isfinite(a)) mx = fmaxf(mx, a);
            else bad = 1.0f;
        }
    mx = block_max(mx, sh);
    bad = block_max(bad, sh);

    const float levels = bits <= 4 ? (float)(1 << (bits - 1)) : (float)((1 << (bits - 1)) - 1);
    const float s = (mx + 1e-6f) / levels;
    // sd: the dequantization scale (FP16-rounded as stored); sq: the scale
    // the levels are computed with (sd, unless it rounded to 0).
    float sd = s, sq = s;
    if (fp16_scales) {
        sd = __half2float(__float2half_rn(s));
        sq = sd != 0.0f ? sd : s;
    }

    for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
        const float x = wr[c];
        if (mr && mr[c]) {   // cherries: kept, in FP16 when the model stores FP16
            yr[c] = fp16_scales ? __half2float(__float2half_rn(x)) : x;
            continue;
        }
        float r;
        if (bad != 0.0f || !isfinite(sd)) {
            r = NAN;   // the CPU quantizer returns CQ_ERANGE here; a kernel poisons the group
        } else if (bits <= 4) {
            const float lim = levels - 0.01f;
            const float t = fminf(fmaxf(x / sq, -lim), lim);
            r = (rintf(t - 0.5f) + 0.5f) * sd;
        } else {
            r = fminf(fmaxf(rintf(x / sq), -levels), levels) * sd;
        }
        yr[c] = r;
    }
}

}  // namespace

extern "C" cudaError_t cqk_fakequant(cudaStream_t s, float *y, const float *w, const uint8_t *mask,
                                     int64_t rows, int64_t cols, int bits, int64_t group,
                                     int fp16_scales)
{
    if (bits < 2 || bits > 8 || group < 0) return cudaErrorInvalidValue;
    if (rows <= 0 || cols <= 0) return cudaSuccess;
    const int64_t gsize = group == 0 ? cols : group;
    const int64_t ngroups = (cols + gsize - 1) / gsize;
    if (ngroups > 0x7fffffff) return cudaErrorInvalidValue;
    // grid.y is limited to 65535: split the rows into chunks
    for (int64_t r0 = 0; r0 < rows; r0 += 65535) {
        const int64_t nr = min(rows - r0, (int64_t)65535);
        dim3 grid((unsigned)ngroups, (unsigned)nr);
        CQK_LAUNCH(grid, kThreads, 0, s, fakequant_kernel, y + r0 * cols, w + r0 * cols,
                                                    mask ? mask + r0 * cols : nullptr, cols, bits,
                                                    gsize, fp16_scales);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}
