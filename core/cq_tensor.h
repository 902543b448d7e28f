/* cherryq: tensors, buffers, backends, op descriptors.
 *
 * Shapes are row-major with dim 0 outermost (PyTorch order): a linear weight
 * is [out, in], activations are [B, T, C]. Strides are in elements. Tensors
 * live in buffers owned by a backend; a buffer's memory is opaque (device
 * memory for GPU backends) and reached through the backend's vtable.
 *
 * Every op is described by a cq_op (type + src/dst tensors + params). A
 * backend implements `supports` (may decline an op: CQ_ENOTSUP) and `compute`.
 * The front-end in ops.c checks shapes and dtypes before a backend sees an op,
 * so backends may assume a validated descriptor. The exact semantics of every
 * op are written next to its enum below; core/cpu reference code is the oracle.
 */
#ifndef CQ_TENSOR_H
#define CQ_TENSOR_H

#include <stdbool.h>

#include "cq_base.h"
#include "cq_rope.h"

#define CQ_MAX_DIMS 4
#define CQ_MAX_SRC 8
#define CQ_MAX_DST 4
#define CQ_MAX_PARAMS 8

typedef struct cq_backend cq_backend;
typedef struct cq_buffer cq_buffer;
typedef struct cq_tensor cq_tensor;

struct cq_buffer {
    cq_backend *be;
    void *handle;        /* backend memory handle (host pointer on CPU) */
    size_t size;
    int refcount;
    bool external;       /* wraps memory the buffer does not own (mmap) */
};

struct cq_tensor {
    cq_dtype dtype;
    int ndim;
    int64_t ne[CQ_MAX_DIMS];   /* shape, dim 0 outermost */
    int64_t nb[CQ_MAX_DIMS];   /* strides in elements */
    cq_buffer *buf;
    size_t offset;             /* byte offset into buf */
    /* autograd */
    bool requires_grad;
    cq_tensor *grad;           /* same shape, f32, same backend */
    int tape_id;               /* producer node on the ctx tape, -1 = leaf */
    /* ownership */
    void *owner;               /* cq_ctx that owns it, NULL = user-owned */
    char name[96];
};

