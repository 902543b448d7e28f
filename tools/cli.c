/* cherryq CLI helpers: flags, numbers, backend, corpus, tokenizer, progress. */
#include <cblas.h>
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cq_io.h"
#include "evalset.h"
#include "gguf.h"

/* ------------------------------------------------------------ flags */

static const char *range_text(cli_range r, double lo, double hi, bool is_int, char *buf, size_t n)
{
    const char *what = is_int ? "an integer" : "a number";
    switch (r) {
    case CLI_POS: snprintf(buf, n, "%s", is_int ? "a positive integer" : "a positive number"); break;
    case CLI_NONNEG: snprintf(buf, n, "%s", is_int ? "a non-negative integer" : "a non-negative number"); break;
    case CLI_RANGE: snprintf(buf, n, "%s in [%g, %g]", what, lo, hi); break;
    default: snprintf(buf, n, "%s", what); break;
    }
    return buf;
}

static bool in_range(double v, cli_range r, double lo, double hi)
{
    switch (r) {
    case CLI_POS: return v > 0;
    case CLI_NONNEG: return v >= 0;
    case CLI_RANGE: return v >= lo && v <= hi;
    default: return true;
    }
}

int cli_parse_int(const char *flag, const char *s, cli_range range, double lo, double hi, int64_t *out)
{
    char buf[96];
    char *end = NULL;
    errno = 0;
    long long v = s && *s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || !in_range((double)v, range, lo, hi)) {
        fprintf(stderr, "cherryq: %s: expected %s, got '%s'\n", flag, range_text(range, lo, hi, true, buf, sizeof buf),
                s ? s : "");
        return CQ_EXIT_USAGE;
    }
    *out = v;
    return 0;
}

int cli_parse_float(const char *flag, const char *s, cli_range range, double lo, double hi, double *out)
{
    char buf[96];
    char *end = NULL;
    errno = 0;
    double v = s && *s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !isfinite(v) || !in_range(v, range, lo, hi)) {
        fprintf(stderr, "cherryq: %s: expected %s, got '%s'\n", flag,
                range_text(range, lo, hi, false, buf, sizeof buf), s ? s : "");
        return CQ_EXIT_USAGE;
    }
    *out = v;
    return 0;
}

static void print_usage_line(FILE *f, const char *cmd, const char *usage_tail)
{
    fprintf(f, "usage: cherryq %s %s\n", cmd, usage_tail ? usage_tail : "[options]");
}

int cli_usage_error(const char *cmd, const char *usage_tail, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cherryq %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    print_usage_line(stderr, cmd, usage_tail);
    fprintf(stderr, "(cherryq %s --help lists the options)\n", cmd);
    return CQ_EXIT_USAGE;
}

static void print_help(const char *cmd, const char *usage_tail, const char *about, const cli_flag *fl, int n)
{
    print_usage_line(stdout, cmd, usage_tail);
    if (about) printf("\n%s\n", about);
    printf("\noptions:\n");
    for (int i = 0; i < n; i++) {
        char lhs[64], def[128] = "";
        const char *mv = fl[i].metavar;
        switch (fl[i].type) {
        case CLI_INT:
            if (!mv) mv = "N";
            snprintf(def, sizeof def, "%lld", (long long)*(int64_t *)fl[i].dst);
            break;
        case CLI_FLOAT:
            if (!mv) mv = "X";
            snprintf(def, sizeof def, "%g", *(double *)fl[i].dst);
            break;
        case CLI_STR:
            if (!mv) mv = "S";
            if (*(const char **)fl[i].dst) snprintf(def, sizeof def, "%s", *(const char **)fl[i].dst);
            break;
        case CLI_BOOL: mv = ""; break;
        }
        snprintf(lhs, sizeof lhs, "--%s%s%s", fl[i].name, *mv ? " " : "", mv);
        printf("  %-24s %s", lhs, fl[i].help ? fl[i].help : "");
        if (def[0]) printf(" (default: %s)", def);
        printf("\n");
    }
    printf("  %-24s %s\n", "--help", "show this help");
}

