/* main.c - the command line: run, check-config, token, --help, --version. */
#include "accesslog.h"
#include "acme.h"
#include "acme_store.h"
#include "app.h"
#include "audit.h"
#include "auth.h"
#include "certimport.h"
#include "fleet.h"
#include "fleet_sync.h"
#include "expiry.h"
#include "gw.h"
#include "fsutil.h"
#include "log.h"
#include "metrics.h"
#include "propfile.h"
#include "sdnotify.h"
#include "secretdir.h"
#include "server.h"
#include "tls.h"

#include <errno.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

static const char USAGE[] =
    "certgate " CERTGATE_VERSION
    " - HTTPS gateway with ActiveGate-compatible certificate management\n"
    "\n"
    "Usage:\n"
    "  certgate run [--data-dir DIR] [--listen HOST:PORT] [--threads N]\n"
    "               [--access-log FILE|-|off] [--log-level debug|info|warn|error]\n"
    "               [--user NAME] [--tls-secret-dir SECRETS]\n"
    "      Runs the gateway in the foreground; logs go to stderr. Without --listen it\n"
    "      binds 0.0.0.0:<port-ssl> (custom.properties, default 9999). Started as root,\n"
    "      --user NAME makes it run as NAME once its ports are bound (DIR must belong\n"
    "      to NAME).\n"
    "      --tls-secret-dir SECRETS serves SECRETS/server.p12 (with its password and\n"
    "      alias files, a Kubernetes Secret's layout) and follows its changes; the\n"
    "      certificate API then does not switch certificates.\n"
    "      SIGHUP re-reads custom.properties and the certificate; SIGTERM/SIGINT stop\n"
    "      gracefully (in-flight requests get up to 10 s).\n"
    "  certgate check-config [--data-dir DIR]\n"
    "      Validates custom.properties and the certificate, prints what would be\n"
    "      served; exit status 0 when it is the configured one, 1 otherwise. Lists\n"
    "      every error of the file, each with its line.\n"
    "  certgate token create [--data-dir DIR] --environment ENV --scope SCOPE [--scope ...]\n"
    "                        [--name NAME]\n"
    "  certgate token list [--data-dir DIR]\n"
    "  certgate token revoke [--data-dir DIR] ID\n"
    "      Manages API tokens (scope ActiveGateCertManagement for the certificate API).\n"
    "  certgate cert import [--data-dir DIR] --certificate CERT.pem --key KEY.pem\n"
    "                       [--chain CA.pem] [--key-password P] [--alias A] [--name NAME]\n"
    "                       [--activate]\n"
    "      Builds a PKCS#12 file (AES-256, a random password) from PEM files, checks it\n"
    "      as an API upload does and stores it as DIR/ssl/NAME (default: CERT's base\n"
    "      name + .p12); --activate records it in custom.properties (password\n"
    "      obfuscated); a running gateway serves it after SIGHUP.\n"
    "  certgate acme status [--data-dir DIR]\n"
    "  certgate acme renew [--data-dir DIR] [--wait SECONDS]\n"
    "      Shows the ACME client's state ([acme]: certificate, next attempt, last\n"
    "      error), or asks the running gateway to order a new certificate now (with\n"
    "      --wait, waits for the result; exit status 1 when it failed).\n"
    "  certgate fleet init [--data-dir DIR] [--etcd URL[,URL...]] [--environment ENV]\n"
    "                      [--force]\n"
    "  certgate fleet status [--data-dir DIR] [--etcd URL[,URL...]]\n"
    "      init makes the fleet key (DIR/config/fleet.key) and pushes this node's\n"
    "      certificates, active certificate (password sealed) and token hashes to etcd\n"
    "      in one transaction (an existing fleet state only with --force); status lists\n"
    "      the fleet's state and members. [fleet] in custom.properties gives the\n"
    "      defaults (etcd, prefix, TLS to etcd, fleet-key-file).\n"
    "  certgate audit [--data-dir DIR] [--since TIME] [--json]\n"
    "      Prints the audit trail of certificate changes (DIR/log/audit.jsonl and its\n"
    "      rotated files), oldest first: one readable line per event, or with --json the\n"
    "      raw JSON lines. TIME: an RFC 3339 time (2026-11-30T09:00:00Z), a date\n"
    "      (2026-11-30, UTC) or a duration back from now (90s, 15m, 24h, 7d).\n"
    "  certgate --help | --version\n"
    "\n"
    "DIR defaults to " DEFAULT_DATA_DIR "; it holds config/custom.properties and ssl/.\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "certgate: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'certgate --help' for usage.\n");
    return 2;
}