/* ------------------------------------------------------------ ops */
typedef enum {
    CQ_OP_NONE = 0,
    /* dst0 = f[0] everywhere (any float dtype or i32). */
    CQ_OP_FILL,
    /* dst0 = convert(src0); same numel; src0 may be strided (views);
     * dtypes f32/f16/bf16 any direction, or identical dtypes (bytes copy). */
    CQ_OP_COPY,
    /* dst0 = src0 + src1. Same shape, or src1 broadcast along the outer dims
     * (src1 numel divides src0 numel and matches its innermost elements). */
    CQ_OP_ADD,
    /* dst0 = src0 * src1 (same shape or broadcast as ADD). */
    CQ_OP_MUL,
    /* dst0 = f[0] * src0 + f[1] (f[1] defaults to 0). */
    CQ_OP_SCALE,
    /* dst0 += f[0] * src0 (in place; gradient accumulation). */
    CQ_OP_AXPY,
    /* Batched matmul. src0 A: [batch, M, K] (i[0]=1: [batch, K, M]),
     * src1 B: [batch|1, K, N] (i[1]=1: [batch|1, N, K]); 2-D tensors are
     * batch 1. dst0 C: [batch, M, N] = f[0] * op(A) op(B) + f[1] * C.
     * f32 only (f16/bf16 on backends that support them). */
    CQ_OP_MATMUL,
    /* RMSNorm over the last dim: dst0 = src0 * rsqrt(mean(src0^2) + f[0]) * src1
     * (src1 = weight [C]). */
    CQ_OP_RMSNORM,
    /* srcs x, w, dy -> dst0 dx (overwritten), dst1 dw [C] (overwritten). */
    CQ_OP_RMSNORM_BWD,
    /* Rotary embedding, Hugging Face LLaMA "rotate half" convention.
     * src0 x [B, T, H, D], position of row t = i[0] + t, theta = f[0].
     * inv_freq[j] = theta^(-2j/D), a = pos * inv_freq[j] (j < D/2):
     *   y[j]       = x[j] cos a - x[j+D/2] sin a
     *   y[j+D/2]   = x[j+D/2] cos a + x[j] sin a
     * i[1] = 1: inverse rotation (the backward pass). dst0 may alias src0.
     * i[2] = rope scaling (CQ_ROPE_*, cq_rope.h) with f[1..4] = factor,
     * low_freq_factor, high_freq_factor, original_max_position_embeddings:
     * inv_freq[j] = cq_rope_inv_freq(...). */
    CQ_OP_ROPE,
    /* Causal attention with grouped-query heads.
     * src0 q [B, T, Hq, D], src1 k [B, S, Hkv, D], src2 v [B, S, Hkv, D].
     * Query t sits at absolute position i[0] + t (i[0] = S - T for a KV
     * cache) and sees keys s <= i[0] + t. Head h reads kv head h / (Hq/Hkv).
     * Scale f[0] (1/sqrt(D)). dst0 out [B, T, Hq, D]; dst1 lse [B, Hq, T]
     * f32 (log-sum-exp of the scaled scores, saved for the backward; may be
     * NULL when no backward is needed). */
    CQ_OP_ATTN,
    /* srcs q, k, v, out, lse, dout -> dst0 dq, dst1 dk, dst2 dv (overwritten). */
    CQ_OP_ATTN_BWD,
    /* dst0 = silu(src0) * src1 (SwiGLU product; src1 may be NULL: plain SiLU). */
    CQ_OP_SWIGLU,
    /* srcs g, u (or NULL), dy -> dst0 dg, dst1 du (NULL if u was NULL). */
    CQ_OP_SWIGLU_BWD,
    /* Embedding lookup: src0 table [V, E] (f32/f16/bf16), src1 ids i32 [N]
     * -> dst0 [N, E] f32. Out-of-range ids fail the op (the kernel checks
     * them, since ids may live in device memory). */
    CQ_OP_EMBED,
    /* srcs ids i32 [N], dy [N, E] -> dst0 dtable [V, E]: zeroed, then
     * scatter-add of the rows of dy. */
    CQ_OP_EMBED_BWD,
    /* Cross-entropy. src0 logits [N, V] f32, src1 targets i32 [N] (a target
     * < 0 is ignored: contributes 0). dst0 loss [1] = f[0] * sum_n nll_n;
     * dst1 lse [N] f32 (log-sum-exp per row); dst2 (optional) nll [N]. */
    CQ_OP_XENT,
    /* srcs logits, targets, lse, dloss [1] -> dst0 dlogits [N, V] =
     * dloss * f[0] * (softmax(logits) - onehot(target)) (0 rows if ignored). */
    CQ_OP_XENT_BWD,
    /* AdamW, PyTorch semantics, in place. dst0 param, dst1 m, dst2 v (all
     * f32, same shape); src0 grad. g = src0 * f[7] (gradient scale, e.g. for
     * clipping; 0 means 1). f: [0] lr, [1] beta1, [2] beta2, [3] eps,
     * [4] weight decay, [5] bias correction 1 - beta1^t, [6] 1 - beta2^t.
     *   p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     *   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)            */
    CQ_OP_ADAMW,
    /* dst0 [1] f32 = sum(src0^2), accumulated in double where possible. */
    CQ_OP_SUMSQ,
    /* Running mean of squared gradients (Fisher diagonal), in place:
     * dst0 = dst0 * n/(n+1) + src0^2/(n+1), n = f[0]. */
    CQ_OP_SQR_ACCUM,
    /* CherryQ fake quantization (forward of the STE; backward = identity).
     * src0 w [rows, cols] f32, src1 cherry mask u8 [rows, cols] or NULL.
     * i[0] bits (2,3,4,8), i[1] group (0 = whole row), i[2] fp16 scales
     * (1: scales rounded to FP16 as the packed model stores them).
     * dst0 [rows, cols] = Q(w) at normal weights, w at cherries.
     * Exactly core/quant.h's cq_fakequant. */
    CQ_OP_FAKEQUANT,
    /* Mixed int-k + FP16-sparse linear: dst0 Y [N, out] = X W^T.
     * src0 X [N, in] f32; src1 codes u8 [out, row_bytes]; src2 scales
     * (u16 FP16 bits) [out, ngroups]; src3 rowptr i32 [out+1] or NULL;
     * src4 cols u16 [nnz]; src5 delta f32 [nnz] (cherry minus dequantized
     * code). i[0] bits, i[1] group (0 = row), i[2] in, i[3] the layout of
     * the codes (cq_qcodes_layout): CQ_QCODES_ROWS (0, docs/format.md) on
     * every backend; CQ_QCODES_IL4 (1, cpu/qmm.h cq_qmm_il: blocks of 4 rows
     * interleaved in chunks of 48 (3-bit) or 64 bytes, the same byte count)
     * only where the backend reads it (the CPU; the others' supports()
     * decline it). The layout is set by whoever built the codes
     * (cq_qlinear.layout), never inferred from a tensor's name. src6
     * (optional, CQ_QCODES_IL4 with cherries only): the cherry lanes of the
     * weight, u8 [bytes] (cpu/qmm.h cq_qmm_lanes_build), which the CPU's
     * int8-activation GEMV reads instead of gathering x per cherry. */
    CQ_OP_QMATMUL,
    CQ_OP_COUNT
} cq_op_type;

