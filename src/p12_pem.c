/* p12_pem.c - PKCS#12 files built from PEM keys and certificates (p12.h). */
#include "err.h"
#include "p12.h"

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pw_cb_arg {
    const char *password;
    int asked;
};

static int pw_cb(char *buf, int size, int rwflag, void *u)
{
    (void)rwflag;
    struct pw_cb_arg *a = u;
    a->asked = 1;
    if (!a->password) return -1; /* no password: fail rather than prompt */
    size_t n = strlen(a->password);
    if (n > (size_t)size) return -1;
    memcpy(buf, a->password, n);
    return (int)n;
}

static int has_pem_key_marker(const void *data, size_t len)
{
    static const char *const marks[] = {"-----BEGIN PRIVATE KEY-----",
                                        "-----BEGIN ENCRYPTED PRIVATE KEY-----",
                                        "-----BEGIN RSA PRIVATE KEY-----",
                                        "-----BEGIN EC PRIVATE KEY-----"};
    for (size_t i = 0; i < sizeof marks / sizeof *marks; i++)
        if (memmem(data, len, marks[i], strlen(marks[i]))) return 1;
    return 0;
}

static EVP_PKEY *read_key(const struct p12_pem_src *s, char *err, size_t errlen)
{
    struct pw_cb_arg a = {s->key_password, 0};
    BIO *b = BIO_new_mem_buf(s->key, (int)s->key_len);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, pw_cb, &a) : NULL;
    BIO_free(b);
    ERR_clear_error();
    if (k) return k;
    if (a.asked && !s->key_password)
        err_set(err, errlen,
                "%s: the private key is encrypted; give its password (--key-password)",
                s->key_label);
    else if (a.asked)
        err_set(err, errlen, "%s: the key password does not decrypt the private key",
                s->key_label);
    else if (has_pem_key_marker(s->key, s->key_len))
        err_set(err, errlen, "%s: the private key cannot be read (damaged or unsupported)",
                s->key_label);
    else
        err_set(err, errlen,
                "%s: no private key in the file (expected a PEM block such as -----BEGIN "
                "PRIVATE KEY-----)",
                s->key_label);
    return NULL;
}

