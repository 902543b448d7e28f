/* cherryq: safetensors reader, sharded sets and writer. See safetensors.h. */
#include "safetensors.h"
#include "cq_io.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ------------------------------------------------------------ dtypes */
typedef struct {
    const char *name;
    size_t size;
    cq_dtype dt;
} st_dtype_info;

static const st_dtype_info st_dtypes[] = {
    {"F32", 4, CQ_F32},          {"F16", 2, CQ_F16},
    {"BF16", 2, CQ_BF16},        {"I32", 4, CQ_I32},
    {"I16", 2, CQ_I16},          {"U16", 2, CQ_U16},
    {"U8", 1, CQ_U8},            {"I8", 1, CQ_DTYPE_COUNT},
    {"BOOL", 1, CQ_DTYPE_COUNT}, {"F8_E4M3", 1, CQ_DTYPE_COUNT},
    {"F8_E5M2", 1, CQ_DTYPE_COUNT}, {"U32", 4, CQ_DTYPE_COUNT},
    {"F64", 8, CQ_DTYPE_COUNT},  {"I64", 8, CQ_DTYPE_COUNT},
    {"U64", 8, CQ_DTYPE_COUNT},
};
#define N_ST_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

static const st_dtype_info *st_dtype_lookup(const char *s)
{
    for (size_t i = 0; i < N_ST_DTYPES; i++)
        if (!strcmp(st_dtypes[i].name, s)) return &st_dtypes[i];
    return NULL;
}

cq_dtype cq_st_dtype_from_name(const char *s)
{
    const st_dtype_info *d = s ? st_dtype_lookup(s) : NULL;
    return d ? d->dt : CQ_DTYPE_COUNT;
}

const char *cq_st_dtype_to_name(cq_dtype t)
{
    for (size_t i = 0; i < N_ST_DTYPES; i++)
        if (st_dtypes[i].dt == t && t != CQ_DTYPE_COUNT) return st_dtypes[i].name;
    return NULL;
}

