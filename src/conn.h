/* conn.h - the connection core shared by both sides of the gateway, and the worker that
 * owns connections.
 *
 * One struct conn serves a client connection (http.c) and an upstream connection
 * (upclient.c): socket + optional TLS (or an in-memory transport in tests), input buffer,
 * output queue with a hard cap, poll interest in the worker's epoll set, one timeout link,
 * flush and close. The layer above plugs in through struct conn_ops.
 *
 * The lifetime rule: nothing is freed inside a call. conn_close() only marks the
 * connection closed (every later I/O call on it is a no-op) and posts it; the worker
 * delivers ops->closed after the callback that closed it has returned, then frees it
 * from its reclaim list once no event of the current batch can name it. Other objects
 * (exchanges, proxied requests) are freed the same way through worker_reclaim_later().
 * Notifications between layers are posts: set a flag, conn_post() the connection that
 * must act; its ops->run is called from the worker's top level, never from inside the
 * caller.
 *
 * Threading: a worker and everything it owns belong to one thread; every function here
 * is called on that thread. */
#ifndef CERTGATE_CONN_H
#define CERTGATE_CONN_H

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <uv.h>

struct gw_snap;
struct ssl_st;
struct memio;
struct conn;
struct worker;

enum conn_state { CS_CONNECTING, CS_HANDSHAKE, CS_ACTIVE, CS_LINGER, CS_CLOSED };

/* Timeout queues, each in deadline order. */
enum tq_kind {
    TQ_HEADER,    /* client: TLS handshake or request head */
    TQ_KEEPALIVE, /* client: between requests */
    TQ_BODY,      /* client: request body progress (body-timeout, min-rate overall) */
    TQ_WRITE,     /* client: answer progress (body-timeout, min-rate overall) */
    TQ_LINGER,    /* client: draining after the last answer */
    TQ_CONNECT,   /* upstream: connect + TLS handshake, or the wait for a free connection */
    TQ_UPREAD,    /* upstream: answer progress (read-timeout; not while the client is slow) */
    TQ_UPIDLE,    /* upstream: idle in the pool */
    TQ_N,
    TQ_NONE = TQ_N
};

/* A worker's cache of freed blocks of one size, linked through the blocks themselves,
 * at most a given number long. One thread only. */
struct freelist {
    void *head;
    unsigned n;
};

static inline void *freelist_get(struct freelist *l)
{
    void *b = l->head;
    if (b) {
        l->head = *(void **)b;
        l->n--;
    }
    return b;
}

/* Keeps b (1), or 0 when the list already holds max: then the caller frees b. */
static inline int freelist_put(struct freelist *l, void *b, unsigned max)
{
    if (l->n >= max) return 0;
    *(void **)b = l->head;
    l->head = b;
    l->n++;
    return 1;
}

static inline void freelist_drain(struct freelist *l)
{
    for (void *b; (b = freelist_get(l));) free(b);
}

/* An object to be freed by the worker after the current batch (see worker_reclaim_later). */
struct reclaim {
    struct reclaim *next;
    void (*fn)(struct reclaim *);
};

struct tqueue {
    struct conn *head, *tail;
};

#define RBUF_SIZE (16 * 1024)
/* The high-water mark of every output queue: above it the producer pauses (the source
 * stops reading until the queue has drained). */
#define CONN_OUT_HIGH (256 * 1024)
/* Largest single read a producer may add after the mark. */
#define CONN_READ_MAX (256 * 1024)
/* The hard cap: an append beyond it fails and the connection is closed (a bug guard;
 * back-pressure keeps every queue below it). 4 KiB of slack for framing. */
#define CONN_OUT_CAP (CONN_OUT_HIGH + CONN_READ_MAX + 4096)

