/* Unit tests for the [acme] section of src/conf.c: values, defaults and the sentences
 * check-config prints for each wrong value. */
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

#include "conf.h"
#include "propfile.h"

#define PATH "custom.properties"
#define WEB "[com.compuware.apm.webserver]\nport = 8080\n"

/* conf_settings_check on text: returns the number of errors, their sentences in err. */
static int check(const char *text, struct conf_settings *s, char *err, size_t errlen)
{
    struct propfile *doc = NULL;
    if (propfile_parse(text, strlen(text), PATH, &doc, err, errlen) < 0)
        fail_msg("expected the text to parse, got: %s", err);
    int n = 0;
    conf_settings_check(doc, PATH, s, err, errlen, &n);
    propfile_free(doc);
    return n;
}

static void expect_errors(const char *text, const char *expected)
{
    struct conf_settings s;
    char err[4096] = "";
    int n = check(text, &s, err, sizeof err);
    conf_settings_free(&s);
    if (n == 0) fail_msg("expected errors:\n%s\nfor:\n%s", expected, text);
    assert_string_equal(err, expected);
}

static void test_acme_off_by_default(void **state)
{
    struct conf_settings s;
    char err[256] = "";
    assert_int_equal(check(WEB, &s, err, sizeof err), 0);
    assert_null(s.acme.directory);
    assert_non_null(s.acme.domains);
    assert_null(s.acme.domains[0]);
    assert_int_equal(s.acme.ndomains, 0);
    conf_settings_free(&s);
}

static void test_acme_all_keys(void **state)
{
    struct conf_settings s;
    char err[1024] = "";
    const char *text = WEB "[acme]\n"
                           "directory = https://ca.example:14000/dir\n"
                           "email = ops@example.com\n"
                           "domains = GW.example.com, gw2.example.com\n"
                           "challenge = tls-alpn-01\n"
                           "key-type = rsa-2048\n"
                           "ca-file = /etc/ca.pem\n"
                           "eab-kid = kid-1\n"
                           "eab-hmac-key = zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsU\n"
                           "renew-before = 30d\n";
    assert_int_equal(check(text, &s, err, sizeof err), 0);
    assert_string_equal(s.acme.directory, "https://ca.example:14000/dir");
    assert_string_equal(s.acme.email, "ops@example.com");
    assert_int_equal(s.acme.ndomains, 2);
    assert_string_equal(s.acme.domains[0], "gw.example.com");
    assert_string_equal(s.acme.domains[1], "gw2.example.com");
    assert_int_equal(s.acme.challenge, CONF_ACME_TLSALPN01);
    assert_int_equal(s.acme.key_type, CONF_ACME_RSA_2048);
    assert_string_equal(s.acme.ca_file, "/etc/ca.pem");
    assert_string_equal(s.acme.eab_kid, "kid-1");
    assert_int_equal(s.acme.renew_before_s, 30 * 86400);
    conf_settings_free(&s);

    assert_int_equal(check(WEB "[acme]\ndirectory = https://ca/dir\ndomains = a.example\n"
                               "renew-before = 3600\n",
                           &s, err, sizeof err),
                     0);
    assert_int_equal(s.acme.challenge, CONF_ACME_HTTP01);
    assert_int_equal(s.acme.key_type, CONF_ACME_ECDSA_P256);
    assert_int_equal(s.acme.renew_before_s, 3600);
    conf_settings_free(&s);
}

static void test_acme_errors_each_with_its_line(void **state)
{
    expect_errors(
        WEB "[acme]\n"                                   /* 3 */
            "directory = http://ca.example/dir\n"        /* 4 */
            "email = not-an-address\n"                   /* 5 */
            "domains = ok.example, *.example.com, 10.0.0.1\n" /* 6 */
            "challenge = dns-01\n"                       /* 7 */
            "key-type = ed25519\n"                       /* 8 */
            "eab-hmac-key = short\n"                     /* 9 */
            "renew-before = 10x\n",                      /* 10 */
        PATH ":4: directory: 'http://ca.example/dir' is not an https:// URL (RFC 8555 requires "
             "HTTPS); use the CA's directory URL, e.g. "
             "https://acme-v02.api.letsencrypt.org/directory\n" PATH
             ":5: email: 'not-an-address' is not an e-mail address; use one address, e.g. "
             "ops@example.com\n" PATH
             ":6: domains: '*.example.com' is a wildcard, which needs the dns-01 challenge (not "
             "supported); use host names, comma-separated, e.g. gw.example.com, "
             "gw2.example.com\n" PATH
             ":7: challenge: 'dns-01' is not supported; use http-01 or tls-alpn-01\n" PATH
             ":8: key-type: 'ed25519' is not supported; use ecdsa-p256 or rsa-2048\n" PATH
             ":9: eab-hmac-key: the value is not a base64url key of at least 12 bytes; paste "
             "the HMAC key exactly as the CA gave it\n" PATH
             ":9: eab-hmac-key: External Account Binding needs both eab-kid and eab-hmac-key\n" PATH
             ":10: renew-before: '10x' is not a duration; use a duration from 1 minute to 365 "
             "days, e.g. 30d, 12h or 3600 (seconds), or remove the line for a third of the "
             "lifetime");
    expect_errors("[acme]\ndirectory = https://ca/dir\ndomains = 10.0.0.1\n",
                  PATH ":2: directory: http-01 is answered on the plain HTTP listener, which is "
                       "off; set port in [com.compuware.apm.webserver] (the CA connects to port "
                       "80 of each domain, so forward it there), or use challenge = tls-alpn-01\n" PATH
                       ":3: domains: '10.0.0.1' is not a fully qualified domain name (IP "
                       "addresses are not supported); use host names, comma-separated, e.g. "
                       "gw.example.com, gw2.example.com");
    expect_errors(WEB "[acme]\ndirectory = https://ca/dir\n",
                  PATH ":4: directory: [acme] needs domains, the names the certificate is for "
                       "(comma-separated), or remove directory to turn ACME off");
    expect_errors(WEB "[acme]\ndomains = a.example\nrenew-before = 90s\n",
                  PATH ":4: domains: has no effect without directory; set directory to the "
                       "CA's directory URL, or remove the line\n" PATH
                       ":5: renew-before: has no effect without directory; set directory to the "
                       "CA's directory URL, or remove the line");
    expect_errors(WEB "[acme]\ndirectory = https://ca/dir\ndomains = a.example, A.example\n"
                      "renew-before = 400d\n",
                  PATH ":5: domains: 'a.example' is listed twice; use host names, "
                       "comma-separated, e.g. gw.example.com, gw2.example.com\n" PATH
                       ":6: renew-before: '400d' is out of range; use a duration from 1 minute "
                       "to 365 days, e.g. 30d, 12h or 3600 (seconds), or remove the line for a "
                       "third of the lifetime");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acme_off_by_default),
        cmocka_unit_test(test_acme_all_keys),
        cmocka_unit_test(test_acme_errors_each_with_its_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
