/* cherryq: the cherry lanes of a packed weight (cpu/qmm.h, "cherry lanes"):
 * built once at load time from the CSR cherries, read by the VNNI GEMV on
 * the interleaved codes. Portable C: sizing, building, full validation.
 *
 * A group is CQ_QMM_LANE_ROWS (64) consecutive rows, a chunk
 * CQ_QMM_LANE_COLS (128) consecutive columns (one int8 block of x). In a
 * group, the cherries of chunk c are sorted by row (stable: a row keeps its
 * CSR order); entry l of the chunk holds the l-th cherry of every row with
 * more than l cherries there, as long as that entry would hold at least
 * CQ_QMM_LANE_MIN_FILL cherries; the cherries of the layers after (few rows
 * with many cherries in one chunk) are "spilled": kept as (row, column,
 * h(delta)) records the kernel adds one by one. Two groups make a pair (128
 * rows). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qmm_internal.h"

#define LANES_MAGIC 0x314C5143u   /* "CQL1" */
#define LANES_TAIL 192            /* zero bytes after the last pair */

/* The FP16 rounding the int8 path applies to a cherry delta (qmm.h h(d)). */
float cq_qmm_lane_delta(float d)
{
    const float h = cq_f16_to_f32(cq_f32_to_f16(d));
    return isinf(h) && !isinf(d) ? d : h;
}

/* Where the first pair's data starts: after the header and the table. */
static int64_t first_pair_at(int64_t np)
{
    return CQ_QMM_LANES_HDR + (np * CQ_QMM_LANES_PAIR + 63) / 64 * 64;
}

static int64_t pair_data_bytes(int64_t ne, int64_t nz, int64_t ns)
{
    return (ne * 10 + nz * 3 + ns * 5 + 63) / 64 * 64;
}

/* Rows of group g (the last one may be short; 0 past the matrix). */
static int64_t group_rows(int64_t out, int64_t g)
{
    const int64_t r0 = g * CQ_QMM_LANE_ROWS;
    return r0 >= out ? 0 : out - r0 < CQ_QMM_LANE_ROWS ? out - r0 : CQ_QMM_LANE_ROWS;
}

/* h(delta) as FP16 bits; CQ_ERANGE where it overflows (the lanes hold FP16). */
static int lane_h16(float d, uint16_t *h)
{
    *h = cq_f32_to_f16(d);
    return isinf(cq_f16_to_f32(*h)) && !isinf(d) ? CQ_ERANGE : CQ_OK;
}

/* Where scan_group writes one group's part of a pair (qmm.h layout): its
 * masks and chunks, its lane cherries' columns and deltas, its spills'
 * columns, deltas and rows (rows in the pair: row - r0 + rbase). The u16
 * values go through memcpy: the layout gives them no alignment. */
typedef struct group_out {
    uint8_t *m, *ch, *cols, *dl, *scol, *sdl, *srow;
    int rbase;
} group_out;

typedef struct group_scan {
    int64_t ne, nz, ns;   /* entries, lane cherries, spilled cherries */
} group_scan;

/* Scratch of scan_group: first [nch+1], pos [nch], ord and rowof [the most
 * cherries a group has] (cherry index, row - r0). */
typedef struct scan_buf {
    int32_t *first, *pos, *ord;
    uint8_t *rowof;
} scan_buf;

/* Walks group [r0, r0+nr): counts its entries, lane cherries and spilled
 * cherries (columns < in) into gs and, when go != NULL, writes them. */
