/* acme_run.c - the ACME thread: when to order, backoff, the pending challenge answers,
 * and the life cycle (see acme.h). */
#include "acme.h"

#include "acme_alpn.h"
#include "acme_ari.h"
#include "acme_fleet.h"
#include "acme_http.h"
#include "acme_jws.h"
#include "acme_store.h"
#include "err.h"
#include "gw.h"
#include "log.h"
#include "metrics.h"
#include "secret.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BACKOFF_FIRST_S 5
#define BACKOFF_CAP_S 3600
#define MAX_CHALLENGES 128
#define LOCK_RETRY_S 10 /* a fleet member that did not get the ACME lock tries again */
#define LOCK_ERROR_RETRY_S 2

enum acme_state { ACME_WAITING, ACME_ORDERING, ACME_BACKOFF, ACME_STOPPED };

/* The ACME client's state. [init]: set by acme_init before any other thread can read it,
 * read-only afterwards. [thread]: the ACME thread's own. [mu]: under A.mu. */
static struct {
    int on;                     /* [init] [acme] is configured */
    struct conf_acme cfg;       /* [init] a copy of the section */
    char file[160];             /* [init] the name its certificate is stored under */
    pthread_t thread;
    int started;
    _Atomic int stop;
    struct acme_http *http;     /* [init] created by acme_start; wake() from any thread */
    struct acme_cert_info info; /* [thread] the certificate served, from acme_init on */
    int withdrawn;              /* [thread] info's certificate expired and left the set */
    pthread_mutex_t mu;
    struct {
        char *name, *token, *keyauth;
        struct ssl_ctx_st *alpn; /* tls-alpn-01: the challenge context, else NULL */
        int remote;              /* another fleet member's (acme_challenge_remote) */
    } ch[MAX_CHALLENGES];       /* [mu] pending challenges */
    unsigned nch;               /* [mu] */
    _Atomic unsigned nalpn;     /* tls-alpn-01 challenges pending (read without A.mu) */
    _Atomic int renew;          /* a renewal was asked for through the API */
    struct {
        int state;              /* enum acme_state */
        time_t next, last_success, last_failure;
        unsigned failures;
        char last_error[1024];
    } st;                       /* [mu] the status (acme_status) */
    struct acme_cert_info adopt; /* [mu] a certificate the fleet brought (acme_adopt) */
    _Atomic int adopt_pending;
    _Atomic int lock_freed;     /* the fleet's ACME lock was released (acme_lock_freed) */
    _Atomic int waiting_lock;   /* the thread waits for the fleet's ACME lock */
} A = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ----- pending challenges ----- */

static int challenge_add(const char *name, const char *token, const char *keyauth, int remote,
                         char *err, size_t errlen)
{
    struct ssl_ctx_st *alpn = NULL;
    if (A.cfg.challenge == CONF_ACME_TLSALPN01 &&
        !(alpn = acme_alpn_ctx_new(name, keyauth, err, errlen)))
        return -1;
    char *n = strdup(name), *t = strdup(token), *k = strdup(keyauth);
    int rc = -1;
    pthread_mutex_lock(&A.mu);
    if (n && t && k && A.nch < MAX_CHALLENGES) {
        A.ch[A.nch].name = n;
        A.ch[A.nch].token = t;
        A.ch[A.nch].keyauth = k;
        A.ch[A.nch].alpn = alpn;
        A.ch[A.nch].remote = remote;
        A.nch++;
        if (alpn) atomic_fetch_add(&A.nalpn, 1);
        n = t = k = NULL;
        alpn = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&A.mu);
    if (rc) err_set(err, errlen, "too many challenges, or out of memory");
    free(n);
    free(t);
    free(k);
    SSL_CTX_free(alpn);
    return rc;
}

int acme_challenge_set(const char *name, const char *token, const char *keyauth, char *err,
                       size_t errlen)
{
    if (challenge_add(name, token, keyauth, 0, err, errlen) != 0) return -1;
    /* in a fleet the CA's request may reach any member: they all answer it */
    if (acme_fleet_locked() && acme_fleet_share_challenge(name, token, keyauth, err, errlen) != 0)
        return -1;
    return 0;
}

