/* cherryq Vulkan backend: supports() and compute() for every op type.
 *
 * Each op binds its tensors (a window of the tensor's VkBuffer, see
 * cq_vk_window), fills the push constants of its shader (structs below
 * mirror the GLSL `push_constant` blocks, std430: 4-byte scalars only) and
 * records one or more dispatches. Temporaries (rstd rows, attention Dt,
 * embedding links, partial sums) come from the sub-allocator and are freed
 * when the batch completes. Semantics are those of core/cq_tensor.h; the
 * shaders' headers say how each is computed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "vk_internal.h"

#define ATTN_DMAX 256

/* ------------------------------------------------------------ helpers */

static cq_vk *VK(cq_backend *be) { return (cq_vk *)be->ctx; }

static uint64_t numel(const cq_tensor *t) { return t ? (uint64_t)cq_tensor_numel(t) : 0; }

/* bytes from the tensor's first element to the end of its last one */
static uint64_t extent_bytes(const cq_tensor *t)
{
    uint64_t es = cq_dtype_size(t->dtype), last = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->ne[i] == 0) return 0;
        last += (uint64_t)(t->ne[i] - 1) * (uint64_t)t->nb[i];
    }
    return (last + 1) * es;
}

static void bind_t(cq_vk_bind *bd, const cq_tensor *t, bool write)
{
    memset(bd, 0, sizeof *bd);
    if (!t) return;
    bd->b = (cq_vk_buf *)t->buf->handle;
    bd->lo = t->offset;
    bd->hi = t->offset + extent_bytes(t);
    bd->write = write;
}

static void bind_buf(cq_vk_bind *bd, cq_vk_buf *b, size_t lo, size_t hi, bool write)
{
    memset(bd, 0, sizeof *bd);
    bd->b = b;
    bd->lo = lo;
    bd->hi = hi;
    bd->write = write;
}

/* window + byte offset of a bound tensor for the push constants */
static int win(cq_vk *vk, cq_vk_bind *bd, uint32_t *off, const char *op, const char *what)
{
    *off = 0;
    if (!bd->b) return CQ_OK;
    char name[96];
    snprintf(name, sizeof name, "%s's %s", op, what);
    return cq_vk_window(vk, bd, off, name);
}

static int tmp_alloc(cq_vk *vk, size_t bytes, cq_vk_buf **out)
{
    return cq_vk_alloc(vk, bytes ? bytes : 4, out);
}

static uint32_t dt_code(cq_dtype t)
{
    switch (t) {
    case CQ_F32: return 0;
    case CQ_F16: return 1;
    case CQ_BF16: return 2;
    default: return 3;
    }
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static int dispatch1d(cq_vk *vk, cq_vk_shader_id id, cq_vk_bind *b, int nb, const void *pc, size_t pcs,
                      uint64_t threads)
{
    uint32_t wg = cq_vk_shader_get(id)->wg, gx, gy;
    cq_vk_grid1d(vk, (threads + wg - 1) / wg, &gx, &gy);
    return cq_vk_dispatch(vk, id, b, nb, pc, pcs, gx, gy, 1);
}

/* one workgroup per item */
static int dispatch_groups(cq_vk *vk, cq_vk_shader_id id, cq_vk_bind *b, int nb, const void *pc, size_t pcs,
                           uint64_t groups, uint32_t gz)
{
    uint32_t gx, gy;
    cq_vk_grid1d(vk, groups, &gx, &gy);
    return cq_vk_dispatch(vk, id, b, nb, pc, pcs, gx, gy, gz);
}

/* ------------------------------------------------------------ push constants */

typedef struct {
    uint32_t soff, doff, n, mode, sdt, ddt, ssize, dsize, fill_bits, pad[3];
    uint32_t sne[4];
    int32_t snb[4];
    uint32_t dne[4];
    int32_t dnb[4];
} pc_copy;
typedef struct { uint32_t xoff, yoff, doff, n, ny, mode; float a, b; } pc_eltwise;
typedef struct { uint32_t goff, poff, moff, voff, n, pad0; float lr, b1, b2, eps, wd, bc1, bc2, gscale; } pc_adamw;
typedef struct { uint32_t goff, uoff, dyoff, d0off, d1off, n, has_u, bwd; } pc_swiglu;
typedef struct { uint32_t xoff, woff, dyoff, ooff, toff, rows, C, mode; float eps; } pc_rmsnorm;
typedef struct { uint32_t xoff, foff, yoff, rows, T, H, D, pos0, inverse, n; } pc_rope;
typedef struct { uint32_t toff, ioff, doff, loff, N, E, dt, mode, V, soff; } pc_embed;
typedef struct { uint32_t loff, toff, lseoff, nlloff, dloff, N, V, mode; float scale; } pc_xent;
typedef struct { uint32_t ioff, ooff, n, per_wg, square, pad0; float scale; } pc_reduce;
typedef struct {
    uint32_t qoff, koff, voff, ooff, lseoff, dooff, r0off, r1off, toff;
    uint32_t B, T, S, Hq, Hkv, D, pos0, mode, has_lse;
    float scale;
} pc_attn;
typedef struct { uint32_t woff, moff, doff, rows, cols, bits, G, ngroups, fp16, has_mask; float lim; } pc_fq;
typedef struct {
    uint32_t aoff, boff, coff, M, N, K, adt, bdt;
    uint32_t a_bstride, b_bstride, c_bstride, pad0;
    float alpha, beta;
} pc_matmul;
typedef struct {
    uint32_t xoff, coff, soff, roff, loff, doff, yoff;
    uint32_t N, out, in, row_bytes, ngroups, G, nnz, has_cherries;
} pc_qmm;

/* ------------------------------------------------------------ supports */

static bool t_ok(const cq_vk *vk, const cq_tensor *t, const char *op, int quiet)
{
    if (!t) return true;
    size_t es = cq_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++)
        if (t->nb[i] < 0) {
            if (!quiet) cq_debug("vulkan: %s: negative strides are not supported", op);
            return false;
        }
    if (t->offset % (es < 4 ? es : 4) != 0) {
        if (!quiet) cq_debug("vulkan: %s: tensor offset %zu not aligned to its %zu-byte elements", op,
                             t->offset, es);
        return false;
    }
    if (numel(t) >= ((uint64_t)1 << 31)) {
        if (!quiet) cq_warn("vulkan: %s: tensors of 2^31 or more elements are not supported", op);
        return false;
    }
    /* the bound range must fit maxStorageBufferRange */
    const cq_vk_buf *b = (const cq_vk_buf *)t->buf->handle;
    uint64_t ext = extent_bytes(t);
    if (b->span > vk->caps.max_sb_range && ext + 8 + vk->caps.min_sb_align > vk->caps.max_sb_range) {
        char d[96];
        cq_warn("vulkan: %s: tensor %s spans %llu bytes (%.1f MiB), more than %s can bind "
                "(maxStorageBufferRange %u bytes = %.1f MiB)",
                op, cq_tensor_desc(t, d, sizeof d), (unsigned long long)ext, (double)ext / 1048576.0,
                vk->caps.name, vk->caps.max_sb_range, (double)vk->caps.max_sb_range / 1048576.0);
        return false;
    }
    return true;
}

