/* Unit tests for src/proxy.c and src/upclient.c on the in-memory transport: the router is
 * proxy_route, the worker's connect_hook hands out a fresh memio per upstream connection
 * and the test plays the upstream on it (reads the request it got, pushes the answer,
 * ends or resets it). Exact bytes both ways; after each test everything is closed and
 * checked (see memtest.h; run under ASan for leaks and use-after-free). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <llhttp.h>

#include "memtest.h"
#include "proxy.h"
#include "upstream.h"

#define READ_TIMEOUT_S 30
#define CONNECT_TIMEOUT_S 5
#define UP "127.0.0.1:9"

/* [upstream] trusted-proxies and forwarded for the next start() */
static const char *trusted_cidr;
static int forwarded_on;

static struct upstream *make_upstream(const char *url)
{
    struct conf_upstream cu = {
        .url = (char *)url,
        .connect_timeout_s = CONNECT_TIMEOUT_S,
        .read_timeout_s = READ_TIMEOUT_S,
        .max_connections = 4,
        .ca_file = NULL,
        .verify = 1,
        .forwarded = forwarded_on,
    };
    if (trusted_cidr) {
        assert_int_equal(conf_cidr_parse(trusted_cidr, &cu.trusted_proxies[0]), 0);
        cu.ntrusted_proxies = 1;
    }
    struct upstream *t = NULL;
    char err[400];
    if (upstream_new(&cu, &t, err, sizeof err) != 0) fail_msg("upstream_new: %s", err);
    return t;
}

/* hook options */
static int reset_on_connect, room0_on_connect;

static struct memio *hook(struct worker *w, void *arg)
{
    struct memio *m = mt_connect_hook(w, arg);
    if (m && reset_on_connect) m->reset = 1;
    if (m && room0_on_connect) m->room = 0;
    return m;
}

static void start(const char *name, const char *url)
{
    http_set_router(proxy_route);
    reset_on_connect = room0_on_connect = 0;
    mt_start(name, url ? make_upstream(url) : NULL);
    T.w.connect_hook = hook;
    trusted_cidr = NULL;
    forwarded_on = 0;
}

#define START() start(__func__, "http://" UP)

static const char *GET_A = "GET /a HTTP/1.1\r\nHost: front\r\n\r\n";
static const char *UP_GET_A = "GET /a HTTP/1.1\r\nHost: " UP "\r\nX-Forwarded-For: 127.0.0.1\r\n"
                              "X-Forwarded-Proto: http\r\nX-Forwarded-Host: front\r\n\r\n";

/* the upstream connection i is alive (pooled or busy) */
static int up_open(int i)
{
    return i < T.nup && T.up[i]->c && !T.up[i]->closed;
}

/* ----- relaying ----- */

static void get_relayed_sized(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: front.example\r\n"
            "Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
            "TE: trailers\r\nProxy-Authorization: Basic eHg=\r\nUpgrade: foo\r\n"
            "Accept: */*\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
            "X-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\nX-Forwarded-Server: e\r\n"
            "Forwarded: for=10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\nUser-Agent: t\r\n\r\n");
    settle();
    assert_int_equal(T.connects, 1);
    /* an untrusted client's forwarded headers are all dropped and replaced */
    expect_out(T.up[0], "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: " UP "\r\nAccept: */*\r\n"
                        "User-Agent: t\r\nX-Forwarded-For: 127.0.0.1\r\n"
                        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: front.example\r\n\r\n");
    expect_none(m);
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n"
                  "Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\n\r\nhello");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nX-Up: 1\r\nContent-Length: 5\r\n\r\nhello");
    assert_false(ended(m));
    assert_true(up_open(0)); /* back in the pool */
    assert_ptr_equal(T.w.tq[TQ_UPIDLE].head, T.up[0]->c);
    mt_finish();
}

/* a trusted peer's X-Forwarded-For and Forwarded are appended to, X-Real-IP kept; the
 * other X-Forwarded-* are still ours */
static void forwarded_trusted(void **state)
{
    (void)state;
    trusted_cidr = "127.0.0.0/8";
    forwarded_on = 1;
    START();
    struct memio *m = client();
    push(m, "GET /a HTTP/1.1\r\nHost: front.example:8443\r\nX-Forwarded-For: 10.0.0.1\r\n"
            "Forwarded: for=10.0.0.1;proto=http\r\nX-Real-IP: 10.0.0.1\r\n"
            "X-Forwarded-Port: 1\r\nX-Forwarded-Proto: ftp\r\n\r\n");
    settle();
    expect_out(T.up[0], "GET /a HTTP/1.1\r\nHost: " UP "\r\nX-Real-IP: 10.0.0.1\r\n"
                        "X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                        "X-Forwarded-Host: front.example:8443\r\n"
                        "Forwarded: for=10.0.0.1;proto=http, "
                        "for=127.0.0.1;proto=http;host=\"front.example:8443\"\r\n\r\n");
    mt_finish();
}

