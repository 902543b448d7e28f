/* cherryq: ops front-end (shape inference, tape recording) and reverse-mode
 * autograd. Kernels live behind the backend vtable; this file only builds
 * op descriptors, so it runs unchanged on every backend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cq_ops.h"

cq_tensor *cq_tensor_header(cq_buffer *buf, size_t offset, cq_dtype dt, int ndim, const int64_t *ne);

enum { NODE_OP = 0, NODE_RESHAPE, NODE_CAST, NODE_STE, NODE_CKPT, NODE_LMXENT };

typedef struct node {
    int kind;
    cq_op op;                  /* the forward op (for NODE_OP) */
    cq_tensor *in[3];          /* differentiable inputs (may be NULL) */
    cq_tensor *out;            /* differentiated output */
    cq_tensor *aux;            /* saved tensor (lse; targets for NODE_LMXENT) */
    cq_region_fn fn;           /* NODE_CKPT: the region, recomputed in the backward */
    void *user;
    int64_t arg;
} node;

typedef struct cached {
    size_t size;
    cq_buffer *buf;
} cached;

struct cq_ctx {
    cq_backend *be;
    int status;
    bool grad;
    cq_tensor **owned;
    size_t n_owned, cap_owned;
    node *tape;
    size_t n_tape, cap_tape;
    cached *cache;
    size_t n_cache, cap_cache;
    size_t cache_bytes, live_bytes;
    size_t peak_bytes;         /* max of live + cache since creation / cq_ctx_reset_peak */
};

int cq_ctx_create(cq_ctx **out, cq_backend *be)
{
    CQ_CHECK_ARG(out && be, CQ_EINVAL);
    cq_ctx *c = calloc(1, sizeof *c);
    if (!c) return CQ_ENOMEM;
    c->be = be;
    c->grad = true;
    *out = c;
    return CQ_OK;
}

static void cache_put(cq_ctx *c, cq_buffer *b)
{
    if (c->n_cache == c->cap_cache) {
        size_t nc = c->cap_cache ? c->cap_cache * 2 : 64;
        cached *p = realloc(c->cache, nc * sizeof *p);
        if (!p) {
            cq_buffer_release(&b);
            return;
        }
        c->cache = p;
        c->cap_cache = nc;
    }
    c->cache[c->n_cache++] = (cached){ b->size, b };
    c->cache_bytes += b->size;
}

void cq_ctx_reset(cq_ctx *c)
{
    if (!c) return;
    /* release tensors in reverse creation order: views before their bases */
    for (size_t i = c->n_owned; i-- > 0;) {
        cq_tensor *t = c->owned[i];
        cq_buffer *b = t->buf;
        t->buf = NULL;
        if (b && b->refcount == 1 && !b->external && b->be == c->be)
            cache_put(c, b);
        else
            cq_buffer_release(&b);
        free(t);
    }
    c->n_owned = 0;
    c->n_tape = 0;
    c->live_bytes = 0;
}

void cq_ctx_trim(cq_ctx *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n_cache; i++) cq_buffer_release(&c->cache[i].buf);
    c->n_cache = 0;
    c->cache_bytes = 0;
}

void cq_ctx_destroy(cq_ctx **pc)
{
    if (!pc || !*pc) return;
    cq_ctx *c = *pc;
    *pc = NULL;
    cq_ctx_reset(c);
    cq_ctx_trim(c);
    free(c->owned);
    free(c->tape);
    free(c->cache);
    free(c);
}

int cq_ctx_status(const cq_ctx *c) { return c ? c->status : CQ_EINVAL; }
void cq_ctx_clear_status(cq_ctx *c)
{
    if (c) c->status = 0;
}
cq_backend *cq_ctx_backend(const cq_ctx *c) { return c ? c->be : NULL; }
void cq_ctx_set_error(cq_ctx *c, int status)
{
    if (c && !c->status) c->status = status ? status : CQ_EINVAL;
}
bool cq_ctx_set_grad(cq_ctx *c, bool enabled)
{
    bool old = c->grad;
    c->grad = enabled;
    return old;
}
size_t cq_ctx_bytes_used(const cq_ctx *c) { return c ? c->live_bytes + c->cache_bytes : 0; }
size_t cq_ctx_peak_bytes(const cq_ctx *c) { return c ? c->peak_bytes : 0; }
void cq_ctx_reset_peak(cq_ctx *c)
{
    if (c) c->peak_bytes = c->live_bytes + c->cache_bytes;
}

static void fail(cq_ctx *c, int r)
{
    if (c && !c->status) c->status = r ? r : CQ_EINVAL;
}

static int own(cq_ctx *c, cq_tensor *t)
{
    if (c->n_owned == c->cap_owned) {
        size_t nc = c->cap_owned ? c->cap_owned * 2 : 256;
        cq_tensor **p = realloc(c->owned, nc * sizeof *p);
        if (!p) return CQ_ENOMEM;
        c->owned = p;
        c->cap_owned = nc;
    }
    c->owned[c->n_owned++] = t;
    t->owner = c;
    return CQ_OK;
}

/* A ctx-owned tensor, contents undefined (ops overwrite their outputs). */
static cq_tensor *alloc_t(cq_ctx *c, cq_dtype dt, int ndim, const int64_t *ne)
{
    if (c->status) return NULL;
    if (ndim < 1 || ndim > CQ_MAX_DIMS) {
        cq_error("internal: bad ndim %d", ndim);
        fail(c, CQ_EINVAL);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (ne[i] < 0) {
            cq_error("internal: negative dim");
            fail(c, CQ_EINVAL);
            return NULL;
        }
        n *= ne[i];
    }
    size_t bytes = (size_t)n * cq_dtype_size(dt);
    size_t want = bytes ? bytes : 1;
    cq_buffer *b = NULL;
    for (size_t i = c->n_cache; i-- > 0;)
        if (c->cache[i].size == want) {
            b = c->cache[i].buf;
            c->cache_bytes -= c->cache[i].size;
            c->cache[i] = c->cache[--c->n_cache];
            break;
        }
    if (!b) {
        int r = cq_buffer_alloc(c->be, want, &b);
        if (r == CQ_ENOMEM && c->n_cache) { /* drop the cache and retry */
            cq_ctx_trim(c);
            r = cq_buffer_alloc(c->be, want, &b);
        }
        if (r) {
            fail(c, r);
            return NULL;
        }
    }
    cq_tensor *t = cq_tensor_header(b, 0, dt, ndim, ne);
    cq_buffer_release(&b); /* header holds the reference */
    if (!t || own(c, t)) {
        cq_tensor_free(&t);
        fail(c, CQ_ENOMEM);
        return NULL;
    }
    c->live_bytes += want;
    if (c->live_bytes + c->cache_bytes > c->peak_bytes) c->peak_bytes = c->live_bytes + c->cache_bytes;
    return t;
}