static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* "HOST:PORT", "[v6]:PORT" or ":PORT" */
static int parse_listen(const char *s, char *host, size_t hostlen, unsigned *port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') return -1;
        snprintf(host, hostlen, "%.*s", (int)(rb - s - 1), s + 1);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return -1;
        snprintf(host, hostlen, "%.*s", (int)(colon - s), s);
    }
    if (!host[0]) snprintf(host, hostlen, "0.0.0.0");
    unsigned long p;
    if (parse_uint(colon + 1, 0, 65535, &p) != 0) return -1;
    *port = (unsigned)p;
    return 0;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ----- the user to run as (--user) ----- */

struct run_user {
    const char *name;
    uid_t uid;
    gid_t gid;
    gid_t groups[256];
    int ngroups;
};

/* Looks NAME up; fails with a sentence. */
static int user_resolve(const char *name, struct run_user *u, char *err, size_t errlen)
{
    struct passwd pwd, *res = NULL;
    char buf[4096];
    int e = getpwnam_r(name, &pwd, buf, sizeof buf, &res);
    if (!res) {
        snprintf(err, errlen, "--user %s: %s", name,
                 e ? strerror(e) : "no such user (see /etc/passwd)");
        return -1;
    }
    u->name = name;
    u->uid = pwd.pw_uid;
    u->gid = pwd.pw_gid;
    u->ngroups = (int)(sizeof u->groups / sizeof u->groups[0]);
    if (getgrouplist(name, pwd.pw_gid, u->groups, &u->ngroups) < 0) {
        snprintf(err, errlen, "--user %s: the user is in more than %zu groups", name,
                 sizeof u->groups / sizeof u->groups[0]);
        return -1;
    }
    if (u->uid == 0) {
        snprintf(err, errlen, "--user %s: that is root; name an unprivileged user", name);
        return -1;
    }
    return 0;
}

/* While root: act as u for file access (what gw_open creates belongs to u), keeping
 * the saved root identity to bind the ports (to_root) and drop for good (user_drop). */
static int user_act_as(const struct run_user *u, int to_root, char *err, size_t errlen)
{
    int rc = to_root
                 ? (seteuid(0) | setegid(0))
                 : (setgroups((size_t)u->ngroups, u->groups) | setegid(u->gid) | seteuid(u->uid));
    if (rc != 0) snprintf(err, errlen, "cannot switch to user %s: %s", u->name, strerror(errno));
    return rc ? -1 : 0;
}

/* Drops root for good: groups, gid, uid (real, effective and saved), then checks that
 * root cannot be regained. */
