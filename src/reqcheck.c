/* reqcheck.c - strict checks of a request head (see reqcheck.h). */
#include "reqcheck.h"

#include "err.h"
#include "http.h"

#include <llhttp.h>
#include <string.h>
#include <strings.h>

/* tchar (RFC 9110 5.6.2): 1 for the bytes a token may hold */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

int reqcheck_token(const char *s, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!tchar[(unsigned char)s[i]]) return 0;
    return 1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

const char *reqcheck_path(const char *path, size_t len)
{
    size_t dots = 0, seglen = 0; /* in the current segment: '.' (raw or %2E) and bytes */
    for (size_t i = 0; i <= len; i++) {
        int c = i < len ? (unsigned char)path[i] : '/';
        int sep = c == '/';
        if (c == '\\') return "has a backslash";
        if (c == '%') {
            int hi = i + 2 < len ? hexval(path[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(path[i + 2]) : -1;
            if (lo < 0) return "has a '%' that does not start a %XX escape";
            c = hi * 16 + lo;
            i += 2;
            if (c == '\\') return "has a backslash (%5C)";
            /* an upstream that decodes %2F before it resolves dot segments would see a
             * separator: "..%2F" counts as "../" */
            sep = c == '/';
        }
        if (sep) {
            if (seglen > 0 && dots == seglen && dots <= 2)
                return dots == 1 ? "has a '.' segment" : "has a '..' segment";
            dots = seglen = 0;
            continue;
        }
        seglen++;
        if (c == '.') dots++;
    }
    return NULL;
}

/* The characters of an authority (host[:port], IPv6 in brackets) as this gateway accepts
 * it in an absolute-form target or a Host header: no userinfo, no white space. */
static int authority_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') &&
            !strchr("-._~!$&'()*+,;=:[]%", c))
            return 0;
    }
    return 1;
}

static int check_target(const struct http_request *r, char *why, size_t whylen)
{
    const char *t = r->target;
    size_t n = strlen(t);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7f) {
            err_set(why, whylen, "the request target has a control character, a space or a "
                                 "non-ASCII byte (0x%02x); percent-encode it", c);
            return 400;
        }
        if (c == '#') {
            err_set(why, whylen, "the request target has a fragment ('#')");
            return 400;
        }
    }
    const char *path = t;
    if (t[0] == '*' && t[1] == '\0') {
        err_set(why, whylen, "the asterisk-form target (OPTIONS *) is not supported");
        return 400;
    }
    if (t[0] != '/') {
        size_t skip = strncasecmp(t, "http://", 7) == 0 ? 7 : strncasecmp(t, "https://", 8) == 0 ? 8 : 0;
        if (!skip) {
            err_set(why, whylen, "the request target is neither a path starting with '/' nor "
                                 "an http:// or https:// URL");
            return 400;
        }
        const char *a = t + skip;
        size_t al = strcspn(a, "/?");
        if (al == 0 || !authority_ok(a, al)) {
            err_set(why, whylen, "the request target's URL has an empty or invalid host");
            return 400;
        }
        path = a + al;
    }
    const char *bad = reqcheck_path(path, strcspn(path, "?"));
    if (bad) {
        err_set(why, whylen, "the request path %s: no path segment or name may be '.' or "
                             "'..' or hold a backslash, also percent-encoded; send the path "
                             "normalized (curl does unless --path-as-is)", bad);
        return 400;
    }
    return 0;
}

/* Transfer-Encoding values, all lines taken as one list: 0, or the status with why. */
static int check_codings(const struct http_request *r, int *chunked, char *why, size_t whylen)
{
    unsigned nchunked = 0, ncodings = 0;
    int last_chunked = 0;
    char unknown[40] = "";
    for (unsigned i = 0; i < r->nheaders; i++) {
        const struct http_header *h = &r->headers[i];
        if (strcasecmp(h->name, "transfer-encoding") != 0) continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
            if (p == end) break;
            const char *s = p;
            while (p < end && *p != ',') p++;
            const char *e = p;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
            if (!reqcheck_token(s, (size_t)(e - s))) {
                err_set(why, whylen, "malformed Transfer-Encoding: '%.*s' is not a transfer "
                                     "coding", (int)(e - s > 40 ? 40 : e - s), s);
                return 400;
            }
            ncodings++;
            last_chunked = (size_t)(e - s) == 7 && strncasecmp(s, "chunked", 7) == 0;
            if (last_chunked)
                nchunked++;
            else if (!unknown[0])
                err_set(unknown, sizeof unknown, "%.*s", (int)(e - s), s);
        }
    }
    if (ncodings == 0) {
        err_set(why, whylen, "malformed Transfer-Encoding: the header is empty");
        return 400;
    }
    if (nchunked && (nchunked > 1 || !last_chunked)) {
        err_set(why, whylen, "malformed Transfer-Encoding: chunked must be the last transfer "
                             "coding, and be given once");
        return 400;
    }
    if (unknown[0]) {
        err_set(why, whylen, "the transfer coding '%s' is not supported (only chunked is)",
                unknown);
        return 501;
    }
    *chunked = 1;
    return 0;
}

