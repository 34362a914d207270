/* p12.h - PKCS#12 keystores: loading, Java-compatible aliases, refusal reasons and
 * Java-compatible descriptions.
 *
 * Aliases follow Java's PKCS12 KeyStore: a key entry's alias is its friendlyName
 * lower-cased (Locale.ENGLISH); a key entry without friendlyName gets "1", "2", ... in
 * file order. A certificate bag with Java's trusted-certificate attribute (as keytool
 * -importcert writes) is a trusted-certificate entry with an alias of its own; other
 * certificate bags belong to the chains of key entries. Entries keep file order.
 *
 * Legacy-encrypted files (RC2-40, 3DES) need OpenSSL's "legacy" provider:
 * p12_init() loads it beside "default" once per process.
 *
 * OpenSSL types cross this interface only as opaque struct pointers; only the TLS and
 * certificate modules dereference them. Not thread-safe per object, but distinct
 * objects may be used from distinct threads; a loaded p12_file is immutable and may
 * be read from several threads at once. */
#ifndef CERTGATE_P12_H
#define CERTGATE_P12_H

#include <stddef.h>
#include <time.h>

struct x509_st;
struct evp_pkey_st;
struct stack_st_X509;
struct json_t;

enum p12_status {
    P12_OK = 0,
    P12_ERR_IO,           /* could not read the file */
    P12_ERR_FORMAT,       /* not PKCS#12 / corrupt / unsupported algorithm */
    P12_ERR_PASSWORD,     /* the password does not open the file */
    P12_ERR_TWOPASS,      /* MAC verifies but the key bag does not decrypt with it */
    P12_ERR_NO_KEY,       /* no private key in the file */
    P12_ERR_KEY_MISMATCH, /* a key entry's private key does not match its certificate */
    P12_ERR_ALIAS,        /* the requested alias is not a key entry of the file */
    P12_ERR_INTERNAL,     /* out of memory, OpenSSL failure */
    P12_ERR_COST          /* opening it would cost more than the budget (p12_cost_der) */
};

struct p12_file;
struct p12_entry;

/* Loads the legacy and default providers (idempotent, thread-safe). Returns 0, or -1
 * with a sentence when the legacy provider is unavailable (default still works). */
int p12_init(char *err, size_t errlen);

/* Parses a DER PKCS#12 blob. `label` names the file in messages (e.g. "cert.p12").
 * Messages (in err):
 *   P12_ERR_FORMAT       "<label>: not a PKCS#12 file (...)"
 *   P12_ERR_PASSWORD     "<label>: wrong password"
 *   P12_ERR_TWOPASS      "<label>: the key password differs from the file password
 *                         (files made with -twopass are not supported)"
 *   P12_ERR_NO_KEY       "<label>: no private key in the file; it must hold a private key
 *                         and its certificate chain"
 *   P12_ERR_KEY_MISMATCH "<label>: the private key of alias '<a>' does not match its
 *                         certificate" (or "... has no certificate" when none pairs with it)
 *   P12_ERR_COST         "<label>: key derivation would take 5,000,000 PBKDF2 iterations
 *                         ...; the limit is 2,000,000 (...)" (see p12_cost_der)
 * Every key entry is checked, not only the one that will be selected. The cost budget
 * (p12_cost_der) is checked before any key derivation; bags that only become visible
 * once their container is decrypted are added to it before their own derivation.
 * An empty password and a NULL password are both tried for "" (OpenSSL treats them
 * differently). On success *out owns everything. */
enum p12_status p12_parse(const void *der, size_t len, const char *password, const char *label,
                          struct p12_file **out, char *err, size_t errlen);

/* ----- the cost of opening a file -----
 *
 * Every password-based key derivation a file asks for (the MAC, each encrypted
 * SafeContents, each shrouded key bag) names its own cost. The budget per file, per
 * password tried (an empty password is tried twice, as "" and as NULL):
 *   P12_MAX_ITERATIONS   PBES1 / PKCS#12-KDF / PBKDF2 iterations summed over the MAC and
 *                        every encrypted part (~50-95 ms per 100,000 here, so ~2 s at most;
 *                        openssl uses 2,048 per part, keytool 10,000);
 *   P12_MAX_SCRYPT_MEM   128 * N * r bytes for the largest scrypt part (OpenSSL's own cap);
 *   P12_MAX_SCRYPT_WORK  N * r * p summed over the scrypt parts (~0.8 us per unit here, so
 *                        ~1.7 s at most; N=16384, r=8, p=1 is 131,072);
 *   P12_MAX_DERIVATIONS  derivations per file.
 * Any other key-derivation function is refused (P12_ERR_FORMAT). */
