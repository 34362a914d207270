/* acme_jws.h - the cryptography of ACME (RFC 8555): account and certificate keys, JWK and
 * its thumbprint (RFC 7638), JWS in flattened JSON (ES256, RS256), External Account
 * Binding (HS256), key authorizations and the CSR.
 *
 * Keys are opaque (OpenSSL's EVP_PKEY); strings returned are malloc'd and owned by the
 * caller; errors are sentences in err. Thread-safe: no shared state. */
#ifndef CERTGATE_ACME_JWS_H
#define CERTGATE_ACME_JWS_H

#include <stddef.h>

struct evp_pkey_st;
struct json_t;

/* base64url without padding of n bytes; malloc'd, or NULL when memory is short. */
char *acme_b64url(const void *p, size_t n);
/* Decodes base64url (padding '=' allowed, also standard base64's + and /): 0 with *out
 * (malloc'd, free it; wipe it when secret) and *outlen, or -1. */
int acme_b64url_decode(const char *s, unsigned char **out, size_t *outlen);

/* A new key: key_type is enum conf_acme_key (0 ECDSA P-256, 1 RSA 2048). NULL on error. */
struct evp_pkey_st *acme_key_new(int key_type, char *err, size_t errlen);
/* The key as unencrypted PKCS#8 PEM (malloc'd; wipe it), and back. */
char *acme_key_to_pem(struct evp_pkey_st *k, size_t *len);
struct evp_pkey_st *acme_key_from_pem(const char *pem, size_t len, char *err, size_t errlen);
void acme_key_free(struct evp_pkey_st *k);

/* The public JWK of k (EC P-256 or RSA): {"crv","kty","x","y"} or {"e","kty","n"}. */
struct json_t *acme_jwk(struct evp_pkey_st *k);
/* RFC 7638 thumbprint: base64url(SHA-256(canonical JWK)); malloc'd. */
char *acme_thumbprint(struct evp_pkey_st *k);
/* "<token>.<thumbprint>" (RFC 8555 8.1); malloc'd. */
char *acme_keyauth(const char *token, struct evp_pkey_st *account);

/* A JWS in flattened JSON serialization: protected {"alg","nonce","url"} plus "kid" when
 * kid is not NULL, else "jwk"; payload is the exact payload text ("" for POST-as-GET).
 * ES256 signatures are R||S (64 bytes), RS256 PKCS#1 v1.5. malloc'd JSON text, or NULL
 * with a sentence. */
char *acme_jws(struct evp_pkey_st *k, const char *kid, const char *nonce, const char *url,
               const char *payload, char *err, size_t errlen);

/* The externalAccountBinding object of a newAccount request (RFC 8555 7.3.4): a JWS with
 * protected {"alg":"HS256","kid":eab_kid,"url":url} over the account's JWK, MACed with
 * the base64url hmac_key. New reference, or NULL with a sentence (the key is never
 * quoted). */
struct json_t *acme_eab(struct evp_pkey_st *account, const char *eab_kid, const char *hmac_key,
                        const char *url, char *err, size_t errlen);

/* A CSR for names (n DNS names as subjectAltNames, the first also as CN), signed with
 * certkey (SHA-256); base64url DER, malloc'd, or NULL with a sentence. */
char *acme_csr(struct evp_pkey_st *certkey, char *const *names, unsigned n, char *err,
               size_t errlen);

#endif