int reqcheck_head(const struct http_request *r, int *chunked, int64_t *content_length,
                  char *why, size_t whylen)
{
    *chunked = 0;
    *content_length = -1;
    if (r->method == HTTP_CONNECT) {
        err_set(why, whylen, "CONNECT is not supported by this gateway");
        return 405;
    }
    int st = check_target(r, why, whylen);
    if (st) return st;
    unsigned hosts = 0, lengths = 0, codings = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        const struct http_header *h = &r->headers[i];
        if (!reqcheck_token(h->name, h->name_len)) {
            err_set(why, whylen, "malformed HTTP request: a header name is not a token "
                                 "(RFC 9110 5.1)");
            return 400;
        }
        for (size_t k = 0; k < h->value_len; k++) {
            unsigned char c = (unsigned char)h->value[k];
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                err_set(why, whylen, "malformed HTTP request: the value of %.*s has a control "
                                     "character (0x%02x)", (int)(h->name_len > 64 ? 64 : h->name_len), h->name, c);
                return 400;
            }
        }
        switch (h->name_len) {
        case 4:
            if (strcasecmp(h->name, "host") == 0) {
                hosts++;
                if (!authority_ok(h->value, h->value_len)) {
                    err_set(why, whylen, "malformed HTTP request: the Host header is not a "
                                         "host[:port]");
                    return 400;
                }
            }
            break;
        case 14:
            if (strcasecmp(h->name, "content-length") == 0) {
                lengths++;
                int64_t v = 0;
                if (h->value_len == 0 || h->value_len > 18) v = -1;
                for (size_t k = 0; v >= 0 && k < h->value_len; k++) {
                    char c = h->value[k];
                    v = c >= '0' && c <= '9' ? v * 10 + (c - '0') : -1;
                }
                if (v < 0) {
                    err_set(why, whylen, "malformed HTTP request: Content-Length is not a "
                                         "number of bytes");
                    return 400;
                }
                *content_length = v;
            }
            break;
        case 17:
            if (strcasecmp(h->name, "transfer-encoding") == 0) codings++;
            break;
        default:
            break;
        }
    }
    if (hosts > 1 || (hosts == 0 && r->http_minor >= 1)) {
        err_set(why, whylen, "malformed HTTP request: %s", hosts ? "more than one Host header"
                                                                 : "no Host header (HTTP/1.1 requires one)");
        return 400;
    }
    if (lengths > 1) {
        err_set(why, whylen, "malformed HTTP request: more than one Content-Length header");
        return 400;
    }
    if (codings) {
        if (lengths) {
            err_set(why, whylen, "malformed HTTP request: both Content-Length and "
                                 "Transfer-Encoding (only one framing is allowed)");
            return 400;
        }
        if (r->http_minor == 0) {
            err_set(why, whylen, "malformed HTTP request: Transfer-Encoding in an HTTP/1.0 "
                                 "request");
            return 400;
        }
        st = check_codings(r, chunked, why, whylen);
        if (st) return st;
    }
    return 0;
}

/* the line-ending scan (see reqcheck.h); the parser pauses at the end of each request,
 * so a scan starts exactly where a request starts. A CR that is not followed by LF is left
 * to the parser and reqcheck_head (a control character in a value, the target or the
 * request line): here only LF matters, found with memchr. */
enum { HS_START = REQCHECK_SCAN_START, HS_LINE, HS_CR, HS_LF, HS_LAST_CR, HS_DONE };
_Static_assert(HS_DONE == REQCHECK_SCAN_DONE, "the scan's states");

int reqcheck_scan_lines(uint8_t *state, const char *p, size_t n, char *why, size_t whylen)
{
    uint8_t st = *state;
    size_t i = 0;
    while (i < n && st != HS_DONE) {
        char c = p[i];
        switch (st) {
        case HS_START: /* empty lines before a request line are skipped (RFC 9112 2.2) */
            if (c != '\r' && c != '\n') st = HS_LINE;
            else i++;
            break;
        case HS_LINE: {
            const char *lf = memchr(p + i, '\n', n - i);
            if (!lf) {
                st = p[n - 1] == '\r' ? HS_CR : HS_LINE;
                i = n;
                break;
            }
            if (lf == p + i || lf[-1] != '\r') goto bare_lf;
            i = (size_t)(lf - p) + 1;
            st = HS_LF;
            break;
        }
        case HS_CR: /* the last read ended with CR */
            st = c == '\n' ? HS_LF : HS_LINE;
            i++;
            break;
        case HS_LF:
            if (c == ' ' || c == '\t') {
                err_set(why, whylen, "malformed HTTP request: a header line continued on the "
                                     "next line (obs-fold) or starting with white space");
                return -1;
            }
            if (c == '\n') goto bare_lf;
            if (c == '\r') {
                st = HS_LAST_CR;
                i++;
            } else {
                st = HS_LINE;
            }
            break;
        case HS_LAST_CR:
            if (c != '\n') {
                err_set(why, whylen, "malformed HTTP request: CR not followed by LF");
                return -1;
            }
            st = HS_DONE;
            break;
        default:
            break;
        }
    }
    *state = st;
    return 0;
bare_lf:
    err_set(why, whylen, "malformed HTTP request: a line ends with LF alone (CRLF is "
                         "required)");
    return -1;
}
