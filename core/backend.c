/* cherryq: backend registry and thin checked wrappers around the vtable. */
#include <stdio.h>
#include <stdlib.h>

#include "backends.h"
#include "cq_config.h"
#include "cq_tensor.h"

static const char *const k_names[] = { "cpu", "vulkan", "cuda" };

int cq_backend_count(void) { return 3; }

int cq_backend_probe(int idx, cq_backend_info *info)
{
    CQ_CHECK_ARG(info && idx >= 0 && idx < 3, CQ_EINVAL);
    memset(info, 0, sizeof *info);
    info->name = k_names[idx];
    switch (idx) {
    case 0:
        info->built = true;
        info->n_devices = 1;
        info->n_hw_devices = 0;
        return CQ_OK;
    case 1:
        info->built = CQ_HAVE_VULKAN;
        return cq_vulkan_probe(info);
    default:
        info->built = CQ_HAVE_CUDA;
        return cq_cuda_probe(info);
    }
}

int cq_backend_devices(const char *name, cq_device_info *devs, int max)
{
    CQ_CHECK_ARG(name, CQ_EINVAL);
    if (!strcmp(name, "cpu")) return cq_cpu_backend_devices(devs, max);
    if (!strcmp(name, "vulkan")) return cq_vulkan_devices(devs, max);
    if (!strcmp(name, "cuda")) return cq_cuda_devices(devs, max);
    cq_error("unknown backend '%s' (known: cpu, vulkan, cuda)", name);
    return CQ_EINVAL;
}

int cq_backend_create(cq_backend **out, const char *name, int device)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    *out = NULL;
    if (!name || !strcmp(name, "auto")) {
        /* best available: a real GPU through CUDA, then Vulkan, else CPU.
         * Software Vulkan (lavapipe) is slower than our CPU kernels. */
        cq_backend_info bi;
        if (cq_backend_probe(2, &bi) == 0 && bi.n_hw_devices > 0 &&
            cq_cuda_backend_create(out, device) == 0)
            return CQ_OK;
        if (cq_backend_probe(1, &bi) == 0 && bi.n_hw_devices > 0 &&
            cq_vulkan_backend_create(out, device) == 0)
            return CQ_OK;
        return cq_cpu_backend_create(out);
    }
    if (!strcmp(name, "cpu")) return cq_cpu_backend_create(out);
    if (!strcmp(name, "vulkan")) return cq_vulkan_backend_create(out, device);
    if (!strcmp(name, "cuda")) return cq_cuda_backend_create(out, device);
    cq_error("unknown backend '%s' (known: cpu, vulkan, cuda, auto)", name);
    return CQ_EINVAL;
}

void cq_backend_destroy(cq_backend **pbe)
{
    if (!pbe || !*pbe) return;
    cq_backend *be = *pbe;
    *pbe = NULL;
    if (be->ops && be->ops->destroy) be->ops->destroy(be);
}

int cq_backend_sync(cq_backend *be)
{
    CQ_CHECK_ARG(be, CQ_EINVAL);
    return be->ops->sync ? be->ops->sync(be) : CQ_OK;
}

int cq_backend_host_alloc(cq_backend *be, size_t size, void **ptr)
{
    CQ_CHECK_ARG(be && ptr, CQ_EINVAL);
    *ptr = NULL;
    if (size == 0) size = 1;
    if (be->ops->host_alloc && be->ops->host_free) return be->ops->host_alloc(be, size, ptr);
    void *p = NULL;
    if (posix_memalign(&p, 64, size)) {
        cq_error("cannot allocate %zu bytes of host memory", size);
        return CQ_ENOMEM;
    }
    *ptr = p;
    return CQ_OK;
}

void cq_backend_host_free(cq_backend *be, void *ptr)
{
    if (!be || !ptr) return;
    if (be->ops->host_alloc && be->ops->host_free) be->ops->host_free(be, ptr);
    else free(ptr);
}

int cq_backend_supports(cq_backend *be, const cq_op *op)
{
    if (!be || !op) return 0;
    return be->ops->supports ? be->ops->supports(be, op) : 1;
}
