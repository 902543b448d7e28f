/* cherryq: registry entry points of backends that were not built. */
#include <stdio.h>

#include "backends.h"
#include "cq_config.h"

#if !CQ_HAVE_VULKAN
int cq_vulkan_probe(cq_backend_info *info)
{
    info->n_devices = 0;
    snprintf(info->reason, sizeof info->reason, "configure with -Dvulkan=enabled");
    return CQ_OK;
}
int cq_vulkan_devices(cq_device_info *devs, int max) { (void)devs; (void)max; return 0; }
int cq_vulkan_backend_create(cq_backend **out, int device)
{
    (void)device;
    *out = NULL;
    cq_error("the Vulkan backend is not built into this cherryq (configure with -Dvulkan=enabled); "
             "use --backend cpu");
    return CQ_ENODEV;
}
#endif

#if !CQ_HAVE_CUDA
/* weak: the emulated CUDA test build (tests/meson.build, cuda_emu) links the
 * real backend, compiled against tests/cuda_emu, over these */
__attribute__((weak)) int cq_cuda_probe(cq_backend_info *info)
{
    info->n_devices = 0;
    snprintf(info->reason, sizeof info->reason, "configure with -Dcuda=true");
    return CQ_OK;
}
__attribute__((weak)) int cq_cuda_devices(cq_device_info *devs, int max) { (void)devs; (void)max; return 0; }
__attribute__((weak)) int cq_cuda_backend_create(cq_backend **out, int device)
{
    (void)device;
    *out = NULL;
    cq_error("the CUDA backend is not built into this cherryq (configure with -Dcuda=true); "
             "use --backend vulkan or cpu");
    return CQ_ENODEV;
}
#endif
