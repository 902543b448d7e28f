/* cherryq: the LLaMA-family transformer on the tensor core.
 *
 * Parameters carry their Hugging Face names ("model.embed_tokens.weight",
 * "model.layers.3.self_attn.q_proj.weight", "model.norm.weight",
 * "lm_head.weight"), so safetensors files map one to one. Parameters are f32
 * on the model's backend (master weights); loading converts f16/bf16.
 *
 * A linear weight can be in one of three states:
 *   dense      forward uses w                          (training, FP eval)
 *   fakequant  forward uses Q(w) with a cherry mask    (QAT: STE backward)
 *   packed     forward uses the mixed int-k matmul     (quantized inference)
 */
#ifndef CQ_LLAMA_H
#define CQ_LLAMA_H

#include "cq_ops.h"

#define CQ_LLAMA_N_LINEAR 7 /* q, k, v, o, gate, up, down */

typedef struct cq_llama_config {
    int64_t vocab;        /* vocab_size */
    int64_t dim;          /* hidden_size */
    int64_t ffn;          /* intermediate_size */
    int64_t n_layers;
    int64_t n_heads;
    int64_t n_kv_heads;
    int64_t head_dim;     /* dim / n_heads unless given */
    int64_t max_seq;      /* max_position_embeddings */
    float norm_eps;
    float rope_theta;
    cq_rope_scaling rope_scaling;   /* Hugging Face's rope_scaling (core/cq_rope.h) */
    bool tie_embeddings;
    int32_t bos, eos;     /* -1 if none */
} cq_llama_config;

/* Quantization of one linear weight during QAT / for packing. */
typedef struct cq_llama_qstate {
    int bits, group;      /* 0 bits = not quantized */
    cq_tensor *mask;      /* u8 [out, in] cherry mask on the backend, or NULL */
    cq_qlinear *packed;   /* non-NULL: forward runs on packed weights */
} cq_llama_qstate;

typedef struct cq_llama_layer {
    cq_tensor *attn_norm, *ffn_norm;
    cq_tensor *lin[CQ_LLAMA_N_LINEAR]; /* q k v o gate up down; NULL when packed-only */
    cq_llama_qstate q[CQ_LLAMA_N_LINEAR];
} cq_llama_layer;

typedef struct cq_llama {
    cq_llama_config cfg;
    cq_backend *be;
    cq_tensor *tok_emb;        /* [vocab, dim] */
    cq_tensor *norm;           /* [dim] */
    cq_tensor *lm_head;        /* [vocab, dim]; == tok_emb when tied */
    cq_llama_layer *layers;
    /* every parameter tensor, in a fixed order (embeddings, layers, norm,
     * lm_head if untied); names are the HF names */
    cq_tensor **params;
    int n_params;
    /* KV cache for generation: [B, max, Hkv, D] per layer, or NULL */
    cq_tensor **k_cache, **v_cache;
    int64_t cache_batch, cache_len;
    /* Training-memory options (docs/cuda.md, design (b)); zero = off. Set
     * them before a forward; they change the memory and the GEMM inputs of
     * cq_llama_forward / cq_llama_loss, not the parameters.
     *   checkpoint: activation checkpointing per decoder layer (cq_checkpoint):
     *     a forward without the KV cache keeps only each layer's input; the
     *     backward recomputes the layer (fake-quantization included) right
     *     before its own backward. Bitwise the same loss and gradients.
     *   xent_chunk > 0: cq_llama_loss computes the cross-entropy this many
     *     tokens at a time (cq_linear_xent), so the [tokens, vocab] logits
     *     never exist at once (same loss/grads up to summation order).
     *   compute: dtype of the GEMM inputs of every linear (CQ_F32 = 0, or
     *     CQ_BF16 / CQ_F16): the activation and the (fake-quantized) f32
     *     weight are converted per GEMM, the GEMM accumulates in f32, and the
     *     gradients reach the f32 master weights through the conversion. */
    bool checkpoint;
    int64_t xent_chunk;
    cq_dtype compute;
} cq_llama;

/* Suffixes of the linear weights, in lin[] order. */
extern const char *const cq_llama_linear_names[CQ_LLAMA_N_LINEAR];

/* Checks sizes and divisibility; logs the offending field. */
CQ_API int cq_llama_config_validate(const cq_llama_config *cfg);
/* Parameter count (tied lm_head counted once). */
CQ_API int64_t cq_llama_config_n_params(const cq_llama_config *cfg);

/* Random init as Hugging Face does for LlamaForCausalLM (normal(0, std)
 * for every matrix, norms = 1), deterministic from seed. */
CQ_API int cq_llama_create(cq_llama **out, const cq_llama_config *cfg, cq_backend *be, uint64_t seed);
CQ_API void cq_llama_destroy(cq_llama **m);

/* Load a model: a Hugging Face directory (config.json + model.safetensors or
 * sharded *.safetensors + index), a cherryq quantized directory (config.json
 * with quantization_config: linear weights are loaded packed), or a GGUF
 * file (llama architecture, F32/F16/BF16 tensors). Shapes are checked
 * against the config; errors name the file and tensor. */
CQ_API int cq_llama_load(cq_llama **out, const char *path, cq_backend *be);

/* Save as a Hugging Face directory: config.json + model.safetensors (f32 or
 * f16 per `dtype`), atomically per file. extra_config_json (may be NULL) is
 * merged into config.json (e.g. "quantization_config"). */
CQ_API int cq_llama_save(const cq_llama *m, const char *dir, cq_dtype dtype, const char *extra_config_json);

/* Find a parameter by HF name (NULL if none). */
CQ_API cq_tensor *cq_llama_param(const cq_llama *m, const char *name);

/* Forward: ids i32 [B, T] (on the model backend) at positions pos0.. ->
 * logits [B, T, vocab]. use_cache: read/append the KV cache (generation;
 * pos0 must equal the number of cached positions). Records on the tape when
 * the ctx has gradients enabled. */
CQ_API cq_tensor *cq_llama_forward(cq_ctx *c, cq_llama *m, cq_tensor *ids, int64_t pos0, bool use_cache);

/* Loss = scale * sum of next-token NLLs over [B, T] targets (target < 0 is
 * ignored). With scale = 1 this is the "summed NLL" of CherryQ's impact. */
CQ_API cq_tensor *cq_llama_loss(cq_ctx *c, cq_llama *m, cq_tensor *ids, cq_tensor *targets, float scale);

/* The final RMSNorm output [B, T, dim] (what the lm_head multiplies), with
 * the model's checkpoint/compute options. */
CQ_API cq_tensor *cq_llama_hidden(cq_ctx *c, cq_llama *m, cq_tensor *ids);

/* KV cache for generation: batch 1 (the only batch size supported), up to
 * max_len positions. */
CQ_API int cq_llama_cache_init(cq_llama *m, int64_t batch, int64_t max_len);
CQ_API void cq_llama_cache_reset(cq_llama *m);

/* Enable gradients on every parameter (allocates grads). */
CQ_API int cq_llama_enable_grad(cq_llama *m);
CQ_API int cq_llama_zero_grad(cq_llama *m);

#endif
