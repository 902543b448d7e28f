/* cherryq: tests of the model file formats: safetensors (single, sharded,
 * writer), GGUF (reader, writer, Q/K permutation), Hugging Face config.json.
 *
 * Golden files in tests/fixtures were written by tools/gen_format_fixtures.py
 * (numpy + struct, byte by byte from the specs), independently of this code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cq_base.h"
#include "cq_io.h"
#include "gguf.h"
#include "hfconfig.h"
#include "safetensors.h"

#ifndef CQ_TEST_FIXTURES
#error "CQ_TEST_FIXTURES must name the tests/fixtures directory"
#endif
#define FIX(name) CQ_TEST_FIXTURES "/" name

/* ------------------------------------------------------------ helpers */
static char g_tmp[1024];
static char g_last_err[2048];
static int g_nerr;

static void capture_log(cq_log_level lvl, const char *msg, void *user)
{
    if (lvl == CQ_LOG_ERROR) {
        snprintf(g_last_err, sizeof g_last_err, "%s", msg);
        g_nerr++;
    }
}

static void clear_err(void)
{
    g_last_err[0] = 0;
    g_nerr = 0;
}

/* rc must equal want and the last logged error must contain each substring */
static void expect_err(int rc, int want, const char *sub1, const char *sub2)
{
    if (rc != want) fprintf(stderr, "rc %d (%s), want %d; last error: %s\n", rc, cq_strerror(rc),
                            want, g_last_err);
    assert_int_equal(rc, want);
    if (sub1 && !strstr(g_last_err, sub1)) {
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", g_last_err, sub1);
        fail();
    }
    if (sub2 && !strstr(g_last_err, sub2)) {
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", g_last_err, sub2);
        fail();
    }
}

