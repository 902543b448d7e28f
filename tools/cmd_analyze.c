/* cherryq analyze: heterogeneity of every quantized matrix (CHERRYQ.md
 * section 2) as a table (stdout) and CSV, and the paper's two figures as SVG:
 * impacts of 4096 sampled weights of one matrix, and both scores of every
 * matrix against its index (log y). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cq_io.h"
#include "pipe_cli.h"

#define USAGE "--model PATH --impact FILE [--out-dir DIR] [--matrix NAME] [options]"

int cmd_analyze(int argc, char **argv)
{
    const char *model = NULL, *impact = NULL, *outdir = ".", *matrix = NULL, *backend = "cpu";
    int64_t nsample = 4096, seed = 0, threads = 0;
    cli_flag fl[] = {
        { "model", CLI_STR, &model, "full-precision model", .metavar = "PATH" },
        { "impact", CLI_STR, &impact, "impact file of this model (cherryq impact)", .metavar = "FILE" },
        { "out-dir", CLI_STR, &outdir, "where hetero.csv, impact_scatter.svg and hetero_scores.svg go",
          .metavar = "DIR" },
        { "matrix", CLI_STR, &matrix,
          "matrix of the scatter figure (default: layers.<n_layers/2>.self_attn.v_proj)", .metavar = "NAME" },
        { "samples", CLI_INT, &nsample, "weights sampled for the scatter", CLI_POS },
        { "seed", CLI_INT, &seed, "sampling seed", CLI_NONNEG },
        { "threads", CLI_INT, &threads, "CPU threads (0: all cores)", CLI_NONNEG },
        { "backend", CLI_STR, &backend, "cpu, vulkan, cuda or auto" },
    };
    int r = cli_parse("analyze", USAGE,
                      "Heterogeneity scores of every quantized matrix:\n"
                      "  impact score    = mean(F over the top 1%) / max(F over the bottom 99%)\n"
                      "  magnitude score = mean(|w| over the top 1%) / max(|w| over the bottom 99%)\n"
                      "printed as a table and written as CSV, plus the paper's figures 1 and 2 as SVG.",
                      fl, (int)(sizeof fl / sizeof fl[0]), argc, argv);
    if (r == CLI_HELP) return CQ_EXIT_OK;
    if (r) return r;
    if ((r = cli_check_backend_name("analyze", USAGE, backend))) return r;
    if (!model) return cli_usage_error("analyze", USAGE, "--model is required");
    if (!impact) return cli_usage_error("analyze", USAGE, "--impact is required");
    cli_set_threads(threads);
    cq_backend *be = NULL;
    cq_llama *m = NULL;
    cq_impact imp = { 0 };
    cq_hetero *rows = NULL;
    int n = 0, rc = CQ_EXIT_RUNTIME;
    char *csv = NULL;
    if ((r = cli_backend_open(backend, -1, &be))) goto done;
    if ((r = cq_llama_load(&m, model, be))) {
        fprintf(stderr, "cherryq analyze: %s: cannot load the model: %s\n", model, cq_strerror(r));
        goto done;
    }
    if ((r = cq_impact_load(&imp, impact, m))) {
        fprintf(stderr, "cherryq analyze: %s: cannot use this impact file: %s\n", impact, cq_strerror(r));
        goto done;
    }
    if ((r = cq_hetero_analyze(m, &imp, &rows, &n))) goto done;
    char mname[160], defm[96];
    snprintf(defm, sizeof defm, "layers.%lld.self_attn.v_proj", (long long)(m->cfg.n_layers / 2));
    if (pipe_matrix_name(matrix ? matrix : defm, mname, sizeof mname)) {
        rc = cli_usage_error("analyze", USAGE, "--matrix: bad name");
        goto done;
    }
    const cq_tensor *mw = cq_llama_param(m, mname);
    const float *F = mw && mw->ndim == 2 ? cq_impact_get(&imp, mname, mw->ne[0], mw->ne[1]) : NULL;
    if (!F) {
        fprintf(stderr, "cherryq analyze: --matrix %s: no such 2-D weight with an impact (e.g. %s)\n", mname, defm);
        rc = CQ_EXIT_USAGE;
        goto done;
    }
    if ((r = cq_mkdir_p(outdir))) goto done;
    /* table + CSV */
    size_t cap = (size_t)(n + 2) * 200, len = 0;
    csv = malloc(cap);
    if (!csv) {
        r = CQ_ENOMEM;
        goto done;
    }
    len += (size_t)snprintf(csv + len, cap - len, "index,layer,matrix,out,in,impact_score,magnitude_score\n");
    printf("%5s  %-34s  %11s  %11s  %8s\n", "index", "matrix", "impact", "magnitude", "ratio");
    double gi = 0, gm = 0;
    int above = 0;
    for (int i = 0; i < n; i++) {
        const cq_hetero *h = &rows[i];
        len += (size_t)snprintf(csv + len, cap - len, "%d,%lld,%s,%lld,%lld,%.6g,%.6g\n", i, (long long)h->layer,
                                h->name, (long long)h->out, (long long)h->in, h->impact, h->magnitude);
        printf("%5d  %-34s  %11.4g  %11.4g  %8.3g\n", i, h->name + 6, h->impact, h->magnitude,
               h->impact / h->magnitude);
        gi += log(h->impact);
        gm += log(h->magnitude);
        above += h->impact > h->magnitude;
    }
    printf("geometric mean: impact %.4g, magnitude %.4g; impact score above magnitude score in %d of %d matrices\n",
           exp(gi / n), exp(gm / n), above, n);
    char path[4096];
    snprintf(path, sizeof path, "%s/hetero.csv", outdir);
    if ((r = cq_write_file_atomic(path, csv, len))) goto done;
    snprintf(path, sizeof path, "%s/impact_scatter.svg", outdir);
    char title[256];
    snprintf(title, sizeof title, "impact of %lld sampled weights of %s", (long long)nsample, mname);
    if ((r = cq_svg_impact_scatter(path, F, mw->ne[0] * mw->ne[1], nsample, (uint64_t)seed, title))) goto done;
    snprintf(path, sizeof path, "%s/hetero_scores.svg", outdir);
    if ((r = cq_svg_hetero_scores(path, rows, n, "heterogeneity scores of every quantized matrix"))) goto done;
    printf("wrote %s/hetero.csv, %s/impact_scatter.svg, %s/hetero_scores.svg\n", outdir, outdir, outdir);
    rc = CQ_EXIT_OK;
done:
    if (r && r != CQ_EXIT_USAGE && rc == CQ_EXIT_RUNTIME && r < 0)
        fprintf(stderr, "cherryq analyze: failed: %s\n", cq_strerror(r));
    free(csv);
    free(rows);
    cq_impact_free(&imp);
    cq_llama_destroy(&m);
    cq_backend_destroy(&be);
    return rc;
}
