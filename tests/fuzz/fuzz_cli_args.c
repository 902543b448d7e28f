/* Fuzz target: the CLI's argument parser (tools/cli.c): cli_parse with a flag
 * table that has every flag type (int, float, string, bool) and every range
 * kind (any, > 0, >= 0, [lo, hi]) as the commands use them, the number
 * parsers behind it, --help printing, cli_check_backend_name and
 * pipe_matrix_name (tools/pipe_cli.c).
 *
 * Input: the arguments, separated by NUL bytes (at most 64; argv[0] is the
 * command name). Properties checked besides "no crash, no UB, no leak":
 * the result is 0, CLI_HELP or CQ_EXIT_USAGE; on 0 every flag given holds a
 * value in its range, a string flag points into argv and is not empty, a
 * flag not given keeps its default. stdout and stderr go to /dev/null
 * (CQ_FUZZ_VERBOSE=1 keeps them); libFuzzer's own output is unaffected. */
#include <math.h>

#include "cli.h"
#include "fuzz_common.h"
#include "pipe_cli.h"

#define MAXARG 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    static int quiet = -1;
    if (quiet < 0) {
        quiet = getenv("CQ_FUZZ_VERBOSE") == NULL;
        if (quiet) {
            FILE *null = fopen("/dev/null", "w");
            if (null) stdout = stderr = null;
        }
    }
    /* NUL-terminated copies of the pieces: the parser keeps pointers into
     * argv, so they live until the checks are done */
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    char *argv[MAXARG + 2];
    int argc = 0;
    argv[argc++] = "quantize";
    for (size_t i = 0; i <= size && argc < MAXARG + 1;) {
        argv[argc++] = buf + i;
        size_t l = strlen(buf + i);
        i += l + 1;
    }
    argv[argc] = NULL;

    int64_t bits = 3, samples = 128, seed = 0, device = -1;
    double frac = 0, lr = 0, warm = 0.05, val = 0.1;
    const char *model = NULL, *out = "default", *backend = "cpu";
    bool resume = false, json = false;
    cli_flag fl[] = {
        { "model", CLI_STR, &model, "model", .metavar = "PATH" },
        { "out", CLI_STR, &out, "out" },
        { "backend", CLI_STR, &backend, "backend" },
        { "bits", CLI_INT, &bits, "bits", CLI_ANY },
        { "samples", CLI_INT, &samples, "samples", CLI_POS },
        { "seed", CLI_INT, &seed, "seed", CLI_NONNEG },
        { "device", CLI_INT, &device, "device", CLI_RANGE, -1, 1024 },
        { "frac", CLI_FLOAT, &frac, "frac", CLI_RANGE, 0, 1 },
        { "lr", CLI_FLOAT, &lr, "lr", CLI_NONNEG },
        { "warmup-frac", CLI_FLOAT, &warm, "warmup", CLI_POS },
        { "val", CLI_FLOAT, &val, "val", CLI_ANY },
        { "resume", CLI_BOOL, &resume, "resume" },
        { "json", CLI_BOOL, &json, "json" },
    };
    const int n = (int)(sizeof fl / sizeof fl[0]);
    int r = cli_parse("quantize", "--model PATH [options]", "about", fl, n, argc, argv);
    if (r != 0 && r != CLI_HELP && r != CQ_EXIT_USAGE) abort();
    if (r == 0) {
        for (int i = 0; i < n; i++) {
            const cli_flag *f = &fl[i];
            if (!f->set) continue;
            if (f->type == CLI_INT || f->type == CLI_FLOAT) {
                double v = f->type == CLI_INT ? (double)*(int64_t *)f->dst : *(double *)f->dst;
                if (f->type == CLI_FLOAT && !isfinite(v)) abort();
                if (f->range == CLI_POS && !(v > 0)) abort();
                if (f->range == CLI_NONNEG && !(v >= 0)) abort();
                if (f->range == CLI_RANGE && !(v >= f->lo && v <= f->hi)) abort();
            } else if (f->type == CLI_STR) {
                const char *s = *(const char **)f->dst;
                if (!s || !*s || s < buf || s > buf + size) abort();
                fuzz_touch(s, strlen(s));
            }
        }
        if (!fl[0].set && model) abort();
        if (!fl[1].set && strcmp(out, "default")) abort();
        if (!fl[3].set && bits != 3) abort();
        if (!fl[11].set && resume) abort();
        cli_check_backend_name("quantize", "--model PATH", backend);
        if (model) {
            char name[128];
            if (pipe_matrix_name(model, name, sizeof name) == 0 && strncmp(name, "model.", 6)) abort();
        }
    }
    free(buf);
    return 0;
}
