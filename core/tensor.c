/* cherryq: buffers and tensors on a backend. */
#include <stdio.h>
#include <stdlib.h>

#include "cq_ops.h"
#include "cq_tensor.h"

int cq_buffer_alloc(cq_backend *be, size_t size, cq_buffer **out)
{
    CQ_CHECK_ARG(be && out, CQ_EINVAL);
    *out = NULL;
    cq_buffer *b = calloc(1, sizeof *b);
    if (!b) return CQ_ENOMEM;
    int r = be->ops->alloc(be, size ? size : 1, &b->handle);
    if (r) {
        cq_error("%s: cannot allocate %zu bytes (%s)", be->name, size, cq_strerror(r));
        free(b);
        return r;
    }
    b->be = be;
    b->size = size;
    b->refcount = 1;
    *out = b;
    return CQ_OK;
}

int cq_buffer_wrap_host(cq_backend *be, void *ptr, size_t size, cq_buffer **out)
{
    CQ_CHECK_ARG(be && out && (ptr || !size), CQ_EINVAL);
    *out = NULL;
    if (!be->ops->wrap_host) return CQ_ENOTSUP;
    cq_buffer *b = calloc(1, sizeof *b);
    if (!b) return CQ_ENOMEM;
    int r = be->ops->wrap_host(be, ptr, size, &b->handle);
    if (r) {
        free(b);
        return r;
    }
    b->be = be;
    b->size = size;
    b->refcount = 1;
    b->external = true;
    *out = b;
    return CQ_OK;
}

void cq_buffer_retain(cq_buffer *b)
{
    if (b) b->refcount++;
}

void cq_buffer_release(cq_buffer **pb)
{
    if (!pb || !*pb) return;
    cq_buffer *b = *pb;
    *pb = NULL;
    if (--b->refcount > 0) return;
    if (b->handle && !b->external && b->be->ops->free) b->be->ops->free(b->be, b->handle);
    free(b);
}

/* ------------------------------------------------------------ tensors */
int64_t cq_tensor_numel(const cq_tensor *t)
{
    if (!t) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->ne[i];
    return n;
}

size_t cq_tensor_nbytes(const cq_tensor *t)
{
    return t ? (size_t)cq_tensor_numel(t) * cq_dtype_size(t->dtype) : 0;
}

bool cq_tensor_is_contiguous(const cq_tensor *t)
{
    if (!t) return false;
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->ne[i] != 1 && t->nb[i] != s) return false;
        s *= t->ne[i];
    }
    return true;
}

bool cq_tensor_same_shape(const cq_tensor *a, const cq_tensor *b)
{
    if (!a || !b || a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->ne[i] != b->ne[i]) return false;
    return true;
}

cq_backend *cq_tensor_backend(const cq_tensor *t)
{
    return t && t->buf ? t->buf->be : NULL;
}

