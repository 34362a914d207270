/* acme_fleet.c - ACME in a fleet: the etcd lock, the shared certificate and challenges
 * (see acme_fleet.h). */
#include "acme_fleet.h"

#include "acme.h"
#include "acme_store.h"
#include "err.h"
#include "etcd.h"
#include "fleet_sync.h"
#include "fsutil.h"
#include "gw.h"
#include "log.h"
#include "secret.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MEMBERS_WAIT_MS 2000 /* a member that died keeps its member key for 10 s */
#define MAX_P12_BYTES (1u << 20)

static struct {
    int on;                       /* [init] the hook is registered */
    const struct conf_acme *cfg;  /* [init] */
    const char *file;             /* [init] the name of this member's ACME file */
    unsigned ttl_s;               /* [init] the lock's lease */
    /* the ACME thread's */
    struct etcd *e;
    int64_t lease, lock_rev;      /* the lock's lease and mod_revision while held, else 0 */
    pthread_t keeper;
    atomic_int keeper_stop;
    /* the hook's: serialized by apply_mu, which also guards `live` */
    pthread_mutex_t apply_mu;
    int live;                     /* cleared by acme_fleet_shutdown */
    /* what the sync thread saw last, under st_mu (taken alone) */
    pthread_mutex_t st_mu;
    char holder[160], since[40];
    char cert_file[160], cert_member[160], cert_time[40];
    time_t cert_not_after;
} AF = {.apply_mu = PTHREAD_MUTEX_INITIALIZER, .st_mu = PTHREAD_MUTEX_INITIALIZER};