/* FILL / COPY that become vkCmdFillBuffer / vkCmdCopyBuffer bind nothing,
 * so they work on tensors of any size */
static bool transfer_only(const cq_op *op)
{
    const cq_tensor *d = op->dst[0], *s = op->src[0];
    if (op->type == CQ_OP_FILL)
        return cq_tensor_is_contiguous(d) && (d->offset & 3) == 0 && (cq_tensor_nbytes(d) & 3) == 0 &&
               cq_dtype_size(d->dtype) <= 4 && d->dtype != CQ_U8;
    if (op->type == CQ_OP_COPY)
        return s->dtype == d->dtype && cq_tensor_is_contiguous(s) && cq_tensor_is_contiguous(d);
    return false;
}

int cq_vk_supports(cq_backend *be, const cq_op *op)
{
    cq_vk *vk = VK(be);
    const char *name = cq_op_name(op->type);
    if (transfer_only(op)) return 1;
    for (int i = 0; i < CQ_MAX_SRC; i++)
        if (!t_ok(vk, op->src[i], name, 0)) return 0;
    for (int i = 0; i < CQ_MAX_DST; i++)
        if (!t_ok(vk, op->dst[i], name, 0)) return 0;
    if (op->type != CQ_OP_COPY && op->type != CQ_OP_FILL) {
        for (int i = 0; i < CQ_MAX_SRC; i++)
            if (op->src[i] && !cq_tensor_is_contiguous(op->src[i])) return 0;
        for (int i = 0; i < CQ_MAX_DST; i++)
            if (op->dst[i] && !cq_tensor_is_contiguous(op->dst[i])) return 0;
    }
    switch (op->type) {
    case CQ_OP_FILL:
    case CQ_OP_COPY:
    case CQ_OP_ADD:
    case CQ_OP_MUL:
    case CQ_OP_SCALE:
    case CQ_OP_AXPY:
    case CQ_OP_RMSNORM:
    case CQ_OP_RMSNORM_BWD:
    case CQ_OP_ROPE:
    case CQ_OP_SWIGLU:
    case CQ_OP_SWIGLU_BWD:
    case CQ_OP_EMBED:
    case CQ_OP_EMBED_BWD:
    case CQ_OP_XENT:
    case CQ_OP_XENT_BWD:
    case CQ_OP_ADAMW:
    case CQ_OP_SUMSQ:
    case CQ_OP_SQR_ACCUM:
    case CQ_OP_FAKEQUANT: return 1;
    case CQ_OP_QMATMUL:
        /* the shaders read the row layout only (cq_tensor.h, op i[3]) */
        if (op->i[3] != CQ_QCODES_ROWS) {
            cq_debug("vulkan: qmatmul codes layout %lld is not the row layout", (long long)op->i[3]);
            return 0;
        }
        return 1;
    case CQ_OP_MATMUL: return vk->caps.max_wg_inv >= 256 && vk->caps.max_shared >= 2 * 16 * 65 * 4;
    case CQ_OP_ATTN:
    case CQ_OP_ATTN_BWD:
        if (op->src[0]->ne[3] > ATTN_DMAX) {
            cq_debug("vulkan: attention head dim %lld > %d", (long long)op->src[0]->ne[3], ATTN_DMAX);
            return 0;
        }
        return 1;
    default: return 0;
    }
}

/* ------------------------------------------------------------ ops */

