/* Unit tests for auth.c (API tokens), auth_throttle.c (failed authentications per
 * address), the two parsers of secrets and accesslog_redact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accesslog.h"
#include "api.h"
#include "auth.h"
#include "fsutil.h"
#include "secret.h"

static char dir[512];

static int setup(void **state)
{
    const char *base = getenv("CERTGATE_TEST_TMP");
    char tmpl[512];
    if (base) mkdir(base, 0700);
    snprintf(tmpl, sizeof tmpl, "%s/authXXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(tmpl));
    snprintf(dir, sizeof dir, "%s", tmpl);
    return 0;
}

static int teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    auth_cleanup();
    return 0;
}

static char *create(const char *env, const char *scope)
{
    const char *scopes[] = {scope, NULL};
    char *tok = NULL;
    char err[256] = "";
    int rc = auth_token_create(dir, env, scopes, "unit", &tok, err, sizeof err);
    if (rc != 0) fprintf(stderr, "create: %s\n", err);
    assert_int_equal(rc, 0);
    return tok;
}

static enum auth_result check(const char *header, const char *query, const char *env)
{
    char msg[300];
    return auth_check(dir, header, query, env, AUTH_SCOPE_CERTS, msg, sizeof msg);
}

static void test_format(void **state)
{
    char *tok = create("env1", AUTH_SCOPE_CERTS);
    regex_t re;
    assert_int_equal(regcomp(&re, "^dt0c01\\.[A-Z2-7]{24}\\.[A-Z2-7]{64}$", REG_EXTENDED), 0);
    assert_int_equal(regexec(&re, tok, 0, NULL, 0), 0);
    regfree(&re);
    secret_free(tok);
}

static void test_store_has_no_secret(void **state)
{
    char *tok = create("env1", AUTH_SCOPE_CERTS);
    char *path = fs_path_join(dir, AUTH_TOKENS_FILE);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(fs_read_file(path, 1 << 20, &data, &len, NULL, 0), 0);
    const char *secret = strrchr(tok, '.') + 1;
    assert_null(strstr(data, secret)); /* only the hash is stored */
    assert_null(strstr(data, tok));
    char pub[32];
    snprintf(pub, sizeof pub, "%.31s", tok); /* the ID is */
    assert_non_null(strstr(data, pub));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    free(data);
    free(path);
    secret_free(tok);
}

static void test_checks(void **state)
{
    char *tok = create("env1", AUTH_SCOPE_CERTS);
    char *other = create("env1", "DataExport");
    char hdr[200], hdr2[200];
    snprintf(hdr, sizeof hdr, "Api-Token %s", tok);
    snprintf(hdr2, sizeof hdr2, "Api-Token %s", other);
    assert_int_equal(check(hdr, NULL, "env1"), AUTH_OK);
    assert_int_equal(check("api-token   ", NULL, "env1"), AUTH_MALFORMED);
    snprintf(hdr, sizeof hdr, "api-token %s", tok); /* the scheme is case-insensitive */
    assert_int_equal(check(hdr, NULL, "env1"), AUTH_OK);
    assert_int_equal(check(NULL, tok, "env1"), AUTH_OK);
    assert_int_equal(check(NULL, NULL, "env1"), AUTH_MISSING);
    assert_int_equal(check(hdr, NULL, "env2"), AUTH_WRONG_ENV);
    assert_int_equal(check(hdr2, NULL, "env1"), AUTH_NO_SCOPE);
    assert_int_equal(auth_status(AUTH_NO_SCOPE), 403);
    assert_int_equal(auth_status(AUTH_WRONG_ENV), 401);
    assert_int_equal(check("Bearer abc", NULL, "env1"), AUTH_MALFORMED);
    assert_int_equal(check("Api-Token dt0c01.AAAAAAAAAAAAAAAAAAAAAAAA.BBBB", NULL, "env1"),
                     AUTH_UNKNOWN);
    /* a token one character off is unknown */
    char bad[200];
    snprintf(bad, sizeof bad, "Api-Token %s", tok);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(check(bad, NULL, "env1"), AUTH_UNKNOWN);
    secret_free(tok);
    secret_free(other);
}

