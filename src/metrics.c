/* metrics.c - per-thread counters, the exposition text and the /metrics listener. */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

_Thread_local struct metrics_slot *metrics_tl;

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_slot *slots;

struct metrics_slot *metrics_slot_new(void)
{
    struct metrics_slot *s = aligned_alloc(64, sizeof *s);
    if (!s) return NULL;
    memset(s, 0, sizeof *s);
    pthread_mutex_lock(&slots_lock);
    s->next = slots;
    slots = s;
    pthread_mutex_unlock(&slots_lock);
    metrics_tl = s;
    return s;
}

uint64_t metrics_sum(unsigned i)
{
    uint64_t n = 0;
    pthread_mutex_lock(&slots_lock);
    for (struct metrics_slot *s = slots; s; s = s->next)
        n += atomic_load_explicit(&s->v[i], memory_order_relaxed);
    pthread_mutex_unlock(&slots_lock);
    return n;
}

static const unsigned bucket_ms[METRICS_NBUCKETS] = {1,   5,   10,   25,   50,   100,
                                                     250, 500, 1000, 2500, 5000, 10000};

static void observe(unsigned base, uint64_t ms)
{
    unsigned b = 0;
    while (b < METRICS_NBUCKETS && ms > bucket_ms[b]) b++;
    if (b < METRICS_NBUCKETS) metrics_inc(base + b); /* per bucket; summed up at render */
    metrics_inc(base + METRICS_NBUCKETS);
    metrics_add(base + METRICS_NBUCKETS + 1, ms);
}

void metrics_request(int status, unsigned route, uint64_t ms, int64_t upstream_ms)
{
    int cls = status / 100 - 1;
    if (cls < 0 || cls > 4) cls = 4;
    if (route >= MR_N) route = MR_NONE;
    metrics_inc(M_REQ + (unsigned)cls * MR_N + route);
    observe(M_REQ_DUR, ms);
    if (upstream_ms >= 0) observe(M_UP_DUR, (uint64_t)upstream_ms);
}

void metrics_handshake(enum metrics_hs_result r, const struct ssl_st *ssl)
{
    /* a failed handshake has a version only once a ClientHello was read */
    int v = ssl && (r != MH_FAILED || SSL_get_session(ssl) != NULL) ? SSL_version(ssl) : 0;
    unsigned p = v == TLS1_3_VERSION ? MP_TLS13 : v == TLS1_2_VERSION ? MP_TLS12 : MP_OTHER;
    metrics_inc(M_HS + (unsigned)r * 3 + p);
}

/* ----- the listener ----- */

static int listen_fd = -1;
static int stop_pipe[2] = {-1, -1};
static unsigned bound_port;
static pthread_t thread;
static int thread_started;

/* from metrics_text.c */
char *metrics_text(size_t *len);

char *metrics_render(size_t *len)
{
    return metrics_text(len);
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void answer(int fd, int status, const char *reason, const char *ctype, const char *body,
                   size_t blen, int head)
{
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, reason, ctype, blen);
    send_all(fd, hdr, (size_t)n);
    if (!head) send_all(fd, body, blen);
}

/* One request on fd: reads its head (2 s at most, 8 KiB at most), answers, returns. */
static void serve(int fd)
{
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char buf[8192];
    size_t len = 0;
    while (len < sizeof buf - 1) {
        ssize_t r = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n")) break;
    }
    buf[len] = '\0';
    static const char text[] = "text/plain; charset=utf-8";
    int head = strncmp(buf, "HEAD ", 5) == 0;
    const char *target = head ? buf + 5 : strncmp(buf, "GET ", 4) == 0 ? buf + 4 : NULL;
    if (!target) {
        static const char msg[] = "method not allowed: the metrics listener answers GET\n";
        answer(fd, 405, "Method Not Allowed", text, msg, sizeof msg - 1, 0);
        return;
    }
    size_t tl = strcspn(target, " \r\n");
    size_t pl = strcspn(target, "? \r\n");
    if (!(pl == 8 && strncmp(target, "/metrics", 8) == 0) || tl == 0) {
        static const char msg[] = "not found: the metrics are at /metrics\n";
        answer(fd, 404, "Not Found", text, msg, sizeof msg - 1, head);
        return;
    }
    size_t blen = 0;
    char *body = metrics_render(&blen);
    if (!body) {
        static const char msg[] = "out of memory\n";
        answer(fd, 500, "Internal Server Error", text, msg, sizeof msg - 1, head);
        return;
    }
    answer(fd, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, blen, head);
    free(body);
}

static void *listener_main(void *arg)
{
    (void)arg;
    struct pollfd p[2] = {{.fd = listen_fd, .events = POLLIN}, {.fd = stop_pipe[0], .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            log_error("metrics listener: poll: %s", strerror(errno));
            break;
        }
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) usleep(100000);
            continue;
        }
        serve(fd);
        close(fd);
    }
    return NULL;
}

int metrics_start(const char *host, unsigned port, char *err, size_t errlen)
{
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    const char *shown_fmt = strchr(host, ':') ? "[%s]:%u" : "%s:%u";
    char shown[96];
    snprintf(shown, sizeof shown, shown_fmt, host, port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        err_set(err, errlen, "cannot listen on %s for metrics (metrics-listen): %s", shown,
                gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        err_set(err, errlen, "cannot listen on %s for metrics (metrics-listen): %s", shown,
                strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                    : ((struct sockaddr_in *)&ss)->sin_port);
    if (pipe2(stop_pipe, O_CLOEXEC) != 0) {
        err_set(err, errlen, "metrics listener: pipe: %s", strerror(errno));
        close(fd);
        return -1;
    }
    listen_fd = fd;
    if (pthread_create(&thread, NULL, listener_main, NULL) != 0) {
        err_set(err, errlen, "metrics listener: cannot start its thread");
        metrics_stop();
        return -1;
    }
    thread_started = 1;
    snprintf(shown, sizeof shown, shown_fmt, host, bound_port);
    log_info("metrics at http://%s/metrics", shown);
    return 0;
}

unsigned metrics_port(void)
{
    return bound_port;
}

void metrics_stop(void)
{
    if (thread_started) {
        ssize_t w = write(stop_pipe[1], "x", 1);
        (void)w;
        pthread_join(thread, NULL);
        thread_started = 0;
    }
    for (int i = 0; i < 2; i++)
        if (stop_pipe[i] >= 0) close(stop_pipe[i]), stop_pipe[i] = -1;
    if (listen_fd >= 0) close(listen_fd), listen_fd = -1;
    bound_port = 0;
}
