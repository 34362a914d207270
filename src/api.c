/* api.c - the certificate REST API (see api.h): the event-loop side. A request is
 * authenticated and parsed here, becomes a job (api_job.h) run in the thread pool
 * (api_ops.c, api_fleet_ops.c), and is answered here. */
#include "api.h"

#include "api_fleet.h"
#include "api_job.h"
#include "auth.h"
#include "conn.h"
#include "gw.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <llhttp.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define SMALL_BODY (64 * 1024)

/* API jobs queued or running, over all workers ([certgate] api-queue caps it) */
static _Atomic unsigned api_jobs;
/* What a client is told to wait before trying again when the queue is full. */
#define API_RETRY_AFTER_S 2

/* ----- answers ----- */

char *api_error_body(int status, const char *msg)
{
    /* the message may quote a path or name: keep it printable ASCII (valid UTF-8) */
    char clean[1024];
    size_t n = 0;
    for (; msg[n] && n + 1 < sizeof clean; n++)
        clean[n] = (unsigned char)msg[n] >= 0x20 && (unsigned char)msg[n] < 0x7f ? msg[n] : '?';
    clean[n] = '\0';
    json_t *j = json_pack("{s:{s:i,s:s}}", "error", "code", status, "message", clean);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* An error answer in the envelope; extra: "Name: value\r\n" lines or NULL. */
static void respond_error(struct http_exchange *x, int status, const char *extra, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));
static void respond_error(struct http_exchange *x, int status, const char *extra, const char *fmt,
                          ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *body = api_error_body(status, msg);
    static const char fallback[] = "{\"error\":{\"code\":500,\"message\":\"out of memory\"}}";
    http_respond(x, status, "application/json", extra, body ? body : fallback,
                 body ? strlen(body) : sizeof fallback - 1);
    free(body);
}

/* Errors the HTTP layer finds in an API request (413, 400, 408, ...). */
void api_http_error(struct http_exchange *x, int status, const char *msg)
{
    respond_error(x, status, NULL, "%s", msg);
}

static void respond_405(struct http_exchange *x, const char *allow)
{
    char hdr[80];
    snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
    respond_error(x, 405, hdr, "Method %s is not allowed here; use %s.", http_req(x)->method_name,
                  allow);
}

/* ----- the thread-pool side (api_ops.c, api_fleet_ops.c) ----- */

static void work_cb(uv_work_t *w)
{
    struct api_job *j = w->data;
    if (!j->fleet && atomic_load_explicit(&j->gone, memory_order_acquire)) {
        j->skipped = 1;
        return;
    }
    api_job_run(j);
}

static enum metrics_certop metrics_op(enum api_op op)
{
    switch (op) {
    case OP_UPLOAD: return MO_UPLOAD;
    case OP_DELETE: return MO_DELETE;
    case OP_ACTIVATE: return MO_ACTIVATE;
    case OP_DESCRIBE: return MO_DESCRIBE;
    default: return MO_LIST;
    }
}

static void after_cb(uv_work_t *w, int status);

/* ----- ?wait=all: a look at the other members every API_FLEET_POLL_MS ----- */

/* Between two looks the job holds its api-queue slot, but no thread: a timer on the
 * exchange's loop queues the next short pool job (one etcd request). */

static void close_free(uv_handle_t *h)
{
    free(h);
}

static int queue_poll(struct api_job *j)
{
    j->queued = 1;
    if (uv_queue_work(http_loop(j->x), &j->work, work_cb, after_cb) == 0) return 0;
    j->queued = 0;
    return -1;
}

static void answer(struct api_job *j, int status);

/* The look cannot be scheduled (no memory): the change is made, say so without waiting. */
static void poll_failed(struct api_job *j)
{
    long long rev = j->fleet ? (long long)j->fleet->revision : 0;
    log_error("certificate API: %s %s: cannot wait for the other fleet members (out of "
              "memory)", api_op_names[j->op], j->name);
    api_fleet_op_drop(j);
    free(j->body);
    api_job_error(j, 500,
                  "%s: committed in etcd at revision %lld and applied here, but this gateway "
                  "could not wait for the other members (out of memory); certgate fleet "
                  "status shows them",
                  j->name, rev);
    answer(j, 0);
}

