/* cherryq CUDA backend: which ops it runs (supports) and their dispatch to
 * the kernels of cuda/ (compute). Descriptors arrive validated by
 * core/validate.c; this file maps them to raw pointers and sizes, allocates
 * per-op workspaces from the stream-ordered pool and turns launch errors into
 * CQ_E* codes with the op, its shapes and the device in the message. */
#include <limits.h>
#include <stdio.h>

#include "cuda_internal.h"

/* GEMV (fused, reads only the packed bytes) up to this many rows of X; the
 * dequantize + GEMM path above it. */
#define CQ_CUDA_QGEMV_MAX_N 8

static int contig(const cq_tensor *t) { return !t || cq_tensor_is_contiguous(t); }
static int64_t numel(const cq_tensor *t) { return t ? cq_tensor_numel(t) : 0; }
static int64_t last(const cq_tensor *t) { return t->ne[t->ndim - 1]; }

static int kerr(cq_cuda_ctx *c, cudaError_t e, const cq_op *op)
{
    if (e == cudaSuccess) return CQ_OK;
    char what[400], a[96] = "-", b[96] = "-";
    if (op->src[0]) cq_tensor_desc(op->src[0], a, sizeof a);
    if (op->dst[0]) cq_tensor_desc(op->dst[0], b, sizeof b);
    snprintf(what, sizeof what, "%s (src0 %s, dst0 %s) on device %d (%.100s)", cq_op_name(op->type), a, b,
             c->device, c->name);
    return cq_cuda_err(e, what);
}

static int qweight_of(const cq_op *op, cqk_qweight *w)
{
    memset(w, 0, sizeof *w);
    w->bits = (int)op->i[0];
    w->group = op->i[1];
    w->in = op->i[2];
    w->out = op->src[1]->ne[0];
    w->row_bytes = op->src[1]->ne[1];
    w->ngroups = w->group ? (w->in + w->group - 1) / w->group : 1;
    w->codes = cq_cuda_ptr(op->src[1]);
    w->scales = cq_cuda_ptr(op->src[2]);
    if (op->src[3]) {
        w->rowptr = cq_cuda_ptr(op->src[3]);
        w->cols = cq_cuda_ptr(op->src[4]);
        w->delta = cq_cuda_ptr(op->src[5]);
        w->nnz = numel(op->src[4]);
    }
    return CQ_OK;
}

int cq_cuda_supports_op(cq_cuda_ctx *c, const cq_op *op)
{
    (void)c;
    const cq_tensor *s0 = op->src[0], *s1 = op->src[1];
    switch (op->type) {
    case CQ_OP_FILL:
    case CQ_OP_ADD:
    case CQ_OP_MUL:
    case CQ_OP_SCALE:
    case CQ_OP_AXPY:
    case CQ_OP_SWIGLU:
    case CQ_OP_SWIGLU_BWD:
    case CQ_OP_ADAMW:
    case CQ_OP_SUMSQ:
    case CQ_OP_SQR_ACCUM:
    case CQ_OP_EMBED:
    case CQ_OP_EMBED_BWD:
    case CQ_OP_ROPE:
        return 1;
    case CQ_OP_COPY:
        return s0->ndim <= 4 && op->dst[0]->ndim <= 4 &&
               (s0->dtype == op->dst[0]->dtype ? cq_dtype_size(s0->dtype) > 0 : 1);
    case CQ_OP_MATMUL: {
        /* cuBLAS takes int sizes */
        for (int i = 0; i < 2; i++)
            for (int d = 0; d < op->src[i]->ndim; d++)
                if (op->src[i]->ne[d] > INT_MAX) return 0;
        return 1;
    }
    case CQ_OP_RMSNORM:
        return numel(s0) / last(s0) <= INT_MAX;
    case CQ_OP_RMSNORM_BWD:
        return contig(s1) && numel(s0) / last(s0) <= INT_MAX;
    case CQ_OP_ATTN:
    case CQ_OP_ATTN_BWD:
        return s0->ne[3] <= CQK_ATTN_MAX_D && s0->ne[0] <= 65535 && s0->ne[2] <= 65535;
    case CQ_OP_XENT:
    case CQ_OP_XENT_BWD:
        return s0->ne[0] <= INT_MAX && contig(op->src[2]) && contig(op->src[3]) && contig(s1);
    case CQ_OP_FAKEQUANT:
        return 1;
    case CQ_OP_QMATMUL:
        /* the kernels read the row layout only (cq_tensor.h, op i[3]) */
        return op->i[3] == CQ_QCODES_ROWS && cqk_qmatmul_supported_bits((int)op->i[0]) && contig(op->src[3]) && contig(op->src[4]) &&
               contig(op->src[5]);
    default:
        return 0;
    }
}

static void layout_of(const cq_tensor *t, cqk_layout *l)
{
    memset(l, 0, sizeof *l);
    l->ndim = t->ndim;
    for (int d = 0; d < t->ndim && d < 4; d++) {
        l->ne[d] = t->ne[d];
        l->nb[d] = t->nb[d];
    }
}

