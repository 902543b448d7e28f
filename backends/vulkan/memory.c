/* cherryq Vulkan backend: memory.
 *
 * Tensor memory comes from blocks (one VkDeviceMemory + one VkBuffer each,
 * 64 MiB or less on small heaps) carved by a first-fit sub-allocator with
 * coalescing, so per-step temporaries cost a list operation, not a
 * vkAllocateMemory. Allocations larger than half a block get a dedicated
 * block. A handle (cq_vk_buf) is the VkBuffer + offset of the allocation.
 *
 * Two ways to reach tensor memory from the host:
 *   direct  - the device-local memory is host-visible and coherent (lavapipe,
 *             integrated GPUs, UMA): it is mapped once, upload/download are
 *             memcpy (after the open batch if it uses the buffer).
 *   staging - discrete GPUs: device-local memory; upload/download go through
 *             a host-visible staging buffer and vkCmdCopyBuffer, in chunks.
 * CQ_VULKAN_STAGING=1 forces the staging path (to test it on UMA devices).
 */
#include <stdio.h>
#include <stdlib.h>

#include "vk_internal.h"

#define STAGING_SIZE ((VkDeviceSize)16 << 20)

static VkDeviceSize align_up(VkDeviceSize x, VkDeviceSize a) { return (x + a - 1) / a * a; }

static VkDeviceSize alloc_align(const cq_vk *vk)
{
    VkDeviceSize a = 256;
    while (a < vk->caps.min_sb_align) a <<= 1;
    return a;
}

static int find_type(const cq_vk *vk, uint32_t bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid)
{
    const VkPhysicalDeviceMemoryProperties *mp = &vk->memprops;
    for (uint32_t t = 0; t < mp->memoryTypeCount; t++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[t].propertyFlags;
        if ((bits & (1u << t)) && (f & want) == want && !(f & avoid)) return (int)t;
    }
    return -1;
}

static VkBufferUsageFlags k_usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                    VK_BUFFER_USAGE_TRANSFER_DST_BIT;

int cq_vk_mem_init(cq_vk *vk)
{
    /* memoryTypeBits of a buffer with our usage */
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = 4096, .usage = k_usage };
    VkBuffer tb;
    VkResult vr = vkCreateBuffer(vk->dev, &bci, NULL, &tb);
    if (vr != VK_SUCCESS) {
        cq_error("vulkan: vkCreateBuffer failed on %s: %s", vk->caps.name, cq_vk_result_str(vr));
        return cq_vk_status(vr);
    }
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(vk->dev, tb, &req);
    vkDestroyBuffer(vk->dev, tb, NULL);

    const VkMemoryPropertyFlags HV = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
    const VkMemoryPropertyFlags HC = VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    const VkMemoryPropertyFlags DL = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    const char *force = getenv("CQ_VULKAN_STAGING");
    bool force_staging = force && *force && strcmp(force, "0") != 0;

    vk->mt_staging = find_type(vk, req.memoryTypeBits, HV | HC | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, 0);
    if (vk->mt_staging < 0) vk->mt_staging = find_type(vk, req.memoryTypeBits, HV | HC, 0);
    if (vk->mt_staging < 0) {
        cq_error("vulkan: %s has no host-visible coherent memory type usable for storage buffers",
                 vk->caps.name);
        return CQ_ENOTSUP;
    }
    vk->mt_device = -1;
    vk->direct = false;
    if (vk->caps.uma && !force_staging) {
        vk->mt_device = find_type(vk, req.memoryTypeBits, DL | HV | HC, 0);
        vk->direct = vk->mt_device >= 0;
    }
    if (vk->mt_device < 0) vk->mt_device = find_type(vk, req.memoryTypeBits, DL, 0);
    if (vk->mt_device < 0) { /* no device-local type at all: host memory, mapped */
        vk->mt_device = vk->mt_staging;
        vk->direct = !force_staging;
    }
    VkDeviceSize heap =
        vk->memprops.memoryHeaps[vk->memprops.memoryTypes[vk->mt_device].heapIndex].size;
    vk->block_size = (VkDeviceSize)64 << 20;
    while (vk->block_size > ((VkDeviceSize)4 << 20) && vk->block_size > heap / 16) vk->block_size >>= 1;
    cq_debug("vulkan: tensor memory type %d (%s), staging type %d, blocks of %llu MiB", vk->mt_device,
             vk->direct ? "mapped" : "device-local, staged", vk->mt_staging,
             (unsigned long long)(vk->block_size >> 20));
    return CQ_OK;
}

