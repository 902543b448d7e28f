// cherryq CUDA kernels: shared device helpers (loads/stores with dtype
// conversion, warp and block reductions, launch geometry).
#pragma once

#if defined(CQK_EMU)
#include "tests/cuda_emu/simt.h"   // the kernels on the CPU (tests/test_cuda_emu.cpp)
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif
#include <math.h>
#include <stdint.h>

#include "cq_cuda_kernels.h"

#define CQK_FULL_MASK 0xffffffffu

// Shared memory and launches go through these three, so that the kernels
// also compile as C++ for the CPU emulator (tests/cuda_emu/simt.h, -DCQK_EMU):
//   CQK_DYN_SMEM(T, name);        a kernel's dynamic shared memory, T name[]
//   CQK_SHARED(T, name, N);       a static shared array, T name[N]
//   CQK_LAUNCH(grid, block, smem, stream, kernel, args...);
//                                 kernel<<<grid, block, smem, stream>>>(args...)
#if defined(CQK_EMU)
#define CQK_DYN_SMEM(T, name) CQK_EMU_DYN_SMEM(T, name)
#define CQK_SHARED(T, name, N) CQK_EMU_SHARED(T, name, N)
#define CQK_LAUNCH(g, b, sm, s, ...) cqk_emu::launch_on(s, g, b, sm, __VA_ARGS__)
#else
#define CQK_DYN_SMEM(T, name) extern __shared__ T name[]
#define CQK_SHARED(T, name, N) __shared__ T name[N]
#define CQK_LAUNCH(g, b, sm, s, ...) cqk::launch(g, b, sm, s, __VA_ARGS__)
#endif

namespace cqk {

#if !defined(CQK_EMU)
// CQK_LAUNCH: a launch through a pointer to the __global__ function (the
// arguments convert to its parameter types as in a direct launch).
template <typename K, typename... A>
inline void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t s, K kernel, A... args)
{
    kernel<<<grid, block, smem, s>>>(args...);
}
#endif

// Grid size for a grid-stride loop over n items with `threads` per block.
static inline unsigned grid_for(int64_t n, int threads, unsigned cap = 65535u * 8u)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > (int64_t)cap) b = (int64_t)cap;
    return (unsigned)b;
}

// An attribute of the current device, looked up once per device per
// translation unit and attribute (a launch path must not pay a driver query
// per call); `fallback` if it cannot be read.
template <cudaDeviceAttr A>
static inline int device_attr_cached(int fallback)
{
    static int cached[64];   // value + 1, 0 = not read
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return fallback;
    if (dev >= 0 && dev < 64 && cached[dev]) return cached[dev] - 1;
    int v = 0;
    if (cudaDeviceGetAttribute(&v, A, dev) != cudaSuccess || v < 0) v = fallback;
    if (dev >= 0 && dev < 64) cached[dev] = v + 1;
    return v;
}

// Opt-in shared memory per block of the current device (48 KiB if unknown).
static inline size_t smem_optin_bytes()
{
    return (size_t)device_attr_cached<cudaDevAttrMaxSharedMemoryPerBlockOptin>(48 * 1024);
}

// Streaming multiprocessors of the current device (1 if unknown).
static inline int sm_count() { return device_attr_cached<cudaDevAttrMultiProcessorCount>(1); }

// Resident blocks per SM of `kernel` at `threads` and `smem` bytes of dynamic
// shared memory, asked once per device and kernel (`cache`, the kernel's own:
// smem << 8 | blocks, per device); smem changes with the layer's width, so a
// new size asks again. 1 if the runtime cannot say.
template <typename K>
int occupancy_cached(K kernel, int threads, size_t smem, uint64_t *cache)
{
    int dev = 0;
    cudaGetDevice(&dev);
    const bool slot = dev >= 0 && dev < 64;
    if (slot && cache[dev] && (cache[dev] >> 8) == (uint64_t)smem) return (int)(cache[dev] & 255);
    int b = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, threads, smem) != cudaSuccess || b < 1) {
        (void)cudaGetLastError();   // not a launch error
        b = 1;
    }
    if (b > 255) b = 255;
    if (slot) cache[dev] = (uint64_t)smem << 8 | (uint64_t)b;
    return b;
}

