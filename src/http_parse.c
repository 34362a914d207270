/* http_parse.c - a request read with llhttp (strict): the callbacks that fill the
 * exchange's arena, the checks of reqcheck.c before any route sees a request, limits
 * (414, 431, 413, 505), and dispatch to the route (see http.h, http_int.h). */
#include "http.h"
#include "http_int.h"

#include "gw.h"
#include "log.h"
#include "metrics.h"
#include "reqcheck.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <llhttp.h>

/* ----- parser callbacks ----- */

static int arena_add(struct http_exchange *x, const char *p, size_t n)
{
    if (x->alen + n + 1 > RBUF_SIZE) {
        x->fail_status = 431;
        return -1;
    }
    memcpy(x->arena + x->alen, p, n);
    x->alen += (uint32_t)n;
    return 0;
}

static void arena_end_item(struct http_exchange *x)
{
    x->arena[x->alen++] = '\0';
}

static int on_message_begin(llhttp_t *p)
{
    struct hconn *h = p->data;
    if (!h->x) h->x = http_x_new(h);
    if (!h->x) return -1;
    h->x->url.off = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct http_exchange *x = ((struct hconn *)p->data)->x;
    if (x->url.len + n > TARGET_LIMIT) {
        x->fail_status = 414;
        return -1;
    }
    x->url.len += (uint32_t)n;
    return arena_add(x, at, n);
}

/* llhttp refuses versions other than 0.9, 1.0, 1.1 and 2.0 as malformed (400): a
 * well-formed "D.D" that is not 1.0 or 1.1 is 505 instead (2.0 and 0.9 are caught at the
 * end of the head). */
static int on_version(llhttp_t *p, const char *at, size_t n)
{
    struct http_exchange *x = ((struct hconn *)p->data)->x;
    for (size_t i = 0; i < n; i++) {
        if (x->verlen == sizeof x->ver) return 0;
        x->ver[x->verlen++] = at[i];
    }
    const char *v = x->ver;
    if (x->verlen == 3 && v[0] >= '0' && v[0] <= '9' && v[1] == '.' && v[2] >= '0' &&
        v[2] <= '9' && !(v[0] == '1' && (v[2] == '0' || v[2] == '1'))) {
        x->fail_status = 505;
        return -1;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct http_exchange *x = ((struct hconn *)p->data)->x;
    if (x->last_cb != CB_FIELD) {
        if (x->nh == MAX_HEADERS) {
            x->fail_status = 431;
            return -1;
        }
        if (x->alen + 1 > RBUF_SIZE) {
            x->fail_status = 431;
            return -1;
        }
        arena_end_item(x); /* ends the url or the previous value */
        x->hspan[x->nh][0] = (struct span){x->alen, 0};
        x->hspan[x->nh][1] = (struct span){0, 0};
        x->nh++;
        x->last_cb = CB_FIELD;
    }
    x->hspan[x->nh - 1][0].len += (uint32_t)n;
    return arena_add(x, at, n);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct http_exchange *x = ((struct hconn *)p->data)->x;
    if (x->last_cb != CB_VALUE) {
        if (x->alen + 1 > RBUF_SIZE) {
            x->fail_status = 431;
            return -1;
        }
        arena_end_item(x);
        x->hspan[x->nh - 1][1] = (struct span){x->alen, 0};
        x->last_cb = CB_VALUE;
    }
    x->hspan[x->nh - 1][1].len += (uint32_t)n;
    return arena_add(x, at, n);
}

static void build_request(struct hconn *h, struct http_exchange *x, llhttp_t *p)
{
    struct http_request *r = &x->req;
    if (x->nh && x->last_cb == CB_FIELD) { /* a field without value */
        arena_end_item(x);
        x->hspan[x->nh - 1][1] = (struct span){x->alen, 0};
    }
    arena_end_item(x);
    for (unsigned i = 0; i < x->nh; i++) {
        x->headers[i].name = x->arena + x->hspan[i][0].off;
        x->headers[i].name_len = x->hspan[i][0].len;
        x->headers[i].value = x->arena + x->hspan[i][1].off;
        x->headers[i].value_len = x->hspan[i][1].len;
    }
    r->headers = x->headers;
    r->nheaders = x->nh;
    r->method = (int)p->method;
    r->method_name = llhttp_method_name((llhttp_method_t)p->method);
    r->target = x->arena + x->url.off;
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->head = p->method == HTTP_HEAD;
    r->tls = h->c.ssl != NULL;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    r->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    const char *exp = http_header(r, "Expect");
    r->expect_continue = exp && strcasecmp(exp, "100-continue") == 0;
    /* path and query: the arena holds the target; split a copy after it */
    const char *t = r->target;
    if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
        const char *s = strchr(strstr(t, "://") + 3, '/');
        t = s ? s : "/";
    }
    size_t tl = strlen(t);
    char *path = x->arena + x->alen;
    if (x->alen + tl + 2 <= RBUF_SIZE) {
        memcpy(path, t, tl + 1);
        x->alen += (uint32_t)tl + 1;
        char *q = strchr(path, '?');
        if (q) *q++ = '\0';
        r->path = path;
        r->query = q;
    } else {
        r->path = t;
        r->query = NULL;
    }
}

