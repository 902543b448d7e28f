/* Tokenizer tests: byte-level BPE (training, round trips, save/load, golden
 * ids from Hugging Face tokenizers.js), LLaMA SentencePiece-style BPE (golden
 * ids from tokenizers.js on a hand-made LLaMA-layout vocab, GGUF scores route
 * vs merges route, decoding), malformed inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "cq_base.h"
#include "cq_io.h"
#include "tokenizer.h"

#ifndef CQ_TEST_FIXTURES   /* tests/meson.build passes the absolute path */
#define CQ_TEST_FIXTURES "../../tests/fixtures"
#endif
#define TOKDIR CQ_TEST_FIXTURES "/tok"

static const char *SP = "\xE2\x96\x81";

/* ------------------------------------------------------------ helpers */
static uint64_t rng_state = 0x12345678ull;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* quiet logging for tests that expect errors */
static int n_errors;
static void count_log(cq_log_level lvl, const char *msg, void *user)
{
    (void)msg; (void)user;
    if (lvl == CQ_LOG_ERROR) n_errors++;
}
static void quiet(void) { n_errors = 0; cq_log_set_callback(count_log, NULL); }
static void loud(void) { cq_log_set_callback(NULL, NULL); }

static char *gen_text(size_t len, uint64_t seed)
{
    static const char *syl[] = { "the", "and", "of", "lo", "rd", "king", "is", "ra", "el", "go",
                                 "d", "a", "be", "gin", "ning", "earth", "hea", "ven", "s", "th" };
    static const char *sep[] = { " ", " ", " ", " ", ", ", ". ", "\n", "; ", ": ", "  ", "'s " };
    char *s = malloc(len + 1);
    rng_state = seed;
    size_t o = 0;
    while (o < len) {
        int nsyl = 1 + rnd() % 3;
        for (int k = 0; k < nsyl && o < len; k++) {
            const char *p = syl[rnd() % 20];
            if (k == 0 && rnd() % 7 == 0 && o < len) s[o++] = (char)('A' + rnd() % 26);
            for (; *p && o < len; p++) s[o++] = *p;
        }
        if (rnd() % 13 == 0)
            for (int d = 0, nd = 1 + rnd() % 3; d < nd && o < len; d++) s[o++] = (char)('0' + rnd() % 10);
        const char *p = sep[rnd() % 11];
        for (; *p && o < len; p++) s[o++] = *p;
    }
    s[len] = 0;
    return s;
}

static void assert_roundtrip(const cq_tokenizer *t, const char *s, size_t n)
{
    int32_t *ids;
    size_t nid;
    assert_int_equal(cq_tokenizer_encode(t, s, n, 0, &ids, &nid), 0);
    assert_non_null(ids);
    char *d;
    size_t dl;
    assert_int_equal(cq_tokenizer_decode(t, ids, nid, &d, &dl), 0);
    if (dl != n || memcmp(d, s, n) != 0) {
        fprintf(stderr, "round trip failed for %zu bytes -> %zu tokens -> %zu bytes\n", n, nid, dl);
        fail();
    }
    free(d);
    free(ids);
}

static int ids_equal(const int32_t *a, size_t na, const cJSON *arr)
{
    if ((size_t)cJSON_GetArraySize(arr) != na) return 0;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) if ((int32_t)e->valuedouble != a[i++]) return 0;
    return 1;
}

static void print_ids(const char *what, const int32_t *a, size_t n)
{
    fprintf(stderr, "%s:", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", a[i]);
    fprintf(stderr, "\n");
}

/* Checks every golden case of a file: encode gives the ids, decode gives
 * "decoded". */
static void check_golden(const cq_tokenizer *t, const char *path)
{
    char *js;
    size_t jn;
    assert_int_equal(cq_read_file(path, &js, &jn, 1 << 24), 0);
    cJSON *root = cJSON_ParseWithLength(js, jn);
    assert_non_null(root);
    assert_true(cJSON_GetArraySize(root) >= 10);
    const cJSON *c;
    int bad = 0;
    cJSON_ArrayForEach(c, root) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        const char *dec = cJSON_GetObjectItem(c, "decoded")->valuestring;
        int32_t *ids;
        size_t n;
        assert_int_equal(cq_tokenizer_encode(t, text, strlen(text), 0, &ids, &n), 0);
        if (!ids_equal(ids, n, want)) {
            fprintf(stderr, "golden mismatch for \"%s\"\n", text);
            print_ids(" got", ids, n);
            char *w = cJSON_PrintUnformatted(want);
            fprintf(stderr, " want: %s\n", w);
            free(w);
            bad++;
        }
        char *d;
        assert_int_equal(cq_tokenizer_decode(t, ids, n, &d, NULL), 0);
        if (strcmp(d, dec) != 0) {
            fprintf(stderr, "decode mismatch: \"%s\" vs \"%s\"\n", d, dec);
            bad++;
        }
        free(d);
        free(ids);
    }
    cJSON_Delete(root);
    free(js);
    assert_int_equal(bad, 0);
}

