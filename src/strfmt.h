/* strfmt.h - numbers to text without stdio, for what is written on every request (status
 * lines, Content-Length, chunk sizes): vsnprintf cost ~1,000 instructions a call there. */
#ifndef CERTGATE_STRFMT_H
#define CERTGATE_STRFMT_H

#include <stddef.h>
#include <string.h>

#define STRFMT_NUM_MAX 20 /* digits of the largest unsigned long long */

/* Writes v in decimal (base 10) or lower-case hex (base 16) to dst, no terminator;
 * returns the length. */
static inline size_t strfmt_u(char *dst, unsigned long long v, unsigned base)
{
    char tmp[STRFMT_NUM_MAX];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    for (size_t i = 0; i < n; i++) dst[i] = tmp[n - 1 - i];
    return n;
}

/* The n bytes at in as 2n lower-case hex digits, then a terminator, at out. */
static inline void strfmt_hex(char *out, const void *in, size_t n)
{
    const unsigned char *b = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = "0123456789abcdef"[b[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* A bounded text builder on a caller's array: a write past the end is cut short and
 * flagged, never overflows. */
struct strfmt {
    char *p;
    size_t len, cap;
    int cut;
};

static inline void strfmt_put(struct strfmt *s, const void *p, size_t n)
{
    if (n > s->cap - s->len) {
        n = s->cap - s->len;
        s->cut = 1;
    }
    memcpy(s->p + s->len, p, n);
    s->len += n;
}

static inline void strfmt_str(struct strfmt *s, const char *str)
{
    strfmt_put(s, str, strlen(str));
}

static inline void strfmt_num(struct strfmt *s, unsigned long long v, unsigned base)
{
    char d[STRFMT_NUM_MAX];
    strfmt_put(s, d, strfmt_u(d, v, base));
}

/* v in decimal, with a minus sign when negative (as printf's %lld). */
static inline void strfmt_int(struct strfmt *s, long long v)
{
    if (v < 0) strfmt_put(s, "-", 1);
    strfmt_num(s, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v, 10);
}

/* Milliseconds as seconds with three decimals, as printf's "%.3f" of ms / 1000.0. */
static inline void strfmt_millis(struct strfmt *s, unsigned long long ms)
{
    char frac[4] = {'.', (char)('0' + ms % 1000 / 100), (char)('0' + ms % 100 / 10),
                    (char)('0' + ms % 10)};
    strfmt_num(s, ms / 1000, 10);
    strfmt_put(s, frac, sizeof frac);
}

#endif
