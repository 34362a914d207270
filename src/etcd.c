/* etcd.c - etcd v3 through its HTTP/JSON gateway: requests, endpoint failover, watch. */
#include "etcd.h"

#include "err.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the largest answer read into memory (a range over the whole prefix); etcd's own request
 * limit is 1.5 MiB per value, and a range answer may hold many */
#define ETCD_MAX_ANSWER (256u * 1024 * 1024)
/* one watch answer (a batch of events) */
#define ETCD_MAX_WATCH_MSG (64u * 1024 * 1024)

struct etcd {
    char *eps[ETCD_MAX_ENDPOINTS];
    size_t neps, cur;
    char *ca_file, *cert_file, *key_file;
    long timeout_ms;
    long watch_idle_ms;
    CURL *h; /* reused by the unary calls (keeps the connection) */
};

/* ----- base64 ----- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *etcd_b64_encode(const void *data, size_t len)
{
    const unsigned char *p = data;
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < len) v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < len) v |= p[i + 2];
        *o++ = b64chars[v >> 18 & 63];
        *o++ = b64chars[v >> 12 & 63];
        *o++ = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? b64chars[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64val(char c)
{
    const char *q = c ? strchr(b64chars, c) : NULL;
    return q ? (int)(q - b64chars) : -1;
}

unsigned char *etcd_b64_decode(const char *s, size_t *len)
{
    size_t n = strlen(s);
    if (n % 4) return NULL;
    unsigned char *out = malloc(n / 4 * 3 + 1);
    size_t o = 0;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i += 4) {
        int pad = (s[i + 3] == '=') + (s[i + 2] == '=' && s[i + 3] == '=');
        if (pad && i + 4 != n) goto bad;
        int a = b64val(s[i]), b = b64val(s[i + 1]);
        int c = pad >= 2 ? 0 : b64val(s[i + 2]), d = pad >= 1 ? 0 : b64val(s[i + 3]);
        if (a < 0 || b < 0 || c < 0 || d < 0) goto bad;
        /* strict: the bits after the last byte are zero, so one text means one value */
        if ((pad == 2 && (b & 15)) || (pad == 1 && (c & 3))) goto bad;
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
        out[o++] = (unsigned char)(v >> 16);
        if (pad < 2) out[o++] = (unsigned char)(v >> 8);
        if (pad < 1) out[o++] = (unsigned char)v;
    }
    out[o] = '\0';
    *len = o;
    return out;
bad:
    free(out);
    return NULL;
}

/* ----- client ----- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int etcd_open(const struct etcd_opts *o, struct etcd **out, char *err, size_t errlen)
{
    *out = NULL;
    pthread_once(&curl_once, curl_init_once);
    struct etcd *e = calloc(1, sizeof *e);
    char *list = o->endpoints ? strdup(o->endpoints) : NULL;
    if (!e || !list) goto nomem;
    char *save = NULL;
    for (char *t = strtok_r(list, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        size_t l = strlen(t);
        while (l && t[l - 1] == '/') t[--l] = '\0';
        if (strncmp(t, "http://", 7) != 0 && strncmp(t, "https://", 8) != 0) {
            err_set(err, errlen, "etcd endpoint '%s' does not start with http:// or https://", t);
            goto fail;
        }
        if (e->neps == ETCD_MAX_ENDPOINTS) {
            err_set(err, errlen, "etcd: more than %d endpoints", ETCD_MAX_ENDPOINTS);
            goto fail;
        }
        if (!(e->eps[e->neps++] = strdup(t))) goto nomem;
    }
    if (e->neps == 0) {
        err_set(err, errlen, "etcd: no endpoint given (e.g. http://127.0.0.1:2379)");
        goto fail;
    }
    if ((o->ca_file && !(e->ca_file = strdup(o->ca_file))) ||
        (o->cert_file && !(e->cert_file = strdup(o->cert_file))) ||
        (o->key_file && !(e->key_file = strdup(o->key_file))) || !(e->h = curl_easy_init()))
        goto nomem;
    e->timeout_ms = o->timeout_ms ? (long)o->timeout_ms : 5000;
    e->watch_idle_ms = (long)o->watch_idle_ms;
    free(list);
    *out = e;
    return 0;
nomem:
    err_set(err, errlen, "etcd: out of memory");
fail:
    free(list);
    etcd_close(e);
    return -1;
}

void etcd_close(struct etcd *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->neps; i++) free(e->eps[i]);
    free(e->ca_file);
    free(e->cert_file);
    free(e->key_file);
    if (e->h) curl_easy_cleanup(e->h);
    free(e);
}

const char *etcd_endpoint(const struct etcd *e)
{
    return e->eps[e->cur];
}

/* ----- one request ----- */

