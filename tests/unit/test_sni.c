/* The server-name index (sni.c) and the served set built from it (tls_served.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf.h"
#include "p12.h"
#include "sni.h"
#include "tls.h"

static int lookup(const struct sni_index *ix, const char *name)
{
    return sni_index_lookup(ix, name, strlen(name));
}

static void test_normalize(void **state)
{
    (void)state;
    char out[SNI_NAME_MAX + 1];
    assert_int_equal(sni_normalize("Example.COM", 11, out), 11);
    assert_string_equal(out, "example.com");
    assert_int_equal(sni_normalize("example.com.", 12, out), 11); /* one trailing dot */
    assert_string_equal(out, "example.com");
    assert_int_equal(sni_normalize("a_b-c.test", 10, out), 10);
    const char *bad[] = {"", ".", "example..com", ".example.com", "example.com..", "*.example.com",
                         "exa mple.com", "ex\xc3\xa9.com", "[::1]", "::1", "a/b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(sni_normalize(bad[i], strlen(bad[i]), out), -1);
    assert_int_equal(sni_normalize("a\0b", 3, out), -1);
    char label[80], longname[300];
    memset(label, 'a', 63);
    label[63] = '\0';
    assert_int_equal(sni_normalize(label, 63, out), 63);
    memset(label, 'a', 64);
    assert_int_equal(sni_normalize(label, 64, out), -1); /* a label is at most 63 */
    for (int i = 0; i < 300; i += 2) {
        longname[i] = 'a';
        longname[i + 1] = '.';
    }
    assert_int_equal(sni_normalize(longname, 253, out), 253);
    assert_int_equal(sni_normalize(longname, 255, out), -1);
}

static void test_index_match(void **state)
{
    (void)state;
    struct sni_index *ix = sni_index_new();
    assert_non_null(ix);
    assert_int_equal(sni_index_add(ix, "alpha.test", 10, 1), 0);
    assert_int_equal(sni_index_add(ix, "*.Wild.test", 11, 2), 0);
    assert_int_equal(sni_index_add(ix, "exact.wild.test", 15, 3), 0);
    assert_int_equal(sni_index_add(ix, "ALPHA.test", 10, 4), 0);  /* repeated: slot 1 stays */
    assert_int_equal(sni_index_add(ix, "*.wild.test", 11, 5), 0); /* repeated wildcard */
    assert_int_equal(sni_index_add(ix, "10.0.0.1", 8, 6), 0);     /* all digits: a host name */
    assert_int_equal(sni_index_add(ix, "a*.test", 7, 7), 1);      /* not one-label wildcard */
    assert_int_equal(sni_index_add(ix, "*", 1, 7), 1);
    assert_int_equal(sni_index_add(ix, "*.", 2, 7), 1);
    assert_int_equal(sni_index_add(ix, "x.*.test", 8, 7), 1);
    assert_int_equal(sni_index_seal(ix), 0);
    assert_int_equal(sni_index_size(ix), 4);

    assert_int_equal(lookup(ix, "alpha.test"), 1);
    assert_int_equal(lookup(ix, "Alpha.Test."), 1);
    assert_int_equal(lookup(ix, "a.wild.test"), 2);
    assert_int_equal(lookup(ix, "A-B.WILD.test"), 2);
    assert_int_equal(lookup(ix, "exact.wild.test"), 3); /* exact before wildcard */
    assert_int_equal(lookup(ix, "a.b.wild.test"), -1);  /* one label only */
    assert_int_equal(lookup(ix, "wild.test"), -1);      /* not the bare suffix */
    assert_int_equal(lookup(ix, ".wild.test"), -1);
    assert_int_equal(lookup(ix, "*.wild.test"), -1); /* a wildcard is not a server name */
    assert_int_equal(lookup(ix, "beta.test"), -1);
    assert_int_equal(lookup(ix, "alpha.tes"), -1);
    assert_int_equal(lookup(ix, "alpha.testx"), -1);
    assert_int_equal(lookup(ix, ""), -1);
    assert_int_equal(sni_index_lookup(ix, "alpha.test\0x", 12), -1);
    char big[1000];
    memset(big, 'a', sizeof big);
    assert_int_equal(sni_index_lookup(ix, big, sizeof big), -1);
    sni_index_free(ix);

    /* an empty index answers nothing */
    ix = sni_index_new();
    sni_index_seal(ix);
    assert_int_equal(lookup(ix, "alpha.test"), -1);
    assert_int_equal(lookup(ix, "a.wild.test"), -1);
    sni_index_free(ix);
}

