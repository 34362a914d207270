/* acme_store.c - the ACME client's files and the hand-over to the gateway (see
 * acme_store.h). */
#include "acme_store.h"

#include "acme_ari.h"
#include "acme_jws.h"
#include "err.h"
#include "fsutil.h"
#include "gw.h"
#include "log.h"
#include "p12.h"
#include "secret.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/asn1.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ACME_STATE_MAX (64u * 1024)

static struct {
    char *dir;
    struct secret_key skey;
    int skey_loaded;
} S;

int acme_store_open(const char *data_dir, char *err, size_t errlen)
{
    free(S.dir);
    if (!(S.dir = fs_path_join(data_dir, "acme"))) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    if (fs_mkdir_p(S.dir, 0700, 1, err, errlen) != 0) return -1;
    fs_remove_stale_temps(S.dir);
    char *config = fs_path_join(data_dir, "config");
    int rc = config ? secret_key_load(config, 1, &S.skey, err, errlen) : -1;
    free(config);
    S.skey_loaded = rc == 0;
    return rc;
}

void acme_store_close(void)
{
    secret_key_wipe(&S.skey);
    S.skey_loaded = 0;
    free(S.dir);
    S.dir = NULL;
}

static json_t *read_json(const char *name)
{
    char *data = NULL;
    size_t len = 0;
    if (fs_read_entry(S.dir, name, ACME_STATE_MAX, &data, &len, NULL, 0) != 0) return NULL;
    json_t *j = json_loadb(data, len, 0, NULL);
    free(data);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static int write_json(const char *name, json_t *j, char *err, size_t errlen)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    int rc = text ? fs_write_entry(S.dir, name, text, strlen(text), 0600, err, errlen) : -1;
    if (!text) err_set(err, errlen, "out of memory");
    free(text);
    return rc;
}

struct evp_pkey_st *acme_store_account_key(char *err, size_t errlen)
{
    char *pem = NULL;
    size_t len = 0;
    char e[400];
    struct evp_pkey_st *k = NULL;
    if (fs_read_entry(S.dir, "account.key", 64 * 1024, &pem, &len, e, sizeof e) == 0) {
        k = acme_key_from_pem(pem, len, e, sizeof e);
        if (!k) err_set(err, errlen, "%s/account.key: %s", S.dir, e);
        OPENSSL_cleanse(pem, len);
        free(pem);
        return k;
    }
    if (errno != ENOENT) {
        err_set(err, errlen, "%s", e);
        return NULL;
    }
    if (!(k = acme_key_new(CONF_ACME_ECDSA_P256, err, errlen))) return NULL;
    pem = acme_key_to_pem(k, &len);
    char *path = fs_path_join(S.dir, "account.key");
    int rc = pem && path ? fs_create_atomic(path, pem, len, 0600, err, errlen) : -1;
    if (!pem || !path) err_set(err, errlen, "out of memory");
    if (pem) OPENSSL_cleanse(pem, len);
    free(pem);
    free(path);
    if (rc != 0) {
        acme_key_free(k);
        return NULL;
    }
    log_info("acme: new account key %s/account.key", S.dir);
    return k;
}

char *acme_store_account_url(const char *directory)
{
    json_t *j = read_json("account.json");
    const char *d = json_string_value(json_object_get(j, "directory"));
    const char *u = json_string_value(json_object_get(j, "url"));
    char *out = d && u && strcmp(d, directory) == 0 ? strdup(u) : NULL;
    json_decref(j);
    return out;
}

int acme_store_set_account(const char *directory, const char *url, char *err, size_t errlen)
{
    if (!url) {
        char *path = fs_path_join(S.dir, "account.json");
        int rc = path ? fs_unlink_durable(path, err, errlen) : -1;
        free(path);
        return rc == 0 || errno == ENOENT ? 0 : -1;
    }
    json_t *j = json_pack("{s:s,s:s}", "directory", directory, "url", url);
    int rc = j ? write_json("account.json", j, err, errlen) : -1;
    json_decref(j);
    return rc;
}

