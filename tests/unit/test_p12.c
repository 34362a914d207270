/* test_p12.c - PKCS#12 loading, Java aliases, refusals and Java-exact descriptions.
 *
 * Keystores come from the real producers (openssl pkcs12 -export, -legacy, keytool)
 * and, for shapes those tools cannot make (twopass, key/cert mismatch, entries without
 * friendlyName or localKeyID), from OpenSSL's PKCS12_add_* API. keytool is the oracle
 * for aliases and descriptions: its -list -v output is compared with ours under a
 * non-UTC time zone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "p12.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NY_TZ "America/New_York"

static char tmpdir[PATH_MAX];

/* ----- helpers ----- */

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[8192], full[8192 + PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "cd '%s' && ( %s ) >>cmd.log 2>&1", tmpdir, cmd);
    int rc = system(full);
    if (rc != 0) fprintf(stderr, "command failed (%d): %s (see %s/cmd.log)\n", rc, cmd, tmpdir);
    return rc;
}

static char *path_of(const char *name)
{
    static char buf[4][PATH_MAX + 64];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", tmpdir, name);
    return buf[k];
}

static void assert_prefix(const char *s, const char *prefix)
{
    if (strncmp(s, prefix, strlen(prefix)) != 0) fprintf(stderr, "'%s' !^ '%s'\n", s, prefix);
    assert_int_equal(strncmp(s, prefix, strlen(prefix)), 0);
}

static struct p12_file *load_ok(const char *name, const char *pw)
{
    struct p12_file *f = NULL;
    char err[512] = "";
    enum p12_status st = p12_load_file(path_of(name), pw, &f, err, sizeof(err));
    if (st != P12_OK) fprintf(stderr, "loading %s: %d %s\n", name, st, err);
    assert_int_equal(st, P12_OK);
    assert_non_null(f);
    return f;
}

static enum p12_status load_err(const char *name, const char *pw, char *err, size_t errlen)
{
    struct p12_file *f = NULL;
    enum p12_status st = p12_load_file(path_of(name), pw, &f, err, errlen);
    assert_null(f);
    return st;
}

static char *cert_cn(X509 *cert)
{
    static char cn[256];
    cn[0] = '\0';
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    return cn;
}

static EVP_PKEY *gen_ec(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(k);
    return k;
}

static void set_time(ASN1_TIME *t, const char *gt)
{
    assert_true(ASN1_TIME_set_string_X509(t, gt));
}

/* A self-signed certificate with the given subject (issuer = subject). */
static X509 *make_cert(EVP_PKEY *key, X509_NAME *name, const unsigned char *serial,
                       size_t serial_len, const char *not_before, const char *not_after)
{
    X509 *c = X509_new();
    assert_non_null(c);
    X509_set_version(c, 2);
    BIGNUM *bn = BN_bin2bn(serial, (int)serial_len, NULL);
    assert_non_null(bn);
    assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c)));
    BN_free(bn);
    set_time(X509_getm_notBefore(c), not_before);
    set_time(X509_getm_notAfter(c), not_after);
    assert_true(X509_set_subject_name(c, name));
    assert_true(X509_set_issuer_name(c, name));
    assert_true(X509_set_pubkey(c, key));
    assert_true(X509_sign(c, key, EVP_sha256()) > 0);
    return c;
}

static X509 *simple_cert(EVP_PKEY *key, const char *cn)
{
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    static const unsigned char serial[] = {0x01, 0x23, 0x45};
    X509 *c = make_cert(key, n, serial, sizeof(serial), "20240101000000Z", "20400101000000Z");
    X509_NAME_free(n);
    return c;
}

struct bag {
    EVP_PKEY *key; /* a key bag when set, else a cert bag */
    X509 *cert;
    const char *name;  /* friendlyName or NULL */
    const char *keyid; /* localKeyID or NULL */
    int trusted;       /* Java's trustedKeyUsage attribute on a cert bag */
};

/* Writes a PKCS#12 file: certificate bags in an encrypted SafeContents (first), key bags
 * in a data SafeContents (second), as openssl does; keys and certificates encrypted
 * with encpass, the MAC made with macpass (no MAC when macpass is NULL). */
static void write_p12(const char *name, const struct bag *bags, size_t n, const char *macpass,
                      const char *encpass)
{
    STACK_OF(PKCS12_SAFEBAG) *certs = NULL, *keys = NULL;
    STACK_OF(PKCS7) *safes = NULL;
    for (size_t i = 0; i < n; i++) {
        PKCS12_SAFEBAG *b;
        if (bags[i].key) {
            b = PKCS12_add_key(&keys, bags[i].key, 0, 2048, NID_aes_256_cbc, encpass);
        } else {
            b = PKCS12_add_cert(&certs, bags[i].cert);
        }
        assert_non_null(b);
        if (bags[i].name) assert_true(PKCS12_add_friendlyname_utf8(b, bags[i].name, -1));
        if (bags[i].keyid)
            assert_true(PKCS12_add_localkeyid(b, (unsigned char *)bags[i].keyid,
                                              (int)strlen(bags[i].keyid)));
        if (bags[i].trusted) {
            ASN1_OBJECT *any = OBJ_txt2obj("2.5.29.37.0", 1);
            assert_true(PKCS12_add1_attr_by_txt(b, "2.16.840.1.113894.746875.1.1", V_ASN1_OBJECT,
                                                (unsigned char *)any, -1));
            ASN1_OBJECT_free(any);
        }
    }
    if (certs) assert_true(PKCS12_add_safe(&safes, certs, NID_aes_256_cbc, 2048, encpass));
    if (keys) assert_true(PKCS12_add_safe(&safes, keys, -1, 0, NULL));
    PKCS12 *p12 = PKCS12_add_safes(safes, 0);
    assert_non_null(p12);
    if (macpass) assert_true(PKCS12_set_mac(p12, macpass, -1, NULL, 0, 2048, EVP_sha256()));
    FILE *f = fopen(path_of(name), "wb");
    assert_non_null(f);
    assert_true(i2d_PKCS12_fp(f, p12));
    fclose(f);
    PKCS12_free(p12);
    sk_PKCS7_pop_free(safes, PKCS7_free);
    sk_PKCS12_SAFEBAG_pop_free(certs, PKCS12_SAFEBAG_free);
    sk_PKCS12_SAFEBAG_pop_free(keys, PKCS12_SAFEBAG_free);
}

