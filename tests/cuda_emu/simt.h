// cherryq: a small SIMT emulator that runs CUDA kernel source on the CPU,
// so that CI (no GPU) executes the kernels' own index math, thread mapping,
// shared-memory layout, barriers and warp shuffles (docs/cuda.md, "without
// a GPU"; tests/meson.build builds cuda/*.cu and backends/cuda against it).
//
// Compile the kernel source as C++20 with -DCQK_EMU: cuda/common.cuh then
// includes this header instead of the CUDA headers, and the runtime subset
// comes from include/cuda_runtime_api.h + runtime.cpp next to it. A block's
// threads run as fibers or OS threads (see "threads" below); blocks run one
// after another; a kernel launch has finished when it returns.
//
// What it does not model: the memory model beyond the barriers (build with
// ThreadSanitizer, which selects OS threads, to see shared-memory races),
// timing, occupancy, per-SM limits, and device-only instructions (code under
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
#include <sys/mman.h>

// ---------------------------------------------------------------- keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Static __shared__ arrays would become per-thread locals here, silently
// wrong: refuse them (dynamic shared memory: CQK_DYN_SMEM of cuda/common.cuh).
#define __shared__ static_assert(false, "cuda_emu: static __shared__ is not emulated, use CQK_DYN_SMEM");

// ---------------------------------------------------------------- runtime
// The runtime subset (types, error codes, cudaMemsetAsync, ...):
// tests/cuda_emu/include/cuda_runtime_api.h, implemented by runtime.cpp.
#include "cuda_runtime_api.h"

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

// the library's FP16 conversions (core/base.c: exact widening, round to
// nearest even with subnormals and overflow to infinity, as the device's)
extern "C" uint16_t cq_f32_to_f16(float f);
extern "C" float cq_f16_to_f32(uint16_t h);
inline float __half2float(__half h) { return cq_f16_to_f32(h.x); }
inline __half __float2half_rn(float f) { return { cq_f32_to_f16(f) }; }

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
// high 32 bits of the 64-bit product
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
template <typename T> inline T min(T a, T b) { return b < a ? b : a; }
template <typename T> inline T max(T a, T b) { return a < b ? b : a; }

// ---------------------------------------------------------------- threads
// Two ways to run a block's threads:
//   fibers (default on x86-64): every thread is a coroutine with its own
//     stack, all on the calling OS thread; a thread runs until it waits at
//     a barrier or returns, then the next one runs (cqk_emu_switch in
//     runtime.cpp saves the callee-saved registers and the stack pointer:
//     tens of nanoseconds, where an OS-thread barrier costs microseconds);
//   OS threads (CQK_EMU_THREADS=1, other architectures, ThreadSanitizer
//     builds): one per thread index, std::barrier for the barriers, so TSan
//     sees the kernels' shared-memory accesses as the races they would be.
// Either way a barrier completes when every thread of its block (warp) that
// has not returned has arrived, and a set of threads that can never all
// arrive (a __syncthreads some threads skip) is a deadlock: fibers report it
// and abort; OS threads hang until the test's timeout.
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define CQK_EMU_HAVE_FIBERS 1
#else
#define CQK_EMU_HAVE_FIBERS 0
#endif
extern "C" void cqk_emu_switch(void **save_sp, void *load_sp);   // runtime.cpp
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