static void block_destroy(cq_vk *vk, cq_vk_block *b)
{
    if (b->map) vkUnmapMemory(vk->dev, b->mem);
    if (b->buf) vkDestroyBuffer(vk->dev, b->buf, NULL);
    if (b->mem) vkFreeMemory(vk->dev, b->mem, NULL);
    free(b->free);
    free(b);
}

static int block_create(cq_vk *vk, VkDeviceSize size, bool staging, bool dedicated, cq_vk_block **out)
{
    *out = NULL;
    cq_vk_block *b = calloc(1, sizeof *b);
    if (!b) return CQ_ENOMEM;
    uint32_t type = (uint32_t)(staging ? vk->mt_staging : vk->mt_device);
    VkDeviceSize heap = vk->memprops.memoryHeaps[vk->memprops.memoryTypes[type].heapIndex].size;
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size, .usage = k_usage };
    VkResult vr = vkCreateBuffer(vk->dev, &bci, NULL, &b->buf);
    if (vr != VK_SUCCESS) {
        b->buf = VK_NULL_HANDLE;
        goto fail;
    }
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(vk->dev, b->buf, &req);
    VkMemoryAllocateInfo mai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = type,
    };
    vr = vkAllocateMemory(vk->dev, &mai, NULL, &b->mem);
    if (vr != VK_SUCCESS) {
        b->mem = VK_NULL_HANDLE;
        goto fail;
    }
    vr = vkBindBufferMemory(vk->dev, b->buf, b->mem, 0);
    if (vr != VK_SUCCESS) goto fail;
    if (staging || vk->direct) {
        void *p = NULL;
        vr = vkMapMemory(vk->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &p);
        if (vr != VK_SUCCESS) goto fail;
        b->map = p;
    }
    b->size = size;
    b->type_index = type;
    b->staging = staging;
    b->dedicated = dedicated;
    b->cap_free = 8;
    b->free = malloc((size_t)b->cap_free * sizeof *b->free);
    if (!b->free) {
        vr = VK_ERROR_OUT_OF_HOST_MEMORY;
        goto fail;
    }
    b->free[0] = (cq_vk_range){ 0, size };
    b->n_free = 1;
    b->next = vk->blocks;
    vk->blocks = b;
    *out = b;
    return CQ_OK;
fail:
    if (vr == VK_ERROR_OUT_OF_DEVICE_MEMORY || vr == VK_ERROR_OUT_OF_HOST_MEMORY)
        cq_error("vulkan: out of %s memory on %s: asked for %llu bytes (%.1f MiB); heap %.1f MiB, "
                 "%.1f MiB held by cherryq (%s)",
                 vr == VK_ERROR_OUT_OF_DEVICE_MEMORY ? "device" : "host", vk->caps.name,
                 (unsigned long long)size, (double)size / 1048576.0, (double)heap / 1048576.0,
                 (double)vk->bytes_live / 1048576.0, cq_vk_result_str(vr));
    else
        cq_error("vulkan: cannot allocate a %llu-byte buffer on %s: %s", (unsigned long long)size,
                 vk->caps.name, cq_vk_result_str(vr));
    block_destroy(vk, b);
    return cq_vk_status(vr);
}

/* First fit in b for `span` bytes; offsets stay multiples of the alignment. */
static bool block_take(cq_vk_block *b, VkDeviceSize span, VkDeviceSize *off)
{
    for (int i = 0; i < b->n_free; i++) {
        if (b->free[i].size < span) continue;
        *off = b->free[i].off;
        b->free[i].off += span;
        b->free[i].size -= span;
        if (b->free[i].size == 0) {
            memmove(&b->free[i], &b->free[i + 1], (size_t)(b->n_free - i - 1) * sizeof *b->free);
            b->n_free--;
        }
        b->used += span;
        return true;
    }
    return false;
}