struct rbuf {
    char *p;
    size_t len, cap, max;
};

static int rbuf_add(struct rbuf *b, const char *data, size_t n)
{
    if (b->len + n + 1 > b->max) return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    return rbuf_add(arg, ptr, size * nmemb) == 0 ? size * nmemb : 0;
}

/* The options every request shares. */
static void setup(const struct etcd *e, CURL *h, const char *url, const char *body,
                  struct curl_slist *hdrs)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, e->timeout_ms);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 10L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 5L);
    if (e->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, e->ca_file);
    if (e->cert_file) curl_easy_setopt(h, CURLOPT_SSLCERT, e->cert_file);
    if (e->key_file) curl_easy_setopt(h, CURLOPT_SSLKEY, e->key_file);
}

/* curl's reason for a failed transfer, made into a sentence that names the setting to fix
 * when etcd's certificate is not trusted (a wrong [fleet] ca-file is the usual cause). */
static void transfer_error(const struct etcd *e, CURLcode cc, const char *cerr, char *out,
                           size_t len)
{
    const char *why = cerr && cerr[0] ? cerr : curl_easy_strerror(cc);
    if (cc == CURLE_PEER_FAILED_VERIFICATION && e->ca_file)
        snprintf(out, len, "%s: etcd's TLS certificate is not signed by the CA in ca-file %s; "
                 "set [fleet] ca-file to the CA that issued it", why, e->ca_file);
    else if (cc == CURLE_PEER_FAILED_VERIFICATION)
        snprintf(out, len, "%s: etcd's TLS certificate is not trusted by the system's CAs; set "
                 "[fleet] ca-file to the CA that issued it", why);
    else
        snprintf(out, len, "%s", why);
}

/* etcd's message in an error answer: {"error":"...","code":N} (unary) or
 * {"error":{"grpc_code":N,"message":"..."}} (streams); *code gets the gRPC code. */
static const char *answer_error(json_t *root, int *code)
{
    json_t *er = json_object_get(root, "error");
    *code = (int)json_integer_value(json_object_get(root, "code"));
    if (json_is_string(er)) return json_string_value(er);
    if (json_is_object(er)) {
        *code = (int)json_integer_value(json_object_get(er, "grpc_code"));
        const char *m = json_string_value(json_object_get(er, "message"));
        return m ? m : "an error without a message";
    }
    return NULL;
}

/* gRPC codes a member gives when it cannot serve now but another might: 14 unavailable
 * (no leader, stopping), 4 deadline exceeded (request timed out) */
static int code_retryable(int code)
{
    return code == 14 || code == 4;
}

static void append(char *buf, size_t len, const char *fmt, const char *a, const char *b)
{
    size_t used = strlen(buf);
    if (used + 1 < len) snprintf(buf + used, len - used, fmt, a, b);
}

/* POSTs req (JSON) to path on the endpoints, starting with the current one; *resp gets
 * the parsed answer of the first endpoint that gives one. */
