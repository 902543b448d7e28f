/* cherryq: tests of the reference evaluation sets (models/evalset.h):
 * CPython's random module reproduced bit for bit, and GPTQ's C4 window draw.
 *
 * The expected values were printed by CPython 3.11 (Debian 12's python3):
 *
 *   import random
 *   random.seed(0)
 *   [random.randint(0, 45575) for _ in range(8)]
 *   random.getrandbits(32); random.randint(0, 0); random.randint(5, 2**40 + 5)
 *   random.getrandbits(64); [random.randint(0, 1) for _ in range(6)]
 *   random.seed(12345678901); [random.randint(0, 999) for _ in range(6)]
 *   random.seed(2**32 - 1); [random.randint(0, 2) for _ in range(6)]
 *   random.seed(7); v = [random.getrandbits(32) for _ in range(700)]
 *   v[0], v[623], v[624], v[699]
 *
 * and the C4 draws by GPTQ's loop (evalset.h) over records of known length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "evalset.h"

static void test_pyrandom_seed0(void **state)
{
    (void)state;
    cq_pyrandom r;
    cq_pyrandom_seed(&r, 0);
    static const int64_t want[8] = { 25247, 27562, 2653, 16968, 33506, 31845, 26537, 19877 };
    for (int i = 0; i < 8; i++) assert_int_equal(cq_pyrandom_randint(&r, 0, 45575), want[i]);
    assert_int_equal(cq_pyrandom_getrandbits(&r, 32), 4156669319u);
    /* randint(0, 0) still draws (getrandbits(1) until it is < 1) */
    assert_int_equal(cq_pyrandom_randint(&r, 0, 0), 0);
    assert_int_equal(cq_pyrandom_randint(&r, 5, (1ll << 40) + 5), 619073466655ll);
    assert_true(cq_pyrandom_getrandbits(&r, 64) == 13942126818862981423ull);
    static const int64_t bits[6] = { 0, 1, 0, 1, 0, 0 };
    for (int i = 0; i < 6; i++) assert_int_equal(cq_pyrandom_randint(&r, 0, 1), bits[i]);
}

static void test_pyrandom_seeds(void **state)
{
    (void)state;
    cq_pyrandom r;
    cq_pyrandom_seed(&r, 12345678901ull);   /* two key words */
    static const int64_t a[6] = { 968, 610, 335, 888, 393, 362 };
    for (int i = 0; i < 6; i++) assert_int_equal(cq_pyrandom_randint(&r, 0, 999), a[i]);
    cq_pyrandom_seed(&r, 0xffffffffull);
    static const int64_t b[6] = { 2, 2, 0, 0, 2, 2 };
    for (int i = 0; i < 6; i++) assert_int_equal(cq_pyrandom_randint(&r, 0, 2), b[i]);
    /* across the regeneration of the 624-word state */
    cq_pyrandom_seed(&r, 7);
    uint64_t v[700];
    for (int i = 0; i < 700; i++) v[i] = cq_pyrandom_getrandbits(&r, 32);
    assert_int_equal(v[0], 1390851128u);
    assert_int_equal(v[623], 960836459u);
    assert_int_equal(v[624], 693491440u);
    assert_int_equal(v[699], 72291700u);
}

/* records whose length is a function of their index; token j of record i
 * is i * 1000 + j */
typedef struct {
    size_t (*len)(size_t i);
    int calls[64];
    int fail_at;   /* record index whose tokenization fails, -1: none */
} fake_records;

static int fake_tokens(void *user, size_t i, int32_t **ids, size_t *n)
{
    fake_records *f = user;
    f->calls[i]++;
    if ((int)i == f->fail_at) return CQ_EIO;
    *n = f->len(i);
    *ids = malloc(*n * sizeof **ids);
    if (!*ids) return CQ_ENOMEM;
    for (size_t j = 0; j < *n; j++) (*ids)[j] = (int32_t)(i * 1000 + j);
    return 0;
}

static size_t len_a(size_t i) { return (i * 37) % 23 + 1; }
static size_t len_b(size_t i) { return i + 2; }
static size_t len_short(size_t i) { return i % 5 + 1; }

