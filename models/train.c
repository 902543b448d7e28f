/* cherryq: the trainer. Semantics and checkpoint layout: train.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cq_io.h"
#include "train.h"

#define CKPT_MAGIC "CQTRAIN1"
#define CKPT_VERSION 1u
#define CKPT_NAME "trainer.ckpt"

typedef struct tparam {
    cq_tensor *p;
    cq_tensor *m, *v;   /* AdamW state (trained parameters only); with
                         * offload_optimizer: views of the staging pair */
    float *hm, *hv;     /* offload_optimizer: the state in host memory */
    bool train;
    float *best;        /* host copy of the best weights (keep_best) */
} tparam;

struct cq_trainer {
    cq_llama *model;
    cq_train_opts o;
    const int32_t *train, *val;
    size_t n_train, n_val;
    cq_ctx *ctx;
    tparam *ps;
    int n_ps;
    int64_t step;          /* optimizer steps done */
    uint64_t rng;          /* data position */
    int64_t n_skipped, n_bad_run;
    double best_val;
    bool have_best;
    int32_t *ids_buf, *tgt_buf;
    cq_tensor *stage_m, *stage_v; /* offload_optimizer: device staging */
};

void cq_train_opts_default(cq_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->accum = 1;
    o->lr = 1e-3f;
    o->min_lr_ratio = 0.1f;
    o->beta1 = 0.9f;
    o->beta2 = 0.95f;
    o->eps = 1e-8f;
    o->weight_decay = 0.1f;
    o->clip = 1.0f;
    o->max_bad_steps = 10;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void free_params(cq_trainer *t)
{
    if (!t->ps) return;
    for (int i = 0; i < t->n_ps; i++) {
        cq_tensor_free(&t->ps[i].m);
        cq_tensor_free(&t->ps[i].v);
        cq_backend_host_free(t->model->be, t->ps[i].hm);
        cq_backend_host_free(t->model->be, t->ps[i].hv);
        free(t->ps[i].best);
    }
    free(t->ps);
    t->ps = NULL;
    cq_tensor_free(&t->stage_m);
    cq_tensor_free(&t->stage_v);
}

/* AdamW state: on the backend, or (offload_optimizer) in host memory with
 * views of the staging pair as m and v */
static int alloc_state(cq_trainer *t, tparam *tp)
{
    cq_backend *be = t->model->be;
    if (!t->o.offload_optimizer) {
        int r = cq_tensor_new(&tp->m, be, CQ_F32, tp->p->ndim, tp->p->ne);
        return r ? r : cq_tensor_new(&tp->v, be, CQ_F32, tp->p->ndim, tp->p->ne);
    }
    size_t nb = cq_tensor_nbytes(tp->p);
    int r = cq_backend_host_alloc(be, nb, (void **)&tp->hm);
    if (!r) r = cq_backend_host_alloc(be, nb, (void **)&tp->hv);
    if (r) return r;
    memset(tp->hm, 0, nb);
    memset(tp->hv, 0, nb);
    r = cq_tensor_view(&tp->m, t->stage_m, tp->p->ndim, tp->p->ne, NULL, 0);
    return r ? r : cq_tensor_view(&tp->v, t->stage_v, tp->p->ndim, tp->p->ne, NULL, 0);
}

/* m or v of a trained parameter to / from host memory (f32 bytes) */
static int state_get(const cq_trainer *t, const tparam *tp, int which, void *dst)
{
    size_t nb = cq_tensor_nbytes(tp->p);
    if (t->o.offload_optimizer) {
        memcpy(dst, which ? tp->hv : tp->hm, nb);
        return CQ_OK;
    }
    return cq_tensor_get(which ? tp->v : tp->m, dst, nb);
}

static int state_set(cq_trainer *t, tparam *tp, int which, const void *src)
{
    size_t nb = cq_tensor_nbytes(tp->p);
    if (t->o.offload_optimizer) {
        memcpy(which ? tp->hv : tp->hm, src, nb);
        return CQ_OK;
    }
    return cq_tensor_set(which ? tp->v : tp->m, src, nb);
}

void cq_trainer_destroy(cq_trainer **pt)
{
    if (!pt || !*pt) return;
    cq_trainer *t = *pt;
    *pt = NULL;
    free_params(t);
    cq_ctx_destroy(&t->ctx);
    free(t->ids_buf);
    free(t->tgt_buf);
    free(t);
}

int cq_trainer_create(cq_trainer **out, cq_llama *m, const cq_train_opts *o, const int32_t *train, size_t n_train,
                      const int32_t *val, size_t n_val)
{
    CQ_CHECK_ARG(out && m && o && train, CQ_EINVAL);
    *out = NULL;
    if (o->steps < 1 || o->batch < 1 || o->seq < 2 || o->accum < 1) {
        cq_error("trainer: steps, batch, accum must be >= 1 and seq >= 2 (got %lld, %lld, %lld, %lld)",
                 (long long)o->steps, (long long)o->batch, (long long)o->accum, (long long)o->seq);
        return CQ_EINVAL;
    }
    if (o->seq > m->cfg.max_seq) {
        cq_error("trainer: seq %lld exceeds the model's context of %lld", (long long)o->seq, (long long)m->cfg.max_seq);
        return CQ_EINVAL;
    }
    if (n_train <= (size_t)o->seq) {
        cq_error("trainer: %zu training tokens are too few for sequences of %lld tokens (need more than %lld)", n_train,
                 (long long)o->seq, (long long)o->seq);
        return CQ_EINVAL;
    }
    if (!(o->lr > 0) || !(o->min_lr_ratio >= 0 && o->min_lr_ratio <= 1) || !(o->beta1 >= 0 && o->beta1 < 1) ||
        !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps > 0) || !(o->weight_decay >= 0) || o->warmup < 0 ||
        o->eval_every < 0 || o->eval_tokens < 0 || o->save_every < 0 || o->max_bad_steps < 1) {
        cq_error("trainer: invalid optimizer settings (lr %g, min_lr_ratio %g, betas %g/%g, eps %g, wd %g)", o->lr,
                 o->min_lr_ratio, o->beta1, o->beta2, o->eps, o->weight_decay);
        return CQ_EINVAL;
    }
    for (size_t i = 0; i < n_train; i++)
        if (train[i] < 0 || train[i] >= m->cfg.vocab) {
            cq_error("trainer: training token %zu has id %d outside the vocab of %lld", i, train[i],
                     (long long)m->cfg.vocab);
            return CQ_EINVAL;
        }
    for (size_t i = 0; val && i < n_val; i++)
        if (val[i] < 0 || val[i] >= m->cfg.vocab) {
            cq_error("trainer: validation token %zu has id %d outside the vocab of %lld", i, val[i],
                     (long long)m->cfg.vocab);
            return CQ_EINVAL;
        }
    cq_trainer *t = calloc(1, sizeof *t);
    if (!t) return CQ_ENOMEM;
    t->model = m;
    t->o = *o;
    t->train = train;
    t->n_train = n_train;
    t->val = val;
    t->n_val = val ? n_val : 0;
    t->rng = o->seed;
    t->best_val = INFINITY;
    size_t nw = (size_t)(o->batch * o->seq);
    t->ids_buf = malloc(nw * sizeof(int32_t));
    t->tgt_buf = malloc(nw * sizeof(int32_t));
    t->ps = calloc((size_t)m->n_params, sizeof *t->ps);
    int r = (!t->ids_buf || !t->tgt_buf || !t->ps) ? CQ_ENOMEM : cq_ctx_create(&t->ctx, m->be);
    if (!r && o->offload_optimizer) {
        int64_t maxn = 0;
        for (int i = 0; i < m->n_params; i++) {
            int64_t n = cq_tensor_numel(m->params[i]);
            if ((!o->trainable || o->trainable(m->params[i], o->user)) && n > maxn) maxn = n;
        }
        r = cq_tensor_new(&t->stage_m, m->be, CQ_F32, 1, &maxn);
        if (!r) r = cq_tensor_new(&t->stage_v, m->be, CQ_F32, 1, &maxn);
        if (r) cq_error("trainer: cannot allocate the optimizer staging buffers (2 x %lld floats)", (long long)maxn);
    }
    int n_train_p = 0;
    for (int i = 0; i < m->n_params && !r; i++) {
        tparam *tp = &t->ps[t->n_ps++];
        tp->p = m->params[i];
        tp->train = !o->trainable || o->trainable(tp->p, o->user);
        if (!tp->train) {
            tp->p->requires_grad = false;
            continue;
        }
        n_train_p++;
        r = cq_param_enable_grad(tp->p);
        if (!r) r = alloc_state(t, tp);
        if (!r) r = cq_tensor_zero_grad(tp->p);
        if (r) cq_error("trainer: cannot allocate the optimizer state of %s", tp->p->name);
    }
    if (!r && n_train_p == 0) {
        cq_error("trainer: no parameter is selected for training");
        r = CQ_EINVAL;
    }
    if (r) {
        cq_trainer_destroy(&t);
        return r;
    }
    *out = t;
    return CQ_OK;
}

