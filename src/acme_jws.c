/* acme_jws.c - ACME's keys, JWS, thumbprints, EAB and CSR (see acme_jws.h). */
#include "acme_jws.h"

#include "conf.h"
#include "err.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *acme_b64url(const void *p, size_t n)
{
    const unsigned char *s = p;
    char *out = malloc(n / 3 * 4 + 5), *o = out;
    if (!out) return NULL;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        *o++ = B64URL[v >> 18];
        *o++ = B64URL[(v >> 12) & 63];
        *o++ = B64URL[(v >> 6) & 63];
        *o++ = B64URL[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        *o++ = B64URL[v >> 18];
        *o++ = B64URL[(v >> 12) & 63];
        if (i + 1 < n) *o++ = B64URL[(v >> 6) & 63];
    }
    *o = '\0';
    return out;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-' || c == '+') return 62;
    if (c == '_' || c == '/') return 63;
    return -1;
}

int acme_b64url_decode(const char *s, unsigned char **out, size_t *outlen)
{
    size_t len = strlen(s);
    while (len && s[len - 1] == '=') len--;
    if (len % 4 == 1) return -1;
    unsigned char *buf = malloc(len / 4 * 3 + 3);
    if (!buf) return -1;
    size_t n = 0;
    unsigned acc = 0, bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0) {
            OPENSSL_cleanse(buf, n);
            free(buf);
            return -1;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (unsigned char)(acc >> bits);
        }
    }
    acc = 0;
    *out = buf;
    *outlen = n;
    return 0;
}

/* "<what>: <OpenSSL's reason>" into err, and the error queue cleared. */
static void ossl_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    err_set(err, errlen, "%s%s%s", what, *buf ? ": " : "", buf);
}

EVP_PKEY *acme_key_new(int key_type, char *err, size_t errlen)
{
    EVP_PKEY *k = key_type == CONF_ACME_RSA_2048 ? EVP_RSA_gen(2048)
                                                 : EVP_EC_gen(SN_X9_62_prime256v1);
    if (!k) ossl_err(err, errlen, "cannot make a key");
    return k;
}

char *acme_key_to_pem(EVP_PKEY *k, size_t *len)
{
    BIO *b = BIO_new(BIO_s_secmem());
    char *out = NULL;
    if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        if (n > 0 && (out = malloc((size_t)n + 1))) {
            memcpy(out, p, (size_t)n);
            out[n] = '\0';
            *len = (size_t)n;
        }
    }
    BIO_free(b);
    return out;
}

EVP_PKEY *acme_key_from_pem(const char *pem, size_t len, char *err, size_t errlen)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!k) {
        ossl_err(err, errlen, "not a PEM private key");
    } else if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC && EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
        err_set(err, errlen, "the key is neither ECDSA P-256 nor RSA");
        EVP_PKEY_free(k);
        k = NULL;
    }
    return k;
}

void acme_key_free(EVP_PKEY *k)
{
    EVP_PKEY_free(k);
}

/* base64url of a big-number parameter of k, padded to pad bytes (0: minimal). */
static json_t *bn_param(EVP_PKEY *k, const char *name, int pad)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(k, name, &bn) != 1) return NULL;
    int n = pad ? pad : BN_num_bytes(bn);
    unsigned char buf[1024];
    json_t *v = NULL;
    if (n > 0 && n <= (int)sizeof buf && BN_bn2binpad(bn, buf, n) == n) {
        char *s = acme_b64url(buf, (size_t)n);
        if (s) v = json_string(s);
        free(s);
    }
    BN_free(bn);
    return v;
}

json_t *acme_jwk(EVP_PKEY *k)
{
    if (EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA)
        return json_pack("{s:o?,s:s,s:o?}", "e", bn_param(k, OSSL_PKEY_PARAM_RSA_E, 0), "kty",
                         "RSA", "n", bn_param(k, OSSL_PKEY_PARAM_RSA_N, 0));
    return json_pack("{s:s,s:s,s:o?,s:o?}", "crv", "P-256", "kty", "EC", "x",
                     bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, 32), "y",
                     bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32));
}

char *acme_thumbprint(EVP_PKEY *k)
{
    json_t *jwk = acme_jwk(k);
    /* RFC 7638: the required members only, sorted, no white space (jansson's compact
     * form has none) */
    char *canon = jwk ? json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(jwk);
    if (!canon) return NULL;
    unsigned char md[32];
    char *out = NULL;
    if (EVP_Digest(canon, strlen(canon), md, NULL, EVP_sha256(), NULL) == 1)
        out = acme_b64url(md, sizeof md);
    free(canon);
    return out;
}

char *acme_keyauth(const char *token, EVP_PKEY *account)
{
    char *tp = acme_thumbprint(account);
    char *out = NULL;
    if (tp && asprintf(&out, "%s.%s", token, tp) < 0) out = NULL;
    free(tp);
    return out;
}

/* The JWS signature over input: ES256 as R||S, RS256 as is; base64url, malloc'd. */
static char *sign(EVP_PKEY *k, const char *input, char *err, size_t errlen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    char *out = NULL;
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) != 1 ||
        EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) != 1) {
        ossl_err(err, errlen, "cannot sign the request");
        EVP_MD_CTX_free(md);
        return NULL;
    }
    EVP_MD_CTX_free(md);
    if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC) return acme_b64url(sig, siglen);
    const unsigned char *p = sig;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
    unsigned char rs[64];
    if (es && BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32) == 32 &&
        BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32) == 32)
        out = acme_b64url(rs, sizeof rs);
    else
        err_set(err, errlen, "cannot convert the ECDSA signature");
    ECDSA_SIG_free(es);
    return out;
}

