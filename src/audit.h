/* audit.h - the audit trail of certificate changes: one JSON line per change appended
 * (and fsync'd) to DIR/log/audit.jsonl, rotated by size into audit.jsonl.1 (the newest
 * rotated file) .. audit.jsonl.N (the oldest). Thread-safe.
 *
 * A line is written with one write(2) under a mutex and, across processes (the gateway
 * and `certgate cert import`), under flock(2) on the DIR/log folder, so lines never
 * interleave; rotation happens under the same locks, between two lines, so it never
 * splits or loses one. A crash (kill -9, power loss) can at worst leave the last line
 * incomplete: the next audit_open ends it with a newline so that later lines stay whole,
 * and the reader (audit_read.c) reports such a line and skips it. */
#ifndef CERTGATE_AUDIT_H
#define CERTGATE_AUDIT_H

#include <stddef.h>
#include <stdio.h>
#include <time.h>

/* One certificate change. Every string may be NULL (written as null / left out).
 * Never put a password or a token secret in any field. */
struct audit_event {
    const char *source;     /* "api", "reload", "secret-dir", "cli", "start" */
    const char *token_id;   /* the API token's ID (never its secret) */
    const char *client;     /* the client's address */
    const char *op;         /* "upload", "activate", "delete", "reload", "secret-change",
                               "fallback", "import", "start" */
    const char *name;       /* the file name in DIR/ssl (or the secret dir's file) */
    const char *alias;      /* the key entry's alias */
    const char *sha_before; /* hex SHA-256 of the served leaf before the change */
    const char *sha_after;  /* ... and after it (equal when nothing changed) */
    int status;             /* HTTP-like: 200 done, 4xx/5xx refused */
    const char *message;    /* one sentence: what happened or why it was refused */
    /* added after the first version; zero-initialized callers need not know them */
    const char *user;       /* the local user who ran a command (source "cli"); written
                               only when set */
};

#define AUDIT_DIR "log"
#define AUDIT_FILE "audit.jsonl"
#define AUDIT_MAX_BYTES_DEFAULT (10u << 20) /* [certgate] audit-max-size */
#define AUDIT_KEEP_DEFAULT 5                /* [certgate] audit-files */
#define AUDIT_KEEP_MAX 100

/* Opens (creating, 0700/0600) DIR/log/audit.jsonl for appending. 0, or -1 with a
 * sentence. Until it is called (or after audit_close) audit_record does nothing. */
int audit_open(const char *data_dir, char *err, size_t errlen);

/* Rotation: before a line would make the file larger than max_bytes, audit.jsonl.K
 * becomes audit.jsonl.K+1 (audit.jsonl.keep is dropped) and audit.jsonl becomes
 * audit.jsonl.1. keep is 1 to AUDIT_KEEP_MAX. May be called at any time. */
void audit_configure(size_t max_bytes, unsigned keep);

/* Appends one line and fsyncs it (and the folder after a rotation) before returning,
 * so it blocks for a disk flush: call it from the thread pool, the main thread or a
 * command, never from a worker's event loop (use audit_record_async there). A write
 * error is logged (once per minute), never fatal: the change itself has happened. */
void audit_record(const struct audit_event *ev);

/* Like audit_record, but the line is made now and written (with its fsync) by the
 * audit thread (started at the first call); returns without waiting. For refusals
 * decided on an event loop. audit_close writes what is queued before it returns. */
void audit_record_async(const struct audit_event *ev);

/* Writes what is queued, stops the audit thread, closes the file. */
void audit_close(void);

/* The JSON line of ev, with its time and a final '\n' (malloc'd; NULL when out of
 * memory). Fields in a fixed order: time, source, tokenId, client, operation, name,
 * alias, sha256Before, sha256After, status, message[, user]. */
char *audit_format(const struct audit_event *ev);

/* ----- reading the trail (audit_read.c) ----- */

/* Parses a --since value into milliseconds since the epoch: an RFC 3339 time
 * ("2026-11-30T09:00:00Z", fractions and +hh:mm / -hh:mm offsets allowed), a date
 * ("2026-11-30", midnight UTC), or a duration before now_ms ("90s", "15m", "24h",
 * "7d"). 0, or -1 when s is none of these. */
int audit_parse_since(const char *s, long long now_ms, long long *out_ms);

/* Parses an RFC 3339 time (as above, without dates alone or durations) into ms. */
int audit_parse_time(const char *s, long long *out_ms);

/* Prints the trail of data_dir oldest first across the rotated files: the raw lines
 * (json) or one readable line per event, only events at or after since_ms (0: all).
 * Corrupt or incomplete lines are reported on errs and skipped. Reads only (a shared
 * flock on DIR/log while the files are opened). 0, 1 when nothing can be read (err). */
int audit_print(const char *data_dir, long long since_ms, int json, FILE *out, FILE *errs,
                char *err, size_t errlen);

/* `certgate audit ARGS...`: exit status 0, 1 (cannot read), 2 (usage). */
int audit_command(int argc, char **argv);

#endif