/* ------------------------------------------------------------ helpers */
static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* A JSON number that must be a non-negative integer representable exactly. */
static int json_u64(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

static int cmp_tensor_ptr(const void *a, const void *b)
{
    const cq_st_tensor *x = *(const cq_st_tensor *const *)a;
    const cq_st_tensor *y = *(const cq_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static const cq_st_tensor *sorted_find(const cq_st_tensor *const *sorted, size_t n,
                                       const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(sorted[mid]->name, name);
        if (c == 0) return sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static int check_get(const char *path, const cq_st_tensor *t, const char *name,
                     cq_dtype want, const cq_st_tensor **out)
{
    if (out) *out = NULL;
    if (!t) {
        cq_error("%s: tensor '%s' not found", path, name);
        return CQ_ENOENT;
    }
    if (t->dtype == CQ_DTYPE_COUNT) {
        cq_error("%s: tensor '%s' has dtype %s, which cherryq does not support "
                 "(supported: F32, F16, BF16, I32, I16, U16, U8)", path, name, t->st_dtype);
        return CQ_ENOTSUP;
    }
    if (want != CQ_DTYPE_COUNT && t->dtype != want) {
        cq_error("%s: tensor '%s' has dtype %s, expected %s", path, name, t->st_dtype,
                 cq_dtype_name(want));
        return CQ_EINVAL;
    }
    if (out) *out = t;
    return CQ_OK;
}

/* ------------------------------------------------------------ reader */
struct cq_st_file {
    char *path;
    cq_mmap map;
    size_t n;
    cq_st_tensor *t;
    const cq_st_tensor **sorted;
    size_t nmeta;
    char **meta_k;
    char **meta_v;
};

void cq_st_close(cq_st_file **pf)
{
    if (!pf || !*pf) return;
    cq_st_file *f = *pf;
    for (size_t i = 0; i < f->n; i++) free((char *)f->t[i].name);
    free(f->t);
    free(f->sorted);
    for (size_t i = 0; i < f->nmeta; i++) {
        free(f->meta_k[i]);
        free(f->meta_v[i]);
    }
    free(f->meta_k);
    free(f->meta_v);
    cq_mmap_close(&f->map);
    free(f->path);
    free(f);
    *pf = NULL;
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const cq_st_tensor *x = *(const cq_st_tensor *const *)a, *y = *(const cq_st_tensor *const *)b;
    return x->file_offset < y->file_offset ? -1 : x->file_offset > y->file_offset;
}

static int parse_metadata(cq_st_file *f, const cJSON *meta)
{
    if (!cJSON_IsObject(meta)) {
        cq_error("%s: __metadata__ is not a JSON object", f->path);
        return CQ_EBADMSG;
    }
    size_t n = (size_t)cJSON_GetArraySize(meta);
    f->meta_k = calloc(n ? n : 1, sizeof *f->meta_k);
    f->meta_v = calloc(n ? n : 1, sizeof *f->meta_v);
    if (!f->meta_k || !f->meta_v) return CQ_ENOMEM;
    const cJSON *it;
    cJSON_ArrayForEach(it, meta) {
        if (!cJSON_IsString(it) || !it->string) {
            cq_error("%s: __metadata__ value of key '%s' is not a string", f->path,
                     it->string ? it->string : "?");
            return CQ_EBADMSG;
        }
        f->meta_k[f->nmeta] = xstrdup(it->string);
        f->meta_v[f->nmeta] = xstrdup(it->valuestring);
        if (!f->meta_k[f->nmeta] || !f->meta_v[f->nmeta]) {
            free(f->meta_k[f->nmeta]);
            free(f->meta_v[f->nmeta]);
            return CQ_ENOMEM;
        }
        f->nmeta++;
    }
    /* duplicate keys: sorted neighbours (a pairwise scan is quadratic: a
     * header of 160k keys took 52 s) */
    const char **ks = malloc((f->nmeta ? f->nmeta : 1) * sizeof *ks);
    if (!ks) return CQ_ENOMEM;
    for (size_t i = 0; i < f->nmeta; i++) ks[i] = f->meta_k[i];
    const char *dup = cq_sort_find_dup(ks, f->nmeta);
    if (dup) cq_error("%s: __metadata__ key '%s' appears twice", f->path, dup);
    free(ks);
    if (dup) return CQ_EBADMSG;
    return CQ_OK;
}

static int parse_tensor(cq_st_file *f, const cJSON *e, cq_st_tensor *t,
                        const uint8_t *data, uint64_t data_size)
{
    const char *name = t->name;
    const char *path = f->path;
    if (!cJSON_IsObject(e)) {
        cq_error("%s: header entry is not a JSON object (tensor '%s')", path, name);
        return CQ_EBADMSG;
    }
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd)) {
        cq_error("%s: missing or non-string \"dtype\" (tensor '%s')", path, name);
        return CQ_EBADMSG;
    }
    const st_dtype_info *di = st_dtype_lookup(jd->valuestring);
    if (!di) {
        cq_error("%s: unknown dtype \"%s\" (tensor '%s')", path, jd->valuestring, name);
        return CQ_EBADMSG;
    }
    t->st_dtype = di->name;
    t->dtype = di->dt;
    t->elem_size = di->size;
    if (!cJSON_IsArray(js)) {
        cq_error("%s: missing or non-array \"shape\" (tensor '%s')", path, name);
        return CQ_EBADMSG;
    }
    int nd = cJSON_GetArraySize(js);
    if (nd > CQ_ST_MAX_DIMS) {
        cq_error("%s: shape has %d dimensions, at most %d supported (tensor '%s')", path, nd,
                 CQ_ST_MAX_DIMS, name);
        return CQ_EBADMSG;
    }
    t->ndim = nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (!json_u64(cJSON_GetArrayItem(js, i), &d)) {
            cq_error("%s: shape[%d] is not a non-negative integer (tensor '%s')", path, i, name);
            return CQ_EBADMSG;
        }
        t->shape[i] = (int64_t)d;
        if (d != 0 && numel > UINT64_MAX / d) overflow = 1;
        else numel *= d;
    }
    /* a zero dimension makes the product 0 whatever overflowed before */
    for (int i = 0; i < nd; i++)
        if (t->shape[i] == 0) { overflow = 0; numel = 0; }
    if (overflow || (numel && numel > UINT64_MAX / di->size)) {
        cq_error("%s: shape is too large (element count overflows) (tensor '%s')", path, name);
        return CQ_EBADMSG;
    }
    t->numel = numel;
    uint64_t want = numel * di->size;
    uint64_t b, en;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 ||
        !json_u64(cJSON_GetArrayItem(jo, 0), &b) || !json_u64(cJSON_GetArrayItem(jo, 1), &en)) {
        cq_error("%s: \"data_offsets\" must be [begin, end] of non-negative integers (tensor '%s')",
                 path, name);
        return CQ_EBADMSG;
    }
    if (b > en) {
        cq_error("%s: data_offsets begin %" PRIu64 " > end %" PRIu64 " (tensor '%s')", path, b, en,
                 name);
        return CQ_EBADMSG;
    }
    if (en > data_size) {
        cq_error("%s: data_offsets [%" PRIu64 ", %" PRIu64 "] beyond the data section of %" PRIu64
                 " bytes (truncated file?) (tensor '%s')", path, b, en, data_size, name);
        return CQ_EBADMSG;
    }
    if (en - b != want) {
        cq_error("%s: data_offsets span %" PRIu64 " bytes but shape x %s needs %" PRIu64
                 " (tensor '%s')", path, en - b, di->name, want, name);
        return CQ_EBADMSG;
    }
    t->nbytes = (size_t)want;
    t->data = want ? data + b : NULL;
    t->file_offset = (uint64_t)(data - f->map.data) + b;
    return CQ_OK;
}

