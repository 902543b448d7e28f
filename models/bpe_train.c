/* cherryq: byte-level BPE training.
 *
 * 1. Pre-tokenize with cq_bpe_next_word and count unique words (hash map).
 *    Words longer than TRAIN_MAX_WORD bytes are counted in chunks of that
 *    size (only the statistics see the chunks; encoding does not split).
 * 2. Count adjacent pairs over unique words weighted by their frequency; each
 *    pair keeps the list of words it occurs in.
 * 3. Repeatedly merge the most frequent pair (ties: smallest (left id, right
 *    id)). Only the words listed for the pair are rewritten: their pairs are
 *    subtracted, the merge applied, their pairs added back. A max-heap with
 *    lazy entries finds the best pair: an entry whose count is no longer the
 *    pair's count is pushed again with the current one.
 * If a merge yields a byte string that is already a token (a+bc and ab+c),
 * the merge is recorded and reuses that id, as `tokenizers`' trainer does.
 */
#include "tokenizer_internal.h"

#include <stdlib.h>

#define TRAIN_MAX_WORD 1024

typedef struct pair_info {
    int32_t a, b;
    int64_t count;
    int32_t *words;       /* words it occurs in (may hold stale entries) */
    uint32_t nw, cw;
    uint32_t stamp;       /* merge round that last queued it */
} pair_info;

typedef struct pq_item {
    int64_t count;
    int32_t a, b;
    uint32_t pair;
} pq_item;

typedef struct trainer {
    /* words */
    size_t nwords;
    int64_t *freq;
    size_t *woff;         /* offset of each word's symbols in syms */
    uint32_t *wlen;       /* current number of symbols */
    int32_t *syms;
    uint32_t *wstamp;
    /* pairs */
    cq_u64map pmap;       /* pair key -> index in pairs */
    pair_info *pairs;
    size_t npairs, cpairs;
    pq_item *heap;
    size_t hn, hcap;
    uint32_t *touched;
    size_t ntouched, ctouched;
} trainer;

static inline int pq_less(const pq_item *x, const pq_item *y)   /* x pops before y */
{
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int pq_push(trainer *tr, pq_item it)
{
    if (tr->hn == tr->hcap) {
        size_t nc = tr->hcap ? tr->hcap * 2 : 1024;
        pq_item *p = realloc(tr->heap, nc * sizeof(*p));
        if (!p) return CQ_ENOMEM;
        tr->heap = p;
        tr->hcap = nc;
    }
    size_t i = tr->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!pq_less(&it, &tr->heap[p])) break;
        tr->heap[i] = tr->heap[p];
        i = p;
    }
    tr->heap[i] = it;
    return 0;
}

static pq_item pq_pop(trainer *tr)
{
    pq_item top = tr->heap[0];
    pq_item last = tr->heap[--tr->hn];
    size_t i = 0, n = tr->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pq_less(&tr->heap[c + 1], &tr->heap[c])) c++;
        if (!pq_less(&tr->heap[c], &last)) break;
        tr->heap[i] = tr->heap[c];
        i = c;
    }
    if (n) tr->heap[i] = last;
    return top;
}

/* Index of pair (a, b), created with count 0 if new; -1 on ENOMEM. */
static int64_t pair_index(trainer *tr, int32_t a, int32_t b)
{
    int added;
    int64_t *v = cq_u64map_upsert(&tr->pmap, cq_pair_key(a, b), (int64_t)tr->npairs, &added);
    if (!v) return -1;
    if (added) {
        if (tr->npairs == tr->cpairs) {
            size_t nc = tr->cpairs ? tr->cpairs * 2 : 4096;
            pair_info *p = realloc(tr->pairs, nc * sizeof(*p));
            if (!p) return -1;
            tr->pairs = p;
            tr->cpairs = nc;
        }
        pair_info *p = &tr->pairs[tr->npairs++];
        memset(p, 0, sizeof(*p));
        p->a = a;
        p->b = b;
        p->stamp = UINT32_MAX;
    }
    return *v;
}