static int user_drop(const struct run_user *u, char *err, size_t errlen)
{
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (seteuid(0) != 0 || setgroups((size_t)u->ngroups, u->groups) != 0 ||
        setresgid(u->gid, u->gid, u->gid) != 0 || setresuid(u->uid, u->uid, u->uid) != 0) {
        snprintf(err, errlen, "cannot drop privileges to user %s: %s", u->name, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0 || seteuid(0) == 0 || getresuid(&r, &e, &s) != 0 ||
        getresgid(&rg, &eg, &sg) != 0 || r != u->uid || e != u->uid || s != u->uid ||
        rg != u->gid || eg != u->gid || sg != u->gid) {
        snprintf(err, errlen,
                 "privileges of user %s are not dropped for good (root could "
                 "be regained); refusing to run",
                 u->name);
        return -1;
    }
    return 0;
}

/* server_start's after_bind: the ports are bound, no thread serves yet. */
static int user_drop_after_bind(void *arg, char *err, size_t errlen)
{
    const struct run_user *u = arg;
    if (user_drop(u, err, errlen) != 0) return -1;
    log_info("running as user %s (uid %u, gid %u); root is given up", u->name, (unsigned)u->uid,
             (unsigned)u->gid);
    return 0;
}

/* The data directory (and its config/, ssl/ and log/) must belong to u, which writes there
 * after the drop: refuses with the command that fixes it. A folder that does not exist
 * yet is created later, as u. */
static int user_check_dir(const struct run_user *u, const char *data_dir, char *err, size_t errlen)
{
    static const char *const subs[] = {"", "/config", "/ssl", "/log"};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s%s", data_dir, subs[i]);
        if (lstat(path, &st) != 0) continue;
        if (!S_ISDIR(st.st_mode) || st.st_uid != u->uid) {
            snprintf(err, errlen,
                     "%.300s %s to uid %u, not to %s (uid %u), which certgate runs as after "
                     "binding its ports; give the data directory to it: chown -R %s: %.300s",
                     path, S_ISDIR(st.st_mode) ? "belongs" : "is not a folder or belongs",
                     (unsigned)st.st_uid, u->name, (unsigned)u->uid, u->name, data_dir);
            return -1;
        }
    }
    return 0;
}

/* Frees of jansson's memory (JSON bodies with passwords, descriptions) are wiped first. */
static void wiping_free(void *p)
{
    if (!p) return;
    explicit_bzero(p, malloc_usable_size(p));
    free(p);
}

/* ----- run ----- */

/* The audit line of a start: what is served, or why the configured certificate is not
 * (the fallback to the default one). */
static void audit_start(void)
{
    struct gw_served now;
    char msg[1600];
    gw_served_get(&now);
    struct audit_event ev = {.source = "start", .op = "start", .sha_after = now.sha256,
                             .status = 200, .message = msg};
    const char *why = gw_fallback_reason();
    if (why) {
        ev.op = "fallback";
        ev.status = 500;
        ev.name = gw_settings()->certificate_file;
        ev.alias = gw_settings()->certificate_alias;
        snprintf(msg, sizeof msg,
                 "the configured certificate cannot be served (%s); serving the default "
                 "self-signed certificate", why);
    } else if (now.file[0]) {
        ev.name = now.file;
        ev.alias = now.alias;
        snprintf(msg, sizeof msg, "started; serving %s (alias '%s')", now.file, now.alias);
    } else {
        snprintf(msg, sizeof msg, "started; serving the default self-signed certificate (no "
                                  "certificate-file is configured)");
    }
    audit_record(&ev);
}

static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t ticket_timer, throttle_timer;
static int stopping;

static void on_stop_signal(uv_signal_t *h, int signum)
{
    if (stopping) {
        log_warn("%s again: already stopping", strsignal(signum));
        return;
    }
    stopping = 1;
    log_info("%s: stopping; in-flight requests get up to 10 s", strsignal(signum));
    char err[256];
    if (sdnotify_send("STOPPING=1", err, sizeof err) != 0) log_warn("%s", err);
    server_stop();
    secretdir_stop();
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&ticket_timer, NULL);
    uv_close((uv_handle_t *)&throttle_timer, NULL);
    expiry_stop();
}

static void on_throttle_timer(uv_timer_t *t)
{
    struct auth_throttle *at = auth_throttle_shared();
    if (at) auth_throttle_tick(at, auth_now_ms());
}

