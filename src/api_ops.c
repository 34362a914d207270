/* api_ops.c - the certificate API's operations in the thread pool: upload, activate,
 * delete, list, describe on a single node, and what a fleet member's writes share with
 * them (validation, the switch, the audit line); see api_job.h. */
#include "api_job.h"

#include "acme.h"
#include "acme_store.h"
#include "api_fleet.h"
#include "certmeta.h"
#include "fleet_sync.h"
#include "fsutil.h"
#include "gw.h"
#include "log.h"
#include "metrics.h"
#include "p12.h"
#include "secret.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_STORED (16u << 20) /* p12_load_file's limit */

const char *const api_op_names[] = {"?", "list", "upload", "delete", "activate", "describe"};

void api_job_error(struct api_job *j, int status, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    snprintf(j->msg, sizeof j->msg, "%.599s", buf);
    j->status = status;
    j->ctype = "application/json";
    j->body = api_error_body(status, buf);
}

static void job_json(struct api_job *j, json_t *v)
{
    j->status = 200;
    j->ctype = "application/json";
    j->body = json_dumps(v, JSON_COMPACT);
    if (!j->body) api_job_error(j, 500, "out of memory; try again");
}

/* The alias to serve from a new keystore: the configured one when the file has it. */
static const char *pick_alias(const struct p12_file *p12)
{
    const char *want = gw_configured_alias();
    const struct p12_entry *e;
    if (want && *want && p12_select(p12, want, &e, NULL, 0) == P12_OK) return want;
    return NULL;
}

/* The audit line of j: a success (status 200, under gw_lock: lines are in the order of
 * the changes) or a refusal (before == after: nothing changed). Runs in the thread pool,
 * never on a worker's loop: audit_record waits for its fsync. */
void api_job_audit(struct api_job *j, const char *alias, const struct gw_served *before,
                   const struct gw_served *after, const char *msg)
{
    struct api_audit a = {api_op_names[j->op], j->name, alias, j->token_id, j->client,
                          msg ? msg : j->msg, before ? before->sha256 : NULL,
                          after ? after->sha256 : NULL, j->status};
    api_audit_record(&a, 0);
    j->audited = 1;
}

static json_t *describe(const struct p12_file *p12, const char *name, int active)
{
    json_t *d = p12_describe(p12, name);
    if (d) json_object_set_new(d, "active", json_boolean(active));
    if (d && acme_owns_file(name)) json_object_set_new(d, "source", json_string("acme"));
    return d;
}

/* Switches to p12 (taken over) as `name`: prepare, optional file write, config record,
 * publish. On any failure nothing live or on disk is changed. On a fleet member it only
 * validates: j->fleet_desc is the description to answer with, and api_fleet_put writes
 * the change to etcd after gw_lock (the sync thread then applies it like any other). */