static int st_parse(cq_st_file *f)
{
    const char *path = f->path;
    const uint8_t *p = f->map.data;
    size_t size = f->map.size;
    if (size < 8) {
        cq_error("%s: file too short for a safetensors header (%zu bytes)", path, size);
        return CQ_EBADMSG;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > CQ_ST_MAX_HEADER) {
        cq_error("%s: header length %" PRIu64 " exceeds the 100 MB limit", path, hlen);
        return CQ_EBADMSG;
    }
    if (hlen > size - 8) {
        cq_error("%s: header length %" PRIu64 " exceeds the file size %zu - 8 (truncated file?)",
                 path, hlen, size);
        return CQ_EBADMSG;
    }
    if (hlen < 2) {
        cq_error("%s: header length %" PRIu64 " is too small for a JSON object", path, hlen);
        return CQ_EBADMSG;
    }
    /* parse a NUL-terminated private copy: the parser never touches the
     * mapping, whatever the header holds */
    char *js = malloc((size_t)hlen + 1);
    if (!js) return CQ_ENOMEM;
    memcpy(js, p + 8, (size_t)hlen);
    js[hlen] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(js, (size_t)hlen, &end, 0);
    if (!root) {
        size_t off = end && end >= js ? (size_t)(end - js) : 0;
        cq_error("%s: header is not valid JSON (parse error at header byte %zu, file offset %zu)",
                 path, off, off + 8);
        free(js);
        return CQ_EBADMSG;
    }
    int r = CQ_OK;
    for (const char *q = end; q < js + hlen; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != 0) {
            cq_error("%s: unexpected bytes after the JSON header (file offset %zu)", path,
                     (size_t)(q - js) + 8);
            r = CQ_EBADMSG;
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        cq_error("%s: header is not a JSON object", path);
        r = CQ_EBADMSG;
        goto done;
    }
    size_t nent = (size_t)cJSON_GetArraySize(root);
    f->t = calloc(nent ? nent : 1, sizeof *f->t);
    if (!f->t) {
        r = CQ_ENOMEM;
        goto done;
    }
    const uint8_t *data = p + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    int have_meta = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!e->string) {
            r = CQ_EBADMSG;
            goto done;
        }
        if (!strcmp(e->string, "__metadata__")) {
            if (have_meta) {
                cq_error("%s: \"__metadata__\" appears twice", path);
                r = CQ_EBADMSG;
                goto done;
            }
            have_meta = 1;
            r = parse_metadata(f, e);
            if (r) goto done;
            continue;
        }
        cq_st_tensor *t = &f->t[f->n];
        t->name = xstrdup(e->string);
        if (!t->name) {
            r = CQ_ENOMEM;
            goto done;
        }
        f->n++;
        r = parse_tensor(f, e, t, data, data_size);
        if (r) goto done;
    }
    f->sorted = malloc((f->n ? f->n : 1) * sizeof *f->sorted);
    if (!f->sorted) {
        r = CQ_ENOMEM;
        goto done;
    }
    /* two tensors sharing bytes (one aliasing another's data) are a
     * malformed file, as the format's own loader says: sorted by offset,
     * each non-empty tensor must start at or after the previous one's end */
    for (size_t i = 0; i < f->n; i++) f->sorted[i] = &f->t[i];
    qsort(f->sorted, f->n, sizeof *f->sorted, cmp_tensor_offset);
    const cq_st_tensor *prev = NULL;
    for (size_t i = 0; i < f->n; i++) {
        const cq_st_tensor *t = f->sorted[i];
        if (!t->nbytes) continue;
        if (prev && t->file_offset < prev->file_offset + prev->nbytes) {
            cq_error("%s: tensors '%s' and '%s' overlap in the data section (bytes %" PRIu64 "..%" PRIu64
                     " and %" PRIu64 "..%" PRIu64 ")",
                     path, prev->name, t->name, prev->file_offset, prev->file_offset + prev->nbytes, t->file_offset,
                     t->file_offset + t->nbytes);
            r = CQ_EBADMSG;
            goto done;
        }
        prev = t;
    }
    qsort(f->sorted, f->n, sizeof *f->sorted, cmp_tensor_ptr);
    for (size_t i = 1; i < f->n; i++) {
        if (!strcmp(f->sorted[i - 1]->name, f->sorted[i]->name)) {
            cq_error("%s: tensor name appears twice in the header (tensor '%s')", path,
                     f->sorted[i]->name);
            r = CQ_EBADMSG;
            goto done;
        }
    }