static void write_pem_cert(const char *name, X509 *c)
{
    FILE *f = fopen(path_of(name), "w");
    assert_non_null(f);
    assert_true(PEM_write_X509(f, c));
    fclose(f);
}

/* ----- keytool as the oracle ----- */

static void copy(char *dst, size_t n, const char *src)
{
    size_t l = strlen(src);
    if (l >= n) l = n - 1;
    memcpy(dst, src, l);
    dst[l] = '\0';
}

struct kt_entry {
    char alias[256];
    char type[64];
    char owner[1024];
    char serial[128];
    char from[64];
    char until[64];
};

/* Runs keytool -list -v in TZ=America/New_York and parses, per entry, the alias, the
 * entry type and the first certificate's Owner, Serial number and validity. */
static size_t keytool_list(const char *store, const char *pw, struct kt_entry *out, size_t max)
{
    assert_int_equal(run("TZ=%s LC_ALL=C.UTF-8 keytool -J-Duser.language=en -J-Duser.country=US "
                         "-J-Dfile.encoding=UTF-8 -list -v "
                         "-keystore %s -storetype PKCS12 -storepass '%s' > %s.kt.txt 2>&1",
                         NY_TZ, store, pw, store),
                     0);
    char fn[PATH_MAX + 32];
    snprintf(fn, sizeof(fn), "%s/%s.kt.txt", tmpdir, store);
    FILE *f = fopen(fn, "r");
    assert_non_null(f);
    char line[4096];
    size_t n = 0;
    struct kt_entry *cur = NULL;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "Alias name: ", 12) == 0) {
            assert_true(n < max);
            cur = &out[n++];
            memset(cur, 0, sizeof(*cur));
            copy(cur->alias, sizeof(cur->alias), line + 12);
        } else if (!cur) {
            continue;
        } else if (strncmp(line, "Entry type: ", 12) == 0) {
            copy(cur->type, sizeof(cur->type), line + 12);
        } else if (strncmp(line, "Owner: ", 7) == 0 && !cur->owner[0]) {
            copy(cur->owner, sizeof(cur->owner), line + 7);
        } else if (strncmp(line, "Serial number: ", 15) == 0 && !cur->serial[0]) {
            copy(cur->serial, sizeof(cur->serial), line + 15);
        } else if (strncmp(line, "Valid from: ", 12) == 0 && !cur->from[0]) {
            char *u = strstr(line, " until: ");
            assert_non_null(u);
            *u = '\0';
            copy(cur->from, sizeof(cur->from), line + 12);
            copy(cur->until, sizeof(cur->until), u + 8);
        }
    }
    fclose(f);
    return n;
}

static void use_ny_tz(void)
{
    setenv("TZ", NY_TZ, 1);
    tzset();
}

/* Java itself: KeyStore.aliases() in its own order (a LinkedHashMap in load order) and
 * each entry's kind; must equal our entries exactly, in order. */
static void compare_alias_order_with_java(const char *store, const char *pw)
{
    static const char src[] =
        "import java.io.FileInputStream;\n"
        "import java.security.KeyStore;\n"
        "import java.util.Collections;\n"
        "public class Aliases {\n"
        "  public static void main(String[] a) throws Exception {\n"
        "    KeyStore ks = KeyStore.getInstance(\"PKCS12\");\n"
        "    try (FileInputStream in = new FileInputStream(a[0])) {\n"
        "      ks.load(in, a[1].toCharArray());\n"
        "    }\n"
        "    for (String s : Collections.list(ks.aliases()))\n"
        "      System.out.println(s + \"\\t\" + (ks.isKeyEntry(s) ? \"key\" : \"trustedCert\"));\n"
        "  }\n"
        "}\n";
    FILE *jf = fopen(path_of("Aliases.java"), "w");
    assert_non_null(jf);
    fputs(src, jf);
    fclose(jf);
    assert_int_equal(run("LC_ALL=C.UTF-8 java -Dfile.encoding=UTF-8 Aliases.java %s '%s' > "
                         "%s.java.txt",
                         store, pw, store),
                     0);
    char fn[PATH_MAX + 32], line[1024];
    snprintf(fn, sizeof(fn), "%s/%s.java.txt", tmpdir, store);
    FILE *f = fopen(fn, "r");
    assert_non_null(f);
    struct p12_file *p = load_ok(store, pw);
    size_t i = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = '\0';
        assert_true(i < p12_count(p));
        const struct p12_entry *e = p12_get(p, i++);
        assert_string_equal(p12_entry_alias(e), line);
        assert_int_equal(p12_entry_has_key(e), strcmp(tab + 1, "key") == 0);
    }
    fclose(f);
    assert_int_equal(i, p12_count(p));
    p12_free(p);
}

/* Our aliases and descriptions must equal keytool's, entry by entry. keytool -list sorts
 * the aliases, so entries are matched by alias (the file order is checked elsewhere). */
static void compare_with_keytool(const char *store, const char *pw)
{
    struct kt_entry kt[32];
    size_t n = keytool_list(store, pw, kt, 32);
    use_ny_tz();
    struct p12_file *f = load_ok(store, pw);
    assert_int_equal(p12_count(f), n);
    json_t *j = p12_describe(f, store);
    assert_non_null(j);
    for (size_t k = 0; k < n; k++) {
        size_t i = 0;
        while (i < n && strcmp(p12_entry_alias(p12_get(f, i)), kt[k].alias) != 0)
            i++;
        if (i == n) fprintf(stderr, "keytool alias '%s' not found in %s\n", kt[k].alias, store);
        assert_true(i < n);
        const struct p12_entry *e = p12_get(f, i);
        assert_int_equal(p12_entry_has_key(e), strcmp(kt[k].type, "PrivateKeyEntry") == 0);
        char *dn = p12_java_dn(p12_entry_cert(e), 0);
        assert_non_null(dn);
        assert_string_equal(dn, kt[k].owner);
        free(dn);
        char want[2048];
        snprintf(want, sizeof(want), "Subject:%s;Valid from:%s;Valid to:%s;Serial number:%s",
                 kt[k].owner, kt[k].from, kt[k].until, kt[k].serial);
        char *desc = p12_java_description(p12_entry_cert(e));
        assert_non_null(desc);
        assert_string_equal(desc, want);
        free(desc);
        json_t *d = json_array_get(json_object_get(j, "desc"), i);
        assert_string_equal(json_string_value(json_object_get(d, "alias")), kt[k].alias);
        assert_string_equal(json_string_value(json_object_get(d, "description")), want);
    }
    json_decref(j);
    p12_free(f);
    compare_alias_order_with_java(store, pw);
}

