/* cherryq: op benchmark. Times ops through the tensor core (validation,
 * dispatch, backend) against calling OpenBLAS directly in the same run.
 * Usage: bench_ops [--quick] [--backend NAME] */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cq_ops.h"

static double best_of(int reps, double (*fn)(void *), void *arg)
{
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t = fn(arg);
        if (t < best) best = t;
    }
    return best;
}

typedef struct {
    cq_backend *be;
    cq_tensor *a, *b, *c;
    int M, N, K;
    float *ha, *hb, *hc;
} mm_arg;

static double run_core(void *p)
{
    mm_arg *m = p;
    cq_op op = { .type = CQ_OP_MATMUL };
    op.src[0] = m->a;
    op.src[1] = m->b;
    op.dst[0] = m->c;
    op.f[0] = 1.0f;
    double t0 = cq_time_sec();
    if (cq_op_run(m->be, &op)) return 1e30;
    cq_backend_sync(m->be);
    return cq_time_sec() - t0;
}

static double run_blas(void *p)
{
    mm_arg *m = p;
    double t0 = cq_time_sec();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m->M, m->N, m->K, 1.0f, m->ha, m->K, m->hb, m->N, 0.0f,
                m->hc, m->N);
    return cq_time_sec() - t0;
}

static void bench_matmul(cq_backend *be, int M, int K, int N, int reps)
{
    mm_arg m = { .be = be, .M = M, .N = N, .K = K };
    int64_t an[2] = { M, K }, bn[2] = { K, N }, cn[2] = { M, N };
    cq_tensor_new(&m.a, be, CQ_F32, 2, an);
    cq_tensor_new(&m.b, be, CQ_F32, 2, bn);
    cq_tensor_new(&m.c, be, CQ_F32, 2, cn);
    m.ha = malloc((size_t)M * K * 4);
    m.hb = malloc((size_t)K * N * 4);
    m.hc = malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++) m.ha[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    for (size_t i = 0; i < (size_t)K * N; i++) m.hb[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
    cq_tensor_set(m.a, m.ha, (size_t)M * K * 4);
    cq_tensor_set(m.b, m.hb, (size_t)K * N * 4);
    run_core(&m); /* warm up both */
    run_blas(&m);
    double tc = 1e30, tb = 1e30;
    for (int r = 0; r < reps; r++) { /* interleave to share machine noise */
        double x = run_core(&m), y = run_blas(&m);
        if (x < tc) tc = x;
        if (y < tb) tb = y;
    }
    double fl = 2.0 * M * N * K;
    printf("matmul %5dx%5dx%5d  core %8.3f ms %7.1f GFLOP/s | direct sgemm %8.3f ms %7.1f GFLOP/s | core/direct time %.3f\n",
           M, K, N, tc * 1e3, fl / tc * 1e-9, tb * 1e3, fl / tb * 1e-9, tc / tb);
    cq_tensor_free(&m.a);
    cq_tensor_free(&m.b);
    cq_tensor_free(&m.c);
    free(m.ha);
    free(m.hb);
    free(m.hc);
}

typedef struct {
    cq_backend *be;
    cq_op op;
} op_arg;

static double run_op(void *p)
{
    op_arg *o = p;
    double t0 = cq_time_sec();
    if (cq_op_run(o->be, &o->op)) return 1e30;
    cq_backend_sync(o->be);
    return cq_time_sec() - t0;
}

static cq_tensor *mk(cq_backend *be, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t ne[4] = { a, b, c, d };
    cq_tensor *t = NULL;
    cq_tensor_new(&t, be, CQ_F32, nd, ne);
    return t;
}

static void bench_misc(cq_backend *be, int reps)
{
    /* a LLaMA-7B-like slice: 512 tokens, dim 4096, 32 heads of 128 */
    int64_t T = 512, C = 4096, H = 32, D = 128;
    op_arg o = { .be = be };
    cq_tensor *x = mk(be, 2, T, C, 0, 0), *w = mk(be, 1, C, 0, 0, 0), *y = mk(be, 2, T, C, 0, 0);
    o.op = (cq_op){ .type = CQ_OP_RMSNORM };
    o.op.src[0] = x;
    o.op.src[1] = w;
    o.op.dst[0] = y;
    o.op.f[0] = 1e-5f;
    double t = best_of(reps, run_op, &o);
    printf("rmsnorm   [%lld, %lld]            %8.3f ms  %6.1f GB/s\n", (long long)T, (long long)C, t * 1e3,
           2.0 * T * C * 4 / t * 1e-9);
    cq_tensor *q = mk(be, 4, 1, T, H, D), *qo = mk(be, 4, 1, T, H, D);
    o.op = (cq_op){ .type = CQ_OP_ROPE };
    o.op.src[0] = q;
    o.op.dst[0] = qo;
    o.op.f[0] = 10000.0f;
    t = best_of(reps, run_op, &o);
    printf("rope      [1, %lld, %lld, %lld]      %8.3f ms\n", (long long)T, (long long)H, (long long)D, t * 1e3);
    cq_tensor *k = mk(be, 4, 1, T, H / 4, D), *v = mk(be, 4, 1, T, H / 4, D);
    int64_t ln[3] = { 1, H, T };
    cq_tensor *lse = NULL;
    cq_tensor_new(&lse, be, CQ_F32, 3, ln);
    o.op = (cq_op){ .type = CQ_OP_ATTN };
    o.op.src[0] = q;
    o.op.src[1] = k;
    o.op.src[2] = v;
    o.op.dst[0] = qo;
    o.op.dst[1] = lse;
    o.op.f[0] = 1.0f / sqrtf((float)D);
    t = best_of(reps, run_op, &o);
    printf("attention T=%lld Hq=%lld Hkv=%lld D=%lld  %8.3f ms  %6.1f GFLOP/s (QK^T and PV over full T x T blocks)\n",
           (long long)T, (long long)H, (long long)H / 4, (long long)D, t * 1e3, 4.0 * H * T * T * D / t * 1e-9);
    cq_tensor *g = mk(be, 2, T, 11008, 0, 0), *u = mk(be, 2, T, 11008, 0, 0), *s = mk(be, 2, T, 11008, 0, 0);
    o.op = (cq_op){ .type = CQ_OP_SWIGLU };
    o.op.src[0] = g;
    o.op.src[1] = u;
    o.op.dst[0] = s;
    t = best_of(reps, run_op, &o);
    printf("swiglu    [%lld, 11008]            %8.3f ms  %6.1f GB/s\n", (long long)T, t * 1e3, 3.0 * T * 11008 * 4 / t * 1e-9);
    cq_tensor *lg = mk(be, 2, T, 32000, 0, 0), *loss = mk(be, 1, 1, 0, 0, 0), *ls = mk(be, 1, T, 0, 0, 0);
    cq_tensor *tg = NULL;
    cq_tensor_new(&tg, be, CQ_I32, 1, &T);
    o.op = (cq_op){ .type = CQ_OP_XENT };
    o.op.src[0] = lg;
    o.op.src[1] = tg;
    o.op.dst[0] = loss;
    o.op.dst[1] = ls;
    o.op.f[0] = 1.0f;
    t = best_of(reps, run_op, &o);
    printf("xent      [%lld, 32000]            %8.3f ms  %6.1f GB/s\n", (long long)T, t * 1e3, (double)T * 32000 * 4 / t * 1e-9);
    cq_tensor *ts[] = { x, w, y, q, qo, k, v, lse, g, u, s, lg, loss, ls, tg };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) cq_tensor_free(&ts[i]);
}

int main(int argc, char **argv)
{
    int quick = 0;
    const char *bname = "cpu";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) bname = argv[++i];
        else {
            fprintf(stderr, "usage: bench_ops [--quick] [--backend cpu|vulkan|cuda]\n");
            return 2;
        }
    }
    cq_backend *be = NULL;
    if (cq_backend_create(&be, bname, -1)) return 1;
    printf("cherryq bench_ops: backend %s (%s), %d threads\n", be->name, be->device, cq_num_threads());
    int reps = quick ? 2 : 5;
    if (quick) {
        bench_matmul(be, 256, 256, 256, reps);
    } else {
        bench_matmul(be, 1024, 1024, 1024, reps);
        bench_matmul(be, 4096, 4096, 256, reps);
        bench_misc(be, reps);
    }
    cq_backend_destroy(&be);
    return 0;
}
