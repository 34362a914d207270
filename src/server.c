/* server.c - listeners, worker threads, connection I/O and timeouts (see server.h). */
#include "server.h"

#include "accesslog.h"
#include "conn.h"
#include "err.h"
#include "gw.h"
#include "http.h"
#include "log.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 250
#define STOP_GRACE_MS 10000
#define ACCEPT_BATCH 64
#define NOTE_INTERVAL_MS 10000 /* a repeated condition is logged once per interval */
/* descriptors kept out of the default max-connections: listeners, epoll sets, libuv,
 * log and data files, the API's work (certificate files, temp files) */
#define FD_RESERVE 128

struct listener {
    int fd;
    int tls;
    struct worker *w;
};

/* A worker thread: the connection core's worker plus what only server.c uses. */
struct srv_worker {
    struct worker w;
    int finished; /* worker_finish() ran: leave once libuv is idle */
    uv_thread_t thread;
    uv_async_t wakeup;
    uv_timer_t tick;
    struct listener listeners[2];
    int nlisteners;
    uint64_t stop_deadline;
    uint64_t accept_paused_until; /* descriptors ran out: retry accepting then */
    int at_cap;                   /* not accepting: max-connections reached */
    int watching;                 /* the listeners are in the epoll set */
};

static struct srv_worker *workers;
static struct server_hooks hooks;
static int nworkers;
static unsigned bound_https_port;
static _Atomic unsigned nclients;  /* client connections of every worker */
static unsigned default_max_conns; /* max-connections when not configured */

/* A condition logged at most once per NOTE_INTERVAL_MS for the whole gateway, with how
 * often it happened in between. */
struct note {
    pthread_mutex_t mu;
    uint64_t next_ms; /* no line before this */
    unsigned pending; /* occurrences not logged yet */
    int err;          /* the last errno, when there is one */
    unsigned peak;    /* highest client count seen meanwhile */
};
static struct note note_cap = {.mu = PTHREAD_MUTEX_INITIALIZER};
static struct note note_fds = {.mu = PTHREAD_MUTEX_INITIALIZER};

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
        err_set(err, errlen, "cannot listen on %s:%u: %s", host, port, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

/* TCP_DEFER_ACCEPT, seconds: the kernel holds a connection that sent no data until its
 * first SYN-ACK resend (1 s), then hands it over, and the header timer runs out the rest
 * of header-timeout counted from the SYN (see syn_wait_ms). A longer deferral cannot keep
 * the deadline: a silent client ACKs every SYN-ACK, the kernel then skips resends, and
 * the socket no longer tells how long it waited (10 s, the old value, held such a client
 * for ~20 s whatever header-timeout said). */
#define DEFER_ACCEPT_S 1

static int listen_socket(const struct sockaddr_storage *ss, socklen_t len, int reuseport,
                         const char *what, char *err, size_t errlen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err_set(err, errlen, "cannot listen on %s: socket: %s", what, strerror(errno));
        return -1;
    }
    int one = 1, defer = DEFER_ACCEPT_S;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ss->ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    /* accepted sockets inherit TCP_NODELAY; deferred accept wakes us with the
     * ClientHello already there */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer);
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || (reuseport && listen(fd, 4096) != 0)) {
        err_set(err, errlen, "cannot listen on %s: %s", what, strerror(errno));
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
        l->w = &workers[i].w;
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

/* ----- accepting ----- */

/* epoll data of a listener: its address with the lowest bit set (a connection's is even;
 * libuv's backend fd has NULL) */
#define LISTENER_TAG 1u

static int listener_watch(struct listener *l, int op, int on)
{
    struct epoll_event e = {.events = on ? EPOLLIN : 0,
                            .data.ptr = (void *)((uintptr_t)l | LISTENER_TAG)};
    return epoll_ctl(l->w->epfd, op, l->fd, &e);
}

/* Takes the worker's listeners out of its epoll set (new connections wait in the
 * kernel's backlog) or puts them back, as the pauses say. */
static void listeners_update(struct srv_worker *sw)
{
    int on = !sw->at_cap && !sw->accept_paused_until && !sw->w.stopping;
    if (on == sw->watching) return;
    for (int j = 0; j < sw->nlisteners; j++)
        listener_watch(&sw->listeners[j], on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, 1);
    sw->watching = on;
}

static unsigned max_clients(const struct worker *w)
{
    return w->snap->max_connections ? w->snap->max_connections : default_max_conns;
}

/* Counts an occurrence of n's condition; returns 1 when a line is due now (then
 * *count and *peak say what to log). force: log what is pending once the interval
 * passed, without a new occurrence (the tick). */
static int note_due(struct note *n, uint64_t now, int force, int err, unsigned *count,
                    unsigned *peak, int *err_out)
{
    int due = 0;
    pthread_mutex_lock(&n->mu);
    if (!force) {
        n->err = err;
        n->pending++;
        unsigned c = atomic_load_explicit(&nclients, memory_order_relaxed);
        if (c > n->peak) n->peak = c;
    }
    if (n->pending && now >= n->next_ms) {
        due = 1;
        *count = n->pending;
        *peak = n->peak;
        *err_out = n->err;
        n->pending = n->peak = 0;
        n->next_ms = now + NOTE_INTERVAL_MS;
    }
    pthread_mutex_unlock(&n->mu);
    return due;
}

static void note_cap_log(const struct worker *w, int force)
{
    unsigned count, peak;
    int err;
    if (note_due(&note_cap, w->now, force, 0, &count, &peak, &err))
        log_warn("%u client connections: max-connections (%u) reached %u time%s in the last "
                 "%u s; new connections wait in the listen backlog until others close",
                 peak, max_clients(w), count, count == 1 ? "" : "s", NOTE_INTERVAL_MS / 1000);
}

static void note_fds_log(const struct worker *w, int force, int err)
{
    unsigned count, peak;
    if (note_due(&note_fds, w->now, force, err, &count, &peak, &err))
        log_error("accept: %s (%u time%s in the last %u s, %u client connections); new "
                  "connections wait in the listen backlog; lower max-connections or raise "
                  "the open-files limit",
                  strerror(err), count, count == 1 ? "" : "s", NOTE_INTERVAL_MS / 1000, peak);
}

/* Milliseconds a new connection already waited in the kernel since its SYN: with
 * TCP_DEFER_ACCEPT, a client that sent nothing is handed over after SYN-ACK resends,
 * which the socket counts (1, 3, 7 ... s for 1, 2, 3 ... resends). */
static unsigned syn_wait_ms(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || !ti.tcpi_total_retrans) return 0;
    unsigned n = ti.tcpi_total_retrans < 12 ? ti.tcpi_total_retrans : 12;
    return ((1u << n) - 1) * 1000;
}

