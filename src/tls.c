/* tls.c - server TLS contexts, the ticket key ring and TLS I/O (see tls.h). */
#include "tls.h"

#include "conf.h"
#include "err.h"
#include "log.h"
#include "p12.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

/* Mozilla "intermediate" configuration (v5.7) */
static const char MOZ_TLS12_CIPHERS[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";
static const char MOZ_TLS13_SUITES[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
static const char GROUPS[] = "X25519:P-256:P-384";
static const unsigned char ALPN_HTTP11[] = "\x08http/1.1"; /* what we speak, as ALPN wants it */

/* ----- ticket key ring ----- */

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

#define TICKET_KEYS 3 /* [0] encrypts; all decrypt */
static struct ticket_key ticket_ring[TICKET_KEYS];
static int ticket_count;
static pthread_rwlock_t ticket_lock = PTHREAD_RWLOCK_INITIALIZER;
static EVP_CIPHER *ticket_cipher; /* fetched once, not per ticket */

static int ticket_key_new(struct ticket_key *k)
{
    return RAND_bytes((unsigned char *)k, sizeof *k) == 1 ? 0 : -1;
}

void tls_tickets_rotate(void)
{
    struct ticket_key k;
    if (ticket_key_new(&k) != 0) {
        log_error("session tickets: could not draw a new key; keeping the current one");
        return;
    }
    pthread_rwlock_wrlock(&ticket_lock);
    OPENSSL_cleanse(&ticket_ring[TICKET_KEYS - 1], sizeof ticket_ring[0]);
    memmove(&ticket_ring[1], &ticket_ring[0], sizeof ticket_ring[0] * (TICKET_KEYS - 1));
    ticket_ring[0] = k;
    if (ticket_count < TICKET_KEYS) ticket_count++;
    pthread_rwlock_unlock(&ticket_lock);
    OPENSSL_cleanse(&k, sizeof k);
}

static int set_hmac_key(EVP_MAC_CTX *mctx, const unsigned char *key)
{
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(mctx, key, 32, params);
}

/* OpenSSL's ticket callback: 1 = ok, 2 = ok but renew the ticket, 0 = unknown key
 * (full handshake), -1 = error. */
static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[16],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *mctx, int enc)
{
    int ret = -1;
    pthread_rwlock_rdlock(&ticket_lock);
    if (enc) {
        const struct ticket_key *k = &ticket_ring[0];
        if (RAND_bytes(iv, 16) == 1 && EVP_EncryptInit_ex(cctx, ticket_cipher, NULL, k->aes, iv) &&
            set_hmac_key(mctx, k->hmac)) {
            memcpy(key_name, k->name, 16);
            ret = 1;
        }
    } else {
        ret = 0;
        for (int i = 0; i < ticket_count; i++) {
            const struct ticket_key *k = &ticket_ring[i];
            if (CRYPTO_memcmp(key_name, k->name, 16) != 0) continue;
            if (EVP_DecryptInit_ex(cctx, ticket_cipher, NULL, k->aes, iv) &&
                set_hmac_key(mctx, k->hmac))
                /* 2 = renew: a TLS 1.3 client uses a ticket once, so it needs a new one
                 * after every resumption; a ticket of an older key is renewed too */
                ret = (i == 0 && SSL_version(ssl) != TLS1_3_VERSION) ? 1 : 2;
            else
                ret = -1;
            break;
        }
    }
    pthread_rwlock_unlock(&ticket_lock);
    return ret;
}

int tls_global_init(char *err, size_t errlen)
{
    char perr[256];
    if (p12_init(perr, sizeof perr) != 0) log_warn("%s", perr);
    ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    if (!ticket_cipher) {
        err_set(err, errlen, "OpenSSL has no AES-256-CBC; cannot encrypt session tickets");
        return -1;
    }
    tls_tickets_rotate(); /* the ring fills as the keys rotate */
    return 0;
}

void tls_global_cleanup(void)
{
    pthread_rwlock_wrlock(&ticket_lock);
    OPENSSL_cleanse(ticket_ring, sizeof ticket_ring);
    ticket_count = 0;
    pthread_rwlock_unlock(&ticket_lock);
    EVP_CIPHER_free(ticket_cipher);
    ticket_cipher = NULL;
}

/* ----- contexts ----- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ALPN_HTTP11, sizeof ALPN_HTTP11 - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no ALPN: HTTP/1.1 is assumed anyway */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* 1 when the OpenSSL or IANA (Java) name of c contains one of the substrings of list */
static int cipher_matches(const SSL_CIPHER *c, char *const *list)
{
    if (!list) return 0;
    const char *names[2] = {SSL_CIPHER_get_name(c), SSL_CIPHER_standard_name(c)};
    for (char *const *x = list; *x; x++)
        for (int i = 0; i < 2; i++)
            if (names[i] && strcasestr(names[i], *x)) return 1;
    return 0;
}

/* Applies the cipher lists to ctx: the built-in ones, narrowed to included-ciphers when
 * it is set, minus excluded-ciphers (Jetty's order: include, then exclude). */
static int apply_ciphers(SSL_CTX *ctx, const struct tls_server_opts *o, char *err, size_t errlen)
{
    if (!SSL_CTX_set_cipher_list(ctx, MOZ_TLS12_CIPHERS) ||
        !SSL_CTX_set_ciphersuites(ctx, MOZ_TLS13_SUITES)) {
        err_set(err, errlen, "OpenSSL refused the built-in cipher list");
        return -1;
    }
    char l12[1024] = "", l13[512] = "";
    STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);
    for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
        const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
        int included = !o->included_ciphers || !o->included_ciphers[0] ||
                       cipher_matches(c, o->included_ciphers);
        if (!included || cipher_matches(c, o->excluded_ciphers)) continue;
        int v13 = strcmp(SSL_CIPHER_get_version(c), "TLSv1.3") == 0;
        char *l = v13 ? l13 : l12;
        size_t cap = v13 ? sizeof l13 : sizeof l12;
        size_t used = strlen(l);
        snprintf(l + used, cap - used, "%s%s", used ? ":" : "", SSL_CIPHER_get_name(c));
    }
    const char *v = (o->versions & TLS_V12) && !l12[0]   ? "TLSv1.2"
                    : (o->versions & TLS_V13) && !l13[0] ? "TLSv1.3"
                                                         : NULL;
    if (v && o->included_ciphers && o->included_ciphers[0]) {
        err_set(err, errlen,
                "included-ciphers%s leave%s no cipher for %s; include one of its ciphers "
                "(e.g. %s)%s or remove %s from ssl-protocols",
                o->excluded_ciphers && o->excluded_ciphers[0] ? " and excluded-ciphers" : "",
                o->excluded_ciphers && o->excluded_ciphers[0] ? "" : "s", v,
                v[6] == '3' ? "TLS_AES_128_GCM_SHA256" : "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                o->excluded_ciphers && o->excluded_ciphers[0] ? ", exclude less" : "", v);
        return -1;
    }
    if (v) {
        err_set(err, errlen,
                "excluded-ciphers leaves no cipher for %s; exclude less or remove "
                "%s from ssl-protocols", v, v);
        return -1;
    }
    /* an empty TLS 1.2 list is not accepted by OpenSSL; the version is off anyway */
    if ((l12[0] && !SSL_CTX_set_cipher_list(ctx, l12)) || !SSL_CTX_set_ciphersuites(ctx, l13)) {
        err_set(err, errlen, "OpenSSL refused the cipher list after exclusions");
        return -1;
    }
    return 0;
}

