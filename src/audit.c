/* audit.c - the audit trail's writer (see audit.h): one JSON line per certificate change,
 * appended with a single write(2) under a mutex and flock(2) on the folder, fsync'd
 * before audit_record returns; rotation by size under the same locks. */
#include "audit.h"

#include "err.h"
#include "fsutil.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A line made by audit_record_async, waiting for the audit thread. */
struct audit_line {
    struct audit_line *next;
    size_t len;
    char text[];
};

static struct {
    pthread_mutex_t mu;  /* guards everything below */
    int fd;              /* audit.jsonl, O_APPEND; -1: closed */
    int dirfd;           /* DIR/log, flock'd around each append (other processes) */
    char *path, *dir;
    size_t max_bytes;
    unsigned keep;
    time_t last_error;
    /* the audit thread (audit_record_async) */
    pthread_cond_t cv;
    pthread_t thr;
    int thr_started, stop;
    struct audit_line *head, *tail;
} A = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .cv = PTHREAD_COND_INITIALIZER,
       .fd = -1,
       .dirfd = -1,
       .max_bytes = AUDIT_MAX_BYTES_DEFAULT,
       .keep = AUDIT_KEEP_DEFAULT};

/* Under A.mu: logs a write problem, at most once a minute. */
static void report(const char *what, int e)
{
    time_t now = time(NULL);
    if (now - A.last_error < 60) return;
    A.last_error = now;
    log_error("audit log %s: %s: %s", A.path ? A.path : "?", what, strerror(e));
}

/* Opens A.path (a regular file, never through a link); a file that a crash left without
 * its final newline gets one, so the torn line stays a line of its own and the next ones
 * are whole. Read-write, for that check; a FIFO does not block the open. */
static int open_file(void)
{
    int fd = open(A.path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return -1;
    struct stat st, dst;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    /* root running `cert import` next to a gateway that runs as its own user: a file
     * made by a rotation here must stay writable for the gateway (the folder's owner) */
    if (geteuid() == 0 && fstat(A.dirfd, &dst) == 0 && st.st_size == 0 &&
        (st.st_uid != dst.st_uid || st.st_gid != dst.st_gid) &&
        fchown(fd, dst.st_uid, dst.st_gid) != 0)
        report("cannot give the new file to the folder's owner", errno);
    char last = '\n';
    if (st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n') {
        if (write(fd, "\n", 1) != 1)
            report("cannot end an incomplete line", errno);
        else
            log_warn("audit log %s: its last line was incomplete (a crash while it was "
                     "written); ended it so that the lines after it stay whole", A.path);
    }
    return fd;
}

int audit_open(const char *data_dir, char *err, size_t errlen)
{
    char *dir = fs_path_join(data_dir, AUDIT_DIR);
    char *path = dir ? fs_path_join(dir, AUDIT_FILE) : NULL;
    if (!path) {
        free(dir);
        err_set(err, errlen, "out of memory");
        return -1;
    }
    if (fs_mkdir_p(dir, 0700, 1, err, errlen) != 0) {
        free(path);
        free(dir);
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dfd < 0) {
        err_set(err, errlen, "cannot open %s: %s", dir, strerror(errno));
        free(path);
        free(dir);
        return -1;
    }
    /* likewise a log folder that root has just made in a data directory of another user */
    struct stat ds, ls;
    if (geteuid() == 0 && stat(data_dir, &ds) == 0 && fstat(dfd, &ls) == 0 && ls.st_uid == 0 &&
        ds.st_uid != 0 && fchown(dfd, ds.st_uid, ds.st_gid) != 0)
        log_warn("cannot give %s to uid %u: %s", dir, (unsigned)ds.st_uid, strerror(errno));
    pthread_mutex_lock(&A.mu);
    if (A.fd >= 0) close(A.fd);
    if (A.dirfd >= 0) close(A.dirfd);
    free(A.path);
    free(A.dir);
    A.path = path;
    A.dir = dir;
    A.dirfd = dfd;
    flock(dfd, LOCK_EX);
    A.fd = open_file();
    int e = errno;
    if (A.fd >= 0) fsync(dfd); /* a file just made: its name is durable too */
    flock(dfd, LOCK_UN);
    int rc = 0;
    if (A.fd < 0) {
        err_set(err, errlen, "cannot open the audit log %s: %s", path,
                e == ELOOP    ? "it is a symbolic link; certgate writes only a regular file there"
                : e == EINVAL ? "it is not a regular file; remove it"
                              : strerror(e));
        close(A.dirfd);
        A.dirfd = -1;
        rc = -1;
    }
    pthread_mutex_unlock(&A.mu);
    return rc;
}

void audit_configure(size_t max_bytes, unsigned keep)
{
    pthread_mutex_lock(&A.mu);
    A.max_bytes = max_bytes ? max_bytes : AUDIT_MAX_BYTES_DEFAULT;
    A.keep = keep < 1 ? 1 : keep > AUDIT_KEEP_MAX ? AUDIT_KEEP_MAX : keep;
    pthread_mutex_unlock(&A.mu);
}

static void put_str(json_t *o, const char *key, const char *v)
{
    json_object_set_new(o, key, v ? json_string(v) : json_null());
}

char *audit_format(const struct audit_event *ev)
{
    char ts[LOG_TIMESTAMP_LEN + 1];
    log_timestamp(ts);
    ts[LOG_TIMESTAMP_LEN] = '\0';
    json_t *o = json_object();
    if (!o) return NULL;
    put_str(o, "time", ts);
    put_str(o, "source", ev->source);
    put_str(o, "tokenId", ev->token_id);
    put_str(o, "client", ev->client);
    put_str(o, "operation", ev->op);
    put_str(o, "name", ev->name);
    put_str(o, "alias", ev->alias);
    put_str(o, "sha256Before", ev->sha_before);
    put_str(o, "sha256After", ev->sha_after);
    json_object_set_new(o, "status", json_integer(ev->status));
    put_str(o, "message", ev->message);
    if (ev->user) put_str(o, "user", ev->user);
    /* JSON_ENSURE_ASCII: a name or message with odd bytes cannot break the line (jansson
     * refuses invalid UTF-8 strings, which are then null) */
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(o);
    if (!line) return NULL;
    size_t len = strlen(line);
    char *out = realloc(line, len + 2);
    if (!out) {
        free(line);
        return NULL;
    }
    out[len] = '\n';
    out[len + 1] = '\0';
    return out;
}

/* Under A.mu and the folder's flock: rotates when a line of len bytes would take the
 * file over max_bytes. A failed rename is logged and the line goes to the current file:
 * a line is never dropped for the sake of rotation. */
static void rotate_if_due(size_t len)
{
    struct stat st;
    if (fstat(A.fd, &st) != 0 || st.st_size == 0 || (size_t)st.st_size + len <= A.max_bytes)
        return;
    size_t plen = strlen(A.path) + 16;
    char *from = malloc(plen), *to = malloc(plen);
    if (!from || !to) {
        free(from);
        free(to);
        return;
    }
    int ok = 1;
    for (unsigned k = A.keep; k >= 2 && ok; k--) {
        snprintf(from, plen, "%s.%u", A.path, k - 1);
        snprintf(to, plen, "%s.%u", A.path, k);
        if (rename(from, to) != 0 && errno != ENOENT) {
            report("cannot rotate", errno);
            ok = 0;
        }
    }
    snprintf(to, plen, "%s.1", A.path);
    if (ok && rename(A.path, to) != 0) {
        report("cannot rotate", errno);
        ok = 0;
    }
    if (ok) {
        int fd = open_file();
        if (fd < 0) {
            /* the old file is audit.jsonl.1 now: go on writing there rather than lose lines */
            report("cannot open a new file after rotating", errno);
        } else {
            close(A.fd);
            A.fd = fd;
        }
        if (fsync(A.dirfd) != 0) report("cannot fsync the folder after rotating", errno);
    }
    free(from);
    free(to);
}

/* Under A.mu: when another process has rotated the file, continues in the new one. */
static void follow_rotation(void)
{
    struct stat a, b;
    if (fstat(A.fd, &a) != 0) return;
    if (lstat(A.path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) return;
    int fd = open_file();
    if (fd < 0) {
        report("cannot reopen after another process rotated it", errno);
        return;
    }
    close(A.fd);
    A.fd = fd;
}

/* Under A.mu: appends one complete line (len bytes with its '\n') and fsyncs it. */
static void append_locked(const char *line, size_t len)
{
    if (A.fd < 0) return;
    flock(A.dirfd, LOCK_EX); /* waits for another process's append or rotation */
    follow_rotation();
    rotate_if_due(len);
    size_t done = 0;
    while (done < len) { /* one write(2) unless the disk is full or a signal interrupts */
        ssize_t n = write(A.fd, line + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            report("cannot append", n < 0 ? errno : EIO);
            break;
        }
        done += (size_t)n;
    }
    if (done == len && fsync(A.fd) != 0) report("cannot fsync", errno);
    flock(A.dirfd, LOCK_UN);
}

void audit_record(const struct audit_event *ev)
{
    char *line = audit_format(ev);
    if (!line) return;
    pthread_mutex_lock(&A.mu);
    append_locked(line, strlen(line));
    pthread_mutex_unlock(&A.mu);
    free(line);
}

static void *audit_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&A.mu);
    for (;;) {
        while (!A.head && !A.stop) pthread_cond_wait(&A.cv, &A.mu);
        struct audit_line *l = A.head;
        if (!l) break; /* stop, and nothing left */
        A.head = l->next;
        if (!A.head) A.tail = NULL;
        append_locked(l->text, l->len);
        free(l);
    }
    pthread_mutex_unlock(&A.mu);
    return NULL;
}

