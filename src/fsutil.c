#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fsutil.h"
#include "err.h"
#include "strfmt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TEMP_PREFIX ".tmp-"
/* keeps ".tmp-<base>-<16 hex>" under NAME_MAX for any base name */
#define TEMP_BASE_MAX 200

/* Splits path into a malloc'd folder ("." when there is none) and a pointer to the
 * base name inside path. */
static char *split_path(const char *path, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        *base = path;
        return strdup(".");
    }
    *base = slash + 1;
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static void random_hex(char *out, size_t nbytes)
{
    unsigned char buf[16];
    if (nbytes > sizeof buf) nbytes = sizeof buf;
    if (getrandom(buf, nbytes, GRND_NONBLOCK) != (ssize_t)nbytes) {
        /* never fatal: the name only has to be unlikely to collide, O_EXCL does the rest */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
        for (size_t i = 0; i < nbytes; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (unsigned char)(x >> 56);
        }
    }
    strfmt_hex(out, buf, nbytes);
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Creates a temp file next to path holding data, with `mode`, fsync'd and closed.
 * On success *tmp_out is the malloc'd temp path and *dir_out the malloc'd folder. */
static int write_atomic(const char *path, const void *data, size_t len, mode_t mode, int keep_mode,
                        int nofollow, char *err, size_t errlen);

static int write_temp(const char *path, const void *data, size_t len, mode_t mode,
                      const struct stat *owner, char **tmp_out, char **dir_out, char *err,
                      size_t errlen)
{
    const char *base;
    char *dir = split_path(path, &base);
    if (!dir) {
        err_set(err, errlen, "out of memory writing %s", path);
        return -1;
    }
    if (*base == '\0') {
        errno = EISDIR;
        err_set(err, errlen, "cannot write %s: the path names a folder", path);
        free(dir);
        return -1;
    }
    size_t baselen = strlen(base);
    if (baselen > TEMP_BASE_MAX) baselen = TEMP_BASE_MAX;
    size_t tmpsize = strlen(dir) + 1 + sizeof TEMP_PREFIX + baselen + 1 + 16 + 1;
    char *tmp = malloc(tmpsize);
    if (!tmp) {
        err_set(err, errlen, "out of memory writing %s", path);
        free(dir);
        return -1;
    }
    int fd = -1;
    for (int attempt = 0; attempt < 16 && fd < 0; attempt++) {
        char rnd[17];
        random_hex(rnd, 8);
        snprintf(tmp, tmpsize, "%s/%s%.*s-%s", dir, TEMP_PREFIX, (int)baselen, base, rnd);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        err_set(err, errlen, "cannot create a temp file in %s: %s", dir, strerror(errno));
        free(tmp);
        free(dir);
        return -1;
    }
    const char *what = NULL;
    if (write_all(fd, data, len) < 0)
        what = "write";
    else if (fchmod(fd, mode & 07777) < 0)
        what = "set the mode of";
    else if (fsync(fd) < 0)
        what = "fsync";
    if (!what && owner && (owner->st_uid != geteuid() || owner->st_gid != getegid())) {
        /* best effort: only root may give the file back to its owner */
        if (fchown(fd, owner->st_uid, owner->st_gid) < 0) errno = 0;
    }
    if (what) {
        err_set(err, errlen, "cannot %s the temp file %s: %s", what, tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        free(dir);
        return -1;
    }
    if (close(fd) < 0) {
        err_set(err, errlen, "cannot close the temp file %s: %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        free(dir);
        return -1;
    }
    *tmp_out = tmp;
    *dir_out = dir;
    return 0;
}

static int write_resolved(const char *path, const void *data, size_t len, mode_t mode,
                          int keep_mode, char *err, size_t errlen)
{
    /* a symlink (e.g. to a file kept elsewhere by configuration management) stays in
     * place: the file it points to is replaced, in that file's folder */
    struct stat st;
    char *real = NULL;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode) && (real = realpath(path, NULL)) != NULL)
        path = real;
    int rc = write_atomic(path, data, len, mode, keep_mode, 0, err, errlen);
    free(real);
    return rc;
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err,
                    size_t errlen)
{
    return write_resolved(path, data, len, mode, 1, err, errlen);
}

int fs_write_atomic_mode(const char *path, const void *data, size_t len, mode_t mode, char *err,
                         size_t errlen)
{
    return write_resolved(path, data, len, mode, 0, err, errlen);
}

static int write_atomic(const char *path, const void *data, size_t len, mode_t mode, int keep_mode,
                        int nofollow, char *err, size_t errlen)
{
    struct stat st;
    const struct stat *owner = NULL;
    if ((nofollow ? lstat(path, &st) : stat(path, &st)) == 0) {
        if (S_ISDIR(st.st_mode)) {
            errno = EISDIR;
            err_set(err, errlen, "cannot write %s: it is a folder", path);
            return -1;
        }
        if (keep_mode) mode = st.st_mode & 07777;
        owner = &st;
    } else if (errno != ENOENT) {
        err_set(err, errlen, "cannot check %s: %s", path, strerror(errno));
        return -1;
    }
    char *tmp, *dir;
    if (write_temp(path, data, len, mode, owner, &tmp, &dir, err, errlen) < 0) return -1;
    if (rename(tmp, path) < 0) {
        err_set(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        free(dir);
        return -1;
    }
    free(tmp);
    int rc = fs_fsync_dir(dir, err, errlen);
    free(dir);
    return rc;
}

int fs_create_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err,
                     size_t errlen)
{
    char *tmp, *dir;
    if (write_temp(path, data, len, mode, NULL, &tmp, &dir, err, errlen) < 0) return -1;
    int rc = link(tmp, path);
    if (rc < 0 && (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS)) {
        /* a file system without hard links: the kernel's no-replace rename is as safe */
        rc = renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE);
    }
    if (rc < 0) {
        int saved = errno;
        unlink(tmp);
        errno = saved;
        if (saved == EEXIST)
            err_set(err, errlen, "cannot create %s: it already exists", path);
        else
            err_set(err, errlen, "cannot create %s: %s", path, strerror(saved));
        free(tmp);
        free(dir);
        return -1;
    }
    unlink(tmp); /* after link(); a no-op after renameat2 */
    free(tmp);
    rc = fs_fsync_dir(dir, err, errlen);
    free(dir);
    return rc;
}