static SSL_CTX *ctx_base(const struct tls_server_opts *o, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        err_set(err, errlen, "OpenSSL could not create a TLS context");
        return NULL;
    }
    int min = (o->versions & TLS_V12) ? TLS1_2_VERSION : TLS1_3_VERSION;
    int max = (o->versions & TLS_V13) ? TLS1_3_VERSION : TLS1_2_VERSION;
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_max_proto_version(ctx, max);
    /* IGNORE_UNEXPECTED_EOF: a client that half-closes its TCP side without close_notify
     * (nc -N, socat, scripts) ends its input like a close_notify would; without it OpenSSL
     * 3 makes that EOF a fatal error (a decode_error alert, no more writes) and the answers
     * to the requests it had sent are lost. HTTP frames every request, so a truncated one
     * is still seen as incomplete (nginx sets the same option). */
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_SINGLE_ECDH_USE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (apply_ciphers(ctx, o, err, errlen) != 0) goto fail;
    if (!SSL_CTX_set1_groups_list(ctx, GROUPS)) {
        err_set(err, errlen, "OpenSSL refused the key-exchange groups %s", GROUPS);
        goto fail;
    }
    SSL_CTX_set_dh_auto(ctx, 1);
    SSL_CTX_set_read_ahead(ctx, 1); /* one read(2) per burst of records, not two per record */
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_timeout(ctx, 2 * TLS_TICKET_ROTATE_S);
    if (o->session_cache) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_sess_set_cache_size(ctx, 20480);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    if (o->session_tickets) {
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
        SSL_CTX_set_num_tickets(ctx, 1);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_check_opts(const struct tls_server_opts *opts, char *err, size_t errlen)
{
    SSL_CTX *ctx = ctx_base(opts, err, errlen);
    if (!ctx) return -1;
    SSL_CTX_free(ctx);
    return 0;
}

/* One handshake in memory (a BIO pair) between ctx and a permissive OpenSSL client.
 * OpenSSL accepts keys into a context that no TLS 1.2/1.3 handshake can use (DSA: no
 * enabled suite signs with it; EC keys on curves outside TLS's signature schemes such as
 * secp256k1 or brainpool); publishing such a context would make every handshake fail,
 * the certificate API's included. 0 when the handshake completes, else -1 with
 * OpenSSL's reason in why. Leaves no session in ctx's cache and sends no ticket. */
static int ctx_self_test(SSL_CTX *ctx, char *why, size_t len)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *c = cctx ? SSL_new(cctx) : NULL;
    SSL *s = SSL_new(ctx);
    BIO *cb = NULL, *sb = NULL;
    int ok = 0;
    if (c && s && BIO_new_bio_pair(&cb, 0, &sb, 0)) {
        SSL_CTX_set_security_level(cctx, 0); /* only the server's limits count */
        SSL_set_bio(c, cb, cb);
        SSL_set_bio(s, sb, sb);
        SSL_set_num_tickets(s, 0);
        SSL_set_connect_state(c);
        SSL_set_accept_state(s);
        int done_c = 0, done_s = 0, failed = 0;
        for (int i = 0; i < 16 && !failed && !(done_c && done_s); i++) {
            SSL *side[2] = {c, s};
            int *done[2] = {&done_c, &done_s};
            for (int k = 0; k < 2 && !failed; k++) {
                if (*done[k]) continue;
                int r = SSL_do_handshake(side[k]);
                int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(side[k], r);
                if (r == 1)
                    *done[k] = 1;
                else if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                    failed = 1;
            }
        }
        ok = done_c && done_s;
        if (!ok) tls_last_error(why, len);
        if (SSL_get0_session(s)) SSL_CTX_remove_session(ctx, SSL_get0_session(s));
    } else {
        err_set(why, len, "out of memory");
    }
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
    ERR_clear_error();
    return ok ? 0 : -1;
}

