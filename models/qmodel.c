/* cherryq: the quantized model directory (packed linear weights): writing,
 * validated loading onto a backend, dequantized export, and the directory
 * swap used by every directory writer. Layout: docs/format.md. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cq_io.h"
#include "hfconfig.h"
#include "llama.h"
#include "pipeline.h"
#include "qmm.h"
#include "safetensors.h"

/* called by models/llama_io.c */
int cq_qmodel_load_packed(cq_llama *m, const cq_st_set *st, const char *dir);

#define QMODEL_FORMAT_VERSION 1

/* ------------------------------------------------------------ directories */

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The marker cherryq leaves in every directory it writes through
 * cq_dir_begin/cq_dir_commit: only a marked directory is ever replaced.
 * While <dir>.tmp is being written it holds CQ_PART_MARK instead, renamed
 * to CQ_DIR_MARK just before the directory goes into place: a finished
 * output is never mistaken for a leftover of a killed write. */
#define CQ_DIR_MARK ".cherryq"
#define CQ_PART_MARK ".cherryq-partial"

/* The names cherryq's directory writers create (plain files). */
static int is_cherryq_file(const char *name)
{
    static const char *const own[] = { "config.json", "model.safetensors", "tokenizer.json", CQ_DIR_MARK };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (!strcmp(name, own[i])) return 1;
    return 0;
}

/* dir/name into p (n bytes); 0, or -1 when it does not fit */
static int join(char *p, size_t n, const char *dir, const char *name)
{
    int k = snprintf(p, n, "%s/%s", dir, name);
    return k >= 0 && (size_t)k < n ? 0 : -1;
}

static int has_file(const char *dir, const char *name)
{
    char p[8192];
    struct stat st;
    return join(p, sizeof p, dir, name) == 0 && lstat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int has_mark(const char *dir) { return has_file(dir, CQ_DIR_MARK); }

/* p's last component removed in place: "a/b" -> "a", "/a" -> "/", "a" -> "." */
static void parent_of(char *p)
{
    char *sl = strrchr(p, '/');
    if (!sl) strcpy(p, ".");
    else if (sl == p) p[1] = 0;
    else *sl = 0;
}

static int dir_is_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

/* 1: dir holds nothing but regular files (no subdirectory, no link) whose
 * names are: any (FILES_ANY), cherryq's own (FILES_OWN), or start with the
 * partial marker (FILES_PARTIAL: a killed marker write's temp file). */
enum { FILES_ANY, FILES_OWN, FILES_PARTIAL };
static int only_files(const char *dir, int kind)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int ok = 1;
    char p[8192];
    while (ok && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        const char *n = e->d_name;
        struct stat st;
        ok = (kind == FILES_ANY || (kind == FILES_OWN && is_cherryq_file(n)) ||
              (kind == FILES_PARTIAL && !strncmp(n, CQ_PART_MARK, strlen(CQ_PART_MARK)))) &&
             join(p, sizeof p, dir, n) == 0 && lstat(p, &st) == 0 && S_ISREG(st.st_mode);
    }
    closedir(d);
    return ok;
}

/* 1: path may be deleted as a whole. Always a real directory (not a link):
 * empty, or
 *   <out>.tmp (strict 0): a killed write's: plain files with the partial
 *     marker (or only the marker's own temp file: killed while writing it);
 *   <out>.tmp.old (strict 1): the previous <out>, where the user may have
 *     put things: marked and holding nothing but cherryq's own files.
 * Anything else is never deleted. */
static int removable(const char *path, int strict)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    if (dir_is_empty(path)) return 1;
    if (strict) return has_mark(path) && only_files(path, FILES_OWN);
    return only_files(path, FILES_ANY) && (has_file(path, CQ_PART_MARK) || only_files(path, FILES_PARTIAL));
}

/* Removes a removable() directory: its plain files, the markers last (a
 * kill in between leaves a directory that is still recognisably cherryq's),
 * then itself. */
static int remove_own(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    char p[8192];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, CQ_DIR_MARK) ||
            !strcmp(e->d_name, CQ_PART_MARK))
            continue;
        struct stat st;
        if (join(p, sizeof p, dir, e->d_name) == 0 && lstat(p, &st) == 0 && S_ISREG(st.st_mode)) unlink(p);
    }
    closedir(d);
    if (join(p, sizeof p, dir, CQ_DIR_MARK) == 0) unlink(p);
    if (join(p, sizeof p, dir, CQ_PART_MARK) == 0) unlink(p);
    return rmdir(dir);
}

/* dir without trailing slashes into out; -1 (with the reason printed) for
 * a path that cannot be an output directory */
static int out_path(const char *dir, char *out, size_t n)
{
    size_t L = strlen(dir);
    while (L > 1 && dir[L - 1] == '/') L--;
    if (L + 16 >= n) {
        cq_error("%s: path too long", dir);
        return -1;
    }
    memcpy(out, dir, L);
    out[L] = 0;
    const char *base = strrchr(out, '/');
    base = base ? base + 1 : out;
    if (!strcmp(out, "/") || !strcmp(base, ".") || !strcmp(base, "..") || !*base) {
        cq_error("%s: not a usable output directory (name a directory, not '/', '.' or '..')", dir);
        return -1;
    }
    return 0;
}

