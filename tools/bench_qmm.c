/* bench_qmm: speed of the mixed int-k + FP16-sparse matmul (cpu/qmm.h).
 *
 * Prints the machine, then per thread count (1 and all) and LLaMA shape:
 *   GEMV time, effective GB/s of the bytes it must read (codes + scales +
 *   cherries + x) and that as a share of the read bandwidth measured in the
 *   same run (multi-threaded streaming sum over a 512 MiB buffer); speed-up
 *   over dense FP32 cblas_sgemv and over an FP16 GEMV (own F16C kernel) on the
 *   same shape; cherry cost (same matrix without cherries: passes with and
 *   without alternate, and the cost is the ratio of the best pass of each);
 *   the time of the exact f32 GEMV kernel (cq_qmm_set_exact) when the default
 *   GEMV is the int8-activation one; GEMM at 512 tokens as a share of
 *   cblas_sgemm's FLOP rate on the same shape. Where the int8 GEMV runs, the
 *   GEMV and GEMM are timed on the interleaved codes with cherry lanes
 *   (cq_qmm_il + cq_qmm_lanes_build, the form a model loaded on the CPU
 *   runs), and the int8 GEMV on the on-disk row layout (cherries by gathers)
 *   beside it (rows_us).
 * Every GEMV/GEMM timing rotates over enough copies of the weights to exceed
 * the last-level cache several times, so the weights come from DRAM as they do
 * in a real model. Times are medians over passes. The kernels' outputs are
 * checked against the scalar references (the int8 one for the int8 GEMV,
 * exit 1 on mismatch), so --quick also serves as a smoke test.
 *
 * --small instead times the int8 and the exact GEMV on small in-cache matrices
 * (the evidence for the per-matrix rule CQ_QMM_Q8_MIN_IN).
 *
 * --cherries random places each row's cherries at distinct uniformly random
 * columns instead of one per 256-column stripe (the default): more cherry
 * lane entries per chunk (a row may have several in one 128-column chunk),
 * so a harder case for the lanes.
 *
 * usage: bench_qmm [--quick] [--small] [--min] [--passes N] [--threads N]
 *                  [--cherries stripe|random]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "qmm.h"

/* ------------------------------------------------------------ helpers */

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static inline uint64_t rnd64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void *xalloc(size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "bench_qmm: out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

static void fill_random(void *p, size_t bytes)
{
    uint64_t *q = p;
    size_t n = bytes / 8;
    for (size_t i = 0; i < n; i++) q[i] = rnd64();
    for (size_t i = n * 8; i < bytes; i++) ((uint8_t *)p)[i] = (uint8_t)rnd64();
}

/* FP16 bits of a random normal value, |v| in [2^-8, 2^-4). */
static uint16_t rnd_f16(void)
{
    uint64_t r = rnd64();
    return (uint16_t)(((r & 1) << 15) | ((uint64_t)(7 + (r >> 1) % 4) << 10) | ((r >> 8) & 0x3FF));
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int g_use_min = 0;   /* --min: best pass instead of the median */
static int g_random_cherries = 0;   /* --cherries random */

/* The statistic of a series of pass times: median, or minimum with --min
 * (closer to the uncontended speed when other processes share the cores). */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_dbl);
    if (g_use_min) return v[0];
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void set_threads(int nt)
{
    omp_set_num_threads(nt);
    openblas_set_num_threads(nt);
}

static size_t g_llc = 32u << 20;     /* bytes of last-level cache */
static int g_passes = 7;

static void machine_info(void)
{
    char model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                char *c = strchr(line, ':');
                if (c) {
                    c += 2;
                    c[strcspn(c, "\n")] = 0;
                    snprintf(model, sizeof model, "%s", c);
                }
                break;
            }
        fclose(f);
    }
    for (int idx = 3; idx >= 2; idx--) {
        char path[128], buf[64];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", idx);
        f = fopen(path, "r");
        if (!f) continue;
        if (fgets(buf, sizeof buf, f)) {
            size_t v = (size_t)strtoull(buf, NULL, 10);
            if (strchr(buf, 'K')) v <<= 10;
            if (strchr(buf, 'M')) v <<= 20;
            if (v) g_llc = v;
        }
        fclose(f);
        break;
    }
    char load[128] = "?";
    f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fgets(load, sizeof load, f)) load[strcspn(load, "\n")] = 0;
        fclose(f);
    }
    printf("cpu: %s\n", model);
    printf("cores (OpenMP procs): %d, LLC %zu MiB\n", omp_get_num_procs(), g_llc >> 20);
    printf("qmm ISA: %s, OpenBLAS %s\n", cq_qmm_isa_name(cq_qmm_get_isa()), openblas_get_config());
    printf("GEMV path: %s\n", cq_qmm_get_isa() == CQ_ISA_AVX512VNNI
                                   ? "int8 activations (AVX512-VNNI), f32_us = the exact f32 kernel"
                                   : "f32 (exact)");
    printf("load average at start: %s\n", load);
}

