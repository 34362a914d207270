/* metrics_text.c - the text exposition (format 0.0.4) of certgate's metrics. */
#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "gw.h"
#include "metrics.h"

char *metrics_text(size_t *len);

struct out {
    char *p;
    size_t len, cap;
    int oom;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    if (o->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->oom = 1;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

static void help(struct out *o, const char *name, const char *type, const char *text)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static const char *const routes[MR_N] = {"none", "health", "api", "proxy"};
static const char *const certops[MO_N] = {"list", "upload", "delete", "activate", "describe"};
static const unsigned bucket_ms[METRICS_NBUCKETS] = {1,   5,   10,   25,   50,   100,
                                                     250, 500, 1000, 2500, 5000, 10000};

static void histogram(struct out *o, const char *name, const char *text, unsigned base)
{
    help(o, name, "histogram", text);
    uint64_t cum = 0;
    for (unsigned b = 0; b < METRICS_NBUCKETS; b++) {
        cum += metrics_sum(base + b);
        put(o, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_ms[b] / 1000.0, (unsigned long long)cum);
    }
    uint64_t count = metrics_sum(base + METRICS_NBUCKETS);
    /* a scrape racing a count may see the count before its bucket: keep +Inf >= buckets */
    if (count < cum) count = cum;
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)count);
    put(o, "%s_sum %.3f\n", name, metrics_sum(base + METRICS_NBUCKETS + 1) / 1000.0);
    put(o, "%s_count %llu\n", name, (unsigned long long)count);
}

static void counters(struct out *o)
{
    static const char *const hs[3] = {"full", "resumed", "failed"};
    static const char *const proto[3] = {"TLSv1.2", "TLSv1.3", "other"};
    help(o, "certgate_tls_handshakes_total", "counter",
         "TLS handshakes on client connections by result and protocol.");
    for (unsigned r = 0; r < 3; r++)
        for (unsigned p = 0; p < 3; p++)
            put(o, "certgate_tls_handshakes_total{result=\"%s\",protocol=\"%s\"} %llu\n", hs[r],
                proto[p], (unsigned long long)metrics_sum(M_HS + r * 3 + p));
    help(o, "certgate_http_requests_total", "counter",
         "HTTP requests answered by status class and route (none: refused before routing).");
    for (unsigned c = 0; c < 5; c++)
        for (unsigned r = 0; r < MR_N; r++)
            put(o, "certgate_http_requests_total{code=\"%uxx\",route=\"%s\"} %llu\n", c + 1,
                routes[r], (unsigned long long)metrics_sum(M_REQ + c * MR_N + r));
    histogram(o, "certgate_http_request_duration_seconds",
              "Time from a request's start to its end (answered or abandoned).", M_REQ_DUR);
    histogram(o, "certgate_upstream_duration_seconds",
              "Time proxied requests spent with the upstream.", M_UP_DUR);
    uint64_t opened = metrics_sum(M_CONN_OPENED), closed = metrics_sum(M_CONN_CLOSED);
    help(o, "certgate_connections_total", "counter", "Client connections accepted.");
    put(o, "certgate_connections_total %llu\n", (unsigned long long)opened);
    help(o, "certgate_connections_open", "gauge", "Client connections open now.");
    put(o, "certgate_connections_open %llu\n",
        (unsigned long long)(opened > closed ? opened - closed : 0));
    help(o, "certgate_client_bytes_total", "counter",
         "HTTP bytes read from (in) and written to (out) client connections, without TLS framing.");
    put(o, "certgate_client_bytes_total{direction=\"in\"} %llu\n",
        (unsigned long long)metrics_sum(M_BYTES_IN));
    put(o, "certgate_client_bytes_total{direction=\"out\"} %llu\n",
        (unsigned long long)metrics_sum(M_BYTES_OUT));
    help(o, "certgate_certificate_operations_total", "counter",
         "Certificate API operations by operation and result.");
    for (unsigned op = 0; op < MO_N; op++)
        for (unsigned r = 0; r < 2; r++)
            put(o, "certgate_certificate_operations_total{op=\"%s\",result=\"%s\"} %llu\n",
                certops[op], r ? "error" : "ok",
                (unsigned long long)metrics_sum(M_CERT_OP + op * 2 + r));
    help(o, "certgate_reloads_total", "counter", "Configuration reloads (SIGHUP) by result.");
    put(o, "certgate_reloads_total{result=\"ok\"} %llu\n",
        (unsigned long long)metrics_sum(M_RELOAD));
    put(o, "certgate_reloads_total{result=\"error\"} %llu\n",
        (unsigned long long)metrics_sum(M_RELOAD + 1));
    help(o, "certgate_token_failures_total", "counter",
         "Certificate API requests refused for a missing, unknown or insufficient token.");
    put(o, "certgate_token_failures_total %llu\n", (unsigned long long)metrics_sum(M_TOKEN_FAIL));
    help(o, "certgate_secret_dir_changes_total", "counter",
         "Changes of the watched secret directory (--tls-secret-dir) by result.");
    put(o, "certgate_secret_dir_changes_total{result=\"applied\"} %llu\n",
        (unsigned long long)metrics_sum(M_SECRET_DIR));
    put(o, "certgate_secret_dir_changes_total{result=\"refused\"} %llu\n",
        (unsigned long long)metrics_sum(M_SECRET_DIR + 1));
    help(o, "certgate_acme_orders_total", "counter",
         "ACME certificate orders by result (an error is logged with its step).");
    put(o, "certgate_acme_orders_total{result=\"ok\"} %llu\n",
        (unsigned long long)metrics_sum(M_ACME_ORDER));
    put(o, "certgate_acme_orders_total{result=\"error\"} %llu\n",
        (unsigned long long)metrics_sum(M_ACME_ORDER + 1));
}

