/* proxy.c - forwarding to the upstream (see proxy.h). */
#include "proxy.h"

#include "gw.h"
#include "log.h"
#include "strfmt.h"
#include "tls.h"
#include "upstream.h"

#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define UP_OUT_HIGH (256 * 1024) /* pause the client's body above this */
#define UP_OUT_LOW (64 * 1024)   /* and resume below this */
/* on the stack of the worker thread (8 MiB): few recv calls (and TCP window updates) per
 * GiB, and the body goes from here straight to the client's socket */
#define UP_READ_BUF (256 * 1024)
#define IDLE_TIMEOUT_MS 60000

enum up_state { U_CONNECTING, U_HANDSHAKE, U_ACTIVE, U_IDLE, U_CLOSED };

struct pool;
struct pxreq;

struct upconn {
    struct pool *pool;
    struct upstream *target;
    uv_poll_t poll;
    uv_timer_t timer;
    int fd;
    int handles; /* libuv handles still to be closed before free */
    struct ssl_st *ssl;
    uint8_t state, events;
    unsigned reused : 1, read_paused : 1, got_bytes : 1, want_write : 1, io_wants_write : 1;
    unsigned resp_done : 1, write_failed : 1;
    struct upconn *prev, *next; /* the pool's idle list */
    struct pxreq *req;
    char *obuf;
    size_t opos, olen, ocap;
    http_parser parser;
};

struct pool {
    uv_loop_t *loop;
    struct upstream *target; /* the upstream the idle connections belong to */
    struct upconn *idle;
    unsigned nidle;
    struct ssl_session_st *session;
    int stopping;
};

struct pxreq {
    struct http_exchange *x;
    struct upstream *target;
    struct pool *pool;
    struct upconn *uc;
    char *head; /* the request's status line and headers (kept for a retry) */
    size_t headlen;
    unsigned idempotent : 1, has_body : 1, chunked : 1, req_done : 1, retried : 1;
    unsigned resp_started : 1, head_req : 1, body_paused : 1;
    uint64_t t0;
    /* the answer's header block, as relayed: "Name: value\r\n" lines */
    char *rh;
    size_t rhlen, rhcap;
    size_t cur_start, cur_name_len; /* header being read: its start in rh, name length */
    int cur_in_value;
    char reason[64];
    char resp_conn[256]; /* the answer's Connection header values, comma-joined */
};

/* ----- small buffers ----- */

static int buf_put(char **b, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n) c *= 2;
        char *nb = realloc(*b, c);
        if (!nb) return -1;
        *b = nb;
        *cap = c;
    }
    memcpy(*b + *len, p, n);
    *len += n;
    return 0;
}

/* Appends the NUL-terminated strings given, up to a NULL. */
static int buf_cat(char **b, size_t *len, size_t *cap, ...)
{
    va_list ap;
    va_start(ap, cap);
    int rc = 0;
    for (const char *s; rc == 0 && (s = va_arg(ap, const char *));)
        rc = buf_put(b, len, cap, s, strlen(s));
    va_end(ap);
    return rc;
}

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

/* ----- pool ----- */

static struct pool *pool_of(struct http_exchange *x)
{
    void **slot = http_worker_slot(x);
    if (!*slot) {
        struct pool *p = calloc(1, sizeof *p);
        if (!p) return NULL;
        p->loop = http_loop(x);
        *slot = p;
    }
    return *slot;
}

static void uc_close(struct upconn *u);

static void pool_set_target(struct pool *p, struct upstream *t)
{
    if (p->target == t) return;
    while (p->idle) uc_close(p->idle);
    if (p->session) tls_session_free(p->session);
    p->session = NULL;
    upstream_unref(p->target);
    p->target = upstream_ref(t);
}

static void idle_unlink(struct upconn *u)
{
    struct pool *p = u->pool;
    if (u->prev)
        u->prev->next = u->next;
    else if (p->idle == u)
        p->idle = u->next;
    if (u->next) u->next->prev = u->prev;
    u->prev = u->next = NULL;
    p->nidle--;
}

/* ----- upstream connections ----- */