static void test_revoke_applies_without_restart(void **state)
{
    char *tok = create("env1", AUTH_SCOPE_CERTS);
    char hdr[200], err[256];
    snprintf(hdr, sizeof hdr, "Api-Token %s", tok);
    assert_int_equal(check(hdr, NULL, "env1"), AUTH_OK); /* cached now */
    char id[40];
    snprintf(id, sizeof id, "%.31s", tok);
    usleep(20000); /* a new mtime */
    assert_int_equal(auth_token_revoke(dir, id, err, sizeof err), 0);
    assert_int_equal(check(hdr, NULL, "env1"), AUTH_UNKNOWN);
    assert_int_not_equal(auth_token_revoke(dir, id, err, sizeof err), 0);
    assert_non_null(strstr(err, "no token"));
    secret_free(tok);
}

static void test_bad_environment_refused(void **state)
{
    const char *scopes[] = {AUTH_SCOPE_CERTS, NULL};
    char *tok = NULL;
    char err[256];
    assert_int_not_equal(auth_token_create(dir, "a/b", scopes, NULL, &tok, err, sizeof err), 0);
    assert_non_null(strstr(err, "not valid"));
    assert_null(tok);
}

static void test_query_param(void **state)
{
    char buf[64];
    assert_int_equal(auth_query_param("a=1&api-token=x%2Ey&b=2", "api-token", buf, sizeof buf), 0);
    assert_string_equal(buf, "x.y");
    assert_int_not_equal(auth_query_param("xapi-token=1", "api-token", buf, sizeof buf), 0);
    assert_int_not_equal(auth_query_param(NULL, "api-token", buf, sizeof buf), 0);
}

static void test_access_log_redacts(void **state)
{
    char out[256];
    accesslog_redact("/e/x/api/v1/certificate/list?api-token=dt0c01.SECRET&a=1", out, sizeof out);
    assert_string_equal(out, "/e/x/api/v1/certificate/list?api-token=***&a=1");
    accesslog_redact("/p?Password=hunter2", out, sizeof out);
    assert_string_equal(out, "/p?Password=***");
    accesslog_redact("/plain\"path\n", out, sizeof out);
    assert_string_equal(out, "/plain_path_");
}

/* ----- the throttling of failed authentications ----- */

#define W 60000u /* the window of these tests, ms */

static void fail_n(struct auth_throttle *t, const char *addr, int n, uint64_t now)
{
    for (int i = 0; i < n; i++)
        auth_throttle_failed(t, addr, now);
}

static int refused(struct auth_throttle *t, const char *addr, uint64_t now, unsigned *retry)
{
    unsigned r = 0;
    int rc = auth_throttle_check(t, addr, now, &r);
    if (retry) *retry = r;
    return rc;
}

static void test_throttle_budget_and_window(void **state)
{
    struct auth_throttle *t = auth_throttle_new(AUTH_THROTTLE_ENTRIES);
    assert_non_null(t);
    auth_throttle_configure(t, 20, W);
    uint64_t t0 = 1000000;
    /* 19 failures: still allowed; the 20th uses the budget up */
    for (int i = 0; i < 19; i++) {
        assert_int_equal(refused(t, "192.0.2.7", t0 + (uint64_t)i, NULL), 0);
        auth_throttle_failed(t, "192.0.2.7", t0 + (uint64_t)i);
    }
    assert_int_equal(refused(t, "192.0.2.7", t0 + 19, NULL), 0);
    auth_throttle_failed(t, "192.0.2.7", t0 + 19);
    unsigned retry;
    assert_int_equal(refused(t, "192.0.2.7", t0 + 20, &retry), 1);
    assert_int_equal(retry, 60); /* the window began at t0: 59.98 s left, rounded up */
    assert_int_equal(refused(t, "192.0.2.7", t0 + 30500, &retry), 1);
    assert_int_equal(retry, 30);
    assert_int_equal(refused(t, "192.0.2.7", t0 + W - 1, &retry), 1);
    assert_int_equal(retry, 1);
    /* other addresses are not affected */
    assert_int_equal(refused(t, "192.0.2.8", t0 + 100, NULL), 0);
    assert_int_equal(refused(t, "2001:db8::1", t0 + 100, NULL), 0);
    /* the window is over: allowed again, with a whole new budget */
    assert_int_equal(refused(t, "192.0.2.7", t0 + W, NULL), 0);
    fail_n(t, "192.0.2.7", 19, t0 + W + 1);
    assert_int_equal(refused(t, "192.0.2.7", t0 + W + 2, NULL), 0);
    auth_throttle_failed(t, "192.0.2.7", t0 + W + 3);
    assert_int_equal(refused(t, "192.0.2.7", t0 + W + 4, NULL), 1);
    auth_throttle_tick(t, t0 + 3 * W); /* reports the refusals (log), no crash */
    auth_throttle_free(t);
}

