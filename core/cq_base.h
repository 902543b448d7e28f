/* cherryq: status codes, logging, dtypes, half-precision conversion.
 *
 * Every library function that can fail returns an int: 0 on success or a
 * negative errno-style code (CQ_E*). The library never exits or aborts on bad
 * input; it logs what was wrong (op, shapes, file, offset) and returns.
 */
#ifndef CQ_BASE_H
#define CQ_BASE_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define CQ_API __attribute__((visibility("default")))
#define CQ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CQ_API
#define CQ_PRINTF(a, b)
#endif

/* ------------------------------------------------------------ status */
enum {
    CQ_OK       = 0,
    CQ_EINVAL   = -EINVAL,    /* bad argument, wrong shape or dtype       */
    CQ_ENOMEM   = -ENOMEM,    /* allocation failed (host or device)       */
    CQ_EIO      = -EIO,       /* read/write failed                        */
    CQ_ENOENT   = -ENOENT,    /* file or tensor not found                 */
    CQ_ENOTSUP  = -ENOTSUP,   /* backend declines this op / unsupported   */
    CQ_ENODEV   = -ENODEV,    /* no usable device for this backend        */
    CQ_EBADMSG  = -EBADMSG,   /* corrupt or malformed file contents       */
    CQ_ERANGE   = -ERANGE,    /* numerical fault (NaN/inf) or overflow    */
    CQ_ENOSPC   = -ENOSPC,    /* disk full                                */
};

CQ_API const char *cq_strerror(int status);

/* ------------------------------------------------------------ logging */
typedef enum { CQ_LOG_ERROR = 0, CQ_LOG_WARN, CQ_LOG_INFO, CQ_LOG_DEBUG } cq_log_level;
typedef void (*cq_log_fn)(cq_log_level lvl, const char *msg, void *user);

/* Default sink: stderr, "cherryq: error: ..." for errors/warnings, info when
 * the level allows it. Level from CQ_LOG=error|warn|info|debug. */
CQ_API void cq_log_set_callback(cq_log_fn fn, void *user);
CQ_API void cq_log_set_level(cq_log_level lvl);
CQ_API cq_log_level cq_log_get_level(void);
CQ_API void cq_log(cq_log_level lvl, const char *fmt, ...) CQ_PRINTF(2, 3);
#define cq_error(...) cq_log(CQ_LOG_ERROR, __VA_ARGS__)
#define cq_warn(...)  cq_log(CQ_LOG_WARN, __VA_ARGS__)
#define cq_info(...)  cq_log(CQ_LOG_INFO, __VA_ARGS__)
#define cq_debug(...) cq_log(CQ_LOG_DEBUG, __VA_ARGS__)

/* Validate at the API boundary (dav1d's validate_input_or_ret). */
#define CQ_CHECK_ARG(cond, ret)                                                  \
    do {                                                                         \
        if (!(cond)) {                                                           \
            cq_error("%s: invalid argument: %s", __func__, #cond);              \
            return (ret);                                                        \
        }                                                                        \
    } while (0)

/* ------------------------------------------------------------ dtypes */
typedef enum {
    CQ_F32 = 0,
    CQ_F16,
    CQ_BF16,
    CQ_I32,
    CQ_I16,
    CQ_U16,
    CQ_U8,     /* raw bytes: packed quantized codes, masks */
    CQ_DTYPE_COUNT
} cq_dtype;

CQ_API size_t cq_dtype_size(cq_dtype t);
CQ_API const char *cq_dtype_name(cq_dtype t);

/* IEEE binary16 and bfloat16 <-> f32, round to nearest even. */
CQ_API uint16_t cq_f32_to_f16(float f);
CQ_API float cq_f16_to_f32(uint16_t h);
CQ_API uint16_t cq_f32_to_bf16(float f);
CQ_API float cq_bf16_to_f32(uint16_t h);

/* Bulk conversions; any of src/dst dtypes among f32, f16, bf16. */
CQ_API int cq_convert(void *dst, cq_dtype dt, const void *src, cq_dtype st, size_t n);

/* ------------------------------------------------------------ misc */
CQ_API double cq_time_sec(void);            /* monotonic seconds */
CQ_API int cq_num_threads(void);            /* threads the CPU kernels use */
CQ_API void cq_set_num_threads(int n);      /* 0 = all cores */
/* Sorts keys in place (strcmp order) and returns a string that occurs more
 * than once, or NULL: duplicate names in untrusted headers in O(n log n). */
CQ_API const char *cq_sort_find_dup(const char **keys, size_t n);

/* Overflow-checked size arithmetic for untrusted lengths. */
static inline int cq_mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

#endif