static int pair_add_word(pair_info *p, int32_t w)
{
    if (p->nw && p->words[p->nw - 1] == w) return 0;
    if (p->nw == p->cw) {
        if (p->cw > UINT32_MAX / 2) return CQ_ENOMEM;
        uint32_t nc = p->cw ? p->cw * 2 : 4;
        int32_t *q = realloc(p->words, nc * sizeof(*q));
        if (!q) return CQ_ENOMEM;
        p->words = q;
        p->cw = nc;
    }
    p->words[p->nw++] = w;
    return 0;
}

/* Adds sign * freq to every pair of word w. With track, pairs containing z
 * get w in their word list and are queued (touched) for a heap push. */
static int word_pairs(trainer *tr, size_t w, int sign, int track, int32_t z, uint32_t round)
{
    const int32_t *s = tr->syms + tr->woff[w];
    uint32_t n = tr->wlen[w];
    for (uint32_t i = 0; i + 1 < n; i++) {
        int64_t pi = pair_index(tr, s[i], s[i + 1]);
        if (pi < 0) return CQ_ENOMEM;
        pair_info *p = &tr->pairs[pi];
        p->count += sign * tr->freq[w];
        if (track && (s[i] == z || s[i + 1] == z)) {
            if (pair_add_word(p, (int32_t)w)) return CQ_ENOMEM;
            if (p->stamp != round) {
                p->stamp = round;
                if (tr->ntouched == tr->ctouched) {
                    size_t nc = tr->ctouched ? tr->ctouched * 2 : 1024;
                    uint32_t *q = realloc(tr->touched, nc * sizeof(*q));
                    if (!q) return CQ_ENOMEM;
                    tr->touched = q;
                    tr->ctouched = nc;
                }
                tr->touched[tr->ntouched++] = (uint32_t)pi;
            }
        }
    }
    return 0;
}

static void trainer_free(trainer *tr)
{
    free(tr->freq); free(tr->woff); free(tr->wlen); free(tr->syms); free(tr->wstamp);
    for (size_t i = 0; i < tr->npairs; i++) free(tr->pairs[i].words);
    free(tr->pairs);
    cq_u64map_free(&tr->pmap);
    free(tr->heap);
    free(tr->touched);
}

