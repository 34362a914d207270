/* propfile.c - the custom.properties file format: a byte-preserving parser/rewriter. */
#include "propfile.h"

#include "err.h"
#include "fsutil.h"
#include "secret.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROPFILE_MAX_SIZE (4u * 1024 * 1024)

enum line_kind { LINE_BLANK, LINE_COMMENT, LINE_SECTION, LINE_KEY };

/* One physical line. text is the line as read (without its end of line), so that an
 * untouched line is written back byte for byte; name and value are parsed copies. */
struct propfile_line {
    char *text;
    size_t len;
    char eol[3]; /* "", "\n" or "\r\n" */
    enum line_kind kind;
    char *name;  /* section name or key, trimmed */
    char *value; /* raw value, trimmed (LINE_KEY only) */
};

struct propfile {
    struct propfile_line *lines;
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

static void line_clear(struct propfile_line *l)
{
    wipe_free(l->text, l->len);
    free(l->name);
    secret_free(l->value);
    memset(l, 0, sizeof *l);
}

/* Classifies text into l (text is copied). Returns 0, or -1 for a malformed line
 * (errno EINVAL) or no memory (errno ENOMEM). */
static int line_init(struct propfile_line *l, const char *text, size_t len, const char *eol)
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
static int doc_insert(struct propfile *doc, size_t i, struct propfile_line *l)
{
    if (doc->n == doc->cap) {
        size_t ncap = doc->cap ? doc->cap * 2 : 32;
        struct propfile_line *nl = realloc(doc->lines, ncap * sizeof *nl);
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
static void doc_remove(struct propfile *doc, size_t i)
{
    if (i == doc->n - 1 && doc->lines[i].eol[0] == '\0' && i > 0) doc->lines[i - 1].eol[0] = '\0';
    line_clear(&doc->lines[i]);
    memmove(doc->lines + i, doc->lines + i + 1, (doc->n - i - 1) * sizeof *doc->lines);
    doc->n--;
}

/* Appends "\n" (unless err is empty) and a formatted sentence to err. */
static void err_append(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err_append(char *err, size_t errlen, const char *fmt, ...)
{
    size_t used = strnlen(err, errlen);
    if (used + 2 >= errlen) return;
    if (used) err[used++] = '\n';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
}

/* propfile_parse; with nbad, a bad line is kept as a comment and its sentence appended
 * to err instead of failing (see propfile_load_lenient). */
static int parse(const char *text, size_t len, const char *path, struct propfile **out, char *err,
                 size_t errlen, int *nbad)
{
    *out = NULL;
    if (nbad) {
        *nbad = 0;
        if (errlen) err[0] = '\0';
    }
    struct propfile *doc = calloc(1, sizeof *doc);
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
        struct propfile_line l;
        int nul = memchr(start, '\0', linelen) != NULL;
        if (nbad && (nul || (line_init(&l, start, linelen, eol) < 0 && errno == EINVAL))) {
            err_append(err, errlen, nul ? "%s:%d: the line contains a NUL byte; the file must "
                                          "be text"
                                        : "%s:%d: expected 'key = value', '[section]' or a "
                                          "comment",
                       path, lineno);
            (*nbad)++;
            /* kept as a comment, so that the rest of the file is still read */
            if (line_init(&l, "#", 1, eol) < 0 || doc_insert(doc, doc->n, &l) < 0) {
                line_clear(&l);
                propfile_free(doc);
                err_set(err, errlen, "%s: out of memory", path);
                return -1;
            }
            continue;
        }
        if (nbad) {
            if (l.kind == LINE_BLANK && l.text == NULL) { /* line_init failed: no memory */
                propfile_free(doc);
                err_set(err, errlen, "%s: out of memory", path);
                return -1;
            }
            if (doc_insert(doc, doc->n, &l) < 0) {
                line_clear(&l);
                propfile_free(doc);
                err_set(err, errlen, "%s: out of memory", path);
                return -1;
            }
            continue;
        }
        if (nul) {
            err_set(err, errlen, "%s:%d: the line contains a NUL byte; the file must be text", path,
                    lineno);
            propfile_free(doc);
            return -1;
        }
        if (line_init(&l, start, linelen, eol) < 0 || doc_insert(doc, doc->n, &l) < 0) {
            if (errno == EINVAL)
                err_set(err, errlen, "%s:%d: expected 'key = value', '[section]' or a comment",
                        path, lineno);
            else
                err_set(err, errlen, "%s: out of memory", path);
            line_clear(&l); /* l owns nothing after a failed line_init */
            propfile_free(doc);
            return -1;
        }
    }
    *out = doc;
    return 0;
}

int propfile_parse(const char *text, size_t len, const char *path, struct propfile **out, char *err,
                   size_t errlen)
{
    return parse(text, len, path, out, err, errlen, NULL);
}

static int load(const char *path, struct propfile **out, int *existed, char *err, size_t errlen,
                int *nbad)
{
    char *data;
    size_t len;
    *out = NULL;
    if (existed) *existed = 1;
    if (fs_read_file(path, PROPFILE_MAX_SIZE, &data, &len, err, errlen) < 0) {
        if (errno != ENOENT) return -1;
        if (existed) *existed = 0;
        return parse("", 0, path, out, err, errlen, nbad);
    }
    int rc = parse(data, len, path, out, err, errlen, nbad);
    wipe_free(data, len);
    return rc;
}

int propfile_load(const char *path, struct propfile **out, int *existed, char *err, size_t errlen)
{
    return load(path, out, existed, err, errlen, NULL);
}

int propfile_load_lenient(const char *path, struct propfile **out, int *nbad, char *err,
                          size_t errlen)
{
    return load(path, out, NULL, err, errlen, nbad);
}

void propfile_free(struct propfile *doc)
{
    if (!doc) return;
    for (size_t i = 0; i < doc->n; i++)
        line_clear(&doc->lines[i]);
    free(doc->lines);
    free(doc);
}

/* Index of the last (or first) line of key in section, or -1. */
static long find_key_at(const struct propfile *doc, const char *section, const char *key, int first)
{
    const char *cur = "";
    long found = -1;
    for (size_t i = 0; i < doc->n; i++) {
        const struct propfile_line *l = &doc->lines[i];
        if (l->kind == LINE_SECTION) {
            cur = l->name;
        } else if (l->kind == LINE_KEY && strcmp(cur, section) == 0 && strcmp(l->name, key) == 0) {
            found = (long)i;
            if (first) break;
        }
    }
    return found;
}

const char *propfile_get_raw(const struct propfile *doc, const char *section, const char *key)
{
    long i = find_key_at(doc, section, key, 0);
    return i < 0 ? NULL : doc->lines[i].value;
}

int propfile_line(const struct propfile *doc, const char *section, const char *key)
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
static int insert_text(struct propfile *doc, size_t i, char *text)
{
    struct propfile_line l;
    int moved = i > 0 && i == doc->n && doc->lines[i - 1].eol[0] == '\0';
    if (!text || line_init(&l, text, strlen(text), moved ? "" : doc->eol) < 0) return -1;
    if (doc_insert(doc, i, &l) < 0) {
        line_clear(&l);
        return -1;
    }
    if (moved) strcpy(doc->lines[i - 1].eol, doc->eol);
    return 0;
}

static int set_new(struct propfile *doc, const char *section, const char *key, const char *value)
{
    /* find the last occurrence of the section and its last key line; the section "" is
     * the part before the first heading and always exists */
    long head = section[0] ? -2 : -1, last_key = -1;
    const char *cur = "";
    for (size_t i = 0; i < doc->n; i++) {
        const struct propfile_line *l = &doc->lines[i];
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

int propfile_set(struct propfile *doc, const char *section, const char *key, const char *value)
{
    if ((section[0] && !name_ok(section, "[]\r\n")) || !name_ok(key, "=\r\n") ||
        strchr("#;[", key[0]) || strpbrk(value, "\r\n")) {
        errno = EINVAL;
        return -1;
    }
    long i = find_key_at(doc, section, key, 0);
    if (i < 0) return set_new(doc, section, key, value);

    struct propfile_line *old = &doc->lines[i], l;
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

int propfile_unset(struct propfile *doc, const char *section, const char *key)
{
    int removed = 0;
    long i;
    while ((i = find_key_at(doc, section, key, 0)) >= 0) {
        doc_remove(doc, (size_t)i);
        removed++;
    }
    return removed;
}

char *propfile_text(const struct propfile *doc, size_t *len)
{
    size_t total = 3 * (size_t)doc->bom;
    for (size_t i = 0; i < doc->n; i++)
        total += doc->lines[i].len + strlen(doc->lines[i].eol);
    char *out = malloc(total + 1), *o = out;
    if (!out) return NULL;
    memcpy(o, "\xef\xbb\xbf", 3 * (size_t)doc->bom);
    o += 3 * (size_t)doc->bom;
    for (size_t i = 0; i < doc->n; i++) {
        const struct propfile_line *l = &doc->lines[i];
        size_t el = strlen(l->eol);
        memcpy(o, l->text, l->len);
        memcpy(o + l->len, l->eol, el);
        o += l->len + el;
    }
    *o = '\0';
    if (len) *len = total;
    return out;
}

int propfile_save(const struct propfile *doc, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = propfile_text(doc, &len);
    if (!text) {
        err_set(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int rc = fs_write_atomic(path, text, len, 0600, err, errlen);
    wipe_free(text, len);
    return rc;
}

char *propfile_unescape(const char *raw)
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

char **propfile_split_list(const char *raw, size_t *count)
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
        char *item = strndup(start, (size_t)(p - start)),
             *u = item ? propfile_unescape(item) : NULL;
        const char *s = u;
        size_t len = u ? strlen(u) : 0;
        trim(&s, &len);
        char *t = u ? strndup(s, len) : NULL;
        free(item);
        free(u);
        if (!t) {
            propfile_list_free(list);
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

void propfile_list_free(char **list)
{
    if (!list) return;
    for (char **p = list; *p; p++)
        free(*p);
    free(list);
}