void acme_store_file_name(const struct conf_acme *cfg, char *out, size_t outlen)
{
    const char *d = cfg->ndomains ? cfg->domains[0] : "";
    if (*d && strlen(d) <= 110)
        snprintf(out, outlen, "acme-%s.p12", d);
    else
        snprintf(out, outlen, "acme.p12");
}

static time_t asn1_epoch(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    return timegm(&tm);
}

/* 1 when the leaf of e carries exactly the configured domains (as its SANs). */
static int same_domains(json_t *stored, const struct conf_acme *cfg)
{
    if (!json_is_array(stored) || json_array_size(stored) != cfg->ndomains) return 0;
    for (unsigned i = 0; i < cfg->ndomains; i++)
        if (!json_string_value(json_array_get(stored, i)) ||
            strcmp(json_string_value(json_array_get(stored, i)), cfg->domains[i]) != 0)
            return 0;
    return 1;
}

/* Validates p12 (its first entry, as an upload is validated), then prepares the switch. */
static struct gw_change *validate(struct p12_file *p12, const char *name, time_t now,
                                  const struct p12_entry **eout, char *err, size_t errlen)
{
    const struct p12_entry *e = NULL;
    json_t *warnings = json_array();
    struct gw_change *ch = NULL;
    char why[600];
    if (p12_select(p12, NULL, &e, why, sizeof why) != P12_OK ||
        p12_check_entry(e, now, warnings, why, sizeof why) != 0) {
        err_set(err, errlen, "%s: %s", name, why);
        p12_free(p12);
    } else if (!(ch = gw_acme_prepare(p12, why, sizeof why))) {
        err_set(err, errlen, "%s: %s", name, why);
        p12_free(p12);
    } else {
        *eout = e;
        for (size_t i = 0; i < json_array_size(warnings); i++) {
            const char *w = json_string_value(json_array_get(warnings, i));
            /* CAs never send their root: that finding is expected here */
            if (w && strncmp(w, "The chain is incomplete", 23) == 0)
                log_debug("acme: %s: %s", name, w);
            else
                log_warn("acme: %s: %s", name, w ? w : "?");
        }
    }
    json_decref(warnings);
    return ch;
}

int acme_store_load_cert(const struct conf_acme *cfg, struct acme_cert_info *info)
{
    memset(info, 0, sizeof *info);
    json_t *j = read_json("certificate.json");
    if (!j) return 0;
    const char *file = json_string_value(json_object_get(j, "file"));
    const char *enc = json_string_value(json_object_get(j, "password-encr"));
    char *pw = NULL, *data = NULL;
    size_t len = 0;
    char why[600] = "";
    struct p12_file *p12 = NULL;
    if (!file || !enc || !S.skey_loaded) {
        snprintf(why, sizeof why, "%s/certificate.json is incomplete", S.dir);
    } else if (secret_decrypt(&S.skey, enc, &pw, why, sizeof why) == 0 &&
               fs_read_entry(gw_paths.ssl_dir, file, 16u << 20, &data, &len, why, sizeof why) ==
                   0 &&
               p12_parse(data, len, pw, file, &p12, why, sizeof why) == P12_OK) {
        const struct p12_entry *e = NULL;
        gw_lock();
        struct gw_change *ch = validate(p12, file, time(NULL), &e, why, sizeof why);
        if (ch) {
            X509 *leaf = p12_entry_cert(e);
            info->not_before = asn1_epoch(X509_get0_notBefore(leaf));
            info->not_after = asn1_epoch(X509_get0_notAfter(leaf));
            info->domains_match = same_domains(json_object_get(j, "domains"), cfg);
            if (acme_ari_cert_id(leaf, info->ari_id, sizeof info->ari_id) != 0)
                info->ari_id[0] = '\0';
            snprintf(info->file, sizeof info->file, "%s", file);
            gw_acme_commit(ch, file);
        }
        gw_unlock();
    }
    if (!info->file[0]) log_warn("acme: the stored certificate is not served: %s", why);
    secret_free(pw);
    free(data);
    json_decref(j);
    return 0;
}

