/* cherryq: shape/dtype validation of op descriptors and the checked
 * dispatch to a backend. Backends see only descriptors that passed here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cq_tensor.h"

static const char *const k_op_names[CQ_OP_COUNT] = {
    "none", "fill", "copy", "add", "mul", "scale", "axpy", "matmul", "rmsnorm", "rmsnorm_bwd",
    "rope", "attn", "attn_bwd", "swiglu", "swiglu_bwd", "embed", "embed_bwd", "xent", "xent_bwd",
    "adamw", "sumsq", "sqr_accum", "fakequant", "qmatmul",
};

const char *cq_op_name(cq_op_type t)
{
    return (unsigned)t < CQ_OP_COUNT ? k_op_names[t] : "?";
}

static void describe(const cq_op *op, char *buf, size_t n)
{
    size_t o = (size_t)snprintf(buf, n, "%s(", cq_op_name(op->type));
    char d[96];
    int first = 1;
    for (int i = 0; i < CQ_MAX_SRC && o < n; i++)
        if (op->src[i]) {
            o += (size_t)snprintf(buf + o, n - o, "%ssrc%d=%s", first ? "" : ", ", i,
                                  cq_tensor_desc(op->src[i], d, sizeof d));
            first = 0;
        }
    for (int i = 0; i < CQ_MAX_DST && o < n; i++)
        if (op->dst[i]) {
            o += (size_t)snprintf(buf + o, n - o, "%sdst%d=%s", first ? "" : ", ", i,
                                  cq_tensor_desc(op->dst[i], d, sizeof d));
            first = 0;
        }
    if (o < n) snprintf(buf + o, n - o, ")");
}

#define FAIL(...)                                                                               \
    do {                                                                                        \
        char _d[768];                                                                           \
        char _m[256];                                                                           \
        describe(op, _d, sizeof _d);                                                            \
        snprintf(_m, sizeof _m, __VA_ARGS__);                                                   \
        cq_error("%s: %s", _d, _m);                                                             \
        return CQ_EINVAL;                                                                       \
    } while (0)

#define NEED(cond, ...)                                                                         \
    do {                                                                                        \
        if (!(cond)) FAIL(__VA_ARGS__);                                                         \
    } while (0)

static int isfloat(const cq_tensor *t)
{
    return t && (t->dtype == CQ_F32 || t->dtype == CQ_F16 || t->dtype == CQ_BF16);
}
static int isf32(const cq_tensor *t) { return t && t->dtype == CQ_F32; }
static int contig(const cq_tensor *t) { return t && cq_tensor_is_contiguous(t); }
static int64_t numel(const cq_tensor *t) { return cq_tensor_numel(t); }
static int64_t last(const cq_tensor *t) { return t->ne[t->ndim - 1]; }
static int same(const cq_tensor *a, const cq_tensor *b) { return cq_tensor_same_shape(a, b); }

/* src1 is repeated over src0: element i of src0 pairs with i % numel(src1). */
static int bcast_ok(const cq_tensor *a, const cq_tensor *b)
{
    int64_t na = numel(a), nb = numel(b);
    return same(a, b) || (nb > 0 && na % nb == 0);
}