int64_t cq_trainer_step_count(const cq_trainer *t) { return t ? t->step : 0; }
double cq_trainer_best_val(const cq_trainer *t) { return t ? t->best_val : INFINITY; }

double cq_trainer_lr(const cq_trainer *t, int64_t s)
{
    const cq_train_opts *o = &t->o;
    if (o->warmup > 0 && s <= o->warmup) return (double)o->lr * (double)s / (double)o->warmup;
    int64_t span = o->steps - o->warmup;
    double prog = span > 0 ? (double)(s - o->warmup) / (double)span : 1.0;
    if (prog < 0) prog = 0;
    if (prog > 1) prog = 1;
    double mr = o->min_lr_ratio;
    return (double)o->lr * (mr + (1.0 - mr) * 0.5 * (1.0 + cos(3.14159265358979323846 * prog)));
}

static int zero_grads(cq_trainer *t)
{
    for (int i = 0; i < t->n_ps; i++)
        if (t->ps[i].train) {
            int r = cq_tensor_zero_grad(t->ps[i].p);
            if (r) return r;
        }
    return CQ_OK;
}

/* One micro-batch: forward + backward; adds its (scaled) loss to *loss. */
static int micro_step(cq_trainer *t, double *loss)
{
    const int64_t B = t->o.batch, T = t->o.seq;
    uint64_t span = (uint64_t)(t->n_train - (size_t)T);
    for (int64_t b = 0; b < B; b++) {
        uint64_t s = splitmix(&t->rng) % span;
        memcpy(t->ids_buf + b * T, t->train + s, (size_t)T * sizeof(int32_t));
        memcpy(t->tgt_buf + b * T, t->train + s + 1, (size_t)T * sizeof(int32_t));
    }
    cq_ctx *c = t->ctx;
    cq_ctx_reset(c);
    cq_ctx_set_grad(c, true);
    int64_t ne[2] = { B, T };
    cq_tensor *ids = cq_new(c, CQ_I32, 2, ne);
    cq_tensor *tg = cq_new(c, CQ_I32, 2, ne);
    int r = cq_ctx_status(c);
    if (!r) r = cq_tensor_set(ids, t->ids_buf, (size_t)(B * T) * sizeof(int32_t));
    if (!r) r = cq_tensor_set(tg, t->tgt_buf, (size_t)(B * T) * sizeof(int32_t));
    if (r) return r;
    float scale = (float)(1.0 / ((double)B * (double)T * (double)t->o.accum));
    cq_tensor *l = cq_llama_loss(c, t->model, ids, tg, scale);
    float lv = NAN;
    if (!l) return cq_ctx_status(c) ? cq_ctx_status(c) : CQ_EINVAL;
    r = cq_tensor_get(l, &lv, sizeof lv);
    if (!r) r = cq_backward(c, l);
    cq_ctx_reset(c);
    *loss += (double)lv;
    return r;
}

