/* fleet_sync.c - the running gateway's fleet threads (see fleet_sync.h). */
#include "fleet_sync.h"

#include "acme.h"
#include "certmeta.h"
#include "conf.h"
#include "err.h"
#include "etcd.h"
#include "fleet_cache.h"
#include "fleetkey.h"
#include "fsutil.h"
#include "gw.h"
#include "log.h"
#include "metrics.h"
#include "p12.h"
#include "secret.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MEMBER_TTL_S 10
#define KEEPALIVE_EVERY_MS 3000
#define MAX_CERT_BYTES (16u << 20)
/* a watch silent this long is cut and resumed elsewhere (etcd.h): 5 x [fleet] timeout */
#define WATCH_IDLE_MS(t) (5 * ((t) ? (t) : 5000))

static struct {
    int running;
    pthread_t sync_thr, member_thr;
    atomic_int stop;
    atomic_llong applied; /* the revision of the last fleet change applied */
    atomic_int changed;   /* what the member key says has changed */
    char *endpoints, *ca_file, *cert_file, *key_file;
    unsigned timeout_ms;
    char *prefix, *under, *env, *member_id, *member_key, *config_dir, *ssl_dir;
    struct fleet_key key;
    pthread_mutex_t mu; /* guards serving, error, failed_rev, failed_err */
    char serving[256], error[768];
    int64_t failed_rev; /* the revision whose activation failed last (0: the last one worked) */
    char failed_err[1024]; /* as apply_active's err */
    struct fleet_cache cache; /* names written from etcd; the sync thread's alone */
    fleet_sync_acme_fn acme_hook; /* set before the threads start */
} F = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Hands a key under <prefix>/<env>/acme/ (rest: what follows it; NULL: a full read starts)
 * to the ACME client (acme_fleet.c). */
static void acme_event(const char *rest, const unsigned char *v, size_t len, int deleted)
{
    if (F.acme_hook) F.acme_hook(rest, v, len, deleted);
}

static int open_etcd(struct etcd **e, char *err, size_t errlen)
{
    struct etcd_opts o = {.endpoints = F.endpoints, .ca_file = F.ca_file,
                          .cert_file = F.cert_file, .key_file = F.key_file,
                          .timeout_ms = F.timeout_ms, .watch_idle_ms = WATCH_IDLE_MS(F.timeout_ms)};
    return etcd_open(&o, e, err, errlen);
}

/* Sleeps ms milliseconds, waking early at stop; returns 1 when stopping. */
static int nap(unsigned ms)
{
    for (unsigned t = 0; t < ms && !atomic_load(&F.stop); t += 100) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&F.stop);
}

static void set_status(const char *serving, const char *error)
{
    pthread_mutex_lock(&F.mu);
    if (serving) snprintf(F.serving, sizeof F.serving, "%s", serving);
    snprintf(F.error, sizeof F.error, "%s", error ? error : "");
    pthread_mutex_unlock(&F.mu);
    atomic_store(&F.changed, 1);
}

/* A name that is safe as a file of DIR/ssl. */
static int valid_name(const char *n)
{
    return n && *n && n[0] != '.' && !strchr(n, '/') && strlen(n) < 200;
}

/* ----- applying the state ----- */

/* Writes a certificate file to the cache when its bytes differ; 1 when written. */
static int cache_cert(const char *name, const unsigned char *v, size_t len)
{
    char *old = NULL, err[512];
    size_t oldlen = 0;
    int same = fs_read_entry(F.ssl_dir, name, MAX_CERT_BYTES, &old, &oldlen, NULL, 0) == 0 &&
               oldlen == len && memcmp(old, v, len) == 0;
    free(old);
    if (same) return 0;
    if (fs_write_entry(F.ssl_dir, name, v, len, 0600, err, sizeof err) != 0) {
        log_error("fleet: cannot write %s/%s: %s", F.ssl_dir, name, err);
        return 0;
    }
    log_info("fleet: stored %s (%zu bytes) from etcd", name, len);
    return 1;
}

