/* Unit tests for src/conf.c: the typed settings read from custom.properties, their
 * defaults and their error messages. The file format is tested in test_propfile.c. */
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

#include <arpa/inet.h>
#include <cmocka.h>

#include "conf.h"
#include "propfile.h"

#define PATH "custom.properties"
#define WEB "[com.compuware.apm.webserver]\n"

/* ----- helpers ----- */

/* Parses text (which must parse) and loads the settings from it; returns what
 * conf_settings_load returned. */
static int settings_from(const char *text, struct conf_settings *s, char *err, size_t errlen)
{
    struct propfile *doc = NULL;
    if (propfile_parse(text, strlen(text), PATH, &doc, err, errlen) < 0)
        fail_msg("expected the text to parse, got: %s", err);
    int rc = conf_settings_load(doc, PATH, s, err, errlen);
    propfile_free(doc);
    return rc;
}

static void load_settings(const char *text, struct conf_settings *s)
{
    char err[256] = "";
    if (settings_from(text, s, err, sizeof err) < 0)
        fail_msg("expected the settings to load, got: %s", err);
}

static void expect_settings_error(const char *text, const char *expected)
{
    struct conf_settings s;
    char err[512] = "";
    memset(&s, 0xaa, sizeof s);
    if (settings_from(text, &s, err, sizeof err) == 0) {
        conf_settings_free(&s);
        fail_msg("expected these settings to fail with: %s\n%s", expected, text);
    }
    assert_string_equal(err, expected);
    /* on failure nothing is left to free */
    static const struct conf_settings zero;
    if (memcmp(&s, &zero, sizeof s) != 0) fail_msg("expected *out to be zeroed on failure");
}

/* ----- typed settings ----- */

static void test_settings_defaults(void **state)
{
    (void)state;
    struct conf_settings s;
    load_settings("[other]\nunknown = 1\n" WEB "unknown-key = x\n", &s);
    assert_int_equal(s.port_ssl, 9999);
    assert_int_equal(s.port_http, 0);
    assert_int_equal(s.tls_versions, TLS_V12 | TLS_V13);
    assert_non_null(s.excluded_ciphers);
    assert_null(s.excluded_ciphers[0]);
    assert_null(s.certificate_file);
    assert_null(s.certificate_password);
    assert_null(s.certificate_password_encr);
    assert_null(s.certificate_alias);
    assert_int_equal(s.max_upload_bytes, 1024 * 1024);
    assert_int_equal(s.keepalive_timeout_ms, 75000);
    assert_int_equal(s.header_timeout_ms, 20000);
    assert_int_equal(s.body_timeout_ms, 60000);
    assert_int_equal(s.session_cache, 1);
    assert_int_equal(s.session_tickets, 1);
    assert_null(s.upstream.url);
    assert_int_equal(s.upstream.connect_timeout_s, 5);
    assert_int_equal(s.upstream.read_timeout_s, 60);
    assert_int_equal(s.upstream.max_connections, 32);
    assert_null(s.upstream.ca_file);
    assert_int_equal(s.upstream.verify, 1);
    conf_settings_free(&s);
    assert_null(s.excluded_ciphers);
}

