/* cherryq: memory plan (see memplan.h).
 *
 * Activations. The tensor core keeps every op output owned by the context
 * until cq_ctx_reset, with or without the tape, so one forward of N = B*T
 * tokens holds, per token (f32 elements, models/llama.c cq_llama_forward):
 *   embedding                                   dim
 *   per layer:
 *     rmsnorm h                                 dim
 *     q, k, v projections (reshape is a view)   qd + 2 kvd
 *     rope(q), rope(k)                          qd + kvd
 *     attention output (flash-style: no T x T   qd    (+ Hq for the log-sum-exp
 *       matrix is kept)                               kept when recording)
 *     o projection, residual add                2 dim
 *     rmsnorm h                                 dim
 *     gate, up, swiglu                          3 ffn
 *     down projection, residual add             2 dim
 *     = a_layer = 5 dim + 3 qd + 3 kvd + 3 ffn  (+ Hq with gradients)
 *   final rmsnorm                               dim
 *   logits                                      vocab
 *   cross-entropy log-sum-exp (+ NLL in eval)   2
 * A_tok = layers * a_layer + 2 dim + vocab + 2.
 * Backward (core/ops.c cq_backward) gives every recorded tensor a gradient
 * of its own shape, also kept until the reset: activations with backward =
 * 2 * A_tok * N. QAT's linear() adds per forward a fake-quantized copy of
 * every linear weight (cq_fakequant output) and its gradient: 2 * Plin.
 *
 * Per command (bytes; f32 = 4):
 *   eval      4P + 4 A_tok N                         N = batch * seqlen
 *   generate  4P + KV 4*2*layers*seqlen*kvd + 4 A_tok seqlen (prefill)
 *   impact    4P weights + 4P grads + 4P Fisher + 4*2 A_tok seqlen
 *             + 4 samples (seqlen+1) token ids
 *   train     4P weights + 4P grads + 8P AdamW m, v + 4*2 A_tok N
 *             + 4 A_tok N: the trainer evaluates (batch B, no grad) on the
 *             same context, which caches the training buffers across the reset
 *   qat       train + Plin masks (u8) + 4P best weights (keep_best; the
 *             RTN start seeds them, no second copy)
 *             + 4*2 Plin fake-quant copies and their grads;
 *             cherryq also runs impact first: max(impact, qat)
 *   gptq      4P + captured layer inputs 4 samples seqlen dim
 *             + Hessians 8 (2 dim^2 + qd^2 + ffn^2) (double, q/k/v and
 *               gate/up share theirs) + 8 maxin^2 (tmp, Hf f32)
 *             + cq_gptq_quantize 20 maxin^2 (X, Hd double; U f32)
 *             + 4 largest linear (download) + one layer forward 4 a_layer T
 *   rtn       4P + one f32 linear copy + the packed output
 *   packed weights (a quantized directory): 4 (P - Plin) + Plin (bits/8 +
 *   2/group + 11/256): an FP16 scale per group (the format has no zero
 *   point), and the default 1/256 cherries at 6 bytes each in memory (u16
 *   column, f32 delta) plus up to 5 in the CPU's cherry lanes (cpu/qmm.h).
 * train/QAT memory options (docs/memplan.md):
 *   checkpoint: activations = 4 (L+1) dim N layer inputs kept
 *             + 4*6 dim N (final norm, its gradient, residual gradients, and
 *               the [N, dim] buffers the ctx cache keeps across phases)
 *             + 4*2 (a_layer + Hq + dim) N: ONE layer recomputed with its
 *               gradients (the residual adds copy two dim-wide gradients)
 *             + logits and their gradient 4*2 V N (or chunked, below)
 *             + the embedding's gradient scatter buffer 4 V dim
 *             + QAT: one layer's fake-quantized weights and grads 8 Plin/L
 *             + the trainer's evaluation (no grad, same context): its logits
 *               and NLL 4 (V+2) N (the rest reuses the cached training buffers);
 *   xent_chunk C: logits and their gradient 4*2 V min(C, N) instead of N;
 *   compute_bytes 2: per linear input a bf16 copy and its f32 gradient,
 *             6 (2 dim + qd + ffn) per token and layer, and of every weight
 *             6 Plin/L per layer (one layer with checkpointing, all without),
 *             + the lm_head 2 V dim (+ 4 V dim gradient unchunked);
 *   offload: AdamW m, v move to host memory (8P, pinned on CUDA); the device
 *             keeps a staging pair of the largest parameter, 8 maxparam.
 *   QAT's host copy of the best weights (keep_best, seeded with the RTN
 *   starting point, so it is also the start cq_qat_train falls back to) is
 *   malloc'ed: 4P host whatever the backend; best_on_disk: in a file, 0.
 * Plus a fixed 64 MiB for the process itself (code, OpenBLAS buffers, the
 * tokenizer), as models/llama_io.c's load check uses.
 * Not counted: the corpus text and token ids of train/quantize (their size
 * is the data's, not the model's).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cq_io.h"
#include "hfconfig.h"
#include "memplan.h"

static const char *const plan_names[CQ_PLAN_N] = { "eval", "generate", "impact", "train", "qat", "gptq", "rtn" };

const char *cq_plan_cmd_name(cq_plan_cmd cmd)
{
    return cmd >= 0 && cmd < CQ_PLAN_N ? plan_names[cmd] : "?";
}

#define OVERHEAD (64.0 * 1024 * 1024)

int cq_memplan_estimate(const cq_llama_config *cf, cq_plan_cmd cmd, const cq_plan_opts *o, cq_plan_est *est)
{
    CQ_CHECK_ARG(cf && o && est && cmd >= 0 && cmd < CQ_PLAN_N, CQ_EINVAL);
    memset(est, 0, sizeof *est);
    if (cq_llama_config_validate(cf)) return CQ_EINVAL;
    double dim = (double)cf->dim, ffn = (double)cf->ffn, L = (double)cf->n_layers, V = (double)cf->vocab;
    double qd = (double)cf->n_heads * (double)cf->head_dim, kvd = (double)cf->n_kv_heads * (double)cf->head_dim;
    double Hq = (double)cf->n_heads;
    double P = (double)cq_llama_config_n_params(cf);
    double Plin = L * (2 * dim * qd + 2 * dim * kvd + 3 * dim * ffn);
    double T = (double)(o->seqlen > 0 && o->seqlen <= cf->max_seq ? o->seqlen : cf->max_seq);
    double B = (double)(o->batch > 0 ? o->batch : 1);
    if (cmd == CQ_PLAN_EVAL && o->batch <= 0) B = T >= 2048 ? 1 : (double)(2048 / (int64_t)T); /* eval's default */
    double S = (double)(o->samples > 0 ? o->samples : 128);
    double bits = o->bits > 0 ? o->bits : 4, group = o->group > 0 ? o->group : 128;
    double maxin = dim > qd ? dim : qd;
    if (ffn > maxin) maxin = ffn;
    double largest = dim * (qd > ffn ? qd : ffn); /* largest linear */
    double a_layer = 5 * dim + 3 * qd + 3 * kvd + 3 * ffn;
    double a_tok = L * a_layer + 2 * dim + V + 2;      /* no tape */
    double a_tok_g = L * (a_layer + Hq) + 2 * dim + V + 2; /* recording */
    double packed_w = 4 * (P - Plin) + Plin * (bits / 8 + 2 / group + 11.0 / 256);
    double w = o->packed ? packed_w : 4 * P;
    double host_only = 0; /* what is malloc'ed on the host whatever the backend */
    double state = 0, act = 0;

    switch (cmd) {
    case CQ_PLAN_EVAL: act = 4 * a_tok * B * T; break;
    case CQ_PLAN_GENERATE:
        state = 4 * 2 * L * T * kvd;
        act = 4 * a_tok * T;
        break;
    case CQ_PLAN_IMPACT:
        w = 4 * P;
        state = 4 * P;            /* grads */
        host_only = 4 * P + 4 * S * (T + 1); /* Fisher (calloc'ed) + token ids */
        act = 4 * 2 * a_tok_g * T;
        break;
    case CQ_PLAN_TRAIN:
    case CQ_PLAN_QAT: {
        bool qat = cmd == CQ_PLAN_QAT;
        double N = B * T, Nx = o->xent_chunk > 0 && o->xent_chunk < N ? (double)o->xent_chunk : N;
        double maxparam = V * dim > largest ? V * dim : largest;
        bool half = o->compute_bytes == 2;
        double lin_in = 2 * dim + qd + ffn; /* elements entering the 7 linears per token and layer */
        w = 4 * P;
        state = 4 * P;                                   /* grads */
        if (o->offload) {
            state += 8 * maxparam;                       /* device staging of m, v */
            host_only += 8 * P;                          /* m, v */
        } else {
            state += 8 * P;
        }
        if (qat) {
            state += Plin;                               /* cherry masks (u8) */
            if (!o->best_on_disk) host_only += 4 * P;    /* best weights (seeded with the RTN start) */
        }
        if (o->checkpoint) {
            act = 4 * (L + 1) * dim * N + 4 * 6 * dim * N + 4 * 2 * (a_layer + Hq + dim) * N + 4 * 2 * V * Nx +
                  4 * V * dim + 4 * (V + 2) * N;
            if (qat) act += 8 * Plin / L;
            if (half) act += 6 * lin_in * N + 6 * Plin / L;
        } else {
            act = 4 * 2 * a_tok_g * N - 4 * 2 * V * N + 4 * 2 * V * Nx + 4 * a_tok * N;
            if (qat) act += 8 * Plin;
            if (half) act += 6 * lin_in * N * L + 6 * Plin;
        }
        if (half) act += 2 * V * dim + (Nx < N ? 0 : 4 * V * dim);
        break;
    }
    case CQ_PLAN_GPTQ:
        w = 4 * P;
        host_only = 4 * S * T * dim + 8 * (2 * dim * dim + qd * qd + ffn * ffn) + 8 * maxin * maxin +
                    20 * maxin * maxin + 4 * largest + 4 * S * (T + 1);
        act = 4 * a_layer * T;
        break;
    case CQ_PLAN_RTN:
        w = 4 * P;
        host_only = 4 * largest;
        state = packed_w;
        break;
    default: return CQ_EINVAL;
    }
    est->params = P;
    est->weights = w;
    est->state = state + host_only;
    est->activations = act;
    if (o->device) {
        est->device = w + state + act;
        est->host = OVERHEAD + host_only + 8 * (V * dim > largest ? V * dim : largest);
    } else {
        est->device = 0;
        est->host = OVERHEAD + host_only + w + state + act;
    }
    return CQ_OK;
}

