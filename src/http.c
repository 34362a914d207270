/* http.c - HTTP/1.1 on a client connection: the driver (read, parse, answer, write in
 * rounds), pipelining, keep-alive, a client's half-close, timeouts and min-rates, the
 * exchanges' life cycle, accept and close (see http.h, conn.h). Parsing and the request
 * checks are in http_parse.c, the answers in http_answer.c; http_int.h is what they
 * share. */
#include "http.h"
#include "http_int.h"

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

http_router_fn http_router_cur; /* http_int.h */
http_error_router_fn http_error_router_cur; /* http_int.h */

void http_set_router(http_router_fn r)
{
    http_router_cur = r;
}

void http_set_error_router(http_error_router_fn fn)
{
    http_error_router_cur = fn;
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

struct http_exchange *http_x_new(struct hconn *h)
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
void http_x_release(struct http_exchange *x)
{
    if (x->released) return;
    x->released = 1;
    x->h = NULL;
    worker_reclaim_later(x->w, &x->rc, x_reclaim);
}

void http_x_log(struct http_exchange *x, int status)
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
    http_x_log(x, x->status);
    h->x = NULL;
    h->requests++;
    if (!x->complete || !x->keep_alive) h->close_after = 1;
    if (!x->complete) h->unread = 1;
    http_x_release(x);
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

void http_arm(struct hconn *h, enum tq_kind kind)
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
    http_arm(h, TQ_LINGER);
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
            http_parse_input(h);
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
            if (after < before && c->tq == TQ_WRITE) http_arm(h, TQ_WRITE); /* progress */
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
            if (h->x && h->x->headers_done && !h->x->complete) http_arm(h, TQ_BODY);
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
    if (k != c->tq || (k == TQ_KEEPALIVE && served != h->requests)) http_arm(h, k);
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
        http_answer_error(h, 408, "request timed out: the client was too slow sending it");
        http_arm(h, TQ_WRITE); /* bounds the answer's delivery too */
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
            http_x_log(x, x->status);
            http_x_release(x);
        } else if (x->dispatched && x->route.handle) {
            void (*abort_cb)(struct http_exchange *) = x->route.on_abort;
            http_x_log(x, x->status ? x->status : 499);
            x->h = NULL; /* the handler will answer into the void, which releases it */
            x->route.on_abort = NULL;
            if (abort_cb) abort_cb(x); /* e.g. the API drops a job that has not started */
        } else {
            void (*abort_cb)(struct http_exchange *) = x->route.on_abort;
            if (x->headers_done) http_peer(x); /* while the connection is still known */
            x->route.on_abort = NULL;
            x->h = NULL;
            if (abort_cb) abort_cb(x); /* may record the upstream's time */
            if (x->headers_done) http_x_log(x, x->status ? x->status : 499);
            http_x_release(x);
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
    llhttp_init(&h->parser, HTTP_REQUEST, &http_parser_settings);
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
    http_arm(h, TQ_HEADER);
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
