/* p12_describe.c - text exactly as ActiveGate's Java makes it: certificate descriptions
 * (X500Principal.toString(), java.util.Date.toString(), BigInteger.toString(16)), the
 * JSON description of a keystore, and aliases lower-cased as String.toLowerCase().
 *
 * The DN is formatted from the certificate's own DER, not from OpenSSL's parsed view, so
 * the string types and the order of the attributes inside a multi-valued RDN are the
 * ones Java sees. The rules mirror OpenJDK 17's sun.security.x509.AVA/RDN/X500Name. */
#include "p12.h"
#include "sni.h"
#include "strfmt.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <locale.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <pthread.h>
#include <wctype.h>

/* ----- a growing string ----- */

struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
};

static void sb_putn(struct sbuf *b, const char *p, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

static void sb_putc(struct sbuf *b, char c)
{
    sb_putn(b, &c, 1);
}

/* cp as UTF-8 at u (1 to 4 bytes); returns the count. No checks: callers decide what a
 * surrogate or an out-of-range value becomes. */
static size_t utf8_encode(uint32_t cp, char *u)
{
    if (cp < 0x80) {
        u[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static void sb_put_utf8(struct sbuf *b, uint32_t cp)
{
    char u[4];
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
    sb_putn(b, u, utf8_encode(cp, u));
}

static void sb_hex(struct sbuf *b, const unsigned char *p, size_t n)
{
    char hex[2 * 64 + 1];
    for (size_t i = 0; i < n; i += 64) {
        size_t k = n - i < 64 ? n - i : 64;
        strfmt_hex(hex, p + i, k);
        sb_putn(b, hex, 2 * k);
    }
}

static char *sb_take(struct sbuf *b)
{
    if (b->oom) {
        free(b->s);
        return NULL;
    }
    if (!b->s) return strdup("");
    return b->s;
}

/* ----- a minimal DER reader (definite lengths only, as DER requires) ----- */

struct der {
    unsigned tag;
    const unsigned char *tlv; /* start of the whole element */
    size_t tlv_len;
    const unsigned char *val; /* contents */
    size_t len;
};

/* Reads one element at *p (< end); advances *p. Returns 0 or -1. */
static int der_read(const unsigned char **p, const unsigned char *end, struct der *d)
{
    const unsigned char *q = *p;
    if (end - q < 2) return -1;
    d->tlv = q;
    d->tag = *q++;
    if ((d->tag & 0x1F) == 0x1F) return -1; /* high tag numbers: never in a DN */
    size_t len = *q++;
    if (len & 0x80) {
        size_t nb = len & 0x7F;
        if (nb == 0 || nb > 4 || (size_t)(end - q) < nb) return -1;
        len = 0;
        while (nb--)
            len = (len << 8) | *q++;
    }
    if ((size_t)(end - q) < len) return -1;
    d->val = q;
    d->len = len;
    d->tlv_len = (size_t)(q + len - d->tlv);
    *p = q + len;
    return 0;
}

static void oid_to_text(const unsigned char *p, size_t n, struct sbuf *b)
{
    char num[32];
    uint64_t v = 0;
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        v = (v << 7) | (p[i] & 0x7F);
        if (p[i] & 0x80) continue;
        if (first) {
            unsigned a = v < 40 ? 0 : v < 80 ? 1 : 2;
            snprintf(num, sizeof(num), "%u.%llu", a, (unsigned long long)(v - 40u * a));
            first = 0;
        } else {
            snprintf(num, sizeof(num), ".%llu", (unsigned long long)v);
        }
        sb_puts(b, num);
        v = 0;
    }
}

/* Java's AVAKeyword table (OpenJDK 17): for an OID with several keywords the one
 * registered last wins, hence ST (not S), DNQ (not DNQUALIFIER), EMAILADDRESS. */
static const struct {
    const char *oid, *kw;
} java_keywords[] = {
    {"2.5.4.3", "CN"},
    {"2.5.4.6", "C"},
    {"2.5.4.7", "L"},
    {"2.5.4.8", "ST"},
    {"2.5.4.10", "O"},
    {"2.5.4.11", "OU"},
    {"2.5.4.12", "T"},
    {"1.3.6.1.4.1.42.2.11.2.1", "IP"},
    {"2.5.4.9", "STREET"},
    {"0.9.2342.19200300.100.1.25", "DC"},
    {"2.5.4.46", "DNQ"},
    {"2.5.4.4", "SURNAME"},
    {"2.5.4.42", "GIVENNAME"},
    {"2.5.4.43", "INITIALS"},
    {"2.5.4.44", "GENERATION"},
    {"1.2.840.113549.1.9.1", "EMAILADDRESS"},
    {"0.9.2342.19200300.100.1.1", "UID"},
    {"2.5.4.5", "SERIALNUMBER"},
};

/* Decodes a DER string value to UTF-8 the way DerValue.getAsString() does; returns -1
 * for types Java does not treat as strings (those print as #hex). Malformed input
 * becomes U+FFFD, as Java's decoders do. */
static int java_string(const struct der *d, struct sbuf *out)
{
    const unsigned char *p = d->val;
    size_t n = d->len;
    switch (d->tag) {
    case 0x13: /* PrintableString */
    case 0x16: /* IA5String */
    case 0x1B: /* GeneralString */
        for (size_t i = 0; i < n; i++) {
            if (p[i] < 0x80)
                sb_putc(out, (char)p[i]);
            else
                sb_put_utf8(out, 0xFFFD);
        }
        return 0;
    case 0x14: /* T61String, read as ISO-8859-1 */
        for (size_t i = 0; i < n; i++)
            sb_put_utf8(out, p[i]);
        return 0;
    case 0x1E: /* BMPString, UTF-16BE */
        for (size_t i = 0; i < n; i += 2) {
            if (i + 1 >= n) {
                sb_put_utf8(out, 0xFFFD);
                break;
            }
            uint32_t u = ((uint32_t)p[i] << 8) | p[i + 1];
            if (u >= 0xD800 && u <= 0xDBFF && i + 3 < n) {
                uint32_t lo = ((uint32_t)p[i + 2] << 8) | p[i + 3];
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    sb_put_utf8(out, 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00));
                    i += 2;
                    continue;
                }
            }
            sb_put_utf8(out, u);
        }
        return 0;
    case 0x1C: /* UniversalString, UTF-32BE */
        for (size_t i = 0; i < n; i += 4) {
            if (i + 3 >= n) {
                sb_put_utf8(out, 0xFFFD);
                break;
            }
            sb_put_utf8(out, ((uint32_t)p[i] << 24) | ((uint32_t)p[i + 1] << 16) |
                                 ((uint32_t)p[i + 2] << 8) | p[i + 3]);
        }
        return 0;
    case 0x0C: /* UTF8String: validate, replace malformed sequences */
        for (size_t i = 0; i < n;) {
            unsigned char c = p[i];
            size_t k;
            uint32_t cp, min;
            if (c < 0x80) {
                sb_putc(out, (char)c);
                i++;
                continue;
            } else if ((c & 0xE0) == 0xC0) {
                k = 1, cp = c & 0x1F, min = 0x80;
            } else if ((c & 0xF0) == 0xE0) {
                k = 2, cp = c & 0x0F, min = 0x800;
            } else if ((c & 0xF8) == 0xF0) {
                k = 3, cp = c & 0x07, min = 0x10000;
            } else {
                sb_put_utf8(out, 0xFFFD);
                i++;
                continue;
            }
            size_t j = 1;
            for (; j <= k && i + j < n && (p[i + j] & 0xC0) == 0x80; j++)
                cp = (cp << 6) | (p[i + j] & 0x3F);
            if (j <= k || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                sb_put_utf8(out, 0xFFFD);
                i += j;
                continue;
            }
            sb_put_utf8(out, cp);
            i += j;
        }
        return 0;
    default:
        return -1;
    }
}

static int java_printable(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c != '\0' && strchr(" '()+,-./:=?", c) != NULL;
}

/* AVA.toKeywordValueString(): RFC 1779 quoting of a value. */
static void java_quote_value(const char *v, size_t len, struct sbuf *out)
{
    static const char escapees[] = ",+=\n<>#;\\\"";
    struct sbuf t = {0};
    int quote = 0, prev_white = 0;
    int already = len > 1 && v[0] == '"' && v[len - 1] == '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (already && (i == 0 || i == len - 1)) {
            sb_putc(&t, (char)c);
            continue;
        }
        int esc = c != '\0' && strchr(escapees, c) != NULL;
        if (java_printable(c) || esc) {
            if (!quote && ((i == 0 && (c == ' ' || c == '\n')) || esc)) quote = 1;
            if (!(c == ' ' || c == '\n')) {
                if (c == '"' || c == '\\') sb_putc(&t, '\\');
                prev_white = 0;
            } else {
                if (!quote && prev_white) quote = 1;
                prev_white = 1;
            }
            sb_putc(&t, (char)c);
        } else {
            prev_white = 0;
            sb_putc(&t, (char)c);
        }
    }
    if (t.len > 0 && (t.s[t.len - 1] == ' ' || t.s[t.len - 1] == '\n')) quote = 1;
    if (!already && quote) sb_putc(out, '"');
    if (t.s) sb_putn(out, t.s, t.len);
    if (!already && quote) sb_putc(out, '"');
    if (t.oom) out->oom = 1;
    free(t.s);
}

