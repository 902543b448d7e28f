// cherryq: the QMATMUL CUDA kernels (cuda/qmatmul_kernels.cuh), their own
// source, run on the CPU under the SIMT emulator of tests/cuda_emu/simt.h, in
// every build without -Dcuda=true (CI has no GPU). Checks:
//   - every fast-GEMV variant (cuda/qmatmul_kernels.cuh with_variant: the
//     table the real launcher uses) and bit width, groups 0/32/64/128/256,
//     N = 3 (blockIdx.y), rows not a multiple of a block's rows (the
//     clamped duplicate rows), rows with no cherries, a few, and more than 32
//     (the second cherry loop): the exact variants against
//     cq_qmm_gemv_ref (the exact product), the int8 ones (4, 5, 6, 8)
//     against cq_qmm_gemv_q8_exact_cherries_ref (their oracle) and farther than that from
//     the exact product; each a second time with every warp run as far
//     ahead as it can and cp.async copies landing at issue (simt.h); the
//     pipelined ones (8, 9) also at the edge of their shared-memory ring;
//   - the generic kernel on shapes the fast one refuses (in % 128 != 0, a
//     group of 48);
//   - the batch path's dequantize + cherry kernels against
//     cq_qmm_dequant_rows (to 1e-6).
// test_cuda runs the same kernels through the backend (on a GPU, or on this
// emulator as the cuda_emu_backend test); this one reaches every variant
// directly. A GPU run is still what proves the kernels.
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>

#include "cuda/qmatmul_kernels.cuh"

extern "C" {
#include "cq_base.h"
#include "op_cases.h"   // tr_seed, tr_u32, tr_normal: the tests' random numbers
#include "qmm.h"
}

// last: it defines a fail() macro that the C++ library headers trip on;
// its functions are C (the header has no extern "C" of its own for all of them)
extern "C" {
#include <cmocka.h>
}

namespace {

// A random packed matrix; cherries per row vary: none, a few, 40 (> 32: the
// fast kernel's second loop) or 90 (> 64: the streaming kernel's).
struct QMat {
    int64_t out, in, rb, ng;
    int bits, group;
    std::vector<uint8_t> codes_store;
    uint8_t *codes;   // 16-byte aligned inside codes_store
    std::vector<uint16_t> scales, cols;
    std::vector<int32_t> rowptr;
    std::vector<float> delta;

