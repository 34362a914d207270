/* defcert.c - the default self-signed certificate (see defcert.h). */
#include "defcert.h"

#include "err.h"
#include "fsutil.h"
#include "log.h"
#include "p12.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFCERT_ALIAS "default"
#define DEFCERT_DAYS 365
#define DEFCERT_MAX_FILE (1024 * 1024)

static int host_name(char *buf, size_t len)
{
    if (gethostname(buf, len) < 0) return -1;
    buf[len - 1] = '\0';
    if (!buf[0]) snprintf(buf, len, "localhost");
    return 0;
}

/* ----- generation ----- */

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!ext) return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static int push_name(GENERAL_NAMES *gens, int type, const char *value)
{
    GENERAL_NAME *g = NULL;
    if (type == GEN_IPADD) {
        ASN1_OCTET_STRING *ip = a2i_IPADDRESS(value);
        if (!ip) return -1;
        g = GENERAL_NAME_new();
        if (!g) {
            ASN1_OCTET_STRING_free(ip);
            return -1;
        }
        GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
    } else {
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (!s || !ASN1_STRING_set(s, value, -1) || !(g = GENERAL_NAME_new())) {
            ASN1_IA5STRING_free(s);
            return -1;
        }
        GENERAL_NAME_set0_value(g, GEN_DNS, s);
    }
    if (!sk_GENERAL_NAME_push(gens, g)) {
        GENERAL_NAME_free(g);
        return -1;
    }
    return 0;
}

static int add_sans(X509 *cert, const char *host)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    int rc = -1;
    if (!gens) return -1;
    /* The host name is put in as is (not through a config string), so an odd host name
     * cannot inject other names. */
    if (push_name(gens, GEN_DNS, host) < 0) goto out;
    if (strcmp(host, "localhost") != 0 && push_name(gens, GEN_DNS, "localhost") < 0) goto out;
    if (push_name(gens, GEN_IPADD, "127.0.0.1") < 0 || push_name(gens, GEN_IPADD, "::1") < 0)
        goto out;
    if (X509_add1_ext_i2d(cert, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1) rc = 0;
out:
    GENERAL_NAMES_free(gens);
    return rc;
}

static int generate(const char *host, EVP_PKEY **keyp, X509 **certp)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *cert = X509_new();
    BIGNUM *bn = BN_new();
    unsigned char serial[16];
    int rc = -1;
    if (!key || !cert || !bn) goto out;

    /* 128 random bits, top bit clear so the INTEGER is positive, never zero */
    if (RAND_bytes(serial, sizeof(serial)) != 1) goto out;
    serial[0] &= 0x7F;
    serial[0] |= 0x40; /* and a fixed length of 16 bytes */
    if (!BN_bin2bn(serial, sizeof(serial), bn) ||
        !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)))
        goto out;
    if (!X509_set_version(cert, 2)) goto out;

    time_t now = time(NULL);
    if (!X509_time_adj_ex(X509_getm_notBefore(cert), 0, -3600, &now) ||
        !X509_time_adj_ex(X509_getm_notAfter(cert), DEFCERT_DAYS, -3600, &now))
        goto out;

    /* CN is limited to 64 characters; the full host name is in the SAN anyway. */
    char cn[65];
    snprintf(cn, sizeof(cn), "%s", host);
    X509_NAME *name = X509_get_subject_name(cert);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_set_issuer_name(cert, name) || !X509_set_pubkey(cert, key))
        goto out;

    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    if (add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(cert, &ctx, NID_key_usage, "critical,digitalSignature") < 0 ||
        add_ext(cert, &ctx, NID_ext_key_usage, "serverAuth") < 0 ||
        add_ext(cert, &ctx, NID_subject_key_identifier, "hash") < 0 || add_sans(cert, host) < 0)
        goto out;
    if (!X509_sign(cert, key, EVP_sha256())) goto out;

    *keyp = key;
    *certp = cert;
    key = NULL;
    cert = NULL;
    rc = 0;
out:
    OPENSSL_cleanse(serial, sizeof(serial));
    BN_free(bn);
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}

/* ----- the file ----- */

/* The stored key is never encrypted; without this OpenSSL would prompt on a terminal
 * for the password of a key that is. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* Reads the stored PEM. Returns 0 with key and cert, or -1 with a reason in why. */