/* One AttributeTypeAndValue as AVA.toString(). */
static int java_ava(const unsigned char *p, size_t n, struct sbuf *out)
{
    const unsigned char *end = p + n;
    struct der oid, val;
    if (der_read(&p, end, &oid) < 0 || oid.tag != 0x06) return -1;
    if (der_read(&p, end, &val) < 0) return -1;

    struct sbuf dotted = {0};
    oid_to_text(oid.val, oid.len, &dotted);
    const char *kw = NULL;
    for (size_t i = 0; dotted.s && i < sizeof(java_keywords) / sizeof(java_keywords[0]); i++)
        if (strcmp(java_keywords[i].oid, dotted.s) == 0) kw = java_keywords[i].kw;
    if (kw) {
        sb_puts(out, kw);
    } else {
        sb_puts(out, "OID.");
        sb_puts(out, dotted.s ? dotted.s : "");
    }
    free(dotted.s);
    sb_putc(out, '=');

    struct sbuf s = {0};
    if (java_string(&val, &s) == 0) {
        java_quote_value(s.s ? s.s : "", s.len, out);
    } else {
        sb_putc(out, '#');
        sb_hex(out, val.tlv, val.tlv_len);
    }
    if (s.oom) out->oom = 1;
    free(s.s);
    return 0;
}

