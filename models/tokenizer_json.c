/* cherryq: Hugging Face tokenizer.json reading and writing (cJSON).
 *
 * Reads BPE models: the LLaMA SentencePiece-style ones (byte_fallback, "▁",
 * normalizer Prepend/Replace or pre_tokenizer Metaspace) and byte-level ones
 * (pre_tokenizer ByteLevel). Writes byte-level ones, with a pre_tokenizer
 * Sequence[Split(CQ_BPE_SPLIT_REGEX), ByteLevel(use_regex false)] that makes
 * `tokenizers` split text exactly like cq_bpe_next_word.
 */
#include "tokenizer_internal.h"
#include "cq_io.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define TOKENIZER_JSON_MAX (512u << 20)

/* cq_bpe_next_word as a regex (Oniguruma and ECMAScript alike). */
static const char CQ_BPE_SPLIT_REGEX[] =
    "'(?:s|t|re|ve|m|ll|d)"
    "| ?[^\\x00-\\x40\\x5B-\\x60\\x7B-\\x7F]+"
    "| ?[0-9]+"
    "| ?[\\x00-\\x08\\x0E-\\x1F\\x21-\\x2F\\x3A-\\x40\\x5B-\\x60\\x7B-\\x7F]+"
    "|[\\x09-\\x0D\\x20]+(?![^\\x09-\\x0D\\x20])"
    "|[\\x09-\\x0D\\x20]+";

/* ------------------------------------------------------------ GPT-2 bytes */
/* GPT-2 bytes_to_unicode: printable bytes map to themselves, the others to
 * U+0100 + k in byte order. */
static void gpt2_tables(uint16_t b2u[256], int16_t u2b[324])
{
    int n = 0;
    for (int i = 0; i < 324; i++) u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        b2u[b] = (uint16_t)(printable ? b : 256 + n++);
        u2b[b2u[b]] = (int16_t)b;
    }
}

/* Decodes one UTF-8 code point (strict); returns its length or 0. */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    if (n == 0) return 0;
    uint8_t c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    size_t l;
    uint32_t v;
    if (c >= 0xC2 && c < 0xE0) { l = 2; v = c & 0x1F; }
    else if (c >= 0xE0 && c < 0xF0) { l = 3; v = c & 0x0F; }
    else if (c >= 0xF0 && c < 0xF5) { l = 4; v = c & 0x07; }
    else return 0;
    if (n < l) return 0;
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((l == 3 && v < 0x800) || (l == 4 && (v < 0x10000 || v > 0x10FFFF))) return 0;
    *cp = v;
    return l;
}

/* GPT-2 spelling -> raw bytes (out must hold n bytes). 0 or -1. */
static int gpt2_to_bytes(const int16_t *u2b, const char *s, size_t n, char *out, size_t *on)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (!l || cp >= 324 || u2b[cp] < 0) return -1;
        out[o++] = (char)u2b[cp];
        i += l;
    }
    *on = o;
    return 0;
}

/* raw bytes -> GPT-2 spelling, malloc'ed, NUL-terminated */
static char *bytes_to_gpt2(const uint16_t *b2u, const char *s, size_t n)
{
    char *o = malloc(2 * n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t u = b2u[(uint8_t)s[i]];
        if (u < 0x80) {
            o[k++] = (char)u;
        } else {
            o[k++] = (char)(0xC0 | (u >> 6));
            o[k++] = (char)(0x80 | (u & 0x3F));
        }
    }
    o[k] = 0;
    return o;
}

/* ------------------------------------------------------------ helpers */
static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static const char *get_str(const cJSON *o, const char *k)
{
    const cJSON *v = get(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int is_null(const cJSON *v)
{
    return !v || cJSON_IsNull(v);
}

static int json_id(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d < (double)(1 << 24)) || floor(d) != d) return -1;
    *id = (int32_t)d;
    return 0;
}

static int type_is(const cJSON *o, const char *type)
{
    const char *t = get_str(o, "type");
    return t && strcmp(t, type) == 0;
}

