/* cherryq Vulkan backend: command recording and synchronization.
 *
 * compute() records dispatches into one open command buffer (a "batch");
 * nothing is submitted until a result is needed: sync(), a download, an
 * upload into a buffer the batch uses, or CQ_VK_BATCH_MAX dispatches. Then
 * the batch is submitted and its fence waited on.
 *
 * Barriers: the byte ranges each command reads and writes since the last
 * barrier are tracked; a command that reads what an earlier one wrote, or
 * writes what an earlier one read or wrote (overlapping ranges of the same
 * VkBuffer), gets a compute/transfer memory barrier before it. Independent
 * dispatches (e.g. the q, k, v projections) run without one.
 */
#include <stdio.h>
#include <stdlib.h>

#include "vk_internal.h"

#define SETS_PER_POOL 256

static int new_dpool(cq_vk *vk)
{
    if (vk->n_dpools == vk->cap_dpools) {
        int nc = vk->cap_dpools ? vk->cap_dpools * 2 : 4;
        VkDescriptorPool *np = realloc(vk->dpools, (size_t)nc * sizeof *np);
        if (!np) return CQ_ENOMEM;
        vk->dpools = np;
        vk->cap_dpools = nc;
    }
    VkDescriptorPoolSize ps = { .type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                .descriptorCount = SETS_PER_POOL * CQ_VK_MAX_BIND };
    VkDescriptorPoolCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = SETS_PER_POOL,
        .poolSizeCount = 1,
        .pPoolSizes = &ps,
    };
    VkResult vr = vkCreateDescriptorPool(vk->dev, &ci, NULL, &vk->dpools[vk->n_dpools]);
    if (vr != VK_SUCCESS) {
        cq_error("vulkan: cannot create a descriptor pool on %s: %s", vk->caps.name, cq_vk_result_str(vr));
        return cq_vk_status(vr);
    }
    vk->n_dpools++;
    return CQ_OK;
}

int cq_vk_cmd_init(cq_vk *vk)
{
    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_TRANSIENT_BIT,
        .queueFamilyIndex = vk->qfam,
    };
    VkResult vr = vkCreateCommandPool(vk->dev, &pci, NULL, &vk->cpool);
    if (vr != VK_SUCCESS) goto fail;
    VkCommandBufferAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = vk->cpool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    vr = vkAllocateCommandBuffers(vk->dev, &ai, &vk->cb);
    if (vr != VK_SUCCESS) goto fail;
    VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    vr = vkCreateFence(vk->dev, &fci, NULL, &vk->fence);
    if (vr != VK_SUCCESS) goto fail;
    return new_dpool(vk);
fail:
    cq_error("vulkan: cannot create command objects on %s: %s", vk->caps.name, cq_vk_result_str(vr));
    return cq_vk_status(vr);
}

void cq_vk_cmd_fini(cq_vk *vk)
{
    for (int i = 0; i < vk->n_dpools; i++) vkDestroyDescriptorPool(vk->dev, vk->dpools[i], NULL);
    free(vk->dpools);
    vk->dpools = NULL;
    vk->n_dpools = vk->cap_dpools = 0;
    if (vk->fence) vkDestroyFence(vk->dev, vk->fence, NULL);
    if (vk->cpool) vkDestroyCommandPool(vk->dev, vk->cpool, NULL);
    vk->fence = VK_NULL_HANDLE;
    vk->cpool = VK_NULL_HANDLE;
    for (int i = 0; i < vk->n_deferred; i++) cq_vk_free_now(vk, vk->deferred[i]);
    free(vk->deferred);
    vk->deferred = NULL;
    vk->n_deferred = vk->cap_deferred = 0;
}

bool cq_vk_in_batch(const cq_vk *vk, const cq_vk_buf *b)
{
    return vk->recording && b && b->batch == vk->serial;
}

int cq_vk_begin(cq_vk *vk)
{
    if (vk->recording) return CQ_OK;
    VkCommandBufferBeginInfo bi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    VkResult vr = vkBeginCommandBuffer(vk->cb, &bi);
    if (vr != VK_SUCCESS) {
        cq_error("vulkan: vkBeginCommandBuffer failed on %s: %s", vk->caps.name, cq_vk_result_str(vr));
        return cq_vk_status(vr);
    }
    vk->recording = true;
    vk->serial++;
    vk->n_dispatch = 0;
    vk->n_haz = 0;
    return CQ_OK;
}

static void barrier(cq_vk *vk)
{
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                         VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    VkPipelineStageFlags st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    vkCmdPipelineBarrier(vk->cb, st, st, 0, 1, &mb, 0, NULL, 0, NULL);
    vk->n_haz = 0;
}