int cq_op_validate(const cq_op *op)
{
    if (!op) {
        cq_error("cq_op_validate: NULL op");
        return CQ_EINVAL;
    }
    if ((unsigned)op->type >= CQ_OP_COUNT || op->type == CQ_OP_NONE) {
        cq_error("cq_op_validate: unknown op type %d", (int)op->type);
        return CQ_EINVAL;
    }
    const cq_tensor *s0 = op->src[0], *s1 = op->src[1], *s2 = op->src[2], *s3 = op->src[3];
    const cq_tensor *s4 = op->src[4], *s5 = op->src[5], *s6 = op->src[6];
    cq_tensor *d0 = op->dst[0], *d1 = op->dst[1], *d2 = op->dst[2];
    for (int i = 0; i < CQ_MAX_SRC; i++)
        if (op->src[i] && !op->src[i]->buf) FAIL("src%d has no buffer", i);
    for (int i = 0; i < CQ_MAX_DST; i++)
        if (op->dst[i] && !op->dst[i]->buf) FAIL("dst%d has no buffer", i);
    for (int i = 0; i < CQ_MAX_DST; i++)
        if (op->dst[i] && !contig(op->dst[i])) FAIL("dst%d must be contiguous", i);
    switch (op->type) {
    case CQ_OP_FILL:
        NEED(d0, "missing dst");
        NEED(isfloat(d0) || d0->dtype == CQ_I32, "fill needs a float or i32 tensor");
        break;
    case CQ_OP_COPY:
        NEED(s0 && d0, "missing tensor");
        NEED(numel(s0) == numel(d0), "element counts differ");
        NEED(s0->dtype == d0->dtype || (isfloat(s0) && isfloat(d0)), "unsupported dtype conversion");
        break;
    case CQ_OP_ADD:
    case CQ_OP_MUL:
        NEED(s0 && s1 && d0, "missing tensor");
        NEED(isf32(s0) && isf32(s1) && isf32(d0), "f32 only");
        NEED(contig(s0) && contig(s1), "inputs must be contiguous");
        NEED(same(s0, d0), "dst shape must equal src0 shape");
        NEED(bcast_ok(s0, s1), "src1 must equal src0 or broadcast along its outer dims");
        break;
    case CQ_OP_SCALE:
    case CQ_OP_AXPY:
        NEED(s0 && d0, "missing tensor");
        NEED(isf32(s0) && isf32(d0), "f32 only");
        NEED(contig(s0), "input must be contiguous");
        NEED(numel(s0) == numel(d0), "element counts differ");
        break;
    case CQ_OP_MATMUL: {
        NEED(s0 && s1 && d0, "missing tensor");
        NEED(isfloat(s0) && isfloat(s1) && isf32(d0), "float inputs, f32 output");
        NEED(contig(s0) && contig(s1), "inputs must be contiguous");
        NEED(s0->ndim >= 2 && s0->ndim <= 3 && s1->ndim >= 2 && s1->ndim <= 3 && d0->ndim == s0->ndim,
             "2-D or 3-D (batched) tensors");
        int64_t ba = s0->ndim == 3 ? s0->ne[0] : 1, bb = s1->ndim == 3 ? s1->ne[0] : 1;
        NEED(bb == 1 || bb == ba, "batch of src1 must be 1 or equal src0's");
        int64_t ar = s0->ne[s0->ndim - 2], ac = s0->ne[s0->ndim - 1];
        int64_t br = s1->ne[s1->ndim - 2], bc = s1->ne[s1->ndim - 1];
        int64_t M = op->i[0] ? ac : ar, K = op->i[0] ? ar : ac;
        int64_t K2 = op->i[1] ? bc : br, N = op->i[1] ? br : bc;
        NEED(K == K2, "inner dimensions differ (%lld vs %lld)", (long long)K, (long long)K2);
        NEED(d0->ne[d0->ndim - 2] == M && d0->ne[d0->ndim - 1] == N, "dst must be [%lld, %lld]",
             (long long)M, (long long)N);
        if (d0->ndim == 3) NEED(d0->ne[0] == ba, "dst batch must equal src0 batch");
        break;
    }
    case CQ_OP_RMSNORM:
        NEED(s0 && s1 && d0, "missing tensor");
        NEED(isf32(s0) && isf32(s1) && isf32(d0) && contig(s0) && contig(s1), "contiguous f32 only");
        NEED(numel(s1) == last(s0) && same(s0, d0), "weight must have the size of the last dim");
        NEED(op->f[0] >= 0, "eps must be >= 0");
        break;
    case CQ_OP_RMSNORM_BWD:
        NEED(s0 && s1 && s2 && d0 && d1, "missing tensor");
        NEED(isf32(s0) && isf32(s1) && isf32(s2) && contig(s0) && contig(s2), "contiguous f32 only");
        NEED(same(s0, s2) && same(s0, d0) && numel(s1) == last(s0) && numel(d1) == numel(s1),
             "shape mismatch");
        break;
    case CQ_OP_ROPE:
        NEED(s0 && d0, "missing tensor");
        NEED(isf32(s0) && contig(s0) && same(s0, d0), "contiguous f32, dst same shape");
        NEED(s0->ndim == 4 && s0->ne[3] % 2 == 0, "x must be [B, T, H, D] with even D");
        NEED(op->i[0] >= 0 && op->f[0] > 0, "pos0 >= 0 and theta > 0");
        {
            const cq_rope_scaling s = { op->i[2] < CQ_ROPE_PLAIN || op->i[2] > CQ_ROPE_LLAMA3 ? -1 : (int)op->i[2],
                                        op->f[1], op->f[2], op->f[3], op->f[4] };
            const char *why = cq_rope_scaling_check(&s);
            NEED(!why, "%s (i[2] %lld, f[1..4])", why ? why : "", (long long)op->i[2]);
        }
        break;
    case CQ_OP_ATTN: {
        NEED(s0 && s1 && s2 && d0, "missing tensor");
        NEED(isf32(s0) && isf32(s1) && isf32(s2) && contig(s0) && contig(s1) && contig(s2), "contiguous f32");
        NEED(s0->ndim == 4 && s1->ndim == 4 && same(s1, s2), "q [B,T,Hq,D], k and v [B,S,Hkv,D]");
        int64_t B = s0->ne[0], T = s0->ne[1], Hq = s0->ne[2], D = s0->ne[3];
        int64_t S = s1->ne[1], Hkv = s1->ne[2];
        NEED(s1->ne[0] == B && s1->ne[3] == D, "batch/head dim mismatch");
        NEED(Hkv > 0 && Hq % Hkv == 0, "query heads (%lld) must be a multiple of kv heads (%lld)",
             (long long)Hq, (long long)Hkv);
        NEED(op->i[0] >= 0 && op->i[0] + T <= S, "pos0 + T (%lld) must not exceed S (%lld)",
             (long long)(op->i[0] + T), (long long)S);
        NEED(same(d0, s0), "out must have the shape of q");
        if (d1) NEED(isf32(d1) && d1->ndim == 3 && d1->ne[0] == B && d1->ne[1] == Hq && d1->ne[2] == T,
                     "lse must be f32 [B, Hq, T]");
        break;
    }
    case CQ_OP_ATTN_BWD: {
        NEED(s0 && s1 && s2 && s3 && s4 && s5 && d0 && d1 && d2, "missing tensor");
        for (int i = 0; i < 6; i++) NEED(isf32(op->src[i]) && contig(op->src[i]), "contiguous f32");
        NEED(s0->ndim == 4 && s1->ndim == 4 && same(s1, s2) && same(s0, s3) && same(s0, s5),
             "shape mismatch");
        NEED(s1->ne[2] > 0 && s0->ne[2] % s1->ne[2] == 0 && s1->ne[3] == s0->ne[3], "head mismatch");
        NEED(op->i[0] >= 0 && op->i[0] + s0->ne[1] <= s1->ne[1], "pos0 + T must not exceed S");
        NEED(s4->ndim == 3 && s4->ne[0] == s0->ne[0] && s4->ne[1] == s0->ne[2] && s4->ne[2] == s0->ne[1],
             "lse must be [B, Hq, T]");
        NEED(same(d0, s0) && same(d1, s1) && same(d2, s2), "gradient shapes");
        break;
    }
    case CQ_OP_SWIGLU:
        NEED(s0 && d0, "missing tensor");
        NEED(isf32(s0) && contig(s0) && same(s0, d0), "contiguous f32, dst same shape");
        if (s1) NEED(isf32(s1) && contig(s1) && same(s0, s1), "gate and up must have the same shape");
        break;
    case CQ_OP_SWIGLU_BWD:
        NEED(s0 && s2 && d0, "missing tensor");
        NEED(isf32(s0) && isf32(s2) && contig(s0) && contig(s2) && same(s0, s2) && same(d0, s0), "shapes");
        if (s1) NEED(d1 && isf32(s1) && contig(s1) && same(s1, s0) && same(d1, s0), "shapes");
        break;
    case CQ_OP_EMBED:
        NEED(s0 && s1 && d0, "missing tensor");
        NEED(isfloat(s0) && contig(s0) && s0->ndim == 2, "table must be a contiguous float [V, E]");
        NEED(s1->dtype == CQ_I32 && contig(s1), "ids must be contiguous i32");
        NEED(isf32(d0) && numel(d0) == numel(s1) * s0->ne[1], "dst must be f32 [N, E]");
        break;
    case CQ_OP_EMBED_BWD:
        NEED(s0 && s1 && d0, "missing tensor");
        NEED(s0->dtype == CQ_I32 && contig(s0) && isf32(s1) && contig(s1) && isf32(d0) && d0->ndim == 2,
             "ids i32, dy f32, dtable f32 [V, E]");
        NEED(numel(s1) == numel(s0) * d0->ne[1], "dy must be [N, E]");
        break;
    case CQ_OP_XENT:
        NEED(s0 && s1 && d0 && d1, "missing tensor");
        NEED(isf32(s0) && contig(s0) && s0->ndim == 2, "logits must be contiguous f32 [N, V]");
        NEED(s1->dtype == CQ_I32 && contig(s1) && numel(s1) == s0->ne[0], "targets must be i32 [N]");
        NEED(isf32(d0) && numel(d0) == 1 && isf32(d1) && numel(d1) == s0->ne[0], "loss [1], lse [N]");
        if (d2) NEED(isf32(d2) && numel(d2) == s0->ne[0], "nll must be f32 [N]");
        break;
    case CQ_OP_XENT_BWD:
        NEED(s0 && s1 && s2 && s3 && d0, "missing tensor");
        NEED(isf32(s0) && contig(s0) && s0->ndim == 2 && same(d0, s0), "dlogits shape");
        NEED(s1->dtype == CQ_I32 && numel(s1) == s0->ne[0] && isf32(s2) && numel(s2) == s0->ne[0] &&
                 isf32(s3) && numel(s3) == 1,
             "targets i32 [N], lse [N], dloss [1]");
        break;
    case CQ_OP_ADAMW:
        NEED(s0 && d0 && d1 && d2, "missing tensor");
        NEED(isf32(s0) && isf32(d0) && isf32(d1) && isf32(d2) && contig(s0), "f32 only");
        NEED(numel(s0) == numel(d0) && numel(d1) == numel(d0) && numel(d2) == numel(d0), "sizes differ");
        NEED(op->f[5] > 0 && op->f[6] > 0, "bias corrections must be > 0");
        break;
    case CQ_OP_SUMSQ:
        NEED(s0 && d0 && isf32(s0) && contig(s0) && isf32(d0) && numel(d0) == 1, "f32 src, dst [1]");
        break;
    case CQ_OP_SQR_ACCUM:
        NEED(s0 && d0 && isf32(s0) && contig(s0) && isf32(d0) && numel(d0) == numel(s0), "f32, same size");
        NEED(op->f[0] >= 0, "n must be >= 0");
        break;
    case CQ_OP_FAKEQUANT: {
        NEED(s0 && d0 && isf32(s0) && contig(s0) && s0->ndim == 2 && same(s0, d0), "f32 [rows, cols]");
        if (s1) NEED(s1->dtype == CQ_U8 && contig(s1) && same(s1, s0), "mask must be u8 of the same shape");
        int b = (int)op->i[0], g = (int)op->i[1];
        NEED(b == 2 || b == 3 || b == 4 || b == 8, "bits must be 2, 3, 4 or 8 (got %d)", b);
        NEED(g == 0 || g == 32 || g == 64 || g == 128, "group must be 32, 64, 128 or 0 (got %d)", g);
        break;
    }
    case CQ_OP_QMATMUL: {
        NEED(s0 && s1 && s2 && d0, "missing tensor");
        int b = (int)op->i[0], g = (int)op->i[1];
        int64_t in = op->i[2];
        NEED(b == 2 || b == 3 || b == 4 || b == 8, "bits must be 2, 3, 4 or 8 (got %d)", b);
        NEED(g == 0 || g == 32 || g == 64 || g == 128, "group must be 32, 64, 128 or 0 (got %d)", g);
        NEED(op->i[3] == CQ_QCODES_ROWS || op->i[3] == CQ_QCODES_IL4,
             "codes layout must be %d (rows) or %d (interleaved) (got %lld)", CQ_QCODES_ROWS, CQ_QCODES_IL4,
             (long long)op->i[3]);
        NEED(isf32(s0) && contig(s0) && s0->ndim == 2 && s0->ne[1] == in, "X must be f32 [N, in=%lld]",
             (long long)in);
        NEED(s1->dtype == CQ_U8 && contig(s1) && s1->ndim == 2, "codes must be u8 [out, row_bytes]");
        int64_t out = s1->ne[0];
        int64_t rb = b == 3 ? (in + 7) / 8 * 3 : (in * b + 7) / 8;
        NEED(s1->ne[1] == rb, "codes row bytes must be %lld", (long long)rb);
        int64_t ng = g ? (in + g - 1) / g : 1;
        NEED(s2->dtype == CQ_U16 && contig(s2) && numel(s2) == out * ng, "scales must be u16 [out, %lld]",
             (long long)ng);
        if (s3) {
            NEED(s3->dtype == CQ_I32 && numel(s3) == out + 1, "rowptr must be i32 [out+1]");
            NEED(s4 && s5 && s4->dtype == CQ_U16 && isf32(s5) && numel(s4) == numel(s5),
                 "cols u16 [nnz], delta f32 [nnz]");
        }
        if (s6)
            NEED(s3 && op->i[3] == CQ_QCODES_IL4 && s6->dtype == CQ_U8 && contig(s6) && s6->ndim == 1,
                 "cherry lanes must be u8 [bytes], with interleaved codes and cherries");
        NEED(isf32(d0) && d0->ndim == 2 && d0->ne[0] == s0->ne[0] && d0->ne[1] == out, "Y must be [N, out]");
        break;
    }
    default:
        FAIL("unhandled op");
    }
    return CQ_OK;
}

