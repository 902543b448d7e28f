/* cherryq CLI: the command table and helpers shared by the subcommands.
 *
 * Adding a command: write tools/cmd_<name>.c with
 *     int cmd_<name>(int argc, char **argv);   (argv[0] is the command name)
 * add one X(...) line to CQ_COMMANDS below, and the file to tools/meson.build.
 *
 * Exit codes: CQ_EXIT_OK 0, CQ_EXIT_RUNTIME 1 (an operation failed),
 * CQ_EXIT_USAGE 2 (bad command line).
 */
#ifndef CQ_CLI_H
#define CQ_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "cq_base.h"
#include "cq_tensor.h"
#include "memplan.h"
#include "pipeline.h"
#include "tokenizer.h"

enum { CQ_EXIT_OK = 0, CQ_EXIT_RUNTIME = 1, CQ_EXIT_USAGE = 2 };

/* An absolute, normalized spelling of path for comparisons: realpath() of
 * it, or of its deepest existing ancestor with the rest appended (".",
 * ".." and repeated '/' resolved). Falls back to path as given. */
void cli_abs_path(const char *path, char *out, size_t n);

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} cq_cmd;

/* X(identifier, "name", "summary") */
#define CQ_COMMANDS(X)                                                                             \
    X(train, "train", "train a LLaMA model from scratch on a text corpus")                         \
    X(eval, "eval", "perplexity of a model on a text or JSONL file (GPTQ protocol)")              \
    X(generate, "generate", "generate text from a prompt (greedy or sampled, KV cache)")         \
    X(devices, "devices", "list the compute backends and their devices")                         \
    X(impact, "impact", "Fisher-diagonal impact of every weight from calibration text")          \
    X(analyze, "analyze", "heterogeneity scores (table, CSV) and the paper's figures (SVG)")     \
    X(quantize, "quantize", "quantize with CherryQ, QAT, RTN or GPTQ into a packed directory")   \
    X(export, "export", "dequantize a quantized directory into a plain FP16 HF directory")                \
    X(plan, "plan", "estimated peak memory of every command for a model, and whether it fits")

#define CQ_DECLARE_CMD(id, name, summary) int cmd_##id(int argc, char **argv);
CQ_COMMANDS(CQ_DECLARE_CMD)
#undef CQ_DECLARE_CMD

/* ------------------------------------------------------------ flags
 * A getopt_long-style parser: "--name value" or "--name=value"; bool flags
 * take no value ("--json"). Unknown flags, missing or malformed values and
 * out-of-range numbers print "cherryq <cmd>: <what>" plus the usage line and
 * give CQ_EXIT_USAGE. "--help"/"-h" prints every flag with its default
 * (the value in *dst before parsing) and gives CLI_HELP. */
typedef enum {
    CLI_INT,     /* int64_t *dst */
    CLI_FLOAT,   /* double *dst */
    CLI_STR,     /* const char **dst (points into argv) */
    CLI_BOOL,    /* bool *dst, set to true when present */
} cli_flag_type;

typedef enum {
    CLI_ANY = 0,  /* any number */
    CLI_POS,      /* > 0 */
    CLI_NONNEG,   /* >= 0 */
    CLI_RANGE,    /* lo <= x <= hi */
} cli_range;

typedef struct cli_flag {
    const char *name;       /* without the leading "--" */
    cli_flag_type type;
    void *dst;
    const char *help;
    cli_range range;
    double lo, hi;
    const char *metavar;    /* shown in --help ("N", "PATH"); NULL: from the type */
    bool set;               /* out: given on the command line */
} cli_flag;

#define CLI_HELP (-1)

/* Parses argv[1..argc-1] (argv[0] is the command name). usage_tail is the
 * synopsis after "cherryq <cmd>" (e.g. "--model PATH --data FILE [options]").
 * Returns 0, CLI_HELP (help printed: exit 0) or CQ_EXIT_USAGE. No
 * positional arguments are accepted. */
int cli_parse(const char *cmd, const char *usage_tail, const char *about, cli_flag *flags, int n_flags, int argc,
              char **argv);
