/* gw.c - the gateway's live state: configuration, served certificate, snapshots. */
#include "gw.h"

#include "auth.h"
#include "certmeta.h"

#include "conf.h"
#include "defcert.h"
#include "err.h"
#include "fsutil.h"
#include "log.h"
#include "metrics.h"
#include "p12.h"
#include "propfile.h"
#include "secret.h"
#include "tls.h"
#include "upstream.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct gw_paths gw_paths;

/* The live state, in one struct so that what guards each field is written beside it:
 *   [open]    set by gw_open before any other thread runs, freed by gw_close after they
 *             have stopped; read-only in between, so read without a lock;
 *   [change]  guarded by change_lock (gw_lock/gw_unlock): written by gw_open, SIGHUP
 *             reloads and the API's thread-pool jobs (freed by gw_close at exit); read by
 *             those, and by start-up and check-config before other threads exist;
 *   [pub]     guarded by pub_lock, which only publication, gw_snap_acquire and gw_close
 *             take, each for a pointer swap or a reference count;
 *   [atomic]  read lock-free by the workers (gw_snap_gen); written under pub_lock.
 * Lock order: change_lock, then pub_lock (publication happens inside gw_lock); never the
 * other way round. Workers touch only [pub] and [atomic] fields, through gw_snap_*; what
 * they read from a snapshot is immutable.
 * gw_paths (gw.h) is [open] too; it stays a separate global because other modules read it
 * by name. */
static struct gw_state {
    pthread_mutex_t change_lock; /* serializes changes: reloads, API operations */
    int readonly;                /* [open] check-config: write nothing, create nothing */
    struct secret_key skey;      /* [open] obfuscates certificate passwords */
    int skey_loaded;             /* [open] skey holds the key of config/secret.key */

    struct conf_settings settings; /* [change] the applied settings (gw_settings) */
    char *active_file;             /* [change] certificate file served; NULL: default */
    char *active_alias;            /* [change] alias of the served entry */
    struct p12_file *active_p12;   /* [change] custom keystore, NULL for default */
    struct p12_file *default_p12;  /* [change] the default certificate, loaded lazily */
    char *fallback_reason;         /* [change] why the configured certificate is not served */
    char *secret_dir;              /* [open] --tls-secret-dir, or NULL */
    int from_secret;               /* [change] active_p12 came from secret_dir: reloads keep it */
    struct p12_file *acme_p12;     /* [change] the ACME certificate, served without a custom one */
    char *acme_file;               /* [change] its file name in DIR/ssl */
    struct upstream *upstream;     /* [change] built from settings.upstream; one reference */

    pthread_mutex_t pub_lock; /* guards snap */
    struct gw_snap *snap;     /* [pub] the published snapshot; one reference held */
    _Atomic uint64_t gen;     /* [atomic] generation of the last snapshot published */
} G = {.change_lock = PTHREAD_MUTEX_INITIALIZER, .pub_lock = PTHREAD_MUTEX_INITIALIZER};

void gw_lock(void)
{
    pthread_mutex_lock(&G.change_lock);
}

void gw_unlock(void)
{
    pthread_mutex_unlock(&G.change_lock);
}

/* ----- snapshots ----- */

static void snap_free(struct gw_snap *s)
{
    if (s->ctx) tls_ctx_unref(s->ctx);
    upstream_unref(s->upstream);
    free(s);
}

void gw_snap_release(struct gw_snap *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) snap_free(s);
}

uint64_t gw_snap_gen(void)
{
    return atomic_load_explicit(&G.gen, memory_order_acquire);
}

struct gw_snap *gw_snap_acquire(void)
{
    pthread_mutex_lock(&G.pub_lock);
    struct gw_snap *s = G.snap;
    if (s) atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&G.pub_lock);
    return s;
}

int gw_snap_refresh(struct gw_snap **cur)
{
    if (*cur && (*cur)->gen == gw_snap_gen()) return 0;
    struct gw_snap *s = gw_snap_acquire();
    gw_snap_release(*cur);
    *cur = s;
    return 1;
}

static struct gw_snap *snap_new(struct ssl_ctx_st *ctx, const struct conf_settings *s,
                                struct upstream *up);

