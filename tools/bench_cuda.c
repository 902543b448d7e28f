/* cherryq: speed of the fused CUDA mixed int-k + FP16-sparse GEMV (decoding,
 * N = 1) against the memory bandwidth of the GPU and against cuBLAS's f16
 * GEMV (cublasGemmEx with N = 1) on the same matrices, in the same run.
 *
 *   bench_cuda [--iters N] [--quick] [--variants "a 1 4 6"]
 *
 * --variants times each listed fast-GEMV variant (cuda/qmatmul_kernels.cuh
 * with_variant; "a": the automatic choice, cqk_qgemv_pick) on the same
 * weights, one line each, against one cuBLAS baseline per shape; default:
 * CQ_QGEMV_VARIANT, or the automatic choice. Each line also gives the time
 * of the same launches replayed from a CUDA graph (no host launch cost).
 *
 * Bandwidth references: the theoretical peak from the memory clock and bus
 * width, and a device-to-device copy measured here. Bytes counted for the
 * mixed GEMV: packed codes + FP16 scales + CSR cherries + x + y. Every timed
 * buffer set is rotated through copies that together exceed 4x the L2 cache,
 * so the figures are DRAM figures. The GEMV result is checked against a host
 * double-precision reference on a sample of rows before it is timed.
 * Exits 77 when there is no CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "backends.h"
#include "cq_tensor.h"
#include "cuda/cq_cuda_kernels.h"
#include "qmm.h"

/* inside bench_one: report and clean up */
#define CK(x)                                                                                        \
    do {                                                                                             \
        cudaError_t e_ = (x);                                                                        \
        if (e_ != cudaSuccess) {                                                                     \
            fprintf(stderr, "bench_cuda: %s failed: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); \
            goto done;                                                                               \
        }                                                                                            \
    } while (0)

static uint64_t g_rng = 0x12345678abcdefull;
static uint64_t rnd(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static float frand(void) { return (float)((rnd() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

typedef struct shape {
    int64_t out, in;
} shape;

typedef struct host_q {
    uint8_t *codes;
    uint16_t *scales;
    int32_t *rowptr;
    uint16_t *cols;
    float *delta, *x;
    double *xc;   /* the x the codes meet: x, or sx * xq for the int8 GEMVs (ref_row) */
    double *xc_exact, *xc_q8;
    int64_t row_bytes, ngroups, nnz;
} host_q;

static uint32_t code_at(const uint8_t *row, int64_t c, int bits)
{
    int64_t bit = c * bits, byte = bit >> 3;
    uint32_t v = row[byte] | ((uint32_t)row[byte + 1] << 8);   /* rows are padded by the caller */
    return (v >> (bit & 7)) & ((1u << bits) - 1u);
}

static double ref_row(const host_q *h, int64_t o, int64_t in, int bits, int group)
{
    double off = bits <= 4 ? (double)(1 << (bits - 1)) - 0.5 : 127.0, acc = 0;
    const uint8_t *row = h->codes + o * h->row_bytes;
    for (int64_t c = 0; c < in; c++) {
        double s = cq_f16_to_f32(h->scales[o * h->ngroups + (group ? c / group : 0)]);
        acc += ((double)code_at(row, c, bits) - off) * s * h->xc[c];
    }
    for (int32_t j = h->rowptr[o]; j < h->rowptr[o + 1]; j++) acc += (double)h->delta[j] * h->x[h->cols[j]];
    return acc;
}

static double peak_gbs(int dev)
{
    int memclk = 0, bus = 0;
    cudaDeviceGetAttribute(&memclk, cudaDevAttrMemoryClockRate, dev);
    cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, dev);
    return 2.0 * memclk * 1e3 * (bus / 8.0) / 1e9;
}

static double copy_gbs(cudaStream_t s)
{
    size_t bytes = (size_t)512 << 20;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
        cudaFree(a);
        cudaGetLastError();
        return 0;
    }
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s);
    cudaEventRecord(e0, s);
    for (int i = 0; i < 10; i++) cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, bytes, cudaMemcpyDeviceToDevice, s);
    cudaEventRecord(e1, s);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return ms > 0 ? 2.0 * 10 * bytes / (ms * 1e-3) / 1e9 : 0;   /* read + write */
}

/* Time per call of the same launches replayed from a CUDA graph: the
 * kernels' own throughput, without the host's launch rate (what a decoder
 * that captures its step in a graph sees). 0 when capture is refused. */
static double graph_time(cudaStream_t s, float *dy, const float *dx, const cqk_qweight *w, int ncopy, int iters,
                         cudaEvent_t e0, cudaEvent_t e1)
{
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    double t = 0;
    if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) goto out;
    for (int i = 0; i < iters; i++) cqk_qgemv(s, dy, dx, 1, &w[i % ncopy]);
    if (cudaStreamEndCapture(s, &g) != cudaSuccess || !g) goto out;
    if (cudaGraphInstantiate(&ge, g, 0) != cudaSuccess) goto out;
    if (cudaGraphLaunch(ge, s) != cudaSuccess) goto out;   /* warm-up */
    cudaEventRecord(e0, s);
    cudaGraphLaunch(ge, s);
    cudaEventRecord(e1, s);
    if (cudaEventSynchronize(e1) == cudaSuccess) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess) t = ms * 1e-3 / iters;
    }
out:
    if (ge) cudaGraphExecDestroy(ge);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    return t;
}

