/* upstream.h - the upstream a gateway forwards to, as configured in [upstream].
 *
 * Built (parsed, resolved, client TLS context made) once per configuration by gw.c,
 * then shared, reference-counted, by every snapshot that has the same [upstream]
 * settings, so a certificate switch does not empty the connection pools. Immutable
 * after upstream_new; safe to read from every thread. */
#ifndef CERTGATE_UPSTREAM_H
#define CERTGATE_UPSTREAM_H

#include <stddef.h>
#include <sys/socket.h>

#include "conf.h"

struct ssl_ctx_st;

struct upstream {
    _Atomic unsigned refs;
    struct conf_upstream conf;  /* copy of the settings (strings owned) */
    int tls;                    /* https:// */
    char *host;                 /* name or address, without IPv6 brackets */
    int host_is_ip;
    unsigned port;
    char *host_header;          /* value for the Host header: host[:port] */
    char *prefix;               /* path prefix without a trailing '/', "" when none */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct ssl_ctx_st *client_ctx; /* https: verifying client context */
};

/* Parses u->url, resolves the host (once, now) and, for https, builds the client TLS
 * context (CA file or the system store; verify on unless u->verify is 0). Returns 0, or
 * -1 with a sentence in err (e.g. "upstream url: cannot resolve backend.example: Name or
 * service not known"). */
int upstream_new(const struct conf_upstream *u, struct upstream **out, char *err, size_t errlen);

/* 1 when t was built from settings equal to u. */
int upstream_same(const struct upstream *t, const struct conf_upstream *u);

struct upstream *upstream_ref(struct upstream *t);
void upstream_unref(struct upstream *t);

#endif
