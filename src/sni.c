/* sni.c - the server-name index and the names of certificates (see sni.h). */
#include "sni.h"

#include <openssl/asn1.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

struct sni_name {
    char *name; /* lower case; for a wildcard, the suffix after "*." */
    size_t len;
    unsigned slot;
    unsigned order; /* when it was added: the first one added wins */
};

struct sni_list {
    struct sni_name *v;
    size_t n, cap;
};

struct sni_index {
    struct sni_list exact, wild;
    unsigned added;
    int sealed;
};

int sni_normalize(const char *in, size_t len, char *out)
{
    if (len > 0 && in[len - 1] == '.') len--; /* "example.com." is example.com */
    if (len == 0 || len > SNI_NAME_MAX) return -1;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
        if (c == '.') {
            if (label == 0) return -1;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (++label > 63) return -1;
        } else {
            return -1;
        }
        out[i] = (char)c;
    }
    if (label == 0) return -1;
    out[len] = '\0';
    return (int)len;
}

struct sni_index *sni_index_new(void)
{
    return calloc(1, sizeof(struct sni_index));
}

static void list_free(struct sni_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
}

void sni_index_free(struct sni_index *ix)
{
    if (!ix) return;
    list_free(&ix->exact);
    list_free(&ix->wild);
    free(ix);
}

size_t sni_index_size(const struct sni_index *ix)
{
    return ix ? ix->exact.n + ix->wild.n : 0;
}

int sni_index_add(struct sni_index *ix, const char *name, size_t len, unsigned slot)
{
    char buf[SNI_NAME_MAX + 1];
    int wild = len > 2 && name[0] == '*' && name[1] == '.';
    int n = wild ? sni_normalize(name + 2, len - 2, buf) : sni_normalize(name, len, buf);
    if (n < 0 || ix->sealed) return 1;
    struct sni_list *l = wild ? &ix->wild : &ix->exact;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        struct sni_name *v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    char *copy = malloc((size_t)n + 1);
    if (!copy) return -1;
    memcpy(copy, buf, (size_t)n + 1);
    l->v[l->n++] = (struct sni_name){copy, (size_t)n, slot, ix->added++};
    return 0;
}

static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

static int name_cmp(const void *pa, const void *pb)
{
    const struct sni_name *a = pa, *b = pb;
    int c = key_cmp(a->name, a->len, b->name, b->len);
    if (c) return c;
    return a->order < b->order ? -1 : a->order > b->order;
}

static void list_seal(struct sni_list *l)
{
    if (l->n > 1) qsort(l->v, l->n, sizeof *l->v, name_cmp);
    size_t w = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (w > 0 && key_cmp(l->v[w - 1].name, l->v[w - 1].len, l->v[i].name, l->v[i].len) == 0) {
            free(l->v[i].name); /* a later one of the same name */
            continue;
        }
        l->v[w++] = l->v[i];
    }
    l->n = w;
}

int sni_index_seal(struct sni_index *ix)
{
    list_seal(&ix->exact);
    list_seal(&ix->wild);
    ix->sealed = 1;
    return 0;
}

static int list_find(const struct sni_list *l, const char *name, size_t len)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(name, len, l->v[mid].name, l->v[mid].len);
        if (c == 0) return (int)l->v[mid].slot;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

int sni_index_lookup(const struct sni_index *ix, const char *name, size_t len)
{
    char buf[SNI_NAME_MAX + 1];
    int n = ix && ix->sealed ? sni_normalize(name, len, buf) : -1;
    if (n < 0) return -1;
    int slot = list_find(&ix->exact, buf, (size_t)n);
    if (slot >= 0 || ix->wild.n == 0) return slot;
    const char *dot = memchr(buf, '.', (size_t)n);
    if (!dot) return -1; /* "*.x" never matches "x" nor a one-label name */
    return list_find(&ix->wild, dot + 1, (size_t)n - (size_t)(dot + 1 - buf));
}

int sni_from_hello_ext(const unsigned char *ext, size_t len, char *out)
{
    /* ServerNameList: uint16 length, then { uint8 type; opaque name<1..2^16-1> } */
    if (!ext || len < 2) return -1;
    size_t list = (size_t)ext[0] << 8 | ext[1];
    if (list != len - 2) return -1;
    const unsigned char *p = ext + 2, *end = ext + len;
    while (end - p >= 3) {
        unsigned type = p[0];
        size_t n = (size_t)p[1] << 8 | p[2];
        p += 3;
        if ((size_t)(end - p) < n) return -1;
        if (type == 0) /* host_name; RFC 6066: only one of each type */
            return memchr(p, 0, n) ? -1 : sni_normalize((const char *)p, n, out);
        p += n;
    }
    return -1;
}

/* ----- the names of a certificate ----- */

struct names {
    char **v;
    int n, cap, oom;
};

/* Appends name (len bytes) when it is a host name or a one-label wildcard and new. */
static void names_add(struct names *ns, const char *name, size_t len)
{
    char buf[SNI_NAME_MAX + 3];
    int wild = len > 2 && name[0] == '*' && name[1] == '.';
    int n = sni_normalize(name + (wild ? 2 : 0), len - (wild ? 2 : 0), buf + 2);
    if (n < 0 || ns->oom) return;
    const char *s = buf + 2;
    if (wild) {
        buf[0] = '*';
        buf[1] = '.';
        s = buf;
        n += 2;
    }
    for (int i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i], s) == 0) return;
    if (ns->n + 1 >= ns->cap) {
        int cap = ns->cap ? ns->cap * 2 : 8;
        char **v = realloc(ns->v, (size_t)cap * sizeof *v);
        if (!v) {
            ns->oom = 1;
            return;
        }
        ns->v = v;
        ns->cap = cap;
    }
    ns->v[ns->n] = strdup(s);
    if (!ns->v[ns->n]) {
        ns->oom = 1;
        return;
    }
    ns->v[++ns->n] = NULL;
}

int sni_cert_names(X509 *cert, char ***out)
{
    struct names ns = {0};
    GENERAL_NAMES *gens = cert ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) : NULL;
    int dns = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        int type;
        const ASN1_STRING *s = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, i), &type);
        if (type != GEN_DNS) continue;
        dns = 1;
        names_add(&ns, (const char *)ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
    }
    GENERAL_NAMES_free(gens);
    if (!dns && cert) { /* RFC 6125: the CN only when there is no DNS name */
        const X509_NAME *subj = X509_get_subject_name(cert);
        int last = -1;
        for (int i = -1; (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;)
            last = i;
        X509_NAME_ENTRY *ne = last >= 0 ? X509_NAME_get_entry(subj, last) : NULL;
        unsigned char *utf8 = NULL;
        int n = ne ? ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(ne)) : -1;
        if (n > 0) names_add(&ns, (const char *)utf8, (size_t)n);
        OPENSSL_free(utf8);
    }
    if (!ns.oom && !ns.v) ns.v = calloc(1, sizeof *ns.v);
    if (ns.oom || !ns.v) {
        sni_names_free(ns.v);
        *out = NULL;
        return -1;
    }
    *out = ns.v;
    return ns.n;
}

void sni_names_free(char **names)
{
    for (char **p = names; p && *p; p++)
        free(*p);
    free(names);
}