/* ------------------------------------------------------------ read bandwidth */

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t sum_avx512(const uint64_t *p, size_t n)
{
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p + i)));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p + i + 8)));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p + i + 16)));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p + i + 24)));
    }
    /* not _mm512_reduce_add_epi64: GCC implements it with signed long long
     * adds, whose overflow is undefined (UBSan in build-asan); the wrapping
     * sum is what this checksum wants, so add the lanes as uint64_t */
    uint64_t t[8], s = 0;
    _mm512_storeu_si512((void *)t, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
    for (int k = 0; k < 8; k++) s += t[k];
    for (; i < n; i++) s += p[i];
    return s;
}

__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *p, size_t n)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const void *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const void *)(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const void *)(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const void *)(p + i + 12)));
    }
    uint64_t t[4], s = 0;
    _mm256_storeu_si256((void *)t, _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    for (int k = 0; k < 4; k++) s += t[k];
    for (; i < n; i++) s += p[i];
    return s;
}
#endif

static uint64_t sum_u64(const uint64_t *p, size_t n)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) return sum_avx512(p, n);
    if (__builtin_cpu_supports("avx2")) return sum_avx2(p, n);
#endif
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

/* Streaming read of n uint64 (64-byte aligned) by nt threads, contiguous
 * chunks (64-byte multiples); GB/s, median of the passes. */
static double read_bw(const uint64_t *buf, size_t n, int nt)
{
    double t[16];
    int reps = g_passes < 16 ? g_passes : 16;
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < reps; rep++) {
        uint64_t s = 0;
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt) reduction(+ : s)
        {
            int i = omp_get_thread_num(), T = omp_get_num_threads();
            size_t blocks = n / 8, b0 = blocks * i / T, b1 = blocks * (i + 1) / T;
            s += sum_u64(buf + b0 * 8, (b1 - b0) * 8);
        }
        t[rep] = omp_get_wtime() - t0;
        sink += s;
    }
    (void)sink;
    return (double)(n / 8 * 64) / median(t, reps) / 1e9;
}

/* ------------------------------------------------------------ FP16 GEMV */

#if defined(__x86_64__)
__attribute__((target("avx512f,f16c,fma"))) static void f16_rows_avx512(
    const uint16_t *W, const float *x, float *y, int64_t r0, int64_t r1, int64_t in)
{
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const uint16_t *w0 = W + r * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        int64_t j = 0;
        for (; j + 16 <= in; j += 16) {
            __m512 xv = _mm512_loadu_ps(x + j);
            a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const void *)(w0 + j))), xv, a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const void *)(w1 + j))), xv, a1);
            a2 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const void *)(w2 + j))), xv, a2);
            a3 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const void *)(w3 + j))), xv, a3);
        }
        float s[4] = { _mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),
                       _mm512_reduce_add_ps(a3) };
        for (; j < in; j++)
            for (int i = 0; i < 4; i++) s[i] += _cvtsh_ss(W[(r + i) * in + j]) * x[j];
        for (int i = 0; i < 4; i++) y[r + i] = s[i];
    }
    for (; r < r1; r++) {
        float s = 0.0f;
        for (int64_t j = 0; j < in; j++) s += _cvtsh_ss(W[r * in + j]) * x[j];
        y[r] = s;
    }
}

__attribute__((target("avx2,f16c,fma"))) static void f16_rows_avx2(
    const uint16_t *W, const float *x, float *y, int64_t r0, int64_t r1, int64_t in)
{
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const uint16_t *w0 = W + r * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        int64_t j = 0;
        for (; j + 8 <= in; j += 8) {
            __m256 xv = _mm256_loadu_ps(x + j);
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const void *)(w0 + j))), xv, a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const void *)(w1 + j))), xv, a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const void *)(w2 + j))), xv, a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const void *)(w3 + j))), xv, a3);
        }
        __m256 acc[4] = { a0, a1, a2, a3 };
        for (int i = 0; i < 4; i++) {
            float t[8], s = 0.0f;
            _mm256_storeu_ps(t, acc[i]);
            for (int l = 0; l < 8; l++) s += t[l];
            for (int64_t jj = j; jj < in; jj++) s += _cvtsh_ss(W[(r + i) * in + jj]) * x[jj];
            y[r + i] = s;
        }
    }
    for (; r < r1; r++) {
        float s = 0.0f;
        for (int64_t j = 0; j < in; j++) s += _cvtsh_ss(W[r * in + j]) * x[j];
        y[r] = s;
    }
}
#endif

