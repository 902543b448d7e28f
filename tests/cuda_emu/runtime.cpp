// cherryq test emulator: the CUDA runtime and cuBLAS subset of
// include/cuda_runtime_api.h and include/cublas_v2.h on the host, so that
// the CUDA backend's host code and kernels run in CI without a GPU
// (tests/meson.build: test_cuda against this, docs/cuda.md).
//
// One device, "cherryq SIMT emulator (CPU)", compute capability 9.0, with a
// 16 GiB budget: allocations are malloc'ed and counted against it, so a
// request over what is left fails with cudaErrorMemoryAllocation as on a
// GPU. Streams are synchronous (a launch has finished when it returns), so
// stream-ordered allocation and copies are plain malloc/memcpy. Errors are
// sticky per thread until cudaGetLastError, as the runtime's non-sticky
// errors are. GEMMs: OpenBLAS with cuBLAS's column-major arguments.
#include <cblas.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime_api.h"

extern "C" {
#include "cq_base.h"   // cq_f16_to_f32
}

#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
// The fibers' context switch (simt.h): push the callee-saved registers,
// store the stack pointer in *save_sp (rdi), load load_sp (rsi), pop the
// other context's registers and return into it. A new fiber's stack is
// built by simt.h to look like a switched-out one whose return address is
// its entry function.
asm(R"(
    .text
    .globl cqk_emu_switch
    .type cqk_emu_switch, @function
cqk_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cqk_emu_switch, .-cqk_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#else
// no fibers here (simt.h's want_fibers() is false): never called
extern "C" void cqk_emu_switch(void **, void *) { std::abort(); }
#endif

namespace {

constexpr size_t kTotal = (size_t)16 << 30;
constexpr int kDevices = 1;
constexpr int kSMs = 2;   // streaming multiprocessors (persistent kernels size their grids by them)

std::mutex g_mu;
std::unordered_map<void *, size_t> g_allocs;   // device allocations and their sizes
size_t g_used = 0;
thread_local cudaError_t t_err = cudaSuccess;
thread_local int t_dev = 0;

cudaError_t fail(cudaError_t e)
{
    t_err = e;
    return e;
}

cudaError_t dev_alloc(void **p, size_t n)
{
    if (!p) return fail(cudaErrorInvalidValue);
    *p = nullptr;
    std::lock_guard<std::mutex> g(g_mu);
    if (n > kTotal - g_used) return fail(cudaErrorMemoryAllocation);
    void *q = std::aligned_alloc(256, (n + 255) / 256 * 256 + 256);   // cudaMalloc aligns to 256
    if (!q) return fail(cudaErrorMemoryAllocation);
    g_allocs[q] = n;
    g_used += n;
    *p = q;
    return cudaSuccess;
}

cudaError_t dev_free(void *p)
{
    if (!p) return cudaSuccess;
    std::lock_guard<std::mutex> g(g_mu);
    auto it = g_allocs.find(p);
    if (it == g_allocs.end()) return fail(cudaErrorInvalidValue);
    g_used -= it->second;
    g_allocs.erase(it);
    std::free(p);
    return cudaSuccess;
}

struct Stream { int unused; };
struct Pool { size_t threshold; };
Pool g_pool = { 0 };

}  // namespace

extern "C" {

void cqk_emu_set_launch_error(cudaError_t e) { t_err = e; }

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "unknown error";
    }
}

cudaError_t cudaGetLastError(void)
{
    const cudaError_t e = t_err;
    t_err = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_err; }
cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int *n)
{
    *n = kDevices;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d)
{
    *d = t_dev;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d)
{
    if (d < 0 || d >= kDevices) return fail(cudaErrorInvalidDevice);
    t_dev = d;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d)
{
    if (!p) return fail(cudaErrorInvalidValue);
    if (d < 0 || d >= kDevices) return fail(cudaErrorInvalidDevice);
    std::memset(p, 0, sizeof *p);
    std::snprintf(p->name, sizeof p->name, "cherryq SIMT emulator (CPU)");
    p->totalGlobalMem = kTotal;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = kSMs;
    p->l2CacheSize = 32 << 20;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d)
{
    if (!v) return fail(cudaErrorInvalidValue);
    if (d < 0 || d >= kDevices) return fail(cudaErrorInvalidDevice);
    switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = kSMs; break;
    case cudaDevAttrMemoryClockRate: *v = 1593000; break;   // kHz
    case cudaDevAttrGlobalMemoryBusWidth: *v = 5120; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 227 * 1024; break;
    case cudaDevAttrMemoryPoolsSupported: *v = 1; break;
    default: return fail(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    std::lock_guard<std::mutex> g(g_mu);
    *free_bytes = kTotal - g_used;
    *total_bytes = kTotal;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) { return dev_alloc(p, n); }
cudaError_t cudaFree(void *p) { return dev_free(p); }
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t) { return dev_alloc(p, n); }
cudaError_t cudaFreeAsync(void *p, cudaStream_t) { return dev_free(p); }
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned)
{
    *p = std::malloc(n ? n : 1);
    return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void *p)
{
    std::free(p);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind)
{
    if (n && (!dst || !src)) return fail(cudaErrorInvalidValue);
    if (n) std::memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, cudaStream_t)
{
    return cudaMemcpy(dst, src, n, k);
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t)
{
    if (n && !p) return fail(cudaErrorInvalidValue);
    if (n) std::memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    *s = (cudaStream_t)(void *)new Stream();
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete (Stream *)(void *)s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int d)
{
    if (d < 0 || d >= kDevices) return fail(cudaErrorInvalidDevice);
    *pool = (cudaMemPool_t)(void *)&g_pool;
    return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, enum cudaMemPoolAttr a, void *v)
{
    if (a != cudaMemPoolAttrReleaseThreshold) return fail(cudaErrorInvalidValue);
    ((Pool *)(void *)pool)->threshold = (size_t) * (const uint64_t *)v;
    return cudaSuccess;
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, enum cudaMemPoolAttr a, void *v)
{
    std::lock_guard<std::mutex> g(g_mu);
    switch (a) {
    case cudaMemPoolAttrReleaseThreshold: *(uint64_t *)v = ((Pool *)(void *)pool)->threshold; break;
    case cudaMemPoolAttrReservedMemCurrent:
    case cudaMemPoolAttrUsedMemCurrent: *(uint64_t *)v = g_used; break;
    default: return fail(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }
cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute a, int v)
{
    if (!func || a != cudaFuncAttributeMaxDynamicSharedMemorySize || v < 0 || v > 227 * 1024)
        return fail(cudaErrorInvalidValue);
    return cudaSuccess;
}

// An SM of an sm_90 part without its register file: 2048 threads, 32
// blocks, 228 KiB of shared memory (1 KiB of it reserved per block). A GPU
// may fit fewer (registers); persistent kernels size their grids by this.
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *blocks, const void *func, int block_size,
                                                          size_t smem)
{
    if (!blocks || !func || block_size <= 0 || block_size > 1024 || smem > 227 * 1024)
        return fail(cudaErrorInvalidValue);
    int b = 2048 / block_size;
    if (b > 32) b = 32;
    const size_t per = smem + 1024;
    if ((size_t)b * per > 228 * 1024) b = (int)(228 * 1024 / per);
    *blocks = b;
    return cudaSuccess;
}

// ---------------------------------------------------------------- cuBLAS

struct cublasContext { cudaStream_t stream; };

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new cublasContext{ nullptr };
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusName(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    default: return "CUBLAS_STATUS_EXECUTION_FAILED";
    }
}
const char *cublasGetStatusString(cublasStatus_t s)
{
    return s == CUBLAS_STATUS_SUCCESS ? "success" : "an emulated cuBLAS call failed";
}

}  // extern "C"

namespace {

// cuBLAS's argument checks (the ones a mapping mistake would trip)
bool gemm_args_ok(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb, int ldc)
{
    if (m < 0 || n < 0 || k < 0) return false;
    if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T)) return false;
    const int ra = ta == CUBLAS_OP_N ? m : k, rb = tb == CUBLAS_OP_N ? k : n;
    auto mx1 = [](int v) { return v > 1 ? v : 1; };
    return lda >= mx1(ra) && ldb >= mx1(rb) && ldc >= mx1(m);
}

void sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const float *A, int lda,
           const float *B, int ldb, float beta, float *C, int ldc)
{
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

float widen(const void *p, cudaDataType t, size_t i)
{
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    if (t == CUDA_R_16F) return cq_f16_to_f32(h);
    const uint32_t b = (uint32_t)h << 16;   // BF16: the top half of an FP32
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

// A column-major operand of `rows` x `cols` (leading dimension ld) in FP32.
std::vector<float> to_f32(const void *p, cudaDataType t, int rows, int cols, int ld)
{
    const size_t n = cols ? (size_t)(cols - 1) * (size_t)ld + (size_t)rows : 0;
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = widen(p, t, i);
    return v;
}

}  // namespace

extern "C" {

cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc)
{
    if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
    sgemm(ta, tb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float *alpha, const float *A, int lda, long long sA,
                                         const float *B, int ldb, long long sB, const float *beta, float *C, int ldc,
                                         long long sC, int batch)
{
    if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc) || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < batch; i++)
        sgemm(ta, tb, m, n, k, *alpha, A + i * sA, lda, B + i * sB, ldb, *beta, C + i * sC, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *A, cudaDataType at, int lda,
                                          long long sA, const void *B, cudaDataType bt, int ldb, long long sB,
                                          const void *beta, void *C, cudaDataType ct, int ldc, long long sC,
                                          int batch, cublasComputeType_t compute, cublasGemmAlgo_t)
{
    if (!gemm_args_ok(ta, tb, m, n, k, lda, ldb, ldc) || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (ct != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F || at != bt) return CUBLAS_STATUS_NOT_SUPPORTED;
    const size_t ea = at == CUDA_R_32F ? 4 : 2;
    const int ra = ta == CUBLAS_OP_N ? m : k, ca = ta == CUBLAS_OP_N ? k : m;
    const int rb = tb == CUBLAS_OP_N ? k : n, cb = tb == CUBLAS_OP_N ? n : k;
    for (int i = 0; i < batch; i++) {
        const std::vector<float> a = to_f32((const char *)A + (size_t)(i * sA) * ea, at, ra, ca, lda);
        const std::vector<float> b = to_f32((const char *)B + (size_t)(i * sB) * ea, bt, rb, cb, ldb);
        sgemm(ta, tb, m, n, k, *(const float *)alpha, a.data(), lda, b.data(), ldb, *(const float *)beta,
              (float *)C + i * sC, ldc);
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