static int scan_group(const cq_qmm_w *w, int64_t r0, int64_t nr, int64_t nch, const scan_buf *sb,
                      group_scan *gs, const group_out *go)
{
    int32_t *first = sb->first, *pos = sb->pos, *ord = sb->ord;
    uint8_t *rowof = sb->rowof;
    /* counting sort of the group's cherries by chunk; rows ascending, a
     * row's cherries in CSR order */
    memset(first, 0, sizeof(int32_t) * (size_t)(nch + 1));
    for (int64_t r = r0; r < r0 + nr; r++)
        for (int32_t i = w->rowptr[r]; i < w->rowptr[r + 1]; i++)
            if (w->cols[i] < w->in) first[w->cols[i] / CQ_QMM_LANE_COLS + 1]++;
    for (int64_t c = 0; c < nch; c++) first[c + 1] += first[c];
    for (int64_t c = 0; c < nch; c++) pos[c] = first[c];
    for (int64_t r = r0; r < r0 + nr; r++)
        for (int32_t i = w->rowptr[r]; i < w->rowptr[r + 1]; i++)
            if (w->cols[i] < w->in) {
                const int32_t k = pos[w->cols[i] / CQ_QMM_LANE_COLS]++;
                ord[k] = i;
                rowof[k] = (uint8_t)(r - r0);
            }
    /* per chunk: one entry per layer while the layer holds at least
     * CQ_QMM_LANE_MIN_FILL cherries (the fill only falls with the layer),
     * the deeper layers spilled */
    int64_t ne = 0, o = 0, ns = 0;
    for (int64_t c = 0; c < nch; c++) {
        const int32_t a = first[c], b = first[c + 1];
        if (a == b) continue;
        int per_row[CQ_QMM_LANE_ROWS] = { 0 }, layers = 0, entries = 0;
        for (int32_t k = a; k < b; k++)
            if (++per_row[rowof[k]] > layers) layers = per_row[rowof[k]];
        for (int l = 0; l < layers; l++) {
            int fill = 0;
            for (int64_t i = 0; i < nr; i++) fill += per_row[i] > l;
            if (fill < CQ_QMM_LANE_MIN_FILL) break;
            entries++;
        }
        int seen[CQ_QMM_LANE_ROWS] = { 0 };
        for (int32_t k = a; k < b; k++)   /* the spills, rows ascending, CSR order in a row */
            if (seen[rowof[k]]++ >= entries) {
                if (go) {
                    uint16_t h;
                    if (lane_h16(w->delta[ord[k]], &h)) return CQ_ERANGE;
                    memcpy(go->scol + 2 * ns, &w->cols[ord[k]], 2);
                    memcpy(go->sdl + 2 * ns, &h, 2);
                    go->srow[ns] = (uint8_t)(go->rbase + rowof[k]);
                }
                ns++;
            }
        for (int l = 0; l < entries; l++) {
            uint64_t mask = 0;
            int64_t fill = 0;
            memset(seen, 0, sizeof seen);
            for (int32_t k = a; k < b; k++) {
                const int i = rowof[k];
                if (seen[i]++ != l) continue;   /* row i's l-th cherry in this chunk */
                if (go) {
                    uint16_t h;
                    if (lane_h16(w->delta[ord[k]], &h)) return CQ_ERANGE;
                    mask |= 1ull << i;
                    go->cols[o + fill] = (uint8_t)(w->cols[ord[k]] - c * CQ_QMM_LANE_COLS);
                    memcpy(go->dl + 2 * (o + fill), &h, 2);
                }
                fill++;
            }
            if (go) {
                const uint16_t c16 = (uint16_t)c;
                memcpy(go->m + 8 * (ne + l), &mask, 8);
                memcpy(go->ch + 2 * (ne + l), &c16, 2);
            }
            o += fill;
        }
        ne += entries;
    }
    gs->ne = ne;
    gs->nz = o;
    gs->ns = ns;
    return CQ_OK;
}

/* Shared walk of the sizing and the building (dst zeroed, of the size the
 * sizing walk returned): per pair, both groups counted, then written. */
