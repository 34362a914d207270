/* conf.c - the typed settings read from custom.properties, with their validation. */
#include "conf.h"

#include "err.h"
#include "propfile.h"
#include "secret.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The errors found so far: every wrong value is recorded and the loading goes on, so
 * that check-config can list them all; conf_settings_load reports the first by line. */
#define CONF_MAX_ERRORS 64
struct conf_errors {
    int n, dropped;
    struct {
        int line;
        char *msg;
    } e[CONF_MAX_ERRORS];
};

struct loader {
    const struct propfile *doc;
    const char *path;
    const char *section;
    struct conf_errors *errs;
};

static int record(const struct loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records one error sentence (with the line it is about, for sorting); returns -1. */
static int record(const struct loader *ld, int line, const char *fmt, ...)
{
    struct conf_errors *es = ld->errs;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (es->n == CONF_MAX_ERRORS) {
        es->dropped++;
        return -1;
    }
    es->e[es->n].line = line;
    if ((es->e[es->n].msg = strdup(msg))) es->n++;
    else es->dropped++;
    return -1;
}

/* Fails (evaluates to -1) with "<path>:<line>: <key>: " followed by fmt, the line being
 * that of key in the current section. A macro so that the whole sentence is one
 * format string, checked by the compiler. */
#define fail(ld, key, fmt, ...)                                                                    \
    record((ld), propfile_line((ld)->doc, (ld)->section, (key)), "%s:%d: %s: " fmt, (ld)->path,   \
           propfile_line((ld)->doc, (ld)->section, (key)), (key), ##__VA_ARGS__)

/* "'<v>' <problem>; <allowed>", or "the value is empty; <allowed>". */
static int fail_value(const struct loader *ld, const char *key, const char *v, const char *problem,
                      const char *allowed)
{
    if (!*v) return fail(ld, key, "the value is empty; %s", allowed);
    return fail(ld, key, "'%s' %s; %s", v, problem, allowed);
}

static int nomem(const struct loader *ld)
{
    return record(ld, 0, "%s: out of memory", ld->path);
}

/* The unescaped value of key, or NULL (absent) in *out. */
/* *out = the unescaped raw value, or NULL when raw is NULL. */
static int unescaped(const struct loader *ld, const char *raw, char **out)
{
    *out = NULL;
    if (raw && !(*out = propfile_unescape(raw))) return nomem(ld);
    return 0;
}

static int get(const struct loader *ld, const char *key, char **out)
{
    return unescaped(ld, propfile_get_raw(ld->doc, ld->section, key), out);
}

/* A string setting: an empty value counts as absent. */
static int get_string(const struct loader *ld, const char *key, char **out)
{
    const char *raw = propfile_get_raw(ld->doc, ld->section, key);
    return unescaped(ld, raw && *raw ? raw : NULL, out);
}

/* Parses decimal digits only: 0, -1 when not a number, -2 when larger than limit. */
static int parse_u64(const char *s, uint64_t limit, uint64_t *out)
{
    uint64_t v = 0;
    int big = 0;
    if (!isdigit((unsigned char)*s)) return -1;
    for (; isdigit((unsigned char)*s); s++) {
        if (v <= limit) v = v * 10 + (uint64_t)(*s - '0');
        big |= v > limit;
    }
    if (*s) return -1;
    *out = v;
    return big ? -2 : 0;
}

/* An integer key in [min, max]; absent leaves *out alone. */
static int get_uint(const struct loader *ld, const char *key, unsigned min, unsigned max,
                    const char *unit, const char *hint, unsigned *out)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    uint64_t n;
    int rc = 0;
    char allowed[160], problem[64];
    snprintf(allowed, sizeof allowed, "use a number from %u to %u%s", min, max, hint);
    snprintf(problem, sizeof problem, "is not %s", unit);
    int p = parse_u64(v, max, &n);
    if (p == -1)
        rc = fail_value(ld, key, v, problem, allowed);
    else if (p < 0 || n < min)
        rc = fail_value(ld, key, v, "is out of range", allowed);
    else
        *out = (unsigned)n;
    free(v);
    return rc;
}

/* Seconds with an optional fraction ("0.5"), 0.1 to 3600, stored as milliseconds. */
static int get_seconds_ms(const struct loader *ld, const char *key, unsigned *out_ms)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    const char *p = v;
    uint64_t whole = 0, ms;
    int digits = 0, rest = 0;
    for (; isdigit((unsigned char)*p); p++, digits++)
        if (whole < 10000000) whole = whole * 10 + (uint64_t)(*p - '0');
    ms = whole * 1000;
    if (*p == '.') {
        uint64_t scale = 100;
        for (p++; isdigit((unsigned char)*p); p++, digits++) {
            if (scale)
                ms += (uint64_t)(*p - '0') * scale;
            else if (*p != '0')
                rest = 1; /* beyond a millisecond */
            scale /= 10;
        }
    }
    int rc = 0;
    if (*p || digits == 0)
        rc = fail_value(ld, key, v, "is not a number of seconds",
                        "use a value from 0.1 to 3600, e.g. 0.5 or 30");
    else if (ms < 100 || ms > 3600000 || (ms == 3600000 && rest))
        rc = fail_value(ld, key, v, "is out of range", "use a number of seconds from 0.1 to 3600");
    else
        *out_ms = (unsigned)ms;
    free(v);
    return rc;
}

