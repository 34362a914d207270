/* api.c - the certificate REST API (see api.h). */
#include "api.h"

#include "acme.h"
#include "acme_store.h"
#include "api_fleet.h"

#include "auth.h"
#include "certmeta.h"
#include "conn.h"
#include "fleet_sync.h"
#include "fsutil.h"
#include "gw.h"
#include "log.h"
#include "metrics.h"
#include "p12.h"
#include "secret.h"

#include <dirent.h>
#include <errno.h>
#include <llhttp.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

#define SMALL_BODY (64 * 1024)
#define MAX_STORED (16u << 20) /* p12_load_file's limit */

enum op { OP_NONE, OP_LIST, OP_UPLOAD, OP_DELETE, OP_ACTIVATE, OP_DESCRIBE };
static const char *const op_names[] = {"?", "list", "upload", "delete", "activate", "describe"};

/* A job belongs to its exchange (route ctx, freed by job_free), which lives until the
 * job's answer is given, even when the client has gone (http.h). */
struct api_job {
    struct http_exchange *x;
    uv_work_t work;
    enum op op;
    char name[API_MAX_NAME + 1];
    int queued;          /* counted in api_jobs; loop thread only */
    _Atomic int gone;    /* the client left: a job not started yet is not started */
    int skipped;         /* set by work_cb when it did not start the job */
    int dry;             /* ?dryRun=true: validate and describe, store and switch nothing */
    json_t *pre_warnings; /* found before switch_to (a PEM upload's chain order); owned */
    /* the audit line (upload, activate, delete; dry runs are not recorded) */
    char token_id[64];   /* the token's public ID, never its secret */
    char client[64];     /* the client's address */
    char msg[600];       /* the refusal's sentence */
    int audited;         /* the line is written (a success, under gw_lock) */
    int pem;             /* the upload was a PEM bundle */
    /* a fleet member (fleet_sync_on): the write goes to etcd (api_fleet.c) */
    unsigned wait_all_ms; /* ?wait=all[&timeout=S]: how long (0: this member only) */
    json_t *fleet_desc;  /* switch_to validated the change: the answer's description */
    char *fleet_alias;   /* the alias to record (NULL: the first key entry) */
    const char *extra;   /* header lines of the answer (Retry-After) */
    /* result, made in the thread pool */
    int status;
    char *body;
    const char *ctype;
};

/* API jobs queued or running, over all workers ([certgate] api-queue caps it) */
static _Atomic unsigned api_jobs;
/* What a client is told to wait before trying again when the queue is full. */
#define API_RETRY_AFTER_S 2

/* ----- answers ----- */

/* Dynatrace's error envelope {"error":{"code":N,"message":"..."}}, malloc'd. */
static char *error_body(int status, const char *msg)
{
    /* the message may quote a path or name: keep it printable ASCII (valid UTF-8) */
    char clean[1024];
    size_t n = 0;
    for (; msg[n] && n + 1 < sizeof clean; n++)
        clean[n] = (unsigned char)msg[n] >= 0x20 && (unsigned char)msg[n] < 0x7f ? msg[n] : '?';
    clean[n] = '\0';
    json_t *j = json_pack("{s:{s:i,s:s}}", "error", "code", status, "message", clean);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* An error answer in the envelope; extra: "Name: value\r\n" lines or NULL. */
static void respond_error(struct http_exchange *x, int status, const char *extra, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));
static void respond_error(struct http_exchange *x, int status, const char *extra, const char *fmt,
                          ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *body = error_body(status, msg);
    static const char fallback[] = "{\"error\":{\"code\":500,\"message\":\"out of memory\"}}";
    http_respond(x, status, "application/json", extra, body ? body : fallback,
                 body ? strlen(body) : sizeof fallback - 1);
    free(body);
}

/* Errors the HTTP layer finds in an API request (413, 400, 408, ...). */
void api_http_error(struct http_exchange *x, int status, const char *msg)
{
    respond_error(x, status, NULL, "%s", msg);
}

static void respond_405(struct http_exchange *x, const char *allow)
{
    char hdr[80];
    snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
    respond_error(x, 405, hdr, "Method %s is not allowed here; use %s.", http_req(x)->method_name,
                  allow);
}

