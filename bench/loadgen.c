/* loadgen.c - the benchmark's TLS load generator (see bench/run.sh, BENCHMARKS.md).
 *
 * One thread, non-blocking sockets, edge-triggered epoll, N connection slots. Modes:
 *   -m hs    each slot cycles: connect -> full or resumed handshake -> GET with
 *            "Connection: close" -> whole response -> close; one op = one cycle, its
 *            latency runs from connect() to the last byte of the response.
 *   -m ka    each slot connects once and sends requests one after the other on the
 *            connection (keep-alive); with -n it reconnects after that many requests (the
 *            last one says "Connection: close"). One op = one request, timed from its
 *            first byte written to the last byte of its response.
 *   -m hold  opens -c connections (at most -k handshaking at once), one GET on each, then
 *            keeps them all open and idle; prints "READY <held>" on stdout and waits for
 *            stdin to close (or -d seconds); then reports how many are still open.
 * With -r a slot offers the newest session it received (resumption), as TLS 1.3 clients do:
 * OpenSSL's client, like browsers, uses a TLS 1.3 ticket once, so a server that issues
 * no new ticket on a resumed connection gets a full handshake next time. With -R a slot
 * instead keeps the first session it received and offers a copy of it every time (one
 * ticket reused: resumption even where the server issues no new ticket). Both count what
 * the client saw (SSL_session_reused) and what the server said (X-Session-Reused).
 * Every response is parsed (Content-Length, chunked, or up to the close) and checked:
 * a status other than 2xx is an error. Only loopback addresses are accepted.
 *
 * Output: one JSON object on stdout (the last line). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

enum mode { M_HS, M_KA, M_HOLD };
enum state { S_FREE, S_CONNECT, S_HANDSHAKE, S_SEND, S_RECV, S_IDLE };
enum body { B_LENGTH, B_CHUNKED, B_CLOSE, B_NONE };
enum chunk { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER };
enum err {
    E_CONNECT,
    E_HANDSHAKE,
    E_WRITE,
    E_READ,
    E_KA_CLOSED,
    E_STATUS,
    E_TIMEOUT,
    E_HEADER,
    E_PARSE,
    E_UNFINISHED,
    E_N
};
static const char *const err_names[E_N] = {
    "connect", "handshake", "write",          "read",  "keepalive_closed",
    "status",  "timeout",   "header_missing", "parse", "unfinished"};

struct slot {
    int fd;
    SSL *ssl;
    int st;
    uint32_t gen;      /* tells a stale epoll event from one of the current socket */
    SSL_SESSION *sess; /* the previous connection's session (-r) */
    unsigned reqs;     /* requests completed on this connection */
    uint64_t t_op;     /* start of the operation being timed (ns) */
    uint64_t deadline; /* ns; 0: none */
    const char *req;
    size_t req_len;
    /* the response being read */
    char head[8192];
    size_t hlen;
    int head_done, status, body, chunk_st, conn_close, got_byte;
    int64_t remain;
    char line[80];
    size_t llen;
};

/* options */
static struct sockaddr_in addr;
static int mode = M_KA, nconns = 32, resume, reuse_first, check_header, track_certs, verbose,
           stop_on_stdin;
static unsigned per_conn;    /* -n: requests per connection, 0 = unlimited */
static uint64_t total_limit; /* -N: stop after that many ops */
static double duration = 10, op_timeout = 10;
static int max_connecting = 64;
static const char *path = "/rest/health";

/* state */
static SSL_CTX *ctx;
static int ep;
static struct slot *slots;
static uint64_t t_start, t_stop, now_ns;
static int stopping, ready, stdin_closed;
static int active;     /* slots not S_FREE */
static int started;    /* hold: slots started so far */
static int connecting; /* hold: slots started and not yet idle or failed */
static char buf[65536];
static char req_ka[512], req_close[512];
static size_t req_ka_len, req_close_len;

/* results */
static uint64_t ops, errors[E_N], bytes_body, handshakes, offered, resumed_client, hdr_resumed,
    hdr_full, sessions_received, cert_changes, held, closed_while_held;
static uint32_t *lat;
static size_t nlat, caplat;
static char tls_info[256];
static unsigned char last_cert[EVP_MAX_MD_SIZE], certs_seen[16][EVP_MAX_MD_SIZE];
static unsigned last_cert_len, ncerts_seen;

static uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static void lat_add(uint64_t ns)
{
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 16;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) die("out of memory");
    }
    uint64_t us = ns / 1000;
    lat[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct slot *s = SSL_get_app_data(ssl);
    sessions_received++;
    if (!resume || !s) return 0;
    if (s->sess && reuse_first) return 0;
    if (s->sess) SSL_SESSION_free(s->sess);
    s->sess = sess;
    return 1; /* the slot keeps the reference */
}

/* ----- connection life cycle ----- */

static void slot_start(struct slot *s);

static void slot_close(struct slot *s)
{
    /* a session is only offered again when the connection was shut down cleanly; mark it
     * so without spending a close_notify (the server has closed already, or will on EOF) */
    if (s->ssl && SSL_is_init_finished(s->ssl))
        SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    if (s->ssl) SSL_free(s->ssl);
    s->ssl = NULL;
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    if (s->st != S_FREE) active--;
    s->st = S_FREE;
}

/* The slot's cycle ended (done or failed): start the next one unless stopping. */
static void slot_next(struct slot *s)
{
    slot_close(s);
    if (!stopping && mode != M_HOLD) slot_start(s);
}

static uint64_t errors_total(void)
{
    uint64_t n = 0;
    for (int i = 0; i < E_N; i++)
        n += errors[i];
    return n;
}

static void slot_fail(struct slot *s, int e)
{
    errors[e]++;
    if (total_limit && ops + errors_total() >= total_limit) stopping = 1; /* -N: attempts */
    if (mode == M_HOLD && s->st != S_IDLE) connecting--;
    slot_next(s);
}

static void slot_start(struct slot *s)
{
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        errors[E_CONNECT]++;
        if (mode == M_HOLD) connecting--;
        return;
    }
    s->gen++;
    active++;
    s->st = S_CONNECT;
    s->reqs = 0;
    s->t_op = now_ns;
    s->deadline = now_ns + (uint64_t)(op_timeout * 1e9);
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                             .data.u64 = (uint64_t)s->gen << 32 | (uint64_t)(s - slots)};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) != 0) die("epoll_ctl failed");
    if (connect(s->fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
        slot_fail(s, E_CONNECT);
        return;
    }
    /* the first event (writable) continues */
}

static void request_begin(struct slot *s)
{
    int last = mode == M_HS || (per_conn && s->reqs + 1 >= per_conn);
    s->req = last ? req_close : req_ka;
    s->req_len = last ? req_close_len : req_ka_len;
    s->st = S_SEND;
    s->hlen = 0;
    s->head_done = s->status = s->conn_close = s->got_byte = 0;
    s->llen = 0;
    if (mode != M_HS) {
        s->t_op = now_ns;
        s->deadline = now_ns + (uint64_t)(op_timeout * 1e9);
    }
}

static void note_certificate(SSL *ssl)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (!peer || !X509_digest(peer, EVP_sha256(), md, &len)) return;
    if (last_cert_len && (len != last_cert_len || memcmp(md, last_cert, len) != 0)) cert_changes++;
    memcpy(last_cert, md, len);
    last_cert_len = len;
    for (unsigned i = 0; i < ncerts_seen; i++)
        if (memcmp(certs_seen[i], md, len) == 0) return;
    if (ncerts_seen < 16) memcpy(certs_seen[ncerts_seen++], md, len);
}

static void note_tls(SSL *ssl)
{
    X509 *peer = SSL_get0_peer_certificate(ssl);
    EVP_PKEY *pk = peer ? X509_get0_pubkey(peer) : NULL;
    int nid = SSL_get_negotiated_group(ssl);
    const char *grp = SSL_group_to_name(ssl, nid);
    const char *kt = !pk                                        ? "?"
                     : EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA ? "RSA"
                     : EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC  ? "EC"
                                                                : "other";
    snprintf(tls_info, sizeof tls_info, "%s %s %s %s-%d", SSL_get_version(ssl),
             SSL_get_cipher_name(ssl), grp ? grp : "?", kt, pk ? EVP_PKEY_get_bits(pk) : 0);
}

/* ----- response parsing ----- */

