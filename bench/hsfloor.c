/* hsfloor.c - the least CPU a server on this OpenSSL can spend on one full handshake.
 *
 * A server and a client SSL object talk over a memory BIO pair in one thread: no socket,
 * no HTTP, no event loop. The server context is built as certgate builds its own (src/tls.c:
 * Mozilla intermediate ciphers with server preference, groups X25519:P-256:P-384, session
 * cache and tickets off); the client is the benchmark's load generator's (OpenSSL defaults,
 * no verification). Only the server's side is timed, with the thread CPU clock around
 * SSL_new, each SSL_do_handshake call and SSL_free (the clock's own cost is measured and
 * subtracted). Prints one JSON object.
 *
 * usage: hsfloor CERT.pem KEY.pem [-s SECONDS] [-w WARMUP_HANDSHAKES] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

static const char TLS12_CIPHERS[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";
static const char TLS13_SUITES[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

static void die(const char *what)
{
    fprintf(stderr, "hsfloor: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static SSL_CTX *server_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_SINGLE_ECDH_USE | SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) ||
        !SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) ||
        !SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384"))
        die("cipher or group list refused");
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        die("cannot load the certificate and key");
    return ctx;
}

static SSL_CTX *client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return ctx;
}

/* One full handshake; adds the server's CPU time to *srv and the client's to *cli, and
 * counts the server's timed intervals in *reads. */
static void handshake(SSL_CTX *sctx, SSL_CTX *cctx, uint64_t *srv, uint64_t *cli, unsigned *reads,
                      char *info, size_t infolen)
{
    uint64_t t0 = cpu_ns();
    SSL *s = SSL_new(sctx);
    BIO *bs, *bc;
    if (!s || !BIO_new_bio_pair(&bs, 0, &bc, 0)) die("SSL_new or BIO pair");
    SSL_set_bio(s, bs, bs);
    SSL_set_accept_state(s);
    uint64_t t1 = cpu_ns();
    *srv += t1 - t0;
    SSL *c = SSL_new(cctx);
    if (!c) die("SSL_new");
    SSL_set_bio(c, bc, bc);
    SSL_set_tlsext_host_name(c, "localhost");
    SSL_set_connect_state(c);
    int cdone = 0, sdone = 0;
    *reads += 1; /* each timed interval holds about one clock read */
    for (int rounds = 0; !(cdone && sdone); rounds++) {
        if (rounds > 20) die("handshake does not finish");
        uint64_t a = cpu_ns();
        if (!cdone) {
            int rc = SSL_do_handshake(c);
            if (rc == 1)
                cdone = 1;
            else if (SSL_get_error(c, rc) != SSL_ERROR_WANT_READ)
                die("client handshake failed");
        }
        uint64_t b = cpu_ns();
        *cli += b - a;
        if (!sdone) {
            int rc = SSL_do_handshake(s);
            if (rc == 1)
                sdone = 1;
            else if (SSL_get_error(s, rc) != SSL_ERROR_WANT_READ)
                die("server handshake failed");
        }
        uint64_t e = cpu_ns();
        *srv += e - b;
        *reads += 1;
    }
    if (info && !info[0]) {
        EVP_PKEY *pk = SSL_get_privatekey(s);
        snprintf(info, infolen, "%s %s %s %s-%d", SSL_get_version(s), SSL_get_cipher_name(s),
                 SSL_group_to_name(s, SSL_get_negotiated_group(s)),
                 EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA ? "RSA" : "EC", EVP_PKEY_get_bits(pk));
        if (SSL_session_reused(s)) die("the session was resumed");
    }
    SSL_free(c);
    uint64_t f0 = cpu_ns();
    SSL_free(s);
    *srv += cpu_ns() - f0;
    *reads += 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    double seconds = 3;
    int warmup = 200, opt;
    while ((opt = getopt(argc, argv, "s:w:")) != -1) {
        if (opt == 's')
            seconds = atof(optarg);
        else if (opt == 'w')
            warmup = atoi(optarg);
        else
            goto usage;
    }
    if (argc - optind != 2) {
    usage:
        fprintf(stderr, "usage: hsfloor CERT.pem KEY.pem [-s SECONDS] [-w WARMUP]\n");
        return 2;
    }
    SSL_CTX *sctx = server_ctx(argv[optind], argv[optind + 1]);
    SSL_CTX *cctx = client_ctx();

    /* the cost of one clock read, to subtract */
    uint64_t c0 = cpu_ns();
    for (int i = 0; i < 100000; i++)
        (void)cpu_ns();
    double clock_ns_per_read = (double)(cpu_ns() - c0) / 100001.0;

    char info[200] = "";
    uint64_t srv = 0, cli = 0;
    unsigned reads = 0;
    for (int i = 0; i < warmup; i++)
        handshake(sctx, cctx, &srv, &cli, &reads, info, sizeof info);

    size_t cap = 1 << 16, n = 0;
    uint64_t *each = malloc(cap * sizeof *each);
    uint64_t total_srv = 0, total_cli = 0, total_reads = 0;
    uint64_t end = wall_ns() + (uint64_t)(seconds * 1e9);
    while (wall_ns() < end) {
        srv = cli = 0;
        reads = 0;
        handshake(sctx, cctx, &srv, &cli, &reads, NULL, 0);
        total_srv += srv;
        total_cli += cli;
        total_reads += reads;
        if (n == cap) {
            cap *= 2;
            each = realloc(each, cap * sizeof *each);
            if (!each) die("out of memory");
        }
        each[n++] = srv;
    }
    qsort(each, n, sizeof *each, cmp_u64);
    double corr = clock_ns_per_read * (double)total_reads / (double)n; /* per handshake */
    printf("{\"handshakes\":%zu,\"server_us\":%.2f,\"server_us_median\":%.2f,"
           "\"client_us\":%.2f,\"clock_read_ns\":%.1f,\"tls\":\"%s\"}\n",
           n, ((double)total_srv / (double)n - corr) / 1000.0,
           ((double)each[n / 2] - corr) / 1000.0, (double)total_cli / (double)n / 1000.0,
           clock_ns_per_read, info);
    free(each);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    return 0;
}
