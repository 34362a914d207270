/* tls.h - TLS contexts, their live publication, session tickets, and TLS I/O.
 *
 * This is the only module besides p12/defcert that includes OpenSSL headers; the rest
 * of certgate sees `struct ssl_ctx_st` and `struct ssl_st` as opaque pointers.
 *
 * A server context is built completely on the side (tls_server_ctx_new) and then
 * published inside a gateway snapshot (see gw.h); a connection's SSL object holds a
 * reference to the context it was accepted with, so a switch never disturbs it.
 *
 * Session resumption: TLS 1.3 and 1.2 tickets are encrypted with a process-wide key
 * ring (AES-256-CBC + HMAC-SHA256) rotated in memory every TLS_TICKET_ROTATE_S seconds;
 * the two previous keys still decrypt. Because the ring is shared by all contexts,
 * tickets stay valid across certificate switches. TLS 1.2 session IDs use OpenSSL's
 * per-context cache. */
#ifndef CERTGATE_TLS_H
#define CERTGATE_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct ssl_ctx_st;
struct ssl_st;
struct p12_entry;

#define TLS_TICKET_ROTATE_S 3600

struct tls_server_opts {
    unsigned versions;             /* TLS_V12 | TLS_V13 (conf.h) */
    char *const *excluded_ciphers; /* NULL-terminated substrings, may be NULL */
    int session_cache;             /* 1: TLS 1.2 session-ID cache on */
    int session_tickets;           /* 1: tickets on */
    /* NULL-terminated substrings, may be NULL or empty (all built-in ciphers): only the
     * built-in ciphers whose OpenSSL or IANA name contains one are offered, before
     * excluded_ciphers is applied */
    char *const *included_ciphers;
};

/* Process-wide set-up: providers (legacy + default), the ticket key ring. Call once
 * before any other function. Returns 0, or -1 with a sentence in err. */
int tls_global_init(char *err, size_t errlen);
void tls_global_cleanup(void);

/* Builds a server context serving the key entry e (leaf + chain) with opts: TLS 1.2/1.3
 * only, Mozilla "intermediate" ciphers (narrowed to the included substrings when there are
 * any) minus the excluded substrings (both matched against
 * OpenSSL and IANA names, case-insensitively), server preference, ALPN http/1.1,
 * released idle buffers. NULL with a sentence in err on failure (e.g. "excluded-ciphers
 * leaves no cipher for TLSv1.3"). The context is the caller's (one reference). */
struct ssl_ctx_st *tls_server_ctx_new(const struct tls_server_opts *opts,
                                      const struct p12_entry *e, char *err, size_t errlen);
/* Checks opts alone (cipher exclusions), for configuration validation. */
int tls_check_opts(const struct tls_server_opts *opts, char *err, size_t errlen);
void tls_ctx_unref(struct ssl_ctx_st *ctx);

/* ----- the served set (tls_served.c) -----
 *
 * A snapshot serves a set of certificates: one context per certificate, or per RSA +
 * ECDSA (or other key-type) pair of certificates for the same names, which share one
 * context so that OpenSSL picks by the client's signature algorithms and cipher suites.
 * Connections are created with the front context (the default entry's); its ClientHello
 * callback looks the server name up in the set's name index (sni.h: exact, then one-label
 * wildcard) and moves the connection to the chosen context with SSL_set_SSL_CTX before
 * OpenSSL looks at sessions or certificates. Each context has its own session id
 * context (the SHA-256 of its leaf, or of its leaves' hashes for a pair), so a session
 * made under one certificate never resumes under another. */

/* Receives a sentence about an entry that is not served (why), for the API's warnings. */
typedef void (*tls_note_fn)(void *arg, const char *sentence);

/* Builds the served set of entries[0..n-1]: entries[0] is the default (no server name, or
 * no match) and must serve, else NULL with the reason in err; the others, in order of
 * preference (the first one added wins a name two entries share), from any source (the
 * active file's other key entries; later, certificates obtained by ACME). An other entry
 * that is expired, names no host, cannot be served by TLS, or repeats the names and key
 * type of an earlier one is left out with a sentence to note (NULL: logged as a warning).
 * A set of one context has no callback (no cost per handshake) unless a hello hook is
 * set. Returns the front context (one reference; the set lives as long as it does). The
 * entries are not needed after the call. */
struct ssl_ctx_st *tls_served_new(const struct tls_server_opts *opts,
                                  const struct p12_entry *const *entries, size_t n,
                                  tls_note_fn note, void *note_arg, char *err, size_t errlen);
/* Contexts in the set of front (1 for a context not made by tls_served_new). */
size_t tls_served_count(struct ssl_ctx_st *front);
/* The context a handshake with server name `name` (NULL: none) gets from the index
 * (borrowed; front itself for the default), as the ClientHello callback picks it. */
struct ssl_ctx_st *tls_served_pick(struct ssl_ctx_st *front, const char *name);