/* CQ_PROFILE=1: every op is followed by a synchronization of its backend
 * and its wall time is added to a per-op table (MATMUL split by the dtype
 * of its first input), printed to stderr at exit. Costs a sync per op, so
 * the totals are larger than an unprofiled run; the shares are what to read. */
static struct {
    int on;                     /* -1 unknown, 0 off, 1 on */
    double t[CQ_OP_COUNT + 2];  /* + matmul bf16, matmul f16 */
    long n[CQ_OP_COUNT + 2];
} g_prof = { .on = -1 };

static void prof_report(void)
{
    double tot = 0;
    for (int i = 0; i < CQ_OP_COUNT + 2; i++) tot += g_prof.t[i];
    fprintf(stderr, "CQ_PROFILE: %.3f s in ops (synchronized after each)\n", tot);
    for (int k = 0; k < CQ_OP_COUNT + 2; k++) {
        int best = -1;   /* largest first: selection over what is left */
        for (int i = 0; i < CQ_OP_COUNT + 2; i++)
            if (g_prof.n[i] > 0 && (best < 0 || g_prof.t[i] > g_prof.t[best])) best = i;
        if (best < 0) break;
        const char *nm = best < CQ_OP_COUNT ? cq_op_name((cq_op_type)best)
                         : best == CQ_OP_COUNT ? "matmul (bf16)" : "matmul (f16)";
        fprintf(stderr, "  %-16s %8ld calls %10.3f ms %5.1f%%\n", nm, g_prof.n[best], 1e3 * g_prof.t[best],
                tot > 0 ? 100.0 * g_prof.t[best] / tot : 0.0);
        g_prof.n[best] = -g_prof.n[best];
    }
}

