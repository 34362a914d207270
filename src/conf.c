#include "conf.h"
#include "err.h"

#include "fsutil.h"
#include "secret.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONF_MAX_FILE (4u * 1024 * 1024)

enum line_kind { LINE_BLANK, LINE_COMMENT, LINE_SECTION, LINE_KEY };

/* One physical line. text is the line as read (without its end of line), so that an
 * untouched line is written back byte for byte; name and value are parsed copies. */
struct conf_line {
    char *text;
    size_t len;
    char eol[3]; /* "", "\n" or "\r\n" */
    enum line_kind kind;
    char *name;  /* section name or key, trimmed */
    char *value; /* raw value, trimmed (LINE_KEY only) */
};

struct conf_doc {
    struct conf_line *lines;
    size_t n, cap;
    char eol[3]; /* line ending for new lines: the file's first one, else "\n" */
    int bom;     /* the file starts with a UTF-8 byte order mark (kept out of lines[0]) */
};

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && is_space(**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && is_space((*s)[*len - 1]))
        (*len)--;
}

/* The file may hold passwords in plain text: wipe before freeing. */
static void wipe_free(char *s, size_t len)
{
    if (!s) return;
    explicit_bzero(s, len);
    free(s);
}

static void line_clear(struct conf_line *l)
{
    wipe_free(l->text, l->len);
    free(l->name);
    secret_free(l->value);
    memset(l, 0, sizeof *l);
}

/* Classifies text into l (text is copied). Returns 0, or -1 for a malformed line
 * (errno EINVAL) or no memory (errno ENOMEM). */
static int line_init(struct conf_line *l, const char *text, size_t len, const char *eol)
{
    memset(l, 0, sizeof *l);
    const char *s = text;
    size_t n = len;
    trim(&s, &n);
    if (n == 0) {
        l->kind = LINE_BLANK;
    } else if (s[0] == '#' || s[0] == ';') {
        l->kind = LINE_COMMENT;
    } else if (s[0] == '[') {
        if (s[n - 1] != ']') goto malformed;
        const char *name = s + 1;
        size_t nlen = n - 2;
        trim(&name, &nlen);
        if (nlen == 0) goto malformed;
        l->kind = LINE_SECTION;
        if (!(l->name = strndup(name, nlen))) goto nomem;
    } else {
        const char *eq = memchr(s, '=', n);
        if (!eq) goto malformed;
        const char *key = s, *val = eq + 1;
        size_t klen = (size_t)(eq - s), vlen = n - klen - 1;
        trim(&key, &klen);
        trim(&val, &vlen);
        if (klen == 0) goto malformed;
        l->kind = LINE_KEY;
        if (!(l->name = strndup(key, klen)) || !(l->value = strndup(val, vlen))) goto nomem;
    }
    if (!(l->text = malloc(len + 1))) goto nomem;
    memcpy(l->text, text, len);
    l->text[len] = '\0';
    l->len = len;
    strcpy(l->eol, eol);
    return 0;
malformed:
    errno = EINVAL;
    return -1;
nomem:
    line_clear(l);
    errno = ENOMEM;
    return -1;
}

/* Inserts a (moved) line at index i. */
static int doc_insert(struct conf_doc *doc, size_t i, struct conf_line *l)
{
    if (doc->n == doc->cap) {
        size_t ncap = doc->cap ? doc->cap * 2 : 32;
        struct conf_line *nl = realloc(doc->lines, ncap * sizeof *nl);
        if (!nl) return -1;
        doc->lines = nl;
        doc->cap = ncap;
    }
    memmove(doc->lines + i + 1, doc->lines + i, (doc->n - i) * sizeof *doc->lines);
    doc->lines[i] = *l;
    doc->n++;
    return 0;
}

/* Removes line i; when it was the last line and had no end of line, the new last line
 * loses its own, so a file without a final newline stays that way. */