int cq_same_file(const char *a, const char *b)
{
    struct stat x, y;
    return a && b && stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

int cq_dir_check(const char *dir_in, const char *src)
{
    CQ_CHECK_ARG(dir_in && *dir_in, CQ_EINVAL);
    char dir[4096], tmp[4200], old[4300];
    if (out_path(dir_in, dir, sizeof dir)) return CQ_EINVAL;
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    snprintf(old, sizeof old, "%s.old", tmp);
    if (src && (cq_same_file(dir, src) || cq_same_file(tmp, src) || cq_same_file(old, src))) {
        cq_error("%s: writing there would replace or clean up the input model (%s): choose another output "
                 "directory",
                 dir, src);
        return CQ_EINVAL;
    }
    struct stat st;
    if (lstat(dir, &st) == 0) {
        if (S_ISLNK(st.st_mode)) {
            cq_error("%s: is a symbolic link; give the directory itself as the output", dir);
            return CQ_EINVAL;
        }
        if (!S_ISDIR(st.st_mode)) {
            cq_error("%s: exists and is not a directory; refusing to replace it", dir);
            return CQ_EINVAL;
        }
        if (!dir_is_empty(dir) && !has_mark(dir)) {
            cq_error("%s: exists and was not written by cherryq (no %s marker); refusing to replace it: choose "
                     "another output directory, or move it away",
                     dir, CQ_DIR_MARK);
            return CQ_EINVAL;
        }
    }
    if (lstat(tmp, &st) == 0 && !removable(tmp, 0)) {
        cq_error("%s: exists and is not a leftover of cherryq's (a file, a link, or a directory with other "
                 "files); it is where %s is written first: move it away",
                 tmp, dir);
        return CQ_EINVAL;
    }
    if (lstat(old, &st) == 0 && !removable(old, 1)) {
        cq_error("%s: left by an interrupted replacement of %s and holds files that are not cherryq's (yours, or "
                 "an earlier %s): move what you want to keep into place, then remove it",
                 old, dir, dir);
        return CQ_EINVAL;
    }
    /* can a directory be made there at all (a read-only or missing place,
     * /proc)? Found now, not after hours of work: a probe directory in the
     * nearest existing ancestor, made and removed again */
    char anc[4200];
    snprintf(anc, sizeof anc, "%s", tmp);
    do parent_of(anc);
    while (strcmp(anc, ".") && strcmp(anc, "/") && lstat(anc, &st) != 0);
    if (!is_dir(anc)) {
        cq_error("%s: cannot be written there: %s is not a directory", dir, anc);
        return CQ_EINVAL;
    }
    /* probes of runs killed between their mkdir and rmdir (empty: rmdir
     * removes nothing else) */
    DIR *ad = opendir(anc);
    if (ad) {
        struct dirent *e;
        char p[8192];
        while ((e = readdir(ad)))
            if (!strncmp(e->d_name, ".cherryq-probe-", 15) && join(p, sizeof p, anc, e->d_name) == 0) rmdir(p);
        closedir(ad);
    }
    char probe[4300];
    snprintf(probe, sizeof probe, "%s/.cherryq-probe-%ld", anc, (long)getpid());
    if (mkdir(probe, 0700) != 0) {
        const int e = errno;
        cq_error("%s: cannot be written there (a directory cannot be made in %s: %s)", dir, anc, strerror(e));
        return cq_mkdir_status(e);
    }
    rmdir(probe);
    /* the writer locks the parent: it must be openable (mode 0300 is not) */
    const int lfd = open(anc, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lfd < 0) {
        cq_error("%s: cannot be written there (%s cannot be opened to lock it: %s)", dir, anc, strerror(errno));
        return CQ_EIO;
    }
    close(lfd);
    return CQ_OK;
}

/* While a directory is written (cq_dir_begin .. commit/abort) the writer
 * holds an exclusive flock on the parent directory, so two cherryq runs
 * writing into the same place take turns instead of removing each other's
 * <out>.tmp (the work before cq_dir_begin still runs in parallel; the last
 * one to commit wins, and each commit is whole). One directory at a time
 * per process. */
static int g_dir_lock = -1;

static void dir_unlock(void)
{
    if (g_dir_lock >= 0) close(g_dir_lock);   /* releases the flock */
    g_dir_lock = -1;
}

int cq_dir_begin(const char *dir_in, char *tmp, size_t n)
{
    CQ_CHECK_ARG(dir_in && *dir_in && tmp && n > 0, CQ_EINVAL);
    char dir[4096];
    if (out_path(dir_in, dir, sizeof dir)) return CQ_EINVAL;
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dir);
    parent_of(parent);
    int r = cq_mkdir_p(parent);
    if (r) return r;
    dir_unlock();
    g_dir_lock = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int locked = g_dir_lock >= 0 && flock(g_dir_lock, LOCK_EX | LOCK_NB) == 0;
    if (!locked && g_dir_lock >= 0 && errno == EWOULDBLOCK) {
        cq_warn("%s: another cherryq run is writing into %s; waiting for it to finish", dir, parent);
        locked = flock(g_dir_lock, LOCK_EX) == 0;
    }
    if (!locked) {
        cq_error("%s: cannot lock %s for writing: %s", dir, parent, strerror(errno));
        dir_unlock();
        return CQ_EIO;
    }
    r = cq_dir_check(dir, NULL);   /* again, now that no other writer is between check and use */
    if (r) {
        dir_unlock();
        return r;
    }
    if ((size_t)snprintf(tmp, n, "%s.tmp", dir) >= n) {
        dir_unlock();
        return CQ_EINVAL;
    }
    struct stat st;
    if (lstat(tmp, &st) == 0 && remove_own(tmp) != 0) {   /* removable(tmp, 0): cq_dir_check */
        cq_error("%s: a leftover temporary directory that cannot be removed: %s", tmp, strerror(errno));
        dir_unlock();
        return CQ_EIO;
    }
    r = cq_mkdir_p(tmp);
    char mark[8192];
    if (!r && join(mark, sizeof mark, tmp, CQ_PART_MARK)) r = CQ_EINVAL;
    static const char text[] = "written by cherryq: a later cherryq run with this directory as its output may "
                               "replace it (files cherryq does not write are carried over)\n";
    if (!r) r = cq_write_file_atomic(mark, text, sizeof text - 1);
    if (r) {
        remove_own(tmp);
        dir_unlock();
    }
    return r;
}

