/* cherryq: the backend parity harness. Every op case runs on every built
 * backend that has a device and is compared with the scalar reference.
 * An op a backend declines is reported as skipped, not failed. Exits 77
 * (skipped) when no backend besides the CPU has a usable device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "cq_ops.h"
#include "op_cases.h"

static cq_backend *g_cpu;
static const char *g_names[3];
static int g_n;

static void run_backend(void **state)
{
    const char *name = *state;
    cq_backend *be = NULL;
    assert_int_equal(cq_backend_create(&be, name, -1), 0);
    printf("  backend %s: %s\n", name, be->device);
    op_case *cs;
    int n = op_cases_build(g_cpu, &cs, 7);
    int ok = 0, skipped = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        double e = 0;
        int r = op_case_check(be, &cs[i], &e);
        if (r == CQ_ENOTSUP) {
            printf("  [ SKIPPED ] %s: %s declined by %s\n", name, cs[i].name, name);
            skipped++;
        } else if (r) {
            printf("  [  FAILED ] %s: %s: err %.3g (tol %.1g) status %d\n", name, cs[i].name, e, cs[i].tol, r);
            failed++;
        } else {
            printf("  [      OK ] %s: %-40s max normalized error %.2e\n", name, cs[i].name, e);
            ok++;
        }
    }
    printf("  %s: %d passed, %d failed, %d skipped (declined)\n", name, ok, failed, skipped);
    op_cases_free(cs, n);
    cq_backend_destroy(&be);
    assert_int_equal(failed, 0);
}

int main(void)
{
    if (cq_backend_create(&g_cpu, "cpu", -1)) return 1;
    for (int i = 1; i < cq_backend_count(); i++) {
        cq_backend_info bi;
        if (cq_backend_probe(i, &bi) == 0 && bi.n_devices > 0) g_names[g_n++] = bi.name;
        else printf("parity: backend %s skipped: %s\n", bi.name, bi.reason);
    }
    if (!g_n) {
        printf("parity: no backend besides the CPU has a device; skipped\n");
        cq_backend_destroy(&g_cpu);
        return 77;
    }
    struct CMUnitTest tests[3];
    for (int i = 0; i < g_n; i++) {
        tests[i] = (struct CMUnitTest)cmocka_unit_test_prestate(run_backend, (void *)g_names[i]);
        tests[i].name = g_names[i];
    }
    int r = _cmocka_run_group_tests("parity", tests, (size_t)g_n, NULL, NULL);
    cq_backend_destroy(&g_cpu);
    return r;
}
