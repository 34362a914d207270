/* upstream.c - see upstream.h */
#include "upstream.h"

#include "err.h"
#include "tls.h"

#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>

static int streq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int upstream_same(const struct upstream *t, const struct conf_upstream *u)
{
    return t && streq(t->conf.url, u->url) && streq(t->conf.ca_file, u->ca_file) &&
           t->conf.connect_timeout_s == u->connect_timeout_s &&
           t->conf.read_timeout_s == u->read_timeout_s &&
           t->conf.max_connections == u->max_connections && t->conf.verify == u->verify &&
           t->conf.forwarded == u->forwarded &&
           t->conf.ntrusted_proxies == u->ntrusted_proxies &&
           memcmp(t->conf.trusted_proxies, u->trusted_proxies, sizeof u->trusted_proxies) == 0 &&
           t->conf.queue_size == u->queue_size;
}

struct upstream *upstream_ref(struct upstream *t)
{
    if (t) atomic_fetch_add(&t->refs, 1);
    return t;
}

void upstream_unref(struct upstream *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1) return;
    if (t->client_ctx) tls_ctx_unref(t->client_ctx);
    free(t->conf.url);
    free(t->conf.ca_file);
    free(t->host);
    free(t->host_header);
    free(t->prefix);
    free(t);
}

int upstream_new(const struct conf_upstream *u, struct upstream **out, char *err, size_t errlen)
{
    struct upstream *t = calloc(1, sizeof *t);
    if (!t) return -1;
    atomic_init(&t->refs, 1);
    t->conf = *u;
    t->conf.url = strdup(u->url);
    t->conf.ca_file = u->ca_file ? strdup(u->ca_file) : NULL;
    const char *p = u->url;
    t->tls = strncasecmp(p, "https://", 8) == 0;
    p += t->tls ? 8 : 7;
    const char *hs, *he;
    if (*p == '[') {
        hs = p + 1;
        he = strchr(hs, ']');
        p = he + 1;
    } else {
        hs = p;
        he = p + strcspn(p, ":/");
        p = he;
    }
    t->host = strndup(hs, (size_t)(he - hs));
    t->port = t->tls ? 443 : 80;
    int explicit_port = 0;
    if (*p == ':') {
        t->port = (unsigned)strtoul(p + 1, (char **)&p, 10);
        explicit_port = 1;
    }
    /* the path prefix, without a trailing slash */
    size_t pl = strlen(p);
    while (pl > 0 && p[pl - 1] == '/') pl--;
    t->prefix = strndup(p, pl);
    char hh[300];
    const char *br = strchr(t->host, ':') ? "[" : "";
    if (explicit_port)
        snprintf(hh, sizeof hh, "%s%s%s:%u", br, t->host, *br ? "]" : "", t->port);
    else
        snprintf(hh, sizeof hh, "%s%s%s", br, t->host, *br ? "]" : "");
    t->host_header = strdup(hh);
    if (!t->conf.url || !t->host || !t->prefix || !t->host_header) {
        upstream_unref(t);
        err_set(err, errlen, "out of memory");
        return -1;
    }
    struct in6_addr a6;
    t->host_is_ip = inet_pton(AF_INET, t->host, &a6) == 1 || inet_pton(AF_INET6, t->host, &a6) == 1;

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    struct addrinfo *ai = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", t->port);
    int rc = getaddrinfo(t->host, ps, &hints, &ai);
    if (rc != 0 || !ai) {
        err_set(err, errlen, "upstream url %s: cannot resolve %s: %s", u->url, t->host,
                 gai_strerror(rc));
        upstream_unref(t);
        return -1;
    }
    memcpy(&t->addr, ai->ai_addr, ai->ai_addrlen);
    t->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    if (t->tls) {
        char why[400];
        t->client_ctx = tls_client_ctx_new(u->ca_file, u->verify, why, sizeof why);
        if (!t->client_ctx) {
            err_set(err, errlen, "upstream url %s: %s", u->url, why);
            upstream_unref(t);
            return -1;
        }
    }
    *out = t;
    return 0;
}
