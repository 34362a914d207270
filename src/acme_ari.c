/* acme_ari.c - ACME Renewal Information (RFC 9773), see acme_ari.h. */
#include "acme_ari.h"

#include "acme_jws.h"
#include "err.h"

#include <jansson.h>
#include <openssl/asn1.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECHECK_DEFAULT_S (6 * 3600)
#define RECHECK_MIN_S 60
#define RECHECK_MAX_S 86400

int acme_ari_cert_id(const struct x509_st *leaf, char *out, size_t outlen)
{
    /* decoded here rather than through the extension cache, which a certificate that is
     * not signed (the unit test's) never fills */
    AUTHORITY_KEYID *akid = X509_get_ext_d2i(leaf, NID_authority_key_identifier, NULL, NULL);
    const ASN1_OCTET_STRING *kid = akid ? akid->keyid : NULL;
    const ASN1_INTEGER *serial = X509_get0_serialNumber(leaf);
    int rc = -1;
    unsigned char *der = NULL;
    /* the DER contents octets of the serial, a leading zero of a positive number whose
     * top bit is set included */
    int n = kid && ASN1_STRING_length(kid) > 0 && serial ? i2d_ASN1_INTEGER(serial, &der) : 0;
    if (n > 2 && der[1] < 0x80) { /* tag, short length, contents */
        char *a = acme_b64url(ASN1_STRING_get0_data(kid), (size_t)ASN1_STRING_length(kid));
        char *b = acme_b64url(der + 2, (size_t)n - 2);
        if (a && b && (size_t)snprintf(out, outlen, "%s.%s", a, b) < outlen) rc = 0;
        free(a);
        free(b);
    }
    OPENSSL_free(der);
    AUTHORITY_KEYID_free(akid);
    return rc;
}

/* RFC 3339: 2025-01-02T04:00:00Z, with optional fractional seconds and a numeric offset. */
static int parse_time(const char *s, time_t *out)
{
    struct tm tm = {0};
    int used = 0;
    if (!s || sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
                     &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6 ||
        used == 0)
        return -1;
    const char *p = s + used;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++) {
        }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh = 0, mm = 0, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &k) != 2 || k != 5) return -1;
        off = (hh * 3600L + mm * 60L) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -1;
    }
    if (*p || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm) - off;
    return 0;
}

int acme_ari_parse(const char *body, size_t len, time_t *start, time_t *end, char *err,
                   size_t errlen)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    json_t *w = json_object_get(j, "suggestedWindow");
    int rc = -1;
    if (!json_is_object(w)) {
        err_set(err, errlen, "the answer has no suggestedWindow object");
    } else if (parse_time(json_string_value(json_object_get(w, "start")), start) != 0 ||
               parse_time(json_string_value(json_object_get(w, "end")), end) != 0) {
        err_set(err, errlen, "suggestedWindow: start and end must be RFC 3339 times");
    } else if (*end <= *start) {
        err_set(err, errlen, "suggestedWindow: the end is not after the start");
    } else {
        rc = 0;
    }
    json_decref(j);
    return rc;
}

time_t acme_ari_pick(time_t start, time_t end, time_t now, uint32_t r)
{
    time_t at = start + (time_t)(((uint64_t)(end - start) * r) >> 32);
    return at < now ? now : at;
}

long acme_ari_recheck_s(long retry_after)
{
    long s = retry_after < 0 ? RECHECK_DEFAULT_S : retry_after;
    return s < RECHECK_MIN_S ? RECHECK_MIN_S : s > RECHECK_MAX_S ? RECHECK_MAX_S : s;
}
