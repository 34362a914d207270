/* test_p12_cost.c - the cost budget of PKCS#12 files (p12_cost.c), and load + describe
 * of damaged real files (every truncation, many single-byte corruptions).
 *
 * Files with costs no one can afford to derive are made cheaply and then patched: the
 * iteration counts or scrypt parameters are rewritten in the DER structures, which the
 * budget reads before any derivation (the MAC is not checked before it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "p12.h"

#include <jansson.h>
#include <limits.h>
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[PATH_MAX];
static EVP_PKEY *key;
static X509 *cert;

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[4096], full[4096 + PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "cd '%s' && ( %s ) >>cmd.log 2>&1", tmpdir, cmd);
    int rc = system(full);
    if (rc != 0) fprintf(stderr, "command failed (%d): %s (see %s/cmd.log)\n", rc, cmd, tmpdir);
    return rc;
}

static unsigned char *read_all(const char *name, size_t *len)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = malloc(1 << 16);
    *len = buf ? fread(buf, 1, 1 << 16, f) : 0;
    fclose(f);
    return buf;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* ----- patching algorithm parameters ----- */

static void repack(X509_ALGOR *alg, const ASN1_ITEM *it, void *v)
{
    ASN1_TYPE *t = NULL;
    assert_non_null(ASN1_TYPE_pack_sequence(it, v, &t));
    ASN1_TYPE_free(alg->parameter);
    alg->parameter = t;
}

/* Sets the iteration count of a PBES1 or PBES2/PBKDF2 algorithm (negative: -1). */
static void set_iter(X509_ALGOR *alg, int64_t iter)
{
    if (OBJ_obj2nid(alg->algorithm) == NID_pbes2) {
        PBE2PARAM *p2 = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter);
        assert_non_null(p2);
        PBKDF2PARAM *kp =
            ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBKDF2PARAM), p2->keyfunc->parameter);
        assert_non_null(kp);
        assert_true(ASN1_INTEGER_set_int64(kp->iter, iter));
        repack(p2->keyfunc, ASN1_ITEM_rptr(PBKDF2PARAM), kp);
        repack(alg, ASN1_ITEM_rptr(PBE2PARAM), p2);
        PBKDF2PARAM_free(kp);
        PBE2PARAM_free(p2);
    } else {
        PBEPARAM *p1 = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBEPARAM), alg->parameter);
        assert_non_null(p1);
        assert_true(ASN1_INTEGER_set_int64(p1->iter, iter));
        repack(alg, ASN1_ITEM_rptr(PBEPARAM), p1);
        PBEPARAM_free(p1);
    }
}

static void set_scrypt(X509_ALGOR *alg, uint64_t n, uint64_t r, uint64_t p)
{
    PBE2PARAM *p2 = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter);
    assert_non_null(p2);
    SCRYPT_PARAMS *sp =
        ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(SCRYPT_PARAMS), p2->keyfunc->parameter);
    assert_non_null(sp);
    assert_true(ASN1_INTEGER_set_uint64(sp->costParameter, n));
    assert_true(ASN1_INTEGER_set_uint64(sp->blockSize, r));
    assert_true(ASN1_INTEGER_set_uint64(sp->parallelizationParameter, p));
    repack(p2->keyfunc, ASN1_ITEM_rptr(SCRYPT_PARAMS), sp);
    repack(alg, ASN1_ITEM_rptr(PBE2PARAM), p2);
    SCRYPT_PARAMS_free(sp);
    PBE2PARAM_free(p2);
}

/* Replaces PBES2's key-derivation function by HKDF (no password-based KDF). */
static void set_unknown_kdf(X509_ALGOR *alg)
{
    PBE2PARAM *p2 = ASN1_TYPE_unpack_sequence(ASN1_ITEM_rptr(PBE2PARAM), alg->parameter);
    assert_non_null(p2);
    ASN1_OBJECT_free(p2->keyfunc->algorithm);
    p2->keyfunc->algorithm = OBJ_txt2obj("1.2.840.113549.1.9.16.3.28", 1);
    assert_non_null(p2->keyfunc->algorithm);
    repack(alg, ASN1_ITEM_rptr(PBE2PARAM), p2);
    PBE2PARAM_free(p2);
}

