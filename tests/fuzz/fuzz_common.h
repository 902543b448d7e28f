/* cherryq fuzz targets: helpers shared by tests/fuzz/fuzz_*.c.
 *
 * Each target defines LLVMFuzzerTestOneInput. Built with clang
 * -fsanitize=fuzzer it is a libFuzzer binary (tools/fuzz.sh); linked with
 * replay_main.c it is a plain program that runs the target on files, which
 * the test suite uses to replay the seed corpora and every input that once
 * crashed a reader (tests/fuzz/regress/<target>/).
 *
 * The readers take paths, so inputs are handed to them through a memfd
 * (/proc/self/fd/N: a regular file that mmap accepts, with no disk I/O) or,
 * for the directory readers, files in a private temporary directory. The
 * production API stays as it is.
 */
#ifndef CQ_FUZZ_COMMON_H
#define CQ_FUZZ_COMMON_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cq_base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Log messages are still formatted (so a bad %s argument is caught), then
 * dropped; CQ_FUZZ_VERBOSE=1 prints them. */
static inline void fuzz_log_sink(cq_log_level lvl, const char *msg, void *user)
{
    (void)lvl;
    (void)user;
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("CQ_FUZZ_VERBOSE") != NULL;
    if (verbose) fprintf(stderr, "%s\n", msg);
}

static inline void fuzz_once_init(void)
{
    static int done;
    if (done) return;
    done = 1;
    cq_log_set_callback(fuzz_log_sink, NULL);
    cq_log_set_level(CQ_LOG_DEBUG);
    /* loaders check their memory estimate against this (core/cq_mem.h), so
     * a header claiming a huge model is refused instead of allocated */
    setenv("CQ_MEM_LIMIT", "256M", 0);
    cq_set_num_threads(1);
}

static inline int fuzz_write_all(int fd, const void *data, size_t size)
{
    const uint8_t *p = data;
    while (size) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) return -1;
        p += w;
        size -= (size_t)w;
    }
    return 0;
}

/* One memfd per process, refilled per input. Returns its /proc path. */
static inline const char *fuzz_memfd(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("cq_fuzz", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0 || fuzz_write_all(fd, data, size) != 0) {
        perror("memfd write");
        abort();
    }
    return path;
}

/* A private temporary directory (on /dev/shm when there is one), made once
 * per process and removed at exit by the caller's cleanup (files are
 * rewritten per input). */
static inline const char *fuzz_tmpdir(void)
{
    static char dir[128];
    if (!dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof dir, "%s/cq_fuzz.XXXXXX", base);
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return dir;
}

static inline void fuzz_write_file(const char *dir, const char *name, const void *data, size_t size)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || fuzz_write_all(fd, data, size) != 0) {
        perror(path);
        abort();
    }
    close(fd);
}

static inline void fuzz_remove_file(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

/* Reads every byte of [p, p+n): ASan reports a range that is not mapped or
 * not owned, and the sum keeps the reads from being optimized away. */
static inline uint32_t fuzz_touch(const void *p, size_t n)
{
    const volatile uint8_t *b = p;
    uint32_t s = 0;
    for (size_t i = 0; i < n; i++) s += b[i];
    return s;
}

/* Splits data at the first occurrence of sep: [0, *a_len) and the rest
 * after sep. Returns 0 when sep is absent (all of data goes to a). */
static inline int fuzz_split(const uint8_t *data, size_t size, const char *sep, size_t *a_len,
                      const uint8_t **b, size_t *b_len)
{
    size_t sl = strlen(sep);
    for (size_t i = 0; i + sl <= size; i++) {
        if (!memcmp(data + i, sep, sl)) {
            *a_len = i;
            *b = data + i + sl;
            *b_len = size - i - sl;
            return 1;
        }
    }
    *a_len = size;
    *b = data + size;
    *b_len = 0;
    return 0;
}

#endif
