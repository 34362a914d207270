/* metrics_certs.c - the validity of every certificate certgate knows, for the metrics
 * and the expiry warnings.
 *
 * A stored keystore's entries are readable only with its password, which certgate keeps
 * only for the configured file. So the table holds what certgate has opened (the
 * configured file at start and every reload, every file uploaded, activated or described)
 * plus, from the start, the facts recorded in DIR/ssl-meta (certmeta.c) for stored files
 * opened before; a deleted file leaves it. One mutex; none of this is on the request
 * path. */
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "p12.h"

struct cert_row {
    char *file, *alias, *subject;
    char sha[17];
    long long nb, na;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct cert_row *rows;
static size_t nrows, caprows;

static int asn1_epoch(const ASN1_TIME *t, long long *out)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return -1;
    *out = (long long)timegm(&tm);
    return 0;
}

int metrics_cert_times(X509 *leaf, long long *nb, long long *na, char sha[17])
{
    sha[0] = '\0';
    if (!leaf || asn1_epoch(X509_get0_notBefore(leaf), nb) != 0 ||
        asn1_epoch(X509_get0_notAfter(leaf), na) != 0)
        return -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (X509_digest(leaf, EVP_sha256(), md, &mdlen) != 1 || mdlen < 8) return -1;
    for (unsigned i = 0; i < 8; i++) snprintf(sha + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static void drop_locked(const char *file)
{
    size_t j = 0;
    for (size_t i = 0; i < nrows; i++) {
        if (strcmp(rows[i].file, file) == 0) {
            free(rows[i].file);
            free(rows[i].alias);
            free(rows[i].subject);
        } else {
            rows[j++] = rows[i];
        }
    }
    nrows = j;
}

void metrics_certs_drop(const char *file)
{
    pthread_mutex_lock(&lock);
    drop_locked(file);
    pthread_mutex_unlock(&lock);
}

static void add_locked(const char *file, const struct metrics_cert_fact *f)
{
    struct cert_row r = {0};
    r.nb = f->nb;
    r.na = f->na;
    snprintf(r.sha, sizeof r.sha, "%s", f->sha);
    r.file = strdup(file);
    r.alias = strdup(f->alias ? f->alias : "");
    r.subject = strdup(f->subject ? f->subject : "");
    if (nrows == caprows) {
        size_t cap = caprows ? caprows * 2 : 16;
        struct cert_row *n = realloc(rows, cap * sizeof *rows);
        if (n) rows = n, caprows = cap;
    }
    if (!r.file || !r.alias || !r.subject || nrows == caprows) {
        free(r.file);
        free(r.alias);
        free(r.subject);
        return;
    }
    rows[nrows++] = r;
}

void metrics_certs_put(const char *file, const struct metrics_cert_fact *f, size_t n)
{
    if (!file) return;
    pthread_mutex_lock(&lock);
    drop_locked(file);
    for (size_t i = 0; i < n; i++) add_locked(file, &f[i]);
    pthread_mutex_unlock(&lock);
}

char *metrics_cert_subject(struct x509_st *leaf)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (b && X509_NAME_print_ex(b, X509_get_subject_name(leaf), 0, XN_FLAG_RFC2253) >= 0) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        s = n >= 0 ? strndup(p, (size_t)n) : NULL;
    }
    BIO_free(b);
    return s;
}

void metrics_certs_set(const char *file, const struct p12_file *f)
{
    if (!file || !f) return;
    pthread_mutex_lock(&lock);
    drop_locked(file);
    for (size_t i = 0; i < p12_count(f); i++) {
        const struct p12_entry *e = p12_get(f, i);
        if (!e || !p12_entry_has_key(e)) continue;
        struct metrics_cert_fact fact = {0};
        if (metrics_cert_times(p12_entry_cert(e), &fact.nb, &fact.na, fact.sha) != 0) continue;
        char *subject = metrics_cert_subject(p12_entry_cert(e));
        fact.alias = p12_entry_alias(e);
        fact.subject = subject;
        add_locked(file, &fact);
        free(subject);
    }
    pthread_mutex_unlock(&lock);
}

void metrics_certs_each_fact(void (*fn)(void *arg, const char *file,
                                        const struct metrics_cert_fact *f),
                             void *arg)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nrows; i++) {
        struct metrics_cert_fact f = {rows[i].alias, rows[i].subject, "", rows[i].nb,
                                      rows[i].na};
        memcpy(f.sha, rows[i].sha, sizeof f.sha);
        fn(arg, rows[i].file, &f);
    }
    pthread_mutex_unlock(&lock);
}

void metrics_certs_each(void (*fn)(void *arg, const char *file, const char *alias,
                                   const char *sha, long long nb, long long na),
                        void *arg)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nrows; i++)
        fn(arg, rows[i].file, rows[i].alias, rows[i].sha, rows[i].nb, rows[i].na);
    pthread_mutex_unlock(&lock);
}

void metrics_certs_free(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nrows; i++) {
        free(rows[i].file);
        free(rows[i].alias);
        free(rows[i].subject);
    }
    free(rows);
    rows = NULL;
    nrows = caprows = 0;
    pthread_mutex_unlock(&lock);
}
