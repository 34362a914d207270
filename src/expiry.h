/* expiry.h - expiry warnings: the log says so at 30, 14, 7 and 1 day(s) before the
 * served certificate or a stored one (the gauges' table: metrics_certs.c, fed by
 * certmeta.c) expires, once per threshold per certificate (key: its SHA-256), and again
 * after a restart when a certificate is already inside a threshold (the tightest one
 * reached); an expired certificate is logged as an error, once.
 *
 * The check runs on the main loop only: at start, every hour and soon after
 * expiry_poke() (called at every activation, reload, upload and describe). */
#ifndef CERTGATE_EXPIRY_H
#define CERTGATE_EXPIRY_H

#include <stddef.h>

struct uv_loop_s;

enum expiry_level { EXPIRY_NONE, EXPIRY_30, EXPIRY_14, EXPIRY_7, EXPIRY_1, EXPIRY_EXPIRED };

/* The tightest threshold reached at `now` by a certificate valid until not_after. */
enum expiry_level expiry_level(long long now, long long not_after);
/* The threshold's days (30, 14, 7, 1; 0 for NONE and EXPIRED). */
int expiry_days(enum expiry_level l);

/* What has been warned of: SHA-256 prefix -> the tightest level logged. */
struct expiry_state {
    struct expiry_seen {
        char sha[17];
        enum expiry_level level;
    } *seen;
    size_t n, cap;
};

/* The decision: the level to log now for certificate sha (EXPIRY_NONE: nothing), and
 * records it in st. A level is logged once; a tighter one later is logged again. */
enum expiry_level expiry_decide(struct expiry_state *st, const char *sha, long long now,
                                long long not_after);
void expiry_state_free(struct expiry_state *st);

/* The log sentence, e.g. "stored certificate CN=host, file x.p12 alias 1, sha256
 * ab12cd34ef567890 expires in 6 days (2026-12-06T10:00:00Z)"; file "" is the default
 * certificate. */
void expiry_sentence(char *buf, size_t len, long long now, int served, const char *subject,
                     const char *file, const char *alias, const char *sha, long long not_after);

/* Checks every known certificate at `now` and logs what is due (main thread). */
void expiry_run(long long now);

/* Starts the hourly timer (first run at once) and the wake-up on loop; stop closes them. */
int expiry_start(struct uv_loop_s *loop);
void expiry_stop(void);
/* Asks for a check soon (thread-safe; nothing before expiry_start or after expiry_stop). */
void expiry_poke(void);
/* Frees the state (at exit, after the loop ended). */
void expiry_free(void);

#endif