static void on_accept(struct listener *l)
{
    struct worker *w = l->w;
    struct srv_worker *sw = w->srv;
    if (w->stopping) return;
    unsigned cap = max_clients(w);
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        /* a place is taken before accepting: the workers share one count */
        if (atomic_fetch_add(&nclients, 1) >= cap) {
            atomic_fetch_sub(&nclients, 1);
            sw->at_cap = 1;
            listeners_update(sw);
            note_cap_log(w, 0);
            return;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            atomic_fetch_sub(&nclients, 1);
            if (err == EAGAIN || err == EINTR || err == ECONNABORTED) return;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                sw->accept_paused_until = w->now + 100;
                listeners_update(sw);
                note_fds_log(w, 0, err);
            }
            return;
        }
        /* per connection, not per batch: a batch that started before a switch must not
         * hand the old certificate to a client that connected after the switch's 200 */
        gw_snap_refresh(&w->snap);
        struct conn *c = http_accept(w, fd, &ss, len, l->tls ? w->snap->ctx : NULL);
        if (!c) {
            atomic_fetch_sub(&nclients, 1);
            continue;
        }
        /* the header deadline holds from the SYN */
        unsigned waited = syn_wait_ms(fd);
        if (waited) {
            unsigned t = w->snap->header_timeout_ms;
            conn_set_timeout(c, TQ_HEADER, t > waited ? t - waited : 1);
        }
    }
}

/* The tick's part of accepting: resume after a pause, log what is pending. */
static void accept_tick(struct srv_worker *sw)
{
    struct worker *w = &sw->w;
    if (sw->accept_paused_until && w->now >= sw->accept_paused_until) sw->accept_paused_until = 0;
    if (sw->at_cap && atomic_load(&nclients) < max_clients(w)) sw->at_cap = 0;
    listeners_update(sw);
    note_cap_log(w, 1);
    note_fds_log(w, 1, 0);
}

/* ----- workers ----- */

static void worker_finish(struct srv_worker *sw)
{
    sw->finished = 1;
    uv_timer_stop(&sw->tick);
    uv_close((uv_handle_t *)&sw->tick, NULL);
    uv_close((uv_handle_t *)&sw->wakeup, NULL);
}

static void on_tick(uv_timer_t *t)
{
    struct srv_worker *sw = t->data;
    struct worker *w = &sw->w;
    w->now = uv_now(&w->loop);
    worker_update_date(w);
    accesslog_flush();
    gw_snap_refresh(&w->snap);
    worker_expire(w);
    if (!w->stopping) accept_tick(sw);
    if (w->stopping) {
        if (w->now >= sw->stop_deadline && w->nclients) {
            log_warn("stopping: closing %u unfinished connection(s)", w->nclients);
            http_worker_close_all(w);
        }
        worker_settle(w);
        if (!w->nclients && !sw->finished) worker_finish(sw);
    }
}

