/* acme_alpn.c - tls-alpn-01 challenge certificates and their context (see acme_alpn.h). */
#include "acme_alpn.h"

#include "err.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <string.h>

static const unsigned char ALPN_ACME[] = "\x0a" "acme-tls/1";

int acme_alpn_offered(const unsigned char *alpn, size_t len)
{
    for (size_t i = 0; i < len; i += 1 + (size_t)alpn[i])
        if (alpn[i] == 10 && i + 11 <= len && memcmp(alpn + i + 1, "acme-tls/1", 10) == 0)
            return 1;
    return 0;
}

static int alpn_acme(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                     const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ALPN_ACME, sizeof ALPN_ACME - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 8737 3: only acme-tls/1 here */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* The self-signed challenge certificate for name and key. */
static X509 *challenge_cert(const char *name, const char *keyauth, EVP_PKEY *key)
{
    X509 *x = X509_new();
    unsigned char digest[34] = {0x04, 0x20}; /* DER OCTET STRING of the SHA-256 */
    unsigned char serial[16];
    ASN1_OCTET_STRING *val = ASN1_OCTET_STRING_new();
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    X509_EXTENSION *ext = NULL, *san = NULL;
    BIGNUM *bn = NULL;
    char sanv[300];
    snprintf(sanv, sizeof sanv, "DNS:%s", name);
    int ok = x && val && oid &&
             EVP_Digest(keyauth, strlen(keyauth), digest + 2, NULL, EVP_sha256(), NULL) == 1 &&
             ASN1_OCTET_STRING_set(val, digest, sizeof digest) == 1 &&
             (ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, val)) != NULL &&
             RAND_bytes(serial, sizeof serial) == 1 &&
             (bn = BN_bin2bn(serial, sizeof serial, NULL)) != NULL &&
             BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL &&
             X509_set_version(x, 2) == 1 &&
             X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                                        (const unsigned char *)"ACME challenge", -1, -1, 0) == 1 &&
             X509_set_issuer_name(x, X509_get_subject_name(x)) == 1 &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
             X509_gmtime_adj(X509_getm_notAfter(x), 7 * 86400) && X509_set_pubkey(x, key) == 1 &&
             (san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, sanv)) != NULL &&
             X509_add_ext(x, san, -1) == 1 && X509_add_ext(x, ext, -1) == 1 &&
             X509_sign(x, key, EVP_sha256()) > 0;
    X509_EXTENSION_free(ext);
    X509_EXTENSION_free(san);
    ASN1_OBJECT_free(oid);
    ASN1_OCTET_STRING_free(val);
    BN_free(bn);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

SSL_CTX *acme_alpn_ctx_new(const char *name, const char *keyauth, char *err, size_t errlen)
{
    EVP_PKEY *key = EVP_EC_gen(SN_X9_62_prime256v1);
    X509 *cert = key && strlen(name) < 256 ? challenge_cert(name, keyauth, key) : NULL;
    SSL_CTX *ctx = cert ? SSL_CTX_new(TLS_server_method()) : NULL;
    if (ctx && (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
                SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    if (ctx) {
        SSL_CTX_set_alpn_select_cb(ctx, alpn_acme, NULL);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    } else {
        unsigned long e = ERR_get_error();
        char buf[200] = "";
        if (e) ERR_error_string_n(e, buf, sizeof buf);
        ERR_clear_error();
        err_set(err, errlen, "cannot make the tls-alpn-01 certificate for %s: %s", name,
                *buf ? buf : "out of memory");
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    return ctx;
}