/* forwarded = on, from an untrusted IPv6 client: its Forwarded is replaced by ours, with
 * the address quoted and bracketed (RFC 7239 6) */
static void forwarded_untrusted_v6(void **state)
{
    (void)state;
    trusted_cidr = "10.0.0.0/8";
    forwarded_on = 1;
    START();
    struct sockaddr_in6 s6;
    memset(&s6, 0, sizeof s6);
    s6.sin6_family = AF_INET6;
    s6.sin6_port = htons(40000);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::7", &s6.sin6_addr), 1);
    struct memio *m = client_from(&s6, sizeof s6);
    push(m, "GET /a HTTP/1.1\r\nHost: front\r\nForwarded: for=10.9.9.9\r\n"
            "X-Forwarded-For: 10.9.9.9\r\n\r\n");
    settle();
    expect_out(T.up[0], "GET /a HTTP/1.1\r\nHost: " UP "\r\nX-Forwarded-For: 2001:db8::7\r\n"
                        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: front\r\n"
                        "Forwarded: for=\"[2001:db8::7]\";proto=http;host=front\r\n\r\n");
    mt_finish();
}

static void get_prefix_and_absolute_form(void **state)
{
    (void)state;
    start(__func__, "http://" UP "/base/");
    struct memio *m = client();
    push(m, "GET http://front/p?q HTTP/1.1\r\nHost: front\r\n\r\n");
    settle();
    expect_out(T.up[0], "GET /base/p?q HTTP/1.1\r\nHost: " UP "\r\nX-Forwarded-For: 127.0.0.1\r\n"
                        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: front\r\n\r\n");
    push(T.up[0], "HTTP/1.1 204 No Content\r\n\r\n");
    settle();
    expect_out(m, "HTTP/1.1 204 No Content\r\n\r\n");
    mt_finish();
}

static void get_relayed_chunked(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    push(T.up[0], "HTTP/1.1 201 Made\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
                  "3\r\nabc\r\n");
    settle();
    expect_out(m, "HTTP/1.1 201 Made\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    push(T.up[0], "2\r\nde\r\n0\r\n\r\n");
    settle();
    expect_out(m, "2\r\nde\r\n0\r\n\r\n");
    assert_false(ended(m));
    assert_true(up_open(0));
    /* the client's next request reuses the connection */
    push(m, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    assert_int_equal(T.connects, 1);
    mt_finish();
}

static void get_relayed_close_delimited(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    push(T.up[0], "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nhel");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n");
    push(T.up[0], "lo");
    memio_eof(T.up[0]);
    settle();
    expect_out(m, "2\r\nlo\r\n0\r\n\r\n");
    assert_true(T.up[0]->closed); /* not reusable */
    assert_false(ended(m));
    /* a new connection for the next request */
    push(m, GET_A);
    settle();
    assert_int_equal(T.connects, 2);
    expect_out(T.up[1], UP_GET_A);
    mt_finish();
}

/* an HTTP/1.0 client gets a close-delimited answer */
static void get_http10_client(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, "GET /a HTTP/1.0\r\nHost: front\r\n\r\n");
    settle();
    expect_out(T.up[0], UP_GET_A);
    push(T.up[0], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
    assert_true(ended(m));
    assert_true(up_open(0));
    mt_finish();
}

static void head_relayed(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, "HEAD /a HTTP/1.1\r\nHost: front\r\n\r\n");
    settle();
    expect_out(T.up[0], "HEAD /a HTTP/1.1\r\nHost: " UP "\r\nX-Forwarded-For: 127.0.0.1\r\n"
                        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: front\r\n\r\n");
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    assert_true(up_open(0));
    push(m, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    assert_int_equal(T.connects, 1);
    mt_finish();
}

static void keepalive_reuse(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    for (int i = 0; i < 3; i++) {
        push(m, GET_A);
        settle();
        expect_out(T.up[0], UP_GET_A);
        push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        settle();
        expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
    assert_int_equal(T.connects, 1);
    /* a second client uses the same pooled connection */
    struct memio *m2 = client();
    push(m2, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    assert_int_equal(T.connects, 1);
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    settle();
    expect_out(m2, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    expect_none(m);
    mt_finish();
}

/* the upstream closes an idle pooled connection: it leaves the pool */
static void idle_pooled_closed_by_upstream(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_true(up_open(0));
    memio_eof(T.up[0]);
    settle();
    assert_true(T.up[0]->closed);
    push(m, GET_A);
    settle();
    assert_int_equal(T.connects, 2);
    expect_out(T.up[1], UP_GET_A);
    mt_finish();
}

static void upload_sized(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, "POST /up HTTP/1.1\r\nHost: front\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n01234");
    settle();
    expect_out(T.up[0], "POST /up HTTP/1.1\r\nHost: " UP "\r\nContent-Type: text/plain\r\n"
                        "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
                        "X-Forwarded-Host: front\r\nContent-Length: 10\r\n\r\n01234");
    push(m, "56789");
    settle();
    expect_out(T.up[0], "56789");
    push(T.up[0], "HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone");
    settle();
    expect_out(m, "HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone");
    assert_false(ended(m));
    assert_true(up_open(0));
    mt_finish();
}

static void upload_chunked(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, "PUT /up HTTP/1.1\r\nHost: front\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    settle();
    expect_out(T.up[0], "PUT /up HTTP/1.1\r\nHost: " UP "\r\nX-Forwarded-For: 127.0.0.1\r\n"
                        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: front\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    push(m, "3\r\nabc\r\n0\r\n\r\n");
    settle();
    expect_out(T.up[0], "3\r\nabc\r\n0\r\n\r\n");
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_true(up_open(0));
    mt_finish();
}

static void continue_100(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, "POST /up HTTP/1.1\r\nHost: front\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    settle();
    expect_out(m, "HTTP/1.1 100 Continue\r\n\r\n");
    expect_out(T.up[0], "POST /up HTTP/1.1\r\nHost: " UP "\r\nX-Forwarded-For: 127.0.0.1\r\n"
                        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: front\r\n"
                        "Content-Length: 3\r\n\r\n");
    push(m, "abc");
    settle();
    expect_out(T.up[0], "abc");
    /* an interim answer of the upstream is not relayed */
    push(T.up[0], "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk");
    mt_finish();
}

static void pipelined(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, "GET /1 HTTP/1.1\r\nHost: front\r\n\r\nGET /2 HTTP/1.1\r\nHost: front\r\n\r\n"
            "GET /3 HTTP/1.1\r\nHost: front\r\n\r\n");
    settle();
    for (int i = 1; i <= 3; i++) {
        char want[300];
        snprintf(want, sizeof want,
                 "GET /%d HTTP/1.1\r\nHost: " UP "\r\nX-Forwarded-For: 127.0.0.1\r\n"
                 "X-Forwarded-Proto: http\r\nX-Forwarded-Host: front\r\n\r\n",
                 i);
        expect_out(T.up[0], want); /* one at a time: the next after the answer */
        expect_none(m);
        snprintf(want, sizeof want, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d", i);
        push(T.up[0], want);
        settle();
        expect_out(m, want);
    }
    assert_int_equal(T.connects, 1);
    assert_false(ended(m));
    mt_finish();
}

/* ----- the client goes away ----- */

static void client_gone_before_answer(void (*end)(struct memio *))
{
    struct memio *m = client();
    push(m, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    end(m);
    settle();
    assert_true(m->closed);
    assert_true(T.up[0]->closed);
    /* what the upstream sends now goes nowhere */
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    settle();
    expect_none(m);
    mt_finish();
}

static void client_reset_before_answer(void **state)
{
    (void)state;
    START();
    client_gone_before_answer(memio_reset);
}

static void client_eof_before_answer(void **state)
{
    (void)state;
    START();
    client_gone_before_answer(memio_eof);
}

static void client_gone_during_answer(void (*end)(struct memio *))
{
    struct memio *m = client();
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    end(m);
    settle();
    assert_true(m->closed);
    assert_true(T.up[0]->closed);
    mt_finish();
}

static void client_reset_during_answer(void **state)
{
    (void)state;
    START();
    client_gone_during_answer(memio_reset);
}

static void client_eof_during_answer(void **state)
{
    (void)state;
    START();
    client_gone_during_answer(memio_eof);
}

static void client_gone_during_upload(void (*end)(struct memio *))
{
    struct memio *m = client();
    push(m, "POST /up HTTP/1.1\r\nHost: front\r\nContent-Length: 10\r\n\r\nabc");
    settle();
    free(take(T.up[0], NULL));
    end(m);
    settle();
    assert_true(m->closed);
    assert_true(T.up[0]->closed);
    expect_none(m);
    mt_finish();
}

static void client_reset_during_upload(void **state)
{
    (void)state;
    START();
    client_gone_during_upload(memio_reset);
}

static void client_eof_during_upload(void **state)
{
    (void)state;
    START();
    client_gone_during_upload(memio_eof);
}

/* the client goes away before the upstream connection was even made */
static void client_reset_while_connecting(void **state)
{
    (void)state;
    START();
    room0_on_connect = 1; /* the connect does not complete */
    struct memio *m = client();
    push(m, GET_A);
    settle();
    assert_int_equal(T.connects, 1);
    assert_true(up_open(0));
    assert_int_equal(T.up[0]->c->state, CS_CONNECTING);
    memio_reset(m);
    settle();
    assert_true(m->closed);
    assert_true(T.up[0]->closed);
    mt_finish();
}

/* the client goes away with an answer queued for it (slow reader) */
static void client_reset_with_queued_answer(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    memio_set_room(m, 0);
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
    char chunk[50000];
    memset(chunk, 'z', sizeof chunk);
    memio_push(T.up[0], chunk, sizeof chunk);
    settle();
    assert_true(conn_queued(m->c) > 0);
    memio_reset(m);
    settle();
    assert_true(m->closed);
    assert_true(T.up[0]->closed);
    mt_finish();
}

/* ----- the upstream fails ----- */

static void up_fails_before_answer(void (*end)(struct memio *), const char *why)
{
    struct memio *m = client();
    push(m, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    end(T.up[0]);
    settle();
    assert_true(T.up[0]->closed);
    char msg[300];
    snprintf(msg, sizeof msg,
             "the upstream " UP " closed the connection without answering (%s)", why);
    struct sb want = {0};
    sb_text(&want, 502, NULL, msg);
    expect_out(m, want.p);
    assert_false(ended(m)); /* the request was whole: the connection goes on */
    free(want.p);
    mt_finish();
}

static void up_reset_before_answer(void **state)
{
    (void)state;
    START();
    up_fails_before_answer(memio_reset, "read error");
}

static void up_eof_before_answer(void **state)
{
    (void)state;
    START();
    up_fails_before_answer(memio_eof, "end of stream");
}

static void up_reset_mid_answer(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    memio_reset(T.up[0]);
    settle();
    assert_true(T.up[0]->closed);
    expect_none(m);
    assert_true(m->closed); /* the client cannot be told otherwise */
    mt_finish();
}

static void up_eof_mid_chunked_answer(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n");
    memio_eof(T.up[0]);
    settle();
    expect_none(m); /* no terminating chunk: the client sees the break */
    assert_true(m->closed);
    assert_true(T.up[0]->closed);
    mt_finish();
}

static void up_garbage_answer(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    push(T.up[0], "FOO BAR\r\n\r\n");
    settle();
    assert_true(T.up[0]->closed);
    const char *msg = "the upstream " UP " sent an invalid answer (Expected HTTP/)";
    struct sb want = {0};
    sb_text(&want, 502, NULL, msg);
    expect_out(m, want.p);
    free(want.p);
    mt_finish();
}

static void up_read_timeout_504(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    advance(READ_TIMEOUT_S * 1000 - 1);
    expect_none(m);
    assert_true(up_open(0));
    advance(1);
    assert_true(T.up[0]->closed);
    struct sb want = {0};
    sb_text(&want, 504, NULL,
            "the upstream " UP " did not answer within 30 s (read-timeout)");
    expect_out(m, want.p);
    free(want.p);
    mt_finish();
}

static void up_stalls_mid_answer(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    advance(READ_TIMEOUT_S * 1000 - 1);
    assert_false(m->closed);
    advance(1);
    assert_true(T.up[0]->closed);
    assert_true(m->closed);
    expect_none(m);
    mt_finish();
}

static void up_connect_refused_by_hook(void **state)
{
    (void)state;
    START();
    T.refuse = 1;
    struct memio *m = client();
    push(m, GET_A);
    settle();
    assert_int_equal(T.connects, 1);
    struct sb want = {0};
    sb_text(&want, 502, NULL, "cannot connect to the upstream " UP ": Connection refused");
    expect_out(m, want.p);
    free(want.p);
    mt_finish();
}

static void up_connect_refused(void **state)
{
    (void)state;
    START();
    reset_on_connect = 1;
    struct memio *m = client();
    push(m, GET_A);
    settle();
    assert_true(T.up[0]->closed);
    struct sb want = {0};
    sb_text(&want, 502, NULL, "the upstream " UP " refused the connection (Connection refused)");
    expect_out(m, want.p);
    free(want.p);
    mt_finish();
}

static void up_connect_timeout_504(void **state)
{
    (void)state;
    START();
    room0_on_connect = 1;
    struct memio *m = client();
    push(m, GET_A);
    settle();
    advance(CONNECT_TIMEOUT_S * 1000 - 1);
    expect_none(m);
    advance(1);
    assert_true(T.up[0]->closed);
    struct sb want = {0};
    sb_text(&want, 504, NULL, "the upstream " UP " did not accept the connection within 5 s");
    expect_out(m, want.p);
    free(want.p);
    mt_finish();
}

static void no_upstream_503(void **state)
{
    (void)state;
    start(__func__, NULL);
    struct memio *m = client();
    push(m, "POST /x HTTP/1.1\r\nHost: front\r\nContent-Length: 100000\r\n\r\n");
    settle();
    struct sb want = {0};
    sb_text(&want, 503, "close",
            "no upstream configured for /x: set url in the [upstream] section of "
            "custom.properties and send SIGHUP");
    expect_out(m, want.p);
    assert_int_equal(T.connects, 0);
    free(want.p);
    mt_finish();
}

/* A pooled connection whose upstream already closed it (the reset is still in flight
 * when the pool hands it out: m->reset set without a wake-up). */
static void pool_one_then_kill(struct memio *m)
{
    push(m, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_true(up_open(0));
    T.up[0]->reset = 1;
}

static void dead_pooled_retried_for_get(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    pool_one_then_kill(m);
    push(m, GET_A);
    settle();
    assert_true(T.up[0]->closed);
    assert_int_equal(T.connects, 2);
    expect_out(T.up[1], UP_GET_A);
    expect_none(m);
    push(T.up[1], "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew");
    mt_finish();
}

static void dead_pooled_not_retried_for_post(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    pool_one_then_kill(m);
    push(m, "POST /a HTTP/1.1\r\nHost: front\r\nContent-Length: 3\r\n\r\nabc");
    settle();
    assert_true(T.up[0]->closed);
    assert_int_equal(T.connects, 1);
    struct sb want = {0};
    sb_text(&want, 502, NULL,
            "the upstream " UP " closed the connection without answering (read error)");
    expect_out(m, want.p);
    free(want.p);
    mt_finish();
}

/* the retry happens once: a second dead connection is a 502 */
static void dead_pooled_retry_fails_502(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    pool_one_then_kill(m);
    reset_on_connect = 1;
    push(m, GET_A);
    settle();
    assert_int_equal(T.connects, 2);
    assert_true(T.up[1]->closed);
    struct sb want = {0};
    sb_text(&want, 502, NULL, "the upstream " UP " refused the connection (Connection refused)");
    expect_out(m, want.p);
    free(want.p);
    mt_finish();
}

/* ----- back-pressure ----- */

#define BIG (600 * 1024) /* more than 512 KiB */

static char pat(size_t i)
{
    return (char)('A' + (i * 13 + i / 4093) % 26);
}

static void backpressure_answer(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    memio_set_room(m, 0);
    push(m, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    char *body = malloc(BIG);
    assert_non_null(body);
    for (size_t i = 0; i < BIG; i++) body[i] = pat(i);
    char head[100];
    snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", BIG);
    push(T.up[0], head);
    memio_push(T.up[0], body, BIG);
    settle();
    expect_none(m);
    assert_non_null(m->c);
    size_t q = conn_queued(m->c);
    assert_true(q <= CONN_OUT_CAP);
    assert_true(q >= CONN_OUT_HIGH);
    /* the upstream is no longer read */
    assert_true(memio_pending(T.up[0]) > 0);
    assert_true(memio_pending(T.up[0]) >= BIG + strlen(head) - q);
    settle();
    assert_int_equal(conn_queued(m->c), q);
    /* room opens bit by bit; the queue stays bounded, everything arrives in order */
    struct sb got = {0};
    for (int i = 0; i < 200 && got.len < strlen(head) + BIG; i++) {
        memio_set_room(m, 50 * 1024);
        settle();
        size_t n;
        char *p = take(m, &n);
        sb_put(&got, p, n);
        free(p);
        assert_non_null(m->c);
        assert_true(conn_queued(m->c) <= CONN_OUT_CAP);
    }
    assert_int_equal(got.len, strlen(head) + BIG);
    assert_memory_equal(got.p, head, strlen(head));
    assert_memory_equal(got.p + strlen(head), body, BIG);
    assert_int_equal(memio_pending(T.up[0]), 0);
    assert_true(up_open(0)); /* complete: pooled */
    assert_false(ended(m));
    free(got.p);
    free(body);
    mt_finish();
}

/* the same with a chunked answer, room opened all at once */
static void backpressure_chunked_answer(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    memio_set_room(m, 0);
    push(m, GET_A);
    settle();
    free(take(T.up[0], NULL));
    struct sb up = {0}, want = {0};
    sb_printf(&up, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    sb_printf(&want, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    char piece[8192];
    size_t total = 0;
    for (int k = 0; total < BIG; k++) {
        for (size_t i = 0; i < sizeof piece; i++) piece[i] = pat(total + i);
        sb_printf(&up, "%zx\r\n", sizeof piece);
        sb_put(&up, piece, sizeof piece);
        sb_printf(&up, "\r\n");
        total += sizeof piece;
    }
    sb_printf(&up, "0\r\n\r\n");
    memio_push(T.up[0], up.p, up.len);
    settle();
    assert_true(conn_queued(m->c) <= CONN_OUT_CAP);
    assert_true(memio_pending(T.up[0]) > 0);
    memio_set_room(m, SIZE_MAX);
    settle();
    size_t n;
    char *got = take(m, &n);
    /* the pieces may be grouped differently: de-chunk and compare the body */
    size_t hl = strlen(want.p);
    assert_true(n > hl);
    assert_memory_equal(got, want.p, hl);
    struct sb body = {0};
    const char *p = got + hl, *end = got + n;
    for (;;) {
        char *e;
        unsigned long len = strtoul(p, &e, 16);
        assert_true(e[0] == '\r' && e[1] == '\n');
        p = e + 2;
        if (len == 0) break;
        assert_true(p + len + 2 <= end);
        sb_put(&body, p, len);
        assert_true(p[len] == '\r' && p[len + 1] == '\n');
        p += len + 2;
    }
    assert_true(p + 2 == end && p[0] == '\r' && p[1] == '\n');
    assert_int_equal(body.len, total);
    for (size_t i = 0; i < total; i++)
        if (body.p[i] != pat(i)) fail_msg("body byte %zu differs", i);
    assert_true(up_open(0));
    free(got);
    free(body.p);
    free(up.p);
    free(want.p);
    mt_finish();
}

/* upload: the upstream stops taking bytes, the client's body stops being read */
static void backpressure_upload(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    char head[200];
    snprintf(head, sizeof head, "POST /up HTTP/1.1\r\nHost: front\r\nContent-Length: %d\r\n\r\n", BIG);
    push(m, head);
    settle();
    char *want_head = take(T.up[0], NULL);
    memio_set_room(T.up[0], 0);
    char *body = malloc(BIG);
    assert_non_null(body);
    for (size_t i = 0; i < BIG; i++) body[i] = pat(i);
    memio_push(m, body, BIG);
    settle();
    assert_true(memio_pending(m) > 0); /* the client's body is no longer read */
    assert_true(conn_queued(T.up[0]->c) <= CONN_OUT_CAP);
    struct sb got = {0};
    for (int i = 0; i < 200 && got.len < BIG; i++) {
        memio_set_room(T.up[0], 40 * 1024);
        settle();
        size_t n;
        char *p = take(T.up[0], &n);
        sb_put(&got, p, n);
        free(p);
        assert_true(conn_queued(T.up[0]->c) <= CONN_OUT_CAP);
    }
    assert_int_equal(got.len, BIG);
    assert_memory_equal(got.p, body, BIG);
    assert_int_equal(memio_pending(m), 0);
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_non_null(strstr(want_head, "Content-Length: 614400\r\n"));
    free(want_head);
    free(got.p);
    free(body);
    mt_finish();
}


/* the upstream answers before the upload is complete: relayed, and both connections end
 * (the rest of the body is not read; the upstream connection cannot be reused) */
static void up_answers_during_upload(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, "POST /up HTTP/1.1\r\nHost: front\r\nContent-Length: 100\r\n\r\nabc");
    settle();
    free(take(T.up[0], NULL));
    push(T.up[0], "HTTP/1.1 413 Too Big\r\nContent-Length: 3\r\n\r\nbig");
    settle();
    expect_out(m, "HTTP/1.1 413 Too Big\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbig");
    assert_true(ended(m));
    assert_true(T.up[0]->closed);
    mt_finish();
}

/* the upstream resets while the client still uploads: 502, and the connection ends */
static void up_reset_during_upload(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, "POST /up HTTP/1.1\r\nHost: front\r\nContent-Length: 100\r\n\r\nabc");
    settle();
    free(take(T.up[0], NULL));
    memio_reset(T.up[0]);
    settle();
    assert_true(T.up[0]->closed);
    struct sb want = {0};
    sb_text(&want, 502, "close",
            "the upstream " UP " closed the connection without answering (read error)");
    expect_out(m, want.p);
    assert_true(ended(m));
    push(m, "more body");
    settle();
    expect_none(m);
    free(want.p);
    mt_finish();
}

/* bytes after the answer: relayed answer, but the connection is not pooled */
static void up_extra_bytes_not_pooled(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nkJUNK");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk");
    assert_true(T.up[0]->closed);
    assert_false(ended(m));
    mt_finish();
}

/* an upstream that says Connection: close is not pooled */
static void up_connection_close_not_pooled(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nk");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk");
    assert_true(T.up[0]->closed);
    assert_false(ended(m));
    mt_finish();
}

/* a slow client under back-pressure: the upstream's read-timeout does not run (not its
 * fault); the client's write timeout ends both connections */
static void backpressure_slow_client_times_out(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    memio_set_room(m, 0);
    push(m, GET_A);
    settle();
    free(take(T.up[0], NULL));
    char *body = malloc(BIG);
    assert_non_null(body);
    memset(body, 'q', BIG);
    char head[100];
    snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", BIG);
    push(T.up[0], head);
    memio_push(T.up[0], body, BIG);
    free(body);
    settle();
    assert_true(memio_pending(T.up[0]) > 0);
    assert_null(T.w.tq[TQ_UPREAD].head);
    advance(BODY_MS - 1);
    assert_false(m->closed);
    assert_true(up_open(0));
    advance(1);
    assert_true(m->closed);
    assert_true(T.up[0]->closed);
    mt_finish();
}


/* the client resets while its upload is paused (the upstream takes nothing): both end
 * once the upstream drains */
static void client_reset_during_paused_upload(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    char head[200];
    snprintf(head, sizeof head, "POST /up HTTP/1.1\r\nHost: front\r\nContent-Length: %d\r\n\r\n", BIG);
    push(m, head);
    settle();
    free(take(T.up[0], NULL));
    memio_set_room(T.up[0], 0);
    char *body = calloc(1, BIG);
    assert_non_null(body);
    memio_push(m, body, BIG);
    free(body);
    settle();
    assert_true(memio_pending(m) > 0);
    memio_reset(m);
    settle();
    memio_set_room(T.up[0], SIZE_MAX);
    settle();
    assert_true(m->closed);
    assert_true(T.up[0]->closed);
    mt_finish();
}

/* an idle pooled connection is closed after its idle timeout */
static void pooled_idle_timeout(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    settle();
    expect_out(m, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    advance(KEEPALIVE_MS - 1); /* the client goes on sending requests */
    push(m, GET_A);
    settle();
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    settle();
    free(take(m, NULL));
    advance(60000 - 1);
    assert_true(up_open(0));
    assert_true(m->closed); /* the client's keep-alive ran out meanwhile */
    advance(1);
    assert_true(T.up[0]->closed);
    assert_int_equal(T.connects, 1);
    mt_finish();
}

/* max_connections (4) per worker counts connections in flight as well as idle ones;
 * without a queue (queue-size 0 here) a fifth request gets 503 + Retry-After at once
 * (test_limits.c has the queue) */
static void pool_size_limit(void **state)
{
    (void)state;
    START();
    struct memio *c[5];
    for (int i = 0; i < 5; i++) {
        c[i] = client();
        push(c[i], GET_A);
    }
    settle();
    assert_int_equal(T.connects, 4);
    char *busy = take(c[4], NULL);
    assert_true(strncmp(busy, "HTTP/1.1 503 ", 13) == 0);
    assert_non_null(strstr(busy, "\r\nRetry-After: 1\r\n"));
    assert_non_null(strstr(busy, "is busy"));
    free(busy);
    for (int i = 0; i < 4; i++) {
        expect_out(T.up[i], UP_GET_A);
        push(T.up[i], "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk");
        settle();
        expect_out(c[i], "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk");
    }
    for (int i = 0; i < 4; i++) assert_true(up_open(i)); /* all idle in the pool */
    push(c[4], GET_A); /* now one is free */
    settle();
    assert_int_equal(T.connects, 4);
    mt_finish();
}

/* an upstream header block over 16 KiB is a 502 */
static void up_huge_header_502(void **state)
{
    (void)state;
    START();
    struct memio *m = client();
    push(m, GET_A);
    settle();
    struct sb a = {0};
    sb_printf(&a, "HTTP/1.1 200 OK\r\nX-Big: ");
    for (int i = 0; i < 20 * 1024; i++) sb_put(&a, "b", 1);
    sb_printf(&a, "\r\nContent-Length: 0\r\n\r\n");
    memio_push(T.up[0], a.p, a.len);
    settle();
    assert_true(T.up[0]->closed);
    const char *msg = "the upstream " UP " sent an invalid answer (header block larger than 16 KiB)";
    struct sb want = {0};
    sb_text(&want, 502, NULL, msg);
    expect_out(m, want.p);
    free(want.p);
    free(a.p);
    mt_finish();
}

/* graceful stop: an idle client closes, a busy one gets its answer then closes, the
 * pool closes its idle connections */
static void graceful_stop(void **state)
{
    (void)state;
    START();
    struct memio *idle = client();
    struct memio *busy = client();
    push(idle, GET_A);
    settle();
    expect_out(T.up[0], UP_GET_A);
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    settle();
    free(take(idle, NULL));
    push(busy, GET_A);
    settle();
    assert_int_equal(T.connects, 1);
    expect_out(T.up[0], UP_GET_A);
    http_worker_stop(&T.w);
    up_pool_stopping(&T.w);
    settle();
    assert_true(idle->closed);
    assert_false(busy->closed);
    assert_true(up_open(0));
    push(T.up[0], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    settle();
    expect_out(busy, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    assert_true(ended(busy));
    assert_true(T.up[0]->closed); /* not pooled while stopping */
    mt_finish();
}


/* KNOWN BUG 2 (see test_http.c) on the proxy's back-pressure path: a download held back
 * for a slow client (its queue >= CONN_OUT_HIGH) plus a pipelined request from that
 * client makes the worker spin. */
static void bug2_proxy_child(void)
{
    start("bug2-proxy", "http://" UP);
    struct memio *m = client();
    memio_set_room(m, 0);
    push(m, GET_A);
    settle();
    char head[100];
    snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", BIG);
    push(T.up[0], head);
    char *body = calloc(1, BIG);
    memio_push(T.up[0], body, BIG);
    free(body);
    settle();
    if (!m->c || conn_queued(m->c) < CONN_OUT_HIGH) _exit(3);
    push(m, GET_A); /* pipelined */
    settle();       /* spins */
    _exit(0);
}

static void known_bug2_proxy_pipelined_under_backpressure_spins(void **state)
{
    (void)state;
    fixed_bug("src/http.c run_once()/http_conn_run(): a client whose queued answer is >= "
              "CONN_OUT_HIGH (proxy back-pressure) and that pipelines another request is "
              "reported readable at every turn and never read: busy loop",
              run_child(bug2_proxy_child, 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_relayed_sized),
        cmocka_unit_test(get_prefix_and_absolute_form),
        cmocka_unit_test(forwarded_trusted),
        cmocka_unit_test(forwarded_untrusted_v6),
        cmocka_unit_test(get_relayed_chunked),
        cmocka_unit_test(get_relayed_close_delimited),
        cmocka_unit_test(get_http10_client),
        cmocka_unit_test(head_relayed),
        cmocka_unit_test(keepalive_reuse),
        cmocka_unit_test(idle_pooled_closed_by_upstream),
        cmocka_unit_test(upload_sized),
        cmocka_unit_test(upload_chunked),
        cmocka_unit_test(continue_100),
        cmocka_unit_test(pipelined),
        cmocka_unit_test(client_reset_before_answer),
        cmocka_unit_test(client_eof_before_answer),
        cmocka_unit_test(client_reset_during_answer),
        cmocka_unit_test(client_eof_during_answer),
        cmocka_unit_test(client_reset_during_upload),
        cmocka_unit_test(client_eof_during_upload),
        cmocka_unit_test(client_reset_while_connecting),
        cmocka_unit_test(client_reset_with_queued_answer),
        cmocka_unit_test(up_reset_before_answer),
        cmocka_unit_test(up_eof_before_answer),
        cmocka_unit_test(up_reset_mid_answer),
        cmocka_unit_test(up_eof_mid_chunked_answer),
        cmocka_unit_test(up_garbage_answer),
        cmocka_unit_test(up_read_timeout_504),
        cmocka_unit_test(up_stalls_mid_answer),
        cmocka_unit_test(up_connect_refused_by_hook),
        cmocka_unit_test(up_connect_refused),
        cmocka_unit_test(up_connect_timeout_504),
        cmocka_unit_test(no_upstream_503),
        cmocka_unit_test(dead_pooled_retried_for_get),
        cmocka_unit_test(dead_pooled_not_retried_for_post),
        cmocka_unit_test(dead_pooled_retry_fails_502),
        cmocka_unit_test(backpressure_answer),
        cmocka_unit_test(backpressure_chunked_answer),
        cmocka_unit_test(backpressure_upload),
        cmocka_unit_test(up_answers_during_upload),
        cmocka_unit_test(up_reset_during_upload),
        cmocka_unit_test(up_extra_bytes_not_pooled),
        cmocka_unit_test(up_connection_close_not_pooled),
        cmocka_unit_test(backpressure_slow_client_times_out),
        cmocka_unit_test(client_reset_during_paused_upload),
        cmocka_unit_test(pooled_idle_timeout),
        cmocka_unit_test(pool_size_limit),
        cmocka_unit_test(up_huge_header_502),
        cmocka_unit_test(graceful_stop),
        cmocka_unit_test(known_bug2_proxy_pipelined_under_backpressure_spins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
