/* conn.h - a client connection and its worker (internal to server.c and http.c). */
#ifndef CERTGATE_CONN_H
#define CERTGATE_CONN_H

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

#include <http_parser.h>

struct gw_snap;
struct ssl_st;
struct http_exchange;

enum conn_state { CS_HANDSHAKE, CS_ACTIVE, CS_LINGER, CS_CLOSED };

/* timeout queues: each holds connections in deadline order (fixed duration per kind) */
enum tq_kind { TQ_HEADER, TQ_KEEPALIVE, TQ_BODY, TQ_WRITE, TQ_LINGER, TQ_N, TQ_NONE = TQ_N };

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

struct tqueue {
    struct conn *head, *tail;
};

#define RBUF_SIZE (16 * 1024)

struct conn {
    struct worker *w;
    int fd;
    struct ssl_st *ssl; /* NULL on the plain HTTP listener */
    uint8_t state;      /* enum conn_state */
    uint8_t tq;         /* enum tq_kind */
    uint8_t events;     /* EPOLLIN/EPOLLOUT currently asked for (registered when non-zero) */
    unsigned want_read : 1;   /* the HTTP layer wants input now */
    unsigned want_write : 1;  /* output blocked: wait for writable */
    unsigned read_wants_write : 1; /* TLS read needs the socket writable */
    unsigned close_after : 1; /* close once the output is flushed */
    unsigned peer_eof : 1;    /* the client closed its side */
    unsigned draining : 1;    /* server stopping: last request on this connection */
    unsigned more_input : 1;  /* the last read filled the buffer: read again */
    unsigned body_paused : 1; /* streaming route asked to stop reading the body */
    unsigned in_run : 1;      /* http_conn_run is on the stack */
    unsigned rerun : 1;       /* something changed while it was */
    unsigned kick : 1;        /* run again at the next loop iteration (budget used up) */
    struct conn *prev, *next;       /* worker's list of connections */
    struct conn *tq_prev, *tq_next; /* timeout queue links */
    uint64_t deadline;              /* loop ms */
    char *rbuf;                     /* RBUF_SIZE bytes, only while needed */
    uint32_t rpos, rlen;
    char *obuf; /* pending output */
    size_t opos, olen, ocap;
    http_parser parser;
    struct http_exchange *x; /* the request being read or answered */
    uint64_t requests;       /* served on this connection */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
};

struct listener {
    int fd;
    int tls;
    struct worker *w;
};

struct worker {
    uv_loop_t loop;
    /* The worker's own epoll set: client connections, listeners and libuv's backend fd.
     * The worker waits in it (one epoll_wait per turn) and runs libuv only when libuv has
     * something to do (timers, wake-ups, thread-pool answers, upstream sockets). */
    int epfd;
    int finished; /* worker_finish() ran: leave once libuv is idle */
    struct conn *graveyard; /* closed connections, freed once no event can refer to them */
    uv_thread_t thread;
    uv_async_t wakeup;
    uv_timer_t tick;
    struct listener listeners[2];
    int nlisteners;
    struct conn *conns;
    unsigned nconns;
    struct tqueue tq[TQ_N];
    struct gw_snap *snap;
    int stopping;
    uint64_t stop_deadline;
    uint64_t accept_paused_until;
    char date[64]; /* "Date: ...\r\n" */
    int64_t date_sec;
    struct freelist bufs; /* RBUF_SIZE buffers */
    struct freelist xs;   /* exchanges */
    void *app; /* per-worker state of the routes (the proxy's pools) */
};

/* server.c */
void conn_update_poll(struct conn *c);
void conn_close(struct conn *c);
/* Ends the connection after the last answer: close_notify, then either close at once or,
 * when linger is set (the client may still be sending), send FIN and read and drop what
 * still comes for up to 2 s, so that unread request bytes cannot turn the close into a
 * reset that destroys the answer before the client has read it. */
void conn_finish(struct conn *c, int linger);
void conn_set_timeout(struct conn *c, enum tq_kind kind);
unsigned conn_timeout_ms(const struct conn *c, enum tq_kind kind);
void *worker_buf_get(struct worker *w);
/* Gives the output buffer back (to the worker's free list when it is one of its
 * RBUF_SIZE buffers); c->obuf becomes NULL. */
void conn_obuf_release(struct conn *c);
void worker_buf_put(struct worker *w, void *buf);
/* Reads into c->rbuf; >0 bytes read, 0 would block, -1 EOF, -2 error. */
int conn_read(struct conn *c);
/* Writes c->obuf; 0 flushed (or blocked: want_write set), -1 error. */
int conn_flush(struct conn *c);
/* Writes p straight to the socket (no copy) when nothing is queued before it: returns
 * the bytes written (fewer than n when the socket is full: want_write is then set and the
 * caller queues the rest, which OpenSSL accepts as the retry), or -1 on error. */
ssize_t conn_write_direct(struct conn *c, const void *p, size_t n);

/* http.c */
void http_conn_init(struct conn *c);
/* Parses and answers what is buffered, reads more while it may; called after every
 * event on an established connection. */
void http_conn_run(struct conn *c);
/* Connection timed out in queue kind. */
void http_conn_timeout(struct conn *c, enum tq_kind kind);
/* The connection is going away: release the exchange (aborting a streaming route). */
void http_conn_release(struct conn *c);
/* 1 when the connection is between requests (safe to close on shutdown). */
int http_conn_idle(const struct conn *c);

#endif