/* EMBED / EMBED_BWD. The ids live in device memory, so the kernel checks
 * them and reports the first bad position; the op synchronizes to read that
 * word (one small sync per forward/backward) and fails with CQ_EINVAL. */
static int embed_op(cq_cuda_ctx *c, const cq_op *op)
{
    cudaStream_t s = c->stream;
    const int bwd = op->type == CQ_OP_EMBED_BWD;
    const cq_tensor *ids = bwd ? op->src[0] : op->src[1];
    cq_tensor *d0 = op->dst[0];
    const int64_t V = bwd ? d0->ne[0] : op->src[0]->ne[0], E = bwd ? d0->ne[1] : op->src[0]->ne[1];
    const int64_t N = numel(ids);
    int32_t *bad = NULL;
    int r = cq_cuda_malloc(c, sizeof(int32_t), (void **)&bad, "embedding id check");
    if (r) return r;
    r = kerr(c, cudaMemsetAsync(bad, 0x7f, sizeof(int32_t), s), op);
    if (!r && !bwd)
        r = kerr(c, cqk_embed(s, cq_cuda_ptr(d0), cq_cuda_ptr(op->src[0]), op->src[0]->dtype, cq_cuda_ptr(ids), N, E,
                              V, bad), op);
    if (!r && bwd)
        r = kerr(c, cqk_embed_bwd(s, cq_cuda_ptr(d0), cq_cuda_ptr(ids), cq_cuda_ptr(op->src[1]), N, E, V, bad), op);
    int32_t pos = CQK_NO_BAD_ID, id = 0;
    if (!r) r = kerr(c, cudaMemcpyAsync(&pos, bad, sizeof pos, cudaMemcpyDeviceToHost, s), op);
    if (!r) r = kerr(c, cudaStreamSynchronize(s), op);
    if (!r && pos != CQK_NO_BAD_ID) {
        if (cudaMemcpy(&id, (const int32_t *)cq_cuda_ptr(ids) + pos, sizeof id, cudaMemcpyDeviceToHost) != cudaSuccess)
            cudaGetLastError();
        cq_error("%s: token id %d at position %d is outside the table [0, %lld)", cq_op_name(op->type), (int)id,
                 (int)pos, (long long)V);
        r = CQ_EINVAL;
    }
    cq_cuda_mfree(c, bad);
    return r;
}