int cq_trainer_step(cq_trainer *t, cq_train_progress *p)
{
    CQ_CHECK_ARG(t, CQ_EINVAL);
    const cq_train_opts *o = &t->o;
    int64_t s = t->step + 1;
    double loss = 0;
    int r = CQ_OK;
    for (int64_t a = 0; a < o->accum && !r; a++) r = micro_step(t, &loss);
    if (r) return r;
    /* global gradient norm; find the first non-finite tensor */
    double ss = 0;
    const char *bad = NULL;
    for (int i = 0; i < t->n_ps && !r; i++) {
        if (!t->ps[i].train) continue;
        double v = 0;
        r = cq_sumsq(t->ctx, t->ps[i].p->grad, &v);
        if (!r && !isfinite(v) && !bad) bad = t->ps[i].p->name;
        ss += v;
    }
    cq_ctx_reset(t->ctx);
    if (r) return r;
    double norm = sqrt(ss);
    double lr = cq_trainer_lr(t, s);
    if (!isfinite(loss) || bad) {
        t->n_skipped++;
        t->n_bad_run++;
        if (bad)
            cq_warn("step %lld: non-finite gradient (first: %s.grad); step skipped", (long long)s, bad);
        else
            cq_warn("step %lld: non-finite loss (%g); step skipped", (long long)s, loss);
        r = zero_grads(t);
        t->step = s;
        if (p) {
            memset(p, 0, sizeof *p);
            p->step = s;
            p->steps = o->steps;
            p->loss = NAN;
            p->lr = lr;
            p->grad_norm = norm;
            p->val_loss = NAN;
            p->n_skipped = t->n_skipped;
        }
        if (r) return r;
        if (t->n_bad_run >= o->max_bad_steps) {
            cq_error("training stopped: %lld consecutive steps with a non-finite %s (last: step %lld%s%s)",
                     (long long)t->n_bad_run, bad ? "gradient" : "loss", (long long)s, bad ? ", tensor " : "",
                     bad ? bad : "");
            return CQ_ERANGE;
        }
        return CQ_OK;
    }
    t->n_bad_run = 0;
    cq_adamw_params ap = {
        .lr = (float)lr, .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps, .step = s,
        .grad_scale = (o->clip > 0 && norm > o->clip) ? (float)(o->clip / norm) : 1.0f,
    };
    for (int i = 0; i < t->n_ps && !r; i++) {
        tparam *tp = &t->ps[i];
        if (!tp->train) continue;
        ap.weight_decay = tp->p->ndim >= 2 ? o->weight_decay : 0.0f;
        size_t nb = cq_tensor_nbytes(tp->p);
        if (o->offload_optimizer) { /* stream m, v in, update, stream them out */
            r = cq_tensor_set(tp->m, tp->hm, nb);
            if (!r) r = cq_tensor_set(tp->v, tp->hv, nb);
        }
        if (!r) r = cq_adamw_step(t->ctx, tp->p, tp->m, tp->v, tp->p->grad, &ap);
        if (!r && o->offload_optimizer) {
            r = cq_tensor_get(tp->m, tp->hm, nb);
            if (!r) r = cq_tensor_get(tp->v, tp->hv, nb);
        }
    }
    cq_ctx_reset(t->ctx);
    if (!r) r = zero_grads(t);
    if (r) return r;
    t->step = s;
    if (p) {
        memset(p, 0, sizeof *p);
        p->step = s;
        p->steps = o->steps;
        p->loss = loss;
        p->lr = lr;
        p->grad_norm = norm;
        p->val_loss = NAN;
        p->n_skipped = t->n_skipped;
    }
    return CQ_OK;
}

