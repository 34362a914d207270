/* conn.c - the connection core and the worker's post/reclaim machinery (see conn.h). */
#include "conn.h"

#include "gw.h"
#include "log.h"
#include "metrics.h"
#include "memio.h"
#include "tls.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FREE_BUFS 16 /* enough for the requests in flight at one moment */

/* ----- the worker ----- */

int worker_init(struct worker *w, struct gw_snap *snap)
{
    if (uv_loop_init(&w->loop) != 0) return -1;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0) {
        uv_loop_close(&w->loop);
        return -1;
    }
    w->now = uv_now(&w->loop);
    w->snap = snap;
    worker_update_date(w);
    return 0;
}

void worker_cleanup(struct worker *w)
{
    worker_settle(w);
    freelist_drain(&w->bufs);
    freelist_drain(&w->xs);
    gw_snap_release(w->snap);
    w->snap = NULL;
    uv_loop_close(&w->loop);
    if (w->epfd >= 0) close(w->epfd);
    w->epfd = -1;
}

void worker_update_date(struct worker *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec == w->date_sec) return;
    w->date_sec = ts.tv_sec;
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(w->date, sizeof w->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

void *worker_buf_get(struct worker *w)
{
    void *b = freelist_get(&w->bufs);
    return b ? b : malloc(RBUF_SIZE);
}

void worker_buf_put(struct worker *w, void *buf)
{
    if (buf && !freelist_put(&w->bufs, buf, MAX_FREE_BUFS)) free(buf);
}

void worker_reclaim_later(struct worker *w, struct reclaim *obj, void (*fn)(struct reclaim *))
{
    obj->fn = fn;
    obj->next = w->reclaim;
    w->reclaim = obj;
}

static void conn_reclaim(struct reclaim *r)
{
    struct conn *c = (struct conn *)((char *)r - offsetof(struct conn, rc));
    if (c->ops->destroy)
        c->ops->destroy(c);
    else
        free(c);
}

/* The deferred half of conn_close: the layer lets go, then the socket and buffers go. */
static void conn_finalize(struct conn *c)
{
    struct worker *w = c->w;
    c->closed_done = 1;
    if (c->ops->closed) c->ops->closed(c);
    if (c->ssl) tls_conn_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0) close(c->fd); /* leaves the epoll set too */
    c->fd = -1;
    if (c->mem) {
        c->mem->closed = 1;
        c->mem->c = NULL;
        c->mem = NULL;
    }
    worker_buf_put(w, c->rbuf);
    c->rbuf = NULL;
    c->rpos = c->rlen = 0;
    conn_obuf_release(c);
    worker_reclaim_later(w, &c->rc, conn_reclaim);
}

void worker_settle(struct worker *w)
{
    for (;;) {
        struct conn *c;
        while ((c = w->post_head)) {
            w->post_head = c->post_next;
            if (!w->post_head) w->post_tail = NULL;
            c->post_next = NULL;
            c->posted = 0;
            if (c->state == CS_CLOSED) {
                if (!c->closed_done) conn_finalize(c);
            } else {
                /* a post carries no readiness, except on the in-memory transport, which
                 * reports what epoll would */
                c->ev = c->mem ? (uint8_t)memio_events(c->mem, c->events) : 0;
                c->ops->run(c);
            }
        }
        if (!w->reclaim) return;
        struct reclaim *r = w->reclaim;
        w->reclaim = NULL;
        while (r) {
            struct reclaim *next = r->next;
            r->fn(r);
            r = next;
        }
    }
}

void worker_expire(struct worker *w)
{
    for (int k = 0; k < TQ_N; k++) {
        struct conn *c;
        while ((c = w->tq[k].head) && c->deadline <= w->now) {
            conn_set_timeout(c, TQ_NONE, 0);
            c->ops->timeout(c, (enum tq_kind)k);
        }
    }
}

/* ----- connections ----- */

void conn_init(struct conn *c, struct worker *w, const struct conn_ops *ops, int fd)
{
    c->w = w;
    c->ops = ops;
    c->fd = fd;
    c->tq = TQ_NONE;
}

void conn_post(struct conn *c)
{
    if (c->posted || c->closed_done) return;
    struct worker *w = c->w;
    c->posted = 1;
    c->post_next = NULL;
    if (w->post_tail)
        w->post_tail->post_next = c;
    else
        w->post_head = c;
    w->post_tail = c;
}

static void tq_unlink(struct conn *c)
{
    if (c->tq == TQ_NONE) return;
    struct tqueue *q = &c->w->tq[c->tq];
    if (c->tq_prev)
        c->tq_prev->tq_next = c->tq_next;
    else
        q->head = c->tq_next;
    if (c->tq_next)
        c->tq_next->tq_prev = c->tq_prev;
    else
        q->tail = c->tq_prev;
    c->tq_prev = c->tq_next = NULL;
    c->tq = TQ_NONE;
}