/* Removes the remote (or local) challenges: all, or those of token (under A.mu). */
static void challenge_drop_locked(int remote, const char *token)
{
    unsigned k = 0;
    for (unsigned i = 0; i < A.nch; i++) {
        if (A.ch[i].remote == remote && (!token || strcmp(A.ch[i].token, token) == 0)) {
            free(A.ch[i].name);
            free(A.ch[i].token);
            free(A.ch[i].keyauth);
            if (A.ch[i].alpn) atomic_fetch_sub(&A.nalpn, 1);
            SSL_CTX_free(A.ch[i].alpn); /* connections keep their own references */
        } else {
            A.ch[k++] = A.ch[i];
        }
    }
    A.nch = k;
}

void acme_challenge_clear(void)
{
    pthread_mutex_lock(&A.mu);
    challenge_drop_locked(0, NULL);
    pthread_mutex_unlock(&A.mu);
    acme_fleet_clear_challenges();
}

int acme_challenge_remote(const char *name, const char *token, const char *keyauth, int add)
{
    if (!A.on) return -1;
    if (!add) {
        pthread_mutex_lock(&A.mu);
        challenge_drop_locked(1, token);
        pthread_mutex_unlock(&A.mu);
        return 0;
    }
    char err[512];
    pthread_mutex_lock(&A.mu);
    challenge_drop_locked(1, token); /* a put again replaces it */
    pthread_mutex_unlock(&A.mu);
    if (challenge_add(name, token, keyauth, 1, err, sizeof err) == 0) return 0;
    log_error("acme: the fleet's challenge for %s is not answered here: %s", name, err);
    return -1;
}

void acme_adopt(const struct acme_cert_info *info)
{
    pthread_mutex_lock(&A.mu);
    A.adopt = *info;
    pthread_mutex_unlock(&A.mu);
    atomic_store(&A.adopt_pending, 1);
    if (A.http) acme_http_wake(A.http);
}

void acme_lock_freed(void)
{
    atomic_store(&A.lock_freed, 1);
    if (A.http && atomic_load(&A.waiting_lock)) acme_http_wake(A.http);
}

struct ssl_ctx_st *acme_tls_hello(void *arg, const char *name, const unsigned char *alpn,
                                  size_t alpn_len)
{
    if (atomic_load_explicit(&A.nalpn, memory_order_relaxed) == 0 ||
        !acme_alpn_offered(alpn, alpn_len))
        return NULL;
    struct ssl_ctx_st *ctx = NULL;
    pthread_mutex_lock(&A.mu);
    for (unsigned i = 0; i < A.nch && !ctx; i++)
        if (A.ch[i].alpn && strcmp(A.ch[i].name, name) == 0 && SSL_CTX_up_ref(A.ch[i].alpn))
            ctx = A.ch[i].alpn;
    pthread_mutex_unlock(&A.mu);
    return ctx;
}

int acme_http01_on(void)
{
    return A.on && A.cfg.challenge == CONF_ACME_HTTP01;
}

int acme_http01_lookup(const char *token, char *out, size_t outlen)
{
    int rc = -1;
    pthread_mutex_lock(&A.mu);
    for (unsigned i = 0; i < A.nch && rc; i++)
        if (strcmp(A.ch[i].token, token) == 0 && strlen(A.ch[i].keyauth) < outlen) {
            memcpy(out, A.ch[i].keyauth, strlen(A.ch[i].keyauth) + 1);
            rc = 0;
        }
    pthread_mutex_unlock(&A.mu);
    return rc;
}

int acme_owns_file(const char *name)
{
    return A.on && strcmp(name, A.file) == 0;
}

/* ----- scheduling ----- */

static unsigned rand_below(unsigned n)
{
    unsigned r = 0;
    if (n == 0 || RAND_bytes((unsigned char *)&r, sizeof r) != 1) return 0;
    return r % n;
}

/* How long before its end info's certificate is renewed: renew-before, default a third of
 * its lifetime. */
static time_t renew_before(const struct acme_cert_info *info)
{
    time_t life = info->not_after - info->not_before;
    time_t before = A.cfg.renew_before_s ? (time_t)A.cfg.renew_before_s : life / 3;
    return before > life ? life : before;
}

/* When the certificate of info is to be renewed: renew_before its end, moved earlier by up
 * to a tenth of that (at most an hour) so that gateways started together do not renew
 * together (in a fleet: the first one takes the lock, the others take its certificate). */
