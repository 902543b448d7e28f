/* cherryq: GGUF reader and writer. See gguf.h. */
#include "gguf.h"
#include "cq_io.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------ type tables */
static const char *const kv_type_names[CQ_GGUF_TYPE_COUNT] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
    "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64",
};
/* bytes per value; 0 for STRING and ARRAY */
static const uint8_t kv_type_size[CQ_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *cq_gguf_type_name(cq_gguf_type t)
{
    return (unsigned)t < CQ_GGUF_TYPE_COUNT ? kv_type_names[t] : "?";
}

typedef struct {
    const char *name;
    uint32_t blck;    /* elements per block */
    uint32_t size;    /* bytes per block */
} ggml_type_info;

/* ids from ggml.h; gaps are removed types */
static const ggml_type_info ggml_types[] = {
    [0] = {"F32", 1, 4},        [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},     [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},     [9] = {"Q8_1", 32, 36},      [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},  [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},  [15] = {"Q8_K", 256, 292},   [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},  [21] = {"IQ3_S", 256, 110},  [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},        [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},       [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},  [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},  [39] = {"MXFP4", 32, 17},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

static const ggml_type_info *ggml_info(uint32_t t)
{
    return t < N_GGML_TYPES && ggml_types[t].name ? &ggml_types[t] : NULL;
}

const char *cq_ggml_type_name(uint32_t t)
{
    const ggml_type_info *i = ggml_info(t);
    return i ? i->name : NULL;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static char *xstrndup(const void *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ------------------------------------------------------------ reader */
typedef struct {
    char *key;
    cq_gguf_type type;
    const uint8_t *val;      /* scalar: its bytes; STRING: the chars */
    uint64_t slen;           /* STRING length */
    cq_gguf_type etype;      /* ARRAY */
    uint64_t count;          /* ARRAY */
    const uint8_t *adata;    /* ARRAY of fixed-size elements */
    uint64_t *soff;          /* ARRAY of STRING: file offset of each length prefix */
} gkv;

struct cq_gguf {
    char *path;
    cq_mmap map;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_off;
    size_t nkv;
    gkv *kv;
    size_t nt;
    cq_gguf_tensor *t;
    const cq_gguf_tensor **sorted;
};

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t pos;
    const char *path;
} rd;

static int need(rd *r, uint64_t n, const char *what)
{
    if (n > r->size - r->pos) {
        cq_error("%s: truncated or corrupt: %s needs %" PRIu64 " bytes at offset %zu, only %zu left",
                 r->path, what, n, r->pos, r->size - r->pos);
        return CQ_EBADMSG;
    }
    return CQ_OK;
}

static int rd_u32(rd *r, uint32_t *v, const char *what)
{
    int e = need(r, 4, what);
    if (e) return e;
    *v = (uint32_t)le(r->p + r->pos, 4);
    r->pos += 4;
    return CQ_OK;
}

static int rd_u64(rd *r, uint64_t *v, const char *what)
{
    int e = need(r, 8, what);
    if (e) return e;
    *v = le(r->p + r->pos, 8);
    r->pos += 8;
    return CQ_OK;
}

/* string: u64 length + bytes; returns pointer and length */
static int rd_str(rd *r, const uint8_t **s, uint64_t *len, const char *what)
{
    size_t at = r->pos;
    int e = rd_u64(r, len, what);
    if (e) return e;
    if (*len > r->size - r->pos) {
        cq_error("%s: %s: string length %" PRIu64 " at offset %zu exceeds the %zu bytes left",
                 r->path, what, *len, at, r->size - r->pos);
        return CQ_EBADMSG;
    }
    *s = r->p + r->pos;
    r->pos += (size_t)*len;
    return CQ_OK;
}

static int rd_value(rd *r, gkv *kv, cq_gguf_type type)
{
    const char *key = kv->key;
    char what[128];
    snprintf(what, sizeof what, "value of key '%.100s'", key);
    if ((unsigned)type >= CQ_GGUF_TYPE_COUNT) {
        cq_error("%s: key '%s': unknown value type %u at offset %zu", r->path, key, (unsigned)type,
                 r->pos - 4);
        return CQ_EBADMSG;
    }
    if (type == CQ_GGUF_TYPE_STRING) {
        return rd_str(r, &kv->val, &kv->slen, what);
    }
    if (type != CQ_GGUF_TYPE_ARRAY) {
        int e = need(r, kv_type_size[type], what);
        if (e) return e;
        kv->val = r->p + r->pos;
        r->pos += kv_type_size[type];
        return CQ_OK;
    }
    uint32_t et;
    size_t at = r->pos;
    int e = rd_u32(r, &et, what);
    if (!e) e = rd_u64(r, &kv->count, what);
    if (e) return e;
    if (et == CQ_GGUF_TYPE_ARRAY) {
        cq_error("%s: key '%s': nested arrays are not supported (offset %zu)", r->path, key, at);
        return CQ_ENOTSUP;
    }
    if (et >= CQ_GGUF_TYPE_COUNT) {
        cq_error("%s: key '%s': unknown array element type %u at offset %zu", r->path, key, et, at);
        return CQ_EBADMSG;
    }
    kv->etype = (cq_gguf_type)et;
    size_t left = r->size - r->pos;
    if (et != CQ_GGUF_TYPE_STRING) {
        /* count <= left / esize, so count * esize cannot overflow */
        if (kv->count > left / kv_type_size[et]) {
            cq_error("%s: key '%s': array of %" PRIu64 " %s at offset %zu exceeds the %zu bytes left",
                     r->path, key, kv->count, kv_type_names[et], at, left);
            return CQ_EBADMSG;
        }
        kv->adata = r->p + r->pos;
        r->pos += (size_t)kv->count * kv_type_size[et];
        return CQ_OK;
    }
    /* every string takes at least its 8-byte length */
    if (kv->count > left / 8) {
        cq_error("%s: key '%s': array of %" PRIu64 " strings at offset %zu exceeds the %zu bytes left",
                 r->path, key, kv->count, at, left);
        return CQ_EBADMSG;
    }
    kv->soff = malloc((kv->count ? kv->count : 1) * sizeof *kv->soff);
    if (!kv->soff) {
        cq_error("%s: key '%s': out of memory for %" PRIu64 " strings", r->path, key, kv->count);
        return CQ_ENOMEM;
    }
    for (uint64_t i = 0; i < kv->count; i++) {
        const uint8_t *s;
        uint64_t n;
        kv->soff[i] = r->pos;
        e = rd_str(r, &s, &n, what);
        if (e) return e;
    }
    return CQ_OK;
}

static int cmp_gt_offset(const void *a, const void *b)
{
    const cq_gguf_tensor *x = *(const cq_gguf_tensor *const *)a, *y = *(const cq_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_gt(const void *a, const void *b)
{
    return strcmp((*(const cq_gguf_tensor *const *)a)->name,
                  (*(const cq_gguf_tensor *const *)b)->name);
}

void cq_gguf_close(cq_gguf **pg)
{
    if (!pg || !*pg) return;
    cq_gguf *g = *pg;
    for (size_t i = 0; i < g->nkv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].soff);
    }
    free(g->kv);
    for (size_t i = 0; i < g->nt; i++) free((char *)g->t[i].name);
    free(g->t);
    free(g->sorted);
    cq_mmap_close(&g->map);
    free(g->path);
    free(g);
    *pg = NULL;
}

static int gguf_parse_tensor(cq_gguf *g, rd *r, cq_gguf_tensor *t)
{
    const char *path = g->path;
    size_t at = r->pos;
    const uint8_t *s;
    uint64_t n;
    int e = rd_str(r, &s, &n, "tensor name");
    if (e) return e;
    if (n == 0 || memchr(s, 0, (size_t)n)) {
        cq_error("%s: tensor info at offset %zu: empty name or name containing NUL", path, at);
        return CQ_EBADMSG;
    }
    t->name = xstrndup(s, (size_t)n);
    if (!t->name) return CQ_ENOMEM;
    uint32_t nd;
    if ((e = rd_u32(r, &nd, t->name))) return e;
    if (nd > CQ_GGUF_MAX_DIMS) {
        cq_error("%s: tensor '%s' has %u dimensions, at most %d allowed (offset %zu)", path,
                 t->name, nd, CQ_GGUF_MAX_DIMS, r->pos - 4);
        return CQ_EBADMSG;
    }
    t->ndim = (int)nd;
    uint64_t numel = 1;
    int zero = 0, over = 0;
    for (int i = 0; i < CQ_GGUF_MAX_DIMS; i++) t->ne[i] = 1;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t d;
        if ((e = rd_u64(r, &d, t->name))) return e;
        if (d > (uint64_t)INT64_MAX) {
            cq_error("%s: tensor '%s': ne[%u] = %" PRIu64 " is out of range (offset %zu)", path,
                     t->name, i, d, r->pos - 8);
            return CQ_EBADMSG;
        }
        t->ne[i] = (int64_t)d;
        if (d == 0) zero = 1;
        else if (numel > (uint64_t)INT64_MAX / d) over = 1;
        else numel *= d;
    }
    if (zero) numel = 0;
    else if (over) {
        cq_error("%s: tensor '%s': element count overflows", path, t->name);
        return CQ_EBADMSG;
    }
    t->numel = numel;
    for (int i = 0; i < t->ndim; i++) t->shape[i] = t->ne[t->ndim - 1 - i];
    for (int i = t->ndim; i < CQ_GGUF_MAX_DIMS; i++) t->shape[i] = 1;
    if ((e = rd_u32(r, &t->ggml_type, t->name))) return e;
    const ggml_type_info *ti = ggml_info(t->ggml_type);
    if (!ti) {
        cq_error("%s: tensor '%s' has unknown ggml type %u (offset %zu)", path, t->name,
                 t->ggml_type, r->pos - 4);
        return CQ_EBADMSG;
    }
    if (t->ne[0] % ti->blck != 0) {
        cq_error("%s: tensor '%s': ne[0] = %" PRId64 " is not a multiple of the %s block size %u",
                 path, t->name, t->ne[0], ti->name, ti->blck);
        return CQ_EBADMSG;
    }
    /* numel <= INT64_MAX and size/blck <= 292 : fits in 128 bits; check in 64 */
    uint64_t blocks = numel / ti->blck;
    if (blocks > (uint64_t)SIZE_MAX / ti->size || blocks > UINT64_MAX / ti->size) {
        cq_error("%s: tensor '%s': byte size overflows", path, t->name);
        return CQ_EBADMSG;
    }
    t->nbytes = (size_t)(blocks * ti->size);
    return rd_u64(r, &t->offset, t->name);
}

static int gguf_parse(cq_gguf *g)
{
    const char *path = g->path;
    rd r = {g->map.data, g->map.size, 0, path};
    uint32_t magic;
    int e;
    if (g->map.size < 4 || memcmp(g->map.data, "GGUF", 4) != 0) {
        cq_error("%s: not a GGUF file (bad magic)", path);
        return CQ_EBADMSG;
    }
    if ((e = rd_u32(&r, &magic, "magic"))) return e;
    if ((e = rd_u32(&r, &g->version, "version"))) return e;
    if (g->version != 2 && g->version != 3) {
        if (g->version != 0 && (g->version & 0xffff) == 0)
            cq_error("%s: big-endian GGUF is not supported", path);
        else if (g->version == 1)
            cq_error("%s: GGUF version 1 is not supported (only 2 and 3)", path);
        else
            cq_error("%s: unknown GGUF version %u (only 2 and 3 are supported)", path, g->version);
        return g->version == 0 ? CQ_EBADMSG : CQ_ENOTSUP;
    }
    uint64_t nt, nkv;
    if ((e = rd_u64(&r, &nt, "tensor count"))) return e;
    if ((e = rd_u64(&r, &nkv, "kv count"))) return e;
    /* minimal sizes: kv = 8 (key len) + 4 (type) + 1; tensor info = 8 + 4 + 4 + 8 */
    size_t left = r.size - r.pos;
    if (nkv > left / 13) {
        cq_error("%s: kv count %" PRIu64 " is impossible for the %zu bytes left", path, nkv, left);
        return CQ_EBADMSG;
    }
    if (nt > left / 24) {
        cq_error("%s: tensor count %" PRIu64 " is impossible for the %zu bytes left", path, nt, left);
        return CQ_EBADMSG;
    }
    g->kv = calloc(nkv ? (size_t)nkv : 1, sizeof *g->kv);
    g->t = calloc(nt ? (size_t)nt : 1, sizeof *g->t);
    if (!g->kv || !g->t) return CQ_ENOMEM;

    g->alignment = CQ_GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t k = 0; k < nkv; k++) {
        gkv *kv = &g->kv[g->nkv];
        size_t at = r.pos;
        const uint8_t *s;
        uint64_t n;
        if ((e = rd_str(&r, &s, &n, "key"))) return e;
        if (n == 0 || memchr(s, 0, (size_t)n)) {
            cq_error("%s: key at offset %zu is empty or contains NUL", path, at);
            return CQ_EBADMSG;
        }
        kv->key = xstrndup(s, (size_t)n);
        if (!kv->key) return CQ_ENOMEM;
        g->nkv++;
        uint32_t type;
        if ((e = rd_u32(&r, &type, kv->key))) return e;
        kv->type = (cq_gguf_type)type;
        if ((e = rd_value(&r, kv, kv->type))) return e;
        if (!strcmp(kv->key, "general.alignment")) {
            uint32_t a = kv->type == CQ_GGUF_TYPE_UINT32 ? (uint32_t)le(kv->val, 4) : 0;
            if (kv->type != CQ_GGUF_TYPE_UINT32 || a == 0 || (a & (a - 1))) {
                cq_error("%s: general.alignment must be a UINT32 power of two", path);
                return CQ_EBADMSG;
            }
            g->alignment = a;
        }
    }
    /* duplicate keys: sorted neighbours (a pairwise scan is quadratic: 80k
     * keys took 16 s) */
    {
        const char **ks = malloc((g->nkv ? g->nkv : 1) * sizeof *ks);
        if (!ks) return CQ_ENOMEM;
        for (size_t i = 0; i < g->nkv; i++) ks[i] = g->kv[i].key;
        const char *dup = cq_sort_find_dup(ks, g->nkv);
        if (dup) cq_error("%s: duplicate key '%s'", path, dup);
        free(ks);
        if (dup) return CQ_EBADMSG;
    }
    for (uint64_t i = 0; i < nt; i++) {
        cq_gguf_tensor *t = &g->t[g->nt];
        e = gguf_parse_tensor(g, &r, t);
        if (t->name) g->nt++;
        if (e) return e;
    }
    uint64_t a = g->alignment;
    g->data_off = (r.pos + a - 1) / a * a;
    for (size_t i = 0; i < g->nt; i++) {
        cq_gguf_tensor *t = &g->t[i];
        if (t->offset % a) {
            cq_error("%s: tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %u",
                     path, t->name, t->offset, g->alignment);
            return CQ_EBADMSG;
        }
        uint64_t size = g->map.size;
        if (g->data_off > size || t->offset > size - g->data_off ||
            t->nbytes > size - g->data_off - t->offset) {
            cq_error("%s: tensor '%s': data [%" PRIu64 ", +%zu) at file offset %" PRIu64
                     " lies beyond the end of the file (%" PRIu64 " bytes; truncated?)",
                     path, t->name, t->offset, t->nbytes, g->data_off + t->offset, size);
            return CQ_EBADMSG;
        }
        t->data = t->nbytes ? g->map.data + g->data_off + t->offset : NULL;
    }
    g->sorted = malloc((g->nt ? g->nt : 1) * sizeof *g->sorted);
    if (!g->sorted) return CQ_ENOMEM;
    /* no two tensors share bytes (one aliasing another's data) */
    for (size_t i = 0; i < g->nt; i++) g->sorted[i] = &g->t[i];
    qsort(g->sorted, g->nt, sizeof *g->sorted, cmp_gt_offset);
    const cq_gguf_tensor *prev = NULL;
    for (size_t i = 0; i < g->nt; i++) {
        const cq_gguf_tensor *t = g->sorted[i];
        if (!t->nbytes) continue;
        if (prev && t->offset < prev->offset + prev->nbytes) {
            cq_error("%s: tensors '%s' and '%s' overlap in the data section (offsets %" PRIu64 " +%zu and %" PRIu64
                     " +%zu)",
                     path, prev->name, t->name, prev->offset, prev->nbytes, t->offset, t->nbytes);
            return CQ_EBADMSG;
        }
        prev = t;
    }
    qsort(g->sorted, g->nt, sizeof *g->sorted, cmp_gt);
    for (size_t i = 1; i < g->nt; i++) {
        if (!strcmp(g->sorted[i - 1]->name, g->sorted[i]->name)) {
            cq_error("%s: duplicate tensor name '%s'", path, g->sorted[i]->name);
            return CQ_EBADMSG;
        }
    }
    return CQ_OK;
}

int cq_gguf_open(cq_gguf **out, const char *path)
{
    CQ_CHECK_ARG(out && path, CQ_EINVAL);
    *out = NULL;
    cq_gguf *g = calloc(1, sizeof *g);
    if (!g) return CQ_ENOMEM;
    g->map.fd = -1;
    g->path = xstrndup(path, strlen(path));
    if (!g->path) {
        free(g);
        return CQ_ENOMEM;
    }
    int r = cq_mmap_open(&g->map, path);
    if (!r) r = gguf_parse(g);
    if (r) {
        if (r == CQ_ENOMEM) cq_error("%s: out of memory while parsing", path);
        cq_gguf_close(&g);
        return r;
    }
    *out = g;
    return CQ_OK;
}

const char *cq_gguf_path(const cq_gguf *g) { return g ? g->path : NULL; }
uint32_t cq_gguf_version(const cq_gguf *g) { return g ? g->version : 0; }
uint32_t cq_gguf_alignment(const cq_gguf *g) { return g ? g->alignment : 0; }
uint64_t cq_gguf_data_offset(const cq_gguf *g) { return g ? g->data_off : 0; }

/* ------------------------------------------------------------ metadata */
size_t cq_gguf_kv_count(const cq_gguf *g) { return g ? g->nkv : 0; }

const char *cq_gguf_kv_key(const cq_gguf *g, size_t i)
{
    return g && i < g->nkv ? g->kv[i].key : NULL;
}

cq_gguf_type cq_gguf_kv_type(const cq_gguf *g, size_t i)
{
    return g && i < g->nkv ? g->kv[i].type : CQ_GGUF_TYPE_COUNT;
}

int cq_gguf_find_key(const cq_gguf *g, const char *key)
{
    if (!g || !key) return -1;
    for (size_t i = 0; i < g->nkv; i++)
        if (!strcmp(g->kv[i].key, key)) return (int)i;
    return -1;
}

static const gkv *get_kv(const cq_gguf *g, const char *key)
{
    int i = cq_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

/* integer value of an element as sign + magnitude; 0 if not an integer type */
static int int_val(cq_gguf_type t, const uint8_t *p, int *neg, uint64_t *mag)
{
    int64_t s;
    *neg = 0;
    switch (t) {
    case CQ_GGUF_TYPE_UINT8: *mag = p[0]; return 1;
    case CQ_GGUF_TYPE_UINT16: *mag = le(p, 2); return 1;
    case CQ_GGUF_TYPE_UINT32: *mag = le(p, 4); return 1;
    case CQ_GGUF_TYPE_UINT64: *mag = le(p, 8); return 1;
    case CQ_GGUF_TYPE_INT8: s = (int8_t)p[0]; break;
    case CQ_GGUF_TYPE_INT16: s = (int16_t)(uint16_t)le(p, 2); break;
    case CQ_GGUF_TYPE_INT32: s = (int32_t)(uint32_t)le(p, 4); break;
    case CQ_GGUF_TYPE_INT64: s = (int64_t)le(p, 8); break;
    default: return 0;
    }
    *neg = s < 0;
    *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return 1;
}

static int float_val(cq_gguf_type t, const uint8_t *p, double *out)
{
    if (t == CQ_GGUF_TYPE_FLOAT32) {
        uint32_t u = (uint32_t)le(p, 4);
        float f;
        memcpy(&f, &u, 4);
        *out = f;
        return 1;
    }
    if (t == CQ_GGUF_TYPE_FLOAT64) {
        uint64_t u = le(p, 8);
        memcpy(out, &u, 8);
        return 1;
    }
    return 0;
}

static int type_err(const cq_gguf *g, const char *key, cq_gguf_type t, const char *want)
{
    cq_error("%s: key '%s' has type %s, cannot be read as %s", g->path, key,
             cq_gguf_type_name(t), want);
    return CQ_EINVAL;
}

/* Range-checked integer conversion: lo is -(neg bound), hi the positive bound. */
static int to_int(const cq_gguf *g, const char *key, cq_gguf_type t, const uint8_t *p,
                  uint64_t neg_max, uint64_t pos_max, const char *want, int64_t *s, uint64_t *u)
{
    int neg;
    uint64_t mag;
    if (!int_val(t, p, &neg, &mag)) return type_err(g, key, t, want);
    if (neg ? mag > neg_max : mag > pos_max) {
        cq_error("%s: key '%s': value %s%" PRIu64 " does not fit %s", g->path, key, neg ? "-" : "",
                 mag, want);
        return CQ_EINVAL;
    }
    if (u) *u = mag;
    if (s) *s = neg ? (int64_t)(0 - (mag - 1)) - 1 : (int64_t)mag;
    return CQ_OK;
}

#define I32_NEG ((uint64_t)INT32_MAX + 1)
#define I64_NEG ((uint64_t)INT64_MAX + 1)

int cq_gguf_get_u32(const cq_gguf *g, const char *key, uint32_t *out)
{
    CQ_CHECK_ARG(g && key && out, CQ_EINVAL);
    const gkv *kv = get_kv(g, key);
    if (!kv) return CQ_ENOENT;
    uint64_t u;
    int e = to_int(g, key, kv->type, kv->val, 0, UINT32_MAX, "u32", NULL, &u);
    if (!e) *out = (uint32_t)u;
    return e;
}

int cq_gguf_get_i32(const cq_gguf *g, const char *key, int32_t *out)
{
    CQ_CHECK_ARG(g && key && out, CQ_EINVAL);
    const gkv *kv = get_kv(g, key);
    if (!kv) return CQ_ENOENT;
    int64_t s;
    int e = to_int(g, key, kv->type, kv->val, I32_NEG, INT32_MAX, "i32", &s, NULL);
    if (!e) *out = (int32_t)s;
    return e;
}

int cq_gguf_get_u64(const cq_gguf *g, const char *key, uint64_t *out)
{
    CQ_CHECK_ARG(g && key && out, CQ_EINVAL);
    const gkv *kv = get_kv(g, key);
    if (!kv) return CQ_ENOENT;
    return to_int(g, key, kv->type, kv->val, 0, UINT64_MAX, "u64", NULL, out);
}

int cq_gguf_get_i64(const cq_gguf *g, const char *key, int64_t *out)
{
    CQ_CHECK_ARG(g && key && out, CQ_EINVAL);
    const gkv *kv = get_kv(g, key);
    if (!kv) return CQ_ENOENT;
    return to_int(g, key, kv->type, kv->val, I64_NEG, INT64_MAX, "i64", out, NULL);
}

int cq_gguf_get_f64(const cq_gguf *g, const char *key, double *out)
{
    CQ_CHECK_ARG(g && key && out, CQ_EINVAL);
    const gkv *kv = get_kv(g, key);
    if (!kv) return CQ_ENOENT;
    if (kv->type == CQ_GGUF_TYPE_ARRAY || !float_val(kv->type, kv->val, out))
        return type_err(g, key, kv->type, "float");
    return CQ_OK;
}

int cq_gguf_get_f32(const cq_gguf *g, const char *key, float *out)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    double d;
    int e = cq_gguf_get_f64(g, key, &d);
    if (!e) *out = (float)d;
    return e;
}

int cq_gguf_get_bool(const cq_gguf *g, const char *key, int *out)
{
    CQ_CHECK_ARG(g && key && out, CQ_EINVAL);
    const gkv *kv = get_kv(g, key);
    if (!kv) return CQ_ENOENT;
    if (kv->type != CQ_GGUF_TYPE_BOOL) return type_err(g, key, kv->type, "bool");
    *out = kv->val[0] != 0;
    return CQ_OK;
}

int cq_gguf_get_str(const cq_gguf *g, const char *key, const char **s, size_t *len)
{
    CQ_CHECK_ARG(g && key && s && len, CQ_EINVAL);
    const gkv *kv = get_kv(g, key);
    if (!kv) return CQ_ENOENT;
    if (kv->type != CQ_GGUF_TYPE_STRING) return type_err(g, key, kv->type, "string");
    *s = (const char *)kv->val;
    *len = (size_t)kv->slen;
    return CQ_OK;
}

int cq_gguf_get_arr(const cq_gguf *g, const char *key, cq_gguf_type *elem_type, uint64_t *count)
{
    CQ_CHECK_ARG(g && key, CQ_EINVAL);
    const gkv *kv = get_kv(g, key);
    if (!kv) return CQ_ENOENT;
    if (kv->type != CQ_GGUF_TYPE_ARRAY) return type_err(g, key, kv->type, "array");
    if (elem_type) *elem_type = kv->etype;
    if (count) *count = kv->count;
    return CQ_OK;
}

static int arr_elem(const cq_gguf *g, const char *key, uint64_t i, const gkv **out)
{
    const gkv *kv = get_kv(g, key);
    if (!kv) return CQ_ENOENT;
    if (kv->type != CQ_GGUF_TYPE_ARRAY) return type_err(g, key, kv->type, "array");
    if (i >= kv->count) {
        cq_error("%s: key '%s': index %" PRIu64 " out of range (array of %" PRIu64 ")", g->path,
                 key, i, kv->count);
        return CQ_EINVAL;
    }
    *out = kv;
    return CQ_OK;
}

int cq_gguf_get_arr_str(const cq_gguf *g, const char *key, uint64_t i, const char **s, size_t *len)
{
    CQ_CHECK_ARG(g && key && s && len, CQ_EINVAL);
    const gkv *kv;
    int e = arr_elem(g, key, i, &kv);
    if (e) return e;
    if (kv->etype != CQ_GGUF_TYPE_STRING) {
        cq_error("%s: key '%s' is an array of %s, not of strings", g->path, key,
                 cq_gguf_type_name(kv->etype));
        return CQ_EINVAL;
    }
    const uint8_t *p = g->map.data + kv->soff[i];
    *len = (size_t)le(p, 8);
    *s = (const char *)p + 8;
    return CQ_OK;
}

int cq_gguf_get_arr_f32(const cq_gguf *g, const char *key, uint64_t i, float *out)
{
    CQ_CHECK_ARG(g && key && out, CQ_EINVAL);
    const gkv *kv;
    int e = arr_elem(g, key, i, &kv);
    if (e) return e;
    double d;
    if (kv->etype == CQ_GGUF_TYPE_STRING ||
        !float_val(kv->etype, kv->adata + i * kv_type_size[kv->etype], &d)) {
        cq_error("%s: key '%s' is an array of %s, not of floats", g->path, key,
                 cq_gguf_type_name(kv->etype));
        return CQ_EINVAL;
    }
    *out = (float)d;
    return CQ_OK;
}

int cq_gguf_get_arr_i32(const cq_gguf *g, const char *key, uint64_t i, int32_t *out)
{
    CQ_CHECK_ARG(g && key && out, CQ_EINVAL);
    const gkv *kv;
    int e = arr_elem(g, key, i, &kv);
    if (e) return e;
    if (kv->etype == CQ_GGUF_TYPE_STRING) return type_err(g, key, kv->etype, "i32");
    int64_t s;
    e = to_int(g, key, kv->etype, kv->adata + i * kv_type_size[kv->etype], I32_NEG, INT32_MAX,
               "i32", &s, NULL);
    if (!e) *out = (int32_t)s;
    return e;
}

/* The array at key has at least n elements (logs and fails otherwise). */
static int arr_has(const cq_gguf *g, const char *key, uint64_t n)
{
    uint64_t cnt;
    int e = cq_gguf_get_arr(g, key, NULL, &cnt);
    if (e) return e;
    if (n > cnt) {
        cq_error("%s: key '%s': asked for %" PRIu64 " elements of an array of %" PRIu64, g->path,
                 key, n, cnt);
        return CQ_EINVAL;
    }
    return CQ_OK;
}

int cq_gguf_copy_arr_f32(const cq_gguf *g, const char *key, float *dst, uint64_t n)
{
    CQ_CHECK_ARG(g && key && (dst || !n), CQ_EINVAL);
    int e = arr_has(g, key, n);
    if (e) return e;
    for (uint64_t i = 0; i < n; i++)
        if ((e = cq_gguf_get_arr_f32(g, key, i, &dst[i]))) return e;
    return CQ_OK;
}

int cq_gguf_copy_arr_i32(const cq_gguf *g, const char *key, int32_t *dst, uint64_t n)
{
    CQ_CHECK_ARG(g && key && (dst || !n), CQ_EINVAL);
    int e = arr_has(g, key, n);
    if (e) return e;
    for (uint64_t i = 0; i < n; i++)
        if ((e = cq_gguf_get_arr_i32(g, key, i, &dst[i]))) return e;
    return CQ_OK;
}

/* ------------------------------------------------------------ tensors */
size_t cq_gguf_tensor_count(const cq_gguf *g) { return g ? g->nt : 0; }

const cq_gguf_tensor *cq_gguf_tensor_at(const cq_gguf *g, size_t i)
{
    return g && i < g->nt ? &g->t[i] : NULL;
}

const cq_gguf_tensor *cq_gguf_find_tensor(const cq_gguf *g, const char *name)
{
    if (!g || !name) return NULL;
    size_t lo = 0, hi = g->nt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->sorted[mid]->name, name);
        if (c == 0) return g->sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

int cq_gguf_get_tensor(const cq_gguf *g, const char *name, const cq_gguf_tensor **out,
                       cq_dtype *dtype)
{
    CQ_CHECK_ARG(g && name && out, CQ_EINVAL);
    *out = NULL;
    const cq_gguf_tensor *t = cq_gguf_find_tensor(g, name);
    if (!t) {
        cq_error("%s: tensor '%s' not found", g->path, name);
        return CQ_ENOENT;
    }
    cq_dtype dt;
    switch (t->ggml_type) {
    case CQ_GGML_F32: dt = CQ_F32; break;
    case CQ_GGML_F16: dt = CQ_F16; break;
    case CQ_GGML_BF16: dt = CQ_BF16; break;
    default:
        cq_error("%s: tensor %s has ggml type %s (%u), only F32/F16/BF16 are supported", g->path,
                 name, cq_ggml_type_name(t->ggml_type), t->ggml_type);
        return CQ_ENOTSUP;
    }
    if (dtype) *dtype = dt;
    *out = t;
    return CQ_OK;
}

/* ------------------------------------------------------------ Q/K permutation */
static int perm_check(const void *dst, const void *src, size_t es, int64_t n_head, int64_t rows,
                      int64_t cols, size_t *row_bytes)
{
    if (!dst || !src || es == 0 || n_head <= 0 || rows <= 0 || cols < 0 || rows % n_head ||
        (rows / n_head) % 2) {
        cq_error("gguf q/k permutation: bad sizes (n_head %" PRId64 ", rows %" PRId64
                 ", cols %" PRId64 "): rows must be n_head * an even head_dim",
                 n_head, rows, cols);
        return CQ_EINVAL;
    }
    size_t rb, total;
    if (!cq_mul_ok(es, (size_t)cols, &rb) || !cq_mul_ok(rb, (size_t)rows, &total)) {
        cq_error("gguf q/k permutation: size overflows");
        return CQ_EINVAL;
    }
    const uint8_t *d = dst, *s = src;
    if (total && d < s + total && s < d + total) {
        cq_error("gguf q/k permutation: dst and src overlap");
        return CQ_EINVAL;
    }
    *row_bytes = rb;
    return CQ_OK;
}

static int permute_rows(void *dst, const void *src, size_t es, int64_t n_head, int64_t rows,
                        int64_t cols, int inverse)
{
    size_t rb;
    int e = perm_check(dst, src, es, n_head, rows, cols, &rb);
    if (e) return e;
    int64_t hd = rows / n_head, half = hd / 2;
    uint8_t *d = dst;
    const uint8_t *s = src;
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++) {
                size_t perm = (size_t)(h * hd + 2 * i + j);   /* GGUF row */
                size_t orig = (size_t)(h * hd + j * half + i); /* HF row */
                if (inverse) memcpy(d + orig * rb, s + perm * rb, rb);
                else memcpy(d + perm * rb, s + orig * rb, rb);
            }
    return CQ_OK;
}