int cli_parse(const char *cmd, const char *usage_tail, const char *about, cli_flag *fl, int n, int argc, char **argv)
{
    for (int i = 0; i < n; i++) fl[i].set = false;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            print_help(cmd, usage_tail, about, fl, n);
            return CLI_HELP;
        }
        if (strncmp(arg, "--", 2) != 0 || !arg[2])
            return cli_usage_error(cmd, usage_tail, "unexpected argument '%s'", arg);
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        cli_flag *f = NULL;
        for (int i = 0; i < n; i++)
            if (strlen(fl[i].name) == nl && !strncmp(fl[i].name, name, nl)) f = &fl[i];
        if (!f) return cli_usage_error(cmd, usage_tail, "unknown option '--%.*s'", (int)nl, name);
        char flag[80];
        snprintf(flag, sizeof flag, "--%s", f->name);
        if (f->type == CLI_BOOL) {
            if (eq) return cli_usage_error(cmd, usage_tail, "%s takes no value", flag);
            *(bool *)f->dst = true;
            f->set = true;
            continue;
        }
        const char *val;
        if (eq) val = eq + 1;
        else if (a + 1 < argc) val = argv[++a];
        else return cli_usage_error(cmd, usage_tail, "%s needs a value", flag);
        int r = 0;
        switch (f->type) {
        case CLI_INT: r = cli_parse_int(flag, val, f->range, f->lo, f->hi, (int64_t *)f->dst); break;
        case CLI_FLOAT: r = cli_parse_float(flag, val, f->range, f->lo, f->hi, (double *)f->dst); break;
        case CLI_STR:
            if (!*val) return cli_usage_error(cmd, usage_tail, "%s: empty value", flag);
            *(const char **)f->dst = val;
            break;
        default: break;
        }
        if (r) {
            print_usage_line(stderr, cmd, usage_tail);
            return CQ_EXIT_USAGE;
        }
        f->set = true;
    }
    return 0;
}

/* ------------------------------------------------------------ runtime */

int cli_exit_code(int status) { return status ? CQ_EXIT_RUNTIME : CQ_EXIT_OK; }

void cli_set_threads(int64_t n)
{
    if (n < 0) n = 0;
    if (n == 0) n = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    cq_set_num_threads((int)n);
    openblas_set_num_threads((int)n);
}

int cli_check_backend_name(const char *cmd, const char *usage_tail, const char *name)
{
    if (!strcmp(name, "cpu") || !strcmp(name, "vulkan") || !strcmp(name, "cuda") || !strcmp(name, "auto")) return 0;
    return cli_usage_error(cmd, usage_tail, "--backend: expected cpu, vulkan, cuda or auto, got '%s'", name);
}

int cli_backend_open(const char *name, int64_t device, cq_backend **out)
{
    *out = NULL;
    if (strcmp(name, "cpu") && strcmp(name, "vulkan") && strcmp(name, "cuda") && strcmp(name, "auto")) {
        fprintf(stderr, "cherryq: --backend: expected cpu, vulkan, cuda or auto, got '%s'\n", name);
        return CQ_EXIT_USAGE;
    }
    int r = cq_backend_create(out, name, (int)device);
    if (r) {
        fprintf(stderr, "cherryq: cannot open backend '%s'%s: %s\n", name, device >= 0 ? " (device given)" : "",
                cq_strerror(r));
        if (strcmp(name, "cpu")) fprintf(stderr, "cherryq: try --backend cpu\n");
        return CQ_EXIT_RUNTIME;
    }
    fprintf(stderr, "cherryq: backend %s, device %d: %s\n", (*out)->name, (*out)->device_index, (*out)->device);
    return 0;
}

/* ------------------------------------------------------------ corpus */

bool cli_ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Calls fn(user, text, len) with each JSONL record's "text", in order
 * (blank lines skipped); a bad line is printed with its number. 0, fn's
 * non-zero return, or CQ_EXIT_RUNTIME. */
typedef int (*jsonl_fn)(void *user, const char *text, size_t len);