static int is_bytelevel_pre(const cJSON *pre)
{
    if (type_is(pre, "ByteLevel")) return 1;
    if (type_is(pre, "Sequence")) {
        const cJSON *a = get(pre, "pretokenizers"), *e;
        cJSON_ArrayForEach(e, a) if (type_is(e, "ByteLevel")) return 1;
    }
    return 0;
}

static int add_norm(cq_tokenizer *t, int type, const char *a, const char *b)
{
    cq_norm_op *p = realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof(*p));
    if (!p) return CQ_ENOMEM;
    t->norm = p;
    cq_norm_op *op = &t->norm[t->n_norm];
    memset(op, 0, sizeof(*op));
    op->type = type;
    op->a = strdup(a);
    op->na = strlen(a);
    if (b) {
        op->b = strdup(b);
        op->nb = strlen(b);
    }
    t->n_norm++;
    if (!op->a || (b && !op->b)) return CQ_ENOMEM;
    return 0;
}

static int parse_normalizer(cq_tokenizer *t, const cJSON *n, const char *what, int depth)
{
    if (is_null(n)) return 0;
    const char *type = get_str(n, "type");
    if (!type) {
        cq_error("%s: normalizer without a type", what);
        return CQ_EBADMSG;
    }
    if (!strcmp(type, "Sequence") && depth < 4) {
        const cJSON *a = get(n, "normalizers"), *e;
        if (!cJSON_IsArray(a)) {
            cq_error("%s: normalizer Sequence without a \"normalizers\" array", what);
            return CQ_EBADMSG;
        }
        cJSON_ArrayForEach(e, a) {
            int r = parse_normalizer(t, e, what, depth + 1);
            if (r) return r;
        }
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = get_str(n, "prepend");
        if (!p) {
            cq_error("%s: Prepend normalizer without a \"prepend\" string", what);
            return CQ_EBADMSG;
        }
        return add_norm(t, CQ_NORM_PREPEND, p, NULL);
    }
    if (!strcmp(type, "Replace")) {
        const char *pat = get_str(get(n, "pattern"), "String");
        const char *content = get_str(n, "content");
        if (!content || !get(n, "pattern")) {
            cq_error("%s: Replace normalizer needs \"pattern\" and \"content\"", what);
            return CQ_EBADMSG;
        }
        if (!pat) {
            cq_error("%s: Replace normalizer with a regex pattern is not supported", what);
            return CQ_ENOTSUP;
        }
        if (!*pat) {
            cq_error("%s: Replace normalizer with an empty pattern", what);
            return CQ_EBADMSG;
        }
        return add_norm(t, CQ_NORM_REPLACE, pat, content);
    }
    cq_error("%s: normalizer \"%s\" is not supported (only Prepend, Replace, Sequence)", what, type);
    return CQ_ENOTSUP;
}

static int parse_spm_pre(cq_tokenizer *t, const cJSON *pre, const char *what)
{
    if (is_null(pre)) return 0;
    if (!type_is(pre, "Metaspace")) {
        const char *ty = get_str(pre, "type");
        cq_error("%s: pre_tokenizer \"%s\" is not supported for a SentencePiece-style BPE "
                 "(only Metaspace or none)", what, ty ? ty : "?");
        return CQ_ENOTSUP;
    }
    const char *rep = get_str(pre, "replacement");
    if (!rep) rep = "\xE2\x96\x81";
    const char *scheme = get_str(pre, "prepend_scheme");
    int prepend = 1;
    if (scheme) {
        if (!strcmp(scheme, "never")) prepend = 0;
        else if (strcmp(scheme, "always") && strcmp(scheme, "first")) {
            cq_error("%s: Metaspace prepend_scheme \"%s\" unknown", what, scheme);
            return CQ_EBADMSG;
        }
    } else if (cJSON_IsBool(get(pre, "add_prefix_space"))) {
        prepend = cJSON_IsTrue(get(pre, "add_prefix_space"));
    }
    const cJSON *split = get(pre, "split");
    t->split_meta = split ? cJSON_IsTrue(split) : 1;
    if (t->split_meta && strcmp(rep, "\xE2\x96\x81") != 0) {
        cq_error("%s: Metaspace split with replacement \"%s\" is not supported", what, rep);
        return CQ_ENOTSUP;
    }
    int r = add_norm(t, CQ_NORM_REPLACE, " ", rep);
    if (!r && prepend) r = add_norm(t, CQ_NORM_PREPEND_IF_ABSENT, rep, NULL);
    return r;
}

