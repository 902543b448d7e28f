/* cherryq: tokenizer core: hash maps, vocab, BPE encoding (SentencePiece-style
 * and byte-level), decoding, construction from GGUF-style arrays.
 *
 * Both BPE variants run a heap over a doubly linked list of symbols, so one
 * call on a whole 5 MB text (the LLaMA tokenizer has no pre-tokenizer: the
 * text is one sequence) is O(n log n):
 *  - ranks (tokenizer.json merges): pop the lowest-rank adjacent pair, ties
 *    leftmost; an entry whose symbols changed since it was pushed is skipped.
 *    This is the order `tokenizers`' BPE Word::merge_all applies.
 *  - scores (GGUF, llama.cpp llm_tokenizer_spm): pop the adjacent pair whose
 *    concatenation is a vocab entry with the highest score, ties leftmost;
 *    afterwards symbols that are not vocab entries become byte tokens.
 */
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------ hashing */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        h = (h ^ x) * 0x100000001B3ull;
        h ^= h >> 29;
        p += 8; n -= 8;
    }
    uint64_t x = 0;
    memcpy(&x, p, n);
    h = (h ^ x) * 0x100000001B3ull;
    return mix64(h);
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ------------------------------------------------------------ strmap */
int cq_strmap_init(cq_strmap *m, size_t expect)
{
    memset(m, 0, sizeof(*m));
    m->cap = pow2_at_least(expect * 2 + 1);
    m->slots = calloc(m->cap, sizeof(*m->slots));
    if (!m->slots) return CQ_ENOMEM;
    return 0;
}

void cq_strmap_free(cq_strmap *m)
{
    free(m->slots); free(m->hashes); free(m->koff); free(m->klen); free(m->vals);
    free(m->arena);
    memset(m, 0, sizeof(*m));
}

static int64_t strmap_find_h(const cq_strmap *m, const char *k, size_t n, uint64_t h)
{
    if (!m->cap) return -1;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        uint32_t s = m->slots[i];
        if (!s) return -1;
        size_t e = s - 1;
        if (m->hashes[e] == h && m->klen[e] == n && memcmp(m->arena + m->koff[e], k, n) == 0)
            return (int64_t)e;
    }
}

int64_t cq_strmap_find(const cq_strmap *m, const char *k, size_t n)
{
    return strmap_find_h(m, k, n, hash_bytes(k, n));
}

static int strmap_grow_slots(cq_strmap *m)
{
    size_t ncap = m->cap * 2;
    uint32_t *ns = calloc(ncap, sizeof(*ns));
    if (!ns) return CQ_ENOMEM;
    for (size_t e = 0; e < m->count; e++) {
        size_t i = (size_t)m->hashes[e] & (ncap - 1);
        while (ns[i]) i = (i + 1) & (ncap - 1);
        ns[i] = (uint32_t)(e + 1);
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int cq_strmap_put(cq_strmap *m, const char *k, size_t n, int64_t v, size_t *idx, int *added)
{
    uint64_t h = hash_bytes(k, n);
    int64_t f = strmap_find_h(m, k, n, h);
    if (added) *added = 0;
    if (f >= 0) {
        if (idx) *idx = (size_t)f;
        return 0;
    }
    if (n > UINT32_MAX || m->count >= UINT32_MAX - 1) return CQ_ENOMEM;
    if ((m->count + 1) * 2 > m->cap && strmap_grow_slots(m)) return CQ_ENOMEM;
    if (m->count == m->ecap) {
        size_t ne = m->ecap ? m->ecap * 2 : 64;
        uint64_t *hh = realloc(m->hashes, ne * sizeof(*hh));
        if (!hh) return CQ_ENOMEM;
        m->hashes = hh;
        size_t *ko = realloc(m->koff, ne * sizeof(*ko));
        if (!ko) return CQ_ENOMEM;
        m->koff = ko;
        uint32_t *kl = realloc(m->klen, ne * sizeof(*kl));
        if (!kl) return CQ_ENOMEM;
        m->klen = kl;
        int64_t *vv = realloc(m->vals, ne * sizeof(*vv));
        if (!vv) return CQ_ENOMEM;
        m->vals = vv;
        m->ecap = ne;
    }
    if (m->asize + n + 1 > m->acap) {
        size_t na = m->acap ? m->acap : 1024;
        while (na < m->asize + n + 1) na *= 2;
        char *a = realloc(m->arena, na);
        if (!a) return CQ_ENOMEM;
        m->arena = a;
        m->acap = na;
    }
    size_t e = m->count++;
    memcpy(m->arena + m->asize, k, n);
    m->arena[m->asize + n] = 0;
    m->koff[e] = m->asize;
    m->klen[e] = (uint32_t)n;
    m->asize += n + 1;
    m->hashes[e] = h;
    m->vals[e] = v;
    size_t i = (size_t)h & (m->cap - 1);
    while (m->slots[i]) i = (i + 1) & (m->cap - 1);
    m->slots[i] = (uint32_t)(e + 1);
    if (idx) *idx = e;
    if (added) *added = 1;
    return 0;
}

/* ------------------------------------------------------------ u64map */
int cq_u64map_init(cq_u64map *m, size_t expect)
{
    memset(m, 0, sizeof(*m));
    m->cap = pow2_at_least(expect * 2 + 1);
    m->keys = malloc(m->cap * sizeof(*m->keys));
    m->vals = malloc(m->cap * sizeof(*m->vals));
    m->used = calloc(m->cap, 1);
    if (!m->keys || !m->vals || !m->used) {
        cq_u64map_free(m);
        return CQ_ENOMEM;
    }
    return 0;
}

void cq_u64map_free(cq_u64map *m)
{
    free(m->keys); free(m->vals); free(m->used);
    memset(m, 0, sizeof(*m));
}

int64_t *cq_u64map_get(const cq_u64map *m, uint64_t k)
{
    if (!m->cap) return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)mix64(k) & mask;; i = (i + 1) & mask) {
        if (!m->used[i]) return NULL;
        if (m->keys[i] == k) return &m->vals[i];
    }
}