int cq_gguf_unpermute_qk_bytes(void *dst, const void *src, size_t es, int64_t n_head,
                               int64_t rows, int64_t cols)
{
    return permute_rows(dst, src, es, n_head, rows, cols, 1);
}

int cq_gguf_permute_qk_bytes(void *dst, const void *src, size_t es, int64_t n_head, int64_t rows,
                             int64_t cols)
{
    return permute_rows(dst, src, es, n_head, rows, cols, 0);
}

int cq_gguf_unpermute_qk(float *dst, const float *src, int64_t n_head, int64_t rows, int64_t cols)
{
    return permute_rows(dst, src, sizeof(float), n_head, rows, cols, 1);
}

int cq_gguf_permute_qk(float *dst, const float *src, int64_t n_head, int64_t rows, int64_t cols)
{
    return permute_rows(dst, src, sizeof(float), n_head, rows, cols, 0);
}

/* ------------------------------------------------------------ writer */
typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} bbuf;

static void bb_put(bbuf *b, const void *src, size_t n)
{
    if (b->oom || n == 0) return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n) nc *= 2;
        uint8_t *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void bb_le(bbuf *b, uint64_t v, int n)
{
    uint8_t t[8];
    for (int i = 0; i < n; i++) t[i] = (uint8_t)(v >> (8 * i));
    bb_put(b, t, (size_t)n);
}

