/* fleet.c - `certgate fleet init|status` (see fleet.h). */
#include "fleet.h"

#include "acme_fleet.h"
#include "acme_store.h"
#include "app.h"
#include "conf.h"
#include "err.h"
#include "etcd.h"
#include "fleetkey.h"
#include "fsutil.h"
#include "propfile.h"
#include "secret.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* a certificate file larger than this cannot be one value of a default etcd (its request
 * limit is 1.5 MiB, and the transaction carries more than the file) */
#define FLEET_MAX_VALUE (1400u * 1024)

struct fleet_cli {
    const char *data_dir, *etcd_arg, *env_arg;
    int force;
    char *config_dir, *ssl_dir, *conf_path, *keypath;
    struct conf_settings s;
    const char *endpoints, *prefix, *member_id;
    struct etcd *e;
};

static int fleet_usage(const char *why)
{
    fprintf(stderr,
            "certgate fleet: %s\n"
            "Usage:\n"
            "  certgate fleet init [--data-dir DIR] [--etcd URL[,URL...]] [--environment ENV]\n"
            "                      [--force]\n"
            "  certgate fleet status [--data-dir DIR] [--etcd URL[,URL...]]\n",
            why);
    return 2;
}

static void cli_free(struct fleet_cli *c)
{
    etcd_close(c->e);
    conf_settings_free(&c->s);
    free(c->config_dir);
    free(c->ssl_dir);
    free(c->conf_path);
    free(c->keypath);
}

/* Reads custom.properties and opens the etcd client; 0, 1 (failed) or 2 (usage). */
static int cli_open(struct fleet_cli *c, char *err, size_t errlen)
{
    c->config_dir = fs_path_join(c->data_dir, "config");
    c->ssl_dir = fs_path_join(c->data_dir, "ssl");
    c->conf_path = c->config_dir ? fs_path_join(c->config_dir, "custom.properties") : NULL;
    if (!c->conf_path || !c->ssl_dir) {
        err_set(err, errlen, "out of memory");
        return 1;
    }
    struct propfile *doc = NULL;
    int existed = 0;
    if (propfile_load(c->conf_path, &doc, &existed, err, errlen) < 0) return 1;
    int rc = conf_settings_load(doc, c->conf_path, &c->s, err, errlen);
    propfile_free(doc);
    if (rc < 0) return 1;
    const struct conf_fleet *f = &c->s.fleet;
    c->endpoints = c->etcd_arg ? c->etcd_arg : f->etcd;
    if (!c->endpoints) {
        err_set(err, errlen, "no etcd to use: give --etcd URL[,URL...] or set etcd in the [fleet] "
                "section of %s", c->conf_path);
        return 2;
    }
    c->prefix = f->prefix ? f->prefix : "/certgate";
    static char host_port[200];
    if (!(c->member_id = f->member_id)) {
        char host[128] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(host_port, sizeof host_port, "%s:%u", host, c->s.port_ssl);
        c->member_id = host_port;
    }
    if (f->fleet_key_file && f->fleet_key_file[0] == '/')
        c->keypath = strdup(f->fleet_key_file);
    else
        c->keypath = fs_path_join(c->config_dir, f->fleet_key_file ? f->fleet_key_file
                                                                    : FLEETKEY_FILE);
    struct etcd_opts o = {.endpoints = c->endpoints, .ca_file = f->ca_file,
                          .cert_file = f->cert_file, .key_file = f->key_file,
                          .timeout_ms = f->timeout_ms};
    if (!c->keypath) {
        err_set(err, errlen, "out of memory");
        return 1;
    }
    return etcd_open(&o, &c->e, err, errlen) < 0 ? 1 : 0;
}

/* ----- the state of this node, as transaction operations ----- */

struct state {
    struct etcd_op *ops;
    char **keys;   /* owned, one per op */
    void **values; /* owned, one per op */
    size_t n, cap;
    size_t ncerts, ntokens;
};

static int state_put(struct state *st, char *key, void *value, size_t len)
{
    if (!key || !value) goto fail;
    if (st->n == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 16;
        struct etcd_op *o = realloc(st->ops, cap * sizeof *o);
        if (o) st->ops = o;
        char **k = realloc(st->keys, cap * sizeof *k);
        if (k) st->keys = k;
        void **v = realloc(st->values, cap * sizeof *v);
        if (v) st->values = v;
        if (!o || !k || !v) goto fail;
        st->cap = cap;
    }
    st->ops[st->n] = (struct etcd_op){ETCD_OP_PUT, key, value, len, 0, 0};
    st->keys[st->n] = key;
    st->values[st->n++] = value;
    return 0;
fail:
    free(key);
    free(value);
    return -1;
}