int64_t *cq_u64map_upsert(cq_u64map *m, uint64_t k, int64_t v0, int *added)
{
    if (added) *added = 0;
    int64_t *p = cq_u64map_get(m, k);
    if (p) return p;
    if ((m->count + 1) * 2 > m->cap) {
        cq_u64map n2;
        if (cq_u64map_init(&n2, m->cap)) return NULL;   /* doubles capacity */
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->used[i]) continue;
            size_t j = (size_t)mix64(m->keys[i]) & (n2.cap - 1);
            while (n2.used[j]) j = (j + 1) & (n2.cap - 1);
            n2.used[j] = 1; n2.keys[j] = m->keys[i]; n2.vals[j] = m->vals[i];
        }
        n2.count = m->count;
        cq_u64map_free(m);
        *m = n2;
    }
    size_t i = (size_t)mix64(k) & (m->cap - 1);
    while (m->used[i]) i = (i + 1) & (m->cap - 1);
    m->used[i] = 1; m->keys[i] = k; m->vals[i] = v0;
    m->count++;
    if (added) *added = 1;
    return &m->vals[i];
}

/* ------------------------------------------------------------ helpers */
typedef struct ivec {
    int32_t *v;
    size_t n, cap;
} ivec;

static int ivec_push(ivec *a, int32_t x)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 256;
        int32_t *p = realloc(a->v, nc * sizeof(*p));
        if (!p) return CQ_ENOMEM;
        a->v = p;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return 0;
}

/* Bytes of the UTF-8 character starting with lead byte c (1 for invalid). */
static inline size_t utf8_len(uint8_t c)
{
    if (c < 0xC0) return 1;
    if (c < 0xE0) return 2;
    if (c < 0xF0) return 3;
    if (c < 0xF8) return 4;
    return 1;
}

/* ------------------------------------------------------------ construction */
int cq_tok_alloc(int kind, int n, cq_tokenizer **out)
{
    *out = NULL;
    if (n <= 0 || n > (1 << 24)) {
        cq_error("tokenizer: vocab size %d out of range [1, %d]", n, 1 << 24);
        return CQ_EINVAL;
    }
    cq_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) return CQ_ENOMEM;
    t->kind = kind;
    t->n_vocab = n;
    t->bos = t->eos = t->unk = -1;
    t->lead = -2;
    t->byte_fallback = 1;
    t->tok = calloc((size_t)n, sizeof(*t->tok));
    t->tok_len = calloc((size_t)n, sizeof(*t->tok_len));
    t->dec = calloc((size_t)n, sizeof(*t->dec));
    t->dec_len = calloc((size_t)n, sizeof(*t->dec_len));
    t->scores = calloc((size_t)n, sizeof(*t->scores));
    t->types = calloc((size_t)n, sizeof(*t->types));
    if (!t->tok || !t->tok_len || !t->dec || !t->dec_len || !t->scores || !t->types) {
        cq_tokenizer_destroy(&t);
        return CQ_ENOMEM;
    }
    for (int i = 0; i < 256; i++) t->byte_tok[i] = -1;
    *out = t;
    return 0;
}

int cq_tok_set_text(cq_tokenizer *t, int32_t id, const char *s, size_t n)
{
    if (id < 0 || id >= t->n_vocab || n > (1u << 20)) return CQ_EINVAL;
    char *p = malloc(n + 1);
    if (!p) return CQ_ENOMEM;
    memcpy(p, s, n);
    p[n] = 0;
    free(t->tok[id]);
    t->tok[id] = p;
    t->tok_len[id] = (uint32_t)n;
    return 0;
}