/* The audit line of a reload: a failure, or a change of the served certificate. */
static void audit_reload(int rc, const char *err, const struct gw_served *b,
                         const struct gw_served *a)
{
    char msg[1600];
    struct audit_event ev = {.source = "reload", .op = "reload", .sha_before = b->sha256,
                             .sha_after = a->sha256, .status = 200, .message = msg};
    if (rc != 0) {
        ev.status = 500;
        ev.name = b->file[0] ? b->file : NULL;
        ev.alias = b->alias[0] ? b->alias : NULL;
        ev.sha_after = b->sha256;
        snprintf(msg, sizeof msg, "reload failed, still serving the previous certificate: %s",
                 err);
    } else if (strcmp(b->sha256, a->sha256) == 0 && strcmp(b->file, a->file) == 0 &&
               strcmp(b->alias, a->alias) == 0) {
        return; /* the served certificate did not change */
    } else if (!a->file[0]) {
        ev.op = "fallback";
        snprintf(msg, sizeof msg, "%s; serving the default self-signed certificate",
                 b->file[0] ? "custom.properties names no certificate-file any more"
                            : "the default self-signed certificate was renewed");
    } else {
        ev.name = a->file;
        ev.alias = a->alias;
        snprintf(msg, sizeof msg, "reloaded; serving %s (alias '%s')", a->file, a->alias);
    }
    audit_record(&ev); /* the main thread: no connection waits for this fsync */
}

static void on_hup(uv_signal_t *h, int signum)
{
    char err[1024];
    char nerr[256];
    log_info("SIGHUP: reloading %s", gw_paths.conf_path);
    if (sdnotify_reloading(nerr, sizeof nerr) != 0) log_warn("%s", nerr);
    accesslog_reopen();
    struct gw_served before, after;
    int rc = gw_reload_served(&before, &after, err, sizeof err);
    audit_reload(rc, err, &before, &after);
    if (rc == 0) audit_configure(gw_settings()->audit_max_bytes, gw_settings()->audit_files);
    secretdir_rescan();
    /* systemd waits for READY=1 after RELOADING=1, whether the reload worked or not */
    if (sdnotify_send(rc == 0 ? "READY=1\nSTATUS=serving" :
                      "READY=1\nSTATUS=serving; the last reload failed (see the log)",
                      nerr, sizeof nerr) != 0)
        log_warn("%s", nerr);
    if (rc != 0) {
        metrics_inc(M_RELOAD + 1);
        log_error("reload failed, still serving the previous configuration: %s", err);
        return;
    }
    metrics_inc(M_RELOAD);
    char what[1024];
    gw_lock();
    gw_describe_served(what, sizeof what);
    gw_unlock();
    log_info("reloaded; serving %s", what);
}

static void on_ticket_timer(uv_timer_t *t)
{
    tls_tickets_rotate();
    log_debug("session ticket key rotated");
}