static int read_stored(const char *path, EVP_PKEY **keyp, X509 **certp, char *why, size_t wlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        err_set(why, wlen, "%s", errno == ENOENT ? "missing" : strerror(errno));
        return -1;
    }
    char *buf = malloc(DEFCERT_MAX_FILE);
    size_t len = 0;
    ssize_t r = 0;
    while (buf && len < DEFCERT_MAX_FILE &&
           ((r = read(fd, buf + len, DEFCERT_MAX_FILE - len)) > 0 || (r < 0 && errno == EINTR)))
        if (r > 0) len += (size_t)r;
    close(fd);
    if (!buf || r < 0) {
        err_set(why, wlen, "%s", buf ? strerror(errno) : "out of memory");
        free(buf);
        return -1;
    }
    BIO *bio = BIO_new_mem_buf(buf, (int)len);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL) : NULL;
    X509 *cert = key ? PEM_read_bio_X509(bio, NULL, no_password, NULL) : NULL;
    BIO_free(bio);
    OPENSSL_cleanse(buf, len);
    free(buf);
    ERR_clear_error();
    if (!key || !cert) {
        err_set(why, wlen, "cannot be parsed");
        EVP_PKEY_free(key);
        X509_free(cert);
        return -1;
    }
    *keyp = key;
    *certp = cert;
    return 0;
}

/* Whether a stored certificate can still be served for this host. */
static int still_good(EVP_PKEY *key, X509 *cert, const char *host, char *why, size_t wlen)
{
    time_t now = time(NULL);
    if (X509_cmp_time(X509_get0_notAfter(cert), &now) <= 0) {
        err_set(why, wlen, "expired");
        return 0;
    }
    if (X509_cmp_time(X509_get0_notBefore(cert), &now) >= 0) {
        err_set(why, wlen, "not valid yet");
        return 0;
    }
    char cn[256] = "", want[65];
    snprintf(want, sizeof(want), "%s", host);
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn)) <
            0 ||
        strcmp(cn, want) != 0 || X509_check_host(cert, host, 0, 0, NULL) != 1) {
        ERR_clear_error();
        err_set(why, wlen, "made for another host name");
        return 0;
    }
    if (!X509_check_private_key(cert, key)) {
        ERR_clear_error();
        err_set(why, wlen, "key and certificate do not match");
        return 0;
    }
    return 1;
}

static int store(const char *path, EVP_PKEY *key, X509 *cert, char *err, size_t errlen)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int rc = -1;
    if (!bio) return -1;
    if (PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) &&
        PEM_write_bio_X509(bio, cert)) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0) {
            rc = fs_write_atomic(path, data, (size_t)n, 0600, err, errlen);
            OPENSSL_cleanse(data, (size_t)n);
        }
    } else {
        err_set(err, errlen, "cannot encode the certificate as PEM");
    }
    BIO_free(bio);
    return rc;
}

int defcert_load(const char *ssl_dir, int readonly, struct p12_file **out, char *err, size_t errlen)
{
    char host[HOST_NAME_MAX + 1], why[160] = "";
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    *out = NULL;
    if (host_name(host, sizeof(host)) < 0) {
        err_set(err, errlen, "cannot get the host name: %s", strerror(errno));
        return -1;
    }
    char *path = fs_path_join(ssl_dir, DEFCERT_FILE);
    if (!path) {
        err_set(err, errlen, "out of memory");
        return -1;
    }

    if (read_stored(path, &key, &cert, why, sizeof(why)) == 0) {
        if (still_good(key, cert, host, why, sizeof(why))) {
            struct stat st;
            /* a private key file must not be readable by others */
            if (!readonly && stat(path, &st) == 0 && (st.st_mode & 077) && chmod(path, 0600) < 0)
                log_warn("cannot chmod 0600 %s: %s", path, strerror(errno));
            goto done;
        }
        EVP_PKEY_free(key);
        X509_free(cert);
        key = NULL;
        cert = NULL;
    }
    if (strcmp(why, "missing") != 0)
        log_info("default certificate %s: %s; generating a new one", path, why);

    if (generate(host, &key, &cert) < 0) {
        ERR_clear_error();
        err_set(err, errlen, "cannot generate the default certificate");
        free(path);
        return -1;
    }
    if (!readonly) {
        char werr[512] = "";
        /* Failing to keep it is not fatal: the certificate still serves, it is just
         * made anew on the next start. */
        if (store(path, key, cert, werr, sizeof(werr)) < 0)
            log_warn("cannot store the default certificate in %s: %s", ssl_dir, werr);
    }
done:
    *out = p12_from_key_cert(key, cert, NULL, DEFCERT_ALIAS);
    EVP_PKEY_free(key);
    X509_free(cert);
    free(path);
    if (!*out) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}