static int64_t lanes_walk(const cq_qmm_w *w, uint8_t *dst)
{
    const int64_t nch = (w->in + CQ_QMM_LANE_COLS - 1) / CQ_QMM_LANE_COLS, np = cq_qmm_lanes_npairs(w->out);
    int64_t nzmax = 0;
    for (int64_t r0 = 0; r0 < w->out; r0 += CQ_QMM_LANE_ROWS) {
        const int64_t r1 = r0 + group_rows(w->out, r0 / CQ_QMM_LANE_ROWS);
        if (w->rowptr[r1] - w->rowptr[r0] > nzmax) nzmax = w->rowptr[r1] - w->rowptr[r0];
    }
    scan_buf sb = { malloc(sizeof(int32_t) * (size_t)(nch + 1)), malloc(sizeof(int32_t) * (size_t)nch),
                    malloc(sizeof(int32_t) * (size_t)(nzmax + 1)), malloc((size_t)(nzmax + 1)) };
    if (!sb.first || !sb.pos || !sb.ord || !sb.rowof) {
        free(sb.first);
        free(sb.pos);
        free(sb.ord);
        free(sb.rowof);
        return CQ_ENOMEM;
    }
    int64_t at = first_pair_at(np);
    int st = CQ_OK;
    for (int64_t p = 0; p < np && !st; p++) {
        group_scan gs[2] = { { 0, 0, 0 }, { 0, 0, 0 } };
        for (int h = 0; h < 2 && !st; h++)
            st = scan_group(w, (2 * p + h) * CQ_QMM_LANE_ROWS, group_rows(w->out, 2 * p + h), nch, &sb, &gs[h],
                            NULL);
        const int64_t ne = gs[0].ne + gs[1].ne, nz = gs[0].nz + gs[1].nz, ns = gs[0].ns + gs[1].ns;
        if (dst && !st) {
            uint8_t *pd = dst + at, *sp = pd + 10 * ne + 3 * nz;
            for (int h = 0; h < 2 && !st; h++) {
                const int64_t e0 = h ? gs[0].ne : 0, z0 = h ? gs[0].nz : 0, s0 = h ? gs[0].ns : 0;
                const group_out go = { pd + 8 * e0,           pd + 8 * ne + 2 * e0, pd + 10 * ne + z0,
                                       pd + 10 * ne + nz + 2 * z0, sp + 2 * s0,      sp + 2 * ns + 2 * s0,
                                       sp + 4 * ns + s0,      h * CQ_QMM_LANE_ROWS };
                group_scan g2;
                st = scan_group(w, (2 * p + h) * CQ_QMM_LANE_ROWS, group_rows(w->out, 2 * p + h), nch, &sb, &g2,
                                &go);
            }
            const uint64_t off = (uint64_t)at;
            const uint32_t v[5] = { (uint32_t)gs[0].ne, (uint32_t)gs[1].ne, (uint32_t)gs[0].nz,
                                    (uint32_t)gs[1].nz, (uint32_t)ns };
            memcpy(dst + CQ_QMM_LANES_HDR + p * CQ_QMM_LANES_PAIR, &off, 8);
            memcpy(dst + CQ_QMM_LANES_HDR + p * CQ_QMM_LANES_PAIR + 8, v, 20);
        }
        at += pair_data_bytes(ne, nz, ns);
    }
    free(sb.first);
    free(sb.pos);
    free(sb.ord);
    free(sb.rowof);
    if (st) return st;
    return at + LANES_TAIL;
}

int64_t cq_qmm_lanes_bytes(const cq_qmm_w *w)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    if (!w->rowptr || w->out == 0) return 0;
    return lanes_walk(w, NULL);
}

int cq_qmm_lanes_build(const cq_qmm_w *w, uint8_t *dst, int64_t n)
{
    int st = cq_qmm_check_basic(w, __func__);
    if (st) return st;
    CQ_CHECK_ARG(w->rowptr && w->out > 0 && dst, CQ_EINVAL);
    const int64_t need = lanes_walk(w, NULL);
    if (need < 0) return (int)need;
    if (n != need) {
        cq_error("%s: buffer of %lld bytes, the lanes take %lld", __func__, (long long)n, (long long)need);
        return CQ_EINVAL;
    }
    memset(dst, 0, (size_t)n);
    const int64_t got = lanes_walk(w, dst);
    if (got == CQ_ERANGE) {   /* a warning: the caller keeps the gathers, which need no FP16 */
        cq_warn("%s: a cherry delta overflows FP16 (out %lld, in %lld): no lanes", __func__, (long long)w->out,
                (long long)w->in);
        return CQ_ERANGE;
    }
    if (got < 0) return (int)got;
    const uint32_t h32[4] = { LANES_MAGIC, CQ_QMM_LANE_ROWS, CQ_QMM_LANE_COLS, 0 };
    const int64_t h64[5] = { w->out, w->in, w->rowptr[w->out], cq_qmm_lanes_npairs(w->out), n };
    memcpy(dst, h32, 16);
    memcpy(dst + 16, h64, 40);
    return CQ_OK;
}

int cq_qmm_lanes_header(const cq_qmm_w *w, const uint8_t *lanes, int64_t n)
{
    if (!lanes || n < CQ_QMM_LANES_HDR) return CQ_EINVAL;
    uint32_t h32[4];
    int64_t h64[5];
    memcpy(h32, lanes, 16);
    memcpy(h64, lanes + 16, 40);
    const int64_t np = cq_qmm_lanes_npairs(w->out);
    if (h32[0] != LANES_MAGIC || h32[1] != CQ_QMM_LANE_ROWS || h32[2] != CQ_QMM_LANE_COLS || h32[3] != 0 ||
        h64[0] != w->out || h64[1] != w->in || !w->rowptr || h64[2] != w->rowptr[w->out] || h64[3] != np ||
        h64[4] != n || n < CQ_QMM_LANES_HDR + np * CQ_QMM_LANES_PAIR + LANES_TAIL)
        return CQ_EINVAL;
    return CQ_OK;
}