void audit_record_async(const struct audit_event *ev)
{
    char *line = audit_format(ev);
    if (!line) return;
    size_t len = strlen(line);
    struct audit_line *l = malloc(sizeof *l + len);
    if (l) {
        l->next = NULL;
        l->len = len;
        memcpy(l->text, line, len);
    }
    free(line);
    if (!l) return;
    pthread_mutex_lock(&A.mu);
    if (A.fd < 0 || A.stop) {
        pthread_mutex_unlock(&A.mu);
        free(l);
        return;
    }
    if (!A.thr_started) {
        if (pthread_create(&A.thr, NULL, audit_thread, NULL) == 0) {
            A.thr_started = 1;
        } else { /* no thread: write it here rather than lose it */
            append_locked(l->text, l->len);
            pthread_mutex_unlock(&A.mu);
            free(l);
            return;
        }
    }
    if (A.tail) A.tail->next = l;
    else A.head = l;
    A.tail = l;
    pthread_cond_signal(&A.cv);
    pthread_mutex_unlock(&A.mu);
}

void audit_close(void)
{
    pthread_mutex_lock(&A.mu);
    int joined = A.thr_started;
    A.stop = 1;
    pthread_cond_signal(&A.cv);
    pthread_mutex_unlock(&A.mu);
    if (joined) pthread_join(A.thr, NULL); /* it writes what is queued first */
    pthread_mutex_lock(&A.mu);
    A.thr_started = 0;
    A.stop = 0;
    if (A.fd >= 0) close(A.fd);
    if (A.dirfd >= 0) close(A.dirfd);
    A.fd = A.dirfd = -1;
    free(A.path);
    free(A.dir);
    A.path = A.dir = NULL;
    pthread_mutex_unlock(&A.mu);
}
