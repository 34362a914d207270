/* tls_served.c - the served set: one TLS context per certificate (or RSA + ECDSA pair),
 * a name index, and the ClientHello callback that picks the context of a handshake
 * (see tls.h, "the served set").
 *
 * Lifetimes: the front context (the default entry's, the one connections are created
 * with) owns the set through its ex_data; the set owns a reference to every other
 * context. A connection holds its front context from SSL_new to SSL_free (as OpenSSL's
 * session context, even after SSL_set_SSL_CTX), so the set outlives every handshake
 * that can call into it, and a published switch never touches it. */
#include "tls.h"

#include "err.h"
#include "log.h"
#include "p12.h"
#include "sni.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

struct tls_served {
    SSL_CTX **ctx;   /* [0]: the front context (borrowed: it owns this set); others owned */
    size_t n;
    struct sni_index *ix; /* name -> index into ctx */
};

static int served_idx = -1;
static pthread_once_t served_once = PTHREAD_ONCE_INIT;
static tls_hello_hook_fn hello_hook;
static void *hello_hook_arg;

static void served_free(struct tls_served *sv)
{
    if (!sv) return;
    for (size_t i = 1; i < sv->n; i++)
        SSL_CTX_free(sv->ctx[i]);
    free(sv->ctx);
    sni_index_free(sv->ix);
    free(sv);
}

static void served_exfree(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    served_free(ptr);
}

static void served_init(void)
{
    served_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, served_exfree);
}

void tls_set_hello_hook(tls_hello_hook_fn fn, void *arg)
{
    hello_hook = fn;
    hello_hook_arg = arg;
}

/* The ClientHello callback of every context of a set: arg is the set. Runs before
 * OpenSSL looks at sessions or certificates, so both come from the chosen context (its
 * session id context included: a session made under another entry is not resumed). */
static int hello_cb(SSL *ssl, int *al, void *arg)
{
    const struct tls_served *sv = arg;
    const unsigned char *ext;
    size_t len;
    char name[SNI_NAME_MAX + 1];
    int nlen = -1;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len))
        nlen = sni_from_hello_ext(ext, len, name);
    SSL_CTX *want = NULL;
    if (hello_hook) {
        const unsigned char *alpn = NULL;
        size_t alen = 0;
        if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
                                      &alpn, &alen) &&
            alen >= 2 && (size_t)(alpn[0] << 8 | alpn[1]) == alen - 2) {
            alpn += 2;
            alen -= 2;
        } else {
            alpn = NULL;
            alen = 0;
        }
        want = hello_hook(hello_hook_arg, nlen > 0 ? name : "", alpn, alen);
        if (want) {
            SSL_CTX *set = SSL_set_SSL_CTX(ssl, want);
            SSL_CTX_free(want); /* the connection holds its own reference now */
            if (set != want) goto fail;
            return SSL_CLIENT_HELLO_SUCCESS;
        }
    }
    int slot = nlen > 0 && sv->ix ? sni_index_lookup(sv->ix, name, (size_t)nlen) : -1;
    want = sv->ctx[slot > 0 ? (size_t)slot : 0];
    if (SSL_get_SSL_CTX(ssl) != want && SSL_set_SSL_CTX(ssl, want) != want) goto fail;
    return SSL_CLIENT_HELLO_SUCCESS;
fail:
    *al = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
}

/* The key slot OpenSSL keeps a certificate in: one per type in a context. */
static int key_slot(const struct p12_entry *e)
{
    return EVP_PKEY_get_base_id(p12_entry_key(e));
}

/* "a.example.com,*.example.com" of an entry: names sorted, so that equal sets compare
 * equal. NULL with an empty string when the entry has no name. */
static char *names_key(const struct p12_entry *e, int *count)
{
    char **names = NULL;
    int n = sni_cert_names(p12_entry_cert(e), &names);
    *count = n;
    if (n < 0) return NULL;
    for (int i = 1; i < n; i++) /* insertion sort: a handful of names */
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    size_t total = 1;
    for (int i = 0; i < n; i++)
        total += strlen(names[i]) + 1;
    char *key = malloc(total);
    if (key) {
        key[0] = '\0';
        for (int i = 0; i < n; i++) {
            if (i) strcat(key, ",");
            strcat(key, names[i]);
        }
    }
    sni_names_free(names);
    return key;
}