/* Moves what the user added to the previous directory (anything but
 * cherryq's plain files) into the new one. 0 if nothing is left behind. */
static int carry_over(const char *old, const char *dir)
{
    DIR *d = opendir(old);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int left = 0;
    char from[8192], to[8192];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        if (join(from, sizeof from, old, e->d_name) || lstat(from, &st) != 0) {
            left = 1;
            continue;
        }
        if (is_cherryq_file(e->d_name) && S_ISREG(st.st_mode)) continue;   /* replaced by the new one */
        if (join(to, sizeof to, dir, e->d_name) || lstat(to, &st) == 0 || rename(from, to) != 0) left = 1;
    }
    closedir(d);
    return left ? -1 : 0;
}

int cq_dir_commit(const char *tmp, const char *dir_in)
{
    CQ_CHECK_ARG(tmp && dir_in, CQ_EINVAL);
    char dir[4096], old[4200];
    if (out_path(dir_in, dir, sizeof dir)) {
        dir_unlock();
        return CQ_EINVAL;
    }
    snprintf(old, sizeof old, "%s.old", tmp);
    struct stat st;
    if (lstat(old, &st) == 0 && (!removable(old, 1) || remove_own(old) != 0)) {
        cq_error("%s: left by an interrupted replacement of %s, with files that are not cherryq's; move what you "
                 "want to keep into place, then remove it",
                 old, dir);
        dir_unlock();
        return CQ_EIO;
    }
    char pm[8192], fm[8192];
    if (join(pm, sizeof pm, tmp, CQ_PART_MARK) || join(fm, sizeof fm, tmp, CQ_DIR_MARK) || rename(pm, fm) != 0) {
        cq_error("%s: cannot mark %s as complete: %s", dir, tmp, strerror(errno));
        dir_unlock();
        return CQ_EIO;
    }
    const int had = lstat(dir, &st) == 0 && S_ISDIR(st.st_mode);
    if (had && rename(dir, old) != 0) {
        cq_error("%s: cannot move the previous directory aside: %s", dir, strerror(errno));
        rename(fm, pm);   /* still a leftover for cq_dir_abort */
        dir_unlock();
        return CQ_EIO;
    }
    if (rename(tmp, dir) != 0) {
        int e = errno;
        if (had) rename(old, dir);
        rename(fm, pm);
        cq_error("%s: cannot rename %s into place: %s", dir, tmp, strerror(e));
        dir_unlock();
        return CQ_EIO;
    }
    if (had && (carry_over(old, dir) != 0 || !removable(old, 1) || remove_own(old) != 0))
        cq_warn("%s: kept: files of the previous %s that could not be moved into the new one", old, dir);
    dir_unlock();
    return CQ_OK;
}

void cq_dir_abort(const char *tmp)
{
    if (tmp && *tmp && removable(tmp, 0)) remove_own(tmp);
    dir_unlock();
}

int cq_copy_file(const char *src, const char *dst)
{
    char *data = NULL;
    size_t n = 0;
    int r = cq_read_file(src, &data, &n, 1u << 30);
    if (r) return r;
    r = cq_write_file_atomic(dst, data, n);
    free(data);
    return r;
}

/* ------------------------------------------------------------ config */

int cq_qmodel_is_quantized(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *txt = NULL;
    /* a .gguf file or a directory without a config is simply not one (and
     * says nothing: the loader reports what is really wrong) */
    if (!is_dir(dir) || !cq_file_exists(path) || cq_read_file(path, &txt, NULL, 16u << 20)) return 0;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    int q = j && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "quantization_config"));
    cJSON_Delete(j);
    return q;
}

static int qconfig_int(const cJSON *q, const char *key, int *v, const char *path)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(q, key);
    if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || fabs(x->valuedouble) > 1e9) {
        cq_error("%s: quantization_config.%s is missing or not an integer", path, key);
        return CQ_EBADMSG;
    }
    *v = (int)x->valuedouble;
    return CQ_OK;
}

/* Reads and checks quantization_config of <dir>/config.json. */
static int qconfig_read(const char *dir, int *bits, int *group)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *txt = NULL;
    int r = cq_read_file(path, &txt, NULL, 16u << 20);
    if (r) return r;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    const cJSON *q = j ? cJSON_GetObjectItemCaseSensitive(j, "quantization_config") : NULL;
    if (!cJSON_IsObject(q)) {
        cq_error("%s: no quantization_config object", path);
        cJSON_Delete(j);
        return CQ_EBADMSG;
    }
    const cJSON *qm = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    int ver = 0;
    if (!cJSON_IsString(qm) || strcmp(qm->valuestring, "cherryq")) {
        cq_error("%s: quantization_config.quant_method is %s%s%s, not \"cherryq\": cherryq reads only its own "
                 "quantized format",
                 path, cJSON_IsString(qm) ? "\"" : "", cJSON_IsString(qm) ? qm->valuestring : "missing",
                 cJSON_IsString(qm) ? "\"" : "");
        r = CQ_ENOTSUP;
    }
    if (!r) r = qconfig_int(q, "format_version", &ver, path);
    if (!r && ver != QMODEL_FORMAT_VERSION) {
        cq_error("%s: quantization_config.format_version %d is not supported (this build reads version %d)", path,
                 ver, QMODEL_FORMAT_VERSION);
        r = CQ_ENOTSUP;
    }
    if (!r) r = qconfig_int(q, "bits", bits, path);
    if (!r) r = qconfig_int(q, "group_size", group, path);
    if (!r && cq_quant_check(*bits, *group)) {
        cq_error("%s: quantization_config has an unsupported grid (bits %d, group_size %d)", path, *bits, *group);
        r = CQ_EBADMSG;
    }
    cJSON_Delete(j);
    return r;
}

