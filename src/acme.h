/* acme.h - the ACME client (RFC 8555): certificates for [acme] domains obtained, stored
 * and renewed automatically, and served when no custom certificate is active.
 *
 * One dedicated thread (acme_run.c) runs the orders; its network I/O is libcurl's multi
 * interface (acme_http.c) and nothing it does blocks a worker. Workers only read the
 * pending http-01 answers (acme_http01_lookup), under a small mutex.
 *
 * Protocol steps (acme.c): directory -> newNonce -> newAccount (or the stored account)
 * -> newOrder -> authorizations -> challenge -> poll -> finalize (CSR) -> poll ->
 * download; badNonce answers are retried with the fresh nonce (RFC 8555 6.5),
 * Retry-After is honoured, and every problem document is logged with its step. */
#ifndef CERTGATE_ACME_H
#define CERTGATE_ACME_H

#include <stddef.h>
#include <time.h>

#include "conf.h"

struct acme_cert_info;

/* ----- life cycle (main thread) ----- */

/* After gw_open: when [acme] is configured, opens DIR/acme (0700) and hands the stored
 * certificate to the gateway. The configuration is copied (read at start only). 0, or
 * -1 with a sentence (DIR/acme unusable). */
int acme_init(const struct conf_acme *cfg, const char *data_dir, char *err, size_t errlen);
/* Starts the ACME thread (no-op when [acme] is off). */
int acme_start(char *err, size_t errlen);
/* Stops the thread (an order in progress is abandoned) and frees everything. */
void acme_stop(void);

/* `certgate acme status|renew [--data-dir DIR]` (acme_cli.c): argv[0] is the
 * sub-command. Returns the exit status (0, 1 failed, 2 usage). */
int acme_command(int argc, char **argv);

/* ----- for workers and the API (thread-safe) ----- */

/* The tls_hello_hook_fn (tls.h) that serves tls-alpn-01 challenge certificates: a new
 * reference to the challenge context for name when the client offers "acme-tls/1" and
 * such a challenge is pending, else NULL (at once, without a lock, when none is). */
struct ssl_ctx_st;
struct ssl_ctx_st *acme_tls_hello(void *arg, const char *name, const unsigned char *alpn,
                                  size_t alpn_len);
/* 1 when http-01 challenges are answered (routes /.well-known/acme-challenge/). */
int acme_http01_on(void);
/* The key authorization for token into out: 0, or -1 when no such challenge is pending. */
int acme_http01_lookup(const char *token, char *out, size_t outlen);
/* 1 when name (in DIR/ssl) is the certificate [acme] keeps: the API refuses to delete it
 * and lists it with "source":"acme". */
int acme_owns_file(const char *name);

/* The state for `certgate acme status` and the API: {"directory","domains","state"
 * (waiting|ordering|backoff|stopped),"file","notAfter","nextAttempt","lastSuccess",
 * "lastFailure","lastError","failures"} (times as 2026-11-30T10:00:00Z; absent ones
 * left out). New reference, or NULL when [acme] is off. */
struct json_t *acme_status(void);
/* Asks the ACME thread to order a new certificate now (also out of a backoff): 0, or -1
 * when [acme] is off. */
int acme_renew(void);

/* ----- inside the ACME client ----- */

struct acme_http;
struct evp_pkey_st;
struct json_t;

struct acme_client {
    const struct conf_acme *cfg;
    struct acme_http *http;
    struct evp_pkey_st *key; /* the account key */
    char *kid;               /* the account URL, NULL until known */
    struct json_t *dir;      /* the directory object */
    char *nonce;             /* the next nonce, or NULL */
    long retry_after;        /* seconds the CA asked to wait after a failure, -1: none */
    const char *step;        /* the step in progress, for the log */
    unsigned bad_nonces;     /* badNonce answers retried (counted for the log) */
};

/* One complete order for cfg's domains; the result is installed (acme_store_install)
 * and described in *info. 0, or -1 with a sentence naming the step (already logged). */
int acme_order_run(struct acme_client *c, struct acme_cert_info *info, char *err,
                   size_t errlen);

/* RFC 9773: the CA's suggested renewal window for the certificate cert_id (acme_ari.h),
 * from the directory's renewalInfo. 0 with *start < *end, 1 when the CA offers no
 * renewalInfo, -1 with a sentence naming the step. *retry_after: the answer's
 * Retry-After in seconds, or -1. */
int acme_renewal_info(struct acme_client *c, const char *cert_id, time_t *start, time_t *end,
                      long *retry_after, char *err, size_t errlen);
/* The pending challenge answers (acme_run.c): set while a challenge is being validated;
 * for tls-alpn-01 the challenge certificate for name is made here. 0, or -1 + sentence. */
int acme_challenge_set(const char *name, const char *token, const char *keyauth, char *err,
                       size_t errlen);
/* Clears this member's own pending challenges (and, in a fleet, their shared copies). */
void acme_challenge_clear(void);

/* ----- called by acme_fleet.c (the fleet's sync thread) ----- */

/* Another member's pending challenge: add (name, token, keyauth) or remove (token; NULL:
 * all of them). 0, or -1 (logged). */
int acme_challenge_remote(const char *name, const char *token, const char *keyauth, int add);
/* The fleet's certificate info has been installed and is served: the ACME thread renews
 * it from now on (woken). */
void acme_adopt(const struct acme_cert_info *info);
/* The fleet's ACME lock was released or its lease ended: a member waiting for it tries
 * again now. */
void acme_lock_freed(void);

#endif