static int parse_head(struct slot *s)
{
    s->head[s->hlen] = 0;
    if (strncmp(s->head, "HTTP/1.", 7) != 0 || s->hlen < 12) return -1;
    s->status = atoi(s->head + 9);
    s->body = B_CLOSE;
    s->remain = 0;
    int have_hdr = 0;
    for (char *l = strstr(s->head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        char *h = l + 2, *colon = strchr(h, ':'), *eol = strstr(h, "\r\n");
        if (!colon || !eol || colon > eol) continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t nl = (size_t)(colon - h), vl = (size_t)(eol - v);
        if (nl == 14 && strncasecmp(h, "Content-Length", 14) == 0) {
            if (s->body != B_CHUNKED) {
                s->body = B_LENGTH;
                s->remain = strtoll(v, NULL, 10);
            }
        } else if (nl == 17 && strncasecmp(h, "Transfer-Encoding", 17) == 0) {
            if (vl >= 7 && strncasecmp(eol - 7, "chunked", 7) == 0) {
                s->body = B_CHUNKED;
                s->chunk_st = CH_SIZE;
            }
        } else if (nl == 10 && strncasecmp(h, "Connection", 10) == 0) {
            if (vl >= 5 && strncasecmp(v, "close", 5) == 0) s->conn_close = 1;
        } else if (nl == 16 && strncasecmp(h, "X-Session-Reused", 16) == 0) {
            have_hdr = 1;
            if (*v == '1')
                hdr_resumed++;
            else
                hdr_full++;
        }
    }
    if (check_header && !have_hdr) errors[E_HEADER]++;
    if (s->status == 204 || s->status == 304 || s->status < 200) s->body = B_NONE;
    if (s->body == B_LENGTH && s->remain == 0) s->body = B_NONE;
    if (verbose == 1) {
        fprintf(stderr, "%.*s", (int)s->hlen, s->head);
        verbose = 2;
    }
    return 0;
}

/* Consumes body bytes; 1 when the response is complete, 0 for more, -1 malformed. */
static int body_feed(struct slot *s, const char *p, size_t n)
{
    if (s->body == B_NONE) return 1;
    if (s->body == B_CLOSE) {
        bytes_body += n;
        return 0;
    }
    if (s->body == B_LENGTH) {
        size_t take = (int64_t)n < s->remain ? n : (size_t)s->remain;
        s->remain -= (int64_t)take;
        bytes_body += take;
        return s->remain == 0;
    }
    while (n > 0) {
        switch (s->chunk_st) {
        case CH_DATA: {
            size_t take = (int64_t)n < s->remain ? n : (size_t)s->remain;
            s->remain -= (int64_t)take;
            bytes_body += take;
            p += take;
            n -= take;
            if (s->remain == 0) {
                s->chunk_st = CH_DATA_END;
                s->llen = 0;
            }
            break;
        }
        default: { /* a line: chunk size, CRLF after data, or a trailer line */
            char c = *p++;
            n--;
            if (c != '\n') {
                if (s->llen < sizeof s->line - 1) s->line[s->llen++] = c;
                break;
            }
            s->line[s->llen] = 0;
            size_t len = s->llen;
            if (len && s->line[len - 1] == '\r') s->line[--len] = 0;
            s->llen = 0;
            if (s->chunk_st == CH_DATA_END) {
                if (len) return -1;
                s->chunk_st = CH_SIZE;
            } else if (s->chunk_st == CH_SIZE) {
                char *end;
                s->remain = strtoll(s->line, &end, 16);
                if (end == s->line || s->remain < 0) return -1;
                s->chunk_st = s->remain ? CH_DATA : CH_TRAILER;
            } else if (len == 0) { /* CH_TRAILER: the empty line ends the body */
                return 1;
            }
        }
        }
    }
    return 0;
}

/* Feeds response bytes; 1 complete, 0 more, -1 malformed. */
static int response_feed(struct slot *s, const char *p, size_t n)
{
    s->got_byte = 1;
    if (s->head_done) return body_feed(s, p, n);
    size_t old = s->hlen, room = sizeof s->head - 1 - s->hlen;
    size_t take = n < room ? n : room;
    memcpy(s->head + s->hlen, p, take);
    s->hlen += take;
    s->head[s->hlen] = 0;
    char *end = strstr(s->head + (old > 3 ? old - 3 : 0), "\r\n\r\n");
    if (!end) return s->hlen == sizeof s->head - 1 ? -1 : 0;
    size_t head_len = (size_t)(end - s->head) + 4;
    size_t extra_in_head = s->hlen - head_len;
    s->hlen = head_len;
    s->head_done = 1;
    if (parse_head(s) != 0) return -1;
    int rc = body_feed(s, s->head + head_len, extra_in_head);
    if (rc != 0 || take == n) return rc;
    return body_feed(s, p + take, n - take);
}

static void response_done(struct slot *s)
{
    ops++;
    lat_add(now_ns - s->t_op);
    s->reqs++;
    if (s->status < 200 || s->status > 299) errors[E_STATUS]++;
    if (mode == M_HOLD) {
        s->st = S_IDLE;
        s->deadline = 0;
        held++;
        connecting--;
        return;
    }
    if (total_limit && ops + errors_total() >= total_limit) stopping = 1;
    if (mode == M_HS || s->conn_close || stopping || (per_conn && s->reqs >= per_conn)) {
        slot_next(s);
        return;
    }
    request_begin(s);
}

/* ----- the state machine ----- */

static int io_eof(SSL *ssl, int rc)
{
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_ZERO_RETURN) return 1;
    if (e == SSL_ERROR_SYSCALL) return rc == 0 || errno == 0 || errno == ECONNRESET;
    if (e == SSL_ERROR_SSL)
        return ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
    return 0;
}