struct group {
    SSL_CTX *ctx;
    char *key;                     /* names_key of its members */
    const struct p12_entry *m[4];  /* members, one per key type; m[0] is the first */
    int slots[4];
    size_t nm;
};

/* Adds member e to g's context (a second key type beside the first). */
static int group_add(struct group *g, const struct p12_entry *e, char *why, size_t len)
{
    STACK_OF(X509) *chain = p12_entry_chain(e);
    if (!SSL_CTX_use_certificate(g->ctx, p12_entry_cert(e)) ||
        !SSL_CTX_use_PrivateKey(g->ctx, p12_entry_key(e)) ||
        !SSL_CTX_check_private_key(g->ctx) ||
        (chain && sk_X509_num(chain) > 0 && !SSL_CTX_set1_chain(g->ctx, chain))) {
        tls_last_error(why, len);
        return -1;
    }
    g->m[g->nm] = e;
    g->slots[g->nm++] = key_slot(e);
    return 0;
}

/* The session id context of a group: the SHA-256 of its leaf (one member, as a lone
 * context has it) or of its members' leaf hashes (a pair), and the first member's
 * certificate made current again (what SSL_CTX_get0_certificate shows). */
static int group_finish(struct group *g)
{
    if (g->nm < 2) return 0;
    unsigned char all[4 * EVP_MAX_MD_SIZE], md[EVP_MAX_MD_SIZE];
    unsigned int off = 0, mdlen = 0;
    for (size_t i = 0; i < g->nm; i++) {
        unsigned int l = 0;
        if (!X509_digest(p12_entry_cert(g->m[i]), EVP_sha256(), all + off, &l)) return -1;
        off += l;
    }
    if (!EVP_Digest(all, off, md, &mdlen, EVP_sha256(), NULL)) return -1;
    if (mdlen > SSL_MAX_SID_CTX_LENGTH) mdlen = SSL_MAX_SID_CTX_LENGTH;
    if (!SSL_CTX_set_session_id_context(g->ctx, md, mdlen)) return -1;
    return SSL_CTX_select_current_cert(g->ctx, p12_entry_cert(g->m[0])) ? 0 : -1;
}

