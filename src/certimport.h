/* certimport.h - `certgate cert import`: a PKCS#12 file built from PEM files, stored in
 * DIR/ssl like an API upload and, with --activate, recorded in custom.properties. */
#ifndef CERTGATE_CERTIMPORT_H
#define CERTGATE_CERTIMPORT_H

/* Runs `certgate cert ARGS...` (argv[0] is the sub-command). Prints what it did on stdout,
 * warnings and errors on stderr. Returns the exit status: 0 done, 1 refused (nothing
 * stored), 2 usage. Not thread-safe (a command of its own process). */
int certimport_command(int argc, char **argv);

#endif
