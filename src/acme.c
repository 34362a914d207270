/* acme.c - one ACME order, step by step (RFC 8555 section 7; see acme.h). */
#include "acme.h"

#include "acme_ari.h"
#include "acme_http.h"
#include "acme_jws.h"
#include "acme_store.h"
#include "err.h"
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROBLEM_NS "urn:ietf:params:acme:error:"
#define BADNONCE_RETRIES 20   /* RFC 8555 6.5: retry with the nonce of the error answer */
#define POLL_LIMIT_S 120      /* how long an authorization or order may stay pending */

/* 1 when r is the problem document of type PROBLEM_NS name. */
static int is_problem(const struct acme_resp *r, const char *name)
{
    json_t *j = r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    const char *t = json_string_value(json_object_get(j, "type"));
    int yes = t && strncmp(t, PROBLEM_NS, strlen(PROBLEM_NS)) == 0 &&
              strcmp(t + strlen(PROBLEM_NS), name) == 0;
    json_decref(j);
    return yes;
}

/* "<type>: <detail>" of a problem object (its first subproblem too), into buf. */
static void problem_text(json_t *p, char *buf, size_t len)
{
    const char *type = json_string_value(json_object_get(p, "type"));
    const char *detail = json_string_value(json_object_get(p, "detail"));
    json_t *sub = json_array_get(json_object_get(p, "subproblems"), 0);
    const char *sdetail = json_string_value(json_object_get(sub, "detail"));
    snprintf(buf, len, "%.200s%s%.400s%s%.300s", type ? type : "no problem type",
             detail ? ": " : "", detail ? detail : "", sdetail ? "; " : "",
             sdetail ? sdetail : "");
}

/* An error answer: the sentence (logged by the caller's caller) names the step, the
 * status and the CA's problem document; a Retry-After is kept for the backoff. */
static int fail_answer(struct acme_client *c, const char *url, const struct acme_resp *r,
                       char *err, size_t errlen)
{
    json_t *j = r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
    char text[1024];
    if (json_is_object(j))
        problem_text(j, text, sizeof text);
    else
        snprintf(text, sizeof text, "not a problem document");
    err_set(err, errlen, "%s: %s answered %ld: %s", c->step, url, r->status, text);
    if (r->retry_after >= 0) c->retry_after = r->retry_after;
    json_decref(j);
    return -1;
}

/* err = "<step>: <err>" (a transport failure). */
static int fail_step(struct acme_client *c, char *err, size_t errlen)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", err);
    err_set(err, errlen, "%s: %s", c->step, tmp);
    return -1;
}

static const char *dir_url(struct acme_client *c, const char *name)
{
    return json_string_value(json_object_get(c->dir, name));
}

static int fetch_directory(struct acme_client *c, char *err, size_t errlen)
{
    struct acme_resp r;
    c->step = "directory";
    if (acme_http_do(c->http, "GET", c->cfg->directory, NULL, NULL, &r, err, errlen) != 0) {
        acme_resp_free(&r);
        return fail_step(c, err, errlen);
    }
    int rc = -1;
    json_t *d = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    if (r.status != 200) {
        rc = fail_answer(c, c->cfg->directory, &r, err, errlen);
    } else if (!json_is_object(d) || !json_string_value(json_object_get(d, "newNonce")) ||
               !json_string_value(json_object_get(d, "newAccount")) ||
               !json_string_value(json_object_get(d, "newOrder"))) {
        err_set(err, errlen, "directory: %s is not an ACME directory (no newNonce, newAccount "
                "and newOrder); check [acme] directory", c->cfg->directory);
    } else {
        json_decref(c->dir);
        c->dir = json_incref(d);
        rc = 0;
    }
    json_decref(d);
    acme_resp_free(&r);
    return rc;
}

static int fetch_nonce(struct acme_client *c, char *err, size_t errlen)
{
    struct acme_resp r;
    const char *url = dir_url(c, "newNonce");
    const char *step = c->step;
    c->step = "newNonce";
    int rc = acme_http_do(c->http, "HEAD", url, NULL, NULL, &r, err, errlen);
    if (rc != 0)
        fail_step(c, err, errlen);
    else if ((r.status != 200 && r.status != 204) || !r.nonce)
        rc = fail_answer(c, url, &r, err, errlen);
    else {
        free(c->nonce);
        c->nonce = r.nonce;
        r.nonce = NULL;
    }
    acme_resp_free(&r);
    c->step = step;
    return rc;
}

/* A signed POST (payload NULL: POST-as-GET); jwk: sign with the key itself (newAccount)
 * instead of the account URL. 0 with *r a success answer (< 400), else -1 (r freed). */
