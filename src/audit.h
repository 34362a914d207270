/* audit.h - the audit trail of certificate changes: one JSON line per change appended
 * (and fsync'd) to DIR/log/audit.jsonl. Thread-safe. */
#ifndef CERTGATE_AUDIT_H
#define CERTGATE_AUDIT_H

#include <stddef.h>

/* One certificate change. Every string may be NULL (written as null / left out).
 * Never put a password or a token secret in any field. */
struct audit_event {
    const char *source;     /* "api", "reload", "secret-dir", "cli", "start" */
    const char *token_id;   /* the API token's ID (never its secret) */
    const char *client;     /* the client's address */
    const char *op;         /* "upload", "activate", "delete", "reload", "secret-change",
                               "fallback", "import" */
    const char *name;       /* the file name in DIR/ssl (or the secret dir's file) */
    const char *alias;      /* the key entry's alias */
    const char *sha_before; /* hex SHA-256 of the served leaf before the change */
    const char *sha_after;  /* ... and after it (equal when nothing changed) */
    int status;             /* HTTP-like: 200 done, 4xx/5xx refused */
    const char *message;    /* one sentence: what happened or why it was refused */
};

/* Opens (creating, 0700/0600) DIR/log/audit.jsonl for appending. 0, or -1 with a
 * sentence. Until it is called (or after audit_close) audit_record does nothing. */
int audit_open(const char *data_dir, char *err, size_t errlen);

/* Appends one line and fsyncs it. A write error is logged (once per minute), never
 * fatal: the change itself has happened. */
void audit_record(const struct audit_event *ev);

void audit_close(void);

#endif