static void shape4(const cq_tensor *t, uint32_t ne[4], int32_t nb[4])
{
    int pad = 4 - t->ndim;
    for (int i = 0; i < 4; i++) {
        if (i < pad) {
            ne[i] = 1;
            nb[i] = 0;
        } else {
            ne[i] = (uint32_t)t->ne[i - pad];
            nb[i] = (int32_t)t->nb[i - pad];
        }
    }
}

static int op_copy_shader(cq_vk *vk, const cq_tensor *s, cq_tensor *d, bool fill, uint32_t fill_bits)
{
    cq_vk_bind b[2];
    pc_copy pc = { 0 };
    bind_t(&b[0], s, false);
    bind_t(&b[1], d, true);
    int r;
    if ((r = win(vk, &b[0], &pc.soff, fill ? "fill" : "copy", "source")) ||
        (r = win(vk, &b[1], &pc.doff, fill ? "fill" : "copy", "destination")))
        return r;
    pc.n = (uint32_t)numel(d);
    pc.mode = fill ? 1 : 0;
    pc.ddt = dt_code(d->dtype);
    pc.dsize = (uint32_t)cq_dtype_size(d->dtype);
    pc.fill_bits = fill_bits;
    shape4(d, pc.dne, pc.dnb);
    if (s) {
        pc.sdt = dt_code(s->dtype);
        pc.ssize = (uint32_t)cq_dtype_size(s->dtype);
        shape4(s, pc.sne, pc.snb);
    } else {
        for (int i = 0; i < 4; i++) pc.sne[i] = 1;
    }
    return dispatch1d(vk, CQ_VK_SH_COPY, b, 2, &pc, sizeof pc, pc.n);
}

static int op_fill(cq_vk *vk, const cq_op *op)
{
    cq_tensor *d = op->dst[0];
    float v = op->f[0];
    uint32_t bits;
    switch (d->dtype) {
    case CQ_F32: bits = f2u(v); break;
    case CQ_F16: bits = cq_f32_to_f16(v); break;
    case CQ_BF16: bits = cq_f32_to_bf16(v); break;
    case CQ_I32: bits = (uint32_t)(int32_t)v; break;
    default: return CQ_ENOTSUP;
    }
    size_t es = cq_dtype_size(d->dtype);
    uint64_t bytes = numel(d) * es;
    if (bytes == 0) return CQ_OK;
    cq_vk_buf *b = (cq_vk_buf *)d->buf->handle;
    if (transfer_only(op)) {
        uint32_t word = es == 4 ? bits : (bits | (bits << 16));
        return cq_vk_fill(vk, b, d->offset, bytes, word);
    }
    return op_copy_shader(vk, NULL, d, true, bits);
}

static int op_copy(cq_vk *vk, const cq_op *op)
{
    const cq_tensor *s = op->src[0];
    cq_tensor *d = op->dst[0];
    if (numel(d) == 0) return CQ_OK;
    if (s->dtype == d->dtype && cq_tensor_is_contiguous(s) && cq_tensor_is_contiguous(d))
        return cq_vk_copy(vk, (cq_vk_buf *)d->buf->handle, d->offset, (cq_vk_buf *)s->buf->handle, s->offset,
                          cq_tensor_nbytes(d));
    return op_copy_shader(vk, s, d, false, 0);
}

static int op_eltwise(cq_vk *vk, const cq_op *op)
{
    const char *nm = cq_op_name(op->type);
    const cq_tensor *x = op->src[0], *y = op->src[1];
    cq_tensor *d = op->dst[0];
    cq_vk_bind b[3];
    pc_eltwise pc = { 0 };
    bind_t(&b[0], x, false);
    bind_t(&b[1], y, false);
    bind_t(&b[2], d, true);
    int r;
    if ((r = win(vk, &b[0], &pc.xoff, nm, "src0")) || (r = win(vk, &b[1], &pc.yoff, nm, "src1")) ||
        (r = win(vk, &b[2], &pc.doff, nm, "dst0")))
        return r;
    pc.n = (uint32_t)numel(d);
    if (pc.n == 0) return CQ_OK;
    pc.ny = y ? (uint32_t)numel(y) : 1;
    switch (op->type) {
    case CQ_OP_ADD: pc.mode = 0; break;
    case CQ_OP_MUL: pc.mode = 1; break;
    case CQ_OP_SCALE: pc.mode = 2; pc.a = op->f[0]; pc.b = op->f[1]; break;
    case CQ_OP_AXPY: pc.mode = 3; pc.a = op->f[0]; break;
    default: {
        double k = op->f[0];
        pc.mode = 4;
        pc.a = (float)(k / (k + 1));
        pc.b = (float)(1.0 / (k + 1));
        break;
    }
    }
    return dispatch1d(vk, CQ_VK_SH_ELTWISE, b, 3, &pc, sizeof pc, pc.n);
}

