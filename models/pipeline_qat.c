/* cherryq: CherryQ / QAT training through the trainer, and self-generated
 * calibration text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cq_io.h"
#include "pipeline.h"
#include "train.h"

int cq_qat_train(cq_llama *m, const cq_qplan *p, const cq_qspec *s, const struct cq_train_opts *o,
                 const int32_t *train, size_t n_train, const int32_t *val, size_t n_val, bool resume,
                 cq_qat_result *res)
{
    CQ_CHECK_ARG(m && p && s && o && train && res, CQ_EINVAL);
    memset(res, 0, sizeof *res);
    if (!val || n_val < (size_t)o->seq) {
        cq_error("qat: a held-out calibration slice of at least one window (%lld tokens) is required",
                 (long long)o->seq);
        return CQ_EINVAL;
    }
    double t0 = cq_time_sec();
    cq_train_opts to = *o;
    to.keep_best = true;
    to.trainable = NULL; /* every parameter trains */
    int r = cq_qat_setup(m, p, s);
    if (r) return r;
    cq_trainer *t = NULL;
    r = cq_trainer_create(&t, m, &to, train, n_train, val, n_val);
    /* the RTN starting point: the fake-quant forward of the unchanged weights.
     * It seeds the trainer's best copy, so "keep the start if training never
     * beat it" needs no second host copy of the weights (4P bytes: 27 GB for
     * a 7B model). A resumed run's checkpoint brings its own best copy. */
    if (!r) r = cq_trainer_eval(t, &res->start_val);
    if (!r) r = cq_trainer_seed_best(t, res->start_val);
    if (!r && resume && to.ckpt_dir) {
        /* no checkpoint yet (killed before the first one) is not an error */
        size_t pl = strlen(to.ckpt_dir) + sizeof "/trainer.ckpt";
        char *ck = malloc(pl);
        if (!ck) r = CQ_ENOMEM;
        else snprintf(ck, pl, "%s/trainer.ckpt", to.ckpt_dir);
        if (!r && !cq_file_exists(ck)) {
            cq_info("qat: no checkpoint in %s; starting from step 0", to.ckpt_dir);
        } else if (!r) {
            r = cq_trainer_load(t, to.ckpt_dir);
            if (!r) res->resumed_at = cq_trainer_step_count(t);
        }
        free(ck);
    }
    if (!r) r = cq_trainer_run(t);
    if (!r) {
        res->steps = cq_trainer_step_count(t);
        res->best_val = cq_trainer_best_val(t);
        res->epochs = (double)res->steps * (double)(to.batch * to.seq * to.accum) / (double)n_train;
        /* the best copy is the start unless an evaluation beat it */
        r = cq_trainer_restore_best(t);
        if (res->best_val < res->start_val) {
            res->final_val = res->best_val;
        } else {
            cq_warn("qat: training never brought the held-out loss below the round-to-nearest start (%.4f); "
                    "keeping the starting point",
                    res->start_val);
            res->final_val = res->start_val;
            res->kept_start = true;
        }
    }
    cq_trainer_destroy(&t);
    cq_qat_clear(m);
    /* the training-memory options were for the QAT run only */
    m->checkpoint = false;
    m->xent_chunk = 0;
    m->compute = CQ_F32;
    res->seconds = cq_time_sec() - t0;
    return r;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int cq_self_generate(cq_llama *m, int64_t n_seq, int64_t len, uint64_t seed, int32_t **out, size_t *n,
                     cq_progress_fn fn, void *user)
{
    CQ_CHECK_ARG(m && out && n && n_seq > 0 && len > 1, CQ_EINVAL);
    if (len > m->cfg.max_seq) len = m->cfg.max_seq;
    int64_t V = m->cfg.vocab;
    int32_t *ids = malloc((size_t)(n_seq * len) * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof(float));
    double *pr = malloc((size_t)V * sizeof(double));
    cq_ctx *c = NULL;
    int r = ids && logits && pr ? CQ_OK : CQ_ENOMEM;
    if (!r) r = cq_ctx_create(&c, m->be);
    if (!r) cq_ctx_set_grad(c, false);
    uint64_t s = seed ^ 0x5E1F6E4ull;
    for (int64_t q = 0; !r && q < n_seq; q++) {
        r = cq_llama_cache_init(m, 1, len);
        int32_t *seq = ids + q * len;
        seq[0] = m->cfg.bos >= 0 ? m->cfg.bos : (int32_t)(splitmix(&s) % (uint64_t)V);
        for (int64_t pos = 0; !r && pos + 1 < len; pos++) {
            cq_ctx_reset(c);
            int64_t ne[2] = { 1, 1 };
            cq_tensor *x = cq_new(c, CQ_I32, 2, ne);
            if (!x) r = CQ_ENOMEM;
            if (!r) r = cq_tensor_set(x, &seq[pos], sizeof(int32_t));
            cq_tensor *lg = r ? NULL : cq_llama_forward(c, m, x, pos, true);
            if (!r && !lg) r = cq_ctx_status(c) ? cq_ctx_status(c) : CQ_EINVAL;
            if (!r) r = cq_tensor_get_f32(lg, logits);
            if (r) break;
            double mx = -INFINITY, sum = 0;
            for (int64_t v = 0; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
            for (int64_t v = 0; v < V; v++) sum += pr[v] = exp((double)logits[v] - mx);
            double u = ((double)(splitmix(&s) >> 11) / 9007199254740992.0) * sum, acc = 0;
            int64_t pick = V - 1;
            for (int64_t v = 0; v < V; v++) {
                acc += pr[v];
                if (u < acc) {
                    pick = v;
                    break;
                }
            }
            seq[pos + 1] = (int32_t)pick;
        }
        if (!r && fn) fn(user, "self-generate", q + 1, n_seq, 0);
    }
    cq_llama_cache_reset(m);
    cq_ctx_destroy(&c);
    free(logits);
    free(pr);
    if (r) {
        free(ids);
        return r;
    }
    *out = ids;
    *n = (size_t)(n_seq * len);
    return CQ_OK;
}