int cq_eval_windows(cq_ctx *c, cq_llama *m, const int32_t *tokens, size_t n, int64_t seqlen, int64_t max_windows,
                    int64_t batch, double *nll_sum, int64_t *n_pred, double *window_nll)
{
    CQ_CHECK_ARG(c && m && tokens && nll_sum && n_pred && seqlen >= 2 && batch >= 1 && max_windows >= 0,
                 CQ_EINVAL);
    *nll_sum = 0;
    *n_pred = 0;
    if (seqlen > m->cfg.max_seq) {
        cq_error("eval: seqlen %lld exceeds the model's context of %lld", (long long)seqlen,
                 (long long)m->cfg.max_seq);
        return CQ_EINVAL;
    }
    int64_t nw = (int64_t)(n / (size_t)seqlen);
    if (max_windows > 0 && nw > max_windows) nw = max_windows;
    if (nw == 0) {
        cq_error("eval: %zu tokens do not fill one window of %lld", n, (long long)seqlen);
        return CQ_EINVAL;
    }
    for (size_t i = 0; i < (size_t)(nw * seqlen); i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab) {
            cq_error("eval: token %zu has id %d outside the vocab of %lld", i, tokens[i], (long long)m->cfg.vocab);
            return CQ_EINVAL;
        }
    if (batch > nw) batch = nw;
    int32_t *tg = malloc((size_t)(batch * seqlen) * sizeof(int32_t));
    float *nll = malloc((size_t)(batch * seqlen) * sizeof(float));
    if (!tg || !nll) {
        free(tg);
        free(nll);
        return CQ_ENOMEM;
    }
    bool old = cq_ctx_set_grad(c, false);
    int r = CQ_OK;
    double total = 0;
    for (int64_t w0 = 0; w0 < nw && !r; w0 += batch) {
        int64_t B = nw - w0 < batch ? nw - w0 : batch;
        const int32_t *src = tokens + w0 * seqlen;
        for (int64_t b = 0; b < B; b++) {
            memcpy(tg + b * seqlen, src + b * seqlen + 1, (size_t)(seqlen - 1) * sizeof(int32_t));
            tg[b * seqlen + seqlen - 1] = -1; /* the window's last token predicts nothing inside it */
        }
        cq_ctx_reset(c);
        int64_t ne[2] = { B, seqlen };
        cq_tensor *ids = cq_new(c, CQ_I32, 2, ne);
        cq_tensor *tt = cq_new(c, CQ_I32, 2, ne);
        r = cq_ctx_status(c);
        if (!r) r = cq_tensor_set(ids, src, (size_t)(B * seqlen) * sizeof(int32_t));
        if (!r) r = cq_tensor_set(tt, tg, (size_t)(B * seqlen) * sizeof(int32_t));
        if (r) break;
        cq_tensor *logits = cq_llama_forward(c, m, ids, 0, false);
        cq_tensor *nt = NULL;
        cq_tensor *l = cq_cross_entropy(c, logits, tt, 1.0f, &nt);
        if (!l || !nt) {
            r = cq_ctx_status(c) ? cq_ctx_status(c) : CQ_EINVAL;
            break;
        }
        r = cq_tensor_get(nt, nll, (size_t)(B * seqlen) * sizeof(float));
        for (int64_t b = 0; b < B && !r; b++) {
            double s = 0;
            for (int64_t i = 0; i < seqlen - 1; i++) s += nll[b * seqlen + i];
            if (window_nll) window_nll[w0 + b] = s / (double)(seqlen - 1);
            total += s;
        }
    }
    cq_ctx_reset(c);
    cq_ctx_set_grad(c, old);
    free(tg);
    free(nll);
    if (r) return r;
    *nll_sum = total;
    *n_pred = nw * (seqlen - 1);
    return CQ_OK;
}

