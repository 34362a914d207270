/* http.c - HTTP/1.1 on a client connection: parsing with llhttp (strict), the checks of
 * reqcheck.c before any route sees a request, limits, pipelining, keep-alive, timeouts,
 * buffered and streaming answers (see http.h, conn.h). */
#include "http.h"

#include "accesslog.h"
#include "conn.h"
#include "gw.h"
#include "log.h"
#include "metrics.h"
#include "reqcheck.h"
#include "strfmt.h"
#include "tls.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <llhttp.h>

/* The request line and header block live in the exchange's arena (RBUF_SIZE = 16 KiB,
 * the header limit: more is 431); the target alone has a smaller limit of its own (414). */
#define TARGET_LIMIT (8 * 1024)
#define MAX_HEADERS 128
#define MAX_FREE_XS 16

enum cb_kind { CB_NONE, CB_FIELD, CB_VALUE };

#define LINGER_MS 2000

struct span {
    uint32_t off, len;
};

/* A client connection: the core plus HTTP's state. */
struct hconn {
    struct conn c;
    struct hconn *prev, *next; /* the worker's client list */
    llhttp_t parser;
    struct http_exchange *x; /* the request being read or answered */
    uint8_t hscan;           /* line-ending scan of the head being read (reqcheck) */
    uint64_t requests;       /* served on this connection */
    /* min-rate of the answers: out_total (plus what was queued) and conn_blocked_ms when
     * the current request began */
    uint64_t wr_out0, wr_blk0;
    unsigned close_after : 1; /* close once the output is flushed */
    unsigned draining : 1;    /* server stopping: last request on this connection */
    unsigned body_paused : 1; /* streaming route asked to stop reading the body */
    unsigned in_run : 1;      /* its run is on the stack: it sees an answer's end itself */
    unsigned unread : 1;      /* a request ended before all of it was read: linger */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
};

struct http_exchange {
    struct hconn *h; /* NULL once the client is gone (orphan) */
    struct worker *w;
    struct http_request req;
    struct http_route route;
    char *arena; /* url and headers, NUL-separated; RBUF_SIZE bytes */
    uint32_t alen;
    struct span url;
    struct span hspan[MAX_HEADERS][2];
    struct http_header headers[MAX_HEADERS];
    unsigned nh;
    uint8_t last_cb;
    uint8_t verlen; /* bytes of "1.1" seen by on_version */
    char ver[3];
    char *body;
    size_t blen, bcap;
    int fail_status;      /* set by a callback that stops the parser */
    char fail_why[200];   /* its sentence (reqcheck), when there is one */
    unsigned headers_done : 1, complete : 1, dispatched : 1, done : 1, keep_alive : 1;
    unsigned streaming : 1, stream_chunked : 1, stream_nobody : 1, want_drain : 1;
    unsigned released : 1, rate_started : 1;
    int status;
    /* min-rate of the body: when its reading began (moved on by the time it was paused
     * for back-pressure) and the connection's in_total then */
    uint64_t rate_t0, rate_in0, paused_at;
    uint64_t stream_mark; /* the connection's out_total + queued when the answer began */
    uint64_t bytes_out;
    uint64_t start_ms;
    int64_t upstream_ms;
    char peer[48];
    struct reclaim rc;
};

static http_router_fn router;
static http_error_router_fn error_router;

void http_set_router(http_router_fn r)
{
    router = r;
}

void http_set_error_router(http_error_router_fn fn)
{
    error_router = fn;
}

const struct http_request *http_req(const struct http_exchange *x)
{
    return &x->req;
}

struct http_route *http_route(struct http_exchange *x)
{
    return &x->route;
}

const char *http_header(const struct http_request *r, const char *name)
{
    for (unsigned i = r->nheaders; i-- > 0;)
        if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
    return NULL;
}

const char *http_peer(struct http_exchange *x)
{
    if (!x->peer[0] && x->h) {
        const struct hconn *h = x->h;
        if (h->peer.sa.sa_family == AF_INET6)
            inet_ntop(AF_INET6, &h->peer.in6.sin6_addr, x->peer, sizeof x->peer);
        else { /* dotted quad without stdio: this runs for every proxied request */
            const unsigned char *a = (const unsigned char *)&h->peer.in4.sin_addr;
            size_t n = 0;
            for (int i = 0; i < 4; i++) {
                if (i) x->peer[n++] = '.';
                n += strfmt_u(x->peer + n, a[i], 10);
            }
            x->peer[n] = '\0';
        }
    }
    return x->peer;
}

const struct sockaddr *http_peer_addr(const struct http_exchange *x)
{
    return x->h ? &x->h->peer.sa : NULL;
}

void *http_loop(struct http_exchange *x)
{
    return &x->w->loop;
}

void http_set_upstream_ms(struct http_exchange *x, int64_t ms)
{
    x->upstream_ms = ms;
}

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
    }
}

struct worker *http_worker(struct http_exchange *x)
{
    return x->w;
}

int http_gone(const struct http_exchange *x)
{
    return !x->h || x->h->c.state != CS_ACTIVE;
}

/* ----- exchanges ----- */