static int cmd_run(int argc, char **argv)
{
    const char *data_dir = DEFAULT_DATA_DIR, *listen = NULL, *access = "-", *user = NULL;
    const char *secret_dir = NULL;
    unsigned long threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--data-dir") == 0 && v) data_dir = argv[++i];
        else if (strcmp(a, "--listen") == 0 && v) listen = argv[++i];
        else if (strcmp(a, "--access-log") == 0 && v) access = argv[++i];
        else if (strcmp(a, "--user") == 0 && v)
            user = argv[++i];
        else if (strcmp(a, "--tls-secret-dir") == 0 && v)
            secret_dir = argv[++i];
        else if (strcmp(a, "--threads") == 0 && v) {
            if (parse_uint(argv[++i], 1, 1024, &threads) != 0)
                return usage_error("--threads takes a number from 1 to 1024, not '%s'", argv[i]);
        } else if (strcmp(a, "--log-level") == 0 && v) {
            enum log_level l;
            if (log_level_parse(argv[++i], &l) != 0)
                return usage_error("--log-level takes debug, info, warn or error, not '%s'",
                                   argv[i]);
            log_set_level(l);
        } else
            return usage_error("run: unknown or incomplete option '%s'", a);
    }
    char host[256] = "0.0.0.0";
    unsigned port = 0;
    int have_port = 0;
    if (listen) {
        if (parse_listen(listen, host, sizeof host, &port) != 0)
            return usage_error("--listen takes HOST:PORT (e.g. 127.0.0.1:9999 or [::1]:9999), "
                               "not '%s'", listen);
        have_port = 1;
    }
    if (!threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned long)n : 1;
    }
    char err[1024];
    struct run_user ru;
    int drop = 0;
    if (user) {
        if (user_resolve(user, &ru, err, sizeof err) != 0) {
            log_error("cannot start: %s", err);
            return 1;
        }
        if (geteuid() != 0 && ru.uid != geteuid()) {
            log_error("cannot start: --user %s needs root (certgate runs as uid %u and cannot "
                      "become another user); start it as root, or leave --user out",
                      user, (unsigned)geteuid());
            return 1;
        }
        drop = geteuid() == 0;
        if (drop && user_check_dir(&ru, data_dir, err, sizeof err) != 0) {
            log_error("cannot start: %s", err);
            return 1;
        }
    } else if (geteuid() == 0) {
        log_warn("running as root: a flaw in certgate would give away the whole machine; "
                 "start it with --user NAME to run as NAME once the ports are bound");
    }
    if (sdnotify_open(err, sizeof err) != 0) {
        log_error("cannot start: %s", err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    /* signals are caught from here on; they are acted upon once the loop runs, so a
     * SIGTERM that arrives while starting still ends in a clean stop */
    uv_loop_t *loop = uv_default_loop();
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_hup);
    uv_signal_start(&sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&sig_hup, on_hup, SIGHUP);

    if (accesslog_open(access, err, sizeof err) != 0) {
        log_error("%s", err);
        return 1;
    }
    if (tls_global_init(err, sizeof err) != 0) {
        log_error("%s", err);
        return 1;
    }
    struct gw_options gopt = {.data_dir = data_dir};
    /* tls-alpn-01 challenge certificates; asked only by handshakes that offer ALPN, and
     * answered without a lock while no such challenge is pending */
    tls_set_hello_hook(acme_tls_hello, NULL);
    /* the data directory is read and written as the user it will belong to */
    if (drop && user_act_as(&ru, 0, err, sizeof err) != 0) {
        log_error("cannot start: %s", err);
        return 1;
    }
    if (gw_open(&gopt, err, sizeof err) != 0 ||
        auth_store_check(gw_paths.config_dir, err, sizeof err) != 0 ||
        acme_init(&gw_settings()->acme, data_dir, err, sizeof err) != 0) {
        log_error("cannot start: %s", err);
        return 1;
    }
    if (audit_open(data_dir, err, sizeof err) != 0) {
        log_error("cannot start: %s", err);
        return 1;
    }
    if (secret_dir && secretdir_start(loop, secret_dir, err, sizeof err) != 0) {
        log_error("cannot start: %s", err);
        return 1;
    }
    audit_configure(gw_settings()->audit_max_bytes, gw_settings()->audit_files);
    audit_start();
    if (drop && user_act_as(&ru, 1, err, sizeof err) != 0) {
        log_error("cannot start: %s", err);
        return 1;
    }
    char what[1024];
    gw_describe_served(what, sizeof what);
    log_info("certgate %s, data dir %s; serving %s", CERTGATE_VERSION, data_dir, what);
    app_init();

    struct server_config sc = {
        .host = host,
        .https_port = have_port ? port : gw_settings()->port_ssl,
        .http_port = gw_settings()->port_http,
        .threads = (int)threads,
        .after_bind = drop ? user_drop_after_bind : NULL,
        .after_bind_arg = &ru,
    };
    const struct conf_settings *cs = gw_settings();
    if (cs->metrics_port && metrics_start(cs->metrics_host, cs->metrics_port, err, sizeof err) != 0) {
        log_error("cannot start: %s", err);
        return 1;
    }
    if (server_start(&sc, err, sizeof err) != 0) {
        log_error("cannot start: %s", err);
        metrics_stop();
        return 1;
    }
    /* after server_start: privileges are dropped, so the fleet writes as the service user */
    if (fleet_sync_start(cs, gw_paths.config_dir, gw_paths.ssl_dir, err, sizeof err) != 0) {
        log_error("cannot start: %s", err);
        server_stop();
        server_join();
        metrics_stop();
        return 1;
    }
    const char *try_host = strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ? "localhost"
                                                                                   : host;
    log_info("ready: try  curl -k https://%s%s%s:%u/rest/health", strchr(try_host, ':') ? "[" : "",
             try_host, strchr(try_host, ':') ? "]" : "", server_https_port());
    app_started();
    if (acme_start(err, sizeof err) != 0) log_error("%s; certificates are not obtained", err);
    if (sdnotify_send("READY=1\nSTATUS=serving", err, sizeof err) != 0) log_warn("%s", err);

    uv_timer_init(loop, &ticket_timer);
    uv_timer_start(&ticket_timer, on_ticket_timer, TLS_TICKET_ROTATE_S * 1000ull,
                   TLS_TICKET_ROTATE_S * 1000ull);
    uv_timer_init(loop, &throttle_timer);
    uv_timer_start(&throttle_timer, on_throttle_timer, 1000, 1000);
    if (expiry_start(loop) != 0) log_warn("expiry warnings are off: cannot start their timer");
    uv_run(loop, UV_RUN_DEFAULT);
    server_join();
    acme_stop();
    fleet_sync_stop();
    metrics_stop();
    secretdir_free();
    uv_loop_close(loop);
    expiry_free();
    app_cleanup();
    accesslog_close();
    audit_close();
    gw_close();
    tls_global_cleanup();
    sdnotify_close();
    log_info("stopped");
    return 0;
}

