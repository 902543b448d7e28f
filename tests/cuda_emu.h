// cherryq: a small SIMT emulator that runs CUDA kernel source on the CPU,
// so that CI (no GPU) executes the kernels' own index math, thread mapping,
// shared-memory layout and warp shuffles (tests/test_cuda_emu.cpp).
//
// Compile the kernel source as C++20 with -DCQK_EMU: cuda/common.cuh then
// includes this header instead of the CUDA headers. Every CUDA thread of a
// block is an OS thread (one per thread index, walking the blocks). __syncthreads is a
// barrier of the block's threads, a warp shuffle one of the warp's (every
// lane writes its value, waits, reads its source lane, waits), and a thread
// that returns drops out of both barriers, as an exited GPU thread counts as
// arrived. Dynamic shared memory is one zero-filled buffer per block.
//
// What it does not model: the memory model beyond these barriers (run it
// under ThreadSanitizer to see races on shared memory), timing, occupancy,
// shared-memory limits, and device-only instructions (code under
// __CUDA_ARCH__ takes its host branch, e.g. cuda/qgemv_q8.h's byte permute
// and dp4a, which tests/test_qgemv_q8.c checks bit for bit). It is a check
// of the source, not a substitute for running test_cuda on a GPU.
#ifndef CQ_TESTS_CUDA_EMU_H
#define CQ_TESTS_CUDA_EMU_H

#include <atomic>
#include <barrier>
#include <map>
#include <mutex>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include <math.h>

// ---------------------------------------------------------------- keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Static __shared__ arrays would become per-thread locals here, silently
// wrong: refuse them (dynamic shared memory: CQK_DYN_SMEM of cuda/common.cuh).
#define __shared__ static_assert(false, "cuda_emu: static __shared__ is not emulated, use CQK_DYN_SMEM");

// ---------------------------------------------------------------- runtime types
typedef int cudaError_t;
typedef struct CUstream_st *cudaStream_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) float2 { float x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return { x, y, z, w }; }
inline float2 make_float2(float x, float y) { return { x, y }; }
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3() = default;
    dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

// FP16 / BF16 as their bits; conversions exact, round to nearest even
struct __half { uint16_t x; };
struct __nv_bfloat16 { uint16_t x; };

