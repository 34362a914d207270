/* p12.c - PKCS#12 loading with the alias and pairing rules of Java's PKCS12KeyStore.
 *
 * The walk mirrors OpenJDK's sun.security.pkcs12.PKCS12KeyStore.engineLoad() and
 * loadSafeContents(): one alias counter for entries without friendlyName (key entries
 * and trusted-certificate entries alike), entries kept in a LinkedHashMap keyed by the
 * lower-cased alias (a repeated alias replaces the earlier entry in its place), the
 * "01" localKeyID workaround for a single key without one, and key/certificate pairing
 * by localKeyID then alias. certgate adds a public-key fallback for a key that Java
 * would leave without a certificate. */
#include "p12.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define P12_MAX_FILE (16u * 1024 * 1024)
/* Java's trustedKeyUsage attribute, written by keytool -importcert. */
#define ORACLE_TRUSTED_KEY_USAGE "2.16.840.1.113894.746875.1.1"

enum entry_kind { KIND_KEY, KIND_TRUSTED, KIND_SECRET };

struct p12_entry {
    char *alias; /* lower case: the map key; Java also matches certificates to keys by it */
    enum entry_kind kind;
    EVP_PKEY *key;
    X509 *cert;
    STACK_OF(X509) * chain;
    /* parse-time only */
    unsigned char *keyid;
    size_t keyid_len;
};

struct p12_file {
    char *label;
    struct p12_entry *v;
    size_t n;
};

/* ----- providers ----- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static OSSL_PROVIDER *prov_legacy; /* NULL: not available */

static void init_providers(void)
{
    /* Loading any provider explicitly stops OpenSSL from loading "default" on its
     * own, so both are loaded. */
    OSSL_PROVIDER_load(NULL, "default");
    prov_legacy = OSSL_PROVIDER_load(NULL, "legacy");
    ERR_clear_error();
}

int p12_init(char *err, size_t errlen)
{
    pthread_once(&init_once, init_providers);
    if (!prov_legacy) {
        err_set(err, errlen,
                "the OpenSSL legacy provider could not be loaded: PKCS#12 files encrypted "
                "with RC2 or 3DES will not open");
        return -1;
    }
    return 0;
}

/* ----- small helpers ----- */

static void entry_clear(struct p12_entry *e)
{
    free(e->alias);
    free(e->keyid);
    EVP_PKEY_free(e->key);
    X509_free(e->cert);
    sk_X509_pop_free(e->chain, X509_free);
    memset(e, 0, sizeof(*e));
}

void p12_free(struct p12_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n; i++)
        entry_clear(&f->v[i]);
    free(f->v);
    free(f->label);
    free(f);
}

/* ----- the walk ----- */

/* A certificate bag without Java's trust attribute (Java's certEntries). */
struct cert_item {
    X509 *cert; /* borrowed from all_certs */
    unsigned char *keyid;
    size_t keyid_len;
    char *alias; /* friendlyName lower-cased as Java does, may be NULL */
};

struct walk {
    struct p12_entry *v; /* the LinkedHashMap, in insertion order */
    size_t n, cap;
    struct cert_item *ci;
    size_t nci, capci;
    STACK_OF(X509) * all_certs;
    int private_key_count;
    int counter;
    /* the cost budget: what the visible structure costs, plus each bag found inside a
     * decrypted container, added before its own derivation */
    struct p12_cost cost;
    const char *label;
    char why[512];
    enum p12_status why_st;
};

enum walk_rc { WALK_OK = 0, WALK_DECRYPT, WALK_UNSUPPORTED, WALK_FORMAT, WALK_COST, WALK_NOMEM };

static void walk_free(struct walk *w)
{
    for (size_t i = 0; i < w->n; i++)
        entry_clear(&w->v[i]);
    free(w->v);
    for (size_t i = 0; i < w->nci; i++) {
        free(w->ci[i].keyid);
        free(w->ci[i].alias);
    }
    free(w->ci);
    sk_X509_pop_free(w->all_certs, X509_free);
    w->v = NULL;
    w->ci = NULL;
    w->all_certs = NULL;
    w->n = w->cap = w->nci = w->capci = 0;
    w->private_key_count = w->counter = 0;
}

