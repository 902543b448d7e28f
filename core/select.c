/* cherryq: cherry selection and heterogeneity scores (CHERRYQ.md sections 2, 3).
 *
 * Top-k selections are exact and deterministic: the k-th largest score is
 * found by quickselect on a copy (expected O(n), three-way partition so long
 * runs of equal values, e.g. zero Fisher entries, stay linear), then every
 * score above it is taken, and ties at it go to the lowest indices. That is
 * the same set as a stable sort by descending score.
 */
#include "quant.h"

#include <float.h>
#include <stdlib.h>

/* ------------------------------------------------------------ PRNG */

/* splitmix64 (Steele, Lea, Flood 2014): tiny, good enough for sampling. */
static inline uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform integer in [0, n), n > 0, without modulo bias. */
static inline uint64_t rand_below(uint64_t *s, uint64_t n)
{
    uint64_t lim = (0 - n) % n; /* 2^64 mod n */
    for (;;) {
        uint64_t x = splitmix64(s);
        if (x >= lim) return x % n;
    }
}

/* ------------------------------------------------------------ quickselect */

static inline void swapf(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

/* Rearranges a[0..n) so that a[0..k) holds the k largest values (any order).
 * No NaNs allowed. */
static void qselect_desc(float *a, int64_t n, int64_t k, uint64_t *rng)
{
    int64_t lo = 0, hi = n;
    while (lo < k && k < hi) {
        float p = a[lo + (int64_t)rand_below(rng, (uint64_t)(hi - lo))];
        int64_t i = lo, j = lo, m = hi;
        while (j < m) {
            if (a[j] > p) swapf(&a[i++], &a[j++]);
            else if (a[j] < p) swapf(&a[j], &a[--m]);
            else j++;
        }
        /* [lo,i) > p, [i,m) == p, [m,hi) < p */
        if (k < i) hi = i;
        else if (k <= m) return;
        else lo = m;
    }
}

static int check_finite(const float *x, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(x[i]) <= FLT_MAX)) {
            cq_error("select: %s[%lld] is not finite (%g)", what, (long long)i, (double)x[i]);
            return CQ_ERANGE;
        }
    return 0;
}

/* mask[i] = 1 for the k largest score[i] (ties to the lowest index); others
 * untouched. scratch: n floats. Scores must be finite. */
static void topk_mask(uint8_t *mask, const float *score, int64_t n, int64_t k, float *scratch,
                      uint64_t seed)
{
    if (k <= 0) return;
    if (k >= n) {
        for (int64_t i = 0; i < n; i++) mask[i] = 1;
        return;
    }
    uint64_t rng = seed;
    memcpy(scratch, score, (size_t)n * sizeof(float));
    qselect_desc(scratch, n, k, &rng);
    float v = scratch[0];
    for (int64_t i = 1; i < k; i++) v = scratch[i] < v ? scratch[i] : v;
    int64_t taken = 0;
    for (int64_t i = 0; i < n; i++)
        if (score[i] > v) {
            mask[i] = 1;
            taken++;
        }
    for (int64_t i = 0; i < n && taken < k; i++)
        if (score[i] == v) {
            mask[i] = 1;
            taken++;
        }
}

/* Floyd's algorithm: k distinct uniform indices of [0, n), marked in mask
 * (which must be zero on [0, n)). */
static void random_mask(uint8_t *mask, int64_t n, int64_t k, uint64_t seed)
{
    uint64_t s = seed;
    if (k >= n) {
        for (int64_t i = 0; i < n; i++) mask[i] = 1;
        return;
    }
    for (int64_t j = n - k; j < n; j++) {
        int64_t t = (int64_t)rand_below(&s, (uint64_t)j + 1);
        if (mask[t]) mask[j] = 1;
        else mask[t] = 1;
    }
}

/* ------------------------------------------------------------ heterogeneity */

int cq_hetero_score(const float *x, int64_t n, double *score)
{
    CQ_CHECK_ARG(x && score, CQ_EINVAL);
    if (n < 2) {
        cq_error("hetero_score: need at least 2 values, got %lld", (long long)n);
        return CQ_EINVAL;
    }
    int rc = check_finite(x, n, "x");
    if (rc) return rc;
    float *a = malloc((size_t)n * sizeof(float));
    if (!a) {
        cq_error("hetero_score: out of memory for %lld values", (long long)n);
        return CQ_ENOMEM;
    }
    memcpy(a, x, (size_t)n * sizeof(float));
    int64_t top = n / 100 > 0 ? n / 100 : 1;
    uint64_t rng = 0x5eedull;
    qselect_desc(a, n, top, &rng);
    double sum = 0.0;
    for (int64_t i = 0; i < top; i++) sum += a[i];
    float mx = a[top];
    for (int64_t i = top + 1; i < n; i++) mx = a[i] > mx ? a[i] : mx;
    free(a);
    double mean = sum / (double)top;
    if (mx == 0.0f) *score = mean > 0.0 ? INFINITY : 1.0;
    else *score = mean / (double)mx;
    return 0;
}

