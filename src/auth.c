/* auth.c - API tokens (see auth.h). */
#include "auth.h"

#include "err.h"
#include "fsutil.h"
#include "log.h"
#include "secret.h"
#include "strfmt.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define TOKEN_PREFIX "dt0c01."
#define PUBLIC_LEN 24
#define SECRET_LEN 64
#define TOKEN_LEN (sizeof TOKEN_PREFIX - 1 + PUBLIC_LEN + 1 + SECRET_LEN)
#define ID_LEN (sizeof TOKEN_PREFIX - 1 + PUBLIC_LEN)
#define MAX_STORE_BYTES (4 * 1024 * 1024)

struct token {
    char id[ID_LEN + 1];
    char *environment;
    char **scopes; /* NULL-terminated */
    unsigned char hash[SHA256_DIGEST_LENGTH];
};

struct store {
    struct token *tokens;
    size_t n;
};

/* the gateway's cached copy of the store, keyed by the file's identity */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct store cache;
static int cache_valid;
static struct stat cache_st;
static char *cache_path;

static void store_free(struct store *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->tokens[i].environment);
        for (char **p = s->tokens[i].scopes; p && *p; p++) free(*p);
        free(s->tokens[i].scopes);
    }
    free(s->tokens);
    s->tokens = NULL;
    s->n = 0;
}

static char *store_path(const char *config_dir)
{
    return fs_path_join(config_dir, AUTH_TOKENS_FILE);
}