static void uc_io(uv_poll_t *h, int status, int events);
static void uc_on_timer(uv_timer_t *t);
static void px_fail(struct pxreq *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void uc_handle_closed(uv_handle_t *h)
{
    struct upconn *u = h->data;
    if (--u->handles == 0) {
        upstream_unref(u->target);
        free(u->obuf);
        free(u);
    }
}

static void uc_close(struct upconn *u)
{
    if (u->state == U_CLOSED) return;
    if (u->state == U_IDLE) idle_unlink(u);
    u->state = U_CLOSED;
    if (u->req) u->req->uc = NULL;
    u->req = NULL;
    if (u->ssl) {
        /* close_notify first: OpenSSL marks the session of a connection freed without
         * it as not resumable, and that session is the one the pool resumes with */
        tls_conn_shutdown(u->ssl);
        tls_conn_free(u->ssl);
    }
    u->ssl = NULL;
    uv_close((uv_handle_t *)&u->poll, uc_handle_closed);
    uv_close((uv_handle_t *)&u->timer, uc_handle_closed);
    close(u->fd);
}

static void uc_update_poll(struct upconn *u)
{
    if (u->state == U_CLOSED) return;
    int ev = 0;
    switch (u->state) {
    case U_CONNECTING:
        ev = UV_WRITABLE;
        break;
    case U_HANDSHAKE:
        ev = u->io_wants_write ? UV_WRITABLE : UV_READABLE;
        break;
    case U_ACTIVE:
        if (!u->read_paused) ev |= UV_READABLE;
        if (u->want_write || u->io_wants_write) ev |= UV_WRITABLE;
        break;
    case U_IDLE:
        ev = UV_READABLE; /* anything now means the upstream closed it */
        break;
    }
    if (ev == u->events) return;
    u->events = (uint8_t)ev;
    if (ev)
        uv_poll_start(&u->poll, ev, uc_io);
    else
        uv_poll_stop(&u->poll);
}

static void uc_arm(struct upconn *u, unsigned ms)
{
    uv_timer_start(&u->timer, uc_on_timer, ms, 0);
}

/* A new connection to the upstream (connecting). NULL with errno on failure. */
static struct upconn *uc_open(struct pool *p, struct upstream *t, int *err_no)
{
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err_no = errno;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&t->addr, t->addrlen) != 0 && errno != EINPROGRESS) {
        *err_no = errno;
        close(fd);
        return NULL;
    }
    struct upconn *u = calloc(1, sizeof *u);
    if (!u || uv_poll_init_socket(p->loop, &u->poll, fd) != 0) {
        *err_no = ENOMEM;
        free(u);
        close(fd);
        return NULL;
    }
    uv_timer_init(p->loop, &u->timer);
    u->poll.data = u->timer.data = u;
    u->handles = 2;
    u->fd = fd;
    u->pool = p;
    u->target = upstream_ref(t);
    u->state = U_CONNECTING;
    http_parser_init(&u->parser, HTTP_RESPONSE);
    u->parser.data = u;
    uc_arm(u, t->conf.connect_timeout_s * 1000u);
    uc_update_poll(u);
    return u;
}

/* Back to the pool when it can serve another request, else closed. */
static void uc_release(struct upconn *u, int reusable)
{
    struct pool *p = u->pool;
    if (u->req) u->req->uc = NULL;
    u->req = NULL;
    if (!reusable || p->stopping || u->target != p->target ||
        p->nidle >= u->target->conf.max_connections || u->olen > u->opos) {
        uc_close(u);
        return;
    }
    u->state = U_IDLE;
    u->opos = u->olen = 0;
    u->read_paused = u->got_bytes = u->resp_done = u->want_write = u->io_wants_write = 0;
    http_parser_init(&u->parser, HTTP_RESPONSE);
    u->parser.data = u;
    u->prev = NULL;
    u->next = p->idle;
    if (p->idle) p->idle->prev = u;
    p->idle = u;
    p->nidle++;
    uc_arm(u, IDLE_TIMEOUT_MS);
    uc_update_poll(u);
}

/* ----- writing the request ----- */

/* Writes what is queued. -1 when the upstream cannot take it: the connection is marked
 * write_failed and the queue dropped (the upstream may still have answered). */
static int uc_flush(struct upconn *u)
{
    while (u->opos < u->olen) {
        size_t n = 0;
        enum tls_io st = tls_conn_write(u->ssl, u->fd, u->obuf + u->opos, u->olen - u->opos, &n);
        if (st == TLS_IO_WANT_WRITE || st == TLS_IO_WANT_READ) {
            u->want_write = 1;
            return 0;
        }
        if (st != TLS_IO_OK) {
            u->write_failed = 1;
            u->opos = u->olen = 0;
            return -1;
        }
        u->opos += n;
        /* progress: the read-timeout counts from the last activity either way */
        if (u->req && u->state == U_ACTIVE)
            uc_arm(u, u->target->conf.read_timeout_s * 1000u);
    }
    u->want_write = 0;
    u->opos = u->olen = 0;
    return 0;
}