/* X500Name.toString() of a DER Name: RDNs last to first, joined by ", "; the AVAs of
 * a multi-valued RDN in encoding order, joined by " + ". */
static char *java_dn_der(const unsigned char *der, size_t len)
{
    const unsigned char *p = der, *end = der + len;
    struct der name;
    if (der_read(&p, end, &name) < 0 || name.tag != 0x30) return NULL;

    /* Collect the RDNs first; they print in reverse. */
    size_t nrdn = 0, cap = 8;
    struct der *rdns = malloc(cap * sizeof(*rdns));
    if (!rdns) return NULL;
    const unsigned char *q = name.val, *qend = name.val + name.len;
    while (q < qend) {
        if (nrdn == cap) {
            struct der *r = realloc(rdns, 2 * cap * sizeof(*rdns));
            if (!r) {
                free(rdns);
                return NULL;
            }
            rdns = r;
            cap *= 2;
        }
        if (der_read(&q, qend, &rdns[nrdn]) < 0 || rdns[nrdn].tag != 0x31) {
            free(rdns);
            return NULL;
        }
        nrdn++;
    }

    struct sbuf out = {0};
    int bad = 0;
    for (size_t i = nrdn; i-- > 0 && !bad;) {
        if (i != nrdn - 1) sb_puts(&out, ", ");
        const unsigned char *a = rdns[i].val, *aend = rdns[i].val + rdns[i].len;
        int first = 1;
        while (a < aend) {
            struct der ava;
            if (der_read(&a, aend, &ava) < 0 || ava.tag != 0x30) {
                bad = 1;
                break;
            }
            if (!first) sb_puts(&out, " + ");
            first = 0;
            if (java_ava(ava.val, ava.len, &out) < 0) {
                bad = 1;
                break;
            }
        }
    }
    free(rdns);
    if (bad) {
        free(out.s);
        return NULL;
    }
    return sb_take(&out);
}

char *p12_java_dn(X509 *cert, int issuer)
{
    const X509_NAME *nm = issuer ? X509_get_issuer_name(cert) : X509_get_subject_name(cert);
    const unsigned char *der = NULL;
    size_t len = 0;
    if (!nm || !X509_NAME_get0_der(nm, &der, &len)) return NULL;
    return java_dn_der(der, len);
}