static void test_index_many(void **state)
{
    (void)state;
    struct sni_index *ix = sni_index_new();
    char name[64];
    for (unsigned i = 0; i < 500; i++) {
        int n = snprintf(name, sizeof name, "host%u.example.com", i);
        assert_int_equal(sni_index_add(ix, name, (size_t)n, i), 0);
        n = snprintf(name, sizeof name, "*.zone%u.example.com", i);
        assert_int_equal(sni_index_add(ix, name, (size_t)n, 1000 + i), 0);
    }
    sni_index_seal(ix);
    for (unsigned i = 0; i < 500; i++) {
        snprintf(name, sizeof name, "HOST%u.example.com", i);
        assert_int_equal(lookup(ix, name), (int)i);
        snprintf(name, sizeof name, "x.zone%u.example.com", i);
        assert_int_equal(lookup(ix, name), (int)(1000 + i));
    }
    assert_int_equal(lookup(ix, "host500.example.com"), -1);
    sni_index_free(ix);
}

static void test_hello_ext(void **state)
{
    (void)state;
    char out[SNI_NAME_MAX + 1];
    const unsigned char ok[] = {0, 13, 0, 0, 10, 'G', 'a', 'm', 'm', 'a', '.', 't', 'e', 's', 't'};
    assert_int_equal(sni_from_hello_ext(ok, sizeof ok, out), 10);
    assert_string_equal(out, "gamma.test");
    assert_int_equal(sni_from_hello_ext(ok, sizeof ok - 1, out), -1); /* list length */
    assert_int_equal(sni_from_hello_ext(ok, 1, out), -1);
    assert_int_equal(sni_from_hello_ext(NULL, 0, out), -1);
    const unsigned char empty[] = {0, 3, 0, 0, 0};
    assert_int_equal(sni_from_hello_ext(empty, sizeof empty, out), -1);
    const unsigned char nul[] = {0, 6, 0, 0, 3, 'a', 0, 'b'};
    assert_int_equal(sni_from_hello_ext(nul, sizeof nul, out), -1);
    const unsigned char over[] = {0, 5, 0, 0, 9, 'a', 'b'}; /* name longer than the list */
    assert_int_equal(sni_from_hello_ext(over, sizeof over, out), -1);
    const unsigned char other[] = {0, 4, 1, 0, 1, 'a'}; /* not host_name */
    assert_int_equal(sni_from_hello_ext(other, sizeof other, out), -1);
    const unsigned char ip[] = {0, 12, 0, 0, 9, '1', '2', '7', '.', '0', '.', '0', '.', '1'};
    assert_int_equal(sni_from_hello_ext(ip, sizeof ip, out), 9); /* a host name; no entry has it */
}

/* ----- certificates ----- */

static EVP_PKEY *rsa, *ec; /* keygen is slow: one key per type */

static EVP_PKEY *key_of(const char *kind)
{
    return strcmp(kind, "ec") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")
                                   : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
}

/* A self-signed certificate for cn with subjectAltName san (NULL: none), valid from
 * `from` days to `to` days from now; as a one-entry keystore entry `alias`. */
static struct p12_file *make(const char *alias, const char *kind, const char *cn, const char *san,
                             long from, long to)
{
    EVP_PKEY **kp = strcmp(kind, "ec") == 0 ? &ec : &rsa;
    if (!*kp) *kp = key_of(kind);
    assert_non_null(*kp);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)rand());
    X509_gmtime_adj(X509_getm_notBefore(x), from * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), to * 86400);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    X509_set_pubkey(x, *kp);
    if (san) {
        X509V3_CTX v3;
        X509V3_set_ctx_nodb(&v3);
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        assert_non_null(ex);
        X509_add_ext(x, ex, -1);
        X509_EXTENSION_free(ex);
    }
    assert_true(X509_sign(x, *kp, EVP_sha256()) > 0);
    struct p12_file *f = p12_from_key_cert(*kp, x, NULL, alias);
    X509_free(x);
    assert_non_null(f);
    return f;
}