static int call(struct etcd *e, const char *path, json_t *req, json_t **resp, char *err,
                size_t errlen)
{
    *resp = NULL;
    char *body = json_dumps(req, JSON_COMPACT);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    char tried[1024] = "";
    int rc = -1;
    if (!body || !hdrs) {
        err_set(err, errlen, "etcd: out of memory");
        goto out;
    }
    for (size_t i = 0; i < e->neps; i++) {
        size_t idx = (e->cur + i) % e->neps;
        char url[1024];
        snprintf(url, sizeof url, "%s%s", e->eps[idx], path);
        struct rbuf b = {.max = ETCD_MAX_ANSWER};
        char cerr[CURL_ERROR_SIZE] = "";
        curl_easy_reset(e->h);
        setup(e, e->h, url, body, hdrs);
        curl_easy_setopt(e->h, CURLOPT_TIMEOUT_MS, e->timeout_ms);
        curl_easy_setopt(e->h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(e->h, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(e->h, CURLOPT_ERRORBUFFER, cerr);
        CURLcode cc = curl_easy_perform(e->h);
        long status = 0;
        curl_easy_getinfo(e->h, CURLINFO_RESPONSE_CODE, &status);
        json_t *root = cc == CURLE_OK && b.p ? json_loadb(b.p, b.len, 0, NULL) : NULL;
        free(b.p);
        if (cc != CURLE_OK) {
            char why[512];
            transfer_error(e, cc, cerr, why, sizeof why);
            append(tried, sizeof tried, "%s%s", tried[0] ? "; " : "", e->eps[idx]);
            append(tried, sizeof tried, ": %s%s", why, "");
            continue;
        }
        if (!json_is_object(root)) {
            char what[96];
            snprintf(what, sizeof what, "answered HTTP %ld without etcd's JSON (is it etcd?)",
                     status);
            append(tried, sizeof tried, "%s%s", tried[0] ? "; " : "", e->eps[idx]);
            append(tried, sizeof tried, ": %s%s", what, "");
            json_decref(root);
            continue;
        }
        int code = 0;
        const char *msg = answer_error(root, &code);
        if (msg || status != 200) {
            if (!msg) msg = "an error without a message";
            if (code_retryable(code) || status == 502 || status == 503 || status == 504) {
                append(tried, sizeof tried, "%s%s", tried[0] ? "; " : "", e->eps[idx]);
                append(tried, sizeof tried, ": %s%s", msg, "");
                json_decref(root);
                continue;
            }
            err_set(err, errlen, "etcd %s: %s", e->eps[idx], msg);
            json_decref(root);
            e->cur = idx;
            goto out;
        }
        e->cur = idx;
        *resp = root;
        rc = 0;
        goto out;
    }
    err_set(err, errlen, "etcd: no endpoint answered (%s)", tried);
out:
    free(body);
    curl_slist_free_all(hdrs);
    return rc;
}

/* ----- JSON helpers ----- */

/* etcd's int64 fields come as strings ("12"); absent means 0. */
static int64_t jint(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    if (json_is_integer(v)) return (int64_t)json_integer_value(v);
    if (json_is_string(v)) return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

static json_t *jint_new(int64_t v)
{
    return json_sprintf("%lld", (long long)v);
}

static json_t *jb64(const void *data, size_t len)
{
    char *s = etcd_b64_encode(data, len);
    json_t *j = s ? json_string(s) : NULL;
    free(s);
    return j;
}

/* range_end for a prefix: the key with its last byte (not 0xff) incremented; "\0" when
 * every byte is 0xff (to the end of the key space). */
static json_t *prefix_end(const char *key)
{
    size_t n = strlen(key);
    char *end = strdup(key);
    json_t *j = NULL;
    if (!end) return NULL;
    while (n && (unsigned char)end[n - 1] == 0xff) n--;
    if (n == 0) {
        j = jb64("", 1);
    } else {
        end[n - 1]++;
        j = jb64(end, n);
    }
    free(end);
    return j;
}

static void kv_free(struct etcd_kv *kv)
{
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof *kv);
}

static int kv_parse(json_t *o, struct etcd_kv *kv)
{
    memset(kv, 0, sizeof *kv);
    const char *k = json_string_value(json_object_get(o, "key"));
    const char *v = json_string_value(json_object_get(o, "value"));
    size_t kl = 0;
    if (!k || !(kv->key = (char *)etcd_b64_decode(k, &kl))) return -1;
    if (!(kv->value = etcd_b64_decode(v ? v : "", &kv->value_len))) {
        kv_free(kv);
        return -1;
    }
    kv->create_revision = jint(o, "create_revision");
    kv->mod_revision = jint(o, "mod_revision");
    kv->version = jint(o, "version");
    kv->lease = jint(o, "lease");
    return 0;
}

/* ----- kv ----- */

int etcd_range(struct etcd *e, const char *key, int prefix, int64_t revision,
               struct etcd_range_result *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_t *req = json_object(), *resp = NULL;
    int rc = -1;
    if (!req || json_object_set_new(req, "key", jb64(key, strlen(key))) < 0 ||
        (prefix && json_object_set_new(req, "range_end", prefix_end(key)) < 0) ||
        (revision && json_object_set_new(req, "revision", jint_new(revision)) < 0)) {
        err_set(err, errlen, "etcd: out of memory");
        goto out;
    }
    if (call(e, "/v3/kv/range", req, &resp, err, errlen) < 0) goto out;
    out->revision = jint(json_object_get(resp, "header"), "revision");
    out->more = json_is_true(json_object_get(resp, "more"));
    json_t *kvs = json_object_get(resp, "kvs");
    size_t n = json_array_size(kvs);
    if (n && !(out->kvs = calloc(n, sizeof *out->kvs))) {
        err_set(err, errlen, "etcd: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++, out->n++)
        if (kv_parse(json_array_get(kvs, i), &out->kvs[i]) < 0) {
            err_set(err, errlen, "etcd %s: a key or value in the range answer is not base64",
                    etcd_endpoint(e));
            etcd_range_free(out);
            goto out;
        }
    rc = 0;
out:
    json_decref(req);
    json_decref(resp);
    return rc;
}

void etcd_range_free(struct etcd_range_result *r)
{
    for (size_t i = 0; i < r->n; i++) kv_free(&r->kvs[i]);
    free(r->kvs);
    memset(r, 0, sizeof *r);
}

static json_t *txn_cmp(const struct etcd_cmp *c)
{
    json_t *o = json_object();
    int mod = c->target == ETCD_CMP_MOD;
    if (!o || json_object_set_new(o, "key", jb64(c->key, strlen(c->key))) < 0 ||
        json_object_set_new(o, "target", json_string(mod ? "MOD" : "CREATE")) < 0 ||
        json_object_set_new(o, "result", json_string("EQUAL")) < 0 ||
        json_object_set_new(o, mod ? "mod_revision" : "create_revision",
                            jint_new(c->revision)) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *txn_op(const struct etcd_op *op)
{
    json_t *o = json_object(), *r = json_object();
    int put = op->type == ETCD_OP_PUT;
    if (!o || !r || json_object_set_new(r, "key", jb64(op->key, strlen(op->key))) < 0 ||
        (put && json_object_set_new(r, "value", jb64(op->value, op->value_len)) < 0) ||
        (put && op->lease && json_object_set_new(r, "lease", jint_new(op->lease)) < 0) ||
        (!put && op->prefix && json_object_set_new(r, "range_end", prefix_end(op->key)) < 0) ||
        json_object_set(o, put ? "request_put" : "request_delete_range", r) < 0) {
        json_decref(o);
        json_decref(r);
        return NULL;
    }
    json_decref(r);
    return o;
}

int etcd_txn(struct etcd *e, const struct etcd_cmp *cmps, size_t ncmps, const struct etcd_op *ops,
             size_t nops, int *succeeded, int64_t *revision, char *err, size_t errlen)
{
    *succeeded = 0;
    json_t *req = json_object(), *ca = json_array(), *oa = json_array(), *resp = NULL;
    int rc = -1, ok = req && ca && oa;
    for (size_t i = 0; ok && i < ncmps; i++) ok = json_array_append_new(ca, txn_cmp(&cmps[i])) == 0;
    for (size_t i = 0; ok && i < nops; i++) ok = json_array_append_new(oa, txn_op(&ops[i])) == 0;
    if (!ok || json_object_set(req, "compare", ca) < 0 || json_object_set(req, "success", oa) < 0) {
        err_set(err, errlen, "etcd: out of memory");
        goto out;
    }
    if (call(e, "/v3/kv/txn", req, &resp, err, errlen) < 0) goto out;
    *succeeded = json_is_true(json_object_get(resp, "succeeded"));
    if (revision) *revision = jint(json_object_get(resp, "header"), "revision");
    rc = 0;
out:
    json_decref(ca);
    json_decref(oa);
    json_decref(req);
    json_decref(resp);
    return rc;
}

/* ----- leases ----- */

static int lease_call(struct etcd *e, const char *path, const char *k1, int64_t v1, const char *k2,
                      int64_t v2, json_t **resp, char *err, size_t errlen)
{
    json_t *req = json_object();
    int rc = -1;
    if (!req || json_object_set_new(req, k1, jint_new(v1)) < 0 ||
        (k2 && json_object_set_new(req, k2, jint_new(v2)) < 0))
        err_set(err, errlen, "etcd: out of memory");
    else
        rc = call(e, path, req, resp, err, errlen);
    json_decref(req);
    return rc;
}

int etcd_lease_grant(struct etcd *e, int64_t ttl_s, int64_t *id, char *err, size_t errlen)
{
    json_t *resp;
    if (lease_call(e, "/v3/lease/grant", "TTL", ttl_s, "ID", 0, &resp, err, errlen) < 0) return -1;
    *id = jint(resp, "ID");
    json_decref(resp);
    if (*id == 0) {
        err_set(err, errlen, "etcd %s: the lease grant answer has no lease ID", etcd_endpoint(e));
        return -1;
    }
    return 0;
}

int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ttl_s, char *err, size_t errlen)
{
    json_t *resp;
    if (lease_call(e, "/v3/lease/keepalive", "ID", id, NULL, 0, &resp, err, errlen) < 0) return -1;
    *ttl_s = jint(json_object_get(resp, "result"), "TTL");
    json_decref(resp);
    if (*ttl_s <= 0) {
        err_set(err, errlen, "etcd %s: lease %lld has expired or was revoked", etcd_endpoint(e),
                (long long)id);
        return -1;
    }
    return 0;
}

int etcd_lease_revoke(struct etcd *e, int64_t id, char *err, size_t errlen)
{
    json_t *resp;
    if (lease_call(e, "/v3/lease/revoke", "ID", id, NULL, 0, &resp, err, errlen) < 0) return -1;
    json_decref(resp);
    return 0;
}

/* ----- watch ----- */

struct watch {
    etcd_watch_fn fn;
    void *arg;
    const atomic_int *stop;
    struct rbuf b;
    int64_t next_rev; /* resume point: after the last event delivered */
    int created, done, compacted, failed, idle;
    int64_t compact_rev;
    long idle_ms;      /* 0: no idle cut */
    long long last_ms; /* monotonic time of the last bytes received */
    char msg[512];
};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Handles one JSON object of the stream: 0 to go on, -1 to end this stream. */
static int watch_message(struct watch *w, json_t *root)
{
    int code = 0;
    const char *emsg = answer_error(root, &code);
    json_t *res = json_object_get(root, "result");
    if (emsg || !json_is_object(res)) {
        snprintf(w->msg, sizeof w->msg, "%s", emsg ? emsg : "an answer without a result");
        w->failed = 1;
        return -1;
    }
    if (json_is_true(json_object_get(res, "created"))) {
        w->created = 1;
        if (w->next_rev == 0) w->next_rev = jint(json_object_get(res, "header"), "revision") + 1;
    }
    if (json_is_true(json_object_get(res, "canceled"))) {
        w->compact_rev = jint(res, "compact_revision");
        if (w->compact_rev > 0) {
            w->compacted = 1;
        } else {
            const char *r = json_string_value(json_object_get(res, "cancel_reason"));
            snprintf(w->msg, sizeof w->msg, "the watch was canceled%s%s", r ? ": " : "",
                     r ? r : "");
            w->failed = 1;
        }
        return -1;
    }
    json_t *evs = json_object_get(res, "events");
    size_t n = json_array_size(evs);
    if (n == 0) { /* a progress notification: every event up to its revision was sent */
        int64_t rev = jint(json_object_get(res, "header"), "revision");
        if (!json_is_true(json_object_get(res, "created")) && w->created && rev >= w->next_rev)
            w->next_rev = rev + 1;
        return 0;
    }
    struct etcd_event *ev = calloc(n, sizeof *ev);
    size_t got = 0;
    int rc = 0;
    for (; ev && got < n; got++) {
        json_t *je = json_array_get(evs, got);
        ev[got].deleted = json_is_string(json_object_get(je, "type")) &&
                          strcmp(json_string_value(json_object_get(je, "type")), "DELETE") == 0;
        if (kv_parse(json_object_get(je, "kv"), &ev[got].kv) < 0) break;
    }
    if (!ev || got < n) {
        snprintf(w->msg, sizeof w->msg, "%s", ev ? "an event that is not base64" : "out of memory");
        w->failed = 1;
        rc = -1;
    } else {
        int64_t last = ev[n - 1].kv.mod_revision;
        if (w->fn(w->arg, ev, n) != 0) {
            w->done = 1;
            rc = -1;
        }
        if (last >= w->next_rev) w->next_rev = last + 1;
    }
    for (size_t i = 0; ev && i < got; i++) kv_free(&ev[i].kv);
    free(ev);
    return rc;
}

static size_t watch_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct watch *w = arg;
    size_t n = size * nmemb;
    w->last_ms = mono_ms();
    if (rbuf_add(&w->b, ptr, n) < 0) {
        snprintf(w->msg, sizeof w->msg, "a watch answer larger than %u bytes", ETCD_MAX_WATCH_MSG);
        w->failed = 1;
        return 0;
    }
    for (;;) { /* every complete object in the buffer, whatever separates them */
        size_t skip = strspn(w->b.p, " \t\r\n");
        memmove(w->b.p, w->b.p + skip, w->b.len - skip + 1);
        w->b.len -= skip;
        if (w->b.len == 0) return n;
        json_error_t je;
        json_t *root = json_loadb(w->b.p, w->b.len, JSON_DISABLE_EOF_CHECK, &je);
        if (!root) {
            if (json_error_code(&je) == json_error_premature_end_of_input) return n;
            snprintf(w->msg, sizeof w->msg, "the watch stream is not JSON (%s)", je.text);
            w->failed = 1;
            return 0;
        }
        size_t used = (size_t)je.position;
        if (used == 0 || used > w->b.len) used = w->b.len;
        memmove(w->b.p, w->b.p + used, w->b.len - used + 1);
        w->b.len -= used;
        int rc = watch_message(w, root);
        json_decref(root);
        if (rc < 0) return 0;
    }
}

static int watch_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct watch *w = arg;
    if (w->stop && atomic_load(w->stop)) return 1;
    if (w->idle_ms && mono_ms() - w->last_ms > w->idle_ms) {
        snprintf(w->msg, sizeof w->msg, "nothing received for %ld ms (a hung or cut-off member?)",
                 w->idle_ms);
        w->idle = 1;
        return 1;
    }
    return 0;
}

static int stopped(const struct watch *w)
{
    return w->done || (w->stop && atomic_load(w->stop));
}

/* One watch stream on endpoint url until it ends; the outcome is left in *w. */
static void watch_once(struct etcd *e, CURL *h, const char *ep, const char *key, int prefix,
                       struct watch *w, struct curl_slist *hdrs)
{
    json_t *req = json_object(), *cr = json_object();
    char *body = NULL, url[1024], cerr[CURL_ERROR_SIZE] = "";
    w->created = w->failed = w->idle = 0;
    w->msg[0] = '\0';
    w->b.len = 0;
    w->last_ms = mono_ms();
    if (!req || !cr || json_object_set_new(cr, "key", jb64(key, strlen(key))) < 0 ||
        (prefix && json_object_set_new(cr, "range_end", prefix_end(key)) < 0) ||
        (w->next_rev && json_object_set_new(cr, "start_revision", jint_new(w->next_rev)) < 0) ||
        json_object_set_new(cr, "progress_notify", json_true()) < 0 ||
        json_object_set(req, "create_request", cr) < 0 ||
        !(body = json_dumps(req, JSON_COMPACT))) {
        snprintf(w->msg, sizeof w->msg, "out of memory");
        w->failed = 1;
        goto out;
    }
    snprintf(url, sizeof url, "%s/v3/watch", ep);
    curl_easy_reset(h);
    setup(e, h, url, body, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, watch_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, watch_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, w);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    CURLcode cc = curl_easy_perform(h);
    if (!w->msg[0] && !w->done && !w->compacted && cc == CURLE_OK)
        snprintf(w->msg, sizeof w->msg, "the watch stream ended");
    else if (!w->msg[0] && !w->done && !w->compacted)
        transfer_error(e, cc, cerr, w->msg, sizeof w->msg);
out:
    free(body);
    json_decref(cr);
    json_decref(req);
}

int etcd_watch(struct etcd *e, const char *key, int prefix, int64_t start_revision,
               etcd_watch_fn fn, void *arg, const atomic_int *stop, int64_t *compact_revision,
               char *err, size_t errlen)
{
    struct watch w = {.fn = fn, .arg = arg, .stop = stop, .next_rev = start_revision,
                      .b = {.max = ETCD_MAX_WATCH_MSG}, .idle_ms = e->watch_idle_ms};
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    char tried[1024] = "";
    size_t fails = 0;
    int rc = -1;
    if (compact_revision) *compact_revision = 0;
    if (!h || !hdrs) {
        err_set(err, errlen, "etcd: out of memory");
        goto out;
    }
    for (;;) {
        const char *ep = e->eps[e->cur];
        watch_once(e, h, ep, key, prefix, &w, hdrs);
        if (stopped(&w)) {
            rc = 0;
            break;
        }
        if (w.compacted) {
            if (compact_revision) *compact_revision = w.compact_rev;
            err_set(err, errlen, "etcd %s: revision %lld has been compacted (the oldest is %lld)",
                    ep, (long long)w.next_rev, (long long)w.compact_rev);
            rc = ETCD_COMPACTED;
            break;
        }
        if (w.created) { /* it worked for a while: a new round of endpoints */
            fails = 0;
            tried[0] = '\0';
        }
        append(tried, sizeof tried, "%s%s", tried[0] ? "; " : "", ep);
        append(tried, sizeof tried, ": %s%s", w.msg, "");
        if (++fails >= e->neps) {
            err_set(err, errlen, "etcd: no endpoint accepted the watch (%s)", tried);
            break;
        }
        e->cur = (e->cur + 1) % e->neps;
        /* a short pause before the next endpoint, so that a flapping member is not hammered */
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
out:
    free(w.b.p);
    curl_slist_free_all(hdrs);
    if (h) curl_easy_cleanup(h);
    return rc;
}
