/* test_defcert.c - the default self-signed certificate: created with the promised
 * properties, stored 0600, reused, regenerated when stale, nothing written read-only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "defcert.h"
#include "p12.h"

#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char base[PATH_MAX];

static char *new_dir(void)
{
    static char dir[PATH_MAX + 32];
    snprintf(dir, sizeof(dir), "%s/d-XXXXXX", base);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static char *file_in(const char *dir)
{
    static char p[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", dir, DEFCERT_FILE);
    return p;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = malloc(1 << 16);
    assert_non_null(b);
    *len = fread(b, 1, (1 << 16) - 1, f);
    b[*len] = '\0';
    fclose(f);
    return b;
}

static void fingerprint(struct p12_file *f, char hex[65])
{
    const struct p12_entry *e = NULL;
    assert_int_equal(p12_select(f, "default", &e, NULL, 0), 0);
    unsigned char md[32];
    unsigned int n = 0;
    assert_true(X509_digest(p12_entry_cert(e), EVP_sha256(), md, &n));
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static struct p12_file *load(const char *dir, int readonly)
{
    struct p12_file *f = NULL;
    char err[256] = "";
    int rc = defcert_load(dir, readonly, &f, err, sizeof(err));
    if (rc != 0) fprintf(stderr, "defcert_load: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(f);
    return f;
}

static const char *host(void)
{
    static char h[256];
    assert_int_equal(gethostname(h, sizeof(h)), 0);
    h[sizeof(h) - 1] = '\0';
    return h;
}

/* Stores a key and a certificate for cn valid from nb to na (offsets from now). */
static void write_cert(const char *dir, const char *cn, long nb, long na)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *c = X509_new();
    assert_non_null(k);
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 7);
    X509_gmtime_adj(X509_getm_notBefore(c), nb);
    X509_gmtime_adj(X509_getm_notAfter(c), na);
    X509_NAME *n = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(c, n);
    X509_set_pubkey(c, k);
    char san[300];
    snprintf(san, sizeof(san), "DNS:%s", cn);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, c, c, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san);
    assert_non_null(ext);
    X509_add_ext(c, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(c, k, EVP_sha256()) > 0);
    FILE *f = fopen(file_in(dir), "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    PEM_write_X509(f, c);
    fclose(f);
    chmod(file_in(dir), 0600);
    EVP_PKEY_free(k);
    X509_free(c);
}

