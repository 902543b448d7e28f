/* cherryq: calibration windows, evaluation NLL, and the Fisher-diagonal
 * impact of CHERRYQ.md section 1. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cq_io.h"
#include "pipeline.h"
#include "safetensors.h"

/* ------------------------------------------------------------ names */

const char *cq_linear_name(char *buf, size_t n, int64_t layer, int lin)
{
    snprintf(buf, n, "model.layers.%lld.%s.weight", (long long)layer, cq_llama_linear_names[lin]);
    return buf;
}

int64_t cq_n_linears(const cq_llama *m)
{
    return m ? m->cfg.n_layers * CQ_LLAMA_N_LINEAR : 0;
}

cq_tensor *cq_linear_weight(const cq_llama *m, int64_t idx)
{
    if (!m || idx < 0 || idx >= cq_n_linears(m)) return NULL;
    return m->layers[idx / CQ_LLAMA_N_LINEAR].lin[idx % CQ_LLAMA_N_LINEAR];
}

/* ------------------------------------------------------------ calibration */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void cq_calib_free(cq_calib *c)
{
    if (!c) return;
    free(c->ids);
    memset(c, 0, sizeof *c);
}

static int calib_alloc(cq_calib *c, int64_t n, int64_t seqlen)
{
    memset(c, 0, sizeof *c);
    size_t cnt;
    if (n <= 0 || seqlen <= 0 || !cq_mul_ok((size_t)n, (size_t)(seqlen + 1), &cnt) || cnt > (SIZE_MAX / 4)) {
        cq_error("calibration: bad window count %lld or length %lld", (long long)n, (long long)seqlen);
        return CQ_EINVAL;
    }
    c->ids = malloc(cnt * sizeof(int32_t));
    if (!c->ids) return CQ_ENOMEM;
    c->n = n;
    c->seqlen = seqlen;
    return CQ_OK;
}

int cq_calib_sample(cq_calib *c, const int32_t *tokens, int64_t ntok, int64_t n, int64_t seqlen, uint64_t seed)
{
    CQ_CHECK_ARG(c && (tokens || ntok == 0), CQ_EINVAL);
    if (ntok < seqlen + 1) {
        cq_error("calibration: the corpus has %lld tokens, fewer than one window of %lld + 1", (long long)ntok,
                 (long long)seqlen);
        return CQ_EINVAL;
    }
    int r = calib_alloc(c, n, seqlen);
    if (r) return r;
    int64_t W = seqlen + 1, slots = ntok / W;
    uint64_t s = seed ^ 0xC0FFEEull;
    if (slots >= n) {
        /* partial Fisher-Yates over the slots: n distinct, non-overlapping */
        int64_t *perm = malloc((size_t)slots * sizeof *perm);
        if (!perm) {
            cq_calib_free(c);
            return CQ_ENOMEM;
        }
        for (int64_t i = 0; i < slots; i++) perm[i] = i;
        for (int64_t i = 0; i < n; i++) {
            int64_t j = i + (int64_t)(splitmix(&s) % (uint64_t)(slots - i));
            int64_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
            memcpy(c->ids + i * W, tokens + perm[i] * W, (size_t)W * sizeof(int32_t));
        }
        free(perm);
    } else {
        for (int64_t i = 0; i < n; i++) {
            int64_t st = (int64_t)(splitmix(&s) % (uint64_t)(ntok - W + 1));
            memcpy(c->ids + i * W, tokens + st, (size_t)W * sizeof(int32_t));
        }
    }
    return CQ_OK;
}

