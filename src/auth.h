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
/* How many tokens exist (-1 when the store cannot be read). */
int auth_token_count(const char *config_dir);

/* Extracts the value of query parameter `name` (percent-decoded) from a query string
 * into buf; 0 when found. */
int auth_query_param(const char *query, const char *name, char *buf, size_t len);

/* The token of an Authorization header value "Api-Token <token>" (scheme
 * case-insensitive, blanks around): a pointer into h and *len its length, or NULL when
 * the value has another form. Exposed for the fuzzer (fuzz/fuzz_auth.c). */
const char *auth_parse_authorization(const char *h, size_t *len);
void auth_cleanup(void);

#endif