static int32_t find(const cq_tokenizer *t, const char *s)
{
    return cq_tokenizer_find(t, s, strlen(s));
}

/* ------------------------------------------------------------ pre-tokenizer */
static void test_pretokenizer(void **state)
{
    (void)state;
    const char *text = "Hello world  foo\n\nbar's 123!! x\t\ty  \n it's'' ' s\xC3\xA9t\xC3\xA9 ";
    const char *want[] = { "Hello", " world", " ", " foo", "\n", "\n", "bar", "'s", " 123", "!!",
                           " x", "\t", "\t", "y", "  \n", " it", "'s", "''", " '", " s\xC3\xA9t\xC3\xA9",
                           " " };
    size_t n = strlen(text), i = 0, k = 0;
    while (i < n) {
        size_t l = cq_bpe_next_word(text + i, n - i);
        assert_true(l >= 1 && l <= n - i);
        assert_true(k < sizeof(want) / sizeof(want[0]));
        if (l != strlen(want[k]) || memcmp(text + i, want[k], l) != 0) {
            fprintf(stderr, "word %zu: got \"%.*s\" want \"%s\"\n", k, (int)l, text + i, want[k]);
            fail();
        }
        i += l;
        k++;
    }
    assert_int_equal(k, sizeof(want) / sizeof(want[0]));
    assert_int_equal(cq_bpe_next_word("", 0), 0);
}

/* ------------------------------------------------------------ byte-level BPE */
static void test_byte_known_merges(void **state)
{
    (void)state;
    cq_tokenizer *t = NULL;
    const char *text = "abababab";
    assert_int_equal(cq_bpe_train(text, strlen(text), 300, &t), 0);
    /* (a,b)=4 -> "ab"; (ab,ab)=3 -> "abab"; (abab,abab)=1 -> "abababab"; then no pair */
    assert_int_equal(cq_tokenizer_n_vocab(t), CQ_BPE_FIRST_MERGE + 3);
    assert_int_equal(cq_tokenizer_n_merges(t), 3);
    assert_int_equal(find(t, "ab"), 258);
    assert_int_equal(find(t, "abab"), 259);
    assert_int_equal(find(t, "abababab"), 260);
    assert_int_equal(cq_tokenizer_bos(t), CQ_BPE_BOS_ID);
    assert_int_equal(cq_tokenizer_eos(t), CQ_BPE_EOS_ID);
    assert_int_equal(cq_tokenizer_kind_of(t), CQ_TOK_BYTE);
    struct { const char *s; int32_t ids[6]; size_t n; } cases[] = {
        { "abababab", { 260 }, 1 },
        { "ababab", { 259, 258 }, 2 },
        { "aba", { 258, 'a' }, 2 },
        { "ba ab", { 'b', 'a', ' ', 258 }, 4 },   /* " ab": ' ' never merged */
        { "", { 0 }, 0 },
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        int32_t *ids;
        size_t n;
        assert_int_equal(cq_tokenizer_encode(t, cases[c].s, strlen(cases[c].s), 0, &ids, &n), 0);
        assert_non_null(ids);
        assert_int_equal(n, cases[c].n);
        for (size_t i = 0; i < n; i++) assert_int_equal(ids[i], cases[c].ids[i]);
        free(ids);
    }
    int32_t *ids;
    size_t n;
    assert_int_equal(cq_tokenizer_encode(t, "ab", 2, 1, &ids, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], CQ_BPE_BOS_ID);
    assert_int_equal(ids[1], 258);
    free(ids);
    /* control tokens give no text */
    int32_t seq[] = { CQ_BPE_BOS_ID, 259, 'x', CQ_BPE_EOS_ID };
    char *d;
    size_t dl;
    assert_int_equal(cq_tokenizer_decode(t, seq, 4, &d, &dl), 0);
    assert_string_equal(d, "ababx");
    assert_int_equal(dl, 5);
    free(d);
    size_t pl;
    assert_int_equal(cq_tokenizer_token_piece(t, CQ_BPE_EOS_ID, &pl)[0], 0);
    assert_int_equal(pl, 0);
    assert_memory_equal(cq_tokenizer_token_piece(t, 259, &pl), "abab", 4);
    assert_int_equal(pl, 4);
    assert_null(cq_tokenizer_token_piece(t, 261, &pl));
    cq_tokenizer_destroy(&t);
    assert_null(t);
    cq_tokenizer_destroy(&t);   /* no-op */
}

