/* cherryq: available memory (/proc/meminfo, cgroup limits, CQ_MEM_LIMIT).
 * See cq_mem.h. */
#include "cq_mem.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

int cq_mem_parse_size(const char *s, uint64_t *out)
{
    CQ_CHECK_ARG(s && out, CQ_EINVAL);
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || v > 1.8e19) return CQ_EINVAL;
    while (*end == ' ') end++;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I')) end++;
    if (mul > 1 && (*end == 'B' || *end == 'b')) end++;
    if (*end) return CQ_EINVAL;
    v *= mul;
    if (v > 1.8e19) return CQ_EINVAL;
    *out = (uint64_t)v;
    return CQ_OK;
}

/* First unsigned number in a small file ("max" or anything else: 0). */
static int read_u64_file(const char *path, uint64_t *out)
{
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    char buf[64];
    int ok = fgets(buf, sizeof buf, f) != NULL && isdigit((unsigned char)buf[0]);
    fclose(f);
    if (ok) *out = strtoull(buf, NULL, 10);
    return ok;
}

/* Value of "key N" in a memory.stat or meminfo-style file. */
static int read_key_u64(const char *path, const char *key, uint64_t *out)
{
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    char line[256];
    size_t kl = strlen(key);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, kl) && (line[kl] == ' ' || line[kl] == ':' || line[kl] == '\t')) {
            const char *p = line + kl + 1;
            while (*p == ' ' || *p == '\t') p++;
            if (isdigit((unsigned char)*p)) {
                *out = strtoull(p, NULL, 10);
                found = 1;
            }
            break;
        }
    }
    fclose(f);
    return found;
}

static void take_min(uint64_t *best, int *have, uint64_t v)
{
    if (!*have || v < *best) *best = v;
    *have = 1;
}

/* Headroom of the cgroup directory dir (v2 files, else v1 files). */
static void cgroup_dir_headroom(const char *dir, uint64_t *best, int *have)
{
    char p[4200];
    uint64_t lim, use, inact = 0;
    snprintf(p, sizeof p, "%s/memory.max", dir);
    int v2 = read_u64_file(p, &lim);
    if (v2) {
        snprintf(p, sizeof p, "%s/memory.current", dir);
        if (!read_u64_file(p, &use)) return;
    } else {
        snprintf(p, sizeof p, "%s/memory.limit_in_bytes", dir);
        if (!read_u64_file(p, &lim)) return;
        if (lim >= (UINT64_C(1) << 62)) return; /* v1 "unlimited" */
        snprintf(p, sizeof p, "%s/memory.usage_in_bytes", dir);
        if (!read_u64_file(p, &use)) return;
    }
    snprintf(p, sizeof p, "%s/memory.stat", dir);
    if (!read_key_u64(p, v2 ? "inactive_file" : "total_inactive_file", &inact))
        read_key_u64(p, "inactive_file", &inact);
    if (inact > use) inact = use;
    use -= inact;
    take_min(best, have, lim > use ? lim - use : 0);
}

/* Every cgroup directory from ours up to the mount root. In a container the
 * path in /proc/self/cgroup may not exist under the mount (a namespaced
 * view): then only the mount root counts. */
static void cgroup_headroom(uint64_t *best, int *have)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        const char *ctrl = c1 + 1, *rel = c2 + 1;
        const char *root;
        if (!strcmp(line, "0") && !*ctrl) root = "/sys/fs/cgroup";            /* v2 */
        else if (strstr(ctrl, "memory")) root = "/sys/fs/cgroup/memory";     /* v1 */
        else continue;
        char dir[4200];
        snprintf(dir, sizeof dir, "%s%s", root, rel);
        for (;;) {
            size_t l = strlen(dir);
            while (l > strlen(root) && dir[l - 1] == '/') dir[--l] = 0;
            cgroup_dir_headroom(dir, best, have);
            if (l <= strlen(root)) break;
            char *s = strrchr(dir, '/');
            if (!s || (size_t)(s - dir) < strlen(root)) break;
            *s = 0;
        }
    }
    fclose(f);
}

int cq_mem_available(size_t *bytes)
{
    CQ_CHECK_ARG(bytes, CQ_EINVAL);
    uint64_t best = 0;
    int have = 0;
    uint64_t kb;
    if (read_key_u64("/proc/meminfo", "MemAvailable", &kb)) take_min(&best, &have, kb * 1024);
    cgroup_headroom(&best, &have);
    const char *env = getenv("CQ_MEM_LIMIT");
    uint64_t cap;
    if (env && *env) {
        if (cq_mem_parse_size(env, &cap) == 0) take_min(&best, &have, cap);
        else cq_warn("CQ_MEM_LIMIT='%s' is not a size (e.g. 8G, 512M); ignored", env);
    }
    if (!have) return CQ_ENOTSUP;
    *bytes = best > SIZE_MAX ? SIZE_MAX : (size_t)best;
    return CQ_OK;
}

int cq_mem_check(uint64_t need, const char *what)
{
    size_t avail;
    if (cq_mem_available(&avail) != 0) {
        cq_debug("%s: cannot tell how much memory is available; not checking", what ? what : "?");
        return CQ_OK;
    }
    if (need <= avail) return CQ_OK;
    const double gib = 1024.0 * 1024 * 1024;
    cq_error("%s needs ~%.2f GiB of memory, only %.2f GiB available%s", what ? what : "this",
             (double)need / gib, (double)avail / gib,
             getenv("CQ_MEM_LIMIT") ? " (CQ_MEM_LIMIT is set)" : "");
    return CQ_ENOMEM;
}
