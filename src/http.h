/* http.h - the HTTP/1.1 server side, as route handlers see it.
 *
 * A request is parsed by llhttp and checked by reqcheck.c; when its header block is
 * complete and valid the router (app.c) picks a route. A buffered route gets the whole body (up to its limit) and is
 * called once; it answers with http_respond*() right away or later from the same loop
 * thread (e.g. after work in the thread pool). A streaming route (the proxy) gets the
 * body piece by piece and writes its answer piece by piece.
 *
 * Threading: an exchange belongs to the worker thread that accepted its connection;
 * every function here must be called on that thread. */
#ifndef CERTGATE_HTTP_H
#define CERTGATE_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct http_header {
    const char *name;
    const char *value;
    size_t name_len;
    size_t value_len;
};

struct http_request {
    int method;              /* llhttp_method_t (HTTP_GET ...) of llhttp.h */
    const char *method_name; /* "GET" ... */
    const char *target;      /* raw request-target, NUL-terminated */
    const char *path;        /* target up to '?', NUL-terminated, not decoded */
    const char *query;       /* after '?', or NULL */
    const struct http_header *headers;
    unsigned nheaders;
    unsigned short http_major, http_minor;
    int64_t content_length; /* -1 when absent */
    unsigned chunked : 1, expect_continue : 1, head : 1, tls : 1;
    const char *body; /* buffered routes: the whole body (NUL-terminated), else NULL */
    size_t body_len;
};

struct http_exchange;

/* The request of an exchange (valid until the response has been completed). */
const struct http_request *http_req(const struct http_exchange *x);
/* The value of the last header named `name` (case-insensitive), or NULL. */
const char *http_header(const struct http_request *r, const char *name);
/* The client's address as text ("127.0.0.1", "::1"). */
const char *http_peer(struct http_exchange *x);
struct sockaddr;
/* The client's address (AF_INET or AF_INET6), or NULL once the client is gone. */
const struct sockaddr *http_peer_addr(const struct http_exchange *x);
/* The event loop of the exchange's thread (uv_loop_t *), for uv_queue_work. */
void *http_loop(struct http_exchange *x);
/* Records the upstream's time for the access log. */
void http_set_upstream_ms(struct http_exchange *x, int64_t ms);
struct worker;
/* The worker (conn.h) the exchange belongs to. */
struct worker *http_worker(struct http_exchange *x);
/* 1 when the client is gone (or going): nothing written reaches it any more. */
int http_gone(const struct http_exchange *x);

struct http_route {
    /* Buffered routes: called once the whole body is in req->body. */
    void (*handle)(struct http_exchange *x);
    size_t max_body; /* a larger body is answered 413 (at once when its length is known) */
    /* Buffered routes, optional: called when the header block is complete, before any
     * body is read (and before 100 Continue is sent). When it answers (e.g. 401), the
     * body is not read and handle is not called. */
    void (*on_headers)(struct http_exchange *x);
    /* Streaming routes (handle == NULL): */
    void (*on_start)(struct http_exchange *x);                       /* headers complete */
    void (*on_body)(struct http_exchange *x, const char *p, size_t n); /* a piece of body */
    void (*on_end)(struct http_exchange *x);                         /* body complete */
    /* Notifications (see conn.h: the lifetime rule). Each is called from the client
     * connection's own run or close, never from inside a call the route made; a route
     * answers it by setting flags and posting its own connections, not by doing I/O
     * on other objects. */
    /* the client went away; stop and release. A buffered route whose handler has not
     * answered yet is told too, when the connection closes or the client ends its side
     * (EOF: it may have only half-closed); it must still answer (http_respond then only
     * releases the exchange, or writes to the half-closed client). Called once. */
    void (*on_abort)(struct http_exchange *x);
    void (*on_drain)(struct http_exchange *x); /* output buffer drained below the mark */
    void *ctx;                                 /* the route's per-exchange state */
    void (*on_free)(void *ctx); /* releases ctx when the exchange ends, however it ends */
    /* Optional: answers an error the HTTP layer finds after routing (413 for a body over
     * max_body, 400 for a malformed body, 408, ...) in the route's own format; msg is a
     * sentence. It must answer (http_respond); the connection closes afterwards. */
    void (*on_error)(struct http_exchange *x, int status, const char *msg);
    /* The request carries secrets (tokens, passwords): its bytes are wiped from the read
     * buffer once parsed, and its headers and body when the exchange ends. */
    unsigned wipe : 1;
    /* for the metrics: enum metrics_route (0: none) */
    unsigned metrics_route : 3;
};