static void test_byte_train_generated(void **state)
{
    (void)state;
    size_t len = 400000;
    char *text = gen_text(len, 7);
    cq_tokenizer *t = NULL;
    double t0 = cq_time_sec();
    assert_int_equal(cq_bpe_train(text, len, 1000, &t), 0);
    double dt = cq_time_sec() - t0;
    assert_int_equal(cq_tokenizer_n_vocab(t), 1000);
    assert_true(cq_tokenizer_n_merges(t) >= 1000 - CQ_BPE_FIRST_MERGE);
    /* frequent syllables became single tokens */
    assert_true(find(t, " the") >= CQ_BPE_FIRST_MERGE);
    assert_true(find(t, " and") >= CQ_BPE_FIRST_MERGE);
    int32_t *ids;
    size_t n;
    t0 = cq_time_sec();
    assert_int_equal(cq_tokenizer_encode(t, text, len, 0, &ids, &n), 0);
    double de = cq_time_sec() - t0;
    fprintf(stderr, "generated %zu bytes: train %.3f s, encode %.3f s, %.3f tokens/byte\n", len,
            dt, de, (double)n / len);
    assert_true((double)n / len < 0.35);
    char *d;
    size_t dl;
    assert_int_equal(cq_tokenizer_decode(t, ids, n, &d, &dl), 0);
    assert_int_equal(dl, len);
    assert_memory_equal(d, text, len);
    free(d);
    free(ids);
    /* every merge result is a token that encodes to itself */
    for (int32_t id = CQ_BPE_FIRST_MERGE; id < cq_tokenizer_n_vocab(t); id += 37) {
        size_t pl;
        const char *p = cq_tokenizer_token_text(t, id, &pl);
        assert_int_equal(cq_tokenizer_encode(t, p, pl, 0, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], id);
        free(ids);
    }
    cq_tokenizer_destroy(&t);
    free(text);
}

static void test_byte_all_bytes(void **state)
{
    (void)state;
    size_t len = 200000;
    char *text = malloc(len);
    rng_state = 99;
    for (size_t i = 0; i < len; i++) text[i] = (char)(i < 256 * 8 ? i % 256 : rnd() % 256);
    /* and some structure so that merges happen */
    for (size_t i = 4096; i + 8 < len; i += 97) memcpy(text + i, "\xFF\x00\xC3\xA9 ab\n", 8);
    cq_tokenizer *t = NULL;
    assert_int_equal(cq_bpe_train(text, len, 400, &t), 0);
    assert_int_equal(cq_tokenizer_n_vocab(t), 400);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int32_t *ids;
        size_t n;
        assert_int_equal(cq_tokenizer_encode(t, &c, 1, 0, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], b);
        free(ids);
    }
    assert_roundtrip(t, text, len);
    cq_tokenizer_destroy(&t);
    free(text);
}

static void test_byte_roundtrip_random(void **state)
{
    (void)state;
    size_t len = 200000;
    char *text = gen_text(len, 3);
    cq_tokenizer *t = NULL;
    assert_int_equal(cq_bpe_train(text, len, 700, &t), 0);
    char buf[512];
    rng_state = 1234;
    static const char alpha[] = "ab the\n\t 0123'sEL.,\xC3\xA9\xE2\x96\x81";
    for (int it = 0; it < 3000; it++) {
        size_t n = rnd() % 300;
        int mode = it % 4;
        for (size_t i = 0; i < n; i++) {
            if (mode == 0) buf[i] = (char)(rnd() % 256);                         /* any bytes */
            else if (mode == 1) buf[i] = alpha[rnd() % (sizeof(alpha) - 1)];     /* dense merges */
            else if (mode == 2) buf[i] = (char)(rnd() % 2 ? ' ' : '\n');          /* whitespace */
            else buf[i] = text[(rnd() % (len - 300)) + i % 7];                   /* corpus-like */
        }
        if (mode == 3) memcpy(buf, text + rnd() % (len - 300), n);
        assert_roundtrip(t, buf, n);
    }
    /* a long word (no separators) goes through the heap path, not the cache */
    char *lw = malloc(100000);
    for (size_t i = 0; i < 100000; i++) lw[i] = "theand"[i % 6];
    assert_roundtrip(t, lw, 100000);
    free(lw);
    cq_tokenizer_destroy(&t);
    free(text);
}

