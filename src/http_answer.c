/* http_answer.c - the answers of an exchange: buffered (http_respond), streamed
 * (http_stream_*: chunked or sized, back-pressure through on_drain), error answers that
 * end the connection, and the head they all share (Date, Server, Connection) (see http.h,
 * http_int.h). */
#include "http.h"
#include "http_int.h"

#include "gw.h"
#include "log.h"
#include "strfmt.h"
#include "tls.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----- output ----- */


void http_out_put(struct hconn *h, const void *p, size_t n)
{
    if (conn_out_put(&h->c, p, n) != 0) conn_close(&h->c);
}

/* prefix, v in base 10 or 16, suffix: one line such as "Content-Length: 7\r\n" */
static void out_num(struct hconn *h, const char *prefix, unsigned long long v, unsigned base,
                    const char *suffix)
{
    char line[64];
    struct strfmt f = {line, 0, sizeof line, 0};
    strfmt_str(&f, prefix);
    strfmt_num(&f, v, base);
    strfmt_str(&f, suffix);
    http_out_put(h, line, f.len);
}

/* Status line and the headers every answer carries (Date and Server only on our own
 * answers, not on relayed ones). */
static void out_head(struct hconn *h, struct http_exchange *x, int status, const char *reason,
                     int close, int own)
{
    struct worker *w = h->c.w;
    out_num(h, "HTTP/1.1 ", (unsigned)status, 10, " ");
    const char *r = reason && *reason ? reason : http_reason(status);
    http_out_put(h, r, strlen(r));
    http_out_put(h, "\r\n", 2);
    if (own) {
        http_out_put(h, w->date, strlen(w->date));
        http_out_put(h, "Server: certgate\r\n", 18);
        if (h->c.ssl && w->snap->session_reused_header)
            http_out_put(h,
                         tls_conn_resumed(h->c.ssl) ? "X-Session-Reused: 1\r\n"
                                                    : "X-Session-Reused: 0\r\n",
                         21);
    }
    if (close)
        http_out_put(h, "Connection: close\r\n", 19);
    else if (x->req.http_minor == 0)
        http_out_put(h, "Connection: keep-alive\r\n", 24);
}

/* Whether the connection ends after this answer. */
static int answer_closes(struct http_exchange *x)
{
    struct hconn *h = x->h;
    /* a request without a body is whole once its headers are in; an answer given before
     * a body was read ends the connection (the body is not read) */
    int whole = x->complete || (x->headers_done && !x->req.chunked && x->req.content_length <= 0);
    /* after the client's EOF only the last request it sent says close; the pipelined
     * ones before it are answered first (RFC 9112 9.6: nothing may follow a close) */
    return !x->keep_alive || !whole || h->draining ||
           (h->c.peer_eof && h->c.rpos == h->c.rlen);
}

/* The answer is complete: the connection picks that up in its next run. */
static void x_mark_done(struct http_exchange *x)
{
    x->done = 1;
    if (x->h && !x->h->in_run) conn_post(&x->h->c);
}

void http_respond(struct http_exchange *x, int status, const char *ctype, const char *extra,
                  const void *body, size_t len)
{
    if (x->done || x->streaming) return;
    struct hconn *h = x->h;
    x->status = status;
    if (!h) { /* the client went away while we worked */
        x->done = 1;
        http_x_release(x);
        return;
    }
    int close = answer_closes(x);
    if (close) h->close_after = 1;
    size_t start = h->c.olen;
    out_head(h, x, status, NULL, close, 1);
    if (ctype) {
        http_out_put(h, "Content-Type: ", 14);
        http_out_put(h, ctype, strlen(ctype));
        http_out_put(h, "\r\n", 2);
    }
    out_num(h, "Content-Length: ", len, 10, "\r\n");
    if (extra) http_out_put(h, extra, strlen(extra));
    http_out_put(h, "\r\n", 2);
    if (!x->req.head) http_out_put(h, body, len);
    x->bytes_out = h->c.olen - start;
    x_mark_done(x);
}

void http_respond_text(struct http_exchange *x, int status, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n > sizeof msg - 2) n = (int)sizeof msg - 2;
    msg[n++] = '\n';
    http_respond(x, status, "text/plain; charset=utf-8", NULL, msg, (size_t)n);
}