static int get_switch(const struct loader *ld, const char *key, const char *allowed, int *out)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    int rc = 0;
    if (strcasecmp(v, "on") == 0 || strcasecmp(v, "true") == 0)
        *out = 1;
    else if (strcasecmp(v, "off") == 0 || strcasecmp(v, "false") == 0)
        *out = 0;
    else
        rc = fail_value(ld, key, v, "is not a switch", allowed);
    free(v);
    return rc;
}

static int get_size(const struct loader *ld, const char *key, size_t *out)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    size_t len = strlen(v);
    uint64_t mult = 1, n;
    char last = len ? v[len - 1] : '\0';
    if (last == 'K' || last == 'k') mult = 1024;
    if (last == 'M' || last == 'm') mult = 1024 * 1024;
    char *digits = strndup(v, mult > 1 ? len - 1 : len);
    if (!digits) {
        free(v);
        return nomem(ld);
    }
    int rc = 0, p = parse_u64(digits, 64u * 1024 * 1024, &n);
    if (p == -1)
        rc = fail_value(ld, key, v, "is not a size",
                        "use a number of bytes, optionally with a K or M suffix (KiB, MiB), "
                        "from 1K to 64M");
    else if (p < 0 || n * mult < 1024 || n * mult > 64u * 1024 * 1024)
        rc = fail_value(ld, key, v, "is out of range",
                        "use a size from 1K (1024 bytes) to 64M, e.g. 512K or 8M");
    else
        *out = (size_t)(n * mult);
    free(digits);
    free(v);
    return rc;
}

#define PROTOCOLS "use TLSv1.2, TLSv1.3 or both, comma-separated"

static int get_protocols(const struct loader *ld, unsigned *out)
{
    const char *key = "ssl-protocols";
    const char *raw = propfile_get_raw(ld->doc, ld->section, key);
    if (!raw) return 0;
    size_t n;
    char **list = propfile_split_list(raw, &n);
    if (!list) return nomem(ld);
    unsigned v = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (strcasecmp(list[i], "TLSv1.2") == 0)
            v |= TLS_V12;
        else if (strcasecmp(list[i], "TLSv1.3") == 0)
            v |= TLS_V13;
        else
            rc = fail_value(ld, key, list[i], "is not supported", PROTOCOLS);
    }
    if (rc == 0 && n == 0) rc = fail(ld, key, "the list is empty; " PROTOCOLS);
    if (rc == 0) *out = v;
    propfile_list_free(list);
    return rc;
}

/* Why url is not usable as an upstream, or NULL when it is. */
static const char *url_problem(const char *url)
{
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        p = url + 8;
    else
        return "does not start with http:// or https://";
    size_t hostlen = 0;
    if (*p == '[') {
        for (p++; *p && *p != ']'; p++, hostlen++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return "has an invalid IPv6 address";
        if (*p++ != ']') return "has an IPv6 address without its closing ']'";
    } else {
        for (; *p && *p != ':' && *p != '/'; p++, hostlen++)
            if (!isalnum((unsigned char)*p) && !strchr("-._", *p))
                return "has a character that is not allowed in a host name";
    }
    if (hostlen == 0) return "has no host";
    if (*p == ':') {
        char *end;
        unsigned long port = isdigit((unsigned char)p[1]) ? strtoul(p + 1, &end, 10) : 0;
        if (port < 1 || port > 65535 || (*end && *end != '/'))
            return "has an invalid port (allowed: 1 to 65535)";
        p = end;
    }
    for (; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) return "contains white space";
        if (*p == '?' || *p == '#') return "has a query or fragment";
    }
    return NULL;
}

