/* secretdir.c - the watched secret directory (--tls-secret-dir): inotify on the folder,
 * a debounce timer, the read + key derivation in the thread pool, the switch under
 * gw_lock. */
#include "secretdir.h"

#include "audit.h"
#include "err.h"
#include "fsutil.h"
#include "gw.h"
#include "log.h"
#include "metrics.h"
#include "p12.h"
#include "secret.h"

#include <errno.h>
#include <jansson.h>
#include <stdatomic.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define P12_NAME "server.p12"
#define MAX_P12 (16u << 20)
#define MAX_SMALL 4096u

/* What one look at the folder came to. */
enum sd_result {
    SD_APPLIED,   /* a new set is served */
    SD_REFUSED,   /* a new set was refused; the served certificate stays */
    SD_UNCHANGED, /* the same bytes as the last set looked at: nothing to do */
    SD_UNSTABLE   /* a file changed while it was read: read again */
};

/* The identity of the three files as read (following links); errno_ 0: it exists. */
struct sd_ids {
    struct stat st[3];
    int errno_[3];
};

static const char *const sd_names[3] = {P12_NAME, "password", "alias"};

static struct {
    uv_loop_t *loop;
    char *dir;
    char *path[3]; /* DIR/server.p12, DIR/password, DIR/alias */
    int ifd;       /* inotify; -1: none */
    int wd;        /* the watch on DIR; -1: DIR is gone */
    uv_poll_t poll;
    uv_timer_t debounce, retry;
    uv_work_t work;
    int started, busy, again, stopping;
    _Atomic int force;        /* set by secretdir_rescan: look even at unchanged bytes */
    _Atomic int last_refused; /* the last set looked at was refused */
    enum sd_result result; /* of the last job */
    /* [job] touched only by the one job running (or the start, before any) */
    unsigned char last[32]; /* SHA-256 of the last set looked at */
    int have_last;
} S = {.ifd = -1, .wd = -1};

/* ----- reading the set ----- */

static void sd_ids_take(struct sd_ids *ids)
{
    for (int i = 0; i < 3; i++)
        ids->errno_[i] = stat(S.path[i], &ids->st[i]) == 0 ? 0 : errno;
}

static int sd_ids_same(const struct sd_ids *a, const struct sd_ids *b)
{
    for (int i = 0; i < 3; i++) {
        if (a->errno_[i] != b->errno_[i]) return 0;
        if (!a->errno_[i] && !fs_same_version(&a->st[i], &b->st[i])) return 0;
    }
    return 1;
}

static void sd_wipe(char *p, size_t len)
{
    if (!p) return;
    OPENSSL_cleanse(p, len);
    free(p);
}

/* Reads optional file i (at most MAX_SMALL bytes): 0 with *data (NULL when it does not
 * exist), or -1 with a sentence. */
static int sd_read_small(int i, char **data, size_t *len, char *err, size_t errlen)
{
    *data = NULL;
    *len = 0;
    if (fs_read_file(S.path[i], MAX_SMALL, data, len, err, errlen) == 0) return 0;
    return errno == ENOENT ? 0 : -1;
}

static void sd_digest_part(EVP_MD_CTX *md, const char *data, size_t len)
{
    unsigned long long n = data ? (unsigned long long)len : ~0ull;
    EVP_DigestUpdate(md, &n, sizeof n);
    if (data && len) EVP_DigestUpdate(md, data, len);
}

/* Audits a change of the set (status 200) or its refusal (400) and counts it. */
static void sd_record(const char *alias, const char *before, const char *after, int status,
                      const char *message)
{
    struct audit_event ev = {.source = "secret-dir",
                             .op = "secret-change",
                             .name = P12_NAME,
                             .alias = alias,
                             .sha_before = before[0] ? before : NULL,
                             .sha_after = after[0] ? after : NULL,
                             .status = status,
                             .message = message};
    audit_record(&ev);
    metrics_inc(M_SECRET_DIR + (status != 200));
}

