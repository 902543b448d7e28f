/* cherryq CUDA backend: driver/runtime checks, device enumeration and
 * selection, error reporting. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "cq_cuda.h"
#include "cuda_internal.h"

int cq_cuda_err(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return CQ_OK;
    cq_error("CUDA: %s: %s: %s", what, cudaGetErrorName(e), cudaGetErrorString(e));
    switch (e) {
    case cudaErrorMemoryAllocation: return CQ_ENOMEM;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration: return CQ_EINVAL;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorNoKernelImageForDevice: return CQ_ENODEV;
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorHardwareStackError:
    case cudaErrorAssert:
        cq_error("CUDA: the device context is now unusable (sticky error); every later CUDA "
                 "call of this process will fail: restart the program");
        return CQ_EIO;
    default: return CQ_EIO;
    }
}

const char *cq_cublas_status_name(cublasStatus_t s)
{
    return cublasGetStatusName(s);
}

int cq_cublas_err(cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS) return CQ_OK;
    cq_error("cuBLAS: %s: %s: %s", what, cublasGetStatusName(s), cublasGetStatusString(s));
    switch (s) {
    case CUBLAS_STATUS_ALLOC_FAILED: return CQ_ENOMEM;
    case CUBLAS_STATUS_INVALID_VALUE: return CQ_EINVAL;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH: return CQ_ENOTSUP;
    default: return CQ_EIO;
    }
}

static void version_str(int v, char *buf, size_t n)
{
    snprintf(buf, n, "%d.%d", v / 1000, (v % 1000) / 10);
}

int cq_cuda_runtime_check(int *count, char *reason, size_t n)
{
    *count = 0;
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);    /* 0 when no driver is installed */
    cudaRuntimeGetVersion(&rt);
    int cnt = 0;
    cudaError_t e = cudaGetDeviceCount(&cnt);
    if (e != cudaSuccess) {
        cudaGetLastError();        /* not sticky: clear it */
        if (drv > 0 && drv < rt) {
            char dv[16], rv[16];
            version_str(drv, dv, sizeof dv);
            version_str(rt, rv, sizeof rv);
            snprintf(reason, n,
                     "CUDA: the NVIDIA driver supports CUDA %s but cherryq was built with the CUDA %s "
                     "runtime (cudaGetDeviceCount: %s); update the driver, or use --backend vulkan or cpu",
                     dv, rv, cudaGetErrorString(e));
        } else {
            snprintf(reason, n,
                     "CUDA: no NVIDIA driver/GPU found (cudaGetDeviceCount: %s); use --backend vulkan or cpu",
                     cudaGetErrorString(e));
        }
        return CQ_ENODEV;
    }
    if (cnt <= 0) {
        snprintf(reason, n,
                 "CUDA: no NVIDIA driver/GPU found (cudaGetDeviceCount: 0 devices); use --backend vulkan or cpu");
        return CQ_ENODEV;
    }
    *count = cnt;
    return CQ_OK;
}

static int all_digits(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

static int contains_nocase(const char *hay, const char *needle)
{
    size_t nl = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < nl && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == nl) return 1;
    }
    return 0;
}

int cq_cuda_pick_device(int requested, int count, int *out)
{
    if (requested >= 0) {
        if (requested >= count) {
            cq_error("CUDA: device %d requested but only %d CUDA device%s found", requested, count,
                     count == 1 ? "" : "s");
            return CQ_ENODEV;
        }
        *out = requested;
        return CQ_OK;
    }
    const char *var = "CQ_CUDA_DEVICE", *sel = getenv(var);
    if (!sel || !*sel) {
        var = "CQ_DEVICE";
        sel = getenv(var);
    }
    if (!sel || !*sel) {
        *out = 0;
        return CQ_OK;
    }
    if (all_digits(sel)) {
        long v = strtol(sel, NULL, 10);
        if (v >= count) {
            cq_error("CUDA: %s=%s but only %d CUDA device%s found", var, sel, count, count == 1 ? "" : "s");
            return CQ_ENODEV;
        }
        *out = (int)v;
        return CQ_OK;
    }
    for (int i = 0; i < count; i++) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) == cudaSuccess && contains_nocase(p.name, sel)) {
            *out = i;
            return CQ_OK;
        }
    }
    cq_error("CUDA: %s=%s matches no CUDA device; devices:", var, sel);
    for (int i = 0; i < count; i++) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) == cudaSuccess) cq_error("  %d: %s", i, p.name);
    }
    return CQ_ENODEV;
}