/* Activates the record of <prefix>/<env>/active (JSON) like an API activation. */
static void apply_active(const char *key, const unsigned char *v, size_t vlen, int64_t rev)
{
    char err[1024] = "", *pw = NULL, *der = NULL;
    size_t pwlen = 0, derlen = 0;
    struct p12_file *p12 = NULL;
    const struct p12_entry *e = NULL;
    json_t *j = json_loadb((const char *)v, vlen, 0, NULL), *warnings = json_array();
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *alias = json_string_value(json_object_get(j, "alias"));
    const char *sealed = json_string_value(json_object_get(j, "password"));
    if (!j || !warnings) {
        err_set(err, sizeof err, "%s: the record is not JSON", key);
    } else if (!name) { /* the fleet has no active file: each member its own default */
        char served[256], served_alias[256];
        gw_lock();
        gw_served_names(served, sizeof served, served_alias, sizeof served_alias);
        gw_unlock();
        if (served[0])
            err_set(err, sizeof err, "%s: the fleet has no active certificate file (each member "
                    "serves its own default certificate), but this member serves %s and does "
                    "not drop it on its own; activate a certificate through the API to give "
                    "the fleet one", key, served);
        else
            set_status("", NULL);
    } else if (!valid_name(name)) {
        err_set(err, sizeof err, "%s: '%s' is not a file name", key, name);
    } else if (sealed && fleetkey_open(&F.key, key, sealed, &pw, &pwlen, err, sizeof err) < 0) {
        /* err says which: another fleet key, or altered */
    } else if (fs_read_entry(F.ssl_dir, name, MAX_CERT_BYTES, &der, &derlen, err, sizeof err) !=
               0) {
    } else if (p12_parse(der, derlen, pw ? pw : "", name, &p12, err, sizeof err) != P12_OK ||
               p12_select(p12, alias, &e, err, sizeof err) != P12_OK ||
               p12_check_entry(e, time(NULL), warnings, err, sizeof err) != 0) {
    } else {
        char served[256], served_alias[256];
        gw_lock();
        gw_served_names(served, sizeof served, served_alias, sizeof served_alias);
        struct gw_change *ch = gw_change_prepare(p12, alias, err, sizeof err);
        if (ch) p12 = NULL; /* taken over (an abort frees it) */
        if (ch && gw_record_certificate(name, pw ? pw : "", alias, err, sizeof err) != 0) {
            gw_change_abort(ch);
            ch = NULL;
        }
        if (ch) gw_change_commit(ch, name);
        gw_unlock();
        if (ch) {
            log_info("fleet: activated %s (alias '%s') at revision %lld; new connections get "
                     "it now", name, alias ? alias : "first key entry", (long long)rev);
            set_status(name, NULL);
            err[0] = '\0';
        }
    }
    pthread_mutex_lock(&F.mu); /* before set_status: the member key says both */
    F.failed_rev = err[0] ? rev : 0;
    snprintf(F.failed_err, sizeof F.failed_err, "%s", err);
    pthread_mutex_unlock(&F.mu);
    if (err[0]) {
        log_error("fleet: not applied, still serving what it had: %s", err);
        set_status(NULL, err);
    }
    p12_free(p12);
    free(der);
    secret_free(pw);
    json_decref(warnings);
    json_decref(j);
}

/* Rewrites tokens.json from the token entries under <prefix>/tokens/. */
static int apply_tokens(struct etcd *e, char *err, size_t errlen)
{
    char *under = NULL;
    struct etcd_range_result r = {0};
    json_t *root = json_pack("{s:i,s:[]}", "version", 1, "tokens");
    int rc = -1;
    if (asprintf(&under, "%stokens/", F.under) < 0) under = NULL;
    if (!under || !root || etcd_range(e, under, 1, 0, &r, err, errlen) < 0) goto out;
    for (size_t i = 0; i < r.n; i++) {
        json_t *t = json_loadb((const char *)r.kvs[i].value, r.kvs[i].value_len, 0, NULL);
        if (json_is_object(t)) json_array_append(json_object_get(root, "tokens"), t);
        json_decref(t);
    }
    char *text = json_dumps(root, JSON_INDENT(2));
    char *path = fs_path_join(F.config_dir, "tokens.json");
    if (text && path && fs_write_atomic_mode(path, text, strlen(text), 0600, err, errlen) == 0) {
        log_info("fleet: %zu API token%s from etcd", r.n, r.n == 1 ? "" : "s");
        rc = 0;
    }
    free(path);
    free(text);
out:
    etcd_range_free(&r);
    json_decref(root);
    free(under);
    return rc;
}

