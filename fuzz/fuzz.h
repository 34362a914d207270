/* fuzz.h - what every fuzz target shares: the libFuzzer entry point's prototype, and the
 * assertion macros of tests/unit/memtest.h (cmocka's names) turned into abort(), so that
 * the fuzzers drive connections with the very harness the unit tests use, and every
 * check memtest makes (nothing left open, no timer or post outstanding after a close)
 * becomes a crash the fuzzer reports. */
#ifndef CERTGATE_FUZZ_H
#define CERTGATE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_CHECK(c)                                                                      \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);        \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* cmocka's names, for memtest.h */
#define assert_true(c) FZ_CHECK(c)
#define assert_false(c) FZ_CHECK(!(c))
#define assert_non_null(p) FZ_CHECK((p) != NULL)
#define assert_null(p) FZ_CHECK((p) == NULL)
#define assert_int_equal(a, b) FZ_CHECK((long long)(a) == (long long)(b))
#define print_error(...) fprintf(stderr, __VA_ARGS__)
#define print_message(...) fprintf(stderr, __VA_ARGS__)
#define fail_msg(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr), abort())
#define _fail(file, line) (fprintf(stderr, "%s:%d: failed\n", file, line), abort())
#define skip() abort()

#endif