/* What the layer above a connection provides. */
struct conn_ops {
    /* The socket is ready (c->ev says how), or the connection was posted: make progress. */
    void (*run)(struct conn *c);
    /* The armed timeout of kind k passed (the connection is no longer in a queue). */
    void (*timeout)(struct conn *c, enum tq_kind k);
    /* Once, after conn_close, from the worker's top level: release links to other
     * objects (abort the peer side). The socket is still open, the buffers still there. */
    void (*closed)(struct conn *c);
    /* Frees the containing object (reclaim). NULL: free(c). */
    void (*destroy)(struct conn *c);
};

struct conn {
    struct worker *w;
    const struct conn_ops *ops;
    int fd;             /* -1 with the in-memory transport */
    struct ssl_st *ssl; /* NULL: plain */
    struct memio *mem;  /* in-memory transport (tests), else NULL */
    uint8_t state;      /* enum conn_state */
    uint8_t tq;         /* enum tq_kind */
    uint8_t events;     /* EPOLLIN/EPOLLOUT currently asked for */
    uint8_t ev;         /* the events of the last readiness report (0 for a post) */
    unsigned want_read : 1;        /* the layer wants input now */
    unsigned want_write : 1;       /* output blocked: wait for writable */
    unsigned read_wants_write : 1; /* TLS read needs the socket writable */
    unsigned kick : 1;             /* run again at the next loop turn (budget used up) */
    unsigned more_input : 1;       /* input may be waiting (readable, or a full last read) */
    unsigned peer_eof : 1;         /* the peer closed its side */
    unsigned posted : 1;           /* on the worker's posted list */
    unsigned closed_done : 1;      /* ops->closed delivered */
    unsigned blocked : 1;          /* output waits for the peer (since blocked_since) */
    unsigned metered : 1;          /* a client connection: its bytes go to the metrics */
    struct conn *post_next;
    struct conn *tq_prev, *tq_next; /* timeout queue links */
    uint64_t deadline;              /* worker ms */
    char *rbuf;                     /* RBUF_SIZE bytes, only while needed */
    uint32_t rpos, rlen;
    char *obuf; /* pending output */
    size_t opos, olen, ocap;
    uint64_t out_total; /* bytes written to the transport, ever */
    uint64_t in_total;  /* bytes read from the transport, ever */
    /* time spent with output waiting for the peer to take it (min-rate of slow readers):
     * blocked_ms closed periods, plus now - blocked_since while blocked */
    uint64_t blocked_ms, blocked_since;
    struct reclaim rc;
};

struct worker {
    uv_loop_t loop;
    /* The worker's own epoll set: client and upstream connections, listeners and
     * libuv's backend fd. The worker waits in it (one epoll_wait per turn) and runs
     * libuv only when libuv has something to do (timers, wake-ups, thread-pool answers). */
    int epfd;
    uint64_t now; /* ms, updated once per loop turn (set by hand in tests) */
    struct conn *post_head, *post_tail;
    struct reclaim *reclaim;
    struct tqueue tq[TQ_N];
    struct gw_snap *snap;
    char date[64]; /* "Date: ...\r\n" */
    int64_t date_sec;
    struct freelist bufs; /* RBUF_SIZE buffers */
    struct freelist xs;   /* exchanges */
    void *app;            /* per-worker state of the routes (the proxy's pools) */
    /* Tests: makes the transport of a new upstream connection instead of a socket. */
    struct memio *(*connect_hook)(struct worker *w, void *arg);
    void *connect_arg;
    /* client connections (http.c's list) */
    void *clients;
    unsigned nclients;
    /* the gateway-wide count of client connections (server.c's, shared by every worker),
     * decremented when one closes; NULL in tests */
    _Atomic unsigned *gw_clients;
    int stopping; /* graceful stop: answers end their connections, idle ones close */
    /* server.c's own (listeners, stop deadline) */
    void *srv;
};

/* ----- the worker ----- */

/* Prepares w (loop, epoll set, queues) without a thread or listeners: for server.c and
 * for tests that drive connections by hand. snap is taken over (may be NULL). 0 / -1. */
