/* sdnotify.h - systemd's readiness protocol (sd_notify(3)) without libsystemd.
 *
 * Under a unit with Type=notify, systemd passes the path of a datagram socket in
 * NOTIFY_SOCKET ("/run/systemd/notify", or "@name" for an abstract socket); the service
 * sends newline-separated "KEY=VALUE" assignments to it: READY=1 once serving,
 * RELOADING=1 with MONOTONIC_USEC=<CLOCK_MONOTONIC in µs> when a reload starts (then
 * READY=1 when it is over), STOPPING=1 when a stop begins. Without NOTIFY_SOCKET every
 * call is a no-op.
 *
 * Thread-safety: sdnotify_open before any thread exists; sdnotify_send from any thread
 * (one sendto of a datagram). */
#ifndef CERTGATE_SDNOTIFY_H
#define CERTGATE_SDNOTIFY_H

#include <stddef.h>

/* Reads NOTIFY_SOCKET and opens the datagram socket (close-on-exec) while the process may
 * still reach it (before dropping root). Returns 0 (also when NOTIFY_SOCKET is unset or
 * empty: notifications are off), or -1 with a sentence in err when the variable holds an
 * unusable address or no socket could be created. */
int sdnotify_open(char *err, size_t errlen);

/* Sends state ("READY=1", "STOPPING=1", ...) as one datagram. Returns 0 (nothing to do
 * when notifications are off), or -1 with a sentence in err when sending failed. */
int sdnotify_send(const char *state, char *err, size_t errlen);

/* Sends "RELOADING=1\nMONOTONIC_USEC=<now>" (systemd ≥ 253 checks the time). */
int sdnotify_reloading(char *err, size_t errlen);

/* Closes the socket; later sends are no-ops. */
void sdnotify_close(void);

#endif
