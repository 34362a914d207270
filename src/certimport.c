/* certimport.c - `certgate cert import` (see certimport.h). */
#include "certimport.h"

#include "api.h"
#include "app.h"
#include "audit.h"
#include "certmeta.h"
#include "err.h"
#include "fsutil.h"
#include "gw.h"
#include "log.h"
#include "p12.h"
#include "secret.h"
#include "tls.h"

#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PEM_MAX (1u << 20)

static int import_usage(const char *why)
{
    fprintf(stderr,
            "certgate cert: %s\n"
            "Usage:\n"
            "  certgate cert import [--data-dir DIR] --certificate CERT.pem --key KEY.pem\n"
            "                       [--chain CA.pem] [--key-password P] [--alias A]\n"
            "                       [--name NAME] [--activate]\n",
            why);
    return 2;
}

struct import_args {
    const char *data_dir, *cert, *key, *chain, *key_password, *alias, *name;
    int activate;
};

static int parse_args(int argc, char **argv, struct import_args *a)
{
    a->data_dir = DEFAULT_DATA_DIR;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = strcmp(o, "--data-dir") == 0       ? &a->data_dir
                            : strcmp(o, "--certificate") == 0  ? &a->cert
                            : strcmp(o, "--key") == 0          ? &a->key
                            : strcmp(o, "--chain") == 0        ? &a->chain
                            : strcmp(o, "--key-password") == 0 ? &a->key_password
                            : strcmp(o, "--alias") == 0        ? &a->alias
                            : strcmp(o, "--name") == 0         ? &a->name
                                                               : NULL;
        if (strcmp(o, "--activate") == 0) {
            a->activate = 1;
        } else if (slot && v) {
            *slot = v;
            i++;
        } else {
            char why[200];
            snprintf(why, sizeof why, "unknown or incomplete option '%.100s'", o);
            return import_usage(why);
        }
    }
    if (!a->cert || !a->key) return import_usage("import needs --certificate and --key");
    return 0;
}

/* The stored name: --name, else the certificate's base name with ".p12" for its
 * extension. malloc'd. */
static char *default_name(const struct import_args *a)
{
    if (a->name) return strdup(a->name);
    char *copy = strdup(a->cert);
    if (!copy) return NULL;
    const char *base = basename(copy);
    size_t n = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) n = (size_t)(dot - base);
    char *out = malloc(n + 5);
    if (out) snprintf(out, n + 5, "%.*s.p12", (int)n, base);
    free(copy);
    return out;
}

static int read_pem(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
    char e[600];
    if (fs_read_file(path, PEM_MAX, data, len, e, sizeof e) == 0) return 0;
    err_set(err, errlen, "%s: %s", path, errno == ENOENT ? "no such file" : e);
    return -1;
}

/* The audit lines of an import (source cli): "import" (done or refused) and, when
 * --activate recorded it, "activate" from the configured certificate's leaf to the new
 * one (which a running gateway serves after SIGHUP). */
static void import_audit(const struct import_args *a, const char *name, const char *alias,
                         const char *new_sha, int ok, const char *err)
{
    struct gw_served now;
    gw_served_get(&now);
    char user[300], msg[1400];
    struct passwd *pw = getpwuid(geteuid());
    snprintf(user, sizeof user, "%s (uid %u)", pw ? pw->pw_name : "?", (unsigned)geteuid());
    if (ok)
        snprintf(msg, sizeof msg, "imported %s from %.300s and %.300s into %.300s", name,
                 a->cert, a->key, gw_paths.ssl_dir);
    else
        snprintf(msg, sizeof msg, "%s; nothing was stored", err);
    struct audit_event ev = {.source = "cli", .op = "import", .name = name, .alias = alias,
                             .sha_before = now.sha256, .sha_after = now.sha256,
                             .status = ok ? 200 : 400, .message = msg, .user = user};
    audit_record(&ev);
    if (ok && a->activate) {
        snprintf(msg, sizeof msg,
                 "recorded %s as the certificate in %s; a running gateway serves it after "
                 "SIGHUP", name, gw_paths.conf_path);
        ev.op = "activate";
        ev.sha_after = new_sha;
        audit_record(&ev);
    }
}

