/* proxy.c - forwarding to the upstream (see proxy.h). */
#include "proxy.h"

#include "buf.h"
#include "conn.h"
#include "gw.h"
#include "log.h"
#include "strfmt.h"
#include "upclient.h"
#include "upstream.h"

#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct pxreq {
    struct http_exchange *x; /* NULL once the client is gone */
    struct worker *w;
    struct upstream *target;
    struct upconn *uc; /* NULL between connections and after the answer */
    struct buf head; /* the request's status line and headers (kept for a retry) */
    unsigned idempotent : 1, has_body : 1, chunked : 1, req_done : 1, retried : 1;
    unsigned resp_started : 1, head_req : 1;
    uint64_t t0;
    struct buf rh; /* the answer's header block, as relayed */
};

/* ----- hop-by-hop headers ----- */

static int token_in_list(const char *list, const char *name, size_t nlen)
{
    if (!list) return 0;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        size_t n = strcspn(p, " \t,");
        if (n == nlen && strncasecmp(p, name, n) == 0) return 1;
        p += n;
    }
    return 0;
}

/* Headers a proxy must not forward (RFC 9110 7.6.1), plus those it sets itself. */
static int hop_by_hop(const char *name, size_t nlen, const char *connection)
{
    static const char *const hop[] = {"connection", "keep-alive", "te", "trailer",
                                      "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (strlen(hop[i]) == nlen && strncasecmp(name, hop[i], nlen) == 0) return 1;
    /* Proxy-* headers (Proxy-Connection, Proxy-Authorization, ...) are for a proxy and
     * never passed on */
    if (nlen > 6 && strncasecmp(name, "proxy-", 6) == 0) return 1;
    return token_in_list(connection, name, nlen);
}

/* ----- the answer, as the upstream connection reports it ----- */

static void px_record_time(struct pxreq *r)
{
    if (r->x) http_set_upstream_ms(r->x, (int64_t)(r->w->now - r->t0));
}

/* The answer's header block for the client: hop-by-hop and framing headers dropped,
 * and those the answer's Connection header names (known once all are in: a second pass
 * over what was kept, only when the answer has a Connection header). */
static int relay_headers(struct pxreq *r, const char *lines)
{
    char conn[256];
    struct strfmt f = {conn, 0, sizeof conn - 1, 0};
    r->rh.len = 0;
    for (const char *q = lines; *q;) {
        const char *eol = strstr(q, "\r\n");
        if (!eol) break;
        const char *colon = memchr(q, ':', (size_t)(eol - q));
        size_t nl = colon ? (size_t)(colon - q) : (size_t)(eol - q);
        if (nl == 10 && strncasecmp(q, "connection", 10) == 0) {
            if (colon) {
                if (f.len) strfmt_put(&f, ", ", 2);
                strfmt_put(&f, colon + 1, (size_t)(eol - colon - 1));
            }
        } else if (!hop_by_hop(q, nl, NULL) &&
                   !(nl == 14 && strncasecmp(q, "content-length", 14) == 0)) {
            if (buf_put(&r->rh, q, (size_t)(eol - q) + 2) != 0) return -1;
        }
        q = eol + 2;
    }
    conn[f.len] = '\0';
    if (f.len && r->rh.len) { /* drop, in place, what the Connection header names */
        char *out = r->rh.p, *end = r->rh.p + r->rh.len;
        for (char *q = r->rh.p; q < end;) {
            char *eol = strstr(q, "\r\n");
            size_t ll = (size_t)(eol - q) + 2;
            const char *colon = memchr(q, ':', ll - 2);
            if (!token_in_list(conn, q, colon ? (size_t)(colon - q) : ll - 2)) {
                memmove(out, q, ll);
                out += ll;
            }
            q += ll;
        }
        r->rh.len = (size_t)(out - r->rh.p);
    }
    return buf_put(&r->rh, "", 0); /* terminated even when every header was dropped */
}

static void px_head(void *ctx, int status, const char *reason, const char *lines, int64_t clen)
{
    struct pxreq *r = ctx;
    r->resp_started = 1;
    if (!r->x) return;
    if (relay_headers(r, lines) != 0) {
        http_abort(r->x);
        return;
    }
    http_stream_begin(r->x, status, reason, r->rh.p, clen);
}

static int px_body(void *ctx, const char *p, size_t n)
{
    struct pxreq *r = ctx;
    if (!r->x || http_gone(r->x)) return 1; /* its close notification aborts us */
    return http_stream_write(r->x, p, n) >= CONN_OUT_HIGH;
}

static void px_complete(void *ctx)
{
    struct pxreq *r = ctx;
    r->uc = NULL;
    if (!r->x) return;
    px_record_time(r);
    http_stream_end(r->x);
}

static int px_attach(struct pxreq *r, int allow_pooled);

static void px_error(void *ctx, int status, const char *msg, int retryable)
{
    struct pxreq *r = ctx;
    r->uc = NULL;
    if (!r->x) return;
    if (retryable && r->idempotent && !r->has_body && !r->retried) {
        log_debug("proxy: pooled connection broke (%s); retrying on a new one", msg);
        r->retried = 1;
        px_attach(r, 0);
        return;
    }
    px_record_time(r);
    /* in the middle of the answer: the client cannot be told otherwise, unless nothing of
     * it has left yet */
    if (r->resp_started && http_stream_retract(r->x) != 0) {
        log_warn("proxy: %s", msg);
        http_abort(r->x);
        return;
    }
    log_warn("proxy: %d: %s", status, msg);
    http_respond_text(r->x, status, "%s", msg);
}

static void px_drain(void *ctx)
{
    struct pxreq *r = ctx;
    if (r->x) http_resume_body(r->x);
}

static const struct up_handler px_handler = {
    .on_head = px_head,
    .on_body = px_body,
    .on_complete = px_complete,
    .on_error = px_error,
    .on_drain = px_drain,
};

/* Puts r on an upstream connection: a pooled one if allowed, else a new one. */
static int px_attach(struct pxreq *r, int allow_pooled)
{
    char err[300];
    r->uc = up_acquire(r->w, r->target, allow_pooled, r->head_req, &px_handler, r, err, sizeof err);
    if (!r->uc) {
        px_record_time(r);
        log_warn("proxy: 502: %s", err);
        http_respond_text(r->x, 502, "%s", err);
        return -1;
    }
    up_send(r->uc, r->head.p, r->head.len, 0);
    if (r->req_done) up_end_request(r->uc);
    return 0;
}

static int build_head(struct pxreq *r, const struct http_request *q, const char *peer)
{
    struct buf h = {0};
    const char *target = q->target;
    char rebuilt[4096];
    if (target[0] != '/' && target[0] != '*') { /* absolute-form: keep path and query */
        snprintf(rebuilt, sizeof rebuilt, "%s%s%s", q->path, q->query ? "?" : "",
                 q->query ? q->query : "");
        target = rebuilt;
    }
    const char *conn = http_header(q, "Connection");
    int rc = buf_cat(&h, q->method_name, " ", r->target->prefix, target,
                     " HTTP/1.1\r\nHost: ", r->target->host_header, "\r\n", (char *)NULL);
    const char *host = NULL;
    struct buf xff = {0}; /* every X-Forwarded-For line, comma-joined, in order */
    for (unsigned i = 0; i < q->nheaders && rc == 0; i++) {
        const struct http_header *hd = &q->headers[i];
        if (hop_by_hop(hd->name, hd->name_len, conn)) continue;
        if (strcasecmp(hd->name, "host") == 0) {
            host = hd->value;
            continue;
        }
        if (strcasecmp(hd->name, "x-forwarded-for") == 0) {
            if (hd->value_len)
                rc = (xff.len && buf_put(&xff, ", ", 2)) ||
                     buf_put(&xff, hd->value, hd->value_len);
            continue;
        }
        if (strcasecmp(hd->name, "expect") == 0 || strcasecmp(hd->name, "content-length") == 0 ||
            strcasecmp(hd->name, "x-forwarded-proto") == 0 ||
            strcasecmp(hd->name, "x-forwarded-host") == 0)
            continue;
        rc = buf_put(&h, hd->name, hd->name_len) ||
             buf_put(&h, ": ", 2) ||
             buf_put(&h, hd->value, hd->value_len) || buf_put(&h, "\r\n", 2);
    }
    if (rc == 0)
        rc = buf_put(&h, "X-Forwarded-For: ", 17) ||
             (xff.len && (buf_put(&h, xff.p, xff.len) || buf_put(&h, ", ", 2)));
    buf_free(&xff);
    if (rc == 0)
        rc = buf_cat(&h, peer, "\r\nX-Forwarded-Proto: ", q->tls ? "https" : "http",
                     "\r\n", (char *)NULL);
    if (rc == 0 && host)
        rc = buf_cat(&h, "X-Forwarded-Host: ", host, "\r\n", (char *)NULL);
    if (rc == 0 && q->chunked) {
        rc = buf_put(&h, "Transfer-Encoding: chunked\r\n", 28);
    } else if (rc == 0 && q->content_length >= 0) {
        char d[STRFMT_NUM_MAX];
        rc = buf_put(&h, "Content-Length: ", 16) ||
             buf_put(&h, d, strfmt_u(d, (unsigned long long)q->content_length, 10)) ||
             buf_put(&h, "\r\n", 2);
    }
    if (rc == 0) rc = buf_put(&h, "\r\n", 2);
    if (rc != 0) {
        buf_free(&h);
        return -1;
    }
    r->head = h;
    return 0;
}

static void px_on_start(struct http_exchange *x)
{
    struct pxreq *r = http_route(x)->ctx;
    const struct http_request *q = http_req(x);
    r->x = x;
    r->w = http_worker(x);
    r->t0 = r->w->now;
    r->head_req = q->head;
    r->chunked = q->chunked;
    r->has_body = q->chunked || q->content_length > 0;
    r->idempotent = q->method == HTTP_GET || q->method == HTTP_HEAD ||
                    q->method == HTTP_OPTIONS || q->method == HTTP_TRACE ||
                    q->method == HTTP_PUT || q->method == HTTP_DELETE;
    if (build_head(r, q, http_peer(x)) != 0) {
        http_respond_text(x, 500, "out of memory");
        return;
    }
    if (!r->has_body) r->req_done = 1;
    px_attach(r, 1);
}

static void px_on_body(struct http_exchange *x, const char *p, size_t n)
{
    struct pxreq *r = http_route(x)->ctx;
    struct upconn *u = r->uc;
    if (!u || n == 0) return;
    int pause;
    if (r->chunked) {
        char hdr[STRFMT_NUM_MAX + 2];
        size_t hl = strfmt_u(hdr, n, 16);
        memcpy(hdr + hl, "\r\n", 2);
        up_send(u, hdr, hl + 2, 1);
        up_send(u, p, n, 1);
        pause = up_send(u, "\r\n", 2, 0);
    } else {
        pause = up_send(u, p, n, 0);
    }
    if (pause) http_pause_body(x);
}

static void px_on_end(struct http_exchange *x)
{
    struct pxreq *r = http_route(x)->ctx;
    r->req_done = 1;
    if (!r->uc) return;
    if (r->chunked) up_send(r->uc, "0\r\n\r\n", 5, 0);
    up_end_request(r->uc);
}

static void px_on_drain(struct http_exchange *x)
{
    struct pxreq *r = http_route(x)->ctx;
    if (r->uc) up_resume_read(r->uc);
}

static void px_on_abort(struct http_exchange *x)
{
    struct pxreq *r = http_route(x)->ctx;
    if (r->w) http_set_upstream_ms(x, (int64_t)(r->w->now - r->t0));
    r->x = NULL;
    if (r->uc) {
        log_debug("proxy: the client went away; aborting its upstream request");
        up_close(r->uc);
        r->uc = NULL;
    }
}

static void px_free(void *ctx)
{
    struct pxreq *r = ctx;
    if (r->uc) up_close(r->uc);
    upstream_unref(r->target);
    buf_free(&r->head);
    buf_free(&r->rh);
    free(r);
}

static void no_upstream(struct http_exchange *x)
{
    const char *target = http_req(x)->path;
    log_warn("proxy: 503: no upstream configured for %.200s", target);
    http_respond_text(x, 503,
                      "no upstream configured for %.200s: set url in the [upstream] section of "
                      "custom.properties and send SIGHUP",
                      target);
}

void proxy_route(const struct http_request *req, const struct gw_snap *snap,
                 struct http_route *out)
{
    if (!snap->upstream) {
        /* answered when the headers are in: a body of any size gets 503, not 413 */
        out->on_headers = no_upstream;
        out->handle = no_upstream;
        out->max_body = 64 * 1024;
        return;
    }
    struct pxreq *r = calloc(1, sizeof *r);
    if (!r) {
        out->handle = no_upstream; /* best effort under memory pressure */
        out->max_body = 0;
        return;
    }
    r->target = upstream_ref(snap->upstream);
    out->on_start = px_on_start;
    out->on_body = px_on_body;
    out->on_end = px_on_end;
    out->on_abort = px_on_abort;
    out->on_drain = px_on_drain;
    out->ctx = r;
    out->on_free = px_free;
}