static void fmt_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* <prefix>/<env>/acme/<rest> into buf; -1 while the environment is not known. */
static int acme_key(char *buf, size_t len, const char *rest)
{
    char under[512], env[128];
    if (fleet_sync_names(under, sizeof under, env, sizeof env) < 0) return -1;
    int n = snprintf(buf, len, "%s%s/acme/%s", under, env, rest);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static int not_known(char *err, size_t errlen)
{
    err_set(err, errlen, "the fleet's state has not been read from etcd yet");
    return -1;
}

/* {"member":<this member>,"time":now} plus the pairs of extra (taken over). */
static char *member_record(json_t *extra)
{
    char now[40];
    fmt_time(time(NULL), now, sizeof now);
    json_t *j = extra ? extra : json_object();
    if (!j || json_object_set_new(j, "member", json_string(fleet_sync_member_id())) < 0 ||
        json_object_set_new(j, "time", json_string(now)) < 0) {
        json_decref(j);
        return NULL;
    }
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

/* ----- life cycle ----- */

static void hook(const char *rest, const unsigned char *v, size_t len, int deleted);

void acme_fleet_init(const struct conf_acme *cfg, const char *file,
                     const struct conf_fleet *fleet)
{
    if (!fleet->etcd) return;
    AF.cfg = cfg;
    AF.file = file;
    AF.ttl_s = fleet->acme_lock_ttl_s ? fleet->acme_lock_ttl_s : 30;
    AF.live = 1;
    AF.on = 1;
    fleet_sync_set_acme_hook(hook);
}

int acme_fleet_on(void)
{
    return AF.on && fleet_sync_on();
}

void acme_fleet_shutdown(void)
{
    if (!AF.on) return;
    pthread_mutex_lock(&AF.apply_mu);
    AF.live = 0;
    pthread_mutex_unlock(&AF.apply_mu);
}

/* ----- the lock ----- */

/* Keeps the lock's lease alive every third of its TTL until stopped; gives up (the lock is
 * lost: etcd ended the lease) when etcd says the lease is gone or has not answered for a
 * whole TTL. */
static void *keeper_main(void *arg)
{
    int64_t lease = *(int64_t *)arg;
    free(arg);
    struct etcd *e = NULL;
    char err[1024];
    if (fleet_sync_open(&e, err, sizeof err) < 0) {
        log_error("acme: the fleet's ACME lock is not kept alive: %s", err);
        return NULL;
    }
    time_t last_ok = time(NULL);
    unsigned every_ms = AF.ttl_s * 1000 / 3;
    while (!atomic_load(&AF.keeper_stop)) {
        for (unsigned t = 0; t < every_ms && !atomic_load(&AF.keeper_stop); t += 100) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (atomic_load(&AF.keeper_stop)) break;
        int64_t ttl = 0;
        err[0] = '\0';
        if (etcd_lease_keepalive(e, lease, &ttl, err, sizeof err) == 0) {
            last_ok = time(NULL);
            continue;
        }
        /* etcd ended the lease (it expired, or "requested lease not found") */
        if (strstr(err, "expired or was revoked") || strstr(err, "lease not found") ||
            time(NULL) - last_ok >= (time_t)AF.ttl_s) {
            log_error("acme: the fleet's ACME lock is lost (%s); another member may order",
                      err);
            break;
        }
        log_warn("acme: the fleet's ACME lock was not refreshed: %s", err);
    }
    etcd_close(e);
    return NULL;
}

int acme_fleet_locked(void)
{
    return AF.lease != 0;
}

int acme_fleet_lock(char *holder, size_t hlen, char *err, size_t errlen)
{
    char lock[1200];
    snprintf(holder, hlen, "?");
    if (AF.lease) return 1;
    if (acme_key(lock, sizeof lock, "lock") < 0) return not_known(err, errlen);
    if (!AF.e && fleet_sync_open(&AF.e, err, errlen) < 0) return -1;
    int64_t lease = 0, rev = 0;
    if (etcd_lease_grant(AF.e, AF.ttl_s, &lease, err, errlen) < 0) return -1;
    char *v = member_record(NULL);
    struct etcd_cmp cmp = {lock, ETCD_CMP_CREATE, 0};
    struct etcd_op op = {ETCD_OP_PUT, lock, v, v ? strlen(v) : 0, lease, 0};
    int ok = 0, rc = v ? etcd_txn(AF.e, &cmp, 1, &op, 1, &ok, &rev, err, errlen) : -1;
    if (!v) err_set(err, errlen, "out of memory");
    free(v);
    if (rc == 0 && ok) {
        int64_t *arg = malloc(sizeof *arg);
        if (arg) *arg = lease;
        atomic_store(&AF.keeper_stop, 0);
        if (!arg || pthread_create(&AF.keeper, NULL, keeper_main, arg) != 0) {
            free(arg);
            err_set(err, errlen, "cannot start the thread that keeps the lock");
            etcd_lease_revoke(AF.e, lease, holder, hlen); /* holder: a scratch buffer */
            return -1;
        }
        AF.lease = lease;
        AF.lock_rev = rev;
        log_info("acme: took the fleet's ACME lock %s (lease %u s, revision %lld); this member "
                 "orders", lock, AF.ttl_s, (long long)rev);
        return 1;
    }
    char e2[512];
    if (etcd_lease_revoke(AF.e, lease, e2, sizeof e2) < 0)
        log_debug("acme: the unused lease was not revoked: %s", e2);
    if (rc < 0) return -1;
    struct etcd_range_result r;
    if (etcd_range(AF.e, lock, 0, 0, &r, err, errlen) < 0) return -1;
    json_t *j = r.n ? json_loadb((const char *)r.kvs[0].value, r.kvs[0].value_len, 0, NULL)
                    : NULL;
    snprintf(holder, hlen, "%.100s since %.40s",
             json_string_value(json_object_get(j, "member")) ?: "?",
             json_string_value(json_object_get(j, "time")) ?: "?");
    json_decref(j);
    etcd_range_free(&r);
    return 0;
}

void acme_fleet_unlock(void)
{
    if (!AF.lease) return;
    atomic_store(&AF.keeper_stop, 1);
    pthread_join(AF.keeper, NULL);
    char err[1024];
    if (etcd_lease_revoke(AF.e, AF.lease, err, sizeof err) < 0)
        log_warn("acme: the fleet's ACME lock was not released (%s); it ends with its lease "
                 "in %u s", err, AF.ttl_s);
    else
        log_info("acme: released the fleet's ACME lock");
    AF.lease = AF.lock_rev = 0;
}

void acme_fleet_close(void)
{
    acme_fleet_unlock();
    etcd_close(AF.e);
    AF.e = NULL;
}

/* ----- the certificate ----- */

/* 1 when file (DIR/ssl) holds der and is the ACME certificate served now. */
static int served_already(const char *file, const unsigned char *der, size_t len)
{
    char *data = NULL;
    size_t n = 0;
    gw_lock();
    int same = gw_acme_file() && strcmp(gw_acme_file(), file) == 0;
    gw_unlock();
    if (same && fs_read_entry(gw_paths.ssl_dir, file, MAX_P12_BYTES, &data, &n, NULL, 0) == 0)
        same = n == len && memcmp(data, der, len) == 0;
    else
        same = 0;
    if (data) OPENSSL_cleanse(data, n);
    free(data);
    return same;
}

/* Applies the fleet's certificate record v (the value of key): 1 when it is served here
 * (now, or already), with *info; 0 when refused (logged). Under apply_mu. */
static int apply_cert(const char *key, const unsigned char *v, size_t len,
                      struct acme_cert_info *info)
{
    memset(info, 0, sizeof *info);
    json_t *j = json_loadb((const char *)v, len, 0, NULL);
    const char *file = json_string_value(json_object_get(j, "file"));
    const char *b64 = json_string_value(json_object_get(j, "p12"));
    const char *sealed = json_string_value(json_object_get(j, "password"));
    const char *member = json_string_value(json_object_get(j, "member"));
    json_t *domains = json_object_get(j, "domains");
    char err[1024] = "", until[40];
    unsigned char *der = NULL;
    size_t dlen = 0;
    char *pw = NULL;
    int rc = 0;
    if (!json_is_object(j) || !file || !b64 || !sealed || !json_is_array(domains)) {
        err_set(err, sizeof err, "the record is incomplete (file, p12, password, domains)");
    } else if (strcmp(file, AF.file) != 0) {
        err_set(err, sizeof err, "it is %s, for other domains than this member's [acme] "
                "domains (%s)", file, AF.file);
    } else if (!(der = etcd_b64_decode(b64, &dlen)) || dlen > MAX_P12_BYTES) {
        err_set(err, sizeof err, "its p12 is not base64 (or larger than 1 MiB)");
    } else if (served_already(file, der, dlen)) {
        snprintf(info->file, sizeof info->file, "%s", file);
        info->not_before = (time_t)json_integer_value(json_object_get(j, "not-before"));
        info->not_after = (time_t)json_integer_value(json_object_get(j, "not-after"));
        info->domains_match = 1;
        rc = 1;
    } else if (fleet_sync_unseal(key, sealed, &pw, err, sizeof err) < 0) {
        /* err: another fleet key, or altered */
    } else if (acme_store_install_p12(AF.cfg, file, der, dlen, pw, domains, info, err,
                                      sizeof err) == 0) {
        fmt_time(info->not_after, until, sizeof until);
        log_info("acme: the fleet's certificate %s (ordered by member %s, valid to %s) is "
                 "served now", file, member ? member : "?", until);
        acme_adopt(info);
        rc = 1;
    }
    if (err[0]) log_error("acme: the fleet's certificate %s is not served here: %s", key, err);
    if (j && file) {
        pthread_mutex_lock(&AF.st_mu);
        snprintf(AF.cert_file, sizeof AF.cert_file, "%s", file);
        snprintf(AF.cert_member, sizeof AF.cert_member, "%s", member ? member : "?");
        snprintf(AF.cert_time, sizeof AF.cert_time, "%s",
                 json_string_value(json_object_get(j, "time")) ?: "");
        AF.cert_not_after = (time_t)json_integer_value(json_object_get(j, "not-after"));
        pthread_mutex_unlock(&AF.st_mu);
    }
    if (der) OPENSSL_cleanse(der, dlen);
    free(der);
    secret_free(pw);
    json_decref(j);
    return rc;
}

int acme_fleet_fetch(struct acme_cert_info *info, char *err, size_t errlen)
{
    char key[1200];
    memset(info, 0, sizeof *info);
    if (acme_key(key, sizeof key, "certificate") < 0) return not_known(err, errlen);
    if (!AF.e && fleet_sync_open(&AF.e, err, errlen) < 0) return -1;
    struct etcd_range_result r;
    if (etcd_range(AF.e, key, 0, 0, &r, err, errlen) < 0) return -1;
    int rc = 0;
    if (r.n) {
        pthread_mutex_lock(&AF.apply_mu);
        rc = AF.live ? apply_cert(key, r.kvs[0].value, r.kvs[0].value_len, info) : 0;
        pthread_mutex_unlock(&AF.apply_mu);
    }
    etcd_range_free(&r);
    return rc;
}

int acme_fleet_publish(const struct acme_cert_info *info, char *err, size_t errlen)
{
    char key[1200], lock[1200];
    if (!AF.lease) {
        err_set(err, errlen, "this member does not hold the fleet's ACME lock");
        return -1;
    }
    if (acme_key(key, sizeof key, "certificate") < 0 || acme_key(lock, sizeof lock, "lock") < 0)
        return not_known(err, errlen);
    char *data = NULL, *pw = acme_store_password(info->file), *sealed = NULL, *b64 = NULL;
    size_t n = 0;
    int rc = -1;
    if (fs_read_entry(gw_paths.ssl_dir, info->file, MAX_P12_BYTES, &data, &n, err, errlen) != 0)
        goto out;
    if (!pw || !(sealed = fleet_sync_seal(key, pw)) || !(b64 = etcd_b64_encode(data, n))) {
        err_set(err, errlen, "cannot seal the certificate's password with the fleet key");
        goto out;
    }
    json_t *dom = json_array();
    for (unsigned i = 0; dom && i < AF.cfg->ndomains; i++)
        json_array_append_new(dom, json_string(AF.cfg->domains[i]));
    json_t *j = dom ? json_pack("{s:s,s:s,s:s,s:o,s:I,s:I}", "file", info->file, "p12", b64,
                                "password", sealed, "domains", dom, "not-before",
                                (json_int_t)info->not_before, "not-after",
                                (json_int_t)info->not_after)
                    : NULL;
    char *v = j ? member_record(j) : NULL;
    struct etcd_cmp cmp = {lock, ETCD_CMP_MOD, AF.lock_rev};
    struct etcd_op op = {ETCD_OP_PUT, key, v, v ? strlen(v) : 0, 0, 0};
    int ok = 0;
    int64_t rev = 0;
    if (!v) {
        err_set(err, errlen, "out of memory");
    } else if (etcd_txn(AF.e, &cmp, 1, &op, 1, &ok, &rev, err, errlen) == 0) {
        if (ok) {
            log_info("acme: published %s to the fleet (%s) at revision %lld", info->file, key,
                     (long long)rev);
            rc = 0;
        } else {
            err_set(err, errlen, "the fleet's ACME lock was lost while ordering (its lease "
                    "ended); %s is served by this member only", info->file);
        }
    }
    free(v);
out:
    if (data) OPENSSL_cleanse(data, n);
    free(data);
    secret_free(pw);
    free(sealed);
    free(b64);
    return rc;
}

/* ----- challenges ----- */

static int valid_token(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 200) return 0;
    for (; *t; t++)
        if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') || (*t >= '0' && *t <= '9') ||
              *t == '-' || *t == '_'))
            return 0;
    return 1;
}