static int load_webserver(struct loader *ld, struct conf_settings *s)
{
    ld->section = CONF_SECTION_WEBSERVER;
    const char *range = ", or remove the line to turn the plain HTTP listener off";
    /* every key is checked, also after an error (| rather than ||) */
    int rc = get_uint(ld, "port-ssl", 1, 65535, "a port number", "", &s->port_ssl) |
             get_uint(ld, "port", 1, 65535, "a port number", range, &s->port_http);
    if (s->port_http == s->port_ssl)
        rc |= fail(ld, "port",
                   "%u is also the HTTPS port (port-ssl); use another port for "
                   "plain HTTP, or remove the line to turn it off",
                   s->port_http);
    rc |= get_protocols(ld, &s->tls_versions);
    const char *raw = propfile_get_raw(ld->doc, ld->section, "excluded-ciphers");
    propfile_list_free(s->excluded_ciphers);
    if (!(s->excluded_ciphers = propfile_split_list(raw, NULL))) return nomem(ld);
    rc |= get_string(ld, "certificate-file", &s->certificate_file) |
          get_string(ld, "certificate-password", &s->certificate_password) |
          get_string(ld, "certificate-password-encr", &s->certificate_password_encr) |
          get_string(ld, "certificate-alias", &s->certificate_alias);
    raw = propfile_get_raw(ld->doc, ld->section, "included-ciphers");
    propfile_list_free(s->included_ciphers);
    if (!(s->included_ciphers = propfile_split_list(raw, NULL))) return nomem(ld);
    return rc;
}

/* metrics-listen: off (absent), on (127.0.0.1:9998), HOST:PORT or [IPv6]:PORT. */
static int get_metrics_listen(const struct loader *ld, struct conf_settings *s)
{
    char *v;
    if (get(ld, "metrics-listen", &v) < 0) return -1;
    if (!v) return 0;
    const char *allowed = "use off, on (127.0.0.1:9998), HOST:PORT or [IPv6]:PORT";
    int rc = 0;
    if (strcasecmp(v, "off") == 0 || strcasecmp(v, "false") == 0) {
        s->metrics_port = 0;
    } else if (strcasecmp(v, "on") == 0 || strcasecmp(v, "true") == 0) {
        snprintf(s->metrics_host, sizeof s->metrics_host, "127.0.0.1");
        s->metrics_port = 9998;
    } else {
        const char *h = v, *colon;
        size_t hl;
        if (v[0] == '[') {
            const char *rb = strchr(v, ']');
            h = v + 1;
            hl = rb ? (size_t)(rb - h) : 0;
            colon = rb && rb[1] == ':' ? rb + 1 : NULL;
        } else {
            colon = strchr(v, ':');
            hl = colon ? (size_t)(colon - v) : 0;
            if (colon && strchr(colon + 1, ':')) colon = NULL; /* IPv6 needs brackets */
        }
        uint64_t port = 0;
        if (!colon || hl == 0 || hl >= sizeof s->metrics_host)
            rc = fail_value(ld, "metrics-listen", v, "is not an address", allowed);
        if (rc == 0 && (parse_u64(colon + 1, 65535, &port) != 0 || port == 0))
            rc = fail_value(ld, "metrics-listen", v, "has no valid port (1 to 65535)", allowed);
        if (rc == 0) {
            memcpy(s->metrics_host, h, hl);
            s->metrics_host[hl] = '\0';
            s->metrics_port = (unsigned)port;
        }
    }
    free(v);
    return rc;
}

static int load_certgate(struct loader *ld, struct conf_settings *s)
{
    ld->section = CONF_SECTION_CERTGATE;
    const char *onoff = "use on, off, true or false";
    return get_size(ld, "max-upload-size", &s->max_upload_bytes) |
           get_seconds_ms(ld, "keepalive-timeout", &s->keepalive_timeout_ms) |
           get_seconds_ms(ld, "header-timeout", &s->header_timeout_ms) |
           get_seconds_ms(ld, "body-timeout", &s->body_timeout_ms) |
           get_switch(ld, "ssl-session-cache", onoff, &s->session_cache) |
           get_switch(ld, "ssl-session-tickets", onoff, &s->session_tickets) |
           get_switch(ld, "session-reused-header", onoff, &s->session_reused_header) |
           get_uint(ld, "api-queue", 1, 1024, "a number", "", &s->api_queue) |
           get_uint(ld, "auth-failures-per-minute", 0, 1000000, "a number",
                    " (0 turns the throttling of failed authentications off)",
                    &s->auth_failures) |
           get_seconds_ms(ld, "auth-failure-window", &s->auth_window_ms) |
           get_uint(ld, "max-connections", 1, 10000000, "a number",
                    ", or remove the line to size it from the open-files limit",
                    &s->max_connections) |
           get_uint(ld, "min-rate", 0, 1000000000, "a number of bytes per second", " (0: off)",
                    &s->min_rate) |
           get_metrics_listen(ld, s) |
           get_size(ld, "audit-max-size", &s->audit_max_bytes) |
           get_uint(ld, "audit-files", 1, 100, "a number", " (rotated audit files kept)",
                    &s->audit_files);
}

