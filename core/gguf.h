/* cherryq: GGUF reader (v2, v3; little-endian; memory-mapped) and a small
 * writer (F32/F16/BF16 tensors, any KV).
 *
 * File layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
 *   u32 magic "GGUF" (bytes 47 47 55 46), u32 version (2 or 3),
 *   u64 tensor_count, u64 kv_count,
 *   kv_count x { string key, u32 value_type, value },
 *   tensor_count x { string name, u32 n_dims (<= 4), u64 ne[n_dims],
 *                    u32 ggml_type, u64 offset },
 *   padding to general.alignment (default 32), then the data section;
 *   tensor offsets are relative to the data section and aligned.
 * string = u64 length + bytes (no NUL). array = u32 elem_type, u64 count,
 * elements. Nested arrays are refused (CQ_ENOTSUP), as llama.cpp does.
 *
 * Every length and count read from the file is checked against the bytes
 * left before it is used (a string length of 2^63 or an array count of 2^62
 * fails cleanly with CQ_EBADMSG, naming the file offset), counts are bounded
 * so count * element size cannot overflow, and each tensor's offset + size
 * must lie within the file. Quantized ggml types are listed with their block
 * sizes so their extents can be checked, but cq_gguf_get_tensor() only hands
 * out F32, F16 and BF16 data; others give CQ_ENOTSUP ("tensor X has ggml type
 * Q4_K (12), only F32/F16/BF16 are supported"). Unknown type ids fail the
 * open (their size cannot be checked).
 *
 * Dimension order. ggml's ne[0] is the fastest-varying (contiguous) dim, so
 * a PyTorch weight of shape [out, in] is stored with ne = {in, out} and the
 * same bytes (row-major [out][in]). cq_gguf_tensor.shape gives the PyTorch
 * order (ne reversed); .ne keeps ggml's.
 *
 * llama.cpp names for a LLaMA model (convert_hf_to_gguf.py):
 *   token_embd.weight            model.embed_tokens.weight
 *   blk.N.attn_norm.weight       model.layers.N.input_layernorm.weight
 *   blk.N.attn_q.weight          model.layers.N.self_attn.q_proj.weight  (*)
 *   blk.N.attn_k.weight          model.layers.N.self_attn.k_proj.weight  (*)
 *   blk.N.attn_v.weight          model.layers.N.self_attn.v_proj.weight
 *   blk.N.attn_output.weight     model.layers.N.self_attn.o_proj.weight
 *   blk.N.ffn_norm.weight        model.layers.N.post_attention_layernorm.weight
 *   blk.N.ffn_gate.weight        model.layers.N.mlp.gate_proj.weight
 *   blk.N.ffn_up.weight          model.layers.N.mlp.up_proj.weight
 *   blk.N.ffn_down.weight        model.layers.N.mlp.down_proj.weight
 *   output_norm.weight           model.norm.weight
 *   output.weight                lm_head.weight (absent when tied)
 * Metadata keys:
 *   general.architecture ("llama"), general.alignment (u32, optional),
 *   llama.context_length, llama.embedding_length, llama.block_count,
 *   llama.feed_forward_length, llama.attention.head_count,
 *   llama.attention.head_count_kv, llama.attention.layer_norm_rms_epsilon,
 *   llama.rope.freq_base,
 *   tokenizer.ggml.model ("llama" = SentencePiece, "gpt2" = BPE),
 *   tokenizer.ggml.tokens (string array), tokenizer.ggml.scores (f32 array),
 *   tokenizer.ggml.token_type (i32 array), tokenizer.ggml.bos_token_id,
 *   tokenizer.ggml.eos_token_id, tokenizer.ggml.unknown_token_id (u32).
 *
 * (*) Q/K row permutation. convert_hf_to_gguf.py permutes the rows of
 * q_proj and k_proj to turn HF's rotate-half RoPE layout (pairs (i, i+d/2)
 * within a head) into GGML's interleaved pairs (2i, 2i+1):
 *   w.reshape(n_head, 2, head_dim/2, in).swapaxes(1, 2).reshape(out, in)
 * i.e. permuted row h*hd + 2*i + j = original row h*hd + j*hd/2 + i, for
 * j in {0,1}, i < hd/2. For attn_k, n_head is head_count_kv.
 * cq_gguf_unpermute_qk() undoes it, so a model read from GGUF runs with our
 * HF-convention RoPE and gives the HF original's logits;
 * cq_gguf_permute_qk() applies it (for export).
 */
#ifndef CQ_GGUF_H
#define CQ_GGUF_H

#include "cq_base.h"