/* Frees one ctx-owned tensor header; its buffer goes back to the cache when
 * this was the last reference (as cq_ctx_reset does). */
static void free_owned(cq_ctx *c, cq_tensor *t)
{
    cq_buffer *b = t->buf;
    t->buf = NULL;
    if (b && b->refcount == 1 && !b->external && b->be == c->be) {
        c->live_bytes = c->live_bytes > b->size ? c->live_bytes - b->size : 0;
        cache_put(c, b);
    } else {
        cq_buffer_release(&b);
    }
    free(t);
}

/* Releases every tensor the ctx made after `mark` (an n_owned value) except
 * those in keep[], which move down to the mark in their order: the scoped
 * release of checkpointed regions. No tape node may refer to the released
 * tensors (callers record none, or truncate the tape first). */
static void release_to(cq_ctx *c, size_t mark, cq_tensor *const *keep, int nkeep)
{
    cq_tensor *kept[4];
    int nk = 0;
    for (size_t i = c->n_owned; i-- > mark;) {
        cq_tensor *t = c->owned[i];
        bool k = false;
        for (int j = 0; j < nkeep && !k; j++) k = keep[j] == t;
        if (k && nk < 4) kept[nk++] = t;
        else free_owned(c, t);
    }
    c->n_owned = mark;
    for (int j = nk; j-- > 0;) c->owned[c->n_owned++] = kept[j];
}

static int run(cq_ctx *c, const cq_op *op)
{
    if (c->status) return c->status;
    int r = cq_op_run(c->be, op);
    if (r) {
        if (r == CQ_ENOTSUP)
            cq_error("backend '%s' does not support op %s", c->be->name, cq_op_name(op->type));
        fail(c, r);
    }
    return r;
}

static bool needs_grad(cq_ctx *c, const cq_tensor *a, const cq_tensor *b, const cq_tensor *d)
{
    return c->grad && ((a && a->requires_grad) || (b && b->requires_grad) || (d && d->requires_grad));
}

static void record(cq_ctx *c, int kind, const cq_op *op, cq_tensor *i0, cq_tensor *i1, cq_tensor *i2,
                   cq_tensor *out, cq_tensor *aux)
{
    if (c->n_tape == c->cap_tape) {
        size_t nc = c->cap_tape ? c->cap_tape * 2 : 256;
        node *p = realloc(c->tape, nc * sizeof *p);
        if (!p) {
            fail(c, CQ_ENOMEM);
            return;
        }
        c->tape = p;
        c->cap_tape = nc;
    }
    node *n = &c->tape[c->n_tape];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    if (op) n->op = *op;
    n->in[0] = i0;
    n->in[1] = i1;
    n->in[2] = i2;
    n->out = out;
    n->aux = aux;
    out->requires_grad = true;
    out->tape_id = (int)c->n_tape;
    c->n_tape++;
}


/* Runs op (its dst[0] is y) and records it on the tape with differentiable
 * inputs i0..i2 when one of them needs a gradient. Returns y, or NULL. */
static cq_tensor *run_rec(cq_ctx *c, const cq_op *op, int kind, cq_tensor *i0, cq_tensor *i1, cq_tensor *i2,
                          cq_tensor *y, cq_tensor *aux)
{
    if (run(c, op)) return NULL;
    if (needs_grad(c, i0, i1, i2)) record(c, kind, op, i0, i1, i2, y, aux);
    return y;
}

/* --------------------------------------------------------------- params */
int cq_param_enable_grad(cq_tensor *p)
{
    CQ_CHECK_ARG(p && p->buf, CQ_EINVAL);
    p->requires_grad = true;
    if (p->grad) return CQ_OK;
    if (p->dtype != CQ_F32) {
        cq_error("parameter '%s' must be f32 to train (is %s)", p->name, cq_dtype_name(p->dtype));
        return CQ_EINVAL;
    }
    int r = cq_tensor_new(&p->grad, p->buf->be, CQ_F32, p->ndim, p->ne);
    if (r) return r;
    snprintf(p->grad->name, sizeof p->grad->name, "%.80s.grad", p->name);
    return CQ_OK;
}

int cq_tensor_zero_grad(cq_tensor *p)
{
    CQ_CHECK_ARG(p, CQ_EINVAL);
    if (!p->grad) return CQ_OK;
    cq_op op = { .type = CQ_OP_FILL };
    op.dst[0] = p->grad;
    return cq_op_run(p->grad->buf->be, &op);
}

/* --------------------------------------------------------------- ops */
cq_tensor *cq_new(cq_ctx *c, cq_dtype dt, int ndim, const int64_t *ne)
{
    if (!c || c->status) return NULL;
    cq_tensor *t = alloc_t(c, dt, ndim, ne);
    if (!t) return NULL;
    if (dt == CQ_F32 || dt == CQ_F16 || dt == CQ_BF16 || dt == CQ_I32) {
        cq_op op = { .type = CQ_OP_FILL };
        op.dst[0] = t;
        if (run(c, &op)) return NULL;
    } else if (cq_tensor_nbytes(t)) {
        void *z = calloc(1, cq_tensor_nbytes(t));
        int r = z ? cq_tensor_set(t, z, cq_tensor_nbytes(t)) : CQ_ENOMEM;
        free(z);
        if (r) {
            fail(c, r);
            return NULL;
        }
    }
    return t;
}

static cq_tensor *view_as(cq_ctx *c, cq_tensor *x, int ndim, const int64_t *ne)
{
    cq_tensor *v = cq_tensor_header(x->buf, x->offset, x->dtype, ndim, ne);
    if (!v || own(c, v)) {
        cq_tensor_free(&v);
        fail(c, CQ_ENOMEM);
        return NULL;
    }
    return v;
}

cq_tensor *cq_view(cq_ctx *c, cq_tensor *x, int ndim, const int64_t *ne, int64_t elem_offset)
{
    if (!c || c->status || !x) return NULL;
    cq_tensor *v = NULL;
    int r = cq_tensor_view(&v, x, ndim, ne, NULL, elem_offset);
    if (r || own(c, v)) {
        cq_tensor_free(&v);
        fail(c, r ? r : CQ_ENOMEM);
        return NULL;
    }
    return v;
}

cq_tensor *cq_reshape(cq_ctx *c, cq_tensor *x, int ndim, const int64_t *ne)
{
    if (!c || c->status || !x) return NULL;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= ne[i];
    if (ndim < 1 || ndim > CQ_MAX_DIMS || n != cq_tensor_numel(x) || !cq_tensor_is_contiguous(x)) {
        char d[96];
        cq_error("reshape: cannot view %s (contiguous: %d) as %d dims of %lld elements",
                 cq_tensor_desc(x, d, sizeof d), cq_tensor_is_contiguous(x), ndim, (long long)n);
        fail(c, CQ_EINVAL);
        return NULL;
    }
    cq_tensor *v = view_as(c, x, ndim, ne);
    if (v && needs_grad(c, x, NULL, NULL)) record(c, NODE_RESHAPE, NULL, x, NULL, NULL, v, NULL);
    return v;
}