static time_t renew_at(const struct acme_cert_info *info)
{
    if (!info->file[0] || !info->domains_match || info->not_after <= info->not_before) return 0;
    time_t before = renew_before(info);
    time_t spread = before / 10 < 3600 ? before / 10 : 3600;
    return info->not_after - before - (time_t)rand_below((unsigned)spread + 1);
}

/* 1 when info is a certificate for the configured domains that is not yet due for renewal
 * (without the spread of renew_at): in a fleet, another member's fresh certificate. */
static int fresh(const struct acme_cert_info *info, time_t now)
{
    return info->file[0] && info->domains_match && info->not_after > info->not_before &&
           now < info->not_after - renew_before(info);
}

/* Capped exponential backoff after `failures` failed attempts, with +-10 % jitter; a
 * Retry-After of the CA is a lower bound. */
static long backoff_s(unsigned failures, long retry_after)
{
    long d = BACKOFF_FIRST_S;
    for (unsigned i = 1; i < failures && d < BACKOFF_CAP_S; i++) d *= 2;
    if (d > BACKOFF_CAP_S) d = BACKOFF_CAP_S;
    d = d - d / 10 + (long)rand_below((unsigned)(d / 5) + 1);
    if (retry_after > d) d = retry_after > 86400 ? 86400 : retry_after;
    return d;
}

static void fmt_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ----- status ----- */

static const char *const state_names[] = {"waiting", "ordering", "backoff", "stopped"};

/* The status as JSON (under A.mu). */
static json_t *status_locked(void)
{
    char t[4][32];
    fmt_time(A.st.next, t[0], sizeof t[0]);
    fmt_time(A.st.last_success, t[1], sizeof t[1]);
    fmt_time(A.st.last_failure, t[2], sizeof t[2]);
    fmt_time(A.info.not_after, t[3], sizeof t[3]);
    json_t *dom = json_array();
    for (unsigned i = 0; dom && i < A.cfg.ndomains; i++)
        json_array_append_new(dom, json_string(A.cfg.domains[i]));
    return json_pack("{s:s,s:o,s:s,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:i}", "directory",
                     A.cfg.directory, "domains", dom ? dom : json_array(), "state",
                     state_names[A.st.state], "file", A.info.file[0] ? A.info.file : NULL,
                     "notAfter", A.info.file[0] ? t[3] : NULL, "nextAttempt",
                     A.st.next ? t[0] : NULL, "lastSuccess", A.st.last_success ? t[1] : NULL,
                     "lastFailure", A.st.last_failure ? t[2] : NULL, "lastError",
                     A.st.last_error[0] ? A.st.last_error : NULL, "failures",
                     (int)A.st.failures);
}

json_t *acme_status(void)
{
    if (!A.on) return NULL;
    pthread_mutex_lock(&A.mu);
    json_t *j = status_locked();
    pthread_mutex_unlock(&A.mu);
    json_t *f = acme_fleet_status();
    if (j && f) json_object_set_new(j, "fleet", f);
    else json_decref(f);
    return j;
}

/* Sets the state and writes it to DIR/acme/status.json for `certgate acme status`. */
static void status_set(int state, time_t next, const char *error)
{
    pthread_mutex_lock(&A.mu);
    A.st.state = state;
    A.st.next = next;
    if (error) {
        snprintf(A.st.last_error, sizeof A.st.last_error, "%s", error);
        A.st.last_failure = time(NULL);
    }
    json_t *j = status_locked();
    pthread_mutex_unlock(&A.mu);
    json_t *f = acme_fleet_status();
    if (j && f) json_object_set_new(j, "fleet", f);
    else json_decref(f);
    char err[300];
    if (j && acme_store_write_status(j, err, sizeof err) != 0)
        log_warn("acme: cannot write its status: %s", err);
    json_decref(j);
}

int acme_renew(void)
{
    if (!A.on || !A.started) return -1;
    atomic_store(&A.renew, 1);
    acme_http_wake(A.http);
    return 0;
}

/* ----- the thread ----- */

/* An ACME certificate that expired while its renewal failed is not served any more: the
 * set is rebuilt without it (the custom certificate, or the default self-signed one,
 * serves), as after a restart, which does not load an expired certificate either. */