static int setup(void **state)
{
    const char *b = getenv("CERTGATE_TEST_TMP");
    if (!b || !*b) b = "/tmp";
    mkdir(b, 0700);
    snprintf(base, sizeof(base), "%s/defcert-XXXXXX", b);
    return mkdtemp(base) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_created_with_promised_properties(void **state)
{
    const char *dir = new_dir();
    time_t before = time(NULL);
    struct p12_file *f = load(dir, 0);

    /* stored, mode 0600, key then certificate, no temp file left behind */
    struct stat st;
    assert_int_equal(stat(file_in(dir), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(count_files(dir), 1);
    size_t len;
    char *pem = slurp(file_in(dir), &len);
    assert_non_null(pem);
    assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
    assert_true(strstr(pem, "BEGIN PRIVATE KEY") < strstr(pem, "BEGIN CERTIFICATE"));
    free(pem);

    assert_int_equal(p12_count(f), 1);
    const struct p12_entry *e = NULL;
    assert_int_equal(p12_select(f, NULL, &e, NULL, 0), 0);
    assert_string_equal(p12_entry_alias(e), "default");
    X509 *c = p12_entry_cert(e);
    EVP_PKEY *k = p12_entry_key(e);
    assert_int_equal(X509_check_private_key(c, k), 1);

    /* ECDSA P-256, SHA-256 */
    assert_int_equal(EVP_PKEY_get_base_id(k), EVP_PKEY_EC);
    char group[64];
    size_t gl;
    assert_true(
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &gl));
    assert_string_equal(group, "prime256v1");
    assert_int_equal(X509_get_signature_nid(c), NID_ecdsa_with_SHA256);

    /* CN = host name; self-signed */
    char cn[256] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(c), NID_commonName, cn, sizeof(cn));
    /* CN is capped at 64 characters */
    assert_int_equal(strncmp(cn, host(), 64), 0);
    assert_int_equal(strlen(cn), strlen(host()) > 64 ? 64 : strlen(host()));
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(c), X509_get_issuer_name(c)), 0);

    /* SANs */
    json_t *j = p12_describe(f, "default");
    json_t *sans = json_object_get(json_array_get(json_object_get(j, "desc"), 0), "sans");
    char dns_host[300];
    snprintf(dns_host, sizeof(dns_host), "DNS:%s", host());
    const char *expect[] = {dns_host, "DNS:localhost", "IP:127.0.0.1", "IP:::1"};
    for (size_t i = 0; i < 4; i++) {
        int found = 0;
        for (size_t s = 0; s < json_array_size(sans); s++)
            if (strcmp(json_string_value(json_array_get(sans, s)), expect[i]) == 0) found = 1;
        if (!found) fprintf(stderr, "missing SAN %s\n", expect[i]);
        assert_true(found);
    }
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(j, "desc"), 0), "keyType")),
                        "EC-P256");
    json_decref(j);
    assert_int_equal(X509_check_host(c, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(c, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(c, "::1", 0), 1);

    /* CA:FALSE, digitalSignature, serverAuth */
    uint32_t flags = X509_get_extension_flags(c);
    assert_true(flags & EXFLAG_BCONS);
    assert_false(flags & EXFLAG_CA);
    assert_int_equal(X509_get_key_usage(c), KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_get_extended_key_usage(c), XKU_SSL_SERVER);

    /* a positive random serial of up to 128 bits */
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(c), NULL);
    assert_false(BN_is_negative(bn));
    assert_true(BN_num_bits(bn) > 100 && BN_num_bits(bn) <= 128);
    BN_free(bn);

    /* from now - 1 h, for 365 days */
    int days, secs;
    ASN1_TIME *t = ASN1_TIME_new();
    ASN1_TIME_set(t, before);
    assert_true(ASN1_TIME_diff(&days, &secs, t, X509_get0_notBefore(c)));
    assert_int_equal(days, 0);
    assert_true(secs <= -3600 + 5 && secs >= -3600 - 5);
    ASN1_TIME_free(t);
    assert_true(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(c), X509_get0_notAfter(c)));
    assert_int_equal(days, 365);
    assert_int_equal(secs, 0);
    p12_free(f);
}