int cq_calib_windows(cq_calib *c, const int32_t *tokens, int64_t ntok, int64_t seqlen, int64_t max_windows)
{
    CQ_CHECK_ARG(c && (tokens || ntok == 0) && seqlen > 0, CQ_EINVAL);
    /* consecutive windows of seqlen inputs; the target of a window's last
     * position is the next window's first token (so every token but the
     * first is predicted once) */
    int64_t n = (ntok - 1) / seqlen;
    if (max_windows > 0 && n > max_windows) n = max_windows;
    if (n < 1) {
        cq_error("evaluation: %lld tokens are fewer than one window of %lld + 1", (long long)ntok,
                 (long long)seqlen);
        return CQ_EINVAL;
    }
    int r = calib_alloc(c, n, seqlen);
    if (r) return r;
    for (int64_t i = 0; i < n; i++)
        memcpy(c->ids + i * (seqlen + 1), tokens + i * seqlen, (size_t)(seqlen + 1) * sizeof(int32_t));
    return CQ_OK;
}

int cq_calib_slice(cq_calib *dst, const cq_calib *src, int64_t first, int64_t count)
{
    CQ_CHECK_ARG(dst && src && first >= 0 && count > 0 && first + count <= src->n, CQ_EINVAL);
    int r = calib_alloc(dst, count, src->seqlen);
    if (r) return r;
    int64_t W = src->seqlen + 1;
    memcpy(dst->ids, src->ids + first * W, (size_t)(count * W) * sizeof(int32_t));
    return CQ_OK;
}

/* ids [1, T] and targets [1, T] of window w as ctx tensors */
static int window_tensors(cq_ctx *c, const cq_calib *cal, int64_t w, cq_tensor **ids, cq_tensor **tg)
{
    int64_t T = cal->seqlen, ne[2] = { 1, T };
    *ids = cq_new(c, CQ_I32, 2, ne);
    *tg = cq_new(c, CQ_I32, 2, ne);
    if (!*ids || !*tg) return cq_ctx_status(c) ? cq_ctx_status(c) : CQ_ENOMEM;
    const int32_t *base = cal->ids + w * (T + 1);
    int r = cq_tensor_set(*ids, base, (size_t)T * sizeof(int32_t));
    if (!r) r = cq_tensor_set(*tg, base + 1, (size_t)T * sizeof(int32_t));
    return r;
}

static int check_ids(const cq_llama *m, const cq_calib *cal)
{
    int64_t W = cal->seqlen + 1;
    if (cal->seqlen > m->cfg.max_seq) {
        cq_error("calibration windows of %lld tokens exceed the model's context of %lld", (long long)cal->seqlen,
                 (long long)m->cfg.max_seq);
        return CQ_EINVAL;
    }
    for (int64_t i = 0; i < cal->n * W; i++)
        if (cal->ids[i] < 0 || cal->ids[i] >= m->cfg.vocab) {
            cq_error("calibration token id %d is outside the model's vocabulary of %lld", cal->ids[i],
                     (long long)m->cfg.vocab);
            return CQ_EINVAL;
        }
    return CQ_OK;
}

int cq_calib_nll(cq_llama *m, const cq_calib *cal, double *mean_nll, cq_progress_fn fn, void *user)
{
    CQ_CHECK_ARG(m && cal && cal->n > 0 && mean_nll, CQ_EINVAL);
    int r = check_ids(m, cal);
    if (r) return r;
    cq_ctx *c = NULL;
    r = cq_ctx_create(&c, m->be);
    if (r) return r;
    cq_ctx_set_grad(c, false);
    double sum = 0;
    for (int64_t w = 0; w < cal->n && !r; w++) {
        cq_ctx_reset(c);
        cq_tensor *ids, *tg;
        r = window_tensors(c, cal, w, &ids, &tg);
        if (r) break;
        cq_tensor *loss = cq_llama_loss(c, m, ids, tg, 1.0f / (float)cal->seqlen);
        float l = 0;
        if (!loss) r = cq_ctx_status(c) ? cq_ctx_status(c) : CQ_EINVAL;
        if (!r) r = cq_tensor_get(loss, &l, sizeof l);
        if (!r && !isfinite(l)) {
            cq_error("evaluation: non-finite loss on window %lld", (long long)w);
            r = CQ_ERANGE;
        }
        sum += l;
        if (fn && !r) fn(user, "eval", w + 1, cal->n, sum / (double)(w + 1));
    }
    cq_ctx_destroy(&c);
    if (!r) *mean_nll = sum / (double)cal->n;
    return r;
}