/* ----- aliases ----- */

static pthread_once_t locale_once = PTHREAD_ONCE_INIT;
static locale_t utf8_locale;

static void locale_init(void)
{
    /* towlower() of the process locale would depend on setlocale(); C.UTF-8 always
     * has the Unicode simple case mappings. */
    utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

static void put_utf8_ptr(char **o, uint32_t cp)
{
    *o += utf8_encode(cp, *o);
}

/* Decodes UTF-8 into code points; invalid bytes are returned as themselves. */
static size_t utf8_decode(const char *s, size_t n, uint32_t *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len = c < 0x80             ? 1
                     : (c & 0xE0) == 0xC0 ? 2
                     : (c & 0xF0) == 0xE0 ? 3
                     : (c & 0xF8) == 0xF0 ? 4
                                          : 0;
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 7u);
        size_t j = 1;
        for (; len > 1 && j < len && i + j < n && (p[i + j] & 0xC0) == 0x80; j++)
            cp = (cp << 6) | (p[i + j] & 0x3F);
        if (len == 0 || j < len) {
            out[k++] = c;
            i++;
        } else {
            out[k++] = cp;
            i += len;
        }
    }
    return k;
}

static int is_cased(uint32_t c)
{
    return c < 0x80 ? ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
                    : (utf8_locale ? iswalpha_l((wint_t)c, utf8_locale) : iswalpha((wint_t)c)) != 0;
}

/* String.toLowerCase(Locale.ENGLISH): the simple Unicode lower-case mapping, plus
 * Java's two context rules: U+0130 becomes "i" + U+0307, and a capital sigma at the end
 * of a word becomes the final sigma. */
char *p12_java_lower(const char *s)
{
    pthread_once(&locale_once, locale_init);
    size_t n = strlen(s);
    uint32_t *cp = malloc((n + 1) * sizeof(*cp));
    char *out = malloc(n * 2 + 4 + 1); /* lower case never takes more than 2x + one 0307 */
    if (!cp || !out) {
        free(cp);
        free(out);
        return NULL;
    }
    size_t k = utf8_decode(s, n, cp);
    char *o = out;
    for (size_t i = 0; i < k; i++) {
        uint32_t c = cp[i];
        if (c >= 'A' && c <= 'Z') {
            *o++ = (char)(c + 32);
        } else if (c < 0x80) {
            *o++ = (char)c;
        } else if (c == 0x130) {
            put_utf8_ptr(&o, 'i');
            put_utf8_ptr(&o, 0x307);
        } else if (c == 0x3A3) {
            int final = i > 0 && is_cased(cp[i - 1]) && !(i + 1 < k && is_cased(cp[i + 1]));
            put_utf8_ptr(&o, final ? 0x3C2 : 0x3C3);
        } else if (c > 0x10FFFF) {
            put_utf8_ptr(&o, 0xFFFD);
        } else {
            uint32_t l = utf8_locale ? (uint32_t)towlower_l((wint_t)c, utf8_locale) : c;
            put_utf8_ptr(&o, l);
        }
    }
    *o = '\0';
    free(cp);
    return out;
}

/* ----- dates ----- */

void p12_java_date(time_t t, char *buf, size_t buflen)
{
    /* Names spelled out here so that no process locale can change them
     * (Date.toString() always prints Locale.US names). */
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (buflen == 0) return;
    if (!localtime_r(&t, &tm)) {
        snprintf(buf, buflen, "?");
        return;
    }
    /* tzdata spells zones without an established abbreviation as an offset ("-05",
     * "+0545"); Java then prints "GMT-05:00", "GMT+05:45" */
    char zone[48];
    const char *z = tm.tm_zone;
    if (!z || !*z || *z == '+' || *z == '-' || (*z >= '0' && *z <= '9')) {
        long off = tm.tm_gmtoff, a = (off < 0 ? -off : off) % 86400;
        if (off == 0)
            snprintf(zone, sizeof zone, "GMT");
        else
            snprintf(zone, sizeof zone, "GMT%c%02ld:%02ld", off < 0 ? '-' : '+', a / 3600,
                     a % 3600 / 60);
        z = zone;
    }
    snprintf(buf, buflen, "%s %s %02d %02d:%02d:%02d %s %d", days[tm.tm_wday % 7],
             months[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, z,
             tm.tm_year + 1900);
}

static int asn1_time_t(const ASN1_TIME *at, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!at || !ASN1_TIME_to_tm(at, &tm)) return -1;
    *out = timegm(&tm);
    return 0;
}

