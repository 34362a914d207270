/* upclient.c - connections to the upstream, their pool and answer parsing (see
 * upclient.h). */
#include "upclient.h"

#include "buf.h"
#include "conn.h"
#include "err.h"
#include "log.h"
#include "memio.h"
#include "tls.h"
#include "upstream.h"

#include <errno.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* on the stack of the worker thread (8 MiB): few recv calls (and TCP window updates) per
 * GiB, and the body goes from here straight to the client's socket */
#define UP_READ_BUF CONN_READ_MAX
#define IDLE_TIMEOUT_MS 60000
#define UP_HEADER_LIMIT (16 * 1024) /* the answer's header block; more is 502 */

struct pool {
    struct upstream *target; /* the upstream the idle connections belong to */
    struct upconn *idle;
    unsigned nidle;
    unsigned nconns; /* connections open or opening (in flight and idle): <= max-connections */
    struct upconn *wait_head, *wait_tail; /* requests waiting for a connection, oldest first */
    unsigned nwait;
    struct ssl_session_st *session;
    int stopping;
};

struct upconn {
    struct conn c;
    struct pool *pool;
    struct upstream *target;
    const struct up_handler *h; /* NULL: idle, or detached */
    void *ctx;
    struct upconn *prev, *next; /* the pool's idle list */
    llhttp_t parser;
    unsigned idle : 1, reused : 1, read_paused : 1, got_bytes : 1, resp_done : 1;
    unsigned write_failed : 1, req_done : 1, body_paused : 1, head_req : 1, resp_started : 1;
    /* waiting: queued for a connection (no socket yet); counted: holds one of nconns;
     * handed: got the socket of a connection that went idle; open_pending: may open one */
    unsigned waiting : 1, counted : 1, handed : 1, open_pending : 1;
    unsigned fresh_only : 1; /* waiting for a new connection, not a pooled one (a retry) */
    struct buf rh; /* the answer's header block as received: "Name: value\r\n" lines */
    int in_value; /* the last header callback was a value */
    int head_overflow; /* the answer's header block passed UP_HEADER_LIMIT */
    char reason[64];
};

static const struct conn_ops up_ops;
static const llhttp_settings_t resp_settings;

/* ----- the pool ----- */

static struct pool *pool_of(struct worker *w)
{
    if (!w->app) w->app = calloc(1, sizeof(struct pool));
    return w->app;
}

static void idle_unlink(struct upconn *u)
{
    struct pool *p = u->pool;
    if (!u->idle) return;
    u->idle = 0;
    if (u->prev)
        u->prev->next = u->next;
    else
        p->idle = u->next;
    if (u->next) u->next->prev = u->prev;
    u->prev = u->next = NULL;
    p->nidle--;
}

static void close_idle(struct pool *p)
{
    while (p->idle) {
        struct upconn *u = p->idle;
        idle_unlink(u);
        conn_close(&u->c);
    }
}

static void wait_unlink(struct upconn *u)
{
    struct pool *p = u->pool;
    if (!u->waiting) return;
    u->waiting = 0;
    if (u->prev)
        u->prev->next = u->next;
    else
        p->wait_head = u->next;
    if (u->next)
        u->next->prev = u->prev;
    else
        p->wait_tail = u->prev;
    u->prev = u->next = NULL;
    p->nwait--;
}

/* q, waiting, takes over the socket (and TLS) of i, an idle connection of the same
 * upstream; i, an empty shell now, closes. q's run starts the request. */