/* Prints "cherryq <cmd>: <message>" and the usage line to stderr; returns
 * CQ_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *usage_tail, const char *fmt, ...) CQ_PRINTF(3, 4);

/* Number parsing with range checks; on error print
 * "--lr: expected a positive number, got 'abc'" (flag = "--lr") and return
 * CQ_EXIT_USAGE. */
int cli_parse_int(const char *flag, const char *s, cli_range range, double lo, double hi, int64_t *out);
int cli_parse_float(const char *flag, const char *s, cli_range range, double lo, double hi, double *out);

/* ------------------------------------------------------------ runtime */
/* Maps a CQ_E* status to an exit code (0 -> 0, else 1). */
int cli_exit_code(int status);

/* Sets the CPU thread count for OpenMP kernels and OpenBLAS (0 = all cores). */
void cli_set_threads(int64_t n);

/* Opens --backend cpu|vulkan|cuda|auto with --device N (-1: default); prints
 * "cherryq: backend <name>: <device>" to stderr; on failure prints the error
 * and suggests --backend cpu. Returns 0 or CQ_EXIT_RUNTIME/CQ_EXIT_USAGE. */
int cli_backend_open(const char *name, int64_t device, cq_backend **out);
/* Checks a --backend value before any work starts: 0 or CQ_EXIT_USAGE. */
int cli_check_backend_name(const char *cmd, const char *usage_tail, const char *name);

/* 1 if s ends with suf. */
bool cli_ends_with(const char *s, const char *suf);

/* Corpus: plain text, or JSONL with a "text" field per line (detected by the
 * .jsonl extension or a first non-space character '{'); JSONL records are
 * joined with "\n\n". Errors (missing file, bad JSON line N, record without a
 * string "text", empty corpus) are printed naming the path. Returns 0 or
 * CQ_EXIT_RUNTIME. *text is malloc'ed and NUL-terminated. */
int cli_load_corpus(const char *path, char **text, size_t *len);
/* The records of a JSONL file (as cli_load_corpus reads them, not joined),
 * in file order: recs[i] is record i's "text", NUL-terminated. A plain-text
 * file is refused. Free with cli_records_free. 0 or CQ_EXIT_RUNTIME. */
int cli_load_records(const char *path, char ***recs, size_t *n);
void cli_records_free(char **recs, size_t n);

/* Tokenizer: tok_path if given (a tokenizer.json), else next to the model
 * (<model dir>/tokenizer.json, or a .gguf model's tokenizer.ggml.* metadata).
 * Missing: "no tokenizer found for <model>: expected <dir>/tokenizer.json (or
 * pass --tokenizer)". Returns 0 or CQ_EXIT_RUNTIME. */
int cli_load_tokenizer(const char *model_path, const char *tok_path, cq_tokenizer **out);

/* The tokens of a text as a Hugging Face tokenizer call gives them: the
 * tokenizer's lead token (cq_tokenizer_lead: a template's
 * <|begin_of_text|>, LLaMA-2's <s>; none for cherryq's byte-level models)
 * first. *ids is malloc'ed (NULL on failure). 0 or a CQ_E* code. */
int cli_encode_lead(const cq_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n);

/* --protocol stream|c4: 0 with *c4 set, or CQ_EXIT_USAGE (printed). */
int cli_protocol(const char *cmd, const char *usage_tail, const char *protocol, bool *c4);
/* GPTQ's C4 draw (models/evalset.h) over the records of path (from
 * cli_load_records), each tokenized by cli_encode_lead: n windows of seqlen
 * tokens into out. Errors are printed as "cherryq <cmd>: <path>: ...".
 * 0 or CQ_EXIT_RUNTIME. */
int cli_c4_draw(const char *cmd, const cq_tokenizer *tok, const char *path, char *const *recs, size_t n_recs,
                int64_t seqlen, int64_t n, uint64_t seed, int32_t *out, size_t *n_tokenized);
/* The same as calibration windows: `samples` GPTQ windows of seqlen tokens,
 * i.e. cq_calib windows of seqlen - 1 inputs and their targets (the
 * reference's seqlen - 1 predictions). Says what it drew on stderr. */
int cli_c4_calib(const char *cmd, const cq_tokenizer *tok, const char *path, char *const *recs, size_t n_recs,
                 int64_t samples, int64_t seqlen, uint64_t seed, cq_calib *cal);