static void test_settings_all_keys(void **state)
{
    (void)state;
    struct conf_settings s;
    load_settings(WEB "port-ssl = 8443\nport = 8080\nssl-protocols = tlsv1.3\n"
                      "excluded-ciphers = CBC, SHA1\\,x ,\n"
                      "certificate-file = C:\\certs\\my.p12\n"
                      "certificate-password = pa\\,ss\\\\word\n"
                      "certificate-password-encr =\ncertificate-alias = \n"
                      "[certgate]\nmax-upload-size = 512K\nkeepalive-timeout = 0.5\n"
                      "header-timeout = 3600\nbody-timeout = 0.1\nssl-session-cache = OFF\n"
                      "ssl-session-tickets = false\n"
                      "[upstream]\nurl = https://[::1]:8443/api\nconnect-timeout = 2\n"
                      "read-timeout = 3600\nmax-connections = 10000\nca-file = /etc/ca.pem\n"
                      "verify = off\n",
                  &s);
    assert_int_equal(s.port_ssl, 8443);
    assert_int_equal(s.port_http, 8080);
    assert_int_equal(s.tls_versions, TLS_V13);
    assert_string_equal(s.excluded_ciphers[0], "CBC");
    assert_string_equal(s.excluded_ciphers[1], "SHA1,x");
    assert_null(s.excluded_ciphers[2]);
    assert_string_equal(s.certificate_file, "C:\\certs\\my.p12");
    assert_string_equal(s.certificate_password, "pa,ss\\word");
    assert_null(s.certificate_password_encr); /* empty = absent */
    assert_null(s.certificate_alias);
    assert_int_equal(s.max_upload_bytes, 512 * 1024);
    assert_int_equal(s.keepalive_timeout_ms, 500);
    assert_int_equal(s.header_timeout_ms, 3600000);
    assert_int_equal(s.body_timeout_ms, 100);
    assert_int_equal(s.session_cache, 0);
    assert_int_equal(s.session_tickets, 0);
    assert_string_equal(s.upstream.url, "https://[::1]:8443/api");
    assert_int_equal(s.upstream.connect_timeout_s, 2);
    assert_int_equal(s.upstream.read_timeout_s, 3600);
    assert_int_equal(s.upstream.max_connections, 10000);
    assert_string_equal(s.upstream.ca_file, "/etc/ca.pem");
    assert_int_equal(s.upstream.verify, 0);
    conf_settings_free(&s);
}

static void test_settings_value_forms(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        size_t bytes;
    } sizes[] = {{"64M", 64u << 20}, {"1024", 1024}, {"2m", 2u << 20}, {"1K", 1024}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        char text[128];
        struct conf_settings s;
        snprintf(text, sizeof text, "[certgate]\nmax-upload-size = %s\n", sizes[i].value);
        load_settings(text, &s);
        if (s.max_upload_bytes != sizes[i].bytes)
            fail_msg("max-upload-size = %s: expected %zu bytes, got %zu", sizes[i].value,
                     sizes[i].bytes, s.max_upload_bytes);
        conf_settings_free(&s);
    }
    struct conf_settings s;
    load_settings(WEB "ssl-protocols = TLSv1.2\ncertificate-alias = my-alias\n"
                      "[certgate]\nheader-timeout = 30.25\nbody-timeout = .5\n"
                      "[upstream]\nurl = HTTP://backend.example\nverify = TRUE\n",
                  &s);
    assert_int_equal(s.tls_versions, TLS_V12);
    assert_string_equal(s.certificate_alias, "my-alias");
    assert_int_equal(s.header_timeout_ms, 30250);
    assert_int_equal(s.body_timeout_ms, 500);
    assert_string_equal(s.upstream.url, "HTTP://backend.example");
    assert_int_equal(s.upstream.verify, 1);
    conf_settings_free(&s);
}

#define URL_HINT                                                                                   \
    "; use http:// or https://, a host, an optional port and an optional path prefix, e.g. "       \
    "https://backend.example:8443/api"
#define PORT_OFF ", or remove the line to turn the plain HTTP listener off"
#define PROTOCOLS "use TLSv1.2, TLSv1.3 or both, comma-separated"

