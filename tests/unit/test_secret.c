/* Unit tests for src/secret.c: the key file and the password obfuscation. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fsutil.h"
#include "secret.h"

#define WRONG_KEY                                                                                  \
    "certificate-password-encr was not made with this gateway's key (config/secret.key); set "     \
    "certificate-password in plain text again"

/* ----- a private temp folder per test ----- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup_dir(void **state)
{
    const char *base = getenv("CERTGATE_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    char err[256];
    if (fs_mkdir_p(base, 0700, 0, err, sizeof err) < 0) {
        print_error("cannot create %s: %s\n", base, err);
        return -1;
    }
    char *tmpl = fs_path_join(base, "secret-XXXXXX");
    if (!tmpl || !mkdtemp(tmpl)) {
        print_error("mkdtemp in %s failed: %s\n", base, strerror(errno));
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

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static void make_key(struct secret_key *k, unsigned char fill)
{
    memset(k->bytes, fill, sizeof k->bytes);
}

/* ----- the key file ----- */

static void test_key_created_once_with_mode_0600(void **state)
{
    const char *dir = *state;
    char err[256] = "", *path = fs_path_join(dir, SECRET_KEY_FILE);
    struct secret_key a, b;
    mode_t old = umask(0); /* the mode must not depend on the umask */
    int rc = secret_key_load(dir, 1, &a, err, sizeof err);
    umask(old);
    if (rc < 0) fail_msg("expected the key to be created: %s", err);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    if ((st.st_mode & 07777) != 0600)
        fail_msg("expected %s to have mode 0600, found %04o", path, st.st_mode & 07777);
    if (st.st_size != 32)
        fail_msg("expected 32 bytes in %s, found %lld", path, (long long)st.st_size);
    if (count_entries(dir) != 1) fail_msg("expected only secret.key in %s (no temp file)", dir);

    assert_int_equal(secret_key_load(dir, 1, &b, err, sizeof err), 0);
    if (memcmp(a.bytes, b.bytes, sizeof a.bytes) != 0)
        fail_msg("expected the second load to reuse the key, got different bytes");
    assert_int_equal(secret_key_load(dir, 0, &b, err, sizeof err), 0);
    assert_memory_equal(a.bytes, b.bytes, sizeof a.bytes);
    secret_key_wipe(&b);
    static const unsigned char zero[32];
    assert_memory_equal(b.bytes, zero, sizeof zero);
    free(path);
}

static void test_key_missing_without_create(void **state)
{
    char err[256] = "", expected[512], *path = fs_path_join(*state, SECRET_KEY_FILE);
    struct secret_key k;
    errno = 0;
    assert_int_equal(secret_key_load(*state, 0, &k, err, sizeof err), -1);
    assert_int_equal(errno, ENOENT);
    snprintf(expected, sizeof expected, "the key file %s does not exist", path);
    assert_string_equal(err, expected);
    if (access(path, F_OK) == 0) fail_msg("expected no key file to be created with create=0");
    free(path);
}

static void test_key_wider_mode_refused(void **state)
{
    char err[256] = "", expected[512], *path = fs_path_join(*state, SECRET_KEY_FILE);
    unsigned char bytes[32] = {1};
    struct secret_key k;
    write_file(path, bytes, sizeof bytes, 0644);
    assert_int_equal(secret_key_load(*state, 1, &k, err, sizeof err), -1);
    snprintf(expected, sizeof expected,
             "the key file %s has mode 0644, which lets others read it; make it private with "
             "chmod 600 %s",
             path, path);
    assert_string_equal(err, expected);

    assert_int_equal(chmod(path, 0400), 0); /* narrower is fine */
    if (secret_key_load(*state, 0, &k, err, sizeof err) < 0)
        fail_msg("expected a 0400 key file to load: %s", err);
    assert_memory_equal(k.bytes, bytes, sizeof bytes);
    free(path);
}