static void take_socket(struct upconn *q, struct upconn *i)
{
    struct conn *d = &q->c, *s = &i->c;
    if (s->fd >= 0 && s->events) epoll_ctl(s->w->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    s->events = 0;
    d->fd = s->fd;
    d->ssl = s->ssl;
    d->events = 0;
    if (s->mem) memio_attach(s->mem, d);
    s->fd = -1;
    s->ssl = NULL;
    s->mem = NULL;
    q->reused = 1;
    q->counted = 1;
    i->counted = 0;
    q->handed = 1;
    conn_close(s);
}

/* Gives what is free to the waiting requests, oldest first: an idle connection's socket,
 * or a place to open a new connection. Each is posted; its run goes on from there. */
static void pool_dispatch(struct pool *p)
{
    while (p->wait_head) {
        struct upconn *q = p->wait_head;
        if (p->idle && p->idle->target == q->target && !q->fresh_only) {
            struct upconn *i = p->idle;
            idle_unlink(i);
            wait_unlink(q);
            take_socket(q, i);
        } else if (p->nconns < q->target->conf.max_connections) {
            wait_unlink(q);
            p->nconns++;
            q->counted = 1;
            q->open_pending = 1;
        } else if (p->idle) { /* of another upstream (reloaded), or a retry: make room */
            struct upconn *i = p->idle;
            idle_unlink(i);
            i->counted = 0;
            p->nconns--;
            conn_close(&i->c);
            continue;
        } else {
            return;
        }
        conn_post(&q->c);
    }
}

static void pool_set_target(struct pool *p, struct upstream *t)
{
    if (p->target == t) return;
    close_idle(p);
    if (p->session) tls_session_free(p->session);
    p->session = NULL;
    upstream_unref(p->target);
    p->target = t ? upstream_ref(t) : NULL;
}

void up_pool_stopping(struct worker *w)
{
    struct pool *p = w->app;
    if (!p) return;
    p->stopping = 1;
    close_idle(p);
}

void up_pool_free(struct worker *w)
{
    struct pool *p = w->app;
    if (!p) return;
    for (struct upconn *u = p->idle; u; u = u->next) u->counted = 0; /* p goes first */
    pool_set_target(p, NULL); /* closes the idle connections, forgets the session */
    free(p);
    w->app = NULL;
}

/* ----- connection lifetime ----- */

/* Cuts the link to the request; returns the handler that was attached (or NULL). */
static const struct up_handler *detach(struct upconn *u, void **ctx)
{
    const struct up_handler *h = u->h;
    *ctx = u->ctx;
    u->h = NULL;
    u->ctx = NULL;
    return h;
}

void up_close(struct upconn *u)
{
    void *ctx;
    detach(u, &ctx);
    conn_close(&u->c);
}

/* Back to the pool when it can serve another request, else closed. */
static void release(struct upconn *u, int reusable)
{
    struct pool *p = u->pool;
    struct conn *c = &u->c;
    if (!reusable || p->stopping || u->target != p->target ||
        p->nidle >= u->target->conf.max_connections || conn_queued(c)) {
        conn_close(c);
        return;
    }
    u->read_paused = u->got_bytes = u->resp_done = u->write_failed = u->req_done = 0;
    u->body_paused = u->head_req = u->resp_started = 0;
    c->want_write = c->read_wants_write = 0;
    c->want_read = 1; /* anything now means the upstream closed it */
    conn_obuf_release(c);
    llhttp_init(&u->parser, HTTP_RESPONSE, &resp_settings);
    u->parser.data = u;
    u->idle = 1;
    u->prev = NULL;
    u->next = p->idle;
    if (p->idle) p->idle->prev = u;
    p->idle = u;
    p->nidle++;
    conn_set_timeout(c, TQ_UPIDLE, IDLE_TIMEOUT_MS);
    conn_update_poll(c);
    pool_dispatch(p);
}

static void arm_read(struct upconn *u)
{
    if (u->h && !u->read_paused)
        conn_set_timeout(&u->c, TQ_UPREAD, u->target->conf.read_timeout_s * 1000u);
}

/* The exchange failed: close, then tell the request (once). */
static void fail(struct upconn *u, int status, int retryable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(struct upconn *u, int status, int retryable, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    void *ctx;
    const struct up_handler *h = detach(u, &ctx);
    conn_close(&u->c);
    if (h) h->on_error(ctx, status, msg, retryable);
}

/* The upstream ended the connection (EOF or error) while a request was on it. */
static void gone(struct upconn *u, const char *why)
{
    int retryable = u->reused && !u->got_bytes;
    if (u->resp_started)
        fail(u, 502, 0, "the upstream %s broke off its answer (%s)", u->target->host_header, why);
    else
        fail(u, 502, retryable, "the upstream %s closed the connection without answering (%s)",
             u->target->host_header, why);
}

/* The answer is complete: the connection goes back to the pool, then the request hears. */
static void finish(struct upconn *u, int clean)
{
    int keep = clean && llhttp_should_keep_alive(&u->parser) && u->req_done && !u->write_failed;
    void *ctx;
    const struct up_handler *h = detach(u, &ctx);
    release(u, keep);
    if (h) h->on_complete(ctx);
}

/* ----- writing the request ----- */

/* Writes what is queued; on failure the connection is marked write_failed and the queue
 * dropped (the upstream may still have answered: the run reads that first). */
static void flush(struct upconn *u)
{
    struct conn *c = &u->c;
    if (c->state != CS_ACTIVE || u->idle) return;
    size_t before = conn_queued(c);
    if (conn_flush(c, 1) < 0) {
        u->write_failed = 1;
        c->opos = c->olen = 0;
        c->want_write = 0;
        return;
    }
    if (conn_queued(c) < before) arm_read(u); /* progress: the read-timeout restarts */
    if (u->body_paused && conn_queued(c) < UP_OUT_LOW && u->h) {
        u->body_paused = 0;
        u->h->on_drain(u->ctx);
    }
}

int up_send(struct upconn *u, const void *p, size_t n, int more)
{
    struct conn *c = &u->c;
    if (c->state == CS_CLOSED || u->write_failed) return 0;
    if (conn_out_put(c, p, n) != 0) {
        u->write_failed = 1;
        conn_post(c); /* its run reports it */
        return 0;
    }
    if (!more && c->state == CS_ACTIVE && !c->want_write) {
        flush(u);
        if (u->write_failed) conn_post(c);
        conn_update_poll(c);
    }
    if (conn_queued(c) > CONN_OUT_HIGH) {
        u->body_paused = 1;
        return 1;
    }
    return 0;
}

void up_end_request(struct upconn *u)
{
    u->req_done = 1;
    if (u->c.state == CS_ACTIVE) arm_read(u);
}

void up_resume_read(struct upconn *u)
{
    if (!u->read_paused) return;
    u->read_paused = 0;
    arm_read(u);
    conn_post(&u->c); /* data may wait inside OpenSSL, invisible to epoll */
}

/* ----- reading the answer ----- */

static int on_resp_begin(llhttp_t *p)
{
    struct upconn *u = p->data;
    u->got_bytes = 1;
    u->rh.len = 0;
    u->in_value = u->head_overflow = 0;
    u->reason[0] = '\0';
    return 0;
}

static int on_resp_status(llhttp_t *p, const char *at, size_t n)
{
    struct upconn *u = p->data;
    size_t have = strlen(u->reason);
    if (have + n >= sizeof u->reason) n = sizeof u->reason - 1 - have;
    memcpy(u->reason + have, at, n);
    u->reason[have + n] = '\0';
    return 0;
}

static int on_resp_field(llhttp_t *p, const char *at, size_t n)
{
    struct upconn *u = p->data;
    if (u->rh.len + n > UP_HEADER_LIMIT) return -(u->head_overflow = 1);
    if (u->in_value && buf_put(&u->rh, "\r\n", 2) != 0) return -1;
    u->in_value = 0;
    return buf_put(&u->rh, at, n);
}

static int on_resp_value(llhttp_t *p, const char *at, size_t n)
{
    struct upconn *u = p->data;
    if (u->rh.len + n > UP_HEADER_LIMIT) return -(u->head_overflow = 1);
    if (!u->in_value) {
        u->in_value = 1;
        if (buf_put(&u->rh, ": ", 2) != 0) return -1;
    }
    return buf_put(&u->rh, at, n);
}

static int on_resp_headers(llhttp_t *p)
{
    struct upconn *u = p->data;
    if (!u->h) return -1;
    int status = p->status_code;
    /* interim: skip it, and whatever framing it claims: a 1xx answer has no body */
    if (status >= 100 && status < 200 && status != 101) return 1;
    if (status == 101) return -1; /* no protocol switches through the proxy */
    if (u->rh.len && buf_put(&u->rh, u->in_value ? "\r\n" : ": \r\n", u->in_value ? 2 : 4) != 0)
        return -1;
    if (buf_put(&u->rh, "", 0) != 0) return -1;
    int64_t clen = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    if (status == 204 || status == 304) clen = -1;
    u->resp_started = 1;
    u->h->on_head(u->ctx, status, u->reason, u->rh.p, clen);
    return u->head_req ? 1 : 0; /* 1: a HEAD answer has no body */
}

static int on_resp_body(llhttp_t *p, const char *at, size_t n)
{
    struct upconn *u = p->data;
    if (!u->h || !u->resp_started) return -1; /* no body before the final answer's head */
    /* several pieces of body can come from one read: the last one decides */
    u->read_paused = u->h->on_body(u->ctx, at, n) != 0;
    return 0;
}

static int on_resp_complete(llhttp_t *p)
{
    struct upconn *u = p->data;
    if (p->status_code >= 100 && p->status_code < 200) return 0;
    u->resp_done = 1;
    return HPE_PAUSED; /* nothing after the answer is parsed: it makes the connection unusable */
}

static const llhttp_settings_t resp_settings = {
    .on_message_begin = on_resp_begin,
    .on_status = on_resp_status,
    .on_header_field = on_resp_field,
    .on_header_value = on_resp_value,
    .on_headers_complete = on_resp_headers,
    .on_body = on_resp_body,
    .on_message_complete = on_resp_complete,
};

/* Reads and parses while the request side takes it. */
static void read_answer(struct upconn *u)
{
    struct conn *c = &u->c;
    char buf[UP_READ_BUF];
    for (int rounds = 0; rounds < 64 && c->state == CS_ACTIVE && !u->read_paused; rounds++) {
        int n = conn_read_into(c, buf, sizeof buf);
        if (n == 0) return;
        if (!u->h) { /* nobody waits for this: stray bytes or close */
            conn_close(c);
            return;
        }
        if (n < 0) {
            if (n == -1 && u->got_bytes) { /* tell the parser: a close-delimited body ends */
                llhttp_finish(&u->parser);
                if (u->resp_done) {
                    finish(u, 0); /* it closed: not reusable */
                    return;
                }
            }
            gone(u, n == -1 ? "end of stream" : "read error");
            return;
        }
        arm_read(u);
        llhttp_errno_t e = llhttp_execute(&u->parser, buf, (size_t)n);
        if (u->resp_done) { /* paused there; extra bytes after the answer: do not reuse */
            finish(u, e == HPE_PAUSED && llhttp_get_error_pos(&u->parser) == buf + n);
            return;
        }
        if (e != HPE_OK) {
            fail(u, 502, 0, "the upstream %s sent an invalid answer (%s)", u->target->host_header,
                 u->head_overflow ? "header block larger than 16 KiB"
                     : llhttp_get_error_reason(&u->parser));
            return;
        }
        if (!c->more_input) break;
    }
    /* reading waits for the client to take what it has (back-pressure): the read-timeout
     * measures the upstream only, so it stops here; the client's own bound (min-rate,
     * body-timeout) applies meanwhile, and up_resume_read restarts it */
    if (u->read_paused && c->state == CS_ACTIVE && u->h) conn_set_timeout(c, TQ_NONE, 0);
}

/* ----- connecting ----- */

static int open_socket(struct upconn *u, char *err, size_t errlen);

static void start_io(struct upconn *u)
{
    u->c.state = CS_ACTIVE;
    u->c.want_read = !u->read_paused;
    arm_read(u);
    flush(u);
}

static void connected(struct upconn *u)
{
    struct conn *c = &u->c;
    int soerr = 0;
    if (c->mem) {
        soerr = c->mem->reset ? ECONNREFUSED : 0;
    } else {
        socklen_t len = sizeof soerr;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    }
    if (soerr) {
        fail(u, 502, 0, "the upstream %s refused the connection (%s)", u->target->host_header,
             strerror(soerr));
        return;
    }
    if (u->target->tls && !c->mem) {
        c->ssl = tls_client_conn_new(u->target->client_ctx, c->fd, u->target->host,
                                     u->target->host_is_ip, &u->pool->session);
        if (!c->ssl) {
            fail(u, 502, 0, "out of memory for TLS to the upstream");
            return;
        }
        c->state = CS_HANDSHAKE;
        return;
    }
    start_io(u);
}

static void up_run(struct conn *c)
{
    struct upconn *u = (struct upconn *)c;
    if (u->idle) {
        if (c->ev) { /* closed by the upstream, or it talks out of turn */
            idle_unlink(u); /* at once: no request may take it any more */
            conn_close(c);
        }
        return;
    }
    if (u->waiting) return; /* no socket yet */
    if (u->open_pending) { /* a place came free */
        char err[300];
        u->open_pending = 0;
        if (open_socket(u, err, sizeof err) != 0) {
            void *ctx;
            const struct up_handler *h = detach(u, &ctx);
            conn_close(c);
            if (h) h->on_error(ctx, 502, err, 0);
        }
        return;
    }
    if (u->handed) { /* an idle connection's socket came free: the request goes out */
        u->handed = 0;
        start_io(u);
        conn_update_poll(c);
        return;
    }
    if (c->state == CS_CONNECTING) {
        connected(u);
        if (c->state == CS_ACTIVE) {
            conn_update_poll(c);
            return;
        }
    }
    if (c->state == CS_HANDSHAKE) {
        int r = conn_handshake(c);
        if (r < 0) {
            const char *v = tls_conn_verify_error(c->ssl);
            char why[200];
            tls_last_error(why, sizeof why);
            fail(u, 502, 0, "TLS handshake with the upstream %s failed: %s",
                 u->target->host_header, v ? v : why);
            return;
        }
        if (r > 0) start_io(u);
        conn_update_poll(c);
        if (r == 0 || c->state != CS_ACTIVE) return;
    }
    if (c->state != CS_ACTIVE) return;
    if (c->want_write && (!c->ev || (c->ev & EPOLLOUT))) flush(u);
    read_answer(u);
    if (c->state == CS_ACTIVE && u->write_failed && !u->got_bytes && u->h) {
        gone(u, "write error");
        return;
    }
    c->want_read = !u->read_paused;
    conn_update_poll(c);
}

static void up_timeout(struct conn *c, enum tq_kind k)
{
    struct upconn *u = (struct upconn *)c;
    if (u->idle || !u->h) {
        idle_unlink(u);
        conn_close(c);
        return;
    }
    const struct conf_upstream *cf = &u->target->conf;
    if (u->waiting) {
        log_warn("proxy: the upstream %s is busy: a request waited %u s (connect-timeout) for "
                 "one of the %u connections of its thread (max-connections)",
                 u->target->host_header, cf->connect_timeout_s, cf->max_connections);
        fail(u, 503, 0,
             "the upstream %s is busy: no connection came free within %u s (max-connections "
             "%u per thread); try again shortly",
             u->target->host_header, cf->connect_timeout_s, cf->max_connections);
    } else if (k == TQ_CONNECT) {
        fail(u, 504, 0, "the upstream %s did not accept the connection within %u s",
             u->target->host_header, cf->connect_timeout_s);
    } else if (u->resp_started) {
        log_warn("proxy: the upstream %s stalled in the middle of its answer for %u s",
                 u->target->host_header, cf->read_timeout_s);
        fail(u, 504, 0, "the upstream %s stalled in the middle of its answer",
             u->target->host_header);
    } else {
        fail(u, 504, 0, "the upstream %s did not answer within %u s (read-timeout)",
             u->target->host_header, cf->read_timeout_s);
    }
}

static void up_closed(struct conn *c)
{
    struct upconn *u = (struct upconn *)c;
    idle_unlink(u);
    wait_unlink(u);
    if (u->counted) { /* a place came free: the next waiting request may take it */
        u->counted = 0;
        u->pool->nconns--;
        pool_dispatch(u->pool);
    }
    /* close_notify first: OpenSSL marks the session of a connection freed without it as
     * not resumable, and that session is the one the pool resumes with */
    if (c->ssl) conn_close_notify(c);
    void *ctx;
    const struct up_handler *h = detach(u, &ctx);
    if (h) /* closed under the request (e.g. the poll set refused it) */
        h->on_error(ctx, 502, "the connection to the upstream was lost", u->reused && !u->got_bytes);
}

static void up_destroy(struct conn *c)
{
    struct upconn *u = (struct upconn *)c;
    upstream_unref(u->target);
    buf_free(&u->rh);
    free(u);
}

static const struct conn_ops up_ops = {
    .run = up_run,
    .timeout = up_timeout,
    .closed = up_closed,
    .destroy = up_destroy,
};

/* A request's connection object on w, without a socket yet. */
static struct upconn *upconn_new(struct worker *w, struct pool *p, struct upstream *t)
{
    struct upconn *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    conn_init(&u->c, w, &up_ops, -1);
    u->pool = p;
    u->target = upstream_ref(t);
    u->c.state = CS_CONNECTING;
    llhttp_init(&u->parser, HTTP_RESPONSE, &resp_settings);
    u->parser.data = u;
    return u;
}

/* Starts connecting u to its upstream; 0, or -1 with a sentence. */
static int open_socket(struct upconn *u, char *err, size_t errlen)
{
    struct worker *w = u->c.w;
    struct upstream *t = u->target;
    if (w->connect_hook) {
        struct memio *m = w->connect_hook(w, w->connect_arg);
        if (!m) {
            err_set(err, errlen, "cannot connect to the upstream %s: %s", t->host_header,
                    strerror(ECONNREFUSED));
            return -1;
        }
        memio_attach(m, &u->c);
    } else {
        int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err_set(err, errlen, "cannot connect to the upstream %s: %s", t->host_header,
                    strerror(errno));
            return -1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&t->addr, t->addrlen) != 0 && errno != EINPROGRESS) {
            err_set(err, errlen, "cannot connect to the upstream %s: %s", t->host_header,
                    strerror(errno));
            close(fd);
            return -1;
        }
        u->c.fd = fd;
    }
    u->c.state = CS_CONNECTING;
    conn_set_timeout(&u->c, TQ_CONNECT, t->conf.connect_timeout_s * 1000u);
    conn_update_poll(&u->c);
    return 0;
}