static void note_f(tls_note_fn note, void *arg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note_f(tls_note_fn note, void *arg, const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (note)
        note(arg, buf);
    else
        log_warn("%s", buf);
}

SSL_CTX *tls_served_new(const struct tls_server_opts *opts, const struct p12_entry *const *entries,
                        size_t n, tls_note_fn note, void *note_arg, char *err, size_t errlen)
{
    pthread_once(&served_once, served_init);
    struct group *g = calloc(n ? n : 1, sizeof *g);
    struct tls_served *sv = calloc(1, sizeof *sv);
    size_t ng = 0;
    char why[400];
    SSL_CTX *front = NULL;
    if (!g || !sv || served_idx < 0 || n == 0) {
        err_set(err, errlen, n == 0 ? "no certificate to serve" : "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const struct p12_entry *e = entries[i];
        const char *alias = p12_entry_alias(e);
        int count = 0;
        char *key = names_key(e, &count);
        if (!key) {
            err_set(err, errlen, "out of memory");
            goto fail;
        }
        if (i > 0 && count == 0) {
            note_f(note, note_arg, "alias '%s' is not served: its certificate names no host "
                   "(no DNS subjectAltName and no host name as CN)", alias);
            free(key);
            continue;
        }
        if (i > 0 && X509_cmp_current_time(X509_get0_notAfter(p12_entry_cert(e))) <= 0) {
            note_f(note, note_arg, "alias '%s' is not served: its certificate has expired", alias);
            free(key);
            continue;
        }
        /* a second key type for the same names joins that group's context; a second
         * certificate of the same type would never be chosen */
        struct group *same = NULL;
        for (size_t k = 0; k < ng && !same; k++)
            if (strcmp(g[k].key, key) == 0) same = &g[k];
        int taken = same && same->nm == 4;
        for (size_t m = 0; same && m < same->nm; m++)
            if (same->slots[m] == key_slot(e)) taken = 1;
        if (taken) {
            note_f(note, note_arg, "alias '%s' is not served: alias '%s' answers for the same "
                   "names with the same key type", alias, p12_entry_alias(same->m[0]));
            free(key);
            continue;
        }
        /* each certificate is built and self-tested on its own first */
        SSL_CTX *one = tls_server_ctx_new(opts, e, why, sizeof why);
        if (!one) {
            free(key);
            if (i == 0) {
                err_set(err, errlen, "%s", why);
                goto fail;
            }
            note_f(note, note_arg, "alias '%s' is not served: %s", alias, why);
            continue;
        }
        if (same) {
            SSL_CTX_free(one);
            free(key);
            if (group_add(same, e, why, sizeof why) != 0) {
                /* OpenSSL may have half-set it: rebuild the group from its members */
                note_f(note, note_arg, "alias '%s' is not served: %s", alias, why);
                SSL_CTX *fresh = tls_server_ctx_new(opts, same->m[0], why, sizeof why);
                if (!fresh) {
                    err_set(err, errlen, "%s", why);
                    goto fail;
                }
                size_t nm = same->nm;
                SSL_CTX_free(same->ctx);
                same->ctx = fresh;
                same->nm = 1;
                for (size_t m = 1; m < nm; m++)
                    if (group_add(same, same->m[m], why, sizeof why) != 0) {
                        err_set(err, errlen, "%s", why);
                        goto fail;
                    }
            }
            continue;
        }
        g[ng] = (struct group){.ctx = one, .key = key, .m = {e}, .slots = {key_slot(e)}, .nm = 1};
        ng++;
    }
    sv->ix = sni_index_new();
    sv->ctx = calloc(ng ? ng : 1, sizeof *sv->ctx);
    if (!sv->ix || !sv->ctx) {
        err_set(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t k = 0; k < ng; k++) {
        if (group_finish(&g[k]) != 0) {
            err_set(err, errlen, "cannot fingerprint the certificates of alias '%s'",
                    p12_entry_alias(g[k].m[0]));
            goto fail;
        }
        char **names = NULL;
        if (sni_cert_names(p12_entry_cert(g[k].m[0]), &names) < 0) {
            err_set(err, errlen, "out of memory");
            goto fail;
        }
        for (char **p = names; *p; p++)
            if (sni_index_add(sv->ix, *p, strlen(*p), (unsigned)k) < 0) {
                sni_names_free(names);
                err_set(err, errlen, "out of memory");
                goto fail;
            }
        sni_names_free(names);
    }
    sni_index_seal(sv->ix);
    front = g[0].ctx;
    for (size_t k = 0; k < ng; k++) {
        sv->ctx[k] = g[k].ctx;
        g[k].ctx = NULL;
        if (ng > 1 || hello_hook) SSL_CTX_set_client_hello_cb(sv->ctx[k], hello_cb, sv);
    }
    sv->n = ng;
    if (!SSL_CTX_set_ex_data(front, served_idx, sv)) {
        served_free(sv); /* the others; front is not owned by the set */
        SSL_CTX_free(front);
        front = NULL;
        sv = NULL;
        err_set(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t k = 0; k < ng; k++)
        free(g[k].key);
    free(g);
    return front;
fail:
    for (size_t k = 0; k < ng; k++) {
        SSL_CTX_free(g[k].ctx);
        free(g[k].key);
    }
    free(g);
    if (sv) {
        for (size_t k = 0; k < sv->n; k++)
            sv->ctx[k] = NULL;
        sv->n = 0;
        served_free(sv);
    }
    return NULL;
}

static const struct tls_served *served_of(SSL_CTX *front)
{
    return served_idx >= 0 ? SSL_CTX_get_ex_data(front, served_idx) : NULL;
}

size_t tls_served_count(SSL_CTX *front)
{
    const struct tls_served *sv = served_of(front);
    return sv ? sv->n : 1;
}

SSL_CTX *tls_served_pick(SSL_CTX *front, const char *name)
{
    const struct tls_served *sv = served_of(front);
    if (!sv) return front;
    int slot = name ? sni_index_lookup(sv->ix, name, strlen(name)) : -1;
    return sv->ctx[slot > 0 ? (size_t)slot : 0];
}