static void f16_gemv(const uint16_t *W, const float *x, float *y, int64_t out, int64_t in)
{
#pragma omp parallel
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t q = (out + 3) / 4, r0 = q * t / T * 4, r1 = q * (t + 1) / T * 4;
        if (r1 > out) r1 = out;
#if defined(__x86_64__)
        if (__builtin_cpu_supports("avx512f"))
            f16_rows_avx512(W, x, y, r0, r1, in);
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            f16_rows_avx2(W, x, y, r0, r1, in);
        else
#endif
            for (int64_t r = r0; r < r1; r++) {
                float s = 0.0f;
                for (int64_t j = 0; j < in; j++) s += cq_f16_to_f32(W[r * in + j]) * x[j];
                y[r] = s;
            }
    }
}

/* ------------------------------------------------------------ matrices */

typedef struct {
    int ncopy;
    cq_qmm_w w[64];          /* one descriptor per copy */
    cq_qmm_il il[64];        /* its interleaved form (own codes and cherry lanes, same scales) */
    int has_il;              /* cq_qmm_il_wanted: the form a loaded model runs */
    size_t bytes;            /* bytes the timed GEMV reads (codes, scales, cherries, x): with
                              * the interleaved form its cherry lanes, else the CSR cherries */
    size_t bytes_nc;         /* the same without cherries */
    void *mem[64];
    void *ilmem[64];
    void *lanemem[64];
} packed_set;

static int copies_for(size_t bytes)
{
    size_t pool = 3 * g_llc > ((size_t)128 << 20) ? 3 * g_llc : ((size_t)128 << 20);
    size_t c = (pool + bytes - 1) / bytes;
    if (c < 2) c = 2;
    if (c > 64) c = 64;
    return (int)c;
}

static void packed_make(packed_set *s, int64_t out, int64_t in, int bits, int group)
{
    int64_t rb = cq_qmm_row_bytes(bits, in), ng = cq_qmm_ngroups(group, in);
    int64_t k = in / 256 > 0 ? in / 256 : 1;      /* cherries per row: 1/256 */
    size_t nnz = (size_t)(out * k);
    size_t bc = (size_t)(out * rb), bs = (size_t)(out * ng) * 2, bp = (size_t)(out + 1) * 4;
    size_t off_s = (bc + 63) / 64 * 64, off_p = off_s + (bs + 63) / 64 * 64;
    size_t off_c = off_p + (bp + 63) / 64 * 64, off_d = off_c + (nnz * 2 + 63) / 64 * 64;
    size_t total = off_d + nnz * 4;
    s->bytes_nc = bc + bs + (size_t)in * 4;
    s->bytes = s->bytes_nc + bp + nnz * 6;
    s->ncopy = copies_for(s->bytes);
    uint8_t *m0 = xalloc(total);
    fill_random(m0, bc);
    uint16_t *sc = (uint16_t *)(m0 + off_s);
    for (size_t i = 0; i < (size_t)(out * ng); i++) sc[i] = rnd_f16();
    int32_t *rp = (int32_t *)(m0 + off_p);
    uint16_t *cols = (uint16_t *)(m0 + off_c);
    float *dl = (float *)(m0 + off_d);
    for (int64_t r = 0; r <= out; r++) rp[r] = (int32_t)(r * k);
    uint8_t *used = g_random_cherries ? calloc((size_t)in, 1) : NULL;
    for (int64_t r = 0; r < out; r++) {
        for (int64_t i = 0; i < k; i++) {
            int64_t col;
            if (used) {   /* distinct uniformly random columns, in random order */
                do col = (int64_t)(rnd64() % (uint64_t)in); while (used[col]);
                used[col] = 1;
            } else {      /* one per 256-column stripe: distinct, sorted */
                col = i * 256 + (int64_t)(rnd64() % 256);
                if (col >= in) col = in - 1;
            }
            cols[r * k + i] = (uint16_t)col;
            dl[r * k + i] = (float)((int64_t)(rnd64() % 2001) - 1000) * 1e-4f;
        }
        if (used)
            for (int64_t i = 0; i < k; i++) used[cols[r * k + i]] = 0;
    }
    free(used);
    for (int c = 0; c < s->ncopy; c++) {
        uint8_t *m = c ? xalloc(total) : m0;
        if (c) memcpy(m, m0, total);
        s->mem[c] = m;
        s->w[c] = (cq_qmm_w){ .out = out, .in = in, .bits = bits, .group = group, .codes = m,
                              .scales = (const uint16_t *)(m + off_s),
                              .rowptr = (const int32_t *)(m + off_p),
                              .cols = (const uint16_t *)(m + off_c), .delta = (const float *)(m + off_d) };
    }
    if (cq_qmm_check(&s->w[0])) {
        fprintf(stderr, "bench_qmm: generated matrix fails cq_qmm_check\n");
        exit(1);
    }
    s->has_il = cq_qmm_il_wanted(&s->w[0]);
    /* the interleaved form with its cherry lanes, as models/qmodel.c loads it */
    const int64_t nl = s->has_il ? cq_qmm_lanes_bytes(&s->w[0]) : 0;
    if (nl < 0) {
        fprintf(stderr, "bench_qmm: cq_qmm_lanes_bytes failed\n");
        exit(1);
    }
    if (s->has_il) s->bytes = s->bytes_nc + (size_t)nl;
    for (int c = 0; c < s->ncopy; c++) {
        s->ilmem[c] = s->lanemem[c] = NULL;
        if (!s->has_il) continue;
        s->ilmem[c] = xalloc(bc);
        if (cq_qmm_il_build(&s->il[c], &s->w[c], s->ilmem[c])) {
            fprintf(stderr, "bench_qmm: cq_qmm_il_build failed\n");
            exit(1);
        }
        if (nl > 0) {
            s->lanemem[c] = xalloc((size_t)nl);
            if (cq_qmm_lanes_build(&s->w[c], s->lanemem[c], nl) || cq_qmm_lanes_check(&s->w[c], s->lanemem[c], nl)) {
                fprintf(stderr, "bench_qmm: cq_qmm_lanes_build failed\n");
                exit(1);
            }
            s->il[c].lanes = s->lanemem[c];
            s->il[c].lanes_bytes = nl;
        }
    }
}

