/* conf.h - the typed settings certgate reads from custom.properties.
 *
 * The file format itself (sections, keys, escapes, byte-preserving rewrites) is
 * propfile.h; this module gives the values their meaning: defaults, ranges, and a
 * sentence naming the file, line and key for every value that is wrong.
 *
 * Ownership: a struct conf_settings owns its strings; free them with conf_settings_free.
 * Thread-safety: no shared state; a conf_settings belongs to whoever filled it. */
#ifndef CERTGATE_CONF_H
#define CERTGATE_CONF_H

#include <stddef.h>

/* the sections certgate reads */
#define CONF_SECTION_WEBSERVER "com.compuware.apm.webserver"
#define CONF_SECTION_CERTGATE "certgate"
#define CONF_SECTION_UPSTREAM "upstream"
#define CONF_SECTION_ACME "acme"
#define CONF_SECTION_FLEET "fleet"

#define TLS_V12 1u
#define TLS_V13 2u

#define CONF_MAX_CIDRS 32

/* An address range: family AF_INET or AF_INET6, the address (network byte order, 4 or 16
 * bytes used, host bits zero) and the prefix length. */
struct conf_cidr {
    unsigned char family;
    unsigned char bits;
    unsigned char addr[16];
};

struct conf_upstream {
    char *url;                  /* NULL: no upstream configured */
    unsigned connect_timeout_s; /* default 5 */
    unsigned read_timeout_s;    /* default 60 */
    unsigned max_connections;   /* connections per thread (in flight + idle), default 32 */
    char *ca_file;              /* NULL: system store */
    int verify;                 /* default 1 */
    /* trusted-proxies: peers whose X-Forwarded-For / Forwarded are appended to (the others'
     * are dropped); empty by default */
    struct conf_cidr trusted_proxies[CONF_MAX_CIDRS];
    unsigned ntrusted_proxies;
    int forwarded;              /* forwarded = on|off: also send RFC 7239 Forwarded; off */
    unsigned queue_size;        /* requests waiting for a connection per thread, default 256 */
};

/* [acme]: certificates obtained with ACME (RFC 8555); off while directory is NULL. */
enum conf_acme_challenge { CONF_ACME_HTTP01 = 0, CONF_ACME_TLSALPN01 = 1 };
enum conf_acme_key { CONF_ACME_ECDSA_P256 = 0, CONF_ACME_RSA_2048 = 1 };
struct conf_acme {
    char *directory;          /* the CA's directory URL (https://); NULL: ACME is off */
    char *email;              /* contact, or NULL */
    char **domains;           /* NULL-terminated, lower case, never NULL; one certificate */
    unsigned ndomains;
    int challenge;            /* enum conf_acme_challenge, default http-01 */
    int key_type;             /* enum conf_acme_key, default ecdsa-p256 */
    char *ca_file;            /* PEM bundle that verifies the CA's server; NULL: system */
    char *eab_kid;            /* External Account Binding key id, or NULL */
    char *eab_hmac_key;       /* its base64url HMAC key (a secret), or NULL */
    unsigned renew_before_s;  /* renew-before; 0: a third of the lifetime */
};

/* [fleet]: the shared certificate state in etcd. Off (etcd == NULL) unless the section sets
 * `etcd`; then the other keys are checked too. */
struct conf_fleet {
    char *etcd;         /* etcd: comma-separated client URLs (http:// or https://); NULL: off */
    char *prefix;       /* prefix: key prefix, default "/certgate" (starts with '/', no '/' at
                         * the end) */
    char *ca_file;      /* ca-file: PEM bundle that verifies etcd's certificate; NULL: system */
    char *cert_file;    /* cert-file: client certificate for etcd (PEM); NULL: none */
    char *key_file;     /* key-file: the client certificate's private key (PEM) */
    char *fleet_key_file; /* fleet-key-file: the fleet key (32 bytes that seal secrets in
                           * etcd); NULL: DIR/config/fleet.key (the caller resolves it) */
    char *member_id;    /* member-id: default "<host name>:<port-ssl>" */
    unsigned timeout_ms; /* timeout (s): one etcd request, default 5 s */
    char *environment;  /* environment: whose state this member serves (<prefix>/<env>/...);
                         * NULL: the only environment of the fleet */
    unsigned acme_lock_ttl_s; /* acme-lock-ttl (s): the lease of the fleet's ACME lock,
                               * default 30 (5 to 600) */
};