void cq_vk_track(cq_vk *vk, cq_vk_bind *binds, int n)
{
    bool need = false;
    for (int i = 0; i < n && !need; i++) {
        if (!binds[i].b) continue;
        VkBuffer buf = binds[i].b->buf;
        VkDeviceSize lo = binds[i].b->off + binds[i].lo, hi = binds[i].b->off + binds[i].hi;
        for (int j = 0; j < vk->n_haz; j++) {
            const cq_vk_access *a = &vk->haz[j];
            if (a->buf == buf && a->lo < hi && lo < a->hi && (a->write || binds[i].write)) {
                need = true;
                break;
            }
        }
    }
    if (need || vk->n_haz + n > CQ_VK_MAX_HAZ) barrier(vk);
    for (int i = 0; i < n; i++) {
        if (!binds[i].b) continue;
        binds[i].b->batch = vk->serial;
        vk->haz[vk->n_haz++] = (cq_vk_access){
            .buf = binds[i].b->buf,
            .lo = binds[i].b->off + binds[i].lo,
            .hi = binds[i].b->off + binds[i].hi,
            .write = binds[i].write,
        };
    }
}

int cq_vk_window(cq_vk *vk, cq_vk_bind *bd, uint32_t *rel, const char *what)
{
    const cq_vk_buf *b = bd->b;
    VkDeviceSize maxr = vk->caps.max_sb_range & ~(VkDeviceSize)3;
    if (b->span <= maxr) {
        bd->win_off = b->off;
        bd->win_size = b->span;
        *rel = (uint32_t)bd->lo;
        return CQ_OK;
    }
    /* a window [ws, we) inside the VkBuffer that covers the range plus the
     * read-ahead pad, starting on the offset alignment */
    VkDeviceSize a = vk->caps.min_sb_align ? vk->caps.min_sb_align : 4;
    VkDeviceSize lo = b->off + bd->lo;
    VkDeviceSize ws = lo / a * a;
    VkDeviceSize we = b->off + bd->hi + 8;
    if (we > b->off + b->span) we = b->off + b->span;
    we = (we + 3) & ~(VkDeviceSize)3;
    if (we - ws > maxr) {
        cq_error("vulkan: %s spans %llu bytes (%.1f MiB), more than %s can bind at once "
                 "(maxStorageBufferRange %u bytes = %.1f MiB)",
                 what, (unsigned long long)(bd->hi - bd->lo), (double)(bd->hi - bd->lo) / 1048576.0,
                 vk->caps.name, vk->caps.max_sb_range, (double)vk->caps.max_sb_range / 1048576.0);
        return CQ_ENOTSUP;
    }
    bd->win_off = ws;
    bd->win_size = we - ws;
    *rel = (uint32_t)(lo - ws);
    return CQ_OK;
}

void cq_vk_grid1d(const cq_vk *vk, uint64_t groups, uint32_t *gx, uint32_t *gy)
{
    uint64_t mx = vk->caps.max_wg_count[0] < 65535u ? vk->caps.max_wg_count[0] : 65535u;
    if (groups == 0) groups = 1;
    if (groups <= mx) {
        *gx = (uint32_t)groups;
        *gy = 1;
    } else {
        *gx = (uint32_t)mx;
        *gy = (uint32_t)((groups + mx - 1) / mx);
    }
}

static int alloc_set(cq_vk *vk, VkDescriptorSet *set)
{
    for (;;) {
        VkDescriptorSetAllocateInfo ai = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
            .descriptorPool = vk->dpools[vk->cur_dpool],
            .descriptorSetCount = 1,
            .pSetLayouts = &vk->dsl,
        };
        VkResult vr = vkAllocateDescriptorSets(vk->dev, &ai, set);
        if (vr == VK_SUCCESS) return CQ_OK;
        if (vr != VK_ERROR_OUT_OF_POOL_MEMORY && vr != VK_ERROR_FRAGMENTED_POOL) {
            cq_error("vulkan: vkAllocateDescriptorSets failed on %s: %s", vk->caps.name, cq_vk_result_str(vr));
            return cq_vk_status(vr);
        }
        vk->cur_dpool++;
        if (vk->cur_dpool == vk->n_dpools) {
            int r = new_dpool(vk);
            if (r) {
                vk->cur_dpool--;
                return r;
            }
        }
    }
}