static int make_dec(cq_tokenizer *t, int32_t id)
{
    const char *s = t->tok[id];
    size_t n = t->tok_len[id];
    int type = t->types[id];
    char *d = malloc(n + 1);
    if (!d) return CQ_ENOMEM;
    size_t k = 0;
    if (type == CQ_TOKTYPE_CONTROL || type == CQ_TOKTYPE_UNUSED) {
        /* no text */
    } else if (type == CQ_TOKTYPE_BYTE) {
        int b = t->kind == CQ_TOK_SPM ? cq_parse_byte_token(s, n) : (n == 1 ? (uint8_t)s[0] : -1);
        if (b < 0) {
            free(d);
            return CQ_EBADMSG;
        }
        d[k++] = (char)b;
    } else if (t->kind == CQ_TOK_SPM) {
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                d[k++] = ' ';
                i += 3;
            } else {
                d[k++] = s[i++];
            }
        }
    } else {
        memcpy(d, s, n);
        k = n;
    }
    d[k] = 0;
    t->dec[id] = d;
    t->dec_len[id] = (uint32_t)k;
    return 0;
}

int cq_tok_finalize(cq_tokenizer *t, int dup_last_wins, const char *what)
{
    if (!what) what = "tokenizer";
    int r = cq_strmap_init(&t->vocab, (size_t)t->n_vocab);
    if (r) return r;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!t->tok[id]) {
            cq_error("%s: token id %d has no text (ids must be 0..%d without holes)", what, id,
                     t->n_vocab - 1);
            return CQ_EBADMSG;
        }
        size_t e;
        int added;
        r = cq_strmap_put(&t->vocab, t->tok[id], t->tok_len[id], id, &e, &added);
        if (r) return r;
        if (!added) {
            if (!dup_last_wins) {
                cq_error("%s: duplicate token \"%.64s\" (ids %d and %d)", what, t->tok[id],
                         (int)t->vocab.vals[e], id);
                return CQ_EBADMSG;
            }
            cq_debug("%s: duplicate token \"%.64s\" (ids %d and %d), keeping %d", what, t->tok[id],
                     (int)t->vocab.vals[e], id, id);
            t->vocab.vals[e] = id;
        }
    }
    for (int i = 0; i < 256; i++) t->byte_tok[i] = -1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->kind == CQ_TOK_SPM) {
            if (t->types[id] == CQ_TOKTYPE_BYTE) {
                int b = cq_parse_byte_token(t->tok[id], t->tok_len[id]);
                if (b < 0) {
                    cq_error("%s: token %d has type byte but is \"%.64s\", not <0xNN>", what, id,
                             t->tok[id]);
                    return CQ_EBADMSG;
                }
                if (t->byte_tok[b] < 0) t->byte_tok[b] = id;
            }
        } else if (t->tok_len[id] == 1 && t->types[id] != CQ_TOKTYPE_CONTROL) {
            t->byte_tok[(uint8_t)t->tok[id][0]] = id;
        }
        if ((r = make_dec(t, id))) {
            cq_error("%s: token %d: bad byte token", what, id);
            return r;
        }
    }
    if (t->kind == CQ_TOK_BYTE) {
        for (int b = 0; b < 256; b++) {
            if (t->byte_tok[b] < 0) {
                cq_error("%s: byte-level vocab has no token for byte 0x%02X", what, b);
                return CQ_EBADMSG;
            }
        }
    }
    for (int32_t *sp = &t->bos; sp <= &t->unk; sp++) {   /* bos, eos, unk */
        if (*sp >= t->n_vocab) {
            cq_error("%s: special token id %d out of range (vocab %d)", what, *sp, t->n_vocab);
            return CQ_EINVAL;
        }
    }
    return 0;
}

int cq_tok_set_merges(cq_tokenizer *t, const int32_t *a, const int32_t *b, int n, const char *what)
{
    if (!what) what = "tokenizer";
    if (n < 0) return CQ_EINVAL;
    t->merge_a = malloc(((size_t)n + 1) * sizeof(int32_t));
    t->merge_b = malloc(((size_t)n + 1) * sizeof(int32_t));
    t->merge_res = malloc(((size_t)n + 1) * sizeof(int32_t));
    if (!t->merge_a || !t->merge_b || !t->merge_res) return CQ_ENOMEM;
    int r = cq_u64map_init(&t->merge_map, (size_t)n);
    if (r) return r;
    char *buf = NULL;
    size_t bcap = 0;
    for (int i = 0; i < n; i++) {
        if (a[i] < 0 || a[i] >= t->n_vocab || b[i] < 0 || b[i] >= t->n_vocab) {
            cq_error("%s: merge %d: token id out of range", what, i);
            free(buf);
            return CQ_EBADMSG;
        }
        size_t la = t->tok_len[a[i]], lb = t->tok_len[b[i]];
        if (la + lb > bcap) {
            bcap = (la + lb) * 2;
            char *nb = realloc(buf, bcap);
            if (!nb) { free(buf); return CQ_ENOMEM; }
            buf = nb;
        }
        memcpy(buf, t->tok[a[i]], la);
        memcpy(buf + la, t->tok[b[i]], lb);
        int64_t e = cq_strmap_find(&t->vocab, buf, la + lb);
        if (e < 0) {
            cq_error("%s: merge %d (\"%.32s\" + \"%.32s\"): result is not in the vocab", what, i,
                     t->tok[a[i]], t->tok[b[i]]);
            free(buf);
            return CQ_EBADMSG;
        }
        t->merge_a[i] = a[i];
        t->merge_b[i] = b[i];
        t->merge_res[i] = (int32_t)t->vocab.vals[e];
        int added;
        int64_t *v = cq_u64map_upsert(&t->merge_map, cq_pair_key(a[i], b[i]), i, &added);
        if (!v) { free(buf); return CQ_ENOMEM; }
        *v = i;   /* a repeated pair takes its last rank, as `tokenizers` does */
    }
    free(buf);
    t->n_merges = n;
    t->use_merges = 1;
    return 0;
}