static int hex_decode(const char *hex, unsigned char *out, size_t n)
{
    if (strlen(hex) != n * 2) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* Reads the store file as JSON (an absent file is an empty store). */
static json_t *store_read_json(const char *path, char *err, size_t errlen)
{
    char *data = NULL;
    size_t len = 0;
    if (fs_read_file(path, MAX_STORE_BYTES, &data, &len, err, errlen) != 0) {
        if (errno == ENOENT) return json_pack("{s:i,s:[]}", "version", 1, "tokens");
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(data, len, 0, &je);
    free(data);
    if (!root || !json_is_array(json_object_get(root, "tokens"))) {
        err_set(err, errlen, "%s: not a token store (line %d: %s)", path, je.line,
                root ? "no \"tokens\" array" : je.text);
        json_decref(root);
        return NULL;
    }
    return root;
}

static int store_from_json(json_t *root, struct store *s, const char *path, char *err,
                           size_t errlen)
{
    json_t *arr = json_object_get(root, "tokens");
    s->n = 0;
    s->tokens = calloc(json_array_size(arr) + 1, sizeof *s->tokens);
    if (!s->tokens) return -1;
    size_t i;
    json_t *t;
    json_array_foreach(arr, i, t)
    {
        const char *id = json_string_value(json_object_get(t, "id"));
        const char *env = json_string_value(json_object_get(t, "environment"));
        const char *hash = json_string_value(json_object_get(t, "sha256"));
        json_t *scopes = json_object_get(t, "scopes");
        struct token *k = &s->tokens[s->n];
        if (!id || strlen(id) != ID_LEN || !env || !hash || !json_is_array(scopes) ||
            hex_decode(hash, k->hash, sizeof k->hash) != 0) {
            err_set(err, errlen, "%s: token entry %zu is incomplete", path, i + 1);
            store_free(s);
            return -1;
        }
        memcpy(k->id, id, ID_LEN + 1);
        k->environment = strdup(env);
        k->scopes = calloc(json_array_size(scopes) + 1, sizeof *k->scopes);
        s->n++;
        if (!k->environment || !k->scopes) {
            store_free(s);
            return -1;
        }
        size_t j, m = 0;
        json_t *sc;
        json_array_foreach(scopes, j, sc)
        {
            if (json_is_string(sc)) k->scopes[m++] = strdup(json_string_value(sc));
        }
    }
    return 0;
}

/* 1 (with the sentence) when the store's mode lets others than its owner read it. */
static int store_mode_bad(const char *path, const struct stat *st, char *err, size_t errlen)
{
    if ((st->st_mode & 077) == 0) return 0;
    err_set(err, errlen,
            "%s has mode %04o, which lets other users read the token hashes; make it private "
            "with chmod 600 %s",
            path, (unsigned)(st->st_mode & 07777), path);
    return 1;
}

static int cache_refresh(const char *config_dir, char *err, size_t errlen);

int auth_store_check(const char *config_dir, char *err, size_t errlen)
{
    pthread_mutex_lock(&cache_lock);
    int rc = cache_refresh(config_dir, err, errlen);
    pthread_mutex_unlock(&cache_lock);
    return rc;
}

/* Makes sure the cache reflects the file; caller holds cache_lock. */
static int cache_refresh(const char *config_dir, char *err, size_t errlen)
{
    char *path = store_path(config_dir);
    if (!path) return -1;
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (!exists) memset(&st, 0, sizeof st);
    if (exists && store_mode_bad(path, &st, err, errlen)) {
        free(path);
        return -1;
    }
    if (cache_valid && cache_path && strcmp(cache_path, path) == 0 &&
        st.st_ino == cache_st.st_ino && st.st_size == cache_st.st_size &&
        st.st_mtim.tv_sec == cache_st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == cache_st.st_mtim.tv_nsec) {
        free(path);
        return 0;
    }
    json_t *root = store_read_json(path, err, errlen);
    struct store s = {0};
    int rc = root ? store_from_json(root, &s, path, err, errlen) : -1;
    json_decref(root);
    if (rc == 0) {
        store_free(&cache);
        cache = s;
        cache_st = st;
        cache_valid = 1;
        free(cache_path);
        cache_path = path;
    } else {
        free(path);
    }
    return rc;
}

int auth_status(enum auth_result r)
{
    switch (r) {
    case AUTH_OK:
        return 200;
    case AUTH_NO_SCOPE:
        return 403;
    case AUTH_ERROR:
        return 500;
    default:
        return 401;
    }
}

const char *auth_parse_authorization(const char *h, size_t *len)
{
    while (*h == ' ' || *h == '\t') h++;
    if (strncasecmp(h, "Api-Token", 9) != 0 || (h[9] != ' ' && h[9] != '\t')) return NULL;
    h += 9;
    while (*h == ' ' || *h == '\t') h++;
    size_t n = 0;
    while (h[n] && h[n] != ' ' && h[n] != '\t') n++;
    const char *rest = h + n;
    while (*rest == ' ' || *rest == '\t') rest++;
    if (n == 0 || *rest) return NULL;
    *len = n;
    return h;
}

void auth_token_id(const char *authorization, const char *query_token, char *out,
                   size_t outlen)
{
    const char *tok = NULL;
    size_t tlen = 0;
    if (outlen) out[0] = '\0';
    if (authorization) tok = auth_parse_authorization(authorization, &tlen);
    else if (query_token) tok = query_token, tlen = strlen(query_token);
    if (!tok || tlen <= ID_LEN || tok[ID_LEN] != '.' ||
        strncmp(tok, TOKEN_PREFIX, sizeof TOKEN_PREFIX - 1) != 0 || outlen <= ID_LEN)
        return;
    memcpy(out, tok, ID_LEN);
    out[ID_LEN] = '\0';
}

enum auth_result auth_check(const char *config_dir, const char *authorization,
                            const char *query_token, const char *environment,
                            const char *scope, char *msg, size_t msglen)
{
    const char *tok;
    size_t tlen;
    if (authorization) {
        tok = auth_parse_authorization(authorization, &tlen);
        if (!tok) {
            err_set(msg, msglen, "Malformed Authorization header: expected 'Api-Token <token>'.");
            return AUTH_MALFORMED;
        }
    } else if (query_token && *query_token) {
        tok = query_token;
        tlen = strlen(query_token);
    } else {
        err_set(msg, msglen,
                "Missing authorization parameter: send the header 'Authorization: Api-Token "
                "<token>' or the api-token query parameter.");
        return AUTH_MISSING;
    }
    unsigned char hash[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, tlen, hash);

    pthread_mutex_lock(&cache_lock);
    char why[300];
    if (cache_refresh(config_dir, why, sizeof why) != 0) {
        pthread_mutex_unlock(&cache_lock);
        static _Atomic long last_log;
        long now = (long)time(NULL);
        if (now - atomic_exchange(&last_log, now) >= 10) /* not once per request */
            log_error("API authentication fails: %s", why);
        err_set(msg, msglen,
                "The token store cannot be read; the gateway's log says why. Try again once "
                "the operator has fixed it.");
        return AUTH_ERROR;
    }
    /* every entry is compared, in constant time, whatever matches */
    const struct token *found = NULL;
    for (size_t i = 0; i < cache.n; i++) {
        int eq = secret_memcmp(hash, cache.tokens[i].hash, sizeof hash) == 0;
        if (eq) found = &cache.tokens[i];
    }
    enum auth_result r = AUTH_OK;
    if (!found) {
        r = AUTH_UNKNOWN;
        err_set(msg, msglen, "Token Authentication failed: the token is unknown or revoked.");
    } else if (strcmp(found->environment, environment) != 0) {
        r = AUTH_WRONG_ENV;
        err_set(msg, msglen,
                "Token Authentication failed: the token is not valid for this environment.");
    } else {
        r = AUTH_NO_SCOPE;
        for (char **s = found->scopes; *s; s++)
            if (strcmp(*s, scope) == 0) r = AUTH_OK;
        if (r != AUTH_OK)
            err_set(msg, msglen, "Token is missing required scope. Use one of: %s", scope);
    }
    pthread_mutex_unlock(&cache_lock);
    OPENSSL_cleanse(hash, sizeof hash);
    return r;
}

/* ----- the CLI side ----- */

/* Takes the store's lock file (serializes concurrent `certgate token` runs). */
static int store_lock(const char *config_dir, char *err, size_t errlen)
{
    char *p = fs_path_join(config_dir, ".tokens.lock");
    if (!p) return -1;
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        err_set(err, errlen, "cannot lock %s: %s", p, strerror(errno));
        if (fd >= 0) close(fd);
        free(p);
        return -1;
    }
    free(p);
    return fd;
}

static int store_write(const char *path, json_t *root, char *err, size_t errlen)
{
    char *text = json_dumps(root, JSON_INDENT(2));
    int rc = -1;
    /* always 0600, also when it replaces a store whose mode was looser */
    if (text) rc = fs_write_atomic_mode(path, text, strlen(text), 0600, err, errlen);
    free(text);
    return rc;
}

static void base32(const unsigned char *in, size_t nchars, char *out)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    for (size_t i = 0; i < nchars; i++) out[i] = alpha[in[i] & 31];
    out[nchars] = '\0';
}

