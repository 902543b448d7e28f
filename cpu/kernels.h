/* cherryq: optimized CPU kernels (OpenBLAS GEMMs, OpenMP threads). */
#ifndef CQ_CPU_KERNELS_H
#define CQ_CPU_KERNELS_H

#include "cq_tensor.h"

/* Runs a validated op on host-addressable tensors with the fast kernels;
 * falls back to the reference for ops without a dedicated kernel. */
int cq_cpu_compute(const cq_op *op);

#endif