/* BigInteger.toString(16): lower case, no leading zeros, '-' for negatives. */
static char *java_serial(X509 *cert)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    if (!bn) return NULL;
    char *hex = BN_bn2hex(bn);
    BN_free(bn);
    if (!hex) return NULL;
    const char *p = hex;
    int neg = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    while (*p == '0' && p[1] != '\0')
        p++;
    char *out = malloc(strlen(p) + 2);
    if (out) {
        char *o = out;
        if (neg && strcmp(p, "0") != 0) *o++ = '-';
        for (; *p; p++)
            *o++ = (*p >= 'A' && *p <= 'F') ? (char)(*p - 'A' + 'a') : *p;
        *o = '\0';
    }
    OPENSSL_free(hex);
    return out;
}

/* ActiveGate's description from its parts; NULL when one is missing. */
static char *format_description(const char *dn, time_t nb, time_t na, const char *serial)
{
    char from[64], to[64];
    if (!dn || !serial) return NULL;
    p12_java_date(nb, from, sizeof(from));
    p12_java_date(na, to, sizeof(to));
    size_t n = strlen(dn) + strlen(from) + strlen(to) + strlen(serial) + 64;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "Subject:%s;Valid from:%s;Valid to:%s;Serial number:%s", dn, from, to,
                 serial);
    return out;
}

char *p12_java_description(X509 *cert)
{
    time_t nb, na;
    if (!cert || asn1_time_t(X509_get0_notBefore(cert), &nb) < 0 ||
        asn1_time_t(X509_get0_notAfter(cert), &na) < 0)
        return NULL;
    char *dn = p12_java_dn(cert, 0);
    char *serial = java_serial(cert);
    char *out = format_description(dn, nb, na, serial);
    free(dn);
    free(serial);
    return out;
}

/* ----- JSON ----- */

static void iso_utc(time_t t, char *buf, size_t n)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        snprintf(buf, n, "?");
        return;
    }
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static json_t *key_type(EVP_PKEY *pk)
{
    char buf[80];
    if (!pk) return json_null();
    int id = EVP_PKEY_get_base_id(pk);
    if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS) {
        snprintf(buf, sizeof(buf), "%s-%d", id == EVP_PKEY_RSA ? "RSA" : "RSA-PSS",
                 EVP_PKEY_get_bits(pk));
    } else if (id == EVP_PKEY_EC) {
        char group[64] = "";
        size_t glen = 0;
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            &glen))
            snprintf(group, sizeof(group), "unknown");
        const char *nist = EC_curve_nid2nist(OBJ_txt2nid(group));
        if (nist) {
            /* "P-256" -> "EC-P256" */
            char n2[16];
            size_t j = 0;
            for (const char *c = nist; *c && j + 1 < sizeof(n2); c++)
                if (*c != '-') n2[j++] = *c;
            n2[j] = '\0';
            snprintf(buf, sizeof(buf), "EC-%s", n2);
        } else {
            snprintf(buf, sizeof(buf), "EC-%s", group);
        }
    } else if (id == EVP_PKEY_ED25519) {
        snprintf(buf, sizeof(buf), "Ed25519");
    } else if (id == EVP_PKEY_ED448) {
        snprintf(buf, sizeof(buf), "Ed448");
    } else if (id == EVP_PKEY_DSA) {
        snprintf(buf, sizeof(buf), "DSA-%d", EVP_PKEY_get_bits(pk));
    } else {
        const char *tn = EVP_PKEY_get0_type_name(pk);
        snprintf(buf, sizeof(buf), "%s", tn ? tn : "unknown");
    }
    return json_string(buf);
}

