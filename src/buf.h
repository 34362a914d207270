/* buf.h - a growable byte buffer.
 *
 * Bytes are appended at the end; a NUL is kept after them, so a buffer of text can be
 * read as a C string. Memory doubles as needed and is owned by the buffer (buf_free).
 * No locking: one thread uses a buffer at a time. */
#ifndef CERTGATE_BUF_H
#define CERTGATE_BUF_H

#include <stddef.h>

struct buf {
    char *p; /* NULL until the first append */
    size_t len, cap;
};

/* Appends n bytes of p: 0, or -1 when out of memory (b unchanged). */
int buf_put(struct buf *b, const void *p, size_t n);
/* Appends the NUL-terminated strings given, up to a NULL: 0 or -1 as buf_put. */
int buf_cat(struct buf *b, ...);
/* Frees the memory; b becomes empty. */
void buf_free(struct buf *b);

#endif
