/* expiry.c - expiry warnings (see expiry.h). */
#include "expiry.h"

#include "gw.h"
#include "log.h"
#include "metrics.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define DAY 86400LL
#define CHECK_EVERY_MS (3600ull * 1000)

static const int threshold_days[] = {0, 30, 14, 7, 1, 0};

enum expiry_level expiry_level(long long now, long long not_after)
{
    long long left = not_after - now;
    if (left <= 0) return EXPIRY_EXPIRED;
    if (left <= 1 * DAY) return EXPIRY_1;
    if (left <= 7 * DAY) return EXPIRY_7;
    if (left <= 14 * DAY) return EXPIRY_14;
    if (left <= 30 * DAY) return EXPIRY_30;
    return EXPIRY_NONE;
}

int expiry_days(enum expiry_level l)
{
    return l >= EXPIRY_NONE && l <= EXPIRY_EXPIRED ? threshold_days[l] : 0;
}

enum expiry_level expiry_decide(struct expiry_state *st, const char *sha, long long now,
                                long long not_after)
{
    enum expiry_level l = expiry_level(now, not_after);
    struct expiry_seen *s = NULL;
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->seen[i].sha, sha) == 0) s = &st->seen[i];
    if (l == EXPIRY_NONE || (s && s->level >= l)) return EXPIRY_NONE;
    if (!s) {
        if (st->n == st->cap) {
            size_t cap = st->cap ? st->cap * 2 : 16;
            struct expiry_seen *n = realloc(st->seen, cap * sizeof *n);
            if (!n) return l; /* out of memory: say it, perhaps again later */
            st->seen = n;
            st->cap = cap;
        }
        s = &st->seen[st->n++];
        snprintf(s->sha, sizeof s->sha, "%s", sha);
    }
    s->level = l;
    return l;
}

void expiry_state_free(struct expiry_state *st)
{
    free(st->seen);
    memset(st, 0, sizeof *st);
}

static void iso(char *buf, size_t len, long long t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%lld", t);
}

static void span(char *buf, size_t len, long long s)
{
    if (s >= DAY)
        snprintf(buf, len, "%lld day%s", s / DAY, s / DAY == 1 ? "" : "s");
    else if (s >= 3600)
        snprintf(buf, len, "%lld hour%s", s / 3600, s / 3600 == 1 ? "" : "s");
    else
        snprintf(buf, len, "less than an hour");
}

void expiry_sentence(char *buf, size_t len, long long now, int served, const char *subject,
                     const char *file, const char *alias, const char *sha, long long not_after)
{
    char when[40], left[40], where[400];
    iso(when, sizeof when, not_after);
    if (file[0])
        snprintf(where, sizeof where, "file %s alias %s", file, alias);
    else
        snprintf(where, sizeof where, "the default self-signed certificate");
    const char *who = served ? "served" : "stored";
    if (not_after <= now) {
        if (now - not_after < 3600)
            snprintf(left, sizeof left, "just now");
        else {
            span(left, sizeof left, now - not_after);
            strcat(left, " ago");
        }
        snprintf(buf, len, "%s certificate %s, %s, sha256 %s expired %s (%s)%s", who, subject,
                 where, sha, left, when,
                 served ? ": clients refuse it; activate a renewed one" : "");
        return;
    }
    span(left, sizeof left, not_after - now);
    snprintf(buf, len, "%s certificate %s, %s, sha256 %s expires in %s (%s)",
             who, subject, where, sha, left, when);
}

/* ----- the check on the main loop ----- */

static struct expiry_state state;

static void consider(long long now, int served, const char *subject, const char *file,
                     const char *alias, const char *sha, long long na)
{
    enum expiry_level l = expiry_decide(&state, sha, now, na);
    if (l == EXPIRY_NONE) return;
    char msg[1600];
    expiry_sentence(msg, sizeof msg, now, served, subject, file, alias, sha, na);
    if (l == EXPIRY_EXPIRED)
        log_error("%s", msg);
    else
        log_warn("%s (the %d-day warning)", msg, expiry_days(l));
}

static void table_row(void *arg, const char *file, const struct metrics_cert_fact *f)
{
    const long long *now = arg;
    consider(*now, 0, f->subject, file, f->alias, f->sha, f->na);
}

void expiry_run(long long now)
{
    char file[256] = "", alias[256] = "", sha[17] = "";
    X509 *leaf = gw_served_leaf(file, sizeof file, alias, sizeof alias);
    long long nb = 0, na = 0;
    if (leaf && metrics_cert_times(leaf, &nb, &na, sha) == 0) {
        char *subject = metrics_cert_subject(leaf);
        consider(now, 1, subject ? subject : "?", file, alias, sha, na);
        free(subject);
    }
    X509_free(leaf);
    metrics_certs_each_fact(table_row, &now); /* the served one is not said twice (by sha) */
}

static uv_timer_t timer;
static uv_async_t wake;
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static int started;

static void on_timer(uv_timer_t *t)
{
    (void)t;
    expiry_run((long long)time(NULL));
}

static void on_wake(uv_async_t *a)
{
    (void)a;
    expiry_run((long long)time(NULL));
}

int expiry_start(struct uv_loop_s *loop)
{
    if (uv_timer_init(loop, &timer) != 0 || uv_async_init(loop, &wake, on_wake) != 0) return -1;
    uv_timer_start(&timer, on_timer, 0, CHECK_EVERY_MS);
    pthread_mutex_lock(&wake_lock);
    started = 1;
    pthread_mutex_unlock(&wake_lock);
    return 0;
}

void expiry_stop(void)
{
    pthread_mutex_lock(&wake_lock);
    int was = started;
    started = 0;
    pthread_mutex_unlock(&wake_lock);
    if (!was) return;
    uv_close((uv_handle_t *)&timer, NULL);
    uv_close((uv_handle_t *)&wake, NULL);
}

void expiry_poke(void)
{
    pthread_mutex_lock(&wake_lock);
    if (started) uv_async_send(&wake);
    pthread_mutex_unlock(&wake_lock);
}

void expiry_free(void)
{
    expiry_state_free(&state);
}