/* An entry's alias: its friendlyName, or else the next counter value; lower-cased. */
static char *entry_alias(struct walk *w, const char *fname)
{
    char buf[24];
    if (!fname) {
        snprintf(buf, sizeof(buf), "%d", ++w->counter);
        fname = buf;
    }
    return p12_java_lower(fname);
}

/* entries.put(alias.toLowerCase(), e): takes e's contents. */
static int walk_put(struct walk *w, struct p12_entry *e)
{
    for (size_t i = 0; i < w->n; i++) {
        if (strcmp(w->v[i].alias, e->alias) == 0) {
            entry_clear(&w->v[i]);
            w->v[i] = *e;
            return 0;
        }
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 8;
        struct p12_entry *v = realloc(w->v, cap * sizeof(*v));
        if (!v) return -1;
        w->v = v;
        w->cap = cap;
    }
    w->v[w->n++] = *e;
    return 0;
}

static int unsupported_error(void)
{
    unsigned long e;
    int found = 0;
    while ((e = ERR_get_error()) != 0) {
        int r = ERR_GET_REASON(e);
        if (r == ERR_R_UNSUPPORTED ||
            (ERR_GET_LIB(e) == ERR_LIB_EVP &&
             (r == EVP_R_UNSUPPORTED_ALGORITHM || r == EVP_R_UNKNOWN_CIPHER ||
              r == EVP_R_UNSUPPORTED_CIPHER || r == EVP_R_UNSUPPORTED_KEY_DERIVATION_FUNCTION ||
              r == EVP_R_UNSUPPORTED_PRF)))
            found = 1;
    }
    return found;
}

static int has_trusted_attr(const PKCS12_SAFEBAG *bag)
{
    const STACK_OF(X509_ATTRIBUTE) *attrs = PKCS12_SAFEBAG_get0_attrs(bag);
    char txt[64];
    for (int i = 0; i < sk_X509_ATTRIBUTE_num(attrs); i++) {
        X509_ATTRIBUTE *a = sk_X509_ATTRIBUTE_value(attrs, i);
        const ASN1_OBJECT *o = X509_ATTRIBUTE_get0_object(a);
        if (o && OBJ_obj2txt(txt, sizeof(txt), o, 1) > 0 &&
            strcmp(txt, ORACLE_TRUSTED_KEY_USAGE) == 0)
            return 1;
    }
    return 0;
}

static int get_keyid(const PKCS12_SAFEBAG *bag, unsigned char **id, size_t *len)
{
    const ASN1_TYPE *t = PKCS12_SAFEBAG_get0_attr(bag, NID_localKeyID);
    *id = NULL;
    *len = 0;
    if (!t || t->type != V_ASN1_OCTET_STRING || !t->value.octet_string) return 0;
    int l = ASN1_STRING_length(t->value.octet_string);
    *id = malloc(l > 0 ? (size_t)l : 1);
    if (!*id) return -1;
    memcpy(*id, ASN1_STRING_get0_data(t->value.octet_string), (size_t)l);
    *len = (size_t)l;
    return 0;
}

static int set_keyid_01(unsigned char **id, size_t *len)
{
    *id = malloc(2);
    if (!*id) return -1;
    memcpy(*id, "01", 2);
    *len = 2;
    return 0;
}

/* One SafeBag, as loadSafeContents() treats it. index = its position in its
 * SafeContents (Java's "i"); counted: its cost is already in w->cost (a bag of a plain
 * SafeContents, seen by p12_cost_pkcs12). */