inline float __half2float(__half h)
{
    const uint32_t s = (uint32_t)(h.x >> 15) << 31, e = (h.x >> 10) & 31, m = h.x & 0x3FF;
    uint32_t b;
    if (e == 31) b = s | 0x7F800000u | (m << 13);
    else if (e) b = s | ((e + 112) << 23) | (m << 13);
    else if (!m) b = s;
    else {   // subnormal: m * 2^-24
        const float f = (float)m * 5.9604644775390625e-8f;
        std::memcpy(&b, &f, 4);
        b |= s;
    }
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

inline __half __float2half_rn(float f)
{
    uint32_t b;
    std::memcpy(&b, &f, 4);
    const uint16_t s = (uint16_t)((b >> 16) & 0x8000);
    const float a = std::fabs(f);
    if (std::isnan(f)) return { (uint16_t)(s | 0x7E00) };
    if (a >= 65520.0f) return { (uint16_t)(s | 0x7C00) };
    if (a < 6.103515625e-5f) {   // subnormal range: multiples of 2^-24
        return { (uint16_t)(s | (uint16_t)std::nearbyint(a * 16777216.0f)) };
    }
    int e;
    const float fr = std::frexp(a, &e);                          // a = fr * 2^e, fr in [0.5, 1)
    const uint32_t m = (uint32_t)std::nearbyint(fr * 2048.0f);   // 11 significant bits
    const uint32_t v = m == 2048 ? ((uint32_t)(e + 15) << 10) : ((uint32_t)(e + 14) << 10) + (m - 1024);
    return { (uint16_t)(s | v) };
}

inline float __bfloat162float(__nv_bfloat16 h)
{
    const uint32_t b = (uint32_t)h.x << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    uint32_t b;
    std::memcpy(&b, &f, 4);
    if (std::isnan(f)) return { (uint16_t)((b >> 16) | 0x40) };
    b += 0x7FFF + ((b >> 16) & 1);
    return { (uint16_t)(b >> 16) };
}

// ---------------------------------------------------------------- intrinsics
template <typename T> inline T __ldg(const T *p) { return *p; }
inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline int __float2int_rn(float f) { return (int)std::lrint(f); }
// (hi:lo) >> (n & 31), low 32 bits (CUDA clamps n to 32; the kernels pass < 32)
inline uint32_t __funnelshift_r(uint32_t lo, uint32_t hi, unsigned n)
{
    return (uint32_t)((((uint64_t)hi << 32) | lo) >> (n & 31));
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
template <typename T> inline T min(T a, T b) { return b < a ? b : a; }
template <typename T> inline T max(T a, T b) { return a < b ? b : a; }

// ---------------------------------------------------------------- threads
namespace cqk_emu {

struct Warp {
    std::barrier<> bar{ 32 };
    uint64_t slot[32];
};

struct Block {
    explicit Block(int nthreads) : bar(nthreads), warps((size_t)(nthreads + 31) / 32) {}
    std::barrier<> bar;
    std::vector<Warp> warps;
    std::vector<unsigned char> smem;
    std::mutex mu;   // static shared arrays, one per declaration (its tag)
    std::map<const void *, std::vector<unsigned char>> stat;
};

struct Ctx {
    uint3 tid, bid;
    dim3 bdim, gdim;
    Block *block;
};

inline thread_local Ctx t_ctx;

inline Warp &warp() { return t_ctx.block->warps[t_ctx.tid.x >> 5]; }

// The block's copy of the static shared array declared at `tag`.
inline void *block_static(const void *tag, size_t bytes)
{
    Block &b = *t_ctx.block;
    std::lock_guard<std::mutex> g(b.mu);
    std::vector<unsigned char> &v = b.stat[tag];
    if (v.empty()) v.assign(bytes, 0);
    return v.data();
}

inline thread_local cudaError_t t_last_error = cudaSuccess;

template <typename T> inline T shfl(T v, int src)
{
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    Warp &w = warp();
    const int lane = (int)(t_ctx.tid.x & 31);
    std::memcpy(&w.slot[lane], &v, sizeof v);
    w.bar.arrive_and_wait();
    T r;
    std::memcpy(&r, &w.slot[src & 31], sizeof r);
    w.bar.arrive_and_wait();
    return r;
}

// Runs kernel(args...) over grid x block threads (1-D blocks whose size is a
// multiple of 32, which is what the kernels launch), `smem` bytes of dynamic
// shared memory per block. Returns cudaErrorInvalidValue for a launch a GPU
// would refuse (no threads, over 1024 per block, grid.y > 65535). One OS
// thread per thread index walks the blocks in order: a thread may start
// block b + 1 while others finish block b (blocks are independent on a GPU
// too), and every barrier counts only its own block's threads, so this
// cannot deadlock where the GPU would not.
template <typename K, typename... A>
cudaError_t launch(dim3 grid, dim3 block, size_t smem, K kernel, A... args)
{
    const unsigned nt = block.x * block.y * block.z;
    if (nt == 0 || nt > 1024 || block.y != 1 || block.z != 1 || nt % 32 || grid.x == 0 ||
        grid.y == 0 || grid.y > 65535 || grid.z == 0 || grid.z > 65535)
        return cudaErrorInvalidValue;
    const size_t nb = (size_t)grid.x * grid.y * grid.z;
    std::vector<std::unique_ptr<Block>> blocks(nb);
    for (auto &b : blocks) {
        b = std::make_unique<Block>((int)nt);
        b->smem.assign(smem + 16, 0);
    }
    std::vector<std::thread> th;
    th.reserve(nt);
    for (unsigned t = 0; t < nt; ++t)
        th.emplace_back([&, t]() {
            for (size_t i = 0; i < nb; ++i) {
                Block &b = *blocks[i];
                const uint3 bid = { (unsigned)(i % grid.x), (unsigned)(i / grid.x % grid.y),
                                    (unsigned)(i / ((size_t)grid.x * grid.y)) };
                t_ctx = Ctx{ { t, 0, 0 }, bid, block, grid, &b };
                kernel(args...);
                b.warps[t >> 5].bar.arrive_and_drop();
                b.bar.arrive_and_drop();
            }
        });
    for (auto &x : th) x.join();
    return cudaSuccess;
}

// CQK_LAUNCH: launch(), its error kept for cudaGetLastError. Runs to
// completion before returning (a synchronous stream).
template <typename K, typename... A>
void launch_on(cudaStream_t, dim3 grid, dim3 block, size_t smem, K kernel, A... args)
{
    const cudaError_t e = launch(grid, block, smem, kernel, args...);
    if (e != cudaSuccess) t_last_error = cudaErrorInvalidConfiguration;
}

}  // namespace cqk_emu

// ---------------------------------------------------------------- runtime calls
inline cudaError_t cudaGetLastError()
{
    const cudaError_t e = cqk_emu::t_last_error;
    cqk_emu::t_last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t = nullptr)
{
    std::memset(p, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int *d)
{
    *d = 0;
    return cudaSuccess;
}
// an H100/H200's opt-in shared memory per block
inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int)
{
    *v = a == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 227 * 1024 : 0;
    return cudaSuccess;
}
template <typename K> inline cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int v)
{
    return v >= 0 && v <= 227 * 1024 ? cudaSuccess : cudaErrorInvalidValue;
}
inline float atomicAdd(float *p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline int atomicMin(int *p, int v)
{
    std::atomic_ref<int> a(*p);
    int old = a.load();
    while (v < old && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
inline void __syncwarp(unsigned = 0xffffffffu) { cqk_emu::warp().bar.arrive_and_wait(); }

#define threadIdx (cqk_emu::t_ctx.tid)
#define blockIdx (cqk_emu::t_ctx.bid)
#define blockDim (cqk_emu::t_ctx.bdim)
#define gridDim (cqk_emu::t_ctx.gdim)
#define CQK_EMU_DYN_SMEM(T, name) T *name = (T *)(void *)cqk_emu::t_ctx.block->smem.data()
#define CQK_EMU_SHARED(T, name, N)                                                                 \
    static char cqk_emu_tag_##name;                                                                \
    T *name = (T *)cqk_emu::block_static(&cqk_emu_tag_##name, sizeof(T) * (size_t)(N))

inline void __syncthreads() { cqk_emu::t_ctx.block->bar.arrive_and_wait(); }
template <typename T> inline T __shfl_sync(unsigned, T v, int src) { return cqk_emu::shfl(v, src); }
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int m)
{
    return cqk_emu::shfl(v, (int)(cqk_emu::t_ctx.tid.x & 31) ^ m);
}
template <typename T> inline T __shfl_down_sync(unsigned, T v, unsigned d)
{
    const int lane = (int)(cqk_emu::t_ctx.tid.x & 31);
    return cqk_emu::shfl(v, lane + (int)d < 32 ? lane + (int)d : lane);
}

#endif
