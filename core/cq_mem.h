/* cherryq: how much memory this process can still take, and a check to run
 * before a large allocation (issue 8: "every command estimates its memory and
 * refuses with the figure when the machine cannot hold it").
 *
 * cq_mem_available() gives the smallest of:
 *   - MemAvailable from /proc/meminfo;
 *   - for each cgroup this process is in, up to the root of the hierarchy
 *     (v2: memory.max - memory.current; v1: memory.limit_in_bytes -
 *     memory.usage_in_bytes), with the inactive page cache (inactive_file of
 *     memory.stat, which the kernel reclaims before failing) counted as free;
 *   - the environment variable CQ_MEM_LIMIT (bytes, or with a K/M/G/T suffix
 *     in powers of 1024), a cap the user (or a test, or a fuzz target) sets.
 * It returns CQ_ENOTSUP when none of them can be read (not Linux, no /proc),
 * in which case callers skip their check rather than refuse.
 */
#ifndef CQ_MEM_H
#define CQ_MEM_H

#include "cq_base.h"

CQ_API int cq_mem_available(size_t *bytes);

/* 0 when need bytes fit in cq_mem_available() (or when that is unknown);
 * else logs "<what> needs ~X GiB of memory, only Y GiB available" and
 * returns CQ_ENOMEM. */
CQ_API int cq_mem_check(uint64_t need, const char *what);

/* Parses "123", "64M", "2G", "1.5G" (powers of 1024); 0 on success. */
CQ_API int cq_mem_parse_size(const char *s, uint64_t *out);

#endif
