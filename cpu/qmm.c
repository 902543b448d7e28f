/* cherryq: dispatcher of the mixed int-k + FP16-sparse matmul.
 *
 * GEMV: x is permuted/prescaled once per call (O(in), shared by every row)
 * together with per-group sums of x, then chunks of contiguous rows go to the
 * OpenMP threads and the per-ISA kernel computes
 *   y_r = sum_g s_g * (sum_{j in g} u_j x_j + c * sum_{j in g} x_j) + cherries.
 * GEMM (n >= CQ_QMM_GEMM_MIN_N): X is permuted the same way once; then the
 * OpenMP threads take tiles of rows, each dequantizing its tile into a
 * per-thread f32 buffer and multiplying it with a single-threaded OpenBLAS
 * sgemm (OpenBLAS is set to 1 thread for the duration of the call and
 * restored after: one pool of threads, no oversubscription).
 */
#include <stdatomic.h>
#include <stdlib.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "qmm_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define CQ_QMM_X86 1
#else
#define CQ_QMM_X86 0
#endif

#define CQ_QMM_GEMM_MIN_N 8
#define CQ_QMM_TILE_BYTES (4u << 20)   /* dequantized tile per thread */

static atomic_int g_isa = -1;          /* -1: not chosen yet */

/* ------------------------------------------------------------ ISA */

int cq_qmm_isa_supported(cq_isa isa)
{
    switch (isa) {
    case CQ_ISA_AUTO:
    case CQ_ISA_SCALAR: return 1;
#if CQ_QMM_X86
    case CQ_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CQ_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("fma");
    case CQ_ISA_AVX512VNNI:
        return cq_qmm_isa_supported(CQ_ISA_AVX512) && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vbmi2");
#endif
    default: return 0;
    }
}

/* 1 when cq_qmm_set_isa named an ISA (tests, benchmarks): then exactly that
 * ISA runs; otherwise a shape may pick a narrower one (pick_isa). */
static atomic_int g_isa_forced;

static cq_isa best_isa(void)
{
    if (cq_qmm_isa_supported(CQ_ISA_AVX512VNNI)) return CQ_ISA_AVX512VNNI;
    if (cq_qmm_isa_supported(CQ_ISA_AVX512)) return CQ_ISA_AVX512;
    if (cq_qmm_isa_supported(CQ_ISA_AVX2)) return CQ_ISA_AVX2;
    return CQ_ISA_SCALAR;
}

int cq_qmm_set_isa(cq_isa isa)
{
    if (isa < CQ_ISA_AUTO || isa > CQ_ISA_AVX512VNNI) {
        cq_error("%s: unknown ISA %d", __func__, (int)isa);
        return CQ_EINVAL;
    }
    if (!cq_qmm_isa_supported(isa)) {
        cq_debug("%s: %s not supported by this CPU or build", __func__, cq_qmm_isa_name(isa));
        return CQ_ENOTSUP;
    }
    atomic_store(&g_isa, (int)(isa == CQ_ISA_AUTO ? best_isa() : isa));
    atomic_store(&g_isa_forced, isa != CQ_ISA_AUTO);
    return CQ_OK;
}

cq_isa cq_qmm_get_isa(void)
{
    int v = atomic_load(&g_isa);
    if (v < 0) {
        v = (int)best_isa();
        atomic_store(&g_isa, v);
    }
    return (cq_isa)v;
}

const char *cq_qmm_isa_name(cq_isa isa)
{
    switch (isa) {
    case CQ_ISA_AUTO: return "auto";
    case CQ_ISA_SCALAR: return "scalar";
    case CQ_ISA_AVX2: return "avx2";
    case CQ_ISA_AVX512: return "avx512";
    case CQ_ISA_AVX512VNNI: return "avx512vnni";
    default: return "?";
    }
}

/* -1: not read yet; then 0/1. */
static atomic_int g_exact = -1;

void cq_qmm_set_exact(int on)
{
    atomic_store(&g_exact, on ? 1 : 0);
}

