/* Fuzz target: the trainer checkpoint reader (cq_trainer_load of
 * <dir>/trainer.ckpt, models/train.c) for a fixed tiny model with one
 * trainer; keep_best is taken from the input's first byte so both layouts
 * occur.
 *
 * Input: byte 0 (bit 0: keep_best), then the checkpoint WITHOUT its 8-byte
 * FNV-1a trailer: the harness appends the right checksum, otherwise the
 * fuzzer would stop at the checksum test and never reach the parser behind
 * it (a mismatching checksum is one branch, covered by the seeds being
 * written with it). CQ_FUZZ_WRITE_SEED=DIR writes seeds (a real checkpoint
 * of each layout, in this input format) into DIR and exits. */
#include "fuzz_common.h"
#include "train.h"

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int32_t g_tokens[64];

static cq_trainer *trainer(int keep_best)
{
    static cq_backend *be;
    static cq_llama *m[2];
    static cq_trainer *t[2];
    if (t[keep_best]) return t[keep_best];
    if (!be && cq_backend_create(&be, "cpu", -1) != 0) abort();
    cq_llama_config c = { .vocab = 10, .dim = 8, .ffn = 12, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                          .head_dim = 4, .max_seq = 16, .norm_eps = 1e-5f, .rope_theta = 10000.0f,
                          .tie_embeddings = false, .bos = 1, .eos = 2 };
    if (cq_llama_create(&m[keep_best], &c, be, 7) != 0) abort();
    for (int i = 0; i < 64; i++) g_tokens[i] = (i * 7) % 10;
    cq_train_opts o;
    cq_train_opts_default(&o);
    o.steps = 2;
    o.batch = 1;
    o.seq = 4;
    o.keep_best = keep_best;
    if (cq_trainer_create(&t[keep_best], m[keep_best], &o, g_tokens, 64, NULL, 0) != 0) abort();
    return t[keep_best];
}

static void write_seeds(const char *out)
{
    const char *dir = fuzz_tmpdir();
    for (int kb = 0; kb < 2; kb++) {
        cq_trainer *t = trainer(kb);
        if (cq_trainer_step(t, NULL) != 0 || cq_trainer_save(t, dir) != 0) abort();
        char p[512];
        snprintf(p, sizeof p, "%s/trainer.ckpt", dir);
        FILE *f = fopen(p, "rb");
        static uint8_t buf[1 << 20];
        size_t n = f ? fread(buf + 1, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        if (n < 8) abort();
        buf[0] = (uint8_t)kb;
        snprintf(p, sizeof p, "%s/ckpt_keep_best_%d", out, kb);
        f = fopen(p, "wb");
        if (!f || fwrite(buf, 1, n + 1 - 8, f) != n + 1 - 8) abort();
        fclose(f);
    }
    _exit(0); /* not exit(): libFuzzer reports a target that exits */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    const char *seeds = getenv("CQ_FUZZ_WRITE_SEED");
    if (seeds) write_seeds(seeds);
    if (size < 1) return 0;
    cq_trainer *t = trainer(data[0] & 1);
    const char *dir = fuzz_tmpdir();
    size_t n = size - 1;
    uint8_t *file = malloc(n + 8);
    if (!file) return 0;
    memcpy(file, data + 1, n);
    uint64_t h = fnv1a(file, n);
    memcpy(file + n, &h, 8); /* little-endian host, as the writer does */
    fuzz_write_file(dir, "trainer.ckpt", file, n + 8);
    free(file);
    if (cq_trainer_load(t, dir) == 0) {
        if (cq_trainer_step_count(t) < 0) abort();
        /* a restored trainer can take a step (weights may be anything) */
        cq_trainer_step(t, NULL);
    }
    return 0;
}
