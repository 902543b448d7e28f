/* Fuzz target: one safetensors file (cq_st_open) and everything a loader
 * does with it: tensor table, lookups, metadata, the data ranges. */
#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_once_init();
    const char *path = fuzz_memfd(data, size);
    cq_st_file *f = NULL;
    if (cq_st_open(&f, path) != 0) {
        if (f) abort(); /* a failed open must leave *out NULL */
        return 0;
    }
    size_t n = cq_st_count(f);
    for (size_t i = 0; i < n; i++) {
        const cq_st_tensor *t = cq_st_tensor_at(f, i);
        if (!t || !t->name || !t->st_dtype) abort();
        if (t->nbytes != t->numel * t->elem_size) abort();
        if (t->nbytes && (!t->data || t->file_offset > size || t->nbytes > size - t->file_offset))
            abort(); /* data claimed beyond the file */
        fuzz_touch(t->data, t->nbytes);
        if (cq_st_find(f, t->name) != t) abort();
        const cq_st_tensor *g = NULL;
        int r = cq_st_get(f, t->name, CQ_DTYPE_COUNT, &g);
        if (r == 0 && g != t) abort();
        cq_st_get(f, t->name, CQ_F32, &g);
        if (t->dtype != CQ_DTYPE_COUNT && t->nbytes) {
            /* what the model loader does: convert to f32 */
            if ((t->dtype == CQ_F16 || t->dtype == CQ_BF16 || t->dtype == CQ_F32) && t->numel <= (1u << 20)) {
                float *buf = malloc(t->numel * sizeof(float) + 1);
                if (buf) {
                    cq_convert(buf, CQ_F32, t->data, t->dtype, t->numel);
                    free(buf);
                }
            }
        }
    }
    cq_st_find(f, "model.embed_tokens.weight");
    cq_st_find(f, "");
    size_t nm = cq_st_metadata_count(f);
    for (size_t i = 0; i < nm; i++) {
        const char *k, *v;
        if (cq_st_metadata_at(f, i, &k, &v) != 0) abort();
        if (cq_st_metadata(f, k) == NULL) abort();
        fuzz_touch(v, strlen(v));
    }
    cq_st_metadata(f, "format");
    cq_st_close(&f);
    if (f) abort();
    return 0;
}