static int read_fd(int fd, const char *path, size_t max, char **data, size_t *len, char *err,
                   size_t errlen);

int fs_read_file(const char *path, size_t max, char **data, size_t *len, char *err, size_t errlen)
{
    *data = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    return read_fd(fd, path, max, data, len, err, errlen);
}

/* Reads the whole regular file open on fd (closed here). */
static int read_fd(int fd, const char *path, size_t max, char **data, size_t *len, char *err,
                   size_t errlen)
{
    *data = NULL;
    if (len) *len = 0;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        err_set(err, errlen, "cannot check %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        err_set(err, errlen, "cannot read %s: it is not a regular file", path);
        return -1;
    }
    if ((uintmax_t)st.st_size > (uintmax_t)max) {
        close(fd);
        errno = EFBIG;
        err_set(err, errlen, "%s is larger than %zu bytes", path, max);
        return -1;
    }
    /* the size may change while reading: read up to max + 1 to notice growth */
    size_t cap = (size_t)st.st_size + 1, used = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        errno = ENOMEM;
        err_set(err, errlen, "out of memory reading %s", path);
        return -1;
    }
    for (;;) {
        if (used == cap) {
            if (cap > max) break;
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nbuf = realloc(buf, ncap + 1);
            if (!nbuf) {
                free(buf);
                close(fd);
                errno = ENOMEM;
                err_set(err, errlen, "out of memory reading %s", path);
                return -1;
            }
            buf = nbuf;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + used, cap - used);
        if (n < 0) {
            if (errno == EINTR) continue;
            err_set(err, errlen, "cannot read %s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return -1;
        }
        if (n == 0) break;
        used += (size_t)n;
    }
    close(fd);
    if (used > max) {
        free(buf);
        errno = EFBIG;
        err_set(err, errlen, "%s is larger than %zu bytes", path, max);
        return -1;
    }
    buf[used] = '\0';
    *data = buf;
    if (len) *len = used;
    return 0;
}

