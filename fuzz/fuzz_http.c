/* fuzz_http.c - the HTTP request path: the input is what a client sends on one
 * connection (in-memory transport, no TLS), through http.c's parsing and limits into
 * local buffered routes and the proxy (proxy.c, upclient.c), with a canned upstream.
 *
 * Input: one mode byte, then the client's bytes.
 *   mode & 0x3f   the bytes arrive in pieces of this size (0: all at once)
 *   mode & 0x40   the client ends its side after the last piece
 *   mode & 0x80   the client reads slowly (its window opens by 100 bytes per piece)
 * Checks: no crash or sanitizer report; every answer starts with a status line; after
 * every timeout has fired and the worker closed everything, nothing is left (memtest). */
#include "fuzzmem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned mode = data[0];
    data++;
    size--;
    fz_start();
    struct fz_client fc = {.m = client()};
    size_t piece = mode & 0x3f ? mode & 0x3f : size;
    if (mode & 0x80) memio_set_room(fc.m, 0);
    settle();
    for (size_t pos = 0; pos < size; pos += piece) {
        size_t n = size - pos < piece ? size - pos : piece;
        memio_push(fc.m, data + pos, n);
        settle();
        fz_answer_upstreams(0);
        settle();
        if (mode & 0x80) memio_set_room(fc.m, 100);
        settle();
        fz_client_take(&fc);
        advance(10); /* time passes between pieces */
    }
    if (mode & 0x40) memio_eof(fc.m);
    settle();
    fz_answer_upstreams(0);
    settle();
    fz_finish(&fc);
    return 0;
}
