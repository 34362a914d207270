/* api_fleet.c - a fleet member's certificate writes as etcd transactions (see api_fleet.h). */
#include "api_fleet.h"

#include "auth.h"
#include "err.h"
#include "etcd.h"
#include "fleet_sync.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RETRY_503 "Retry-After: 2\r\n"

static int fail(struct api_fleet *f, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct api_fleet *f, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
    f->status = status;
    f->extra = status == 503 ? RETRY_503 : NULL;
    return status;
}

static int unreachable(struct api_fleet *f, const char *what, const char *err)
{
    fail(f, 503,
         "%s: etcd did not answer, nothing was changed; this gateway keeps serving its "
         "cached state; try again when etcd is back (%s)",
         what, err);
    return -1;
}

/* Reads one key: its mod_revision (0 when absent) and, when bytes is not NULL, its value. */
static int read_key(struct api_fleet *f, const char *key, int64_t *rev, unsigned char **bytes,
                    size_t *len, char *err, size_t errlen)
{
    struct etcd_range_result r;
    if (etcd_range(f->e, key, 0, 0, &r, err, errlen) < 0) return -1;
    *rev = r.n ? r.kvs[0].mod_revision : 0;
    if (bytes && r.n) {
        *bytes = r.kvs[0].value; /* taken over */
        *len = r.kvs[0].value_len;
        r.kvs[0].value = NULL;
    }
    if (!bytes && r.n && strcmp(key, f->active_key) == 0) {
        json_t *j = json_loadb((const char *)r.kvs[0].value, r.kvs[0].value_len, 0, NULL);
        const char *n = json_string_value(json_object_get(j, "name"));
        snprintf(f->active_name, sizeof f->active_name, "%s", n ? n : "");
        json_decref(j);
    }
    etcd_range_free(&r);
    return 0;
}

int api_fleet_begin(struct api_fleet *f, const char *name, int want_bytes)
{
    char err[1024];
    memset(f, 0, sizeof *f);
    if (fleet_sync_names(f->under, sizeof f->under, f->env, sizeof f->env) < 0) {
        fail(f, 503,
             "%s: this member has not read the fleet state from etcd yet (etcd unreachable "
             "since it started, or no state: certgate fleet init makes it); nothing was "
             "changed",
             name);
        return -1;
    }
    snprintf(f->cert_key, sizeof f->cert_key, "%s%s/certs/%s", f->under, f->env, name);
    snprintf(f->active_key, sizeof f->active_key, "%s%s/active", f->under, f->env);
    if (fleet_sync_open(&f->e, err, sizeof err) < 0) {
        fail(f, 500, "%s: %s", name, err);
        return -1;
    }
    if (read_key(f, f->active_key, &f->active_rev, NULL, NULL, err, sizeof err) < 0 ||
        read_key(f, f->cert_key, &f->cert_rev, want_bytes ? &f->cert : NULL, &f->cert_len, err,
                 sizeof err) < 0)
        return unreachable(f, name, err);
    return 0;
}

void api_fleet_end(struct api_fleet *f)
{
    etcd_close(f->e);
    f->e = NULL;
    free(f->cert);
    f->cert = NULL;
    json_decref(f->behind);
    f->behind = NULL;
}

/* After a compare failed: which of the keys changed since they were read. */
static int conflict(struct api_fleet *f, const char *name, const char *what)
{
    char err[512];
    int64_t c = f->cert_rev, a = f->active_rev;
    int known = read_key(f, f->cert_key, &c, NULL, NULL, err, sizeof err) == 0 &&
                read_key(f, f->active_key, &a, NULL, NULL, err, sizeof err) == 0;
    char which[2000];
    if (known && c != f->cert_rev && a != f->active_rev)
        snprintf(which, sizeof which, "%s and %s were", f->cert_key, f->active_key);
    else if (known && c != f->cert_rev)
        snprintf(which, sizeof which, "%s was", f->cert_key);
    else if (known && a != f->active_rev)
        snprintf(which, sizeof which, "%s was", f->active_key);
    else
        snprintf(which, sizeof which, "%s or %s was", f->cert_key, f->active_key);
    log_info("certificate API: %s %s refused: %s changed by another request meanwhile", what,
             name, which);
    return fail(f, 409,
                "%s: not %s: %s changed by another request (on this or another member) "
                "while this one was being checked; nothing was changed by this request; "
                "read the state again (GET list) and retry if still wanted",
                name, what, which);
}