static int post(struct acme_client *c, const char *url, const char *payload, int jwk,
                const char *accept, struct acme_resp *r, char *err, size_t errlen)
{
    for (int tries = 0;; tries++) {
        if (!c->nonce && fetch_nonce(c, err, errlen) != 0) return -1;
        char *jws = acme_jws(c->key, jwk ? NULL : c->kid, c->nonce, url, payload ? payload : "",
                             err, errlen);
        free(c->nonce);
        c->nonce = NULL;
        if (!jws) return fail_step(c, err, errlen);
        int rc = acme_http_do(c->http, "POST", url, jws, accept, r, err, errlen);
        free(jws);
        if (rc != 0) {
            acme_resp_free(r);
            return fail_step(c, err, errlen);
        }
        c->nonce = r->nonce; /* every answer carries the next nonce */
        r->nonce = NULL;
        if (r->status == 400 && is_problem(r, "badNonce") && tries < BADNONCE_RETRIES) {
            log_debug("acme: %s: badNonce, retrying with the new nonce", c->step);
            c->bad_nonces++;
            acme_resp_free(r);
            continue;
        }
        if (r->status >= 400) {
            fail_answer(c, url, r, err, errlen);
            acme_resp_free(r);
            return -1;
        }
        return 0;
    }
}

/* post() whose answer is a JSON object: *out (new reference) and, when loc is not NULL,
 * the Location header (malloc'd). */
static int post_json(struct acme_client *c, const char *url, const char *payload, int jwk,
                     json_t **out, char **loc, char *err, size_t errlen)
{
    struct acme_resp r;
    if (post(c, url, payload, jwk, NULL, &r, err, errlen) != 0) return -1;
    *out = json_loadb(r.body, r.len, 0, NULL);
    int rc = 0;
    if (!json_is_object(*out) || (loc && !r.location)) {
        err_set(err, errlen, "%s: %s answered %ld without a JSON object%s", c->step, url,
                r.status, loc ? " and a Location" : "");
        json_decref(*out);
        *out = NULL;
        rc = -1;
    } else if (loc) {
        *loc = r.location;
        r.location = NULL;
    }
    acme_resp_free(&r);
    return rc;
}

static int new_account(struct acme_client *c, char *err, size_t errlen)
{
    const struct conf_acme *cfg = c->cfg;
    c->step = "newAccount";
    const char *url = dir_url(c, "newAccount");
    json_t *req = json_pack("{s:b}", "termsOfServiceAgreed", 1);
    if (req && cfg->email) {
        char mailto[300];
        snprintf(mailto, sizeof mailto, "mailto:%s", cfg->email);
        json_object_set_new(req, "contact", json_pack("[s]", mailto));
    }
    if (req && cfg->eab_kid) {
        json_t *eab = acme_eab(c->key, cfg->eab_kid, cfg->eab_hmac_key, url, err, errlen);
        if (!eab) {
            json_decref(req);
            return fail_step(c, err, errlen);
        }
        json_object_set_new(req, "externalAccountBinding", eab);
    } else if (req && json_is_true(json_object_get(json_object_get(c->dir, "meta"),
                                                   "externalAccountRequired"))) {
        json_decref(req);
        err_set(err, errlen, "newAccount: the CA requires External Account Binding; set "
                "eab-kid and eab-hmac-key in [acme]");
        return -1;
    }
    char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    json_t *acct = NULL;
    char *loc = NULL;
    int rc = payload ? post_json(c, url, payload, 1, &acct, &loc, err, errlen) : -1;
    free(payload);
    if (rc == 0) {
        char e[400];
        free(c->kid);
        c->kid = loc;
        if (acme_store_set_account(cfg->directory, loc, e, sizeof e) != 0)
            log_warn("acme: the account is not recorded: %s", e);
        log_info("acme: account %s registered", loc);
    }
    json_decref(acct);
    return rc;
}

/* Polls url (POST-as-GET) until its status is one of `done` ("valid", ...): *out then.
 * "invalid" (or another final status) fails with the object's error. */