void api_job_switch_to(struct api_job *j, struct p12_file *p12, const char *password,
                       const void *data, size_t len)
{
    char err[1024];
    const char *picked = pick_alias(p12);
    char *alias = picked ? strdup(picked) : NULL;
    const struct p12_entry *e = NULL;
    json_t *warnings = json_array();
    if (warnings && j->pre_warnings) json_array_extend(warnings, j->pre_warnings);
    if (!warnings) {
        p12_free(p12);
        free(alias);
        api_job_error(j, 500, "out of memory");
        return;
    }
    if (p12_select(p12, alias, &e, err, sizeof err) != P12_OK ||
        p12_check_entry(e, time(NULL), warnings, err, sizeof err) != 0) {
        p12_free(p12);
        free(alias);
        json_decref(warnings);
        api_job_error(j, 400, "%s: %s", j->name, err);
        return;
    }
    struct gw_change *ch = gw_change_prepare(p12, alias, err, sizeof err);
    if (!ch) {
        /* OpenSSL's reason ("ee key too small") is terse: the findings say it in words */
        const char *why = json_string_value(json_array_get(warnings, 0));
        p12_free(p12);
        free(alias);
        api_job_error(j, 400, "%s: %s%s%s%s", j->name, err, why ? " (" : "", why ? why : "",
                      why ? ")" : "");
        json_decref(warnings);
        return;
    }
    for (const char *const *n = gw_change_notes(ch); *n; n++)
        json_array_append_new(warnings, json_string(*n));
    if (j->dry) { /* everything a real switch checks has passed: describe, change nothing */
        json_t *d = describe(p12, j->name, gw_is_active_name(j->name));
        if (d) {
            json_object_set(d, "warnings", warnings);
            json_object_set_new(d, "dryRun", json_true());
        }
        log_info("certificate API: dry run of %s %s: it would be accepted (%zu warning%s)",
                 data ? "upload" : "activation", j->name, json_array_size(warnings),
                 json_array_size(warnings) == 1 ? "" : "s");
        if (d) job_json(j, d);
        else api_job_error(j, 500, "out of memory");
        json_decref(d);
        json_decref(warnings);
        gw_change_abort(ch); /* frees p12 */
        free(alias);
        return;
    }
    if (gw_secret_dir()) { /* the Secret is the source of truth: a switch here would not last */
        api_job_error(j, 409,
                      "%s: not %s: the served certificate comes from the watched secret directory "
                      "%s (--tls-secret-dir); change the Kubernetes Secret (server.p12, password, "
                      "alias) instead",
                      j->name, data ? "uploaded" : "activated", gw_secret_dir());
        json_decref(warnings);
        gw_change_abort(ch);
        free(alias);
        return;
    }
    if (fleet_sync_on()) {
        j->fleet_desc = describe(p12, j->name, 1);
        if (j->fleet_desc) json_object_set(j->fleet_desc, "warnings", warnings);
        j->fleet_alias = alias; /* taken over */
        if (!j->fleet_desc) api_job_error(j, 500, "out of memory");
        json_decref(warnings);
        gw_change_abort(ch);
        return;
    }
    char *path = fs_path_join(gw_paths.ssl_dir, j->name);
    char *old = NULL;
    size_t oldlen = 0;
    int had_old = 0;
    if (data) { /* upload: keep what it replaces, to put it back if the config fails */
        had_old = fs_read_entry(gw_paths.ssl_dir, j->name, 64u << 20, &old, &oldlen, NULL, 0) == 0;
        if (fs_write_entry(gw_paths.ssl_dir, j->name, data, len, 0600, err, sizeof err) != 0) {
            api_job_error(j, 500, "cannot store %s: %s", j->name, err);
            goto fail;
        }
    }
    if (gw_record_certificate(j->name, password, alias, err, sizeof err) != 0) {
        if (data) {
            char e2[256];
            if (had_old
                    ? fs_write_entry(gw_paths.ssl_dir, j->name, old, oldlen, 0600, e2, sizeof e2)
                    : fs_unlink_durable(path, e2, sizeof e2))
                log_error("certificate API: could not undo the write of %s: %s", path, e2);
        }
        api_job_error(j, 500, "cannot record %s in custom.properties: %s", j->name, err);
        goto fail;
    }
    const char *served_alias = gw_change_alias(ch);
    struct gw_served before, after;
    char amsg[700];
    char *alias_copy = strdup(served_alias);
    snprintf(amsg, sizeof amsg, "%s %s (alias '%s'); new connections get it now",
             data ? (j->pem ? "uploaded (PEM bundle) and activated" : "uploaded and activated")
                  : "activated",
             j->name, served_alias);
    log_info("certificate API: %s", amsg);
    gw_served_get(&before);
    gw_change_commit(ch, j->name);
    gw_served_get(&after);
    j->status = 200; /* done: recorded before the answer is made */
    api_job_audit(j, alias_copy, &before, &after, amsg);
    json_t *d = describe(gw_active_p12(), j->name, 1);
    if (d) json_object_set(d, "warnings", warnings);
    if (json_array_size(warnings) > 0)
        log_warn("certificate API: %s: %s%s", j->name,
                 json_string_value(json_array_get(warnings, 0)),
                 json_array_size(warnings) > 1 ? " (and more: see the answer)" : "");
    job_json(j, d);
    json_decref(d);
    json_decref(warnings);
    free(alias_copy);
    free(path);
    free(old);
    free(alias);
    return;
fail:
    json_decref(warnings);
    gw_change_abort(ch);
    free(path);
    free(old);
    free(alias);
}

/* The password of an activate/describe request: X-Password, else {"password":...} in
 * the body whatever its Content-Type, else "". */