int cq_qmm_lanes_check(const cq_qmm_w *w, const uint8_t *lanes, int64_t n)
{
    int st = cq_qmm_check(w);
    if (st) return st;
    if (cq_qmm_lanes_header(w, lanes, n)) {
        cq_error("%s: the lanes header does not match the weight (out %lld, in %lld, %lld bytes)", __func__,
                 (long long)w->out, (long long)w->in, (long long)n);
        return CQ_EINVAL;
    }
    const int64_t np = cq_qmm_lanes_npairs(w->out), nch = (w->in + CQ_QMM_LANE_COLS - 1) / CQ_QMM_LANE_COLS;
    int64_t prev_end = first_pair_at(np);
#define BAD(...)                                                                                   \
    do {                                                                                           \
        cq_error(__VA_ARGS__);                                                                     \
        return CQ_EINVAL;                                                                          \
    } while (0)
    for (int64_t p = 0; p < np; p++) {
        uint32_t v[5];
        const uint64_t off = cq_qmm_lanes_pair(lanes, p, v);
        const int64_t ne = (int64_t)v[0] + v[1], nz = (int64_t)v[2] + v[3], ns = v[4];
        if ((int64_t)off != prev_end || (int64_t)off + pair_data_bytes(ne, nz, ns) > n - LANES_TAIL)
            BAD("%s: pair %lld lies outside the lanes (offset %llu)", __func__, (long long)p,
                (unsigned long long)off);
        prev_end = (int64_t)off + pair_data_bytes(ne, nz, ns);
        const uint8_t *pd = lanes + off, *sp = pd + 10 * ne + 3 * nz;
        const int64_t nrg[2] = { group_rows(w->out, 2 * p), group_rows(w->out, 2 * p + 1) };
        int64_t spilled[2] = { 0, 0 };
        for (int64_t q = 0; q < ns; q++) {
            const int row = sp[4 * ns + q], h = row >= CQ_QMM_LANE_ROWS;
            uint16_t col;
            memcpy(&col, sp + 2 * q, 2);
            if (row - h * CQ_QMM_LANE_ROWS >= nrg[h] || col >= w->in)
                BAD("%s: pair %lld spill %lld: row %d or column %u out of range", __func__, (long long)p,
                    (long long)q, row, col);
            spilled[h]++;
        }
        int64_t e = 0, o = 0;
        for (int h = 0; h < 2; h++) {
            const int64_t r0 = (2 * p + h) * CQ_QMM_LANE_ROWS, nr = nrg[h];
            int64_t want = 0;
            for (int64_t r = r0; r < r0 + nr; r++)
                for (int32_t i = w->rowptr[r]; i < w->rowptr[r + 1]; i++) want += w->cols[i] < w->in;
            if (want != (int64_t)v[2 + h] + spilled[h] || (nr == 0 && v[h] != 0))
                BAD("%s: pair %lld group %d holds %lld cherries, the weight %lld", __func__, (long long)p, h,
                    (long long)v[2 + h] + spilled[h], (long long)want);
            int64_t got = 0, last = -1;
            for (uint32_t k = 0; k < v[h]; k++, e++) {
                uint64_t m;
                uint16_t c;
                memcpy(&m, pd + 8 * e, 8);
                memcpy(&c, pd + 8 * ne + 2 * e, 2);
                if (c >= nch || (int64_t)c < last || (nr < 64 && (m >> nr)) || m == 0)
                    BAD("%s: pair %lld entry %lld: chunk %u or row mask out of range", __func__, (long long)p,
                        (long long)e, c);
                last = c;
                const int cnt = __builtin_popcountll(m);
                for (int q = 0; q < cnt; q++) {
                    const uint8_t col = pd[10 * ne + o + q];
                    if (col >= CQ_QMM_LANE_COLS || (int64_t)c * CQ_QMM_LANE_COLS + col >= w->in)
                        BAD("%s: pair %lld entry %lld: column %lld past the row", __func__, (long long)p,
                            (long long)e, (long long)c * CQ_QMM_LANE_COLS + col);
                }
                o += cnt;
                got += cnt;
            }
            if (got != (int64_t)v[2 + h])
                BAD("%s: pair %lld group %d: entries hold %lld cherries, the table says %u", __func__, (long long)p, h,
                    (long long)got, v[2 + h]);
        }
    }
#undef BAD
    if (prev_end + LANES_TAIL != n) {
        cq_error("%s: %lld bytes, the pairs end at %lld", __func__, (long long)n, (long long)prev_end);
        return CQ_EINVAL;
    }
    return CQ_OK;
}
