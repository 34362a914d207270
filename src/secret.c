#include "secret.h"
#include "err.h"

#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
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
#define PREFIX "v1:"
#define AAD "certgate certificate-password v1"
#define AGAIN "; set certificate-password in plain text again"

static int read_key(const char *path, struct secret_key *out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            err_set(err, errlen, "the key file %s does not exist", path);
        else
            err_set(err, errlen, "cannot open the key file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        err_set(err, errlen, "cannot check the key file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    int rc = -1;
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        err_set(err, errlen, "the key file %s is not a regular file", path);
    } else if ((st.st_mode & 07777 & ~(mode_t)0600) != 0) {
        errno = EPERM;
        err_set(err, errlen,
                "the key file %s has mode %04o, which lets others read it; make it private "
                "with chmod 600 %s",
                path, (unsigned)(st.st_mode & 07777), path);
    } else if (st.st_size != (off_t)sizeof out->bytes) {
        errno = EINVAL;
        err_set(err, errlen,
                "the key file %s is %lld bytes long instead of %zu; remove it to make a new key "
                "and set certificate-password in plain text again",
                path, (long long)st.st_size, sizeof out->bytes);
    } else {
        unsigned char buf[sizeof out->bytes + 1];
        size_t got = 0;
        while (got < sizeof buf) {
            ssize_t n = read(fd, buf + got, sizeof buf - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
        if (got == sizeof out->bytes) {
            memcpy(out->bytes, buf, sizeof out->bytes);
            rc = 0;
        } else {
            errno = EIO;
            err_set(err, errlen, "cannot read the %zu bytes of the key file %s", sizeof out->bytes,
                    path);
        }
        OPENSSL_cleanse(buf, sizeof buf);
    }
    close(fd);
    return rc;
}

int secret_key_load(const char *config_dir, int create, struct secret_key *out, char *err,
                    size_t errlen)
{
    char *path = fs_path_join(config_dir, SECRET_KEY_FILE);
    if (!path) {
        err_set(err, errlen, "out of memory loading the key in %s", config_dir);
        return -1;
    }
    int rc = read_key(path, out, err, errlen);
    if (rc < 0 && errno == ENOENT && create) {
        struct secret_key fresh;
        if (RAND_priv_bytes(fresh.bytes, sizeof fresh.bytes) != 1) {
            err_set(err, errlen, "cannot make a random key for %s: the random generator failed",
                    path);
        } else if (fs_create_atomic(path, fresh.bytes, sizeof fresh.bytes, 0600, err, errlen) ==
                   0) {
            *out = fresh;
            rc = 0;
        } else if (errno == EEXIST) {
            /* another process made the key first: use that one */
            rc = read_key(path, out, err, errlen);
        }
        secret_key_wipe(&fresh);
    }
    if (rc < 0) secret_key_wipe(out);
    free(path);
    return rc;
}

void secret_key_wipe(struct secret_key *key)
{
    OPENSSL_cleanse(key->bytes, sizeof key->bytes);
}

char *secret_encrypt(const struct secret_key *key, const char *plain)
{
    size_t plen = strlen(plain);
    if (plen > INT_MAX - NONCE_LEN - TAG_LEN) return NULL;
    size_t blen = NONCE_LEN + plen + TAG_LEN;
    unsigned char *buf = malloc(blen);
    char *out = malloc(sizeof PREFIX + 4 * ((blen + 2) / 3));
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0;
    int ok =
        buf && out && ctx && RAND_bytes(buf, NONCE_LEN) == 1 &&
        EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
        EVP_EncryptInit_ex(ctx, NULL, NULL, key->bytes, buf) == 1 &&
        EVP_EncryptUpdate(ctx, NULL, &len, (const unsigned char *)AAD, (int)strlen(AAD)) == 1 &&
        EVP_EncryptUpdate(ctx, buf + NONCE_LEN, &len, (const unsigned char *)plain, (int)plen) ==
            1 &&
        EVP_EncryptFinal_ex(ctx, buf + NONCE_LEN + len, &len) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, buf + NONCE_LEN + plen) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (ok) {
        memcpy(out, PREFIX, sizeof PREFIX - 1);
        EVP_EncodeBlock((unsigned char *)out + sizeof PREFIX - 1, buf, (int)blen);
    } else {
        free(out);
        out = NULL;
    }
    free(buf);
    return out;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict base64 (no white space, padding only at the end). Returns the decoded length
 * or -1; out must hold 3 * len / 4 bytes. */
static long b64_decode(const char *in, size_t len, unsigned char *out)
{
    if (len == 0 || len % 4 != 0 || len > INT_MAX) return -1;
    size_t pad = (in[len - 1] == '=') + (in[len - 2] == '=');
    for (size_t i = 0; i < len - pad; i++)
        if (b64_value(in[i]) < 0) return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0) return -1;
    return (long)n - (long)pad;
}

int secret_decrypt(const struct secret_key *key, const char *encr, char **plain, char *err,
                   size_t errlen)
{
    *plain = NULL;
    if (strncmp(encr, PREFIX, sizeof PREFIX - 1) != 0) {
        err_set(err, errlen,
                "certificate-password-encr is not a value made by certgate (it must start "
                "with '" PREFIX "')" AGAIN);
        return -1;
    }
    const char *b64 = encr + sizeof PREFIX - 1;
    size_t b64len = strlen(b64);
    unsigned char *buf = malloc(b64len / 4 * 3 + 3);
    if (!buf) {
        err_set(err, errlen, "out of memory decrypting certificate-password-encr");
        return -1;
    }
    long blen = b64_decode(b64, b64len, buf);
    if (blen < NONCE_LEN + TAG_LEN) {
        err_set(err, errlen, "certificate-password-encr is damaged (%s)" AGAIN,
                blen < 0 ? "not valid base64" : "too short");
        free(buf);
        return -1;
    }
    size_t ctlen = (size_t)blen - NONCE_LEN - TAG_LEN;
    char *out = malloc(ctlen + 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    int ok =
        out && ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
        EVP_DecryptInit_ex(ctx, NULL, NULL, key->bytes, buf) == 1 &&
        EVP_DecryptUpdate(ctx, NULL, &len, (const unsigned char *)AAD, (int)strlen(AAD)) == 1 &&
        EVP_DecryptUpdate(ctx, (unsigned char *)out, &len, buf + NONCE_LEN, (int)ctlen) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, buf + NONCE_LEN + ctlen) == 1;
    if (!ok) {
        err_set(err, errlen,
                "out of memory or cipher failure decrypting "
                "certificate-password-encr");
    } else if (EVP_DecryptFinal_ex(ctx, (unsigned char *)out + len, &fin) != 1) {
        /* GCM cannot tell a wrong key from altered bytes; both fail the tag check */
        err_set(err, errlen,
                "certificate-password-encr was not made with this gateway's key "
                "(config/" SECRET_KEY_FILE ")" AGAIN);
        ok = 0;
    } else if (memchr(out, '\0', ctlen)) {
        err_set(err, errlen, "certificate-password-encr holds a NUL byte" AGAIN);
        ok = 0;
    }
    EVP_CIPHER_CTX_free(ctx);
    free(buf);
    if (!ok) {
        if (out) OPENSSL_cleanse(out, ctlen + 1);
        free(out);
        return -1;
    }
    out[ctlen] = '\0';
    *plain = out;
    return 0;
}

void secret_free(char *s)
{
    if (!s) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

int secret_memcmp(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) != 0;
}