struct gw_snap;
/* The exchange's route, e.g. to attach per-exchange state (ctx, on_free). */
struct http_route *http_route(struct http_exchange *x);

/* Picks the route for a request whose header block is complete (set by app.c); snap is
 * the worker's current snapshot (limits, upstream). */
typedef void (*http_router_fn)(const struct http_request *req, const struct gw_snap *snap,
                               struct http_route *out);
void http_set_router(http_router_fn router);

/* For a request refused before routing (its head failed the checks): the answer function
 * for that target (e.g. the API's JSON envelope for API paths), or NULL for plain text.
 * Set by app.c; target is the raw request target. */
typedef void (*http_error_fn)(struct http_exchange *x, int status, const char *msg);
typedef http_error_fn (*http_error_router_fn)(const char *target);
void http_set_error_router(http_error_router_fn fn);

/* ----- answers ----- */

/* A complete response. content_type may be NULL (no body type). extra_headers is a
 * block of "Name: value\r\n" lines or NULL. For HEAD requests the body is not sent.
 * Adds Date, Server, Content-Length and Connection headers. */
void http_respond(struct http_exchange *x, int status, const char *content_type,
                  const char *extra_headers, const void *body, size_t len);
/* A text/plain response whose body is the formatted sentence plus "\n". */
void http_respond_text(struct http_exchange *x, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Streaming answers (proxy). begin writes the status line and headers (head is a block
 * of "Name: value\r\n" lines from the upstream, hop-by-hop and framing ones already
 * removed, relayed as they are: no Date or Server of ours is added; the framing is
 * chosen here: Content-Length when content_length >= 0, else chunked, or the end of the
 * connection for an HTTP/1.0 client). write queues body
 * bytes; it returns the bytes now queued for the client, so the caller stops reading
 * from its source above CONN_OUT_HIGH (conn.h) and waits for on_drain. end completes it. */
void http_stream_begin(struct http_exchange *x, int status, const char *reason,
                       const char *head, int64_t content_length);
size_t http_stream_write(struct http_exchange *x, const void *p, size_t n);
void http_stream_end(struct http_exchange *x);
/* Takes back a streamed answer of which no byte has reached the client yet, so that
 * another answer (e.g. 502) can be given instead: 0 done, -1 too late (or not started). */
int http_stream_retract(struct http_exchange *x);
/* Stops / resumes reading the request body (back-pressure towards the client). */
void http_pause_body(struct http_exchange *x);
void http_resume_body(struct http_exchange *x);
/* Ends the connection now (the upstream broke in the middle of a response). */
void http_abort(struct http_exchange *x);

/* Reason phrase of a status code ("Not Found"). */
const char *http_reason(int status);

/* ----- the server side (server.c, tests) ----- */

struct conn;
struct ssl_ctx_st;
/* A new client connection on w for the accepted socket fd (or -1, then the caller
 * attaches an in-memory transport to the result before the worker settles). peer is
 * its sockaddr; tls: the context to handshake with, NULL for plain HTTP. Posted, so it
 * runs at the worker's next settle. NULL when out of memory (fd closed). The caller has
 * counted it in *w->gw_clients (when set); its close takes it off again. */
struct conn *http_accept(struct worker *w, int fd, const void *peer, size_t peerlen,
                         struct ssl_ctx_st *tls);
/* Graceful stop: idle connections close, the others end after their current answer. */
void http_worker_stop(struct worker *w);
/* Closes every client connection of w (the stop's deadline passed). */
void http_worker_close_all(struct worker *w);

#endif