static void expiry_check(time_t now)
{
    if (!A.info.file[0] || A.withdrawn || now < A.info.not_after) return;
    char err[600] = "";
    A.withdrawn = 1;
    if (gw_acme_withdraw(err, sizeof err) == 0) {
        char what[1024];
        gw_lock();
        gw_describe_served(what, sizeof what);
        gw_unlock();
        log_error("acme: %s has expired and is no longer served; serving %s until a new "
                  "certificate is issued", A.info.file, what);
    } else {
        log_error("acme: %s has expired but stays served: %s", A.info.file, err);
    }
}

/* The renewal time of info: inside the CA's suggested window when its directory offers
 * renewalInfo (RFC 9773), else `fallback` (renew_at). *recheck: when to ask the CA again
 * (its Retry-After), 0 when never. */
static time_t ari_next(struct acme_client *c, const struct acme_cert_info *info,
                       time_t fallback, time_t *recheck)
{
    *recheck = 0;
    if (!info->file[0] || !info->ari_id[0] || !fallback) return fallback;
    time_t start = 0, end = 0, now = time(NULL);
    long retry_after = -1;
    char err[1024];
    int rc = acme_renewal_info(c, info->ari_id, &start, &end, &retry_after, err, sizeof err);
    if (rc == 1) return fallback; /* the CA offers no renewal information */
    *recheck = now + acme_ari_recheck_s(retry_after);
    if (rc != 0) {
        log_warn("acme: %s; renewal by renew-before, asked again in %ld s", err,
                 (long)(*recheck - now));
        return fallback;
    }
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1) r = 0;
    time_t at = acme_ari_pick(start, end, now, r);
    if (at >= info->not_after && fallback < at) {
        log_warn("acme: the CA's renewal window for %s ends after the certificate expires; "
                 "renewal by renew-before", info->file);
        return fallback;
    }
    char w[3][32];
    fmt_time(start, w[0], sizeof w[0]);
    fmt_time(end, w[1], sizeof w[1]);
    fmt_time(at, w[2], sizeof w[2]);
    log_info("acme: the CA's renewal window (RFC 9773) for %s is %s to %s; renewal at %s",
             info->file, w[0], w[1], w[2]);
    return at;
}

/* Waits until `next`, a renewal request (API or DIR/acme/renew-request) or the stop;
 * 1 when a renewal was requested. */
static int wait_until(time_t next)
{
    for (;;) {
        if (atomic_load(&A.stop)) return 0;
        if (atomic_exchange(&A.renew, 0) || acme_store_take_renew_request()) {
            log_info("acme: renewal requested");
            return 1;
        }
        if (atomic_load(&A.adopt_pending) ||
            (atomic_load(&A.waiting_lock) && atomic_load(&A.lock_freed)))
            return 0;
        time_t now = time(NULL);
        expiry_check(now);
        if (next <= now) return 0;
        acme_http_sleep(A.http, next - now > 2 ? 2000 : (long)(next - now) * 1000);
    }
}

/* A certificate the fleet brought (acme_adopt) becomes the one this thread renews. 1 when
 * there was one; *next and *recheck are its renewal times. */
static int adopt(struct acme_client *c, time_t *next, time_t *recheck)
{
    if (!atomic_exchange(&A.adopt_pending, 0)) return 0;
    pthread_mutex_lock(&A.mu);
    A.info = A.adopt;
    A.withdrawn = 0;
    A.st.failures = 0;
    pthread_mutex_unlock(&A.mu);
    atomic_store(&A.waiting_lock, 0);
    *next = ari_next(c, &A.info, renew_at(&A.info), recheck);
    status_set(ACME_WAITING, *next, NULL);
    char when[32];
    fmt_time(*next, when, sizeof when);
    log_info("acme: %s from the fleet is served; renewal at %s", A.info.file, when);
    return 1;
}

static int same_cert(const struct acme_cert_info *a, const struct acme_cert_info *b)
{
    return strcmp(a->file, b->file) == 0 && a->not_before == b->not_before &&
           a->not_after == b->not_after;
}

/* In a fleet, before an order: takes the fleet's ACME lock, then looks at the fleet's
 * certificate. 1: order (the lock is held); 0: do not order now (*next: when to look
 * again; a fresh certificate of the fleet is served instead). `due` is the certificate that
 * made this thread decide to order; forced: a renewal was asked for. */