/* Logs, audits and counts a refusal of the set (why names the file and the problem). */
static void sd_refuse(const char *alias, const char *why)
{
    char sha[65], what[1024];
    gw_lock();
    gw_served_sha256(sha);
    gw_describe_served(what, sizeof what);
    gw_unlock();
    log_error("tls-secret-dir %s: refused: %s; still serving %s", S.dir, why, what);
    sd_record(alias, sha, sha, 400, why);
}

/* Switches to p12 (taken over) with alias (NULL: the first key entry), as an API
 * activation does: select, check, prepare, commit. 0, or -1 with a sentence. */
static int sd_switch(struct p12_file *p12, const char *alias, char *err, size_t errlen)
{
    const struct p12_entry *e = NULL;
    json_t *warnings = json_array();
    char why[1024], before[65], after[65], what[1024];
    gw_lock();
    gw_served_sha256(before);
    int bad = p12_select(p12, alias, &e, err, errlen) != P12_OK; /* names the file */
    if (!bad && p12_check_entry(e, time(NULL), warnings, why, sizeof why) != 0) {
        err_set(err, errlen, "%s: %s", S.path[0], why);
        bad = 1;
    }
    if (bad) {
        gw_unlock();
        p12_free(p12);
        json_decref(warnings);
        return -1;
    }
    struct gw_change *ch = gw_change_prepare(p12, alias, why, sizeof why);
    if (!ch) {
        gw_unlock();
        const char *w = json_string_value(json_array_get(warnings, 0));
        err_set(err, errlen, "%s: %s%s%s%s", S.path[0], why, w ? " (" : "", w ? w : "",
                w ? ")" : "");
        p12_free(p12);
        json_decref(warnings);
        return -1;
    }
    char served_alias[256];
    snprintf(served_alias, sizeof served_alias, "%s", gw_change_alias(ch));
    gw_change_commit_secret(ch, S.path[0]);
    gw_served_sha256(after);
    gw_describe_served(what, sizeof what);
    gw_unlock();
    log_info("tls-secret-dir %s: changed; serving %s; new connections get it now", S.dir, what);
    for (size_t i = 0; i < json_array_size(warnings); i++)
        log_warn("tls-secret-dir %s: %s: %s", S.dir, S.path[0],
                 json_string_value(json_array_get(warnings, i)));
    json_decref(warnings);
    char msg[1200];
    snprintf(msg, sizeof msg, "%s (alias '%s') activated from the secret directory %s", P12_NAME,
             served_alias, S.dir);
    sd_record(served_alias, before, after, 200, msg);
    return 0;
}

/* One look at the folder: reads the set, skips it when it is the last one looked at,
 * else decrypts it (the slow part, without gw_lock) and switches to it or refuses it.
 * Runs in the thread pool (or at start). */
static enum sd_result sd_load(void)
{
    struct sd_ids before, after;
    char err[1024] = "";
    char *data = NULL, *pw = NULL, *al = NULL;
    size_t len = 0, pwlen = 0, allen = 0;
    int p12_err = 0, pw_err = 0, al_err = 0;
    sd_ids_take(&before);
    if (fs_read_file(S.path[0], MAX_P12, &data, &len, err, sizeof err) != 0) p12_err = errno;
    char e2[512] = "", e3[512] = "";
    if (sd_read_small(1, &pw, &pwlen, e2, sizeof e2) != 0) pw_err = 1;
    if (sd_read_small(2, &al, &allen, e3, sizeof e3) != 0) al_err = 1;
    sd_ids_take(&after);
    enum sd_result res = SD_UNSTABLE;
    if (!sd_ids_same(&before, &after)) goto out;
    struct stat dst;
    if (p12_err == ENOENT && stat(S.dir, &dst) != 0) { /* the folder went: sd_gone says so */
        res = SD_UNCHANGED;
        goto out;
    }