static int op_adamw(cq_vk *vk, const cq_op *op)
{
    cq_vk_bind b[4];
    pc_adamw pc = { 0 };
    bind_t(&b[0], op->src[0], false);
    bind_t(&b[1], op->dst[0], true);
    bind_t(&b[2], op->dst[1], true);
    bind_t(&b[3], op->dst[2], true);
    int r;
    if ((r = win(vk, &b[0], &pc.goff, "adamw", "grad")) || (r = win(vk, &b[1], &pc.poff, "adamw", "param")) ||
        (r = win(vk, &b[2], &pc.moff, "adamw", "m")) || (r = win(vk, &b[3], &pc.voff, "adamw", "v")))
        return r;
    pc.n = (uint32_t)numel(op->dst[0]);
    pc.lr = op->f[0];
    pc.b1 = op->f[1];
    pc.b2 = op->f[2];
    pc.eps = op->f[3];
    pc.wd = op->f[4];
    pc.bc1 = op->f[5];
    pc.bc2 = op->f[6];
    pc.gscale = op->f[7] != 0 ? op->f[7] : 1.0f;
    if (pc.n == 0) return CQ_OK;
    return dispatch1d(vk, CQ_VK_SH_ADAMW, b, 4, &pc, sizeof pc, pc.n);
}

static int op_swiglu(cq_vk *vk, const cq_op *op, bool bwd)
{
    const char *nm = cq_op_name(op->type);
    cq_vk_bind b[5];
    pc_swiglu pc = { 0 };
    bind_t(&b[0], op->src[0], false);
    bind_t(&b[1], op->src[1], false);
    bind_t(&b[2], bwd ? op->src[2] : NULL, false);
    bind_t(&b[3], op->dst[0], true);
    bind_t(&b[4], bwd ? op->dst[1] : NULL, true);
    int r;
    if ((r = win(vk, &b[0], &pc.goff, nm, "g")) || (r = win(vk, &b[1], &pc.uoff, nm, "u")) ||
        (r = win(vk, &b[2], &pc.dyoff, nm, "dy")) || (r = win(vk, &b[3], &pc.d0off, nm, "dst0")) ||
        (r = win(vk, &b[4], &pc.d1off, nm, "dst1")))
        return r;
    pc.n = (uint32_t)numel(op->src[0]);
    pc.has_u = op->src[1] != NULL;   /* the front-end gives du whenever u */
    pc.bwd = bwd;
    if (pc.n == 0) return CQ_OK;
    return dispatch1d(vk, CQ_VK_SH_SWIGLU, b, 5, &pc, sizeof pc, pc.n);
}

static int op_rmsnorm(cq_vk *vk, const cq_op *op, bool bwd)
{
    const char *nm = cq_op_name(op->type);
    const cq_tensor *x = op->src[0];
    uint32_t C = (uint32_t)x->ne[x->ndim - 1];
    uint32_t rows = C ? (uint32_t)(numel(x) / C) : 0;
    if (rows == 0 || C == 0) return CQ_OK;
    cq_vk_bind b[5];
    pc_rmsnorm pc = { 0 };
    cq_vk_buf *tmp = NULL;
    int r;
    bind_t(&b[0], x, false);
    bind_t(&b[1], op->src[1], false);
    bind_t(&b[2], bwd ? op->src[2] : NULL, false);
    bind_t(&b[3], op->dst[0], true);
    memset(&b[4], 0, sizeof b[4]);
    if (bwd) {
        if ((r = tmp_alloc(vk, (size_t)rows * 4, &tmp))) return r;
        bind_buf(&b[4], tmp, 0, (size_t)rows * 4, true);
    }
    if ((r = win(vk, &b[0], &pc.xoff, nm, "x")) || (r = win(vk, &b[1], &pc.woff, nm, "weight")) ||
        (r = win(vk, &b[2], &pc.dyoff, nm, "dy")) || (r = win(vk, &b[3], &pc.ooff, nm, "dst0")) ||
        (r = win(vk, &b[4], &pc.toff, nm, "rstd")))
        goto out;
    pc.rows = rows;
    pc.C = C;
    pc.eps = op->f[0];
    pc.mode = bwd ? 1 : 0;
    if ((r = dispatch_groups(vk, CQ_VK_SH_RMSNORM, b, 5, &pc, sizeof pc, rows, 1))) goto out;
    if (bwd) {
        /* dw pass: reads x, dy and the rstd rows, writes dst1 */
        cq_vk_bind b2[5];
        memcpy(b2, b, sizeof b2);
        bind_t(&b2[3], op->dst[1], true);
        b2[4].write = false;
        if ((r = win(vk, &b2[3], &pc.ooff, nm, "dw"))) goto out;
        pc.mode = 2;
        r = dispatch1d(vk, CQ_VK_SH_RMSNORM, b2, 5, &pc, sizeof pc, C);
    }
out:
    cq_vk_free(vk, tmp);
    return r;
}

static int rope_table(cq_vk *vk, int64_t D, const cq_op *op)
{
    const float key[6] = { op->f[0], (float)op->i[2], op->f[1], op->f[2], op->f[3], op->f[4] };
    if (vk->rope_tab && vk->rope_D == D && !memcmp(vk->rope_key, key, sizeof key)) return CQ_OK;
    int64_t half = D / 2;
    float *tab = malloc((size_t)(half ? half : 1) * sizeof *tab);
    if (!tab) return CQ_ENOMEM;
    /* exactly cpu/ref.c's inv_freq */
    for (int64_t j = 0; j < half; j++)
        tab[j] = cq_rope_inv_freq(op->f[0], D, j, (int)op->i[2], op->f[1], op->f[2], op->f[3], op->f[4]);
    cq_vk_buf *nb;
    int r = cq_vk_alloc(vk, (size_t)(half ? half : 1) * 4, &nb);
    if (!r) r = cq_vk_upload(vk, nb, 0, tab, (size_t)half * 4);
    free(tab);
    if (r) {
        if (nb) cq_vk_free(vk, nb);
        return r;
    }
    cq_vk_free(vk, vk->rope_tab);
    vk->rope_tab = nb;
    vk->rope_D = D;
    memcpy(vk->rope_key, key, sizeof key);
    return CQ_OK;
}