static cq_tensor *matmul_raw(cq_ctx *c, cq_tensor *a, cq_tensor *b, bool ta, bool tb)
{
    int64_t ar = a->ne[a->ndim - 2], ac = a->ne[a->ndim - 1];
    int64_t br = b->ne[b->ndim - 2], bc = b->ne[b->ndim - 1];
    int64_t ne[3];
    int nd = a->ndim;
    if (nd == 3) ne[0] = a->ne[0];
    ne[nd - 2] = ta ? ac : ar;
    ne[nd - 1] = tb ? br : bc;
    (void)bc;
    cq_tensor *y = alloc_t(c, CQ_F32, nd, ne);
    if (!y) return NULL;
    cq_op op = { .type = CQ_OP_MATMUL };
    op.src[0] = a;
    op.src[1] = b;
    op.dst[0] = y;
    op.f[0] = 1.0f;
    op.i[0] = ta;
    op.i[1] = tb;
    return run_rec(c, &op, NODE_OP, a, b, NULL, y, NULL);
}

cq_tensor *cq_matmul(cq_ctx *c, cq_tensor *a, cq_tensor *b, bool ta, bool tb)
{
    if (!c || c->status || !a || !b) return NULL;
    if (a->ndim < 2 || a->ndim > 3 || b->ndim < 2 || b->ndim > 3) {
        char d1[96], d2[96];
        cq_error("matmul: %s x %s: need 2-D or 3-D tensors", cq_tensor_desc(a, d1, sizeof d1),
                 cq_tensor_desc(b, d2, sizeof d2));
        fail(c, CQ_EINVAL);
        return NULL;
    }
    if (a->ndim == 3 && b->ndim == 2 && !ta) {
        /* broadcast a 2-D b over the batch: fold the batch into the rows */
        int64_t ne2[2] = { a->ne[0] * a->ne[1], a->ne[2] };
        cq_tensor *a2 = cq_reshape(c, a, 2, ne2);
        cq_tensor *y = a2 ? matmul_raw(c, a2, b, false, tb) : NULL;
        if (!y) return NULL;
        int64_t ne3[3] = { a->ne[0], a->ne[1], y->ne[1] };
        return cq_reshape(c, y, 3, ne3);
    }
    if (b->ndim == 3 && (a->ndim != 3 || b->ne[0] != a->ne[0])) {
        char d1[96], d2[96];
        cq_error("matmul: %s x %s: batch sizes differ", cq_tensor_desc(a, d1, sizeof d1),
                 cq_tensor_desc(b, d2, sizeof d2));
        fail(c, CQ_EINVAL);
        return NULL;
    }
    if (a->ndim == 3 && b->ndim == 2) {
        cq_error("matmul: a transposed 3-D a with a 2-D b is not supported");
        fail(c, CQ_EINVAL);
        return NULL;
    }
    return matmul_raw(c, a, b, ta, tb);
}

cq_tensor *cq_linear(cq_ctx *c, cq_tensor *x, cq_tensor *w)
{
    if (!c || c->status || !x || !w) return NULL;
    if (w->ndim != 2 || x->ne[x->ndim - 1] != w->ne[1]) {
        char d1[96], d2[96];
        cq_error("linear: input %s does not match weight %s ('%s'): last dim must equal in_features",
                 cq_tensor_desc(x, d1, sizeof d1), cq_tensor_desc(w, d2, sizeof d2), w->name);
        fail(c, CQ_EINVAL);
        return NULL;
    }
    int64_t in = w->ne[1], rows = cq_tensor_numel(x) / (in ? in : 1);
    int64_t ne2[2] = { rows, in };
    cq_tensor *x2 = x->ndim == 2 ? x : cq_reshape(c, x, 2, ne2);
    cq_tensor *y = x2 ? matmul_raw(c, x2, w, false, true) : NULL;
    if (!y || x->ndim == 2) return y;
    int64_t ne[CQ_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) ne[i] = x->ne[i];
    ne[x->ndim - 1] = w->ne[0];
    return cq_reshape(c, y, x->ndim, ne);
}

static cq_tensor *binary(cq_ctx *c, cq_op_type t, cq_tensor *a, cq_tensor *b)
{
    if (!c || c->status || !a || !b) return NULL;
    bool g = needs_grad(c, a, b, NULL);
    if (g && !cq_tensor_same_shape(a, b)) {
        char d1[96], d2[96];
        cq_error("%s: broadcasting %s with %s is not differentiable; use equal shapes", cq_op_name(t),
                 cq_tensor_desc(a, d1, sizeof d1), cq_tensor_desc(b, d2, sizeof d2));
        fail(c, CQ_EINVAL);
        return NULL;
    }
    cq_tensor *y = alloc_t(c, CQ_F32, a->ndim, a->ne);
    if (!y) return NULL;
    cq_op op = { .type = t };
    op.src[0] = a;
    op.src[1] = b;
    op.dst[0] = y;
    if (run(c, &op)) return NULL;
    if (g) record(c, NODE_OP, &op, a, b, NULL, y, NULL);
    return y;
}

cq_tensor *cq_add(cq_ctx *c, cq_tensor *a, cq_tensor *b) { return binary(c, CQ_OP_ADD, a, b); }
cq_tensor *cq_mul(cq_ctx *c, cq_tensor *a, cq_tensor *b) { return binary(c, CQ_OP_MUL, a, b); }

cq_tensor *cq_scale(cq_ctx *c, cq_tensor *a, float s)
{
    if (!c || c->status || !a) return NULL;
    cq_tensor *y = alloc_t(c, CQ_F32, a->ndim, a->ne);
    if (!y) return NULL;
    cq_op op = { .type = CQ_OP_SCALE };
    op.src[0] = a;
    op.dst[0] = y;
    op.f[0] = s;
    return run_rec(c, &op, NODE_OP, a, NULL, NULL, y, NULL);
}

cq_tensor *cq_rmsnorm(cq_ctx *c, cq_tensor *x, cq_tensor *w, float eps)
{
    if (!c || c->status || !x || !w) return NULL;
    cq_tensor *y = alloc_t(c, CQ_F32, x->ndim, x->ne);
    if (!y) return NULL;
    cq_op op = { .type = CQ_OP_RMSNORM };
    op.src[0] = x;
    op.src[1] = w;
    op.dst[0] = y;
    op.f[0] = eps;
    return run_rec(c, &op, NODE_OP, x, w, NULL, y, NULL);
}