    /* the same bytes as last time (an event without a change, or a set refused before):
     * nothing to do */
    unsigned char dg[32];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int dg_ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    if (dg_ok) {
        sd_digest_part(md, p12_err ? NULL : data, len);
        sd_digest_part(md, pw, pwlen);
        sd_digest_part(md, al, allen);
        dg_ok = EVP_DigestFinal_ex(md, dg, NULL);
    }
    EVP_MD_CTX_free(md);
    if (dg_ok && S.have_last && !S.force && memcmp(dg, S.last, sizeof dg) == 0) {
        res = SD_UNCHANGED;
        goto out;
    }
    S.force = 0;
    if (dg_ok) memcpy(S.last, dg, sizeof dg);
    S.have_last = dg_ok;

    /* password: one trailing newline (LF or CRLF) is not part of it */
    if (pw && pwlen && pw[pwlen - 1] == '\n') pw[--pwlen] = '\0';
    if (pw && pwlen && pw[pwlen - 1] == '\r') pw[--pwlen] = '\0';
    /* alias: blanks around it are not part of it */
    char *alias = al;
    if (al) {
        while (allen && strchr(" \t\r\n", al[allen - 1]))
            al[--allen] = '\0';
        while (*alias && strchr(" \t\r\n", *alias))
            alias++;
        if (!*alias) alias = NULL;
    }
    char why[1200];
    struct p12_file *p12 = NULL;
    if (p12_err == ENOENT)
        snprintf(why, sizeof why,
                 "%s: missing (the folder must hold server.p12, and optionally password and "
                 "alias)", S.path[0]);
    else if (p12_err)
        snprintf(why, sizeof why, "%s", err);
    else if (pw_err)
        snprintf(why, sizeof why, "%s", e2);
    else if (al_err)
        snprintf(why, sizeof why, "%s", e3);
    else if (pw && strlen(pw) != pwlen)
        snprintf(why, sizeof why, "%s: the password holds a NUL byte", S.path[1]);
    else if (len == 0)
        snprintf(why, sizeof why, "%s: the file is empty", S.path[0]);
    else {
        enum p12_status st = p12_parse(data, len, pw ? pw : "", S.path[0], &p12, err, sizeof err);
        if (st == P12_ERR_PASSWORD)
            snprintf(why, sizeof why, "%s (%s)", err,
                     pw ? "the password is the content of the file password beside it"
                        : "there is no file password beside it, so the empty password was "
                          "tried");
        else if (st != P12_OK)
            snprintf(why, sizeof why, "%s", err);
        else if (sd_switch(p12, alias, err, sizeof err) != 0)
            snprintf(why, sizeof why, "%s", err);
        else
            why[0] = '\0';
    }
    res = why[0] ? SD_REFUSED : SD_APPLIED;
    S.last_refused = res == SD_REFUSED;
    if (res == SD_REFUSED) sd_refuse(alias, why);
out:
    sd_wipe(data, len);
    sd_wipe(pw, pwlen);
    free(al);
    return res;
}

/* ----- the watch ----- */

static void sd_schedule(void);

static void sd_work(uv_work_t *w)
{
    S.result = sd_load();
}

static void sd_after_work(uv_work_t *w, int status)
{
    S.busy = 0;
    if (S.stopping) return;
    if (S.result == SD_UNSTABLE || S.again) {
        S.again = 0;
        sd_schedule();
    }
}

static void sd_on_debounce(uv_timer_t *t)
{
    if (S.wd < 0) return; /* the folder is gone; sd_on_retry reads it when it is back */
    if (S.busy) {
        S.again = 1;
        return;
    }
    if (uv_queue_work(S.loop, &S.work, sd_work, sd_after_work) == 0) S.busy = 1;
    else sd_schedule();
}

/* (Re)starts the debounce timer: the set is read SECRETDIR_DEBOUNCE_MS after the last
 * event. */
static void sd_schedule(void)
{
    if (!S.stopping) uv_timer_start(&S.debounce, sd_on_debounce, SECRETDIR_DEBOUNCE_MS, 0);
}