/* Publishes n (taken over): one pointer swap. */
static void publish_snap(struct gw_snap *n)
{
    pthread_mutex_lock(&G.pub_lock);
    struct gw_snap *old = G.snap;
    n->gen = (old ? old->gen : 0) + 1;
    G.snap = n;
    atomic_store_explicit(&G.gen, n->gen, memory_order_release);
    pthread_mutex_unlock(&G.pub_lock);
    gw_snap_release(old);
}

/* Publishes a snapshot made of ctx (taken over) and settings s. */
static int publish(struct ssl_ctx_st *ctx, const struct conf_settings *s, struct upstream *up)
{
    struct gw_snap *n = snap_new(ctx, s, up);
    if (!n) {
        tls_ctx_unref(ctx);
        return -1;
    }
    publish_snap(n);
    return 0;
}

/* ----- configuration ----- */

const struct conf_settings *gw_settings(void)
{
    return &G.settings;
}

static void tls_opts_of(const struct conf_settings *s, struct tls_server_opts *o)
{
    o->versions = s->tls_versions;
    o->excluded_ciphers = s->excluded_ciphers;
    o->session_cache = s->session_cache;
    o->session_tickets = s->session_tickets;
    o->included_ciphers = s->included_ciphers;
}

/* Reads custom.properties into *s. Unless G.readonly, a plain certificate-password is
 * replaced by certificate-password-encr in the file first. */
static int load_settings(struct conf_settings *s, char *err, size_t errlen)
{
    struct propfile *doc = NULL;
    if (propfile_load(gw_paths.conf_path, &doc, NULL, err, errlen) != 0) return -1;
    const char *plain = propfile_get_raw(doc, CONF_SECTION_WEBSERVER, "certificate-password");
    if (plain && !G.readonly) {
        char *pw = propfile_unescape(plain);
        char *enc = pw && G.skey_loaded ? secret_encrypt(&G.skey, pw) : NULL;
        secret_free(pw);
        int ok = enc != NULL;
        if (!ok)
            err_set(err, errlen, "%s: cannot obfuscate certificate-password", gw_paths.conf_path);
        if (ok &&
            propfile_set(doc, CONF_SECTION_WEBSERVER, "certificate-password-encr", enc) != 0) {
            err_set(err, errlen, "out of memory");
            ok = 0;
        }
        free(enc);
        if (ok) {
            propfile_unset(doc, CONF_SECTION_WEBSERVER, "certificate-password");
            ok = propfile_save(doc, gw_paths.conf_path, err, errlen) == 0;
        }
        if (!ok) {
            propfile_free(doc);
            return -1;
        }
        log_info("%s: certificate-password obfuscated into certificate-password-encr",
                 gw_paths.conf_path);
    }
    int rc = conf_settings_load(doc, gw_paths.conf_path, s, err, errlen);
    /* the cipher exclusions can only be judged by OpenSSL; the line is that of the key */
    int line = propfile_line(doc, CONF_SECTION_WEBSERVER, "excluded-ciphers");
    if (line <= 0) line = propfile_line(doc, CONF_SECTION_WEBSERVER, "included-ciphers");
    propfile_free(doc);
    if (rc != 0) return -1;
    struct tls_server_opts o;
    tls_opts_of(s, &o);
    char why[300];
    if (tls_check_opts(&o, why, sizeof why) != 0) {
        if (line > 0)
            err_set(err, errlen, "%s:%d: %s", gw_paths.conf_path, line, why);
        else
            err_set(err, errlen, "%s: %s", gw_paths.conf_path, why);
        conf_settings_free(s);
        return -1;
    }
    return 0;
}

/* The password of the configured certificate: plain, decrypted, or "" when none. */
static int cert_password(const struct conf_settings *s, char **pw, char *err, size_t errlen)
{
    if (s->certificate_password) {
        *pw = strdup(s->certificate_password);
        return *pw ? 0 : -1;
    }
    if (s->certificate_password_encr) {
        if (!G.skey_loaded) {
            err_set(err, errlen,
                    "certificate-password-encr cannot be read: the key %s/%s does not exist; "
                    "set certificate-password in plain text again",
                    gw_paths.config_dir, SECRET_KEY_FILE);
            return -1;
        }
        return secret_decrypt(&G.skey, s->certificate_password_encr, pw, err, errlen);
    }
    *pw = strdup("");
    return *pw ? 0 : -1;
}

