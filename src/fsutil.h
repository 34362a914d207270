/* fsutil.h - small file-system helpers with the durability rules of the project.
 *
 * Every write that replaces a file is atomic and durable: a temp file in the same
 * folder (named ".tmp-<name>-<random>", never listed by the certificate API), fsync,
 * rename over the target, fsync of the folder. A crash at any instant leaves either
 * the old file or the new one. All functions return 0 on success and -1 on failure
 * with a sentence in err (when err is not NULL). Thread-safe (no shared state). */
#ifndef CERTGATE_FSUTIL_H
#define CERTGATE_FSUTIL_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Atomically replaces (or creates) path with data. The new file gets the mode of the
 * file it replaces, or `mode` when there was none. When path is a symbolic link, the
 * link stays and the file it points to is replaced. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err,
                    size_t errlen);

/* Like fs_write_atomic, but the new file always gets `mode`, whatever the mode of the
 * file it replaces (for secrets such as uploaded key stores, which must stay 0600 even
 * when they replace a file copied in with a looser mode). */
int fs_write_atomic_mode(const char *path, const void *data, size_t len, mode_t mode, char *err,
                         size_t errlen);

/* Like fs_write_atomic, but never replaces an existing file (O_EXCL semantics): the
 * temp file is link(2)ed to path, so of several processes racing exactly one wins.
 * When path already exists, fails with errno == EEXIST preserved. The file gets `mode`. */
int fs_create_atomic(const char *path, const void *data, size_t len, mode_t mode, char *err,
                     size_t errlen);

/* Reads a whole regular file (at most max bytes, else error "... is larger than N bytes").
 * *data is malloc'd and NUL-terminated (the NUL is not counted in *len).
 * A missing file fails with errno == ENOENT preserved. */
int fs_read_file(const char *path, size_t max, char **data, size_t *len, char *err, size_t errlen);

/* fsync(2) on a folder, so a rename or unlink in it is durable. */
int fs_fsync_dir(const char *dir, char *err, size_t errlen);

/* Creates dir and missing parents; the last component gets `mode`. An existing
 * folder is fine (its mode is left alone unless force_mode is non-zero). */
int fs_mkdir_p(const char *dir, mode_t mode, int force_mode, char *err, size_t errlen);

/* Unlinks path and fsyncs its folder. A missing path fails with errno == ENOENT. */
int fs_unlink_durable(const char *path, char *err, size_t errlen);

/* Removes stale ".tmp-*" files left in dir by a crash (call it at start-up, before any
 * writer runs). Returns how many were removed, or -1 when dir cannot be read. */
int fs_remove_stale_temps(const char *dir);

/* ----- entries of a folder the gateway owns (DIR/ssl/) -----
 * Such an entry is used only when it is a regular file (never through a symbolic link:
 * the last component is opened with O_NOFOLLOW) owned by the gateway's user (the
 * effective uid) or by root. Refusals are sentences that say what to do, e.g.
 * "cert.p12 in /d/ssl is a symbolic link; certgate uses only regular files there:
 * replace the link with the file itself (cp --remove-destination TARGET /d/ssl/cert.p12)".
 * errno: ENOENT (absent), ELOOP (a symbolic link), EINVAL (not a regular file), EPERM
 * (another owner), else the system's. */

/* Checks dir/name without opening it (lstat): 0 when usable. */
int fs_check_entry(const char *dir, const char *name, char *err, size_t errlen);

/* Opens dir/name read-only with those checks (a FIFO does not block the call): the
 * descriptor, or -1. */
int fs_open_entry(const char *dir, const char *name, char *err, size_t errlen);

/* fs_read_file for an entry, with those checks. */
int fs_read_entry(const char *dir, const char *name, size_t max, char **data, size_t *len,
                  char *err, size_t errlen);

/* fs_write_atomic_mode for an entry: when dir/name is a symbolic link, the link itself
 * is replaced (its target is never written); the caller refuses links beforehand with
 * fs_check_entry. */
int fs_write_entry(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
                   char *err, size_t errlen);

/* Joins dir and name with one '/' into a malloc'd string; name is used as is when it
 * is absolute. */
char *fs_path_join(const char *dir, const char *name);

/* 1 when a and b (stat or lstat of one path, taken at two times) describe the same version
 * of the file: same device, inode, size, mtime and ctime. A file replaced by rename gets a
 * new inode and one changed in place new times, so the same version means the same
 * content. */
int fs_same_version(const struct stat *a, const struct stat *b);

#endif
