/* bench_train: training throughput (forward + backward + AdamW) of a LLaMA
 * config on a backend, and the share of the backend's GEMM peak that its
 * matmuls reach, both measured in the same run; optionally the impact
 * (Fisher diagonal) accumulation speed.
 *
 *   bench_train [--config models/default.json] [--steps N] [--threads N] [--quick]
 *               [--backend cpu|vulkan|cuda] [--batch N] [--seq N]
 *               [--compute-dtype f32|bf16|f16] [--checkpoint-activations]
 *               [--offload-optimizer] [--xent-chunk N] [--impact WINDOWS]
 *
 * Peak on the CPU: the best of a few C = A B sgemm calls at M = batch*seq,
 * N = K = the largest linear size of the model (and 1024^3), through
 * OpenBLAS directly. On another backend: the best of a few MATMUL ops of the
 * backend itself (cuBLAS on CUDA) in the compute dtype (bf16 x bf16 -> f32
 * with --compute-dtype bf16), at the model's largest shape and at 8192^3.
 * Matmul FLOPs of one step, counted analytically: linear layers (q,k,v,o,
 * gate,up,down, lm_head) 6 * tokens * params (2 forward, 4 backward) and
 * attention's QK^T and PV 6 * 2 * tokens * seq * heads * head_dim (full,
 * non-causal squares: what a dense kernel computes). Prints one JSON line
 * last (for tools/bench_train.sh).
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cq_io.h"
#include "llama.h"
#include "pipeline.h"
#include "train.h"

#ifndef CQ_SOURCE_DIR
#define CQ_SOURCE_DIR "."
#endif

static double sgemm_gflops(int M, int N, int K, int reps)
{
    float *a = malloc((size_t)M * K * sizeof(float)), *b = malloc((size_t)K * N * sizeof(float)),
          *c = malloc((size_t)M * N * sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)((i * 7) % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)((i * 5) % 11) * 0.01f;
    double best = 0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    for (int r = 0; r < reps; r++) {
        double t0 = cq_time_sec();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
        double g = 2.0 * M * N * K / (cq_time_sec() - t0) / 1e9;
        if (g > best) best = g;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* TFLOP/s of the backend's MATMUL op, C[M,N] = A[M,K] B[N,K]^T (a linear's
 * layout) with A, B in dtype dt, best of reps. 0 on any failure. */
static double backend_gemm_tflops(cq_backend *be, cq_dtype dt, int64_t M, int64_t N, int64_t K, int reps)
{
    cq_tensor *a32 = NULL, *b32 = NULL, *a = NULL, *b = NULL, *c = NULL;
    double best = 0;
    int64_t ea[2] = { M, K }, eb[2] = { N, K }, ec[2] = { M, N };
    float *h = malloc((size_t)(M > N ? M : N) * (size_t)K * sizeof(float));
    if (!h || cq_tensor_new(&a32, be, CQ_F32, 2, ea) || cq_tensor_new(&b32, be, CQ_F32, 2, eb) ||
        (dt != CQ_F32 && (cq_tensor_new(&a, be, dt, 2, ea) || cq_tensor_new(&b, be, dt, 2, eb))) ||
        cq_tensor_new(&c, be, CQ_F32, 2, ec))
        goto done;
    for (int64_t i = 0; i < M * K; i++) h[i] = (float)((i * 7) % 13) * 0.01f - 0.06f;
    if (cq_tensor_set_f32(a32, h)) goto done;
    for (int64_t i = 0; i < N * K; i++) h[i] = (float)((i * 5) % 11) * 0.01f - 0.05f;
    if (cq_tensor_set_f32(b32, h)) goto done;
    if (dt == CQ_F32) {   /* the f32 operands themselves */
        a = a32;
        b = b32;
        a32 = b32 = NULL;
    } else {              /* converted on the backend */
        cq_op cp = { .type = CQ_OP_COPY };
        cp.src[0] = a32;
        cp.dst[0] = a;
        if (cq_op_run(be, &cp)) goto done;
        cp.src[0] = b32;
        cp.dst[0] = b;
        if (cq_op_run(be, &cp)) goto done;
    }
    cq_op op = { .type = CQ_OP_MATMUL };
    op.src[0] = a;
    op.src[1] = b;
    op.dst[0] = c;
    op.f[0] = 1.0f;
    op.i[1] = 1;
    if (cq_op_run(be, &op) || cq_backend_sync(be)) goto done;
    for (int r = 0; r < reps; r++) {
        double t0 = cq_time_sec();
        for (int k = 0; k < 4; k++)
            if (cq_op_run(be, &op)) goto done;
        if (cq_backend_sync(be)) goto done;
        double t = 2.0 * (double)M * (double)N * (double)K * 4 / (cq_time_sec() - t0) / 1e12;
        if (t > best) best = t;
    }
done:
    cq_tensor_free(&a32);
    cq_tensor_free(&b32);
    cq_tensor_free(&a);
    cq_tensor_free(&b);
    cq_tensor_free(&c);
    free(h);
    return best;
}