void conn_set_timeout(struct conn *c, enum tq_kind k, unsigned ms)
{
    tq_unlink(c);
    if (k == TQ_NONE || c->state == CS_CLOSED) return;
    struct tqueue *q = &c->w->tq[k];
    c->deadline = c->w->now + (ms ? ms : 1);
    c->tq = (uint8_t)k;
    /* a queue holds one duration per kind, so the new deadline is nearly always the
     * latest: the walk from the tail is O(1) then, and keeps the order when a reload
     * changed the duration */
    struct conn *after = q->tail;
    while (after && after->deadline > c->deadline) after = after->tq_prev;
    c->tq_prev = after;
    c->tq_next = after ? after->tq_next : q->head;
    if (c->tq_next)
        c->tq_next->tq_prev = c;
    else
        q->tail = c;
    if (after)
        after->tq_next = c;
    else
        q->head = c;
}

void conn_close(struct conn *c)
{
    if (c->state == CS_CLOSED) return;
    tq_unlink(c);
    c->state = CS_CLOSED;
    c->want_read = c->want_write = c->kick = 0;
    conn_post(c);
}

void conn_reset(struct conn *c)
{
    if (c->state == CS_CLOSED) return;
    if (c->fd >= 0) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    conn_close(c);
}

void conn_update_poll(struct conn *c)
{
    unsigned ev = 0;
    switch (c->state) {
    case CS_CONNECTING:
        ev = EPOLLOUT;
        break;
    case CS_HANDSHAKE:
        ev = c->read_wants_write ? EPOLLOUT : EPOLLIN;
        break;
    case CS_ACTIVE:
        if (c->want_read) ev |= EPOLLIN;
        if (c->want_write || c->read_wants_write || c->kick) ev |= EPOLLOUT;
        break;
    case CS_LINGER:
        ev = EPOLLIN;
        break;
    default:
        return;
    }
    if (c->mem) { /* no epoll: post when the peer's side is ready, as epoll would say */
        c->events = (uint8_t)ev;
        if (c->kick || memio_ready(c->mem, ev)) conn_post(c);
        return;
    }
    if (ev == c->events) return;
    /* level-triggered; a connection that waits for nothing leaves the set, so that a
     * hang-up (always reported) cannot spin the loop */
    struct epoll_event e = {.events = ev, .data.ptr = c};
    int op = !ev ? EPOLL_CTL_DEL : c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(c->w->epfd, op, c->fd, &e) != 0 && op != EPOLL_CTL_DEL) {
        log_error("epoll_ctl: %s; closing the connection", strerror(errno));
        conn_close(c);
        return;
    }
    c->events = (uint8_t)ev;
}

int conn_handshake(struct conn *c)
{
    if (c->state == CS_CLOSED) return -1;
    switch (tls_conn_handshake(c->ssl)) {
    case TLS_IO_OK:
        c->read_wants_write = 0;
        return 1;
    case TLS_IO_WANT_READ:
        c->read_wants_write = 0;
        return 0;
    case TLS_IO_WANT_WRITE:
        c->read_wants_write = 1;
        return 0;
    default:
        return -1;
    }
}

int conn_pending(const struct conn *c)
{
    if (c->mem) return memio_pending(c->mem) > 0;
    return c->ssl && tls_conn_pending(c->ssl);
}

int conn_read_into(struct conn *c, char *p, size_t room)
{
    if (c->state == CS_CLOSED) return -2;
    size_t n = 0;
    c->read_wants_write = 0;
    c->more_input = 0;
    enum tls_io st = c->mem ? memio_read(c->mem, p, room, &n) : tls_conn_read(c->ssl, c->fd, p, room, &n);
    switch (st) {
    case TLS_IO_OK:
        break;
    case TLS_IO_WANT_READ:
        return 0;
    case TLS_IO_WANT_WRITE:
        c->read_wants_write = 1;
        return 0;
    case TLS_IO_EOF:
        return -1;
    default:
        return -2;
    }
    c->in_total += n;
    if (c->metered) metrics_add(M_BYTES_IN, n);
    /* records already decrypted or buffered by read-ahead are not visible to epoll */
    c->more_input = n == room || conn_pending(c);
    return (int)n;
}