static void test_settings_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *err;
    } cases[] = {
        {WEB "port-ssl = 0\n",
         PATH ":2: port-ssl: '0' is out of range; use a number from 1 to 65535"},
        {WEB "port-ssl = https\n",
         PATH ":2: port-ssl: 'https' is not a port number; use a number from 1 to 65535"},
        {WEB "port-ssl = -1\n",
         PATH ":2: port-ssl: '-1' is not a port number; use a number from 1 to 65535"},
        {WEB "\nport = 70000\n",
         PATH ":3: port: '70000' is out of range; use a number from 1 to 65535" PORT_OFF},
        {WEB "port =\n",
         PATH ":2: port: the value is empty; use a number from 1 to 65535" PORT_OFF},
        {WEB "port-ssl = 443\nport = 443\n",
         PATH ":3: port: 443 is also the HTTPS port (port-ssl); use another port for plain "
              "HTTP, or remove the line to turn it off"},
        {WEB "port = 9999\n",
         PATH ":2: port: 9999 is also the HTTPS port (port-ssl); use another port for plain "
              "HTTP, or remove the line to turn it off"},
        {WEB "ssl-protocols = TLSv1.2, TLSv1.1\n",
         PATH ":2: ssl-protocols: 'TLSv1.1' is not supported; " PROTOCOLS},
        {WEB "ssl-protocols = ,\n", PATH ":2: ssl-protocols: the list is empty; " PROTOCOLS},
        {"[certgate]\nmax-upload-size = 100\n",
         PATH ":2: max-upload-size: '100' is out of range; use a size from 1K (1024 bytes) to "
              "64M, e.g. 512K or 8M"},
        {"[certgate]\nmax-upload-size = 65M\n",
         PATH ":2: max-upload-size: '65M' is out of range; use a size from 1K (1024 bytes) to "
              "64M, e.g. 512K or 8M"},
        {"[certgate]\nmax-upload-size = 1G\n",
         PATH ":2: max-upload-size: '1G' is not a size; use a number of bytes, optionally with "
              "a K or M suffix (KiB, MiB), from 1K to 64M"},
        {"[certgate]\nkeepalive-timeout = 0.05\n",
         PATH ":2: keepalive-timeout: '0.05' is out of range; use a number of seconds from 0.1 "
              "to 3600"},
        {"[certgate]\nheader-timeout = 3600.0001\n",
         PATH ":2: header-timeout: '3600.0001' is out of range; use a number of seconds from "
              "0.1 to 3600"},
        {"[certgate]\nbody-timeout = 10s\n",
         PATH ":2: body-timeout: '10s' is not a number of seconds; use a value from 0.1 to "
              "3600, e.g. 0.5 or 30"},
        {"[certgate]\nbody-timeout = .\n",
         PATH ":2: body-timeout: '.' is not a number of seconds; use a value from 0.1 to "
              "3600, e.g. 0.5 or 30"},
        {"[certgate]\nssl-session-cache = maybe\n",
         PATH ":2: ssl-session-cache: 'maybe' is not a switch; use on, off, true or false"},
        {"[certgate]\nssl-session-tickets =\n",
         PATH ":2: ssl-session-tickets: the value is empty; use on, off, true or false"},
        {"[upstream]\nurl = ftp://host/\n",
         PATH ":2: url: 'ftp://host/' does not start with http:// or https://" URL_HINT},
        {"[upstream]\nurl = http://\n", PATH ":2: url: 'http://' has no host" URL_HINT},
        {"[upstream]\nurl = http://host:0/\n",
         PATH ":2: url: 'http://host:0/' has an invalid port (allowed: 1 to 65535)" URL_HINT},
        {"[upstream]\nurl = https://host:/\n",
         PATH ":2: url: 'https://host:/' has an invalid port (allowed: 1 to 65535)" URL_HINT},
        {"[upstream]\nurl = http://host/a b\n",
         PATH ":2: url: 'http://host/a b' contains white space" URL_HINT},
        {"[upstream]\nurl = http://host/?q=1\n",
         PATH ":2: url: 'http://host/?q=1' has a query or fragment" URL_HINT},
        {"[upstream]\nurl = http://user@host/\n",
         PATH ":2: url: 'http://user@host/' has a character that is not allowed in a host "
              "name" URL_HINT},
        {"[upstream]\nconnect-timeout = 1.5\n",
         PATH ":2: connect-timeout: '1.5' is not a whole number of seconds; use a number from "
              "1 to 3600 seconds"},
        {"[upstream]\nread-timeout = 5\n[certgate]\n[upstream]\nread-timeout = 0\n",
         PATH ":5: read-timeout: '0' is out of range; use a number from 1 to 3600 seconds"},
        {"[upstream]\nmax-connections = 10001\n",
         PATH ":2: max-connections: '10001' is out of range; use a number from 1 to 10000"},
        {"# CRLF file\r\n[upstream]\r\n\r\nverify = yes\r\n",
         PATH ":4: verify: 'yes' is not a switch; use true or false (on and off also work)"},
        {"[upstream]\nverify = yes\n",
         PATH ":2: verify: 'yes' is not a switch; use true or false (on and off also work)"},
        {"[upstream]\ntrusted-proxies = 10.0.0.0/8, 10.0.0.0/33\n",
         PATH ":2: trusted-proxies: '10.0.0.0/33' is not an address or an address/prefix-length; "
              "use IPv4 or IPv6 addresses or ranges, comma-separated, e.g. 10.0.0.0/8, "
              "192.0.2.7, 2001:db8::/32"},
        {"[upstream]\n\ntrusted-proxies = 2001:db8::/129\n",
         PATH ":3: trusted-proxies: '2001:db8::/129' is not an address or an "
              "address/prefix-length; use IPv4 or IPv6 addresses or ranges, comma-separated, "
              "e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32"},
        {"[upstream]\ntrusted-proxies = backend.example\n",
         PATH ":2: trusted-proxies: 'backend.example' is not an address or an "
              "address/prefix-length; use IPv4 or IPv6 addresses or ranges, comma-separated, "
              "e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32"},
        {"[upstream]\ntrusted-proxies = 10.0.0.1/\n",
         PATH ":2: trusted-proxies: '10.0.0.1/' is not an address or an address/prefix-length; "
              "use IPv4 or IPv6 addresses or ranges, comma-separated, e.g. 10.0.0.0/8, "
              "192.0.2.7, 2001:db8::/32"},
        {"[upstream]\nforwarded = maybe\n",
         PATH ":2: forwarded: 'maybe' is not a switch; use on, off, true or false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_settings_error(cases[i].text, cases[i].err);
}

/* trusted-proxies: parsed ranges (host bits cleared) and matching, IPv4-mapped included */
static void test_trusted_proxies(void **state)
{
    (void)state;
    struct conf_settings s;
    load_settings("[upstream]\ntrusted-proxies = 10.1.2.3/8, 192.0.2.7, 2001:db8::1/33\n"
                  "forwarded = on\n",
                  &s);
    const struct conf_upstream *u = &s.upstream;
    assert_int_equal(u->ntrusted_proxies, 3);
    assert_int_equal(u->forwarded, 1);
    assert_int_equal(u->trusted_proxies[0].bits, 8);
    assert_int_equal(u->trusted_proxies[0].addr[1], 0); /* 10.1.2.3/8 -> 10.0.0.0/8 */
    static const struct {
        const char *addr;
        int in;
    } probes[] = {{"10.255.0.1", 1}, {"11.0.0.1", 0}, {"192.0.2.7", 1}, {"192.0.2.8", 0},
                  {"::ffff:10.9.9.9", 1}, {"::ffff:11.9.9.9", 0}, {"2001:db8:7fff::5", 1},
                  {"2001:db8:8000::5", 0}, {"::1", 0}};
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, probes[i].addr, &in4->sin_addr) == 1)
            in4->sin_family = AF_INET;
        else {
            assert_int_equal(inet_pton(AF_INET6, probes[i].addr, &in6->sin6_addr), 1);
            in6->sin6_family = AF_INET6;
        }
        if (conf_cidr_match(u->trusted_proxies, u->ntrusted_proxies,
                            (struct sockaddr *)&ss) != probes[i].in)
            fail_msg("%s: expected %d", probes[i].addr, probes[i].in);
    }
    assert_int_equal(conf_cidr_match(u->trusted_proxies, 0, NULL), 0);
    conf_settings_free(&s);
    load_settings("", &s);
    assert_int_equal(s.upstream.ntrusted_proxies, 0); /* empty by default */
    assert_int_equal(s.upstream.forwarded, 0);
    conf_settings_free(&s);
}

