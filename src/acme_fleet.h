/* acme_fleet.h - ACME in a fleet (issue 13): one member orders at a time, under an etcd
 * lease lock, and the issued certificate reaches every member through etcd.
 *
 * When [fleet] etcd and [acme] are both set, the keys under <prefix>/<env>/acme/ are:
 *   lock            {"member","time"}, attached to the orderer's lease (acme-lock-ttl,
 *                   kept alive every third of it by a thread of its own while the order
 *                   runs, revoked after it). Made by a transaction that compares its
 *                   create_revision with 0: one member holds it; a member that dies with it
 *                   loses it when the lease ends.
 *   certificate     {"file","p12" (the PKCS#12 bytes, base64),"password" (sealed with the
 *                   fleet key for this key name),"domains","not-before","not-after",
 *                   "member","time"}; no lease. Written by the lock holder after its order,
 *                   in a transaction that compares the lock's revision with its own.
 *   http01/<token>  {"member","name","type","keyauth"}: a challenge being validated,
 *                   under the lock's lease (deleted after it). Every member answers it
 *                   (http-01 on its plain port, tls-alpn-01 with a challenge certificate it
 *                   makes itself), as the CA's request may reach any member.
 * Every member's sync thread (fleet_sync.c) hands these keys to acme_fleet's hook, which
 * applies a new certificate through the same hand-over as a local order
 * (acme_store_install_p12: validated, written to DIR/ssl + DIR/acme/certificate.json as the
 * cache, gw_acme_prepare/commit) and tells the ACME thread (acme_adopt).
 *
 * Threads: the lock, fetch, publish and challenge calls are the ACME thread's (its own
 * etcd client); the hook runs on the sync thread; acme_fleet_status anywhere. */
#ifndef CERTGATE_ACME_FLEET_H
#define CERTGATE_ACME_FLEET_H

#include <stddef.h>

#include "conf.h"

struct acme_cert_info;
struct etcd_kv;
struct json_t;

/* acme_init (main thread, before the fleet threads start): registers the hook when
 * fleet->etcd is set. cfg and file stay valid until acme_fleet_shutdown. */
void acme_fleet_init(const struct conf_acme *cfg, const char *file,
                     const struct conf_fleet *fleet);
/* 1 when this member's ACME client works through the fleet (its sync threads run). */
int acme_fleet_on(void);
/* acme_stop, after the ACME thread ended and before the store is closed: the hook does
 * nothing from now on. */
void acme_fleet_shutdown(void);

/* ----- the ACME thread ----- */

/* Tries to take the lock: 1 taken (kept alive until acme_fleet_unlock), 0 held by another
 * member (holder: "b since 2026-11-30T10:00:00Z"), -1 etcd failed or the fleet's state has
 * not been read yet (sentence). */
int acme_fleet_lock(char *holder, size_t hlen, char *err, size_t errlen);
/* 1 while this member holds the lock. */
int acme_fleet_locked(void);
/* Under the lock: the fleet's certificate in etcd, applied here when it is new to this
 * member. 1 with *info (its file and dates) when there is one this member serves, 0 when
 * there is none (or it is refused here: logged), -1 when etcd failed. */
int acme_fleet_fetch(struct acme_cert_info *info, char *err, size_t errlen);
/* Under the lock: puts the certificate just issued (info->file in DIR/ssl) into etcd. */
int acme_fleet_publish(const struct acme_cert_info *info, char *err, size_t errlen);
/* Under the lock: shares a pending challenge and waits (at most 2 s) until every live
 * member has applied it. 0 (also when not locked), or -1 + sentence. */
int acme_fleet_share_challenge(const char *name, const char *token, const char *keyauth,
                               char *err, size_t errlen);
/* Deletes the shared challenges (when locked). */
void acme_fleet_clear_challenges(void);
/* Releases the lock (revokes its lease: the lock and challenges go). */
void acme_fleet_unlock(void);
/* At the ACME thread's end: unlock, close its etcd client. */
void acme_fleet_close(void);

/* ----- status ----- */

/* {"lock":{"member","since"},"certificate":{"file","member","notAfter","time"}} as this
 * member's sync thread saw them last (absent ones left out); new reference, NULL when the
 * ACME client is not in a fleet. */
struct json_t *acme_fleet_status(void);

/* `certgate fleet status`: one line for the key <prefix>/<env>/acme/<rest>. */
void acme_fleet_print(const char *env, const char *rest, const struct etcd_kv *kv);

#endif