int acme_store_describe(const char *data_dir, const struct conf_acme *cfg, char *buf,
                        size_t len)
{
    char *dir = fs_path_join(data_dir, "acme"), *text = NULL, *data = NULL;
    size_t n = 0;
    json_t *j = NULL;
    if (dir && fs_read_entry(dir, "certificate.json", ACME_STATE_MAX, &text, &n, NULL, 0) == 0)
        j = json_loadb(text, n, 0, NULL);
    free(text);
    free(dir);
    const char *file = json_string_value(json_object_get(j, "file"));
    json_int_t na = json_integer_value(json_object_get(j, "not-after"));
    int ok = 0;
    char until[32] = "?";
    time_t t = (time_t)na;
    struct tm tm;
    if (na > 0 && gmtime_r(&t, &tm)) strftime(until, sizeof until, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!file) {
        snprintf(buf, len, "none issued yet (ordered at start)");
    } else if (fs_read_entry(gw_paths.ssl_dir, file, 16u << 20, &data, &n, NULL, 0) != 0) {
        snprintf(buf, len, "%s is missing in %s (a new one is ordered at start)", file,
                 gw_paths.ssl_dir);
    } else if (t <= time(NULL)) {
        snprintf(buf, len, "%s expired at %s (not served; a new one is ordered at start)",
                 file, until);
    } else {
        json_t *dom = json_object_get(j, "domains");
        int same = same_domains(dom, cfg);
        char names[600] = "";
        size_t off = 0;
        for (size_t i = 0; i < json_array_size(dom) && off < sizeof names; i++)
        {
            const char *d = json_string_value(json_array_get(dom, i));
            off += (size_t)snprintf(names + off, sizeof names - off, "%s%s", i ? ", " : "",
                                    d ? d : "?");
        }
        snprintf(buf, len, "%s for %s (valid to %s)%s", file, names, until,
                 same ? "" : "; [acme] domains differ: a new one is ordered at start");
        ok = 1;
    }
    if (data) OPENSSL_cleanse(data, n);
    free(data);
    json_decref(j);
    return ok;
}

int acme_store_write_status(json_t *status, char *err, size_t errlen)
{
    return write_json("status.json", status, err, errlen);
}

int acme_store_take_renew_request(void)
{
    char *path = fs_path_join(S.dir, "renew-request");
    int there = path && unlink(path) == 0;
    free(path);
    return there;
}

char *acme_store_password(const char *file)
{
    if (!S.dir || !S.skey_loaded) return NULL;
    json_t *j = read_json("certificate.json");
    const char *f = json_string_value(json_object_get(j, "file"));
    const char *enc = json_string_value(json_object_get(j, "password-encr"));
    char *pw = NULL, why[300];
    if (f && enc && strcmp(f, file) == 0 && secret_decrypt(&S.skey, enc, &pw, why, sizeof why) != 0)
        pw = NULL;
    json_decref(j);
    return pw;
}

/* The hand-over of an issued keystore (der, password pw) stored as `name`, for domains (a
 * JSON array): parsed, validated, then under gw_lock written, recorded, published. */