static int parse_byte_pre(cq_tokenizer *t, const cJSON *pre, const char *what)
{
    if (type_is(pre, "ByteLevel")) {
        if (cJSON_IsTrue(get(pre, "add_prefix_space"))) {
            cq_error("%s: ByteLevel add_prefix_space true is not supported", what);
            return CQ_ENOTSUP;
        }
        if (cJSON_IsFalse(get(pre, "use_regex"))) {
            cq_error("%s: ByteLevel without regex and without a Split is not supported", what);
            return CQ_ENOTSUP;
        }
        t->plain_bytelevel = 1;
        cq_warn("%s: GPT-2 ByteLevel pre-tokenizer: cherryq splits with ASCII classes (every "
                "non-ASCII character counts as a letter); ids may differ from `tokenizers` on "
                "non-ASCII digits, punctuation or spaces", what);
        return 0;
    }
    const cJSON *a = get(pre, "pretokenizers");
    const cJSON *s0 = cJSON_GetArrayItem(a, 0), *s1 = cJSON_GetArrayItem(a, 1);
    if (cJSON_GetArraySize(a) == 2 && type_is(s0, "Split") && type_is(s1, "ByteLevel")) {
        const char *re = get_str(get(s0, "pattern"), "Regex");
        const char *beh = get_str(s0, "behavior");
        if (re && !strcmp(re, CQ_BPE_SPLIT_REGEX) && beh && !strcmp(beh, "Isolated") &&
            !cJSON_IsTrue(get(s0, "invert")) && !cJSON_IsTrue(get(s1, "add_prefix_space")) &&
            cJSON_IsFalse(get(s1, "use_regex")))
            return 0;
    }
    cq_error("%s: this byte-level pre_tokenizer is not supported (cherryq reads plain "
             "ByteLevel and its own Sequence[Split, ByteLevel])", what);
    return CQ_ENOTSUP;
}

/* ------------------------------------------------------------ load */
typedef struct added_tok {
    int32_t id;
    const char *content;
    int special;
} added_tok;

/* The special token the post_processor's "single" template starts with:
 * its id from the template's special_tokens map, else from the vocab; -1
 * for a template that starts with the sequence; -2 for no template. */
static int32_t template_lead(const cq_tokenizer *t, const cJSON *pp, int depth)
{
    if (!cJSON_IsObject(pp) || depth > 4) return -2;
    const char *ty = get_str(pp, "type");
    if (ty && !strcmp(ty, "Sequence")) {
        const cJSON *e, *procs = get(pp, "processors");
        int32_t found = -2;
        if (cJSON_IsArray(procs))
            cJSON_ArrayForEach(e, procs) {
                const int32_t id = template_lead(t, e, depth + 1);
                if (id != -2) found = id;
            }
        return found;
    }
    if (!ty || strcmp(ty, "TemplateProcessing")) return -2;
    const cJSON *single = get(pp, "single");
    if (!cJSON_IsArray(single) || !cJSON_GetArraySize(single)) return -2;
    const cJSON *sp = get(cJSON_GetArrayItem(single, 0), "SpecialToken");
    const char *name = get_str(sp, "id");
    if (!name) return -1;   /* the template starts with the sequence itself */
    const cJSON *ids = get(get(get(pp, "special_tokens"), name), "ids");
    if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 1 && cJSON_IsNumber(ids->child)) {
        const double v = ids->child->valuedouble;
        if (v >= 0 && v < (double)cq_tokenizer_n_vocab(t) && v == floor(v)) return (int32_t)v;
    }
    const int32_t id = cq_tokenizer_find(t, name, strlen(name));
    if (id < 0) cq_warn("tokenizer: the post_processor template starts with \"%.64s\", which is not in the vocab", name);
    return id;
}

