/* err.h - the project's one error convention: functions return 0 / -1 and put a human
 * sentence in a caller-supplied buffer. */
#ifndef CERTGATE_ERR_H
#define CERTGATE_ERR_H

#include <stddef.h>

/* Formats a sentence into err (nothing when err is NULL or errlen 0); errno is kept as
 * it was, so callers can still test it. Thread-safe. */
void err_set(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