/* ------------------------------------------------------------ impact */

void cq_impact_free(cq_impact *imp)
{
    if (!imp) return;
    for (int i = 0; i < imp->n && imp->F; i++) free(imp->F[i]);
    free(imp->F);
    free(imp->names);
    free(imp->shape);
    memset(imp, 0, sizeof *imp);
}

static int impact_alloc(cq_impact *imp, int n)
{
    memset(imp, 0, sizeof *imp);
    imp->names = calloc((size_t)n + 1, sizeof *imp->names);
    imp->shape = calloc((size_t)n + 1, sizeof *imp->shape);
    imp->F = calloc((size_t)n + 1, sizeof *imp->F);
    if (!imp->names || !imp->shape || !imp->F) {
        cq_impact_free(imp);
        return CQ_ENOMEM;
    }
    imp->n = n;
    return CQ_OK;
}

const float *cq_impact_get(const cq_impact *imp, const char *name, int64_t rows, int64_t cols)
{
    if (!imp || !name) return NULL;
    for (int i = 0; i < imp->n; i++)
        if (!strcmp(imp->names[i], name))
            return imp->shape[i][0] == rows && imp->shape[i][1] == cols ? imp->F[i] : NULL;
    return NULL;
}

/* ------------------------------------------------------------ impact checkpoints
 *
 * Layout (little-endian; every field a multiple of 4 bytes):
 *   "CQIMPCK\0", u64 version, u64 model hash, u64 windows hash,
 *   u64 windows in all, u64 window length, u64 windows done, u64 n,
 *   n x (name[96] NUL-padded, u64 rows, u64 cols),
 *   n x F (f32, rows*cols), u64 checksum of everything before it. */

#define ICK_MAGIC "CQIMPCK"
#define ICK_VERSION 1u
#define ICK_HEAD 64u

/* FNV-1a over 32-bit words: 4x faster than bytewise on big F arrays; every
 * field is a whole number of words */
static void hash32(uint64_t *h, const void *p, size_t n)
{
    const uint8_t *b = p;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        memcpy(&w, b + i, 4);
        *h = (*h ^ w) * 0x100000001b3ull;
    }
    for (; i < n; i++) *h = (*h ^ b[i]) * 0x100000001b3ull;
}
#define HASH_INIT 0xcbf29ce484222325ull

/* every parameter: name, shape, values (on the host) */
static int model_hash(const cq_llama *m, uint64_t *out)
{
    uint64_t h = HASH_INIT;
    size_t maxb = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i] && cq_tensor_nbytes(m->params[i]) > maxb) maxb = cq_tensor_nbytes(m->params[i]);
    uint8_t *tmp = malloc(maxb + 8);
    if (!tmp) return CQ_ENOMEM;
    int r = CQ_OK;
    for (int i = 0; !r && i < m->n_params; i++) {
        const cq_tensor *p = m->params[i];
        if (!p) continue;
        char nm[96] = { 0 };
        snprintf(nm, sizeof nm, "%s", p->name);
        hash32(&h, nm, sizeof nm);
        int64_t sh[5] = { p->ndim, p->ndim > 0 ? p->ne[0] : 0, p->ndim > 1 ? p->ne[1] : 0,
                          p->ndim > 2 ? p->ne[2] : 0, (int64_t)p->dtype };
        hash32(&h, sh, sizeof sh);
        size_t nb = cq_tensor_nbytes(p);
        r = cq_tensor_get(p, tmp, nb);
        if (!r) hash32(&h, tmp, nb);
    }
    free(tmp);
    *out = h;
    return r;
}

static uint64_t calib_hash(const cq_calib *cal)
{
    uint64_t h = HASH_INIT;
    int64_t hd[2] = { cal->n, cal->seqlen };
    hash32(&h, hd, sizeof hd);
    hash32(&h, cal->ids, (size_t)(cal->n * (cal->seqlen + 1)) * sizeof(int32_t));
    return h;
}