static char *tmp_path(char *buf, size_t n, const char *name)
{
    int k = snprintf(buf, n, "%s/%s", g_tmp, name);
    assert_true(k > 0 && (size_t)k < n);
    return buf;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *read_all(const char *path, size_t *n)
{
    char *d = NULL;
    assert_int_equal(cq_read_file(path, &d, n, 1u << 26), 0);
    return (uint8_t *)d;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int group_setup(void **state)
{
    snprintf(g_tmp, sizeof g_tmp, "formats_tmp_XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    char *cwd = getcwd(NULL, 0);
    char rel[64];
    int k1 = snprintf(rel, sizeof rel, "%s", g_tmp);
    int k2 = snprintf(g_tmp, sizeof g_tmp, "%s/%s", cwd, rel);
    free(cwd);
    if (k1 < 0 || (size_t)k1 >= sizeof rel || k2 < 0 || (size_t)k2 >= sizeof g_tmp) return -1;
    cq_log_set_callback(capture_log, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    cq_log_set_callback(NULL, NULL);
    return 0;
}

static float f32_at(const void *p, size_t i)
{
    float f;
    memcpy(&f, (const uint8_t *)p + 4 * i, 4);
    return f;
}

static uint16_t u16_at(const void *p, size_t i)
{
    uint16_t v;
    memcpy(&v, (const uint8_t *)p + 2 * i, 2);
    return v;
}

/* ============================================================ safetensors */
static void test_st_golden(void **state)
{
    cq_st_file *f = NULL;
    assert_int_equal(cq_st_open(&f, FIX("golden.safetensors")), 0);
    assert_int_equal(cq_st_count(f), 12);
    assert_string_equal(cq_st_tensor_at(f, 0)->name, "a.f32");   /* header order */
    assert_string_equal(cq_st_tensor_at(f, 11)->name, "l.empty");

    const cq_st_tensor *t = cq_st_find(f, "a.f32");
    assert_non_null(t);
    assert_int_equal(t->dtype, CQ_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->nbytes, 24);
    for (int i = 0; i < 6; i++) assert_true(f32_at(t->data, i) == i * 0.5f - 1.0f);

    assert_int_equal(cq_st_get(f, "b.f16", CQ_F16, &t), 0);
    const float b[4] = {1.0f, -2.5f, 0.5f, 65504.0f};
    for (int i = 0; i < 4; i++) assert_true(cq_f16_to_f32(u16_at(t->data, i)) == b[i]);

    assert_int_equal(cq_st_get(f, "c.bf16", CQ_BF16, &t), 0);
    assert_int_equal(t->shape[0] * t->shape[1], 4);
    const float c[4] = {1.0f, -3.0f, 0.15625f, 256.0f};
    for (int i = 0; i < 4; i++) assert_true(cq_bf16_to_f32(u16_at(t->data, i)) == c[i]);

    assert_int_equal(cq_st_get(f, "d.i32", CQ_I32, &t), 0);
    int32_t d[3];
    memcpy(d, t->data, 12);
    assert_int_equal(d[0], -1);
    assert_int_equal(d[2], 2147483647);
    assert_int_equal(cq_st_get(f, "e.i16", CQ_I16, &t), 0);
    assert_int_equal((int16_t)u16_at(t->data, 0), -32768);
    assert_int_equal(cq_st_get(f, "f.u16", CQ_U16, &t), 0);
    assert_int_equal(u16_at(t->data, 1), 65535);
    assert_int_equal(cq_st_get(f, "g.u8", CQ_U8, &t), 0);
    assert_memory_equal(t->data, "\x00\x01\x02\xfe\xff", 5);

    /* recognized but without a cq_dtype: listed, refused on checked access */
    t = cq_st_find(f, "h.i8");
    assert_non_null(t);
    assert_int_equal(t->dtype, CQ_DTYPE_COUNT);
    assert_string_equal(t->st_dtype, "I8");
    clear_err();
    expect_err(cq_st_get(f, "h.i8", CQ_DTYPE_COUNT, &t), CQ_ENOTSUP, "'h.i8'", "I8");
    assert_null(t);
    t = cq_st_find(f, "i.f64");
    assert_int_equal(t->elem_size, 8);
    double dd[2];
    memcpy(dd, t->data, 16);
    assert_true(dd[0] == 3.14159 && dd[1] == -1e300);
    t = cq_st_find(f, "j.i64");
    int64_t jj;
    memcpy(&jj, t->data, 8);
    assert_true(jj == -((int64_t)1 << 40));
    expect_err(cq_st_get(f, "j.i64", CQ_DTYPE_COUNT, &t), CQ_ENOTSUP, "'j.i64'", "I64");

    /* dtype mismatch on a supported tensor */
    expect_err(cq_st_get(f, "a.f32", CQ_F16, &t), CQ_EINVAL, "'a.f32'", NULL);

    t = cq_st_find(f, "k.scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->numel, 1);
    assert_true(f32_at(t->data, 0) == 42.0f);
    t = cq_st_find(f, "l.empty");
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->numel, 0);
    assert_int_equal(t->nbytes, 0);
    assert_null(t->data);

    assert_null(cq_st_find(f, "nope"));
    expect_err(cq_st_get(f, "nope", CQ_F32, &t), CQ_ENOENT, "nope", "golden.safetensors");

    assert_string_equal(cq_st_metadata(f, "format"), "pt");
    assert_string_equal(cq_st_metadata(f, "note"), "golden \"quoted\" \xc3\xbc");
    assert_null(cq_st_metadata(f, "missing"));
    assert_int_equal(cq_st_metadata_count(f), 2);
    cq_st_close(&f);
    assert_null(f);
    cq_st_close(&f); /* idempotent */
}

static void test_st_roundtrip(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "rt.safetensors");
    float a[6] = {1, -2, 3.5f, 1e-30f, -0.0f, 1e30f};
    uint16_t h[3] = {cq_f32_to_f16(0.5f), cq_f32_to_f16(-1.25f), cq_f32_to_f16(1000.0f)};
    uint16_t bf[2] = {cq_f32_to_bf16(3.0f), cq_f32_to_bf16(-0.125f)};
    int32_t i32[4] = {INT32_MIN, -1, 0, INT32_MAX};
    int16_t i16[2] = {-5, 32767};
    uint16_t u16[1] = {65535};
    uint8_t u8[7] = {0, 1, 2, 3, 4, 5, 255};
    float sc = 7.0f;
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s22[4] = {1, 2, 1, 1}, s4[1] = {4}, s2[1] = {2},
            s111[3] = {1, 1, 1}, s7[1] = {7}, s0[2] = {0, 5};

    cq_st_writer *w = NULL;
    assert_int_equal(cq_st_writer_create(&w), 0);
    assert_int_equal(cq_st_writer_add(w, "w.f32", CQ_F32, 2, s23, a), 0);
    assert_int_equal(cq_st_writer_add(w, "w.f16", CQ_F16, 1, s3, h), 0);
    assert_int_equal(cq_st_writer_add(w, "w.bf16", CQ_BF16, 4, s22, bf), 0);
    assert_int_equal(cq_st_writer_add(w, "w.i32", CQ_I32, 1, s4, i32), 0);
    assert_int_equal(cq_st_writer_add(w, "w.i16", CQ_I16, 1, s2, i16), 0);
    assert_int_equal(cq_st_writer_add(w, "w.u16", CQ_U16, 3, s111, u16), 0);
    assert_int_equal(cq_st_writer_add(w, "w.u8", CQ_U8, 1, s7, u8), 0);
    assert_int_equal(cq_st_writer_add(w, "w.scalar", CQ_F32, 0, NULL, &sc), 0);
    assert_int_equal(cq_st_writer_add(w, "w.empty", CQ_F16, 2, s0, NULL), 0);
    assert_int_equal(cq_st_writer_add_metadata(w, "format", "pt"), 0);
    assert_int_equal(cq_st_writer_add_metadata(w, "quote", "x"), 0);
    assert_int_equal(cq_st_writer_add_metadata(w, "quote", "a \"b\"\n\\c \xe2\x96\x81"), 0);

    /* argument errors */
    clear_err();
    assert_int_equal(cq_st_writer_add(w, "w.f32", CQ_F32, 2, s23, a), CQ_EINVAL);
    assert_int_equal(cq_st_writer_add(w, "__metadata__", CQ_F32, 2, s23, a), CQ_EINVAL);
    int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, sneg[1] = {-1};
    assert_int_equal(cq_st_writer_add(w, "x", CQ_F32, 9, s9, a), CQ_EINVAL);
    assert_int_equal(cq_st_writer_add(w, "x", CQ_F32, 1, sneg, a), CQ_EINVAL);
    assert_int_equal(cq_st_writer_add(w, "x", CQ_F32, 1, s3, NULL), CQ_EINVAL);
    assert_int_equal(cq_st_writer_add(w, "", CQ_F32, 1, s3, a), CQ_EINVAL);

    /* an old file at path is replaced */
    write_bytes(path, "old", 3);
    assert_int_equal(cq_st_writer_write(w, path), 0);
    cq_st_writer_destroy(&w);
    assert_null(w);

    size_t n;
    uint8_t *raw = read_all(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | raw[i];
    assert_int_equal((8 + hl) % 8, 0);
    assert_true(8 + hl <= n);
    assert_int_equal(raw[8], '{');
    /* header padding is spaces */
    size_t last = 8 + hl - 1;
    while (raw[last] == ' ') last--;
    assert_int_equal(raw[last], '}');
    /* insertion order, metadata first */
    char *hdr = strndup((const char *)raw + 8, hl);
    assert_true(strstr(hdr, "__metadata__") < strstr(hdr, "w.f32"));
    assert_true(strstr(hdr, "w.f32") < strstr(hdr, "w.f16"));
    assert_true(strstr(hdr, "w.u8") < strstr(hdr, "w.scalar"));
    free(hdr);
    free(raw);

    cq_st_file *f = NULL;
    assert_int_equal(cq_st_open(&f, path), 0);
    assert_int_equal(cq_st_count(f), 9);
    struct {
        const char *name;
        cq_dtype dt;
        int ndim;
        const int64_t *shape;
        const void *data;
        size_t nbytes;
    } exp[] = {
        {"w.f32", CQ_F32, 2, s23, a, sizeof a},   {"w.f16", CQ_F16, 1, s3, h, sizeof h},
        {"w.bf16", CQ_BF16, 4, s22, bf, sizeof bf}, {"w.i32", CQ_I32, 1, s4, i32, sizeof i32},
        {"w.i16", CQ_I16, 1, s2, i16, sizeof i16}, {"w.u16", CQ_U16, 3, s111, u16, sizeof u16},
        {"w.u8", CQ_U8, 1, s7, u8, sizeof u8},     {"w.scalar", CQ_F32, 0, NULL, &sc, 4},
        {"w.empty", CQ_F16, 2, s0, NULL, 0},
    };
    for (size_t i = 0; i < 9; i++) {
        const cq_st_tensor *t = NULL;
        assert_int_equal(cq_st_get(f, exp[i].name, exp[i].dt, &t), 0);
        assert_ptr_equal(t, cq_st_tensor_at(f, i));
        assert_string_equal(t->st_dtype, cq_st_dtype_to_name(exp[i].dt));
        assert_int_equal(t->ndim, exp[i].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], exp[i].shape[d]);
        assert_int_equal(t->nbytes, exp[i].nbytes);
        if (exp[i].nbytes) assert_memory_equal(t->data, exp[i].data, exp[i].nbytes);
    }
    assert_string_equal(cq_st_metadata(f, "format"), "pt");
    assert_string_equal(cq_st_metadata(f, "quote"), "a \"b\"\n\\c \xe2\x96\x81");
    assert_int_equal(cq_st_metadata_count(f), 2);
    cq_st_close(&f);

    /* no metadata, no tensors: still a valid file */
    assert_int_equal(cq_st_writer_create(&w), 0);
    assert_int_equal(cq_st_writer_write(w, path), 0);
    cq_st_writer_destroy(&w);
    assert_int_equal(cq_st_open(&f, path), 0);
    assert_int_equal(cq_st_count(f), 0);
    assert_int_equal(cq_st_metadata_count(f), 0);
    cq_st_close(&f);
}

/* every proper prefix of a valid file must be rejected, cleanly */
static void truncation_loop(const char *src, int is_gguf)
{
    size_t n;
    uint8_t *raw = read_all(src, &n);
    char path[512];
    tmp_path(path, sizeof path, "prefix.bin");
    for (size_t len = 0; len < n; len++) {
        write_bytes(path, raw, len);
        clear_err();
        int rc;
        if (is_gguf) {
            cq_gguf *g = NULL;
            rc = cq_gguf_open(&g, path);
            assert_null(g);
        } else {
            cq_st_file *f = NULL;
            rc = cq_st_open(&f, path);
            assert_null(f);
        }
        if (rc != CQ_EBADMSG) fprintf(stderr, "%s: prefix %zu of %zu: rc %d\n", src, len, n, rc);
        assert_int_equal(rc, CQ_EBADMSG);
        assert_true(g_nerr > 0);
        assert_non_null(strstr(g_last_err, path));
    }
    write_bytes(path, raw, n);
    if (is_gguf) {
        cq_gguf *g = NULL;
        assert_int_equal(cq_gguf_open(&g, path), 0);
        cq_gguf_close(&g);
    } else {
        cq_st_file *f = NULL;
        assert_int_equal(cq_st_open(&f, path), 0);
        cq_st_close(&f);
    }
    free(raw);
}

static void test_st_truncated(void **state)
{
    truncation_loop(FIX("golden.safetensors"), 0);
    truncation_loop(FIX("sharded/model-00002-of-00002.safetensors"), 0);
}

/* writes u64 header length (or hlen_override) + header + ndata zero bytes */
static int open_st_text(const char *header, size_t ndata, uint64_t hlen_override,
                        cq_st_file **out)
{
    char path[512];
    tmp_path(path, sizeof path, "crafted.safetensors");
    size_t hl = strlen(header);
    size_t n = 8 + hl + ndata;
    uint8_t *buf = calloc(1, n);
    uint64_t v = hlen_override ? hlen_override : hl;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(v >> (8 * i));
    memcpy(buf + 8, header, hl);
    write_bytes(path, buf, n);
    free(buf);
    clear_err();
    cq_st_file *f = NULL;
    int rc = cq_st_open(&f, path);
    if (out) *out = f;
    else cq_st_close(&f);
    return rc;
}

static void test_st_corrupt(void **state)
{
    cq_st_file *f = NULL;
    /* sanity: the crafting helper makes valid files */
    assert_int_equal(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                                  8, 0, &f), 0);
    assert_int_equal(cq_st_count(f), 1);
    cq_st_close(&f);
    assert_int_equal(open_st_text("{}", 0, 0, NULL), 0);
    assert_int_equal(open_st_text("{}   ", 0, 0, NULL), 0);

    expect_err(open_st_text("{}", 0, 1000, NULL), CQ_EBADMSG, "header length 1000", "file size");
    expect_err(open_st_text("{}", 0, 200u * 1024 * 1024, NULL), CQ_EBADMSG, "100 MB", NULL);
    expect_err(open_st_text("{}", 0, UINT64_MAX, NULL), CQ_EBADMSG, "header length", NULL);
    expect_err(open_st_text("{\"a\":", 0, 0, NULL), CQ_EBADMSG, "not valid JSON", NULL);
    expect_err(open_st_text("[1,2]", 0, 0, NULL), CQ_EBADMSG, "not a JSON object", NULL);
    expect_err(open_st_text("{} x", 0, 0, NULL), CQ_EBADMSG, "after the JSON", NULL);
    expect_err(open_st_text("{\"t\":3}", 0, 0, NULL), CQ_EBADMSG, "(tensor 't')", NULL);
    expect_err(open_st_text("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, NULL),
               CQ_EBADMSG, "dtype", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0,
                            NULL), CQ_EBADMSG, "Q4", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", 4, 0,
                            NULL), CQ_EBADMSG, "shape", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                            "\"data_offsets\":[0,4]}}", 4, 0, NULL),
               CQ_EBADMSG, "9 dimensions", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                            0, NULL), CQ_EBADMSG, "shape[0]", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
                            0, NULL), CQ_EBADMSG, "shape[0]", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}",
                            8, 0, NULL), CQ_EBADMSG, "shape[0]", "(tensor 't')");
    /* shape/offset mismatch */
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16,
                            0, NULL), CQ_EBADMSG, "needs 12", "(tensor 't')");
    /* offsets out of range */
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8, 0,
                            NULL), CQ_EBADMSG, "beyond the data section", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[0],"
                            "\"data_offsets\":[1e300,1e300]}}", 8, 0, NULL),
               CQ_EBADMSG, "data_offsets", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, 0,
                            NULL), CQ_EBADMSG, "begin 8 > end 4", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
                            0, NULL), CQ_EBADMSG, "data_offsets", "(tensor 't')");
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8,
                            0, NULL), CQ_EBADMSG, "data_offsets", "(tensor 't')");
    /* element count overflow: 2^50^3 */
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[1125899906842624,"
                            "1125899906842624,1125899906842624],\"data_offsets\":[0,0]}}", 0, 0,
                            NULL), CQ_EBADMSG, "overflow", "(tensor 't')");
    /* a zero dim makes even a huge shape empty */
    assert_int_equal(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[1125899906842624,"
                                  "1125899906842624,1125899906842624,0],\"data_offsets\":[0,0]}}",
                                  0, 0, NULL), 0);
    expect_err(open_st_text("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                            "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                            8, 0, NULL), CQ_EBADMSG, "twice", "'t'");
    expect_err(open_st_text("{\"__metadata__\":{\"a\":1}}", 0, 0, NULL), CQ_EBADMSG,
               "__metadata__", "'a'");
    expect_err(open_st_text("{\"__metadata__\":[]}", 0, 0, NULL), CQ_EBADMSG, "__metadata__", NULL);
    expect_err(open_st_text("{\"__metadata__\":{\"b\":\"1\",\"a\":\"2\",\"b\":\"3\"}}", 0, 0, NULL), CQ_EBADMSG,
               "appears twice", "'b'");
    /* one tensor's bytes inside another's: refused; empty tensors anywhere, adjacent ones: fine */
    expect_err(open_st_text("{\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                            "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                            12, 0, NULL), CQ_EBADMSG, "overlap", "'u' and 'v'");
    assert_int_equal(open_st_text("{\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                  "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                                  "\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                                  12, 0, NULL),
                     0);

    clear_err();
    expect_err(cq_st_open(&f, "/nonexistent/dir/x.safetensors"), CQ_ENOENT,
               "/nonexistent/dir/x.safetensors", NULL);
    assert_null(f);
}

/* bytes flipped at every position of the header: must never crash */
static void mutate_loop(const char *src, int is_gguf, size_t limit)
{
    size_t n;
    uint8_t *raw = read_all(src, &n);
    char path[512];
    tmp_path(path, sizeof path, "mutated.bin");
    static const uint8_t vals[] = {0x00, 0xff, 0x7f, 0x80, 0x01, '"', '9'};
    size_t end = n < limit ? n : limit;
    int ok = 0, bad = 0;
    for (size_t pos = 0; pos < end; pos++) {
        for (size_t k = 0; k < sizeof vals; k++) {
            if (raw[pos] == vals[k]) continue;
            uint8_t save = raw[pos];
            raw[pos] = vals[k];
            write_bytes(path, raw, n);
            raw[pos] = save;
            int rc;
            if (is_gguf) {
                cq_gguf *g = NULL;
                rc = cq_gguf_open(&g, path);
                /* touch everything a reader would */
                for (size_t i = 0; !rc && i < cq_gguf_tensor_count(g); i++) {
                    const cq_gguf_tensor *t = cq_gguf_tensor_at(g, i);
                    volatile uint8_t sink = 0;
                    for (size_t b = 0; b < t->nbytes; b++) sink ^= ((const uint8_t *)t->data)[b];
                    (void)sink;
                }
                for (size_t i = 0; !rc && i < cq_gguf_kv_count(g); i++) {
                    const char *key = cq_gguf_kv_key(g, i);
                    cq_gguf_type et;
                    uint64_t cnt;
                    if (cq_gguf_get_arr(g, key, &et, &cnt) == 0 && et == CQ_GGUF_TYPE_STRING) {
                        for (uint64_t j = 0; j < cnt; j++) {
                            const char *s;
                            size_t len;
                            assert_int_equal(cq_gguf_get_arr_str(g, key, j, &s, &len), 0);
                            assert_true(len < n);
                        }
                    }
                }
                cq_gguf_close(&g);
            } else {
                cq_st_file *f = NULL;
                rc = cq_st_open(&f, path);
                for (size_t i = 0; !rc && i < cq_st_count(f); i++) {
                    const cq_st_tensor *t = cq_st_tensor_at(f, i);
                    volatile uint8_t sink = 0;
                    for (size_t b = 0; b < t->nbytes; b++) sink ^= ((const uint8_t *)t->data)[b];
                    (void)sink;
                }
                cq_st_close(&f);
            }
            if (rc) bad++;
            else ok++;
        }
    }
    /* both outcomes must occur: the loop really exercised the validation */
    assert_true(bad > 0);
    assert_true(ok > 0);
    free(raw);
}