int cq_hetero_score_abs(const float *w, int64_t n, double *score)
{
    CQ_CHECK_ARG(w && score, CQ_EINVAL);
    CQ_CHECK_ARG(n >= 0, CQ_EINVAL);
    float *a = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!a) {
        cq_error("hetero_score: out of memory for %lld values", (long long)n);
        return CQ_ENOMEM;
    }
    for (int64_t i = 0; i < n; i++) a[i] = fabsf(w[i]);
    int rc = cq_hetero_score(a, n, score);
    free(a);
    return rc;
}

/* ------------------------------------------------------------ k rules */

int64_t cq_cherry_k(int64_t in, cq_k_rule rule, int64_t k_explicit)
{
    if (in < 0) {
        cq_error("cherry_k: in_features %lld < 0", (long long)in);
        return -1;
    }
    int64_t k;
    switch (rule) {
    case CQ_K_DEFAULT:
        k = (int64_t)llround((double)in / 256.0);
        k = k < 1 ? 1 : k;
        break;
    case CQ_K_REFERENCE:
        /* 0 whenever ceil(in/256) < 8, i.e. for in <= 1792 (not only below
         * 1024): small models need another rule */
        k = ((in + 255) / 256) / 8 * 8;
        break;
    case CQ_K_EXPLICIT:
        if (k_explicit < 0) {
            cq_error("cherry_k: explicit k = %lld < 0", (long long)k_explicit);
            return -1;
        }
        k = k_explicit;
        break;
    default:
        cq_error("cherry_k: rule %d is not a per-row rule (fraction mode selects per "
                 "matrix)", (int)rule);
        return -1;
    }
    return k < in ? k : in;
}

/* ------------------------------------------------------------ loss-aware
 *
 * Loss-aware selection (beyond the paper). The loss estimate of a row is
 *     L = sum over normal weights j of F_j (w_j - Q(w_j))^2,
 * where Q uses the group scales, which depend on which weights are cherries:
 * making a group's largest |w| a cherry shrinks that group's scale and so the
 * error of every other weight of the group. Greedy, k rounds per row; each
 * round makes the single weight whose removal lowers L most a cherry.
 *
 * The best single removal of a group is found exactly with two candidates:
 *   B = the group's max-|w| normal weight (first one on ties): removing it can
 *       change the scale, so its gain L_g - L_g(without B) is evaluated by
 *       recomputing the group (g ops);
 *   A = argmax F_j e_j^2 over the other normal weights: removing any j != B
 *       leaves the max (B stays) and so the scale unchanged, so its gain is
 *       exactly F_j e_j^2, and A is the best of them.
 * Every group caches (loss, best gain, best column); a round takes the best
 * group of the row (O(ngroups)) and re-evaluates only that group (O(g)).
 * Cost per row: O(in + k (ngroups + g)), within the O(k ngroups g) budget.
 *
 * Greedy is not guaranteed to beat top-k impact, so each row (each matrix in
 * fraction mode) finally compares its greedy loss with the loss of the
 * impact selection (top F, or top |w| without F) of the same size and keeps
 * the lower: loss-aware is never worse than impact by its own estimate.
 * The loss uses float32 scales (the fp16 rounding of s is not modelled).
 */

typedef struct {
    double loss; /* group loss with the current cherries */
    double gain; /* best single-removal gain; -INFINITY when no normal weight */
    int64_t col; /* its column, -1 when none */
} la_group;

