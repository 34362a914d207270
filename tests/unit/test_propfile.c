/* Unit tests for src/propfile.c: the byte-preserving custom.properties parser/rewriter
 * (sections, keys, escapes, line endings, atomic saves). */
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

#include "fsutil.h"
#include "propfile.h"

#define PATH "custom.properties"
#define SECTION "com.compuware.apm.webserver"
#define WEB "[" SECTION "]\n"

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

static struct propfile *parse_n(const char *text, size_t len)
{
    struct propfile *doc = NULL;
    char err[256] = "";
    if (propfile_parse(text, len, PATH, &doc, err, sizeof err) < 0)
        fail_msg("expected the text to parse, got: %s", err);
    assert_non_null(doc);
    return doc;
}

static struct propfile *parse(const char *text)
{
    return parse_n(text, strlen(text));
}

static void expect_text_n(const struct propfile *doc, const char *expected, size_t elen)
{
    size_t len = 0;
    char *text = propfile_text(doc, &len);
    assert_non_null(text);
    if (len != elen || memcmp(text, expected, len) != 0) {
        char a[2048], b[2048];
        fail_msg("text differs\n  expected: \"%s\"\n  actual:   \"%s\"",
                 visible(expected, elen, a, sizeof a), visible(text, len, b, sizeof b));
    }
    if (text[len] != '\0') fail_msg("expected propfile_text to NUL-terminate");
    free(text);
}

static void expect_text(const struct propfile *doc, const char *expected)
{
    expect_text_n(doc, expected, strlen(expected));
}

static void expect_raw(const struct propfile *doc, const char *section, const char *key,
                       const char *expected, int line)
{
    const char *v = propfile_get_raw(doc, section, key);
    if (expected == NULL && v != NULL)
        fail_msg("[%s] %s: expected absent, got \"%s\"", section, key, v);
    if (expected != NULL && (v == NULL || strcmp(v, expected) != 0))
        fail_msg("[%s] %s: expected \"%s\", got %s%s%s", section, key, expected, v ? "\"" : "",
                 v ? v : "NULL", v ? "\"" : "");
    int l = propfile_line(doc, section, key);
    if (l != line) fail_msg("[%s] %s: expected line %d, got %d", section, key, line, l);
}

static void expect_parse_error_n(const char *text, size_t len, const char *expected)
{
    struct propfile *doc = (struct propfile *)1;
    char err[256] = "";
    if (propfile_parse(text, len, PATH, &doc, err, sizeof err) == 0) {
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
        struct propfile *doc = parse(texts[i]);
        expect_text(doc, texts[i]);
        propfile_free(doc);
    }
}