/* {"protected","payload","signature"} with the header hdr (taken over) over payload. */
static json_t *flattened(json_t *hdr, const char *payload, EVP_PKEY *k, const unsigned char *hkey,
                         size_t hkeylen, char *err, size_t errlen)
{
    char *h = hdr ? json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(hdr);
    char *h64 = h ? acme_b64url(h, strlen(h)) : NULL;
    char *p64 = acme_b64url(payload, strlen(payload));
    char *input = NULL, *sig = NULL;
    json_t *out = NULL;
    free(h);
    if (!h64 || !p64 || asprintf(&input, "%s.%s", h64, p64) < 0) {
        input = NULL;
        err_set(err, errlen, "out of memory");
        goto done;
    }
    if (k) {
        sig = sign(k, input, err, errlen);
    } else {
        unsigned char mac[32];
        unsigned maclen = 0;
        if (HMAC(EVP_sha256(), hkey, (int)hkeylen, (const unsigned char *)input, strlen(input),
                 mac, &maclen))
            sig = acme_b64url(mac, maclen);
        else
            ossl_err(err, errlen, "cannot compute the EAB MAC");
    }
    if (sig) out = json_pack("{s:s,s:s,s:s}", "protected", h64, "payload", p64, "signature", sig);
done:
    free(h64);
    free(p64);
    free(input);
    free(sig);
    return out;
}

char *acme_jws(EVP_PKEY *k, const char *kid, const char *nonce, const char *url,
               const char *payload, char *err, size_t errlen)
{
    const char *alg = EVP_PKEY_get_base_id(k) == EVP_PKEY_EC ? "ES256" : "RS256";
    json_t *hdr = json_pack("{s:s,s:s,s:s}", "alg", alg, "nonce", nonce, "url", url);
    if (hdr) {
        if (kid)
            json_object_set_new(hdr, "kid", json_string(kid));
        else
            json_object_set_new(hdr, "jwk", acme_jwk(k));
    }
    json_t *jws = flattened(hdr, payload, k, NULL, 0, err, errlen);
    char *out = jws ? json_dumps(jws, JSON_COMPACT) : NULL;
    json_decref(jws);
    return out;
}

json_t *acme_eab(EVP_PKEY *account, const char *eab_kid, const char *hmac_key, const char *url,
                 char *err, size_t errlen)
{
    unsigned char *key = NULL;
    size_t keylen = 0;
    if (acme_b64url_decode(hmac_key, &key, &keylen) != 0) {
        err_set(err, errlen, "eab-hmac-key is not base64url");
        return NULL;
    }
    json_t *jwk = acme_jwk(account);
    char *payload = jwk ? json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(jwk);
    json_t *out = NULL;
    if (payload)
        out = flattened(json_pack("{s:s,s:s,s:s}", "alg", "HS256", "kid", eab_kid, "url", url),
                        payload, NULL, key, keylen, err, errlen);
    else
        err_set(err, errlen, "out of memory");
    OPENSSL_cleanse(key, keylen);
    free(key);
    free(payload);
    return out;
}

char *acme_csr(EVP_PKEY *certkey, char *const *names, unsigned n, char *err, size_t errlen)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *subj = X509_NAME_new();
    GENERAL_NAMES *sans = GENERAL_NAMES_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    char *out = NULL;
    int ok = req && subj && sans && exts && n > 0 && X509_REQ_set_version(req, 0) == 1 &&
             strlen(names[0]) <= 64 && /* CN's upper bound; the SANs carry the names */
             X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8,
                                        (const unsigned char *)names[0], -1, -1, 0) == 1 &&
             X509_REQ_set_subject_name(req, subj) == 1 && X509_REQ_set_pubkey(req, certkey) == 1;
    for (unsigned i = 0; ok && i < n; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        ok = g && s && ASN1_STRING_set(s, names[i], -1) == 1;
        if (ok) {
            GENERAL_NAME_set0_value(g, GEN_DNS, s);
            s = NULL;
            ok = sk_GENERAL_NAME_push(sans, g) > 0;
            if (ok) g = NULL;
        }
        ASN1_IA5STRING_free(s);
        GENERAL_NAME_free(g);
    }
    X509_EXTENSION *ext = ok ? X509V3_EXT_i2d(NID_subject_alt_name, 0, sans) : NULL;
    ok = ok && ext && sk_X509_EXTENSION_push(exts, ext) > 0;
    if (!ok) X509_EXTENSION_free(ext);
    ok = ok && X509_REQ_add_extensions(req, exts) == 1 &&
         X509_REQ_sign(req, certkey, EVP_sha256()) > 0;
    unsigned char *der = NULL;
    int len = ok ? i2d_X509_REQ(req, &der) : -1;
    if (len > 0)
        out = acme_b64url(der, (size_t)len);
    else
        ossl_err(err, errlen, "cannot make the certificate signing request");
    OPENSSL_free(der);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    GENERAL_NAMES_free(sans);
    X509_NAME_free(subj);
    X509_REQ_free(req);
    return out;
}