int cq_vk_dispatch(cq_vk *vk, cq_vk_shader_id id, cq_vk_bind *binds, int nbind, const void *push,
                   size_t push_size, uint32_t gx, uint32_t gy, uint32_t gz)
{
    if (nbind > CQ_VK_MAX_BIND || push_size > CQ_VK_PUSH_SIZE) return CQ_EINVAL;
    for (int d = 0; d < 3; d++) {
        uint32_t g = d == 0 ? gx : d == 1 ? gy : gz;
        if (g > vk->caps.max_wg_count[d]) {
            cq_error("vulkan: %s: %u workgroups in dimension %d exceed %s's limit %u",
                     cq_vk_shader_get(id)->name, g, d, vk->caps.name, vk->caps.max_wg_count[d]);
            return CQ_ENOTSUP;
        }
    }
    if (gx == 0 || gy == 0 || gz == 0) return CQ_OK;
    VkPipeline pipe;
    int r = cq_vk_pipeline(vk, id, &pipe);
    if (r) return r;
    if (vk->recording && vk->n_dispatch >= CQ_VK_BATCH_MAX && (r = cq_vk_flush(vk)) != 0) return r;
    if ((r = cq_vk_begin(vk)) != 0) return r;
    for (int i = 0; i < nbind; i++) {
        if (!binds[i].b || binds[i].win_size) continue;
        uint32_t rel;
        if ((r = cq_vk_window(vk, &binds[i], &rel, "a tensor")) != 0) return r;
    }
    VkDescriptorSet set;
    if ((r = alloc_set(vk, &set)) != 0) return r;
    VkDescriptorBufferInfo bi[CQ_VK_MAX_BIND];
    VkWriteDescriptorSet w[CQ_VK_MAX_BIND];
    for (int i = 0; i < CQ_VK_MAX_BIND; i++) {
        const cq_vk_bind *bd = i < nbind && binds[i].b ? &binds[i] : NULL;
        bi[i] = bd ? (VkDescriptorBufferInfo){ bd->b->buf, bd->win_off, bd->win_size }
                   : (VkDescriptorBufferInfo){ vk->dummy->buf, vk->dummy->off, vk->dummy->span };
        w[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = set,
            .dstBinding = (uint32_t)i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &bi[i],
        };
    }
    vkUpdateDescriptorSets(vk->dev, CQ_VK_MAX_BIND, w, 0, NULL);
    cq_vk_track(vk, binds, nbind);
    uint8_t pc[CQ_VK_PUSH_SIZE] = { 0 };
    memcpy(pc, push, push_size);
    vkCmdBindPipeline(vk->cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    vkCmdBindDescriptorSets(vk->cb, VK_PIPELINE_BIND_POINT_COMPUTE, vk->layout, 0, 1, &set, 0, NULL);
    vkCmdPushConstants(vk->cb, vk->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, CQ_VK_PUSH_SIZE, pc);
    vkCmdDispatch(vk->cb, gx, gy, gz);
    vk->n_dispatch++;
    return CQ_OK;
}

int cq_vk_flush(cq_vk *vk)
{
    if (!vk->recording) return CQ_OK;
    /* make device writes visible to the host after the fence */
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
    };
    vkCmdPipelineBarrier(vk->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    vk->recording = false;
    int status = CQ_OK;
    VkResult vr = vkEndCommandBuffer(vk->cb);
    const char *what = "vkEndCommandBuffer";
    if (vr == VK_SUCCESS) {
        VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1,
                            .pCommandBuffers = &vk->cb };
        what = "vkQueueSubmit";
        vr = vkQueueSubmit(vk->queue, 1, &si, vk->fence);
        if (vr == VK_SUCCESS) {
            what = "vkWaitForFences";
            vr = vkWaitForFences(vk->dev, 1, &vk->fence, VK_TRUE, UINT64_MAX);
            vkResetFences(vk->dev, 1, &vk->fence);
        }
    }
    if (vr != VK_SUCCESS) {
        cq_error("vulkan: %s failed on %s: %s", what, vk->caps.name, cq_vk_result_str(vr));
        status = cq_vk_status(vr);
        vkDeviceWaitIdle(vk->dev);
    }
    vkResetCommandPool(vk->dev, vk->cpool, 0);
    for (int i = 0; i < vk->n_dpools; i++) vkResetDescriptorPool(vk->dev, vk->dpools[i], 0);
    vk->cur_dpool = 0;
    vk->n_haz = 0;
    vk->n_dispatch = 0;
    for (int i = 0; i < vk->n_deferred; i++) cq_vk_free_now(vk, vk->deferred[i]);
    vk->n_deferred = 0;
    if (vk->status && vk->status->map) {
        uint32_t st;
        memcpy(&st, vk->status->map, 4);
        if (st) {
            if (st & 1u)
                cq_error("vulkan: fakequant met a non-finite weight or scale (|w| too large for the "
                         "scale format) on %s", vk->caps.name);
            if (st & 2u)
                cq_error("vulkan: embed / embed_bwd met a token id outside [0, V) on %s; its rows "
                         "were left at 0", vk->caps.name);
            memset(vk->status->map, 0, 4);
            if (!vk->pending_error) vk->pending_error = CQ_ERANGE;
        }
    }
    return status;
}
