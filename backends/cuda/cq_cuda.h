/* cherryq: public helpers of the CUDA backend beyond the registry entry
 * points of backends/backends.h. Available in every build: without
 * -Dcuda=true they report CQ_ENODEV (backends/stubs_cuda.c). */
#ifndef CQ_CUDA_H
#define CQ_CUDA_H

#include "cq_base.h"

/* Free and total memory of the CUDA device that CQ_CUDA_DEVICE / CQ_DEVICE
 * select (else device 0), in bytes. CQ_ENODEV without a driver or GPU. */
CQ_API int cq_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);

#endif
