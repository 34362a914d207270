/* upclient.h - the upstream client: connections to the upstream on the connection core
 * (conn.h), a keep-alive pool per worker, writing a request, parsing its answer.
 *
 * The proxy (proxy.c) takes a connection with up_acquire, queues the request's bytes
 * with up_send, and hears back through its struct up_handler, always from the upstream
 * connection's own run (or close), never from inside a call it made. A connection whose
 * answer completed goes back to the pool (or closes); one that fails closes, and the
 * handler is told once. After on_complete or on_error the handler is detached: the
 * connection never names its request again.
 *
 * Threading: everything runs on the worker thread that owns the pool. */
#ifndef CERTGATE_UPCLIENT_H
#define CERTGATE_UPCLIENT_H

#include <stddef.h>
#include <stdint.h>

struct upconn;
struct upstream;
struct worker;

/* What a request hears from its upstream connection. ctx is the handler's own. */
struct up_handler {
    /* The answer's status line and header block: lines "Name: value\r\n" as received
     * (NUL-terminated); content_length -1 when the answer has none. */
    void (*on_head)(void *ctx, int status, const char *reason, const char *lines,
                    int64_t content_length);
    /* A piece of the answer's body; returns 1 to stop reading until up_resume_read. */
    int (*on_body)(void *ctx, const char *p, size_t n);
    /* The answer is complete (the connection is already back in the pool or closed). */
    void (*on_complete)(void *ctx);
    /* The exchange failed; the connection is closed. status: 502, 503 (waited in the
     * queue for connect-timeout) or 504 (on_head may
     * have come already: the answer broke off in the middle). retryable: a pooled connection
     * broke before any byte of an answer (a retry on a new one is safe for idempotent
     * requests). msg says what happened, naming the upstream. */
    void (*on_error)(void *ctx, int status, const char *msg, int retryable);
    /* The request's queue drained below UP_OUT_LOW after up_send asked to pause. */
    void (*on_drain)(void *ctx);
};

/* up_send asks the caller to pause its source above CONN_OUT_HIGH (conn.h); on_drain
 * comes below this. */
#define UP_OUT_LOW (64 * 1024)

/* A connection to t for one request: an idle pooled one when allow_pooled (and one is
 * there), else a new one (connecting). head_req: the answer has no body.
 * The worker keeps at most t's max-connections connections open (in flight and idle);
 * when all are in use, the request waits in a queue of at most queue-size (oldest first)
 * for one to come free (an idle one's socket is handed over, or a new one opened after a
 * close). The returned object then has no socket yet, but takes up_send and the rest as
 * usual; after connect-timeout in the queue, on_error says 503. up_close drops it from
 * the queue. Returns NULL with a sentence in err and the status to answer in *status
 * (503: the queue is full; 502: no connection could be started). */
struct upconn *up_acquire(struct worker *w, struct upstream *t, int allow_pooled, int head_req,
                          const struct up_handler *h, void *ctx, int *status, char *err,
                          size_t errlen);
/* Queues request bytes, written as soon as the connection can take them (more: further
 * bytes follow at once; write them together). Returns 1 when the caller should stop
 * sending until on_drain. */
int up_send(struct upconn *u, const void *p, size_t n, int more);
/* The request is complete: the read timeout runs from now. */
void up_end_request(struct upconn *u);
/* Resumes reading the answer after on_body asked to stop (posted: takes effect after the
 * caller returns). */
void up_resume_read(struct upconn *u);
/* Abandons the request: the handler is detached and the connection closed. */
void up_close(struct upconn *u);

/* Worker hooks: close the idle pooled connections (stopping); free the pool (exit). */
void up_pool_stopping(struct worker *w);
void up_pool_free(struct worker *w);

#endif
