/* memio.c - the in-memory transport (see memio.h). */
#include "memio.h"

#include "conn.h"

#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

struct memio *memio_new(void)
{
    struct memio *m = calloc(1, sizeof *m);
    if (m) m->room = SIZE_MAX;
    return m;
}

void memio_free(struct memio *m)
{
    if (!m) return;
    if (m->c) m->c->mem = NULL;
    buf_free(&m->in);
    buf_free(&m->out);
    free(m);
}

void memio_attach(struct memio *m, struct conn *c)
{
    m->c = c;
    c->mem = m;
    c->fd = -1;
}

/* Posts the connection when it waits for something that is now there. */
static void wake(struct memio *m)
{
    if (m->c && memio_ready(m, m->c->events)) conn_post(m->c);
}

void memio_push(struct memio *m, const void *p, size_t n)
{
    if (m->in_pos == m->in.len) m->in_pos = m->in.len = 0;
    if (buf_put(&m->in, p, n) != 0) abort();
    wake(m);
}

void memio_push_str(struct memio *m, const char *s)
{
    memio_push(m, s, strlen(s));
}

void memio_eof(struct memio *m)
{
    m->in_eof = 1;
    wake(m);
}

void memio_reset(struct memio *m)
{
    m->reset = 1;
    if (m->c) conn_post(m->c);
}

void memio_set_room(struct memio *m, size_t room)
{
    m->room = room;
    wake(m);
}

const char *memio_take(struct memio *m, size_t *len)
{
    if (buf_put(&m->out, "", 0) != 0) abort(); /* a buffer never written to yet */
    *len = m->out.len;
    m->out.len = 0; /* the bytes stay readable until the next write */
    return m->out.p;
}

enum tls_io memio_read(struct memio *m, void *p, size_t len, size_t *n)
{
    if (m->reset) return TLS_IO_ERROR;
    size_t have = m->in.len - m->in_pos;
    if (have == 0) return m->in_eof ? TLS_IO_EOF : TLS_IO_WANT_READ;
    if (len > have) len = have;
    memcpy(p, m->in.p + m->in_pos, len);
    m->in_pos += len;
    *n = len;
    return TLS_IO_OK;
}

enum tls_io memio_write(struct memio *m, const void *p, size_t len, size_t *n)
{
    if (m->reset || m->shut_wr) return TLS_IO_ERROR;
    if (m->room == 0) return TLS_IO_WANT_WRITE;
    if (len > m->room) len = m->room;
    if (m->room != SIZE_MAX) m->room -= len;
    if (buf_put(&m->out, p, len) != 0) abort();
    m->out_total += len;
    *n = len;
    return TLS_IO_OK;
}

size_t memio_pending(const struct memio *m)
{
    return m->in.len - m->in_pos;
}

unsigned memio_events(const struct memio *m, unsigned ev)
{
    if (m->reset) return ev ? ev | EPOLLERR | EPOLLHUP : 0;
    unsigned r = 0;
    if ((ev & EPOLLIN) && (memio_pending(m) || m->in_eof)) r |= EPOLLIN;
    if ((ev & EPOLLOUT) && m->room > 0) r |= EPOLLOUT;
    return r;
}

int memio_ready(const struct memio *m, unsigned ev)
{
    return memio_events(m, ev) != 0;
}