int cq_qmm_get_exact(void)
{
    int v = atomic_load(&g_exact);
    if (v < 0) {
        const char *e = getenv("CQ_QMM_EXACT");
        v = e && e[0] && strcmp(e, "0") != 0;
        atomic_store(&g_exact, v);
    }
    return v;
}

/* The ISA of the f32 kernels: the VNNI ISA runs AVX-512's (GEMM, exact GEMV). */
static cq_isa float_isa(cq_isa isa)
{
    return isa == CQ_ISA_AVX512VNNI ? CQ_ISA_AVX512 : isa;
}

static int isa_lanes(cq_isa isa)
{
    return isa == CQ_ISA_AVX512 ? 16 : isa == CQ_ISA_AVX2 ? 8 : 0;
}

/* ------------------------------------------------------------ plan */

float cq_qmm_kscale(int bits, int k)
{
    int h = cq_qmm_half(bits);
    float s = 1.0f;
    for (int i = 0; i < bits * (k % h); i++) s *= 0.5f;
    return s;
}

int cq_qmm_plan_init(cq_qmm_plan *p, const cq_qmm_w *w, int L)
{
    memset(p, 0, sizeof(*p));
    p->w = w;
    p->bits = w->bits;
    p->in = w->in;
    p->out = w->out;
    p->g = w->group ? w->group : w->in;
    p->ng = cq_qmm_ngroups(w->group, w->in);
    p->rb = cq_qmm_row_bytes(w->bits, w->in);
    p->c = w->bits == 8 ? -127.0f : -(float)(1 << (w->bits - 1)) + 0.5f;
    p->m = w->bits == 3 ? 8 : 32 / w->bits;
    if (L <= 0) return 0;
    int fast = 0;
    if (p->ng == 1) {
        fast = 1;
        p->wpg = INT64_MAX;
    } else if (p->g % p->m == 0) {
        p->wpg = p->g / p->m;
        fast = p->wpg % L == 0 || L % p->wpg == 0;
    }
    if (!fast) return 0;
    p->L = L;
    p->bc = (int64_t)L * p->m;
    p->nblk = p->in / p->bc;
    p->ncols_blk = p->nblk * p->bc;
    if (p->wpg >= L) {
        p->bpg = p->ng == 1 ? p->nblk + 1 : p->wpg / L;
        p->gpb = 0;
    } else {
        p->bpg = 0;
        p->gpb = L / p->wpg;
    }
    return 1;
}

/* xp: block-permuted, prescaled x; gsum[ng+16]: per-group sums, zero padded. */
static void prep_x(const cq_qmm_plan *p, const float *x, float *xp, float *gsum)
{
    const int m = p->m, L = p->L;
    float ks[16];
    for (int k = 0; k < m; k++) ks[k] = cq_qmm_kscale(p->bits, k);
    for (int64_t blk = 0; blk < p->nblk; blk++) {
        const float *xb = x + blk * p->bc;
        float *ob = xp + blk * p->bc;
        for (int d = 0; d < L; d++)
            for (int k = 0; k < m; k++) ob[k * L + d] = xb[d * m + k] * ks[k];
    }
    for (int64_t gi = 0; gi < p->ng; gi++) {
        int64_t j0 = gi * p->g, j1 = j0 + p->g < p->in ? j0 + p->g : p->in;
        double s = 0.0;
        for (int64_t j = j0; j < j1; j++) s += x[j];
        gsum[gi] = (float)s;
    }
    for (int i = 0; i < 16; i++) gsum[p->ng + i] = 0.0f;
}