int cq_trainer_eval(cq_trainer *t, double *mean_nll)
{
    CQ_CHECK_ARG(t && mean_nll, CQ_EINVAL);
    if (!t->val || t->n_val == 0) {
        cq_error("trainer: no validation tokens to evaluate on");
        return CQ_EINVAL;
    }
    size_t n = t->n_val;
    if (t->o.eval_tokens > 0 && (size_t)t->o.eval_tokens < n) n = (size_t)t->o.eval_tokens;
    double sum = 0;
    int64_t np = 0;
    int r = cq_eval_windows(t->ctx, t->model, t->val, n, t->o.seq, 0, t->o.batch, &sum, &np, NULL);
    if (r) return r;
    *mean_nll = sum / (double)np;
    return CQ_OK;
}

static size_t max_param_bytes(const cq_trainer *t)
{
    size_t mx = 0;
    for (int i = 0; i < t->n_ps; i++)
        if (cq_tensor_nbytes(t->ps[i].p) > mx) mx = cq_tensor_nbytes(t->ps[i].p);
    return mx;
}

/* best_file: the current weights, parameter after parameter, written
 * atomically (a crash leaves the previous best file whole) */
static int best_file_take(cq_trainer *t)
{
    float *tmp = malloc(max_param_bytes(t) + 1);
    if (!tmp) return CQ_ENOMEM;
    cq_afile f;
    int r = cq_afile_open(&f, t->o.best_file);
    if (r) {
        free(tmp);
        return r;   /* cq_afile_open named the file */
    }
    for (int i = 0; i < t->n_ps && !r; i++) {
        size_t nb = cq_tensor_nbytes(t->ps[i].p);
        r = cq_tensor_get(t->ps[i].p, tmp, nb);
        if (!r) r = cq_afile_write(&f, tmp, nb);
    }
    if (r) {
        cq_afile_abort(&f);
        cq_error("%s: cannot write the best weights (%s)", t->o.best_file, cq_strerror(r));
    } else if ((r = cq_afile_commit(&f))) {
        cq_error("%s: cannot write the best weights (%s)", t->o.best_file, cq_strerror(r));
    }
    free(tmp);
    return r;
}

/* best_file: opened for reading, checked to hold every parameter */
static int best_file_open(const cq_trainer *t, FILE **out)
{
    size_t total = 0;
    for (int i = 0; i < t->n_ps; i++) total += cq_tensor_nbytes(t->ps[i].p);
    FILE *fp = fopen(t->o.best_file, "rb");
    if (!fp) {
        cq_error("%s: cannot open the best weights: %s", t->o.best_file, strerror(errno));
        return CQ_EIO;
    }
    if (fseeko(fp, 0, SEEK_END) != 0 || ftello(fp) != (off_t)total || fseeko(fp, 0, SEEK_SET) != 0) {
        cq_error("%s: the best-weights file does not hold this model's %zu bytes", t->o.best_file, total);
        fclose(fp);
        return CQ_EBADMSG;
    }
    *out = fp;
    return CQ_OK;
}

static int best_file_read(FILE *fp, const char *path, void *dst, size_t nb)
{
    if (fread(dst, 1, nb, fp) != nb) {
        cq_error("%s: short read of the best weights", path);
        return CQ_EIO;
    }
    return CQ_OK;
}

/* the current weights become the best copy (host memory or best_file) */
static int take_best(cq_trainer *t)
{
    t->have_best = false;   /* until every copy is complete */
    if (t->o.best_file) {
        int r = best_file_take(t);
        if (!r) t->have_best = true;
        return r;
    }
    for (int i = 0; i < t->n_ps; i++) {
        tparam *tp = &t->ps[i];
        size_t n = (size_t)cq_tensor_numel(tp->p);
        if (!tp->best && !(tp->best = malloc(n * sizeof(float) + 1))) return CQ_ENOMEM;
        int r = cq_tensor_get(tp->p, tp->best, n * sizeof(float));
        if (r) return r;
    }
    t->have_best = true;
    return CQ_OK;
}

