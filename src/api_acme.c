/* api_acme.c - the ACME client's API calls: acme/status and acme/renew (see api.h). */
#include "api.h"

#include "acme.h"
#include "log.h"

#include <jansson.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

static void respond_json(struct http_exchange *x, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text)
        http_respond(x, status, "application/json", NULL, text, strlen(text));
    else
        api_http_error(x, 500, "The gateway is out of memory; try again.");
    free(text);
}

int api_acme(struct http_exchange *x, const char *sub)
{
    const struct http_request *r = http_req(x);
    int status = strcmp(sub, "status") == 0, renew = strcmp(sub, "renew") == 0;
    if (!status && !renew) return -1;
    if ((status && r->method != HTTP_GET && r->method != HTTP_HEAD) ||
        (renew && r->method != HTTP_POST)) {
        char msg[120];
        snprintf(msg, sizeof msg, "acme/%s answers %s only.", sub, status ? "GET" : "POST");
        api_http_error(x, 405, msg);
        return 0;
    }
    json_t *st = acme_status();
    if (!st) {
        api_http_error(x, 404, "ACME is not configured: add an [acme] section with directory "
                               "and domains to custom.properties (read at start).");
        return 0;
    }
    if (status) {
        respond_json(x, 200, st);
    } else if (acme_renew() != 0) {
        api_http_error(x, 503, "The ACME client is not running; see the log.");
    } else {
        log_info("certificate API: ACME renewal requested");
        json_t *a = json_pack("{s:b}", "renewalRequested", 1);
        respond_json(x, 202, a);
        json_decref(a);
    }
    json_decref(st);
    return 0;
}
