/* Unit tests for src/fleetkey.c (issue 13): the fleet key file and the sealing of secrets
 * stored in etcd, with the errors that tell a wrong key from an altered value. Also the
 * base64 of src/etcd.c that both use. */
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

#include "etcd.h"
#include "fleetkey.h"
#include "fsutil.h"
#include "secret.h"

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
    char *tmpl = fs_path_join(base, "fleetkey-XXXXXX");
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

static void test_b64(void **state)
{
    (void)state;
    static const struct {
        const char *plain, *b64;
    } v[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
             {"/certgate/", "L2NlcnRnYXRlLw=="}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *e = etcd_b64_encode(v[i].plain, strlen(v[i].plain));
        assert_string_equal(e, v[i].b64);
        free(e);
        size_t n = 99;
        unsigned char *d = etcd_b64_decode(v[i].b64, &n);
        assert_non_null(d);
        assert_int_equal(n, strlen(v[i].plain));
        assert_memory_equal(d, v[i].plain, n);
        free(d);
    }
    size_t n;
    static const char *const bad[] = {"Zg=", "Zg=a", "Z===", "Zm9v!A==", "Zg==Zg==", "é123", "Zh==", "Zm9=", "Zm8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (etcd_b64_decode(bad[i], &n)) fail_msg("'%s' decoded", bad[i]);
}

static void test_key_file(void **state)
{
    char err[512] = "", *path = fs_path_join(*state, FLEETKEY_FILE);
    struct fleet_key k, k2;
    assert_int_equal(fleetkey_load(path, &k, err, sizeof err), -1);
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(err, "does not exist; copy it from a member of the fleet"));
    assert_int_equal(fleetkey_create(path, 0, &k, err, sizeof err), 0);
    assert_int_equal(strlen(k.id), 16);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, 32);
    assert_int_equal(fleetkey_load(path, &k2, err, sizeof err), 0);
    assert_memory_equal(k.bytes, k2.bytes, 32);
    assert_string_equal(k.id, k2.id);
    /* never replaced by accident */
    assert_int_equal(fleetkey_create(path, 0, &k2, err, sizeof err), -1);
    assert_int_equal(errno, EEXIST);
    assert_non_null(strstr(err, "exists already"));
    assert_int_equal(fleetkey_load(path, &k2, err, sizeof err), 0);
    assert_memory_equal(k.bytes, k2.bytes, 32);
    assert_int_equal(fleetkey_create(path, 1, &k2, err, sizeof err), 0);
    assert_memory_not_equal(k.bytes, k2.bytes, 32);
    assert_string_not_equal(k.id, k2.id);
    /* a key others can read is refused, naming the fix */
    chmod(path, 0644);
    assert_int_equal(fleetkey_load(path, &k2, err, sizeof err), -1);
    char want[600];
    snprintf(want, sizeof want, "the fleet key %s has mode 0644, which lets others read it; make "
             "it private with chmod 600 %s", path, path);
    assert_string_equal(err, want);
    /* a file of another size */
    chmod(path, 0600);
    assert_int_equal(truncate(path, 31), 0);
    assert_int_equal(fleetkey_load(path, &k2, err, sizeof err), -1);
    assert_non_null(strstr(err, "is 31 bytes long instead of 32"));
    free(path);
}

static void test_seal_open(void **state)
{
    char err[512] = "", *path = fs_path_join(*state, "k1"), *path2 = fs_path_join(*state, "k2");
    struct fleet_key k, other;
    assert_int_equal(fleetkey_create(path, 0, &k, err, sizeof err), 0);
    assert_int_equal(fleetkey_create(path2, 0, &other, err, sizeof err), 0);
    const char *ad = "/certgate/myenv/active";
    char *s = fleetkey_seal(&k, ad, "pass\0word", 9);
    assert_non_null(s);
    assert_int_equal(strncmp(s, "fk1:", 4), 0);
    assert_int_equal(strncmp(s + 4, k.id, 16), 0);
    assert_null(strstr(s, "pass"));
    char *plain;
    size_t n;
    assert_int_equal(fleetkey_open(&k, ad, s, &plain, &n, err, sizeof err), 0);
    assert_int_equal(n, 9);
    assert_memory_equal(plain, "pass\0word", 9);
    secret_free(plain);
    /* two seals of the same text differ (random nonce) */
    char *s2 = fleetkey_seal(&k, ad, "pass\0word", 9);
    assert_string_not_equal(s, s2);
    free(s2);
    /* the empty secret */
    s2 = fleetkey_seal(&k, ad, "", 0);
    assert_int_equal(fleetkey_open(&k, ad, s2, &plain, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    secret_free(plain);
    free(s2);
    /* another member's key: named as such, with both ids */
    assert_int_equal(fleetkey_open(&other, ad, s, &plain, &n, err, sizeof err), -1);
    assert_null(plain);
    char want[512];
    snprintf(want, sizeof want, "%s: sealed with another fleet key (id %s; this member's fleet "
             "key has id %s): copy the fleet key file from a member of this fleet", ad, k.id,
             other.id);
    assert_string_equal(err, want);
    /* moved under another etcd key: does not authenticate */
    assert_int_equal(fleetkey_open(&k, "/certgate/other/active", s, &plain, &n, err, sizeof err),
                     -1);
    snprintf(want, sizeof want, "/certgate/other/active: the sealed value does not authenticate "
             "under the fleet key (id %s): it was altered or moved from another key; refused",
             k.id);
    assert_string_equal(err, want);
    /* each byte of the sealed part altered: refused, never opened */
    size_t len = strlen(s);
    for (size_t i = 4 + 17; i < len; i++) {
        char *t = strdup(s);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        int rc = fleetkey_open(&k, ad, t, &plain, &n, err, sizeof err);
        if (rc == 0) fail_msg("altered at %zu but opened", i);
        if (!strstr(err, "does not authenticate") && !strstr(err, "damaged"))
            fail_msg("altered at %zu: %s", i, err);
        free(t);
    }
    /* an id changed to the other key's: "another fleet key" */
    char *t = strdup(s);
    memcpy(t + 4, other.id, 16);
    assert_int_equal(fleetkey_open(&k, ad, t, &plain, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "sealed with another fleet key"));
    free(t);
    /* not a sealed value at all */
    assert_int_equal(fleetkey_open(&k, ad, "v1:abc", &plain, &n, err, sizeof err), -1);
    assert_string_equal(err, "/certgate/myenv/active: the value is not sealed by certgate (it "
                             "must start with 'fk1:<key id>:'); refused");
    snprintf(want, sizeof want, "fk1:%s:Zg==", k.id);
    assert_int_equal(fleetkey_open(&k, ad, want, &plain, &n, err, sizeof err), -1);
    assert_string_equal(err, "/certgate/myenv/active: the sealed value is damaged (too short); "
                             "refused");
    free(s);
    fleetkey_wipe(&k);
    fleetkey_wipe(&other);
    free(path);
    free(path2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64),
        cmocka_unit_test_setup_teardown(test_key_file, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_seal_open, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