static int remember_best(cq_trainer *t, double v)
{
    if (!(v < t->best_val)) return CQ_OK;
    t->best_val = v;
    if (!t->o.keep_best) return CQ_OK;
    return take_best(t);
}

int cq_trainer_seed_best(cq_trainer *t, double val)
{
    CQ_CHECK_ARG(t && isfinite(val), CQ_EINVAL);
    if (!t->o.keep_best) {
        cq_error("trainer: seed_best needs keep_best");
        return CQ_EINVAL;
    }
    t->best_val = val;
    return take_best(t);
}

int cq_trainer_restore_best(cq_trainer *t)
{
    CQ_CHECK_ARG(t, CQ_EINVAL);
    if (!t->o.keep_best || !t->have_best) {
        cq_error("trainer: no best weights kept (keep_best off or no evaluation ran)");
        return CQ_EINVAL;
    }
    if (t->o.best_file) {
        FILE *fp = NULL;
        float *tmp = malloc(max_param_bytes(t) + 1);
        int r = tmp ? best_file_open(t, &fp) : CQ_ENOMEM;
        for (int i = 0; i < t->n_ps && !r; i++) {
            size_t nb = cq_tensor_nbytes(t->ps[i].p);
            r = best_file_read(fp, t->o.best_file, tmp, nb);
            if (!r) r = cq_tensor_set(t->ps[i].p, tmp, nb);
        }
        if (fp) fclose(fp);
        free(tmp);
        return r;
    }
    for (int i = 0; i < t->n_ps; i++) {
        int r = cq_tensor_set(t->ps[i].p, t->ps[i].best, cq_tensor_nbytes(t->ps[i].p));
        if (r) return r;
    }
    return CQ_OK;
}

int cq_trainer_run(cq_trainer *t)
{
    CQ_CHECK_ARG(t, CQ_EINVAL);
    const cq_train_opts *o = &t->o;
    double t0 = cq_time_sec();
    int64_t first = t->step;
    int64_t tok_per_step = o->batch * o->seq * o->accum;
    int r = CQ_OK;
    bool stop = false;
    while (t->step < o->steps && !r && !stop) {
        cq_train_progress p;
        r = cq_trainer_step(t, &p);
        if (r) break;
        double el = cq_time_sec() - t0;
        int64_t done = t->step - first;
        p.elapsed_s = el;
        p.tokens_per_s = el > 0 ? (double)(done * tok_per_step) / el : 0;
        p.eta_s = done > 0 ? el / (double)done * (double)(o->steps - t->step) : 0;
        if (o->progress && o->progress(&p, o->user)) stop = true;
        bool last = t->step == o->steps || stop;
        if (t->n_val && ((o->eval_every > 0 && t->step % o->eval_every == 0) || last)) {
            double v;
            r = cq_trainer_eval(t, &v);
            if (!r) r = remember_best(t, v);
            if (r) break;
            p.val_loss = v;
            p.evaluated = true;
            p.elapsed_s = cq_time_sec() - t0;
            if (o->progress && o->progress(&p, o->user)) stop = true;
        }
        if (o->ckpt_dir && ((o->save_every > 0 && t->step % o->save_every == 0) || last || stop))
            r = cq_trainer_save(t, o->ckpt_dir);
    }
    return r;
}

/* ------------------------------------------------------------ checkpoints */

typedef struct wbuf {
    cq_afile f;
    uint64_t h;
} wbuf;

static void fnv(uint64_t *h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 0x100000001b3ull;
    }
}

static int w_bytes(wbuf *w, const void *p, size_t n)
{
    fnv(&w->h, p, n);
    return cq_afile_write(&w->f, p, n);
}
static int w_u64(wbuf *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    return w_bytes(w, b, 8);
}
static int w_f64(wbuf *w, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return w_u64(w, u);
}
static int w_tensor(wbuf *w, const cq_tensor *t, float *tmp)
{
    size_t nb = cq_tensor_nbytes(t);
    int r = cq_tensor_get(t, tmp, nb);
    return r ? r : w_bytes(w, tmp, nb); /* f32, little-endian host */
}

static uint64_t shape_hash(const cq_trainer *t)
{
    uint64_t h = 0xcbf29ce484222325ull;
    const cq_llama_config *c = &t->model->cfg;
    int64_t f[] = { c->vocab, c->dim, c->ffn, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
                    c->tie_embeddings, t->o.keep_best };
    fnv(&h, f, sizeof f);
    for (int i = 0; i < t->n_ps; i++) {
        fnv(&h, t->ps[i].p->name, strlen(t->ps[i].p->name) + 1);
        fnv(&h, t->ps[i].p->ne, sizeof t->ps[i].p->ne);
        uint8_t tr = t->ps[i].train;
        fnv(&h, &tr, 1);
    }
    return h;
}