/* ----- fixtures ----- */

static int group_setup(void **state)
{
    const char *base = getenv("CERTGATE_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0700);
    snprintf(tmpdir, sizeof(tmpdir), "%s/p12-XXXXXX", base);
    if (!mkdtemp(tmpdir)) return -1;
    char err[256];
    if (p12_init(err, sizeof(err)) != 0) {
        fprintf(stderr, "p12_init: %s\n", err);
        return -1;
    }
    /* A small PKI: root -> intermediate -> leaf, and an unrelated CA. */
    static const char *const cmds[] = {
        "printf '[ca]\\nbasicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,"
        "cRLSign\\nsubjectKeyIdentifier=hash\\nauthorityKeyIdentifier=keyid\\n[leaf]\\n"
        "basicConstraints=CA:FALSE\\nsubjectKeyIdentifier=hash\\nauthorityKeyIdentifier=keyid"
        "\\nsubjectAltName=DNS:leaf.example.com\\n' > ext.cnf",
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root.key "
        "-out root.pem -days 3650 -subj '/CN=Test Root CA'",
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key "
        "-out other.pem -days 3650 -subj '/CN=Unrelated CA'",
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout inter.key "
        "-out inter.csr -subj '/CN=Test Intermediate CA'",
        "openssl x509 -req -in inter.csr -CA root.pem -CAkey root.key -CAcreateserial -days 3000 "
        "-extfile ext.cnf -extensions ca -out inter.pem",
        "openssl req -new -newkey rsa:2048 -nodes -keyout leaf.key -out leaf.csr "
        "-subj '/CN=leaf.example.com'",
        "openssl x509 -req -in leaf.csr -CA inter.pem -CAkey inter.key -CAcreateserial -days 300 "
        "-extfile ext.cnf -extensions leaf -out leaf.pem",
        "cat other.pem root.pem inter.pem > cas.pem",
        "openssl pkcs12 -export -inkey leaf.key -in leaf.pem -certfile cas.pem -name Leaf "
        "-passout pass:secret -out chain.p12",
        "openssl pkcs12 -export -inkey leaf.key -in leaf.pem -name 'My-Cert' "
        "-passout pass:secret -out rsa.p12",
        "openssl pkcs12 -export -inkey root.key -in root.pem -name ec "
        "-passout pass:secret -out ec.p12",
        "openssl pkcs12 -export -inkey leaf.key -in leaf.pem -passout pass:secret -out noname.p12",
        "openssl pkcs12 -export -legacy -inkey leaf.key -in leaf.pem -name legacy "
        "-passout pass:secret -out legacy.p12",
        "openssl pkcs12 -export -inkey leaf.key -in leaf.pem -name nomac -nomac "
        "-passout pass:secret -out nomac.p12",
        "openssl pkcs12 -export -nokeys -in leaf.pem -passout pass:secret -out nokey.p12",
        "openssl pkcs12 -export -inkey leaf.key -in leaf.pem -name empty -passout pass: "
        "-out empty.p12",
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (run("%s", cmds[i]) != 0) return -1;
    return 0;
}

static int group_teardown(void **state)
{
    if (!getenv("CERTGATE_KEEP_TMP")) run("rm -rf '%s'", tmpdir);
    return 0;
}

/* ----- loading ----- */

static void test_init_legacy_provider(void **state)
{
    char err[256] = "";
    assert_int_equal(p12_init(err, sizeof(err)), 0);
    assert_int_equal(p12_init(err, sizeof(err)), 0); /* idempotent */
}

static void test_openssl_rsa_friendly_name(void **state)
{
    struct p12_file *f = load_ok("rsa.p12", "secret");
    assert_int_equal(p12_count(f), 1);
    const struct p12_entry *e = p12_get(f, 0);
    assert_string_equal(p12_entry_alias(e), "my-cert"); /* lower-cased like Java */
    assert_true(p12_entry_has_key(e));
    assert_non_null(p12_entry_key(e));
    assert_string_equal(cert_cn(p12_entry_cert(e)), "leaf.example.com");
    assert_int_equal(sk_X509_num(p12_entry_chain(e)), 0);
    assert_int_equal(EVP_PKEY_get_base_id(p12_entry_key(e)), EVP_PKEY_RSA);

    const struct p12_entry *sel = NULL;
    char err[256];
    assert_int_equal(p12_select(f, NULL, &sel, err, sizeof(err)), P12_OK);
    assert_ptr_equal(sel, e);
    assert_int_equal(p12_select(f, "", &sel, err, sizeof(err)), P12_OK);
    assert_ptr_equal(sel, e);
    assert_int_equal(p12_select(f, "my-cert", &sel, err, sizeof(err)), P12_OK);
    assert_ptr_equal(sel, e);
    /* looked up lower-cased, like Java's KeyStore.getKey() */
    assert_int_equal(p12_select(f, "My-Cert", &sel, err, sizeof(err)), P12_OK);
    assert_ptr_equal(sel, e);
    assert_int_equal(p12_select(f, "my-cert-2", &sel, err, sizeof(err)), P12_ERR_ALIAS);

    json_t *j = p12_describe(f, "rsa.p12");
    json_t *d = json_array_get(json_object_get(j, "desc"), 0);
    assert_string_equal(json_string_value(json_object_get(j, "name")), "rsa.p12");
    assert_string_equal(json_string_value(json_object_get(d, "keyType")), "RSA-2048");
    assert_string_equal(json_string_value(json_object_get(d, "type")), "key");
    assert_int_equal(json_integer_value(json_object_get(d, "chainLength")), 1);
    json_decref(j);
    p12_free(f);
}

static void test_openssl_ecdsa(void **state)
{
    struct p12_file *f = load_ok("ec.p12", "secret");
    const struct p12_entry *e = p12_get(f, 0);
    assert_string_equal(p12_entry_alias(e), "ec");
    assert_int_equal(EVP_PKEY_get_base_id(p12_entry_key(e)), EVP_PKEY_EC);
    assert_string_equal(cert_cn(p12_entry_cert(e)), "Test Root CA");
    json_t *j = p12_describe(f, "ec.p12");
    json_t *d = json_array_get(json_object_get(j, "desc"), 0);
    assert_string_equal(json_string_value(json_object_get(d, "keyType")), "EC-P256");
    json_decref(j);
    p12_free(f);
}

static void test_legacy_rc2_3des(void **state)
{
    /* make sure the file really is legacy-encrypted */
    assert_int_equal(run("openssl pkcs12 -in legacy.p12 -info -noout -passin pass:secret -legacy "
                         "2>&1 | grep -q 'RC2'"),
                     0);
    struct p12_file *f = load_ok("legacy.p12", "secret");
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "legacy");
    assert_true(p12_entry_has_key(p12_get(f, 0)));
    p12_free(f);
}

/* keytool's own legacy format (PBEWithSHA1AndRC2_40 certificates, 3DES keys) */
static void test_keytool_legacy_store(void **state)
{
    assert_int_equal(run("keytool -J-Dkeystore.pkcs12.legacy -genkeypair -storetype PKCS12 "
                         "-keystore jlegacy.p12 -storepass secret -alias Old -keyalg EC "
                         "-dname CN=old -validity 30"),
                     0);
    assert_int_equal(run("openssl pkcs12 -in jlegacy.p12 -info -noout -passin pass:secret "
                         "-legacy 2>&1 | grep -q 'RC2'"),
                     0);
    struct p12_file *f = load_ok("jlegacy.p12", "secret");
    assert_int_equal(p12_count(f), 1);
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "old");
    assert_string_equal(cert_cn(p12_entry_cert(p12_get(f, 0))), "old");
    p12_free(f);
}

