/* fleetkey.c - the fleet key and the sealing of secrets stored in etcd (see fleetkey.h). */
#include "fleetkey.h"

#include "err.h"
#include "etcd.h"
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define NONCE_LEN 12
#define TAG_LEN 16
#define PREFIX "fk1:"
#define ID_LABEL "certgate fleet key id v1"
#define AD_LABEL "certgate fleet v1"

static int key_id(struct fleet_key *k)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(c, ID_LABEL, sizeof ID_LABEL) == 1 &&
             EVP_DigestUpdate(c, k->bytes, sizeof k->bytes) == 1 &&
             EVP_DigestFinal_ex(c, md, &mdlen) == 1;
    EVP_MD_CTX_free(c);
    for (int i = 0; ok && i < 8; i++) snprintf(k->id + 2 * i, 3, "%02x", md[i]);
    return ok ? 0 : -1;
}

int fleetkey_load(const char *path, struct fleet_key *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ELOOP) fd = open(path, O_RDONLY | O_CLOEXEC); /* a link is fine */
    if (fd < 0) {
        int e = errno;
        err_set(err, errlen,
                e == ENOENT ? "the fleet key %s does not exist; copy it from a member of the "
                              "fleet (or make one with certgate fleet init)%s"
                            : "cannot open the fleet key %s: %s",
                path, e == ENOENT ? "" : strerror(e));
        errno = e;
        return -1;
    }
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) < 0) {
        err_set(err, errlen, "cannot check the fleet key %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        err_set(err, errlen, "the fleet key %s is not a regular file", path);
    } else if (st.st_mode & 077) {
        err_set(err, errlen,
                "the fleet key %s has mode %04o, which lets others read it; make it private "
                "with chmod 600 %s",
                path, (unsigned)(st.st_mode & 07777), path);
    } else if (st.st_size != (off_t)sizeof out->bytes) {
        err_set(err, errlen,
                "the fleet key %s is %lld bytes long instead of %zu; copy the fleet's key file "
                "again from a member",
                path, (long long)st.st_size, sizeof out->bytes);
    } else {
        size_t got = 0;
        while (got < sizeof out->bytes) {
            ssize_t n = read(fd, out->bytes + got, sizeof out->bytes - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
        if (got != sizeof out->bytes)
            err_set(err, errlen, "cannot read the fleet key %s", path);
        else if (key_id(out) < 0)
            err_set(err, errlen, "cannot hash the fleet key %s", path);
        else
            rc = 0;
    }
    close(fd);
    if (rc < 0) fleetkey_wipe(out);
    return rc;
}

int fleetkey_create(const char *path, int replace, struct fleet_key *out, char *err,
                    size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (RAND_priv_bytes(out->bytes, sizeof out->bytes) != 1 || key_id(out) < 0) {
        err_set(err, errlen, "cannot make a random fleet key: the random generator failed");
        return -1;
    }
    int rc = replace ? fs_write_atomic_mode(path, out->bytes, sizeof out->bytes, 0600, err, errlen)
                     : fs_create_atomic(path, out->bytes, sizeof out->bytes, 0600, err, errlen);
    if (rc < 0) {
        int e = errno;
        if (e == EEXIST) err_set(err, errlen, "the fleet key %s exists already", path);
        fleetkey_wipe(out);
        errno = e;
    }
    return rc;
}

void fleetkey_wipe(struct fleet_key *k)
{
    OPENSSL_cleanse(k, sizeof *k);
}

/* label | NUL | key id | NUL | etcd key name */
static unsigned char *make_ad(const char *id, const char *ad, size_t *len)
{
    size_t l1 = sizeof AD_LABEL, l2 = strlen(id) + 1, l3 = strlen(ad);
    unsigned char *p = malloc(l1 + l2 + l3 + 1);
    if (!p) return NULL;
    memcpy(p, AD_LABEL, l1);
    memcpy(p + l1, id, l2);
    memcpy(p + l1 + l2, ad, l3);
    *len = l1 + l2 + l3;
    return p;
}

static int gcm(int enc, const struct fleet_key *k, const unsigned char *ad, size_t adlen,
               const unsigned char *nonce, const unsigned char *in, size_t inlen,
               unsigned char *out, unsigned char *tag)
{
    if (inlen > INT_MAX || adlen > INT_MAX) return -1;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0;
    int ok = c && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
             EVP_CipherInit_ex(c, NULL, NULL, k->bytes, nonce, enc) == 1 &&
             EVP_CipherUpdate(c, NULL, &len, ad, (int)adlen) == 1 &&
             (inlen == 0 || EVP_CipherUpdate(c, out, &len, in, (int)inlen) == 1) &&
             (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1) &&
             EVP_CipherFinal_ex(c, out + (inlen ? len : 0), &len) == 1 &&
             (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

char *fleetkey_seal(const struct fleet_key *k, const char *ad, const void *plain, size_t len)
{
    size_t adlen = 0, blen = NONCE_LEN + len + TAG_LEN;
    unsigned char *a = make_ad(k->id, ad, &adlen), *buf = malloc(blen);
    char *b64 = NULL, *out = NULL;
    if (a && buf && RAND_bytes(buf, NONCE_LEN) == 1 &&
        gcm(1, k, a, adlen, buf, plain, len, buf + NONCE_LEN, buf + NONCE_LEN + len) == 0 &&
        (b64 = etcd_b64_encode(buf, blen)) &&
        (out = malloc(sizeof PREFIX + sizeof k->id + strlen(b64) + 1)))
        sprintf(out, PREFIX "%s:%s", k->id, b64);
    free(a);
    free(buf);
    free(b64);
    return out;
}

int fleetkey_open(const struct fleet_key *k, const char *ad, const char *sealed, char **plain,
                  size_t *len, char *err, size_t errlen)
{
    *plain = NULL;
    *len = 0;
    const char *id = sealed + sizeof PREFIX - 1, *colon = strchr(id, ':');
    if (strncmp(sealed, PREFIX, sizeof PREFIX - 1) != 0 || !colon || colon - id != 16) {
        err_set(err, errlen, "%s: the value is not sealed by certgate (it must start with "
                "'" PREFIX "<key id>:'); refused", ad);
        return -1;
    }
    char vid[17];
    memcpy(vid, id, 16);
    vid[16] = '\0';
    if (strcmp(vid, k->id) != 0) {
        err_set(err, errlen,
                "%s: sealed with another fleet key (id %s; this member's fleet key has id %s): "
                "copy the fleet key file from a member of this fleet",
                ad, vid, k->id);
        return -1;
    }
    size_t blen = 0, adlen = 0;
    unsigned char *buf = etcd_b64_decode(colon + 1, &blen);
    unsigned char *a = make_ad(vid, ad, &adlen);
    unsigned char *out = buf && blen >= NONCE_LEN + TAG_LEN ? malloc(blen - NONCE_LEN - TAG_LEN + 1)
                                                            : NULL;
    int rc = -1;
    if (!buf || blen < NONCE_LEN + TAG_LEN) {
        err_set(err, errlen, "%s: the sealed value is damaged (%s); refused", ad,
                buf ? "too short" : "not base64");
    } else if (!a || !out) {
        err_set(err, errlen, "%s: out of memory", ad);
    } else {
        size_t ctlen = blen - NONCE_LEN - TAG_LEN;
        if (gcm(0, k, a, adlen, buf, buf + NONCE_LEN, ctlen, out, buf + NONCE_LEN + ctlen) < 0) {
            err_set(err, errlen,
                    "%s: the sealed value does not authenticate under the fleet key (id %s): "
                    "it was altered or moved from another key; refused",
                    ad, k->id);
            OPENSSL_cleanse(out, ctlen);
        } else {
            out[ctlen] = '\0';
            *plain = (char *)out;
            *len = ctlen;
            out = NULL;
            rc = 0;
        }
    }
    free(out);
    free(a);
    if (buf) OPENSSL_cleanse(buf, blen);
    free(buf);
    return rc;
}