static enum walk_rc walk_bag(struct walk *w, const PKCS12_SAFEBAG *bag, int index, const char *pass,
                             int passlen, int counted)
{
    int nid = PKCS12_SAFEBAG_get_nid(bag);
    enum walk_rc rc = WALK_OK;
    struct p12_entry e;
    memset(&e, 0, sizeof(e));

    if (nid == NID_pkcs8ShroudedKeyBag || nid == NID_keyBag) {
        /* Java reads only shrouded key bags; certgate also takes a plain keyBag (files
         * made with -keypbe NONE), which Java would ignore. */
        PKCS8_PRIV_KEY_INFO *p8 = NULL;
        if (nid == NID_pkcs8ShroudedKeyBag) {
            const X509_ALGOR *alg = NULL;
            const X509_SIG *sig = PKCS12_SAFEBAG_get0_pkcs8(bag);
            if (!sig) return WALK_FORMAT;
            X509_SIG_get0(sig, &alg, NULL);
            if (!counted) {
                w->why_st = p12_cost_add(&w->cost, alg, w->label, w->why, sizeof(w->why));
                if (w->why_st != P12_OK) return WALK_COST;
            }
            p8 = PKCS12_decrypt_skey(bag, pass, passlen);
            if (!p8) return unsupported_error() ? WALK_UNSUPPORTED : WALK_DECRYPT;
            e.key = EVP_PKCS82PKEY(p8);
            PKCS8_PRIV_KEY_INFO_free(p8);
        } else {
            const PKCS8_PRIV_KEY_INFO *p8c = PKCS12_SAFEBAG_get0_p8inf(bag);
            e.key = p8c ? EVP_PKCS82PKEY(p8c) : NULL;
        }
        if (!e.key) return WALK_FORMAT;
        w->private_key_count++;
        e.kind = KIND_KEY;
        if (get_keyid(bag, &e.keyid, &e.keyid_len) < 0) goto nomem;
        if (!e.keyid) {
            /* Java's workaround for a single key without localKeyID; any later key
             * without one is skipped entirely. */
            if (w->private_key_count != 1) goto skip;
            if (set_keyid_01(&e.keyid, &e.keyid_len) < 0) goto nomem;
        }
    } else if (nid == NID_secretBag) {
        e.kind = KIND_SECRET; /* takes an alias (and a counter value) like Java, then dropped */
    } else if (nid == NID_certBag) {
        if (PKCS12_SAFEBAG_get_bag_nid(bag) != NID_x509Certificate) return WALK_OK;
        X509 *cert = PKCS12_SAFEBAG_get1_cert(bag);
        if (!cert) return WALK_FORMAT;
        if (!sk_X509_push(w->all_certs, cert)) {
            X509_free(cert);
            return WALK_NOMEM;
        }
        unsigned char *keyid;
        size_t keyid_len;
        if (get_keyid(bag, &keyid, &keyid_len) < 0) return WALK_NOMEM;
        if (!keyid && w->private_key_count == 1 && index == 0 &&
            set_keyid_01(&keyid, &keyid_len) < 0)
            return WALK_NOMEM;
        char *fname = PKCS12_get_friendlyname((PKCS12_SAFEBAG *)bag);
        if (!has_trusted_attr(bag)) {
            if (w->nci == w->capci) {
                size_t cap = w->capci ? w->capci * 2 : 8;
                struct cert_item *ci = realloc(w->ci, cap * sizeof(*ci));
                if (!ci) {
                    free(keyid);
                    OPENSSL_free(fname);
                    return WALK_NOMEM;
                }
                w->ci = ci;
                w->capci = cap;
            }
            struct cert_item *it = &w->ci[w->nci++];
            it->cert = cert;
            it->keyid = keyid;
            it->keyid_len = keyid_len;
            it->alias = fname ? p12_java_lower(fname) : NULL;
            int oom = fname && !it->alias;
            OPENSSL_free(fname);
            return oom ? WALK_NOMEM : WALK_OK;
        }
        e.kind = KIND_TRUSTED;
        e.keyid = keyid;
        e.keyid_len = keyid_len;
        X509_up_ref(cert);
        e.cert = cert;
        e.alias = entry_alias(w, fname);
        OPENSSL_free(fname);
        if (!e.alias) goto nomem;
        goto put;
    } else {
        return WALK_OK; /* other bag types (and nested SafeContents) are ignored, as by Java */
    }

    /* key or secret entry: alias = friendlyName or the next counter value */
    {
        char *fname = PKCS12_get_friendlyname((PKCS12_SAFEBAG *)bag);
        e.alias = entry_alias(w, fname);
        OPENSSL_free(fname);
        if (!e.alias) goto nomem;
    }
put:
    if (walk_put(w, &e) < 0) goto nomem;
    return WALK_OK;
skip:
    entry_clear(&e);
    return rc;
nomem:
    entry_clear(&e);
    return WALK_NOMEM;
}