static void drive(struct slot *s)
{
    for (;;) {
        switch (s->st) {
        case S_CONNECT: {
            int soerr = 0;
            socklen_t l = sizeof soerr;
            getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
            if (soerr) {
                slot_fail(s, E_CONNECT);
                return;
            }
            s->ssl = SSL_new(ctx);
            if (!s->ssl || !SSL_set_fd(s->ssl, s->fd)) die("SSL_new failed");
            SSL_set_app_data(s->ssl, s);
            SSL_set_tlsext_host_name(s->ssl, "localhost");
            if (resume && s->sess) {
                if (reuse_first) { /* the client marks a used TLS 1.3 session spent */
                    SSL_SESSION *copy = SSL_SESSION_dup(s->sess);
                    if (copy) SSL_set_session(s->ssl, copy);
                    SSL_SESSION_free(copy);
                } else {
                    SSL_set_session(s->ssl, s->sess);
                }
                offered++;
            }
            SSL_set_connect_state(s->ssl);
            s->st = S_HANDSHAKE;
            break;
        }
        case S_HANDSHAKE: {
            ERR_clear_error();
            int rc = SSL_do_handshake(s->ssl);
            if (rc != 1) {
                int e = SSL_get_error(s->ssl, rc);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
                if (verbose) {
                    char why[256];
                    ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
                    fprintf(stderr, "loadgen: handshake failed: %s\n", why);
                }
                ERR_clear_error();
                slot_fail(s, E_HANDSHAKE);
                return;
            }
            handshakes++;
            if (SSL_session_reused(s->ssl)) resumed_client++;
            if (!tls_info[0]) note_tls(s->ssl);
            if (track_certs) note_certificate(s->ssl);
            if (stopping && mode == M_KA) {
                slot_next(s);
                return;
            }
            request_begin(s);
            break;
        }
        case S_SEND: {
            ERR_clear_error();
            int rc = SSL_write(s->ssl, s->req, (int)s->req_len);
            if (rc <= 0) {
                int e = SSL_get_error(s->ssl, rc);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
                ERR_clear_error();
                slot_fail(s, s->reqs ? E_KA_CLOSED : E_WRITE);
                return;
            }
            s->st = S_RECV;
            break;
        }
        case S_RECV:
        case S_IDLE: {
            ERR_clear_error();
            int rc = SSL_read(s->ssl, buf, sizeof buf);
            if (rc <= 0) {
                int e = SSL_get_error(s->ssl, rc);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
                int eof = io_eof(s->ssl, rc);
                ERR_clear_error();
                if (s->st == S_IDLE) {
                    closed_while_held++;
                    slot_close(s);
                    return;
                }
                if (eof && s->head_done && s->body == B_CLOSE) {
                    response_done(s);
                    if (s->st != S_FREE) slot_next(s);
                    return;
                }
                slot_fail(s, !s->got_byte && s->reqs ? E_KA_CLOSED : E_READ);
                return;
            }
            if (s->st == S_IDLE) break; /* unexpected bytes while idle: ignore */
            int done = response_feed(s, buf, (size_t)rc);
            if (done < 0) {
                slot_fail(s, E_PARSE);
                return;
            }
            if (done) {
                response_done(s);
                if (s->st == S_FREE || s->st == S_IDLE) return;
            }
            break;
        }
        default:
            return;
        }
    }
}

