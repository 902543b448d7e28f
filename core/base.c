/* cherryq: status strings, logging, dtype helpers, f16/bf16 conversion. */
#include "cq_base.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

const char *cq_strerror(int status)
{
    switch (status) {
    case CQ_OK: return "ok";
    case CQ_EINVAL: return "invalid argument";
    case CQ_ENOMEM: return "out of memory";
    case CQ_EIO: return "input/output error";
    case CQ_ENOENT: return "not found";
    case CQ_ENOTSUP: return "not supported";
    case CQ_ENODEV: return "no usable device";
    case CQ_EBADMSG: return "corrupt or malformed data";
    case CQ_ERANGE: return "numerical fault or value out of range";
    case CQ_ENOSPC: return "no space left on device";
    default: return status < 0 ? strerror(-status) : "unknown status";
    }
}

/* ------------------------------------------------------------ logging */
static cq_log_fn g_log_fn;
static void *g_log_user;
static int g_log_level = -1;

static int level_from_env(void)
{
    const char *e = getenv("CQ_LOG");
    if (!e) return CQ_LOG_WARN;
    if (!strcmp(e, "error")) return CQ_LOG_ERROR;
    if (!strcmp(e, "warn")) return CQ_LOG_WARN;
    if (!strcmp(e, "info")) return CQ_LOG_INFO;
    if (!strcmp(e, "debug")) return CQ_LOG_DEBUG;
    return CQ_LOG_WARN;
}

void cq_log_set_callback(cq_log_fn fn, void *user) { g_log_fn = fn; g_log_user = user; }
void cq_log_set_level(cq_log_level lvl) { g_log_level = (int)lvl; }
cq_log_level cq_log_get_level(void)
{
    if (g_log_level < 0) g_log_level = level_from_env();
    return (cq_log_level)g_log_level;
}

void cq_log(cq_log_level lvl, const char *fmt, ...)
{
    if ((int)lvl > (int)cq_log_get_level() && !g_log_fn) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (g_log_fn) {
        g_log_fn(lvl, buf, g_log_user);
        return;
    }
    static const char *names[] = { "error: ", "warning: ", "", "debug: " };
    fprintf(stderr, "cherryq: %s%s\n", names[lvl], buf);
}

/* ------------------------------------------------------------ dtypes */
size_t cq_dtype_size(cq_dtype t)
{
    switch (t) {
    case CQ_F32: case CQ_I32: return 4;
    case CQ_F16: case CQ_BF16: case CQ_I16: case CQ_U16: return 2;
    case CQ_U8: return 1;
    default: return 0;
    }
}

const char *cq_dtype_name(cq_dtype t)
{
    static const char *n[] = { "f32", "f16", "bf16", "i32", "i16", "u16", "u8" };
    return (unsigned)t < CQ_DTYPE_COUNT ? n[t] : "?";
}

uint16_t cq_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t e = (x >> 23) & 0xff;
    uint32_t m = x & 0x7fffffu;
    if (e == 0xff) return (uint16_t)(sign | 0x7c00u | (m ? 0x200u | (m >> 13) : 0));
    int32_t ne = (int32_t)e - 127 + 15;
    if (ne >= 31) return (uint16_t)(sign | 0x7c00u);
    if (ne <= 0) {
        if (ne < -10) return (uint16_t)sign;
        m |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - ne);
        uint32_t hm = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (hm & 1))) hm++;
        return (uint16_t)(sign | hm);
    }
    uint32_t hm = m >> 13;
    uint32_t rem = m & 0x1fffu;
    uint32_t h = sign | ((uint32_t)ne << 10) | hm;
    if (rem > 0x1000u || (rem == 0x1000u && (hm & 1))) h++; /* may carry into exponent: correct */
    return (uint16_t)h;
}

float cq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1f;
    uint32_t m = h & 0x3ffu;
    uint32_t x;
    if (e == 0) {
        if (m == 0) x = sign;
        else {
            e = 127 - 15 + 1;
            while (!(m & 0x400u)) { m <<= 1; e--; }
            m &= 0x3ffu;
            x = sign | (e << 23) | (m << 13);
        }
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e - 15 + 127) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t cq_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

float cq_bf16_to_f32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* Element loads and stores go through memcpy: src is often a pointer into a
 * mapped file, aligned only as the file makes it (safetensors offsets may be
 * odd), and a misaligned uint16_t/float access is undefined behaviour
 * (found by fuzz_llama_load: a bf16 tensor at an odd data offset). The
 * fixed-size memcpy compiles to a plain load/store. */
static float load_as_f32(const void *p, cq_dtype t, size_t i)
{
    float f;
    uint16_t h;
    switch (t) {
    case CQ_F32: memcpy(&f, (const uint8_t *)p + 4 * i, 4); return f;
    case CQ_F16: memcpy(&h, (const uint8_t *)p + 2 * i, 2); return cq_f16_to_f32(h);
    case CQ_BF16: memcpy(&h, (const uint8_t *)p + 2 * i, 2); return cq_bf16_to_f32(h);
    default: return 0.0f;
    }
}

int cq_convert(void *dst, cq_dtype dt, const void *src, cq_dtype st, size_t n)
{
    int okd = dt == CQ_F32 || dt == CQ_F16 || dt == CQ_BF16;
    int oks = st == CQ_F32 || st == CQ_F16 || st == CQ_BF16;
    if (!okd || !oks || (!dst && n) || (!src && n)) {
        cq_error("cq_convert: unsupported conversion %s -> %s", cq_dtype_name(st), cq_dtype_name(dt));
        return CQ_EINVAL;
    }
    if (dt == st) {
        memcpy(dst, src, n * cq_dtype_size(dt));
        return CQ_OK;
    }
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float v = load_as_f32(src, st, i);
        uint16_t h;
        switch (dt) {
        case CQ_F32: memcpy((uint8_t *)dst + 4 * i, &v, 4); break;
        case CQ_F16: h = cq_f32_to_f16(v); memcpy((uint8_t *)dst + 2 * i, &h, 2); break;
        default: h = cq_f32_to_bf16(v); memcpy((uint8_t *)dst + 2 * i, &h, 2); break;
        }
    }
    return CQ_OK;
}

double cq_time_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cq_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void cq_set_num_threads(int n)
{
#ifdef _OPENMP
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

const char *cq_sort_find_dup(const char **keys, size_t n)
{
    if (!keys || n < 2) return NULL;
    qsort(keys, n, sizeof *keys, cmp_cstr);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(keys[i - 1], keys[i])) return keys[i];
    return NULL;
}
