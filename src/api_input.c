/* api_input.c - what an API request brings: its path and certificate name, a password
 * in a JSON body, a PEM bundle (see api.h). */
#include "api.h"

#include "p12.h"
#include "secret.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define API_MID "/api/v1/certificate"

/* ----- paths and names ----- */

const char *api_name_invalid(const char *name, size_t len)
{
    if (len == 0) return "the certificate name is empty";
    if (len > API_MAX_NAME) return "the certificate name is longer than 128 characters";
    if (name[0] == '.') return "the certificate name must not start with '.'";
    if (len == 4 && memcmp(name, "list", 4) == 0) return "'list' is reserved and cannot be a certificate name";
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return "the certificate name may only hold letters, digits, '.', '_' and '-'";
    }
    return NULL;
}

/* Splits /e/{env}/api/v1/certificate[/rest]; returns rest (NULL when absent). */
int api_split_path(const char *path, const char **env, size_t *envlen, const char **rest)
{
    if (strncmp(path, API_PREFIX, 3) != 0) return -1;
    const char *e = path + 3;
    const char *slash = strchr(e, '/');
    if (!slash || slash == e) return -1;
    if (strncmp(slash, API_MID, sizeof API_MID - 1) != 0) return -1;
    const char *after = slash + sizeof API_MID - 1;
    if (*after != '\0' && *after != '/') return -1;
    *env = e;
    *envlen = (size_t)(slash - e);
    *rest = *after == '/' ? after + 1 : NULL;
    return 0;
}

int api_match(const char *path)
{
    const char *env, *rest;
    size_t envlen;
    return api_split_path(path, &env, &envlen, &rest) == 0;
}

int api_password_from_body(const char *body, size_t len, char **pw)
{
    *pw = NULL;
    json_error_t je;
    json_t *v = json_loadb(body, len, 0, &je);
    json_t *p = json_object_get(v, "password");
    const char *s = json_string_value(p);
    if (s) {
        *pw = strdup(s);
        explicit_bzero((char *)s, json_string_length(p)); /* jansson's copy */
    }
    json_decref(v);
    return *pw ? 0 : -1;
}

int api_pem_body(const char *content_type)
{
    static const char pem[] = "application/x-pem-file";
    const char *ct = content_type;
    return ct && strncasecmp(ct, pem, sizeof pem - 1) == 0 &&
           (ct[sizeof pem - 1] == '\0' || ct[sizeof pem - 1] == ';' || ct[sizeof pem - 1] == ' ');
}

int api_pem_to_p12(const void *body, size_t len, const char *name, const char *key_pw,
                   char **pw, unsigned char **der, size_t *der_len, struct json_t *warnings,
                   char *err, size_t errlen)
{
    char fresh[64], why[1024];
    if (p12_random_password(fresh, sizeof fresh) != 0) {
        snprintf(err, errlen, "cannot make a random password; try again");
        return 500;
    }
    struct p12_pem_src src = {.cert = body,
                              .cert_len = len,
                              .cert_label = name,
                              .key = body,
                              .key_len = len,
                              .key_label = name,
                              .key_password = key_pw};
    if (p12_pem_build(&src, NULL, fresh, der, der_len, warnings, why, sizeof why) != 0) {
        explicit_bzero(fresh, sizeof fresh);
        snprintf(err, errlen,
                 "%.900s (the body is read as a PEM bundle: the private key and the "
                 "certificate chain)",
                 why);
        return 400;
    }
    char *copy = strdup(fresh);
    explicit_bzero(fresh, sizeof fresh);
    if (!copy) {
        p12_der_free(*der, *der_len);
        *der = NULL;
        snprintf(err, errlen, "out of memory");
        return 500;
    }
    secret_free(*pw);
    *pw = copy;
    return 0;
}