int api_job_password(struct api_job *j, const struct http_request *r, char **pw)
{
    const char *h = http_header(r, "X-Password");
    if (h) {
        *pw = strdup(h);
        return *pw ? 0 : -1;
    }
    if (r->body_len == 0 && acme_owns_file(j->name)) { /* its password is certgate's */
        *pw = acme_store_password(j->name);
        if (*pw) return 0;
    }
    if (r->body_len == 0) {
        *pw = strdup("");
        return *pw ? 0 : -1;
    }
    if (api_password_from_body(r->body, r->body_len, pw) != 0) {
        api_job_error(j, 400,
                      "The password is missing: send it in the X-Password header or as the body "
                      "{\"password\":\"...\"}.");
        return -1;
    }
    return 0;
}

/* The stat of a stored file, which must be a regular file (not followed if a link):
 * 0, or -1. Its version is compared with fs_same_version. */
static int file_version(const char *path, struct stat *st)
{
    return lstat(path, st) == 0 && S_ISREG(st->st_mode) ? 0 : -1;
}

/* Opens the stored file j->name with the request's password, without gw_lock (the key
 * derivation is the slow part): 0 with *p12, *pw (the caller frees both) and the
 * identity of the file that was read, or -1 with the answer (404, 400, 409) in j. */
static int open_stored(struct api_job *j, const struct http_request *r, struct p12_file **p12,
                       char **pw, struct stat *id)
{
    char *path = fs_path_join(gw_paths.ssl_dir, j->name);
    int rc = -1;
    struct stat after;
    char err[1024];
    char *data = NULL;
    size_t len = 0;
    *pw = NULL;
    *p12 = NULL;
    if (!path) {
        api_job_error(j, 500, "out of memory");
    } else if (fs_read_entry(gw_paths.ssl_dir, j->name, MAX_STORED, &data, &len, err,
                             sizeof err) != 0) {
        if (errno == ENOENT)
            api_job_error(j, 404, "No certificate file named %s; GET list shows the stored files.",
                          j->name);
        else if (errno == ELOOP || errno == EINVAL || errno == EPERM)
            api_job_error(j, 403, "%s", err);
        else
            api_job_error(j, 500, "%s", err);
    } else if (file_version(path, id) != 0) {
        api_job_error(j, 404, "No certificate file named %s (it was deleted meanwhile).", j->name);
    } else if (api_job_password(j, r, pw) == 0) {
        if (p12_parse(data, len, *pw, j->name, p12, err, sizeof err) != P12_OK)
            api_job_error(j, 400, "%s", err);
        else if (file_version(path, &after) != 0)
            api_job_error(j, 404, "No certificate file named %s (it was deleted meanwhile).",
                          j->name);
        else if (!fs_same_version(id, &after))
            api_job_error(j, 409, "%s was replaced while it was being read; try again.", j->name);
        else
            rc = 0;
    }
    free(data);
    free(path);
    if (rc != 0) {
        p12_free(*p12);
        *p12 = NULL;
        secret_free(*pw);
        *pw = NULL;
    }
    return rc;
}

/* Under gw_lock: 0 when the stored file j->name is still the one open_stored read, else
 * -1 with the answer in j. */
static int still_same(struct api_job *j, const struct stat *id)
{
    char *path = fs_path_join(gw_paths.ssl_dir, j->name);
    struct stat now;
    int rc = -1;
    if (!path)
        api_job_error(j, 500, "out of memory");
    else if (file_version(path, &now) != 0)
        api_job_error(j, 404, "no certificate file named %s (it was deleted meanwhile)", j->name);
    else if (!fs_same_version(id, &now))
        api_job_error(j, 409, "%s was replaced while it was being activated; try again", j->name);
    else
        rc = 0;
    free(path);
    return rc;
}

/* The certificate [acme] keeps is changed only by the ACME client. */
static int refuse_acme(struct api_job *j, const char *what)
{
    api_job_error(j, 403,
                  "%s is the certificate that [acme] obtains for its domains and cannot be %s; "
                  "use another name, or remove [acme] from custom.properties first",
                  j->name, what);
    return -1;
}

int api_job_refuse_active(struct api_job *j)
{
    api_job_error(j, 403,
                  "%s is the active certificate file and cannot be replaced; upload the new "
                  "certificate under another name (it is activated at once), then delete %s",
                  j->name, j->name);
    return -1;
}

/* The key derivation (p12_parse) runs without gw_lock; under it only what depends on
 * the live state: the name is still not the active file, the switch, the writes. */