static void test_reused_on_second_call(void **state)
{
    const char *dir = new_dir();
    char a[65], b[65];
    struct p12_file *f = load(dir, 0);
    fingerprint(f, a);
    p12_free(f);
    size_t l1, l2;
    char *before = slurp(file_in(dir), &l1);
    f = load(dir, 0);
    fingerprint(f, b);
    p12_free(f);
    assert_string_equal(a, b);
    char *after = slurp(file_in(dir), &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(before, after, l1);
    free(before);
    free(after);
    /* a reused file readable by others is tightened to 0600 */
    assert_int_equal(chmod(file_in(dir), 0644), 0);
    f = load(dir, 0);
    p12_free(f);
    struct stat st;
    assert_int_equal(stat(file_in(dir), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* read-only mode reuses a valid file too */
    f = load(dir, 1);
    fingerprint(f, b);
    p12_free(f);
    assert_string_equal(a, b);
}

static void regenerated_when(const char *cn, long nb, long na, int garbage)
{
    const char *dir = new_dir();
    if (garbage) {
        FILE *g = fopen(file_in(dir), "w");
        assert_non_null(g);
        fputs("-----BEGIN PRIVATE KEY-----\nnot a key\n", g);
        fclose(g);
    } else {
        write_cert(dir, cn, nb, na);
    }
    size_t l;
    char *old = slurp(file_in(dir), &l);
    struct p12_file *f = load(dir, 0);
    const struct p12_entry *e = NULL;
    assert_int_equal(p12_select(f, NULL, &e, NULL, 0), 0);
    X509 *c = p12_entry_cert(e);
    time_t now = time(NULL);
    assert_true(X509_cmp_time(X509_get0_notAfter(c), &now) > 0);
    assert_int_equal(X509_check_host(c, host(), 0, 0, NULL), 1);
    char fp1[65], fp2[65];
    fingerprint(f, fp1);
    p12_free(f);
    /* what was stored is the new certificate */
    size_t l2;
    char *now_stored = slurp(file_in(dir), &l2);
    assert_false(l == l2 && memcmp(old, now_stored, l) == 0);
    f = load(dir, 0);
    fingerprint(f, fp2);
    p12_free(f);
    assert_string_equal(fp1, fp2);
    free(old);
    free(now_stored);
    assert_int_equal(count_files(dir), 1);
}

static void test_regenerated_when_expired(void **state)
{
    regenerated_when(host(), -400L * 86400, -86400, 0);
}

static void test_regenerated_for_another_host(void **state)
{
    regenerated_when("not-this-host.example", -3600, 300L * 86400, 0);
}

static void test_regenerated_when_unreadable(void **state)
{
    regenerated_when(NULL, 0, 0, 1);
}

/* An encrypted key in the file (never written by certgate) must not make OpenSSL prompt
 * for a password: it is treated as unreadable and replaced. */
static void test_encrypted_key_is_replaced_without_prompt(void **state)
{
    const char *dir = new_dir();
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    FILE *f = fopen(file_in(dir), "w");
    assert_non_null(f);
    assert_true(PEM_write_PrivateKey(f, k, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)"pw"));
    fclose(f);
    EVP_PKEY_free(k);
    struct p12_file *p = load(dir, 0);
    p12_free(p);
    size_t l;
    char *pem = slurp(file_in(dir), &l);
    assert_null(strstr(pem, "ENCRYPTED"));
    free(pem);
}

static void test_readonly_writes_nothing(void **state)
{
    const char *dir = new_dir();
    struct p12_file *f = load(dir, 1);
    assert_int_equal(p12_count(f), 1);
    p12_free(f);
    assert_int_equal(count_files(dir), 0);

    /* a stale file is left alone; a fresh in-memory certificate is served */
    write_cert(dir, host(), -400L * 86400, -86400);
    size_t l1, l2;
    char *before = slurp(file_in(dir), &l1);
    f = load(dir, 1);
    const struct p12_entry *e = NULL;
    assert_int_equal(p12_select(f, NULL, &e, NULL, 0), 0);
    time_t now = time(NULL);
    assert_true(X509_cmp_time(X509_get0_notAfter(p12_entry_cert(e)), &now) > 0);
    p12_free(f);
    char *after = slurp(file_in(dir), &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(before, after, l1);
    assert_int_equal(count_files(dir), 1);
    free(before);
    free(after);
}

static void test_unwritable_folder_still_serves(void **state)
{
    char dir[PATH_MAX + 64];
    snprintf(dir, sizeof(dir), "%s/no/such/folder", base);
    struct p12_file *f = load(dir, 0);
    assert_int_equal(p12_count(f), 1);
    p12_free(f);
    struct stat st;
    assert_int_equal(stat(dir, &st), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_created_with_promised_properties),
        cmocka_unit_test(test_reused_on_second_call),
        cmocka_unit_test(test_regenerated_when_expired),
        cmocka_unit_test(test_regenerated_for_another_host),
        cmocka_unit_test(test_regenerated_when_unreadable),
        cmocka_unit_test(test_encrypted_key_is_replaced_without_prompt),
        cmocka_unit_test(test_readonly_writes_nothing),
        cmocka_unit_test(test_unwritable_folder_still_serves),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
