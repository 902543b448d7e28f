/* cherryq Vulkan backend: state shared by the files of backends/vulkan/.
 *
 *   device.c   instance, physical-device choice, capabilities, logical device,
 *              the registry entry points (probe / devices)
 *   memory.c   memory types, a block sub-allocator, buffer handles,
 *              upload / download / device copy (direct map or staging)
 *   pipeline.c descriptor set layout, pipeline layout, pipeline cache,
 *              compute pipelines built lazily per shader variant
 *   shaders.c  the embedded SPIR-V (glslc output of shaders/<name>.comp)
 *   command.c  one command buffer per batch: dispatch recording, hazard
 *              tracking and barriers, submit + fence wait
 *   ops.c      supports() and compute() for every op type
 *   backend.c  the cq_backend vtable, create / destroy
 */
#ifndef CQ_VK_INTERNAL_H
#define CQ_VK_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <vulkan/vulkan.h>

#include "cq_tensor.h"

#define CQ_VK_MAX_BIND 10        /* storage-buffer bindings per pipeline */
#define CQ_VK_PUSH_SIZE 128      /* push-constant bytes (the guaranteed minimum) */
#define CQ_VK_MAX_HAZ 128        /* tracked buffer ranges between barriers */
#define CQ_VK_BATCH_MAX 512      /* dispatches per submit before a forced flush */
#define CQ_VK_PAD 16             /* bytes every allocation gets past its end */

/* ------------------------------------------------------------ shaders */
typedef enum {
    CQ_VK_SH_COPY = 0,
    CQ_VK_SH_ELTWISE,
    CQ_VK_SH_ADAMW,
    CQ_VK_SH_SWIGLU,
    CQ_VK_SH_RMSNORM,
    CQ_VK_SH_ROPE,
    CQ_VK_SH_EMBED,
    CQ_VK_SH_XENT,
    CQ_VK_SH_REDUCE,
    CQ_VK_SH_ATTN,
    CQ_VK_SH_FAKEQUANT,
    CQ_VK_SH_MATMUL_NN,
    CQ_VK_SH_MATMUL_TN,
    CQ_VK_SH_MATMUL_NT,
    CQ_VK_SH_MATMUL_TT,
    CQ_VK_SH_QMM_GEMV_B2,      /* the qmm blocks are ordered b2, b3, b4, b8 */
    CQ_VK_SH_QMM_GEMV_B3,
    CQ_VK_SH_QMM_GEMV_B4,
    CQ_VK_SH_QMM_GEMV_B8,
    CQ_VK_SH_QMM_GEMV_SG_B2,
    CQ_VK_SH_QMM_GEMV_SG_B3,
    CQ_VK_SH_QMM_GEMV_SG_B4,
    CQ_VK_SH_QMM_GEMV_SG_B8,
    CQ_VK_SH_QMM_GEMM_B2,
    CQ_VK_SH_QMM_GEMM_B3,
    CQ_VK_SH_QMM_GEMM_B4,
    CQ_VK_SH_QMM_GEMM_B8,
    CQ_VK_SH_COUNT
} cq_vk_shader_id;

typedef struct cq_vk_shader {
    const char *name;
    const uint32_t *code;
    size_t size;          /* bytes */
    uint32_t wg;          /* workgroup size (specialization constant 0) */
    bool needs_subgroup_arith;
} cq_vk_shader;

const cq_vk_shader *cq_vk_shader_get(cq_vk_shader_id id);

