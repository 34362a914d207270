/* fleet_cache.c - the manifest of cache files a fleet member wrote (see fleet_cache.h). */
#include "fleet_cache.h"

#include "err.h"
#include "fsutil.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MANIFEST_BYTES (4u << 20)

/* The index where name is or would be inserted; *found says which. */
static size_t find(const struct fleet_cache *c, const char *name, int *found)
{
    size_t lo = 0, hi = c->n;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(c->names[mid], name);
        if (d == 0) {
            *found = 1;
            return mid;
        }
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int fleet_cache_has(const struct fleet_cache *c, const char *name)
{
    int found;
    find(c, name, &found);
    return found;
}

int fleet_cache_add(struct fleet_cache *c, const char *name)
{
    int found;
    size_t at = find(c, name, &found);
    if (found) return 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        char **nn = realloc(c->names, cap * sizeof *nn);
        if (!nn) return -1;
        c->names = nn;
        c->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) return -1;
    memmove(c->names + at + 1, c->names + at, (c->n - at) * sizeof *c->names);
    c->names[at] = copy;
    c->n++;
    c->dirty = 1;
    return 1;
}

int fleet_cache_remove(struct fleet_cache *c, const char *name)
{
    int found;
    size_t at = find(c, name, &found);
    if (!found) return 0;
    free(c->names[at]);
    memmove(c->names + at, c->names + at + 1, (c->n - at - 1) * sizeof *c->names);
    c->n--;
    c->dirty = 1;
    return 1;
}

void fleet_cache_free(struct fleet_cache *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->names[i]);
    free(c->names);
    free(c->path);
    memset(c, 0, sizeof *c);
}

int fleet_cache_load(struct fleet_cache *c, const char *config_dir, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->path = fs_path_join(config_dir, FLEET_CACHE_FILE);
    if (!c->path) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    char *text = NULL, e[512];
    size_t len = 0;
    if (fs_read_file(c->path, MAX_MANIFEST_BYTES, &text, &len, e, sizeof e) != 0) {
        if (errno == ENOENT) return 0;
        err_set(err, errlen, "%s", e);
        return -1;
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    json_t *names = json_object_get(root, "names");
    int rc = 0;
    if (!json_is_array(names)) {
        err_set(err, errlen, "%s is not a fleet cache manifest (%s); it is written again at the "
                "next full read", c->path, root ? "no \"names\" array" : je.text);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < json_array_size(names); i++) {
        const char *n = json_string_value(json_array_get(names, i));
        if (n && fleet_cache_add(c, n) < 0) {
            err_set(err, errlen, "out of memory");
            rc = -1;
        }
    }
    json_decref(root);
    if (rc < 0) { /* start empty: nothing is deleted for names this member does not know */
        for (size_t i = 0; i < c->n; i++) free(c->names[i]);
        c->n = 0;
    }
    c->dirty = rc < 0;
    return rc;
}

int fleet_cache_save(struct fleet_cache *c, char *err, size_t errlen)
{
    if (!c->dirty) return 0;
    json_t *arr = json_array(), *root = json_pack("{s:i,s:o}", "version", 1, "names", arr);
    for (size_t i = 0; root && i < c->n; i++) json_array_append_new(arr, json_string(c->names[i]));
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    if (!text) {
        err_set(err, errlen, "out of memory");
        return -1;
    }
    size_t len = strlen(text);
    char *t = realloc(text, len + 2); /* a final newline, as a person would write it */
    if (t) {
        text = t;
        text[len++] = '\n';
        text[len] = '\0';
    }
    int rc = fs_write_atomic_mode(c->path, text, len, 0600, err, errlen);
    free(text);
    if (rc == 0) c->dirty = 0;
    return rc;
}