/* ----- check-config ----- */

/* The errors check-config found, printed together sorted by line. */
struct check_errors {
    char *line[128];
    int n, dropped;
};

/* Adds each '\n'-separated sentence of text. */
static void check_errors_add(struct check_errors *ce, const char *text)
{
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        int room = ce->n < (int)(sizeof ce->line / sizeof ce->line[0]);
        if (room && (ce->line[ce->n] = strndup(p, len)))
            ce->n++;
        else
            ce->dropped++;
        p += len + (nl ? 1 : 0);
    }
}

/* The N of "<path>:N: ..." (0 when there is none). */
static long check_errors_lineno(const char *msg, size_t pathlen)
{
    return strlen(msg) > pathlen && msg[pathlen] == ':' ? strtol(msg + pathlen + 1, NULL, 10) : 0;
}

/* Prints them on stderr, sorted by line (stable), and frees them. */
static void check_errors_print(struct check_errors *ce, const char *path)
{
    size_t pl = strlen(path);
    for (int i = 1; i < ce->n; i++)
        for (int j = i; j > 0 && check_errors_lineno(ce->line[j - 1], pl) >
                                     check_errors_lineno(ce->line[j], pl); j--) {
            char *t = ce->line[j];
            ce->line[j] = ce->line[j - 1];
            ce->line[j - 1] = t;
        }
    for (int i = 0; i < ce->n; i++) {
        fprintf(stderr, "configuration error: %s\n", ce->line[i]);
        free(ce->line[i]);
    }
    if (ce->dropped) fprintf(stderr, "configuration error: (%d more)\n", ce->dropped);
}

/* Lists every error of custom.properties at once (syntax, values, cipher lists), each
 * with its line; returns how many there are (-1 when the file cannot be read). */
static int check_config_file(const char *data_dir)
{
    static char text[32768];
    char *config_dir = fs_path_join(data_dir, "config");
    char *path = config_dir ? fs_path_join(config_dir, "custom.properties") : NULL;
    free(config_dir);
    if (!path) {
        fprintf(stderr, "certgate: out of memory\n");
        return -1;
    }
    struct propfile *doc = NULL;
    struct check_errors ce = {.n = 0};
    int nbad = 0, nconf = 0, ntls = 0;
    if (propfile_load_lenient(path, &doc, &nbad, text, sizeof text) != 0) {
        fprintf(stderr, "configuration error: %s\n", text);
        free(path);
        return -1;
    }
    check_errors_add(&ce, text);
    struct conf_settings cs;
    conf_settings_check(doc, path, &cs, text, sizeof text, &nconf);
    check_errors_add(&ce, text);
    struct tls_server_opts o = {.versions = cs.tls_versions,
                                .excluded_ciphers = cs.excluded_ciphers,
                                .included_ciphers = cs.included_ciphers,
                                .session_cache = cs.session_cache,
                                .session_tickets = cs.session_tickets};
    char why[512];
    if (cs.tls_versions && tls_check_opts(&o, why, sizeof why) != 0) {
        int line = propfile_line(doc, CONF_SECTION_WEBSERVER, "excluded-ciphers");
        if (line <= 0) line = propfile_line(doc, CONF_SECTION_WEBSERVER, "included-ciphers");
        snprintf(text, sizeof text, "%s:%d: %s", path, line, why);
        check_errors_add(&ce, text);
        ntls = 1;
    }
    check_errors_print(&ce, path);
    conf_settings_free(&cs);
    propfile_free(doc);
    int n = nbad + nconf + ntls;
    if (n) fprintf(stderr, "%s: %d error%s\n", path, n, n == 1 ? "" : "s");
    free(path);
    return n;
}

