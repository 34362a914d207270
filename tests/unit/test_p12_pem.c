/* test_p12_pem.c - PKCS#12 files built from PEM (p12_pem.c) and the checks before a
 * certificate is served (p12_check.c). Keys and certificates are made in memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "p12.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static EVP_PKEY *ca_key, *leaf_key, *other_key;
static X509 *ca, *leaf, *stranger;

static X509 *make(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *ikey, long from,
                  long to, const char *san)
{
    X509 *c = X509_new();
    assert_non_null(c);
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), (long)(rand() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(c), from);
    X509_gmtime_adj(X509_getm_notAfter(c), to);
    X509_NAME *n = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : n);
    X509_set_pubkey(c, key);
    if (san) {
        X509V3_CTX v3;
        X509V3_set_ctx(&v3, issuer ? issuer : c, c, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        assert_non_null(e);
        X509_add_ext(c, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(c, ikey ? ikey : key, EVP_sha256()) > 0);
    return c;
}

static char *pem_of(X509 *const *certs, size_t n, EVP_PKEY *key, const char *keypw, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (key)
        assert_true(PEM_write_bio_PrivateKey(b, key, keypw ? EVP_aes_256_cbc() : NULL, NULL, 0,
                                             NULL, (void *)keypw));
    for (size_t i = 0; i < n; i++) assert_true(PEM_write_bio_X509(b, certs[i]));
    char *p;
    long l = BIO_get_mem_data(b, &p);
    char *out = malloc((size_t)l + 1);
    memcpy(out, p, (size_t)l);
    out[l] = '\0';
    *len = (size_t)l;
    BIO_free(b);
    return out;
}

static int setup(void **state)
{
    (void)state;
    ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    leaf_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    other_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ca = make(ca_key, "Unit CA", NULL, NULL, -3600, 86400L * 3650, NULL);
    leaf = make(leaf_key, "unit-leaf", ca, ca_key, -3600, 86400L * 365, "DNS:unit-leaf");
    stranger = make(other_key, "Stranger", NULL, NULL, -3600, 86400L * 3650, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    X509_free(ca);
    X509_free(leaf);
    X509_free(stranger);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(other_key);
    return 0;
}

static int build(const char *cert, size_t cl, const char *key, size_t kl, const char *keypw,
                 const char *chain, size_t chl, unsigned char **der, size_t *len, json_t *w,
                 char *err)
{
    struct p12_pem_src s = {cert, cl, "cert.pem", key, kl, "key.pem", keypw,
                            chain, chl, chain ? "chain.pem" : NULL};
    return p12_pem_build(&s, "Web", "pw", der, len, w, err, 512);
}

static void test_round_trip_cost_and_chain(void **state)
{
    (void)state;
    size_t cl, kl, chl, len;
    X509 *const l1[] = {leaf}, *const c1[] = {ca};
    char *cert = pem_of(l1, 1, NULL, NULL, &cl), *key = pem_of(NULL, 0, leaf_key, "kp", &kl);
    char *chain = pem_of(c1, 1, NULL, NULL, &chl), err[512] = "";
    unsigned char *der = NULL;
    json_t *w = json_array();
    assert_int_equal(build(cert, cl, key, kl, "kp", chain, chl, &der, &len, w, err), 0);
    assert_int_equal(json_array_size(w), 0);
    struct p12_cost cost;
    assert_int_equal(p12_cost_der(der, len, "x", &cost, err, sizeof err), P12_OK);
    assert_int_equal(cost.iterations, 3 * P12_PEM_ITER); /* MAC, key bag, certificates */
    struct p12_file *f = NULL;
    assert_int_equal(p12_parse(der, len, "pw", "x", &f, err, sizeof err), P12_OK);
    const struct p12_entry *e;
    assert_int_equal(p12_select(f, NULL, &e, err, sizeof err), P12_OK);
    assert_string_equal(p12_entry_alias(e), "web");
    assert_int_equal(sk_X509_num(p12_entry_chain(e)), 1);
    assert_int_equal(p12_check_entry(e, time(NULL), w, err, sizeof err), 0);
    assert_int_equal(json_array_size(w), 0);
    /* a year and a day later: expired, refused */
    assert_int_equal(p12_check_entry(e, time(NULL) + 86400L * 366, w, err, sizeof err), -1);
    assert_non_null(strstr(err, "expired on"));
    /* 20 days before the end: a warning */
    assert_int_equal(p12_check_entry(e, time(NULL) + 86400L * 345 + 43200, w, err, sizeof err), 0);
    assert_int_equal(json_array_size(w), 1);
    assert_non_null(strstr(json_string_value(json_array_get(w, 0)), "expires in 19 days"));
    p12_free(f);
    p12_der_free(der, len);
    json_decref(w);
    free(cert);
    free(key);
    free(chain);
}