static int load_doc(const cJSON *root, const char *what, cq_tokenizer **out)
{
    const cJSON *model = get(root, "model");
    if (!cJSON_IsObject(model)) {
        cq_error("%s: no \"model\" object", what);
        return CQ_EBADMSG;
    }
    const char *mtype = get_str(model, "type");
    if (mtype && strcmp(mtype, "BPE") != 0) {
        cq_error("%s: model type \"%s\" is not supported (only BPE)", what, mtype);
        return CQ_ENOTSUP;
    }
    const cJSON *vocab = get(model, "vocab");
    const cJSON *merges = get(model, "merges");
    if (!cJSON_IsObject(vocab)) {
        cq_error("%s: model.vocab is missing or not an object", what);
        return CQ_EBADMSG;
    }
    if (!cJSON_IsArray(merges)) {
        cq_error("%s: model.merges is missing or not an array", what);
        return CQ_EBADMSG;
    }
    const char *csp = get_str(model, "continuing_subword_prefix");
    const char *eow = get_str(model, "end_of_word_suffix");
    const cJSON *dropout = get(model, "dropout");
    if ((csp && *csp) || (eow && *eow) || (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)) {
        cq_error("%s: BPE continuing_subword_prefix / end_of_word_suffix / dropout are not "
                 "supported", what);
        return CQ_ENOTSUP;
    }
    const cJSON *pre = get(root, "pre_tokenizer");
    int kind = is_bytelevel_pre(pre) ? CQ_TOK_BYTE : CQ_TOK_SPM;

    /* added tokens */
    const cJSON *added = get(root, "added_tokens"), *e;
    if (!is_null(added) && !cJSON_IsArray(added)) {
        cq_error("%s: added_tokens is not an array", what);
        return CQ_EBADMSG;
    }
    int n_added = cJSON_GetArraySize(added);
    added_tok *at = calloc((size_t)n_added + 1, sizeof(*at));
    if (!at) return CQ_ENOMEM;
    int32_t max_id = -1, k = 0;
    int r = 0;
    cJSON_ArrayForEach(e, added) {
        const char *c = get_str(e, "content");
        if (!c || json_id(get(e, "id"), &at[k].id)) {
            cq_error("%s: added_tokens[%d]: needs a string \"content\" and an \"id\" in "
                     "[0, 2^24)", what, k);
            r = CQ_EBADMSG;
            goto done_at;
        }
        at[k].content = c;
        at[k].special = cJSON_IsTrue(get(e, "special"));
        if (at[k].id > max_id) max_id = at[k].id;
        k++;
    }
    cJSON_ArrayForEach(e, vocab) {
        int32_t id;
        if (json_id(e, &id)) {
            cq_error("%s: vocab entry \"%.64s\": id is not an integer in [0, 2^24)", what,
                     e->string ? e->string : "");
            r = CQ_EBADMSG;
            goto done_at;
        }
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) {
        cq_error("%s: empty vocab", what);
        r = CQ_EBADMSG;
        goto done_at;
    }

    cq_tokenizer *t = NULL;
    uint16_t b2u[256];
    int16_t u2b[324];
    gpt2_tables(b2u, u2b);
    char *buf = NULL, *buf2 = NULL;
    int32_t *ma = NULL, *mb = NULL;
    uint8_t *is_added = NULL;
    if ((r = cq_tok_alloc(kind, max_id + 1, &t))) goto done_at;
    is_added = calloc((size_t)max_id + 1, 1);
    if (!is_added) { r = CQ_ENOMEM; goto fail; }
    for (int i = 0; i < n_added; i++) {
        int32_t id = at[i].id;
        if (is_added[id] && strcmp(t->tok[id], at[i].content) != 0) {
            cq_error("%s: added token id %d given twice (\"%.64s\", \"%.64s\")", what, id,
                     t->tok[id], at[i].content);
            r = CQ_EBADMSG;
            goto fail;
        }
        if ((r = cq_tok_set_text(t, id, at[i].content, strlen(at[i].content)))) goto fail;
        is_added[id] = 1;
        t->types[id] = at[i].special ? CQ_TOKTYPE_CONTROL : CQ_TOKTYPE_USER_DEFINED;
        if (!strcmp(at[i].content, "<s>")) t->bos = id;
        if (!strcmp(at[i].content, "</s>")) t->eos = id;
    }
    size_t bufcap = 0;
    cJSON_ArrayForEach(e, vocab) {
        int32_t id = 0;
        json_id(e, &id);   /* validated above */
        const char *key = e->string ? e->string : "";
        size_t kl = strlen(key);
        if (is_added[id]) {
            if (strcmp(key, t->tok[id]) != 0) {
                cq_error("%s: id %d is both vocab entry \"%.64s\" and added token \"%.64s\"", what,
                         id, key, t->tok[id]);
                r = CQ_EBADMSG;
                goto fail;
            }
            continue;
        }
        if (t->tok[id]) {
            cq_error("%s: id %d is used by two vocab entries (\"%.64s\" and \"%.64s\")", what, id,
                     t->tok[id], key);
            r = CQ_EBADMSG;
            goto fail;
        }
        if (kind == CQ_TOK_BYTE) {
            if (kl + 1 > bufcap) {
                bufcap = 2 * kl + 16;
                free(buf);
                if (!(buf = malloc(bufcap))) { r = CQ_ENOMEM; goto fail; }
            }
            size_t bl;
            if (gpt2_to_bytes(u2b, key, kl, buf, &bl)) {
                cq_error("%s: byte-level vocab entry \"%.64s\" (id %d) has characters outside "
                         "the GPT-2 byte alphabet", what, key, id);
                r = CQ_EBADMSG;
                goto fail;
            }
            r = cq_tok_set_text(t, id, buf, bl);
            t->types[id] = CQ_TOKTYPE_NORMAL;
        } else {
            r = cq_tok_set_text(t, id, key, kl);
            t->types[id] = cq_parse_byte_token(key, kl) >= 0 ? CQ_TOKTYPE_BYTE
                                                              : CQ_TOKTYPE_NORMAL;
        }
        if (r) goto fail;
    }
    const char *unk = get_str(model, "unk_token");

    /* components */
    if (kind == CQ_TOK_BYTE) {
        if (!is_null(get(root, "normalizer"))) {
            cq_error("%s: a normalizer on a byte-level tokenizer is not supported", what);
            r = CQ_ENOTSUP;
            goto fail;
        }
        if ((r = parse_byte_pre(t, pre, what))) goto fail;
        t->byte_fallback = 0;
    } else {
        if ((r = parse_normalizer(t, get(root, "normalizer"), what, 0))) goto fail;
        if ((r = parse_spm_pre(t, pre, what))) goto fail;
        t->byte_fallback = cJSON_IsTrue(get(model, "byte_fallback"));
    }
    t->ignore_merges = cJSON_IsTrue(get(model, "ignore_merges"));

    if ((r = cq_tok_finalize(t, 0, what))) goto fail;
    if (unk) {
        t->unk = cq_tokenizer_find(t, unk, strlen(unk));
        if (t->unk < 0) {
            cq_error("%s: unk_token \"%.64s\" is not in the vocab", what, unk);
            r = CQ_EBADMSG;
            goto fail;
        }
        t->types[t->unk] = CQ_TOKTYPE_UNKNOWN;
        free(t->dec[t->unk]);
        t->dec[t->unk] = NULL;
        size_t ul = t->tok_len[t->unk];
        if (!(t->dec[t->unk] = malloc(ul + 1))) { r = CQ_ENOMEM; goto fail; }
        memcpy(t->dec[t->unk], t->tok[t->unk], ul + 1);
        t->dec_len[t->unk] = (uint32_t)ul;
    }
    if (t->bos < 0) t->bos = cq_tokenizer_find(t, "<s>", 3);
    if (t->eos < 0) t->eos = cq_tokenizer_find(t, "</s>", 4);
    t->lead = template_lead(t, get(root, "post_processor"), 0);

    /* merges */
    int nm = cJSON_GetArraySize(merges);
    ma = malloc(((size_t)nm + 1) * sizeof(*ma));
    mb = malloc(((size_t)nm + 1) * sizeof(*mb));
    if (!ma || !mb) { r = CQ_ENOMEM; goto fail; }
    int i = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *sa = NULL, *sb = NULL;
        size_t la = 0, lb = 0;
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring;
            const char *sp = strchr(s, ' ');
            if (sp && sp != s && sp[1] && !strchr(sp + 1, ' ')) {
                sa = s; la = (size_t)(sp - s);
                sb = sp + 1; lb = strlen(sb);
            }
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            sa = cJSON_GetArrayItem(e, 0)->valuestring; la = strlen(sa);
            sb = cJSON_GetArrayItem(e, 1)->valuestring; lb = strlen(sb);
        }
        if (!sa || !la || !lb) {
            cq_error("%s: merges[%d] is not \"a b\" or [\"a\", \"b\"]", what, i);
            r = CQ_EBADMSG;
            goto fail;
        }
        const char *side[2] = { sa, sb };
        size_t sl[2] = { la, lb };
        int32_t ids[2];
        for (int s = 0; s < 2; s++) {
            const char *p = side[s];
            size_t pl = sl[s];
            if (kind == CQ_TOK_BYTE) {
                if (pl + 1 > bufcap) {
                    bufcap = 2 * pl + 16;
                    free(buf);
                    if (!(buf = malloc(bufcap))) { r = CQ_ENOMEM; goto fail; }
                }
                if (gpt2_to_bytes(u2b, p, pl, buf, &pl)) {
                    cq_error("%s: merges[%d]: \"%.*s\" is not in the GPT-2 byte alphabet", what, i,
                             (int)(sl[s] < 64 ? sl[s] : 64), side[s]);
                    r = CQ_EBADMSG;
                    goto fail;
                }
                p = buf;
            }
            ids[s] = cq_tokenizer_find(t, p, pl);
            if (ids[s] < 0) {
                cq_error("%s: merges[%d]: token \"%.*s\" is not in the vocab", what, i,
                         (int)(sl[s] < 64 ? sl[s] : 64), side[s]);
                r = CQ_EBADMSG;
                goto fail;
            }
        }
        ma[i] = ids[0];
        mb[i] = ids[1];
        i++;
    }
    if ((r = cq_tok_set_merges(t, ma, mb, nm, what))) goto fail;
    *out = t;
    t = NULL;
