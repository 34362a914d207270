/* app.c - routing and the token commands (see app.h). */
#include "app.h"

#include "acme.h"
#include "api.h"
#include "auth.h"
#include "fleet.h"
#include "fsutil.h"
#include "gw.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "server.h"
#include "upclient.h"
#include "secret.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_BODY_LIMIT (64 * 1024)

static void health(struct http_exchange *x)
{
    const struct http_request *r = http_req(x);
    if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
        static const char msg[] = "method not allowed: /rest/health answers GET and HEAD\n";
        http_respond(x, 405, "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n", msg,
                     sizeof msg - 1);
        return;
    }
    http_respond(x, 200, "text/plain", NULL, "RUNNING", 7);
}

/* http-01 (RFC 8555 8.3): the key authorization of a pending challenge. */
#define ACME_CHALLENGE_PREFIX "/.well-known/acme-challenge/"
static void acme_challenge(struct http_exchange *x)
{
    const struct http_request *r = http_req(x);
    char ka[512];
    if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
        http_respond_text(x, 405, "%s is not supported here; use GET", r->method_name);
        return;
    }
    if (acme_http01_lookup(r->path + strlen(ACME_CHALLENGE_PREFIX), ka, sizeof ka) != 0) {
        http_respond_text(x, 404, "no ACME challenge is pending for this token");
        return;
    }
    http_respond(x, 200, "application/octet-stream", NULL, ka, strlen(ka));
}

static void bad_method(struct http_exchange *x)
{
    http_respond_text(x, 405, "%s is not supported by this gateway", http_req(x)->method_name);
}

static void route(const struct http_request *r, const struct gw_snap *snap,
                  struct http_route *out)
{
    out->max_body = SMALL_BODY_LIMIT;
    if (r->method == HTTP_CONNECT) { /* refused by reqcheck.c already; kept as a guard */
        out->handle = bad_method;
        return;
    }
    if (strcmp(r->path, "/rest/health") == 0) {
        out->handle = health;
        out->metrics_route = MR_HEALTH;
        return;
    }
    if (acme_http01_on() &&
        strncmp(r->path, ACME_CHALLENGE_PREFIX, strlen(ACME_CHALLENGE_PREFIX)) == 0) {
        out->handle = acme_challenge;
        return;
    }
    if (api_match(r->path)) { /* authenticates first, then checks the name itself */
        api_route(r, snap, out);
        out->metrics_route = MR_API;
        return;
    }
    /* '.' and '..' segments (also percent-encoded) and backslashes never get here:
     * reqcheck.c refuses them, so what certgate routes and what an upstream would see can
     * never differ */
    proxy_route(r, snap, out);
    out->metrics_route = MR_PROXY;
}

/* Requests refused before routing: API paths get their errors in the API's envelope. */
static http_error_fn error_route(const char *target)
{
    return api_match(target) ? api_http_error : NULL;
}

void app_init(void)
{
    static const struct server_hooks hooks = {
        .worker_stopping = up_pool_stopping,
        .worker_exit = up_pool_free,
    };
    http_set_router(route);
    http_set_error_router(error_route);
    server_set_hooks(&hooks);
}

void app_started(void)
{
    if (auth_token_count(gw_paths.config_dir) == 0)
        log_warn("no API token exists yet; the certificate API answers 401 until you create "
                 "one: certgate token create --data-dir %s --environment <environment-id> "
                 "--scope " AUTH_SCOPE_CERTS,
                 gw_paths.data_dir);
}

void app_cleanup(void)
{
    auth_cleanup();
}

static int token_usage(const char *why)
{
    fprintf(stderr,
            "certgate token: %s\n"
            "Usage:\n"
            "  certgate token create [--data-dir DIR] --environment ENV --scope SCOPE "
            "[--scope ...] [--name NAME]\n"
            "  certgate token list [--data-dir DIR]\n"
            "  certgate token revoke [--data-dir DIR] ID\n",
            why);
    return 2;
}

int app_token_command(int argc, char **argv)
{
    if (argc < 1) return token_usage("missing sub-command (create, list or revoke)");
    const char *sub = argv[0];
    const char *data_dir = DEFAULT_DATA_DIR, *env = NULL, *name = NULL, *id = NULL;
    const char *scopes[33];
    int nscopes = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--data-dir") == 0 && v) data_dir = argv[++i];
        else if (strcmp(a, "--environment") == 0 && v) env = argv[++i];
        else if (strcmp(a, "--name") == 0 && v) name = argv[++i];
        else if (strcmp(a, "--scope") == 0 && v) {
            if (nscopes == 32) return token_usage("at most 32 scopes");
            scopes[nscopes++] = argv[++i];
        } else if (a[0] != '-' && !id)
            id = a;
        else {
            char why[200];
            snprintf(why, sizeof why, "unknown or incomplete option '%s'", a);
            return token_usage(why);
        }
    }
    scopes[nscopes] = NULL;
    char *config_dir = fs_path_join(data_dir, "config");
    char err[2048];
    int rc = 1;
    if (strcmp(sub, "create") == 0) {
        if (!env || !nscopes || id) {
            free(config_dir);
            return token_usage("create needs --environment ENV and at least one --scope");
        }
        char *token = NULL, tid[64] = "";
        int in_fleet = 0, found = 0;
        if (auth_token_create(config_dir, env, scopes, name, &token, err, sizeof err) == 0) {
            /* a fleet node: the entry goes to etcd too, or the token is not made at all */
            auth_token_id(NULL, token, tid, sizeof tid);
            if (fleet_token_sync(data_dir, tid, 0, &in_fleet, &found, err, sizeof err) < 0) {
                char e2[256];
                if (auth_token_revoke(config_dir, tid, e2, sizeof e2) < 0)
                    fprintf(stderr, "certgate token create: %s\n", e2);
                snprintf(err + strlen(err), sizeof err - strlen(err),
                         "; the token was not created (the fleet's etcd must hold it)");
            } else {
                printf("%s\n", token);
                fflush(stdout);
                rc = 0;
            }
            secret_free(token);
        }
    } else if (strcmp(sub, "list") == 0) {
        rc = auth_token_list(config_dir, stdout, err, sizeof err) == 0 ? 0 : 1;
    } else if (strcmp(sub, "revoke") == 0) {
        if (!id) {
            free(config_dir);
            return token_usage("revoke needs the token ID (see 'certgate token list')");
        }
        /* a fleet node: out of etcd first (the members follow), then out of this node */
        int in_fleet = 0, found = 0;
        if (fleet_token_sync(data_dir, id, 1, &in_fleet, &found, err, sizeof err) < 0) {
            snprintf(err + strlen(err), sizeof err - strlen(err),
                     "; nothing was revoked (try again when etcd answers)");
        } else if (auth_token_revoke(config_dir, id, err, sizeof err) == 0 || found) {
            printf("revoked %.31s%s\n", id, found ? " (in the fleet's etcd too)" : "");
            rc = 0;
        }
    } else {
        free(config_dir);
        return token_usage("unknown sub-command (use create, list or revoke)");
    }
    if (rc) fprintf(stderr, "certgate token %s: %s\n", sub, err);
    free(config_dir);
    return rc;
}
