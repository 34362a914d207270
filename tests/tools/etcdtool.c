/* etcdtool - drives src/etcd.c from the command line, for tests/integration/test_96.
 *
 *   etcdtool [--ca F] [--cert F --key F] [--timeout-ms N] ENDPOINTS COMMAND ARGS...
 *
 *   get KEY [prefix] [rev N]   "revision R", then "KEY mod=M create=C version=V lease=L
 *                              value=V" per key (non-printable bytes as \xNN)
 *   put KEY VALUE [lease ID]   "ok revision R" (a txn without compares)
 *   putsize KEY BYTES          put a value of BYTES bytes ('x')
 *   cas KEY VALUE MODREV       "ok revision R" or "conflict revision R"
 *   create KEY VALUE           the same, comparing create_revision with 0
 *   del KEY [prefix]           "ok revision R"
 *   grant TTL                  "lease ID"
 *   keepalive ID               "ttl T"
 *   revoke ID                  "revoked"
 *   watch KEY prefix|key FROM COUNT
 *                              "event put|delete KEY mod=M value=V" per event, flushed, until
 *                              COUNT events; "compacted R" (exit 3) when FROM was compacted;
 *                              "watching" once the first watch is being made
 *
 * Errors: "error: <sentence>" on stderr, exit 1; usage: exit 2. */
#include "etcd.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_value(const unsigned char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (isprint(v[i]) && v[i] != '\\')
            putchar(v[i]);
        else
            printf("\\x%02x", v[i]);
}

static int usage(void)
{
    fprintf(stderr, "usage: etcdtool [--ca F] [--cert F --key F] [--timeout-ms N] ENDPOINTS "
                    "get|put|putsize|cas|create|del|grant|keepalive|revoke|watch ARGS...\n");
    return 2;
}

struct watch_state {
    long left;
};

static int on_events(void *arg, const struct etcd_event *ev, size_t n)
{
    struct watch_state *st = arg;
    for (size_t i = 0; i < n; i++) {
        printf("event %s %s mod=%lld value=", ev[i].deleted ? "delete" : "put", ev[i].kv.key,
               (long long)ev[i].kv.mod_revision);
        print_value(ev[i].kv.value, ev[i].kv.value_len);
        putchar('\n');
        st->left--;
    }
    fflush(stdout);
    return st->left <= 0;
}

static int txn_print(struct etcd *e, const struct etcd_cmp *cmp, size_t ncmp,
                     const struct etcd_op *op, char *err, size_t errlen)
{
    int ok = 0;
    int64_t rev = 0;
    if (etcd_txn(e, cmp, ncmp, op, 1, &ok, &rev, err, errlen) < 0) return -1;
    printf("%s revision %lld\n", ok ? "ok" : "conflict", (long long)rev);
    return 0;
}