static void test_no_friendly_name_gets_1(void **state)
{
    struct p12_file *f = load_ok("noname.p12", "secret");
    assert_int_equal(p12_count(f), 1);
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "1");
    const struct p12_entry *sel = NULL;
    assert_int_equal(p12_select(f, "1", &sel, NULL, 0), P12_OK);
    p12_free(f);
}

static void test_empty_password(void **state)
{
    struct p12_file *f = load_ok("empty.p12", "");
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "empty");
    p12_free(f);
    f = load_ok("empty.p12", NULL);
    p12_free(f);
    char err[256];
    assert_int_equal(load_err("empty.p12", "x", err, sizeof(err)), P12_ERR_PASSWORD);
}

static void test_no_mac(void **state)
{
    struct p12_file *f = load_ok("nomac.p12", "secret");
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "nomac");
    p12_free(f);
    char err[256];
    assert_int_equal(load_err("nomac.p12", "wrong", err, sizeof(err)), P12_ERR_PASSWORD);
    assert_string_equal(err, "nomac.p12: wrong password");
}

static void test_chain_from_certfile(void **state)
{
    struct p12_file *f = load_ok("chain.p12", "secret");
    /* the CA certificates (no Java trust attribute) are not entries of their own */
    assert_int_equal(p12_count(f), 1);
    const struct p12_entry *e = p12_get(f, 0);
    assert_string_equal(p12_entry_alias(e), "leaf");
    assert_string_equal(cert_cn(p12_entry_cert(e)), "leaf.example.com");
    STACK_OF(X509) *chain = p12_entry_chain(e);
    assert_int_equal(sk_X509_num(chain), 2);
    assert_string_equal(cert_cn(sk_X509_value(chain, 0)), "Test Intermediate CA");
    assert_string_equal(cert_cn(sk_X509_value(chain, 1)), "Test Root CA");
    for (int i = 0; i < sk_X509_num(chain); i++)
        assert_string_not_equal(cert_cn(sk_X509_value(chain, i)), "Unrelated CA");
    json_t *j = p12_describe(f, "chain.p12");
    json_t *d = json_array_get(json_object_get(j, "desc"), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "chainLength")), 3);
    json_t *sans = json_object_get(d, "sans");
    assert_int_equal(json_array_size(sans), 1);
    assert_string_equal(json_string_value(json_array_get(sans, 0)), "DNS:leaf.example.com");
    json_decref(j);
    p12_free(f);
}

static void test_keytool_two_keys_and_trusted(void **state)
{
    assert_int_equal(run("keytool -genkeypair -storetype PKCS12 -keystore two.p12 -storepass "
                         "secret -alias Alpha -keyalg RSA -keysize 2048 -dname CN=alpha "
                         "-validity 30"),
                     0);
    assert_int_equal(run("keytool -genkeypair -storetype PKCS12 -keystore two.p12 -storepass "
                         "secret -alias beta -keyalg EC -groupname secp256r1 -dname "
                         "'CN=beta, O=Beta Org' -validity 30"),
                     0);
    assert_int_equal(run("keytool -importcert -noprompt -storetype PKCS12 -keystore two.p12 "
                         "-storepass secret -alias MyCA -file root.pem"),
                     0);
    struct p12_file *f = load_ok("two.p12", "secret");
    assert_int_equal(p12_count(f), 3);
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "alpha");
    assert_string_equal(p12_entry_alias(p12_get(f, 1)), "beta");
    assert_string_equal(p12_entry_alias(p12_get(f, 2)), "myca");
    assert_false(p12_entry_has_key(p12_get(f, 2)));
    assert_null(p12_entry_key(p12_get(f, 2)));

    const struct p12_entry *e = NULL;
    char err[512];
    assert_int_equal(p12_select(f, "alpha", &e, err, sizeof(err)), P12_OK);
    assert_string_equal(cert_cn(p12_entry_cert(e)), "alpha");
    assert_int_equal(EVP_PKEY_get_base_id(p12_entry_key(e)), EVP_PKEY_RSA);
    assert_int_equal(X509_check_private_key(p12_entry_cert(e), p12_entry_key(e)), 1);
    assert_int_equal(p12_select(f, "beta", &e, err, sizeof(err)), P12_OK);
    assert_string_equal(cert_cn(p12_entry_cert(e)), "beta");
    assert_int_equal(EVP_PKEY_get_base_id(p12_entry_key(e)), EVP_PKEY_EC);
    assert_int_equal(X509_check_private_key(p12_entry_cert(e), p12_entry_key(e)), 1);
    assert_int_equal(p12_select(f, NULL, &e, err, sizeof(err)), P12_OK);
    assert_string_equal(cert_cn(p12_entry_cert(e)), "alpha");
    /* a trusted certificate is not a key entry */
    assert_int_equal(p12_select(f, "myca", &e, err, sizeof(err)), P12_ERR_ALIAS);
    assert_string_equal(err, "two.p12: alias 'myca' not found; the file's key aliases are: "
                             "'alpha', 'beta'");
    assert_int_equal(p12_select(f, "gamma", &e, err, sizeof(err)), P12_ERR_ALIAS);
    assert_string_equal(err, "two.p12: alias 'gamma' not found; the file's key aliases are: "
                             "'alpha', 'beta'");

    json_t *j = p12_describe(f, "two.p12");
    json_t *desc = json_object_get(j, "desc");
    assert_string_equal(json_string_value(json_object_get(json_array_get(desc, 1), "keyType")),
                        "EC-P256");
    assert_string_equal(json_string_value(json_object_get(json_array_get(desc, 2), "type")),
                        "trustedCert");
    json_decref(j);
    p12_free(f);

    compare_with_keytool("two.p12", "secret");
}