static void la_eval(la_group *G, const float *w, const float *f, const uint8_t *m,
                    int64_t c0, int64_t c1, int bits)
{
    int64_t B = -1;
    float mx = 0.0f;
    for (int64_t j = c0; j < c1; j++) {
        if (m[j]) continue;
        float a = fabsf(w[j]);
        if (B < 0 || a > mx) {
            mx = a;
            B = j;
        }
    }
    if (B < 0) {
        G->loss = 0.0;
        G->gain = -INFINITY;
        G->col = -1;
        return;
    }
    float s = cq_quant_scale(mx, bits);
    double L = 0.0, ga = -INFINITY;
    int64_t A = -1;
    float m2 = 0.0f;
    for (int64_t j = c0; j < c1; j++) {
        if (m[j]) continue;
        double e = (double)w[j] - (double)cq_quant_value(w[j], s, bits);
        double c = (f ? (double)f[j] : 1.0) * e * e;
        L += c;
        if (j != B) {
            if (c > ga) {
                ga = c;
                A = j;
            }
            float a = fabsf(w[j]);
            m2 = a > m2 ? a : m2;
        }
    }
    float s2 = cq_quant_scale(m2, bits);
    double L2 = 0.0;
    for (int64_t j = c0; j < c1; j++) {
        if (m[j] || j == B) continue;
        double e = (double)w[j] - (double)cq_quant_value(w[j], s2, bits);
        L2 += (f ? (double)f[j] : 1.0) * e * e;
    }
    double gb = L - L2;
    G->loss = L;
    if (A >= 0 && (ga > gb || (ga == gb && A < B))) {
        G->gain = ga;
        G->col = A;
    } else {
        G->gain = gb;
        G->col = B;
    }
}

static void la_eval_row(la_group *G, const float *w, const float *f, const uint8_t *m,
                        int64_t in, int bits, int group, int64_t ng)
{
    for (int64_t gi = 0; gi < ng; gi++) {
        int64_t c0, c1;
        cq_quant_group_range(gi, in, group, &c0, &c1);
        la_eval(&G[gi], w, f, m, c0, c1, bits);
    }
}

static int64_t la_best_group(const la_group *G, int64_t ng)
{
    int64_t b = -1;
    for (int64_t gi = 0; gi < ng; gi++)
        if (G[gi].col >= 0 && (b < 0 || G[gi].gain > G[b].gain)) b = gi;
    return b;
}

static double la_row_loss(const la_group *G, int64_t ng)
{
    double L = 0.0;
    for (int64_t gi = 0; gi < ng; gi++) L += G[gi].loss;
    return L;
}

/* Applies the pick of group gi and re-evaluates it. */
static void la_take(la_group *G, int64_t gi, const float *w, const float *f, uint8_t *m,
                    int64_t in, int bits, int group)
{
    int64_t c0, c1;
    m[G[gi].col] = 1;
    cq_quant_group_range(gi, in, group, &c0, &c1);
    la_eval(&G[gi], w, f, m, c0, c1, bits);
}

/* max-heap of rows by their best gain (ties: lower row first) */
typedef struct {
    int64_t *row;
    double *key;
    int64_t n;
} la_heap;

static inline int la_above(const la_heap *h, int64_t a, int64_t b)
{
    return h->key[a] > h->key[b] || (h->key[a] == h->key[b] && h->row[a] < h->row[b]);
}

static inline void la_swap(la_heap *h, int64_t a, int64_t b)
{
    int64_t r = h->row[a];
    double k = h->key[a];
    h->row[a] = h->row[b];
    h->key[a] = h->key[b];
    h->row[b] = r;
    h->key[b] = k;
}

static void la_push(la_heap *h, int64_t row, double key)
{
    int64_t i = h->n++;
    h->row[i] = row;
    h->key[i] = key;
    while (i > 0 && la_above(h, i, (i - 1) / 2)) {
        la_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void la_pop(la_heap *h)
{
    h->n--;
    if (h->n == 0) return;
    la_swap(h, 0, h->n);
    int64_t i = 0;
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, b = i;
        if (l < h->n && la_above(h, l, b)) b = l;
        if (r < h->n && la_above(h, r, b)) b = r;
        if (b == i) break;
        la_swap(h, i, b);
        i = b;
    }
}

/* ------------------------------------------------------------ select */

static uint64_t row_seed(uint64_t seed, int64_t r)
{
    uint64_t s = seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(r + 1));
    return splitmix64(&s);
}