static void bb_str(bbuf *b, const char *s)
{
    size_t n = strlen(s);
    bb_le(b, n, 8);
    bb_put(b, s, n);
}

typedef struct {
    char *name;
    uint32_t type;
    int ndim;
    int64_t ne[CQ_GGUF_MAX_DIMS];
    const void *data;
    size_t nbytes;
} gw_tensor;

struct cq_gguf_writer {
    uint32_t alignment;
    bbuf kv;
    uint64_t nkv;
    char **keys;
    size_t nkeys_cap;
    gw_tensor *t;
    size_t nt, tcap;
};

int cq_gguf_writer_create(cq_gguf_writer **out, uint32_t alignment)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    *out = NULL;
    if (alignment == 0) alignment = CQ_GGUF_DEFAULT_ALIGNMENT;
    CQ_CHECK_ARG((alignment & (alignment - 1)) == 0, CQ_EINVAL);
    cq_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return CQ_ENOMEM;
    w->alignment = alignment;
    if (alignment != CQ_GGUF_DEFAULT_ALIGNMENT) {
        int e = cq_gguf_writer_add_u32(w, "general.alignment", alignment);
        if (e) {
            cq_gguf_writer_destroy(&w);
            return e;
        }
    }
    *out = w;
    return CQ_OK;
}

