/* cherryq: optimized CPU kernels (OpenBLAS GEMMs, OpenMP threads). */
#ifndef CQ_CPU_KERNELS_H
#define CQ_CPU_KERNELS_H

#include "cq_tensor.h"
#include "qmm.h"

/* Runs a validated op on host-addressable tensors with the fast kernels;
 * falls back to the reference for ops without a dedicated kernel. */
int cq_cpu_compute(const cq_op *op);

/* The packed weight of a validated QMATMUL (cq_tensor.h: src[1] codes,
 * src[2] scales, src[3..5] the cherries or NULL) as cpu/qmm.h takes it. */
cq_qmm_w cq_cpu_qmm_w(const cq_op *op);

#endif
