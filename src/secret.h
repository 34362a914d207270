/* secret.h - obfuscation of the certificate password in custom.properties, and
 * handling of secret strings.
 *
 * A random 256-bit key is created once in DIR/config/secret.key (mode 0600, written
 * atomically). A password is stored as `certificate-password-encr = v1:<base64>` where
 * the base64 holds nonce (12 bytes) | AES-256-GCM ciphertext | tag (16 bytes), with the
 * fixed associated data "certgate certificate-password v1". Thread-safe (no shared state). */
#ifndef CERTGATE_SECRET_H
#define CERTGATE_SECRET_H

#include <stddef.h>

#define SECRET_KEY_FILE "secret.key"

struct secret_key {
    unsigned char bytes[32];
};

/* Loads config_dir/secret.key, creating it when missing (create=1). A key file of the
 * wrong size or mode wider than 0600 is an error naming the file. */
int secret_key_load(const char *config_dir, int create, struct secret_key *out, char *err,
                    size_t errlen);

/* Wipes the key. */
void secret_key_wipe(struct secret_key *key);

/* Encrypts plain into a malloc'd "v1:..." string, or NULL on failure. */
char *secret_encrypt(const struct secret_key *key, const char *plain);

/* Decrypts a value made by secret_encrypt into a malloc'd string (free it with
 * secret_free). Fails with a sentence for a malformed value or one made with another key
 * or altered ("certificate-password-encr was not made with this gateway's key
 * (config/secret.key); set certificate-password in plain text again"). The key does not
 * know its folder, so the message names it relative to the data folder; callers may
 * prefix the file and line. */
int secret_decrypt(const struct secret_key *key, const char *encr, char **plain, char *err,
                   size_t errlen);

/* Wipes (OPENSSL_cleanse) and frees a secret string; NULL is fine. */
void secret_free(char *s);

/* Constant-time equality of two byte strings of the same length (0 = equal). */
int secret_memcmp(const void *a, const void *b, size_t len);

#endif
