/* defcert.h - the default self-signed certificate.
 *
 * When no custom certificate is configured (or it fails to load), certgate serves a
 * self-signed ECDSA P-256 certificate with CN = host name and SAN = host name,
 * localhost, 127.0.0.1, ::1. It is generated on first start and kept in
 * <ssl_dir>/.default-certificate.pem (key and certificate, PEM, mode 0600, written
 * atomically). The leading dot keeps it out of the certificate API's listing. It is
 * reused across restarts and regenerated when it has expired, cannot be read, or was
 * made for another host name. */
#ifndef CERTGATE_DEFCERT_H
#define CERTGATE_DEFCERT_H

#include <stddef.h>

#define DEFCERT_FILE ".default-certificate.pem"

struct p12_file;

/* Loads (or creates) the default certificate as a one-entry keystore with alias
 * "default". When readonly is non-zero nothing is written: a missing or stale file
 * gives a fresh in-memory certificate. Returns 0, or -1 with a sentence in err. */
int defcert_load(const char *ssl_dir, int readonly, struct p12_file **out, char *err,
                 size_t errlen);

#endif