static void test_key_wrong_size_refused(void **state)
{
    char err[256] = "", expected[512], *path = fs_path_join(*state, SECRET_KEY_FILE);
    unsigned char bytes[31] = {0};
    struct secret_key k;
    write_file(path, bytes, sizeof bytes, 0600);
    assert_int_equal(secret_key_load(*state, 1, &k, err, sizeof err), -1);
    snprintf(expected, sizeof expected,
             "the key file %s is 31 bytes long instead of 32; remove it to make a new key and set "
             "certificate-password in plain text again",
             path);
    assert_string_equal(err, expected);
    free(path);
}

/* Several processes start at once on a folder without a key: all must end up with the
 * one key that is in the file. */
static void test_key_race_ends_with_one_key(void **state)
{
    enum { CHILDREN = 8, ROUNDS = 4 };
    for (int round = 0; round < ROUNDS; round++) {
        char name[32];
        snprintf(name, sizeof name, "round%d", round);
        char *dir = fs_path_join(*state, name);
        assert_int_equal(mkdir(dir, 0700), 0);
        int gate[2], results[2];
        assert_int_equal(pipe(gate), 0);
        assert_int_equal(pipe(results), 0);
        pid_t pids[CHILDREN];
        for (int i = 0; i < CHILDREN; i++) {
            pids[i] = fork();
            assert_true(pids[i] >= 0);
            if (pids[i] == 0) {
                char c, err[256];
                struct secret_key k;
                close(gate[1]);
                ssize_t r = read(gate[0], &c, 1); /* returns 0 when the parent opens the gate */
                (void)r;
                unsigned char msg[33] = {0};
                if (secret_key_load(dir, 1, &k, err, sizeof err) == 0) {
                    msg[0] = 1;
                    memcpy(msg + 1, k.bytes, 32);
                } else {
                    fprintf(stderr, "child: %s\n", err);
                }
                _exit(write(results[1], msg, sizeof msg) == (ssize_t)sizeof msg ? 0 : 1);
            }
        }
        close(gate[0]);
        close(gate[1]); /* go */
        close(results[1]);
        unsigned char first[33], msg[33];
        for (int i = 0; i < CHILDREN; i++) {
            assert_int_equal(read(results[0], msg, sizeof msg), (ssize_t)sizeof msg);
            if (msg[0] != 1) fail_msg("expected every racing process to load a key");
            if (i == 0) memcpy(first, msg, sizeof msg);
            if (memcmp(first, msg, sizeof msg) != 0)
                fail_msg("expected all racing processes to end with the same key");
        }
        close(results[0]);
        for (int i = 0; i < CHILDREN; i++) {
            int st;
            assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
            assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        struct secret_key k;
        char err[256];
        assert_int_equal(secret_key_load(dir, 0, &k, err, sizeof err), 0);
        if (memcmp(k.bytes, first + 1, 32) != 0)
            fail_msg("expected the key file to hold the key the processes got");
        if (count_entries(dir) != 1) fail_msg("expected only secret.key in %s after the race", dir);
        free(dir);
    }
}

/* ----- obfuscation ----- */

static void test_round_trip(void **state)
{
    (void)state;
    struct secret_key key;
    make_key(&key, 0x42);
    static char longpw[1001];
    memset(longpw, 'p', sizeof longpw - 1);
    const char *plains[] = {"", "password", "p\xc3\xa4,ss\\word=x #;", longpw};
    for (size_t i = 0; i < sizeof plains / sizeof *plains; i++) {
        char *enc = secret_encrypt(&key, plains[i]), *dec = NULL, err[256] = "";
        assert_non_null(enc);
        if (strncmp(enc, "v1:", 3) != 0) fail_msg("expected a 'v1:' prefix, got \"%s\"", enc);
        size_t blen = 12 + strlen(plains[i]) + 16;
        if (strlen(enc) != 3 + 4 * ((blen + 2) / 3))
            fail_msg("expected %zu base64 characters, got \"%s\"", 4 * ((blen + 2) / 3), enc + 3);
        if (strpbrk(enc, "\r\n ,\\")) fail_msg("expected no newline, space, comma or backslash");
        if (secret_decrypt(&key, enc, &dec, err, sizeof err) < 0)
            fail_msg("expected the value to decrypt: %s", err);
        assert_string_equal(dec, plains[i]);
        secret_free(dec);
        free(enc);
    }
    /* a fresh nonce each time */
    char *a = secret_encrypt(&key, "same"), *b = secret_encrypt(&key, "same");
    if (strcmp(a, b) == 0) fail_msg("expected two encryptions of one value to differ");
    free(a);
    free(b);
}

static void test_other_key_fails(void **state)
{
    (void)state;
    struct secret_key mine, other;
    make_key(&mine, 1);
    make_key(&other, 1);
    other.bytes[31] ^= 1;
    char *enc = secret_encrypt(&other, "secret"), *dec = (char *)"x", err[256] = "";
    assert_non_null(enc);
    assert_int_equal(secret_decrypt(&mine, enc, &dec, err, sizeof err), -1);
    assert_null(dec);
    assert_string_equal(err, WRONG_KEY);
    free(enc);
}

static void test_tampered_value_fails(void **state)
{
    (void)state;
    struct secret_key key;
    make_key(&key, 7);
    char *enc = secret_encrypt(&key, "a long enough password");
    assert_non_null(enc);
    size_t positions[] = {3 + 2, 3 + 20, strlen(enc) - 6}; /* nonce, ciphertext, tag */
    for (size_t i = 0; i < sizeof positions / sizeof *positions; i++) {
        char *bad = strdup(enc), *dec = NULL, err[256] = "";
        bad[positions[i]] = bad[positions[i]] == 'A' ? 'B' : 'A';
        if (secret_decrypt(&key, bad, &dec, err, sizeof err) == 0)
            fail_msg("expected a value changed at %zu to be refused, it decrypted to \"%s\"",
                     positions[i], dec);
        assert_string_equal(err, WRONG_KEY);
        free(bad);
    }
    free(enc);
}

static void test_malformed_values(void **state)
{
    (void)state;
    struct secret_key key;
    make_key(&key, 9);
    static const struct {
        const char *value, *err;
    } cases[] = {
        {"plain", "certificate-password-encr is not a value made by certgate (it must start with "
                  "'v1:'); set certificate-password in plain text again"},
        {"v2:AAAA", "certificate-password-encr is not a value made by certgate (it must start "
                    "with 'v1:'); set certificate-password in plain text again"},
        {"v1:", "certificate-password-encr is damaged (not valid base64); set "
                "certificate-password in plain text again"},
        {"v1:AA@A", "certificate-password-encr is damaged (not valid base64); set "
                    "certificate-password in plain text again"},
        {"v1:AAA=A===", "certificate-password-encr is damaged (not valid base64); set "
                        "certificate-password in plain text again"},
        {"v1:AAAAAAAA", "certificate-password-encr is damaged (too short); set "
                        "certificate-password in plain text again"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *dec = NULL, err[256] = "";
        if (secret_decrypt(&key, cases[i].value, &dec, err, sizeof err) == 0)
            fail_msg("expected \"%s\" to be refused", cases[i].value);
        assert_null(dec);
        assert_string_equal(err, cases[i].err);
    }
}

static void test_memcmp_and_free(void **state)
{
    (void)state;
    assert_int_equal(secret_memcmp("abcd", "abcd", 4), 0);
    assert_int_not_equal(secret_memcmp("abcd", "abce", 4), 0);
    assert_int_equal(secret_memcmp("a", "b", 0), 0);
    secret_free(NULL);
    secret_free(strdup("to be wiped"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_created_once_with_mode_0600, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_key_missing_without_create, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_key_wider_mode_refused, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_key_wrong_size_refused, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_key_race_ends_with_one_key, setup_dir, teardown_dir),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_other_key_fails),
        cmocka_unit_test(test_tampered_value_fails),
        cmocka_unit_test(test_malformed_values),
        cmocka_unit_test(test_memcmp_and_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