/* issue 10's bounded resources: [certgate] max-connections and min-rate, [upstream]
 * queue-size */
static void test_settings_resource_limits(void **state)
{
    (void)state;
    struct conf_settings s;
    load_settings(WEB, &s);
    assert_int_equal(s.max_connections, 0); /* sized from RLIMIT_NOFILE by server.c */
    assert_int_equal(s.min_rate, 1024);
    assert_int_equal(s.upstream.queue_size, 256);
    conf_settings_free(&s);
    load_settings("[certgate]\nmax-connections = 5000\nmin-rate = 0\n"
                  "[upstream]\nqueue-size = 0\n",
                  &s);
    assert_int_equal(s.max_connections, 5000);
    assert_int_equal(s.min_rate, 0);
    assert_int_equal(s.upstream.queue_size, 0);
    conf_settings_free(&s);
    expect_settings_error("[certgate]\nmax-connections = 0\n",
                          PATH ":2: max-connections: '0' is out of range; use a number from 1 "
                          "to 10000000, or remove the line to size it from the open-files "
                          "limit");
    expect_settings_error("[certgate]\nmin-rate = 1k\n",
                          PATH ":2: min-rate: '1k' is not a number of bytes per second; use a "
                          "number from 0 to 1000000000 (0: off)");
    expect_settings_error("[upstream]\nqueue-size = 100001\n",
                          PATH ":2: queue-size: '100001' is out of range; use a number from 0 "
                          "to 100000 (0: no queue, answer 503 at once)");
}