static int valid_environment(const char *e)
{
    size_t n = strlen(e);
    if (n == 0 || n > 64) return 0;
    for (; *e; e++)
        if (!isalnum((unsigned char)*e) && *e != '-' && *e != '_') return 0;
    return 1;
}

int auth_token_create(const char *config_dir, const char *environment, const char *const *scopes,
                      const char *name, char **token, char *err, size_t errlen)
{
    if (!valid_environment(environment)) {
        err_set(err, errlen,
                "environment '%s' is not valid: use 1 to 64 letters, digits, '-' or '_'",
                environment);
        return -1;
    }
    if (!scopes || !scopes[0]) {
        err_set(err, errlen, "a token needs at least one --scope (e.g. %s)", AUTH_SCOPE_CERTS);
        return -1;
    }
    if (fs_mkdir_p(config_dir, 0700, 0, err, errlen) != 0) return -1;
    int lock = store_lock(config_dir, err, errlen);
    if (lock < 0) return -1;
    int rc = -1;
    char *path = store_path(config_dir);
    json_t *root = path ? store_read_json(path, err, errlen) : NULL;
    unsigned char rnd[PUBLIC_LEN + SECRET_LEN];
    char *t = malloc(TOKEN_LEN + 1);
    if (root && t && RAND_bytes(rnd, sizeof rnd) == 1) {
        char pub[PUBLIC_LEN + 1], sec[SECRET_LEN + 1];
        base32(rnd, PUBLIC_LEN, pub);
        base32(rnd + PUBLIC_LEN, SECRET_LEN, sec);
        snprintf(t, TOKEN_LEN + 1, "%s%s.%s", TOKEN_PREFIX, pub, sec);
        unsigned char hash[SHA256_DIGEST_LENGTH];
        char hex[2 * SHA256_DIGEST_LENGTH + 1], id[ID_LEN + 1], created[32];
        SHA256((const unsigned char *)t, TOKEN_LEN, hash);
        strfmt_hex(hex, hash, sizeof hash);
        snprintf(id, sizeof id, "%s%s", TOKEN_PREFIX, pub);
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_t *sc = json_array();
        for (const char *const *s = scopes; *s; s++) json_array_append_new(sc, json_string(*s));
        json_t *entry = json_pack("{s:s,s:s,s:s,s:o,s:s,s:s}", "id", id, "name",
                                  name ? name : "", "environment", environment, "scopes", sc,
                                  "created", created, "sha256", hex);
        if (entry && json_array_append_new(json_object_get(root, "tokens"), entry) == 0 &&
            store_write(path, root, err, errlen) == 0) {
            *token = t;
            t = NULL;
            rc = 0;
        }
        OPENSSL_cleanse(sec, sizeof sec);
    } else if (root && t) {
        err_set(err, errlen, "no randomness available for a token");
    }
    OPENSSL_cleanse(rnd, sizeof rnd);
    secret_free(t);
    json_decref(root);
    free(path);
    close(lock);
    return rc;
}

