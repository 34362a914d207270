/* accesslog.c - see accesslog.h */
#include "accesslog.h"
#include "err.h"
#include "log.h"
#include "strfmt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define TL_BUF 16384

static _Atomic int log_fd = -1;
static char *log_path; /* NULL for stdout */
static pthread_mutex_t reopen_lock = PTHREAD_MUTEX_INITIALIZER;

static __thread char tl_buf[TL_BUF];
static __thread size_t tl_len;

int accesslog_open(const char *spec, char *err, size_t errlen)
{
    if (!spec || strcmp(spec, "off") == 0) {
        atomic_store(&log_fd, -1);
        return 0;
    }
    if (strcmp(spec, "-") == 0) {
        atomic_store(&log_fd, STDOUT_FILENO);
        return 0;
    }
    int fd = open(spec, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        err_set(err, errlen, "cannot open access log %s: %s", spec, strerror(errno));
        return -1;
    }
    free(log_path);
    log_path = strdup(spec);
    atomic_store(&log_fd, fd);
    return 0;
}

int accesslog_enabled(void)
{
    return atomic_load(&log_fd) >= 0;
}

void accesslog_flush(void)
{
    int fd = atomic_load(&log_fd);
    size_t off = 0;
    while (fd >= 0 && off < tl_len) {
        ssize_t w = write(fd, tl_buf + off, tl_len - off);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            break;
        }
        off += (size_t)w;
    }
    tl_len = 0;
}

static int is_secret_param(const char *name, size_t len)
{
    static const char *const names[] = {"api-token", "password", "token", "x-password"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && strncasecmp(name, names[i], len) == 0) return 1;
    return 0;
}

void accesslog_redact(const char *target, char *buf, size_t len)
{
    if (len == 0) return;
    size_t o = 0;
    const char *q = strchr(target, '?');
    size_t head = q ? (size_t)(q - target) + 1 : strlen(target);
    for (size_t i = 0; i < head && o + 1 < len; i++) buf[o++] = target[i];
    if (q) {
        const char *p = q + 1;
        while (*p && o + 1 < len) {
            const char *amp = strchr(p, '&');
            size_t plen = amp ? (size_t)(amp - p) : strlen(p);
            const char *eq = memchr(p, '=', plen);
            size_t keep = plen;
            int mask = eq && is_secret_param(p, (size_t)(eq - p));
            if (mask) keep = (size_t)(eq - p) + 1;
            for (size_t i = 0; i < keep && o + 1 < len; i++) buf[o++] = p[i];
            if (mask)
                for (const char *m = "***"; *m && o + 1 < len; m++) buf[o++] = *m;
            if (!amp) break;
            if (o + 1 < len) buf[o++] = '&';
            p = amp + 1;
        }
    }
    buf[o] = '\0';
    /* one event, one line: no control characters from the client */
    for (size_t i = 0; i < o; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == '"') buf[i] = '_';
}

void accesslog_request_up(const char *peer, const char *method, const char *target, int status,
                          uint64_t bytes, uint64_t ms, int64_t upstream_ms)
{
    if (atomic_load(&log_fd) < 0) return;
    char t[1024];
    accesslog_redact(target ? target : "-", t, sizeof t);
    if (tl_len + 1400 > TL_BUF) accesslog_flush();
    /* TIME PEER "METHOD TARGET" STATUS BYTES SECONDS UPSTREAM-SECONDS|-, without stdio:
     * this runs for every request */
    char ts[LOG_TIMESTAMP_LEN];
    log_timestamp(ts);
    struct strfmt f = {tl_buf + tl_len, 0, TL_BUF - tl_len - 1, 0};
    strfmt_put(&f, ts, sizeof ts);
    strfmt_put(&f, " ", 1);
    strfmt_str(&f, peer ? peer : "-");
    strfmt_put(&f, " \"", 2);
    strfmt_str(&f, method ? method : "-");
    strfmt_put(&f, " ", 1);
    strfmt_str(&f, t);
    strfmt_put(&f, "\" ", 2);
    strfmt_int(&f, status);
    strfmt_put(&f, " ", 1);
    strfmt_num(&f, bytes, 10);
    strfmt_put(&f, " ", 1);
    strfmt_millis(&f, ms);
    strfmt_put(&f, " ", 1);
    if (upstream_ms >= 0)
        strfmt_millis(&f, (unsigned long long)upstream_ms);
    else
        strfmt_put(&f, "-", 1);
    strfmt_put(&f, "\n", 1);
    tl_len += f.len;
}

void accesslog_reopen(void)
{
    pthread_mutex_lock(&reopen_lock);
    if (log_path) {
        int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        int cur = atomic_load(&log_fd);
        if (fd >= 0) {
            /* the descriptor number stays; only the file behind it changes, so a thread
             * writing at this instant writes to one file or the other, never to a
             * closed descriptor */
            if (cur > STDERR_FILENO) dup3(fd, cur, O_CLOEXEC);
            close(fd);
        }
    }
    pthread_mutex_unlock(&reopen_lock);
}

void accesslog_close(void)
{
    accesslog_flush();
    int fd = atomic_exchange(&log_fd, -1);
    if (fd > STDERR_FILENO) close(fd);
    free(log_path);
    log_path = NULL;
}
