/* fuzzmem.h - the connection fuzzers' shared part (fuzz_http.c, fuzz_upstream.c): one
 * worker on the in-memory transport, driven with tests/unit/memtest.h (the unit tests'
 * harness), a router with buffered local routes and the proxy, a canned upstream, and
 * the checks made on every input. Only the public functions of http.h, proxy.h,
 * upclient.h, memio.h and conn.h are used, so the targets do not depend on the HTTP
 * parser behind them. */
#ifndef CERTGATE_FUZZMEM_H
#define CERTGATE_FUZZMEM_H

#include "fuzz.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "memtest.h"
#pragma GCC diagnostic pop

#include "proxy.h"
#include "upstream.h"

#include <string.h>

/* A buffered route answering with the body it got (at most 64 bytes). */
static void fz_echo(struct http_exchange *x)
{
    const struct http_request *r = http_req(x);
    http_respond(x, 200, "text/plain", NULL, r->body, r->body_len);
}

/* A buffered route answering from on_headers (the body is never read). */
static void fz_deny(struct http_exchange *x)
{
    http_respond_text(x, 401, "no");
}

/* /b... echoes, /d... is denied at its headers, everything else goes to the upstream. */
static void fz_router(const struct http_request *r, const struct gw_snap *snap,
                      struct http_route *out)
{
    FZ_CHECK(r->path && r->target && r->method_name);
    FZ_CHECK(r->nheaders == 0 || r->headers);
    if (strncmp(r->path, "/b", 2) == 0) {
        out->handle = fz_echo;
        out->max_body = 64;
        return;
    }
    if (strncmp(r->path, "/d", 2) == 0) {
        out->handle = fz_echo;
        out->on_headers = fz_deny;
        out->max_body = 64;
        return;
    }
    proxy_route(r, snap, out);
}

static struct upstream *fz_upstream(void)
{
    struct conf_upstream cu = {
        .url = (char *)"http://127.0.0.1:9/base/",
        .connect_timeout_s = 5,
        .read_timeout_s = 30,
        .max_connections = 2,
        .verify = 1,
    };
    struct upstream *t = NULL;
    char err[400];
    if (upstream_new(&cu, &t, err, sizeof err) != 0) {
        fprintf(stderr, "upstream_new: %s\n", err);
        abort();
    }
    return t;
}

/* memtest keeps at most MT_MAX_MEM upstream transports per test; beyond that, connecting
 * fails (the gateway answers 502), as a refused connect would. */
static struct memio *fz_connect_hook(struct worker *w, void *arg)
{
    if (T.nup >= MT_MAX_MEM) return NULL;
    return mt_connect_hook(w, arg);
}

static void fz_start(void)
{
    http_set_router(fz_router);
    mt_watchdog_s = 0; /* libFuzzer's -timeout catches hangs */
    mt_start("fuzz", fz_upstream());
    T.w.connect_hook = fz_connect_hook;
}

/* The client's output so far: only its first bytes are kept (they must be a status
 * line); the rest is dropped so that memory stays flat. */
struct fz_client {
    struct memio *m;
    char first[16];
    size_t nfirst;
    size_t total;
};

static void fz_client_take(struct fz_client *fc)
{
    size_t n;
    const char *p = memio_take(fc->m, &n);
    for (size_t i = 0; i < n && fc->nfirst < sizeof fc->first; i++) fc->first[fc->nfirst++] = p[i];
    fc->total += n;
}

/* Every answer of certgate starts with a status line. */
static void fz_client_check(const struct fz_client *fc)
{
    if (fc->nfirst >= 9 && memcmp(fc->first, "HTTP/1.1 ", 9) != 0) {
        fprintf(stderr, "the client's first bytes are not a status line: '%.*s'\n",
                (int)fc->nfirst, fc->first);
        abort();
    }
}

static const char FZ_ANSWER[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/* Answers every request head that reached an upstream connection from `from` on with a
 * canned answer (counting request lines; body bytes that look like one get an extra
 * answer, which is fine: the gateway must cope with an upstream that talks too much). */
static void fz_answer_upstreams(int from)
{
    for (int i = from; i < T.nup; i++) {
        struct memio *u = T.up[i];
        if (u->closed || u->reset) {
            memio_take(u, &(size_t){0});
            continue;
        }
        size_t n;
        const char *p = memio_take(u, &n);
        int heads = 0;
        for (const char *q = p; (q = memmem(q, (size_t)(p + n - q), " HTTP/1.1\r\n", 11));
             q += 11)
            heads++;
        while (heads-- > 0) memio_push(u, FZ_ANSWER, sizeof FZ_ANSWER - 1);
    }
}

/* Lets every timeout fire (the longest is the upstream's read timeout, 30 s), then
 * closes everything and checks that nothing is left (memtest's mt_finish). */
static void fz_finish(struct fz_client *fc)
{
    for (int k = 0; k < 4; k++) {
        advance(11000);
        fz_answer_upstreams(0);
        settle();
        fz_client_take(fc);
        if (fc->m->room != SIZE_MAX) memio_set_room(fc->m, SIZE_MAX);
    }
    fz_client_take(fc);
    fz_client_check(fc);
    mt_finish();
}

#endif
