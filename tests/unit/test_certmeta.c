/* test_certmeta.c - the record of a stored file's public facts: made from a real PKCS#12,
 * encoded, decoded (round trip), refused when stale or not a record; saved to and loaded
 * from DIR/ssl-meta; removed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "certmeta.h"
#include "fsutil.h"
#include "gw.h"
#include "metrics.h"
#include "p12.h"

static const char PW[] = "secret-password-1";

/* A PKCS#12 (DER) with one EC key and a certificate CN=meta.example, O=Org valid
 * 2024-01-01 .. 2040-01-01, alias "web"; *sha: its SHA-256 in hex. */
static unsigned char *make_p12(int *len, char sha[65])
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(k);
    X509 *c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 7);
    assert_true(ASN1_TIME_set_string_X509(X509_getm_notBefore(c), "20240101000000Z"));
    assert_true(ASN1_TIME_set_string_X509(X509_getm_notAfter(c), "20400101000000Z"));
    X509_NAME *n = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"Org", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"meta.example",
                               -1, -1, 0);
    X509_set_issuer_name(c, n);
    X509_set_pubkey(c, k);
    assert_true(X509_sign(c, k, EVP_sha256()) > 0);
    unsigned char md[32];
    unsigned mdlen = 0;
    X509_digest(c, EVP_sha256(), md, &mdlen);
    for (unsigned i = 0; i < 32; i++) snprintf(sha + 2 * i, 3, "%02x", md[i]);
    PKCS12 *p = PKCS12_create(PW, "web", k, c, NULL, 0, 0, 0, 0, 0);
    assert_non_null(p);
    unsigned char *der = NULL;
    *len = i2d_PKCS12(p, &der);
    assert_true(*len > 0);
    PKCS12_free(p);
    X509_free(c);
    EVP_PKEY_free(k);
    return der;
}

static struct p12_file *parse(const unsigned char *der, int len)
{
    struct p12_file *f = NULL;
    char err[512];
    assert_int_equal(p12_parse(der, (size_t)len, PW, "x.p12", &f, err, sizeof err), P12_OK);
    return f;
}

static void test_round_trip(void **state)
{
    (void)state;
    char sha[65];
    int len;
    unsigned char *der = make_p12(&len, sha);
    struct p12_file *f = parse(der, len);
    struct certmeta_rec *r = certmeta_rec_of(f);
    assert_non_null(r);
    assert_int_equal(certmeta_count(r), 1);
    const struct metrics_cert_fact *fa = certmeta_facts(r);
    assert_string_equal(fa[0].alias, "web");
    assert_string_equal(fa[0].subject, "CN=meta.example,O=Org");
    assert_int_equal(fa[0].nb, 1704067200LL); /* 2024-01-01 */
    assert_int_equal(fa[0].na, 2208988800LL); /* 2040-01-01 */
    assert_string_equal(certmeta_sha256(r, 0), sha);
    assert_memory_equal(fa[0].sha, sha, 16);
    assert_int_equal(strlen(fa[0].sha), 16);

    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_size = 1234;
    st.st_mtim.tv_sec = 1700000000;
    st.st_mtim.tv_nsec = 123456789;
    st.st_ino = 4242;
    char *text = certmeta_encode("x.p12", &st, r);
    assert_non_null(text);
    assert_null(strstr(text, PW)); /* public facts only */
    struct certmeta_rec *back = NULL;
    char err[300];
    assert_int_equal(certmeta_decode(text, "x.p12", &st, &back, err, sizeof err), 0);
    assert_int_equal(certmeta_count(back), 1);
    const struct metrics_cert_fact *fb = certmeta_facts(back);
    assert_string_equal(fb[0].alias, "web");
    assert_string_equal(fb[0].subject, fa[0].subject);
    assert_string_equal(fb[0].sha, fa[0].sha);
    assert_int_equal(fb[0].nb, fa[0].nb);
    assert_int_equal(fb[0].na, fa[0].na);
    assert_string_equal(certmeta_sha256(back, 0), sha);
    certmeta_rec_free(back);

    /* stale: any of size, mtime, inode differs */
    struct stat other = st;
    other.st_mtim.tv_nsec++;
    assert_int_equal(certmeta_decode(text, "x.p12", &other, &back, err, sizeof err), -1);
    assert_non_null(strstr(err, "stale"));
    assert_null(back);
    other = st;
    other.st_size++;
    assert_int_equal(certmeta_decode(text, "x.p12", &other, &back, err, sizeof err), -1);
    other = st;
    other.st_ino++;
    assert_int_equal(certmeta_decode(text, "x.p12", &other, &back, err, sizeof err), -1);
    /* another file's record; not a record */
    assert_int_equal(certmeta_decode(text, "y.p12", &st, &back, err, sizeof err), -1);
    assert_int_equal(certmeta_decode("{\"version\":1}", "x.p12", &st, &back, err, sizeof err),
                     -1);
    assert_int_equal(certmeta_decode("not json", "x.p12", &st, &back, err, sizeof err), -1);
    char *bad = strdup(text);
    char *p = strstr(bad, sha);
    p[3] = 'Z'; /* not hex */
    assert_int_equal(certmeta_decode(bad, "x.p12", &st, &back, err, sizeof err), -1);
    free(bad);
    free(text);
    certmeta_rec_free(r);
    p12_free(f);
    OPENSSL_free(der);
}