/* impact progress: the time of the first and the last window reports, so
 * the steady per-window rate excludes the setup (Fisher allocation) and the
 * end (its download to the host and the finiteness check), which dominate a
 * short run on a large model */
typedef struct imp_clock {
    double t_first, t_last;
    int64_t w_first, w_last;
} imp_clock;

static void imp_tick(void *user, const char *stage, int64_t done, int64_t total, double value)
{
    (void)stage;
    (void)total;
    (void)value;
    imp_clock *k = user;
    double t = cq_time_sec();
    if (!k->w_first) {
        k->w_first = done;
        k->t_first = t;
    }
    k->w_last = done;
    k->t_last = t;
}

static int64_t jint(cJSON *j, const char *k, int64_t def)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(it) ? (int64_t)it->valuedouble : def;
}

int main(int argc, char **argv)
{
    const char *cfg_path = CQ_SOURCE_DIR "/models/default.json";
    const char *backend = "cpu", *dtname = "f32";
    int steps = 10, threads = 0, quick = 0, ckpt = 0, offload = 0;
    long long batch_arg = 0, seq_arg = 0, xent_chunk = 0, impact_windows = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) cfg_path = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch_arg = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) seq_arg = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--compute-dtype") && i + 1 < argc) dtname = argv[++i];
        else if (!strcmp(argv[i], "--xent-chunk") && i + 1 < argc) xent_chunk = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--impact") && i + 1 < argc) impact_windows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--checkpoint-activations")) ckpt = 1;
        else if (!strcmp(argv[i], "--offload-optimizer")) offload = 1;
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else {
            fprintf(stderr, "usage: bench_train [--config FILE.json] [--steps N] [--threads N] [--quick]\n"
                            "                   [--backend NAME] [--batch N] [--seq N] [--compute-dtype f32|bf16|f16]\n"
                            "                   [--checkpoint-activations] [--offload-optimizer] [--xent-chunk N]\n"
                            "                   [--impact WINDOWS]\n");
            return 2;
        }
    }
    cq_dtype cdt = !strcmp(dtname, "bf16") ? CQ_BF16 : !strcmp(dtname, "f16") ? CQ_F16 : CQ_F32;
    if (cdt == CQ_F32 && strcmp(dtname, "f32")) {
        fprintf(stderr, "bench_train: --compute-dtype '%s': expected f32, bf16 or f16\n", dtname);
        return 2;
    }
    if (steps < 1 || batch_arg < 0 || seq_arg < 0 || xent_chunk < 0 || impact_windows < 0) {
        fprintf(stderr, "bench_train: --steps must be >= 1 and sizes >= 0\n");
        return 2;
    }
    char *txt = NULL;
    size_t len = 0;
    if (cq_read_file(cfg_path, &txt, &len, 1u << 20)) return 1;
    cJSON *j = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!j) {
        fprintf(stderr, "bench_train: %s: bad JSON\n", cfg_path);
        return 1;
    }
    int64_t dim = jint(j, "dim", 256), heads = jint(j, "heads", 8);
    cq_llama_config cfg = {
        .vocab = jint(j, "vocab", 4096), .dim = dim, .ffn = jint(j, "ffn", 688), .n_layers = jint(j, "layers", 4),
        .n_heads = heads, .n_kv_heads = jint(j, "kv-heads", heads), .head_dim = dim / heads,
        .max_seq = jint(j, "seq", 256), .norm_eps = 1e-5f, .rope_theta = 10000.0f, .bos = -1, .eos = -1,
    };
    if (seq_arg) cfg.max_seq = seq_arg;
    int64_t batch = batch_arg ? batch_arg : jint(j, "batch", 16), seq = cfg.max_seq;
    cJSON_Delete(j);
    if (quick) {
        steps = 2;
        batch = 2;
    }
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    cq_set_num_threads(threads);
    openblas_set_num_threads(threads);

    cq_backend *be = NULL;
    if (cq_backend_create(&be, backend, -1)) return 1;
    int on_cpu = !strcmp(be->name, "cpu");
    cq_llama *m = NULL;
    if (cq_llama_create(&m, &cfg, be, 1)) return 1;
    m->checkpoint = ckpt;
    m->xent_chunk = xent_chunk;
    m->compute = cdt;
    size_t ntok = 1u << 18;
    int32_t *tok = malloc(ntok * sizeof *tok);
    uint64_t s = 42;
    for (size_t i = 0; i < ntok; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % (uint64_t)cfg.vocab);
    }
    const int warm = 2;
    cq_train_opts o;
    cq_train_opts_default(&o);
    o.steps = warm + steps;
    o.batch = batch;
    o.seq = seq;
    o.warmup = 1;
    o.offload_optimizer = offload;
    cq_trainer *t = NULL;
    if (cq_trainer_create(&t, m, &o, tok, ntok, NULL, 0)) return 1;
    for (int i = 0; i < warm; i++)
        if (cq_trainer_step(t, NULL)) return 1;
    double t0 = cq_time_sec();
    for (int i = 0; i < steps; i++)
        if (cq_trainer_step(t, NULL)) return 1;
    if (cq_backend_sync(be)) return 1;
    double el = cq_time_sec() - t0;
    double tokens = (double)steps * (double)(batch * seq);
    double tps = tokens / el;
    cq_trainer_destroy(&t);

    /* impact: E[g^2] over windows of seq tokens (one window per backward, as
     * the pipeline does), the model as trained above */
    double imp_tps = 0, imp_steady = 0;
    if (impact_windows > 0) {
        cq_calib cal = { 0 };
        cq_impact imp = { 0 };
        imp_clock clk = { 0 };
        if (cq_calib_sample(&cal, tok, (int64_t)ntok, impact_windows, seq, 7)) return 1;
        double ti = cq_time_sec();
        if (cq_impact_compute(&imp, m, &cal, imp_tick, &clk)) return 1;
        imp_tps = (double)impact_windows * (double)seq / (cq_time_sec() - ti);
        if (clk.w_last > clk.w_first && clk.t_last > clk.t_first)
            imp_steady = (double)(clk.w_last - clk.w_first) * (double)seq / (clk.t_last - clk.t_first);
        cq_impact_free(&imp);
        cq_calib_free(&cal);
    }

    int64_t qd = cfg.n_heads * cfg.head_dim, kvd = cfg.n_kv_heads * cfg.head_dim;
    double lin = (double)cfg.n_layers * (double)(2 * dim * qd + 2 * dim * kvd + 3 * dim * cfg.ffn) +
                 (double)cfg.vocab * (double)dim;
    double attn = (double)cfg.n_layers * 2.0 * (double)seq * (double)qd;
    double flop_tok = 6.0 * lin + 6.0 * attn;
    int M = (int)(batch * seq), N = (int)(cfg.ffn > dim ? cfg.ffn : dim);
    if (cfg.vocab > N) N = (int)cfg.vocab;
    double peak_model, peak_sq;
    int64_t sq = on_cpu ? 1024 : (quick ? 2048 : 8192);
    if (on_cpu) {
        peak_model = sgemm_gflops(M, N, (int)dim, quick ? 2 : 5);
        peak_sq = sgemm_gflops(1024, 1024, 1024, quick ? 2 : 5);
    } else {
        peak_model = 1e3 * backend_gemm_tflops(be, cdt, M, N, dim, quick ? 2 : 5);
        peak_sq = 1e3 * backend_gemm_tflops(be, cdt, sq, sq, sq, quick ? 2 : 5);
    }
    double peak = peak_model > peak_sq ? peak_model : peak_sq;
    double achieved = flop_tok * tps / 1e9;
    printf("bench_train: %s %s\n", be->name, be->device);
    printf("options: compute %s%s%s, xent chunk %lld\n", dtname, ckpt ? ", checkpointed activations" : "",
           offload ? ", optimizer states in host memory" : "", xent_chunk);
    printf("config %s: vocab %lld dim %lld layers %lld heads %lld/%lld ffn %lld seq %lld, %.2fM params\n", cfg_path,
           (long long)cfg.vocab, (long long)dim, (long long)cfg.n_layers, (long long)cfg.n_heads,
           (long long)cfg.n_kv_heads, (long long)cfg.ffn, (long long)seq, (double)cq_llama_config_n_params(&cfg) / 1e6);
    printf("training: %d steps of %lld x %lld tokens in %.2fs: %.0f tokens/s (threads %d)\n", steps, (long long)batch,
           (long long)seq, el, tps, threads);
    printf("matmul FLOPs per token %.1fM (linear %.1fM, attention %.1fM): %.1f GFLOP/s achieved\n", flop_tok / 1e6,
           6.0 * lin / 1e6, 6.0 * attn / 1e6, achieved);
    printf("%s peak: %.1f GFLOP/s (M=%d N=%d K=%lld: %.1f; %lld^3: %.1f); share %.1f%%\n",
           on_cpu ? "OpenBLAS sgemm" : "backend MATMUL", peak, M, N, (long long)dim, peak_model, (long long)sq, peak_sq,
           100.0 * achieved / peak);
    if (impact_windows > 0)
        printf("impact: %lld windows of %lld tokens: %.0f tokens/s overall (Fisher setup and download included), "
               "%.0f tokens/s between the first and the last window\n",
               impact_windows, (long long)seq, imp_tps, imp_steady);
    printf("{\"impl\": \"cherryq\", \"backend\": \"%s\", \"compute\": \"%s\", \"tokens_per_s\": %.1f, "
           "\"gflops\": %.2f, \"sgemm_peak_gflops\": %.2f, \"impact_tokens_per_s\": %.1f, \"impact_steady_tokens_per_s\": %.1f, "
           "\"threads\": %d, \"batch\": %lld, \"seq\": %lld}\n",
           be->name, dtname, tps, achieved, peak, imp_tps, imp_steady, threads, (long long)batch, (long long)seq);
    cq_llama_destroy(&m);
    cq_backend_destroy(&be);
    free(tok);
    return (isfinite(tps) && tps > 0) ? 0 : 1;
}