void cq_gguf_writer_destroy(cq_gguf_writer **pw)
{
    if (!pw || !*pw) return;
    cq_gguf_writer *w = *pw;
    free(w->kv.p);
    for (uint64_t i = 0; i < w->nkv; i++) free(w->keys[i]);
    free(w->keys);
    for (size_t i = 0; i < w->nt; i++) free(w->t[i].name);
    free(w->t);
    free(w);
    *pw = NULL;
}

/* registers the key (unique), writes key + type; returns 0 or error */
static int gw_key(cq_gguf_writer *w, const char *key, uint32_t type)
{
    if (!*key) {
        cq_error("gguf writer: empty key");
        return CQ_EINVAL;
    }
    for (uint64_t i = 0; i < w->nkv; i++) {
        if (!strcmp(w->keys[i], key)) {
            cq_error("gguf writer: key '%s' added twice", key);
            return CQ_EINVAL;
        }
    }
    if (w->nkv == w->nkeys_cap) {
        size_t nc = w->nkeys_cap ? 2 * w->nkeys_cap : 16;
        char **k = realloc(w->keys, nc * sizeof *k);
        if (!k) return CQ_ENOMEM;
        w->keys = k;
        w->nkeys_cap = nc;
    }
    w->keys[w->nkv] = xstrndup(key, strlen(key));
    if (!w->keys[w->nkv]) return CQ_ENOMEM;
    w->nkv++;
    bb_str(&w->kv, key);
    bb_le(&w->kv, type, 4);
    return CQ_OK;
}