static X509_ALGOR *bag_alg(PKCS12_SAFEBAG *bag)
{
    X509_ALGOR *alg = NULL;
    X509_SIG_getm((X509_SIG *)PKCS12_SAFEBAG_get0_pkcs8(bag), &alg, NULL);
    assert_non_null(alg);
    return alg;
}

/* ----- building files ----- */

struct spec {
    int key_nid;      /* NID_aes_256_cbc: PBES2/PBKDF2; a PBE NID: PBES1; -2: scrypt */
    int64_t key_iter; /* patched into the key bag when non-zero */
    uint64_t n, r, p; /* scrypt: the real parameters, or patched ones when patch_scrypt */
    int patch_scrypt;
    int unknown_kdf;      /* the key bag's KDF replaced */
    int cert_nid;         /* the certificates' SafeContents: 0 plain, else encrypted with it */
    int64_t cert_iter;    /* patched into it when non-zero */
    int64_t mac_iter;     /* 0: 2048; -1: no MAC; else patched */
    int key_in_cert_safe; /* the key bag inside the encrypted certificate SafeContents */
    int nested;           /* the key bag wrapped in a safeContentsBag */
    int extra_keys;       /* more shrouded key bags (1 iteration each) */
};

/* DER: tag, length, content */
static size_t der_wrap(unsigned char *out, unsigned char tag, const unsigned char *in, size_t len)
{
    size_t o = 0;
    out[o++] = tag;
    if (len < 128) {
        out[o++] = (unsigned char)len;
    } else if (len < 256) {
        out[o++] = 0x81;
        out[o++] = (unsigned char)len;
    } else {
        out[o++] = 0x82;
        out[o++] = (unsigned char)(len >> 8);
        out[o++] = (unsigned char)len;
    }
    memcpy(out + o, in, len);
    return o + len;
}

/* SafeBag { safeContentsBag, [0] { SEQUENCE OF { inner } } } */
static PKCS12_SAFEBAG *nest(PKCS12_SAFEBAG *inner)
{
    unsigned char *d = NULL;
    int dl = i2d_PKCS12_SAFEBAG(inner, &d);
    assert_true(dl > 0);
    static const unsigned char oid[] = {0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7,
                                        0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x06};
    unsigned char *a = malloc((size_t)dl + 64), *b = malloc((size_t)dl + 64),
                  *c = malloc((size_t)dl + 128);
    assert_true(a && b && c);
    size_t la = der_wrap(a, 0x30, d, (size_t)dl); /* SafeContents */
    size_t lb = der_wrap(b, 0xa0, a, la);         /* [0] EXPLICIT */
    memcpy(a, oid, sizeof oid);
    memcpy(a + sizeof oid, b, lb);
    size_t lc = der_wrap(c, 0x30, a, sizeof oid + lb);
    const unsigned char *p = c;
    PKCS12_SAFEBAG *outer = d2i_PKCS12_SAFEBAG(NULL, &p, (long)lc);
    assert_non_null(outer);
    assert_int_equal(PKCS12_SAFEBAG_get_nid(outer), NID_safeContentsBag);
    OPENSSL_free(d);
    free(a);
    free(b);
    free(c);
    PKCS12_SAFEBAG_free(inner);
    return outer;
}

static PKCS12_SAFEBAG *shrouded(int nid, int iter)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    assert_non_null(p8);
    PKCS12_SAFEBAG *bag = PKCS12_SAFEBAG_create_pkcs8_encrypt(nid, "pw", -1, NULL, 0, iter, p8);
    assert_non_null(bag);
    PKCS8_PRIV_KEY_INFO_free(p8);
    return bag;
}

static PKCS12_SAFEBAG *key_bag(const struct spec *s)
{
    PKCS12_SAFEBAG *bag;
    if (s->key_nid == -2) {
        X509_ALGOR *pbe =
            s->patch_scrypt
                ? PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), NULL, 0, NULL, 1024, 1, 1)
                : PKCS5_pbe2_set_scrypt(EVP_aes_256_cbc(), NULL, 0, NULL, s->n, s->r, s->p);
        PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
        assert_true(pbe && p8);
        X509_SIG *sig = PKCS8_set0_pbe("pw", -1, p8, pbe);
        assert_non_null(sig);
        PKCS8_PRIV_KEY_INFO_free(p8);
        bag = PKCS12_SAFEBAG_create0_pkcs8(sig);
        assert_non_null(bag);
        if (s->patch_scrypt) set_scrypt(bag_alg(bag), s->n, s->r, s->p);
    } else {
        bag = shrouded(s->key_nid, 2048);
        if (s->key_iter) set_iter(bag_alg(bag), s->key_iter);
    }
    if (s->unknown_kdf) set_unknown_kdf(bag_alg(bag));
    assert_true(PKCS12_add_localkeyid(bag, (unsigned char *)"k1", 2));
    return bag;
}