#define P12_MAX_ITERATIONS 2000000ull
#define P12_MAX_SCRYPT_MEM (32ull << 20)
#define P12_MAX_SCRYPT_WORK 2097152ull
#define P12_MAX_DERIVATIONS 64u

struct p12_cost {
    unsigned long long iterations;  /* PBKDF2 / PKCS#12-KDF iterations, summed */
    unsigned long long scrypt_mem;  /* bytes, the largest scrypt part */
    unsigned long long scrypt_work; /* N * r * p, summed */
    unsigned derivations;
};

/* Walks the DER structure of a PKCS#12 file without a password and without deriving
 * anything: the MAC, every encrypted SafeContents, every shrouded key bag of the plain
 * SafeContents (nested ones too). Fills *c (as far as it got) and returns P12_OK,
 * P12_ERR_COST with a sentence that says what is too costly and the limit, or
 * P12_ERR_FORMAT (undecodable, unknown key-derivation function). Milliseconds. */
enum p12_status p12_cost_der(const void *der, size_t len, const char *label,
                             struct p12_cost *c, char *err, size_t errlen);

/* For p12.c: the same walk over a decoded file (clears *c first), and one more
 * derivation (a PBE AlgorithmIdentifier) added to *c and checked. */
struct PKCS12_st;
struct X509_algor_st;
enum p12_status p12_cost_pkcs12(const struct PKCS12_st *p12, struct p12_cost *c,
                                const char *label, char *err, size_t errlen);
enum p12_status p12_cost_add(struct p12_cost *c, const struct X509_algor_st *alg,
                             const char *label, char *err, size_t errlen);

/* Reads path (at most 16 MiB) and parses it; label = the file's base name. */
enum p12_status p12_load_file(const char *path, const char *password, struct p12_file **out,
                              char *err, size_t errlen);

/* Builds a one-entry keystore from a key and certificate (each up-ref'd, not taken),
 * used for the default certificate. chain may be NULL. */
struct p12_file *p12_from_key_cert(struct evp_pkey_st *key, struct x509_st *cert,
                                   struct stack_st_X509 *chain, const char *alias);

void p12_free(struct p12_file *f);

/* Entries in file order (key entries and trusted-certificate entries). */
size_t p12_count(const struct p12_file *f);
const struct p12_entry *p12_get(const struct p12_file *f, size_t i);

/* The key entry for alias (lower-cased first, as Java's KeyStore.getKey does), or the first key
 * entry when alias is NULL or "". P12_ERR_ALIAS: "<label>: alias '<a>' not found; the
 * file's key aliases are: 'x', 'y'". */
enum p12_status p12_select(const struct p12_file *f, const char *alias,
                           const struct p12_entry **out, char *err, size_t errlen);

const char *p12_entry_alias(const struct p12_entry *e);
int p12_entry_has_key(const struct p12_entry *e);
/* Borrowed pointers, valid while the p12_file lives. key is NULL for trusted-cert
 * entries. chain holds the certificates of the file that chain up from the leaf, in
 * order (issuer of the leaf first), never the leaf itself; it may be empty. */
struct evp_pkey_st *p12_entry_key(const struct p12_entry *e);
struct x509_st *p12_entry_cert(const struct p12_entry *e);
struct stack_st_X509 *p12_entry_chain(const struct p12_entry *e);

/* An alias as Java's PKCS12 KeyStore stores it: String.toLowerCase(Locale.ENGLISH)
 * (Unicode simple lower-case mapping, U+0130 -> "i" U+0307, final sigma). Use it to
 * normalise a configured certificate-alias. malloc'd; NULL when out of memory. */
char *p12_java_lower(const char *s);

/* ----- checks before a certificate is served (p12_check.c) ----- */

