/* bench_train: training throughput (forward + backward + AdamW) of a LLaMA
 * config on the CPU backend, and the share of OpenBLAS sgemm's peak that its
 * matmuls reach, both measured in the same run.
 *
 *   bench_train [--config models/default.json] [--steps N] [--threads N] [--quick]
 *
 * Peak: the best of a few C = A B sgemm calls at M = batch*seq, N = K = the
 * largest linear size of the model (and 1024^3), through OpenBLAS directly.
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

static int64_t jint(cJSON *j, const char *k, int64_t def)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(it) ? (int64_t)it->valuedouble : def;
}

int main(int argc, char **argv)
{
    const char *cfg_path = CQ_SOURCE_DIR "/models/default.json";
    int steps = 10, threads = 0, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) cfg_path = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else {
            fprintf(stderr, "usage: bench_train [--config FILE.json] [--steps N] [--threads N] [--quick]\n");
            return 2;
        }
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
    int64_t batch = jint(j, "batch", 16), seq = cfg.max_seq;
    cJSON_Delete(j);
    if (quick) {
        steps = 2;
        batch = 2;
    }
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    cq_set_num_threads(threads);
    openblas_set_num_threads(threads);

    cq_backend *be = NULL;
    if (cq_backend_create(&be, "cpu", -1)) return 1;
    cq_llama *m = NULL;
    if (cq_llama_create(&m, &cfg, be, 1)) return 1;
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
    cq_trainer *t = NULL;
    if (cq_trainer_create(&t, m, &o, tok, ntok, NULL, 0)) return 1;
    for (int i = 0; i < warm; i++)
        if (cq_trainer_step(t, NULL)) return 1;
    double t0 = cq_time_sec();
    for (int i = 0; i < steps; i++)
        if (cq_trainer_step(t, NULL)) return 1;
    double el = cq_time_sec() - t0;
    double tokens = (double)steps * (double)(batch * seq);
    double tps = tokens / el;

    int64_t qd = cfg.n_heads * cfg.head_dim, kvd = cfg.n_kv_heads * cfg.head_dim;
    double lin = (double)cfg.n_layers * (double)(2 * dim * qd + 2 * dim * kvd + 3 * dim * cfg.ffn) +
                 (double)cfg.vocab * (double)dim;
    double attn = (double)cfg.n_layers * 2.0 * (double)seq * (double)qd;
    double flop_tok = 6.0 * lin + 6.0 * attn;
    int M = (int)(batch * seq), N = (int)(cfg.ffn > dim ? cfg.ffn : dim);
    if (cfg.vocab > N) N = (int)cfg.vocab;
    double peak_model = sgemm_gflops(M, N, (int)dim, quick ? 2 : 5);
    double peak_sq = sgemm_gflops(1024, 1024, 1024, quick ? 2 : 5);
    double peak = peak_model > peak_sq ? peak_model : peak_sq;
    double achieved = flop_tok * tps / 1e9;
    printf("bench_train: cpu %s\n", be->device);
    printf("config %s: vocab %lld dim %lld layers %lld heads %lld/%lld ffn %lld seq %lld, %.2fM params\n", cfg_path,
           (long long)cfg.vocab, (long long)dim, (long long)cfg.n_layers, (long long)cfg.n_heads,
           (long long)cfg.n_kv_heads, (long long)cfg.ffn, (long long)seq, (double)cq_llama_config_n_params(&cfg) / 1e6);
    printf("training: %d steps of %lld x %lld tokens in %.2fs: %.0f tokens/s (threads %d)\n", steps, (long long)batch,
           (long long)seq, el, tps, threads);
    printf("matmul FLOPs per token %.1fM (linear %.1fM, attention %.1fM): %.1f GFLOP/s achieved\n", flop_tok / 1e6,
           6.0 * lin / 1e6, 6.0 * attn / 1e6, achieved);
    printf("OpenBLAS sgemm peak: %.1f GFLOP/s (M=%d N=%d K=%lld: %.1f; 1024^3: %.1f); share %.1f%%\n", peak, M, N,
           (long long)dim, peak_model, peak_sq, 100.0 * achieved / peak);
    printf("{\"impl\": \"cherryq\", \"tokens_per_s\": %.1f, \"gflops\": %.2f, \"sgemm_peak_gflops\": %.2f, "
           "\"threads\": %d, \"batch\": %lld, \"seq\": %lld}\n",
           tps, achieved, peak, threads, (long long)batch, (long long)seq);
    cq_trainer_destroy(&t);
    cq_llama_destroy(&m);
    cq_backend_destroy(&be);
    free(tok);
    return (isfinite(tps) && tps > 0) ? 0 : 1;
}