/* Logs a note about an entry of the configured file that is not served. */
static void note_log(void *arg, const char *sentence)
{
    log_warn("%s: %s", (const char *)arg, sentence);
}

/* The served set of keystore p12 with its entry def as the default (no server name or no
 * match): def, then the file's other key entries in file order, then those of extra
 * (appended after the file's entries, so the file wins a name both carry). note: see
 * tls_served_new. */
static struct ssl_ctx_st *served_set(const struct conf_settings *s, const struct p12_file *p12,
                                     const struct p12_entry *def, const struct p12_file *extra,
                                     tls_note_fn note, void *note_arg, char *err,
                                     size_t errlen)
{
    size_t n = p12 ? p12_count(p12) : 0, m = extra ? p12_count(extra) : 0, k = 0;
    const struct p12_entry **v = calloc(n + m + 1, sizeof *v);
    if (!v) {
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    v[k++] = def;
    for (size_t i = 0; i < n + m; i++) {
        const struct p12_entry *e = i < n ? p12_get(p12, i) : p12_get(extra, i - n);
        if (e != def && p12_entry_has_key(e)) v[k++] = e;
    }
    struct tls_server_opts o;
    tls_opts_of(s, &o);
    struct ssl_ctx_st *ctx = tls_served_new(&o, v, k, note, note_arg, err, errlen);
    free(v);
    return ctx;
}

/* The served set of p12 (default entry def) joined by the ACME certificate's entries:
 * every source of certificates meets here. */
static struct ssl_ctx_st *served_ctx(const struct conf_settings *s, const struct p12_file *p12,
                                     const struct p12_entry *def, tls_note_fn note,
                                     void *note_arg, char *err, size_t errlen)
{
    const struct p12_file *acme = G.acme_p12 != p12 ? G.acme_p12 : NULL;
    return served_set(s, p12, def, acme, note, note_arg, err, errlen);
}

/* A certificate file loaded by gw_reload before it takes gw_lock (the key derivation
 * is the slow part), for apply() to take when the configuration still names the same
 * file, unchanged, with the same password. Reload-local; NULL outside a reload. */
struct preload {
    char *file, *pw;
    struct stat st;
    struct p12_file *p12;
};
static struct preload *G_preload; /* [change] */

/* Loads the configured certificate file: an absolute path is the operator's explicit
 * choice (links are fine); a name inside DIR/ssl/ is read only as a regular file of ours,
 * never through a link (fs_read_entry). */
static enum p12_status load_configured(const char *file, const char *pw, struct p12_file **out,
                                       char *err, size_t errlen)
{
    if (file[0] == '/') return p12_load_file(file, pw, out, err, errlen);
    char *data = NULL;
    size_t len = 0;
    if (fs_read_entry(gw_paths.ssl_dir, file, 16u << 20, &data, &len, err, errlen) != 0)
        return P12_ERR_IO;
    enum p12_status st = p12_parse(data, len, pw, file, out, err, errlen);
    free(data);
    return st;
}

/* The identity of the configured file as load_configured reads it. */
static int file_stat(const char *file, const char *path, struct stat *st)
{
    return file[0] == '/' ? stat(path, st) : lstat(path, st);
}

/* The preloaded keystore when it is path, unchanged, opened with pw (taken: the caller
 * owns it); else NULL. */
static struct p12_file *preload_take(const char *file, const char *path, const char *pw)
{
    struct preload *p = G_preload;
    struct stat st;
    if (!p || !p->p12 || strcmp(p->file, file) != 0 || strcmp(p->pw, pw) != 0 ||
        file_stat(file, path, &st) != 0 || !fs_same_version(&st, &p->st))
        return NULL;
    struct p12_file *f = p->p12;
    p->p12 = NULL;
    return f;
}

/* Loads the configured custom certificate and builds its context; *eout is the entry
 * served (inside *p12out). */
static int load_custom(const struct conf_settings *s, struct p12_file **p12out,
                       const struct p12_entry **eout, struct ssl_ctx_st **ctxout, char *err,
                       size_t errlen)
{
    char *pw = NULL;
    if (cert_password(s, &pw, err, errlen) != 0) return -1;
    char *path = fs_path_join(gw_paths.ssl_dir, s->certificate_file);
    struct p12_file *p12 = path ? preload_take(s->certificate_file, path, pw) : NULL;
    const struct p12_entry *e = NULL;
    enum p12_status st = p12 ? P12_OK
                         : path ? load_configured(s->certificate_file, pw, &p12, err, errlen)
                                : P12_ERR_INTERNAL;
    free(path);
    secret_free(pw);
    if (st != P12_OK) return -1;
    if (p12_select(p12, s->certificate_alias, &e, err, errlen) != P12_OK) {
        p12_free(p12);
        return -1;
    }
    char why[400];
    struct ssl_ctx_st *ctx =
        served_ctx(s, p12, e, note_log, (void *)s->certificate_file, why, sizeof why);
    if (!ctx) {
        err_set(err, errlen, "%s: %s", s->certificate_file, why);
        p12_free(p12);
        return -1;
    }
    *p12out = p12;
    *eout = e;
    *ctxout = ctx;
    return 0;
}

static int load_default(const struct conf_settings *s, struct ssl_ctx_st **ctxout, char *err,
                        size_t errlen)
{
    /* re-checked at every load, so a reload renews an expired default certificate */
    struct p12_file *f = NULL;
    if (defcert_load(gw_paths.ssl_dir, G.readonly, &f, err, errlen) != 0) return -1;
    p12_free(G.default_p12);
    G.default_p12 = f;
    const struct p12_entry *e = NULL;
    if (p12_select(G.default_p12, NULL, &e, err, errlen) != P12_OK) return -1;
    *ctxout = served_ctx(s, NULL, e, NULL, NULL, err, errlen);
    return *ctxout ? 0 : -1;
}

/* The ACME certificate's served set with settings s, or NULL (logged). */
static struct ssl_ctx_st *acme_ctx(const struct conf_settings *s, const struct p12_file *p12)
{
    const struct p12_entry *e = NULL;
    char why[400] = "";
    struct ssl_ctx_st *ctx = p12_select(p12, NULL, &e, why, sizeof why) == P12_OK
                                 ? served_ctx(s, p12, e, note_log, G.acme_file, why, sizeof why)
                                 : NULL;
    if (!ctx) log_error("ACME certificate %s not served: %s", G.acme_file, why);
    return ctx;
}

static void set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? strdup(src) : NULL;
}