static int op_rope(cq_vk *vk, const cq_op *op)
{
    const cq_tensor *x = op->src[0];
    int64_t D = x->ne[3];
    uint64_t rows = (uint64_t)x->ne[0] * x->ne[1] * x->ne[2];
    if (rows == 0 || D == 0) return CQ_OK;
    int r = rope_table(vk, D, op);
    if (r) return r;
    cq_vk_bind b[3];
    pc_rope pc = { 0 };
    bind_t(&b[0], x, false);
    bind_buf(&b[1], vk->rope_tab, 0, (size_t)D / 2 * 4, false);
    bind_t(&b[2], op->dst[0], true);
    if ((r = win(vk, &b[0], &pc.xoff, "rope", "x")) || (r = win(vk, &b[1], &pc.foff, "rope", "table")) ||
        (r = win(vk, &b[2], &pc.yoff, "rope", "dst")))
        return r;
    pc.rows = (uint32_t)rows;
    pc.T = (uint32_t)x->ne[1];
    pc.H = (uint32_t)x->ne[2];
    pc.D = (uint32_t)D;
    pc.pos0 = (uint32_t)op->i[0];
    pc.inverse = op->i[1] != 0;
    pc.n = (uint32_t)(rows * (uint64_t)(D / 2));
    return dispatch1d(vk, CQ_VK_SH_ROPE, b, 3, &pc, sizeof pc, pc.n);
}

static int op_attn(cq_vk *vk, const cq_op *op, bool bwd)
{
    const char *nm = cq_op_name(op->type);
    const cq_tensor *q = op->src[0], *k = op->src[1];
    pc_attn pc = { 0 };
    pc.B = (uint32_t)q->ne[0];
    pc.T = (uint32_t)q->ne[1];
    pc.Hq = (uint32_t)q->ne[2];
    pc.D = (uint32_t)q->ne[3];
    pc.S = (uint32_t)k->ne[1];
    pc.Hkv = (uint32_t)k->ne[2];
    pc.pos0 = (uint32_t)op->i[0];
    pc.scale = op->f[0];
    uint64_t nq = (uint64_t)pc.B * pc.T * pc.Hq;
    if (nq == 0 || pc.D == 0) return CQ_OK;
    cq_vk_bind b[9];
    int r;
    cq_vk_buf *tmp = NULL;
    memset(b, 0, sizeof b);
    bind_t(&b[0], q, false);
    bind_t(&b[1], k, false);
    bind_t(&b[2], op->src[2], false);
    if (!bwd) {
        bind_t(&b[6], op->dst[0], true);
        bind_t(&b[7], op->dst[1], true);
        pc.has_lse = op->dst[1] != NULL;
    } else {
        bind_t(&b[3], op->src[3], false);
        bind_t(&b[4], op->src[4], false);
        bind_t(&b[5], op->src[5], false);
        bind_t(&b[6], op->dst[0], true);
        if ((r = tmp_alloc(vk, nq * 4, &tmp))) return r;
        bind_buf(&b[8], tmp, 0, nq * 4, true);
    }
    if ((r = win(vk, &b[0], &pc.qoff, nm, "q")) || (r = win(vk, &b[1], &pc.koff, nm, "k")) ||
        (r = win(vk, &b[2], &pc.voff, nm, "v")) || (r = win(vk, &b[3], &pc.ooff, nm, "out")) ||
        (r = win(vk, &b[4], &pc.lseoff, nm, "lse")) || (r = win(vk, &b[5], &pc.dooff, nm, "dout")) ||
        (r = win(vk, &b[6], &pc.r0off, nm, "dst0")) || (r = win(vk, &b[7], &pc.r1off, nm, "dst1")) ||
        (r = win(vk, &b[8], &pc.toff, nm, "Dt")))
        goto out;
    pc.mode = bwd ? 1 : 0;
    if ((r = dispatch_groups(vk, CQ_VK_SH_ATTN, b, 9, &pc, sizeof pc, nq, 1)) || !bwd) goto out;
    /* dk, dv: one workgroup per (b, s, kv head) */
    bind_t(&b[6], op->dst[1], true);
    bind_t(&b[7], op->dst[2], true);
    b[8].write = false;
    if ((r = win(vk, &b[6], &pc.r0off, nm, "dk")) || (r = win(vk, &b[7], &pc.r1off, nm, "dv"))) goto out;
    pc.mode = 2;
    r = dispatch_groups(vk, CQ_VK_SH_ATTN, b, 9, &pc, sizeof pc, (uint64_t)pc.B * pc.S * pc.Hkv, 1);
out:
    cq_vk_free(vk, tmp);
    return r;
}

