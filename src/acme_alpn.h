/* acme_alpn.h - tls-alpn-01 (RFC 8737): the self-signed challenge certificate and the TLS
 * context that serves it to a validator offering ALPN "acme-tls/1".
 *
 * Thread-safety: acme_alpn_ctx_new has no shared state; a context is immutable once made
 * (shared with SSL_CTX_up_ref). */
#ifndef CERTGATE_ACME_ALPN_H
#define CERTGATE_ACME_ALPN_H

#include <stddef.h>

struct ssl_ctx_st;

/* A context for name whose certificate has name as its only subjectAltName and the
 * critical acmeIdentifier extension (1.3.6.1.5.5.7.1.31) holding SHA-256(keyauth); its
 * ALPN callback selects "acme-tls/1" and refuses any other protocol. NULL + sentence. */
struct ssl_ctx_st *acme_alpn_ctx_new(const char *name, const char *keyauth, char *err,
                                     size_t errlen);

/* 1 when the ALPN list (wire format) offers "acme-tls/1". */
int acme_alpn_offered(const unsigned char *alpn, size_t len);

#endif
