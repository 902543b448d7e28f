/* cherryq: the LLaMA tokenizer read from GGUF metadata (the route a user's
 * llama.cpp-converted model takes) gives the same ids as the same vocabulary
 * handed over as arrays, with bos/eos/unk from the metadata; other tokenizer
 * models and missing arrays are refused with clear errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "gguf.h"
#include "tokenizer.h"

#define NV (3 + 256 + 9)
static char *g_tok[NV];
static float g_score[NV];
static int32_t g_type[NV];
static char g_dir[128];

static void build_vocab(void)
{
    static const char *sp[3] = { "<unk>", "<s>", "</s>" };
    for (int i = 0; i < 3; i++) {
        g_tok[i] = strdup(sp[i]);
        g_type[i] = i == 0 ? 2 : 3;
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        g_tok[3 + b] = strdup(s);
        g_type[3 + b] = 6;
    }
    /* normal pieces; higher score merges first */
    static const char *pc[9] = { "\xe2\x96\x81", "a", "b", "c", "\xe2\x96\x81" "a", "ab",
                                 "\xe2\x96\x81" "ab", "abc", "\xe2\x96\x81" "abc" };
    static const float scs[9] = { -1, -2, -3, -4, -5, -6, -7, -8, -9 };
    for (int i = 0; i < 9; i++) {
        g_tok[259 + i] = strdup(pc[i]);
        g_score[259 + i] = scs[i];
        g_type[259 + i] = 1;
    }
}

static void write_gguf(const char *path, const char *model, int with_tokens)
{
    cq_gguf_writer *w = NULL;
    assert_int_equal(cq_gguf_writer_create(&w, 0), 0);
    assert_int_equal(cq_gguf_writer_add_str(w, "general.architecture", "llama"), 0);
    if (model) assert_int_equal(cq_gguf_writer_add_str(w, "tokenizer.ggml.model", model), 0);
    if (with_tokens) {
        assert_int_equal(cq_gguf_writer_add_arr(w, "tokenizer.ggml.tokens", CQ_GGUF_TYPE_STRING,
                                                (const char *const *)g_tok, NV), 0);
        assert_int_equal(cq_gguf_writer_add_arr(w, "tokenizer.ggml.scores", CQ_GGUF_TYPE_FLOAT32, g_score, NV), 0);
        assert_int_equal(cq_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", CQ_GGUF_TYPE_INT32, g_type, NV), 0);
    }
    assert_int_equal(cq_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1), 0);
    assert_int_equal(cq_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2), 0);
    assert_int_equal(cq_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0), 0);
    assert_int_equal(cq_gguf_writer_write(w, path), 0);
    cq_gguf_writer_destroy(&w);
}

static void test_gguf_route_equals_arrays(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "%s/tok.gguf", g_dir);
    write_gguf(path, "llama", 1);
    cq_tokenizer *a = NULL, *b = NULL;
    assert_int_equal(cq_tokenizer_load_gguf(path, &a), 0);
    assert_int_equal(cq_tokenizer_from_spm_arrays((const char *const *)g_tok, g_score, g_type, NV, 1, 2, 0, &b), 0);
    assert_int_equal(cq_tokenizer_bos(a), 1);
    assert_int_equal(cq_tokenizer_eos(a), 2);
    assert_int_equal(cq_tokenizer_n_vocab(a), NV);
    static const char *texts[] = { "abc ab a", "cab  b\xc3\xa9", "", "aaa bbb ccc abcabc" };
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        int32_t *ia = NULL, *ib = NULL;
        size_t na = 0, nb = 0;
        assert_int_equal(cq_tokenizer_encode(a, texts[t], strlen(texts[t]), 1, &ia, &na), 0);
        assert_int_equal(cq_tokenizer_encode(b, texts[t], strlen(texts[t]), 1, &ib, &nb), 0);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) assert_int_equal(ia[i], ib[i]);
        char *back = NULL;
        size_t bl = 0;
        assert_int_equal(cq_tokenizer_decode(a, ia, na, &back, &bl), 0);
        assert_int_equal(bl, strlen(texts[t]));
        assert_memory_equal(back, texts[t], bl);
        free(back);
        free(ia);
        free(ib);
    }
    /* a known encoding: BOS, then the highest-scoring merges win */
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(cq_tokenizer_encode(a, "abc ab a", 8, 1, &ids, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 259 + 8); /* ▁abc */
    assert_int_equal(ids[2], 259 + 6); /* ▁ab */
    assert_int_equal(ids[3], 259 + 4); /* ▁a */
    free(ids);
    cq_tokenizer_destroy(&a);
    cq_tokenizer_destroy(&b);
    unlink(path);
}

static void test_gguf_refusals(void **state)
{
    (void)state;
    char path[256];
    cq_tokenizer *t = NULL;
    snprintf(path, sizeof path, "%s/gpt2.gguf", g_dir);
    write_gguf(path, "gpt2", 1);
    assert_int_equal(cq_tokenizer_load_gguf(path, &t), CQ_ENOTSUP);
    assert_null(t);
    unlink(path);
    snprintf(path, sizeof path, "%s/none.gguf", g_dir);
    write_gguf(path, NULL, 0);
    assert_true(cq_tokenizer_load_gguf(path, &t) < 0);
    assert_null(t);
    unlink(path);
    snprintf(path, sizeof path, "%s/missing.gguf", g_dir);
    assert_true(cq_tokenizer_load_gguf(path, &t) < 0);
    assert_null(t);
}

int main(void)
{
    build_vocab();
    snprintf(g_dir, sizeof g_dir, "%s/cq_tokgguf_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_route_equals_arrays),
        cmocka_unit_test(test_gguf_refusals),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(g_dir);
    for (int i = 0; i < NV; i++) free(g_tok[i]);
    return r;
}