/* X [n, in] -> Xp [n, in] in the block-permuted order (no prescale). */
static void permute_rows(const cq_qmm_plan *p, const float *X, int64_t n, float *Xp)
{
    const int m = p->m, L = p->L;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; t++) {
        const float *x = X + t * p->in;
        float *o = Xp + t * p->in;
        for (int64_t blk = 0; blk < p->nblk; blk++) {
            const float *xb = x + blk * p->bc;
            float *ob = o + blk * p->bc;
            for (int d = 0; d < L; d++)
                for (int k = 0; k < m; k++) ob[k * L + d] = xb[d * m + k];
        }
        memcpy(o + p->ncols_blk, x + p->ncols_blk, (size_t)(p->in - p->ncols_blk) * sizeof(float));
    }
}

static void *alloc64(size_t bytes)
{
    size_t b = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, b ? b : 64);
}

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The ISA for a shape. AVX-512 covers 16 words per block (128 columns of
 * 3/4-bit codes) and leaves the rest of a row to scalar code; for narrow
 * rows (small models: in = 192 leaves 64 scalar columns of every row, which
 * then dominate) AVX2's 8-word blocks cover more of the row, so an
 * automatically chosen AVX-512 steps down when that leaves fewer scalar
 * columns. */
static cq_isa pick_isa(const cq_qmm_w *w)
{
    cq_isa isa = float_isa(cq_qmm_get_isa());
    if (isa != CQ_ISA_AVX512 || atomic_load(&g_isa_forced) || !cq_qmm_isa_supported(CQ_ISA_AVX2)) return isa;
    cq_qmm_plan a, b;
    int ok_a = cq_qmm_plan_init(&a, w, 16), ok_b = cq_qmm_plan_init(&b, w, 8);
    int64_t tail_a = ok_a ? w->in - a.ncols_blk : w->in, tail_b = ok_b ? w->in - b.ncols_blk : w->in;
    return tail_b < tail_a ? CQ_ISA_AVX2 : isa;
}

/* ------------------------------------------------------------ int8 GEMV */

int cq_qmm_q8plan_init(cq_qmm_q8plan *p, const cq_qmm_w *w)
{
    memset(p, 0, sizeof(*p));
    p->w = w;
    p->bits = w->bits;
    p->in = w->in;
    p->out = w->out;
    p->g = w->group ? w->group : w->in;
    p->ng = cq_qmm_ngroups(w->group, w->in);
    p->rb = cq_qmm_row_bytes(w->bits, w->in);
    p->c = w->bits == 8 ? -127.0f : -(float)(1 << (w->bits - 1)) + 0.5f;
    p->V = w->bits == 8 ? 1 : w->bits == 2 ? 4 : 2;
    p->S = 64 * (int64_t)p->V;
    p->sbbytes = w->bits == 3 ? 48 : 64;
    if (p->ng == 1) {
        p->U = CQ_QMM_Q8_BLOCK;
        p->upg = 0;
    } else if (p->g == 32 || p->g == 64) {
        p->U = p->g;
        p->upg = 1;
    } else if (p->g % CQ_QMM_Q8_BLOCK == 0) {
        p->U = CQ_QMM_Q8_BLOCK;
        p->upg = p->g / CQ_QMM_Q8_BLOCK;
    } else {
        return 0;
    }
    p->nsb = (p->in + p->S - 1) / p->S;
    p->nu = (p->in + p->U - 1) / p->U;
    p->npad = p->nsb * p->S;
    p->nnat = (p->npad + CQ_QMM_LANE_COLS - 1) / CQ_QMM_LANE_COLS * CQ_QMM_LANE_COLS;
    return 1;
}

static _Atomic int64_t g_q8_min = CQ_QMM_Q8_MIN_IN;

void cq_qmm_set_q8_min_in(int64_t in)
{
    atomic_store(&g_q8_min, in > 0 ? in : 0);
}

int64_t cq_qmm_get_q8_min_in(void)
{
    return atomic_load(&g_q8_min);
}

/* The int8 GEMV for w: VNNI ISA, exact mode off, a covered group, rows of at
 * least cq_qmm_get_q8_min_in() columns. Fills p. */
