/* certmeta.c - the public facts of each stored certificate file (see certmeta.h). */
#include "certmeta.h"

#include "err.h"
#include "expiry.h"
#include "fsutil.h"
#include "gw.h"
#include "log.h"
#include "p12.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECORD_MAX (256u * 1024) /* a record is a few hundred bytes per entry */
#define RECORD_VERSION 1

struct certmeta_rec {
    size_t n;
    struct metrics_cert_fact *f; /* alias and subject owned */
    char (*sha)[65];
};

static struct certmeta_rec *rec_new(size_t n)
{
    struct certmeta_rec *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->f = calloc(n ? n : 1, sizeof *r->f);
    r->sha = calloc(n ? n : 1, sizeof *r->sha);
    if (!r->f || !r->sha) {
        free(r->f);
        free(r->sha);
        free(r);
        return NULL;
    }
    return r;
}

void certmeta_rec_free(struct certmeta_rec *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        free((char *)r->f[i].alias);
        free((char *)r->f[i].subject);
    }
    free(r->f);
    free(r->sha);
    free(r);
}

size_t certmeta_count(const struct certmeta_rec *r)
{
    return r ? r->n : 0;
}

const struct metrics_cert_fact *certmeta_facts(const struct certmeta_rec *r)
{
    return r->f;
}

const char *certmeta_sha256(const struct certmeta_rec *r, size_t i)
{
    return i < r->n ? r->sha[i] : "";
}

/* Adds one fact (strings copied); -1 when out of memory. */
static int rec_add(struct certmeta_rec *r, const char *alias, const char *subject,
                   const char *sha, long long nb, long long na)
{
    struct metrics_cert_fact *f = &r->f[r->n];
    f->alias = strdup(alias);
    f->subject = strdup(subject);
    if (!f->alias || !f->subject) {
        free((char *)f->alias);
        free((char *)f->subject);
        return -1;
    }
    snprintf(r->sha[r->n], sizeof r->sha[r->n], "%s", sha);
    snprintf(f->sha, sizeof f->sha, "%.16s", sha);
    f->nb = nb;
    f->na = na;
    r->n++;
    return 0;
}

struct certmeta_rec *certmeta_rec_of(const struct p12_file *p12)
{
    struct certmeta_rec *r = rec_new(p12_count(p12));
    if (!r) return NULL;
    for (size_t i = 0; i < p12_count(p12); i++) {
        const struct p12_entry *e = p12_get(p12, i);
        if (!e || !p12_entry_has_key(e)) continue;
        X509 *leaf = p12_entry_cert(e);
        struct metrics_cert_fact t;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        if (metrics_cert_times(leaf, &t.nb, &t.na, t.sha) != 0 ||
            X509_digest(leaf, EVP_sha256(), md, &mdlen) != 1 || mdlen != 32)
            continue;
        char hex[65];
        for (unsigned k = 0; k < mdlen; k++) snprintf(hex + 2 * k, 3, "%02x", md[k]);
        char *subject = metrics_cert_subject(leaf);
        const char *alias = p12_entry_alias(e);
        int rc = subject ? rec_add(r, alias ? alias : "", subject, hex, t.nb, t.na) : -1;
        free(subject);
        if (rc != 0) {
            certmeta_rec_free(r);
            return NULL;
        }
    }
    return r;
}

char *certmeta_encode(const char *name, const struct stat *st, const struct certmeta_rec *r)
{
    json_t *entries = json_array();
    for (size_t i = 0; entries && i < r->n; i++)
        if (json_array_append_new(entries, json_pack("{s:s,s:s,s:s,s:I,s:I}", "alias",
                                                     r->f[i].alias, "subject", r->f[i].subject,
                                                     "sha256", r->sha[i], "not_before",
                                                     (json_int_t)r->f[i].nb, "not_after",
                                                     (json_int_t)r->f[i].na)) != 0) {
            json_decref(entries);
            entries = NULL;
        }
    if (!entries) return NULL;
    json_t *j = json_pack("{s:i,s:s,s:{s:I,s:I,s:I,s:I},s:o}", "version", RECORD_VERSION,
                          "file", name, "file_version", "size", (json_int_t)st->st_size,
                          "mtime", (json_int_t)st->st_mtim.tv_sec, "mtime_ns",
                          (json_int_t)st->st_mtim.tv_nsec, "inode", (json_int_t)st->st_ino,
                          "entries", entries);
    char *s = j ? json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

static int is_hex64(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f'))) return 0;
    return n == 64;
}

int certmeta_decode(const char *text, const char *name, const struct stat *st,
                    struct certmeta_rec **out, char *err, size_t errlen)
{
    *out = NULL;
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    json_int_t version = 0, size = 0, mtime = 0, mtime_ns = 0, inode = 0;
    const char *file = NULL;
    json_t *entries = NULL;
    if (!j || json_unpack(j, "{s:I,s:s,s:{s:I,s:I,s:I,s:I},s:o}", "version", &version, "file",
                          &file, "file_version", "size", &size, "mtime", &mtime, "mtime_ns",
                          &mtime_ns, "inode", &inode, "entries", &entries) != 0 ||
        version != RECORD_VERSION || !json_is_array(entries)) {
        err_set(err, errlen, "not a certificate record");
        json_decref(j);
        return -1;
    }
    if (strcmp(file, name) != 0) {
        err_set(err, errlen, "the record of %s, not of %s", file, name);
        json_decref(j);
        return -1;
    }
    if ((long long)size != (long long)st->st_size ||
        (long long)mtime != (long long)st->st_mtim.tv_sec ||
        (long long)mtime_ns != (long long)st->st_mtim.tv_nsec ||
        (unsigned long long)inode != (unsigned long long)st->st_ino) {
        err_set(err, errlen, "stale: %s changed since it was recorded", name);
        json_decref(j);
        return -1;
    }
    struct certmeta_rec *r = rec_new(json_array_size(entries));
    if (!r) {
        err_set(err, errlen, "out of memory");
        json_decref(j);
        return -1;
    }
    for (size_t i = 0; i < json_array_size(entries); i++) {
        const char *alias, *subject, *sha;
        json_int_t nb, na;
        if (json_unpack(json_array_get(entries, i), "{s:s,s:s,s:s,s:I,s:I}", "alias", &alias,
                        "subject", &subject, "sha256", &sha, "not_before", &nb, "not_after",
                        &na) != 0 ||
            !is_hex64(sha)) {
            err_set(err, errlen, "entry %zu is not a certificate's facts", i + 1);
            certmeta_rec_free(r);
            json_decref(j);
            return -1;
        }
        if (rec_add(r, alias, subject, sha, (long long)nb, (long long)na) != 0) {
            err_set(err, errlen, "out of memory");
            certmeta_rec_free(r);
            json_decref(j);
            return -1;
        }
    }
    json_decref(j);
    *out = r;
    return 0;
}

/* NAME.json, malloc'd; NULL when name cannot have a record (or out of memory). */
static char *record_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || name[0] == '.' || strchr(name, '/') || n > 200) return NULL;
    char *s = malloc(n + 6);
    if (s) snprintf(s, n + 6, "%s.json", name);
    return s;
}

