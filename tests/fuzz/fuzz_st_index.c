/* Fuzz target: a sharded safetensors checkpoint (cq_st_set_open on a
 * directory with model.safetensors.index.json and its shards).
 *
 * Input: the index JSON, then "\n==shard==\n" and the bytes of
 * "a.safetensors", then "\n==shard==\n" and the bytes of "b.safetensors"
 * (missing parts give a missing file, which is a case too). The index may
 * name any shard file: names that escape the directory must be refused. */
#include "fuzz_common.h"
#include "safetensors.h"

#define SEP "\n==shard==\n"

static void walk(const cq_st_set *s)
{
    size_t n = cq_st_set_count(s);
    for (size_t i = 0; i < n; i++) {
        const cq_st_tensor *t = cq_st_set_tensor_at(s, i);
        if (!t || cq_st_set_find(s, t->name) != t) abort();
        fuzz_touch(t->data, t->nbytes);
        const cq_st_tensor *g;
        cq_st_set_get(s, t->name, CQ_DTYPE_COUNT, &g);
        cq_st_set_get(s, t->name, CQ_BF16, &g);
    }
    size_t total = 0;
    for (size_t i = 0; i < cq_st_set_shard_count(s); i++) {
        const cq_st_file *f = cq_st_set_shard(s, i);
        if (!f) abort();
        total += cq_st_count(f);
    }
    if (total != n) abort();
    cq_st_set_find(s, "lm_head.weight");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    const char *dir = fuzz_tmpdir();
    size_t ilen, alen, blen;
    const uint8_t *a, *b;
    int have_a = fuzz_split(data, size, SEP, &ilen, &a, &alen);
    int have_b = have_a && fuzz_split(a, alen, SEP, &alen, &b, &blen);
    fuzz_write_file(dir, "model.safetensors.index.json", data, ilen);
    if (have_a) fuzz_write_file(dir, "a.safetensors", a, alen);
    else fuzz_remove_file(dir, "a.safetensors");
    if (have_b) fuzz_write_file(dir, "b.safetensors", b, blen);
    else fuzz_remove_file(dir, "b.safetensors");

    cq_st_set *s = NULL;
    if (cq_st_set_open(&s, dir) == 0) {
        walk(s);
        cq_st_set_close(&s);
        if (s) abort();
    } else if (s) {
        abort();
    }
    return 0;
}
