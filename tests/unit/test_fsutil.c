/* Unit tests for src/fsutil.c: atomic durable writes, reads, folders, temp cleanup. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fsutil.h"

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
    char *tmpl = fs_path_join(base, "fsutil-XXXXXX");
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

static char *path_in(void **state, const char *name)
{
    char *p = fs_path_join(*state, name);
    assert_non_null(p);
    return p;
}

static void write_plain(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) fail_msg("expected %s to exist: %s", path, strerror(errno));
    return st.st_mode & 07777;
}

static void expect_content(const char *path, const char *expected)
{
    char *data, err[256];
    size_t len;
    if (fs_read_file(path, 1 << 20, &data, &len, err, sizeof err) < 0)
        fail_msg("expected to read %s: %s", path, err);
    if (len != strlen(expected) || memcmp(data, expected, len) != 0)
        fail_msg("%s: expected \"%s\", found \"%s\"", path, expected, data);
    free(data);
}

/* Names in dir that start with ".tmp-". */
static int count_temps(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, ".tmp-", 5) == 0) n++;
    closedir(d);
    return n;
}

/* ----- tests ----- */

static void test_write_creates_with_exact_mode(void **state)
{
    char *p = path_in(state, "new.txt"), err[256] = "";
    mode_t old = umask(077); /* would turn 0644 into 0600 if the mode went through it */
    int rc = fs_write_atomic(p, "hello\n", 6, 0644, err, sizeof err);
    umask(old);
    if (rc < 0) fail_msg("expected fs_write_atomic to succeed: %s", err);
    expect_content(p, "hello\n");
    if (mode_of(p) != 0644) fail_msg("expected mode 0644, found %04o", (unsigned)mode_of(p));
    assert_int_equal(count_temps(*state), 0);
    free(p);
}

static void test_write_keeps_mode_of_replaced_file(void **state)
{
    char *p = path_in(state, "keep.txt"), err[256] = "";
    write_plain(p, "old", 0604);
    if (fs_write_atomic(p, "new content", 11, 0600, err, sizeof err) < 0)
        fail_msg("expected fs_write_atomic to succeed: %s", err);
    expect_content(p, "new content");
    if (mode_of(p) != 0604)
        fail_msg("expected the replaced file's mode 0604 to be kept, found %04o",
                 (unsigned)mode_of(p));
    if (count_temps(*state) != 0) fail_msg("expected no .tmp-* file left after the write");
    free(p);
}

static void test_write_empty_and_replace_twice(void **state)
{
    char *p = path_in(state, "e.txt"), err[256];
    assert_int_equal(fs_write_atomic(p, "", 0, 0600, err, sizeof err), 0);
    expect_content(p, "");
    assert_int_equal(fs_write_atomic(p, "a", 1, 0600, err, sizeof err), 0);
    assert_int_equal(fs_write_atomic(p, "bb", 2, 0600, err, sizeof err), 0);
    expect_content(p, "bb");
    assert_int_equal(count_temps(*state), 0);
    free(p);
}