cq_tensor *cq_rope_scaled(cq_ctx *c, cq_tensor *x, int64_t pos0, float theta, const cq_rope_scaling *s)
{
    if (!c || c->status || !x) return NULL;
    cq_tensor *y = alloc_t(c, CQ_F32, x->ndim, x->ne);
    if (!y) return NULL;
    cq_op op = { .type = CQ_OP_ROPE };
    op.src[0] = x;
    op.dst[0] = y;
    op.f[0] = theta;
    op.i[0] = pos0;
    if (s && s->type != CQ_ROPE_PLAIN) {
        op.i[2] = s->type;
        op.f[1] = s->factor;
        op.f[2] = s->low_freq_factor;
        op.f[3] = s->high_freq_factor;
        op.f[4] = s->original_max;
    }
    return run_rec(c, &op, NODE_OP, x, NULL, NULL, y, NULL);
}

cq_tensor *cq_rope(cq_ctx *c, cq_tensor *x, int64_t pos0, float theta)
{
    return cq_rope_scaled(c, x, pos0, theta, NULL);
}

cq_tensor *cq_attention(cq_ctx *c, cq_tensor *q, cq_tensor *k, cq_tensor *v, int64_t pos0, float scale)
{
    if (!c || c->status || !q || !k || !v) return NULL;
    if (q->ndim != 4) {
        char d[96];
        cq_error("attention: q %s must be [B, T, Hq, D]", cq_tensor_desc(q, d, sizeof d));
        fail(c, CQ_EINVAL);
        return NULL;
    }
    bool g = needs_grad(c, q, k, v);
    cq_tensor *y = alloc_t(c, CQ_F32, 4, q->ne);
    int64_t lne[3] = { q->ne[0], q->ne[2], q->ne[1] };
    cq_tensor *lse = g ? alloc_t(c, CQ_F32, 3, lne) : NULL;
    if (!y || (g && !lse)) return NULL;
    cq_op op = { .type = CQ_OP_ATTN };
    op.src[0] = q;
    op.src[1] = k;
    op.src[2] = v;
    op.dst[0] = y;
    op.dst[1] = lse;
    op.f[0] = scale;
    op.i[0] = pos0;
    if (run(c, &op)) return NULL;
    if (g) record(c, NODE_OP, &op, q, k, v, y, lse);
    return y;
}

cq_tensor *cq_swiglu(cq_ctx *c, cq_tensor *gt, cq_tensor *u)
{
    if (!c || c->status || !gt) return NULL;
    cq_tensor *y = alloc_t(c, CQ_F32, gt->ndim, gt->ne);
    if (!y) return NULL;
    cq_op op = { .type = CQ_OP_SWIGLU };
    op.src[0] = gt;
    op.src[1] = u;
    op.dst[0] = y;
    return run_rec(c, &op, NODE_OP, gt, u, NULL, y, NULL);
}

cq_tensor *cq_embed(cq_ctx *c, cq_tensor *table, cq_tensor *ids)
{
    if (!c || c->status || !table || !ids) return NULL;
    int64_t ne[CQ_MAX_DIMS];
    int nd = ids->ndim + 1;
    if (nd > CQ_MAX_DIMS || table->ndim != 2) {
        cq_error("embed: ids must have at most %d dims and the table 2", CQ_MAX_DIMS - 1);
        fail(c, CQ_EINVAL);
        return NULL;
    }
    for (int i = 0; i < ids->ndim; i++) ne[i] = ids->ne[i];
    ne[nd - 1] = table->ne[1];
    cq_tensor *y = alloc_t(c, CQ_F32, nd, ne);
    if (!y) return NULL;
    cq_op op = { .type = CQ_OP_EMBED };
    op.src[0] = table;
    op.src[1] = ids;
    op.dst[0] = y;
    return run_rec(c, &op, NODE_OP, table, NULL, NULL, y, NULL);
}

cq_tensor *cq_cross_entropy(cq_ctx *c, cq_tensor *logits, cq_tensor *targets, float scale, cq_tensor **nll_out)
{
    if (nll_out) *nll_out = NULL;
    if (!c || c->status || !logits || !targets) return NULL;
    if (logits->ndim != 2) {
        int64_t V = logits->ne[logits->ndim - 1];
        int64_t ne[2] = { cq_tensor_numel(logits) / (V ? V : 1), V };
        logits = cq_reshape(c, logits, 2, ne);
        if (!logits) return NULL;
    }
    if (targets->ndim != 1) {
        int64_t ne[1] = { cq_tensor_numel(targets) };
        targets = cq_reshape(c, targets, 1, ne);
        if (!targets) return NULL;
    }
    int64_t one = 1, N = logits->ne[0];
    cq_tensor *loss = alloc_t(c, CQ_F32, 1, &one);
    cq_tensor *lse = alloc_t(c, CQ_F32, 1, &N);
    cq_tensor *nll = nll_out ? alloc_t(c, CQ_F32, 1, &N) : NULL;
    if (!loss || !lse || (nll_out && !nll)) return NULL;
    cq_op op = { .type = CQ_OP_XENT };
    op.src[0] = logits;
    op.src[1] = targets;
    op.dst[0] = loss;
    op.dst[1] = lse;
    op.dst[2] = nll;
    op.f[0] = scale;
    if (run(c, &op)) return NULL;
    if (needs_grad(c, logits, NULL, NULL)) record(c, NODE_OP, &op, logits, NULL, NULL, loss, lse);
    if (nll_out) *nll_out = nll;
    return loss;
}

cq_tensor *cq_fakequant(cq_ctx *c, cq_tensor *w, cq_tensor *mask, int bits, int group, bool fp16_scales)
{
    if (!c || c->status || !w) return NULL;
    cq_tensor *y = alloc_t(c, CQ_F32, w->ndim, w->ne);
    if (!y) return NULL;
    cq_op op = { .type = CQ_OP_FAKEQUANT };
    op.src[0] = w;
    op.src[1] = mask;
    op.dst[0] = y;
    op.i[0] = bits;
    op.i[1] = group;
    op.i[2] = fp16_scales;
    return run_rec(c, &op, NODE_STE, w, NULL, NULL, y, NULL);
}

cq_tensor *cq_cast(cq_ctx *c, cq_tensor *x, cq_dtype dt)
{
    if (!c || c->status || !x) return NULL;
    cq_tensor *y = alloc_t(c, dt, x->ndim, x->ne);
    if (!y) return NULL;
    cq_op op = { .type = CQ_OP_COPY };
    op.src[0] = x;
    op.dst[0] = y;
    if (run(c, &op)) return NULL;
    if ((dt == CQ_F32 || dt == CQ_F16 || dt == CQ_BF16) && needs_grad(c, x, NULL, NULL))
        record(c, NODE_CAST, &op, x, NULL, NULL, y, NULL);
    return y;
}

