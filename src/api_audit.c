/* api_audit.c - the certificate API's audit lines (see api.h and audit.h). */
#include "api.h"

#include "audit.h"
#include "gw.h"

static const char *opt(const char *s)
{
    return s && *s ? s : NULL;
}

void api_audit_record(const struct api_audit *a, int async)
{
    char now[65] = "";
    if (!a->sha_before || !a->sha_after) gw_served_sha256(now); /* no gw_lock needed */
    struct audit_event ev = {.source = "api",
                             .token_id = opt(a->token_id),
                             .client = opt(a->client),
                             .op = a->op,
                             .name = opt(a->name),
                             .alias = opt(a->alias),
                             .sha_before = a->sha_before ? a->sha_before : now,
                             .sha_after = a->sha_after ? a->sha_after : now,
                             .status = a->status,
                             .message = a->message};
    if (async) audit_record_async(&ev);
    else audit_record(&ev);
}