/* Entries without friendlyName share one counter with trusted certificates, in file
 * order; keytool must agree. */
static void test_unnamed_entries_counter(void **state)
{
    EVP_PKEY *k1 = gen_ec(), *k2 = gen_ec(), *k3 = gen_ec();
    X509 *c1 = simple_cert(k1, "one"), *c2 = simple_cert(k2, "two"), *c3 = simple_cert(k3, "ca");
    struct bag bags[] = {
        {NULL, c1, NULL, "id-1", 0}, {NULL, c2, NULL, "id-2", 0}, {NULL, c3, NULL, NULL, 1},
        {k1, NULL, NULL, "id-1", 0}, {k2, NULL, NULL, "id-2", 0},
    };
    write_p12("unnamed.p12", bags, 5, "pw", "pw");
    struct p12_file *f = load_ok("unnamed.p12", "pw");
    assert_int_equal(p12_count(f), 3);
    /* the trusted cert bag comes first in the file, so it takes "1" */
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "1");
    assert_false(p12_entry_has_key(p12_get(f, 0)));
    assert_string_equal(cert_cn(p12_entry_cert(p12_get(f, 0))), "ca");
    assert_string_equal(p12_entry_alias(p12_get(f, 1)), "2");
    assert_string_equal(cert_cn(p12_entry_cert(p12_get(f, 1))), "one");
    assert_string_equal(p12_entry_alias(p12_get(f, 2)), "3");
    assert_string_equal(cert_cn(p12_entry_cert(p12_get(f, 2))), "two");
    p12_free(f);
    compare_with_keytool("unnamed.p12", "pw");

    /* two key entries without friendlyName: "1", "2" */
    struct bag bags2[] = {
        {NULL, c1, NULL, "id-1", 0},
        {NULL, c2, NULL, "id-2", 0},
        {k1, NULL, NULL, "id-1", 0},
        {k2, NULL, NULL, "id-2", 0},
    };
    write_p12("unnamed2.p12", bags2, 4, "pw", "pw");
    f = load_ok("unnamed2.p12", "pw");
    assert_int_equal(p12_count(f), 2);
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "1");
    assert_string_equal(cert_cn(p12_entry_cert(p12_get(f, 0))), "one");
    assert_string_equal(p12_entry_alias(p12_get(f, 1)), "2");
    assert_string_equal(cert_cn(p12_entry_cert(p12_get(f, 1))), "two");
    p12_free(f);
    compare_with_keytool("unnamed2.p12", "pw");

    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(k3);
    X509_free(c1);
    X509_free(c2);
    X509_free(c3);
}

/* Without localKeyID: the key is paired by its public key; a second key without
 * localKeyID is skipped, as Java skips it. Repeated aliases: the later entry wins,
 * in the place of the first. */
static void test_no_localkeyid_and_duplicates(void **state)
{
    EVP_PKEY *k1 = gen_ec(), *k2 = gen_ec();
    X509 *c1 = simple_cert(k1, "one"), *c2 = simple_cert(k2, "two");
    struct bag bags[] = {
        {NULL, c2, NULL, NULL, 0},
        {NULL, c1, NULL, NULL, 0},
        {k1, NULL, "First", NULL, 0},
        {k2, NULL, "Second", NULL, 0},
    };
    write_p12("nokeyid.p12", bags, 4, "pw", "pw");
    struct p12_file *f = load_ok("nokeyid.p12", "pw");
    assert_int_equal(p12_count(f), 1);
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "first");
    assert_string_equal(cert_cn(p12_entry_cert(p12_get(f, 0))), "one");
    p12_free(f);
    compare_alias_order_with_java("nokeyid.p12", "pw");

    struct bag dup[] = {
        {NULL, c1, "Same", "id-1", 0},
        {NULL, c2, "same", "id-2", 0},
        {k1, NULL, "Same", "id-1", 0},
        {k2, NULL, "same", "id-2", 0},
    };
    write_p12("dup.p12", dup, 4, "pw", "pw");
    f = load_ok("dup.p12", "pw");
    assert_int_equal(p12_count(f), 1);
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "same");
    assert_string_equal(cert_cn(p12_entry_cert(p12_get(f, 0))), "two");
    p12_free(f);
    compare_with_keytool("dup.p12", "pw");

    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    X509_free(c1);
    X509_free(c2);
}

static void test_unicode_alias_lower_case(void **state)
{
    char *s = p12_java_lower("ÉCOLE-Test");
    assert_string_equal(s, "école-test");
    free(s);
    s = p12_java_lower("\xC4\xB0"); /* U+0130 -> i + U+0307 */
    assert_string_equal(s, "i\xCC\x87");
    free(s);
    s = p12_java_lower("\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 \xCE\xA3"); /* ΟΔΟΣ Σ */
    assert_string_equal(s, "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82 \xCF\x83");
    free(s);

    EVP_PKEY *k = gen_ec();
    X509 *c = simple_cert(k, "uni");
    struct bag bags[] = {{NULL, c, "Zürich-ÄÖÜ", "id", 0}, {k, NULL, "Zürich-ÄÖÜ", "id", 0}};
    write_p12("uni.p12", bags, 2, "pw", "pw");
    struct p12_file *f = load_ok("uni.p12", "pw");
    assert_string_equal(p12_entry_alias(p12_get(f, 0)), "zürich-äöü");
    p12_free(f);
    compare_with_keytool("uni.p12", "pw");
    EVP_PKEY_free(k);
    X509_free(c);
}

/* ----- refusals ----- */

static void test_refuse_wrong_password(void **state)
{
    char err[256];
    assert_int_equal(load_err("rsa.p12", "Wr0ngPassw0rd", err, sizeof(err)), P12_ERR_PASSWORD);
    assert_string_equal(err, "rsa.p12: wrong password");
    assert_null(strstr(err, "Wr0ngPassw0rd"));
    assert_int_equal(load_err("rsa.p12", "", err, sizeof(err)), P12_ERR_PASSWORD);
    assert_int_equal(load_err("rsa.p12", NULL, err, sizeof(err)), P12_ERR_PASSWORD);
}

