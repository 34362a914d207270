/* sni.h - server names: which certificate of the served set answers a TLS server name.
 *
 * A name index maps DNS names and one-label wildcards ("*.example.com") to a slot (the
 * caller's number for a certificate, e.g. a TLS context of the served set). It is built
 * once, beside the snapshot it serves (sni_index_add, then sni_index_seal), and is
 * immutable afterwards: every handshake reads it without a lock.
 *
 * Matching, as RFC 6125 and the browsers do it: the requested name, lower-cased and
 * without one trailing dot, matches an exact name first, then a wildcard whose suffix is
 * the requested name minus its first label ("*.example.com" matches "a.example.com",
 * not "a.b.example.com" nor "example.com"). A name added twice keeps its first slot, so
 * the order of sni_index_add is the order of preference.
 *
 * This module also reads the names a certificate answers for (sni_cert_names) and the
 * server_name extension of a ClientHello (sni_from_hello_ext). */
#ifndef CERTGATE_SNI_H
#define CERTGATE_SNI_H

#include <stddef.h>

struct x509_st;

/* The longest host name (RFC 1035: 253 characters without the trailing dot). */
#define SNI_NAME_MAX 253

struct sni_index;

/* An empty index; NULL when out of memory. */
struct sni_index *sni_index_new(void);
/* Adds name (len bytes, need not be NUL-terminated) for slot. The name is lower-cased;
 * "*." + a host name is a wildcard. Returns 0 when added, 1 when the name is not a host
 * name or a one-label wildcard (ignored: an IP address, "a*.example.com", "*"), -1 when
 * out of memory. Not after sni_index_seal. */
int sni_index_add(struct sni_index *ix, const char *name, size_t len, unsigned slot);
/* Makes the index ready for lookups (sorts it, drops repeated names keeping the first
 * one added). 0 or -1 (out of memory). */
int sni_index_seal(struct sni_index *ix);
/* The slot of the requested name (len bytes as the client sent it), or -1 when nothing
 * matches or the name is not a host name. Thread-safe on a sealed index; no allocation. */
int sni_index_lookup(const struct sni_index *ix, const char *name, size_t len);
/* Names in the index (exact + wildcard), for logs and tests. */
size_t sni_index_size(const struct sni_index *ix);
void sni_index_free(struct sni_index *ix);

/* Copies a host name into out (at least SNI_NAME_MAX + 1 bytes) lower-cased, without one
 * trailing dot, NUL-terminated, and returns its length; -1 when it is not a host name
 * (empty, over SNI_NAME_MAX, an empty or over-long label, a byte other than letters,
 * digits, '-' and '_'). A wildcard is not a host name. */
int sni_normalize(const char *in, size_t len, char *out);

/* The host name of a ClientHello's server_name extension body (ext, len bytes, as
 * SSL_client_hello_get0_ext gives it), normalized into out as sni_normalize does; -1 when
 * there is none, it is malformed or it is not a host name. */
int sni_from_hello_ext(const unsigned char *ext, size_t len, char *out);

/* The names a certificate answers for: its subjectAltName DNS names, or, when it has no
 * DNS name there, the last CN of its subject; lower-cased, host names and one-label
 * wildcards only, repeated ones dropped, in certificate order. *names is a malloc'd
 * NULL-terminated array of malloc'd strings (free with sni_names_free). Returns the count,
 * or -1 when out of memory. */
int sni_cert_names(struct x509_st *cert, char ***names);
void sni_names_free(char **names);

#endif