static const struct p12_entry *entry(const struct p12_file *f)
{
    const struct p12_entry *e = NULL;
    assert_int_equal(p12_select(f, NULL, &e, NULL, 0), P12_OK);
    return e;
}

static void test_cert_names(void **state)
{
    (void)state;
    struct p12_file *f = make("a", "ec", "ignored.test",
                              "DNS:B.test,DNS:*.W.test,IP:127.0.0.1,DNS:b.test,DNS:a*.test,"
                              "email:x@y.test",
                              -1, 30);
    char **names = NULL;
    assert_int_equal(sni_cert_names(p12_entry_cert(entry(f)), &names), 2);
    assert_string_equal(names[0], "b.test");
    assert_string_equal(names[1], "*.w.test");
    assert_null(names[2]);
    sni_names_free(names);
    p12_free(f);
    /* no DNS name: the CN */
    f = make("a", "ec", "Host.Test", "IP:10.0.0.1", -1, 30);
    assert_int_equal(sni_cert_names(p12_entry_cert(entry(f)), &names), 1);
    assert_string_equal(names[0], "host.test");
    sni_names_free(names);
    p12_free(f);
    /* a CN that is no host name: nothing */
    f = make("a", "ec", "My Gateway", NULL, -1, 30);
    assert_int_equal(sni_cert_names(p12_entry_cert(entry(f)), &names), 0);
    assert_null(names[0]);
    sni_names_free(names);
    p12_free(f);
}

struct notes {
    char text[2048];
    int count;
};

static void note(void *arg, const char *s)
{
    struct notes *n = arg;
    size_t used = strlen(n->text);
    snprintf(n->text + used, sizeof n->text - used, "%s\n", s);
    n->count++;
}

static void test_served_set(void **state)
{
    (void)state;
    struct p12_file *f[8] = {
        make("def", "rsa", "default.test", NULL, -1, 30),
        make("alpha", "rsa", "x", "DNS:alpha.test,DNS:both.test", -1, 30),
        make("wild", "ec", "x", "DNS:*.wild.test", -1, 30),
        make("alpha-ec", "ec", "x", "DNS:both.test,DNS:alpha.test", -1, 30), /* pair with alpha */
        make("alpha-rsa2", "rsa", "x", "DNS:alpha.test,DNS:both.test", -1, 30), /* shadowed */
        make("expired", "ec", "x", "DNS:old.test", -60, -1),
        make("noname", "ec", "No Host", NULL, -1, 30),
        make("beta", "ec", "beta.test", "DNS:beta.test,DNS:alpha.test", -1, 30),
    };
    const struct p12_entry *v[8];
    for (int i = 0; i < 8; i++)
        v[i] = entry(f[i]);
    struct tls_server_opts o = {.versions = TLS_V12 | TLS_V13, .session_cache = 1,
                                .session_tickets = 1};
    struct notes n = {"", 0};
    char err[400] = "";
    SSL_CTX *front = tls_served_new(&o, v, 8, note, &n, err, sizeof err);
    assert_non_null(front);
    /* default, alpha (+ alpha-ec), wild, beta */
    assert_int_equal(tls_served_count(front), 4);
    assert_int_equal(n.count, 3);
    assert_non_null(strstr(n.text, "alias 'alpha-rsa2' is not served: alias 'alpha' answers"));
    assert_non_null(strstr(n.text, "alias 'expired' is not served: its certificate has expired"));
    assert_non_null(strstr(n.text, "alias 'noname' is not served"));

    assert_ptr_equal(tls_served_pick(front, NULL), front);
    assert_ptr_equal(tls_served_pick(front, "default.test"), front);
    assert_ptr_equal(tls_served_pick(front, "nothing.test"), front);
    assert_ptr_equal(tls_served_pick(front, "old.test"), front);
    SSL_CTX *alpha = tls_served_pick(front, "alpha.test");
    assert_ptr_not_equal(alpha, front);
    assert_ptr_equal(tls_served_pick(front, "BOTH.test"), alpha);
    SSL_CTX *wild = tls_served_pick(front, "a.wild.test");
    assert_ptr_not_equal(wild, front);
    assert_ptr_not_equal(wild, alpha);
    assert_ptr_equal(tls_served_pick(front, "a.b.wild.test"), front);
    SSL_CTX *beta = tls_served_pick(front, "beta.test");
    assert_ptr_not_equal(beta, alpha); /* alpha.test stays with the earlier entry */

    /* the pair: both certificates in one context, the first one current */
    assert_ptr_equal(SSL_CTX_get0_certificate(alpha), p12_entry_cert(v[1]));
    int certs = 0;
    for (int r = SSL_CTX_set_current_cert(alpha, SSL_CERT_SET_FIRST); r;
         r = SSL_CTX_set_current_cert(alpha, SSL_CERT_SET_NEXT))
        certs++;
    assert_int_equal(certs, 2);
    tls_ctx_unref(front);

    /* one entry: no callback, the front is the only context */
    n.count = 0;
    front = tls_served_new(&o, v, 1, note, &n, err, sizeof err);
    assert_non_null(front);
    assert_int_equal(tls_served_count(front), 1);
    assert_ptr_equal(tls_served_pick(front, "alpha.test"), front);
    tls_ctx_unref(front);

    /* a default entry that cannot serve is an error; an other one a note */
    front = tls_served_new(&o, &v[5], 1, note, &n, err, sizeof err);
    assert_non_null(front); /* expiry of the default is the API's check (p12_check_entry) */
    tls_ctx_unref(front);
    for (int i = 0; i < 8; i++)
        p12_free(f[i]);
}