/* DER of the file described by s (malloc'd). */
static unsigned char *build(const struct spec *s, size_t *len)
{
    STACK_OF(PKCS12_SAFEBAG) *certs = NULL, *keys = sk_PKCS12_SAFEBAG_new_null();
    STACK_OF(PKCS7) *safes = NULL;
    PKCS12_SAFEBAG *cb = PKCS12_add_cert(&certs, cert);
    assert_true(cb && keys);
    assert_true(PKCS12_add_localkeyid(cb, (unsigned char *)"k1", 2));
    PKCS12_SAFEBAG *kb = key_bag(s);
    if (s->nested) kb = nest(kb);
    assert_true(sk_PKCS12_SAFEBAG_push(s->key_in_cert_safe ? certs : keys, kb));
    for (int i = 0; i < s->extra_keys; i++) {
        PKCS12_SAFEBAG *b = shrouded(NID_aes_256_cbc, 1);
        assert_true(sk_PKCS12_SAFEBAG_push(keys, b));
    }
    assert_true(PKCS12_add_safe(&safes, certs, s->cert_nid ? s->cert_nid : -1, 2048,
                                s->cert_nid ? "pw" : NULL));
    if (s->cert_iter) {
        PKCS7 *p7 = sk_PKCS7_value(safes, 0);
        set_iter(p7->d.encrypted->enc_data->algorithm, s->cert_iter);
    }
    if (sk_PKCS12_SAFEBAG_num(keys) > 0) assert_true(PKCS12_add_safe(&safes, keys, -1, 0, NULL));
    PKCS12 *p12 = PKCS12_add_safes(safes, 0);
    assert_non_null(p12);
    if (s->mac_iter != -1) {
        assert_true(PKCS12_set_mac(p12, "pw", -1, NULL, 0, 2048, EVP_sha256()));
        if (s->mac_iter) {
            const ASN1_INTEGER *it = NULL;
            PKCS12_get0_mac(NULL, NULL, NULL, &it, p12);
            assert_true(ASN1_INTEGER_set_int64((ASN1_INTEGER *)it, s->mac_iter));
        }
    }
    unsigned char *der = NULL;
    int l = i2d_PKCS12(p12, &der);
    assert_true(l > 0);
    *len = (size_t)l;
    unsigned char *out = malloc(*len);
    assert_non_null(out);
    memcpy(out, der, *len);
    OPENSSL_free(der);
    PKCS12_free(p12);
    sk_PKCS7_pop_free(safes, PKCS7_free);
    sk_PKCS12_SAFEBAG_pop_free(certs, PKCS12_SAFEBAG_free);
    sk_PKCS12_SAFEBAG_pop_free(keys, PKCS12_SAFEBAG_free);
    return out;
}

/* p12_cost_der of s: status, with *c and err filled */
static enum p12_status cost_of(const struct spec *s, struct p12_cost *c, char *err, size_t n)
{
    size_t len;
    unsigned char *der = build(s, &len);
    err[0] = '\0';
    enum p12_status st = p12_cost_der(der, len, "t.p12", c, err, n);
    free(der);
    return st;
}

/* p12_parse of s with password "pw": status and time; never a keystore unless P12_OK */
static enum p12_status parse_of(const struct spec *s, char *err, size_t n, double *ms)
{
    size_t len;
    unsigned char *der = build(s, &len);
    struct p12_file *f = NULL;
    double t0 = now_ms();
    enum p12_status st = p12_parse(der, len, "pw", "t.p12", &f, err, n);
    *ms = now_ms() - t0;
    if (st == P12_OK)
        assert_non_null(f);
    else
        assert_null(f);
    p12_free(f);
    free(der);
    return st;
}

static void assert_contains(const char *s, const char *part)
{
    if (!strstr(s, part)) fprintf(stderr, "'%s' does not contain '%s'\n", s, part);
    assert_non_null(strstr(s, part));
}

/* ----- setup ----- */

