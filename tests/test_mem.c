/* cherryq: tests of the memory estimate (core/cq_mem.h) and of the model
 * loader refusing a model that does not fit (issue 8, resource limits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cq_mem.h"
#include "llama.h"

static char g_last[1024];

static void capture(cq_log_level lvl, const char *msg, void *user)
{
    (void)user;
    if (lvl == CQ_LOG_ERROR) snprintf(g_last, sizeof g_last, "%s", msg);
}

static void test_parse_size(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(cq_mem_parse_size("123", &v), 0);
    assert_int_equal(v, 123);
    assert_int_equal(cq_mem_parse_size("64M", &v), 0);
    assert_int_equal(v, 64ull << 20);
    assert_int_equal(cq_mem_parse_size("2GiB", &v), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(cq_mem_parse_size("1.5g", &v), 0);
    assert_int_equal(v, 3ull << 29);
    assert_int_equal(cq_mem_parse_size("4k", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(cq_mem_parse_size("", &v), CQ_EINVAL);
    assert_int_equal(cq_mem_parse_size("12Q", &v), CQ_EINVAL);
    assert_int_equal(cq_mem_parse_size("-1G", &v), CQ_EINVAL);
    assert_int_equal(cq_mem_parse_size("1e30", &v), CQ_EINVAL);
}

static void test_available(void **state)
{
    (void)state;
    unsetenv("CQ_MEM_LIMIT");
    size_t a = 0;
    /* Linux CI: /proc/meminfo is there */
    assert_int_equal(cq_mem_available(&a), 0);
    assert_true(a > (16u << 20));
    printf("  available: %.2f GiB\n", (double)a / (1 << 30));
    setenv("CQ_MEM_LIMIT", "5M", 1);
    size_t b = 0;
    assert_int_equal(cq_mem_available(&b), 0);
    assert_int_equal(b, 5u << 20);
    /* the cap only lowers the figure */
    setenv("CQ_MEM_LIMIT", "1000T", 1);
    assert_int_equal(cq_mem_available(&b), 0);
    assert_true(b <= a + (a >> 2));
    unsetenv("CQ_MEM_LIMIT");
}

static void test_check(void **state)
{
    (void)state;
    setenv("CQ_MEM_LIMIT", "1G", 1);
    g_last[0] = 0;
    assert_int_equal(cq_mem_check(512ull << 20, "small"), 0);
    assert_int_equal(cq_mem_check(3ull << 30, "big job"), CQ_ENOMEM);
    /* the message gives both figures */
    assert_non_null(strstr(g_last, "big job needs ~3.00 GiB"));
    assert_non_null(strstr(g_last, "only 1.00 GiB available"));
    unsetenv("CQ_MEM_LIMIT");
}

/* The loader refuses before allocating, with the figure, and loads the same
 * model when the memory is there. */
static void test_load_refused(void **state)
{
    (void)state;
    cq_backend *be = NULL;
    assert_int_equal(cq_backend_create(&be, "cpu", -1), 0);
    const char *paths[] = { CQ_TEST_FIXTURES "/llama/tied", CQ_TEST_FIXTURES "/llama/tied.gguf" };
    for (int i = 0; i < 2; i++) {
        cq_llama *m = NULL;
        setenv("CQ_MEM_LIMIT", "8M", 1);
        g_last[0] = 0;
        assert_int_equal(cq_llama_load(&m, paths[i], be), CQ_ENOMEM);
        assert_null(m);
        printf("  %s\n", g_last);
        assert_non_null(strstr(g_last, "needs ~"));
        assert_non_null(strstr(g_last, "only 0.01 GiB available"));
        unsetenv("CQ_MEM_LIMIT");
        assert_int_equal(cq_llama_load(&m, paths[i], be), 0);
        cq_llama_destroy(&m);
    }
    cq_backend_destroy(&be);
}

int main(void)
{
    cq_log_set_callback(capture, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_available),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_load_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
