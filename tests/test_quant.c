/* Tests of the CherryQ numerics: quantizer (hand cases + PyTorch golden),
 * packed layout, cherry selection, heterogeneity scores, GPTQ. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmm.h"
#include "quant.h"

#ifndef CQ_TEST_FIXTURES
#define CQ_TEST_FIXTURES "tests/fixtures"
#endif

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state;

static uint64_t rnd_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rnd_uniform(void) /* (0, 1) */
{
    return ((double)(rnd_u64() >> 11) + 0.5) / 9007199254740992.0;
}

static double rnd_normal(void)
{
    return sqrt(-2.0 * log(rnd_uniform())) * cos(6.283185307179586 * rnd_uniform());
}

/* Student t with 3 degrees of freedom: heavy tailed like LLM weights. */
static float rnd_heavy(void)
{
    double c = 0.0;
    for (int i = 0; i < 3; i++) {
        double z = rnd_normal();
        c += z * z;
    }
    return (float)(rnd_normal() / sqrt(c / 3.0));
}

static float *alloc_f(int64_t n)
{
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(p);
    return p;
}

static uint8_t *alloc_u8(int64_t n)
{
    uint8_t *p = calloc((size_t)(n > 0 ? n : 1), 1);
    assert_non_null(p);
    return p;
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static const int all_bits[] = { 2, 3, 4, 8 };
static const int all_groups[] = { 32, 64, 128, 0 };

/* ------------------------------------------------------------ grid */

static void test_grid(void **st)
{
    (void)st;
    assert_int_equal(cq_quant_check(3, 128), 0);
    assert_int_equal(cq_quant_check(8, 0), 0);
    assert_int_equal(cq_quant_check(3, 48), CQ_EINVAL);
    assert_int_equal(cq_quant_check(5, 64), CQ_EINVAL);
    assert_int_equal(cq_quant_check(3, -1), CQ_EINVAL);

    assert_int_equal(cq_quant_row_bytes(10, 2), 3);
    assert_int_equal(cq_quant_row_bytes(10, 3), 6);   /* 2 words of 3 bytes */
    assert_int_equal(cq_quant_row_bytes(8, 3), 3);
    assert_int_equal(cq_quant_row_bytes(10, 4), 5);
    assert_int_equal(cq_quant_row_bytes(11, 4), 6);
    assert_int_equal(cq_quant_row_bytes(10, 8), 10);
    assert_int_equal(cq_quant_row_bytes(4096, 3), 1536);
    assert_true(cq_quant_row_bytes(10, 5) < 0);

    assert_int_equal(cq_quant_ngroups(200, 64), 4);
    assert_int_equal(cq_quant_ngroups(256, 128), 2);
    assert_int_equal(cq_quant_ngroups(200, 0), 1);
    assert_true(cq_quant_ngroups(200, 48) < 0);

    assert_int_equal(cq_quant_qmin(2), -2);
    assert_int_equal(cq_quant_qmin(3), -4);
    assert_int_equal(cq_quant_qmin(4), -8);
    assert_int_equal(cq_quant_qmin(8), -127);

    /* 3-bit g128 with k = in/256 cherries per row: 3.25 bits per weight */
    assert_true(fabs(cq_quant_bpw(4096, 4096, 3, 128, 4096 * 16) - 3.25) < 1e-12);
    assert_true(fabs(cq_quant_bpw(10, 100, 4, 0, 0) - 4.16) < 1e-12);
    assert_int_equal(cq_quant_nbytes(2, 10, 3, 32, 3), 2 * 6 + 2 * 1 * 2 + 3 * 4 + 3 * 4);
}

/* ------------------------------------------------------------ quantizer, hand cases */

static void check_row(const float *w, const uint8_t *m, int64_t n, int bits, int group,
                      int fp16, const float *expect)
{
    float *o = alloc_f(n);
    assert_int_equal(cq_quant_fakequant(o, w, m, 1, n, bits, group, fp16), 0);
    for (int64_t j = 0; j < n; j++) {
        if (fbits(o[j]) != fbits(expect[j]))
            fail_msg("bits %d group %d col %lld: got %.9g, expected %.9g (w = %.9g)", bits,
                     group, (long long)j, (double)o[j], (double)expect[j], (double)w[j]);
    }
    free(o);
}

static void test_quant_ties_8bit(void **st)
{
    (void)st;
    /* max|w| = 127: 127 + 1e-6 rounds back to 127 in float, so s = 1 exactly
     * and w/s = w. rint rounds halves to even (roundf would not). */
    float w[32] = { 2.5f, 3.5f, -2.5f, 0.5f, 1.5f, -0.3f, 126.5f, 127.0f, -127.0f, -3.5f };
    float e[32] = { 2.0f, 4.0f, -2.0f, 0.0f, 2.0f, -0.0f, 126.0f, 127.0f, -127.0f, -4.0f };
    check_row(w, NULL, 32, 8, 32, 0, e);
    assert_true(signbit(e[5]));
    /* a cherry of 1000 is excluded from the max: s stays 1 */
    w[10] = 1000.0f;
    e[10] = 1000.0f;
    uint8_t m[32] = { 0 };
    m[10] = 1;
    check_row(w, m, 32, 8, 32, 0, e);
    /* without the mask the 1000 sets the scale: s = (1000 + 1e-6)/127 */
    float s = (1000.0f + 1e-6f) / 127.0f;
    float o[32];
    assert_int_equal(cq_quant_fakequant(o, w, NULL, 1, 32, 8, 32, 0), 0);
    assert_true(o[0] == 0.0f);                  /* 2.5 / 7.87 -> 0 */
    assert_true(o[10] == 127.0f * s);
    assert_true(o[6] == rintf(126.5f / s) * s); /* 16 */
    assert_true(o[6] == 16.0f * s);
}

static void test_quant_halfgrid(void **st)
{
    (void)st;
    /* 3 bits, max|w| = 64: s = (64 + 1e-6)/4 = 16 exactly. Levels
     * (q + 0.5)*16, q = rint(clamp(w/16, -3.99, 3.99) - 0.5): ties at
     * integer w/s. */
    float w[32] = { 16, 32, 0, -16, 48, 64, -64, 24, -0.0f, 8, 63, -40 };
    float e[32] = { 8, 40, 8, -24, 40, 56, -56, 24, 8, 8, 56, -40 };
    /* 16: rint(0.5)=0 -> 8; 32: rint(1.5)=2 -> 40; 0: rint(-0.5)=-0 -> 8;
     * -16: rint(-1.5)=-2 -> -24; 48: rint(2.5)=2 -> 40; 64: clamp 3.99 -> 3 ->
     * 56; -64: -3.99-0.5=-4.49 -> -4 -> -56; 24: 1.5-0.5=1 -> 24;
     * 8: rint(0) = 0 -> 8; 63: 3.4375 -> 3 -> 56; -40: rint(-3)=-3 -> -40 */
    for (int j = 12; j < 32; j++) e[j] = 8; /* zeros */
    check_row(w, NULL, 32, 3, 32, 0, e);

    /* 2 bits, max 2 -> s = (2 + 1e-6)/2, not exact: clamping at +-1.99 */
    float w2[4] = { 2.0f, -2.0f, 0.0f, 1.0f };
    float s2 = (2.0f + 1e-6f) / 2.0f;
    float e2[4] = { 1.5f * s2, -1.5f * s2, 0.5f * s2, 0.5f * s2 };
    /* 1.0/s2 = 0.9999995 -> 0.4999995 -> 0 -> 0.5 s */
    check_row(w2, NULL, 4, 2, 0, 0, e2);

    /* 4 bits: the 1e-6 epsilon. max = 1e-6 -> s = 2e-6/8; w = 1e-6 -> w/s = 4
     * -> rint(3.5) = 4 -> 4.5 s. (Without the epsilon it would be 7.5 s.) */
    float w3[3] = { 1e-6f, 0.0f, -1e-6f };
    float s3 = (1e-6f + 1e-6f) / 8.0f;
    float e3[3] = { ((float)rintf(1e-6f / s3 - 0.5f) + 0.5f) * s3, 0.5f * s3,
                    ((float)rintf(-1e-6f / s3 - 0.5f) + 0.5f) * s3 };
    assert_true(fabsf(e3[0] - 4.5f * s3) <= 1e-13f);
    assert_true(fabsf(e3[2] + 3.5f * s3) <= 1e-13f); /* -4 - 0.5 -> rint(-4.5) = -4 */
    check_row(w3, NULL, 3, 4, 0, 0, e3);

    /* all-zero group: s = 1e-6/8, every weight becomes 0.5 s */
    float z[32] = { 0 }, ez[32];
    for (int j = 0; j < 32; j++) ez[j] = 0.5f * (1e-6f / 8.0f);
    check_row(z, NULL, 32, 4, 32, 0, ez);
}

static void test_quant_groups(void **st)
{
    (void)st;
    /* 40 columns, group 32: the last group (cols 32..39) is partial and has
     * its own scale; group 0 uses one scale for the whole row. bits 8, s = 1
     * for group 0 (max 127) and s = 0.5 for the partial group (max 63.5). */
    float w[40], e32[40], erow[40];
    for (int j = 0; j < 40; j++) w[j] = 0.0f;
    w[0] = 127.0f;
    w[1] = 10.3f;
    w[32] = 63.5f;
    w[33] = 10.3f;
    w[34] = 10.2f;
    for (int j = 0; j < 40; j++) e32[j] = w[j] == 0.0f ? 0.0f : rintf(w[j]);
    float s1 = (63.5f + 1e-6f) / 127.0f;
    e32[32] = rintf(63.5f / s1) * s1;
    e32[33] = rintf(10.3f / s1) * s1;
    e32[34] = rintf(10.2f / s1) * s1;
    assert_true(s1 == 0.5f);
    assert_true(e32[33] == 10.5f && e32[34] == 10.0f);
    check_row(w, NULL, 40, 8, 32, 0, e32);
    for (int j = 0; j < 40; j++) erow[j] = rintf(w[j]);
    assert_true(erow[33] == 10.0f);
    check_row(w, NULL, 40, 8, 0, 0, erow);
    /* the same with 2 rows and dst aliasing w */
    float w2[80];
    memcpy(w2, w, sizeof(w));
    memcpy(w2 + 40, w, sizeof(w));
    assert_int_equal(cq_quant_fakequant(w2, w2, NULL, 2, 40, 8, 32, 0), 0);
    assert_memory_equal(w2, e32, sizeof(e32));
    assert_memory_equal(w2 + 40, e32, sizeof(e32));
}

static void test_quant_fp16_flag(void **st)
{
    (void)st;
    /* 4 bits, max 1: s = (1 + 1e-6)/8 = 0.125000125 in float32, 0.125 in FP16 */
    float w[4] = { 1.0f, 0.3f, 0.1f, -0.2f };
    uint8_t m[4] = { 0, 0, 1, 0 };
    float s = (1.0f + 1e-6f) / 8.0f;
    assert_true(s != 0.125f);
    float e0[4] = { 7.5f * s, ((float)rintf(0.3f / s - 0.5f) + 0.5f) * s, 0.1f,
                    ((float)rintf(-0.2f / s - 0.5f) + 0.5f) * s };
    check_row(w, m, 4, 4, 0, 0, e0);
    float e1[4] = { 7.5f * 0.125f, 2.5f * 0.125f, cq_f16_to_f32(cq_f32_to_f16(0.1f)),
                    -1.5f * 0.125f };
    assert_true(e1[2] != 0.1f);
    check_row(w, m, 4, 4, 0, 1, e1);

    /* bad input is reported, not quantized */
    float bad[4] = { 1.0f, NAN, 0.0f, 0.0f }, o[4];
    assert_int_equal(cq_quant_fakequant(o, bad, NULL, 1, 4, 4, 0, 0), CQ_ERANGE);
    float big[2] = { 1e9f, 0.0f };
    assert_int_equal(cq_quant_fakequant(o, big, NULL, 1, 2, 4, 0, 0), 0);
    assert_int_equal(cq_quant_fakequant(o, big, NULL, 1, 2, 4, 0, 1), CQ_ERANGE); /* FP16 inf */
    assert_int_equal(cq_quant_fakequant(o, w, NULL, 1, 4, 5, 0, 0), CQ_EINVAL);
    assert_int_equal(cq_quant_fakequant(o, w, NULL, 1, 4, 4, 48, 0), CQ_EINVAL);

    /* FP16 scale underflow: max|w| tiny -> the group dequantizes to 0 */
    float tiny[2] = { 1e-9f, -1e-9f };
    assert_int_equal(cq_quant_fakequant(o, tiny, NULL, 1, 2, 8, 0, 1), 0);
    assert_true(o[0] == 0.0f && o[1] == 0.0f);
}

/* ------------------------------------------------------------ golden (PyTorch) */

static void test_quant_golden_torch(void **st)
{
    (void)st;
    const char *path = CQ_TEST_FIXTURES "/quant/golden.bin";
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s (regenerate with /usr/bin/python3 "
                     "tools/gen_quant_golden.py)", path);
    char magic[4];
    uint32_t hdr[4];
    assert_int_equal(fread(magic, 1, 4, f), 4);
    assert_memory_equal(magic, "CQQG", 4);
    assert_int_equal(fread(hdr, 4, 4, f), 4);
    assert_int_equal(hdr[0], 1);
    int64_t rows = hdr[1], cols = hdr[2], n = rows * cols;
    uint32_t ncases = hdr[3];
    assert_true(ncases == 64 && n > 0 && n < 100000);
    float *w = alloc_f(n), *ref = alloc_f(n), *o = alloc_f(n);
    uint8_t *mask = alloc_u8(n);
    assert_int_equal(fread(w, 4, (size_t)n, f), (size_t)n);
    assert_int_equal(fread(mask, 1, (size_t)n, f), (size_t)n);
    int nmask = 0;
    for (int64_t i = 0; i < n; i++) nmask += mask[i];
    assert_true(nmask > rows);
    for (uint32_t c = 0; c < ncases; c++) {
        int32_t cs[4];
        assert_int_equal(fread(cs, 4, 4, f), 4);
        assert_int_equal(fread(ref, 4, (size_t)n, f), (size_t)n);
        int bits = cs[0], group = cs[1], use_mask = cs[2], fp16 = cs[3];
        assert_int_equal(cq_quant_fakequant(o, w, use_mask ? mask : NULL, rows, cols, bits, group,
                                      fp16), 0);
        for (int64_t i = 0; i < n; i++)
            if (fbits(o[i]) != fbits(ref[i]))
                fail_msg("torch golden: bits %d group %d mask %d fp16 %d: [%lld,%lld] "
                         "w = %.9g: got %.9g, torch %.9g", bits, group, use_mask, fp16,
                         (long long)(i / cols), (long long)(i % cols), (double)w[i],
                         (double)o[i], (double)ref[i]);
    }
    fclose(f);
    free(w);
    free(ref);
    free(o);
    free(mask);
}

/* ------------------------------------------------------------ packed layout */

static void test_pack_layout(void **st)
{
    (void)st;
    /* 3 bits: codes 0..7 form the 24-bit LE word 0o76543210 = 0xFAC688,
     * the 9th code starts the next word */
    uint8_t row3[6] = { 0 };
    for (int j = 0; j < 8; j++) cq_qcode_set(row3, j, 3, j);
    cq_qcode_set(row3, 8, 3, 5);
    const uint8_t exp3[6] = { 0x88, 0xC6, 0xFA, 0x05, 0x00, 0x00 };
    assert_memory_equal(row3, exp3, 6);
    for (int j = 0; j < 8; j++) assert_int_equal(cq_qcode_get(row3, j, 3), j);
    assert_int_equal(cq_qcode_get(row3, 8, 3), 5);
    /* overwrite keeps the neighbours */
    cq_qcode_set(row3, 2, 3, 0);
    assert_int_equal(cq_qcode_get(row3, 1, 3), 1);
    assert_int_equal(cq_qcode_get(row3, 2, 3), 0);
    assert_int_equal(cq_qcode_get(row3, 3, 3), 3);
    /* 2 bits, LSB first: 1,2,3,0 | 1 */
    uint8_t row2[2] = { 0 };
    const int c2[5] = { 1, 2, 3, 0, 1 };
    for (int j = 0; j < 5; j++) cq_qcode_set(row2, j, 2, c2[j]);
    assert_int_equal(row2[0], 0x39);
    assert_int_equal(row2[1], 0x01);
    /* 4 bits: code 0 in the low nibble */
    uint8_t row4[2] = { 0 };
    cq_qcode_set(row4, 0, 4, 0xA);
    cq_qcode_set(row4, 1, 4, 0x3);
    cq_qcode_set(row4, 2, 4, 0xF);
    assert_int_equal(row4[0], 0x3A);
    assert_int_equal(row4[1], 0x0F);

    /* a packed 1 x 9, 3-bit matrix, end to end: codes, scale, cherry */
    float w[9] = { 64, -64, 0, 16, 32, -16, 48, 8, 1000 };
    uint8_t m[9] = { 0, 0, 0, 0, 0, 0, 0, 0, 1 };
    cq_qweight q;
    assert_int_equal(cq_qpack(&q, w, m, 1, 9, 3, 0), 0);
    assert_int_equal(q.nnz, 1);
    assert_int_equal(q.rowptr[0], 0);
    assert_int_equal(q.rowptr[1], 1);
    assert_int_equal(q.cols[0], 8);
    assert_true(cq_f16_to_f32(q.vals[0]) == 1000.0f);
    assert_true(cq_f16_to_f32(q.scales[0]) == 16.0f);
    /* q = 3, -4, 0, 0, 2, -2, 2, 0 -> u = q + 4; the cherry 1000/16 clamps to 3 */
    const int u[9] = { 7, 0, 4, 4, 6, 2, 6, 4, 7 };
    for (int j = 0; j < 9; j++) assert_int_equal(cq_qcode_get(q.codes, j, 3), u[j]);
    uint32_t word = q.codes[0] | (uint32_t)q.codes[1] << 8 | (uint32_t)q.codes[2] << 16;
    for (int j = 0; j < 8; j++) assert_int_equal((word >> (3 * j)) & 7, u[j]);
    assert_int_equal(q.codes[3], 7);
    assert_int_equal(q.codes[4], 0);
    assert_int_equal(q.codes[5], 0);
    float d[9];
    assert_int_equal(cq_qunpack(&q, d), 0);
    const float ed[9] = { 56, -56, 8, 8, 40, -24, 40, 8, 1000 };
    assert_memory_equal(d, ed, sizeof(d));
    float delta;
    assert_int_equal(cq_qpack_cherry_delta(&q, &delta), 0);
    assert_true(delta == 1000.0f - 56.0f);
    cq_qweight_free(&q);
    assert_null(q.codes);
}

static void test_pack_roundtrip(void **st)
{
    (void)st;
    const int64_t shapes[][2] = { { 7, 203 }, { 3, 64 }, { 5, 1 }, { 1, 130 }, { 4, 256 } };
    rng_state = 42;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int64_t out = shapes[si][0], in = shapes[si][1], n = out * in;
        float *w = alloc_f(n), *fq = alloc_f(n), *un = alloc_f(n);
        uint8_t *m = alloc_u8(n);
        for (int64_t i = 0; i < n; i++) {
            w[i] = rnd_heavy() * 0.05f;
            m[i] = rnd_uniform() < 0.03;
        }
        m[0] = 1;
        for (int bi = 0; bi < 4; bi++)
            for (int gi = 0; gi < 4; gi++) {
                int bits = all_bits[bi], group = all_groups[gi];
                for (int use_mask = 0; use_mask < 2; use_mask++) {
                    const uint8_t *mk = use_mask ? m : NULL;
                    cq_qweight q;
                    assert_int_equal(cq_qpack(&q, w, mk, out, in, bits, group), 0);
                    assert_int_equal(cq_qweight_validate(&q), 0);
                    assert_int_equal(cq_qunpack(&q, un), 0);
                    assert_int_equal(cq_quant_fakequant(fq, w, mk, out, in, bits, group, 1), 0);
                    for (int64_t i = 0; i < n; i++)
                        if (!(un[i] == fq[i]))
                            fail_msg("bits %d group %d %lldx%lld mask %d: [%lld] unpack %.9g "
                                     "!= fakequant %.9g", bits, group, (long long)out,
                                     (long long)in, use_mask, (long long)i, (double)un[i],
                                     (double)fq[i]);
                    /* codes fit, padding is zero */
                    int64_t rb = cq_quant_row_bytes(in, bits);
                    for (int64_t r = 0; r < out; r++) {
                        const uint8_t *row = q.codes + r * rb;
                        for (int64_t j = 0; j < in; j++) {
                            int c = cq_qcode_get(row, j, bits);
                            assert_true(c >= 0 && c < (1 << bits) && (bits != 8 || c < 255));
                            if (bits != 3) { /* independent decode of the LSB-first layout */
                                int c2 = (row[(j * bits) / 8] >> ((j * bits) % 8)) &
                                         ((1 << bits) - 1);
                                assert_int_equal(c, c2);
                            } else {
                                const uint8_t *wd = row + 3 * (j / 8);
                                uint32_t word = wd[0] | (uint32_t)wd[1] << 8 |
                                                (uint32_t)wd[2] << 16;
                                assert_int_equal(c, (word >> (3 * (j % 8))) & 7);
                            }
                        }
                        for (int64_t j = in; j < rb * 8 / bits; j++)
                            assert_int_equal(cq_qcode_get(row, j, bits), 0);
                    }
                    /* cherries: CSR ascending, code = quantizer's code of the value */
                    int64_t nnz = 0;
                    if (mk)
                        for (int64_t i = 0; i < n; i++) nnz += mk[i];
                    assert_int_equal(q.nnz, nnz);
                    float *delta = alloc_f(nnz);
                    assert_int_equal(cq_qpack_cherry_delta(&q, delta), 0);
                    int64_t ng = cq_quant_ngroups(in, group), g = group ? group : in;
                    for (int64_t r = 0; r < out; r++)
                        for (int32_t i = q.rowptr[r]; i < q.rowptr[r + 1]; i++) {
                            int64_t j = q.cols[i];
                            assert_true(mk[r * in + j]);
                            float s = cq_f16_to_f32(q.scales[r * ng + j / g]);
                            float v = cq_f16_to_f32(q.vals[i]);
                            int code = cq_qcode_get(q.codes + r * rb, j, bits);
                            if (s != 0.0f)
                                assert_int_equal(code, cq_quant_level(v, s, bits) -
                                                           cq_quant_qmin(bits));
                            float dq = cq_quant_dequant(code + cq_quant_qmin(bits), s, bits);
                            assert_true(delta[i] == v - dq);
                        }
                    /* y = dense(codes) x + sum delta x[col] == unpacked W x */
                    for (int64_t r = 0; r < out; r++) {
                        double y0 = 0.0, y1 = 0.0, ab = 0.0;
                        int64_t gg = 0;
                        for (int64_t j = 0; j < in; j++) {
                            double x = (double)((j * 7 + r) % 13) - 6.0;
                            gg = j / g;
                            float s = cq_f16_to_f32(q.scales[r * ng + gg]);
                            int code = cq_qcode_get(q.codes + r * rb, j, bits);
                            y0 += (double)cq_quant_dequant(code + cq_quant_qmin(bits), s, bits) * x;
                            y1 += (double)un[r * in + j] * x;
                            ab += fabs((double)un[r * in + j] * x);
                        }
                        for (int32_t i = q.rowptr[r]; i < q.rowptr[r + 1]; i++)
                            y0 += (double)delta[i] * ((double)((q.cols[i] * 7 + r) % 13) - 6.0);
                        assert_true(fabs(y0 - y1) <= 1e-6 * (ab + 1e-30));
                    }
                    free(delta);
                    cq_qweight_free(&q);
                }
            }
        free(w);
        free(fq);
        free(un);
        free(m);
    }
}