static int group_setup(void **state)
{
    const char *base = getenv("CERTGATE_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0700);
    snprintf(tmpdir, sizeof tmpdir, "%s/p12cost-XXXXXX", base);
    if (!mkdtemp(tmpdir)) return -1;
    char err[256];
    if (p12_init(err, sizeof err) != 0) return -1;
    static const char *const cmds[] = {
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem -days 30 "
        "-subj '/CN=cost.example'",
        "openssl pkcs12 -export -inkey k.pem -in c.pem -name modern -passout pass:pw "
        "-out modern.p12",
        "openssl pkcs12 -export -legacy -inkey k.pem -in c.pem -name legacy -passout pass:pw "
        "-out legacy.p12",
        "openssl pkcs12 -export -inkey k.pem -in c.pem -name nomac -nomac -passout pass:pw "
        "-out nomac.p12",
        "keytool -genkeypair -keystore keytool.p12 -storetype pkcs12 -storepass pwpwpw "
        "-alias kt -keyalg EC -groupname secp256r1 -dname CN=kt -validity 30",
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (run("%s", cmds[i]) != 0) return -1;
    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    cert = X509_new();
    X509_NAME *n = X509_NAME_new();
    if (!key || !cert || !n) return -1;
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"c", -1, -1, 0);
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 7);
    X509_set_subject_name(cert, n);
    X509_set_issuer_name(cert, n);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    X509_set_pubkey(cert, key);
    X509_NAME_free(n);
    return X509_sign(cert, key, EVP_sha256()) > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    EVP_PKEY_free(key);
    X509_free(cert);
    if (!getenv("CERTGATE_KEEP_TMP")) run("rm -rf '%s'", tmpdir);
    return 0;
}

/* ----- the budget walker ----- */

/* What the producers make is far inside the budget; the figures are printed. */
static void test_producers_within_budget(void **state)
{
    static const char *const files[] = {"modern.p12", "legacy.p12", "nomac.p12", "keytool.p12"};
    for (size_t i = 0; i < 4; i++) {
        size_t len;
        unsigned char *der = read_all(files[i], &len);
        assert_non_null(der);
        struct p12_cost c;
        char err[512] = "";
        assert_int_equal(p12_cost_der(der, len, files[i], &c, err, sizeof err), P12_OK);
        printf("    %-12s %llu iterations in %u derivations\n", files[i], c.iterations,
               c.derivations);
        assert_true(c.iterations >= 2048 && c.iterations <= 30000);
        assert_true(c.derivations >= 1 && c.derivations <= 3);
        free(der);
    }
}

/* PBES1 (PKCS#12 PBE) and PBES2/PBKDF2: iterations of the MAC and every part add up. */
static void test_iterations_sum(void **state)
{
    struct p12_cost c;
    char err[512];
    struct spec s = {.key_nid = NID_aes_256_cbc, .cert_nid = NID_aes_256_cbc};
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_OK);
    assert_int_equal(c.iterations, 3 * 2048);
    assert_int_equal(c.derivations, 3);

    s.key_iter = 1000000;
    s.cert_iter = 1000000 - 2048; /* exactly the limit */
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_OK);
    assert_int_equal(c.iterations, P12_MAX_ITERATIONS);
    s.cert_iter++;
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_ERR_COST);
    assert_string_equal(err, "t.p12: key derivation would take 2,000,001 PBKDF2 iterations (the "
                             "MAC and every encrypted part together); the limit is 2,000,000 "
                             "(files from openssl and keytool use 2,048 to 10,000 per part); "
                             "export it again with fewer iterations");

    struct spec s1 = {.key_nid = NID_pbe_WithSHA1And3_Key_TripleDES_CBC,
                      .key_iter = 1500000,
                      .cert_nid = NID_pbe_WithSHA1And40BitRC2_CBC,
                      .cert_iter = 600000};
    assert_int_equal(cost_of(&s1, &c, err, sizeof err), P12_ERR_COST);
    assert_contains(err, "would take 2,102,048 PBKDF2 iterations");
}

/* The MAC's iterations alone; refused by p12_parse in milliseconds, before the MAC. */
static void test_mac_iterations(void **state)
{
    struct p12_cost c;
    char err[512];
    double ms;
    struct spec s = {.key_nid = NID_aes_256_cbc, .mac_iter = 5000000};
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_ERR_COST);
    assert_contains(err, "t.p12: key derivation would take 5,000,000 PBKDF2 iterations");
    assert_int_equal(parse_of(&s, err, sizeof err, &ms), P12_ERR_COST);
    printf("    5,000,000 MAC iterations refused in %.2f ms\n", ms);
    s.mac_iter = -1; /* no MAC: only the key bag */
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_OK);
    assert_int_equal(c.iterations, 2048);
    assert_int_equal(c.derivations, 1);
}

