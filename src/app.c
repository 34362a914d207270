/* app.c - routing (see app.h). */
#include "app.h"

#include "http.h"

#include <http_parser.h>
#include <stdio.h>
#include <string.h>

#define SMALL_BODY_LIMIT (64 * 1024)

static void health(struct http_exchange *x)
{
    const struct http_request *r = http_req(x);
    if (r->method != HTTP_GET && r->method != HTTP_HEAD) {
        http_respond(x, 405, "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n",
                     "method not allowed: /rest/health answers GET and HEAD\n", 54);
        return;
    }
    http_respond(x, 200, "text/plain", NULL, "RUNNING", 7);
}

static void not_found(struct http_exchange *x)
{
    http_respond_text(x, 404, "not found: %s", http_req(x)->path);
}

static void route(const struct http_request *r, struct http_route *out)
{
    out->max_body = SMALL_BODY_LIMIT;
    if (strcmp(r->path, "/rest/health") == 0) {
        out->handle = health;
        return;
    }
    out->handle = not_found;
}

void app_init(void)
{
    http_set_router(route);
}

void app_started(void)
{
}

void app_cleanup(void)
{
}

int app_token_command(int argc, char **argv)
{
    fprintf(stderr, "certgate: token commands are not built yet\n");
    return 2;
}