static json_t *sans_json(X509 *cert)
{
    json_t *arr = json_array();
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (!arr || !gens) {
        GENERAL_NAMES_free(gens);
        return arr;
    }
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        struct sbuf b = {0};
        int type;
        ASN1_STRING *s = GENERAL_NAME_get0_value(g, &type);
        if (type == GEN_DNS || type == GEN_EMAIL || type == GEN_URI) {
            sb_puts(&b, type == GEN_DNS ? "DNS:" : type == GEN_EMAIL ? "email:" : "URI:");
            sb_putn(&b, (const char *)ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
        } else if (type == GEN_IPADD) {
            char ip[INET6_ADDRSTRLEN] = "";
            int l = ASN1_STRING_length(s);
            const unsigned char *d = ASN1_STRING_get0_data(s);
            if (l == 4)
                inet_ntop(AF_INET, d, ip, sizeof(ip));
            else if (l == 16)
                inet_ntop(AF_INET6, d, ip, sizeof(ip));
            sb_puts(&b, "IP:");
            sb_puts(&b, ip);
        } else {
            continue;
        }
        if (!b.oom && b.s) json_array_append_new(arr, json_stringn(b.s, b.len));
        free(b.s);
    }
    GENERAL_NAMES_free(gens);
    return arr;
}

static json_t *entry_json(const struct p12_entry *e, time_t now)
{
    X509 *cert = p12_entry_cert(e);
    json_t *o = json_object();
    if (!o || !cert) return o;
    time_t nb = 0, na = 0;
    int nb_ok = asn1_time_t(X509_get0_notBefore(cert), &nb) == 0;
    int na_ok = asn1_time_t(X509_get0_notAfter(cert), &na) == 0;
    char *subj = p12_java_dn(cert, 0);
    char *iss = p12_java_dn(cert, 1);
    char *serial = java_serial(cert);
    char *desc = nb_ok && na_ok ? format_description(subj, nb, na, serial) : NULL;
    json_object_set_new(o, "alias", json_string(p12_entry_alias(e)));
    json_object_set_new(o, "description", desc ? json_string(desc) : json_null());
    json_object_set_new(o, "type", json_string(p12_entry_has_key(e) ? "key" : "trustedCert"));
    json_object_set_new(o, "subject", subj ? json_string(subj) : json_null());
    json_object_set_new(o, "issuer", iss ? json_string(iss) : json_null());
    json_object_set_new(o, "serial", serial ? json_string(serial) : json_null());
    free(desc);
    free(subj);
    free(iss);
    free(serial);

    char t[80];
    if (nb_ok) {
        iso_utc(nb, t, sizeof(t));
        json_object_set_new(o, "notBefore", json_string(t));
    }
    if (na_ok) {
        iso_utc(na, t, sizeof(t));
        json_object_set_new(o, "notAfter", json_string(t));
        long long diff = (long long)na - (long long)now;
        long long days = diff >= 0 ? diff / 86400 : -((-diff + 86399) / 86400);
        json_object_set_new(o, "daysLeft", json_integer(days));
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(cert, EVP_sha256(), md, &mdlen)) {
        struct sbuf h = {0};
        sb_hex(&h, md, mdlen);
        if (h.s) json_object_set_new(o, "sha256", json_string(h.s));
        free(h.s);
    }
    json_object_set_new(o, "sans", sans_json(cert));
    EVP_PKEY *pk = p12_entry_has_key(e) ? p12_entry_key(e) : X509_get0_pubkey(cert);
    json_object_set_new(o, "keyType", key_type(pk));
    STACK_OF(X509) *chain = p12_entry_chain(e);
    json_object_set_new(o, "chainLength", json_integer(1 + (chain ? sk_X509_num(chain) : 0)));
    json_t *names = json_array();
    char **v = NULL;
    if (names && p12_entry_has_key(e) && sni_cert_names(cert, &v) > 0)
        for (char **p = v; *p; p++)
            json_array_append_new(names, json_string(*p));
    sni_names_free(v);
    json_object_set_new(o, "names", names);
    return o;
}

json_t *p12_describe(const struct p12_file *f, const char *name)
{
    json_t *root = json_object();
    json_t *desc = json_array();
    if (!root || !desc) {
        json_decref(root);
        json_decref(desc);
        return NULL;
    }
    time_t now = time(NULL);
    json_object_set_new(root, "name", json_string(name ? name : ""));
    for (size_t i = 0; f && i < p12_count(f); i++) {
        json_t *e = entry_json(p12_get(f, i), now);
        if (e) json_array_append_new(desc, e);
    }
    json_object_set_new(root, "desc", desc);
    return root;
}