static void test_refuse_twopass(void **state)
{
    EVP_PKEY *k = gen_ec();
    X509 *c = simple_cert(k, "twopass");
    struct bag bags[] = {{NULL, c, "tp", "id", 0}, {k, NULL, "tp", "id", 0}};
    write_p12("twopass.p12", bags, 2, "filepass", "keypass");
    char err[256];
    assert_int_equal(load_err("twopass.p12", "filepass", err, sizeof(err)), P12_ERR_TWOPASS);
    assert_string_equal(err, "twopass.p12: the key password differs from the file password "
                             "(files made with -twopass are not supported)");
    assert_null(strstr(err, "filepass"));
    assert_int_equal(load_err("twopass.p12", "keypass", err, sizeof(err)), P12_ERR_PASSWORD);
    /* same file with one password loads */
    write_p12("onepass.p12", bags, 2, "filepass", "filepass");
    struct p12_file *f = load_ok("onepass.p12", "filepass");
    p12_free(f);
    EVP_PKEY_free(k);
    X509_free(c);
}

static void test_refuse_no_key(void **state)
{
    char err[256];
    assert_int_equal(load_err("nokey.p12", "secret", err, sizeof(err)), P12_ERR_NO_KEY);
    assert_string_equal(err, "nokey.p12: no private key in the file; it must hold a private key "
                             "and its certificate chain");
}

static void test_refuse_key_mismatch(void **state)
{
    EVP_PKEY *k1 = gen_ec(), *k2 = gen_ec();
    X509 *c2 = simple_cert(k2, "other");
    struct bag bags[] = {{NULL, c2, "Mixed", "id", 0}, {k1, NULL, "Mixed", "id", 0}};
    write_p12("mismatch.p12", bags, 2, "pw", "pw");
    char err[256];
    assert_int_equal(load_err("mismatch.p12", "pw", err, sizeof(err)), P12_ERR_KEY_MISMATCH);
    assert_string_equal(err, "mismatch.p12: the private key of alias 'mixed' does not match its "
                             "certificate");
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    X509_free(c2);
}

static void test_refuse_not_pkcs12(void **state)
{
    char err[256];
    assert_int_equal(run("head -c 3000 /dev/urandom > random.bin"), 0);
    assert_int_equal(load_err("random.bin", "x", err, sizeof(err)), P12_ERR_FORMAT);
    assert_prefix(err, "random.bin: not a PKCS#12 file (");
    assert_int_equal(load_err("leaf.pem", "x", err, sizeof(err)), P12_ERR_FORMAT);
    assert_prefix(err, "leaf.pem: not a PKCS#12 file (");
    assert_int_equal(run(": > empty.bin"), 0);
    assert_int_equal(load_err("empty.bin", "x", err, sizeof(err)), P12_ERR_FORMAT);
    assert_int_equal(load_err("does-not-exist.p12", "x", err, sizeof(err)), P12_ERR_IO);
    /* a truncated file */
    assert_int_equal(run("head -c 700 rsa.p12 > cut.p12"), 0);
    assert_int_equal(load_err("cut.p12", "secret", err, sizeof(err)), P12_ERR_FORMAT);

    struct p12_file *f = NULL;
    assert_int_equal(p12_parse("abc", 3, "x", "mem", &f, err, sizeof(err)), P12_ERR_FORMAT);
    assert_null(f);
    assert_prefix(err, "mem: not a PKCS#12 file (");
}

/* A hostile MAC iteration count is refused by the cost budget, before any work. */
static void test_refuse_huge_iteration_count(void **state)
{
    FILE *in = fopen(path_of("rsa.p12"), "rb");
    assert_non_null(in);
    PKCS12 *p12 = d2i_PKCS12_fp(in, NULL);
    fclose(in);
    assert_non_null(p12);
    const ASN1_INTEGER *iter = NULL;
    PKCS12_get0_mac(NULL, NULL, NULL, &iter, p12);
    assert_non_null(iter);
    assert_true(ASN1_INTEGER_set((ASN1_INTEGER *)iter, 2000000000L));
    FILE *out = fopen(path_of("iter.p12"), "wb");
    assert_non_null(out);
    assert_true(i2d_PKCS12_fp(out, p12));
    fclose(out);
    PKCS12_free(p12);
    char err[256];
    time_t t0 = time(NULL);
    assert_int_equal(load_err("iter.p12", "secret", err, sizeof(err)), P12_ERR_COST);
    assert_true(time(NULL) - t0 < 5);
    assert_prefix(err, "iter.p12: key derivation would take 2,000,000,000 PBKDF2 iterations "
                       "(the MAC and every encrypted part together); the limit is 2,000,000 ");
}

/* Truncations and bit flips of a file without MAC (so the walk itself sees the damage):
 * never a crash or a leak (run under ASan), and a refusal always names the file. */
static void test_corrupt_inputs(void **state)
{
    FILE *in = fopen(path_of("nomac.p12"), "rb");
    assert_non_null(in);
    unsigned char buf[16384];
    size_t n = fread(buf, 1, sizeof(buf), in);
    fclose(in);
    assert_true(n > 100 && n < sizeof(buf));
    struct p12_file *f = NULL;
    char err[256];
    for (size_t len = 0; len < n; len += 37) {
        enum p12_status st = p12_parse(buf, len, "secret", "cut", &f, err, sizeof(err));
        assert_int_not_equal(st, P12_OK);
        assert_null(f);
    }
    unsigned int seed = 12345;
    for (int i = 0; i < 300; i++) {
        unsigned char copy_buf[16384];
        memcpy(copy_buf, buf, n);
        size_t pos = (size_t)rand_r(&seed) % n;
        copy_buf[pos] ^= (unsigned char)(1u << (rand_r(&seed) % 8));
        enum p12_status st = p12_parse(copy_buf, n, "secret", "flip", &f, err, sizeof(err));
        if (st == P12_OK) {
            assert_non_null(f);
            p12_free(f);
            f = NULL;
        } else {
            assert_null(f);
            assert_true(strncmp(err, "flip: ", 6) == 0);
        }
    }
}