/* ------------------------------------------------------------ reading */

static int get_tensor(const cq_st_set *st, const char *dir, const char *name, cq_dtype dt, int ndim,
                      const int64_t *shape, const cq_st_tensor **out)
{
    const cq_st_tensor *t = cq_st_set_find(st, name);
    if (!t) {
        cq_error("%s: tensor '%s' is missing", dir, name);
        return CQ_EBADMSG;
    }
    if (t->dtype != dt) {
        cq_error("%s: tensor '%s' has dtype %s, expected %s", dir, name, t->st_dtype, cq_st_dtype_to_name(dt));
        return CQ_EBADMSG;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        if (shape[i] >= 0 && t->shape[i] != shape[i]) ok = 0;
    if (!ok) {
        char got[96] = "", want[96] = "";
        size_t o = 0, p = 0;
        for (int i = 0; i < t->ndim && o < sizeof got; i++)
            o += (size_t)snprintf(got + o, sizeof got - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        for (int i = 0; i < ndim && p < sizeof want; i++) {
            if (shape[i] >= 0) p += (size_t)snprintf(want + p, sizeof want - p, "%s%lld", i ? ", " : "", (long long)shape[i]);
            else p += (size_t)snprintf(want + p, sizeof want - p, "%s*", i ? ", " : "");
        }
        cq_error("%s: tensor '%s' has shape [%s], expected [%s] from the config", dir, name, got, want);
        return CQ_EBADMSG;
    }
    *out = t;
    return CQ_OK;
}

/* Reads and validates the packed tensors of linear `base` (no ".weight")
 * of shape [out, in] into q (allocated). */
static int read_qweight(const cq_st_set *st, const char *dir, const char *base, int64_t out, int64_t in, int bits,
                        int group, cq_qweight *q)
{
    memset(q, 0, sizeof *q);
    char nm[160];
    const cq_st_tensor *tc, *ts, *tr, *tcol, *tv;
    int64_t rb = cq_quant_row_bytes(in, bits), ng = cq_quant_ngroups(in, group);
    int64_t s_c[2] = { out, rb }, s_s[2] = { out, ng }, s_r[1] = { out + 1 }, s_any[1] = { -1 };
    snprintf(nm, sizeof nm, "%s.qcodes", base);
    int r = get_tensor(st, dir, nm, CQ_U8, 2, s_c, &tc);
    snprintf(nm, sizeof nm, "%s.scales", base);
    if (!r) r = get_tensor(st, dir, nm, CQ_F16, 2, s_s, &ts);
    snprintf(nm, sizeof nm, "%s.cherry_rowptr", base);
    if (!r) r = get_tensor(st, dir, nm, CQ_I32, 1, s_r, &tr);
    snprintf(nm, sizeof nm, "%s.cherry_cols", base);
    if (!r) r = get_tensor(st, dir, nm, CQ_U16, 1, s_any, &tcol);
    snprintf(nm, sizeof nm, "%s.cherry_vals", base);
    if (!r) r = get_tensor(st, dir, nm, CQ_F16, 1, s_any, &tv);
    if (r) return r;
    int64_t nnz = tcol->shape[0];
    if (tv->shape[0] != nnz) {
        cq_error("%s: %s.cherry_vals has %lld entries but cherry_cols has %lld", dir, base, (long long)tv->shape[0],
                 (long long)nnz);
        return CQ_EBADMSG;
    }
    int32_t rp_prev = 0;
    const uint8_t *rpb = tr->data;
    for (int64_t i = 0; i <= out; i++) {
        int32_t v;
        memcpy(&v, rpb + i * 4, 4);
        if ((i == 0 && v != 0) || v < rp_prev || v > nnz || (i == out && v != nnz)) {
            cq_error("%s: %s.cherry_rowptr[%lld] = %d is invalid (must start at 0, not decrease and end at nnz = "
                     "%lld)",
                     dir, base, (long long)i, v, (long long)nnz);
            return CQ_EBADMSG;
        }
        rp_prev = v;
    }
    if (nnz > 0 && in > 65536) {
        cq_error("%s: %s has %lld columns; 16-bit cherry columns allow at most 65536", dir, base, (long long)in);
        return CQ_EBADMSG;
    }
    r = cq_qweight_alloc(q, out, in, bits, group, nnz);
    if (r) return r;
    memcpy(q->codes, tc->data, tc->nbytes);
    memcpy(q->scales, ts->data, ts->nbytes);
    memcpy(q->rowptr, tr->data, tr->nbytes);
    if (nnz) {
        memcpy(q->cols, tcol->data, tcol->nbytes);
        memcpy(q->vals, tv->data, tv->nbytes);
    }
    for (int64_t r0 = 0; r0 < out && !r; r0++)
        for (int32_t i = q->rowptr[r0]; i < q->rowptr[r0 + 1]; i++)
            if (q->cols[i] >= in || (i > q->rowptr[r0] && q->cols[i] <= q->cols[i - 1])) {
                cq_error("%s: %s.cherry_cols[%d] = %u in row %lld is out of range (in = %lld) or not ascending", dir,
                         base, i, q->cols[i], (long long)r0, (long long)in);
                r = CQ_EBADMSG;
                break;
            }
    for (int64_t i = 0; !r && i < out * ng; i++) {
        float s = cq_f16_to_f32(q->scales[i]);
        if (!isfinite(s) || s < 0) {
            cq_error("%s: %s.scales[%lld] is %g (must be finite and >= 0)", dir, base, (long long)i, s);
            r = CQ_EBADMSG;
        }
    }
    for (int64_t i = 0; !r && i < nnz; i++)
        if (!isfinite(cq_f16_to_f32(q->vals[i]))) {
            cq_error("%s: %s.cherry_vals[%lld] is not finite", dir, base, (long long)i);
            r = CQ_EBADMSG;
        }
    if (!r && bits == 8)
        for (int64_t i = 0; !r && i < out; i++)
            for (int64_t j = 0; j < in; j++)
                if (cq_qcode_get(q->codes + i * rb, j, 8) == 255) {
                    cq_error("%s: %s.qcodes has the unused 8-bit code 255 at [%lld, %lld]", dir, base, (long long)i,
                             (long long)j);
                    r = CQ_EBADMSG;
                    break;
                }
    if (!r) r = cq_qweight_validate(q);
    if (r) cq_qweight_free(q);
    return r;
}

static void linear_shape(const cq_llama_config *c, int i, int64_t *out, int64_t *in)
{
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const int64_t shp[CQ_LLAMA_N_LINEAR][2] = {
        { qd, c->dim }, { kvd, c->dim }, { kvd, c->dim }, { c->dim, qd },
        { c->ffn, c->dim }, { c->ffn, c->dim }, { c->dim, c->ffn },
    };
    *out = shp[i][0];
    *in = shp[i][1];
}

/* Fills q from an open set; entries of linears stored dense stay zeroed. */
static int read_all(const cq_st_set *st, const char *dir, const cq_llama_config *cfg, int bits, int group,
                    cq_qpacked *q)
{
    int64_t n = cfg->n_layers * CQ_LLAMA_N_LINEAR;
    q->n = n;
    q->w = calloc((size_t)n, sizeof *q->w);
    if (!q->w) return CQ_ENOMEM;
    int r = CQ_OK, nq = 0;
    for (int64_t k = 0; k < n && !r; k++) {
        char base[128], nm[160];
        snprintf(base, sizeof base, "model.layers.%lld.%s", (long long)(k / CQ_LLAMA_N_LINEAR),
                 cq_llama_linear_names[k % CQ_LLAMA_N_LINEAR]);
        snprintf(nm, sizeof nm, "%s.qcodes", base);
        int64_t out, in;
        linear_shape(cfg, (int)(k % CQ_LLAMA_N_LINEAR), &out, &in);
        if (!cq_st_set_find(st, nm)) {
            snprintf(nm, sizeof nm, "%s.weight", base);
            if (!cq_st_set_find(st, nm)) {
                cq_error("%s: linear '%s' has neither packed tensors (%s.qcodes ...) nor a dense weight", dir, base,
                         base);
                r = CQ_EBADMSG;
            }
            continue; /* dense: loaded by llama_io.c */
        }
        snprintf(nm, sizeof nm, "%s.weight", base);
        if (cq_st_set_find(st, nm)) {
            cq_error("%s: linear '%s' is stored both packed and dense", dir, base);
            r = CQ_EBADMSG;
            break;
        }
        r = read_qweight(st, dir, base, out, in, bits, group, &q->w[k]);
        nq++;
    }
    if (!r && nq == 0) {
        cq_error("%s: config.json has a quantization_config but no linear weight is packed", dir);
        r = CQ_EBADMSG;
    }
    if (r) cq_qpacked_free(q);
    return r;
}

int cq_qmodel_read(const char *dir, cq_qpacked *q, int *bits, int *group)
{
    CQ_CHECK_ARG(dir && q && bits && group, CQ_EINVAL);
    memset(q, 0, sizeof *q);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cq_hf_config h;
    cq_hf_config_init(&h);
    int r = cq_hf_config_load(&h, path);
    if (!r) r = qconfig_read(dir, bits, group);
    if (r) return r;
    cq_llama_config cfg = { 0 };
    cfg.dim = h.hidden_size;
    cfg.ffn = h.intermediate_size;
    cfg.n_layers = h.num_hidden_layers;
    cfg.n_heads = h.num_attention_heads;
    cfg.n_kv_heads = h.num_key_value_heads;
    cfg.head_dim = h.head_dim;
    cq_st_set *st = NULL;
    r = cq_st_set_open(&st, dir);
    if (r) return r;
    r = read_all(st, dir, &cfg, *bits, *group, q);
    cq_st_set_close(&st);
    return r;
}

/* ------------------------------------------------------------ packed state */

void cq_qpacked_free(cq_qpacked *q)
{
    if (!q) return;
    for (int64_t i = 0; q->w && i < q->n; i++) cq_qweight_free(&q->w[i]);
    free(q->w);
    memset(q, 0, sizeof *q);
}

double cq_qpacked_bpw(const cq_qpacked *q)
{
    double bits = 0, n = 0;
    for (int64_t i = 0; q && i < q->n; i++) {
        const cq_qweight *w = &q->w[i];
        if (!w->codes) continue;
        bits += cq_quant_bpw(w->out, w->in, w->bits, w->group, w->nnz) * (double)w->out * (double)w->in;
        n += (double)w->out * (double)w->in;
    }
    return n > 0 ? bits / n : 0;
}

static int new_tensor(cq_tensor **t, cq_backend *be, cq_dtype dt, int ndim, int64_t d0, int64_t d1, const void *src)
{
    int64_t ne[2] = { d0, d1 };
    int r = cq_tensor_new(t, be, dt, ndim, ne);
    if (!r) r = cq_tensor_set(*t, src, cq_tensor_nbytes(*t));
    if (r) cq_tensor_free(t);
    return r;
}

/* The cherry lanes of w (cpu/qmm.h) for the int8 GEMV on interleaved codes:
 * built here once, next to the CSR cherries the exact paths read (about 3.3
 * bytes a cherry more). A weight whose deltas overflow FP16 keeps the
 * gathers (no lanes; cq_qmm_lanes_build warns). */
static int make_lanes(cq_qlinear *ql, cq_backend *be, const cq_qweight *w, const float *delta)
{
    const cq_qmm_w cw = { .out = w->out, .in = w->in, .bits = w->bits, .group = w->group,
                          .codes = w->codes, .scales = w->scales, .rowptr = w->rowptr,
                          .cols = w->cols, .delta = delta };
    const int64_t nb = cq_qmm_lanes_bytes(&cw);
    if (nb < 0) return (int)nb;
    if (nb == 0) return CQ_OK;
    int64_t ne[1] = { nb };
    int r = cq_tensor_new(&ql->lanes, be, CQ_U8, 1, ne);
    uint8_t *dst = r ? NULL : cq_tensor_host(ql->lanes);
    if (!r && !dst) r = CQ_EINVAL;
    if (!r) r = cq_qmm_lanes_build(&cw, dst, nb);
    if (!r) r = cq_qmm_lanes_check(&cw, dst, nb);
    if (r == CQ_ERANGE) {
        cq_tensor_free(&ql->lanes);
        return CQ_OK;
    }
    if (r) cq_tensor_free(&ql->lanes);
    return r;
}

/* The packed form of w on backend be (delta computed here). */
static int make_qlinear(cq_qlinear **out, cq_backend *be, const cq_qweight *w)
{
    cq_qlinear *ql = calloc(1, sizeof *ql);
    if (!ql) return CQ_ENOMEM;
    ql->out = w->out;
    ql->in = w->in;
    ql->bits = w->bits;
    ql->group = w->group;
    int64_t rb = cq_quant_row_bytes(w->in, w->bits), ng = cq_quant_ngroups(w->in, w->group);
    int r = CQ_OK;
    /* CPU inference where the int8 GEMV runs: the codes tensor holds the
     * interleaved form (cpu/qmm.h cq_qmm_il: the same byte count, built once
     * here, replacing the row layout), marked by ql->layout for CQ_OP_QMATMUL */
    const cq_qmm_w qw = { .out = w->out, .in = w->in, .bits = w->bits, .group = w->group,
                          .codes = w->codes, .scales = w->scales };
    if (!strcmp(be->name, "cpu") && w->out > 0 && cq_qmm_il_wanted(&qw)) {
        int64_t ne[2] = { w->out, rb };
        cq_qmm_il il;
        r = cq_tensor_new(&ql->codes, be, CQ_U8, 2, ne);
        uint8_t *dst = r ? NULL : cq_tensor_host(ql->codes);
        if (!r && !dst) r = CQ_EINVAL;
        if (!r) r = cq_qmm_il_build(&il, &qw, dst);
        if (!r) ql->layout = CQ_QCODES_IL4;
    } else {
        r = new_tensor(&ql->codes, be, CQ_U8, 2, w->out, rb, w->codes);
    }
    if (!r) r = new_tensor(&ql->scales, be, CQ_U16, 2, w->out, ng, w->scales);
    if (!r && w->nnz > 0) {
        float *delta = malloc((size_t)w->nnz * sizeof(float));
        if (!delta) r = CQ_ENOMEM;
        if (!r) r = cq_qpack_cherry_delta(w, delta);
        if (!r) r = new_tensor(&ql->rowptr, be, CQ_I32, 1, w->out + 1, 0, w->rowptr);
        if (!r) r = new_tensor(&ql->cols, be, CQ_U16, 1, w->nnz, 0, w->cols);
        if (!r) r = new_tensor(&ql->delta, be, CQ_F32, 1, w->nnz, 0, delta);
        if (!r && ql->layout == CQ_QCODES_IL4) r = make_lanes(ql, be, w, delta);
        free(delta);
    }
    if (r) {
        cq_qlinear_free(&ql);
        return r;
    }
    *out = ql;
    return CQ_OK;
}

/* Frees a dense linear weight and its slot in m->params. */
static void drop_dense(cq_llama *m, cq_tensor **lin)
{
    for (int j = 0; j < m->n_params; j++)
        if (m->params[j] == *lin) m->params[j] = NULL;
    cq_tensor_free(lin);
}

int cq_qmodel_attach(cq_llama *m, const cq_qpacked *q)
{
    CQ_CHECK_ARG(m && q && q->n == cq_n_linears(m), CQ_EINVAL);
    for (int64_t k = 0; k < q->n; k++) {
        const cq_qweight *w = &q->w[k];
        if (!w->codes) continue;
        cq_llama_layer *L = &m->layers[k / CQ_LLAMA_N_LINEAR];
        int i = (int)(k % CQ_LLAMA_N_LINEAR);
        int64_t out, in;
        linear_shape(&m->cfg, i, &out, &in);
        if (w->out != out || w->in != in) {
            cq_error("attach: packed weight %lld is [%lld, %lld], the model wants [%lld, %lld]", (long long)k,
                     (long long)w->out, (long long)w->in, (long long)out, (long long)in);
            return CQ_EINVAL;
        }
        cq_qlinear *ql = NULL;
        int r = make_qlinear(&ql, m->be, w);
        if (r) return r;
        cq_llama_qstate *qs = &L->q[i];
        cq_tensor_free(&qs->mask);
        cq_qlinear_free(&qs->packed);
        qs->packed = ql;
        qs->bits = 0;
        qs->group = 0;
        if (L->lin[i]) drop_dense(m, &L->lin[i]);
    }
    return CQ_OK;
}

int cq_qmodel_set_dense(cq_llama *m, const cq_qpacked *q)
{
    CQ_CHECK_ARG(m && q && q->n == cq_n_linears(m), CQ_EINVAL);
    for (int64_t k = 0; k < q->n; k++) {
        const cq_qweight *w = &q->w[k];
        cq_tensor *t = cq_linear_weight(m, k);
        if (!w->codes) continue;
        if (!t || t->ne[0] != w->out || t->ne[1] != w->in) return CQ_EINVAL;
        float *d = malloc((size_t)(w->out * w->in) * sizeof(float));
        if (!d) return CQ_ENOMEM;
        int r = cq_qunpack(w, d);
        if (!r) r = cq_tensor_set_f32(t, d);
        free(d);
        if (r) return r;
    }
    return CQ_OK;
}

int cq_qmodel_load_packed(cq_llama *m, const cq_st_set *st, const char *dir)
{
    int bits = 0, group = 0;
    int r = qconfig_read(dir, &bits, &group);
    if (r) return r;
    cq_qpacked q = { 0 };
    r = read_all(st, dir, &m->cfg, bits, group, &q);
    if (!r) r = cq_qmodel_attach(m, &q);
    cq_qpacked_free(&q);
    return r;
}

/* ------------------------------------------------------------ writing */

static void hf_from_cfg(cq_hf_config *h, const cq_llama_config *c, const char *dtype)
{
    cq_hf_config_init(h);
    snprintf(h->architecture, sizeof h->architecture, "LlamaForCausalLM");
    snprintf(h->model_type, sizeof h->model_type, "llama");
    h->hidden_size = c->dim;
    h->intermediate_size = c->ffn;
    h->num_hidden_layers = c->n_layers;
    h->num_attention_heads = c->n_heads;
    h->num_key_value_heads = c->n_kv_heads;
    h->head_dim = c->head_dim;
    h->vocab_size = c->vocab;
    h->max_position_embeddings = c->max_seq;
    h->rms_norm_eps = c->norm_eps;
    h->rope_theta = c->rope_theta;
    h->rope_scaling = c->rope_scaling;
    h->tie_word_embeddings = c->tie_embeddings;
    h->bos_token_id = c->bos;
    h->eos_token_id = c->eos;
    snprintf(h->torch_dtype, sizeof h->torch_dtype, "%s", dtype);
}

/* Buffers that must outlive the writer. */
typedef struct bufs {
    void **p;
    int n, cap;
} bufs;

static void *bufs_add(bufs *b, void *p)
{
    if (!p) return NULL;
    if (b->n == b->cap) {
        int nc = b->cap ? b->cap * 2 : 64;
        void **np = realloc(b->p, (size_t)nc * sizeof *np);
        if (!np) {
            free(p);
            return NULL;
        }
        b->p = np;
        b->cap = nc;
    }
    b->p[b->n++] = p;
    return p;
}

static void bufs_free(bufs *b)
{
    for (int i = 0; i < b->n; i++) free(b->p[i]);
    free(b->p);
}

static int add_dense(cq_st_writer *w, bufs *b, const cq_tensor *p, cq_dtype dt)
{
    size_t n = (size_t)cq_tensor_numel(p);
    float *f = bufs_add(b, malloc(n * sizeof(float) + 1));
    if (!f) return CQ_ENOMEM;
    int r = cq_tensor_get_f32(p, f);
    for (size_t j = 0; !r && j < n; j++)
        if (!isfinite(f[j])) {
            cq_error("save: parameter %s has a non-finite value at element %zu; refusing to write it", p->name, j);
            r = CQ_ERANGE;
        }
    if (r) return r;
    const void *data = f;
    if (dt != CQ_F32) {
        void *h = bufs_add(b, malloc(n * 2 + 1));
        if (!h) return CQ_ENOMEM;
        cq_convert(h, dt, f, CQ_F32, n);
        data = h;
    }
    return cq_st_writer_add(w, p->name, dt, p->ndim, p->ne, data);
}

static int add_packed(cq_st_writer *w, const char *base, const cq_qweight *q)
{
    char nm[160];
    int64_t rb = cq_quant_row_bytes(q->in, q->bits), ng = cq_quant_ngroups(q->in, q->group);
    int64_t s_c[2] = { q->out, rb }, s_s[2] = { q->out, ng }, s_r[1] = { q->out + 1 }, s_n[1] = { q->nnz };
    snprintf(nm, sizeof nm, "%s.qcodes", base);
    int r = cq_st_writer_add(w, nm, CQ_U8, 2, s_c, q->codes);
    snprintf(nm, sizeof nm, "%s.scales", base);
    if (!r) r = cq_st_writer_add(w, nm, CQ_F16, 2, s_s, q->scales);
    snprintf(nm, sizeof nm, "%s.cherry_rowptr", base);
    if (!r) r = cq_st_writer_add(w, nm, CQ_I32, 1, s_r, q->rowptr);
    snprintf(nm, sizeof nm, "%s.cherry_cols", base);
    if (!r) r = cq_st_writer_add(w, nm, CQ_U16, 1, s_n, q->cols);
    snprintf(nm, sizeof nm, "%s.cherry_vals", base);
    if (!r) r = cq_st_writer_add(w, nm, CQ_F16, 1, s_n, q->vals);
    return r;
}

int cq_qmodel_save(const cq_llama *m, const cq_qpacked *q, const char *dir, const char *quant_config_json,
                   const char *tokenizer_src)
{
    CQ_CHECK_ARG(m && q && dir && quant_config_json && q->n == cq_n_linears(m), CQ_EINVAL);
    char tmp[4096], path[4200];
    int r = cq_dir_begin(dir, tmp, sizeof tmp);
    if (r) return r;
    cq_st_writer *w = NULL;
    bufs b = { 0 };
    r = cq_st_writer_create(&w);
    if (!r) r = add_dense(w, &b, m->tok_emb, CQ_F32);
    for (int64_t l = 0; !r && l < m->cfg.n_layers; l++) {
        const cq_llama_layer *L = &m->layers[l];
        for (int i = 0; !r && i < CQ_LLAMA_N_LINEAR; i++) {
            if (i == 0) r = add_dense(w, &b, L->attn_norm, CQ_F32);
            if (i == 4 && !r) r = add_dense(w, &b, L->ffn_norm, CQ_F32);
            if (r) break;
            const cq_qweight *qw = &q->w[l * CQ_LLAMA_N_LINEAR + i];
            char base[128];
            snprintf(base, sizeof base, "model.layers.%lld.%s", (long long)l, cq_llama_linear_names[i]);
            if (qw->codes) r = add_packed(w, base, qw);
            else if (L->lin[i]) r = add_dense(w, &b, L->lin[i], CQ_F32);
            else {
                cq_error("save: linear %s has neither packed nor dense weights", base);
                r = CQ_EINVAL;
            }
        }
    }
    if (!r) r = add_dense(w, &b, m->norm, CQ_F32);
    if (!r && !m->cfg.tie_embeddings) r = add_dense(w, &b, m->lm_head, CQ_F32);
    char ver[16];
    snprintf(ver, sizeof ver, "%d", QMODEL_FORMAT_VERSION);
    if (!r) r = cq_st_writer_add_metadata(w, "format", "pt");
    if (!r) r = cq_st_writer_add_metadata(w, "cherryq_format_version", ver);
    if (!r) {
        snprintf(path, sizeof path, "%s/model.safetensors", tmp);
        r = cq_st_writer_write(w, path);
    }
    cq_st_writer_destroy(&w);
    bufs_free(&b);
    if (!r) {
        size_t L = strlen(quant_config_json) + 64;
        char *extra = malloc(L);
        if (!extra) r = CQ_ENOMEM;
        else {
            snprintf(extra, L, "{\"quantization_config\": %s}", quant_config_json);
            cq_hf_config h;
            hf_from_cfg(&h, &m->cfg, "float32");
            snprintf(path, sizeof path, "%s/config.json", tmp);
            r = cq_hf_config_write(path, &h, extra);
            free(extra);
        }
    }
    if (!r && tokenizer_src && cq_file_exists(tokenizer_src)) {
        snprintf(path, sizeof path, "%s/tokenizer.json", tmp);
        r = cq_copy_file(tokenizer_src, path);
    }
    if (!r) r = cq_dir_commit(tmp, dir);
    if (r) cq_dir_abort(tmp);
    return r;
}

int cq_qmodel_export_dense(const char *qdir, const char *out, cq_dtype dt, cq_backend *be)
{
    CQ_CHECK_ARG(qdir && out && be && (dt == CQ_F16 || dt == CQ_F32 || dt == CQ_BF16), CQ_EINVAL);
    if (!cq_qmodel_is_quantized(qdir)) {
        cq_error("%s: not a cherryq quantized model directory (config.json has no quantization_config)", qdir);
        return CQ_EINVAL;
    }
    /* full validation: the model loads onto the backend */
    cq_llama *m = NULL;
    int r = cq_llama_load(&m, qdir, be);
    if (r) return r;
    cq_qpacked q = { 0 };
    int bits, group;
    r = cq_qmodel_read(qdir, &q, &bits, &group);
    char tmp[4096], path[4200];
    if (!r) r = cq_dir_begin(out, tmp, sizeof tmp);
    if (r) {
        cq_qpacked_free(&q);
        cq_llama_destroy(&m);
        return r;
    }
    /* dequantize into dense tensors in the model's parameter slots, then
     * save through the ordinary Hugging Face writer */
    for (int64_t k = 0; !r && k < q.n; k++) {
        if (!q.w[k].codes) continue;
        cq_llama_layer *L = &m->layers[k / CQ_LLAMA_N_LINEAR];
        int i = (int)(k % CQ_LLAMA_N_LINEAR);
        int64_t ne[2] = { q.w[k].out, q.w[k].in };
        char nm[96];
        r = cq_tensor_new(&L->lin[i], be, CQ_F32, 2, ne);
        if (r) break;
        cq_tensor_set_name(L->lin[i], cq_linear_name(nm, sizeof nm, k / CQ_LLAMA_N_LINEAR, i));
        float *d = malloc((size_t)(ne[0] * ne[1]) * sizeof(float));
        if (!d) r = CQ_ENOMEM;
        if (!r) r = cq_qunpack(&q.w[k], d);
        if (!r) r = cq_tensor_set_f32(L->lin[i], d);
        free(d);
        /* slot: tok_emb, then 9 per layer (attn_norm, q k v o, ffn_norm, gate up down) */
        int slot = 1 + (int)(k / CQ_LLAMA_N_LINEAR) * 9 + (i < 4 ? 1 + i : 2 + i);
        if (!r && (slot >= m->n_params || m->params[slot])) {
            cq_error("export: unexpected parameter layout");
            r = CQ_EINVAL;
        }
        if (!r) m->params[slot] = L->lin[i];
    }
    if (!r) r = cq_llama_save(m, tmp, dt, NULL);
    snprintf(path, sizeof path, "%s/tokenizer.json", qdir);
    if (!r && cq_file_exists(path)) {
        char dst[4200];
        snprintf(dst, sizeof dst, "%s/tokenizer.json", tmp);
        r = cq_copy_file(path, dst);
    }
    if (!r) r = cq_dir_commit(tmp, out);
    if (r) cq_dir_abort(tmp);
    cq_qpacked_free(&q);
    cq_llama_destroy(&m);
    return r;
}