fail:
    cq_tokenizer_destroy(&t);
    free(buf);
    free(buf2);
    free(ma);
    free(mb);
    free(is_added);
done_at:
    free(at);
    return r;
}

int cq_tokenizer_load_json_mem(const char *json, size_t len, const char *what, cq_tokenizer **out)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    *out = NULL;
    CQ_CHECK_ARG(json || len == 0, CQ_EINVAL);
    if (!what) what = "tokenizer.json";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json ? json : "", len, &end, 0);
    if (!root) {
        size_t off = end && json ? (size_t)(end - json) : 0;
        cq_error("%s: malformed JSON near byte %zu", what, off);
        return CQ_EBADMSG;
    }
    int r = load_doc(root, what, out);
    cJSON_Delete(root);
    return r;
}

int cq_tokenizer_load_json(const char *path, cq_tokenizer **out)
{
    CQ_CHECK_ARG(path && out, CQ_EINVAL);
    *out = NULL;
    char *data;
    size_t n;
    int r = cq_read_file(path, &data, &n, TOKENIZER_JSON_MAX);
    if (r) return r;
    r = cq_tokenizer_load_json_mem(data, n, path, out);
    free(data);
    return r;
}

/* ------------------------------------------------------------ save */
static cJSON *added_json(int32_t id, const char *content)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "id", id);
    cJSON_AddStringToObject(o, "content", content);
    cJSON_AddFalseToObject(o, "single_word");
    cJSON_AddFalseToObject(o, "lstrip");
    cJSON_AddFalseToObject(o, "rstrip");
    cJSON_AddFalseToObject(o, "normalized");
    cJSON_AddTrueToObject(o, "special");
    return o;
}