static void packed_free(packed_set *s)
{
    for (int c = 0; c < s->ncopy; c++) {
        free(s->mem[c]);
        free(s->ilmem[c]);
        free(s->lanemem[c]);
    }
}

/* Median seconds of one GEMV over passes that each visit every copy. */
typedef void (*gemv_call)(void *ctx, int copy);

/* OpenBLAS's pthread pool spins for a while after each call and OpenMP's
 * threads after each region: let both go to sleep before a new series so
 * one does not steal the cores of the other. */
static void settle(void)
{
    struct timespec ts = { 0, 150 * 1000 * 1000 };
    nanosleep(&ts, NULL);
}

static double time_passes(gemv_call fn, void *ctx, int ncopy)
{
    settle();
    double t[64];
    int passes = g_passes > 64 ? 64 : g_passes;
    for (int c = 0; c < ncopy; c++) fn(ctx, c);   /* warm-up (page faults, threads) */
    for (int p = 0; p < passes; p++) {
        double t0 = omp_get_wtime();
        for (int c = 0; c < ncopy; c++) fn(ctx, c);
        t[p] = (omp_get_wtime() - t0) / ncopy;
    }
    return median(t, passes);
}

/* Two series timed in alternation, pass by pass (with and without cherries),
 * so that a change of the machine's load hits both alike; *ta / *tb get the
 * statistic of each series, *ba / *bb the best pass of each. */
static void time_pair(gemv_call fa, void *ca, gemv_call fb, void *cb, int ncopy, double *ta,
                      double *tb, double *ba, double *bb)
{
    settle();
    double t[2][64];
    int passes = 2 * g_passes > 64 ? 64 : 2 * g_passes;   /* the cherry ratio needs more */
    for (int c = 0; c < ncopy; c++) {
        fa(ca, c);
        fb(cb, c);
    }
    for (int p = 0; p < passes; p++)
        for (int k = 0; k < 2; k++) {
            gemv_call fn = (p + k) % 2 ? fb : fa;   /* alternate which goes first */
            void *ctx = (p + k) % 2 ? cb : ca;
            int which = (p + k) % 2;
            double t0 = omp_get_wtime();
            for (int c = 0; c < ncopy; c++) fn(ctx, c);
            t[which][p] = (omp_get_wtime() - t0) / ncopy;
        }
    double mn[2] = { t[0][0], t[1][0] };
    for (int k = 0; k < 2; k++)
        for (int p = 1; p < passes; p++)
            if (t[k][p] < mn[k]) mn[k] = t[k][p];
    *ba = mn[0];
    *bb = mn[1];
    *ta = median(t[0], passes);
    *tb = median(t[1], passes);
}

typedef struct {
    packed_set *s;
    int nocherry;
    const float *x;
    float *y;
} qctx;

static void call_qmm_exact(void *v, int c)
{
    cq_qmm_set_exact(1);
    qctx *q = v;
    if (cq_qmm_gemv(&q->s->w[c], q->x, q->y)) {
        fprintf(stderr, "bench_qmm: cq_qmm_gemv failed\n");
        exit(1);
    }
    cq_qmm_set_exact(0);
}