static void op_upload(struct api_job *j, const struct http_request *r)
{
    if (r->body_len == 0) {
        api_job_error(j, 400, "%s: the body is empty; send the PKCS#12 file (curl -T file.p12)",
                      j->name);
        return;
    }
    if (acme_owns_file(j->name)) {
        refuse_acme(j, "replaced");
        return;
    }
    gw_lock();
    int active = gw_is_active_name(j->name);
    gw_unlock();
    if (active) { /* before the slow part; checked again below */
        api_job_refuse_active(j);
        return;
    }
    char err[1024];
    /* the name must not be a symbolic link (or anything else than our own file) */
    if (fs_check_entry(gw_paths.ssl_dir, j->name, err, sizeof err) != 0 && errno != ENOENT) {
        api_job_error(j, 403, "%s", err);
        return;
    }
    if (fleet_sync_on() && !j->dry && r->body_len > API_FLEET_MAX_VALUE) {
        api_job_error(j, 413,
                      "%s: not uploaded: the file has %zu bytes, more than the %u a fleet member "
                      "stores in etcd (etcd's request limit, --max-request-bytes, is 1.5 MiB by "
                      "default); use a smaller keystore (fewer certificates, no unused entries)",
                      j->name, r->body_len, API_FLEET_MAX_VALUE);
        return;
    }
    const char *h = http_header(r, "X-Password");
    char *pw = strdup(h ? h : "");
    struct p12_file *p12 = NULL;
    if (!pw) {
        api_job_error(j, 500, "out of memory");
        return;
    }
    const void *data = r->body;
    size_t len = r->body_len;
    unsigned char *der = NULL;
    if (api_pem_body(http_header(r, "Content-Type"))) { /* stored as a PKCS#12 built here */
        if (!j->pre_warnings) j->pre_warnings = json_array();
        int st = j->pre_warnings ? api_pem_to_p12(r->body, r->body_len, j->name, h, &pw, &der,
                                                  &len, j->pre_warnings, err, sizeof err)
                                 : 500;
        if (st != 0) {
            api_job_error(j, st, "%s", st == 500 && !j->pre_warnings ? "out of memory" : err);
            secret_free(pw);
            return;
        }
        data = der;
        j->pem = 1;
    }
    if (p12_parse(data, len, pw, j->name, &p12, err, sizeof err) != P12_OK) {
        api_job_error(j, 400, "%s", err);
    } else if (fleet_sync_on() && !j->dry) {
        api_fleet_op_upload(j, r, p12, pw, data, len);
    } else {
        gw_lock();
        if (gw_is_active_name(j->name)) {
            p12_free(p12);
            api_job_refuse_active(j);
        } else {
            api_job_switch_to(j, p12, pw, data, len);
        }
        gw_unlock();
    }
    secret_free(pw);
    p12_der_free(der, len);
}

static void op_activate(struct api_job *j, const struct http_request *r)
{
    struct p12_file *p12;
    char *pw;
    struct stat id;
    if (acme_owns_file(j->name)) {
        refuse_acme(j, "activated (it is served when no custom certificate is active)");
        return;
    }
    if (fleet_sync_on() && !j->dry) {
        api_fleet_op_activate(j, r);
        return;
    }
    if (open_stored(j, r, &p12, &pw, &id) != 0) return;
    gw_lock();
    if (still_same(j, &id) == 0)
        api_job_switch_to(j, p12, pw, NULL, 0);
    else
        p12_free(p12);
    gw_unlock();
    secret_free(pw);
}