namespace cqk_emu {

struct Sync {   // a barrier between fibers
    int arrived = 0, alive = 0;
    unsigned gen = 0;
};

struct Warp {
    std::barrier<> bar{ 32 };
    Sync sync;
    uint64_t slot[32];
};

// cp.async (cuda/common.cuh cp_async16): a thread's copies not yet waited
// for, in groups (the last one still open).
struct AsyncCopy {
    unsigned char *dst;
    const unsigned char *src;
    int bytes, src_bytes;
};
struct AsyncQueue {
    std::vector<std::vector<AsyncCopy>> done_groups;   // committed, oldest first
    std::vector<AsyncCopy> open;
};

struct Block {
    explicit Block(int nthreads)
        : bar(nthreads), warps((size_t)(nthreads + 31) / 32), async((size_t)nthreads) {}
    std::barrier<> bar;
    Sync sync;
    std::vector<Warp> warps;
    std::vector<AsyncQueue> async;   // per thread
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
inline thread_local bool t_fibers = false;   // the current launch runs fibers

inline Warp &warp() { return t_ctx.block->warps[t_ctx.tid.x >> 5]; }

// ------------------------------------------------ cp.async
// When a copy lands: false (default) at the wait that covers its group, the
// latest moment a GPU may deliver it, so a read before the wait sees stale
// shared memory; true at issue, the earliest, so a slot refilled while
// other threads still read it is overwritten under them. Tests run the
// kernels both ways.
inline bool g_async_early = false;
// Fibers only: run each warp as far as it can before the next (true), or
// every thread in turn (false, default). A missing __syncthreads between
// warps that share memory shows only when one warp can run ahead.
inline bool g_warp_greedy = false;

inline void async_do(const AsyncCopy &c)
{
    for (int i = 0; i < c.bytes; ++i) c.dst[i] = i < c.src_bytes ? c.src[i] : 0;
}

inline void cp_async(void *dst, const void *src, int bytes, int src_bytes)
{
    Block &b = *t_ctx.block;
    unsigned char *d = (unsigned char *)dst;
    if (d < b.smem.data() || d + bytes > b.smem.data() + b.smem.size() || ((uintptr_t)d & 15) ||
        ((uintptr_t)src & 15) || src_bytes < 0 || src_bytes > bytes) {
        std::fprintf(stderr, "cuda_emu: cp.async of %d bytes (%d read) to %p from %p: destination outside the "
                             "block's shared memory or misaligned\n", bytes, src_bytes, dst, src);
        std::abort();
    }
    const AsyncCopy c = { d, (const unsigned char *)src, bytes, src_bytes };
    if (g_async_early) async_do(c);
    else b.async[t_ctx.tid.x].open.push_back(c);
}

inline void cp_async_commit()
{
    AsyncQueue &q = t_ctx.block->async[t_ctx.tid.x];
    q.done_groups.push_back(std::move(q.open));
    q.open.clear();
}

inline void cp_async_wait(int n)
{
    AsyncQueue &q = t_ctx.block->async[t_ctx.tid.x];
    while ((int)q.done_groups.size() > n) {
        for (const AsyncCopy &c : q.done_groups.front()) async_do(c);
        q.done_groups.erase(q.done_groups.begin());
    }
}

// The block's copy of the static shared array declared at `tag`.
inline void *block_static(const void *tag, size_t bytes)
{
    Block &b = *t_ctx.block;
    std::lock_guard<std::mutex> g(b.mu);
    std::vector<unsigned char> &v = b.stat[tag];
    if (v.empty()) v.assign(bytes, 0);
    return v.data();
}

// ------------------------------------------------ fibers
struct Fiber {
    void *sp = nullptr;        // saved stack pointer while switched out
    Ctx ctx;
    bool done = false;
    void *fake = nullptr;      // ASan fake stack of the fiber while switched out
};

struct Sched {
    std::vector<unsigned char *> stacks;   // one per thread index, reused by every block
    size_t stack_bytes = 0;
    std::vector<Fiber> fib;
    Fiber *cur = nullptr;
    void *main_sp = nullptr;
    const void *main_bottom = nullptr;     // the OS thread's stack, for ASan
    size_t main_size = 0;
    void *main_fake = nullptr;
    unsigned long progress = 0;            // arrivals, releases, returns
    const std::function<void()> *fn = nullptr;
};
inline thread_local Sched *t_sched = nullptr;

inline void fiber_switch_out(bool finished)   // fiber -> scheduler
{
    Sched &s = *t_sched;
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_start_switch_fiber(finished ? nullptr : &s.cur->fake, s.main_bottom, s.main_size);
#else
    (void)finished;
#endif
    cqk_emu_switch(&s.cur->sp, s.main_sp);
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(s.cur->fake, &s.main_bottom, &s.main_size);
#endif
}

inline void fiber_wait(Sync &y)
{
    const unsigned g = y.gen;
    t_sched->progress++;
    if (++y.arrived == y.alive) {
        y.arrived = 0;
        y.gen++;
        return;
    }
    while (y.gen == g) fiber_switch_out(false);
}

inline void fiber_leave(Sync &y)
{
    y.alive--;
    if (y.arrived > 0 && y.arrived == y.alive) {
        y.arrived = 0;
        y.gen++;
    }
}

[[noreturn]] inline void fiber_entry()
{
    Sched &s = *t_sched;
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(nullptr, &s.main_bottom, &s.main_size);
#endif
    t_ctx = s.cur->ctx;
    (*s.fn)();
    Block &b = *t_ctx.block;
    fiber_leave(b.warps[t_ctx.tid.x >> 5].sync);
    fiber_leave(b.sync);
    s.cur->done = true;
    s.progress++;
    fiber_switch_out(true);
    std::abort();   // a finished fiber is never resumed
}

// Runs one block's nt threads as fibers on this OS thread.
inline void run_block_fibers(Sched &s, Block &b, const Ctx &proto, unsigned nt)
{
    b.sync.alive = (int)nt;
    for (auto &w : b.warps) w.sync.alive = 32;
    s.fib.assign(nt, Fiber());
    for (unsigned t = 0; t < nt; ++t) {
        Fiber &f = s.fib[t];
        f.ctx = proto;
        f.ctx.tid = { t, 0, 0 };
        // initial frame: 6 callee-saved registers, then fiber_entry as the
        // return address; entry sees rsp = 8 mod 16, as after a call
        uintptr_t top = ((uintptr_t)(s.stacks[t] + s.stack_bytes)) & ~(uintptr_t)15;
        void **sp = (void **)top;
        *--sp = nullptr;                        // fake return address of fiber_entry
        *--sp = (void *)&fiber_entry;
        for (int i = 0; i < 6; ++i) *--sp = nullptr;
        f.sp = sp;
    }
    unsigned left = nt;
    auto resume = [&](unsigned t) {
        Fiber &f = s.fib[t];
        if (f.done) return;
        s.cur = &f;
        t_ctx = f.ctx;
#if defined(__SANITIZE_ADDRESS__)
        __sanitizer_start_switch_fiber(&s.main_fake, s.stacks[t], s.stack_bytes);
#endif
        cqk_emu_switch(&s.main_sp, f.sp);
#if defined(__SANITIZE_ADDRESS__)
        __sanitizer_finish_switch_fiber(s.main_fake, nullptr, nullptr);
#endif
        f.ctx = t_ctx;
        if (f.done) left--;
    };
    while (left) {
        const unsigned long before = s.progress;
        if (g_warp_greedy) {
            // each warp as far as it gets (to a block barrier or its end)
            // before the next one moves: the largest skew between warps
            for (unsigned w0 = 0; w0 < nt; w0 += 32) {
                unsigned long p;
                do {
                    p = s.progress;
                    for (unsigned t = w0; t < w0 + 32 && t < nt; ++t) resume(t);
                } while (s.progress != p);
            }
        } else {
            for (unsigned t = 0; t < nt; ++t) resume(t);   // round robin: warps in step
        }
        if (left && s.progress == before) {
            std::fprintf(stderr, "cuda_emu: deadlock in block (%u,%u,%u): %u threads wait at barriers that "
                                 "the other threads never reach (a __syncthreads/__syncwarp/shuffle not every "
                                 "thread executes)\n", proto.bid.x, proto.bid.y, proto.bid.z, left);
            std::abort();
        }
    }
}

inline bool want_fibers()
{
    if (!CQK_EMU_HAVE_FIBERS) return false;
    const char *e = std::getenv("CQK_EMU_THREADS");
    return !(e && *e == '1');
}

// ------------------------------------------------ barriers and shuffles
inline void block_wait()
{
    if (t_fibers) fiber_wait(t_ctx.block->sync);
    else t_ctx.block->bar.arrive_and_wait();
}

inline void warp_wait()
{
    if (t_fibers) fiber_wait(warp().sync);
    else warp().bar.arrive_and_wait();
}

template <typename T> inline T shfl(T v, int src)
{
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    Warp &w = warp();
    const int lane = (int)(t_ctx.tid.x & 31);
    std::memcpy(&w.slot[lane], &v, sizeof v);
    warp_wait();
    T r;
    std::memcpy(&r, &w.slot[src & 31], sizeof r);
    warp_wait();
    return r;
}

// Runs kernel(args...) over grid x block threads (1-D blocks whose size is a
// multiple of 32, which is what the kernels launch), `smem` bytes of dynamic
// shared memory per block, blocks one after another. Returns
// cudaErrorInvalidValue for a launch a GPU would refuse (no threads, over
// 1024 per block, grid.y > 65535). With OS threads, one thread per thread
// index walks the blocks in order: it may start block b + 1 while others
// finish block b (blocks are independent on a GPU too), and every barrier
// counts only its own block's threads.
template <typename K, typename... A>
cudaError_t launch(dim3 grid, dim3 block, size_t smem, K kernel, A... args)
{
    const unsigned nt = block.x * block.y * block.z;
    if (nt == 0 || nt > 1024 || block.y != 1 || block.z != 1 || nt % 32 || grid.x == 0 ||
        grid.y == 0 || grid.y > 65535 || grid.z == 0 || grid.z > 65535)
        return cudaErrorInvalidValue;
    const size_t nb = (size_t)grid.x * grid.y * grid.z;
    auto bid_of = [&](size_t i) {
        return uint3{ (unsigned)(i % grid.x), (unsigned)(i / grid.x % grid.y), (unsigned)(i / ((size_t)grid.x * grid.y)) };
    };
    if (want_fibers()) {
        const std::function<void()> fn = [&]() { kernel(args...); };
        Sched s;
        s.fn = &fn;
#if defined(__SANITIZE_ADDRESS__)
        s.stack_bytes = (size_t)512 << 10;   // instrumented frames are larger
#else
        s.stack_bytes = (size_t)256 << 10;
#endif
        // stacks: one mapping, touched only as deep as the kernel goes
        const size_t total = s.stack_bytes * nt;
        void *map = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (map == MAP_FAILED) return cudaErrorMemoryAllocation;
        s.stacks.resize(nt);
        for (unsigned t = 0; t < nt; ++t) s.stacks[t] = (unsigned char *)map + t * s.stack_bytes;
        Sched *prev = t_sched;
        const bool prev_f = t_fibers;
        t_sched = &s;
        t_fibers = true;
        for (size_t i = 0; i < nb; ++i) {
            Block b((int)nt);
            b.smem.assign(smem + 16, 0);
            run_block_fibers(s, b, Ctx{ { 0, 0, 0 }, bid_of(i), block, grid, &b }, nt);
        }
        t_sched = prev;
        t_fibers = prev_f;
        munmap(map, total);
        return cudaSuccess;
    }
    std::vector<std::unique_ptr<Block>> blocks(nb);
    for (auto &b : blocks) {
        b = std::make_unique<Block>((int)nt);
        b->smem.assign(smem + 16, 0);
    }
    std::vector<std::thread> th;
    th.reserve(nt);
    for (unsigned t = 0; t < nt; ++t)
        th.emplace_back([&, t]() {
            t_fibers = false;
            for (size_t i = 0; i < nb; ++i) {
                Block &b = *blocks[i];
                t_ctx = Ctx{ { t, 0, 0 }, bid_of(i), block, grid, &b };
                kernel(args...);
                b.warps[t >> 5].bar.arrive_and_drop();
                b.bar.arrive_and_drop();
            }
        });
    for (auto &x : th) x.join();
    return cudaSuccess;
}

// CQK_LAUNCH: launch(), its error reported by cudaGetLastError. Runs to
// completion before returning (a synchronous stream).
template <typename K, typename... A>
void launch_on(cudaStream_t, dim3 grid, dim3 block, size_t smem, K kernel, A... args)
{
    if (launch(grid, block, smem, kernel, args...) != cudaSuccess)
        cqk_emu_set_launch_error(cudaErrorInvalidConfiguration);
}

}  // namespace cqk_emu

// ---------------------------------------------------------------- runtime calls
// the C++ overload of the runtime's: a kernel by its function pointer
template <typename K> inline cudaError_t cudaFuncSetAttribute(K *kernel, cudaFuncAttribute a, int v)
{
    return cudaFuncSetAttribute((const void *)kernel, a, v);
}
template <typename K>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *blocks, K *kernel, int block_size, size_t smem)
{
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, (const void *)kernel, block_size, smem);
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
inline void __syncwarp(unsigned = 0xffffffffu) { cqk_emu::warp_wait(); }

#define threadIdx (cqk_emu::t_ctx.tid)
#define blockIdx (cqk_emu::t_ctx.bid)
#define blockDim (cqk_emu::t_ctx.bdim)
#define gridDim (cqk_emu::t_ctx.gdim)
#define CQK_EMU_DYN_SMEM(T, name) T *name = (T *)(void *)cqk_emu::t_ctx.block->smem.data()
#define CQK_EMU_SHARED(T, name, N)                                                                 \
    static char cqk_emu_tag_##name;                                                                \
    T *name = (T *)cqk_emu::block_static(&cqk_emu_tag_##name, sizeof(T) * (size_t)(N))

inline void __syncthreads() { cqk_emu::block_wait(); }
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