/* After the commit at f->revision: this member; with wait_all_ms, API_FLEET_POLL (the
 * caller then looks at the others with api_fleet_poll_all).
 *
 * A change committed in etcd that this member could not apply answers 202, not 500: the
 * write was accepted and is the fleet's state now (the other members apply it from etcd,
 * a restart here retries it); a 5xx would say it failed and invite a retry that can only
 * be refused (the name is the fleet's active file) or conflict. The message and "behind"
 * say that this member keeps serving what it had, and why. */
static int wait_applied(struct api_fleet *f, const char *name, const char *what,
                        unsigned wait_all_ms)
{
    char err[1024];
    if (fleet_sync_wait_applied(f->revision, API_FLEET_LOCAL_WAIT_MS) < 0) {
        json_decref(f->behind);
        f->behind = json_pack("[{s:s,s:I}]", "member", fleet_sync_member_id(), "applied",
                              (json_int_t)fleet_sync_applied());
        return fail(f, 202,
                    "%s: %s in etcd at revision %lld, but this member (%s) has not applied it "
                    "within %u s (it has revision %lld; see its log and certgate fleet "
                    "status); the other members apply it from etcd",
                    name, what, (long long)f->revision, fleet_sync_member_id(),
                    API_FLEET_LOCAL_WAIT_MS / 1000, (long long)fleet_sync_applied());
    }
    if (fleet_sync_outcome(f->revision, err, sizeof err) < 0) {
        json_decref(f->behind);
        f->behind = json_pack("[{s:s,s:I,s:s,s:b}]", "member", fleet_sync_member_id(),
                              "applied", (json_int_t)fleet_sync_applied(), "error", err,
                              "failed", 1);
        return fail(f, 202,
                    "%s: %s in etcd at revision %lld, but this member (%s) could not apply it "
                    "and keeps serving what it had: %s; the other members apply it from etcd "
                    "(certgate fleet status shows each member's state)",
                    name, what, (long long)f->revision, fleet_sync_member_id(), err);
    }
    if (!wait_all_ms) return 200;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->what = what;
    f->wait_all_ms = wait_all_ms;
    f->deadline_ms = auth_now_ms() + wait_all_ms;
    return API_FLEET_POLL;
}

int api_fleet_poll_all(struct api_fleet *f, int last)
{
    char err[512];
    int failed = 0;
    json_t *now = NULL;
    int behind = fleet_sync_members_behind(f->e, f->revision, &now, &failed, err, sizeof err);
    if (behind >= 0) {
        json_decref(f->behind);
        f->behind = now;
    }
    /* a failure will not get better by waiting */
    if (behind != failed && !last && auth_now_ms() < f->deadline_ms) return API_FLEET_POLL;
    if (behind == 0) return 200;
    if (behind < 0)
        return fail(f, 202,
                    "%s: %s at revision %lld and applied here, but etcd no longer answers to "
                    "say which members have applied it",
                    f->name, f->what, (long long)f->revision);
    if (failed == behind)
        return fail(f, 202,
                    "%s: %s at revision %lld and applied here; %d member%s could not apply it "
                    "and keep%s serving what %s had (see behind: error)",
                    f->name, f->what, (long long)f->revision, failed, failed == 1 ? "" : "s",
                    failed == 1 ? "s" : "", failed == 1 ? "it" : "they");
    return fail(f, 202,
                "%s: %s at revision %lld and applied here; %d member%s not reported it "
                "within %.3g s%s (see behind)",
                f->name, f->what, (long long)f->revision, behind - failed,
                behind - failed == 1 ? " has" : "s have", f->wait_all_ms / 1000.0,
                failed ? ", others could not apply it" : "");
}

