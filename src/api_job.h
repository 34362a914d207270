/* api_job.h - inside the certificate API (api.c, api_ops.c, api_fleet_ops.c), not for
 * other modules: one request's job and what its operations share.
 *
 * api.c (the event-loop side) parses and authenticates a request, makes its job and queues
 * it in libuv's thread pool; api_job_run (api_ops.c) runs it there: the single-node
 * operations in api_ops.c, a fleet member's writes in api_fleet_ops.c (through etcd,
 * api_fleet.c); after_cb (api.c) sends the answer the job made. A job is used by the loop
 * thread until it is queued, then by one pool thread until after_cb: no lock of its own.
 * Every function here runs in the thread pool unless it says otherwise. */
#ifndef CERTGATE_API_JOB_H
#define CERTGATE_API_JOB_H

#include "api.h"

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

struct api_fleet;
struct gw_served;
struct p12_file;

enum api_op { OP_NONE, OP_LIST, OP_UPLOAD, OP_DELETE, OP_ACTIVATE, OP_DESCRIBE };
/* "list", "upload", ... by enum api_op (the audit line's and the metrics' names) */
extern const char *const api_op_names[];

/* A job belongs to its exchange (route ctx, freed by job_free), which lives until the
 * job's answer is given, even when the client has gone (http.h). */
struct api_job {
    struct http_exchange *x;
    uv_work_t work;
    enum api_op op;
    char name[API_MAX_NAME + 1];
    int queued;          /* counted in api_jobs; loop thread only */
    _Atomic int gone;    /* the client left: a job not started yet is not started */
    int skipped;         /* set by work_cb when it did not start the job */
    int dry;             /* ?dryRun=true: validate and describe, store and switch nothing */
    json_t *pre_warnings; /* found before api_job_switch_to (a PEM upload's chain order); owned */
    /* the audit line (upload, activate, delete; dry runs are not recorded) */
    char token_id[64];   /* the token's public ID, never its secret */
    char client[64];     /* the client's address */
    char msg[600];       /* the refusal's sentence */
    int audited;         /* the line is written (a success, under gw_lock) */
    int pem;             /* the upload was a PEM bundle */
    /* a fleet member (fleet_sync_on): the write goes to etcd (api_fleet.c) */
    unsigned wait_all_ms; /* ?wait=all[&timeout=S]: how long (0: this member only) */
    json_t *fleet_desc;  /* api_job_switch_to validated the change: the answer's description */
    char *fleet_alias;   /* the alias to record (NULL: the first key entry) */
    const char *extra;   /* header lines of the answer (Retry-After) */
    /* ?wait=all after the commit: one short pool job per look at the member keys, a timer
     * on the exchange's loop between two (no thread is held while waiting) */
    struct api_fleet *fleet; /* the write waiting for the others; pool side while queued */
    const char *fleet_done;  /* what the audit line says was done */
    uv_timer_t *timer;       /* malloc'd, freed by its close callback; loop thread only */
    int polling;             /* fleet was set when the last job ended; loop thread only */
    /* result, made in the thread pool */
    int status;
    char *body;
    const char *ctype;
};

/* Dynatrace's error envelope {"error":{"code":N,"message":"..."}}, malloc'd (api.c; any
 * thread). */
char *api_error_body(int status, const char *msg);

/* Runs the job's operation (after the loop has checked that its client is still there),
 * leaving the answer in j->status, body, ctype, extra, and recording the audit line of a
 * change; or, for a ?wait=all write once committed and applied here, leaving j->fleet set:
 * the loop runs it again (api_fleet_op_poll) after API_FLEET_POLL_MS, until it answers. */
void api_job_run(struct api_job *j);

/* The job's answer: an error in Dynatrace's envelope (its sentence also in j->msg). */
void api_job_error(struct api_job *j, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The audit line of j: a success (status 200, under gw_lock: lines are in the order of
 * the changes) or a refusal (before == after: nothing changed). Never on a worker's loop:
 * audit_record waits for its fsync. */
void api_job_audit(struct api_job *j, const char *alias, const struct gw_served *before,
                   const struct gw_served *after, const char *msg);

/* Switches to p12 (taken over) as j->name: prepare, optional file write (data, len),
 * config record, publish; the caller holds gw_lock. On any failure nothing live or on
 * disk is changed (the answer is in j). A dry run only describes; on a fleet member it
 * only validates: j->fleet_desc is the description to answer with and j->fleet_alias the
 * alias to record. */
void api_job_switch_to(struct api_job *j, struct p12_file *p12, const char *password,
                       const void *data, size_t len);

/* The password of an activate/describe request: X-Password, else {"password":...} in the
 * body whatever its Content-Type, else "" (an ACME file's own one without a body). 0 with
 * *pw (secret_free), or -1 with the answer (400, 500) in j. */
int api_job_password(struct api_job *j, const struct http_request *r, char **pw);

/* 403: j->name is the active certificate file; returns -1. */
int api_job_refuse_active(struct api_job *j);

/* ----- a fleet member's writes (api_fleet_ops.c): through etcd ----- */

/* An upload whose file p12 (taken over; opened with pw from data, len) has been parsed:
 * the fleet's rules, api_job_switch_to's checks, then api_fleet_put. */
void api_fleet_op_upload(struct api_job *j, const struct http_request *r, struct p12_file *p12,
                         const char *pw, const void *data, size_t len);

/* An activation of the fleet's file j->name (its bytes read from etcd). */
void api_fleet_op_activate(struct api_job *j, const struct http_request *r);

/* A delete with the fleet's rules (api_fleet_remove). */
void api_fleet_op_delete(struct api_job *j);

/* One look of the ?wait=all of j->fleet (api_fleet_poll_all; last: the client has gone):
 * when it ends, the answer and the audit line, and j->fleet is freed and NULL. */
void api_fleet_op_poll(struct api_job *j, int last);

/* Frees j->fleet when a job ends before its wait did (loop thread, at job_free). */
void api_fleet_op_drop(struct api_job *j);

#endif