/* Layout of QMATMUL's codes (op i[3]). */
typedef enum cq_qcodes_layout {
    CQ_QCODES_ROWS = 0,   /* one packed row after another (docs/format.md) */
    CQ_QCODES_IL4 = 1,    /* 4-row blocks interleaved (cpu/qmm.h cq_qmm_il); CPU backend only */
} cq_qcodes_layout;

typedef struct cq_op {
    cq_op_type type;
    const cq_tensor *src[CQ_MAX_SRC];
    cq_tensor *dst[CQ_MAX_DST];
    float f[CQ_MAX_PARAMS];
    int64_t i[CQ_MAX_PARAMS];
} cq_op;

CQ_API const char *cq_op_name(cq_op_type t);

/* ------------------------------------------------------------ backends */
typedef struct cq_backend_ops {
    const char *name;
    void (*destroy)(cq_backend *be);
    int (*alloc)(cq_backend *be, size_t size, void **handle);
    void (*free)(cq_backend *be, void *handle);
    /* host <-> device copies of bytes at a byte offset of a handle */
    int (*upload)(cq_backend *be, void *handle, size_t off, const void *src, size_t n);
    int (*download)(cq_backend *be, const void *handle, size_t off, void *dst, size_t n);
    /* device-side copy between handles (may be NULL: front-end stages via host) */
    int (*copy)(cq_backend *be, void *dst, size_t doff, const void *src, size_t soff, size_t n);
    /* 1 if the backend can run this (validated) op, 0 if it declines */
    int (*supports)(cq_backend *be, const cq_op *op);
    int (*compute)(cq_backend *be, const cq_op *op);
    int (*sync)(cq_backend *be);
    /* host pointer for a handle if the memory is host-addressable, else NULL */
    void *(*host_ptr)(cq_backend *be, void *handle);
    /* optional: wrap existing host memory (e.g. an mmap) without copying;
     * such buffers are marked external and never passed to free() */
    int (*wrap_host)(cq_backend *be, void *ptr, size_t size, void **handle);
    /* optional: host memory the backend copies from/to fastest (CUDA: pinned,
     * cudaHostAlloc) for state kept off the device; NULL: plain malloc.
     * Both or neither. */
    int (*host_alloc)(cq_backend *be, size_t size, void **ptr);
    void (*host_free)(cq_backend *be, void *ptr);
} cq_backend_ops;

struct cq_backend {
    const cq_backend_ops *ops;
    void *ctx;                 /* backend private state */
    char name[32];             /* "cpu", "vulkan", "cuda" */
    char device[256];          /* human-readable device description */
    int device_index;
    size_t mem_total, mem_free;/* bytes, 0 if unknown */
};

/* Registry: backends built in, and whether each has a usable device now. */
typedef struct cq_backend_info {
    const char *name;
    bool built;
    int n_devices;             /* 0 if none usable (or not built) */
    int n_hw_devices;          /* devices that are real GPUs (not a CPU
                                * implementation such as lavapipe); "auto"
                                * only picks a GPU backend when this is > 0 */
    char reason[256];          /* why not usable, when n_devices == 0 */
} cq_backend_info;