/* Reads a corpus and tokenizes it: with lead as one Hugging Face tokenizer
 * call does (cli_encode_lead: evaluation), else without the lead token
 * (training and calibration windows are drawn from anywhere in it). */
int cli_tokenize_file(const cq_tokenizer *tok, const char *path, bool lead, int32_t **ids, size_t *n);

/* ------------------------------------------------------------ memory plan
 * Up-front refusal (tools/cmd_plan.c): estimates cmd's peak memory
 * (cq_memplan_estimate; opts->device is set from the backend) and, when the
 * host part exceeds cq_mem_available() or the device part the backend's
 * free memory, prints "cherryq <name>: needs ~X GiB on <backend>, only Y GiB
 * available (see cherryq plan)" and returns CQ_EXIT_RUNTIME; with force it
 * only warns. 0 when it fits or the available memory is unknown. */
int cli_plan_check(const char *name, const cq_llama_config *cfg, cq_plan_cmd cmd, cq_plan_opts *opts,
                   const cq_backend *be, bool force);
/* The same with the config read from the model (cq_memplan_config_load);
 * 0 when it cannot be read there (a .gguf: cq_llama_load checks then). */
int cli_plan_check_model(const char *name, const char *model, cq_plan_cmd cmd, cq_plan_opts *opts,
                         const cq_backend *be, bool force);

/* Training-memory flags of train, quantize (QAT) and plan (tools/cmd_plan.c;
 * docs/cuda.md design (b), models/llama.h and cq_train_opts). */
typedef struct cli_memflags {
    bool checkpoint, offload;
    const char *compute;   /* "f32" (default), "bf16", "f16" */
    int64_t xent_chunk;    /* 0: 1024 tokens with --checkpoint-activations, else whole batch */
    bool best_on_disk;     /* QAT: the best weights in <ckpt>/qat_best.f32 (quantize, plan) */
} cli_memflags;
#define CLI_MEMFLAGS(mf)                                                                                         \
    { "checkpoint-activations", CLI_BOOL, &(mf).checkpoint,                                                       \
      "keep only each decoder layer's input; recompute the layer in the backward" },                             \
    { "offload-optimizer", CLI_BOOL, &(mf).offload,                                                               \
      "AdamW m and v in host memory (pinned on CUDA), streamed per parameter" },                                  \
    { "compute-dtype", CLI_STR, &(mf).compute, "GEMM inputs: f32, bf16 or f16 (f32 master weights and grads)",   \
      .metavar = "DT" },                                                                                          \
    { "xent-chunk", CLI_INT, &(mf).xent_chunk,                                                                    \
      "cross-entropy in chunks of N tokens (0: 1024 with --checkpoint-activations, else none)", CLI_NONNEG },     \
    { "best-on-disk", CLI_BOOL, &(mf).best_on_disk,                                                               \
      "QAT (quantize): the best weights in <ckpt>/qat_best.f32 instead of host memory" }
struct cq_llama;
struct cq_train_opts;
/* Validates --compute-dtype (usage error: CQ_EXIT_USAGE) and copies the flags
 * into the plan options, the model and the trainer options (each may be NULL). */
int cli_memflags_apply(const char *cmd, const char *usage, const cli_memflags *mf, cq_plan_opts *po,
                       struct cq_llama *m, struct cq_train_opts *to);

/* ------------------------------------------------------------ progress
 * On a terminal (stderr): one \r-updated line "step/total loss tok/s ETA";
 * otherwise a plain log line every `every` steps and at the last step. */
typedef struct cli_progress {
    const char *label;
    int64_t total;
    int64_t every;
    bool tty;
    bool dirty;          /* a \r line is showing */
    double t0;
} cli_progress;

void cli_progress_init(cli_progress *p, const char *label, int64_t total, int64_t every);
/* loss may be NAN (not shown); rate in units/s ("tok/s"). */
void cli_progress_update(cli_progress *p, int64_t step, double loss, double rate, double eta_s, const char *extra);
/* Prints a line of its own (ends a \r line first). */
void cli_progress_note(cli_progress *p, const char *fmt, ...) CQ_PRINTF(2, 3);
void cli_progress_done(cli_progress *p);

/* "1h02m", "3m05s", "12s" */
const char *cli_fmt_duration(double s, char *buf, size_t n);

#endif