static void test_from_key_cert(void **state)
{
    EVP_PKEY *k = gen_ec();
    X509 *c = simple_cert(k, "made");
    struct p12_file *f = p12_from_key_cert(k, c, NULL, "default");
    EVP_PKEY_free(k);
    X509_free(c);
    assert_non_null(f);
    assert_int_equal(p12_count(f), 1);
    const struct p12_entry *e = NULL;
    assert_int_equal(p12_select(f, "default", &e, NULL, 0), P12_OK);
    assert_true(p12_entry_has_key(e));
    assert_string_equal(cert_cn(p12_entry_cert(e)), "made");
    assert_int_equal(sk_X509_num(p12_entry_chain(e)), 0);
    p12_free(f);
}

/* ----- descriptions ----- */

static void test_java_date(void **state)
{
    char buf[64];
    setenv("TZ", "UTC", 1);
    tzset();
    p12_java_date(0, buf, sizeof(buf));
    assert_string_equal(buf, "Thu Jan 01 00:00:00 UTC 1970");
    use_ny_tz();
    p12_java_date(0, buf, sizeof(buf));
    assert_string_equal(buf, "Wed Dec 31 19:00:00 EST 1969");
    p12_java_date(1720094400, buf, sizeof(buf)); /* 2024-07-04T12:00:00Z */
    assert_string_equal(buf, "Thu Jul 04 08:00:00 EDT 2024");
    setenv("TZ", "Europe/Berlin", 1);
    tzset();
    p12_java_date(1550232018, buf, sizeof(buf)); /* the spec's example */
    assert_string_equal(buf, "Fri Feb 15 13:00:18 CET 2019");
}

static void test_describe_openssl_odd_dn_vs_keytool(void **state)
{
    /* multi-valued RDN, quotes, backslash, commas, leading/trailing and double spaces,
     * specials, e-mail, DC, UID, serialNumber, street, title, UTF-8 */
    assert_int_equal(
        run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
            "odd.key -out odd.pem -days 30 -multivalue-rdn -utf8 -subj '/C=US/O=Org, Inc./"
            "OU=a  b/CN=a+OU=b/emailAddress=x@y.z/CN=He said \"hi\" \\\\ back/L= lead/"
            "ST=trail /street=x<y>#z;w/DC=com/UID=jdoe/serialNumber=12/title=Dr/L=Z\xC3\xBCrich"
            "/OU=*.wild_card&co!/CN=1\\+1=2'"),
        0);
    assert_int_equal(run("openssl pkcs12 -export -inkey odd.key -in odd.pem -name Odd "
                         "-passout pass:secret -out odd.p12"),
                     0);
    compare_with_keytool("odd.p12", "secret");

    use_ny_tz();
    struct p12_file *f = load_ok("odd.p12", "secret");
    char *dn = p12_java_dn(p12_entry_cert(p12_get(f, 0)), 0);
    assert_string_equal(dn, "CN=\"1+1=2\", OU=*.wild_card&co!, L=Z\xC3\xBCrich, T=Dr, "
                            "SERIALNUMBER=12, UID=jdoe, DC=com, STREET=\"x<y>#z;w\", "
                            "ST=\"trail \", L=\" lead\", CN=\"He said \\\"hi\\\" \\\\ back\", "
                            "EMAILADDRESS=x@y.z, CN=a + OU=b, OU=\"a  b\", O=\"Org, Inc.\", C=US");
    free(dn);
    p12_free(f);
}

/* Names with string types openssl's -subj cannot make: BMP, T61, Universal, Numeric
 * (Java prints it as #hex), unknown OIDs, Java-only keywords, an already-quoted value,
 * an empty value; serials with a leading zero byte; a summer/winter validity. */