static struct http_exchange *x_new(struct hconn *h)
{
    struct worker *w = h->c.w;
    struct http_exchange *x = freelist_get(&w->xs);
    if (!x && !(x = malloc(sizeof *x))) return NULL;
    /* only the head of the struct needs clearing; the arrays are filled as used */
    memset(x, 0, offsetof(struct http_exchange, hspan));
    x->nh = 0;
    x->last_cb = CB_NONE;
    x->verlen = 0;
    x->body = NULL;
    x->blen = x->bcap = 0;
    x->fail_status = 0;
    x->fail_why[0] = '\0';
    x->headers_done = x->complete = x->dispatched = x->done = x->keep_alive = 0;
    x->streaming = x->stream_chunked = x->stream_nobody = x->want_drain = 0;
    x->released = x->rate_started = 0;
    x->status = 0;
    x->bytes_out = 0;
    x->upstream_ms = -1;
    x->peer[0] = 0;
    x->h = h;
    x->w = w;
    x->arena = worker_buf_get(w);
    x->start_ms = w->now;
    x->req.content_length = -1;
    h->wr_out0 = h->c.out_total + conn_queued(&h->c);
    h->wr_blk0 = conn_blocked_ms(&h->c);
    if (!x->arena) {
        free(x);
        return NULL;
    }
    return x;
}

static void x_reclaim(struct reclaim *rc)
{
    struct http_exchange *x = (struct http_exchange *)((char *)rc - offsetof(struct http_exchange, rc));
    struct worker *w = x->w;
    if (x->route.on_free && x->route.ctx) x->route.on_free(x->route.ctx);
    x->route.on_free = NULL;
    if (x->route.wipe) { /* headers (token, X-Password) and body (JSON password) */
        explicit_bzero(x->arena, x->alen);
        if (x->body) explicit_bzero(x->body, x->bcap);
    }
    free(x->body);
    worker_buf_put(w, x->arena);
    if (!freelist_put(&w->xs, x, MAX_FREE_XS)) free(x);
}

/* The exchange is over for everyone: freed after the current batch. */
static void x_release(struct http_exchange *x)
{
    if (x->released) return;
    x->released = 1;
    x->h = NULL;
    worker_reclaim_later(x->w, &x->rc, x_reclaim);
}

/* ----- output ----- */

static void arm(struct hconn *h, enum tq_kind kind);

static void out_put(struct hconn *h, const void *p, size_t n)
{
    if (conn_out_put(&h->c, p, n) != 0) conn_close(&h->c);
}

/* prefix, v in base 10 or 16, suffix: one line such as "Content-Length: 7\r\n" */
static void out_num(struct hconn *h, const char *prefix, unsigned long long v, unsigned base,
                    const char *suffix)
{
    char line[64];
    struct strfmt f = {line, 0, sizeof line, 0};
    strfmt_str(&f, prefix);
    strfmt_num(&f, v, base);
    strfmt_str(&f, suffix);
    out_put(h, line, f.len);
}

/* Status line and the headers every answer carries (Date and Server only on our own
 * answers, not on relayed ones). */
static void out_head(struct hconn *h, struct http_exchange *x, int status, const char *reason,
                     int close, int own)
{
    struct worker *w = h->c.w;
    out_num(h, "HTTP/1.1 ", (unsigned)status, 10, " ");
    const char *r = reason && *reason ? reason : http_reason(status);
    out_put(h, r, strlen(r));
    out_put(h, "\r\n", 2);
    if (own) {
        out_put(h, w->date, strlen(w->date));
        out_put(h, "Server: certgate\r\n", 18);
        if (h->c.ssl && w->snap->session_reused_header)
            out_put(h, tls_conn_resumed(h->c.ssl) ? "X-Session-Reused: 1\r\n" : "X-Session-Reused: 0\r\n", 21);
    }
    if (close)
        out_put(h, "Connection: close\r\n", 19);
    else if (x->req.http_minor == 0)
        out_put(h, "Connection: keep-alive\r\n", 24);
}

/* Whether the connection ends after this answer. */
static int answer_closes(struct http_exchange *x)
{
    struct hconn *h = x->h;
    /* a request without a body is whole once its headers are in; an answer given before
     * a body was read ends the connection (the body is not read) */
    int whole = x->complete || (x->headers_done && !x->req.chunked && x->req.content_length <= 0);
    /* after the client's EOF only the last request it sent says close; the pipelined
     * ones before it are answered first (RFC 9112 9.6: nothing may follow a close) */
    return !x->keep_alive || !whole || h->draining ||
           (h->c.peer_eof && h->c.rpos == h->c.rlen);
}

/* The answer is complete: the connection picks that up in its next run. */
static void x_mark_done(struct http_exchange *x)
{
    x->done = 1;
    if (x->h && !x->h->in_run) conn_post(&x->h->c);
}

void http_respond(struct http_exchange *x, int status, const char *ctype, const char *extra,
                  const void *body, size_t len)
{
    if (x->done || x->streaming) return;
    struct hconn *h = x->h;
    x->status = status;
    if (!h) { /* the client went away while we worked */
        x->done = 1;
        x_release(x);
        return;
    }
    int close = answer_closes(x);
    if (close) h->close_after = 1;
    size_t start = h->c.olen;
    out_head(h, x, status, NULL, close, 1);
    if (ctype) {
        out_put(h, "Content-Type: ", 14);
        out_put(h, ctype, strlen(ctype));
        out_put(h, "\r\n", 2);
    }
    out_num(h, "Content-Length: ", len, 10, "\r\n");
    if (extra) out_put(h, extra, strlen(extra));
    out_put(h, "\r\n", 2);
    if (!x->req.head) out_put(h, body, len);
    x->bytes_out = h->c.olen - start;
    x_mark_done(x);
}