/* Loads settings and certificate and publishes them. initial: a failing custom
 * certificate falls back to the default one; otherwise it is an error. */
static int apply(int initial, char *err, size_t errlen)
{
    struct conf_settings s;
    if (load_settings(&s, err, errlen) != 0) return -1;
    if (!initial && (s.port_ssl != G.settings.port_ssl || s.port_http != G.settings.port_http))
        log_warn("%s: a changed port-ssl or port takes effect at the next restart",
                 gw_paths.conf_path);
    if (!initial && (s.metrics_port != G.settings.metrics_port ||
                     strcmp(s.metrics_host, G.settings.metrics_host) != 0))
        log_warn("%s: a changed metrics-listen takes effect at the next restart",
                 gw_paths.conf_path);
    struct upstream *up = NULL;
    if (s.upstream.url) {
        int same = upstream_same(G.upstream, &s.upstream);
        if (same) {
            up = upstream_ref(G.upstream);
        } else if (upstream_new(&s.upstream, &up, err, errlen) != 0) {
            conf_settings_free(&s);
            return -1;
        }
        if (!s.upstream.verify && !same)
            log_warn("[upstream] verify = false: the certificate of %s is NOT checked; anyone "
                     "on the path can read and change the forwarded traffic", s.upstream.url);
    }
    struct p12_file *p12 = NULL;
    const struct p12_entry *served = NULL;
    struct ssl_ctx_st *ctx = NULL;
    char why[600] = "";
    int fallback = 0;
    /* the secret directory's certificate stays served; only the settings change */
    int keep = !initial && G.from_secret && G.active_p12;
    if (keep) {
        const struct p12_entry *e = NULL;
        if (p12_select(G.active_p12, G.active_alias, &e, why, sizeof why) != P12_OK ||
            !(ctx = served_ctx(&s, G.active_p12, e, note_log, G.active_file, why,
                               sizeof why))) {
            err_set(err, errlen, "%s: %s", G.active_file, why);
            conf_settings_free(&s);
            upstream_unref(up);
            return -1;
        }
    } else if (s.certificate_file) {
        if (load_custom(&s, &p12, &served, &ctx, why, sizeof why) != 0) {
            if (!initial) {
                err_set(err, errlen, "%s", why);
                conf_settings_free(&s);
                upstream_unref(up);
                return -1;
            }
            fallback = 1;
            log_error("custom certificate not served: %s; serving the default self-signed "
                      "certificate instead (fix it with the certificate API or in %s, then "
                      "send SIGHUP)", why, gw_paths.conf_path);
        }
    }
    if (!ctx && G.acme_p12) ctx = acme_ctx(&s, G.acme_p12);
    if (!ctx && load_default(&s, &ctx, err, errlen) != 0) {
        conf_settings_free(&s);
        upstream_unref(up);
        return -1;
    }
    if (publish(ctx, &s, up) != 0) {
        err_set(err, errlen, "out of memory");
        p12_free(p12);
        conf_settings_free(&s);
        upstream_unref(up);
        return -1;
    }
    upstream_unref(G.upstream);
    G.upstream = up;
    if (!keep) {
        p12_free(G.active_p12);
        G.active_p12 = p12;
        set_str(&G.active_file, p12 ? s.certificate_file : NULL);
        if (p12 && G.readonly)
            metrics_certs_set(s.certificate_file, p12);
        else if (p12)
            certmeta_note(s.certificate_file, p12, NULL); /* gauges, record, expiry check */
        set_str(&G.active_alias, served ? p12_entry_alias(served) : NULL);
        set_str(&G.fallback_reason, fallback ? why : NULL);
    }
    conf_settings_free(&G.settings);
    G.settings = s;
    struct auth_throttle *at = auth_throttle_shared();
    if (at) auth_throttle_configure(at, s.auth_failures, s.auth_window_ms);
    return 0;
}