static char *meta_dir(void)
{
    return gw_paths.data_dir ? fs_path_join(gw_paths.data_dir, CERTMETA_DIR) : NULL;
}

int certmeta_save(const char *name, const struct certmeta_rec *r, const struct stat *ver,
                  char *err, size_t errlen)
{
    char *dir = meta_dir(), *rn = record_name(name);
    char *path = gw_paths.ssl_dir ? fs_path_join(gw_paths.ssl_dir, name) : NULL;
    char *text = NULL;
    struct stat now;
    int rc = -1;
    if (!dir || !rn || !path) {
        err_set(err, errlen, "no record for '%s'", name);
    } else if (!ver && (lstat(path, &now) != 0 || !S_ISREG(now.st_mode))) {
        err_set(err, errlen, "%s is not a regular file", path);
    } else if (!(text = certmeta_encode(name, ver ? ver : &now, r))) {
        err_set(err, errlen, "out of memory");
    } else if (fs_mkdir_p(dir, 0700, 0, err, errlen) == 0 &&
               fs_write_entry(dir, rn, text, strlen(text), 0600, err, errlen) == 0) {
        rc = 0;
    }
    free(text);
    free(path);
    free(rn);
    free(dir);
    return rc;
}

void certmeta_note(const char *name, const struct p12_file *p12, const struct stat *ver)
{
    if (!name || !p12) return;
    metrics_certs_set(name, p12);
    expiry_poke();
    char *rn = record_name(name);
    free(rn);
    if (!rn) return; /* not a file of the ssl directory */
    struct certmeta_rec *r = certmeta_rec_of(p12);
    char err[600];
    if (!r)
        log_warn("cannot record the certificate facts of %s: out of memory", name);
    else if (certmeta_save(name, r, ver, err, sizeof err) != 0)
        log_warn("cannot record the certificate facts of %s: %s", name, err);
    certmeta_rec_free(r);
}

void certmeta_remove(const char *name)
{
    char *dir = meta_dir(), *rn = record_name(name);
    char *path = dir && rn ? fs_path_join(dir, rn) : NULL;
    char err[600];
    if (path && fs_unlink_durable(path, err, sizeof err) != 0 && errno != ENOENT)
        log_warn("cannot remove the certificate record %s: %s", path, err);
    free(path);
    free(rn);
    free(dir);
}

size_t certmeta_load_all(void)
{
    char *dir = meta_dir();
    DIR *d = dir ? opendir(dir) : NULL;
    size_t loaded = 0;
    if (!d) {
        free(dir);
        return 0;
    }
    for (struct dirent *de; (de = readdir(d));) {
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == '.' || n <= 5 || strcmp(de->d_name + n - 5, ".json") != 0)
            continue;
        char *name = strndup(de->d_name, n - 5);
        char *path = name && gw_paths.ssl_dir ? fs_path_join(gw_paths.ssl_dir, name) : NULL;
        char *text = NULL, err[600];
        size_t len;
        struct stat st;
        struct certmeta_rec *r = NULL;
        if (!path) {
            /* out of memory: skip */
        } else if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            log_debug("certificate record %s/%s: %s is gone; ignored", dir, de->d_name, name);
        } else if (fs_read_entry(dir, de->d_name, RECORD_MAX, &text, &len, err, sizeof err) !=
                       0 ||
                   certmeta_decode(text, name, &st, &r, err, sizeof err) != 0) {
            log_info("certificate record %s/%s ignored: %s", dir, de->d_name, err);
        } else {
            metrics_certs_put(name, r->f, r->n);
            loaded++;
        }
        certmeta_rec_free(r);
        free(text);
        free(path);
        free(name);
    }
    closedir(d);
    free(dir);
    return loaded;
}