// Raise a kernel's dynamic shared memory limit once per device and size
// (`set` is the kernel's own cache: the largest size allowed per device).
template <typename K>
cudaError_t allow_smem_cached(K kernel, size_t bytes, size_t *set)
{
    if (bytes <= 48 * 1024) return cudaSuccess;
    int dev = 0;
    cudaGetDevice(&dev);
    if (dev >= 0 && dev < 64 && bytes <= set[dev]) return cudaSuccess;
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e == cudaSuccess && dev >= 0 && dev < 64) set[dev] = bytes;
    return e;
}

// Asynchronous copies global -> shared (cp.async, sm_80 and later): the
// copy of 16 bytes from g to s (both 16-byte aligned), of which the first
// src_bytes (0..16) are read and the rest zero-filled; copies issued since
// the last commit form a group; cp_async_wait(n) returns when at most the n
// newest groups of this thread are still in flight (n a constant 0..7 after
// inlining). Another thread sees the data after a barrier that follows
// the wait. The emulator (tests/cuda_emu/simt.h) performs a group's copies
// either at its wait or at issue, as a test asks, so a read before the wait
// and a slot overwritten while it is still read both show there.
__device__ __forceinline__ void cp_async16(void *s, const void *g, int src_bytes)
{
#if defined(CQK_EMU)
    cqk_emu::cp_async(s, g, 16, src_bytes);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned sa = (unsigned)__cvta_generic_to_shared(s);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g), "r"(src_bytes) : "memory");
#else
    for (int i = 0; i < 16; ++i) ((unsigned char *)s)[i] = i < src_bytes ? ((const unsigned char *)g)[i] : 0;
#endif
}

__device__ __forceinline__ void cp_async_commit()
{
#if defined(CQK_EMU)
    cqk_emu::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void cp_async_wait(int n)
{
#if defined(CQK_EMU)
    cqk_emu::cp_async_wait(n);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    switch (n) {   // the instruction takes an immediate
    case 0: asm volatile("cp.async.wait_group 0;\n" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;\n" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;\n" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;\n" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;\n" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;\n" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;\n" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 7;\n" ::: "memory"); break;
    }
#else
    (void)n;
#endif
}

__device__ __forceinline__ float load_f(const void *p, int dt, int64_t i)
{
    switch (dt) {
    case CQK_F16: return __half2float(((const __half *)p)[i]);
    case CQK_BF16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case CQK_I32: return (float)((const int32_t *)p)[i];
    default: return ((const float *)p)[i];
    }
}

__device__ __forceinline__ void store_f(void *p, int dt, int64_t i, float v)
{
    switch (dt) {
    case CQK_F16: ((__half *)p)[i] = __float2half_rn(v); break;
    case CQK_BF16: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v); break;
    case CQK_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    default: ((float *)p)[i] = v; break;
    }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CQK_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(CQK_FULL_MASK, v, o));
    return v;
}

// Block-wide sum; every thread gets the result. `sh` holds >= 32 T.
// blockDim.x must be a multiple of 32. Fixed reduction order: deterministic.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();   // sh may still be read by a previous call
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    T r = lane < nw ? sh[lane] : T(0);
    if (warp == 0) r = warp_sum(r);
    if (threadIdx.x == 0) sh[0] = r;
    __syncthreads();
    r = sh[0];
    return r;
}

__device__ __forceinline__ float block_max(float v, float *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : -INFINITY;
    if (warp == 0) r = warp_max(r);
    if (threadIdx.x == 0) sh[0] = r;
    __syncthreads();
    r = sh[0];
    return r;
}

}  // namespace cqk
