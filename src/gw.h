/* gw.h - the gateway's live state: data directory, settings, served certificate.
 *
 * Everything the worker threads read is published as an immutable, reference-counted
 * snapshot (struct gw_snap). A reload or a certificate activation builds a complete new
 * snapshot on the side and publishes it with one pointer swap; workers pick it up when
 * they accept a connection and before they route a request (one atomic load when nothing
 * changed). A connection keeps the TLS context it was accepted with.
 *
 * Changes (SIGHUP reloads, the commit step of API operations) are serialized by
 * gw_lock()/gw_unlock(). API operations derive keys before taking it (api.h); so does
 * a reload, which loads the configured certificate file first and, under the lock, takes
 * that result when the file and password are still the configured ones, unchanged. */
#ifndef CERTGATE_GW_H
#define CERTGATE_GW_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

struct ssl_ctx_st;
struct p12_file;
struct upstream;

struct gw_snap {
    _Atomic unsigned refs;
    uint64_t gen;
    struct ssl_ctx_st *ctx; /* the served certificate; one reference held */
    /* copies of the settings the hot path reads */
    size_t max_upload_bytes;
    unsigned keepalive_timeout_ms, header_timeout_ms, body_timeout_ms;
    int session_reused_header;
    unsigned api_queue; /* [certgate] api-queue */
    unsigned max_connections; /* 0: server.c's default */
    unsigned min_rate;        /* bytes/s, 0: off */
    struct upstream *upstream; /* NULL: no upstream configured; one reference held */
};

/* The generation of the published snapshot; cheap (one atomic load). */
uint64_t gw_snap_gen(void);
/* A new reference to the published snapshot. Thread-safe. */
struct gw_snap *gw_snap_acquire(void);
void gw_snap_release(struct gw_snap *s);
/* Keeps *cur current: when the published generation differs, swaps *cur for a new
 * reference. Returns 1 when it changed. */
int gw_snap_refresh(struct gw_snap **cur);

struct gw_options {
    const char *data_dir;
    int readonly;   /* check-config: write nothing, create nothing */
    int keep_temps; /* a command that may run beside a gateway (cert import): the ".tmp-*"
                     * files in config/ and ssl/ may be the gateway's writes in progress,
                     * so they are not removed as a crash's leftovers */
};

/* Paths under the data directory (valid after gw_open). */
struct gw_paths {
    char *data_dir;   /* as given */
    char *config_dir; /* DIR/config */
    char *ssl_dir;    /* DIR/ssl */
    char *conf_path;  /* DIR/config/custom.properties */
};
extern struct gw_paths gw_paths;

/* Opens the data directory (creating config/ and ssl/ (0700) unless readonly), loads
 * custom.properties (obfuscating a plain certificate-password unless readonly), loads
 * the certificate (falling back to the default one, with a logged reason, when the
 * custom one fails) and publishes the first snapshot.
 * Fails (-1, sentence in err) on a configuration error or an unusable data directory. */
int gw_open(const struct gw_options *opt, char *err, size_t errlen);

/* SIGHUP: re-reads custom.properties and the certificate. On any error nothing live
 * changes and -1 is returned with the reason. Takes gw_lock itself, after the key
 * derivation of the configured certificate. */
int gw_reload(char *err, size_t errlen);

/* The settings currently applied (read under gw_lock). */
const struct conf_settings *gw_settings(void);

void gw_lock(void);
void gw_unlock(void);

/* What is served now, for logs and check-config: e.g. "custom certificate cert.p12
 * (alias 'local', CN=host, valid to ...)" or "default self-signed certificate (...)". */
void gw_describe_served(char *buf, size_t len);

/* Why the configured custom certificate is not served (NULL when it is, or none is
 * configured). */
const char *gw_fallback_reason(void);

/* The active custom certificate's loaded keystore (NULL: default certificate). Under
 * gw_lock. */
const struct p12_file *gw_active_p12(void);

/* 1 when `name` (a file name in the ssl directory) is the certificate file in use.
 * Under gw_lock. */
int gw_is_active_name(const char *name);

/* A certificate switch in two steps, so that everything that can fail happens before
 * anything is written or published:
 *   prepare: builds the served set of p12 (tls_served_new) with entry `alias` (NULL: the
 *            first key entry) as the default and the file's other key entries chosen by
 *            server name, with the current settings; takes p12 over on success. NULL +
 *            sentence on error (the default entry cannot serve).
 *   commit:  publishes it (one pointer swap; cannot fail) and records file/alias as the
 *            active certificate in memory.
 *   abort:   drops it (and the p12).
 * Caller holds gw_lock from prepare to commit/abort. */