static void test_throttle_failures_spread_over_windows(void **state)
{
    struct auth_throttle *t = auth_throttle_new(64);
    auth_throttle_configure(t, 3, W);
    /* 2 failures per window, forever: never throttled */
    for (uint64_t k = 0; k < 10; k++) {
        fail_n(t, "198.51.100.1", 2, 5000 + k * (W + 1));
        assert_int_equal(refused(t, "198.51.100.1", 5001 + k * (W + 1), NULL), 0);
    }
    auth_throttle_free(t);
}

static void test_throttle_off_and_non_addresses(void **state)
{
    struct auth_throttle *t = auth_throttle_new(64);
    auth_throttle_configure(t, 0, W);
    fail_n(t, "192.0.2.1", 1000, 100);
    assert_int_equal(refused(t, "192.0.2.1", 101, NULL), 0);
    assert_int_equal(auth_throttle_used(t), 0);
    auth_throttle_configure(t, 1, W);
    fail_n(t, "not an address", 10, 100);
    fail_n(t, "", 10, 100);
    assert_int_equal(refused(t, "not an address", 101, NULL), 0);
    assert_int_equal(auth_throttle_used(t), 0);
    auth_throttle_free(t);
}

static void test_throttle_ipv6_by_64(void **state)
{
    struct auth_throttle *t = auth_throttle_new(256);
    auth_throttle_configure(t, 2, W);
    fail_n(t, "2001:db8:1:2::1", 1, 10);
    fail_n(t, "2001:db8:1:2:ffff:ffff:ffff:ffff", 1, 11); /* the same /64 */
    assert_int_equal(refused(t, "2001:db8:1:2::99", 12, NULL), 1);
    assert_int_equal(refused(t, "2001:db8:1:3::1", 12, NULL), 0); /* the next /64 */
    /* an IPv4-mapped address is its IPv4 address, not a /64 */
    fail_n(t, "::ffff:192.0.2.9", 2, 10);
    assert_int_equal(refused(t, "192.0.2.9", 12, NULL), 1);
    assert_int_equal(refused(t, "192.0.2.10", 12, NULL), 0);
    auth_throttle_free(t);
}

static void test_throttle_bounded_and_evicts_oldest(void **state)
{
    /* one set of 8 entries: every address competes for it */
    struct auth_throttle *t = auth_throttle_new(8);
    assert_int_equal(auth_throttle_capacity(t), 8);
    auth_throttle_configure(t, 2, W);
    fail_n(t, "10.0.0.1", 2, 100); /* locked */
    char a[32];
    for (int i = 0; i < 7; i++) { /* fills the set */
        snprintf(a, sizeof a, "10.0.1.%d", i);
        auth_throttle_failed(t, a, 200 + (uint64_t)i);
    }
    assert_int_equal(auth_throttle_used(t), 8);
    assert_int_equal(refused(t, "10.0.0.1", 300, NULL), 1); /* touched at 300 */
    /* a new address evicts the least recently used one (10.0.1.0), not 10.0.0.1 */
    auth_throttle_failed(t, "10.0.2.0", 400);
    assert_int_equal(auth_throttle_used(t), 8);
    assert_int_equal(refused(t, "10.0.0.1", 401, NULL), 1);
    fail_n(t, "10.0.1.1", 1, 402); /* 10.0.1.1 still had its first failure: now locked */
    assert_int_equal(refused(t, "10.0.1.1", 403, NULL), 1);
    fail_n(t, "10.0.1.0", 1, 404); /* evicted before: one failure only, not locked */
    assert_int_equal(refused(t, "10.0.1.0", 405, NULL), 0);
    /* eight newer addresses push even the locked one out: memory stays bounded */
    for (int i = 0; i < 8; i++) {
        snprintf(a, sizeof a, "10.0.3.%d", i);
        auth_throttle_failed(t, a, 1000 + (uint64_t)i);
    }
    assert_int_equal(auth_throttle_used(t), 8);
    assert_int_equal(refused(t, "10.0.0.1", 2000, NULL), 0);
    auth_throttle_free(t);
}

