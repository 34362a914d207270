/* fuzz_propfile.c - custom.properties: parse -> rewrite -> parse (propfile.c) and the
 * typed settings (conf.c). The input is the file's text.
 *
 * Checks: a file that parses is given back byte for byte; conf_settings_load never
 * crashes (on the original and on the rewritten file); each propfile_set either
 * succeeds, and the rewritten file parses again and reads the value back (unescaped,
 * trimmed), or fails with EINVAL and leaves the text as it was; an unset key is gone;
 * the rewritten text is again given back byte for byte. The values and names set come
 * from the input: its first line is a value, its last line a key and a section name. */
#include "fuzz.h"

#include <errno.h>
#include <string.h>

#include "conf.h"
#include "propfile.h"

static void load_settings(const struct propfile *doc)
{
    struct conf_settings s;
    char err[512];
    if (conf_settings_load(doc, "custom.properties", &s, err, sizeof err) == 0)
        conf_settings_free(&s);
    else
        FZ_CHECK(err[0] != '\0');
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static char *line_of(const uint8_t *p, size_t n)
{
    if (n > 80) n = 80;
    char *s = malloc(n + 1);
    FZ_CHECK(s);
    memcpy(s, p, n);
    s[n] = '\0';
    return s; /* may be shorter than n (a NUL byte) */
}

static char *trimmed(const char *s)
{
    size_t n = strlen(s);
    while (n && is_space(*s)) s++, n--;
    while (n && is_space(s[n - 1])) n--;
    return strndup(s, n);
}

struct setop {
    const char *section, *key, *value;
    int ok;
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct propfile *doc = NULL;
    char err[512];
    err[0] = '\0';
    if (propfile_parse((const char *)data, size, "custom.properties", &doc, err, sizeof err) !=
        0) {
        FZ_CHECK(doc == NULL && err[0] != '\0');
        return 0;
    }
    size_t tlen;
    char *text = propfile_text(doc, &tlen);
    FZ_CHECK(text && tlen == size && memcmp(text, data, size) == 0);
    free(text);
    load_settings(doc);

    const uint8_t *nl = memchr(data, '\n', size);
    char *first = line_of(data, nl ? (size_t)(nl - data) : size);
    const uint8_t *last = data + size;
    while (last > data && last[-1] == '\n') last--;
    const uint8_t *ls = last;
    while (ls > data && ls[-1] != '\n') ls--;
    char *lastl = line_of(ls, (size_t)(last - ls));

    struct setop ops[] = {
        {CONF_SECTION_WEBSERVER, "certificate-file", first, 0},
        {CONF_SECTION_UPSTREAM, lastl, "1", 0},
        {lastl, "k", first, 0},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char *before = propfile_text(doc, NULL);
        FZ_CHECK(before);
        errno = 0;
        ops[i].ok = propfile_set(doc, ops[i].section, ops[i].key, ops[i].value) == 0;
        if (!ops[i].ok) {
            FZ_CHECK(errno == EINVAL);
            char *after = propfile_text(doc, NULL);
            FZ_CHECK(after && strcmp(before, after) == 0);
            free(after);
        }
        free(before);
    }
    propfile_unset(doc, CONF_SECTION_WEBSERVER, "certificate-password");

    char *text2 = propfile_text(doc, &tlen);
    FZ_CHECK(text2);
    struct propfile *doc2 = NULL;
    if (propfile_parse(text2, tlen, "custom.properties", &doc2, err, sizeof err) != 0) {
        fprintf(stderr, "the rewritten file does not parse: %s\n---\n%s\n---\n", err, text2);
        abort();
    }
    char *text3 = propfile_text(doc2, NULL);
    FZ_CHECK(text3 && strcmp(text2, text3) == 0);
    free(text3);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (!ops[i].ok) continue;
        const char *raw = propfile_get_raw(doc2, ops[i].section, ops[i].key);
        FZ_CHECK(raw);
        char *got = propfile_unescape(raw), *want = trimmed(ops[i].value);
        if (!got || !want || strcmp(got, want) != 0) {
            fprintf(stderr, "[%s] %s: set '%s', read back '%s'\n", ops[i].section,
                    ops[i].key, want, got);
            abort();
        }
        free(got);
        free(want);
    }
    FZ_CHECK(propfile_get_raw(doc2, CONF_SECTION_WEBSERVER, "certificate-password") == NULL);
    size_t count;
    char **list = propfile_split_list(propfile_get_raw(doc2, CONF_SECTION_WEBSERVER,
                                                       "certificate-file"), &count);
    FZ_CHECK(list);
    for (size_t i = 0; i < count; i++) FZ_CHECK(list[i] && list[i][0]);
    FZ_CHECK(list[count] == NULL);
    propfile_list_free(list);
    load_settings(doc2);

    free(text2);
    free(first);
    free(lastl);
    propfile_free(doc2);
    propfile_free(doc);
    return 0;
}