    QMat(int64_t o, int64_t i, int b, int g, bool cherries) : out(o), in(i), bits(b), group(g)
    {
        rb = cq_qmm_row_bytes(bits, in);
        ng = cq_qmm_ngroups(group, in);
        codes_store.resize((size_t)(out * rb) + 16);
        codes = codes_store.data() + ((16 - ((uintptr_t)codes_store.data() & 15)) & 15);
        for (int64_t k = 0; k < out * rb; k++) codes[k] = (uint8_t)tr_u32();
        scales.resize((size_t)(out * ng));
        for (auto &s : scales) s = cq_f32_to_f16(0.005f + 0.045f * (float)(tr_u32() % 1000) / 1000.0f);
        rowptr.assign((size_t)out + 1, 0);
        for (int64_t r = 0; r < out; r++) {
            const int k = !cherries || r % 5 == 0 ? 0 : r % 7 == 1 ? 40 : r % 11 == 3 ? 90 : 1 + (int)(tr_u32() % 5);
            for (int j = 0; j < k; j++) {
                cols.push_back((uint16_t)(tr_u32() % (uint32_t)in));
                delta.push_back(0.3f * tr_normal());
            }
            rowptr[(size_t)r + 1] = (int32_t)cols.size();
        }
        cols.push_back(0);   // never empty: data() is a valid pointer
        delta.push_back(0.0f);
    }
    cq_qmm_w w() const
    {
        cq_qmm_w m;
        memset(&m, 0, sizeof m);
        m.out = out;
        m.in = in;
        m.bits = bits;
        m.group = group;
        m.codes = codes;
        m.scales = scales.data();
        m.rowptr = rowptr.data();
        m.cols = cols.data();
        m.delta = delta.data();
        return m;
    }
    cqk_qweight q() const
    {
        cqk_qweight k;
        k.codes = codes;
        k.scales = scales.data();
        k.rowptr = rowptr.data();
        k.cols = cols.data();
        k.delta = delta.data();
        k.nnz = rowptr[(size_t)out];
        k.out = out;
        k.in = in;
        k.row_bytes = rb;
        k.ngroups = ng;
        k.group = group;
        k.bits = bits;
        return k;
    }
};

// sum_j |W_rj x_j| per row (W dense, cherries applied) plus sum |delta x|:
// the scale of the rounding error of any summation order.
std::vector<double> magnitudes(const QMat &m, const float *x)
{
    const cq_qmm_w w = m.w();
    std::vector<float> W((size_t)(m.out * m.in));
    assert_int_equal(cq_qmm_dequant_rows(&w, 0, m.out, W.data()), 0);
    std::vector<double> mag((size_t)m.out, 0.0);
    for (int64_t r = 0; r < m.out; r++) {
        for (int64_t j = 0; j < m.in; j++) mag[(size_t)r] += fabs((double)W[(size_t)(r * m.in + j)] * x[j]);
        for (int32_t i = m.rowptr[(size_t)r]; i < m.rowptr[(size_t)r + 1]; i++)
            mag[(size_t)r] += fabs((double)m.delta[(size_t)i] * x[m.cols[(size_t)i]]);
    }
    return mag;
}

cudaError_t emu_fast(int variant, float *Y, const float *X, int64_t N, const cqk_qweight *q)
{
    const QW w = make_qw(q);
    FastLaunch f = { nullptr, Y, X, N, w };   // the launcher's own grid, block and shared memory
    switch (q->bits) {
    case 2: return with_variant<2>(variant, f);
    case 3: return with_variant<3>(variant, f);
    case 4: return with_variant<4>(variant, f);
    default: return with_variant<8>(variant, f);
    }
}

void check_rows(const char *what, int bits, int group, int64_t out, int64_t in, const float *y, const float *want,
                const std::vector<double> &mag, double tol)
{
    for (int64_t r = 0; r < out; r++) {
        const double e = fabs((double)y[r] - want[r]);
        if (!(e <= tol * mag[(size_t)r] + 1e-30))
            fail_msg("%s, bits %d group %d %lldx%lld: row %lld is %.9g, want %.9g (|error| %.3g, scale %.3g)", what,
                     bits, group, (long long)out, (long long)in, (long long)r, (double)y[r], (double)want[r], e,
                     mag[(size_t)r]);
    }
}

void test_fast_variants(void **state)
{
    (void)state;
    static const int k_bits[] = { 2, 3, 4, 8 };
    static const int groups[] = { 0, 32, 64, 128, 256 };
    // rows: not a multiple of any block's rows (16 or 32 per block); 300 x
    // 4224: more row groups than the streaming kernels' resident warps on the
    // emulated device (2 SMs x 8 blocks x 8 warps), so warps take 2-3 groups
    // and the pipeline crosses groups, and 33 chunks a row: two steps a group,
    // lane 0 with a chunk in both, the other lanes in the first only
    static const int64_t shapes[][2] = { { 37, 256 }, { 21, 640 }, { 300, 4224 } };
    const int64_t N = 3;
    for (int bits : k_bits)
        for (int group : groups)
            for (const auto &sh : shapes) {
                const int64_t out = sh[0], in = sh[1];
                if (group > in || (in > 1024 && group != 0 && group != 128)) continue;   // time
                QMat m(out, in, bits, group, true);
                const cqk_qweight q = m.q();
                assert_true(valid(&q) && fast_shape_ok(&q));
                const cq_qmm_w w = m.w();
                std::vector<float> X((size_t)(N * in)), Y((size_t)(N * out));
                for (auto &v : X) v = tr_normal();
                X[5] = 0.0f;
                for (int64_t j = 128; j < 256; j++) X[(size_t)(in + j)] = 0.0f;   // n = 1: an all-zero block
                std::vector<std::vector<double>> mag((size_t)N);
                std::vector<float> Ye((size_t)(N * out)), Yq((size_t)(N * out));
                for (int64_t n = 0; n < N; n++) {
                    const float *x = X.data() + n * in;
                    mag[(size_t)n] = magnitudes(m, x);
                    assert_int_equal(cq_qmm_gemv_ref(&w, x, Ye.data() + n * out), 0);
                    assert_int_equal(cq_qmm_gemv_q8_exact_cherries_ref(&w, x, Yq.data() + n * out), 0);
                }
                // the pipelined kernels (8, 9) really run here: their ring fits
                const QW qw = make_qw(&q);
                PipeGeo geo;
                assert_true(pipe_geo(qw, true, pipe_rows(bits), smem_optin_bytes(), &geo) && geo.stages >= 2);
                assert_true(pipe_geo(qw, false, pipe_rows(bits), smem_optin_bytes(), &geo) && geo.stages >= 2);
                // each variant twice: warps in step with cp.async copies
                // landing at their wait, then each warp run ahead with the
                // copies landing at their issue (tests/cuda_emu/simt.h)
                for (int run = 0; run < 2 * CQK_QGEMV_VARIANTS; run++) {
                    const int v = run % CQK_QGEMV_VARIANTS;
                    cqk_emu::g_async_early = cqk_emu::g_warp_greedy = run >= CQK_QGEMV_VARIANTS;
                    std::fill(Y.begin(), Y.end(), NAN);
                    assert_int_equal(emu_fast(v, Y.data(), X.data(), N, &q), cudaSuccess);
                    cqk_emu::g_async_early = cqk_emu::g_warp_greedy = false;
                    for (int64_t n = 0; n < N; n++) {
                        const float *y = Y.data() + n * out, *ye = Ye.data() + n * out, *yq = Yq.data() + n * out;
                        char what[96];
                        snprintf(what, sizeof what, "fast v%d%s, n %lld", v,
                                 run >= CQK_QGEMV_VARIANTS ? " (warps run ahead, copies at issue)" : "",
                                 (long long)n);
                        const std::vector<double> &mg = mag[(size_t)n];
                        if (!cqk_qgemv_variant_q8(v)) {
                            check_rows(what, bits, group, out, in, y, ye, mg, 1e-5);
                            continue;
                        }
                        check_rows(what, bits, group, out, in, y, yq, mg, 1e-5);
                        // the int8 path really ran: some row is farther from the exact product
                        double far = 0;
                        for (int64_t r = 0; r < out; r++)
                            far = fmax(far, fabs((double)y[r] - ye[r]) / (mg[(size_t)r] + 1e-30));
                        if (!(far > 1e-4))
                            fail_msg("fast v%d, bits %d group %d: within %.3g of the exact product", v, bits, group,
                                     far);
                    }
                }
            }
}

// The pipelined kernels at the edge of their ring: 40 x 36864 at 4 bits
// (9 segments a row, 64 KiB a slot): variant 8 (int8 x, 38 KiB) runs with
// two slots, a tile in flight while one is computed, and variant 9 (f32 x,
// 152 KiB) has no room for two and takes its fallback (variant 1's
// kernel); both must match their oracles, with the copies landing late and
// early.
void test_pipe_ring(void **state)
{
    (void)state;
    QMat m(40, 36864, 4, 128, true);
    const cqk_qweight q = m.q();
    const QW qw = make_qw(&q);
    PipeGeo geo;
    assert_true(pipe_geo(qw, true, pipe_rows(4), smem_optin_bytes(), &geo));
    assert_int_equal(geo.stages, 2);
    assert_int_equal(geo.nseg, 9);
    assert_false(pipe_geo(qw, false, pipe_rows(4), smem_optin_bytes(), &geo));
    const cq_qmm_w w = m.w();
    std::vector<float> x((size_t)m.in), y((size_t)m.out), want((size_t)m.out);
    for (auto &v : x) v = tr_normal();
    const std::vector<double> mag = magnitudes(m, x.data());
    for (int v : { 8, 9 })
        for (bool early : { false, true }) {
            cqk_emu::g_async_early = cqk_emu::g_warp_greedy = early;
            std::fill(y.begin(), y.end(), NAN);
            assert_int_equal(emu_fast(v, y.data(), x.data(), 1, &q), cudaSuccess);
            cqk_emu::g_async_early = cqk_emu::g_warp_greedy = false;
            if (v == 8) assert_int_equal(cq_qmm_gemv_q8_exact_cherries_ref(&w, x.data(), want.data()), 0);
            else assert_int_equal(cq_qmm_gemv_ref(&w, x.data(), want.data()), 0);
            check_rows(v == 8 ? "pipe v8, 2 slots" : "pipe v9, fallback", 4, 128, m.out, m.in, y.data(), want.data(),
                       mag, 1e-5);
        }
}

// The fast kernels' group index __umulhi(c, gdiv) equals c / group for every
// group they take (a multiple of 32) and every column they can see (c < in,
// in * group <= 2^32, fast_shape_ok): checked at every group boundary (c =
// k * group - 1, k * group), where a rounding error would show first, for
// groups 32..8192, up to the largest in that group allows.
void test_group_index(void **state)
{
    (void)state;
    int64_t checked = 0;
    for (int64_t group = 32; group <= 8192; group += 32) {
        cqk_qweight q;
        memset(&q, 0, sizeof q);
        q.bits = 3;
        q.group = group;
        const uint32_t gdiv = make_qw(&q).gdiv;
        const int64_t in_max = ((int64_t)1 << 32) / group;
        for (int64_t c = group - 1; c < in_max; c += group) {
            for (int64_t cc = c; cc <= c + 1 && cc < in_max; cc++, checked++)
                if (__umulhi((uint32_t)cc, gdiv) != (uint32_t)(cc / group))
                    fail_msg("group %lld: column %lld gives group %u, want %lld", (long long)group, (long long)cc,
                             __umulhi((uint32_t)cc, gdiv), (long long)(cc / group));
        }
    }
    assert_true(checked > 10000000);
    cqk_qweight q;
    memset(&q, 0, sizeof q);
    q.bits = 3;
    assert_int_equal(make_qw(&q).gdiv, 0);   // group 0: one scale a row
    // past the bound the fast kernels are not used (the generic one divides)
    QMat m(1, 128, 3, 32, false);
    cqk_qweight big = m.q();
    big.in = (int64_t)1 << 20;
    big.row_bytes = 3 * (big.in / 8);
    big.group = 4096;
    assert_true(fast_shape_ok(&big));
    big.group = 8192;
    assert_false(fast_shape_ok(&big));
}

void test_generic(void **state)
{
    (void)state;
    static const int64_t shapes[][3] = { { 13, 200, 0 }, { 9, 96, 48 }, { 6, 384, 48 } };   // out, in, group
    for (int bits : { 2, 3, 4, 8 })
        for (const auto &sh : shapes) {
            QMat m(sh[0], sh[1], bits, (int)sh[2], true);
            const cqk_qweight q = m.q();
            assert_true(valid(&q) && !fast_shape_ok(&q));
            const cq_qmm_w w = m.w();
            const int64_t N = 2, out = m.out, in = m.in;
            std::vector<float> X((size_t)(N * in)), Y((size_t)(N * out), NAN), Ye((size_t)out);
            for (auto &v : X) v = tr_normal();
            const QW qw = make_qw(&q);
            const dim3 grid((unsigned)((out + kWarpsGeneric - 1) / kWarpsGeneric), (unsigned)N);
            assert_int_equal(cqk_emu::launch(grid, dim3(kWarpsGeneric * 32), 0, qgemv_generic_kernel, Y.data(),
                                             (const float *)X.data(), qw),
                             cudaSuccess);
            for (int64_t n = 0; n < N; n++) {
                const float *x = X.data() + n * in;
                assert_int_equal(cq_qmm_gemv_ref(&w, x, Ye.data()), 0);
                check_rows("generic", bits, (int)sh[2], out, in, Y.data() + n * out, Ye.data(), magnitudes(m, x),
                           1e-5);
            }
        }
}

void test_dequant(void **state)
{
    (void)state;
    for (int bits : { 2, 3, 4, 8 }) {
        QMat m(23, 384, bits, 64, true);
        const cqk_qweight q = m.q();
        const cq_qmm_w w = m.w();
        const int64_t r0 = 3, nr = 17, in = m.in;
        std::vector<float> Wt((size_t)(nr * in), NAN), want((size_t)(nr * in));
        const QW qw = make_qw(&q);
        assert_int_equal(cqk_emu::launch(dim3(grid_for(nr * in, 256)), dim3(256), 0, qdequant_kernel, Wt.data(), r0,
                                         nr, qw),
                         cudaSuccess);
        assert_int_equal(cqk_emu::launch(dim3((unsigned)((nr + 127) / 128)), dim3(128), 0, qcherry_kernel,
                                         Wt.data(), r0, nr, qw),
                         cudaSuccess);
        assert_int_equal(cq_qmm_dequant_rows(&w, r0, nr, want.data()), 0);
        for (int64_t i = 0; i < nr * in; i++)
            if (!(fabsf(Wt[(size_t)i] - want[(size_t)i]) <= 1e-6f * fabsf(want[(size_t)i])))
                fail_msg("dequant bits %d: element %lld is %.9g, want %.9g", bits, (long long)i,
                         (double)Wt[(size_t)i], (double)want[(size_t)i]);
    }
}

}  // namespace

int main(void)
{
    tr_seed(9);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_variants),
        cmocka_unit_test(test_pipe_ring),
        cmocka_unit_test(test_group_index),
        cmocka_unit_test(test_generic),
        cmocka_unit_test(test_dequant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
