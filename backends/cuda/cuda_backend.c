/* cherryq CUDA backend: creation, the vtable, device memory.
 *
 * One stream per backend; every op, copy and free is ordered on it. Buffers
 * come from the device's default memory pool through cudaMallocAsync with
 * the release threshold raised to "never", so freed blocks stay cached and
 * the per-step temporaries of a training step are recycled without a driver
 * allocation. A failed allocation trims the pool once and retries, then
 * reports CQ_ENOMEM with the size and the device's free/total memory. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cq_cuda.h"
#include "cuda_internal.h"

_Static_assert((int)CQK_F32 == (int)CQ_F32 && (int)CQK_F16 == (int)CQ_F16 &&
                   (int)CQK_BF16 == (int)CQ_BF16 && (int)CQK_I32 == (int)CQ_I32 &&
                   (int)CQK_I16 == (int)CQ_I16 && (int)CQK_U16 == (int)CQ_U16 && (int)CQK_U8 == (int)CQ_U8,
               "kernel dtype codes must equal cq_dtype");

static cq_cuda_ctx *ctx_of(cq_backend *be) { return (cq_cuda_ctx *)be->ctx; }

static void log_oom(cq_cuda_ctx *c, size_t bytes, const char *what)
{
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    uint64_t used = 0, reserved = 0;
    if (c->use_pool) {
        cudaMemPoolGetAttribute(c->pool, cudaMemPoolAttrUsedMemCurrent, &used);
        cudaMemPoolGetAttribute(c->pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
    }
    cudaGetLastError();
    cq_error("CUDA: out of memory allocating %zu bytes (%.2f GiB) for %s on device %d (%s): "
             "%.2f GiB free of %.2f GiB (memory pool: %.2f GiB in use, %.2f GiB reserved); "
             "`cherryq plan --backend cuda` shows what fits: a smaller --batch, --checkpoint-activations, "
             "--offload-optimizer, --compute-dtype bf16, or --backend cpu",
             bytes, bytes / 1073741824.0, what, c->device, c->name, fr / 1073741824.0,
             tot / 1073741824.0, used / 1073741824.0, reserved / 1073741824.0);
}

int cq_cuda_malloc(cq_cuda_ctx *c, size_t bytes, void **p, const char *what)
{
    *p = NULL;
    if (bytes == 0) bytes = 1;
    cudaError_t e;
    for (int attempt = 0; attempt < 2; attempt++) {
        e = c->use_pool ? cudaMallocAsync(p, bytes, c->stream) : cudaMalloc(p, bytes);
        if (e == cudaSuccess) return CQ_OK;
        *p = NULL;
        if (e != cudaErrorMemoryAllocation) return cq_cuda_err(e, what);
        cudaGetLastError();   /* an allocation failure is not sticky */
        if (!c->use_pool || attempt) break;
        /* give cached blocks back to the driver and try once more */
        cudaStreamSynchronize(c->stream);
        cudaMemPoolTrimTo(c->pool, 0);
        cudaGetLastError();
    }
    log_oom(c, bytes, what);
    return CQ_ENOMEM;
}

void cq_cuda_mfree(cq_cuda_ctx *c, void *p)
{
    if (!p) return;
    cudaError_t e = c->use_pool ? cudaFreeAsync(p, c->stream) : cudaFree(p);
    if (e != cudaSuccess) cq_cuda_err(e, "free device memory");
}

static int cu_alloc(cq_backend *be, size_t size, void **handle)
{
    cq_cuda_ctx *c = ctx_of(be);
    cudaSetDevice(c->device);
    return cq_cuda_malloc(c, size, handle, "a buffer");
}

static void cu_free(cq_backend *be, void *handle)
{
    cq_cuda_ctx *c = ctx_of(be);
    cudaSetDevice(c->device);
    cq_cuda_mfree(c, handle);
}

static int cu_upload(cq_backend *be, void *handle, size_t off, const void *src, size_t n)
{
    cq_cuda_ctx *c = ctx_of(be);
    if (!n) return CQ_OK;
    cudaSetDevice(c->device);
    int r = cq_cuda_err(cudaMemcpyAsync((char *)handle + off, src, n, cudaMemcpyHostToDevice, c->stream),
                        "upload (cudaMemcpyAsync host to device)");
    /* the caller may reuse `src` as soon as we return */
    if (!r) r = cq_cuda_err(cudaStreamSynchronize(c->stream), "upload (synchronize)");
    return r;
}

static int cu_download(cq_backend *be, const void *handle, size_t off, void *dst, size_t n)
{
    cq_cuda_ctx *c = ctx_of(be);
    if (!n) return CQ_OK;
    cudaSetDevice(c->device);
    int r = cq_cuda_err(cudaMemcpyAsync(dst, (const char *)handle + off, n, cudaMemcpyDeviceToHost, c->stream),
                        "download (cudaMemcpyAsync device to host)");
    if (!r) r = cq_cuda_err(cudaStreamSynchronize(c->stream), "download (synchronize)");
    return r;
}

static int cu_copy(cq_backend *be, void *dst, size_t doff, const void *src, size_t soff, size_t n)
{
    cq_cuda_ctx *c = ctx_of(be);
    if (!n) return CQ_OK;
    cudaSetDevice(c->device);
    return cq_cuda_err(cudaMemcpyAsync((char *)dst + doff, (const char *)src + soff, n,
                                       cudaMemcpyDeviceToDevice, c->stream),
                       "device copy (cudaMemcpyAsync)");
}