static void gw_scalar(bbuf *b, cq_gguf_type t, const void *v)
{
    switch (t) {
    case CQ_GGUF_TYPE_UINT8: bb_le(b, *(const uint8_t *)v, 1); break;
    case CQ_GGUF_TYPE_INT8: bb_le(b, (uint8_t) * (const int8_t *)v, 1); break;
    case CQ_GGUF_TYPE_BOOL: bb_le(b, *(const int8_t *)v ? 1 : 0, 1); break;
    case CQ_GGUF_TYPE_UINT16: bb_le(b, *(const uint16_t *)v, 2); break;
    case CQ_GGUF_TYPE_INT16: bb_le(b, (uint16_t) * (const int16_t *)v, 2); break;
    case CQ_GGUF_TYPE_UINT32: bb_le(b, *(const uint32_t *)v, 4); break;
    case CQ_GGUF_TYPE_INT32: bb_le(b, (uint32_t) * (const int32_t *)v, 4); break;
    case CQ_GGUF_TYPE_UINT64: bb_le(b, *(const uint64_t *)v, 8); break;
    case CQ_GGUF_TYPE_INT64: bb_le(b, (uint64_t) * (const int64_t *)v, 8); break;
    case CQ_GGUF_TYPE_FLOAT32: {
        uint32_t u;
        memcpy(&u, v, 4);
        bb_le(b, u, 4);
        break;
    }
    case CQ_GGUF_TYPE_FLOAT64: {
        uint64_t u;
        memcpy(&u, v, 8);
        bb_le(b, u, 8);
        break;
    }
    case CQ_GGUF_TYPE_STRING: bb_str(b, *(const char *const *)v); break;
    default: break;
    }
}