int cq_bpe_train(const char *text, size_t len, int vocab_size, cq_tokenizer **out)
{
    CQ_CHECK_ARG(out, CQ_EINVAL);
    *out = NULL;
    CQ_CHECK_ARG(text || len == 0, CQ_EINVAL);
    if (vocab_size < CQ_BPE_FIRST_MERGE || vocab_size > (1 << 24)) {
        cq_error("bpe_train: vocab_size %d out of range [%d, %d]", vocab_size, CQ_BPE_FIRST_MERGE,
                 1 << 24);
        return CQ_EINVAL;
    }
    double t0 = cq_time_sec();
    trainer tr;
    memset(&tr, 0, sizeof(tr));
    cq_strmap words;
    cq_strmap vocab;     /* text of every token so far -> id */
    char **tok = NULL;   /* texts by id */
    uint32_t *tok_len = NULL;
    int32_t *ma = NULL, *mb = NULL;
    int n_tok = 0, n_merges = 0;
    cq_tokenizer *t = NULL;
    int r = cq_strmap_init(&words, 4096);
    if (r) return r;
    if ((r = cq_strmap_init(&vocab, (size_t)vocab_size))) {
        cq_strmap_free(&words);
        return r;
    }

    /* 1. unique words */
    for (size_t i = 0; i < len;) {
        size_t wl = cq_bpe_next_word(text + i, len - i);
        for (size_t o = 0; o < wl; o += TRAIN_MAX_WORD) {
            size_t cl = wl - o < TRAIN_MAX_WORD ? wl - o : TRAIN_MAX_WORD;
            size_t e;
            if ((r = cq_strmap_put(&words, text + i + o, cl, 0, &e, NULL))) goto done;
            words.vals[e]++;
        }
        i += wl;
    }
    tr.nwords = words.count;
    size_t total_syms = words.asize;   /* >= sum of word lengths */
    tr.freq = malloc((tr.nwords + 1) * sizeof(*tr.freq));
    tr.woff = malloc((tr.nwords + 1) * sizeof(*tr.woff));
    tr.wlen = malloc((tr.nwords + 1) * sizeof(*tr.wlen));
    tr.wstamp = malloc((tr.nwords + 1) * sizeof(*tr.wstamp));
    tr.syms = malloc((total_syms + 1) * sizeof(*tr.syms));
    if (!tr.freq || !tr.woff || !tr.wlen || !tr.wstamp || !tr.syms) { r = CQ_ENOMEM; goto done; }
    size_t so = 0;
    for (size_t w = 0; w < tr.nwords; w++) {
        size_t wl;
        const char *k = cq_strmap_key(&words, w, &wl);
        tr.freq[w] = words.vals[w];
        tr.woff[w] = so;
        tr.wlen[w] = (uint32_t)wl;
        tr.wstamp[w] = UINT32_MAX;
        for (size_t i = 0; i < wl; i++) tr.syms[so + i] = (uint8_t)k[i];
        so += wl;
    }

    /* base vocab */
    int max_tok = vocab_size + 1;
    tok = calloc((size_t)max_tok, sizeof(*tok));
    tok_len = calloc((size_t)max_tok, sizeof(*tok_len));
    size_t max_merges = 4096;
    ma = malloc(max_merges * sizeof(*ma));
    mb = malloc(max_merges * sizeof(*mb));
    if (!tok || !tok_len || !ma || !mb) { r = CQ_ENOMEM; goto done; }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (!(tok[b] = malloc(2))) { r = CQ_ENOMEM; goto done; }
        tok[b][0] = c;
        tok_len[b] = 1;
        if ((r = cq_strmap_put(&vocab, &c, 1, b, NULL, NULL))) goto done;
    }
    tok[CQ_BPE_BOS_ID] = strdup("<s>");
    tok_len[CQ_BPE_BOS_ID] = 3;
    tok[CQ_BPE_EOS_ID] = strdup("</s>");
    tok_len[CQ_BPE_EOS_ID] = 4;
    if (!tok[CQ_BPE_BOS_ID] || !tok[CQ_BPE_EOS_ID]) { r = CQ_ENOMEM; goto done; }
    n_tok = CQ_BPE_FIRST_MERGE;

    /* 2. pairs */
    if ((r = cq_u64map_init(&tr.pmap, 1 << 16))) goto done;
    for (size_t w = 0; w < tr.nwords; w++) {
        const int32_t *s = tr.syms + tr.woff[w];
        for (uint32_t i = 0; i + 1 < tr.wlen[w]; i++) {
            int64_t pi = pair_index(&tr, s[i], s[i + 1]);
            if (pi < 0) { r = CQ_ENOMEM; goto done; }
            tr.pairs[pi].count += tr.freq[w];
            if ((r = pair_add_word(&tr.pairs[pi], (int32_t)w))) goto done;
        }
    }
    for (size_t p = 0; p < tr.npairs; p++) {
        pq_item it = { tr.pairs[p].count, tr.pairs[p].a, tr.pairs[p].b, (uint32_t)p };
        if ((r = pq_push(&tr, it))) goto done;
    }

    /* 3. merges */
    char *cat = NULL;
    size_t catcap = 0;
    uint32_t round = 0;
    while (n_tok < vocab_size && tr.hn) {
        pq_item top = pq_pop(&tr);
        pair_info *p = &tr.pairs[top.pair];
        if (top.count != p->count) {
            if (p->count > 0) {
                top.count = p->count;
                if ((r = pq_push(&tr, top))) break;
            }
            continue;
        }
        if (p->count <= 0) break;
        int32_t a = p->a, b = p->b;
        /* the merged token */
        size_t ln = tok_len[a] + tok_len[b];
        if (ln > catcap) {
            catcap = 2 * ln + 64;
            char *nc = realloc(cat, catcap);
            if (!nc) { r = CQ_ENOMEM; break; }
            cat = nc;
        }
        memcpy(cat, tok[a], tok_len[a]);
        memcpy(cat + tok_len[a], tok[b], tok_len[b]);
        size_t e;
        int added;
        if ((r = cq_strmap_put(&vocab, cat, ln, n_tok, &e, &added))) break;
        int32_t z = (int32_t)vocab.vals[e];
        if (added) {
            if (!(tok[z] = malloc(ln + 1))) { r = CQ_ENOMEM; break; }
            memcpy(tok[z], cat, ln);
            tok[z][ln] = 0;
            tok_len[z] = (uint32_t)ln;
            n_tok++;
        }
        if ((size_t)n_merges == max_merges) {
            max_merges *= 2;
            int32_t *na = realloc(ma, max_merges * sizeof(*na));
            if (!na) { r = CQ_ENOMEM; break; }
            ma = na;
            int32_t *nb = realloc(mb, max_merges * sizeof(*nb));
            if (!nb) { r = CQ_ENOMEM; break; }
            mb = nb;
        }
        ma[n_merges] = a;
        mb[n_merges] = b;
        n_merges++;

        /* rewrite the words that hold (a, b) */
        tr.ntouched = 0;
        int32_t *wl = p->words;
        uint32_t nwl = p->nw;
        p->words = NULL;
        p->nw = p->cw = 0;
        for (uint32_t k = 0; k < nwl && !r; k++) {
            size_t w = (size_t)wl[k];
            if (tr.wstamp[w] == round) continue;
            tr.wstamp[w] = round;
            int32_t *s = tr.syms + tr.woff[w];
            uint32_t n = tr.wlen[w], i;
            for (i = 0; i + 1 < n; i++)
                if (s[i] == a && s[i + 1] == b) break;
            if (i + 1 >= n) continue;   /* stale entry */
            if ((r = word_pairs(&tr, w, -1, 0, z, round))) break;
            uint32_t o = 0;
            for (i = 0; i < n;) {
                if (i + 1 < n && s[i] == a && s[i + 1] == b) {
                    s[o++] = z;
                    i += 2;
                } else {
                    s[o++] = s[i++];
                }
            }
            tr.wlen[w] = o;
            r = word_pairs(&tr, w, +1, 1, z, round);
        }
        free(wl);
        for (size_t k = 0; k < tr.ntouched && !r; k++) {
            pair_info *q = &tr.pairs[tr.touched[k]];
            if (q->count <= 0) continue;
            pq_item it = { q->count, q->a, q->b, tr.touched[k] };
            r = pq_push(&tr, it);
        }
        if (r) break;
        round++;
    }
    free(cat);
    if (r) goto done;

    /* 4. the tokenizer */
    if ((r = cq_tok_alloc(CQ_TOK_BYTE, n_tok, &t))) goto done;
    for (int id = 0; id < n_tok && !r; id++) {
        r = cq_tok_set_text(t, id, tok[id], tok_len[id]);
        t->types[id] = (id == CQ_BPE_BOS_ID || id == CQ_BPE_EOS_ID) ? CQ_TOKTYPE_CONTROL
                                                                   : CQ_TOKTYPE_NORMAL;
    }
    t->bos = CQ_BPE_BOS_ID;
    t->eos = CQ_BPE_EOS_ID;
    t->byte_fallback = 0;
    if (!r) r = cq_tok_finalize(t, 0, "bpe_train");
    if (!r) r = cq_tok_set_merges(t, ma, mb, n_merges, "bpe_train");
    if (r) {
        cq_tokenizer_destroy(&t);
        goto done;
    }
    cq_info("bpe_train: %zu bytes, %zu unique words, %d tokens (%d merges) in %.2f s", len,
            tr.nwords, n_tok, n_merges, cq_time_sec() - t0);
    *out = t;
done:
    if (r == CQ_ENOMEM) cq_error("bpe_train: out of memory");
    if (tok) for (int i = 0; i < vocab_size + 1; i++) free(tok[i]);
    free(tok);
    free(tok_len);
    free(ma);
    free(mb);
    cq_strmap_free(&vocab);
    cq_strmap_free(&words);
    trainer_free(&tr);
    return r;
}