static void test_byte_deterministic_save_load(void **state)
{
    (void)state;
    size_t len = 150000;
    char *text = gen_text(len, 11);
    cq_tokenizer *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(cq_bpe_train(text, len, 800, &a), 0);
    assert_int_equal(cq_bpe_train(text, len, 800, &b), 0);
    char *ja, *jb, *jc;
    assert_int_equal(cq_tokenizer_to_json(a, &ja), 0);
    assert_int_equal(cq_tokenizer_to_json(b, &jb), 0);
    assert_string_equal(ja, jb);

    char path[] = "/tmp/cq_tok_test_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(cq_tokenizer_save_json(a, path), 0);
    assert_int_equal(cq_tokenizer_load_json(path, &c), 0);
    unlink(path);
    assert_int_equal(cq_tokenizer_kind_of(c), CQ_TOK_BYTE);
    assert_int_equal(cq_tokenizer_n_vocab(c), 800);
    assert_int_equal(cq_tokenizer_n_merges(c), cq_tokenizer_n_merges(a));
    assert_int_equal(cq_tokenizer_bos(c), CQ_BPE_BOS_ID);
    assert_int_equal(cq_tokenizer_eos(c), CQ_BPE_EOS_ID);
    assert_int_equal(cq_tokenizer_token_type(c, CQ_BPE_BOS_ID), CQ_TOKTYPE_CONTROL);
    assert_int_equal(cq_tokenizer_to_json(c, &jc), 0);
    assert_string_equal(ja, jc);
    /* same ids on the corpus and on other text */
    char *other = gen_text(50000, 12);
    const char *texts[] = { text, other };
    size_t lens[] = { len, 50000 };
    for (int k = 0; k < 2; k++) {
        int32_t *ia, *ic;
        size_t na, nc;
        assert_int_equal(cq_tokenizer_encode(a, texts[k], lens[k], 1, &ia, &na), 0);
        assert_int_equal(cq_tokenizer_encode(c, texts[k], lens[k], 1, &ic, &nc), 0);
        assert_int_equal(na, nc);
        assert_memory_equal(ia, ic, na * sizeof(int32_t));
        free(ia);
        free(ic);
    }
    /* the JSON is what tokenizers expects */
    cJSON *root = cJSON_Parse(ja);
    assert_non_null(root);
    cJSON *model = cJSON_GetObjectItem(root, "model");
    assert_string_equal(cJSON_GetObjectItem(model, "type")->valuestring, "BPE");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(model, "vocab")), 800);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "decoder"), "type")->valuestring,
                        "ByteLevel");
    cJSON *added = cJSON_GetObjectItem(root, "added_tokens");
    assert_int_equal(cJSON_GetArraySize(added), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(added, 0), "content")->valuestring, "<s>");
    /* " the" is spelled "Ġthe" */
    assert_non_null(cJSON_GetObjectItem(cJSON_GetObjectItem(model, "vocab"), "\xC4\xA0the"));
    cJSON_Delete(root);
    free(other);
    free(ja); free(jb); free(jc);
    cq_tokenizer_destroy(&a);
    cq_tokenizer_destroy(&b);
    cq_tokenizer_destroy(&c);
    free(text);
}

static void test_byte_vocab_limits(void **state)
{
    (void)state;
    cq_tokenizer *t = NULL;
    quiet();
    assert_int_equal(cq_bpe_train("abc", 3, 257, &t), CQ_EINVAL);
    assert_null(t);
    assert_int_equal(cq_bpe_train(NULL, 5, 300, &t), CQ_EINVAL);
    loud();
    /* no pairs at all: just the base vocab */
    assert_int_equal(cq_bpe_train("", 0, 300, &t), 0);
    assert_int_equal(cq_tokenizer_n_vocab(t), CQ_BPE_FIRST_MERGE);
    assert_roundtrip(t, "x y\n", 4);
    cq_tokenizer_destroy(&t);
    char *text = gen_text(100000, 5);
    for (int vs = 258; vs <= 1258; vs += 250) {
        assert_int_equal(cq_bpe_train(text, 100000, vs, &t), 0);
        assert_int_equal(cq_tokenizer_n_vocab(t), vs);
        cq_tokenizer_destroy(&t);
    }
    free(text);
}

/* A byte-level tokenizer trained by cherryq (fixture), with ids that
 * tokenizers.js gives for it: checks the JSON layout and the Split regex. */
static void test_byte_hf_golden(void **state)
{
    (void)state;
    cq_tokenizer *t = NULL;
    assert_int_equal(cq_tokenizer_load_json(TOKDIR "/bytelevel_kjv.json", &t), 0);
    assert_int_equal(cq_tokenizer_kind_of(t), CQ_TOK_BYTE);
    check_golden(t, TOKDIR "/bytelevel_kjv_golden.json");
    cq_tokenizer_destroy(&t);
}

/* ------------------------------------------------------------ SentencePiece BPE */
static void test_spm_json_golden(void **state)
{
    (void)state;
    cq_tokenizer *t = NULL;
    assert_int_equal(cq_tokenizer_load_json(TOKDIR "/llama_small.json", &t), 0);
    assert_int_equal(cq_tokenizer_kind_of(t), CQ_TOK_SPM);
    assert_int_equal(cq_tokenizer_bos(t), 1);
    assert_int_equal(cq_tokenizer_eos(t), 2);
    assert_int_equal(cq_tokenizer_unk(t), 0);
    check_golden(t, TOKDIR "/llama_small_golden.json");
    cq_tokenizer_destroy(&t);
}

static cq_tokenizer *load_tsv(const char *path)
{
    char *data;
    size_t n;
    if (cq_read_file(path, &data, &n, 1 << 24)) return NULL;
    int cap = 1024, cnt = 0;
    char **tok = calloc(cap, sizeof(*tok));
    float *sc = calloc(cap, sizeof(*sc));
    int32_t *ty = calloc(cap, sizeof(*ty));
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int id, type;
        float score;
        int off = 0;
        if (sscanf(line, "%d\t%f\t%d\t%n", &id, &score, &type, &off) != 3 || id != cnt || cnt >= cap)
            break;
        tok[cnt] = line + off;
        sc[cnt] = score;
        ty[cnt] = type;
        cnt++;
    }
    cq_tokenizer *t = NULL;
    int r = cq_tokenizer_from_spm_arrays((const char *const *)tok, sc, ty, cnt, 1, 2, 0, &t);
    free(tok); free(sc); free(ty); free(data);
    return r ? NULL : t;
}

