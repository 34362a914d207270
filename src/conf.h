/* conf.h - custom.properties, ActiveGate's configuration format.
 *
 * The format: `[section]` headings, `key = value` lines, `#` (or `;`) comments, blank
 * lines. Keys and values are trimmed of surrounding white space. In values, `\,` stands
 * for a literal comma (list values are split on unescaped commas) and `\\` for a
 * backslash; any other backslash is kept as is (Windows paths work).
 *
 * A conf_doc keeps every line of the file as it was read, so that a rewrite changes
 * only the lines it must: unknown sections and keys, comments, blank lines and their
 * order survive byte for byte (including a missing final newline and CRLF endings).
 *
 * Ownership: the caller owns a conf_doc and frees it with conf_doc_free. Strings
 * returned by getters point into the doc and stay valid until it is modified or freed.
 * Not thread-safe: one doc belongs to one thread at a time. */
#ifndef CERTGATE_CONF_H
#define CERTGATE_CONF_H

#include <stddef.h>
#include <sys/types.h>

#define CONF_SECTION_WEBSERVER "com.compuware.apm.webserver"
#define CONF_SECTION_CERTGATE "certgate"
#define CONF_SECTION_UPSTREAM "upstream"

struct conf_doc;

/* Parses text; `path` is used in messages only. A line that is neither blank, a
 * comment, a `[section]` nor `key = value` is an error:
 * "<path>:<line>: expected 'key = value', '[section]' or a comment". Keys before any
 * section belong to the section "" (kept, never read). */
int conf_doc_parse(const char *text, size_t len, const char *path, struct conf_doc **out,
                   char *err, size_t errlen);

/* Reads and parses the file. A missing file gives an empty doc (and *existed = 0 when
 * existed is not NULL). */
int conf_doc_load(const char *path, struct conf_doc **out, int *existed, char *err,
                  size_t errlen);

void conf_doc_free(struct conf_doc *doc);

/* The raw (still escaped, trimmed) value of key in section, or NULL. When a key is
 * present several times the last one wins. Section and key names compare exactly. */
const char *conf_doc_get_raw(const struct conf_doc *doc, const char *section, const char *key);

/* The 1-based line number of that same last occurrence, or 0 when absent. */
int conf_doc_line(const struct conf_doc *doc, const char *section, const char *key);

/* Sets key to value (given unescaped; commas and backslashes are escaped on write).
 * An existing line keeps its position and the spelling of its key; its value part is
 * rewritten as `key = value` (other occurrences of the key in that section are removed).
 * A new key goes right after the last key line of the section, or, when the section
 * does not exist, into a new `[section]` appended at the end of the file (separated by
 * a blank line). Returns 0, or -1 when out of memory, or -1 with errno EINVAL (doc
 * unchanged) when the line could not be read back as written: a line break in section,
 * key or value; an empty key, one with surrounding white space, containing '=' or
 * starting with '#', ';' or '['; a section name with '[' or ']' or surrounding white
 * space. Surrounding white space of the value is not kept (values are trimmed on read). */
int conf_doc_set(struct conf_doc *doc, const char *section, const char *key, const char *value);

/* Removes every line of key in section. Returns how many lines were removed. */
int conf_doc_unset(struct conf_doc *doc, const char *section, const char *key);

/* The whole text, malloc'd, NUL-terminated; *len (if not NULL) gets its length. */
char *conf_doc_text(const struct conf_doc *doc, size_t *len);

/* Writes the doc to path atomically and durably (see fsutil.h), keeping the mode of
 * the existing file, 0600 for a new one. */
int conf_doc_save(const struct conf_doc *doc, const char *path, char *err, size_t errlen);

/* Unescapes a raw value (`\,` -> `,`, `\\` -> `\`) into a malloc'd string. */
char *conf_unescape(const char *raw);

/* Splits a raw list value on unescaped commas; items are unescaped and trimmed, empty
 * items dropped. Returns a malloc'd NULL-terminated array (free with conf_list_free),
 * *count (if not NULL) gets the number of items. */
char **conf_split_list(const char *raw, size_t *count);
void conf_list_free(char **list);

/* ----- the typed settings certgate reads ----- */

#define TLS_V12 1u
#define TLS_V13 2u

struct conf_upstream {
    char *url;                  /* NULL: no upstream configured */
    unsigned connect_timeout_s; /* default 5 */
    unsigned read_timeout_s;    /* default 60 */
    unsigned max_connections;   /* idle pool size per thread, default 32 */
    char *ca_file;              /* NULL: system store */
    int verify;                 /* default 1 */
};

struct conf_settings {
    /* [com.compuware.apm.webserver] */
    unsigned port_ssl;         /* default 9999 */
    unsigned port_http;        /* 0: no plain HTTP listener (default) */
    unsigned tls_versions;     /* TLS_V12 | TLS_V13 (default both) */
    char **excluded_ciphers;   /* NULL-terminated list of substrings; never NULL */
    char *certificate_file;    /* unescaped; NULL: serve the default certificate */
    char *certificate_password;      /* plain password if the key is present, else NULL */
    char *certificate_password_encr; /* obfuscated password, else NULL */
    char *certificate_alias;   /* NULL: first key entry */
    /* [certgate] (certgate's own keys) */
    size_t max_upload_bytes;   /* max-upload-size, default 1 MiB */
    unsigned keepalive_timeout_ms; /* keepalive-timeout (s), default 75 s */
    unsigned header_timeout_ms;    /* header-timeout (s), default 20 s */
    unsigned body_timeout_ms;      /* body-timeout (s), default 60 s */
    int session_cache;         /* ssl-session-cache = on|off, default on */
    int session_tickets;       /* ssl-session-tickets = on|off, default on */
    int session_reused_header; /* session-reused-header = on|off, default off: local answers
                                * carry X-Session-Reused: 0|1 (benchmarks check it) */
    /* [upstream] */
    struct conf_upstream upstream;
};

/* Fills *out from doc, with defaults for absent keys. Every value is checked; the first
 * bad one fails with "<path>:<line>: <key>: <what is wrong and what is allowed>", e.g.
 * "custom.properties:4: ssl-protocols: 'TLSv1.1' is not supported; use TLSv1.2, TLSv1.3
 * or both, comma-separated". On failure *out holds nothing to free. */
int conf_settings_load(const struct conf_doc *doc, const char *path, struct conf_settings *out,
                       char *err, size_t errlen);

/* Frees the strings of s (passwords are wiped first) and zeroes it. */
void conf_settings_free(struct conf_settings *s);

#endif
