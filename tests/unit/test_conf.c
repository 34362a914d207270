/* Unit tests for src/conf.c: the line-preserving custom.properties parser/rewriter and
 * the typed settings with their error messages. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "fsutil.h"

#define PATH "custom.properties"
#define WEB "[com.compuware.apm.webserver]\n"

/* ----- helpers ----- */

/* Makes control characters visible, so a failure shows where two texts differ. */
static const char *visible(const char *s, size_t len, char *buf, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            o += (size_t)snprintf(buf + o, cap - o, "\\n");
        else if (c == '\r')
            o += (size_t)snprintf(buf + o, cap - o, "\\r");
        else if (c == '\t')
            o += (size_t)snprintf(buf + o, cap - o, "\\t");
        else if (c < 0x20 || c >= 0x7f)
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

static struct conf_doc *parse_n(const char *text, size_t len)
{
    struct conf_doc *doc = NULL;
    char err[256] = "";
    if (conf_doc_parse(text, len, PATH, &doc, err, sizeof err) < 0)
        fail_msg("expected the text to parse, got: %s", err);
    assert_non_null(doc);
    return doc;
}

static struct conf_doc *parse(const char *text)
{
    return parse_n(text, strlen(text));
}

static void expect_text_n(const struct conf_doc *doc, const char *expected, size_t elen)
{
    size_t len = 0;
    char *text = conf_doc_text(doc, &len);
    assert_non_null(text);
    if (len != elen || memcmp(text, expected, len) != 0) {
        char a[2048], b[2048];
        fail_msg("text differs\n  expected: \"%s\"\n  actual:   \"%s\"",
                 visible(expected, elen, a, sizeof a), visible(text, len, b, sizeof b));
    }
    if (text[len] != '\0') fail_msg("expected conf_doc_text to NUL-terminate");
    free(text);
}

static void expect_text(const struct conf_doc *doc, const char *expected)
{
    expect_text_n(doc, expected, strlen(expected));
}

static void expect_raw(const struct conf_doc *doc, const char *section, const char *key,
                       const char *expected, int line)
{
    const char *v = conf_doc_get_raw(doc, section, key);
    if (expected == NULL && v != NULL)
        fail_msg("[%s] %s: expected absent, got \"%s\"", section, key, v);
    if (expected != NULL && (v == NULL || strcmp(v, expected) != 0))
        fail_msg("[%s] %s: expected \"%s\", got %s%s%s", section, key, expected, v ? "\"" : "",
                 v ? v : "NULL", v ? "\"" : "");
    int l = conf_doc_line(doc, section, key);
    if (l != line) fail_msg("[%s] %s: expected line %d, got %d", section, key, line, l);
}

static void expect_parse_error_n(const char *text, size_t len, const char *expected)
{
    struct conf_doc *doc = (struct conf_doc *)1;
    char err[256] = "";
    if (conf_doc_parse(text, len, PATH, &doc, err, sizeof err) == 0) {
        char v[512];
        fail_msg("expected \"%s\" to fail with: %s", visible(text, len, v, sizeof v), expected);
    }
    assert_null(doc);
    assert_string_equal(err, expected);
}

static void expect_parse_error(const char *text, const char *expected)
{
    expect_parse_error_n(text, strlen(text), expected);
}

static void load_settings(const char *text, struct conf_settings *s)
{
    struct conf_doc *doc = parse(text);
    char err[256] = "";
    if (conf_settings_load(doc, PATH, s, err, sizeof err) < 0)
        fail_msg("expected the settings to load, got: %s", err);
    conf_doc_free(doc);
}

static void expect_settings_error(const char *text, const char *expected)
{
    struct conf_doc *doc = parse(text);
    struct conf_settings s;
    char err[512] = "";
    memset(&s, 0xaa, sizeof s);
    if (conf_settings_load(doc, PATH, &s, err, sizeof err) == 0) {
        char v[512];
        conf_settings_free(&s);
        fail_msg("expected \"%s\" to fail with: %s", visible(text, strlen(text), v, sizeof v),
                 expected);
    }
    assert_string_equal(err, expected);
    /* on failure nothing is left to free */
    static const struct conf_settings zero;
    if (memcmp(&s, &zero, sizeof s) != 0) fail_msg("expected *out to be zeroed on failure");
    conf_doc_free(doc);
}

/* ----- parsing and round trips ----- */

static void test_round_trip_byte_for_byte(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "",
        WEB "port-ssl = 9999\n",
        "# comment\r\n[a]\r\nx = 1\r\n\r\n[b]\r\ny=2\r\n",
        "[a]\nx = 1",
        "\t[ a ]\t\n\tkey\t=\tvalue with spaces\t\n",
        "[a]\nx = 1\n# note\n; other note\ny = 2\n",
        "[a]\nx = 1\n[b]\nz = 3\n[a]\ny = 2\n",
        "\xef\xbb\xbf[a]\nx = 1\n",
        "a = 1\r\nb = 2\n",
        "top = 1\n[a]\n",
        "   \n\t\n\n",
        "[a]\nx = 1\r",
        "[a]\nfile = C:\\certs\\a.p12\nlist = a\\,b, c\n",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        struct conf_doc *doc = parse(texts[i]);
        expect_text(doc, texts[i]);
        conf_doc_free(doc);
    }
}

