/* Shared by the tokenizer fuzz targets: what a user of a loaded tokenizer
 * does with it (encode, decode, stream pieces, look up), plus the documented
 * round-trip properties. */
#ifndef CQ_FUZZ_TOK_EXERCISE_H
#define CQ_FUZZ_TOK_EXERCISE_H

#include "fuzz_common.h"
#include "tokenizer.h"

static inline void tok_encode_decode(const cq_tokenizer *t, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    /* with BOS: it comes first (a file may mark <s> as a normal token, so
     * the round trip below is checked without it) */
    if (cq_tokenizer_bos(t) >= 0 && cq_tokenizer_encode(t, text, len, 1, &ids, &n) == 0) {
        if (!ids || n < 1 || ids[0] != cq_tokenizer_bos(t)) abort();
    }
    free(ids);
    ids = NULL;
    int r = cq_tokenizer_encode(t, text, len, 0, &ids, &n);
    if (r) {
        free(ids);
        return;
    }
    if (!ids) abort(); /* documented: non-NULL even when n == 0 */
    int nv = cq_tokenizer_n_vocab(t);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= nv) abort(); /* encode gives vocab ids only */
        size_t pl;
        const char *p = cq_tokenizer_token_piece(t, ids[i], &pl);
        if (!p) abort();
        fuzz_touch(p, pl);
    }
    char *out = NULL;
    size_t olen = 0;
    if (cq_tokenizer_decode(t, ids, n, &out, &olen) == 0) {
        if (!out || out[olen] != 0) abort();
        /* decode(encode(x)) == x for any bytes, byte-level BPE */
        if (cq_tokenizer_kind_of(t) == CQ_TOK_BYTE && (olen != len || memcmp(out, text, len))) abort();
    }
    free(out);
    free(ids);
}

static inline void tok_exercise(const cq_tokenizer *t, const uint8_t *extra, size_t extra_len)
{
    static const char fixed[] =
        "Hello world! In the beginning God created the heaven and the earth.\n"
        "  tabs\tand  spaces, numbers 12345, caf\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80 <s> </s> <unk> "
        "\xFF\xFE invalid \xC3 utf-8 \x00 nul";
    tok_encode_decode(t, fixed, sizeof fixed - 1);
    tok_encode_decode(t, "", 0);
    if (extra_len > 512) extra_len = 512;
    tok_encode_decode(t, (const char *)extra, extra_len);
    int nv = cq_tokenizer_n_vocab(t);
    if (nv <= 0) abort();
    int lim = nv < 4096 ? nv : 4096;
    for (int32_t id = 0; id < lim; id++) {
        size_t l;
        const char *s = cq_tokenizer_token_text(t, id, &l);
        if (!s) abort();
        fuzz_touch(s, l);
        if (cq_tokenizer_find(t, s, l) < 0) abort(); /* every entry can be found */
        cq_tokenizer_token_type(t, id);
    }
    size_t l;
    if (cq_tokenizer_token_text(t, nv, &l) || cq_tokenizer_token_piece(t, -1, &l)) abort();
    int32_t bad[3] = { 0, nv, -1 };
    char *out = NULL;
    if (cq_tokenizer_decode(t, bad, 3, &out, NULL) == 0) abort(); /* out of range: refused */
    free(out);
}

#endif
