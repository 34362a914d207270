/* api_fleet_ops.c - a fleet member's certificate API writes, in the thread pool: the
 * local checks of api_ops.c, then one etcd transaction (api_fleet.c); see api_job.h. */
#include "api_job.h"

#include "acme.h"
#include "api_fleet.h"
#include "gw.h"
#include "p12.h"
#include "secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The answer of api_fleet_put/delete (status st) in j, and the audit line of a success.
 * API_FLEET_POLL: f moves to j->fleet (the caller's f is left empty) for the loop's
 * next look at the other members. */
static void fleet_answer(struct api_job *j, struct api_fleet *f, int st, const char *done)
{
    if (st == API_FLEET_POLL) {
        struct api_fleet *w = malloc(sizeof *w);
        if (w) {
            *w = *f;
            free(w->cert); /* not needed any more */
            w->cert = NULL;
            f->e = NULL;
            f->cert = NULL;
            f->behind = NULL;
            j->fleet = w;
            j->fleet_done = done;
            return;
        }
        st = api_fleet_poll_all(f, 1); /* no memory to wait: answer with one look */
    }
    if (st == 200 || st == 202) {
        char amsg[700];
        snprintf(amsg, sizeof amsg, "%s %s through etcd at revision %lld%s", done, j->name,
                 (long long)f->revision, st == 202 ? " (not yet applied everywhere)" : "");
        int status = st;
        j->status = 200; /* the audit line records a success */
        gw_lock();
        api_job_audit(j, j->fleet_alias, NULL, NULL, amsg);
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
        if (!j->body)
            api_job_error(j, 500, "out of memory; the change was made (revision %lld)",
                          (long long)f->revision);
    } else {
        api_job_error(j, st, "%s", f->msg);
        j->extra = f->extra;
    }
}

/* The fleet's active record names j->name: it cannot be replaced or deleted. */
static int fleet_active_is(const struct api_fleet *f, const struct api_job *j)
{
    return strcmp(f->active_name, j->name) == 0;
}

void api_fleet_op_upload(struct api_job *j, const struct http_request *r, struct p12_file *p12,
                         const char *pw, const void *data, size_t len)
{
    struct api_fleet f;
    if (api_fleet_begin(&f, j->name, 0) < 0) {
        p12_free(p12);
        fleet_answer(j, &f, f.status, NULL);
    } else if (fleet_active_is(&f, j)) {
        p12_free(p12);
        api_job_refuse_active(j);
    } else {
        gw_lock();
        api_job_switch_to(j, p12, pw, data, len); /* validates only */
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

void api_fleet_op_activate(struct api_job *j, const struct http_request *r)
{
    struct api_fleet f;
    struct p12_file *p12 = NULL;
    char *pw = NULL, err[1024];
    if (api_fleet_begin(&f, j->name, 1) < 0) {
        fleet_answer(j, &f, f.status, NULL);
    } else if (!f.cert) {
        api_job_error(j, 404,
                      "No certificate file named %s in the fleet (%s); GET list shows the "
                      "stored files.",
                      j->name, f.cert_key);
    } else if (api_job_password(j, r, &pw) == 0) {
        if (p12_parse(f.cert, f.cert_len, pw, j->name, &p12, err, sizeof err) != P12_OK) {
            api_job_error(j, 400, "%s", err);
        } else {
            gw_lock();
            api_job_switch_to(j, p12, pw, NULL, 0); /* validates only (or a dry run) */
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

void api_fleet_op_delete(struct api_job *j)
{
    struct api_fleet f;
    int st = api_fleet_remove(&f, j->name, acme_owns_file(j->name), j->wait_all_ms);
    fleet_answer(j, &f, st, "deleted");
    api_fleet_end(&f);
}

void api_fleet_op_poll(struct api_job *j, int last)
{
    struct api_fleet *f = j->fleet;
    int st = api_fleet_poll_all(f, last);
    if (st == API_FLEET_POLL) return;
    j->fleet = NULL;
    fleet_answer(j, f, st, j->fleet_done);
    api_fleet_end(f);
    free(f);
}

void api_fleet_op_drop(struct api_job *j)
{
    if (!j->fleet) return;
    api_fleet_end(j->fleet);
    free(j->fleet);
    j->fleet = NULL;
}
