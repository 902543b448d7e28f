/* cherryq: RoPE frequencies, shared by every backend (C, GLSL's host table,
 * CUDA kernels).
 *
 * inv_freq[j] = theta^(-2j/D) for j < D/2, computed in double and rounded
 * to f32 (as Hugging Face stores it), then Hugging Face's rope_scaling
 * (transformers' modeling_rope_utils) where a config asks for it:
 *   linear: inv_freq / factor;
 *   llama3 (LLaMA-3.1 / 3.2): with wavelen = 2 pi / inv_freq,
 *     wavelen < original_max / high_freq_factor: inv_freq (kept);
 *     wavelen > original_max / low_freq_factor:  inv_freq / factor;
 *     in between: (1 - s) inv_freq / factor + s inv_freq,
 *                 s = (original_max / wavelen - low_freq_factor)
 *                     / (high_freq_factor - low_freq_factor);
 *   evaluated in f32 as torch evaluates it on its f32 inv_freq tensor.
 * The scaling travels in the ROPE op as i[2] = type and f[1..4] = factor,
 * low_freq_factor, high_freq_factor, original_max_position_embeddings. */
#ifndef CQ_ROPE_H
#define CQ_ROPE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

enum { CQ_ROPE_PLAIN = 0, CQ_ROPE_LINEAR = 1, CQ_ROPE_LLAMA3 = 2 };

typedef struct cq_rope_scaling {
    int type;                  /* CQ_ROPE_* */
    float factor;              /* linear, llama3 */
    float low_freq_factor;     /* llama3 */
    float high_freq_factor;    /* llama3 */
    float original_max;        /* llama3: original_max_position_embeddings */
} cq_rope_scaling;

/* NULL when s is usable, else what is wrong with it (the op, the model
 * config and the Hugging Face config check the same rules). */
static inline const char *cq_rope_scaling_check(const cq_rope_scaling *s)
{
    if (s->type < CQ_ROPE_PLAIN || s->type > CQ_ROPE_LLAMA3) return "rope scaling type unknown";
    if (s->type != CQ_ROPE_PLAIN && !(s->factor > 0 && isfinite(s->factor)))
        return "rope_scaling \"factor\" must be positive and finite as a 32-bit float";
    if (s->type == CQ_ROPE_LLAMA3 && !(s->low_freq_factor > 0 && s->high_freq_factor > s->low_freq_factor &&
                                       isfinite(s->high_freq_factor) && s->original_max > 0 &&
                                       isfinite(s->original_max)))
        return "llama3 rope_scaling needs 0 < low_freq_factor < high_freq_factor and "
               "original_max_position_embeddings > 0";
    return NULL;
}

#if defined(__CUDACC__)
#define CQ_ROPE_FN __host__ __device__ static inline
#else
#define CQ_ROPE_FN static inline
#endif

CQ_ROPE_FN float cq_rope_inv_freq(float theta, int64_t D, int64_t j, int type, float factor, float lo, float hi,
                                  float orig)
{
    float inv = (float)(1.0 / pow((double)theta, (double)(2 * j) / (double)D));
    if (type == CQ_ROPE_LINEAR) return inv / factor;
    if (type != CQ_ROPE_LLAMA3) return inv;
    const float two_pi = (float)6.283185307179586;   /* 2 * math.pi, as a python float meets an f32 tensor */
    float wavelen = two_pi / inv;
    float low_wl = (float)((double)orig / (double)lo), high_wl = (float)((double)orig / (double)hi);
    if (wavelen > low_wl) return inv / factor;
    if (wavelen < high_wl) return inv;
    float s = (orig / wavelen - lo) / (float)((double)hi - (double)lo);
    return (1.0f - s) * inv / factor + s * inv;
}

#endif