static int op_embed(cq_vk *vk, const cq_op *op, bool bwd)
{
    const char *nm = cq_op_name(op->type);
    cq_vk_bind b[5];
    pc_embed pc = { 0 };
    cq_vk_buf *link = NULL;
    int r;
    memset(b, 0, sizeof b);
    const cq_tensor *ids = bwd ? op->src[0] : op->src[1];
    const cq_tensor *tab = bwd ? op->src[1] : op->src[0];
    cq_tensor *d = op->dst[0];
    pc.N = (uint32_t)numel(ids);
    pc.E = (uint32_t)(bwd ? d->ne[1] : tab->ne[1]);
    pc.V = (uint32_t)(bwd ? d->ne[0] : tab->ne[0]);
    pc.dt = dt_code(tab->dtype);
    if (bwd) {
        /* zero dtable; rows named by ids are overwritten by the gather */
        if ((r = cq_vk_fill(vk, (cq_vk_buf *)d->buf->handle, d->offset, cq_tensor_nbytes(d), 0))) return r;
    }
    if (pc.N == 0 || pc.E == 0) return CQ_OK;
    bind_t(&b[0], tab, false);
    bind_t(&b[1], ids, false);
    bind_t(&b[2], d, true);
    bind_buf(&b[4], vk->status, 0, 4, true);
    if (bwd) {
        if ((r = tmp_alloc(vk, (size_t)pc.N * 8, &link))) return r;
        bind_buf(&b[3], link, 0, (size_t)pc.N * 8, true);
    }
    if ((r = win(vk, &b[0], &pc.toff, nm, bwd ? "dy" : "table")) || (r = win(vk, &b[1], &pc.ioff, nm, "ids")) ||
        (r = win(vk, &b[2], &pc.doff, nm, "dst")) || (r = win(vk, &b[3], &pc.loff, nm, "links")) ||
        (r = win(vk, &b[4], &pc.soff, nm, "status")))
        goto out;
    if (!bwd) {
        pc.mode = 0;
        r = dispatch1d(vk, CQ_VK_SH_EMBED, b, 5, &pc, sizeof pc, (uint64_t)pc.N * pc.E);
        goto out;
    }
    pc.mode = 1;
    if ((r = dispatch1d(vk, CQ_VK_SH_EMBED, b, 5, &pc, sizeof pc, pc.N))) goto out;
    b[3].write = false;
    pc.mode = 2;
    r = dispatch1d(vk, CQ_VK_SH_EMBED, b, 5, &pc, sizeof pc, (uint64_t)pc.N * pc.E);
out:
    cq_vk_free(vk, link);
    return r;
}

/* out[0] = scale * sum(src[0..n)) (squared when square), in passes of
 * per-workgroup partial sums; dst is (buffer, byte offset). */
static int reduce_sum(cq_vk *vk, cq_vk_buf *src, size_t soff, uint32_t n, bool square, float scale,
                      cq_vk_buf *dst, size_t doff)
{
    const uint32_t per_wg = 64 * 16;
    cq_vk_buf *cur = src, *tmp[2] = { NULL, NULL };
    size_t cur_off = soff;
    int r = CQ_OK, pass = 0;
    if (n == 0) return cq_vk_fill(vk, dst, doff, 4, 0);
    for (;;) {
        uint32_t groups = (n + per_wg - 1) / per_wg;
        bool last = groups == 1;
        cq_vk_buf *out = dst;
        size_t out_off = doff;
        if (!last) {
            cq_vk_buf **t = &tmp[pass & 1];
            if (*t) {
                cq_vk_free(vk, *t);
                *t = NULL;
            }
            if ((r = tmp_alloc(vk, (size_t)groups * 4, t))) break;
            out = *t;
            out_off = 0;
        }
        cq_vk_bind b[2];
        pc_reduce pc = { 0 };
        bind_buf(&b[0], cur, cur_off, cur_off + (size_t)n * 4, false);
        bind_buf(&b[1], out, out_off, out_off + (size_t)groups * 4, true);
        if ((r = win(vk, &b[0], &pc.ioff, "reduce", "input")) || (r = win(vk, &b[1], &pc.ooff, "reduce", "output")))
            break;
        pc.n = n;
        pc.per_wg = per_wg;
        pc.square = square && pass == 0;
        pc.scale = last ? scale : 1.0f;
        if ((r = dispatch_groups(vk, CQ_VK_SH_REDUCE, b, 2, &pc, sizeof pc, groups, 1))) break;
        if (last) break;
        cur = out;
        cur_off = 0;
        n = groups;
        pass++;
    }
    cq_vk_free(vk, tmp[0]);
    cq_vk_free(vk, tmp[1]);
    return r;
}

static int op_sumsq(cq_vk *vk, const cq_op *op)
{
    const cq_tensor *s = op->src[0];
    cq_tensor *d = op->dst[0];
    return reduce_sum(vk, (cq_vk_buf *)s->buf->handle, s->offset, (uint32_t)numel(s), true, 1.0f,
                      (cq_vk_buf *)d->buf->handle, d->offset);
}

