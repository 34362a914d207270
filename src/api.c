/* api.c - the certificate REST API (see api.h). */
#include "api.h"

#include "auth.h"
#include "fsutil.h"
#include "gw.h"
#include "log.h"
#include "p12.h"
#include "secret.h"

#include <dirent.h>
#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#define API_MID "/api/v1/certificate"
#define SMALL_BODY (64 * 1024)
#define MAX_NAME 128

enum op { OP_NONE, OP_LIST, OP_UPLOAD, OP_DELETE, OP_ACTIVATE, OP_DESCRIBE };

struct api_job {
    struct http_exchange *x;
    uv_work_t work;
    enum op op;
    char name[MAX_NAME + 1];
    /* result, made in the thread pool */
    int status;
    char *body;
    const char *ctype;
};

/* ----- paths and names ----- */

const char *api_name_invalid(const char *name, size_t len)
{
    if (len == 0) return "the certificate name is empty";
    if (len > MAX_NAME) return "the certificate name is longer than 128 characters";
    if (name[0] == '.') return "the certificate name must not start with '.'";
    if (len == 4 && memcmp(name, "list", 4) == 0) return "'list' is reserved and cannot be a certificate name";
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return "the certificate name may only hold letters, digits, '.', '_' and '-'";
    }
    return NULL;
}

/* Splits /e/{env}/api/v1/certificate[/rest]; returns rest (NULL when absent). */
static int split_path(const char *path, const char **env, size_t *envlen, const char **rest)
{
    if (strncmp(path, API_PREFIX, 3) != 0) return -1;
    const char *e = path + 3;
    const char *slash = strchr(e, '/');
    if (!slash || slash == e) return -1;
    if (strncmp(slash, API_MID, sizeof API_MID - 1) != 0) return -1;
    const char *after = slash + sizeof API_MID - 1;
    if (*after != '\0' && *after != '/') return -1;
    *env = e;
    *envlen = (size_t)(slash - e);
    *rest = *after == '/' ? after + 1 : NULL;
    return 0;
}

int api_match(const char *path)
{
    const char *env, *rest;
    size_t envlen;
    return split_path(path, &env, &envlen, &rest) == 0;
}

/* ----- answers ----- */