static int cu_supports(cq_backend *be, const cq_op *op) { return cq_cuda_supports_op(ctx_of(be), op); }

static int cu_compute(cq_backend *be, const cq_op *op)
{
    cq_cuda_ctx *c = ctx_of(be);
    cudaSetDevice(c->device);
    int r = cq_cuda_compute_op(c, op);
    if (!r && c->sync_each) {
        char what[96];
        snprintf(what, sizeof what, "%s (CQ_CUDA_SYNC)", cq_op_name(op->type));
        r = cq_cuda_err(cudaStreamSynchronize(c->stream), what);
    }
    return r;
}

static int cu_sync(cq_backend *be)
{
    cq_cuda_ctx *c = ctx_of(be);
    cudaSetDevice(c->device);
    return cq_cuda_err(cudaStreamSynchronize(c->stream), "synchronize (an earlier kernel failed)");
}

static void *cu_host_ptr(cq_backend *be, void *handle)
{
    (void)be;
    (void)handle;
    return NULL;   /* device memory */
}

static void cu_destroy(cq_backend *be)
{
    if (!be) return;
    cq_cuda_ctx *c = ctx_of(be);
    if (c) {
        cudaSetDevice(c->device);
        if (c->stream) cudaStreamSynchronize(c->stream);
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        cudaGetLastError();
        free(c);
    }
    free(be);
}

/* pinned host memory: page-locked, so uploads/downloads of offloaded
 * optimizer states run at full PCIe speed (and could overlap on a stream) */
static int cu_host_alloc(cq_backend *be, size_t size, void **ptr)
{
    cq_cuda_ctx *c = ctx_of(be);
    cudaSetDevice(c->device);
    cudaError_t e = cudaHostAlloc(ptr, size, cudaHostAllocDefault);
    if (e == cudaSuccess) return CQ_OK;
    *ptr = NULL;
    cudaGetLastError();
    cq_error("CUDA: cannot allocate %zu bytes (%.2f GiB) of pinned host memory: %s", size, size / 1073741824.0,
             cudaGetErrorString(e));
    return CQ_ENOMEM;
}

static void cu_host_free(cq_backend *be, void *ptr)
{
    (void)be;
    cudaError_t e = cudaFreeHost(ptr);
    if (e != cudaSuccess) cq_cuda_err(e, "free pinned host memory");
}

static const cq_backend_ops k_cuda_ops = {
    .name = "cuda",
    .destroy = cu_destroy,
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .copy = cu_copy,
    .supports = cu_supports,
    .compute = cu_compute,
    .sync = cu_sync,
    .host_ptr = cu_host_ptr,
    .wrap_host = NULL,
    .host_alloc = cu_host_alloc,
    .host_free = cu_host_free,
};

int cq_cuda_backend_create(cq_backend **out, int device)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    *out = NULL;
    int count = 0, dev = 0;
    char reason[256];
    if (cq_cuda_runtime_check(&count, reason, sizeof reason)) {
        cq_error("%s", reason);
        return CQ_ENODEV;
    }
    int r = cq_cuda_pick_device(device, count, &dev);
    if (r) return r;
    struct cudaDeviceProp p;
    if ((r = cq_cuda_err(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties"))) return r;
    if (p.major < 8) {
        cq_error("CUDA: device %d (%s) has compute capability %d.%d; cherryq's CUDA kernels are built "
                 "for 8.0+ (sm_80, sm_90); use --backend vulkan or cpu", dev, p.name, p.major, p.minor);
        return CQ_ENODEV;
    }
    if ((r = cq_cuda_err(cudaSetDevice(dev), "cudaSetDevice"))) return r;

    cq_backend *be = calloc(1, sizeof *be);
    cq_cuda_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return CQ_ENOMEM;
    }
    be->ops = &k_cuda_ops;
    be->ctx = c;
    c->device = dev;
    c->cc_major = p.major;
    c->cc_minor = p.minor;
    c->sm_count = p.multiProcessorCount;
    snprintf(c->name, sizeof c->name, "%s", p.name);

    r = cq_cuda_err(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    if (!r) {
        cublasStatus_t s = cublasCreate(&c->blas);
        if (s != CUBLAS_STATUS_SUCCESS) c->blas = NULL;
        r = cq_cublas_err(s, "cublasCreate");
    }
    if (!r) r = cq_cublas_err(cublasSetStream(c->blas, c->stream), "cublasSetStream");
    /* plain FP32 GEMMs (no TF32): results comparable with the CPU backend */
    if (!r) r = cq_cublas_err(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    if (r) {
        cu_destroy(be);
        return r;
    }

    int pools = 0;
    cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, dev);
    if (pools && cudaDeviceGetDefaultMemPool(&c->pool, dev) == cudaSuccess) {
        uint64_t keep = UINT64_MAX;
        if (cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep) == cudaSuccess)
            c->use_pool = 1;
    }
    cudaGetLastError();

    const char *sy = getenv("CQ_CUDA_SYNC");
    c->sync_each = sy && *sy && strcmp(sy, "0") != 0;

    snprintf(be->name, sizeof be->name, "cuda");
    char desc[200];
    cq_cuda_describe(dev, desc, sizeof desc);
    snprintf(be->device, sizeof be->device, "%.60s (%.190s)", p.name, desc);
    be->device_index = dev;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
        be->mem_total = tot;
        be->mem_free = fr;
    }
    cudaGetLastError();
    cq_info("CUDA: device %d: %s%s", dev, be->device, c->use_pool ? "" : " (no memory pools: cudaMalloc)");
    *out = be;
    return CQ_OK;
}