void cq_tokenizer_destroy(cq_tokenizer **tp)
{
    if (!tp || !*tp) return;
    cq_tokenizer *t = *tp;
    if (t->tok) for (int i = 0; i < t->n_vocab; i++) free(t->tok[i]);
    if (t->dec) for (int i = 0; i < t->n_vocab; i++) free(t->dec[i]);
    free(t->tok); free(t->tok_len); free(t->dec); free(t->dec_len);
    free(t->scores); free(t->types);
    cq_strmap_free(&t->vocab);
    free(t->merge_a); free(t->merge_b); free(t->merge_res);
    cq_u64map_free(&t->merge_map);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    free(t);
    *tp = NULL;
}

/* ------------------------------------------------------------ symbol heap */
typedef struct sym {
    int32_t prev, next;
    uint32_t off, n;      /* bytes in the (normalized) text; n == 0: merged away */
    int32_t id;
} sym;

typedef struct hitem {
    uint64_t key;         /* (priority << 32) | left index: smaller pops first */
    int32_t l, r;
    uint32_t size;        /* scores route: byte length of the pair */
} hitem;

typedef struct work {
    sym *s;     size_t scap;
    hitem *h;   size_t hcap, hn;
    ivec tmp;
} work;

static void work_free(work *w)
{
    free(w->s); free(w->h); free(w->tmp.v);
    memset(w, 0, sizeof(*w));
}

static int work_syms(work *w, size_t n)
{
    if (n <= w->scap) return 0;
    size_t nc = w->scap ? w->scap : 64;
    while (nc < n) nc *= 2;
    sym *p = realloc(w->s, nc * sizeof(*p));
    if (!p) return CQ_ENOMEM;
    w->s = p;
    w->scap = nc;
    return 0;
}

static int heap_push(work *w, hitem it)
{
    if (w->hn == w->hcap) {
        size_t nc = w->hcap ? w->hcap * 2 : 64;
        hitem *p = realloc(w->h, nc * sizeof(*p));
        if (!p) return CQ_ENOMEM;
        w->h = p;
        w->hcap = nc;
    }
    size_t i = w->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (w->h[p].key <= it.key) break;
        w->h[i] = w->h[p];
        i = p;
    }
    w->h[i] = it;
    return 0;
}

static hitem heap_pop(work *w)
{
    hitem top = w->h[0];
    hitem last = w->h[--w->hn];
    size_t i = 0, n = w->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && w->h[c + 1].key < w->h[c].key) c++;
        if (last.key <= w->h[c].key) break;
        w->h[i] = w->h[c];
        i = c;
    }
    if (n) w->h[i] = last;
    return top;
}

/* Rank route: push the pair (l, r) if it is a merge. */
static int push_rank_pair(const cq_tokenizer *t, work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return 0;
    const int64_t *rank = cq_u64map_get(&t->merge_map, cq_pair_key(w->s[l].id, w->s[r].id));
    if (!rank) return 0;
    hitem it = { ((uint64_t)*rank << 32) | (uint32_t)l, l, r, 0 };
    return heap_push(w, it);
}

/* Applies the merges by rank to the linked symbols w->s[0..n). Symbols keep
 * their position as index, so the heap's tie-break on the left index is
 * "leftmost first". */
static int bpe_merge_ranks(const cq_tokenizer *t, work *w, size_t n)
{
    int r;
    w->hn = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if ((r = push_rank_pair(t, w, (int32_t)i, (int32_t)i + 1))) return r;
    while (w->hn) {
        hitem it = heap_pop(w);
        sym *L = &w->s[it.l];
        if (L->n == 0 || L->next != it.r) continue;
        sym *R = &w->s[it.r];
        const int64_t *rank = cq_u64map_get(&t->merge_map, cq_pair_key(L->id, R->id));
        if (!rank || (uint64_t)*rank != (it.key >> 32)) continue;
        L->id = t->merge_res[*rank];
        L->n += R->n;
        L->next = R->next;
        R->n = 0;
        if (R->next >= 0) w->s[R->next].prev = it.l;
        if ((r = push_rank_pair(t, w, L->prev, it.l))) return r;
        if ((r = push_rank_pair(t, w, it.l, L->next))) return r;
    }
    return 0;
}

