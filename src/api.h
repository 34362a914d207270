/* api.h - the certificate REST API of ActiveGate, under
 * /e/{environmentId}/api/v1/certificate/:
 *
 *   PUT    {name}            upload (body = PKCS#12, X-Password), store and activate
 *   POST   {name}/activate   activate a stored file (password as X-Password or JSON)
 *   DELETE {name}            delete a stored, inactive file
 *   GET    list              list stored files; the active one with its description
 *   GET    {name}/list       describe a stored file (password as X-Password or JSON;
 *   POST   {name}/list       both methods)
 *
 * Every request is authenticated first (Api-Token with scope ActiveGateCertManagement
 * for the environment in the path). Certificate operations run in libuv's thread pool,
 * serialized by gw_lock; the event loops never wait for them. */
#ifndef CERTGATE_API_H
#define CERTGATE_API_H

#include "http.h"

#define API_PREFIX "/e/"

/* 1 when path belongs to the certificate API (it then owns every answer). */
int api_match(const char *path);

/* Fills the route for an API request. */
void api_route(const struct http_request *req, const struct gw_snap *snap,
               struct http_route *out);

/* Validates a certificate file name: [A-Za-z0-9._-], 1-128 characters, not starting with
 * '.', not "list". Returns NULL when valid, else the reason. */
const char *api_name_invalid(const char *name, size_t len);

/* The password of a JSON body {"password":"..."}: 0 with *pw (malloc'd; wipe it with
 * secret_free; NULL when out of memory), or 1 when the body is not such an object
 * (*pw NULL). Exposed for the fuzzer (fuzz/fuzz_apijson.c). */
int api_password_json(const char *body, size_t len, char **pw);

#endif