static void poll_timer_cb(uv_timer_t *t)
{
    struct api_job *j = t->data;
    if (queue_poll(j) != 0) poll_failed(j);
}

static int poll_later(struct api_job *j)
{
    if (!j->timer) {
        uv_timer_t *t = malloc(sizeof *t);
        if (!t || uv_timer_init(http_loop(j->x), t) != 0) {
            free(t);
            return -1;
        }
        t->data = j;
        j->timer = t;
    }
    return uv_timer_start(j->timer, poll_timer_cb, API_FLEET_POLL_MS, 0);
}

static void after_cb(uv_work_t *w, int status)
{
    struct api_job *j = w->data;
    j->queued = 0;
    if (status == 0 && !j->skipped && j->fleet) { /* ?wait=all, the others not all there */
        j->polling = 1;
        if (poll_later(j) == 0 || queue_poll(j) == 0) return;
        poll_failed(j);
        return;
    }
    answer(j, status);
}

/* The job's answer (status: libuv's, UV_ECANCELED when the job was taken off the queue);
 * its api-queue slot is free again. */
static void answer(struct api_job *j, int status)
{
    struct http_exchange *x = j->x;
    char *body = j->body;
    j->body = NULL;
    j->polling = 0;
    if (j->timer) {
        uv_close((uv_handle_t *)j->timer, close_free);
        j->timer = NULL;
    }
    atomic_fetch_sub(&api_jobs, 1);
    if (j->skipped || status == UV_ECANCELED)
        log_info("certificate API: %s%s%s not started: its client has gone", api_op_names[j->op],
                 j->name[0] ? " " : "", j->name);
    if (status != 0 || j->skipped)
        respond_error(x, 503, "Retry-After: 1\r\n",
                      "The certificate operation was not started: the client closed its "
                      "connection.");
    else
        http_respond(x, j->status, j->ctype, j->extra, body ? body : "", body ? strlen(body) : 0);
    if (!j->skipped && status == 0 && j->op != OP_NONE)
        metrics_inc(M_CERT_OP + (unsigned)metrics_op(j->op) * 2 + (j->status >= 300));
    free(body); /* j itself went with the exchange */
}

/* ----- the event-loop side ----- */

static void job_free(void *p)
{
    struct api_job *j = p;
    json_decref(j->pre_warnings);
    json_decref(j->fleet_desc);
    free(j->fleet_alias);
    free(j->body);
    api_fleet_op_drop(j); /* not after an answer: kept for safety */
    if (j->timer) uv_close((uv_handle_t *)j->timer, close_free);
    free(j);
}

/* The client has gone or closed its side (http.h: on_abort). A queued job is taken off the queue; one that
 * has already started runs to its end (its answer goes nowhere). */
static void on_abort(struct http_exchange *x)
{
    struct api_job *j = http_route(x)->ctx;
    if (!j) return;
    atomic_store_explicit(&j->gone, 1, memory_order_release);
    /* a ?wait=all look is not cancelled: the change is made, its answer is made too */
    if (j->queued && !j->polling) uv_cancel((uv_req_t *)&j->work); /* UV_ECANCELED */
}

static unsigned queue_limit(struct http_exchange *x)
{
    const struct gw_snap *snap = http_worker(x)->snap;
    return snap && snap->api_queue ? snap->api_queue : 8;
}

static void respond_busy(struct http_exchange *x, unsigned limit)
{
    char hdr[40];
    snprintf(hdr, sizeof hdr, "Retry-After: %d\r\n", API_RETRY_AFTER_S);
    respond_error(x, 503, hdr,
                  "The gateway is already running %u certificate operations ([certgate] "
                  "api-queue); try again in %d seconds.",
                  limit, API_RETRY_AFTER_S);
}

/* The audit line of a change refused on the loop before any job exists (a bad name or
 * dryRun value): written by the audit thread, as the loop must not wait for an fsync.
 * op NULL: not a change, nothing recorded. */
static void audit_early(struct http_exchange *x, const char *op, const char *name,
                        const char *token_id, const char *msg)
{
    struct api_audit a = {op, name, NULL, token_id, http_peer(x), msg, NULL, NULL, 400};
    if (op) api_audit_record(&a, 1);
}