int auth_token_list(const char *config_dir, FILE *out, char *err, size_t errlen)
{
    char *path = store_path(config_dir);
    json_t *root = path ? store_read_json(path, err, errlen) : NULL;
    free(path);
    if (!root) return -1;
    json_t *arr = json_object_get(root, "tokens");
    fprintf(out, "%-31s  %-20s  %-16s  %-20s  %s\n", "ID", "NAME", "ENVIRONMENT", "CREATED",
            "SCOPES");
    size_t i;
    json_t *t;
    json_array_foreach(arr, i, t)
    {
        char scopes[512] = "";
        size_t j;
        json_t *s;
        json_array_foreach(json_object_get(t, "scopes"), j, s)
        {
            size_t used = strlen(scopes);
            snprintf(scopes + used, sizeof scopes - used, "%s%s", j ? "," : "",
                     json_string_value(s) ? json_string_value(s) : "?");
        }
        const char *nm = json_string_value(json_object_get(t, "name"));
        fprintf(out, "%-31s  %-20s  %-16s  %-20s  %s\n",
                json_string_value(json_object_get(t, "id")), nm && *nm ? nm : "-",
                json_string_value(json_object_get(t, "environment")),
                json_string_value(json_object_get(t, "created")), scopes);
    }
    json_decref(root);
    return 0;
}

int auth_token_revoke(const char *config_dir, const char *id, char *err, size_t errlen)
{
    char want[ID_LEN + 1];
    if (strncmp(id, TOKEN_PREFIX, sizeof TOKEN_PREFIX - 1) == 0 && strlen(id) >= ID_LEN)
        snprintf(want, sizeof want, "%.*s", (int)ID_LEN, id);
    else if (strlen(id) == PUBLIC_LEN)
        snprintf(want, sizeof want, "%s%s", TOKEN_PREFIX, id);
    else {
        err_set(err, errlen, "'%.40s' is not a token ID (dt0c01.<24 characters>)", id);
        return -1;
    }
    int lock = store_lock(config_dir, err, errlen);
    if (lock < 0) return -1;
    char *path = store_path(config_dir);
    json_t *root = path ? store_read_json(path, err, errlen) : NULL;
    int rc = -1;
    if (root) {
        json_t *arr = json_object_get(root, "tokens");
        size_t i, hit = (size_t)-1;
        json_t *t;
        json_array_foreach(arr, i, t)
        {
            const char *tid = json_string_value(json_object_get(t, "id"));
            if (tid && strcmp(tid, want) == 0) hit = i;
        }
        if (hit == (size_t)-1)
            err_set(err, errlen, "no token with ID %s", want);
        else if (json_array_remove(arr, hit) == 0)
            rc = store_write(path, root, err, errlen);
    }
    json_decref(root);
    free(path);
    close(lock);
    return rc;
}

int auth_token_count(const char *config_dir)
{
    char err[256];
    pthread_mutex_lock(&cache_lock);
    int n = cache_refresh(config_dir, err, sizeof err) == 0 ? (int)cache.n : -1;
    pthread_mutex_unlock(&cache_lock);
    return n;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int auth_query_param(const char *query, const char *name, char *buf, size_t len)
{
    if (!query || len == 0) return -1;
    size_t nl = strlen(name);
    const char *p = query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t plen = amp ? (size_t)(amp - p) : strlen(p);
        if (plen > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t o = 0;
            for (size_t i = nl + 1; i < plen && o + 1 < len; i++) {
                int hi, lo;
                if (p[i] == '%' && i + 2 < plen && (hi = hexval(p[i + 1])) >= 0 &&
                    (lo = hexval(p[i + 2])) >= 0) {
                    buf[o++] = (char)(hi * 16 + lo);
                    i += 2;
                } else {
                    buf[o++] = p[i] == '+' ? ' ' : p[i];
                }
            }
            buf[o] = '\0';
            return 0;
        }
        if (!amp) break;
        p = amp + 1;
    }
    return -1;
}

void auth_cleanup(void)
{
    pthread_mutex_lock(&cache_lock);
    store_free(&cache);
    cache_valid = 0;
    free(cache_path);
    cache_path = NULL;
    pthread_mutex_unlock(&cache_lock);
}
