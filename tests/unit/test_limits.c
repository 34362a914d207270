/* Unit tests for the bounded resources of issue 10 on the in-memory transport (see
 * memtest.h): the upstream's max-connections with its queue (upclient.c), the minimum
 * transfer rate of request bodies and of answers to slow readers (http.c), and the
 * read-timeout that stops while the client is slow to take the answer. The clock is moved
 * by hand (advance). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "memtest.h"
#include "proxy.h"
#include "upstream.h"

#define UP "127.0.0.1:9"
#define CONNECT_S 5
#define READ_S 30
#define MAX_CONNS 2
#define QUEUE 2

static struct upstream *make_upstream(void)
{
    struct conf_upstream cu = {
        .url = "http://" UP,
        .connect_timeout_s = CONNECT_S,
        .read_timeout_s = READ_S,
        .max_connections = MAX_CONNS,
        .verify = 1,
        .queue_size = QUEUE,
    };
    struct upstream *t = NULL;
    char err[400];
    if (upstream_new(&cu, &t, err, sizeof err) != 0) fail_msg("upstream_new: %s", err);
    return t;
}

static void start(const char *name, unsigned min_rate)
{
    http_set_router(proxy_route);
    mt_start(name, make_upstream());
    T.w.snap->min_rate = min_rate;
}

static const char *GET_A = "GET /a HTTP/1.1\r\nHost: front\r\n\r\n";
static const char *UP_GET_A = "GET /a HTTP/1.1\r\nHost: " UP "\r\nX-Forwarded-For: 127.0.0.1\r\n"
                              "X-Forwarded-Proto: http\r\nX-Forwarded-Host: front\r\n\r\n";
static const char *OK_K = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk";

/* The 503 of a busy upstream: says when to try again. */
static void expect_busy(struct memio *m)
{
    char *a = take(m, NULL);
    if (strncmp(a, "HTTP/1.1 503 ", 13) != 0 || !strstr(a, "\r\nRetry-After: 1\r\n") ||
        !strstr(a, "is busy"))
        fail_msg("expected a 503 with Retry-After, got:\n%s", a);
    free(a);
}

/* Beyond max-connections requests wait in the queue (the upstream never sees more than
 * the cap), beyond the queue they get 503 at once; a connection that goes idle is handed
 * to the oldest waiting request (no new connection). */
static void queue_then_503(void **state)
{
    (void)state;
    start(__func__, 0);
    struct memio *c[5];
    for (int i = 0; i < 5; i++) {
        c[i] = client();
        push(c[i], GET_A);
    }
    settle();
    assert_int_equal(T.connects, MAX_CONNS); /* two in flight, two waiting */
    expect_busy(c[4]);                       /* the queue was full */
    for (int i = 0; i < 4; i++)
        expect_none(c[i]);
    expect_out(T.up[0], UP_GET_A);
    push(T.up[0], OK_K);
    settle();
    expect_out(c[0], OK_K);
    /* the oldest waiting request (c[2]) went out on that very connection */
    assert_int_equal(T.connects, MAX_CONNS);
    expect_out(T.up[0], UP_GET_A);
    push(T.up[0], OK_K);
    settle();
    expect_out(c[2], OK_K);
    expect_out(T.up[0], UP_GET_A); /* then c[3]'s */
    push(T.up[0], OK_K);
    push(T.up[1], OK_K);
    settle();
    expect_out(c[3], OK_K);
    expect_out(c[1], OK_K);
    assert_int_equal(T.connects, MAX_CONNS);
    mt_finish();
}

/* A waiting request gets 503 after connect-timeout; one whose client left is dropped
 * from the queue (its place goes to the next). */
static void queue_timeout_and_leaving_client(void **state)
{
    (void)state;
    start(__func__, 0);
    struct memio *c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = client();
        push(c[i], GET_A);
        settle();
    }
    assert_int_equal(T.connects, MAX_CONNS);
    memio_reset(c[2]); /* the first waiting client leaves */
    settle();
    assert_true(c[2]->closed);
    struct memio *late = client(); /* the queue has room again */
    push(late, GET_A);
    settle();
    expect_none(late);
    advance(CONNECT_S * 1000 - 1);
    expect_none(c[3]);
    advance(1);
    expect_busy(c[3]);
    expect_busy(late);
    assert_false(ended(c[3])); /* a 503 does not end the connection */
    /* the two in flight are not affected */
    push(T.up[0], OK_K);
    push(T.up[1], OK_K);
    settle();
    expect_out(c[0], OK_K);
    expect_out(c[1], OK_K);
    assert_int_equal(T.connects, MAX_CONNS);
    mt_finish();
}

/* A connection that closes frees its place: the waiting request opens a new one. */
static void queue_close_opens_new(void **state)
{
    (void)state;
    start(__func__, 0);
    struct memio *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = client();
        push(c[i], GET_A);
    }
    settle();
    assert_int_equal(T.connects, MAX_CONNS);
    push(T.up[0], "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nk");
    settle();
    expect_out(c[0], "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk");
    assert_true(T.up[0]->closed);
    assert_int_equal(T.connects, MAX_CONNS + 1);
    expect_out(T.up[2], UP_GET_A);
    push(T.up[2], OK_K);
    settle();
    expect_out(c[2], OK_K);
    mt_finish();
}