int gw_open(const struct gw_options *opt, char *err, size_t errlen)
{
    G.readonly = opt->readonly;
    gw_paths.data_dir = strdup(opt->data_dir);
    gw_paths.config_dir = fs_path_join(opt->data_dir, "config");
    gw_paths.ssl_dir = fs_path_join(opt->data_dir, "ssl");
    gw_paths.conf_path = fs_path_join(gw_paths.config_dir, "custom.properties");
    if (!gw_paths.data_dir || !gw_paths.config_dir || !gw_paths.ssl_dir || !gw_paths.conf_path) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    if (!G.readonly) {
        if (fs_mkdir_p(gw_paths.data_dir, 0755, 0, err, errlen) != 0 ||
            fs_mkdir_p(gw_paths.config_dir, 0700, 0, err, errlen) != 0 ||
            fs_mkdir_p(gw_paths.ssl_dir, 0700, 1, err, errlen) != 0)
            return -1;
        if (!opt->keep_temps) {
            fs_remove_stale_temps(gw_paths.config_dir);
            fs_remove_stale_temps(gw_paths.ssl_dir);
        }
    }
    char kerr[400];
    if (secret_key_load(gw_paths.config_dir, !G.readonly, &G.skey, kerr, sizeof kerr) == 0)
        G.skey_loaded = 1;
    else if (!G.readonly) {
        err_set(err, errlen, "%s", kerr);
        return -1;
    }
    certmeta_load_all(); /* the stored files' facts known before this start */
    gw_lock();
    int rc = apply(1, err, errlen);
    gw_unlock();
    return rc;
}

/* Without gw_lock: reads custom.properties (without rewriting it) and, when it names a
 * certificate file, loads it. Anything that fails is left for apply() to find and say. */
static void preload_load(struct preload *p)
{
    struct propfile *doc = NULL;
    struct conf_settings s;
    char err[600];
    if (propfile_load(gw_paths.conf_path, &doc, NULL, err, sizeof err) != 0) return;
    int rc = conf_settings_load(doc, gw_paths.conf_path, &s, err, sizeof err);
    propfile_free(doc);
    if (rc != 0) return;
    char *path = s.certificate_file ? fs_path_join(gw_paths.ssl_dir, s.certificate_file) : NULL;
    struct stat after;
    const char *file = s.certificate_file;
    if (path && cert_password(&s, &p->pw, err, sizeof err) == 0 &&
        file_stat(file, path, &p->st) == 0 &&
        load_configured(file, p->pw, &p->p12, err, sizeof err) == P12_OK &&
        (file_stat(file, path, &after) != 0 || !fs_same_version(&after, &p->st))) {
        p12_free(p->p12); /* changed while it was read: apply() loads it again */
        p->p12 = NULL;
    }
    if (p->p12) p->file = strdup(s.certificate_file);
    if (!p->file) {
        p12_free(p->p12);
        p->p12 = NULL;
    }
    free(path);
    conf_settings_free(&s);
}