/* The row-layout GEMV (what runs without the interleaved form). */
static void call_qmm_rows(void *v, int c)
{
    qctx *q = v;
    cq_qmm_w w = q->s->w[c];
    if (q->nocherry) w.rowptr = NULL;
    if (cq_qmm_gemv(&w, q->x, q->y)) {
        fprintf(stderr, "bench_qmm: cq_qmm_gemv failed\n");
        exit(1);
    }
}

/* The default GEMV of a loaded model: on the interleaved form where
 * cq_qmm_il_wanted, else on the row layout. */
static void call_qmm(void *v, int c)
{
    qctx *q = v;
    if (!q->s->has_il) {
        call_qmm_rows(v, c);
        return;
    }
    cq_qmm_il il = q->s->il[c];
    if (q->nocherry) il.w.rowptr = NULL;
    if (cq_qmm_il_gemv(&il, q->x, q->y)) {
        fprintf(stderr, "bench_qmm: cq_qmm_il_gemv failed\n");
        exit(1);
    }
}

typedef struct {
    const float **W;
    const uint16_t **H;
    int64_t out, in;
    const float *x;
    float *y;
} dctx;

static void call_sgemv(void *v, int c)
{
    dctx *d = v;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)d->out, (int)d->in, 1.0f, d->W[c], (int)d->in,
                d->x, 1, 0.0f, d->y, 1);
}

static void call_f16(void *v, int c)
{
    dctx *d = v;
    f16_gemv(d->H[c], d->x, d->y, d->out, d->in);
}

static int g_fail = 0;

/* max |a - b| <= tol * max |b| */
static void check_vec(const char *what, const float *a, const float *b, int64_t n, double tol)
{
    double m = 0.0, e = 0.0;
    for (int64_t i = 0; i < n; i++) {
        m = fmax(m, fabs((double)b[i]));
        e = fmax(e, fabs((double)a[i] - (double)b[i]));
    }
    if (!(e <= tol * m)) {
        fprintf(stderr, "bench_qmm: CHECK FAILED %s: max err %.3g vs max |ref| %.3g\n", what, e, m);
        g_fail = 1;
    }
}

/* ------------------------------------------------------------ small shapes */

/* --small: per-call time of the int8 GEMV (interleaved codes, forced on with
 * cq_qmm_set_q8_min_in(0)) and of the exact f32 GEMV on small in-cache
 * matrices (the shapes of small models: dim 192 .. 2048), best of passes of
 * many calls, for the rule that picks one per matrix (CQ_QMM_Q8_MIN_IN). */
static void small_shapes(int maxt)
{
    static const int64_t sh[][2] = { { 96, 192 },   { 192, 192 },   { 512, 192 },  { 2048, 192 },
                                     { 512, 256 },  { 2048, 256 },  { 512, 384 },  { 2048, 384 },
                                     { 96, 512 },   { 192, 512 },   { 512, 512 },  { 768, 768 },
                                     { 1024, 1024 }, { 2048, 1024 }, { 1024, 2048 }, { 2048, 2048 },
                                     { 4096, 2048 } };
    const int nsh = (int)(sizeof sh / sizeof sh[0]);
    const int64_t q8min = cq_qmm_get_q8_min_in();
    cq_qmm_set_q8_min_in(0);
    printf("small matrices, in cache, 3-bit g128 with 1/256 cherries, best of %d passes; int8 GEMV used "
           "by default from in >= %lld\n", g_passes, (long long)q8min);
    printf("  %-12s %3s %10s %10s %8s\n", "out x in", "thr", "int8_us", "exact_us", "int8/ex");
    for (int si = 0; si < nsh; si++) {
        const int64_t out = sh[si][0], in = sh[si][1];
        packed_set ps;
        packed_make(&ps, out, in, 3, 128);
        float *x = xalloc((size_t)in * 4), *y = xalloc((size_t)out * 4);
        for (int64_t j = 0; j < in; j++) x[j] = (float)((int64_t)(rnd64() % 2001) - 1000) * 1e-3f;
        cq_qmm_il il;
        uint8_t *ic = xalloc((size_t)(out * cq_qmm_row_bytes(3, in)));
        cq_qmm_il_build(&il, &ps.w[0], ic);
        const int reps = (int)(2000000 / (out * in) + 20);
        for (int ti = 0; ti < (maxt > 1 ? 2 : 1); ti++) {
            const int nt = ti ? maxt : 1;
            set_threads(nt);
            double best[2] = { 1e30, 1e30 };
            for (int p = 0; p < g_passes; p++)
                for (int k = 0; k < 2; k++) {
                    cq_qmm_set_exact(k);
                    double t0 = omp_get_wtime();
                    for (int i = 0; i < reps; i++) cq_qmm_il_gemv(&il, x, y);
                    double t = (omp_get_wtime() - t0) / reps;
                    if (t < best[k]) best[k] = t;
                }
            cq_qmm_set_exact(0);
            char nm[32];
            snprintf(nm, sizeof nm, "%lldx%lld", (long long)out, (long long)in);
            printf("  %-12s %3d %10.2f %10.2f %8.2f\n", nm, nt, best[0] * 1e6, best[1] * 1e6, best[0] / best[1]);
        }
        free(ic);
        free(x);
        free(y);
        packed_free(&ps);
    }
    cq_qmm_set_q8_min_in(q8min);
}