typedef struct ick_w {
    cq_afile f;
    uint64_t h;
} ick_w;

static int ick_bytes(ick_w *w, const void *p, size_t n)
{
    hash32(&w->h, p, n);
    return cq_afile_write(&w->f, p, n);
}
static int ick_u64(ick_w *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    return ick_bytes(w, b, 8);
}
static uint64_t rd_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int ick_save(const char *path, const cq_impact *imp, cq_tensor *const *F, uint64_t mh, uint64_t ch,
                    const cq_calib *cal, int64_t done)
{
    size_t maxb = 0;
    for (int k = 0; k < imp->n; k++)
        if (cq_tensor_nbytes(F[k]) > maxb) maxb = cq_tensor_nbytes(F[k]);
    uint8_t *tmp = malloc(maxb + 8);
    if (!tmp) return CQ_ENOMEM;
    ick_w w = { .h = HASH_INIT };
    int r = cq_afile_open(&w.f, path);
    if (r) {
        cq_error("%s: cannot write the impact checkpoint (%s)", path, cq_strerror(r));
        free(tmp);
        return r;
    }
    char magic[8] = ICK_MAGIC;
    ick_bytes(&w, magic, 8);
    ick_u64(&w, ICK_VERSION);
    ick_u64(&w, mh);
    ick_u64(&w, ch);
    ick_u64(&w, (uint64_t)cal->n);
    ick_u64(&w, (uint64_t)cal->seqlen);
    ick_u64(&w, (uint64_t)done);
    ick_u64(&w, (uint64_t)imp->n);
    for (int k = 0; k < imp->n; k++) {
        char nm[96] = { 0 };
        snprintf(nm, sizeof nm, "%s", imp->names[k]);
        ick_bytes(&w, nm, sizeof nm);
        ick_u64(&w, (uint64_t)imp->shape[k][0]);
        ick_u64(&w, (uint64_t)imp->shape[k][1]);
    }
    for (int k = 0; !r && k < imp->n; k++) {
        size_t nb = cq_tensor_nbytes(F[k]);
        r = cq_tensor_get(F[k], tmp, nb);
        if (!r) r = ick_bytes(&w, tmp, nb);
    }
    uint64_t h = w.h;
    if (!r) r = ick_u64(&w, h);
    if (!r && w.f.failed) r = w.f.err == ENOSPC ? CQ_ENOSPC : CQ_EIO;
    if (r) cq_afile_abort(&w.f);
    else r = cq_afile_commit(&w.f);
    if (r) cq_error("%s: cannot write the impact checkpoint (%s)", path, cq_strerror(r));
    free(tmp);
    return r;
}

/* Validates the checkpoint at path fully (size, magic, checksum, version,
 * header) against the run (expect non-NULL) and loads F; with expect NULL
 * only the header is checked and done/total returned. */
typedef struct ick_expect {
    const cq_impact *imp;
    cq_tensor *const *F;
    uint64_t mh, ch;
    const cq_calib *cal;
} ick_expect;

