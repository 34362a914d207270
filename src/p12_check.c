/* p12_check.c - what an operator should know before a certificate is served (p12.h). */
#include "err.h"
#include "p12.h"

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY 86400

static int cert_time(const ASN1_TIME *at, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!at || !ASN1_TIME_to_tm(at, &tm)) return -1;
    *out = timegm(&tm);
    return 0;
}

static void utc_text(time_t t, char *buf, size_t n)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, n, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, n, "?");
}

static void warn(json_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(json_t *w, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (w) json_array_append_new(w, json_string(buf));
}

/* The subject (or issuer) as a one-line RFC 2253 string, malloc'd. */
static char *dn_text(X509 *c, int issuer)
{
    char *dn = p12_java_dn(c, issuer);
    return dn ? dn : strdup("?");
}

static int sha1_signed(X509 *c)
{
    int md = NID_undef;
    if (!X509_get_signature_info(c, &md, NULL, NULL, NULL)) return 0;
    return md == NID_sha1;
}

/* The issuer of c in the system's trusted certificates (hash directory lookup, only
 * the files named by the issuer's hash are read). */
static int issuer_is_trusted(X509 *c)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509 *issuer = NULL;
    int found = 0;
    if (st && ctx && X509_STORE_set_default_paths(st) && X509_STORE_CTX_init(ctx, st, c, NULL))
        found = X509_STORE_CTX_get1_issuer(&issuer, ctx, c) == 1;
    X509_free(issuer);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    ERR_clear_error();
    return found;
}

int p12_check_entry(const struct p12_entry *e, time_t now, struct json_t *warnings, char *err,
                    size_t errlen)
{
    X509 *leaf = p12_entry_cert(e);
    const char *alias = p12_entry_alias(e);
    time_t nb = 0, na = 0;
    char when[64];
    if (cert_time(X509_get0_notAfter(leaf), &na) == 0 && na <= now) {
        utc_text(na, when, sizeof when);
        err_set(err, errlen,
                "the certificate of alias '%s' expired on %s; every client would refuse it "
                "(renew it, then upload the new one)",
                alias, when);
        return -1;
    }
    if (na > now && na - now < 30 * DAY) {
        utc_text(na, when, sizeof when);
        long days = (long)((na - now) / DAY);
        warn(warnings, "The certificate expires in %ld day%s (%s); renew it soon.", days,
             days == 1 ? "" : "s", when);
    }
    if (cert_time(X509_get0_notBefore(leaf), &nb) == 0 && nb > now) {
        utc_text(nb, when, sizeof when);
        warn(warnings,
             "The certificate is not valid yet: it is valid from %s; clients refuse it until "
             "then (check the clock of the machine that issued it).",
             when);
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    if (!sans || sk_GENERAL_NAME_num(sans) == 0)
        warn(warnings,
             "The certificate has no subjectAltName; browsers and most TLS clients ignore the "
             "common name and will refuse it (issue it with the host names as DNS entries).");
    GENERAL_NAMES_free(sans);
    uint32_t flags = X509_get_extension_flags(leaf);
    if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage(leaf) & XKU_SSL_SERVER))
        warn(warnings,
             "The certificate's extended key usage does not include serverAuth; TLS clients "
             "will refuse it for a server.");
    EVP_PKEY *pk = X509_get0_pubkey(leaf);
    if (pk && EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA && EVP_PKEY_get_bits(pk) < 2048)
        warn(warnings,
             "The key is RSA with %d bits; 2048 is the least current clients accept.",
             EVP_PKEY_get_bits(pk));
    STACK_OF(X509) *chain = p12_entry_chain(e);
    int n = chain ? sk_X509_num(chain) : 0;
    for (int i = -1; i < n; i++) {
        X509 *c = i < 0 ? leaf : sk_X509_value(chain, i);
        if (X509_self_signed(c, 0) == 1) continue; /* a root's own signature is not checked */
        if (sha1_signed(c)) {
            char *dn = dn_text(c, 0);
            warn(warnings,
                 "%s '%s' is signed with SHA-1; clients refuse SHA-1 signatures (reissue it "
                 "with SHA-256).",
                 i < 0 ? "The certificate" : "The chain certificate", dn);
            free(dn);
        }
    }
    X509 *last = n > 0 ? sk_X509_value(chain, n - 1) : leaf;
    if (X509_self_signed(last, 0) != 1 && !issuer_is_trusted(last)) {
        char *sub = dn_text(last, 0), *iss = dn_text(last, 1);
        warn(warnings,
             "The chain is incomplete: '%s' (the issuer of '%s') is neither in the file "
             "nor among this system's trusted certificates; add its certificate to the file "
             "unless every client already trusts it.",
             iss, sub);
        free(sub);
        free(iss);
    }
    ERR_clear_error();
    return 0;
}