struct seen {
    int n;
    char file[64], alias[64];
    long long na;
};

static void visit(void *arg, const char *file, const struct metrics_cert_fact *f)
{
    struct seen *s = arg;
    s->n++;
    snprintf(s->file, sizeof s->file, "%s", file);
    snprintf(s->alias, sizeof s->alias, "%s", f->alias);
    s->na = f->na;
}

static void test_save_load_remove(void **state)
{
    (void)state;
    const char *base = getenv("CERTGATE_TEST_TMP");
    char dir[512], err[512];
    snprintf(dir, sizeof dir, "%s/certmeta-%d", base ? base : "/tmp", (int)getpid());
    gw_paths.data_dir = strdup(dir);
    gw_paths.ssl_dir = fs_path_join(dir, "ssl");
    assert_int_equal(fs_mkdir_p(gw_paths.ssl_dir, 0700, 0, err, sizeof err), 0);
    char sha[65];
    int len;
    unsigned char *der = make_p12(&len, sha);
    char *path = fs_path_join(gw_paths.ssl_dir, "x.p12");
    assert_int_equal(fs_write_atomic(path, der, (size_t)len, 0600, err, sizeof err), 0);
    struct p12_file *f = parse(der, len);
    struct certmeta_rec *r = certmeta_rec_of(f);
    assert_int_equal(certmeta_save("x.p12", r, NULL, err, sizeof err), 0);
    /* names that are no plain file of the ssl directory get no record */
    assert_int_equal(certmeta_save("../x.p12", r, NULL, err, sizeof err), -1);
    assert_int_equal(certmeta_save(".hidden", r, NULL, err, sizeof err), -1);
    char rec[600];
    snprintf(rec, sizeof rec, "%s/ssl-meta/x.p12.json", dir);
    struct stat st;
    assert_int_equal(stat(rec, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    metrics_certs_free();
    assert_int_equal(certmeta_load_all(), 1);
    struct seen s = {0};
    metrics_certs_each_fact(visit, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.file, "x.p12");
    assert_string_equal(s.alias, "web");
    assert_int_equal(s.na, 2208988800LL);

    /* the file replaced (a new inode): the record is stale */
    metrics_certs_free();
    assert_int_equal(fs_write_atomic(path, der, (size_t)len, 0600, err, sizeof err), 0);
    assert_int_equal(certmeta_load_all(), 0);
    /* the file gone: ignored */
    unlink(path);
    assert_int_equal(certmeta_load_all(), 0);
    certmeta_remove("x.p12");
    assert_int_equal(stat(rec, &st), -1);
    certmeta_remove("x.p12"); /* twice: fine */

    metrics_certs_free();
    certmeta_rec_free(r);
    p12_free(f);
    OPENSSL_free(der);
    free(path);
    char meta[600];
    snprintf(meta, sizeof meta, "%s/ssl-meta", dir);
    rmdir(meta);
    rmdir(gw_paths.ssl_dir);
    rmdir(dir);
    free(gw_paths.data_dir);
    free(gw_paths.ssl_dir);
    memset(&gw_paths, 0, sizeof gw_paths);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_save_load_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
