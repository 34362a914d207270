/* accesslog.h - one line per answered request.
 *
 *   2026-11-27T09:51:38.123Z 127.0.0.1 "GET /rest/health" 200 142 0.001 -
 *   time, client, method and target, status, bytes sent, seconds, upstream seconds
 *
 * A request whose client went away before the answer was complete is logged too, with
 * the status sent so far, or 499 when none was. The upstream time is "-" for requests
 * that were not forwarded.
 *
 * Query parameters that carry secrets (api-token, password, token) are written as
 * `name=***`. Lines are buffered per thread and written at 16 KiB, or by
 * accesslog_flush() (called from each worker's timer tick), so logging costs no
 * system call per request. Thread-safe. */
#ifndef CERTGATE_ACCESSLOG_H
#define CERTGATE_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

/* "off", "-" (standard output) or a file path (appended to, created 0640).
 * Returns 0, or -1 with a sentence in err. */
int accesslog_open(const char *spec, char *err, size_t errlen);
int accesslog_enabled(void);
/* One request's line. Upstream time: -1 when the request was not forwarded. */
void accesslog_request_up(const char *peer, const char *method, const char *target, int status,
                          uint64_t bytes, uint64_t ms, int64_t upstream_ms);
/* Writes this thread's buffered lines. */
void accesslog_flush(void);
/* Reopens the file (after log rotation; SIGHUP). */
void accesslog_reopen(void);
void accesslog_close(void);

/* Copies target into buf with secret query values masked. */
void accesslog_redact(const char *target, char *buf, size_t len);

#endif
