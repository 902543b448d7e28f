/* cherryq: mmap, whole-file reads, atomic writes. */
#include "cq_io.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Opens path for reading if it is a regular file. O_NONBLOCK: a FIFO (or a
 * device) in place of a file is refused at once instead of blocking in
 * open() until a writer appears; the flag is dropped again for reading.
 * CQ_OK and the fd in *out, or the error with the reason printed. */
static int open_regular(const char *path, struct stat *st, int *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        cq_error("%s: cannot open: %s", path, strerror(e));
        return e == ENOENT ? CQ_ENOENT : CQ_EIO;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        cq_error("%s: not a regular file", path);
        close(fd);
        return CQ_EIO;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *out = fd;
    return CQ_OK;
}

int cq_mmap_open(cq_mmap *m, const char *path)
{
    CQ_CHECK_ARG(m && path, CQ_EINVAL);
    memset(m, 0, sizeof *m);
    m->fd = -1;
    struct stat st;
    int fd = -1, r = open_regular(path, &st, &fd);
    if (r) return r;
    m->fd = fd;
    m->size = (size_t)st.st_size;
    if (m->size == 0) return CQ_OK;
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        cq_error("%s: mmap failed: %s", path, strerror(errno));
        close(fd);
        m->fd = -1;
        return CQ_EIO;
    }
    m->data = p;
    return CQ_OK;
}

void cq_mmap_close(cq_mmap *m)
{
    if (!m) return;
    if (m->data) munmap((void *)m->data, m->size);
    if (m->fd >= 0) close(m->fd);
    m->data = NULL;
    m->size = 0;
    m->fd = -1;
}

int cq_read_file(const char *path, char **data, size_t *size, size_t max_size)
{
    CQ_CHECK_ARG(path && data, CQ_EINVAL);
    *data = NULL;
    if (size) *size = 0;
    struct stat st;
    int fd = -1, r = open_regular(path, &st, &fd);
    if (r) return r;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        cq_error("%s: cannot open: %s", path, strerror(errno));
        close(fd);
        return CQ_EIO;
    }
    if ((uint64_t)st.st_size > max_size) {
        cq_error("%s: file too large (%lld bytes, limit %zu)", path, (long long)st.st_size, max_size);
        fclose(f);
        return CQ_EINVAL;
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        cq_error("%s: out of memory reading %zu bytes", path, n);
        return CQ_ENOMEM;
    }
    if (n && fread(buf, 1, n, f) != n) {
        cq_error("%s: read failed", path);
        free(buf);
        fclose(f);
        return CQ_EIO;
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    if (size) *size = n;
    return CQ_OK;
}

static int fsync_dir_of(const char *path)
{
    char *tmp = strdup(path);
    if (!tmp) return CQ_ENOMEM;
    char *dir = dirname(tmp);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(tmp);
    return CQ_OK;
}

int cq_afile_open(cq_afile *f, const char *path)
{
    CQ_CHECK_ARG(f && path, CQ_EINVAL);
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(path) + 32;
    f->path = strdup(path);
    f->tmp = malloc(n);
    if (!f->path || !f->tmp) {
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;   /* cq_afile_abort after a failed open is a no-op */
        return CQ_ENOMEM;
    }
    snprintf(f->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        int e = errno;
        cq_error("%s: cannot create: %s", f->tmp, strerror(e));
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
        return e == ENOSPC ? CQ_ENOSPC : CQ_EIO;
    }
    return CQ_OK;
}

int cq_afile_write(cq_afile *f, const void *data, size_t n)
{
    if (!f || f->fd < 0) return CQ_EINVAL;
    if (f->failed) return f->err == ENOSPC ? CQ_ENOSPC : CQ_EIO;
    const uint8_t *p = data;
    while (n) {
        ssize_t w = write(f->fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            f->failed = 1;
            f->err = errno;
            cq_error("%s: write failed: %s", f->path, strerror(errno));
            return f->err == ENOSPC ? CQ_ENOSPC : CQ_EIO;
        }
        p += w;
        n -= (size_t)w;
    }
    return CQ_OK;
}

void cq_afile_abort(cq_afile *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

int cq_afile_commit(cq_afile *f)
{
    if (!f || f->fd < 0) return CQ_EINVAL;
    if (f->failed) {
        int r = f->err == ENOSPC ? CQ_ENOSPC : CQ_EIO;
        cq_afile_abort(f);
        return r;
    }
    if (fsync(f->fd) != 0) {
        int e = errno;
        cq_error("%s: fsync failed: %s", f->path, strerror(e));
        cq_afile_abort(f);
        return e == ENOSPC ? CQ_ENOSPC : CQ_EIO;
    }
    if (close(f->fd) != 0) {
        int e = errno;
        f->fd = -1;
        cq_error("%s: close failed: %s", f->path, strerror(e));
        cq_afile_abort(f);
        return e == ENOSPC ? CQ_ENOSPC : CQ_EIO;
    }
    f->fd = -1;
    if (rename(f->tmp, f->path) != 0) {
        cq_error("%s: rename from %s failed: %s", f->path, f->tmp, strerror(errno));
        cq_afile_abort(f);
        return CQ_EIO;
    }
    fsync_dir_of(f->path);
    free(f->tmp);
    free(f->path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
    return CQ_OK;
}

int cq_write_file_atomic(const char *path, const void *data, size_t n)
{
    cq_afile f;
    int r = cq_afile_open(&f, path);
    if (r) return r;
    r = cq_afile_write(&f, data, n);
    if (r) {
        cq_afile_abort(&f);
        return r;
    }
    return cq_afile_commit(&f);
}

int cq_mkdir_status(int err) { return err == ENOENT ? CQ_ENOENT : err == ENOSPC ? CQ_ENOSPC : CQ_EIO; }

int cq_mkdir_p(const char *path)
{
    CQ_CHECK_ARG(path && *path, CQ_EINVAL);
    char *p = strdup(path);
    if (!p) return CQ_ENOMEM;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                const int e = errno;
                cq_error("%s: cannot create directory: %s", p, strerror(e));
                free(p);
                return cq_mkdir_status(e);
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return CQ_OK;
}

int cq_file_exists(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0;
}
