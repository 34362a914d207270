/* fuzz_upstream.c - the upstream answer path: a client's request is proxied, and the
 * input is what the upstream answers on its connection (upclient.c's parsing, proxy.c's
 * header rules and relaying, http.c's streaming to the client). A second request follows
 * on the same client connection (it may reuse the pooled upstream connection).
 *
 * Input: one mode byte, then the upstream's bytes.
 *   mode & 0x1f   the bytes arrive in pieces of this size (0: all at once)
 *   mode & 0x20   the first request is HEAD (its answer has no body)
 *   mode & 0x40   the upstream ends its side after the last piece
 *   mode & 0x80   the client reads slowly (back-pressure towards the upstream)
 * Checks: as fuzz_http.c. */
#include "fuzzmem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned mode = data[0];
    data++;
    size--;
    fz_start();
    struct fz_client fc = {.m = client()};
    if (mode & 0x80) memio_set_room(fc.m, 0);
    memio_push_str(fc.m, mode & 0x20 ? "HEAD /a HTTP/1.1\r\nHost: front\r\n\r\n"
                                     : "GET /a HTTP/1.1\r\nHost: front\r\n\r\n");
    settle();
    FZ_CHECK(T.nup == 1);
    struct memio *u = T.up[0];
    memio_take(u, &(size_t){0});
    size_t piece = mode & 0x1f ? mode & 0x1f : size;
    for (size_t pos = 0; pos < size && !u->closed; pos += piece) {
        size_t n = size - pos < piece ? size - pos : piece;
        memio_push(u, data + pos, n);
        settle();
        if (mode & 0x80) memio_set_room(fc.m, 100);
        settle();
        fz_client_take(&fc);
        advance(10);
    }
    if (mode & 0x40) memio_eof(u);
    settle();
    fz_client_take(&fc);
    /* a second request; upstream connections other than the fuzzed one answer canned */
    memio_push_str(fc.m, "GET /b2 HTTP/1.1\r\nHost: front\r\n\r\n");
    memio_push_str(fc.m, "GET /c HTTP/1.1\r\nHost: front\r\n\r\n");
    settle();
    fz_answer_upstreams(1);
    settle();
    fz_finish(&fc);
    return 0;
}
