/* auth_throttle.c - throttling of failed API authentications per client address
 * (see auth.h). */
#include "auth.h"

#include "log.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define WAYS 8 /* entries per set: an address hashes to one set of WAYS entries */

struct at_entry {
    uint8_t key[16]; /* IPv4 as ::ffff:a.b.c.d, IPv6 as its /64 prefix */
    uint8_t used, locked;
    uint32_t failures;     /* in the current window */
    uint32_t refused;      /* 429s not yet reported in the log */
    uint64_t window_start; /* ms */
    uint64_t locked_until; /* ms; 0 when not locked */
    uint64_t last_ms;      /* last touched, for eviction */
    uint64_t logged_ms;    /* last log line about this address; 0: none */
};

struct auth_throttle {
    pthread_mutex_t lock;
    struct at_entry *e;
    size_t nsets;
    uint64_t seed;
    _Atomic unsigned budget; /* failures per window; 0: off */
    _Atomic unsigned window_ms;
    size_t pending; /* entries with refused > 0 */
};

struct auth_throttle *auth_throttle_new(size_t entries)
{
    struct auth_throttle *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->nsets = entries < WAYS ? 1 : (entries + WAYS - 1) / WAYS;
    t->e = calloc(t->nsets * WAYS, sizeof *t->e); /* pages are touched only when used */
    if (!t->e) {
        free(t);
        return NULL;
    }
    if (getrandom(&t->seed, sizeof t->seed, GRND_NONBLOCK) != (ssize_t)sizeof t->seed)
        t->seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)t;
    pthread_mutex_init(&t->lock, NULL);
    atomic_init(&t->budget, AUTH_THROTTLE_BUDGET);
    atomic_init(&t->window_ms, AUTH_THROTTLE_WINDOW_MS);
    return t;
}

void auth_throttle_free(struct auth_throttle *t)
{
    if (!t) return;
    pthread_mutex_destroy(&t->lock);
    free(t->e);
    free(t);
}

void auth_throttle_configure(struct auth_throttle *t, unsigned budget, unsigned window_ms)
{
    atomic_store(&t->budget, budget);
    atomic_store(&t->window_ms, window_ms ? window_ms : AUTH_THROTTLE_WINDOW_MS);
}

/* The table key of a textual address: 0, or -1 when it is not an IP address. */
static int make_key(const char *addr, uint8_t key[16])
{
    memset(key, 0, 16);
    struct in_addr a4;
    if (inet_pton(AF_INET, addr, &a4) == 1) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &a4, 4);
        return 0;
    }
    if (inet_pton(AF_INET6, addr, key) != 1) return -1;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(key, mapped, 12) != 0) memset(key + 8, 0, 8); /* one /64 is one client */
    return 0;
}

/* The address of a key for the log: "192.0.2.1" or "2001:db8::/64". */
static void key_text(const uint8_t key[16], char *out, size_t len)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(key, mapped, 12) == 0) {
        inet_ntop(AF_INET, key + 12, out, (socklen_t)len);
        return;
    }
    char a[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, key, a, sizeof a);
    snprintf(out, len, "%s/64", a);
}

/* A keyed hash (the seed is random per process, so an outsider cannot aim many
 * addresses at one set to evict a chosen entry cheaply). */