static void respond_json(struct http_exchange *x, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    http_respond(x, status, "application/json", NULL, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
}

static void respond_error_envelope(struct http_exchange *x, int status, const char *msg)
{
    json_t *j = json_pack("{s:{s:i,s:s}}", "error", "code", status, "message", msg);
    respond_json(x, status, j);
    json_decref(j);
}

static void respond_405(struct http_exchange *x, const char *allow)
{
    char hdr[80];
    snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
    char msg[200];
    int n = snprintf(msg, sizeof msg, "method %s not allowed here; allowed: %s\n",
                     http_req(x)->method_name, allow);
    http_respond(x, 405, "text/plain; charset=utf-8", hdr, msg, (size_t)n);
}

/* ----- the thread-pool side ----- */

static void job_text(struct api_job *j, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_text(struct api_job *j, int status, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf - 2, fmt, ap);
    va_end(ap);
    strcat(buf, "\n");
    j->status = status;
    j->ctype = "text/plain; charset=utf-8";
    j->body = strdup(buf);
}

static void job_json(struct api_job *j, json_t *v)
{
    j->status = 200;
    j->ctype = "application/json";
    j->body = json_dumps(v, JSON_COMPACT);
    if (!j->body) job_text(j, 500, "out of memory");
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The alias to serve from a new keystore: the configured one when the file has it. */
static const char *pick_alias(const struct p12_file *p12)
{
    const char *want = gw_configured_alias();
    const struct p12_entry *e;
    if (want && *want && p12_select(p12, want, &e, NULL, 0) == P12_OK) return want;
    return NULL;
}

static json_t *describe(const struct p12_file *p12, const char *name, int active)
{
    json_t *d = p12_describe(p12, name);
    if (d) json_object_set_new(d, "active", json_boolean(active));
    return d;
}

/* Switches to p12 (taken over) as `name`: prepare, optional file write, config record,
 * publish. On any failure nothing live or on disk is changed. */
static void switch_to(struct api_job *j, struct p12_file *p12, const char *password,
                      const void *data, size_t len)
{
    char err[1024];
    const char *picked = pick_alias(p12);
    char *alias = picked ? strdup(picked) : NULL;
    struct gw_change *ch = gw_change_prepare(p12, alias, err, sizeof err);
    if (!ch) {
        p12_free(p12);
        free(alias);
        job_text(j, 400, "%s: %s", j->name, err);
        return;
    }
    char *path = fs_path_join(gw_paths.ssl_dir, j->name);
    char *old = NULL;
    size_t oldlen = 0;
    int had_old = 0;
    if (data) { /* upload: keep what it replaces, to put it back if the config fails */
        had_old = fs_read_file(path, 64u << 20, &old, &oldlen, NULL, 0) == 0;
        if (fs_write_atomic_mode(path, data, len, 0600, err, sizeof err) != 0) {
            job_text(j, 500, "cannot store %s: %s", j->name, err);
            goto fail;
        }
    }
    if (gw_record_certificate(j->name, password, alias, err, sizeof err) != 0) {
        if (data) {
            char e2[256];
            if (had_old ? fs_write_atomic(path, old, oldlen, 0600, e2, sizeof e2)
                        : fs_unlink_durable(path, e2, sizeof e2))
                log_error("certificate API: could not undo the write of %s: %s", path, e2);
        }
        job_text(j, 500, "cannot record %s in custom.properties: %s", j->name, err);
        goto fail;
    }
    const char *served_alias = gw_change_alias(ch);
    log_info("certificate API: %s %s (alias '%s'); new connections get it now",
             data ? "uploaded and activated" : "activated", j->name, served_alias);
    gw_change_commit(ch, j->name);
    json_t *d = describe(gw_active_p12(), j->name, 1);
    job_json(j, d);
    json_decref(d);
    free(path);
    free(old);
    free(alias);
    return;
fail:
    gw_change_abort(ch);
    free(path);
    free(old);
    free(alias);
}

int api_password_json(const char *body, size_t len, char **pw)
{
    json_error_t je;
    json_t *v = json_loadb(body, len, 0, &je);
    const char *p = json_string_value(json_object_get(v, "password"));
    *pw = p ? strdup(p) : NULL;
    json_decref(v);
    return p ? 0 : 1;
}

/* The password of an activate/describe request: X-Password, else {"password":...} in
 * the body whatever its Content-Type, else "". */
static int request_password(struct api_job *j, const struct http_request *r, char **pw)
{
    const char *h = http_header(r, "X-Password");
    if (h) {
        *pw = strdup(h);
        return *pw ? 0 : -1;
    }
    if (r->body_len == 0) {
        *pw = strdup("");
        return *pw ? 0 : -1;
    }
    if (api_password_json(r->body, r->body_len, pw) == 1) {
        job_text(j, 400,
                 "the password is missing: send it in the X-Password header or as the body "
                 "{\"password\":\"...\"}");
        return -1;
    }
    return *pw ? 0 : -1;
}

static void op_upload(struct api_job *j, const struct http_request *r)
{
    if (r->body_len == 0) {
        job_text(j, 400, "%s: the body is empty; send the PKCS#12 file (curl -T file.p12)",
                 j->name);
        return;
    }
    if (gw_is_active_name(j->name)) {
        job_text(j, 403,
                 "%s is the active certificate file and cannot be replaced; upload the new "
                 "certificate under another name (it is activated at once), then delete %s",
                 j->name, j->name);
        return;
    }
    const char *h = http_header(r, "X-Password");
    char *pw = strdup(h ? h : "");
    char err[1024];
    struct p12_file *p12 = NULL;
    if (!pw) {
        job_text(j, 500, "out of memory");
        return;
    }
    if (p12_parse(r->body, r->body_len, pw, j->name, &p12, err, sizeof err) != P12_OK)
        job_text(j, 400, "%s", err);
    else
        switch_to(j, p12, pw, r->body, r->body_len);
    secret_free(pw);
}

/* Opens the stored file j->name with the request's password: 0 with *p12 and *pw (the
 * caller frees both), or -1 with the answer (404, 400) already in j. */
static int open_stored(struct api_job *j, const struct http_request *r, struct p12_file **p12,
                       char **pw)
{
    char *path = fs_path_join(gw_paths.ssl_dir, j->name);
    int rc = -1;
    *pw = NULL;
    *p12 = NULL;
    if (!path) {
        job_text(j, 500, "out of memory");
    } else if (!file_exists(path)) {
        job_text(j, 404, "no certificate file named %s", j->name);
    } else if (request_password(j, r, pw) == 0) {
        char err[1024];
        if (p12_load_file(path, *pw, p12, err, sizeof err) == P12_OK)
            rc = 0;
        else
            job_text(j, 400, "%s", err);
    }
    free(path);
    if (rc != 0) {
        secret_free(*pw);
        *pw = NULL;
    }
    return rc;
}

static void op_activate(struct api_job *j, const struct http_request *r)
{
    struct p12_file *p12;
    char *pw;
    if (open_stored(j, r, &p12, &pw) != 0) return;
    switch_to(j, p12, pw, NULL, 0);
    secret_free(pw);
}

static void op_delete(struct api_job *j)
{
    char *path = fs_path_join(gw_paths.ssl_dir, j->name);
    char err[512];
    if (!file_exists(path)) {
        job_text(j, 404, "no certificate file named %s", j->name);
    } else if (gw_is_active_name(j->name)) {
        job_text(j, 403,
                 "%s is the active certificate file and cannot be deleted; activate another "
                 "certificate first", j->name);
    } else if (fs_unlink_durable(path, err, sizeof err) != 0) {
        job_text(j, 500, "cannot delete %s: %s", j->name, err);
    } else {
        log_info("certificate API: deleted %s", j->name);
        j->status = 200;
        j->ctype = NULL;
        j->body = NULL;
    }
    free(path);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void op_list(struct api_job *j)
{
    DIR *d = opendir(gw_paths.ssl_dir);
    if (!d) {
        job_text(j, 500, "cannot read %s: %s", gw_paths.ssl_dir, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (api_name_invalid(de->d_name, strlen(de->d_name))) continue; /* dot files etc. */
        char *p = fs_path_join(gw_paths.ssl_dir, de->d_name);
        int reg = p && file_exists(p);
        free(p);
        if (!reg) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof *names);
            if (!nn) break;
            names = nn;
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n > 1) qsort(names, n, sizeof *names, cmp_names); /* names is NULL when n == 0 */
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *e = NULL;
        if (names[i] && gw_active_p12() && gw_is_active_name(names[i]))
            e = describe(gw_active_p12(), names[i], 1);
        if (!e) e = json_pack("{s:s}", "name", names[i] ? names[i] : "");
        json_array_append_new(arr, e);
        free(names[i]);
    }
    free(names);
    job_json(j, arr);
    json_decref(arr);
}

static void op_describe(struct api_job *j, const struct http_request *r)
{
    struct p12_file *p12;
    char *pw;
    if (open_stored(j, r, &p12, &pw) != 0) return;
    secret_free(pw);
    json_t *d = describe(p12, j->name, gw_is_active_name(j->name));
    job_json(j, d);
    json_decref(d);
    p12_free(p12);
}

static void work_cb(uv_work_t *w)
{
    struct api_job *j = w->data;
    const struct http_request *r = http_req(j->x);
    gw_lock();
    switch (j->op) {
    case OP_UPLOAD:
        op_upload(j, r);
        break;
    case OP_ACTIVATE:
        op_activate(j, r);
        break;
    case OP_DELETE:
        op_delete(j);
        break;
    case OP_LIST:
        op_list(j);
        break;
    case OP_DESCRIBE:
        op_describe(j, r);
        break;
    default:
        job_text(j, 500, "unknown operation");
    }
    gw_unlock();
}

static void after_cb(uv_work_t *w, int status)
{
    struct api_job *j = w->data;
    struct http_exchange *x = j->x;
    char *body = j->body;
    j->body = NULL;
    if (status != 0)
        http_respond_text(x, 500, "the operation was cancelled");
    else
        http_respond(x, j->status, j->ctype, NULL, body ? body : "", body ? strlen(body) : 0);
    free(body); /* j itself went with the exchange */
}

/* ----- the event-loop side ----- */

static void job_free(void *p)
{
    struct api_job *j = p;
    free(j->body);
    free(j);
}

static void on_headers(struct http_exchange *x)
{
    struct api_job *j = NULL;
    const struct http_request *r = http_req(x);
    const char *env, *rest;
    size_t envlen;
    split_path(r->path, &env, &envlen, &rest);
    char envbuf[65];
    snprintf(envbuf, sizeof envbuf, "%.*s", (int)(envlen < 64 ? envlen : 64), env);
    if (envlen > 64) envbuf[0] = '\0'; /* matches no token */

    const char *authz = http_header(r, "Authorization");
    char qtok[256] = "", msg[300];
    const char *qt = auth_query_param(r->query, "api-token", qtok, sizeof qtok) == 0 ? qtok : NULL;
    enum auth_result ar =
        auth_check(gw_paths.config_dir, authz, qt, envbuf, AUTH_SCOPE_CERTS, msg, sizeof msg);
    explicit_bzero(qtok, sizeof qtok);
    if (ar != AUTH_OK) {
        respond_error_envelope(x, auth_status(ar), msg);
        return;
    }

    /* what is asked */
    enum op op = OP_NONE;
    const char *name = NULL;
    size_t namelen = 0;
    const char *allow = NULL;
    if (!rest || !*rest) {
        http_respond_text(x, 404,
                          "no such endpoint: use %.*s/list or %.*s/{name} (PUT, DELETE), "
                          "{name}/activate, {name}/list",
                          (int)(rest ? (rest - r->path - 1) : (long)strlen(r->path)), r->path,
                          (int)(rest ? (rest - r->path - 1) : (long)strlen(r->path)), r->path);
        return;
    }
    const char *slash = strchr(rest, '/');
    if (!slash && strcmp(rest, "list") == 0) {
        op = r->method == HTTP_GET || r->method == HTTP_HEAD ? OP_LIST : OP_NONE;
        allow = "GET, HEAD";
    } else {
        name = rest;
        namelen = slash ? (size_t)(slash - rest) : strlen(rest);
        const char *why = api_name_invalid(name, namelen);
        if (why) {
            http_respond_text(x, 400, "invalid certificate name '%.*s': %s", (int)(namelen > 200 ? 200 : namelen), name, why);
            return;
        }
        const char *sub = slash ? slash + 1 : NULL;
        if (!sub) {
            op = r->method == HTTP_PUT ? OP_UPLOAD : r->method == HTTP_DELETE ? OP_DELETE : OP_NONE;
            allow = "PUT, DELETE";
        } else if (strcmp(sub, "activate") == 0) {
            op = r->method == HTTP_POST ? OP_ACTIVATE : OP_NONE;
            allow = "POST";
        } else if (strcmp(sub, "list") == 0) {
            op = r->method == HTTP_GET || r->method == HTTP_POST || r->method == HTTP_HEAD ? OP_DESCRIBE : OP_NONE;
            allow = "GET, POST, HEAD";
        } else {
            http_respond_text(x, 404, "no such endpoint: %s (use {name}, {name}/activate or {name}/list)", r->path);
            return;
        }
    }
    if (op == OP_NONE) {
        respond_405(x, allow);
        return;
    }
    j = calloc(1, sizeof *j);
    if (!j) {
        http_respond_text(x, 500, "out of memory");
        return;
    }
    j->x = x;
    j->op = op;
    if (name) snprintf(j->name, sizeof j->name, "%.*s", (int)namelen, name);
    j->work.data = j;
    /* the exchange owns the job from here on */
    struct http_route *rt = http_route(x);
    rt->ctx = j;
    rt->on_free = job_free;
}

static void handle(struct http_exchange *x)
{
    struct api_job *j = http_route(x)->ctx;
    if (!j) {
        http_respond_text(x, 500, "internal error: no job");
        return;
    }
    if (uv_queue_work(http_loop(x), &j->work, work_cb, after_cb) != 0)
        http_respond_text(x, 503, "cannot queue the certificate operation; try again");
}

void api_route(const struct http_request *req, const struct gw_snap *snap, struct http_route *out)
{
    out->handle = handle;
    out->on_headers = on_headers;
    out->max_body = req->method == HTTP_PUT ? snap->max_upload_bytes : SMALL_BODY;
}