/* Waits until every live member (<prefix>/members/) reports rev applied, at most ms. */
static void wait_members(int64_t rev, unsigned ms)
{
    char err[1024] = "", behind[512] = "";
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        json_t *list = NULL;
        int failed = 0;
        if (fleet_sync_members_behind(AF.e, rev, &list, &failed, err, sizeof err) < 0) break;
        size_t off = 0, i;
        json_t *b;
        behind[0] = '\0';
        json_array_foreach(list, i, b) {
            /* behind means not applied yet (a failed activation of the certificate is
             * another matter: that member has the challenge all the same) */
            if (json_integer_value(json_object_get(b, "applied")) < rev && off < sizeof behind)
                off += (size_t)snprintf(behind + off, sizeof behind - off, "%s%s",
                                        off ? ", " : "",
                                        json_string_value(json_object_get(b, "member")));
        }
        json_decref(list);
        clock_gettime(CLOCK_MONOTONIC, &t);
        long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (!behind[0] || el >= (long)ms) break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (err[0] || behind[0])
        log_warn("acme: the challenge is shared, but %s%s", behind[0] ? "not yet applied by " : "",
                 behind[0] ? behind : err);
}

int acme_fleet_share_challenge(const char *name, const char *token, const char *keyauth,
                               char *err, size_t errlen)
{
    char key[1200], rest[260];
    if (!AF.lease) return 0;
    if (!valid_token(token)) {
        err_set(err, errlen, "the CA's token is not base64url; it is not shared with the fleet");
        return -1;
    }
    snprintf(rest, sizeof rest, "http01/%s", token);
    if (acme_key(key, sizeof key, rest) < 0) return not_known(err, errlen);
    json_t *j = json_pack("{s:s,s:s,s:s}", "name", name, "keyauth", keyauth, "type",
                          AF.cfg->challenge == CONF_ACME_TLSALPN01 ? "tls-alpn-01" : "http-01");
    char *v = j ? member_record(j) : NULL;
    struct etcd_op op = {ETCD_OP_PUT, key, v, v ? strlen(v) : 0, AF.lease, 0};
    int ok = 0;
    int64_t rev = 0;
    int rc = v ? etcd_txn(AF.e, NULL, 0, &op, 1, &ok, &rev, err, errlen) : -1;
    if (!v) err_set(err, errlen, "out of memory");
    free(v);
    if (rc == 0) wait_members(rev, MEMBERS_WAIT_MS);
    return rc;
}

