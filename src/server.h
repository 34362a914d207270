/* server.h - listeners and worker threads.
 *
 * One event loop per worker thread. Each worker owns its own listening sockets
 * (SO_REUSEPORT: the kernel spreads new connections over the workers) and every
 * connection it accepts; connections never move between threads. */
#ifndef CERTGATE_SERVER_H
#define CERTGATE_SERVER_H

#include <stddef.h>

struct server_config {
    const char *host;        /* bind address of both listeners ("0.0.0.0", "::1", ...) */
    unsigned https_port;     /* required */
    unsigned http_port;      /* 0: no plain HTTP listener */
    int threads;             /* >= 1 */
    /* Optional: called once the sockets are bound, before any worker thread starts and
     * before anything is accepted (main drops root there); when it fails (-1, sentence
     * in err) server_start fails. */
    int (*after_bind)(void *arg, char *err, size_t errlen);
    void *after_bind_arg;
};

/* Per-worker hooks of the application (each gets the worker, conn.h): stopping is
 * called when the worker stops accepting (close idle pooled connections there), exit
 * when its loop has ended (free the worker's app state). */
struct worker;
struct server_hooks {
    void (*worker_stopping)(struct worker *w);
    void (*worker_exit)(struct worker *w);
};
void server_set_hooks(const struct server_hooks *hooks);

/* Binds the listening sockets (failing with a sentence such as "cannot listen on
 * 0.0.0.0:9999: Address already in use") and starts the workers. */
int server_start(const struct server_config *cfg, char *err, size_t errlen);

/* Graceful stop: stop accepting, close idle connections, let in-flight requests finish
 * (answered with Connection: close), force-close what is left after 10 s. Returns at
 * once; thread-safe. */
void server_stop(void);

/* Waits for the workers to end (after server_stop). */
void server_join(void);

/* max-connections when custom.properties does not set it: (RLIMIT_NOFILE - 128) / 2, at
 * least 16 (a proxied client may hold an upstream connection; 128 descriptors are kept for
 * listeners, event loops, logs, files and the API). Read at server_start. */
unsigned server_default_max_connections(void);

/* The bound HTTPS port (useful when 0 was asked for). */
unsigned server_https_port(void);

#endif
