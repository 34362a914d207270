/* etcd.h - a small etcd v3 client over etcd's HTTP/JSON gateway (libcurl + jansson).
 *
 * The calls etcd documents for clients without gRPC: POST /v3/kv/range, /v3/kv/txn,
 * /v3/lease/grant|keepalive|revoke and the streaming /v3/watch. Keys and values travel
 * base64-encoded; revisions are 64-bit numbers (JSON strings on the wire).
 *
 * Endpoints: a comma-separated list of client URLs. A request goes to the endpoint that
 * answered last; when it cannot connect, times out, or the member answers that it is
 * unavailable (no leader, stopping), the next endpoint is tried, each at most once per
 * request. etcd's own refusals (compacted revision, lease not found, bad request) are not
 * retried elsewhere.
 *
 * Errors: every call returns 0 or -1 (or a small positive outcome documented below) with a
 * sentence in err naming the endpoint and etcd's message, e.g.
 * "etcd http://127.0.0.1:2379: etcdserver: mvcc: required revision has been compacted", or
 * "etcd: no endpoint answered (http://127.0.0.1:2379: Couldn't connect to server; ...)".
 *
 * Threading: every call blocks (up to the timeout per endpoint; etcd_watch until stopped),
 * so a struct etcd is used by one thread at a time, never on a worker loop: the CLI, or a
 * fleet thread of its own. Different struct etcd may be used on different threads at once.
 * etcd_watch may be stopped from another thread through its stop flag. */
#ifndef CERTGATE_ETCD_H
#define CERTGATE_ETCD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define ETCD_MAX_ENDPOINTS 16

struct etcd;

struct etcd_opts {
    const char *endpoints; /* "http://127.0.0.1:2379,http://127.0.0.1:22379" */
    const char *ca_file;   /* verifies https:// endpoints; NULL: system store */
    const char *cert_file; /* client certificate (PEM), with key_file; NULL: none */
    const char *key_file;
    unsigned timeout_ms;   /* per request and endpoint; 0: 5000 */
    unsigned watch_idle_ms; /* a watch stream silent this long is cut and resumed on the next
                               endpoint (a hung or cut-off member keeps the TCP connection
                               open); 0: never */
};

/* Makes a client (no connection yet). Fails on an empty or malformed endpoint list. The
 * option strings are copied. */
int etcd_open(const struct etcd_opts *opts, struct etcd **out, char *err, size_t errlen);

/* Frees the client and its connections; NULL is fine. */
void etcd_close(struct etcd *e);

/* The endpoint that answered last (or will be tried first). Owned by e. */
const char *etcd_endpoint(const struct etcd *e);

/* One key-value pair as etcd returns it. key and value are malloc'd and NUL-terminated
 * (value may also hold NUL bytes: use value_len). */
struct etcd_kv {
    char *key;
    unsigned char *value;
    size_t value_len;
    int64_t create_revision, mod_revision, version, lease;
};

struct etcd_range_result {
    int64_t revision; /* the store's revision the answer was read at */
    struct etcd_kv *kvs;
    size_t n;
    int more; /* etcd had more keys than it returned (never with limit 0) */
};

/* Reads key (prefix: every key that starts with key) at revision (0: the latest). On
 * success *out is filled (free with etcd_range_free). */
int etcd_range(struct etcd *e, const char *key, int prefix, int64_t revision,
               struct etcd_range_result *out, char *err, size_t errlen);
void etcd_range_free(struct etcd_range_result *r);

/* A compare of a transaction: the key's mod_revision (ETCD_CMP_MOD) or create_revision
 * (ETCD_CMP_CREATE; 0 means "the key does not exist") must equal revision. */
enum etcd_cmp_target { ETCD_CMP_MOD, ETCD_CMP_CREATE };
struct etcd_cmp {
    const char *key;
    enum etcd_cmp_target target;
    int64_t revision;
};

/* An operation of a transaction: put key = value (under lease when nonzero), or delete key
 * (prefix: every key that starts with it). */
enum etcd_op_type { ETCD_OP_PUT, ETCD_OP_DELETE };
struct etcd_op {
    enum etcd_op_type type;
    const char *key;
    const void *value;
    size_t value_len;
    int64_t lease;
    int prefix;
};

/* If every compare holds, runs the operations, all in one revision. Returns 0 with
 * *succeeded = 1 when they ran, 0 when a compare failed (nothing ran); *revision (may be
 * NULL) is the store's revision after the transaction. -1 on an error. */
int etcd_txn(struct etcd *e, const struct etcd_cmp *cmps, size_t ncmps, const struct etcd_op *ops,
             size_t nops, int *succeeded, int64_t *revision, char *err, size_t errlen);

/* Leases: grant one of ttl_s seconds (*id: its ID), refresh it (*ttl_s: the seconds it
 * has now; a lease that has expired or was revoked is an error saying so), revoke it
 * (its keys are deleted). */
int etcd_lease_grant(struct etcd *e, int64_t ttl_s, int64_t *id, char *err, size_t errlen);
int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ttl_s, char *err, size_t errlen);
int etcd_lease_revoke(struct etcd *e, int64_t id, char *err, size_t errlen);

/* One change seen by a watch. */
struct etcd_event {
    int deleted; /* 1: the key was deleted (kv has key and mod_revision only), 0: put */
    struct etcd_kv kv;
};

/* Called for each batch of events of one watch answer (all of one revision or more, in
 * order); the events are freed after the call. Return 0 to go on, nonzero to stop. */
typedef int (*etcd_watch_fn)(void *arg, const struct etcd_event *events, size_t n);

#define ETCD_COMPACTED 1

/* Watches key (prefix: every key under it) from start_revision (0: from now) and calls fn
 * for the events, blocking until fn returns nonzero or *stop (may be NULL; checked at
 * least once a second) becomes nonzero: then 0. When the stream is cut (member stopped,
 * network), the watch is made again on the next endpoint from the revision after the last
 * event delivered, so no event is lost or repeated; it fails (-1) only when no endpoint
 * accepts it, one round through all of them. A stream that brings nothing for the options'
 * watch_idle_ms is cut and resumed the same way: a member that hangs (or a network that
 * drops packets silently) keeps its connection open but answers nothing. The watch asks
 * for etcd's progress notifications (--experimental-watch-progress-notify-interval, 10 min
 * by default), which keep a quiet stream from being cut when etcd sends them more often,
 * and move the resume point to their revision. When start_revision (or the resume point)
 * has been compacted away, it returns ETCD_COMPACTED with *compact_revision = the oldest
 * revision still available: read the state again (etcd_range) and watch from there. */
int etcd_watch(struct etcd *e, const char *key, int prefix, int64_t start_revision,
               etcd_watch_fn fn, void *arg, const atomic_int *stop, int64_t *compact_revision,
               char *err, size_t errlen);

/* Base64 (standard alphabet, with padding) as etcd's JSON uses for bytes. encode returns a
 * malloc'd string; decode a malloc'd buffer (NUL-terminated, *len without the NUL), NULL
 * on malformed input or no memory. */
char *etcd_b64_encode(const void *data, size_t len);
unsigned char *etcd_b64_decode(const char *s, size_t *len);

#endif