int gw_reload(char *err, size_t errlen)
{
    return gw_reload_served(NULL, NULL, err, errlen);
}

int gw_reload_served(struct gw_served *before, struct gw_served *after, char *err,
                     size_t errlen)
{
    struct preload pre = {0};
    preload_load(&pre);
    gw_lock();
    if (before) gw_served_get(before);
    G_preload = &pre;
    int rc = apply(0, err, errlen);
    G_preload = NULL;
    if (after) gw_served_get(after);
    gw_unlock();
    p12_free(pre.p12);
    free(pre.file);
    secret_free(pre.pw);
    return rc;
}

const char *gw_fallback_reason(void)
{
    return G.fallback_reason;
}

const struct p12_file *gw_active_p12(void)
{
    return G.active_p12;
}

int gw_is_active_name(const char *name)
{
    if (!G.active_file) return 0;
    if (strcmp(G.active_file, name) == 0) return 1;
    char *a = fs_path_join(gw_paths.ssl_dir, G.active_file);
    char *b = fs_path_join(gw_paths.ssl_dir, name);
    char ra[PATH_MAX], rb[PATH_MAX];
    int same = a && b && realpath(a, ra) && realpath(b, rb) && strcmp(ra, rb) == 0;
    free(a);
    free(b);
    return same;
}

struct gw_change {
    struct p12_file *p12;
    struct gw_snap *snap; /* ready, unpublished */
    char *alias;
    char **notes; /* NULL-terminated: entries of the file that are not served, and why */
    size_t nnotes;
};

static void notes_free(char **notes)
{
    for (char **p = notes; p && *p; p++)
        free(*p);
    free(notes);
}

/* Keeps a note of tls_served_new in the change (arg); dropped when out of memory. */
static void note_keep(void *arg, const char *sentence)
{
    struct gw_change *ch = arg;
    char **v = realloc(ch->notes, (ch->nnotes + 2) * sizeof *v);
    if (!v) return;
    ch->notes = v;
    v[ch->nnotes] = strdup(sentence);
    if (v[ch->nnotes]) ch->nnotes++;
    v[ch->nnotes] = NULL;
}

/* A snapshot of ctx (taken over on success), settings s and upstream up (referenced). */
static struct gw_snap *snap_new(struct ssl_ctx_st *ctx, const struct conf_settings *s,
                                struct upstream *up)
{
    struct gw_snap *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    atomic_init(&n->refs, 1);
    n->ctx = ctx;
    n->max_upload_bytes = s->max_upload_bytes;
    n->keepalive_timeout_ms = s->keepalive_timeout_ms;
    n->header_timeout_ms = s->header_timeout_ms;
    n->body_timeout_ms = s->body_timeout_ms;
    n->session_reused_header = s->session_reused_header;
    n->api_queue = s->api_queue;
    n->max_connections = s->max_connections;
    n->min_rate = s->min_rate;
    n->upstream = upstream_ref(up);
    return n;
}

/* A change that takes p12 (ch->p12) and serves the set of primary (default entry alias)
 * joined by extra's entries. */
