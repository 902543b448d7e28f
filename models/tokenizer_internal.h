/* cherryq: tokenizer internals shared by tokenizer.c and bpe_train.c.
 * Not part of the public API. */
#ifndef CQ_TOKENIZER_INTERNAL_H
#define CQ_TOKENIZER_INTERNAL_H

#include "tokenizer.h"

/* ------------------------------------------------------------ hash maps */
/* Byte-string -> int64 map, open addressing, keys copied into an arena. */
typedef struct cq_strmap {
    uint32_t *slots;      /* 0 = empty, else entry index + 1 */
    size_t cap;           /* power of two */
    size_t count;
    uint64_t *hashes;     /* per entry */
    size_t *koff;         /* per entry: offset into arena */
    uint32_t *klen;
    int64_t *vals;
    size_t ecap;
    char *arena;
    size_t asize, acap;
} cq_strmap;

int cq_strmap_init(cq_strmap *m, size_t expect);
void cq_strmap_free(cq_strmap *m);
/* Returns the entry index, or -1. */
int64_t cq_strmap_find(const cq_strmap *m, const char *k, size_t n);
/* Inserts (k, v) if absent. *idx gets the entry index, *added 1 if new.
 * Returns 0 or CQ_ENOMEM. */
int cq_strmap_put(cq_strmap *m, const char *k, size_t n, int64_t v, size_t *idx, int *added);
static inline const char *cq_strmap_key(const cq_strmap *m, size_t i, size_t *n)
{
    *n = m->klen[i];
    return m->arena + m->koff[i];
}

/* uint64 -> int64 map. */
typedef struct cq_u64map {
    uint64_t *keys;
    int64_t *vals;
    uint8_t *used;
    size_t cap, count;
} cq_u64map;

int cq_u64map_init(cq_u64map *m, size_t expect);
void cq_u64map_free(cq_u64map *m);
/* Pointer to the value of k, or NULL. */
int64_t *cq_u64map_get(const cq_u64map *m, uint64_t k);
/* Pointer to the value of k, inserting v0 if absent (*added = 1). NULL on ENOMEM. */
int64_t *cq_u64map_upsert(cq_u64map *m, uint64_t k, int64_t v0, int *added);

static inline uint64_t cq_pair_key(int32_t a, int32_t b)
{
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

/* "<0xNN>" (upper-case hex, as sentencepiece spells byte pieces) -> NN, else -1 */
static inline int cq_parse_byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

/* ------------------------------------------------------------ tokenizer */
/* PREPEND: HF Prepend normalizer (non-empty text only); PREPEND_IF_ABSENT:
 * Metaspace's prepend (skipped when the text already starts with it). */
enum { CQ_NORM_PREPEND = 1, CQ_NORM_REPLACE = 2, CQ_NORM_PREPEND_IF_ABSENT = 3 };
typedef struct cq_norm_op {
    int type;
    char *a;  size_t na;   /* PREPEND: text; REPLACE: pattern */
    char *b;  size_t nb;   /* REPLACE: content */
} cq_norm_op;

struct cq_tokenizer {
    int kind;
    int n_vocab;
    /* token text as stored (SPM: "▁the"; BYTE: raw bytes): arena + offsets */
    char **tok;  uint32_t *tok_len;   /* each malloc'ed, NUL-terminated */
    /* decoded bytes of each token (piece for streaming) */
    char **dec;  uint32_t *dec_len;
    float *scores;
    int32_t *types;
    cq_strmap vocab;           /* token text -> id (values are ids) */
    int32_t byte_tok[256];     /* id of the token of each byte, -1 if none */
    /* merges (rank order); empty for the SPM scores route */
    int n_merges;
    int32_t *merge_a, *merge_b, *merge_res;
    cq_u64map merge_map;       /* pair key -> rank */
    int use_merges;            /* SPM: 1 = ranks (tokenizer.json), 0 = scores */
    int32_t bos, eos, unk;
    /* the special token the tokenizer.json post_processor's template puts
     * before a sequence (TemplateProcessing "single", e.g. LLaMA-3's
     * <|begin_of_text|>); -1: none; -2: no template (the kind's default) */
    int32_t lead;
    /* SPM normalization */
    cq_norm_op *norm;  int n_norm;
    int split_meta;            /* Metaspace split=true: words start at each "▁" */
    int byte_fallback;         /* SPM: unknown chars -> <0xNN> (else unk)     */
    int ignore_merges;         /* BYTE: a word found whole in vocab is one id */
    int plain_bytelevel;       /* BYTE: GPT-2 ByteLevel regex (approximated)  */
};

/* Creates an empty tokenizer of the given kind with room for n tokens. */
int cq_tok_alloc(int kind, int n, cq_tokenizer **out);
/* Sets token text/types (called once per id, in any order), then finalize
 * builds the vocab map, byte table and decoded pieces. */
int cq_tok_set_text(cq_tokenizer *t, int32_t id, const char *s, size_t n);
/* dup_last_wins: duplicate texts map to the last id (llama.cpp); else EBADMSG. */
int cq_tok_finalize(cq_tokenizer *t, int dup_last_wins, const char *what);
/* Registers merges (ids of the two sides, in rank order); the result is
 * looked up by concatenated text and must exist. */
int cq_tok_set_merges(cq_tokenizer *t, const int32_t *a, const int32_t *b, int n,
                      const char *what);

#endif