static cJSON *bytelevel_json(int use_regex)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddFalseToObject(o, "add_prefix_space");
    cJSON_AddTrueToObject(o, "trim_offsets");
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

int cq_tokenizer_to_json(const cq_tokenizer *t, char **json)
{
    CQ_CHECK_ARG(t && json, CQ_EINVAL);
    *json = NULL;
    if (t->kind != CQ_TOK_BYTE) {
        cq_error("tokenizer: saving a SentencePiece-style tokenizer is not supported");
        return CQ_ENOTSUP;
    }
    uint16_t b2u[256];
    int16_t u2b[324];
    gpt2_tables(b2u, u2b);
    int r = CQ_ENOMEM;
    char **sp = calloc((size_t)t->n_vocab, sizeof(*sp));   /* GPT-2 spellings */
    cJSON *root = cJSON_CreateObject();
    if (!sp || !root) goto out;
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    if (!added) goto out;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->types[id] == CQ_TOKTYPE_CONTROL || t->types[id] == CQ_TOKTYPE_USER_DEFINED) {
            if (memchr(t->tok[id], 0, t->tok_len[id])) {
                cq_error("tokenizer: special token %d contains a NUL byte", id);
                r = CQ_EINVAL;
                goto out;
            }
            sp[id] = strdup(t->tok[id]);
            cJSON *a = added_json(id, t->tok[id]);
            if (!a || !sp[id]) goto out;
            if (t->types[id] == CQ_TOKTYPE_USER_DEFINED) cJSON_ReplaceItemInObject(a, "special", cJSON_CreateFalse());
            cJSON_AddItemToArray(added, a);
        } else {
            sp[id] = bytes_to_gpt2(b2u, t->tok[id], t->tok_len[id]);
            if (!sp[id]) goto out;
        }
    }
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    if (!pre) goto out;
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *pts = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    if (!pts || !split) { cJSON_Delete(split); goto out; }
    cJSON_AddItemToArray(pts, split);
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON *pat = cJSON_AddObjectToObject(split, "pattern");
    if (!pat) goto out;
    cJSON_AddStringToObject(pat, "Regex", CQ_BPE_SPLIT_REGEX);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddFalseToObject(split, "invert");
    cJSON *bl = bytelevel_json(0);
    if (!bl) goto out;
    cJSON_AddItemToArray(pts, bl);
    cJSON_AddNullToObject(root, "post_processor");
    cJSON *dec = bytelevel_json(1);
    if (!dec) goto out;
    cJSON_AddItemToObject(root, "decoder", dec);
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    if (!model) goto out;
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddFalseToObject(model, "fuse_unk");
    cJSON_AddFalseToObject(model, "byte_fallback");
    cJSON_AddBoolToObject(model, "ignore_merges", t->ignore_merges);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    if (!vocab || !merges) goto out;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (!cJSON_AddNumberToObject(vocab, sp[id], id)) goto out;
    for (int i = 0; i < t->n_merges; i++) {
        const char *a = sp[t->merge_a[i]], *b = sp[t->merge_b[i]];
        size_t la = strlen(a), lb = strlen(b);
        char *m = malloc(la + lb + 2);
        if (!m) goto out;
        memcpy(m, a, la);
        m[la] = ' ';
        memcpy(m + la + 1, b, lb + 1);
        cJSON *s = cJSON_CreateString(m);
        free(m);
        if (!s) goto out;
        cJSON_AddItemToArray(merges, s);
    }
    *json = cJSON_PrintUnformatted(root);
    r = *json ? 0 : CQ_ENOMEM;
out:
    if (r == CQ_ENOMEM) cq_error("tokenizer: out of memory writing tokenizer.json");
    cJSON_Delete(root);
    if (sp) for (int32_t id = 0; id < t->n_vocab; id++) free(sp[id]);
    free(sp);
    return r;
}

int cq_tokenizer_save_json(const cq_tokenizer *t, const char *path)
{
    CQ_CHECK_ARG(t && path, CQ_EINVAL);
    char *json;
    int r = cq_tokenizer_to_json(t, &json);
    if (r) return r;
    r = cq_write_file_atomic(path, json, strlen(json));
    free(json);
    return r;
}