static int sd_add_watch(void)
{
    S.wd = inotify_add_watch(S.ifd, S.dir,
                             IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE |
                                 IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF |
                                 IN_ONLYDIR);
    return S.wd >= 0 ? 0 : -1;
}

static void sd_on_retry(uv_timer_t *t)
{
    if (sd_add_watch() != 0) return;
    uv_timer_stop(&S.retry);
    log_info("tls-secret-dir %s: the folder is back; reading it", S.dir);
    sd_schedule();
}

/* DIR was removed or moved away: the served certificate stays; the watch comes back
 * with the folder. */
static void sd_gone(void)
{
    if (S.wd >= 0) inotify_rm_watch(S.ifd, S.wd);
    S.wd = -1;
    uv_timer_stop(&S.debounce);
    log_warn("tls-secret-dir %s: the folder is gone; the served certificate stays; it is "
             "read again when the folder comes back",
             S.dir);
    uv_timer_start(&S.retry, sd_on_retry, SECRETDIR_RETRY_MS, SECRETDIR_RETRY_MS);
}

static void sd_on_inotify(uv_poll_t *h, int status, int events)
{
    _Alignas(struct inotify_event) char buf[8192];
    int changed = 0, gone = 0;
    for (;;) {
        ssize_t n = read(S.ifd, buf, sizeof buf);
        if (n <= 0) break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                changed = 1;
                continue;
            }
            if (ev->wd != S.wd || S.wd < 0) continue; /* an old watch's last words */
            if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT))
                gone = 1;
            else
                changed = 1;
        }
    }
    if (gone) sd_gone();
    else if (changed) sd_schedule();
}

int secretdir_start(uv_loop_t *loop, const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        err_set(err, errlen, "--tls-secret-dir %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        err_set(err, errlen, "--tls-secret-dir %s: not a folder", dir);
        return -1;
    }
    S.loop = loop;
    S.dir = strdup(dir);
    for (int i = 0; i < 3; i++)
        S.path[i] = S.dir ? fs_path_join(dir, sd_names[i]) : NULL;
    if (!S.dir || !S.path[0] || !S.path[1] || !S.path[2]) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    S.ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (S.ifd < 0 || sd_add_watch() != 0) {
        err_set(err, errlen, "--tls-secret-dir %s: cannot watch it (inotify): %s", dir,
                strerror(errno));
        return -1;
    }
    gw_set_secret_dir(dir);
    uv_timer_init(loop, &S.debounce);
    uv_timer_init(loop, &S.retry);
    if (uv_poll_init(loop, &S.poll, S.ifd) != 0 ||
        uv_poll_start(&S.poll, UV_READABLE, sd_on_inotify) != 0) {
        err_set(err, errlen, "--tls-secret-dir %s: cannot poll its inotify descriptor", dir);
        return -1;
    }
    S.started = 1;
    log_info("tls-secret-dir %s: watching it; the certificate API does not switch "
             "certificates while it is given", dir);
    /* the watch is in place before the first read, so no update can fall in between */
    sd_load();
    return 0;
}

void secretdir_rescan(void)
{
    if (!S.started || S.stopping) return;
    if (S.last_refused) S.force = 1;
    sd_schedule();
}

void secretdir_stop(void)
{
    if (!S.started || S.stopping) return;
    S.stopping = 1;
    uv_close((uv_handle_t *)&S.poll, NULL);
    uv_close((uv_handle_t *)&S.debounce, NULL);
    uv_close((uv_handle_t *)&S.retry, NULL);
}

void secretdir_free(void)
{
    if (S.ifd >= 0) close(S.ifd);
    S.ifd = S.wd = -1;
    for (int i = 0; i < 3; i++) {
        free(S.path[i]);
        S.path[i] = NULL;
    }
    free(S.dir);
    S.dir = NULL;
    S.started = S.stopping = 0;
}