/* ------------------------------------------------------------ device */
typedef struct cq_vk_caps {
    char name[256];
    VkPhysicalDeviceType type;
    uint32_t vendor_id, device_id, api_version, driver_version;
    uint32_t subgroup_size;
    bool subgroup_arith;          /* arithmetic subgroup ops in compute */
    bool fp16;                    /* shaderFloat16 */
    bool storage16;               /* storageBuffer16BitAccess */
    bool fp64;                    /* shaderFloat64 */
    uint32_t max_sb_range;        /* maxStorageBufferRange */
    VkDeviceSize min_sb_align;    /* minStorageBufferOffsetAlignment */
    uint32_t max_wg_inv, max_wg_size[3], max_wg_count[3], max_shared, max_push;
    VkDeviceSize heap_device;     /* largest device-local heap */
    VkDeviceSize heap_host;       /* largest host-visible heap */
    bool uma;                     /* a device-local type is host-visible + coherent */
} cq_vk_caps;

typedef struct cq_vk_block cq_vk_block;

/* A buffer handle (the `handle` of a cq_buffer). */
typedef struct cq_vk_buf {
    VkBuffer buf;                 /* the VkBuffer it lives in */
    VkDeviceSize off;             /* byte offset of the allocation in buf */
    VkDeviceSize size;            /* bytes asked for */
    VkDeviceSize span;            /* bytes reserved (size + pad, aligned) */
    VkDeviceSize buf_size;        /* size of buf (for binding windows) */
    uint8_t *map;                 /* host pointer to the allocation, or NULL */
    cq_vk_block *block;
    uint64_t batch;               /* serial of the last batch that touched it */
} cq_vk_buf;

typedef struct cq_vk_range { VkDeviceSize off, size; } cq_vk_range;

struct cq_vk_block {
    VkDeviceMemory mem;
    VkBuffer buf;
    VkDeviceSize size;
    uint8_t *map;
    uint32_t type_index;
    bool dedicated;
    bool staging;
    cq_vk_range *free;            /* sorted free ranges */
    int n_free, cap_free;
    VkDeviceSize used;
    cq_vk_block *next;
};

typedef struct cq_vk_access {
    VkBuffer buf;
    VkDeviceSize lo, hi;          /* [lo, hi) */
    bool write;
} cq_vk_access;

typedef struct cq_vk {
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;   /* CQ_VULKAN_VALIDATE only */
    VkPhysicalDevice phys;
    VkDevice dev;
    VkQueue queue;
    uint32_t qfam;
    int index;
    cq_vk_caps caps;
    VkPhysicalDeviceMemoryProperties memprops;

    /* memory */
    int mt_device;                /* memory type of tensor buffers */
    int mt_staging;               /* host-visible coherent type, -1 if none */
    bool direct;                  /* tensor memory is mapped: no staging */
    VkDeviceSize block_size;
    cq_vk_block *blocks;
    cq_vk_buf *staging;           /* staging buffer (non-direct path) */
    cq_vk_buf *status;            /* device status word (shader-side errors) */
    VkDeviceSize bytes_live;

    /* pipelines */
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipelineCache cache;
    VkPipeline pipes[CQ_VK_SH_COUNT];
    VkShaderModule mods[CQ_VK_SH_COUNT];
    cq_vk_buf *dummy;             /* bound to unused bindings */

    /* commands */
    VkCommandPool cpool;
    VkCommandBuffer cb;
    VkFence fence;
    bool recording;
    uint64_t serial;              /* serial of the batch being recorded */
    int n_dispatch;
    VkDescriptorPool *dpools;
    int n_dpools, cur_dpool, cap_dpools;
    cq_vk_access haz[CQ_VK_MAX_HAZ];
    int n_haz;
    cq_vk_buf **deferred;         /* freed while in use by the open batch */
    int n_deferred, cap_deferred;
    int pending_error;            /* status to report at the next sync */

    /* rope: inv_freq table for the last (D, theta) */
    cq_vk_buf *rope_tab;
    int64_t rope_D;
    float rope_key[6];            /* theta, scaling type, its 4 parameters */
} cq_vk;

/* device.c */
int cq_vk_open(cq_vk *vk, int device);
void cq_vk_close(cq_vk *vk);
const char *cq_vk_result_str(VkResult r);
/* CQ_E* code for a VkResult (OOM -> CQ_ENOMEM, device lost -> CQ_EIO). */
int cq_vk_status(VkResult r);
void cq_vk_caps_describe(const cq_vk_caps *c, char *buf, size_t n);