static void test_getters(void **state)
{
    (void)state;
    struct propfile *doc = parse("top = 0\n[a]\nx = 1\n[b]\nx = 2\n[a]\nx = 3\n[A]\nx = 4\n"
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
    propfile_free(doc);

    doc = parse("\xef\xbb\xbf[a]\r\nx = 1\r\n");
    expect_raw(doc, "a", "x", "1", 2);
    propfile_free(doc);
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
    struct propfile *doc = parse("[s]\r\n  port-ssl=9999\r\n# after\r\nother = x\r\n");
    assert_int_equal(propfile_set(doc, "s", "port-ssl", "443"), 0);
    expect_text(doc, "[s]\r\n  port-ssl = 443\r\n# after\r\nother = x\r\n");
    expect_raw(doc, "s", "port-ssl", "443", 2);
    propfile_free(doc);

    doc = parse("\xef\xbb\xbfk = 1\n");
    assert_int_equal(propfile_set(doc, "", "k", "2"), 0);
    expect_text(doc, "\xef\xbb\xbfk = 2\n");
    propfile_free(doc);
}

static void test_set_new_key_in_existing_section(void **state)
{
    (void)state;
    struct propfile *doc = parse("[a]\nx = 1\n# comment about b\n\n[b]\ny = 2\n");
    assert_int_equal(propfile_set(doc, "a", "z", "3"), 0);
    expect_text(doc, "[a]\nx = 1\nz = 3\n# comment about b\n\n[b]\ny = 2\n");
    expect_raw(doc, "a", "z", "3", 3);
    propfile_free(doc);

    /* a section without keys: right after its heading */
    doc = parse("[a]\n# only a comment\n[b]\n");
    assert_int_equal(propfile_set(doc, "a", "k", "v"), 0);
    expect_text(doc, "[a]\nk = v\n# only a comment\n[b]\n");
    propfile_free(doc);

    /* at the end of a file without a final newline, which stays without one */
    doc = parse("[a]\nx = 1");
    assert_int_equal(propfile_set(doc, "a", "y", "2"), 0);
    expect_text(doc, "[a]\nx = 1\ny = 2");
    propfile_free(doc);

    /* keys before any section */
    doc = parse("[a]\nx = 1\n");
    assert_int_equal(propfile_set(doc, "", "top", "t"), 0);
    expect_text(doc, "top = t\n[a]\nx = 1\n");
    propfile_free(doc);
}

static void test_set_with_duplicate_sections(void **state)
{
    (void)state;
    struct propfile *doc = parse("[a]\nx = 1\n[b]\n[a]\ny = 2\n");
    /* the key exists in the first occurrence only: that line is updated */
    assert_int_equal(propfile_set(doc, "a", "x", "9"), 0);
    expect_text(doc, "[a]\nx = 9\n[b]\n[a]\ny = 2\n");
    /* a new key goes to the last occurrence of the section */
    assert_int_equal(propfile_set(doc, "a", "w", "5"), 0);
    expect_text(doc, "[a]\nx = 9\n[b]\n[a]\ny = 2\nw = 5\n");
    propfile_free(doc);

    /* the key is repeated: the last line is updated, the others removed */
    doc = parse("[a]\nx = 1\ny = 2\n[a]\nx = 3\n");
    expect_raw(doc, "a", "x", "3", 5);
    assert_int_equal(propfile_set(doc, "a", "x", "4"), 0);
    expect_text(doc, "[a]\ny = 2\n[a]\nx = 4\n");
    expect_raw(doc, "a", "x", "4", 4);
    propfile_free(doc);
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
        struct propfile *doc = parse(cases[i].before);
        assert_int_equal(propfile_set(doc, "b", "k", "v"), 0);
        expect_text(doc, cases[i].after);
        propfile_free(doc);
    }
}