static int block_give(cq_vk_block *b, VkDeviceSize off, VkDeviceSize span)
{
    int i = 0;
    while (i < b->n_free && b->free[i].off < off) i++;
    /* merge with the previous and/or next range */
    bool prev = i > 0 && b->free[i - 1].off + b->free[i - 1].size == off;
    bool next = i < b->n_free && off + span == b->free[i].off;
    b->used -= span;
    if (prev && next) {
        b->free[i - 1].size += span + b->free[i].size;
        memmove(&b->free[i], &b->free[i + 1], (size_t)(b->n_free - i - 1) * sizeof *b->free);
        b->n_free--;
    } else if (prev) {
        b->free[i - 1].size += span;
    } else if (next) {
        b->free[i].off = off;
        b->free[i].size += span;
    } else {
        if (b->n_free == b->cap_free) {
            int nc = b->cap_free * 2;
            cq_vk_range *nf = realloc(b->free, (size_t)nc * sizeof *nf);
            if (!nf) return CQ_ENOMEM; /* the range leaks inside the block; harmless */
            b->free = nf;
            b->cap_free = nc;
        }
        memmove(&b->free[i + 1], &b->free[i], (size_t)(b->n_free - i) * sizeof *b->free);
        b->free[i] = (cq_vk_range){ off, span };
        b->n_free++;
    }
    return CQ_OK;
}

static int alloc_kind(cq_vk *vk, size_t size, bool staging, bool own, cq_vk_buf **out)
{
    *out = NULL;
    VkDeviceSize a = alloc_align(vk);
    VkDeviceSize span = align_up((VkDeviceSize)size + CQ_VK_PAD, a);
    cq_vk_buf *h = calloc(1, sizeof *h);
    if (!h) return CQ_ENOMEM;
    cq_vk_block *blk = NULL;
    VkDeviceSize off = 0;
    if (!own && span <= vk->block_size / 2) {
        for (cq_vk_block *b = vk->blocks; b; b = b->next)
            if (!b->dedicated && b->staging == staging && block_take(b, span, &off)) {
                blk = b;
                break;
            }
        if (!blk) {
            int r = block_create(vk, vk->block_size, staging, false, &blk);
            if (r) {
                free(h);
                return r;
            }
            block_take(blk, span, &off);
        }
    } else {
        int r = block_create(vk, span, staging, true, &blk);
        if (r) {
            free(h);
            return r;
        }
        block_take(blk, span, &off);
    }
    h->buf = blk->buf;
    h->off = off;
    h->size = size;
    h->span = span;
    h->buf_size = blk->size;
    h->map = blk->map ? blk->map + off : NULL;
    h->block = blk;
    vk->bytes_live += span;
    *out = h;
    return CQ_OK;
}

int cq_vk_alloc(cq_vk *vk, size_t size, cq_vk_buf **out)
{
    return alloc_kind(vk, size, false, false, out);
}

int cq_vk_alloc_own(cq_vk *vk, size_t size, cq_vk_buf **out)
{
    return alloc_kind(vk, size, false, true, out);
}

int cq_vk_alloc_host(cq_vk *vk, size_t size, cq_vk_buf **out)
{
    return alloc_kind(vk, size, true, false, out);
}

void cq_vk_free_now(cq_vk *vk, cq_vk_buf *h)
{
    if (!h) return;
    cq_vk_block *blk = h->block;
    block_give(blk, h->off, h->span);
    vk->bytes_live -= h->span;
    free(h);
    if (blk->used != 0) return;
    /* drop a dedicated block at once; keep at most one empty shared block */
    bool drop = blk->dedicated;
    if (!drop)
        for (cq_vk_block *b = vk->blocks; b; b = b->next)
            if (b != blk && !b->dedicated && b->used == 0 && b->staging == blk->staging) drop = true;
    if (!drop) return;
    cq_vk_block **pp = &vk->blocks;
    while (*pp && *pp != blk) pp = &(*pp)->next;
    if (*pp) *pp = blk->next;
    block_destroy(vk, blk);
}

void cq_vk_free(cq_vk *vk, cq_vk_buf *h)
{
    if (!h) return;
    if (!cq_vk_in_batch(vk, h)) {
        cq_vk_free_now(vk, h);
        return;
    }
    if (vk->n_deferred == vk->cap_deferred) {
        int nc = vk->cap_deferred ? vk->cap_deferred * 2 : 64;
        cq_vk_buf **nd = realloc(vk->deferred, (size_t)nc * sizeof *nd);
        if (!nd) { /* cannot defer: finish the batch first */
            cq_vk_flush(vk);
            cq_vk_free_now(vk, h);
            return;
        }
        vk->deferred = nd;
        vk->cap_deferred = nc;
    }
    vk->deferred[vk->n_deferred++] = h;
}

static int ensure_staging(cq_vk *vk)
{
    if (vk->staging) return CQ_OK;
    return alloc_kind(vk, STAGING_SIZE, true, false, &vk->staging);
}

