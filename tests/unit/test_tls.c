/* In-process TLS tests over a socketpair: the server contexts certgate builds (tls.c),
 * driven by an OpenSSL client, without the network or HTTP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "conf.h"
#include "defcert.h"
#include "p12.h"
#include "tls.h"

static char dir[512];
static struct p12_file *cert;

static int group_setup(void **state)
{
    const char *base = getenv("CERTGATE_TEST_TMP");
    char tmpl[512];
    if (base) mkdir(base, 0700);
    snprintf(tmpl, sizeof tmpl, "%s/tlsXXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(tmpl));
    snprintf(dir, sizeof dir, "%s", tmpl);
    char err[256];
    assert_int_equal(tls_global_init(err, sizeof err), 0);
    assert_int_equal(defcert_load(dir, 0, &cert, err, sizeof err), 0);
    return 0;
}

static int group_teardown(void **state)
{
    p12_free(cert);
    tls_global_cleanup();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static SSL_CTX *server_ctx(unsigned versions, char **excluded, int tickets)
{
    const struct p12_entry *e;
    assert_int_equal(p12_select(cert, NULL, &e, NULL, 0), P12_OK);
    struct tls_server_opts o = {.versions = versions,
                                .excluded_ciphers = excluded,
                                .session_cache = 1,
                                .session_tickets = tickets};
    char err[256] = "";
    SSL_CTX *ctx = tls_server_ctx_new(&o, e, err, sizeof err);
    if (!ctx) fprintf(stderr, "server ctx: %s\n", err);
    assert_non_null(ctx);
    return ctx;
}

struct result {
    int ok;
    int resumed;
    char version[16];
    char cipher[64];
    char alpn[16];
    SSL_SESSION *session;
};

/* One handshake between a client configured by the arguments and a server on ctx. */
static struct result handshake(SSL_CTX *sctx, int cmin, int cmax, const char *ciphers12,
                               const char *alpn, SSL_SESSION *resume)
{
    struct result r = {0};
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    SSL *s = tls_conn_new(sctx, sv[0]);
    static SSL_CTX *cache_ctx[2];
    int slot = resume != NULL || cmin == TLS1_3_VERSION;
    SSL_CTX *cctx = slot && cache_ctx[1] ? cache_ctx[1] : SSL_CTX_new(TLS_client_method());
    if (slot) cache_ctx[1] = cctx;
    SSL_CTX_set_min_proto_version(cctx, cmin);
    SSL_CTX_set_max_proto_version(cctx, cmax);
    SSL_CTX_set_security_level(cctx, 0);
    if (ciphers12) SSL_CTX_set_cipher_list(cctx, ciphers12);
    if (alpn) SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)alpn, (unsigned)strlen(alpn));
    SSL *c = SSL_new(cctx);
    SSL_set_fd(c, sv[1]);
    SSL_set_connect_state(c);
    if (resume) SSL_set_session(c, resume);
    int cdone = 0, sdone = 0, failed = 0;
    for (int i = 0; i < 200 && !(cdone && sdone) && !failed; i++) {
        if (!cdone) {
            int rc = SSL_do_handshake(c);
            if (rc == 1) cdone = 1;
            else if (SSL_get_error(c, rc) != SSL_ERROR_WANT_READ) failed = 1;
        }
        if (!sdone) {
            enum tls_io st = tls_conn_handshake(s);
            if (st == TLS_IO_OK) sdone = 1;
            else if (st != TLS_IO_WANT_READ && st != TLS_IO_WANT_WRITE) failed = 1;
        }
    }
    ERR_clear_error();
    r.ok = cdone && sdone && !failed;
    if (r.ok) {
        /* TLS 1.3 tickets come after the handshake: let the client read them */
        char b;
        SSL_write(s, "x", 1);
        SSL_read(c, &b, 1);
        r.resumed = SSL_session_reused(c);
        snprintf(r.version, sizeof r.version, "%s", SSL_get_version(c));
        snprintf(r.cipher, sizeof r.cipher, "%s", SSL_get_cipher_name(c));
        const unsigned char *a;
        unsigned alen;
        SSL_get0_alpn_selected(c, &a, &alen);
        snprintf(r.alpn, sizeof r.alpn, "%.*s", (int)alen, a ? (const char *)a : "");
        r.session = SSL_get1_session(c);
    }
    /* a clean close: OpenSSL would otherwise mark the client's session not resumable */
    SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c);
    if (!slot) SSL_CTX_free(cctx);
    tls_conn_free(s);
    close(sv[0]);
    close(sv[1]);
    return r;
}