int conf_cidr_parse(const char *s, struct conf_cidr *out)
{
    char a[64];
    const char *slash = strchr(s, '/');
    size_t al = slash ? (size_t)(slash - s) : strlen(s);
    if (al == 0 || al >= sizeof a) return -1;
    memcpy(a, s, al);
    a[al] = '\0';
    memset(out, 0, sizeof *out);
    unsigned max;
    if (inet_pton(AF_INET, a, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, a, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    uint64_t bits = max;
    if (slash && (parse_u64(slash + 1, max, &bits) != 0 || strlen(slash + 1) > 3)) return -1;
    out->bits = (unsigned char)bits;
    for (unsigned i = 0; i < max / 8; i++) { /* clear the host bits */
        unsigned keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? (unsigned)bits - i * 8 : 0;
        out->addr[i] &= (unsigned char)(0xff00u >> keep);
    }
    return 0;
}

int conf_cidr_match(const struct conf_cidr *list, unsigned n, const struct sockaddr *sa)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const unsigned char *addr;
    int family = sa ? sa->sa_family : 0;
    if (family == AF_INET) {
        addr = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (family == AF_INET6) {
        addr = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (memcmp(addr, mapped, sizeof mapped) == 0) {
            family = AF_INET;
            addr += 12;
        }
    } else {
        return 0;
    }
    for (unsigned i = 0; i < n; i++) {
        const struct conf_cidr *c = &list[i];
        if (c->family != family) continue;
        unsigned full = c->bits / 8, rest = c->bits % 8;
        if (memcmp(addr, c->addr, full) != 0) continue;
        if (rest && ((addr[full] ^ c->addr[full]) & (0xff00u >> rest) & 0xff)) continue;
        return 1;
    }
    return 0;
}

static int get_cidrs(const struct loader *ld, const char *key, struct conf_cidr *out,
                     unsigned *n)
{
    const char *raw = propfile_get_raw(ld->doc, ld->section, key);
    if (!raw) return 0;
    size_t count = 0;
    char **list = propfile_split_list(raw, &count);
    if (!list) return nomem(ld);
    int rc = 0;
    const char *allowed = "use IPv4 or IPv6 addresses or ranges, comma-separated, e.g. "
                          "10.0.0.0/8, 192.0.2.7, 2001:db8::/32";
    if (count > CONF_MAX_CIDRS)
        rc = fail(ld, key, "%zu ranges; at most %d are allowed", count, CONF_MAX_CIDRS);
    for (size_t i = 0; rc == 0 && i < count; i++)
        if (conf_cidr_parse(list[i], &out[i]) != 0)
            rc = fail_value(ld, key, list[i], "is not an address or an address/prefix-length",
                            allowed);
    if (rc == 0) *n = (unsigned)count;
    propfile_list_free(list);
    return rc;
}

static int load_upstream(struct loader *ld, struct conf_upstream *u)
{
    ld->section = CONF_SECTION_UPSTREAM;
    int rc = get_string(ld, "url", &u->url);
    const char *why = u->url ? url_problem(u->url) : NULL;
    if (why)
        rc |= fail(ld, "url",
                   "'%s' %s; use http:// or https://, a host, an optional port and "
                   "an optional path prefix, e.g. https://backend.example:8443/api",
                   u->url, why);
    const char *secs = " seconds";
    return rc |
           get_uint(ld, "connect-timeout", 1, 3600, "a whole number of seconds", secs,
                    &u->connect_timeout_s) |
           get_uint(ld, "read-timeout", 1, 3600, "a whole number of seconds", secs,
                    &u->read_timeout_s) |
           get_uint(ld, "max-connections", 1, 10000, "a number", "", &u->max_connections) |
           get_string(ld, "ca-file", &u->ca_file) |
           get_switch(ld, "verify", "use true or false (on and off also work)", &u->verify) |
           get_cidrs(ld, "trusted-proxies", u->trusted_proxies, &u->ntrusted_proxies) |
           get_switch(ld, "forwarded", "use on, off, true or false", &u->forwarded) |
           get_uint(ld, "queue-size", 0, 100000, "a number", " (0: no queue, answer 503 at once)",
                    &u->queue_size);
}

/* Why name is not a DNS name an ACME CA can validate with http-01 or tls-alpn-01, or
 * NULL. Lower-cases it in place. */
static const char *domain_problem(char *name)
{
    size_t len = strlen(name), label = 0;
    if (name[0] == '*') return "is a wildcard, which needs the dns-01 challenge (not supported)";
    if (len == 0 || len > 253) return "is not 1 to 253 characters long";
    int alpha = 0;
    for (char *p = name; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
        if (*p == '.') {
            if (label == 0 || p[-1] == '-') return "has an empty label or one ending in '-'";
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-')
            return "has a character that is not allowed in a host name";
        if (*p == '-' && label == 0) return "has a label starting with '-'";
        if (++label > 63) return "has a label longer than 63 characters";
        alpha |= isalpha((unsigned char)*p) != 0;
    }
    if (label == 0 || name[len - 1] == '-') return "has an empty label or one ending in '-'";
    if (!alpha || !strchr(name, '.'))
        return "is not a fully qualified domain name (IP addresses are not supported)";
    return NULL;
}

/* renew-before: a duration with an optional unit (s, m, h, d; default seconds), from
 * 1 minute to 365 days. */
static int get_duration(const struct loader *ld, const char *key, unsigned *out_s)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    size_t len = strlen(v);
    uint64_t mult = 1, n = 0;
    char last = len ? v[len - 1] : '\0';
    mult = last == 'd' ? 86400 : last == 'h' ? 3600 : last == 'm' ? 60 : 1;
    if (last == 's' || mult > 1) v[len - 1] = '\0';
    int p = parse_u64(v, 365u * 86400, &n), rc = 0;
    if (last == 's' || mult > 1) v[len - 1] = last;
    const char *allowed = "use a duration from 1 minute to 365 days, e.g. 30d, 12h or 3600 "
                          "(seconds), or remove the line for a third of the lifetime";
    if (p == -1)
        rc = fail_value(ld, key, v, "is not a duration", allowed);
    else if (p < 0 || n * mult < 60 || n * mult > 365u * 86400)
        rc = fail_value(ld, key, v, "is out of range", allowed);
    else
        *out_s = (unsigned)(n * mult);
    free(v);
    return rc;
}

static int get_choice(const struct loader *ld, const char *key, const char *const *names,
                      const char *allowed, int *out)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    int rc = -1;
    for (int i = 0; names[i]; i++)
        if (strcasecmp(v, names[i]) == 0) {
            *out = i;
            rc = 0;
        }
    if (rc) rc = fail_value(ld, key, v, "is not supported", allowed);
    free(v);
    return rc;
}

static int get_domains(const struct loader *ld, struct conf_acme *a)
{
    const char *raw = propfile_get_raw(ld->doc, ld->section, "domains");
    size_t n = 0;
    propfile_list_free(a->domains);
    if (!(a->domains = propfile_split_list(raw, &n))) return nomem(ld);
    int rc = 0;
    const char *allowed = "use host names, comma-separated, e.g. gw.example.com, "
                          "gw2.example.com";
    if (n > 100) rc = fail(ld, "domains", "%zu names; at most 100 are allowed", n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *why = domain_problem(a->domains[i]);
        for (size_t j = 0; !why && j < i; j++)
            if (strcmp(a->domains[i], a->domains[j]) == 0) why = "is listed twice";
        if (why) rc = fail_value(ld, "domains", a->domains[i], why, allowed);
    }
    a->ndomains = rc == 0 ? (unsigned)n : 0;
    return rc;
}

static int load_acme(struct loader *ld, struct conf_settings *s)
{
    static const char *const challenges[] = {"http-01", "tls-alpn-01", NULL};
    static const char *const keys[] = {"ecdsa-p256", "rsa-2048", NULL};
    struct conf_acme *a = &s->acme;
    ld->section = CONF_SECTION_ACME;
    int rc = get_string(ld, "directory", &a->directory) | get_string(ld, "email", &a->email) |
             get_domains(ld, a) |
             get_choice(ld, "challenge", challenges, "use http-01 or tls-alpn-01",
                        &a->challenge) |
             get_choice(ld, "key-type", keys, "use ecdsa-p256 or rsa-2048", &a->key_type) |
             get_string(ld, "ca-file", &a->ca_file) | get_string(ld, "eab-kid", &a->eab_kid) |
             get_string(ld, "eab-hmac-key", &a->eab_hmac_key) |
             get_duration(ld, "renew-before", &a->renew_before_s);
    const char *why = a->directory ? url_problem(a->directory) : NULL;
    if (!why && a->directory && strncasecmp(a->directory, "https://", 8) != 0)
        why = "is not an https:// URL (RFC 8555 requires HTTPS)";
    if (why)
        rc |= fail(ld, "directory", "'%s' %s; use the CA's directory URL, e.g. "
                   "https://acme-v02.api.letsencrypt.org/directory", a->directory, why);
    if (a->email && (!strchr(a->email, '@') || strpbrk(a->email, " \t,:;<>") ||
                     a->email[0] == '@' || a->email[strlen(a->email) - 1] == '@'))
        rc |= fail_value(ld, "email", a->email, "is not an e-mail address",
                         "use one address, e.g. ops@example.com");
    if (a->eab_hmac_key) {
        size_t len = strlen(a->eab_hmac_key), i = 0;
        while (i < len && (isalnum((unsigned char)a->eab_hmac_key[i]) ||
                           a->eab_hmac_key[i] == '-' || a->eab_hmac_key[i] == '_'))
            i++;
        while (i < len && a->eab_hmac_key[i] == '=') i++;
        if (i < len || len < 16) /* never quote the secret itself */
            rc |= fail(ld, "eab-hmac-key", "the value is not a base64url key of at least 12 "
                       "bytes; paste the HMAC key exactly as the CA gave it");
    }
    if (!a->eab_kid != !a->eab_hmac_key)
        rc |= fail(ld, a->eab_kid ? "eab-kid" : "eab-hmac-key",
                   "External Account Binding needs both eab-kid and eab-hmac-key");
    if (a->directory && a->ndomains == 0 && !propfile_get_raw(ld->doc, ld->section, "domains"))
        rc |= fail(ld, "directory", "[acme] needs domains, the names the certificate is for "
                   "(comma-separated), or remove directory to turn ACME off");
    else if (a->directory && a->ndomains == 0 && rc == 0)
        rc |= fail(ld, "domains", "the list is empty; use host names, comma-separated");
    if (a->directory && a->challenge == CONF_ACME_HTTP01 && s->port_http == 0)
        rc |= fail(ld, propfile_get_raw(ld->doc, ld->section, "challenge") ? "challenge"
                                                                           : "directory",
                   "http-01 is answered on the plain HTTP listener, which is "
                   "off; set port in [%s] (the CA connects to port 80 of each domain, so "
                   "forward it there), or use challenge = tls-alpn-01", CONF_SECTION_WEBSERVER);
    if (!a->directory) {
        static const char *const others[] = {"email", "domains", "challenge", "key-type",
                                             "ca-file", "eab-kid", "eab-hmac-key",
                                             "renew-before", NULL};
        for (int i = 0; others[i]; i++)
            if (propfile_get_raw(ld->doc, ld->section, others[i]))
                rc |= fail(ld, others[i], "has no effect without directory; set directory "
                           "to the CA's directory URL, or remove the line");
    }
    return rc;
}

#define FLEET_MAX_ENDPOINTS 16

/* etcd: comma-separated http(s):// URLs without a path; *out keeps the list as written
 * (white space around the commas removed). */
static int get_etcd_endpoints(const struct loader *ld, char **out)
{
    const char *raw = propfile_get_raw(ld->doc, ld->section, "etcd");
    if (!raw) return 0;
    size_t n = 0;
    char **list = propfile_split_list(raw, &n);
    if (!list) return nomem(ld);
    const char *allowed = "use etcd client URLs, comma-separated, e.g. "
                          "http://127.0.0.1:2379,http://127.0.0.1:22379";
    int rc = 0;
    if (n == 0) rc = fail(ld, "etcd", "the list is empty; %s", allowed);
    if (n > FLEET_MAX_ENDPOINTS)
        rc = fail(ld, "etcd", "%zu endpoints; at most %d are allowed", n, FLEET_MAX_ENDPOINTS);
    size_t len = 1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *why = url_problem(list[i]);
        const char *host = strstr(list[i], "://");
        const char *path = host ? strchr(host + 3, '/') : NULL;
        if (!why && path && strcmp(path, "/") != 0) why = "has a path";
        if (why) rc = fail_value(ld, "etcd", list[i], why, allowed);
        len += strlen(list[i]) + 1;
    }
    if (rc == 0) {
        if (!(*out = calloc(1, len))) rc = nomem(ld);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            if (i) strcat(*out, ",");
            strcat(*out, list[i]);
        }
    }
    propfile_list_free(list);
    return rc;
}

