/* fleet.h - `certgate fleet init|status`: a node's certificate state in etcd (issue 13).
 *
 * Keys under the prefix ([fleet] prefix, default /certgate):
 *   <prefix>/fleet                 {"version":1,"key_id":"<fleet key id>","by":"<member>",
 *                                   "time":"<UTC>"}: a fleet state exists
 *   <prefix>/<env>/certs/<name>    the PKCS#12 bytes of DIR/ssl/<name>
 *   <prefix>/<env>/active          {"name":..,"alias":..,"password":"fk1:.."} (name null: the
 *                                   default certificate); the password sealed with the fleet
 *                                   key, the key name as associated data
 *   <prefix>/tokens/<id>           a tokens.json entry: ID, name, environment, scopes,
 *                                   created, SHA-256 (never the token)
 *   <prefix>/members/<member-id>   {"applied":N,"serving":"..","error":"..","time":".."},
 *                                   under a lease (written by running members)
 *
 * Single-threaded CLI code: it blocks on etcd (src/etcd.c). */
#ifndef CERTGATE_FLEET_H
#define CERTGATE_FLEET_H

#include <stddef.h>

/* `certgate fleet ...`; argv starts after "fleet". Returns the exit status (0 ok, 1 failed,
 * 2 usage). */
int fleet_command(int argc, char **argv);

/* `certgate token create|revoke` on a node whose custom.properties has [fleet] etcd
 * (*in_fleet = 1; else nothing is done and 0 returned): create puts the tokens.json entry
 * id (hashes only) under <prefix>/tokens/<id>; revoke deletes the token key matching id
 * (the ID, its public part or the whole token; *found = 1 when one was). Running members
 * get the change through their watch. 0, or -1 with the sentence (etcd unreachable...). */
int fleet_token_sync(const char *data_dir, const char *id, int revoke, int *in_fleet,
                     int *found, char *err, size_t errlen);

#endif
