/* cherryq: the CUDA helpers of backends/cuda/cq_cuda.h in a build without
 * CUDA (-Dcuda=false). The registry entry points of backends/backends.h are
 * stubbed in backends/stubs.c. */
#include "cuda/cq_cuda.h"

/* weak: see backends/stubs.c */
__attribute__((weak)) int cq_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    if (free_bytes) *free_bytes = 0;
    if (total_bytes) *total_bytes = 0;
    cq_error("the CUDA backend is not built into this cherryq (configure with -Dcuda=true)");
    return CQ_ENODEV;
}
