/* buf.c - a growable byte buffer (see buf.h). */
#include "buf.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int buf_put(struct buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *nb = realloc(b->p, cap);
        if (!nb) return -1;
        b->p = nb;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int buf_cat(struct buf *b, ...)
{
    va_list ap;
    va_start(ap, b);
    int rc = 0;
    for (const char *s; rc == 0 && (s = va_arg(ap, const char *));) rc = buf_put(b, s, strlen(s));
    va_end(ap);
    return rc;
}

void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