static void test_scrypt(void **state)
{
    struct p12_cost c;
    char err[512];
    double ms;
    /* a real one, derived: it loads */
    struct spec s = {.key_nid = -2, .n = 1024, .r = 8, .p = 1};
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_OK);
    assert_int_equal(c.scrypt_work, 8192);
    assert_int_equal(c.scrypt_mem, 128 * 1024 * 8);
    assert_int_equal(c.iterations, 2048); /* the MAC */
    assert_int_equal(parse_of(&s, err, sizeof err, &ms), P12_OK);

    struct spec big = {.key_nid = -2, .patch_scrypt = 1, .n = 1u << 20, .r = 8, .p = 1};
    assert_int_equal(cost_of(&big, &c, err, sizeof err), P12_ERR_COST);
    assert_string_equal(err, "t.p12: key derivation would need 1 GiB of memory for scrypt "
                             "(128 * N * r bytes); the limit is 32 MiB (N=16384, r=8 needs "
                             "16 MiB); export it again with a smaller N or r");
    assert_int_equal(parse_of(&big, err, sizeof err, &ms), P12_ERR_COST);
    printf("    scrypt N=2^20 r=8 refused in %.2f ms\n", ms);

    struct spec at = {.key_nid = -2, .patch_scrypt = 1, .n = 16384, .r = 8, .p = 16};
    assert_int_equal(cost_of(&at, &c, err, sizeof err), P12_OK);
    assert_int_equal(c.scrypt_work, P12_MAX_SCRYPT_WORK);
    at.p = 17;
    assert_int_equal(cost_of(&at, &c, err, sizeof err), P12_ERR_COST);
    assert_contains(err, "would take 2,228,224 units of scrypt work");
    /* p of 2^32: saturating arithmetic, no wrap-around to a small cost */
    struct spec wrap = {
        .key_nid = -2, .patch_scrypt = 1, .n = 1ull << 62, .r = 1ull << 62, .p = 1ull << 62};
    assert_int_equal(cost_of(&wrap, &c, err, sizeof err), P12_ERR_COST);
}

static void test_unknown_kdf_and_bad_params(void **state)
{
    struct p12_cost c;
    char err[512];
    double ms;
    struct spec s = {.key_nid = NID_aes_256_cbc, .unknown_kdf = 1};
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_ERR_FORMAT);
    assert_string_equal(err, "t.p12: not a PKCS#12 file this gateway can open (unknown "
                             "key-derivation function 1.2.840.113549.1.9.16.3.28; PBKDF2 and "
                             "scrypt are supported)");
    assert_int_equal(parse_of(&s, err, sizeof err, &ms), P12_ERR_FORMAT);
    struct spec neg = {.key_nid = NID_aes_256_cbc, .key_iter = -1};
    assert_int_equal(cost_of(&neg, &c, err, sizeof err), P12_ERR_FORMAT);
    assert_string_equal(err, "t.p12: not a PKCS#12 file (unreadable PBKDF2 parameters)");
    struct spec neg1 = {.key_nid = NID_pbe_WithSHA1And3_Key_TripleDES_CBC, .key_iter = -5};
    assert_int_equal(cost_of(&neg1, &c, err, sizeof err), P12_ERR_FORMAT);
    struct spec negmac = {.key_nid = NID_aes_256_cbc, .mac_iter = -7};
    assert_int_equal(cost_of(&negmac, &c, err, sizeof err), P12_ERR_FORMAT);
    assert_contains(err, "unreadable MAC parameters");
}

/* A key bag nested in a safeContentsBag counts (the loader ignores such bags, as Java
 * does, but the budget does not depend on that). */
static void test_nested(void **state)
{
    struct p12_cost c;
    char err[512];
    struct spec s = {.key_nid = NID_aes_256_cbc, .nested = 1};
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_OK);
    assert_int_equal(c.iterations, 2 * 2048);
    s.key_iter = 1999000;
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_ERR_COST);
}

