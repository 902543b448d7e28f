/* cherryq: scalar reference kernels — the oracle every backend is tested
 * against. Plain loops, double accumulation where it matters, no threads. */
#ifndef CQ_CPU_REF_H
#define CQ_CPU_REF_H

#include "cq_tensor.h"

/* Runs a validated op on host-addressable tensors. */
int cq_ref_compute(const cq_op *op);

/* CherryQ quantizer for one row segment (shared by ref and CPU backend). */
void cq_ref_fakequant_rows(float *dst, const float *w, const uint8_t *mask, int64_t rows, int64_t cols,
                           int bits, int group, int fp16_scales);

/* Decode one code of a packed row (layout: docs/format.md). */
static inline uint32_t cq_ref_code(const uint8_t *row, int64_t j, int bits)
{
    if (bits == 3) {
        const uint8_t *p = row + (j / 8) * 3;
        uint32_t w = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
        return (w >> (3 * (j % 8))) & 7u;
    }
    int64_t bit = j * bits;
    return ((uint32_t)row[bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
}

#endif