static enum walk_rc walk_file(struct walk *w, PKCS12 *p12, const char *pass)
{
    int passlen = pass ? (int)strlen(pass) : 0;
    enum walk_rc rc = WALK_OK;
    STACK_OF(PKCS7) *asafes = PKCS12_unpack_authsafes(p12);
    if (!asafes) return WALK_FORMAT;
    w->all_certs = sk_X509_new_null();
    if (!w->all_certs) rc = WALK_NOMEM;
    for (int i = 0; rc == WALK_OK && i < sk_PKCS7_num(asafes); i++) {
        PKCS7 *p7 = sk_PKCS7_value(asafes, i);
        STACK_OF(PKCS12_SAFEBAG) *bags = NULL;
        int nid = OBJ_obj2nid(p7->type);
        if (nid == NID_pkcs7_data) {
            bags = PKCS12_unpack_p7data(p7);
            if (!bags) rc = WALK_FORMAT;
        } else if (nid == NID_pkcs7_encrypted) {
            /* its cost was counted (and checked) by p12_cost_pkcs12 */
            if (!p7->d.encrypted || !p7->d.encrypted->enc_data) {
                rc = WALK_FORMAT;
                break;
            }
            bags = PKCS12_unpack_p7encdata(p7, pass, passlen);
            if (!bags) rc = unsupported_error() ? WALK_UNSUPPORTED : WALK_DECRYPT;
        } else {
            rc = WALK_FORMAT; /* public-key protected PKCS#12: Java does not read it either */
        }
        for (int j = 0; rc == WALK_OK && j < sk_PKCS12_SAFEBAG_num(bags); j++)
            rc = walk_bag(w, sk_PKCS12_SAFEBAG_value(bags, j), j, pass, passlen,
                          nid == NID_pkcs7_data);
        sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
    }
    sk_PKCS7_pop_free(asafes, PKCS7_free);
    return rc;
}

/* Both lower-cased already (entry_alias, the certificate list) */
static int alias_eq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* findMatchedCertificate(): localKeyID and alias both match, else the last localKeyID
 * match, else the last alias match. certgate's addition: else a certificate whose public
 * key is the entry's. */
static X509 *match_cert(const struct walk *w, const struct p12_entry *e)
{
    const struct cert_item *id_match = NULL, *alias_match = NULL;
    for (size_t i = 0; i < w->nci; i++) {
        const struct cert_item *ci = &w->ci[i];
        if (ci->keyid && ci->keyid_len == e->keyid_len &&
            memcmp(ci->keyid, e->keyid, e->keyid_len) == 0) {
            id_match = ci;
            if (alias_eq(e->alias, ci->alias)) return ci->cert;
        } else if (alias_eq(e->alias, ci->alias)) {
            alias_match = ci;
        }
    }
    if (id_match) return id_match->cert;
    if (alias_match) return alias_match->cert;
    for (size_t i = 0; i < w->nci; i++) {
        if (X509_check_private_key(w->ci[i].cert, e->key)) return w->ci[i].cert;
    }
    ERR_clear_error();
    return NULL;
}