SSL_CTX *tls_server_ctx_new(const struct tls_server_opts *opts, const struct p12_entry *e,
                            char *err, size_t errlen)
{
    SSL_CTX *ctx = ctx_base(opts, err, errlen);
    if (!ctx) return NULL;
    X509 *cert = p12_entry_cert(e);
    EVP_PKEY *key = p12_entry_key(e);
    STACK_OF(X509) *chain = p12_entry_chain(e);
    char why[200];
    if (!SSL_CTX_use_certificate(ctx, cert)) {
        tls_last_error(why, sizeof why);
        err_set(err, errlen, "the certificate of alias '%s' cannot be served: %s",
                p12_entry_alias(e), why);
        goto fail;
    }
    if (!SSL_CTX_use_PrivateKey(ctx, key) || !SSL_CTX_check_private_key(ctx)) {
        tls_last_error(why, sizeof why);
        err_set(err, errlen, "the private key of alias '%s' cannot be served: %s",
                p12_entry_alias(e), why);
        goto fail;
    }
    if (chain && sk_X509_num(chain) > 0 && !SSL_CTX_set1_chain(ctx, chain)) {
        tls_last_error(why, sizeof why);
        err_set(err, errlen, "the chain of alias '%s' cannot be served: %s", p12_entry_alias(e),
                why);
        goto fail;
    }
    /* Sessions are bound to the certificate: a context rebuilt for the same certificate
     * (a reload) resumes its sessions, but after a switch every client, resuming or not,
     * gets a full handshake with the new certificate. */
    unsigned char fp[EVP_MAX_MD_SIZE];
    unsigned int fplen = 0;
    if (!X509_digest(cert, EVP_sha256(), fp, &fplen) ||
        !SSL_CTX_set_session_id_context(ctx, fp, fplen > SSL_MAX_SID_CTX_LENGTH ? SSL_MAX_SID_CTX_LENGTH : fplen)) {
        err_set(err, errlen, "cannot fingerprint the certificate of alias '%s'",
                p12_entry_alias(e));
        goto fail;
    }
    if (ctx_self_test(ctx, why, sizeof why) != 0) {
        err_set(err, errlen,
                "the key of alias '%s' cannot be used by TLS clients (%s); use an RSA key "
                "or an EC key on P-256, P-384 or P-521 (or Ed25519)",
                p12_entry_alias(e), why);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void tls_ctx_unref(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

int tls_cert_sha256_hex(X509 *cert, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    out[0] = '\0';
    if (!cert || X509_digest(cert, EVP_sha256(), md, &len) != 1 || len != 32) return -1;
    for (unsigned i = 0; i < len; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

int tls_ctx_leaf_sha256_hex(SSL_CTX *ctx, char *out)
{
    out[0] = '\0';
    return ctx ? tls_cert_sha256_hex(SSL_CTX_get0_certificate(ctx), out) : -1;
}

/* ----- connections ----- */

SSL *tls_conn_new(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl) return NULL;
    if (!SSL_set_fd(ssl, fd)) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

void tls_conn_free(SSL *ssl)
{
    /* Freeing an SSL that has not "shut down" makes OpenSSL evict its session from the
     * cache (and mark it not resumable), so every client that closes first, or times out,
     * would lose resumption. Fatal alerts evict sessions on their own already. */
    if (ssl && SSL_is_init_finished(ssl)) SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl);
}

static enum tls_io map_error(SSL *ssl, int rc)
{
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        return TLS_IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_IO_EOF;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        /* OpenSSL 3 reports an unexpected EOF as SSL_ERROR_SSL; 0 with errno 0 is EOF too */
        return (rc == 0 || errno == 0 || errno == ECONNRESET) ? TLS_IO_EOF : TLS_IO_ERROR;
    case SSL_ERROR_SSL: {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return TLS_IO_EOF;
        }
        return TLS_IO_ERROR;
    }
    default:
        ERR_clear_error();
        return TLS_IO_ERROR;
    }
}

enum tls_io tls_conn_handshake(SSL *ssl)
{
    int rc = SSL_do_handshake(ssl);
    return rc == 1 ? TLS_IO_OK : map_error(ssl, rc);
}

enum tls_io tls_conn_read(SSL *ssl, int fd, void *buf, size_t len, size_t *n)
{
    if (!ssl) {
        ssize_t r = recv(fd, buf, len, 0);
        if (r < 0) return errno == EAGAIN || errno == EINTR ? TLS_IO_WANT_READ : TLS_IO_ERROR;
        if (r == 0) return TLS_IO_EOF;
        *n = (size_t)r;
        return TLS_IO_OK;
    }
    int rc = SSL_read_ex(ssl, buf, len, n);
    return rc == 1 ? TLS_IO_OK : map_error(ssl, rc);
}

enum tls_io tls_conn_write(SSL *ssl, int fd, const void *buf, size_t len, size_t *n)
{
    if (!ssl) {
        ssize_t r = send(fd, buf, len, MSG_NOSIGNAL);
        if (r < 0) return errno == EAGAIN || errno == EINTR ? TLS_IO_WANT_WRITE : TLS_IO_ERROR;
        *n = (size_t)r;
        return TLS_IO_OK;
    }
    int rc = SSL_write_ex(ssl, buf, len, n);
    return rc == 1 ? TLS_IO_OK : map_error(ssl, rc);
}

int tls_conn_pending(SSL *ssl)
{
    return SSL_has_pending(ssl);
}

void tls_conn_shutdown(SSL *ssl)
{
    if (SSL_is_init_finished(ssl)) SSL_shutdown(ssl);
    ERR_clear_error();
}

int tls_conn_resumed(SSL *ssl)
{
    return SSL_session_reused(ssl);
}

void tls_last_error(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (!e) {
        err_set(buf, len, "unknown error");
    } else {
        const char *r = ERR_reason_error_string(e);
        if (r)
            err_set(buf, len, "%s", r);
        else
            ERR_error_string_n(e, buf, len);
    }
    ERR_clear_error();
}

/* ----- client side ----- */

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_app_data(ssl);
    if (!slot || !SSL_SESSION_is_resumable(sess)) return 0;
    if (*slot) SSL_SESSION_free(*slot);
    *slot = sess;
    return 1; /* we keep the reference */
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, int verify, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        err_set(err, errlen, "OpenSSL could not create a client TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    SSL_CTX_set_alpn_protos(ctx, ALPN_HTTP11, sizeof ALPN_HTTP11 - 1);
    if (verify) {
        int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx);
        if (!ok) {
            char why[200];
            tls_last_error(why, sizeof why);
            err_set(err, errlen, "cannot load the CA certificates %s: %s",
                    ca_file ? ca_file : "of the system store", why);
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

SSL *tls_client_conn_new(SSL_CTX *ctx, int fd, const char *host, int host_is_ip,
                         SSL_SESSION **session_slot)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl) return NULL;
    int ok = SSL_set_fd(ssl, fd);
    if (ok && host_is_ip)
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    else if (ok)
        ok = SSL_set_tlsext_host_name(ssl, host) && SSL_set1_host(ssl, host);
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_app_data(ssl, session_slot);
    if (session_slot && *session_slot) SSL_set_session(ssl, *session_slot);
    SSL_set_connect_state(ssl);
    return ssl;
}

const char *tls_conn_verify_error(SSL *ssl)
{
    long v = SSL_get_verify_result(ssl);
    return v == X509_V_OK ? NULL : X509_verify_cert_error_string(v);
}

void tls_session_free(SSL_SESSION *s)
{
    SSL_SESSION_free(s);
}
