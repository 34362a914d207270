/* memtest.h - shared harness of test_http.c and test_proxy.c: one worker without threads
 * or sockets, client and upstream connections on the in-memory transport (memio.h), the
 * clock advanced by hand, exact expected answers, and a leak/lifetime check after each
 * test.
 *
 * Readiness emulation (see KNOWN BUG 1 in test_http.c): memio wakes a connection with
 * conn_post(), and worker_settle() runs every posted connection with c->ev = 0. A real
 * epoll report carries EPOLLIN/EPOLLOUT, and http.c's h_run only reads when c->ev has
 * EPOLLIN; with ev = 0 a client that has input waiting is posted again by
 * conn_update_poll() forever and worker_settle() never returns. So every connection's
 * ops are wrapped here: before its run, c->ev is set to what epoll would report for the
 * memio's state and the events the connection asked for. Nothing in src/ is changed. */
#ifndef CERTGATE_MEMTEST_H
#define CERTGATE_MEMTEST_H

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "conn.h"
#include "gw.h"
#include "http.h"
#include "memio.h"
#include "upclient.h"

#define MT_MAX_MEM 32

struct mt {
    struct worker w;
    struct memio *cm[MT_MAX_MEM]; /* client transports */
    int ncm;
    struct memio *up[MT_MAX_MEM]; /* upstream transports, in connect order */
    int nup;
    int connects; /* connect_hook calls */
    int refuse;   /* connect_hook returns NULL */
    const struct conn_ops *orig_client, *orig_up;
    struct conn_ops wrap_client, wrap_up;
};

static struct mt T;

/* ----- watchdog: a test that hangs (worker_settle spinning) fails loudly ----- */

static const char *mt_test_name = "?";
static unsigned mt_watchdog_s = 60; /* seconds a test may take */

static void mt_alarm(int sig)
{
    (void)sig;
    static const char m1[] = "\nTEST HUNG (worker_settle did not return; a connection is "
                             "posted again and again): ";
    ssize_t r = write(2, m1, sizeof m1 - 1);
    r = write(2, mt_test_name, strlen(mt_test_name));
    r = write(2, "\n", 1);
    (void)r;
    abort();
}

/* ----- readiness emulation ----- */

static uint8_t mt_epoll_ev(const struct conn *c)
{
    const struct memio *m = c->mem;
    if (!m || !c->events) return 0;
    unsigned ev = 0;
    if (m->reset) return (uint8_t)(EPOLLERR | EPOLLHUP | (c->events & (EPOLLIN | EPOLLOUT)));
    if ((c->events & EPOLLIN) && (memio_pending(m) || m->in_eof)) ev |= EPOLLIN;
    if ((c->events & EPOLLOUT) && m->room > 0) ev |= EPOLLOUT;
    return (uint8_t)ev;
}

static void mt_wrap_new_upstreams(void);

static void mt_client_run(struct conn *c)
{
    c->ev = mt_epoll_ev(c);
    T.orig_client->run(c);
    mt_wrap_new_upstreams();
}

static void mt_up_run(struct conn *c)
{
    c->ev = mt_epoll_ev(c);
    T.orig_up->run(c);
    mt_wrap_new_upstreams();
}

static void mt_wrap_new_upstreams(void)
{
    for (int i = 0; i < T.nup; i++) {
        struct conn *c = T.up[i]->c;
        if (!c || c->ops == &T.wrap_up) continue;
        if (!T.orig_up) {
            T.orig_up = c->ops;
            T.wrap_up = *c->ops;
            T.wrap_up.run = mt_up_run;
        }
        c->ops = &T.wrap_up;
    }
}

static void settle(void)
{
    mt_wrap_new_upstreams();
    worker_settle(&T.w);
}

/* Advances the clock by ms, fires what is due, settles. */
static void advance(uint64_t ms)
{
    T.w.now += ms;
    worker_expire(&T.w);
    settle();
}

/* ----- setup ----- */

static struct memio *mt_connect_hook(struct worker *w, void *arg)
{
    (void)w;
    (void)arg;
    T.connects++;
    if (T.refuse) return NULL;
    assert_true(T.nup < MT_MAX_MEM);
    struct memio *m = memio_new();
    assert_non_null(m);
    T.up[T.nup++] = m;
    return m;
}

#define HEADER_MS 5000
#define KEEPALIVE_MS 10000
#define BODY_MS 7000

/* A worker whose snapshot has the given upstream (taken over; may be NULL). */
static void mt_start(const char *name, struct upstream *up)
{
    memset(&T, 0, sizeof T);
    mt_test_name = name;
    if (mt_watchdog_s) { /* 0: no watchdog (the fuzzers: libFuzzer has its own) */
        signal(SIGALRM, mt_alarm);
        alarm(mt_watchdog_s);
    }
    struct gw_snap *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->refs = 1;
    s->gen = 0; /* gw_snap_refresh keeps it: nothing is published in this process */
    s->max_upload_bytes = 1024 * 1024;
    s->header_timeout_ms = HEADER_MS;
    s->keepalive_timeout_ms = KEEPALIVE_MS;
    s->body_timeout_ms = BODY_MS;
    s->upstream = up;
    assert_int_equal(worker_init(&T.w, s), 0);
    T.w.connect_hook = mt_connect_hook;
}

/* A new client connection from the address peer on its own memio (runs at the next
 * settle). */