static void on_wakeup(uv_async_t *a)
{
    struct srv_worker *sw = a->data;
    struct worker *w = &sw->w;
    if (w->stopping) return;
    sw->stop_deadline = w->now + STOP_GRACE_MS;
    for (int j = 0; j < sw->nlisteners; j++) close(sw->listeners[j].fd); /* leaves the set */
    sw->nlisteners = 0;
    sw->watching = 0;
    http_worker_stop(w);
    if (hooks.worker_stopping) hooks.worker_stopping(w);
    worker_settle(w);
    if (!w->nclients) worker_finish(sw);
}

/* One turn: wait in the worker's epoll set, handle what came, deliver what that posted,
 * free what it closed, and run libuv when it has work (its backend fd is ready, a timer
 * is due, handles are closing). */
static void worker_main(void *arg)
{
    struct srv_worker *sw = arg;
    struct worker *w = &sw->w;
    uv_loop_t *loop = &w->loop;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, uv_backend_fd(loop), &e);
    uv_run(loop, UV_RUN_NOWAIT);
    worker_settle(w);
    for (;;) {
        struct epoll_event ev[128];
        int n = epoll_wait(w->epfd, ev, 128, uv_backend_timeout(loop));
        int run_uv = n <= 0;
        uv_update_time(loop);
        w->now = uv_now(loop);
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (!p) {
                run_uv = 1;
            } else if ((uintptr_t)p & LISTENER_TAG) {
                on_accept((struct listener *)((uintptr_t)p & ~(uintptr_t)LISTENER_TAG));
            } else {
                struct conn *c = p;
                if (c->state == CS_CLOSED) continue; /* closed earlier in this batch */
                unsigned events = ev[i].events;
                if (events & (EPOLLERR | EPOLLHUP)) /* let the I/O find out what happened */
                    events |= c->events;
                c->ev = (uint8_t)events;
                c->ops->run(c);
            }
        }
        worker_settle(w); /* nothing of this batch is referred to any more */
        if (sw->at_cap && atomic_load(&nclients) < max_clients(w)) { /* ours closed */
            sw->at_cap = 0;
            listeners_update(sw);
        }
        if (run_uv || uv_backend_timeout(loop) == 0) {
            uv_run(loop, UV_RUN_NOWAIT);
            worker_settle(w);
        }
        if (sw->finished && !uv_loop_alive(loop)) break;
    }
    if (hooks.worker_exit) {
        hooks.worker_exit(w);
        worker_settle(w);
        uv_run(&w->loop, UV_RUN_DEFAULT); /* let closed handles finish */
    }
    accesslog_flush();
    worker_cleanup(w);
}

unsigned server_default_max_connections(void)
{
    /* a proxied client may hold one upstream connection: two descriptors each, after
     * FD_RESERVE for everything else */
    struct rlimit rl;
    rlim_t n = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
    if (n == RLIM_INFINITY || n > 20000000) n = 20000000;
    rlim_t m = n > FD_RESERVE + 32 ? (n - FD_RESERVE) / 2 : 16;
    return (unsigned)m;
}

int server_start(const struct server_config *cfg, char *err, size_t errlen)
{
    nworkers = cfg->threads;
    default_max_conns = server_default_max_connections();
    workers = calloc((size_t)nworkers, sizeof *workers);
    if (!workers) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    if (open_listeners(cfg->host, cfg->https_port, 1, err, errlen) != 0) return -1;
    if (cfg->http_port && open_listeners(cfg->host, cfg->http_port, 0, err, errlen) != 0)
        return -1;
    struct gw_snap *snap = gw_snap_acquire();
    if (snap && snap->max_connections)
        log_info("at most %u client connections (max-connections)", snap->max_connections);
    else
        log_info("at most %u client connections (max-connections: half the open-files limit "
                 "less 128 descriptors)", default_max_conns);
    gw_snap_release(snap);
    for (int i = 0; i < nworkers; i++) {
        struct srv_worker *sw = &workers[i];
        struct worker *w = &sw->w;
        if (worker_init(w, gw_snap_acquire()) != 0) {
            err_set(err, errlen, "cannot create an event loop: %s", strerror(errno));
            return -1;
        }
        w->srv = sw;
        w->gw_clients = &nclients;
        uv_async_init(&w->loop, &sw->wakeup, on_wakeup);
        sw->wakeup.data = sw;
        uv_timer_init(&w->loop, &sw->tick);
        sw->tick.data = sw;
        uv_timer_start(&sw->tick, on_tick, TICK_MS, TICK_MS);
        for (int j = 0; j < sw->nlisteners; j++) {
            if (listener_watch(&sw->listeners[j], EPOLL_CTL_ADD, 1) != 0) {
                err_set(err, errlen, "cannot watch a listener: %s", strerror(errno));
                return -1;
            }
        }
        sw->watching = 1;
    }
    if (cfg->after_bind && cfg->after_bind(cfg->after_bind_arg, err, errlen) != 0) return -1;
    for (int i = 0; i < nworkers; i++) {
        if (uv_thread_create(&workers[i].thread, worker_main, &workers[i]) != 0) {
            err_set(err, errlen, "cannot start worker thread %d", i);
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