/* memory.c */
int cq_vk_mem_init(cq_vk *vk);
void cq_vk_mem_fini(cq_vk *vk);
int cq_vk_alloc(cq_vk *vk, size_t size, cq_vk_buf **out);
/* The same in a VkBuffer of its own (the placeholder of unused bindings,
 * which validation must tell apart from tensors). */
int cq_vk_alloc_own(cq_vk *vk, size_t size, cq_vk_buf **out);
/* Host-visible, mapped memory usable by shaders (status word, staging). */
int cq_vk_alloc_host(cq_vk *vk, size_t size, cq_vk_buf **out);
/* Frees now, or after the open batch completes if it uses the buffer. */
void cq_vk_free(cq_vk *vk, cq_vk_buf *b);
void cq_vk_free_now(cq_vk *vk, cq_vk_buf *b);
int cq_vk_upload(cq_vk *vk, cq_vk_buf *b, size_t off, const void *src, size_t n);
int cq_vk_download(cq_vk *vk, cq_vk_buf *b, size_t off, void *dst, size_t n);
int cq_vk_copy(cq_vk *vk, cq_vk_buf *dst, size_t doff, cq_vk_buf *src, size_t soff, size_t n);
/* Records a fill of 32-bit words (offset and size multiples of 4). */
int cq_vk_fill(cq_vk *vk, cq_vk_buf *b, size_t off, size_t n, uint32_t word);

/* pipeline.c */
int cq_vk_pipe_init(cq_vk *vk);
void cq_vk_pipe_fini(cq_vk *vk);
/* The pipeline of a shader, built on first use. */
int cq_vk_pipeline(cq_vk *vk, cq_vk_shader_id id, VkPipeline *out);

/* command.c */
typedef struct cq_vk_bind {
    cq_vk_buf *b;                 /* NULL: dummy buffer */
    VkDeviceSize lo, hi;          /* byte range the dispatch touches, relative to b */
    bool write;
    /* filled by cq_vk_dispatch: the window bound and where the range starts in it */
    VkDeviceSize win_off, win_size;
} cq_vk_bind;

int cq_vk_cmd_init(cq_vk *vk);
void cq_vk_cmd_fini(cq_vk *vk);
int cq_vk_begin(cq_vk *vk);
/* Chooses a binding window of at most maxStorageBufferRange bytes that
 * covers [lo, hi) of b (plus the read-ahead pad); *rel = byte offset of lo
 * inside the window. CQ_ENOTSUP with a message when the range is too big. */
int cq_vk_window(cq_vk *vk, cq_vk_bind *bd, uint32_t *rel, const char *what);
/* Records a dispatch; binds[i] (NULL b = dummy) go to binding i. Bindings'
 * windows must have been chosen by cq_vk_window (it is called here if not). */
int cq_vk_dispatch(cq_vk *vk, cq_vk_shader_id id, cq_vk_bind *binds, int nbind, const void *push,
                   size_t push_size, uint32_t gx, uint32_t gy, uint32_t gz);
/* Before a transfer command touching these ranges: barrier if needed. */
void cq_vk_track(cq_vk *vk, cq_vk_bind *binds, int n);
/* Submit the open batch and wait for it. */
int cq_vk_flush(cq_vk *vk);
/* 1 if the open batch uses b */
bool cq_vk_in_batch(const cq_vk *vk, const cq_vk_buf *b);
/* Splits a 1-D count of workgroups into x <= max, y. */
void cq_vk_grid1d(const cq_vk *vk, uint64_t groups, uint32_t *gx, uint32_t *gy);

/* ops.c */
int cq_vk_supports(cq_backend *be, const cq_op *op);
int cq_vk_compute(cq_backend *be, const cq_op *op);

#endif