static size_t host_size(cq_gguf_type t)
{
    return t == CQ_GGUF_TYPE_STRING ? sizeof(const char *) : kv_type_size[t];
}

int cq_gguf_writer_add_kv(cq_gguf_writer *w, const char *key, cq_gguf_type type, const void *val)
{
    CQ_CHECK_ARG(w && key && val, CQ_EINVAL);
    CQ_CHECK_ARG((unsigned)type < CQ_GGUF_TYPE_COUNT && type != CQ_GGUF_TYPE_ARRAY, CQ_EINVAL);
    if (type == CQ_GGUF_TYPE_STRING) CQ_CHECK_ARG(*(const char *const *)val, CQ_EINVAL);
    int e = gw_key(w, key, type);
    if (e) return e;
    gw_scalar(&w->kv, type, val);
    return w->kv.oom ? CQ_ENOMEM : CQ_OK;
}

int cq_gguf_writer_add_u32(cq_gguf_writer *w, const char *key, uint32_t v)
{
    return cq_gguf_writer_add_kv(w, key, CQ_GGUF_TYPE_UINT32, &v);
}

int cq_gguf_writer_add_i32(cq_gguf_writer *w, const char *key, int32_t v)
{
    return cq_gguf_writer_add_kv(w, key, CQ_GGUF_TYPE_INT32, &v);
}