/* conf_settings_check lists every wrong value, sorted by line; conf_settings_load
 * reports the one on the first line only; included-ciphers is read as a list. */
static void test_settings_check_all(void **state)
{
    (void)state;
    const char *text = "[upstream]\nverify = maybe\n" WEB "port-ssl = 0\n"
                       "included-ciphers = AES_128\\, x, CHACHA20\n"
                       "[certgate]\napi-queue = 0\nmin-rate = fast\n";
    struct propfile *doc = NULL;
    char err[2048];
    assert_int_equal(propfile_parse(text, strlen(text), PATH, &doc, err, sizeof err), 0);
    struct conf_settings s;
    int n = -1;
    assert_int_equal(conf_settings_check(doc, PATH, &s, err, sizeof err, &n), -1);
    assert_int_equal(n, 4);
    const char *lines[] = {PATH ":2: verify: 'maybe'", PATH ":4: port-ssl: '0'",
                           PATH ":7: api-queue: '0'", PATH ":8: min-rate: 'fast'"};
    const char *p = err;
    for (int i = 0; i < 4; i++) {
        assert_non_null(p);
        assert_memory_equal(p, lines[i], strlen(lines[i]));
        p = strchr(p, '\n');
        if (p) p++;
    }
    assert_null(p);
    /* the valid keys are filled in */
    assert_string_equal(s.included_ciphers[0], "AES_128, x");
    assert_string_equal(s.included_ciphers[1], "CHACHA20");
    assert_null(s.included_ciphers[2]);
    assert_int_equal(s.port_ssl, 9999);
    conf_settings_free(&s);
    /* the first by line only, and nothing to free */
    assert_int_equal(conf_settings_load(doc, PATH, &s, err, sizeof err), -1);
    assert_string_equal(err, PATH ":2: verify: 'maybe' is not a switch; use true or false "
                             "(on and off also work)");
    propfile_free(doc);
    /* a valid file: 0 errors, included-ciphers empty when absent */
    text = WEB "port-ssl = 443\n";
    assert_int_equal(propfile_parse(text, strlen(text), PATH, &doc, err, sizeof err), 0);
    assert_int_equal(conf_settings_check(doc, PATH, &s, err, sizeof err, &n), 0);
    assert_int_equal(n, 0);
    assert_non_null(s.included_ciphers);
    assert_null(s.included_ciphers[0]);
    conf_settings_free(&s);
    propfile_free(doc);
}