/* One in-memory handshake (a BIO pair) of a client asking for name (NULL: no SNI), with
 * sigalgs (NULL: OpenSSL's) and ALPN alpn (wire format, NULL: none), against front.
 * Returns the server's leaf (borrowed from the server side, which is kept in *server
 * for the caller to free), or NULL when the handshake failed. */
static X509 *handshake(SSL_CTX *front, const char *name, const char *sigalgs,
                       const unsigned char *alpn, size_t alpn_len, SSL **server)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *c = SSL_new(cctx), *s = SSL_new(front);
    BIO *cb = NULL, *sb = NULL;
    assert_true(BIO_new_bio_pair(&cb, 0, &sb, 0));
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    if (name) SSL_set_tlsext_host_name(c, name);
    if (sigalgs) assert_true(SSL_set1_sigalgs_list(c, sigalgs));
    if (alpn) SSL_set_alpn_protos(c, alpn, (unsigned)alpn_len);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    int done_c = 0, done_s = 0, failed = 0;
    for (int i = 0; i < 16 && !failed && !(done_c && done_s); i++) {
        SSL *side[2] = {c, s};
        int *done[2] = {&done_c, &done_s};
        for (int k = 0; k < 2 && !failed; k++) {
            if (*done[k]) continue;
            int r = SSL_do_handshake(side[k]);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(side[k], r);
            if (r == 1)
                *done[k] = 1;
            else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                failed = 1;
        }
    }
    X509 *leaf = done_c && done_s ? SSL_get_certificate(s) : NULL;
    SSL_free(c);
    SSL_CTX_free(cctx);
    *server = s;
    return leaf;
}

static SSL_CTX *hook_ctx;
static char hook_seen[300];

static SSL_CTX *hook(void *arg, const char *name, const unsigned char *alpn, size_t alpn_len)
{
    (void)arg;
    snprintf(hook_seen, sizeof hook_seen, "%s|%.*s", name, (int)alpn_len, (const char *)alpn);
    static const unsigned char acme[] = "\x0a" "acme-tls/1";
    for (size_t i = 0; alpn && i + 11 <= alpn_len; i += 1u + alpn[i])
        if (memcmp(alpn + i, acme, 11) == 0 && strcmp(name, "challenge.test") == 0) {
            SSL_CTX_up_ref(hook_ctx);
            return hook_ctx;
        }
    return NULL;
}