/* ----- main ----- */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen -p PORT [-a 127.0.0.1] [-m hs|ka|hold] [-c CONNS] [-d SECONDS]\n"
            "               [-n REQS_PER_CONN] [-N TOTAL_OPS] [-u PATH] [-r|-R] [-H] [-C]\n"
            "               [-k MAX_CONNECTING] [-t OP_TIMEOUT] [-S] [-v]\n"
            "  -r offer the newest session (resumption)     -H expect X-Session-Reused\n"
            "  -R offer the first session again and again\n"
            "  -C track the served certificate              -S stop when stdin closes\n");
    exit(2);
}

static void print_json(double elapsed)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("{\"mode\":\"%s\",\"conns\":%d,\"elapsed_s\":%.4f,\"ops\":%llu,\"ops_per_s\":%.1f,",
           mode == M_HS   ? "hs"
           : mode == M_KA ? "ka"
                          : "hold",
           nconns, elapsed, (unsigned long long)ops, elapsed > 0 ? (double)ops / elapsed : 0.0);
    printf("\"lat_us\":{");
    if (nlat) {
        static const double ps[] = {0.5, 0.9, 0.99, 0.999};
        static const char *const pn[] = {"p50", "p90", "p99", "p999"};
        double sum = 0;
        for (size_t i = 0; i < nlat; i++)
            sum += lat[i];
        for (int i = 0; i < 4; i++) {
            size_t k = (size_t)(ps[i] * (double)nlat);
            if (k >= nlat) k = nlat - 1;
            printf("\"%s\":%u,", pn[i], lat[k]);
        }
        printf("\"max\":%u,\"mean\":%.1f", lat[nlat - 1], sum / (double)nlat);
    }
    printf("},\"errors\":{");
    uint64_t total = errors_total();
    for (int i = 0; i < E_N; i++)
        printf("%s\"%s\":%llu", i ? "," : "", err_names[i], (unsigned long long)errors[i]);
    printf("},\"errors_total\":%llu,\"handshakes\":%llu,\"offered\":%llu,"
           "\"resumed_client\":%llu,\"hdr_resumed\":%llu,\"hdr_full\":%llu,"
           "\"sessions_received\":%llu,\"bytes_body\":%llu,\"cert_changes\":%llu,"
           "\"certs_seen\":%u,\"held\":%llu,\"closed_while_held\":%llu,\"still_open\":%llu,"
           "\"client_cpu_s\":%.3f,\"tls\":\"%s\"}\n",
           (unsigned long long)total, (unsigned long long)handshakes, (unsigned long long)offered,
           (unsigned long long)resumed_client, (unsigned long long)hdr_resumed,
           (unsigned long long)hdr_full, (unsigned long long)sessions_received,
           (unsigned long long)bytes_body, (unsigned long long)cert_changes, ncerts_seen,
           (unsigned long long)held, (unsigned long long)closed_while_held,
           (unsigned long long)(held - closed_while_held), cpu, tls_info);
    fflush(stdout);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "a:p:m:c:d:n:N:u:rRHCk:t:Sv")) != -1) {
        switch (opt) {
        case 'a':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'm':
            mode = strcmp(optarg, "hs") == 0     ? M_HS
                   : strcmp(optarg, "ka") == 0   ? M_KA
                   : strcmp(optarg, "hold") == 0 ? M_HOLD
                                                 : -1;
            if (mode < 0) usage();
            break;
        case 'c':
            nconns = atoi(optarg);
            break;
        case 'd':
            duration = atof(optarg);
            break;
        case 'n':
            per_conn = (unsigned)atoi(optarg);
            break;
        case 'N':
            total_limit = strtoull(optarg, NULL, 10);
            break;
        case 'u':
            path = optarg;
            break;
        case 'r':
            resume = 1;
            break;
        case 'R':
            resume = reuse_first = 1;
            break;
        case 'H':
            check_header = 1;
            break;
        case 'C':
            track_certs = 1;
            break;
        case 'k':
            max_connecting = atoi(optarg);
            break;
        case 't':
            op_timeout = atof(optarg);
            break;
        case 'S':
            stop_on_stdin = 1;
            break;
        case 'v':
            verbose = 1;
            break;
        default:
            usage();
        }
    }
    if (port <= 0 || port > 65535 || nconns < 1 || max_connecting < 1 || duration <= 0) usage();
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("-a takes an IPv4 address");
    if ((ntohl(addr.sin_addr.s_addr) >> 24) != 127) die("loads go to loopback addresses only");
    signal(SIGPIPE, SIG_IGN);

    req_ka_len = (size_t)snprintf(req_ka, sizeof req_ka,
                                  "GET %s HTTP/1.1\r\nHost: localhost\r\n"
                                  "User-Agent: certgate-bench\r\n\r\n",
                                  path);
    req_close_len = (size_t)snprintf(req_close, sizeof req_close,
                                     "GET %s HTTP/1.1\r\nHost: localhost\r\n"
                                     "User-Agent: certgate-bench\r\nConnection: close\r\n\r\n",
                                     path);

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    SSL_CTX_set_read_ahead(ctx, 1);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1 failed");
    slots = calloc((size_t)nconns, sizeof *slots);
    if (!slots) die("out of memory");
    for (int i = 0; i < nconns; i++)
        slots[i].fd = -1;
    const uint64_t stdin_tag = UINT64_MAX;
    if (stop_on_stdin || mode == M_HOLD) {
        fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = stdin_tag};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) != 0)
            fprintf(stderr, "loadgen: stdin cannot be polled; waiting -d seconds instead\n");
    }

    now_ns = t_start = clock_ns();
    t_stop = t_start + (uint64_t)(duration * 1e9);
    if (mode == M_HOLD) {
        for (; started < nconns && connecting < max_connecting; started++, connecting++)
            slot_start(&slots[started]);
    } else {
        for (int i = 0; i < nconns; i++)
            slot_start(&slots[i]);
    }

    struct epoll_event evs[256];
    uint64_t last_scan = t_start, drain_until = 0, t_end = 0;
    for (;;) {
        int n = epoll_wait(ep, evs, 256, 20);
        now_ns = clock_ns();
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == stdin_tag) {
                char tmp[256];
                ssize_t r;
                while ((r = read(0, tmp, sizeof tmp)) > 0) {
                }
                if (r == 0) {
                    stdin_closed = 1;
                    epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
                }
                continue;
            }
            struct slot *s = &slots[(uint32_t)tag];
            if (s->st != S_FREE && s->gen == (uint32_t)(tag >> 32)) drive(s);
        }
        if (now_ns - last_scan >= 100000000u) { /* timeouts, every 100 ms */
            last_scan = now_ns;
            for (int i = 0; i < nconns; i++) {
                struct slot *s = &slots[i];
                if (s->st != S_FREE && s->st != S_IDLE && s->deadline && now_ns > s->deadline)
                    slot_fail(s, E_TIMEOUT);
            }
        }
        if (mode == M_HOLD) {
            while (started < nconns && connecting < max_connecting) {
                connecting++;
                slot_start(&slots[started++]);
            }
            if (!ready && started == nconns && connecting == 0) {
                ready = 1;
                t_end = now_ns; /* connect phase ends; the rates are for it */
                printf("READY %llu\n", (unsigned long long)held);
                fflush(stdout);
                t_stop = now_ns + (uint64_t)(duration * 1e9);
            }
            if (ready && (stdin_closed || now_ns >= t_stop)) break;
            continue;
        }
        if (!stopping && (now_ns >= t_stop || (stop_on_stdin && stdin_closed))) stopping = 1;
        if (stopping) {
            if (!drain_until) drain_until = now_ns + 3000000000u;
            if (active == 0 || now_ns >= drain_until) break;
        }
    }
    if (!t_end) t_end = clock_ns();
    /* what is still in flight after the drain is abandoned: an error, unless it is a
     * held connection or a new connection that had not sent its request yet */
    for (int i = 0; i < nconns; i++) {
        int st = slots[i].st;
        if (st == S_SEND || st == S_RECV || (mode == M_HS && st != S_FREE)) errors[E_UNFINISHED]++;
        if (st != S_FREE) slot_close(&slots[i]);
        if (slots[i].sess) SSL_SESSION_free(slots[i].sess);
    }
    qsort(lat, nlat, sizeof *lat, cmp_u32);
    print_json((double)(t_end - t_start) / 1e9);
    SSL_CTX_free(ctx);
    free(slots);
    free(lat);
    return 0;
}