static int q8_for(const cq_qmm_w *w, cq_qmm_q8plan *p)
{
    return cq_qmm_get_isa() == CQ_ISA_AVX512VNNI && !cq_qmm_get_exact() &&
           w->in >= cq_qmm_get_q8_min_in() && cq_qmm_q8plan_init(p, w);
}

int cq_qmm_gemv_uses_q8(const cq_qmm_w *w)
{
    cq_qmm_q8plan p;
    return w && cq_qmm_check_basic(w, __func__) == CQ_OK && q8_for(w, &p);
}

/* Threads for a GEMV on w: below ~64k weights per thread the fork costs
 * more than it saves. */
static int gemv_threads(const cq_qmm_w *w)
{
    int nt = max_threads();
    int64_t work = w->out * w->in;
    if (work < (int64_t)nt * 65536) nt = (int)(work / 65536) > 1 ? (int)(work / 65536) : 1;
    return nt;
}

/* Rows per chunk (whole quads; whole pairs of lane groups, a multiple of
 * `unit`), about 8 chunks per thread, handed out dynamically: each chunk is
 * one sequential stream, and a thread that loses its core to another process
 * does not hold the others up. */
static int64_t gemv_chunk_rows(int64_t out, int nt, int64_t unit)
{
    int64_t cr = out / ((int64_t)nt * 8) / 4 * 4;
    if (cr < 16) cr = 16;
    if (cr > 512) cr = 512;
    return (cr + unit - 1) / unit * unit;
}

/* The GEMV's threading, shared by the int8 and the f32 kernels: rows in
 * chunks of gemv_chunk_rows handed out dynamically to nt threads, each
 * with its own wsn floats of ws; fn(args, r0, r1, ws) does rows [r0, r1). */
typedef void (*row_chunk_fn)(const void *args, int64_t r0, int64_t r1, float *ws);
static void gemv_row_chunks(int64_t out, int nt, int64_t unit, row_chunk_fn fn, const void *args, float *ws,
                            size_t wsn)
{
    const int64_t cr = gemv_chunk_rows(out, nt, unit), nchunk = (out + cr - 1) / cr;
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
#pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < nchunk; c++) {
            int64_t r0 = c * cr, r1 = r0 + cr < out ? r0 + cr : out;
            fn(args, r0, r1, ws + (size_t)t * wsn);
        }
    }
}

#if CQ_QMM_X86
typedef struct q8_rows_args {
    const cq_qmm_q8plan *p;
    const int8_t *xq;
    const float *sxu, *xqs, *xd;
    float *y;
} q8_rows_args;

static void q8_rows(const void *args, int64_t r0, int64_t r1, float *ws)
{
    const q8_rows_args *a = args;
    cq_qmm_gemv_q8_rows_avx512vnni(a->p, a->xq, a->sxu, a->xqs, a->xd, a->y, r0, r1, ws);
}

static int gemv_q8(const cq_qmm_q8plan *p, const float *x, float *y)
{
    const cq_qmm_w *w = p->w;
    const int nt = gemv_threads(w);
    const size_t nf = (size_t)p->nu + 32, wsn = 8 * ((size_t)p->nu + 48);
    /* the dequantized x for the cherries' gathers and the lanes' spills */
    const size_t nxd = w->rowptr ? (size_t)w->in : 0;
    int8_t *xq = alloc64((size_t)(p->npad + p->nnat));
    float *fb = alloc64((2 * nf + nxd) * sizeof(float));
    float *ws = alloc64((size_t)nt * wsn * sizeof(float));
    if (!xq || !fb || !ws) {
        free(xq);
        free(fb);
        free(ws);
        cq_error("%s: out of memory (out %lld in %lld)", __func__, (long long)w->out, (long long)w->in);
        return CQ_ENOMEM;
    }
    float *sxu = fb, *xqs = fb + nf, *xd = nxd ? fb + 2 * nf : NULL;
    cq_qmm_q8_prep_avx512vnni(p, x, xq, sxu, xqs, xd);
    q8_rows_args a = { p, xq, sxu, xqs, xd, y };
    gemv_row_chunks(w->out, nt, p->lanes ? 2 * CQ_QMM_LANE_ROWS : 4, q8_rows, &a, ws, wsn);
    free(xq);
    free(fb);
    free(ws);
    return CQ_OK;
}
#endif