void acme_fleet_clear_challenges(void)
{
    char key[1200], err[1024];
    if (!AF.lease || acme_key(key, sizeof key, "http01/") < 0) return;
    struct etcd_op op = {ETCD_OP_DELETE, key, NULL, 0, 0, 1};
    int ok = 0;
    if (etcd_txn(AF.e, NULL, 0, &op, 1, &ok, NULL, err, sizeof err) < 0)
        log_warn("acme: the shared challenges were not deleted (%s); they go with the lock",
                 err);
}

/* ----- the sync thread's hook ----- */

static void on_lock(const unsigned char *v, size_t len, int deleted)
{
    json_t *j = deleted ? NULL : json_loadb((const char *)v, len, 0, NULL);
    pthread_mutex_lock(&AF.st_mu);
    snprintf(AF.holder, sizeof AF.holder, "%s",
             deleted ? "" : json_string_value(json_object_get(j, "member")) ?: "?");
    snprintf(AF.since, sizeof AF.since, "%s",
             deleted ? "" : json_string_value(json_object_get(j, "time")) ?: "");
    pthread_mutex_unlock(&AF.st_mu);
    json_decref(j);
    if (deleted) acme_lock_freed();
}

static void on_challenge(const char *token, const unsigned char *v, size_t len, int deleted)
{
    if (!valid_token(token)) return;
    if (deleted) {
        acme_challenge_remote(NULL, token, NULL, 0);
        return;
    }
    json_t *j = json_loadb((const char *)v, len, 0, NULL);
    const char *member = json_string_value(json_object_get(j, "member"));
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *ka = json_string_value(json_object_get(j, "keyauth"));
    if (member && name && ka && strcmp(member, fleet_sync_member_id()) != 0) {
        if (acme_challenge_remote(name, token, ka, 1) == 0)
            log_info("acme: answering the challenge for %s of member %s", name, member);
    }
    json_decref(j);
}