static int jsonl_each(const char *path, const char *data, size_t size, jsonl_fn fn, void *user)
{
    size_t pos = 0, line = 0;
    while (pos < size) {
        line++;
        const char *nl = memchr(data + pos, '\n', size - pos);
        size_t ll = nl ? (size_t)(nl - (data + pos)) : size - pos;
        const char *ls = data + pos;
        pos += ll + (nl ? 1 : 0);
        size_t k = 0;
        while (k < ll && isspace((unsigned char)ls[k])) k++;
        if (k == ll) continue; /* blank line */
        cJSON *j = cJSON_ParseWithLength(ls, ll);
        if (!j || !cJSON_IsObject(j)) {
            fprintf(stderr, "cherryq: %s:%zu: not a JSON object\n", path, line);
            cJSON_Delete(j);
            return CQ_EXIT_RUNTIME;
        }
        cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        if (!cJSON_IsString(t) || !t->valuestring) {
            fprintf(stderr, "cherryq: %s:%zu: the record has no string field \"text\"\n", path, line);
            cJSON_Delete(j);
            return CQ_EXIT_RUNTIME;
        }
        int r = fn(user, t->valuestring, strlen(t->valuestring));
        cJSON_Delete(j);
        if (r) return r;
    }
    return 0;
}

typedef struct {
    char *out;
    size_t n, cap, records;
} jsonl_join;

static int join_record(void *user, const char *text, size_t tl)
{
    jsonl_join *j = user;
    size_t need = j->n + tl + 3;
    if (need > j->cap) {
        size_t cap = j->cap;
        while (cap < need) cap *= 2;
        char *o2 = realloc(j->out, cap);
        if (!o2) {
            fprintf(stderr, "cherryq: out of memory reading the corpus\n");
            return CQ_EXIT_RUNTIME;
        }
        j->out = o2;
        j->cap = cap;
    }
    if (j->records++) {
        j->out[j->n++] = '\n';
        j->out[j->n++] = '\n';
    }
    memcpy(j->out + j->n, text, tl);
    j->n += tl;
    return 0;
}

static int load_jsonl(const char *path, const char *data, size_t size, char **text, size_t *len)
{
    jsonl_join j = { .cap = size + 16 };
    if (!(j.out = malloc(j.cap))) return CQ_EXIT_RUNTIME;
    int r = jsonl_each(path, data, size, join_record, &j);
    if (r) {
        free(j.out);
        return r;
    }
    j.out[j.n] = 0;
    *text = j.out;
    *len = j.n;
    return 0;
}

typedef struct {
    char **recs;
    size_t n, cap;
} jsonl_list;

static int list_record(void *user, const char *text, size_t tl)
{
    jsonl_list *l = user;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 1024;
        char **r2 = realloc(l->recs, cap * sizeof *r2);
        if (!r2) {
            fprintf(stderr, "cherryq: out of memory reading the records\n");
            return CQ_EXIT_RUNTIME;
        }
        l->recs = r2;
        l->cap = cap;
    }
    if (!(l->recs[l->n] = malloc(tl + 1))) {
        fprintf(stderr, "cherryq: out of memory reading the records\n");
        return CQ_EXIT_RUNTIME;
    }
    memcpy(l->recs[l->n], text, tl + 1);
    l->n++;
    return 0;
}

void cli_records_free(char **recs, size_t n)
{
    for (size_t i = 0; recs && i < n; i++) free(recs[i]);
    free(recs);
}

/* Maps a corpus file: 0 with m open and *is_jsonl set, or an error printed
 * naming the path (missing, a directory, unreadable, only white space). */
static int corpus_map(const char *path, cq_mmap *m, bool *is_jsonl)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "cherryq: %s: %s\n", path, strerror(errno));
        return CQ_EXIT_RUNTIME;
    }
    if (S_ISDIR(st.st_mode)) {
        fprintf(stderr, "cherryq: %s: is a directory, expected a text or JSONL file\n", path);
        return CQ_EXIT_RUNTIME;
    }
    if (cq_mmap_open(m, path)) {
        fprintf(stderr, "cherryq: %s: cannot read the corpus\n", path);
        return CQ_EXIT_RUNTIME;
    }
    const char *d = (const char *)m->data;
    size_t k = 0;
    while (k < m->size && isspace((unsigned char)d[k])) k++;
    if (k == m->size) {
        fprintf(stderr, "cherryq: %s: the corpus is empty\n", path);
        cq_mmap_close(m);
        return CQ_EXIT_RUNTIME;
    }
    *is_jsonl = cli_ends_with(path, ".jsonl") || d[k] == '{';
    return 0;
}