/* ?wait=all|local and ?timeout=S of a change: *ms 0 (this member only; also the default),
 * or how long wait=all waits for every live fleet member. A single node accepts both:
 * it has nobody else to wait for. -1 with the 400's sentence for a value that is not
 * understood: a misspelt wait must not silently give a shorter wait. */
static int wait_param(const char *query, unsigned *ms, char *msg, size_t msglen)
{
    char v[16], t[16];
    int has_wait = auth_query_param(query, "wait", v, sizeof v) == 0;
    int has_timeout = auth_query_param(query, "timeout", t, sizeof t) == 0;
    *ms = 0;
    if (has_wait && strcmp(v, "all") != 0 && strcmp(v, "local") != 0) {
        snprintf(msg, msglen, "wait must be all (every live fleet member has applied the "
                 "change) or local (the default).");
        return -1;
    }
    int all = has_wait && strcmp(v, "all") == 0;
    if (has_timeout && !all) {
        snprintf(msg, msglen, "timeout goes with wait=all (how long to wait for every live "
                 "fleet member, 1-%d seconds); without wait=all the answer waits for this "
                 "gateway only.", API_FLEET_ALL_WAIT_MAX_S);
        return -1;
    }
    unsigned s = API_FLEET_ALL_WAIT_MS / 1000;
    if (has_timeout) {
        char *end;
        errno = 0;
        unsigned long l = strtoul(t, &end, 10);
        if (t[0] < '0' || t[0] > '9' || *end || errno || l < 1 || l > API_FLEET_ALL_WAIT_MAX_S) {
            snprintf(msg, msglen, "timeout must be a whole number of seconds from 1 to %d "
                     "(default %d): how long wait=all waits for every live fleet member.",
                     API_FLEET_ALL_WAIT_MAX_S, API_FLEET_ALL_WAIT_MS / 1000);
            return -1;
        }
        s = (unsigned)l;
    }
    if (all) *ms = s * 1000;
    return 0;
}