/* What a key under the prefix is: 'c' a certificate of this member's environment (*name),
 * 'a' its active record, 't' a token, 'm' a member, 0 anything else. */
static int classify(const char *key, const char **name)
{
    const char *rest = key + strlen(F.under);
    size_t el = strlen(F.env);
    if (strncmp(rest, "tokens/", 7) == 0) return 't';
    if (strncmp(rest, "members/", 8) == 0) return 'm';
    if (strncmp(rest, F.env, el) != 0 || rest[el] != '/') return 0;
    if (strcmp(rest + el, "/active") == 0) return 'a';
    if (strncmp(rest + el, "/acme/", 6) == 0) {
        *name = rest + el + 6;
        return 'A';
    }
    if (strncmp(rest + el, "/certs/", 7) == 0 && valid_name(rest + el + 7)) {
        *name = rest + el + 7;
        return 'c';
    }
    return 0;
}

/* The environment when [fleet] environment is not set: the only one with an active
 * record. */
static int discover_env(const struct etcd_range_result *r, char *err, size_t errlen)
{
    char *found = NULL;
    for (size_t i = 0; i < r->n; i++) {
        const char *rest = r->kvs[i].key + strlen(F.under), *slash = strchr(rest, '/');
        if (!slash || strcmp(slash, "/active") != 0 || strncmp(rest, "members/", 8) == 0) continue;
        if (found && strncmp(found, rest, (size_t)(slash - rest)) != 0) {
            err_set(err, errlen, "the fleet under %s holds several environments; set "
                    "environment in [fleet]", F.prefix);
            free(found);
            return -1;
        }
        if (!found) found = strndup(rest, (size_t)(slash - rest));
    }
    if (!found) {
        err_set(err, errlen, "etcd has no fleet state under %s yet (certgate fleet init makes "
                "it)", F.prefix);
        return -1;
    }
    pthread_mutex_lock(&F.mu);
    F.env = found;
    pthread_mutex_unlock(&F.mu);
    log_info("fleet: serving environment %s", F.env);
    return 0;
}

static void save_cache(void)
{
    char err[768];
    if (fleet_cache_save(&F.cache, err, sizeof err) < 0)
        log_error("fleet: the cache manifest is not written (it is tried again): %s", err);
}

static int cmp_kv_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether r holds this fleet's state: the active record of the environment, and the fleet
 * record made with this member's fleet key. Another etcd, an emptied one or a wrong prefix
 * is no reason to delete the cache (the sentence says which). */
static int is_our_fleet(const struct etcd_range_result *r, int have_active, char *why,
                        size_t whylen)
{
    const char *kid = NULL;
    json_t *j = NULL;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->kvs[i].key + strlen(F.under), "fleet") == 0) {
            j = json_loadb((const char *)r->kvs[i].value, r->kvs[i].value_len, 0, NULL);
            kid = json_string_value(json_object_get(j, "key_id"));
        }
    int ok = 0;
    if (!have_active)
        err_set(why, whylen, "etcd has no %s%s/active", F.under, F.env);
    else if (!kid || strcmp(kid, F.key.id) != 0)
        err_set(why, whylen, "the fleet record %sfleet names fleet key %s, not this member's %s",
                F.under, kid ? kid : "(none)", F.key.id);
    else
        ok = 1;
    json_decref(j);
    return ok;
}

/* Deletes the cache file name that etcd no longer has, as an API delete does (its gauges
 * and meta record go too), unless it is the file this member serves or the ACME
 * certificate (checked under gw_lock, so the served name cannot change before the
 * unlink); once the file is gone the manifest forgets it. how says what showed it gone. */