static void uc_queue(struct upconn *u, const void *p, size_t n)
{
    if (u->opos > 0 && u->opos == u->olen) u->opos = u->olen = 0;
    if (buf_put(&u->obuf, &u->olen, &u->ocap, p, n) != 0) u->write_failed = 1;
}

/* ----- reading the answer ----- */

static int rh_add(struct pxreq *r, const char *p, size_t n)
{
    return buf_put(&r->rh, &r->rhlen, &r->rhcap, p, n);
}

/* Ends the header being assembled: keeps it unless hop-by-hop or framing. */
static void rh_end_header(struct pxreq *r)
{
    if (!r->cur_in_value && r->cur_name_len == 0) return;
    const char *name = r->rh + r->cur_start;
    size_t nl = r->cur_name_len;
    int drop = hop_by_hop(name, nl, NULL) ||
               (nl == 14 && strncasecmp(name, "content-length", 14) == 0);
    if (nl == 10 && strncasecmp(name, "connection", 10) == 0 && r->cur_in_value) {
        /* dropped, but the headers it names are dropped too once all are in */
        const char *v = name + nl + 2;
        size_t have = strlen(r->resp_conn);
        struct strfmt f = {r->resp_conn, have, sizeof r->resp_conn - 1, 0};
        if (have) strfmt_put(&f, ", ", 2);
        if (v <= r->rh + r->rhlen) strfmt_put(&f, v, (size_t)(r->rh + r->rhlen - v));
        r->resp_conn[f.len] = '\0';
    }
    if (drop)
        r->rhlen = r->cur_start;
    else
        rh_add(r, "\r\n", 2);
    r->cur_name_len = 0;
    r->cur_in_value = 0;
}

static int on_resp_begin(http_parser *p)
{
    struct upconn *u = p->data;
    struct pxreq *r = u->req;
    u->got_bytes = 1;
    if (r) {
        r->rhlen = 0;
        r->cur_name_len = 0;
        r->cur_in_value = 0;
        r->reason[0] = '\0';
        r->resp_conn[0] = '\0';
    }
    return 0;
}

static int on_resp_status(http_parser *p, const char *at, size_t n)
{
    struct pxreq *r = ((struct upconn *)p->data)->req;
    if (!r) return 0;
    size_t have = strlen(r->reason);
    if (have + n >= sizeof r->reason) n = sizeof r->reason - 1 - have;
    memcpy(r->reason + have, at, n);
    r->reason[have + n] = '\0';
    return 0;
}

static int on_resp_field(http_parser *p, const char *at, size_t n)
{
    struct pxreq *r = ((struct upconn *)p->data)->req;
    if (!r) return 0;
    if (r->cur_in_value) rh_end_header(r);
    if (r->cur_name_len == 0) r->cur_start = r->rhlen;
    r->cur_name_len += n;
    return rh_add(r, at, n);
}

static int on_resp_value(http_parser *p, const char *at, size_t n)
{
    struct pxreq *r = ((struct upconn *)p->data)->req;
    if (!r) return 0;
    if (!r->cur_in_value) {
        r->cur_in_value = 1;
        if (rh_add(r, ": ", 2) != 0) return -1;
    }
    return rh_add(r, at, n);
}

static int on_resp_headers(http_parser *p)
{
    struct upconn *u = p->data;
    struct pxreq *r = u->req;
    if (!r || !r->x) return -1;
    int status = p->status_code;
    if (status >= 100 && status < 200 && status != 101) return 0; /* interim: skip */
    if (status == 101) return -1; /* no protocol switches through the proxy */
    rh_end_header(r);
    /* drop the headers the Connection header names */
    const char *conn = r->resp_conn;
    if (conn[0]) {
        /* rebuild without them */
        char *old = r->rh;
        size_t oldlen = r->rhlen;
        r->rh = NULL;
        r->rhlen = r->rhcap = 0;
        const char *q = old, *end = old + oldlen;
        while (q < end) {
            const char *eol = memchr(q, '\r', (size_t)(end - q));
            if (!eol) break;
            const char *colon = memchr(q, ':', (size_t)(eol - q));
            if (!colon || !token_in_list(conn, q, (size_t)(colon - q))) rh_add(r, q, (size_t)(eol - q) + 2);
            q = eol + 2;
        }
        free(old);
    }
    if (rh_add(r, "", 1) != 0) return -1; /* NUL-terminate */
    r->rhlen--;
    int64_t clen = (p->flags & F_CONTENTLENGTH) ? (int64_t)p->content_length : -1;
    if (status == 204 || status == 304) clen = -1;
    r->resp_started = 1;
    http_stream_begin(r->x, status, r->reason, r->rh, clen);
    return r->head_req ? 1 : 0; /* 1: a HEAD answer has no body */
}

