/* acme_cli.c - `certgate acme status|renew` (see acme.h): they talk to the running
 * gateway through DIR/acme: status.json, which its ACME thread keeps current, and
 * renew-request, which it picks up within 2 seconds. */
#include "acme.h"

#include "app.h"
#include "fsutil.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int acme_usage(const char *why)
{
    fprintf(stderr,
            "certgate acme: %s\n"
            "Usage:\n"
            "  certgate acme status [--data-dir DIR]\n"
            "  certgate acme renew [--data-dir DIR] [--wait SECONDS]\n",
            why);
    return 2;
}

static json_t *read_status(const char *acme_dir, char *err, size_t errlen)
{
    char *path = fs_path_join(acme_dir, "status.json");
    char *data = NULL;
    size_t len = 0;
    json_t *j = NULL;
    if (path && fs_read_file(path, 64 * 1024, &data, &len, err, errlen) == 0)
        j = json_loadb(data, len, 0, NULL);
    else if (path && errno == ENOENT)
        snprintf(err, errlen, "%s does not exist: is [acme] configured, and has certgate "
                 "run with it?", path);
    free(data);
    free(path);
    return j;
}

static void print_status(json_t *j)
{
    static const char *const keys[] = {"directory", "state",       "file",        "notAfter",
                                       "nextAttempt", "lastSuccess", "lastFailure", "lastError",
                                       NULL};
    json_t *dom = json_object_get(j, "domains");
    printf("domains: ");
    for (size_t i = 0; i < json_array_size(dom); i++)
        printf("%s%s", i ? ", " : "", json_string_value(json_array_get(dom, i)));
    printf("\n");
    for (int i = 0; keys[i]; i++) {
        const char *v = json_string_value(json_object_get(j, keys[i]));
        if (v) printf("%s: %s\n", keys[i], v);
    }
    printf("failures: %lld\n", (long long)json_integer_value(json_object_get(j, "failures")));
    /* in a fleet (acme_fleet.h): as the gateway saw it when it wrote the status */
    json_t *lock = json_object_get(json_object_get(j, "fleet"), "lock");
    json_t *cert = json_object_get(json_object_get(j, "fleet"), "certificate");
    if (lock)
        printf("fleet lock: held by member %s since %s\n",
               json_string_value(json_object_get(lock, "member")) ?: "?",
               json_string_value(json_object_get(lock, "since")) ?: "?");
    if (cert)
        printf("fleet certificate: %s, valid to %s, ordered by member %s at %s\n",
               json_string_value(json_object_get(cert, "file")) ?: "?",
               json_string_value(json_object_get(cert, "notAfter")) ?: "?",
               json_string_value(json_object_get(cert, "member")) ?: "?",
               json_string_value(json_object_get(cert, "time")) ?: "?");
}

/* A value of the status that changes when an order ends. */
static char *order_mark(json_t *j)
{
    char *m = NULL;
    const char *s = json_string_value(json_object_get(j, "lastSuccess"));
    const char *f = json_string_value(json_object_get(j, "lastFailure"));
    if (asprintf(&m, "%s|%s|%lld", s ? s : "", f ? f : "",
                 (long long)json_integer_value(json_object_get(j, "failures"))) < 0)
        m = NULL;
    return m;
}

static int renew(const char *acme_dir, long wait_s)
{
    char err[600];
    json_t *before = read_status(acme_dir, err, sizeof err);
    if (!before) {
        fprintf(stderr, "certgate acme renew: %s\n", err);
        return 1;
    }
    char *mark = order_mark(before);
    json_decref(before);
    char *path = fs_path_join(acme_dir, "renew-request");
    int rc = path ? fs_write_atomic_mode(path, "renew\n", 6, 0600, err, sizeof err) : -1;
    free(path);
    if (rc != 0) {
        fprintf(stderr, "certgate acme renew: %s\n", err);
        free(mark);
        return 1;
    }
    printf("renewal requested; the running gateway starts it within 2 seconds\n");
    rc = 0;
    for (long waited = 0; wait_s > 0; waited += 200) {
        if (waited >= wait_s * 1000) {
            fprintf(stderr, "certgate acme renew: no result after %ld s\n", wait_s);
            rc = 1;
            break;
        }
        usleep(200 * 1000);
        json_t *now = read_status(acme_dir, err, sizeof err);
        char *m = now ? order_mark(now) : NULL;
        const char *state = json_string_value(json_object_get(now, "state"));
        int done = m && mark && strcmp(m, mark) != 0 && state && strcmp(state, "ordering") != 0;
        if (done) {
            print_status(now);
            rc = strcmp(state, "backoff") == 0 ? 1 : 0;
        }
        free(m);
        json_decref(now);
        if (done) break;
    }
    free(mark);
    return rc;
}

int acme_command(int argc, char **argv)
{
    if (argc < 1) return acme_usage("missing sub-command (status or renew)");
    const char *data_dir = DEFAULT_DATA_DIR;
    long wait_s = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
            data_dir = argv[++i];
        } else if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc &&
                   strcmp(argv[0], "renew") == 0) {
            char *end;
            wait_s = strtol(argv[++i], &end, 10);
            if (*end || wait_s < 1 || wait_s > 3600)
                return acme_usage("--wait takes a number of seconds from 1 to 3600");
        } else {
            char why[200];
            snprintf(why, sizeof why, "unknown or incomplete option '%.100s'", argv[i]);
            return acme_usage(why);
        }
    }
    char *acme_dir = fs_path_join(data_dir, "acme");
    if (!acme_dir) return 1;
    int rc;
    if (strcmp(argv[0], "status") == 0) {
        char err[600];
        json_t *j = read_status(acme_dir, err, sizeof err);
        if (j) print_status(j);
        else fprintf(stderr, "certgate acme status: %s\n", err);
        rc = j ? 0 : 1;
        json_decref(j);
    } else if (strcmp(argv[0], "renew") == 0) {
        rc = renew(acme_dir, wait_s);
    } else {
        rc = acme_usage("unknown sub-command (use status or renew)");
    }
    free(acme_dir);
    return rc;
}