static void test_refusals(void **state)
{
    (void)state;
    size_t cl, kl, okl, ekl, sl, len;
    X509 *const l1[] = {leaf}, *const s1[] = {stranger};
    char *cert = pem_of(l1, 1, NULL, NULL, &cl), *key = pem_of(NULL, 0, leaf_key, NULL, &kl);
    char *other = pem_of(NULL, 0, other_key, NULL, &okl);
    char *enc = pem_of(NULL, 0, leaf_key, "kp", &ekl);
    char *str = pem_of(s1, 1, NULL, NULL, &sl), err[512];
    unsigned char *der = NULL;
    assert_int_equal(build(cert, cl, other, okl, NULL, NULL, 0, &der, &len, NULL, err), -1);
    assert_string_equal(err, "cert.pem: the certificate does not match the private key in "
                             "key.pem (they are not a pair)");
    assert_int_equal(build(cert, cl, enc, ekl, NULL, NULL, 0, &der, &len, NULL, err), -1);
    assert_non_null(strstr(err, "key.pem: the private key is encrypted"));
    assert_int_equal(build(cert, cl, enc, ekl, "bad", NULL, 0, &der, &len, NULL, err), -1);
    assert_non_null(strstr(err, "does not decrypt"));
    assert_int_equal(build(cert, cl, key, kl, NULL, str, sl, &der, &len, NULL, err), -1);
    assert_non_null(strstr(err, "chain.pem: the certificate 'CN=Stranger' does not chain"));
    assert_int_equal(build(cert, cl, cert, cl, NULL, NULL, 0, &der, &len, NULL, err), -1);
    assert_non_null(strstr(err, "key.pem: no private key"));
    assert_int_equal(build(key, kl, key, kl, NULL, NULL, 0, &der, &len, NULL, err), -1);
    assert_non_null(strstr(err, "no certificate"));
    assert_null(der);
    free(cert);
    free(key);
    free(other);
    free(enc);
    free(str);
}

static void test_warnings_no_san_incomplete(void **state)
{
    (void)state;
    X509 *bare = make(other_key, "bare", ca, ca_key, -3600, 86400L * 100, NULL);
    size_t cl, kl, len;
    X509 *const b1[] = {bare};
    char *cert = pem_of(b1, 1, NULL, NULL, &cl), *key = pem_of(NULL, 0, other_key, NULL, &kl);
    char err[512];
    unsigned char *der = NULL;
    json_t *w = json_array();
    assert_int_equal(build(cert, cl, key, kl, NULL, NULL, 0, &der, &len, w, err), 0);
    struct p12_file *f = NULL;
    assert_int_equal(p12_parse(der, len, "pw", "x", &f, err, sizeof err), P12_OK);
    const struct p12_entry *e;
    assert_int_equal(p12_select(f, NULL, &e, err, sizeof err), P12_OK);
    assert_int_equal(p12_check_entry(e, time(NULL), w, err, sizeof err), 0);
    assert_int_equal(json_array_size(w), 2);
    assert_non_null(strstr(json_string_value(json_array_get(w, 0)), "no subjectAltName"));
    assert_non_null(strstr(json_string_value(json_array_get(w, 1)),
                           "incomplete: 'CN=Unit CA' (the issuer of 'CN=bare')"));
    p12_free(f);
    p12_der_free(der, len);
    json_decref(w);
    X509_free(bare);
    free(cert);
    free(key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_cost_and_chain),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_warnings_no_san_incomplete),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