static int on_resp_body(http_parser *p, const char *at, size_t n)
{
    struct upconn *u = p->data;
    struct pxreq *r = u->req;
    if (!r || !r->x) return -1;
    /* several pieces of body can come from one read: the last one decides */
    u->read_paused = http_stream_write(r->x, at, n) >= HTTP_OUT_HIGH;
    return 0;
}

static int on_resp_complete(http_parser *p)
{
    struct upconn *u = p->data;
    if (p->status_code >= 100 && p->status_code < 200) return 0;
    u->resp_done = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_message_begin = on_resp_begin,
    .on_status = on_resp_status,
    .on_header_field = on_resp_field,
    .on_header_value = on_resp_value,
    .on_headers_complete = on_resp_headers,
    .on_body = on_resp_body,
    .on_message_complete = on_resp_complete,
};

/* The answer is complete: connection back to the pool, exchange ended. */
static void px_finish(struct pxreq *r, struct upconn *u, int reusable)
{
    int keep = reusable && http_should_keep_alive(&u->parser) && r->req_done && !u->write_failed;
    struct http_exchange *x = r->x;
    uc_release(u, keep);
    if (x) {
        http_set_upstream_ms(x, (int64_t)(uv_now(r->pool->loop) - r->t0));
        http_stream_end(x); /* may free r */
    }
}

static int px_retry(struct pxreq *r);

/* The upstream ended the connection (EOF or error) while r was on it. */
static void px_upstream_gone(struct pxreq *r, struct upconn *u, const char *why)
{
    if (u->reused && !u->got_bytes && r->idempotent && !r->has_body && !r->retried) {
        log_debug("proxy: pooled connection broke (%s); retrying on a new one", why);
        uc_close(u);
        if (px_retry(r) == 0) return;
        px_fail(r, 502, "the upstream %s closed the connection and a new one failed",
                r->target->host_header);
        return;
    }
    if (!r->resp_started) {
        uc_close(u);
        px_fail(r, 502, "the upstream %s closed the connection without answering (%s)",
                r->target->host_header, why);
        return;
    }
    /* in the middle of the answer: the client cannot be told otherwise */
    log_warn("proxy: the upstream %s broke off its answer (%s)", r->target->host_header, why);
    struct http_exchange *x = r->x;
    uc_close(u);
    if (x) http_abort(x);
}

static void uc_read(struct upconn *u)
{
    char buf[UP_READ_BUF];
    for (int rounds = 0; rounds < 64 && u->state == U_ACTIVE && !u->read_paused; rounds++) {
        struct pxreq *r = u->req;
        size_t n = 0;
        int eof = 0;
        u->io_wants_write = 0;
        enum tls_io st = tls_conn_read(u->ssl, u->fd, buf, sizeof buf, &n);
        if (st == TLS_IO_WANT_READ) break;
        if (st == TLS_IO_WANT_WRITE) {
            u->io_wants_write = 1;
            break;
        }
        if (st == TLS_IO_EOF) eof = 1;
        else if (st != TLS_IO_OK) eof = 2;
        if (!r) { /* nobody waits for this: stray bytes or close */
            uc_close(u);
            return;
        }
        if (eof) {
            if (eof == 1 && u->got_bytes) { /* tell the parser: a close-delimited body ends */
                http_parser_execute(&u->parser, &resp_settings, NULL, 0);
                if (u->resp_done) {
                    px_finish(r, u, 0); /* it closed: not reusable */
                    return;
                }
            }
            px_upstream_gone(r, u, eof == 1 ? "end of stream" : "read error");
            return;
        }
        if (r->x) uc_arm(u, r->target->conf.read_timeout_s * 1000u);
        size_t used = http_parser_execute(&u->parser, &resp_settings, buf, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&u->parser);
        if (u->resp_done) {
            px_finish(r, u, used == n); /* extra bytes after the answer: do not reuse */
            return;
        }
        if (e != HPE_OK) {
            if (!r->resp_started) {
                uc_close(u);
                px_fail(r, 502, "the upstream %s sent an invalid answer (%s)",
                        r->target->host_header, http_errno_description(e));
            } else {
                struct http_exchange *x = r->x;
                uc_close(u);
                if (x) http_abort(x);
            }
            return;
        }
        if (n < sizeof buf && !(u->ssl && tls_conn_pending(u->ssl))) break;
    }
    uc_update_poll(u);
}