int cli_load_corpus(const char *path, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    cq_mmap m;
    bool jsonl;
    int r = corpus_map(path, &m, &jsonl);
    if (r) return r;
    const char *d = (const char *)m.data;
    if (jsonl) {
        r = load_jsonl(path, d, m.size, text, len);
        if (!r && *len == 0) {
            fprintf(stderr, "cherryq: %s: the corpus is empty (every \"text\" is empty)\n", path);
            free(*text);
            *text = NULL;
            r = CQ_EXIT_RUNTIME;
        }
    } else {
        *text = malloc(m.size + 1);
        if (!*text) r = CQ_EXIT_RUNTIME;
        else {
            memcpy(*text, d, m.size);
            (*text)[m.size] = 0;
            *len = m.size;
        }
    }
    cq_mmap_close(&m);
    return r;
}

int cli_load_records(const char *path, char ***recs, size_t *n)
{
    *recs = NULL;
    *n = 0;
    cq_mmap m;
    bool jsonl;
    int r = corpus_map(path, &m, &jsonl);
    if (r) return r;
    if (!jsonl) {
        fprintf(stderr, "cherryq: %s: expected JSONL records (one JSON object with a \"text\" field a line)\n",
                path);
        cq_mmap_close(&m);
        return CQ_EXIT_RUNTIME;
    }
    jsonl_list l = { 0 };
    r = jsonl_each(path, (const char *)m.data, m.size, list_record, &l);
    cq_mmap_close(&m);
    if (r) {
        cli_records_free(l.recs, l.n);
        return r;
    }
    *recs = l.recs;
    *n = l.n;
    return 0;
}

int cli_encode_lead(const cq_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n)
{
    const int32_t lead = cq_tokenizer_lead(tok);
    int r = cq_tokenizer_encode(tok, text, len, 0, ids, n);
    if (r || lead < 0) return r;
    int32_t *w = realloc(*ids, (*n + 1) * sizeof *w);
    if (!w) {
        free(*ids);
        *ids = NULL;
        *n = 0;
        return CQ_ENOMEM;
    }
    memmove(w + 1, w, *n * sizeof *w);
    w[0] = lead;
    *ids = w;
    (*n)++;
    return 0;
}

int cli_protocol(const char *cmd, const char *usage_tail, const char *protocol, bool *c4)
{
    *c4 = !strcmp(protocol, "c4");
    if (!*c4 && strcmp(protocol, "stream"))
        return cli_usage_error(cmd, usage_tail, "--protocol must be stream or c4 (got '%s')", protocol);
    return 0;
}

typedef struct {
    const cq_tokenizer *tok;
    char *const *recs;
} c4_records;

static int c4_record_tokens(void *user, size_t i, int32_t **ids, size_t *n)
{
    c4_records *c = user;
    return cli_encode_lead(c->tok, c->recs[i], strlen(c->recs[i]), ids, n);
}

int cli_c4_draw(const char *cmd, const cq_tokenizer *tok, const char *path, char *const *recs, size_t n_recs,
                int64_t seqlen, int64_t n, uint64_t seed, int32_t *out, size_t *n_tokenized)
{
    c4_records cr = { tok, recs };
    int r = cq_c4_windows(n_recs, c4_record_tokens, &cr, seqlen, n, seed, out, NULL, n_tokenized);
    if (r) {
        fprintf(stderr, "cherryq %s: %s: cannot draw the C4 windows: %s\n", cmd, path,
                r == CQ_EINVAL ? "no record has more than --seqlen tokens" : cq_strerror(r));
        return CQ_EXIT_RUNTIME;
    }
    return 0;
}