void cq_cuda_describe(int dev, char *buf, size_t n)
{
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        cudaGetLastError();
        snprintf(buf, n, "unknown CUDA device %d", dev);
        return;
    }
    int memclk = 0, bus = 0, optin = 0;
    cudaDeviceGetAttribute(&memclk, cudaDevAttrMemoryClockRate, dev);   /* kHz */
    cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, dev); /* bits */
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    cudaGetLastError();
    double peak = 2.0 * memclk * 1e3 * (bus / 8.0) / 1e9;   /* DDR: 2 transfers per clock */
    snprintf(buf, n, "sm_%d%d, %d SMs, %.1f GiB, %d-bit bus @ %d MHz (~%.0f GB/s peak), L2 %d MiB, "
             "smem/block %d KiB%s",
             p.major, p.minor, p.multiProcessorCount, p.totalGlobalMem / 1073741824.0, bus, memclk / 1000,
             peak, p.l2CacheSize >> 20, optin >> 10, p.major < 8 ? " (unsupported: needs sm_80+)" : "");
}

int cq_cuda_probe(cq_backend_info *info)
{
    CQ_CHECK_ARG(info, CQ_EINVAL);
    info->n_devices = 0;
    info->n_hw_devices = 0;
    int count = 0;
    if (cq_cuda_runtime_check(&count, info->reason, sizeof info->reason)) return CQ_OK;
    int usable = 0;
    for (int i = 0; i < count; i++) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) == cudaSuccess && p.major >= 8) usable++;
    }
    cudaGetLastError();
    if (!usable) {
        snprintf(info->reason, sizeof info->reason,
                 "CUDA: %d device%s found but none has compute capability 8.0+ (cherryq's kernels are "
                 "built for sm_80 and sm_90); use --backend vulkan or cpu",
                 count, count == 1 ? "" : "s");
        return CQ_OK;
    }
    info->n_devices = usable;
    info->n_hw_devices = usable;
    info->reason[0] = 0;
    return CQ_OK;
}

int cq_cuda_devices(cq_device_info *devs, int max)
{
    int count = 0;
    char reason[256];
    if (cq_cuda_runtime_check(&count, reason, sizeof reason)) return 0;
    if (!devs || max < 1) return count;
    int n = count < max ? count : max;
    for (int i = 0; i < n; i++) {
        memset(&devs[i], 0, sizeof devs[i]);
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) == cudaSuccess) {
            snprintf(devs[i].name, sizeof devs[i].name, "%s", p.name);
            devs[i].mem_total = p.totalGlobalMem;
        }
        cq_cuda_describe(i, devs[i].features, sizeof devs[i].features);
    }
    cudaGetLastError();
    return n;
}

int cq_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    CQ_CHECK_ARG(free_bytes && total_bytes, CQ_EINVAL);
    *free_bytes = *total_bytes = 0;
    int count = 0, dev = 0;
    char reason[256];
    if (cq_cuda_runtime_check(&count, reason, sizeof reason)) {
        cq_error("%s", reason);
        return CQ_ENODEV;
    }
    int r = cq_cuda_pick_device(-1, count, &dev);
    if (r) return r;
    int prev = 0;
    cudaGetDevice(&prev);
    r = cq_cuda_err(cudaSetDevice(dev), "cudaSetDevice");
    if (!r) r = cq_cuda_err(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
    cudaSetDevice(prev);
    return r;
}
