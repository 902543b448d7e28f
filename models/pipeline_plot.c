/* cherryq: the paper's two heterogeneity figures as standalone SVG files,
 * drawn here (SVG is text; no plotting library). Written atomically. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cq_io.h"
#include "pipeline.h"

/* growable text buffer */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int err;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) CQ_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->err) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int k = vsnprintf(b->p ? b->p + b->n : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->err = 1;
            return;
        }
        if ((size_t)k < room) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->err = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

/* text content with XML special characters escaped */
static void sb_text(sbuf *b, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '&') sb_printf(b, "&amp;");
        else if (*s == '<') sb_printf(b, "&lt;");
        else if (*s == '>') sb_printf(b, "&gt;");
        else if (*s == '"') sb_printf(b, "&quot;");
        else if ((unsigned char)*s >= 0x20) sb_printf(b, "%c", *s);
    }
}

/* plot frame: W x H canvas, plot area [X0, X1] x [Y0, Y1] (pixels) */
enum { W = 900, H = 520, X0 = 90, X1 = 870, Y0 = 50, Y1 = 450 };

typedef struct axis {
    double lo, hi;      /* data range (x: linear; y: log10) */
} axis;

static double px_x(const axis *a, double v)
{
    return X0 + (X1 - X0) * (a->hi > a->lo ? (v - a->lo) / (a->hi - a->lo) : 0.5);
}

static double px_y(const axis *a, double v)
{
    double lv = log10(v);
    return Y1 - (Y1 - Y0) * (a->hi > a->lo ? (lv - a->lo) / (a->hi - a->lo) : 0.5);
}

static void begin(sbuf *b, const char *title, const char *xlabel, const char *ylabel)
{
    sb_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    sb_printf(b,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
              "font-family=\"sans-serif\" font-size=\"13\">\n",
              W, H, W, H);
    sb_printf(b, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    sb_printf(b, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">", W / 2);
    sb_text(b, title);
    sb_printf(b, "</text>\n");
    sb_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (X0 + X1) / 2, H - 20);
    sb_text(b, xlabel);
    sb_printf(b, "</text>\n");
    sb_printf(b, "<text x=\"22\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 22 %d)\">", (Y0 + Y1) / 2,
              (Y0 + Y1) / 2);
    sb_text(b, ylabel);
    sb_printf(b, "</text>\n");
}

/* frame, x ticks (linear, nx of them) and decade ticks on a log y axis */
static void axes(sbuf *b, const axis *ax, const axis *ay, int nx, int integer_x)
{
    sb_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"black\"/>\n", X0, Y0,
              X1 - X0, Y1 - Y0);
    int dec = (int)(ay->hi - ay->lo), step = dec > 12 ? (dec + 11) / 12 : 1;
    for (int e = (int)ay->lo; e <= (int)ay->hi; e += step) {
        double y = px_y(ay, pow(10.0, e));
        sb_printf(b, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"#dddddd\"/>\n", X0, y, X1, y);
        sb_printf(b, "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\">1e%d</text>\n", X0 - 6, y + 4, e);
        /* few decades: intermediate ticks at 2 and 5 */
        for (int k = 0; dec <= 3 && e < (int)ay->hi && k < 2; k++) {
            double v = (k ? 5.0 : 2.0) * pow(10.0, e), yy = px_y(ay, v);
            sb_printf(b, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"#eeeeee\"/>\n", X0, yy, X1,
                      yy);
            sb_printf(b, "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\">%de%d</text>\n", X0 - 6, yy + 4, k ? 5 : 2,
                      e);
        }
    }
    for (int i = 0; i <= nx; i++) {
        double v = ax->lo + (ax->hi - ax->lo) * i / nx;
        if (integer_x) v = floor(v + 0.5);
        double x = px_x(ax, v);
        sb_printf(b, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" stroke=\"black\"/>\n", x, Y1, x, Y1 + 5);
        sb_printf(b, "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", x, Y1 + 20, v);
    }
}

static int finish(sbuf *b, const char *path)
{
    sb_printf(b, "</svg>\n");
    if (b->err) {
        free(b->p);
        return CQ_ENOMEM;
    }
    int r = cq_write_file_atomic(path, b->p, b->n);
    free(b->p);
    return r;
}

