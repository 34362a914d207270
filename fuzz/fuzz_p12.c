/* fuzz_p12.c - PKCS#12 loading and description (p12.c, p12_describe.c): the input is a
 * file as uploaded, opened with a fixed password ("fuzz-pw") and with the empty one.
 * When it opens: every entry is described as the API does (p12_describe, JSON text),
 * the key entry is selected, Java's descriptions are made.
 * Checks: no crash or sanitizer report; a refusal has a sentence; a file that opens
 * has at least one key entry and a description that serializes. */
#include "fuzz.h"

#include <jansson.h>
#include <string.h>

#include "p12.h"

static void try_password(const uint8_t *data, size_t size, const char *pw)
{
    struct p12_file *f = NULL;
    char err[1024];
    err[0] = '\0';
    enum p12_status st = p12_parse(data, size, pw, "fuzz.p12", &f, err, sizeof err);
    if (st != P12_OK) {
        FZ_CHECK(f == NULL && err[0] != '\0');
        return;
    }
    FZ_CHECK(f && p12_count(f) > 0);
    const struct p12_entry *e = NULL;
    FZ_CHECK(p12_select(f, NULL, &e, err, sizeof err) == P12_OK && e && p12_entry_has_key(e));
    p12_select(f, "No-Such-Alias", &e, err, sizeof err);
    for (size_t i = 0; i < p12_count(f); i++) {
        const struct p12_entry *x = p12_get(f, i);
        FZ_CHECK(p12_entry_alias(x) && p12_entry_cert(x));
        char *d = p12_java_description(p12_entry_cert(x));
        free(d);
        char *lower = p12_java_lower(p12_entry_alias(x));
        FZ_CHECK(lower);
        free(lower);
    }
    json_t *j = p12_describe(f, "fuzz.p12");
    FZ_CHECK(j);
    char *s = json_dumps(j, JSON_COMPACT);
    FZ_CHECK(s);
    free(s);
    json_decref(j);
    p12_free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        char err[256];
        p12_init(err, sizeof err);
        inited = 1;
    }
    try_password(data, size, "fuzz-pw");
    try_password(data, size, "");
    return 0;
}
