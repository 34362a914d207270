/* server.c - listeners, worker threads, connection I/O and timeouts (see server.h). */
#include "server.h"

#include "accesslog.h"
#include "conn.h"
#include "gw.h"
#include "log.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 250
#define STOP_GRACE_MS 10000
#define ACCEPT_BATCH 64
#define MAX_FREE_BUFS 16 /* enough for the requests in flight at one moment */

static struct worker *workers;
static struct server_hooks hooks;
static int nworkers;
static unsigned bound_https_port;

/* ----- sockets ----- */

static int resolve(const char *host, unsigned port, struct sockaddr_storage *ss, socklen_t *len,
                   char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char p[8];
    snprintf(p, sizeof p, "%u", port);
    int rc = getaddrinfo(host, p, &hints, &ai);
    if (rc != 0) {
        hints.ai_flags = AI_PASSIVE;
        rc = getaddrinfo(host, p, &hints, &ai);
    }
    if (rc != 0 || !ai) {
        snprintf(err, errlen, "cannot listen on %s:%u: %s", host, port, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static int listen_socket(const struct sockaddr_storage *ss, socklen_t len, int reuseport,
                         const char *what, char *err, size_t errlen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: socket: %s", what, strerror(errno));
        return -1;
    }
    int one = 1, defer = 10;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ss->ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    /* accepted sockets inherit TCP_NODELAY; deferred accept wakes us with the
     * ClientHello already there */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer);
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || (reuseport && listen(fd, 4096) != 0)) {
        snprintf(err, errlen, "cannot listen on %s: %s", what, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static unsigned socket_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Opens one SO_REUSEPORT socket per worker on host:port. A plain bind is tried first so
 * that a port held by another program (even another certgate) is reported, not shared. */
static int open_listeners(const char *host, unsigned port, int tls, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char what[300];
    snprintf(what, sizeof what, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
    if (resolve(host, port, &ss, &len, err, errlen) != 0) return -1;
    if (port != 0) {
        int probe = listen_socket(&ss, len, 0, what, err, errlen);
        if (probe < 0) return -1;
        close(probe);
    }
    for (int i = 0; i < nworkers; i++) {
        int fd = listen_socket(&ss, len, 1, what, err, errlen);
        if (fd < 0) return -1;
        if (port == 0) { /* the first socket chose the port; the others share it */
            port = socket_port(fd);
            if (ss.ss_family == AF_INET)
                ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
            else
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        }
        struct listener *l = &workers[i].listeners[workers[i].nlisteners++];
        l->fd = fd;
        l->tls = tls;
        l->w = &workers[i];
    }
    if (tls) bound_https_port = port;
    log_info("listening on %s://%s%s%s:%u (%d thread%s)", tls ? "https" : "http",
             strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port, nworkers,
             nworkers == 1 ? "" : "s");
    return 0;
}

void server_set_hooks(const struct server_hooks *h)
{
    hooks = *h;
}

unsigned server_https_port(void)
{
    return bound_https_port;
}

/* ----- buffers ----- */

void *worker_buf_get(struct worker *w)
{
    void *b = freelist_get(&w->bufs);
    return b ? b : malloc(RBUF_SIZE);
}

void worker_buf_put(struct worker *w, void *buf)
{
    if (buf && !freelist_put(&w->bufs, buf, MAX_FREE_BUFS)) free(buf);
}

void conn_obuf_release(struct conn *c)
{
    if (c->ocap == RBUF_SIZE)
        worker_buf_put(c->w, c->obuf);
    else
        free(c->obuf);
    c->obuf = NULL;
    c->ocap = 0;
}

/* ----- timeouts ----- */

unsigned conn_timeout_ms(const struct conn *c, enum tq_kind kind)
{
    const struct gw_snap *s = c->w->snap;
    switch (kind) {
    case TQ_HEADER:
        return s->header_timeout_ms;
    case TQ_KEEPALIVE:
        return s->keepalive_timeout_ms;
    case TQ_BODY:
    case TQ_WRITE:
        return s->body_timeout_ms;
    case TQ_LINGER:
        return 2000;
    default:
        return 0;
    }
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

/* (Re)arms the connection's single timeout; TQ_NONE disarms it. O(1): queues hold
 * one duration each, so appending keeps them in deadline order. */
void conn_set_timeout(struct conn *c, enum tq_kind kind)
{
    tq_unlink(c);
    if (kind == TQ_NONE || c->state == CS_CLOSED) return;
    struct tqueue *q = &c->w->tq[kind];
    c->deadline = uv_now(&c->w->loop) + conn_timeout_ms(c, kind);
    c->tq = (uint8_t)kind;
    c->tq_prev = q->tail;
    c->tq_next = NULL;
    if (q->tail)
        q->tail->tq_next = c;
    else
        q->head = c;
    q->tail = c;
}

/* ----- connections ----- */

void conn_update_poll(struct conn *c)
{
    unsigned ev = 0;
    switch (c->state) {
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

static void free_graveyard(struct worker *w)
{
    while (w->graveyard) {
        struct conn *c = w->graveyard;
        w->graveyard = c->next;
        free(c);
    }
}

void conn_close(struct conn *c)
{
    if (c->state == CS_CLOSED) return;
    struct worker *w = c->w;
    http_conn_release(c);
    tq_unlink(c);
    c->state = CS_CLOSED;
    if (c->ssl) tls_conn_free(c->ssl);
    c->ssl = NULL;
    worker_buf_put(w, c->rbuf);
    c->rbuf = NULL;
    conn_obuf_release(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->nconns--;
    close(c->fd); /* leaves the epoll set too */
    /* events already fetched may still name c: free it after the batch */
    c->prev = NULL;
    c->next = w->graveyard;
    w->graveyard = c;
}

void conn_finish(struct conn *c, int linger)
{
    if (c->ssl) tls_conn_shutdown(c->ssl);
    if (!linger || c->peer_eof || shutdown(c->fd, SHUT_WR) != 0) {
        conn_close(c);
        return;
    }
    http_conn_release(c);
    c->state = CS_LINGER;
    c->want_write = c->read_wants_write = 0;
    conn_set_timeout(c, TQ_LINGER);
    conn_update_poll(c);
}

int conn_read(struct conn *c)
{
    size_t room = RBUF_SIZE - c->rlen, n = 0;
    c->read_wants_write = 0;
    c->more_input = 0;
    switch (tls_conn_read(c->ssl, c->fd, c->rbuf + c->rlen, room, &n)) {
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
    /* records already decrypted or buffered by read-ahead are not visible to epoll */
    c->more_input = n == room || (c->ssl && tls_conn_pending(c->ssl));
    c->rlen += (uint32_t)n;
    return (int)n;
}

int conn_flush(struct conn *c)
{
    if (c->opos < c->olen) {
        ssize_t n = conn_write_direct(c, c->obuf + c->opos, c->olen - c->opos);
        if (n < 0) return -1;
        c->opos += (size_t)n;
        if (n > 0 && c->tq == TQ_WRITE) conn_set_timeout(c, TQ_WRITE); /* progress */
        if (c->opos < c->olen) return 0; /* the socket is full: want_write is set */
    }
    c->want_write = 0;
    c->opos = c->olen = 0;
    /* an idle connection keeps no output buffer; while an answer streams the buffer
     * stays, rather than be freed and taken again at every drain */
    if (c->obuf && !c->x) conn_obuf_release(c);
    return 0;
}

ssize_t conn_write_direct(struct conn *c, const void *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        size_t w = 0;
        enum tls_io st = tls_conn_write(c->ssl, c->fd, (const char *)p + off, n - off, &w);
        if (st == TLS_IO_WANT_WRITE || st == TLS_IO_WANT_READ) {
            c->want_write = 1;
            break;
        }
        if (st != TLS_IO_OK) return -1;
        off += w;
    }
    return (ssize_t)off;
}

static void conn_handshake(struct conn *c)
{
    switch (tls_conn_handshake(c->ssl)) {
    case TLS_IO_OK:
        c->state = CS_ACTIVE;
        c->read_wants_write = 0;
        /* read-ahead may hold the first request already; else epoll will tell */
        c->more_input = tls_conn_pending(c->ssl) != 0;
        http_conn_run(c);
        return;
    case TLS_IO_WANT_READ:
        c->read_wants_write = 0;
        break;
    case TLS_IO_WANT_WRITE:
        c->read_wants_write = 1;
        break;
    default: {
        char why[160];
        tls_last_error(why, sizeof why);
        log_debug("TLS handshake failed: %s", why);
        conn_close(c);
        return;
    }
    }
    conn_update_poll(c);
}

static void conn_linger_read(struct conn *c)
{
    char scratch[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t r = read(c->fd, scratch, sizeof scratch);
        if (r > 0) continue;
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        conn_close(c); /* EOF or error: the client has stopped sending */
        return;
    }
    /* 64 KiB drained and more may be pending: go on at the next readable event (the
     * linger timeout bounds it). Closing now would reset the connection and could
     * destroy the answer before the client has read it. */
}

static void on_conn_io(struct conn *c, unsigned events)
{
    if (events & (EPOLLERR | EPOLLHUP)) /* let the read or write find out what happened */
        events |= c->events;
    switch (c->state) {
    case CS_HANDSHAKE:
        conn_handshake(c);
        break;
    case CS_ACTIVE:
        if ((events & EPOLLIN) || (c->read_wants_write && (events & EPOLLOUT)))
            c->more_input = 1;
        http_conn_run(c);
        break;
    case CS_LINGER:
        conn_linger_read(c);
        break;
    default:
        break;
    }
}

static void conn_accepted(struct worker *w, int fd, const struct sockaddr_storage *ss, int tls)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->w = w;
    c->fd = fd;
    c->tq = TQ_NONE;
    memcpy(&c->peer, ss, ss->ss_family == AF_INET6 ? sizeof c->peer.in6 : sizeof c->peer.in4);
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    http_conn_init(c);
    if (tls) {
        c->ssl = tls_conn_new(w->snap->ctx, fd);
        if (!c->ssl) {
            conn_close(c);
            return;
        }
        c->state = CS_HANDSHAKE;
        conn_set_timeout(c, TQ_HEADER);
        conn_handshake(c); /* deferred accept: the ClientHello is usually here already */
    } else {
        c->state = CS_ACTIVE;
        c->more_input = 1; /* deferred accept: the request is usually here already */
        conn_set_timeout(c, TQ_HEADER);
        http_conn_run(c);
    }
}

/* epoll data of a listener: its address with the lowest bit set (a connection's is even;
 * libuv's backend fd has NULL) */
#define LISTENER_TAG 1u

static int listener_watch(struct listener *l, int op, int on)
{
    struct epoll_event e = {.events = on ? EPOLLIN : 0,
                            .data.ptr = (void *)((uintptr_t)l | LISTENER_TAG)};
    return epoll_ctl(l->w->epfd, op, l->fd, &e);
}

static void on_accept(struct listener *l)
{
    struct worker *w = l->w;
    if (w->stopping) return;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_error("accept: %s; pausing new connections for 100 ms", strerror(errno));
                for (int j = 0; j < w->nlisteners; j++) listener_watch(&w->listeners[j], EPOLL_CTL_MOD, 0);
                w->accept_paused_until = uv_now(&w->loop) + 100;
            }
            return;
        }
        /* per connection, not per batch: a batch that started before a switch must not
         * hand the old certificate to a client that connected after the switch's 200 */
        gw_snap_refresh(&w->snap);
        conn_accepted(w, fd, &ss, l->tls);
    }
}

/* ----- workers ----- */

static void update_date(struct worker *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec == w->date_sec) return;
    w->date_sec = ts.tv_sec;
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(w->date, sizeof w->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

static void worker_finish(struct worker *w)
{
    w->finished = 1;
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
}

static void on_tick(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    update_date(w);
    accesslog_flush();
    free_graveyard(w); /* closed outside an epoll batch (timers, thread-pool answers) */
    gw_snap_refresh(&w->snap);
    for (int k = 0; k < TQ_N; k++) {
        struct conn *c;
        while ((c = w->tq[k].head) && c->deadline <= now) {
            conn_set_timeout(c, TQ_NONE);
            if (c->state == CS_LINGER || c->state == CS_HANDSHAKE)
                conn_close(c);
            else
                http_conn_timeout(c, (enum tq_kind)k);
        }
    }
    if (w->accept_paused_until && now >= w->accept_paused_until && !w->stopping) {
        w->accept_paused_until = 0;
        for (int j = 0; j < w->nlisteners; j++)
            listener_watch(&w->listeners[j], EPOLL_CTL_MOD, 1);
    }
    if (w->stopping) {
        if (now >= w->stop_deadline) {
            if (w->nconns) log_warn("stopping: closing %u unfinished connection(s)", w->nconns);
            while (w->conns) conn_close(w->conns);
        }
        if (!w->nconns) worker_finish(w);
    }
}

static void on_wakeup(uv_async_t *a)
{
    struct worker *w = a->data;
    if (w->stopping) return;
    w->stopping = 1;
    w->stop_deadline = uv_now(&w->loop) + STOP_GRACE_MS;
    for (int j = 0; j < w->nlisteners; j++) close(w->listeners[j].fd); /* leaves the set */
    w->nlisteners = 0;
    if (hooks.worker_stopping) hooks.worker_stopping(&w->loop, &w->app);
    for (struct conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        c->draining = 1;
        if (c->state == CS_HANDSHAKE || c->state == CS_LINGER || http_conn_idle(c))
            conn_close(c);
    }
    if (!w->nconns) worker_finish(w);
}

/* One turn: wait in the worker's epoll set, handle what came, and run libuv when it has
 * work (its backend fd is ready, a timer is due, handles are closing). */
static void worker_main(void *arg)
{
    struct worker *w = arg;
    uv_loop_t *loop = &w->loop;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, uv_backend_fd(loop), &e);
    uv_run(loop, UV_RUN_NOWAIT);
    for (;;) {
        struct epoll_event ev[128];
        int n = epoll_wait(w->epfd, ev, 128, uv_backend_timeout(loop));
        int run_uv = n <= 0;
        uv_update_time(loop);
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (!p) {
                run_uv = 1;
            } else if ((uintptr_t)p & LISTENER_TAG) {
                on_accept((struct listener *)((uintptr_t)p & ~(uintptr_t)LISTENER_TAG));
            } else {
                struct conn *c = p;
                if (c->state != CS_CLOSED) on_conn_io(c, ev[i].events);
            }
        }
        free_graveyard(w);
        if (run_uv || uv_backend_timeout(loop) == 0) uv_run(loop, UV_RUN_NOWAIT);
        if (w->finished && !uv_loop_alive(loop)) break;
    }
    if (hooks.worker_exit) {
        hooks.worker_exit(&w->loop, &w->app);
        uv_run(&w->loop, UV_RUN_DEFAULT); /* let closed handles finish */
    }
    accesslog_flush();
    free_graveyard(w);
    freelist_drain(&w->bufs);
    freelist_drain(&w->xs);
    gw_snap_release(w->snap);
    w->snap = NULL;
    uv_loop_close(&w->loop);
    close(w->epfd);
}

int server_start(const struct server_config *cfg, char *err, size_t errlen)
{
    nworkers = cfg->threads;
    workers = calloc((size_t)nworkers, sizeof *workers);
    if (!workers) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (open_listeners(cfg->host, cfg->https_port, 1, err, errlen) != 0) return -1;
    if (cfg->http_port && open_listeners(cfg->host, cfg->http_port, 0, err, errlen) != 0)
        return -1;
    for (int i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        uv_loop_init(&w->loop);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (w->epfd < 0) {
            snprintf(err, errlen, "cannot create an epoll set: %s", strerror(errno));
            return -1;
        }
        uv_async_init(&w->loop, &w->wakeup, on_wakeup);
        w->wakeup.data = w;
        uv_timer_init(&w->loop, &w->tick);
        w->tick.data = w;
        uv_timer_start(&w->tick, on_tick, TICK_MS, TICK_MS);
        w->snap = gw_snap_acquire();
        update_date(w);
        for (int j = 0; j < w->nlisteners; j++) {
            if (listener_watch(&w->listeners[j], EPOLL_CTL_ADD, 1) != 0) {
                snprintf(err, errlen, "cannot watch a listener: %s", strerror(errno));
                return -1;
            }
        }
    }
    for (int i = 0; i < nworkers; i++) {
        if (uv_thread_create(&workers[i].thread, worker_main, &workers[i]) != 0) {
            snprintf(err, errlen, "cannot start worker thread %d", i);
            return -1;
        }
    }
    return 0;
}

void server_stop(void)
{
    for (int i = 0; i < nworkers; i++) uv_async_send(&workers[i].wakeup);
}

void server_join(void)
{
    for (int i = 0; i < nworkers; i++) uv_thread_join(&workers[i].thread);
    free(workers);
    workers = NULL;
    nworkers = 0;
}