/* Resumes reading the client's body once the request's output has drained below the
 * low-water mark. The caller must check u->state afterwards: reading more of the body can
 * end the connection. */
static void uc_resume_body(struct upconn *u)
{
    struct pxreq *r = u->req;
    if (r && r->x && r->body_paused && u->olen - u->opos < UP_OUT_LOW) {
        r->body_paused = 0;
        http_resume_body(r->x);
    }
}

/* ----- connecting ----- */

static void uc_start_io(struct upconn *u)
{
    struct pxreq *r = u->req;
    u->state = U_ACTIVE;
    if (r && r->x) uc_arm(u, r->target->conf.read_timeout_s * 1000u);
    if (uc_flush(u) != 0) {
        if (r) px_upstream_gone(r, u, "write error");
        return;
    }
    /* the body may have been paused while connecting; a flush that empties the buffer
     * leaves no writable event to resume it from */
    uc_resume_body(u);
    if (u->state != U_ACTIVE) return;
    uc_update_poll(u);
}

static void uc_handshake(struct upconn *u)
{
    enum tls_io st = tls_conn_handshake(u->ssl);
    if (st == TLS_IO_OK) {
        u->io_wants_write = 0;
        uc_start_io(u);
        return;
    }
    if (st == TLS_IO_WANT_READ || st == TLS_IO_WANT_WRITE) {
        u->io_wants_write = st == TLS_IO_WANT_WRITE;
        uc_update_poll(u);
        return;
    }
    struct pxreq *r = u->req;
    const char *v = tls_conn_verify_error(u->ssl);
    char why[200];
    tls_last_error(why, sizeof why);
    uc_close(u);
    if (r)
        px_fail(r, 502, "TLS handshake with the upstream %s failed: %s",
                r->target->host_header, v ? v : why);
}

static void uc_connected(struct upconn *u)
{
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    struct pxreq *r = u->req;
    if (soerr) {
        uc_close(u);
        if (r)
            px_fail(r, 502, "the upstream %s refused the connection (%s)",
                    r->target->host_header, strerror(soerr));
        return;
    }
    if (u->target->tls) {
        u->ssl = tls_client_conn_new(u->target->client_ctx, u->fd, u->target->host,
                                     u->target->host_is_ip, &u->pool->session);
        if (!u->ssl) {
            uc_close(u);
            if (r) px_fail(r, 502, "out of memory for TLS to the upstream");
            return;
        }
        u->state = U_HANDSHAKE;
        uc_handshake(u);
        return;
    }
    uc_start_io(u);
}

static void uc_on_timer(uv_timer_t *t)
{
    struct upconn *u = t->data;
    struct pxreq *r = u->req;
    if (u->state == U_IDLE || !r) {
        uc_close(u);
        return;
    }
    int connecting = u->state == U_CONNECTING || u->state == U_HANDSHAKE;
    if (r->resp_started) {
        log_warn("proxy: the upstream %s stalled in the middle of its answer for %u s",
                 r->target->host_header, r->target->conf.read_timeout_s);
        struct http_exchange *x = r->x;
        uc_close(u);
        if (x) http_abort(x);
        return;
    }
    uc_close(u);
    if (connecting)
        px_fail(r, 504, "the upstream %s did not accept the connection within %u s",
                r->target->host_header, r->target->conf.connect_timeout_s);
    else
        px_fail(r, 504, "the upstream %s did not answer within %u s (read-timeout)",
                r->target->host_header, r->target->conf.read_timeout_s);
}