static void test_throttle_many_addresses_bounded(void **state)
{
    struct auth_throttle *t = auth_throttle_new(AUTH_THROTTLE_ENTRIES);
    auth_throttle_configure(t, 20, W);
    char a[64];
    for (int i = 0; i < 100000; i++) {
        snprintf(a, sizeof a, "2001:db8:%x:%x::1", i >> 16, i & 0xffff);
        auth_throttle_failed(t, a, 1000 + (uint64_t)i);
    }
    assert_true(auth_throttle_used(t) <= AUTH_THROTTLE_ENTRIES);
    assert_true(auth_throttle_used(t) > AUTH_THROTTLE_ENTRIES / 2); /* the sets fill evenly */
    /* a storm from one address among them is still throttled */
    fail_n(t, "203.0.113.5", 20, 200000);
    assert_int_equal(refused(t, "203.0.113.5", 200001, NULL), 1);
    auth_throttle_free(t);
}

struct storm {
    struct auth_throttle *t;
    int id;
};

static void *storm_thread(void *p)
{
    struct storm *s = p;
    char a[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(a, sizeof a, "10.%d.%d.%d", s->id, (i >> 8) & 3, i & 255);
        unsigned r;
        if (!auth_throttle_check(s->t, a, (uint64_t)i, &r))
            auth_throttle_failed(s->t, a, (uint64_t)i);
        if (i % 1000 == 0) auth_throttle_tick(s->t, (uint64_t)i);
    }
    return NULL;
}

static void test_throttle_threads(void **state)
{
    struct auth_throttle *t = auth_throttle_new(512);
    auth_throttle_configure(t, 3, 100);
    pthread_t th[4];
    struct storm s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (struct storm){t, i};
        assert_int_equal(pthread_create(&th[i], NULL, storm_thread, &s[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_true(auth_throttle_used(t) <= 512);
    auth_throttle_free(t);
}

/* ----- the parsers the fuzz targets call ----- */

static void test_parse_authorization(void **state)
{
    size_t n = 0;
    const char *h = "Api-Token dt0c01.ABC.DEF";
    const char *tok = auth_parse_authorization(h, &n);
    assert_non_null(tok);
    assert_int_equal(n, strlen("dt0c01.ABC.DEF"));
    assert_memory_equal(tok, "dt0c01.ABC.DEF", n);
    assert_non_null(auth_parse_authorization(" \tapi-token\t x  ", &n));
    assert_int_equal(n, 1);
    assert_null(auth_parse_authorization("Api-Token", &n));
    assert_null(auth_parse_authorization("Api-Token ", &n));
    assert_null(auth_parse_authorization("Api-Token a b", &n));
    assert_null(auth_parse_authorization("Bearer x", &n));
    assert_null(auth_parse_authorization("Api-Tokenx y", &n));
    assert_null(auth_parse_authorization("", &n));
}

static void test_password_from_body(void **state)
{
    char *pw = NULL;
    const char *b = "{\"password\":\"p\\u00e4ss \\\"x\\\"\",\"other\":1}";
    assert_int_equal(api_password_from_body(b, strlen(b), &pw), 0);
    assert_string_equal(pw, "p\xc3\xa4ss \"x\"");
    secret_free(pw);
    const char *bad[] = {"",
                         "{",
                         "[]",
                         "{\"password\":1}",
                         "{\"pass\":\"x\"}",
                         "\"x\"",
                         "{\"password\":\"a\\u0000b\"}",
                         "{\"password\":\"x\"} trailing"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(api_password_from_body(bad[i], strlen(bad[i]), &pw), -1);
        assert_null(pw);
    }
    /* not NUL-terminated: only len bytes count */
    char buf[32];
    memcpy(buf, "{\"password\":\"ab\"}XXXXXXXX", 25);
    assert_int_equal(api_password_from_body(buf, 17, &pw), 0);
    assert_string_equal(pw, "ab");
    secret_free(pw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_has_no_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke_applies_without_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_environment_refused, setup, teardown),
        cmocka_unit_test(test_query_param),
        cmocka_unit_test(test_access_log_redacts),
        cmocka_unit_test(test_throttle_budget_and_window),
        cmocka_unit_test(test_throttle_failures_spread_over_windows),
        cmocka_unit_test(test_throttle_off_and_non_addresses),
        cmocka_unit_test(test_throttle_ipv6_by_64),
        cmocka_unit_test(test_throttle_bounded_and_evicts_oldest),
        cmocka_unit_test(test_throttle_many_addresses_bounded),
        cmocka_unit_test(test_throttle_threads),
        cmocka_unit_test(test_parse_authorization),
        cmocka_unit_test(test_password_from_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