static void doc_remove(struct conf_doc *doc, size_t i)
{
    if (i == doc->n - 1 && doc->lines[i].eol[0] == '\0' && i > 0) doc->lines[i - 1].eol[0] = '\0';
    line_clear(&doc->lines[i]);
    memmove(doc->lines + i, doc->lines + i + 1, (doc->n - i - 1) * sizeof *doc->lines);
    doc->n--;
}

int conf_doc_parse(const char *text, size_t len, const char *path, struct conf_doc **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    struct conf_doc *doc = calloc(1, sizeof *doc);
    if (!doc) {
        err_set(err, errlen, "%s: out of memory", path);
        return -1;
    }
    strcpy(doc->eol, "\n");
    int eol_seen = 0;
    size_t pos = 0;
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        doc->bom = 1;
        pos = 3;
    }
    for (int lineno = 1; pos < len; lineno++) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t linelen = nl ? (size_t)(nl - start) : len - pos;
        const char *eol = "";
        pos += linelen;
        if (nl) {
            pos++;
            eol = "\n";
            if (linelen > 0 && start[linelen - 1] == '\r') {
                linelen--;
                eol = "\r\n";
            }
            if (!eol_seen++) strcpy(doc->eol, eol);
        }
        if (memchr(start, '\0', linelen)) {
            err_set(err, errlen, "%s:%d: the line contains a NUL byte; the file must be text", path,
                    lineno);
            conf_doc_free(doc);
            return -1;
        }
        struct conf_line l;
        if (line_init(&l, start, linelen, eol) < 0 || doc_insert(doc, doc->n, &l) < 0) {
            if (errno == EINVAL)
                err_set(err, errlen, "%s:%d: expected 'key = value', '[section]' or a comment",
                        path, lineno);
            else
                err_set(err, errlen, "%s: out of memory", path);
            line_clear(&l); /* l owns nothing after a failed line_init */
            conf_doc_free(doc);
            return -1;
        }
    }
    *out = doc;
    return 0;
}

int conf_doc_load(const char *path, struct conf_doc **out, int *existed, char *err, size_t errlen)
{
    char *data;
    size_t len;
    *out = NULL;
    if (existed) *existed = 1;
    if (fs_read_file(path, CONF_MAX_FILE, &data, &len, err, errlen) < 0) {
        if (errno != ENOENT) return -1;
        if (existed) *existed = 0;
        return conf_doc_parse("", 0, path, out, err, errlen);
    }
    int rc = conf_doc_parse(data, len, path, out, err, errlen);
    wipe_free(data, len);
    return rc;
}

void conf_doc_free(struct conf_doc *doc)
{
    if (!doc) return;
    for (size_t i = 0; i < doc->n; i++)
        line_clear(&doc->lines[i]);
    free(doc->lines);
    free(doc);
}

/* Index of the last (or first) line of key in section, or -1. */
static long find_key_at(const struct conf_doc *doc, const char *section, const char *key, int first)
{
    const char *cur = "";
    long found = -1;
    for (size_t i = 0; i < doc->n; i++) {
        const struct conf_line *l = &doc->lines[i];
        if (l->kind == LINE_SECTION) {
            cur = l->name;
        } else if (l->kind == LINE_KEY && strcmp(cur, section) == 0 && strcmp(l->name, key) == 0) {
            found = (long)i;
            if (first) break;
        }
    }
    return found;
}

const char *conf_doc_get_raw(const struct conf_doc *doc, const char *section, const char *key)
{
    long i = find_key_at(doc, section, key, 0);
    return i < 0 ? NULL : doc->lines[i].value;
}

int conf_doc_line(const struct conf_doc *doc, const char *section, const char *key)
{
    return (int)(find_key_at(doc, section, key, 0) + 1);
}

static char *escape_value(const char *v)
{
    size_t n = 0;
    for (const char *p = v; *p; p++)
        n += (*p == ',' || *p == '\\') ? 2 : 1;
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (const char *p = v; *p; p++) {
        if (*p == ',' || *p == '\\') *o++ = '\\';
        *o++ = *p;
    }
    *o = '\0';
    return out;
}