/* prefix: starts with '/', no '/' at the end, no "//", printable ASCII without spaces. */
static int check_prefix(const struct loader *ld, const char *v)
{
    const char *allowed = "use a path such as /certgate (letters, digits and -._/ only, "
                          "no '/' at the end, at most 200 characters)";
    size_t len = strlen(v);
    const char *why = NULL;
    if (v[0] != '/')
        why = "does not start with '/'";
    else if (len > 200)
        why = "is too long";
    else if (len > 1 && v[len - 1] == '/')
        why = "ends with '/'";
    else if (len == 1)
        why = "is the whole key space";
    else if (strstr(v, "//"))
        why = "has an empty segment ('//')";
    for (const char *p = v; !why && *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-._/", *p)) why = "has a character that is not allowed";
    return why ? fail_value(ld, "prefix", v, why, allowed) : 0;
}

/* member-id: 1-128 characters from letters, digits and -._: */
static int check_member_id(const struct loader *ld, const char *v)
{
    size_t len = strlen(v);
    int ok = len >= 1 && len <= 128;
    for (const char *p = v; ok && *p; p++)
        ok = isalnum((unsigned char)*p) || strchr("-._:", *p);
    return ok ? 0
              : fail_value(ld, "member-id", v, "is not a member id",
                           "use 1 to 128 letters, digits, '-', '.', '_' or ':', e.g. gw1");
}

static int load_fleet(struct loader *ld, struct conf_settings *s)
{
    ld->section = CONF_SECTION_FLEET;
    struct conf_fleet *f = &s->fleet;
    static const char *const keys[] = {"prefix", "ca-file", "cert-file", "key-file",
                                       "fleet-key-file", "member-id", "timeout",
                                       "environment", "acme-lock-ttl"};
    int rc = get_etcd_endpoints(ld, &f->etcd);
    if (!propfile_get_raw(ld->doc, ld->section, "etcd")) {
        /* no etcd, no fleet: any other key of the section is a mistake worth naming */
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (propfile_get_raw(ld->doc, ld->section, keys[i]))
                rc |= fail(ld, keys[i],
                           "[fleet] has no etcd key; add etcd = http://HOST:2379,... to use a "
                           "fleet, or remove the section");
        return rc;
    }
    rc |= get_string(ld, "prefix", &f->prefix) | get_string(ld, "ca-file", &f->ca_file) |
          get_string(ld, "cert-file", &f->cert_file) | get_string(ld, "key-file", &f->key_file) |
          get_string(ld, "fleet-key-file", &f->fleet_key_file) |
          get_string(ld, "member-id", &f->member_id) |
          get_seconds_ms(ld, "timeout", &f->timeout_ms) |
          get_string(ld, "environment", &f->environment);
    unsigned ttl_ms = 30000;
    rc |= get_seconds_ms(ld, "acme-lock-ttl", &ttl_ms);
    if (ttl_ms < 5000 || ttl_ms > 600000) {
        rc |= fail_value(ld, "acme-lock-ttl",
                         propfile_get_raw(ld->doc, ld->section, "acme-lock-ttl") ?: "?",
                         "is out of range", "use a number of seconds from 5 to 600, e.g. 30");
        ttl_ms = 30000;
    }
    f->acme_lock_ttl_s = ttl_ms / 1000;
    int env_ok = 1;
    for (const char *p = f->environment; p && *p && env_ok; p++)
        env_ok = isalnum((unsigned char)*p) || *p == '-' || *p == '_';
    if (f->environment && (!env_ok || strlen(f->environment) > 64)) {
        rc |= fail_value(ld, "environment", f->environment, "is not an environment ID",
                         "use letters, digits, '-' and '_' (at most 64), e.g. myenv");
        free(f->environment);
        f->environment = NULL;
    }
    if (f->prefix && check_prefix(ld, f->prefix) < 0) {
        rc = -1;
        free(f->prefix);
        f->prefix = NULL;
    }
    if (f->member_id && check_member_id(ld, f->member_id) < 0) {
        rc = -1;
        free(f->member_id);
        f->member_id = NULL;
    }
    if (f->cert_file && !f->key_file)
        rc |= fail(ld, "cert-file",
                   "a client certificate needs its private key; add key-file (the PEM key of "
                   "cert-file)");
    if (f->key_file && !f->cert_file)
        rc |= fail(ld, "key-file",
                   "is the private key of the client certificate for etcd, but cert-file is "
                   "missing (the fleet key is fleet-key-file)");
    if (!f->prefix && !(f->prefix = strdup("/certgate"))) rc |= nomem(ld);
    if (!f->member_id) {
        char host[256] = "";
        if (gethostname(host, sizeof host - 1) < 0 || !*host) snprintf(host, sizeof host, "localhost");
        char id[300];
        snprintf(id, sizeof id, "%.120s:%u", host, s->port_ssl);
        for (char *p = id; *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr("-._:", *p)) *p = '_';
        if (!(f->member_id = strdup(id))) rc |= nomem(ld);
    }
    return rc;
}

/* Writes the recorded errors into err, sorted by line, one per line (only the first when
 * first_only), frees them, and returns their number. */
static int errors_report(struct conf_errors *es, int first_only, char *err, size_t errlen)
{
    for (int i = 1; i < es->n; i++) /* insertion sort: stable, few items */
        for (int j = i; j > 0 && es->e[j - 1].line > es->e[j].line; j--) {
            int l = es->e[j].line;
            char *m = es->e[j].msg;
            es->e[j] = es->e[j - 1];
            es->e[j - 1].line = l;
            es->e[j - 1].msg = m;
        }
    size_t used = 0;
    if (errlen) err[0] = '\0';
    for (int i = 0; i < es->n; i++) {
        if ((!first_only || i == 0) && used + 1 < errlen) {
            int w = snprintf(err + used, errlen - used, "%s%s", i ? "\n" : "", es->e[i].msg);
            used += w > 0 ? (size_t)w : 0;
            if (used >= errlen) used = errlen - 1;
        }
        free(es->e[i].msg);
    }
    if (!first_only && es->dropped && used + 1 < errlen)
        snprintf(err + used, errlen - used, "\n(%d more errors not shown)", es->dropped);
    int n = es->n + es->dropped;
    memset(es, 0, sizeof *es);
    return n;
}

static int settings_load(const struct propfile *doc, const char *path, struct conf_settings *out,
                         int all, char *err, size_t errlen, int *nerrors)
{
    /* the defaults */
    struct conf_settings s = {
        .port_ssl = 9999,
        .tls_versions = TLS_V12 | TLS_V13,
        .max_upload_bytes = 1024 * 1024,
        .keepalive_timeout_ms = 75000,
        .header_timeout_ms = 20000,
        .body_timeout_ms = 60000,
        .session_cache = 1,
        .session_tickets = 1,
        .api_queue = 8,
        .auth_failures = 20,
        .auth_window_ms = 60000,
        .min_rate = 1024,
        .upstream = {
            .connect_timeout_s = 5, .read_timeout_s = 60, .max_connections = 32, .verify = 1}};
    s.upstream.queue_size = 256;
    s.audit_max_bytes = 10u << 20;
    s.audit_files = 5;
    struct conf_errors *es = calloc(1, sizeof *es);
    memset(out, 0, sizeof *out);
    if (nerrors) *nerrors = 0;
    if (!es) {
        err_set(err, errlen, "%s: out of memory", path);
        if (nerrors) *nerrors = 1;
        return -1;
    }
    struct loader ld = {.doc = doc, .path = path, .errs = es};
    load_webserver(&ld, &s);
    load_certgate(&ld, &s);
    load_upstream(&ld, &s.upstream);
    load_acme(&ld, &s);
    s.fleet.timeout_ms = 5000;
    load_fleet(&ld, &s);
    int n = errors_report(es, !all, err, errlen);
    free(es);
    if (nerrors) *nerrors = n;
    if (n && !all) {
        conf_settings_free(&s);
        return -1;
    }
    *out = s;
    return n ? -1 : 0;
}

int conf_settings_load(const struct propfile *doc, const char *path, struct conf_settings *out,
                       char *err, size_t errlen)
{
    return settings_load(doc, path, out, 0, err, errlen, NULL);
}

int conf_settings_check(const struct propfile *doc, const char *path, struct conf_settings *out,
                        char *err, size_t errlen, int *nerrors)
{
    return settings_load(doc, path, out, 1, err, errlen, nerrors);
}

void conf_settings_free(struct conf_settings *s)
{
    propfile_list_free(s->excluded_ciphers);
    propfile_list_free(s->included_ciphers);
    free(s->certificate_file);
    secret_free(s->certificate_password);
    secret_free(s->certificate_password_encr);
    free(s->certificate_alias);
    free(s->upstream.url);
    free(s->upstream.ca_file);
    free(s->acme.directory);
    free(s->acme.email);
    propfile_list_free(s->acme.domains);
    free(s->acme.ca_file);
    free(s->acme.eab_kid);
    secret_free(s->acme.eab_hmac_key);
    free(s->fleet.etcd);
    free(s->fleet.prefix);
    free(s->fleet.ca_file);
    free(s->fleet.cert_file);
    free(s->fleet.key_file);
    free(s->fleet.fleet_key_file);
    free(s->fleet.member_id);
    free(s->fleet.environment);
    memset(s, 0, sizeof *s);
}