int cli_c4_calib(const char *cmd, const cq_tokenizer *tok, const char *path, char *const *recs, size_t n_recs,
                 int64_t samples, int64_t seqlen, uint64_t seed, cq_calib *cal)
{
    memset(cal, 0, sizeof *cal);
    size_t cnt;
    if (!cq_mul_ok((size_t)samples, (size_t)seqlen, &cnt) || cnt > SIZE_MAX / sizeof(int32_t) ||
        !(cal->ids = malloc(cnt * sizeof(int32_t)))) {
        fprintf(stderr, "cherryq %s: %lld windows of %lld tokens: out of memory\n", cmd, (long long)samples,
                (long long)seqlen);
        return CQ_EXIT_RUNTIME;
    }
    /* a window of seqlen tokens is seqlen - 1 inputs and their targets, as
     * the reference's HF loss (labels = inputs) predicts it */
    cal->n = samples;
    cal->seqlen = seqlen - 1;
    size_t calls = 0;
    int r = cli_c4_draw(cmd, tok, path, recs, n_recs, seqlen, samples, seed, cal->ids, &calls);
    if (r) {
        cq_calib_free(cal);
        return r;
    }
    fprintf(stderr, "cherryq: calibration: %lld windows of %lld tokens drawn from %s as GPTQ's C4 protocol (seed "
                    "%llu; %zu of %zu records tokenized)\n",
            (long long)samples, (long long)seqlen, path, (unsigned long long)seed, calls, n_recs);
    return 0;
}

int cli_tokenize_file(const cq_tokenizer *tok, const char *path, bool lead, int32_t **ids, size_t *n)
{
    char *text = NULL;
    size_t len = 0;
    int r = cli_load_corpus(path, &text, &len);
    if (r) return r;
    r = lead ? cli_encode_lead(tok, text, len, ids, n) : cq_tokenizer_encode(tok, text, len, 0, ids, n);
    free(text);
    if (r) {
        fprintf(stderr, "cherryq: %s: tokenizing failed: %s\n", path, cq_strerror(r));
        return CQ_EXIT_RUNTIME;
    }
    if (*n == 0) {
        fprintf(stderr, "cherryq: %s: the corpus gives no tokens\n", path);
        free(*ids);
        *ids = NULL;
        return CQ_EXIT_RUNTIME;
    }
    return 0;
}

/* ------------------------------------------------------------ tokenizer */