static int on_headers_complete(llhttp_t *p)
{
    struct hconn *h = p->data;
    struct worker *w = h->c.w;
    struct http_exchange *x = h->x;
    if (p->http_major != 1 || p->http_minor > 1) { /* llhttp takes 0.9 and 2.0 */
        x->fail_status = 505;
        return -1;
    }
    build_request(h, x, p);
    /* the whole head is in: check it before any route sees it (so before anything of it
     * can reach an upstream), whatever the parser let through or would check later */
    int chunked;
    int64_t clen;
    int st = reqcheck_head(&x->req, &chunked, &clen, x->fail_why, sizeof x->fail_why);
    if (!st && (chunked != (int)x->req.chunked || clen != x->req.content_length)) {
        st = 400; /* the parser read the framing otherwise: refuse rather than pick one */
        snprintf(x->fail_why, sizeof x->fail_why, "malformed HTTP request: ambiguous framing");
    }
    if (st) {
        x->fail_status = st;
        return -1;
    }
    p->upgrade = 0; /* no protocol switch or tunnel: Upgrade is dropped, like any hop header */
    x->headers_done = 1;
    x->keep_alive = llhttp_should_keep_alive(p) != 0;
    memset(&x->route, 0, sizeof x->route);
    /* a reload applies from the next request on, also on connections already open (one
     * atomic load when nothing changed) */
    gw_snap_refresh(&w->snap);
    http_router_cur(&x->req, w->snap, &x->route);
    int has_body = x->req.chunked || x->req.content_length > 0;
    if (x->route.handle) {
        if (x->route.on_headers) {
            x->route.on_headers(x);
            if (x->done) return has_body ? -1 : 0; /* answered; do not read a body */
        }
        if (x->req.content_length > 0 && (uint64_t)x->req.content_length > x->route.max_body) {
            x->fail_status = 413;
            return -1;
        }
    } else {
        x->streaming = 0;
        if (x->route.on_start) x->route.on_start(x);
        if (x->done) return has_body ? -1 : 0; /* answered at once (e.g. 502) */
    }
    if (has_body && x->req.expect_continue && p->http_minor >= 1 && !x->done)
        http_out_put(h, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct hconn *h = p->data;
    struct http_exchange *x = h->x;
    if (!x->route.handle) {
        if (x->route.on_body && !x->done) x->route.on_body(x, at, n);
        return h->body_paused ? HPE_PAUSED : 0; /* the route asked for back-pressure */
    }
    if (x->blen + n > x->route.max_body) {
        x->fail_status = 413;
        return -1;
    }
    if (x->blen + n + 1 > x->bcap) {
        size_t cap = x->bcap ? x->bcap : 4096;
        while (cap < x->blen + n + 1) cap *= 2;
        if (cap > x->route.max_body + 1) cap = x->route.max_body + 1;
        char *b = realloc(x->body, cap);
        if (!b) {
            x->fail_status = 500;
            return -1;
        }
        x->body = b;
        x->bcap = cap;
    }
    memcpy(x->body + x->blen, at, n);
    x->blen += n;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct hconn *h = p->data;
    struct http_exchange *x = h->x;
    x->complete = 1;
    x->keep_alive = llhttp_should_keep_alive(p) != 0;
    h->hscan = REQCHECK_SCAN_START; /* the next bytes start the next request */
    return HPE_PAUSED; /* one request at a time; the rest waits in the buffer */
}

/* ----- the connection driver ----- */

const llhttp_settings_t http_parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_version = on_version,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void dispatch(struct http_exchange *x)
{
    x->dispatched = 1;
    if (x->done) return; /* answered when its headers came */
    if (x->route.handle) {
        if (x->body) x->body[x->blen] = '\0';
        x->req.body = x->body ? x->body : "";
        x->req.body_len = x->blen;
        x->route.handle(x);
    } else if (x->route.on_end) {
        x->route.on_end(x);
    }
}

void http_parse_input(struct hconn *h)
{
    struct conn *c = &h->c;
    llhttp_t *p = &h->parser;
    size_t avail = c->rlen - c->rpos;
    const char *start = c->rbuf + c->rpos;
    char buf[200];
    /* the raw line endings of a head first: the parser lets obs-fold through */
    if (h->hscan != REQCHECK_SCAN_DONE &&
        reqcheck_scan_lines(&h->hscan, start, avail, buf, sizeof buf) != 0) {
        log_debug("closing connection after 400: %s", buf);
        http_answer_error(h, 400, buf);
        return;
    }
    llhttp_errno_t e = llhttp_execute(p, start, avail);
    struct http_exchange *x = h->x;
    c->rpos += e == HPE_PAUSED ? (uint32_t)(llhttp_get_error_pos(p) - start) : (uint32_t)avail;
    /* parsed bytes are not looked at again: a request with secrets leaves none behind */
    if (x && x->headers_done && x->route.wipe) {
        explicit_bzero(c->rbuf, c->rpos);
        explicit_bzero(c->rbuf + c->rlen, RBUF_SIZE - c->rlen); /* earlier reads' leftovers */
    }
    if (e == HPE_PAUSED) {
        if (x && x->complete && !x->dispatched) dispatch(x);
        return;
    }
    if (e == HPE_OK) return;
    if (x && x->done) { /* a streaming route answered early and stopped the parser */
        h->close_after = 1;
        return;
    }
    int status = x && x->fail_status ? x->fail_status : 400;
    const char *msg;
    switch (status) {
    case 431:
        msg = "request header block too large (the limit is 16 KiB)";
        break;
    case 413:
        snprintf(buf, sizeof buf, "request body too large (the limit is %zu bytes)",
                 x ? x->route.max_body : 0);
        msg = buf;
        break;
    case 500:
        msg = "out of memory";
        break;
    case 414:
        msg = "request target too long (the limit is 8 KiB)";
        break;
    case 505:
        msg = "HTTP version not supported: certgate speaks HTTP/1.0 and HTTP/1.1";
        break;
    default:
        if (x && x->fail_why[0]) {
            msg = x->fail_why;
        } else {
            snprintf(buf, sizeof buf, "malformed HTTP request: %s", llhttp_get_error_reason(p));
            msg = buf;
        }
    }
    log_debug("closing connection after %d: %s", status, msg);
    http_answer_error(h, status, msg);
}
