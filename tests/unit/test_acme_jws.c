/* Unit tests for src/acme_jws.c: JWS signatures checked with OpenSSL, the RFC 7638
 * thumbprint example, EAB, the CSR. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme_jws.h"
#include "conf.h"

static unsigned char *dec(const char *s, size_t *n)
{
    unsigned char *out = NULL;
    if (acme_b64url_decode(s, &out, n) != 0) fail_msg("not base64url: %s", s);
    return out;
}

static void test_b64url(void **state)
{
    char *s = acme_b64url("\xfb\xff\xfe", 3);
    assert_string_equal(s, "-__-");
    free(s);
    s = acme_b64url("ab", 2);
    assert_string_equal(s, "YWI");
    size_t n;
    unsigned char *d = dec(s, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(d, "ab", 2);
    free(d);
    free(s);
    unsigned char *bad = NULL;
    assert_int_equal(acme_b64url_decode("a$bc", &bad, &n), -1);
    assert_int_equal(acme_b64url_decode("a", &bad, &n), -1);
}

/* RFC 7638 section 3.1: the example RSA key and its thumbprint. */
static void test_thumbprint_rfc7638(void **state)
{
    const char *n64 =
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
        "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
        "kEgU8awapJzKnqDKgw";
    size_t nlen;
    unsigned char *nb = dec(n64, &nlen);
    BIGNUM *bn = BN_bin2bn(nb, (int)nlen, NULL), *be = BN_new();
    BN_set_word(be, 65537);
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, bn);
    OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, be);
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(b);
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *k = NULL;
    assert_int_equal(EVP_PKEY_fromdata_init(pc), 1);
    assert_int_equal(EVP_PKEY_fromdata(pc, &k, EVP_PKEY_PUBLIC_KEY, params), 1);
    char *tp = acme_thumbprint(k);
    assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    char *ka = acme_keyauth("tok-1", k);
    assert_string_equal(ka, "tok-1.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    free(ka);
    free(tp);
    EVP_PKEY_free(k);
    EVP_PKEY_CTX_free(pc);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(b);
    BN_free(bn);
    BN_free(be);
    free(nb);
}

