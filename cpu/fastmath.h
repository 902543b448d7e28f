/* cherryq: branch-free exp that compilers vectorize (libm's expf does not
 * vectorize without -ffast-math). Cody-Waite reduction to r in
 * [-ln2/2, ln2/2] and a degree-6 Taylor polynomial: relative error below
 * 2e-7 over the clamped range; exp(x) for x < -87.3 flushes to ~0. */
#ifndef CQ_FASTMATH_H
#define CQ_FASTMATH_H

#include <stdint.h>
#include <string.h>

static inline float cq_fexp(float x)
{
    /* NaN-safe clamp: both comparisons are false for NaN, which lands on
     * the lower bound, so the float -> int conversion below never sees a
     * NaN (undefined behaviour, found by fuzz_llama_load on a model with a
     * NaN weight); the NaN itself is passed through at the end */
    float xc = x > -87.3f ? x : -87.3f;
    xc = xc < 88.7f ? xc : 88.7f;
    float kf = (xc * 1.44269504f + 12582912.0f) - 12582912.0f; /* round(x / ln2) */
    float r = xc - kf * 0.693145752f;                          /* ln2 hi */
    r = r - kf * 1.42860677e-06f;                             /* ln2 lo */
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t ki = (int32_t)kf;
    int32_t bits = (ki + 127) << 23;
    float s;
    memcpy(&s, &bits, 4);
    return x == x ? p * s : x;
}

static inline float cq_fsigmoid(float x) { return 1.0f / (1.0f + cq_fexp(-x)); }

#endif