/* Scores route: key so that higher score pops first, then smaller left. */
static inline uint64_t score_key(float f, int32_t l)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);   /* ascending order */
    return ((uint64_t)(~u) << 32) | (uint32_t)l;      /* descending score */
}

static int push_score_pair(const cq_tokenizer *t, work *w, const char *text, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return 0;
    const sym *L = &w->s[l], *R = &w->s[r];
    int64_t e = cq_strmap_find(&t->vocab, text + L->off, L->n + R->n);
    if (e < 0) return 0;
    int32_t id = (int32_t)t->vocab.vals[e];
    hitem it = { score_key(t->scores[id], l), l, r, L->n + R->n };
    return heap_push(w, it);
}

static int bpe_merge_scores(const cq_tokenizer *t, work *w, const char *text, size_t n)
{
    int r;
    w->hn = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if ((r = push_score_pair(t, w, text, (int32_t)i, (int32_t)i + 1))) return r;
    while (w->hn) {
        hitem it = heap_pop(w);
        sym *L = &w->s[it.l];
        sym *R = &w->s[it.r];
        if (L->n == 0 || R->n == 0 || L->next != it.r || L->n + R->n != it.size) continue;
        L->n += R->n;
        L->next = R->next;
        R->n = 0;
        if (R->next >= 0) w->s[R->next].prev = it.l;
        if ((r = push_score_pair(t, w, text, L->prev, it.l))) return r;
        if ((r = push_score_pair(t, w, text, it.l, L->next))) return r;
    }
    return 0;
}

/* ------------------------------------------------------------ SPM encode */
static int push_bytes_or_unk(const cq_tokenizer *t, ivec *out, const char *s, size_t n)
{
    int all = t->byte_fallback;
    for (size_t i = 0; all && i < n; i++)
        if (t->byte_tok[(uint8_t)s[i]] < 0) all = 0;
    if (all) {
        for (size_t i = 0; i < n; i++)
            if (ivec_push(out, t->byte_tok[(uint8_t)s[i]])) return CQ_ENOMEM;
        return 0;
    }
    if (t->unk < 0) {
        cq_error("tokenizer: cannot encode \"%.*s\": not in the vocab, no byte tokens and no "
                 "unknown token", (int)(n < 16 ? n : 16), s);
        return CQ_EINVAL;
    }
    return ivec_push(out, t->unk) ? CQ_ENOMEM : 0;
}

static int spm_encode_segment(const cq_tokenizer *t, work *w, const char *s, size_t n, ivec *out)
{
    if (n == 0) return 0;
    int r = work_syms(w, n);
    if (r) return r;
    size_t ns = 0;
    if (t->use_merges && t->ignore_merges) {
        int64_t e = cq_strmap_find(&t->vocab, s, n);
        if (e >= 0) return ivec_push(out, (int32_t)t->vocab.vals[e]) ? CQ_ENOMEM : 0;
    }
    if (t->use_merges) {
        /* tokenizers' BPE: a char in the vocab is one symbol; otherwise its
         * bytes (byte fallback) or the unknown token. */
        for (size_t i = 0; i < n;) {
            size_t cl = utf8_len((uint8_t)s[i]);
            if (cl > n - i) cl = n - i;
            int64_t e = cq_strmap_find(&t->vocab, s + i, cl);
            w->tmp.n = 0;
            if (e >= 0) {
                if (ivec_push(&w->tmp, (int32_t)t->vocab.vals[e])) return CQ_ENOMEM;
            } else if ((r = push_bytes_or_unk(t, &w->tmp, s + i, cl))) {
                return r;
            }
            if ((r = work_syms(w, ns + w->tmp.n))) return r;
            for (size_t k = 0; k < w->tmp.n; k++) {
                sym *y = &w->s[ns];
                y->prev = (int32_t)ns - 1;
                y->next = (int32_t)ns + 1;
                y->off = (uint32_t)i;
                y->n = 1;
                y->id = w->tmp.v[k];
                ns++;
            }
            i += cl;
        }
        w->s[ns - 1].next = -1;
        if ((r = bpe_merge_ranks(t, w, ns))) return r;
        for (int32_t i = 0; i >= 0; i = w->s[i].next)
            if (ivec_push(out, w->s[i].id)) return CQ_ENOMEM;
        return 0;
    }
    /* llama.cpp llm_tokenizer_spm */
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_len((uint8_t)s[i]);
        if (cl > n - i) cl = n - i;
        sym *y = &w->s[ns];
        y->prev = (int32_t)ns - 1;
        y->next = (int32_t)ns + 1;
        y->off = (uint32_t)i;
        y->n = (uint32_t)cl;
        y->id = -1;
        ns++;
        i += cl;
    }
    w->s[ns - 1].next = -1;
    if ((r = bpe_merge_scores(t, w, s, ns))) return r;
    for (int32_t i = 0; i >= 0; i = w->s[i].next) {
        const sym *y = &w->s[i];
        int64_t e = cq_strmap_find(&t->vocab, s + y->off, y->n);
        if (e >= 0) {
            if (ivec_push(out, (int32_t)t->vocab.vals[e])) return CQ_ENOMEM;
        } else if ((r = push_bytes_or_unk(t, out, s + y->off, y->n))) {
            return r;
        }
    }
    return 0;
}