static void hook(const char *rest, const unsigned char *v, size_t len, int deleted)
{
    pthread_mutex_lock(&AF.apply_mu);
    if (!AF.live) {
    } else if (!rest) {
        acme_challenge_remote(NULL, NULL, NULL, 0); /* a full read: what is there comes again */
    } else if (strcmp(rest, "lock") == 0) {
        on_lock(v, len, deleted);
    } else if (strcmp(rest, "certificate") == 0) {
        char key[1200];
        struct acme_cert_info info;
        if (deleted)
            log_warn("acme: the fleet's certificate was deleted from etcd; this member keeps "
                     "serving its own until a new one is ordered");
        else if (acme_key(key, sizeof key, rest) == 0)
            apply_cert(key, v, len, &info);
    } else if (strncmp(rest, "http01/", 7) == 0) {
        on_challenge(rest + 7, v, len, deleted);
    }
    pthread_mutex_unlock(&AF.apply_mu);
}

/* ----- status ----- */

json_t *acme_fleet_status(void)
{
    if (!AF.on) return NULL;
    json_t *j = json_object();
    char until[40];
    pthread_mutex_lock(&AF.st_mu);
    if (j && AF.holder[0])
        json_object_set_new(j, "lock", json_pack("{s:s,s:s}", "member", AF.holder, "since",
                                                 AF.since));
    if (j && AF.cert_file[0]) {
        fmt_time(AF.cert_not_after, until, sizeof until);
        json_object_set_new(j, "certificate",
                            json_pack("{s:s,s:s,s:s,s:s}", "file", AF.cert_file, "member",
                                      AF.cert_member, "notAfter", until, "time",
                                      AF.cert_time));
    }
    pthread_mutex_unlock(&AF.st_mu);
    return j;
}

void acme_fleet_print(const char *env, const char *rest, const struct etcd_kv *kv)
{
    json_t *j = json_loadb((const char *)kv->value, kv->value_len, 0, NULL);
    const char *member = json_string_value(json_object_get(j, "member")) ?: "?";
    const char *when = json_string_value(json_object_get(j, "time")) ?: "?";
    if (strcmp(rest, "lock") == 0) {
        printf("environment %s: acme lock held by member %s since %s (an order runs)\n", env,
               member, when);
    } else if (strcmp(rest, "certificate") == 0) {
        char until[40];
        fmt_time((time_t)json_integer_value(json_object_get(j, "not-after")), until,
                 sizeof until);
        printf("environment %s: acme certificate %s, valid to %s, ordered by member %s at "
               "%s, revision %lld\n", env,
               json_string_value(json_object_get(j, "file")) ?: "?", until, member, when,
               (long long)kv->mod_revision);
    } else if (strncmp(rest, "http01/", 7) == 0) {
        printf("environment %s: acme challenge %s for %s pending (member %s)\n", env, rest + 7,
               json_string_value(json_object_get(j, "name")) ?: "?", member);
    }
    json_decref(j);
}