static void test_callback_picks(void **state)
{
    (void)state;
    struct p12_file *f[4] = {
        make("def", "rsa", "default.test", NULL, -1, 30),
        make("alpha", "rsa", "x", "DNS:alpha.test", -1, 30),
        make("alpha-ec", "ec", "x", "DNS:alpha.test", -1, 30),
        make("wild", "ec", "x", "DNS:*.wild.test", -1, 30),
    };
    const struct p12_entry *v[4];
    for (int i = 0; i < 4; i++)
        v[i] = entry(f[i]);
    struct tls_server_opts o = {.versions = TLS_V12 | TLS_V13, .session_cache = 1,
                                .session_tickets = 1};
    char err[400] = "";
    SSL_CTX *front = tls_served_new(&o, v, 4, NULL, NULL, err, sizeof err);
    assert_non_null(front);
    SSL *s;
    assert_ptr_equal(handshake(front, NULL, NULL, NULL, 0, &s), p12_entry_cert(v[0]));
    SSL_free(s);
    assert_ptr_equal(handshake(front, "other.test", NULL, NULL, 0, &s), p12_entry_cert(v[0]));
    SSL_free(s);
    assert_ptr_equal(handshake(front, "Alpha.Test", "ECDSA+SHA256", NULL, 0, &s),
                     p12_entry_cert(v[2]));
    SSL_free(s);
    assert_ptr_equal(handshake(front, "alpha.test", "RSA-PSS+SHA256:RSA+SHA256", NULL, 0, &s),
                     p12_entry_cert(v[1]));
    SSL_free(s);
    assert_ptr_equal(handshake(front, "a.wild.test", NULL, NULL, 0, &s), p12_entry_cert(v[3]));
    SSL_free(s);
    assert_ptr_equal(handshake(front, "a.b.wild.test", NULL, NULL, 0, &s), p12_entry_cert(v[0]));
    SSL_free(s);

    /* the hello hook answers before the index (ACME's tls-alpn-01), in a set built while
     * it is set; it is asked for every handshake and may decline */
    struct p12_file *ch = make("challenge", "ec", "challenge.test", "DNS:challenge.test", -1, 1);
    hook_ctx = tls_server_ctx_new(&o, entry(ch), err, sizeof err);
    assert_non_null(hook_ctx);
    tls_set_hello_hook(hook, NULL);
    SSL_CTX *one = tls_served_new(&o, v, 1, NULL, NULL, err, sizeof err);
    static const unsigned char acme_alpn[] = "\x08http/1.1\x0a" "acme-tls/1";
    /* (the challenge context of the test has no ALPN callback of acme-tls/1: the client
     * does not insist) */
    assert_ptr_equal(handshake(one, "challenge.test", NULL, acme_alpn, sizeof acme_alpn - 1, &s),
                     p12_entry_cert(entry(ch)));
    SSL_free(s);
    assert_string_equal(hook_seen, "challenge.test|\x08http/1.1\x0a" "acme-tls/1");
    assert_ptr_equal(handshake(one, "challenge.test", NULL, NULL, 0, &s), p12_entry_cert(v[0]));
    SSL_free(s);
    assert_string_equal(hook_seen, "challenge.test|");
    assert_ptr_equal(handshake(front, "alpha.test", "ECDSA+SHA256", acme_alpn,
                               sizeof acme_alpn - 1, &s),
                     p12_entry_cert(v[2])); /* declined: the index chooses */
    SSL_free(s);
    tls_set_hello_hook(NULL, NULL);
    tls_ctx_unref(one);
    tls_ctx_unref(hook_ctx);
    p12_free(ch);
    tls_ctx_unref(front);
    for (int i = 0; i < 4; i++)
        p12_free(f[i]);
}

int main(void)
{
    char err[256];
    if (tls_global_init(err, sizeof err) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),   cmocka_unit_test(test_index_match),
        cmocka_unit_test(test_index_many),  cmocka_unit_test(test_hello_ext),
        cmocka_unit_test(test_cert_names),  cmocka_unit_test(test_served_set),
        cmocka_unit_test(test_callback_picks),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    tls_global_cleanup();
    return rc;
}