/* ------------------------------------------------------------ main */

typedef struct {
    int bits, group;
} qcfg;

int main(int argc, char **argv)
{
    int quick = 0, small = 0, maxt = omp_get_num_procs(), passes = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--min")) g_use_min = 1;
        else if (!strcmp(argv[i], "--small")) small = 1;
        else if (!strcmp(argv[i], "--passes") && i + 1 < argc) passes = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) maxt = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cherries") && i + 1 < argc && !strcmp(argv[i + 1], "random")) {
            g_random_cherries = 1;
            i++;
        } else if (!strcmp(argv[i], "--cherries") && i + 1 < argc && !strcmp(argv[i + 1], "stripe")) {
            i++;
        } else {
            fprintf(stderr, "usage: %s [--quick] [--small] [--min] [--passes N] [--threads N] "
                    "[--cherries stripe|random]\n", argv[0]);
            return 2;
        }
    }
    if (maxt < 1) maxt = 1;
    if (quick) g_passes = 3;
    if (passes > 0) g_passes = passes < 64 ? passes : 64;
    cq_qmm_set_exact(0);   /* the default path, whatever CQ_QMM_EXACT says */
    machine_info();
    printf("cherries: 1/256 of each row (one a row below 256 columns), %s\n",
           g_random_cherries ? "at distinct uniformly random columns" : "one per 256-column stripe");
    if (small) {
        small_shapes(maxt);
        return g_fail;
    }

    static const int64_t shapes_full[][2] = { { 4096, 4096 }, { 11008, 4096 }, { 4096, 11008 }, { 14336, 4096 } };
    static const int64_t shapes_quick[][2] = { { 4096, 4096 } };
    static const qcfg cfg_full[] = { { 3, 128 }, { 3, 64 }, { 4, 128 } };
    static const qcfg cfg_quick[] = { { 3, 128 }, { 4, 128 } };
    const int nshape = quick ? 1 : 4, ncfg = quick ? 2 : 3;
    const int64_t (*shapes)[2] = quick ? shapes_quick : shapes_full;
    const qcfg *cfgs = quick ? cfg_quick : cfg_full;
    const int64_t ntok = quick ? 64 : 512;
    int tcounts[2] = { 1, maxt }, ntc = maxt > 1 ? 2 : 1;

    /* read bandwidth, per thread count */
    size_t bwbytes = (quick ? (size_t)128 : (size_t)512) << 20;
    if (bwbytes < 4 * g_llc) bwbytes = 4 * g_llc;
    uint64_t *bw = xalloc(bwbytes);
    fill_random(bw, bwbytes);
    double bwv[2];
    for (int ti = 0; ti < ntc; ti++) bwv[ti] = read_bw(bw, bwbytes / 8, tcounts[ti]);
    free(bw);
    const char *stat = g_use_min ? "best" : "median";
    printf("read bandwidth (%zu MiB streaming sum, %s of %d): ", bwbytes >> 20, stat, g_passes);
    for (int ti = 0; ti < ntc; ti++) printf("%s%d thread%s %.1f GB/s", ti ? ", " : "", tcounts[ti],
                                            tcounts[ti] > 1 ? "s" : "", bwv[ti]);
    printf("\nweights rotate over copies totalling >= max(3*LLC, 128 MiB); times are the %s of %d passes\n\n",
           stat, g_passes);

    for (int si = 0; si < nshape; si++) {
        const int64_t out = shapes[si][0], in = shapes[si][1];
        float *x = xalloc((size_t)in * 4), *y = xalloc((size_t)out * 4), *yr = xalloc((size_t)out * 4);
        for (int64_t j = 0; j < in; j++) x[j] = (float)((int64_t)(rnd64() % 2001) - 1000) * 1e-3f;

        /* dense FP32 and FP16 copies of a random matrix for the baselines */
        size_t b32 = (size_t)(out * in) * 4, b16 = b32 / 2;
        int c32 = copies_for(b32), c16 = copies_for(b16);
        if (b32 >= 3 * g_llc && b32 >= ((size_t)128 << 20)) c32 = 1;
        if (b16 >= 3 * g_llc && b16 >= ((size_t)128 << 20)) c16 = 1;
        const float *W32[64];
        const uint16_t *W16[64];
        float *w32 = xalloc(b32);
        for (size_t i = 0; i < (size_t)(out * in); i++) w32[i] = (float)((int64_t)(rnd64() % 2001) - 1000) * 1e-4f;
        for (int c = 0; c < c32; c++) {
            float *m = c ? xalloc(b32) : w32;
            if (c) memcpy(m, w32, b32);
            W32[c] = m;
        }
        uint16_t *w16 = xalloc(b16);
        for (size_t i = 0; i < (size_t)(out * in); i++) w16[i] = rnd_f16();
        for (int c = 0; c < c16; c++) {
            uint16_t *m = c ? xalloc(b16) : w16;
            if (c) memcpy(m, w16, b16);
            W16[c] = m;
        }
        /* FP16 kernel check against a double dot product on a few rows */
        f16_gemv(W16[0], x, y, out, in);
        for (int64_t r = 0; r < 8; r++) {
            double s = 0.0;
            for (int64_t j = 0; j < in; j++) s += (double)cq_f16_to_f32(W16[0][r * in + j]) * x[j];
            yr[r] = (float)s;
        }
        check_vec("fp16 gemv", y, yr, 8, 1e-4);

        double t32[2], t16[2], gf_sgemm[2];
        float *X = xalloc((size_t)(ntok * in) * 4), *Y = xalloc((size_t)(ntok * out) * 4);
        for (size_t i = 0; i < (size_t)(ntok * in); i++) X[i] = (float)((int64_t)(rnd64() % 2001) - 1000) * 1e-3f;
        for (int ti = 0; ti < ntc; ti++) {
            set_threads(tcounts[ti]);
            dctx d = { .W = W32, .H = W16, .out = out, .in = in, .x = x, .y = y };
            t32[ti] = time_passes(call_sgemv, &d, c32);
            t16[ti] = time_passes(call_f16, &d, c16);
            double tg[8];
            int gp = quick ? 2 : 3;
            settle();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ntok, (int)out, (int)in, 1.0f, X,
                        (int)in, W32[0], (int)in, 0.0f, Y, (int)out);
            for (int p = 0; p < gp; p++) {
                double t0 = omp_get_wtime();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ntok, (int)out, (int)in, 1.0f, X,
                            (int)in, W32[0], (int)in, 0.0f, Y, (int)out);
                tg[p] = omp_get_wtime() - t0;
            }
            gf_sgemm[ti] = 2.0 * (double)ntok * (double)out * (double)in / median(tg, gp) / 1e9;
        }
        for (int c = 0; c < c32; c++) free((void *)W32[c]);
        for (int c = 0; c < c16; c++) free((void *)W16[c]);

        printf("== W [%lld x %lld]  FP32 sgemv: ", (long long)out, (long long)in);
        for (int ti = 0; ti < ntc; ti++)
            printf("%s%dT %.0f us (%.1f GB/s)", ti ? ", " : "", tcounts[ti], t32[ti] * 1e6,
                   (double)(b32 + (size_t)in * 4) / t32[ti] / 1e9);
        printf(" | FP16 gemv: ");
        for (int ti = 0; ti < ntc; ti++)
            printf("%s%dT %.0f us (%.1f GB/s)", ti ? ", " : "", tcounts[ti], t16[ti] * 1e6,
                   (double)(b16 + (size_t)in * 4) / t16[ti] / 1e9);
        printf(" | sgemm n=%lld: ", (long long)ntok);
        for (int ti = 0; ti < ntc; ti++) printf("%s%dT %.0f GFLOP/s", ti ? ", " : "", tcounts[ti], gf_sgemm[ti]);
        printf("\n");
        printf("  %-9s %3s %9s %8s %6s %8s %8s %8s %9s %9s %12s %8s\n", "config", "thr", "gemv_us", "GB/s",
               "%BW", "x_fp32", "x_fp16", "cherry%", "rows_us", "f32_us", "gemm_GF/s", "%sgemm");

        for (int ci = 0; ci < ncfg; ci++) {
            packed_set ps;
            packed_make(&ps, out, in, cfgs[ci].bits, cfgs[ci].group);
            /* correctness: first 32 rows against the reference, and GEMM vs GEMV */
            cq_qmm_w sub = ps.w[0];
            sub.out = 32;
            set_threads(maxt);
            const int q8 = cq_qmm_gemv_uses_q8(&ps.w[0]);
            cq_qmm_gemv(&ps.w[0], x, y);
            if (q8) cq_qmm_gemv_q8_ref(&sub, x, yr);
            else cq_qmm_gemv_ref(&sub, x, yr);
            check_vec(q8 ? "int8 gemv vs int8 reference" : "gemv vs reference", y, yr, 32, 1e-5);
            cq_qmm_set_exact(1);
            cq_qmm_gemv(&ps.w[0], x, y);
            cq_qmm_set_exact(0);
            cq_qmm_gemv_ref(&sub, x, yr);
            check_vec("exact gemv vs reference", y, yr, 32, 1e-5);
            if (ps.has_il) {   /* the interleaved GEMV (cherry lanes): the same int8 reference */
                cq_qmm_il_gemv(&ps.il[0], x, y);
                cq_qmm_gemv_q8_ref(&sub, x, yr);
                check_vec("interleaved gemv (lanes) vs int8 reference", y, yr, 32, 1e-5);
            }
            for (int ti = 0; ti < ntc; ti++) {
                set_threads(tcounts[ti]);
                qctx q = { .s = &ps, .nocherry = 0, .x = x, .y = y };
                qctx qn = { .s = &ps, .nocherry = 1, .x = x, .y = y };
                double tq, tn, bq, bn;
                time_pair(call_qmm, &q, call_qmm, &qn, ps.ncopy, &tq, &tn, &bq, &bn);
                double te = q8 ? time_passes(call_qmm_exact, &q, ps.ncopy) : tq;
                double trow = ps.has_il ? time_passes(call_qmm_rows, &q, ps.ncopy) : tq;
                double tg[8];
                int gp = quick ? 2 : 3;
                settle();
                /* GEMM of a loaded model: on the interleaved form (tiles
                 * unpacked) where it has one */
                if (ps.has_il) cq_qmm_il_gemm(&ps.il[0], X, ntok, Y);
                else cq_qmm_gemm(&ps.w[0], X, ntok, Y);
                for (int p = 0; p < gp; p++) {
                    double t0 = omp_get_wtime();
                    if (ps.has_il ? cq_qmm_il_gemm(&ps.il[0], X, ntok, Y) : cq_qmm_gemm(&ps.w[0], X, ntok, Y)) {
                        fprintf(stderr, "bench_qmm: cq_qmm_gemm failed\n");
                        return 1;
                    }
                    tg[p] = omp_get_wtime() - t0;
                }
                double gf = 2.0 * (double)ntok * (double)out * (double)in / median(tg, gp) / 1e9;
                if (ti == 0) {   /* GEMM rows (tokens 0 and last) vs the exact GEMV */
                    cq_qmm_set_exact(1);
                    for (int64_t tk = 0; tk < ntok; tk += ntok - 1) {
                        cq_qmm_gemv(&ps.w[0], X + tk * in, yr);
                        check_vec("gemm vs gemv", Y + tk * out, yr, out, 1e-4);
                    }
                    cq_qmm_set_exact(0);
                }
                double gbs = (double)ps.bytes / tq / 1e9;
                char name[32];
                snprintf(name, sizeof name, "%db g%d", cfgs[ci].bits, cfgs[ci].group);
                printf("  %-9s %3d %9.0f %8.1f %5.0f%% %7.2fx %7.2fx %7.1f%% %9.0f %9.0f %12.0f %7.0f%%\n", name,
                       tcounts[ti], tq * 1e6, gbs, 100.0 * gbs / bwv[ti], t32[ti] / tq, t16[ti] / tq,
                       100.0 * (bq / bn - 1.0), trow * 1e6, te * 1e6, gf, 100.0 * gf / gf_sgemm[ti]);
                fflush(stdout);
            }
            packed_free(&ps);
        }
        free(X);
        free(Y);
        free(x);
        free(y);
        free(yr);
        printf("\n");
    }
    FILE *f = fopen("/proc/loadavg", "r");
    char load[128] = "?";
    if (f) {
        if (fgets(load, sizeof load, f)) load[strcspn(load, "\n")] = 0;
        fclose(f);
    }
    printf("load average at end: %s\n", load);
    printf("GB/s counts codes + scales + cherries + x (on the interleaved codes the cherry lanes, else\n"
           "rowptr, cols, delta); x_fp32/x_fp16: speed-up over dense FP32 cblas_sgemv / FP16 GEMV;\n"
           "cherry%%: best pass with 1/256 cherries per row over best\n"
           "pass without (alternating passes), -1; f32_us: the exact f32 GEMV kernel (CQ_QMM_EXACT=1).\n"
           "gemv_us and gemm: on the interleaved codes with cherry lanes (cq_qmm_il, what a loaded\n"
           "model runs; GEMM unpacks tiles of it); rows_us: the int8 GEMV on the on-disk row layout\n"
           "(cherries by gathers).\n");
    if (g_fail) fprintf(stderr, "bench_qmm: some results were wrong\n");
    return g_fail;
}