static void check_windows(const int32_t *out, const cq_c4_pick *p, int64_t nw, int64_t seqlen)
{
    for (int64_t w = 0; w < nw; w++)
        for (int64_t j = 0; j < seqlen; j++)
            assert_int_equal(out[w * seqlen + j], (int32_t)(p[w].record * 1000 + (size_t)(p[w].start + j)));
}

static void test_c4_windows_gptq(void **state)
{
    (void)state;
    /* 40 records of 1..23 tokens, seqlen 16, 10 windows, seed 0 */
    static const cq_c4_pick want[10] = { { 26, 0 }, { 16, 1 }, { 13, 4 }, { 8, 2 }, { 8, 0 },
                                         { 39, 1 }, { 34, 0 }, { 21, 1 }, { 39, 0 }, { 16, 0 } };
    fake_records f = { .len = len_a, .fail_at = -1 };
    int32_t out[10 * 16];
    cq_c4_pick p[10];
    size_t calls = 0;
    assert_int_equal(cq_c4_windows(40, fake_tokens, &f, 16, 10, 0, out, p, &calls), 0);
    for (int w = 0; w < 10; w++) {
        assert_int_equal(p[w].record, want[w].record);
        assert_int_equal(p[w].start, want[w].start);
    }
    check_windows(out, p, 10, 16);
    /* a record too short is tokenized once however often it is drawn */
    size_t sum = 0;
    for (size_t i = 0; i < 40; i++) {
        if (len_a(i) <= 16) assert_true(f.calls[i] <= 1);
        sum += (size_t)f.calls[i];
    }
    assert_int_equal(sum, calls);

    /* records of exactly seqlen + 1 tokens: randint(0, 0) consumes a draw */
    static const cq_c4_pick want_b[6] = { { 4, 0 }, { 4, 1 }, { 4, 0 }, { 4, 0 }, { 3, 0 }, { 4, 0 } };
    fake_records g = { .len = len_b, .fail_at = -1 };
    int32_t out_b[6 * 4];
    cq_c4_pick pb[6];
    assert_int_equal(cq_c4_windows(5, fake_tokens, &g, 4, 6, 3, out_b, pb, NULL), 0);
    for (int w = 0; w < 6; w++) {
        assert_int_equal(pb[w].record, want_b[w].record);
        assert_int_equal(pb[w].start, want_b[w].start);
    }
    check_windows(out_b, pb, 6, 4);
}

static void test_c4_windows_errors(void **state)
{
    (void)state;
    int32_t out[64];
    /* no record longer than seqlen: an error, not the reference's endless loop */
    fake_records f = { .len = len_short, .fail_at = -1 };
    size_t calls = 0;
    assert_int_equal(cq_c4_windows(20, fake_tokens, &f, 5, 2, 0, out, NULL, &calls), CQ_EINVAL);
    for (size_t i = 0; i < 20; i++) assert_int_equal(f.calls[i], 1);
    assert_int_equal(calls, 20);
    /* the tokenizer's error stops the draw and is returned */
    fake_records g = { .len = len_b, .fail_at = 4 };
    assert_int_equal(cq_c4_windows(5, fake_tokens, &g, 4, 6, 3, out, NULL, NULL), CQ_EIO);
    /* bad arguments */
    assert_int_equal(cq_c4_windows(0, fake_tokens, &g, 4, 1, 0, out, NULL, NULL), CQ_EINVAL);
    assert_int_equal(cq_c4_windows(5, fake_tokens, &g, 0, 1, 0, out, NULL, NULL), CQ_EINVAL);
    assert_int_equal(cq_c4_windows(5, fake_tokens, &g, 4, 0, 0, out, NULL, NULL), CQ_EINVAL);
    assert_int_equal(cq_c4_windows(5, NULL, &g, 4, 1, 0, out, NULL, NULL), CQ_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pyrandom_seed0),
        cmocka_unit_test(test_pyrandom_seeds),
        cmocka_unit_test(test_c4_windows_gptq),
        cmocka_unit_test(test_c4_windows_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