static int cmd_check_config(int argc, char **argv)
{
    const char *data_dir = DEFAULT_DATA_DIR;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc)
            data_dir = argv[++i];
        else
            return usage_error("check-config: unknown or incomplete option '%s'", argv[i]);
    }
    log_set_level(LOG_WARN);
    char err[1024];
    if (tls_global_init(err, sizeof err) != 0) {
        fprintf(stderr, "certgate: %s\n", err);
        return 1;
    }
    if (check_config_file(data_dir) != 0) {
        tls_global_cleanup();
        return 1;
    }
    struct gw_options gopt = {.data_dir = data_dir, .readonly = 1};
    if (gw_open(&gopt, err, sizeof err) != 0) {
        fprintf(stderr, "configuration error: %s\n", err);
        return 1;
    }
    const struct conf_settings *s = gw_settings();
    char what[1024];
    gw_describe_served(what, sizeof what);
    printf("configuration: %s: OK\n", gw_paths.conf_path);
    printf("listen: https port %u%s", s->port_ssl, s->port_http ? "" : "\n");
    if (s->port_http) printf(", http port %u\n", s->port_http);
    printf("protocols: %s%s%s\n", (s->tls_versions & TLS_V12) ? "TLSv1.2" : "",
           s->tls_versions == (TLS_V12 | TLS_V13) ? " " : "",
           (s->tls_versions & TLS_V13) ? "TLSv1.3" : "");
    printf("upstream: %s\n", s->upstream.url ? s->upstream.url : "none");
    if (s->acme.directory) {
        /* the ACME certificate joins the served set at start (acme_init) */
        char acme[900];
        int ok = acme_store_describe(data_dir, &s->acme, acme, sizeof acme);
        printf("acme: %s, certificate %s\n", s->acme.directory, acme);
        if (ok && gw_active_p12())
            printf("would serve: %s; and the ACME certificate for its names (SNI)\n", what);
        else if (ok)
            printf("would serve: ACME certificate %s\n", acme);
        else
            printf("would serve: %s, until the ACME certificate is issued\n", what);
    } else {
        printf("would serve: %s\n", what);
    }
    int rc = 0;
    if (gw_fallback_reason()) {
        printf("certificate error: %s\n", gw_fallback_reason());
        rc = 1;
    }
    gw_close();
    tls_global_cleanup();
    return rc;
}

int main(int argc, char **argv)
{
    json_set_alloc_funcs(malloc, wiping_free); /* before any JSON exists */
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(USAGE, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    /* `certgate fleet init --help` and the like: the usage (every command's options) */
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("certgate %s\n", CERTGATE_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "run") == 0) return cmd_run(argc - 2, argv + 2);
    if (strcmp(argv[1], "check-config") == 0) return cmd_check_config(argc - 2, argv + 2);
    if (strcmp(argv[1], "token") == 0) return app_token_command(argc - 2, argv + 2);
    if (strcmp(argv[1], "cert") == 0) return certimport_command(argc - 2, argv + 2);
    if (strcmp(argv[1], "acme") == 0) return acme_command(argc - 2, argv + 2);
    if (strcmp(argv[1], "fleet") == 0) return fleet_command(argc - 2, argv + 2);
    if (strcmp(argv[1], "audit") == 0) return audit_command(argc - 2, argv + 2);
    return usage_error("unknown command '%s'", argv[1]);
}