/* ------------------------------------------------------------ interleaved */

int cq_qmm_il_chunk(int bits)
{
    return bits == 3 ? 48 : 64;
}

/* Byte offset of byte j of row r in the interleaved codes (qmm.h). */
static inline int64_t il_offset(int64_t out, int64_t rb, int64_t C, int64_t r, int64_t j)
{
    const int64_t b0 = r / CQ_QMM_IL_ROWS * CQ_QMM_IL_ROWS;
    const int64_t nb = out - b0 < CQ_QMM_IL_ROWS ? out - b0 : CQ_QMM_IL_ROWS;
    const int64_t k = j / C, len = rb - k * C < C ? rb - k * C : C;
    return b0 * rb + nb * C * k + (r - b0) * len + (j - k * C);
}

/* dir 0: rows [r0, r0+nr) of the row layout src -> interleaved dst (whole
 * matrix); dir 1: interleaved src -> row layout dst [nr, rb]. */
static void il_copy(int64_t out, int64_t rb, int bits, int64_t r0, int64_t nr, const uint8_t *src,
                    uint8_t *dst, int dir)
{
    const int64_t C = cq_qmm_il_chunk(bits);
#pragma omp parallel for schedule(static) if (nr * rb > (1 << 20))
    for (int64_t i = 0; i < nr; i++)
        for (int64_t j = 0; j < rb; j += C) {
            const int64_t len = rb - j < C ? rb - j : C, o = il_offset(out, rb, C, r0 + i, j);
            if (dir == 0)
                memcpy(dst + o, src + i * rb + j, (size_t)len);
            else
                memcpy(dst + i * rb + j, src + o, (size_t)len);
        }
}

int cq_qmm_il_build(cq_qmm_il *il, const cq_qmm_w *w, uint8_t *dst)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(il && (w->out == 0 || dst), CQ_EINVAL);
    const int64_t rb = cq_qmm_row_bytes(w->bits, w->in);
    if (w->out > 0) {
        const uint8_t *s0 = w->codes, *s1 = w->codes + w->out * rb;
        CQ_CHECK_ARG(dst + w->out * rb <= s0 || dst >= s1, CQ_EINVAL);
        il_copy(w->out, rb, w->bits, 0, w->out, w->codes, dst, 0);
    }
    il->w = *w;
    il->w.codes = dst;
    il->lanes = NULL;   /* cherry lanes: attached by the caller (cq_qmm_lanes_build) */
    il->lanes_bytes = 0;
    return CQ_OK;
}