int worker_init(struct worker *w, struct gw_snap *snap);
/* Frees what worker_init made (connections must be gone). */
void worker_cleanup(struct worker *w);
/* Delivers posted runs and close notifications, then frees the reclaim list, until both
 * are empty. Called at the worker's top level only. */
void worker_settle(struct worker *w);
/* Fires the timeouts due at w->now. */
void worker_expire(struct worker *w);
/* Frees obj->fn(obj) at the next worker_settle. */
void worker_reclaim_later(struct worker *w, struct reclaim *obj, void (*fn)(struct reclaim *));
void *worker_buf_get(struct worker *w);
void worker_buf_put(struct worker *w, void *buf);
/* The "Date: ...\r\n" line of the current second. */
void worker_update_date(struct worker *w);

/* ----- connections ----- */

/* Sets up c on w (fd may be -1 with mem set). Not yet in any list or queue. */
void conn_init(struct conn *c, struct worker *w, const struct conn_ops *ops, int fd);
/* Queues c->ops->run for the worker's top level (once, however often called). */
void conn_post(struct conn *c);
/* Marks c closed and posts it; see the lifetime rule above. Idempotent. */
void conn_close(struct conn *c);
/* conn_close, and the socket is reset when it closes (SO_LINGER 0): what is still in the
 * kernel's send queue is dropped instead of being delivered to a peer too slow to take
 * it (which would keep it for as long again). */
void conn_reset(struct conn *c);
/* Makes the epoll interest match the state and flags. */
void conn_update_poll(struct conn *c);
/* (Re)arms the single timeout of c: kind k in ms from now; TQ_NONE disarms. */
void conn_set_timeout(struct conn *c, enum tq_kind k, unsigned ms);
/* Drives the TLS handshake: 1 done, 0 waiting (read_wants_write tells which way), -1
 * failed (the reason on OpenSSL's queue). */
int conn_handshake(struct conn *c);
/* Reads into c->rbuf (taken from the worker when NULL); >0 bytes read, 0 would block,
 * -1 end of stream, -2 error. Sets more_input when more may be waiting. */
int conn_read(struct conn *c);
/* Reads up to room bytes into p: the same answers as conn_read. */
int conn_read_into(struct conn *c, char *p, size_t room);
/* 1 when the transport holds input that epoll cannot see (TLS read-ahead). */
int conn_pending(const struct conn *c);
/* Appends to the output queue; -1 when it would pass CONN_OUT_CAP or memory is short
 * (the caller closes the connection). */
int conn_out_put(struct conn *c, const void *p, size_t n);
/* Bytes queued and not yet written. */
static inline size_t conn_queued(const struct conn *c)
{
    return c->olen - c->opos;
}
/* Writes the queue: 0 flushed or blocked (want_write set), -1 error. keep_buf: keep an
 * emptied buffer (more output follows soon). */
int conn_flush(struct conn *c, int keep_buf);
/* Writes p straight to the transport when nothing is queued before it: the bytes
 * written (fewer than n when it is full: want_write is then set and the caller queues
 * the rest), or -1 on error. */
ssize_t conn_write_direct(struct conn *c, const void *p, size_t n);
/* Milliseconds this connection's output has waited for the peer, ever (conn_write_direct
 * found the transport full, until a flush emptied the queue). */
uint64_t conn_blocked_ms(const struct conn *c);
/* Bytes written to the transport that the peer has not acknowledged yet (the socket's
 * send queue); 0 for the in-memory transport or when unknown. */
size_t conn_unacked(const struct conn *c);
/* Gives the output buffer back. */
void conn_obuf_release(struct conn *c);
/* Sends close_notify (TLS; best effort, also from ops->closed). */
void conn_close_notify(struct conn *c);
/* Sends close_notify (TLS) and FIN; 0, or -1 when the socket is gone. */
int conn_shutdown_write(struct conn *c);
/* Reads and drops input (lingering close): 1 the peer has finished (EOF or error), 0
 * not yet. */
int conn_drain_input(struct conn *c);

#endif