static void test_getters(void **state)
{
    (void)state;
    struct conf_doc *doc = parse("top = 0\n[a]\nx = 1\n[b]\nx = 2\n[a]\nx = 3\n[A]\nx = 4\n"
                                 "[ spaced ]\n  my key  =   v w  \t\nexpr = a=b\nempty =\n");
    expect_raw(doc, "", "top", "0", 1);
    expect_raw(doc, "a", "x", "3", 7); /* the last one wins, across repeated sections */
    expect_raw(doc, "b", "x", "2", 5);
    expect_raw(doc, "A", "x", "4", 9); /* names compare exactly */
    expect_raw(doc, "a", "X", NULL, 0);
    expect_raw(doc, "c", "x", NULL, 0);
    expect_raw(doc, "spaced", "my key", "v w", 11);
    expect_raw(doc, "spaced", "expr", "a=b", 12);
    expect_raw(doc, "spaced", "empty", "", 13);
    conf_doc_free(doc);

    doc = parse("\xef\xbb\xbf[a]\r\nx = 1\r\n");
    expect_raw(doc, "a", "x", "1", 2);
    conf_doc_free(doc);
}

static void test_parse_errors_name_the_line(void **state)
{
    (void)state;
    expect_parse_error("[a]\nx = 1\nfoo\n",
                       PATH ":3: expected 'key = value', '[section]' or a comment");
    expect_parse_error("[a\n", PATH ":1: expected 'key = value', '[section]' or a comment");
    expect_parse_error("[a]\n = v\n", PATH ":2: expected 'key = value', '[section]' or a comment");
    expect_parse_error("[ ]\n", PATH ":1: expected 'key = value', '[section]' or a comment");
    expect_parse_error("\r\n\r\nbad\r\n",
                       PATH ":3: expected 'key = value', '[section]' or a comment");
    static const char nul[] = "[a]\nk = v\nx\0y = 1\n";
    expect_parse_error_n(nul, sizeof nul - 1,
                         PATH ":3: the line contains a NUL byte; the file must be text");
}

/* ----- rewriting ----- */

static void test_set_existing_keeps_position(void **state)
{
    (void)state;
    struct conf_doc *doc = parse("[s]\r\n  port-ssl=9999\r\n# after\r\nother = x\r\n");
    assert_int_equal(conf_doc_set(doc, "s", "port-ssl", "443"), 0);
    expect_text(doc, "[s]\r\n  port-ssl = 443\r\n# after\r\nother = x\r\n");
    expect_raw(doc, "s", "port-ssl", "443", 2);
    conf_doc_free(doc);

    doc = parse("\xef\xbb\xbfk = 1\n");
    assert_int_equal(conf_doc_set(doc, "", "k", "2"), 0);
    expect_text(doc, "\xef\xbb\xbfk = 2\n");
    conf_doc_free(doc);
}

static void test_set_new_key_in_existing_section(void **state)
{
    (void)state;
    struct conf_doc *doc = parse("[a]\nx = 1\n# comment about b\n\n[b]\ny = 2\n");
    assert_int_equal(conf_doc_set(doc, "a", "z", "3"), 0);
    expect_text(doc, "[a]\nx = 1\nz = 3\n# comment about b\n\n[b]\ny = 2\n");
    expect_raw(doc, "a", "z", "3", 3);
    conf_doc_free(doc);

    /* a section without keys: right after its heading */
    doc = parse("[a]\n# only a comment\n[b]\n");
    assert_int_equal(conf_doc_set(doc, "a", "k", "v"), 0);
    expect_text(doc, "[a]\nk = v\n# only a comment\n[b]\n");
    conf_doc_free(doc);

    /* at the end of a file without a final newline, which stays without one */
    doc = parse("[a]\nx = 1");
    assert_int_equal(conf_doc_set(doc, "a", "y", "2"), 0);
    expect_text(doc, "[a]\nx = 1\ny = 2");
    conf_doc_free(doc);

    /* keys before any section */
    doc = parse("[a]\nx = 1\n");
    assert_int_equal(conf_doc_set(doc, "", "top", "t"), 0);
    expect_text(doc, "top = t\n[a]\nx = 1\n");
    conf_doc_free(doc);
}