static void test_tls13_and_alpn(void **state)
{
    SSL_CTX *s = server_ctx(TLS_V12 | TLS_V13, NULL, 1);
    struct result r = handshake(s, TLS1_2_VERSION, TLS1_3_VERSION, NULL, "\x02h2\x08http/1.1", NULL);
    assert_true(r.ok);
    assert_string_equal(r.version, "TLSv1.3");
    assert_string_equal(r.alpn, "http/1.1"); /* h2 is not offered back */
    SSL_SESSION_free(r.session);
    tls_ctx_unref(s);
}

static void test_old_protocols_refused(void **state)
{
    SSL_CTX *s = server_ctx(TLS_V12 | TLS_V13, NULL, 1);
    struct result r = handshake(s, TLS1_VERSION, TLS1_1_VERSION, "DEFAULT@SECLEVEL=0", NULL, NULL);
    assert_false(r.ok);
    r = handshake(s, TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL, NULL);
    assert_true(r.ok);
    assert_string_equal(r.version, "TLSv1.2");
    SSL_SESSION_free(r.session);
    tls_ctx_unref(s);
}

static void test_only_tls13(void **state)
{
    SSL_CTX *s = server_ctx(TLS_V13, NULL, 1);
    struct result r = handshake(s, TLS1_2_VERSION, TLS1_2_VERSION, NULL, NULL, NULL);
    assert_false(r.ok);
    tls_ctx_unref(s);
}