#define CQ_GGUF_MAX_DIMS 4
#define CQ_GGUF_DEFAULT_ALIGNMENT 32

typedef enum {
    CQ_GGUF_TYPE_UINT8 = 0,
    CQ_GGUF_TYPE_INT8 = 1,
    CQ_GGUF_TYPE_UINT16 = 2,
    CQ_GGUF_TYPE_INT16 = 3,
    CQ_GGUF_TYPE_UINT32 = 4,
    CQ_GGUF_TYPE_INT32 = 5,
    CQ_GGUF_TYPE_FLOAT32 = 6,
    CQ_GGUF_TYPE_BOOL = 7,
    CQ_GGUF_TYPE_STRING = 8,
    CQ_GGUF_TYPE_ARRAY = 9,
    CQ_GGUF_TYPE_UINT64 = 10,
    CQ_GGUF_TYPE_INT64 = 11,
    CQ_GGUF_TYPE_FLOAT64 = 12,
    CQ_GGUF_TYPE_COUNT
} cq_gguf_type;

/* ggml tensor types (ids as in ggml.h); only those cherryq reads by name. */
enum {
    CQ_GGML_F32 = 0,
    CQ_GGML_F16 = 1,
    CQ_GGML_Q4_0 = 2,
    CQ_GGML_Q8_0 = 8,
    CQ_GGML_Q4_K = 12,
    CQ_GGML_BF16 = 30,
};

CQ_API const char *cq_gguf_type_name(cq_gguf_type t);
/* "F32", "Q4_K", ... or NULL for an unknown id. */
CQ_API const char *cq_ggml_type_name(uint32_t ggml_type);

typedef struct cq_gguf_tensor {
    const char *name;
    uint32_t ggml_type;
    int ndim;
    int64_t ne[CQ_GGUF_MAX_DIMS];     /* ggml order; unused dims are 1 */
    int64_t shape[CQ_GGUF_MAX_DIMS];  /* PyTorch order: shape[i] = ne[ndim-1-i] */
    uint64_t numel;
    uint64_t offset;                  /* relative to the data section */
    const void *data;                 /* into the mapping (aligned as the file says) */
    size_t nbytes;
} cq_gguf_tensor;

typedef struct cq_gguf cq_gguf;

CQ_API int cq_gguf_open(cq_gguf **out, const char *path);
CQ_API void cq_gguf_close(cq_gguf **g);

CQ_API const char *cq_gguf_path(const cq_gguf *g);
CQ_API uint32_t cq_gguf_version(const cq_gguf *g);
CQ_API uint32_t cq_gguf_alignment(const cq_gguf *g);
CQ_API uint64_t cq_gguf_data_offset(const cq_gguf *g);

/* ------------------------------------------------------------ metadata
 * Getters return CQ_ENOENT without logging when the key is absent (so
 * optional keys are cheap to probe), and CQ_EINVAL, logged with the path,
 * key and stored type, when the stored type does not convert:
 *   u32/i32/u64/i64: any integer type whose value fits the result;
 *   f32/f64: FLOAT32 or FLOAT64;  bool: BOOL;  str: STRING.
 * Strings point into the mapping and are NOT NUL-terminated; use len. */
CQ_API size_t cq_gguf_kv_count(const cq_gguf *g);
CQ_API const char *cq_gguf_kv_key(const cq_gguf *g, size_t i);          /* NUL-terminated */
CQ_API cq_gguf_type cq_gguf_kv_type(const cq_gguf *g, size_t i);
CQ_API int cq_gguf_find_key(const cq_gguf *g, const char *key);           /* index or -1 */

CQ_API int cq_gguf_get_u32(const cq_gguf *g, const char *key, uint32_t *out);
CQ_API int cq_gguf_get_i32(const cq_gguf *g, const char *key, int32_t *out);
CQ_API int cq_gguf_get_u64(const cq_gguf *g, const char *key, uint64_t *out);
CQ_API int cq_gguf_get_i64(const cq_gguf *g, const char *key, int64_t *out);
CQ_API int cq_gguf_get_f32(const cq_gguf *g, const char *key, float *out);
CQ_API int cq_gguf_get_f64(const cq_gguf *g, const char *key, double *out);
CQ_API int cq_gguf_get_bool(const cq_gguf *g, const char *key, int *out);
CQ_API int cq_gguf_get_str(const cq_gguf *g, const char *key, const char **s, size_t *len);

/* Arrays: element type and count; then element access by index (CQ_EINVAL
 * when the index is out of range or the element type does not convert as
 * above). */