static int in_chain(X509 *leaf, STACK_OF(X509) * chain, X509 *c)
{
    if (X509_cmp(leaf, c) == 0) return 1;
    for (int i = 0; i < sk_X509_num(chain); i++)
        if (X509_cmp(sk_X509_value(chain, i), c) == 0) return 1;
    return 0;
}

/* The issuer of the leaf, its issuer, ... among the file's certificates; stops at a
 * self-signed certificate, when none is found, or at a loop. */
static STACK_OF(X509) * build_chain(STACK_OF(X509) * all, X509 *leaf)
{
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509 *cur = leaf;
    while (chain && !X509_self_signed(cur, 1)) {
        X509 *issuer = NULL;
        for (int i = 0; i < sk_X509_num(all); i++) {
            X509 *c = sk_X509_value(all, i);
            if (X509_check_issued(c, cur) == X509_V_OK) {
                issuer = c;
                break;
            }
        }
        if (!issuer || in_chain(leaf, chain, issuer)) break;
        if (!sk_X509_push(chain, issuer)) {
            sk_X509_free(chain);
            return NULL;
        }
        X509_up_ref(issuer);
        cur = issuer;
    }
    ERR_clear_error();
    return chain;
}

/* ----- parse ----- */

static enum p12_status finish(struct walk *w, const char *label, struct p12_file **out, char *err,
                              size_t errlen)
{
    size_t nkeys = 0;
    for (size_t i = 0; i < w->n; i++) {
        struct p12_entry *e = &w->v[i];
        if (e->kind == KIND_TRUSTED) {
            e->chain = sk_X509_new_null();
            if (!e->chain) goto nomem;
            continue;
        }
        if (e->kind != KIND_KEY) continue;
        nkeys++;
        X509 *cert = match_cert(w, e);
        if (!cert) {
            err_set(err, errlen, "%s: the private key of alias '%s' has no certificate", label,
                   e->alias);
            return P12_ERR_KEY_MISMATCH;
        }
        if (!X509_check_private_key(cert, e->key)) {
            ERR_clear_error();
            err_set(err, errlen, "%s: the private key of alias '%s' does not match its certificate",
                   label, e->alias);
            return P12_ERR_KEY_MISMATCH;
        }
        X509_up_ref(cert);
        e->cert = cert;
        e->chain = build_chain(w->all_certs, cert);
        if (!e->chain) goto nomem;
    }
    if (nkeys == 0) {
        err_set(err, errlen,
               "%s: no private key in the file; it must hold a private key and its certificate "
               "chain",
               label);
        return P12_ERR_NO_KEY;
    }

    struct p12_file *f = calloc(1, sizeof(*f));
    if (!f) goto nomem;
    f->label = strdup(label);
    f->v = calloc(w->n, sizeof(*f->v));
    if (!f->label || !f->v) {
        p12_free(f);
        goto nomem;
    }
    for (size_t i = 0; i < w->n; i++) {
        struct p12_entry *e = &w->v[i];
        if (e->kind == KIND_SECRET) continue; /* certgate has no use for secret keys */
        free(e->keyid);
        e->keyid = NULL;
        e->keyid_len = 0;
        f->v[f->n++] = *e;
        memset(e, 0, sizeof(*e));
    }
    *out = f;
    return P12_OK;
nomem:
    err_set(err, errlen, "%s: out of memory", label);
    return P12_ERR_INTERNAL;
}

enum p12_status p12_parse(const void *der, size_t len, const char *password, const char *label,
                          struct p12_file **out, char *err, size_t errlen)
{
    char errbuf[1];
    if (!err) {
        err = errbuf;
        errlen = sizeof(errbuf);
    }
    if (errlen) err[0] = '\0';
    if (!label) label = "keystore";
    *out = NULL;
    pthread_once(&init_once, init_providers);