void cq_qlinear_free(cq_qlinear **w)
{
    if (!w || !*w) return;
    cq_tensor_free(&(*w)->codes);
    cq_tensor_free(&(*w)->scales);
    cq_tensor_free(&(*w)->rowptr);
    cq_tensor_free(&(*w)->cols);
    cq_tensor_free(&(*w)->delta);
    cq_tensor_free(&(*w)->lanes);
    free(*w);
    *w = NULL;
}

cq_tensor *cq_qlinear_fwd(cq_ctx *c, cq_tensor *x, const cq_qlinear *w)
{
    if (!c || c->status || !x || !w) return NULL;
    if (x->ne[x->ndim - 1] != w->in) {
        char d[96];
        cq_error("qlinear: input %s does not match in_features %lld", cq_tensor_desc(x, d, sizeof d),
                 (long long)w->in);
        fail(c, CQ_EINVAL);
        return NULL;
    }
    int64_t rows = cq_tensor_numel(x) / w->in;
    int64_t ne2[2] = { rows, w->in };
    bool old = cq_ctx_set_grad(c, false);
    cq_tensor *x2 = x->ndim == 2 ? x : cq_reshape(c, x, 2, ne2);
    cq_ctx_set_grad(c, old);
    if (!x2) return NULL;
    int64_t yne[2] = { rows, w->out };
    cq_tensor *y = alloc_t(c, CQ_F32, 2, yne);
    if (!y) return NULL;
    cq_op op = { .type = CQ_OP_QMATMUL };
    op.src[0] = x2;
    op.src[1] = w->codes;
    op.src[2] = w->scales;
    op.src[3] = w->rowptr;
    op.src[4] = w->rowptr ? w->cols : NULL;
    op.src[5] = w->rowptr ? w->delta : NULL;
    op.src[6] = w->rowptr && w->layout == CQ_QCODES_IL4 ? w->lanes : NULL;
    op.dst[0] = y;
    op.i[0] = w->bits;
    op.i[1] = w->group;
    op.i[2] = w->in;
    op.i[3] = w->layout;
    if (run(c, &op)) return NULL;
    if (x->ndim == 2) return y;
    int64_t ne[CQ_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) ne[i] = x->ne[i];
    ne[x->ndim - 1] = w->out;
    return view_as(c, y, x->ndim, ne);
}

/* ------------------------------------------------ memory-saving regions */

static void backward_node(cq_ctx *c, node *n);
static void acc_grad(cq_ctx *c, cq_tensor *t, cq_tensor *g, bool fresh);

cq_tensor *cq_checkpoint(cq_ctx *c, cq_region_fn fn, void *user, int64_t arg, cq_tensor *x)
{
    if (!c || c->status || !fn || !x) return NULL;
    bool rec = c->grad;
    size_t mark = c->n_owned, tape0 = c->n_tape;
    c->grad = false;
    cq_tensor *y = fn(c, user, arg, x);
    c->grad = rec;
    c->n_tape = tape0;
    if (!y || c->status) {
        fail(c, c->status);
        return NULL;
    }
    if (y->owner != c || y == x) {
        cq_error("checkpoint: the region must return a new tensor of this context");
        fail(c, CQ_EINVAL);
        return NULL;
    }
    release_to(c, mark, &y, 1);
    if (!rec) return y;
    record(c, NODE_CKPT, NULL, x, NULL, NULL, y, NULL);
    if (!c->status) {
        node *n = &c->tape[c->n_tape - 1];
        n->fn = fn;
        n->user = user;
        n->arg = arg;
    }
    return c->status ? NULL : y;
}

/* Backward of a checkpointed region: recompute it from its input (recording
 * on a sub-tape), back-propagate the output's gradient through the sub-tape,
 * give the input its gradient, release the region's temporaries. */
static void backward_ckpt(cq_ctx *c, node n)
{
    cq_tensor *x = n.in[0], *y = n.out, *dy = y->grad;
    size_t mark = c->n_owned, tape0 = c->n_tape;
    bool dy_on_top = mark > 0 && c->owned[mark - 1] == dy;
    if (dy_on_top) mark--; /* the output's gradient dies with the region */
    cq_tensor *xin = view_as(c, x, x->ndim, x->ne);
    if (!xin) return;
    xin->requires_grad = x->requires_grad;
    c->grad = true;
    cq_tensor *y2 = n.fn(c, n.user, n.arg, xin);
    c->grad = false;
    if (!y2 || c->status) {
        fail(c, c->status);
        return;
    }
    if (!cq_tensor_same_shape(y2, y)) {
        char d1[96], d2[96];
        cq_error("checkpoint: the recomputed region gave %s, the forward %s", cq_tensor_desc(y2, d1, sizeof d1),
                 cq_tensor_desc(y, d2, sizeof d2));
        fail(c, CQ_EINVAL);
        return;
    }
    if (y2->tape_id >= (int)tape0 && y2->requires_grad) {
        y2->grad = dy;
        for (size_t i = c->n_tape; i-- > tape0 && !c->status;) {
            node *m = &c->tape[i];
            if (m->out->grad) backward_node(c, m);
        }
    }
    c->n_tape = tape0;
    if (c->status) return;
    cq_tensor *dx = xin->grad;
    release_to(c, mark, &dx, dx ? 1 : 0);
    if (dy_on_top && dx != dy) y->grad = NULL;
    if (dx) acc_grad(c, x, dx, true);
}

/* x rows [r0, r0 + n) of a contiguous 2-D tensor, ctx-owned */
static cq_tensor *rows_of(cq_ctx *c, cq_tensor *x, int64_t r0, int64_t n)
{
    int64_t ne[2] = { n, x->ne[1] };
    return cq_view(c, x, 2, ne, r0 * x->ne[1]);
}

static cq_tensor *as_dtype(cq_ctx *c, cq_tensor *x, cq_dtype dt)
{
    if (x->dtype == dt) return x;
    cq_tensor *y = alloc_t(c, dt, x->ndim, x->ne);
    if (y && cq_copy_into(c, y, x)) return NULL;
    return y;
}

/* logits of one chunk: op(xc) w^T in dtype mm -> f32 [n, V] */
static cq_tensor *chunk_logits(cq_ctx *c, cq_tensor *xc, cq_tensor *wm, cq_dtype mm)
{
    cq_tensor *xm = as_dtype(c, xc, mm);
    if (!xm) return NULL;
    int64_t ne[2] = { xc->ne[0], wm->ne[0] };
    cq_tensor *lg = alloc_t(c, CQ_F32, 2, ne);
    if (!lg) return NULL;
    cq_op op = { .type = CQ_OP_MATMUL };
    op.src[0] = xm;
    op.src[1] = wm;
    op.dst[0] = lg;
    op.f[0] = 1.0f;
    op.i[1] = 1;
    return run(c, &op) ? NULL : lg;
}

