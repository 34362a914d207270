/* propfile.h - the file format of custom.properties (ActiveGate's configuration file),
 * read and rewritten without disturbing what it does not change.
 *
 * The format: `[section]` headings, `key = value` lines, `#` (or `;`) comments, blank
 * lines. Keys and values are trimmed of surrounding white space. In values, `\,` stands
 * for a literal comma (list values are split on unescaped commas) and `\\` for a
 * backslash; any other backslash is kept as is (Windows paths work).
 *
 * A struct propfile (a "doc") keeps every line of the file as it was read, so that a rewrite
 * changes only the lines it must: unknown sections and keys, comments, blank lines and
 * their order survive byte for byte (including a UTF-8 byte order mark, a missing final
 * newline and CRLF endings). What the values mean is not this module's business: the
 * typed settings are read from a propfile by conf.h.
 *
 * Ownership: the caller owns a propfile and frees it with propfile_free. Strings returned
 * by getters point into the propfile and stay valid until it is modified or freed.
 * Thread-safety: a propfile is not locked; one belongs to one thread at a time (distinct
 * propfiles may be used from different threads). The functions that take no propfile
 * (propfile_unescape, propfile_split_list, propfile_list_free) have no shared state. */
#ifndef CERTGATE_PROPFILE_H
#define CERTGATE_PROPFILE_H

#include <stddef.h>

struct propfile;

/* Parses text (len bytes, need not be NUL-terminated) into a new propfile.
 * In: `path` is used in messages only. Out: *out, owned by the caller (NULL on failure).
 * Returns 0, or -1 with a sentence in err: a line that is neither blank, a comment, a
 * `[section]` nor `key = value` gives "<path>:<line>: expected 'key = value', '[section]'
 * or a comment"; a NUL byte "<path>:<line>: the line contains a NUL byte; the file must
 * be text"; no memory "<path>: out of memory". Keys before any section belong to the
 * section "" (kept, never read by certgate). text is copied, not kept. */
int propfile_parse(const char *text, size_t len, const char *path, struct propfile **out, char *err,
                   size_t errlen);

/* Reads the file at path (at most 4 MiB) and parses it as propfile_parse does.
 * Out: *out, owned by the caller (NULL on failure); *existed (when existed is not NULL)
 * is 1, or 0 when the file does not exist, which gives an empty propfile and 0.
 * Returns 0, or -1 with a sentence in err naming path (read error, too large, or a parse
 * error with its line). The bytes read are wiped before they are freed (the file may
 * hold a plain password). */
int propfile_load(const char *path, struct propfile **out, int *existed, char *err, size_t errlen);

/* Like propfile_load, but a line that is not blank, a comment, a heading nor `key =
 * value` (or holds a NUL byte) does not stop the reading: it counts as a comment, and
 * its sentence ("<path>:<line>: expected ...") is appended to err ('\n'-separated,
 * truncated to errlen; err is "" when there is none); *nbad gets their number. Returns
 * 0 with *out (also when *nbad > 0), or -1 when the file cannot be read or memory is
 * short (err then holds that one sentence). For check-config, which lists every error;
 * never save a doc read this way (the bad lines would be lost). */
int propfile_load_lenient(const char *path, struct propfile **out, int *nbad, char *err,
                          size_t errlen);

/* Frees doc and everything it owns (line texts and values are wiped first); NULL is a
 * no-op. Strings obtained from doc become invalid. */
void propfile_free(struct propfile *doc);

/* The raw (still escaped, trimmed) value of key in section, or NULL when absent. When a
 * key is present several times (also across repeated headings of the section) the last
 * one wins. Section and key names compare exactly. The string belongs to doc. */
const char *propfile_get_raw(const struct propfile *doc, const char *section, const char *key);

/* The 1-based line number of that same last occurrence, or 0 when absent (for messages
 * such as "custom.properties:4: ..."). */
int propfile_line(const struct propfile *doc, const char *section, const char *key);

/* Sets key to value (given unescaped; commas and backslashes are escaped on write).
 * An existing line keeps its position, indentation, line ending and the spelling of its
 * key; its text is rewritten as `key = value` (other occurrences of the key in that
 * section are removed). A new key goes right after the last key line of the last
 * heading of the section, or, when the section does not exist, into a new `[section]`
 * appended at the end of the file (separated by a blank line); new lines use the file's
 * first line ending. Strings are copied. Returns 0; or -1 when out of memory; or -1
 * with errno EINVAL when the line could not be read back as written: a line break in
 * section, key or value; an empty key, one with surrounding white space, containing '='
 * or starting with '#', ';' or '['; a section name with '[' or ']' or surrounding white
 * space. On -1 doc is unchanged. Surrounding white space of the value is not kept
 * (values are trimmed on read). */
int propfile_set(struct propfile *doc, const char *section, const char *key, const char *value);

/* Removes every line of key in section (a file without a final newline stays without
 * one). Returns how many lines were removed (0 when none). Cannot fail. */
int propfile_unset(struct propfile *doc, const char *section, const char *key);

/* The whole text of doc, byte for byte as read plus the changes made since.
 * Out: a malloc'd, NUL-terminated string owned by the caller (it may hold a plain
 * password: wipe it before freeing), or NULL when out of memory; *len (when len is not
 * NULL) gets its length without the NUL. */
char *propfile_text(const struct propfile *doc, size_t *len);

/* Writes doc to path atomically and durably (see fsutil.h), keeping the mode of the
 * existing file, 0600 for a new one. Returns 0, or -1 with a sentence in err (the file
 * is then unchanged). doc is not modified. */
int propfile_save(const struct propfile *doc, const char *path, char *err, size_t errlen);

/* Unescapes a raw value (`\,` -> `,`, `\\` -> `\`; other backslashes stay).
 * Out: a malloc'd string owned by the caller, or NULL when out of memory. */
char *propfile_unescape(const char *raw);

/* Splits a raw list value (NULL counts as "") on unescaped commas; items are unescaped
 * and trimmed, empty items dropped. Out: a malloc'd NULL-terminated array of malloc'd
 * strings, owned by the caller (free with propfile_list_free), or NULL when out of
 * memory; *count (when count is not NULL) gets the number of items. */
char **propfile_split_list(const char *raw, size_t *count);

/* Frees a list from propfile_split_list and its items; NULL is a no-op. */
void propfile_list_free(char **list);

#endif