done:
    cJSON_Delete(root);
    free(js);
    return r;
}

int cq_st_open(cq_st_file **out, const char *path)
{
    CQ_CHECK_ARG(out && path, CQ_EINVAL);
    *out = NULL;
    cq_st_file *f = calloc(1, sizeof *f);
    if (!f) return CQ_ENOMEM;
    f->map.fd = -1;
    f->path = xstrdup(path);
    if (!f->path) {
        free(f);
        return CQ_ENOMEM;
    }
    int r = cq_mmap_open(&f->map, path);
    if (!r) r = st_parse(f);
    if (r) {
        if (r == CQ_ENOMEM) cq_error("%s: out of memory while parsing the header", path);
        cq_st_close(&f);
        return r;
    }
    *out = f;
    return CQ_OK;
}

const char *cq_st_path(const cq_st_file *f) { return f ? f->path : NULL; }
size_t cq_st_count(const cq_st_file *f) { return f ? f->n : 0; }

const cq_st_tensor *cq_st_tensor_at(const cq_st_file *f, size_t i)
{
    return f && i < f->n ? &f->t[i] : NULL;
}

const cq_st_tensor *cq_st_find(const cq_st_file *f, const char *name)
{
    if (!f || !name) return NULL;
    return sorted_find(f->sorted, f->n, name);
}

int cq_st_get(const cq_st_file *f, const char *name, cq_dtype want, const cq_st_tensor **out)
{
    CQ_CHECK_ARG(f && name, CQ_EINVAL);
    return check_get(f->path, cq_st_find(f, name), name, want, out);
}

const char *cq_st_metadata(const cq_st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta_k[i], key)) return f->meta_v[i];
    return NULL;
}

size_t cq_st_metadata_count(const cq_st_file *f) { return f ? f->nmeta : 0; }

int cq_st_metadata_at(const cq_st_file *f, size_t i, const char **key, const char **value)
{
    CQ_CHECK_ARG(f && key && value, CQ_EINVAL);
    if (i >= f->nmeta) return CQ_ENOENT;
    *key = f->meta_k[i];
    *value = f->meta_v[i];
    return CQ_OK;
}

/* ------------------------------------------------------------ sharded set */
struct cq_st_set {
    char *path;
    size_t nshards;
    cq_st_file **shards;
    size_t n;
    const cq_st_tensor **all;
    const cq_st_tensor **sorted;
};

void cq_st_set_close(cq_st_set **ps)
{
    if (!ps || !*ps) return;
    cq_st_set *s = *ps;
    for (size_t i = 0; i < s->nshards; i++) cq_st_close(&s->shards[i]);
    free(s->shards);
    free(s->all);
    free(s->sorted);
    free(s->path);
    free(s);
    *ps = NULL;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Build the flat and sorted tensor lists over all shards; reject duplicates. */
static int set_index(cq_st_set *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nshards; i++) n += cq_st_count(s->shards[i]);
    s->all = malloc((n ? n : 1) * sizeof *s->all);
    s->sorted = malloc((n ? n : 1) * sizeof *s->sorted);
    if (!s->all || !s->sorted) return CQ_ENOMEM;
    for (size_t i = 0; i < s->nshards; i++)
        for (size_t j = 0; j < cq_st_count(s->shards[i]); j++) s->all[s->n++] = &s->shards[i]->t[j];
    memcpy(s->sorted, s->all, n * sizeof *s->all);
    qsort(s->sorted, n, sizeof *s->sorted, cmp_tensor_ptr);
    for (size_t i = 1; i < n; i++) {
        if (!strcmp(s->sorted[i - 1]->name, s->sorted[i]->name)) {
            cq_error("%s: tensor '%s' is present in more than one shard", s->path,
                     s->sorted[i]->name);
            return CQ_EBADMSG;
        }
    }
    return CQ_OK;
}