static void test_describe_crafted_names_vs_keytool(void **state)
{
    EVP_PKEY *k = gen_ec();
    X509_NAME *n = X509_NAME_new();
    static const unsigned char bmp[] = {0x00, 'Z', 0x00, 'o', 0x00, 0xEB, 0x00, ' ', 0x20, 0xAC};
    static const unsigned char t61[] = {'C', 'a', 'f', 0xE9};
    static const unsigned char univ[] = {0, 0, 0, 'a', 0, 0, 0, 'b', 0, 1, 0xF6, 0x00};
    static const unsigned char num[] = {'1', '2', '3'};
    assert_true(X509_NAME_add_entry_by_txt(n, "C", V_ASN1_PRINTABLESTRING,
                                           (const unsigned char *)"DE", 2, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "O", V_ASN1_T61STRING, t61, sizeof(t61), -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "OU", V_ASN1_BMPSTRING, bmp, sizeof(bmp), -1, 0));
    assert_true(
        X509_NAME_add_entry_by_txt(n, "OU", V_ASN1_UNIVERSALSTRING, univ, sizeof(univ), -1, 0));
    assert_true(
        X509_NAME_add_entry_by_txt(n, "2.5.4.3", V_ASN1_NUMERICSTRING, num, sizeof(num), -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "1.2.3.4", V_ASN1_UTF8STRING,
                                           (const unsigned char *)"foo", 3, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "1.2.3.5", V_ASN1_IA5STRING,
                                           (const unsigned char *)"x,y", 3, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "GN", V_ASN1_UTF8STRING, (const unsigned char *)"Jo",
                                           2, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "SN", V_ASN1_UTF8STRING, (const unsigned char *)"Doe",
                                           3, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "initials", V_ASN1_UTF8STRING,
                                           (const unsigned char *)"JD", 2, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "generationQualifier", V_ASN1_UTF8STRING,
                                           (const unsigned char *)"III", 3, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "dnQualifier", V_ASN1_PRINTABLESTRING,
                                           (const unsigned char *)"q", 1, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "1.3.6.1.4.1.42.2.11.2.1", V_ASN1_PRINTABLESTRING,
                                           (const unsigned char *)"10.0.0.1", 8, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(
        n, "OU", V_ASN1_UTF8STRING, (const unsigned char *)"\"quoted, already\"", 17, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "OU", V_ASN1_UTF8STRING, (const unsigned char *)"", 0,
                                           -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "DC", V_ASN1_IA5STRING,
                                           (const unsigned char *)"example", 7, -1, 0));
    assert_true(X509_NAME_add_entry_by_txt(n, "CN", V_ASN1_UTF8STRING,
                                           (const unsigned char *)"#hash = sign", 12, -1, 0));
    static const unsigned char serial1[] = {0x00, 0x80, 0x01, 0x02};
    X509 *c1 = make_cert(k, n, serial1, sizeof(serial1), "20240704120000Z", "20300115050607Z");
    X509_NAME_free(n);

    X509 *c2 = simple_cert(k, "small serial");
    static const unsigned char serial2[] = {0x0a};
    X509 *c3;
    {
        X509_NAME *n3 = X509_NAME_new();
        X509_NAME_add_entry_by_txt(n3, "CN", MBSTRING_UTF8, (const unsigned char *)"far", -1, -1,
                                   0);
        c3 = make_cert(k, n3, serial2, sizeof(serial2), "20240101000000Z", "20600229235959Z");
        X509_NAME_free(n3);
    }
    write_pem_cert("crafted1.pem", c1);
    write_pem_cert("crafted2.pem", c2);
    write_pem_cert("crafted3.pem", c3);
    assert_int_equal(run("keytool -importcert -noprompt -storetype PKCS12 -keystore crafted.p12 "
                         "-storepass secret -alias one -file crafted1.pem && "
                         "keytool -importcert -noprompt -storetype PKCS12 -keystore crafted.p12 "
                         "-storepass secret -alias two -file crafted2.pem && "
                         "keytool -importcert -noprompt -storetype PKCS12 -keystore crafted.p12 "
                         "-storepass secret -alias three -file crafted3.pem && "
                         "keytool -genkeypair -storetype PKCS12 -keystore crafted.p12 -storepass "
                         "secret -alias key -keyalg EC -dname 'CN=k, OU=\" x \"' -validity 10"),
                     0);
    compare_with_keytool("crafted.p12", "secret");
    /* entries keep file order (Java's LinkedHashMap), not keytool's sorted listing;
     * keytool writes the key SafeContents before the certificates */
    struct p12_file *cf = load_ok("crafted.p12", "secret");
    assert_int_equal(p12_count(cf), 4);
    assert_string_equal(p12_entry_alias(p12_get(cf, 0)), "key");
    assert_string_equal(p12_entry_alias(p12_get(cf, 1)), "one");
    assert_string_equal(p12_entry_alias(p12_get(cf, 2)), "two");
    assert_string_equal(p12_entry_alias(p12_get(cf, 3)), "three");
    p12_free(cf);

    /* and the exact strings, so a keytool change would be noticed too */
    use_ny_tz();
    char *dn = p12_java_dn(c1, 0);
    assert_string_equal(dn,
                        "CN=\"#hash = sign\", DC=example, OU=, OU=\"quoted, already\", "
                        "IP=10.0.0.1, DNQ=q, GENERATION=III, INITIALS=JD, SURNAME=Doe, "
                        "GIVENNAME=Jo, OID.1.2.3.5=\"x,y\", OID.1.2.3.4=foo, CN=#1203313233, "
                        "OU=ab\xF0\x9F\x98\x80, OU=Zo\xC3\xAB \xE2\x82\xAC, O=Caf\xC3\xA9, C=DE");
    free(dn);
    char *desc = p12_java_description(c1);
    assert_string_equal(strstr(desc, ";Valid from:"),
                        ";Valid from:Thu Jul 04 08:00:00 EDT 2024;Valid to:Tue Jan 15 00:06:07 "
                        "EST 2030;Serial number:800102");
    free(desc);
    desc = p12_java_description(c3);
    assert_string_equal(desc, "Subject:CN=far;Valid from:Sun Dec 31 19:00:00 EST 2023;Valid "
                              "to:Sun Feb 29 18:59:59 EST 2060;Serial number:a");
    free(desc);

    EVP_PKEY_free(k);
    X509_free(c1);
    X509_free(c2);
    X509_free(c3);
}

static void test_describe_json_fields(void **state)
{
    setenv("TZ", "UTC", 1);
    tzset();
    struct p12_file *f = load_ok("chain.p12", "secret");
    json_t *j = p12_describe(f, "chain.p12");
    json_t *d = json_array_get(json_object_get(j, "desc"), 0);
    X509 *leaf = p12_entry_cert(p12_get(f, 0));
    const char *fields[] = {"alias",  "description", "type",     "subject", "issuer",
                            "serial", "notBefore",   "notAfter", "sha256",  "keyType"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        assert_true(json_is_string(json_object_get(d, fields[i])));
    assert_string_equal(json_string_value(json_object_get(d, "subject")), "CN=leaf.example.com");
    assert_string_equal(json_string_value(json_object_get(d, "issuer")), "CN=Test Intermediate CA");
    long long days = json_integer_value(json_object_get(d, "daysLeft"));
    assert_true(days >= 298 && days <= 300);
    const char *nb = json_string_value(json_object_get(d, "notBefore"));
    assert_int_equal(strlen(nb), 20);
    assert_int_equal(nb[10], 'T');
    assert_int_equal(nb[19], 'Z');
    unsigned char md[32];
    unsigned int mdlen;
    X509_digest(leaf, EVP_sha256(), md, &mdlen);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(json_string_value(json_object_get(d, "sha256")), hex);
    char *desc = p12_java_description(leaf);
    assert_string_equal(json_string_value(json_object_get(d, "description")), desc);
    assert_prefix(desc, "Subject:CN=leaf.example.com;Valid from:");
    free(desc);
    json_decref(j);
    p12_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_legacy_provider),
        cmocka_unit_test(test_openssl_rsa_friendly_name),
        cmocka_unit_test(test_openssl_ecdsa),
        cmocka_unit_test(test_legacy_rc2_3des),
        cmocka_unit_test(test_keytool_legacy_store),
        cmocka_unit_test(test_no_friendly_name_gets_1),
        cmocka_unit_test(test_empty_password),
        cmocka_unit_test(test_no_mac),
        cmocka_unit_test(test_chain_from_certfile),
        cmocka_unit_test(test_keytool_two_keys_and_trusted),
        cmocka_unit_test(test_unnamed_entries_counter),
        cmocka_unit_test(test_no_localkeyid_and_duplicates),
        cmocka_unit_test(test_unicode_alias_lower_case),
        cmocka_unit_test(test_refuse_wrong_password),
        cmocka_unit_test(test_refuse_twopass),
        cmocka_unit_test(test_refuse_no_key),
        cmocka_unit_test(test_refuse_key_mismatch),
        cmocka_unit_test(test_refuse_not_pkcs12),
        cmocka_unit_test(test_refuse_huge_iteration_count),
        cmocka_unit_test(test_corrupt_inputs),
        cmocka_unit_test(test_from_key_cert),
        cmocka_unit_test(test_java_date),
        cmocka_unit_test(test_describe_openssl_odd_dn_vs_keytool),
        cmocka_unit_test(test_describe_crafted_names_vs_keytool),
        cmocka_unit_test(test_describe_json_fields),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