struct upconn *up_acquire(struct worker *w, struct upstream *t, int allow_pooled, int head_req,
                          const struct up_handler *h, void *ctx, int *status, char *err,
                          size_t errlen)
{
    struct pool *p = pool_of(w);
    *status = 502;
    if (!p) {
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    pool_set_target(p, t);
    unsigned max = t->conf.max_connections;
    struct upconn *u;
    if (allow_pooled && p->idle) {
        u = p->idle;
        idle_unlink(u);
        u->reused = 1;
        conn_set_timeout(&u->c, TQ_NONE, 0);
    } else {
        if (p->nconns >= max && p->idle) { /* a retry wants a new connection: make room */
            struct upconn *i = p->idle;
            idle_unlink(i);
            i->counted = 0;
            p->nconns--;
            conn_close(&i->c);
        }
        int wait = p->nconns >= max;
        if (wait && p->nwait >= t->conf.queue_size) {
            *status = 503;
            err_set(err, errlen,
                    "the upstream %s is busy: all %u connections of this thread are in use and "
                    "%u requests wait for one (max-connections, queue-size); try again shortly",
                    t->host_header, max, p->nwait);
            return NULL;
        }
        u = upconn_new(w, p, t);
        if (!u) {
            err_set(err, errlen, "cannot connect to the upstream %s: out of memory",
                    t->host_header);
            return NULL;
        }
        if (wait) { /* no socket yet: at the end of the queue, for up to connect-timeout */
            u->waiting = 1;
            u->fresh_only = !allow_pooled;
            u->prev = p->wait_tail;
            if (p->wait_tail)
                p->wait_tail->next = u;
            else
                p->wait_head = u;
            p->wait_tail = u;
            p->nwait++;
            conn_set_timeout(&u->c, TQ_CONNECT, t->conf.connect_timeout_s * 1000u);
        } else {
            p->nconns++;
            u->counted = 1;
            if (open_socket(u, err, errlen) != 0) {
                conn_close(&u->c); /* gives the place back when it is reclaimed */
                return NULL;
            }
        }
    }
    u->h = h;
    u->ctx = ctx;
    u->head_req = (unsigned)head_req;
    if (u->c.state == CS_ACTIVE) arm_read(u);
    return u;
}