    if (len > 10 && memcmp(der, "-----BEGIN", 10) == 0) {
        err_set(err, errlen, "%s: not a PKCS#12 file (it is PEM text; a binary .p12/.pfx is needed)",
               label);
        return P12_ERR_FORMAT;
    }
    const unsigned char *p = der;
    PKCS12 *p12 = len <= LONG_MAX ? d2i_PKCS12(NULL, &p, (long)len) : NULL;
    if (!p12) {
        ERR_clear_error();
        err_set(err, errlen, "%s: not a PKCS#12 file (cannot decode it as DER PKCS#12)", label);
        return P12_ERR_FORMAT;
    }

    /* An empty password is tried both as "" and as NULL: OpenSSL (and other
     * producers) derive different keys from them. */
    const char *cand[2];
    int ncand = 0;
    if (!password || !*password) {
        cand[ncand++] = "";
        cand[ncand++] = NULL;
    } else {
        cand[ncand++] = password;
    }

    /* the budget, before any key derivation */
    struct p12_cost cost;
    enum p12_status cst = p12_cost_pkcs12(p12, &cost, label, err, errlen);
    if (cst != P12_OK) {
        PKCS12_free(p12);
        return cst;
    }

    int has_mac = PKCS12_mac_present(p12);
    if (has_mac) {
        int ok = -1;
        for (int i = 0; i < ncand && ok < 0; i++)
            if (PKCS12_verify_mac(p12, cand[i], cand[i] ? (int)strlen(cand[i]) : 0)) ok = i;
        if (ok < 0) {
            int unsup = unsupported_error();
            PKCS12_free(p12);
            if (unsup) {
                err_set(err, errlen, "%s: not a PKCS#12 file (unsupported integrity algorithm)",
                       label);
                return P12_ERR_FORMAT;
            }
            err_set(err, errlen, "%s: wrong password", label);
            return P12_ERR_PASSWORD;
        }
        if (ok == 1) { /* try the variant that verified the MAC first */
            const char *t = cand[0];
            cand[0] = cand[1];
            cand[1] = t;
        }
    }

    enum walk_rc rc = WALK_DECRYPT;
    struct walk w;
    memset(&w, 0, sizeof(w));
    w.label = label;
    for (int i = 0; i < ncand; i++) {
        walk_free(&w);
        w.cost = cost;
        rc = walk_file(&w, p12, cand[i]);
        if (rc != WALK_DECRYPT) break;
    }
    PKCS12_free(p12);
    ERR_clear_error();

    enum p12_status st;
    switch (rc) {
    case WALK_OK:
        st = finish(&w, label, out, err, errlen);
        break;
    case WALK_DECRYPT:
        if (has_mac) {
            err_set(err, errlen,
                   "%s: the key password differs from the file password (files made with "
                   "-twopass are not supported)",
                   label);
            st = P12_ERR_TWOPASS;
        } else {
            err_set(err, errlen, "%s: wrong password", label);
            st = P12_ERR_PASSWORD;
        }
        break;
    case WALK_UNSUPPORTED:
        err_set(err, errlen, "%s: not a PKCS#12 file (unsupported encryption algorithm%s)", label,
               prov_legacy ? "" : "; the OpenSSL legacy provider is not available");
        st = P12_ERR_FORMAT;
        break;
    case WALK_COST:
        err_set(err, errlen, "%s", w.why);
        st = w.why_st;
        break;
    case WALK_FORMAT:
        err_set(err, errlen, "%s: not a PKCS#12 file (corrupt or unsupported content)", label);
        st = P12_ERR_FORMAT;
        break;
    default:
        err_set(err, errlen, "%s: out of memory", label);
        st = P12_ERR_INTERNAL;
        break;
    }
    walk_free(&w);
    return st;
}