/* Appends every PEM certificate of data to all; -1 when there is none. */
static int read_certs(const void *data, size_t len, STACK_OF(X509) * all)
{
    BIO *b = BIO_new_mem_buf(data, (int)len);
    int n = 0;
    X509 *c;
    while (b && (c = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
        if (!sk_X509_push(all, c)) {
            X509_free(c);
            break;
        }
        n++;
    }
    BIO_free(b);
    ERR_clear_error();
    return n > 0 ? 0 : -1;
}

static char *subject_of(X509 *c)
{
    char *dn = p12_java_dn(c, 0);
    return dn ? dn : strdup("?");
}

/* Orders extra (the chain, any order) from the leaf up; every certificate must be on
 * the path. Returns the ordered stack (references taken) or NULL with a sentence. */
static STACK_OF(X509) * order_chain(X509 *leaf, STACK_OF(X509) * extra, const char *label,
                                    json_t *warnings, char *err, size_t errlen)
{
    int n = sk_X509_num(extra);
    char *used = calloc((size_t)n + 1, 1);
    STACK_OF(X509) *out = sk_X509_new_null();
    if (!used || !out) goto nomem;
    for (int i = 0; i < n; i++) /* a copy of the leaf in the chain file is dropped */
        if (X509_cmp(sk_X509_value(extra, i), leaf) == 0) used[i] = 1;
    X509 *cur = leaf;
    int in_order = 1, last = -1;
    while (!X509_self_signed(cur, 0)) {
        int found = -1;
        for (int i = 0; i < n && found < 0; i++)
            if (!used[i] && X509_check_issued(sk_X509_value(extra, i), cur) == X509_V_OK)
                found = i;
        if (found < 0) break;
        if (found < last) in_order = 0;
        last = found;
        used[found] = 1;
        cur = sk_X509_value(extra, found);
        if (!sk_X509_push(out, cur)) goto nomem;
        X509_up_ref(cur);
    }
    for (int i = 0; i < n; i++) {
        if (used[i]) continue;
        X509 *c = sk_X509_value(extra, i);
        char *dn = subject_of(c), *top = subject_of(cur);
        err_set(err, errlen,
                "%s: the certificate '%s' does not chain: it is not the issuer of '%s' nor of "
                "any other certificate given; remove it or give the missing intermediate",
                label, dn, top);
        free(dn);
        free(top);
        goto fail;
    }
    if (!in_order && warnings) {
        char buf[1024];
        snprintf(buf, sizeof buf,
                 "The chain in %s was out of order; it is stored leaf first, each certificate "
                 "followed by its issuer.",
                 label);
        json_array_append_new(warnings, json_string(buf));
    }
    free(used);
    ERR_clear_error();
    return out;
nomem:
    err_set(err, errlen, "out of memory");
fail:
    free(used);
    sk_X509_pop_free(out, X509_free);
    ERR_clear_error();
    return NULL;
}

int p12_random_password(char *buf, size_t len)
{
    unsigned char raw[24];
    if (len < 2 * sizeof raw + 1 || RAND_bytes(raw, sizeof raw) != 1) return -1;
    for (size_t i = 0; i < sizeof raw; i++) snprintf(buf + 2 * i, 3, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

int p12_pem_build(const struct p12_pem_src *s, const char *alias, const char *password,
                  unsigned char **der, size_t *len, struct json_t *warnings, char *err,
                  size_t errlen)
{
    *der = NULL;
    *len = 0;
    int rc = -1;
    STACK_OF(X509) *certs = sk_X509_new_null(), *extra = sk_X509_new_null(), *chain = NULL;
    PKCS12 *p12 = NULL;
    X509 *leaf = NULL;
    EVP_PKEY *key = read_key(s, err, errlen);
    if (!key) goto done;
    if (!certs || !extra) {
        err_set(err, errlen, "out of memory");
        goto done;
    }
    if (read_certs(s->cert, s->cert_len, certs) != 0) {
        err_set(err, errlen,
                "%s: no certificate in the file (expected -----BEGIN CERTIFICATE-----)",
                s->cert_label);
        goto done;
    }
    for (int i = 0; i < sk_X509_num(certs) && !leaf; i++)
        if (X509_check_private_key(sk_X509_value(certs, i), key)) leaf = sk_X509_value(certs, i);
    ERR_clear_error();
    if (!leaf) {
        if (s->key == s->cert)
            err_set(err, errlen, "%s: none of its certificates matches its private key",
                    s->cert_label);
        else
            err_set(err, errlen,
                    "%s: the certificate does not match the private key in %s (they are not "
                    "a pair)",
                    s->cert_label, s->key_label);
        goto done;
    }
    for (int i = 0; i < sk_X509_num(certs); i++) /* the rest of a fullchain file */
        if (sk_X509_value(certs, i) != leaf) {
            X509_up_ref(sk_X509_value(certs, i));
            sk_X509_push(extra, sk_X509_value(certs, i));
        }
    if (s->chain && read_certs(s->chain, s->chain_len, extra) != 0) {
        err_set(err, errlen,
                "%s: no certificate in the file (expected -----BEGIN CERTIFICATE-----)",
                s->chain_label);
        goto done;
    }
    chain = order_chain(leaf, extra, s->chain ? s->chain_label : s->cert_label, warnings, err,
                        errlen);
    if (!chain) goto done;
    /* PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for the key and the certificates, an
     * HMAC-SHA256 MAC: 3 x P12_PEM_ITER iterations, far inside P12_MAX_ITERATIONS; the
     * password is random, so the iterations add little anyway */
    p12 = PKCS12_create((char *)password, (char *)(alias && *alias ? alias : "1"), key, leaf,
                        chain, NID_aes_256_cbc, NID_aes_256_cbc, P12_PEM_ITER, -1, 0);
    if (!p12 || !PKCS12_set_mac(p12, password, -1, NULL, 0, P12_PEM_ITER, EVP_sha256())) {
        err_set(err, errlen, "cannot build the PKCS#12 file (OpenSSL failed)");
        goto done;
    }
    unsigned char *p = NULL;
    int n = i2d_PKCS12(p12, &p);
    if (n <= 0) {
        err_set(err, errlen, "cannot encode the PKCS#12 file");
        goto done;
    }
    *der = p;
    *len = (size_t)n;
    rc = 0;
done:
    ERR_clear_error();
    PKCS12_free(p12);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(extra, X509_free);
    sk_X509_pop_free(certs, X509_free);
    EVP_PKEY_free(key);
    return rc;
}

void p12_der_free(unsigned char *der, size_t len)
{
    if (der) OPENSSL_cleanse(der, len);
    OPENSSL_free(der);
}