static void uc_io(uv_poll_t *h, int status, int events)
{
    struct upconn *u = h->data;
    switch (u->state) {
    case U_IDLE:
        uc_close(u); /* closed by the upstream, or it talks out of turn */
        return;
    case U_CONNECTING:
        uc_connected(u);
        return;
    case U_HANDSHAKE:
        uc_handshake(u);
        return;
    case U_ACTIVE:
        break;
    default:
        return;
    }
    if ((events & UV_WRITABLE) && u->want_write) {
        /* on failure the upstream may have answered already (e.g. 413): read it if so */
        if (uc_flush(u) == 0) {
            uc_resume_body(u);
            if (u->state != U_ACTIVE) return;
        }
    }
    if ((events & (UV_READABLE | UV_WRITABLE)) || status < 0) uc_read(u);
    if (u->state == U_ACTIVE && u->write_failed && !u->got_bytes && u->req) {
        px_upstream_gone(u->req, u, "write error");
        return;
    }
    uc_update_poll(u);
}

/* ----- requests ----- */

static void px_fail(struct pxreq *r, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->uc) uc_close(r->uc);
    struct http_exchange *x = r->x;
    if (!x) return;
    log_warn("proxy: %d: %s", status, msg);
    http_set_upstream_ms(x, (int64_t)(uv_now(r->pool->loop) - r->t0));
    if (r->resp_started)
        http_abort(x);
    else
        http_respond_text(x, status, "%s", msg); /* may free r */
}

/* Puts r on an upstream connection: a pooled one if allowed, else a new one. */
static int px_attach(struct pxreq *r, int allow_pooled)
{
    struct pool *p = r->pool;
    struct upconn *u = NULL;
    if (allow_pooled && p->idle) {
        u = p->idle;
        idle_unlink(u);
        u->state = U_ACTIVE;
        u->reused = 1;
        uv_timer_stop(&u->timer);
    } else {
        int e = 0;
        u = uc_open(p, r->target, &e);
        if (!u) {
            px_fail(r, 502, "cannot connect to the upstream %s: %s", r->target->host_header,
                    strerror(e));
            return -1;
        }
    }
    u->req = r;
    r->uc = u;
    uc_queue(u, r->head, r->headlen);
    if (u->state == U_ACTIVE) uc_start_io(u);
    return 0;
}

static int px_retry(struct pxreq *r)
{
    r->retried = 1;
    return px_attach(r, 0);
}

static int build_head(struct pxreq *r, const struct http_request *q, const char *peer)
{
    char *h = NULL;
    size_t len = 0, cap = 0;
    const char *target = q->target;
    char rebuilt[4096];
    if (target[0] != '/' && target[0] != '*') { /* absolute-form: keep path and query */
        snprintf(rebuilt, sizeof rebuilt, "%s%s%s", q->path, q->query ? "?" : "",
                 q->query ? q->query : "");
        target = rebuilt;
    }
    const char *conn = http_header(q, "Connection");
    int rc = buf_cat(&h, &len, &cap, q->method_name, " ", r->target->prefix, target,
                     " HTTP/1.1\r\nHost: ", r->target->host_header, "\r\n", (char *)NULL);
    const char *host = NULL;
    char *xff = NULL; /* every X-Forwarded-For line, comma-joined, in order */
    size_t xfflen = 0, xffcap = 0;
    for (unsigned i = 0; i < q->nheaders && rc == 0; i++) {
        const struct http_header *hd = &q->headers[i];
        if (hop_by_hop(hd->name, hd->name_len, conn)) continue;
        if (strcasecmp(hd->name, "host") == 0) {
            host = hd->value;
            continue;
        }
        if (strcasecmp(hd->name, "x-forwarded-for") == 0) {
            if (hd->value_len)
                rc = (xfflen && buf_put(&xff, &xfflen, &xffcap, ", ", 2)) ||
                     buf_put(&xff, &xfflen, &xffcap, hd->value, hd->value_len);
            continue;
        }
        if (strcasecmp(hd->name, "expect") == 0 || strcasecmp(hd->name, "content-length") == 0 ||
            strcasecmp(hd->name, "x-forwarded-proto") == 0 ||
            strcasecmp(hd->name, "x-forwarded-host") == 0)
            continue;
        rc = buf_put(&h, &len, &cap, hd->name, hd->name_len) ||
             buf_put(&h, &len, &cap, ": ", 2) ||
             buf_put(&h, &len, &cap, hd->value, hd->value_len) || buf_put(&h, &len, &cap, "\r\n", 2);
    }
    if (rc == 0)
        rc = buf_put(&h, &len, &cap, "X-Forwarded-For: ", 17) ||
             (xfflen && (buf_put(&h, &len, &cap, xff, xfflen) || buf_put(&h, &len, &cap, ", ", 2)));
    free(xff);
    if (rc == 0)
        rc = buf_cat(&h, &len, &cap, peer, "\r\nX-Forwarded-Proto: ", q->tls ? "https" : "http",
                     "\r\n", (char *)NULL);
    if (rc == 0 && host)
        rc = buf_cat(&h, &len, &cap, "X-Forwarded-Host: ", host, "\r\n", (char *)NULL);
    if (rc == 0 && q->chunked) {
        rc = buf_put(&h, &len, &cap, "Transfer-Encoding: chunked\r\n", 28);
    } else if (rc == 0 && q->content_length >= 0) {
        char d[STRFMT_NUM_MAX];
        rc = buf_put(&h, &len, &cap, "Content-Length: ", 16) ||
             buf_put(&h, &len, &cap, d, strfmt_u(d, (unsigned long long)q->content_length, 10)) ||
             buf_put(&h, &len, &cap, "\r\n", 2);
    }
    if (rc == 0) rc = buf_put(&h, &len, &cap, "\r\n", 2);
    if (rc != 0) {
        free(h);
        return -1;
    }
    r->head = h;
    r->headlen = len;
    return 0;
}

