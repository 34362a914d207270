/* audit.c - the audit trail: one JSON line per certificate change, appended with a
 * single write(2) under a mutex and fsync'd before audit_record returns. */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t audit_mu = PTHREAD_MUTEX_INITIALIZER;
static int audit_fd = -1;
static time_t audit_last_error;

int audit_open(const char *data_dir, char *err, size_t errlen)
{
    char *dir = fs_path_join(data_dir, "log");
    char *path = dir ? fs_path_join(dir, "audit.jsonl") : NULL;
    int rc = -1;
    if (!path) {
        err_set(err, errlen, "out of memory");
    } else if (fs_mkdir_p(dir, 0700, 0, err, errlen) == 0) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            err_set(err, errlen, "cannot open the audit log %s: %s", path, strerror(errno));
        } else {
            pthread_mutex_lock(&audit_mu);
            if (audit_fd >= 0) close(audit_fd);
            audit_fd = fd;
            pthread_mutex_unlock(&audit_mu);
            rc = 0;
        }
    }
    free(path);
    free(dir);
    return rc;
}

static void put_str(json_t *o, const char *key, const char *v)
{
    json_object_set_new(o, key, v ? json_string(v) : json_null());
}

void audit_record(const struct audit_event *ev)
{
    char ts[LOG_TIMESTAMP_LEN + 1];
    log_timestamp(ts);
    ts[LOG_TIMESTAMP_LEN] = '\0';
    json_t *o = json_object();
    if (!o) return;
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
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line) return;
    size_t len = strlen(line);
    line[len] = '\n'; /* json_dumps' terminator becomes the newline */
    pthread_mutex_lock(&audit_mu);
    if (audit_fd >= 0) {
        ssize_t n = write(audit_fd, line, len + 1);
        int e = n < 0 ? errno : (n != (ssize_t)(len + 1) ? EIO : 0);
        if (e == 0 && fsync(audit_fd) != 0) e = errno;
        time_t now = time(NULL);
        if (e && now - audit_last_error >= 60) {
            audit_last_error = now;
            log_error("cannot append to the audit log: %s", strerror(e));
        }
    }
    pthread_mutex_unlock(&audit_mu);
    free(line);
}

void audit_close(void)
{
    pthread_mutex_lock(&audit_mu);
    if (audit_fd >= 0) close(audit_fd);
    audit_fd = -1;
    pthread_mutex_unlock(&audit_mu);
}
