/* fleetkey.h - the fleet key: 32 random bytes, the same file on every member of a fleet,
 * that seal the secrets certgate stores in etcd (the active certificate's password).
 *
 * A sealed value is the text "fk1:<key id>:<base64 of nonce (12) | AES-256-GCM ciphertext |
 * tag (16)>". The key id (16 hex digits: the first 8 bytes of SHA-256 over a fixed label and
 * the key) names the key without revealing it, so that a member holding another key is told
 * so ("sealed with another fleet key"), apart from a value that was altered (the tag does not
 * verify). The associated data binds a value to its etcd key name: a sealed value copied
 * under another key does not open.
 *
 * Thread-safe (no shared state). */
#ifndef CERTGATE_FLEETKEY_H
#define CERTGATE_FLEETKEY_H

#include <stddef.h>

#define FLEETKEY_FILE "fleet.key" /* in DIR/config/ unless fleet-key-file says otherwise */

struct fleet_key {
    unsigned char bytes[32];
    char id[17]; /* hex, NUL-terminated */
};

/* Reads the key file at path: a regular file of exactly 32 bytes with no permission for
 * group or others (else an error naming the file and the fix). */
int fleetkey_load(const char *path, struct fleet_key *out, char *err, size_t errlen);

/* Makes a new random key and writes it to path (mode 0600, atomically; the folder must
 * exist). An existing file is an error (errno EEXIST) unless replace is set. */
int fleetkey_create(const char *path, int replace, struct fleet_key *out, char *err,
                    size_t errlen);

/* Wipes the key bytes. */
void fleetkey_wipe(struct fleet_key *k);

/* Seals len bytes of plain for the etcd key name ad; a malloc'd string, NULL on failure. */
char *fleetkey_seal(const struct fleet_key *k, const char *ad, const void *plain, size_t len);

/* Opens a value sealed for ad: *plain (malloc'd, NUL-terminated; wipe it with secret_free)
 * and *len. Errors name ad and which of: not a sealed value, sealed with another fleet key
 * (both ids), or altered (authentication failed). */
int fleetkey_open(const struct fleet_key *k, const char *ad, const char *sealed, char **plain,
                  size_t *len, char *err, size_t errlen);

#endif