static int ick_load(const char *path, const ick_expect *ex, int64_t *done_out, int64_t *total_out)
{
    if (!cq_file_exists(path)) return CQ_ENOENT;
    cq_mmap mm;
    int r = cq_mmap_open(&mm, path);
    if (r) return r;
    const uint8_t *d = mm.data;
    size_t sz = mm.size;
    r = CQ_EBADMSG;
    if (sz < ICK_HEAD + 8 || memcmp(d, ICK_MAGIC, 8) != 0) {
        cq_error("%s: not a cherryq impact checkpoint%s", path, sz < ICK_HEAD + 8 ? " (too short: truncated?)" : "");
        goto done;
    }
    uint64_t ver = rd_u64(d + 8), mh = rd_u64(d + 16), ch = rd_u64(d + 24), total = rd_u64(d + 32),
             seqlen = rd_u64(d + 40), done = rd_u64(d + 48), n = rd_u64(d + 56);
    if (ver != ICK_VERSION) {
        cq_error("%s: impact checkpoint version %llu, this build reads version %u", path, (unsigned long long)ver,
                 ICK_VERSION);
        goto done;
    }
    if (total < 1 || total > ((uint64_t)1 << 40) || done < 1 || done > total || seqlen < 1 ||
        seqlen > ((uint64_t)1 << 40) || n < 1 || n > 100000 || n * 112 > sz - ICK_HEAD - 8) {
        cq_error("%s: impact checkpoint header is inconsistent (%llu of %llu windows, %llu tensors)", path,
                 (unsigned long long)done, (unsigned long long)total, (unsigned long long)n);
        goto done;
    }
    /* the expected size from the tensor table, overflow-checked */
    uint64_t need = ICK_HEAD + n * 112 + 8;
    for (uint64_t k = 0; k < n; k++) {
        const uint8_t *e = d + ICK_HEAD + k * 112;
        uint64_t r0 = rd_u64(e + 96), c0 = rd_u64(e + 104);
        if (memchr(e, 0, 96) == NULL || r0 < 1 || c0 < 1 || r0 > ((uint64_t)1 << 30) || c0 > ((uint64_t)1 << 30) ||
            r0 * c0 * 4 > sz - need) {
            cq_error("%s: impact checkpoint tensor %llu has a bad name or shape, or the file is truncated", path,
                     (unsigned long long)k);
            goto done;
        }
        need += r0 * c0 * 4;
    }
    if (need != sz) {
        cq_error("%s: impact checkpoint is %zu bytes, its header says %llu (truncated or corrupt)", path, sz,
                 (unsigned long long)need);
        goto done;
    }
    uint64_t h = HASH_INIT;
    hash32(&h, d, sz - 8);
    if (h != rd_u64(d + sz - 8)) {
        cq_error("%s: impact checkpoint checksum mismatch (corrupt file)", path);
        goto done;
    }
    if (ex) {
        const cq_impact *imp = ex->imp;
        if (n != (uint64_t)imp->n) {
            cq_error("%s: the checkpoint holds %llu weight matrices, the model %d: it belongs to another model", path,
                     (unsigned long long)n, imp->n);
            goto done;
        }
        for (int k = 0; k < imp->n; k++) {
            const uint8_t *e = d + ICK_HEAD + (size_t)k * 112;
            if (strcmp((const char *)e, imp->names[k]) || rd_u64(e + 96) != (uint64_t)imp->shape[k][0] ||
                rd_u64(e + 104) != (uint64_t)imp->shape[k][1]) {
                cq_error("%s: the checkpoint's weight %d is '%s' [%llu, %llu], the model's '%s' [%lld, %lld]: it "
                         "belongs to another model",
                         path, k, (const char *)e, (unsigned long long)rd_u64(e + 96),
                         (unsigned long long)rd_u64(e + 104), imp->names[k], (long long)imp->shape[k][0],
                         (long long)imp->shape[k][1]);
                goto done;
            }
        }
        if (mh != ex->mh) {
            cq_error("%s: the checkpoint was made with other model weights (same shapes): it belongs to another "
                     "model",
                     path);
            goto done;
        }
        if (total != (uint64_t)ex->cal->n || seqlen != (uint64_t)ex->cal->seqlen || ch != ex->ch) {
            cq_error("%s: the checkpoint was made on other calibration windows (it has %llu windows of %llu tokens, "
                     "this run %lld of %lld%s): the corpus, tokenizer, --samples, --seqlen or --seed differ",
                     path, (unsigned long long)total, (unsigned long long)seqlen, (long long)ex->cal->n,
                     (long long)ex->cal->seqlen,
                     total == (uint64_t)ex->cal->n && seqlen == (uint64_t)ex->cal->seqlen ? ", other tokens" : "");
            goto done;
        }
        const uint8_t *fd = d + ICK_HEAD + n * 112;
        for (int k = 0; k < imp->n; k++) {
            size_t cnt = (size_t)(imp->shape[k][0] * imp->shape[k][1]);
            for (size_t j = 0; j < cnt; j++) {
                float v;
                memcpy(&v, fd + j * 4, 4);
                if (!isfinite(v) || v < 0) {
                    cq_error("%s: impact checkpoint value %zu of '%s' is negative or not finite", path, j,
                             imp->names[k]);
                    goto done;
                }
            }
            int sr = cq_tensor_set(ex->F[k], fd, cnt * 4);
            if (sr) {
                r = sr;
                goto done;
            }
            fd += cnt * 4;
        }
    }
    if (done_out) *done_out = (int64_t)done;
    if (total_out) *total_out = (int64_t)total;
    r = CQ_OK;
done:
    cq_mmap_close(&mm);
    return r;
}

