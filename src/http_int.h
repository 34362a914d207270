/* http_int.h - what http.c (the connection driver and the answers) and http_parse.c
 * (llhttp's callbacks, the request checks, dispatch) share; not for other modules. */
#ifndef CERTGATE_HTTP_INT_H
#define CERTGATE_HTTP_INT_H

#include "http.h"

#include "conn.h"

#include <stdint.h>
#include <netinet/in.h>
#include <llhttp.h>

/* The request line and header block live in the exchange's arena (RBUF_SIZE = 16 KiB,
 * the header limit: more is 431); the target alone has a smaller limit of its own (414). */
#define TARGET_LIMIT (8 * 1024)
#define MAX_HEADERS 128
#define MAX_FREE_XS 16

enum cb_kind { CB_NONE, CB_FIELD, CB_VALUE };

#define LINGER_MS 2000

struct span {
    uint32_t off, len;
};

/* A client connection: the core plus HTTP's state. */
struct hconn {
    struct conn c;
    struct hconn *prev, *next; /* the worker's client list */
    llhttp_t parser;
    struct http_exchange *x; /* the request being read or answered */
    uint8_t hscan;           /* line-ending scan of the head being read (reqcheck) */
    uint64_t requests;       /* served on this connection */
    /* min-rate of the answers: out_total (plus what was queued) and conn_blocked_ms when
     * the current request began */
    uint64_t wr_out0, wr_blk0;
    unsigned close_after : 1; /* close once the output is flushed */
    unsigned draining : 1;    /* server stopping: last request on this connection */
    unsigned body_paused : 1; /* streaming route asked to stop reading the body */
    unsigned in_run : 1;      /* its run is on the stack: it sees an answer's end itself */
    unsigned unread : 1;      /* a request ended before all of it was read: linger */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
};

struct http_exchange {
    struct hconn *h; /* NULL once the client is gone (orphan) */
    struct worker *w;
    struct http_request req;
    struct http_route route;
    char *arena; /* url and headers, NUL-separated; RBUF_SIZE bytes */
    uint32_t alen;
    struct span url;
    struct span hspan[MAX_HEADERS][2];
    struct http_header headers[MAX_HEADERS];
    unsigned nh;
    uint8_t last_cb;
    uint8_t verlen; /* bytes of "1.1" seen by on_version */
    char ver[3];
    char *body;
    size_t blen, bcap;
    int fail_status;      /* set by a callback that stops the parser */
    char fail_why[200];   /* its sentence (reqcheck), when there is one */
    unsigned headers_done : 1, complete : 1, dispatched : 1, done : 1, keep_alive : 1;
    unsigned streaming : 1, stream_chunked : 1, stream_nobody : 1, want_drain : 1;
    unsigned released : 1, rate_started : 1;
    int status;
    /* min-rate of the body: when its reading began (moved on by the time it was paused
     * for back-pressure) and the connection's in_total then */
    uint64_t rate_t0, rate_in0, paused_at;
    uint64_t stream_mark; /* the connection's out_total + queued when the answer began */
    uint64_t bytes_out;
    uint64_t start_ms;
    int64_t upstream_ms;
    char peer[48];
    struct reclaim rc;
};

extern http_router_fn http_router_cur;
extern http_error_router_fn http_error_router_cur;
extern const llhttp_settings_t http_parser_settings;

/* http.c */
struct http_exchange *http_x_new(struct hconn *h);
void http_x_log(struct http_exchange *x, int status);
void http_x_release(struct http_exchange *x);
/* (re)arms the connection's timeout of that kind */
void http_arm(struct hconn *h, enum tq_kind kind);

/* http_answer.c */
void http_out_put(struct hconn *h, const void *p, size_t n);
/* answers status with msg (text/plain) and closes the connection after it */
void http_answer_error(struct hconn *h, int status, const char *msg);

/* http_parse.c: parses what is buffered (llhttp paused at the end of each request) and
 * dispatches a complete request; a malformed one is answered with its error */
void http_parse_input(struct hconn *h);

#endif
