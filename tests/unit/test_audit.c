/* Unit tests for src/audit.c and src/audit_read.c: the JSON line, rotation (sizes, files
 * kept, whole lines under several threads), the repair of a torn last line, the async
 * writer, the reader (order across files, --since, corrupt lines) and time parsing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
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
#include <jansson.h>

#include "audit.h"
#include "fsutil.h"

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
    if (fs_mkdir_p(base, 0700, 0, err, sizeof err) < 0) return -1;
    char *tmpl = fs_path_join(base, "audit-XXXXXX");
    if (!tmpl || !mkdtemp(tmpl)) {
        free(tmpl);
        return -1;
    }
    *state = tmpl;
    return 0;
}

static int teardown_dir(void **state)
{
    audit_close();
    audit_configure(AUDIT_MAX_BYTES_DEFAULT, AUDIT_KEEP_DEFAULT);
    nftw(*state, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

static char *log_file(void **state, const char *name)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s/log/%s", (char *)*state, name);
    return strdup(buf);
}

static char *slurp(const char *path, size_t *len)
{
    char *data = NULL;
    size_t n = 0;
    if (fs_read_file(path, 64u << 20, &data, &n, NULL, 0) != 0) return NULL;
    if (len) *len = n;
    return data;
}

/* Checks that every line of path is a whole JSON object; returns how many. */
static int count_json_lines(const char *path)
{
    size_t len = 0;
    char *d = slurp(path, &len);
    if (!d) return -1;
    int n = 0;
    char *p = d;
    while (*p) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        json_error_t je;
        json_t *o = json_loadb(p, (size_t)(nl - p), 0, &je);
        if (!json_is_object(o)) fail_msg("%s: not JSON: %.*s", path, (int)(nl - p), p);
        json_decref(o);
        n++;
        p = nl + 1;
    }
    free(d);
    return n;
}

static void test_format(void **state)
{
    (void)state;
    struct audit_event ev = {.source = "api", .token_id = "dt0c01.ABC", .client = "::1",
                             .op = "upload", .name = "a\"b\n.p12", .alias = NULL,
                             .sha_before = "00", .sha_after = "11", .status = 400,
                             .message = "line\nbreak \xc3\xa9"};
    char *l = audit_format(&ev);
    assert_non_null(l);
    size_t n = strlen(l);
    assert_true(n > 2 && l[n - 1] == '\n');
    assert_null(memchr(l, '\n', n - 1)); /* one line, whatever the strings hold */
    for (size_t i = 0; i < n; i++) assert_true((unsigned char)l[i] < 0x80);
    json_error_t je;
    json_t *o = json_loads(l, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "name")), "a\"b\n.p12");
    assert_true(json_is_null(json_object_get(o, "alias")));
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 400);
    assert_string_equal(json_string_value(json_object_get(o, "operation")), "upload");
    assert_null(json_object_get(o, "user")); /* only when set */
    /* the fixed order of the fields */
    const char *want[] = {"time", "source", "tokenId", "client", "operation", "name", "alias",
                          "sha256Before", "sha256After", "status", "message"};
    const char *p = l;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char key[32];
        snprintf(key, sizeof key, "\"%s\":", want[i]);
        const char *at = strstr(p, key);
        assert_non_null(at);
        p = at;
    }
    json_decref(o);
    free(l);
}