/* ------------------------------------------------------------ config */

static int64_t jint(const cJSON *o, const char *k, int64_t def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    /* a huge or non-finite number (1e308) would be undefined behaviour to
     * convert: clamp it; the config's validation then refuses it */
    if (!cJSON_IsNumber(v)) return def;
    double d = v->valuedouble;
    if (!(d > -9.0e15)) return d < 0 ? INT32_MIN : def;
    return d < 9.0e15 ? (int64_t)d : INT32_MAX;
}

static void quant_info(const cJSON *root, bool *packed, int *bits, int *group)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!cJSON_IsObject(q)) return;
    if (packed) *packed = true;
    if (bits) *bits = (int)jint(q, "bits", 4);
    if (group) *group = (int)jint(q, "group_size", 128);
}

int cq_memplan_config_load(cq_llama_config *cf, const char *path, bool *packed, int *bits, int *group)
{
    CQ_CHECK_ARG(cf && path, CQ_EINVAL);
    memset(cf, 0, sizeof *cf);
    if (packed) *packed = false;
    size_t pl = strlen(path);
    if (pl >= 5 && !strcmp(path + pl - 5, ".gguf")) return CQ_ENOTSUP;
    char file[4096];
    snprintf(file, sizeof file, "%s", path);
    {
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/config.json", path);
        if (cq_file_exists(probe) && strlen(probe) < sizeof file) snprintf(file, sizeof file, "%s", probe);
    }
    char *text = NULL;
    size_t n = 0;
    int r = cq_read_file(file, &text, &n, 16u << 20);
    if (r) {
        cq_error("%s: cannot read the config: %s", file, cq_strerror(r));
        return r;
    }
    cJSON *root = cJSON_ParseWithLength(text, n);
    if (!cJSON_IsObject(root)) {
        cq_error("%s: not a JSON object", file);
        cJSON_Delete(root);
        free(text);
        return CQ_EBADMSG;
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "hidden_size")) {
        cq_hf_config h;
        cq_hf_config_init(&h);
        r = cq_hf_config_parse(&h, text, n, file);
        if (!r) {
            cf->vocab = h.vocab_size;
            cf->dim = h.hidden_size;
            cf->ffn = h.intermediate_size;
            cf->n_layers = h.num_hidden_layers;
            cf->n_heads = h.num_attention_heads;
            cf->n_kv_heads = h.num_key_value_heads;
            cf->head_dim = h.head_dim;
            cf->max_seq = h.max_position_embeddings;
            cf->norm_eps = (float)h.rms_norm_eps;
            cf->rope_theta = (float)h.rope_theta;
            cf->tie_embeddings = h.tie_word_embeddings;
            cf->bos = (int32_t)h.bos_token_id;
            cf->eos = (int32_t)h.eos_token_id;
            quant_info(root, packed, bits, group);
        }
    } else {
        /* a `cherryq train --config` file: flag names, train's defaults */
        cf->vocab = jint(root, "vocab", 0);
        cf->dim = jint(root, "dim", 0);
        cf->ffn = jint(root, "ffn", 0);
        cf->n_layers = jint(root, "layers", 0);
        cf->n_heads = jint(root, "heads", 0);
        cf->n_kv_heads = jint(root, "kv-heads", cf->n_heads);
        cf->head_dim = cf->n_heads > 0 ? cf->dim / cf->n_heads : 0;
        cf->max_seq = jint(root, "seq", 0);
        cf->norm_eps = 1e-5f;
        cf->rope_theta = 10000.0f;
        cf->bos = cf->eos = -1;
        if (cq_llama_config_validate(cf)) {
            cq_error("%s: neither a Hugging Face config.json (hidden_size, ...) nor a complete `cherryq train "
                     "--config` file (vocab, dim, ffn, layers, heads, seq)",
                     file);
            r = CQ_EBADMSG;
        }
    }
    cJSON_Delete(root);
    free(text);
    if (!r && cq_llama_config_validate(cf)) r = CQ_EBADMSG;
    return r;
}