static void test_excluded_cipher(void **state)
{
    char *excl[] = {"CHACHA20", NULL};
    SSL_CTX *s = server_ctx(TLS_V12 | TLS_V13, excl, 1);
    /* a TLS 1.2 client that offers only ChaCha20 finds nothing */
    struct result r = handshake(s, TLS1_2_VERSION, TLS1_2_VERSION,
                                "ECDHE-ECDSA-CHACHA20-POLY1305", NULL, NULL);
    assert_false(r.ok);
    r = handshake(s, TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", NULL, NULL);
    assert_true(r.ok);
    SSL_SESSION_free(r.session);
    tls_ctx_unref(s);
}

static void test_exclusions_that_leave_nothing(void **state)
{
    char *excl[] = {"GCM", "CHACHA", NULL};
    struct tls_server_opts o = {.versions = TLS_V12 | TLS_V13, .excluded_ciphers = excl};
    char err[256] = "";
    assert_int_equal(tls_check_opts(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "leaves no cipher"));
}

/* included-ciphers narrows the built-in list before the exclusions */
static void test_inclusions(void **state)
{
    char *incl12[] = {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", NULL};
    char *incl[] = {"AES_128", NULL}, *excl[] = {"AES", NULL}, *none[] = {NULL};
    char err[256] = "";
    struct tls_server_opts o = {.versions = TLS_V12 | TLS_V13, .included_ciphers = incl12};
    assert_int_equal(tls_check_opts(&o, err, sizeof err), -1);
    assert_string_equal(err, "included-ciphers leaves no cipher for TLSv1.3; include one of "
                             "its ciphers (e.g. TLS_AES_128_GCM_SHA256) or remove TLSv1.3 "
                             "from ssl-protocols");
    o.versions = TLS_V12;
    assert_int_equal(tls_check_opts(&o, err, sizeof err), 0);
    o = (struct tls_server_opts){.versions = TLS_V12 | TLS_V13, .included_ciphers = incl};
    assert_int_equal(tls_check_opts(&o, err, sizeof err), 0);
    o.excluded_ciphers = excl;
    assert_int_equal(tls_check_opts(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "included-ciphers and excluded-ciphers leave no cipher for"));
    o = (struct tls_server_opts){.versions = TLS_V12 | TLS_V13, .included_ciphers = none};
    assert_int_equal(tls_check_opts(&o, err, sizeof err), 0); /* empty: everything */
}

static void test_tickets_survive_a_reload_not_a_switch(void **state)
{
    SSL_CTX *a = server_ctx(TLS_V12 | TLS_V13, NULL, 1);
    struct result r1 = handshake(a, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL, NULL);
    assert_true(r1.ok);
    assert_false(r1.resumed);
    struct result r0 = handshake(a, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL, r1.session);
    assert_true(r0.ok);
    assert_true(r0.resumed); /* same context */
    SSL_SESSION_free(r0.session);
    /* a reload builds a new context for the same certificate: sessions go on */
    SSL_CTX *b = server_ctx(TLS_V12 | TLS_V13, NULL, 1);
    struct result r2 = handshake(b, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL, r1.session);
    assert_true(r2.ok);
    assert_true(r2.resumed); /* the ticket key ring is shared by all contexts */
    /* after a rotation the old key still decrypts */
    tls_tickets_rotate();
    struct result r3 = handshake(b, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL, r2.session);
    assert_true(r3.resumed);
    /* another certificate: the same ticket no longer resumes; a full handshake shows it */
    char d2[600];
    snprintf(d2, sizeof d2, "%s/other", dir);
    mkdir(d2, 0700);
    struct p12_file *other = NULL;
    char err[256];
    assert_int_equal(defcert_load(d2, 0, &other, err, sizeof err), 0);
    const struct p12_entry *e;
    assert_int_equal(p12_select(other, NULL, &e, NULL, 0), P12_OK);
    struct tls_server_opts o = {.versions = TLS_V12 | TLS_V13, .session_cache = 1, .session_tickets = 1};
    SSL_CTX *c = tls_server_ctx_new(&o, e, err, sizeof err);
    assert_non_null(c);
    struct result r4 = handshake(c, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL, r3.session);
    assert_true(r4.ok);
    assert_false(r4.resumed);
    SSL_SESSION_free(r1.session);
    SSL_SESSION_free(r2.session);
    SSL_SESSION_free(r3.session);
    SSL_SESSION_free(r4.session);
    tls_ctx_unref(a);
    tls_ctx_unref(b);
    tls_ctx_unref(c);
    p12_free(other);
}

/* Two handshakes of the given version, the second offering the first's session: 1 when
 * the second resumed. Both must succeed. */
static int second_handshake_resumes(SSL_CTX *s, int version)
{
    struct result r1 = handshake(s, version, version, NULL, NULL, NULL);
    assert_true(r1.ok);
    struct result r2 = handshake(s, version, version, NULL, NULL, r1.session);
    assert_true(r2.ok);
    SSL_SESSION_free(r1.session);
    SSL_SESSION_free(r2.session);
    return r2.resumed;
}

static void test_no_tickets_no_resumption(void **state)
{
    SSL_CTX *s = server_ctx(TLS_V12 | TLS_V13, NULL, 0);
    assert_false(second_handshake_resumes(s, TLS1_3_VERSION));
    tls_ctx_unref(s);
}

/* TLS 1.3 clients use a ticket once: every resumption must bring a new ticket, so a
 * client can resume again and again. */
static void test_tls13_resumption_renews_the_ticket(void **state)
{
    SSL_CTX *s = server_ctx(TLS_V12 | TLS_V13, NULL, 1);
    struct result r = handshake(s, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL, NULL);
    assert_true(r.ok);
    for (int i = 0; i < 3; i++) {
        struct result n = handshake(s, TLS1_3_VERSION, TLS1_3_VERSION, NULL, NULL, r.session);
        assert_true(n.ok);
        assert_true(n.resumed);
        assert_ptr_not_equal(n.session, r.session);
        const unsigned char *t1, *t2;
        size_t l1, l2;
        SSL_SESSION_get0_ticket(r.session, &t1, &l1);
        SSL_SESSION_get0_ticket(n.session, &t2, &l2);
        assert_true(l2 > 0);
        assert_false(l1 == l2 && memcmp(t1, t2, l1) == 0); /* a new ticket came */
        SSL_SESSION_free(r.session);
        r = n;
    }
    SSL_SESSION_free(r.session);
    tls_ctx_unref(s);
}

/* The server frees its SSL without a close_notify (the client closed first, or a
 * timeout): its TLS 1.2 session must stay in the cache. */
static void test_session_cache_survives_unclean_close(void **state)
{
    SSL_CTX *s = server_ctx(TLS_V12 | TLS_V13, NULL, 0);
    assert_true(second_handshake_resumes(s, TLS1_2_VERSION));
    tls_ctx_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls13_and_alpn),
        cmocka_unit_test(test_old_protocols_refused),
        cmocka_unit_test(test_only_tls13),
        cmocka_unit_test(test_excluded_cipher),
        cmocka_unit_test(test_exclusions_that_leave_nothing),
        cmocka_unit_test(test_inclusions),
        cmocka_unit_test(test_tickets_survive_a_reload_not_a_switch),
        cmocka_unit_test(test_no_tickets_no_resumption),
        cmocka_unit_test(test_session_cache_survives_unclean_close),
        cmocka_unit_test(test_tls13_resumption_renews_the_ticket),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
