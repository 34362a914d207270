/* acme_store.h - what the ACME client keeps on disk, and the hand-over of an issued
 * certificate to the gateway.
 *
 *   DIR/acme/              0700
 *   DIR/acme/account.key   the account's ECDSA P-256 key (PEM, 0600), made once, reused
 *   DIR/acme/account.json  {"directory":URL,"url":account URL} (0600)
 *   DIR/acme/certificate.json  {"file","password-encr","domains","not-before","not-after"}
 *   DIR/ssl/acme-<first domain>.p12  the certificate (PKCS#12, AES-256, random password
 *                          kept obfuscated with config/secret.key in certificate.json)
 *
 * Called by the ACME thread, and at start by the main thread (acme_store_open,
 * acme_store_load_cert) before that thread exists. Thread-safety: no shared state of
 * its own; the gateway's state is changed under gw_lock. */
#ifndef CERTGATE_ACME_STORE_H
#define CERTGATE_ACME_STORE_H

#include <stddef.h>
#include <time.h>

#include "conf.h"

struct evp_pkey_st;
struct json_t;

/* What the stored certificate is (zeroed: none). */
struct acme_cert_info {
    char file[160];     /* its name in DIR/ssl */
    time_t not_before, not_after;
    int domains_match;  /* it carries exactly the configured domains */
    char ari_id[200];   /* its RFC 9773 certID (acme_ari.h), "" when it has none */
};

/* Creates DIR/acme (0700) unless readonly and loads the obfuscation key. */
int acme_store_open(const char *data_dir, char *err, size_t errlen);
void acme_store_close(void);

/* The account key: loaded, or made and written (0600) when there is none. */
struct evp_pkey_st *acme_store_account_key(char *err, size_t errlen);
/* The stored account URL for directory, or NULL (malloc'd). */
char *acme_store_account_url(const char *directory);
/* Records (url) or forgets (NULL) the account of directory. */
int acme_store_set_account(const char *directory, const char *url, char *err, size_t errlen);

/* The name the certificate of cfg is stored under (acme-<first domain>.p12). */
void acme_store_file_name(const struct conf_acme *cfg, char *out, size_t outlen);

/* Loads the stored certificate and hands it to the gateway (served when no custom one
 * is active). 0 with *info (info->file empty: there is none, or it is expired or
 * unreadable: logged), -1 only when memory is short. */
int acme_store_load_cert(const struct conf_acme *cfg, struct acme_cert_info *info);

/* The password of the stored certificate `file` (malloc'd; free with secret_free), or
 * NULL when file is not the one recorded in certificate.json. Thread-safe after
 * acme_store_open (reads only). */
char *acme_store_password(const char *file);

/* For check-config (reads only, acme_store_open not needed): the certificate recorded
 * in data_dir/acme/certificate.json, as "acme-x.p12 for a, b (valid to T)" in buf. 1 when
 * it would be served (its file is there, not expired, for cfg's domains), else 0 with
 * the reason in buf. */
int acme_store_describe(const char *data_dir, const struct conf_acme *cfg, char *buf,
                        size_t len);

/* DIR/acme/status.json (written by the ACME thread, read by `certgate acme status`). */
int acme_store_write_status(struct json_t *status, char *err, size_t errlen);
/* `certgate acme renew` leaves DIR/acme/renew-request; 1 when it was there (it is then
 * removed), else 0. */
int acme_store_take_renew_request(void);

/* The issued chain (PEM, leaf first) with its key: built into a PKCS#12, validated as an
 * API upload is, then under gw_lock written to DIR/ssl, recorded, and published. On error
 * nothing is changed (-1 and a sentence). */
int acme_store_install(const struct conf_acme *cfg, const char *chain_pem, size_t chain_len,
                       struct evp_pkey_st *key, struct acme_cert_info *info, char *err,
                       size_t errlen);

/* The same hand-over for a keystore that was issued elsewhere (a fleet member ordered it,
 * acme_fleet.c): der (PKCS#12, password) stored as name, recorded for domains (a JSON
 * array; info->domains_match says whether they are cfg's). On error nothing is changed. */
int acme_store_install_p12(const struct conf_acme *cfg, const char *name,
                           const unsigned char *der, size_t der_len, const char *password,
                           struct json_t *domains, struct acme_cert_info *info, char *err,
                           size_t errlen);

#endif
