/* Fuzz target: a GGUF file (cq_gguf_open) and every getter a loader uses:
 * each KV through every typed getter, arrays element-wise and in bulk,
 * tensors and their data ranges. */
#include "fuzz_common.h"
#include "gguf.h"

static void walk_kvs(const cq_gguf *g)
{
    size_t n = cq_gguf_kv_count(g);
    for (size_t i = 0; i < n; i++) {
        const char *key = cq_gguf_kv_key(g, i);
        if (!key) abort();
        if (cq_gguf_find_key(g, key) != (int)i) abort(); /* keys are unique */
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
        float f32;
        double f64;
        int b;
        const char *s;
        size_t len;
        cq_gguf_get_u32(g, key, &u32);
        cq_gguf_get_i32(g, key, &i32);
        cq_gguf_get_u64(g, key, &u64);
        cq_gguf_get_i64(g, key, &i64);
        cq_gguf_get_f32(g, key, &f32);
        cq_gguf_get_f64(g, key, &f64);
        cq_gguf_get_bool(g, key, &b);
        if (cq_gguf_get_str(g, key, &s, &len) == 0) fuzz_touch(s, len);
        cq_gguf_type et;
        uint64_t cnt;
        if (cq_gguf_get_arr(g, key, &et, &cnt) != 0) continue;
        uint64_t lim = cnt < 4096 ? cnt : 4096;
        for (uint64_t k = 0; k < lim; k++) {
            if (cq_gguf_get_arr_str(g, key, k, &s, &len) == 0) fuzz_touch(s, len);
            cq_gguf_get_arr_f32(g, key, k, &f32);
            cq_gguf_get_arr_i32(g, key, k, &i32);
        }
        cq_gguf_get_arr_str(g, key, cnt, &s, &len); /* one past the end: refused */
        float *fb = malloc(lim * sizeof *fb + 1);
        int32_t *ib = malloc(lim * sizeof *ib + 1);
        if (fb && ib) {
            cq_gguf_copy_arr_f32(g, key, fb, lim);
            cq_gguf_copy_arr_i32(g, key, ib, lim);
            cq_gguf_copy_arr_f32(g, key, fb, cnt + 1); /* more than there is: refused */
        }
        free(fb);
        free(ib);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    const char *path = fuzz_memfd(data, size);
    cq_gguf *g = NULL;
    if (cq_gguf_open(&g, path) != 0) {
        if (g) abort();
        return 0;
    }
    /* the data section may start past the end of a file with no tensors */
    if (cq_gguf_alignment(g) == 0 || (cq_gguf_tensor_count(g) && cq_gguf_data_offset(g) > size)) abort();
    walk_kvs(g);
    size_t nt = cq_gguf_tensor_count(g);
    for (size_t i = 0; i < nt; i++) {
        const cq_gguf_tensor *t = cq_gguf_tensor_at(g, i);
        if (!t || !t->name) abort();
        if (cq_gguf_find_tensor(g, t->name) != t) abort();
        uint64_t end = cq_gguf_data_offset(g) + t->offset;
        if (t->nbytes && (end > size || t->nbytes > size - end)) abort();
        fuzz_touch(t->data, t->nbytes);
        const cq_gguf_tensor *o;
        cq_dtype dt;
        if (cq_gguf_get_tensor(g, t->name, &o, &dt) == 0 && t->ndim == 2 && t->numel <= (1u << 16)) {
            /* the Q/K unpermute the GGUF model loader applies */
            size_t es = cq_dtype_size(dt);
            uint8_t *dst = malloc(t->nbytes + 1);
            if (dst) {
                cq_gguf_unpermute_qk_bytes(dst, t->data, es, 1 + (int64_t)(t->shape[0] % 4),
                                           t->shape[0], t->shape[1]);
                free(dst);
            }
        }
    }
    cq_gguf_find_tensor(g, "token_embd.weight");
    cq_gguf_close(&g);
    return 0;
}