static int bench_one(cudaStream_t s, cublasHandle_t blas, int64_t out, int64_t in, int bits, int group, int iters,
                     size_t l2, double peak, double copybw, const int *variants, int nvariants)
{
    int rc = -1;
    host_q h = { 0 };
    h.row_bytes = bits == 3 ? (in + 7) / 8 * 3 : (in * bits + 7) / 8;
    h.ngroups = group ? (in + group - 1) / group : 1;
    const int64_t k = in / 256 > 0 ? in / 256 : 1;
    h.nnz = out * k;
    const size_t cb = (size_t)(out * h.row_bytes), sb = (size_t)(out * h.ngroups) * 2;
    const size_t rb = (size_t)(out + 1) * 4, colb = (size_t)h.nnz * 2, db = (size_t)h.nnz * 4;
    const size_t set_bytes = cb + sb + rb + colb + db;
    int ncopy = (int)((4 * l2 + set_bytes - 1) / set_bytes);
    if (ncopy < 2) ncopy = 2;
    if (ncopy > 64) ncopy = 64;
    const size_t wf16 = (size_t)(out * in) * 2;
    int ncopy16 = (int)((4 * l2 + wf16 - 1) / wf16);
    if (ncopy16 < 2) ncopy16 = 2;

    h.codes = malloc(cb + 8);
    h.scales = malloc(sb);
    h.rowptr = malloc(rb);
    h.cols = malloc(colb);
    h.delta = malloc(db);
    h.x = malloc((size_t)in * 4);
    uint16_t *hw16 = NULL, *hx16 = NULL;
    uint8_t *dq = NULL;
    float *dx = NULL, *dy = NULL, *dy16 = NULL;
    uint16_t *dw16 = NULL, *dx16 = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    float *hy = malloc((size_t)out * 4);
    if (!h.codes || !h.scales || !h.rowptr || !h.cols || !h.delta || !h.x || !hy) goto done;
    for (size_t i = 0; i < cb + 8; i++) h.codes[i] = (uint8_t)rnd();
    for (int64_t i = 0; i < out * h.ngroups; i++) h.scales[i] = cq_f32_to_f16(0.01f + 0.04f * fabsf(frand()));
    for (int64_t o = 0; o <= out; o++) h.rowptr[o] = (int32_t)(o * k);
    for (int64_t o = 0; o < out; o++)
        for (int64_t j = 0; j < k; j++) {
            h.cols[o * k + j] = (uint16_t)(j * (in / k) + (int64_t)(rnd() % (uint64_t)(in / k)));
            h.delta[o * k + j] = frand();
        }
    for (int64_t c = 0; c < in; c++) h.x[c] = frand();
    /* the reference of the int8 GEMVs is the CPU's int8 oracle
     * (cq_qmm_gemv_q8_ref): the codes against x quantized per 128 columns */
    h.xc_exact = malloc((size_t)in * sizeof(double));
    h.xc_q8 = malloc((size_t)in * sizeof(double));
    if (!h.xc_exact || !h.xc_q8) goto done;
    {
        int8_t *xq = malloc((size_t)in);
        float *sx = malloc((size_t)((in + CQ_QMM_Q8_BLOCK - 1) / CQ_QMM_Q8_BLOCK) * sizeof(float));
        if (!xq || !sx) {
            free(xq);
            free(sx);
            goto done;
        }
        cq_qmm_quant_x8(h.x, in, xq, sx);
        for (int64_t c = 0; c < in; c++) {
            h.xc_q8[c] = (double)sx[c / CQ_QMM_Q8_BLOCK] * xq[c];
            h.xc_exact[c] = h.x[c];
        }
        free(xq);
        free(sx);
    }

    /* device: ncopy packed weight sets back to back */
    const size_t stride = (set_bytes + 255) & ~(size_t)255;
    if (cudaMalloc((void **)&dq, stride * (size_t)ncopy) != cudaSuccess) {
        fprintf(stderr, "bench_cuda: cannot allocate %d weight copies of %zu bytes\n", ncopy, set_bytes);
        cudaGetLastError();
        goto done;
    }
    size_t offs[5] = { 0, 0, 0, 0, 0 };
    {
        size_t o = 0, sz[5] = { cb, sb, rb, colb, db };
        for (int i = 0; i < 5; i++) {
            offs[i] = o;
            o += (sz[i] + 15) & ~(size_t)15;
        }
        if (o > stride) {   /* alignment padding pushed past the stride: recompute */
            fprintf(stderr, "bench_cuda: internal layout error\n");
            goto done;
        }
        const void *src[5] = { h.codes, h.scales, h.rowptr, h.cols, h.delta };
        for (int c = 0; c < ncopy; c++)
            for (int i = 0; i < 5; i++)
                if (cudaMemcpy(dq + (size_t)c * stride + offs[i], src[i], sz[i], cudaMemcpyHostToDevice) != cudaSuccess)
                    goto done;
    }
    if (cudaMalloc((void **)&dx, (size_t)in * 4) != cudaSuccess || cudaMalloc((void **)&dy, (size_t)out * 4) != cudaSuccess)
        goto done;
    cudaMemcpy(dx, h.x, (size_t)in * 4, cudaMemcpyHostToDevice);

    cqk_qweight w[64];
    for (int c = 0; c < ncopy; c++) {
        uint8_t *base = dq + (size_t)c * stride;
        memset(&w[c], 0, sizeof w[c]);
        w[c].codes = base + offs[0];
        w[c].scales = (const uint16_t *)(base + offs[1]);
        w[c].rowptr = (const int32_t *)(base + offs[2]);
        w[c].cols = (const uint16_t *)(base + offs[3]);
        w[c].delta = (const float *)(base + offs[4]);
        w[c].nnz = h.nnz;
        w[c].out = out;
        w[c].in = in;
        w[c].row_bytes = h.row_bytes;
        w[c].ngroups = h.ngroups;
        w[c].group = group;
        w[c].bits = bits;
    }

    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    /* cuBLAS f16 GEMV: y[out] = W[out, in] x[in], f16 in, f32 out, f32 accumulate */
    double t_h = 0, gbs_h = 0;
    hw16 = malloc(wf16);
    hx16 = malloc((size_t)in * 2);
    if (hw16 && hx16 && cudaMalloc((void **)&dw16, wf16 * (size_t)ncopy16) == cudaSuccess &&
        cudaMalloc((void **)&dx16, (size_t)in * 2) == cudaSuccess &&
        cudaMalloc((void **)&dy16, (size_t)out * 4) == cudaSuccess) {
        for (int64_t i = 0; i < out * in; i++) hw16[i] = cq_f32_to_f16(frand() * 0.05f);
        for (int64_t i = 0; i < in; i++) hx16[i] = cq_f32_to_f16(h.x[i]);
        for (int c = 0; c < ncopy16; c++) CK(cudaMemcpy((char *)dw16 + (size_t)c * wf16, hw16, wf16, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dx16, hx16, (size_t)in * 2, cudaMemcpyHostToDevice));
        const float one = 1.0f, zero = 0.0f;
        cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
        for (int i = 0; i < 5 + iters && st == CUBLAS_STATUS_SUCCESS; i++) {
            if (i == 5) cudaEventRecord(e0, s);
            st = cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, 1, (int)in, &one,
                              (const char *)dw16 + (size_t)(i % ncopy16) * wf16, CUDA_R_16F, (int)in, dx16,
                              CUDA_R_16F, (int)in, &zero, dy16, CUDA_R_32F, (int)out, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT);
        }
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        if (st == CUBLAS_STATUS_SUCCESS) {
            float ms = 0;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            t_h = ms * 1e-3 / iters;
            gbs_h = (wf16 + in * 2.0 + out * 4.0) / t_h / 1e9;
        } else {
            fprintf(stderr, "bench_cuda: cublasGemmEx: %s\n", cublasGetStatusString(st));
        }
    } else {
        cudaGetLastError();
        fprintf(stderr, "bench_cuda: no memory for the f16 baseline of %lldx%lld\n", (long long)out, (long long)in);
    }

    float ms = 0;
    for (int vi = 0; vi < nvariants; vi++) {
        cqk_qgemv_set_variant(variants[vi]);
        h.xc = cqk_qgemv_variant_q8(cqk_qgemv_pick(out, in)) ? h.xc_q8 : h.xc_exact;
        /* correctness on a sample of rows */
        CK(cudaMemset(dy, 0xff, (size_t)out * 4));   /* NaN: a row the kernel skips fails */
        CK(cqk_qgemv(s, dy, dx, 1, &w[0]));
        CK(cudaStreamSynchronize(s));
        CK(cudaMemcpy(hy, dy, (size_t)out * 4, cudaMemcpyDeviceToHost));
        double maxerr = 0, maxref = 0;
        for (int64_t o = 0; o < out; o += (out / 61 > 0 ? out / 61 : 1)) {
            const double r = ref_row(&h, o, in, bits, group), e = fabs(r - hy[o]);
            maxerr = e == e ? fmax(maxerr, e) : INFINITY;   /* fmax would drop a NaN */
            maxref = fmax(maxref, fabs(r));
        }
        double nerr = maxerr / (maxref > 0 ? maxref : 1);
        if (!(nerr < 1e-4)) {
            fprintf(stderr, "bench_cuda: %lldx%lld b%d g%d, %s: GEMV result wrong (normalized error %.3g)\n",
                    (long long)out, (long long)in, bits, group, cqk_qgemv_path(&w[0]), nerr);
            goto done;
        }
        for (int i = 0; i < 5; i++) CK(cqk_qgemv(s, dy, dx, 1, &w[i % ncopy]));
        CK(cudaEventRecord(e0, s));
        for (int i = 0; i < iters; i++) cqk_qgemv(s, dy, dx, 1, &w[i % ncopy]);
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        CK(cudaGetLastError());
        CK(cudaEventElapsedTime(&ms, e0, e1));
        const double t_q = ms * 1e-3 / iters;
        const double bytes_q = (double)set_bytes + in * 4.0 + out * 4.0;
        const double gbs_q = bytes_q / t_q / 1e9;
        const double t_g = graph_time(s, dy, dx, w, ncopy, iters, e0, e1);
        printf("%6lld x %-6lld b%d g%-3d %-7s %8.1f us %7.0f GB/s %5.1f%% peak %5.1f%% copy | graph %6.1f us %5.1f%% "
               "peak | cuBLAS f16 %8.1f us %7.0f GB/s | speedup %.2fx  (err %.1e)\n",
               (long long)out, (long long)in, bits, group, cqk_qgemv_path(&w[0]), t_q * 1e6, gbs_q,
               peak > 0 ? 100 * gbs_q / peak : 0, copybw > 0 ? 100 * gbs_q / copybw : 0, t_g * 1e6,
               peak > 0 && t_g > 0 ? 100 * bytes_q / t_g / 1e9 / peak : 0, t_h * 1e6, gbs_h,
               t_h > 0 ? t_h / t_q : 0, nerr);
        fflush(stdout);
    }
    rc = 0;
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(dq);
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dw16);
    cudaFree(dx16);
    cudaFree(dy16);
    cudaGetLastError();
    free(h.codes);
    free(h.scales);
    free(h.rowptr);
    free(h.cols);
    free(h.delta);
    free(h.x);
    free(h.xc_exact);
    free(h.xc_q8);
    free(hw16);
    free(hx16);
    free(hy);
    return rc;
}