static int xent_into(cq_ctx *c, cq_tensor *lg, cq_tensor *tg, float scale, cq_tensor *loss, cq_tensor *lse)
{
    cq_op op = { .type = CQ_OP_XENT };
    op.src[0] = lg;
    op.src[1] = tg;
    op.dst[0] = loss;
    op.dst[1] = lse;
    op.f[0] = scale;
    return run(c, &op);
}

cq_tensor *cq_linear_xent(cq_ctx *c, cq_tensor *x, cq_tensor *w, cq_tensor *targets, float scale, int64_t chunk,
                          cq_dtype mm)
{
    if (!c || c->status || !x || !w || !targets) return NULL;
    int64_t K = x->ne[x->ndim - 1], N = K ? cq_tensor_numel(x) / K : 0;
    if (w->ndim != 2 || w->ne[1] != K || cq_tensor_numel(targets) != N || targets->dtype != CQ_I32 ||
        !cq_tensor_is_contiguous(x) || !cq_tensor_is_contiguous(targets) ||
        (mm != CQ_F32 && mm != CQ_F16 && mm != CQ_BF16)) {
        char d1[96], d2[96], d3[96];
        cq_error("linear_xent: x %s, w %s, targets %s: need x [.., K] contiguous, w [V, K], i32 targets of x's "
                 "rows, f32/f16/bf16 compute",
                 cq_tensor_desc(x, d1, sizeof d1), cq_tensor_desc(w, d2, sizeof d2),
                 cq_tensor_desc(targets, d3, sizeof d3));
        fail(c, CQ_EINVAL);
        return NULL;
    }
    if (chunk <= 0 || chunk > N) chunk = N > 0 ? N : 1;
    bool g = needs_grad(c, x, w, NULL);
    int64_t ne2[2] = { N, K }, one = 1;
    cq_tensor *x2 = x->ndim == 2 ? x : cq_reshape(c, x, 2, ne2); /* recorded: dx flows back through it */
    if (!x2) return NULL;
    bool old = c->grad;
    c->grad = false;
    cq_tensor *t1 = targets->ndim == 1 ? targets : view_as(c, targets, 1, &N);
    cq_tensor *loss = alloc_t(c, CQ_F32, 1, &one);
    cq_tensor *part = N > chunk ? alloc_t(c, CQ_F32, 1, &one) : NULL;
    cq_tensor *wm = loss ? as_dtype(c, w, mm) : NULL;
    for (int64_t r0 = 0; r0 < N && wm && !c->status; r0 += chunk) {
        int64_t n = N - r0 < chunk ? N - r0 : chunk;
        size_t mark = c->n_owned;
        cq_tensor *xc = rows_of(c, x2, r0, n);
        cq_tensor *tc = cq_view(c, t1, 1, &n, r0);
        cq_tensor *lg = xc && tc ? chunk_logits(c, xc, wm, mm) : NULL;
        cq_tensor *lse = lg ? alloc_t(c, CQ_F32, 1, &n) : NULL;
        if (lse && !xent_into(c, lg, tc, scale, r0 ? part : loss, lse) && r0) cq_axpy(c, loss, 1.0f, part);
        release_to(c, mark, NULL, 0);
    }
    c->grad = old;
    if (c->status) return NULL;
    if (g) {
        record(c, NODE_LMXENT, NULL, x2, w, NULL, loss, t1);
        if (c->status) return NULL;
        node *nd = &c->tape[c->n_tape - 1];
        nd->op.type = CQ_OP_XENT;
        nd->op.f[0] = scale;
        nd->op.i[0] = chunk;
        nd->op.i[1] = mm;
    }
    return loss;
}

/* A user-owned tensor marked trainable without a grad buffer gets one of
 * its own (it outlives the ctx); nonzero (and the ctx failed) when it cannot. */
static int new_user_grad(cq_ctx *c, cq_tensor *t)
{
    int r = cq_tensor_new(&t->grad, c->be, CQ_F32, t->ndim, t->ne);
    if (r) fail(c, r);
    return r;
}

/* Backward of cq_linear_xent: per chunk, the logits again, then
 * dlogits = XENT_BWD, dx rows = dlogits w, dw += dlogits^T x rows. */
static void backward_lmxent(cq_ctx *c, const node *n)
{
    cq_tensor *x = n->in[0], *w = n->in[1], *t1 = n->aux, *dy = n->out->grad;
    const float scale = n->op.f[0];
    const int64_t chunk = n->op.i[0], N = x->ne[0];
    const cq_dtype mm = (cq_dtype)n->op.i[1];
    bool gx = x->requires_grad, gw = w->requires_grad;
    cq_tensor *dx = gx ? alloc_t(c, CQ_F32, 2, x->ne) : NULL;
    if (gw && !w->grad) {
        if (w->owner != c) {
            if (new_user_grad(c, w)) return;
        } else {
            cq_tensor *z = alloc_t(c, CQ_F32, w->ndim, w->ne);
            if (!z || cq_fill(c, z, 0.0f)) return;
            w->grad = z;
        }
    }
    size_t mark0 = c->n_owned;
    cq_tensor *wm = (gx || gw) ? as_dtype(c, w, mm) : NULL;
    int64_t one = 1;
    cq_tensor *scratch = alloc_t(c, CQ_F32, 1, &one);
    for (int64_t r0 = 0; r0 < N && wm && scratch && !c->status; r0 += chunk) {
        int64_t nr = N - r0 < chunk ? N - r0 : chunk;
        size_t mark = c->n_owned;
        cq_tensor *xc = rows_of(c, x, r0, nr);
        cq_tensor *tc = cq_view(c, t1, 1, &nr, r0);
        cq_tensor *lg = xc && tc ? chunk_logits(c, xc, wm, mm) : NULL;
        cq_tensor *lse = lg ? alloc_t(c, CQ_F32, 1, &nr) : NULL;
        cq_tensor *dl = lse ? alloc_t(c, CQ_F32, 2, lg->ne) : NULL;
        if (dl && !xent_into(c, lg, tc, scale, scratch, lse)) {
            cq_op op = { .type = CQ_OP_XENT_BWD };
            op.src[0] = lg;
            op.src[1] = tc;
            op.src[2] = lse;
            op.src[3] = dy;
            op.dst[0] = dl;
            op.f[0] = scale;
            /* 16-bit compute: dlogits in the GEMMs' dtype, as the plain
             * path's MATMUL backward does */
            cq_tensor *dlm = run(c, &op) ? NULL : mm == CQ_F32 ? dl : as_dtype(c, dl, mm);
            if (dlm && gx) { /* dx rows = dlogits @ w */
                cq_op mo = { .type = CQ_OP_MATMUL };
                mo.src[0] = dlm;
                mo.src[1] = wm;
                mo.dst[0] = rows_of(c, dx, r0, nr);
                mo.f[0] = 1.0f;
                if (mo.dst[0]) run(c, &mo);
            }
            if (dlm && !c->status && gw) { /* dw += dlogits^T @ x rows (in the GEMM's dtype, as the plain path) */
                cq_tensor *xm = mm == CQ_F32 ? xc : as_dtype(c, xc, mm);
                cq_op mo = { .type = CQ_OP_MATMUL };
                mo.src[0] = dlm;
                mo.src[1] = xm;
                mo.dst[0] = w->grad;
                mo.f[0] = 1.0f;
                mo.f[1] = 1.0f;
                mo.i[0] = 1;
                if (xm) run(c, &mo);
            }
        }
        release_to(c, mark, NULL, 0);
    }
    release_to(c, mark0, NULL, 0);
    if (dx && !c->status) acc_grad(c, x, dx, true);
}

