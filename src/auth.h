/* auth.h - API tokens, in Dynatrace's format and with its rules.
 *
 * A token is `dt0c01.<24 chars>.<64 chars>` (upper-case base32). Its public part
 * `dt0c01.<24 chars>` is the token's ID, shown by `certgate token list`. The store,
 * DIR/config/tokens.json (mode 0600, replaced atomically), keeps for each token its ID,
 * name, environment, scopes, creation time and the SHA-256 of the whole token; never
 * the secret itself. The gateway notices changes of the file at the next request
 * (stat), so tokens created or revoked by the CLI apply without a restart.
 *
 * Thread-safe: the cached store is guarded by a mutex. */
#ifndef CERTGATE_AUTH_H
#define CERTGATE_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define AUTH_SCOPE_CERTS "ActiveGateCertManagement"
#define AUTH_TOKENS_FILE "tokens.json"

enum auth_result {
    AUTH_OK = 0,
    AUTH_MISSING,   /* 401: no token in the request */
    AUTH_MALFORMED, /* 401: an Authorization header that is not "Api-Token <token>" */
    AUTH_UNKNOWN,   /* 401: no such token (or revoked) */
    AUTH_WRONG_ENV, /* 401: the token belongs to another environment */
    AUTH_NO_SCOPE,  /* 403: the token lacks the scope */
    AUTH_ERROR      /* 500: the store cannot be read */
};

/* Checks a request's credentials: `authorization` is the Authorization header (or NULL),
 * `query_token` the api-token query parameter (or NULL). On failure msg gets the sentence
 * for Dynatrace's error envelope. Comparison of secrets is constant-time. */
enum auth_result auth_check(const char *config_dir, const char *authorization,
                            const char *query_token, const char *environment,
                            const char *scope, char *msg, size_t msglen);

/* Parses an Authorization header value "Api-Token <token>" (scheme case-insensitive,
 * spaces or tabs around the token, nothing after it). Returns a pointer to the token
 * inside h and its length in *len, or NULL when the header has another form. h must be
 * NUL-terminated; nothing is allocated or copied. (A fuzz target calls it directly.) */
const char *auth_parse_authorization(const char *h, size_t *len);

/* The ID (public part, `dt0c01.<24 chars>`) of the token a request presents, as
 * auth_check finds it (the Authorization header, else query_token), into out; "" when
 * it has no token of that form. Never copies the secret part. */
void auth_token_id(const char *authorization, const char *query_token, char *out,
                   size_t outlen);

/* HTTP status of a result (200, 401, 403, 500). */
int auth_status(enum auth_result r);

/* Creates a token; *token gets it (malloc'd; print it once and wipe it with
 * secret_free). scopes: NULL-terminated. */
int auth_token_create(const char *config_dir, const char *environment, const char *const *scopes,
                      const char *name, char **token, char *err, size_t errlen);
/* Prints one line per token (ID, name, environment, scopes, created), never secrets. */
int auth_token_list(const char *config_dir, FILE *out, char *err, size_t errlen);
/* Revokes by ID (`dt0c01.XXXX`, or the 24-char public part, or the whole token). */
int auth_token_revoke(const char *config_dir, const char *id, char *err, size_t errlen);
/* Reads the store as the gateway will (at start): 0, or -1 with the sentence when it
 * cannot be used, e.g. because its mode lets other users read it (anything but 0600;
 * the gateway refuses such a store rather than repairing it: the operator decides). */
int auth_store_check(const char *config_dir, char *err, size_t errlen);
/* How many tokens exist (-1 when the store cannot be read). */
int auth_token_count(const char *config_dir);

/* Extracts the value of query parameter `name` (percent-decoded) from a query string
 * into buf; 0 when found. */
int auth_query_param(const char *query, const char *name, char *buf, size_t len);

void auth_cleanup(void);

/* ----- throttling of failed authentications (auth_throttle.c) -----
 *
 * Per client address, at most `budget` failed authentications (any 401 or 403) per
 * window: the failure that uses up the budget locks the address until the window that
 * began with its first failure ends; until then every API request from it gets 429
 * with Retry-After, whatever its token (so a locked address learns nothing about
 * tokens). IPv4 addresses count one by one; IPv6 addresses by /64 prefix (one client
 * usually holds a whole /64). The table has a fixed number of entries in sets of 8; a
 * new address takes a free entry of its set or evicts the least recently used one.
 * Log: one line when an address gets locked and one summary of the requests refused,
 * at most one line per address per window (auth_throttle_tick reports what is left).
 * Thread-safe: one mutex per table; configure may run at any time (atomics). */
#define AUTH_THROTTLE_ENTRIES 4096
#define AUTH_THROTTLE_BUDGET 20        /* failures per window, by default */
#define AUTH_THROTTLE_WINDOW_MS 60000u /* the window, by default */

struct auth_throttle;
/* A table of `entries` (rounded up to a multiple of 8), with the default budget and
 * window; NULL when out of memory. */
struct auth_throttle *auth_throttle_new(size_t entries);
void auth_throttle_free(struct auth_throttle *t);
/* budget 0 turns throttling off; window_ms 0 means the default. */
void auth_throttle_configure(struct auth_throttle *t, unsigned budget, unsigned window_ms);
/* Before authenticating a request from addr (textual IPv4 or IPv6 address; anything
 * else is never throttled): 1 when it must be refused with 429, *retry_after_s then
 * being the seconds until the address may try again (at least 1); else 0. */
int auth_throttle_check(struct auth_throttle *t, const char *addr, uint64_t now_ms,
                        unsigned *retry_after_s);
/* Records a failed authentication from addr. */
void auth_throttle_failed(struct auth_throttle *t, const char *addr, uint64_t now_ms);
/* Writes the log lines due (refusals not yet reported); call it about once a second. */
void auth_throttle_tick(struct auth_throttle *t, uint64_t now_ms);
/* Entries in use, and the table's size (tests). */
size_t auth_throttle_used(struct auth_throttle *t);
size_t auth_throttle_capacity(const struct auth_throttle *t);
/* The gateway's table, made at the first call (NULL when out of memory). */
struct auth_throttle *auth_throttle_shared(void);
/* CLOCK_MONOTONIC in milliseconds. */
uint64_t auth_now_ms(void);

#endif