static void test_set_with_duplicate_sections(void **state)
{
    (void)state;
    struct conf_doc *doc = parse("[a]\nx = 1\n[b]\n[a]\ny = 2\n");
    /* the key exists in the first occurrence only: that line is updated */
    assert_int_equal(conf_doc_set(doc, "a", "x", "9"), 0);
    expect_text(doc, "[a]\nx = 9\n[b]\n[a]\ny = 2\n");
    /* a new key goes to the last occurrence of the section */
    assert_int_equal(conf_doc_set(doc, "a", "w", "5"), 0);
    expect_text(doc, "[a]\nx = 9\n[b]\n[a]\ny = 2\nw = 5\n");
    conf_doc_free(doc);

    /* the key is repeated: the last line is updated, the others removed */
    doc = parse("[a]\nx = 1\ny = 2\n[a]\nx = 3\n");
    expect_raw(doc, "a", "x", "3", 5);
    assert_int_equal(conf_doc_set(doc, "a", "x", "4"), 0);
    expect_text(doc, "[a]\ny = 2\n[a]\nx = 4\n");
    expect_raw(doc, "a", "x", "4", 4);
    conf_doc_free(doc);
}

static void test_set_in_missing_section_appends_it(void **state)
{
    (void)state;
    static const struct {
        const char *before, *after;
    } cases[] = {
        {"[a]\nx = 1\n", "[a]\nx = 1\n\n[b]\nk = v\n"},
        {"[a]\nx = 1", "[a]\nx = 1\n\n[b]\nk = v"},
        {"", "[b]\nk = v\n"},
        {"[a]\r\nx = 1\r\n", "[a]\r\nx = 1\r\n\r\n[b]\r\nk = v\r\n"},
        {"[a]\nx = 1\n\n", "[a]\nx = 1\n\n[b]\nk = v\n"},
        {"# only a comment", "# only a comment\n\n[b]\nk = v"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct conf_doc *doc = parse(cases[i].before);
        assert_int_equal(conf_doc_set(doc, "b", "k", "v"), 0);
        expect_text(doc, cases[i].after);
        conf_doc_free(doc);
    }
}

static void test_set_rejects_line_breaks(void **state)
{
    (void)state;
    const char *text = "[a]\nx = 1\n";
    struct conf_doc *doc = parse(text);
    errno = 0;
    assert_int_equal(conf_doc_set(doc, "a", "x", "1\n[evil]"), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(conf_doc_set(doc, "a", "x=y", "1"), -1);
    assert_int_equal(conf_doc_set(doc, "a", "", "1"), -1);
    assert_int_equal(conf_doc_set(doc, "a]\n[b", "x", "1"), -1);
    assert_int_equal(conf_doc_set(doc, "a", "# x", "1"), -1);
    expect_text(doc, text);
    conf_doc_free(doc);
}

static void test_unset(void **state)
{
    (void)state;
    struct conf_doc *doc = parse("[a]\nx = 1\ny = 2\n[b]\nx = 5\n[a]\nx = 3\n");
    assert_int_equal(conf_doc_unset(doc, "a", "x"), 2);
    expect_text(doc, "[a]\ny = 2\n[b]\nx = 5\n[a]\n");
    expect_raw(doc, "a", "x", NULL, 0);
    expect_raw(doc, "b", "x", "5", 4);
    assert_int_equal(conf_doc_unset(doc, "a", "x"), 0);
    assert_int_equal(conf_doc_unset(doc, "c", "x"), 0);
    expect_text(doc, "[a]\ny = 2\n[b]\nx = 5\n[a]\n");
    conf_doc_free(doc);

    /* the last line of a file without a final newline */
    doc = parse("[a]\r\nx = 1\r\ny = 2");
    assert_int_equal(conf_doc_unset(doc, "a", "y"), 1);
    expect_text(doc, "[a]\r\nx = 1");
    conf_doc_free(doc);
}

static void test_escapes(void **state)
{
    (void)state;
    struct conf_doc *doc = parse("[a]\n");
    assert_int_equal(conf_doc_set(doc, "a", "v", "a,b\\c"), 0);
    expect_text(doc, "[a]\nv = a\\,b\\\\c\n");
    expect_raw(doc, "a", "v", "a\\,b\\\\c", 2);
    char *u = conf_unescape(conf_doc_get_raw(doc, "a", "v"));
    assert_string_equal(u, "a,b\\c");
    free(u);
    conf_doc_free(doc);

    static const struct {
        const char *raw, *plain;
    } cases[] = {
        {"C:\\certs\\new.p12", "C:\\certs\\new.p12"}, /* other backslashes stay */
        {"a\\\\\\,b", "a\\,b"},
        {"trailing\\", "trailing\\"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        u = conf_unescape(cases[i].raw);
        assert_non_null(u);
        if (strcmp(u, cases[i].plain) != 0)
            fail_msg("conf_unescape(\"%s\"): expected \"%s\", got \"%s\"", cases[i].raw,
                     cases[i].plain, u);
        free(u);
    }
}

static void test_split_list(void **state)
{
    (void)state;
    size_t n = 99;
    char **list = conf_split_list(" a , b\\,c ,, \\\\ , d\\\\,e ", &n);
    static const char *const expected[] = {"a", "b,c", "\\", "d\\", "e"};
    assert_non_null(list);
    if (n != 5) fail_msg("expected 5 items, got %zu", n);
    for (size_t i = 0; i < 5; i++)
        if (strcmp(list[i], expected[i]) != 0)
            fail_msg("item %zu: expected \"%s\", got \"%s\"", i, expected[i], list[i]);
    assert_null(list[5]);
    conf_list_free(list);

    list = conf_split_list(" , ,", &n);
    assert_non_null(list);
    assert_int_equal(n, 0);
    assert_null(list[0]);
    conf_list_free(list);

    list = conf_split_list("", NULL);
    assert_non_null(list);
    assert_null(list[0]);
    conf_list_free(list);
}

/* ----- files ----- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void test_load_and_save(void **state)
{
    (void)state;
    const char *base = getenv("CERTGATE_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    char err[256] = "";
    assert_int_equal(fs_mkdir_p(base, 0700, 0, err, sizeof err), 0);
    char *dir = fs_path_join(base, "conf-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char *path = fs_path_join(dir, "custom.properties");

    struct conf_doc *doc;
    int existed = 7;
    assert_int_equal(conf_doc_load(path, &doc, &existed, err, sizeof err), 0);
    assert_int_equal(existed, 0);
    expect_text(doc, "");
    assert_int_equal(conf_doc_set(doc, CONF_SECTION_WEBSERVER, "port-ssl", "443"), 0);
    if (conf_doc_save(doc, path, err, sizeof err) < 0) fail_msg("expected save to work: %s", err);
    conf_doc_free(doc);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    if ((st.st_mode & 07777) != 0600)
        fail_msg("expected a new file to get mode 0600, found %04o", st.st_mode & 07777);

    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(conf_doc_load(path, &doc, &existed, err, sizeof err), 0);
    assert_int_equal(existed, 1);
    expect_text(doc, WEB "port-ssl = 443\n");
    assert_int_equal(conf_doc_unset(doc, CONF_SECTION_WEBSERVER, "port-ssl"), 1);
    assert_int_equal(conf_doc_save(doc, path, err, sizeof err), 0);
    conf_doc_free(doc);
    assert_int_equal(stat(path, &st), 0);
    if ((st.st_mode & 07777) != 0640)
        fail_msg("expected the file to keep mode 0640, found %04o", st.st_mode & 07777);

    /* a malformed file names its path and line */
    FILE *f = fopen(path, "w");
    fputs("[a]\nbroken\n", f);
    fclose(f);
    assert_int_equal(conf_doc_load(path, &doc, NULL, err, sizeof err), -1);
    char expected[512];
    snprintf(expected, sizeof expected, "%s:2: expected 'key = value', '[section]' or a comment",
             path);
    assert_string_equal(err, expected);

    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(path);
    free(dir);
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
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_settings_error(cases[i].text, cases[i].err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_byte_for_byte),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_parse_errors_name_the_line),
        cmocka_unit_test(test_set_existing_keeps_position),
        cmocka_unit_test(test_set_new_key_in_existing_section),
        cmocka_unit_test(test_set_with_duplicate_sections),
        cmocka_unit_test(test_set_in_missing_section_appends_it),
        cmocka_unit_test(test_set_rejects_line_breaks),
        cmocka_unit_test(test_unset),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_split_list),
        cmocka_unit_test(test_load_and_save),
        cmocka_unit_test(test_settings_defaults),
        cmocka_unit_test(test_settings_all_keys),
        cmocka_unit_test(test_settings_value_forms),
        cmocka_unit_test(test_settings_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