static int bad_shard_name(const char *n)
{
    return !*n || strchr(n, '/') || strchr(n, '\\') || strstr(n, "..") || !strcmp(n, ".");
}

static int set_open_index(cq_st_set *s, const char *index_path)
{
    char *text = NULL;
    size_t len = 0;
    int r = cq_read_file(index_path, &text, &len, CQ_ST_MAX_HEADER);
    if (r) return r;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        cq_error("%s: not valid JSON (parse error at byte %zu)", index_path,
                 end && end >= text ? (size_t)(end - text) : (size_t)0);
        free(text);
        return CQ_EBADMSG;
    }
    char *dir = xstrdup(index_path);
    char **names = NULL;
    size_t nnames = 0;
    if (!dir) {
        r = CQ_ENOMEM;
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else strcpy(dir, ".");

    const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map")
                                           : NULL;
    if (!cJSON_IsObject(wm)) {
        cq_error("%s: missing \"weight_map\" object", index_path);
        r = CQ_EBADMSG;
        goto done;
    }
    size_t nmap = (size_t)cJSON_GetArraySize(wm);
    names = calloc(nmap ? nmap : 1, sizeof *names);
    if (!names) {
        r = CQ_ENOMEM;
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        const char *tn = e->string ? e->string : "?";
        if (!cJSON_IsString(e)) {
            cq_error("%s: weight_map entry is not a string (tensor '%s')", index_path, tn);
            r = CQ_EBADMSG;
            goto done;
        }
        const char *sh = e->valuestring;
        if (bad_shard_name(sh)) {
            cq_error("%s: shard file '%s' is not a plain file name in the index's directory "
                     "(tensor '%s')", index_path, sh, tn);
            r = CQ_EBADMSG;
            goto done;
        }
        size_t k;
        for (k = 0; k < nnames; k++)
            if (!strcmp(names[k], sh)) break;
        if (k < nnames) continue;
        char *full = join_path(dir, sh);
        if (!full) {
            r = CQ_ENOMEM;
            goto done;
        }
        if (!cq_file_exists(full)) {
            cq_error("%s: shard '%s' of tensor '%s' does not exist (%s)", index_path, sh, tn, full);
            free(full);
            r = CQ_ENOENT;
            goto done;
        }
        free(full);
        names[nnames++] = e->valuestring;
    }
    if (nnames == 0) {
        cq_error("%s: \"weight_map\" is empty", index_path);
        r = CQ_EBADMSG;
        goto done;
    }
    s->shards = calloc(nnames, sizeof *s->shards);
    if (!s->shards) {
        r = CQ_ENOMEM;
        goto done;
    }
    for (size_t k = 0; k < nnames; k++) {
        char *full = join_path(dir, names[k]);
        if (!full) {
            r = CQ_ENOMEM;
            goto done;
        }
        r = cq_st_open(&s->shards[k], full);
        free(full);
        if (r) goto done;
        s->nshards++;
    }
    r = set_index(s);
    if (r) goto done;
    cJSON_ArrayForEach(e, wm) {
        size_t k;
        for (k = 0; k < nnames; k++)
            if (!strcmp(names[k], e->valuestring)) break;
        if (!cq_st_find(s->shards[k], e->string)) {
            cq_error("%s: tensor '%s' is mapped to shard '%s' but that shard does not contain it",
                     index_path, e->string, names[k]);
            r = CQ_EBADMSG;
            goto done;
        }
    }
done:
    free(names);
    free(dir);
    cJSON_Delete(root);
    free(text);
    return r;
}

