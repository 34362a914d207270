/* memio.h - an in-memory transport for a struct conn (tests and fuzzers).
 *
 * A connection whose c->mem is set reads what the test pushed and writes into a buffer
 * the test takes; no socket, no TLS. The test plays the peer: it pushes bytes, ends or
 * resets its side, limits how much the connection may write before it "blocks", and
 * advances the worker's clock by hand. Pushing input or opening room posts the
 * connection when it waits for that, as epoll would report it.
 *
 * Ownership: the test owns the memio (memio_free); the connection only points at it and
 * forgets it when it closes (m->closed is set then). One thread. */
#ifndef CERTGATE_MEMIO_H
#define CERTGATE_MEMIO_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "tls.h"

struct conn;

struct memio {
    struct conn *c; /* the connection using it; NULL once it closed */
    struct buf in;  /* towards the connection */
    size_t in_pos;  /* read by the connection up to here */
    struct buf out; /* written by the connection, not yet taken */
    size_t out_total; /* written by the connection, ever */
    size_t room;      /* bytes the connection may still write before it blocks */
    unsigned in_eof : 1, reset : 1, shut_wr : 1, closed : 1;
};

/* A new transport with unlimited room. NULL when out of memory. */
struct memio *memio_new(void);
void memio_free(struct memio *m);
/* Attaches m to c (c->mem = m, c->fd = -1). */
void memio_attach(struct memio *m, struct conn *c);
/* Bytes from the peer. */
void memio_push(struct memio *m, const void *p, size_t n);
void memio_push_str(struct memio *m, const char *s);
/* The peer ends its side (the connection reads end of stream once the pushed bytes are
 * read). */
void memio_eof(struct memio *m);
/* The peer resets the connection: reads and writes fail from now on. */
void memio_reset(struct memio *m);
/* How many more bytes the connection may write (SIZE_MAX: no limit). */
void memio_set_room(struct memio *m, size_t room);
/* What the connection wrote since the last take, NUL-terminated (valid until the next
 * call on m); *len gets its length. */
const char *memio_take(struct memio *m, size_t *len);

/* The connection's side (conn.c). */
enum tls_io memio_read(struct memio *m, void *p, size_t len, size_t *n);
enum tls_io memio_write(struct memio *m, const void *p, size_t len, size_t *n);
/* Input the connection has not read yet. */
size_t memio_pending(const struct memio *m);
/* The events epoll would report now for a connection asking for ev (EPOLLIN/EPOLLOUT):
 * a reset reports every event asked for plus EPOLLERR|EPOLLHUP (nothing when none is). */
unsigned memio_events(const struct memio *m, unsigned ev);
/* memio_events(m, ev) != 0 */
int memio_ready(const struct memio *m, unsigned ev);

#endif
