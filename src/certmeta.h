/* certmeta.h - the public facts of each stored certificate file, kept across restarts.
 *
 * Most PKCS#12 files encrypt their certificates: without the password nothing about them
 * can be read. So whenever certgate has a stored file open with its password (upload,
 * `cert import`, activation, describe, start and reload of the configured file) it
 * records the facts of its key entries (alias, subject, SHA-256, notBefore, notAfter:
 * public data, never a password) in DIR/ssl-meta/NAME.json (0600, written atomically),
 * together with the version of the file (size, mtime, inode). At start the records whose
 * file is still that version feed the certificate gauges and the expiry warnings; a
 * record whose file changed or is gone is stale and ignored. Deleting a file through the
 * API removes its record. */
#ifndef CERTGATE_CERTMETA_H
#define CERTGATE_CERTMETA_H

#include <stddef.h>
#include <sys/stat.h>

#include "metrics.h"

#define CERTMETA_DIR "ssl-meta"

struct p12_file;
struct certmeta_rec;

/* The facts of every key entry of p12 (NULL when out of memory). */
struct certmeta_rec *certmeta_rec_of(const struct p12_file *p12);
void certmeta_rec_free(struct certmeta_rec *r);
size_t certmeta_count(const struct certmeta_rec *r);
/* The facts (sha: the 16-hex prefix the gauges show). */
const struct metrics_cert_fact *certmeta_facts(const struct certmeta_rec *r);
/* The full SHA-256 of entry i, 64 hex digits. */
const char *certmeta_sha256(const struct certmeta_rec *r, size_t i);

/* The record of r for the file `name` at version st, as JSON text (malloc'd; NULL when
 * out of memory). */
char *certmeta_encode(const char *name, const struct stat *st, const struct certmeta_rec *r);
/* Reads a record: 0 with *r when text is a valid record of `name` made for the version
 * st of the file; -1 with the reason otherwise (not a record, another file, stale). */
int certmeta_decode(const char *text, const char *name, const struct stat *st,
                    struct certmeta_rec **r, char *err, size_t errlen);

/* Writes r as the record of gw_paths.ssl_dir/name; ver: the version of the file the facts
 * were read from (NULL: the file as it is now). Creates DIR/ssl-meta (0700) when needed. */
int certmeta_save(const char *name, const struct certmeta_rec *r, const struct stat *ver,
                  char *err, size_t errlen);
/* A stored file was opened with its password: its facts go to the gauges
 * (metrics_certs_set) and to its record (a failure is logged, nothing else), and the
 * expiry check is asked to run (expiry_poke). name must be a plain file name of the ssl
 * directory; anything else only updates the gauges. */
void certmeta_note(const char *name, const struct p12_file *p12, const struct stat *ver);
/* Removes the record of name (a missing one is fine). */
void certmeta_remove(const char *name);
/* At start: loads every valid, current record into the gauges' table; returns how many. */
size_t certmeta_load_all(void);

#endif