int cq_gguf_writer_add_f32(cq_gguf_writer *w, const char *key, float v)
{
    return cq_gguf_writer_add_kv(w, key, CQ_GGUF_TYPE_FLOAT32, &v);
}

int cq_gguf_writer_add_str(cq_gguf_writer *w, const char *key, const char *v)
{
    return cq_gguf_writer_add_kv(w, key, CQ_GGUF_TYPE_STRING, &v);
}

int cq_gguf_writer_add_arr(cq_gguf_writer *w, const char *key, cq_gguf_type et, const void *elems,
                           uint64_t n)
{
    CQ_CHECK_ARG(w && key && (elems || n == 0), CQ_EINVAL);
    CQ_CHECK_ARG((unsigned)et < CQ_GGUF_TYPE_COUNT && et != CQ_GGUF_TYPE_ARRAY, CQ_EINVAL);
    size_t hs = host_size(et);
    if (et == CQ_GGUF_TYPE_STRING)
        for (uint64_t i = 0; i < n; i++) CQ_CHECK_ARG(((const char *const *)elems)[i], CQ_EINVAL);
    int e = gw_key(w, key, CQ_GGUF_TYPE_ARRAY);
    if (e) return e;
    bb_le(&w->kv, et, 4);
    bb_le(&w->kv, n, 8);
    for (uint64_t i = 0; i < n; i++) gw_scalar(&w->kv, et, (const uint8_t *)elems + i * hs);
    return w->kv.oom ? CQ_ENOMEM : CQ_OK;
}

