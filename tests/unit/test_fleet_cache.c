/* Unit tests for src/fleet_cache.c (issue 13): the manifest of the DIR/ssl files a fleet
 * member wrote from etcd, which bounds what a full read may delete. */
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

#include "fleet_cache.h"
#include "fsutil.h"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup_dir(void **state)
{
    const char *base = getenv("CERTGATE_TEST_TMP");
    char err[256];
    if (!base || !*base) base = "/tmp";
    if (fs_mkdir_p(base, 0700, 0, err, sizeof err) < 0) return -1;
    char *tmpl = fs_path_join(base, "fleetcache-XXXXXX");
    if (!tmpl || !mkdtemp(tmpl)) {
        free(tmpl);
        return -1;
    }
    *state = tmpl;
    return 0;
}

static int teardown_dir(void **state)
{
    nftw(*state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

static void write_text(const char *dir, const char *text)
{
    char *path = fs_path_join(dir, FLEET_CACHE_FILE), err[256];
    assert_int_equal(fs_write_atomic_mode(path, text, strlen(text), 0600, err, sizeof err), 0);
    free(path);
}

static void test_missing_is_empty(void **state)
{
    struct fleet_cache c;
    char err[512] = "";
    assert_int_equal(fleet_cache_load(&c, *state, err, sizeof err), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(c.dirty, 0);
    assert_int_equal(fleet_cache_has(&c, "a.p12"), 0);
    assert_int_equal(fleet_cache_save(&c, err, sizeof err), 0); /* nothing to write */
    char *path = fs_path_join(*state, FLEET_CACHE_FILE);
    assert_int_equal(access(path, F_OK), -1);
    free(path);
    fleet_cache_free(&c);
}

static void test_add_remove_save_load(void **state)
{
    struct fleet_cache c, d;
    char err[512] = "";
    assert_int_equal(fleet_cache_load(&c, *state, err, sizeof err), 0);
    const char *names[] = {"m.p12", "a.p12", "z.p12", "b.p12", "c.p12", "a.p12"};
    int added = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) added += fleet_cache_add(&c, names[i]);
    for (int i = 0; i < 40; i++) { /* past the first allocation */
        char n[32];
        snprintf(n, sizeof n, "x%02d.p12", i);
        added += fleet_cache_add(&c, n);
    }
    assert_int_equal(added, 45); /* a.p12 once */
    assert_int_equal(c.n, 45);
    for (size_t i = 1; i < c.n; i++) assert_true(strcmp(c.names[i - 1], c.names[i]) < 0);
    assert_int_equal(fleet_cache_remove(&c, "b.p12"), 1);
    assert_int_equal(fleet_cache_remove(&c, "b.p12"), 0);
    assert_int_equal(fleet_cache_remove(&c, "nope"), 0);
    assert_int_equal(fleet_cache_has(&c, "z.p12"), 1);
    assert_int_equal(fleet_cache_has(&c, "b.p12"), 0);
    assert_int_equal(fleet_cache_save(&c, err, sizeof err), 0);
    assert_int_equal(c.dirty, 0);

    assert_int_equal(fleet_cache_load(&d, *state, err, sizeof err), 0);
    assert_int_equal(d.n, 44);
    for (size_t i = 0; i < c.n; i++) assert_string_equal(c.names[i], d.names[i]);
    assert_int_equal(d.dirty, 0);
    struct stat st;
    assert_int_equal(stat(d.path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    fleet_cache_free(&c);
    fleet_cache_free(&d);
}

static void test_not_a_manifest(void **state)
{
    static const char *bad[] = {"{not json", "[]", "{\"version\":1}", "{\"names\":\"a\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fleet_cache c;
        char err[512] = "";
        write_text(*state, bad[i]);
        assert_int_equal(fleet_cache_load(&c, *state, err, sizeof err), -1);
        assert_non_null(strstr(err, "is not a fleet cache manifest"));
        assert_non_null(strstr(err, "written again at the next full read"));
        assert_int_equal(c.n, 0); /* nothing known: nothing deleted */
        assert_int_equal(c.dirty, 1);
        fleet_cache_free(&c);
    }
    /* entries that are not strings are skipped */
    struct fleet_cache c;
    char err[512] = "";
    write_text(*state, "{\"version\":1,\"names\":[\"b.p12\",7,null,\"a.p12\"]}");
    assert_int_equal(fleet_cache_load(&c, *state, err, sizeof err), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.names[0], "a.p12");
    fleet_cache_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_missing_is_empty, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_add_remove_save_load, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_not_a_manifest, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