static void test_set_rejects_line_breaks(void **state)
{
    (void)state;
    const char *text = "[a]\nx = 1\n";
    struct propfile *doc = parse(text);
    errno = 0;
    assert_int_equal(propfile_set(doc, "a", "x", "1\n[evil]"), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(propfile_set(doc, "a", "x=y", "1"), -1);
    assert_int_equal(propfile_set(doc, "a", "", "1"), -1);
    assert_int_equal(propfile_set(doc, "a]\n[b", "x", "1"), -1);
    assert_int_equal(propfile_set(doc, "a", "# x", "1"), -1);
    expect_text(doc, text);
    propfile_free(doc);
}

static void test_unset(void **state)
{
    (void)state;
    struct propfile *doc = parse("[a]\nx = 1\ny = 2\n[b]\nx = 5\n[a]\nx = 3\n");
    assert_int_equal(propfile_unset(doc, "a", "x"), 2);
    expect_text(doc, "[a]\ny = 2\n[b]\nx = 5\n[a]\n");
    expect_raw(doc, "a", "x", NULL, 0);
    expect_raw(doc, "b", "x", "5", 4);
    assert_int_equal(propfile_unset(doc, "a", "x"), 0);
    assert_int_equal(propfile_unset(doc, "c", "x"), 0);
    expect_text(doc, "[a]\ny = 2\n[b]\nx = 5\n[a]\n");
    propfile_free(doc);

    /* the last line of a file without a final newline */
    doc = parse("[a]\r\nx = 1\r\ny = 2");
    assert_int_equal(propfile_unset(doc, "a", "y"), 1);
    expect_text(doc, "[a]\r\nx = 1");
    propfile_free(doc);
}

static void test_escapes(void **state)
{
    (void)state;
    struct propfile *doc = parse("[a]\n");
    assert_int_equal(propfile_set(doc, "a", "v", "a,b\\c"), 0);
    expect_text(doc, "[a]\nv = a\\,b\\\\c\n");
    expect_raw(doc, "a", "v", "a\\,b\\\\c", 2);
    char *u = propfile_unescape(propfile_get_raw(doc, "a", "v"));
    assert_string_equal(u, "a,b\\c");
    free(u);
    propfile_free(doc);

    static const struct {
        const char *raw, *plain;
    } cases[] = {
        {"C:\\certs\\new.p12", "C:\\certs\\new.p12"}, /* other backslashes stay */
        {"a\\\\\\,b", "a\\,b"},
        {"trailing\\", "trailing\\"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        u = propfile_unescape(cases[i].raw);
        assert_non_null(u);
        if (strcmp(u, cases[i].plain) != 0)
            fail_msg("propfile_unescape(\"%s\"): expected \"%s\", got \"%s\"", cases[i].raw,
                     cases[i].plain, u);
        free(u);
    }
}

static void test_split_list(void **state)
{
    (void)state;
    size_t n = 99;
    char **list = propfile_split_list(" a , b\\,c ,, \\\\ , d\\\\,e ", &n);
    static const char *const expected[] = {"a", "b,c", "\\", "d\\", "e"};
    assert_non_null(list);
    if (n != 5) fail_msg("expected 5 items, got %zu", n);
    for (size_t i = 0; i < 5; i++)
        if (strcmp(list[i], expected[i]) != 0)
            fail_msg("item %zu: expected \"%s\", got \"%s\"", i, expected[i], list[i]);
    assert_null(list[5]);
    propfile_list_free(list);

    list = propfile_split_list(" , ,", &n);
    assert_non_null(list);
    assert_int_equal(n, 0);
    assert_null(list[0]);
    propfile_list_free(list);

    list = propfile_split_list("", NULL);
    assert_non_null(list);
    assert_null(list[0]);
    propfile_list_free(list);
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

    struct propfile *doc;
    int existed = 7;
    assert_int_equal(propfile_load(path, &doc, &existed, err, sizeof err), 0);
    assert_int_equal(existed, 0);
    expect_text(doc, "");
    assert_int_equal(propfile_set(doc, SECTION, "port-ssl", "443"), 0);
    if (propfile_save(doc, path, err, sizeof err) < 0) fail_msg("expected save to work: %s", err);
    propfile_free(doc);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    if ((st.st_mode & 07777) != 0600)
        fail_msg("expected a new file to get mode 0600, found %04o", st.st_mode & 07777);

    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(propfile_load(path, &doc, &existed, err, sizeof err), 0);
    assert_int_equal(existed, 1);
    expect_text(doc, WEB "port-ssl = 443\n");
    assert_int_equal(propfile_unset(doc, SECTION, "port-ssl"), 1);
    assert_int_equal(propfile_save(doc, path, err, sizeof err), 0);
    propfile_free(doc);
    assert_int_equal(stat(path, &st), 0);
    if ((st.st_mode & 07777) != 0640)
        fail_msg("expected the file to keep mode 0640, found %04o", st.st_mode & 07777);

    /* a malformed file names its path and line */
    FILE *f = fopen(path, "w");
    fputs("[a]\nbroken\n", f);
    fclose(f);
    assert_int_equal(propfile_load(path, &doc, NULL, err, sizeof err), -1);
    char expected[512];
    snprintf(expected, sizeof expected, "%s:2: expected 'key = value', '[section]' or a comment",
             path);
    assert_string_equal(err, expected);

    /* read leniently: every bad line is listed, the rest is read */
    f = fopen(path, "w");
    fputs("[a]\nbroken\nk = v\n[\nx\n[a]\nj = w\n", f);
    fwrite("x\0y\n", 1, 4, f);
    fclose(f);
    int nbad = -1;
    char all[2048], want[2048];
    assert_int_equal(propfile_load_lenient(path, &doc, &nbad, all, sizeof all), 0);
    assert_int_equal(nbad, 4);
    snprintf(want, sizeof want,
             "%s:2: expected 'key = value', '[section]' or a comment\n"
             "%s:4: expected 'key = value', '[section]' or a comment\n"
             "%s:5: expected 'key = value', '[section]' or a comment\n"
             "%s:8: the line contains a NUL byte; the file must be text",
             path, path, path, path);
    assert_string_equal(all, want);
    assert_string_equal(propfile_get_raw(doc, "a", "k"), "v");
    assert_string_equal(propfile_get_raw(doc, "a", "j"), "w");
    assert_int_equal(propfile_line(doc, "a", "j"), 7);
    propfile_free(doc);

    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(path);
    free(dir);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