static int fleet_gate(const struct acme_cert_info *due, int forced, time_t *next,
                      char *logged, size_t loglen)
{
    char holder[200], err[1024];
    int got = acme_fleet_lock(holder, sizeof holder, err, sizeof err);
    if (got != 1) {
        const char *why = got == 0 ? holder : err;
        if (strncmp(logged, why, 250) != 0) {
            if (got == 0)
                log_info("acme: the fleet's ACME lock is held by member %s; this member does "
                         "not order and waits for the certificate through etcd", holder);
            else
                log_warn("acme: cannot take the fleet's ACME lock (%s); not ordering, trying "
                         "again", err);
            snprintf(logged, loglen, "%.250s", why);
        }
        atomic_store(&A.lock_freed, 0);
        atomic_store(&A.waiting_lock, 1);
        *next = time(NULL) + (got == 0 ? LOCK_RETRY_S : LOCK_ERROR_RETRY_S);
        status_set(ACME_WAITING, *next, NULL);
        return 0;
    }
    logged[0] = '\0';
    atomic_store(&A.waiting_lock, 0);
    struct acme_cert_info f;
    int rc = acme_fleet_fetch(&f, err, sizeof err);
    if (rc < 0) {
        log_warn("acme: cannot read the fleet's certificate (%s); not ordering, trying again",
                 err);
        acme_fleet_unlock();
        *next = time(NULL) + LOCK_ERROR_RETRY_S;
        return 0;
    }
    if (rc == 1 && !forced && !same_cert(&f, due) && fresh(&f, time(NULL))) {
        /* another member renewed meanwhile (or this member starts without one) */
        acme_fleet_unlock();
        if (!atomic_load(&A.adopt_pending)) acme_adopt(&f);
        *next = time(NULL);
        return 0;
    }
    return 1;
}

static void *acme_main(void *arg)
{
    struct acme_client c = {.cfg = &A.cfg, .http = A.http, .retry_after = -1};
    char err[2048], logged[300] = "";
    if (!(c.key = acme_store_account_key(err, sizeof err))) {
        log_error("acme: no account key: %s; certificates are not obtained", err);
        status_set(ACME_STOPPED, 0, err);
        return NULL;
    }
    time_t recheck = 0;
    time_t next = ari_next(&c, &A.info, renew_at(&A.info), &recheck);
    if (next) {
        char when[32];
        fmt_time(next, when, sizeof when);
        log_info("acme: %s is served; renewal at %s", A.info.file, when);
    }
    status_set(ACME_WAITING, next, NULL);
    int forced = 0;
    while (!atomic_load(&A.stop)) {
        if (adopt(&c, &next, &recheck)) {
            forced = 0; /* the fleet's new certificate answers a renewal asked for here */
            logged[0] = '\0';
        }
        if (atomic_load(&A.waiting_lock) && atomic_exchange(&A.lock_freed, 0))
            next = time(NULL); /* the holder is gone: try the lock now */
        time_t due = recheck && recheck < next ? recheck : next;
        if (due > time(NULL)) {
            int asked = wait_until(due);
            if (!asked) {
                if (!atomic_load(&A.stop) && due < next && time(NULL) >= recheck) {
                    next = ari_next(&c, &A.info, renew_at(&A.info), &recheck);
                    status_set(ACME_WAITING, next, NULL);
                }
                continue;
            }
            forced = 1;
        }
        if (atomic_load(&A.stop)) break;
        recheck = 0;
        if (acme_fleet_on()) {
            struct acme_cert_info before = A.info;
            if (!fleet_gate(&before, forced, &next, logged, sizeof logged)) continue;
        }
        log_info("acme: ordering a certificate for %s from %s", A.cfg.domains[0],
                 A.cfg.directory);
        status_set(ACME_ORDERING, 0, NULL);
        struct acme_cert_info info;
        c.bad_nonces = 0;
        forced = 0;
        if (acme_order_run(&c, &info, err, sizeof err) == 0) {
            metrics_inc(M_ACME_ORDER);
            if (acme_fleet_locked() && acme_fleet_publish(&info, err, sizeof err) != 0)
                log_error("acme: %s", err);
            acme_fleet_unlock();
            next = ari_next(&c, &info, renew_at(&info), &recheck);
            pthread_mutex_lock(&A.mu);
            A.info = info;
            A.withdrawn = 0;
            A.st.failures = 0;
            A.st.last_success = time(NULL);
            pthread_mutex_unlock(&A.mu);
            status_set(ACME_WAITING, next, NULL);
            char until[32], when[32];
            fmt_time(info.not_after, until, sizeof until);
            fmt_time(next, when, sizeof when);
            log_info("acme: certificate %s issued for %u name%s, valid to %s; renewal at %s "
                     "(%u badNonce answer%s retried)",
                     info.file, A.cfg.ndomains, A.cfg.ndomains == 1 ? "" : "s", until, when,
                     c.bad_nonces, c.bad_nonces == 1 ? "" : "s");
        } else if (!atomic_load(&A.stop)) {
            acme_fleet_unlock();
            metrics_inc(M_ACME_ORDER + 1);
            pthread_mutex_lock(&A.mu);
            unsigned failures = ++A.st.failures;
            pthread_mutex_unlock(&A.mu);
            long d = backoff_s(failures, c.retry_after);
            log_error("acme: %s; the served certificate is unchanged; next attempt in %ld s",
                      err, d);
            next = time(NULL) + d;
            status_set(ACME_BACKOFF, next, err);
        }
    }
    acme_challenge_clear();
    acme_fleet_close();
    acme_key_free(c.key);
    json_decref(c.dir);
    free(c.kid);
    free(c.nonce);
    return NULL;
}