/* A body trickled a byte at a time within body-timeout each is cut by min-rate: bytes
 * done must stay >= min-rate x (elapsed - body-timeout). Nothing was answered: 408; its
 * upstream connection is closed. */
static void body_trickle_cut_by_min_rate(void **state)
{
    (void)state;
    start(__func__, 1000);
    struct memio *m = client();
    push(m, "POST /a HTTP/1.1\r\nHost: front\r\nContent-Length: 1000\r\n\r\n");
    settle();
    assert_int_equal(T.connects, 1);
    free(take(T.up[0], NULL));
    uint64_t t0 = T.w.now;
    /* a byte every 5 s (< body-timeout 7 s): each one used to re-arm the timer */
    push(m, "x");
    settle();
    advance(5000);
    push(m, "x");
    settle();
    /* 2 bytes allow 7 s + 2 ms in all */
    advance(t0 + BODY_MS + 2 - T.w.now - 1);
    expect_none(m);
    advance(1);
    char *a = take(m, NULL);
    assert_true(strncmp(a, "HTTP/1.1 408 ", 13) == 0);
    free(a);
    assert_true(T.up[0]->closed); /* the upstream connection was released */
    mt_finish();
}

/* A steady body above min-rate is not cut, even when it takes far longer than
 * body-timeout. */
static void body_steady_not_cut(void **state)
{
    (void)state;
    start(__func__, 1000);
    struct memio *m = client();
    push(m, "POST /a HTTP/1.1\r\nHost: front\r\nContent-Length: 30000\r\n\r\n");
    settle();
    char chunk[1500];
    memset(chunk, 'b', sizeof chunk);
    for (int i = 0; i < 20; i++) { /* 1,500 bytes per second for 20 s */
        memio_push(m, chunk, sizeof chunk);
        settle();
        advance(1000);
        assert_false(ended(m));
    }
    push(T.up[0], OK_K);
    settle();
    char *a = take(m, NULL);
    assert_true(strstr(a, "HTTP/1.1 200 OK") != NULL);
    free(a);
    mt_finish();
}

/* A client that reads the answer slower than min-rate is cut (after the grace), and its
 * upstream connection released; before, it stayed as long as each step came within
 * body-timeout. The upstream's read-timeout does not run meanwhile. */
static void slow_reader_cut_by_min_rate(void **state)
{
    (void)state;
    start(__func__, 1000);
    struct memio *m = client();
    push(m, GET_A);
    settle();
    memio_set_room(m, 0);
    char head[100];
    snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 400000);
    push(T.up[0], head);
    char *big = malloc(400000);
    memset(big, 'z', 400000);
    memio_push(T.up[0], big, 400000);
    settle();
    /* 500 bytes a second: half of min-rate */
    int cut_at = -1;
    for (int s = 1; s <= 40 && cut_at < 0; s++) {
        advance(1000);
        if (ended(m) || m->closed)
            cut_at = s;
        else
            memio_set_room(m, 500);
        settle();
        free(take(m, NULL));
    }
    /* 500 x t >= 1000 x (t - 7): cut at about 14 s */
    if (cut_at < 13 || cut_at > 16) fail_msg("cut after %d s, expected about 14 s", cut_at);
    assert_true(T.up[0]->closed);
    free(big);
    mt_finish();
}

/* A slow but steady reader (above min-rate) gets the whole answer even when that takes
 * longer than the upstream's read-timeout: that timer stops while reading from the
 * upstream waits for the client (the upstream sends 100 KiB a second, the client takes
 * 4 KiB a second, so reading pauses for longer than read-timeout). */
static void steady_reader_longer_than_read_timeout(void **state)
{
    (void)state;
    start(__func__, 1000);
    struct memio *m = client();
    push(m, GET_A);
    settle();
    memio_set_room(m, 0);
    size_t size = 600 * 1024, sent = 0, got = 0, piece = 100 * 1024;
    char head[100];
    snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", size);
    push(T.up[0], head);
    char *big = malloc(piece);
    memset(big, 'z', piece);
    int s;
    for (s = 0; s < 200 && !m->closed && got < size; s++) {
        if (sent < size && !T.up[0]->closed) {
            memio_push(T.up[0], big, piece);
            sent += piece;
        }
        memio_set_room(m, 4096);
        settle();
        size_t n;
        free(take(m, &n));
        got += n;
        advance(1000);
    }
    if (m->closed || got < size)
        fail_msg("the client got %zu of %zu bytes in %d s (closed: %d)", got, size, s, m->closed);
    assert_true(s > 2 * READ_S);
    assert_false(T.up[0]->closed); /* back in the pool */
    free(big);
    mt_finish();
}

int main(void)
{
    (void)sb_text; /* memtest.h helpers this file does not use */
    (void)run_child;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(queue_then_503),
        cmocka_unit_test(queue_timeout_and_leaving_client),
        cmocka_unit_test(queue_close_opens_new),
        cmocka_unit_test(body_trickle_cut_by_min_rate),
        cmocka_unit_test(body_steady_not_cut),
        cmocka_unit_test(slow_reader_cut_by_min_rate),
        cmocka_unit_test(steady_reader_longer_than_read_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