int cq_impact_ckpt_peek(const char *path, int64_t *done, int64_t *total)
{
    CQ_CHECK_ARG(path, CQ_EINVAL);
    return ick_load(path, NULL, done, total);
}

int cq_impact_compute(cq_impact *imp, cq_llama *m, const cq_calib *cal, cq_progress_fn fn, void *user)
{
    return cq_impact_compute_ckpt(imp, m, cal, NULL, fn, user);
}

int cq_impact_compute_ckpt(cq_impact *imp, cq_llama *m, const cq_calib *cal, cq_impact_ckpt *ck, cq_progress_fn fn,
                           void *user)
{
    CQ_CHECK_ARG(imp && m && cal && cal->n > 0, CQ_EINVAL);
    CQ_CHECK_ARG(!ck || ck->every >= 0, CQ_EINVAL);
    memset(imp, 0, sizeof *imp);
    if (ck) ck->resumed_at = 0;
    bool use_ck = ck && ck->path && (ck->every > 0 || ck->resume);
    for (int64_t i = 0; i < cq_n_linears(m); i++) {
        const cq_llama_qstate *q = &m->layers[i / CQ_LLAMA_N_LINEAR].q[i % CQ_LLAMA_N_LINEAR];
        if (q->bits || q->packed || !cq_linear_weight(m, i)) {
            cq_error("impact: the model must be full precision (its linears are quantized)");
            return CQ_EINVAL;
        }
    }
    int r = check_ids(m, cal);
    if (r) return r;
    int n2 = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i] && m->params[i]->ndim == 2) n2++;
    r = impact_alloc(imp, n2);
    if (r) return r;
    cq_tensor **F = calloc((size_t)n2 + 1, sizeof *F);
    cq_tensor **P = calloc((size_t)n2 + 1, sizeof *P);
    cq_ctx *c = NULL;
    if (!F || !P) r = CQ_ENOMEM;
    for (int i = 0, k = 0; !r && i < m->n_params; i++) {
        cq_tensor *p = m->params[i];
        if (!p || p->ndim != 2) continue;
        P[k] = p;
        snprintf(imp->names[k], sizeof imp->names[k], "%s", p->name);
        imp->shape[k][0] = p->ne[0];
        imp->shape[k][1] = p->ne[1];
        r = cq_tensor_new(&F[k], m->be, CQ_F32, 2, p->ne);
        k++;
    }
    /* what a checkpoint belongs to: the weights (before gradients are
     * enabled: only the values count) and the windows */
    uint64_t mh = 0, ch = 0;
    int64_t w0 = 0;
    if (!r && use_ck) {
        r = model_hash(m, &mh);
        ch = calib_hash(cal);
    }
    if (!r && use_ck && ck->resume) {
        ick_expect ex = { imp, F, mh, ch, cal };
        int lr = ick_load(ck->path, &ex, &w0, NULL);
        if (lr == CQ_ENOENT) w0 = 0;
        else if (lr) r = lr;
        else ck->resumed_at = w0;
    }
    if (!r) r = cq_llama_enable_grad(m);
    if (!r) r = cq_ctx_create(&c, m->be);
    for (int64_t w = w0; !r && w < cal->n; w++) {
        cq_ctx_reset(c);
        r = cq_llama_zero_grad(m);
        cq_tensor *ids = NULL, *tg = NULL;
        if (!r) r = window_tensors(c, cal, w, &ids, &tg);
        if (r) break;
        /* one window's summed next-token NLL: batch 1, scale 1 */
        cq_tensor *loss = cq_llama_loss(c, m, ids, tg, 1.0f);
        if (!loss) {
            r = cq_ctx_status(c) ? cq_ctx_status(c) : CQ_EINVAL;
            break;
        }
        float l = 0;
        r = cq_tensor_get(loss, &l, sizeof l);
        if (!r && !isfinite(l)) {
            cq_error("impact: non-finite loss on calibration window %lld", (long long)w);
            r = CQ_ERANGE;
        }
        if (!r) r = cq_backward(c, loss);
        for (int k = 0; !r && k < n2; k++) r = cq_sqr_accum(c, F[k], P[k]->grad, w);
        if (!r && use_ck && ck->every > 0 && (((w + 1) % ck->every == 0 && w + 1 < cal->n) ||
                                              (w + 1 == cal->n && ck->save_final)))
            r = ick_save(ck->path, imp, F, mh, ch, cal, w + 1);
        if (!r && fn) fn(user, "impact", w + 1, cal->n, (double)l / (double)cal->seqlen);
    }
    for (int k = 0; !r && k < n2; k++) {
        size_t cnt = (size_t)(imp->shape[k][0] * imp->shape[k][1]);
        imp->F[k] = malloc(cnt * sizeof(float) + 1);
        if (!imp->F[k]) r = CQ_ENOMEM;
        else r = cq_tensor_get_f32(F[k], imp->F[k]);
        for (size_t j = 0; !r && j < cnt; j++)
            if (!isfinite(imp->F[k][j])) {
                cq_error("impact: non-finite Fisher value in %s", imp->names[k]);
                r = CQ_ERANGE;
            }
    }
    cq_ctx_destroy(&c);
    for (int k = 0; F && k < n2; k++) cq_tensor_free(&F[k]);
    free(F);
    free(P);
    if (r) {
        cq_impact_free(imp);
        return r;
    }
    imp->n_samples = cal->n;
    imp->seqlen = cal->seqlen;
    return CQ_OK;
}