void http_respond_text(struct http_exchange *x, int status, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n > sizeof msg - 2) n = (int)sizeof msg - 2;
    msg[n++] = '\n';
    http_respond(x, status, "text/plain; charset=utf-8", NULL, msg, (size_t)n);
}

void http_stream_begin(struct http_exchange *x, int status, const char *reason, const char *head,
                       int64_t content_length)
{
    struct hconn *h = x->h;
    if (!h || x->streaming || x->done) return;
    x->streaming = 1;
    x->status = status;
    int nobody = x->req.head || status == 204 || status == 304 || status < 200;
    int close = answer_closes(x);
    if (!nobody && content_length < 0) {
        if (x->req.http_minor >= 1)
            x->stream_chunked = 1;
        else
            close = 1; /* HTTP/1.0: the end of the body is the end of the connection */
    }
    x->stream_nobody = (unsigned)nobody;
    if (close) h->close_after = 1;
    size_t start = h->c.olen;
    x->stream_mark = h->c.out_total + conn_queued(&h->c);
    out_head(h, x, status, reason, close, 0);
    if (head) out_put(h, head, strlen(head));
    if (content_length >= 0 && status >= 200)
        out_num(h, "Content-Length: ", (unsigned long long)content_length, 10, "\r\n");
    if (x->stream_chunked) out_put(h, "Transfer-Encoding: chunked\r\n", 28);
    out_put(h, "\r\n", 2);
    x->bytes_out += h->c.olen - start;
    /* the head goes out with the first piece of body (one packet, as the upstream sent
     * it), or now when there is none */
    if (nobody || content_length == 0) conn_post(&h->c);
}

size_t http_stream_write(struct http_exchange *x, const void *p, size_t n)
{
    struct hconn *h = x->h;
    if (!h || h->c.state != CS_ACTIVE) return 0;
    struct conn *c = &h->c;
    if (n && !x->stream_nobody && !x->stream_chunked && conn_queued(c) == 0 && !c->want_write) {
        /* nothing queued: straight from the caller's buffer to the socket, no copy */
        ssize_t w = conn_write_direct(c, p, n);
        if (w < 0) {
            conn_close(c);
            return 0;
        }
        if ((size_t)w < n) out_put(h, (const char *)p + w, n - (size_t)w);
        x->bytes_out += n;
        if (c->want_write && (w > 0 || c->tq != TQ_WRITE)) arm(h, TQ_WRITE);
        if (c->want_write) conn_post(c); /* its run asks for writable */
    } else if (n && !x->stream_nobody) {
        size_t start = c->olen - c->opos;
        if (x->stream_chunked) out_num(h, "", n, 16, "\r\n");
        out_put(h, p, n);
        if (x->stream_chunked) out_put(h, "\r\n", 2);
        x->bytes_out += c->olen - c->opos - start;
        if (conn_flush(c, 1) < 0) {
            conn_close(c);
            return 0;
        }
        if (conn_queued(c)) conn_post(c);
    }
    size_t queued = conn_queued(c);
    /* from the latest state: a flush in between may have emptied the buffer, and then no
     * drain event would ever come to undo a stale "wait" */
    x->want_drain = queued >= CONN_OUT_HIGH;
    return queued;
}

void http_stream_end(struct http_exchange *x)
{
    struct hconn *h = x->h;
    if (!h || !x->streaming || x->done) return;
    if (x->stream_chunked && !x->stream_nobody) {
        out_put(h, "0\r\n\r\n", 5);
        x->bytes_out += 5;
    }
    if (!x->complete) h->close_after = 1; /* the rest of the request body is not read */
    x_mark_done(x);
}

int http_stream_retract(struct http_exchange *x)
{
    struct hconn *h = x->h;
    if (!h || h->c.state != CS_ACTIVE || !x->streaming || x->done) return -1;
    struct conn *c = &h->c;
    if (c->out_total > x->stream_mark) return -1;
    c->olen = c->opos + (size_t)(x->stream_mark - c->out_total); /* what was queued before */
    x->streaming = x->stream_chunked = x->stream_nobody = x->want_drain = 0;
    x->status = 0;
    x->bytes_out = 0;
    return 0;
}

void http_pause_body(struct http_exchange *x)
{
    struct hconn *h = x->h;
    if (!h || h->body_paused) return;
    h->body_paused = 1; /* on_body pauses the parser when the route returns */
    x->paused_at = h->c.w->now; /* the client is not to blame for this time */
}

void http_resume_body(struct http_exchange *x)
{
    struct hconn *h = x->h;
    if (!h || !h->body_paused) return;
    h->body_paused = 0;
    x->rate_t0 += h->c.w->now - x->paused_at;
    if (!x->complete) llhttp_resume(&h->parser);
    conn_post(&h->c);
}

void http_abort(struct http_exchange *x)
{
    struct hconn *h = x->h;
    x->route.on_abort = NULL; /* the route asked for it; do not call it back */
    if (h) conn_close(&h->c);
}

/* An answer produced by the HTTP layer itself (errors), when no route answers. */
static void answer_error(struct hconn *h, int status, const char *msg)
{
    struct http_exchange *x = h->x;
    if (!x) {
        x = h->x = x_new(h);
        if (!x) {
            conn_close(&h->c);
            return;
        }
    }
    if (x->streaming || x->done) { /* too late for an answer */
        h->close_after = 1;
        x->done = 1;
        return;
    }
    x->keep_alive = 0;
    http_error_fn fn = x->headers_done ? x->route.on_error
                       : x->req.target && error_router ? error_router(x->req.target)
                                                       : NULL;
    if (fn)
        fn(x, status, msg);
    else
        http_respond_text(x, status, "%s", msg);
    h->close_after = 1;
}