/* Checks the key entry e as of `now`. Refuses (-1, a sentence in err) a leaf that has
 * expired. Otherwise 0, and appends to `warnings` (a jansson array, may be NULL) one
 * sentence per finding: expires within 30 days, not valid yet, no subjectAltName, an
 * extended key usage without serverAuth, RSA under 2048 bits, a SHA-1 signature (leaf
 * or intermediate; roots excepted), a chain that ends below a root that is not in the
 * system's trusted certificates (naming the missing issuer). Key/certificate mismatches
 * are refused earlier, by p12_parse. Thread-safe. */
int p12_check_entry(const struct p12_entry *e, time_t now, struct json_t *warnings, char *err,
                    size_t errlen);

/* ----- PKCS#12 files from PEM (p12_pem.c) ----- */

/* PBKDF2 iterations of each of the three derivations of a built file. */
#define P12_PEM_ITER 10000

/* PEM inputs; labels name them in messages (file names). key and cert may be the same
 * buffer (a bundle: key + certificates); chain may be NULL. key_password NULL: the key
 * must not be encrypted. */
struct p12_pem_src {
    const void *cert;
    size_t cert_len;
    const char *cert_label;
    const void *key;
    size_t key_len;
    const char *key_label;
    const char *key_password;
    const void *chain;
    size_t chain_len;
    const char *chain_label;
};

/* Builds a DER PKCS#12 with one key entry `alias` (NULL: "1"): the private key, the
 * certificate of the cert input that matches it (the leaf), and the other certificates
 * of the cert and chain inputs ordered from the leaf up. PBES2 AES-256-CBC with
 * PBKDF2-HMAC-SHA256 for key and certificates, an HMAC-SHA256 MAC, P12_PEM_ITER
 * iterations each. Refused (-1, a sentence naming the input): no or unreadable key, an
 * encrypted key without password or with a wrong one, no certificate, no certificate
 * matching the key, a chain certificate that is not on the leaf's path. A chain given out
 * of order adds a sentence to warnings (may be NULL). On success *der (free with
 * p12_der_free) and *len. Thread-safe. */
int p12_pem_build(const struct p12_pem_src *src, const char *alias, const char *password,
                  unsigned char **der, size_t *len, struct json_t *warnings, char *err,
                  size_t errlen);
void p12_der_free(unsigned char *der, size_t len);

/* A random password (48 hex digits, 192 bits) into buf (at least 49 bytes); 0 or -1. */
int p12_random_password(char *buf, size_t len);

/* ----- descriptions, as ActiveGate (Java) prints them ----- */

/* "Subject:<DN>;Valid from:<date>;Valid to:<date>;Serial number:<hex>" with the DN as
 * X500Principal.toString(), dates as java.util.Date.toString() in the local time zone,
 * serial as BigInteger.toString(16). malloc'd. */
char *p12_java_description(struct x509_st *cert);

/* A certificate's DN as Java's X500Principal.toString() (subject when issuer == 0). */
char *p12_java_dn(struct x509_st *cert, int issuer);

/* A time as java.util.Date.toString(): "Fri Feb 15 13:16:58 CET 2019". */
void p12_java_date(time_t t, char *buf, size_t buflen);

/* The description of a keystore as the certificate API returns it:
 * {"name":name,"desc":[{"alias":..,"description":..,  + certgate's own fields:
 *   "type":"key"|"trustedCert", "subject", "issuer", "serial", "notBefore", "notAfter"
 *   (ISO 8601 UTC), "daysLeft", "sha256" (hex of the DER), "sans":[..],
 *   "keyType" ("RSA-2048", "EC-P256", ...), "chainLength", "names"}, ...]}
 * "sans" holds "DNS:<name>", "IP:<address>", "email:<addr>", "URI:<uri>" strings;
 * "chainLength" counts the certificates served: the leaf plus its chain (1 for a
 * trusted-certificate entry); "daysLeft" is floor((notAfter - now) / 1 day); "names" the
 * server names a key entry answers for when its file is active (sni_cert_names: DNS
 * subjectAltNames, else the CN; [] for a trusted-certificate entry).
 * New reference (jansson). */
struct json_t *p12_describe(const struct p12_file *f, const char *name);

#endif
