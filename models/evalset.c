/* Evaluation sets drawn as the reference protocols draw them (evalset.h). */
#include "evalset.h"

#include <stdlib.h>
#include <string.h>

#define MT_N 624
#define MT_M 397

/* CPython's Modules/_randommodule.c: Matsumoto and Nishimura's MT19937
 * with init_by_array; the constants are the reference implementation's. */
static void init_genrand(cq_pyrandom *r, uint32_t s)
{
    r->mt[0] = s;
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->idx = MT_N;
}

static void init_by_array(cq_pyrandom *r, const uint32_t *key, int len)
{
    init_genrand(r, 19650218u);
    uint32_t *mt = r->mt;
    int i = 1, j = 0;
    for (int k = MT_N > len ? MT_N : len; k; k--) {
        mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++;
        j++;
        if (i >= MT_N) {
            mt[0] = mt[MT_N - 1];
            i = 1;
        }
        if (j >= len) j = 0;
    }
    for (int k = MT_N - 1; k; k--) {
        mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) {
            mt[0] = mt[MT_N - 1];
            i = 1;
        }
    }
    mt[0] = 0x80000000u;
}

static uint32_t genrand_uint32(cq_pyrandom *r)
{
    static const uint32_t mag01[2] = { 0, 0x9908b0dfu };
    uint32_t *mt = r->mt, y;
    if (r->idx >= MT_N) {
        int k;
        for (k = 0; k < MT_N - MT_M; k++) {
            y = (mt[k] & 0x80000000u) | (mt[k + 1] & 0x7fffffffu);
            mt[k] = mt[k + MT_M] ^ (y >> 1) ^ mag01[y & 1];
        }
        for (; k < MT_N - 1; k++) {
            y = (mt[k] & 0x80000000u) | (mt[k + 1] & 0x7fffffffu);
            mt[k] = mt[k + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 1];
        }
        y = (mt[MT_N - 1] & 0x80000000u) | (mt[0] & 0x7fffffffu);
        mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 1];
        r->idx = 0;
    }
    y = mt[r->idx++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

void cq_pyrandom_seed(cq_pyrandom *r, uint64_t seed)
{
    /* random_seed(): the integer's 32-bit words, least significant first;
     * zero is one word 0 */
    uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };
    init_by_array(r, key, key[1] ? 2 : 1);
}

uint64_t cq_pyrandom_getrandbits(cq_pyrandom *r, int k)
{
    if (k <= 0) return 0;
    if (k > 64) k = 64;
    if (k <= 32) return genrand_uint32(r) >> (32 - k);
    /* words least significant first; the last one keeps its top k bits */
    uint64_t lo = genrand_uint32(r);
    uint64_t hi = genrand_uint32(r) >> (64 - k);
    return lo | hi << 32;
}

static int bit_length(uint64_t n)
{
    int k = 0;
    while (n) {
        k++;
        n >>= 1;
    }
    return k;
}

int64_t cq_pyrandom_randint(cq_pyrandom *r, int64_t a, int64_t b)
{
    if (b < a) return a;   /* Python raises; callers never ask */
    /* randrange(a, b + 1) = a + _randbelow_with_getrandbits(b - a + 1) */
    uint64_t n = (uint64_t)(b - a) + 1;
    int k = bit_length(n);
    uint64_t v = cq_pyrandom_getrandbits(r, k);
    while (v >= n) v = cq_pyrandom_getrandbits(r, k);
    return a + (int64_t)v;
}

int cq_c4_windows(size_t n_records, cq_record_tokens_fn tokens, void *user, int64_t seqlen, int64_t n_windows,
                  uint64_t seed, int32_t *out, cq_c4_pick *picks, size_t *n_tokenized)
{
    if (n_tokenized) *n_tokenized = 0;
    if (!tokens || !out || seqlen < 1 || n_windows < 1 || n_records == 0 || n_records > (size_t)INT64_MAX) {
        cq_error("C4 windows: %zu records, seqlen %lld, %lld windows: invalid", n_records,
               (long long)seqlen, (long long)n_windows);
        return CQ_EINVAL;
    }
    /* records known to be too short: drawn again, they are not tokenized
     * again, and once all are known the draw cannot succeed */
    uint8_t *is_short = calloc(n_records, 1);
    if (!is_short) return CQ_ENOMEM;
    cq_pyrandom rng;
    cq_pyrandom_seed(&rng, seed);
    size_t n_short = 0, calls = 0;
    int r = 0;
    for (int64_t w = 0; w < n_windows && !r; w++) {
        int32_t *ids = NULL;
        size_t n = 0, i = 0;
        for (;;) {
            if (n_short == n_records) {
                cq_error("C4 windows: none of the %zu records has more than %lld tokens", n_records,
                       (long long)seqlen);
                r = CQ_EINVAL;
                break;
            }
            i = (size_t)cq_pyrandom_randint(&rng, 0, (int64_t)n_records - 1);
            if (is_short[i]) continue;
            calls++;
            if ((r = tokens(user, i, &ids, &n))) break;
            if (n > (size_t)seqlen) break;
            free(ids);
            ids = NULL;
            is_short[i] = 1;
            n_short++;
        }
        if (!r) {
            int64_t s = cq_pyrandom_randint(&rng, 0, (int64_t)n - seqlen - 1);
            memcpy(out + w * seqlen, ids + s, (size_t)seqlen * sizeof *out);
            if (picks) picks[w] = (cq_c4_pick){ i, s };
        }
        free(ids);
    }
    free(is_short);
    if (n_tokenized) *n_tokenized = calls;
    return r;
}