/* The GGUF route (scores, llama.cpp's algorithm) agrees with the merges route
 * on this vocab (its merges were made from the scores). */
static void test_spm_scores_route(void **state)
{
    (void)state;
    cq_tokenizer *g = load_tsv(TOKDIR "/llama_small.tsv");
    assert_non_null(g);
    assert_int_equal(cq_tokenizer_n_merges(g), 0);
    assert_int_equal(cq_tokenizer_n_vocab(g), 428);
    check_golden(g, TOKDIR "/llama_small_golden.json");
    cq_tokenizer *j = NULL;
    assert_int_equal(cq_tokenizer_load_json(TOKDIR "/llama_small.json", &j), 0);
    /* and on generated text with all kinds of characters */
    char *text = gen_text(300000, 21);
    for (size_t i = 5000; i + 8 < 300000; i += 1999) memcpy(text + i, "\xF0\x9F\xA6\x99 caf\xC3\xA9", 8);
    int32_t *a, *b;
    size_t na, nb;
    double t0 = cq_time_sec();
    assert_int_equal(cq_tokenizer_encode(g, text, 300000, 1, &a, &na), 0);
    double t1 = cq_time_sec();
    assert_int_equal(cq_tokenizer_encode(j, text, 300000, 1, &b, &nb), 0);
    double t2 = cq_time_sec();
    fprintf(stderr, "spm 300 KB: scores route %.3f s, merges route %.3f s, %zu tokens\n", t1 - t0,
            t2 - t1, na);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof(int32_t));
    char *d;
    assert_int_equal(cq_tokenizer_decode(g, a, na, &d, NULL), 0);
    assert_string_equal(d, text);
    free(d);
    free(a);
    free(b);
    free(text);
    cq_tokenizer_destroy(&g);
    cq_tokenizer_destroy(&j);
}