int cq_st_set_open(cq_st_set **out, const char *path)
{
    CQ_CHECK_ARG(out && path, CQ_EINVAL);
    *out = NULL;
    cq_st_set *s = calloc(1, sizeof *s);
    if (!s) return CQ_ENOMEM;
    s->path = xstrdup(path);
    if (!s->path) {
        free(s);
        return CQ_ENOMEM;
    }
    int r = CQ_OK, use_index = 0;
    if (is_dir(path)) {
        char *index = join_path(path, "model.safetensors.index.json");
        char *single = join_path(path, "model.safetensors");
        if (!index || !single) {
            r = CQ_ENOMEM;
        } else if (cq_file_exists(index)) {
            use_index = 1;
            free(s->path);
            s->path = index;
            index = NULL;
        } else if (cq_file_exists(single)) {
            free(s->path);
            s->path = single;
            single = NULL;
        } else {
            cq_error("%s: neither model.safetensors.index.json nor model.safetensors found", path);
            r = CQ_ENOENT;
        }
        free(index);
        free(single);
    } else {
        use_index = ends_with(path, ".json");
    }
    if (!r && use_index) {
        r = set_open_index(s, s->path);
    } else if (!r) {
        s->shards = calloc(1, sizeof *s->shards);
        if (!s->shards) {
            r = CQ_ENOMEM;
        } else {
            r = cq_st_open(&s->shards[0], s->path);
            if (!r) {
                s->nshards = 1;
                r = set_index(s);
            }
        }
    }
    if (r) {
        if (r == CQ_ENOMEM) cq_error("%s: out of memory", path);
        cq_st_set_close(&s);
        return r;
    }
    *out = s;
    return CQ_OK;
}

size_t cq_st_set_count(const cq_st_set *s) { return s ? s->n : 0; }

const cq_st_tensor *cq_st_set_tensor_at(const cq_st_set *s, size_t i)
{
    return s && i < s->n ? s->all[i] : NULL;
}

const cq_st_tensor *cq_st_set_find(const cq_st_set *s, const char *name)
{
    if (!s || !name) return NULL;
    return sorted_find(s->sorted, s->n, name);
}

int cq_st_set_get(const cq_st_set *s, const char *name, cq_dtype want, const cq_st_tensor **out)
{
    CQ_CHECK_ARG(s && name, CQ_EINVAL);
    return check_get(s->path, cq_st_set_find(s, name), name, want, out);
}

size_t cq_st_set_shard_count(const cq_st_set *s) { return s ? s->nshards : 0; }

const cq_st_file *cq_st_set_shard(const cq_st_set *s, size_t i)
{
    return s && i < s->nshards ? s->shards[i] : NULL;
}

/* ------------------------------------------------------------ writer */
typedef struct {
    char *name;
    cq_dtype dtype;
    int ndim;
    int64_t shape[CQ_ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} st_wentry;

struct cq_st_writer {
    st_wentry *e;
    size_t n, cap;
    char **mk, **mv;
    size_t nm, capm;
};

int cq_st_writer_create(cq_st_writer **out)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    *out = calloc(1, sizeof **out);
    return *out ? CQ_OK : CQ_ENOMEM;
}

void cq_st_writer_destroy(cq_st_writer **pw)
{
    if (!pw || !*pw) return;
    cq_st_writer *w = *pw;
    for (size_t i = 0; i < w->n; i++) free(w->e[i].name);
    for (size_t i = 0; i < w->nm; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->e);
    free(w->mk);
    free(w->mv);
    free(w);
    *pw = NULL;
}

int cq_st_writer_add(cq_st_writer *w, const char *name, cq_dtype dtype, int ndim,
                     const int64_t *shape, const void *data)
{
    CQ_CHECK_ARG(w && name && *name, CQ_EINVAL);
    CQ_CHECK_ARG(dtype >= 0 && dtype < CQ_DTYPE_COUNT, CQ_EINVAL);
    CQ_CHECK_ARG(ndim >= 0 && ndim <= CQ_ST_MAX_DIMS, CQ_EINVAL);
    CQ_CHECK_ARG(ndim == 0 || shape, CQ_EINVAL);
    if (!strcmp(name, "__metadata__")) {
        cq_error("safetensors writer: '__metadata__' is reserved and cannot name a tensor");
        return CQ_EINVAL;
    }
    for (size_t i = 0; i < w->n; i++) {
        if (!strcmp(w->e[i].name, name)) {
            cq_error("safetensors writer: tensor '%s' added twice", name);
            return CQ_EINVAL;
        }
    }
    size_t nb = cq_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            cq_error("safetensors writer: negative shape[%d] = %" PRId64 " (tensor '%s')", i,
                     shape[i], name);
            return CQ_EINVAL;
        }
        if (!cq_mul_ok(nb, (size_t)shape[i], &nb)) {
            cq_error("safetensors writer: tensor size overflows (tensor '%s')", name);
            return CQ_EINVAL;
        }
    }
    if (nb && !data) {
        cq_error("safetensors writer: NULL data for %zu bytes (tensor '%s')", nb, name);
        return CQ_EINVAL;
    }
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 16;
        st_wentry *ne = realloc(w->e, nc * sizeof *ne);
        if (!ne) return CQ_ENOMEM;
        w->e = ne;
        w->cap = nc;
    }
    st_wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    if (!e->name) return CQ_ENOMEM;
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->data = data;
    e->nbytes = nb;
    w->n++;
    return CQ_OK;
}