/* ----- life cycle ----- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int acme_init(const struct conf_acme *cfg, const char *data_dir, char *err, size_t errlen)
{
    if (!cfg->directory) return 0;
    A.cfg = *cfg;
    A.cfg.directory = dup_or_null(cfg->directory);
    A.cfg.email = dup_or_null(cfg->email);
    A.cfg.ca_file = dup_or_null(cfg->ca_file);
    A.cfg.eab_kid = dup_or_null(cfg->eab_kid);
    A.cfg.eab_hmac_key = dup_or_null(cfg->eab_hmac_key);
    A.cfg.domains = calloc(cfg->ndomains + 1, sizeof *A.cfg.domains);
    for (unsigned i = 0; A.cfg.domains && i < cfg->ndomains; i++)
        A.cfg.domains[i] = strdup(cfg->domains[i]);
    A.on = 1;
    acme_store_file_name(&A.cfg, A.file, sizeof A.file);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        err_set(err, errlen, "acme: libcurl cannot be initialised");
        return -1;
    }
    if (acme_store_open(data_dir, err, errlen) != 0) return -1;
    /* made here, before the fleet's sync thread may wake the ACME thread (acme_adopt) */
    atomic_store(&A.stop, 0);
    if (!(A.http = acme_http_new(A.cfg.ca_file, &A.stop))) {
        err_set(err, errlen, "acme: out of memory");
        return -1;
    }
    acme_fleet_init(&A.cfg, A.file, &gw_settings()->fleet);
    return acme_store_load_cert(&A.cfg, &A.info);
}

int acme_start(char *err, size_t errlen)
{
    if (!A.on) return 0;
    if (pthread_create(&A.thread, NULL, acme_main, NULL) != 0) {
        err_set(err, errlen, "acme: cannot start its thread");
        return -1;
    }
    A.started = 1;
    return 0;
}

void acme_stop(void)
{
    if (!A.on) return;
    atomic_store(&A.stop, 1);
    if (A.started) {
        acme_http_wake(A.http);
        pthread_join(A.thread, NULL);
        A.started = 0;
    }
    acme_fleet_shutdown(); /* the fleet's sync thread calls in no more */
    pthread_mutex_lock(&A.mu);
    challenge_drop_locked(1, NULL);
    challenge_drop_locked(0, NULL);
    pthread_mutex_unlock(&A.mu);
    acme_http_free(A.http);
    A.http = NULL;
    acme_store_close();
    curl_global_cleanup();
    free(A.cfg.directory);
    free(A.cfg.email);
    free(A.cfg.ca_file);
    free(A.cfg.eab_kid);
    secret_free(A.cfg.eab_hmac_key);
    for (unsigned i = 0; A.cfg.domains && i < A.cfg.ndomains; i++) free(A.cfg.domains[i]);
    free(A.cfg.domains);
    memset(&A.cfg, 0, sizeof A.cfg);
    A.on = 0;
}