static int install_der(const char *name, const unsigned char *der, size_t der_len,
                       const char *pw, json_t *dom, int domains_match,
                       struct acme_cert_info *info, char *err, size_t errlen)
{
    char why[600];
    struct p12_file *p12 = NULL;
    int rc = -1;
    if (!S.skey_loaded) {
        err_set(err, errlen, "the secret key is not loaded");
        return -1;
    }
    if (p12_parse(der, der_len, pw, name, &p12, why, sizeof why) != P12_OK) {
        err_set(err, errlen, "%s", why);
        return -1;
    }
    char *enc = secret_encrypt(&S.skey, pw);
    const struct p12_entry *e = NULL;
    gw_lock();
    char *old = gw_acme_file() ? strdup(gw_acme_file()) : NULL;
    struct gw_change *ch = enc && dom ? validate(p12, name, time(NULL), &e, err, errlen) : NULL;
    if (!enc || !dom) {
        p12_free(p12);
        err_set(err, errlen, "out of memory");
    }
    p12 = NULL;
    if (ch) {
        X509 *leaf = p12_entry_cert(e);
        time_t nb = asn1_epoch(X509_get0_notBefore(leaf)), na = asn1_epoch(X509_get0_notAfter(leaf));
        json_t *st = json_pack("{s:s,s:s,s:O,s:I,s:I}", "file", name, "password-encr", enc,
                               "domains", dom, "not-before", (json_int_t)nb, "not-after",
                               (json_int_t)na);
        /* the durable order of an upload: the file, then the record, then publication */
        char *prev = NULL;
        size_t prevlen = 0;
        int had_prev = fs_read_entry(gw_paths.ssl_dir, name, 16u << 20, &prev, &prevlen, NULL,
                                     0) == 0;
        if (gw_is_active_name(name)) {
            err_set(err, errlen, "%s is the active custom certificate file; rename it", name);
        } else if (fs_write_entry(gw_paths.ssl_dir, name, der, der_len, 0600, why, sizeof why) !=
                   0) {
            err_set(err, errlen, "cannot store %s: %s", name, why);
        } else if (!st || write_json("certificate.json", st, why, sizeof why) != 0) {
            err_set(err, errlen, "cannot record %s: %s", name, why);
            char *path = fs_path_join(gw_paths.ssl_dir, name);
            if (path && (had_prev ? fs_write_entry(gw_paths.ssl_dir, name, prev, prevlen, 0600,
                                                   why, sizeof why)
                                  : fs_unlink_durable(path, why, sizeof why)) != 0)
                log_error("acme: could not undo the write of %s: %s", path, why);
            free(path);
        } else {
            rc = 0;
        }
        json_decref(st);
        if (prev) OPENSSL_cleanse(prev, prevlen);
        free(prev);
        if (rc == 0) {
            gw_acme_commit(ch, name);
            info->not_before = nb;
            info->not_after = na;
            info->domains_match = domains_match;
            if (acme_ari_cert_id(leaf, info->ari_id, sizeof info->ari_id) != 0)
                info->ari_id[0] = '\0';
            snprintf(info->file, sizeof info->file, "%s", name);
            if (old && strcmp(old, name) != 0) { /* the certificate of former domains */
                char *path = fs_path_join(gw_paths.ssl_dir, old);
                if (path && fs_unlink_durable(path, why, sizeof why) != 0)
                    log_warn("acme: cannot remove the former certificate: %s", why);
                free(path);
            }
        } else {
            gw_change_abort(ch);
        }
    }
    gw_unlock();
    free(old);
    free(enc);
    return rc;
}

int acme_store_install(const struct conf_acme *cfg, const char *chain_pem, size_t chain_len,
                       struct evp_pkey_st *key, struct acme_cert_info *info, char *err,
                       size_t errlen)
{
    char name[160], pw[64];
    acme_store_file_name(cfg, name, sizeof name);
    size_t keylen = 0;
    char *keypem = acme_key_to_pem(key, &keylen);
    unsigned char *der = NULL;
    size_t der_len = 0;
    int rc = -1;
    json_t *dom = json_array();
    if (!keypem || !dom || p12_random_password(pw, sizeof pw) != 0 || !S.skey_loaded) {
        err_set(err, errlen, "cannot make the keystore's password");
        goto done;
    }
    for (unsigned i = 0; i < cfg->ndomains; i++)
        json_array_append_new(dom, json_string(cfg->domains[i]));
    struct p12_pem_src src = {chain_pem, chain_len, "the CA's certificate chain", keypem,
                              keylen,    "the new key", NULL, NULL, 0, NULL};
    if (p12_pem_build(&src, "acme", pw, &der, &der_len, NULL, err, errlen) != 0) goto done;
    rc = install_der(name, der, der_len, pw, dom, 1, info, err, errlen);
done:
    explicit_bzero(pw, sizeof pw);
    if (keypem) OPENSSL_cleanse(keypem, keylen);
    free(keypem);
    json_decref(dom);
    p12_der_free(der, der_len);
    return rc;
}

int acme_store_install_p12(const struct conf_acme *cfg, const char *name,
                           const unsigned char *der, size_t der_len, const char *password,
                           struct json_t *domains, struct acme_cert_info *info, char *err,
                           size_t errlen)
{
    return install_der(name, der, der_len, password, domains, same_domains(domains, cfg), info,
                       err, errlen);
}
