/* Unit tests for strfmt.h: number formatting and the bounded builder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "strfmt.h"

static void check_u(unsigned long long v, unsigned base)
{
    char want[32], got[STRFMT_NUM_MAX + 1];
    snprintf(want, sizeof want, base == 10 ? "%llu" : "%llx", v);
    size_t n = strfmt_u(got, v, base);
    got[n] = '\0';
    assert_string_equal(got, want);
}

static void test_numbers_match_printf(void **state)
{
    (void)state;
    unsigned long long vs[] = {0, 1, 9, 10, 15, 16, 255, 256, 1024, 65535, 1000000007ULL,
                               (unsigned long long)INT64_MAX, UINT64_MAX};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        check_u(vs[i], 10);
        check_u(vs[i], 16);
    }
    for (unsigned long long v = 1; v < UINT64_MAX / 3; v = v * 3 + 1) {
        check_u(v, 10);
        check_u(v, 16);
    }
}

static void test_int_and_millis_match_printf(void **state)
{
    (void)state;
    long long ints[] = {0, 7, -7, 200, 499, -1000000007LL, INT64_MAX, INT64_MIN};
    unsigned long long ms[] = {0, 1, 9, 10, 99, 100, 999, 1000, 1001, 59999, 60000, 123456789,
                               999999999999ULL};
    char got[64], want[64];
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        struct strfmt f = {got, 0, sizeof got - 1, 0};
        strfmt_int(&f, ints[i]);
        got[f.len] = '\0';
        snprintf(want, sizeof want, "%lld", ints[i]);
        assert_string_equal(got, want);
    }
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        struct strfmt f = {got, 0, sizeof got - 1, 0};
        strfmt_millis(&f, ms[i]);
        got[f.len] = '\0';
        snprintf(want, sizeof want, "%.3f", (double)ms[i] / 1000.0);
        assert_string_equal(got, want);
    }
}

static void test_hex(void **state)
{
    (void)state;
    const unsigned char in[] = {0x00, 0x0f, 0x10, 0xab, 0xff};
    char out[2 * sizeof in + 1];
    strfmt_hex(out, in, sizeof in);
    assert_string_equal(out, "000f10abff");
    strfmt_hex(out, in, 0);
    assert_string_equal(out, "");
}

static void test_builder_cuts_instead_of_overflowing(void **state)
{
    (void)state;
    char buf[16];
    memset(buf, 'X', sizeof buf);
    struct strfmt f = {buf, 0, 10, 0};
    strfmt_str(&f, "HTTP/1.1 ");
    assert_int_equal(f.cut, 0);
    strfmt_num(&f, 200, 10);
    assert_int_equal(f.len, 10);
    assert_int_equal(f.cut, 1);
    assert_memory_equal(buf, "HTTP/1.1 2", 10);
    assert_int_equal(buf[10], 'X'); /* nothing written past cap */
    strfmt_put(&f, "more", 4);
    assert_int_equal(f.len, 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers_match_printf),
        cmocka_unit_test(test_int_and_millis_match_printf),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_builder_cuts_instead_of_overflowing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