static void on_headers(struct http_exchange *x)
{
    struct api_job *j = NULL;
    const struct http_request *r = http_req(x);
    const char *env, *rest;
    size_t envlen;
    api_split_path(r->path, &env, &envlen, &rest);
    char envbuf[65];
    snprintf(envbuf, sizeof envbuf, "%.*s", (int)(envlen < 64 ? envlen : 64), env);
    if (envlen > 64) envbuf[0] = '\0'; /* matches no token */

    /* an address with too many failed authentications gets 429 whatever it sends */
    struct auth_throttle *at = auth_throttle_shared();
    const char *peer = http_peer(x);
    unsigned retry = 0;
    if (at && auth_throttle_check(at, peer, auth_now_ms(), &retry)) {
        char hdr[48];
        snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", retry);
        respond_error(x, 429, hdr,
                      "Too many failed authentications from your address; try again in %u "
                      "seconds.",
                      retry);
        return;
    }
    const char *authz = http_header(r, "Authorization");
    char qtok[256] = "", msg[300], token_id[64];
    const char *qt = auth_query_param(r->query, "api-token", qtok, sizeof qtok) == 0 ? qtok : NULL;
    enum auth_result ar =
        auth_check(gw_paths.config_dir, authz, qt, envbuf, AUTH_SCOPE_CERTS, msg, sizeof msg);
    auth_token_id(authz, qt, token_id, sizeof token_id);
    explicit_bzero(qtok, sizeof qtok);
    if (ar != AUTH_OK) {
        if (ar != AUTH_ERROR) metrics_inc(M_TOKEN_FAIL);
        if (at && ar != AUTH_ERROR) auth_throttle_failed(at, peer, auth_now_ms());
        respond_error(x, auth_status(ar), NULL, "%s", msg);
        return;
    }

    /* what is asked */
    enum api_op op = OP_NONE;
    const char *name = NULL;
    size_t namelen = 0;
    const char *allow = NULL;
    if (!rest || !*rest) {
        int base = (int)(rest ? (rest - r->path - 1) : (long)strlen(r->path));
        respond_error(x, 404, NULL,
                      "No such endpoint: use %.*s/list or %.*s/{name} (PUT, DELETE), "
                      "{name}/activate, {name}/list.",
                      base, r->path, base, r->path);
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
            char m[400];
            snprintf(m, sizeof m, "Invalid certificate name '%.*s': %s.",
                     (int)(namelen > 200 ? 200 : namelen), name, why);
            const char *sub = slash ? slash + 1 : "";
            audit_early(x, r->method == HTTP_PUT && !slash      ? "upload"
                           : r->method == HTTP_DELETE && !slash ? "delete"
                           : r->method == HTTP_POST && strcmp(sub, "activate") == 0
                               ? "activate"
                               : NULL,
                        NULL, token_id, m);
            respond_error(x, 400, NULL, "%s", m);
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
        } else if (namelen == 4 && memcmp(name, "acme", 4) == 0 && api_acme(x, sub) == 0) {
            return; /* acme/status, acme/renew (api_acme.c) */
        } else {
            respond_error(x, 404, NULL,
                          "No such endpoint: %.200s (use {name}, {name}/activate or "
                          "{name}/list).",
                          r->path);
            return;
        }
    }
    if (op == OP_NONE) {
        respond_405(x, allow);
        return;
    }
    int dry = 0;
    char dryv[16];
    if ((op == OP_UPLOAD || op == OP_ACTIVATE) &&
        auth_query_param(r->query, "dryRun", dryv, sizeof dryv) == 0) {
        /* a misspelt value must not turn a check into a live switch */
        if (strcmp(dryv, "true") != 0 && strcmp(dryv, "false") != 0) {
            char n[API_MAX_NAME + 1];
            snprintf(n, sizeof n, "%.*s", (int)namelen, name ? name : "");
            audit_early(x, api_op_names[op], n, token_id, "dryRun must be true or false.");
            respond_error(x, 400, NULL, "dryRun must be true or false.");
            return;
        }
        dry = strcmp(dryv, "true") == 0;
    }
    unsigned wait_all_ms = 0;
    if (op == OP_UPLOAD || op == OP_ACTIVATE || op == OP_DELETE) {
        char m[300], n[API_MAX_NAME + 1];
        if (wait_param(r->query, &wait_all_ms, m, sizeof m) < 0) {
            snprintf(n, sizeof n, "%.*s", (int)namelen, name ? name : "");
            audit_early(x, api_op_names[op], n, token_id, m);
            respond_error(x, 400, NULL, "%s", m);
            return;
        }
    }
    unsigned limit = queue_limit(x);
    if (atomic_load(&api_jobs) >= limit) { /* full now: do not even read the body */
        respond_busy(x, limit);
        return;
    }
    j = calloc(1, sizeof *j);
    if (!j) {
        respond_error(x, 500, NULL, "The gateway is out of memory; try again.");
        return;
    }
    j->x = x;
    j->op = op;
    j->dry = dry;
    j->wait_all_ms = wait_all_ms;
    snprintf(j->token_id, sizeof j->token_id, "%s", token_id);
    snprintf(j->client, sizeof j->client, "%s", peer ? peer : "");
    if (name) snprintf(j->name, sizeof j->name, "%.*s", (int)namelen, name);
    j->work.data = j;
    /* the exchange owns the job from here on */
    struct http_route *rt = http_route(x);
    rt->ctx = j;
    rt->on_free = job_free;
    rt->on_abort = on_abort;
}

static void handle(struct http_exchange *x)
{
    struct api_job *j = http_route(x)->ctx;
    if (!j) {
        respond_error(x, 500, NULL, "Internal error: the request has no job; try again.");
        return;
    }
    unsigned limit = queue_limit(x);
    if (atomic_fetch_add(&api_jobs, 1) >= limit) {
        atomic_fetch_sub(&api_jobs, 1);
        respond_busy(x, limit);
        return;
    }
    j->queued = 1;
    if (uv_queue_work(http_loop(x), &j->work, work_cb, after_cb) != 0) {
        j->queued = 0;
        atomic_fetch_sub(&api_jobs, 1);
        respond_error(x, 503, "Retry-After: 1\r\n",
                      "The certificate operation cannot be queued; try again.");
    }
}

void api_route(const struct http_request *req, const struct gw_snap *snap, struct http_route *out)
{
    out->handle = handle;
    out->on_headers = on_headers;
    out->on_error = api_http_error;
    out->wipe = 1; /* tokens and passwords */
    out->max_body = req->method == HTTP_PUT ? snap->max_upload_bytes : SMALL_BODY;
}