static size_t key_set(const struct auth_throttle *t, const uint8_t key[16])
{
    uint64_t h = t->seed;
    for (int i = 0; i < 16; i++) {
        h ^= key[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (size_t)(h % t->nsets);
}

/* now - then, 0 when then is later (threads read the clock before taking the lock, so
 * their times may arrive slightly out of order) */
static uint64_t since(uint64_t now, uint64_t then)
{
    return now > then ? now - then : 0;
}

static void report(struct auth_throttle *t, struct at_entry *e, uint64_t now)
{
    char who[64];
    key_text(e->key, who, sizeof who);
    if (e->locked && now < e->locked_until)
        log_warn("authentication: refused %u API request(s) from %s in the last %.1f s (too many "
                 "failed authentications); still throttled for %.1f s",
                 e->refused, who, (double)since(now, e->logged_ms ? e->logged_ms : now) / 1000.0,
                 (double)(e->locked_until - now) / 1000.0);
    else
        log_warn("authentication: throttling of %s has ended; %u more API request(s) were "
                 "refused with 429 since the last line",
                 who, e->refused);
    e->refused = 0;
    e->logged_ms = now;
    t->pending--;
}

/* The entry of key, made (evicting the set's least recently used one) when absent and
 * make is set; NULL otherwise. Caller holds the lock. */
static struct at_entry *lookup(struct auth_throttle *t, const uint8_t key[16], uint64_t now,
                               int make)
{
    struct at_entry *set = t->e + key_set(t, key) * WAYS, *victim = NULL;
    for (int i = 0; i < WAYS; i++) {
        if (set[i].used && memcmp(set[i].key, key, 16) == 0) return &set[i];
        if (!set[i].used) {
            if (!victim || victim->used) victim = &set[i];
        } else if (!victim || (victim->used && set[i].last_ms < victim->last_ms)) {
            victim = &set[i];
        }
    }
    if (!make) return NULL;
    if (victim->used && victim->refused) report(t, victim, now);
    memset(victim, 0, sizeof *victim);
    memcpy(victim->key, key, 16);
    victim->used = 1;
    victim->window_start = now;
    victim->last_ms = now;
    return victim;
}

int auth_throttle_check(struct auth_throttle *t, const char *addr, uint64_t now_ms,
                        unsigned *retry_after_s)
{
    uint8_t key[16];
    if (atomic_load(&t->budget) == 0 || make_key(addr, key) != 0) return 0;
    pthread_mutex_lock(&t->lock);
    struct at_entry *e = lookup(t, key, now_ms, 0);
    int refuse = 0;
    if (e && e->locked) {
        if (now_ms < e->locked_until) {
            refuse = 1;
            if (e->refused++ == 0) t->pending++;
            uint64_t ms = e->locked_until - now_ms;
            *retry_after_s = (unsigned)((ms + 999) / 1000);
            e->last_ms = now_ms;
        } else {
            e->locked = 0; /* a new window starts with the next failure */
            e->failures = 0;
            e->window_start = now_ms;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return refuse;
}

void auth_throttle_failed(struct auth_throttle *t, const char *addr, uint64_t now_ms)
{
    uint8_t key[16];
    unsigned budget = atomic_load(&t->budget), window = atomic_load(&t->window_ms);
    if (budget == 0 || make_key(addr, key) != 0) return;
    pthread_mutex_lock(&t->lock);
    struct at_entry *e = lookup(t, key, now_ms, 1);
    e->last_ms = now_ms;
    if (since(now_ms, e->window_start) >= window) {
        e->window_start = now_ms;
        e->failures = 0;
    }
    if (++e->failures >= budget && !(e->locked && now_ms < e->locked_until)) {
        e->locked = 1;
        e->locked_until = e->window_start + window;
        if (!e->logged_ms || since(now_ms, e->logged_ms) >= window) {
            char who[64];
            key_text(e->key, who, sizeof who);
            log_warn("authentication: %u failed attempts from %s within %.1f s; its API "
                     "requests get 429 for %.1f s%s",
                     e->failures, who, (double)since(now_ms, e->window_start) / 1000.0,
                     (double)since(e->locked_until, now_ms) / 1000.0,
                     e->refused ? " (earlier refusals are counted in the next line)" : "");
            e->logged_ms = now_ms;
        }
    }
    pthread_mutex_unlock(&t->lock);
}

void auth_throttle_tick(struct auth_throttle *t, uint64_t now_ms)
{
    unsigned window = atomic_load(&t->window_ms);
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; t->pending && i < t->nsets * WAYS; i++) {
        struct at_entry *e = &t->e[i];
        if (e->used && e->refused && since(now_ms, e->logged_ms) >= window) report(t, e, now_ms);
    }
    pthread_mutex_unlock(&t->lock);
}

size_t auth_throttle_used(struct auth_throttle *t)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->nsets * WAYS; i++)
        n += t->e[i].used;
    pthread_mutex_unlock(&t->lock);
    return n;
}

size_t auth_throttle_capacity(const struct auth_throttle *t)
{
    return t->nsets * WAYS;
}

/* ----- the gateway's table ----- */

static struct auth_throttle *shared;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;

static void shared_init(void)
{
    shared = auth_throttle_new(AUTH_THROTTLE_ENTRIES);
}

struct auth_throttle *auth_throttle_shared(void)
{
    pthread_once(&shared_once, shared_init);
    return shared;
}

uint64_t auth_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