CQ_API int cq_gguf_get_arr(const cq_gguf *g, const char *key, cq_gguf_type *elem_type,
                           uint64_t *count);
CQ_API int cq_gguf_get_arr_str(const cq_gguf *g, const char *key, uint64_t i,
                               const char **s, size_t *len);
CQ_API int cq_gguf_get_arr_f32(const cq_gguf *g, const char *key, uint64_t i, float *out);
CQ_API int cq_gguf_get_arr_i32(const cq_gguf *g, const char *key, uint64_t i, int32_t *out);
/* Bulk copies of the first n elements (n <= count). */
CQ_API int cq_gguf_copy_arr_f32(const cq_gguf *g, const char *key, float *dst, uint64_t n);
CQ_API int cq_gguf_copy_arr_i32(const cq_gguf *g, const char *key, int32_t *dst, uint64_t n);

/* ------------------------------------------------------------ tensors */
CQ_API size_t cq_gguf_tensor_count(const cq_gguf *g);
CQ_API const cq_gguf_tensor *cq_gguf_tensor_at(const cq_gguf *g, size_t i);
/* NULL if absent; does not log; works for any ggml type. */
CQ_API const cq_gguf_tensor *cq_gguf_find_tensor(const cq_gguf *g, const char *name);
/* Checked access to readable data: CQ_ENOENT (logged) if absent, CQ_ENOTSUP
 * for a ggml type other than F32/F16/BF16; *dtype gets the cq_dtype. */
CQ_API int cq_gguf_get_tensor(const cq_gguf *g, const char *name, const cq_gguf_tensor **out,
                              cq_dtype *dtype);

/* ------------------------------------------------------------ Q/K permutation
 * rows = n_head * head_dim (head_dim even), cols = elements per row (1 for a
 * bias). dst and src must not overlap. CQ_EINVAL on bad sizes. */
CQ_API int cq_gguf_unpermute_qk(float *dst, const float *src, int64_t n_head, int64_t rows,
                                int64_t cols);
CQ_API int cq_gguf_permute_qk(float *dst, const float *src, int64_t n_head, int64_t rows,
                              int64_t cols);
/* Same for any element size (f16/bf16 rows). */
CQ_API int cq_gguf_unpermute_qk_bytes(void *dst, const void *src, size_t elem_size,
                                      int64_t n_head, int64_t rows, int64_t cols);
CQ_API int cq_gguf_permute_qk_bytes(void *dst, const void *src, size_t elem_size,
                                    int64_t n_head, int64_t rows, int64_t cols);

/* ------------------------------------------------------------ writer
 * Writes GGUF v3 atomically (temp file + rename; CQ_ENOSPC on a full disk,
 * previous file untouched). KVs and tensors are written in insertion order;
 * keys and tensor names must be unique. alignment 0 means 32; another value
 * (a power of two) is also stored as general.alignment. Tensor shapes are
 * given in PyTorch order; data must stay valid until cq_gguf_writer_write. */
typedef struct cq_gguf_writer cq_gguf_writer;

CQ_API int cq_gguf_writer_create(cq_gguf_writer **out, uint32_t alignment);
CQ_API void cq_gguf_writer_destroy(cq_gguf_writer **w);
/* Scalar of any non-array type: val points to a value of that type
 * (uint8_t, ..., double; int8_t (0/1) for BOOL; const char * for STRING). */
CQ_API int cq_gguf_writer_add_kv(cq_gguf_writer *w, const char *key, cq_gguf_type type,
                                 const void *val);
CQ_API int cq_gguf_writer_add_u32(cq_gguf_writer *w, const char *key, uint32_t v);
CQ_API int cq_gguf_writer_add_i32(cq_gguf_writer *w, const char *key, int32_t v);
CQ_API int cq_gguf_writer_add_f32(cq_gguf_writer *w, const char *key, float v);
CQ_API int cq_gguf_writer_add_str(cq_gguf_writer *w, const char *key, const char *v);
/* Array: elems points to n values of elem_type (const char *const * for
 * STRING; int8_t for BOOL). */
CQ_API int cq_gguf_writer_add_arr(cq_gguf_writer *w, const char *key, cq_gguf_type elem_type,
                                  const void *elems, uint64_t n);
/* ggml_type: CQ_GGML_F32, CQ_GGML_F16 or CQ_GGML_BF16. */
CQ_API int cq_gguf_writer_add_tensor(cq_gguf_writer *w, const char *name, uint32_t ggml_type,
                                     int ndim, const int64_t *shape, const void *data);
CQ_API int cq_gguf_writer_write(cq_gguf_writer *w, const char *path);

#endif