static void px_on_start(struct http_exchange *x)
{
    struct pxreq *r = http_route(x)->ctx;
    const struct http_request *q = http_req(x);
    r->x = x;
    r->pool = pool_of(x);
    if (!r->pool) {
        http_respond_text(x, 500, "out of memory");
        return;
    }
    pool_set_target(r->pool, r->target);
    r->t0 = uv_now(r->pool->loop);
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
    if (r->chunked) {
        char hdr[STRFMT_NUM_MAX + 2];
        size_t hl = strfmt_u(hdr, n, 16);
        memcpy(hdr + hl, "\r\n", 2);
        uc_queue(u, hdr, hl + 2);
        uc_queue(u, p, n);
        uc_queue(u, "\r\n", 2);
    } else {
        uc_queue(u, p, n);
    }
    if (u->state == U_ACTIVE && !u->want_write) uc_flush(u); /* a failure is read later */
    if (u->olen - u->opos > UP_OUT_HIGH && !r->body_paused) {
        r->body_paused = 1;
        http_pause_body(x);
    }
    uc_update_poll(u);
}

static void px_on_end(struct http_exchange *x)
{
    struct pxreq *r = http_route(x)->ctx;
    struct upconn *u = r->uc;
    r->req_done = 1;
    if (!u) return;
    if (r->chunked) uc_queue(u, "0\r\n\r\n", 5);
    if (u->state == U_ACTIVE) {
        if (!u->want_write) uc_flush(u); /* a failure is read later */
        uc_arm(u, r->target->conf.read_timeout_s * 1000u);
        uc_update_poll(u);
    }
}

static void px_on_drain(struct http_exchange *x)
{
    struct pxreq *r = http_route(x)->ctx;
    struct upconn *u = r->uc;
    if (!u || !u->read_paused) return;
    u->read_paused = 0;
    uc_read(u); /* data may wait inside OpenSSL, invisible to epoll */
}

static void px_on_abort(struct http_exchange *x)
{
    struct pxreq *r = http_route(x)->ctx;
    if (r->pool) http_set_upstream_ms(x, (int64_t)(uv_now(r->pool->loop) - r->t0));
    r->x = NULL;
    if (r->uc) {
        log_debug("proxy: the client went away; aborting its upstream request");
        uc_close(r->uc);
    }
}

static void px_free(void *ctx)
{
    struct pxreq *r = ctx;
    if (r->uc) uc_close(r->uc);
    upstream_unref(r->target);
    free(r->head);
    free(r->rh);
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

void proxy_worker_stopping(void *loop, void **slot)
{
    struct pool *p = *slot;
    if (!p) return;
    p->stopping = 1;
    while (p->idle) uc_close(p->idle);
}

void proxy_worker_exit(void *loop, void **slot)
{
    struct pool *p = *slot;
    if (!p) return;
    pool_set_target(p, NULL); /* closes the idle connections, forgets the session */
    free(p);
    *slot = NULL;
}