int cq_qmm_il_unpack_rows(const cq_qmm_il *il, int64_t r0, int64_t nr, uint8_t *dst)
{
    CQ_CHECK_ARG(il, CQ_EINVAL);
    int st = cq_qmm_check_basic(&il->w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(r0 >= 0 && nr >= 0 && r0 + nr <= il->w.out && (nr == 0 || dst), CQ_EINVAL);
    il_copy(il->w.out, cq_qmm_row_bytes(il->w.bits, il->w.in), il->w.bits, r0, nr, il->w.codes, dst, 1);
    return CQ_OK;
}

int cq_qmm_il_wanted(const cq_qmm_w *w)
{
    return cq_qmm_gemv_uses_q8(w);
}

/* Every path other than the int8 GEMV on an interleaved weight: tiles of rows
 * (whole blocks, at most CQ_QMM_IL_TILE bytes of codes) unpacked into a
 * scratch row-layout descriptor, then the row-layout cq_qmm_gemv (n = 0: one
 * GEMV) or cq_qmm_gemm (n >= 1; Y columns of the tile scattered back). */
#define CQ_QMM_IL_TILE ((int64_t)8 << 20)
static int il_tiles(const cq_qmm_il *il, const float *X, int64_t n, float *Y)
{
    const cq_qmm_w *w = &il->w;
    const int64_t rb = cq_qmm_row_bytes(w->bits, w->in), ng = cq_qmm_ngroups(w->group, w->in);
    int64_t T = CQ_QMM_IL_TILE / (rb > 0 ? rb : 1) / CQ_QMM_IL_ROWS * CQ_QMM_IL_ROWS;
    if (T < CQ_QMM_IL_ROWS) T = CQ_QMM_IL_ROWS;
    if (T > w->out) T = w->out;
    const int64_t nn = n > 0 ? n : 1;
    uint8_t *cb = alloc64((size_t)(T * rb));
    float *yt = n > 0 ? alloc64((size_t)(nn * T) * sizeof(float)) : NULL;
    if (!cb || (n > 0 && !yt)) {
        free(cb);
        free(yt);
        cq_error("%s: out of memory (tile of %lld rows)", __func__, (long long)T);
        return CQ_ENOMEM;
    }
    int st = CQ_OK;
    for (int64_t r0 = 0; r0 < w->out && !st; r0 += T) {
        const int64_t nr = w->out - r0 < T ? w->out - r0 : T;
        il_copy(w->out, rb, w->bits, r0, nr, w->codes, cb, 1);
        cq_qmm_w sub = *w;
        sub.out = nr;
        sub.codes = cb;
        sub.scales = w->scales + r0 * ng;
        if (w->rowptr) sub.rowptr = w->rowptr + r0;
        if (n == 0) {
            st = cq_qmm_gemv(&sub, X, Y + r0);
        } else {
            st = cq_qmm_gemm(&sub, X, n, yt);
            for (int64_t t = 0; t < n && !st; t++)
                memcpy(Y + t * w->out + r0, yt + t * nr, (size_t)nr * sizeof(float));
        }
    }
    free(cb);
    free(yt);
    return st;
}

int cq_qmm_il_gemv(const cq_qmm_il *il, const float *x, float *y)
{
    CQ_CHECK_ARG(il, CQ_EINVAL);
    const cq_qmm_w *w = &il->w;
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(x && y, CQ_EINVAL);
    if (w->out == 0) return CQ_OK;
#if CQ_QMM_X86
    cq_qmm_q8plan q8;
    if (q8_for(w, &q8)) {
        q8.il = 1;
        if (il->lanes && w->rowptr) {
            if (cq_qmm_lanes_header(w, il->lanes, il->lanes_bytes)) {
                cq_error("%s: the cherry lanes (%lld bytes) were not built for this weight (out %lld, in %lld)",
                         __func__, (long long)il->lanes_bytes, (long long)w->out, (long long)w->in);
                return CQ_EINVAL;
            }
            q8.lanes = il->lanes;
            q8.lanes_bytes = il->lanes_bytes;
        }
        return gemv_q8(&q8, x, y);
    }
#endif
    return il_tiles(il, x, 0, y);
}

int cq_qmm_il_gemm(const cq_qmm_il *il, const float *X, int64_t n, float *Y)
{
    CQ_CHECK_ARG(il, CQ_EINVAL);
    const cq_qmm_w *w = &il->w;
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(n >= 0, CQ_EINVAL);
    CQ_CHECK_ARG(n == 0 || (X && Y), CQ_EINVAL);
    if (n == 0 || w->out == 0) return CQ_OK;
    if (n < CQ_QMM_GEMM_MIN_N) {
        for (int64_t t = 0; t < n; t++)
            if ((st = cq_qmm_il_gemv(il, X + t * w->in, Y + t * w->out))) return st;
        return CQ_OK;
    }
    return il_tiles(il, X, n, Y);
}

/* ------------------------------------------------------------ GEMV */

typedef void (*gemv_rows_fn)(const cq_qmm_plan *, const float *, const float *, const float *,
                             float *, int64_t, int64_t, float *);
typedef void (*dequant_fn)(const cq_qmm_plan *, int64_t, int64_t, float *, int64_t, float *);

static void pick_kernels(cq_isa isa, gemv_rows_fn *gv, dequant_fn *dq)
{
    *gv = NULL;
    *dq = NULL;
#if CQ_QMM_X86
    if (isa == CQ_ISA_AVX512) {
        *gv = cq_qmm_gemv_rows_avx512;
        *dq = cq_qmm_dequant_avx512;
    } else if (isa == CQ_ISA_AVX2) {
        *gv = cq_qmm_gemv_rows_avx2;
        *dq = cq_qmm_dequant_avx2;
    }
#else
    (void)isa;
#endif
}

typedef struct f32_rows_args {
    gemv_rows_fn gv;
    const cq_qmm_plan *p;
    const float *xp, *gsum, *x;
    float *y;
} f32_rows_args;

static void f32_rows(const void *args, int64_t r0, int64_t r1, float *ws)
{
    const f32_rows_args *a = args;
    a->gv(a->p, a->xp, a->gsum, a->x, a->y, r0, r1, ws);
}

int cq_qmm_gemv(const cq_qmm_w *w, const float *x, float *y)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(x && y, CQ_EINVAL);
    if (w->out == 0) return CQ_OK;

#if CQ_QMM_X86
    cq_qmm_q8plan q8;
    if (q8_for(w, &q8)) return gemv_q8(&q8, x, y);
#endif
    cq_isa isa = pick_isa(w);
    gemv_rows_fn gv;
    dequant_fn dq;
    pick_kernels(isa, &gv, &dq);
    cq_qmm_plan p;
    if (!gv || !cq_qmm_plan_init(&p, w, isa_lanes(isa))) return cq_qmm_gemv_ref(w, x, y);

    const int nt = gemv_threads(w);
    const size_t wsn = 4 * (size_t)(p.ng + 32);
    float *xp = alloc64(((size_t)p.ncols_blk + (size_t)p.ng + 16) * sizeof(float));
    float *ws = alloc64((size_t)nt * wsn * sizeof(float));
    if (!xp || !ws) {
        free(xp);
        free(ws);
        cq_error("%s: out of memory (out %lld in %lld)", __func__, (long long)w->out, (long long)w->in);
        return CQ_ENOMEM;
    }
    float *gsum = xp + p.ncols_blk;
    prep_x(&p, x, xp, gsum);

    f32_rows_args a = { gv, &p, xp, gsum, x, y };
    gemv_row_chunks(w->out, nt, 4, f32_rows, &a, ws, wsn);
    free(xp);
    free(ws);
    return CQ_OK;
}

