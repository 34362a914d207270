/* Unit tests for src/acme_ari.c (RFC 9773, ACME Renewal Information): the certID of the
 * RFC's example, the renewalInfo answer, the choice inside the suggested window and the
 * re-poll interval. No local CA offers renewalInfo (Debian's pebble 2.4.0 does not), so
 * the request itself is not exercised here. */
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
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme_ari.h"

/* A certificate with the given serial (hex) and, unless NULL, AKI keyIdentifier (hex). */
static X509 *cert_with(const char *serial_hex, const char *aki_hex)
{
    X509 *x = X509_new();
    assert_non_null(x);
    BIGNUM *bn = NULL;
    assert_true(BN_hex2bn(&bn, serial_hex) > 0);
    ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
    assert_non_null(serial);
    assert_int_equal(X509_set_serialNumber(x, serial), 1);
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    if (aki_hex) {
        long n = 0;
        unsigned char *id = OPENSSL_hexstr2buf(aki_hex, &n);
        assert_non_null(id);
        AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
        akid->keyid = ASN1_OCTET_STRING_new();
        assert_int_equal(ASN1_OCTET_STRING_set(akid->keyid, id, (int)n), 1);
        assert_int_equal(X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, 0), 1);
        AUTHORITY_KEYID_free(akid);
        OPENSSL_free(id);
    }
    return x;
}

static void test_cert_id_rfc_example(void **state)
{
    (void)state;
    /* RFC 9773 section 4.1: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:
     * 2C:DE:01:C8:D4 and serial 0x87654321 (DER contents 00 87 65 43 21) */
    X509 *x = cert_with("87654321", "69885B6B87464041E1B37B847BA0AE2CDE01C8D4");
    char id[200];
    assert_int_equal(acme_ari_cert_id(x, id, sizeof id), 0);
    assert_string_equal(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    /* too small a buffer is refused, not cut */
    assert_int_equal(acme_ari_cert_id(x, id, 20), -1);
    X509_free(x);
    /* a serial whose top bit is clear has no leading zero */
    x = cert_with("0102", "0A0B");
    assert_int_equal(acme_ari_cert_id(x, id, sizeof id), 0);
    assert_string_equal(id, "Cgs.AQI");
    X509_free(x);
}

static void test_cert_id_without_aki(void **state)
{
    (void)state;
    X509 *x = cert_with("01", NULL);
    char id[200] = "untouched";
    assert_int_equal(acme_ari_cert_id(x, id, sizeof id), -1);
    X509_free(x);
}

static int parse(const char *json, time_t *s, time_t *e)
{
    char err[300];
    return acme_ari_parse(json, strlen(json), s, e, err, sizeof err);
}

static void test_parse(void **state)
{
    (void)state;
    time_t s = 0, e = 0;
    assert_int_equal(parse("{\"suggestedWindow\":{\"start\":\"2025-01-02T04:00:00Z\","
                           "\"end\":\"2025-01-03T04:00:00Z\"},"
                           "\"explanationURL\":\"https://acme.example.com/docs/ari\"}",
                           &s, &e),
                     0);
    assert_int_equal((long long)s, 1735790400LL);
    assert_int_equal((long long)(e - s), 86400);
    /* fractional seconds and numeric offsets */
    assert_int_equal(parse("{\"suggestedWindow\":{\"start\":\"2025-01-02T05:30:00.123+01:30\","
                           "\"end\":\"2025-01-02t04:00:01z\"}}",
                           &s, &e),
                     0);
    assert_int_equal((long long)s, 1735790400LL);
    assert_int_equal((long long)(e - s), 1);
    char err[300];
    const char *bad[] = {
        "{}",
        "not json",
        "{\"suggestedWindow\":\"2025-01-02T04:00:00Z\"}",
        "{\"suggestedWindow\":{\"start\":\"2025-01-02T04:00:00Z\"}}",
        "{\"suggestedWindow\":{\"start\":\"2025-01-03T04:00:00Z\",\"end\":\"2025-01-02T04:00:00Z\"}}",
        "{\"suggestedWindow\":{\"start\":\"2025-01-02T04:00:00Z\",\"end\":\"2025-01-02T04:00:00Z\"}}",
        "{\"suggestedWindow\":{\"start\":\"2025-01-02 04:00\",\"end\":\"2025-01-03T04:00:00Z\"}}",
        "{\"suggestedWindow\":{\"start\":\"2025-13-02T04:00:00Z\",\"end\":\"2026-01-03T04:00:00Z\"}}",
        "{\"suggestedWindow\":{\"start\":\"2025-01-02T04:00:00\",\"end\":\"2025-01-03T04:00:00Z\"}}",
        "{\"suggestedWindow\":{\"start\":1735790400,\"end\":1735876800}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        assert_int_equal(acme_ari_parse(bad[i], strlen(bad[i]), &s, &e, err, sizeof err), -1);
        assert_true(strstr(err, "suggestedWindow") != NULL);
    }
}

static void test_pick(void **state)
{
    (void)state;
    time_t start = 1735790400, end = start + 86400, now = start - 1000;
    assert_int_equal((long long)acme_ari_pick(start, end, now, 0), (long long)start);
    time_t last = acme_ari_pick(start, end, now, UINT32_MAX);
    assert_true(last < end && last >= end - 1);
    assert_int_equal((long long)acme_ari_pick(start, end, now, 1u << 31),
                     (long long)(start + 43200));
    /* many random choices: all inside the window, spread over it */
    int low = 0, high = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        uint32_t r = i * 2654435761u;
        time_t at = acme_ari_pick(start, end, now, r);
        assert_true(at >= start && at < end);
        if (at < start + 43200) low++;
        else high++;
    }
    assert_true(low > 400 && high > 400);
    /* a window that has begun or passed: renew at once when the choice is past */
    assert_int_equal((long long)acme_ari_pick(start, end, end + 5, 12345), (long long)(end + 5));
    assert_int_equal((long long)acme_ari_pick(start, end, start + 100, 0),
                     (long long)(start + 100));
}

static void test_recheck(void **state)
{
    (void)state;
    assert_int_equal(acme_ari_recheck_s(-1), 6 * 3600);
    assert_int_equal(acme_ari_recheck_s(0), 60);
    assert_int_equal(acme_ari_recheck_s(5), 60);
    assert_int_equal(acme_ari_recheck_s(21600), 21600);
    assert_int_equal(acme_ari_recheck_s(10 * 86400), 86400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cert_id_rfc_example), cmocka_unit_test(test_cert_id_without_aki),
        cmocka_unit_test(test_parse), cmocka_unit_test(test_pick),
        cmocka_unit_test(test_recheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
