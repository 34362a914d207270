/* fleet_sync.h - a running gateway's side of the fleet (issue 13, stage 4a).
 *
 * With [fleet] etcd set, `certgate run` starts two threads of its own (never a worker
 * loop; both block on etcd through src/etcd.c):
 *   - the sync thread reads the fleet state under <prefix>/ (a full read at start, after
 *     etcd was unreachable, and when its watch revision was compacted), then watches the
 *     prefix from the revision it applied. Certificate files (<prefix>/<env>/certs/<name>)
 *     are written to DIR/ssl, the local cache, and their names recorded in the manifest
 *     DIR/config/fleet-cache.json (fleet_cache.h); a delete event removes the file, and a
 *     full read removes the files of the manifest that etcd no longer has (deleted while
 *     this member was down, cut off or compacted), each logged, with their metrics and
 *     metadata, as an API delete does. Never removed: the file this member serves, the ACME
 *     certificate (acme_owns_file), and names not in the manifest (files an operator placed
 *     by hand, which etcd never had); the tokens (<prefix>/tokens/) are written to tokens.json
 *     (hashes only); a change of <prefix>/<env>/active (or of the active file's bytes) is
 *     activated through the same steps as an API activation: the sealed password opened
 *     with the fleet key, the file parsed and checked, then under gw_lock
 *     gw_change_prepare, gw_record_certificate, gw_change_commit. Anything that fails
 *     (wrong fleet key, altered value, a file that does not load) is logged and reported
 *     under the member key; the gateway keeps serving what it had.
 *   - the member thread keeps <prefix>/members/<member-id> = {"applied":N,"serving":..,
 *     "error":..,"time":..} under a 10 s lease, refreshed every 3 s and rewritten when
 *     what it says changes; the lease is revoked at a clean stop.
 * When etcd cannot be reached the gateway serves its cache and retries every second (each
 * thread logs one warning per outage, naming the cause, e.g. a wrong [fleet] ca-file); it
 * converges when etcd is back (full read). A watch that receives nothing for 5 x [fleet]
 * timeout is cut and resumed on the next endpoint (etcd.h), so a hung etcd member does not
 * hold a member back. Nothing compares the members' clocks: member
 * keys expire by etcd's lease TTL, and the "time" of a member key is for people only.
 *
 * API writes of a member go through etcd transactions (api_fleet.c, stage 4b) using the
 * accessors at the end of this header.
 * */
#ifndef CERTGATE_FLEET_SYNC_H
#define CERTGATE_FLEET_SYNC_H

#include <stddef.h>
#include <stdint.h>

struct conf_settings;
struct etcd;
struct json_t;

/* Starts the threads when s->fleet.etcd is set (else does nothing and returns 0).
 * config_dir and ssl_dir are the data directory's folders. Fails (-1, sentence) when the
 * fleet key cannot be read or the etcd options are unusable; etcd being unreachable is
 * not an error (the cache is served). Call once, from the main thread. */
int fleet_sync_start(const struct conf_settings *s, const char *config_dir, const char *ssl_dir,
                     char *err, size_t errlen);

/* Stops and joins the threads (the watch notices within a second), revoking the member
 * lease. Safe when nothing was started. */
void fleet_sync_stop(void);

/* 1 while the fleet threads run: the certificate state belongs to etcd, and the API of a
 * member writes it through etcd transactions (api_fleet.c). */
int fleet_sync_on(void);

/* ----- for the API of a member (api_fleet.c); only while fleet_sync_on() ----- */

/* Opens an etcd client with the member's options, for the calling thread alone (etcd.h:
 * a struct etcd is used by one thread at a time); the caller closes it. */
int fleet_sync_open(struct etcd **e, char *err, size_t errlen);

/* "<prefix>/" and the member's environment; -1 while the environment is not known yet
 * (no fleet state read so far). */
int fleet_sync_names(char *under, size_t ulen, char *env, size_t elen);

/* The member id ([fleet] member-id). */
const char *fleet_sync_member_id(void);

/* plain sealed with the fleet key for the etcd key ad (fleetkey_seal); malloc'd or NULL. */
char *fleet_sync_seal(const char *ad, const char *plain);

/* The revision of the last fleet change this member applied. */
int64_t fleet_sync_applied(void);

/* Waits until the applied revision is >= rev: 0, or -1 after timeout_ms (or at stop). */
int fleet_sync_wait_applied(int64_t rev, unsigned timeout_ms);

/* After fleet_sync_wait_applied(rev): 0 when this member's last activation worked (or
 * was of a revision before rev), -1 when its activation of the state at a revision >= rev
 * failed (the file does not load here, its cache copy is missing, another fleet key...):
 * err gets that failure's sentence, and the member keeps serving what it had. The member
 * key reports the same failure as "error" with "failedRevision". Thread-safe. */
int fleet_sync_outcome(int64_t rev, char *err, size_t errlen);

/* ----- for the ACME client of a member (acme_fleet.c) ----- */

/* Called by the sync thread for each key under <prefix>/<env>/acme/ it reads or sees
 * change: rest is what follows "acme/" ("lock", "certificate", "http01/<token>"), v the
 * value (NULL when deleted). At the start of each full read it is called once with rest
 * NULL (forget what was learnt from the watch). */
typedef void (*fleet_sync_acme_fn)(const char *rest, const unsigned char *v, size_t len,
                                   int deleted);
/* Sets the hook; call before fleet_sync_start. */
void fleet_sync_set_acme_hook(fleet_sync_acme_fn fn);

/* Opens a value sealed with the fleet key for the etcd key ad (fleetkey_open): *plain
 * (malloc'd; free with secret_free). 0, or -1 with a sentence. */
int fleet_sync_unseal(const char *ad, const char *sealed, char **plain, char *err,
                      size_t errlen);

/* The live members (the keys under <prefix>/members/, read with the caller's client e) that have not
 * applied rev, or whose activation of a change at >= rev failed: *behind (a new JSON array
 * of {"member","applied"[,"error"][,"failed":true]}), their count (the failed ones also in
 * *failed), or -1 with a sentence when etcd does not answer. The member keys are written
 * by this module's member thread; this is their one reader. */
int fleet_sync_members_behind(struct etcd *e, int64_t rev, struct json_t **behind, int *failed,
                              char *err, size_t errlen);

#endif