int cq_trainer_save(cq_trainer *t, const char *dir)
{
    CQ_CHECK_ARG(t && dir, CQ_EINVAL);
    int r = cq_mkdir_p(dir);
    if (r) {
        cq_error("%s: cannot create the checkpoint directory", dir);
        return r;
    }
    size_t maxn = 0;
    for (int i = 0; i < t->n_ps; i++)
        if (cq_tensor_nbytes(t->ps[i].p) > maxn) maxn = cq_tensor_nbytes(t->ps[i].p);
    float *tmp = malloc(maxn + 1);
    size_t pl = strlen(dir) + sizeof "/" CKPT_NAME;
    char *path = malloc(pl);
    if (!tmp || !path) {
        free(tmp);
        free(path);
        return CQ_ENOMEM;
    }
    snprintf(path, pl, "%s/%s", dir, CKPT_NAME);
    wbuf w = { .h = 0xcbf29ce484222325ull };
    r = cq_afile_open(&w.f, path);
    if (r) {
        free(tmp);
        free(path);
        return r;
    }
    FILE *bf = NULL;   /* best_file: read back in parameter order */
    if (t->have_best && t->o.best_file && (r = best_file_open(t, &bf))) {
        cq_afile_abort(&w.f);
        free(tmp);
        free(path);
        return r;
    }
    w_bytes(&w, CKPT_MAGIC, 8);
    w_u64(&w, CKPT_VERSION);
    w_u64(&w, shape_hash(t));
    w_u64(&w, (uint64_t)t->step);
    w_u64(&w, t->rng);
    w_u64(&w, (uint64_t)t->n_skipped);
    w_u64(&w, (uint64_t)t->n_bad_run);
    w_f64(&w, t->best_val);
    w_u64(&w, t->have_best);
    w_u64(&w, (uint64_t)t->n_ps);
    for (int i = 0; i < t->n_ps && !r; i++) {
        tparam *tp = &t->ps[i];
        r = w_tensor(&w, tp->p, tmp);
        for (int k = 0; k < 2 && !r && tp->train; k++) {
            r = state_get(t, tp, k, tmp);
            if (!r) r = w_bytes(&w, tmp, cq_tensor_nbytes(tp->p));
        }
        if (!r && t->have_best && bf) {
            r = best_file_read(bf, t->o.best_file, tmp, cq_tensor_nbytes(tp->p));
            if (!r) r = w_bytes(&w, tmp, cq_tensor_nbytes(tp->p));
        } else if (!r && t->have_best) {
            r = w_bytes(&w, tp->best, cq_tensor_nbytes(tp->p));
        }
    }
    if (bf) fclose(bf);
    uint64_t h = w.h;
    if (!r) r = w_u64(&w, h);
    if (!r) r = w.f.failed ? CQ_EIO : CQ_OK;
    if (r) cq_afile_abort(&w.f);
    else r = cq_afile_commit(&w.f);
    if (r) cq_error("%s: cannot write the checkpoint (%s)", path, cq_strerror(r));
    free(tmp);
    free(path);
    return r;
}

typedef struct rbuf {
    const uint8_t *p;
    size_t n, off;
    const char *path;
} rbuf;

static int r_bytes(rbuf *b, void *dst, size_t n)
{
    if (n > b->n - b->off) {
        cq_error("%s: truncated checkpoint (needs %zu bytes at offset %zu, file has %zu)", b->path, n, b->off, b->n);
        return CQ_EBADMSG;
    }
    if (dst) memcpy(dst, b->p + b->off, n);
    b->off += n;
    return CQ_OK;
}
static int r_u64(rbuf *b, uint64_t *v)
{
    uint8_t x[8];
    int r = r_bytes(b, x, 8);
    if (r) return r;
    *v = 0;
    for (int i = 0; i < 8; i++) *v |= (uint64_t)x[i] << (8 * i);
    return CQ_OK;
}

