/* log.h - one line per event on stderr (or a file), with a level.
 *
 * Lines look like `2026-11-27T09:51:38.123Z INFO  message`. Each line is written
 * with a single write(2), so lines from different threads never interleave.
 * Never pass passwords, keys or tokens to these functions. Thread-safe. */
#ifndef CERTGATE_LOG_H
#define CERTGATE_LOG_H

#include <stdarg.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

/* Minimum level printed (default LOG_INFO). */
void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int log_level_parse(const char *s, enum log_level *out);

/* Writes the time now, UTC, as `2026-11-27T09:51:38.123Z` (LOG_TIMESTAMP_LEN characters,
 * no terminator): the start of every log and access-log line. */
#define LOG_TIMESTAMP_LEN 24
void log_timestamp(char *out);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
