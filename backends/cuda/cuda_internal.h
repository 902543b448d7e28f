/* cherryq CUDA backend: private state and helpers shared by the host files
 * (cuda_device.c: devices and errors; cuda_backend.c: vtable and memory;
 * cuda_ops.c: op dispatch; cuda_blas.c: cuBLAS). Kernels: the .cu files in cuda/. */
#ifndef CQ_CUDA_INTERNAL_H
#define CQ_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backends.h"
#include "cq_tensor.h"
#include "cuda/cq_cuda_kernels.h"

typedef struct cq_cuda_ctx {
    int device;
    cudaStream_t stream;      /* every op of this backend runs in order on it */
    cublasHandle_t blas;      /* bound to `stream` */
    cudaMemPool_t pool;       /* device default pool, release threshold = max */
    int use_pool;             /* 0: plain cudaMalloc/cudaFree */
    int sync_each;            /* CQ_CUDA_SYNC=1: synchronize after every op */
    int cc_major, cc_minor, sm_count;
    char name[256];
} cq_cuda_ctx;

/* Log a failed CUDA runtime call ("CUDA: <what>: <name>: <string>") and map it
 * to a CQ_E* code. Returns 0 for cudaSuccess. */
int cq_cuda_err(cudaError_t e, const char *what);
/* Same for cuBLAS statuses. */
int cq_cublas_err(cublasStatus_t s, const char *what);
const char *cq_cublas_status_name(cublasStatus_t s);

/* Driver/runtime/device check shared by probe, devices and create: fills
 * *count, or returns CQ_ENODEV with `reason` set (never logs). */
int cq_cuda_runtime_check(int *count, char *reason, size_t n);
/* Resolve a device index: requested >= 0, or CQ_CUDA_DEVICE / CQ_DEVICE (an
 * index or a substring of the device name), else 0. */
int cq_cuda_pick_device(int requested, int count, int *out);
/* "sm_90, 132 SMs, 79.1 GiB, ..." */
void cq_cuda_describe(int dev, char *buf, size_t n);

/* Device memory in stream order (pool) with OOM handling: CQ_ENOMEM naming
 * the size and the device's free/total memory. */
int cq_cuda_malloc(cq_cuda_ctx *c, size_t bytes, void **p, const char *what);
void cq_cuda_mfree(cq_cuda_ctx *c, void *p);

/* Device pointer of a tensor's first element. */
static inline void *cq_cuda_ptr(const cq_tensor *t)
{
    return t ? (void *)((char *)t->buf->handle + t->offset) : NULL;
}

int cq_cuda_supports_op(cq_cuda_ctx *c, const cq_op *op);
int cq_cuda_compute_op(cq_cuda_ctx *c, const cq_op *op);
/* CQ_OP_MATMUL through cuBLAS. */
int cq_cuda_matmul(cq_cuda_ctx *c, const cq_op *op);
/* Batch path of CQ_OP_QMATMUL: dequantize tiles of rows, then SGEMM. */
int cq_cuda_qmatmul_gemm(cq_cuda_ctx *c, float *Y, const float *X, int64_t N, const cqk_qweight *w);

#endif