struct conf_settings {
    /* [com.compuware.apm.webserver] */
    unsigned port_ssl;         /* default 9999 */
    unsigned port_http;        /* 0: no plain HTTP listener (default) */
    unsigned tls_versions;     /* TLS_V12 | TLS_V13 (default both) */
    char **excluded_ciphers;   /* NULL-terminated list of substrings; never NULL */
    char *certificate_file;    /* unescaped; NULL: serve the default certificate */
    char *certificate_password;      /* plain password if the key is present, else NULL */
    char *certificate_password_encr; /* obfuscated password, else NULL */
    char *certificate_alias;   /* NULL: first key entry */
    char **included_ciphers;   /* NULL-terminated list of substrings, empty: all; never NULL */
    /* [certgate] (certgate's own keys) */
    size_t max_upload_bytes;   /* max-upload-size, default 1 MiB */
    unsigned keepalive_timeout_ms; /* keepalive-timeout (s), default 75 s */
    unsigned header_timeout_ms;    /* header-timeout (s), default 20 s */
    unsigned body_timeout_ms;      /* body-timeout (s), default 60 s */
    int session_cache;         /* ssl-session-cache = on|off, default on */
    int session_tickets;       /* ssl-session-tickets = on|off, default on */
    int session_reused_header; /* session-reused-header = on|off, default off: local answers
                                * carry X-Session-Reused: 0|1 (benchmarks check it) */
    unsigned api_queue;        /* api-queue: certificate API jobs queued or running at
                                * once, default 8; beyond, 503 with Retry-After */
    unsigned auth_failures;    /* auth-failures-per-minute: failed authentications allowed
                                * per client address and window, default 20; 0: no limit */
    unsigned auth_window_ms;   /* auth-failure-window (s), default 60 s (short for tests) */
    unsigned max_connections;  /* max-connections: client connections of the gateway; 0
                                * (default): sized from RLIMIT_NOFILE (server.c) */
    unsigned min_rate;         /* min-rate: bytes/s of request bodies and of answers to slow
                                * readers after a grace of body-timeout; 0: off; default 1024 */
    char metrics_host[64];     /* metrics-listen: the Prometheus listener's address */
    unsigned metrics_port;     /* its port; 0 (default): off */
    size_t audit_max_bytes;    /* audit-max-size: DIR/log/audit.jsonl rotates before it
                                * grows past this, default 10 MiB */
    unsigned audit_files;      /* audit-files: rotated files kept, default 5 */
    /* [upstream] */
    struct conf_upstream upstream;
    /* [acme] */
    struct conf_acme acme;
    /* [fleet] */
    struct conf_fleet fleet;
};

struct propfile;

/* Fills *out from doc (read, not kept), with defaults for absent keys. Every value is
 * checked; the bad one on the first line fails with "<path>:<line>: <key>: <what is wrong and what is
 * allowed>", e.g. "custom.properties:4: ssl-protocols: 'TLSv1.1' is not supported; use
 * TLSv1.2, TLSv1.3 or both, comma-separated". On failure *out holds nothing to free. */
int conf_settings_load(const struct propfile *doc, const char *path, struct conf_settings *out,
                       char *err, size_t errlen);

/* Like conf_settings_load, but every key is checked: err gets every wrong value, one
 * sentence per line ('\n'-separated, sorted by line, truncated to errlen), *nerrors their
 * number. *out is filled with the valid values and defaults even when there are errors
 * (free it with conf_settings_free either way). Returns 0, or -1 when *nerrors > 0.
 * check-config uses it to list every error at once. */
int conf_settings_check(const struct propfile *doc, const char *path, struct conf_settings *out,
                        char *err, size_t errlen, int *nerrors);

struct sockaddr;
/* 1 when sa (AF_INET or AF_INET6; an IPv4-mapped IPv6 address counts as IPv4) is inside
 * one of the n ranges of list, else 0. Thread-safe. */
int conf_cidr_match(const struct conf_cidr *list, unsigned n, const struct sockaddr *sa);

/* Parses "192.0.2.0/24", "2001:db8::/32" or a single address (a full-length prefix) into
 * *out: 0, or -1 when s is not one. Host bits after the prefix are cleared. */
int conf_cidr_parse(const char *s, struct conf_cidr *out);

/* Frees the strings of s (passwords are wiped first) and zeroes it. */
void conf_settings_free(struct conf_settings *s);

#endif