int cq_op_run(cq_backend *be, const cq_op *op)
{
    CQ_CHECK_ARG(be && op, CQ_EINVAL);
    int r = cq_op_validate(op);
    if (r) return r;
    for (int i = 0; i < CQ_MAX_SRC; i++)
        if (op->src[i] && op->src[i]->buf->be != be) {
            cq_error("%s: src%d lives on backend '%s', not '%s'", cq_op_name(op->type), i,
                     op->src[i]->buf->be->name, be->name);
            return CQ_EINVAL;
        }
    for (int i = 0; i < CQ_MAX_DST; i++)
        if (op->dst[i] && op->dst[i]->buf->be != be) {
            cq_error("%s: dst%d lives on backend '%s', not '%s'", cq_op_name(op->type), i,
                     op->dst[i]->buf->be->name, be->name);
            return CQ_EINVAL;
        }
    if (be->ops->supports && !be->ops->supports(be, op)) return CQ_ENOTSUP;
    if (g_prof.on < 0) {
        const char *e = getenv("CQ_PROFILE");
        g_prof.on = e && *e && strcmp(e, "0");
        if (g_prof.on) atexit(prof_report);
    }
    double t0 = g_prof.on ? cq_time_sec() : 0;
    r = be->ops->compute(be, op);
    if (g_prof.on && !r && !cq_backend_sync(be)) {
        int k = op->type;
        if (k == CQ_OP_MATMUL && op->src[0]->dtype == CQ_BF16) k = CQ_OP_COUNT;
        else if (k == CQ_OP_MATMUL && op->src[0]->dtype == CQ_F16) k = CQ_OP_COUNT + 1;
        g_prof.t[k] += cq_time_sec() - t0;
        g_prof.n[k]++;
    }
    if (r && r != CQ_ENOTSUP) cq_error("%s on %s failed: %s", cq_op_name(op->type), be->name, cq_strerror(r));
    return r;
}