static void test_st_mutated(void **state)
{
    mutate_loop(FIX("golden.safetensors"), 0, 800);
}

static void test_st_sharded(void **state)
{
    cq_st_set *s = NULL;
    assert_int_equal(cq_st_set_open(&s, FIX("sharded")), 0);
    assert_int_equal(cq_st_set_count(s), 3);
    assert_int_equal(cq_st_set_shard_count(s), 2);
    const cq_st_tensor *t = NULL;
    assert_int_equal(cq_st_set_get(s, "model.embed_tokens.weight", CQ_F32, &t), 0);
    assert_int_equal(t->shape[0], 4);
    for (int i = 0; i < 8; i++) assert_true(f32_at(t->data, i) == i + 1);
    assert_int_equal(cq_st_set_get(s, "model.layers.0.mlp.up_proj.weight", CQ_F16, &t), 0);
    assert_true(cq_f16_to_f32(u16_at(t->data, 3)) == -4.0f);
    assert_int_equal(cq_st_set_get(s, "lm_head.weight", CQ_BF16, &t), 0);
    assert_true(cq_bf16_to_f32(u16_at(t->data, 5)) == -3.0f);
    assert_ptr_equal(t, cq_st_find(cq_st_set_shard(s, 1), "lm_head.weight"));
    assert_null(cq_st_set_find(s, "nope"));
    clear_err();
    expect_err(cq_st_set_get(s, "nope", CQ_F32, &t), CQ_ENOENT, "nope", NULL);
    cq_st_set_close(&s);
    assert_null(s);

    /* the index file itself, and a single file */
    assert_int_equal(cq_st_set_open(&s, FIX("sharded/model.safetensors.index.json")), 0);
    assert_int_equal(cq_st_set_count(s), 3);
    cq_st_set_close(&s);
    assert_int_equal(cq_st_set_open(&s, FIX("golden.safetensors")), 0);
    assert_int_equal(cq_st_set_count(s), 12);
    assert_non_null(cq_st_set_find(s, "c.bf16"));
    assert_string_equal(cq_st_set_tensor_at(s, 0)->name, "a.f32");
    cq_st_set_close(&s);

    /* a directory with only model.safetensors */
    char dir[512], path[600];
    tmp_path(dir, sizeof dir, "single_dir");
    assert_int_equal(cq_mkdir_p(dir), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cq_st_writer *w;
    float v[2] = {1, 2};
    int64_t sh[1] = {2};
    assert_int_equal(cq_st_writer_create(&w), 0);
    assert_int_equal(cq_st_writer_add(w, "x", CQ_F32, 1, sh, v), 0);
    assert_int_equal(cq_st_writer_write(w, path), 0);
    cq_st_writer_destroy(&w);
    assert_int_equal(cq_st_set_open(&s, dir), 0);
    assert_int_equal(cq_st_set_count(s), 1);
    cq_st_set_close(&s);
}

static void copy_file(const char *src, const char *dst)
{
    size_t n;
    uint8_t *raw = read_all(src, &n);
    write_bytes(dst, raw, n);
    free(raw);
}

static int open_index(const char *dir, const char *index_text, cq_st_set **out)
{
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_bytes(path, index_text, strlen(index_text));
    clear_err();
    cq_st_set *s = NULL;
    int rc = cq_st_set_open(&s, dir);
    assert_true(rc == 0 || s == NULL);
    if (out) *out = s;
    else cq_st_set_close(&s);
    return rc;
}

static void test_st_sharded_bad(void **state)
{
    char dir[512], p[700];
    tmp_path(dir, sizeof dir, "shards");
    assert_int_equal(cq_mkdir_p(dir), 0);
    snprintf(p, sizeof p, "%s/a.safetensors", dir);
    copy_file(FIX("sharded/model-00001-of-00002.safetensors"), p);
    snprintf(p, sizeof p, "%s/b.safetensors", dir);
    copy_file(FIX("sharded/model-00002-of-00002.safetensors"), p);
    snprintf(p, sizeof p, "%s/dup.safetensors", dir);
    copy_file(FIX("sharded/model-00002-of-00002.safetensors"), p);

    cq_st_set *s = NULL;
    assert_int_equal(open_index(dir, "{\"weight_map\":{\"model.embed_tokens.weight\":\"a.safetensors\","
                                     "\"lm_head.weight\":\"b.safetensors\"}}", &s), 0);
    /* tensors in a shard but not in the map are still found */
    assert_non_null(cq_st_set_find(s, "model.layers.0.mlp.up_proj.weight"));
    cq_st_set_close(&s);

    expect_err(open_index(dir, "{\"weight_map\":{\"x\":\"../a.safetensors\"}}", NULL), CQ_EBADMSG,
               "model.safetensors.index.json", "../a.safetensors");
    expect_err(open_index(dir, "{\"weight_map\":{\"x\":\"/etc/passwd\"}}", NULL), CQ_EBADMSG,
               "/etc/passwd", "'x'");
    expect_err(open_index(dir, "{\"weight_map\":{\"x\":\"sub/a.safetensors\"}}", NULL), CQ_EBADMSG,
               "sub/a.safetensors", NULL);
    expect_err(open_index(dir, "{\"weight_map\":{\"x\":\"..\"}}", NULL), CQ_EBADMSG, "'..'", NULL);
    expect_err(open_index(dir, "{\"weight_map\":{\"x\":\"\"}}", NULL), CQ_EBADMSG, "'x'", NULL);
    expect_err(open_index(dir, "{\"weight_map\":{\"x\":\"missing.safetensors\"}}", NULL), CQ_ENOENT,
               "missing.safetensors", "model.safetensors.index.json");
    expect_err(open_index(dir, "{\"weight_map\":{\"lm_head.weight\":\"a.safetensors\"}}", NULL),
               CQ_EBADMSG, "'lm_head.weight'", "a.safetensors");
    expect_err(open_index(dir, "{\"weight_map\":{\"lm_head.weight\":\"b.safetensors\","
                               "\"model.layers.0.mlp.up_proj.weight\":\"dup.safetensors\"}}", NULL),
               CQ_EBADMSG, "more than one shard", NULL);
    expect_err(open_index(dir, "{\"weight_map\":{\"x\":3}}", NULL), CQ_EBADMSG, "'x'", NULL);
    expect_err(open_index(dir, "{\"metadata\":{}}", NULL), CQ_EBADMSG, "weight_map", NULL);
    expect_err(open_index(dir, "{\"weight_map\":{}}", NULL), CQ_EBADMSG, "empty", NULL);
    expect_err(open_index(dir, "{\"weight_map\":", NULL), CQ_EBADMSG, "JSON", NULL);
    /* a corrupt shard fails the set */
    snprintf(p, sizeof p, "%s/b.safetensors", dir);
    write_bytes(p, "\x02\0\0\0\0\0\0\0[]", 10);
    expect_err(open_index(dir, "{\"weight_map\":{\"lm_head.weight\":\"b.safetensors\"}}", NULL),
               CQ_EBADMSG, "b.safetensors", NULL);

    char empty[512];
    tmp_path(empty, sizeof empty, "empty_dir");
    assert_int_equal(cq_mkdir_p(empty), 0);
    clear_err();
    expect_err(cq_st_set_open(&s, empty), CQ_ENOENT, "empty_dir", NULL);
    assert_null(s);
}

/* Full disk: a tmpfs of 64 KiB in a private mount namespace (needs root or
 * unprivileged user namespaces; skipped otherwise). */
static int write_id_map(const char *file, const char *text)
{
    int fd = open(file, O_WRONLY);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int enter_full_fs(const char *dir)
{
    if (unshare(CLONE_NEWNS) != 0) {
        uid_t uid = getuid();
        gid_t gid = getgid();
        char m[64];
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return -1;
        snprintf(m, sizeof m, "0 %u 1", (unsigned)uid);
        if (write_id_map("/proc/self/uid_map", m)) return -1;
        write_id_map("/proc/self/setgroups", "deny");
        snprintf(m, sizeof m, "0 %u 1", (unsigned)gid);
        if (write_id_map("/proc/self/gid_map", m)) return -1;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    if (mount("tmpfs", dir, "tmpfs", 0, "size=64k") != 0) return -1;
    return 0;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static int full_disk_child(const char *dir)
{
    if (enter_full_fs(dir) != 0) return 77;
    char st_path[600], gg_path[600];
    snprintf(st_path, sizeof st_path, "%s/m.safetensors", dir);
    snprintf(gg_path, sizeof gg_path, "%s/m.gguf", dir);
    float small[4] = {1, 2, 3, 4};
    int64_t s4[1] = {4}, sbig[1] = {64 * 1024};
    float *big = calloc(64 * 1024, sizeof(float));
    if (!big) return 10;

    cq_st_writer *w;
    if (cq_st_writer_create(&w) || cq_st_writer_add(w, "t", CQ_F32, 1, s4, small) ||
        cq_st_writer_write(w, st_path))
        return 1;
    cq_st_writer_destroy(&w);
    size_t n0;
    char *old = NULL;
    if (cq_read_file(st_path, &old, &n0, 1 << 20)) return 2;
    if (cq_st_writer_create(&w) || cq_st_writer_add(w, "t", CQ_F32, 1, sbig, big)) return 3;
    clear_err();
    int rc = cq_st_writer_write(w, st_path);
    cq_st_writer_destroy(&w);
    if (rc != CQ_ENOSPC) return 4;
    if (!strstr(g_last_err, st_path)) return 5;
    char *now = NULL;
    size_t n1;
    if (cq_read_file(st_path, &now, &n1, 1 << 20) || n1 != n0 || memcmp(old, now, n0)) return 6;
    if (count_entries(dir) != 1) return 7;   /* no temp file left behind */
    free(old);
    free(now);

    cq_gguf_writer *gw;
    if (cq_gguf_writer_create(&gw, 0) ||
        cq_gguf_writer_add_tensor(gw, "t", CQ_GGML_F32, 1, sbig, big))
        return 8;
    clear_err();
    rc = cq_gguf_writer_write(gw, gg_path);
    cq_gguf_writer_destroy(&gw);
    if (rc != CQ_ENOSPC || !strstr(g_last_err, gg_path)) return 9;
    if (count_entries(dir) != 1) return 11;
    free(big);
    return 0;
}

static void test_full_disk(void **state)
{
    char dir[512];
    tmp_path(dir, sizeof dir, "full");
    assert_int_equal(cq_mkdir_p(dir), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(full_disk_child(dir));
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) {
        fprintf(stderr, "full-disk test skipped: cannot mount a tmpfs here\n");
        skip();
    }
    if (WEXITSTATUS(st)) fprintf(stderr, "full-disk child failed at step %d\n", WEXITSTATUS(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ============================================================ GGUF */
static void test_gguf_golden_v3(void **state)
{
    cq_gguf *g = NULL;
    assert_int_equal(cq_gguf_open(&g, FIX("golden_v3.gguf")), 0);
    assert_int_equal(cq_gguf_version(g), 3);
    assert_int_equal(cq_gguf_alignment(g), 64);
    assert_int_equal(cq_gguf_data_offset(g) % 64, 0);
    assert_int_equal(cq_gguf_kv_count(g), 35);
    assert_string_equal(cq_gguf_kv_key(g, 0), "general.architecture");
    assert_int_equal(cq_gguf_kv_type(g, 0), CQ_GGUF_TYPE_STRING);

    const char *s;
    size_t len;
    assert_int_equal(cq_gguf_get_str(g, "general.architecture", &s, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(s, "llama", 5);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f;
    double d;
    int b;
    assert_int_equal(cq_gguf_get_u32(g, "llama.embedding_length", &u32), 0);
    assert_int_equal(u32, 8);
    assert_int_equal(cq_gguf_get_u32(g, "llama.attention.head_count_kv", &u32), 0);
    assert_int_equal(u32, 1);
    assert_int_equal(cq_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f), 0);
    assert_true(f == 1e-5f);
    assert_int_equal(cq_gguf_get_f32(g, "llama.rope.freq_base", &f), 0);
    assert_true(f == 10000.0f);
    assert_int_equal(cq_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u32), 0);
    assert_int_equal(u32, 2);

    /* every scalar type, and range-checked conversions */
    assert_int_equal(cq_gguf_get_u32(g, "test.u8", &u32), 0);
    assert_int_equal(u32, 200);
    assert_int_equal(cq_gguf_get_i32(g, "test.i8", &i32), 0);
    assert_int_equal(i32, -100);
    assert_int_equal(cq_gguf_get_u32(g, "test.u16", &u32), 0);
    assert_int_equal(u32, 60000);
    assert_int_equal(cq_gguf_get_i32(g, "test.i16", &i32), 0);
    assert_int_equal(i32, -30000);
    assert_int_equal(cq_gguf_get_u32(g, "test.u32", &u32), 0);
    assert_true(u32 == 4000000000u);
    assert_int_equal(cq_gguf_get_i32(g, "test.i32", &i32), 0);
    assert_int_equal(i32, -2000000000);
    assert_int_equal(cq_gguf_get_f32(g, "test.f32", &f), 0);
    assert_true(f == 0.5f);
    assert_int_equal(cq_gguf_get_bool(g, "test.bool", &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(cq_gguf_get_str(g, "test.str", &s, &len), 0);
    assert_int_equal(len, 6);
    assert_memory_equal(s, "h\xc3\xa9llo", 6);
    assert_int_equal(cq_gguf_get_u64(g, "test.u64", &u64), 0);
    assert_true(u64 == ((uint64_t)1 << 63) + 5);
    assert_int_equal(cq_gguf_get_i64(g, "test.i64", &i64), 0);
    assert_true(i64 == -((int64_t)1 << 62));
    assert_int_equal(cq_gguf_get_f64(g, "test.f64", &d), 0);
    assert_true(d == -1.25e-300);
    assert_int_equal(cq_gguf_get_i64(g, "test.i8", &i64), 0);
    assert_true(i64 == -100);

    clear_err();
    expect_err(cq_gguf_get_i32(g, "test.u32", &i32), CQ_EINVAL, "test.u32", "i32");
    expect_err(cq_gguf_get_u32(g, "test.i8", &u32), CQ_EINVAL, "test.i8", NULL);
    expect_err(cq_gguf_get_u64(g, "test.i64", &u64), CQ_EINVAL, "test.i64", NULL);
    expect_err(cq_gguf_get_i64(g, "test.u64", &i64), CQ_EINVAL, "test.u64", NULL);
    expect_err(cq_gguf_get_f32(g, "test.str", &f), CQ_EINVAL, "test.str", "STRING");
    expect_err(cq_gguf_get_str(g, "test.u8", &s, &len), CQ_EINVAL, "UINT8", NULL);
    expect_err(cq_gguf_get_bool(g, "test.u8", &b), CQ_EINVAL, "test.u8", NULL);
    expect_err(cq_gguf_get_u32(g, "tokenizer.ggml.tokens", &u32), CQ_EINVAL, "ARRAY", NULL);
    clear_err();
    assert_int_equal(cq_gguf_get_u32(g, "no.such.key", &u32), CQ_ENOENT);
    assert_int_equal(g_nerr, 0);   /* probing an optional key does not log */
    assert_int_equal(cq_gguf_find_key(g, "no.such.key"), -1);
    assert_int_equal(cq_gguf_find_key(g, "test.u8"), 17);

    /* arrays */
    cq_gguf_type et;
    uint64_t cnt;
    assert_int_equal(cq_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &cnt), 0);
    assert_int_equal(et, CQ_GGUF_TYPE_STRING);
    assert_int_equal(cnt, 5);
    const char *toks[5] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81hello", ""};
    for (uint64_t i = 0; i < 5; i++) {
        assert_int_equal(cq_gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &s, &len), 0);
        assert_int_equal(len, strlen(toks[i]));
        assert_memory_equal(s, toks[i], len);
    }
    expect_err(cq_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 5, &s, &len), CQ_EINVAL,
               "out of range", NULL);
    expect_err(cq_gguf_get_arr_f32(g, "tokenizer.ggml.tokens", 0, &f), CQ_EINVAL, "STRING", NULL);
    float sc[5];
    assert_int_equal(cq_gguf_copy_arr_f32(g, "tokenizer.ggml.scores", sc, 5), 0);
    assert_true(sc[1] == -1.5f && sc[2] == 2.25f && sc[3] == -1000.0f && sc[4] == 0.125f);
    expect_err(cq_gguf_copy_arr_f32(g, "tokenizer.ggml.scores", sc, 6), CQ_EINVAL, "6", NULL);
    int32_t tt[5];
    assert_int_equal(cq_gguf_copy_arr_i32(g, "tokenizer.ggml.token_type", tt, 5), 0);
    assert_true(tt[0] == 2 && tt[1] == 3 && tt[3] == 1 && tt[4] == 1);
    assert_int_equal(cq_gguf_get_arr_i32(g, "test.arr_u8", 2, &i32), 0);
    assert_int_equal(i32, 255);
    assert_int_equal(cq_gguf_get_arr_i32(g, "test.arr_i16", 0, &i32), 0);
    assert_int_equal(i32, -7);
    assert_int_equal(cq_gguf_get_arr_i32(g, "test.arr_i64", 1, &i32), 0);
    assert_int_equal(i32, 5);
    expect_err(cq_gguf_get_arr_i32(g, "test.arr_i64", 0, &i32), CQ_EINVAL, "test.arr_i64", NULL);
    assert_int_equal(cq_gguf_get_arr_f32(g, "test.arr_f64", 1, &f), 0);
    assert_true(f == -8.0f);
    assert_int_equal(cq_gguf_get_arr(g, "test.arr_bool", &et, &cnt), 0);
    assert_int_equal(et, CQ_GGUF_TYPE_BOOL);
    assert_int_equal(cnt, 3);
    assert_int_equal(cq_gguf_get_arr(g, "test.arr_empty", &et, &cnt), 0);
    assert_int_equal(et, CQ_GGUF_TYPE_UINT32);
    assert_int_equal(cnt, 0);
    expect_err(cq_gguf_get_arr(g, "test.u8", &et, &cnt), CQ_EINVAL, "array", NULL);

    /* tensors */
    assert_int_equal(cq_gguf_tensor_count(g), 7);
    const cq_gguf_tensor *t;
    cq_dtype dt;
    assert_int_equal(cq_gguf_get_tensor(g, "token_embd.weight", &t, &dt), 0);
    assert_int_equal(dt, CQ_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 5);   /* PyTorch [vocab, n_embd] */
    assert_int_equal(t->shape[1], 8);
    assert_int_equal(t->ne[0], 8);      /* ggml: fastest first */
    assert_int_equal(t->ne[1], 5);
    assert_int_equal(t->nbytes, 160);
    assert_int_equal((cq_gguf_data_offset(g) + t->offset) % 64, 0);
    for (int i = 0; i < 40; i++) assert_true(f32_at(t->data, i) == i * 0.25f);

    /* permuted Q and K: unpermuting gives back the HF matrices */
    float q[64], qh[64], k[32], kh[32];
    assert_int_equal(cq_gguf_get_tensor(g, "blk.0.attn_q.weight", &t, &dt), 0);
    assert_int_equal(t->shape[0], 8);
    memcpy(q, t->data, sizeof q);
    assert_true(q[8] != 8.0f);   /* really permuted in the file */
    assert_int_equal(cq_gguf_unpermute_qk(qh, q, 2, 8, 8), 0);
    for (int i = 0; i < 64; i++) assert_true(qh[i] == (float)i);
    assert_int_equal(cq_gguf_get_tensor(g, "blk.0.attn_k.weight", &t, &dt), 0);
    assert_int_equal(t->shape[0], 4);
    memcpy(k, t->data, sizeof k);
    assert_int_equal(cq_gguf_unpermute_qk(kh, k, 1, 4, 8), 0);
    for (int i = 0; i < 32; i++) assert_true(kh[i] == -(float)i);

    assert_int_equal(cq_gguf_get_tensor(g, "blk.0.attn_norm.weight", &t, &dt), 0);
    assert_int_equal(dt, CQ_F16);
    assert_int_equal(t->ndim, 1);
    assert_true(cq_f16_to_f32(u16_at(t->data, 5)) == -4.0f);
    assert_int_equal(cq_gguf_get_tensor(g, "output.weight", &t, &dt), 0);
    assert_int_equal(dt, CQ_BF16);
    assert_true(cq_bf16_to_f32(u16_at(t->data, 7)) == -4.0f);
    assert_int_equal(cq_gguf_get_tensor(g, "test.3d", &t, &dt), 0);
    assert_int_equal(t->ndim, 3);
    assert_true(t->shape[0] == 2 && t->shape[1] == 3 && t->shape[2] == 4);
    assert_true(t->ne[0] == 4 && t->ne[1] == 3 && t->ne[2] == 2 && t->ne[3] == 1);
    assert_true(f32_at(t->data, 23) == 23.0f);

    /* quantized: listed, refused on access */
    t = cq_gguf_find_tensor(g, "blk.0.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->ggml_type, CQ_GGML_Q4_K);
    assert_int_equal(t->nbytes, 144);
    assert_int_equal(((const uint8_t *)t->data)[1], (1 * 37 + 11) & 0xff);
    clear_err();
    expect_err(cq_gguf_get_tensor(g, "blk.0.ffn_down.weight", &t, &dt), CQ_ENOTSUP,
               "tensor blk.0.ffn_down.weight has ggml type Q4_K (12), only F32/F16/BF16", NULL);
    assert_null(t);
    expect_err(cq_gguf_get_tensor(g, "nope", &t, &dt), CQ_ENOENT, "nope", "golden_v3.gguf");
    assert_null(cq_gguf_find_tensor(g, "nope"));
    cq_gguf_close(&g);
    assert_null(g);
}

static void test_gguf_golden_v2(void **state)
{
    cq_gguf *g = NULL;
    assert_int_equal(cq_gguf_open(&g, FIX("golden_v2.gguf")), 0);
    assert_int_equal(cq_gguf_version(g), 2);
    assert_int_equal(cq_gguf_alignment(g), 32);
    const char *s;
    size_t len;
    assert_int_equal(cq_gguf_get_arr_str(g, "tokenizer.ggml.tokens", 1, &s, &len), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(s, "bc", 2);
    const cq_gguf_tensor *t;
    cq_dtype dt;
    assert_int_equal(cq_gguf_get_tensor(g, "w", &t, &dt), 0);
    assert_true(t->shape[0] == 3 && t->shape[1] == 2);
    for (int i = 0; i < 6; i++) assert_true(f32_at(t->data, i) == i + 1);
    assert_int_equal(cq_gguf_get_tensor(g, "v", &t, &dt), 0);
    assert_int_equal(t->offset, 32);
    assert_true(cq_f16_to_f32(u16_at(t->data, 2)) == 2.0f);
    cq_gguf_close(&g);
}

static void test_gguf_roundtrip(void **state)
{
    char path[512];
    tmp_path(path, sizeof path, "rt.gguf");
    for (int pass = 0; pass < 2; pass++) {
        uint32_t align = pass ? 128 : 0;
        cq_gguf_writer *w = NULL;
        assert_int_equal(cq_gguf_writer_create(&w, align), 0);
        uint8_t v_u8 = 250;
        int8_t v_i8 = -5, v_b = 1;
        uint16_t v_u16 = 65000;
        int16_t v_i16 = -32000;
        uint64_t v_u64 = UINT64_MAX;
        int64_t v_i64 = INT64_MIN;
        double v_f64 = 1.0 / 3.0;
        const char *v_s = "quoted \"x\" \xe2\x96\x81";
        assert_int_equal(cq_gguf_writer_add_kv(w, "k.u8", CQ_GGUF_TYPE_UINT8, &v_u8), 0);
        assert_int_equal(cq_gguf_writer_add_kv(w, "k.i8", CQ_GGUF_TYPE_INT8, &v_i8), 0);
        assert_int_equal(cq_gguf_writer_add_kv(w, "k.u16", CQ_GGUF_TYPE_UINT16, &v_u16), 0);
        assert_int_equal(cq_gguf_writer_add_kv(w, "k.i16", CQ_GGUF_TYPE_INT16, &v_i16), 0);
        assert_int_equal(cq_gguf_writer_add_u32(w, "k.u32", 0xfffffffeu), 0);
        assert_int_equal(cq_gguf_writer_add_i32(w, "k.i32", INT32_MIN), 0);
        assert_int_equal(cq_gguf_writer_add_f32(w, "k.f32", -2.5f), 0);
        assert_int_equal(cq_gguf_writer_add_kv(w, "k.bool", CQ_GGUF_TYPE_BOOL, &v_b), 0);
        assert_int_equal(cq_gguf_writer_add_str(w, "k.str", v_s), 0);
        assert_int_equal(cq_gguf_writer_add_kv(w, "k.u64", CQ_GGUF_TYPE_UINT64, &v_u64), 0);
        assert_int_equal(cq_gguf_writer_add_kv(w, "k.i64", CQ_GGUF_TYPE_INT64, &v_i64), 0);
        assert_int_equal(cq_gguf_writer_add_kv(w, "k.f64", CQ_GGUF_TYPE_FLOAT64, &v_f64), 0);
        const char *strs[4] = {"a", "", "\xe2\x96\x81hello world", "z"};
        float fa[3] = {0.5f, -1, 3e38f};
        int32_t ia[3] = {-1, 0, INT32_MAX};
        uint16_t ua[2] = {1, 65535};
        int8_t ba[2] = {0, 1};
        double da[2] = {1e-300, -2};
        assert_int_equal(cq_gguf_writer_add_arr(w, "a.str", CQ_GGUF_TYPE_STRING, strs, 4), 0);
        assert_int_equal(cq_gguf_writer_add_arr(w, "a.f32", CQ_GGUF_TYPE_FLOAT32, fa, 3), 0);
        assert_int_equal(cq_gguf_writer_add_arr(w, "a.i32", CQ_GGUF_TYPE_INT32, ia, 3), 0);
        assert_int_equal(cq_gguf_writer_add_arr(w, "a.u16", CQ_GGUF_TYPE_UINT16, ua, 2), 0);
        assert_int_equal(cq_gguf_writer_add_arr(w, "a.bool", CQ_GGUF_TYPE_BOOL, ba, 2), 0);
        assert_int_equal(cq_gguf_writer_add_arr(w, "a.f64", CQ_GGUF_TYPE_FLOAT64, da, 2), 0);
        assert_int_equal(cq_gguf_writer_add_arr(w, "a.empty", CQ_GGUF_TYPE_STRING, NULL, 0), 0);

        float w32[15];
        for (int i = 0; i < 15; i++) w32[i] = (float)i - 7.5f;
        uint16_t w16[5] = {cq_f32_to_f16(1), cq_f32_to_f16(-2), 0, 0x7c00, 0x3555};
        uint16_t wbf[6];
        for (int i = 0; i < 6; i++) wbf[i] = cq_f32_to_bf16((float)i * 1.5f);
        int64_t s35[2] = {3, 5}, s5[1] = {5}, s123[4] = {1, 2, 3, 1};
        assert_int_equal(cq_gguf_writer_add_tensor(w, "t.f32", CQ_GGML_F32, 2, s35, w32), 0);
        assert_int_equal(cq_gguf_writer_add_tensor(w, "t.f16", CQ_GGML_F16, 1, s5, w16), 0);
        assert_int_equal(cq_gguf_writer_add_tensor(w, "t.bf16", CQ_GGML_BF16, 4, s123, wbf), 0);

        clear_err();
        assert_int_equal(cq_gguf_writer_add_u32(w, "k.u8", 1), CQ_EINVAL);
        assert_int_equal(cq_gguf_writer_add_tensor(w, "t.f32", CQ_GGML_F32, 2, s35, w32),
                         CQ_EINVAL);
        assert_int_equal(cq_gguf_writer_add_tensor(w, "q", CQ_GGML_Q4_K, 2, s35, w32), CQ_ENOTSUP);
        assert_int_equal(cq_gguf_writer_add_tensor(w, "q", CQ_GGML_F32, 5, s35, w32), CQ_EINVAL);

        assert_int_equal(cq_gguf_writer_write(w, path), 0);
        cq_gguf_writer_destroy(&w);
        assert_null(w);

        cq_gguf *g = NULL;
        assert_int_equal(cq_gguf_open(&g, path), 0);
        assert_int_equal(cq_gguf_version(g), 3);
        assert_int_equal(cq_gguf_alignment(g), pass ? 128 : 32);
        assert_int_equal(cq_gguf_kv_count(g), 19 + (pass ? 1 : 0));
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
        float f;
        double d;
        int b;
        const char *s;
        size_t len;
        assert_int_equal(cq_gguf_get_u32(g, "k.u8", &u32), 0);
        assert_int_equal(u32, 250);
        assert_int_equal(cq_gguf_kv_type(g, (size_t)cq_gguf_find_key(g, "k.u8")),
                         CQ_GGUF_TYPE_UINT8);
        assert_int_equal(cq_gguf_get_i32(g, "k.i8", &i32), 0);
        assert_int_equal(i32, -5);
        assert_int_equal(cq_gguf_get_u32(g, "k.u16", &u32), 0);
        assert_int_equal(u32, 65000);
        assert_int_equal(cq_gguf_get_i32(g, "k.i16", &i32), 0);
        assert_int_equal(i32, -32000);
        assert_int_equal(cq_gguf_get_u32(g, "k.u32", &u32), 0);
        assert_true(u32 == 0xfffffffeu);
        assert_int_equal(cq_gguf_get_i32(g, "k.i32", &i32), 0);
        assert_true(i32 == INT32_MIN);
        assert_int_equal(cq_gguf_get_f32(g, "k.f32", &f), 0);
        assert_true(f == -2.5f);
        assert_int_equal(cq_gguf_get_bool(g, "k.bool", &b), 0);
        assert_int_equal(b, 1);
        assert_int_equal(cq_gguf_get_str(g, "k.str", &s, &len), 0);
        assert_int_equal(len, strlen(v_s));
        assert_memory_equal(s, v_s, len);
        assert_int_equal(cq_gguf_get_u64(g, "k.u64", &u64), 0);
        assert_true(u64 == UINT64_MAX);
        assert_int_equal(cq_gguf_get_i64(g, "k.i64", &i64), 0);
        assert_true(i64 == INT64_MIN);
        assert_int_equal(cq_gguf_get_f64(g, "k.f64", &d), 0);
        assert_true(d == 1.0 / 3.0);
        for (int i = 0; i < 4; i++) {
            assert_int_equal(cq_gguf_get_arr_str(g, "a.str", (uint64_t)i, &s, &len), 0);
            assert_int_equal(len, strlen(strs[i]));
            assert_memory_equal(s, strs[i], len);
        }
        float fb[3];
        int32_t ib[3];
        assert_int_equal(cq_gguf_copy_arr_f32(g, "a.f32", fb, 3), 0);
        assert_memory_equal(fb, fa, sizeof fa);
        assert_int_equal(cq_gguf_copy_arr_i32(g, "a.i32", ib, 3), 0);
        assert_memory_equal(ib, ia, sizeof ia);
        assert_int_equal(cq_gguf_get_arr_i32(g, "a.u16", 1, &i32), 0);
        assert_int_equal(i32, 65535);
        cq_gguf_type et;
        uint64_t cnt;
        assert_int_equal(cq_gguf_get_arr(g, "a.bool", &et, &cnt), 0);
        assert_true(et == CQ_GGUF_TYPE_BOOL && cnt == 2);
        assert_int_equal(cq_gguf_get_arr_f32(g, "a.f64", 0, &f), 0);
        assert_true(f == (float)da[0]);
        assert_int_equal(cq_gguf_get_arr(g, "a.empty", &et, &cnt), 0);
        assert_true(et == CQ_GGUF_TYPE_STRING && cnt == 0);

        const cq_gguf_tensor *t;
        cq_dtype dt;
        assert_int_equal(cq_gguf_tensor_count(g), 3);
        assert_string_equal(cq_gguf_tensor_at(g, 0)->name, "t.f32");
        assert_int_equal(cq_gguf_get_tensor(g, "t.f32", &t, &dt), 0);
        assert_true(dt == CQ_F32 && t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == 5);
        assert_true(t->ne[0] == 5 && t->ne[1] == 3);
        assert_memory_equal(t->data, w32, sizeof w32);
        assert_int_equal(cq_gguf_get_tensor(g, "t.f16", &t, &dt), 0);
        assert_true(dt == CQ_F16 && t->ndim == 1);
        assert_memory_equal(t->data, w16, sizeof w16);
        assert_int_equal(cq_gguf_get_tensor(g, "t.bf16", &t, &dt), 0);
        assert_true(dt == CQ_BF16 && t->ndim == 4 && t->shape[2] == 3 && t->ne[0] == 1);
        assert_memory_equal(t->data, wbf, sizeof wbf);
        for (size_t i = 0; i < 3; i++)
            assert_int_equal((cq_gguf_data_offset(g) + cq_gguf_tensor_at(g, i)->offset) %
                                 cq_gguf_alignment(g), 0);
        cq_gguf_close(&g);
    }
}

static void test_gguf_truncated(void **state)
{
    truncation_loop(FIX("golden_v3.gguf"), 1);
    truncation_loop(FIX("golden_v2.gguf"), 1);
}

static void test_gguf_mutated(void **state)
{
    mutate_loop(FIX("golden_v3.gguf"), 1, 1600);
}

/* crafted GGUF byte strings */
typedef struct {
    uint8_t b[1024];
    size_t n;
} gbuf;

static void gb_le(gbuf *g, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) g->b[g->n++] = (uint8_t)(v >> (8 * i));
}

static void gb_str(gbuf *g, const char *s)
{
    gb_le(g, strlen(s), 8);
    memcpy(g->b + g->n, s, strlen(s));
    g->n += strlen(s);
}

static void gb_head(gbuf *g, uint32_t version, uint64_t nt, uint64_t nkv)
{
    g->n = 0;
    memcpy(g->b, "GGUF", 4);
    g->n = 4;
    gb_le(g, version, 4);
    gb_le(g, nt, 8);
    gb_le(g, nkv, 8);
}

static void gb_tinfo(gbuf *g, const char *name, int nd, const uint64_t *ne, uint32_t type,
                     uint64_t off)
{
    gb_str(g, name);
    gb_le(g, (uint64_t)nd, 4);
    for (int i = 0; i < nd; i++) gb_le(g, ne[i], 8);
    gb_le(g, type, 4);
    gb_le(g, off, 8);
}

/* pad to 32 and add ndata zero bytes */
static void gb_data(gbuf *g, size_t ndata)
{
    while (g->n % 32) g->b[g->n++] = 0;
    memset(g->b + g->n, 0, ndata);
    g->n += ndata;
}

static int gb_open(const gbuf *g)
{
    char path[512];
    tmp_path(path, sizeof path, "crafted.gguf");
    write_bytes(path, g->b, g->n);
    clear_err();
    cq_gguf *h = NULL;
    int rc = cq_gguf_open(&h, path);
    assert_true(rc == 0 || h == NULL);
    cq_gguf_close(&h);
    return rc;
}

static void test_gguf_corrupt(void **state)
{
    gbuf g;
    uint64_t ne2[2] = {4, 2};

    /* sanity: valid crafted file */
    gb_head(&g, 3, 1, 1);
    gb_str(&g, "k");
    gb_le(&g, CQ_GGUF_TYPE_UINT32, 4);
    gb_le(&g, 7, 4);
    gb_tinfo(&g, "t", 2, ne2, CQ_GGML_F32, 0);
    gb_data(&g, 32);
    assert_int_equal(gb_open(&g), 0);
    /* one byte short of the tensor's end */
    g.n--;
    expect_err(gb_open(&g), CQ_EBADMSG, "tensor 't'", "beyond the end");
    /* two tensors, the second's bytes inside the first's (offset 32 is
     * aligned; 'a' spans 0..64): refused */
    {
        uint64_t ne16[1] = {16};
        gb_head(&g, 3, 2, 0);
        gb_tinfo(&g, "a", 1, ne16, CQ_GGML_F32, 0);
        gb_tinfo(&g, "b", 1, ne16, CQ_GGML_F32, 32);
        gb_data(&g, 96);
        expect_err(gb_open(&g), CQ_EBADMSG, "overlap", "'a' and 'b'");
        gb_head(&g, 3, 2, 0);
        gb_tinfo(&g, "a", 1, ne16, CQ_GGML_F32, 0);
        gb_tinfo(&g, "b", 1, ne16, CQ_GGML_F32, 64);
        gb_data(&g, 128);
        assert_int_equal(gb_open(&g), 0);
    }

    gb_head(&g, 3, 0, 0);
    g.b[0] = 'X';
    expect_err(gb_open(&g), CQ_EBADMSG, "bad magic", NULL);
    gb_head(&g, 1, 0, 0);
    expect_err(gb_open(&g), CQ_ENOTSUP, "version 1", NULL);
    gb_head(&g, 4, 0, 0);
    expect_err(gb_open(&g), CQ_ENOTSUP, "version 4", NULL);
    gb_head(&g, 0x03000000u, 0, 0);
    expect_err(gb_open(&g), CQ_ENOTSUP, "big-endian", NULL);
    gb_head(&g, 3, 0, 0);
    assert_int_equal(gb_open(&g), 0);   /* empty but valid */

    /* huge counts */
    gb_head(&g, 3, 0, (uint64_t)1 << 60);
    expect_err(gb_open(&g), CQ_EBADMSG, "kv count", NULL);
    gb_head(&g, 3, (uint64_t)1 << 60, 0);
    expect_err(gb_open(&g), CQ_EBADMSG, "tensor count", NULL);
    gb_head(&g, 3, 0, UINT64_MAX);
    expect_err(gb_open(&g), CQ_EBADMSG, "kv count", NULL);

    /* string lengths of 2^63 and 2^64-1: key and value */
    gb_head(&g, 3, 0, 1);
    gb_le(&g, (uint64_t)1 << 63, 8);
    gb_data(&g, 16);
    expect_err(gb_open(&g), CQ_EBADMSG, "string length 9223372036854775808", "key");
    gb_head(&g, 3, 0, 1);
    gb_str(&g, "k");
    gb_le(&g, CQ_GGUF_TYPE_STRING, 4);
    gb_le(&g, UINT64_MAX, 8);
    gb_data(&g, 16);
    expect_err(gb_open(&g), CQ_EBADMSG, "string length", "'k'");
    /* arrays: count 2^62 of u32, 2^61 strings, 2^63 of f64, a string element of 2^63 */
    uint64_t counts[3] = {(uint64_t)1 << 62, (uint64_t)1 << 61, (uint64_t)1 << 63};
    uint32_t etypes[3] = {CQ_GGUF_TYPE_UINT32, CQ_GGUF_TYPE_STRING, CQ_GGUF_TYPE_FLOAT64};
    for (int i = 0; i < 3; i++) {
        gb_head(&g, 3, 0, 1);
        gb_str(&g, "arr");
        gb_le(&g, CQ_GGUF_TYPE_ARRAY, 4);
        gb_le(&g, etypes[i], 4);
        gb_le(&g, counts[i], 8);
        gb_data(&g, 64);
        expect_err(gb_open(&g), CQ_EBADMSG, "'arr'", "array of");
    }
    gb_head(&g, 3, 0, 1);
    gb_str(&g, "arr");
    gb_le(&g, CQ_GGUF_TYPE_ARRAY, 4);
    gb_le(&g, CQ_GGUF_TYPE_STRING, 4);
    gb_le(&g, 2, 8);
    gb_str(&g, "ok");
    gb_le(&g, (uint64_t)1 << 63, 8);
    gb_data(&g, 64);
    expect_err(gb_open(&g), CQ_EBADMSG, "string length", "arr");
    /* nested array, unknown types */
    gb_head(&g, 3, 0, 1);
    gb_str(&g, "arr");
    gb_le(&g, CQ_GGUF_TYPE_ARRAY, 4);
    gb_le(&g, CQ_GGUF_TYPE_ARRAY, 4);
    gb_le(&g, 1, 8);
    gb_data(&g, 64);
    expect_err(gb_open(&g), CQ_ENOTSUP, "nested", "'arr'");
    gb_head(&g, 3, 0, 1);
    gb_str(&g, "k");
    gb_le(&g, 13, 4);
    gb_data(&g, 16);
    expect_err(gb_open(&g), CQ_EBADMSG, "unknown value type 13", "'k'");
    gb_head(&g, 3, 0, 1);
    gb_str(&g, "arr");
    gb_le(&g, CQ_GGUF_TYPE_ARRAY, 4);
    gb_le(&g, 99, 4);
    gb_le(&g, 1, 8);
    gb_data(&g, 16);
    expect_err(gb_open(&g), CQ_EBADMSG, "element type 99", NULL);
    /* duplicate key, empty key */
    gb_head(&g, 3, 0, 2);
    for (int i = 0; i < 2; i++) {
        gb_str(&g, "dup");
        gb_le(&g, CQ_GGUF_TYPE_UINT8, 4);
        gb_le(&g, 1, 1);
    }
    expect_err(gb_open(&g), CQ_EBADMSG, "duplicate key 'dup'", NULL);
    gb_head(&g, 3, 0, 1);
    gb_str(&g, "");
    gb_le(&g, CQ_GGUF_TYPE_UINT8, 4);
    gb_le(&g, 1, 1);
    expect_err(gb_open(&g), CQ_EBADMSG, "empty", NULL);
    /* alignment: not a power of two, wrong type */
    gb_head(&g, 3, 0, 1);
    gb_str(&g, "general.alignment");
    gb_le(&g, CQ_GGUF_TYPE_UINT32, 4);
    gb_le(&g, 24, 4);
    expect_err(gb_open(&g), CQ_EBADMSG, "general.alignment", NULL);
    gb_head(&g, 3, 0, 1);
    gb_str(&g, "general.alignment");
    gb_le(&g, CQ_GGUF_TYPE_UINT64, 4);
    gb_le(&g, 32, 8);
    expect_err(gb_open(&g), CQ_EBADMSG, "general.alignment", NULL);

    /* tensor infos */
    uint64_t ne5[5] = {1, 1, 1, 1, 1};
    gb_head(&g, 3, 1, 0);
    gb_tinfo(&g, "t", 5, ne5, CQ_GGML_F32, 0);
    gb_data(&g, 32);
    expect_err(gb_open(&g), CQ_EBADMSG, "'t' has 5 dimensions", NULL);
    uint64_t nebig[1] = {(uint64_t)1 << 63};
    gb_head(&g, 3, 1, 0);
    gb_tinfo(&g, "t", 1, nebig, CQ_GGML_F32, 0);
    gb_data(&g, 32);
    expect_err(gb_open(&g), CQ_EBADMSG, "'t'", "out of range");
    uint64_t neover[3] = {(uint64_t)1 << 32, (uint64_t)1 << 32, (uint64_t)1 << 32};
    gb_head(&g, 3, 1, 0);
    gb_tinfo(&g, "t", 3, neover, CQ_GGML_F32, 0);
    gb_data(&g, 32);
    expect_err(gb_open(&g), CQ_EBADMSG, "'t'", "overflows");
    uint64_t nebytes[1] = {(uint64_t)1 << 62};   /* numel fits, bytes do not */
    gb_head(&g, 3, 1, 0);
    gb_tinfo(&g, "t", 1, nebytes, CQ_GGML_F32, 0);
    gb_data(&g, 32);
    expect_err(gb_open(&g), CQ_EBADMSG, "'t'", NULL);
    gb_head(&g, 3, 1, 0);
    gb_tinfo(&g, "t", 2, ne2, 4 /* removed type */, 0);
    gb_data(&g, 32);
    expect_err(gb_open(&g), CQ_EBADMSG, "unknown ggml type 4", "'t'");
    uint64_t ne100[1] = {100};
    gb_head(&g, 3, 1, 0);
    gb_tinfo(&g, "t", 1, ne100, CQ_GGML_Q4_K, 0);
    gb_data(&g, 256);
    expect_err(gb_open(&g), CQ_EBADMSG, "block size 256", "'t'");
    gb_head(&g, 3, 1, 0);
    gb_tinfo(&g, "t", 2, ne2, CQ_GGML_F32, 1024);
    gb_data(&g, 32);
    expect_err(gb_open(&g), CQ_EBADMSG, "'t'", "beyond the end");
    gb_head(&g, 3, 1, 0);
    gb_tinfo(&g, "t", 2, ne2, CQ_GGML_F32, UINT64_MAX - 31);
    gb_data(&g, 32);
    expect_err(gb_open(&g), CQ_EBADMSG, "'t'", "beyond the end");
    gb_head(&g, 3, 1, 0);
    gb_tinfo(&g, "t", 2, ne2, CQ_GGML_F32, 8);
    gb_data(&g, 64);
    expect_err(gb_open(&g), CQ_EBADMSG, "'t'", "alignment");
    gb_head(&g, 3, 2, 0);
    gb_tinfo(&g, "t", 2, ne2, CQ_GGML_F32, 0);
    gb_tinfo(&g, "t", 2, ne2, CQ_GGML_F32, 32);
    gb_data(&g, 64);
    expect_err(gb_open(&g), CQ_EBADMSG, "duplicate tensor name 't'", NULL);
    /* tensor count larger than the infos present */
    gb_head(&g, 3, 2, 0);
    gb_tinfo(&g, "t", 2, ne2, CQ_GGML_F32, 0);
    gb_data(&g, 32);
    expect_err(gb_open(&g), CQ_EBADMSG, NULL, NULL);
}

/* ============================================================ Q/K permutation */
static void test_permute_qk(void **state)
{
    /* hand-worked: one head, head_dim 4, 2 columns. HF rows r0 r1 r2 r3 hold
     * rotate-half pairs (r0,r2), (r1,r3); GGUF interleaves them: r0 r2 r1 r3 */
    float hf[8] = {0, 1, 10, 11, 20, 21, 30, 31};
    float gg[8], back[8];
    const float want1[8] = {0, 1, 20, 21, 10, 11, 30, 31};
    assert_int_equal(cq_gguf_permute_qk(gg, hf, 1, 4, 2), 0);
    assert_memory_equal(gg, want1, sizeof gg);
    assert_int_equal(cq_gguf_unpermute_qk(back, gg, 1, 4, 2), 0);
    assert_memory_equal(back, hf, sizeof hf);

    /* two heads of head_dim 4, one column (a bias): 0 2 1 3 | 4 6 5 7 */
    float r8[8] = {0, 1, 2, 3, 4, 5, 6, 7}, p8[8];
    const float want2[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    assert_int_equal(cq_gguf_permute_qk(p8, r8, 2, 8, 1), 0);
    assert_memory_equal(p8, want2, sizeof p8);
    /* one head of head_dim 6: pairs (0,3) (1,4) (2,5) -> 0 3 1 4 2 5 */
    float r6[6] = {0, 1, 2, 3, 4, 5}, p6[6];
    const float want3[6] = {0, 3, 1, 4, 2, 5};
    assert_int_equal(cq_gguf_permute_qk(p6, r6, 1, 6, 1), 0);
    assert_memory_equal(p6, want3, sizeof p6);
    assert_int_equal(cq_gguf_unpermute_qk(r6, p6, 1, 6, 1), 0);
    for (int i = 0; i < 6; i++) assert_true(r6[i] == (float)i);

    /* identity on a larger random matrix: 3 heads, head_dim 8, 5 columns */
    enum { R = 24, C = 5 };
    float a[R * C], b[R * C], c[R * C];
    uint32_t s = 12345;
    for (int i = 0; i < R * C; i++) {
        s = s * 1664525u + 1013904223u;
        a[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
    assert_int_equal(cq_gguf_permute_qk(b, a, 3, R, C), 0);
    assert_memory_not_equal(a, b, sizeof a);
    assert_int_equal(cq_gguf_unpermute_qk(c, b, 3, R, C), 0);
    assert_memory_equal(a, c, sizeof a);
    /* unpermute then permute too */
    assert_int_equal(cq_gguf_unpermute_qk(b, a, 3, R, C), 0);
    assert_int_equal(cq_gguf_permute_qk(c, b, 3, R, C), 0);
    assert_memory_equal(a, c, sizeof a);
    /* byte version with 16-bit elements agrees with the float version */
    uint16_t h[R * C], hp[R * C];
    for (int i = 0; i < R * C; i++) h[i] = cq_f32_to_f16(a[i]);
    assert_int_equal(cq_gguf_permute_qk(b, a, 3, R, C), 0);
    assert_int_equal(cq_gguf_permute_qk_bytes(hp, h, 2, 3, R, C), 0);
    for (int i = 0; i < R * C; i++) assert_int_equal(hp[i], cq_f32_to_f16(b[i]));
    assert_int_equal(cq_gguf_unpermute_qk_bytes(h, hp, 2, 3, R, C), 0);
    for (int i = 0; i < R * C; i++) assert_int_equal(h[i], cq_f32_to_f16(a[i]));

    clear_err();
    assert_int_equal(cq_gguf_unpermute_qk(b, a, 5, R, C), CQ_EINVAL);  /* 24 % 5 */
    assert_int_equal(cq_gguf_unpermute_qk(b, a, 8, R, C), CQ_EINVAL);  /* head_dim 3 */
    assert_int_equal(cq_gguf_unpermute_qk(b, a, 0, R, C), CQ_EINVAL);
    assert_int_equal(cq_gguf_unpermute_qk(a + 1, a, 3, R, C), CQ_EINVAL); /* overlap */
}

/* ============================================================ config.json */
static void test_hfconfig_load(void **state)
{
    cq_hf_config c;
    assert_int_equal(cq_hf_config_load(&c, FIX("config_tinyllama.json")), 0);
    assert_string_equal(c.architecture, "LlamaForCausalLM");
    assert_string_equal(c.model_type, "llama");
    assert_int_equal(c.hidden_size, 2048);
    assert_int_equal(c.intermediate_size, 5632);
    assert_int_equal(c.num_hidden_layers, 22);
    assert_int_equal(c.num_attention_heads, 32);
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.head_dim, 64);
    assert_true(c.rms_norm_eps == 1e-5);
    assert_true(c.rope_theta == 10000.0);
    assert_int_equal(c.vocab_size, 32000);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_int_equal(c.bos_token_id, 1);
    assert_int_equal(c.eos_token_id, 2);
    assert_string_equal(c.torch_dtype, "bfloat16");
    assert_string_equal(c.rope_scaling_type, "");

    assert_int_equal(cq_hf_config_load(&c, FIX("config_mistral.json")), 0);
    assert_string_equal(c.architecture, "MistralForCausalLM");
    assert_string_equal(c.model_type, "mistral");
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 128);
    /* 32768 positions, sliding_window 4096: capped at the window, where
     * full causal attention is what the window computes */
    assert_int_equal(c.max_position_embeddings, 4096);

    assert_int_equal(cq_hf_config_load(&c, FIX("config_llama32.json")), 0);
    assert_int_equal(c.eos_token_id, 128001);   /* first of the list */
    assert_int_equal(c.bos_token_id, 128000);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.tie_word_embeddings, 1);
    assert_true(c.rope_theta == 500000.0);
    assert_string_equal(c.torch_dtype, "bfloat16");   /* from "dtype" */
    assert_string_equal(c.rope_scaling_type, "llama3");
    assert_int_equal(c.rope_scaling.type, CQ_ROPE_LLAMA3);
    assert_true(c.rope_scaling.factor == 32.0f && c.rope_scaling.low_freq_factor == 1.0f &&
                c.rope_scaling.high_freq_factor == 4.0f && c.rope_scaling.original_max == 8192.0f);
    assert_int_equal(c.vocab_size, 128256);

    assert_int_equal(cq_hf_config_load(&c, FIX("config_minimal.json")), 0);
    assert_string_equal(c.architecture, "LlamaForCausalLM");
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_true(c.rms_norm_eps == 1e-6);
    assert_true(c.rope_theta == 10000.0);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.eos_token_id, -1);
    assert_string_equal(c.torch_dtype, "");

    /* a directory holding config.json */
    char dir[512], p[600];
    tmp_path(dir, sizeof dir, "cfgdir");
    assert_int_equal(cq_mkdir_p(dir), 0);
    snprintf(p, sizeof p, "%s/config.json", dir);
    copy_file(FIX("config_mistral.json"), p);
    assert_int_equal(cq_hf_config_load(&c, dir), 0);
    assert_int_equal(c.num_hidden_layers, 32);
}

static int load_text(const char *text, cq_hf_config *c)
{
    char p[512];
    tmp_path(p, sizeof p, "config.json");
    write_bytes(p, text, strlen(text));
    clear_err();
    return cq_hf_config_load(c, p);
}

#define BASE_FIELDS "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,\"vocab_size\":10"

static void test_hfconfig_errors(void **state)
{
    cq_hf_config c;
    memset(&c, 0x5a, sizeof c);
    cq_hf_config before = c;
    clear_err();
    expect_err(cq_hf_config_load(&c, "/nonexistent/config.json"), CQ_ENOENT,
               "/nonexistent/config.json", NULL);
    expect_err(load_text("{\"model_type\": \"llama\",\n  \"hidden_size\": ,}", &c), CQ_EBADMSG,
               "config.json", "line 2");
    assert_memory_equal(&c, &before, sizeof c);   /* untouched on failure */
    expect_err(load_text("[1]", &c), CQ_EBADMSG, "not a JSON object", NULL);
    expect_err(load_text("", &c), CQ_EBADMSG, "malformed", NULL);
    expect_err(cq_hf_config_load(&c, FIX("config_gpt2.json")), CQ_ENOTSUP, "GPT2LMHeadModel",
               "config_gpt2.json");
    expect_err(load_text("{\"model_type\":\"gpt2\"," BASE_FIELDS ",\"num_attention_heads\":4}", &c),
               CQ_ENOTSUP, "gpt2", NULL);
    expect_err(load_text("{" BASE_FIELDS ",\"num_attention_heads\":4}", &c), CQ_EBADMSG,
               "architectures", NULL);
    expect_err(load_text("{\"architectures\":[],\"model_type\":\"llama\"," BASE_FIELDS
                         ",\"num_attention_heads\":4}", &c), CQ_EBADMSG, "architectures", NULL);
    expect_err(load_text("{\"model_type\":\"llama\",\"intermediate_size\":128,"
                         "\"num_hidden_layers\":2,\"vocab_size\":10,\"num_attention_heads\":4}", &c),
               CQ_EBADMSG, "\"hidden_size\"", "missing");
    expect_err(load_text("{\"model_type\":\"llama\"," BASE_FIELDS "}", &c), CQ_EBADMSG,
               "\"num_attention_heads\"", "missing");
    expect_err(load_text("{\"model_type\":\"llama\"," BASE_FIELDS ",\"num_attention_heads\":0}", &c),
               CQ_EBADMSG, "num_attention_heads", "positive");
    expect_err(load_text("{\"model_type\":\"llama\"," BASE_FIELDS
                         ",\"num_attention_heads\":4,\"max_position_embeddings\":-1}", &c),
               CQ_EBADMSG, "max_position_embeddings", "positive");
    expect_err(load_text("{\"model_type\":\"llama\"," BASE_FIELDS ",\"num_attention_heads\":5}", &c),
               CQ_EBADMSG, "num_attention_heads", "hidden_size");
    expect_err(load_text("{\"model_type\":\"llama\"," BASE_FIELDS
                         ",\"num_attention_heads\":4,\"num_key_value_heads\":3}", &c),
               CQ_EBADMSG, "num_key_value_heads", NULL);
    expect_err(load_text("{\"model_type\":\"llama\"," BASE_FIELDS
                         ",\"num_attention_heads\":4,\"head_dim\":15}", &c),
               CQ_EBADMSG, "head_dim", NULL);
    expect_err(load_text("{\"model_type\":\"llama\",\"hidden_size\":\"64\",\"intermediate_size\":128,"
                         "\"num_hidden_layers\":2,\"vocab_size\":10,\"num_attention_heads\":4}", &c),
               CQ_EBADMSG, "hidden_size", "integer");
    expect_err(load_text("{\"model_type\":\"llama\"," BASE_FIELDS
                         ",\"num_attention_heads\":4,\"rms_norm_eps\":0}", &c),
               CQ_EBADMSG, "rms_norm_eps", NULL);
    expect_err(load_text("{\"model_type\":\"llama\"," BASE_FIELDS
                         ",\"num_attention_heads\":4,\"eos_token_id\":\"x\"}", &c),
               CQ_EBADMSG, "eos_token_id", NULL);
    expect_err(load_text("{\"model_type\":\"llama\"," BASE_FIELDS
                         ",\"num_attention_heads\":4,\"tie_word_embeddings\":1}", &c),
               CQ_EBADMSG, "tie_word_embeddings", NULL);
    /* rope_scaling: a type cherryq does not apply is refused, not run wrong;
     * linear and llama3 need their numbers */
#define RS(x) "{\"model_type\":\"llama\"," BASE_FIELDS ",\"num_attention_heads\":4,\"rope_scaling\":" x "}"
    expect_err(load_text(RS("{\"rope_type\":\"yarn\",\"factor\":4}"), &c), CQ_ENOTSUP, "\"yarn\" is not supported",
               NULL);
    expect_err(load_text(RS("{\"factor\":4}"), &c), CQ_EBADMSG, "rope_type", NULL);
    expect_err(load_text(RS("[1]"), &c), CQ_EBADMSG, "rope_scaling", "object");
    expect_err(load_text(RS("{\"type\":\"linear\"}"), &c), CQ_EBADMSG, "needs \"factor\"", NULL);
    expect_err(load_text(RS("{\"type\":\"linear\",\"factor\":-2}"), &c), CQ_EBADMSG, "factor", "positive");
    expect_err(load_text(RS("{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,"
                            "\"high_freq_factor\":4}"),
                         &c),
               CQ_EBADMSG, "original_max_position_embeddings", NULL);
    expect_err(load_text(RS("{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":4,"
                            "\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}"),
                         &c),
               CQ_EBADMSG, "low_freq_factor", NULL);
    assert_int_equal(load_text(RS("{\"type\":\"linear\",\"factor\":2}"), &c), 0);
    assert_true(c.rope_scaling.type == CQ_ROPE_LINEAR && c.rope_scaling.factor == 2.0f);
    assert_int_equal(load_text(RS("{\"rope_type\":\"dynamic\",\"factor\":2}"), &c), 0);
    assert_int_equal(c.rope_scaling.type, CQ_ROPE_PLAIN);   /* the same up to the context */
    assert_int_equal(load_text(RS("{\"rope_type\":\"default\"}"), &c), 0);
    assert_int_equal(c.rope_scaling.type, CQ_ROPE_PLAIN);
#undef RS
    /* the same with valid values loads */
    assert_int_equal(load_text("{\"model_type\":\"llama\"," BASE_FIELDS
                               ",\"num_attention_heads\":4,\"eos_token_id\":null,"
                               "\"tie_word_embeddings\":true}", &c), 0);
    assert_int_equal(c.eos_token_id, -1);
    assert_int_equal(c.tie_word_embeddings, 1);
}

static void test_hfconfig_write(void **state)
{
    cq_hf_config c, r;
    assert_int_equal(cq_hf_config_load(&c, FIX("config_tinyllama.json")), 0);
    char dir[512], p[600];
    tmp_path(dir, sizeof dir, "cfgout");
    assert_int_equal(cq_mkdir_p(dir), 0);
    snprintf(p, sizeof p, "%s/config.json", dir);
    const char *extra = "{\"quantization_config\": {\"quant_method\": \"cherryq\", \"bits\": 3,"
                        " \"group_size\": 128}, \"torch_dtype\": \"float16\"}";
    assert_int_equal(cq_hf_config_write(dir, &c, extra), 0);
    assert_int_equal(cq_hf_config_load(&r, p), 0);
    assert_string_equal(r.architecture, "LlamaForCausalLM");
    assert_int_equal(r.hidden_size, c.hidden_size);
    assert_int_equal(r.intermediate_size, c.intermediate_size);
    assert_int_equal(r.num_hidden_layers, c.num_hidden_layers);
    assert_int_equal(r.num_attention_heads, c.num_attention_heads);
    assert_int_equal(r.num_key_value_heads, c.num_key_value_heads);
    assert_int_equal(r.head_dim, c.head_dim);
    assert_int_equal(r.vocab_size, c.vocab_size);
    assert_int_equal(r.max_position_embeddings, c.max_position_embeddings);
    assert_true(r.rms_norm_eps == c.rms_norm_eps);
    assert_true(r.rope_theta == c.rope_theta);
    assert_int_equal(r.tie_word_embeddings, c.tie_word_embeddings);
    assert_int_equal(r.bos_token_id, c.bos_token_id);
    assert_int_equal(r.eos_token_id, c.eos_token_id);
    assert_string_equal(r.torch_dtype, "float16");   /* replaced by extra */

    size_t n;
    char *text = (char *)read_all(p, &n);
    assert_int_equal(text[n - 1], '\n');
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "architectures"), 0)->valuestring,
                        "LlamaForCausalLM");
    assert_string_equal(cJSON_GetObjectItem(j, "model_type")->valuestring, "llama");
    assert_string_equal(cJSON_GetObjectItem(j, "hidden_act")->valuestring, "silu");
    const cJSON *q = cJSON_GetObjectItem(j, "quantization_config");
    assert_true(cJSON_IsObject(q));
    assert_int_equal(cJSON_GetObjectItem(q, "bits")->valueint, 3);
    assert_string_equal(cJSON_GetObjectItem(q, "quant_method")->valuestring, "cherryq");
    int ndtype = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, j) ndtype += !strcmp(it->string, "torch_dtype");
    assert_int_equal(ndtype, 1);
    cJSON_Delete(j);

    /* no extra, defaults: torch_dtype float32, null token ids, round trip */
    cq_hf_config m;
    assert_int_equal(cq_hf_config_load(&m, FIX("config_minimal.json")), 0);
    assert_int_equal(cq_hf_config_write(p, &m, NULL), 0);
    assert_int_equal(cq_hf_config_load(&r, p), 0);
    assert_string_equal(r.torch_dtype, "float32");
    assert_int_equal(r.bos_token_id, -1);
    assert_int_equal(r.head_dim, 16);
    assert_true(r.rms_norm_eps == 1e-6);
    assert_int_equal(r.rope_scaling.type, CQ_ROPE_PLAIN);
    /* rope_scaling survives a write (a quantized LLaMA-3.2 keeps its RoPE) */
    cq_hf_config l32;
    assert_int_equal(cq_hf_config_load(&l32, FIX("config_llama32.json")), 0);
    assert_int_equal(cq_hf_config_write(p, &l32, NULL), 0);
    assert_int_equal(cq_hf_config_load(&r, p), 0);
    assert_memory_equal(&r.rope_scaling, &l32.rope_scaling, sizeof r.rope_scaling);
    assert_int_equal(cq_hf_config_write(p, &m, NULL), 0);   /* back to the file the checks below expect */

    /* failures leave the previous file alone */
    uint8_t *before = read_all(p, &n);
    clear_err();
    expect_err(cq_hf_config_write(p, &m, "{\"a\":"), CQ_EINVAL, "extra JSON", NULL);
    expect_err(cq_hf_config_write(p, &m, "[1]"), CQ_EINVAL, "extra JSON", NULL);
    cq_hf_config bad = m;
    bad.num_key_value_heads = 3;
    expect_err(cq_hf_config_write(p, &bad, NULL), CQ_EBADMSG, "num_key_value_heads", NULL);
    size_t n2;
    uint8_t *after = read_all(p, &n2);
    assert_int_equal(n, n2);
    assert_memory_equal(before, after, n);
    assert_int_equal(count_entries(dir), 1);
    free(before);
    free(after);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_st_golden),
        cmocka_unit_test(test_st_roundtrip),
        cmocka_unit_test(test_st_truncated),
        cmocka_unit_test(test_st_corrupt),
        cmocka_unit_test(test_st_mutated),
        cmocka_unit_test(test_st_sharded),
        cmocka_unit_test(test_st_sharded_bad),
        cmocka_unit_test(test_full_disk),
        cmocka_unit_test(test_gguf_golden_v3),
        cmocka_unit_test(test_gguf_golden_v2),
        cmocka_unit_test(test_gguf_roundtrip),
        cmocka_unit_test(test_gguf_truncated),
        cmocka_unit_test(test_gguf_mutated),
        cmocka_unit_test(test_gguf_corrupt),
        cmocka_unit_test(test_permute_qk),
        cmocka_unit_test(test_hfconfig_load),
        cmocka_unit_test(test_hfconfig_errors),
        cmocka_unit_test(test_hfconfig_write),
    };
    return cmocka_run_group_tests_name("formats", tests, group_setup, group_teardown);
}
