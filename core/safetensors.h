/* cherryq: safetensors reader (memory-mapped), sharded checkpoints, writer.
 *
 * File layout (https://github.com/huggingface/safetensors):
 *   u64 LE  N            length of the JSON header
 *   N bytes JSON         {"__metadata__": {"k": "v", ...},
 *                         "<name>": {"dtype": "F32", "shape": [d0, d1, ...],
 *                                    "data_offsets": [begin, end]}, ...}
 *   data                 offsets are relative to the start of this section
 *
 * Validation done at open (every failure logs "<path>: <what> (tensor '<n>')"
 * and returns CQ_EBADMSG): N <= file size - 8 and N <= 100 MB; the header is
 * a JSON object, followed only by whitespace (the HF writer pads with spaces);
 * every tensor entry is an object with a known dtype, a shape of at most 8
 * non-negative integers, and data_offsets [begin, end] with begin <= end <=
 * data section size and (product of shape) * dtype size == end - begin,
 * computed with overflow checks. __metadata__ must be a string -> string map.
 *
 * Dtypes: every safetensors dtype of a whole number of bytes is recognized at
 * open (BOOL, U8, I8, F8_E4M3, F8_E5M2, I16, U16, F16, BF16, I32, U32, F32,
 * F64, I64, U64) so its size can be checked; an unknown dtype string fails
 * the open. Only those with a cq_dtype are usable: F32, F16, BF16, I32, I16,
 * U16, U8. The others keep dtype == CQ_DTYPE_COUNT and st_dtype naming them;
 * cq_st_get() refuses them with CQ_ENOTSUP naming tensor and dtype (the
 * data pointer is still valid for a caller that knows what to do with it).
 *
 * Tensor data pointers point into the read-only mapping and are valid until
 * the file (or set) is closed. They are only as aligned as the file makes
 * them: the header is padded so the data section starts 8-byte aligned, but a
 * writer may place tensors at any offset. Use memcpy or cq_convert when in
 * doubt.
 */
#ifndef CQ_SAFETENSORS_H
#define CQ_SAFETENSORS_H

#include "cq_base.h"

#define CQ_ST_MAX_DIMS 8
#define CQ_ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct cq_st_tensor {
    const char *name;
    cq_dtype dtype;          /* CQ_DTYPE_COUNT when the dtype has no cq_dtype */
    const char *st_dtype;    /* dtype as written in the file: "F32", "F64", ... */
    size_t elem_size;        /* bytes per element of st_dtype */
    int ndim;                /* 0 for a scalar */
    int64_t shape[CQ_ST_MAX_DIMS];
    uint64_t numel;
    const void *data;        /* into the mapping; NULL only when nbytes == 0 */
    size_t nbytes;
    uint64_t file_offset;    /* absolute offset of data in the file */
} cq_st_tensor;

/* ------------------------------------------------------------ one file */
typedef struct cq_st_file cq_st_file;

CQ_API int cq_st_open(cq_st_file **out, const char *path);
CQ_API void cq_st_close(cq_st_file **f);

CQ_API const char *cq_st_path(const cq_st_file *f);
CQ_API size_t cq_st_count(const cq_st_file *f);
/* Tensors in header order (the order of the JSON object). */
CQ_API const cq_st_tensor *cq_st_tensor_at(const cq_st_file *f, size_t i);
/* NULL if absent; does not log. */
CQ_API const cq_st_tensor *cq_st_find(const cq_st_file *f, const char *name);
/* Checked lookup: CQ_ENOENT (logged, with path) if absent, CQ_ENOTSUP if its
 * dtype has no cq_dtype; if want != CQ_DTYPE_COUNT, CQ_EINVAL when the dtype
 * differs from want. */
CQ_API int cq_st_get(const cq_st_file *f, const char *name, cq_dtype want,
                     const cq_st_tensor **out);

/* __metadata__: NULL if the key is absent. */
CQ_API const char *cq_st_metadata(const cq_st_file *f, const char *key);
CQ_API size_t cq_st_metadata_count(const cq_st_file *f);
CQ_API int cq_st_metadata_at(const cq_st_file *f, size_t i, const char **key,
                             const char **value);

/* safetensors dtype string <-> cq_dtype (CQ_DTYPE_COUNT if none). */
CQ_API cq_dtype cq_st_dtype_from_name(const char *s);
CQ_API const char *cq_st_dtype_to_name(cq_dtype t);

/* ------------------------------------------------------------ sharded set
 * cq_st_set_open(path):
 *   - a directory: uses <dir>/model.safetensors.index.json if present, else
 *     <dir>/model.safetensors;
 *   - a path ending in ".json": that index file;
 *   - anything else: a single .safetensors file.
 * Index: {"metadata": {...}, "weight_map": {"<tensor>": "<shard file>"}}.
 * Shard names must be plain file names in the index's directory: one
 * containing '/' or '\\', equal to "." or "..", or starting with "..", is
 * rejected (CQ_EBADMSG), as is one naming a missing file (CQ_ENOENT); both
 * messages name the index path and the shard. Every tensor of the weight map
 * must be present in its shard, and a tensor name may occur in only one
 * shard. Lookup is across all shards. */
typedef struct cq_st_set cq_st_set;

CQ_API int cq_st_set_open(cq_st_set **out, const char *path);
CQ_API void cq_st_set_close(cq_st_set **s);
CQ_API size_t cq_st_set_count(const cq_st_set *s);
CQ_API const cq_st_tensor *cq_st_set_tensor_at(const cq_st_set *s, size_t i);
CQ_API const cq_st_tensor *cq_st_set_find(const cq_st_set *s, const char *name);
CQ_API int cq_st_set_get(const cq_st_set *s, const char *name, cq_dtype want,
                         const cq_st_tensor **out);
CQ_API size_t cq_st_set_shard_count(const cq_st_set *s);
CQ_API const cq_st_file *cq_st_set_shard(const cq_st_set *s, size_t i);

/* ------------------------------------------------------------ writer
 * Tensors are written in the order they were added, contiguously; the
 * header lists "__metadata__" first (if any metadata) and then the tensors
 * in insertion order, and is padded with spaces so the data section starts
 * 8-byte aligned. Data pointers must stay valid until cq_st_writer_write().
 * The file is written atomically (temp file, fsync, rename): on failure
 * (CQ_ENOSPC for a full disk, logged with the path) a previous file at path
 * is left untouched. */
typedef struct cq_st_writer cq_st_writer;

CQ_API int cq_st_writer_create(cq_st_writer **out);
CQ_API void cq_st_writer_destroy(cq_st_writer **w);
/* shape has ndim entries (ndim <= 8; 0 for a scalar). Names must be unique,
 * non-empty and not "__metadata__". */
CQ_API int cq_st_writer_add(cq_st_writer *w, const char *name, cq_dtype dtype,
                            int ndim, const int64_t *shape, const void *data);
/* Setting a key twice replaces its value. */
CQ_API int cq_st_writer_add_metadata(cq_st_writer *w, const char *key, const char *value);
CQ_API int cq_st_writer_write(cq_st_writer *w, const char *path);

#endif