/* issue 11: [certgate] metrics-listen */
static void test_settings_metrics_listen(void **state)
{
    (void)state;
    struct conf_settings s;
    load_settings(WEB, &s);
    assert_int_equal(s.metrics_port, 0); /* off by default */
    conf_settings_free(&s);
    static const struct {
        const char *v, *host;
        unsigned port;
    } ok[] = {{"on", "127.0.0.1", 9998},  {"off", "", 0},           {"0.0.0.0:9100", "0.0.0.0", 9100},
              {"[::1]:1", "::1", 1},      {"localhost:65535", "localhost", 65535}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "[certgate]\nmetrics-listen = %s\n", ok[i].v);
        load_settings(text, &s);
        assert_int_equal(s.metrics_port, ok[i].port);
        if (ok[i].port) assert_string_equal(s.metrics_host, ok[i].host);
        conf_settings_free(&s);
    }
    expect_settings_error("[certgate]\nmetrics-listen = 9998\n",
                          PATH ":2: metrics-listen: '9998' is not an address; use off, on "
                          "(127.0.0.1:9998), HOST:PORT or [IPv6]:PORT");
    expect_settings_error("[certgate]\nmetrics-listen = ::1:9998\n",
                          PATH ":2: metrics-listen: '::1:9998' is not an address; use off, on "
                          "(127.0.0.1:9998), HOST:PORT or [IPv6]:PORT");
    expect_settings_error("[certgate]\nmetrics-listen = [::1]9998\n",
                          PATH ":2: metrics-listen: '[::1]9998' is not an address; use off, on "
                          "(127.0.0.1:9998), HOST:PORT or [IPv6]:PORT");
    expect_settings_error("[certgate]\nmetrics-listen = host:0\n",
                          PATH ":2: metrics-listen: 'host:0' has no valid port (1 to 65535); use "
                          "off, on (127.0.0.1:9998), HOST:PORT or [IPv6]:PORT");
    expect_settings_error("[certgate]\nmetrics-listen = host:99999\n",
                          PATH ":2: metrics-listen: 'host:99999' has no valid port (1 to 65535); "
                          "use off, on (127.0.0.1:9998), HOST:PORT or [IPv6]:PORT");
}