/* Applies the normalizer ops; *dst malloc'ed. */
static int spm_normalize(const cq_tokenizer *t, const char *text, size_t len, char **dst,
                         size_t *dlen)
{
    char *cur = malloc(len + 1);
    if (!cur) return CQ_ENOMEM;
    memcpy(cur, text, len);
    size_t n = len;
    for (int k = 0; k < t->n_norm; k++) {
        const cq_norm_op *op = &t->norm[k];
        if (op->type == CQ_NORM_PREPEND || op->type == CQ_NORM_PREPEND_IF_ABSENT) {
            if (n == 0) continue;
            if (op->type == CQ_NORM_PREPEND_IF_ABSENT && n >= op->na &&
                memcmp(cur, op->a, op->na) == 0)
                continue;
            char *nb = malloc(n + op->na + 1);
            if (!nb) { free(cur); return CQ_ENOMEM; }
            memcpy(nb, op->a, op->na);
            memcpy(nb + op->na, cur, n);
            free(cur);
            cur = nb;
            n += op->na;
        } else if (op->type == CQ_NORM_REPLACE && op->na > 0) {
            size_t cnt = 0;
            for (size_t i = 0; i + op->na <= n;) {
                if (memcmp(cur + i, op->a, op->na) == 0) { cnt++; i += op->na; }
                else i++;
            }
            if (!cnt) continue;
            size_t nn = n - cnt * op->na + cnt * op->nb;
            char *nb = malloc(nn + 1);
            if (!nb) { free(cur); return CQ_ENOMEM; }
            size_t o = 0;
            for (size_t i = 0; i < n;) {
                if (i + op->na <= n && memcmp(cur + i, op->a, op->na) == 0) {
                    memcpy(nb + o, op->b, op->nb);
                    o += op->nb;
                    i += op->na;
                } else {
                    nb[o++] = cur[i++];
                }
            }
            free(cur);
            cur = nb;
            n = nn;
        }
    }
    *dst = cur;
    *dlen = n;
    return 0;
}

static int spm_encode(const cq_tokenizer *t, const char *text, size_t len, ivec *out)
{
    if (len == 0) return 0;
    char *s;
    size_t n;
    int r = spm_normalize(t, text, len, &s, &n);
    if (r) return r;
    if (n > UINT32_MAX / 2) {
        free(s);
        cq_error("tokenizer: text too long (%zu bytes)", len);
        return CQ_EINVAL;
    }
    work w = {0};
    if (!t->split_meta) {
        r = spm_encode_segment(t, &w, s, n, out);
    } else {
        /* Metaspace split: a word starts at each "▁" (merged with next) */
        static const char rep[] = "\xE2\x96\x81";
        size_t start = 0;
        for (size_t i = 1; i + 3 <= n && !r; i++) {
            if (memcmp(s + i, rep, 3) == 0) {
                r = spm_encode_segment(t, &w, s + start, i - start, out);
                start = i;
                i += 2;
            }
        }
        if (!r) r = spm_encode_segment(t, &w, s + start, n - start, out);
    }
    work_free(&w);
    free(s);
    return r;
}

/* ------------------------------------------------------------ byte-level */
enum { C_LET, C_DIG, C_WS, C_PUN };

static inline int bcls(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return C_LET;
    if (c >= '0' && c <= '9') return C_DIG;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return C_WS;
    return C_PUN;
}

/* GPT-2's pattern with ASCII classes:
 *   's|'t|'re|'ve|'m|'ll|'d| ?L+| ?N+| ?P+|W+(?!\S)|W+
 * L = [A-Za-z] or any byte >= 0x80, N = [0-9], W = [\t\n\v\f\r ], P = rest. */