static int op_xent(cq_vk *vk, const cq_op *op, bool bwd)
{
    const char *nm = cq_op_name(op->type);
    const cq_tensor *lg = op->src[0];
    cq_vk_bind b[5];
    pc_xent pc = { 0 };
    cq_vk_buf *nll = NULL;
    int r;
    memset(b, 0, sizeof b);
    pc.N = (uint32_t)lg->ne[0];
    pc.V = (uint32_t)lg->ne[1];
    pc.scale = op->f[0];
    bind_t(&b[0], lg, false);
    bind_t(&b[1], op->src[1], false);
    if (bwd) {
        bind_t(&b[2], op->src[2], false);
        bind_t(&b[3], op->src[3], false);
        bind_t(&b[4], op->dst[0], true);
        pc.mode = 1;
    } else {
        bind_t(&b[2], op->dst[1], true);
        if (op->dst[2]) {
            bind_t(&b[3], op->dst[2], true);
        } else {
            if ((r = tmp_alloc(vk, (size_t)pc.N * 4, &nll))) return r;
            bind_buf(&b[3], nll, 0, (size_t)pc.N * 4, true);
        }
    }
    if ((r = win(vk, &b[0], &pc.loff, nm, "logits")) || (r = win(vk, &b[1], &pc.toff, nm, "targets")) ||
        (r = win(vk, &b[2], &pc.lseoff, nm, "lse")) || (r = win(vk, &b[3], &pc.nlloff, nm, bwd ? "dloss" : "nll")) ||
        (r = win(vk, &b[4], &pc.dloff, nm, "dlogits")))
        goto out;
    if (bwd) {
        if (pc.N && pc.V) r = dispatch1d(vk, CQ_VK_SH_XENT, b, 5, &pc, sizeof pc, (uint64_t)pc.N * pc.V);
        goto out;
    }
    if (pc.N && pc.V && (r = dispatch_groups(vk, CQ_VK_SH_XENT, b, 5, &pc, sizeof pc, pc.N, 1))) goto out;
    {
        cq_tensor *loss = op->dst[0];
        cq_vk_buf *nb = nll ? nll : (cq_vk_buf *)op->dst[2]->buf->handle;
        size_t noff = nll ? 0 : op->dst[2]->offset;
        r = reduce_sum(vk, nb, noff, pc.V ? pc.N : 0, false, op->f[0], (cq_vk_buf *)loss->buf->handle,
                       loss->offset);
    }
out:
    cq_vk_free(vk, nll);
    return r;
}

static int op_fakequant(cq_vk *vk, const cq_op *op)
{
    const cq_tensor *w = op->src[0];
    cq_vk_bind b[4];
    pc_fq pc = { 0 };
    uint32_t st_off;
    int r;
    bind_t(&b[0], w, false);
    bind_t(&b[1], op->src[1], false);
    bind_t(&b[2], op->dst[0], true);
    bind_buf(&b[3], vk->status, 0, 4, true);
    if ((r = win(vk, &b[0], &pc.woff, "fakequant", "w")) || (r = win(vk, &b[1], &pc.moff, "fakequant", "mask")) ||
        (r = win(vk, &b[2], &pc.doff, "fakequant", "dst")) || (r = win(vk, &b[3], &st_off, "fakequant", "status")))
        return r;
    pc.rows = (uint32_t)w->ne[0];
    pc.cols = (uint32_t)w->ne[1];
    if (pc.rows == 0 || pc.cols == 0) return CQ_OK;
    pc.bits = (uint32_t)op->i[0];
    pc.G = op->i[1] ? (uint32_t)op->i[1] : pc.cols;
    pc.ngroups = (pc.cols + pc.G - 1) / pc.G;
    pc.fp16 = op->i[2] != 0;
    pc.has_mask = op->src[1] != NULL;
    pc.lim = (float)((double)(1 << (pc.bits - 1)) - 0.01);
    return dispatch_groups(vk, CQ_VK_SH_FAKEQUANT, b, 4, &pc, sizeof pc, (uint64_t)pc.rows * pc.ngroups, 1);
}

static int op_matmul(cq_vk *vk, const cq_op *op)
{
    const cq_tensor *A = op->src[0], *B = op->src[1];
    cq_tensor *C = op->dst[0];
    int ta = op->i[0] != 0, tb = op->i[1] != 0;
    int64_t batch = A->ndim == 3 ? A->ne[0] : 1, bb = B->ndim == 3 ? B->ne[0] : 1;
    int64_t ar = A->ne[A->ndim - 2], ac = A->ne[A->ndim - 1];
    int64_t br = B->ne[B->ndim - 2], bc = B->ne[B->ndim - 1];
    int64_t M = ta ? ac : ar, K = ta ? ar : ac, N = tb ? br : bc;
    pc_matmul pc = { 0 };
    cq_vk_bind b[3];
    int r;
    bind_t(&b[0], A, false);
    bind_t(&b[1], B, false);
    bind_t(&b[2], C, true);
    if ((r = win(vk, &b[0], &pc.aoff, "matmul", "A")) || (r = win(vk, &b[1], &pc.boff, "matmul", "B")) ||
        (r = win(vk, &b[2], &pc.coff, "matmul", "C")))
        return r;
    if (M == 0 || N == 0 || batch == 0) return CQ_OK;
    pc.M = (uint32_t)M;
    pc.N = (uint32_t)N;
    pc.K = (uint32_t)K;
    pc.adt = dt_code(A->dtype);
    pc.bdt = dt_code(B->dtype);
    pc.a_bstride = (uint32_t)(M * K);
    pc.b_bstride = bb == 1 ? 0 : (uint32_t)(K * N);
    pc.c_bstride = (uint32_t)(M * N);
    pc.alpha = op->f[0];
    pc.beta = op->f[1];
    cq_vk_shader_id id = ta ? (tb ? CQ_VK_SH_MATMUL_TT : CQ_VK_SH_MATMUL_TN)
                            : (tb ? CQ_VK_SH_MATMUL_NT : CQ_VK_SH_MATMUL_NN);
    return cq_vk_dispatch(vk, id, b, 3, &pc, sizeof pc, (uint32_t)((N + 63) / 64), (uint32_t)((M + 63) / 64),
                          (uint32_t)batch);
}