int conn_read(struct conn *c)
{
    if (!c->rbuf) {
        c->rbuf = worker_buf_get(c->w);
        c->rpos = c->rlen = 0;
        if (!c->rbuf) return -2;
    }
    int r = conn_read_into(c, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
    if (r > 0) c->rlen += (uint32_t)r;
    return r;
}

void conn_obuf_release(struct conn *c)
{
    if (c->ocap == RBUF_SIZE)
        worker_buf_put(c->w, c->obuf);
    else
        free(c->obuf);
    c->obuf = NULL;
    c->ocap = 0;
    c->opos = c->olen = 0;
}

int conn_out_put(struct conn *c, const void *p, size_t n)
{
    if (n == 0) return 0;
    if (c->state == CS_CLOSED) return -1;
    if (conn_queued(c) + n > CONN_OUT_CAP) {
        log_error("output queue of a connection would exceed %u bytes; closing it",
                  (unsigned)CONN_OUT_CAP);
        return -1;
    }
    if (c->olen + n > c->ocap && c->opos > 0) { /* reuse the written front first */
        memmove(c->obuf, c->obuf + c->opos, c->olen - c->opos);
        c->olen -= c->opos;
        c->opos = 0;
    }
    if (c->olen + n > c->ocap) {
        if (!c->obuf && n <= RBUF_SIZE) { /* the common case: one of the worker's buffers */
            c->obuf = worker_buf_get(c->w);
            if (!c->obuf) return -1;
            c->ocap = RBUF_SIZE;
        } else {
            size_t cap = c->ocap ? c->ocap : RBUF_SIZE;
            while (cap < c->olen + n) cap *= 2;
            char *b = malloc(cap);
            if (!b) return -1;
            if (c->olen) memcpy(b, c->obuf, c->olen);
            size_t len = c->olen;
            conn_obuf_release(c);
            c->obuf = b;
            c->ocap = cap;
            c->olen = len;
        }
    }
    memcpy(c->obuf + c->olen, p, n);
    c->olen += n;
    return 0;
}

ssize_t conn_write_direct(struct conn *c, const void *p, size_t n)
{
    if (c->state == CS_CLOSED) return -1;
    size_t off = 0;
    while (off < n) {
        size_t w = 0;
        enum tls_io st = c->mem ? memio_write(c->mem, (const char *)p + off, n - off, &w)
                                : tls_conn_write(c->ssl, c->fd, (const char *)p + off, n - off, &w);
        if (st == TLS_IO_WANT_WRITE || st == TLS_IO_WANT_READ) {
            c->want_write = 1;
            if (!c->blocked) {
                c->blocked = 1;
                c->blocked_since = c->w->now;
            }
            break;
        }
        if (st != TLS_IO_OK) return -1;
        off += w;
    }
    c->out_total += off;
    if (c->metered) metrics_add(M_BYTES_OUT, off);
    return (ssize_t)off;
}

int conn_flush(struct conn *c, int keep_buf)
{
    if (c->state == CS_CLOSED) return -1;
    if (c->opos < c->olen) {
        ssize_t n = conn_write_direct(c, c->obuf + c->opos, c->olen - c->opos);
        if (n < 0) return -1;
        c->opos += (size_t)n;
        if (c->opos < c->olen) return 0; /* the socket is full: want_write is set */
    }
    c->want_write = 0;
    if (c->blocked) {
        c->blocked = 0;
        c->blocked_ms += c->w->now - c->blocked_since;
    }
    c->opos = c->olen = 0;
    if (!keep_buf && c->obuf) conn_obuf_release(c);
    return 0;
}

uint64_t conn_blocked_ms(const struct conn *c)
{
    return c->blocked_ms + (c->blocked ? c->w->now - c->blocked_since : 0);
}

size_t conn_unacked(const struct conn *c)
{
    int n = 0;
    if (c->fd < 0 || ioctl(c->fd, SIOCOUTQ, &n) != 0 || n < 0) return 0;
    return (size_t)n;
}

void conn_close_notify(struct conn *c)
{
    if (c->ssl) tls_conn_shutdown(c->ssl);
}

int conn_shutdown_write(struct conn *c)
{
    if (c->state == CS_CLOSED) return -1;
    conn_close_notify(c);
    if (c->mem) {
        c->mem->shut_wr = 1;
        return 0;
    }
    return shutdown(c->fd, SHUT_WR);
}

int conn_drain_input(struct conn *c)
{
    if (c->state == CS_CLOSED) return 1;
    if (c->mem) {
        c->mem->in_pos = c->mem->in.len;
        return c->mem->in_eof || c->mem->reset;
    }
    char scratch[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t r = read(c->fd, scratch, sizeof scratch);
        if (r > 0) continue;
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        return 1; /* EOF or error: the peer has stopped sending */
    }
    /* 64 KiB drained and more may be pending: go on at the next readable event */
    return 0;
}