enum p12_status p12_load_file(const char *path, const char *password, struct p12_file **out,
                              char *err, size_t errlen)
{
    const char *label = strrchr(path, '/');
    label = label ? label + 1 : path;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(err, errlen, "%s: cannot open: %s", label, strerror(errno));
        return P12_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        err_set(err, errlen, "%s: not a regular file", label);
        close(fd);
        return P12_ERR_IO;
    }
    if ((unsigned long long)st.st_size > P12_MAX_FILE) {
        err_set(err, errlen, "%s: larger than %u bytes", label, P12_MAX_FILE);
        close(fd);
        return P12_ERR_IO;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        err_set(err, errlen, "%s: out of memory", label);
        return P12_ERR_INTERNAL;
    }
    for (;;) {
        if (len == cap) { /* the file grew while being read */
            if (cap > P12_MAX_FILE) break;
            unsigned char *nb = realloc(buf, cap * 2);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            free(buf);
            err_set(err, errlen, "%s: cannot read: %s", label, strerror(e));
            return P12_ERR_IO;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    if (len > P12_MAX_FILE) {
        free(buf);
        err_set(err, errlen, "%s: larger than %u bytes", label, P12_MAX_FILE);
        return P12_ERR_IO;
    }
    enum p12_status s = p12_parse(buf, len, password, label, out, err, errlen);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return s;
}

struct p12_file *p12_from_key_cert(EVP_PKEY *key, X509 *cert, STACK_OF(X509) * chain,
                                   const char *alias)
{
    if (!key || !cert || !alias) return NULL;
    struct p12_file *f = calloc(1, sizeof(*f));
    if (!f) return NULL;
    f->label = strdup(alias);
    f->v = calloc(1, sizeof(*f->v));
    if (!f->label || !f->v) goto fail;
    struct p12_entry *e = &f->v[0];
    e->alias = p12_java_lower(alias);
    e->chain = chain ? X509_chain_up_ref(chain) : sk_X509_new_null();
    if (!e->alias || !e->chain) goto fail;
    e->kind = KIND_KEY;
    EVP_PKEY_up_ref(key);
    e->key = key;
    X509_up_ref(cert);
    e->cert = cert;
    f->n = 1;
    return f;
fail:
    if (f->v) entry_clear(&f->v[0]);
    p12_free(f);
    return NULL;
}

size_t p12_count(const struct p12_file *f)
{
    return f ? f->n : 0;
}

const struct p12_entry *p12_get(const struct p12_file *f, size_t i)
{
    return f && i < f->n ? &f->v[i] : NULL;
}

enum p12_status p12_select(const struct p12_file *f, const char *alias,
                           const struct p12_entry **out, char *err, size_t errlen)
{
    *out = NULL;
    /* like Java's KeyStore.getKey(): the alias asked for is lower-cased too */
    char *want = alias && *alias ? p12_java_lower(alias) : NULL;
    for (size_t i = 0; f && i < f->n; i++) {
        if (f->v[i].kind != KIND_KEY) continue;
        if (!want || strcmp(f->v[i].alias, want) == 0) {
            free(want);
            *out = &f->v[i];
            return P12_OK;
        }
    }
    free(want);
    char list[512] = "";
    size_t used = 0;
    for (size_t i = 0; f && i < f->n && used < sizeof(list); i++) {
        if (f->v[i].kind != KIND_KEY) continue;
        int r =
            snprintf(list + used, sizeof(list) - used, "%s'%s'", used ? ", " : "", f->v[i].alias);
        if (r < 0) break;
        used += (size_t)r;
    }
    err_set(err, errlen, "%s: alias '%s' not found; the file's key aliases are: %s",
           f ? f->label : "keystore", alias ? alias : "", used ? list : "(none)");
    return P12_ERR_ALIAS;
}

const char *p12_entry_alias(const struct p12_entry *e)
{
    return e->alias;
}

int p12_entry_has_key(const struct p12_entry *e)
{
    return e->kind == KIND_KEY && e->key != NULL;
}

EVP_PKEY *p12_entry_key(const struct p12_entry *e)
{
    return e->kind == KIND_KEY ? e->key : NULL;
}

X509 *p12_entry_cert(const struct p12_entry *e)
{
    return e->cert;
}

STACK_OF(X509) * p12_entry_chain(const struct p12_entry *e)
{
    return e->chain;
}