static void state_free(struct state *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->keys[i]);
        free(st->values[i]);
    }
    free(st->ops);
    free(st->keys);
    free(st->values);
}

static char *keyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *keyf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

static char *json_text(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

/* The token entries of tokens.json, and the environment to use (--environment, or the one
 * environment the tokens name). */
static int add_tokens(struct fleet_cli *c, struct state *st, const char **env, char *err,
                      size_t errlen)
{
    char *path = fs_path_join(c->config_dir, "tokens.json"), *data = NULL;
    size_t len = 0;
    json_t *root = NULL;
    int rc = -1;
    if (!path) goto nomem;
    if (fs_read_file(path, 4u << 20, &data, &len, err, errlen) < 0) {
        if (errno != ENOENT) goto out;
    } else if (!(root = json_loadb(data, len, 0, NULL)) ||
               !json_is_array(json_object_get(root, "tokens"))) {
        err_set(err, errlen, "%s: not a token store", path);
        goto out;
    }
    json_t *arr = json_object_get(root, "tokens"), *t;
    size_t i;
    const char *only = NULL;
    int several = 0;
    json_array_foreach(arr, i, t) {
        const char *id = json_string_value(json_object_get(t, "id"));
        const char *te = json_string_value(json_object_get(t, "environment"));
        if (!id || !te || strchr(id, '/')) {
            err_set(err, errlen, "%s: token entry %zu has no valid id or environment", path, i);
            goto out;
        }
        if (only && strcmp(only, te) != 0) several = 1;
        if (!only) only = te;
        json_incref(t);
        char *v = json_text(t);
        if (state_put(st, keyf("%s/tokens/%s", c->prefix, id), v, v ? strlen(v) : 0) < 0)
            goto nomem;
        st->ntokens++;
    }
    if (!(*env = c->env_arg ? c->env_arg : c->s.fleet.environment)) {
        if (!only || several) {
            err_set(err, errlen, "%s; give the environment of this node's certificates with "
                    "--environment ENV", only ? "the API tokens name several environments"
                                              : "no API token names an environment");
            goto out;
        }
        if (!(*env = strdup(only))) goto nomem;
    } else if (!(*env = strdup(*env))) {
        goto nomem;
    }
    rc = 0;
    goto out;
nomem:
    err_set(err, errlen, "out of memory");
out:
    json_decref(root);
    if (data) secret_free(data);
    free(path);
    return rc;
}

static int add_file(struct fleet_cli *c, struct state *st, const char *env, const char *name,
                    const char *path, char *err, size_t errlen)
{
    char *data = NULL;
    size_t len = 0;
    if (fs_read_file(path, FLEET_MAX_VALUE, &data, &len, err, errlen) < 0) {
        if (errno == EFBIG || strstr(err, "larger than"))
            err_set(err, errlen, "%s is larger than %u bytes, too large for one etcd value (etcd "
                    "refuses requests over 1.5 MiB unless --max-request-bytes is raised)",
                    path, FLEET_MAX_VALUE);
        return -1;
    }
    st->ncerts++;
    if (state_put(st, keyf("%s/%s/certs/%s", c->prefix, env, name), data, len) < 0) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* Every certificate file of DIR/ssl (and the configured one when it lies elsewhere), and
 * the active record with its password sealed. */
static int add_certs(struct fleet_cli *c, struct state *st, const char *env,
                     const struct fleet_key *k, char *err, size_t errlen)
{
    DIR *d = opendir(c->ssl_dir);
    if (!d && errno != ENOENT) {
        err_set(err, errlen, "cannot read %s: %s", c->ssl_dir, strerror(errno));
        return -1;
    }
    const char *file = c->s.certificate_file, *active = NULL;
    struct dirent *de;
    int rc = 0;
    char acme_file[160] = "";
    if (c->s.acme.directory) acme_store_file_name(&c->s.acme, acme_file, sizeof acme_file);
    while (d && rc == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue; /* ., .., temp files, the default certificate */
        /* the ACME certificate goes between members as <env>/acme/certificate (acme_fleet.h) */
        if (acme_file[0] && strcmp(de->d_name, acme_file) == 0) continue;
        char *path = fs_path_join(c->ssl_dir, de->d_name);
        struct stat sb;
        if (!path) rc = -1;
        else if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            rc = add_file(c, st, env, de->d_name, path, err, errlen);
        free(path);
    }
    if (d) closedir(d);
    if (rc < 0) return -1;
    if (file) {
        const char *slash = strrchr(file, '/');
        size_t sl = strlen(c->ssl_dir);
        active = slash ? slash + 1 : file;
        int inside = !slash || (strncmp(file, c->ssl_dir, sl) == 0 && file + sl == slash);
        if (!inside && add_file(c, st, env, active, file, err, errlen) < 0) return -1;
    }
    char *pw = NULL;
    if (c->s.certificate_password) {
        pw = strdup(c->s.certificate_password);
    } else if (c->s.certificate_password_encr) {
        struct secret_key sk;
        if (secret_key_load(c->config_dir, 0, &sk, err, errlen) < 0 ||
            secret_decrypt(&sk, c->s.certificate_password_encr, &pw, err, errlen) < 0) {
            secret_key_wipe(&sk);
            return -1;
        }
        secret_key_wipe(&sk);
    }
    char *key = keyf("%s/%s/active", c->prefix, env);
    char *sealed = pw && key ? fleetkey_seal(k, key, pw, strlen(pw)) : NULL;
    secret_free(pw);
    json_t *j = json_pack("{s:s?,s:s?,s:s?}", "name", active, "alias", c->s.certificate_alias,
                          "password", sealed);
    free(sealed);
    char *v = json_text(j);
    if (!key || (file && !sealed && (c->s.certificate_password || c->s.certificate_password_encr))) {
        free(key);
        free(v);
        err_set(err, errlen, "out of memory");
        return -1;
    }
    if (state_put(st, key, v, v ? strlen(v) : 0) < 0) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int valid_env(const char *env)
{
    if (!*env || strlen(env) > 64) return 0;
    for (const char *p = env; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') return 0;
    return 1;
}

static int fleet_init(struct fleet_cli *c, char *err, size_t errlen)
{
    char *fleetkey_name = keyf("%s/fleet", c->prefix), *under = keyf("%s/", c->prefix);
    const char *env = NULL;
    struct state st = {0};
    struct etcd_range_result old = {0};
    struct etcd_cmp *cmps = NULL;
    struct fleet_key k;
    int rc = 1, made_key = 0;
    memset(&k, 0, sizeof k);
    if (!fleetkey_name || !under) goto nomem;
    if (add_tokens(c, &st, &env, err, errlen) < 0) goto out;
    if (!valid_env(env)) {
        err_set(err, errlen, "environment '%s' is not an environment ID (letters, digits, '-' "
                "and '_', at most 64)", env);
        goto out;
    }
    /* what etcd holds now: a fleet is replaced only with --force */
    if (etcd_range(c->e, under, 1, 0, &old, err, errlen) < 0) goto out;
    size_t nold = 0;
    for (size_t i = 0; i < old.n; i++) nold += strncmp(old.kvs[i].key + strlen(under), "members/", 8) != 0;
    if (nold && !c->force) {
        err_set(err, errlen, "etcd %s holds a fleet state under %s already (%zu keys, revision "
                "%lld); this node does not replace it without --force",
                etcd_endpoint(c->e), c->prefix, nold, (long long)old.revision);
        goto out;
    }
    /* the fleet key: kept when the file exists (a re-init from the same node) */
    if (fleetkey_load(c->keypath, &k, err, errlen) < 0) {
        if (errno != ENOENT) goto out;
        if (fs_mkdir_p(c->config_dir, 0700, 0, err, errlen) < 0 ||
            fleetkey_create(c->keypath, 0, &k, err, errlen) < 0)
            goto out;
        made_key = 1;
    }
    if (add_certs(c, &st, env, &k, err, errlen) < 0) goto out;
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    char *meta = json_text(json_pack("{s:i,s:s,s:s,s:s}", "version", 1, "key_id", k.id, "by",
                                     c->member_id, "time", when));
    char *mk = strdup(fleetkey_name);
    if (state_put(&st, mk, meta, meta ? strlen(meta) : 0) < 0) goto nomem;
    /* compares: no fleet yet, or (--force) every key as read; stale keys are deleted */
    size_t ncmps = 0, nputs = st.n;
    if (!(cmps = calloc(old.n + 1, sizeof *cmps))) goto nomem;
    if (!c->force) cmps[ncmps++] = (struct etcd_cmp){fleetkey_name, ETCD_CMP_CREATE, 0};
    for (size_t i = 0; i < old.n; i++) {
        const char *key = old.kvs[i].key;
        if (strncmp(key + strlen(under), "members/", 8) == 0) continue;
        if (strstr(key + strlen(under), "/acme/")) continue; /* the members' ACME state stays */
        cmps[ncmps++] = (struct etcd_cmp){key, ETCD_CMP_MOD, old.kvs[i].mod_revision};
        int kept = 0;
        for (size_t j = 0; j < nputs && !kept; j++) kept = strcmp(st.keys[j], key) == 0;
        char *dk = strdup(key);
        if (!kept && (state_put(&st, dk, strdup(""), 0) < 0)) goto nomem;
        if (!kept) st.ops[st.n - 1].type = ETCD_OP_DELETE;
        if (kept) free(dk);
    }
    int ok = 0;
    int64_t rev = 0;
    if (etcd_txn(c->e, cmps, ncmps, st.ops, st.n, &ok, &rev, err, errlen) < 0) {
        if (strstr(err, "too large") || strstr(err, "too many operations")) {
            size_t l = strlen(err);
            snprintf(err + l, errlen - l, " (this node's state is one transaction: raise etcd's "
                     "--max-request-bytes or --max-txn-ops, or remove unused files from %s)",
                     c->ssl_dir);
        }
        goto out;
    }
    if (!ok) {
        err_set(err, errlen, "the fleet state in etcd changed while fleet init ran (another "
                "fleet init?); nothing was written, run it again");
        goto out;
    }
    printf("fleet %s initialized in etcd at revision %lld (%s): environment %s, %zu certificate "
           "file%s, active %s, %zu token%s%s\n",
           c->prefix, (long long)rev, etcd_endpoint(c->e), env, st.ncerts,
           st.ncerts == 1 ? "" : "s", c->s.certificate_file ? c->s.certificate_file : "the default "
           "certificate", st.ntokens, st.ntokens == 1 ? "" : "s",
           nold ? ", replacing the previous state (--force)" : "");
    printf("fleet key: %s (id %s%s); copy it (mode 0600) to every member, and set [fleet] etcd "
           "on each\n", c->keypath, k.id, made_key ? ", new" : ", existing");
    rc = 0;
    goto out;
nomem:
    err_set(err, errlen, "out of memory");
out:
    fleetkey_wipe(&k);
    free(cmps);
    etcd_range_free(&old);
    state_free(&st);
    free((char *)env);
    free(fleetkey_name);
    free(under);
    return rc;
}

/* ----- status ----- */

static void print_active(const char *key, const struct etcd_kv *kv, const char *env,
                         const struct fleet_key *k, int have_key, int *problems)
{
    json_t *j = json_loadb((const char *)kv->value, kv->value_len, 0, NULL);
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *alias = json_string_value(json_object_get(j, "alias"));
    const char *sealed = json_string_value(json_object_get(j, "password"));
    printf("environment %s: active %s", env, name ? name : "(the default certificate)");
    if (alias) printf(" (alias %s)", alias);
    if (!j) {
        printf(": the record is not JSON\n");
        (*problems)++;
    } else if (!sealed) {
        printf(", no password\n");
    } else if (!have_key) {
        printf(", password sealed (no fleet key to check it)\n");
    } else {
        char *pw = NULL, err[512];
        size_t len;
        if (fleetkey_open(k, key, sealed, &pw, &len, err, sizeof err) == 0) {
            printf(", password opens with the fleet key\n");
        } else {
            printf("\n  error: %s\n", err);
            (*problems)++;
        }
        secret_free(pw);
    }
    json_decref(j);
}

static void print_member(const char *id, const struct etcd_kv *kv)
{
    json_t *j = json_loadb((const char *)kv->value, kv->value_len, 0, NULL);
    const char *serving = json_string_value(json_object_get(j, "serving"));
    printf("member %s: applied revision %lld, serving %s", id,
           (long long)json_integer_value(json_object_get(j, "applied")),
           !serving ? "?" : *serving ? serving : "its default certificate");
    const char *e = json_string_value(json_object_get(j, "error"));
    json_int_t failed = json_integer_value(json_object_get(j, "failedRevision"));
    if (e && failed) printf(", not applied at revision %lld: %s", (long long)failed, e);
    else if (e) printf(", error: %s", e);
    printf("%s\n", kv->lease ? "" : " (no lease)");
    json_decref(j);
}

static int fleet_status(struct fleet_cli *c, char *err, size_t errlen)
{
    char *under = keyf("%s/", c->prefix);
    struct etcd_range_result r = {0};
    struct fleet_key k;
    int problems = 0, members = 0, tokens = 0, have_key = 0, rc = 1;
    if (!under) goto out;
    if (etcd_range(c->e, under, 1, 0, &r, err, errlen) < 0) goto out;
    const struct etcd_kv *meta = NULL;
    for (size_t i = 0; i < r.n; i++)
        if (strcmp(r.kvs[i].key + strlen(under), "fleet") == 0) meta = &r.kvs[i];
    if (!meta) {
        err_set(err, errlen, "etcd %s has no fleet state under %s; make it with certgate fleet "
                "init", etcd_endpoint(c->e), c->prefix);
        goto out;
    }
    json_t *mj = json_loadb((const char *)meta->value, meta->value_len, 0, NULL);
    const char *kid = json_string_value(json_object_get(mj, "key_id"));
    printf("fleet %s at revision %lld (etcd %s): made by %s at %s, fleet key id %s\n", c->prefix,
           (long long)r.revision, etcd_endpoint(c->e),
           json_string_value(json_object_get(mj, "by")) ?: "?",
           json_string_value(json_object_get(mj, "time")) ?: "?", kid ? kid : "?");
    char kerr[512];
    if (fleetkey_load(c->keypath, &k, kerr, sizeof kerr) == 0) {
        have_key = 1;
        int same = kid && strcmp(kid, k.id) == 0;
        printf("this member (%s): fleet key %s, id %s%s\n", c->member_id, c->keypath, k.id,
               same ? ", the fleet's key" : ", NOT the fleet's key: copy the fleet key file from a "
                                        "member of this fleet");
        problems += !same;
    } else {
        printf("this member (%s): %s\n", c->member_id, kerr);
        problems++;
    }
    json_decref(mj);
    for (size_t i = 0; i < r.n; i++) {
        const char *rest = r.kvs[i].key + strlen(under), *slash;
        if (strncmp(rest, "tokens/", 7) == 0) {
            tokens++;
        } else if (strncmp(rest, "members/", 8) == 0) {
            members++;
            print_member(rest + 8, &r.kvs[i]);
        } else if ((slash = strchr(rest, '/')) && strcmp(slash, "/active") == 0) {
            char env[80];
            snprintf(env, sizeof env, "%.*s", (int)(slash - rest), rest);
            print_active(r.kvs[i].key, &r.kvs[i], env, &k, have_key, &problems);
        } else if (slash && strncmp(slash, "/certs/", 7) == 0) {
            printf("environment %.*s: certificate file %s, %zu bytes, revision %lld\n",
                   (int)(slash - rest), rest, slash + 7, r.kvs[i].value_len,
                   (long long)r.kvs[i].mod_revision);
        } else if (slash && strncmp(slash, "/acme/", 6) == 0) {
            char env[80];
            snprintf(env, sizeof env, "%.*s", (int)(slash - rest), rest);
            acme_fleet_print(env, slash + 6, &r.kvs[i]);
        }
    }
    printf("tokens: %d\n", tokens);
    if (!members) printf("members: none registered (a gateway registers while it runs with "
                         "[fleet])\n");
    if (problems) err_set(err, errlen, "%d problem%s found (see above)", problems,
                          problems == 1 ? "" : "s");
    rc = problems ? 1 : 0;
out:
    if (have_key) fleetkey_wipe(&k);
    etcd_range_free(&r);
    free(under);
    return rc;
}

int fleet_command(int argc, char **argv)
{
    if (argc < 1 || (strcmp(argv[0], "init") != 0 && strcmp(argv[0], "status") != 0))
        return fleet_usage("unknown or missing sub-command (use init or status)");
    int init = strcmp(argv[0], "init") == 0;
    struct fleet_cli c = {.data_dir = DEFAULT_DATA_DIR};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = strcmp(o, "--data-dir") == 0               ? &c.data_dir
                            : strcmp(o, "--etcd") == 0                 ? &c.etcd_arg
                            : init && strcmp(o, "--environment") == 0 ? &c.env_arg
                                                                       : NULL;
        if (init && strcmp(o, "--force") == 0) {
            c.force = 1;
        } else if (slot && v) {
            *slot = v;
            i++;
        } else {
            char why[200];
            snprintf(why, sizeof why, "%s: unknown or incomplete option '%s'", argv[0], o);
            return fleet_usage(why);
        }
    }
    char err[2048] = "";
    int rc = cli_open(&c, err, sizeof err);
    if (rc == 0) rc = init ? fleet_init(&c, err, sizeof err) : fleet_status(&c, err, sizeof err);
    if (rc == 2) {
        cli_free(&c);
        return fleet_usage(err);
    }
    if (rc) fprintf(stderr, "certgate fleet %s: %s\n", argv[0], err[0] ? err : "out of memory");
    cli_free(&c);
    return rc;
}

/* ----- API tokens of a fleet node (certgate token create|revoke) ----- */

/* The id of a token key <prefix>/tokens/<id> matches what revoke was given: the ID, its
 * public part after "dt0c01.", or the whole token (ID + "." + secret). */
static int token_matches(const char *kid, const char *arg)
{
    size_t n = strlen(kid);
    const char *dot = strchr(kid, '.');
    return strcmp(kid, arg) == 0 || (dot && strcmp(dot + 1, arg) == 0) ||
           (strncmp(arg, kid, n) == 0 && arg[n] == '.');
}

static int token_put(struct fleet_cli *c, const char *id, char *err, size_t errlen)
{
    char *path = fs_path_join(c->config_dir, "tokens.json"), *data = NULL, *key = NULL;
    char *v = NULL;
    size_t len = 0;
    json_t *root = NULL, *t, *hit = NULL;
    size_t i;
    int rc = -1, ok = 0;
    if (!path || fs_read_file(path, 4u << 20, &data, &len, err, errlen) < 0) goto out;
    root = json_loadb(data, len, 0, NULL);
    json_array_foreach(json_object_get(root, "tokens"), i, t) {
        const char *tid = json_string_value(json_object_get(t, "id"));
        if (tid && strcmp(tid, id) == 0) hit = t;
    }
    if (!hit || strchr(id, '/')) {
        err_set(err, errlen, "%s: no token entry %s", path, id);
        goto out;
    }
    v = json_text(json_incref(hit));
    key = keyf("%s/tokens/%s", c->prefix, id);
    struct etcd_op op = {ETCD_OP_PUT, key, v, v ? strlen(v) : 0, 0, 0};
    if (!v || !key) err_set(err, errlen, "out of memory");
    else if (etcd_txn(c->e, NULL, 0, &op, 1, &ok, NULL, err, errlen) == 0) rc = 0;
out:
    json_decref(root);
    free(v);
    free(key);
    free(data);
    free(path);
    return rc;
}

static int token_delete(struct fleet_cli *c, const char *arg, int *found, char *err,
                        size_t errlen)
{
    char *under = keyf("%s/tokens/", c->prefix);
    struct etcd_range_result r = {0};
    int rc = -1, ok = 0;
    if (!under || etcd_range(c->e, under, 1, 0, &r, err, errlen) < 0) goto out;
    rc = 0;
    for (size_t i = 0; i < r.n && rc == 0; i++) {
        if (!token_matches(r.kvs[i].key + strlen(under), arg)) continue;
        struct etcd_op op = {ETCD_OP_DELETE, r.kvs[i].key, NULL, 0, 0, 0};
        rc = etcd_txn(c->e, NULL, 0, &op, 1, &ok, NULL, err, errlen);
        if (rc == 0) *found = 1;
    }
out:
    etcd_range_free(&r);
    free(under);
    return rc;
}

int fleet_token_sync(const char *data_dir, const char *id, int revoke, int *in_fleet,
                     int *found, char *err, size_t errlen)
{
    struct fleet_cli c = {.data_dir = data_dir};
    *in_fleet = *found = 0;
    int rc = cli_open(&c, err, errlen);
    if (rc == 2 && !c.s.fleet.etcd) rc = 0, err[0] = '\0'; /* no [fleet]: a single node */
    else if (rc == 0) {
        *in_fleet = 1;
        rc = revoke ? token_delete(&c, id, found, err, errlen) : token_put(&c, id, err, errlen);
    }
    cli_free(&c);
    return rc ? -1 : 0;
}