/* ----- parser callbacks ----- */

static int arena_add(struct http_exchange *x, const char *p, size_t n)
{
    if (x->alen + n + 1 > RBUF_SIZE) {
        x->fail_status = 431;
        return -1;
    }
    memcpy(x->arena + x->alen, p, n);
    x->alen += (uint32_t)n;
    return 0;
}

static void arena_end_item(struct http_exchange *x)
{
    x->arena[x->alen++] = '\0';
}

static int on_message_begin(llhttp_t *p)
{
    struct hconn *h = p->data;
    if (!h->x) h->x = x_new(h);
    if (!h->x) return -1;
    h->x->url.off = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct http_exchange *x = ((struct hconn *)p->data)->x;
    if (x->url.len + n > TARGET_LIMIT) {
        x->fail_status = 414;
        return -1;
    }
    x->url.len += (uint32_t)n;
    return arena_add(x, at, n);
}

/* llhttp refuses versions other than 0.9, 1.0, 1.1 and 2.0 as malformed (400): a
 * well-formed "D.D" that is not 1.0 or 1.1 is 505 instead (2.0 and 0.9 are caught at the
 * end of the head). */
static int on_version(llhttp_t *p, const char *at, size_t n)
{
    struct http_exchange *x = ((struct hconn *)p->data)->x;
    for (size_t i = 0; i < n; i++) {
        if (x->verlen == sizeof x->ver) return 0;
        x->ver[x->verlen++] = at[i];
    }
    const char *v = x->ver;
    if (x->verlen == 3 && v[0] >= '0' && v[0] <= '9' && v[1] == '.' && v[2] >= '0' &&
        v[2] <= '9' && !(v[0] == '1' && (v[2] == '0' || v[2] == '1'))) {
        x->fail_status = 505;
        return -1;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct http_exchange *x = ((struct hconn *)p->data)->x;
    if (x->last_cb != CB_FIELD) {
        if (x->nh == MAX_HEADERS) {
            x->fail_status = 431;
            return -1;
        }
        if (x->alen + 1 > RBUF_SIZE) {
            x->fail_status = 431;
            return -1;
        }
        arena_end_item(x); /* ends the url or the previous value */
        x->hspan[x->nh][0] = (struct span){x->alen, 0};
        x->hspan[x->nh][1] = (struct span){0, 0};
        x->nh++;
        x->last_cb = CB_FIELD;
    }
    x->hspan[x->nh - 1][0].len += (uint32_t)n;
    return arena_add(x, at, n);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct http_exchange *x = ((struct hconn *)p->data)->x;
    if (x->last_cb != CB_VALUE) {
        if (x->alen + 1 > RBUF_SIZE) {
            x->fail_status = 431;
            return -1;
        }
        arena_end_item(x);
        x->hspan[x->nh - 1][1] = (struct span){x->alen, 0};
        x->last_cb = CB_VALUE;
    }
    x->hspan[x->nh - 1][1].len += (uint32_t)n;
    return arena_add(x, at, n);
}

static void build_request(struct hconn *h, struct http_exchange *x, llhttp_t *p)
{
    struct http_request *r = &x->req;
    if (x->nh && x->last_cb == CB_FIELD) { /* a field without value */
        arena_end_item(x);
        x->hspan[x->nh - 1][1] = (struct span){x->alen, 0};
    }
    arena_end_item(x);
    for (unsigned i = 0; i < x->nh; i++) {
        x->headers[i].name = x->arena + x->hspan[i][0].off;
        x->headers[i].name_len = x->hspan[i][0].len;
        x->headers[i].value = x->arena + x->hspan[i][1].off;
        x->headers[i].value_len = x->hspan[i][1].len;
    }
    r->headers = x->headers;
    r->nheaders = x->nh;
    r->method = (int)p->method;
    r->method_name = llhttp_method_name((llhttp_method_t)p->method);
    r->target = x->arena + x->url.off;
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->head = p->method == HTTP_HEAD;
    r->tls = h->c.ssl != NULL;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    r->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    const char *exp = http_header(r, "Expect");
    r->expect_continue = exp && strcasecmp(exp, "100-continue") == 0;
    /* path and query: the arena holds the target; split a copy after it */
    const char *t = r->target;
    if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
        const char *s = strchr(strstr(t, "://") + 3, '/');
        t = s ? s : "/";
    }
    size_t tl = strlen(t);
    char *path = x->arena + x->alen;
    if (x->alen + tl + 2 <= RBUF_SIZE) {
        memcpy(path, t, tl + 1);
        x->alen += (uint32_t)tl + 1;
        char *q = strchr(path, '?');
        if (q) *q++ = '\0';
        r->path = path;
        r->query = q;
    } else {
        r->path = t;
        r->query = NULL;
    }
}