static void drop_cached(const char *name, const char *how)
{
    char err[768] = "";
    char *path = fs_path_join(F.ssl_dir, name);
    if (!path) return;
    gw_lock();
    int served = gw_is_active_name(name), acme = acme_owns_file(name), rc = 1;
    if (!served && !acme) rc = fs_unlink_durable(path, err, sizeof err) == 0 ? 0
                               : errno == ENOENT ? 2 : -1;
    gw_unlock();
    if (rc == 0) {
        metrics_certs_drop(name); /* as an API delete does */
        certmeta_remove(name);
        log_info("fleet: removed %s from %s (%s)", name, F.ssl_dir, how);
    }
    if (rc == 0 || rc == 2) {
        fleet_cache_remove(&F.cache, name); /* last: name may be the manifest's own copy */
    } else if (rc < 0) {
        log_error("fleet: cannot remove %s (%s): %s", name, how, err);
    } else {
        log_info("fleet: %s is no longer in etcd but is kept: it is the %s", name,
                 served ? "certificate this member serves" : "ACME certificate");
    }
    free(path);
}

/* After a full read (r): deletes the cache files this member wrote from etcd (the
 * manifest) whose names etcd no longer has, as a watched delete event would have; never
 * the file served, nor the ACME certificate, nor a name the manifest does not hold. */
static void prune_cache(const struct etcd_range_result *r, int have_active)
{
    char why[512];
    if (!is_our_fleet(r, have_active, why, sizeof why)) {
        log_warn("fleet: cache files in %s are not checked against etcd: %s", F.ssl_dir, why);
        save_cache();
        return;
    }
    const char **have = calloc(r->n + 1, sizeof *have);
    size_t nhave = 0;
    if (!have) return; /* out of memory: nothing is deleted */
    for (size_t i = 0; i < r->n; i++) {
        const char *name = NULL;
        if (classify(r->kvs[i].key, &name) == 'c') have[nhave++] = name;
    }
    qsort(have, nhave, sizeof *have, cmp_kv_name);
    /* from the end: drop_cached removes the name it is given, which moves only later ones */
    for (size_t i = F.cache.n; i-- > 0;)
        if (!bsearch(&F.cache.names[i], have, nhave, sizeof *have, cmp_kv_name))
            drop_cached(F.cache.names[i], "etcd no longer has it; seen at a full read");
    free(have);
    save_cache();
}

/* Reads the whole state and applies it. */
static int full_sync(struct etcd *e, char *err, size_t errlen)
{
    struct etcd_range_result r;
    if (etcd_range(e, F.under, 1, 0, &r, err, errlen) < 0) return -1;
    if (!F.env && discover_env(&r, err, errlen) < 0) {
        etcd_range_free(&r);
        return -1;
    }
    char served[256], alias[256];
    gw_lock();
    gw_served_names(served, sizeof served, alias, sizeof alias);
    gw_unlock();
    const struct etcd_kv *active = NULL;
    int active_file_changed = 0, tokens = 0;
    acme_event(NULL, NULL, 0, 0);
    for (size_t i = 0; i < r.n; i++) {
        const char *name = NULL;
        int kind = classify(r.kvs[i].key, &name);
        if (kind == 'A') acme_event(name, r.kvs[i].value, r.kvs[i].value_len, 0);
        if (kind == 'c' && cache_cert(name, r.kvs[i].value, r.kvs[i].value_len) &&
            strcmp(name, served) == 0)
            active_file_changed = 1;
        if (kind == 'c') fleet_cache_add(&F.cache, name);
        if (kind == 'a') active = &r.kvs[i];
        tokens |= kind == 't';
    }
    if (active) {
        json_t *j = json_loadb((const char *)active->value, active->value_len, 0, NULL);
        const char *n = json_string_value(json_object_get(j, "name"));
        const char *a = json_string_value(json_object_get(j, "alias"));
        int same = n && strcmp(n, served) == 0 && strcmp(a ? a : "", alias) == 0;
        json_decref(j);
        if (!same || active_file_changed)
            apply_active(active->key, active->value, active->value_len, r.revision);
        else
            set_status(served, NULL);
    }
    if (tokens && apply_tokens(e, err, errlen) < 0) log_error("fleet: tokens not applied: %s", err);
    prune_cache(&r, active != NULL);
    atomic_store(&F.applied, r.revision);
    atomic_store(&F.changed, 1);
    etcd_range_free(&r);
    return 0;
}

struct batch_ctx {
    struct etcd *e;
};