size_t cq_bpe_next_word(const char *text, size_t len)
{
    const uint8_t *s = (const uint8_t *)text;
    if (len == 0) return 0;
    if (s[0] == '\'' && len >= 2) {
        uint8_t c = s[1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
        if (len >= 3 && ((c == 'r' && s[2] == 'e') || (c == 'v' && s[2] == 'e') ||
                         (c == 'l' && s[2] == 'l')))
            return 3;
    }
    size_t i = 0;
    if (s[0] == ' ' && len >= 2 && bcls(s[1]) != C_WS) i = 1;
    int k = bcls(s[i]);
    if (k != C_WS) {
        size_t j = i + 1;
        while (j < len && bcls(s[j]) == k) j++;
        return j;
    }
    size_t j = 1;
    while (j < len && bcls(s[j]) == C_WS) j++;
    if (j == len) return j;      /* whitespace up to the end */
    return j >= 2 ? j - 1 : 1;   /* leave the last one for " ?X+" (or alone) */
}

static int byte_encode_word(const cq_tokenizer *t, work *w, const char *s, size_t n, ivec *out)
{
    if (t->ignore_merges) {
        int64_t e = cq_strmap_find(&t->vocab, s, n);
        if (e >= 0) return ivec_push(out, (int32_t)t->vocab.vals[e]) ? CQ_ENOMEM : 0;
    }
    int r = work_syms(w, n);
    if (r) return r;
    for (size_t i = 0; i < n; i++) {
        sym *y = &w->s[i];
        y->prev = (int32_t)i - 1;
        y->next = i + 1 < n ? (int32_t)i + 1 : -1;
        y->off = (uint32_t)i;
        y->n = 1;
        y->id = t->byte_tok[(uint8_t)s[i]];
    }
    if ((r = bpe_merge_ranks(t, w, n))) return r;
    for (int32_t i = 0; i >= 0; i = w->s[i].next)
        if (ivec_push(out, w->s[i].id)) return CQ_ENOMEM;
    return 0;
}

#define WORD_CACHE_MAX_LEN 64

static int byte_encode(const cq_tokenizer *t, const char *text, size_t len, ivec *out)
{
    if (len > UINT32_MAX / 2) {
        cq_error("tokenizer: text too long (%zu bytes)", len);
        return CQ_EINVAL;
    }
    work w = {0};
    cq_strmap cache;    /* word -> (offset in pool << 8) | count */
    ivec pool = {0};
    int r = cq_strmap_init(&cache, 1024);
    if (r) return r;
    for (size_t i = 0; i < len && !r;) {
        size_t wl = cq_bpe_next_word(text + i, len - i);
        if (wl <= WORD_CACHE_MAX_LEN) {
            int64_t e = cq_strmap_find(&cache, text + i, wl);
            if (e >= 0) {
                int64_t v = cache.vals[e];
                size_t off = (size_t)(v >> 8), cnt = (size_t)(v & 0xFF);
                for (size_t k = 0; k < cnt && !r; k++)
                    if (ivec_push(out, pool.v[off + k])) r = CQ_ENOMEM;
            } else {
                size_t before = out->n;
                r = byte_encode_word(t, &w, text + i, wl, out);
                if (!r && cache.count < (1u << 20)) {
                    size_t off = pool.n;
                    for (size_t k = before; k < out->n && !r; k++)
                        if (ivec_push(&pool, out->v[k])) r = CQ_ENOMEM;
                    if (!r) r = cq_strmap_put(&cache, text + i, wl,
                                              ((int64_t)off << 8) | (int64_t)(out->n - before),
                                              NULL, NULL);
                }
            }
        } else {
            r = byte_encode_word(t, &w, text + i, wl, out);
        }
        i += wl;
    }
    cq_strmap_free(&cache);
    free(pool.v);
    work_free(&w);
    return r;
}

/* ------------------------------------------------------------ public API */
int cq_tokenizer_encode(const cq_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t **ids, size_t *n)
{
    CQ_CHECK_ARG(t && ids && n, CQ_EINVAL);
    *ids = NULL;
    *n = 0;
    CQ_CHECK_ARG(text || len == 0, CQ_EINVAL);
    ivec out = {0};
    int r = 0;
    if (add_bos) {
        if (t->bos < 0) {
            cq_error("tokenizer: add_bos requested but the tokenizer has no BOS token");
            return CQ_EINVAL;
        }
        r = ivec_push(&out, t->bos);
    }
    if (!r) r = t->kind == CQ_TOK_SPM ? spm_encode(t, text, len, &out)
                                      : byte_encode(t, text, len, &out);
    if (!r && !out.v) {   /* a non-NULL result even when empty */
        r = ivec_push(&out, 0);
        out.n = 0;
    }
    if (r) {
        free(out.v);
        return r;
    }
    *ids = out.v;
    *n = out.n;
    return 0;
}

int cq_tokenizer_decode(const cq_tokenizer *t, const int32_t *ids, size_t n, char **text,
                        size_t *len)
{
    CQ_CHECK_ARG(t && text && (ids || n == 0), CQ_EINVAL);
    *text = NULL;
    if (len) *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) {
            cq_error("tokenizer: decode: id %d at position %zu out of range (vocab %d)", ids[i], i,
                     t->n_vocab);
            return CQ_EINVAL;
        }
        total += t->dec_len[ids[i]];
    }
    char *s = malloc(total + 1);
    if (!s) return CQ_ENOMEM;
    size_t o = 0;
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        int type = t->types[id];
        if (type == CQ_TOKTYPE_CONTROL || type == CQ_TOKTYPE_UNUSED) continue;
        const char *d = t->dec[id];
        size_t dl = t->dec_len[id];
        if (first && t->kind == CQ_TOK_SPM && type != CQ_TOKTYPE_BYTE && dl > 0 && d[0] == ' ') {
            d++;
            dl--;
        }
        first = 0;
        memcpy(s + o, d, dl);
        o += dl;
    }
    s[o] = 0;
    *text = s;
    if (len) *len = o;
    return 0;
}