/* A name is usable when it is non-empty, has no line break or `stop` character and
 * no surrounding white space (it could not be read back otherwise). */
static int name_ok(const char *s, const char *stop)
{
    size_t n = strlen(s);
    if (n == 0 || is_space(s[0]) || is_space(s[n - 1])) return 0;
    return strpbrk(s, stop) == NULL;
}

/* The text indent + key + " = " + escaped value, malloc'd. */
static char *key_text(const char *indent, size_t indent_len, const char *key, const char *value)
{
    char *esc = escape_value(value);
    if (!esc) return NULL;
    size_t len = indent_len + strlen(key) + 3 + strlen(esc);
    char *text = malloc(len + 1);
    if (text) snprintf(text, len + 1, "%.*s%s = %s", (int)indent_len, indent, key, esc);
    secret_free(esc);
    return text;
}

/* Inserts a line of text at i, with the file's line ending; when the line before was
 * the last of a file without a final newline, that line gets the newline and the new
 * one goes without. On failure (text NULL included) the doc is unchanged. */
static int insert_text(struct conf_doc *doc, size_t i, char *text)
{
    struct conf_line l;
    int moved = i > 0 && i == doc->n && doc->lines[i - 1].eol[0] == '\0';
    if (!text || line_init(&l, text, strlen(text), moved ? "" : doc->eol) < 0) return -1;
    if (doc_insert(doc, i, &l) < 0) {
        line_clear(&l);
        return -1;
    }
    if (moved) strcpy(doc->lines[i - 1].eol, doc->eol);
    return 0;
}

static int set_new(struct conf_doc *doc, const char *section, const char *key, const char *value)
{
    /* find the last occurrence of the section and its last key line; the section "" is
     * the part before the first heading and always exists */
    long head = section[0] ? -2 : -1, last_key = -1;
    const char *cur = "";
    for (size_t i = 0; i < doc->n; i++) {
        const struct conf_line *l = &doc->lines[i];
        if (l->kind == LINE_SECTION) {
            cur = l->name;
            if (strcmp(cur, section) == 0) {
                head = (long)i;
                last_key = -1;
            }
        } else if (l->kind == LINE_KEY && strcmp(cur, section) == 0) {
            last_key = (long)i;
        }
    }
    char *text = key_text("", 0, key, value), *head_text = NULL;
    int rc = -1;
    size_t n0 = doc->n;
    if (head >= -1) {
        rc = insert_text(doc, (size_t)(last_key >= 0 ? last_key + 1 : head + 1), text);
    } else if ((head_text = malloc(strlen(section) + 3)) != NULL) {
        /* a new section at the end, after a blank line */
        sprintf(head_text, "[%s]", section);
        int need_blank = doc->n > 0 && doc->lines[doc->n - 1].kind != LINE_BLANK;
        if ((!need_blank || insert_text(doc, doc->n, (char *)"") == 0) &&
            insert_text(doc, doc->n, head_text) == 0 && insert_text(doc, doc->n, text) == 0)
            rc = 0;
        /* undo a half-done append so that a failure changes nothing */
        while (rc < 0 && doc->n > n0)
            doc_remove(doc, doc->n - 1);
    }
    free(head_text);
    secret_free(text);
    return rc;
}

int conf_doc_set(struct conf_doc *doc, const char *section, const char *key, const char *value)
{
    if ((section[0] && !name_ok(section, "[]\r\n")) || !name_ok(key, "=\r\n") ||
        strchr("#;[", key[0]) || strpbrk(value, "\r\n")) {
        errno = EINVAL;
        return -1;
    }
    long i = find_key_at(doc, section, key, 0);
    if (i < 0) return set_new(doc, section, key, value);

    struct conf_line *old = &doc->lines[i], l;
    size_t indent = 0;
    while (indent < old->len && is_space(old->text[indent]))
        indent++;
    char *text = key_text(old->text, indent, old->name, value);
    int rc = text ? line_init(&l, text, strlen(text), old->eol) : -1;
    secret_free(text);
    if (rc < 0) return -1;
    line_clear(old);
    *old = l;

    /* drop the earlier occurrences */
    long j;
    while ((j = find_key_at(doc, section, key, 1)) >= 0 && j < i) {
        doc_remove(doc, (size_t)j);
        i--;
    }
    return 0;
}