static void op_delete(struct api_job *j)
{
    char *path = fs_path_join(gw_paths.ssl_dir, j->name);
    char err[512];
    struct stat st;
    if (!path || lstat(path, &st) != 0) {
        api_job_error(j, 404, "No certificate file named %s; GET list shows the stored files.",
                      j->name);
    } else if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) { /* a link goes, not its target */
        api_job_error(j, 403, "%s in %s is not a file; remove it by hand", j->name,
                      gw_paths.ssl_dir);
    } else if (gw_is_active_name(j->name)) {
        api_job_error(j, 403,
                      "%s is the active certificate file and cannot be deleted; activate another "
                      "certificate first",
                      j->name);
    } else if (acme_owns_file(j->name)) {
        refuse_acme(j, "deleted");
    } else if (fs_unlink_durable(path, err, sizeof err) != 0) {
        api_job_error(j, 500, "cannot delete %s: %s", j->name, err);
    } else {
        metrics_certs_drop(j->name);
        certmeta_remove(j->name);
        log_info("certificate API: deleted %s", j->name);
        j->status = 200;
        j->ctype = NULL;
        j->body = NULL;
        char amsg[400];
        snprintf(amsg, sizeof amsg, "deleted %s", j->name);
        api_job_audit(j, NULL, NULL, NULL, amsg); /* under gw_lock (work_cb) */
    }
    free(path);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void op_list(struct api_job *j)
{
    DIR *d = opendir(gw_paths.ssl_dir);
    if (!d) {
        api_job_error(j, 500, "cannot read %s: %s", gw_paths.ssl_dir, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0, skipped = 0;
    char why[600] = "";
    struct dirent *de;
    while ((de = readdir(d))) {
        if (api_name_invalid(de->d_name, strlen(de->d_name))) continue; /* dot files etc. */
        char e[600];
        if (fs_check_entry(gw_paths.ssl_dir, de->d_name, e, sizeof e) != 0) {
            if (errno != ENOENT && !skipped++) snprintf(why, sizeof why, "%s", e);
            continue; /* links, folders, FIFOs, others' files */
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof *names);
            if (!nn) break;
            names = nn;
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (skipped)
        log_warn("certificate API: list leaves out %zu entr%s of %s that certgate does not use; "
                 "first: %s",
                 skipped, skipped == 1 ? "y" : "ies", gw_paths.ssl_dir, why);
    if (n > 1) qsort(names, n, sizeof *names, cmp_names); /* names is NULL when n == 0 */
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *e = NULL;
        if (names[i] && gw_active_p12() && gw_is_active_name(names[i]))
            e = describe(gw_active_p12(), names[i], 1);
        else if (names[i] && gw_acme_p12() && acme_owns_file(names[i]) && gw_acme_file() &&
                 strcmp(gw_acme_file(), names[i]) == 0)
            e = describe(gw_acme_p12(), names[i], 0);
        if (!e) e = json_pack("{s:s}", "name", names[i] ? names[i] : "");
        if (e && names[i] && acme_owns_file(names[i]) && !json_object_get(e, "source"))
            json_object_set_new(e, "source", json_string("acme"));
        json_array_append_new(arr, e);
        free(names[i]);
    }
    free(names);
    job_json(j, arr);
    json_decref(arr);
}

static void op_describe(struct api_job *j, const struct http_request *r)
{
    struct p12_file *p12;
    char *pw;
    struct stat id;
    if (open_stored(j, r, &p12, &pw, &id) != 0) return;
    secret_free(pw);
    gw_lock();
    int active = gw_is_active_name(j->name);
    gw_unlock();
    json_t *d = describe(p12, j->name, active);
    certmeta_note(j->name, p12, &id); /* opened with its password: now known, and kept */
    job_json(j, d);
    json_decref(d);
    p12_free(p12);
}

/* Upload, activate and describe take gw_lock themselves, after their key derivation;
 * delete and list are cheap and run under it. */
void api_job_run(struct api_job *j)
{
    if (j->fleet) { /* ?wait=all, looking at the others again */
        api_fleet_op_poll(j, atomic_load_explicit(&j->gone, memory_order_acquire));
        return;
    }
    const struct http_request *r = http_req(j->x);
    switch (j->op) {
    case OP_UPLOAD:
        op_upload(j, r);
        break;
    case OP_ACTIVATE:
        op_activate(j, r);
        break;
    case OP_DESCRIBE:
        op_describe(j, r);
        break;
    case OP_DELETE:
        if (fleet_sync_on()) {
            api_fleet_op_delete(j);
            break;
        }
        gw_lock();
        op_delete(j);
        gw_unlock();
        break;
    case OP_LIST:
        gw_lock();
        op_list(j);
        gw_unlock();
        break;
    default:
        api_job_error(j, 500, "unknown operation");
    }
    /* a refusal (or a failure) of a change: recorded here, after gw_lock */
    if ((j->op == OP_UPLOAD || j->op == OP_ACTIVATE || j->op == OP_DELETE) && !j->dry &&
        !j->audited && !j->fleet)
        api_job_audit(j, NULL, NULL, NULL, NULL);
}