int cq_cuda_compute_op(cq_cuda_ctx *c, const cq_op *op)
{
    cudaStream_t s = c->stream;
    const cq_tensor *s0 = op->src[0], *s1 = op->src[1], *s2 = op->src[2];
    cq_tensor *d0 = op->dst[0], *d1 = op->dst[1], *d2 = op->dst[2];
    const int64_t n = d0 ? numel(d0) : 0;
    int r = CQ_OK;
    void *ws = NULL;

    switch (op->type) {
    case CQ_OP_FILL:
        return kerr(c, cqk_fill(s, cq_cuda_ptr(d0), d0->dtype, n, op->f[0]), op);
    case CQ_OP_COPY: {
        if (s0->dtype == d0->dtype && contig(s0)) {
            size_t bytes = (size_t)n * cq_dtype_size(d0->dtype);
            if (!bytes) return CQ_OK;
            return kerr(c, cudaMemcpyAsync(cq_cuda_ptr(d0), cq_cuda_ptr(s0), bytes, cudaMemcpyDeviceToDevice, s),
                        op);
        }
        cqk_layout dl, sl;
        layout_of(d0, &dl);
        layout_of(s0, &sl);
        return kerr(c, cqk_copy(s, cq_cuda_ptr(d0), d0->dtype, &dl, cq_cuda_ptr(s0), s0->dtype, &sl, n), op);
    }
    case CQ_OP_ADD:
    case CQ_OP_MUL:
        return kerr(c, cqk_binary(s, op->type == CQ_OP_ADD ? 0 : 1, cq_cuda_ptr(d0), cq_cuda_ptr(s0),
                                  cq_cuda_ptr(s1), n, numel(s1)), op);
    case CQ_OP_SCALE:
        return kerr(c, cqk_scale(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), n, op->f[0], op->f[1]), op);
    case CQ_OP_AXPY:
        return kerr(c, cqk_axpy(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), n, op->f[0]), op);
    case CQ_OP_MATMUL:
        return cq_cuda_matmul(c, op);
    case CQ_OP_RMSNORM:
        return kerr(c, cqk_rmsnorm(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), cq_cuda_ptr(s1), numel(s0) / last(s0),
                                   last(s0), op->f[0]), op);
    case CQ_OP_RMSNORM_BWD: {
        const int64_t C = last(s0), rows = numel(s0) / C;
        if ((r = cq_cuda_malloc(c, (size_t)cqk_rmsnorm_bwd_ws(rows, C) * sizeof(float), &ws, "rmsnorm_bwd workspace")))
            return r;
        r = kerr(c, cqk_rmsnorm_bwd(s, cq_cuda_ptr(d0), cq_cuda_ptr(d1), cq_cuda_ptr(s0), cq_cuda_ptr(s1),
                                    cq_cuda_ptr(s2), rows, C, op->f[0], ws), op);
        cq_cuda_mfree(c, ws);
        return r;
    }
    case CQ_OP_ROPE: {
        const cq_rope_scaling sc = { (int)op->i[2], op->f[1], op->f[2], op->f[3], op->f[4] };
        return kerr(c, cqk_rope(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), s0->ne[0], s0->ne[1], s0->ne[2], s0->ne[3],
                                op->i[0], op->f[0], op->i[1] != 0, &sc), op);
    }
    case CQ_OP_ATTN:
        return kerr(c, cqk_attn(s, cq_cuda_ptr(d0), d1 ? cq_cuda_ptr(d1) : NULL, cq_cuda_ptr(s0),
                                cq_cuda_ptr(s1), cq_cuda_ptr(s2), s0->ne[0], s0->ne[1], s1->ne[1], s0->ne[2],
                                s1->ne[2], s0->ne[3], op->i[0], op->f[0]), op);
    case CQ_OP_ATTN_BWD: {
        const int64_t rows = s0->ne[0] * s0->ne[2] * s0->ne[1];
        if ((r = cq_cuda_malloc(c, (size_t)(rows ? rows : 1) * sizeof(float), &ws, "attention backward workspace")))
            return r;
        r = kerr(c, cqk_attn_bwd(s, cq_cuda_ptr(d0), cq_cuda_ptr(d1), cq_cuda_ptr(d2), cq_cuda_ptr(s0),
                                 cq_cuda_ptr(s1), cq_cuda_ptr(s2), cq_cuda_ptr(op->src[3]),
                                 cq_cuda_ptr(op->src[4]), cq_cuda_ptr(op->src[5]), s0->ne[0], s0->ne[1],
                                 s1->ne[1], s0->ne[2], s1->ne[2], s0->ne[3], op->i[0], op->f[0], ws), op);
        cq_cuda_mfree(c, ws);
        return r;
    }
    case CQ_OP_SWIGLU:
        return kerr(c, cqk_swiglu(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), s1 ? cq_cuda_ptr(s1) : NULL, n), op);
    case CQ_OP_SWIGLU_BWD:
        return kerr(c, cqk_swiglu_bwd(s, cq_cuda_ptr(d0), d1 ? cq_cuda_ptr(d1) : NULL, cq_cuda_ptr(s0),
                                      s1 ? cq_cuda_ptr(s1) : NULL, cq_cuda_ptr(s2), n), op);
    case CQ_OP_EMBED:
    case CQ_OP_EMBED_BWD:
        return embed_op(c, op);
    case CQ_OP_XENT: {
        const int64_t N = s0->ne[0];
        float *nll = d2 ? cq_cuda_ptr(d2) : NULL;
        if (!nll) {
            if ((r = cq_cuda_malloc(c, (size_t)(N ? N : 1) * sizeof(float), &ws, "cross-entropy workspace")))
                return r;
            nll = ws;
        }
        r = kerr(c, cqk_xent(s, cq_cuda_ptr(d0), cq_cuda_ptr(d1), nll, cq_cuda_ptr(s0), cq_cuda_ptr(s1), N,
                             s0->ne[1], op->f[0]), op);
        cq_cuda_mfree(c, ws);
        return r;
    }
    case CQ_OP_XENT_BWD:
        return kerr(c, cqk_xent_bwd(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), cq_cuda_ptr(s1), cq_cuda_ptr(s2),
                                    cq_cuda_ptr(op->src[3]), s0->ne[0], s0->ne[1], op->f[0]), op);
    case CQ_OP_ADAMW:
        return kerr(c, cqk_adamw(s, cq_cuda_ptr(d0), cq_cuda_ptr(d1), cq_cuda_ptr(d2), cq_cuda_ptr(s0), n, op->f),
                    op);
    case CQ_OP_SUMSQ: {
        const int64_t m = numel(s0);
        if ((r = cq_cuda_malloc(c, (size_t)cqk_sumsq_ws(m) * sizeof(double), &ws, "sumsq workspace"))) return r;
        r = kerr(c, cqk_sumsq(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), s0->dtype, m, ws), op);
        cq_cuda_mfree(c, ws);
        return r;
    }
    case CQ_OP_SQR_ACCUM:
        return kerr(c, cqk_sqr_accum(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), n, op->f[0]), op);
    case CQ_OP_FAKEQUANT:
        return kerr(c, cqk_fakequant(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), s1 ? cq_cuda_ptr(s1) : NULL, s0->ne[0],
                                     s0->ne[1], (int)op->i[0], op->i[1], op->i[2] != 0), op);
    case CQ_OP_QMATMUL: {
        cqk_qweight w;
        qweight_of(op, &w);
        const int64_t N = s0->ne[0];
        if (N <= CQ_CUDA_QGEMV_MAX_N) return kerr(c, cqk_qgemv(s, cq_cuda_ptr(d0), cq_cuda_ptr(s0), N, &w), op);
        return cq_cuda_qmatmul_gemm(c, cq_cuda_ptr(d0), cq_cuda_ptr(s0), N, &w);
    }
    default:
        cq_error("CUDA: %s is not implemented by the CUDA backend", cq_op_name(op->type));
        return CQ_ENOTSUP;
    }
}