/* ------------------------------------------------------------ GEMM */

static void apply_cherries(const cq_qmm_plan *p, int64_t r, float *dst)
{
    const cq_qmm_w *w = p->w;
    if (!w->rowptr) return;
    for (int32_t i = w->rowptr[r]; i < w->rowptr[r + 1]; i++)
        if (w->cols[i] < w->in) dst[cq_qmm_perm_pos(p, w->cols[i])] += w->delta[i];
}

int cq_qmm_dequant_rows(const cq_qmm_w *w, int64_t r0, int64_t nr, float *dst)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(r0 >= 0 && nr >= 0 && r0 + nr <= w->out, CQ_EINVAL);
    CQ_CHECK_ARG(nr == 0 || dst, CQ_EINVAL);
    cq_qmm_plan p;
    cq_qmm_plan_init(&p, w, 0);
#pragma omp parallel for schedule(static) if (nr * w->in > 65536)
    for (int64_t i = 0; i < nr; i++) {
        cq_qmm_dequant_row_scalar(&p, r0 + i, dst + i * w->in);
        apply_cherries(&p, r0 + i, dst + i * w->in);
    }
    return CQ_OK;
}

int cq_qmm_gemm(const cq_qmm_w *w, const float *X, int64_t n, float *Y)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(n >= 0, CQ_EINVAL);
    CQ_CHECK_ARG(n == 0 || (X && Y), CQ_EINVAL);
    if (n == 0 || w->out == 0) return CQ_OK;
    if (n < CQ_QMM_GEMM_MIN_N) {
        for (int64_t t = 0; t < n; t++)
            if ((st = cq_qmm_gemv(w, X + t * w->in, Y + t * w->out))) return st;
        return CQ_OK;
    }
    if (n > INT32_MAX || w->out > INT32_MAX || w->in > INT32_MAX) {
        cq_error("%s: shape too large for BLAS (n %lld out %lld in %lld)", __func__,
                 (long long)n, (long long)w->out, (long long)w->in);
        return CQ_EINVAL;
    }

    cq_isa isa = pick_isa(w);
    gemv_rows_fn gv;
    dequant_fn dq;
    pick_kernels(isa, &gv, &dq);
    cq_qmm_plan p;
    if (!dq || !cq_qmm_plan_init(&p, w, isa_lanes(isa))) {
        cq_qmm_plan_init(&p, w, 0);
        dq = NULL;
    }

    const int64_t in = w->in;
    /* Tiles of tr rows are handed out dynamically to the threads; a thread
     * dequantizes its tile into its own f32 buffer, then runs one
     * single-threaded sgemm Y[:, tile] = A tile^T. tr is large enough that
     * sgemm's packing of A (n x in, once per call) stays a few percent of the
     * FLOPs, small enough that the tiles of all threads sit in the LLC. */
    int nt = max_threads();
    const int64_t rows_per_t = (w->out + nt - 1) / nt;
    int64_t tr = (int64_t)(CQ_QMM_TILE_BYTES / ((size_t)in * sizeof(float))) / 16 * 16;
    if (tr < 64) tr = 64;
    if (tr > 256) tr = 256;
    if (tr > rows_per_t) tr = rows_per_t;
    const size_t wsn = 4 * (size_t)(p.ng + 32);
    const size_t tilen = (size_t)tr * (size_t)in;
    float *tile = alloc64((size_t)nt * tilen * sizeof(float));
    float *ws = alloc64((size_t)nt * wsn * sizeof(float));
    float *Xp = p.L ? alloc64((size_t)n * (size_t)in * sizeof(float)) : NULL;
    if (!tile || !ws || (p.L && !Xp)) {
        free(tile);
        free(ws);
        free(Xp);
        cq_error("%s: out of memory (n %lld out %lld in %lld)", __func__, (long long)n,
                 (long long)w->out, (long long)in);
        return CQ_ENOMEM;
    }
    if (p.L) permute_rows(&p, X, n, Xp);
    const float *A = p.L ? Xp : X;

    /* OpenBLAS (pthreads build) would start its own pool inside each call:
     * run it single-threaded in our threads, restore the caller's setting. */
    const int blas_nt = openblas_get_num_threads();
    if (nt > 1) openblas_set_num_threads(1);
    const int64_t ntile = (w->out + tr - 1) / tr;
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num();
#else
        const int t = 0;
#endif
        float *tl = tile + (size_t)t * tilen;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ti = 0; ti < ntile; ti++) {
            const int64_t r0 = ti * tr, nr = r0 + tr <= w->out ? tr : w->out - r0;
            if (dq)
                dq(&p, r0, nr, tl, in, ws + (size_t)t * wsn);
            else
                for (int64_t i = 0; i < nr; i++) cq_qmm_dequant_row_scalar(&p, r0 + i, tl + i * in);
            for (int64_t i = 0; i < nr; i++) apply_cherries(&p, r0 + i, tl + i * in);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)nr, (int)in, 1.0f, A,
                        (int)in, tl, (int)in, 0.0f, Y + r0, (int)w->out);
        }
    }
    if (nt > 1) openblas_set_num_threads(blas_nt);
    free(tile);
    free(ws);
    free(Xp);
    return CQ_OK;
}