/* A source of certificates outside the snapshots, asked first in every ClientHello
 * callback (on the worker thread; it must not block): e.g. ACME's tls-alpn-01 challenge
 * certificates (RFC 8737), for a client that offers "acme-tls/1". name: the normalized
 * server name, "" when none or not a host name; alpn: the client's ALPN protocol list in
 * wire format (NULL, 0 when none). Returns a context to serve this handshake with (a new
 * reference, which the callback gives to the connection; its own ALPN callback must then
 * select "acme-tls/1"), or NULL to let the name index choose. Set it once, before the
 * first snapshot is built (a set of one context gets the callback only when a hook is
 * set) and before workers start; fn NULL removes it. */
typedef struct ssl_ctx_st *(*tls_hello_hook_fn)(void *arg, const char *name,
                                                const unsigned char *alpn, size_t alpn_len);
void tls_set_hello_hook(tls_hello_hook_fn fn, void *arg);
struct x509_st;
#define TLS_SHA256_HEX_LEN 64
/* The lower-case hex SHA-256 of cert's DER (what `openssl x509 -fingerprint -sha256`
 * shows, without colons) into out (TLS_SHA256_HEX_LEN + 1 bytes): 0, or -1 with out "". */
int tls_cert_sha256_hex(struct x509_st *cert, char *out);
/* The same for the leaf certificate that ctx serves. Thread-safe (ctx is not changed). */
int tls_ctx_leaf_sha256_hex(struct ssl_ctx_st *ctx, char *out);

/* Rotates the ticket key ring (called from a timer of the main loop). Thread-safe. */
void tls_tickets_rotate(void);

/* ----- connections ----- */

enum tls_io {
    TLS_IO_OK = 0,     /* progress was made */
    TLS_IO_WANT_READ,  /* wait until the socket is readable */
    TLS_IO_WANT_WRITE, /* wait until the socket is writable */
    TLS_IO_EOF,        /* the peer closed (close_notify or TCP FIN) */
    TLS_IO_ERROR       /* protocol or socket error; close the connection */
};

/* A server-side TLS connection on a connected non-blocking socket. NULL when out of
 * memory. The SSL holds its own reference to ctx. */
struct ssl_st *tls_conn_new(struct ssl_ctx_st *ctx, int fd);
void tls_conn_free(struct ssl_st *ssl);

/* Drives the handshake. TLS_IO_OK when complete. */
enum tls_io tls_conn_handshake(struct ssl_st *ssl);
/* Reads up to len bytes; *n gets the count when TLS_IO_OK. With ssl NULL, reads the
 * plain socket fd with the same answers (EAGAIN: TLS_IO_WANT_READ, end: TLS_IO_EOF). */
enum tls_io tls_conn_read(struct ssl_st *ssl, int fd, void *buf, size_t len, size_t *n);
/* Writes up to len bytes (partial writes allowed); *n gets the count when TLS_IO_OK.
 * After TLS_IO_WANT_*, repeat the call with the same buffer start. With ssl NULL, writes
 * the plain socket fd (EAGAIN: TLS_IO_WANT_WRITE). */
enum tls_io tls_conn_write(struct ssl_st *ssl, int fd, const void *buf, size_t len, size_t *n);
/* 1 when decrypted or read-ahead bytes wait inside OpenSSL (invisible to epoll). */
int tls_conn_pending(struct ssl_st *ssl);
/* Sends close_notify (best effort, never blocks). */
void tls_conn_shutdown(struct ssl_st *ssl);
/* 1 when the handshake resumed a session. */
int tls_conn_resumed(struct ssl_st *ssl);
/* The last OpenSSL error queue entry as text (and clears the queue); for debug logs. */
void tls_last_error(char *buf, size_t len);


/* ----- client side (HTTPS upstreams) ----- */

struct ssl_session_st;

/* A client context: TLS 1.2+, peer verification against ca_file (PEM bundle) or the
 * system store when ca_file is NULL; verify == 0 turns verification off. Sessions are
 * handed to the slot given to tls_client_conn_new (for resumption). */
struct ssl_ctx_st *tls_client_ctx_new(const char *ca_file, int verify, char *err, size_t errlen);

/* A client connection on a connecting non-blocking socket: SNI and host-name check for
 * host (an IP address is checked as such, without SNI). When *session_slot holds a
 * session it is offered for resumption; new sessions from the server are stored there
 * (the previous one freed). The slot must outlive the connection. */
struct ssl_st *tls_client_conn_new(struct ssl_ctx_st *ctx, int fd, const char *host,
                                   int host_is_ip, struct ssl_session_st **session_slot);
/* Why verification failed ("hostname mismatch", ...), or NULL when it did not. */
const char *tls_conn_verify_error(struct ssl_st *ssl);
void tls_session_free(struct ssl_session_st *s);

#endif