int cq_st_writer_add_metadata(cq_st_writer *w, const char *key, const char *value)
{
    CQ_CHECK_ARG(w && key && value, CQ_EINVAL);
    char *v = xstrdup(value);
    if (!v) return CQ_ENOMEM;
    for (size_t i = 0; i < w->nm; i++) {
        if (!strcmp(w->mk[i], key)) {
            free(w->mv[i]);
            w->mv[i] = v;
            return CQ_OK;
        }
    }
    if (w->nm == w->capm) {
        size_t nc = w->capm ? 2 * w->capm : 8;
        char **a = realloc(w->mk, nc * sizeof *a);
        if (!a) goto oom;
        w->mk = a;
        char **b = realloc(w->mv, nc * sizeof *b);
        if (!b) goto oom;
        w->mv = b;
        w->capm = nc;
    }
    w->mk[w->nm] = xstrdup(key);
    if (!w->mk[w->nm]) goto oom;
    w->mv[w->nm++] = v;
    return CQ_OK;
oom:
    free(v);
    return CQ_ENOMEM;
}

static cJSON *raw_u64(uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

/* Builds the header JSON (unpadded). Caller frees with cJSON_free. */
static char *st_build_header(const cq_st_writer *w)
{
    cJSON *root = cJSON_CreateObject();
    char *out = NULL;
    if (!root) return NULL;
    if (w->nm) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        if (!m) goto done;
        for (size_t i = 0; i < w->nm; i++)
            if (!cJSON_AddStringToObject(m, w->mk[i], w->mv[i])) goto done;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const st_wentry *e = &w->e[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) goto done;
        cJSON_AddItemToObject(root, e->name, o);
        if (!cJSON_AddStringToObject(o, "dtype", cq_st_dtype_to_name(e->dtype))) goto done;
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        cJSON *of = cJSON_AddArrayToObject(o, "data_offsets");
        if (!sh || !of) goto done;
        for (int d = 0; d < e->ndim; d++) {
            cJSON *v = raw_u64((uint64_t)e->shape[d]);
            if (!v) goto done;
            cJSON_AddItemToArray(sh, v);
        }
        cJSON *b = raw_u64(off), *en = raw_u64(off + e->nbytes);
        if (!b || !en) {
            cJSON_Delete(b);
            cJSON_Delete(en);
            goto done;
        }
        cJSON_AddItemToArray(of, b);
        cJSON_AddItemToArray(of, en);
        off += e->nbytes;
    }
    out = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    return out;
}

int cq_st_writer_write(cq_st_writer *w, const char *path)
{
    CQ_CHECK_ARG(w && path, CQ_EINVAL);
    char *hdr = st_build_header(w);
    if (!hdr) {
        cq_error("%s: out of memory building the safetensors header", path);
        return CQ_ENOMEM;
    }
    size_t hl = strlen(hdr);
    size_t padded = (hl + 7) & ~(size_t)7;  /* 8 + padded is a multiple of 8 */
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
    cq_afile af;
    int r = cq_afile_open(&af, path);
    if (r) {
        cJSON_free(hdr);
        return r;
    }
    r = cq_afile_write(&af, len8, 8);
    if (!r) r = cq_afile_write(&af, hdr, hl);
    if (!r && padded > hl) r = cq_afile_write(&af, spaces, padded - hl);
    for (size_t i = 0; !r && i < w->n; i++)
        if (w->e[i].nbytes) r = cq_afile_write(&af, w->e[i].data, w->e[i].nbytes);
    cJSON_free(hdr);
    if (r) {
        cq_afile_abort(&af);
        return r;
    }
    return cq_afile_commit(&af);
}
