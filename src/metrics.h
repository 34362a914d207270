/* metrics.h - Prometheus metrics: per-thread counters and the /metrics listener.
 *
 * Counting: every thread that counts gets its own slot (one cache-line-aligned array of
 * counters) on its first count; only that thread writes it (a relaxed load and store, no
 * lock, no read-modify-write), and a scrape sums the slots with relaxed loads. A slot
 * lives as long as the process (a thread's counts stay in the sums after it ends; certgate
 * makes no thread per request, so there are a few dozen slots at most).
 *
 * Serving: metrics_start binds [certgate] metrics-listen and runs one small thread of its
 * own (blocking accept, one short request at a time), off the workers' request path.
 * GET /metrics answers the text exposition format 0.0.4; any other path 404. */
#ifndef CERTGATE_METRICS_H
#define CERTGATE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* histogram buckets (upper bounds in ms): 1 5 10 25 50 100 250 500 1000 2500 5000 10000 */
#define METRICS_NBUCKETS 12

enum metrics_hs_result { MH_FULL, MH_RESUMED, MH_FAILED };
enum metrics_proto { MP_TLS12, MP_TLS13, MP_OTHER };
enum metrics_route { MR_NONE, MR_HEALTH, MR_API, MR_PROXY, MR_N };
enum metrics_certop { MO_LIST, MO_UPLOAD, MO_DELETE, MO_ACTIVATE, MO_DESCRIBE, MO_N };

/* counter indices */
enum {
    M_HS = 0,                             /* [result * 3 + proto] */
    M_REQ = M_HS + 9,                     /* [class(0: 1xx .. 4: 5xx) * MR_N + route] */
    M_REQ_DUR = M_REQ + 5 * MR_N,         /* [bucket], [NB]: count, [NB + 1]: sum (ms) */
    M_UP_DUR = M_REQ_DUR + METRICS_NBUCKETS + 2,
    M_CONN_OPENED = M_UP_DUR + METRICS_NBUCKETS + 2,
    M_CONN_CLOSED,
    M_BYTES_IN,  /* client connections: HTTP bytes (after TLS decryption) */
    M_BYTES_OUT,
    M_CERT_OP,                            /* [op * 2 + (0: ok, 1: error)] */
    M_RELOAD = M_CERT_OP + 2 * MO_N,      /* [0: ok, 1: error] */
    M_TOKEN_FAIL = M_RELOAD + 2,
    M_SECRET_DIR,                         /* [0: applied, 1: refused] (--tls-secret-dir) */
    M_ACME_ORDER = M_SECRET_DIR + 2,      /* [0: ok, 1: error] ACME orders */
    M_N = M_ACME_ORDER + 2
};

struct metrics_slot {
    _Alignas(64) _Atomic uint64_t v[M_N];
    struct metrics_slot *next;
};

extern _Thread_local struct metrics_slot *metrics_tl;
/* The calling thread's slot, made on first use (NULL when out of memory). */
struct metrics_slot *metrics_slot_new(void);

static inline void metrics_add(unsigned i, uint64_t n)
{
    struct metrics_slot *s = metrics_tl ? metrics_tl : metrics_slot_new();
    if (!s) return;
    uint64_t v = atomic_load_explicit(&s->v[i], memory_order_relaxed);
    atomic_store_explicit(&s->v[i], v + n, memory_order_relaxed);
}

static inline void metrics_inc(unsigned i)
{
    metrics_add(i, 1);
}

/* Counts one answered request: status, route, duration, upstream time (-1: none). */
void metrics_request(int status, unsigned route, uint64_t ms, int64_t upstream_ms);
/* Counts one handshake: result and the SSL's protocol (NULL ssl: other). */
struct ssl_st;
void metrics_handshake(enum metrics_hs_result r, const struct ssl_st *ssl);

/* The sum over every slot of counter i. */
uint64_t metrics_sum(unsigned i);

/* Writes the whole exposition into a malloc'd string (*len bytes); NULL when out of
 * memory. */
char *metrics_render(size_t *len);

/* Certificates (metrics_certs.c): the validity of every entry with a key of f, stored as
 * file (replacing what was known of file); forget file; visit every row. Thread-safe. */
struct p12_file;
struct x509_st;
void metrics_certs_set(const char *file, const struct p12_file *f);
void metrics_certs_drop(const char *file);
void metrics_certs_each(void (*fn)(void *arg, const char *file, const char *alias,
                                   const char *sha, long long nb, long long na),
                        void *arg);
void metrics_certs_free(void);
/* notBefore, notAfter (Unix time) and the first 8 bytes of the SHA-256 of leaf in hex. */
int metrics_cert_times(struct x509_st *leaf, long long *nb, long long *na, char sha[17]);

/* One certificate's public facts (metrics_certs_put, metrics_certs_each_fact). */
struct metrics_cert_fact {
    const char *alias, *subject; /* subject: RFC 2253, e.g. "CN=host,O=Org" */
    char sha[17];                /* the first 8 bytes of the leaf's SHA-256, hex */
    long long nb, na;            /* notBefore, notAfter (Unix time) */
};
/* Replaces what is known of file by the n facts f (the records of certmeta.c). */
void metrics_certs_put(const char *file, const struct metrics_cert_fact *f, size_t n);
/* Visits every row with its subject (the expiry warnings). */
void metrics_certs_each_fact(void (*fn)(void *arg, const char *file,
                                        const struct metrics_cert_fact *f),
                             void *arg);
/* The subject of leaf in RFC 2253 form, malloc'd (NULL when out of memory). */
char *metrics_cert_subject(struct x509_st *leaf);

/* Binds host:port and starts the listener thread. -1 with "cannot listen on
 * 127.0.0.1:9998 for metrics (metrics-listen): Address already in use". */
int metrics_start(const char *host, unsigned port, char *err, size_t errlen);
/* The bound port (0: not started). */
unsigned metrics_port(void);
/* Stops the listener thread (if any). The slots stay (other threads may still count). */
void metrics_stop(void);

#endif