int cq_trainer_load(cq_trainer *t, const char *dir)
{
    CQ_CHECK_ARG(t && dir, CQ_EINVAL);
    size_t pl = strlen(dir) + sizeof "/" CKPT_NAME;
    char *path = malloc(pl);
    if (!path) return CQ_ENOMEM;
    snprintf(path, pl, "%s/%s", dir, CKPT_NAME);
    if (!cq_file_exists(path)) {
        cq_error("%s: no checkpoint to resume from", path);
        free(path);
        return CQ_ENOENT;
    }
    cq_mmap mm;
    int r = cq_mmap_open(&mm, path);
    if (r) {
        free(path);
        return r;
    }
    rbuf b = { mm.data, mm.size, 0, path };
    uint64_t h = 0xcbf29ce484222325ull, stored = 0;
    char magic[8] = { 0 };
    uint64_t ver = 0, sh = 0, step = 0, rng = 0, nsk = 0, nbad = 0, hb = 0, nps = 0, bv = 0;
    if (mm.size < 16) {
        cq_error("%s: truncated checkpoint (%zu bytes)", path, mm.size);
        r = CQ_EBADMSG;
        goto done;
    }
    fnv(&h, mm.data, mm.size - 8);
    memcpy(&stored, mm.data + mm.size - 8, 8); /* little-endian host */
    if (memcmp(mm.data, CKPT_MAGIC, 8) != 0) {
        cq_error("%s: not a cherryq trainer checkpoint", path);
        r = CQ_EBADMSG;
        goto done;
    }
    if (stored != h) {
        cq_error("%s: checkpoint checksum mismatch (corrupt or truncated file)", path);
        r = CQ_EBADMSG;
        goto done;
    }
    b.n = mm.size - 8;
    r = r_bytes(&b, magic, 8);
    if (!r) r = r_u64(&b, &ver);
    if (!r && ver != CKPT_VERSION) {
        cq_error("%s: checkpoint version %llu, expected %u", path, (unsigned long long)ver, CKPT_VERSION);
        r = CQ_EBADMSG;
    }
    if (!r) r = r_u64(&b, &sh);
    if (!r && sh != shape_hash(t)) {
        cq_error("%s: the checkpoint was made for another model shape or set of trained parameters", path);
        r = CQ_EBADMSG;
    }
    if (!r) r = r_u64(&b, &step);
    if (!r) r = r_u64(&b, &rng);
    if (!r) r = r_u64(&b, &nsk);
    if (!r) r = r_u64(&b, &nbad);
    if (!r) r = r_u64(&b, &bv);
    if (!r) r = r_u64(&b, &hb);
    if (!r) r = r_u64(&b, &nps);
    if (!r && (nps != (uint64_t)t->n_ps || hb > 1 || step > (uint64_t)INT64_MAX)) {
        cq_error("%s: checkpoint header is inconsistent", path);
        r = CQ_EBADMSG;
    }
    cq_afile bw;   /* best_file: the checkpoint's best weights go there */
    bool bw_open = false;
    if (!r && hb && t->o.best_file) {
        r = cq_afile_open(&bw, t->o.best_file);
        bw_open = !r;
    }
    for (int i = 0; i < t->n_ps && !r; i++) {
        tparam *tp = &t->ps[i];
        size_t nb = cq_tensor_nbytes(tp->p);
        size_t need = nb * (1 + (tp->train ? 2 : 0) + (hb ? 1 : 0));
        if (need > b.n - b.off) {
            r = r_bytes(&b, NULL, need);
            break;
        }
        r = cq_tensor_set(tp->p, b.p + b.off, nb);
        b.off += nb;
        if (!r && tp->train) { /* same layout with or without offload_optimizer */
            r = state_set(t, tp, 0, b.p + b.off);
            b.off += nb;
            if (!r) r = state_set(t, tp, 1, b.p + b.off);
            b.off += nb;
        }
        if (!r && hb && bw_open) {
            r = cq_afile_write(&bw, b.p + b.off, nb);
            b.off += nb;
        } else if (!r && hb) {
            if (!tp->best && !(tp->best = malloc(nb + 1))) r = CQ_ENOMEM;
            else memcpy(tp->best, b.p + b.off, nb);
            b.off += nb;
        }
    }
    if (!r && b.off != b.n) {
        cq_error("%s: %zu unexpected bytes at the end of the checkpoint", path, b.n - b.off);
        r = CQ_EBADMSG;
    }
    if (bw_open) {
        if (r) cq_afile_abort(&bw);
        else if ((r = cq_afile_commit(&bw))) cq_error("%s: cannot write the best weights (%s)", t->o.best_file, cq_strerror(r));
    }
    if (!r) {
        t->step = (int64_t)step;
        t->rng = rng;
        t->n_skipped = (int64_t)nsk;
        t->n_bad_run = (int64_t)nbad;
        if (hb || !t->have_best) {   /* a checkpoint without best weights keeps a seeded copy */
            memcpy(&t->best_val, &bv, 8);
            t->have_best = hb != 0;
        }
        r = zero_grads(t);
    }
done:
    cq_mmap_close(&mm);
    free(path);
    return r;
}
