/* test_metrics.c - per-thread counters summed at scrape time, histograms, the exposition
 * text and the listener (a real socket, a real HTTP exchange). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"

#define THREADS 4
#define PER_THREAD 100000

static void *count_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_THREAD; i++) metrics_inc(M_TOKEN_FAIL);
    return NULL;
}

/* every thread counts in its own slot; the sum sees all of them */
static void test_threads_sum(void **state)
{
    (void)state;
    uint64_t before = metrics_sum(M_TOKEN_FAIL);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, count_thread, NULL), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    assert_int_equal(metrics_sum(M_TOKEN_FAIL) - before, (uint64_t)THREADS * PER_THREAD);
}

/* the exposition: a request counted by class and route, the histogram cumulative */
static void test_render(void **state)
{
    (void)state;
    metrics_request(204, MR_HEALTH, 3, -1);
    metrics_request(404, MR_API, 30, -1);
    metrics_request(502, MR_PROXY, 20000, 7);
    metrics_request(999, 77, 0, -1); /* out of range: 5xx, route none */
    size_t len = 0;
    char *t = metrics_render(&len);
    assert_non_null(t);
    assert_int_equal(strlen(t), len);
    assert_non_null(strstr(t, "certgate_http_requests_total{code=\"2xx\",route=\"health\"} 1\n"));
    assert_non_null(strstr(t, "certgate_http_requests_total{code=\"4xx\",route=\"api\"} 1\n"));
    assert_non_null(strstr(t, "certgate_http_requests_total{code=\"5xx\",route=\"proxy\"} 1\n"));
    assert_non_null(strstr(t, "certgate_http_requests_total{code=\"5xx\",route=\"none\"} 1\n"));
    assert_non_null(strstr(t, "certgate_http_request_duration_seconds_bucket{le=\"0.001\"} 1\n"));
    assert_non_null(strstr(t, "certgate_http_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
    assert_non_null(strstr(t, "certgate_http_request_duration_seconds_bucket{le=\"0.05\"} 3\n"));
    assert_non_null(strstr(t, "certgate_http_request_duration_seconds_bucket{le=\"10\"} 3\n"));
    assert_non_null(strstr(t, "certgate_http_request_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(t, "certgate_http_request_duration_seconds_sum 20.033\n"));
    assert_non_null(strstr(t, "certgate_upstream_duration_seconds_count 1\n"));
    assert_non_null(strstr(t, "# TYPE process_open_fds gauge\n"));
    free(t);
}

static int http_get(unsigned port, const char *req, char *out, size_t outlen)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
    send(fd, req, strlen(req), 0);
    size_t n = 0;
    for (ssize_t r; n < outlen - 1 && (r = recv(fd, out + n, outlen - 1 - n, 0)) > 0;) n += (size_t)r;
    out[n] = '\0';
    close(fd);
    return 0;
}

static void test_listener(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(metrics_start("127.0.0.1", 0, err, sizeof err), 0);
    unsigned port = metrics_port();
    assert_true(port > 0);
    /* a second listener on the same port: a sentence naming it */
    char again[256];
    snprintf(again, sizeof again, "cannot listen on 127.0.0.1:%u for metrics (metrics-listen): "
                                  "Address already in use", port);
    static char buf[1 << 16];
    assert_int_equal(http_get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof buf), 0);
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    assert_non_null(strstr(buf, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\n# HELP certgate_build_info "));
    assert_int_equal(http_get(port, "GET /other HTTP/1.1\r\n\r\n", buf, sizeof buf), 0);
    assert_memory_equal(buf, "HTTP/1.1 404 Not Found\r\n", 24);
    assert_int_equal(http_get(port, "DELETE /metrics HTTP/1.1\r\n\r\n", buf, sizeof buf), 0);
    assert_memory_equal(buf, "HTTP/1.1 405 ", 13);
    metrics_stop();
    assert_int_equal(metrics_port(), 0);
    /* the port is free again; a taken one is refused */
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* our answers' TIME_WAIT */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(metrics_start("127.0.0.1", port, err, sizeof err), -1);
    assert_string_equal(err, again);
    close(fd);
    assert_int_equal(metrics_start("no-such-host.invalid", 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot listen on no-such-host.invalid:1 for metrics"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_sum),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_listener),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