const char *cq_tensor_desc(const cq_tensor *t, char *buf, size_t n)
{
    if (!t) {
        snprintf(buf, n, "(null)");
        return buf;
    }
    size_t o = (size_t)snprintf(buf, n, "%s[", cq_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->ne[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

void cq_tensor_set_name(cq_tensor *t, const char *name)
{
    if (t && name) snprintf(t->name, sizeof t->name, "%s", name);
}

static int shape_ok(int ndim, const int64_t *ne)
{
    if (ndim < 1 || ndim > CQ_MAX_DIMS || !ne) return 0;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (ne[i] < 0) return 0;
        if (ne[i] && n > INT64_MAX / 16 / ne[i]) return 0;
        n *= ne[i];
    }
    return 1;
}

static void set_contiguous(cq_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->nb[i] = s;
        s *= t->ne[i];
    }
}

/* Internal: tensor header over an existing buffer (takes a reference). */
cq_tensor *cq_tensor_header(cq_buffer *buf, size_t offset, cq_dtype dt, int ndim, const int64_t *ne);
cq_tensor *cq_tensor_header(cq_buffer *buf, size_t offset, cq_dtype dt, int ndim, const int64_t *ne)
{
    cq_tensor *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->ne[i] = ne[i];
    set_contiguous(t);
    t->buf = buf;
    cq_buffer_retain(buf);
    t->offset = offset;
    t->tape_id = -1;
    return t;
}

int cq_tensor_new(cq_tensor **out, cq_backend *be, cq_dtype dt, int ndim, const int64_t *ne)
{
    CQ_CHECK_ARG(out && be, CQ_EINVAL);
    *out = NULL;
    if ((unsigned)dt >= CQ_DTYPE_COUNT || !shape_ok(ndim, ne)) {
        cq_error("cq_tensor_new: invalid dtype or shape (ndim %d)", ndim);
        return CQ_EINVAL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= ne[i];
    size_t bytes = (size_t)n * cq_dtype_size(dt);
    cq_buffer *b;
    int r = cq_buffer_alloc(be, bytes, &b);
    if (r) return r;
    cq_tensor *t = cq_tensor_header(b, 0, dt, ndim, ne);
    cq_buffer_release(&b);
    if (!t) return CQ_ENOMEM;
    if (bytes) {
        cq_op op = { .type = CQ_OP_FILL };
        op.dst[0] = t;
        /* zero-init: bytes through FILL for float/int types, else upload */
        if (dt == CQ_F32 || dt == CQ_F16 || dt == CQ_BF16 || dt == CQ_I32) {
            r = cq_op_run(be, &op);
        } else {
            void *z = calloc(1, bytes);
            r = z ? be->ops->upload(be, t->buf->handle, 0, z, bytes) : CQ_ENOMEM;
            free(z);
        }
        if (r) {
            cq_tensor_free(&t);
            return r;
        }
    }
    *out = t;
    return CQ_OK;
}

int cq_tensor_view(cq_tensor **out, const cq_tensor *t, int ndim, const int64_t *ne,
                   const int64_t *nb, int64_t elem_offset)
{
    CQ_CHECK_ARG(out && t && t->buf, CQ_EINVAL);
    *out = NULL;
    if (!shape_ok(ndim, ne) || elem_offset < 0) {
        cq_error("cq_tensor_view: invalid shape or offset");
        return CQ_EINVAL;
    }
    size_t es = cq_dtype_size(t->dtype);
    /* extent check: the largest element reached must be inside the buffer */
    int64_t last = elem_offset;
    int64_t st[CQ_MAX_DIMS];
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        st[i] = nb ? nb[i] : s;
        s *= ne[i];
        if (st[i] < 0) return CQ_EINVAL;
        if (ne[i] == 0) last = -1;
    }
    if (last >= 0)
        for (int i = 0; i < ndim; i++) last += (ne[i] - 1) * st[i];
    size_t off = t->offset + (size_t)elem_offset * es;
    if (last >= 0 && t->offset + (size_t)(last + 1) * es > t->buf->size) {
        char d[96];
        cq_error("cq_tensor_view: view exceeds the buffer of %s", cq_tensor_desc(t, d, sizeof d));
        return CQ_EINVAL;
    }
    cq_tensor *v = cq_tensor_header(t->buf, off, t->dtype, ndim, ne);
    if (!v) return CQ_ENOMEM;
    for (int i = 0; i < ndim; i++) v->nb[i] = st[i];
    *out = v;
    return CQ_OK;
}

void cq_tensor_free(cq_tensor **pt)
{
    if (!pt || !*pt) return;
    cq_tensor *t = *pt;
    *pt = NULL;
    if (t->grad && !t->grad->owner) cq_tensor_free(&t->grad);
    cq_buffer_release(&t->buf);
    free(t);
}

void *cq_tensor_host(const cq_tensor *t)
{
    if (!t || !t->buf || !t->buf->be->ops->host_ptr) return NULL;
    uint8_t *p = t->buf->be->ops->host_ptr(t->buf->be, t->buf->handle);
    return p ? p + t->offset : NULL;
}

int cq_tensor_set(cq_tensor *t, const void *src, size_t nbytes)
{
    CQ_CHECK_ARG(t && t->buf && (src || !nbytes), CQ_EINVAL);
    if (!cq_tensor_is_contiguous(t) || nbytes != cq_tensor_nbytes(t)) {
        char d[96];
        cq_error("cq_tensor_set: %s needs %zu contiguous bytes, got %zu", cq_tensor_desc(t, d, sizeof d),
                 cq_tensor_nbytes(t), nbytes);
        return CQ_EINVAL;
    }
    if (!nbytes) return CQ_OK;
    return t->buf->be->ops->upload(t->buf->be, t->buf->handle, t->offset, src, nbytes);
}

int cq_tensor_get(const cq_tensor *t, void *dst, size_t nbytes)
{
    CQ_CHECK_ARG(t && t->buf && (dst || !nbytes), CQ_EINVAL);
    if (!cq_tensor_is_contiguous(t) || nbytes != cq_tensor_nbytes(t)) {
        char d[96];
        cq_error("cq_tensor_get: %s needs %zu contiguous bytes, got %zu", cq_tensor_desc(t, d, sizeof d),
                 cq_tensor_nbytes(t), nbytes);
        return CQ_EINVAL;
    }
    if (!nbytes) return CQ_OK;
    return t->buf->be->ops->download(t->buf->be, t->buf->handle, t->offset, dst, nbytes);
}

int cq_tensor_get_f32(const cq_tensor *t, float *dst)
{
    CQ_CHECK_ARG(t && dst, CQ_EINVAL);
    if (t->dtype == CQ_F32) return cq_tensor_get(t, dst, cq_tensor_nbytes(t));
    if (t->dtype != CQ_F16 && t->dtype != CQ_BF16) {
        cq_error("cq_tensor_get_f32: %s is not a float tensor", cq_dtype_name(t->dtype));
        return CQ_EINVAL;
    }
    size_t n = (size_t)cq_tensor_numel(t);
    uint16_t *tmp = malloc(n * 2 + 1);
    if (!tmp) return CQ_ENOMEM;
    int r = cq_tensor_get(t, tmp, n * 2);
    if (!r) r = cq_convert(dst, CQ_F32, tmp, t->dtype, n);
    free(tmp);
    return r;
}

int cq_tensor_set_f32(cq_tensor *t, const float *src)
{
    CQ_CHECK_ARG(t && src, CQ_EINVAL);
    if (t->dtype == CQ_F32) return cq_tensor_set(t, src, cq_tensor_nbytes(t));
    if (t->dtype != CQ_F16 && t->dtype != CQ_BF16) {
        cq_error("cq_tensor_set_f32: %s is not a float tensor", cq_dtype_name(t->dtype));
        return CQ_EINVAL;
    }
    size_t n = (size_t)cq_tensor_numel(t);
    uint16_t *tmp = malloc(n * 2 + 1);
    if (!tmp) return CQ_ENOMEM;
    int r = cq_convert(tmp, t->dtype, src, CQ_F32, n);
    if (!r) r = cq_tensor_set(t, tmp, n * 2);
    free(tmp);
    return r;
}
