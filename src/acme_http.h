/* acme_http.h - the ACME client's HTTPS requests: libcurl's multi interface, driven by the
 * one thread that calls these functions (the ACME thread; never a worker).
 *
 * A request waits in curl_multi_poll, which acme_http_wake interrupts from any thread
 * (the stop); nothing else is shared. Answers are capped at 1 MiB. */
#ifndef CERTGATE_ACME_HTTP_H
#define CERTGATE_ACME_HTTP_H

#include <stddef.h>

struct acme_http;

struct acme_resp {
    long status;         /* HTTP status; 0 when there was no answer */
    char *body;          /* NUL-terminated (also when binary), never NULL after success */
    size_t len;
    char *nonce;         /* Replay-Nonce, or NULL */
    char *location;      /* Location, or NULL */
    char *ctype;         /* Content-Type, or NULL */
    long retry_after;    /* Retry-After in seconds (from a number or a date), -1: none */
};

/* ca_file: PEM bundle that verifies the CA (NULL: the system store). stop: set by another
 * thread (then acme_http_wake) to abandon requests and waits. NULL when out of memory. */
struct acme_http *acme_http_new(const char *ca_file, const _Atomic int *stop);
void acme_http_free(struct acme_http *h);

/* One request: method "GET", "HEAD" or "POST" (body with Content-Type
 * application/jose+json); accept: an Accept header value or NULL. 0 with *r filled
 * (whatever the status), or -1 with a sentence (no connection, TLS failure, timeout,
 * stopped). Free r with acme_resp_free either way. */
int acme_http_do(struct acme_http *h, const char *method, const char *url, const char *body,
                 const char *accept, struct acme_resp *r, char *err, size_t errlen);
void acme_resp_free(struct acme_resp *r);

/* Waits ms milliseconds, or less when woken: returns -1 when *stop is set, else 0. */
int acme_http_sleep(struct acme_http *h, long ms);
/* Wakes a request or sleep of h from another thread. Thread-safe. */
void acme_http_wake(struct acme_http *h);

#endif
