/* api_fleet.h - certificate writes of a fleet member's API as etcd transactions (issue 13,
 * stage 4b).
 *
 * A write (upload, activate, delete) on a member reads the keys it depends on
 * (<prefix>/<env>/certs/<name> and <prefix>/<env>/active) with api_fleet_begin, is
 * validated locally as on a single node (api_fleet_ops.c, api_ops.c), then api_fleet_put /
 * api_fleet_delete make ONE etcd transaction that compares the mod_revision of both keys
 * with what was read and writes them: of two requests racing on two members one commits,
 * the other gets 409.
 * The answer waits until this member's sync thread has applied the transaction's revision
 * (and with ?wait=all until every live member reports it), bounded by a timeout (then 202).
 * A change committed in etcd that this member (or with ?wait=all another one) could not
 * activate answers 202 too, naming the member and its sentence under "behind".
 *
 * Every call blocks on etcd: run them in the thread pool, never on a worker loop; each
 * struct api_fleet has its own etcd client (etcd.h: one thread at a time). */
#ifndef CERTGATE_API_FLEET_H
#define CERTGATE_API_FLEET_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct etcd;

/* etcd's default request limit (--max-request-bytes, 1.5 MiB) less room for the JSON. */
#define API_FLEET_MAX_VALUE (1536u * 1024u - 8u * 1024u)
#define API_FLEET_LOCAL_WAIT_MS 10000 /* until this member has applied its own write */
#define API_FLEET_ALL_WAIT_MS 5000 /* ?wait=all: until every live member has (a member that
                                     * died stays live until its 10 s lease ends); the
                                     * default of ?timeout=S, 1..API_FLEET_ALL_WAIT_MAX_S */
#define API_FLEET_ALL_WAIT_MAX_S 60
#define API_FLEET_POLL 1 /* not a status: committed and applied here, now api_fleet_poll_all */
#define API_FLEET_POLL_MS 50 /* between two looks at the member keys */

struct api_fleet {
    struct etcd *e;
    char under[512], env[128];
    char cert_key[1024], active_key[704];
    int64_t cert_rev, active_rev; /* mod_revision read (0: the key does not exist) */
    unsigned char *cert;          /* certs/<name>'s bytes (want_bytes) */
    size_t cert_len;
    char active_name[256]; /* the active record's name ("" without one) */
    int64_t revision;      /* the committed transaction's revision */
    /* an answer other than 200: its status, sentence and extra header lines */
    int status;
    char msg[3000];
    const char *extra;
    json_t *behind; /* 202: [{"member":..,"applied":..,"error":..,"failed":true}] */
    /* ?wait=all, between api_fleet_poll_all calls */
    char name[256];
    const char *what; /* "uploaded", "activated", "deleted" */
    unsigned wait_all_ms;
    uint64_t deadline_ms; /* CLOCK_MONOTONIC */
};

/* Opens the client and reads both keys for name (the certificate's bytes when
 * want_bytes). 0, or -1 with status/msg (503 when etcd does not answer). */
int api_fleet_begin(struct api_fleet *f, const char *name, int want_bytes);

/* Puts certs/<name> = data (when data; an activation passes NULL) and the active record
 * {name, alias, password sealed with the fleet key} in one transaction, then waits until
 * this member has applied it. Returns the status: 200, 202 (committed, but not applied
 * here: msg, behind), 409, 413, 503, 500 (msg); or, when wait_all_ms is not 0 (?wait=all)
 * and it is applied here, API_FLEET_POLL: call api_fleet_poll_all (every
 * API_FLEET_POLL_MS) until it answers, at most wait_all_ms from now. */
int api_fleet_put(struct api_fleet *f, const char *name, const void *data, size_t len,
                  const char *password, const char *alias, unsigned wait_all_ms);

/* Deletes certs/<name> in one transaction (comparing both keys), then waits as put. */
int api_fleet_delete(struct api_fleet *f, const char *name, unsigned wait_all_ms);

/* A delete with the fleet's rules: begin, then 404 (not in etcd), 403 (the fleet's active
 * file, or acme_owned), else api_fleet_delete. Returns the status (msg as above). */
int api_fleet_remove(struct api_fleet *f, const char *name, int acme_owned,
                     unsigned wait_all_ms);

/* ?wait=all after API_FLEET_POLL: ONE look at the member keys (one etcd request; the
 * caller holds no thread between two looks). API_FLEET_POLL while a live member has not
 * reported f->revision and wait_all_ms has not passed, unless last (the client has gone:
 * answer now); else the status: 200 (every live member reports it), 202 (msg, behind:
 * who has not, or could not apply it: "failed" with its "error"; a failure ends the wait
 * at once when no member is merely behind). */
int api_fleet_poll_all(struct api_fleet *f, int last);

/* The body of a committed write: 200: a copy of desc (NULL: {}) with "revision"; 202:
 * {"code":202,"message":..,"revision":..,"behind":[..]}. malloc'd, NULL without memory. */
char *api_fleet_body(const struct api_fleet *f, int st, json_t *desc);

/* Closes the client and frees what begin read. */
void api_fleet_end(struct api_fleet *f);

#endif