int conf_doc_unset(struct conf_doc *doc, const char *section, const char *key)
{
    int removed = 0;
    long i;
    while ((i = find_key_at(doc, section, key, 0)) >= 0) {
        doc_remove(doc, (size_t)i);
        removed++;
    }
    return removed;
}

char *conf_doc_text(const struct conf_doc *doc, size_t *len)
{
    size_t total = 3 * (size_t)doc->bom;
    for (size_t i = 0; i < doc->n; i++)
        total += doc->lines[i].len + strlen(doc->lines[i].eol);
    char *out = malloc(total + 1), *o = out;
    if (!out) return NULL;
    memcpy(o, "\xef\xbb\xbf", 3 * (size_t)doc->bom);
    o += 3 * (size_t)doc->bom;
    for (size_t i = 0; i < doc->n; i++) {
        const struct conf_line *l = &doc->lines[i];
        size_t el = strlen(l->eol);
        memcpy(o, l->text, l->len);
        memcpy(o + l->len, l->eol, el);
        o += l->len + el;
    }
    *o = '\0';
    if (len) *len = total;
    return out;
}

int conf_doc_save(const struct conf_doc *doc, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = conf_doc_text(doc, &len);
    if (!text) {
        err_set(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int rc = fs_write_atomic(path, text, len, 0600, err, errlen);
    wipe_free(text, len);
    return rc;
}

char *conf_unescape(const char *raw)
{
    char *out = malloc(strlen(raw) + 1), *o = out;
    if (!out) return NULL;
    for (const char *p = raw; *p; p++) {
        if (p[0] == '\\' && (p[1] == ',' || p[1] == '\\')) p++;
        *o++ = *p;
    }
    *o = '\0';
    return out;
}

char **conf_split_list(const char *raw, size_t *count)
{
    if (!raw) raw = "";
    size_t cap = 2;
    for (const char *p = raw; *p; p++)
        cap += (*p == ',');
    char **list = calloc(cap, sizeof *list);
    if (!list) return NULL;
    size_t n = 0;
    const char *start = raw;
    for (const char *p = raw;; p++) {
        if (p[0] == '\\' && (p[1] == ',' || p[1] == '\\')) {
            p++;
            continue;
        }
        if (*p != ',' && *p != '\0') continue;
        char *item = strndup(start, (size_t)(p - start)), *u = item ? conf_unescape(item) : NULL;
        const char *s = u;
        size_t len = u ? strlen(u) : 0;
        trim(&s, &len);
        char *t = u ? strndup(s, len) : NULL;
        free(item);
        free(u);
        if (!t) {
            conf_list_free(list);
            return NULL;
        }
        if (*t)
            list[n++] = t;
        else
            free(t);
        if (*p == '\0') break;
        start = p + 1;
    }
    if (count) *count = n;
    return list;
}

void conf_list_free(char **list)
{
    if (!list) return;
    for (char **p = list; *p; p++)
        free(*p);
    free(list);
}

/* ----- typed settings ----- */

struct loader {
    const struct conf_doc *doc;
    const char *path;
    const char *section;
    char *err;
    size_t errlen;
};

static int fail(const struct loader *ld, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(const struct loader *ld, const char *key, const char *fmt, ...)
{
    if (!ld->err || !ld->errlen) return -1;
    int n = snprintf(ld->err, ld->errlen, "%s:%d: %s: ", ld->path,
                     conf_doc_line(ld->doc, ld->section, key), key);
    if (n < 0 || (size_t)n >= ld->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* "'<v>' <problem>; <allowed>", or "the value is empty; <allowed>". */
static int fail_value(const struct loader *ld, const char *key, const char *v, const char *problem,
                      const char *allowed)
{
    if (!*v) return fail(ld, key, "the value is empty; %s", allowed);
    return fail(ld, key, "'%s' %s; %s", v, problem, allowed);
}

static int nomem(const struct loader *ld)
{
    err_set(ld->err, ld->errlen, "%s: out of memory", ld->path);
    return -1;
}

/* The unescaped value of key, or NULL (absent) in *out. */
/* *out = the unescaped raw value, or NULL when raw is NULL. */
static int unescaped(const struct loader *ld, const char *raw, char **out)
{
    *out = NULL;
    if (raw && !(*out = conf_unescape(raw))) return nomem(ld);
    return 0;
}

static int get(const struct loader *ld, const char *key, char **out)
{
    return unescaped(ld, conf_doc_get_raw(ld->doc, ld->section, key), out);
}

/* A string setting: an empty value counts as absent. */
static int get_string(const struct loader *ld, const char *key, char **out)
{
    const char *raw = conf_doc_get_raw(ld->doc, ld->section, key);
    return unescaped(ld, raw && *raw ? raw : NULL, out);
}

/* Parses decimal digits only: 0, -1 when not a number, -2 when larger than limit. */
static int parse_u64(const char *s, uint64_t limit, uint64_t *out)
{
    uint64_t v = 0;
    int big = 0;
    if (!isdigit((unsigned char)*s)) return -1;
    for (; isdigit((unsigned char)*s); s++) {
        if (v <= limit) v = v * 10 + (uint64_t)(*s - '0');
        big |= v > limit;
    }
    if (*s) return -1;
    *out = v;
    return big ? -2 : 0;
}

/* An integer key in [min, max]; absent leaves *out alone. */
static int get_uint(const struct loader *ld, const char *key, unsigned min, unsigned max,
                    const char *unit, const char *hint, unsigned *out)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    uint64_t n;
    int rc = 0;
    char allowed[160], problem[64];
    snprintf(allowed, sizeof allowed, "use a number from %u to %u%s", min, max, hint);
    snprintf(problem, sizeof problem, "is not %s", unit);
    int p = parse_u64(v, max, &n);
    if (p == -1)
        rc = fail_value(ld, key, v, problem, allowed);
    else if (p < 0 || n < min)
        rc = fail_value(ld, key, v, "is out of range", allowed);
    else
        *out = (unsigned)n;
    free(v);
    return rc;
}

/* Seconds with an optional fraction ("0.5"), 0.1 to 3600, stored as milliseconds. */
static int get_seconds_ms(const struct loader *ld, const char *key, unsigned *out_ms)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    const char *p = v;
    uint64_t whole = 0, ms;
    int digits = 0, rest = 0;
    for (; isdigit((unsigned char)*p); p++, digits++)
        if (whole < 10000000) whole = whole * 10 + (uint64_t)(*p - '0');
    ms = whole * 1000;
    if (*p == '.') {
        uint64_t scale = 100;
        for (p++; isdigit((unsigned char)*p); p++, digits++) {
            if (scale)
                ms += (uint64_t)(*p - '0') * scale;
            else if (*p != '0')
                rest = 1; /* beyond a millisecond */
            scale /= 10;
        }
    }
    int rc = 0;
    if (*p || digits == 0)
        rc = fail_value(ld, key, v, "is not a number of seconds",
                        "use a value from 0.1 to 3600, e.g. 0.5 or 30");
    else if (ms < 100 || ms > 3600000 || (ms == 3600000 && rest))
        rc = fail_value(ld, key, v, "is out of range", "use a number of seconds from 0.1 to 3600");
    else
        *out_ms = (unsigned)ms;
    free(v);
    return rc;
}

static int get_switch(const struct loader *ld, const char *key, const char *allowed, int *out)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    int rc = 0;
    if (strcasecmp(v, "on") == 0 || strcasecmp(v, "true") == 0)
        *out = 1;
    else if (strcasecmp(v, "off") == 0 || strcasecmp(v, "false") == 0)
        *out = 0;
    else
        rc = fail_value(ld, key, v, "is not a switch", allowed);
    free(v);
    return rc;
}

static int get_size(const struct loader *ld, const char *key, size_t *out)
{
    char *v;
    if (get(ld, key, &v) < 0) return -1;
    if (!v) return 0;
    size_t len = strlen(v);
    uint64_t mult = 1, n;
    char last = len ? v[len - 1] : '\0';
    if (last == 'K' || last == 'k') mult = 1024;
    if (last == 'M' || last == 'm') mult = 1024 * 1024;
    char *digits = strndup(v, mult > 1 ? len - 1 : len);
    if (!digits) {
        free(v);
        return nomem(ld);
    }
    int rc = 0, p = parse_u64(digits, 64u * 1024 * 1024, &n);
    if (p == -1)
        rc = fail_value(ld, key, v, "is not a size",
                        "use a number of bytes, optionally with a K or M suffix (KiB, MiB), "
                        "from 1K to 64M");
    else if (p < 0 || n * mult < 1024 || n * mult > 64u * 1024 * 1024)
        rc = fail_value(ld, key, v, "is out of range",
                        "use a size from 1K (1024 bytes) to 64M, e.g. 512K or 8M");
    else
        *out = (size_t)(n * mult);
    free(digits);
    free(v);
    return rc;
}

#define PROTOCOLS "use TLSv1.2, TLSv1.3 or both, comma-separated"

static int get_protocols(const struct loader *ld, unsigned *out)
{
    const char *key = "ssl-protocols";
    const char *raw = conf_doc_get_raw(ld->doc, ld->section, key);
    if (!raw) return 0;
    size_t n;
    char **list = conf_split_list(raw, &n);
    if (!list) return nomem(ld);
    unsigned v = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (strcasecmp(list[i], "TLSv1.2") == 0)
            v |= TLS_V12;
        else if (strcasecmp(list[i], "TLSv1.3") == 0)
            v |= TLS_V13;
        else
            rc = fail_value(ld, key, list[i], "is not supported", PROTOCOLS);
    }
    if (rc == 0 && n == 0) rc = fail(ld, key, "the list is empty; " PROTOCOLS);
    if (rc == 0) *out = v;
    conf_list_free(list);
    return rc;
}

/* Why url is not usable as an upstream, or NULL when it is. */
static const char *url_problem(const char *url)
{
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        p = url + 8;
    else
        return "does not start with http:// or https://";
    size_t hostlen = 0;
    if (*p == '[') {
        for (p++; *p && *p != ']'; p++, hostlen++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return "has an invalid IPv6 address";
        if (*p++ != ']') return "has an IPv6 address without its closing ']'";
    } else {
        for (; *p && *p != ':' && *p != '/'; p++, hostlen++)
            if (!isalnum((unsigned char)*p) && !strchr("-._", *p))
                return "has a character that is not allowed in a host name";
    }
    if (hostlen == 0) return "has no host";
    if (*p == ':') {
        char *end;
        unsigned long port = isdigit((unsigned char)p[1]) ? strtoul(p + 1, &end, 10) : 0;
        if (port < 1 || port > 65535 || (*end && *end != '/'))
            return "has an invalid port (allowed: 1 to 65535)";
        p = end;
    }
    for (; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) return "contains white space";
        if (*p == '?' || *p == '#') return "has a query or fragment";
    }
    return NULL;
}

static int load_webserver(struct loader *ld, struct conf_settings *s)
{
    ld->section = CONF_SECTION_WEBSERVER;
    const char *range = ", or remove the line to turn the plain HTTP listener off";
    if (get_uint(ld, "port-ssl", 1, 65535, "a port number", "", &s->port_ssl) < 0 ||
        get_uint(ld, "port", 1, 65535, "a port number", range, &s->port_http) < 0)
        return -1;
    if (s->port_http == s->port_ssl)
        return fail(ld, "port",
                    "%u is also the HTTPS port (port-ssl); use another port for "
                    "plain HTTP, or remove the line to turn it off",
                    s->port_http);
    if (get_protocols(ld, &s->tls_versions) < 0) return -1;
    const char *raw = conf_doc_get_raw(ld->doc, ld->section, "excluded-ciphers");
    conf_list_free(s->excluded_ciphers);
    if (!(s->excluded_ciphers = conf_split_list(raw, NULL))) return nomem(ld);
    if (get_string(ld, "certificate-file", &s->certificate_file) < 0 ||
        get_string(ld, "certificate-password", &s->certificate_password) < 0 ||
        get_string(ld, "certificate-password-encr", &s->certificate_password_encr) < 0 ||
        get_string(ld, "certificate-alias", &s->certificate_alias) < 0)
        return -1;
    return 0;
}

static int load_certgate(struct loader *ld, struct conf_settings *s)
{
    ld->section = CONF_SECTION_CERTGATE;
    const char *onoff = "use on, off, true or false";
    if (get_size(ld, "max-upload-size", &s->max_upload_bytes) < 0 ||
        get_seconds_ms(ld, "keepalive-timeout", &s->keepalive_timeout_ms) < 0 ||
        get_seconds_ms(ld, "header-timeout", &s->header_timeout_ms) < 0 ||
        get_seconds_ms(ld, "body-timeout", &s->body_timeout_ms) < 0 ||
        get_switch(ld, "ssl-session-cache", onoff, &s->session_cache) < 0 ||
        get_switch(ld, "ssl-session-tickets", onoff, &s->session_tickets) < 0 ||
        get_switch(ld, "session-reused-header", onoff, &s->session_reused_header) < 0)
        return -1;
    return 0;
}

static int load_upstream(struct loader *ld, struct conf_upstream *u)
{
    ld->section = CONF_SECTION_UPSTREAM;
    if (get_string(ld, "url", &u->url) < 0) return -1;
    const char *why = u->url ? url_problem(u->url) : NULL;
    if (why)
        return fail(ld, "url",
                    "'%s' %s; use http:// or https://, a host, an optional port and "
                    "an optional path prefix, e.g. https://backend.example:8443/api",
                    u->url, why);
    const char *secs = " seconds";
    if (get_uint(ld, "connect-timeout", 1, 3600, "a whole number of seconds", secs,
                 &u->connect_timeout_s) < 0 ||
        get_uint(ld, "read-timeout", 1, 3600, "a whole number of seconds", secs,
                 &u->read_timeout_s) < 0 ||
        get_uint(ld, "max-connections", 1, 10000, "a number", "", &u->max_connections) < 0 ||
        get_string(ld, "ca-file", &u->ca_file) < 0 ||
        get_switch(ld, "verify", "use true or false (on and off also work)", &u->verify) < 0)
        return -1;
    return 0;
}

int conf_settings_load(const struct conf_doc *doc, const char *path, struct conf_settings *out,
                       char *err, size_t errlen)
{
    /* the defaults */
    struct conf_settings s = {
        .port_ssl = 9999,
        .tls_versions = TLS_V12 | TLS_V13,
        .max_upload_bytes = 1024 * 1024,
        .keepalive_timeout_ms = 75000,
        .header_timeout_ms = 20000,
        .body_timeout_ms = 60000,
        .session_cache = 1,
        .session_tickets = 1,
        .upstream = {
            .connect_timeout_s = 5, .read_timeout_s = 60, .max_connections = 32, .verify = 1}};
    struct loader ld = {.doc = doc, .path = path, .err = err, .errlen = errlen};
    memset(out, 0, sizeof *out);
    if (load_webserver(&ld, &s) < 0 || load_certgate(&ld, &s) < 0 ||
        load_upstream(&ld, &s.upstream) < 0) {
        conf_settings_free(&s);
        return -1;
    }
    *out = s;
    return 0;
}

void conf_settings_free(struct conf_settings *s)
{
    conf_list_free(s->excluded_ciphers);
    free(s->certificate_file);
    secret_free(s->certificate_password);
    secret_free(s->certificate_password_encr);
    free(s->certificate_alias);
    free(s->upstream.url);
    free(s->upstream.ca_file);
    memset(s, 0, sizeof *s);
}