static int on_events(void *arg, const struct etcd_event *ev, size_t n)
{
    struct batch_ctx *bc = arg;
    char served[256], alias[256], err[1024];
    gw_lock();
    gw_served_names(served, sizeof served, alias, sizeof alias);
    gw_unlock();
    const struct etcd_event *active = NULL;
    int reread_active = 0, tokens = 0;
    int64_t rev = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = NULL;
        int kind = classify(ev[i].kv.key, &name);
        if (kind == 'm' || kind == 0) continue;
        rev = ev[i].kv.mod_revision;
        if (kind == 't') tokens = 1;
        if (kind == 'A') acme_event(name, ev[i].kv.value, ev[i].kv.value_len, ev[i].deleted);
        if (kind == 'a' && !ev[i].deleted) active = &ev[i];
        if (kind == 'c' && !ev[i].deleted && cache_cert(name, ev[i].kv.value, ev[i].kv.value_len) &&
            strcmp(name, served) == 0)
            reread_active = 1;
        if (kind == 'c' && !ev[i].deleted) fleet_cache_add(&F.cache, name);
        if (kind == 'c' && ev[i].deleted) drop_cached(name, "deleted in etcd");
    }
    if (active) {
        apply_active(active->kv.key, active->kv.value, active->kv.value_len, rev);
    } else if (reread_active) { /* the active file's bytes changed: activate them */
        struct etcd_range_result r;
        char *key = NULL;
        if (asprintf(&key, "%s%s/active", F.under, F.env) > 0 &&
            etcd_range(bc->e, key, 0, 0, &r, err, sizeof err) == 0) {
            if (r.n) apply_active(key, r.kvs[0].value, r.kvs[0].value_len, rev);
            etcd_range_free(&r);
        }
        free(key);
    }
    if (tokens && apply_tokens(bc->e, err, sizeof err) < 0)
        log_error("fleet: tokens not applied: %s", err);
    save_cache();
    if (rev > atomic_load(&F.applied)) {
        atomic_store(&F.applied, rev);
        atomic_store(&F.changed, 1);
    }
    return 0;
}

static void *sync_main(void *arg)
{
    struct etcd *e = NULL;
    char err[2048];
    int need_full = 1, failing = 0;
    if (fleet_cache_load(&F.cache, F.config_dir, err, sizeof err) < 0)
        log_warn("fleet: %s", err);
    if (open_etcd(&e, err, sizeof err) < 0) {
        log_error("fleet: %s", err);
        fleet_cache_free(&F.cache);
        return NULL;
    }
    while (!atomic_load(&F.stop)) {
        if (need_full) {
            if (full_sync(e, err, sizeof err) < 0) {
                if (!failing) log_warn("fleet: serving the local cache: %s", err);
                failing = 1;
                nap(1000);
                continue;
            }
            if (failing) log_info("fleet: etcd answers again; state read at revision %lld",
                                  (long long)atomic_load(&F.applied));
            failing = need_full = 0;
        }
        struct batch_ctx bc = {e};
        int64_t compacted = 0;
        int rc = etcd_watch(e, F.under, 1, atomic_load(&F.applied) + 1, on_events, &bc, &F.stop,
                            &compacted, err, sizeof err);
        if (rc == 0) break;
        if (rc == ETCD_COMPACTED) {
            log_warn("fleet: %s; reading the whole state again", err);
        } else {
            log_warn("fleet: serving the local cache: %s", err);
            failing = 1;
            nap(1000);
        }
        need_full = 1;
    }
    etcd_close(e);
    fleet_cache_free(&F.cache);
    return NULL;
}

/* ----- the member key ----- */

