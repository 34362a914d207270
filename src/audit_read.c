/* audit_read.c - `certgate audit`: the trail oldest first across the rotated files (see
 * audit.h). Reads only; works whether the gateway runs or not. */
#include "audit.h"

#include "app.h"
#include "err.h"
#include "fsutil.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* n digits at *p into *v; advances *p. */
static int digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p)) return -1;
        *v = *v * 10 + (**p - '0');
    }
    return 0;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's algorithm). */
static long long days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

/* "YYYY-MM-DD" at *p: 0 and the day number. */
static int parse_date(const char **p, long long *days)
{
    int y, m, d;
    if (digits(p, 4, &y) || *(*p)++ != '-' || digits(p, 2, &m) || *(*p)++ != '-' ||
        digits(p, 2, &d) || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return -1;
    *days = days_from_civil(y, m, d);
    return 0;
}

int audit_parse_time(const char *s, long long *out_ms)
{
    const char *p = s;
    long long days;
    int hh, mm, ss, ms = 0;
    if (parse_date(&p, &days) != 0 || (*p != 'T' && *p != 't' && *p != ' ')) return -1;
    p++;
    if (digits(&p, 2, &hh) || *p++ != ':' || digits(&p, 2, &mm) || *p++ != ':' ||
        digits(&p, 2, &ss) || hh > 23 || mm > 59 || ss > 60)
        return -1;
    if (*p == '.') {
        int scale = 100, n = 0;
        for (p++; isdigit((unsigned char)*p); p++, n++) {
            ms += (*p - '0') * scale;
            scale /= 10;
        }
        if (n == 0) return -1;
    }
    long long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 3600LL + om * 60LL);
    } else {
        return -1;
    }
    if (*p) return -1;
    if (ss == 60) ss = 59; /* a leap second: close enough for a filter */
    *out_ms = ((days * 86400LL + hh * 3600LL + mm * 60LL + ss) - off) * 1000LL + ms;
    return 0;
}

int audit_parse_since(const char *s, long long now_ms, long long *out_ms)
{
    if (audit_parse_time(s, out_ms) == 0) return 0;
    const char *p = s;
    long long days;
    if (parse_date(&p, &days) == 0 && *p == '\0') {
        *out_ms = days * 86400000LL;
        return 0;
    }
    /* a duration: digits and one unit */
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)s[0])) return -1;
    unsigned long long n = strtoull(s, &end, 10);
    long long unit = strcmp(end, "s") == 0   ? 1000LL
                     : strcmp(end, "m") == 0 ? 60000LL
                     : strcmp(end, "h") == 0 ? 3600000LL
                     : strcmp(end, "d") == 0 ? 86400000LL
                                             : 0;
    if (errno || unit == 0 || n > 100000ULL * 86400ULL) return -1;
    *out_ms = now_ms - (long long)n * unit;
    return 0;
}

/* The rotated files' numbers, largest (oldest) first. */
static int cmp_desc(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Writes s with control characters (terminal escapes) shown as '?'. */
static void put_clean(FILE *out, const char *s)
{
    for (; *s; s++) fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* One readable line:
 * TIME SOURCE OPERATION STATUS NAME [alias A] [token ID] [from CLIENT] [user U]
 *   [served OLD -> NEW]: MESSAGE */
static void print_readable(FILE *out, json_t *o)
{
    const char *name = jstr(o, "name"), *alias = jstr(o, "alias"), *tok = jstr(o, "tokenId"),
               *client = jstr(o, "client"), *user = jstr(o, "user"),
               *before = jstr(o, "sha256Before"), *after = jstr(o, "sha256After"),
               *msg = jstr(o, "message"), *src = jstr(o, "source"), *op = jstr(o, "operation");
    put_clean(out, jstr(o, "time"));
    fputc(' ', out);
    put_clean(out, src ? src : "-");
    fputc(' ', out);
    put_clean(out, op ? op : "-");
    fprintf(out, " %lld", (long long)json_integer_value(json_object_get(o, "status")));
    if (name) {
        fputc(' ', out);
        put_clean(out, name);
    }
    static const char *const labels[] = {" alias ", " token ", " from ", " user "};
    const char *vals[] = {alias, tok, client, user};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        if (!vals[i]) continue;
        fputs(labels[i], out);
        put_clean(out, vals[i]);
    }
    if (before || after) {
        char b[17], a[17];
        snprintf(b, sizeof b, "%s", before ? before : "-");
        snprintf(a, sizeof a, "%s", after ? after : "-");
        fputs(" served ", out);
        put_clean(out, b);
        if (!before || !after || strcmp(before, after) != 0) {
            fputs(" -> ", out);
            put_clean(out, a);
        } else {
            fputs(" (unchanged)", out);
        }
    }
    if (msg) {
        fputs(": ", out);
        put_clean(out, msg);
    }
    fputc('\n', out);
}

struct reader {
    long long since;
    int json;
    FILE *out, *errs;
    unsigned bad;
};

/* One file, line by line; last: the file is audit.jsonl (its last line may be a write
 * in progress). */
static void read_one(struct reader *r, FILE *f, const char *path)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned long no = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        no++;
        int complete = line[n - 1] == '\n';
        if (complete) line[--n] = '\0';
        json_error_t je;
        json_t *o = complete ? json_loadb(line, (size_t)n, 0, &je) : NULL;
        long long t;
        const char *ts = o ? jstr(o, "time") : NULL;
        if (!o || !json_is_object(o) || !ts || audit_parse_time(ts, &t) != 0) {
            r->bad++;
            fprintf(r->errs, "certgate audit: %s:%lu: %s; skipped\n", path, no,
                    !complete ? "an incomplete line (torn by a crash, or being written now)"
                              : "not an audit record (corrupt line)");
            json_decref(o);
            continue;
        }
        if (t >= r->since) {
            if (r->json) {
                fwrite(line, 1, (size_t)n, r->out);
                fputc('\n', r->out);
            } else {
                print_readable(r->out, o);
            }
        }
        json_decref(o);
    }
    free(line);
}