/* ------------------------------------------------ in-place helpers */
int cq_fill(cq_ctx *c, cq_tensor *t, float v)
{
    cq_op op = { .type = CQ_OP_FILL };
    op.dst[0] = t;
    op.f[0] = v;
    return run(c, &op);
}

int cq_axpy(cq_ctx *c, cq_tensor *y, float a, const cq_tensor *x)
{
    cq_op op = { .type = CQ_OP_AXPY };
    op.src[0] = x;
    op.dst[0] = y;
    op.f[0] = a;
    return run(c, &op);
}

int cq_copy_into(cq_ctx *c, cq_tensor *dst, const cq_tensor *src)
{
    cq_op op = { .type = CQ_OP_COPY };
    op.src[0] = src;
    op.dst[0] = dst;
    return run(c, &op);
}

int cq_adamw_step(cq_ctx *c, cq_tensor *p, cq_tensor *m, cq_tensor *v, const cq_tensor *g,
                  const cq_adamw_params *ap)
{
    CQ_CHECK_ARG(c && ap && ap->step >= 1, CQ_EINVAL);
    cq_op op = { .type = CQ_OP_ADAMW };
    op.src[0] = g;
    op.dst[0] = p;
    op.dst[1] = m;
    op.dst[2] = v;
    op.f[0] = ap->lr;
    op.f[1] = ap->beta1;
    op.f[2] = ap->beta2;
    op.f[3] = ap->eps;
    op.f[4] = ap->weight_decay;
    op.f[5] = (float)(1.0 - pow(ap->beta1, (double)ap->step));
    op.f[6] = (float)(1.0 - pow(ap->beta2, (double)ap->step));
    op.f[7] = ap->grad_scale;
    return run(c, &op);
}

int cq_sumsq(cq_ctx *c, const cq_tensor *t, double *out)
{
    CQ_CHECK_ARG(c && t && out, CQ_EINVAL);
    int64_t one = 1;
    cq_tensor *r = alloc_t(c, CQ_F32, 1, &one);
    if (!r) return c->status;
    cq_op op = { .type = CQ_OP_SUMSQ };
    op.src[0] = t;
    op.dst[0] = r;
    int st = run(c, &op);
    if (st) return st;
    float v;
    st = cq_tensor_get(r, &v, sizeof v);
    if (st) {
        fail(c, st);
        return st;
    }
    *out = v;
    return CQ_OK;
}

int cq_sqr_accum(cq_ctx *c, cq_tensor *F, const cq_tensor *g, int64_t n)
{
    cq_op op = { .type = CQ_OP_SQR_ACCUM };
    op.src[0] = g;
    op.dst[0] = F;
    op.f[0] = (float)n;
    return run(c, &op);
}

/* ------------------------------------------------ autograd */

/* Give t the gradient contribution g. `fresh`: g was made for t alone and
 * may become t's grad tensor without a copy. */
static void acc_grad(cq_ctx *c, cq_tensor *t, cq_tensor *g, bool fresh)
{
    if (!t || !t->requires_grad || !g || c->status) return;
    if (!t->grad) {
        if (t->owner != c) {
            if (new_user_grad(c, t)) return;
        } else {
            cq_tensor *gt = g;
            if (!cq_tensor_same_shape(g, t)) gt = view_as(c, g, t->ndim, t->ne);
            if (gt && !fresh) {
                cq_tensor *cp = alloc_t(c, CQ_F32, t->ndim, t->ne);
                if (!cp || cq_copy_into(c, cp, gt)) return;
                gt = cp;
            }
            t->grad = gt;
            return;
        }
    }
    cq_axpy(c, t->grad, 1.0f, g);
}

/* grad contribution op(A) op(B) for input t: accumulate with beta = 1 when
 * t already has a gradient buffer of the right shape */
static void mm_grad(cq_ctx *c, cq_tensor *t, const cq_tensor *A, const cq_tensor *B, bool ta, bool tb)
{
    if (!t || !t->requires_grad || c->status) return;
    cq_op op = { .type = CQ_OP_MATMUL };
    op.src[0] = A;
    op.src[1] = B;
    op.f[0] = 1.0f;
    op.i[0] = ta;
    op.i[1] = tb;
    if (t->grad && cq_tensor_same_shape(t->grad, t) && t->grad->dtype == CQ_F32) {
        op.dst[0] = t->grad;
        op.f[1] = 1.0f;
        run(c, &op);
        return;
    }
    cq_tensor *g = alloc_t(c, CQ_F32, t->ndim, t->ne);
    if (!g) return;
    op.dst[0] = g;
    if (run(c, &op)) return;
    acc_grad(c, t, g, true);
}

