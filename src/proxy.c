/* proxy.c - forwarding to the upstream (see proxy.h). */
#include "proxy.h"

#include "buf.h"
#include "conn.h"
#include "gw.h"
#include "log.h"
#include "reqcheck.h"
#include "strfmt.h"
#include "upclient.h"
#include "upstream.h"

#include <llhttp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PX_RETRY_AFTER_S "1" /* seconds, in a 503 for a busy upstream */

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

/* A text answer of the gateway; a 503 (the upstream's connections are all busy) says
 * when to try again. */
static void px_answer_error(struct http_exchange *x, int status, const char *msg)
{
    char text[600];
    int n = snprintf(text, sizeof text, "%s\n", msg);
    if (n < 0 || (size_t)n >= sizeof text) n = (int)sizeof text - 1;
    http_respond(x, status, "text/plain; charset=utf-8",
                 status == 503 ? "Retry-After: " PX_RETRY_AFTER_S "\r\n" : NULL, text, (size_t)n);
}

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
    if (status != 503) log_warn("proxy: %d: %s", status, msg); /* 503: upclient.c logged it */
    px_answer_error(r->x, status, msg);
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
    int status;
    r->uc = up_acquire(r->w, r->target, allow_pooled, r->head_req, &px_handler, r, &status, err,
                       sizeof err);
    if (!r->uc) {
        px_record_time(r);
        if (status == 503) /* a line per request would flood the log under overload */
            log_debug("proxy: 503: %s", err);
        else
            log_warn("proxy: %d: %s", status, err);
        px_answer_error(r->x, status, err);
        return -1;
    }
    up_send(r->uc, r->head.p, r->head.len, 0);
    if (r->req_done) up_end_request(r->uc);
    return 0;
}

/* ----- the request head for the upstream ----- */

static int name_is(const struct http_header *hd, const char *name, size_t len)
{
    return hd->name_len == len && strncasecmp(hd->name, name, len) == 0;
}

/* Appends a comma-separated list item to b (the lines of one header taken as one list). */
static int list_add(struct buf *b, const char *v, size_t n)
{
    if (!n) return 0;
    return (b->len && buf_put(b, ", ", 2)) || buf_put(b, v, n);
}

/* RFC 7239 forwarded-element for the client: for=198.51.100.7 or for="[2001:db8::7]";
 * proto; host (quoted unless it is a token, e.g. when it has a port). */
static int forwarded_element(struct buf *b, const char *peer, int tls, const char *host)
{
    int v6 = strchr(peer, ':') != NULL;
    int rc = buf_cat(b, "for=", v6 ? "\"[" : "", peer, v6 ? "]\"" : "", ";proto=",
                     tls ? "https" : "http", (char *)NULL);
    if (rc == 0 && host && *host) {
        int tok = reqcheck_token(host, strlen(host));
        rc = buf_cat(b, ";host=", tok ? "" : "\"", host, tok ? "" : "\"", (char *)NULL);
    }
    return rc;
}

/* The request's head for the upstream: our request line and Host, the client's
 * end-to-end headers, the framing we chose, and the forwarded headers. From a peer in
 * [upstream] trusted-proxies, X-Forwarded-For and Forwarded are kept and appended to
 * (and X-Real-IP kept); from any other peer, every X-Forwarded-*, Forwarded and X-Real-IP
 * it sent is dropped. X-Forwarded-Proto and X-Forwarded-Host are always ours. */
static int build_head(struct pxreq *r, const struct http_request *q, const char *peer,
                      int trusted)
{
    struct buf h = {0};
    const struct conf_upstream *cf = &r->target->conf;
    const char *target = q->target;
    char rebuilt[4096];
    if (target[0] != '/') { /* absolute-form (checked by reqcheck): keep path and query */
        snprintf(rebuilt, sizeof rebuilt, "%s%s%s", q->path, q->query ? "?" : "",
                 q->query ? q->query : "");
        target = rebuilt;
    }
    const char *conn = http_header(q, "Connection");
    int rc = buf_cat(&h, q->method_name, " ", r->target->prefix, target,
                     " HTTP/1.1\r\nHost: ", r->target->host_header, "\r\n", (char *)NULL);
    const char *host = NULL;
    struct buf xff = {0}, fwd = {0}; /* the trusted peer's lists, in order */
    for (unsigned i = 0; i < q->nheaders && rc == 0; i++) {
        const struct http_header *hd = &q->headers[i];
        if (hop_by_hop(hd->name, hd->name_len, conn)) continue;
        if (name_is(hd, "host", 4)) {
            host = hd->value;
            continue;
        }
        if (name_is(hd, "x-forwarded-for", 15)) {
            if (trusted) rc = list_add(&xff, hd->value, hd->value_len);
            continue;
        }
        if (name_is(hd, "forwarded", 9)) {
            if (trusted) rc = list_add(&fwd, hd->value, hd->value_len);
            continue;
        }
        if ((hd->name_len > 12 && strncasecmp(hd->name, "x-forwarded-", 12) == 0) ||
            (!trusted && name_is(hd, "x-real-ip", 9)) || name_is(hd, "expect", 6) ||
            name_is(hd, "content-length", 14))
            continue;
        rc = buf_put(&h, hd->name, hd->name_len) ||
             buf_put(&h, ": ", 2) ||
             buf_put(&h, hd->value, hd->value_len) || buf_put(&h, "\r\n", 2);
    }
    if (rc == 0)
        rc = buf_put(&h, "X-Forwarded-For: ", 17) ||
             (xff.len && (buf_put(&h, xff.p, xff.len) || buf_put(&h, ", ", 2)));
    if (rc == 0)
        rc = buf_cat(&h, peer, "\r\nX-Forwarded-Proto: ", q->tls ? "https" : "http",
                     "\r\n", (char *)NULL);
    if (rc == 0 && host)
        rc = buf_cat(&h, "X-Forwarded-Host: ", host, "\r\n", (char *)NULL);
    if (rc == 0 && cf->forwarded)
        rc = buf_put(&h, "Forwarded: ", 11) ||
             (fwd.len && (buf_put(&h, fwd.p, fwd.len) || buf_put(&h, ", ", 2))) ||
             forwarded_element(&h, peer, q->tls, host) || buf_put(&h, "\r\n", 2);
    else if (rc == 0 && fwd.len) /* a trusted peer's Forwarded passes as it came */
        rc = buf_put(&h, "Forwarded: ", 11) || buf_put(&h, fwd.p, fwd.len) ||
             buf_put(&h, "\r\n", 2);
    buf_free(&xff);
    buf_free(&fwd);
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
    const struct conf_upstream *cf = &r->target->conf;
    int trusted = cf->ntrusted_proxies &&
                  conf_cidr_match(cf->trusted_proxies, cf->ntrusted_proxies, http_peer_addr(x));
    if (build_head(r, q, http_peer(x), trusted) != 0) {
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