static void test_pack_errors(void **st)
{
    (void)st;
    cq_qweight q;
    /* u16 column indices */
    assert_int_equal(cq_qweight_alloc(&q, 1, 70000, 4, 128, 1), CQ_EINVAL);
    assert_int_equal(cq_qweight_alloc(&q, 1, 70000, 4, 128, 0), 0);
    cq_qweight_free(&q);
    float *w = alloc_f(70000);
    uint8_t *m = alloc_u8(70000);
    m[69999] = 1;
    assert_int_equal(cq_qpack(&q, w, m, 1, 70000, 4, 128), CQ_EINVAL);
    assert_int_equal(cq_qpack(&q, w, NULL, 1, 70000, 4, 128), 0);
    cq_qweight_free(&q);
    free(w);
    free(m);
    float w2[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    assert_int_equal(cq_qpack(&q, w2, NULL, 1, 8, 4, 48), CQ_EINVAL);
    /* corrupt sparse part is caught */
    uint8_t m2[8] = { 0, 1, 0, 1, 0, 0, 0, 0 };
    assert_int_equal(cq_qpack(&q, w2, m2, 1, 8, 4, 32), 0);
    float d[8];
    q.cols[0] = 3; /* not ascending */
    assert_int_equal(cq_qunpack(&q, d), CQ_EBADMSG);
    q.cols[0] = 1;
    q.cols[1] = 8; /* out of range */
    assert_int_equal(cq_qunpack(&q, d), CQ_EBADMSG);
    q.cols[1] = 3;
    q.rowptr[1] = 3;
    assert_int_equal(cq_qunpack(&q, d), CQ_EBADMSG);
    q.rowptr[1] = 2;
    assert_int_equal(cq_qunpack(&q, d), 0);
    cq_qweight_free(&q);
}

/* The packed form as cpu/qmm reads it: both sides agree on the layout. The
 * exact GEMV is asked for: the default int8-activation path is an
 * approximation, tested against its own reference in test_qmm.c. */
static void test_pack_qmm_interop(void **st)
{
    (void)st;
    cq_qmm_set_exact(1);
    const int64_t out = 7, in = 203, n = out * in;
    float *w = alloc_f(n), *un = alloc_f(n), *x = alloc_f(in), *y = alloc_f(out);
    uint8_t *m = alloc_u8(n);
    rng_state = 11;
    for (int64_t i = 0; i < n; i++) {
        w[i] = rnd_heavy() * 0.05f;
        m[i] = rnd_uniform() < 0.02;
    }
    for (int64_t j = 0; j < in; j++) x[j] = (float)rnd_normal();
    for (int bi = 0; bi < 4; bi++)
        for (int gi = 0; gi < 4; gi++) {
            int bits = all_bits[bi], group = all_groups[gi];
            cq_qweight q;
            assert_int_equal(cq_qpack(&q, w, m, out, in, bits, group), 0);
            assert_int_equal(cq_quant_row_bytes(in, bits), cq_qmm_row_bytes(bits, in));
            float *delta = alloc_f(q.nnz);
            assert_int_equal(cq_qpack_cherry_delta(&q, delta), 0);
            assert_int_equal(cq_qunpack(&q, un), 0);
            cq_qmm_w qw = { .out = out, .in = in, .bits = bits, .group = group,
                            .codes = q.codes, .scales = q.scales, .rowptr = q.rowptr,
                            .cols = q.cols, .delta = delta };
            assert_int_equal(cq_qmm_check(&qw), 0);
            assert_int_equal(cq_qmm_gemv(&qw, x, y), 0);
            for (int64_t r = 0; r < out; r++) {
                double ref = 0.0, ab = 0.0;
                for (int64_t j = 0; j < in; j++) {
                    ref += (double)un[r * in + j] * x[j];
                    ab += fabs((double)un[r * in + j] * x[j]);
                }
                if (!(fabs((double)y[r] - ref) <= 1e-5 * ab + 1e-30))
                    fail_msg("qmm interop bits %d group %d row %lld: %.9g vs %.9g", bits, group,
                             (long long)r, (double)y[r], ref);
            }
            free(delta);
            cq_qweight_free(&q);
        }
    cq_qmm_set_exact(0);
    free(w);
    free(un);
    free(x);
    free(y);
    free(m);
}

/* ------------------------------------------------------------ selection */

/* reference top-k: stable order by (score desc, index asc) */
static const float *g_score;
static int cmp_desc(const void *a, const void *b)
{
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    if (g_score[i] > g_score[j]) return -1;
    if (g_score[i] < g_score[j]) return 1;
    return (i > j) - (i < j);
}

static void ref_topk(uint8_t *m, const float *score, int64_t n, int64_t k)
{
    int64_t *idx = malloc((size_t)n * sizeof(int64_t));
    assert_non_null(idx);
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    g_score = score;
    qsort(idx, (size_t)n, sizeof(int64_t), cmp_desc);
    memset(m, 0, (size_t)n);
    for (int64_t i = 0; i < k && i < n; i++) m[idx[i]] = 1;
    free(idx);
}

static void test_select_k_rules(void **st)
{
    (void)st;
    assert_int_equal(cq_cherry_k(4096, CQ_K_DEFAULT, 0), 16);
    assert_int_equal(cq_cherry_k(11008, CQ_K_DEFAULT, 0), 43);
    assert_int_equal(cq_cherry_k(1000, CQ_K_DEFAULT, 0), 4);
    assert_int_equal(cq_cherry_k(100, CQ_K_DEFAULT, 0), 1);   /* at least 1 */
    assert_int_equal(cq_cherry_k(4096, CQ_K_REFERENCE, 0), 16);
    assert_int_equal(cq_cherry_k(11008, CQ_K_REFERENCE, 0), 40);
    assert_int_equal(cq_cherry_k(1000, CQ_K_REFERENCE, 0), 0);
    assert_int_equal(cq_cherry_k(1792, CQ_K_REFERENCE, 0), 0); /* ceil(7)/8 -> 0 */
    assert_int_equal(cq_cherry_k(1793, CQ_K_REFERENCE, 0), 8);
    assert_int_equal(cq_cherry_k(2048, CQ_K_REFERENCE, 0), 8);
    assert_int_equal(cq_cherry_k(100, CQ_K_EXPLICIT, 7), 7);
    assert_int_equal(cq_cherry_k(5, CQ_K_EXPLICIT, 7), 5);      /* clamped to in */
    assert_true(cq_cherry_k(100, CQ_K_EXPLICIT, -1) < 0);
    assert_true(cq_cherry_k(100, CQ_K_FRACTION, 0) < 0);

    /* the reference rule selects nothing on a small matrix */
    float f[2 * 512];
    uint8_t m[2 * 512];
    for (int i = 0; i < 2 * 512; i++) f[i] = (float)i;
    cq_select_opts o = { .criterion = CQ_SEL_IMPACT, .k_rule = CQ_K_REFERENCE };
    assert_int_equal(cq_select_cherries(m, NULL, f, 2, 512, &o), 0);
    for (int i = 0; i < 2 * 512; i++) assert_int_equal(m[i], 0);
    o.k_rule = CQ_K_DEFAULT; /* round(512/256) = 2 per row */
    assert_int_equal(cq_select_cherries(m, NULL, f, 2, 512, &o), 0);
    int cnt = 0;
    for (int i = 0; i < 2 * 512; i++) cnt += m[i];
    assert_int_equal(cnt, 4);
    assert_true(m[510] && m[511] && m[1022] && m[1023]);
    /* impact needs F, magnitude needs w */
    assert_int_equal(cq_select_cherries(m, f, NULL, 2, 512, &o), CQ_EINVAL);
    o.criterion = CQ_SEL_MAGNITUDE;
    assert_int_equal(cq_select_cherries(m, NULL, f, 2, 512, &o), CQ_EINVAL);
}

static void test_select_topk(void **st)
{
    (void)st;
    const int64_t out = 9, in = 300, n = out * in, k = 7;
    float *f = alloc_f(n), *w = alloc_f(n), *a = alloc_f(n);
    uint8_t *m = alloc_u8(n), *ref = alloc_u8(n);
    rng_state = 7;
    for (int64_t i = 0; i < n; i++) {
        f[i] = (float)(int)(rnd_uniform() * 40.0); /* many ties */
        w[i] = (float)(int)(rnd_heavy() * 4.0f) * 0.25f;
        a[i] = fabsf(w[i]);
    }
    for (int crit = 0; crit < 2; crit++) {
        cq_select_opts o = { .criterion = crit ? CQ_SEL_MAGNITUDE : CQ_SEL_IMPACT,
                             .k_rule = CQ_K_EXPLICIT, .k = k };
        assert_int_equal(cq_select_cherries(m, w, f, out, in, &o), 0);
        for (int64_t r = 0; r < out; r++) {
            ref_topk(ref + r * in, (crit ? a : f) + r * in, in, k);
            assert_memory_equal(m + r * in, ref + r * in, (size_t)in);
        }
        /* fraction mode: top 5% of the whole matrix, any rows */
        o.k_rule = CQ_K_FRACTION;
        o.fraction = 0.05;
        assert_int_equal(cq_select_cherries(m, w, f, out, in, &o), 0);
        int64_t total = (int64_t)llround(0.05 * (double)n), cnt = 0;
        for (int64_t i = 0; i < n; i++) cnt += m[i];
        assert_int_equal(cnt, total);
        ref_topk(ref, crit ? a : f, n, total);
        assert_memory_equal(m, ref, (size_t)n);
        o.fraction = 1.5;
        assert_int_equal(cq_select_cherries(m, w, f, out, in, &o), CQ_EINVAL);
    }
    /* NaN in F is refused */
    f[5] = NAN;
    cq_select_opts o = { .criterion = CQ_SEL_IMPACT, .k_rule = CQ_K_DEFAULT };
    assert_int_equal(cq_select_cherries(m, w, f, out, in, &o), CQ_ERANGE);
    free(f);
    free(w);
    free(a);
    free(m);
    free(ref);
}

static void test_select_random(void **st)
{
    (void)st;
    const int64_t out = 16, in = 500, n = out * in;
    uint8_t *m1 = alloc_u8(n), *m2 = alloc_u8(n), *m3 = alloc_u8(n);
    cq_select_opts o = { .criterion = CQ_SEL_RANDOM, .k_rule = CQ_K_EXPLICIT, .k = 9,
                         .seed = 1 };
    assert_int_equal(cq_select_cherries(m1, NULL, NULL, out, in, &o), 0);
    assert_int_equal(cq_select_cherries(m2, NULL, NULL, out, in, &o), 0);
    o.seed = 2;
    assert_int_equal(cq_select_cherries(m3, NULL, NULL, out, in, &o), 0);
    assert_memory_equal(m1, m2, (size_t)n);
    assert_memory_not_equal(m1, m3, (size_t)n);
    int64_t col_hits[500] = { 0 };
    for (int64_t r = 0; r < out; r++) {
        int c = 0;
        for (int64_t j = 0; j < in; j++) {
            c += m1[r * in + j];
            col_hits[j] += m1[r * in + j];
        }
        assert_int_equal(c, 9);
    }
    /* rows are not all the same */
    assert_memory_not_equal(m1, m1 + in, (size_t)in);
    /* uniformity, roughly: many seeds, each column hit about k/in of the time */
    memset(col_hits, 0, sizeof(col_hits));
    for (uint64_t s = 0; s < 200; s++) {
        o.seed = 1000 + s;
        assert_int_equal(cq_select_cherries(m1, NULL, NULL, out, in, &o), 0);
        for (int64_t i = 0; i < n; i++) col_hits[i % in] += m1[i];
    }
    /* expected 200*16*9/500 = 57.6 per column, sd ~ 7.5 */
    int64_t lo = 1000, hi = 0;
    for (int64_t j = 0; j < in; j++) {
        lo = col_hits[j] < lo ? col_hits[j] : lo;
        hi = col_hits[j] > hi ? col_hits[j] : hi;
    }
    assert_true(lo > 20 && hi < 100);
    /* fraction mode */
    o.k_rule = CQ_K_FRACTION;
    o.fraction = 0.01;
    assert_int_equal(cq_select_cherries(m1, NULL, NULL, out, in, &o), 0);
    int64_t cnt = 0;
    for (int64_t i = 0; i < n; i++) cnt += m1[i];
    assert_int_equal(cnt, 80);
    free(m1);
    free(m2);
    free(m3);
}

static double sum_d(const double *x, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}

static void test_select_loss_aware(void **st)
{
    (void)st;
    const int64_t out = 24, in = 512, n = out * in;
    float *w = alloc_f(n), *f = alloc_f(n);
    uint8_t *mi = alloc_u8(n), *ml = alloc_u8(n), *mf = alloc_u8(n);
    double li[24], ll[24];
    rng_state = 99;
    for (int64_t i = 0; i < n; i++) {
        w[i] = rnd_heavy() * 0.02f;
        f[i] = (float)(-log(rnd_uniform()) * pow(rnd_uniform(), -1.5)); /* heavy tailed */
    }
    for (int bi = 0; bi < 3; bi++)
        for (int gi = 0; gi < 4; gi++) {
            int bits = all_bits[bi], group = all_groups[gi];
            cq_select_opts o = { .criterion = CQ_SEL_IMPACT, .k_rule = CQ_K_EXPLICIT,
                                 .k = 4, .bits = bits, .group = group };
            assert_int_equal(cq_select_cherries(mi, w, f, out, in, &o), 0);
            o.criterion = CQ_SEL_LOSS_AWARE;
            assert_int_equal(cq_select_cherries(ml, w, f, out, in, &o), 0);
            assert_int_equal(cq_quant_loss(li, w, f, mi, out, in, bits, group), 0);
            assert_int_equal(cq_quant_loss(ll, w, f, ml, out, in, bits, group), 0);
            int better = 0;
            for (int64_t r = 0; r < out; r++) {
                int c = 0;
                for (int64_t j = 0; j < in; j++) c += ml[r * in + j];
                assert_int_equal(c, 4);
                if (ll[r] > li[r])
                    fail_msg("bits %d group %d row %lld: loss-aware %.9g > impact %.9g", bits,
                             group, (long long)r, ll[r], li[r]);
                better += ll[r] < li[r];
            }
            /* the greedy itself does the work: most rows strictly better */
            if (better < out / 2)
                fail_msg("bits %d group %d: loss-aware strictly better on only %d of %lld rows",
                         bits, group, better, (long long)out);
            /* fraction mode: same count, total loss not higher than impact's */
            o.k_rule = CQ_K_FRACTION;
            o.fraction = 0.01;
            assert_int_equal(cq_select_cherries(mf, w, f, out, in, &o), 0);
            o.criterion = CQ_SEL_IMPACT;
            assert_int_equal(cq_select_cherries(mi, w, f, out, in, &o), 0);
            int64_t cf = 0, ci = 0;
            for (int64_t i = 0; i < n; i++) {
                cf += mf[i];
                ci += mi[i];
            }
            assert_int_equal(cf, llround(0.01 * (double)n));
            assert_int_equal(cf, ci);
            assert_int_equal(cq_quant_loss(li, w, f, mi, out, in, bits, group), 0);
            assert_int_equal(cq_quant_loss(ll, w, f, mf, out, in, bits, group), 0);
            assert_true(sum_d(ll, out) < sum_d(li, out));
        }

    /* constructed: group 0 holds a large weight with the lowest F; impact
     * takes the high-F weight of group 1 (small error), loss-aware takes the
     * outlier, which shrinks group 0's scale from 5 to ~0.25 */
    float w1[64], f1[64];
    uint8_t a[64], b[64];
    for (int j = 0; j < 64; j++) {
        w1[j] = (float)((j * 37) % 19 - 9) / 9.0f;
        f1[j] = 1.0f;
    }
    w1[0] = 20.0f;
    f1[0] = 0.001f;
    f1[40] = 5.0f;
    cq_select_opts o = { .criterion = CQ_SEL_IMPACT, .k_rule = CQ_K_EXPLICIT, .k = 1,
                         .bits = 3, .group = 32 };
    assert_int_equal(cq_select_cherries(a, w1, f1, 1, 64, &o), 0);
    assert_true(a[40]);
    o.criterion = CQ_SEL_LOSS_AWARE;
    assert_int_equal(cq_select_cherries(b, w1, f1, 1, 64, &o), 0);
    assert_true(b[0]);
    double la, lb;
    assert_int_equal(cq_quant_loss(&la, w1, f1, a, 1, 64, 3, 32), 0);
    assert_int_equal(cq_quant_loss(&lb, w1, f1, b, 1, 64, 3, 32), 0);
    assert_true(lb < 0.5 * la);
    /* without F (F = 1) loss-aware still works; grid is required */
    assert_int_equal(cq_select_cherries(b, w1, NULL, 1, 64, &o), 0);
    assert_true(b[0]);
    o.group = 48;
    assert_int_equal(cq_select_cherries(b, w1, f1, 1, 64, &o), CQ_EINVAL);
    free(w);
    free(f);
    free(mi);
    free(ml);
    free(mf);
}

/* ------------------------------------------------------------ heterogeneity */

static int cmp_f_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static void test_hetero(void **st)
{
    (void)st;
    double s;
    float x[200];
    for (int i = 0; i < 100; i++) x[i] = 1.0f;
    x[37] = 100.0f;
    assert_int_equal(cq_hetero_score(x, 100, &s), 0); /* top 1 = 100, bottom max 1 */
    assert_true(s == 100.0);
    for (int i = 0; i < 200; i++) x[i] = 1.0f;
    x[3] = 100.0f;
    x[150] = 50.0f;
    x[151] = 2.0f;
    assert_int_equal(cq_hetero_score(x, 200, &s), 0); /* top 2 mean 75, bottom max 2 */
    assert_true(s == 37.5);
    for (int i = 0; i < 10; i++) x[i] = (float)(10 - i);
    assert_int_equal(cq_hetero_score(x, 10, &s), 0); /* n < 100: top 1 */
    assert_true(fabs(s - 10.0 / 9.0) < 1e-15);
    float z[4] = { 0, 0, 0, 5 };
    assert_int_equal(cq_hetero_score(z, 4, &s), 0);
    assert_true(isinf(s) && s > 0);
    z[3] = 0;
    assert_int_equal(cq_hetero_score(z, 4, &s), 0);
    assert_true(s == 1.0);
    assert_int_equal(cq_hetero_score(z, 1, &s), CQ_EINVAL);
    float neg[4] = { -8, 1, 2, -4 };
    assert_int_equal(cq_hetero_score_abs(neg, 4, &s), 0);
    assert_true(s == 2.0);
    z[0] = NAN;
    assert_int_equal(cq_hetero_score(z, 4, &s), CQ_ERANGE);

    /* big random input with duplicates, against a sort */
    const int64_t n = 100003;
    float *v = alloc_f(n), *c = alloc_f(n);
    rng_state = 5;
    for (int64_t i = 0; i < n; i++) v[i] = (float)(int)(fabsf(rnd_heavy()) * 50.0f);
    memcpy(c, v, (size_t)n * sizeof(float));
    qsort(c, (size_t)n, sizeof(float), cmp_f_desc);
    int64_t top = n / 100;
    double sum = 0.0;
    for (int64_t i = 0; i < top; i++) sum += c[i];
    double expect = sum / (double)top / (double)c[top];
    assert_int_equal(cq_hetero_score(v, n, &s), 0);
    assert_true(fabs(s - expect) <= 1e-12 * expect);
    /* many equal values (zeros): still exact and fast */
    for (int64_t i = 0; i < n; i++) v[i] = i % 1000 == 0 ? (float)(i / 1000 + 1) : 0.0f;
    assert_int_equal(cq_hetero_score(v, n, &s), 0);
    assert_true(isinf(s));
    free(v);
    free(c);
}

/* ------------------------------------------------------------ GPTQ */

/* ||(A - B) X||_F with X [in, N] */
static double out_err(const float *A, const float *B, const float *X, int64_t out, int64_t in,
                      int64_t N)
{
    double e = 0.0;
    double *d = malloc((size_t)in * sizeof(double));
    assert_non_null(d);
    for (int64_t r = 0; r < out; r++) {
        for (int64_t j = 0; j < in; j++) d[j] = (double)A[r * in + j] - (double)B[r * in + j];
        for (int64_t t = 0; t < N; t++) {
            double y = 0.0;
            for (int64_t j = 0; j < in; j++) y += d[j] * X[j * N + t];
            e += y * y;
        }
    }
    free(d);
    return sqrt(e);
}

static void test_gptq(void **st)
{
    (void)st;
    const int64_t out = 32, in = 256, N = 1024;
    float *X = alloc_f(in * N), *H = alloc_f(in * in), *W = alloc_f(out * in);
    float *rtn = alloc_f(out * in), *gq = alloc_f(out * in), *un = alloc_f(out * in);
    uint8_t *m = alloc_u8(out * in);
    rng_state = 2024;
    /* correlated inputs: AR(1) across features, varied feature scales */
    for (int64_t t = 0; t < N; t++) {
        double prev = rnd_normal();
        for (int64_t j = 0; j < in; j++) {
            prev = 0.8 * prev + 0.6 * rnd_normal();
            X[j * N + t] = (float)(prev * (0.5 + (double)(j % 7) / 4.0));
        }
    }
    for (int64_t i = 0; i < in; i++)
        for (int64_t j = 0; j <= i; j++) {
            double s = 0.0;
            for (int64_t t = 0; t < N; t++) s += (double)X[i * N + t] * X[j * N + t];
            H[i * in + j] = H[j * in + i] = (float)(2.0 * s);
        }
    for (int64_t i = 0; i < out * in; i++) W[i] = rnd_heavy() * 0.02f;
    for (int64_t r = 0; r < out; r++) m[r * in + (r * 31 + 5) % in] = 1;
    m[3 * in + 0] = 1; /* a cherry in the first column gets no feedback */

    for (int bi = 1; bi < 3; bi++)
        for (int gi = 0; gi < 4; gi++) {
            int bits = all_bits[bi], group = all_groups[gi];
            assert_int_equal(cq_quant_fakequant(rtn, W, m, out, in, bits, group, 1), 0);
            memcpy(gq, W, (size_t)(out * in) * sizeof(float));
            cq_qweight q;
            assert_int_equal(cq_gptq_quantize(gq, H, m, out, in, bits, group, 0.01f, 128, 1,
                                              &q), 0);
            double er = out_err(W, rtn, X, out, in, N), eg = out_err(W, gq, X, out, in, N);
            if (!(eg < 0.9 * er))
                fail_msg("gptq %d bits group %d: error %g not below round-to-nearest %g", bits,
                         group, eg, er);
            /* the packed form holds exactly the GPTQ weights */
            assert_int_equal(cq_qunpack(&q, un), 0);
            for (int64_t i = 0; i < out * in; i++)
                if (!(un[i] == gq[i])) fail_msg("gptq packed [%lld] %g != %g", (long long)i,
                                                (double)un[i], (double)gq[i]);
            assert_int_equal(q.nnz, out + 1);
            cq_qweight_free(&q);
            /* cherries are not quantized: the first-column one is exactly the
             * FP16 of its weight */
            assert_true(gq[3 * in] == cq_f16_to_f32(cq_f32_to_f16(W[3 * in])));
        }

    /* a row made only of cherries is never changed (fp16 off: bit exact) */
    memcpy(gq, W, (size_t)(out * in) * sizeof(float));
    uint8_t *m2 = alloc_u8(out * in);
    memcpy(m2, m, (size_t)(out * in));
    memset(m2 + 5 * in, 1, (size_t)in);
    assert_int_equal(cq_gptq_quantize(gq, H, m2, out, in, 3, 128, 0.01f, 128, 0, NULL), 0);
    assert_memory_equal(gq + 5 * in, W + 5 * in, (size_t)in * sizeof(float));
    assert_memory_not_equal(gq + 6 * in, W + 6 * in, (size_t)in * sizeof(float));

    /* diagonal H: no error feedback, so GPTQ is exactly round-to-nearest;
     * odd block size (rounded up to the group) and a dead column */
    float *Hd = alloc_f(in * in);
    for (int64_t j = 0; j < in; j++) Hd[j * in + j] = 1.0f + (float)(j % 5);
    Hd[7 * in + 7] = 0.0f;
    memcpy(gq, W, (size_t)(out * in) * sizeof(float));
    assert_int_equal(cq_gptq_quantize(gq, Hd, m, out, in, 4, 64, 0.01f, 100, 0, NULL), 0);
    memcpy(un, W, (size_t)(out * in) * sizeof(float));
    for (int64_t r = 0; r < out; r++) un[r * in + 7] = 0.0f; /* dead column zeroed */
    assert_int_equal(cq_quant_fakequant(rtn, un, m, out, in, 4, 64, 0), 0);
    assert_memory_equal(gq, rtn, (size_t)(out * in) * sizeof(float));

    /* not positive definite: rejected */
    float Hb[4] = { 1, 2, 2, 1 }, w2[4] = { 1, 2, 3, 4 };
    assert_int_equal(cq_gptq_quantize(w2, Hb, NULL, 2, 2, 4, 0, 0.01f, 128, 1, NULL),
                     CQ_ERANGE);
    assert_int_equal(cq_gptq_quantize(w2, Hb, NULL, 2, 2, 4, 48, 0.01f, 128, 1, NULL),
                     CQ_EINVAL);
    free(X);
    free(H);
    free(Hd);
    free(W);
    free(rtn);
    free(gq);
    free(un);
    free(m);
    free(m2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_quant_ties_8bit),
        cmocka_unit_test(test_quant_halfgrid),
        cmocka_unit_test(test_quant_groups),
        cmocka_unit_test(test_quant_fp16_flag),
        cmocka_unit_test(test_quant_golden_torch),
        cmocka_unit_test(test_pack_layout),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_pack_errors),
        cmocka_unit_test(test_pack_qmm_interop),
        cmocka_unit_test(test_select_k_rules),
        cmocka_unit_test(test_select_topk),
        cmocka_unit_test(test_select_random),
        cmocka_unit_test(test_select_loss_aware),
        cmocka_unit_test(test_hetero),
        cmocka_unit_test(test_gptq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
