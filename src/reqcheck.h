/* reqcheck.h - the strict checks a request head passes before it is routed or forwarded
 * (RFC 9110/9112), independently of the parser that split it (llhttp, in http.c).
 *
 * Nothing of a request reaches a route, and so the upstream, before these checks have
 * passed on its complete head. Pure functions on their arguments; thread-safe. */
#ifndef CERTGATE_REQCHECK_H
#define CERTGATE_REQCHECK_H

#include <stddef.h>
#include <stdint.h>

struct http_request;

/* Checks the head of r (method, target, version, header names and values, Host, framing).
 * Returns 0 when the request is acceptable, else the status to answer before closing the
 * connection, with a sentence in why:
 *   400  malformed: a header name that is not a token, a value with a control character,
 *        a target that is not origin-form or a valid absolute-form, a target with a
 *        control character, space or non-ASCII byte, a malformed %-escape, a '.' or '..'
 *        path segment (also percent-encoded: /%2e%2e/, /.%2E/, and with %2F taken as a
 *        '/': /..%2Fx), a backslash (also %5C) in the path, no Host or more than one (HTTP/1.1), several Content-Length
 *        headers, Content-Length with Transfer-Encoding, Transfer-Encoding in HTTP/1.0,
 *        chunked not the last transfer coding or given twice, the asterisk-form
 *        ("OPTIONS *": no server-wide OPTIONS);
 *   405  CONNECT: no tunnels;
 *   501  a transfer coding other than chunked ("gzip, chunked", "xchunked").
 * On success, *chunked and *content_length (-1 when absent) say the framing as these
 * checks read it (the caller compares them with the parser's). */
int reqcheck_head(const struct http_request *r, int *chunked, int64_t *content_length,
                  char *why, size_t whylen);

/* The path part of a target (up to '?'): NULL when it is clean, else what is wrong with it
 * ("has a '..' segment"). Dot segments are refused, not normalized, so that what certgate
 * routes and what an upstream sees can never differ. */
const char *reqcheck_path(const char *path, size_t len);

/* The line endings of a head, on the raw bytes (the parser accepts obs-fold, and a
 * continuation cut by a read boundary would be invisible in its callbacks): every line
 * ends with CRLF (no bare LF, no CR alone), no line after the request line starts with
 * white space (obs-fold), empty lines before the request line are skipped. Scans the n
 * bytes at p from *state (REQCHECK_SCAN_START where a request starts) and stops at the
 * empty line that ends the head (*state is then REQCHECK_SCAN_DONE; the bytes after it,
 * body or next request, are not looked at). 0, or -1 with a sentence in why. */
#define REQCHECK_SCAN_START 0
#define REQCHECK_SCAN_DONE 5
int reqcheck_scan_lines(uint8_t *state, const char *p, size_t n, char *why, size_t whylen);

/* 1 when the n bytes at s are a token (RFC 9110 5.6.2; n > 0). */
int reqcheck_token(const char *s, size_t n);

#endif