static char *member_value(void)
{
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    pthread_mutex_lock(&F.mu);
    json_t *j = json_pack("{s:I,s:s,s:s}", "applied", (json_int_t)atomic_load(&F.applied),
                          "serving", F.serving, "time", when);
    if (j && F.error[0]) json_object_set_new(j, "error", json_string(F.error));
    if (j && F.error[0] && F.failed_rev)
        json_object_set_new(j, "failedRevision", json_integer(F.failed_rev));
    pthread_mutex_unlock(&F.mu);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

static void *member_main(void *arg)
{
    struct etcd *e = NULL;
    char err[2048];
    int64_t lease = 0;
    unsigned since = 0;
    int failing = 0; /* logged once per outage, not every second */
    if (open_etcd(&e, err, sizeof err) < 0) {
        log_error("fleet: %s", err);
        return NULL;
    }
    while (!atomic_load(&F.stop)) {
        int rc = 0;
        if (!lease) {
            rc = etcd_lease_grant(e, MEMBER_TTL_S, &lease, err, sizeof err);
            atomic_store(&F.changed, 1);
        } else if (since >= KEEPALIVE_EVERY_MS) {
            int64_t ttl;
            rc = etcd_lease_keepalive(e, lease, &ttl, err, sizeof err);
            since = 0;
        }
        if (rc == 0 && lease && atomic_exchange(&F.changed, 0)) {
            char *v = member_value();
            struct etcd_op op = {ETCD_OP_PUT, F.member_key, v, v ? strlen(v) : 0, lease, 0};
            int ok = 0;
            rc = v ? etcd_txn(e, NULL, 0, &op, 1, &ok, NULL, err, sizeof err) : -1;
            if (rc < 0) atomic_store(&F.changed, 1);
            free(v);
        }
        if (rc < 0) {
            if (!failing) log_warn("fleet: member key %s not kept (tried again every second): "
                                   "%s", F.member_key, err);
            failing = 1;
            if (strstr(err, "lease")) lease = 0;
            nap(1000);
            continue;
        }
        if (failing && lease) log_info("fleet: member key %s kept again", F.member_key);
        failing = 0;
        nap(200);
        since += 200;
    }
    if (lease && etcd_lease_revoke(e, lease, err, sizeof err) < 0)
        log_warn("fleet: could not revoke the member lease: %s", err);
    etcd_close(e);
    return NULL;
}

/* ----- start and stop ----- */

static void free_strings(void)
{
    char **s[] = {&F.endpoints, &F.ca_file, &F.cert_file, &F.key_file, &F.prefix, &F.under,
                  &F.env, &F.member_id, &F.member_key, &F.config_dir, &F.ssl_dir};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        free(*s[i]);
        *s[i] = NULL;
    }
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int fleet_sync_start(const struct conf_settings *s, const char *config_dir, const char *ssl_dir,
                     char *err, size_t errlen)
{
    const struct conf_fleet *f = &s->fleet;
    if (!f->etcd || F.running) return 0;
    F.endpoints = strdup(f->etcd);
    F.ca_file = dup_or_null(f->ca_file);
    F.cert_file = dup_or_null(f->cert_file);
    F.key_file = dup_or_null(f->key_file);
    F.timeout_ms = f->timeout_ms;
    F.prefix = strdup(f->prefix);
    F.env = dup_or_null(f->environment);
    F.member_id = strdup(f->member_id);
    F.config_dir = strdup(config_dir);
    F.ssl_dir = strdup(ssl_dir);
    if (asprintf(&F.under, "%s/", f->prefix) < 0) F.under = NULL;
    if (asprintf(&F.member_key, "%s/members/%s", f->prefix, f->member_id) < 0) F.member_key = NULL;
    char *keypath = f->fleet_key_file && f->fleet_key_file[0] == '/'
                        ? strdup(f->fleet_key_file)
                        : fs_path_join(config_dir, f->fleet_key_file ? f->fleet_key_file
                                                                     : FLEETKEY_FILE);
    if (!F.endpoints || !F.prefix || !F.member_id || !F.config_dir || !F.ssl_dir || !F.under ||
        !F.member_key || !keypath) {
        err_set(err, errlen, "out of memory");
        goto fail;
    }
    if (fleetkey_load(keypath, &F.key, err, errlen) < 0) goto fail;
    struct etcd *probe;
    if (open_etcd(&probe, err, errlen) < 0) goto fail; /* options checked now, not later */
    etcd_close(probe);
    atomic_store(&F.stop, 0);
    if (pthread_create(&F.sync_thr, NULL, sync_main, NULL) != 0) {
        err_set(err, errlen, "cannot start the fleet thread");
        goto fail;
    }
    if (pthread_create(&F.member_thr, NULL, member_main, NULL) != 0) {
        atomic_store(&F.stop, 1);
        pthread_join(F.sync_thr, NULL);
        err_set(err, errlen, "cannot start the fleet member thread");
        goto fail;
    }
    F.running = 1;
    log_info("fleet: member %s of %s under %s (fleet key id %s)", F.member_id, F.endpoints,
             F.prefix, F.key.id);
    free(keypath);
    return 0;
fail:
    free(keypath);
    fleetkey_wipe(&F.key);
    free_strings();
    return -1;
}

void fleet_sync_stop(void)
{
    if (!F.running) return;
    atomic_store(&F.stop, 1);
    pthread_join(F.sync_thr, NULL);
    pthread_join(F.member_thr, NULL);
    F.running = 0;
    fleetkey_wipe(&F.key);
    free_strings();
}

int fleet_sync_on(void)
{
    return F.running;
}

/* ----- for the API of a member (api_fleet.c) ----- */

int fleet_sync_open(struct etcd **e, char *err, size_t errlen)
{
    return open_etcd(e, err, errlen);
}

int fleet_sync_names(char *under, size_t ulen, char *env, size_t elen)
{
    pthread_mutex_lock(&F.mu);
    int rc = F.env ? 0 : -1;
    snprintf(under, ulen, "%s", F.under ? F.under : "");
    snprintf(env, elen, "%s", F.env ? F.env : "");
    pthread_mutex_unlock(&F.mu);
    return rc;
}

const char *fleet_sync_member_id(void)
{
    return F.member_id;
}

char *fleet_sync_seal(const char *ad, const char *plain)
{
    return fleetkey_seal(&F.key, ad, plain, strlen(plain));
}

int64_t fleet_sync_applied(void)
{
    return atomic_load(&F.applied);
}

int fleet_sync_wait_applied(int64_t rev, unsigned timeout_ms)
{
    for (unsigned t = 0; atomic_load(&F.applied) < rev; t += 5) {
        if (t >= timeout_ms || atomic_load(&F.stop)) return -1;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

int fleet_sync_outcome(int64_t rev, char *err, size_t errlen)
{
    pthread_mutex_lock(&F.mu);
    int rc = F.failed_rev && F.failed_rev >= rev ? -1 : 0;
    if (rc < 0) err_set(err, errlen, "%s", F.failed_err);
    pthread_mutex_unlock(&F.mu);
    return rc;
}

/* ----- for the ACME client of a member (acme_fleet.c) ----- */

void fleet_sync_set_acme_hook(fleet_sync_acme_fn fn)
{
    F.acme_hook = fn;
}

int fleet_sync_unseal(const char *ad, const char *sealed, char **plain, char *err,
                      size_t errlen)
{
    size_t len = 0;
    return fleetkey_open(&F.key, ad, sealed, plain, &len, err, errlen);
}

int fleet_sync_members_behind(struct etcd *e, int64_t rev, json_t **behind, int *failed,
                              char *err, size_t errlen)
{
    char *key = NULL;
    struct etcd_range_result r;
    *behind = NULL;
    *failed = 0;
    if (asprintf(&key, "%smembers/", F.under) < 0) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    if (etcd_range(e, key, 1, 0, &r, err, errlen) < 0) {
        free(key);
        return -1;
    }
    *behind = json_array();
    int n = 0;
    for (size_t i = 0; i < r.n; i++) {
        json_t *j = json_loadb((const char *)r.kvs[i].value, r.kvs[i].value_len, 0, NULL);
        json_int_t applied = json_integer_value(json_object_get(j, "applied"));
        json_int_t failed_rev = json_integer_value(json_object_get(j, "failedRevision"));
        const char *error = json_string_value(json_object_get(j, "error"));
        int failed_here = applied >= rev && failed_rev >= rev && error && *error;
        if (applied < rev || failed_here) {
            json_t *b = json_pack("{s:s,s:I}", "member", r.kvs[i].key + strlen(key), "applied",
                                  applied);
            if (b && error && *error) json_object_set_new(b, "error", json_string(error));
            if (b && failed_here) json_object_set_new(b, "failed", json_true());
            json_array_append_new(*behind, b);
            n++;
            *failed += failed_here;
        }
        json_decref(j);
    }
    etcd_range_free(&r);
    free(key);
    return n;
}