static int poll(struct acme_client *c, const char *url, const char *done1, const char *done2,
                json_t **out, char *err, size_t errlen)
{
    time_t start = time(NULL);
    for (int i = 0;; i++) {
        struct acme_resp r;
        if (post(c, url, NULL, 0, NULL, &r, err, errlen) != 0) return -1;
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        const char *st = json_string_value(json_object_get(j, "status"));
        long wait = r.retry_after >= 0 ? r.retry_after : i < 5 ? 1 : 2;
        acme_resp_free(&r);
        if (st && (strcmp(st, done1) == 0 || (done2 && strcmp(st, done2) == 0))) {
            *out = j;
            return 0;
        }
        if (!st || (strcmp(st, "pending") != 0 && strcmp(st, "processing") != 0)) {
            char text[1024] = "";
            json_t *e = json_object_get(j, "error");
            json_t *chs = json_object_get(j, "challenges");
            for (size_t k = 0; !e && k < json_array_size(chs); k++)
                e = json_object_get(json_array_get(chs, k), "error");
            if (e) problem_text(e, text, sizeof text);
            err_set(err, errlen, "%s: %s is %s%s%s", c->step, url, st ? st : "without status",
                    e ? ": " : "", text);
            json_decref(j);
            return -1;
        }
        json_decref(j);
        if (time(NULL) - start + wait > POLL_LIMIT_S) {
            err_set(err, errlen, "%s: %s is still pending after %d s", c->step, url,
                    POLL_LIMIT_S);
            return -1;
        }
        if (acme_http_sleep(c->http, wait * 1000) != 0) {
            err_set(err, errlen, "%s: stopped", c->step);
            return -1;
        }
    }
}

static int authorize(struct acme_client *c, const char *url, char *err, size_t errlen)
{
    const char *type = c->cfg->challenge == CONF_ACME_TLSALPN01 ? "tls-alpn-01" : "http-01";
    json_t *az = NULL;
    c->step = "authorization";
    if (post_json(c, url, NULL, 0, &az, NULL, err, errlen) != 0) return -1;
    const char *st = json_string_value(json_object_get(az, "status"));
    const char *name = json_string_value(json_object_get(json_object_get(az, "identifier"), "value"));
    int rc = -1;
    if (st && strcmp(st, "valid") == 0) {
        json_decref(az);
        return 0;
    }
    json_t *chs = json_object_get(az, "challenges"), *ch = NULL;
    for (size_t i = 0; !ch && i < json_array_size(chs); i++)
        if (json_string_value(json_object_get(json_array_get(chs, i), "type")) &&
            strcmp(json_string_value(json_object_get(json_array_get(chs, i), "type")), type) == 0)
            ch = json_array_get(chs, i);
    const char *curl = json_string_value(json_object_get(ch, "url"));
    const char *token = json_string_value(json_object_get(ch, "token"));
    char *ka = token ? acme_keyauth(token, c->key) : NULL;
    if (!st || strcmp(st, "pending") != 0) {
        err_set(err, errlen, "authorization: %s for %s is %s", url, name ? name : "?",
                st ? st : "without status");
    } else if (!curl || !ka) {
        err_set(err, errlen, "authorization: the CA offers no %s challenge for %s; use another "
                "challenge in [acme]", type, name ? name : "?");
    } else if (acme_challenge_set(name ? name : "", token, ka, err, errlen) != 0) {
        fail_step(c, err, errlen);
    } else {
        struct acme_resp r;
        c->step = "challenge";
        if (post(c, curl, "{}", 0, NULL, &r, err, errlen) == 0) {
            acme_resp_free(&r);
            json_t *fin = NULL;
            c->step = "validation";
            rc = poll(c, url, "valid", NULL, &fin, err, errlen);
            json_decref(fin);
        }
        if (rc == 0) log_info("acme: %s validated with %s", name ? name : "?", type);
    }
    free(ka);
    json_decref(az);
    return rc;
}

/* newOrder: *order and its URL. */
static int new_order(struct acme_client *c, json_t **order, char **url, char *err, size_t errlen)
{
    c->step = "newOrder";
    json_t *ids = json_array();
    for (unsigned i = 0; ids && i < c->cfg->ndomains; i++)
        json_array_append_new(ids, json_pack("{s:s,s:s}", "type", "dns", "value",
                                             c->cfg->domains[i]));
    json_t *req = ids ? json_pack("{s:o}", "identifiers", ids) : NULL;
    char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    int rc = payload ? post_json(c, dir_url(c, "newOrder"), payload, 0, order, url, err, errlen)
                     : -1;
    free(payload);
    return rc;
}