/* The transaction with the compares of what begin read. */
static int commit(struct api_fleet *f, const char *name, const char *what,
                  const struct etcd_op *ops, size_t nops, unsigned wait_all_ms)
{
    char err[1024];
    struct etcd_cmp cmps[2] = {{f->cert_key, ETCD_CMP_MOD, f->cert_rev},
                               {f->active_key, ETCD_CMP_MOD, f->active_rev}};
    int ok = 0;
    if (etcd_txn(f->e, cmps, 2, ops, nops, &ok, &f->revision, err, sizeof err) < 0) {
        if (strstr(err, "too large") || strstr(err, "larger than max"))
            return fail(f, 413,
                        "%s: not %s: etcd refuses a request this large (%s); raise etcd's "
                        "--max-request-bytes on every etcd member, or use a smaller file",
                        name, what, err);
        unreachable(f, name, err);
        return 503;
    }
    if (!ok) return conflict(f, name, what);
    log_info("certificate API: %s %s committed to etcd at revision %lld", what, name,
             (long long)f->revision);
    return wait_applied(f, name, what, wait_all_ms);
}

int api_fleet_put(struct api_fleet *f, const char *name, const void *data, size_t len,
                  const char *password, const char *alias, unsigned wait_all_ms)
{
    const char *what = data ? "uploaded" : "activated";
    if (data && len > API_FLEET_MAX_VALUE)
        return fail(f, 413,
                    "%s: not uploaded: the file has %zu bytes, more than the %u a fleet "
                    "member stores in etcd (etcd's request limit, --max-request-bytes, is "
                    "1.5 MiB by default); use a smaller keystore (fewer certificates in the "
                    "chain, no unused entries)",
                    name, len, API_FLEET_MAX_VALUE);
    char *sealed = password && *password ? fleet_sync_seal(f->active_key, password) : NULL;
    if (password && *password && !sealed) return fail(f, 500, "%s: cannot seal the password", name);
    json_t *rec = json_pack("{s:s,s:s?,s:s?}", "name", name, "alias", alias, "password", sealed);
    char *text = rec ? json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(rec);
    free(sealed);
    if (!text) return fail(f, 500, "out of memory");
    struct etcd_op ops[2];
    size_t n = 0;
    if (data) ops[n++] = (struct etcd_op){ETCD_OP_PUT, f->cert_key, data, len, 0, 0};
    ops[n++] = (struct etcd_op){ETCD_OP_PUT, f->active_key, text, strlen(text), 0, 0};
    int st = commit(f, name, what, ops, n, wait_all_ms);
    free(text);
    return st;
}

int api_fleet_delete(struct api_fleet *f, const char *name, unsigned wait_all_ms)
{
    struct etcd_op op = {ETCD_OP_DELETE, f->cert_key, NULL, 0, 0, 0};
    return commit(f, name, "deleted", &op, 1, wait_all_ms);
}

int api_fleet_remove(struct api_fleet *f, const char *name, int acme_owned,
                     unsigned wait_all_ms)
{
    if (api_fleet_begin(f, name, 0) < 0) return f->status;
    if (!f->cert_rev)
        return fail(f, 404, "No certificate file named %s in the fleet (%s); GET list shows "
                    "the stored files.", name, f->cert_key);
    if (strcmp(f->active_name, name) == 0)
        return fail(f, 403, "%s is the active certificate file of the fleet and cannot be "
                    "deleted; activate another certificate first", name);
    if (acme_owned)
        return fail(f, 403, "%s is the certificate that [acme] obtains for its domains and "
                    "cannot be deleted; use another name, or remove [acme] from "
                    "custom.properties first", name);
    return api_fleet_delete(f, name, wait_all_ms);
}

char *api_fleet_body(const struct api_fleet *f, int st, json_t *desc)
{
    json_t *d;
    if (st == 200) {
        d = desc ? json_deep_copy(desc) : json_object();
        if (d) json_object_set_new(d, "revision", json_integer(f->revision));
    } else {
        d = json_pack("{s:i,s:s,s:I,s:O?}", "code", 202, "message", f->msg, "revision",
                      (json_int_t)f->revision, "behind", f->behind);
    }
    char *s = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    return s;
}