/* A key bag inside an encrypted SafeContents is invisible until that is decrypted; the
 * walk adds it before deriving its key. */
static void test_bag_inside_encrypted_part(void **state)
{
    struct p12_cost c;
    char err[512];
    double ms;
    struct spec s = {
        .key_nid = NID_aes_256_cbc, .cert_nid = NID_aes_256_cbc, .key_in_cert_safe = 1};
    assert_int_equal(parse_of(&s, err, sizeof err, &ms), P12_OK);
    s.key_iter = 1999000;
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_OK); /* not visible yet */
    assert_int_equal(c.iterations, 2 * 2048);
    assert_int_equal(parse_of(&s, err, sizeof err, &ms), P12_ERR_COST);
    assert_contains(err, "would take 2,003,096 PBKDF2 iterations");
    printf("    hidden key bag refused after %.1f ms (two derivations of 2,048)\n", ms);
}

static void test_derivation_count(void **state)
{
    struct p12_cost c;
    char err[512];
    struct spec s = {.key_nid = NID_aes_256_cbc, .extra_keys = P12_MAX_DERIVATIONS - 3};
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_OK);
    assert_int_equal(c.derivations, P12_MAX_DERIVATIONS - 1);
    s.extra_keys += 2;
    assert_int_equal(cost_of(&s, &c, err, sizeof err), P12_ERR_COST);
    assert_contains(err, "t.p12: key derivation would run 65 times (once per encrypted part); "
                         "the limit is 64");
}

static void test_truncated_der(void **state)
{
    size_t len;
    unsigned char *der = read_all("modern.p12", &len);
    assert_non_null(der);
    for (size_t l = 0; l < len; l++) {
        struct p12_cost c;
        char err[256] = "";
        assert_int_equal(p12_cost_der(der, l, "cut", &c, err, sizeof err), P12_ERR_FORMAT);
        assert_true(strncmp(err, "cut: ", 5) == 0);
    }
    free(der);
}

/* ----- load + describe of damaged real files ----- */

static void one(const unsigned char *buf, size_t len, const char *pw, int *ok)
{
    struct p12_file *f = NULL;
    char err[512] = "";
    enum p12_status st = p12_parse(buf, len, pw, "dmg", &f, err, sizeof err);
    if (st == P12_OK) {
        assert_non_null(f);
        json_t *d = p12_describe(f, "dmg");
        assert_non_null(d);
        json_decref(d);
        p12_free(f);
        (*ok)++;
    } else {
        assert_null(f);
        assert_true(strncmp(err, "dmg: ", 5) == 0);
    }
}

static void test_damaged_files_load_and_describe(void **state)
{
    static const struct {
        const char *file, *pw;
    } files[] = {
        {"modern.p12", "pw"}, {"legacy.p12", "pw"}, {"nomac.p12", "pw"}, {"keytool.p12", "pwpwpw"}};
    unsigned int seed = 4242;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t len;
        unsigned char *der = read_all(files[i].file, &len);
        assert_non_null(der);
        int ok = 0, total = 0;
        double t0 = now_ms();
        for (size_t l = 0; l < len; l++, total++)
            one(der, l, files[i].pw, &ok);
        assert_int_equal(ok, 0); /* no truncation is a valid file */
        unsigned char *copy = malloc(len);
        assert_non_null(copy);
        for (int k = 0; k < 400; k++, total++) {
            memcpy(copy, der, len);
            size_t pos = (size_t)rand_r(&seed) % len;
            unsigned char v = (unsigned char)rand_r(&seed);
            copy[pos] = v == der[pos] ? (unsigned char)~v : v;
            one(copy, len, files[i].pw, &ok);
        }
        one(der, len, files[i].pw, &ok); /* the intact file loads */
        printf("    %-12s %zu bytes: %d inputs, %d loaded, %.0f ms\n", files[i].file, len,
               total + 1, ok, now_ms() - t0);
        assert_true(ok >= 1);
        free(copy);
        free(der);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_producers_within_budget),
        cmocka_unit_test(test_iterations_sum),
        cmocka_unit_test(test_mac_iterations),
        cmocka_unit_test(test_scrypt),
        cmocka_unit_test(test_unknown_kdf_and_bad_params),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_bag_inside_encrypted_part),
        cmocka_unit_test(test_derivation_count),
        cmocka_unit_test(test_truncated_der),
        cmocka_unit_test(test_damaged_files_load_and_describe),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