int cli_load_tokenizer(const char *model_path, const char *tok_path, cq_tokenizer **out)
{
    *out = NULL;
    int r;
    if (tok_path) {
        r = cq_tokenizer_load_json(tok_path, out);
        if (r) {
            fprintf(stderr, "cherryq: %s: cannot load the tokenizer (%s)\n", tok_path, cq_strerror(r));
            return CQ_EXIT_RUNTIME;
        }
        return 0;
    }
    struct stat st;
    if (model_path && stat(model_path, &st) == 0 && S_ISREG(st.st_mode)) {
        if (cli_ends_with(model_path, ".gguf")) {
            r = cq_tokenizer_load_gguf(model_path, out);
            if (r) {
                fprintf(stderr,
                        "cherryq: no usable tokenizer in the GGUF metadata of %s (%s); pass --tokenizer "
                        "tokenizer.json\n",
                        model_path, cq_strerror(r));
                return CQ_EXIT_RUNTIME;
            }
            return 0;
        }
    }
    /* the model's directory: the path itself, or the directory of a file */
    char dir[4096];
    if (model_path && stat(model_path, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(dir, sizeof dir, "%s", model_path);
    else {
        snprintf(dir, sizeof dir, "%s", model_path ? model_path : ".");
        char *sl = strrchr(dir, '/');
        if (sl) *sl = 0;
        else snprintf(dir, sizeof dir, ".");
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (!cq_file_exists(path)) {
        fprintf(stderr, "cherryq: no tokenizer found for %s: expected %s (or pass --tokenizer)\n",
                model_path ? model_path : "(no model)", path);
        return CQ_EXIT_RUNTIME;
    }
    r = cq_tokenizer_load_json(path, out);
    if (r) {
        fprintf(stderr, "cherryq: %s: cannot load the tokenizer (%s)\n", path, cq_strerror(r));
        return CQ_EXIT_RUNTIME;
    }
    return 0;
}

/* ------------------------------------------------------------ progress */

const char *cli_fmt_duration(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
    return buf;
}

void cli_progress_init(cli_progress *p, const char *label, int64_t total, int64_t every)
{
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->every = every > 0 ? every : 10;
    p->tty = isatty(STDERR_FILENO) && getenv("CQ_NO_TTY") == NULL;
    p->t0 = cq_time_sec();
}

void cli_progress_update(cli_progress *p, int64_t step, double loss, double rate, double eta_s, const char *extra)
{
    if (!p->tty && step % p->every != 0 && step != p->total && step != 1) return;
    char eta[32], el[32], ls[48] = "", rs[32] = "- tok/s";
    if (isfinite(loss)) snprintf(ls, sizeof ls, "  loss %.4f", loss);
    const double since = cq_time_sec() - p->t0;
    /* a rate over the first few milliseconds says nothing (4e9 tok/s) */
    if (isfinite(rate) && rate >= 0 && (since >= 0.2 || step == p->total)) snprintf(rs, sizeof rs, "%.0f tok/s", rate);
    cli_fmt_duration(eta_s, eta, sizeof eta);
    cli_fmt_duration(since, el, sizeof el);
    if (p->tty) {
        fprintf(stderr, "\r%s %lld/%lld%s  %s  %s elapsed  ETA %s%s%s\033[K", p->label, (long long)step,
                (long long)p->total, ls, rs, el, eta, extra ? "  " : "", extra ? extra : "");
        p->dirty = true;
    } else {
        fprintf(stderr, "%s %lld/%lld%s  %s  %s elapsed  ETA %s%s%s\n", p->label, (long long)step,
                (long long)p->total, ls, rs, el, eta, extra ? "  " : "", extra ? extra : "");
    }
    fflush(stderr);
}

void cli_progress_note(cli_progress *p, const char *fmt, ...)
{
    if (p->dirty) {
        fputc('\n', stderr);
        p->dirty = false;
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

void cli_progress_done(cli_progress *p)
{
    if (p->dirty) fputc('\n', stderr);
    p->dirty = false;
    fflush(stderr);
}

void cli_abs_path(const char *path, char *out, size_t n)
{
    snprintf(out, n, "%s", path);
    char head[8192], rest[8192] = "";
    if (snprintf(head, sizeof head, "%s", path) >= (int)sizeof head) return;
    for (;;) {
        size_t L = strlen(head);
        while (L > 1 && head[L - 1] == '/') head[--L] = 0;
        char r[PATH_MAX];
        if (realpath(L ? head : ".", r)) {
            /* append the parts that do not exist yet, resolving . and .. */
            char res[8192];
            snprintf(res, sizeof res, "%s", r);
            char *save = NULL;
            for (char *tok = strtok_r(rest, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
                if (!strcmp(tok, ".")) continue;
                if (!strcmp(tok, "..")) {
                    char *sl = strrchr(res, '/');
                    if (sl && sl != res) *sl = 0;
                    else snprintf(res, sizeof res, "/");
                    continue;
                }
                const size_t k = strlen(res);
                snprintf(res + k, sizeof res - k, "%s%s", res[k - 1] == '/' ? "" : "/", tok);
            }
            snprintf(out, n, "%s", res);
            return;
        }
        if (!L || !strcmp(head, "/")) return;   /* not even the start resolves */
        /* move the last component of head to the front of rest */
        char *sl = strrchr(head, '/');
        char t[8192];
        snprintf(t, sizeof t, "%s%s%s", sl ? sl + 1 : head, rest[0] ? "/" : "", rest);
        snprintf(rest, sizeof rest, "%s", t);
        if (!sl) head[0] = 0;
        else if (sl == head) head[1] = 0;
        else *sl = 0;
    }
}