typedef struct cq_device_info {
    char name[256];
    size_t mem_total;
    char features[512];        /* free text: subgroup size, fp16, limits */
} cq_device_info;

CQ_API int cq_backend_count(void);
CQ_API int cq_backend_probe(int idx, cq_backend_info *info);
CQ_API int cq_backend_devices(const char *name, cq_device_info *devs, int max);
/* name: "cpu", "vulkan", "cuda" or "auto" (best available: cuda, vulkan,
 * cpu); device: index, or -1 for the default (env CQ_DEVICE may name an index
 * or a substring of the device name). */
CQ_API int cq_backend_create(cq_backend **out, const char *name, int device);
CQ_API void cq_backend_destroy(cq_backend **be);
CQ_API int cq_backend_supports(cq_backend *be, const cq_op *op);
CQ_API int cq_backend_sync(cq_backend *be);
/* Host memory for state held off the device (offloaded optimizer states):
 * the backend's host_alloc hook (pinned on CUDA) or a 64-byte aligned malloc.
 * Free it with cq_backend_host_free on the same backend. */
CQ_API int cq_backend_host_alloc(cq_backend *be, size_t size, void **ptr);
CQ_API void cq_backend_host_free(cq_backend *be, void *ptr);

/* ------------------------------------------------------------ buffers */
CQ_API int cq_buffer_alloc(cq_backend *be, size_t size, cq_buffer **out);
CQ_API int cq_buffer_wrap_host(cq_backend *be, void *ptr, size_t size, cq_buffer **out);
CQ_API void cq_buffer_retain(cq_buffer *b);
CQ_API void cq_buffer_release(cq_buffer **b);

/* ------------------------------------------------------------ tensors */
/* A user-owned tensor with its own buffer (zero-initialized). */
CQ_API int cq_tensor_new(cq_tensor **out, cq_backend *be, cq_dtype dt, int ndim, const int64_t *ne);
/* A view sharing t's buffer: shape/strides given, offset in elements. */
CQ_API int cq_tensor_view(cq_tensor **out, const cq_tensor *t, int ndim, const int64_t *ne,
                          const int64_t *nb /*NULL = contiguous*/, int64_t elem_offset);
CQ_API void cq_tensor_free(cq_tensor **t);
CQ_API int64_t cq_tensor_numel(const cq_tensor *t);
CQ_API size_t cq_tensor_nbytes(const cq_tensor *t);
CQ_API bool cq_tensor_is_contiguous(const cq_tensor *t);
CQ_API bool cq_tensor_same_shape(const cq_tensor *a, const cq_tensor *b);
CQ_API cq_backend *cq_tensor_backend(const cq_tensor *t);
/* Host pointer to the first element, or NULL if not host-addressable. */
CQ_API void *cq_tensor_host(const cq_tensor *t);
/* Copy between host memory and a contiguous tensor; src/dst host dtype must
 * equal the tensor's. */
CQ_API int cq_tensor_set(cq_tensor *t, const void *src, size_t nbytes);
CQ_API int cq_tensor_get(const cq_tensor *t, void *dst, size_t nbytes);
/* Convenience: read any float tensor as f32 into host memory (numel floats). */
CQ_API int cq_tensor_get_f32(const cq_tensor *t, float *dst);
CQ_API int cq_tensor_set_f32(cq_tensor *t, const float *src);
/* "f32[2, 3, 4]" into buf. */
CQ_API const char *cq_tensor_desc(const cq_tensor *t, char *buf, size_t n);
CQ_API void cq_tensor_set_name(cq_tensor *t, const char *name);

/* Validate and run one op descriptor directly on a backend (no autograd).
 * All tensors must live on `be`. Returns CQ_ENOTSUP if the backend declines. */
CQ_API int cq_op_run(cq_backend *be, const cq_op *op);
/* Shape/dtype validation only (what cq_op_run checks first). */
CQ_API int cq_op_validate(const cq_op *op);

#endif