static struct gw_change *change_new(struct p12_file *p12, const struct p12_file *primary,
                                    const char *alias, const struct p12_file *extra, char *err,
                                    size_t errlen)
{
    const struct p12_entry *e = NULL;
    if (p12_select(primary, alias, &e, err, errlen) != P12_OK) return NULL;
    struct gw_change *ch = calloc(1, sizeof *ch);
    if (!ch) {
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    struct ssl_ctx_st *ctx =
        served_set(&G.settings, primary, e, extra, note_keep, ch, err, errlen);
    if (!ctx) {
        notes_free(ch->notes);
        free(ch);
        return NULL;
    }
    ch->snap = snap_new(ctx, &G.settings, G.upstream);
    ch->alias = strdup(p12_entry_alias(e));
    if (!ch->snap || !ch->alias) {
        if (ch->snap) gw_snap_release(ch->snap);
        else tls_ctx_unref(ctx);
        free(ch->alias);
        notes_free(ch->notes);
        free(ch);
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    ch->p12 = p12;
    return ch;
}

struct gw_change *gw_change_prepare(struct p12_file *p12, const char *alias, char *err,
                                    size_t errlen)
{
    return change_new(p12, p12, alias, G.acme_p12, err, errlen);
}

const char *const *gw_change_notes(const struct gw_change *ch)
{
    static const char *const none[] = {NULL};
    return ch->notes ? (const char *const *)ch->notes : none;
}

const char *gw_change_alias(const struct gw_change *ch)
{
    return ch->alias;
}

void gw_change_commit(struct gw_change *ch, const char *file)
{
    G.from_secret = 0;
    publish_snap(ch->snap);
    if (ch->p12 != G.active_p12) p12_free(G.active_p12);
    G.active_p12 = ch->p12;
    set_str(&G.active_file, file);
    certmeta_note(file, ch->p12, NULL);
    set_str(&G.active_alias, ch->alias);
    set_str(&G.fallback_reason, NULL);
    free(ch->alias);
    notes_free(ch->notes);
    free(ch);
}

void gw_change_commit_secret(struct gw_change *ch, const char *path)
{
    gw_change_commit(ch, path);
    G.from_secret = 1;
}

void gw_set_secret_dir(const char *dir)
{
    set_str(&G.secret_dir, dir);
}

const char *gw_secret_dir(void)
{
    return G.secret_dir;
}

void gw_change_abort(struct gw_change *ch)
{
    if (!ch) return;
    gw_snap_release(ch->snap);
    p12_free(ch->p12);
    free(ch->alias);
    notes_free(ch->notes);
    free(ch);
}

const char *gw_configured_alias(void)
{
    return G.settings.certificate_alias;
}

int gw_record_certificate(const char *file, const char *password, const char *alias, char *err,
                          size_t errlen)
{
    if (!G.skey_loaded) {
        err_set(err, errlen, "no key to obfuscate the password with");
        return -1;
    }
    struct propfile *doc = NULL;
    if (propfile_load(gw_paths.conf_path, &doc, NULL, err, errlen) != 0) return -1;
    char *enc = secret_encrypt(&G.skey, password ? password : "");
    int rc = -1;
    if (enc && propfile_set(doc, CONF_SECTION_WEBSERVER, "certificate-file", file) == 0 &&
        propfile_set(doc, CONF_SECTION_WEBSERVER, "certificate-password-encr", enc) == 0 &&
        (!alias || propfile_set(doc, CONF_SECTION_WEBSERVER, "certificate-alias", alias) == 0)) {
        propfile_unset(doc, CONF_SECTION_WEBSERVER, "certificate-password");
        if (!alias) propfile_unset(doc, CONF_SECTION_WEBSERVER, "certificate-alias");
        rc = propfile_save(doc, gw_paths.conf_path, err, errlen);
    } else {
        err_set(err, errlen, "out of memory");
    }
    if (rc == 0) { /* keep the applied settings in step with the file */
        set_str(&G.settings.certificate_file, file);
        secret_free(G.settings.certificate_password);
        G.settings.certificate_password = NULL;
        set_str(&G.settings.certificate_password_encr, enc);
        set_str(&G.settings.certificate_alias, alias);
    }
    free(enc);
    propfile_free(doc);
    return rc;
}

struct gw_change *gw_acme_prepare(struct p12_file *p12, char *err, size_t errlen)
{
    /* beside a custom certificate the ACME one joins its set; without one it leads */
    if (G.active_p12) return change_new(p12, G.active_p12, G.active_alias, p12, err, errlen);
    return change_new(p12, p12, NULL, NULL, err, errlen);
}

void gw_acme_commit(struct gw_change *ch, const char *file)
{
    publish_snap(ch->snap);
    if (ch->p12 != G.acme_p12) p12_free(G.acme_p12);
    G.acme_p12 = ch->p12;
    set_str(&G.acme_file, file);
    metrics_certs_set(file, ch->p12);
    free(ch->alias);
    notes_free(ch->notes);
    free(ch);
}

int gw_acme_withdraw(char *err, size_t errlen)
{
    gw_lock();
    struct p12_file *acme = G.acme_p12;
    G.acme_p12 = NULL; /* served_ctx leaves it out from now on */
    struct ssl_ctx_st *ctx = NULL;
    int rc = -1;
    if (G.active_p12) {
        const struct p12_entry *e = NULL;
        if (p12_select(G.active_p12, G.active_alias, &e, err, errlen) == P12_OK &&
            (ctx = served_ctx(&G.settings, G.active_p12, e, note_log, G.active_file, err,
                              errlen)))
            rc = 0;
    } else {
        rc = load_default(&G.settings, &ctx, err, errlen);
    }
    if (rc == 0 && publish(ctx, &G.settings, G.upstream) != 0) {
        err_set(err, errlen, "out of memory");
        rc = -1;
    }
    if (rc != 0) {
        G.acme_p12 = acme; /* nothing else to serve: the set stays as it is */
    } else {
        p12_free(acme);
        set_str(&G.acme_file, NULL);
    }
    gw_unlock();
    return rc;
}

const char *gw_acme_file(void)
{
    return G.acme_file;
}

const struct p12_file *gw_acme_p12(void)
{
    return G.acme_p12;
}

void gw_describe_served(char *buf, size_t len)
{
    const struct p12_file *f = G.active_p12 ? G.active_p12 : G.acme_p12 ? G.acme_p12 : G.default_p12;
    const struct p12_entry *e = NULL;
    if (!f || p12_select(f, G.active_p12 ? G.active_alias : NULL, &e, NULL, 0) != P12_OK) {
        snprintf(buf, len, "nothing");
        return;
    }
    char *d = p12_java_description(p12_entry_cert(e));
    if (G.active_p12)
        snprintf(buf, len, "custom certificate %s, alias '%s': %s", G.active_file,
                 p12_entry_alias(e), d ? d : "?");
    else if (G.acme_p12)
        snprintf(buf, len, "ACME certificate %s: %s", G.acme_file, d ? d : "?");
    else
        snprintf(buf, len, "default self-signed certificate %s/%s: %s", gw_paths.ssl_dir,
                 DEFCERT_FILE, d ? d : "?");
    free(d);
}

void gw_close(void)
{
    metrics_certs_free();
    pthread_mutex_lock(&G.pub_lock);
    struct gw_snap *s = G.snap;
    G.snap = NULL;
    pthread_mutex_unlock(&G.pub_lock);
    gw_snap_release(s);
    p12_free(G.active_p12);
    p12_free(G.default_p12);
    p12_free(G.acme_p12);
    G.active_p12 = G.default_p12 = G.acme_p12 = NULL;
    set_str(&G.acme_file, NULL);
    set_str(&G.active_file, NULL);
    set_str(&G.active_alias, NULL);
    set_str(&G.fallback_reason, NULL);
    set_str(&G.secret_dir, NULL);
    G.from_secret = 0;
    conf_settings_free(&G.settings);
    upstream_unref(G.upstream);
    G.upstream = NULL;
    secret_key_wipe(&G.skey);
    free(gw_paths.data_dir);
    free(gw_paths.config_dir);
    free(gw_paths.ssl_dir);
    free(gw_paths.conf_path);
    memset(&gw_paths, 0, sizeof gw_paths);
}

void gw_served_names(char *file, size_t flen, char *alias, size_t alen)
{
    snprintf(file, flen, "%s", G.active_file ? G.active_file : "");
    snprintf(alias, alen, "%s", G.active_file && G.active_alias ? G.active_alias : "");
}

struct x509_st *gw_served_leaf(char *file, size_t flen, char *alias, size_t alen)
{
    gw_lock(); /* a switch publishes and records the names under it: both read agree */
    struct gw_snap *snap = gw_snap_acquire();
    gw_served_names(file, flen, alias, alen);
    gw_unlock();
    X509 *leaf = snap && snap->ctx ? SSL_CTX_get0_certificate(snap->ctx) : NULL;
    if (leaf && !X509_up_ref(leaf)) leaf = NULL;
    gw_snap_release(snap);
    return leaf;
}

void gw_served_sha256(char *out)
{
    struct gw_snap *snap = gw_snap_acquire();
    if (!snap || tls_ctx_leaf_sha256_hex(snap->ctx, out) != 0) out[0] = '\0';
    gw_snap_release(snap);
}

void gw_served_get(struct gw_served *out)
{
    gw_served_names(out->file, sizeof out->file, out->alias, sizeof out->alias);
    gw_served_sha256(out->sha256);
}
