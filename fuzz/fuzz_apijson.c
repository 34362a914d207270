/* fuzz_apijson.c - the JSON password body of the certificate API (api.c's
 * api_password_from_body, as activate and describe read it). The input is the body.
 * Checks: no crash; a body that is answered with a password is a JSON object whose
 * "password" is a string (jansson agrees), else there is no password. */
#include "fuzz.h"

#include <jansson.h>
#include <string.h>

#include "api.h"
#include "secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *pw = (char *)1;
    int rc = api_password_from_body((const char *)data, size, &pw);
    FZ_CHECK(rc == 0 || rc == -1);
    json_t *v = json_loadb((const char *)data, size, 0, NULL);
    const char *want = json_string_value(json_object_get(v, "password"));
    if (rc == 0) {
        FZ_CHECK(pw && want && strcmp(pw, want) == 0);
        secret_free(pw);
    } else {
        FZ_CHECK(pw == NULL && want == NULL);
    }
    json_decref(v);
    return 0;
}