/* Per-row selection of k cherries in every row. */
static int select_rows(uint8_t *mask, const float *w, const float *fisher, int64_t out,
                       int64_t in, int64_t k, const cq_select_opts *o)
{
    int crit = o->criterion;
    int64_t ng = crit == CQ_SEL_LOSS_AWARE ? cq_quant_ngroups(in, o->group) : 0;
    int oom = 0;

#pragma omp parallel
    {
        float *score = malloc((size_t)in * sizeof(float));
        float *tmp = malloc((size_t)in * sizeof(float));
        uint8_t *alt = malloc((size_t)in);
        la_group *G = malloc((size_t)(ng > 0 ? ng : 1) * sizeof(la_group));
        if (!score || !tmp || !alt || !G) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t r = 0; r < out; r++) {
            if (!score || !tmp || !alt || !G) continue;
            uint8_t *m = mask + r * in;
            const float *wr = w ? w + r * in : NULL;
            const float *fr = fisher ? fisher + r * in : NULL;
            uint64_t seed = row_seed(o->seed, r);
            if (crit == CQ_SEL_RANDOM) {
                random_mask(m, in, k, seed);
            } else if (crit == CQ_SEL_IMPACT) {
                topk_mask(m, fr, in, k, tmp, seed);
            } else if (crit == CQ_SEL_MAGNITUDE) {
                for (int64_t j = 0; j < in; j++) score[j] = fabsf(wr[j]);
                topk_mask(m, score, in, k, tmp, seed);
            } else { /* loss-aware */
                la_eval_row(G, wr, fr, m, in, o->bits, o->group, ng);
                for (int64_t t = 0; t < k; t++) {
                    int64_t gi = la_best_group(G, ng);
                    if (gi < 0) break;
                    la_take(G, gi, wr, fr, m, in, o->bits, o->group);
                }
                double lg = la_row_loss(G, ng);
                memset(alt, 0, (size_t)in);
                if (fr) topk_mask(alt, fr, in, k, tmp, seed);
                else {
                    for (int64_t j = 0; j < in; j++) score[j] = fabsf(wr[j]);
                    topk_mask(alt, score, in, k, tmp, seed);
                }
                la_eval_row(G, wr, fr, alt, in, o->bits, o->group, ng);
                if (la_row_loss(G, ng) < lg) memcpy(m, alt, (size_t)in);
            }
        }
        free(score);
        free(tmp);
        free(alt);
        free(G);
    }
    if (oom) {
        cq_error("select: out of memory for row buffers (in = %lld)", (long long)in);
        return CQ_ENOMEM;
    }
    return 0;
}

/* Global loss-aware greedy over the whole matrix (fraction mode). */
static int select_loss_aware_global(uint8_t *mask, const float *w, const float *fisher,
                                    int64_t out, int64_t in, int64_t total,
                                    const cq_select_opts *o)
{
    int64_t ng = cq_quant_ngroups(in, o->group), n = out * in;
    la_group *G = malloc((size_t)(out * ng > 0 ? out * ng : 1) * sizeof(la_group));
    la_heap h = { malloc((size_t)(out > 0 ? out : 1) * sizeof(int64_t)),
                  malloc((size_t)(out > 0 ? out : 1) * sizeof(double)), 0 };
    uint8_t *alt = calloc((size_t)n + 1, 1);
    float *score = malloc((size_t)n * sizeof(float) + 1);
    float *tmp = malloc((size_t)n * sizeof(float) + 1);
    int rc = 0;
    if (!G || !h.row || !h.key || !alt || !score || !tmp) {
        cq_error("select: out of memory for loss-aware selection of %lld x %lld",
                 (long long)out, (long long)in);
        rc = CQ_ENOMEM;
        goto done;
    }
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t r = 0; r < out; r++)
        la_eval_row(G + r * ng, w + r * in, fisher ? fisher + r * in : NULL, mask + r * in,
                    in, o->bits, o->group, ng);
    for (int64_t r = 0; r < out; r++) {
        int64_t gi = la_best_group(G + r * ng, ng);
        if (gi >= 0) la_push(&h, r, G[r * ng + gi].gain);
    }
    for (int64_t t = 0; t < total && h.n > 0; t++) {
        int64_t r = h.row[0];
        la_pop(&h);
        la_group *Gr = G + r * ng;
        const float *fr = fisher ? fisher + r * in : NULL;
        int64_t gi = la_best_group(Gr, ng);
        la_take(Gr, gi, w + r * in, fr, mask + r * in, in, o->bits, o->group);
        gi = la_best_group(Gr, ng);
        if (gi >= 0) la_push(&h, r, Gr[gi].gain);
    }
    double lg = 0.0, li = 0.0;
    for (int64_t r = 0; r < out; r++) lg += la_row_loss(G + r * ng, ng);
    /* the impact selection of the same size, and its loss */
    if (fisher) memcpy(score, fisher, (size_t)n * sizeof(float));
    else
        for (int64_t i = 0; i < n; i++) score[i] = fabsf(w[i]);
    topk_mask(alt, score, n, total, tmp, o->seed);