static struct memio *client_from(const void *peer, size_t peerlen)
{
    struct conn *c = http_accept(&T.w, -1, peer, peerlen, NULL);
    assert_non_null(c);
    struct memio *m = memio_new();
    assert_non_null(m);
    memio_attach(m, c);
    if (!T.orig_client) {
        T.orig_client = c->ops;
        T.wrap_client = *c->ops;
        T.wrap_client.run = mt_client_run;
    }
    c->ops = &T.wrap_client;
    assert_true(T.ncm < MT_MAX_MEM);
    T.cm[T.ncm++] = m;
    return m;
}

/* A new client connection from 127.0.0.1:40000. */
static struct memio *client(void)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(40000);
    sin.sin_addr.s_addr = htonl(0x7f000001);
    return client_from(&sin, sizeof sin);
}

/* Closes everything, settles, checks that nothing is left, frees. */
static void mt_finish(void)
{
    http_worker_close_all(&T.w);
    settle();
    up_pool_free(&T.w);
    settle();
    assert_int_equal(T.w.nclients, 0);
    assert_null(T.w.clients);
    assert_null(T.w.post_head);
    assert_null(T.w.reclaim);
    for (int k = 0; k < TQ_N; k++) assert_null(T.w.tq[k].head);
    for (int i = 0; i < T.ncm; i++) {
        assert_null(T.cm[i]->c);
        memio_free(T.cm[i]);
    }
    for (int i = 0; i < T.nup; i++) {
        assert_null(T.up[i]->c); /* every upstream connection closed */
        assert_true(T.up[i]->closed);
        memio_free(T.up[i]);
    }
    worker_cleanup(&T.w);
    if (mt_watchdog_s) alarm(0);
}

/* ----- bytes ----- */

static void push(struct memio *m, const char *s)
{
    memio_push_str(m, s);
}

/* What was written since the last take, as a malloc'd copy (the caller frees). */
static char *take(struct memio *m, size_t *len)
{
    size_t n;
    const char *p = memio_take(m, &n);
    char *r = malloc(n + 1);
    assert_non_null(r);
    memcpy(r, p, n + 1);
    if (len) *len = n;
    return r;
}

/* Asserts that exactly `want` was written since the last take. */
static void expect_out_(struct memio *m, const char *want, size_t wlen, const char *file,
                        int line)
{
    size_t n;
    const char *p = memio_take(m, &n);
    if (n != wlen || memcmp(p, want, n) != 0) {
        print_error("%s:%d: output differs\n--- expected (%zu bytes) ---\n%.*s\n--- got (%zu "
                    "bytes) ---\n%.*s\n---\n",
                    file, line, wlen, (int)(wlen > 4000 ? 4000 : wlen), want, n,
                    (int)(n > 4000 ? 4000 : n), p);
        _fail(file, line);
    }
}
#define expect_out(m, s) expect_out_((m), (s), strlen(s), __FILE__, __LINE__)
#define expect_outn(m, s, n) expect_out_((m), (s), (n), __FILE__, __LINE__)
#define expect_none(m) expect_out_((m), "", 0, __FILE__, __LINE__)

/* A growing string. */
struct sb {
    char *p;
    size_t len, cap;
};

static void sb_put(struct sb *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->len + n + 1) c *= 2;
        b->p = realloc(b->p, c);
        assert_non_null(b->p);
        b->cap = c;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *b, const char *fmt, ...)
{
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof tmp);
    sb_put(b, tmp, (size_t)n);
}

/* One of certgate's own answers (http_respond): conn is NULL, "close" or "keep-alive". */
static void sb_own(struct sb *b, int status, const char *conn, const char *ctype,
                   const char *body, size_t blen, int head)
{
    sb_printf(b, "HTTP/1.1 %d %s\r\n%sServer: certgate\r\n", status, http_reason(status), T.w.date);
    if (conn) sb_printf(b, "Connection: %s\r\n", conn);
    if (ctype) sb_printf(b, "Content-Type: %s\r\n", ctype);
    sb_printf(b, "Content-Length: %zu\r\n\r\n", blen);
    if (!head) sb_put(b, body, blen);
}

/* An http_respond_text answer: body msg + "\n". */
static void sb_text(struct sb *b, int status, const char *conn, const char *msg)
{
    char body[2048];
    snprintf(body, sizeof body, "%s\n", msg);
    sb_own(b, status, conn, "text/plain; charset=utf-8", body, strlen(body), 0);
}

/* The connection has ended its side: closed, or lingering after its FIN. */
static int ended(const struct memio *m)
{
    return m->closed || m->shut_wr;
}

/* ----- known bugs: run in a child with a time limit ----- */

static int known_bugs_enforced(void)
{
    const char *e = getenv("CERTGATE_KNOWN_BUGS");
    return e && *e == '1';
}

/* Runs fn in a child; 0 when it finished, else the signal or exit status. */
static int run_child(void (*fn)(void), unsigned secs)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        mt_watchdog_s = secs; /* mt_start arms it */
        alarm(secs);
        fn();
        _exit(0);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

/* A bug that was found by these tests and fixed: its test must pass. */
static __attribute__((unused)) void fixed_bug(const char *what, int rc)
{
    if (rc != 0) fail_msg("regression (status %d): %s", rc, what);
}
static __attribute__((unused)) void known_bug(const char *what, int rc)
{
    if (rc == 0) return; /* fixed */
    print_message("KNOWN BUG (status %d): %s\n", rc, what);
    if (known_bugs_enforced()) fail_msg("%s", what);
    skip();
}

#endif
