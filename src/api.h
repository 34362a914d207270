/* api.h - the certificate REST API of ActiveGate, under
 * /e/{environmentId}/api/v1/certificate/:
 *
 *   PUT    {name}            upload (body = PKCS#12, X-Password, or a PEM bundle with
 *                            Content-Type application/x-pem-file), store and activate;
 *                            ?dryRun=true validates only (also for activate)
 *   POST   {name}/activate   activate a stored file (password as X-Password or JSON)
 *   DELETE {name}            delete a stored, inactive file
 *   GET    list              list stored files; the active one with its description
 *   GET    {name}/list       describe a stored file (password as X-Password or JSON;
 *   POST   {name}/list       both methods)
 *
 * Every request is authenticated first (Api-Token with scope ActiveGateCertManagement
 * for the environment in the path). Certificate operations run in libuv's thread pool;
 * the event loops never wait for them. A job decrypts and validates its file (the key
 * derivation, within p12's cost budget) before it takes gw_lock; under the lock it only
 * re-checks the state it validated against (the name is not the active file, the stored
 * file is the one it read), writes and publishes. So a slow upload holds up neither
 * list, describe, other jobs' checks nor a SIGHUP reload. At most [certgate] api-queue
 * jobs are queued or running (process-wide); beyond, 503 with Retry-After. A job whose
 * client has gone before it starts is not started. A fleet member's ?wait=all write keeps
 * its slot while it waits for the other members, but no thread: a timer on the exchange's
 * loop runs one short pool job per look (api_job.h). */
#ifndef CERTGATE_API_H
#define CERTGATE_API_H

#include "http.h"

#define API_PREFIX "/e/"

/* 1 when path belongs to the certificate API (it then owns every answer). */
int api_match(const char *path);

/* An error answer in Dynatrace's envelope ({"error":{"code":N,"message":msg}}); also for
 * requests on API paths refused before routing (http_set_error_router). */
void api_http_error(struct http_exchange *x, int status, const char *msg);

/* Fills the route for an API request. */
void api_route(const struct http_request *req, const struct gw_snap *snap,
               struct http_route *out);

/* Validates a certificate file name: [A-Za-z0-9._-], 1-128 characters, not starting with
 * '.', not "list". Returns NULL when valid, else the reason. */
const char *api_name_invalid(const char *name, size_t len);

/* The password of a JSON body {"password":"..."} (other members are ignored): 0 with
 * *pw malloc'd (wipe and free it with secret_free), or -1 (*pw NULL) when body is not
 * such an object (bad JSON, no "password" string) or memory is short. body need not be
 * NUL-terminated; the parser's own copy of the password is wiped. Thread-safe.
 * (A fuzz target calls it directly.) */
int api_password_from_body(const char *body, size_t len, char **pw);

/* ----- for the API's own files (api_input.c, api_acme.c) ----- */

/* acme/status (GET, HEAD: the ACME client's state as JSON) and acme/renew (POST: order a
 * new certificate now, 202), answered at once (authentication is done). Returns -1 (no
 * answer) when sub is neither. */
int api_acme(struct http_exchange *x, const char *sub);

#define API_MAX_NAME 128

/* Splits /e/{env}/api/v1/certificate[/rest]: 0 with *env, *envlen and *rest (NULL when
 * absent), or -1 when path is not an API path. */
int api_split_path(const char *path, const char **env, size_t *envlen, const char **rest);

/* 1 when a Content-Type names a PEM bundle (application/x-pem-file). */
int api_pem_body(const char *content_type);

/* Builds a PKCS#12 file from a PEM bundle (a private key, decrypted with key_pw when not
 * NULL, and its certificate chain), under a new random password that replaces *pw (the
 * old one is wiped). 0 with *der (free with p12_der_free) and *der_len; else the HTTP
 * status (400, 500) with a sentence in err. Chain-order findings go to warnings. */
struct json_t;
int api_pem_to_p12(const void *body, size_t len, const char *name, const char *key_pw,
                   char **pw, unsigned char **der, size_t *der_len, struct json_t *warnings,
                   char *err, size_t errlen);

/* ----- for api.c: its audit lines (api_audit.c) ----- */

/* One API change, done or refused; empty strings count as absent. */
struct api_audit {
    const char *op, *name, *alias, *token_id, *client, *message;
    const char *sha_before, *sha_after; /* hex; either NULL: the leaf served now, for both */
    int status;
};
/* Records a line of source "api". async 0 waits for the fsync: the thread pool only;
 * async 1 hands it to the audit thread: for a worker's event loop. Thread-safe. */
void api_audit_record(const struct api_audit *a, int async);

#endif
