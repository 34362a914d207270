/* test_expiry.c - the expiry warnings' decision: thresholds, once per threshold per
 * certificate, the tightest one after a restart, the sentence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "expiry.h"

#define DAY 86400LL
#define NOW 1796000000LL /* 2026-11-30T00:53:20Z */

static void test_levels(void **state)
{
    (void)state;
    assert_int_equal(expiry_level(NOW, NOW + 31 * DAY), EXPIRY_NONE);
    assert_int_equal(expiry_level(NOW, NOW + 30 * DAY + 1), EXPIRY_NONE);
    assert_int_equal(expiry_level(NOW, NOW + 30 * DAY), EXPIRY_30);
    assert_int_equal(expiry_level(NOW, NOW + 15 * DAY), EXPIRY_30);
    assert_int_equal(expiry_level(NOW, NOW + 14 * DAY), EXPIRY_14);
    assert_int_equal(expiry_level(NOW, NOW + 7 * DAY + 1), EXPIRY_14);
    assert_int_equal(expiry_level(NOW, NOW + 7 * DAY), EXPIRY_7);
    assert_int_equal(expiry_level(NOW, NOW + 2 * DAY), EXPIRY_7);
    assert_int_equal(expiry_level(NOW, NOW + 1 * DAY), EXPIRY_1);
    assert_int_equal(expiry_level(NOW, NOW + 1), EXPIRY_1);
    assert_int_equal(expiry_level(NOW, NOW), EXPIRY_EXPIRED);
    assert_int_equal(expiry_level(NOW, NOW - 5 * DAY), EXPIRY_EXPIRED);
    assert_int_equal(expiry_days(EXPIRY_30), 30);
    assert_int_equal(expiry_days(EXPIRY_14), 14);
    assert_int_equal(expiry_days(EXPIRY_7), 7);
    assert_int_equal(expiry_days(EXPIRY_1), 1);
    assert_int_equal(expiry_days(EXPIRY_NONE), 0);
}

/* once per threshold per certificate; a tighter one is said again */
static void test_once_per_threshold(void **state)
{
    (void)state;
    struct expiry_state st = {0};
    long long na = NOW + 40 * DAY;
    assert_int_equal(expiry_decide(&st, "aaaa", NOW, na), EXPIRY_NONE);
    assert_int_equal(expiry_decide(&st, "aaaa", na - 30 * DAY, na), EXPIRY_30);
    assert_int_equal(expiry_decide(&st, "aaaa", na - 29 * DAY, na), EXPIRY_NONE);
    assert_int_equal(expiry_decide(&st, "aaaa", na - 29 * DAY, na), EXPIRY_NONE);
    assert_int_equal(expiry_decide(&st, "aaaa", na - 13 * DAY, na), EXPIRY_14);
    assert_int_equal(expiry_decide(&st, "aaaa", na - 12 * DAY, na), EXPIRY_NONE);
    /* skipped thresholds (the process was stopped): only the tightest is said */
    assert_int_equal(expiry_decide(&st, "aaaa", na - DAY / 2, na), EXPIRY_1);
    assert_int_equal(expiry_decide(&st, "aaaa", na - 3600, na), EXPIRY_NONE);
    assert_int_equal(expiry_decide(&st, "aaaa", na + 1, na), EXPIRY_EXPIRED);
    assert_int_equal(expiry_decide(&st, "aaaa", na + DAY, na), EXPIRY_NONE);
    /* another certificate has its own state */
    assert_int_equal(expiry_decide(&st, "bbbb", NOW, NOW + 20 * DAY), EXPIRY_30);
    assert_int_equal(expiry_decide(&st, "bbbb", NOW, NOW + 20 * DAY), EXPIRY_NONE);
    expiry_state_free(&st);
    /* a restart (a new state) inside the 7-day threshold: the 7-day warning, once */
    assert_int_equal(expiry_decide(&st, "aaaa", na - 5 * DAY, na), EXPIRY_7);
    assert_int_equal(expiry_decide(&st, "aaaa", na - 5 * DAY, na), EXPIRY_NONE);
    for (int i = 0; i < 100; i++) { /* many certificates: the table grows */
        char sha[17];
        snprintf(sha, sizeof sha, "%016x", i);
        assert_int_equal(expiry_decide(&st, sha, NOW, NOW + DAY), EXPIRY_1);
    }
    for (int i = 0; i < 100; i++) {
        char sha[17];
        snprintf(sha, sizeof sha, "%016x", i);
        assert_int_equal(expiry_decide(&st, sha, NOW, NOW + DAY), EXPIRY_NONE);
    }
    expiry_state_free(&st);
}

static void test_sentences(void **state)
{
    (void)state;
    char buf[600];
    long long na = 1796551200LL; /* 2026-12-06T10:00:00Z */
    expiry_sentence(buf, sizeof buf, na - 6 * DAY - 7200, 0, "CN=host,O=Org", "x.p12", "1",
                    "ab12cd34ef567890", na);
    assert_string_equal(buf, "stored certificate CN=host,O=Org, file x.p12 alias 1, sha256 "
                             "ab12cd34ef567890 expires in 6 days (2026-12-06T10:00:00Z)");
    expiry_sentence(buf, sizeof buf, na - 5 * 3600, 1, "CN=h", "a.p12", "web", "00", na);
    assert_string_equal(buf, "served certificate CN=h, file a.p12 alias web, sha256 00 expires "
                             "in 5 hours (2026-12-06T10:00:00Z)");
    expiry_sentence(buf, sizeof buf, na - 60, 1, "CN=h", "", "", "00", na);
    assert_string_equal(buf, "served certificate CN=h, the default self-signed certificate, "
                             "sha256 00 expires in less than an hour (2026-12-06T10:00:00Z)");
    expiry_sentence(buf, sizeof buf, na + 3 * DAY + 5, 1, "CN=h", "a.p12", "1", "00", na);
    assert_string_equal(buf, "served certificate CN=h, file a.p12 alias 1, sha256 00 expired 3 "
                             "days ago (2026-12-06T10:00:00Z): clients refuse it; activate a "
                             "renewed one");
    expiry_sentence(buf, sizeof buf, na + 10, 0, "CN=h", "a.p12", "1", "00", na);
    assert_string_equal(buf, "stored certificate CN=h, file a.p12 alias 1, sha256 00 expired "
                             "just now (2026-12-06T10:00:00Z)");
    /* a short buffer is cut, not overrun */
    char small[16];
    expiry_sentence(small, sizeof small, na - DAY, 0, "CN=h", "a.p12", "1", "00", na);
    assert_int_equal(strlen(small), sizeof small - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_once_per_threshold),
        cmocka_unit_test(test_sentences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