#pragma omp parallel for schedule(dynamic, 4) reduction(+ : li)
    for (int64_t r = 0; r < out; r++) {
        la_eval_row(G + r * ng, w + r * in, fisher ? fisher + r * in : NULL, alt + r * in,
                    in, o->bits, o->group, ng);
        li += la_row_loss(G + r * ng, ng);
    }
    if (li < lg) memcpy(mask, alt, (size_t)n);
done:
    free(G);
    free(h.row);
    free(h.key);
    free(alt);
    free(score);
    free(tmp);
    return rc;
}

static const char *crit_name(int c)
{
    switch (c) {
    case CQ_SEL_IMPACT: return "impact";
    case CQ_SEL_MAGNITUDE: return "magnitude";
    case CQ_SEL_RANDOM: return "random";
    case CQ_SEL_LOSS_AWARE: return "loss-aware";
    default: return "?";
    }
}

int cq_select_cherries(uint8_t *mask, const float *w, const float *fisher, int64_t out,
                       int64_t in, const cq_select_opts *opts)
{
    CQ_CHECK_ARG(mask && opts, CQ_EINVAL);
    CQ_CHECK_ARG(out >= 0 && in >= 0, CQ_EINVAL);
    CQ_CHECK_ARG(out == 0 || in <= INT64_MAX / out, CQ_EINVAL);
    int crit = opts->criterion;
    if (crit < CQ_SEL_IMPACT || crit > CQ_SEL_LOSS_AWARE) {
        cq_error("select: unknown criterion %d", crit);
        return CQ_EINVAL;
    }
    if (crit == CQ_SEL_IMPACT && !fisher) {
        cq_error("select: impact selection needs the Fisher diagonal (fisher is NULL)");
        return CQ_EINVAL;
    }
    if ((crit == CQ_SEL_MAGNITUDE || crit == CQ_SEL_LOSS_AWARE) && !w) {
        cq_error("select: %s selection needs the weights (w is NULL)", crit_name(crit));
        return CQ_EINVAL;
    }
    if (crit == CQ_SEL_LOSS_AWARE && cq_quant_check(opts->bits, opts->group)) {
        cq_error("select: loss-aware selection needs the quantization grid (bits, group)");
        return CQ_EINVAL;
    }
    int64_t n = out * in;
    int rc;
    if ((crit == CQ_SEL_IMPACT || crit == CQ_SEL_LOSS_AWARE) && fisher &&
        (rc = check_finite(fisher, n, "fisher")))
        return rc;
    if (crit != CQ_SEL_RANDOM && crit != CQ_SEL_IMPACT && (rc = check_finite(w, n, "w")))
        return rc;
    memset(mask, 0, (size_t)n);
    if (n == 0) return 0;

    if (opts->k_rule == CQ_K_FRACTION) {
        if (!(opts->fraction >= 0.0 && opts->fraction <= 1.0)) {
            cq_error("select: fraction %g outside [0, 1]", opts->fraction);
            return CQ_EINVAL;
        }
        int64_t total = (int64_t)llround(opts->fraction * (double)n);
        total = total > n ? n : total;
        cq_debug("select: %s, top %g of %lld x %lld = %lld cherries", crit_name(crit),
                 opts->fraction, (long long)out, (long long)in, (long long)total);
        if (crit == CQ_SEL_RANDOM) {
            random_mask(mask, n, total, row_seed(opts->seed, -1));
            return 0;
        }
        if (crit == CQ_SEL_LOSS_AWARE)
            return select_loss_aware_global(mask, w, fisher, out, in, total, opts);
        float *score = malloc((size_t)n * sizeof(float));
        float *tmp = malloc((size_t)n * sizeof(float));
        if (!score || !tmp) {
            free(score);
            free(tmp);
            cq_error("select: out of memory for %lld scores", (long long)n);
            return CQ_ENOMEM;
        }
        if (crit == CQ_SEL_IMPACT) memcpy(score, fisher, (size_t)n * sizeof(float));
        else
            for (int64_t i = 0; i < n; i++) score[i] = fabsf(w[i]);
        topk_mask(mask, score, n, total, tmp, opts->seed);
        free(score);
        free(tmp);
        return 0;
    }

    int64_t k = cq_cherry_k(in, opts->k_rule, opts->k);
    if (k < 0) return CQ_EINVAL;
    cq_debug("select: %s, %lld cherries per row of %lld", crit_name(crit), (long long)k,
             (long long)in);
    if (k == 0) return 0;
    return select_rows(mask, w, fisher, out, in, k, opts);
}
