/* cherryq: the CPU backend. Memory is plain host memory (64-byte aligned);
 * compute goes to the optimized kernels in cpu/. Always built. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "backends.h"
#include "kernels.h"

static void cpu_destroy(cq_backend *be) { free(be); }

static int cpu_alloc(cq_backend *be, size_t size, void **handle)
{
    (void)be;
    /* More than RAM + swap can never be backed. Refuse it here: where the
     * kernel overcommits (vm.overcommit_memory=1, as on some VMs) the
     * allocation would succeed and the first touch would bring the OOM
     * killer instead of a CQ_ENOMEM the caller can report. */
    struct sysinfo si;
    if (size > ((size_t)1 << 30) && sysinfo(&si) == 0 && si.mem_unit > 0 &&
        size / si.mem_unit > (size_t)si.totalram + (size_t)si.totalswap)
        return CQ_ENOMEM;
    size_t sz = (size + 63) & ~(size_t)63;
    if (sz < size) return CQ_ENOMEM;
    void *p = NULL;
    if (posix_memalign(&p, 64, sz ? sz : 64) != 0) return CQ_ENOMEM;
    *handle = p;
    return CQ_OK;
}

static void cpu_free(cq_backend *be, void *handle)
{
    (void)be;
    free(handle);
}

/* Wrapped host memory (e.g. an mmap): the buffer is marked external, so
 * cq_buffer_release never calls cpu_free on it. */
static int cpu_wrap_host(cq_backend *be, void *ptr, size_t size, void **handle)
{
    (void)be;
    (void)size;
    *handle = ptr;
    return CQ_OK;
}

static void *cpu_host_ptr(cq_backend *be, void *handle)
{
    (void)be;
    return handle;
}

static int cpu_upload(cq_backend *be, void *handle, size_t off, const void *src, size_t n)
{
    (void)be;
    memcpy((uint8_t *)handle + off, src, n);
    return CQ_OK;
}

static int cpu_download(cq_backend *be, const void *handle, size_t off, void *dst, size_t n)
{
    (void)be;
    memcpy(dst, (const uint8_t *)handle + off, n);
    return CQ_OK;
}

static int cpu_copy(cq_backend *be, void *dst, size_t doff, const void *src, size_t soff, size_t n)
{
    (void)be;
    memmove((uint8_t *)dst + doff, (const uint8_t *)src + soff, n);
    return CQ_OK;
}

static int cpu_supports(cq_backend *be, const cq_op *op)
{
    (void)be;
    return op->type > CQ_OP_NONE && op->type < CQ_OP_COUNT;
}

static int cpu_compute(cq_backend *be, const cq_op *op)
{
    (void)be;
    return cq_cpu_compute(op);
}

static int cpu_sync(cq_backend *be)
{
    (void)be;
    return CQ_OK;
}

static const cq_backend_ops k_cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .supports = cpu_supports,
    .compute = cpu_compute,
    .sync = cpu_sync,
    .host_ptr = cpu_host_ptr,
    .wrap_host = cpu_wrap_host,
};

static void cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ') c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(buf, n, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}

int cq_cpu_backend_create(cq_backend **out)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    cq_backend *be = calloc(1, sizeof *be);
    if (!be) return CQ_ENOMEM;
    be->ops = &k_cpu_ops;
    snprintf(be->name, sizeof be->name, "cpu");
    char model[200];
    cpu_model(model, sizeof model);
    snprintf(be->device, sizeof be->device, "%s, %d threads", model, cq_num_threads());
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), ps = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && ps > 0) be->mem_total = (size_t)pages * (size_t)ps;
    if (avail > 0 && ps > 0) be->mem_free = (size_t)avail * (size_t)ps;
    *out = be;
    return CQ_OK;
}

int cq_cpu_backend_devices(cq_device_info *devs, int max)
{
    if (!devs || max < 1) return 1;
    memset(devs, 0, sizeof *devs);
    cpu_model(devs[0].name, sizeof devs[0].name);
    long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && ps > 0) devs[0].mem_total = (size_t)pages * (size_t)ps;
    snprintf(devs[0].features, sizeof devs[0].features, "%d threads, OpenBLAS GEMM%s%s", cq_num_threads(),
             __builtin_cpu_supports("avx2") ? ", AVX2" : "", __builtin_cpu_supports("avx512f") ? ", AVX-512" : "");
    return 1;
}