/* issue 13: [fleet] */
static void test_settings_fleet(void **state)
{
    (void)state;
    struct conf_settings s;
    load_settings(WEB "port-ssl = 8443\n", &s);
    assert_null(s.fleet.etcd); /* no [fleet]: off, nothing else set */
    assert_null(s.fleet.prefix);
    assert_null(s.fleet.member_id);
    conf_settings_free(&s);

    load_settings(WEB "port-ssl = 8443\n[fleet]\netcd = http://127.0.0.1:2379 , "
                      "https://[::1]:22379/\n",
                  &s);
    assert_string_equal(s.fleet.etcd, "http://127.0.0.1:2379,https://[::1]:22379/");
    assert_string_equal(s.fleet.prefix, "/certgate");
    assert_null(s.fleet.ca_file);
    assert_null(s.fleet.cert_file);
    assert_null(s.fleet.key_file);
    assert_null(s.fleet.fleet_key_file);
    assert_int_equal(s.fleet.timeout_ms, 5000);
    size_t idl = strlen(s.fleet.member_id);
    assert_true(idl > 5);
    assert_string_equal(s.fleet.member_id + idl - 5, ":8443"); /* host name + port */
    conf_settings_free(&s);

    load_settings("[fleet]\netcd = https://etcd1:2379\nprefix = /prod/cg-1\n"
                  "ca-file = /etc/etcd/ca.pem\ncert-file = /etc/etcd/c.pem\n"
                  "key-file = /etc/etcd/c.key\nfleet-key-file = /etc/certgate/fleet.key\n"
                  "member-id = gw1.example:9999\ntimeout = 0.5\nenvironment = my-env_1\n",
                  &s);
    assert_string_equal(s.fleet.prefix, "/prod/cg-1");
    assert_string_equal(s.fleet.ca_file, "/etc/etcd/ca.pem");
    assert_string_equal(s.fleet.cert_file, "/etc/etcd/c.pem");
    assert_string_equal(s.fleet.key_file, "/etc/etcd/c.key");
    assert_string_equal(s.fleet.fleet_key_file, "/etc/certgate/fleet.key");
    assert_string_equal(s.fleet.member_id, "gw1.example:9999");
    assert_int_equal(s.fleet.timeout_ms, 500);
    assert_string_equal(s.fleet.environment, "my-env_1");
    conf_settings_free(&s);

#define ETCD_HINT "; use etcd client URLs, comma-separated, e.g. " \
                  "http://127.0.0.1:2379,http://127.0.0.1:22379"
#define PREFIX_HINT "; use a path such as /certgate (letters, digits and -._/ only, no '/' " \
                    "at the end, at most 200 characters)"
    static const struct {
        const char *text, *err;
    } bad[] = {
        {"[fleet]\nprefix = /x\n",
         PATH ":2: prefix: [fleet] has no etcd key; add etcd = http://HOST:2379,... to use a "
              "fleet, or remove the section"},
        {"[fleet]\netcd =\n", PATH ":2: etcd: the list is empty" ETCD_HINT},
        {"[fleet]\netcd = etcd1:2379\n",
         PATH ":2: etcd: 'etcd1:2379' does not start with http:// or https://" ETCD_HINT},
        {"[fleet]\netcd = http://a:1, http://b:2/v3\n", PATH ":2: etcd: 'http://b:2/v3' has a path" ETCD_HINT},
        {"[fleet]\netcd = http://a:1\nprefix = certgate\n",
         PATH ":3: prefix: 'certgate' does not start with '/'" PREFIX_HINT},
        {"[fleet]\netcd = http://a:1\nprefix = /certgate/\n",
         PATH ":3: prefix: '/certgate/' ends with '/'" PREFIX_HINT},
        {"[fleet]\netcd = http://a:1\nprefix = /\n",
         PATH ":3: prefix: '/' is the whole key space" PREFIX_HINT},
        {"[fleet]\netcd = http://a:1\nprefix = /a b\n",
         PATH ":3: prefix: '/a b' has a character that is not allowed" PREFIX_HINT},
        {"[fleet]\netcd = http://a:1\nmember-id = gw 1\n",
         PATH ":3: member-id: 'gw 1' is not a member id; use 1 to 128 letters, digits, '-', "
              "'.', '_' or ':', e.g. gw1"},
        {"[fleet]\netcd = http://a:1\nkey-file = /k.pem\n",
         PATH ":3: key-file: is the private key of the client certificate for etcd, but "
              "cert-file is missing (the fleet key is fleet-key-file)"},
        {"[fleet]\netcd = http://a:1\ncert-file = /c.pem\n",
         PATH ":3: cert-file: a client certificate needs its private key; add key-file (the "
              "PEM key of cert-file)"},
        {"[fleet]\netcd = http://a:1\nenvironment = a/b\n",
         PATH ":3: environment: 'a/b' is not an environment ID; use letters, digits, '-' and '_' "
              "(at most 64), e.g. myenv"},
        {"[fleet]\netcd = http://a:1\ntimeout = 0\n",
         PATH ":3: timeout: '0' is out of range; use a number of seconds from 0.1 to 3600"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) expect_settings_error(bad[i].text, bad[i].err);
}

/* issue 13: [fleet] acme-lock-ttl, the lease of the fleet's ACME lock */
static void test_settings_fleet_acme_lock_ttl(void **state)
{
    (void)state;
    struct conf_settings s;
    load_settings("[fleet]\netcd = http://a:1\n", &s);
    assert_int_equal(s.fleet.acme_lock_ttl_s, 30);
    conf_settings_free(&s);
    load_settings("[fleet]\netcd = http://a:1\nacme-lock-ttl = 5\n", &s);
    assert_int_equal(s.fleet.acme_lock_ttl_s, 5);
    conf_settings_free(&s);
    load_settings("[fleet]\netcd = http://a:1\nacme-lock-ttl = 600\n", &s);
    assert_int_equal(s.fleet.acme_lock_ttl_s, 600);
    conf_settings_free(&s);
    expect_settings_error("[fleet]\netcd = http://a:1\nacme-lock-ttl = 4.9\n",
                          PATH ":3: acme-lock-ttl: '4.9' is out of range; use a number of "
                               "seconds from 5 to 600, e.g. 30");
    expect_settings_error("[fleet]\netcd = http://a:1\nacme-lock-ttl = 601\n",
                          PATH ":3: acme-lock-ttl: '601' is out of range; use a number of "
                               "seconds from 5 to 600, e.g. 30");
    expect_settings_error("[fleet]\nacme-lock-ttl = 30\n",
                          PATH ":2: acme-lock-ttl: [fleet] has no etcd key; add etcd = "
                               "http://HOST:2379,... to use a fleet, or remove the section");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_settings_defaults),
        cmocka_unit_test(test_settings_check_all),
        cmocka_unit_test(test_settings_all_keys),
        cmocka_unit_test(test_settings_value_forms),
        cmocka_unit_test(test_settings_errors),
        cmocka_unit_test(test_trusted_proxies),
        cmocka_unit_test(test_settings_resource_limits),
        cmocka_unit_test(test_settings_metrics_listen),
        cmocka_unit_test(test_settings_fleet),
        cmocka_unit_test(test_settings_fleet_acme_lock_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