/* finalize with a CSR of a new key, then the certificate chain (PEM) into *pem. */
static int finalize(struct acme_client *c, json_t *order, const char *order_url,
                    struct evp_pkey_st **certkey, struct acme_resp *pem, char *err,
                    size_t errlen)
{
    json_t *ready = NULL, *done = NULL, *fin = NULL;
    c->step = "order";
    if (poll(c, order_url, "ready", "valid", &ready, err, errlen) != 0) return -1;
    int rc = -1;
    char *csr = NULL, *payload = NULL;
    c->step = "finalize";
    const char *furl = json_string_value(json_object_get(order, "finalize"));
    if (!(*certkey = acme_key_new(c->cfg->key_type, err, errlen)) ||
        !(csr = acme_csr(*certkey, c->cfg->domains, c->cfg->ndomains, err, errlen))) {
        fail_step(c, err, errlen);
        goto done;
    }
    if (!furl || asprintf(&payload, "{\"csr\":\"%s\"}", csr) < 0) {
        payload = NULL;
        err_set(err, errlen, "finalize: the order has no finalize URL");
        goto done;
    }
    if (post_json(c, furl, payload, 0, &fin, NULL, err, errlen) != 0) goto done;
    c->step = "order";
    if (poll(c, order_url, "valid", NULL, &done, err, errlen) != 0) goto done;
    const char *curl = json_string_value(json_object_get(done, "certificate"));
    c->step = "download";
    if (!curl) {
        err_set(err, errlen, "download: the valid order has no certificate URL");
        goto done;
    }
    rc = post(c, curl, NULL, 0, "application/pem-certificate-chain", pem, err, errlen);
done:
    json_decref(ready);
    json_decref(fin);
    json_decref(done);
    free(csr);
    free(payload);
    return rc;
}

int acme_renewal_info(struct acme_client *c, const char *cert_id, time_t *start, time_t *end,
                      long *retry_after, char *err, size_t errlen)
{
    *retry_after = -1;
    c->retry_after = -1;
    if (fetch_directory(c, err, errlen) != 0) return -1;
    const char *base = dir_url(c, "renewalInfo");
    if (!base) return 1;
    c->step = "renewalInfo";
    size_t n = strlen(base) + strlen(cert_id) + 2;
    char *url = malloc(n);
    if (!url) {
        err_set(err, errlen, "renewalInfo: out of memory");
        return -1;
    }
    /* RFC 9773 4.1: the path is the directory's URL, a slash, then the certID */
    snprintf(url, n, "%s%s%s", base, base[0] && base[strlen(base) - 1] == '/' ? "" : "/",
             cert_id);
    struct acme_resp r;
    int rc = -1;
    if (acme_http_do(c->http, "GET", url, NULL, "application/json", &r, err, errlen) != 0) {
        fail_step(c, err, errlen);
    } else if (r.status != 200) {
        fail_answer(c, url, &r, err, errlen);
    } else {
        char why[300];
        if (acme_ari_parse(r.body, r.len, start, end, why, sizeof why) == 0) {
            rc = 0;
        } else {
            err_set(err, errlen, "renewalInfo: %s: %s", url, why);
        }
    }
    *retry_after = r.retry_after >= 0 ? r.retry_after : c->retry_after;
    acme_resp_free(&r);
    free(url);
    return rc;
}

int acme_order_run(struct acme_client *c, struct acme_cert_info *info, char *err,
                   size_t errlen)
{
    c->retry_after = -1;
    if (fetch_directory(c, err, errlen) != 0) return -1;
    if (!c->kid) c->kid = acme_store_account_url(c->cfg->directory);
    if (c->kid) log_debug("acme: using the stored account %s", c->kid);
    if (!c->kid && new_account(c, err, errlen) != 0) return -1;
    json_t *order = NULL;
    char *order_url = NULL;
    struct acme_resp pem = {0};
    struct evp_pkey_st *certkey = NULL;
    int rc = new_order(c, &order, &order_url, err, errlen);
    if (rc != 0 && strstr(err, PROBLEM_NS "accountDoesNotExist")) {
        /* the CA forgot the account (a test CA restarted): register again, once */
        log_warn("acme: %s; registering again", err);
        free(c->kid);
        c->kid = NULL;
        rc = new_account(c, err, errlen) == 0 ? new_order(c, &order, &order_url, err, errlen)
                                               : -1;
    }
    json_t *authz = json_object_get(order, "authorizations");
    for (size_t i = 0; rc == 0 && i < json_array_size(authz); i++) {
        const char *u = json_string_value(json_array_get(authz, i));
        rc = u ? authorize(c, u, err, errlen) : -1;
        if (!u) err_set(err, errlen, "newOrder: an authorization is not a URL");
    }
    acme_challenge_clear();
    if (rc == 0) rc = finalize(c, order, order_url, &certkey, &pem, err, errlen);
    if (rc == 0) {
        c->step = "install";
        char e[1024];
        rc = acme_store_install(c->cfg, pem.body, pem.len, certkey, info, e, sizeof e);
        if (rc != 0) err_set(err, errlen, "install: the CA's certificate is refused: %s", e);
    }
    acme_resp_free(&pem);
    acme_key_free(certkey);
    json_decref(order);
    free(order_url);
    return rc;
}