static void backward_node(cq_ctx *c, node *n)
{
    cq_tensor *dy = n->out->grad;
    cq_tensor *a = n->in[0], *b = n->in[1], *d = n->in[2];
    const cq_op *f = &n->op;
    if (n->kind == NODE_CKPT) {
        backward_ckpt(c, *n); /* by value: the recomputation may grow (move) the tape */
        return;
    }
    if (n->kind == NODE_LMXENT) {
        backward_lmxent(c, n);
        return;
    }
    if (n->kind == NODE_RESHAPE || n->kind == NODE_CAST || n->kind == NODE_STE) {
        /* identity (the straight-through estimator: d Q(w)/dw = 1); the
         * output's gradient is final here, so the input may take it over */
        acc_grad(c, a, dy, true);
        return;
    }
    switch (f->type) {
    case CQ_OP_MATMUL: {
        bool ta = f->i[0], tb = f->i[1];
        /* Mixed precision: when both inputs were 16-bit (bf16/f16 compute),
         * the incoming f32 gradient is rounded to that dtype once, so the two
         * backward GEMMs run 16 x 16 -> f32 like the forward (tensor cores
         * on CUDA; a mixed pair would fall back to f32 SGEMM), as PyTorch's
         * autocast does. The gradients themselves stay f32. */
        cq_tensor *g = dy;
        if (a && b && a->dtype == b->dtype && a->dtype != CQ_F32 && dy->dtype == CQ_F32 &&
            (a->requires_grad || b->requires_grad))
            g = as_dtype(c, dy, a->dtype);
        if (!g) break;
        /* C = op(A) op(B) */
        if (a && a->requires_grad) {
            if (!ta) mm_grad(c, a, g, b, false, !tb);   /* dA = dC op(B)^T */
            else mm_grad(c, a, b, g, tb, true);         /* dA = op(B) dC^T */
        }
        if (b && b->requires_grad) {
            if (!tb) mm_grad(c, b, a, g, !ta, false);   /* dB = op(A)^T dC */
            else mm_grad(c, b, g, a, true, ta);         /* dB = dC^T op(A) */
        }
        break;
    }
    case CQ_OP_ADD:
        acc_grad(c, a, dy, true);
        acc_grad(c, b, dy, false);
        break;
    case CQ_OP_MUL: {
        for (int k = 0; k < 2; k++) {
            cq_tensor *t = k ? b : a, *o = k ? a : b;
            if (!t || !t->requires_grad) continue;
            cq_tensor *g = alloc_t(c, CQ_F32, t->ndim, t->ne);
            if (!g) return;
            cq_op op = { .type = CQ_OP_MUL };
            op.src[0] = dy;
            op.src[1] = o;
            op.dst[0] = g;
            if (run(c, &op)) return;
            acc_grad(c, t, g, true);
        }
        break;
    }
    case CQ_OP_SCALE: {
        if (!a->requires_grad) break;
        if (a->grad) {
            cq_axpy(c, a->grad, f->f[0], dy);
            break;
        }
        cq_tensor *g = alloc_t(c, CQ_F32, a->ndim, a->ne);
        if (!g) return;
        cq_op op = { .type = CQ_OP_SCALE };
        op.src[0] = dy;
        op.dst[0] = g;
        op.f[0] = f->f[0];
        if (!run(c, &op)) acc_grad(c, a, g, true);
        break;
    }
    case CQ_OP_RMSNORM: {
        cq_tensor *dx = alloc_t(c, CQ_F32, a->ndim, a->ne);
        cq_tensor *dw = alloc_t(c, CQ_F32, b->ndim, b->ne);
        if (!dx || !dw) return;
        cq_op op = { .type = CQ_OP_RMSNORM_BWD };
        op.src[0] = a;
        op.src[1] = b;
        op.src[2] = dy;
        op.dst[0] = dx;
        op.dst[1] = dw;
        op.f[0] = f->f[0];
        if (run(c, &op)) return;
        acc_grad(c, a, dx, true);
        acc_grad(c, b, dw, true);
        break;
    }
    case CQ_OP_ROPE: {
        cq_tensor *dx = alloc_t(c, CQ_F32, a->ndim, a->ne);
        if (!dx) return;
        cq_op op = *f;
        op.src[0] = dy;
        op.dst[0] = dx;
        op.i[1] = !f->i[1];
        if (run(c, &op)) return;
        acc_grad(c, a, dx, true);
        break;
    }
    case CQ_OP_ATTN: {
        cq_tensor *dq = alloc_t(c, CQ_F32, a->ndim, a->ne);
        cq_tensor *dk = alloc_t(c, CQ_F32, b->ndim, b->ne);
        cq_tensor *dv = alloc_t(c, CQ_F32, d->ndim, d->ne);
        if (!dq || !dk || !dv) return;
        cq_op op = { .type = CQ_OP_ATTN_BWD };
        op.src[0] = a;
        op.src[1] = b;
        op.src[2] = d;
        op.src[3] = n->out;
        op.src[4] = n->aux;
        op.src[5] = dy;
        op.dst[0] = dq;
        op.dst[1] = dk;
        op.dst[2] = dv;
        op.f[0] = f->f[0];
        op.i[0] = f->i[0];
        if (run(c, &op)) return;
        acc_grad(c, a, dq, true);
        acc_grad(c, b, dk, true);
        acc_grad(c, d, dv, true);
        break;
    }
    case CQ_OP_SWIGLU: {
        cq_tensor *dg = alloc_t(c, CQ_F32, a->ndim, a->ne);
        cq_tensor *du = b ? alloc_t(c, CQ_F32, b->ndim, b->ne) : NULL;
        if (!dg || (b && !du)) return;
        cq_op op = { .type = CQ_OP_SWIGLU_BWD };
        op.src[0] = a;
        op.src[1] = b;
        op.src[2] = dy;
        op.dst[0] = dg;
        op.dst[1] = du;
        if (run(c, &op)) return;
        acc_grad(c, a, dg, true);
        if (b) acc_grad(c, b, du, true);
        break;
    }
    case CQ_OP_EMBED: {
        if (a->dtype != CQ_F32) break;
        cq_tensor *dt = alloc_t(c, CQ_F32, 2, a->ne);
        if (!dt) return;
        cq_op op = { .type = CQ_OP_EMBED_BWD };
        op.src[0] = f->src[1];
        op.src[1] = dy;
        op.dst[0] = dt;
        if (run(c, &op)) return;
        acc_grad(c, a, dt, true);
        break;
    }
    case CQ_OP_XENT: {
        cq_tensor *dl = alloc_t(c, CQ_F32, a->ndim, a->ne);
        if (!dl) return;
        cq_op op = { .type = CQ_OP_XENT_BWD };
        op.src[0] = a;
        op.src[1] = f->src[1];
        op.src[2] = n->aux;
        op.src[3] = dy;
        op.dst[0] = dl;
        op.f[0] = f->f[0];
        if (run(c, &op)) return;
        acc_grad(c, a, dl, true);
        break;
    }
    default:
        cq_error("backward: no gradient for op %s", cq_op_name(f->type));
        fail(c, CQ_ENOTSUP);
    }
}

int cq_backward(cq_ctx *c, cq_tensor *loss)
{
    CQ_CHECK_ARG(c, CQ_EINVAL);
    if (c->status) return c->status;
    if (!loss || cq_tensor_numel(loss) != 1 || loss->dtype != CQ_F32) {
        cq_error("backward: the loss must be an f32 scalar");
        return CQ_EINVAL;
    }
    if (loss->tape_id < 0 || loss->owner != c) {
        cq_error("backward: the loss was not computed on this context with gradients enabled");
        return CQ_EINVAL;
    }
    bool old = cq_ctx_set_grad(c, false);
    if (!loss->grad) {
        loss->grad = alloc_t(c, CQ_F32, loss->ndim, loss->ne);
        if (loss->grad) cq_fill(c, loss->grad, 1.0f);
    }
    for (size_t i = c->n_tape; i-- > 0 && !c->status;) {
        node *n = &c->tape[i];
        if (!n->out->grad) continue;
        backward_node(c, n);
    }
    cq_ctx_set_grad(c, old);
    c->n_tape = 0; /* the tape is consumed */
    return c->status;
}