void http_stream_begin(struct http_exchange *x, int status, const char *reason, const char *head,
                       int64_t content_length)
{
    struct hconn *h = x->h;
    if (!h || x->streaming || x->done) return;
    x->streaming = 1;
    x->status = status;
    int nobody = x->req.head || status == 204 || status == 304 || status < 200;
    int close = answer_closes(x);
    if (!nobody && content_length < 0) {
        if (x->req.http_minor >= 1)
            x->stream_chunked = 1;
        else
            close = 1; /* HTTP/1.0: the end of the body is the end of the connection */
    }
    x->stream_nobody = (unsigned)nobody;
    if (close) h->close_after = 1;
    size_t start = h->c.olen;
    x->stream_mark = h->c.out_total + conn_queued(&h->c);
    out_head(h, x, status, reason, close, 0);
    if (head) http_out_put(h, head, strlen(head));
    if (content_length >= 0 && status >= 200)
        out_num(h, "Content-Length: ", (unsigned long long)content_length, 10, "\r\n");
    if (x->stream_chunked) http_out_put(h, "Transfer-Encoding: chunked\r\n", 28);
    http_out_put(h, "\r\n", 2);
    x->bytes_out += h->c.olen - start;
    /* the head goes out with the first piece of body (one packet, as the upstream sent
     * it), or now when there is none */
    if (nobody || content_length == 0) conn_post(&h->c);
}

size_t http_stream_write(struct http_exchange *x, const void *p, size_t n)
{
    struct hconn *h = x->h;
    if (!h || h->c.state != CS_ACTIVE) return 0;
    struct conn *c = &h->c;
    if (n && !x->stream_nobody && !x->stream_chunked && conn_queued(c) == 0 && !c->want_write) {
        /* nothing queued: straight from the caller's buffer to the socket, no copy */
        ssize_t w = conn_write_direct(c, p, n);
        if (w < 0) {
            conn_close(c);
            return 0;
        }
        if ((size_t)w < n) http_out_put(h, (const char *)p + w, n - (size_t)w);
        x->bytes_out += n;
        if (c->want_write && (w > 0 || c->tq != TQ_WRITE)) http_arm(h, TQ_WRITE);
        if (c->want_write) conn_post(c); /* its run asks for writable */
    } else if (n && !x->stream_nobody) {
        size_t start = c->olen - c->opos;
        if (x->stream_chunked) out_num(h, "", n, 16, "\r\n");
        http_out_put(h, p, n);
        if (x->stream_chunked) http_out_put(h, "\r\n", 2);
        x->bytes_out += c->olen - c->opos - start;
        if (conn_flush(c, 1) < 0) {
            conn_close(c);
            return 0;
        }
        if (conn_queued(c)) conn_post(c);
    }
    size_t queued = conn_queued(c);
    /* from the latest state: a flush in between may have emptied the buffer, and then no
     * drain event would ever come to undo a stale "wait" */
    x->want_drain = queued >= CONN_OUT_HIGH;
    return queued;
}

void http_stream_end(struct http_exchange *x)
{
    struct hconn *h = x->h;
    if (!h || !x->streaming || x->done) return;
    if (x->stream_chunked && !x->stream_nobody) {
        http_out_put(h, "0\r\n\r\n", 5);
        x->bytes_out += 5;
    }
    if (!x->complete) h->close_after = 1; /* the rest of the request body is not read */
    x_mark_done(x);
}

int http_stream_retract(struct http_exchange *x)
{
    struct hconn *h = x->h;
    if (!h || h->c.state != CS_ACTIVE || !x->streaming || x->done) return -1;
    struct conn *c = &h->c;
    if (c->out_total > x->stream_mark) return -1;
    c->olen = c->opos + (size_t)(x->stream_mark - c->out_total); /* what was queued before */
    x->streaming = x->stream_chunked = x->stream_nobody = x->want_drain = 0;
    x->status = 0;
    x->bytes_out = 0;
    return 0;
}

void http_pause_body(struct http_exchange *x)
{
    struct hconn *h = x->h;
    if (!h || h->body_paused) return;
    h->body_paused = 1; /* on_body pauses the parser when the route returns */
    x->paused_at = h->c.w->now; /* the client is not to blame for this time */
}

void http_resume_body(struct http_exchange *x)
{
    struct hconn *h = x->h;
    if (!h || !h->body_paused) return;
    h->body_paused = 0;
    x->rate_t0 += h->c.w->now - x->paused_at;
    if (!x->complete) llhttp_resume(&h->parser);
    conn_post(&h->c);
}

void http_abort(struct http_exchange *x)
{
    struct hconn *h = x->h;
    x->route.on_abort = NULL; /* the route asked for it; do not call it back */
    if (h) conn_close(&h->c);
}

/* An answer produced by the HTTP layer itself (errors), when no route answers. */
void http_answer_error(struct hconn *h, int status, const char *msg)
{
    struct http_exchange *x = h->x;
    if (!x) {
        x = h->x = http_x_new(h);
        if (!x) {
            conn_close(&h->c);
            return;
        }
    }
    if (x->streaming || x->done) { /* too late for an answer */
        h->close_after = 1;
        x->done = 1;
        return;
    }
    x->keep_alive = 0;
    http_error_fn fn = x->headers_done ? x->route.on_error
                       : x->req.target && http_error_router_cur
                           ? http_error_router_cur(x->req.target)
                           : NULL;
    if (fn)
        fn(x, status, msg);
    else
        http_respond_text(x, status, "%s", msg);
    h->close_after = 1;
}