static int on_headers_complete(llhttp_t *p)
{
    struct hconn *h = p->data;
    struct worker *w = h->c.w;
    struct http_exchange *x = h->x;
    if (p->http_major != 1 || p->http_minor > 1) { /* llhttp takes 0.9 and 2.0 */
        x->fail_status = 505;
        return -1;
    }
    build_request(h, x, p);
    /* the whole head is in: check it before any route sees it (so before anything of it
     * can reach an upstream), whatever the parser let through or would check later */
    int chunked;
    int64_t clen;
    int st = reqcheck_head(&x->req, &chunked, &clen, x->fail_why, sizeof x->fail_why);
    if (!st && (chunked != (int)x->req.chunked || clen != x->req.content_length)) {
        st = 400; /* the parser read the framing otherwise: refuse rather than pick one */
        snprintf(x->fail_why, sizeof x->fail_why, "malformed HTTP request: ambiguous framing");
    }
    if (st) {
        x->fail_status = st;
        return -1;
    }
    p->upgrade = 0; /* no protocol switch or tunnel: Upgrade is dropped, like any hop header */
    x->headers_done = 1;
    x->keep_alive = llhttp_should_keep_alive(p) != 0;
    memset(&x->route, 0, sizeof x->route);
    /* a reload applies from the next request on, also on connections already open (one
     * atomic load when nothing changed) */
    gw_snap_refresh(&w->snap);
    router(&x->req, w->snap, &x->route);
    int has_body = x->req.chunked || x->req.content_length > 0;
    if (x->route.handle) {
        if (x->route.on_headers) {
            x->route.on_headers(x);
            if (x->done) return has_body ? -1 : 0; /* answered; do not read a body */
        }
        if (x->req.content_length > 0 && (uint64_t)x->req.content_length > x->route.max_body) {
            x->fail_status = 413;
            return -1;
        }
    } else {
        x->streaming = 0;
        if (x->route.on_start) x->route.on_start(x);
        if (x->done) return has_body ? -1 : 0; /* answered at once (e.g. 502) */
    }
    if (has_body && x->req.expect_continue && p->http_minor >= 1 && !x->done)
        out_put(h, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct hconn *h = p->data;
    struct http_exchange *x = h->x;
    if (!x->route.handle) {
        if (x->route.on_body && !x->done) x->route.on_body(x, at, n);
        return h->body_paused ? HPE_PAUSED : 0; /* the route asked for back-pressure */
    }
    if (x->blen + n > x->route.max_body) {
        x->fail_status = 413;
        return -1;
    }
    if (x->blen + n + 1 > x->bcap) {
        size_t cap = x->bcap ? x->bcap : 4096;
        while (cap < x->blen + n + 1) cap *= 2;
        if (cap > x->route.max_body + 1) cap = x->route.max_body + 1;
        char *b = realloc(x->body, cap);
        if (!b) {
            x->fail_status = 500;
            return -1;
        }
        x->body = b;
        x->bcap = cap;
    }
    memcpy(x->body + x->blen, at, n);
    x->blen += n;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct hconn *h = p->data;
    struct http_exchange *x = h->x;
    x->complete = 1;
    x->keep_alive = llhttp_should_keep_alive(p) != 0;
    h->hscan = REQCHECK_SCAN_START; /* the next bytes start the next request */
    return HPE_PAUSED; /* one request at a time; the rest waits in the buffer */
}

/* ----- the connection driver ----- */

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_version = on_version,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void dispatch(struct http_exchange *x)
{
    x->dispatched = 1;
    if (x->done) return; /* answered when its headers came */
    if (x->route.handle) {
        if (x->body) x->body[x->blen] = '\0';
        x->req.body = x->body ? x->body : "";
        x->req.body_len = x->blen;
        x->route.handle(x);
    } else if (x->route.on_end) {
        x->route.on_end(x);
    }
}

static void parse_input(struct hconn *h)
{
    struct conn *c = &h->c;
    llhttp_t *p = &h->parser;
    size_t avail = c->rlen - c->rpos;
    const char *start = c->rbuf + c->rpos;
    char buf[200];
    /* the raw line endings of a head first: the parser lets obs-fold through */
    if (h->hscan != REQCHECK_SCAN_DONE &&
        reqcheck_scan_lines(&h->hscan, start, avail, buf, sizeof buf) != 0) {
        log_debug("closing connection after 400: %s", buf);
        answer_error(h, 400, buf);
        return;
    }
    llhttp_errno_t e = llhttp_execute(p, start, avail);
    struct http_exchange *x = h->x;
    c->rpos += e == HPE_PAUSED ? (uint32_t)(llhttp_get_error_pos(p) - start) : (uint32_t)avail;
    /* parsed bytes are not looked at again: a request with secrets leaves none behind */
    if (x && x->headers_done && x->route.wipe) {
        explicit_bzero(c->rbuf, c->rpos);
        explicit_bzero(c->rbuf + c->rlen, RBUF_SIZE - c->rlen); /* earlier reads' leftovers */
    }
    if (e == HPE_PAUSED) {
        if (x && x->complete && !x->dispatched) dispatch(x);
        return;
    }
    if (e == HPE_OK) return;
    if (x && x->done) { /* a streaming route answered early and stopped the parser */
        h->close_after = 1;
        return;
    }
    int status = x && x->fail_status ? x->fail_status : 400;
    const char *msg;
    switch (status) {
    case 431:
        msg = "request header block too large (the limit is 16 KiB)";
        break;
    case 413:
        snprintf(buf, sizeof buf, "request body too large (the limit is %zu bytes)",
                 x ? x->route.max_body : 0);
        msg = buf;
        break;
    case 500:
        msg = "out of memory";
        break;
    case 414:
        msg = "request target too long (the limit is 8 KiB)";
        break;
    case 505:
        msg = "HTTP version not supported: certgate speaks HTTP/1.0 and HTTP/1.1";
        break;
    default:
        if (x && x->fail_why[0]) {
            msg = x->fail_why;
        } else {
            snprintf(buf, sizeof buf, "malformed HTTP request: %s", llhttp_get_error_reason(p));
            msg = buf;
        }
    }
    log_debug("closing connection after %d: %s", status, msg);
    answer_error(h, status, msg);
}

static void x_log(struct http_exchange *x, int status)
{
    metrics_request(status, x->route.metrics_route, x->w->now - x->start_ms, x->upstream_ms);
    if (accesslog_enabled())
        accesslog_request_up(http_peer(x), x->req.method_name, x->req.target, status,
                             x->bytes_out, x->w->now - x->start_ms, x->upstream_ms);
}

/* The exchange is answered: release it, then either continue with the next request or
 * let the connection end. */
static void finish_exchange(struct hconn *h)
{
    struct http_exchange *x = h->x;
    x_log(x, x->status);
    h->x = NULL;
    h->requests++;
    if (!x->complete || !x->keep_alive) h->close_after = 1;
    if (!x->complete) h->unread = 1;
    x_release(x);
    if (!h->close_after && !h->body_paused) llhttp_resume(&h->parser);
}

static int needs_linger(const struct hconn *h)
{
    const struct conn *c = &h->c;
    return c->rpos < c->rlen || c->more_input || h->unread || (h->x && !h->x->complete);
}

static unsigned timeout_ms(const struct worker *w, enum tq_kind kind)
{
    const struct gw_snap *s = w->snap;
    switch (kind) {
    case TQ_HEADER:
        return s->header_timeout_ms;
    case TQ_KEEPALIVE:
        return s->keepalive_timeout_ms;
    case TQ_BODY:
    case TQ_WRITE:
        return s->body_timeout_ms;
    case TQ_LINGER:
        return LINGER_MS;
    default:
        return 0;
    }
}

/* The minimum transfer rate: bytes done must stay >= min-rate x (time spent - grace),
 * the grace being body-timeout. Time spent is, for a request body, the time since its
 * reading began (without pauses for back-pressure), and for answers, the time the output
 * waited for the client. Returns ms capped to when the bound breaks if nothing more is
 * done (the whole duration is bounded, not each step). */
static unsigned rate_bound(struct hconn *h, enum tq_kind kind, unsigned ms)
{
    struct conn *c = &h->c;
    const struct gw_snap *s = c->w->snap;
    struct http_exchange *x = h->x;
    if (!s->min_rate) return ms;
    uint64_t done, spent;
    if (kind == TQ_BODY) {
        if (!x || !x->headers_done) return ms;
        if (!x->rate_started) { /* input not parsed yet counts as done */
            x->rate_started = 1;
            x->rate_t0 = c->w->now;
            x->rate_in0 = c->in_total - (c->rlen - c->rpos);
        }
        done = c->in_total - x->rate_in0;
        spent = c->w->now - x->rate_t0;
    } else {
        uint64_t out = c->out_total - conn_unacked(c); /* what the client has taken */
        done = out > h->wr_out0 ? out - h->wr_out0 : 0;
        spent = conn_blocked_ms(c) - h->wr_blk0;
    }
    uint64_t allowed = s->body_timeout_ms + done * 1000 / s->min_rate;
    if (allowed <= spent) return 1;
    return allowed - spent < ms ? (unsigned)(allowed - spent) : ms;
}

static void arm(struct hconn *h, enum tq_kind kind)
{
    unsigned ms = timeout_ms(h->c.w, kind);
    if (kind == TQ_BODY || kind == TQ_WRITE) ms = rate_bound(h, kind, ms);
    conn_set_timeout(&h->c, kind, ms);
}

static enum tq_kind wanted_timeout(const struct hconn *h)
{
    const struct http_exchange *x = h->x;
    if (h->c.want_write) return TQ_WRITE;
    if (!x) return h->requests == 0 ? TQ_HEADER : TQ_KEEPALIVE;
    if (!x->headers_done) return TQ_HEADER;
    if (!x->complete) return h->body_paused ? TQ_NONE : TQ_BODY;
    return TQ_NONE;
}

/* Ends the connection after the last answer: close_notify, then either close at once or,
 * when linger is set (the client may still be sending), send FIN and read and drop what
 * still comes for up to LINGER_MS, so that unread request bytes cannot turn the close
 * into a reset that destroys the answer before the client has read it. */
static void finish_conn(struct hconn *h, int linger)
{
    struct conn *c = &h->c;
    if (!linger || c->peer_eof) {
        conn_close_notify(c);
        conn_close(c);
        return;
    }
    if (conn_shutdown_write(c) != 0) {
        conn_close(c);
        return;
    }
    c->state = CS_LINGER;
    c->want_write = c->read_wants_write = c->kick = 0;
    arm(h, TQ_LINGER);
    conn_update_poll(c);
}

static void on_peer_eof(struct hconn *h)
{
    struct conn *c = &h->c;
    c->peer_eof = 1;
    struct http_exchange *x = h->x;
    if (!x) return; /* run_once answers what is buffered, then closes */
    if (!x->complete || x->streaming || (!x->route.handle && x->dispatched)) {
        conn_close(c); /* aborts a streaming route */
        return;
    }
    /* a buffered route still working is told (the API does not start a job whose
     * client has closed); it answers anyway, for a client that only half-closed */
    if (x->dispatched && x->route.handle && !x->done && x->route.on_abort) {
        void (*abort_cb)(struct http_exchange *) = x->route.on_abort;
        x->route.on_abort = NULL;
        abort_cb(x);
    }
    /* answer what was asked, the pipelined requests behind it too, then close */
}

/* Runs the connection until it waits for something; returns 1 when it stopped only
 * because its budget of rounds was used up (work may be left: buffered input to parse,
 * output to write). */
static int run_once(struct hconn *h)
{
    struct conn *c = &h->c;
    for (int rounds = 0; rounds < 256; rounds++) {
        if (h->x && h->x->done) finish_exchange(h);
        if (c->state != CS_ACTIVE) return 0;
        struct http_exchange *x = h->x;
        /* 1. parse what is buffered, unless a request waits for its answer */
        int parse_ok = !h->close_after && !h->body_paused && !(x && x->complete);
        if (parse_ok && c->rpos < c->rlen) {
            parse_input(h);
            if (c->state != CS_ACTIVE) return 0;
            if (c->rpos == c->rlen) c->rpos = c->rlen = 0;
            continue;
        }
        /* 2. write what is queued */
        if (conn_queued(c)) {
            size_t before = conn_queued(c);
            if (conn_flush(c, h->x != NULL) < 0) {
                conn_close(c);
                return 0;
            }
            size_t after = conn_queued(c);
            if (after < before && c->tq == TQ_WRITE) arm(h, TQ_WRITE); /* progress */
            x = h->x;
            if (x && x->want_drain && after < CONN_OUT_HIGH / 2 && before != after) {
                x->want_drain = 0;
                if (x->route.on_drain) x->route.on_drain(x); /* posts the producer */
                continue;
            }
        }
        if (h->close_after) {
            if (!conn_queued(c) && (!h->x || h->x->done)) {
                int linger = needs_linger(h); /* before the exchange (body unread?) goes */
                if (h->x) finish_exchange(h);
                finish_conn(h, linger);
            }
            return 0;
        }
        /* the client's EOF: once everything it sent is answered (or an unfinished
         * request can never be), the connection ends */
        if (c->peer_eof && c->rpos == c->rlen && !conn_queued(c)) {
            if (!h->x) {
                finish_conn(h, 0);
                return 0;
            }
            if (!h->x->complete) {
                conn_close(c);
                return 0;
            }
        }
        if (conn_queued(c) >= CONN_OUT_HIGH) return 0; /* wait for the client to read */
        /* 3. read more */
        if (!c->more_input || c->peer_eof || h->body_paused) return 0;
        if (c->rbuf && c->rpos > 0 && c->rlen == RBUF_SIZE) {
            memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
            c->rlen -= c->rpos;
            if (h->x && h->x->route.wipe) /* the moved bytes' old copies */
                explicit_bzero(c->rbuf + c->rlen, c->rpos);
            c->rpos = 0;
        }
        if (c->rbuf && c->rlen == RBUF_SIZE) return 0; /* full: wait until a request is answered */
        int r = conn_read(c);
        if (r > 0) {
            if (h->x && h->x->headers_done && !h->x->complete) arm(h, TQ_BODY);
            continue;
        }
        if (r == 0) return 0;
        if (r == -1) {
            on_peer_eof(h);
            if (c->state != CS_ACTIVE) return 0;
            continue;
        }
        conn_close(c);
        return 0;
    }
    return 1;
}

static void http_conn_run(struct hconn *h)
{
    struct conn *c = &h->c;
    uint64_t served = h->requests;
    c->kick = 0;
    h->in_run = 1;
    int more = run_once(h);
    h->in_run = 0;
    if (c->state != CS_ACTIVE) return;
    /* run_once gives up after a number of rounds so that one busy connection does not
     * starve the others; what it left (a full input buffer to parse, output not yet
     * written) is invisible to epoll, so ask for the next writable event, which comes
     * at the next loop iteration, to carry on */
    if (more) c->kick = 1;
    /* idle: give the read buffer back */
    if (c->rbuf && c->rpos == c->rlen && !h->x) {
        worker_buf_put(c->w, c->rbuf);
        c->rbuf = NULL;
        c->rpos = c->rlen = 0;
    }
    /* no input while the answer queue is full: run_once would not read it, and a
     * level-triggered readable event would come back at every turn */
    c->want_read = !c->peer_eof && !h->close_after && !h->body_paused &&
                   conn_queued(c) < CONN_OUT_HIGH &&
                   (!c->rbuf || c->rlen < RBUF_SIZE || c->rpos > 0);
    enum tq_kind k = wanted_timeout(h);
    /* the keep-alive clock restarts after every answered request */
    if (k != c->tq || (k == TQ_KEEPALIVE && served != h->requests)) arm(h, k);
    conn_update_poll(c);
}

static void h_run(struct conn *c)
{
    struct hconn *h = (struct hconn *)c;
    switch (c->state) {
    case CS_HANDSHAKE: {
        int r = conn_handshake(c);
        if (r < 0) {
            metrics_handshake(MH_FAILED, c->ssl);
            char why[160];
            tls_last_error(why, sizeof why);
            log_debug("TLS handshake failed: %s", why);
            conn_close(c);
            return;
        }
        if (r == 0) {
            conn_update_poll(c);
            return;
        }
        c->state = CS_ACTIVE;
        metrics_handshake(tls_conn_resumed(c->ssl) ? MH_RESUMED : MH_FULL, c->ssl);
        /* read-ahead may hold the first request already; else epoll will tell */
        c->more_input = conn_pending(c);
        http_conn_run(h);
        return;
    }
    case CS_ACTIVE:
        if ((c->ev & EPOLLIN) || (c->read_wants_write && (c->ev & EPOLLOUT))) c->more_input = 1;
        http_conn_run(h);
        return;
    case CS_LINGER:
        if (conn_drain_input(c)) conn_close(c);
        return;
    default:
        return;
    }
}

static void h_timeout(struct conn *c, enum tq_kind kind)
{
    struct hconn *h = (struct hconn *)c;
    struct http_exchange *x = h->x;
    if (c->state == CS_ACTIVE && (kind == TQ_HEADER || kind == TQ_BODY) && x && !x->dispatched &&
        !x->done && !x->streaming && (x->url.len || x->headers_done)) {
        log_debug("client too slow (%s); answering 408",
                  kind == TQ_HEADER ? "header-timeout" : "body: body-timeout or min-rate");
        answer_error(h, 408, "request timed out: the client was too slow sending it");
        arm(h, TQ_WRITE); /* bounds the answer's delivery too */
        conn_post(c);
        return;
    }
    if (kind == TQ_BODY || kind == TQ_WRITE) {
        log_debug("client too slow (%s: body-timeout or min-rate); closing",
                  kind == TQ_BODY ? "request body" : "reading the answer");
        conn_reset(c); /* what the kernel still holds for it is dropped too */
        return;
    }
    conn_close(c);
}

/* The connection is gone: the exchange ends (aborting a streaming route, orphaning a
 * buffered one whose handler still works). */
static void h_closed(struct conn *c)
{
    struct hconn *h = (struct hconn *)c;
    struct worker *w = c->w;
    struct http_exchange *x = h->x;
    h->x = NULL;
    if (x) {
        /* a request that ends unanswered (or half answered) still gets its access log
         * line: the status sent, or 499 (client closed request) when none was */
        if (x->done) { /* answered; the connection closed before its run finished it */
            x_log(x, x->status);
            x_release(x);
        } else if (x->dispatched && x->route.handle) {
            void (*abort_cb)(struct http_exchange *) = x->route.on_abort;
            x_log(x, x->status ? x->status : 499);
            x->h = NULL; /* the handler will answer into the void, which releases it */
            x->route.on_abort = NULL;
            if (abort_cb) abort_cb(x); /* e.g. the API drops a job that has not started */
        } else {
            void (*abort_cb)(struct http_exchange *) = x->route.on_abort;
            if (x->headers_done) http_peer(x); /* while the connection is still known */
            x->route.on_abort = NULL;
            x->h = NULL;
            if (abort_cb) abort_cb(x); /* may record the upstream's time */
            if (x->headers_done) x_log(x, x->status ? x->status : 499);
            x_release(x);
        }
    }
    if (h->prev)
        h->prev->next = h->next;
    else
        w->clients = h->next;
    if (h->next) h->next->prev = h->prev;
    h->prev = h->next = NULL;
    w->nclients--;
    if (w->gw_clients) atomic_fetch_sub(w->gw_clients, 1);
    metrics_inc(M_CONN_CLOSED);
}

static const struct conn_ops client_ops = {
    .run = h_run,
    .timeout = h_timeout,
    .closed = h_closed,
};

struct conn *http_accept(struct worker *w, int fd, const void *peer, size_t peerlen,
                         struct ssl_ctx_st *tls)
{
    struct hconn *h = calloc(1, sizeof *h);
    if (!h) {
        if (fd >= 0) close(fd);
        return NULL;
    }
    struct conn *c = &h->c;
    conn_init(c, w, &client_ops, fd);
    c->metered = 1;
    if (peerlen > sizeof h->peer) peerlen = sizeof h->peer;
    if (peer) memcpy(&h->peer, peer, peerlen);
    llhttp_init(&h->parser, HTTP_REQUEST, &settings);
    h->parser.data = h;
    h->hscan = REQCHECK_SCAN_START;
    h->next = w->clients;
    if (h->next) h->next->prev = h;
    w->clients = h;
    w->nclients++;
    metrics_inc(M_CONN_OPENED);
    h->draining = w->stopping != 0;
    c->state = CS_ACTIVE;
    if (tls) {
        c->ssl = tls_conn_new(tls, fd);
        if (!c->ssl) {
            conn_close(c);
            return c;
        }
        c->state = CS_HANDSHAKE;
    }
    /* deferred accept: the ClientHello (or the request) is usually here already */
    c->more_input = 1;
    arm(h, TQ_HEADER);
    conn_post(c);
    return c;
}

void http_worker_stop(struct worker *w)
{
    w->stopping = 1;
    for (struct hconn *h = w->clients; h; h = h->next) {
        struct conn *c = &h->c;
        h->draining = 1;
        int idle = !h->x && c->rpos == c->rlen && !conn_queued(c);
        if (c->state == CS_HANDSHAKE || c->state == CS_LINGER || (c->state == CS_ACTIVE && idle))
            conn_close(c);
    }
}

void http_worker_close_all(struct worker *w)
{
    for (struct hconn *h = w->clients; h; h = h->next) conn_close(&h->c);
}