static int op_qmatmul(cq_vk *vk, const cq_op *op)
{
    const cq_tensor *X = op->src[0], *codes = op->src[1];
    cq_tensor *Y = op->dst[0];
    pc_qmm pc = { 0 };
    cq_vk_bind b[7];
    int r;
    memset(b, 0, sizeof b);
    int bits = (int)op->i[0];
    bind_t(&b[0], X, false);
    bind_t(&b[1], codes, false);
    bind_t(&b[2], op->src[2], false);
    if (op->src[3]) {
        bind_t(&b[3], op->src[3], false);
        bind_t(&b[4], op->src[4], false);
        bind_t(&b[5], op->src[5], false);
    }
    bind_t(&b[6], Y, true);
    if ((r = win(vk, &b[0], &pc.xoff, "qmatmul", "X")) || (r = win(vk, &b[1], &pc.coff, "qmatmul", "codes")) ||
        (r = win(vk, &b[2], &pc.soff, "qmatmul", "scales")) || (r = win(vk, &b[3], &pc.roff, "qmatmul", "rowptr")) ||
        (r = win(vk, &b[4], &pc.loff, "qmatmul", "cols")) || (r = win(vk, &b[5], &pc.doff, "qmatmul", "delta")) ||
        (r = win(vk, &b[6], &pc.yoff, "qmatmul", "Y")))
        return r;
    pc.N = (uint32_t)X->ne[0];
    pc.out = (uint32_t)codes->ne[0];
    pc.in = (uint32_t)op->i[2];
    pc.row_bytes = (uint32_t)codes->ne[1];
    pc.G = op->i[1] ? (uint32_t)op->i[1] : pc.in;
    pc.ngroups = pc.G ? (pc.in + pc.G - 1) / pc.G : 1;
    pc.has_cherries = op->src[3] != NULL;
    pc.nnz = op->src[3] ? (uint32_t)numel(op->src[5]) : 0;
    if (pc.N == 0 || pc.out == 0) return CQ_OK;
    if (pc.in == 0) return cq_vk_fill(vk, (cq_vk_buf *)Y->buf->handle, Y->offset, cq_tensor_nbytes(Y), 0);
    int bi = bits == 2 ? 0 : bits == 3 ? 1 : bits == 4 ? 2 : 3;
    bool gemm_ok = vk->caps.max_wg_inv >= 256 && vk->caps.max_shared >= 2 * 32 * 65 * 4;
    if (pc.N >= 8 && gemm_ok)
        return cq_vk_dispatch(vk, (cq_vk_shader_id)(CQ_VK_SH_QMM_GEMM_B2 + bi), b, 7, &pc, sizeof pc,
                              (pc.out + 63) / 64, (pc.N + 63) / 64, 1);
    cq_vk_shader_id id = (cq_vk_shader_id)((vk->caps.subgroup_arith ? CQ_VK_SH_QMM_GEMV_SG_B2 : CQ_VK_SH_QMM_GEMV_B2) + bi);
    return dispatch_groups(vk, id, b, 7, &pc, sizeof pc, pc.out, pc.N);
}

int cq_vk_compute(cq_backend *be, const cq_op *op)
{
    cq_vk *vk = VK(be);
    switch (op->type) {
    case CQ_OP_FILL: return op_fill(vk, op);
    case CQ_OP_COPY: return op_copy(vk, op);
    case CQ_OP_ADD:
    case CQ_OP_MUL:
    case CQ_OP_SCALE:
    case CQ_OP_AXPY:
    case CQ_OP_SQR_ACCUM: return op_eltwise(vk, op);
    case CQ_OP_MATMUL: return op_matmul(vk, op);
    case CQ_OP_RMSNORM: return op_rmsnorm(vk, op, false);
    case CQ_OP_RMSNORM_BWD: return op_rmsnorm(vk, op, true);
    case CQ_OP_ROPE: return op_rope(vk, op);
    case CQ_OP_ATTN: return op_attn(vk, op, false);
    case CQ_OP_ATTN_BWD: return op_attn(vk, op, true);
    case CQ_OP_SWIGLU: return op_swiglu(vk, op, false);
    case CQ_OP_SWIGLU_BWD: return op_swiglu(vk, op, true);
    case CQ_OP_EMBED: return op_embed(vk, op, false);
    case CQ_OP_EMBED_BWD: return op_embed(vk, op, true);
    case CQ_OP_XENT: return op_xent(vk, op, false);
    case CQ_OP_XENT_BWD: return op_xent(vk, op, true);
    case CQ_OP_ADAMW: return op_adamw(vk, op);
    case CQ_OP_SUMSQ: return op_sumsq(vk, op);
    case CQ_OP_FAKEQUANT: return op_fakequant(vk, op);
    case CQ_OP_QMATMUL: return op_qmatmul(vk, op);
    default:
        cq_error("vulkan: op %s is not implemented", cq_op_name(op->type));
        return CQ_ENOTSUP;
    }
}
