/* proxy.h - forwarding requests to the upstream.
 *
 * Everything that is not a local route is forwarded to [upstream] url: method, path and
 * query unchanged (after the url's path prefix), headers minus hop-by-hop ones, plus
 * X-Forwarded-For/-Proto/-Host; the answer is relayed unchanged (status, headers, body).
 * Bodies stream both ways with bounded memory per connection: reading from one side
 * stops while the other side's buffer is above a high-water mark.
 *
 * The upstream connections, their per-worker pool and the answer's parsing are
 * upclient.c's; this module maps the request and applies the header rules. A pooled connection
 * that turns out broken is retried once on a new connection, for idempotent requests
 * without a body only. Errors: refused -> 502 at once, no answer within read-timeout ->
 * 504, connect-timeout -> 504, no upstream configured -> 503; a client that goes away
 * aborts its upstream request. All functions run on the worker's loop thread. */
#ifndef CERTGATE_PROXY_H
#define CERTGATE_PROXY_H

#include "http.h"

/* Fills the route for a request to forward (snap->upstream may be NULL: 503). */
void proxy_route(const struct http_request *req, const struct gw_snap *snap,
                 struct http_route *out);

#endif