/* ----- certificates ----- */

/* A label value with \ " and newlines escaped. */
static void label(char *dst, size_t len, const char *s)
{
    size_t j = 0;
    for (; *s && j + 3 < len; s++) {
        if (*s == '\\' || *s == '"') dst[j++] = '\\', dst[j++] = *s;
        else if (*s == '\n') dst[j++] = '\\', dst[j++] = 'n';
        else dst[j++] = *s;
    }
    dst[j] = '\0';
}

struct cert_visit {
    struct out *o;
    int after; /* 1: not_after, 0: not_before */
    const char *served_file, *served_alias, *served_sha;
};

static void cert_line(struct out *o, int after, const char *file, const char *alias,
                      const char *sha, int served, long long t)
{
    char lf[512], la[512];
    label(lf, sizeof lf, file);
    label(la, sizeof la, alias);
    put(o,
        "certgate_certificate_not_%s_timestamp_seconds{file=\"%s\",alias=\"%s\",sha256=\"%s\","
        "served=\"%s\"} %lld\n",
        after ? "after" : "before", lf, la, sha, served ? "true" : "false", t);
}

static void cert_row(void *arg, const char *file, const char *alias, const char *sha,
                     long long nb, long long na)
{
    struct cert_visit *v = arg;
    if (strcmp(file, v->served_file) == 0 && strcmp(alias, v->served_alias) == 0 &&
        strcmp(sha, v->served_sha) == 0)
        return; /* the served line has it */
    cert_line(v->o, v->after, file, alias, sha, 0, v->after ? na : nb);
}

static void certificates(struct out *o)
{
    char file[256] = "", alias[256] = "", sha[17] = "";
    X509 *leaf = gw_served_leaf(file, sizeof file, alias, sizeof alias);
    long long nb = 0, na = 0;
    int ok = metrics_cert_times(leaf, &nb, &na, sha) == 0;
    for (int after = 1; after >= 0; after--) {
        if (after)
            help(o, "certgate_certificate_not_after_timestamp_seconds", "gauge",
                 "End of validity (Unix time) of the served certificate (file \"\": the default "
                 "one) and of every stored one whose facts are known (DIR/ssl-meta).");
        else
            help(o, "certgate_certificate_not_before_timestamp_seconds", "gauge",
                 "Start of validity (Unix time) of the served certificate and of every stored "
                 "one whose facts are known (DIR/ssl-meta).");
        if (ok) cert_line(o, after, file, alias, sha, 1, after ? na : nb);
        struct cert_visit v = {o, after, file, alias, ok ? sha : ""};
        metrics_certs_each(cert_row, &v);
    }
    X509_free(leaf);
}

/* ----- process_* ----- */

static void process(struct out *o)
{
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/stat", "r");
    char line[1024];
    unsigned long long ut = 0, st = 0, start = 0;
    long rss = 0;
    unsigned long vsz = 0;
    if (f && fgets(line, sizeof line, f)) {
        const char *p = strrchr(line, ')'); /* after the command name */
        if (p &&
            sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                   "%*d %llu %lu %ld",
                   &ut, &st, &start, &vsz, &rss) != 5)
            ut = st = start = 0;
    }
    if (f) fclose(f);
    unsigned long long btime = 0;
    if ((f = fopen("/proc/stat", "r"))) {
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "btime %llu", &btime) == 1) break;
        fclose(f);
    }
    unsigned fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d));)
            if (e->d_name[0] != '.') fds++;
        closedir(d);
        if (fds) fds--; /* the directory's own descriptor */
    }
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_NOFILE, &rl);
    help(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
    put(o, "process_cpu_seconds_total %.2f\n", tck > 0 ? (double)(ut + st) / (double)tck : 0.0);
    help(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(o, "process_resident_memory_bytes %lld\n", (long long)rss * page);
    help(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    put(o, "process_virtual_memory_bytes %lu\n", vsz);
    help(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    put(o, "process_open_fds %u\n", fds);
    help(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    put(o, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    help(o, "process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.");
    put(o, "process_start_time_seconds %.2f\n",
        tck > 0 ? (double)btime + (double)start / (double)tck : 0.0);
}

char *metrics_text(size_t *len)
{
    struct out o = {malloc(16384), 0, 16384, 0};
    if (!o.p) return NULL;
    help(&o, "certgate_build_info", "gauge", "certgate's version (the value is always 1).");
    put(&o, "certgate_build_info{version=\"%s\",openssl=\"%s\"} 1\n", CERTGATE_VERSION,
        OpenSSL_version(OPENSSL_VERSION_STRING));
    counters(&o);
    certificates(&o);
    process(&o);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