int fs_fsync_dir(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        err_set(err, errlen, "cannot open the folder %s: %s", dir, strerror(errno));
        return -1;
    }
    /* some file systems cannot fsync a folder; their renames are as durable as it gets */
    if (fsync(fd) < 0 && errno != EINVAL && errno != EROFS && errno != EOPNOTSUPP) {
        err_set(err, errlen, "cannot fsync the folder %s: %s", dir, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* mkdir that accepts an existing folder; *created tells whether it made one. */
static int mkdir_one(const char *dir, mode_t mode, int *created, char *err, size_t errlen)
{
    *created = 0;
    if (mkdir(dir, mode) == 0) {
        *created = 1;
        return 0;
    }
    int saved = errno;
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return 0;
        errno = ENOTDIR;
        err_set(err, errlen, "cannot create the folder %s: a file of that name is in the way", dir);
        return -1;
    }
    errno = saved;
    err_set(err, errlen, "cannot create the folder %s: %s", dir, strerror(saved));
    return -1;
}

int fs_mkdir_p(const char *dir, mode_t mode, int force_mode, char *err, size_t errlen)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    if (n == 0) {
        errno = EINVAL;
        err_set(err, errlen, "cannot create a folder with an empty name");
        return -1;
    }
    char *p = strndup(dir, n);
    if (!p) {
        errno = ENOMEM;
        err_set(err, errlen, "out of memory creating %s", dir);
        return -1;
    }
    int created = 0;
    for (size_t i = 1; i < n; i++) {
        if (p[i] != '/' || p[i - 1] == '/') continue;
        p[i] = '\0';
        int rc = mkdir_one(p, 0755, &created, err, errlen);
        p[i] = '/';
        if (rc < 0) {
            free(p);
            return -1;
        }
    }
    if (mkdir_one(p, mode, &created, err, errlen) < 0) {
        free(p);
        return -1;
    }
    /* mkdir's mode went through the umask; chmod sets it exactly */
    if ((created || force_mode) && chmod(p, mode & 07777) < 0) {
        err_set(err, errlen, "cannot set the mode of the folder %s: %s", p, strerror(errno));
        free(p);
        return -1;
    }
    int rc = 0;
    if (created) {
        const char *base;
        char *parent = split_path(p, &base);
        if (parent) rc = fs_fsync_dir(parent, err, errlen);
        free(parent);
    }
    free(p);
    return rc;
}

int fs_unlink_durable(const char *path, char *err, size_t errlen)
{
    if (unlink(path) < 0) {
        err_set(err, errlen, "cannot remove %s: %s", path, strerror(errno));
        return -1;
    }
    const char *base;
    char *dir = split_path(path, &base);
    if (!dir) {
        errno = ENOMEM;
        err_set(err, errlen, "out of memory removing %s", path);
        return -1;
    }
    int rc = fs_fsync_dir(dir, err, errlen);
    free(dir);
    return rc;
}

int fs_remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, TEMP_PREFIX, sizeof TEMP_PREFIX - 1) != 0) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
        if (!S_ISREG(st.st_mode)) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0) removed++;
    }
    if (removed > 0) fsync(dirfd(d));
    closedir(d);
    return removed;
}

