/* fleet_cache.h - the manifest of certificate files a fleet member wrote into DIR/ssl from
 * etcd (issue 13): DIR/config/fleet-cache.json, {"version":1,"names":["a.p12",...]}.
 *
 * A full read of the fleet state (fleet_sync.c) deletes a cache file only when its name is
 * in this manifest and etcd no longer has it, so a file an operator placed in DIR/ssl by
 * hand, which etcd never had, is never deleted. The manifest is written atomically and
 * durably (fsutil.h) with mode 0600. One struct is used by one thread (the sync thread). */
#ifndef CERTGATE_FLEET_CACHE_H
#define CERTGATE_FLEET_CACHE_H

#include <stddef.h>

#define FLEET_CACHE_FILE "fleet-cache.json"

struct fleet_cache {
    char *path;   /* config_dir/fleet-cache.json */
    char **names; /* sorted, unique */
    size_t n, cap;
    int dirty;    /* changed since loaded or saved */
};

/* Reads config_dir/fleet-cache.json into *c. A missing file gives an empty manifest (0);
 * a file that cannot be read or is not a manifest gives an empty one too, but -1 with a
 * sentence (the caller logs it; nothing is deleted for names it does not know). */
int fleet_cache_load(struct fleet_cache *c, const char *config_dir, char *err, size_t errlen);

/* 1 when name is in the manifest. */
int fleet_cache_has(const struct fleet_cache *c, const char *name);

/* Adds name (1 when it was not there, 0 when it was, -1 out of memory). */
int fleet_cache_add(struct fleet_cache *c, const char *name);

/* Removes name (1 when it was there, else 0). */
int fleet_cache_remove(struct fleet_cache *c, const char *name);

/* Writes the manifest when it changed since loaded or saved: 0, or -1 with a sentence
 * (it stays dirty, so the next save tries again). */
int fleet_cache_save(struct fleet_cache *c, char *err, size_t errlen);

void fleet_cache_free(struct fleet_cache *c);

#endif