static int check_range(const cq_vk *vk, const cq_vk_buf *b, size_t off, size_t n, const char *what)
{
    if (off > b->size || n > b->size - off) {
        cq_error("vulkan: %s of %zu bytes at offset %zu is outside a %llu-byte buffer", what, n, off,
                 (unsigned long long)b->size);
        return CQ_EINVAL;
    }
    return CQ_OK;
}

int cq_vk_upload(cq_vk *vk, cq_vk_buf *b, size_t off, const void *src, size_t n)
{
    int r = check_range(vk, b, off, n, "upload");
    if (r || n == 0) return r;
    if (b->map) {
        if (cq_vk_in_batch(vk, b) && (r = cq_vk_flush(vk)) != 0) return r;
        memcpy(b->map + off, src, n);
        return CQ_OK;
    }
    if ((r = cq_vk_flush(vk)) != 0 || (r = ensure_staging(vk)) != 0) return r;
    for (size_t done = 0; done < n;) {
        size_t chunk = n - done < STAGING_SIZE ? n - done : (size_t)STAGING_SIZE;
        memcpy(vk->staging->map, (const uint8_t *)src + done, chunk);
        if ((r = cq_vk_copy(vk, b, off + done, vk->staging, 0, chunk)) != 0) return r;
        if ((r = cq_vk_flush(vk)) != 0) return r;
        done += chunk;
    }
    return CQ_OK;
}

int cq_vk_download(cq_vk *vk, cq_vk_buf *b, size_t off, void *dst, size_t n)
{
    int r = check_range(vk, b, off, n, "download");
    if (r || n == 0) return r;
    if (b->map) {
        if (cq_vk_in_batch(vk, b) && (r = cq_vk_flush(vk)) != 0) return r;
        memcpy(dst, b->map + off, n);
        return CQ_OK;
    }
    if ((r = cq_vk_flush(vk)) != 0 || (r = ensure_staging(vk)) != 0) return r;
    for (size_t done = 0; done < n;) {
        size_t chunk = n - done < STAGING_SIZE ? n - done : (size_t)STAGING_SIZE;
        if ((r = cq_vk_copy(vk, vk->staging, 0, b, off + done, chunk)) != 0) return r;
        if ((r = cq_vk_flush(vk)) != 0) return r;
        memcpy((uint8_t *)dst + done, vk->staging->map, chunk);
        done += chunk;
    }
    return CQ_OK;
}

int cq_vk_copy(cq_vk *vk, cq_vk_buf *dst, size_t doff, cq_vk_buf *src, size_t soff, size_t n)
{
    int r = check_range(vk, dst, doff, n, "copy destination");
    if (!r) r = check_range(vk, src, soff, n, "copy source");
    if (r || n == 0) return r;
    if ((r = cq_vk_begin(vk)) != 0) return r;
    cq_vk_bind bd[2] = {
        { .b = src, .lo = soff, .hi = soff + n, .write = false },
        { .b = dst, .lo = doff, .hi = doff + n, .write = true },
    };
    cq_vk_track(vk, bd, 2);
    VkBufferCopy reg = { .srcOffset = src->off + soff, .dstOffset = dst->off + doff, .size = n };
    vkCmdCopyBuffer(vk->cb, src->buf, dst->buf, 1, &reg);
    return CQ_OK;
}

int cq_vk_fill(cq_vk *vk, cq_vk_buf *b, size_t off, size_t n, uint32_t word)
{
    int r = check_range(vk, b, off, n, "fill");
    if (r || n == 0) return r;
    if ((off & 3) || (n & 3)) {
        cq_error("vulkan: fill needs 4-byte aligned offset and size (got %zu, %zu)", off, n);
        return CQ_EINVAL;
    }
    if ((r = cq_vk_begin(vk)) != 0) return r;
    cq_vk_bind bd = { .b = b, .lo = off, .hi = off + n, .write = true };
    cq_vk_track(vk, &bd, 1);
    vkCmdFillBuffer(vk->cb, b->buf, b->off + off, n, word);
    return CQ_OK;
}

void cq_vk_mem_fini(cq_vk *vk)
{
    if (vk->staging) cq_vk_free_now(vk, vk->staging);
    vk->staging = NULL;
    while (vk->blocks) {
        cq_vk_block *b = vk->blocks;
        vk->blocks = b->next;
        block_destroy(vk, b);
    }
}
