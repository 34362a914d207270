/* acme_http.c - HTTPS requests of the ACME thread with libcurl's multi interface. */
#include "acme_http.h"

#include "err.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ACME_HTTP_MAX (1u << 20)

struct acme_http {
    CURLM *multi;
    char *ca_file;
    const _Atomic int *stop;
};

struct acme_http *acme_http_new(const char *ca_file, const _Atomic int *stop)
{
    struct acme_http *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->multi = curl_multi_init();
    h->ca_file = ca_file ? strdup(ca_file) : NULL;
    h->stop = stop;
    if (!h->multi || (ca_file && !h->ca_file)) {
        acme_http_free(h);
        return NULL;
    }
    return h;
}

void acme_http_free(struct acme_http *h)
{
    if (!h) return;
    if (h->multi) curl_multi_cleanup(h->multi);
    free(h->ca_file);
    free(h);
}

void acme_http_wake(struct acme_http *h)
{
    curl_multi_wakeup(h->multi);
}

int acme_http_sleep(struct acme_http *h, long ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (atomic_load(h->stop)) return -1;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long done = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (done >= ms) return 0;
        long left = ms - done;
        curl_multi_poll(h->multi, NULL, 0, (int)(left > 60000 ? 60000 : left), NULL);
    }
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct acme_resp *r = arg;
    size_t add = size * n;
    if (r->len + add > ACME_HTTP_MAX) return 0; /* too large: the transfer fails */
    char *nb = realloc(r->body, r->len + add + 1);
    if (!nb) return 0;
    memcpy(nb + r->len, p, add);
    r->len += add;
    nb[r->len] = '\0';
    r->body = nb;
    return add;
}

/* The value of header line `line` when it is `name`, trimmed, malloc'd; else NULL. */
static char *header_value(const char *line, size_t n, const char *name)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':') return NULL;
    const char *v = line + nl + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && isspace((unsigned char)end[-1])) end--;
    return strndup(v, (size_t)(end - v));
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct acme_resp *r = arg;
    size_t len = size * n;
    if (len > 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new answer (after 100, redirects) */
        free(r->nonce);
        free(r->location);
        free(r->ctype);
        r->nonce = r->location = r->ctype = NULL;
        r->retry_after = -1;
        return len;
    }
    char *v;
    if ((v = header_value(p, len, "Replay-Nonce"))) {
        free(r->nonce);
        r->nonce = v;
    } else if ((v = header_value(p, len, "Location"))) {
        free(r->location);
        r->location = v;
    } else if ((v = header_value(p, len, "Content-Type"))) {
        free(r->ctype);
        r->ctype = v;
    } else if ((v = header_value(p, len, "Retry-After"))) {
        char *end;
        long s = strtol(v, &end, 10);
        if (end != v && !*end && s >= 0) {
            r->retry_after = s;
        } else {
            time_t when = curl_getdate(v, NULL);
            if (when > 0) r->retry_after = when > time(NULL) ? (long)(when - time(NULL)) : 0;
        }
        free(v);
    }
    return len;
}

void acme_resp_free(struct acme_resp *r)
{
    free(r->body);
    free(r->nonce);
    free(r->location);
    free(r->ctype);
    memset(r, 0, sizeof *r);
    r->retry_after = -1;
}

int acme_http_do(struct acme_http *h, const char *method, const char *url, const char *body,
                 const char *accept, struct acme_resp *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->retry_after = -1;
    CURL *e = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char errbuf[CURL_ERROR_SIZE] = "", acc[200];
    if (!e) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    if (accept) {
        snprintf(acc, sizeof acc, "Accept: %s", accept);
        hdrs = curl_slist_append(hdrs, acc);
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "certgate/" CERTGATE_VERSION);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    if (h->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/jose+json");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
    }
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_multi_add_handle(h->multi, e);
    CURLcode res = CURLE_OK;
    int running = 1, done = 0, stopped = 0;
    while (!done) {
        if (atomic_load(h->stop)) {
            stopped = 1;
            break;
        }
        if (curl_multi_perform(h->multi, &running) != CURLM_OK) break;
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(h->multi, &left)))
            if (m->msg == CURLMSG_DONE && m->easy_handle == e) {
                res = m->data.result;
                done = 1;
            }
        if (!done && running) curl_multi_poll(h->multi, NULL, 0, 1000, NULL);
        else if (!done) break;
    }
    curl_multi_remove_handle(h->multi, e);
    int rc = 0;
    if (stopped) {
        err_set(err, errlen, "stopped");
        rc = -1;
    } else if (!done || res != CURLE_OK) {
        err_set(err, errlen, "%s %s: %s", method, url,
                *errbuf ? errbuf : curl_easy_strerror(done ? res : CURLE_FAILED_INIT));
        rc = -1;
    } else {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
        if (!r->body && !(r->body = calloc(1, 1))) {
            err_set(err, errlen, "out of memory");
            rc = -1;
        }
    }
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    return rc;
}