/* Validates, stores and (with --activate) records; -1 with a sentence, nothing stored. */
static int import_run(const struct import_args *a, const char *name, char *err, size_t errlen)
{
    char new_sha[TLS_SHA256_HEX_LEN + 1] = "";
    char *served_alias = NULL;
    char *cert = NULL, *key = NULL, *chain = NULL;
    size_t cert_len = 0, key_len = 0, chain_len = 0;
    unsigned char *der = NULL;
    size_t der_len = 0;
    struct p12_file *p12 = NULL;
    struct certmeta_rec *meta = NULL;
    json_t *warnings = json_array();
    char pw[64];
    int rc = -1;
    if (!warnings || p12_random_password(pw, sizeof pw) != 0) {
        err_set(err, errlen, "cannot make a random password");
        goto done;
    }
    if (read_pem(a->cert, &cert, &cert_len, err, errlen) != 0 ||
        read_pem(a->key, &key, &key_len, err, errlen) != 0 ||
        (a->chain && read_pem(a->chain, &chain, &chain_len, err, errlen) != 0))
        goto done;
    struct p12_pem_src src = {cert,   cert_len, a->cert, key,        key_len,
                              a->key, a->key_password, chain, chain_len, a->chain};
    char *alias = a->alias ? p12_java_lower(a->alias) : NULL;
    int built = p12_pem_build(&src, alias ? alias : "1", pw, &der, &der_len, warnings, err,
                              errlen);
    free(alias);
    if (built != 0) goto done;
    /* from here on exactly what an API upload does with the bytes */
    if (p12_parse(der, der_len, pw, name, &p12, err, errlen) != P12_OK) goto done;
    meta = certmeta_rec_of(p12); /* its facts, recorded once the file is stored */
    const struct p12_entry *e = NULL;
    if (p12_select(p12, NULL, &e, err, errlen) != P12_OK) goto done;
    tls_cert_sha256_hex(p12_entry_cert(e), new_sha);
    if (p12_check_entry(e, time(NULL), warnings, err, errlen) != 0) {
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(sizeof tmp - 1), err);
        err_set(err, errlen, "%.300s: %.700s", a->cert, tmp);
        goto done;
    }
    served_alias = strdup(p12_entry_alias(e));
    struct gw_change *ch = served_alias ? gw_change_prepare(p12, served_alias, err, errlen) : NULL;
    if (ch) p12 = NULL; /* the change owns it now */
    if (!ch) goto done;
    gw_change_abort(ch); /* the check only: the running gateway switches on SIGHUP */
    char e2[600];
    if (gw_is_active_name(name)) {
        err_set(err, errlen,
                "%s is the active certificate file and cannot be replaced; import under "
                "another --name",
                name);
    } else if (fs_check_entry(gw_paths.ssl_dir, name, e2, sizeof e2) != 0 && errno != ENOENT) {
        err_set(err, errlen, "%s", e2);
    } else {
        char *old = NULL;
        size_t oldlen = 0;
        int had_old =
            fs_read_entry(gw_paths.ssl_dir, name, 64u << 20, &old, &oldlen, NULL, 0) == 0;
        if (fs_write_entry(gw_paths.ssl_dir, name, der, der_len, 0600, e2, sizeof e2) != 0) {
            err_set(err, errlen, "cannot store %s: %s", name, e2);
        } else if (a->activate &&
                   gw_record_certificate(name, pw, served_alias, e2, sizeof e2) != 0) {
            char *path = fs_path_join(gw_paths.ssl_dir, name);
            char e3[300];
            if (path && (had_old ? fs_write_entry(gw_paths.ssl_dir, name, old, oldlen, 0600,
                                                  e3, sizeof e3)
                                 : fs_unlink_durable(path, e3, sizeof e3)) != 0)
                fprintf(stderr, "certgate cert import: could not undo the write of %s: %s\n",
                        path, e3);
            free(path);
            err_set(err, errlen, "cannot record %s in custom.properties: %s", name, e2);
        } else {
            rc = 0;
            if (meta && certmeta_save(name, meta, NULL, e2, sizeof e2) != 0)
                fprintf(stderr, "warning: cannot record the certificate facts of %s: %s\n",
                        name, e2);
        }
        if (old) explicit_bzero(old, oldlen);
        free(old);
    }
    if (rc == 0) {
        for (size_t i = 0; i < json_array_size(warnings); i++)
            fprintf(stderr, "warning: %s\n", json_string_value(json_array_get(warnings, i)));
        printf("imported %s (alias '%s') into %s\n", name, served_alias, gw_paths.ssl_dir);
        if (a->activate)
            printf("activated in %s; a running gateway serves it after SIGHUP "
                   "(systemctl reload certgate, or kill -HUP <pid>)\n",
                   gw_paths.conf_path);
        else
            printf("not activated; its password, for activating it through the API: %s\n", pw);
    }
done:
    import_audit(a, name, served_alias, new_sha, rc == 0, err);
    free(served_alias);
    explicit_bzero(pw, sizeof pw);
    p12_free(p12);
    certmeta_rec_free(meta);
    p12_der_free(der, der_len);
    if (key) explicit_bzero(key, key_len);
    free(key);
    free(cert);
    free(chain);
    json_decref(warnings);
    return rc;
}

int certimport_command(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "import") != 0)
        return import_usage("unknown or missing sub-command (use import)");
    struct import_args a = {0};
    int urc = parse_args(argc, argv, &a);
    if (urc) return urc;
    char *name = default_name(&a);
    const char *why = name ? api_name_invalid(name, strlen(name)) : "out of memory";
    if (why) {
        fprintf(stderr, "certgate cert import: %s\n", why);
        free(name);
        return 2;
    }
    log_set_level(LOG_WARN);
    char err[1024];
    int rc = 1;
    if (tls_global_init(err, sizeof err) != 0) {
        fprintf(stderr, "certgate cert import: %s\n", err);
        free(name);
        return 1;
    }
    struct gw_options gopt = {.data_dir = a.data_dir, .readonly = 0, .keep_temps = 1};
    if (gw_open(&gopt, err, sizeof err) != 0) {
        fprintf(stderr, "certgate cert import: configuration error: %s\n", err);
    } else if (audit_open(a.data_dir, err, sizeof err) != 0) {
        fprintf(stderr, "certgate cert import: %s; nothing was stored\n", err);
        gw_close();
    } else {
        audit_configure(gw_settings()->audit_max_bytes, gw_settings()->audit_files);
        if (import_run(&a, name, err, sizeof err) == 0)
            rc = 0;
        else
            fprintf(stderr, "certgate cert import: %s; nothing was stored\n", err);
        audit_close();
        gw_close();
    }
    tls_global_cleanup();
    free(name);
    return rc;
}