/* Checks jws: header members, payload, and the signature verified with OpenSSL. */
static void check_jws(EVP_PKEY *k, const char *text, const char *kid, const char *payload)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    const char *p64 = json_string_value(json_object_get(j, "protected"));
    const char *pl64 = json_string_value(json_object_get(j, "payload"));
    const char *s64 = json_string_value(json_object_get(j, "signature"));
    assert_non_null(p64);
    assert_non_null(pl64);
    assert_non_null(s64);
    size_t n;
    unsigned char *h = dec(p64, &n);
    json_t *hdr = json_loadb((const char *)h, n, 0, NULL);
    assert_non_null(hdr);
    int ec = EVP_PKEY_get_base_id(k) == EVP_PKEY_EC;
    assert_string_equal(json_string_value(json_object_get(hdr, "alg")), ec ? "ES256" : "RS256");
    assert_string_equal(json_string_value(json_object_get(hdr, "nonce")), "nonce-1");
    assert_string_equal(json_string_value(json_object_get(hdr, "url")), "https://ca/acct");
    if (kid) {
        assert_string_equal(json_string_value(json_object_get(hdr, "kid")), kid);
        assert_null(json_object_get(hdr, "jwk"));
    } else {
        json_t *jwk = json_object_get(hdr, "jwk");
        assert_string_equal(json_string_value(json_object_get(jwk, "kty")), ec ? "EC" : "RSA");
        assert_null(json_object_get(hdr, "kid"));
    }
    unsigned char *pl = dec(pl64, &n);
    assert_int_equal(n, strlen(payload));
    assert_memory_equal(pl, payload, n);
    unsigned char *sig = dec(s64, &n), der[128];
    unsigned char *sigp = sig;
    size_t siglen = n;
    if (ec) { /* R||S back to DER for OpenSSL */
        assert_int_equal(n, 64);
        ECDSA_SIG *es = ECDSA_SIG_new();
        ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
        unsigned char *o = der;
        siglen = (size_t)i2d_ECDSA_SIG(es, &o);
        sigp = der;
        ECDSA_SIG_free(es);
    }
    char *input = NULL;
    assert_true(asprintf(&input, "%s.%s", p64, pl64) > 0);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k), 1);
    assert_int_equal(EVP_DigestVerify(md, sigp, siglen, (unsigned char *)input, strlen(input)), 1);
    /* and a changed input does not verify */
    input[0] ^= 1;
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k), 1);
    assert_int_not_equal(
        EVP_DigestVerify(md, sigp, siglen, (unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    free(input);
    free(sig);
    free(pl);
    free(h);
    json_decref(hdr);
    json_decref(j);
}

static void jws_for(int type)
{
    char err[256];
    EVP_PKEY *k = acme_key_new(type, err, sizeof err);
    assert_non_null(k);
    char *t = acme_jws(k, NULL, "nonce-1", "https://ca/acct", "{\"a\":1}", err, sizeof err);
    assert_non_null(t);
    check_jws(k, t, NULL, "{\"a\":1}");
    free(t);
    t = acme_jws(k, "https://ca/acct/7", "nonce-1", "https://ca/acct", "", err, sizeof err);
    assert_non_null(t);
    check_jws(k, t, "https://ca/acct/7", "");
    free(t);
    /* the PEM round trip keeps the key (same thumbprint) */
    size_t len;
    char *pem = acme_key_to_pem(k, &len);
    assert_non_null(pem);
    EVP_PKEY *k2 = acme_key_from_pem(pem, len, err, sizeof err);
    assert_non_null(k2);
    char *a = acme_thumbprint(k), *b = acme_thumbprint(k2);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 43);
    free(a);
    free(b);
    free(pem);
    acme_key_free(k2);
    acme_key_free(k);
}

static void test_jws_es256(void **state)
{
    jws_for(CONF_ACME_ECDSA_P256);
}

static void test_jws_rs256(void **state)
{
    jws_for(CONF_ACME_RSA_2048);
}

static void test_eab(void **state)
{
    char err[256];
    EVP_PKEY *k = acme_key_new(CONF_ACME_ECDSA_P256, err, sizeof err);
    const char *key64 = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    json_t *eab = acme_eab(k, "kid-1", key64, "https://ca/new-acct", err, sizeof err);
    assert_non_null(eab);
    const char *p64 = json_string_value(json_object_get(eab, "protected"));
    const char *pl64 = json_string_value(json_object_get(eab, "payload"));
    const char *s64 = json_string_value(json_object_get(eab, "signature"));
    size_t n, keylen, siglen;
    unsigned char *h = dec(p64, &n);
    json_t *hdr = json_loadb((char *)h, n, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(hdr, "alg")), "HS256");
    assert_string_equal(json_string_value(json_object_get(hdr, "kid")), "kid-1");
    assert_string_equal(json_string_value(json_object_get(hdr, "url")), "https://ca/new-acct");
    assert_null(json_object_get(hdr, "nonce"));
    unsigned char *pl = dec(pl64, &n);
    json_t *jwk = json_loadb((char *)pl, n, 0, NULL), *want = acme_jwk(k);
    assert_true(json_equal(jwk, want));
    unsigned char *key = dec(key64, &keylen), *sig = dec(s64, &siglen), mac[32];
    char *input = NULL;
    assert_true(asprintf(&input, "%s.%s", p64, pl64) > 0);
    unsigned maclen = 0;
    HMAC(EVP_sha256(), key, (int)keylen, (unsigned char *)input, strlen(input), mac, &maclen);
    assert_int_equal(siglen, 32);
    assert_memory_equal(sig, mac, 32);
    assert_null(acme_eab(k, "kid-1", "not base64!", "https://ca/x", err, sizeof err));
    assert_string_equal(err, "eab-hmac-key is not base64url");
    free(input);
    free(key);
    free(sig);
    free(pl);
    free(h);
    json_decref(jwk);
    json_decref(want);
    json_decref(hdr);
    json_decref(eab);
    acme_key_free(k);
}

static void test_csr(void **state)
{
    char err[256];
    EVP_PKEY *k = acme_key_new(CONF_ACME_RSA_2048, err, sizeof err);
    char *names[] = {"gw.example.com", "gw2.example.com"};
    char *csr64 = acme_csr(k, names, 2, err, sizeof err);
    assert_non_null(csr64);
    size_t n;
    unsigned char *der = dec(csr64, &n);
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)n);
    assert_non_null(req);
    assert_int_equal(X509_REQ_verify(req, k), 1);
    char cn[128];
    X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "gw.example.com");
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *sans = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_num(sans), 2);
    for (int i = 0; i < 2; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        assert_int_equal(g->type, GEN_DNS);
        assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.dNSName), names[i]);
    }
    GENERAL_NAMES_free(sans);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    free(der);
    free(csr64);
    acme_key_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url),        cmocka_unit_test(test_thumbprint_rfc7638),
        cmocka_unit_test(test_jws_es256),     cmocka_unit_test(test_jws_rs256),
        cmocka_unit_test(test_eab),           cmocka_unit_test(test_csr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
