/* Unit tests for auth.c (API tokens) and accesslog_redact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accesslog.h"
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