/* 0 when st (of dir/name) is a usable entry, else -1 with the sentence. */
static int entry_ok(const struct stat *st, const char *dir, const char *name, char *err,
                    size_t errlen)
{
    if (S_ISLNK(st->st_mode)) {
        errno = ELOOP;
        err_set(err, errlen,
                "%s in %s is a symbolic link; certgate uses only regular files there: replace "
                "the link with the file itself (cp --remove-destination TARGET %s/%s)",
                name, dir, dir, name);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        errno = EINVAL;
        err_set(err, errlen,
                "%s in %s is not a regular file (%s); remove it and store the certificate "
                "file under that name",
                name, dir,
                S_ISDIR(st->st_mode)    ? "a folder"
                : S_ISFIFO(st->st_mode) ? "a FIFO"
                : S_ISSOCK(st->st_mode) ? "a socket"
                                        : "a device");
        return -1;
    }
    if (st->st_uid != geteuid() && st->st_uid != 0) {
        errno = EPERM;
        err_set(err, errlen,
                "%s in %s belongs to uid %u, not to the gateway's user (uid %u) or root; "
                "give it to that user (chown) if it is yours",
                name, dir, (unsigned)st->st_uid, (unsigned)geteuid());
        return -1;
    }
    return 0;
}

int fs_check_entry(const char *dir, const char *name, char *err, size_t errlen)
{
    char *path = fs_path_join(dir, name);
    if (!path) {
        errno = ENOMEM;
        err_set(err, errlen, "out of memory");
        return -1;
    }
    struct stat st;
    int rc = lstat(path, &st);
    if (rc != 0)
        err_set(err, errlen, "cannot find %s in %s: %s", name, dir, strerror(errno));
    else
        rc = entry_ok(&st, dir, name, err, errlen);
    free(path);
    return rc;
}

int fs_open_entry(const char *dir, const char *name, char *err, size_t errlen)
{
    char *path = fs_path_join(dir, name);
    if (!path) {
        errno = ENOMEM;
        err_set(err, errlen, "out of memory");
        return -1;
    }
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; a regular file ignores it */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    free(path);
    struct stat st;
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP) { /* the last component is a symbolic link */
            st.st_mode = S_IFLNK;
            entry_ok(&st, dir, name, err, errlen);
        } else {
            err_set(err, errlen, "%s: cannot open: %s (in %s)", name, strerror(e), dir);
        }
        errno = e;
        return -1;
    }
    if (fstat(fd, &st) != 0 || entry_ok(&st, dir, name, err, errlen) != 0) {
        int e = errno;
        if (e != ELOOP && e != EINVAL && e != EPERM)
            err_set(err, errlen, "cannot check %s in %s: %s", name, dir, strerror(e));
        close(fd);
        errno = e;
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int fs_read_entry(const char *dir, const char *name, size_t max, char **data, size_t *len,
                  char *err, size_t errlen)
{
    *data = NULL;
    if (len) *len = 0;
    int fd = fs_open_entry(dir, name, err, errlen);
    if (fd < 0) return -1;
    char *path = fs_path_join(dir, name);
    int rc = read_fd(fd, path ? path : name, max, data, len, err, errlen);
    free(path);
    return rc;
}

int fs_write_entry(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
                   char *err, size_t errlen)
{
    char *path = fs_path_join(dir, name);
    if (!path) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    int rc = write_atomic(path, data, len, mode, 0, 1, err, errlen);
    free(path);
    return rc;
}

char *fs_path_join(const char *dir, const char *name)
{
    if (name[0] == '/' || dir[0] == '\0') return strdup(name);
    size_t dlen = strlen(dir);
    while (dlen > 0 && dir[dlen - 1] == '/')
        dlen--;
    size_t nlen = strlen(name);
    char *out = malloc(dlen + 1 + nlen + 1);
    if (!out) return NULL;
    memcpy(out, dir, dlen);
    out[dlen] = '/';
    memcpy(out + dlen + 1, name, nlen + 1);
    return out;
}

int fs_same_version(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}