/* ----- the thread-pool side ----- */

/* The job's answer: an error in Dynatrace's envelope. */
static void job_error(struct api_job *j, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_error(struct api_job *j, int status, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    snprintf(j->msg, sizeof j->msg, "%.599s", buf);
    j->status = status;
    j->ctype = "application/json";
    j->body = error_body(status, buf);
}

static void job_json(struct api_job *j, json_t *v)
{
    j->status = 200;
    j->ctype = "application/json";
    j->body = json_dumps(v, JSON_COMPACT);
    if (!j->body) job_error(j, 500, "out of memory; try again");
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
static void job_audit(struct api_job *j, const char *alias, const struct gw_served *before,
                      const struct gw_served *after, const char *msg)
{
    struct api_audit a = {op_names[j->op], j->name, alias, j->token_id, j->client,
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
static void switch_to(struct api_job *j, struct p12_file *p12, const char *password,
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
        job_error(j, 500, "out of memory");
        return;
    }
    if (p12_select(p12, alias, &e, err, sizeof err) != P12_OK ||
        p12_check_entry(e, time(NULL), warnings, err, sizeof err) != 0) {
        p12_free(p12);
        free(alias);
        json_decref(warnings);
        job_error(j, 400, "%s: %s", j->name, err);
        return;
    }
    struct gw_change *ch = gw_change_prepare(p12, alias, err, sizeof err);
    if (!ch) {
        /* OpenSSL's reason ("ee key too small") is terse: the findings say it in words */
        const char *why = json_string_value(json_array_get(warnings, 0));
        p12_free(p12);
        free(alias);
        job_error(j, 400, "%s: %s%s%s%s", j->name, err, why ? " (" : "", why ? why : "",
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
        else job_error(j, 500, "out of memory");
        json_decref(d);
        json_decref(warnings);
        gw_change_abort(ch); /* frees p12 */
        free(alias);
        return;
    }
    if (gw_secret_dir()) { /* the Secret is the source of truth: a switch here would not last */
        job_error(j, 409,
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
        if (!j->fleet_desc) job_error(j, 500, "out of memory");
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
            job_error(j, 500, "cannot store %s: %s", j->name, err);
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
        job_error(j, 500, "cannot record %s in custom.properties: %s", j->name, err);
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
    job_audit(j, alias_copy, &before, &after, amsg);
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
static int request_password(struct api_job *j, const struct http_request *r, char **pw)
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
        job_error(j, 400,
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
        job_error(j, 500, "out of memory");
    } else if (fs_read_entry(gw_paths.ssl_dir, j->name, MAX_STORED, &data, &len, err,
                             sizeof err) != 0) {
        if (errno == ENOENT)
            job_error(j, 404, "No certificate file named %s; GET list shows the stored files.",
                      j->name);
        else if (errno == ELOOP || errno == EINVAL || errno == EPERM)
            job_error(j, 403, "%s", err);
        else
            job_error(j, 500, "%s", err);
    } else if (file_version(path, id) != 0) {
        job_error(j, 404, "No certificate file named %s (it was deleted meanwhile).", j->name);
    } else if (request_password(j, r, pw) == 0) {
        if (p12_parse(data, len, *pw, j->name, p12, err, sizeof err) != P12_OK)
            job_error(j, 400, "%s", err);
        else if (file_version(path, &after) != 0)
            job_error(j, 404, "No certificate file named %s (it was deleted meanwhile).",
                      j->name);
        else if (!fs_same_version(id, &after))
            job_error(j, 409, "%s was replaced while it was being read; try again.", j->name);
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
        job_error(j, 500, "out of memory");
    else if (file_version(path, &now) != 0)
        job_error(j, 404, "no certificate file named %s (it was deleted meanwhile)", j->name);
    else if (!fs_same_version(id, &now))
        job_error(j, 409, "%s was replaced while it was being activated; try again", j->name);
    else
        rc = 0;
    free(path);
    return rc;
}

/* The certificate [acme] keeps is changed only by the ACME client. */
static int refuse_acme(struct api_job *j, const char *what)
{
    job_error(j, 403,
              "%s is the certificate that [acme] obtains for its domains and cannot be %s; "
              "use another name, or remove [acme] from custom.properties first",
              j->name, what);
    return -1;
}

static int refuse_active(struct api_job *j)
{
    job_error(j, 403,
              "%s is the active certificate file and cannot be replaced; upload the new "
              "certificate under another name (it is activated at once), then delete %s",
              j->name, j->name);
    return -1;
}

static void op_upload_fleet(struct api_job *j, const struct http_request *r, struct p12_file *p12,
                            const char *pw, const void *data, size_t len);

/* The key derivation (p12_parse) runs without gw_lock; under it only what depends on
 * the live state: the name is still not the active file, the switch, the writes. */
static void op_upload(struct api_job *j, const struct http_request *r)
{
    if (r->body_len == 0) {
        job_error(j, 400, "%s: the body is empty; send the PKCS#12 file (curl -T file.p12)",
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
        refuse_active(j);
        return;
    }
    char err[1024];
    /* the name must not be a symbolic link (or anything else than our own file) */
    if (fs_check_entry(gw_paths.ssl_dir, j->name, err, sizeof err) != 0 && errno != ENOENT) {
        job_error(j, 403, "%s", err);
        return;
    }
    if (fleet_sync_on() && !j->dry && r->body_len > API_FLEET_MAX_VALUE) {
        job_error(j, 413,
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
        job_error(j, 500, "out of memory");
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
            job_error(j, st, "%s", st == 500 && !j->pre_warnings ? "out of memory" : err);
            secret_free(pw);
            return;
        }
        data = der;
        j->pem = 1;
    }
    if (p12_parse(data, len, pw, j->name, &p12, err, sizeof err) != P12_OK) {
        job_error(j, 400, "%s", err);
    } else if (fleet_sync_on() && !j->dry) {
        op_upload_fleet(j, r, p12, pw, data, len);
    } else {
        gw_lock();
        if (gw_is_active_name(j->name)) {
            p12_free(p12);
            refuse_active(j);
        } else {
            switch_to(j, p12, pw, data, len);
        }
        gw_unlock();
    }
    secret_free(pw);
    p12_der_free(der, len);
}

/* ----- on a fleet member: through etcd (api_fleet.c) ----- */

/* The answer of api_fleet_put/delete (status st) in j, and the audit line of a success. */
static void fleet_answer(struct api_job *j, struct api_fleet *f, int st, const char *done)
{
    if (st == 200 || st == 202) {
        char amsg[700];
        snprintf(amsg, sizeof amsg, "%s %s through etcd at revision %lld%s", done, j->name,
                 (long long)f->revision, st == 202 ? " (not yet applied everywhere)" : "");
        int status = st;
        j->status = 200; /* the audit line records a success */
        gw_lock();
        job_audit(j, j->fleet_alias, NULL, NULL, amsg);
        gw_unlock();
        j->status = status;
    }
    if (st == 200 && j->op == OP_DELETE) { /* as on a single node: no body */
        j->status = 200;
        j->ctype = NULL;
        j->body = NULL;
    } else if (st == 200 || st == 202) {
        j->status = st;
        j->ctype = "application/json";
        j->body = api_fleet_body(f, st, j->fleet_desc);
        if (!j->body) job_error(j, 500, "out of memory; the change was made (revision %lld)",
                                (long long)f->revision);
    } else {
        job_error(j, st, "%s", f->msg);
        j->extra = f->extra;
    }
}

/* The fleet's active record names j->name: it cannot be replaced or deleted. */
static int fleet_active_is(const struct api_fleet *f, const struct api_job *j)
{
    return strcmp(f->active_name, j->name) == 0;
}

static void op_upload_fleet(struct api_job *j, const struct http_request *r, struct p12_file *p12,
                            const char *pw, const void *data, size_t len)
{
    struct api_fleet f;
    if (api_fleet_begin(&f, j->name, 0) < 0) {
        p12_free(p12);
        fleet_answer(j, &f, f.status, NULL);
    } else if (fleet_active_is(&f, j)) {
        p12_free(p12);
        refuse_active(j);
    } else {
        gw_lock();
        switch_to(j, p12, pw, data, len); /* validates only */
        gw_unlock();
        if (j->fleet_desc)
            fleet_answer(j, &f,
                         api_fleet_put(&f, j->name, data, len, pw, j->fleet_alias,
                                       j->wait_all_ms),
                         j->pem ? "uploaded (PEM bundle) and activated" : "uploaded and activated");
    }
    api_fleet_end(&f);
    (void)r;
}

static void op_activate_fleet(struct api_job *j, const struct http_request *r)
{
    struct api_fleet f;
    struct p12_file *p12 = NULL;
    char *pw = NULL, err[1024];
    if (api_fleet_begin(&f, j->name, 1) < 0) {
        fleet_answer(j, &f, f.status, NULL);
    } else if (!f.cert) {
        job_error(j, 404, "No certificate file named %s in the fleet (%s); GET list shows the "
                  "stored files.", j->name, f.cert_key);
    } else if (request_password(j, r, &pw) == 0) {
        if (p12_parse(f.cert, f.cert_len, pw, j->name, &p12, err, sizeof err) != P12_OK) {
            job_error(j, 400, "%s", err);
        } else {
            gw_lock();
            switch_to(j, p12, pw, NULL, 0); /* validates only (or a dry run) */
            gw_unlock();
            if (j->fleet_desc)
                fleet_answer(j, &f,
                             api_fleet_put(&f, j->name, NULL, 0, pw, j->fleet_alias,
                                           j->wait_all_ms),
                             "activated");
        }
    }
    secret_free(pw);
    api_fleet_end(&f);
}

static void op_delete_fleet(struct api_job *j)
{
    struct api_fleet f;
    int st = api_fleet_remove(&f, j->name, acme_owns_file(j->name), j->wait_all_ms);
    fleet_answer(j, &f, st, "deleted");
    api_fleet_end(&f);
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
        op_activate_fleet(j, r);
        return;
    }
    if (open_stored(j, r, &p12, &pw, &id) != 0) return;
    gw_lock();
    if (still_same(j, &id) == 0)
        switch_to(j, p12, pw, NULL, 0);
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
        job_error(j, 404, "No certificate file named %s; GET list shows the stored files.",
                  j->name);
    } else if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) { /* a link goes, not its target */
        job_error(j, 403, "%s in %s is not a file; remove it by hand", j->name, gw_paths.ssl_dir);
    } else if (gw_is_active_name(j->name)) {
        job_error(j, 403,
                  "%s is the active certificate file and cannot be deleted; activate another "
                  "certificate first",
                  j->name);
    } else if (acme_owns_file(j->name)) {
        refuse_acme(j, "deleted");
    } else if (fs_unlink_durable(path, err, sizeof err) != 0) {
        job_error(j, 500, "cannot delete %s: %s", j->name, err);
    } else {
        metrics_certs_drop(j->name);
        certmeta_remove(j->name);
        log_info("certificate API: deleted %s", j->name);
        j->status = 200;
        j->ctype = NULL;
        j->body = NULL;
        char amsg[400];
        snprintf(amsg, sizeof amsg, "deleted %s", j->name);
        job_audit(j, NULL, NULL, NULL, amsg); /* under gw_lock (work_cb) */
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
        job_error(j, 500, "cannot read %s: %s", gw_paths.ssl_dir, strerror(errno));
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

/* In the thread pool. Upload, activate and describe take gw_lock themselves, after
 * their key derivation; delete and list are cheap and run under it. */
static void work_cb(uv_work_t *w)
{
    struct api_job *j = w->data;
    if (atomic_load_explicit(&j->gone, memory_order_acquire)) {
        j->skipped = 1;
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
            op_delete_fleet(j);
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
        job_error(j, 500, "unknown operation");
    }
    /* a refusal (or a failure) of a change: recorded here, after gw_lock */
    if ((j->op == OP_UPLOAD || j->op == OP_ACTIVATE || j->op == OP_DELETE) && !j->dry &&
        !j->audited)
        job_audit(j, NULL, NULL, NULL, NULL);
}

static enum metrics_certop metrics_op(enum op op)
{
    switch (op) {
    case OP_UPLOAD: return MO_UPLOAD;
    case OP_DELETE: return MO_DELETE;
    case OP_ACTIVATE: return MO_ACTIVATE;
    case OP_DESCRIBE: return MO_DESCRIBE;
    default: return MO_LIST;
    }
}

static void after_cb(uv_work_t *w, int status)
{
    struct api_job *j = w->data;
    struct http_exchange *x = j->x;
    char *body = j->body;
    j->body = NULL;
    j->queued = 0;
    atomic_fetch_sub(&api_jobs, 1);
    if (j->skipped || status == UV_ECANCELED)
        log_info("certificate API: %s%s%s not started: its client has gone", op_names[j->op],
                 j->name[0] ? " " : "", j->name);
    if (status != 0 || j->skipped)
        respond_error(x, 503, "Retry-After: 1\r\n",
                      "The certificate operation was not started: the client closed its "
                      "connection.");
    else
        http_respond(x, j->status, j->ctype, j->extra, body ? body : "", body ? strlen(body) : 0);
    if (!j->skipped && status == 0 && j->op != OP_NONE)
        metrics_inc(M_CERT_OP + (unsigned)metrics_op(j->op) * 2 + (j->status >= 300));
    free(body); /* j itself went with the exchange */
}

/* ----- the event-loop side ----- */

static void job_free(void *p)
{
    struct api_job *j = p;
    json_decref(j->pre_warnings);
    json_decref(j->fleet_desc);
    free(j->fleet_alias);
    free(j->body);
    free(j);
}

/* The client has gone or closed its side (http.h: on_abort). A queued job is taken off the queue; one that
 * has already started runs to its end (its answer goes nowhere). */
static void on_abort(struct http_exchange *x)
{
    struct api_job *j = http_route(x)->ctx;
    if (!j) return;
    atomic_store_explicit(&j->gone, 1, memory_order_release);
    if (j->queued) uv_cancel((uv_req_t *)&j->work); /* after_cb then gets UV_ECANCELED */
}

static unsigned queue_limit(struct http_exchange *x)
{
    const struct gw_snap *snap = http_worker(x)->snap;
    return snap && snap->api_queue ? snap->api_queue : 8;
}

static void respond_busy(struct http_exchange *x, unsigned limit)
{
    char hdr[40];
    snprintf(hdr, sizeof hdr, "Retry-After: %d\r\n", API_RETRY_AFTER_S);
    respond_error(x, 503, hdr,
                  "The gateway is already running %u certificate operations ([certgate] "
                  "api-queue); try again in %d seconds.",
                  limit, API_RETRY_AFTER_S);
}

/* The audit line of a change refused on the loop before any job exists (a bad name or
 * dryRun value): written by the audit thread, as the loop must not wait for an fsync.
 * op NULL: not a change, nothing recorded. */
static void audit_early(struct http_exchange *x, const char *op, const char *name,
                        const char *token_id, const char *msg)
{
    struct api_audit a = {op, name, NULL, token_id, http_peer(x), msg, NULL, NULL, 400};
    if (op) api_audit_record(&a, 1);
}

/* ?wait=all|local and ?timeout=S of a change: *ms 0 (this member only; also the default),
 * or how long wait=all waits for every live fleet member. A single node accepts both:
 * it has nobody else to wait for. -1 with the 400's sentence for a value that is not
 * understood: a misspelt wait must not silently give a shorter wait. */
static int wait_param(const char *query, unsigned *ms, char *msg, size_t msglen)
{
    char v[16], t[16];
    int has_wait = auth_query_param(query, "wait", v, sizeof v) == 0;
    int has_timeout = auth_query_param(query, "timeout", t, sizeof t) == 0;
    *ms = 0;
    if (has_wait && strcmp(v, "all") != 0 && strcmp(v, "local") != 0) {
        snprintf(msg, msglen, "wait must be all (every live fleet member has applied the "
                 "change) or local (the default).");
        return -1;
    }
    int all = has_wait && strcmp(v, "all") == 0;
    if (has_timeout && !all) {
        snprintf(msg, msglen, "timeout goes with wait=all (how long to wait for every live "
                 "fleet member, 1-%d seconds); without wait=all the answer waits for this "
                 "gateway only.", API_FLEET_ALL_WAIT_MAX_S);
        return -1;
    }
    unsigned s = API_FLEET_ALL_WAIT_MS / 1000;
    if (has_timeout) {
        char *end;
        errno = 0;
        unsigned long l = strtoul(t, &end, 10);
        if (t[0] < '0' || t[0] > '9' || *end || errno || l < 1 || l > API_FLEET_ALL_WAIT_MAX_S) {
            snprintf(msg, msglen, "timeout must be a whole number of seconds from 1 to %d "
                     "(default %d): how long wait=all waits for every live fleet member.",
                     API_FLEET_ALL_WAIT_MAX_S, API_FLEET_ALL_WAIT_MS / 1000);
            return -1;
        }
        s = (unsigned)l;
    }
    if (all) *ms = s * 1000;
    return 0;
}

static void on_headers(struct http_exchange *x)
{
    struct api_job *j = NULL;
    const struct http_request *r = http_req(x);
    const char *env, *rest;
    size_t envlen;
    api_split_path(r->path, &env, &envlen, &rest);
    char envbuf[65];
    snprintf(envbuf, sizeof envbuf, "%.*s", (int)(envlen < 64 ? envlen : 64), env);
    if (envlen > 64) envbuf[0] = '\0'; /* matches no token */

    /* an address with too many failed authentications gets 429 whatever it sends */
    struct auth_throttle *at = auth_throttle_shared();
    const char *peer = http_peer(x);
    unsigned retry = 0;
    if (at && auth_throttle_check(at, peer, auth_now_ms(), &retry)) {
        char hdr[48];
        snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", retry);
        respond_error(x, 429, hdr,
                      "Too many failed authentications from your address; try again in %u "
                      "seconds.",
                      retry);
        return;
    }
    const char *authz = http_header(r, "Authorization");
    char qtok[256] = "", msg[300], token_id[64];
    const char *qt = auth_query_param(r->query, "api-token", qtok, sizeof qtok) == 0 ? qtok : NULL;
    enum auth_result ar =
        auth_check(gw_paths.config_dir, authz, qt, envbuf, AUTH_SCOPE_CERTS, msg, sizeof msg);
    auth_token_id(authz, qt, token_id, sizeof token_id);
    explicit_bzero(qtok, sizeof qtok);
    if (ar != AUTH_OK) {
        if (ar != AUTH_ERROR) metrics_inc(M_TOKEN_FAIL);
        if (at && ar != AUTH_ERROR) auth_throttle_failed(at, peer, auth_now_ms());
        respond_error(x, auth_status(ar), NULL, "%s", msg);
        return;
    }

    /* what is asked */
    enum op op = OP_NONE;
    const char *name = NULL;
    size_t namelen = 0;
    const char *allow = NULL;
    if (!rest || !*rest) {
        int base = (int)(rest ? (rest - r->path - 1) : (long)strlen(r->path));
        respond_error(x, 404, NULL,
                      "No such endpoint: use %.*s/list or %.*s/{name} (PUT, DELETE), "
                      "{name}/activate, {name}/list.",
                      base, r->path, base, r->path);
        return;
    }
    const char *slash = strchr(rest, '/');
    if (!slash && strcmp(rest, "list") == 0) {
        op = r->method == HTTP_GET || r->method == HTTP_HEAD ? OP_LIST : OP_NONE;
        allow = "GET, HEAD";
    } else {
        name = rest;
        namelen = slash ? (size_t)(slash - rest) : strlen(rest);
        const char *why = api_name_invalid(name, namelen);
        if (why) {
            char m[400];
            snprintf(m, sizeof m, "Invalid certificate name '%.*s': %s.",
                     (int)(namelen > 200 ? 200 : namelen), name, why);
            const char *sub = slash ? slash + 1 : "";
            audit_early(x, r->method == HTTP_PUT && !slash      ? "upload"
                           : r->method == HTTP_DELETE && !slash ? "delete"
                           : r->method == HTTP_POST && strcmp(sub, "activate") == 0
                               ? "activate"
                               : NULL,
                        NULL, token_id, m);
            respond_error(x, 400, NULL, "%s", m);
            return;
        }
        const char *sub = slash ? slash + 1 : NULL;
        if (!sub) {
            op = r->method == HTTP_PUT ? OP_UPLOAD : r->method == HTTP_DELETE ? OP_DELETE : OP_NONE;
            allow = "PUT, DELETE";
        } else if (strcmp(sub, "activate") == 0) {
            op = r->method == HTTP_POST ? OP_ACTIVATE : OP_NONE;
            allow = "POST";
        } else if (strcmp(sub, "list") == 0) {
            op = r->method == HTTP_GET || r->method == HTTP_POST || r->method == HTTP_HEAD ? OP_DESCRIBE : OP_NONE;
            allow = "GET, POST, HEAD";
        } else if (namelen == 4 && memcmp(name, "acme", 4) == 0 && api_acme(x, sub) == 0) {
            return; /* acme/status, acme/renew (api_acme.c) */
        } else {
            respond_error(x, 404, NULL,
                          "No such endpoint: %.200s (use {name}, {name}/activate or "
                          "{name}/list).",
                          r->path);
            return;
        }
    }
    if (op == OP_NONE) {
        respond_405(x, allow);
        return;
    }
    int dry = 0;
    char dryv[16];
    if ((op == OP_UPLOAD || op == OP_ACTIVATE) &&
        auth_query_param(r->query, "dryRun", dryv, sizeof dryv) == 0) {
        /* a misspelt value must not turn a check into a live switch */
        if (strcmp(dryv, "true") != 0 && strcmp(dryv, "false") != 0) {
            char n[API_MAX_NAME + 1];
            snprintf(n, sizeof n, "%.*s", (int)namelen, name ? name : "");
            audit_early(x, op_names[op], n, token_id, "dryRun must be true or false.");
            respond_error(x, 400, NULL, "dryRun must be true or false.");
            return;
        }
        dry = strcmp(dryv, "true") == 0;
    }
    unsigned wait_all_ms = 0;
    if (op == OP_UPLOAD || op == OP_ACTIVATE || op == OP_DELETE) {
        char m[300], n[API_MAX_NAME + 1];
        if (wait_param(r->query, &wait_all_ms, m, sizeof m) < 0) {
            snprintf(n, sizeof n, "%.*s", (int)namelen, name ? name : "");
            audit_early(x, op_names[op], n, token_id, m);
            respond_error(x, 400, NULL, "%s", m);
            return;
        }
    }
    unsigned limit = queue_limit(x);
    if (atomic_load(&api_jobs) >= limit) { /* full now: do not even read the body */
        respond_busy(x, limit);
        return;
    }
    j = calloc(1, sizeof *j);
    if (!j) {
        respond_error(x, 500, NULL, "The gateway is out of memory; try again.");
        return;
    }
    j->x = x;
    j->op = op;
    j->dry = dry;
    j->wait_all_ms = wait_all_ms;
    snprintf(j->token_id, sizeof j->token_id, "%s", token_id);
    snprintf(j->client, sizeof j->client, "%s", peer ? peer : "");
    if (name) snprintf(j->name, sizeof j->name, "%.*s", (int)namelen, name);
    j->work.data = j;
    /* the exchange owns the job from here on */
    struct http_route *rt = http_route(x);
    rt->ctx = j;
    rt->on_free = job_free;
    rt->on_abort = on_abort;
}

static void handle(struct http_exchange *x)
{
    struct api_job *j = http_route(x)->ctx;
    if (!j) {
        respond_error(x, 500, NULL, "Internal error: the request has no job; try again.");
        return;
    }
    unsigned limit = queue_limit(x);
    if (atomic_fetch_add(&api_jobs, 1) >= limit) {
        atomic_fetch_sub(&api_jobs, 1);
        respond_busy(x, limit);
        return;
    }
    j->queued = 1;
    if (uv_queue_work(http_loop(x), &j->work, work_cb, after_cb) != 0) {
        j->queued = 0;
        atomic_fetch_sub(&api_jobs, 1);
        respond_error(x, 503, "Retry-After: 1\r\n",
                      "The certificate operation cannot be queued; try again.");
    }
}

void api_route(const struct http_request *req, const struct gw_snap *snap, struct http_route *out)
{
    out->handle = handle;
    out->on_headers = on_headers;
    out->on_error = api_http_error;
    out->wipe = 1; /* tokens and passwords */
    out->max_body = req->method == HTTP_PUT ? snap->max_upload_bytes : SMALL_BODY;
}
