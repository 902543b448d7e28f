/* cherryq: memory plan -- the peak memory a command will need, estimated
 * from the model config before anything is allocated (issue 7 item 3), so
 * `cherryq plan` can print it and every command can refuse up front.
 *
 * Every figure is a formula of the config (models/memplan.c gives them with
 * the ops of models/llama.c they count). Sizes below: P = parameters
 * (cq_llama_config_n_params), Plin = parameters of the 7 linears of every
 * layer, qd = heads * head_dim, kvd = kv_heads * head_dim, N = batch * seqlen
 * tokens of one forward.
 *
 * Where the bytes live: on the CPU backend everything is host memory
 * (device = 0). On a device backend (cuda, vulkan) the parameters, optimizer
 * state and activations are device memory; the host keeps what the code
 * mallocs on the host (GPTQ's Hessians and captured activations, token ids)
 * plus two f32 copies of the largest tensor while loading.
 */
#ifndef CQ_MEMPLAN_H
#define CQ_MEMPLAN_H

#include "llama.h"

typedef enum {
    CQ_PLAN_EVAL,       /* cherryq eval: one no-grad forward of batch x seqlen */
    CQ_PLAN_GENERATE,   /* cherryq generate: KV cache of seqlen + prefill forward */
    CQ_PLAN_IMPACT,     /* cherryq impact: forward + backward, batch 1, Fisher */
    CQ_PLAN_TRAIN,      /* cherryq train: AdamW, forward + backward of batch x seqlen */
    CQ_PLAN_QAT,        /* quantize --method qat|cherryq: train + fake-quant + masks */
    CQ_PLAN_GPTQ,       /* quantize --method gptq */
    CQ_PLAN_RTN,        /* quantize --method rtn */
    CQ_PLAN_N
} cq_plan_cmd;

typedef struct cq_plan_opts {
    int64_t batch;      /* sequences per forward (eval, train, QAT); <= 0: 1
                         * (eval: its default, 2048 / seqlen windows) */
    int64_t seqlen;     /* tokens per sequence; <= 0 or > max_seq: max_seq */
    int64_t samples;    /* calibration windows (GPTQ captures them); <= 0: 128 */
    int bits, group;    /* quantization (packed eval/generate, RTN/GPTQ output) */
    bool packed;        /* the model's linears are packed (a quantized directory) */
    bool device;        /* the backend is a device (cuda, vulkan): split host/device */
    /* train / QAT memory options (models/llama.h, cq_train_opts) */
    bool checkpoint;    /* activation checkpointing per decoder layer */
    int64_t xent_chunk; /* > 0: cross-entropy this many tokens at a time */
    int compute_bytes;  /* 2: bf16/f16 GEMM inputs; else f32 */
    bool offload;       /* AdamW m, v in host memory, streamed through staging */
    bool best_on_disk;  /* QAT: the best-weights copy in a file, not host memory */
} cq_plan_opts;

typedef struct cq_plan_est {
    double params;       /* P */
    double weights;      /* bytes of the parameters as held (f32, or packed) */
    double state;        /* grads, Fisher, AdamW m/v, masks, Hessians, KV cache */
    double activations;  /* bytes of the activations at the peak */
    double host, device; /* totals in bytes; device = 0 on the CPU backend */
} cq_plan_est;

CQ_API const char *cq_plan_cmd_name(cq_plan_cmd cmd);

/* Fills *est; CQ_EINVAL when the config does not validate. */
CQ_API int cq_memplan_estimate(const cq_llama_config *cfg, cq_plan_cmd cmd, const cq_plan_opts *opts,
                               cq_plan_est *est);

/* Reads a model config without loading weights: a Hugging Face config.json
 * (or a directory holding one; a cherryq quantized directory sets *packed,
 * *bits and *group from its quantization_config), or a `cherryq train
 * --config` file (dim, layers, heads, kv-heads, ffn, vocab, seq). packed,
 * bits, group may be NULL. CQ_ENOENT / CQ_EBADMSG / CQ_ENOTSUP (GGUF). */
CQ_API int cq_memplan_config_load(cq_llama_config *cfg, const char *path, bool *packed, int *bits, int *group);

#endif
