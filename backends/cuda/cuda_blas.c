/* cherryq CUDA backend: cuBLAS glue.
 *
 * cuBLAS is column-major and our tensors are row-major. A row-major [R, C]
 * matrix is the column-major [C, R] matrix (its transpose) with leading
 * dimension C, so C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T:
 * the operands are swapped and no data moves. Math mode CUBLAS_DEFAULT_MATH
 * (set at creation): FP32 GEMMs do not silently use TF32. */
#include <limits.h>

#include "cuda_internal.h"

static int dims_fit(int64_t a, int64_t b, int64_t c) { return a <= INT_MAX && b <= INT_MAX && c <= INT_MAX; }

static cudaDataType cuda_type(cq_dtype t) { return t == CQ_F16 ? CUDA_R_16F : t == CQ_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* f32 copy of a contiguous float tensor (workspace from the pool). */
static int to_f32(cq_cuda_ctx *c, const cq_tensor *t, void **out)
{
    const int64_t n = cq_tensor_numel(t);
    int r = cq_cuda_malloc(c, (size_t)(n ? n : 1) * sizeof(float), out, "matmul f32 operand");
    if (r) return r;
    cqk_layout l = { 1, { n, 1, 1, 1 }, { 1, 0, 0, 0 } };
    r = cq_cuda_err(cqk_copy(c->stream, *out, CQK_F32, &l, cq_cuda_ptr(t), t->dtype, &l, n),
                    "matmul operand conversion to f32");
    if (r) {
        cq_cuda_mfree(c, *out);
        *out = NULL;
    }
    return r;
}

int cq_cuda_matmul(cq_cuda_ctx *c, const cq_op *op)
{
    const cq_tensor *A = op->src[0], *B = op->src[1];
    cq_tensor *C = op->dst[0];
    const int ta = op->i[0] != 0, tb = op->i[1] != 0;
    const int64_t batch = A->ndim == 3 ? A->ne[0] : 1, bb = B->ndim == 3 ? B->ne[0] : 1;
    const int64_t ar = A->ne[A->ndim - 2], ac = A->ne[A->ndim - 1];
    const int64_t br = B->ne[B->ndim - 2], bc = B->ne[B->ndim - 1];
    const int64_t M = ta ? ac : ar, K = ta ? ar : ac, N = tb ? br : bc;
    const float alpha = op->f[0], beta = op->f[1];
    if (M == 0 || N == 0 || batch == 0) return CQ_OK;
    if (!dims_fit(M, N, K) || !dims_fit(batch, ac, bc)) {
        cq_error("CUDA: matmul [%lld, %lld] x [%lld, %lld]: sizes exceed cuBLAS int limits", (long long)M,
                 (long long)K, (long long)K, (long long)N);
        return CQ_ENOTSUP;
    }
    if (K == 0) {   /* C = beta * C (reference: beta == 0 ignores C) */
        const int64_t n = batch * M * N;
        cudaError_t e = beta == 0.0f ? cqk_fill(c->stream, cq_cuda_ptr(C), CQK_F32, n, 0.0f)
                                     : cqk_scale(c->stream, cq_cuda_ptr(C), cq_cuda_ptr(C), n, beta, 0.0f);
        return cq_cuda_err(e, "matmul with K = 0");
    }
    const cublasOperation_t opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int lda = (int)ac, ldb = (int)bc, ldc = (int)N;
    const long long sA = (long long)(M * K), sB = bb == 1 ? 0 : (long long)(K * N), sC = (long long)(M * N);
    cublasStatus_t st;
    if (A->dtype == B->dtype && A->dtype != CQ_F32) {
        /* f16 x f16 or bf16 x bf16 -> f32 with f32 accumulation */
        const cudaDataType t = cuda_type(A->dtype);
        st = cublasGemmStridedBatchedEx(c->blas, opB, opA, (int)N, (int)M, (int)K, &alpha, cq_cuda_ptr(B), t, ldb,
                                        sB, cq_cuda_ptr(A), t, lda, sA, &beta, cq_cuda_ptr(C), CUDA_R_32F, ldc,
                                        sC, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        return cq_cublas_err(st, "cublasGemmStridedBatchedEx (matmul)");
    }
    /* f32, or mixed dtypes: bring the non-f32 operand to f32 first */
    void *wa = NULL, *wb = NULL;
    int r = CQ_OK;
    if (A->dtype != CQ_F32) r = to_f32(c, A, &wa);
    if (!r && B->dtype != CQ_F32) r = to_f32(c, B, &wb);
    if (!r) {
        const float *pa = wa ? wa : cq_cuda_ptr(A), *pb = wb ? wb : cq_cuda_ptr(B);
        st = cublasSgemmStridedBatched(c->blas, opB, opA, (int)N, (int)M, (int)K, &alpha, pb, ldb, sB, pa, lda, sA,
                                       &beta, cq_cuda_ptr(C), ldc, sC, (int)batch);
        r = cq_cublas_err(st, "cublasSgemmStridedBatched (matmul)");
    }
    cq_cuda_mfree(c, wa);
    cq_cuda_mfree(c, wb);
    return r;
}

/* Rows of the dequantized tile: at most this many bytes of f32 weights. */
#define CQ_CUDA_QTILE_BYTES ((size_t)64 << 20)

int cq_cuda_qmatmul_gemm(cq_cuda_ctx *c, float *Y, const float *X, int64_t N, const cqk_qweight *w)
{
    if (N == 0 || w->out == 0) return CQ_OK;
    if (w->in == 0)
        return cq_cuda_err(cqk_fill(c->stream, Y, CQK_F32, N * w->out, 0.0f), "qmatmul (in = 0)");
    if (!dims_fit(N, w->out, w->in)) {
        cq_error("CUDA: qmatmul N=%lld out=%lld in=%lld exceeds cuBLAS int limits", (long long)N,
                 (long long)w->out, (long long)w->in);
        return CQ_ENOTSUP;
    }
    int64_t rows = (int64_t)(CQ_CUDA_QTILE_BYTES / ((size_t)w->in * sizeof(float)));
    if (rows < 1) rows = 1;
    if (rows > w->out) rows = w->out;
    void *wt = NULL;
    int r = cq_cuda_malloc(c, (size_t)rows * (size_t)w->in * sizeof(float), &wt, "qmatmul dequantized tile");
    if (r) return r;
    const float one = 1.0f, zero = 0.0f;
    for (int64_t r0 = 0; r0 < w->out && !r; r0 += rows) {
        const int64_t nr = w->out - r0 < rows ? w->out - r0 : rows;
        r = cq_cuda_err(cqk_qdequant(c->stream, wt, r0, nr, w), "qmatmul dequantize");
        if (r) break;
        /* Y[:, r0:r0+nr] (row-major, ld out) = X [N, in] . Wt[nr, in]^T
         * column-major: Y^T[nr, N] = Wt^T' (op T of the [in, nr] view) . X^T [in, N] */
        cublasStatus_t st = cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, (int)N, (int)w->in, &one, wt,
                                        (int)w->in, X, (int)w->in, &zero, Y + r0, (int)w->out);
        r = cq_cublas_err(st, "cublasSgemm (qmatmul batch path)");
    }
    cq_cuda_mfree(c, wt);
    return r;
}