struct gw_change;
struct gw_change *gw_change_prepare(struct p12_file *p12, const char *alias, char *err,
                                    size_t errlen);
const char *gw_change_alias(const struct gw_change *ch);
/* Sentences about the file's other key entries that will not serve (expired, no host
 * name, repeated names and key type, unusable key), NULL-terminated; owned by ch. Every
 * other key entry serves the handshakes whose server name it carries (tls.h). */
const char *const *gw_change_notes(const struct gw_change *ch);
void gw_change_commit(struct gw_change *ch, const char *file);
void gw_change_abort(struct gw_change *ch);

/* commit for the watched secret directory (--tls-secret-dir): path names its server.p12.
 * The certificate stays served across SIGHUP reloads (which rebuild its context with the
 * new settings instead of loading custom.properties' certificate-file) until the next
 * commit. Caller holds gw_lock. */
void gw_change_commit_secret(struct gw_change *ch, const char *path);

/* --tls-secret-dir: set once at start, before other threads run (NULL: none); while it
 * is set, the certificate API refuses to switch certificates. gw_secret_dir: thread-safe
 * after start (the value never changes while threads run). */
void gw_set_secret_dir(const char *dir);
const char *gw_secret_dir(void);

/* The alias configured in custom.properties (certificate-alias), or NULL. */
const char *gw_configured_alias(void);

/* Records file, password (obfuscated) and alias (NULL: removed) as the configured
 * certificate in custom.properties, atomically; a plain certificate-password is removed.
 * Caller holds gw_lock. */
int gw_record_certificate(const char *file, const char *password, const char *alias, char *err,
                          size_t errlen);

/* The served certificate's file name and alias ("" and "": the default certificate).
 * Under gw_lock. */
void gw_served_names(char *file, size_t flen, char *alias, size_t alen);

/* The leaf certificate served now (a reference: X509_free it; NULL when none) with the
 * file and alias it comes from (as gw_served_names), read together under gw_lock so they
 * agree. Takes gw_lock itself: call without it. */
struct x509_st *gw_served_leaf(char *file, size_t flen, char *alias, size_t alen);

/* ----- the ACME certificate (acme_store.c) -----
 * It joins the served set: after the active custom file's entries (SNI picks it for its
 * names; the file wins a name both carry), or as the default entry when no custom
 * certificate is active (instead of the default self-signed one).
 *   gw_acme_prepare: builds its TLS context (first key entry of p12) with the current
 *                    settings; takes p12 over on success. NULL + sentence on error.
 *   gw_acme_commit:  keeps it as the ACME certificate `file` and publishes it when no
 *                    custom certificate is active. Cannot fail.
 * Caller holds gw_lock from prepare to commit (or gw_change_abort). */
struct gw_change *gw_acme_prepare(struct p12_file *p12, char *err, size_t errlen);
void gw_acme_commit(struct gw_change *ch, const char *file);
/* The ACME certificate's file name and keystore, or NULL. Under gw_lock. */
const char *gw_acme_file(void);
const struct p12_file *gw_acme_p12(void);
/* What is served: the file ("" for the default certificate), the alias ("" likewise)
 * and the lower-case hex SHA-256 of the leaf certificate (of the published snapshot:
 * what a TLS client receives; "" when none). */
struct gw_served {
    char file[1024];
    char alias[256];
    char sha256[65];
};
/* Fills *out with what is served now. Under gw_lock (or before other threads run). */
void gw_served_get(struct gw_served *out);

/* Just the hex SHA-256 of the leaf served now (65 bytes; "" when none). Thread-safe,
 * without gw_lock (it reads the published snapshot). */
void gw_served_sha256(char *out);

/* gw_reload, also filling what was served just before and just after it (either may be
 * NULL), taken under the same lock as the reload, so an API switch cannot come between. */
int gw_reload_served(struct gw_served *before, struct gw_served *after, char *err,
                     size_t errlen);
/* The ACME certificate expired (its renewal failed): it leaves the served set, which is
 * rebuilt from the custom certificate, or the default self-signed one when none is
 * active, and published. Takes gw_lock. 0, or -1 + sentence (the set is unchanged). */
int gw_acme_withdraw(char *err, size_t errlen);

/* Frees everything (at exit). */
void gw_close(void);

#endif