int audit_print(const char *data_dir, long long since_ms, int json, FILE *out, FILE *errs,
                char *err, size_t errlen)
{
    char *dir = fs_path_join(data_dir, AUDIT_DIR);
    if (!dir) {
        err_set(err, errlen, "out of memory");
        return 1;
    }
    struct stat st;
    if (stat(data_dir, &st) != 0) {
        err_set(err, errlen, "%s: %s", data_dir,
                errno == ENOENT ? "no such data directory" : strerror(errno));
        free(dir);
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        err_set(err, errlen, "%s: not a folder", data_dir);
        free(dir);
        return 1;
    }
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        if (e == ENOENT) {
            fprintf(errs, "certgate audit: %s/%s does not exist: nothing has been recorded "
                          "yet\n", dir, AUDIT_FILE);
            free(dir);
            return 0;
        }
        err_set(err, errlen, "cannot read %s: %s", dir, strerror(e));
        free(dir);
        return 1;
    }
    /* the rotated files' numbers, then open them all under a shared lock, so that a
     * rotation by the gateway cannot shift a file between two opens */
    unsigned nums[AUDIT_KEEP_MAX * 2];
    size_t nn = 0;
    struct dirent *de;
    size_t base = strlen(AUDIT_FILE);
    while ((de = readdir(d))) {
        const char *s = de->d_name;
        if (strncmp(s, AUDIT_FILE ".", base + 1) != 0 || !isdigit((unsigned char)s[base + 1]))
            continue;
        char *end;
        unsigned long k = strtoul(s + base + 1, &end, 10);
        if (*end || k == 0 || k > AUDIT_KEEP_MAX * 10 || nn == sizeof nums / sizeof nums[0])
            continue;
        nums[nn++] = (unsigned)k;
    }
    int dfd = dirfd(d);
    qsort(nums, nn, sizeof nums[0], cmp_desc);
    FILE *files[sizeof nums / sizeof nums[0] + 1];
    char *paths[sizeof nums / sizeof nums[0] + 1];
    size_t nf = 0;
    int locked = flock(dfd, LOCK_SH) == 0;
    int rc = 0;
    for (size_t i = 0; i <= nn && rc == 0; i++) {
        char name[64];
        if (i < nn) snprintf(name, sizeof name, "%s.%u", AUDIT_FILE, nums[i]);
        else snprintf(name, sizeof name, "%s", AUDIT_FILE);
        int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT) continue; /* rotated away meanwhile, or none yet */
        FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
        if (!f) {
            err_set(err, errlen, "cannot read %s/%s: %s", dir, name, strerror(errno));
            if (fd >= 0) close(fd);
            rc = 1;
            break;
        }
        files[nf] = f;
        paths[nf] = fs_path_join(dir, name);
        nf++;
    }
    if (locked) flock(dfd, LOCK_UN);
    struct reader r = {.since = since_ms, .json = json, .out = out, .errs = errs};
    for (size_t i = 0; i < nf; i++) {
        if (rc == 0) read_one(&r, files[i], paths[i] ? paths[i] : AUDIT_FILE);
        fclose(files[i]);
        free(paths[i]);
    }
    if (rc == 0 && r.bad)
        fprintf(errs, "certgate audit: %u line%s skipped (see above)\n", r.bad,
                r.bad == 1 ? "" : "s");
    closedir(d);
    free(dir);
    return rc;
}

static int audit_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "certgate audit: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr,
            "\nUsage: certgate audit [--data-dir DIR] [--since TIME] [--json]\n"
            "  TIME: an RFC 3339 time (2026-11-30T09:00:00Z), a date (2026-11-30, UTC) or a\n"
            "  duration back from now (90s, 15m, 24h, 7d).\n");
    return 2;
}

int audit_command(int argc, char **argv)
{
    const char *data_dir = DEFAULT_DATA_DIR, *since = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "--data-dir") == 0 && v) data_dir = argv[++i];
        else if (strcmp(a, "--since") == 0 && v) since = argv[++i];
        else return audit_usage("unknown or incomplete option '%s'", a);
    }
    long long since_ms = 0;
    if (since) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        long long now = tv.tv_sec * 1000LL + tv.tv_usec / 1000;
        if (audit_parse_since(since, now, &since_ms) != 0)
            return audit_usage("--since takes an RFC 3339 time (2026-11-30T09:00:00Z), a date "
                               "(2026-11-30) or a duration (90s, 15m, 24h, 7d), not '%s'",
                               since);
    }
    char err[1024];
    int rc = audit_print(data_dir, since_ms, json, stdout, stderr, err, sizeof err);
    if (rc != 0) fprintf(stderr, "certgate audit: %s\n", err);
    if (fflush(stdout) != 0 && rc == 0) rc = 1;
    return rc;
}