const char *cq_tokenizer_token_piece(const cq_tokenizer *t, int32_t id, size_t *len)
{
    if (!t || id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->dec_len[id];
    return t->dec[id];
}

const char *cq_tokenizer_token_text(const cq_tokenizer *t, int32_t id, size_t *len)
{
    if (!t || id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->tok_len[id];
    return t->tok[id];
}

int32_t cq_tokenizer_find(const cq_tokenizer *t, const char *text, size_t len)
{
    if (!t || (!text && len)) return -1;
    int64_t e = cq_strmap_find(&t->vocab, text ? text : "", len);
    return e < 0 ? -1 : (int32_t)t->vocab.vals[e];
}

int cq_tokenizer_kind_of(const cq_tokenizer *t) { return t ? t->kind : 0; }
int cq_tokenizer_n_vocab(const cq_tokenizer *t) { return t ? t->n_vocab : 0; }
int cq_tokenizer_n_merges(const cq_tokenizer *t) { return t ? t->n_merges : 0; }
int32_t cq_tokenizer_bos(const cq_tokenizer *t) { return t ? t->bos : -1; }
int32_t cq_tokenizer_lead(const cq_tokenizer *t)
{
    if (!t) return -1;
    if (t->lead != -2) return t->lead;
    return t->kind == CQ_TOK_SPM ? t->bos : -1;   /* sentencepiece LLaMA: add_bos_token */
}
int32_t cq_tokenizer_eos(const cq_tokenizer *t) { return t ? t->eos : -1; }
int32_t cq_tokenizer_unk(const cq_tokenizer *t) { return t ? t->unk : -1; }

int32_t cq_tokenizer_token_type(const cq_tokenizer *t, int32_t id)
{
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    return t->types[id];
}

/* ------------------------------------------------------------ GGUF arrays */
static int set_llama_norm(cq_tokenizer *t)
{
    t->norm = calloc(2, sizeof(*t->norm));
    if (!t->norm) return CQ_ENOMEM;
    t->n_norm = 2;
    t->norm[0].type = CQ_NORM_PREPEND;
    t->norm[0].a = strdup("\xE2\x96\x81");
    t->norm[0].na = 3;
    t->norm[1].type = CQ_NORM_REPLACE;
    t->norm[1].a = strdup(" ");
    t->norm[1].na = 1;
    t->norm[1].b = strdup("\xE2\x96\x81");
    t->norm[1].nb = 3;
    if (!t->norm[0].a || !t->norm[1].a || !t->norm[1].b) return CQ_ENOMEM;
    return 0;
}

int cq_tokenizer_from_spm_arrays(const char *const *tokens, const float *scores,
                                 const int32_t *types, int n, int bos, int eos, int unk,
                                 cq_tokenizer **out)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    *out = NULL;
    CQ_CHECK_ARG(tokens && n > 0, CQ_EINVAL);
    if (bos < -1 || bos >= n || eos < -1 || eos >= n || unk < -1 || unk >= n) {
        cq_error("tokenizer arrays: special ids bos=%d eos=%d unk=%d out of range (vocab %d)", bos,
                 eos, unk, n);
        return CQ_EINVAL;
    }
    cq_tokenizer *t;
    int r = cq_tok_alloc(CQ_TOK_SPM, n, &t);
    if (r) return r;
    for (int i = 0; i < n && !r; i++) {
        if (!tokens[i]) {
            cq_error("tokenizer arrays: token %d is NULL", i);
            r = CQ_EINVAL;
            break;
        }
        size_t l = strlen(tokens[i]);
        if ((r = cq_tok_set_text(t, i, tokens[i], l))) break;
        if (scores) {
            if (scores[i] != scores[i]) {
                cq_error("tokenizer arrays: score of token %d is NaN", i);
                r = CQ_EBADMSG;
                break;
            }
            t->scores[i] = scores[i];
        }
        if (types) {
            if (types[i] < CQ_TOKTYPE_NORMAL || types[i] > CQ_TOKTYPE_BYTE) {
                cq_error("tokenizer arrays: token %d has unknown type %d", i, types[i]);
                r = CQ_EBADMSG;
                break;
            }
            t->types[i] = types[i];
        } else {
            t->types[i] = cq_parse_byte_token(tokens[i], l) >= 0 ? CQ_TOKTYPE_BYTE
                                                              : CQ_TOKTYPE_NORMAL;
        }
    }
    if (!r && !types) {
        if (bos >= 0) t->types[bos] = CQ_TOKTYPE_CONTROL;
        if (eos >= 0) t->types[eos] = CQ_TOKTYPE_CONTROL;
        if (unk >= 0) t->types[unk] = CQ_TOKTYPE_UNKNOWN;
    }
    if (!r) {
        t->bos = bos;
        t->eos = eos;
        t->unk = unk;
        t->use_merges = 0;
        r = cq_tok_finalize(t, 1, "tokenizer arrays");
    }
    if (!r) r = set_llama_norm(t);
    if (r) {
        cq_tokenizer_destroy(&t);
        return r;
    }
    *out = t;
    return 0;
}