/* log10 range over positive finite values, widened to whole decades */
static int log_range(axis *a, double mn, double mx)
{
    if (!(mn > 0) || !isfinite(mx) || mx <= 0) return CQ_EINVAL;
    a->lo = floor(log10(mn));
    a->hi = ceil(log10(mx));
    if (a->hi <= a->lo) a->hi = a->lo + 1;
    return CQ_OK;
}

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int cq_svg_impact_scatter(const char *path, const float *F, int64_t n, int64_t nsample, uint64_t seed,
                          const char *title)
{
    CQ_CHECK_ARG(path && F && n > 0 && nsample > 0, CQ_EINVAL);
    int64_t ns = nsample < n ? nsample : n;
    int64_t *idx = malloc((size_t)ns * sizeof *idx);
    if (!idx) return CQ_ENOMEM;
    uint64_t s = seed ^ 0x5CA77E2ull;
    if (ns == n)
        for (int64_t i = 0; i < n; i++) idx[i] = i;
    else
        for (int64_t i = 0; i < ns; i++) idx[i] = (int64_t)(rng(&s) % (uint64_t)n);
    qsort(idx, (size_t)ns, sizeof *idx, cmp_i64);
    double mn = INFINITY, mx = 0;
    int64_t nzero = 0;
    for (int64_t i = 0; i < ns; i++) {
        double v = F[idx[i]];
        if (v > 0 && isfinite(v)) {
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        } else nzero++;
    }
    axis ax = { 0, (double)(n > 1 ? n - 1 : 1) }, ay;
    if (log_range(&ay, mn, mx)) {
        cq_error("%s: no positive impact value to plot", path);
        free(idx);
        return CQ_EINVAL;
    }
    sbuf b = { 0 };
    char xl[128];
    snprintf(xl, sizeof xl, "parameter index (%lld of %lld sampled%s)", (long long)ns, (long long)n,
             nzero ? ", zeros omitted" : "");
    begin(&b, title ? title : "impact of sampled parameters", xl, "impact (Fisher diagonal, log scale)");
    axes(&b, &ax, &ay, 8, 1);
    sb_printf(&b, "<g fill=\"#1f77b4\" fill-opacity=\"0.6\">\n");
    for (int64_t i = 0; i < ns; i++) {
        double v = F[idx[i]];
        if (!(v > 0) || !isfinite(v)) continue;
        sb_printf(&b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2\"/>\n", px_x(&ax, (double)idx[i]), px_y(&ay, v));
    }
    sb_printf(&b, "</g>\n");
    free(idx);
    return finish(&b, path);
}

int cq_svg_hetero_scores(const char *path, const cq_hetero *rows, int n, const char *title)
{
    CQ_CHECK_ARG(path && rows && n > 0, CQ_EINVAL);
    double mn = INFINITY, mx = 0;
    for (int i = 0; i < n; i++) {
        double v[2] = { rows[i].impact, rows[i].magnitude };
        for (int k = 0; k < 2; k++)
            if (v[k] > 0 && isfinite(v[k])) {
                mn = v[k] < mn ? v[k] : mn;
                mx = v[k] > mx ? v[k] : mx;
            }
    }
    axis ax = { 0, (double)(n > 1 ? n - 1 : 1) }, ay;
    if (log_range(&ay, mn, mx)) {
        cq_error("%s: no positive score to plot", path);
        return CQ_EINVAL;
    }
    if (ay.lo > 0) ay.lo = 0; /* keep 1 (no heterogeneity) in view */
    sbuf b = { 0 };
    begin(&b, title ? title : "heterogeneity scores per weight matrix", "weight matrix index (layer * 7 + projection)",
          "score (log scale)");
    axes(&b, &ax, &ay, n - 1 < 10 ? (n > 1 ? n - 1 : 1) : 10, 1);
    const char *col[2] = { "#d62728", "#1f77b4" };
    for (int k = 0; k < 2; k++) {
        sb_printf(&b, "<g fill=\"%s\">\n", col[k]);
        for (int i = 0; i < n; i++) {
            double v = k == 0 ? rows[i].impact : rows[i].magnitude;
            if (!(v > 0) || !isfinite(v)) continue;
            double x = px_x(&ax, (double)i), y = px_y(&ay, v);
            if (k == 0) sb_printf(&b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\"/>\n", x, y);
            else sb_printf(&b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"6\" height=\"6\"/>\n", x - 3, y - 3);
        }
        sb_printf(&b, "</g>\n");
    }
    /* legend */
    sb_printf(&b, "<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"%s\"/>\n", X0 + 20, Y0 + 18, col[0]);
    sb_printf(&b, "<text x=\"%d\" y=\"%d\">impact score</text>\n", X0 + 32, Y0 + 22);
    sb_printf(&b, "<rect x=\"%d\" y=\"%d\" width=\"7\" height=\"7\" fill=\"%s\"/>\n", X0 + 16, Y0 + 34, col[1]);
    sb_printf(&b, "<text x=\"%d\" y=\"%d\">magnitude score</text>\n", X0 + 32, Y0 + 42);
    return finish(&b, path);
}
