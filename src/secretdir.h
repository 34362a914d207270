/* secretdir.h - the watched secret directory (`certgate run --tls-secret-dir DIR`), the
 * layout the Dynatrace operator mounts from a Kubernetes Secret:
 *
 *   DIR/server.p12   the PKCS#12 keystore to serve (required)
 *   DIR/password     its password (one trailing newline is stripped; absent: "")
 *   DIR/alias        the key entry to serve (surrounding blanks stripped; absent or
 *                    empty: the file's first key entry)
 *
 * DIR itself is watched with inotify (its own descriptor, polled by the main loop): any
 * change in it, including the kubelet's atomic update (a new timestamped folder, then the
 * ..data symlink renamed over; the visible names are links through ..data), re-reads the
 * set 200 ms after the last event. The set is read and decrypted in libuv's thread pool
 * (never on a loop), and only when its bytes differ from the last set looked at; a set
 * whose files change while they are read is read again. A new set is checked like an API
 * activation (p12_parse within its cost budget, the alias, p12_check_entry: an expired
 * leaf is refused) and switched to with gw_change_prepare/gw_change_commit_secret under
 * gw_lock; open connections keep their certificate. A bad set is refused with a log line
 * naming the file and the problem, an audit line and a metric; the served certificate
 * stays. If DIR goes away, that is logged and the watch is re-established (checked every
 * second) when it comes back.
 *
 * All functions run on the main thread (the loop given to secretdir_start). */
#ifndef CERTGATE_SECRETDIR_H
#define CERTGATE_SECRETDIR_H

#include <stddef.h>
#include <uv.h>

#define SECRETDIR_DEBOUNCE_MS 200
#define SECRETDIR_RETRY_MS 1000

/* Watches dir (which must exist: else -1 with "--tls-secret-dir DIR: ..."), records it
 * with gw_set_secret_dir, and loads its set at once (synchronously, before the gateway
 * serves): a valid set is served from then on; a bad one is refused as described above
 * and the configured (or default) certificate is served until a valid set appears.
 * Call after gw_open, before server_start. */
int secretdir_start(uv_loop_t *loop, const char *dir, char *err, size_t errlen);

/* Reads the set again soon (SIGHUP); a set refused before is checked again even when
 * its bytes are unchanged (the settings may have changed). No-op when not started. */
void secretdir_rescan(void);

/* Closes the watch and its handles (the stop signal); a read in progress finishes.
 * No-op when not started. */
void secretdir_stop(void);

/* Frees what is left, after the loop has ended. */
void secretdir_free(void);

#endif