int cq_gguf_writer_add_tensor(cq_gguf_writer *w, const char *name, uint32_t ggml_type, int ndim,
                              const int64_t *shape, const void *data)
{
    CQ_CHECK_ARG(w && name && *name && shape, CQ_EINVAL);
    CQ_CHECK_ARG(ndim >= 1 && ndim <= CQ_GGUF_MAX_DIMS, CQ_EINVAL);
    size_t es;
    switch (ggml_type) {
    case CQ_GGML_F32: es = 4; break;
    case CQ_GGML_F16:
    case CQ_GGML_BF16: es = 2; break;
    default:
        cq_error("gguf writer: tensor '%s': ggml type %u not supported (F32, F16, BF16 only)", name,
                 ggml_type);
        return CQ_ENOTSUP;
    }
    for (size_t i = 0; i < w->nt; i++) {
        if (!strcmp(w->t[i].name, name)) {
            cq_error("gguf writer: tensor '%s' added twice", name);
            return CQ_EINVAL;
        }
    }
    size_t nb = es;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || !cq_mul_ok(nb, (size_t)shape[i], &nb)) {
            cq_error("gguf writer: tensor '%s': bad shape[%d] = %" PRId64, name, i, shape[i]);
            return CQ_EINVAL;
        }
    }
    CQ_CHECK_ARG(data || nb == 0, CQ_EINVAL);
    if (w->nt == w->tcap) {
        size_t nc = w->tcap ? 2 * w->tcap : 16;
        gw_tensor *t = realloc(w->t, nc * sizeof *t);
        if (!t) return CQ_ENOMEM;
        w->t = t;
        w->tcap = nc;
    }
    gw_tensor *t = &w->t[w->nt];
    memset(t, 0, sizeof *t);
    t->name = xstrndup(name, strlen(name));
    if (!t->name) return CQ_ENOMEM;
    t->type = ggml_type;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->ne[i] = shape[ndim - 1 - i];
    t->data = data;
    t->nbytes = nb;
    w->nt++;
    return CQ_OK;
}

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

int cq_gguf_writer_write(cq_gguf_writer *w, const char *path)
{
    CQ_CHECK_ARG(w && path, CQ_EINVAL);
    if (w->kv.oom) return CQ_ENOMEM;
    bbuf h = {0};
    bb_put(&h, "GGUF", 4);
    bb_le(&h, 3, 4);
    bb_le(&h, w->nt, 8);
    bb_le(&h, w->nkv, 8);
    bb_put(&h, w->kv.p, w->kv.n);
    size_t off = 0;
    for (size_t i = 0; i < w->nt; i++) {
        const gw_tensor *t = &w->t[i];
        bb_str(&h, t->name);
        bb_le(&h, (uint64_t)t->ndim, 4);
        for (int d = 0; d < t->ndim; d++) bb_le(&h, (uint64_t)t->ne[d], 8);
        bb_le(&h, t->type, 4);
        bb_le(&h, off, 8);
        off = align_up(off + t->nbytes, w->alignment);
    }
    static const uint8_t zeros[64];
    size_t a = w->alignment;
    while (h.n % a) bb_put(&h, zeros, (a - h.n % a) < sizeof zeros ? a - h.n % a : sizeof zeros);
    if (h.oom) {
        free(h.p);
        cq_error("%s: out of memory building the GGUF header", path);
        return CQ_ENOMEM;
    }
    cq_afile af;
    int e = cq_afile_open(&af, path);
    if (e) {
        free(h.p);
        return e;
    }
    e = cq_afile_write(&af, h.p, h.n);
    free(h.p);
    for (size_t i = 0; !e && i < w->nt; i++) {
        const gw_tensor *t = &w->t[i];
        if (t->nbytes) e = cq_afile_write(&af, t->data, t->nbytes);
        size_t pad = align_up(t->nbytes, a) - t->nbytes;
        while (!e && pad) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            e = cq_afile_write(&af, zeros, k);
            pad -= k;
        }
    }
    if (e) {
        cq_afile_abort(&af);
        return e;
    }
    return cq_afile_commit(&af);
}