int main(int argc, char **argv)
{
    int iters = 200, quick = 0, variants[CQK_QGEMV_VARIANTS + 1], nvariants = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            iters = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--variants") && i + 1 < argc) {
            for (const char *p = argv[++i]; *p; p++) {
                if (*p == ' ' || *p == ',') continue;
                if ((*p != 'a' && (*p < '0' || *p >= '0' + CQK_QGEMV_VARIANTS)) || (p[1] && p[1] != ' ' && p[1] != ',') ||
                    nvariants == CQK_QGEMV_VARIANTS + 1) {
                    fprintf(stderr, "bench_cuda: --variants: \"%s\": want up to %d of a (the automatic choice), 0..%d\n",
                            argv[i], CQK_QGEMV_VARIANTS + 1, CQK_QGEMV_VARIANTS - 1);
                    return 2;
                }
                variants[nvariants++] = *p == 'a' ? CQK_QGEMV_AUTO : *p - '0';
            }
        } else {
            fprintf(stderr, "usage: bench_cuda [--iters N] [--quick] [--variants \"a 1 4 6\"]\n");
            return 2;
        }
    }
    if (!nvariants) variants[nvariants++] = cqk_qgemv_variant();   /* CQ_QGEMV_VARIANT, or the automatic choice */
    if (iters < 1) iters = 1;
    if (quick) iters = 20;
    cq_backend_info bi;
    if (cq_cuda_probe(&bi) != 0 || bi.n_devices == 0) {
        printf("bench_cuda: skipped: %s\n", bi.reason);
        return 77;
    }
    cq_backend *be = NULL;
    if (cq_backend_create(&be, "cuda", -1)) return 1;   /* picks the device (CQ_CUDA_DEVICE / CQ_DEVICE) */
    const int dev = be->device_index;
    printf("device: %s\n", be->device);
    cq_backend_destroy(&be);
    if (cudaSetDevice(dev) != cudaSuccess) return 1;
    int l2 = 0;
    cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev);
    cudaStream_t s;
    cublasHandle_t blas;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) return 1;
    if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) return 1;
    cublasSetStream(blas, s);
    const double peak = peak_gbs(dev), copybw = copy_gbs(s);
    printf("memory bandwidth: theoretical %.0f GB/s, measured device copy %.0f GB/s; L2 %d MiB\n", peak, copybw,
           l2 >> 20);
    printf("mixed GEMV (N=1, cherries in/256 per row) vs cuBLAS f16 GEMV (cublasGemmEx N=1), %d iterations\n",
           iters);
    static const shape shapes[] = { { 4096, 4096 }, { 11008, 4096 }, { 4096, 11008 }, { 14336, 4096 } };
    static const int bits[] = { 3, 4 };
    int fails = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int b = 0; b < 2; b++)
            if (bench_one(s, blas, shapes[i].out, shapes[i].in, bits[b], 128, iters, (size_t)l2, peak, copybw,
                          variants, nvariants))
                fails++;
    cublasDestroy(blas);
    cudaStreamDestroy(s);
    return fails ? 1 : 0;
}