static int run(struct etcd *e, int argc, char **argv, char *err, size_t errlen)
{
    const char *cmd = argv[0];
    if (strcmp(cmd, "get") == 0 && argc >= 2) {
        int prefix = argc >= 3 && strcmp(argv[2], "prefix") == 0;
        int64_t rev = 0;
        for (int i = 2; i + 1 < argc; i++)
            if (strcmp(argv[i], "rev") == 0) rev = strtoll(argv[i + 1], NULL, 10);
        struct etcd_range_result r;
        if (etcd_range(e, argv[1], prefix, rev, &r, err, errlen) < 0) return -1;
        printf("revision %lld\n", (long long)r.revision);
        for (size_t i = 0; i < r.n; i++) {
            const struct etcd_kv *kv = &r.kvs[i];
            printf("%s mod=%lld create=%lld version=%lld lease=%lld value=", kv->key,
                   (long long)kv->mod_revision, (long long)kv->create_revision,
                   (long long)kv->version, (long long)kv->lease);
            print_value(kv->value, kv->value_len);
            putchar('\n');
        }
        etcd_range_free(&r);
        return 0;
    }
    if (strcmp(cmd, "put") == 0 && argc >= 3) {
        struct etcd_op op = {ETCD_OP_PUT, argv[1], argv[2], strlen(argv[2]), 0, 0};
        if (argc >= 5 && strcmp(argv[3], "lease") == 0) op.lease = strtoll(argv[4], NULL, 10);
        return txn_print(e, NULL, 0, &op, err, errlen);
    }
    if (strcmp(cmd, "putsize") == 0 && argc >= 3) {
        size_t n = strtoul(argv[2], NULL, 10);
        char *v = malloc(n + 1);
        if (!v) return -1;
        memset(v, 'x', n);
        struct etcd_op op = {ETCD_OP_PUT, argv[1], v, n, 0, 0};
        int rc = txn_print(e, NULL, 0, &op, err, errlen);
        free(v);
        return rc;
    }
    if ((strcmp(cmd, "cas") == 0 && argc >= 4) || (strcmp(cmd, "create") == 0 && argc >= 3)) {
        int cas = cmd[0] == 'c' && cmd[1] == 'a';
        struct etcd_cmp cmp = {argv[1], cas ? ETCD_CMP_MOD : ETCD_CMP_CREATE,
                               cas ? strtoll(argv[3], NULL, 10) : 0};
        struct etcd_op op = {ETCD_OP_PUT, argv[1], argv[2], strlen(argv[2]), 0, 0};
        return txn_print(e, &cmp, 1, &op, err, errlen);
    }
    if (strcmp(cmd, "del") == 0 && argc >= 2) {
        struct etcd_op op = {ETCD_OP_DELETE, argv[1], NULL, 0, 0,
                             argc >= 3 && strcmp(argv[2], "prefix") == 0};
        return txn_print(e, NULL, 0, &op, err, errlen);
    }
    if (strcmp(cmd, "grant") == 0 && argc >= 2) {
        int64_t id;
        if (etcd_lease_grant(e, strtoll(argv[1], NULL, 10), &id, err, errlen) < 0) return -1;
        printf("lease %lld\n", (long long)id);
        return 0;
    }
    if (strcmp(cmd, "keepalive") == 0 && argc >= 2) {
        int64_t ttl;
        if (etcd_lease_keepalive(e, strtoll(argv[1], NULL, 10), &ttl, err, errlen) < 0) return -1;
        printf("ttl %lld\n", (long long)ttl);
        return 0;
    }
    if (strcmp(cmd, "revoke") == 0 && argc >= 2) {
        if (etcd_lease_revoke(e, strtoll(argv[1], NULL, 10), err, errlen) < 0) return -1;
        printf("revoked\n");
        return 0;
    }
    if (strcmp(cmd, "watch") == 0 && argc >= 5) {
        struct watch_state st = {strtol(argv[4], NULL, 10)};
        int64_t compacted = 0;
        printf("watching\n");
        fflush(stdout);
        int rc = etcd_watch(e, argv[1], strcmp(argv[2], "prefix") == 0,
                            strtoll(argv[3], NULL, 10), on_events, &st, NULL, &compacted, err,
                            errlen);
        if (rc == ETCD_COMPACTED) {
            printf("compacted %lld\n", (long long)compacted);
            fprintf(stderr, "%s\n", err);
            return 3;
        }
        return rc;
    }
    return -2;
}

int main(int argc, char **argv)
{
    struct etcd_opts o = {0};
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--ca") == 0)
            o.ca_file = argv[i + 1];
        else if (strcmp(argv[i], "--cert") == 0)
            o.cert_file = argv[i + 1];
        else if (strcmp(argv[i], "--key") == 0)
            o.key_file = argv[i + 1];
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            o.timeout_ms = (unsigned)strtoul(argv[i + 1], NULL, 10);
        else
            return usage();
    }
    if (argc - i < 2) return usage();
    o.endpoints = argv[i];
    char err[2048] = "";
    struct etcd *e;
    if (etcd_open(&o, &e, err, sizeof err) < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    int rc = run(e, argc - i - 1, argv + i + 1, err, sizeof err);
    etcd_close(e);
    if (rc == -2) return usage();
    if (rc == 3) return 3;
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    return 0;
}