static void test_spm_known(void **state)
{
    (void)state;
    cq_tokenizer *t = NULL;
    assert_int_equal(cq_tokenizer_load_json(TOKDIR "/llama_small.json", &t), 0);
    char p[64];
    int32_t *ids;
    size_t n;
    /* leading-space marker, BOS */
    assert_int_equal(cq_tokenizer_encode(t, "Hello world", 11, 1, &ids, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 1);
    snprintf(p, sizeof(p), "%sHello", SP);
    assert_int_equal(ids[1], find(t, p));
    snprintf(p, sizeof(p), "%sworld", SP);
    assert_int_equal(ids[2], find(t, p));
    char *d;
    assert_int_equal(cq_tokenizer_decode(t, ids, n, &d, NULL), 0);
    assert_string_equal(d, "Hello world");   /* BOS gives nothing, leading space stripped */
    free(d);
    free(ids);
    /* byte fallback: the llama emoji is not in the vocab -> its 4 UTF-8 bytes */
    assert_int_equal(cq_tokenizer_encode(t, "\xF0\x9F\xA6\x99", 4, 0, &ids, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(ids[0], find(t, SP));
    assert_int_equal(ids[1], find(t, "<0xF0>"));
    assert_int_equal(ids[2], find(t, "<0x9F>"));
    assert_int_equal(ids[3], find(t, "<0xA6>"));
    assert_int_equal(ids[4], find(t, "<0x99>"));
    assert_int_equal(ids[1], 3 + 0xF0);
    assert_int_equal(cq_tokenizer_token_type(t, ids[1]), CQ_TOKTYPE_BYTE);
    size_t pl;
    const char *piece = cq_tokenizer_token_piece(t, ids[1], &pl);
    assert_int_equal(pl, 1);
    assert_int_equal((uint8_t)piece[0], 0xF0);
    assert_int_equal(cq_tokenizer_decode(t, ids, n, &d, NULL), 0);
    assert_string_equal(d, "\xF0\x9F\xA6\x99");   /* the ▁ piece's space is stripped */
    free(d);
    /* bytes of one character decoded together, after text */
    int32_t seq[] = { 1, find(t, "▁café"), 3 + 0xC3, 3 + 0xA9, 2 };
    assert_int_equal(cq_tokenizer_decode(t, seq, 5, &d, NULL), 0);
    assert_string_equal(d, "caf\xC3\xA9\xC3\xA9");
    free(d);
    free(ids);
    /* merge priority: "▁the" (rank 5/6) wins over "he" (rank 2) only after ▁t
     * was formed; "▁lowest" needs ▁low + est */
    assert_int_equal(cq_tokenizer_encode(t, "the lowest", 10, 0, &ids, &n), 0);
    assert_int_equal(n, 2);
    snprintf(p, sizeof(p), "%sthe", SP);
    assert_int_equal(ids[0], find(t, p));
    snprintf(p, sizeof(p), "%slowest", SP);
    assert_int_equal(ids[1], find(t, p));
    free(ids);
    /* spaces: "▁▁" merges first */
    assert_int_equal(cq_tokenizer_encode(t, " a", 2, 0, &ids, &n), 0);
    assert_int_equal(n, 2);
    snprintf(p, sizeof(p), "%s%s", SP, SP);
    assert_int_equal(ids[0], find(t, p));
    assert_int_equal(ids[1], find(t, "a"));
    assert_int_equal(cq_tokenizer_decode(t, ids, n, &d, NULL), 0);
    assert_string_equal(d, " a");
    free(d);
    free(ids);
    /* piece for streaming */
    snprintf(p, sizeof(p), "%sHello", SP);
    piece = cq_tokenizer_token_piece(t, find(t, p), &pl);
    assert_int_equal(pl, 6);
    assert_memory_equal(piece, " Hello", 6);
    piece = cq_tokenizer_token_piece(t, 1, &pl);
    assert_int_equal(pl, 0);
    /* empty text: nothing (BOS if asked) */
    assert_int_equal(cq_tokenizer_encode(t, "", 0, 0, &ids, &n), 0);
    assert_non_null(ids);
    assert_int_equal(n, 0);
    free(ids);
    assert_int_equal(cq_tokenizer_encode(t, NULL, 0, 1, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    free(ids);
    /* "<s>" in text is plain text, not BOS */
    assert_int_equal(cq_tokenizer_encode(t, "<s>", 3, 0, &ids, &n), 0);
    for (size_t i = 0; i < n; i++) assert_int_not_equal(ids[i], 1);
    free(ids);
    /* invalid UTF-8 goes through byte fallback and back */
    assert_roundtrip(t, "x\xFF\x80y\xC3", 5);
    /* ids out of range */
    quiet();
    int32_t bad[] = { 5, 428 };
    assert_int_equal(cq_tokenizer_decode(t, bad, 2, &d, NULL), CQ_EINVAL);
    assert_null(d);
    loud();
    cq_tokenizer_destroy(&t);
}

/* 2 MB through both SPM routes and the byte-level encoder: n log n, not n^2 */
static void test_encode_speed(void **state)
{
    (void)state;
    size_t len = 2u << 20;
    char *text = gen_text(len, 77);
    cq_tokenizer *j = NULL, *b = NULL;
    assert_int_equal(cq_tokenizer_load_json(TOKDIR "/llama_small.json", &j), 0);
    cq_tokenizer *g = load_tsv(TOKDIR "/llama_small.tsv");
    assert_non_null(g);
    assert_int_equal(cq_bpe_train(text, 300000, 1000, &b), 0);
    cq_tokenizer *ts[] = { j, g, b };
    const char *names[] = { "spm merges", "spm scores", "byte-level" };
    for (int k = 0; k < 3; k++) {
        int32_t *ids;
        size_t n;
        double t0 = cq_time_sec();
        assert_int_equal(cq_tokenizer_encode(ts[k], text, len, 0, &ids, &n), 0);
        double dt = cq_time_sec() - t0;
        fprintf(stderr, "encode 2 MB, %s: %.3f s (%.1f MB/s), %zu tokens\n", names[k], dt,
                len / dt / 1e6, n);
        assert_true(dt < 10.0);
        free(ids);
    }
    cq_tokenizer_destroy(&j);
    cq_tokenizer_destroy(&g);
    cq_tokenizer_destroy(&b);
    free(text);
}

/* ------------------------------------------------------------ malformed */
static int load_str(const char *json, cq_tokenizer **t)
{
    return cq_tokenizer_load_json_mem(json, strlen(json), "test.json", t);
}

/* The token a prompt starts with (cq_tokenizer_lead): a post_processor
 * template's first special token (by its special_tokens id, else the vocab;
 * also inside a Sequence), none for a template that starts with the text,
 * and the kind's default without a template. */
static void test_template_lead(void **state)
{
    (void)state;
#define TV "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"<s>\": 3, \"<|bot|>\": 4}, " \
           "\"merges\": [\"a b\"]}"
#define TPL(first) "{\"type\": \"TemplateProcessing\", \"single\": [" first "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}]"
    static const char *const js[] = {
        "{" TV ", \"post_processor\": " TPL("{\"SpecialToken\": {\"id\": \"<|bot|>\", \"type_id\": 0}}, ")
        ", \"special_tokens\": {\"<|bot|>\": {\"id\": \"<|bot|>\", \"ids\": [4], \"tokens\": [\"<|bot|>\"]}}}}",
        "{" TV ", \"post_processor\": {\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\"}, "
        TPL("{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, ") "}]}}",
        "{" TV ", \"post_processor\": " TPL("") "}}",
        "{" TV ", \"post_processor\": null}",
    };
    cq_tokenizer *t = NULL;
    int32_t got[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(load_str(js[i], &t), 0);
        got[i] = cq_tokenizer_lead(t);
        if (i == 3) /* no template: the kind's default */
            assert_int_equal(got[i], cq_tokenizer_kind_of(t) == CQ_TOK_SPM ? cq_tokenizer_bos(t) : -1);
        cq_tokenizer_destroy(&t);
    }
    assert_int_equal(got[0], 4);   /* <|bot|>, by the template's id */
    assert_int_equal(got[1], 3);   /* <s>, inside a Sequence, by the vocab */
    assert_int_equal(got[2], -1);  /* the template starts with the text */
#undef TPL
#undef TV
}

static void test_malformed(void **state)
{
    (void)state;
    cq_tokenizer *t = NULL;
    quiet();
    assert_int_equal(cq_tokenizer_load_json(TOKDIR "/does_not_exist.json", &t), CQ_ENOENT);
    assert_null(t);
    assert_true(n_errors > 0);
#define V "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}"
    struct { const char *json; int want; } cases[] = {
        { "", CQ_EBADMSG },
        { "{", CQ_EBADMSG },
        { "[1,2]", CQ_EBADMSG },
        { "{\"version\": \"1.0\"}", CQ_EBADMSG },                                    /* no model */
        { "{\"model\": 3}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", \"merges\": []}}", CQ_EBADMSG },        /* no vocab */
        { "{\"model\": {\"type\": \"BPE\", " V "}}", CQ_EBADMSG },                 /* no merges */
        { "{\"model\": {\"type\": \"Unigram\", " V ", \"merges\": []}}", CQ_ENOTSUP },
        { "{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [\"ab\"]}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [\"a b c\"]}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [\"a  b\"]}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [\" a\"]}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [7]}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [[\"a\"]]}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [\"a x\"]}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [\"b a\"]}}", CQ_EBADMSG }, /* "ba" */
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1.5}, \"merges\": []}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1e12}, \"merges\": []}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"0\"}, \"merges\": []}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2}, \"merges\": []}}", CQ_EBADMSG }, /* hole */
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}", CQ_EBADMSG }, /* dup token */
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", CQ_EBADMSG }, /* dup id */
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", CQ_EBADMSG },
        { "{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [], \"unk_token\": \"<unk>\"}}", CQ_EBADMSG },
        { "{\"added_tokens\": [{\"id\": 9}], \"model\": {\"type\": \"BPE\", " V ", \"merges\": []}}", CQ_EBADMSG },
        { "{\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\"}], \"model\": {\"type\": \"BPE\", " V ", \"merges\": []}}", CQ_EBADMSG },
        { "{\"added_tokens\": 5, \"model\": {\"type\": \"BPE\", " V ", \"merges\": []}}", CQ_EBADMSG },
        { "{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"type\": \"BPE\", " V ", \"merges\": []}}", CQ_ENOTSUP },
        { "{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\", " V ", \"merges\": []}}", CQ_ENOTSUP },
        /* byte-level: vocab lacks bytes */
        { "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", " V ", \"merges\": []}}", CQ_EBADMSG },
        { "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\" \": 0}, \"merges\": []}}", CQ_EBADMSG },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        n_errors = 0;
        int r = load_str(cases[i].json, &t);
        if (r != cases[i].want) {
            fprintf(stderr, "case %zu: got %d want %d: %s\n", i, r, cases[i].want, cases[i].json);
            fail();
        }
        assert_null(t);
        assert_true(n_errors > 0);
    }
    /* sanity: the valid base of those cases loads */
    assert_int_equal(load_str("{\"model\": {\"type\": \"BPE\", " V ", \"merges\": [\"a b\"]}}", &t), 0);
    int32_t *ids;
    size_t n;
    assert_int_equal(cq_tokenizer_encode(t, "ab", 2, 0, &ids, &n), 0);   /* no normalizer */
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 2);
    free(ids);
    /* "c": not in the vocab, no byte tokens, no unknown token */
    assert_int_equal(cq_tokenizer_encode(t, "abc", 3, 0, &ids, &n), CQ_EINVAL);
    assert_null(ids);
    cq_tokenizer_destroy(&t);
#undef V

    /* every truncation and some byte flips of a real file fail cleanly */
    char *js;
    size_t jn;
    assert_int_equal(cq_read_file(TOKDIR "/llama_small.json", &js, &jn, 1 << 24), 0);
    for (size_t cut = 0; cut < jn - 2; cut += 1 + cut / 8) {
        int r = cq_tokenizer_load_json_mem(js, cut, "trunc", &t);
        assert_int_not_equal(r, 0);
        assert_null(t);
    }
    rng_state = 5;
    for (int it = 0; it < 300; it++) {
        char *m = malloc(jn);
        memcpy(m, js, jn);
        for (int k = 0; k < 3; k++) m[rnd() % jn] = (char)(rnd() % 128);
        int r = cq_tokenizer_load_json_mem(m, jn, "flip", &t);
        if (r == 0) {
            assert_roundtrip(t, "the heaven", 10);
            cq_tokenizer_destroy(&t);
        }
        free(m);
    }
    free(js);

    /* arrays */
    const char *toks[] = { "<unk>", "<s>", "</s>", "<0x41>", "a" };
    const char *badtok[] = { "<unk>", "<s>", "</s>", "<0x4G>", "a" };
    int32_t ty[] = { 2, 3, 3, 6, 1 };
    int32_t badty[] = { 2, 3, 3, 6, 9 };
    float sc[] = { 0, 0, 0, 0, -1 };
    assert_int_equal(cq_tokenizer_from_spm_arrays(badtok, sc, ty, 5, 1, 2, 0, &t), CQ_EBADMSG);
    assert_null(t);
    assert_int_equal(cq_tokenizer_from_spm_arrays(toks, sc, badty, 5, 1, 2, 0, &t), CQ_EBADMSG);
    assert_int_equal(cq_tokenizer_from_spm_arrays(toks, sc, ty, 5, 1, 7, 0, &t), CQ_EINVAL);
    assert_int_equal(cq_tokenizer_from_spm_arrays(toks, sc, ty, 0, -1, -1, -1, &t), CQ_EINVAL);
    assert_int_equal(cq_tokenizer_from_spm_arrays(toks, sc, ty, 5, 1, 2, 0, &t), 0);
    /* "▁" not in vocab, no byte token for 0xE2: unknown token */
    assert_int_equal(cq_tokenizer_encode(t, "a", 1, 0, &ids, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 0);
    assert_int_equal(ids[1], 4);
    free(ids);
    char *d;
    int32_t s2[] = { 1, 3, 4, 0, 2 };
    assert_int_equal(cq_tokenizer_decode(t, s2, 5, &d, NULL), 0);
    assert_string_equal(d, "Aa<unk>");
    free(d);
    cq_tokenizer_destroy(&t);
    loud();
}

/* ------------------------------------------------------------ KJV */
static char *read_kjv(size_t *len)
{
    FILE *p = popen("bible -f 'Genesis 1:1-Revelation 22:21' 2>/dev/null", "r");
    if (!p) return NULL;
    size_t cap = 1 << 23, n = 0;
    char *s = malloc(cap);
    size_t k;
    while ((k = fread(s + n, 1, cap - n, p)) > 0) n += k;
    pclose(p);
    if (n < 1000000) {
        free(s);
        return NULL;
    }
    *len = n;
    return s;
}

static void test_kjv_slice(void **state)
{
    (void)state;
    size_t len = 0;
    char *kjv = read_kjv(&len);
    if (!kjv) {
        fprintf(stderr, "bible (bible-kjv) not available: skipped\n");
        skip();
    }
    size_t slice = 300000;
    cq_tokenizer *t = NULL;
    double t0 = cq_time_sec();
    assert_int_equal(cq_bpe_train(kjv, slice, 4096, &t), 0);
    double dt = cq_time_sec() - t0;
    int32_t *ids;
    size_t n;
    /* held-out text: the rest of the Bible */
    const char *rest = kjv + slice;
    size_t rl = len - slice < 1000000 ? len - slice : 1000000;
    t0 = cq_time_sec();
    assert_int_equal(cq_tokenizer_encode(t, rest, rl, 0, &ids, &n), 0);
    double de = cq_time_sec() - t0;
    fprintf(stderr, "KJV: trained 4096 on %zu bytes in %.2f s (vocab %d); held-out %zu bytes -> "
            "%zu tokens (%.3f tokens/byte) in %.2f s\n", slice, dt, cq_tokenizer_n_vocab(t), rl,
            n, (double)n / rl, de);
    assert_int_equal(cq_tokenizer_n_vocab(t), 4096);
    assert_true((double)n / rl < 0.30);
    char *d;
    size_t dl;
    assert_int_equal(cq_tokenizer_decode(t, ids, n, &d, &dl), 0);
    assert_int_equal(dl, rl);
    assert_memory_equal(d, rest, rl);
    free(d);
    free(ids);
    cq_tokenizer_destroy(&t);
    free(kjv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pretokenizer),
        cmocka_unit_test(test_byte_known_merges),
        cmocka_unit_test(test_byte_train_generated),
        cmocka_unit_test(test_byte_all_bytes),
        cmocka_unit_test(test_byte_roundtrip_random),
        cmocka_unit_test(test_byte_deterministic_save_load),
        cmocka_unit_test(test_byte_vocab_limits),
        cmocka_unit_test(test_byte_hf_golden),
        cmocka_unit_test(test_spm_json_golden),
        cmocka_unit_test(test_spm_scores_route),
        cmocka_unit_test(test_spm_known),
        cmocka_unit_test(test_encode_speed),
        cmocka_unit_test(test_template_lead),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_kjv_slice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