static void test_parse_times(void **state)
{
    (void)state;
    long long t;
    assert_int_equal(audit_parse_time("1970-01-01T00:00:00Z", &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(audit_parse_time("2026-11-30T09:54:50.468Z", &t), 0);
    assert_int_equal(t, 1796032490468LL);
    assert_int_equal(audit_parse_time("2026-11-30T10:54:50.468+01:00", &t), 0);
    assert_int_equal(t, 1796032490468LL);
    assert_int_equal(audit_parse_time("2024-02-29T00:00:00Z", &t), 0);
    const char *bad[] = {"", "2026-11-30", "2026-11-30T09:54:50", "2023-02-29T00:00:00Z",
                         "2026-13-01T00:00:00Z", "2026-11-30T24:00:00Z",
                         "2026-11-30T09:54:50.Z", "2026-11-30T09:54:50Zjunk", "yesterday"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(audit_parse_time(bad[i], &t), -1);
    long long now = 1796032490468LL;
    assert_int_equal(audit_parse_since("24h", now, &t), 0);
    assert_int_equal(t, now - 86400000LL);
    assert_int_equal(audit_parse_since("90s", now, &t), 0);
    assert_int_equal(t, now - 90000LL);
    assert_int_equal(audit_parse_since("7d", now, &t), 0);
    assert_int_equal(audit_parse_since("15m", now, &t), 0);
    assert_int_equal(audit_parse_since("2026-11-30", now, &t), 0);
    assert_int_equal(t, 1796032490468LL - (9 * 3600 + 54 * 60 + 50) * 1000LL - 468);
    const char *badsince[] = {"", "h", "-1h", "24", "24x", "1.5h", "99999999999999999999d"};
    for (size_t i = 0; i < sizeof badsince / sizeof badsince[0]; i++)
        assert_int_equal(audit_parse_since(badsince[i], now, &t), -1);
}

static void record_n(int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char msg[64];
        snprintf(msg, sizeof msg, "event %d", i);
        struct audit_event ev = {.source = "api", .op = "delete", .status = 404,
                                 .message = msg};
        audit_record(&ev);
    }
}

static void test_rotation_keeps_whole_lines(void **state)
{
    char err[256];
    assert_int_equal(audit_open(*state, err, sizeof err), 0);
    audit_configure(1024, 3);
    record_n(0, 40);
    char *names[] = {log_file(state, "audit.jsonl"), log_file(state, "audit.jsonl.1"),
                     log_file(state, "audit.jsonl.2"), log_file(state, "audit.jsonl.3"),
                     log_file(state, "audit.jsonl.4")};
    int total = 0;
    for (int i = 0; i < 4; i++) {
        struct stat st;
        assert_int_equal(stat(names[i], &st), 0);
        assert_true(st.st_size <= 1024);
        assert_int_equal(st.st_mode & 0777, 0600);
        int n = count_json_lines(names[i]);
        assert_true(n >= 1);
        total += n;
    }
    assert_int_equal(access(names[4], F_OK), -1); /* only 3 rotated files kept */
    /* the reader: oldest first, the newest `total` events in order */
    char *out = NULL;
    size_t outlen = 0;
    FILE *o = open_memstream(&out, &outlen);
    FILE *e = fopen("/dev/null", "w");
    assert_int_equal(audit_print(*state, 0, 1, o, e, err, sizeof err), 0);
    fclose(o);
    fclose(e);
    int expect = 40 - total, seen = 0;
    for (char *p = out; p && *p; p = strchr(p, '\n') + 1) {
        int k = -1;
        const char *m = strstr(p, "\"event ");
        assert_non_null(m);
        sscanf(m, "\"event %d", &k);
        assert_int_equal(k, expect++);
        seen++;
    }
    assert_int_equal(seen, total);
    free(out);
    struct stat st;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/log", (char *)*state);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    for (int i = 0; i < 5; i++) free(names[i]);
}

static void *thread_writer(void *arg)
{
    int base = *(int *)arg;
    record_n(base, 50);
    return NULL;
}

static void test_threads_never_interleave(void **state)
{
    char err[256];
    assert_int_equal(audit_open(*state, err, sizeof err), 0);
    audit_configure(4096, 100);
    pthread_t t[4];
    int base[4];
    for (int i = 0; i < 4; i++) {
        base[i] = i * 1000;
        assert_int_equal(pthread_create(&t[i], NULL, thread_writer, &base[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    int total = 0;
    for (int k = 0; k <= 100; k++) {
        char name[32];
        snprintf(name, sizeof name, k ? "audit.jsonl.%d" : "audit.jsonl", k);
        char *p = log_file(state, name);
        if (access(p, F_OK) == 0) total += count_json_lines(p);
        free(p);
    }
    assert_int_equal(total, 200);
}

static void test_torn_tail_is_ended_and_reported(void **state)
{
    char err[256];
    char *path = log_file(state, "audit.jsonl");
    assert_int_equal(audit_open(*state, err, sizeof err), 0);
    record_n(0, 2);
    audit_close();
    FILE *f = fopen(path, "a");
    fputs("{\"time\":\"2026-11-30T10:00:00.000Z\",\"sou", f);
    fclose(f);
    /* the reader reports the incomplete last line and skips it */
    char *out = NULL, *errs = NULL;
    size_t ol = 0, el = 0;
    FILE *o = open_memstream(&out, &ol), *e = open_memstream(&errs, &el);
    assert_int_equal(audit_print(*state, 0, 1, o, e, err, sizeof err), 0);
    fclose(o);
    fclose(e);
    assert_non_null(strstr(errs, "audit.jsonl:3: an incomplete line"));
    int lines = 0;
    for (const char *p = out; (p = strchr(p, '\n')); p++) lines++;
    assert_int_equal(lines, 2);
    free(out);
    free(errs);
    /* reopening ends it; the next line is whole */
    assert_int_equal(audit_open(*state, err, sizeof err), 0);
    record_n(2, 1);
    audit_close();
    size_t len = 0;
    char *d = slurp(path, &len);
    assert_non_null(d);
    assert_non_null(strstr(d, "\"sou\n{\"time\""));
    assert_true(d[len - 1] == '\n');
    free(d);
    free(path);
}

static void test_async_is_written_by_close(void **state)
{
    char err[256];
    assert_int_equal(audit_open(*state, err, sizeof err), 0);
    for (int i = 0; i < 20; i++) {
        struct audit_event ev = {.source = "api", .op = "upload", .status = 400,
                                 .message = "bad name"};
        audit_record_async(&ev);
    }
    audit_close(); /* drains the queue */
    char *path = log_file(state, "audit.jsonl");
    assert_int_equal(count_json_lines(path), 20);
    /* closed: nothing is written, nothing crashes */
    struct audit_event ev = {.source = "api", .op = "upload", .status = 400};
    audit_record(&ev);
    audit_record_async(&ev);
    assert_int_equal(count_json_lines(path), 20);
    free(path);
}

static void test_reader_since_corrupt_and_missing(void **state)
{
    char err[256];
    /* nothing recorded yet: exit 0, a sentence */
    char *out = NULL, *errs = NULL;
    size_t ol = 0, el = 0;
    FILE *o = open_memstream(&out, &ol), *e = open_memstream(&errs, &el);
    assert_int_equal(audit_print(*state, 0, 0, o, e, err, sizeof err), 0);
    fclose(o);
    fclose(e);
    assert_string_equal(out, "");
    assert_non_null(strstr(errs, "nothing has been recorded yet"));
    free(out);
    free(errs);
    char missing[1024];
    snprintf(missing, sizeof missing, "%s/nope", (char *)*state);
    assert_int_equal(audit_print(missing, 0, 0, stdout, stderr, err, sizeof err), 1);
    assert_non_null(strstr(err, "no such data directory"));

    char dir[1024];
    snprintf(dir, sizeof dir, "%s/log", (char *)*state);
    assert_int_equal(fs_mkdir_p(dir, 0700, 0, err, sizeof err), 0);
    char *path = log_file(state, "audit.jsonl");
    FILE *f = fopen(path, "w");
    fputs("{\"time\":\"2026-11-30T09:00:00.000Z\",\"source\":\"api\",\"operation\":\"upload\","
          "\"name\":\"a.p12\",\"status\":200,\"sha256Before\":\"aaaa\",\"sha256After\":\"bbbb\","
          "\"message\":\"\\u001b[2Jdone\"}\n"
          "garbage\n"
          "[1,2]\n"
          "{\"time\":\"not a time\"}\n"
          "{\"time\":\"2026-11-30T11:00:00.000Z\",\"source\":\"reload\",\"operation\":\"reload\","
          "\"status\":500}\n",
          f);
    fclose(f);
    long long since;
    assert_int_equal(audit_parse_time("2026-11-30T10:00:00Z", &since), 0);
    out = errs = NULL;
    o = open_memstream(&out, &ol);
    e = open_memstream(&errs, &el);
    assert_int_equal(audit_print(*state, since, 0, o, e, err, sizeof err), 0);
    fclose(o);
    fclose(e);
    assert_string_equal(out, "2026-11-30T11:00:00.000Z reload reload 500\n");
    assert_non_null(strstr(errs, "audit.jsonl:2: not an audit record"));
    assert_non_null(strstr(errs, "audit.jsonl:3: not an audit record"));
    assert_non_null(strstr(errs, "audit.jsonl:4: not an audit record"));
    assert_non_null(strstr(errs, "3 lines skipped"));
    free(out);
    free(errs);
    out = errs = NULL;
    o = open_memstream(&out, &ol);
    e = open_memstream(&errs, &el);
    assert_int_equal(audit_print(*state, 0, 0, o, e, err, sizeof err), 0);
    fclose(o);
    fclose(e);
    /* control characters from the file never reach the terminal */
    assert_non_null(strstr(out, "2026-11-30T09:00:00.000Z api upload 200 a.p12 served aaaa -> "
                                "bbbb: ?[2Jdone\n"));
    assert_null(strchr(out, 0x1b));
    free(out);
    free(errs);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse_times),
        cmocka_unit_test_setup_teardown(test_rotation_keeps_whole_lines, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_threads_never_interleave, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_torn_tail_is_ended_and_reported, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_async_is_written_by_close, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_reader_since_corrupt_and_missing, setup_dir,
                                        teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
