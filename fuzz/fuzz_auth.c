/* fuzz_auth.c - the Authorization header (auth.c's auth_parse_authorization: "Api-Token
 * <token>") and the api-token query parameter (auth_query_param). The input is the
 * header value; it is also read as a query string.
 * Checks: no crash or read past the value; a token found lies inside the value, is not
 * empty and holds no blank; the decoded query parameter fits its buffer. */
#include "fuzz.h"

#include <string.h>
#include <strings.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *h = malloc(size + 1);
    FZ_CHECK(h);
    memcpy(h, data, size);
    h[size] = '\0';
    size_t hl = strlen(h), len = 0;
    const char *tok = auth_parse_authorization(h, &len);
    if (tok) {
        FZ_CHECK(tok >= h && tok + len <= h + hl && len > 0);
        FZ_CHECK(memchr(tok, ' ', len) == NULL && memchr(tok, '\t', len) == NULL);
        FZ_CHECK(strncasecmp(h + strspn(h, " \t"), "Api-Token", 9) == 0);
    }
    char buf[16];
    memset(buf, 'x', sizeof buf);
    if (auth_query_param(h, "api-token", buf, sizeof buf) == 0)
        FZ_CHECK(memchr(buf, '\0', sizeof buf) != NULL);
    char big[256];
    auth_query_param(h, "api-token", big, sizeof big);
    free(h);
    return 0;
}
