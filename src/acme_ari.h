/* acme_ari.h - ACME Renewal Information (RFC 9773): the certificate identifier, the
 * renewalInfo answer and the choice of a renewal time inside the CA's window. Pure
 * functions; the request itself is acme_renewal_info (acme.c). */
#ifndef CERTGATE_ACME_ARI_H
#define CERTGATE_ACME_ARI_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct x509_st;

/* The RFC 9773 certID of leaf: base64url(AKI keyIdentifier) "." base64url(serial DER
 * contents, a leading zero kept). 0, or -1 when leaf has no AKI keyIdentifier (no ARI
 * then) or out is too small. */
int acme_ari_cert_id(const struct x509_st *leaf, char *out, size_t outlen);

/* Parses a renewalInfo answer: suggestedWindow.start < suggestedWindow.end (RFC 3339).
 * 0, or -1 with a sentence. */
int acme_ari_parse(const char *body, size_t len, time_t *start, time_t *end, char *err,
                   size_t errlen);

/* A uniformly chosen time inside [start, end] (r: 32 random bits); now when that time has
 * passed (RFC 9773 section 4.2: renew at once). */
time_t acme_ari_pick(time_t start, time_t end, time_t now, uint32_t r);

/* When to poll renewalInfo again: Retry-After seconds (-1: none, then 6 h), kept between
 * one minute and one day (the RFC's advice on unreasonable values). */
long acme_ari_recheck_s(long retry_after);

#endif
