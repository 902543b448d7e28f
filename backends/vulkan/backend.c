/* cherryq Vulkan backend: the cq_backend vtable, create and destroy. */
#include <stdio.h>
#include <stdlib.h>

#include "backends.h"
#include "vk_internal.h"

static cq_vk *VK(cq_backend *be) { return (cq_vk *)be->ctx; }

static int vk_alloc(cq_backend *be, size_t size, void **handle)
{
    cq_vk_buf *b;
    int r = cq_vk_alloc(VK(be), size, &b);
    *handle = r ? NULL : b;
    return r;
}

static void vk_free(cq_backend *be, void *handle)
{
    cq_vk_free(VK(be), (cq_vk_buf *)handle);
}

/* An error a shader reported (fakequant on a non-finite scale, an embedding
 * id out of range) is returned once, at the next sync or download. */
static int take_pending(cq_vk *vk)
{
    int e = vk->pending_error;
    vk->pending_error = 0;
    return e;
}

static int vk_upload(cq_backend *be, void *handle, size_t off, const void *src, size_t n)
{
    if (!handle || (!src && n)) return CQ_EINVAL;
    return cq_vk_upload(VK(be), (cq_vk_buf *)handle, off, src, n);
}

static int vk_download(cq_backend *be, const void *handle, size_t off, void *dst, size_t n)
{
    if (!handle || (!dst && n)) return CQ_EINVAL;
    int r = cq_vk_download(VK(be), (cq_vk_buf *)handle, off, dst, n);
    return r ? r : take_pending(VK(be));
}

static int vk_copy(cq_backend *be, void *dst, size_t doff, const void *src, size_t soff, size_t n)
{
    if (!dst || !src) return CQ_EINVAL;
    return cq_vk_copy(VK(be), (cq_vk_buf *)dst, doff, (cq_vk_buf *)src, soff, n);
}

static int vk_sync(cq_backend *be)
{
    int r = cq_vk_flush(VK(be));
    return r ? r : take_pending(VK(be));
}

static void *vk_host_ptr(cq_backend *be, void *handle)
{
    /* Even where memory is mapped (UMA), recorded work may still be pending:
     * the host goes through upload/download, which synchronize. */
    (void)be;
    (void)handle;
    return NULL;
}

static void vk_destroy(cq_backend *be)
{
    if (!be) return;
    cq_vk *vk = VK(be);
    if (vk) {
        if (vk->dev) {
            cq_vk_flush(vk);
            vkDeviceWaitIdle(vk->dev);
            if (vk->rope_tab) cq_vk_free_now(vk, vk->rope_tab);
            if (vk->dummy) cq_vk_free_now(vk, vk->dummy);
            if (vk->status) cq_vk_free_now(vk, vk->status);
            cq_vk_cmd_fini(vk);
            cq_vk_pipe_fini(vk);
            cq_vk_mem_fini(vk);
        }
        cq_vk_close(vk);
        free(vk);
    }
    free(be);
}

static const cq_backend_ops k_vk_ops = {
    .name = "vulkan",
    .destroy = vk_destroy,
    .alloc = vk_alloc,
    .free = vk_free,
    .upload = vk_upload,
    .download = vk_download,
    .copy = vk_copy,
    .supports = cq_vk_supports,
    .compute = cq_vk_compute,
    .sync = vk_sync,
    .host_ptr = vk_host_ptr,
    .wrap_host = NULL,
};

int cq_vulkan_backend_create(cq_backend **out, int device)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    *out = NULL;
    cq_backend *be = calloc(1, sizeof *be);
    cq_vk *vk = calloc(1, sizeof *vk);
    if (!be || !vk) {
        free(be);
        free(vk);
        return CQ_ENOMEM;
    }
    be->ops = &k_vk_ops;
    be->ctx = vk;
    snprintf(be->name, sizeof be->name, "vulkan");
    int r = cq_vk_open(vk, device);
    if (!r) r = cq_vk_mem_init(vk);
    if (!r) r = cq_vk_pipe_init(vk);
    if (!r) r = cq_vk_cmd_init(vk);
    if (!r) r = cq_vk_alloc_own(vk, 256, &vk->dummy);
    if (!r) r = cq_vk_alloc_host(vk, 16, &vk->status);
    if (r) {
        vk_destroy(be);
        return r;
    }
    memset(vk->status->map, 0, 16);
    char feat[512];
    cq_vk_caps_describe(&vk->caps, feat, sizeof feat);
    snprintf(be->device, sizeof be->device, "%s", vk->caps.name);
    be->device_index = vk->index;
    be->mem_total = (size_t)vk->caps.heap_device;
    be->mem_free = 0;
    cq_info("vulkan: device %d: %s (%s)", vk->index, vk->caps.name, feat);
    *out = be;
    return CQ_OK;
}