static void test_write_failure_leaves_target_untouched(void **state)
{
    char *p = path_in(state, "target.txt"), err[256] = "";
    write_plain(p, "precious", 0600);
    /* make write(2) fail with EFBIG half-way, as a full disk would */
    static char big[64 * 1024];
    memset(big, 'x', sizeof big);
    struct rlimit old, small = {4096, 0};
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small.rlim_max = old.rlim_max;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    int rc = fs_write_atomic(p, big, sizeof big, 0600, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    if (rc == 0) fail_msg("expected fs_write_atomic to fail when the file size limit is hit");
    if (!strstr(err, *(char **)state) || !strstr(err, strerror(EFBIG)))
        fail_msg("expected the message to name the folder and say '%s', got: %s", strerror(EFBIG),
                 err);
    expect_content(p, "precious");
    if (count_temps(*state) != 0) fail_msg("expected the temp file to be removed after a failure");
    free(p);
}

static void test_write_through_symlink_keeps_link(void **state)
{
    char *target = path_in(state, "real.properties"), *link = path_in(state, "link.properties");
    char err[256] = "";
    write_plain(target, "old", 0640);
    assert_int_equal(symlink("real.properties", link), 0);
    if (fs_write_atomic(link, "new", 3, 0600, err, sizeof err) < 0)
        fail_msg("expected the write through the link to succeed: %s", err);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    if (!S_ISLNK(st.st_mode)) fail_msg("expected %s to still be a symbolic link", link);
    expect_content(target, "new");
    if (mode_of(target) != 0640) fail_msg("expected the target to keep mode 0640");
    assert_int_equal(count_temps(*state), 0);
    free(target);
    free(link);
}

static void test_write_onto_folder_fails(void **state)
{
    char err[256] = "";
    assert_int_equal(fs_write_atomic(*state, "x", 1, 0600, err, sizeof err), -1);
    if (!strstr(err, *(char **)state)) fail_msg("expected the path in the message, got: %s", err);
}

static void test_create_atomic_never_replaces(void **state)
{
    char *p = path_in(state, "once.key"), err[256] = "";
    mode_t old = umask(0);
    int rc = fs_create_atomic(p, "first", 5, 0600, err, sizeof err);
    umask(old);
    if (rc < 0) fail_msg("expected the first create to succeed: %s", err);
    assert_int_equal(mode_of(p), 0600);
    errno = 0;
    rc = fs_create_atomic(p, "second", 6, 0600, err, sizeof err);
    if (rc != -1 || errno != EEXIST)
        fail_msg("expected the second create to fail with EEXIST, got rc=%d errno=%d", rc, errno);
    if (!strstr(err, p) || !strstr(err, "already exists"))
        fail_msg("expected \"... %s: it already exists\", got: %s", p, err);
    expect_content(p, "first");
    if (count_temps(*state) != 0) fail_msg("expected no .tmp-* file left after either create");
    free(p);
}

static void test_read_file(void **state)
{
    char *p = path_in(state, "r.txt"), *data, err[256] = "";
    size_t len = 99;
    write_plain(p, "abc", 0600);
    assert_int_equal(fs_read_file(p, 3, &data, &len, err, sizeof err), 0);
    assert_int_equal(len, 3);
    assert_string_equal(data, "abc");
    free(data);

    assert_int_equal(fs_read_file(p, 2, &data, &len, err, sizeof err), -1);
    assert_null(data);
    char expected[512];
    snprintf(expected, sizeof expected, "%s is larger than 2 bytes", p);
    assert_string_equal(err, expected);
    free(p);
}

static void test_read_missing_keeps_enoent(void **state)
{
    char *p = path_in(state, "missing"), *data = (char *)"x", err[256] = "";
    errno = 0;
    assert_int_equal(fs_read_file(p, 10, &data, NULL, err, sizeof err), -1);
    if (errno != ENOENT) fail_msg("expected errno ENOENT, got %d", errno);
    assert_null(data);
    char expected[512];
    snprintf(expected, sizeof expected, "cannot open %s: %s", p, strerror(ENOENT));
    assert_string_equal(err, expected);
    free(p);
}

static void test_read_folder_fails(void **state)
{
    char *data, err[256] = "";
    assert_int_equal(fs_read_file(*state, 10, &data, NULL, err, sizeof err), -1);
    if (!strstr(err, "not a regular file")) fail_msg("expected 'not a regular file', got: %s", err);
}

static void test_remove_stale_temps(void **state)
{
    const char *names[] = {".tmp-a.txt-0011223344556677", ".tmp-b", "keep.txt", ".tmpx", "x.tmp-"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *p = path_in(state, names[i]);
        write_plain(p, "t", 0600);
        free(p);
    }
    char *sub = path_in(state, ".tmp-folder"); /* not a file: left alone */
    assert_int_equal(mkdir(sub, 0700), 0);
    int n = fs_remove_stale_temps(*state);
    if (n != 2) fail_msg("expected 2 stale temp files removed, got %d", n);
    for (size_t i = 2; i < sizeof names / sizeof *names; i++) {
        char *p = path_in(state, names[i]);
        if (access(p, F_OK) != 0) fail_msg("expected %s to be kept", names[i]);
        free(p);
    }
    if (access(sub, F_OK) != 0) fail_msg("expected the folder .tmp-folder to be kept");
    assert_int_equal(fs_remove_stale_temps(*state), 0);
    free(sub);
    char *missing = path_in(state, "nope");
    assert_int_equal(fs_remove_stale_temps(missing), -1);
    free(missing);
}

static void test_mkdir_p(void **state)
{
    char *deep = path_in(state, "a/b/c/"), err[256] = "";
    mode_t old = umask(077);
    int rc = fs_mkdir_p(deep, 0751, 0, err, sizeof err);
    umask(old);
    if (rc < 0) fail_msg("expected fs_mkdir_p to succeed: %s", err);
    if (mode_of(deep) != 0751)
        fail_msg("expected the last folder to get mode 0751, found %04o", (unsigned)mode_of(deep));

    assert_int_equal(chmod(deep, 0700), 0);
    assert_int_equal(fs_mkdir_p(deep, 0751, 0, err, sizeof err), 0);
    if (mode_of(deep) != 0700) fail_msg("expected an existing folder's mode to be left alone");
    assert_int_equal(fs_mkdir_p(deep, 0750, 1, err, sizeof err), 0);
    if (mode_of(deep) != 0750) fail_msg("expected force_mode to set 0750");

    char *file = path_in(state, "a/file");
    write_plain(file, "x", 0600);
    char *below = path_in(state, "a/file/sub");
    assert_int_equal(fs_mkdir_p(file, 0700, 0, err, sizeof err), -1);
    if (!strstr(err, file) || !strstr(err, "in the way"))
        fail_msg("expected a message naming %s and 'in the way', got: %s", file, err);
    assert_int_equal(fs_mkdir_p(below, 0700, 0, err, sizeof err), -1);
    free(deep);
    free(file);
    free(below);
}

static void test_unlink_durable(void **state)
{
    char *p = path_in(state, "gone"), err[256] = "";
    write_plain(p, "x", 0600);
    assert_int_equal(fs_unlink_durable(p, err, sizeof err), 0);
    if (access(p, F_OK) == 0) fail_msg("expected %s to be removed", p);
    errno = 0;
    assert_int_equal(fs_unlink_durable(p, err, sizeof err), -1);
    if (errno != ENOENT || !strstr(err, p))
        fail_msg("expected ENOENT and the path in the message, got errno=%d: %s", errno, err);
    free(p);
}

static void test_fsync_dir(void **state)
{
    char err[256] = "";
    assert_int_equal(fs_fsync_dir(*state, err, sizeof err), 0);
    char *missing = path_in(state, "no-such-folder");
    assert_int_equal(fs_fsync_dir(missing, err, sizeof err), -1);
    if (!strstr(err, missing) || !strstr(err, strerror(ENOENT)))
        fail_msg("expected the folder and '%s' in the message, got: %s", strerror(ENOENT), err);
    free(missing);
}

static void expect_join(const char *dir, const char *name, const char *expected)
{
    char *p = fs_path_join(dir, name);
    assert_non_null(p);
    if (strcmp(p, expected) != 0)
        fail_msg("fs_path_join(\"%s\", \"%s\"): expected \"%s\", got \"%s\"", dir, name, expected,
                 p);
    free(p);
}

static void test_path_join(void **state)
{
    (void)state;
    expect_join("/etc", "x", "/etc/x");
    expect_join("/etc/", "x", "/etc/x");
    expect_join("/etc//", "x/y", "/etc/x/y");
    expect_join("/", "x", "/x");
    expect_join("rel", "x", "rel/x");
    expect_join("/etc", "/abs/x", "/abs/x");
    expect_join("", "x", "x");
}

static void test_entries_refuse_links_fifos_folders(void **state)
{
    const char *dir = *state;
    char *reg = path_in(state, "reg.p12"), *fifo = path_in(state, "fifo.p12");
    char *sub = path_in(state, "dir.p12"), *lnk = path_in(state, "link.p12");
    char *dangling = path_in(state, "dangling.p12"), *made = path_in(state, "made");
    char err[512], *data;
    size_t len;
    write_plain(reg, "secret", 0600);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(symlink("reg.p12", lnk), 0);
    assert_int_equal(symlink("made", dangling), 0);
    /* the regular file of ours */
    assert_int_equal(fs_check_entry(dir, "reg.p12", err, sizeof err), 0);
    assert_int_equal(fs_read_entry(dir, "reg.p12", 100, &data, &len, err, sizeof err), 0);
    assert_int_equal(len, 6);
    free(data);
    /* refusals, with errno and a sentence that names the entry (a FIFO does not block) */
    struct {
        const char *name;
        int err;
        const char *word;
    } cases[] = {{"link.p12", ELOOP, "symbolic link"},
                 {"dangling.p12", ELOOP, "symbolic link"},
                 {"fifo.p12", EINVAL, "FIFO"},
                 {"dir.p12", EINVAL, "folder"},
                 {"none.p12", ENOENT, "none.p12"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 0;
        if (fs_check_entry(dir, cases[i].name, err, sizeof err) != -1 || errno != cases[i].err)
            fail_msg("check %s: expected errno %d, got %d", cases[i].name, cases[i].err, errno);
        if (!strstr(err, cases[i].word) || !strstr(err, cases[i].name))
            fail_msg("check %s: \"%s\" lacks \"%s\"", cases[i].name, err, cases[i].word);
        errno = 0;
        data = NULL;
        if (fs_read_entry(dir, cases[i].name, 100, &data, &len, err, sizeof err) != -1 ||
            errno != cases[i].err || data)
            fail_msg("read %s: expected errno %d, got %d", cases[i].name, cases[i].err, errno);
        if (!strstr(err, cases[i].word))
            fail_msg("read %s: \"%s\" lacks \"%s\"", cases[i].name, err, cases[i].word);
    }
    /* writing an entry replaces a link itself, never its target */
    assert_int_equal(fs_write_entry(dir, "dangling.p12", "new", 3, 0600, err, sizeof err), 0);
    struct stat st;
    assert_int_equal(lstat(dangling, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(lstat(made, &st), -1);
    expect_content(reg, "secret");
    free(reg), free(fifo), free(sub), free(lnk), free(dangling), free(made);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_creates_with_exact_mode, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_write_keeps_mode_of_replaced_file, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_write_empty_and_replace_twice, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_write_failure_leaves_target_untouched, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_write_through_symlink_keeps_link, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_write_onto_folder_fails, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_create_atomic_never_replaces, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_read_file, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_read_missing_keeps_enoent, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_read_folder_fails, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_remove_stale_temps, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_mkdir_p, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_unlink_durable, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fsync_dir, setup_dir, teardown_dir),
        cmocka_unit_test(test_path_join),
        cmocka_unit_test_setup_teardown(test_entries_refuse_links_fifos_folders, setup_dir,
                                        teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
