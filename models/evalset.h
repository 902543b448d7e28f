/* cherryq: evaluation sets drawn exactly as the reference protocols draw them.
 *
 * The paper's C4 figures (CHERRYQ.md sections 7-8) come from GPTQ's
 * datautils: 256 windows of seqlen tokens, each from a random validation
 * record, picked with Python's `random` module seeded with 0:
 *
 *     random.seed(0)
 *     for _ in range(256):
 *         while True:
 *             i = random.randint(0, len(valdata) - 1)
 *             tmp = tokenizer(valdata[i]['text'])      # BOS first for LLaMA
 *             if len(tmp) > seqlen: break
 *         i = random.randint(0, len(tmp) - seqlen - 1)
 *         window = tmp[i:i + seqlen]
 *
 * To draw the same windows, cq_pyrandom reproduces CPython's generator
 * bit for bit (MT19937 seeded by init_by_array with the seed's 32-bit words,
 * randint = rejection sampling on getrandbits(bit_length(n))), and
 * cq_c4_windows runs that loop over the caller's records. */
#ifndef CQ_EVALSET_H
#define CQ_EVALSET_H

#include <stddef.h>
#include <stdint.h>

#include "cq_base.h"

typedef struct cq_pyrandom {
    uint32_t mt[624];
    int idx;
} cq_pyrandom;

/* random.seed(seed) for a non-negative integer seed. */
CQ_API void cq_pyrandom_seed(cq_pyrandom *r, uint64_t seed);
/* random.getrandbits(k), 1 <= k <= 64. */
CQ_API uint64_t cq_pyrandom_getrandbits(cq_pyrandom *r, int k);
/* random.randint(a, b), a <= b, b - a < 2^63. */
CQ_API int64_t cq_pyrandom_randint(cq_pyrandom *r, int64_t a, int64_t b);

/* Tokens of record i (the tokenizer's lead token first, as a Hugging Face
 * tokenizer call gives them); *ids is the callee's malloc'd array, freed by
 * the caller. Returns 0 or a CQ_E* code, which stops the draw. */
typedef int (*cq_record_tokens_fn)(void *user, size_t i, int32_t **ids, size_t *n);

typedef struct cq_c4_pick {
    size_t record;   /* index of the record the window comes from */
    int64_t start;   /* first token of the window in that record's tokens */
} cq_c4_pick;

/* GPTQ's C4 evaluation windows (above): n_windows windows of seqlen tokens
 * from n_records records, written one after the other to out
 * (n_windows * seqlen tokens); picks (may be NULL) gets where each came
 * from. A record is tokenized once at most while it keeps being drawn too
 * short, and the draw fails with CQ_EINVAL (logged) once every record is
 * known to have no more than seqlen tokens, where the reference would loop
 * forever. *n_tokenized (may be NULL) counts the tokenizer calls. */
CQ_API int cq_c4_windows(size_t n_records, cq_record_tokens_fn tokens, void *user, int64_t seqlen,
                         int64_t n_windows, uint64_t seed, int32_t *out, cq_c4_pick *picks,
                         size_t *n_tokenized);

#endif
