/* cherryq: file helpers shared by every reader and writer.
 *
 * Untrusted files are memory-mapped read-only (a model larger than memory is
 * never read whole). Files the user cares about are written atomically:
 * temp file in the same directory, fsync, rename, fsync of the directory.
 */
#ifndef CQ_IO_H
#define CQ_IO_H

#include "cq_base.h"

typedef struct cq_mmap {
    const uint8_t *data;
    size_t size;
    int fd;
} cq_mmap;

/* Maps path read-only. Logs "<path>: <reason>" on failure. Empty files map to
 * data=NULL,size=0 and succeed. */
CQ_API int cq_mmap_open(cq_mmap *m, const char *path);
CQ_API void cq_mmap_close(cq_mmap *m);

/* Reads a whole (small) file into a NUL-terminated malloc'ed buffer. Refuses
 * files larger than max_size. */
CQ_API int cq_read_file(const char *path, char **data, size_t *size, size_t max_size);

/* Atomic writer: cq_afile_open creates "<path>.tmp.<pid>" next to path;
 * cq_afile_commit fsyncs, renames over path and fsyncs the directory;
 * cq_afile_abort removes the temp file. A write error (full disk: ENOSPC) is
 * reported with the path and leaves any previous file at path untouched. */
typedef struct cq_afile {
    int fd;
    int failed;       /* sticky: a write failed */
    int err;          /* errno of the first failure */
    char *path;
    char *tmp;
} cq_afile;

CQ_API int cq_afile_open(cq_afile *f, const char *path);
CQ_API int cq_afile_write(cq_afile *f, const void *data, size_t n);
CQ_API int cq_afile_commit(cq_afile *f);
CQ_API void cq_afile_abort(cq_afile *f);

/* Convenience: write a buffer to path atomically. */
CQ_API int cq_write_file_atomic(const char *path, const void *data, size_t n);

/* mkdir -p; 0 if it exists already. */
CQ_API int cq_mkdir_p(const char *path);
/* The status of a failed mkdir: CQ_ENOENT, CQ_ENOSPC or CQ_EIO. */
CQ_API int cq_mkdir_status(int err);
CQ_API int cq_file_exists(const char *path);

#endif