int cq_impact_save(const cq_impact *imp, const char *path)
{
    CQ_CHECK_ARG(imp && path && imp->n > 0, CQ_EINVAL);
    cq_st_writer *w = NULL;
    int r = cq_st_writer_create(&w);
    for (int i = 0; !r && i < imp->n; i++) r = cq_st_writer_add(w, imp->names[i], CQ_F32, 2, imp->shape[i], imp->F[i]);
    char v[32];
    if (!r) r = cq_st_writer_add_metadata(w, "cherryq_impact", "1");
    snprintf(v, sizeof v, "%lld", (long long)imp->n_samples);
    if (!r) r = cq_st_writer_add_metadata(w, "n_samples", v);
    snprintf(v, sizeof v, "%lld", (long long)imp->seqlen);
    if (!r) r = cq_st_writer_add_metadata(w, "seqlen", v);
    if (!r) r = cq_st_writer_write(w, path);
    cq_st_writer_destroy(&w);
    return r;
}

int cq_impact_load(cq_impact *imp, const char *path, const cq_llama *m)
{
    CQ_CHECK_ARG(imp && path, CQ_EINVAL);
    memset(imp, 0, sizeof *imp);
    cq_st_file *f = NULL;
    int r = cq_st_open(&f, path);
    if (r) return r;
    int n = (int)cq_st_count(f);
    if (n == 0) {
        cq_error("%s: the impact file holds no tensors", path);
        cq_st_close(&f);
        return CQ_EBADMSG;
    }
    r = impact_alloc(imp, n);
    for (int i = 0; !r && i < n; i++) {
        const cq_st_tensor *t = cq_st_tensor_at(f, (size_t)i);
        if (t->dtype != CQ_F32 || t->ndim != 2) {
            cq_error("%s: impact tensor '%s' must be F32 and 2-D (got %s, %d dims)", path, t->name, t->st_dtype,
                     t->ndim);
            r = CQ_EBADMSG;
            break;
        }
        if (strlen(t->name) >= sizeof imp->names[i]) {
            cq_error("%s: tensor name '%.40s...' too long", path, t->name);
            r = CQ_EBADMSG;
            break;
        }
        snprintf(imp->names[i], sizeof imp->names[i], "%s", t->name);
        imp->shape[i][0] = t->shape[0];
        imp->shape[i][1] = t->shape[1];
        if (m) {
            cq_tensor *p = cq_llama_param(m, t->name);
            int64_t pr = p ? p->ne[0] : -1, pc = p ? p->ne[1] : -1;
            if (!p) {
                /* packed-only linears have no dense tensor; take the shape
                 * from the config */
                for (int64_t k = 0; k < cq_n_linears(m); k++) {
                    char nm[96];
                    if (strcmp(cq_linear_name(nm, sizeof nm, k / CQ_LLAMA_N_LINEAR, (int)(k % CQ_LLAMA_N_LINEAR)),
                               t->name))
                        continue;
                    const cq_qlinear *ql = m->layers[k / CQ_LLAMA_N_LINEAR].q[k % CQ_LLAMA_N_LINEAR].packed;
                    if (ql) pr = ql->out, pc = ql->in;
                }
            } else if (p->ndim != 2) {
                pr = pc = -1;
            }
            if (pr < 0) {
                cq_error("%s: impact tensor '%s' is not a 2-D weight of the model: the impact file does not match "
                         "the model",
                         path, t->name);
                r = CQ_EBADMSG;
                break;
            }
            if (pr != t->shape[0] || pc != t->shape[1]) {
                cq_error("%s: impact tensor '%s' has shape [%lld, %lld] but the model's weight is [%lld, %lld]: "
                         "the impact file does not match the model",
                         path, t->name, (long long)t->shape[0], (long long)t->shape[1], (long long)pr, (long long)pc);
                r = CQ_EBADMSG;
                break;
            }
        }
        size_t cnt = (size_t)t->numel;
        imp->F[i] = malloc(cnt * sizeof(float) + 1);
        if (!imp->F[i]) {
            r = CQ_ENOMEM;
            break;
        }
        memcpy(imp->F[i], t->data, cnt * sizeof(float));
        for (size_t j = 0; j < cnt; j++)
            if (!isfinite(imp->F[i][j]) || imp->F[i][j] < 0) {
                cq_error("%s: impact tensor '%s' has a negative or non-finite value at element %zu", path, t->name,
                         j);
                r = CQ_EBADMSG;
                break;
            }
    }
    if (!r && m)
        for (int64_t k = 0; k < cq_n_linears(m); k++) {
            char nm[96];
            cq_linear_name(nm, sizeof nm, k / CQ_LLAMA_N_LINEAR, (int)(k % CQ_LLAMA_N_LINEAR));
            int found = 0;
            for (int i = 0; i < n; i++) found |= !strcmp(imp->names[i], nm);
            if (!found) {
                cq_error("%s: the impact file has no tensor '%s': it does not match the model (%lld layers)", path,
                         nm, (long long)m->cfg.n_layers);
                r = CQ_EBADMSG;
                break;
            }
        }
    const char *ns = cq_st_metadata(f, "n_samples"), *sl = cq_st_metadata(f, "seqlen");
    imp->n_samples = ns ? atoll(ns) : 0;
    imp->seqlen = sl ? atoll(sl) : 0;
    cq_st_close(&f);
    if (r) cq_impact_free(imp);
    return r;
}
